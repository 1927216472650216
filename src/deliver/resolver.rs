//! Name resolution for callbacks: IP literals without a lookup, names cached briefly,
//! and, with `denyPrivateNetworks`, every address that is not public dropped before
//! a connection is made. The check is on the addresses actually connected to, so a
//! public name that resolves to 127.0.0.1 or a cloud metadata address gets nowhere.
//!
//! ureq's own resolver runs every lookup, even of `127.0.0.1`, on a new thread when a
//! timeout is set (it always is here); that cost 8 % of the CPU of a burst.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a looked-up name is reused.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Names remembered at most; the cache is emptied past that.
const CACHE_MAX: usize = 1024;

#[derive(Debug, Default)]
pub struct CallbackResolver {
    deny_private: bool,
    system: DefaultResolver,
    cache: Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
}

/// The callback's host resolves to no public address and `denyPrivateNetworks` is on.
#[derive(Debug)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves only to loopback, private, link-local or metadata addresses, which denyPrivateNetworks refuses",
            self.0
        )
    }
}

impl std::error::Error for Denied {}

impl CallbackResolver {
    pub fn new(deny_private: bool) -> CallbackResolver {
        CallbackResolver {
            deny_private,
            ..CallbackResolver::default()
        }
    }

    fn lookup(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| ureq::Error::BadUri(uri.to_string()))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            let port = authority
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = authority.as_str().to_ascii_lowercase();
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addrs, _)) = cache.get(&key).filter(|(_, at)| at.elapsed() < CACHE_TTL) {
            return Ok(addrs.clone());
        }
        drop(cache); // not held across a lookup that may take seconds
        let addrs: Vec<SocketAddr> = self
            .system
            .resolve(uri, config, timeout)?
            .iter()
            .copied()
            .collect();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

impl Resolver for CallbackResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for addr in self.lookup(uri, config, timeout)? {
            if !self.deny_private || is_public(addr.ip()) {
                out.push(addr);
            }
        }
        if out.is_empty() {
            let host = uri
                .authority()
                .map_or(String::new(), |a| a.host().to_string());
            return Err(ureq::Error::Other(Box::new(Denied(host))));
        }
        Ok(out)
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local
/// (which holds the cloud metadata address 169.254.169.254), shared, multicast or
/// otherwise reserved. IPv4 inside IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped().or_else(|| nat64(v6)) {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 among them
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))) // benchmarking
}

/// The IPv4 address inside a NAT64 address (64:ff9b::/96).
fn nat64(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0])
        .then(|| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(blocked.parse().unwrap()), "{blocked}");
        }
        for open in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(open.parse().unwrap()), "{open}");
        }
    }
}
