//! `Net`: how an actor calls another node's actor, or its own node's, with the
//! same typed request, one deadline, and errors that say whether the request
//! may have been delivered.

use super::local::{LocalActors, LocalRoute};
use super::wire::{Rpc, Wire};
use crate::types::NodeId;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Why a call produced no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Certainly not delivered: the peer is down or suspected, its queue is
    /// full, or the local actor is restarting. Safe to retry elsewhere.
    #[error("{0} unavailable: {1}")]
    Unavailable(NodeId, String),
    /// No reply before the deadline: the request may have been applied.
    #[error("no reply from {0} within {1:?}")]
    Timeout(NodeId, Duration),
    /// The connection broke with the request in flight: it may have been applied.
    #[error("connection to {0} lost with the request in flight")]
    ConnectionLost(NodeId),
    /// The remote node answered with an error instead of a reply.
    #[error("{0} answered with an error: {1}")]
    Remote(NodeId, String),
}

impl CallError {
    /// Whether the request may have reached its target.
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            CallError::Timeout(..) | CallError::ConnectionLost(..) | CallError::Remote(..)
        )
    }
}

/// The remote half of `Net` (the QUIC transport in a node).
pub trait Remote: Send + Sync + 'static {
    fn request(
        &self,
        to: NodeId,
        msg: Wire,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Wire, CallError>>;
    fn send(&self, to: NodeId, msg: Wire) -> Result<(), CallError>;
    /// The failure detector's verdict on `node`.
    fn is_suspected(&self, node: NodeId) -> bool;
    /// Whether the link to `node` is scored degraded (connected but sick:
    /// see `transport::health`). Without a score, no link is.
    fn is_degraded(&self, _node: NodeId) -> bool {
        false
    }
}

#[derive(Clone)]
pub struct Net {
    me: NodeId,
    nodes: Arc<Vec<NodeId>>,
    local: LocalActors,
    remote: Arc<dyn Remote>,
}

impl Net {
    pub fn new(
        me: NodeId,
        nodes: Vec<NodeId>,
        local: LocalActors,
        remote: Arc<dyn Remote>,
    ) -> Self {
        Net {
            me,
            nodes: Arc::new(nodes),
            local,
            remote,
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every node of the cluster, this one included.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn local(&self) -> &LocalActors {
        &self.local
    }

    pub fn is_suspected(&self, node: NodeId) -> bool {
        node != self.me && self.remote.is_suspected(node)
    }

    /// What a protocol core needs to know right now (see `actors::env`).
    pub fn env(&self) -> crate::actors::env::Env {
        crate::actors::env::Env {
            now: std::time::Instant::now(),
            me: self.me,
            nodes: self.nodes.to_vec(),
            suspected: self
                .nodes
                .iter()
                .copied()
                .filter(|n| self.is_suspected(*n))
                .collect(),
        }
    }

    /// Peers whose links are scored degraded (never this node).
    pub fn degraded(&self) -> std::collections::BTreeSet<NodeId> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| self.is_degraded(*n))
            .collect()
    }

    /// Whether this node scores `node`'s link degraded (never its own).
    pub fn is_degraded(&self, node: NodeId) -> bool {
        node != self.me && self.remote.is_degraded(node)
    }

    /// Number of nodes this one currently sees (itself included).
    pub fn reachable(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| !self.is_suspected(**n))
            .count()
    }

    /// Calls `req` on `to` (locally through the actor's mailbox, remotely over
    /// QUIC) and waits at most `timeout` for the reply.
    pub async fn call<R>(
        &self,
        to: NodeId,
        req: R,
        timeout: Duration,
    ) -> Result<R::Reply, CallError>
    where
        R: Rpc,
        LocalActors: LocalRoute<R>,
    {
        if to == self.me {
            let Some(recipient) = self.local.route(&req) else {
                return Err(CallError::Unavailable(
                    to,
                    format!("local {} restarting", R::NAME),
                ));
            };
            return match tokio::time::timeout(timeout, recipient.send(req)).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(actix::MailboxError::Closed)) => Err(CallError::Unavailable(
                    to,
                    format!("local {} stopped", R::NAME),
                )),
                Ok(Err(actix::MailboxError::Timeout)) | Err(_) => {
                    Err(CallError::Timeout(to, timeout))
                }
            };
        }
        let wire = self.remote.request(to, req.into_wire(), timeout).await?;
        match R::reply_from_wire(wire) {
            Ok(reply) => Ok(reply),
            Err(Wire::Error(e)) => Err(CallError::Remote(to, e.0)),
            Err(other) => Err(CallError::Remote(
                to,
                format!("unexpected reply to {}: {other:?}", R::NAME),
            )),
        }
    }

    /// Calls `make()` on every node of `to` at once; the replies arrive in the
    /// order they come back (quorum protocols stop reading once they have
    /// enough, which drops the rest).
    pub fn broadcast<R>(
        &self,
        to: &[NodeId],
        make: impl Fn() -> R,
        timeout: Duration,
    ) -> futures::stream::FuturesUnordered<
        impl std::future::Future<Output = (NodeId, Result<R::Reply, CallError>)>,
    >
    where
        R: Rpc,
        LocalActors: LocalRoute<R>,
    {
        to.iter()
            .map(|&node| {
                let net = self.clone();
                let req = make();
                async move { (node, net.call(node, req, timeout).await) }
            })
            .collect()
    }

    /// A raw request to another node (for messages no single actor serves).
    pub async fn request_wire(
        &self,
        to: NodeId,
        msg: Wire,
        timeout: Duration,
    ) -> Result<Wire, CallError> {
        match self.remote.request(to, msg, timeout).await? {
            Wire::Error(e) => Err(CallError::Remote(to, e.0)),
            other => Ok(other),
        }
    }

    /// A one-way message to another node (never blocks; dropped when the
    /// peer's queue is full or the peer is down).
    pub fn send(&self, to: NodeId, msg: Wire) -> Result<(), CallError> {
        self.remote.send(to, msg)
    }
}
