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
    /// The partition the object belongs to.
    pub partition: PartitionId,
    /// `u:<idempotency key>` or `g:<generated id>`; retries reuse it.
    pub request_id: String,
    /// The object's type.
    pub object: ObjectType,
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
    pub fn check(&self, partition: PartitionId, partitions: u32) -> Result<(), String> {
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
        let owner = partition_of(self.object, &self.key, partitions);
        if self.partition != partition || owner != partition {
            return Err(format!(
                "{}/{} belongs to partition {owner}, not {partition}",
                self.object.name(),
                self.key
            ));
        }
        let arg: serde_json::Value = serde_json::from_slice(&self.arg)
            .map_err(|e| format!("malformed JSON argument: {e}"))?;
        crate::ingress::objects::validate(self.object, &self.handler, &arg)
            .map_err(|e| e.to_string())
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
    /// `Active`, `CatchingUp`, `Announcing`, ...
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
}

#[derive(Clone, Debug, Message)]
#[rtype(result = "ProcessorStatus")]
pub struct GetProcessorStatus;

/// How far this node's replica of `partition` is durably applied: the log
/// may be trimmed below the smallest answer of all replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Lsn")]
pub struct GetPersisted {
    /// The partition asked about.
    pub partition: PartitionId,
}
