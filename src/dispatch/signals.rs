//! Signals as channel messages, so the main loop checks them in one place.

use std::thread;

use crossbeam_channel::{Receiver, bounded};
use log::warn;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT or SIGQUIT (the old daemon's stop signal): stop cleanly.
    Stop,
    /// SIGHUP: re-read the config, and reopen the log files.
    Reload,
    /// SIGUSR1: reopen the log files.
    ReopenLogs,
}

/// Starts the thread that turns signals into messages. A second stop signal exits at
/// once: the leases of the jobs in flight cover them.
pub fn channel() -> std::io::Result<Receiver<Signal>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])?;
    let (tx, rx) = bounded(16);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                let message = match signal {
                    SIGHUP => Signal::Reload,
                    SIGUSR1 => Signal::ReopenLogs,
                    _ if stopping => {
                        warn!("second stop signal: exiting now; jobs in flight run again when their leases expire");
                        std::process::exit(128 + signal);
                    }
                    _ => {
                        stopping = true;
                        Signal::Stop
                    }
                };
                let _ = tx.try_send(message);
            }
        })?;
    Ok(rx)
}
