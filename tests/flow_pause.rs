//! One callback host or flowKey paused and resumed from the command line
//! (`delayqs pause --host|--flow`, `resume --host|--flow`): its jobs are parked as
//! they come due while other hosts' go on, `stats` shows the pause, the parked jobs
//! and the flows of the daemons' heartbeats, a producer's cancel (`ZREM`) and
//! reschedule (`ZADD XX`) of a parked job stand, and the resume brings the rest back
//! at once, in due order, without using an attempt; a job scheduled by id and moved
//! while parked goes at its new time.

mod common;

use std::collections::HashSet;

use common::*;
use redis::Commands;
use serde_json::json;

fn parked_key(flow: &str) -> String {
    format!("{QUEUE}:parked:{flow}")
}

#[test]
fn a_paused_host_parks_its_jobs_others_go_on_and_resume_brings_them_back() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let paused = Endpoint::succeeding();
    let other = Endpoint::succeeding();
    let host = format!("127.0.0.1:{}", paused.port);
    let other_host = format!("127.0.0.1:{}", other.port);
    let config = config_file(
        &redis,
        json!({"flowControl": {"hosts": [{"match": other_host, "perSecond": 100}]}}),
    );
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_ready();

    // A host is named as its callbacks' flow is; a pattern is refused.
    let out = delayqs_with(&config, &["pause", "--host", "*.example"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("not a pattern"),
        "{}",
        stderr_of(&out)
    );
    let out = delayqs_with(&config, &["pause", "--host", "a", "--flow", "b"]);
    assert_eq!(out.status.code(), Some(64));

    // A callback URL names its host too.
    let written = paused.url("/any/path");
    let reply = json_with(
        &config,
        &["pause", "--host", &written, "--reason", "shop deploy"],
    );
    assert_eq!(reply["paused"], true);
    assert_eq!(reply["already"], false);
    assert_eq!(reply["host"], host);
    assert_eq!(reply["note"]["reason"], "shop deploy");
    let again = json_with(&config, &["pause", "--host", &host]);
    assert_eq!(again["already"], true);
    let text = stdout_of(&delayqs_with(&config, &["pause", "--host", &host]));
    assert!(text.contains("already paused since"), "{text}");
    daemon.wait_for_log(&format!("flow {host:?} is paused"));

    let now = unix_now();
    let members: Vec<String> = (0..50)
        .map(|i| member(&paused.url("/held"), json!(i)))
        .collect();
    for (i, m) in members.iter().enumerate() {
        add(&mut con, m, now - 10.0 + i as f64 * 0.01);
    }
    // The other host's jobs go out, the last one 3 s on: by then the paused host
    // would have had its calls.
    for i in 0..5 {
        let m = member(&other.url("/other"), json!(i));
        add(&mut con, &m, now + f64::from(i) * 0.75);
    }
    other.wait_for(5);
    let parked = parked_key(&host);
    wait_until(PATIENCE, "50 jobs parked", || {
        con.zcard::<_, usize>(&parked).unwrap() == 50
    });
    assert_eq!(paused.count(), 0, "a paused host gets no call");
    // Parked: still in the queue, a day ahead, listed at their due times.
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 50);
    let listed: f64 = con.zscore(&parked, &members[0]).unwrap();
    assert!((listed - (now - 10.0)).abs() < 0.001, "{listed}");
    let waits: f64 = con.zscore(QUEUE, &members[0]).unwrap();
    assert!(waits > now + 80_000.0, "{waits}");

    // `stats` shows the pause, the parked jobs, and the flows of the heartbeats.
    let mut stats = serde_json::Value::Null;
    wait_until(PATIENCE, "stats to show both flows", || {
        stats = json_with(&config, &["stats"]);
        let flows = stats["flows"].as_array().unwrap();
        let of = |name: &str| flows.iter().find(|f| f["flow"] == name).cloned();
        of(&host).is_some_and(|f| f["paused"] == true && f["daemons"] == 1)
            && of(&other_host).is_some_and(|f| f["limit"] == 100.0 && f["rate"] == 100.0)
    });
    assert_eq!(stats["pending"], 50);
    assert!(stats["paused"].is_null(), "the queue itself is not paused");
    let flows = stats["pausedFlows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "{stats}");
    assert_eq!(flows[0]["flow"], host);
    assert_eq!(flows[0]["parked"], 50);
    assert_eq!(flows[0]["note"]["reason"], "shop deploy");
    let text = stdout_of(&delayqs_with(&config, &["stats"]));
    let row = |head: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with(head))
            .find(|l| l.starts_with(&host))
            .unwrap_or_else(|| panic!("no {host} row under {head} in\n{text}"))
            .to_string()
    };
    let paused_row = row("PAUSED FLOW");
    assert!(
        paused_row.contains(" 50 ") && paused_row.contains("shop deploy"),
        "{text}"
    );
    assert!(row("FLOW ").contains(" yes "), "{text}");
    let other_row = text
        .lines()
        .find(|l| l.starts_with(&other_host))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(other_row.contains("100/100"), "{text}");

    // A producer cancels one parked job and reschedules another: their word stands.
    // (Due after the resume: `resume` waits for the daemon's next beat, up to 2 s, and
    // a job due before it would be parked again and brought back with the others.)
    let cancelled = &members[7];
    let _: () = con.zrem(QUEUE, cancelled).unwrap();
    let moved = &members[8];
    let moved_to = unix_now() + 4.0;
    let changed: u64 = redis::cmd("ZADD")
        .arg(QUEUE)
        .arg("XX")
        .arg("CH")
        .arg(format!("{moved_to:.6}"))
        .arg(moved)
        .query(&mut con)
        .unwrap();
    assert_eq!(changed, 1);

    let reply = json_with(&config, &["resume", "--host", &host]);
    assert_eq!(reply["resumed"], true);
    assert_eq!(reply["host"], host);
    assert_eq!(reply["broughtBack"], 48, "{reply}");
    assert_eq!(reply["daemonsNotSeen"], 0, "{reply}");
    let requests = paused.wait_for(49);
    daemon.wait_for_log(&format!("flow {host:?} was resumed"));
    let id = |m: &str| job_id(&mut redis.con(), m);
    let ids: HashSet<String> = requests.iter().map(|r| r.job_id().to_string()).collect();
    assert_eq!(ids.len(), 49, "each once");
    assert!(
        !ids.contains(&id(cancelled)),
        "the cancelled job never goes"
    );
    let moved_id = id(moved);
    let at = requests
        .iter()
        .find(|r| r.job_id() == moved_id)
        .expect("the rescheduled job delivered")
        .at;
    assert!(
        at >= moved_to && at < moved_to + 10.0,
        "at its new time: {at} for {moved_to}"
    );
    // Parking used no attempt.
    assert!(requests.iter().all(|r| r.attempt() == 1));
    wait_until(PATIENCE, "the queue empty", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0 && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
    });
    // None was parked again by a daemon that had not seen the resume.
    assert!(!daemon.log().contains("brought back"), "{}", daemon.log());
    assert!(!con.exists::<_, bool>(&parked).unwrap());
    let text = stdout_of(&delayqs_with(&config, &["resume", "--host", &host]));
    assert!(text.contains("was not paused"), "{text}");
    let stats = json_with(&config, &["stats"]);
    assert_eq!(stats["pausedFlows"], json!([]));
    assert_eq!(paused.count(), 49);
}

#[test]
fn a_paused_flow_key_parks_its_jobs_on_any_host() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let config = config_file(&redis, json!({}));
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_ready();
    let reply = json_with(&config, &["pause", "--flow", "payments"]);
    assert_eq!(reply["flow"], "payments");
    daemon.wait_for_log("flow \"payments\" is paused");
    let keyed = json!({"callback": endpoint.url("/pay"), "body": 1, "flowKey": "payments"});
    add(&mut con, &keyed.to_string(), 0.0);
    let plain = member(&endpoint.url("/plain"), json!(2));
    add(&mut con, &plain, 0.0);
    endpoint.wait_for(1);
    wait_until(PATIENCE, "the keyed job parked", || {
        con.zcard::<_, usize>(parked_key("payments")).unwrap() == 1
    });
    assert_eq!(endpoint.requests()[0].path, "/plain");
    let reply = json_with(&config, &["resume", "--flow", "payments"]);
    assert_eq!(reply["broughtBack"], 1);
    let requests = endpoint.wait_for(2);
    assert_eq!(requests[1].path, "/pay");
}

/// One operation of the `delayqs` library on the queue's one shard.
fn by_id(con: &mut redis::Connection, op: &str, args: &[&str]) -> Vec<String> {
    let keys = [QUEUE, INFLIGHT, ATTEMPTS, &format!("{QUEUE}:ids")];
    let reply: redis::Value = redis::cmd("FCALL")
        .arg(format!("delayqs_{op}"))
        .arg(4)
        .arg(&keys[..])
        .arg(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{op} {args:?}: {e}"));
    match reply {
        redis::Value::Nil => Vec::new(),
        v => redis::from_redis_value(v).unwrap(),
    }
}

fn field(state: &[String], name: &str) -> String {
    let at = state
        .iter()
        .position(|f| f == name)
        .unwrap_or_else(|| panic!("{state:?}"));
    state[at + 1].clone()
}

fn redis_now(con: &mut redis::Connection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    s as f64 + us as f64 / 1e6
}

/// A parked job moved by its producer's id is no longer parked: it goes at its new
/// time (here after the resume), or, due while the flow is still paused, is parked
/// again and goes at the resume. Before, `unpark.lua` took the moved job for one
/// nobody had touched and put it back at its old due time. A parked job cancelled by
/// id never goes, and nothing of it is left in the index or the parked set.
#[test]
fn a_parked_job_moved_by_id_goes_at_its_new_time_and_one_cancelled_never_goes() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let config = config_file(&redis, json!({}));
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_for_log("loaded the delayqs Functions library");
    json_with(&config, &["pause", "--flow", "payments"]);
    daemon.wait_for_log("flow \"payments\" is paused");
    let job = |n: u32| json!({"callback": endpoint.url("/pay"), "body": n, "flowKey": "payments"});
    let scheduled = redis_now(&mut con) - 5.0;
    for (n, id) in ["later", "soon", "cancelled"].iter().enumerate() {
        let due = format!("{scheduled}");
        by_id(
            &mut con,
            "schedule",
            &[id, &job(n as u32).to_string(), &due],
        );
    }
    let parked = parked_key("payments");
    wait_until(PATIENCE, "three jobs parked", || {
        con.zcard::<_, usize>(&parked).unwrap() == 3
    });
    let state = by_id(&mut con, "state", &["later"]);
    assert_eq!(field(&state, "state"), "parked", "{state:?}");
    assert_eq!(field(&state, "flow"), "payments");
    let due: f64 = field(&state, "due").parse().unwrap();
    assert!(
        (due - scheduled).abs() < 0.001,
        "its due time, not a day ahead: {due}"
    );

    let now = redis_now(&mut con);
    let (later, soon) = (now + 8.0, now + 0.5);
    let moved = by_id(&mut con, "move", &["later", &format!("{later}")]);
    assert_eq!(moved[0], "moved");
    by_id(&mut con, "move", &["soon", &format!("{soon}")]);
    assert_eq!(by_id(&mut con, "cancel", &["cancelled"])[0], "cancelled");
    let state = by_id(&mut con, "state", &["later"]);
    assert_eq!(field(&state, "state"), "pending", "{state:?}");
    assert_eq!(field(&state, "flow"), "");
    // Due while its flow is paused: parked again, at its new due time.
    wait_until(PATIENCE, "the job moved to soon parked again", || {
        let state = by_id(&mut con, "state", &["soon"]);
        field(&state, "state") == "parked"
    });
    let state = by_id(&mut con, "state", &["soon"]);
    let due: f64 = field(&state, "due").parse().unwrap();
    assert!((due - soon).abs() < 0.001, "{due} for {soon}");
    let listed: Vec<String> = con.zrange(&parked, 0, -1).unwrap();
    assert_eq!(listed.len(), 1, "only the job moved to soon: {listed:?}");

    let reply = json_with(&config, &["resume", "--flow", "payments"]);
    assert_eq!(reply["broughtBack"], 1, "{reply}");
    let requests = endpoint.wait_for(2);
    let of = |id: &str| {
        requests
            .iter()
            .find(|r| r.header("x-delayqs-producer-id") == id)
            .unwrap_or_else(|| panic!("{id} not delivered: {requests:?}"))
            .clone()
    };
    let (at_later, at_soon) = (of("later").at, of("soon").at);
    assert!(
        at_later >= later - 0.05,
        "before its new time: {at_later} < {later}"
    );
    assert!(at_later < later + 10.0, "{at_later} for {later}");
    assert!(
        at_soon < later - 1.0,
        "the job moved to soon waited: {at_soon}"
    );
    assert!(
        requests.iter().all(|r| r.attempt() == 1),
        "parking used no attempt"
    );
    wait_until(PATIENCE, "the queue and the index empty", || {
        let fields: Vec<String> = con.hkeys(format!("{QUEUE}:ids")).unwrap();
        con.zcard::<_, usize>(QUEUE).unwrap() == 0
            && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
            && fields.iter().all(|f| f == "seq")
    });
    assert_eq!(endpoint.count(), 2, "the cancelled job went");
    assert!(!con.exists::<_, bool>(&parked).unwrap());
}
