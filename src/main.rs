//! delayqs: delivers delayed HTTP callbacks out of a Redis sorted set.

mod admin;
mod backoff;
mod cli;
mod config;
mod daemon;
mod dispatcher;
mod job;
mod logging;
mod metrics;
mod pidfile;
mod signals;
mod store;
mod timefmt;
mod worker;

fn main() -> std::process::ExitCode {
    cli::main()
}
