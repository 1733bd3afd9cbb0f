//! How this node's logs are replicated and how long their waits may last.

use crate::types::NodeId;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Log-servers of every new segment (default: every node).
    pub nodeset: Vec<NodeId>,
    /// Copies a record needs before it is committed.
    pub replication: u8,
    /// One append attempt's wait for its sequencer.
    pub append_timeout: Duration,
    /// How long an appender that met a sealed segment waits for someone else
    /// to extend the chain before it drives the seal itself.
    pub seal_grace: Duration,
    /// One seal-and-extend job's deadline.
    pub seal_timeout: Duration,
    /// One metadata operation's deadline.
    pub meta_timeout: Duration,
}

impl LogConfig {
    pub fn new(nodeset: Vec<NodeId>, replication: u8) -> Self {
        LogConfig {
            nodeset,
            replication,
            append_timeout: Duration::from_secs(2),
            seal_grace: Duration::from_secs(1),
            seal_timeout: Duration::from_secs(10),
            meta_timeout: Duration::from_secs(3),
        }
    }
}
