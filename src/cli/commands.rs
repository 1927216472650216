//! The commands and their arguments, and `main`: parse, run, print the one error
//! (`cli::error`) and exit with its code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::{ArgsInfo, FromArgs};
use log::warn;

use crate::cli::admin::{Admin, AdminResult, JobOption, NewJob, Output, Selection};
use crate::cli::by_id;
use crate::cli::daemon;
use crate::cli::error::{EX_CONFIG, EX_TEMPFAIL, EX_USAGE, Error};
use crate::cli::fleet;
use crate::cli::ids::{self, IdArg};
use crate::cli::listing::Listing;
use crate::cli::lists::{Filter, Limit, When};
use crate::cli::notify::Notify;
use crate::cli::pidfile::PidFile;
use crate::cli::shell;
use crate::config::{self, Config};
use crate::dispatch::{self, Control, Exit, signals};
use crate::telemetry::logging;
use crate::timefmt;

#[derive(FromArgs, ArgsInfo)]
/// Delivers delayed HTTP callbacks out of a Redis sorted set: on time, once, and
/// without losing a job. See README.md for the job format and the config keys. Every
/// command reads the config file given by --config, else the one named by the
/// DELAYQS_CONFIG environment variable, else config/config.json (in the current
/// directory), else /etc/delayqs/config.json.
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
// One per process, parsed once: `add`'s many options cost nothing worth a Box (which
// argh's derive would not take).
#[allow(clippy::large_enum_variant)]
enum Command {
    Run(RunArgs),
    Start(StartArgs),
    Stop(StopArgs),
    Restart(RestartArgs),
    Status(StatusArgs),
    Add(AddArgs),
    Pending(PendingArgs),
    Inflight(InflightArgs),
    Show(ShowArgs),
    Stats(StatsArgs),
    Failed(FailedArgs),
    Cancel(CancelArgs),
    Move(MoveArgs),
    Functions(FunctionsArgs),
    Daemons(DaemonsArgs),
    Pause(PauseArgs),
    Resume(ResumeArgs),
    Top(TopArgs),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

#[derive(FromArgs, ArgsInfo)]
/// Run in the foreground (as runit and systemd expect) until SIGTERM, SIGINT or
/// SIGQUIT. SIGHUP reloads the config. Writes no pid file.
#[argh(subcommand, name = "run")]
struct RunArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// check the config file and exit: 0 when it is valid, 78 when not
    #[argh(switch)]
    check: bool,
    /// log at this level instead of the config's logLevel, reloads included: off,
    /// error, warn, info, debug (a line per delivery; make run uses it), trace
    #[argh(option)]
    log_level: Option<String>,
}

#[derive(FromArgs, ArgsInfo)]
/// Start with a pid file (the config's `pid`); with -d, detach and return once the
/// daemon has reached Redis.
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// detach into the background
    #[argh(switch, short = 'd')]
    detach: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Stop the daemon named by the pid file, waiting for it to finish its callbacks.
#[argh(subcommand, name = "stop")]
struct StopArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// send SIGKILL if it has not stopped by the timeout
    #[argh(switch)]
    force: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Stop, then start again once the old process has exited.
#[argh(subcommand, name = "restart")]
struct RestartArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// detach into the background
    #[argh(switch, short = 'd')]
    detach: bool,
    /// send SIGKILL if the old process has not stopped by the timeout
    #[argh(switch)]
    force: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Say whether the daemon runs and works: exit 0 running, 3 stopped, 1 dead with a pid
/// file left, 150 running but not working (Redis away, or no recent round).
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(FromArgs, ArgsInfo)]
/// Enqueue a job exactly as a producer would; prints its id and due time. Give the
/// callback and what the job carries (--body, --sign, the per-job options), or the
/// whole member with --member.
#[argh(subcommand, name = "add")]
struct AddArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// absolute http(s) URL the job is POSTed to
    #[argh(option)]
    callback: Option<String>,
    /// the job's body, as JSON (default: null)
    #[argh(option)]
    body: Option<String>,
    /// the producer's signature, passed through to the endpoint
    #[argh(option)]
    sign: Option<String>,
    /// retries after the first attempt, instead of the daemon's maxRetryNum (0-1000)
    #[argh(option)]
    max_retry: Option<String>,
    /// seconds the whole call may take, at most the daemon's timeoutMs
    #[argh(option)]
    timeout: Option<String>,
    /// seconds between attempts: a base, doubled each time (30), or a list whose last
    /// entry repeats (10,60,600)
    #[argh(option)]
    backoff: Option<String>,
    /// an extra request header, "Name: value" (repeat for more)
    #[argh(option)]
    header: Vec<String>,
    /// POST (default) or PUT
    #[argh(option)]
    method: Option<String>,
    /// form (default) or json: the body sent as the JSON request body
    #[argh(option)]
    content_type: Option<String>,
    /// drop the job, unsent, if this Redis key exists when it falls due
    #[argh(option)]
    skip_if_exists: Option<String>,
    /// drop the job, unsent, if this Redis key is missing when it falls due
    #[argh(option)]
    skip_if_missing: Option<String>,
    /// the flow whose limits the call counts against, instead of its host's
    /// (flowControl.flows)
    #[argh(option)]
    flow_key: Option<String>,
    /// the whole member, as JSON, written byte for byte (instead of --callback, --body,
    /// --sign and the options)
    #[argh(option)]
    member: Option<String>,
    /// due time: Unix seconds (fractions allowed) or RFC 3339
    #[argh(option)]
    at: Option<String>,
    /// due after this long, by Redis's clock: 90s, 15m, 3d, 1h30m (0s: now)
    #[argh(option, long = "in")]
    after: Option<String>,
    /// schedule it under this id of yours, replacing the job pending under it (see
    /// `move`, `cancel --id`)
    #[argh(option)]
    id: Option<String>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Move the job scheduled under a producer's id to another due time, its attempts so
/// far kept; one in flight finishes its attempt, and its retry goes at that time.
#[argh(subcommand, name = "move")]
struct MoveArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// the id the job was scheduled under (`add --id`, `delayqs_schedule`)
    #[argh(positional)]
    id: String,
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

#[derive(FromArgs, ArgsInfo)]
/// The `delayqs` Functions library of jobs by id (Redis 7+, Valkey): `load` it (the
/// daemon loads it at start when missing or older), or print it (`library`), or print
/// the same operations as a plain script for EVAL/EVALSHA (`script`).
#[argh(subcommand, name = "functions")]
struct FunctionsArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// load, library or script
    #[argh(positional)]
    what: String,
}

impl RunArgs {
    fn log_level(&self) -> Result<Option<log::LevelFilter>, Error> {
        let Some(text) = &self.log_level else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| {
            Error::Usage(format!(
                "--log-level {text:?} is not a level; expected one of off, error, warn, info, debug, trace"
            ))
        })
    }
}

impl AddArgs {
    /// The job as given: the member itself, or the fields to build one from.
    fn new_job(&self) -> Result<NewJob, Error> {
        let mut options: Vec<(&'static str, &'static str, &str)> = Vec::new();
        let given = [
            ("--max-retry", "maxRetry", &self.max_retry),
            ("--timeout", "timeout", &self.timeout),
            ("--backoff", "backoff", &self.backoff),
            ("--method", "method", &self.method),
            ("--content-type", "contentType", &self.content_type),
            ("--skip-if-exists", "skipIfExists", &self.skip_if_exists),
            ("--skip-if-missing", "skipIfMissing", &self.skip_if_missing),
            ("--flow-key", "flowKey", &self.flow_key),
        ];
        for (flag, field, value) in given {
            if let Some(value) = value {
                options.push((flag, field, value));
            }
        }
        for header in &self.header {
            options.push(("--header", "headers", header));
        }
        match (&self.member, &self.callback) {
            (Some(member), None) if self.body.is_none() && self.sign.is_none() && options.is_empty() => {
                Ok(NewJob::Member(member.clone()))
            }
            (Some(_), _) => Err(Error::Usage(
                "--member is the whole job: give it alone, without --callback, --body, --sign or the per-job options (put those in the member)".into(),
            )),
            (None, Some(callback)) => Ok(NewJob::Fields {
                callback: callback.clone(),
                body: self.body.clone(),
                sign: self.sign.clone(),
                options: options
                    .into_iter()
                    .map(|(flag, field, value)| JobOption {
                        flag,
                        field,
                        value: value.to_string(),
                    })
                    .collect(),
            }),
            (None, None) => Err(Error::Usage(
                "give the job's --callback URL (or the whole member with --member JSON)".into(),
            )),
        }
    }
}

#[derive(FromArgs, ArgsInfo)]
/// List pending jobs in due order: id, due time, lateness, attempts, callback, body.
#[argh(subcommand, name = "pending")]
struct PendingArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// how many jobs to show (default 20; 0: all)
    #[argh(option, default = "20")]
    limit: usize,
    /// only jobs already due
    #[argh(switch)]
    due: bool,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// List claimed jobs, soonest lease deadline first: id, lease deadline, attempt, the
/// daemon holding it, callback.
#[argh(subcommand, name = "inflight")]
struct InflightArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// how many jobs to show (default 20; 0: all)
    #[argh(option, default = "20")]
    limit: usize,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Show one job, by its id or a unique prefix of it (6 hex digits at least): its state
/// (pending, in flight, waiting for a retry, failed), attempts, due times, callback,
/// body, options and last error.
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// the job id, or a unique prefix of it
    #[argh(positional)]
    id: String,
}

#[derive(FromArgs, ArgsInfo)]
/// Count jobs pending, due, in flight, waiting for a retry and failed.
#[argh(subcommand, name = "stats")]
struct StatsArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Inspect, retry or purge the jobs that failed for good (`failKey`).
#[argh(subcommand, name = "failed")]
struct FailedArgs {
    #[argh(subcommand)]
    command: FailedCommand,
}

#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
enum FailedCommand {
    List(FailedListArgs),
    Retry(FailedRetryArgs),
    Purge(FailedPurgeArgs),
}

#[derive(FromArgs, ArgsInfo)]
/// Show failed jobs, oldest first: id, when, attempts, callback, last error.
#[argh(subcommand, name = "list")]
struct FailedListArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// how many records to show (default 20; 0: all)
    #[argh(option, default = "20")]
    limit: usize,
    /// only records whose callback is on this host (`host` or `host:port`)
    #[argh(option)]
    host: Option<String>,
    /// only records whose error contains this text (any case)
    #[argh(option)]
    error: Option<String>,
    /// only records that failed since this time (Unix seconds, RFC 3339) or for this
    /// long (90s, 15m, 3d, 1h30m)
    #[argh(option)]
    since: Option<String>,

    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Put failed jobs back in the queue, due now, attempt count reset, same member.
#[argh(subcommand, name = "retry")]
struct FailedRetryArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// every failed job (malformed ones only with --malformed)
    #[argh(switch)]
    all: bool,
    /// with --all or a filter: retry malformed jobs too, which fail again at once
    /// unless their member was fixed (ids named are always retried)
    #[argh(switch)]
    malformed: bool,
    /// only records whose callback is on this host (`host` or `host:port`)
    #[argh(option)]
    host: Option<String>,
    /// only records whose error contains this text (any case)
    #[argh(option)]
    error: Option<String>,
    /// only records that failed since this time (Unix seconds, RFC 3339) or for this
    /// long (90s, 15m, 3d, 1h30m)
    #[argh(option)]
    since: Option<String>,

    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// job ids (the `Id` of the records), or unique prefixes of 6 hex digits or more
    #[argh(positional)]
    ids: Vec<String>,
}

#[derive(FromArgs, ArgsInfo)]
/// Drop failed records for good.
#[argh(subcommand, name = "purge")]
struct FailedPurgeArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// every failed job
    #[argh(switch)]
    all: bool,
    /// records that failed longer ago than this: 90s, 15m, 3d, 1h30m
    #[argh(option)]
    older_than: Option<String>,
    /// only records whose callback is on this host (`host` or `host:port`)
    #[argh(option)]
    host: Option<String>,
    /// only records whose error contains this text (any case)
    #[argh(option)]
    error: Option<String>,
    /// only records that failed since this time (Unix seconds, RFC 3339) or for this
    /// long (90s, 15m, 3d, 1h30m)
    #[argh(option)]
    since: Option<String>,

    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// job ids (the `Id` of the records), or unique prefixes of 6 hex digits or more
    #[argh(positional)]
    ids: Vec<String>,
}

#[derive(FromArgs, ArgsInfo)]
/// Cancel pending jobs by id (the X-Delayqs-Job-Id header), as ZREM by a producer does.
#[argh(subcommand, name = "cancel")]
struct CancelArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
    /// the arguments are producers' own ids (`add --id`); a job in flight then finishes
    /// its attempt and gets no retry
    #[argh(switch)]
    id: bool,
    /// job ids, or unique prefixes of 6 hex digits or more (with --id: producers' ids)
    #[argh(positional)]
    ids: Vec<String>,
}

#[derive(FromArgs, ArgsInfo)]
/// List the daemons serving the queue: host, pid, version, uptime, last round, busy
/// workers, delivered and failed since start (from their heartbeats in Redis).
#[argh(subcommand, name = "daemons")]
struct DaemonsArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print one JSON document instead of a table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Pause the queue: every daemon serving it stops claiming within 2 s, and still
/// settles the calls in flight. With --host or --flow, pause one callback host or
/// flowKey instead: its jobs are parked as they come due (they stay in the queue, a
/// day ahead, and cost no call nor attempt) while the others go on. Lasts until
/// `delayqs resume`, across restarts.
#[argh(subcommand, name = "pause")]
struct PauseArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// pause one callback host: `host` or `host:port` (lower-cased; a port of 80 or
    /// 443 is left out, as a callback's default port is), or a callback URL
    #[argh(option)]
    host: Option<String>,
    /// pause the jobs of one `flowKey`
    #[argh(option)]
    flow: Option<String>,
    /// why, shown by stats and daemons
    #[argh(option)]
    reason: Option<String>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Resume a paused queue: every daemon claims again within 2 s. With --host or --flow,
/// resume that host or flowKey: its parked jobs go back to their due times at once.
#[argh(subcommand, name = "resume")]
struct ResumeArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// resume one callback host, named as for `pause --host`
    #[argh(option)]
    host: Option<String>,
    /// resume the jobs of one `flowKey`
    #[argh(option)]
    flow: Option<String>,
    /// print one JSON document instead of text
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, ArgsInfo)]
/// Watch the queue live: counts, delivery and failure rates, lateness, daemons, hosts
/// and recent failures, refreshed every second. Keys: p pause/resume, arrows select a
/// failure, r retry it, Tab to the hosts and h pause/resume one, / find a job by id,
/// q quit.
#[argh(subcommand, name = "top")]
struct TopArgs {
    /// config file (default: $DELAYQS_CONFIG, then config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(FromArgs, ArgsInfo)]
/// Print a shell completion script, made from the same definitions as --help (make
/// install puts them where bash-completion and zsh look).
#[argh(subcommand, name = "completions")]
struct CompletionsArgs {
    /// bash or zsh
    #[argh(positional)]
    shell: String,
}

#[derive(FromArgs, ArgsInfo)]
/// Print the man page, delayqs(1), in roff, made from the same definitions as --help.
#[argh(subcommand, name = "man")]
struct ManArgs {}

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
            Command::Inflight(a) => a.config.as_deref(),
            Command::Show(a) => a.config.as_deref(),
            Command::Stats(a) => a.config.as_deref(),
            Command::Failed(f) => match &f.command {
                FailedCommand::List(a) => a.config.as_deref(),
                FailedCommand::Retry(a) => a.config.as_deref(),
                FailedCommand::Purge(a) => a.config.as_deref(),
            },
            Command::Cancel(a) => a.config.as_deref(),
            Command::Move(a) => a.config.as_deref(),
            Command::Functions(a) => a.config.as_deref(),
            Command::Daemons(a) => a.config.as_deref(),
            Command::Pause(a) => a.config.as_deref(),
            Command::Resume(a) => a.config.as_deref(),
            Command::Top(a) => a.config.as_deref(),
            Command::Completions(_) | Command::Man(_) => None,
        }
    }
}

/// Parses the command line: help (`--help`, `-h`) printed and exit 0; a usage error
/// printed and exit 64 (argh's own `from_env` exits 1 on both kinds of trouble).
fn parse_args() -> Result<Cli, ExitCode> {
    let args: Vec<String> = match std::env::args_os().map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(arg) => {
            eprintln!(
                "delayqs: an argument is not valid UTF-8: {}",
                arg.to_string_lossy()
            );
            return Err(ExitCode::from(EX_USAGE));
        }
    };
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("delayqs");
    // argh knows only `--help`; `-h` is taken nowhere else, so it means help too (up
    // to a `--`, past which arguments are positional).
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let rest: Vec<&str> = args
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, a)| match a.as_str() {
            "-h" if i < end => "--help",
            a => a,
        })
        .collect();
    Cli::from_args(&[name], &rest).map_err(|early| match early.status {
        Ok(()) => {
            println!("{}", early.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            let why = early.output.trim_end();
            eprintln!("delayqs: {why}\nRun `{name} --help` for more information.");
            ExitCode::from(EX_USAGE)
        }
    })
}

pub fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let notify = Notify::from_env();
    match run(cli, &notify) {
        Ok(code) => code,
        Err(e) => {
            notify.failed(&e.to_string());
            eprintln!("delayqs: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli, notify: &Notify) -> Result<ExitCode, Error> {
    if cli.version {
        println!("delayqs {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = cli.command else {
        return Err(Error::Usage(
            "no command given; try `delayqs run --config PATH` or `delayqs --help`".into(),
        ));
    };
    if let Command::Functions(f) = &command
        && f.what != "load"
    {
        return print_functions(&f.what);
    }
    // Made from the command definitions alone: no config needed.
    match &command {
        Command::Completions(a) => return shell::completions(&Cli::get_args_info(), &a.shell),
        Command::Man(_) => return shell::man(&Cli::get_args_info()),
        _ => {}
    }
    // A bad argument is said before the config is looked at, whatever the file holds.
    let log_level = match &command {
        Command::Run(args) => args.log_level()?,
        _ => None,
    };
    if let Command::Add(args) = &command {
        args.new_job()?;
    }
    let path = config::locate(command.config())?;
    if let Command::Stop(_) | Command::Status(_) = &command {
        let target = pid_target(&path)?;
        return match command {
            Command::Stop(args) => daemon::stop(&target, args.force),
            _ => Ok(daemon::status(&target)),
        };
    }
    let (config, warnings) = config::load(&path)?;
    if let Command::Run(_) | Command::Start(_) | Command::Restart(_) = &command {
        // Before a restart stops the running daemon, and before the pid file and
        // the logger: a path the daemon cannot write is a config to fix, said now.
        config::check_writable(&config).map_err(|problem| config::ConfigError {
            path: path.clone(),
            problem,
        })?;
    }
    match command {
        Command::Run(args) if args.check => {
            // `run` only warns about an unknown key (a file written for a newer
            // version still starts); a check refuses it, as it is most likely a typo.
            let unknown: Vec<String> = warnings
                .iter()
                .filter_map(|w| w.unknown_key.as_deref())
                .map(|k| format!("unknown key `{k}`{}", config::suggestion(k)))
                .collect();
            for w in warnings.iter().filter(|w| w.unknown_key.is_none()) {
                eprintln!("delayqs: config {}: {w}", path.display());
            }
            if !unknown.is_empty() {
                return Err(Error::Config(config::ConfigError {
                    path,
                    problem: config::Problem::file(unknown.join("; ")),
                }));
            }
            println!("delayqs: config {} is valid", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(_) => serve(&path, config, &warnings, false, log_level, notify),
        Command::Start(args) if args.detach => daemon::start_detached(&path, &config),
        Command::Start(_) => serve(&path, config, &warnings, true, None, notify),
        Command::Stop(_) | Command::Status(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled above")
        }
        Command::Restart(args) => {
            daemon::stop(&daemon::Target::of(&config), args.force)?;
            match args.detach {
                true => daemon::start_detached(&path, &config),
                false => serve(&path, config, &warnings, true, None, notify),
            }
        }
        Command::Add(a) => {
            let job = a.new_job()?;
            admin(&config, a.json, |admin| {
                admin.add(job, a.at.as_deref(), a.after.as_deref(), a.id.as_deref())
            })
        }
        Command::Move(a) => {
            let due = match (a.at.as_deref(), a.after.as_deref()) {
                (Some(at), None) => by_id::due_arg("at", crate::cli::admin::due_at(at)?),
                (None, Some(after)) => by_id::due_arg(
                    "in",
                    timefmt::parse_duration(after)
                        .map_err(Error::Usage)?
                        .as_secs_f64(),
                ),
                _ => {
                    return Err(Error::Usage(
                        "give exactly one of --at TIME and --in DURATION".into(),
                    ));
                }
            };
            admin(&config, a.json, |admin| admin.move_id(&a.id, &due))
        }
        Command::Functions(a) => admin(&config, a.json, |admin| admin.functions_load()),
        Command::Pending(a) => listing(&config, a.json, "jobs", PENDING, |admin, out| {
            admin.pending(out, Limit::from_arg(a.limit), a.due)
        }),
        Command::Inflight(a) => listing(&config, a.json, "jobs", INFLIGHT, |admin, out| {
            admin.inflight(out, Limit::from_arg(a.limit))
        }),
        Command::Show(a) => {
            let id = IdArg::parse(&a.id, false)?;
            admin(&config, a.json, |admin| admin.show(&id))
        }
        Command::Stats(a) => admin(&config, a.json, |admin| admin.stats()),
        Command::Failed(f) => match f.command {
            FailedCommand::List(a) => {
                let filter = filter(a.host, a.error, a.since.as_deref(), None)?;
                listing(&config, a.json, "records", FAILED, |admin, out| {
                    admin.failed_list(out, Limit::from_arg(a.limit), &filter)
                })
            }
            FailedCommand::Retry(a) => {
                let filter = filter(a.host, a.error, a.since.as_deref(), None)?;
                let which = select(
                    a.all,
                    filter,
                    a.ids,
                    "--all, job ids, or filters (--host, --error, --since)",
                )?;
                let op = if a.malformed {
                    "retry-malformed"
                } else {
                    "retry"
                };
                admin(&config, a.json, |admin| admin.failed_change(op, which))
            }
            FailedCommand::Purge(a) => {
                let older = a.older_than.as_deref();
                let filter = filter(a.host, a.error, a.since.as_deref(), older)?;
                let choices = "--all, job ids, or filters (--older-than, --host, --error, --since)";
                let which = select(a.all, filter, a.ids, choices)?;
                admin(&config, a.json, |admin| admin.failed_change("purge", which))
            }
        },
        Command::Cancel(a) => {
            if a.ids.is_empty() {
                return Err(Error::Usage("name at least one job id to cancel".into()));
            }
            if a.id {
                return admin(&config, a.json, |admin| admin.cancel_ids(&a.ids));
            }
            let ids = ids::parse_all(&a.ids, false)?;
            admin(&config, a.json, |admin| admin.cancel(&ids))
        }
        Command::Daemons(a) => show(fleet::daemons(&config)?, a.json),
        Command::Pause(a) => {
            let flow = fleet::FlowArg::from_args(a.host.as_deref(), a.flow.as_deref())?;
            show(
                fleet::pause(&config, flow.as_ref(), a.reason.as_deref())?,
                a.json,
            )
        }
        Command::Resume(a) => {
            let out = match fleet::FlowArg::from_args(a.host.as_deref(), a.flow.as_deref())? {
                None => fleet::resume(&config)?,
                Some(flow) => fleet::resume_flow(&config, &flow)?,
            };
            show(out, a.json)
        }
        Command::Top(_) => crate::cli::top::run(config),
    }
}

const PENDING: &[&str] = &["ID", "DUE", "LATE", "ATTEMPTS", "CALLBACK", "BODY"];
const INFLIGHT: &[&str] = &["ID", "LEASE UNTIL", "ATTEMPT", "DAEMON", "CALLBACK"];
const FAILED: &[&str] = &["ID", "FAILED", "ATTEMPTS", "CALLBACK", "ERROR"];

/// The pid file for `stop` and `status`: from the config, or, when the file does not
/// load (a bad edit since the daemon started), from its `pid` key alone, with one
/// warning line. Fails only when not even that can be read.
fn pid_target(path: &Path) -> Result<daemon::Target, Error> {
    let problem = match config::load(path) {
        Ok((config, _)) => return Ok(daemon::Target::of(&config)),
        Err(e) => e,
    };
    let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| config::pid_leniently(&text))
    else {
        return Err(problem.into());
    };
    let (pid_file, whence) = match pid {
        config::PidKey::Found(p) => (p, "its `pid` key"),
        config::PidKey::Absent => (
            PathBuf::from(config::DEFAULT_PID_FILE),
            "the default, as it has no `pid` key",
        ),
    };
    eprintln!(
        "delayqs: warning: {problem}; the rest of the config is ignored, the pid file is {} ({whence})",
        pid_file.display()
    );
    Ok(daemon::Target {
        pid_file,
        timeout: config::DEFAULT_TIMEOUT,
        config: None,
    })
}

/// The filter options of `failed list|retry|purge`; `older_than` only for purge.
fn filter(
    host: Option<String>,
    error: Option<String>,
    since: Option<&str>,
    older_than: Option<&str>,
) -> Result<Filter, Error> {
    let before = older_than
        .map(|d| {
            crate::timefmt::parse_duration(d)
                .map_err(|e| Error::Usage(format!("--older-than: {e}")))
        })
        .transpose()?;
    Ok(Filter {
        host,
        error,
        since: since.map(|s| When::parse(s, "--since")).transpose()?,
        before: before.map(When::Ago),
    })
}

/// Exactly one of `--all`, ids, or filters (which combine).
fn select(all: bool, filter: Filter, ids: Vec<String>, choices: &str) -> Result<Selection, Error> {
    let given = usize::from(all) + usize::from(!filter.is_empty()) + usize::from(!ids.is_empty());
    if given != 1 {
        return Err(Error::Usage(format!("give exactly one of {choices}")));
    }
    Ok(match (all, ids.is_empty()) {
        (true, _) => Selection::All,
        (_, false) => Selection::Ids(ids::parse_all(&ids, true)?),
        _ => Selection::Filter(filter),
    })
}

/// Runs a listing, printed as it is read (`cli::listing`).
fn listing(
    config: &Config,
    json: bool,
    array: &str,
    header: &[&str],
    f: impl FnOnce(&mut Admin, &mut Listing) -> Result<(), Error>,
) -> Result<ExitCode, Error> {
    let mut admin = Admin::connect(config)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut listing = Listing::start(&mut out, json, array, header);
    f(&mut admin, &mut listing)?;
    Ok(ExitCode::SUCCESS)
}

/// `functions library` and `functions script`: what a producer or an operator loads by
/// hand (`redis-cli FUNCTION LOAD`, `SCRIPT LOAD`).
fn print_functions(what: &str) -> Result<ExitCode, Error> {
    match what {
        "library" => print!("{}", crate::store::functions::library()),
        "script" => print!("{}", crate::store::functions::SCRIPT),
        _ => {
            return Err(Error::Usage(format!(
                "functions {what:?}: give load, library or script"
            )));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an operator command and prints what it says.
fn admin(
    config: &Config,
    json: bool,
    f: impl FnOnce(&mut Admin) -> AdminResult,
) -> Result<ExitCode, Error> {
    show(f(&mut Admin::connect(config)?)?, json)
}

/// Prints a command's output; a shortfall goes to stderr, with exit code 64.
fn show(output: Output, json: bool) -> Result<ExitCode, Error> {
    let text = output.render(json);
    print!("{text}");
    if json {
        println!();
    }
    match output.shortfall {
        None => Ok(ExitCode::SUCCESS),
        Some(what) => {
            // What was done is printed above; this says what was not.
            eprintln!("delayqs: {what}");
            Ok(ExitCode::from(EX_USAGE))
        }
    }
}

/// Runs the dispatcher in this process, with a pid file for `start`; `log_level`, when
/// given, wins over the config's, at start and at each reload.
fn serve(
    path: &Path,
    mut config: Config,
    warnings: &[config::Warning],
    with_pid_file: bool,
    log_level: Option<log::LevelFilter>,
    notify: &Notify,
) -> Result<ExitCode, Error> {
    if let Some(level) = log_level {
        config.log_level = level;
    }
    // The pid lock first, and before the logger: a refused start must not roll (or
    // touch) the running daemon's logs.
    let _pid_file = match with_pid_file {
        true => Some(PidFile::create(&config.pid_file)?),
        false => None,
    };
    logging::init(config.log_level, config.log_files.as_ref()).map_err(|e| {
        let dir = config
            .log_files
            .as_ref()
            .map(|f| f.dir.display().to_string());
        Error::CantCreate(format!(
            "cannot open the log files in {} (config `logDir`): {e}",
            dir.unwrap_or_default()
        ))
    })?;
    for w in warnings {
        warn!("config {}: {w}", path.display());
    }
    let signals = signals::channel()
        .map_err(|e| Error::Os(format!("cannot install signal handlers: {e}")))?;
    let reload_path = path.to_path_buf();
    let control = Control {
        signals,
        reload: Box::new(move || {
            let (mut config, warnings) = config::load(&reload_path)?;
            for w in warnings {
                warn!("config {}: {w}", reload_path.display());
            }
            if let Some(level) = log_level {
                config.log_level = level;
            }
            Ok(config)
        }),
        readiness: notify.into_readiness(),
    };
    match dispatch::run(config, control) {
        Ok(Exit::Clean) => Ok(ExitCode::SUCCESS),
        Ok(Exit::Unrecorded(_)) => Ok(ExitCode::from(EX_TEMPFAIL)),
        Ok(Exit::Misconfigured) => Ok(ExitCode::from(EX_CONFIG)),
        Err(e) => {
            // Logged rather than printed: stderr may be a log file by now.
            log::error!("cannot run with config {}: {e}", path.display());
            Ok(ExitCode::from(crate::cli::error::EX_OSERR))
        }
    }
}
