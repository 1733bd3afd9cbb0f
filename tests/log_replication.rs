//! The replicated log on the rig (3 nodes, r = 2): availability under one
//! isolated node, no loss or duplication across seals, restarts and heals.

mod common;

use common::*;
use keel::log::{AppendError, Record};
use keel::rig::Rig;
use keel::types::{LogId, Lsn};
use std::time::{Duration, Instant};

fn payload(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag}-{i}").into_bytes()
}

#[test]
fn appends_continue_while_any_one_node_is_isolated() {
    trace();
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    let timeout = Duration::from_secs(3);
    // Warm up: the log exists and has a sequencer.
    assert!(append_one(
        &rig,
        1,
        LOG,
        payload("warm", 0),
        timeout,
        &mut appended
    ));
    let mut n = 0;
    for isolated in [1u32, 2, 3] {
        let sequencer = sequencer_of(&rig, 1, LOG).0;
        let appender = if isolated == 1 { 2 } else { 1 };
        let cut_at = Instant::now();
        rig.isolate(isolated);
        // Appends from the majority side keep being acknowledged.
        let mut acked = 0;
        let mut first_ack_after = None;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until && acked < 30 {
            n += 1;
            if append_one(
                &rig,
                appender,
                LOG,
                payload("iso", n),
                timeout,
                &mut appended,
            ) {
                acked += 1;
                first_ack_after.get_or_insert(cut_at.elapsed());
            }
        }
        assert!(
            acked >= 10,
            "only {acked} appends acknowledged with N{isolated} isolated"
        );
        if isolated == sequencer {
            // The chain moved past the isolated sequencer's segment within 3 s.
            let moved = rig
                .wait_for(
                    "chain extended past the isolated sequencer",
                    Duration::from_secs(3),
                    |r| sequencer_of(r, appender, LOG).0 != isolated,
                )
                .map(|_| cut_at.elapsed());
            let moved = moved.unwrap();
            eprintln!("N{isolated} (sequencer) isolated: new segment after {moved:?}, first ack after {:?}", first_ack_after.unwrap());
            assert!(
                moved < Duration::from_secs(3),
                "new segment only after {moved:?}"
            );
        }
        rig.heal();
    }
    let upto = *appended.acked.keys().max().unwrap();
    for node in 1..=3 {
        let read = read_upto(&rig, node, LOG, upto, Duration::from_secs(10));
        assert_log_matches(&read, &appended, |_| true);
    }
}

#[test]
fn all_nodes_sealing_the_same_loglet_end_with_one_consistent_chain() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    for i in 0..20 {
        assert!(append_one(
            &rig,
            1 + (i % 3) as u32,
            LOG,
            payload("pre", i),
            Duration::from_secs(3),
            &mut appended
        ));
    }
    let before = chain(&rig, 1, LOG);
    let tail = before.tail().clone();
    let results: Vec<_> = rig.block_on(futures::future::join_all((1..=3).map(|n| {
        let logs = rig.node(n).logs.clone();
        let tail = tail.clone();
        async move { logs.seal_and_extend(&tail, Duration::from_secs(10)).await }
    })));
    let chains: Vec<_> = results.into_iter().map(|r| r.expect("seal")).collect();
    let after = chain(&rig, 2, LOG);
    after.validate().unwrap();
    assert_eq!(
        after.segments.len(),
        before.segments.len() + 1,
        "exactly one new segment"
    );
    let sealed = &after.segments[before.segments.len() - 1];
    assert_eq!(
        sealed.sealed_tail,
        Some(20 - (tail.base_lsn.0 - 1)),
        "every acknowledged record kept"
    );
    for c in &chains {
        // Every sealer reports a chain in which the loglet is sealed at the same tail.
        assert_eq!(
            c.segment(tail.loglet).unwrap().sealed_tail,
            sealed.sealed_tail
        );
    }
    assert!(append_one(
        &rig,
        3,
        LOG,
        payload("post", 0),
        Duration::from_secs(3),
        &mut appended
    ));
    let upto = *appended.acked.keys().max().unwrap();
    assert_log_matches(
        &read_upto(&rig, 1, LOG, upto, Duration::from_secs(5)),
        &appended,
        |_| true,
    );
}

#[test]
fn an_isolated_sequencer_cannot_acknowledge_once_its_loglet_is_sealed() {
    trace();
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    assert!(append_one(
        &rig,
        1,
        LOG,
        payload("a", 0),
        Duration::from_secs(3),
        &mut appended
    ));
    let seq = sequencer_of(&rig, 1, LOG).0;
    let other = if seq == 1 { 2 } else { 1 };
    rig.isolate(seq);
    // The majority seals and moves on.
    append_until_acked(&rig, other, LOG, "b", Duration::from_secs(5), &mut appended);
    assert_ne!(sequencer_of(&rig, other, LOG).0, seq);
    // On the isolated node, its own (old) sequencer can store only locally:
    // one copy is below r = 2, and nobody else accepts it.
    let logs = rig.node(seq).logs.clone();
    let result = rig.block_on(logs.append(
        LOG,
        vec![Record(b"from-the-minority".to_vec())],
        Duration::from_secs(2),
    ));
    assert!(
        matches!(
            result,
            Err(AppendError::Indeterminate(_)) | Err(AppendError::Unavailable(_))
        ),
        "an isolated sequencer acknowledged an append: {result:?}"
    );
    rig.heal();
    append_until_acked(&rig, other, LOG, "c", Duration::from_secs(5), &mut appended);
    let upto = *appended.acked.keys().max().unwrap();
    let read = read_upto(&rig, seq, LOG, upto, Duration::from_secs(10));
    assert!(
        read.iter().all(|(_, p)| p != b"from-the-minority"),
        "the minority's record surfaced after the heal"
    );
}

#[test]
fn oversized_records_and_unknown_logs_get_typed_errors() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let logs = rig.node(1).logs.clone();
    let big = Record(vec![0u8; keel::log::MAX_RECORD_BYTES + 1]);
    let r = rig.block_on(logs.append(LOG, vec![big], Duration::from_secs(1)));
    assert!(matches!(r, Err(AppendError::TooLarge { .. })), "{r:?}");
    let r = rig.block_on(logs.append(
        LogId(999),
        vec![Record(b"x".to_vec())],
        Duration::from_secs(1),
    ));
    assert_eq!(r, Err(AppendError::UnknownLog(LogId(999))));
    let r = rig.block_on(logs.read(LogId(999), Lsn(1), 10, Duration::from_millis(10)));
    assert!(r.is_err());
    let r = rig.block_on(logs.append(LOG, vec![], Duration::from_secs(1)));
    assert!(
        matches!(r, Err(AppendError::TooLarge { .. })),
        "an empty append is refused: {r:?}"
    );
}

#[test]
fn trimming_drops_records_below_the_point_and_keeps_the_rest() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    for i in 0..30 {
        assert!(append_one(
            &rig,
            1,
            LOG,
            payload("t", i),
            Duration::from_secs(3),
            &mut appended
        ));
    }
    let logs = rig.node(1).logs.clone();
    rig.block_on(logs.trim(LOG, Lsn(21)));
    let loglet = chain(&rig, 1, LOG).tail().loglet;
    // Each append above was one record, so each stored run is one record and
    // the trim leaves nothing below offset 20 (LSN 21) on any node. Above it,
    // r = 2 promises two copies of every committed record, not three: the
    // sequencer stops resending to the third server once two stored a batch
    // (a node whose link came up late may lack the first records for good).
    let mut copies = std::collections::BTreeMap::<u64, u32>::new();
    for n in 1..=3 {
        let stored = rig
            .node(n)
            .storage
            .log
            .read_records(loglet, 0, 100, usize::MAX)
            .unwrap();
        let kept_below: Vec<u64> = stored.iter().map(|(o, _)| *o).filter(|o| *o < 20).collect();
        assert!(
            kept_below.is_empty(),
            "N{n} kept trimmed offsets {kept_below:?}"
        );
        for (o, _) in &stored {
            *copies.entry(*o).or_default() += 1;
        }
    }
    for offset in 20..30 {
        let n = copies.get(&offset).copied().unwrap_or(0);
        assert!(
            n >= 2,
            "offset {offset} (LSN {}) has {n} copies after the trim",
            offset + 1
        );
    }
    let upto = *appended.acked.keys().max().unwrap();
    let logs2 = rig.node(2).logs.clone();
    let tail = rig
        .block_on(logs2.read(LOG, Lsn(21), 100, Duration::from_secs(2)))
        .unwrap();
    assert_eq!(tail.len() as u64, upto.0 - 20);
    assert_eq!(tail[0].1 .0, appended.acked[&Lsn(21)]);
}

/// Every seal adds a segment; trimming removes the segments below the trim
/// point from the chain, so the chain (carried by every register round on
/// it) stays as small as the untrimmed log, and a read from below the
/// log's start is told so at once instead of waiting.
#[test]
fn trimmed_segments_leave_the_chain_so_it_stays_bounded() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    let mut appended = Appended::default();
    let logs = rig.node(1).logs.clone();
    let rounds = 40;
    let mut largest = 0;
    for i in 0..rounds {
        assert!(append_one(
            &rig,
            1,
            LOG,
            payload("s", i),
            Duration::from_secs(3),
            &mut appended
        ));
        let tail = chain(&rig, 1, LOG).tail().clone();
        rig.block_on(logs.seal_and_extend(&tail, Duration::from_secs(10)))
            .expect("seal");
        // Trim below everything but the last record every 5 seals.
        if i % 5 == 4 {
            let last = *appended.acked.keys().max().unwrap();
            rig.block_on(logs.trim(LOG, last));
        }
        let c = chain(&rig, 2, LOG);
        largest = largest.max(c.segments.len());
    }
    let c = chain(&rig, 3, LOG);
    c.validate().unwrap();
    assert_eq!(c.tail().index as usize, rounds, "one segment per seal");
    assert!(
        largest <= 7,
        "the chain held up to {largest} segments after {rounds} seals"
    );
    let last = *appended.acked.keys().max().unwrap();
    assert!(c.first_lsn() > Lsn(1) && c.first_lsn() <= last);
    // Below the log's start: a typed answer, at once.
    let started = Instant::now();
    let below = rig.block_on(logs.read(LOG, Lsn(1), 10, Duration::from_secs(5)));
    assert!(
        matches!(below, Err(keel::log::ReadError::Trimmed { first, .. }) if first == c.first_lsn()),
        "{below:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // What was not trimmed reads back, on every node.
    for n in 1..=3 {
        let logs = rig.node(n).logs.clone();
        let read = rig
            .block_on(logs.read(LOG, last, 10, Duration::from_secs(3)))
            .unwrap();
        assert_eq!(read[0].1 .0, appended.acked[&last], "N{n}");
    }
}
