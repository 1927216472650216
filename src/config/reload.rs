//! What a SIGHUP changes: each setting is declared here, once, as applied live or
//! as needing a restart. `reload` takes the new config apart field by field with no
//! `..`, so a setting added to [`Config`] does not compile until it is given a side.

use crate::config::{Config, Problem};

/// The config to run with after a reload, and what the log line names.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// Settings whose new value is now in effect.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart: Vec<&'static str>,
}

/// Merges a re-read config into the running one. Refused, changing nothing, when
/// the merge would break a rule the running values take part in.
pub fn reload(old: &Config, new: Config) -> Result<Reloaded, Problem> {
    let mut r = Merge {
        applied: Vec::new(),
        restart: Vec::new(),
    };
    let Config {
        redis_url,
        sentinel,
        cluster,
        keys,
        concurrency,
        max_retries,
        retry,
        poll_interval,
        http,
        lease,
        redis_timeout,
        redis_ca_pem,
        log_level,
        log_files,
        pid_file,
        metrics_file,
        metrics_interval,
        host_failure_threshold,
        host_pause,
        flow,
        retry_after_max,
        max_job_bytes,
        allow_evicting_redis,
        replication,
    } = new;
    let config = Config {
        // Live: read by the loop or handed to the workers with each job.
        log_level: r.live("logLevel", &old.log_level, log_level),
        poll_interval: r.live("pollIntervalMs", &old.poll_interval, poll_interval),
        http: r.live(
            "HTTP settings (timeouts, success rule, signing, allow-list, TLS, redirects)",
            &old.http,
            http,
        ),
        retry: r.live("retry backoff", &old.retry, retry),
        max_retries: r.live("maxRetryNum", &old.max_retries, max_retries),
        lease: r.live("leaseMs", &old.lease, lease),
        retry_after_max: r.live("retryAfterMaxMs", &old.retry_after_max, retry_after_max),
        max_job_bytes: r.live("maxJobBytes", &old.max_job_bytes, max_job_bytes),
        metrics_file: r.live("metricsFile", &old.metrics_file, metrics_file),
        metrics_interval: r.live("metricsIntervalMs", &old.metrics_interval, metrics_interval),
        // Restart: held by the connection, the thread pool, the breakers, the log
        // files or the pid file, all made once at start.
        redis_url: r.restart("redis", &old.redis_url, redis_url),
        sentinel: r.restart("sentinel", &old.sentinel, sentinel),
        cluster: r.restart("cluster", &old.cluster, cluster),
        keys: r.restart("key names", &old.keys, keys),
        concurrency: r.restart("concurrency", &old.concurrency, concurrency),
        redis_timeout: r.restart("redisTimeoutMs", &old.redis_timeout, redis_timeout),
        redis_ca_pem: r.restart("redisCaFile", &old.redis_ca_pem, redis_ca_pem),
        host_failure_threshold: r.restart(
            "hostFailureThreshold",
            &old.host_failure_threshold,
            host_failure_threshold,
        ),
        host_pause: r.restart("hostPauseMs", &old.host_pause, host_pause),
        flow: r.restart("flowControl", &old.flow, flow),
        log_files: r.restart("logDir or logKeepDays", &old.log_files, log_files),
        pid_file: r.restart("pid", &old.pid_file, pid_file),
        // Checked when the loop first reaches Redis, and again on each reconnect.
        replication: r.restart(
            "waitReplicas or waitReplicasTimeoutMs",
            &old.replication,
            replication,
        ),
        allow_evicting_redis: r.restart(
            "allowEvictingRedis",
            &old.allow_evicting_redis,
            allow_evicting_redis,
        ),
    };
    // The file was checked against its own redisTimeoutMs; the running one stays.
    let floor = config.lease_floor();
    if config.lease <= floor {
        return Err(Problem::key(
            "leaseMs",
            format!(
                "{} must exceed `timeoutMs` + {} × the running `redisTimeoutMs` + `pollIntervalMs` = {} ms",
                config.lease.as_millis(),
                crate::config::redis_calls_before_write(config.keys.shards),
                floor.as_millis()
            ),
        ));
    }
    Ok(Reloaded {
        config,
        applied: r.applied,
        restart: r.restart,
    })
}

struct Merge {
    applied: Vec<&'static str>,
    restart: Vec<&'static str>,
}

impl Merge {
    fn live<T: PartialEq>(&mut self, name: &'static str, old: &T, new: T) -> T {
        if *old != new {
            self.applied.push(name);
        }
        new
    }

    fn restart<T: PartialEq + Clone>(&mut self, name: &'static str, old: &T, new: T) -> T {
        if *old != new {
            self.restart.push(name);
        }
        old.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(json: &str) -> Config {
        parse(json).unwrap().0
    }

    #[test]
    fn live_settings_apply_and_the_rest_waits_for_a_restart() {
        let old = config(r#"{"pollIntervalMs": 50, "concurrency": 2}"#);
        let new = config(r#"{"pollIntervalMs": 20, "concurrency": 8, "logLevel": "debug"}"#);
        let r = reload(&old, new).unwrap();
        assert_eq!(r.applied, ["logLevel", "pollIntervalMs"]);
        assert_eq!(r.restart, ["concurrency"]);
        assert_eq!(r.config.poll_interval.as_millis(), 20);
        assert_eq!(r.config.concurrency, 2, "the running value stays");
    }

    #[test]
    fn nothing_changed_names_nothing() {
        let old = config("{}");
        let r = reload(&old, old.clone()).unwrap();
        assert!(r.applied.is_empty() && r.restart.is_empty());
    }

    #[test]
    fn a_lease_too_short_for_the_running_redis_timeout_is_refused() {
        let old = config(r#"{"redisTimeoutMs": 5000}"#);
        let new = config(r#"{"redisTimeoutMs": 100, "timeoutMs": 5000, "leaseMs": 6000}"#);
        let e = reload(&old, new).unwrap_err().to_string();
        // 5000 + 5 × 5000 (the running one) + 50.
        assert!(
            e.contains("`leaseMs`") && e.contains("5 × the running"),
            "{e}"
        );
        assert!(e.contains("= 30050 ms"), "{e}");
    }
}
