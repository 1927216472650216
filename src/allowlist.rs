//! `allowedCallbacks`: where delayqs may send. Anyone who can write one Redis key can
//! otherwise make it POST anywhere the host can reach.

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// `https://shop.example/hooks/`: the callback starts with it, ending at a path,
    /// query or fragment boundary (so `https://shop.example` does not let
    /// `https://shop.example.evil.net` through).
    Prefix(String),
    /// `shop.example`, `*.shop.example` (subdomains only), either with `:port`.
    Host {
        name: String,
        wildcard: bool,
        port: Option<u16>,
    },
}

impl Allowed {
    pub fn parse(entry: &str) -> Result<Allowed, String> {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.contains("://") {
            return match entry.starts_with("http://") || entry.starts_with("https://") {
                true => Ok(Allowed::Prefix(entry)),
                false => Err(format!(
                    "{entry:?}: a URL prefix must start with http:// or https://"
                )),
            };
        }
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

    /// Whether a callback URL (already checked to be absolute http(s)) is let through.
    fn lets(&self, callback: &str, host: &str, port: u16) -> bool {
        match self {
            Allowed::Prefix(prefix) => {
                let url = callback.to_ascii_lowercase();
                url.starts_with(prefix.as_str())
                    && (prefix.ends_with(['/', '?', '#'])
                        || matches!(
                            url.as_bytes().get(prefix.len()),
                            None | Some(b'/' | b'?' | b'#')
                        ))
            }
            Allowed::Host {
                name,
                wildcard,
                port: want,
            } => {
                let name_ok = match wildcard {
                    true => host
                        .strip_suffix(name.as_str())
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                    false => host == name,
                };
                name_ok && want.is_none_or(|p| p == port)
            }
        }
    }
}

/// Whether `callback` is allowed by `list`; an empty list allows all.
pub fn allows(list: &[Allowed], callback: &str) -> bool {
    if list.is_empty() {
        return true;
    }
    let Ok(uri) = callback.parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    let host = authority.host().to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    list.iter().any(|a| a.lets(callback, &host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<Allowed> {
        entries.iter().map(|e| Allowed::parse(e).unwrap()).collect()
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
        for bad in ["ftp://x/", "*", "host:notaport", "a/b"] {
            assert!(Allowed::parse(bad).is_err(), "{bad}");
        }
    }
}
