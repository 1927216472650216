//! `allowedCallbacks`: where delayqs may send. Anyone who can write one Redis key can
//! otherwise make it POST anywhere the host can reach.
//!
//! Both sides are judged normalised (`job::callback`): scheme and host in any case,
//! default ports, dot segments and their percent-encoded forms all resolved before
//! comparing, and the path compared exactly. A path holding an encoded slash,
//! backslash or dot, which some servers decode into a different path than the one
//! matched, never passes a prefix below the root.

use crate::job::callback::Callback;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// `https://shop.example/hooks/`: same scheme, host and port, and the callback's
    /// path starts with the prefix's, ending at a path, query or fragment boundary (so
    /// `https://shop.example` does not let `https://shop.example.evil.net` through).
    Prefix(Callback),
    /// `shop.example`, `*.shop.example` (subdomains only), either with `:port`.
    Host {
        name: String,
        wildcard: bool,
        port: Option<u16>,
    },
}

impl Allowed {
    pub fn parse(entry: &str) -> Result<Allowed, String> {
        let entry = entry.trim();
        if entry.contains("://") {
            let lower = entry.to_ascii_lowercase();
            if !lower.starts_with("http://") && !lower.starts_with("https://") {
                return Err(format!(
                    "{entry:?}: a URL prefix must start with http:// or https://"
                ));
            }
            let url = Callback::parse(entry)
                .map_err(|e| format!("{entry:?}: not a usable URL prefix ({})", e.problem))?;
            return Ok(Allowed::Prefix(url));
        }
        let entry = entry.to_ascii_lowercase();
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("{entry:?}: bad port"))?,
                ),
            ),
            None => (entry.as_str(), None),
        };
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if name.is_empty() || name.contains(['*', '/', '@']) {
            return Err(format!(
                "{entry:?}: expected host, *.domain or an http(s):// prefix"
            ));
        }
        Ok(Allowed::Host {
            name: name.to_string(),
            wildcard,
            port,
        })
    }

    /// Whether a callback is let through.
    pub fn lets(&self, callback: &Callback) -> bool {
        match self {
            Allowed::Prefix(prefix) => prefix_lets(prefix, callback),
            Allowed::Host {
                name,
                wildcard,
                port: want,
            } => {
                let host = callback.host();
                let name_ok = match wildcard {
                    true => host
                        .strip_suffix(name.as_str())
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                    false => host == name,
                };
                name_ok && want.is_none_or(|p| p == callback.port())
            }
        }
    }
}

/// Same origin, and the path (then query) continues the prefix's at a boundary.
fn prefix_lets(prefix: &Callback, callback: &Callback) -> bool {
    if !prefix.same_origin(callback) {
        return false;
    }
    let (want, got) = (after_origin(prefix), after_origin(callback));
    if prefix.path() != "/" && has_encoded_separator(callback.path()) {
        return false;
    }
    got.starts_with(want)
        && (want.ends_with(['/', '?', '#'])
            || matches!(
                got.as_bytes().get(want.len()),
                None | Some(b'/' | b'?' | b'#')
            ))
}

/// Path, query and fragment of a normalised URL.
fn after_origin(url: &Callback) -> &str {
    let s = url.as_str();
    let origin_end = s.find("://").map_or(0, |i| i + 3);
    s[origin_end..]
        .find('/')
        .map_or("", |i| &s[origin_end + i..])
}

/// `%2f`, `%5c` or `%2e` in any case: a slash, backslash or dot hidden from the
/// normalisation.
fn has_encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    ["%2f", "%5c", "%2e"].iter().any(|e| lower.contains(e))
}

/// Whether `callback` is allowed by `list`; an empty list allows all.
pub fn allows(list: &[Allowed], callback: &Callback) -> bool {
    list.is_empty() || list.iter().any(|a| a.lets(callback))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<Allowed> {
        entries.iter().map(|e| Allowed::parse(e).unwrap()).collect()
    }

    fn allows(list: &[Allowed], url: &str) -> bool {
        super::allows(list, &Callback::parse(url).unwrap())
    }

    #[test]
    fn prefixes_stop_at_a_boundary() {
        let l = list(&["https://shop.example", "http://10.0.0.5:8080/hooks/"]);
        assert!(allows(&l, "https://shop.example/close?id=1"));
        assert!(allows(&l, "https://SHOP.example"));
        assert!(!allows(&l, "https://shop.example.evil.net/x"));
        assert!(!allows(&l, "https://shop.example:444/x"));
        assert!(allows(&l, "http://10.0.0.5:8080/hooks/a"));
        assert!(!allows(&l, "http://10.0.0.5:8080/other"));
    }

    #[test]
    fn host_patterns_with_and_without_port() {
        let l = list(&["*.shop.example", "api.example:8443"]);
        assert!(allows(&l, "https://eu.shop.example/x"));
        assert!(
            !allows(&l, "https://shop.example/x"),
            "a wildcard is for subdomains"
        );
        assert!(!allows(&l, "https://evilshop.example/x"));
        assert!(allows(&l, "https://api.example:8443/x"));
        assert!(!allows(&l, "https://api.example/x"));
        assert!(allows(&[], "http://anything/"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["ftp://x/", "*", "host:notaport", "a/b", "http:///x"] {
            assert!(Allowed::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_match_after_normalisation_and_exactly() {
        let l = list(&["http://127.0.0.1:8080/hooks/"]);
        assert!(allows(&l, "http://127.0.0.1:8080/hooks/close"));
        assert!(allows(&l, "HTTP://127.0.0.1:8080/hooks/a/../b"));
        for refused in [
            "http://127.0.0.1:8080/hooks/../admin/delete",
            "http://127.0.0.1:8080/hooks/%2e%2e/admin/x",
            "http://127.0.0.1:8080/hooks/%2E%2E/admin/x",
            "http://127.0.0.1:8080/hooks/..%2fadmin",
            "http://127.0.0.1:8080/hooks/%2e%2e%2fadmin",
            "http://127.0.0.1:8080/hooks/..%5cadmin",
            "HTTP://127.0.0.1:8080/hooks/../upper",
            "http://127.0.0.1:8080/HOOKS/close",
            "https://127.0.0.1:8080/hooks/close",
            "http://127.0.0.1:8081/hooks/close",
        ] {
            assert!(!allows(&l, refused), "{refused}");
        }
        let root = list(&["http://127.0.0.1:8080"]);
        assert!(
            allows(&root, "http://127.0.0.1:8080/a%2fb"),
            "below the root anything goes"
        );
        let default_port = list(&["http://h:80/x"]);
        assert!(allows(&default_port, "http://H/x/y"));
    }
}
