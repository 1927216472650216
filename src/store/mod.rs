//! The Redis side: the connection the main loop owns (`connection`), the typed reply
//! of the claim script (`claim`), and the Lua scripts themselves (`scripts/`), which
//! are the only code that moves a job between keys.
//!
//! Nothing here decides what happens to a job: the loop says what to write, and the
//! scripts write it atomically. Every key a script touches is passed in `KEYS`.

mod claim;
mod connection;
pub mod functions;
pub mod script;
mod sentinel;

pub use claim::{AttemptsValue, ClaimBatch, Claimed, Score, SetAside};
pub use connection::{Conn, Settle, SettleOp, Store, open, shards_in_use};

/// The admin commands' scripts, run on their own connection.
pub mod lua {
    pub const ADD: &str = include_str!("scripts/add.lua");
    pub const CANCEL: &str = include_str!("scripts/cancel.lua");
    pub const FAILED: &str = include_str!("scripts/failed.lua");
    pub const UNPARK: &str = include_str!("scripts/unpark.lua");
}
