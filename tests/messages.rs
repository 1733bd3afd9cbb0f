//! Messages between objects and durable timers, on the rig: a transfer's
//! credit reaches an account in another partition exactly once, also when
//! the leaders of both partitions stop mid-way; a reminder fires once, at
//! or after its time by the log's clock, also after its partition's leader
//! stops; and status shows the outbox drain.

mod common;

use common::*;
use keel::ingress::http::partition_of;
use keel::rig::Rig;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A key of `object` in partition `p`, other than `not`.
fn key_in(rig: &Rig, object: &str, p: u32, not: &str) -> String {
    let partitions = rig.config(1).partitions;
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| k != not && partition_of(object, k, partitions).0 == p)
        .unwrap()
}

/// `POST path` with idempotency key `key` through the running nodes in
/// turn until it is answered with something other than 503/504 (a retry
/// with the key applies at most once); that answer.
fn call(rig: &Rig, path: &str, body: Value, key: &str) -> Reply {
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    for node in (1..=rig.size()).cycle() {
        if Instant::now() > end {
            break;
        }
        if !rig.is_running(node) {
            continue;
        }
        let headers = [("idempotency-key", key)];
        let r = post_raw(
            &rig.http(node),
            path,
            &body.to_string(),
            &headers,
            Duration::from_secs(3),
        );
        if ![0, 503, 504].contains(&r.status) {
            return r;
        }
        last = Some(r);
    }
    panic!("{path} never answered: {last:?}");
}

fn read(rig: &Rig, path: &str) -> Value {
    static READS: AtomicU64 = AtomicU64::new(0);
    let n = READS.fetch_add(1, Ordering::Relaxed);
    let r = call(rig, path, Value::Null, &format!("read-{n}"));
    assert_eq!(r.status, 200, "{path}: {r:?}");
    r.body
}

/// The leader of partition `p` among the running nodes.
fn leader_of(rig: &Rig, p: u32) -> u32 {
    rig.wait_until("partition has a leader", Duration::from_secs(20), |r| {
        (1..=r.size())
            .find(|n| r.is_running(*n) && leader_mode(r, *n, p).as_deref() == Some("Leader"))
    })
    .unwrap()
}

#[test]
fn transfers_between_partitions_arrive_exactly_once_across_leader_changes() {
    let mut rig = Rig::builder(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let a = key_in(&rig, "Account", 0, "");
    let b = key_in(&rig, "Account", 1, &a);
    let (pa, pb) = (0, 1);
    let r = call(
        &rig,
        &format!("Account/{a}/deposit"),
        json!(1000),
        "deposit",
    );
    assert_eq!((r.status, &r.body), (200, &json!(1000)));

    let mut sent = 0;
    for i in 1..=12u32 {
        match i {
            // The receiving partition's leader stops, then comes back.
            4 => rig.stop(leader_of(&rig, pb)),
            7 => {
                let down = (1..=3).find(|n| !rig.is_running(*n)).unwrap();
                rig.restart(down).unwrap();
                // The sending partition's leader stops.
                rig.stop(leader_of(&rig, pa));
            }
            _ => {}
        }
        let r = call(
            &rig,
            &format!("Account/{a}/transfer"),
            json!({"to": b, "amount": i}),
            &format!("transfer-{i}"),
        );
        assert_eq!(r.status, 200, "transfer {i}: {r:?}");
        sent += i as i64;
        assert_eq!(r.body, json!(1000 - sent), "the debit is immediate");
    }
    // Every credit arrives, once: the receiver's balance reaches the sum
    // and the sender's outbox drains.
    let b_path = format!("Account/{b}/balance");
    rig.wait_until("every credit arrived", Duration::from_secs(30), |r| {
        (read(r, &b_path) == json!(sent)).then_some(())
    })
    .unwrap();
    let sender = leader_of(&rig, pa);
    let drained = rig
        .wait_until(
            "the sender's outbox drained",
            Duration::from_secs(30),
            |r| status_of(r, sender, pa).filter(|s| s.outbox.depth == 0),
        )
        .unwrap();
    assert!(drained.outbox.delivered > 0 || drained.outbox.last_error.is_none());
    assert_eq!(read(&rig, &b_path), json!(sent), "no credit applied twice");
    assert_eq!(
        read(&rig, &format!("Account/{a}/balance")),
        json!(1000 - sent)
    );
    // A transfer the sender cannot cover sends nothing.
    let r = call(
        &rig,
        &format!("Account/{a}/transfer"),
        json!({"to": b, "amount": 10_000}),
        "too-much",
    );
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(read(&rig, &b_path), json!(sent));
}

#[test]
fn a_reminder_fires_once_after_its_time_also_after_its_leader_stops() {
    let mut rig = Rig::builder(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let key = key_in(&rig, "Reminder", 2, "");
    let path = |h: &str| format!("Reminder/{key}/{h}");
    let first = call(
        &rig,
        &path("schedule"),
        json!({"after_ms": 200, "note": "one"}),
        "r1",
    );
    assert_eq!(first.status, 200, "{first:?}");
    let fired = |rig: &Rig, n: usize| -> Option<Value> {
        let v = read(rig, &path("read"));
        (v["fired"].as_array()?.len() >= n).then_some(v)
    };
    let v = rig
        .wait_until("the first reminder fired", Duration::from_secs(20), |r| {
            fired(r, 1)
        })
        .unwrap();
    let due = first.body["due_ms"].as_u64().unwrap();
    assert!(v["fired"][0]["fired_ms"].as_u64().unwrap() >= due, "{v}");

    // A longer one, whose partition's leader stops before it is due.
    let second = call(
        &rig,
        &path("schedule"),
        json!({"after_ms": 1500, "note": "two"}),
        "r2",
    );
    assert_eq!(second.status, 200, "{second:?}");
    let p = partition_of("Reminder", &key, rig.config(1).partitions).0;
    let leader = leader_of(&rig, p);
    let timers = status_of(&rig, leader, p).unwrap().outbox.timers;
    assert_eq!(timers, 1, "the timer waits in the partition's state");
    rig.stop(leader);
    let v = rig
        .wait_until(
            "the second reminder fired after the failover",
            Duration::from_secs(30),
            |r| fired(r, 2),
        )
        .unwrap();
    let due = second.body["due_ms"].as_u64().unwrap();
    let fired = v["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 2, "each fired once: {v}");
    assert_eq!(v["pending"], json!([]));
    assert_eq!(fired[1]["note"], json!("two"));
    assert!(fired[1]["fired_ms"].as_u64().unwrap() >= due, "{v}");
}

/// `Emitter/{k}/emit {"to": key, "from": n, "count": c}` sends `Log/{to}/push`
/// the numbers `from..from + c`, in order; a log keeps what arrives.
fn ordered_types() -> keel::objects::Objects {
    use keel::objects::{ObjectType, Objects};
    #[derive(serde::Deserialize)]
    struct Emit {
        to: String,
        from: u64,
        count: u64,
    }
    let emitter = ObjectType::new("Emitter").handler("emit", |ctx, e: Emit| {
        for n in e.from..e.from + e.count {
            ctx.send("Log", &e.to, "push", &n)?;
        }
        Ok(e.count)
    });
    let log = ObjectType::new("Log")
        .handler("push", |ctx, n: u64| {
            let mut seen: Vec<u64> = ctx.get("seen")?.unwrap_or_default();
            seen.push(n);
            ctx.set("seen", &seen);
            Ok(())
        })
        .reader("seen", |ctx, _: serde::de::IgnoredAny| {
            Ok(ctx.get::<Vec<u64>>("seen")?.unwrap_or_default())
        });
    Objects::new([emitter, log]).unwrap()
}

#[test]
fn messages_from_one_partition_to_another_arrive_once_and_in_the_order_sent() {
    let mut rig = Rig::builder(3).objects(ordered_types()).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    // Two senders in partition 0, one receiver in partition 1: one pair.
    let e1 = key_in(&rig, "Emitter", 0, "");
    let e2 = key_in(&rig, "Emitter", 0, &e1);
    let log = key_in(&rig, "Log", 1, "");
    let mut next = 1u64;
    for round in 0..8 {
        if round == 3 {
            rig.stop(leader_of(&rig, 1));
        }
        if round == 5 {
            let down = (1..=3).find(|n| !rig.is_running(*n)).unwrap();
            rig.restart(down).unwrap();
            rig.stop(leader_of(&rig, 0));
        }
        let emitter = if round % 2 == 0 { &e1 } else { &e2 };
        let count = 20;
        let r = call(
            &rig,
            &format!("Emitter/{emitter}/emit"),
            json!({"to": log, "from": next, "count": count}),
            &format!("emit-{round}"),
        );
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        next += count;
    }
    let want: Vec<u64> = (1..next).collect();
    let path = format!("Log/{log}/seen");
    let seen = rig
        .wait_until("every message arrived", Duration::from_secs(30), |r| {
            let v = read(r, &path);
            (v.as_array().map_or(0, Vec::len) >= want.len()).then_some(v)
        })
        .unwrap();
    assert_eq!(seen, json!(want), "once each, in the order sent");
}
