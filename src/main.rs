//! delayqs: delivers delayed HTTP callbacks out of a Redis sorted set.
//!
//! The modules follow a job's way through the daemon (ARCHITECTURE.md has the map):
//! `store` claims it from Redis, `dispatch` hands it to `deliver`'s workers and
//! settles the outcome, `job` knows its format; `config`, `telemetry` and `cli`
//! serve all of them. Each folder's opening comment says what it owns and what it
//! must never do.

mod cli;
mod config;
mod deliver;
mod dispatch;
#[cfg(test)]
mod fuzz;
mod job;
mod store;
mod telemetry;
mod timefmt;

fn main() -> std::process::ExitCode {
    cli::main()
}
