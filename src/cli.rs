//! The command line: parse arguments, run the command, turn the result into an exit
//! code (sysexits where one fits).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use log::warn;

use crate::config;
use crate::dispatcher::{self, Exit};
use crate::logging;
use crate::signals;

/// Exit codes from sysexits.h.
const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

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
}

#[derive(FromArgs)]
/// Run in the foreground (as runit and systemd expect) until SIGTERM, SIGINT or SIGQUIT.
#[argh(subcommand, name = "run")]
struct RunArgs {
    /// config file (default: config/config.json, then /etc/delayqs/config.json)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// check the config file and exit: 0 when it is valid, 78 when not
    #[argh(switch)]
    check: bool,
}

pub fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("delayqs {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Run(args)) => run(&args),
        None => {
            eprintln!(
                "delayqs: no command given; try `delayqs run --config PATH` or `delayqs --help`"
            );
            ExitCode::from(EX_USAGE)
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let loaded = config::locate(args.config.as_deref())
        .and_then(|path| config::load(&path).map(|(config, warnings)| (path, config, warnings)));
    let (path, config, warnings) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("delayqs: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check {
        for w in &warnings {
            eprintln!("delayqs: config {}: {w}", path.display());
        }
        println!("delayqs: config {} is valid", path.display());
        return ExitCode::SUCCESS;
    }
    logging::init(config.log_level);
    for w in &warnings {
        warn!("config {}: {w}", path.display());
    }
    serve(&path, config)
}

fn serve(path: &Path, config: config::Config) -> ExitCode {
    let result = signals::stop_channel().and_then(|stop| dispatcher::run(config, stop));
    match result {
        Ok(Exit::Clean) => ExitCode::SUCCESS,
        Ok(Exit::Unrecorded(_)) => ExitCode::from(EX_TEMPFAIL),
        Ok(Exit::Misconfigured) => ExitCode::from(EX_CONFIG),
        Err(e) => {
            log::error!("cannot run with config {}: {e}", path.display());
            ExitCode::from(EX_OSERR)
        }
    }
}
