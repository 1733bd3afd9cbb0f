//! Per-peer link state and the failure detector built on it.
//!
//! A peer is `Connected` exactly while a live, authenticated QUIC connection
//! to it exists, and `Suspected` otherwise. QUIC keep-alives plus a short
//! idle timeout make "no live connection" a prompt signal: a peer whose
//! packets stop arriving loses its connection after `idle_timeout`.

use super::error::TransportError;
use super::health::{PeerHealth, PeerSample};
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// What the failure detector believes about a peer, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    Connected { since: Instant },
    Suspected { since: Instant },
}

impl PeerState {
    pub fn is_connected(&self) -> bool {
        matches!(self, PeerState::Connected { .. })
    }

    pub fn since(&self) -> Instant {
        match self {
            PeerState::Connected { since } | PeerState::Suspected { since } => *since,
        }
    }
}

/// Every configured peer's state; what [`watch_peers`](super::Transport::watch_peers) carries.
pub type PeerStates = BTreeMap<NodeId, PeerState>;

/// One peer as shown by `/cluster/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub connected: bool,
    /// How long the peer has been in its current state.
    pub for_ms: u64,
    /// Connections established with this peer since start.
    pub connections: u64,
    /// Smoothed RTT of the live connection, in microseconds.
    pub rtt_us: Option<u64>,
    /// Frames waiting in the live connection's outbound queue.
    pub queued: usize,
    /// Requests sent on the live connection and not yet answered.
    pub in_flight: usize,
    /// Why the last connection ended, if one did.
    pub last_error: Option<String>,
    /// How well the link works (see `transport::health`); filled in by
    /// the transport.
    #[serde(default)]
    pub health: Option<PeerHealth>,
}

/// The caller waiting for a response.
pub(crate) type ReplySlot<M> = oneshot::Sender<Result<M, TransportError>>;

/// Requests in flight on one connection. Closing fails them all and refuses
/// new ones, so no request can slip in after the connection is declared dead.
pub(crate) struct Pending<M> {
    inner: Mutex<PendingInner<M>>,
}

struct PendingInner<M> {
    closed: bool,
    slots: HashMap<u64, ReplySlot<M>>,
}

impl<M> Pending<M> {
    pub fn new() -> Self {
        Pending {
            inner: Mutex::new(PendingInner {
                closed: false,
                slots: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner<M>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request; `false` if the connection is already closed.
    pub fn insert(&self, id: u64, slot: ReplySlot<M>) -> bool {
        let mut p = self.lock();
        if p.closed {
            return false;
        }
        p.slots.insert(id, slot);
        true
    }

    pub fn remove(&self, id: u64) -> Option<ReplySlot<M>> {
        self.lock().slots.remove(&id)
    }

    /// Fails every waiting request with `ConnectionLost`.
    pub fn close(&self, peer: NodeId) {
        let slots: Vec<_> = {
            let mut p = self.lock();
            p.closed = true;
            p.slots.drain().map(|(_, s)| s).collect()
        };
        for slot in slots {
            let _ = slot.send(Err(TransportError::ConnectionLost(peer)));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// Handles to one live connection, cheap to clone.
pub(crate) struct Live<M> {
    pub generation: u64,
    pub conn: quinn::Connection,
    /// Encoded frames for the connection's writer task.
    pub out: mpsc::Sender<Vec<u8>>,
    pub pending: Arc<Pending<M>>,
}

impl<M> Clone for Live<M> {
    fn clone(&self) -> Self {
        Live {
            generation: self.generation,
            conn: self.conn.clone(),
            out: self.out.clone(),
            pending: self.pending.clone(),
        }
    }
}

/// One configured peer.
pub(crate) struct Peer<M> {
    pub id: NodeId,
    pub addr: SocketAddr,
    link: Mutex<Link<M>>,
    /// This node's requests to the peer that got an answer (health).
    calls_answered: AtomicU64,
    /// This node's requests to the peer that timed out (health).
    calls_timed_out: AtomicU64,
    /// Commit waits on the peer's sequencer that ended on this node's
    /// log-server (health; reported by the log-server, kept here so they
    /// outlive it).
    commit_waits: AtomicU64,
    /// Of those, the ones that took `SLOW_COMMIT` or more.
    commit_slow: AtomicU64,
    /// Time, in µs, the loglets of the peer's sequencer were stuck here.
    commit_stuck_us: AtomicU64,
}

struct Link<M> {
    live: Option<Live<M>>,
    state: PeerState,
    generations: u64,
    last_error: Option<String>,
}

impl<M> Peer<M> {
    pub fn new(id: NodeId, addr: SocketAddr, now: Instant) -> Self {
        Peer {
            id,
            addr,
            link: Mutex::new(Link {
                live: None,
                state: PeerState::Suspected { since: now },
                generations: 0,
                last_error: None,
            }),
            calls_answered: AtomicU64::new(0),
            calls_timed_out: AtomicU64::new(0),
            commit_waits: AtomicU64::new(0),
            commit_slow: AtomicU64::new(0),
            commit_stuck_us: AtomicU64::new(0),
        }
    }

    /// Counts a request's end for the health score: answered (whatever
    /// the answer) or timed out.
    pub fn call_ended(&self, answered: bool) {
        let counter = if answered {
            &self.calls_answered
        } else {
            &self.calls_timed_out
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts commit progress of the peer's sequencer for the health score.
    pub fn commit_progress(&self, waits: u64, slow: u64, stuck: std::time::Duration) {
        self.commit_waits.fetch_add(waits, Ordering::Relaxed);
        self.commit_slow.fetch_add(slow, Ordering::Relaxed);
        let us = u64::try_from(stuck.as_micros()).unwrap_or(u64::MAX);
        self.commit_stuck_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The link as the health score reads it now.
    pub fn sample(&self) -> PeerSample {
        let l = self.lock();
        let (generation, rtt, sent, lost) = match &l.live {
            Some(live) => {
                let path = live.conn.stats().path;
                (
                    Some(live.generation),
                    path.rtt,
                    path.sent_packets,
                    path.lost_packets,
                )
            }
            None => (None, std::time::Duration::ZERO, 0, 0),
        };
        PeerSample {
            generation,
            rtt,
            sent_packets: sent,
            lost_packets: lost,
            calls_answered: self.calls_answered.load(Ordering::Relaxed),
            calls_timed_out: self.calls_timed_out.load(Ordering::Relaxed),
            commit_waits: self.commit_waits.load(Ordering::Relaxed),
            commit_slow: self.commit_slow.load(Ordering::Relaxed),
            commit_stuck: std::time::Duration::from_micros(
                self.commit_stuck_us.load(Ordering::Relaxed),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Link<M>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connection, if any.
    pub fn live(&self) -> Option<Live<M>> {
        self.lock().live.clone()
    }

    pub fn state(&self) -> PeerState {
        self.lock().state
    }

    /// Hands out the next connection generation number.
    pub fn next_generation(&self) -> u64 {
        let mut l = self.lock();
        l.generations += 1;
        l.generations
    }

    /// Makes `live` the peer's connection; returns the one it replaces.
    pub fn install(&self, live: Live<M>, states: &watch::Sender<PeerStates>) -> Option<Live<M>> {
        let now = Instant::now();
        let mut l = self.lock();
        let old = l.live.replace(live);
        l.state = PeerState::Connected { since: now };
        publish(states, self.id, l.state);
        old
    }

    /// Forgets connection `generation` if it is still the current one, and
    /// marks the peer suspected. Returns whether it was current.
    pub fn remove(
        &self,
        generation: u64,
        reason: String,
        states: &watch::Sender<PeerStates>,
    ) -> bool {
        let mut l = self.lock();
        if l.live.as_ref().map(|c| c.generation) != Some(generation) {
            return false;
        }
        l.live = None;
        l.last_error = Some(reason);
        l.state = PeerState::Suspected {
            since: Instant::now(),
        };
        publish(states, self.id, l.state);
        true
    }

    /// Records why a link to this peer was refused (it stays suspected);
    /// whether the reason is new, so it is logged once and not per dial.
    pub fn note_refusal(&self, reason: String) -> bool {
        let mut l = self.lock();
        let new = l.last_error.as_deref() != Some(reason.as_str());
        l.last_error = Some(reason);
        new
    }

    /// Drops the live connection at shutdown.
    pub fn take(&self, states: &watch::Sender<PeerStates>) -> Option<Live<M>> {
        let mut l = self.lock();
        let live = l.live.take();
        if live.is_some() {
            l.state = PeerState::Suspected {
                since: Instant::now(),
            };
            publish(states, self.id, l.state);
        }
        live
    }

    pub fn status(&self, queue_capacity: usize) -> PeerStatus {
        let l = self.lock();
        PeerStatus {
            node: self.id,
            addr: self.addr,
            connected: l.state.is_connected(),
            for_ms: l.state.since().elapsed().as_millis() as u64,
            connections: l.generations,
            rtt_us: l.live.as_ref().map(|c| c.conn.rtt().as_micros() as u64),
            queued: l
                .live
                .as_ref()
                .map(|c| queue_capacity.saturating_sub(c.out.capacity()))
                .unwrap_or(0),
            in_flight: l.live.as_ref().map(|c| c.pending.len()).unwrap_or(0),
            last_error: l.last_error.clone(),
            health: None,
        }
    }
}

fn publish(states: &watch::Sender<PeerStates>, node: NodeId, state: PeerState) {
    states.send_modify(|s| {
        s.insert(node, state);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closing_pending_fails_waiters_and_refuses_newcomers() {
        let p: Pending<u32> = Pending::new();
        let (tx, rx) = oneshot::channel();
        assert!(p.insert(1, tx));
        p.close(NodeId(2));
        assert!(matches!(
            rx.await,
            Ok(Err(TransportError::ConnectionLost(NodeId(2))))
        ));
        let (tx, _rx) = oneshot::channel();
        assert!(!p.insert(2, tx));
        assert_eq!(p.len(), 0);
    }
}
