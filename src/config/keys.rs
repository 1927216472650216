//! The Redis key names, and how one queue spreads over shards.
//!
//! A shard is one set of the four keys a script touches (queue, in-flight set,
//! attempts hash, failed list), all in one hash slot. Shard 0 is the configured names
//! themselves, so `shards: 1` is the single queue of old and an old producer that
//! writes `key` is always claimed from. Shard `i` ≥ 1 is the same names with the hash
//! tag `{T}` made `{T:i}`: each shard hashes to its own slot, so on a Cluster the
//! shards spread over the masters. A producer puts a job in shard
//! `int(sha1(member)[0..8], 16) % shards` (the job id's first 8 hex digits), which any
//! language computes in one line and which `delayqs` finds again from the id alone.

use crate::job::job_id;

/// The most shards a queue may have; the daemon and the admin commands look this far
/// for shards a larger `shards` setting left behind.
pub const MAX_SHARDS: usize = 64;

/// The Redis keys delayqs reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Sorted set of pending jobs, written by producers (`key`).
    pub queue: String,
    /// Sorted set of claimed jobs, scored by lease deadline (`inflightKey`).
    pub inflight: String,
    /// Hash of attempt counts per member (`attemptsKey`).
    pub attempts: String,
    /// List of jobs that failed for good (`failKey`).
    pub failed: String,
    /// The old daemon's retry list (`retryIdKey`); only inspected at start-up.
    pub old_retry_ids: String,
    /// The old daemon's job hash (`bodyKey`); only inspected at start-up.
    pub old_bodies: String,
    /// `shards`: how many sets of the four keys one queue spreads over.
    pub shards: usize,
}

/// One shard's keys: every key one script call touches, in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKeys {
    /// The shard's number: 0 is the configured names.
    pub index: usize,
    pub queue: String,
    pub inflight: String,
    pub attempts: String,
    pub failed: String,
    /// The producer-id index (`store/scripts/ids.lua`): `<queue>:ids`, named after the
    /// shard's queue so that it shares its slot.
    pub index_key: String,
}

impl Keys {
    /// The names of shard `index` (any up to [`MAX_SHARDS`], in use or not).
    pub fn shard(&self, index: usize) -> ShardKeys {
        let name = |key: &str| shard_name(key, index);
        ShardKeys {
            index,
            index_key: format!("{}:ids", name(&self.queue)),
            queue: name(&self.queue),
            inflight: name(&self.inflight),
            attempts: name(&self.attempts),
            failed: name(&self.failed),
        }
    }

    /// Hash of the daemons serving this queue: id → `"<expires> <JSON record>"`,
    /// rewritten by each daemon every 2 s; `delayqs daemons` reads it. Named after
    /// `key`, so on a Cluster it shares shard 0's slot.
    pub fn daemons(&self) -> String {
        format!("{}:daemons", self.queue)
    }

    /// Set while the queue is paused (`delayqs pause`): a JSON note of who and when.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.queue)
    }

    /// Hash of the flows an operator paused (`delayqs pause --host`): host or flow key
    /// -> a JSON note of who and when.
    pub fn paused_flows(&self) -> String {
        format!("{}:paused_flows", self.queue)
    }

    /// A flow's parked set in one shard: the jobs claimed while it was paused, member ->
    /// due score (claim.lua writes it, unpark.lua empties it).
    pub fn parked(shard_queue: &str, flow: &str) -> String {
        format!("{shard_queue}:parked:{flow}")
    }

    /// The highest `shards` any daemon has run this queue with: only shards below it
    /// are looked for beyond the setting (a key that merely looks like a shard's name
    /// is someone else's).
    pub fn shards_record(&self) -> String {
        format!("{}:shards", self.queue)
    }

    /// The shard a member belongs in by the producers' rule.
    pub fn shard_of_member(&self, member: &[u8]) -> usize {
        shard_of_id(&job_id(member), self.shards)
    }

    /// The shard of a producer's own id: by the SHA-1 of the id, not of the member, so
    /// that every operation on one id finds the same shard whatever the job holds.
    pub fn shard_of_producer_id(&self, id: &str) -> usize {
        shard_of_id(&job_id(id.as_bytes()), self.shards)
    }
}

/// The producers' rule: the job id's first 8 hex digits as a number, modulo `shards`.
/// An id too short or not hex (never one delayqs made) goes to shard 0.
pub fn shard_of_id(id: &str, shards: usize) -> usize {
    let head = id.get(..8).unwrap_or("");
    match u32::from_str_radix(head, 16) {
        Ok(n) if shards > 0 => n as usize % shards,
        _ => 0,
    }
}

/// `key` as named in shard `index`: itself for shard 0, its hash tag `{T}` made
/// `{T:index}` otherwise. A name without a tag (allowed only with one shard) gets
/// `:index` at the end.
pub fn shard_name(key: &str, index: usize) -> String {
    if index == 0 {
        return key.to_string();
    }
    match tag_span(key) {
        Some((_, close)) => format!("{}:{index}{}", &key[..close], &key[close..]),
        None => format!("{key}:{index}"),
    }
}

/// The hash tag of a key name, as Redis Cluster hashes it: the text between the first
/// `{` and the next `}`, when not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    tag_span(key).map(|(open, close)| &key[open + 1..close])
}

/// Where the hash tag's braces are: the first `{` and the `}` after it, with text
/// between.
fn tag_span(key: &str) -> Option<(usize, usize)> {
    let open = key.find('{')?;
    let close = open + 1 + key[open + 1..].find('}')?;
    (close > open + 1).then_some((open, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(shards: usize) -> Keys {
        Keys {
            queue: "{DelayQs}:job_zqueue".into(),
            inflight: "{DelayQs}:inflight".into(),
            attempts: "{DelayQs}:attempts".into(),
            failed: "{DelayQs}:fail_job".into(),
            old_retry_ids: "DelayQs:retry_id".into(),
            old_bodies: "DelayQs:body".into(),
            shards,
        }
    }

    #[test]
    fn shard_zero_is_the_configured_names_and_the_rest_change_only_the_tag() {
        let k = keys(3);
        assert_eq!(k.shard(0).queue, "{DelayQs}:job_zqueue");
        let two = k.shard(2);
        assert_eq!(two.queue, "{DelayQs:2}:job_zqueue");
        assert_eq!(two.inflight, "{DelayQs:2}:inflight");
        assert_eq!(two.attempts, "{DelayQs:2}:attempts");
        assert_eq!(two.failed, "{DelayQs:2}:fail_job");
        assert_eq!(two.index_key, "{DelayQs:2}:job_zqueue:ids");
        assert_eq!(k.shard(0).index_key, "{DelayQs}:job_zqueue:ids");
        assert_eq!(two.index_key, "{DelayQs:2}:job_zqueue:ids");
        assert_eq!(k.shard(0).index_key, "{DelayQs}:job_zqueue:ids");
        assert_eq!(hash_tag(&two.failed), Some("DelayQs:2"));
        assert_eq!(shard_name("app:{q}:jobs", 1), "app:{q:1}:jobs");
        assert_eq!(shard_name("jobs", 1), "jobs:1");
        assert_eq!(shard_name("{}jobs", 1), "{}jobs:1");
    }

    #[test]
    fn the_rule_is_the_ids_first_eight_hex_digits_modulo_shards() {
        // sha1("a") = 86f7e437…: 0x86f7e437 = 2264392759, % 3 = 1, % 7 = 6.
        assert_eq!(job_id(b"a"), "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8");
        assert_eq!(keys(3).shard_of_member(b"a"), 1);
        assert_eq!(keys(7).shard_of_member(b"a"), 6);
        assert_eq!(keys(1).shard_of_member(b"a"), 0);
        assert_eq!(shard_of_id("86f7e437", 3), 1);
        assert_eq!(shard_of_id("zz", 3), 0);
        // By the id's own SHA-1: sha1("a") again.
        assert_eq!(keys(3).shard_of_producer_id("a"), 1);
        // By the id's own SHA-1: sha1("a") again.
        assert_eq!(keys(3).shard_of_producer_id("a"), 1);
    }

    #[test]
    fn hash_tags_as_redis_reads_them() {
        assert_eq!(hash_tag("{a}b"), Some("a"));
        assert_eq!(hash_tag("x{a}{b}"), Some("a"));
        assert_eq!(hash_tag("{}a"), None);
        assert_eq!(hash_tag("a{b"), None);
    }
}
