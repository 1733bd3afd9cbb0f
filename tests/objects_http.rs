//! The demo app over HTTP on the rig: idempotency, clear errors for bad
//! input, no acknowledged write lost across failover and restarts, register
//! histories linearizable under a leader isolation, and the seed scenario
//! (isolate a node for 5 s; everyone serves again within 3 s of the heal).

mod common;

use common::*;
use keel::harness::history::{OpType, F};
use keel::rig::Rig;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn seed() -> u64 {
    std::env::var("KEEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

#[test]
fn idempotent_requests_apply_once_also_through_two_nodes() {
    let rig = Rig::builder(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let idem = [("idempotency-key", "order-17")];
    let t = Duration::from_secs(5);
    let a = post_raw(&rig.http(1), "Counter/c/add", "5", &idem, t);
    let b = post_raw(&rig.http(1), "Counter/c/add", "5", &idem, t);
    let c = post_raw(&rig.http(2), "Counter/c/add", "5", &idem, t);
    assert_eq!((a.status, b.status, c.status), (200, 200, 200));
    assert_eq!(a.body, json!(5));
    assert_eq!(b.body, a.body, "a repeat returns the first result");
    assert_eq!(c.body, a.body, "also through another node");
    assert_eq!(
        post(&rig.http(3), "Counter/c/get", json!(null)).body,
        json!(5),
        "applied once"
    );
    // Another key is another request.
    let d = post_raw(
        &rig.http(3),
        "Counter/c/add",
        "5",
        &[("idempotency-key", "order-18")],
        t,
    );
    assert_eq!(d.body, json!(10));
    // Concurrent duplicates from all three nodes apply once too.
    let handles: Vec<_> = (1..=3)
        .map(|n| {
            let url = rig.http(n);
            std::thread::spawn(move || {
                post_raw(
                    &url,
                    "Set/s/add",
                    "1",
                    &[("idempotency-key", "x")],
                    Duration::from_secs(5),
                )
            })
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body),
        "{replies:?}"
    );
    assert_eq!(
        post(&rig.http(1), "Set/s/read", json!(null)).body,
        json!([1])
    );
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let rig = Rig::builder(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let url = rig.http(1);
    assert_eq!(post(&url, "Counter/k/add", json!(3)).status, 200);
    let t = Duration::from_secs(5);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("Nope/k/add", "1".into(), 404, "unknown object"),
        ("Counter/k/pop", "1".into(), 404, "no handler"),
        ("Counter/k/add", "{not json".into(), 400, "malformed JSON"),
        ("Counter/k/add", "\"three\"".into(), 400, "integer delta"),
        ("Counter/k/add", "1.5".into(), 400, "integer delta"),
        ("Register/k/cas", "{\"value\":1}".into(), 400, "expect"),
        ("Set/k/add", "null".into(), 400, "JSON value"),
        ("Counter/k/add", "9".repeat(70 * 1024), 413, "exceeds"),
    ];
    for (path, body, status, needle) in cases {
        let r = post_raw(&url, path, &body, &[], t);
        assert_eq!(r.status, status, "{path} {:.40}: {r:?}", body);
        let msg = r.body["error"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(needle),
            "{path}: error {msg:?} should mention {needle:?}"
        );
    }
    let r = post_raw(&url, "Counter/k/add", "1", &[("idempotency-key", "")], t);
    assert_eq!(r.status, 400, "empty idempotency key: {r:?}");
    let r = post_raw(
        &url,
        "Counter/k/add",
        "1",
        &[("keel-timeout-ms", "soon")],
        t,
    );
    assert_eq!(r.status, 400, "bad timeout header: {r:?}");
    let r = ureq::get(&format!("{url}/Counter/k/add")).call();
    assert!(
        matches!(r, Err(ureq::Error::Status(405, _))),
        "GET on a writing handler"
    );
    let r = ureq::get(&format!("{url}/no/such/route/here")).call();
    assert!(matches!(r, Err(ureq::Error::Status(404, _))));
    // Nothing above changed the counter.
    for n in 1..=3 {
        assert_eq!(
            post(&rig.http(n), "Counter/k/get", json!(null)).body,
            json!(3)
        );
    }
    let r = ureq::get(&format!("{url}/Counter/k/get")).call().unwrap();
    assert_eq!(r.into_string().unwrap(), "3", "GET on a read-only handler");
}

/// One generated operation: function, key, history value, HTTP path, body.
type GeneratedOp = (F, String, serde_json::Value, String, String);

/// Client threads issuing operations until `stop`; each op's invoke and
/// completion go to the recorder.
fn spawn_clients(
    rig: &Rig,
    recorder: &Recorder,
    stop: &Arc<AtomicBool>,
    per_node: u32,
    seed: u64,
    op: fn(&mut rand::rngs::StdRng, u64) -> GeneratedOp,
) -> Vec<std::thread::JoinHandle<()>> {
    let next_process = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for n in 1..=rig.size() {
        for c in 0..per_node {
            let url = rig.http(n);
            let rec = recorder.clone();
            let stop = stop.clone();
            let next_process = next_process.clone();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ ((n as u64) << 32) ^ c as u64);
            handles.push(std::thread::spawn(move || {
                let mut process = next_process.fetch_add(1, Ordering::Relaxed);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let unique = (process << 24) | i;
                    let (f, key, value, path, body) = op(&mut rng, unique);
                    rec.record(process, OpType::Invoke, f, &key, value.clone(), n);
                    let reply = post_raw(
                        &url,
                        &path,
                        &body,
                        &[("keel-timeout-ms", "1500")],
                        Duration::from_secs(3),
                    );
                    let kind = completion(&reply);
                    let out = match (kind, f) {
                        (OpType::Ok, F::Read) | (OpType::Ok, F::Get) => reply.body.clone(),
                        _ => value,
                    };
                    rec.record(process, kind, f, &key, out, n);
                    if kind == OpType::Info {
                        // Unknown outcome: this process may still be in flight.
                        process = next_process.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    handles
}

fn register_op(rng: &mut rand::rngs::StdRng, unique: u64) -> GeneratedOp {
    let key = format!("r{}", rng.gen_range(0..2));
    match rng.gen_range(0..3) {
        0 => (
            F::Read,
            key.clone(),
            json!(null),
            format!("Register/{key}/read"),
            String::new(),
        ),
        1 => (
            F::Write,
            key.clone(),
            json!(unique),
            format!("Register/{key}/write"),
            unique.to_string(),
        ),
        _ => {
            // Expect a recent-looking value: often wrong, sometimes right.
            let expect = if rng.gen_bool(0.3) {
                json!(null)
            } else {
                json!(unique.saturating_sub(rng.gen_range(1..4)))
            };
            let v = json!({"expect": expect, "value": unique});
            (
                F::Cas,
                key.clone(),
                v.clone(),
                format!("Register/{key}/cas"),
                v.to_string(),
            )
        }
    }
}

#[test]
fn register_histories_stay_linearizable_when_the_leader_is_isolated() {
    let seed = seed();
    eprintln!("seed {seed} (KEEL_SEED={seed} reproduces the schedule)");
    // One partition: every register key has the same leader, N1.
    let rig = Rig::builder(3).partitions(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let leader = leadership(&rig, 1, 0).unwrap().node.0;
    let recorder = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(&rig, &recorder, &stop, 2, seed, register_op);
    recorder.wait_for_oks(
        "a stretch of healthy history",
        50,
        Duration::from_secs(10),
        |_| true,
    );
    let cut_ns = recorder.now_ns();
    rig.isolate(leader);
    rig.wait_for("a new leader serves", Duration::from_secs(5), |r| {
        r.ids()
            .iter()
            .any(|n| n.0 != leader && leader_mode(r, n.0, 0).as_deref() == Some("Leader"))
    })
    .unwrap();
    recorder.wait_for_oks(
        "history under the new leader",
        50,
        Duration::from_secs(10),
        |c| c.invoke_ns > cut_ns,
    );
    rig.heal();
    let heal_ns = recorder.now_ns();
    // History after the heal, the old leader's node serving again included.
    recorder.wait_for_oks(
        "the healed node serves again",
        10,
        Duration::from_secs(10),
        |c| c.node.0 == leader && c.invoke_ns > heal_ns,
    );
    recorder.wait_for_oks("history after the heal", 50, Duration::from_secs(10), |c| {
        c.invoke_ns > heal_ns
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let history = recorder.history();
    let calls = keel::harness::history::pair(&history).unwrap();
    let ok = |from: u64, to: u64| {
        calls
            .iter()
            .filter(|c| {
                c.outcome == keel::harness::history::Outcome::Ok
                    && c.invoke_ns >= from
                    && c.invoke_ns < to
            })
            .count()
    };
    // Really isolated: once it noticed (1.5 s), the isolated node could not
    // complete a single request until the heal, and its socket dropped packets.
    let served_while_cut = calls
        .iter()
        .filter(|c| {
            c.node.0 == leader
                && c.invoke_ns > cut_ns + 1_500_000_000
                && c.outcome == keel::harness::history::Outcome::Ok
                && c.complete_ns.is_some_and(|t| t < heal_ns)
        })
        .count();
    let drops = rig.fault(leader).counters();
    eprintln!(
        "{} calls; ok before {} / during {} / after {}",
        calls.len(),
        ok(0, cut_ns),
        ok(cut_ns, heal_ns),
        ok(heal_ns, u64::MAX)
    );
    assert_eq!(
        served_while_cut, 0,
        "the isolated node served requests while cut off"
    );
    assert!(
        format!("{drops:?}") != format!("{:?}", keel::transport::FaultCounters::default()),
        "no packet was dropped: {drops:?}"
    );
    assert!(
        ok(cut_ns, heal_ns) > 10,
        "the majority did not serve during the isolation"
    );
    assert!(
        ok(heal_ns, u64::MAX) > 10,
        "nothing succeeded after the heal"
    );
    let result = keel::harness::checker::register::check(&calls, &Default::default());
    assert!(result.is_valid(), "seed {seed}: {}", result.summary);
}

fn set_add(
    _: &mut rand::rngs::StdRng,
    unique: u64,
) -> (F, String, serde_json::Value, String, String) {
    let key = format!("s{}", unique % 3);
    (
        F::Add,
        key.clone(),
        json!(unique),
        format!("Set/{key}/add"),
        unique.to_string(),
    )
}

#[test]
fn no_acknowledged_set_add_is_lost_across_failover_and_restarts() {
    let seed = seed();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let recorder = Recorder::default();
    // Three phases, each with fresh clients: a leader isolation, a crash and
    // restart of a random node, then a crash and restart of all nodes.
    let phase = |rig: &Rig, fault: &dyn Fn(&Rig), seed: u64| {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = spawn_clients(rig, &recorder, &stop, 2, seed, set_add);
        let start_ns = recorder.now_ns();
        recorder.wait_for_oks("adds before the fault", 20, Duration::from_secs(10), |c| {
            c.invoke_ns > start_ns
        });
        fault(rig);
        let after_ns = recorder.now_ns();
        recorder.wait_for_oks("adds after the fault", 20, Duration::from_secs(10), |c| {
            c.invoke_ns > after_ns
        });
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    };
    let leader = leadership(&rig, 1, 0).unwrap().node.0;
    phase(
        &rig,
        &|r: &Rig| {
            r.isolate(leader);
            r.wait_for("a new leader of partition 0", Duration::from_secs(5), |r| {
                r.ids()
                    .iter()
                    .any(|n| n.0 != leader && leader_mode(r, n.0, 0).as_deref() == Some("Leader"))
            })
            .unwrap();
            r.heal();
        },
        rng.gen(),
    );
    let victim = rng.gen_range(1..=3);
    rig.kill(victim);
    rig.restart(victim).unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    phase(&rig, &|_: &Rig| {}, rng.gen());
    for n in 1..=3 {
        rig.kill(n);
    }
    for n in 1..=3 {
        rig.restart(n).unwrap();
    }
    wait_for_leaders(&rig, Duration::from_secs(15));
    // Final reads from every node.
    let history = recorder.history();
    let calls = keel::harness::history::pair(&history).unwrap();
    let acked: BTreeSet<u64> = calls
        .iter()
        .filter(|c| c.outcome == keel::harness::history::Outcome::Ok)
        .filter_map(|c| c.value.as_u64())
        .collect();
    let attempted: BTreeSet<u64> = calls.iter().filter_map(|c| c.value.as_u64()).collect();
    assert!(acked.len() > 50, "only {} adds acknowledged", acked.len());
    for n in 1..=3 {
        let mut seen = BTreeSet::new();
        for key in ["s0", "s1", "s2"] {
            let r = post(&rig.http(n), &format!("Set/{key}/read"), json!(null));
            assert_eq!(r.status, 200, "final read on N{n}: {r:?}");
            seen.extend(r.body.as_array().unwrap().iter().filter_map(|v| v.as_u64()));
        }
        let lost: Vec<_> = acked.difference(&seen).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: N{n} lost acknowledged adds {lost:?}"
        );
        let phantom: Vec<_> = seen.difference(&attempted).collect();
        assert!(
            phantom.is_empty(),
            "seed {seed}: N{n} shows adds never made {phantom:?}"
        );
    }
}

#[test]
fn seed_scenario_every_node_serves_again_within_3s_of_the_heal() {
    let seed = seed();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rig = Rig::builder(3).partitions(4).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let recorder = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    let counter_add = |rng: &mut rand::rngs::StdRng, _: u64| {
        let key = format!("k{}", rng.gen_range(0..8));
        (
            F::Add,
            key.clone(),
            json!(1),
            format!("Counter/{key}/add"),
            "1".to_string(),
        )
    };
    let clients = spawn_clients(&rig, &recorder, &stop, 2, seed, counter_add);
    for n in 1..=3 {
        recorder.wait_for_oks(
            "steady requests on every node",
            10,
            Duration::from_secs(10),
            |c| c.node.0 == n,
        );
    }
    let victim = rng.gen_range(1..=3);
    eprintln!("isolating N{victim} for 5 s");
    let cut_ns = recorder.now_ns();
    rig.isolate(victim);
    std::thread::sleep(Duration::from_secs(5)); // the scenario: a 5 s isolation
    rig.heal();
    let heal = Instant::now();
    let heal_ns = recorder.now_ns();
    // Observe 3 s (the bound) plus 5 s of "keeps doing so".
    while heal.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let calls = keel::harness::history::pair(&recorder.history()).unwrap();
    use keel::harness::history::Outcome;
    // The isolation was real: after noticing it (2 s), the victim completed
    // no request before the heal, and some of its requests really failed.
    let cut_off = |c: &&keel::harness::history::Call| {
        c.node.0 == victim
            && c.invoke_ns > cut_ns + 2_000_000_000
            && c.complete_ns.is_some_and(|t| t < heal_ns)
    };
    let served = calls
        .iter()
        .filter(cut_off)
        .filter(|c| c.outcome == Outcome::Ok)
        .count();
    let failed = calls
        .iter()
        .filter(cut_off)
        .filter(|c| c.outcome != Outcome::Ok)
        .count();
    assert_eq!(served, 0, "N{victim} served requests while isolated");
    assert!(failed > 0, "no request to the isolated N{victim} failed");
    for n in 1..=3u32 {
        let first_ok = calls
            .iter()
            .filter(|c| c.node.0 == n && c.invoke_ns >= heal_ns && c.outcome == Outcome::Ok)
            .filter_map(|c| c.complete_ns)
            .min()
            .expect("no success after the heal");
        let recovery = Duration::from_nanos(first_ok - heal_ns);
        eprintln!("N{n}: first success {recovery:?} after the heal");
        assert!(
            recovery < Duration::from_secs(3),
            "seed {seed}: N{n} recovered only after {recovery:?}"
        );
        let errors_late: Vec<_> = calls
            .iter()
            .filter(|c| {
                c.node.0 == n && c.invoke_ns >= heal_ns + 3_000_000_000 && c.outcome != Outcome::Ok
            })
            .map(|c| c.describe())
            .collect();
        assert!(
            errors_late.is_empty(),
            "seed {seed}: N{n} still failing 3 s after the heal: {:?}",
            &errors_late[..errors_late.len().min(5)]
        );
    }
}

#[test]
fn in_a_bridge_both_cut_off_nodes_still_serve_every_partition() {
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    // A key of each partition, and who leads it.
    let key_of = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| keel::ingress::http::partition_of("Counter", k, 3).0 == p)
            .unwrap()
    };
    let leader_of =
        |rig: &Rig, p: u32| (1..=3).find(|&n| leader_mode(rig, n, p).as_deref() == Some("Leader"));
    let leaders: Vec<u32> = (0..3).map(|p| leader_of(&rig, p).unwrap()).collect();
    // Cut the leaders of partitions 0 and 2 off from each other.
    let (a, b) = (leaders[0], leaders[2]);
    assert_ne!(a, b);
    rig.cut(a, b);
    rig.wait_for("the bridge is noticed", Duration::from_secs(3), |r| {
        r.node(a).net.is_suspected(keel::types::NodeId(b))
    })
    .unwrap();
    // Each side asks for the partition led across the cut.
    for (via, p) in [(a, 2), (b, 0)] {
        let key = key_of(p);
        let r = post_raw(
            &rig.http(via),
            &format!("Counter/{key}/add"),
            "1",
            &[],
            Duration::from_secs(5),
        );
        assert_eq!(
            r.status, 200,
            "N{via} → partition {p} (led by N{}) across the bridge: {r:?}",
            leaders[p as usize]
        );
    }
    // Nobody was deposed: the leaders kept their majority.
    for p in 0..3 {
        assert_eq!(leader_of(&rig, p), Some(leaders[p as usize]));
    }
}

#[test]
fn an_account_refuses_a_withdrawal_that_would_go_negative() {
    let rig = Rig::builder(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let url = rig.http(1);
    assert_eq!(post(&url, "Account/a/deposit", json!(10)).body, json!(10));
    assert_eq!(
        post(&rig.http(2), "Account/a/withdraw", json!(4)).body,
        json!(6)
    );
    let r = post(&rig.http(3), "Account/a/withdraw", json!(7));
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(r.body["current"], json!(6), "the refusal says what is left");
    let r = post(&url, "Account/a/deposit", json!(-5));
    assert_eq!(r.status, 400, "a negative deposit: {r:?}");
    for n in 1..=3 {
        let r = ureq::get(&format!("{}/Account/a/balance", rig.http(n)))
            .call()
            .unwrap();
        assert_eq!(r.into_string().unwrap(), "6");
    }
}
