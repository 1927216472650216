//! Benchmark endpoint for delayqs: a small keep-alive HTTP/1.1 server, std only.
//!
//! Every connection gets its own thread. A POST answers `success`; when its form has a
//! `body` field holding JSON with `"n"` and `"due"` (Unix seconds), the arrival time is
//! recorded against that job number. Control requests:
//!
//! - `GET /report`: JSON with counts, duplicates and lateness percentiles (ms,
//!   arrival minus due), first and last arrival (Unix seconds), and how many
//!   connections carried POSTs (keep-alive reuse).
//! - `GET /count`: `<jobs recorded> <other POSTs>`, cheap enough to poll.
//! - `GET /dump`: every job recorded, a line each: `n due header_due arrival`, where
//!   `header_due` is the request's `X-Delayqs-Due` (`nan` without one).
//! - `GET /reset`: forget everything recorded.
//! - `GET /quit`: print the report on stdout and exit.
//!
//! Usage: `bench-endpoint [PORT]` (0 or none: any free port). The first line on stdout
//! is `listening 127.0.0.1:PORT`.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct Log {
    /// (job number, due, arrival).
    jobs: Vec<(u64, f64, f64)>,
    /// `X-Delayqs-Due` of each job in `jobs` (NaN when the request had none).
    header_due: Vec<f64>,
    /// POSTs without a usable `n`/`due` (e.g. the load generator's requests).
    other: u64,
    /// Connections that carried at least one POST: shows whether keep-alive is used.
    connections: u64,
}

type Shared = Arc<Mutex<Log>>;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    println!("listening {addr}");
    std::io::stdout().flush().ok();
    let log: Shared = Arc::new(Mutex::new(Log::default()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let log = log.clone();
        let _ = thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let _ = serve(stream, &log);
            });
    }
}

fn serve(stream: TcpStream, log: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(4 * 1024, stream);
    let mut line = String::new();
    let mut body = Vec::new();
    let mut posted = false;
    loop {
        // Request line.
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // peer closed
        }
        let request_line = line.trim_end().to_string();
        if request_line.is_empty() {
            continue;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.1").to_string();
        // Headers.
        let mut content_length = 0usize;
        let mut close = version == "HTTP/1.0";
        let mut header_due = f64::NAN;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-delayqs-due") {
                    header_due = value.parse().unwrap_or(f64::NAN);
                } else if name.eq_ignore_ascii_case("connection") {
                    if value.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if value.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
            }
        }
        body.clear();
        body.resize(content_length, 0);
        reader.read_exact(&mut body)?;
        let arrived = now();

        let (status, reply, quit) = if method == "POST" {
            record(log, &body, header_due, arrived, !posted);
            posted = true;
            ("200 OK", "success".to_string(), false)
        } else {
            let path = target.split('?').next().unwrap_or("");
            match path {
                "/report" => ("200 OK", report(log), false),
                "/dump" => ("200 OK", dump(log), false),
                "/count" => {
                    let log = log.lock().unwrap();
                    ("200 OK", format!("{} {}\n", log.jobs.len(), log.other), false)
                }
                "/reset" => {
                    *log.lock().unwrap() = Log::default();
                    ("200 OK", "reset\n".to_string(), false)
                }
                "/quit" => ("200 OK", report(log), true),
                _ => ("404 Not Found", "not found\n".to_string(), false),
            }
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{reply}",
            reply.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        writer.flush()?;
        if quit {
            println!("{reply}");
            std::io::stdout().flush().ok();
            std::process::exit(0);
        }
        if close {
            return Ok(());
        }
    }
}

/// Takes `n` and `due` out of the form's `body` field, when it has them.
fn record(log: &Shared, form: &[u8], header_due: f64, arrived: f64, new_connection: bool) {
    let job = form_field(form, b"body").and_then(|json| {
        let n = json_number(&json, "\"n\":")?.parse::<u64>().ok()?;
        let due = json_number(&json, "\"due\":")?.parse::<f64>().ok()?;
        Some((n, due))
    });
    let mut log = log.lock().unwrap();
    log.connections += u64::from(new_connection);
    match job {
        Some((n, due)) => {
            log.jobs.push((n, due, arrived));
            log.header_due.push(header_due);
        }
        None => log.other += 1,
    }
}

/// The URL-decoded value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(form: &[u8], name: &[u8]) -> Option<String> {
    for pair in form.split(|&b| b == b'&') {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        if kv.next()? == name {
            return Some(url_decode(kv.next().unwrap_or(b"")));
        }
    }
    None
}

fn url_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(s[i + 1]), hex(s[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of the number following `key` (e.g. `"n":`), spaces allowed after the colon.
fn json_number<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(key)? + key.len();
    let rest = json[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

fn dump(log: &Shared) -> String {
    use std::fmt::Write as _;
    let log = log.lock().unwrap();
    let mut out = String::with_capacity(log.jobs.len() * 48);
    for (&(n, due, arrived), &header) in log.jobs.iter().zip(&log.header_due) {
        let _ = writeln!(out, "{n} {due:.3} {header:.3} {arrived:.6}");
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(log: &Shared) -> String {
    let (jobs, other, connections) = {
        let log = log.lock().unwrap();
        (log.jobs.clone(), log.other, log.connections)
    };
    let mut ns: Vec<u64> = jobs.iter().map(|j| j.0).collect();
    ns.sort_unstable();
    let total = ns.len();
    ns.dedup();
    let unique = ns.len();
    let mut late: Vec<f64> = jobs.iter().map(|j| (j.2 - j.1) * 1000.0).collect();
    late.sort_by(|a, b| a.total_cmp(b));
    let first = jobs.iter().map(|j| j.2).fold(f64::INFINITY, f64::min);
    let last = jobs.iter().map(|j| j.2).fold(f64::NEG_INFINITY, f64::max);
    let (first, last) = if total == 0 { (0.0, 0.0) } else { (first, last) };
    let mean = if total == 0 {
        0.0
    } else {
        late.iter().sum::<f64>() / total as f64
    };
    format!(
        "{{\"count\":{total},\"unique\":{unique},\"duplicates\":{},\"other\":{other},\"connections\":{connections},\
\"late_ms\":{{\"min\":{:.3},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"max\":{:.3},\"mean\":{:.3}}},\
\"first_arrival\":{first:.6},\"last_arrival\":{last:.6}}}\n",
        total - unique,
        late.first().copied().unwrap_or(0.0),
        percentile(&late, 50.0),
        percentile(&late, 90.0),
        percentile(&late, 99.0),
        late.last().copied().unwrap_or(0.0),
        mean,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_delayqs_form() {
        let form = b"body=%7B%22due%22%3A1764000000.125%2C%22n%22%3A123%7D&sign=x";
        let json = form_field(form, b"body").unwrap();
        assert_eq!(json, r#"{"due":1764000000.125,"n":123}"#);
        assert_eq!(json_number(&json, "\"n\":"), Some("123"));
        assert_eq!(json_number(&json, "\"due\":"), Some("1764000000.125"));
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
    }
}
