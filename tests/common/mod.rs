//! Helpers shared by the rig tests.
#![allow(dead_code)]

use keel::log::{AppendError, Chain, Record};
use keel::rig::Rig;
use keel::types::{LogId, Lsn, NodeId};
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
    while next <= upto {
        assert!(
            Instant::now() < end,
            "N{node} could not read {log} up to {upto} within {deadline:?} (at {next})"
        );
        let batch = rig
            .block_on(logs.read(log, next, 1000, Duration::from_millis(200)))
            .expect("read");
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
