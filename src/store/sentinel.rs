//! Finding the master through Redis Sentinel, and noticing when it moves.
//!
//! Our own fifty lines rather than redis-rs's `sentinel` feature: its blocking client
//! connects to sentinels and masters without a timeout, so one blackholed node would
//! stall the main loop for the kernel's connect timeout (minutes), and it does not
//! follow a failover once it has handed out a connection (redis-rs#1438). Here every
//! connection has `redisTimeoutMs`, the master found is checked with `ROLE`, and the
//! store asks the sentinels again about once a second, so a switch is seen within
//! about a second of Sentinel making it, not when the old master starts refusing
//! writes.

use std::time::Duration;

use redis::{Client, Connection, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};

use crate::config::SentinelSettings;

/// Where the master is: an address as the sentinels report it.
pub type Addr = (String, u16);

pub struct Sentinel {
    sentinels: Vec<ConnectionInfo>,
    /// The master's name, as the sentinels know it.
    name: String,
    /// How to talk to a data node: scheme, credentials, db; the address is filled in.
    template: ConnectionInfo,
    timeout: Duration,
    /// A connection to the sentinel that answered last, and which one it is.
    asked: Option<(usize, Connection)>,
    /// The sentinel to ask next when none is connected.
    next: usize,
}

impl Sentinel {
    /// `ca_pem` (`redisCaFile`) verifies TLS data nodes and sentinels.
    pub fn new(
        settings: &SentinelSettings,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> RedisResult<Sentinel> {
        let info = |url: &str| -> RedisResult<ConnectionInfo> {
            match ca_pem {
                None => url.into_connection_info(),
                Some(pem) => Ok(Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.to_vec()),
                    },
                )?
                .get_connection_info()
                .clone()),
            }
        };
        let sentinels = settings
            .sentinels
            .iter()
            .map(|url| info(url))
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Sentinel {
            sentinels,
            name: settings.master_name.clone(),
            template: info(&settings.master_url)?,
            timeout,
            asked: None,
            next: 0,
        })
    }

    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// Asks the sentinels, the one that answered last first, where the master is.
    pub fn master_addr(&mut self) -> RedisResult<Addr> {
        let mut last_error = None;
        for _ in 0..self.sentinels.len() {
            match self.ask_next() {
                Ok(addr) => return Ok(addr),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Io, "no sentinel configured"))
        }))
    }

    /// Asks one sentinel: the one that answered last, else the next in turn (a failed
    /// one is not asked again first). This is what the store's once-a-second check
    /// uses, so that sentinels gone quiet cost one short timeout, not one per sentinel.
    pub fn ask_next(&mut self) -> RedisResult<Addr> {
        let i = match &self.asked {
            Some((i, _)) => *i,
            None => self.next % self.sentinels.len(),
        };
        let result = self.ask(i);
        if result.is_err() {
            self.asked = None;
            self.next = i + 1;
        }
        result
    }

    fn ask(&mut self, i: usize) -> RedisResult<Addr> {
        if !matches!(&self.asked, Some((j, _)) if *j == i) {
            // A sentinel answers from memory: a second is plenty, and bounds what a
            // blackholed one costs the loop.
            let timeout = self.timeout.min(Duration::from_secs(1));
            self.asked = Some((i, open(self.sentinels[i].clone(), timeout)?));
        }
        let Some((_, con)) = self.asked.as_mut() else {
            unreachable!("set above");
        };
        let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.name)
            .query(con)?;
        reply.ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "the sentinel does not know this master name",
                self.name.clone(),
            ))
        })
    }

    /// Connects to the master the sentinels name, and checks that it says it is one:
    /// a node being demoted or not yet promoted is refused, to be asked about again.
    pub fn connect(&mut self) -> RedisResult<(Connection, Addr)> {
        let addr = self.master_addr()?;
        let info = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: addr.0.clone(),
                port: addr.1,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(addr.0.clone(), addr.1),
        };
        let mut con = open(self.template.clone().set_addr(info), self.timeout)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con)?;
        let role = match role.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        if role != "master" {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the node the sentinels name as master is not one yet",
                format!("{}:{} says it is a {role}", addr.0, addr.1),
            )));
        }
        Ok((con, addr))
    }
}

/// A connection with `timeout` on the connect, every read and every write.
pub fn open(info: ConnectionInfo, timeout: Duration) -> RedisResult<Connection> {
    let con = Client::open(info)?.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}
