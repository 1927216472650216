//! `delayqs top`: the queue live, in the terminal. A thread of its own reads the
//! model from Redis once a second (`model`: a bounded number of commands, whatever
//! the queue holds); this thread draws it (`view`), reads keys (`input`) and runs the
//! actions each on a thread and connection of its own, through the commands'
//! own paths (`fleet::pause`/`resume`, `failed retry`, `show`), so that a slow lookup
//! or an unreachable Redis never freezes the screen. The terminal is driven by hand
//! (`term`).
//!
//! The hosts table shows each host's (and flowKey's) flow: its rate now and limit,
//! whether back-pressure slowed it, an operator's pause with the jobs it parked, and a
//! breaker's. Tab moves the arrows to it, and `h` pauses the selected one or resumes
//! it, as `delayqs pause --host` and `resume --host` do (`fleet::pause`,
//! `fleet::resume_flow`, whose wait of up to 5 s for the heartbeats runs on the
//! action's thread).

mod input;
mod model;
pub(super) mod term;
mod view;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};

use crate::cli::admin::{Admin, Selection};
use crate::cli::error::Error;
use crate::cli::fleet;
use crate::cli::ids::IdArg;
use crate::config::Config;
use input::{Action, Mode};
use model::{Model, Sampler};
use view::Ui;

const REFRESH: Duration = Duration::from_secs(1);
/// How long a key may wait to be seen: the screen answers a key within this.
const KEY_WAIT: Duration = Duration::from_millis(50);
const PAUSE_REASON: &str = "paused from delayqs top";

/// What the other threads tell the view, on one channel (a channel's code is linked
/// per type it carries).
enum Msg {
    Model(Box<Model>),
    /// Redis did not answer the refresh: why.
    Away(String),
    Done(Done),
}

/// An action's result, for the status line, and a lookup's answer to show.
struct Done {
    status: String,
    answer: Option<Vec<String>>,
}

pub fn run(config: Config) -> Result<ExitCode, Error> {
    if !term::is_terminal() {
        return Err(Error::Usage(
            "`delayqs top` draws on a terminal, and its input or output is not one: run it in a terminal, or use `delayqs stats` and `delayqs daemons` in scripts".into(),
        ));
    }
    // Ctrl-C is a key in raw mode; these are the signals from elsewhere, which must
    // still give the terminal back.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Error::Os(format!("cannot install signal handlers: {e}")))?;
    }
    let config = Arc::new(config);
    let (tx, messages) = crossbeam_channel::unbounded::<Msg>();
    sampler(config.clone(), tx.clone())?;
    let screen = term::Screen::enter()
        .map_err(|e| Error::Os(format!("cannot put the terminal in raw mode: {e}")))?;

    let mut model = Model::before_reading(&config);
    let mut ui = Ui::default();
    let mut busy = false;
    let mut drawn_size = (0, 0);
    let mut dirty = true;
    let mut clear = false;
    while !stop.load(Ordering::Relaxed) {
        if term::panicked() {
            return Err(Error::Os(
                "`delayqs top` stopped: one of its threads panicked (the message is above)".into(),
            ));
        }
        loop {
            match messages.try_recv() {
                Ok(Msg::Model(m)) => {
                    ui.selected = follow(&ids(&model), ui.selected, &ids(&m));
                    ui.host = follow(&names(&model), ui.host, &names(&m));
                    ui.push_rates(m.rates);
                    model = *m;
                    dirty = true;
                }
                Ok(Msg::Away(why)) => {
                    // The last figures stay, under the banner.
                    model.away = Some(why);
                    dirty = true;
                }
                Ok(Msg::Done(d)) => {
                    busy = false;
                    ui.status = Some(d.status);
                    if let Some(answer) = d.answer {
                        ui.answer = answer;
                        ui.mode = Mode::Answer;
                    }
                    // A command's warning on stderr may have landed on the screen.
                    clear = true;
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => unreachable!("this thread holds a sender"),
            }
        }
        let size = term::size();
        if dirty || size != drawn_size {
            let (width, height) = size;
            let mut frame = view::paint(&view::render(&model, &ui, width, height), width);
            if clear {
                frame.insert_str(0, "\x1b[2J");
                clear = false;
            }
            screen
                .draw(&frame)
                .map_err(|e| Error::Os(format!("cannot write to the terminal: {e}")))?;
            drawn_size = size;
            dirty = false;
        }
        let bytes = match term::read_keys(KEY_WAIT) {
            Ok(bytes) => bytes,
            // The terminal is gone (its window closed): nothing to show any more.
            Err(_) => break,
        };
        for key in input::keys(&bytes) {
            dirty = true;
            match input::action(&ui.mode, key) {
                Action::Quit => return Ok(ExitCode::SUCCESS),
                Action::Nothing => {}
                Action::Up => move_by(&mut ui, &model, -1),
                Action::Down => move_by(&mut ui, &model, 1),
                Action::PageUp => move_by(&mut ui, &model, -10),
                Action::PageDown => move_by(&mut ui, &model, 10),
                Action::SwitchTable => ui.on_hosts = !ui.on_hosts,
                Action::StartFind => ui.mode = Mode::Find(String::new()),
                Action::Typed(t) => ui.mode = Mode::Find(t),
                Action::Back => ui.mode = Mode::Watch,
                Action::TogglePause | Action::Retry | Action::ToggleHost | Action::Find(_)
                    if busy =>
                {
                    ui.mode = Mode::Watch;
                    ui.status = Some("wait: the last action is still under way".into());
                }
                Action::TogglePause => {
                    busy = true;
                    ui.status = Some(toggle_pause(&config, &model, &tx));
                }
                Action::Retry if ui.on_hosts => {
                    ui.status = Some("r retries a failed record: Tab to the failures".into())
                }
                Action::ToggleHost if !ui.on_hosts => {
                    ui.status = Some("h pauses a host: Tab to the hosts table".into())
                }
                Action::ToggleHost => match model.hosts.get(ui.host) {
                    None => ui.status = Some("no host or flow to pause".into()),
                    Some(h) => {
                        busy = true;
                        ui.status = Some(toggle_host(&config, h, &tx));
                    }
                },
                Action::Retry => match model.failures.get(ui.selected) {
                    None => ui.status = Some("no failed record to retry".into()),
                    Some(f) => {
                        busy = true;
                        ui.status = Some(retry(&config, &f.id, &tx));
                    }
                },
                Action::Find(prefix) => {
                    ui.mode = Mode::Watch;
                    match IdArg::parse(&prefix, false) {
                        Err(e) => ui.status = Some(e.to_string()),
                        Ok(arg) => {
                            busy = true;
                            ui.status = Some(find(&config, arg, &tx));
                        }
                    }
                }
            }
        }
    }
    drop(screen);
    Ok(ExitCode::SUCCESS)
}

/// Where the row highlighted in `before` (failures' ids, or hosts' names) is in
/// `after`: it stays highlighted when others come in above it, so that `r` or `h` acts
/// on the one the operator chose, not whatever took its place. When it is gone, the
/// same place.
fn follow(before: &[&str], selected: usize, after: &[&str]) -> usize {
    let chosen = before.get(selected);
    let at = chosen.and_then(|id| after.iter().position(|a| a == id));
    at.unwrap_or(selected).min(after.len().saturating_sub(1))
}

fn ids(m: &Model) -> Vec<&str> {
    m.failures.iter().map(|f| f.id.as_str()).collect()
}

fn names(m: &Model) -> Vec<&str> {
    m.hosts.iter().map(|h| h.host.as_str()).collect()
}

/// Moves the selection of the table the arrows are in by `by` rows, within it.
fn move_by(ui: &mut Ui, model: &Model, by: isize) {
    let (selected, rows) = match ui.on_hosts {
        true => (&mut ui.host, model.hosts.len()),
        false => (&mut ui.selected, model.failures.len()),
    };
    *selected = selected
        .saturating_add_signed(by)
        .min(rows.saturating_sub(1));
}

/// Starts the thread that reads the model once a second; it ends with the process.
fn sampler(config: Arc<Config>, tx: Sender<Msg>) -> Result<(), Error> {
    start(Box::new(move || {
        let mut sampler = Sampler::new(config);
        loop {
            let began = Instant::now();
            let msg = match sampler.sample() {
                Ok(model) => Msg::Model(Box::new(model)),
                Err(why) => Msg::Away(why),
            };
            if tx.send(msg).is_err() {
                return;
            }
            thread::sleep(REFRESH.saturating_sub(began.elapsed()));
        }
    }))
    .map_err(|e| Error::Os(format!("cannot start a thread: {e}")))
}

/// Every thread starts here, boxed: a thread's start-up code is linked once per
/// closure type it is given, and the static binary has a size budget.
fn start(f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    thread::Builder::new().spawn(f).map(drop)
}

/// Runs `f` on a thread of its own and sends its result.
fn spawn(done: &Sender<Msg>, f: Box<dyn FnOnce() -> Done + Send>) {
    let sender = done.clone();
    if let Err(e) = start(Box::new(move || {
        let _ = sender.send(Msg::Done(f()));
    })) {
        let _ = done.send(Msg::Done(Done {
            status: format!("cannot start a thread: {e}"),
            answer: None,
        }));
    }
}

fn toggle_pause(config: &Arc<Config>, model: &Model, done: &Sender<Msg>) -> String {
    let config = config.clone();
    let resume = model.paused.is_some();
    spawn(
        done,
        Box::new(move || {
            let out = match resume {
                true => fleet::resume(&config),
                false => fleet::pause(&config, None, Some(PAUSE_REASON)),
            };
            Done {
                status: out.map_or_else(|e| e.to_string(), |o| o.text.trim_end().to_string()),
                answer: None,
            }
        }),
    );
    match resume {
        true => "resuming the queue…".into(),
        false => "pausing the queue…".into(),
    }
}

/// `pause --host` (or `--flow`) of the selected row, or `resume --host` when paused.
fn toggle_host(config: &Arc<Config>, host: &model::Host, done: &Sender<Msg>) -> String {
    let name = host.host.clone();
    // The daemons name a flow by its host, or by the jobs' flowKey, in one hash: a
    // name that is not a host's is a flowKey. (Only the pause note and the messages
    // say which.)
    let flow = match fleet::host_name(&name) {
        Ok(h) if h == name => fleet::FlowArg::Host(name),
        _ => fleet::FlowArg::Key(name),
    };
    let resume = host.flow_paused;
    let what = format!("{} {:?}", flow.kind(), flow.name());
    let config = config.clone();
    spawn(
        done,
        Box::new(move || {
            let out = match resume {
                true => fleet::resume_flow(&config, &flow),
                false => fleet::pause(&config, Some(&flow), Some(PAUSE_REASON)),
            };
            Done {
                status: out
                    .map_or_else(|e| e.to_string(), |o| o.text.trim_end().replace('\n', "; ")),
                answer: None,
            }
        }),
    );
    match resume {
        true => format!("resuming the {what} (waits up to 5 s for every daemon's heartbeat)…"),
        false => format!("pausing the {what}…"),
    }
}

/// `failed retry ID`, by the record's whole `Id`.
fn retry(config: &Arc<Config>, id: &str, done: &Sender<Msg>) -> String {
    let arg = match IdArg::parse(id, true) {
        Ok(arg) => arg,
        Err(e) => return e.to_string(),
    };
    let config = config.clone();
    spawn(
        done,
        Box::new(move || {
            let out = Admin::connect(&config)
                .and_then(|mut admin| admin.failed_change("retry", Selection::Ids(vec![arg])));
            let status = match out {
                Ok(o) => {
                    let text = o.text.trim_end().replace('\n', "; ");
                    format!("retry: {text}")
                }
                Err(e) => format!("retry failed: {e}"),
            };
            Done {
                status,
                answer: None,
            }
        }),
    );
    format!("retrying {id}…")
}

/// `show PREFIX`, its answer shown whole.
fn find(config: &Arc<Config>, arg: IdArg, done: &Sender<Msg>) -> String {
    let config = config.clone();
    let prefix = arg.text().to_string();
    spawn(
        done,
        Box::new(move || {
            let out = Admin::connect(&config).and_then(|mut admin| admin.show(&arg));
            match out {
                Ok(o) => Done {
                    status: format!("looked up {}", arg.text()),
                    answer: Some(o.text.lines().map(str::to_string).collect()),
                },
                Err(e) => Done {
                    status: format!("{}: {e}", arg.text()),
                    answer: None,
                },
            }
        }),
    );
    format!("looking up {prefix}… (this reads every member: about 5 s per million jobs)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highlight_follows_its_record() {
        let before = ["c", "b", "a"];
        assert_eq!(follow(&before, 1, &["e", "d", "c", "b", "a"]), 3);
        assert_eq!(follow(&before, 1, &["c", "a"]), 1, "gone: the same place");
        assert_eq!(follow(&before, 2, &["c"]), 0);
        assert_eq!(follow(&[], 0, &["x"]), 0);
        assert_eq!(follow(&before, 0, &[]), 0);
    }
}
