//! The command line: parse arguments, run the command, turn the result into an exit
//! code (sysexits where one fits, LSB codes for `status`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use log::warn;

use crate::config::{self, Config};
use crate::daemon;
use crate::dispatcher::{self, Control, Exit, Readiness};
use crate::logging;
use crate::pidfile::{PidFile, PidFileError};
use crate::signals;

/// Exit codes from sysexits.h.
pub const EX_USAGE: u8 = 64;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_OSERR: u8 = 71;
pub const EX_CANTCREAT: u8 = 73;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

#[derive(FromArgs)]
/// Delivers delayed HTTP callbacks out of a Redis sorted set: on time, once, and
/// without losing a job. See README.md for the job format and the config keys.
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Run(RunArgs),
    Start(StartArgs),
    Stop(StopArgs),
    Restart(RestartArgs),
    Status(StatusArgs),
}

#[derive(FromArgs)]
/// Run in the foreground (as runit and systemd expect) until SIGTERM, SIGINT or
/// SIGQUIT. SIGHUP reloads the config. Writes no pid file.
#[argh(subcommand, name = "run")]
struct RunArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// check the config file and exit: 0 when it is valid, 78 when not
    #[argh(switch)]
    check: bool,
}

#[derive(FromArgs)]
/// Start with a pid file (the config's `pid`); with -d, detach and return once the
/// daemon has reached Redis.
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// detach into the background
    #[argh(switch, short = 'd')]
    detach: bool,
}

#[derive(FromArgs)]
/// Stop the daemon named by the pid file, waiting for it to finish its callbacks.
#[argh(subcommand, name = "stop")]
struct StopArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// send SIGKILL if it has not stopped by the timeout
    #[argh(switch)]
    force: bool,
}

#[derive(FromArgs)]
/// Stop, then start again once the old process has exited.
#[argh(subcommand, name = "restart")]
struct RestartArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// detach into the background
    #[argh(switch, short = 'd')]
    detach: bool,
    /// send SIGKILL if the old process has not stopped by the timeout
    #[argh(switch)]
    force: bool,
}

#[derive(FromArgs)]
/// Say whether the daemon runs: exit 0 running, 3 stopped, 1 dead with a pid file left.
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("delayqs {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("delayqs: no command given; try `delayqs run --config PATH` or `delayqs --help`");
        return ExitCode::from(EX_USAGE);
    };
    let notify = Notify::from_env();
    let path = match &command {
        Command::Run(a) => &a.config,
        Command::Start(a) => &a.config,
        Command::Stop(a) => &a.config,
        Command::Restart(a) => &a.config,
        Command::Status(a) => &a.config,
    };
    let (path, config, warnings) = match load(path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            notify.failed(&e);
            eprintln!("delayqs: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match command {
        Command::Run(args) if args.check => {
            for w in &warnings {
                eprintln!("delayqs: config {}: {w}", path.display());
            }
            println!("delayqs: config {} is valid", path.display());
            ExitCode::SUCCESS
        }
        Command::Run(_) => serve(&path, config, &warnings, false, notify),
        Command::Start(args) if args.detach => daemon::start_detached(&path, &config),
        Command::Start(_) => serve(&path, config, &warnings, true, notify),
        Command::Stop(args) => daemon::stop(&config, args.force),
        Command::Restart(args) => match daemon::stop(&config, args.force) {
            code if code != ExitCode::SUCCESS => code,
            _ if args.detach => daemon::start_detached(&path, &config),
            _ => serve(&path, config, &warnings, true, notify),
        },
        Command::Status(_) => daemon::status(&config),
    }
}

fn load(explicit: Option<&Path>) -> Result<(PathBuf, Config, Vec<String>), String> {
    let path = config::locate(explicit).map_err(|e| e.to_string())?;
    let (config, warnings) = config::load(&path).map_err(|e| e.to_string())?;
    Ok((path, config, warnings))
}

/// Runs the dispatcher in this process, with a pid file for `start`.
fn serve(
    path: &Path,
    config: Config,
    warnings: &[String],
    with_pid_file: bool,
    notify: Notify,
) -> ExitCode {
    if let Err(e) = logging::init(config.log_level, config.log_files.as_ref()) {
        let dir = config
            .log_files
            .as_ref()
            .map(|f| f.dir.display().to_string());
        let message = format!(
            "cannot open the log files in {} (config `logDir`): {e}",
            dir.unwrap_or_default()
        );
        notify.failed(&message);
        eprintln!("delayqs: {message}");
        return ExitCode::from(EX_CANTCREAT);
    }
    for w in warnings {
        warn!("config {}: {w}", path.display());
    }
    let _pid_file = if with_pid_file {
        match PidFile::create(&config.pid_file) {
            Ok(pid_file) => Some(pid_file),
            Err(e) => {
                notify.failed(&e.to_string());
                log::error!("{e}");
                return ExitCode::from(match e {
                    PidFileError::AlreadyRunning(_) => 1,
                    PidFileError::Io(..) => EX_CANTCREAT,
                });
            }
        }
    } else {
        None
    };
    let signals = match signals::channel() {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let reload_path = path.to_path_buf();
    let control = Control {
        signals,
        reload: Box::new(move || {
            let (config, warnings) = config::load(&reload_path).map_err(|e| e.to_string())?;
            for w in warnings {
                warn!("config {}: {w}", reload_path.display());
            }
            Ok(config)
        }),
        readiness: notify.into_readiness(),
    };
    match dispatcher::run(config, control) {
        Ok(Exit::Clean) => ExitCode::SUCCESS,
        Ok(Exit::Unrecorded(_)) => ExitCode::from(EX_TEMPFAIL),
        Ok(Exit::Misconfigured) => ExitCode::from(EX_CONFIG),
        Err(e) => {
            log::error!("cannot run with config {}: {e}", path.display());
            ExitCode::from(EX_OSERR)
        }
    }
}

/// The child side of `start -d`: when the parent asked for it, stdout is a pipe to the
/// parent and carries `ready`, `waiting: …` and `failed: …` lines.
pub struct Notify(bool);

impl Notify {
    /// The variable `start -d` sets for its child.
    pub const VAR: &'static str = "DELAYQS_NOTIFY_PARENT";

    fn from_env() -> Notify {
        Notify(std::env::var_os(Self::VAR).is_some())
    }

    fn say(&self, line: &str) {
        if self.0 {
            // The parent may have given up and gone; nothing to do about that here.
            let _ = writeln!(std::io::stdout(), "{}", line.replace('\n', " "));
        }
    }

    fn failed(&self, why: &str) {
        self.say(&format!("failed: {why}"));
    }

    fn into_readiness(self) -> Option<Box<dyn FnMut(Readiness)>> {
        self.0.then(|| {
            Box::new(move |r: Readiness| match r {
                Readiness::Ready => self.say("ready"),
                Readiness::Waiting(why) => self.say(&format!("waiting: {why}")),
            }) as Box<dyn FnMut(Readiness)>
        })
    }
}
