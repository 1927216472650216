//! The command line: parse arguments, run the command, turn the result into an exit
//! code (sysexits where one fits, LSB codes for `status`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use log::warn;

use crate::admin::{Admin, AdminError, AdminResult, Selection};
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
    Add(AddArgs),
    Pending(PendingArgs),
    Stats(StatsArgs),
    Failed(FailedArgs),
    Cancel(CancelArgs),
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

#[derive(FromArgs)]
/// Enqueue a job exactly as a producer would; prints its id and due time.
#[argh(subcommand, name = "add")]
struct AddArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// absolute http(s) URL the job is POSTed to
    #[argh(option)]
    callback: String,
    /// the job's body, as JSON (default: null)
    #[argh(option)]
    body: Option<String>,
    /// the producer's signature, passed through to the endpoint
    #[argh(option)]
    sign: Option<String>,
    /// due time: Unix seconds (fractions allowed) or RFC 3339
    #[argh(option)]
    at: Option<String>,
    /// due after this long, by Redis's clock: 90s, 15m, 3d, 1h30m
    #[argh(option, long = "in")]
    after: Option<String>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// List pending jobs in due order: id, due time, lateness, attempts, callback.
#[argh(subcommand, name = "pending")]
struct PendingArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// how many jobs to show (default 20)
    #[argh(option, default = "20")]
    limit: usize,
    /// only jobs already due
    #[argh(switch)]
    due: bool,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Count jobs pending, due, in flight, waiting for a retry and failed.
#[argh(subcommand, name = "stats")]
struct StatsArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Inspect, retry or purge the jobs that failed for good (`failKey`).
#[argh(subcommand, name = "failed")]
struct FailedArgs {
    #[argh(subcommand)]
    command: FailedCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum FailedCommand {
    List(FailedListArgs),
    Retry(FailedRetryArgs),
    Purge(FailedPurgeArgs),
}

#[derive(FromArgs)]
/// Show failed jobs, oldest first: id, when, attempts, callback, last error.
#[argh(subcommand, name = "list")]
struct FailedListArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// how many records to show (default 20)
    #[argh(option, default = "20")]
    limit: usize,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Put failed jobs back in the queue, due now, attempt count reset, same member.
#[argh(subcommand, name = "retry")]
struct FailedRetryArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// every failed job
    #[argh(switch)]
    all: bool,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// job ids (the `Id` of the records)
    #[argh(positional)]
    ids: Vec<String>,
}

#[derive(FromArgs)]
/// Drop failed records for good.
#[argh(subcommand, name = "purge")]
struct FailedPurgeArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// every failed job
    #[argh(switch)]
    all: bool,
    /// records that failed longer ago than this: 90s, 15m, 3d, 1h30m
    #[argh(option)]
    older_than: Option<String>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// job ids (the `Id` of the records)
    #[argh(positional)]
    ids: Vec<String>,
}

#[derive(FromArgs)]
/// Cancel pending jobs by id (the X-Delayqs-Job-Id header), as ZREM by a producer does.
#[argh(subcommand, name = "cancel")]
struct CancelArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// job ids
    #[argh(positional)]
    ids: Vec<String>,
}

impl Command {
    fn config(&self) -> Option<&Path> {
        match self {
            Command::Run(a) => a.config.as_deref(),
            Command::Start(a) => a.config.as_deref(),
            Command::Stop(a) => a.config.as_deref(),
            Command::Restart(a) => a.config.as_deref(),
            Command::Status(a) => a.config.as_deref(),
            Command::Add(a) => a.config.as_deref(),
            Command::Pending(a) => a.config.as_deref(),
            Command::Stats(a) => a.config.as_deref(),
            Command::Failed(f) => match &f.command {
                FailedCommand::List(a) => a.config.as_deref(),
                FailedCommand::Retry(a) => a.config.as_deref(),
                FailedCommand::Purge(a) => a.config.as_deref(),
            },
            Command::Cancel(a) => a.config.as_deref(),
        }
    }
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
    let (path, config, warnings) = match load(command.config()) {
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
        Command::Add(a) => admin(&config, a.json, |admin| {
            let (at, after) = (a.at.as_deref(), a.after.as_deref());
            admin.add(&a.callback, a.body.as_deref(), a.sign.as_deref(), at, after)
        }),
        Command::Pending(a) => admin(&config, a.json, |admin| admin.pending(a.limit, a.due)),
        Command::Stats(a) => admin(&config, a.json, |admin| admin.stats()),
        Command::Failed(f) => match f.command {
            FailedCommand::List(a) => admin(&config, a.json, |admin| admin.failed_list(a.limit)),
            FailedCommand::Retry(a) => {
                let which = select(a.all, None, a.ids, false);
                admin(&config, a.json, |admin| {
                    admin.failed_change("retry", which?)
                })
            }
            FailedCommand::Purge(a) => {
                let which = select(a.all, a.older_than.as_deref(), a.ids, true);
                admin(&config, a.json, |admin| {
                    admin.failed_change("purge", which?)
                })
            }
        },
        Command::Cancel(a) => admin(&config, a.json, |admin| {
            if a.ids.is_empty() {
                return Err(AdminError::Usage(
                    "name at least one job id to cancel".into(),
                ));
            }
            admin.cancel(&a.ids)
        }),
    }
}

/// Exactly one of `--all`, `--older-than` (where allowed) or ids.
fn select(
    all: bool,
    older_than: Option<&str>,
    ids: Vec<String>,
    older_allowed: bool,
) -> Result<Selection, AdminError> {
    let given = usize::from(all) + usize::from(older_than.is_some()) + usize::from(!ids.is_empty());
    if given != 1 {
        let choices = if older_allowed {
            "--all, --older-than DURATION or job ids"
        } else {
            "--all or job ids"
        };
        return Err(AdminError::Usage(format!("give exactly one of {choices}")));
    }
    Ok(match (all, older_than) {
        (true, _) => Selection::All,
        (_, Some(d)) => {
            Selection::OlderThan(crate::timefmt::parse_duration(d).map_err(AdminError::Usage)?)
        }
        _ => Selection::Ids(ids),
    })
}

/// Runs an operator command and prints what it says.
fn admin(config: &Config, json: bool, f: impl FnOnce(&mut Admin) -> AdminResult) -> ExitCode {
    let result = Admin::connect(config).and_then(|mut admin| f(&mut admin));
    match result {
        Ok(output) => {
            let text = output.render(json);
            print!("{text}");
            if json {
                println!();
            }
            match output.shortfall {
                None => ExitCode::SUCCESS,
                Some(what) => {
                    eprintln!("delayqs: {what}");
                    ExitCode::from(EX_USAGE)
                }
            }
        }
        Err(AdminError::Usage(message)) => {
            eprintln!("delayqs: {message}");
            ExitCode::from(EX_USAGE)
        }
        Err(AdminError::Redis(message)) => {
            eprintln!("delayqs: {message}");
            ExitCode::from(EX_UNAVAILABLE)
        }
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
    // The pid lock first: a refused start must not roll the running daemon's logs.
    let _pid_file = if with_pid_file {
        match PidFile::create(&config.pid_file) {
            Ok(pid_file) => Some(pid_file),
            Err(e) => {
                // Before the logger, so that a refused start touches no log file.
                notify.failed(&e.to_string());
                eprintln!("delayqs: {e}");
                return ExitCode::from(match e {
                    PidFileError::AlreadyRunning(_) => 1,
                    PidFileError::Io(..) => EX_CANTCREAT,
                });
            }
        }
    } else {
        None
    };
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
