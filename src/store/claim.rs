//! The claim script's reply, parsed once into types (see `scripts/claim.lua` for its
//! layout). A line that cannot be parsed is an error naming its job, never a silent
//! zero: a job whose line is bad is handed back as [`BadClaim`], to be set aside,
//! while the rest of the batch goes on.

use std::fmt;

use redis::{RedisError, Value};

use crate::job::job_id;

/// A score as Redis wrote it, beside its value: writing back `text` (a release)
/// puts a job back exactly where it was, with no float round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    text: String,
    value: f64,
}

impl Score {
    /// Parses Redis's text of a score; `None` when it is not a number. A score below 0
    /// (`-inf` included) counts as 0, the Unix epoch, as in `claim.lua`: the due header,
    /// the lateness and the records stay finite. The text is kept as it was, so that a
    /// release writes the job back exactly where it was.
    pub fn parse(text: &str) -> Option<Score> {
        let value: f64 = text.trim().parse().ok()?;
        (!value.is_nan()).then(|| Score {
            text: text.to_string(),
            value: value.max(0.0),
        })
    }

    /// A new score for Unix seconds, at Redis's microsecond resolution.
    pub fn at(unix: f64) -> Score {
        Score {
            text: format!("{unix:.6}"),
            value: unix,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Unix seconds.
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// What a claim wrote into the attempts hash for one job (`"<n>:<first due>
/// <token>"`); an outcome must present it, so that a late outcome never undoes
/// another daemon's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken(String);

impl LeaseToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub fn for_test(text: &str) -> LeaseToken {
        LeaseToken(text.into())
    }
}

/// An attempts-hash value as every writer leaves it (see `scripts/claim.lua`):
/// `"<n>:<first due> <token>"` while leased, `"<n>:<first due> @<score>"` while the job
/// waits in the queue, and the older `"<n>"` and `"<n>:<first due>"`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptsValue {
    /// Attempts made; for a leased value, counting the one under way.
    pub made: u32,
    /// Claimed: its attempt is under way or about to start.
    pub leased: bool,
    /// The queue score the job was left at after its last attempt, when recorded.
    pub queued_at: Option<f64>,
    /// When the job was first due, when recorded (not by the oldest daemons).
    pub first_due: Option<f64>,
    /// The claim token of a leased value: it names the claiming daemon.
    pub token: Option<String>,
}

impl AttemptsValue {
    /// Reads a value; what cannot be read counts as no attempt, as in the scripts.
    pub fn parse(value: &str) -> AttemptsValue {
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        let (head, rest) = match value.split_once(' ') {
            Some((head, rest)) => (head, Some(rest)),
            None => (value, None),
        };
        let leased = rest.is_some_and(|r| !r.starts_with('@'));
        AttemptsValue {
            made: value[..digits].parse().unwrap_or(0),
            leased,
            queued_at: rest
                .and_then(|r| r.strip_prefix('@'))
                .and_then(|s| s.parse().ok()),
            first_due: head
                .split_once(':')
                .and_then(|(_, first)| first.parse().ok()),
            token: rest.filter(|_| leased).map(str::to_string),
        }
    }

    /// The attempts made by the job now at queue score `score`: none when the score
    /// moved since the daemon left it there, for then a producer added it again and it
    /// is a new job (the claim script starts it at attempt 1).
    pub fn made_at(&self, score: f64) -> u32 {
        match self.queued_at {
            Some(at) if at != score => 0,
            _ => self.made,
        }
    }
}

/// A job taken out of the queue under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The member string exactly as the producer wrote it.
    pub member: Vec<u8>,
    /// SHA-1 hex of the member: the same for every attempt and every daemon.
    pub id: String,
    /// The score it had in the queue: when it was due.
    pub due: Score,
    /// 1 for the first attempt; counts survive restarts because they live in Redis.
    pub attempt: u32,
    pub lease: LeaseToken,
    /// When the job was first due, before any retry moved it.
    pub first_due: Score,
    /// The shard it was claimed from, where its outcome is written.
    pub shard: usize,
    /// The producer's own id it was scheduled under (`ids.lua`), if any.
    pub producer_id: Option<String>,
}

/// A claimed job whose reply line could not be read: it is leased like the others,
/// and is set aside with `problem` as its reason.
#[derive(Debug, Clone)]
pub struct BadClaim {
    pub member: Vec<u8>,
    pub id: String,
    pub lease: LeaseToken,
    pub problem: String,
}

/// A job the script itself set aside, without handing it to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetAside {
    /// Its skip condition held: dropped without a request (`field` is
    /// `skipIfExists` or `skipIfMissing`).
    Skipped {
        id: String,
        field: String,
        key: String,
    },
    /// Over `maxJobBytes`: recorded in the failed list with a printable prefix.
    Oversize { id: String, bytes: u64 },
    /// Its skip key may not be read (ACL, Cluster slot): recorded in the failed list.
    Unreadable { id: String, error: String },
}

/// What one call of the claim script saw and did.
#[derive(Debug)]
pub struct ClaimBatch {
    /// Redis's clock at the claim, Unix seconds.
    pub now: f64,
    /// The earliest score still in the queue.
    pub next_due: Option<Score>,
    /// Expired leases put back into the queue.
    pub recovered: u64,
    /// Due copies of members already in flight, merged into the attempt under way.
    pub merged: u64,
    pub set_aside: Vec<SetAside>,
    /// Indexes of the outcomes whose lease had already been taken back: they changed
    /// nothing.
    pub stale: Vec<usize>,
    pub jobs: Vec<Claimed>,
    pub bad: Vec<BadClaim>,
    /// Fresh jobs of full flows the script sent straight to their slots: per flow,
    /// how many and the flow's next slot after them.
    pub slotted: Vec<Slotted>,
    /// With `waitReplicas`: how many replicas had this call's writes within the wait.
    pub replicated: Option<u32>,
}

/// Jobs of one flow the claim sent to their slots (claim.lua's `deferred` lines).
#[derive(Debug, Clone, PartialEq)]
pub struct Slotted {
    pub flow: String,
    pub count: u64,
    pub next_slot: f64,
}

/// The reply as a whole does not have the script's layout: nothing in it can be
/// trusted (a script of another version, or a proxy that mangled it).
#[derive(Debug)]
pub struct BadReply(pub String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "claim.lua returned an unexpected reply: {}", self.0)
    }
}

impl From<BadReply> for RedisError {
    fn from(e: BadReply) -> RedisError {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "claim.lua returned an unexpected reply",
            e.0,
        ))
    }
}

const HEAD: usize = 7;
const PER_JOB: usize = 6;

/// Parses the reply of `claim.lua`.
pub fn parse(reply: Vec<Value>, shard: usize) -> Result<ClaimBatch, BadReply> {
    if reply.len() < HEAD || !(reply.len() - HEAD).is_multiple_of(PER_JOB) {
        return Err(BadReply(format!("{} values", reply.len())));
    }
    let mut it = reply.into_iter();
    let mut head = Vec::with_capacity(HEAD);
    for _ in 0..HEAD {
        head.push(bytes(it.next()).ok_or_else(|| BadReply("a header field is not text".into()))?);
    }
    let text = |i: usize| String::from_utf8_lossy(&head[i]).into_owned();
    let now = text(0)
        .parse::<f64>()
        .map_err(|_| BadReply(format!("the time {:?} is not a number", text(0))))?;
    let next_due = match text(1).as_str() {
        "" => None,
        t => Some(
            Score::parse(t)
                .ok_or_else(|| BadReply(format!("the next due score {t:?} is not a number")))?,
        ),
    };
    let count = |i: usize, what: &str| {
        text(i)
            .parse::<u64>()
            .map_err(|_| BadReply(format!("the {what} count {:?} is not a number", text(i))))
    };
    let recovered = count(2, "recovered")?;
    let merged = count(3, "merged")?;
    let set_aside = text(4)
        .lines()
        .map(set_aside_line)
        .collect::<Result<Vec<_>, _>>()?;
    let stale = text(5)
        .split(' ')
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .ok_or_else(|| BadReply(format!("stale outcome number {n:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let slotted = text(6)
        .lines()
        .map(|line| {
            let bad = || BadReply(format!("deferred line {line:?}"));
            let (count, rest) = line.split_once(' ').ok_or_else(bad)?;
            let (slot, flow) = rest.split_once(' ').ok_or_else(bad)?;
            Ok(Slotted {
                flow: flow.to_string(),
                count: count.parse().map_err(|_| bad())?,
                next_slot: slot.parse().map_err(|_| bad())?,
            })
        })
        .collect::<Result<Vec<_>, BadReply>>()?;
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    let rest: Vec<Value> = it.collect();
    for group in rest.chunks(PER_JOB) {
        let field = |i: usize| bytes(Some(group[i].clone()));
        let member = field(0).ok_or_else(|| BadReply("a member is not text".into()))?;
        let id = job_id(&member);
        let lease_text = field(3)
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .ok_or_else(|| BadReply(format!("job {id}: the lease is not text")))?;
        let lease = LeaseToken(lease_text);
        let producer_id = field(5)
            .filter(|id| !id.is_empty())
            .map(|id| String::from_utf8_lossy(&id).into_owned());
        match job_line(&field(1), &field(2), &field(4)) {
            Ok((due, attempt, first_due)) => jobs.push(Claimed {
                member,
                id,
                due,
                attempt,
                lease,
                first_due,
                shard,
                producer_id,
            }),
            Err(problem) => bad.push(BadClaim {
                member,
                id,
                lease,
                problem,
            }),
        }
    }
    Ok(ClaimBatch {
        now,
        next_due,
        recovered,
        merged,
        set_aside,
        stale,
        jobs,
        bad,
        slotted,
        replicated: None,
    })
}

/// A job's due score, attempt number and first due time, or what is wrong with them.
fn job_line(
    due: &Option<Vec<u8>>,
    attempt: &Option<Vec<u8>>,
    first_due: &Option<Vec<u8>>,
) -> Result<(Score, u32, Score), String> {
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let due = Score::parse(&text(due))
        .ok_or_else(|| format!("its due score {:?} is not a number", text(due)))?;
    let attempt = text(attempt)
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            format!(
                "its attempt count {:?} in the attempts hash is not a number from 1 to {}",
                text(attempt),
                u32::MAX
            )
        })?;
    let first_due = Score::parse(&text(first_due)).ok_or_else(|| {
        format!(
            "its first due time {:?} in the attempts hash is not a number",
            text(first_due)
        )
    })?;
    Ok((due, attempt, first_due))
}

/// "skip <id> <field> <key>", "oversize <id> <bytes>" or "unreadable <id> <error>".
fn set_aside_line(line: &str) -> Result<SetAside, BadReply> {
    let bad = || BadReply(format!("set-aside line {line:?}"));
    let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
    let (id, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let id = id.to_string();
    Ok(match kind {
        "skip" => {
            let (field, key) = rest.split_once(' ').ok_or_else(bad)?;
            SetAside::Skipped {
                id,
                field: field.into(),
                key: key.into(),
            }
        }
        "oversize" => SetAside::Oversize {
            id,
            bytes: rest.parse().map_err(|_| bad())?,
        },
        "unreadable" => SetAside::Unreadable {
            id,
            error: rest.into(),
        },
        _ => return Err(bad()),
    })
}

/// A bulk string or a number Lua turned into an integer reply, as bytes.
fn bytes(v: Option<Value>) -> Option<Vec<u8>> {
    match v? {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn reply(head: [&str; 6], jobs: &[[&str; 6]]) -> Vec<Value> {
        let mut v: Vec<Value> = head.iter().map(|s| bulk(s)).collect();
        v.push(bulk("")); // nothing sent to a flow's slot
        for j in jobs {
            v.push(bulk(j[0]));
            v.push(bulk(j[1]));
            v.push(Value::Int(j[2].parse().unwrap_or(-1)));
            v.push(bulk(j[3]));
            v.push(bulk(j[4]));
            v.push(bulk(j[5]));
        }
        v
    }

    #[test]
    fn a_whole_reply_parses_into_types() {
        let r = reply(
            [
                "1700000000.250000",
                "1700000005.5",
                "2",
                "1",
                "skip ab skipIfExists order:1:paid\noversize cd 2000000\nunreadable ef skipIfMissing x cannot be read: NOPERM",
                "1 3",
            ],
            &[[
                "{\"callback\":\"http://h/\"}",
                "1699999999.123456789",
                "2",
                "2:1699999000 t.1",
                "1699999000",
                "order:42:close",
            ]],
        );
        let b = parse(r, 0).unwrap();
        assert_eq!(b.now, 1_700_000_000.25);
        assert_eq!(b.next_due.unwrap().value(), 1_700_000_005.5);
        assert_eq!((b.recovered, b.merged), (2, 1));
        assert_eq!(b.stale, [0, 2]);
        assert_eq!(
            b.set_aside,
            [
                SetAside::Skipped {
                    id: "ab".into(),
                    field: "skipIfExists".into(),
                    key: "order:1:paid".into()
                },
                SetAside::Oversize {
                    id: "cd".into(),
                    bytes: 2_000_000
                },
                SetAside::Unreadable {
                    id: "ef".into(),
                    error: "skipIfMissing x cannot be read: NOPERM".into()
                },
            ]
        );
        let j = &b.jobs[0];
        assert_eq!(
            j.due.text(),
            "1699999999.123456789",
            "the exact text is kept"
        );
        assert_eq!((j.attempt, j.first_due.value()), (2, 1_699_999_000.0));
        assert_eq!(j.lease.as_str(), "2:1699999000 t.1");
        assert_eq!(j.id, job_id(b"{\"callback\":\"http://h/\"}"));
        assert_eq!(j.producer_id.as_deref(), Some("order:42:close"));
        assert!(b.bad.is_empty());
    }

    #[test]
    fn a_bad_job_line_names_the_job_and_spares_the_batch() {
        let r = reply(
            ["1.0", "", "0", "0", "", ""],
            &[
                ["good", "1.5", "1", "1:1.5 t.1", "1.5", ""],
                ["bad", "1.5", "1", "1:oops t.2", "oops", ""],
                ["huge", "1.5", "4294967296", "x", "1.5", "x"],
            ],
        );
        let b = parse(r, 0).unwrap();
        assert_eq!(b.jobs.len(), 1);
        assert_eq!(b.jobs[0].producer_id, None, "\"\" is no id");
        assert_eq!(b.bad.len(), 2);
        assert_eq!(b.bad[0].id, job_id(b"bad"));
        assert!(
            b.bad[0].problem.contains("first due time \"oops\""),
            "{}",
            b.bad[0].problem
        );
        assert!(
            b.bad[1].problem.contains("attempt count"),
            "{}",
            b.bad[1].problem
        );
        assert!(b.next_due.is_none());
    }

    #[test]
    fn every_form_of_the_attempts_value_reads() {
        let read = |v: &str| {
            let a = AttemptsValue::parse(v);
            (a.made, a.leased, a.queued_at)
        };
        assert_eq!(read("2:1.5 tok.3"), (2, true, None));
        assert_eq!(read("2:1.5 @9.25"), (2, false, Some(9.25)));
        assert_eq!(read("0:1.5 @-inf"), (0, false, Some(f64::NEG_INFINITY)));
        assert_eq!(read("3:1.5"), (3, false, None));
        assert_eq!(read("3"), (3, false, None));
        assert_eq!(read("junk"), (0, false, None));
        let leased = AttemptsValue::parse("2:1.5 tok.3");
        assert_eq!(
            (leased.first_due, leased.token.as_deref()),
            (Some(1.5), Some("tok.3"))
        );
        let waiting = AttemptsValue::parse("0:-inf @-inf");
        assert_eq!(
            (waiting.first_due, waiting.token),
            (Some(f64::NEG_INFINITY), None)
        );
        assert_eq!(AttemptsValue::parse("3").first_due, None);
        let waiting = AttemptsValue::parse("2:1.5 @9.25");
        assert_eq!(waiting.made_at(9.25), 2);
        assert_eq!(waiting.made_at(10.0), 0, "re-added by a producer");
        assert_eq!(AttemptsValue::parse("2:1.5").made_at(10.0), 2);
    }

    #[test]
    fn a_negative_score_counts_as_the_epoch_but_keeps_its_text() {
        for text in ["-inf", "-1e300", "-5"] {
            let s = Score::parse(text).unwrap();
            assert_eq!((s.value(), s.text()), (0.0, text));
        }
        assert!(Score::parse("nan").is_none());
    }

    #[test]
    fn a_reply_of_the_wrong_shape_is_refused() {
        assert!(parse(vec![bulk("1")], 0).is_err());
        assert!(parse(reply(["soon", "", "0", "0", "", ""], &[]), 0).is_err());
        assert!(parse(reply(["1", "", "0", "0", "what is this", ""], &[]), 0).is_err());
    }
}
