//! The main loop (`main_loop`): claim due jobs, hand them to the workers, settle what
//! comes back, sleep, shut down. What an outcome means for its job is decided by the
//! pure functions of `settle`, and logged and counted by `report`; how many jobs to
//! hold ahead by `prefetch`; signals arrive as messages from `signals`.
//!
//! This is the only thread that talks to Redis, and it never blocks on HTTP.

pub mod flow;
mod main_loop;
mod prefetch;
mod report;
pub mod settle;
pub mod signals;

pub use main_loop::{Control, Exit, Readiness, hostname, run};
