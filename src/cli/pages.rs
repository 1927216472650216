//! Reading a key of any size a page at a time, one short Redis command per page: a
//! queue of a million jobs or a failed list of 300,000 records is never sent in one
//! reply, and Redis is never held for more than the page. Each reader takes one key
//! name, so that a command can run it on each set of keys and merge the results.

use redis::Commands;

use crate::cli::admin::{Admin, on};
use crate::cli::error::Error;

/// Members per page: about 100 KB of reply for typical members, well under a
/// millisecond of Redis's time.
pub const PAGE: usize = 500;
/// `ZSCAN`'s COUNT: a hint of buckets per call, for the scans that hash every member.
/// Measured on a million-member set: about 2 µs of Redis's time per member (it formats
/// each score), so 1000 held it up to 6 ms a call; 250 keeps a call near 1 ms.
const SCAN_COUNT: usize = 250;

/// A member and its score.
pub type Scored = (Vec<u8>, f64);

/// A sorted set in score order, by rank. Each page starts after the rank its last
/// member has now, so that jobs claimed from the head meanwhile do not make it skip
/// others; when that member has left too, after the members scored below it (showing
/// a few of its ties again rather than skipping one).
pub struct RankPages {
    key: String,
    /// Only members scored up to this (`--due`).
    until: Option<f64>,
    next: isize,
    last: Option<Scored>,
    done: bool,
}

impl RankPages {
    pub fn new(key: &str, until: Option<f64>) -> RankPages {
        RankPages {
            key: key.to_string(),
            until,
            next: 0,
            last: None,
            done: false,
        }
    }

    /// Up to `want` more members with their scores; `None` at the end.
    pub fn next(&mut self, a: &mut Admin, want: usize) -> Result<Option<Vec<Scored>>, Error> {
        if self.done || want == 0 {
            return Ok(None);
        }
        if let Some((member, score)) = self.last.take() {
            let rank: Option<isize> = on(&a.url, a.con.zrank(&self.key, &member))?;
            self.next = match rank {
                Some(r) => r + 1,
                None => on(&a.url, a.con.zcount(&self.key, "-inf", format!("({score}")))?,
            };
        }
        let want = want.min(PAGE);
        let mut page: Vec<Scored> = on(
            &a.url,
            a.con
                .zrange_withscores(&self.key, self.next, self.next + want as isize - 1),
        )?;
        if page.len() < want {
            self.done = true;
        }
        if let Some(until) = self.until
            && let Some(past) = page.iter().position(|(_, s)| *s > until)
        {
            page.truncate(past);
            self.done = true;
        }
        self.last = page.last().cloned();
        Ok((!page.is_empty()).then_some(page))
    }
}

/// Every member of a sorted set, in no order, by `ZSCAN`: for looking a job up by id,
/// which means hashing each member. A member may come twice (the set was resized
/// meanwhile); callers count ids, not pages.
pub struct ScanPages {
    key: String,
    cursor: String,
    done: bool,
}

impl ScanPages {
    pub fn new(key: &str) -> ScanPages {
        ScanPages {
            key: key.to_string(),
            cursor: "0".into(),
            done: false,
        }
    }

    pub fn next(&mut self, a: &mut Admin) -> Result<Option<Vec<Vec<u8>>>, Error> {
        if self.done {
            return Ok(None);
        }
        let (cursor, flat): (String, Vec<Vec<u8>>) = on(
            &a.url,
            redis::cmd("ZSCAN")
                .arg(&self.key)
                .arg(&self.cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query(&mut a.con),
        )?;
        self.done = cursor == "0";
        self.cursor = cursor;
        // Member, score, member, score…
        Ok(Some(flat.into_iter().step_by(2).collect()))
    }
}

/// A list from its head, by index, a page per `LRANGE`.
pub struct ListPages {
    key: String,
    next: isize,
    done: bool,
}

impl ListPages {
    pub fn new(key: &str) -> ListPages {
        ListPages {
            key: key.to_string(),
            next: 0,
            done: false,
        }
    }

    pub fn next(&mut self, a: &mut Admin, want: usize) -> Result<Option<Vec<Vec<u8>>>, Error> {
        if self.done || want == 0 {
            return Ok(None);
        }
        let want = want.min(PAGE);
        let page: Vec<Vec<u8>> = on(
            &a.url,
            a.con
                .lrange(&self.key, self.next, self.next + want as isize - 1),
        )?;
        self.next += page.len() as isize;
        self.done = page.len() < want;
        Ok((!page.is_empty()).then_some(page))
    }
}

/// Several sorted sets read as one, in score order (the shards of a queue): a page of
/// each at a time, merged. Each member comes with the index of its set.
pub struct MergedPages {
    sources: Vec<Source>,
}

struct Source {
    pages: RankPages,
    buffer: std::collections::VecDeque<Scored>,
    done: bool,
}

impl MergedPages {
    pub fn new<'k>(keys: impl IntoIterator<Item = &'k str>, until: Option<f64>) -> MergedPages {
        let sources = keys
            .into_iter()
            .map(|key| Source {
                pages: RankPages::new(key, until),
                buffer: Default::default(),
                done: false,
            })
            .collect();
        MergedPages { sources }
    }

    /// Up to `want` more members in score order over all the sets; `None` at the end.
    pub fn next(
        &mut self,
        a: &mut Admin,
        want: usize,
    ) -> Result<Option<Vec<(usize, Scored)>>, Error> {
        let want = want.min(PAGE);
        let mut out = Vec::new();
        while out.len() < want {
            for s in &mut self.sources {
                if s.buffer.is_empty() && !s.done {
                    match s.pages.next(a, PAGE)? {
                        Some(page) => s.buffer.extend(page),
                        None => s.done = true,
                    }
                }
            }
            let best = self
                .sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.buffer.front().map(|(_, score)| (i, *score)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let Some((i, _)) = best else {
                break;
            };
            if let Some(next) = self.sources[i].buffer.pop_front() {
                out.push((i, next));
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}
