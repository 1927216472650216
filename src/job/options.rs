//! Per-job options: optional member fields that tune one job. Old producers do not
//! write them, so an absent field means the daemon's settings. An invalid value makes
//! the job malformed, with the field named.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::job::Malformed;

/// The most a job may ask to wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// `maxRetry`: retries after the first attempt, instead of `maxRetryNum`.
    pub max_retry: Option<u32>,
    /// `timeout` (seconds): the whole call, at most the daemon's `timeoutMs`.
    pub timeout: Option<Duration>,
    /// `backoff`: seconds between attempts.
    pub backoff: Option<Backoff>,
    /// `headers`: extra request headers.
    pub headers: Vec<(String, String)>,
    /// `method`: POST (default) or PUT.
    pub put: bool,
    /// `contentType`: "form" (default) or "json", the body as a JSON request body.
    pub json: bool,
    /// `skipIfExists` / `skipIfMissing`: the claim script drops the job when the key
    /// exists / is missing. Only validated here.
    pub skip_key: Option<String>,
    /// `flowKey`: the flow whose limits this job's call counts against, instead of its
    /// host's (`flowControl.flows`).
    pub flow_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The wait after attempt n is the n-th entry, the last one repeating.
    List(Vec<Duration>),
    /// `base * 2^(n-1)`, capped and jittered by the daemon's settings.
    Base(Duration),
}

/// Headers a job may not set: hop-by-hop ones, the ones delayqs writes, those that
/// describe the body delayqs builds (every `Content-*`), and signatures.
fn forbidden(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "user-agent"
    ) || n.starts_with("proxy-")
        || n.starts_with("content-")
        || n.starts_with("x-delayqs-")
        || n.starts_with("webhook-")
        || n.contains("signature")
}

/// Whether `value` can be sent as a header value: the http crate refuses control
/// characters (bytes below 0x20 but the tab, and DEL), and a request that cannot be
/// built fails every attempt.
pub fn header_value_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl Options {
    /// Reads the options out of a member's fields. `max_timeout` is the daemon's.
    pub fn parse(fields: &Map<String, Value>, max_timeout: Duration) -> Result<Options, Malformed> {
        let bad = |field: &'static str, why: String| Malformed::field(field, why);
        let mut o = Options::default();
        if let Some(v) = fields.get("maxRetry") {
            o.max_retry = Some(v.as_u64().filter(|n| *n <= 1000).ok_or_else(|| {
                bad(
                    "maxRetry",
                    format!("must be a whole number from 0 to 1000, got {v}"),
                )
            })? as u32);
        }
        if let Some(v) = fields.get("timeout") {
            let t = seconds(v).filter(|t| !t.is_zero()).ok_or_else(|| {
                bad(
                    "timeout",
                    format!("must be a positive number of seconds, got {v}"),
                )
            })?;
            if t > max_timeout {
                return Err(bad(
                    "timeout",
                    format!(
                        "{v} s exceeds the daemon's timeoutMs ({} ms), which the lease is sized for",
                        max_timeout.as_millis()
                    ),
                ));
            }
            o.timeout = Some(t);
        }
        if let Some(v) = fields.get("backoff") {
            let why = || {
                bad(
                    "backoff",
                    format!(
                        "must be seconds: a number or a list of numbers, up to 7 days each, got {v}"
                    ),
                )
            };
            let within = |d: Duration| (d <= MAX_BACKOFF).then_some(d);
            o.backoff = Some(match v {
                Value::Array(list) if !list.is_empty() && list.len() <= 100 => Backoff::List(
                    list.iter()
                        .map(|x| seconds(x).and_then(within))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(why)?,
                ),
                _ => Backoff::Base(seconds(v).and_then(within).ok_or_else(why)?),
            });
        }
        if let Some(v) = fields.get("headers") {
            let Value::Object(map) = v else {
                return Err(bad(
                    "headers",
                    format!("must be an object of strings, got {v}"),
                ));
            };
            for (name, value) in map {
                let Value::String(value) = value else {
                    return Err(bad("headers", format!("{name:?} must be a string")));
                };
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    return Err(bad(
                        "headers",
                        format!("{name:?} is not a valid header name"),
                    ));
                }
                if !header_value_ok(value) {
                    return Err(bad(
                        "headers",
                        format!(
                            "{name:?} is not a valid header: its value holds a control character"
                        ),
                    ));
                }
                if forbidden(name) {
                    return Err(bad("headers", format!("{name:?} may not be set by a job")));
                }
                o.headers.push((name.clone(), value.clone()));
            }
        }
        if let Some(v) = fields.get("method") {
            o.put = match v.as_str() {
                Some("POST") => false,
                Some("PUT") => true,
                _ => {
                    return Err(bad(
                        "method",
                        format!("must be \"POST\" or \"PUT\", got {v}"),
                    ));
                }
            };
        }
        if let Some(v) = fields.get("contentType") {
            o.json = match v.as_str() {
                Some("form") => false,
                Some("json") => true,
                _ => {
                    return Err(bad(
                        "contentType",
                        format!("must be \"form\" or \"json\", got {v}"),
                    ));
                }
            };
        }
        for field in ["skipIfExists", "skipIfMissing"] {
            if let Some(v) = fields.get(field) {
                match v.as_str() {
                    Some(key) if !key.is_empty() && o.skip_key.is_none() => {
                        o.skip_key = Some(key.into())
                    }
                    Some(_) if o.skip_key.is_some() => {
                        return Err(bad(
                            field,
                            "cannot be combined with the other skip condition".into(),
                        ));
                    }
                    _ => return Err(bad(field, format!("must be a Redis key name, got {v}"))),
                }
            }
        }
        if let Some(v) = fields.get("flowKey") {
            match v.as_str() {
                Some(key)
                    if !key.is_empty() && key.len() <= 200 && !key.contains(char::is_control) =>
                {
                    o.flow_key = Some(key.into())
                }
                _ => {
                    return Err(bad(
                        "flowKey",
                        format!(
                            "must be a name of 1 to 200 bytes without control characters, got {v}"
                        ),
                    ));
                }
            }
        }
        Ok(o)
    }
}

fn seconds(v: &Value) -> Option<Duration> {
    v.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Options, Malformed> {
        let Value::Object(map) = serde_json::from_str(json).unwrap() else {
            panic!()
        };
        Options::parse(&map, Duration::from_secs(30))
    }

    #[test]
    fn absent_means_defaults() {
        assert_eq!(
            parse(r#"{"callback":"http://h/"}"#).unwrap(),
            Options::default()
        );
    }

    #[test]
    fn every_option_parses() {
        let o = parse(
            r#"{"maxRetry":1,"timeout":2.5,"backoff":[1,10],"headers":{"X-Shop":"7"},"method":"PUT","contentType":"json","skipIfExists":"order:1:paid"}"#,
        )
        .unwrap();
        assert_eq!(o.max_retry, Some(1));
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            o.backoff,
            Some(Backoff::List(vec![
                Duration::from_secs(1),
                Duration::from_secs(10)
            ]))
        );
        assert_eq!(o.headers, [("X-Shop".to_string(), "7".to_string())]);
        assert!(o.put && o.json);
        assert_eq!(o.skip_key.as_deref(), Some("order:1:paid"));
        assert_eq!(
            parse(r#"{"backoff":3}"#).unwrap().backoff,
            Some(Backoff::Base(Duration::from_secs(3)))
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            (r#"{"maxRetry":-1}"#, "`maxRetry`"),
            (r#"{"timeout":0}"#, "`timeout`"),
            (r#"{"timeout":60}"#, "exceeds the daemon's timeoutMs"),
            (r#"{"backoff":"soon"}"#, "`backoff`"),
            (r#"{"backoff":[]}"#, "`backoff`"),
            (r#"{"headers":{"Connection":"close"}}"#, "may not be set"),
            (
                r#"{"headers":{"Webhook-Signature":"v1,x"}}"#,
                "may not be set",
            ),
            (r#"{"headers":{"X-A":"a\nb"}}"#, "not a valid header"),
            (r#"{"headers":{"X-A":"a\u0001b"}}"#, "control character"),
            (r#"{"headers":{"X-A":"a\u001fb"}}"#, "control character"),
            (r#"{"headers":{"X-A":"a\u007fb"}}"#, "control character"),
            (r#"{"headers":{"X-A":"\u0000"}}"#, "control character"),
            (r#"{"headers":{"X-A":"a\rb"}}"#, "control character"),
            (
                r#"{"headers":{"Content-Encoding":"gzip"}}"#,
                "may not be set",
            ),
            (
                r#"{"headers":{"content-range":"bytes 0-1/2"}}"#,
                "may not be set",
            ),
            (
                r#"{"headers":{"Content-Disposition":"inline"}}"#,
                "may not be set",
            ),
            (
                r#"{"headers":{"CONTENT-TYPE":"text/plain"}}"#,
                "may not be set",
            ),
            (r#"{"headers":{"Bad Name":"x"}}"#, "not a valid header"),
            (r#"{"headers":["x"]}"#, "`headers`"),
            (r#"{"method":"GET"}"#, "`method`"),
            (r#"{"contentType":"xml"}"#, "`contentType`"),
            (r#"{"skipIfExists":5}"#, "`skipIfExists`"),
            (
                r#"{"skipIfExists":"a","skipIfMissing":"b"}"#,
                "cannot be combined",
            ),
        ];
        for (json, why) in cases {
            let e = parse(json).unwrap_err();
            assert!(e.to_string().contains(why), "{json}: {e}");
        }
    }

    #[test]
    fn every_header_value_that_passes_can_be_sent() {
        for value in ["a\tb", "caf\u{e9}", " x ", "", "~!@#$%^&*()"] {
            let json = serde_json::json!({ "headers": { "X-A": value } }).to_string();
            assert!(parse(&json).is_ok(), "{value:?}");
        }
        // Exactly what the http crate takes, byte by byte.
        for b in 0u8..=0x7f {
            let value = format!("a{}b", b as char);
            let sendable = ureq::http::HeaderValue::from_str(&value).is_ok();
            assert_eq!(header_value_ok(&value), sendable, "byte {b:#04x}");
        }
    }
}
