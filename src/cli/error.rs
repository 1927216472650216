//! Everything a command can fail with, and the one place an error becomes a printed
//! line and an exit code (sysexits where one fits). `main` prints it once, as
//! `delayqs: <sentence>`.

use std::fmt;

use crate::cli::pidfile::PidFileError;
use crate::config::ConfigError;

/// Exit codes from sysexits.h.
pub const EX_USAGE: u8 = 64;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_OSERR: u8 = 71;
pub const EX_CANTCREAT: u8 = 73;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

#[derive(Debug)]
pub enum Error {
    /// A bad argument, or an id not found (64).
    Usage(String),
    /// The config file cannot be found, read or accepted (78).
    Config(ConfigError),
    /// Redis did not answer or refused a command (69). `url` has no password.
    Redis { url: String, what: String },
    /// The pid file: already running (1), or it cannot be written (73).
    PidFile(PidFileError),
    /// A file the daemon must write cannot be (73).
    CantCreate(String),
    /// The operating system refused something the daemon needs (71).
    Os(String),
    /// The daemon did not start or stop as asked; the line says why, the code is the
    /// one given (1, or what the failed child exited with).
    Daemon { code: u8, why: String },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EX_USAGE,
            Error::Config(_) => EX_CONFIG,
            Error::Redis { .. } => EX_UNAVAILABLE,
            Error::PidFile(PidFileError::AlreadyRunning(_)) => 1,
            Error::PidFile(PidFileError::Io(..)) | Error::CantCreate(_) => EX_CANTCREAT,
            Error::Os(_) => EX_OSERR,
            Error::Daemon { code, .. } => *code,
        }
    }

    /// A Redis error, with the server named and never its password.
    pub fn redis(url: &str, e: &redis::RedisError) -> Error {
        Error::Redis {
            url: url.to_string(),
            what: e.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(why) | Error::CantCreate(why) | Error::Os(why) => f.write_str(why),
            Error::Config(e) => write!(f, "{e}"),
            Error::Redis { url, what } => write!(f, "Redis at {url} failed: {what}"),
            Error::PidFile(e) => write!(f, "{e}"),
            Error::Daemon { why, .. } => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<PidFileError> for Error {
    fn from(e: PidFileError) -> Error {
        Error::PidFile(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;

    #[test]
    fn each_error_keeps_its_documented_code() {
        let config = Error::Config(ConfigError {
            path: "c.json".into(),
            problem: Problem::key(
                "concurrency",
                "expected a whole number from 1 to 1024, got -3",
            ),
        });
        assert_eq!(config.exit_code(), 78);
        assert_eq!(
            config.to_string(),
            "config c.json: key `concurrency`: expected a whole number from 1 to 1024, got -3"
        );
        assert_eq!(Error::Usage("x".into()).exit_code(), 64);
        let redis = Error::Redis {
            url: "redis://***@h/".into(),
            what: "timed out".into(),
        };
        assert_eq!(
            (redis.exit_code(), redis.to_string().as_str()),
            (69, "Redis at redis://***@h/ failed: timed out")
        );
        assert_eq!(Error::CantCreate("x".into()).exit_code(), 73);
        assert_eq!(
            Error::Daemon {
                code: 1,
                why: "x".into()
            }
            .exit_code(),
            1
        );
    }
}
