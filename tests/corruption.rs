//! Corruption is detected, never served: bytes flipped in one log-server's
//! record files on disk are found by their checksums, counted, treated as
//! missing there (readers get the record from a peer, which also stores it
//! back), and a seal never counts a server that lost records.

mod common;

use common::*;
use keel::actors::log_server::{Store, StoreReply};
use keel::log::Record;
use keel::rig::Rig;
use keel::transport::FaultRule;
use keel::types::{LogletId, Lsn, NodeId, Offset};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn payload(tag: &str, i: usize) -> Vec<u8> {
    // Long and distinctive, so a byte of it can be found in a segment file.
    format!("{tag}-record-{i:04}-{}", "x".repeat(40)).into_bytes()
}

/// Flips one byte in the middle of every copy of `needle` in the segment
/// files under `dir`; returns how many copies it damaged.
fn flip_on_disk(dir: &Path, needle: &[u8]) -> usize {
    let mut hits = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("seg") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let mut changed = false;
        let mut at = 0;
        while let Some(pos) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
            let p = at + pos + needle.len() / 2;
            bytes[p] ^= 0x5a;
            changed = true;
            hits += 1;
            at = p + 1;
        }
        if changed {
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    hits
}

fn local(rig: &Rig, node: u32, loglet: LogletId, offset: Offset) -> Option<Vec<u8>> {
    rig.node(node)
        .storage
        .log
        .read_records(loglet, offset, offset + 1, usize::MAX)
        .unwrap()
        .into_iter()
        .next()
        .map(|(_, r)| r)
}

#[test]
fn a_flipped_byte_is_found_counted_never_served_and_repaired_from_a_peer() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    for i in 0..30 {
        assert!(append_one(
            &rig,
            1,
            LOG,
            payload("flip", i),
            Duration::from_secs(3),
            &mut appended
        ));
    }
    let loglet = chain(&rig, 1, LOG).tail().loglet;
    let target = 12usize;
    // A node that holds the target record (r = 2: not necessarily all three).
    let victim = (1..=3)
        .find(|n| local(&rig, *n, loglet, target as Offset).is_some())
        .expect("two nodes hold every committed record");
    let needle = payload("flip", target);
    assert_eq!(
        flip_on_disk(rig.node(victim).storage.log.records().dir(), &needle),
        1
    );

    // Every reader on the damaged node gets every record intact.
    let upto = *appended.acked.keys().max().unwrap();
    let read = read_upto(&rig, victim, LOG, upto, Duration::from_secs(10));
    assert_log_matches(&read, &appended, |_| true);
    for (lsn, p) in &read {
        assert_eq!(p, &appended.acked[lsn], "LSN {lsn} served damaged");
    }
    let stats = rig.node(victim).storage.stats().records;
    assert_eq!(stats.damaged_records, 1, "found and counted: {stats:?}");
    assert_eq!(stats.recent_damage, vec![format!("{loglet}/{target}")]);

    // The reader fetched the record from a peer and stored it back here.
    rig.wait_for(
        "the damaged record repaired from a peer",
        Duration::from_secs(5),
        |r| local(r, victim, loglet, target as Offset).as_deref() == Some(&needle[..]),
    )
    .unwrap();
    assert_eq!(rig.node(victim).storage.stats().records.unrepaired, 0);
    // And the node kept working: it still appends and reads.
    assert!(append_one(
        &rig,
        victim,
        LOG,
        payload("after", 0),
        Duration::from_secs(3),
        &mut appended
    ));
}

#[test]
fn a_seal_does_not_count_a_server_that_lost_records() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    for i in 0..5 {
        assert!(append_one(
            &rig,
            1,
            LOG,
            payload("base", i),
            Duration::from_secs(3),
            &mut appended
        ));
    }
    let before = chain(&rig, 1, LOG);
    let tail = before.tail().clone();
    let first = (appended.acked.len()) as Offset;
    assert_eq!(tail.base_lsn, Lsn(1));
    // Offsets 5..10 stored on two servers but never released (as if their
    // sequencer died right after storing): a seal must find them on any
    // f-majority, since one of the two may have acknowledged them.
    // N2, which lacks them, answers a seal from N1 before N3 (N1's packets
    // to N3 are held back 150 ms): a sealer counting the damaged N1 with N2
    // would cut the records off.
    let (damaged, intact) = (1u32, 3u32);
    // N2 calls both servers directly below: a call on a peer with no live
    // connection yet fails at once, so the mesh must be up first.
    rig.wait_connected(Duration::from_secs(5)).unwrap();
    let records: Vec<Record> = (0..5).map(|i| Record(payload("unreleased", i))).collect();
    for n in [damaged, intact] {
        let store = Store {
            loglet: tail.loglet,
            first,
            records: Arc::new(records.clone()),
            known_global_tail: 0,
            repair: false,
            from: None,
        };
        let reply = rig.block_on(
            rig.node(2)
                .net
                .call(NodeId(n), store, Duration::from_secs(2)),
        );
        assert!(matches!(reply, Ok(StoreReply::Stored { .. })), "{reply:?}");
    }
    // The damaged server loses every one of them on disk.
    for r in &records {
        assert_eq!(
            flip_on_disk(rig.node(damaged).storage.log.records().dir(), &r.0),
            1
        );
    }
    // The damaged node itself drives the seal: its own answers come first,
    // so it would be in the first f-majority if it were counted.
    let n3 = rig.config(1).address(NodeId(3)).unwrap().quic;
    rig.fault(1).set_rule(
        n3,
        FaultRule {
            delay_outbound: Some(Duration::from_millis(150)),
            ..FaultRule::default()
        },
    );
    let logs = rig.node(damaged).logs.clone();
    let sealed = rig
        .block_on(logs.seal_and_extend(&tail, Duration::from_secs(10)))
        .expect("seal with the usable servers");
    sealed.validate().unwrap();
    assert_eq!(
        sealed.segment(tail.loglet).unwrap().sealed_tail,
        Some(first + records.len() as Offset),
        "the records only the intact server still holds were kept"
    );
    // They read back, intact, from every node.
    let read = read_upto(&rig, 3, LOG, Lsn(10), Duration::from_secs(10));
    assert_eq!(read.len(), 10);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(read[5 + i].1, r.0);
    }
}
