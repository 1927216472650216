//! Hostile input and secrets (issue 5).

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

#[test]
fn hostile_members_are_set_aside_and_memory_stays_bounded() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let daemon = Daemon::start(&redis, json!({"maxJobBytes": 65536}));
    daemon.wait_ready();
    let url = endpoint.url("/ok");
    let huge = format!(r#"{{"callback":"{url}","body":"{}"}}"#, "x".repeat(8 << 20));
    let deep = format!(
        r#"{{"callback":"{url}","body":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let hostile: Vec<(Vec<u8>, &str)> = vec![
        (huge.clone().into_bytes(), "over maxJobBytes"),
        (deep.into_bytes(), "recursion limit"),
        (
            format!("{{\"callback\":\"{url}\",\"body\":\"a\0b\"}}").into_bytes(),
            "control character",
        ),
        (
            b"{\"callback\":\"http://127.0.0.1/\",\"body\":\"\xc3\x28\"}".to_vec(),
            "not valid JSON",
        ),
        (br#"{"callback":"http:///nohost"}"#.to_vec(), "callback"),
        (
            br#"{"callback":"javascript:alert(1)"}"#.to_vec(),
            "callback",
        ),
        (
            br#"{"callback":"http://user:pw@127.0.0.1/"}"#.to_vec(),
            "credentials",
        ),
    ];
    // Stream them, the huge one many times over: 25 x 8 MiB through one daemon.
    for round in 0..25 {
        let mut pipe = redis::pipe();
        let huge_copy = format!("{}{round}", &huge[..huge.len() - 1]) + "}";
        pipe.cmd("ZADD").arg(QUEUE).arg(0).arg(huge_copy.as_bytes());
        if round == 0 {
            for (m, _) in &hostile {
                pipe.cmd("ZADD").arg(QUEUE).arg(0).arg(m.as_slice());
            }
        }
        let _: () = pipe.query(&mut con).unwrap();
    }
    add(&mut con, &member(&url, json!("after the storm")), 1.0);
    endpoint.wait_for(1);
    let expected = hostile.len() + 25;
    wait_for_failed(&mut con, expected);
    let records = failed_records(&mut con);
    for (m, why) in &hostile[1..] {
        let lossy = String::from_utf8_lossy(m);
        let r = records
            .iter()
            .find(|r| r["member"] == *lossy)
            .unwrap_or_else(|| panic!("{lossy:.80}"));
        assert!(
            r["error"].as_str().unwrap().contains(why),
            "{lossy:.80}: {}",
            r["error"]
        );
    }
    let oversize: Vec<_> = records
        .iter()
        .filter(|r| r["memberBytes"].is_u64())
        .collect();
    assert_eq!(oversize.len(), 26, "the first huge one and its 25 copies");
    for r in &oversize {
        assert!(
            r["error"].as_str().unwrap().contains("over maxJobBytes"),
            "{r}"
        );
        assert!(r["memberPrefix"].as_str().unwrap().len() <= 200);
        assert!(
            r.get("member").is_none(),
            "a huge member is not copied into its record"
        );
    }
    let peak_mib = daemon.peak_rss_kib() / 1024;
    println!("peak RSS while 200 MiB of oversized members streamed through: {peak_mib} MiB");
    assert!(
        peak_mib < 64,
        "peak RSS {peak_mib} MiB: oversized members reached the daemon"
    );
    assert_eq!(endpoint.count(), 1);
    assert_no_bookkeeping(&mut con);
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==";

/// Verifies a request with the Standard Webhooks reference library (PyPI
/// `standardwebhooks`, which `make test` installs). Returns its verdict.
fn verified_by_reference_library(
    secret: &str,
    r: &Request,
    body: &[u8],
    timestamp: &str,
) -> Result<(), String> {
    let script = r#"
import sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret, wid, ts, sig = sys.argv[1:5]
body = sys.stdin.buffer.read()
try:
    Webhook(secret).verify(body, {"webhook-id": wid, "webhook-timestamp": ts, "webhook-signature": sig})
    print("verified")
except WebhookVerificationError as e:
    print("rejected:", e)
except ValueError:
    # verify() checks the signature, then parses the body as JSON: a form body
    # gets this far only with a valid signature.
    print("verified")
"#;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            secret,
            r.header("webhook-id"),
            timestamp,
            r.header("webhook-signature"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if said == "verified" {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn callbacks_carry_standard_webhooks_signatures_an_independent_library_accepts() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"signingSecret": [SECRET, NEW_SECRET]}));
    let m = member(
        &endpoint.url("/signed"),
        json!({"orderId": 42, "note": "a b&c"}),
    );
    add(&mut con, &m, 0.0);
    let r = &endpoint.wait_for(1)[0];
    assert_eq!(r.header("webhook-id"), job_id(&mut con, &m));
    let ts = r.header("webhook-timestamp").to_string();
    assert!((ts.parse::<f64>().unwrap() - unix_now()).abs() < 60.0);
    assert_eq!(
        r.header("webhook-signature").split(' ').count(),
        2,
        "one signature per secret"
    );

    for secret in [SECRET, NEW_SECRET] {
        verified_by_reference_library(secret, r, &r.body, &ts).unwrap();
    }
    let mut changed = r.body.clone();
    changed.push(b'x');
    assert!(
        verified_by_reference_library(SECRET, r, &changed, &ts).is_err(),
        "a changed body passed"
    );
    let old = (ts.parse::<u64>().unwrap() - 3600).to_string();
    assert!(
        verified_by_reference_library(SECRET, r, &r.body, &old).is_err(),
        "an old timestamp passed"
    );
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert!(
        verified_by_reference_library(other, r, &r.body, &ts).is_err(),
        "a wrong secret passed"
    );
}

#[test]
fn secrets_never_reach_logs_errors_help_or_failure_records() {
    let redis = RedisServer::start();
    let url = redis.require_password("r3dis-pw");
    let endpoint = Endpoint::start(|_| Reply::new(500, "no"));
    let config = config_file(
        &redis,
        json!({"redis": url, "signingSecret": SECRET, "maxRetryNum": 0}),
    );
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_for_log("every user on this host can read it");
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    add(&mut con, &member(&endpoint.url("/x"), json!(1)), 0.0);
    wait_for_failed(&mut con, 1);

    // A reload with a broken secret, and commands that fail, all speak of the key only.
    let mut broken: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    broken["signingSecret"] = json!("whsec_not-base64-r3dis-pw");
    std::fs::write(&config, broken.to_string()).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("config not reloaded");
    let check = run_delayqs(&["run", "--check", "--config", config.to_str().unwrap()]);
    let help = run_delayqs(&["run", "--help"]);
    let records: Vec<String> = con.lrange(FAILED, 0, -1).unwrap();

    let seen = [
        daemon.log(),
        String::from_utf8_lossy(&check.stderr).into_owned(),
        String::from_utf8_lossy(&help.stdout).into_owned(),
        records.join("\n"),
    ]
    .join("\n");
    for secret in ["r3dis-pw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not-base64"] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
    assert!(seen.contains("key `signingSecret`"), "{seen}");
}

#[test]
fn callbacks_outside_the_allow_list_fail_without_a_connection() {
    let redis = RedisServer::start();
    let allowed = Endpoint::succeeding();
    let other = Endpoint::succeeding();
    let mut con = redis.con();
    let _daemon = Daemon::start(
        &redis,
        json!({"allowedCallbacks": [format!("127.0.0.1:{}", allowed.port)]}),
    );
    add(&mut con, &member(&other.url("/not-allowed"), json!(1)), 0.0);
    add(&mut con, &member(&allowed.url("/allowed"), json!(2)), 0.0);
    allowed.wait_for(1);
    wait_for_failed(&mut con, 1);
    let record = &failed_records(&mut con)[0];
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("outside allowedCallbacks"),
        "{record}"
    );
    assert_eq!(
        other.connections(),
        0,
        "a connection was made outside the allow-list"
    );
}

#[test]
fn deny_private_networks_refuses_loopback_even_by_name() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let _daemon = Daemon::start(
        &redis,
        json!({"denyPrivateNetworks": true, "maxRetryNum": 3}),
    );
    add(&mut con, &member(&endpoint.url("/by-ip"), json!(1)), 0.0);
    let by_name = format!("http://localhost:{}/by-name", endpoint.port);
    add(&mut con, &member(&by_name, json!(2)), 0.0);
    wait_for_failed(&mut con, 2);
    for record in failed_records(&mut con) {
        let error = record["error"].as_str().unwrap();
        assert!(error.contains("denyPrivateNetworks"), "{error}");
        assert_eq!(record["attempts"], 1, "refused at once, not retried");
    }
    assert_eq!(endpoint.count(), 0);
}

#[test]
fn redis_with_an_acl_user_and_over_a_unix_socket() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let acl_url = redis.acl_user("delayqs", "acl-pw-1", "*");
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, json!({"redis": acl_url}));
    add(&mut con, &member(&endpoint.url("/acl"), json!(1)), 0.0);
    endpoint.wait_for(1);
    assert!(!daemon.log().contains("acl-pw-1"));

    let dir = scratch_dir();
    let socket = dir.join("r.sock");
    let _server = Guarded::spawn(
        std::process::Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null()),
    );
    let unix_url = format!("unix://{}", socket.display());
    wait_until(PATIENCE, "the socket", || socket.exists());
    let mut unix_con = redis::Client::open(unix_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _daemon = Daemon::start(&redis, json!({"redis": unix_url}));
    add(
        &mut unix_con,
        &member(&endpoint.url("/unix"), json!(2)),
        0.0,
    );
    endpoint.wait_for(2);
}

/// A private CA and a certificate for localhost and 127.0.0.1 signed by it, made with
/// the openssl command line; returns (ca.pem, server.pem, server.key).
fn private_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=delayqs test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// An HTTPS endpoint (Python's http.server behind ssl) answering `success`; returns
/// the child and its port. It prints one line per request it served.
fn https_endpoint(cert: &std::path::Path, key: &std::path::Path) -> (Guarded, u16) {
    let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "7"); self.end_headers()
        self.wfile.write(b"success"); print("served", self.path, flush=True)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", script])
        .arg(cert)
        .arg(key)
        .stdout(std::process::Stdio::piped());
    let mut child = Guarded::spawn(&mut command);
    let mut line = String::new();
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap();
    std::thread::spawn(move || for _ in out.lines() {});
    (child, port)
}

#[test]
fn https_callbacks_verify_certificates_against_the_ca_file() {
    let redis = RedisServer::start();
    let dir = scratch_dir();
    let (ca, cert, key) = private_ca(&dir);
    let (_server, port) = https_endpoint(&cert, &key);
    let mut con = redis.con();
    let trusting = Daemon::start(
        &redis,
        json!({"caFile": ca, "maxRetryNum": 0, "key": "q1", "inflightKey": "f1", "attemptsKey": "a1", "failKey": "x1"}),
    );
    let default_roots = Daemon::start(
        &redis,
        json!({"maxRetryNum": 0, "key": "q2", "inflightKey": "f2", "attemptsKey": "a2", "failKey": "x2"}),
    );
    for q in ["q1", "q2"] {
        let m = member(&format!("https://localhost:{port}/{q}"), json!(q));
        let _: () = con.zadd(q, m, 0).unwrap();
    }
    wait_until(PATIENCE, "both settled", || {
        con.zcard::<_, usize>("q1").unwrap() + con.zcard::<_, usize>("q2").unwrap() == 0
            && con.hlen::<_, usize>("a1").unwrap() + con.hlen::<_, usize>("a2").unwrap() == 0
    });
    assert_eq!(con.llen::<_, usize>("x1").unwrap(), 0, "{}", trusting.log());
    let refused: Vec<String> = con.lrange("x2", 0, -1).unwrap();
    assert_eq!(
        refused.len(),
        1,
        "an unknown CA was trusted:\n{}",
        default_roots.log()
    );
    assert!(
        refused[0].to_lowercase().contains("certificate") || refused[0].contains("UnknownIssuer"),
        "{}",
        refused[0]
    );
}

#[test]
fn redis_over_tls_verified_against_the_redis_ca_file() {
    let dir = scratch_dir();
    let (ca, cert, key) = private_ca(&dir);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _server = Guarded::spawn(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", "no", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null()),
    );
    let url = format!("rediss://localhost:{port}/");
    let tls = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(&ca).unwrap()),
    };
    let client = redis::Client::build_with_tls(url.as_str(), tls).unwrap();
    wait_until(PATIENCE, "the TLS redis-server", || {
        client.get_connection().is_ok()
    });
    let mut con = client.get_connection().unwrap();

    let endpoint = Endpoint::succeeding();
    let plain = RedisServer::start(); // only for the config helper's defaults
    let verified = Daemon::start(&plain, json!({"redis": url, "redisCaFile": ca}));
    add(&mut con, &member(&endpoint.url("/over-tls"), json!(1)), 0.0);
    endpoint.wait_for(1);
    assert!(
        verified.log().contains("running: redis rediss://localhost"),
        "{}",
        verified.log()
    );

    let unverified = Daemon::start(&plain, json!({"redis": url}));
    unverified.wait_for_log("Redis at rediss://localhost");
    assert!(
        unverified.log().to_lowercase().contains("certificate"),
        "{}",
        unverified.log()
    );
    assert!(
        !unverified.log().contains("] ready:"),
        "{}",
        unverified.log()
    );
}

#[test]
fn redirects_are_followed_only_when_configured_and_within_the_allow_list() {
    let redis = RedisServer::start();
    let other = Endpoint::succeeding();
    let elsewhere = other.url("/elsewhere");
    let endpoint = Endpoint::start(move |r| match r.path.as_str() {
        "/moved" => Reply::new(307, "").header("Location", "/new"),
        "/away" => Reply::new(308, "").header("Location", &elsewhere),
        _ => Reply::success(),
    });
    let mut con = redis.con();
    let allowed = format!("127.0.0.1:{}", endpoint.port);
    let _daemon = Daemon::start(
        &redis,
        json!({"followRedirects": 2, "allowedCallbacks": [allowed], "maxRetryNum": 0}),
    );
    add(
        &mut con,
        &member(&endpoint.url("/moved"), json!({"n": 1})),
        0.0,
    );
    add(
        &mut con,
        &member(&endpoint.url("/away"), json!({"n": 2})),
        0.0,
    );
    wait_until(PATIENCE, "both settled", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0 && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    let followed: Vec<_> = endpoint
        .requests()
        .into_iter()
        .filter(|r| r.path == "/new")
        .collect();
    assert_eq!(followed.len(), 1, "the 307 was not followed");
    assert_eq!(followed[0].method, "POST");
    assert_eq!(
        followed[0].form["body"], r#"{"n":1}"#,
        "the body went along"
    );
    let records = failed_records(&mut con);
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["error"]
            .as_str()
            .unwrap()
            .contains("within allowedCallbacks"),
        "{}",
        records[0]
    );
    assert_eq!(other.count(), 0, "a redirect left the allow-list");

    // Without followRedirects, a 307 is only a failed attempt.
    let plain = Daemon::start(
        &redis,
        json!({"maxRetryNum": 0, "key": "q9", "inflightKey": "f9", "attemptsKey": "a9", "failKey": "x9"}),
    );
    let _: () = con
        .zadd("q9", member(&endpoint.url("/moved"), json!({"n": 3})), 0)
        .unwrap();
    wait_until(PATIENCE, "the 307 failed", || {
        con.llen::<_, usize>("x9").unwrap() == 1
    });
    assert_eq!(
        endpoint
            .requests()
            .iter()
            .filter(|r| r.path == "/new")
            .count(),
        1
    );
    drop(plain);
}
