//! Messages of the partition processor: requests forwarded by any node's
//! ingress to the leader, and role changes from the leader elector.

use super::core::Response;
use crate::ingress::objects::ObjectType;
use crate::types::{Epoch, Lsn, NodeId, PartitionId};
use actix::Message;
use serde::{Deserialize, Serialize};

/// A client request for the partition's leader.
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "InvokeReply")]
pub struct Invoke {
    pub partition: PartitionId,
    /// `u:<idempotency key>` or `g:<generated id>`; retries reuse it.
    pub request_id: String,
    pub object: ObjectType,
    pub key: String,
    pub handler: String,
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
    /// How long the caller still waits.
    pub timeout_ms: u64,
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
    pub epoch: Epoch,
}

/// From the elector: this node follows (`leader` if known).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct BecomeFollower {
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
    pub partition: PartitionId,
    pub mode: Mode,
    /// `Active`, `CatchingUp`, `Announcing`, ...
    pub status: String,
    pub epoch: Epoch,
    pub leader: Option<NodeId>,
    pub applied_lsn: Lsn,
    pub persisted_lsn: Lsn,
    /// Milliseconds since this processor last applied a record.
    pub last_update_ms: u64,
    pub pending_requests: usize,
}

#[derive(Clone, Debug, Message)]
#[rtype(result = "ProcessorStatus")]
pub struct GetProcessorStatus;

/// How far this node's replica of `partition` is durably applied: the log
/// may be trimmed below the smallest answer of all replicas.
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "Lsn")]
pub struct GetPersisted {
    pub partition: PartitionId,
}
