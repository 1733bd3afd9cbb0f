//! Gray failures on the rig: a node that is alive but sick. Its peers must
//! not take slowness for death, and partitions led by healthy nodes must
//! keep their leaders.

mod common;

use common::*;
use keel::rig::Rig;
use keel::types::NodeId;
use std::time::{Duration, Instant};

/// Every ordered pair of distinct nodes that suspects the other right now.
fn suspicions(rig: &Rig) -> Vec<(u32, u32)> {
    let ids = rig.ids();
    let mut out = Vec::new();
    for a in &ids {
        for b in &ids {
            if a != b && rig.node(a.0).net.is_suspected(*b) {
                out.push((a.0, b.0));
            }
        }
    }
    out
}

/// Sequential counter adds through `via` until `until`, at most `max`;
/// returns (acknowledged, sent).
fn load(base: String, until: Instant, max: u64) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut ok, mut sent) = (0, 0);
        while Instant::now() < until && sent < max {
            let reply = post(&base, &format!("Counter/g{}/add", sent % 30), 1.into());
            sent += 1;
            ok += u64::from(reply.status == 200);
        }
        (ok, sent)
    })
}

#[test]
fn a_node_whose_syncs_take_500_ms_is_not_suspected_and_healthy_leaders_stay() {
    // Three partitions on three nodes: each node leads one.
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_for("no suspicions", Duration::from_secs(5), |r| {
        suspicions(r).is_empty()
    })
    .unwrap();
    let before = leaders(&rig);
    let slow = 3;
    assert!(
        before.values().any(|(n, _)| *n != NodeId(slow)),
        "a healthy node leads something: {before:?}"
    );

    rig.node(slow)
        .storage
        .set_slow_sync(Duration::from_millis(500));
    let window = Duration::from_secs(6);
    let until = Instant::now() + window;
    let clients: Vec<_> = [1, 2]
        .iter()
        .map(|&via| load(rig.http(via), until, 20_000))
        .collect();
    let mut seen = Vec::new();
    let mut max_epochs = std::collections::BTreeMap::new();
    while Instant::now() < until {
        seen.extend(suspicions(&rig));
        for (p, (_, e)) in leaders(&rig) {
            let m = max_epochs.entry(p).or_insert(e);
            *m = (*m).max(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, sent) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    rig.node(slow).storage.set_slow_sync(Duration::ZERO);

    // The fault was real: the slow node's syncs really took 500 ms.
    let stats = rig.node(slow).storage.stats();
    let slowest = stats
        .records_sync
        .max_sync_micros
        .max(stats.state_sync.max_sync_micros);
    assert!(slowest >= 500_000, "slowest sync {slowest} µs: {stats:?}");
    eprintln!("{ok} of {sent} requests acknowledged during the slow disk");
    assert!(ok > 0, "nothing was served during the slow disk");
    assert!(seen.is_empty(), "suspected during a slow disk: {seen:?}");
    for (p, (leader, epoch)) in &before {
        if *leader != NodeId(slow) {
            assert_eq!(
                max_epochs[p], *epoch,
                "partition {p}, led by healthy {leader}, changed leader"
            );
        }
    }
}
