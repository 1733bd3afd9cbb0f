//! Helpers shared by the rig tests.
#![allow(dead_code)]

use keel::actors::partition_processor::{GetProcessorStatus, ProcessorStatus};
use keel::log::{AppendError, Chain, ReadError, Record};
use keel::rig::Rig;
use keel::types::{Epoch, LogId, Lsn, NodeId, PartitionId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

pub const LOG: LogId = LogId(0);

/// What a test appended: payloads acknowledged (with their LSN) and payloads
/// whose outcome is unknown.
#[derive(Default, Debug)]
pub struct Appended {
    pub acked: BTreeMap<Lsn, Vec<u8>>,
    pub unknown: HashSet<Vec<u8>>,
    pub refused: HashSet<Vec<u8>>,
}

impl Appended {
    pub fn attempted(&self, payload: &[u8]) -> bool {
        self.acked.values().any(|p| p == payload)
            || self.unknown.contains(payload)
            || self.refused.contains(payload)
    }
}

/// Appends one record from `node`; records the outcome.
pub fn append_one(
    rig: &Rig,
    node: u32,
    log: LogId,
    payload: Vec<u8>,
    timeout: Duration,
    out: &mut Appended,
) -> bool {
    let logs = rig.node(node).logs.clone();
    let result = rig.block_on(logs.append(log, vec![Record(payload.clone())], timeout));
    match result {
        Ok(lsn) => {
            assert!(
                out.acked.insert(lsn, payload).is_none(),
                "LSN {lsn} acknowledged twice"
            );
            true
        }
        Err(AppendError::Indeterminate(_)) => {
            out.unknown.insert(payload);
            false
        }
        Err(AppendError::Unavailable(_)) => {
            out.refused.insert(payload);
            false
        }
        Err(e) => panic!("unexpected append error: {e}"),
    }
}

/// Appends fresh records (`tag-0`, `tag-1`, ...) from `node` until one is
/// acknowledged; returns how many attempts it took. Outcomes of the others
/// are recorded (they may or may not be in the log).
pub fn append_until_acked(
    rig: &Rig,
    node: u32,
    log: LogId,
    tag: &str,
    within: Duration,
    out: &mut Appended,
) -> usize {
    let end = Instant::now() + within;
    let mut i = 0;
    loop {
        assert!(
            Instant::now() < end,
            "no append from N{node} acknowledged within {within:?}"
        );
        i += 1;
        let left = end.saturating_duration_since(Instant::now());
        if append_one(rig, node, log, format!("{tag}-{i}").into_bytes(), left, out) {
            return i;
        }
    }
}

/// Reads `log` on `node` from LSN 1 up to at least `upto`, bounded by `deadline`.
///
/// Each read waits at most 200 ms. A node that has just been healed or
/// restarted may not reach a majority for the chain yet: a read answered
/// `Unavailable` is "not yet", like one that returned nothing, until the
/// deadline; any other error fails at once.
pub fn read_upto(
    rig: &Rig,
    node: u32,
    log: LogId,
    upto: Lsn,
    deadline: Duration,
) -> Vec<(Lsn, Vec<u8>)> {
    let logs = rig.node(node).logs.clone();
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut next = Lsn(1);
    let mut last_error = None;
    while next <= upto {
        assert!(
            Instant::now() < end,
            "N{node} could not read {log} up to {upto} within {deadline:?} (at {next}; last error: {last_error:?})"
        );
        let batch = match rig.block_on(logs.read(log, next, 1000, Duration::from_millis(200))) {
            Ok(batch) => batch,
            Err(e @ ReadError::Unavailable(..)) => {
                last_error = Some(e);
                continue;
            }
            Err(e) => panic!("N{node} reading {log} at {next}: {e}"),
        };
        for (lsn, rec) in batch {
            assert_eq!(lsn, next, "records are read in LSN order without gaps");
            out.push((lsn, rec.0));
            next = lsn.next();
        }
    }
    out
}

/// The property every log test ends with: each acknowledged record is read
/// back exactly once at its LSN, in order; nothing appears that was never
/// appended; no payload appears twice.
pub fn assert_log_matches(
    read: &[(Lsn, Vec<u8>)],
    appended: &Appended,
    is_test_record: impl Fn(&[u8]) -> bool,
) {
    let by_lsn: HashMap<Lsn, &Vec<u8>> = read.iter().map(|(l, p)| (*l, p)).collect();
    for (lsn, payload) in &appended.acked {
        assert_eq!(
            by_lsn.get(lsn).map(|p| p.as_slice()),
            Some(payload.as_slice()),
            "acknowledged record at {lsn} lost or changed"
        );
    }
    let mut seen = HashSet::new();
    for (lsn, payload) in read.iter().filter(|(_, p)| is_test_record(p)) {
        assert!(
            appended.attempted(payload),
            "record at {lsn} was never appended: {:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(
            seen.insert(payload.clone()),
            "record {:?} appears twice (again at {lsn})",
            String::from_utf8_lossy(payload)
        );
    }
}

pub fn chain(rig: &Rig, node: u32, log: LogId) -> Chain {
    let logs = rig.node(node).logs.clone();
    rig.block_on(logs.refresh_chain(log, Duration::from_secs(5)))
        .expect("chain")
}

pub fn sequencer_of(rig: &Rig, node: u32, log: LogId) -> NodeId {
    chain(rig, node, log).tail().sequencer
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn trace() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// An HTTP response as the tests see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

/// `POST {base}/{path}` with a raw body; transport failures come back as status 0.
pub fn post_raw(
    base: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Reply {
    let mut req = ureq::post(&format!("{base}/{path}")).timeout(timeout);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = req.send_string(body);
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            return Reply {
                status: 0,
                body: serde_json::Value::String(e.to_string()),
            }
        }
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Reply { status, body }
}

pub fn post(base: &str, path: &str, body: serde_json::Value) -> Reply {
    post_raw(base, path, &body.to_string(), &[], Duration::from_secs(8))
}

/// Waits until every partition has a node that leads it (and serves).
pub fn wait_for_leaders(rig: &Rig, within: Duration) {
    rig.wait_for("every partition has a serving leader", within, |r| {
        let partitions = r.config(1).partitions;
        (0..partitions).all(|p| {
            r.ids()
                .iter()
                .any(|n| r.is_running(n.0) && leader_mode(r, n.0, p) == Some("Leader".to_string()))
        })
    })
    .unwrap();
}

/// The mode (`Leader`, `Follower`, ...) of partition `p`'s processor on `node`.
pub fn leader_mode(rig: &Rig, node: u32, p: u32) -> Option<String> {
    let slot = rig.node(node).local.processors.get(p as usize)?.clone();
    let status = rig.block_on(async move {
        let addr = slot.addr()?;
        tokio::time::timeout(
            Duration::from_millis(500),
            addr.send(keel::actors::partition_processor::GetProcessorStatus),
        )
        .await
        .ok()?
        .ok()
    })?;
    Some(format!("{:?}", status.mode))
}

/// Partition `p`'s leadership as `node`'s elector knows it.
pub fn leadership(
    rig: &Rig,
    node: u32,
    p: u32,
) -> Option<keel::actors::leader_elector::Leadership> {
    let slot = rig.node(node).local.electors.get(p as usize)?.clone();
    rig.block_on(async move {
        let addr = slot.addr()?;
        tokio::time::timeout(
            Duration::from_millis(500),
            addr.send(keel::actors::leader_elector::GetElectorStatus),
        )
        .await
        .ok()?
        .ok()?
        .leader
    })
}

/// Records a Jepsen-style history from many client threads.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: std::sync::Arc<std::sync::Mutex<Vec<keel::harness::history::Op>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Default::default(),
        }
    }
}

impl Recorder {
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(
        &self,
        process: u64,
        kind: keel::harness::history::OpType,
        f: keel::harness::history::F,
        key: &str,
        value: serde_json::Value,
        node: u32,
    ) {
        let op = keel::harness::history::Op {
            process,
            kind,
            f,
            key: key.to_string(),
            value,
            node: NodeId(node),
            time_ns: self.now_ns(),
            error: None,
        };
        self.ops.lock().unwrap().push(op);
    }

    pub fn history(&self) -> Vec<keel::harness::history::Op> {
        let mut ops = self.ops.lock().unwrap().clone();
        ops.sort_by_key(|o| o.time_ns);
        ops
    }

    /// Waits (up to `within`) until `n` successful calls match `which`:
    /// how a test lets history accumulate without sleeping for it.
    pub fn wait_for_oks(
        &self,
        what: &str,
        n: usize,
        within: Duration,
        which: impl Fn(&keel::harness::history::Call) -> bool,
    ) {
        use keel::harness::history::Outcome;
        let deadline = Instant::now() + within;
        loop {
            let calls = keel::harness::history::pair(&self.history()).unwrap();
            let oks = calls
                .iter()
                .filter(|c| c.outcome == Outcome::Ok && which(c))
                .count();
            if oks >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {oks} of {n} successful calls within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Maps an HTTP reply to a history completion type: 200 ok; 412 and 503
/// fail (certainly not applied); everything else info (unknown).
pub fn completion(reply: &Reply) -> keel::harness::history::OpType {
    use keel::harness::history::OpType;
    match reply.status {
        200 => OpType::Ok,
        412 | 503 => OpType::Fail,
        400 | 404 | 405 | 413 => panic!("the workload sent a bad request: {reply:?}"),
        _ => OpType::Info,
    }
}

/// Partition 0's processor status on `node`.
pub fn processor_status(rig: &Rig, node: u32) -> Option<ProcessorStatus> {
    status_of(rig, node, 0)
}

/// Partition `p`'s processor status on `node`.
pub fn status_of(rig: &Rig, node: u32, p: u32) -> Option<ProcessorStatus> {
    let slot = rig.node(node).local.processors.get(p as usize)?.clone();
    rig.block_on(async move {
        let addr = slot.addr()?;
        tokio::time::timeout(Duration::from_millis(500), addr.send(GetProcessorStatus))
            .await
            .ok()?
            .ok()
    })
}

/// `n` acknowledged additions to counters `c0..c9`, through `via`.
pub fn add_counters(rig: &Rig, via: u32, from: u64, n: u64) {
    for i in from..from + n {
        let reply = post(
            &rig.http(via),
            &format!("Counter/c{}/add", i % 10),
            1.into(),
        );
        assert_eq!(reply.status, 200, "add {i}: {:?}", reply.body);
    }
}

/// The highest trim point (as an LSN) of `node`'s log-server over the log's
/// segments.
pub fn trimmed_below(rig: &Rig, node: u32) -> Lsn {
    let chain = chain(rig, node, LOG);
    let storage = &rig.node(node).storage;
    chain
        .segments
        .iter()
        .filter_map(|s| {
            let t = storage.log.loglet_state(s.loglet).ok()?.trim_point;
            (t > 0).then(|| s.lsn_of(t)).flatten()
        })
        .max()
        .unwrap_or_default()
}

/// `n` more additions through `leader` (from `from` on); then every replica
/// of partition 0 applies them and the three hold byte-equal state.
pub fn load_then_replicas_equal(rig: &Rig, leader: u32, from: u64, n: u64) {
    add_counters(rig, leader, from, n);
    let target = processor_status(rig, leader).unwrap().applied_lsn;
    rig.wait_for(
        "every replica applied the last load",
        Duration::from_secs(15),
        |r| (1..=3).all(|n| processor_status(r, n).is_some_and(|s| s.applied_lsn >= target)),
    )
    .unwrap();
    let dumps: Vec<_> = (1..=3)
        .map(|n| {
            let store = rig.node(n).storage.partition(PartitionId(0)).unwrap();
            store.entries().unwrap()
        })
        .collect();
    assert_eq!(dumps[0], dumps[1]);
    assert_eq!(dumps[1], dumps[2]);
}

/// `p` → (leader, epoch) as the majority of running nodes' electors see it.
pub fn leaders(rig: &Rig) -> BTreeMap<u32, (NodeId, Epoch)> {
    let mut out = BTreeMap::new();
    for p in 0..rig.config(1).partitions {
        for n in rig.ids() {
            if let Some(l) = leadership(rig, n.0, p) {
                let e = out.entry(p).or_insert((l.node, l.epoch));
                if l.epoch > e.1 {
                    *e = (l.node, l.epoch);
                }
            }
        }
    }
    out
}

/// Watches every partition's epoch on every node for `window`; returns the
/// highest epoch seen per partition.
pub fn observe_epochs(rig: &Rig, window: Duration) -> BTreeMap<u32, Epoch> {
    let end = Instant::now() + window;
    let mut max = BTreeMap::new();
    while Instant::now() < end {
        for (p, (_, e)) in leaders(rig) {
            let m = max.entry(p).or_insert(e);
            *m = (*m).max(e);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    max
}
