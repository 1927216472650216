//! The command line: the commands and their arguments (`commands`), the operator's
//! commands on Redis (`admin`; the listings in `lists`, printed by `listing`, read by
//! `pages`; `show`; ids by prefix in `ids`; jobs by the producer's own id in `by_id`;
//! the live view in `top`; credentials masked in `shown`), the old daemon's way of
//! running with a pid file and `start -d` (`daemon`, `pidfile`, `notify`), and the one
//! place an error becomes a printed line and an exit code (`error`).
//!
//! The top of the tree: it wires the other modules, and no module imports it.

mod admin;
mod by_id;
mod commands;
mod daemon;
mod error;
mod fleet;
mod ids;
mod listing;
mod lists;
mod notify;
mod pages;
mod pidfile;
mod shell;
mod show;
mod shown;
mod top;

pub use commands::main;
