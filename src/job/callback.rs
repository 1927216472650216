//! Callback URLs: the one place they are parsed and normalised, by the `url` crate
//! (WHATWG URL parsing, as browsers do), so that the allow-list judges, the breakers
//! count and the workers send one and the same URL.
//!
//! Normalised means: scheme and host in lower case, a default port dropped, dot
//! segments (`.`, `..`, and their percent-encoded forms) removed from the path, and
//! characters that need it percent-encoded. What the text must be beyond what the
//! WHATWG parser demands is stricter on purpose: no credentials (they would end up in
//! logs and failure records), no backslashes, spaces or control characters (which the
//! parser would silently rewrite), and `//` right after the scheme.

use std::fmt;

use url::Url;

use crate::job::Malformed;

/// An absolute http(s) URL with a host and no credentials, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    url: Url,
    /// `host[:port]`, computed once: the breakers look it up for every attempt.
    host_key: String,
}

impl Callback {
    /// Parses a job's `callback`; the error names the field and never shows a
    /// password.
    pub fn parse(text: &str) -> Result<Callback, Malformed> {
        let bad = |why: &str| {
            let shown = crate::job::shorten(&mask(text), 200);
            Malformed::field("callback", format!("{shown:?} {why}"))
        };
        let scheme = match text.split_once(':') {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                scheme.to_ascii_lowercase()
            }
            _ => return Err(bad("is not an absolute http(s) URL")),
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad("must use http or https"));
        }
        let after_scheme = &text[scheme.len() + 1..];
        let host_first = after_scheme
            .strip_prefix("//")
            .is_some_and(|h| !h.starts_with('/'));
        if !host_first
            || text
                .bytes()
                .any(|b| b == b'\\' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("is not a valid URL"));
        }
        let url = Url::parse(text).map_err(|e| match e {
            // Built without Unicode host names (Cargo.toml, `idna_adapter`): the
            // IDNA tables cost more of the binary than they give a callback queue.
            url::ParseError::IdnaError => bad(
                "has a host name that is not ASCII: write it in its punycode form (`bücher.example` is `xn--bcher-kva.example`)",
            ),
            _ => bad("is not a valid URL"),
        })?;
        Callback::from_url(url).map_err(|why| match why {
            Refusal::Credentials => Malformed::field(
                "callback",
                "carries credentials (user:password@); put them elsewhere, they would be logged",
            ),
            Refusal::NoHost => bad("has no host"),
            Refusal::Scheme => bad("must use http or https"),
        })
    }

    fn from_url(url: Url) -> Result<Callback, Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(Refusal::NoHost),
        };
        let host_key = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Ok(Callback { url, host_key })
    }

    /// Where a redirect's `Location` points, resolved against this URL as RFC 3986
    /// says (relative references included). `None` when it is not a URL a callback
    /// could have.
    pub fn follow(&self, location: &str) -> Option<Callback> {
        if location.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
            return None;
        }
        Callback::from_url(self.url.join(location.trim()).ok()?).ok()
    }

    /// The normalised URL, as sent.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host, in lower case; IPv6 addresses in brackets.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }

    /// The port, the scheme's default when none is written.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// `host[:port]` (the port only when not the scheme's default): what a host's
    /// health is kept by.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The path, normalised: dot segments removed, still percent-encoded.
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// Scheme, host and port are the same: a redirect that stays on one origin.
    pub fn same_origin(&self, other: &Callback) -> bool {
        self.url.origin() == other.url.origin()
    }
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Refusal {
    Scheme,
    Credentials,
    NoHost,
}

/// A URL's text with any `user:password@` replaced by `***@`, for messages.
pub fn mask(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Free text (a member string) with the `user:password@` of every URL in it replaced
/// by `***@`, the rest unchanged. A URL ends its authority at `/ ? #`, a quote, a
/// backslash or white space.
pub fn mask_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| "/?#\"'\\".contains(c) || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials_in_text() {
        assert_eq!(
            mask_in_text(r#"{"callback":"http://u:pw@h/x@y","b":"https://a@b"}"#),
            r#"{"callback":"http://***@h/x@y","b":"https://***@b"}"#
        );
        assert_eq!(mask_in_text("no url: a@b ://"), "no url: a@b ://");
        assert_eq!(mask_in_text("x http://h/a y"), "x http://h/a y");
    }

    fn parse(text: &str) -> Callback {
        Callback::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn normalises_case_ports_dots_and_encoding() {
        assert_eq!(
            parse("HTTP://Shop.Example:80/a/./b/../c").as_str(),
            "http://shop.example/a/c"
        );
        assert_eq!(parse("https://h:443/x").as_str(), "https://h/x");
        assert_eq!(
            parse("http://h/hooks/%2e%2e/admin").as_str(),
            "http://h/admin"
        );
        assert_eq!(parse("http://h/é").as_str(), "http://h/%C3%A9");
        assert_eq!(
            parse("http://XN--BCHER-KVA.example/").as_str(),
            "http://xn--bcher-kva.example/"
        );
        let unicode = Callback::parse("http://bücher.example/").unwrap_err();
        assert!(
            unicode.to_string().contains("xn--bcher-kva.example"),
            "{unicode}"
        );
        let c = parse("http://127.0.0.1:8080/x?y=1");
        assert_eq!(
            (c.host(), c.port(), c.host_key()),
            ("127.0.0.1", 8080, "127.0.0.1:8080")
        );
        assert_eq!(parse("https://h/").port(), 443);
        assert_eq!(parse("http://[::1]:81/").host_key(), "[::1]:81");
    }

    #[test]
    fn refuses_what_the_parser_would_rewrite() {
        for (text, why) in [
            ("http:///x", "not a valid URL"),
            ("http:\\\\h\\x", "not a valid URL"),
            ("http://h/a\tb", "not a valid URL"),
            ("http://h/a b", "not a valid URL"),
            ("http:h/x", "not a valid URL"),
            ("http://h\\@evil/", "not a valid URL"),
            ("ftp://h/x", "http or https"),
            ("/relative", "not an absolute"),
            ("http://u:pw@h/x", "credentials"),
            ("http://:99999/", "not a valid URL"),
        ] {
            let e = Callback::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn redirects_resolve_relative_references() {
        let from = parse("http://h:81/hooks/a/close?x=1");
        let to = |l: &str| from.follow(l).map(|c| c.as_str().to_string());
        assert_eq!(to("/other").as_deref(), Some("http://h:81/other"));
        assert_eq!(to("?q=2").as_deref(), Some("http://h:81/hooks/a/close?q=2"));
        assert_eq!(to("../x").as_deref(), Some("http://h:81/hooks/x"));
        assert_eq!(to("next").as_deref(), Some("http://h:81/hooks/a/next"));
        assert_eq!(to("//other:82/y").as_deref(), Some("http://other:82/y"));
        assert_eq!(
            to("https://elsewhere/z").as_deref(),
            Some("https://elsewhere/z")
        );
        assert_eq!(to("ftp://elsewhere/z"), None);
        assert_eq!(to("http://u:p@elsewhere/z"), None);
        assert!(from.same_origin(&from.follow("/y").unwrap()));
        assert!(!from.same_origin(&from.follow("//h:82/y").unwrap()));
        assert!(!from.same_origin(&from.follow("https://h:81/y").unwrap()));
    }

    #[test]
    fn masks_credentials() {
        assert_eq!(mask("http://u:pw@h/x"), "http://***@h/x");
        assert_eq!(mask("http://h/x@y"), "http://h/x@y");
    }
}
