//! Object types defined by a user, on the rig: a type of one's own serves
//! writes, reads (GET), typed errors and the log's clock; a panicking
//! handler fails only its call, alike on every replica; and a node that
//! registers other types than its peers is refused by them.

mod common;

use common::*;
use keel::ingress::http::partition_of;
use keel::objects::{HandlerError, ObjectType, Objects};
use keel::rig::Rig;
use serde::de::IgnoredAny;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A tally: `add` a positive number, read the `total`; `refuse` always says
/// 409; `boom` writes, then panics; `stamp` returns the log's clock.
fn tally() -> ObjectType {
    ObjectType::new("Tally")
        .handler("add", |ctx, n: u64| {
            let total = ctx.get::<u64>("total")?.unwrap_or(0) + n;
            ctx.set("total", &total);
            Ok(total)
        })
        .reader("total", |ctx, _: IgnoredAny| {
            Ok(ctx.get::<u64>("total")?.unwrap_or(0))
        })
        .handler("refuse", |_, _: IgnoredAny| -> Result<(), _> {
            Err(HandlerError::rejected(409, "tallies never refuse politely"))
        })
        .handler("boom", |ctx, _: IgnoredAny| -> Result<(), _> {
            ctx.set("total", &999u64);
            panic!("boom at {}", ctx.key())
        })
        .handler("stamp", |ctx, _: IgnoredAny| Ok(ctx.now_ms()))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_users_object_type_serves_and_a_panicking_handler_fails_only_its_call() {
    let objects = Objects::new([tally()]).unwrap();
    let mut rig = Rig::builder(3).objects(objects).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let t = Duration::from_secs(5);
    let url = rig.http(1);
    assert_eq!(post(&url, "Tally/t/add", json!(2)).body, json!(2));
    let r = ureq::get(&format!("{url}/Tally/t/total")).call().unwrap();
    assert_eq!(r.into_string().unwrap(), "2", "GET on a reader");
    let r = post(&url, "Tally/t/refuse", json!(null));
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.body["error"], json!("tallies never refuse politely"));
    let r = post(&url, "Tally/t/add", json!(-1));
    assert_eq!(r.status, 400, "a negative u64 is refused: {r:?}");
    let r = post(&url, "Counter/c/add", json!(1));
    assert_eq!(r.status, 404, "the demo's types are not registered: {r:?}");
    assert!(r.body["error"].as_str().unwrap().contains("Tally"), "{r:?}");
    let before = unix_ms();
    let stamp = post(&url, "Tally/t/stamp", json!(null))
        .body
        .as_u64()
        .unwrap();
    assert!(
        stamp + 60_000 > before && stamp < unix_ms() + 60_000,
        "log clock {stamp} vs wall {before}"
    );

    // The panic fails its one call, with its message, and writes nothing.
    let key = [("idempotency-key", "boom-1")];
    let boom = post_raw(&url, "Tally/t/boom", "null", &key, t);
    assert_eq!(boom.status, 500, "{boom:?}");
    let reason = boom.body["error"].as_str().unwrap().to_string();
    assert!(reason.contains("boom at t"), "{reason}");
    for n in 1..=3 {
        assert_eq!(
            post(&rig.http(n), "Tally/t/total", json!(null)).body,
            json!(2)
        );
    }
    assert_eq!(
        post(&url, "Tally/t/add", json!(3)).body,
        json!(5),
        "the partition carries on"
    );

    // Another replica applied the same outcome: with the leader gone, the
    // new one answers the repeat from its own copy of the result.
    let p = partition_of("Tally", "t", rig.config(1).partitions).0;
    let leader = leaders(&rig)[&p].0 .0;
    rig.stop(leader);
    let other = (1..=3).find(|n| *n != leader).unwrap();
    rig.wait_for(
        "another node leads the tally's partition",
        Duration::from_secs(15),
        |r| (1..=3).any(|n| r.is_running(n) && leader_mode(r, n, p).as_deref() == Some("Leader")),
    )
    .unwrap();
    let again = post_raw(&rig.http(other), "Tally/t/boom", "null", &key, t);
    assert_eq!(
        (again.status, &again.body),
        (500, &boom.body),
        "the same outcome on another replica"
    );
    assert_eq!(
        post(&rig.http(other), "Tally/t/total", json!(null)).body,
        json!(5)
    );
}

#[test]
fn a_node_registering_other_object_types_is_refused_by_its_peers() {
    let same = || Objects::new([tally()]).unwrap();
    let other = Objects::new([tally().reader("extra", |_, _: IgnoredAny| Ok(0))]).unwrap();
    let rig = Rig::builder(3)
        .objects(same())
        .objects_of(3, other)
        .start()
        .unwrap();
    let refusal = |r: &Rig, node: u32, peer: u32| -> Option<String> {
        let status = r.node(node).transport.peers();
        let s = status.iter().find(|s| s.node.0 == peer)?;
        let e = s.last_error.clone()?;
        (!s.connected && e.contains("other object types")).then_some(e)
    };
    let why = rig
        .wait_until(
            "N1 and N2 refuse N3, and N3 refuses them",
            Duration::from_secs(15),
            |r| {
                let all = [(1, 3), (2, 3), (3, 1), (3, 2)];
                all.iter()
                    .all(|(a, b)| refusal(r, *a, *b).is_some())
                    .then(|| refusal(r, 1, 3))
            },
        )
        .unwrap()
        .unwrap();
    assert!(
        why.contains("extra:r"),
        "the refusal names the difference: {why}"
    );
    // Each node's own status says what it serves.
    let served = |n: u32| -> Option<String> {
        let status: serde_json::Value = ureq::get(&format!("{}/cluster/status", rig.http(n)))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        let me = status["nodes"]
            .as_array()?
            .iter()
            .find(|r| r["node"] == n)?;
        me["status"]["objects"].as_str().map(str::to_string)
    };
    assert_eq!(served(1), Some(same().describe()));
    assert_eq!(served(3).map(|s| s.contains("extra:r")), Some(true));
    // N1 and N2 still form a majority and serve.
    wait_for_leaders(&rig, Duration::from_secs(15));
    assert_eq!(post(&rig.http(1), "Tally/k/add", json!(1)).status, 200);
    let quick = [("keel-timeout-ms", "1000")];
    let cut_off = post_raw(
        &rig.http(3),
        "Tally/k/add",
        "1",
        &quick,
        Duration::from_secs(5),
    );
    assert!(
        matches!(cut_off.status, 503 | 504),
        "the refused node serves nothing: {cut_off:?}"
    );
}
