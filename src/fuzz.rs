//! Randomised tests of the two parsers that take input from outside: the job parser
//! (any producer's member) and the config loader. A seeded mutator turns valid inputs
//! into hostile ones; the property is that parsing never panics, always terminates,
//! and refuses with a one-line reason. The seed is printed so a failure can be
//! replayed with `DELAYQS_FUZZ_SEED`; `DELAYQS_FUZZ_CASES` sets the number of cases.

use std::time::Duration;

use crate::{config, job::Job};

/// xorshift64*: enough randomness for mutation, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\0",
    b"\xff",
    b"\xc3\x28",
    b"1e999",
    b"-0",
    b"12345678901234567890123",
    b"null",
    b"true",
    b"\"callback\"",
    b"\"body\"",
    b"\"sign\"",
    b"\"maxRetry\"",
    b"\"headers\"",
    b"\"skipIfExists\"",
    b"http://",
    b"https://u:p@",
    b"javascript:",
    b"//",
    b"[[[[[[[[",
    b"\"concurrency\"",
    b"\"redis\"",
    b"-3",
    b"1.5",
    b"\"\"",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if !out.is_empty() => {
                let end = (at + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            _ => {
                let nest = rng.below(300);
                let deep: Vec<u8> = std::iter::repeat_n(b'[', nest).collect();
                out.splice(at..at, deep);
            }
        }
    }
    out
}

fn run(seeds: &[&str], check: impl Fn(&[u8])) {
    let seed = std::env::var("DELAYQS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        });
    let cases: usize = std::env::var("DELAYQS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    println!("fuzz seed {seed} ({cases} cases); replay with DELAYQS_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    for _ in 0..cases {
        let base = seeds[rng.below(seeds.len())].as_bytes();
        let input = mutate(&mut rng, base);
        check(&input);
    }
}

#[test]
fn job_parser_refuses_hostile_members_with_one_line() {
    let seeds = [
        r#"{"body":{"orderId":1,"a":[1,2,{"b":null}]},"callback":"http://shop.local/x","sign":"9c"}"#,
        r#"{"callback":"https://h:8443/p?q=1","maxRetry":2,"timeout":1.5,"backoff":[1,2],"headers":{"X-A":"b"},"method":"PUT","contentType":"json","skipIfExists":"k"}"#,
        r#"{"Callback":"http://h/","Body":"x"}"#,
    ];
    run(&seeds, |input| {
        match Job::parse(input, Duration::from_secs(30)) {
            Ok(job) => {
                // Schemes are case-insensitive: `Http://` is as good as `http://`.
                let scheme = job.callback.as_str().split("://").next().unwrap_or("");
                assert!(
                    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
                let _ = job.request_body();
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "a multi-line reason: {e}"),
        }
    });
}

#[test]
fn config_loader_refuses_hostile_files_with_one_line() {
    let seeds = [
        r#"{"redis":"redis://localhost:6379/","concurrency":2,"key":"DelayQs:job_zqueue","maxRetryNum":3,"retryInterval":5}"#,
        r#"{"timeoutMs":2000,"leaseMs":60000,"successRule":"2xx+body","allowedCallbacks":["*.shop.example",
        "https://x/"],"signingSecret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#,
    ];
    run(&seeds, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        if let Err(e) = config::parse(text).map_err(|e| e.to_string()) {
            assert!(!e.contains('\n'), "a multi-line reason: {e}");
            if e.contains("`signingSecret`") {
                let secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
                assert!(!e.contains(secret), "a secret in: {e}");
            }
        }
    });
}
