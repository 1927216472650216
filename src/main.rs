//! delayqs: delivers delayed HTTP callbacks out of a Redis sorted set.

mod admin;
mod allowlist;
mod backoff;
mod breaker;
mod cli;
mod config;
mod daemon;
mod dispatcher;
#[cfg(test)]
mod fuzz;
mod job;
mod logging;
mod metrics;
mod options;
mod pidfile;
mod prefetch;
mod resolver;
mod signals;
mod signing;
mod store;
mod timefmt;
mod transport;
mod worker;

fn main() -> std::process::ExitCode {
    cli::main()
}
