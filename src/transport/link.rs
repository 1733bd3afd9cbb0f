//! Connection lifecycle: dialing with backoff, accepting and authenticating,
//! and the per-connection writer and reader tasks.
//!
//! Only the lower node id of a pair dials, so a pair never holds two
//! connections. Each side sends its frames on one long-lived uni stream that
//! starts with `Hello`; the dialer counts the link as up only once the
//! acceptor's `Hello` arrives, which proves the acceptor authenticated it.

use super::error::{FrameError, TransportError};
use super::frame::{self, Envelope, FrameDecoder};
use super::peer::{Live, Peer, Pending};
use super::rpc::Responder;
use super::{tls, Shared, WireMessage};
use crate::types::NodeId;
use rand::Rng;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn, Instrument};

/// QUIC application close codes this transport uses.
pub mod close_code {
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 0;
    /// The peer sent a frame that could not be decoded or broke the protocol.
    pub const PROTOCOL: u32 = 1;
    /// The peer is not a configured member, or dialed against the id rule.
    pub const REFUSED: u32 = 2;
    /// A newer connection from the same peer took over.
    pub const REPLACED: u32 = 3;
    /// A local task failed (e.g. a handler panicked).
    pub const INTERNAL: u32 = 4;
}

/// Largest batch the writer gathers before one `write_all`.
const MAX_BATCH_BYTES: usize = 1 << 20;
const MAX_BATCH_FRAMES: usize = 512;
/// Read buffer per stream.
const READ_CHUNK: usize = 64 * 1024;
/// Request deadlines beyond this are clamped (they are budgets, not dates).
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

fn close(conn: &quinn::Connection, code: u32, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(128)];
    conn.close(code.into(), reason);
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// A connection whose peer has said hello, and the stream it said it on.
struct Established {
    conn: quinn::Connection,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

/// Keeps one connection to `peer` alive, redialing with jittered backoff,
/// until the transport closes.
pub(crate) async fn dial_loop<M: WireMessage>(
    shared: Arc<Shared<M>>,
    peer: Arc<Peer<M>>,
    endpoint: quinn::Endpoint,
) {
    let cfg = shared.cfg.clone();
    let mut closing = shared.closing.subscribe();
    let mut backoff = cfg.backoff_min;
    let mut failures: u64 = 0;
    while !*closing.borrow() {
        let started = Instant::now();
        let attempt = tokio::select! {
            r = tokio::time::timeout(cfg.connect_timeout, dial(&shared, &peer, &endpoint)) => r,
            _ = closing.wait_for(|c| *c) => return,
        };
        match attempt {
            Ok(Ok(est)) => {
                failures = 0;
                let up = Instant::now();
                tokio::select! {
                    _ = run_connection(shared.clone(), peer.clone(), est.conn, Some((est.recv, est.decoder))) => {}
                    _ = closing.wait_for(|c| *c) => return,
                }
                // A link that lived a while earns a prompt redial; one that
                // dies right away keeps backing off.
                if up.elapsed() >= cfg.idle_timeout {
                    backoff = cfg.backoff_min;
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                debug!(error = %e, failures, "dial failed");
            }
            Err(_) => {
                failures += 1;
                debug!(failures, "dial timed out");
            }
        }
        // Pace attempts from their start: a timed-out attempt already waited.
        let pause = jitter(backoff);
        backoff = (backoff * 2).min(cfg.backoff_max);
        let resume = tokio::time::Instant::from_std(started + pause);
        tokio::select! {
            _ = tokio::time::sleep_until(resume) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// A uniformly random pause in `[d/2, d]`, so peers that lost each other at
/// the same moment do not redial in lockstep.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// One dial attempt: handshake, then wait for the acceptor's hello.
async fn dial<M: WireMessage>(
    shared: &Shared<M>,
    peer: &Peer<M>,
    endpoint: &quinn::Endpoint,
) -> Result<Established, DialError> {
    let name = tls::node_name(peer.id);
    let conn = endpoint
        .connect_with(shared.client.clone(), peer.addr, &name)?
        .await?;
    let mut recv = conn.accept_uni().await?;
    let mut decoder = FrameDecoder::new(shared.cfg.max_frame_len);
    let mut buf = [0u8; 1024];
    // Bounded by the caller's connect timeout.
    loop {
        match decoder.next_frame::<M>() {
            Ok(Some(Envelope::Hello { node, app })) if node == peer.id => {
                if let Some(why) = app_mismatch(&shared.cfg.app, peer.id, &app) {
                    close(&conn, close_code::REFUSED, &why);
                    if peer.note_refusal(why.clone()) {
                        error!(peer = %peer.id, "{why}");
                    }
                    return Err(FrameError::Protocol(why).into());
                }
                break;
            }
            Ok(Some(_)) => {
                let e = FrameError::Protocol("acceptor did not start with its hello".into());
                close(&conn, close_code::PROTOCOL, &e.to_string());
                return Err(e.into());
            }
            Ok(None) => {}
            Err(e) => {
                close(&conn, close_code::PROTOCOL, &e.to_string());
                return Err(e.into());
            }
        }
        match recv.read(&mut buf).await? {
            Some(n) => decoder.extend(&buf[..n]),
            None => return Err(FrameError::Truncated(decoder.buffered()).into()),
        }
    }
    Ok(Established {
        conn,
        recv,
        decoder,
    })
}

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept_loop<M: WireMessage>(shared: Arc<Shared<M>>, endpoint: quinn::Endpoint) {
    let mut closing = shared.closing.subscribe();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = closing.wait_for(|c| *c) => return,
        };
        let Some(incoming) = incoming else { return };
        let remote = incoming.remote_address();
        let span = tracing::info_span!("accept", node = %shared.node, %remote);
        tokio::spawn(accept_one(shared.clone(), incoming).instrument(span));
    }
}

/// Handshake, identify by certificate, enforce the dial rule, then serve.
async fn accept_one<M: WireMessage>(shared: Arc<Shared<M>>, incoming: quinn::Incoming) {
    let handshake = async { incoming.accept()?.await };
    let conn = match tokio::time::timeout(shared.cfg.connect_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            shared
                .stats
                .handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            debug!("handshake timed out");
            return;
        }
    };
    let node = match tls::identify_peer(&conn, shared.peers.keys().copied()) {
        Ok(node) if node < shared.node => node,
        Ok(node) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %node, "refused: only the lower id of a pair dials");
            close(&conn, close_code::REFUSED, "higher id must not dial");
            return;
        }
        Err(e) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "refused unidentified peer");
            close(&conn, close_code::REFUSED, &e.to_string());
            return;
        }
    };
    let Some(peer) = shared.peers.get(&node).cloned() else {
        return;
    };
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("link", peer = %node);
    let mut closing = shared.closing.subscribe();
    tokio::select! {
        _ = run_connection(shared.clone(), peer, conn, None).instrument(span) => {}
        _ = closing.wait_for(|c| *c) => {}
    }
}

/// Serves one authenticated connection until it closes: installs it as the
/// peer's link, starts its writer and readers, and on close fails its
/// in-flight requests and (if still current) marks the peer suspected.
async fn run_connection<M: WireMessage>(
    shared: Arc<Shared<M>>,
    peer: Arc<Peer<M>>,
    conn: quinn::Connection,
    first_stream: Option<(quinn::RecvStream, FrameDecoder)>,
) {
    let hello = match frame::encode(
        &Envelope::<M>::Hello {
            node: shared.node,
            app: shared.cfg.app.clone(),
        },
        shared.cfg.max_frame_len,
    ) {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(error = %e, "cannot encode hello");
            close(&conn, close_code::INTERNAL, "cannot encode hello");
            return;
        }
    };
    let (out, rx) = mpsc::channel(shared.cfg.queue_capacity);
    // The queue is empty, so the hello is the stream's first frame.
    let _ = out.try_send(hello);
    let generation = peer.next_generation();
    let live = Live {
        generation,
        conn: conn.clone(),
        out,
        pending: Arc::new(Pending::new()),
    };

    tokio::spawn(write_frames(conn.clone(), rx).in_current_span());
    if let Some((recv, decoder)) = first_stream {
        tokio::spawn(
            read_frames(shared.clone(), peer.id, live.clone(), recv, decoder, true)
                .in_current_span(),
        );
    }
    tokio::spawn(accept_streams(shared.clone(), peer.id, live.clone()).in_current_span());

    if let Some(old) = peer.install(live.clone(), &shared.states) {
        close(
            &old.conn,
            close_code::REPLACED,
            "replaced by a newer connection",
        );
    }
    info!(generation, remote = %conn.remote_address(), "connection up");

    let reason = conn.closed().await;
    live.pending.close(peer.id);
    if peer.remove(generation, reason.to_string(), &shared.states) {
        info!(generation, %reason, "connection down");
    } else {
        debug!(generation, %reason, "superseded connection closed");
    }
}

/// Starts a reader for each uni stream the peer opens.
async fn accept_streams<M: WireMessage>(shared: Arc<Shared<M>>, peer: NodeId, live: Live<M>) {
    // Ends when the connection closes; QUIC's stream limit bounds concurrency.
    while let Ok(recv) = live.conn.accept_uni().await {
        let decoder = FrameDecoder::new(shared.cfg.max_frame_len);
        tokio::spawn(
            read_frames(shared.clone(), peer, live.clone(), recv, decoder, false).in_current_span(),
        );
    }
}

/// Drains the outbound queue onto one uni stream, batching what is ready.
async fn write_frames(conn: quinn::Connection, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "cannot open stream");
            return;
        }
    };
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = conn.closed() => return,
        };
        let result = match rx.try_recv() {
            Err(_) => send.write_all(&first).await,
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                let mut frames = 2;
                while batch.len() < MAX_BATCH_BYTES && frames < MAX_BATCH_FRAMES {
                    let Ok(next) = rx.try_recv() else { break };
                    batch.extend_from_slice(&next);
                    frames += 1;
                }
                let r = send.write_all(&batch).await;
                if batch.capacity() > 4 * MAX_BATCH_BYTES {
                    batch = Vec::new();
                }
                r
            }
        };
        if let Err(e) = result {
            // The peer stopped reading us, or the connection is gone: either
            // way nothing more can be delivered on it.
            debug!(error = %e, "write failed");
            close(&conn, close_code::INTERNAL, "outbound stream failed");
            return;
        }
    }
    let _ = send.finish();
}

/// Decodes frames from one incoming stream and dispatches them. A bad frame
/// closes the whole connection: after garbage, nothing on it can be trusted.
async fn read_frames<M: WireMessage>(
    shared: Arc<Shared<M>>,
    peer: NodeId,
    live: Live<M>,
    mut recv: quinn::RecvStream,
    mut decoder: FrameDecoder,
    mut greeted: bool,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        loop {
            let env = match decoder.next_frame::<M>() {
                Ok(Some(env)) => env,
                Ok(None) => break,
                Err(e) => return protocol_error(&shared, peer, &live.conn, e),
            };
            let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
                dispatch(&shared, peer, &live, env, &mut greeted)
            }));
            match dispatched {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return protocol_error(&shared, peer, &live.conn, e),
                Err(_) => {
                    warn!("inbound handler panicked; closing connection");
                    close(&live.conn, close_code::INTERNAL, "handler panicked");
                    return;
                }
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.extend(&buf[..n]),
            Ok(None) => {
                if let Err(e) = decoder.finish() {
                    protocol_error(&shared, peer, &live.conn, e);
                }
                return;
            }
            Err(e) => {
                debug!(error = %e, "stream ended");
                return;
            }
        }
    }
}

/// Why a peer whose hello says it serves `theirs` cannot be linked with
/// this node, which serves `mine`.
fn app_mismatch(mine: &str, peer: NodeId, theirs: &str) -> Option<String> {
    (mine != theirs).then(|| {
        format!(
            "refusing {peer}: it serves other object types ({}) than this node ({}); every node of a cluster must register the same types",
            if theirs.is_empty() { "none" } else { theirs },
            if mine.is_empty() { "none" } else { mine },
        )
    })
}

fn protocol_error<M: WireMessage>(
    shared: &Shared<M>,
    peer: NodeId,
    conn: &quinn::Connection,
    e: FrameError,
) {
    shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    warn!(%peer, error = %e, "protocol error; closing connection");
    close(conn, close_code::PROTOCOL, &e.to_string());
}

fn dispatch<M: WireMessage>(
    shared: &Shared<M>,
    peer: NodeId,
    live: &Live<M>,
    env: Envelope<M>,
    greeted: &mut bool,
) -> Result<(), FrameError> {
    match env {
        Envelope::Hello { node, app } if !*greeted && node == peer => {
            if let Some(why) = app_mismatch(&shared.cfg.app, peer, &app) {
                if let Some(p) = shared.peers.get(&peer) {
                    if p.note_refusal(why.clone()) {
                        error!(%peer, "{why}");
                    }
                }
                return Err(FrameError::Protocol(why));
            }
            *greeted = true;
        }
        Envelope::Hello { node, .. } => {
            return Err(FrameError::Protocol(format!(
                "unexpected hello from {node}"
            )));
        }
        _ if !*greeted => {
            return Err(FrameError::Protocol(
                "stream did not start with hello".into(),
            ));
        }
        Envelope::Request {
            id,
            deadline_ms,
            body,
        } => {
            let budget = Duration::from_millis(deadline_ms).min(MAX_DEADLINE);
            let deadline = Instant::now() + budget;
            let reply = Responder::new(
                id,
                peer,
                deadline,
                shared.cfg.max_frame_len,
                live.out.clone(),
            );
            shared.inbound.on_request(peer, body, reply);
        }
        Envelope::Response { id, result } => {
            // None: the caller already gave up (timeout); nothing to do.
            if let Some(slot) = live.pending.remove(id) {
                let _ = slot.send(result.map_err(TransportError::Remote));
            }
        }
        Envelope::OneWay { body } => shared.inbound.on_message(peer, body),
    }
    Ok(())
}
