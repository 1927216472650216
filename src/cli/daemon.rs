//! The old daemon's way of running (PROTOCOL §5): `start -d`, `stop`, `status`, all
//! through the pid file named by the config.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{RecvTimeoutError, unbounded};

use crate::cli::error::{EX_UNAVAILABLE, Error};
use crate::cli::fleet;
use crate::cli::notify::{self, Line};
use crate::cli::pidfile::{self, Status};
use crate::config::Config;
use crate::timefmt::human;

/// LSB init-script exit codes for `status`.
const LSB_DEAD_WITH_PID_FILE: u8 = 1;
const LSB_STOPPED: u8 = 3;
/// Running, but Redis does not answer as a master or the last round is old.
const STATUS_NOT_WORKING: u8 = 150;

/// What `stop` and `status` need: the pid file, how long a stop may take, and the
/// config for the Redis line of `status` when it loaded.
pub struct Target {
    pub pid_file: PathBuf,
    /// The daemon's `timeoutMs`, or its default when the config does not load.
    pub timeout: Duration,
    pub config: Option<Config>,
}

impl Target {
    pub fn of(config: &Config) -> Target {
        Target {
            pid_file: config.pid_file.clone(),
            timeout: config.http.timeout,
            config: Some(config.clone()),
        }
    }
}

/// Starts `delayqs start` again as a detached child (new session, no terminal, stdin
/// and stderr on /dev/null) and returns once it has its pid file and has reached
/// Redis, or with its reason for failing.
pub fn start_detached(config_path: &Path, config: &Config) -> Result<ExitCode, Error> {
    if let Status::Running { pid, .. } = pidfile::status(&config.pid_file) {
        return Err(Error::PidFile(pidfile::PidFileError::AlreadyRunning(Some(
            pid,
        ))));
    }
    spawn_and_wait(config_path, config)
        .map_err(|e| Error::Os(format!("cannot start the daemon: {e}")))?
}

fn spawn_and_wait(config_path: &Path, config: &Config) -> std::io::Result<Result<ExitCode, Error>> {
    let (reader, writer) = std::io::pipe()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("start")
        .arg("--config")
        .arg(std::path::absolute(config_path)?)
        .env(notify::VAR, "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(|| match libc::setsid() {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let mut child = command.spawn()?;
    // Our copy of the pipe's write end must go, or reading never sees the child exit.
    drop(command);

    let (lines_tx, lines) = unbounded();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let patience = (2 * config.redis_timeout).max(Duration::from_secs(10));
    let deadline = Instant::now() + patience;
    let mut last_trouble = String::from("no word from it");
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        match line.as_deref().map(Line::parse) {
            Ok(Line::Ready) => {
                println!("delayqs started (pid {})", child.id());
                if config.log_files.is_none() {
                    println!(
                        "note: no `logDir` in the config, so its log is discarded; set one to keep it"
                    );
                }
                return Ok(Ok(ExitCode::SUCCESS));
            }
            Ok(Line::Failed(why)) => {
                let status = child.wait()?;
                return Ok(Err(Error::Daemon {
                    code: status.code().unwrap_or(1).clamp(1, 255) as u8,
                    why: format!("the daemon did not start: {why}"),
                }));
            }
            Ok(Line::Waiting(why)) => last_trouble = why,
            Ok(Line::Other) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                return Ok(Err(Error::Daemon {
                    code: 1,
                    why: format!("the daemon exited during start-up ({status})"),
                }));
            }
            Err(RecvTimeoutError::Timeout) => {
                signal(child.id(), libc::SIGTERM);
                let _ = child.wait();
                return Ok(Err(Error::Daemon {
                    code: EX_UNAVAILABLE,
                    why: format!(
                        "the daemon was not ready after {} s, so it was stopped: {last_trouble}",
                        patience.as_secs()
                    ),
                }));
            }
        }
    }
}

/// Sends SIGTERM and waits until the process has exited and removed its pid file;
/// with `force`, sends SIGKILL when that takes too long.
pub fn stop(target: &Target, force: bool) -> Result<ExitCode, Error> {
    let path = &target.pid_file;
    let pid = match pidfile::status(path) {
        Status::Stopped => {
            println!("delayqs is not running");
            return Ok(ExitCode::SUCCESS);
        }
        Status::Dead { .. } => {
            pidfile::remove_stale(path).map_err(|e| Error::Daemon {
                code: 1,
                why: format!("cannot remove the stale pid file {}: {e}", path.display()),
            })?;
            println!("delayqs is not running (removed its stale pid file)");
            return Ok(ExitCode::SUCCESS);
        }
        Status::Running { pid, .. } => pid,
    };
    // Its own stop waits up to `timeoutMs` + 1 s for callbacks, then up to 10 s for
    // Redis (dispatch::main_loop::SHUTDOWN_REDIS_GRACE).
    let patience = target.timeout + Duration::from_secs(13);
    println!(
        "stopping delayqs (pid {pid}); waiting up to {} s",
        patience.as_secs()
    );
    signal(pid, libc::SIGTERM);
    if wait_until_stopped(path, patience) {
        println!("delayqs stopped");
        return Ok(ExitCode::SUCCESS);
    }
    if !force {
        return Err(Error::Daemon {
            code: 1,
            why: format!(
                "pid {pid} has not stopped after {} s; `delayqs stop --force` kills it (its jobs in flight come back when their leases expire)",
                patience.as_secs()
            ),
        });
    }
    signal(pid, libc::SIGKILL);
    // A killed process leaves its pid file behind.
    if wait_until_stopped(path, Duration::from_secs(10))
        && pidfile::remove_stale_of(path, pid).is_ok()
    {
        println!(
            "delayqs killed (pid {pid}); its jobs in flight come back when their leases expire"
        );
        return Ok(ExitCode::SUCCESS);
    }
    Err(Error::Daemon {
        code: 1,
        why: format!("pid {pid} survived SIGKILL"),
    })
}

/// Prints whether the daemon runs, with LSB exit codes.
pub fn status(target: &Target) -> ExitCode {
    match pidfile::status(&target.pid_file) {
        Status::Running { pid, since } => {
            let up = SystemTime::now().duration_since(since).unwrap_or_default();
            println!("delayqs is running (pid {pid}, up {})", human(up));
            // The pid says the process lives, not that it works: say what Redis answers
            // and how old the daemon's last round is. Running but not working is 150
            // (LSB leaves 150–199 to applications); the pid-only answers stay LSB's.
            let Some(config) = &target.config else {
                return ExitCode::SUCCESS;
            };
            let (line, answers) = redis_health(config);
            println!("{line}");
            let (line, fresh) = last_round(config, pid);
            println!("{line}");
            match answers && fresh {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(STATUS_NOT_WORKING),
            }
        }
        Status::Stopped => {
            println!("delayqs is stopped");
            ExitCode::from(LSB_STOPPED)
        }
        Status::Dead { pid } => {
            let pid = pid.map_or(String::new(), |p| format!(" (pid {p})"));
            println!(
                "delayqs is dead, but its pid file {}{pid} remains",
                target.pid_file.display()
            );
            ExitCode::from(LSB_DEAD_WITH_PID_FILE)
        }
    }
}

/// A round older than this means the daemon is stuck or cut off from Redis: the loop
/// makes a round at least every `pollIntervalMs` while Redis answers.
const STALE_ROUND_SECS: f64 = 30.0;

/// One line on how old the daemon's last round is, from its heartbeat in Redis, and
/// whether that is recent.
fn last_round(config: &Config, pid: u32) -> (String, bool) {
    match fleet::heartbeat_of(config, pid) {
        Ok(fleet::Heartbeat::Found(record, now)) => {
            let at = record.fields["lastRound"].as_f64().unwrap_or(0.0);
            let ago = |t: f64| human(Duration::from_secs_f64((now - t).max(0.0)));
            if at == 0.0 {
                let started = record.fields["started"].as_f64().unwrap_or(0.0);
                let young = now - started <= STALE_ROUND_SECS;
                let line = format!(
                    "it started {} ago and has not finished a round yet",
                    ago(started)
                );
                return (line, young);
            }
            match now - at <= STALE_ROUND_SECS {
                true => (format!("its last round ended {} ago", ago(at)), true),
                false => (
                    format!(
                        "its last round ended {} ago: it is stuck or its calls to Redis fail (see its log)",
                        ago(at)
                    ),
                    false,
                ),
            }
        }
        Ok(fleet::Heartbeat::Missing) => (
            format!(
                "no heartbeat of pid {pid} in Redis in the last 10 s: it is frozen, cut off from Redis, or serves another queue than {:?}",
                config.keys.queue
            ),
            false,
        ),
        // An ACL that allows only the queue's keys: the daemon works without a
        // heartbeat, so its absence says nothing.
        Ok(fleet::Heartbeat::Refused) => (
            format!(
                "its last round is unknown: the Redis user may not read {:?}",
                config.keys.daemons()
            ),
            true,
        ),
        Err(_) => (
            "its last round is unknown while Redis does not answer".into(),
            false,
        ),
    }
}

/// One line on the Redis the daemon works on: answering as a master, read-only (a
/// replica), or not answering; and whether it answers as a master.
fn redis_health(config: &Config) -> (String, bool) {
    let url = config.redis_url_redacted();
    let role = crate::store::open(config).and_then(|mut con| {
        if con.is_cluster() {
            // The cluster routes writes to each slot's master; any node may answer ROLE.
            return redis::cmd("PING")
                .query::<String>(&mut con)
                .map(|_| "master".into());
        }
        redis::cmd("ROLE")
            .query::<Vec<redis::Value>>(&mut con)
            .map(|r| match r.first() {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::from("?"),
            })
    });
    match role {
        Ok(role) if role == "master" => (format!("Redis at {url} answers (master)"), true),
        Ok(role) => (
            format!(
                "Redis at {url} is a {role}, read-only: the daemon cannot claim or settle jobs there"
            ),
            false,
        ),
        Err(e) => (
            format!(
                "Redis at {url} does not answer: {e}; the daemon delivers nothing until it does"
            ),
            false,
        ),
    }
}

/// Polls until the pid file is gone (or stale) and its lock free: the process has exited.
fn wait_until_stopped(path: &Path, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if !matches!(pidfile::status(path), Status::Running { .. }) && !pidfile::lock_held(path) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn signal(pid: u32, signal: libc::c_int) {
    // The pid comes from the file of a process that holds its lock, so it is ours.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}
