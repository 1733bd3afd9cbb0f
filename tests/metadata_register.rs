//! The metadata register (CASPaxos) on the rig: linearizable compare-and-set
//! from every node, no writes from a minority, nothing lost across restarts.

mod common;

use keel::actors::metadata::MetadataClient;
use keel::rig::Rig;
use std::time::{Duration, Instant};

fn client(rig: &Rig, n: u32) -> MetadataClient {
    rig.node(n).meta.clone()
}

/// How one read-modify-CAS increment ended.
#[derive(Debug, PartialEq)]
enum Inc {
    Applied,
    /// A CAS timed out: it may or may not have been chosen.
    Unknown,
    GaveUp,
}

/// Read-modify-CAS increment of a counter kept in the register; retries
/// conflicts, stops at the first outcome it cannot know.
async fn increment(meta: &MetadataClient, key: &str, deadline: Instant) -> Inc {
    while Instant::now() < deadline {
        let Ok(current) = meta.read_typed::<u64>(key, Duration::from_secs(5)).await else {
            continue;
        };
        let (version, value) = current.unwrap_or((0, 0));
        match meta
            .cas_typed(key, version, &(value + 1), Duration::from_secs(5))
            .await
        {
            Ok(keel::actors::metadata::CasOutcome::Applied { version: v }) => {
                assert_eq!(v, version + 1);
                return Inc::Applied;
            }
            Ok(keel::actors::metadata::CasOutcome::Conflict(_)) => continue,
            Err(_) => return Inc::Unknown,
        }
    }
    Inc::GaveUp
}

#[test]
fn concurrent_proposers_on_all_nodes_converge() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let per_node = 15;
    let deadline = Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> = (1..=3).map(|n| client(&rig, n)).collect();
    let done: Vec<Inc> =
        rig.block_on(futures::future::join_all(clients.iter().flat_map(|c| {
            (0..per_node).map(move |_| increment(c, "test/counter", deadline))
        })));
    let applied = done.iter().filter(|d| **d == Inc::Applied).count() as u64;
    let unknown = done.iter().filter(|d| **d == Inc::Unknown).count() as u64;
    assert!(
        !done.contains(&Inc::GaveUp),
        "some increments neither applied nor timed out"
    );
    // How many of 45 contending read-modify-CAS calls win depends on the
    // machine's load (a write that reaches only a minority is reported
    // unknown, not retried); that some do, and that the register is live for
    // every node afterwards, does not.
    assert!(applied > 0, "no increment of {} applied", 3 * per_node);
    let mut applied = applied;
    for c in &clients {
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            rig.block_on(increment(c, "test/counter", deadline)),
            Inc::Applied
        );
        applied += 1;
    }
    for n in 1..=3 {
        let (version, value) = rig
            .block_on(client(&rig, n).read_typed::<u64>("test/counter", Duration::from_secs(2)))
            .unwrap()
            .unwrap();
        // Every chosen CAS raised the version by one and the value by one: no
        // acknowledged increment was lost, none applied twice (at most the
        // unknown ones may have landed), and every node agrees.
        assert!(
            (applied..=applied + unknown).contains(&value),
            "N{n} reads {value}; {applied} applied, {unknown} unknown"
        );
        assert_eq!(version, value);
    }
}

#[test]
fn a_minority_cannot_write_and_the_majority_can() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let meta1 = client(&rig, 1);
    rig.block_on(meta1.cas_typed("test/k", 0, &"before".to_string(), Duration::from_secs(2)))
        .unwrap();
    rig.isolate(1);
    let r = rig.block_on(meta1.cas_typed(
        "test/k",
        1,
        &"minority".to_string(),
        Duration::from_millis(1500),
    ));
    assert!(r.is_err(), "an isolated proposer wrote: {r:?}");
    let r = rig.block_on(meta1.read_typed::<String>("test/k", Duration::from_millis(500)));
    assert!(
        r.is_err(),
        "an isolated proposer read without a majority: {r:?}"
    );
    let meta2 = client(&rig, 2);
    let (v, value) = rig
        .block_on(meta2.read_typed::<String>("test/k", Duration::from_secs(2)))
        .unwrap()
        .unwrap();
    assert_eq!(
        (v, value.as_str()),
        (1, "before"),
        "the minority's attempt changed nothing"
    );
    rig.block_on(meta2.cas_typed("test/k", 1, &"majority".to_string(), Duration::from_secs(2)))
        .unwrap();
    rig.heal();
    let (v, value) = rig
        .block_on(meta1.read_typed::<String>("test/k", Duration::from_secs(3)))
        .unwrap()
        .unwrap();
    assert_eq!((v, value.as_str()), (2, "majority"));
}

#[test]
fn acceptor_restarts_lose_nothing() {
    let mut rig = Rig::builder(3).logs_only().start().unwrap();
    let meta = client(&rig, 1);
    for i in 0..5u64 {
        let r = rig
            .block_on(meta.cas_typed(&format!("test/r{i}"), 0, &i, Duration::from_secs(2)))
            .unwrap();
        assert!(matches!(
            r,
            keel::actors::metadata::CasOutcome::Applied { version: 1 }
        ));
    }
    // Restart every node, one after the other, then all at once.
    for n in 1..=3 {
        rig.kill(n);
        rig.restart(n).unwrap();
    }
    for n in 1..=3 {
        rig.kill(n);
    }
    for n in 1..=3 {
        rig.restart(n).unwrap();
    }
    for n in 1..=3 {
        for i in 0..5u64 {
            let got = rig
                .block_on(
                    client(&rig, n)
                        .read_typed::<u64>(&format!("test/r{i}"), Duration::from_secs(5)),
                )
                .unwrap();
            assert_eq!(got, Some((1, i)), "N{n} lost test/r{i}");
        }
    }
}
