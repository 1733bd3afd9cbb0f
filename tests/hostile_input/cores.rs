//! Targets on the I/O-free protocol cores: the sequencer, the metadata
//! register's acceptor and proposer rules, the sealer's tail finding, and
//! the partition processor's state machine (`Applier::apply`).

use crate::support::*;
use keel::actors::env::Env;
use keel::actors::log_server::StoreReply;
use keel::actors::metadata::core::{AcceptReply, AcceptorState, Ballot, PrepareReply, Versioned};
use keel::actors::metadata::proposer::{current_value, Change, Outcome};
use keel::actors::partition_processor::core::{recover, Applier, Command, Invocation, Recovered};
use keel::actors::sealer::core::{repair_range, sealed_tail, SealedView};
use keel::actors::sequencer::core::{
    AppendOutcome, CallId, Effect, Input, SequencerConfig, SequencerCore, SequencerTuning,
};
use keel::log::Record;
use keel::node::CallError;
use keel::storage::Storage;
use keel::types::{Epoch, Lsn, NodeId, Offset, PartitionId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Runs a target whose cases are encoded inputs: the corpus first, then
/// `default` generated cases.
fn run<I: std::fmt::Debug + Serialize + for<'de> Deserialize<'de> + 'static>(
    target: &'static str,
    default: u64,
    budget: Duration,
    mut generate: impl FnMut(&mut Gen) -> I,
    mut check: impl FnMut(&I),
) {
    let seed = seed();
    let budget = Budget::new(target, budget);
    let corpus = corpus(target);
    for (path, bytes) in &corpus {
        let _guard = CaseGuard::new(target, corpus_label(path), bytes.clone());
        let input: I = rmp_serde::from_slice(bytes)
            .unwrap_or_else(|e| panic!("corpus file {} does not decode: {e}", path.display()));
        check(&input);
    }
    let cases = case_range(default);
    let n = cases.end - cases.start;
    for case in cases {
        let mut g = Gen::for_case(seed, target, case);
        let input = std::rc::Rc::new(generate(&mut g));
        let kept = input.clone();
        let _guard = CaseGuard::lazy(target, case_label(seed, case), move || {
            rmp_serde::to_vec_named(&*kept).expect("encoding an input")
        });
        if verbose() {
            eprintln!("{input:#?}");
        }
        check(&input);
        if case % 256 == 0 {
            budget.check(case);
        }
    }
    budget.report(n, corpus.len());
}

// ---------------------------------------------------------------------------
// Sequencer

/// One input to the sequencer core.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum SeqOp {
    /// An append of `n` records (empty ones included).
    Enqueue {
        n: u8,
    },
    Flush,
    Stored {
        from: u32,
        first: Offset,
    },
    Failed {
        from: u32,
        first: Offset,
    },
    Sealed,
    Tick {
        ms: u64,
    },
}

/// One sequencer case: the segment it serves, and what happens to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SeqInput {
    /// The segment's base LSN (from a peer's `Append`: anything).
    base_lsn: u64,
    /// The segment's nodeset (node ids).
    nodeset: Vec<u32>,
    /// Copies a commit needs.
    replication: u8,
    /// Appends, flushes, acknowledgements, failures, seals and ticks.
    ops: Vec<SeqOp>,
}

fn seq_input(g: &mut Gen) -> SeqInput {
    // Only segments a sequencer can be started for (the shell validates
    // them): nodeset 1..=5 distinct nodes, 1 <= r <= n, any base LSN.
    let n = g.range(1, 5) as u32;
    let nodeset: Vec<u32> = (1..=n).collect();
    let replication = g.range(1, n as u64) as u8;
    let base_lsn = match g.below(4) {
        0 => 1,
        1 => u64::MAX - g.range(0, 8),
        _ => g.edgy_u64().max(1),
    };
    let mut firsts: Vec<Offset> = vec![0];
    let ops = (0..g.range(1, 24))
        .map(|_| match g.below(10) {
            0..=2 => SeqOp::Enqueue {
                n: *g.pick(&[0, 1, 1, 2, 3, 7]),
            },
            3 | 4 => SeqOp::Flush,
            5..=7 => {
                let first = if g.one_in(8) {
                    g.edgy_u64()
                } else {
                    *g.pick(&firsts)
                };
                firsts.push(first.wrapping_add(g.range(0, 3)));
                SeqOp::Stored {
                    // Mostly the nodeset; a reply from elsewhere rarely.
                    from: if g.one_in(10) {
                        9
                    } else {
                        g.range(1, n as u64) as u32
                    },
                    first,
                }
            }
            8 => SeqOp::Failed {
                from: g.range(1, n as u64) as u32,
                first: *g.pick(&firsts),
            },
            _ if g.one_in(6) => SeqOp::Sealed,
            _ => SeqOp::Tick {
                ms: *g.pick(&[1, 100, 301, 3001, u32::MAX as u64]),
            },
        })
        .collect();
    SeqInput {
        base_lsn,
        nodeset,
        replication,
        ops,
    }
}

/// Record `i` of waiter `waiter`'s append: the two as 8 bytes, so every
/// record is distinct and tells whose it is.
fn seq_record(waiter: u32, i: usize) -> Record {
    let mut b = waiter.to_be_bytes().to_vec();
    b.extend_from_slice(&(i as u32).to_be_bytes());
    Record(b)
}

/// What the sequencer was asked and what it did, to check its answers.
struct SeqModel<'a> {
    input: &'a SeqInput,
    nodeset: Vec<NodeId>,
    /// Appends: waiter -> number of records.
    appends: HashMap<u32, usize>,
    /// What each offset was sent as (a sequencer writes an offset once).
    sent: BTreeMap<Offset, Record>,
    /// Each waiter's first offset, once its records were sent.
    assigned: HashMap<u32, Offset>,
    /// Batches sent (first offset -> length) and their acks from the nodeset.
    batches: BTreeMap<Offset, usize>,
    acks: HashMap<Offset, BTreeSet<NodeId>>,
    /// Calls awaiting their reply, by server and first offset (the latest).
    calls: BTreeMap<(NodeId, Offset), CallId>,
    replied: HashMap<u32, Result<AppendOutcome, keel::actors::sequencer::SequencerError>>,
}

impl SeqModel<'_> {
    fn absorb(&mut self, effects: Vec<Effect<u32>>) {
        let r = self.input.replication as usize;
        for e in effects {
            match e {
                Effect::Call { to, call, req, .. } => {
                    assert!(
                        self.nodeset.contains(&to),
                        "store to {to} outside the nodeset"
                    );
                    let (first, records) = (req.first, req.records);
                    self.calls.insert((to, first), call);
                    self.batches.insert(first, records.len());
                    for (i, rec) in records.iter().enumerate() {
                        let offset = first.checked_add(i as u64).expect("offsets overflow");
                        if let Some(before) = self.sent.get(&offset) {
                            assert_eq!(before, rec, "offset {offset} sent with two records");
                        }
                        self.sent.insert(offset, rec.clone());
                        if let (Some(w), Some(&[0, 0, 0, 0])) = (rec.0.get(..4), rec.0.get(4..8)) {
                            let w = u32::from_be_bytes(w.try_into().expect("4 bytes"));
                            self.assigned.entry(w).or_insert(offset);
                        }
                    }
                }
                Effect::Reply { token, outcome } => {
                    let waiter = token;
                    if let Some(before) = self.replied.insert(waiter, outcome.clone()) {
                        panic!("waiter {waiter} answered twice: {before:?}, then {outcome:?}");
                    }
                    match outcome {
                        Err(e) => assert_eq!(
                            self.appends[&waiter], 0,
                            "waiter {waiter} refused with {e:?}"
                        ),
                        Ok(AppendOutcome::Sealed) => assert!(
                            !self.assigned.contains_key(&waiter),
                            "waiter {waiter} told Sealed after its records were sent"
                        ),
                        Ok(AppendOutcome::Appended { first_lsn }) => {
                            let n = self.appends[&waiter];
                            assert!(n > 0, "waiter {waiter}: an empty append appended");
                            let offset = self.assigned[&waiter];
                            assert_eq!(
                                Some(first_lsn.0),
                                self.input.base_lsn.checked_add(offset),
                                "waiter {waiter}: LSN of offset {offset}"
                            );
                            // Every batch up to its last record has r acks.
                            let end = offset + n as u64;
                            for (&first, _) in self.batches.range(..end) {
                                let got = self.acks.get(&first).map_or(0, |a| a.len());
                                assert!(
                                    got >= r,
                                    "waiter {waiter} appended with batch {first} acked by {got} < {r}"
                                );
                            }
                        }
                        Ok(AppendOutcome::Indeterminate) => {}
                    }
                }
                Effect::PersistStartMark
                | Effect::Release { .. }
                | Effect::FlushWhenIdle
                | Effect::WatchCommit { .. }
                | Effect::Stop => {}
            }
        }
    }

    /// The reply to the latest call to `from` for the batch at `first`, if
    /// one is awaited (a reply without a call is nothing a host delivers).
    fn reply(
        &mut self,
        from: NodeId,
        first: Offset,
        result: Result<StoreReply, CallError>,
    ) -> Option<Input<u32>> {
        let call = self.calls.remove(&(from, first))?;
        if matches!(result, Ok(StoreReply::Stored { .. })) && self.batches.contains_key(&first) {
            self.acks.entry(first).or_default().insert(from);
        }
        Some(Input::Reply { call, from, result })
    }
}

const SEQ_LOGLET: keel::types::LogletId = keel::types::LogletId(1);

fn check_sequencer(input: &SeqInput) {
    let nodeset: Vec<NodeId> = input.nodeset.iter().copied().map(NodeId).collect();
    let mut core: SequencerCore<u32> = SequencerCore::new(SequencerConfig {
        loglet: SEQ_LOGLET,
        base_lsn: Lsn(input.base_lsn),
        nodeset: nodeset.clone(),
        replication: input.replication as usize,
        tuning: SequencerTuning::default(),
    });
    let mut m = SeqModel {
        input,
        nodeset: nodeset.clone(),
        appends: HashMap::new(),
        sent: BTreeMap::new(),
        assigned: HashMap::new(),
        batches: BTreeMap::new(),
        acks: HashMap::new(),
        calls: BTreeMap::new(),
        replied: HashMap::new(),
    };
    let mut env = Env {
        now: Instant::now(),
        me: nodeset[0],
        nodes: nodeset.clone(),
        suspected: BTreeSet::new(),
    };
    // The start mark first: no offset before it is durable.
    m.absorb(core.handle(&env, Input::Tick));
    m.absorb(core.handle(&env, Input::MarkDurable { result: Ok(()) }));
    let mut next_waiter = 0u32;
    let mut sealed = false;
    let mut committed = 0;
    for op in &input.ops {
        let input = match op {
            SeqOp::Enqueue { n } => {
                let w = next_waiter;
                next_waiter += 1;
                m.appends.insert(w, *n as usize);
                let records = (0..*n as usize).map(|i| seq_record(w, i)).collect();
                let effects = core.handle(
                    &env,
                    Input::Append {
                        token: w,
                        loglet: SEQ_LOGLET,
                        records,
                    },
                );
                if sealed || *n == 0 {
                    assert!(
                        effects
                            .iter()
                            .any(|e| matches!(e, Effect::Reply { token, .. } if *token == w)),
                        "an append after the seal (or of nothing) must be refused at once"
                    );
                }
                m.absorb(effects);
                None
            }
            SeqOp::Flush => Some(Input::Flush),
            SeqOp::Stored { from, first } => m.reply(
                NodeId(*from),
                *first,
                Ok(StoreReply::Stored { local_tail: 0 }),
            ),
            SeqOp::Failed { from, first } => m.reply(
                NodeId(*from),
                *first,
                Err(CallError::ConnectionLost(NodeId(*from))),
            ),
            SeqOp::Sealed => {
                let any = m.calls.keys().next().copied();
                let input = any.and_then(|(from, first)| {
                    m.reply(from, first, Ok(StoreReply::Sealed { local_tail: 0 }))
                });
                sealed |= input.is_some();
                input
            }
            SeqOp::Tick { ms } => {
                env.now = env
                    .now
                    .checked_add(Duration::from_millis(*ms))
                    .unwrap_or(env.now);
                Some(Input::Tick)
            }
        };
        if let Some(input) = input {
            m.absorb(core.handle(&env, input));
        }
        assert!(core.committed_tail() >= committed, "the commit went back");
        committed = core.committed_tail();
        assert!(
            committed <= core.next_offset(),
            "committed past what was assigned"
        );
    }
    // Past every deadline, then a seal, answers everyone still waiting.
    env.now += Duration::from_secs(3600);
    m.absorb(core.handle(&env, Input::Tick));
    m.absorb(core.handle(&env, Input::Flush));
    if let Some((from, first)) = m.calls.keys().next().copied() {
        if let Some(input) = m.reply(from, first, Ok(StoreReply::Sealed { local_tail: 0 })) {
            m.absorb(core.handle(&env, input));
        }
    }
    for w in 0..next_waiter {
        assert!(m.replied.contains_key(&w), "waiter {w} was never answered");
    }
}

#[test]
fn sequencer_core_keeps_its_promises() {
    run(
        "sequencer_core",
        100_000,
        Duration::from_secs(120),
        seq_input,
        check_sequencer,
    );
}

// ---------------------------------------------------------------------------
// Metadata register core

/// One input to the register's core.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum MetaOp {
    /// Phase 1 at an acceptor.
    Prepare(Ballot),
    /// Phase 2 at an acceptor.
    Accept(Ballot, Versioned),
    /// A proposer's change applied to a current value.
    Apply {
        current: Option<Versioned>,
        expected: u64,
        op: u64,
        read: bool,
    },
    /// Phase-1 decision over a set of promises.
    Current(Vec<(Ballot, Option<Versioned>)>),
}

fn edgy_ballot(g: &mut Gen) -> Ballot {
    Ballot {
        round: g.edgy_u64(),
        node: {
            let any = g.u64() as u32;
            *g.pick(&[0, 1, 2, 3, u32::MAX, any])
        },
    }
}

fn edgy_versioned(g: &mut Gen) -> Versioned {
    let n = g.usize(0, 16);
    Versioned {
        version: g.edgy_u64(),
        value: g.bytes(n),
        writer: g.edgy_u64(),
    }
}

fn meta_input(g: &mut Gen) -> Vec<MetaOp> {
    (0..g.range(1, 24))
        .map(|_| match g.below(4) {
            0 => MetaOp::Prepare(edgy_ballot(g)),
            1 => MetaOp::Accept(edgy_ballot(g), edgy_versioned(g)),
            2 => MetaOp::Apply {
                current: g.bool().then(|| edgy_versioned(g)),
                expected: g.edgy_u64(),
                op: g.edgy_u64(),
                read: g.one_in(4),
            },
            _ => MetaOp::Current(
                (0..g.range(0, 4))
                    .map(|_| (edgy_ballot(g), g.bool().then(|| edgy_versioned(g))))
                    .collect(),
            ),
        })
        .collect()
}

fn check_meta(ops: &Vec<MetaOp>) {
    let mut a = AcceptorState::default();
    for op in ops {
        let before = a.clone();
        match op {
            MetaOp::Prepare(b) => {
                let (reply, changed) = a.prepare(*b);
                match reply {
                    PrepareReply::Promise { accepted, value } => {
                        assert!(
                            *b > before.promised,
                            "promised {b:?} not above {:?}",
                            before.promised
                        );
                        assert_eq!((accepted, value), (before.accepted, before.value.clone()));
                        assert!(changed);
                    }
                    PrepareReply::Reject { promised } => {
                        assert!(*b <= before.promised);
                        assert_eq!(promised, before.promised);
                        assert_eq!(a, before, "a rejected prepare changed the state");
                    }
                }
            }
            MetaOp::Accept(b, v) => {
                let (reply, _) = a.accept(*b, v.clone());
                match reply {
                    AcceptReply::Accepted => {
                        assert!(*b >= before.promised);
                        assert_eq!(a.value.as_ref(), Some(v));
                    }
                    AcceptReply::Reject { promised } => {
                        assert!(*b < before.promised);
                        assert_eq!(promised, before.promised);
                        assert_eq!(a, before, "a rejected accept changed the state");
                    }
                }
            }
            MetaOp::Apply {
                current,
                expected,
                op,
                read,
            } => {
                let change = if *read {
                    Change::Read
                } else {
                    Change::Cas {
                        expected: *expected,
                        value: b"v".to_vec(),
                        op: *op,
                    }
                };
                let (next, outcome) = change.apply(current.clone());
                match (&change, &outcome) {
                    (Change::Read, _) => assert_eq!(&next, current),
                    (Change::Cas { .. }, Outcome::Conflict(c)) => {
                        assert_eq!(c, current);
                        assert_eq!(&next, current, "a conflict writes back the current value");
                    }
                    (Change::Cas { expected, .. }, Outcome::Value(v)) => {
                        assert_eq!(&next, v);
                        if next != *current {
                            let version = current.as_ref().map_or(0, |c| c.version);
                            assert_eq!(version, *expected);
                            assert_eq!(
                                next.as_ref().map(|n| n.version),
                                version.checked_add(1),
                                "a CAS writes the next version"
                            );
                        }
                    }
                }
            }
            MetaOp::Current(promises) => {
                let v = current_value(promises.iter().map(|(b, v)| (b, v)));
                if let Some(max) = promises.iter().map(|(b, _)| *b).max() {
                    let candidates: Vec<_> = promises
                        .iter()
                        .filter(|(b, _)| *b == max)
                        .map(|(_, v)| v)
                        .collect();
                    assert!(
                        candidates.contains(&&v),
                        "not the value of the highest ballot"
                    );
                } else {
                    assert_eq!(v, None);
                }
            }
        }
        assert!(a.promised >= before.promised, "the promise went back");
        assert!(a.accepted <= a.promised, "accepted above the promise");
    }
}

#[test]
fn metadata_core_keeps_its_promises() {
    run(
        "metadata_core",
        100_000,
        Duration::from_secs(120),
        meta_input,
        check_meta,
    );
}

// ---------------------------------------------------------------------------
// Sealer core

/// One sealer case.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SealInput {
    /// Sealed responders' `(known_global_tail, local_tail)`.
    views: Vec<(Offset, Offset)>,
    /// Where the tail search starts.
    global: Offset,
    /// Offsets of the records the responders returned.
    found: Vec<Offset>,
}

fn seal_input(g: &mut Gen) -> SealInput {
    let views: Vec<(Offset, Offset)> = (0..g.range(0, 4))
        .map(|_| (g.edgy_u64(), g.edgy_u64()))
        .collect();
    let global = if g.bool() {
        repair_range(
            &views
                .iter()
                .map(|&(k, l)| SealedView {
                    known_global_tail: k,
                    local_tail: l,
                })
                .collect::<Vec<_>>(),
        )
        .0
    } else {
        g.edgy_u64()
    };
    let found = (0..g.range(0, 12))
        .map(|_| match g.below(3) {
            0 => global.saturating_add(g.range(0, 8)),
            1 => global.wrapping_sub(g.range(0, 3)),
            _ => g.edgy_u64(),
        })
        .collect();
    SealInput {
        views,
        global,
        found,
    }
}

fn check_seal(input: &SealInput) {
    let views: Vec<SealedView> = input
        .views
        .iter()
        .map(|&(k, l)| SealedView {
            known_global_tail: k,
            local_tail: l,
        })
        .collect();
    let (global, reach) = repair_range(&views);
    assert!(reach >= global);
    for v in &views {
        assert!(global >= v.known_global_tail && reach >= v.local_tail);
    }
    let found: Vec<(Offset, Record)> = input
        .found
        .iter()
        .map(|&o| (o, Record(o.to_be_bytes().to_vec())))
        .collect();
    let held: BTreeSet<Offset> = input.found.iter().copied().collect();
    let (tail, repair) = sealed_tail(input.global, found);
    assert!(tail >= input.global, "the tail went below the global tail");
    assert_eq!(repair.len() as u64, tail - input.global);
    for (i, rec) in repair.iter().enumerate() {
        let o = input.global + i as u64;
        assert!(held.contains(&o), "offset {o} repaired but not found");
        assert_eq!(
            rec.0,
            o.to_be_bytes(),
            "offset {o} repaired with another record"
        );
    }
    if tail < Offset::MAX {
        assert!(
            !held.contains(&tail),
            "the tail stops before a held offset {tail}"
        );
    }
}

#[test]
fn sealer_core_finds_contiguous_tails() {
    run(
        "sealer_core",
        100_000,
        Duration::from_secs(120),
        seal_input,
        check_seal,
    );
}

// ---------------------------------------------------------------------------
// Partition processor state machine

/// One input to the partition applier.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ApplyOp {
    /// Apply `record` at `lsn`.
    Apply {
        lsn: u64,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// End the batch: write it, and check what recovery reads back.
    Finish,
}

fn command(g: &mut Gen, announced: u64) -> Command {
    if g.one_in(4) {
        return Command::AnnounceLeader {
            epoch: Epoch(match g.below(3) {
                0 => announced.saturating_add(g.range(0, 2)),
                1 => announced.saturating_sub(1),
                _ => g.edgy_u64(),
            }),
            node: NodeId(*g.pick(&[0, 1, 2, 3, u32::MAX])),
        };
    }
    let (object, known) = demo_handler(g);
    let handler = if g.one_in(8) {
        g.edgy_string(16)
    } else {
        known.to_string()
    };
    let arg: Vec<u8> = match g.below(8) {
        0 => b"1".to_vec(),
        1 => i64::MAX.to_string().into_bytes(),
        2 => i64::MIN.to_string().into_bytes(),
        3 => br#"{"expect":null,"value":1}"#.to_vec(),
        4 => br#"{"expect":1,"value":[1,{"a":null}]}"#.to_vec(),
        5 => {
            let depth = g.usize(1, 200);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        6 => {
            let n = g.usize(0, 12);
            g.bytes(n)
        }
        _ => b"null".to_vec(),
    };
    Command::Invoke(Invocation {
        epoch: Epoch(if g.one_in(5) { g.edgy_u64() } else { announced }),
        request_id: match g.below(4) {
            0 => format!("u:{}", g.below(4)),
            1 => format!("g:{}", g.below(1000)),
            2 => g.edgy_string(64),
            _ => format!("g:x{}", g.u64()),
        },
        timestamp_ms: match g.below(3) {
            0 => g.range(0, 100_000),
            1 => g.edgy_u64(),
            _ => 1_000_000 + g.range(0, 10_000_000),
        },
        retention_ms: match g.below(3) {
            0 => None,
            1 => Some(g.edgy_u64()),
            _ => Some(g.range(0, 100_000)),
        },
        object: object.into(),
        key: if g.one_in(6) {
            g.edgy_string(2048)
        } else {
            format!("k{}", g.below(3))
        },
        handler,
        arg,
    })
}

fn apply_input(g: &mut Gen) -> Vec<ApplyOp> {
    let mut ops = Vec::new();
    let mut lsn = 0u64;
    let mut announced = 0u64;
    for _ in 0..g.range(1, 60) {
        if g.one_in(8) {
            ops.push(ApplyOp::Finish);
            continue;
        }
        lsn = match g.below(12) {
            0 => lsn.saturating_sub(g.range(0, 2)),
            1 => lsn.saturating_add(g.range(2, 100)),
            2 if g.one_in(8) => u64::MAX - g.range(0, 2),
            _ => lsn.saturating_add(1),
        };
        let cmd = command(g, announced);
        if let Command::AnnounceLeader { epoch, .. } = &cmd {
            announced = announced.max(epoch.0);
        }
        let valid = cmd.encode();
        let record = match g.below(10) {
            0 => {
                let n = g.usize(0, 40);
                g.bytes(n)
            }
            1 | 2 => mutate(g, &valid),
            _ => valid,
        };
        ops.push(ApplyOp::Apply { lsn, record });
    }
    ops.push(ApplyOp::Finish);
    ops
}

/// The applier's storage, shared by every episode (each on a partition of
/// its own).
struct ApplierTarget {
    storage: Storage,
    /// The partition the next episode uses.
    next_partition: u32,
    /// Records applied so far.
    applied: u64,
    _dir: tempfile::TempDir,
}

impl ApplierTarget {
    fn check(&mut self, ops: &Vec<ApplyOp>) {
        let partition = PartitionId(self.next_partition);
        self.next_partition += 1;
        let store = self
            .storage
            .partition(partition)
            .expect("opening a partition");
        let mut state = recover(&store).expect("recovering an empty partition");
        let mut applier = Applier::new(&store, state, &DEMO, 1);
        for op in ops {
            match op {
                ApplyOp::Apply { lsn, record } => {
                    self.applied += 1;
                    let before = (applier.applied(), applier.announced, applier.clock_ms());
                    applier
                        .apply(Lsn(*lsn), record)
                        .expect("applying never fails while storage works");
                    let after = (applier.applied(), applier.announced, applier.clock_ms());
                    assert!(
                        after.0 >= before.0,
                        "applied went back from {} to {}",
                        before.0,
                        after.0
                    );
                    assert!(after.1 >= before.1, "the announced epoch went back");
                    assert!(after.2 >= before.2, "the log clock went back");
                }
                ApplyOp::Finish => {
                    let expected = Recovered {
                        applied: applier.applied(),
                        announced: applier.announced,
                        leader: applier.leader,
                        clock_ms: applier.clock_ms(),
                    };
                    let (write, applied) = applier.finish().expect("finishing a batch");
                    assert_eq!(applied, expected.applied);
                    store.apply(write).expect("writing a batch");
                    state = recover(&store).expect("recovering");
                    assert_eq!(state, expected, "recovery reads back another state");
                    applier = Applier::new(&store, state, &DEMO, 1);
                }
            }
        }
    }
}

#[test]
fn partition_applier_never_goes_backwards() {
    let dir = fast_tempdir("keel-hostile-applier-");
    let storage = Storage::open(dir.path()).expect("opening storage");
    let mut target = ApplierTarget {
        storage,
        next_partition: 0,
        applied: 0,
        _dir: dir,
    };
    // Episodes of up to 60 records (26 on average): about 104k records.
    run(
        "partition_applier",
        4_000,
        Duration::from_secs(120),
        apply_input,
        |ops| target.check(ops),
    );
    eprintln!(
        "hostile-input partition_applier: {} records in all",
        target.applied
    );
}
