//! Running our Lua scripts: `EVALSHA`, and on `NOSCRIPT` (a restarted or new node)
//! `EVAL` with the source, which also caches it there.
//!
//! Rather than redis-rs's `Script::invoke`, which answers `NOSCRIPT` with a
//! `SCRIPT LOAD`: on a Redis Cluster that goes to every node, replicas included, and
//! fails while any one of them is unreachable. `EVAL` is routed by its first key, like
//! `EVALSHA`, to the one node that owns the slot.

use redis::{
    Cmd, ConnectionLike, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs,
};

/// A script and its SHA-1, which Redis knows it by.
pub struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    pub fn new(source: &'static str) -> Lua {
        Lua {
            source,
            sha: sha1_smol::Sha1::from(source).hexdigest(),
        }
    }

    pub fn prepare_invoke(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn key<T: ToRedisArgs>(&self, key: T) -> Call<'_> {
        let mut call = self.prepare_invoke();
        call.key(key);
        call
    }
}

/// One call of a script: its keys and arguments.
pub struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    pub fn invoke<T: FromRedisValue>(&self, con: &mut dyn ConnectionLike) -> RedisResult<T> {
        match self.cmd("EVALSHA", self.lua.sha.as_bytes()).query(con) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.cmd("EVAL", self.lua.source.as_bytes()).query(con)
            }
            result => result,
        }
    }

    fn cmd(&self, verb: &str, script: &[u8]) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}
