//! The configuration: `config.json` read, typed and range-checked (`load`), the key
//! names and their shards (`keys`), which settings a SIGHUP applies live (`reload`),
//! and whether the daemon can write the paths it names (`writable`). Owns every
//! default and every limit. Past this module nothing is stringly typed; it never talks
//! to Redis or HTTP.

pub mod flow;
mod keys;
mod load;
pub mod redact;
mod reload;
mod writable;

pub use keys::*;
pub use load::*;
pub use reload::reload;
pub use writable::check_writable;
