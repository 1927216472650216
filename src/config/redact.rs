//! The one way a Redis URL is shown: with every credential redis-rs could read out of
//! it masked. Every log line, error message and `Debug` that names the Redis server
//! goes through [`redis_url`].
//!
//! redis-rs (1.8) takes credentials from two places, by the WHATWG URL rules of the
//! `url` crate:
//! - `redis://`, `rediss://`, `valkey://`, `valkeys://`: the userinfo,
//!   `[user][:password]@`;
//! - `unix://`, `redis+unix://`, `valkey+unix://`: the query, `?user=…&pass=…`.
//!
//! Masking is textual and lenient, since it must also hide the password of a URL that
//! does not parse (the config error shows it): a password holding `/`, `?` or `#`
//! ends the authority early for the parser, and one holding `@` moves the end of the
//! userinfo. So for the TCP schemes everything from `//` up to the *last* `@` is
//! masked, and every query value except a plain `db` or `protocol`, for any scheme.
//! Anything else that could hold a credential is masked whole.

use std::fmt;

const TCP_SCHEMES: [&str; 4] = ["redis", "rediss", "valkey", "valkeys"];
const UNIX_SCHEMES: [&str; 3] = ["unix", "redis+unix", "valkey+unix"];
const MASK: &str = "***";

/// The URL with its credentials masked.
pub fn redis_url(url: &str) -> String {
    let masked = mask(url);
    // A second guard: whatever redis-rs itself would send as the password must not
    // be in the text. When it is (a one-letter password that also occurs in the host
    // name, say), only the scheme is shown.
    let password = url
        .parse::<redis::ConnectionInfo>()
        .ok()
        .and_then(|info| info.redis_settings().password().map(str::to_string));
    match password {
        Some(pw) if !pw.is_empty() && masked.contains(&pw) => match scheme_of(url) {
            Some((scheme, _)) => format!("{scheme}:{MASK}"),
            None => MASK.to_string(),
        },
        _ => masked,
    }
}

/// Whether the URL holds a credential (something [`redis_url`] masks).
pub fn has_credentials(url: &str) -> bool {
    redis_url(url) != url
}

/// The scheme (lower case, as the parser reads it) and the rest after its `:`.
fn scheme_of(url: &str) -> Option<(String, &str)> {
    let colon = url.find(':')?;
    // The parser drops tabs and newlines anywhere, and trims C0 controls and spaces.
    let scheme: String = url[..colon]
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect::<String>()
        .trim_matches(|c: char| c <= ' ')
        .to_ascii_lowercase();
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, &url[colon + 1..]))
}

fn mask(url: &str) -> String {
    let Some((scheme, rest)) = scheme_of(url) else {
        // No scheme: not a URL redis-rs takes. Shown only when nothing in it could be
        // a password.
        return match url.contains(['@', '?', ':']) {
            true => MASK.to_string(),
            false => url.to_string(),
        };
    };
    let head = &url[..url.len() - rest.len()]; // "scheme:", as written
    let (lead, body) = match rest.strip_prefix("//") {
        Some(body) => ("//", body),
        None => ("", rest),
    };
    if TCP_SCHEMES.contains(&scheme.as_str()) {
        // The userinfo ends at the last `@`, wherever the parser would end it.
        let after = match body.rfind('@') {
            Some(at) => &body[at + 1..],
            None => body,
        };
        let userinfo = if after.len() < body.len() { "***@" } else { "" };
        let (address, query) = after.split_at(after.find('?').unwrap_or(after.len()));
        format!("{head}{lead}{userinfo}{address}{}", mask_query(query))
    } else if UNIX_SCHEMES.contains(&scheme.as_str()) {
        // The query starts at the first `?` and runs to the end: a `#` in a password
        // ends it for the parser, but what follows is still the password's.
        let (path, query) = body.split_at(body.find('?').unwrap_or(body.len()));
        let path = match path.rfind('@') {
            Some(at) => format!("***@{}", &path[at + 1..]),
            None => path.to_string(),
        };
        format!("{head}{lead}{path}{}", mask_query(query))
    } else if url.contains(['@', '?']) {
        // Not a Redis URL (the config refuses it); anything could be a credential.
        format!("{head}{MASK}")
    } else {
        url.to_string()
    }
}

/// `?a=b&c=d` with every value masked but a plain `db` or `protocol`. A parameter
/// that is not one redis-rs reads is masked whole: it may be the tail of a password
/// holding `&`.
fn mask_query(query: &str) -> String {
    let Some(params) = query.strip_prefix('?') else {
        return query.to_string(); // empty
    };
    let shown: Vec<String> = params
        .split('&')
        .map(|param| {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let name = url::form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric());
            match name.as_str() {
                "" if param.is_empty() => String::new(),
                "db" | "protocol" if plain => param.to_string(),
                "db" | "protocol" | "pass" | "user" => format!("{key}={MASK}"),
                _ => MASK.to_string(),
            }
        })
        .collect();
    format!("?{}", shown.join("&"))
}

/// A Redis URL as the config holds it: its `Debug` and `Display` are masked, so a
/// config printed whole shows no password. [`RedisUrl::as_str`] is for redis-rs only.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: String) -> RedisUrl {
        RedisUrl(url)
    }

    /// The URL itself, credentials and all: to connect with, never to show.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        redis_url(&self.0)
    }

    pub fn has_credentials(&self) -> bool {
        has_credentials(&self.0)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: the URL, what is shown, and the secrets that must not be.
    const CASES: &[(&str, &str, &[&str])] = &[
        ("redis://:pw-one@h:1/0", "redis://***@h:1/0", &["pw-one"]),
        (
            "redis://usr2:pw-two@h/",
            "redis://***@h/",
            &["usr2", "pw-two"],
        ),
        ("redis://bob@h/", "redis://***@h/", &["bob"]),
        (
            "rediss://usr3:pw-tls@h:6380/#insecure",
            "rediss://***@h:6380/#insecure",
            &["usr3", "pw-tls"],
        ),
        ("valkey://:pw-vk@h/", "valkey://***@h/", &["pw-vk"]),
        ("valkeys://:pw-vks@h/", "valkeys://***@h/", &["pw-vks"]),
        ("REDIS://:pw-caps@h/", "REDIS://***@h/", &["pw-caps"]),
        ("redis://h:6379/", "redis://h:6379/", &[]),
        ("redis://h/?protocol=3", "redis://h/?protocol=3", &[]),
        // Passwords the parser cuts short: `/`, `#`, `?` end the authority for it, and
        // `@` moves the end of the userinfo.
        (
            "redis://:pa/ss#w?rd@127.0.0.1:1/",
            "redis://***@127.0.0.1:1/",
            &["pa", "ss", "rd"],
        ),
        ("redis://:p@ss@h/", "redis://***@h/", &["p@ss", "ss@"]),
        (
            "redis://us%40er:p%2Fw@h/",
            "redis://***@h/",
            &["us", "p%2Fw"],
        ),
        ("redis:// :pw-sp@h/", "redis://***@h/", &["pw-sp"]),
        ("redis:/:pw-noslash@h", "redis:***@h", &["pw-noslash"]),
        // Sockets: the password is a query parameter.
        ("unix:///run/r.sock", "unix:///run/r.sock", &[]),
        ("unix:///run/r.sock?db=2", "unix:///run/r.sock?db=2", &[]),
        (
            "unix:///run/r.sock?pass=pw-sock",
            "unix:///run/r.sock?pass=***",
            &["pw-sock"],
        ),
        (
            "unix:///run/r.sock?user=alice&pass=pw-acl&db=1",
            "unix:///run/r.sock?user=***&pass=***&db=1",
            &["alice", "pw-acl"],
        ),
        (
            "redis+unix:///r.sock?pass=pw-plus",
            "redis+unix:///r.sock?pass=***",
            &["pw-plus"],
        ),
        (
            "valkey+unix:///r.sock?pass=pw-vku",
            "valkey+unix:///r.sock?pass=***",
            &["pw-vku"],
        ),
        (
            "unix:/r.sock?pass=pw-noslash",
            "unix:/r.sock?pass=***",
            &["pw-noslash"],
        ),
        // A password holding `&`, `#`, `=` or `@`: its tail is masked too.
        (
            "unix:///r.sock?pass=ab&cd=ef",
            "unix:///r.sock?pass=***&***",
            &["ab", "cd", "ef"],
        ),
        (
            "unix:///r.sock?pass=ab#cd",
            "unix:///r.sock?pass=***",
            &["ab", "cd"],
        ),
        (
            "unix:///r.sock?pass=a@b/c?d",
            "unix:///r.sock?pass=***",
            &["a@b", "b/c", "c?d"],
        ),
        (
            "unix:///r.sock?db=1#x&pass=pw",
            "unix:///r.sock?db=***&pass=***",
            &["pw"],
        ),
        // Encoded or disguised parameter names are masked whole.
        (
            "unix:///r.sock?%70ass=pw-enc",
            "unix:///r.sock?%70ass=***",
            &["pw-enc"],
        ),
        (
            "unix:///r.sock?pa\tss=pw-tab",
            "unix:///r.sock?***",
            &["pw-tab"],
        ),
        (
            "unix://x:pw-ui@localhost/r.sock",
            "unix://***@localhost/r.sock",
            &["pw-ui"],
        ),
        // Not Redis URLs at all (the config refuses them): shown only when harmless.
        ("http://:hunter2@host/", "http:***", &["hunter2"]),
        ("localhost:6379", "localhost:6379", &[]),
        ("pw-bare@host", "***", &["pw-bare"]),
        ("", "", &[]),
    ];

    #[test]
    fn every_credential_form_is_masked() {
        for (url, shown, secrets) in CASES {
            let got = redis_url(url);
            assert_eq!(&got, shown, "{url:?}");
            for s in *secrets {
                assert!(!got.contains(s), "{url:?} shows {s:?}: {got}");
            }
            assert_eq!(has_credentials(url), !secrets.is_empty(), "{url:?}");
        }
    }

    #[test]
    fn what_redis_rs_would_send_is_never_shown() {
        // The parser's own reading, for the URLs it takes.
        for (url, _, _) in CASES {
            let Ok(info) = url.parse::<redis::ConnectionInfo>() else {
                continue;
            };
            let shown = redis_url(url);
            if let Some(pw) = info.redis_settings().password() {
                assert!(!shown.contains(pw), "{url:?} shows {pw:?}: {shown}");
            }
            if let Some(user) = info.redis_settings().username() {
                assert!(!shown.contains(user), "{url:?} shows {user:?}: {shown}");
            }
        }
    }

    #[test]
    fn a_password_found_in_the_rest_falls_back_to_the_scheme() {
        // "h" is both the password and the host: masking the userinfo is not enough.
        assert_eq!(redis_url("redis://:h@h/"), "redis:***");
        assert_eq!(redis_url("unix:///r.sock?pass=r"), "unix:***");
    }

    #[test]
    fn debug_and_display_are_masked() {
        let url = RedisUrl::new("unix:///r.sock?pass=pw-debug".into());
        assert!(!format!("{url:?}").contains("pw-debug"));
        assert!(!url.to_string().contains("pw-debug"));
        assert_eq!(url.as_str(), "unix:///r.sock?pass=pw-debug");
        assert!(url.has_credentials());
    }
}
