//! The job format (PROTOCOL §1, §2, §3.4): parsing a member string, the form body a
//! callback receives, and the record kept for a job that failed for good.
//!
//! Parsing is the one place that can fail: a [`Job`] that exists is deliverable.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::job::Malformed;
use crate::job::callback::Callback;
use crate::job::options::Options;

/// The job id: SHA-1 hex of the member string, stable across retries, restarts and
/// daemons, and computable by a producer.
pub fn job_id(member: &[u8]) -> String {
    sha1_smol::Sha1::from(member).hexdigest()
}

/// The bytes a member must contain for `claim.lua` to decode it and check its skip
/// condition: a quote, then `skipIf`.
const SKIP_BYTES: &[u8] = b"\"skipIf";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A parsed, deliverable job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Absolute http(s) URL with a host and no credentials, normalised.
    pub callback: Callback,
    /// The job's `body`, re-serialized as compact JSON with object keys sorted at every
    /// level and numbers exactly as written (PROTOCOL §2).
    pub body: String,
    /// The producer's signature, passed through; empty when absent.
    pub sign: String,
    /// Per-job settings from optional member fields.
    pub options: Options,
}

impl Job {
    /// Parses a member; `max_timeout` bounds a per-job `timeout`.
    pub fn parse(member: &[u8], max_timeout: Duration) -> Result<Job, Malformed> {
        let value: Value = serde_json::from_slice(member)
            .map_err(|e| Malformed::member(format!("the member is not valid JSON ({e})")))?;
        let Value::Object(fields) = value else {
            return Err(Malformed::member("the member is not a JSON object"));
        };
        let callback = match field(&fields, "callback") {
            None | Some(Value::Null) => {
                return Err(Malformed::member("the member has no `callback` field"));
            }
            Some(Value::String(url)) => Callback::parse(url)?,
            Some(other) => {
                return Err(Malformed::field(
                    "callback",
                    format!("must be a string, got {}", kind(other)),
                ));
            }
        };
        let sign = match field(&fields, "sign") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Malformed::field(
                    "sign",
                    format!("must be a string, got {}", kind(other)),
                ));
            }
        };
        let body = serde_json::to_string(field(&fields, "body").unwrap_or(&Value::Null))
            .map_err(|e| Malformed::field("body", format!("cannot be re-encoded ({e})")))?;
        let options = Options::parse(&fields, max_timeout)?;
        if options.json && !crate::job::options::header_value_ok(&sign) {
            // Sent as the `X-Delayqs-Sign` header, which cannot carry it.
            return Err(Malformed::field(
                "sign",
                "holds a control character, which the X-Delayqs-Sign header of a `\"contentType\": \"json\"` job cannot carry",
            ));
        }
        if options.skip_key.is_some() && !contains(member, SKIP_BYTES) {
            // The claim script checks a skip condition only in members with these
            // bytes (claim.lua): one spelled with escapes would go unchecked.
            let field = if fields.contains_key("skipIfExists") {
                "skipIfExists"
            } else {
                "skipIfMissing"
            };
            return Err(Malformed::field(
                field,
                "is spelled with JSON escapes (such as \\u0073): the claim checks a skip condition only in a member that contains `\"skipIf` as written; write the field name without escapes",
            ));
        }
        Ok(Job {
            callback,
            body,
            sign,
            options,
        })
    }

    /// The request's content type and body: the form of PROTOCOL §2, or with
    /// `"contentType": "json"` the body itself as JSON.
    pub fn request_body(&self) -> (&'static str, String) {
        if self.options.json {
            ("application/json", self.body.clone())
        } else {
            ("application/x-www-form-urlencoded", self.form())
        }
    }

    /// `application/x-www-form-urlencoded` fields `body` and `sign`.
    pub fn form(&self) -> String {
        format!(
            "body={}&sign={}",
            form_encode(&self.body),
            form_encode(&self.sign)
        )
    }
}

/// A field by name. The old daemon decoded with Go's `encoding/json`, which takes
/// `Callback` or `CALLBACK` for `callback` when there is no exact match; so do we.
fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The JSON appended to the failed list: the member's own fields (when it is an
/// object) plus `Id`, as the old daemon wrote, and what delayqs knows of the failure.
/// `member` keeps the exact original string, so the job can be put back unchanged.
/// `due` is when the job was first due, `at` when it failed (Unix seconds).
pub fn failure_record(
    member: &[u8],
    id: &str,
    attempts: u32,
    error: &str,
    due: f64,
    at: f64,
) -> String {
    let mut record = match serde_json::from_slice::<Value>(member) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    record.insert("Id".into(), Value::String(id.into()));
    record.insert("attempts".into(), Value::from(attempts));
    record.insert("error".into(), Value::String(error.into()));
    record.insert("dueAt".into(), millis(due));
    record.insert("failedAt".into(), millis(at));
    record.insert(
        "member".into(),
        Value::String(String::from_utf8_lossy(member).into_owned()),
    );
    serde_json::to_string(&record).unwrap_or_else(|_| {
        // Only a non-string map key can fail to serialize, and a Map has none.
        format!("{{\"Id\":{id:?},\"error\":\"record could not be encoded\"}}")
    })
}

/// Unix seconds as a JSON number with millisecond precision.
fn millis(secs: f64) -> Value {
    serde_json::Number::from_f64((secs * 1000.0).round() / 1000.0)
        .map_or(Value::Null, Value::Number)
}

/// `application/x-www-form-urlencoded` encoding, as browsers and PHP's `$_POST` expect.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
    out
}

/// At most `max` bytes of `s`, cut at a character boundary, with an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Job, Malformed> {
        Job::parse(s.as_bytes(), Duration::from_secs(30))
    }

    #[test]
    fn body_keys_sorted_at_every_level_and_numbers_exact() {
        let job = parse(
            r#"{"callback":"http://h/x","body":{"z":1,"a":{"y":[3,{"b":2,"a":1}],"x":12345678901234567890123},"m":1.50}}"#,
        )
        .unwrap();
        assert_eq!(
            job.body,
            r#"{"a":{"x":12345678901234567890123,"y":[3,{"a":1,"b":2}]},"m":1.50,"z":1}"#
        );
    }

    #[test]
    fn html_characters_are_not_escaped() {
        let job = parse(r#"{"callback":"http://h/","body":{"s":"<a>&\u00e9"}}"#).unwrap();
        assert_eq!(job.body, "{\"s\":\"<a>&é\"}");
    }

    #[test]
    fn a_form_body_carries_any_sign() {
        // Form-encoded into the body, not a header: control characters are fine.
        let job = parse(r#"{"callback":"http://h/","sign":"a\u0001b"}"#).unwrap();
        assert_eq!(job.form(), "body=null&sign=a%01b");
    }

    #[test]
    fn sign_and_body_may_be_absent() {
        let job = parse(r#"{"callback":"https://h:8443/p?q=1"}"#).unwrap();
        assert_eq!(job.body, "null");
        assert_eq!(job.sign, "");
        assert_eq!(job.form(), "body=null&sign=");
    }

    #[test]
    fn field_names_match_in_any_case_like_go() {
        let job = parse(r#"{"Callback":"http://h/","Body":{"b":1},"SIGN":"s"}"#).unwrap();
        assert_eq!((job.body.as_str(), job.sign.as_str()), (r#"{"b":1}"#, "s"));
        let job = parse(r#"{"Body":1,"body":2,"callback":"http://h/"}"#).unwrap();
        assert_eq!(job.body, "2", "an exact match wins");
    }

    #[test]
    fn form_encoding_matches_php() {
        assert_eq!(form_encode("a b&c=d/é~"), "a+b%26c%3Dd%2F%C3%A9%7E");
    }

    #[test]
    fn malformed_members_say_why() {
        let cases = [
            ("not json", "not valid JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"body":{}}"#, "no `callback`"),
            (r#"{"callback":7}"#, "must be a string"),
            (r#"{"callback":"/relative"}"#, "not an absolute"),
            (r#"{"callback":"ftp://h/x"}"#, "http or https"),
            (r#"{"callback":"http://u:pw@h/x"}"#, "credentials"),
            (r#"{"callback":"http:///x"}"#, "not a valid URL"),
            (
                r#"{"callback":"http://h/","sign":5}"#,
                "`sign` must be a string",
            ),
            (
                r#"{"callback":"http://h/","sign":"a\u0001b","contentType":"json"}"#,
                "`sign` holds a control character",
            ),
            (
                r#"{"callback":"http://h/","sign":"a\u007f","contentType":"json"}"#,
                "`sign` holds a control character",
            ),
        ];
        for (member, why) in cases {
            let e = parse(member).unwrap_err();
            assert!(e.to_string().contains(why), "{member}: {e}");
        }
        let e = Job::parse(
            b"{\"callback\":\"http://h/\",\"body\":\"\xff\"}",
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn a_skip_condition_the_claim_script_would_not_see_is_malformed() {
        for member in [
            r#"{"callback":"http://h/","\u0073kipIfExists":"k"}"#,
            r#"{"callback":"http://h/","s\u006bipIfMissing":"k"}"#,
        ] {
            let e = parse(member).unwrap_err();
            assert!(e.to_string().contains("JSON escapes"), "{member}: {e}");
        }
        // Any literal `"skipIf` makes the script decode the member, and cjson reads
        // the escapes as serde_json does.
        for member in [
            r#"{"callback":"http://h/","skipIf\u0045xists":"k"}"#,
            r#"{"callback":"http://h/","\u0073kipIfExists":"k","body":"\"skipIf"}"#,
            r#"{"callback":"http://h/","skipIfExists":"k"}"#,
        ] {
            let job = parse(member).unwrap_or_else(|e| panic!("{member}: {e}"));
            assert_eq!(job.options.skip_key.as_deref(), Some("k"));
        }
    }

    #[test]
    fn credentials_never_reach_the_message() {
        for url in [
            "http://u:hunter2@h/x",
            "http://u:hunter2@/x",
            "gopher://u:hunter2@h/",
        ] {
            let e = parse(&format!(r#"{{"callback":"{url}"}}"#)).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn failure_record_keeps_fields_and_member() {
        let member = br#"{"callback":"http://h/","body":{"id":1},"extra":true}"#;
        let r: Value =
            serde_json::from_str(&failure_record(member, "abc", 4, "HTTP 500", 1.25, 1.5)).unwrap();
        assert_eq!(r["Id"], "abc");
        assert_eq!(r["extra"], true);
        assert_eq!(r["attempts"], 4);
        assert_eq!(r["error"], "HTTP 500");
        assert_eq!(r["member"], std::str::from_utf8(member).unwrap());
        assert_eq!(r["dueAt"].as_f64(), Some(1.25));
        assert_eq!(r["failedAt"].as_f64(), Some(1.5));
        let r: Value =
            serde_json::from_str(&failure_record(b"\xffoops", "x", 0, "bad", 1.0, 1.0)).unwrap();
        assert_eq!(r["member"], "\u{fffd}oops");
    }
}
