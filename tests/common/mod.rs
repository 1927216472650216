//! Test scaffolding: a private redis-server on a free port, a recording HTTP endpoint
//! on loopback, and the real `delayqs` binary. No mocks: everything here is the real
//! thing on 127.0.0.1.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use redis::Commands;

/// Generous: these bound a hang, they do not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Now as the daemon's log lines start: `2026-11-25T12:47:26.000Z`, by `date`.
pub fn log_timestamp_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `cond` until it holds; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delayqs-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------- redis-server

/// The server program the tests start: `redis-server`, or the one named by
/// `DELAYQS_TEST_SERVER` (`make test` also runs the delivery, retry and fault tests
/// with `valkey-server`).
pub fn server_program() -> String {
    std::env::var("DELAYQS_TEST_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A throwaway server that keeps nothing on disk.
    pub fn start() -> RedisServer {
        Self::launch(false)
    }

    /// A server with an fsync-always append-only file, so a restart keeps every job.
    pub fn start_persistent() -> RedisServer {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: scratch_dir(),
            persistent,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_program());
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{} not found ({e}): run `make test`, which installs it",
                server_program()
            )
        });
        self.child = Some(child);
        wait_until(PATIENCE, "redis-server to answer PING", || {
            self.try_con()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Makes the default user need `password`; returns the URL that carries it.
    pub fn require_password(&self, password: &str) -> String {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(password)
            .query(&mut self.con())
            .unwrap();
        format!("redis://:{password}@127.0.0.1:{}/", self.port)
    }

    /// Adds an ACL user allowed every command on keys matching `keys`; returns its URL.
    pub fn acl_user(&self, name: &str, password: &str, keys: &str) -> String {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg(format!("~{keys}"))
            .arg("+@all")
            .query(&mut self.con())
            .unwrap();
        format!("redis://{name}:{password}@127.0.0.1:{}/", self.port)
    }

    fn try_con(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    pub fn con(&self) -> redis::Connection {
        self.try_con().expect("connect to the test redis-server")
    }

    /// Stops the server (it writes its append-only file) and starts it again on the
    /// same port and directory.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        thread::sleep(down_for);
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A helper process of a test, killed when dropped, and when its test thread ends.
pub struct Guarded(pub Child);

impl Guarded {
    pub fn spawn(cmd: &mut Command) -> Guarded {
        die_with_parent(cmd);
        Guarded(
            cmd.stderr(Stdio::null())
                .spawn()
                .expect("spawn a test helper"),
        )
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test that dies (or is killed) must not leave its servers and daemons behind:
/// they get SIGKILL when the thread that started them ends.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

// ---------------------------------------------------------------- HTTP endpoint

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub form: HashMap<String, String>,
    /// Unix seconds when the request was fully read.
    pub at: f64,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn job_id(&self) -> &str {
        self.header("x-delayqs-job-id")
    }

    pub fn attempt(&self) -> u32 {
        self.header("x-delayqs-attempt").parse().unwrap_or(0)
    }
}

/// What the endpoint answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Waits this long before answering.
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
    /// Closes the connection after answering, without saying so in a header (as a
    /// server whose keep-alive ran out does).
    pub close: bool,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn then_close(mut self) -> Reply {
        self.close = true;
        self
    }

    pub fn success() -> Reply {
        Reply::new(200, "success")
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Behaviour = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP/1.1 server on loopback with keep-alive, a thread per connection, that
/// records every request and answers as its behaviour says.
pub struct Endpoint {
    pub port: u16,
    /// The address it listens on: 127.0.0.1, or a test host's (tests/partition.rs).
    host: String,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

impl Endpoint {
    pub fn start(behaviour: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Endpoint {
        Endpoint::start_on("127.0.0.1", behaviour)
    }

    /// Listens on `host`, an address of this machine.
    pub fn start_on(
        host: &str,
        behaviour: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Endpoint {
        let listener = TcpListener::bind((host, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let recorded = requests.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let recorded = recorded.clone();
                let behaviour = behaviour.clone();
                thread::spawn(move || serve(stream, &recorded, &*behaviour));
            }
        });
        Endpoint {
            port,
            host: host.to_string(),
            requests,
            connections,
        }
    }

    /// Answers `success` to everything.
    pub fn succeeding() -> Endpoint {
        Endpoint::start(|_| Reply::success())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// TCP connections accepted so far, whether or not a request came on them.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests per job id.
    pub fn per_job(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.requests.lock().unwrap().iter() {
            *counts.entry(r.job_id().to_string()).or_insert(0) += 1;
        }
        counts
    }

    pub fn wait_for(&self, n: usize) -> Vec<Request> {
        wait_until(PATIENCE, &format!("{n} requests at the endpoint"), || {
            self.count() >= n
        });
        self.requests()
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<Request>>, behaviour: &Behaviour) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request {
            form: parse_form(&String::from_utf8_lossy(&body)),
            method,
            path,
            headers,
            body,
            at: unix_now(),
        };
        recorded.lock().unwrap().push(request.clone());
        let reply = behaviour(&request);
        thread::sleep(reply.delay);
        let extra: String = reply
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let response = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n{}",
            reply.status,
            reply.body.len(),
            reply.body
        );
        if writer.write_all(response.as_bytes()).is_err() || reply.close {
            return;
        }
    }
}

pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------- the daemon

pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Starts `delayqs run` with a config made of `fields` merged over test defaults.
    pub fn start(redis: &RedisServer, fields: serde_json::Value) -> Daemon {
        Daemon::start_with_file(&config_file(redis, fields))
    }

    pub fn start_with_file(config: &Path) -> Daemon {
        Daemon::start_under(&[], config)
    }

    /// Starts `delayqs run` as the argument of `wrapper` (e.g. `faketime -f +1h`).
    pub fn start_under(wrapper: &[&str], config: &Path) -> Daemon {
        // A log of its own even when daemons share a config: two writers of one file
        // would overwrite each other's lines.
        let log = (1..)
            .map(|n| match n {
                1 => config.with_extension("log"),
                n => config.with_extension(format!("{n}.log")),
            })
            .find(|p| !p.exists())
            .unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_delayqs"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_delayqs")),
        };
        die_with_parent(&mut command);
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
            config: config.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, text: &str) {
        wait_until(PATIENCE, &format!("{text:?} in the daemon log"), || {
            self.log().contains(text)
        });
    }

    /// Waits until the daemon is up: its `ready:` line says Redis answered and the keys
    /// check out, and it claims from then on. (The `running:` line comes before Redis
    /// was tried.) Needs `logLevel` info or chattier, and the log on stderr (no
    /// `logDir`).
    pub fn wait_ready(&self) {
        self.wait_for_log("] ready: Redis at ");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.as_ref().expect("running").id(), name);
    }

    /// The peak resident memory of the process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// SIGKILL: no clean-up of any kind.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() || std::env::var_os("DELAYQS_TEST_LOG").is_some() {
            eprintln!("---- daemon log ({})\n{}", self.log.display(), self.log());
        }
    }
}

/// Writes a config file of `fields` merged over test defaults, in a fresh directory.
pub fn config_file(redis: &RedisServer, fields: serde_json::Value) -> PathBuf {
    let path = scratch_dir().join("config.json");
    write_config(&path, redis, fields);
    path
}

/// Writes `fields` merged over test defaults to `path`.
pub fn write_config(path: &Path, redis: &RedisServer, fields: serde_json::Value) {
    write_config_for(path, &redis.url(), fields);
}

/// Writes `fields` merged over test defaults, for the Redis at `redis_url`, to `path`.
pub fn write_config_for(path: &Path, redis_url: &str, fields: serde_json::Value) {
    let mut config = serde_json::json!({
        "redis": redis_url,
        "concurrency": 4,
        "pollIntervalMs": 20,
        "retryBaseMs": 200,
        "retryJitter": 0,
        "timeoutMs": 5000,
        "logLevel": "debug",
        "pid": path.with_file_name("delayqs.pid"),
    });
    for (k, v) in fields.as_object().expect("fields must be an object") {
        config[k] = v.clone();
    }
    fs::write(path, config.to_string()).unwrap();
}

/// libfaketime's library, to preload into a daemon whose clock a test skews (the
/// `faketime` command would run it as a child, under another pid).
pub fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found
        .expect("libfaketime.so.1 not found: install Debian's faketime package (make test does)")
        .display()
        .to_string()
}

/// Runs an admin command with `--config config` after its arguments.
pub fn delayqs_with(config: &Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--config", config.to_str().unwrap()]);
    run_delayqs(&all)
}

pub fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs an admin command with `--json`, asserts it succeeded, and parses what it prints.
pub fn json_with(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = delayqs_with(config, &all);
    assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout_of(&out)))
}

/// Runs the binary to completion with these arguments.
pub fn run_delayqs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_delayqs"))
        .args(args)
        .output()
        .unwrap()
}

// ---------------------------------------------------------------- Redis helpers

pub const QUEUE: &str = "DelayQs:job_zqueue";
pub const INFLIGHT: &str = "DelayQs:inflight";
pub const ATTEMPTS: &str = "DelayQs:attempts";
pub const FAILED: &str = "DelayQs:fail_job";

/// A producer's member string, as PHP's `json_encode` would write it.
pub fn member(callback: &str, body: serde_json::Value) -> String {
    serde_json::json!({"body": body, "callback": callback}).to_string()
}

pub fn add(con: &mut redis::Connection, member: &str, due: f64) {
    let _: () = redis::cmd("ZADD")
        .arg(QUEUE)
        .arg(format!("{due:.6}"))
        .arg(member)
        .query(con)
        .unwrap();
}

/// The id delayqs sends in `X-Delayqs-Job-Id`: SHA-1 hex of the member string.
pub fn job_id(con: &mut redis::Connection, member: &str) -> String {
    redis::cmd("EVAL")
        .arg("return redis.sha1hex(ARGV[1])")
        .arg(0)
        .arg(member)
        .query(con)
        .unwrap()
}

pub fn failed_records(con: &mut redis::Connection) -> Vec<serde_json::Value> {
    let raw: Vec<String> = con.lrange(FAILED, 0, -1).unwrap();
    raw.iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// Waits until the failed list holds `n` records.
pub fn wait_for_failed(con: &mut redis::Connection, n: usize) {
    wait_until(PATIENCE, &format!("{n} records in the failed list"), || {
        con.llen::<_, usize>(FAILED).unwrap() == n
    });
}

/// Asserts delayqs leaves nothing behind: no job in flight, no attempt count, once
/// the outcomes under way are written.
pub fn assert_no_bookkeeping(con: &mut redis::Connection) {
    let mut left = (0, 0);
    let settled = |con: &mut redis::Connection, left: &mut (usize, usize)| {
        *left = (con.zcard(INFLIGHT).unwrap(), con.hlen(ATTEMPTS).unwrap());
        *left == (0, 0)
    };
    let deadline = Instant::now() + PATIENCE;
    while !settled(con, &mut left) {
        assert!(
            Instant::now() < deadline,
            "in flight, attempt counts left: {left:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- markers

/// How long a marker's request is held for the others of its set. Under the daemon's
/// default `timeoutMs` (5 s), so that holding it never fails the attempt.
const MARKER_HOLD: Duration = Duration::from_secs(3);

/// Proof that a window has passed, instead of a fixed sleep: marker jobs, each to its
/// own path on an endpoint of their own (so they touch no other endpoint's counts),
/// added to the queue and waited for.
///
/// Why their arrival proves it: one main loop claims due jobs in due-score order and
/// hands them to the workers through a first-in, first-out channel. So once a marker
/// due at `due` has been claimed, every job that was in the queue due before `due` by
/// then has been claimed too, and handed to a worker ahead of the marker. With one
/// worker, a job handed out ahead has also been attempted: its request reached its
/// endpoint before the marker's did. With `workers` workers, `workers` markers are
/// added and each request is held until all of them are held at once: then every
/// worker is busy with a marker, so each has finished the job it took before, and
/// every job handed out ahead of the markers has been attempted (or set aside without
/// a request, as a paused host's are).
///
/// What it does not cover: a job written to the queue, with an earlier score, after the
/// marker was claimed. Callers add the marker once what would schedule such a job (an
/// outcome, a cancel) is known to have happened.
pub struct Marker {
    endpoint: Endpoint,
    hold: Arc<(Mutex<MarkerHold>, Condvar)>,
    workers: usize,
}

#[derive(Default)]
struct MarkerHold {
    /// Marker requests being held now.
    held: usize,
    /// When `workers` of them were first held at once (Unix seconds).
    all_at: Option<f64>,
}

impl Marker {
    /// Adds `workers` marker jobs due at `due` (Unix seconds); `workers` is the
    /// daemon's `concurrency` (1 is enough to show the loop claimed past `due`).
    pub fn add(con: &mut redis::Connection, due: f64, workers: usize) -> Marker {
        assert!(workers >= 1);
        let hold = Arc::new((Mutex::new(MarkerHold::default()), Condvar::new()));
        let shared = hold.clone();
        let endpoint = Endpoint::start(move |r| {
            let (lock, all_held) = &*shared;
            let mut h = lock.lock().unwrap();
            h.held += 1;
            if h.held >= workers && h.all_at.is_none() {
                h.all_at = Some(r.at);
                all_held.notify_all();
            }
            let (mut h, _) = all_held
                .wait_timeout_while(h, MARKER_HOLD, |h| h.all_at.is_none())
                .unwrap();
            h.held -= 1;
            Reply::success()
        });
        for i in 0..workers {
            let url = endpoint.url(&format!("/marker/{i}"));
            add(con, &member(&url, serde_json::json!({ "marker": i })), due);
        }
        Marker {
            endpoint,
            hold,
            workers,
        }
    }

    /// Waits until the markers' requests were all held at once; returns when that was
    /// (Unix seconds, by the endpoint's clock, as `Request::at`).
    pub fn wait(&self) -> f64 {
        let what = format!("{} marker requests held at once", self.workers);
        let mut at = None;
        wait_until(PATIENCE, &what, || {
            at = self.hold.0.lock().unwrap().all_at;
            at.is_some()
        });
        at.unwrap()
    }

    /// The first marker's callback URL, as the daemon logs it.
    pub fn url(&self) -> String {
        self.endpoint.url("/marker/0")
    }
}

/// Adds markers due at `due` and waits for them: see [`Marker`]. Returns when their
/// requests were all held at once.
pub fn wait_for_marker(con: &mut redis::Connection, due: f64, workers: usize) -> f64 {
    Marker::add(con, due, workers).wait()
}

// ---------------------------------------------------------------- hardening helpers

/// A redis-server on a unix socket only (no TCP), with `requirepass` when a password
/// is given and any `extra` arguments, killed with its test.
pub struct SocketRedis {
    pub socket: PathBuf,
    password: Option<String>,
    _server: Guarded,
    dir: PathBuf,
}

impl SocketRedis {
    pub fn start(password: Option<&str>, extra: &[&str]) -> SocketRedis {
        let dir = scratch_dir();
        let socket = dir.join("r.sock");
        let mut cmd = Command::new(server_program());
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null());
        if let Some(pw) = password {
            cmd.args(["--requirepass", pw]);
        }
        let server = SocketRedis {
            socket,
            password: password.map(str::to_string),
            _server: Guarded::spawn(&mut cmd),
            dir,
        };
        wait_until(PATIENCE, "the redis socket to answer PING", || {
            redis::Client::open(server.url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        server
    }

    /// `unix:///…/r.sock`, with `?pass=` when the server has a password.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("unix://{}?pass={pw}", self.socket.display()),
            None => format!("unix://{}", self.socket.display()),
        }
    }

    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection_with_timeout(PATIENCE)
            .unwrap()
    }
}

impl Drop for SocketRedis {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes a config file for the Redis at `redis_url`: the test defaults of
/// [`write_config`] with `fields` merged over them, in a fresh directory.
pub fn config_file_for(redis_url: &str, fields: serde_json::Value) -> PathBuf {
    let path = scratch_dir().join("config.json");
    write_config_for(&path, redis_url, fields);
    path
}
