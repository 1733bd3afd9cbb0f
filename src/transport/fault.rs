//! Fault injection below QUIC: a UDP socket wrapper that drops (all, or a
//! random share), or delays datagrams to and from chosen peer addresses,
//! each direction on its own (a one-way cut, a lossy link).
//!
//! Partitions made here are real packet loss as quinn sees it, so tests
//! exercise the same timeouts and retransmissions a broken network would.
//! Rules are per remote socket address and can change at any moment.
//!
//! GSO/GRO: one outgoing transmit may carry several segments to one
//! destination and one received meta several datagrams from one source. A
//! rule therefore applies to whole transmits/metas; counters count datagrams.

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What happens to datagrams exchanged with one remote address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub drop_outbound: bool,
    pub drop_inbound: bool,
    /// Hold datagrams to the address this long before sending.
    #[serde(default, with = "opt_millis")]
    pub delay_outbound: Option<Duration>,
    /// Hold datagrams from the address this long before quinn sees them.
    #[serde(default, with = "opt_millis")]
    pub delay_inbound: Option<Duration>,
    /// Percent of datagrams to the address dropped at random (a lossy
    /// link; 0: none, 100: all).
    #[serde(default)]
    pub loss_outbound_pct: u8,
    /// Percent of datagrams from the address dropped at random.
    #[serde(default)]
    pub loss_inbound_pct: u8,
}

impl FaultRule {
    fn is_noop(&self) -> bool {
        *self == FaultRule::default()
    }

    fn drops_outbound(&self) -> bool {
        self.drop_outbound || lost(self.loss_outbound_pct)
    }

    fn drops_inbound(&self) -> bool {
        self.drop_inbound || lost(self.loss_inbound_pct)
    }
}

/// Whether a datagram (or a GSO/GRO batch of them) falls to `pct` percent
/// of random loss.
fn lost(pct: u8) -> bool {
    pct > 0 && (pct >= 100 || rand::random::<u32>() % 100 < u32::from(pct))
}

/// A rule and the address it applies to, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRule {
    pub addr: SocketAddr,
    #[serde(flatten)]
    pub rule: FaultRule,
}

/// Datagrams the filter dropped or delayed since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    pub dropped_outbound: u64,
    pub dropped_inbound: u64,
    pub delayed_outbound: u64,
    pub delayed_inbound: u64,
    /// Delayed datagrams discarded because the delay queue was full.
    pub overflowed: u64,
}

/// Run-time controlled fault rules, shared by a node's socket and whoever
/// drives the chaos (tests, an opt-in HTTP endpoint).
#[derive(Clone, Default)]
pub struct FaultFilter {
    inner: Arc<FilterInner>,
}

#[derive(Default)]
struct FilterInner {
    /// Fast path: no lock taken while no rule is set.
    active: AtomicBool,
    rules: RwLock<HashMap<SocketAddr, FaultRule>>,
    dropped_outbound: AtomicU64,
    dropped_inbound: AtomicU64,
    delayed_outbound: AtomicU64,
    delayed_inbound: AtomicU64,
    overflowed: AtomicU64,
}

impl fmt::Debug for FaultFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFilter")
            .field("rules", &self.rules())
            .field("counters", &self.counters())
            .finish()
    }
}

impl FaultFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the rule for `addr` (a no-op rule removes it).
    pub fn set_rule(&self, addr: SocketAddr, rule: FaultRule) {
        self.update(|rules| {
            if rule.is_noop() {
                rules.remove(&normalize(addr));
            } else {
                rules.insert(normalize(addr), rule);
            }
        });
    }

    /// Edits the rule for `addr` in place.
    pub fn modify(&self, addr: SocketAddr, f: impl FnOnce(&mut FaultRule)) {
        let addr = normalize(addr);
        self.update(|rules| {
            let mut rule = rules.get(&addr).copied().unwrap_or_default();
            f(&mut rule);
            if rule.is_noop() {
                rules.remove(&addr);
            } else {
                rules.insert(addr, rule);
            }
        });
    }

    /// Drops all traffic to and from each address (both directions).
    pub fn isolate(&self, addrs: &[SocketAddr]) {
        for &addr in addrs {
            self.modify(addr, |r| {
                r.drop_inbound = true;
                r.drop_outbound = true;
            });
        }
    }

    /// Removes every rule.
    pub fn heal(&self) {
        self.update(|rules| rules.clear());
    }

    /// The current rules, sorted by address.
    pub fn rules(&self) -> Vec<AddrRule> {
        let mut v: Vec<AddrRule> = self
            .read_rules()
            .iter()
            .map(|(addr, rule)| AddrRule {
                addr: *addr,
                rule: *rule,
            })
            .collect();
        v.sort_by_key(|r| r.addr);
        v
    }

    pub fn counters(&self) -> FaultCounters {
        let i = &self.inner;
        FaultCounters {
            dropped_outbound: i.dropped_outbound.load(Ordering::Relaxed),
            dropped_inbound: i.dropped_inbound.load(Ordering::Relaxed),
            delayed_outbound: i.delayed_outbound.load(Ordering::Relaxed),
            delayed_inbound: i.delayed_inbound.load(Ordering::Relaxed),
            overflowed: i.overflowed.load(Ordering::Relaxed),
        }
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<SocketAddr, FaultRule>)) {
        let mut rules = self.inner.rules.write().unwrap_or_else(|p| p.into_inner());
        f(&mut rules);
        self.inner
            .active
            .store(!rules.is_empty(), Ordering::Release);
    }

    fn read_rules(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SocketAddr, FaultRule>> {
        self.inner.rules.read().unwrap_or_else(|p| p.into_inner())
    }

    fn rule_for(&self, addr: SocketAddr) -> Option<FaultRule> {
        if !self.inner.active.load(Ordering::Acquire) {
            return None;
        }
        self.read_rules().get(&normalize(addr)).copied()
    }

    fn count(&self, counter: &AtomicU64, datagrams: usize) {
        counter.fetch_add(datagrams as u64, Ordering::Relaxed);
    }
}

/// Rules are keyed by plain IPv4 addresses even on dual-stack sockets.
fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn segments(len: usize, stride: usize) -> usize {
    if stride == 0 {
        1
    } else {
        len.div_ceil(stride).max(1)
    }
}

/// Most datagrams held back at once in each direction; beyond it, delayed
/// datagrams are discarded (and counted), so a long delay cannot grow memory
/// without bound.
const DELAY_QUEUE_CAP: usize = 16 * 1024;

/// Most datagrams dropped or delayed in one `poll_recv` before yielding.
const RECV_FILTER_BUDGET: usize = 256;

/// quinn's socket wrapped in a [`FaultFilter`].
pub struct FaultSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    filter: FaultFilter,
    delay_out: mpsc::Sender<Held>,
    delay_in: Mutex<InboundDelay>,
}

impl fmt::Debug for FaultSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// One datagram (or GSO batch, outbound) held back by a delay rule.
struct Held {
    due: Instant,
    seq: u64,
    addr: SocketAddr,
    data: Vec<u8>,
    /// Outbound only: GSO segment size.
    segment_size: Option<usize>,
    ecn: Option<quinn::udp::EcnCodepoint>,
    /// Inbound: destination IP of the datagram; outbound: source IP.
    ip: Option<IpAddr>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct InboundDelay {
    queue: BinaryHeap<Reverse<Held>>,
    seq: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FaultSocket {
    /// Wraps `inner`; must be called inside a tokio runtime (it spawns the
    /// outbound delay queue, which ends when the socket is dropped).
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, filter: FaultFilter) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(DELAY_QUEUE_CAP);
        tokio::spawn(run_outbound_delay(inner.clone(), rx, filter.clone()));
        Arc::new(FaultSocket {
            inner,
            filter,
            delay_out: tx,
            delay_in: Mutex::new(InboundDelay::default()),
        })
    }

    /// Moves due inbound datagrams into `bufs`, or arms the timer for the
    /// next one. Returns how many were delivered.
    fn take_due(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut delay = self.delay_in.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        // Bounded: each pass either delivers, discards, or returns.
        for _ in 0..=DELAY_QUEUE_CAP {
            let now = Instant::now();
            let Some(head_due) = delay.queue.peek().map(|Reverse(h)| h.due) else {
                delay.timer = None;
                return n;
            };
            if head_due > now {
                if n > 0 {
                    return n;
                }
                let due = tokio::time::Instant::from_std(head_due);
                let timer = delay
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                timer.as_mut().reset(due);
                if timer.as_mut().poll(cx).is_pending() {
                    return 0;
                }
                continue; // Became due while arming: deliver it.
            }
            if n == bufs.len().min(meta.len()) {
                return n;
            }
            let Some(Reverse(held)) = delay.queue.pop() else {
                return n;
            };
            if held.data.len() > bufs[n].len() {
                self.filter.count(&self.filter.inner.overflowed, 1);
                continue;
            }
            bufs[n][..held.data.len()].copy_from_slice(&held.data);
            meta[n] = RecvMeta {
                addr: held.addr,
                len: held.data.len(),
                stride: held.data.len(),
                ecn: held.ecn,
                dst_ip: held.ip,
            };
            n += 1;
        }
        n
    }

    /// Applies inbound rules to `n` freshly received metas, compacting the
    /// survivors to the front. Returns how many survive.
    fn filter_received(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        n: usize,
    ) -> usize {
        let mut kept = 0;
        for i in 0..n {
            let m = meta[i];
            let rule = self.filter.rule_for(m.addr);
            let datagrams = segments(m.len, m.stride);
            match rule {
                Some(r) if r.drops_inbound() => {
                    self.filter
                        .count(&self.filter.inner.dropped_inbound, datagrams);
                    continue;
                }
                Some(FaultRule {
                    delay_inbound: Some(d),
                    ..
                }) => {
                    self.hold_inbound(&bufs[i][..m.len], m, d);
                    continue;
                }
                _ => {}
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                if front[kept].len() < m.len {
                    self.filter.count(&self.filter.inner.overflowed, datagrams);
                    continue;
                }
                front[kept][..m.len].copy_from_slice(&back[0][..m.len]);
                meta[kept] = m;
            }
            kept += 1;
        }
        kept
    }

    /// Queues the datagrams of one meta, split at GRO boundaries so each
    /// fits any receive buffer on the way out.
    fn hold_inbound(&self, data: &[u8], m: RecvMeta, delay: Duration) {
        let due = Instant::now() + delay;
        let stride = if m.stride == 0 {
            data.len().max(1)
        } else {
            m.stride
        };
        let mut q = self.delay_in.lock().unwrap_or_else(|p| p.into_inner());
        for chunk in data.chunks(stride) {
            if q.queue.len() >= DELAY_QUEUE_CAP {
                self.filter.count(&self.filter.inner.overflowed, 1);
                continue;
            }
            q.seq += 1;
            let held = Held {
                due,
                seq: q.seq,
                addr: m.addr,
                data: chunk.to_vec(),
                segment_size: None,
                ecn: m.ecn,
                ip: m.dst_ip,
            };
            q.queue.push(Reverse(held));
            self.filter.count(&self.filter.inner.delayed_inbound, 1);
        }
    }
}

impl AsyncUdpSocket for FaultSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(rule) = self.filter.rule_for(transmit.destination) else {
            return self.inner.try_send(transmit);
        };
        let datagrams = segments(transmit.contents.len(), transmit.segment_size.unwrap_or(0));
        if rule.drops_outbound() {
            // Pretend it left: to quinn this is loss on the wire.
            self.filter
                .count(&self.filter.inner.dropped_outbound, datagrams);
            return Ok(());
        }
        if let Some(delay) = rule.delay_outbound {
            let held = Held {
                due: Instant::now() + delay,
                seq: 0,
                addr: transmit.destination,
                data: transmit.contents.to_vec(),
                segment_size: transmit.segment_size,
                ecn: transmit.ecn,
                ip: transmit.src_ip,
            };
            match self.delay_out.try_send(held) {
                Ok(()) => self
                    .filter
                    .count(&self.filter.inner.delayed_outbound, datagrams),
                Err(_) => self.filter.count(&self.filter.inner.overflowed, datagrams),
            }
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut filtered = 0;
        loop {
            // First, so the delay timer is armed for anything held below
            // before this returns Pending.
            let due = self.take_due(cx, bufs, meta);
            if due > 0 {
                return Poll::Ready(Ok(due));
            }
            if filtered >= RECV_FILTER_BUDGET {
                // Everything so far was dropped or held: yield, but come back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let kept = self.filter_received(bufs, meta, n);
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            filtered += n.max(1);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends delayed outbound datagrams when due. Ends when the socket is dropped.
async fn run_outbound_delay(
    socket: Arc<dyn AsyncUdpSocket>,
    mut rx: mpsc::Receiver<Held>,
    filter: FaultFilter,
) {
    let mut queue: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut poller = socket.clone().create_io_poller();
    loop {
        let next_due = queue.peek().map(|Reverse(h)| h.due);
        tokio::select! {
            held = rx.recv() => match held {
                Some(_) if queue.len() >= DELAY_QUEUE_CAP => {
                    filter.count(&filter.inner.overflowed, 1);
                }
                Some(mut held) => {
                    seq += 1;
                    held.seq = seq;
                    queue.push(Reverse(held));
                }
                None => return,
            },
            _ = sleep_until_opt(next_due) => {
                let now = Instant::now();
                while queue.peek().is_some_and(|Reverse(h)| h.due <= now) {
                    let Some(Reverse(held)) = queue.pop() else { break };
                    send_held(&*socket, &mut poller, &held, &filter).await;
                }
            }
        }
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// Sends one held transmit, waiting for writability a bounded number of times.
async fn send_held(
    socket: &dyn AsyncUdpSocket,
    poller: &mut Pin<Box<dyn UdpPoller>>,
    held: &Held,
    filter: &FaultFilter,
) {
    let transmit = Transmit {
        destination: held.addr,
        ecn: held.ecn,
        contents: &held.data,
        segment_size: held.segment_size,
        src_ip: held.ip,
    };
    for _ in 0..3 {
        match socket.try_send(&transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let writable = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx));
                if tokio::time::timeout(Duration::from_millis(100), writable)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            _ => return, // Sent, or a hard error: UDP is lossy either way.
        }
    }
    let datagrams = segments(held.data.len(), held.segment_size.unwrap_or(0));
    filter.count(&filter.inner.overflowed, datagrams);
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis().min(u64::MAX as u128) as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::Runtime;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn rules_merge_normalize_and_heal() {
        let f = FaultFilter::new();
        f.isolate(&[addr(1)]);
        f.modify(addr(2), |r| {
            r.delay_inbound = Some(Duration::from_millis(5))
        });
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert!(f
            .rule_for(mapped)
            .is_some_and(|r| r.drop_inbound && r.drop_outbound));
        assert_eq!(f.rules().len(), 2);
        let json = serde_json::to_value(f.rules()).unwrap();
        assert_eq!(json[1]["delay_inbound"], 5);
        f.set_rule(addr(2), FaultRule::default());
        assert_eq!(f.rules().len(), 1);
        f.heal();
        assert!(f.rules().is_empty());
        assert!(f.rule_for(addr(1)).is_none());
    }

    /// A pair of plain UDP sockets, one wrapped, on loopback.
    fn pair(filter: &FaultFilter) -> (Arc<FaultSocket>, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let inner = quinn::TokioRuntime.wrap_udp_socket(a).unwrap();
        (FaultSocket::new(inner, filter.clone()), b)
    }

    /// One datagram through the filter; the kernel's answer is returned.
    fn try_send_to(s: &FaultSocket, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        s.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: None,
        })
    }

    fn send(s: &FaultSocket, to: SocketAddr, data: &[u8]) {
        try_send_to(s, to, data).unwrap();
    }

    async fn recv(s: &FaultSocket) -> (SocketAddr, Vec<u8>) {
        let mut storage = vec![0u8; 2048];
        let mut bufs = [IoSliceMut::new(&mut storage)];
        let mut meta = [RecvMeta::default()];
        let n = std::future::poll_fn(|cx| s.poll_recv(cx, &mut bufs, &mut meta))
            .await
            .unwrap();
        assert_eq!(n, 1);
        (meta[0].addr, bufs[0][..meta[0].len].to_vec())
    }

    #[tokio::test]
    async fn drops_and_counts_both_directions() {
        let f = FaultFilter::new();
        let (s, peer) = pair(&f);
        let peer_addr = peer.local_addr().unwrap();
        let s_addr = s.local_addr().unwrap();

        f.isolate(&[peer_addr]);
        send(&s, peer_addr, b"lost");
        // A receiver runs while isolated: it must swallow "lost too" and
        // return only what arrives after the heal.
        let receiver = tokio::spawn({
            let s = s.clone();
            async move { recv(&s).await }
        });
        peer.send_to(b"lost too", s_addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while f.counters().dropped_inbound == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(f.counters().dropped_inbound, 1);

        f.heal();
        send(&s, peer_addr, b"out");
        peer.send_to(b"in", s_addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"out");
        let got = tokio::time::timeout(Duration::from_secs(2), receiver)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (peer_addr, b"in".to_vec()));
        let c = f.counters();
        assert_eq!((c.dropped_outbound, c.dropped_inbound), (1, 1));
    }

    #[tokio::test]
    async fn random_loss_drops_about_its_share_and_one_way_cuts_one_direction() {
        let f = FaultFilter::new();
        let (s, peer) = pair(&f);
        let peer_addr = peer.local_addr().unwrap();
        let s_addr = s.local_addr().unwrap();
        f.set_rule(
            peer_addr,
            FaultRule {
                loss_outbound_pct: 30,
                ..Default::default()
            },
        );
        for _ in 0..1000 {
            // What the filter let through may find the kernel's buffers
            // full (nobody reads them): only the filter's count matters.
            let _ = try_send_to(&s, peer_addr, b"x");
        }
        // Binomial(1000, 0.3): mean 300, sd 14.5; these bounds are 7 sd out.
        let dropped = f.counters().dropped_outbound;
        assert!((200..=400).contains(&dropped), "{dropped} of 1000 dropped");
        // Drain what did arrive, so the one-way check below starts clean.
        peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        while peer.recv_from(&mut buf).is_ok() {}
        peer.set_nonblocking(false).unwrap();

        // Outbound cut entirely, inbound untouched: a one-way cut.
        f.set_rule(
            peer_addr,
            FaultRule {
                drop_outbound: true,
                ..Default::default()
            },
        );
        peer.send_to(b"in", s_addr).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), recv(&s))
            .await
            .unwrap();
        assert_eq!(got, (peer_addr, b"in".to_vec()));
        let before = f.counters().dropped_outbound;
        send(&s, peer_addr, b"out");
        assert_eq!(f.counters().dropped_outbound, before + 1);
        assert_eq!(f.counters().dropped_inbound, 0);
    }

    #[tokio::test]
    async fn delays_hold_datagrams_without_blocking() {
        let f = FaultFilter::new();
        let (s, peer) = pair(&f);
        let peer_addr = peer.local_addr().unwrap();
        let s_addr = s.local_addr().unwrap();
        let delay = Duration::from_millis(80);
        f.set_rule(
            peer_addr,
            FaultRule {
                delay_outbound: Some(delay),
                delay_inbound: Some(delay),
                ..Default::default()
            },
        );

        let t0 = Instant::now();
        send(&s, peer_addr, b"late out");
        assert!(t0.elapsed() < delay, "try_send blocked");
        let received = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 64];
            peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), Instant::now(), peer)
        })
        .await
        .unwrap();
        assert_eq!(received.0, b"late out");
        assert!(received.1 - t0 >= delay);
        assert!(
            received.1 - t0 < Duration::from_secs(1),
            "outbound delay overshot"
        );

        let peer = received.2;
        let t1 = Instant::now();
        peer.send_to(b"late in", s_addr).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), recv(&s))
            .await
            .unwrap();
        assert_eq!(got, (peer_addr, b"late in".to_vec()));
        assert!(t1.elapsed() >= delay);
        assert!(
            t1.elapsed() < Duration::from_secs(1),
            "inbound delay overshot"
        );
        let c = f.counters();
        assert_eq!((c.delayed_outbound, c.delayed_inbound), (1, 1));
    }

    #[test]
    fn gro_metas_are_filtered_and_compacted() {
        let f = FaultFilter::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (s, _peer) = pair(&f);
        f.isolate(&[addr(9)]);
        // Three metas: a GRO batch of 3 from a dropped source, then two kept.
        let mut storage = vec![0u8; 3 * 100];
        let (a, rest) = storage.split_at_mut(100);
        let (b, c) = rest.split_at_mut(100);
        a[..30].fill(9);
        b[..5].copy_from_slice(b"hello");
        c[..5].copy_from_slice(b"world");
        let mut bufs = [IoSliceMut::new(a), IoSliceMut::new(b), IoSliceMut::new(c)];
        let mut meta = [
            RecvMeta {
                addr: addr(9),
                len: 30,
                stride: 10,
                ..Default::default()
            },
            RecvMeta {
                addr: addr(7),
                len: 5,
                stride: 5,
                ..Default::default()
            },
            RecvMeta {
                addr: addr(8),
                len: 5,
                stride: 5,
                ..Default::default()
            },
        ];
        let kept = s.filter_received(&mut bufs, &mut meta, 3);
        assert_eq!(kept, 2);
        assert_eq!((meta[0].addr, &bufs[0][..5]), (addr(7), &b"hello"[..]));
        assert_eq!((meta[1].addr, &bufs[1][..5]), (addr(8), &b"world"[..]));
        assert_eq!(f.counters().dropped_inbound, 3);
    }
}
