//! The screen as lines of text: a pure function of the model and the view's own state
//! (`render`), then the ANSI that paints it (`paint`). Tested without a terminal.

use std::time::Duration;

use crate::cli::listing::thousands;
use crate::cli::top::input::Mode;
use std::collections::VecDeque;

use crate::cli::top::model::Model;
use crate::timefmt::{human, rfc3339};

/// How a line is painted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Bold,
    /// The selected row: reversed across the width.
    Selected,
    /// Redis away: white on red across the width.
    Alert,
    /// The queue paused: black on yellow across the width.
    Warn,
    Dim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub style: Style,
}

/// What the view keeps between frames besides the model.
#[derive(Debug, Clone)]
pub struct Ui {
    pub mode: Mode,
    /// The selected row of recent failures.
    pub selected: usize,
    /// The arrows move in the hosts table (Tab), not in the failures.
    pub on_hosts: bool,
    /// The selected row of the hosts table.
    pub host: usize,
    /// The last action's result, or what is under way.
    pub status: Option<String>,
    /// A lookup's answer, shown in `Mode::Answer`.
    pub answer: Vec<String>,
    /// Delivered, failed and attempts failed per second, oldest first, one sample
    /// per refresh.
    pub rates: [VecDeque<f64>; 3],
}

/// Rate samples kept: ten minutes at one a second.
const HISTORY: usize = 600;

impl Ui {
    /// Adds a refresh's rates to their history.
    pub fn push_rates(&mut self, rates: [f64; 3]) {
        for (history, rate) in self.rates.iter_mut().zip(rates) {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(rate);
        }
    }
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            mode: Mode::Watch,
            selected: 0,
            on_hosts: false,
            host: 0,
            status: None,
            answer: Vec::new(),
            rates: Default::default(),
        }
    }
}

const KEYS_HELP: &str =
    "p pause/resume queue · ↑↓ select failure · r retry it · Tab hosts · / find job by id · q quit";
const HOST_KEYS_HELP: &str = "h pause/resume host · ↑↓ select host · Tab failures · p pause/resume queue · / find job · q quit";
const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const DAEMON_ROWS: usize = 6;
const HOST_ROWS: usize = 8;

/// The screen, `height` lines of at most `width` columns.
pub fn render(m: &Model, ui: &Ui, width: usize, height: usize) -> Vec<Line> {
    let mut top: Vec<Line> = Vec::new();
    let shards = match m.shards {
        1 => "1 shard".to_string(),
        n => format!("{n} shards"),
    };
    let at = match m.read {
        true => format!("{} UTC", &rfc3339(m.now)[11..19]),
        false => "nothing read yet".into(),
    };
    top.push(line(
        format!(
            "delayqs top · queue {:?} · {} · {shards} · {at}",
            m.queue, m.redis
        ),
        Style::Bold,
    ));
    if let Some(away) = &m.away {
        top.push(line(away.clone(), Style::Alert));
    }
    if let Some(paused) = &m.paused {
        top.push(line(
            format!("QUEUE PAUSED: {paused}; nothing is claimed (p resumes)"),
            Style::Warn,
        ));
    }
    let c = &m.counts;
    let known = |n: u64| match m.read {
        true => thousands(n),
        false => "?".into(),
    };
    top.push(line(
        format!(
            "pending {}   due now {}   in flight {}   waiting for a retry ~{}   failed {}",
            known(c.pending),
            known(c.due),
            known(c.inflight),
            known(c.retrying),
            known(c.failed)
        ),
        Style::Bold,
    ));
    let late = match (m.late_p50, m.late_p99) {
        (Some(p50), Some(p99)) => format!(
            "lateness p50 {}  p99 {} (worst daemon, last minute)",
            seconds(p50),
            seconds(p99)
        ),
        _ => "lateness: no delivery in the last minute".into(),
    };
    let oldest = match c.due {
        0 => "no job due".to_string(),
        _ => format!("oldest due job late by {}", seconds(c.oldest_late)),
    };
    top.push(line(format!("{late}   {oldest}"), Style::Plain));
    for (label, history) in ["delivered/s", "failed/s", "failed attempts/s"]
        .into_iter()
        .zip(&ui.rates)
    {
        top.push(spark_line(label, history, width));
    }

    let mut bottom = vec![
        match &ui.mode {
            Mode::Find(typed) => line(
                format!(
                    "find a job by id prefix (6+ hex digits): {typed}_   Enter looks it up, Esc cancels"
                ),
                Style::Selected,
            ),
            _ => line(ui.status.clone().unwrap_or_default(), Style::Plain),
        },
        line(
            match ui.mode {
                Mode::Answer => "Esc or q: back to the live view".to_string(),
                _ if ui.on_hosts => HOST_KEYS_HELP.to_string(),
                _ => KEYS_HELP.to_string(),
            },
            Style::Dim,
        ),
    ];

    let room = height.saturating_sub(top.len() + bottom.len());
    let middle = match ui.mode {
        Mode::Answer => answer(&ui.answer, room),
        _ => tables(m, ui, room),
    };
    let mut lines = top;
    lines.extend(middle);
    lines.truncate(height.saturating_sub(bottom.len()));
    while lines.len() + bottom.len() < height {
        lines.push(line(String::new(), Style::Plain));
    }
    lines.append(&mut bottom);
    lines.truncate(height);
    for l in &mut lines {
        l.text = fit(&l.text, width);
    }
    lines
}

/// The daemons, the hosts and the recent failures, in `room` lines.
fn tables(m: &Model, ui: &Ui, room: usize) -> Vec<Line> {
    let mut out = vec![line(String::new(), Style::Plain)];
    let daemons: Vec<Vec<String>> = m
        .daemons
        .iter()
        .map(|d| {
            vec![
                d.host.clone(),
                d.pid.to_string(),
                d.version.clone(),
                human(secs(d.up)),
                d.last_round_ago
                    .map_or("never".into(), |s| format!("{} ago", human(secs(s)))),
                format!("{}/{}", d.busy, d.workers),
                thousands(d.delivered),
                d.delivered_rate.map_or("-".into(), |r| format!("{r:.1}")),
                thousands(d.failed),
                d.late_p50.map_or("-".into(), seconds),
                d.late_p99.map_or("-".into(), seconds),
                if d.paused { "paused" } else { "claiming" }.into(),
            ]
        })
        .collect();
    out.push(line(
        match daemons.len() {
            0 => "DAEMONS: none has beaten in the last 10 s".to_string(),
            n => format!("DAEMONS ({n})"),
        },
        Style::Bold,
    ));
    if !daemons.is_empty() {
        let head = [
            "HOST",
            "PID",
            "VERSION",
            "UP",
            "LAST ROUND",
            "BUSY",
            "DELIVERED",
            "/S",
            "FAILED",
            "LATE P50",
            "P99",
            "STATE",
        ];
        let shown = daemons.len().min(DAEMON_ROWS);
        out.extend(table(&head, &daemons[..shown], None));
        if daemons.len() > shown {
            out.push(line(
                format!("… and {} more (delayqs daemons)", daemons.len() - shown),
                Style::Dim,
            ));
        }
    }

    out.push(line(String::new(), Style::Plain));
    let partial = match m.inflight_partial {
        true => "; in flight counted over the first 1,000 per shard",
        false => "",
    };
    out.push(line(
        format!("HOSTS AND FLOWS (failures among the latest failed records{partial})"),
        Style::Bold,
    ));
    let first_host = (ui.host + 1).saturating_sub(HOST_ROWS);
    let hosts: Vec<Vec<String>> = m
        .hosts
        .iter()
        .skip(first_host)
        .take(HOST_ROWS)
        .map(|h| {
            vec![
                h.host.clone(),
                thousands(h.inflight),
                match h.rate.is_empty() {
                    true => "-".into(),
                    false => h.rate.clone(),
                },
                if h.slowed { "slowed" } else { "" }.into(),
                match h.flow_paused {
                    true => format!("PAUSED, {} parked", thousands(h.parked)),
                    false => String::new(),
                },
                thousands(h.failures),
                if h.paused { "paused" } else { "" }.into(),
                h.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    match hosts.is_empty() {
        true => out.push(line(
            "no job in flight, no recent failure, no flow limited or paused".into(),
            Style::Dim,
        )),
        false => out.extend(table(
            &[
                "HOST/FLOW",
                "IN FLIGHT",
                "RATE/S NOW/LIMIT",
                "SLOWED",
                "PAUSED",
                "FAILED",
                "BREAKER",
                "LAST ERROR",
            ],
            &hosts,
            ui.host.checked_sub(first_host).filter(|_| ui.on_hosts),
        )),
    }
    if m.hosts.len() > hosts.len() {
        out.push(line(
            format!("… and {} more hosts", m.hosts.len() - hosts.len()),
            Style::Dim,
        ));
    }

    out.push(line(String::new(), Style::Plain));
    out.push(line(
        format!(
            "RECENT FAILURES ({} of {} records, newest first)",
            thousands(m.failures.len() as u64),
            thousands(m.counts.failed)
        ),
        Style::Bold,
    ));
    // What is left for the failures' rows, after their header line.
    let rows = room.saturating_sub(out.len() + 1).max(1);
    let first = (ui.selected + 1).saturating_sub(rows);
    let failures: Vec<Vec<String>> = m
        .failures
        .iter()
        .skip(first)
        .take(rows)
        .map(|f| {
            vec![
                f.id.chars().take(12).collect(),
                match f.at {
                    0.0 => "?".into(),
                    at => format!("{} ago", human(secs(m.now - at))),
                },
                f.host.clone(),
                f.attempts.to_string(),
                f.error.clone(),
            ]
        })
        .collect();
    match failures.is_empty() {
        true => out.push(line("none".into(), Style::Dim)),
        false => out.extend(table(
            &["ID", "FAILED", "HOST", "ATTEMPTS", "ERROR"],
            &failures,
            ui.selected.checked_sub(first).filter(|_| !ui.on_hosts),
        )),
    }
    out
}

/// A lookup's answer, cut to `room` lines.
fn answer(text: &[String], room: usize) -> Vec<Line> {
    let mut out = vec![line(String::new(), Style::Plain)];
    out.extend(
        text.iter()
            .take(room.saturating_sub(1))
            .map(|t| line(t.clone(), Style::Plain)),
    );
    out
}

/// A header and rows, columns two spaces apart, the last one as long as it is; row
/// `selected` (of `rows`) reversed.
fn table(head: &[&str], rows: &[Vec<String>], selected: Option<usize>) -> Vec<Line> {
    let cells = |r: &[String]| r.iter().map(|c| clean(c)).collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| cells(r)).collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .chain([head[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let join = |cells: Vec<String>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            match i == last {
                true => s.push_str(&cell),
                false => s.push_str(&format!("{cell:<w$}  ", w = widths[i])),
            }
        }
        s
    };
    let mut out = vec![line(
        join(head.iter().map(|h| h.to_string()).collect()),
        Style::Dim,
    )];
    for (i, r) in rows.into_iter().enumerate() {
        let style = match Some(i) == selected {
            true => Style::Selected,
            false => Style::Plain,
        };
        out.push(line(join(r), style));
    }
    out
}

/// `delivered/s   12.5 ▁▂▄█` over the whole history kept: each cell the mean of as
/// many seconds as it takes for the history to fit, so that a narrow terminal still
/// shows the last ten minutes (80 columns: 25 s a cell), not the last 24 seconds.
fn spark_line(label: &str, history: &VecDeque<f64>, width: usize) -> Line {
    let now = history.back().copied().unwrap_or(0.0);
    let head = format!("{label:<17}{now:>9.1}  ");
    // Room for the span after it: "  last 10m 0s max 12345.6".
    let room = width.saturating_sub(head.chars().count() + 28).max(1);
    let per_cell = history.len().div_ceil(room).max(1);
    // Cells end at the newest sample: the oldest cell may hold fewer.
    let (first, rest) = history.as_slices();
    let samples: Vec<f64> = first.iter().chain(rest).copied().collect();
    let shown: Vec<f64> = samples
        .rchunks(per_cell)
        .rev()
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let max = shown.iter().copied().fold(0.0, f64::max);
    let spark: String = shown
        .iter()
        .map(|v| match *v <= 0.0 || max <= 0.0 {
            true => ' ',
            false => SPARKS[((v / max * 7.0).round() as usize).min(7)],
        })
        .collect();
    let span = match history.len() {
        0 => String::new(),
        n => format!("  last {} max {max:.1}", whole(n as f64)),
    };
    line(format!("{head}{spark:<room$}{span}"), Style::Plain)
}

/// `45s`, `3m 20s`: a span of whole seconds.
fn whole(s: f64) -> String {
    match s {
        s if s < 60.0 => format!("{s:.0}s"),
        s => human(secs(s)),
    }
}

fn line(text: String, style: Style) -> Line {
    Line { text, style }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// `12ms`, `1.5s`, `3m 20s`.
fn seconds(s: f64) -> String {
    match s {
        s if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        s => human(secs(s)),
    }
}

/// What Redis held may carry control characters (an error with a newline, or
/// an escape sequence): never sent to the terminal as they are.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Cut to `width` characters, with `…` when cut.
fn fit(s: &str, width: usize) -> String {
    let s = clean(s);
    match s.chars().count() <= width {
        true => s,
        false => {
            let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
            out.push('…');
            out
        }
    }
}

/// The ANSI for a whole screen, written in one go: every line from its start, the
/// rest of it cleared, so nothing of the frame before shows through.
pub fn paint(lines: &[Line], width: usize) -> String {
    let mut out = String::from("\x1b[H");
    for (i, l) in lines.iter().enumerate() {
        let (on, full) = match l.style {
            Style::Plain => ("", false),
            Style::Bold => ("\x1b[1m", false),
            Style::Dim => ("\x1b[2m", false),
            Style::Selected => ("\x1b[7m", true),
            Style::Alert => ("\x1b[1;37;41m", true),
            Style::Warn => ("\x1b[30;43m", true),
        };
        out.push_str(&format!("\x1b[{};1H{on}", i + 1));
        match full {
            true => out.push_str(&format!("{:<width$}", l.text)),
            false => out.push_str(&l.text),
        }
        out.push_str("\x1b[0m\x1b[K");
    }
    out.push_str("\x1b[J");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::model::{Counts, Daemon, Failure, Host};

    fn model() -> Model {
        Model {
            queue: "DelayQs:job_zqueue".into(),
            redis: "redis://127.0.0.1:6379/".into(),
            shards: 2,
            now: 1_800_000_000.0,
            read: true,
            counts: Counts {
                pending: 1_000_000,
                due: 1234,
                inflight: 32,
                retrying: 7,
                failed: 3,
                oldest_late: 2.5,
            },
            daemons: vec![Daemon {
                host: "worker-7".into(),
                pid: 4242,
                version: "0.1.0".into(),
                up: 3600.0,
                last_round_ago: Some(0.2),
                busy: 3,
                workers: 4,
                delivered: 98_765,
                failed: 2,
                delivered_rate: Some(120.5),
                failed_rate: Some(0.0),
                attempts_failed_rate: Some(1.5),
                late_p50: Some(0.012),
                late_p99: Some(0.250),
                paused: false,
            }],
            hosts: vec![
                Host {
                    host: "shop.local:8080".into(),
                    inflight: 31,
                    failures: 3,
                    last_error: Some("HTTP 503\nService Unavailable".into()),
                    paused: true,
                    rate: "25/50".into(),
                    slowed: true,
                    flow_paused: false,
                    parked: 0,
                },
                Host {
                    host: "pay.example".into(),
                    flow_paused: true,
                    parked: 1234,
                    ..Host::default()
                },
            ],
            failures: (0..3)
                .map(|i| Failure {
                    id: format!("{i}abcdef0123456789"),
                    at: 1_800_000_000.0 - 60.0,
                    host: "shop.local:8080".into(),
                    attempts: 5,
                    error: format!("HTTP 50{i}"),
                })
                .collect(),
            late_p50: Some(0.012),
            late_p99: Some(0.250),
            ..Model::default()
        }
    }

    fn text(lines: &[Line]) -> String {
        lines.iter().map(|l| format!("{}\n", l.text)).collect()
    }

    fn find<'a>(lines: &'a [Line], needle: &str) -> &'a Line {
        lines
            .iter()
            .find(|l| l.text.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", text(lines)))
    }

    #[test]
    fn the_counts_the_daemons_the_hosts_and_the_failures_fit_the_screen() {
        let mut ui = Ui::default();
        for rates in [
            [0.0, 0.0, 0.0],
            [50.0, 0.0, 3.0],
            [100.0, 1.0, 2.0],
            [120.5, 0.0, 1.5],
        ] {
            ui.push_rates(rates);
        }
        let lines = render(&model(), &ui, 120, 40);
        assert_eq!(lines.len(), 40);
        assert!(
            lines.iter().all(|l| l.text.chars().count() <= 120),
            "{}",
            text(&lines)
        );
        let counts = find(&lines, "pending 1,000,000");
        for part in [
            "due now 1,234",
            "in flight 32",
            "waiting for a retry ~7",
            "failed 3",
        ] {
            assert!(counts.text.contains(part), "{part} in {:?}", counts.text);
        }
        assert!(
            find(&lines, "lateness p50 12ms  p99 250ms")
                .text
                .contains("late by 2.5s")
        );
        let daemon = find(&lines, "worker-7");
        for part in ["4242", "1h 0m", "3/4", "98,765", "120.5", "claiming"] {
            assert!(daemon.text.contains(part), "{part} in {:?}", daemon.text);
        }
        let host = find(&lines, "shop.local:8080  ");
        for part in ["paused", "HTTP 503 Service", " 25/50 ", " slowed "] {
            assert!(host.text.contains(part), "{part} in {:?}", host.text);
        }
        assert!(!host.text.contains("PAUSED"), "{}", host.text);
        let head = find(&lines, "HOST/FLOW  ");
        let paused = find(&lines, "pay.example  ");
        let column = |l: &Line, s: &str| l.text.find(s).unwrap();
        assert_eq!(
            column(paused, "PAUSED, 1,234 parked"),
            column(head, "PAUSED"),
            "{}",
            text(&lines)
        );
        assert_eq!(host.style, Style::Plain, "the arrows are in the failures");
        assert_eq!(column(host, "25/50"), column(head, "RATE/S"));
        assert!(find(&lines, "delivered/s").text.contains("120.5"));
        assert!(find(&lines, "failed attempts/s").text.contains(" 1.5  "));
        let rate = find(&lines, "delivered/s");
        assert!(
            rate.text.contains('█') && rate.text.ends_with("last 4s max 120.5"),
            "{}",
            rate.text
        );
        assert_eq!(find(&lines, "0abcdef01234").style, Style::Selected);
        assert!(find(&lines, "1abcdef01234").text.contains("1m 0s ago"));
        assert!(text(&lines).contains("2 shards"));
        assert!(!text(&lines).contains("more hosts"));
        assert!(lines[39].text.contains("q quit"));
        assert!(
            !text(&lines).contains("QUEUE PAUSED") && !text(&lines).contains("does not answer")
        );
    }

    #[test]
    fn a_paused_queue_and_redis_away_are_banners() {
        let mut m = model();
        m.paused = Some("paused since 2027-01-15T08:00:00.000Z by ops@box: deploy".into());
        m.away =
            Some("Redis at redis://127.0.0.1:6379/ does not answer: Connection refused".into());
        let lines = render(&m, &Ui::default(), 120, 40);
        assert_eq!(
            find(&lines, "does not answer: Connection refused").style,
            Style::Alert
        );
        let paused = find(&lines, "QUEUE PAUSED");
        assert_eq!(paused.style, Style::Warn);
        assert!(
            paused.text.contains("by ops@box: deploy"),
            "{}",
            paused.text
        );
        // The figures last read stay on the screen.
        find(&lines, "pending 1,000,000");

        let never = Model {
            away: m.away.clone(),
            ..Model::default()
        };
        let lines = render(&never, &Ui::default(), 80, 24);
        assert!(find(&lines, "pending ?").text.contains("failed ?"));
        find(&lines, "nothing read yet");
        find(&lines, "DAEMONS: none");
    }

    #[test]
    fn selection_scrolls_find_prompts_and_a_small_screen_still_shows_the_keys() {
        let mut m = model();
        m.failures = (0..100)
            .map(|i| Failure {
                id: format!("{i:02}cdef0123456789"),
                ..Failure::default()
            })
            .collect();
        let ui = Ui {
            selected: 90,
            ..Ui::default()
        };
        m.hosts = (0..20)
            .map(|i| Host {
                host: format!("h{i}"),
                ..Host::default()
            })
            .collect();
        let lines = render(&m, &ui, 120, 40);
        assert_eq!(find(&lines, "90cdef012345").style, Style::Selected);
        find(&lines, "… and 12 more hosts");
        let ui = Ui {
            mode: Mode::Find("abc1".into()),
            ..Ui::default()
        };
        let lines = render(&m, &ui, 120, 40);
        find(&lines, "find a job by id prefix (6+ hex digits): abc1_");
        let lines = render(&m, &Ui::default(), 60, 12);
        assert_eq!(lines.len(), 12);
        assert!(lines[11].text.starts_with("p pause"), "{}", text(&lines));
        assert!(lines.iter().all(|l| l.text.chars().count() <= 60));
        let ui = Ui {
            mode: Mode::Answer,
            answer: vec!["id     0abc".into(), "state  failed for good".into()],
            ..Ui::default()
        };
        let lines = render(&m, &ui, 120, 40);
        find(&lines, "state  failed for good");
        assert!(!text(&lines).contains("RECENT FAILURES"));
    }

    #[test]
    fn tab_moves_the_highlight_to_the_hosts_and_says_how_to_pause_one() {
        let mut m = model();
        m.hosts = (0..20)
            .map(|i| Host {
                host: format!("h{i:02}"),
                flow_paused: i == 15,
                parked: 7,
                ..Host::default()
            })
            .collect();
        let ui = Ui {
            on_hosts: true,
            host: 15,
            ..Ui::default()
        };
        let lines = render(&m, &ui, 120, 40);
        // Scrolled so that the selected row shows: h08 to h15.
        let selected = find(&lines, "h15  ");
        assert_eq!(selected.style, Style::Selected, "{}", text(&lines));
        assert!(
            selected.text.contains("PAUSED, 7 parked"),
            "{}",
            selected.text
        );
        assert!(!text(&lines).contains("h07  ") && text(&lines).contains("h08  "));
        find(&lines, "… and 12 more hosts");
        assert!(
            lines
                .iter()
                .all(|l| l.style != Style::Selected || l.text.starts_with("h15")),
            "one row highlighted: {}",
            text(&lines)
        );
        assert!(
            lines[39].text.starts_with("h pause/resume host"),
            "{}",
            lines[39].text
        );
        assert!(
            lines[39].text.contains("Tab failures"),
            "{}",
            lines[39].text
        );
        let lines = render(&m, &Ui::default(), 120, 40);
        assert_eq!(find(&lines, "h00  ").style, Style::Plain);
        assert_eq!(find(&lines, "0abcdef01234").style, Style::Selected);
        assert!(lines[39].text.contains("Tab hosts"), "{}", lines[39].text);
    }

    #[test]
    fn the_sparklines_span_the_history_kept_at_80_columns() {
        // Ten minutes: busy in the first minute only, then idle.
        let mut ui = Ui::default();
        for i in 0..HISTORY {
            let rate = if i < 60 { 100.0 } else { 0.0 };
            ui.push_rates([rate, 0.0, 0.0]);
        }
        let lines = render(&model(), &ui, 80, 24);
        let rate = find(&lines, "delivered/s");
        assert!(rate.text.chars().count() <= 80, "{}", rate.text);
        assert!(
            rate.text.ends_with("last 10m 0s max 100.0"),
            "{}",
            rate.text
        );
        // The busy minute, ten minutes back, is drawn at the line's start.
        let spark: String = rate.text.chars().skip(28).take(24).collect();
        assert!(spark.starts_with("██"), "{:?}", rate.text);
        assert_eq!(spark.trim_end().chars().count(), 3, "{:?}", rate.text);
        // Five minutes fit at 80 columns however the history began.
        let mut ui = Ui::default();
        for _ in 0..300 {
            ui.push_rates([1.0, 0.0, 0.0]);
        }
        let rate = find(&render(&model(), &ui, 80, 24), "delivered/s").clone();
        assert!(rate.text.ends_with("last 5m 0s max 1.0"), "{}", rate.text);
        assert_eq!(rate.text.matches('█').count(), 24, "{}", rate.text);
    }

    #[test]
    fn paint_resets_every_line_and_never_passes_control_characters() {
        let lines = vec![
            line("a\x1b[2Jb".into(), Style::Plain),
            line("x".into(), Style::Alert),
        ];
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|l| Line {
                text: fit(&l.text, 10),
                ..l
            })
            .collect();
        let out = paint(&lines, 10);
        assert!(out.contains("\x1b[1;1Ha [2Jb\x1b[0m\x1b[K"), "{out:?}");
        assert!(
            out.contains("\x1b[2;1H\x1b[1;37;41mx         \x1b[0m"),
            "{out:?}"
        );
    }
}
