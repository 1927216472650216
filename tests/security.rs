//! Hostile input and secrets (issue 5).

mod common;

use common::*;
use serde_json::json;

#[test]
fn hostile_members_are_set_aside_and_memory_stays_bounded() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let daemon = Daemon::start(&redis, json!({"maxJobBytes": 65536}));
    daemon.wait_for_log("running");
    let url = endpoint.url("/ok");
    let huge = format!(r#"{{"callback":"{url}","body":"{}"}}"#, "x".repeat(8 << 20));
    let deep = format!(
        r#"{{"callback":"{url}","body":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let hostile: Vec<(Vec<u8>, &str)> = vec![
        (huge.clone().into_bytes(), "over maxJobBytes"),
        (deep.into_bytes(), "recursion limit"),
        (
            format!("{{\"callback\":\"{url}\",\"body\":\"a\0b\"}}").into_bytes(),
            "control character",
        ),
        (
            b"{\"callback\":\"http://127.0.0.1/\",\"body\":\"\xc3\x28\"}".to_vec(),
            "not valid JSON",
        ),
        (br#"{"callback":"http:///nohost"}"#.to_vec(), "callback"),
        (
            br#"{"callback":"javascript:alert(1)"}"#.to_vec(),
            "callback",
        ),
        (
            br#"{"callback":"http://user:pw@127.0.0.1/"}"#.to_vec(),
            "credentials",
        ),
    ];
    // Stream them, the huge one many times over: 25 x 8 MiB through one daemon.
    for round in 0..25 {
        let mut pipe = redis::pipe();
        let huge_copy = format!("{}{round}", &huge[..huge.len() - 1]) + "}";
        pipe.cmd("ZADD").arg(QUEUE).arg(0).arg(huge_copy.as_bytes());
        if round == 0 {
            for (m, _) in &hostile {
                pipe.cmd("ZADD").arg(QUEUE).arg(0).arg(m.as_slice());
            }
        }
        let _: () = pipe.query(&mut con).unwrap();
    }
    add(&mut con, &member(&url, json!("after the storm")), 1.0);
    endpoint.wait_for(1);
    let expected = hostile.len() + 25;
    wait_until(PATIENCE, "every hostile member in the failed list", || {
        con.llen::<_, usize>(FAILED).unwrap() == expected
    });
    let records = failed_records(&mut con);
    for (m, why) in &hostile[1..] {
        let lossy = String::from_utf8_lossy(m);
        let r = records
            .iter()
            .find(|r| r["member"] == *lossy)
            .unwrap_or_else(|| panic!("{lossy:.80}"));
        assert!(
            r["error"].as_str().unwrap().contains(why),
            "{lossy:.80}: {}",
            r["error"]
        );
    }
    let oversize: Vec<_> = records
        .iter()
        .filter(|r| r["memberBytes"].is_u64())
        .collect();
    assert_eq!(oversize.len(), 26, "the first huge one and its 25 copies");
    for r in &oversize {
        assert!(
            r["error"].as_str().unwrap().contains("over maxJobBytes"),
            "{r}"
        );
        assert!(r["memberPrefix"].as_str().unwrap().len() <= 200);
        assert!(
            r.get("member").is_none(),
            "a huge member is not copied into its record"
        );
    }
    let peak_mib = daemon.peak_rss_kib() / 1024;
    println!("peak RSS while 200 MiB of oversized members streamed through: {peak_mib} MiB");
    assert!(
        peak_mib < 64,
        "peak RSS {peak_mib} MiB: oversized members reached the daemon"
    );
    assert_eq!(endpoint.count(), 1);
    assert_no_bookkeeping(&mut con);
}
