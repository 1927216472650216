//! Stop signals as a channel message, so the main loop checks them in one place.

use std::thread;

use crossbeam_channel::{Receiver, bounded};
use log::warn;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

/// SIGTERM, SIGINT and SIGQUIT (the old daemon's stop signal) ask for a clean stop.
/// A second one exits at once: the leases of the jobs in flight cover them.
pub fn stop_channel() -> std::io::Result<Receiver<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT])?;
    let (tx, rx) = bounded(1);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut asked = false;
            for signal in signals.forever() {
                if asked {
                    warn!("second stop signal: exiting now; jobs in flight run again when their leases expire");
                    std::process::exit(128 + signal);
                }
                asked = true;
                let _ = tx.try_send(());
            }
        })?;
    Ok(rx)
}
