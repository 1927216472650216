//! `delayqs top` (issue 16) in a real terminal: the binary runs in a tmux pane against
//! a real redis-server, with a real daemon delivering to an endpoint on loopback. The
//! pane is read back as text (`capture-pane`), keys are typed into it (`send-keys`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::json;

/// A tmux server of the test's own (its own socket), with one 120×40 pane running a
/// plain shell; killed with the test.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let shell = "env PS1='shell$ ' USER=tester bash --norc --noprofile";
        let out = tmux
            .command()
            .args(["new-session", "-d", "-x", "120", "-y", "40", shell])
            .output()
            .expect("tmux not found: run `make test`, which installs it");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux.wait_for("the shell's prompt", |s| s.contains("shell$"));
        tmux
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// Types `text` as it is.
    fn type_text(&self, text: &str) {
        let status = self
            .command()
            .args(["send-keys", "-l", text])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Presses a key by tmux's name for it (`Enter`, `Escape`, `Down`).
    fn press(&self, key: &str) {
        let status = self.command().args(["send-keys", key]).status().unwrap();
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows what `cond` looks for; returns that screen.
    fn wait_for(&self, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; the pane shows:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// The number after `label` on the screen (`pending 1,234`).
fn count(screen: &str, label: &str) -> Option<u64> {
    let at = screen.find(label)? + label.len();
    let digits: String = screen[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn top_shows_the_queue_live_pauses_the_queue_and_a_host_retries_finds_and_gives_the_terminal_back()
{
    let redis = RedisServer::start();
    let mut con = redis.con();
    // The first call to /flaky fails (and, with no retries, goes to the failed list);
    // the ones after succeed.
    let flaky_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let calls = flaky_calls.clone();
    let endpoint = Endpoint::start(move |r| match r.path.as_str() {
        "/flaky" if calls.fetch_add(1, Ordering::SeqCst) == 0 => Reply::new(500, "not yet"),
        _ => Reply::success().after(std::time::Duration::from_millis(20)),
    });
    let config = config_file(&redis, json!({"maxRetryNum": 0, "logLevel": "info"}));
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_ready();
    let now = unix_now();
    for i in 0..30 {
        let due = now + 4.0 + f64::from(i) * 0.1;
        add(&mut con, &member(&endpoint.url("/ok"), json!(i)), due);
    }
    let later = member(&endpoint.url("/later"), json!("in an hour"));
    add(&mut con, &later, now + 3600.0);
    let later_id = job_id(&mut con, &later);

    let dir = scratch_dir();
    let tmux = Tmux::start(&dir);
    let (before, after) = (dir.join("stty.before"), dir.join("stty.after"));
    tmux.type_text(&format!(
        "stty -g > {}; {} top --config {}; echo top-exited-$?; stty -g > {}",
        before.display(),
        env!("CARGO_BIN_EXE_delayqs"),
        config.display(),
        after.display()
    ));
    tmux.press("Enter");

    // The counts as they change: the jobs pending, then delivered.
    tmux.wait_for("31 pending jobs on the screen", |s| {
        s.contains("delayqs top · queue") && count(s, "pending ") == Some(31)
    });
    let pid = daemon.pid().to_string();
    tmux.wait_for("the daemon's row", |s| {
        s.lines()
            .any(|l| l.contains(&format!("  {pid}  ")) && l.contains("claiming"))
    });
    // A rate from the daemon's heartbeat counters, and its lateness.
    tmux.wait_for("a delivery rate above 0", |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("delivered/s"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .is_some_and(|rate| rate > 0.0)
    });
    tmux.wait_for("the jobs delivered", |s| count(s, "pending ") == Some(1));
    tmux.wait_for("their lateness", |s| s.contains("lateness p50 "));
    assert_eq!(endpoint.per_job().len(), 30);

    // A failed job shows among the recent failures; `r` retries it (the one selected).
    let flaky = member(&endpoint.url("/flaky"), json!("flaky"));
    add(&mut con, &flaky, 0.0);
    let flaky_id = job_id(&mut con, &flaky);
    wait_for_failed(&mut con, 1);
    tmux.wait_for("the failure listed", |s| {
        s.contains(&flaky_id[..12]) && s.contains("HTTP 500") && count(s, "failed ") == Some(1)
    });
    tmux.type_text("r");
    tmux.wait_for("the retry reported", |s| s.contains("retried"));
    wait_until(PATIENCE, "the retried job delivered", || {
        flaky_calls.load(Ordering::SeqCst) == 2 && con.llen::<_, usize>(FAILED).unwrap() == 0
    });
    tmux.wait_for("the failed count back to 0", |s| {
        count(s, "failed ") == Some(0)
    });

    // `/` finds a job by a prefix of its id and says its state.
    tmux.type_text("/");
    tmux.type_text(&later_id[..10]);
    tmux.wait_for("the prefix typed", |s| {
        s.contains(&format!("{}_", &later_id[..10]))
    });
    tmux.press("Enter");
    let screen = tmux.wait_for("the job's state", |s| s.contains("pending: no attempt yet"));
    assert!(
        screen.contains(&later_id) && screen.contains("/later"),
        "{screen}"
    );
    tmux.press("Escape");
    tmux.wait_for("the live view again", |s| s.contains("RECENT FAILURES"));

    // `p` pauses the queue, `p` again resumes it.
    let paused_key = format!("{QUEUE}:paused");
    tmux.type_text("p");
    wait_until(PATIENCE, "the pause key in Redis", || {
        con.exists::<_, bool>(&paused_key).unwrap()
    });
    tmux.wait_for("the paused banner", |s| {
        s.contains("QUEUE PAUSED") && s.contains("by tester@")
    });
    daemon.wait_for_log("the queue is paused");
    tmux.type_text("p");
    wait_until(PATIENCE, "the pause key gone", || {
        !con.exists::<_, bool>(&paused_key).unwrap()
    });
    tmux.wait_for("no banner", |s| {
        !s.contains("QUEUE PAUSED") && s.contains("pending ")
    });

    // Tab moves the arrows to the hosts table and `h` pauses the host selected (the
    // only one: every job here calls the one endpoint, and a host called in the last
    // minute is listed), as `delayqs pause --host` does: its jobs are parked as they
    // come due, uncalled, and its row says how many.
    let host = format!("127.0.0.1:{}", endpoint.port);
    let row_of = |s: &str| -> Option<String> {
        s.lines()
            .find(|l| l.starts_with(&format!("{host}  ")))
            .map(str::to_string)
    };
    tmux.wait_for("the host listed", |s| row_of(s).is_some());
    tmux.press("Tab");
    tmux.wait_for("the hosts' keys", |s| s.contains("h pause/resume host"));
    tmux.type_text("h");
    let paused_flows = format!("{QUEUE}:paused_flows");
    wait_until(PATIENCE, "the host's pause in Redis", || {
        con.hexists::<_, _, bool>(&paused_flows, &host).unwrap()
    });
    tmux.wait_for("the host marked paused, and the pause reported", |s| {
        row_of(s).is_some_and(|l| l.contains("PAUSED, 0 parked"))
            && s.contains(&format!("paused the host {host:?}"))
    });
    daemon.wait_for_log(&format!("flow {host:?} is paused"));
    let calls = endpoint.count();
    let held: Vec<String> = (0..3)
        .map(|i| member(&endpoint.url("/held"), json!(i)))
        .collect();
    let now = unix_now();
    for m in &held {
        add(&mut con, m, now);
    }
    let parked = format!("{QUEUE}:parked:{host}");
    wait_until(PATIENCE, "the host's jobs parked", || {
        con.zcard::<_, usize>(&parked).unwrap() == 3
    });
    tmux.wait_for("the parked jobs counted", |s| {
        row_of(s).is_some_and(|l| l.contains("PAUSED, 3 parked"))
    });
    assert_eq!(endpoint.count(), calls, "a paused host gets no call");
    // `h` again resumes it: the parked jobs go out.
    tmux.type_text("h");
    tmux.wait_for("the resume reported", |s| {
        s.contains(&format!("resumed the host {host:?}")) && s.contains("brought back 3 parked")
    });
    wait_until(PATIENCE, "the held jobs delivered", || {
        endpoint.count() == calls + 3
    });
    assert!(!con.hexists::<_, _, bool>(&paused_flows, &host).unwrap());
    // Settled in Redis too (the calls are made before their outcomes are written), so
    // that the figures left on the screen when Redis goes are the final ones.
    wait_until(PATIENCE, "the held jobs settled", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 1 && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    tmux.wait_for("the host no longer paused, its jobs gone", |s| {
        row_of(s).is_some_and(|l| !l.contains("PAUSED"))
            && count(s, "pending ") == Some(1)
            && s.contains("waiting for a retry ~0 ")
    });
    tmux.press("Tab");
    tmux.wait_for("the failures' keys again", |s| s.contains("r retry it"));

    // Redis away: said plainly, and the view goes on.
    drop(con);
    drop(redis);
    tmux.wait_for("Redis said away", |s| s.contains("does not answer"));
    tmux.wait_for("the last figures still shown", |s| {
        count(s, "pending ") == Some(1)
    });

    // `q` gives the terminal back as it was: the shell's screen, its settings.
    tmux.type_text("q");
    let screen = tmux.wait_for("the shell again", |s| s.contains("top-exited-0"));
    assert!(!screen.contains("RECENT FAILURES"), "{screen}");
    assert_same_settings(&before, &after);
}

#[test]
fn top_sums_the_shards_refuses_without_a_terminal_and_ctrl_c_quits_cleanly() {
    let redis = RedisServer::start();
    let config = config_file(
        &redis,
        json!({"key": "{t}:jobs", "inflightKey": "{t}:inflight", "attemptsKey": "{t}:attempts",
            "failKey": "{t}:failed", "shards": 2}),
    );
    let mut con = redis.con();
    let later = unix_now() + 3600.0;
    for (key, n) in [("{t}:jobs", 3), ("{t:1}:jobs", 4)] {
        for i in 0..n {
            let job = member("http://127.0.0.1:9/x", json!(i));
            let _: () = con.zadd(key, job, later).unwrap();
        }
    }
    let _: () = con
        .rpush(
            "{t:1}:failed",
            r#"{"Id":"abc","error":"HTTP 502","failedAt":1}"#,
        )
        .unwrap();
    let out = run_delayqs(&["top", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("draws on a terminal") && err.contains("delayqs stats"),
        "{err}"
    );

    let dir = scratch_dir();
    let tmux = Tmux::start(&dir);
    let (before, after) = (dir.join("stty.before"), dir.join("stty.after"));
    tmux.type_text(&format!(
        "stty -g > {}; {} top --config {}; echo top-exited-$?; stty -g > {}",
        before.display(),
        env!("CARGO_BIN_EXE_delayqs"),
        config.display(),
        after.display()
    ));
    tmux.press("Enter");
    let screen = tmux.wait_for("the view", |s| s.contains("DAEMONS: none"));
    assert!(screen.contains("2 shards"), "{screen}");
    tmux.wait_for("both shards counted", |s| {
        count(s, "pending ") == Some(7) && count(s, "failed ") == Some(1) && s.contains("HTTP 502")
    });
    tmux.press("C-c");
    let screen = tmux.wait_for("the shell again", |s| s.contains("top-exited-0"));
    assert!(!screen.contains("DAEMONS"), "{screen}");
    assert_same_settings(&before, &after);
}

/// The terminal's settings (`stty -g`) the shell saved before `top` and after it.
fn assert_same_settings(before: &Path, after: &Path) {
    wait_until(PATIENCE, "the settings after", || {
        std::fs::read_to_string(after).is_ok_and(|s| !s.is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(before).unwrap(),
        std::fs::read_to_string(after).unwrap(),
        "the terminal's settings (stty -g) before and after"
    );
}

/// `pending` in a terminal cuts bodies to its width, which bash does not export as
/// `$COLUMNS`: the terminal is asked (before a `$COLUMNS` that says otherwise).
#[test]
fn pending_in_a_terminal_cuts_bodies_to_the_terminals_width() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let job = member("http://127.0.0.1:9/p", json!({"text": "x".repeat(300)}));
    add(&mut con, &job, unix_now() + 3600.0);

    let dir = scratch_dir();
    let tmux = Tmux::start(&dir);
    let bin = env!("CARGO_BIN_EXE_delayqs");
    let config = config.display();
    tmux.type_text(&format!(
        "env -u COLUMNS {bin} pending --config {config}; COLUMNS=90 {bin} pending --config {config}; echo listed-$?"
    ));
    tmux.press("Enter");
    let screen = tmux.wait_for("both listings", |s| s.contains("listed-0"));
    let rows: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains(r#"{"text":"xxx"#))
        .collect();
    assert_eq!(rows.len(), 2, "{screen}");
    for row in rows {
        assert_eq!(row.chars().count(), 120, "{screen}");
        assert!(row.ends_with("x…"), "{screen}");
    }
}
