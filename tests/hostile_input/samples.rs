//! Valid instances of every message that crosses the wire (and of the values
//! peers write into the register), with randomized fields, for the mutators
//! to start from.

use crate::support::{demo_handler, Gen};
use keel::actors::leader_elector::{Leadership, PreVote, PreVoteReply};
use keel::actors::log_server::{
    GetRecords, GetTail, LogServerError, RecordsReply, Release, Seal, Store, StoreReply, TailInfo,
    Trim,
};
use keel::actors::metadata::core::{AcceptReply, Ballot, PrepareReply, Versioned};
use keel::actors::metadata::{Accept, AcceptorError, ListKeys, MetaUpdate, Prepare};
use keel::actors::partition_processor::core::Response;
use keel::actors::partition_processor::{
    outbox::Message, Deliver, GetPersisted, GetSnapshot, Invoke, InvokeReply, PersistedReply,
    SnapshotChunk, SnapshotServeError,
};
use keel::actors::sequencer::{Append, AppendOutcome, SequencerError};
use keel::actors::supervisor::{
    ChildKind, ChildState, ChildStatus, RestartRecord, SupervisionStatus, WaitInfo,
};
use keel::log::{Chain, Record, Segment};
use keel::node::status::{NodeStatus, PartitionView};
use keel::node::wire::WireErrorOwned;
use keel::node::Wire;
use keel::objects::Address;
use keel::transport::PeerStatus;
use keel::types::{Epoch, LogId, LogletId, Lsn, NodeId, PartitionId};
use std::sync::Arc;

/// Every `Wire` variant, by name. The match is exhaustive: a new variant
/// does not compile until it is named here (and [`wire`] builds one).
pub fn kind(w: &Wire) -> &'static str {
    match w {
        Wire::Prepare(_) => "Prepare",
        Wire::PrepareResult(_) => "PrepareResult",
        Wire::Accept(_) => "Accept",
        Wire::AcceptResult(_) => "AcceptResult",
        Wire::Store(_) => "Store",
        Wire::StoreResult(_) => "StoreResult",
        Wire::Seal(_) => "Seal",
        Wire::SealResult(_) => "SealResult",
        Wire::GetTail(_) => "GetTail",
        Wire::GetTailResult(_) => "GetTailResult",
        Wire::GetRecords(_) => "GetRecords",
        Wire::GetRecordsResult(_) => "GetRecordsResult",
        Wire::Trim(_) => "Trim",
        Wire::TrimResult(_) => "TrimResult",
        Wire::Append(_) => "Append",
        Wire::AppendResult(_) => "AppendResult",
        Wire::PreVote(_) => "PreVote",
        Wire::PreVoteResult(_) => "PreVoteResult",
        Wire::Invoke(_) => "Invoke",
        Wire::InvokeResult(_) => "InvokeResult",
        Wire::Deliver(_) => "Deliver",
        Wire::DeliverResult(_) => "DeliverResult",
        Wire::GetPersisted(_) => "GetPersisted",
        Wire::PersistedResult(_) => "PersistedResult",
        Wire::GetSnapshot(_) => "GetSnapshot",
        Wire::SnapshotResult(_) => "SnapshotResult",
        Wire::MetaUpdate(_) => "MetaUpdate",
        Wire::Release(_) => "Release",
        Wire::GetNodeStatus => "GetNodeStatus",
        Wire::NodeStatus(_) => "NodeStatus",
        Wire::Relay(_) => "Relay",
        Wire::RelayResult(_) => "RelayResult",
        Wire::ListKeys(_) => "ListKeys",
        Wire::ListKeysResult(_) => "ListKeysResult",
        Wire::Error(_) => "Error",
    }
}

/// How many kinds [`wire`] builds (one per `Wire` variant).
pub const KINDS: u64 = 35;

fn nodes(g: &mut Gen) -> Vec<NodeId> {
    let n = g.range(1, 5) as u32;
    (1..=n).map(NodeId).collect()
}

fn records(g: &mut Gen, max: usize) -> Vec<Record> {
    let n = g.usize(0, max);
    (0..n)
        .map(|_| {
            let len = g.usize(0, 24);
            Record(g.bytes(len))
        })
        .collect()
}

pub fn ballot(g: &mut Gen) -> Ballot {
    Ballot {
        round: g.range(0, 1000),
        node: g.range(1, 5) as u32,
    }
}

/// A valid chain of 1..=5 segments.
pub fn chain(g: &mut Gen) -> Chain {
    let log = LogId(g.range(0, 8) as u32);
    let ns = nodes(g);
    let r = g.range(1, ns.len() as u64) as u8;
    let mut c = Chain::initial(log, ns[0], ns.clone(), r);
    for _ in 0..g.below(5) {
        let tail = c.tail().loglet;
        let sealed = g.range(0, 1000);
        let next = *g.pick(&ns);
        c = c
            .sealed_and_extended(tail, sealed, next, ns.clone(), r)
            .expect("extending a valid chain at its tail");
    }
    c
}

pub fn segment(g: &mut Gen) -> Segment {
    let c = chain(g);
    c.tail().clone()
}

pub fn leadership(g: &mut Gen) -> Leadership {
    Leadership {
        node: NodeId(g.range(1, 5) as u32),
        epoch: Epoch(g.range(0, 1000)),
    }
}

fn versioned(g: &mut Gen) -> Versioned {
    let value = match g.below(3) {
        0 => rmp_serde::to_vec_named(&chain(g)).expect("encoding a chain"),
        1 => rmp_serde::to_vec_named(&leadership(g)).expect("encoding a leadership"),
        _ => {
            let n = g.usize(0, 32);
            g.bytes(n)
        }
    };
    Versioned {
        version: g.range(0, 100),
        value,
        writer: g.u64(),
    }
}

fn tail_info(g: &mut Gen) -> TailInfo {
    TailInfo {
        sealed: g.bool(),
        local_tail: g.range(0, 1000),
        known_global_tail: g.range(0, 1000),
        suspect: g.bool(),
    }
}

fn ls_error(g: &mut Gen) -> LogServerError {
    match g.below(3) {
        0 => LogServerError::Storage("disk".into()),
        1 => LogServerError::TooLarge {
            records: g.usize(0, 100_000),
            bytes: g.usize(0, 1 << 30),
        },
        _ => LogServerError::Unavailable,
    }
}

fn invoke(g: &mut Gen) -> Invoke {
    let (object, handler) = demo_handler(g);
    let handler = handler.to_string();
    Invoke {
        partition: PartitionId(g.range(0, 3) as u32),
        request_id: format!("g:1:{:016x}", g.u64()),
        object: object.into(),
        key: format!("k{}", g.below(100)),
        handler,
        arg: b"1".to_vec(),
        timeout_ms: g.range(1, 60_000),
    }
}

fn deliver(g: &mut Gen) -> Deliver {
    let first = g.range(1, 1000);
    let messages = (0..g.range(1, 4))
        .map(|i| {
            let (object, handler) = demo_handler(g);
            Message {
                seq: first + i,
                to: Address {
                    object: object.into(),
                    key: format!("k{}", g.below(100)),
                    handler: handler.to_string(),
                },
                arg: b"1".to_vec(),
                reply_to: None,
                sent_ms: g.range(0, 1 << 40),
                due_ms: 0,
            }
        })
        .collect();
    Deliver {
        partition: PartitionId(g.range(0, 3) as u32),
        from: PartitionId(g.range(0, 3) as u32),
        messages,
        timeout_ms: g.range(1, 60_000),
    }
}

fn invoke_reply(g: &mut Gen) -> InvokeReply {
    match g.below(5) {
        0 => InvokeReply::Done(Response {
            status: 200,
            body: b"1".to_vec(),
        }),
        1 => InvokeReply::NotLeader {
            leader: Some(NodeId(2)),
        },
        2 => InvokeReply::Fenced,
        3 => InvokeReply::Unavailable("no majority".into()),
        _ => InvokeReply::Timeout,
    }
}

fn node_status(g: &mut Gen) -> NodeStatus {
    NodeStatus {
        node: NodeId(1),
        quic: "127.0.0.1:7101".parse().expect("address"),
        http: "127.0.0.1:7201".parse().expect("address"),
        uptime_ms: g.u64(),
        peers: vec![PeerStatus {
            node: NodeId(2),
            addr: "[::1]:7102".parse().expect("address"),
            connected: g.bool(),
            for_ms: g.range(0, 1000),
            connections: 3,
            rtt_us: Some(120),
            queued: 0,
            in_flight: 2,
            last_error: Some("idle timeout".into()),
            health: Some(keel::transport::health::PeerHealth {
                healthy: g.bool(),
                for_ms: g.range(0, 1000),
                why: Some("lost 30 of 100 packets".into()),
                loss: 0.3,
                timeouts: 0.0,
                commit_stuck: 0.5,
            }),
        }],
        partitions: vec![PartitionView {
            partition: PartitionId(0),
            mode: "Leader".into(),
            status: "Active".into(),
            leader: Some(NodeId(1)),
            epoch: Epoch(3),
            sequencer: Some(NodeId(1)),
            applied_lsn: Lsn(10),
            persisted_lsn: Lsn(9),
            last_update_ms: 5,
            pending_requests: 0,
            snapshot_lsn: Some(Lsn(8)),
            restoring: None,
            snapshot_fetch_error: None,
            snapshots_taken: 1,
            snapshots_restored: 0,
            outbox: Default::default(),
        }],
        supervision: SupervisionStatus {
            node: Some(NodeId(1)),
            children: vec![ChildStatus {
                path: "root/log/sealer".into(),
                kind: ChildKind::Actor,
                state: ChildState::Running,
                incarnation: 2,
                restarts_total: 1,
                restarts_in_window: 1,
                window_ms: 10_000,
                last_restart: Some(RestartRecord {
                    reason: "ping unanswered".into(),
                    at_unix_ms: 1,
                    ago_ms: 2,
                }),
            }],
            waits: vec![WaitInfo {
                what: "seal of loglet 0/3".into(),
                owner: "root/log/sealer".into(),
                incarnation: 2,
                since_unix_ms: 1,
                waited_ms: 1200,
                deadline_ms: 5000,
                overdue: false,
            }],
            shutting_down: false,
            gave_up: None,
        },
        storage_bytes: g.u64(),
        rejoin: g.bool().then(|| keel::actors::rejoin::RejoinView {
            step: "log".into(),
            detail: "re-replicating lost loglets: 1 of 3 back".into(),
        }),
        storage: Default::default(),
        chaos_enabled: g.bool(),
        objects: DEMO_DESCRIBED.clone(),
    }
}

/// The demo's types as a node's status shows them.
static DEMO_DESCRIBED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::support::DEMO.describe());

/// A valid message of kind `k` (`0..KINDS`), fields drawn from `g`.
pub fn wire(g: &mut Gen, k: u64) -> Wire {
    let loglet = LogletId::new(LogId(g.range(0, 4) as u32), g.range(0, 4) as u32);
    match k {
        0 => Wire::Prepare(Prepare {
            key: "chain/0".into(),
            ballot: ballot(g),
        }),
        1 => Wire::PrepareResult(match g.below(3) {
            0 => Ok(PrepareReply::Promise {
                accepted: ballot(g),
                value: Some(versioned(g)),
            }),
            1 => Ok(PrepareReply::Reject {
                promised: ballot(g),
            }),
            _ => Err(AcceptorError::BadKey),
        }),
        2 => Wire::Accept(Accept {
            key: "leader/1".into(),
            ballot: ballot(g),
            value: versioned(g),
        }),
        3 => Wire::AcceptResult(match g.below(3) {
            0 => Ok(AcceptReply::Accepted),
            1 => Ok(AcceptReply::Reject {
                promised: ballot(g),
            }),
            _ => Err(AcceptorError::Storage("disk".into())),
        }),
        4 => Wire::Store(Store {
            loglet,
            first: g.range(0, 1000),
            records: Arc::new(records(g, 6)),
            known_global_tail: g.range(0, 1000),
            repair: g.bool(),
            // Never on the wire: the receiving node sets it.
            from: None,
        }),
        5 => Wire::StoreResult(match g.below(3) {
            0 => StoreReply::Stored {
                local_tail: g.range(0, 1000),
            },
            1 => StoreReply::Sealed {
                local_tail: g.range(0, 1000),
            },
            _ => StoreReply::Failed(ls_error(g)),
        }),
        6 => Wire::Seal(Seal { loglet }),
        7 => Wire::SealResult(if g.bool() {
            Ok(tail_info(g))
        } else {
            Err(ls_error(g))
        }),
        8 => Wire::GetTail(GetTail { loglet }),
        9 => Wire::GetTailResult(if g.bool() {
            Ok(tail_info(g))
        } else {
            Err(ls_error(g))
        }),
        10 => Wire::GetRecords(GetRecords {
            loglet,
            from: g.range(0, 100),
            to: g.range(0, 1000),
            max_bytes: g.range(0, 1 << 22) as u32,
            include_uncommitted: g.bool(),
        }),
        11 => Wire::GetRecordsResult(if g.bool() {
            let first = g.range(0, 100);
            Ok(RecordsReply {
                records: records(g, 5)
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (first + i as u64, r))
                    .collect(),
                tail: tail_info(g),
                damaged: if g.bool() {
                    vec![g.range(0, 100)]
                } else {
                    Vec::new()
                },
                trimmed_below: g.range(0, 100),
            })
        } else {
            Err(ls_error(g))
        }),
        12 => Wire::Trim(Trim {
            loglet,
            below: g.range(0, 1000),
        }),
        13 => Wire::TrimResult(if g.bool() { Ok(()) } else { Err(ls_error(g)) }),
        14 => Wire::Append(Append {
            segment: segment(g),
            records: records(g, 4),
        }),
        15 => Wire::AppendResult(match g.below(5) {
            0 => Ok(AppendOutcome::Appended {
                first_lsn: Lsn(g.range(1, 1000)),
            }),
            1 => Ok(AppendOutcome::Sealed),
            2 => Ok(AppendOutcome::Indeterminate),
            3 => Err(SequencerError::Gone(loglet)),
            _ => Err(SequencerError::TooLarge {
                records: 5000,
                bytes: 1,
            }),
        }),
        16 => Wire::PreVote(PreVote {
            partition: PartitionId(g.range(0, 3) as u32),
            leader: NodeId(g.range(1, 3) as u32),
            epoch: Epoch(g.range(0, 100)),
        }),
        17 => Wire::PreVoteResult(PreVoteReply { suspects: g.bool() }),
        18 => Wire::Invoke(invoke(g)),
        19 => Wire::InvokeResult(invoke_reply(g)),
        20 => Wire::GetPersisted(GetPersisted {
            partition: PartitionId(g.range(0, 3) as u32),
        }),
        21 => Wire::PersistedResult(PersistedReply {
            persisted: Lsn(g.range(0, 1000)),
            snapshot: g.bool().then(|| Lsn(g.range(0, 1000))),
        }),
        22 => Wire::MetaUpdate(MetaUpdate {
            key: "chain/1".into(),
            value: versioned(g),
        }),
        23 => Wire::Release(Release {
            loglet,
            global_tail: g.range(0, 1000),
        }),
        24 => Wire::GetNodeStatus,
        25 => Wire::NodeStatus(Box::new(node_status(g))),
        26 => Wire::Relay(Box::new(invoke(g))),
        27 => Wire::RelayResult(invoke_reply(g)),
        28 => Wire::ListKeys(ListKeys {}),
        29 => Wire::ListKeysResult(if g.bool() {
            Ok(vec![
                ("chain/0".into(), g.range(0, 9)),
                ("leader/1".into(), 0),
            ])
        } else {
            Err(AcceptorError::Rejoining)
        }),
        30 => Wire::GetSnapshot(GetSnapshot {
            partition: PartitionId(g.range(0, 3) as u32),
            at_least: Lsn(g.range(0, 1000)),
            lsn: g.bool().then(|| Lsn(g.range(0, 1000))),
            offset: g.range(0, 1 << 20),
            max_bytes: g.range(0, 1 << 23) as u32,
        }),
        31 => Wire::SnapshotResult(if g.bool() {
            Ok(SnapshotChunk {
                lsn: Lsn(g.range(0, 1000)),
                total_len: g.range(0, 1 << 20),
                bytes: {
                    let len = g.usize(0, 24);
                    g.bytes(len)
                },
            })
        } else {
            Err(SnapshotServeError::NoneHeld {
                partition: PartitionId(g.range(0, 3) as u32),
                at_least: Lsn(g.range(0, 1000)),
                newest: None,
            })
        }),
        32 => Wire::Deliver(deliver(g)),
        33 => Wire::DeliverResult(invoke_reply(g)),
        _ => Wire::Error(WireErrorOwned(
            "no local actor serves Store right now".into(),
        )),
    }
}
