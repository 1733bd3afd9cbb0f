//! What a node reports about itself (`GET /cluster/status`, the `GetNodeStatus`
//! RPC, `keelctl status`): peers as its failure detector sees them, each
//! partition's processor, the supervision tree's restarts and pending waits.

use crate::actors::supervisor::SupervisionStatus;
use crate::log::Chain;
use crate::transport::PeerStatus;
use crate::types::{Epoch, Lsn, NodeId, PartitionId};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// Builds this node's status on demand.
pub type StatusSource = Arc<dyn Fn() -> BoxFuture<'static, NodeStatus> + Send + Sync>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub uptime_ms: u64,
    pub peers: Vec<PeerStatus>,
    pub partitions: Vec<PartitionView>,
    pub supervision: SupervisionStatus,
    pub storage_bytes: u64,
    /// Damage found on disk, sync times, and whether storage failed.
    #[serde(default)]
    pub storage: crate::storage::StorageStats,
    pub chaos_enabled: bool,
    /// Where a rejoin after a lost disk stands (`None`: this node never
    /// rejoined since it started).
    #[serde(default)]
    pub rejoin: Option<crate::actors::rejoin::RejoinView>,
    /// The object types this node serves, handlers marked `r` (read-only)
    /// or `w`: every node of the cluster must show the same.
    #[serde(default)]
    pub objects: String,
}

/// One partition as one node sees it (a row of the partitions table).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionView {
    pub partition: PartitionId,
    /// `Leader`, `Candidate`, `Follower`, or `Down` if the processor is restarting.
    pub mode: String,
    pub status: String,
    pub leader: Option<NodeId>,
    pub epoch: Epoch,
    /// The tail segment's sequencer, per this node's view of the chain.
    pub sequencer: Option<NodeId>,
    pub applied_lsn: Lsn,
    pub persisted_lsn: Lsn,
    pub last_update_ms: u64,
    pub pending_requests: usize,
    /// The newest snapshot of the partition this node retains.
    #[serde(default)]
    pub snapshot_lsn: Option<Lsn>,
    /// The snapshot being restored (status `RestoringSnapshot`): from whom,
    /// at which LSN.
    #[serde(default)]
    pub restoring: Option<crate::actors::partition_processor::RestoreView>,
    /// Why the last snapshot fetch failed or was refused (cleared by a restore).
    #[serde(default)]
    pub snapshot_fetch_error: Option<String>,
    /// Snapshots the processor took since it (re)started.
    #[serde(default)]
    pub snapshots_taken: u64,
    /// Snapshots the processor restored since it (re)started.
    #[serde(default)]
    pub snapshots_restored: u64,
    /// Messages sent from this partition not yet acknowledged by their
    /// targets, and its timers.
    #[serde(default)]
    pub outbox: crate::actors::partition_processor::OutboxStatus,
}

/// Another node's status as seen from here, or why it could not be fetched.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeId,
    pub http: SocketAddr,
    pub status: Option<NodeStatus>,
    pub error: Option<String>,
}

/// `GET /cluster/status`: this node's view of the whole cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub reported_by: NodeId,
    pub nodes: Vec<NodeReport>,
    pub logs: Vec<Chain>,
}
