//! The QUIC transport between real endpoints on loopback: messaging,
//! authentication, hostile frames, fail-fast errors, bounded queues, failure
//! detection under injected partitions, and restarts.
//!
//! Tests take a shared lock so their timing measurements do not compete for
//! the CPU with each other.

use keel::transport::frame::{self, Envelope};
use keel::transport::{
    close_code, CaCert, ClusterCa, FaultFilter, Inbound, NodeIdentity, PeerAddr, PeerState,
    Responder, Transport, TransportConfig, TransportError,
};
use keel::types::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const LONG: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Msg {
    /// Answered with `Pong(n * 10 + answering node)`.
    Ping(u64),
    Pong(u64),
    /// One-way.
    Note(String),
    /// The handler keeps the responder and never answers.
    Hold,
    /// The handler drops the responder.
    Ignore,
    Blob(Vec<u8>),
}

/// Records what a node received.
struct Inbox {
    me: NodeId,
    seen_from: Mutex<Vec<NodeId>>,
    notes: Mutex<Vec<(NodeId, String)>>,
    blobs: Mutex<usize>,
    held: Mutex<Vec<Responder<Msg>>>,
}

impl Inbox {
    fn new(me: NodeId) -> Arc<Self> {
        Arc::new(Inbox {
            me,
            seen_from: Mutex::default(),
            notes: Mutex::default(),
            blobs: Mutex::default(),
            held: Mutex::default(),
        })
    }
    fn saw(&self, node: NodeId) -> bool {
        self.seen_from.lock().unwrap().contains(&node)
    }
    fn notes(&self) -> Vec<(NodeId, String)> {
        self.notes.lock().unwrap().clone()
    }
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
    fn blobs(&self) -> usize {
        *self.blobs.lock().unwrap()
    }
}

impl Inbound<Msg> for Inbox {
    fn on_request(&self, from: NodeId, msg: Msg, reply: Responder<Msg>) {
        self.seen_from.lock().unwrap().push(from);
        assert!(reply.deadline() > Instant::now());
        match msg {
            Msg::Ping(n) => reply.respond(Msg::Pong(n * 10 + self.me.0 as u64)),
            Msg::Hold => self.held.lock().unwrap().push(reply),
            Msg::Ignore => drop(reply),
            other => reply.respond(other),
        }
    }
    fn on_message(&self, from: NodeId, msg: Msg) {
        self.seen_from.lock().unwrap().push(from);
        match msg {
            Msg::Note(s) => self.notes.lock().unwrap().push((from, s)),
            Msg::Blob(_) => *self.blobs.lock().unwrap() += 1,
            _ => {}
        }
    }
}

/// Free loopback UDP addresses (bound together, then released).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let socks: Vec<_> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks.iter().map(|s| s.local_addr().unwrap()).collect()
}

/// A cluster layout: ids 1..=n at fixed addresses, one CA.
struct Layout {
    ca: ClusterCa,
    addrs: Vec<SocketAddr>,
}

impl Layout {
    fn new(n: usize) -> Self {
        Layout {
            ca: ClusterCa::generate().unwrap(),
            addrs: free_addrs(n),
        }
    }
    fn addr(&self, node: NodeId) -> SocketAddr {
        self.addrs[node.0 as usize - 1]
    }
    fn config(&self, node: NodeId) -> TransportConfig {
        let peers = (1..=self.addrs.len() as u32)
            .map(|i| PeerAddr {
                id: NodeId(i),
                addr: self.addr(NodeId(i)),
            })
            .collect();
        TransportConfig::new(self.addr(node), peers)
    }
    fn identity(&self, node: NodeId) -> NodeIdentity {
        self.ca.issue_node_cert(node).unwrap()
    }
    async fn start(&self, node: NodeId) -> Node {
        self.start_with(self.config(node), self.identity(node))
            .await
    }
    async fn start_with(&self, cfg: TransportConfig, identity: NodeIdentity) -> Node {
        start_node(cfg, identity, self.ca.cert()).await
    }
}

struct Node {
    t: Transport<Msg>,
    inbox: Arc<Inbox>,
}

async fn start_node(cfg: TransportConfig, identity: NodeIdentity, ca: CaCert) -> Node {
    let inbox = Inbox::new(identity.node);
    let t = Transport::start(cfg, identity, ca, FaultFilter::new(), inbox.clone())
        .await
        .unwrap();
    Node { t, inbox }
}

/// Polls `cond` until it holds; panics after `limit`. Returns the time taken.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

fn connected(a: &Node, b: NodeId) -> bool {
    a.t.peer_state(b).is_connected()
}

async fn wait_mesh(nodes: &[&Node]) {
    wait_for("full mesh", LONG, || {
        nodes
            .iter()
            .all(|a| nodes.iter().all(|b| connected(a, b.t.node())))
    })
    .await;
}

#[tokio::test]
async fn three_nodes_talk_in_every_direction() {
    let _serial = SERIAL.lock().await;
    let layout = Layout::new(3);
    let nodes = [
        layout.start(N1).await,
        layout.start(N2).await,
        layout.start(N3).await,
    ];
    wait_mesh(&nodes.iter().collect::<Vec<_>>()).await;

    for a in &nodes {
        for b in &nodes {
            let (from, to) = (a.t.node(), b.t.node());
            if from == to {
                continue;
            }
            let reply =
                a.t.request(to, Msg::Ping(from.0 as u64), LONG)
                    .await
                    .unwrap();
            assert_eq!(reply, Msg::Pong(from.0 as u64 * 10 + to.0 as u64));
            a.t.send(to, Msg::Note(format!("{from}->{to}"))).unwrap();
        }
    }
    for b in &nodes {
        let to = b.t.node();
        let mut want: Vec<_> = nodes
            .iter()
            .map(|a| a.t.node())
            .filter(|from| *from != to)
            .map(|from| (from, format!("{from}->{to}")))
            .collect();
        want.sort();
        wait_for("one-way notes", LONG, || {
            let mut got = b.inbox.notes();
            got.sort();
            got == want
        })
        .await;
    }

    // A dropped responder answers at once instead of leaving the caller waiting.
    let t0 = Instant::now();
    let err = nodes[0].t.request(N3, Msg::Ignore, LONG).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Remote(keel::transport::RemoteError::Dropped)
        ),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1));

    let status = nodes[0].t.peers();
    assert_eq!(status.len(), 2);
    assert!(status.iter().all(|p| p.connected && p.connections == 1));
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json[0]["node"], 2);
    assert!(matches!(
        nodes[0].t.request(NodeId(9), Msg::Ping(0), LONG).await,
        Err(TransportError::UnknownPeer(_))
    ));

    for n in &nodes {
        n.t.shutdown().await;
    }
    assert!(matches!(
        nodes[0].t.send(N2, Msg::Ping(0)),
        Err(TransportError::Shutdown)
    ));
}

/// Dials `to` as a bare QUIC client presenting `identity`.
async fn raw_connect(
    identity: &NodeIdentity,
    trust: &CaCert,
    to: NodeId,
    addr: SocketAddr,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let cfg = TransportConfig::new("127.0.0.1:0".parse().unwrap(), vec![]);
    let client = keel::transport::client_config(identity, trust, &cfg).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(client, addr, &keel::transport::tls::node_name(to))
        .unwrap();
    let conn = tokio::time::timeout(LONG, connecting).await.unwrap();
    (endpoint, conn)
}

/// The application close code the server ended `conn` with.
async fn close_code_of(conn: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(LONG, conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test]
async fn strangers_are_refused() {
    let _serial = SERIAL.lock().await;
    // N1 is configured but only impostors use its slot.
    let layout = Layout::new(3);
    let n2 = layout.start(N2).await;
    let n3 = layout.start(N3).await;
    wait_mesh(&[&n2, &n3]).await;

    // An N1 whose certificate comes from another CA (it trusts the real one,
    // so only the servers' client-certificate check can stop it).
    let foreign = ClusterCa::generate().unwrap();
    let impostor = start_node(
        layout.config(N1),
        foreign.issue_node_cert(N1).unwrap(),
        layout.ca.cert(),
    )
    .await;
    wait_for("both servers to refuse the impostor", LONG, || {
        n2.t.stats().refused >= 2 && n3.t.stats().refused >= 2
    })
    .await;
    let err = impostor
        .t
        .request(N2, Msg::Ping(1), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::PeerUnavailable(N2)), "{err}");
    assert!(!err.maybe_delivered());
    for honest in [&n2, &n3] {
        assert!(!connected(honest, N1));
        assert!(honest
            .t
            .peers()
            .iter()
            .all(|p| p.node != N1 || p.connections == 0));
        assert!(!honest.inbox.saw(N1));
    }
    impostor.t.shutdown().await;

    // A genuine certificate for a node id the cluster does not know.
    let refused_before = n2.t.stats().refused;
    let stranger = layout.identity(NodeId(9));
    let (_ep, conn) = raw_connect(&stranger, &layout.ca.cert(), N2, layout.addr(N2)).await;
    let conn = conn.expect("TLS itself accepts a CA-signed certificate");
    assert_eq!(close_code_of(&conn).await, Some(close_code::REFUSED as u64));
    assert!(n2.t.stats().refused > refused_before);
    assert!(!n2.inbox.saw(NodeId(9)));

    // The honest pair never noticed.
    assert_eq!(
        n2.t.request(N3, Msg::Ping(2), LONG).await.unwrap(),
        Msg::Pong(23)
    );
    assert!(n2
        .t
        .peers()
        .iter()
        .all(|p| p.node != N3 || p.connections == 1));
    n2.t.shutdown().await;
    n3.t.shutdown().await;
}

#[tokio::test]
async fn hostile_frames_close_only_their_connection() {
    let _serial = SERIAL.lock().await;
    let layout = Layout::new(3);
    let n2 = layout.start(N2).await;
    let n3 = layout.start(N3).await;
    wait_mesh(&[&n2, &n3]).await;
    let max = layout.config(N2).max_frame_len;
    let hello = frame::encode(
        &Envelope::<Msg>::Hello {
            node: N1,
            app: String::new(),
        },
        max,
    )
    .unwrap();

    let mut bad_version = hello.clone();
    bad_version[4] = 99;
    let mut oversized = hello.clone();
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    oversized.push(frame::PROTOCOL_VERSION);
    let mut garbage_after_hello = hello.clone();
    garbage_after_hello.extend_from_slice(&[0, 0, 0, 4, frame::PROTOCOL_VERSION, 0xc1, 0xc1, 0xc1]);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "garbage",
            b"\x00\x00\x00\x05\x01\xc1\xc1\xc1\xc1 and more junk".to_vec(),
        ),
        ("bad version", bad_version),
        ("oversized length", oversized),
        ("garbage after hello", garbage_after_hello),
    ];

    let identity = layout.identity(N1);
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let (_ep, conn) = raw_connect(&identity, &layout.ca.cert(), N2, layout.addr(N2)).await;
        let conn = conn.unwrap();
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(bytes).await.unwrap();
        assert_eq!(
            close_code_of(&conn).await,
            Some(close_code::PROTOCOL as u64),
            "{what}"
        );
        assert_eq!(n2.t.stats().protocol_errors, i as u64 + 1, "{what}");
        // Meanwhile N2 keeps serving its real peer over the untouched link.
        assert_eq!(
            n3.t.request(N2, Msg::Ping(i as u64), LONG).await.unwrap(),
            Msg::Pong(i as u64 * 10 + 2)
        );
    }
    assert!(n3
        .t
        .peers()
        .iter()
        .all(|p| p.node != N2 || p.connections == 1));
    n2.t.shutdown().await;
    n3.t.shutdown().await;
}

#[tokio::test]
async fn dead_peers_fail_fast_and_in_flight_requests_fail() {
    let _serial = SERIAL.lock().await;
    let layout = Layout::new(3);
    let n1 = layout.start(N1).await;
    let n2 = layout.start(N2).await;
    // N3 is configured but never started.
    wait_mesh(&[&n1, &n2]).await;

    let t0 = Instant::now();
    let err = n1.t.request(N3, Msg::Ping(1), LONG).await.unwrap_err();
    let fail_fast = t0.elapsed();
    assert!(matches!(err, TransportError::PeerUnavailable(N3)), "{err}");
    assert!(!err.maybe_delivered());
    assert!(fail_fast < Duration::from_millis(100), "{fail_fast:?}");
    assert!(matches!(
        n1.t.send(N3, Msg::Ping(1)),
        Err(TransportError::PeerUnavailable(N3))
    ));

    // A request in flight when its peer vanishes fails once the link dies,
    // long before its own timeout.
    let caller = {
        let t = n1.t.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            (t.request(N2, Msg::Hold, LONG).await, t0.elapsed())
        })
    };
    wait_for("N2 to hold the request", LONG, || n2.inbox.held() == 1).await;
    n2.t.fault().isolate(&[layout.addr(N1)]);
    let (result, took) = caller.await.unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, TransportError::ConnectionLost(N2)), "{err}");
    assert!(err.maybe_delivered());
    assert!(took < Duration::from_millis(2000), "{took:?}");
    eprintln!("in-flight request failed after {took:?} (timeout {LONG:?}); fail-fast to a down peer took {fail_fast:?}");

    let t0 = Instant::now();
    assert!(matches!(
        n1.t.request(N2, Msg::Ping(1), LONG).await,
        Err(TransportError::PeerUnavailable(N2))
    ));
    assert!(t0.elapsed() < Duration::from_millis(100));

    // A graceful shutdown fails in-flight requests at once.
    n2.t.fault().heal();
    wait_mesh(&[&n1, &n2]).await;
    let caller = {
        let t = n2.t.clone();
        tokio::spawn(async move { t.request(N1, Msg::Hold, LONG).await })
    };
    wait_for("N1 to hold the request", LONG, || n1.inbox.held() == 1).await;
    let t0 = Instant::now();
    n1.t.shutdown().await;
    let err = caller.await.unwrap().unwrap_err();
    assert!(matches!(err, TransportError::ConnectionLost(N1)), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    n2.t.shutdown().await;
}

#[tokio::test]
async fn flooding_a_peer_hits_queue_full_without_blocking() {
    let _serial = SERIAL.lock().await;
    let layout = Layout::new(2);
    let mut cfg = layout.config(N1);
    cfg.queue_capacity = 64;
    let n1 = layout.start_with(cfg, layout.identity(N1)).await;
    let n2 = layout.start(N2).await;
    wait_mesh(&[&n1, &n2]).await;

    // This test runs on a single-threaded runtime: the writer cannot drain
    // the queue while this loop runs, so it must fill up and refuse.
    let t0 = Instant::now();
    let mut accepted = 0;
    let mut first_error = None;
    for _ in 0..10_000 {
        match n1.t.send(N2, Msg::Blob(vec![7; 1024])) {
            Ok(()) => accepted += 1,
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "send blocked");
    let err = first_error.expect("queue never filled");
    assert!(matches!(err, TransportError::QueueFull(N2)), "{err}");
    assert!(!err.maybe_delivered());
    assert!((1..=64).contains(&accepted), "{accepted}");
    let err = n1.t.request(N2, Msg::Ping(1), LONG).await.unwrap_err();
    assert!(matches!(err, TransportError::QueueFull(N2)), "{err}");
    assert!(n1.t.peers()[0].queued > 0);

    // Everything accepted is delivered, and the queue accepts again.
    wait_for("accepted blobs to arrive", LONG, || {
        n2.inbox.blobs() == accepted
    })
    .await;
    wait_for("queue to drain", LONG, || n1.t.peers()[0].queued == 0).await;
    assert_eq!(
        n1.t.request(N2, Msg::Ping(1), LONG).await.unwrap(),
        Msg::Pong(12)
    );
    assert_eq!(n2.inbox.blobs(), accepted);
    n1.t.shutdown().await;
    n2.t.shutdown().await;
}

/// Watches several (observer, peer) pairs and records when each first
/// satisfies `want`; panics if any takes longer than `limit`.
async fn time_each(
    what: &str,
    pairs: &[(&Node, NodeId)],
    limit: Duration,
    want: impl Fn(PeerState) -> bool,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut done: Vec<Option<Duration>> = vec![None; pairs.len()];
    while done.iter().any(Option::is_none) {
        for (slot, (observer, peer)) in done.iter_mut().zip(pairs) {
            if slot.is_none() && want(observer.t.peer_state(*peer)) {
                *slot = Some(start.elapsed());
            }
        }
        assert!(
            start.elapsed() < limit * 2,
            "gave up waiting for {what}: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_is_detected_and_heals() {
    let _serial = SERIAL.lock().await;
    let layout = Layout::new(3);
    let (n1, n2, n3) = (
        layout.start(N1).await,
        layout.start(N2).await,
        layout.start(N3).await,
    );
    wait_mesh(&[&n1, &n2, &n3]).await;
    let n1_n2_since = n1.t.peer_state(N2).since();
    let pairs = [(&n1, N3), (&n2, N3), (&n3, N1), (&n3, N2)];
    let detect_limit = Duration::from_millis(1500);
    let heal_limit = Duration::from_secs(1);

    // A short partition, then one long enough for the dialers' backoff to
    // reach its maximum (the slowest case for noticing the heal).
    for hold in [Duration::ZERO, Duration::from_secs(2)] {
        let mut watch = n1.t.watch_peers();
        watch.borrow_and_update();
        n3.t.fault().isolate(&[layout.addr(N1), layout.addr(N2)]);
        let detected = time_each("suspicion", &pairs, detect_limit, |s| !s.is_connected()).await;
        // Subscribers were told, and see what peer_state reports.
        assert!(watch.has_changed().unwrap());
        assert!(!watch.borrow_and_update()[&N3].is_connected());
        eprintln!("isolation detected after {detected:?} (N1->N3, N2->N3, N3->N1, N3->N2)");
        assert!(detected.iter().all(|d| *d < detect_limit), "{detected:?}");
        let c = n3.t.fault().counters();
        assert!(c.dropped_inbound > 0 && c.dropped_outbound > 0, "{c:?}");

        // The partition lasts `hold`; nobody may reconnect through it.
        let until = Instant::now() + hold;
        while Instant::now() < until {
            assert!(
                pairs.iter().all(|(a, b)| !connected(a, *b)),
                "link came up while partitioned"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        n3.t.fault().heal();
        let healed = time_each("reconnection", &pairs, heal_limit, |s| s.is_connected()).await;
        eprintln!("healed after a {hold:?} hold: reconnected after {healed:?} (same order)");
        assert!(healed.iter().all(|d| *d < heal_limit), "{healed:?}");
        assert_eq!(
            n1.t.request(N3, Msg::Ping(1), LONG).await.unwrap(),
            Msg::Pong(13)
        );
        assert_eq!(
            n3.t.request(N2, Msg::Ping(3), LONG).await.unwrap(),
            Msg::Pong(32)
        );
    }
    // The healthy pair was never disturbed.
    assert_eq!(
        n1.t.peer_state(N2),
        PeerState::Connected { since: n1_n2_since }
    );
    for n in [&n1, &n2, &n3] {
        n.t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_are_reconnected_quickly() {
    let _serial = SERIAL.lock().await;
    let layout = Layout::new(3);
    let ids: Vec<NodeIdentity> = [N1, N2, N3]
        .into_iter()
        .map(|n| layout.identity(n))
        .collect();
    let n1 = layout.start_with(layout.config(N1), ids[0].clone()).await;
    let n2 = layout.start_with(layout.config(N2), ids[1].clone()).await;
    let n3 = layout.start_with(layout.config(N3), ids[2].clone()).await;
    wait_mesh(&[&n1, &n2, &n3]).await;
    let limit = Duration::from_secs(1);

    // The dialer restarts cleanly: its peers see the close, then its redial.
    n1.t.shutdown().await;
    wait_for("peers to see N1's close", LONG, || {
        !connected(&n2, N1) && !connected(&n3, N1)
    })
    .await;
    let n1 = layout.start_with(layout.config(N1), ids[0].clone()).await;
    let back = time_each(
        "N1 back",
        &[(&n2, N1), (&n3, N1), (&n1, N2), (&n1, N3)],
        limit,
        |s| s.is_connected(),
    )
    .await;
    eprintln!("restarted dialer N1 reconnected after {back:?} (from restart)");
    assert!(back.iter().all(|d| *d < limit), "{back:?}");

    // The acceptor "crashes": its close never reaches the peers, which still
    // hold the old connection. The new endpoint on the same port answers
    // their next packet with a stateless reset under the same key, so they
    // drop the dead connection at once instead of after the idle timeout.
    let old_since = n1.t.peer_state(N3).since();
    n3.t.fault().isolate(&[layout.addr(N1), layout.addr(N2)]);
    n3.t.shutdown().await;
    assert!(
        connected(&n1, N3) && connected(&n2, N3),
        "peers saw the crash by other means"
    );
    let restarted = Instant::now();
    let n3 = layout.start_with(layout.config(N3), ids[2].clone()).await;
    let new_conn = |s: PeerState| matches!(s, PeerState::Connected { since } if since > restarted);
    let back = time_each("N3 back", &[(&n1, N3), (&n2, N3)], limit, new_conn).await;
    eprintln!("crashed acceptor N3 reconnected after {back:?} (from restart)");
    assert!(back.iter().all(|d| *d < limit), "{back:?}");
    assert!(n1.t.peer_state(N3).since() > old_since);
    for peer in [&n1, &n2] {
        let status = peer.t.peers().into_iter().find(|p| p.node == N3).unwrap();
        assert_eq!(
            status.last_error.as_deref(),
            Some("reset by peer"),
            "{status:?}"
        );
    }
    assert_eq!(
        n2.t.request(N3, Msg::Ping(2), LONG).await.unwrap(),
        Msg::Pong(23)
    );
    for n in [&n1, &n2, &n3] {
        n.t.shutdown().await;
    }
}
