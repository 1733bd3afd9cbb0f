//! A node that lost its disk rejoins under its old identity: it fences what
//! it may have held, learns the register before it votes, copies its log
//! records back, and then losing either other node loses nothing
//! acknowledged.

mod common;

use common::*;
use keel::actors::metadata::messages::{AcceptorError, ListKeys};
use keel::log::Chain;
use keel::rig::Rig;
use keel::storage::identity;
use keel::types::{Lsn, NodeId};
use std::time::Duration;

/// The rejoin step node `id` shows in its status (`None`: no rejoin).
fn rejoin_step(rig: &Rig, id: u32) -> Option<String> {
    let status = rig.block_on((rig.node(id).status)());
    status.rejoin.map(|r| r.step)
}

/// Which nodes hold the record at `lsn` of `chain` locally.
fn holders(rig: &Rig, chain: &Chain, lsn: Lsn) -> Vec<u32> {
    let segment = chain.segment_for(lsn);
    let offset = segment.offset_of(lsn).expect("lsn in its segment");
    (1..=3)
        .filter(|&n| rig.is_running(n))
        .filter(|&n| {
            let held = rig.node(n).storage.log.read_records(
                segment.loglet,
                offset,
                offset + 1,
                usize::MAX,
            );
            held.unwrap().iter().any(|(o, _)| *o == offset)
        })
        .collect()
}

/// Runs `keelctl --url <N1> args`: whether it succeeded, and its output.
fn keelctl(rig: &Rig, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keelctl"))
        .arg("--url")
        .arg(rig.http(1))
        .args(args)
        .output()
        .expect("keelctl runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_wiped_node_rejoins_and_then_losing_either_other_node_loses_nothing() {
    trace();
    let mut rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    for i in 0..40 {
        append_one(
            &rig,
            1,
            LOG,
            format!("before-{i}").into_bytes(),
            Duration::from_secs(5),
            &mut appended,
        );
    }
    assert!(appended.acked.len() >= 30, "{appended:?}");

    rig.wipe(3).unwrap();
    assert!(!rig.config(3).data_dir.exists(), "the disk really is gone");
    // Without --rejoin a blank directory is refused.
    let err = rig.restart(3).unwrap_err().to_string();
    assert!(err.contains("--rejoin"), "{err}");
    rig.restart_rejoining(3).unwrap();
    rig.wait_for("N3's rejoin completes", Duration::from_secs(60), |r| {
        rejoin_step(r, 3).as_deref() == Some("done")
    })
    .unwrap();
    assert!(!identity::rejoining(&rig.config(3).data_dir));
    let (ok, out) = keelctl(&rig, &["rejoin", "N3", "--wait", "30"]);
    assert!(ok && out.contains("N3: done"), "ok={ok}: {out:?}");
    let (ok, out) = keelctl(&rig, &["rejoin", "N1"]);
    assert!(
        ok && out.contains("no rejoin since it started"),
        "ok={ok}: {out:?}"
    );

    // Every acknowledged record is back on N3 and on two nodes at least.
    let chain = chain(&rig, 1, LOG);
    for lsn in appended.acked.keys() {
        let held = holders(&rig, &chain, *lsn);
        assert!(
            held.contains(&3) && held.len() >= 2,
            "{lsn} held by {held:?}"
        );
    }
    // The rejoined acceptor votes: the register answers it.
    let keys = rig.block_on(
        rig.node(1)
            .net
            .call(NodeId(3), ListKeys {}, Duration::from_secs(2)),
    );
    assert!(matches!(keys, Ok(Ok(ref k)) if !k.is_empty()), "{keys:?}");

    for gone in [1, 2] {
        let upto = *appended.acked.keys().last().unwrap();
        rig.kill(gone);
        let other = 3 - gone;
        for reader in [other, 3] {
            let read = read_upto(&rig, reader, LOG, upto, Duration::from_secs(30));
            assert_log_matches(&read, &appended, |_| true);
        }
        // The survivors still take writes together.
        append_until_acked(
            &rig,
            3,
            LOG,
            &format!("without-n{gone}"),
            Duration::from_secs(30),
            &mut appended,
        );
        rig.restart(gone).unwrap();
    }
}

#[test]
fn a_rejoin_waits_for_its_peers_and_its_acceptor_does_not_vote_meanwhile() {
    trace();
    let mut rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    append_until_acked(&rig, 1, LOG, "a", Duration::from_secs(10), &mut appended);
    rig.wipe(2).unwrap();
    rig.restart_rejoining(2).unwrap();
    // The fence is up (the node started); cut N2 from N1: the rejoin needs
    // both other nodes (every key from a majority of the others, every
    // record from every other member), so it cannot finish.
    rig.cut(1, 2);
    let step = rig
        .wait_until("N2 shows a rejoin step", Duration::from_secs(10), |r| {
            rejoin_step(r, 2).filter(|s| s == "register" || s == "log")
        })
        .unwrap();
    if step == "register" {
        let answer = rig.block_on(rig.node(3).net.call(
            NodeId(2),
            ListKeys {},
            Duration::from_secs(2),
        ));
        assert!(
            matches!(answer, Ok(Err(AcceptorError::Rejoining))),
            "a rejoining acceptor refuses: {answer:?}"
        );
    }
    assert!(identity::rejoining(&rig.config(2).data_dir));
    rig.heal();
    rig.wait_for(
        "N2's rejoin completes after the heal",
        Duration::from_secs(60),
        |r| rejoin_step(r, 2).as_deref() == Some("done"),
    )
    .unwrap();
    assert!(!identity::rejoining(&rig.config(2).data_dir));
    // A plain restart after the rejoin shows no rejoin at all.
    rig.restart(2).unwrap();
    assert_eq!(rejoin_step(&rig, 2), None);
    rig.kill(2);
    let (ok, out) = keelctl(&rig, &["rejoin", "2"]);
    assert!(!ok && out.contains("N2 is down or unreachable"), "{out}");
}

#[test]
fn a_node_wiped_while_the_log_was_trimmed_past_it_gets_its_state_from_a_snapshot() {
    trace();
    let mut rig = Rig::builder(3)
        .partitions(1)
        .snapshot_every(20)
        .start()
        .unwrap();
    wait_for_leaders(&rig, Duration::from_secs(20));
    let leader = (1..=3)
        .find(|n| processor_status(&rig, *n).is_some_and(|s| format!("{:?}", s.mode) == "Leader"))
        .expect("a leader");
    let victim = (1..=3).find(|n| *n != leader).unwrap();
    let live: Vec<u32> = (1..=3).filter(|n| *n != victim).collect();
    add_counters(&rig, leader, 0, 30);
    rig.wipe(victim).unwrap();
    // The others take load and trim past the wiped node (their snapshots
    // cover what it would need).
    add_counters(&rig, leader, 30, 120);
    rig.wait_for(
        "the live nodes trim the log",
        Duration::from_secs(30),
        |r| live.iter().all(|n| trimmed_below(r, *n).0 > 1),
    )
    .unwrap();
    rig.restart_rejoining(victim).unwrap();
    rig.wait_for("the rejoin completes", Duration::from_secs(60), |r| {
        rejoin_step(r, victim).as_deref() == Some("done")
    })
    .unwrap();
    let restored = rig
        .wait_until(
            "the wiped node restores a snapshot",
            Duration::from_secs(30),
            |r| processor_status(r, victim).filter(|s| s.snapshots_restored >= 1),
        )
        .unwrap();
    assert!(restored.applied_lsn.0 > 1, "{restored:?}");
    load_then_replicas_equal(&rig, leader, 150, 20);
    let get = post(&rig.http(victim), "Counter/c3/get", serde_json::Value::Null);
    assert_eq!((get.status, get.body), (200, serde_json::json!(17)));
}
