//! What a protocol core knows about the world at one moment: the time, who
//! it is, the cluster, and the failure detector's verdicts. Shells build it
//! from the clock and `Net`; the simulator from its virtual clock and its
//! model of the links (see `docs/CORES.md`).

use crate::types::NodeId;
use std::collections::BTreeSet;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Env {
    /// The current time (virtual in the simulator).
    pub now: Instant,
    /// This node.
    pub me: NodeId,
    /// Every node of the cluster, this one included, in order.
    pub nodes: Vec<NodeId>,
    /// Peers the failure detector suspects (never `me`).
    pub suspected: BTreeSet<NodeId>,
}

impl Env {
    pub fn is_suspected(&self, node: NodeId) -> bool {
        self.suspected.contains(&node)
    }

    /// Nodes this one can reach, itself included.
    pub fn reachable(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| !self.suspected.contains(n))
            .count()
    }

    /// Whether this node reaches a majority of the cluster.
    pub fn has_majority(&self) -> bool {
        self.reachable() >= crate::actors::quorum::majority(self.nodes.len())
    }

    /// Every node but this one.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().copied().filter(move |n| *n != self.me)
    }
}
