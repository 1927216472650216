//! The configuration: `config.json` read, typed and range-checked (`load`), the key
//! names and their shards (`keys`), and which settings a SIGHUP applies live
//! (`reload`). Owns every default and every limit. Past this module nothing is
//! stringly typed; it never talks to Redis or HTTP.

mod keys;
mod load;
pub mod redact;
mod reload;

pub use keys::*;
pub use load::*;
pub use reload::reload;
