//! `flowControl`: how hard delayqs may press one callback host.
//!
//! ```json
//! "flowControl": {
//!   "default": {"concurrency": 16},
//!   "hosts": [{"match": "shop.example", "concurrency": 4, "perSecond": 50, "burst": 20}],
//!   "flows": {"payments": {"perSecond": 10}}
//! }
//! ```
//!
//! Every host is its own flow with the limits of the first `hosts` entry that matches
//! it (a pattern as in `allowedCallbacks`: `shop.example`, `*.shop.example`, either with
//! `:port`), else `default`'s. A job with a `flowKey` is in that flow instead, limited by
//! `flows[flowKey]` (else `default`). A field an entry leaves out is `default`'s; a
//! limit of 0 is none. The limits hold for the whole fleet on one queue: each daemon
//! takes its share (`dispatch::flow`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::Problem;
use crate::deliver::allowlist::Allowed;
use crate::job::callback::Callback;

/// The most calls per second a limit may name.
const MAX_RATE: f64 = 1_000_000.0;

/// One flow's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The most calls under way at once (`concurrency`).
    pub concurrency: Option<u32>,
    /// The most calls started per second (`perSecond`), on average.
    pub rate: Option<f64>,
    /// How many calls may start at once after a quiet spell (`burst`): the token
    /// bucket's size. At least 1.
    pub burst: u32,
}

impl Limits {
    pub const NONE: Limits = Limits {
        concurrency: None,
        rate: None,
        burst: 1,
    };

    pub fn is_none(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowControl {
    pub default: Limits,
    pub hosts: Vec<(Allowed, Limits)>,
    pub flows: BTreeMap<String, Limits>,
    /// `adaptive` (default true): 429, 503, timeouts and refused connections slow a
    /// flow down below its limit, and calls that succeed bring it back.
    pub adaptive: bool,
}

impl Default for FlowControl {
    fn default() -> FlowControl {
        FlowControl {
            default: Limits::NONE,
            hosts: Vec::new(),
            flows: BTreeMap::new(),
            adaptive: true,
        }
    }
}

impl FlowControl {
    /// The limits of a flow: its `flowKey`'s, else its host's.
    pub fn limits(&self, flow_key: Option<&str>, callback: &Callback) -> Limits {
        if let Some(key) = flow_key {
            return self.flows.get(key).copied().unwrap_or(self.default);
        }
        self.hosts
            .iter()
            .find(|(pattern, _)| pattern.lets(callback))
            .map_or(self.default, |(_, limits)| *limits)
    }

    /// Reads `flowControl`; a problem names the key path (`flowControl.hosts[1].burst`).
    pub fn parse(value: Value) -> Result<FlowControl, Problem> {
        const KEY: &str = "flowControl";
        let Value::Object(mut top) = value else {
            return Err(Problem::key(KEY, "must be an object"));
        };
        let default = match top.remove("default") {
            None => Limits::NONE,
            Some(v) => limits(v, Limits::NONE, "flowControl.default")?,
        };
        let adaptive = match top.remove("adaptive") {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(v) => {
                return Err(Problem::key(
                    "flowControl.adaptive",
                    format!("must be true or false, got {v}"),
                ));
            }
        };
        let mut hosts = Vec::new();
        match top.remove("hosts") {
            None => {}
            Some(Value::Array(entries)) => {
                for (i, entry) in entries.into_iter().enumerate() {
                    let at = format!("flowControl.hosts[{i}]");
                    let Value::Object(mut entry) = entry else {
                        return Err(Problem::key(&at, "must be an object with `match`"));
                    };
                    let pattern = match entry.remove("match") {
                        Some(Value::String(p)) => p,
                        _ => {
                            return Err(Problem::key(
                                &format!("{at}.match"),
                                "must name the host, as in `allowedCallbacks` (shop.example, *.shop.example, with :port or not)",
                            ));
                        }
                    };
                    let pattern = match Allowed::parse(&pattern) {
                        Ok(p @ Allowed::Host { .. }) => p,
                        Ok(Allowed::Prefix(_)) => {
                            return Err(Problem::key(
                                &format!("{at}.match"),
                                format!(
                                    "{pattern:?}: a flow is a host, not a URL prefix; write the host alone"
                                ),
                            ));
                        }
                        Err(e) => return Err(Problem::key(&format!("{at}.match"), e)),
                    };
                    hosts.push((pattern, limits(Value::Object(entry), default, &at)?));
                }
            }
            Some(_) => {
                return Err(Problem::key(
                    "flowControl.hosts",
                    "must be a list of {\"match\": host, limits}",
                ));
            }
        }
        let mut flows = BTreeMap::new();
        match top.remove("flows") {
            None => {}
            Some(Value::Object(entries)) => {
                for (name, v) in entries {
                    let at = format!("flowControl.flows.{name}");
                    if name.is_empty() || name.len() > 200 {
                        return Err(Problem::key(&at, "a flow key is 1 to 200 bytes"));
                    }
                    flows.insert(name, limits(v, default, &at)?);
                }
            }
            Some(_) => {
                return Err(Problem::key(
                    "flowControl.flows",
                    "must be an object: flowKey -> limits",
                ));
            }
        }
        if let Some(k) = top.keys().next() {
            return Err(Problem::key(
                &format!("flowControl.{k}"),
                "unknown; expected default, hosts, flows or adaptive",
            ));
        }
        Ok(FlowControl {
            default,
            hosts,
            flows,
            adaptive,
        })
    }
}

/// One entry's limits; what it leaves out is `base`'s.
fn limits(value: Value, base: Limits, at: &str) -> Result<Limits, Problem> {
    let Value::Object(mut m) = value else {
        return Err(Problem::key(
            at,
            "must be an object of concurrency, perSecond, burst",
        ));
    };
    let key = |k: &str| format!("{at}.{k}");
    let concurrency = match take_number(&mut m, "concurrency", at)? {
        None => base.concurrency,
        Some(n) if n.fract() == 0.0 && (0.0..=100_000.0).contains(&n) => {
            (n > 0.0).then_some(n as u32)
        }
        Some(n) => {
            return Err(Problem::key(
                &key("concurrency"),
                format!("must be a whole number from 0 (no limit) to 100000, got {n}"),
            ));
        }
    };
    let rate = match take_number(&mut m, "perSecond", at)? {
        None => base.rate,
        Some(n) if (0.0..=MAX_RATE).contains(&n) => (n > 0.0).then_some(n),
        Some(n) => {
            return Err(Problem::key(
                &key("perSecond"),
                format!("must be from 0 (no limit) to {MAX_RATE}, got {n}"),
            ));
        }
    };
    let burst = match take_number(&mut m, "burst", at)? {
        // One second's worth by default: a quiet flow may start that many at once.
        None => rate.map_or(1, |r| r.ceil().max(1.0) as u32),
        Some(n) if n.fract() == 0.0 && (1.0..=MAX_RATE).contains(&n) => n as u32,
        Some(n) => {
            return Err(Problem::key(
                &key("burst"),
                format!("must be a whole number from 1 to {MAX_RATE}, got {n}"),
            ));
        }
    };
    if let Some(k) = m.keys().next() {
        return Err(Problem::key(
            &key(k),
            "unknown; expected concurrency, perSecond or burst",
        ));
    }
    Ok(Limits {
        concurrency,
        rate,
        burst,
    })
}

fn take_number(m: &mut Map<String, Value>, k: &str, at: &str) -> Result<Option<f64>, Problem> {
    match m.remove(k) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            Problem::key(&format!("{at}.{k}"), format!("must be a number, got {v}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cb(url: &str) -> Callback {
        Callback::parse(url).unwrap()
    }

    #[test]
    fn hosts_match_in_order_and_fill_in_from_the_default() {
        let f = FlowControl::parse(json!({
            "default": {"concurrency": 16},
            "hosts": [
                {"match": "shop.example", "perSecond": 50, "burst": 20},
                {"match": "*.api.example", "concurrency": 2},
            ],
            "flows": {"payments": {"perSecond": 0.5}},
        }))
        .unwrap();
        let shop = f.limits(None, &cb("https://shop.example/hook"));
        assert_eq!(
            shop,
            Limits {
                concurrency: Some(16),
                rate: Some(50.0),
                burst: 20
            }
        );
        let api = f.limits(None, &cb("http://eu.api.example:8080/x"));
        assert_eq!((api.concurrency, api.rate), (Some(2), None));
        let other = f.limits(None, &cb("http://other.example/"));
        assert_eq!(other, f.default);
        let pay = f.limits(Some("payments"), &cb("https://shop.example/hook"));
        assert_eq!(
            (pay.concurrency, pay.rate, pay.burst),
            (Some(16), Some(0.5), 1)
        );
        let unknown = f.limits(Some("nope"), &cb("https://shop.example/hook"));
        assert_eq!(unknown, f.default);
    }

    #[test]
    fn a_bad_entry_names_its_key() {
        let e = |v: Value| FlowControl::parse(v).unwrap_err().key.unwrap();
        assert_eq!(
            e(json!({"default": {"burst": 0}})),
            "flowControl.default.burst"
        );
        assert_eq!(
            e(json!({"hosts": [{"match": "a"}, {"match": "https://b/x"}]})),
            "flowControl.hosts[1].match"
        );
        assert_eq!(
            e(json!({"hosts": [{"match": "a", "perSecnd": 1}]})),
            "flowControl.hosts[0].perSecnd"
        );
        assert_eq!(
            e(json!({"flows": {"k": {"concurrency": 1.5}}})),
            "flowControl.flows.k.concurrency"
        );
        assert_eq!(e(json!({"host": []})), "flowControl.host");
        assert_eq!(e(json!([])), "flowControl");
    }
}
