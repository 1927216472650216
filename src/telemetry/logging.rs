//! Log lines: to stderr (runit's svlogd and journald collect it), or, with `logDir` set,
//! to two files as the old daemon kept them: `info.log` (everything logged) and
//! `error.log` (errors only). Each is rolled at midnight UTC to `<name>.YYYY-MM-DD`, and
//! the newest `logKeepDays` of those are kept. SIGHUP and SIGUSR1 reopen the files, so
//! logrotate may move them instead.
//!
//! Our own 100 lines instead of a crate: rolling by day and reopening on a signal are
//! what the logging crates we could use do not do.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::timefmt::{date, rfc3339};

static LOGGER: Logger = Logger {
    sink: Mutex::new(None),
};

struct Logger {
    sink: Mutex<Option<Files>>,
}

/// Where log files go, from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLog {
    pub dir: PathBuf,
    pub keep_days: usize,
}

/// Starts logging at `level`, to files when `files` is set. Fails when the files
/// cannot be opened.
pub fn init(level: LevelFilter, files: Option<&FileLog>) -> io::Result<()> {
    if let Some(f) = files {
        *LOGGER.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(Files::open(f)?);
    }
    // Fails only when a logger is already set, which happens in no path of ours.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    Ok(())
}

/// Changes the level of a running logger.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Reopens the log files (after logrotate moved them); a no-op on stderr.
pub fn reopen() -> io::Result<()> {
    let mut sink = LOGGER.sink.lock().unwrap_or_else(|p| p.into_inner());
    match sink.as_mut() {
        Some(files) => files.reopen(),
        None => Ok(()),
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level() && metadata.target().starts_with("delayqs")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "{} [{}] {}\n",
            rfc3339(now.as_secs_f64()),
            record.level(),
            record.args()
        );
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        match sink.as_mut() {
            // A log line that cannot be written has nowhere else to go.
            Some(files) => {
                let _ = files.write(now.as_secs() / 86_400, record.level(), &line);
            }
            None => {
                let _ = io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// The two log files, and the UTC day they are for.
struct Files {
    config: FileLog,
    day: u64,
    info: File,
    error: File,
}

impl Files {
    fn open(config: &FileLog) -> io::Result<Files> {
        fs::create_dir_all(&config.dir)?;
        let today = days_now();
        // A file left by an earlier run on an earlier day is rolled under that day.
        for name in ["info.log", "error.log"] {
            let path = config.dir.join(name);
            let written = fs::metadata(&path).and_then(|m| m.modified()).ok();
            if let Some(day) = written.map(days).filter(|day| *day < today) {
                roll(&config.dir, name, day, config.keep_days)?;
            }
        }
        Ok(Files {
            config: config.clone(),
            day: today,
            info: append(&config.dir.join("info.log"))?,
            error: append(&config.dir.join("error.log"))?,
        })
    }

    fn write(&mut self, day: u64, level: Level, line: &str) -> io::Result<()> {
        if day != self.day {
            for name in ["info.log", "error.log"] {
                roll(&self.config.dir, name, self.day, self.config.keep_days)?;
            }
            self.day = day;
            self.reopen()?;
        }
        self.info.write_all(line.as_bytes())?;
        if level == Level::Error {
            self.error.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.info = append(&self.config.dir.join("info.log"))?;
        self.error = append(&self.config.dir.join("error.log"))?;
        Ok(())
    }
}

/// Renames `dir/name` to `dir/name.YYYY-MM-DD` for `day`, and deletes the oldest rolled
/// files beyond `keep`.
fn roll(dir: &Path, name: &str, day: u64, keep: usize) -> io::Result<()> {
    let from = dir.join(name);
    if from.exists() {
        // Never over a file already rolled for that day (a second process sharing the
        // directory, or a clock set back): take the next free name.
        let stem = format!("{name}.{}", date(day as i64));
        let mut to = dir.join(&stem);
        for n in 1.. {
            if !to.exists() {
                break;
            }
            to = dir.join(format!("{stem}.{n}"));
        }
        fs::rename(&from, to)?;
    }
    let prefix = format!("{name}.");
    let mut rolled: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with(&prefix))
        .collect();
    rolled.sort(); // ISO dates sort by time
    let excess = rolled.len().saturating_sub(keep);
    for old in &rolled[..excess] {
        fs::remove_file(dir.join(old))?;
    }
    Ok(())
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn days_now() -> u64 {
    days(SystemTime::now())
}

fn days(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_roll_daily_and_keep_the_newest() {
        let dir = std::env::temp_dir().join(format!("delayqs-logs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let config = FileLog {
            dir: dir.clone(),
            keep_days: 2,
        };
        let mut files = Files::open(&config).unwrap();
        let day0 = files.day;
        for (offset, level) in [
            (0, Level::Info),
            (0, Level::Error),
            (1, Level::Info),
            (2, Level::Error),
            (3, Level::Info),
        ] {
            files
                .write(day0 + offset, level, &format!("{level} on day +{offset}\n"))
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let d = |o| date((day0 + o) as i64);
        assert_eq!(
            names,
            [
                "error.log".to_string(),
                format!("error.log.{}", d(1)),
                format!("error.log.{}", d(2)),
                "info.log".to_string(),
                format!("info.log.{}", d(1)),
                format!("info.log.{}", d(2)),
            ]
        );
        let read = |n: &str| fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(read("info.log"), "INFO on day +3\n");
        assert_eq!(read(&format!("info.log.{}", d(2))), "ERROR on day +2\n");
        assert_eq!(read(&format!("error.log.{}", d(2))), "ERROR on day +2\n");
        assert_eq!(read("error.log"), "");
        let _ = fs::remove_dir_all(&dir);
    }
}
