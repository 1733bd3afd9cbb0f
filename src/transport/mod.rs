//! Node-to-node messaging over QUIC, with a failure detector and fault injection.
//!
//! One quinn endpoint per node, mutual TLS under a cluster CA, one
//! connection per pair of nodes (the lower id dials, and redials forever),
//! and length-prefixed MessagePack frames on one long-lived uni stream per
//! direction. The transport is generic over the message type `M` and knows
//! nothing of the protocols riding on it.
//!
//! The tuning exists for one promise: a dead or unreachable peer is noticed
//! within about a second (QUIC keep-alive 250 ms, idle timeout 1 s), requests
//! in flight to it fail with [`TransportError::ConnectionLost`] instead of
//! hanging, and new requests fail fast with [`TransportError::PeerUnavailable`].
//! A healed link is redialed within one backoff step (≤ 250 ms).
//!
//! Why one stream per direction rather than one per request: messages
//! between two nodes keep their order (the log relies on it for stores from
//! one sequencer), and the writer can batch many small frames into one
//! write. A request is matched to its response by id.
//!
//! [`FaultFilter`] sits under QUIC (it wraps the UDP socket) so tests and
//! chaos runs produce genuine packet loss and delay.

mod config;
mod endpoint;
mod error;
mod fault;
pub mod frame;
pub mod health;
mod link;
mod peer;
mod rpc;
pub mod tls;

pub use config::{PeerAddr, TransportConfig};
pub use endpoint::{client_config, server_config, transport_config};
pub use error::{FrameError, RemoteError, TlsError, TransportError};
pub use fault::{AddrRule, FaultCounters, FaultFilter, FaultRule, FaultSocket};
pub use link::close_code;
pub use peer::{PeerState, PeerStates, PeerStatus};
pub use rpc::Responder;
pub use tls::{CaCert, ClusterCa, NodeIdentity};

use crate::types::NodeId;
use frame::Envelope;
use peer::Peer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

/// A message type that can cross the wire. Implemented for every type that
/// qualifies, so a protocol's message enum needs nothing beyond serde.
pub trait WireMessage: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> WireMessage for T {}

/// Where a node's incoming traffic goes. Called on the connection's reader
/// task: implementations must hand work off (e.g. `try_send` to an actor)
/// rather than block, or they stall every message from that peer.
pub trait Inbound<M: WireMessage>: Send + Sync + 'static {
    /// A request; answer through `reply` (dropping it answers `Dropped`).
    fn on_request(&self, from: NodeId, msg: M, reply: Responder<M>);
    /// A one-way message.
    fn on_message(&self, from: NodeId, msg: M);
}

/// Connection counters since start, for status pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStats {
    /// Incoming connections authenticated and served.
    pub accepted: u64,
    /// Incoming connections refused (bad certificate, unknown node, wrong dial direction).
    pub refused: u64,
    /// Incoming handshakes that did not finish within `connect_timeout`.
    pub handshake_timeouts: u64,
    /// Connections closed because the peer sent a malformed frame.
    pub protocol_errors: u64,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    handshake_timeouts: AtomicU64,
    protocol_errors: AtomicU64,
}

/// State shared by the handle and every task.
pub(crate) struct Shared<M> {
    node: NodeId,
    cfg: TransportConfig,
    started: Instant,
    local_addr: SocketAddr,
    /// Taken at shutdown so the endpoint (and its socket) can be released.
    endpoint: Mutex<Option<quinn::Endpoint>>,
    client: quinn::ClientConfig,
    peers: BTreeMap<NodeId, Arc<Peer<M>>>,
    inbound: Arc<dyn Inbound<M>>,
    fault: FaultFilter,
    states: watch::Sender<PeerStates>,
    closing: watch::Sender<bool>,
    next_request: AtomicU64,
    stats: Stats,
    /// Every peer's link health, scored every `health::SAMPLE_EVERY`.
    health: Mutex<health::HealthCore>,
    /// The accept loop and the dialers.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    socket: Weak<dyn quinn::AsyncUdpSocket>,
}

impl<M> Shared<M> {
    /// The synchronous half of shutdown: stop dialing and accepting, close
    /// every connection. Returns the endpoint if this call took it.
    fn begin_close(&self) -> Option<quinn::Endpoint> {
        self.closing.send_replace(true);
        let endpoint = self
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(ep) = &endpoint {
            ep.close(close_code::SHUTDOWN.into(), b"shutdown");
        }
        for peer in self.peers.values() {
            if let Some(live) = peer.take(&self.states) {
                live.pending.close(peer.id);
            }
        }
        endpoint
    }
}

/// Closes the transport when the last handle is dropped without `shutdown`.
struct CloseOnDrop<M>(Arc<Shared<M>>);

impl<M> Drop for CloseOnDrop<M> {
    fn drop(&mut self) {
        self.0.begin_close();
    }
}

/// A node's transport handle. Cheap to clone; the transport closes when the
/// last clone is dropped, or explicitly with [`shutdown`](Self::shutdown).
pub struct Transport<M> {
    shared: Arc<Shared<M>>,
    _close: Arc<CloseOnDrop<M>>,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Transport {
            shared: self.shared.clone(),
            _close: self._close.clone(),
        }
    }
}

impl<M> std::fmt::Debug for Transport<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node", &self.shared.node)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl<M: WireMessage> Transport<M> {
    /// Binds `cfg.listen`, starts accepting, and starts dialing every
    /// configured peer with a higher id than `identity.node`.
    pub async fn start(
        cfg: TransportConfig,
        identity: NodeIdentity,
        ca: CaCert,
        fault: FaultFilter,
        inbound: Arc<dyn Inbound<M>>,
    ) -> Result<Self, TransportError> {
        cfg.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::Config(
                "start the transport inside a tokio runtime".into(),
            ));
        }
        let node = identity.node;
        let bound = endpoint::bind(&cfg, &identity, &ca, fault.clone())?;
        let local_addr = bound.endpoint.local_addr()?;
        let now = Instant::now();
        let peers: BTreeMap<NodeId, Arc<Peer<M>>> = cfg
            .others(node)
            .map(|p| (p.id, Arc::new(Peer::new(p.id, p.addr, now))))
            .collect();
        let (states, _) = watch::channel(peers.iter().map(|(id, p)| (*id, p.state())).collect());
        let shared = Arc::new(Shared {
            node,
            cfg,
            started: now,
            local_addr,
            endpoint: Mutex::new(Some(bound.endpoint.clone())),
            client: bound.client,
            peers,
            inbound,
            fault,
            states,
            closing: watch::channel(false).0,
            next_request: AtomicU64::new(1),
            stats: Stats::default(),
            health: Mutex::new(health::HealthCore::new(health::HealthConfig::default())),
            tasks: Mutex::new(Vec::new()),
            socket: bound.socket,
        });

        let span = tracing::info_span!("transport", %node);
        let mut tasks = vec![
            tokio::spawn(
                link::accept_loop(shared.clone(), bound.endpoint.clone()).instrument(span.clone()),
            ),
            tokio::spawn(score_health(shared.clone()).instrument(span.clone())),
        ];
        for peer in shared.peers.values().filter(|p| p.id > node) {
            let link_span = tracing::info_span!(parent: &span, "link", peer = %peer.id);
            tasks.push(tokio::spawn(
                link::dial_loop(shared.clone(), peer.clone(), bound.endpoint.clone())
                    .instrument(link_span),
            ));
        }
        *shared.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        span.in_scope(|| info!(%local_addr, peers = shared.peers.len(), "transport started"));
        Ok(Transport {
            _close: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Sends a request and waits at most `timeout` for its response.
    ///
    /// Fails fast with `PeerUnavailable` (not sent) when there is no live
    /// connection, with `QueueFull` (not sent) when the connection's queue is
    /// full, and with `ConnectionLost`/`Timeout` (maybe delivered) otherwise.
    pub async fn request(
        &self,
        to: NodeId,
        msg: M,
        timeout: Duration,
    ) -> Result<M, TransportError> {
        let live = self.live(to)?;
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let deadline_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        let bytes = frame::encode(
            &Envelope::Request {
                id,
                deadline_ms,
                body: msg,
            },
            self.shared.cfg.max_frame_len,
        )?;
        let (tx, rx) = oneshot::channel();
        if !live.pending.insert(id, tx) {
            return Err(TransportError::PeerUnavailable(to));
        }
        if let Err(e) = live.out.try_send(bytes) {
            live.pending.remove(id);
            return Err(queue_error(to, e));
        }
        let pending = live.pending.clone();
        drop(live);
        let peer = self.shared.peers.get(&to);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => {
                // A lost connection is the failure detector's news, not
                // the link's quality.
                if let Some(p) =
                    peer.filter(|_| !matches!(result, Err(TransportError::ConnectionLost(_))))
                {
                    p.call_ended(true);
                }
                result
            }
            Ok(Err(_)) => Err(TransportError::ConnectionLost(to)),
            Err(_) => {
                if let Some(p) = peer {
                    p.call_ended(false);
                }
                pending.remove(id);
                Err(TransportError::Timeout {
                    peer: to,
                    after: timeout,
                })
            }
        }
    }

    /// Queues a one-way message. Never blocks: `QueueFull` or
    /// `PeerUnavailable` instead. Success means queued, not delivered.
    pub fn send(&self, to: NodeId, msg: M) -> Result<(), TransportError> {
        let live = self.live(to)?;
        let bytes = frame::encode(
            &Envelope::OneWay { body: msg },
            self.shared.cfg.max_frame_len,
        )?;
        live.out.try_send(bytes).map_err(|e| queue_error(to, e))
    }

    /// The failure detector's view of `node`. This node itself is always
    /// `Connected`; an unknown node is `Suspected` since start.
    pub fn peer_state(&self, node: NodeId) -> PeerState {
        if node == self.shared.node {
            return PeerState::Connected {
                since: self.shared.started,
            };
        }
        match self.shared.peers.get(&node) {
            Some(peer) => peer.state(),
            None => PeerState::Suspected {
                since: self.shared.started,
            },
        }
    }

    /// What this node serves above the transport, as its hello says (see
    /// `TransportConfig::app`).
    pub fn app(&self) -> &str {
        &self.shared.cfg.app
    }

    /// Every configured peer, for status output.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let health = self.shared.health.lock().unwrap_or_else(|p| p.into_inner());
        self.shared
            .peers
            .values()
            .map(|p| PeerStatus {
                health: Some(health.health(p.id, now)),
                ..p.status(self.shared.cfg.queue_capacity)
            })
            .collect()
    }

    /// Whether the link to `node` works well (see [`health`]); this node's
    /// own always does.
    pub fn is_healthy(&self, node: NodeId) -> bool {
        node == self.shared.node
            || self
                .shared
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_healthy(node)
    }

    /// Counts commit progress of `node`'s sequencer as this node's
    /// log-server saw it: `waits` ended, `slow` of them slow, its loglets
    /// `stuck` for so long (see [`health`], H1).
    pub fn commit_progress(&self, node: NodeId, waits: u64, slow: u64, stuck: Duration) {
        if let Some(peer) = self.shared.peers.get(&node) {
            peer.commit_progress(waits, slow, stuck);
        }
    }

    /// Failure-detector changes: the receiver sees every peer's latest state.
    pub fn watch_peers(&self) -> watch::Receiver<PeerStates> {
        self.shared.states.subscribe()
    }

    /// The fault filter under this node's socket.
    pub fn fault(&self) -> &FaultFilter {
        &self.shared.fault
    }

    pub fn stats(&self) -> TransportStats {
        let s = &self.shared.stats;
        TransportStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            handshake_timeouts: s.handshake_timeouts.load(Ordering::Relaxed),
            protocol_errors: s.protocol_errors.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection and the endpoint, ends all tasks, and waits
    /// (bounded) until the UDP port is released so the node can restart on it.
    pub async fn shutdown(&self) {
        const GRACE: Duration = Duration::from_secs(2);
        let shared = &self.shared;
        let endpoint = shared.begin_close();
        let tasks = std::mem::take(&mut *shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        if let Some(ep) = endpoint {
            let _ = tokio::time::timeout(GRACE, ep.wait_idle()).await;
        }
        let deadline = Instant::now() + GRACE;
        while shared.socket.strong_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if shared.socket.strong_count() > 0 {
            warn!(node = %shared.node, "socket still held after shutdown");
        } else {
            info!(node = %shared.node, "transport shut down");
        }
    }

    fn live(&self, to: NodeId) -> Result<peer::Live<M>, TransportError> {
        if *self.shared.closing.borrow() {
            return Err(TransportError::Shutdown);
        }
        let peer = self
            .shared
            .peers
            .get(&to)
            .ok_or(TransportError::UnknownPeer(to))?;
        peer.live().ok_or(TransportError::PeerUnavailable(to))
    }
}

fn queue_error<T>(to: NodeId, e: mpsc::error::TrySendError<T>) -> TransportError {
    match e {
        mpsc::error::TrySendError::Full(_) => TransportError::QueueFull(to),
        mpsc::error::TrySendError::Closed(_) => TransportError::PeerUnavailable(to),
    }
}

/// Samples every peer's link each [`health::SAMPLE_EVERY`] and scores it;
/// a change of health is logged with the reading that decided it.
async fn score_health<M: WireMessage>(shared: Arc<Shared<M>>) {
    let mut closing = shared.closing.subscribe();
    let mut every = tokio::time::interval(health::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        let samples: BTreeMap<NodeId, health::PeerSample> =
            shared.peers.values().map(|p| (p.id, p.sample())).collect();
        let changes = shared
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(Instant::now(), &samples);
        for c in changes {
            if c.healthy {
                info!(peer = %c.peer, why = %c.why, "peer healthy again");
            } else {
                warn!(peer = %c.peer, why = %c.why, "peer degraded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync_static<T: Send + Sync + 'static>() {}
    fn send_static<T: Send + 'static>() {}

    /// Handlers move responders into spawned tasks; actors hold transports.
    #[test]
    fn handles_cross_threads() {
        send_static::<Responder<String>>();
        send_sync_static::<Transport<String>>();
        send_sync_static::<FaultFilter>();
        send_sync_static::<TransportError>();
    }
}
