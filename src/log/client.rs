//! `LogClient`: the library API partition processors use to append to and
//! read from logs. One per node, cheap to clone.
//!
//! The appender never waits for another component to make progress without a
//! deadline and without being able to drive that progress itself: if the tail
//! segment is sealed and nobody extends the chain within a short grace, or its
//! sequencer's node is suspected, or its sequencer is gone, the appender asks
//! its own node's sealer to seal and extend (idempotent, safe to race).

use super::chain::{chain_key, Chain, Segment};
use super::{LogConfig, Record, MAX_RECORD_BYTES};
use crate::actors::log_server::{GetRecords, Store, TailWatch, Trim};
use crate::actors::metadata::{CasOutcome, MetaError, MetadataClient};
use crate::actors::sealer::{SealAndExtend, SealError, Sealer};
use crate::actors::sequencer::{
    Append, AppendOutcome, SequencerError, MAX_APPEND_BYTES, MAX_APPEND_RECORDS,
};
use crate::actors::supervisor::Slot;
use crate::node::Net;
use crate::storage::Storage;
use crate::types::{LogId, Lsn, Offset};
use futures::stream::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("log {0} does not exist")]
    UnknownLog(LogId),
    #[error("append of {records} records / {bytes} bytes exceeds the limit ({MAX_APPEND_RECORDS} records, {MAX_APPEND_BYTES} bytes, {MAX_RECORD_BYTES} per record)")]
    TooLarge { records: usize, bytes: usize },
    /// The records may or may not be in the log; a retry must be idempotent.
    #[error("append outcome unknown: {0}")]
    Indeterminate(String),
    /// The records are certainly not in the log.
    #[error("log unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("log {0} does not exist")]
    UnknownLog(LogId),
    #[error("reading log {0}: {1}")]
    Unavailable(LogId, String),
}

/// Counters for status and metrics.
#[derive(Default)]
pub struct LogMetrics {
    pub appends: AtomicU64,
    pub appended_records: AtomicU64,
    pub append_errors: AtomicU64,
    pub seals_driven: AtomicU64,
}

#[derive(Clone)]
pub struct LogClient {
    net: Net,
    meta: MetadataClient,
    sealer: Slot<Sealer>,
    storage: Storage,
    tails: TailWatch,
    config: LogConfig,
    logs: u32,
    metrics: Arc<LogMetrics>,
    /// When each log's chain was last read through the register. The cache
    /// can miss updates (a hint lost during a partition); readers that wait
    /// at a tail re-read it at least every [`CHAIN_RECHECK`].
    checked: Arc<std::sync::Mutex<std::collections::HashMap<LogId, Instant>>>,
    /// How far each log was trimmed from here.
    trimmed: Arc<std::sync::Mutex<std::collections::HashMap<LogId, Lsn>>>,
}

/// How long a reader at the open tail waits for this node's own copy of a
/// committed record before fetching it from a peer.
const LOCAL_GRACE: Duration = Duration::from_millis(30);

/// How stale a waiting reader lets its view of the chain become.
const CHAIN_RECHECK: Duration = Duration::from_secs(1);

impl LogClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        net: Net,
        meta: MetadataClient,
        sealer: Slot<Sealer>,
        storage: Storage,
        tails: TailWatch,
        config: LogConfig,
        logs: u32,
    ) -> Self {
        LogClient {
            net,
            meta,
            sealer,
            storage,
            tails,
            config,
            logs,
            metrics: Default::default(),
            checked: Default::default(),
            trimmed: Default::default(),
        }
    }

    pub fn metrics(&self) -> &LogMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    /// How many logs (one per partition) there are.
    pub fn log_count(&self) -> u32 {
        self.logs
    }

    /// The chain as this node last saw it (a hint).
    pub fn cached_chain(&self, log: LogId) -> Option<Chain> {
        self.meta
            .cached_typed::<Chain>(&chain_key(log))
            .map(|(_, c)| c)
    }

    /// The chain, read linearizably; creates the log's first segment (sequenced
    /// here) if the log has none yet.
    pub async fn refresh_chain(
        &self,
        log: LogId,
        timeout: Duration,
    ) -> Result<Chain, MetaOrUnknown> {
        if log.0 >= self.logs {
            return Err(MetaOrUnknown::UnknownLog(log));
        }
        let key = chain_key(log);
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        if let Some((_, chain)) = self.meta.read_typed::<Chain>(&key, timeout).await? {
            self.checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(log, started);
            return Ok(chain);
        }
        // The first segment is sequenced where the partition's leader will
        // most likely be, so a healthy start needs no seal.
        let sequencer = crate::actors::leader_elector::preferred_leader(
            crate::types::PartitionId(log.0),
            self.net.nodes(),
        );
        let initial = Chain::initial(
            log,
            sequencer,
            self.config.nodeset.clone(),
            self.config.replication,
        );
        let left = deadline.saturating_duration_since(Instant::now());
        match self.meta.cas_typed(&key, 0, &initial, left).await? {
            CasOutcome::Applied { .. } => {
                info!(%log, %sequencer, "created the log's first segment");
                Ok(initial)
            }
            CasOutcome::Conflict(Some((_, chain))) => Ok(chain),
            CasOutcome::Conflict(None) => Err(MetaOrUnknown::UnknownLog(log)),
        }
    }

    async fn chain(&self, log: LogId, deadline: Instant) -> Result<Chain, MetaOrUnknown> {
        match self.cached_chain(log) {
            Some(chain) => Ok(chain),
            None => self.refresh_chain(log, remaining(deadline)).await,
        }
    }

    /// Seals `segment` (if it is still the tail) and extends the chain with a
    /// segment sequenced on this node.
    pub async fn seal_and_extend(
        &self,
        segment: &Segment,
        timeout: Duration,
    ) -> Result<Chain, SealError> {
        let Some(sealer) = self.sealer.addr() else {
            return Err(SealError::Abandoned);
        };
        self.metrics.seals_driven.fetch_add(1, Ordering::Relaxed);
        let req = SealAndExtend {
            log: segment.loglet.log(),
            loglet: segment.loglet,
            next_sequencer: self.net.me(),
        };
        match tokio::time::timeout(timeout, sealer.send(req)).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SealError::Abandoned),
            Err(_) => Err(SealError::Timeout {
                loglet: segment.loglet,
                stage: "waiting for the local sealer".into(),
            }),
        }
    }

    /// Seal in the background (for callers that must not wait for it).
    fn seal_in_background(&self, segment: Segment) {
        let client = self.clone();
        tokio::spawn(async move {
            let timeout = client.config.seal_timeout;
            if let Err(e) = client.seal_and_extend(&segment, timeout).await {
                warn!(loglet = %segment.loglet, "background seal failed: {e}");
            }
        });
    }

    /// Appends `records` to `log`; returns the LSN of the first one.
    pub async fn append(
        &self,
        log: LogId,
        records: Vec<Record>,
        timeout: Duration,
    ) -> Result<Lsn, AppendError> {
        let bytes: usize = records.iter().map(|r| r.len()).sum();
        if records.is_empty()
            || records.len() > MAX_APPEND_RECORDS
            || bytes > MAX_APPEND_BYTES
            || records.iter().any(|r| r.len() > MAX_RECORD_BYTES)
        {
            return Err(AppendError::TooLarge {
                records: records.len(),
                bytes,
            });
        }
        self.metrics.appends.fetch_add(1, Ordering::Relaxed);
        let n = records.len() as u64;
        let result = self.append_inner(log, records, timeout).await;
        match &result {
            Ok(_) => self
                .metrics
                .appended_records
                .fetch_add(n, Ordering::Relaxed),
            Err(_) => self.metrics.append_errors.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn append_inner(
        &self,
        log: LogId,
        records: Vec<Record>,
        timeout: Duration,
    ) -> Result<Lsn, AppendError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no attempt was made");
        loop {
            if Instant::now() >= deadline {
                return Err(AppendError::Unavailable(format!(
                    "deadline passed; last: {last}"
                )));
            }
            let chain = match self.chain(log, deadline).await {
                Ok(c) => c,
                Err(MetaOrUnknown::UnknownLog(l)) => return Err(AppendError::UnknownLog(l)),
                Err(MetaOrUnknown::Meta(e)) => {
                    last = e.to_string();
                    continue;
                }
            };
            let segment = chain.tail().clone();
            let attempt = remaining(deadline).min(self.config.append_timeout);
            let req = Append {
                segment: segment.clone(),
                records: records.clone(),
            };
            match self.net.call(segment.sequencer, req, attempt).await {
                Ok(Ok(AppendOutcome::Appended { first_lsn })) => return Ok(first_lsn),
                Ok(Ok(AppendOutcome::Sealed)) => {
                    last = format!("loglet {} is sealed", segment.loglet);
                    self.await_or_drive_extension(&segment, deadline).await;
                }
                Ok(Ok(AppendOutcome::Indeterminate)) => {
                    // Sealed (or stuck) after offsets were assigned. Make sure
                    // the log moves on; the caller decides about a retry.
                    let loglet = segment.loglet;
                    self.seal_in_background(segment);
                    return Err(AppendError::Indeterminate(format!(
                        "loglet {loglet} was sealed with the append in flight"
                    )));
                }
                Ok(Err(SequencerError::TooLarge { records, bytes })) => {
                    return Err(AppendError::TooLarge { records, bytes })
                }
                Ok(Err(e @ SequencerError::Invalid(_))) => {
                    // Refused before any offset was assigned.
                    return Err(AppendError::Unavailable(e.to_string()));
                }
                Ok(Err(e @ (SequencerError::Gone(_) | SequencerError::NotSequencer(_)))) => {
                    last = e.to_string();
                    self.drive_seal(&segment, deadline).await;
                }
                Ok(Err(e @ SequencerError::Storage(_))) => {
                    last = e.to_string();
                    self.drive_seal(&segment, deadline).await;
                }
                Err(e) if !e.maybe_delivered() => {
                    // Not delivered: the sequencer's node is down, suspected,
                    // or restarting an actor. Move the sequencer here.
                    last = e.to_string();
                    if self.net.is_suspected(segment.sequencer)
                        || segment.sequencer == self.net.me()
                    {
                        self.drive_seal(&segment, deadline).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(20).min(remaining(deadline)))
                            .await;
                    }
                }
                Err(e) => {
                    debug!(loglet = %segment.loglet, "append outcome unknown: {e}");
                    self.seal_in_background(segment);
                    return Err(AppendError::Indeterminate(e.to_string()));
                }
            }
        }
    }

    /// The sequencer said `Sealed`: someone is sealing. Give them a short grace
    /// to extend the chain, then drive the seal ourselves.
    async fn await_or_drive_extension(&self, segment: &Segment, deadline: Instant) {
        let log = segment.loglet.log();
        let grace_end = (Instant::now() + self.config.seal_grace).min(deadline);
        let mut changes = self.meta.cache().changes();
        // This node's view may be what is behind (an update missed while it
        // was partitioned): one register read settles that without waiting.
        let _ = self
            .refresh_chain(log, remaining(grace_end).max(Duration::from_millis(100)))
            .await;
        loop {
            if self
                .cached_chain(log)
                .is_some_and(|c| c.tail().loglet != segment.loglet)
            {
                return;
            }
            let left = grace_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = tokio::time::timeout(left, changes.changed()).await;
        }
        self.drive_seal(segment, deadline).await;
    }

    async fn drive_seal(&self, segment: &Segment, deadline: Instant) {
        let timeout = remaining(deadline).min(self.config.seal_timeout);
        if timeout.is_zero() {
            return;
        }
        if let Err(e) = self.seal_and_extend(segment, timeout).await {
            warn!(loglet = %segment.loglet, "seal-and-extend failed: {e}");
            tokio::time::sleep(Duration::from_millis(50).min(remaining(deadline))).await;
        }
    }

    /// Drops `log`'s records below `below` on every log-server (best effort:
    /// a server that misses it keeps its copies; reads never need them once
    /// every replica persisted past them).
    pub async fn trim(&self, log: LogId, below: Lsn) {
        let Some(chain) = self.cached_chain(log) else {
            return;
        };
        let done = self
            .trimmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&log)
            .copied()
            .unwrap_or_default();
        if below <= done {
            return;
        }
        for segment in &chain.segments {
            if below <= segment.base_lsn {
                break;
            }
            if segment.end_lsn().is_some_and(|end| end <= done) {
                continue;
            }
            let Some(upto) = segment.offset_of(below) else {
                continue;
            };
            let upto = segment.sealed_tail.map_or(upto, |t| upto.min(t));
            let trim = || Trim {
                loglet: segment.loglet,
                below: upto,
            };
            let mut replies = self
                .net
                .broadcast(&segment.nodeset, trim, Duration::from_secs(2));
            while let Some((node, reply)) = replies.next().await {
                if let Err(e) = reply {
                    debug!(%node, loglet = %segment.loglet, "trim not delivered: {e}");
                }
            }
        }
        self.trimmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(log, below);
    }

    /// Reads up to `max` records of `log` from `from` on, waiting up to `wait`
    /// for at least one. An empty result means nothing new within `wait`.
    pub async fn read(
        &self,
        log: LogId,
        from: Lsn,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(Lsn, Record)>, ReadError> {
        let deadline = Instant::now() + wait;
        let mut chain = match self.chain(log, deadline).await {
            Ok(c) => c,
            Err(MetaOrUnknown::UnknownLog(l)) => return Err(ReadError::UnknownLog(l)),
            Err(MetaOrUnknown::Meta(e)) => return Err(ReadError::Unavailable(log, e.to_string())),
        };
        let mut changes = self.meta.cache().changes();
        let mut stalled_since: Option<Instant> = None;
        loop {
            let segment = chain.segment_for(from).clone();
            let offset = segment
                .offset_of(from.max(segment.base_lsn))
                .unwrap_or_default();
            let end = match segment.sealed_tail {
                Some(end) => end,
                None => self
                    .tails
                    .current(segment.loglet)
                    .map(|t| t.known_global_tail)
                    .unwrap_or(0),
            };
            if offset < end {
                let records = self.read_committed(&segment, offset, end, max).await;
                if !records.is_empty() {
                    // Offsets whose LSN would pass `u64::MAX` (a hostile
                    // tail) end the run: there is no LSN to give them.
                    let run: Vec<(Lsn, Record)> = records
                        .into_iter()
                        .map_while(|(o, r)| segment.lsn_of(o).map(|lsn| (lsn, r)))
                        .collect();
                    if !run.is_empty() {
                        return Ok(run);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Nothing readable yet: wait for the tail to move or the chain to
            // change, bounded, then look again.
            let mut tail = self.tails.subscribe(segment.loglet);
            let pause = remaining(deadline).min(Duration::from_millis(250));
            tokio::select! {
                _ = tail.changed() => {}
                _ = changes.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            let locally_sealed = self.tails.current(segment.loglet).is_some_and(|t| t.sealed);
            if segment.sealed_tail.is_none() {
                let since = *stalled_since.get_or_insert(now);
                // The periodic tail check: a tail that stops moving while its
                // sequencer is suspected is sealed by whoever notices.
                if since.elapsed() > self.config.seal_grace * 2
                    && self.net.is_suspected(segment.sequencer)
                {
                    stalled_since = Some(Instant::now());
                    self.seal_in_background(segment.clone());
                }
            }
            let fresh = self
                .checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&log)
                .is_some_and(|t| t.elapsed() < CHAIN_RECHECK);
            chain = match self.cached_chain(log) {
                Some(c) if !locally_sealed && fresh => c,
                _ => {
                    let timeout = remaining(deadline).max(Duration::from_millis(200));
                    match self.refresh_chain(log, timeout).await {
                        Ok(c) => c,
                        Err(_) => self.cached_chain(log).unwrap_or(chain),
                    }
                }
            };
        }
    }

    /// Committed records from `offset` (below `end`): local first, then any
    /// other server of the nodeset. Returns a contiguous run starting at
    /// `offset`, or nothing if no reachable server has it now.
    async fn read_committed(
        &self,
        segment: &Segment,
        offset: Offset,
        end: Offset,
        max: usize,
    ) -> Vec<(Offset, Record)> {
        let max_bytes = 4 * 1024 * 1024;
        let local = || {
            self.storage
                .log
                .read_records(segment.loglet, offset, end, max_bytes)
                .map(|l| contiguous(offset, l.into_iter().map(|(o, r)| (o, Record(r))), max))
                .unwrap_or_default()
        };
        let run = local();
        if !run.is_empty() {
            return run;
        }
        if segment.sealed_tail.is_none() {
            // At the open tail the commit can be known here (a release) a
            // moment before this node's own copy is written: give the local
            // log-server a short grace before asking a peer. A wedged local
            // log-server costs only this grace.
            let mut tail = self.tails.subscribe(segment.loglet);
            let _ = tokio::time::timeout(LOCAL_GRACE, tail.changed()).await;
            let run = local();
            if !run.is_empty() {
                return run;
            }
        }
        for &peer in &segment.nodeset {
            if peer == self.net.me() || self.net.is_suspected(peer) {
                continue;
            }
            let req = GetRecords {
                loglet: segment.loglet,
                from: offset,
                to: end,
                max_bytes: max_bytes as u32,
                include_uncommitted: true,
            };
            match self.net.call(peer, req, Duration::from_millis(500)).await {
                Ok(Ok(reply)) => {
                    let run = contiguous(offset, reply.records, max);
                    if !run.is_empty() {
                        self.repair_locally(segment, &run);
                        return run;
                    }
                }
                Ok(Err(e)) => debug!(%peer, "remote read failed: {e}"),
                Err(e) => debug!(%peer, "remote read failed: {e}"),
            }
        }
        Vec::new()
    }
}

impl LogClient {
    /// Read repair: committed records this node should hold (it is in the
    /// segment's nodeset) but had to read from a peer, because it never got
    /// them or found its copy damaged, are stored here again, so every
    /// segment drifts back to full replication without a separate scrub.
    /// Best effort; the local log-server writes only the offsets it lacks.
    fn repair_locally(&self, segment: &Segment, run: &[(Offset, Record)]) {
        let me = self.net.me();
        let Some(&(first, _)) = run.first() else {
            return;
        };
        if !segment.nodeset.contains(&me) {
            return;
        }
        let records: Vec<Record> = run.iter().map(|(_, r)| r.clone()).collect();
        let store = Store {
            loglet: segment.loglet,
            first,
            records: std::sync::Arc::new(records),
            known_global_tail: 0,
            repair: true,
        };
        let net = self.net.clone();
        tokio::spawn(async move {
            if let Err(e) = net.call(me, store, Duration::from_secs(2)).await {
                debug!("read repair not stored: {e}");
            }
        });
    }
}

fn contiguous(
    from: Offset,
    records: impl IntoIterator<Item = (Offset, Record)>,
    max: usize,
) -> Vec<(Offset, Record)> {
    let mut out = Vec::new();
    for (o, r) in records {
        if Some(o) != from.checked_add(out.len() as Offset) || out.len() >= max {
            break;
        }
        out.push((o, r));
    }
    out
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A chain lookup failed: metadata unreachable or the log does not exist.
#[derive(Debug, thiserror::Error)]
pub enum MetaOrUnknown {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("log {0} does not exist")]
    UnknownLog(LogId),
}
