//! Snapshots with real nodes: a replica that was down while the others took
//! load and trimmed the log past it restarts, finds the log cannot serve it
//! (status `BehindTrim`, then `RestoringSnapshot`), restores a peer's
//! snapshot, follows the log on and ends with the others' state; a damaged
//! snapshot is refused and the next peer's is used.

mod common;

use common::{
    add_counters as add, post, processor_status as status, trimmed_below, wait_for_leaders,
};
use keel::rig::Rig;
use keel::types::{Lsn, NodeId, PartitionId};
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn a_replica_behind_the_trim_point_restores_a_snapshot_skipping_a_damaged_one() {
    common::trace();
    let mut rig = Rig::builder(3)
        .partitions(1)
        .snapshot_every(20)
        .start()
        .unwrap();
    wait_for_leaders(&rig, Duration::from_secs(20));
    let leader = (1..=3)
        .find(|n| status(&rig, *n).is_some_and(|s| format!("{:?}", s.mode) == "Leader"))
        .expect("a leader");
    let victim = (1..=3).find(|n| *n != leader).unwrap();
    let live: Vec<u32> = (1..=3).filter(|n| *n != victim).collect();
    add(&rig, leader, 0, 30);
    rig.wait_for(
        "the victim applied the first load",
        Duration::from_secs(10),
        |r| status(r, victim).is_some_and(|s| s.applied_lsn.0 >= 31),
    )
    .unwrap();
    rig.kill(victim);
    let behind = Lsn(31);

    // The others take load, snapshot it, and trim the log past the victim.
    add(&rig, leader, 30, 120);
    // Once both applied everything and snapshotted it (fewer than 20
    // records after their newest snapshot), no new snapshot comes: the one
    // damaged below stays the newest.
    let last = status(&rig, leader).unwrap().applied_lsn;
    let held = rig
        .wait_until(
            "both live nodes applied the load and hold their last snapshot",
            Duration::from_secs(15),
            |r| {
                let lsns: Vec<Lsn> = live
                    .iter()
                    .filter_map(|n| {
                        let s = status(r, *n)?;
                        let snap = s.snapshot_lsn?;
                        (s.applied_lsn == last && last.0 - snap.0 < 20).then_some(snap)
                    })
                    .collect();
                (lsns.len() == 2).then_some(lsns)
            },
        )
        .unwrap();
    let trimmed = rig
        .wait_until(
            "the live nodes trim past the silent victim",
            Duration::from_secs(30),
            |r| {
                let t = live.iter().map(|n| trimmed_below(r, *n)).min()?;
                (t.0 > behind.0 + 1).then_some(t)
            },
        )
        .unwrap();
    eprintln!("snapshots held {held:?}; the log is trimmed below {trimmed}");

    // Damage the snapshot a fetch tries first (the newest, lowest node id on
    // a tie): the victim must refuse it and use the other node's.
    let mut order: Vec<(Lsn, u32)> = live
        .iter()
        .map(|n| (status(&rig, *n).unwrap().snapshot_lsn.unwrap(), *n))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let (damaged_lsn, damaged_on) = order[0];
    let (good_lsn, good_on) = order[1];
    let file = keel::storage::SnapshotDir::new(rig.config(damaged_on).snapshot_dir())
        .path(PartitionId(0), damaged_lsn);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    eprintln!("damaged N{damaged_on}'s snapshot at {damaged_lsn}; N{good_on} holds {good_lsn}");

    // While the node with the good snapshot does not offer it (its file
    // moved aside), the victim can only find the damaged one: it refuses it
    // and stays behind.
    let good_file = keel::storage::SnapshotDir::new(rig.config(good_on).snapshot_dir())
        .path(PartitionId(0), good_lsn);
    let aside = good_file.with_extension("aside");
    std::fs::rename(&good_file, &aside).unwrap();
    rig.restart(victim).unwrap();
    let mut seen = BTreeSet::new();
    let behind = rig.wait_for(
        "the victim says it is behind the trim point",
        Duration::from_secs(20),
        |r| {
            let s = status(r, victim);
            if let Some(s) = &s {
                seen.insert(s.status.clone());
            }
            s.is_some_and(|s| s.status == "BehindTrim")
        },
    );
    if let Err(e) = behind {
        panic!("{e}; the victim: {:?}", status(&rig, victim));
    }
    let refused = rig
        .wait_until(
            "the victim refuses the damaged snapshot",
            Duration::from_secs(20),
            |r| {
                let s = status(r, victim)?;
                seen.insert(s.status.clone());
                s.snapshot_fetch_error
            },
        )
        .unwrap();
    eprintln!("the victim says: {refused}");
    assert!(
        refused.contains(&format!("{}", NodeId(damaged_on))) && refused.contains("damaged"),
        "{refused}"
    );
    let s = status(&rig, victim).unwrap();
    assert_eq!(
        s.snapshots_restored, 0,
        "the damaged snapshot was refused: {s:?}"
    );
    assert!(s.applied_lsn < trimmed, "{s:?}");
    std::fs::rename(&aside, &good_file).unwrap();
    let restored = rig
        .wait_until(
            "the victim restores a snapshot",
            Duration::from_secs(30),
            |r| {
                let s = status(r, victim)?;
                seen.insert(s.status.clone());
                (s.snapshots_restored >= 1).then_some(s)
            },
        )
        .unwrap();
    eprintln!("statuses seen: {seen:?}");
    assert!(seen.contains("BehindTrim"), "{seen:?}");
    assert!(restored.applied_lsn >= good_lsn, "{restored:?}");
    rig.wait_for(
        "the victim keeps the restored snapshot",
        Duration::from_secs(10),
        |r| status(r, victim).is_some_and(|s| s.snapshot_lsn >= Some(good_lsn)),
    )
    .unwrap();
    if damaged_lsn != good_lsn {
        assert_eq!(
            status(&rig, victim).unwrap().snapshot_lsn,
            Some(good_lsn),
            "the good snapshot was restored and kept, not the damaged one"
        );
    }

    // It follows the log from there: new records apply everywhere, and the
    // three replicas end equal.
    common::load_then_replicas_equal(&rig, leader, 150, 20);
    let get = post(&rig.http(victim), "Counter/c3/get", serde_json::Value::Null);
    assert_eq!(
        (get.status, get.body.clone()),
        (200, serde_json::json!(17)),
        "{get:?}"
    );
}
