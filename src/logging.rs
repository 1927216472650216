//! Log lines to stderr, where runit's svlogd and journald collect them.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        // Only our own lines: the HTTP and TLS crates log every connection at debug.
        .add_filter_allow_str("delayqs")
        .build();
    // Fails only when a logger is already set, which would be a bug in main.
    let _ = WriteLogger::init(level, config, std::io::stderr());
}
