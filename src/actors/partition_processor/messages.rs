//! Messages of the partition processor: requests forwarded by any node's
//! ingress to the leader, and role changes from the leader elector.

use super::core::Response;
use super::outbox::{self, OutboxView, DELIVER_BATCH};
use crate::objects::Objects;
use crate::types::{Epoch, Lsn, NodeId, PartitionId};
use actix::Message;
use serde::{Deserialize, Serialize};

/// A client request for the partition's leader.
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "InvokeReply")]
pub struct Invoke {
    /// The partition the object belongs to.
    pub partition: PartitionId,
    /// `u:<idempotency key>` or `g:<generated id>`; retries reuse it.
    pub request_id: String,
    /// The object's type name.
    pub object: String,
    /// The object's key.
    pub key: String,
    /// The handler to run.
    pub handler: String,
    /// The JSON argument.
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
    /// How long the caller still waits.
    pub timeout_ms: u64,
}

/// Longest request id an `Invoke` may carry (`u:` + object, key, handler
/// and idempotency key fit).
pub const MAX_REQUEST_ID: usize = 2048;
/// Largest JSON argument an `Invoke` may carry: the ingress's body limit,
/// with room for re-encoding (`1e5` becomes `100000.0`).
pub const MAX_ARG_BYTES: usize = 2 * crate::ingress::http::MAX_BODY_BYTES;

impl Invoke {
    /// Why this request cannot be ordered into `partition`'s log (of
    /// `partitions`), if it cannot: what the ingress checks before it
    /// forwards a request, checked again where a peer's request lands.
    pub fn check(
        &self,
        partition: PartitionId,
        partitions: u32,
        types: &Objects,
    ) -> Result<(), String> {
        use crate::ingress::http::{partition_of, MAX_OBJECT_KEY};
        if self.key.is_empty() || self.key.len() > MAX_OBJECT_KEY {
            return Err(format!("object key must be 1..={MAX_OBJECT_KEY} bytes"));
        }
        if self.request_id.is_empty() || self.request_id.len() > MAX_REQUEST_ID {
            return Err(format!("request id must be 1..={MAX_REQUEST_ID} bytes"));
        }
        if self.arg.len() > MAX_ARG_BYTES {
            return Err(format!("argument exceeds {MAX_ARG_BYTES} bytes"));
        }
        let owner = partition_of(&self.object, &self.key, partitions);
        if self.partition != partition || owner != partition {
            return Err(format!(
                "{}/{} belongs to partition {owner}, not {partition}",
                self.object, self.key
            ));
        }
        let arg: serde_json::Value = serde_json::from_slice(&self.arg)
            .map_err(|e| format!("malformed JSON argument: {e}"))?;
        types
            .check(&self.object, &self.handler, &arg)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Messages from another partition's outbox, for this partition's leader
/// (see `outbox.rs`): answered `Done` with `{"accepted": mark}` once they are
/// durable here (the highest sequence number of `from` applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "InvokeReply")]
pub struct Deliver {
    /// The receiving partition.
    pub partition: PartitionId,
    /// The sending partition.
    pub from: PartitionId,
    /// Contiguous sequence numbers of the (from, partition) pair.
    pub messages: Vec<outbox::Message>,
    /// How long the sender still waits.
    pub timeout_ms: u64,
}

impl Deliver {
    /// Why this delivery cannot be taken by `partition` (of `partitions`),
    /// if it cannot: checked where it lands, before anything is appended.
    pub fn check(&self, partition: PartitionId, partitions: u32) -> Result<(), String> {
        use crate::ingress::http::partition_of;
        if self.partition != partition || self.from.0 >= partitions {
            return Err(format!(
                "a delivery from partition {} to {} does not belong here ({partition} of {partitions})",
                self.from, self.partition
            ));
        }
        if self.messages.is_empty() || self.messages.len() > 2 * DELIVER_BATCH {
            return Err(format!(
                "a delivery carries 1..={} messages",
                2 * DELIVER_BATCH
            ));
        }
        // The delivery record must fit one record, with room for its frame.
        let limit = crate::log::MAX_RECORD_BYTES - 1024;
        let bytes: usize = self.messages.iter().map(|m| m.encode().len()).sum();
        if bytes > limit {
            return Err(format!("a delivery's messages exceed {limit} bytes"));
        }
        for pair in self.messages.windows(2) {
            if pair[1].seq != pair[0].seq + 1 {
                return Err("a delivery's sequence numbers must be contiguous".into());
            }
        }
        for m in &self.messages {
            let owner = partition_of(&m.to.object, &m.to.key, partitions);
            if owner != partition || m.seq == 0 {
                return Err(format!(
                    "message {} to {}/{} belongs to partition {owner}",
                    m.seq, m.to.object, m.to.key
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvokeReply {
    /// Applied (or found applied): the response.
    Done(Response),
    /// Not applied: this node does not lead the partition (hint: who does).
    NotLeader { leader: Option<NodeId> },
    /// Not applied: the leader was deposed before the request was ordered.
    Fenced,
    /// Not applied: the leader cannot serve right now (the reason says why).
    Unavailable(String),
    /// Outcome unknown: the request may still be applied.
    Timeout,
}

/// From the elector: this node leads the partition at `epoch`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct BecomeLeader {
    /// The epoch elected at.
    pub epoch: Epoch,
}

/// From the elector: this node follows (`leader` if known).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct BecomeFollower {
    /// The leader, if known (a hint for requests).
    pub leader: Option<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Follower,
    /// Leading at an epoch whose announcement is not applied yet.
    Candidate,
    Leader,
}

/// A processor's state, for status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessorStatus {
    /// The partition.
    pub partition: PartitionId,
    /// Follower, candidate or leader.
    pub mode: Mode,
    /// `Active`, `Idle`, `Announcing`, `BehindTrim`, `RestoringSnapshot`, ...
    pub status: String,
    /// The newest epoch announced in the log.
    pub epoch: Epoch,
    /// Who announced it.
    pub leader: Option<NodeId>,
    /// The last LSN applied.
    pub applied_lsn: Lsn,
    /// The last LSN synced (what trimming trusts).
    pub persisted_lsn: Lsn,
    /// Milliseconds since this processor last applied a record.
    pub last_update_ms: u64,
    /// Requests waiting for their outcome.
    pub pending_requests: usize,
    /// The newest snapshot of the partition this node retains.
    #[serde(default)]
    pub snapshot_lsn: Option<Lsn>,
    /// The restore under way (status `RestoringSnapshot`), if any.
    #[serde(default)]
    pub restoring: Option<RestoreView>,
    /// Why the last snapshot fetch failed or its snapshot was refused
    /// (cleared by a restore).
    #[serde(default)]
    pub snapshot_fetch_error: Option<String>,
    /// Snapshots this processor took since it started.
    #[serde(default)]
    pub snapshots_taken: u64,
    /// Snapshots this processor restored since it started.
    #[serde(default)]
    pub snapshots_restored: u64,
    /// Messages this partition sent that their targets have not yet
    /// acknowledged, and its timers.
    #[serde(default)]
    pub outbox: OutboxStatus,
}

/// A partition's outbox and timers, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Messages waiting for their target's acknowledgement.
    pub depth: u64,
    /// How long ago (log clock, ms) the oldest of them was sent.
    pub oldest_ms: Option<u64>,
    /// Timers waiting to fire.
    pub timers: u64,
    /// In how many ms (log clock) the next timer is due (negative: overdue).
    pub next_timer_in_ms: Option<i64>,
    /// Messages this leader delivered and saw acknowledged since it started.
    pub delivered: u64,
    /// Why the last delivery failed (cleared by the next success).
    pub last_error: Option<String>,
}

impl OutboxStatus {
    /// The status of `view` at the log clock `now_ms`.
    pub fn of(view: &OutboxView, now_ms: u64, delivered: u64, last_error: Option<String>) -> Self {
        OutboxStatus {
            depth: view.depth(),
            oldest_ms: view.oldest_ms().map(|t| now_ms.saturating_sub(t)),
            timers: view.timers,
            next_timer_in_ms: view.next_timer_ms.map(|t| t as i64 - now_ms as i64),
            delivered,
            last_error,
        }
    }
}

#[derive(Clone, Debug, Message)]
#[rtype(result = "ProcessorStatus")]
pub struct GetProcessorStatus;

/// How far this node's replica of `partition` is durably applied, and the
/// newest snapshot of it this node retains: the leader trims the log below
/// what a majority's snapshots cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "PersistedReply")]
pub struct GetPersisted {
    /// The partition asked about.
    pub partition: PartitionId,
}

/// The answer to [`GetPersisted`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedReply {
    /// What a completed sync of the replica's state covered.
    pub persisted: Lsn,
    /// The newest snapshot the replica retains (a replica the log can no
    /// longer serve may fetch it), if any.
    #[serde(default)]
    pub snapshot: Option<Lsn>,
}

/// Largest chunk of a snapshot file one [`GetSnapshot`] returns.
pub const MAX_SNAPSHOT_CHUNK: u32 = 4 << 20;

/// A peer asks for a chunk of this node's snapshot of `partition` (served
/// from the snapshot directory, see `storage::snapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<SnapshotChunk, SnapshotServeError>")]
pub struct GetSnapshot {
    /// The partition whose snapshot is wanted.
    pub partition: PartitionId,
    /// The oldest snapshot LSN of use to the asker.
    pub at_least: Lsn,
    /// The snapshot to read (`None`: the newest held); later chunks name
    /// the one the first chunk came from.
    pub lsn: Option<Lsn>,
    /// Where in the snapshot's file the chunk starts.
    pub offset: u64,
    /// Most bytes wanted (capped at [`MAX_SNAPSHOT_CHUNK`]; 0 asks only for
    /// the LSN and length).
    pub max_bytes: u32,
}

/// A chunk of a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The snapshot's LSN.
    pub lsn: Lsn,
    /// The length of its whole file.
    pub total_len: u64,
    /// The file's bytes from the asked offset on.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Why a [`GetSnapshot`] was not served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SnapshotServeError {
    #[error("no snapshot of partition {partition} at LSN {at_least} or later is held here (newest: {newest:?})")]
    NoneHeld {
        partition: PartitionId,
        at_least: Lsn,
        newest: Option<Lsn>,
    },
    #[error("snapshot unreadable: {0}")]
    Unreadable(String),
    #[error("bad snapshot request: {0}")]
    BadRequest(String),
}

/// Why fetching a snapshot from the peers failed (the shell's answer to
/// the core's `FetchSnapshot`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no reachable peer holds a snapshot at LSN {at_least} or later")]
    NoneHeld { at_least: Lsn },
    #[error("the snapshot of {from} at LSN {lsn} could not be used: {reason}")]
    Failed {
        from: NodeId,
        lsn: Lsn,
        reason: String,
    },
}

/// An operator asks for a snapshot of this partition now (`keelctl
/// snapshot`): the answer names its LSN and file.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<SnapshotTaken, String>")]
pub struct TakeSnapshot;

/// A snapshot taken on demand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTaken {
    /// The partition.
    pub partition: PartitionId,
    /// The LSN its state covers.
    pub lsn: Lsn,
    /// Its file.
    pub path: String,
}

/// A snapshot restore in progress, for status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreView {
    /// The oldest snapshot LSN of use (the log starts after it).
    pub at_least: Lsn,
    /// The peer being fetched from, once one was found.
    pub from: Option<NodeId>,
    /// The LSN of the snapshot being fetched, once one was found.
    pub lsn: Option<Lsn>,
}
