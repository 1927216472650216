//! The configuration: `config.json` read, typed and range-checked (`load`), and which
//! settings a SIGHUP applies live (`reload`). Owns every default and every limit.
//! Past this module nothing is stringly typed; it never talks to Redis or HTTP.

mod load;
pub mod redact;
mod reload;

pub use load::*;
pub use reload::reload;
