//! Jobs by the producer's own id (`scripts/ids.lua`): as a Redis Functions library
//! (Redis 7+, Valkey), and as the same script run with `EVAL`/`EVALSHA` where the
//! server has no Functions (Redis 6, KeyDB, Dragonfly, some managed services).
//!
//! The library is built here from `ids.lua` itself: each function runs that one body
//! with its operation put first in `ARGV`, so the plain script and the library can
//! never disagree. `VERSION` goes up whenever `ids.lua` changes what it does: a daemon
//! replaces a library older than its own, and leaves a newer one alone.

use redis::cluster_routing::{AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{ConnectionLike, RedisError, RedisResult, Value};

use crate::config::ShardKeys;
use crate::store::connection::Conn;
use crate::store::script::Lua;

/// The library's version, as `FCALL delayqs_version 0` answers it.
pub const VERSION: i64 = 2;

/// The plain script: `EVALSHA <sha> 4 <queue> <inflight> <attempts> <queue>:ids <op> ...`.
pub const SCRIPT: &str = include_str!("scripts/ids.lua");

/// The library, for `FUNCTION LOAD REPLACE`. Put together when needed rather than with
/// `concat!` at build time, which embedded a second copy of `ids.lua` (18 KB) in a
/// binary near its size budget.
pub fn library() -> String {
    format!(
        "#!lua name=delayqs
-- Built by delayqs from src/store/scripts/ids.lua (below, whole): each function
-- runs it with its operation as ARGV[1]. Version {VERSION}.
local function ids(KEYS, ARGV)
{SCRIPT}
end

local function op(name)
  return function(keys, args)
    return ids(keys, {{name, unpack(args)}})
  end
end
redis.register_function('delayqs_schedule', op('schedule'))
redis.register_function('delayqs_move', op('move'))
redis.register_function('delayqs_cancel', op('cancel'))
redis.register_function{{function_name = 'delayqs_state', callback = op('state'),
  flags = {{'no-writes'}}}}
redis.register_function{{function_name = 'delayqs_version',
  callback = function() return {VERSION} end, flags = {{'no-writes'}}}}
"
    )
}

/// What was found of the library on the server, and what was done.
#[derive(Debug, PartialEq, Eq)]
pub enum Library {
    /// It was loaded: missing, or older (`was`).
    Loaded { was: Option<i64> },
    /// This version, or a newer one, is there already.
    Present(i64),
    /// The server has no Functions: producers use the plain script.
    NoFunctions(String),
    /// The server refused to load it (an ACL, a managed service).
    Refused(String),
}

impl Library {
    /// A line for the log or the operator.
    pub fn describe(&self) -> String {
        match self {
            Library::Loaded { was: None } => {
                format!("loaded the delayqs Functions library, version {VERSION}")
            }
            Library::Loaded { was: Some(v) } => {
                format!("replaced the delayqs Functions library version {v} by version {VERSION}")
            }
            Library::Present(v) => format!("the delayqs Functions library version {v} is loaded"),
            Library::NoFunctions(why) => format!(
                "this server has no Functions ({why}): producers schedule by id with the plain script (`delayqs functions script`, EVAL/EVALSHA)"
            ),
            Library::Refused(why) => format!(
                "could not load the delayqs Functions library ({why}); the daemon tries again on its next connection, `delayqs functions load` loads it by hand (as a user allowed FUNCTION LOAD), and meanwhile producers can use the plain script"
            ),
        }
    }
}

fn no_functions(e: &RedisError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("unknown command") || text.contains("unknown subcommand")
}

fn function_missing(e: &RedisError) -> bool {
    e.to_string()
        .to_ascii_lowercase()
        .contains("function not found")
}

/// Trouble reaching Redis, or a refusal that passes (a full Redis, a busy script, a
/// node loading or failing over): an error of the round, which the loop reports and
/// retries as any other, not a verdict on the library.
fn unreachable(e: &RedisError) -> bool {
    let passing = [
        "OOM",
        "BUSY",
        "LOADING",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "READONLY",
        "MOVED",
        "ASK",
    ];
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.code().is_some_and(|c| passing.contains(&c))
}

/// Loads the library unless this version or a newer one is there; `force` loads it
/// whatever is there. On a Cluster the version is read from every master (the lowest
/// counts) and the library loaded on every master. Only trouble reaching Redis is an
/// error; a refusal is an answer.
pub fn ensure(con: &mut Conn, force: bool) -> RedisResult<Library> {
    let mut fcall = redis::cmd("FCALL");
    fcall.arg("delayqs_version").arg(0);
    let found: RedisResult<i64> = match con {
        Conn::Node(node) => fcall.query(node),
        Conn::Cluster(cluster) => {
            let all = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::Aggregate(AggregateOp::Min)),
            ));
            cluster
                .route_command(&fcall, all)
                .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
        }
    };
    let was = match found {
        Ok(v) if v >= VERSION && !force => return Ok(Library::Present(v)),
        Ok(v) => Some(v),
        Err(e) if unreachable(&e) => return Err(e),
        Err(e) if no_functions(&e) => return Ok(Library::NoFunctions(e.to_string())),
        Err(e) if function_missing(&e) => None,
        Err(e) => return Ok(Library::Refused(e.to_string())),
    };
    // redis-rs sends FUNCTION LOAD to every master of a Cluster, and fails unless all
    // of them took it.
    let loaded: RedisResult<String> = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library())
        .query(con);
    match loaded {
        Ok(_) => Ok(Library::Loaded { was }),
        Err(e) if unreachable(&e) => Err(e),
        Err(e) if no_functions(&e) => Ok(Library::NoFunctions(e.to_string())),
        Err(e) => Ok(Library::Refused(e.to_string())),
    }
}

/// Runs one operation of `ids.lua` on a shard (`schedule`, `move`, `cancel`, `state`):
/// the library's function where the server has it, the plain script otherwise.
pub fn call(
    con: &mut dyn ConnectionLike,
    keys: &ShardKeys,
    op: &str,
    args: &[&str],
) -> RedisResult<Value> {
    let names = [&keys.queue, &keys.inflight, &keys.attempts, &keys.index_key];
    let mut fcall = redis::cmd("FCALL");
    fcall
        .arg(format!("delayqs_{op}"))
        .arg(names.len())
        .arg(&names[..])
        .arg(args);
    match fcall.query(con) {
        Err(e) if no_functions(&e) || function_missing(&e) => {
            let script = Lua::new(SCRIPT);
            let mut call = script.prepare_invoke();
            for name in names {
                call.key(name);
            }
            call.arg(op).arg(args).invoke(con)
        }
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-1 of `ids.lua` that `VERSION` was set for. A server keeps a library
    /// whose version is not older than the daemon's, so a change loaded without a new
    /// version would never reach servers that have the old one.
    const PINNED: (i64, &str) = (2, "2762069e65e7c7d214048ae9042a2762c8bcacac");

    #[test]
    fn a_change_to_ids_lua_comes_with_a_new_version() {
        let sha = crate::job::job_id(SCRIPT.as_bytes());
        let next = PINNED.0 + 1;
        assert_eq!(
            (VERSION, sha.as_str()),
            PINNED,
            "ids.lua (or VERSION) changed: bump VERSION to {next}, then pin ({next}, \"{sha}\") here"
        );
    }

    #[test]
    fn the_library_carries_its_version_and_the_whole_script() {
        let library = library();
        assert!(library.starts_with("#!lua name=delayqs\n"));
        assert!(library.contains(SCRIPT));
        let answer = format!("callback = function() return {VERSION} end");
        assert!(library.contains(&answer));
        assert!(library.contains(&format!("Version {VERSION}.")));
    }
}
