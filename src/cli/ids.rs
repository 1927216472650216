//! Job ids as an operator types them: a unique prefix of the SHA-1 hex, as git takes
//! commit ids. Resolving one means reading the keys page by page and hashing every
//! member (Redis has no index by id), so the prefixes are matched all at once, in one
//! pass over what is read.

use std::collections::{BTreeMap, BTreeSet};

use crate::cli::error::Error;

/// Fewer hex digits than this match too many jobs of a large queue to be useful.
pub const MIN_PREFIX: usize = 6;
const FULL: usize = 40;

/// One id argument: a prefix of hex digits, or (for failed records only) a whole `Id`
/// of another form, which the old daemon wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdArg {
    Prefix(String),
    Exact(String),
}

impl IdArg {
    /// `old_ids_allowed`: an argument that is not hex is taken as a whole `Id`.
    pub fn parse(arg: &str, old_ids_allowed: bool) -> Result<IdArg, Error> {
        let hex = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && arg.len() > FULL {
            return Err(Error::Usage(format!(
                "`{arg}` is not a job id: ids are {FULL} hex digits"
            )));
        }
        if hex && arg.len() < MIN_PREFIX {
            return Err(Error::Usage(format!(
                "job id `{arg}` is too short: give at least {MIN_PREFIX} hex digits of it (`delayqs pending` shows 12)"
            )));
        }
        match (hex, old_ids_allowed) {
            (true, _) => Ok(IdArg::Prefix(arg.to_ascii_lowercase())),
            (false, true) => Ok(IdArg::Exact(arg.to_string())),
            (false, false) => Err(Error::Usage(format!(
                "`{arg}` is not a job id: ids are hex digits (at least {MIN_PREFIX} of them)"
            ))),
        }
    }

    /// The argument as typed (lowercased), to report it by.
    pub fn text(&self) -> &str {
        match self {
            IdArg::Prefix(p) | IdArg::Exact(p) => p,
        }
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            IdArg::Prefix(p) => id.starts_with(p.as_str()),
            IdArg::Exact(e) => id == e,
        }
    }
}

pub fn parse_all(args: &[String], old_ids_allowed: bool) -> Result<Vec<IdArg>, Error> {
    args.iter()
        .map(|a| IdArg::parse(a, old_ids_allowed))
        .collect()
}

/// An argument and the one id it names (with what was kept of it), if any.
pub type Resolved<T> = (IdArg, Option<(String, T)>);

/// What the ids named matched so far, fed one id at a time while the keys are read.
/// `T` is what the caller keeps of a match (a member, a record).
pub struct Resolver<T> {
    args: Vec<IdArg>,
    /// Per argument, the full ids it matched, each with the first `T` seen for it.
    found: Vec<BTreeMap<String, T>>,
}

impl<T> Resolver<T> {
    pub fn new(args: Vec<IdArg>) -> Resolver<T> {
        let found = args.iter().map(|_| BTreeMap::new()).collect();
        Resolver { args, found }
    }

    /// Offers one id; `keep` makes the `T` only when some argument matches it.
    pub fn offer(&mut self, id: &str, keep: impl FnOnce() -> T)
    where
        T: Clone,
    {
        let mut keep = Some(keep);
        let mut kept: Option<T> = None;
        for (arg, found) in self.args.iter().zip(&mut self.found) {
            if arg.matches(id) && !found.contains_key(id) {
                let t = kept.get_or_insert_with(|| keep.take().map(|k| k()).unwrap());
                found.insert(id.to_string(), t.clone());
            }
        }
    }

    /// Per argument, in the order given: its one match, or none. An argument that
    /// matched several ids is a usage error listing them, before anything is changed.
    pub fn finish(self) -> Result<Vec<Resolved<T>>, Error> {
        let ambiguous: Vec<String> = self
            .args
            .iter()
            .zip(&self.found)
            .filter(|(_, f)| f.len() > 1)
            .map(|(a, f)| ambiguity(a.text(), f.keys()))
            .collect();
        if !ambiguous.is_empty() {
            return Err(Error::Usage(ambiguous.join("\n")));
        }
        Ok(self
            .args
            .into_iter()
            .zip(self.found)
            .map(|(a, f)| (a, f.into_iter().next()))
            .collect())
    }

    /// Whether every argument is a whole id found already: reading on cannot change
    /// the answer.
    pub fn settled(&self) -> bool {
        self.args
            .iter()
            .zip(&self.found)
            .all(|(a, f)| matches!(a, IdArg::Prefix(p) if p.len() == FULL) && f.len() == 1)
    }
}

fn ambiguity<'a>(arg: &str, ids: impl Iterator<Item = &'a String>) -> String {
    let ids: BTreeSet<&String> = ids.collect();
    let listed: Vec<String> = ids.iter().take(20).map(|id| format!("  {id}")).collect();
    let more = match ids.len().saturating_sub(20) {
        0 => String::new(),
        n => format!("\n  … and {n} more"),
    };
    format!(
        "job id prefix `{arg}` is ambiguous: it matches {} jobs; give more digits:\n{}{more}",
        ids.len(),
        listed.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_long_and_non_hex_arguments_are_usage_errors() {
        for bad in ["", "abc12", &"a".repeat(41), "xyz123", "abc-12"] {
            let e = IdArg::parse(bad, false).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}");
        }
        assert!(
            IdArg::parse("abc12", true).is_err(),
            "short hex stays short"
        );
        assert_eq!(
            IdArg::parse("ABCDEF", false).unwrap(),
            IdArg::Prefix("abcdef".into())
        );
        assert_eq!(
            IdArg::parse("old-7", true).unwrap(),
            IdArg::Exact("old-7".into())
        );
    }

    #[test]
    fn a_prefix_resolves_to_its_one_id_or_lists_the_candidates() {
        let args = parse_all(&["aaaaaa".into(), "bbbbbb".into(), "cccccc".into()], false);
        let mut r = Resolver::new(args.unwrap());
        r.offer("aaaaaa11", || 1);
        r.offer("aaaaaa11", || 2); // the same job seen twice (a rescan, another key)
        r.offer("bbbbbb22", || 3);
        let got = r.finish().unwrap();
        assert_eq!(got[0].1, Some(("aaaaaa11".into(), 1)));
        assert_eq!(got[1].1, Some(("bbbbbb22".into(), 3)));
        assert_eq!(got[2].1, None);

        let mut r = Resolver::new(parse_all(&["aaaaaa".into()], false).unwrap());
        r.offer("aaaaaa22", || ());
        r.offer("aaaaaa11", || ());
        let e = r.finish().err().unwrap().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("matches 2 jobs"),
            "{e}"
        );
        assert!(e.find("aaaaaa11") < e.find("aaaaaa22"), "sorted: {e}");
    }

    #[test]
    fn two_arguments_naming_one_job_both_get_it() {
        let mut r = Resolver::new(parse_all(&["abcdef".into(), "abcdef12".into()], false).unwrap());
        r.offer("abcdef1234", || "m");
        let got = r.finish().unwrap();
        assert_eq!(got[0].1, Some(("abcdef1234".into(), "m")));
        assert_eq!(got[1].1, Some(("abcdef1234".into(), "m")));
    }
}
