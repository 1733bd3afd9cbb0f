//! The sequencer's protocol core, without I/O.
//!
//! One sequencer owns one writable loglet. It assigns offsets, sends each
//! batch to every log-server of the nodeset, and commits offset `k` once `r`
//! servers stored it **and** every offset below `k` is committed. Only then is
//! an append acknowledged. Commit progress is released to the log-servers so
//! readers may read below it.
//!
//! Rules held here:
//! - **who may start one** ([`may_start`]): only the segment's own sequencer
//!   node, only for an open segment, and never twice for one loglet (a
//!   marked loglet whose sequencer is gone answers `Gone`: it must be sealed);
//! - **not before the start mark is durable**: the first input asks the host
//!   to persist the mark ([`Effect::PersistStartMark`]); no offset is handed
//!   out before [`Input::MarkDurable`] says it is synced, and if it cannot
//!   be, the sequencer stops without assigning anything;
//! - **what an append may be**: for this loglet, not empty, within
//!   [`MAX_APPEND_RECORDS`] / [`MAX_APPEND_BYTES`] / `MAX_RECORD_BYTES`;
//! - **offsets**: consecutive, never past `u64::MAX` nor past the last LSN;
//!   an append that does not fit is refused before anything is assigned;
//! - **batching**: appends gather while [`SequencerTuning::max_inflight_batches`]
//!   batches are uncommitted and leave together (bounded in records and
//!   bytes) once the host's queue drains ([`Effect::FlushWhenIdle`]);
//! - **the commit rule**: `r` acknowledgements from the nodeset (a
//!   `quorum::Tally` per batch), in offset order; then `Appended`, and the
//!   new committed tail is released;
//! - **resends**: a server that has not acknowledged a batch is sent it again
//!   after `resend_after`, or `retry_after_failure` after a failed call;
//! - **deadlines**: an appender whose batch is not committed within
//!   `append_deadline` is told `Indeterminate`;
//! - **the seal**: the first `Sealed` answer makes every uncommitted append
//!   `Indeterminate` and every later one `Sealed`; the sequencer lingers
//!   `linger_after_seal` (answering `Sealed`) and then stops;
//! - **the release heartbeat**: an idle sequencer re-announces its committed
//!   tail every `release_heartbeat`;
//! - **the commit watchdog**: the host keeps one watchdog wait on the oldest
//!   uncommitted batch ([`Effect::WatchCommit`]); a commit that takes longer
//!   than `commit_wait` gets the sequencer's manager restarted.
//!
//! Outcomes an appender can receive:
//! - `Appended`: committed; survives any seal.
//! - `Sealed`: refused before an offset was assigned; certainly not in the log,
//!   safe to retry elsewhere.
//! - `Indeterminate`: offsets were assigned but the outcome is unknown (the
//!   loglet was sealed, or the commit did not happen in time); the record may
//!   or may not survive a seal's tail repair. Retries must be idempotent.

use super::messages::SequencerError;
use crate::actors::env::Env;
use crate::actors::log_server::{Store, StoreReply};
use crate::actors::quorum::{Tally, Verdict};
use crate::log::{Record, Segment, MAX_RECORD_BYTES};
use crate::node::CallError;
use crate::types::{LogletId, Lsn, NodeId, Offset};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Most records in one append call.
pub const MAX_APPEND_RECORDS: usize = 4096;
/// Most bytes in one append call.
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

/// Batching, retry and timing knobs.
#[derive(Clone, Debug)]
pub struct SequencerTuning {
    /// Most records in one store batch.
    pub max_batch_records: usize,
    /// Most bytes in one store batch.
    pub max_batch_bytes: usize,
    /// Resend a store to a server that has not acknowledged it after this long.
    pub resend_after: Duration,
    /// Resend a store this long after a call for it failed (the peer is
    /// down, its queue full): soon, but not in a busy loop.
    pub retry_after_failure: Duration,
    /// Answer `Indeterminate` to appenders whose batch is not committed after this long.
    pub append_deadline: Duration,
    /// How long one store call may take before it counts as failed.
    pub store_timeout: Duration,
    /// An idle sequencer re-announces its committed tail this often, so
    /// readers of an idle log (and servers that missed a release) catch up.
    pub release_heartbeat: Duration,
    /// A sealed sequencer lingers this long (answering `Sealed`) before stopping.
    pub linger_after_seal: Duration,
    /// Batches sent but not yet committed, at most. An idle sequencer sends
    /// an append at once; under load, appends gather while the window is
    /// full and leave together when a batch commits, so batches grow with
    /// the load instead of splitting into one store (and one flush per
    /// server) each.
    pub max_inflight_batches: usize,
    /// Longest a batch may stay uncommitted before the watchdog steps in.
    pub commit_wait: Duration,
}

impl Default for SequencerTuning {
    fn default() -> Self {
        SequencerTuning {
            max_batch_records: 4096,
            max_batch_bytes: 2 * 1024 * 1024,
            resend_after: Duration::from_millis(300),
            retry_after_failure: Duration::from_millis(100),
            append_deadline: Duration::from_secs(3),
            store_timeout: Duration::from_secs(2),
            release_heartbeat: Duration::from_millis(500),
            linger_after_seal: Duration::from_secs(10),
            max_inflight_batches: 4,
            commit_wait: Duration::from_secs(10),
        }
    }
}

/// What one sequencer serves.
#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// The loglet it sequences.
    pub loglet: LogletId,
    /// The LSN of the loglet's offset 0.
    pub base_lsn: Lsn,
    /// The log-servers every batch goes to.
    pub nodeset: Vec<NodeId>,
    /// Acknowledgements a commit needs.
    pub replication: usize,
    /// Batching, retry and timing knobs.
    pub tuning: SequencerTuning,
}

impl SequencerConfig {
    /// The sequencer of `segment`'s loglet.
    pub fn for_segment(segment: &Segment, tuning: SequencerTuning) -> Self {
        SequencerConfig {
            loglet: segment.loglet,
            base_lsn: segment.base_lsn,
            nodeset: segment.nodeset.clone(),
            replication: segment.replication as usize,
            tuning,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AppendOutcome {
    /// Committed; the first record got `first_lsn`, the others follow it.
    Appended { first_lsn: Lsn },
    /// Refused before any offset was assigned: not in the log.
    Sealed,
    /// Offsets were assigned but the commit is unknown.
    Indeterminate,
}

/// A call this core made, named by it (its own counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// Why the start mark is not durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// It could not be written: nothing was marked, appenders may retry here.
    #[error("writing the sequencer mark: {0}")]
    Write(String),
    /// It was written but the sync failed: it may or may not survive.
    #[error("syncing the sequencer mark: {0}")]
    Sync(String),
}

/// Everything a sequencer core learns. `T` is the host's token for an
/// appender.
#[derive(Debug)]
pub enum Input<T> {
    /// An appender's records for `loglet`.
    Append {
        token: T,
        loglet: LogletId,
        records: Vec<Record>,
    },
    /// The host handled every input queued so far (asked for with
    /// [`Effect::FlushWhenIdle`]): the appends gathered may leave.
    Flush,
    /// The answer to [`Effect::Call`] `call`, or why there is none.
    Reply {
        call: CallId,
        from: NodeId,
        result: Result<StoreReply, CallError>,
    },
    /// The outcome of [`Effect::PersistStartMark`].
    MarkDurable { result: Result<(), MarkError> },
    /// Time passed (see [`SequencerCore::next_wake`]).
    Tick,
}

/// What the host must do.
#[derive(Debug, PartialEq)]
pub enum Effect<T> {
    /// Write this node's "sequencer started" mark for the loglet and sync
    /// it, then deliver [`Input::MarkDurable`].
    PersistStartMark,
    /// Call `to` with `req` and deliver exactly one [`Input::Reply`] for
    /// `call`: its answer, or a [`CallError`] (at the latest after
    /// `timeout`).
    Call {
        to: NodeId,
        call: CallId,
        req: Store,
        timeout: Duration,
    },
    /// Answer the appender `token`.
    Reply {
        token: T,
        outcome: Result<AppendOutcome, SequencerError>,
    },
    /// Tell every server of the nodeset (this node's included) that the
    /// loglet is committed below `global_tail` (one-way `Release`;
    /// coalesce freely: a later one covers an earlier one).
    Release { global_tail: Offset },
    /// Deliver [`Input::Flush`] once the inputs queued now are handled.
    FlushWhenIdle,
    /// Keep one watchdog wait on the commit of the batch at `offset`, which
    /// must end within `deadline` (replacing the previous one; `None`:
    /// nothing is uncommitted, drop it).
    WatchCommit {
        offset: Option<Offset>,
        deadline: Duration,
    },
    /// This sequencer is done: stop it. Its loglet is marked, so its node
    /// answers `Gone` for it from now on.
    Stop,
}

/// Whether this node (`me`) may start a sequencer for `segment`, given that
/// none is live for it here. `was_started` reads this node's durable mark
/// (only asked when the segment is one this node may sequence).
pub fn may_start(
    segment: &Segment,
    me: NodeId,
    was_started: impl FnOnce() -> crate::storage::Result<bool>,
) -> Result<(), SequencerError> {
    // A decoded segment is valid already (serde `try_from`); a local
    // caller's is checked here, before anything is started for it.
    segment
        .validate()
        .map_err(|e| SequencerError::Invalid(e.to_string()))?;
    if segment.sequencer != me || segment.sealed_tail.is_some() {
        return Err(SequencerError::NotSequencer(segment.loglet));
    }
    // Its offsets lived only in memory: a sequencer never restarts in place.
    match was_started() {
        Ok(true) => Err(SequencerError::Gone(segment.loglet)),
        Ok(false) => Ok(()),
        Err(e) => Err(SequencerError::Storage(e.to_string())),
    }
}

/// Whether `records` may be appended at all.
pub fn check_size(records: &[Record]) -> Result<(), SequencerError> {
    if records.is_empty() {
        return Err(SequencerError::Invalid("an append of no records".into()));
    }
    let bytes: usize = records.iter().map(|r| r.len()).sum();
    if records.len() > MAX_APPEND_RECORDS
        || bytes > MAX_APPEND_BYTES
        || records.iter().any(|r| r.len() > MAX_RECORD_BYTES)
    {
        return Err(SequencerError::TooLarge {
            records: records.len(),
            bytes,
        });
    }
    Ok(())
}

/// Where the start mark stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Start {
    /// No input yet.
    Fresh,
    /// Asked the host to persist it.
    Marking,
    /// Durable: offsets may be handed out.
    Ready,
    /// Could not be written; every append is answered with this error
    /// (it may be retried: nothing was marked).
    Failed(String),
}

/// The next store due to one server that has not acknowledged a batch.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    /// When to send again.
    due: Instant,
    /// The latest call for it still awaiting its reply (a failure of an
    /// older one changes nothing).
    call: Option<CallId>,
}

struct Batch<T> {
    /// The records, shared by every store of the batch.
    records: Arc<Vec<Record>>,
    /// Which servers of the nodeset stored it, against the write quorum of
    /// `replication` (the commit rule's first half).
    stored: Tally,
    /// The servers still missing, and when each is due a resend.
    sends: BTreeMap<NodeId, Delivery>,
    /// When offsets were assigned (the appenders' deadline runs from here).
    created: Instant,
    /// Appenders waiting on this batch and the offset of their first record.
    waiters: Vec<(T, Offset)>,
}

impl<T> Batch<T> {
    /// Whether `replication` servers of the nodeset stored it.
    fn is_stored(&self) -> bool {
        self.stored.verdict() == Verdict::Reached
    }
}

/// The sequencer of one loglet.
pub struct SequencerCore<T> {
    /// What it serves and how.
    config: SequencerConfig,
    /// Where the start mark stands.
    start: Start,
    /// The next offset to assign.
    next: Offset,
    /// Every offset below is committed.
    committed: Offset,
    /// Uncommitted batches by first offset.
    inflight: BTreeMap<Offset, Batch<T>>,
    /// Appends received but not yet given offsets.
    pending: Vec<(Vec<Record>, T)>,
    /// Whether an [`Effect::FlushWhenIdle`] is outstanding.
    flush_requested: bool,
    /// When the first `Sealed` answer came (`None`: not sealed).
    sealed_at: Option<Instant>,
    /// Whether [`Effect::Stop`] was given.
    stopped: bool,
    /// Calls awaiting their reply: the server and the batch's first offset.
    calls: BTreeMap<CallId, (NodeId, Offset)>,
    /// The next call id.
    next_call: u64,
    /// When the committed tail was last released (heartbeats run from here).
    last_release: Option<Instant>,
    /// The batch the host's watchdog wait is on.
    watched: Option<Offset>,
}

/// `at + d`, or `None` past the end of time.
fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

/// Whether `due` (if any) has come by `now`.
fn reached(now: Instant, due: Option<Instant>) -> bool {
    due.is_some_and(|due| now >= due)
}

impl<T> SequencerCore<T> {
    pub fn new(config: SequencerConfig) -> Self {
        SequencerCore {
            config,
            start: Start::Fresh,
            next: 0,
            committed: 0,
            inflight: BTreeMap::new(),
            pending: Vec::new(),
            flush_requested: false,
            sealed_at: None,
            stopped: false,
            calls: BTreeMap::new(),
            next_call: 0,
            last_release: None,
            watched: None,
        }
    }

    pub fn config(&self) -> &SequencerConfig {
        &self.config
    }
    pub fn is_sealed(&self) -> bool {
        self.sealed_at.is_some()
    }
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
    /// Whether the start mark is durable (offsets may be handed out).
    pub fn is_ready(&self) -> bool {
        self.start == Start::Ready
    }
    pub fn committed_tail(&self) -> Offset {
        self.committed
    }
    pub fn next_offset(&self) -> Offset {
        self.next
    }
    pub fn inflight_batches(&self) -> usize {
        self.inflight.len()
    }
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
    /// When the oldest uncommitted batch was created (for status).
    pub fn oldest_uncommitted(&self) -> Option<(Offset, Instant)> {
        self.inflight.iter().next().map(|(o, b)| (*o, b.created))
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: Input<T>) -> Vec<Effect<T>> {
        let now = env.now;
        let mut effects = Vec::new();
        if self.start == Start::Fresh {
            // Nothing is handed out before the mark is durable: ask for it
            // on the very first input (the host starts a sequencer for an
            // append).
            self.start = Start::Marking;
            self.last_release = Some(now);
            effects.push(Effect::PersistStartMark);
        }
        match input {
            Input::Append {
                token,
                loglet,
                records,
            } => self.on_append(token, loglet, records, &mut effects),
            Input::Flush => {
                self.flush_requested = false;
                if self.may_flush() {
                    self.flush(now, &mut effects);
                }
            }
            Input::Reply {
                call,
                from: _,
                result,
            } => self.on_reply(now, call, result, &mut effects),
            Input::MarkDurable { result } => self.on_mark(now, result, &mut effects),
            Input::Tick => self.on_tick(now, &mut effects),
        }
        if self.may_flush() && !self.pending.is_empty() && !self.flush_requested {
            // Every append already queued at the host joins this batch.
            self.flush_requested = true;
            effects.push(Effect::FlushWhenIdle);
        }
        let oldest = self.inflight.keys().next().copied();
        if oldest != self.watched {
            self.watched = oldest;
            effects.push(Effect::WatchCommit {
                offset: oldest,
                deadline: self.config.tuning.commit_wait,
            });
        }
        effects
    }

    /// When the core wants a [`Input::Tick`]: the next resend, appender
    /// deadline, release heartbeat or the end of the linger after a seal.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let tuning = &self.config.tuning;
        if let Some(sealed_at) = self.sealed_at {
            return after(sealed_at, tuning.linger_after_seal);
        }
        let mut wake = self
            .last_release
            .and_then(|at| after(at, tuning.release_heartbeat));
        for batch in self.inflight.values() {
            if !batch.is_stored() {
                for send in batch.sends.values() {
                    wake = Some(wake.map_or(send.due, |w| w.min(send.due)));
                }
            }
            if !batch.waiters.is_empty() {
                if let Some(deadline) = after(batch.created, tuning.append_deadline) {
                    wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
                }
            }
        }
        wake
    }

    /// Whether offsets may be handed out now: the mark is durable, the
    /// loglet is not sealed, and the window has room.
    fn may_flush(&self) -> bool {
        self.start == Start::Ready
            && self.sealed_at.is_none()
            && self.inflight.len() < self.config.tuning.max_inflight_batches
    }

    fn on_append(
        &mut self,
        token: T,
        loglet: LogletId,
        records: Vec<Record>,
        effects: &mut Vec<Effect<T>>,
    ) {
        let outcome = if loglet != self.config.loglet {
            Err(SequencerError::NotSequencer(loglet))
        } else if let Err(e) = check_size(&records) {
            Err(e)
        } else if let Start::Failed(e) = &self.start {
            Err(SequencerError::Storage(e.clone()))
        } else if self.sealed_at.is_some() {
            Ok(AppendOutcome::Sealed)
        } else {
            self.pending.push((records, token));
            return;
        };
        effects.push(Effect::Reply { token, outcome });
    }

    fn on_mark(
        &mut self,
        now: Instant,
        result: Result<(), MarkError>,
        effects: &mut Vec<Effect<T>>,
    ) {
        match result {
            Ok(()) => {
                if self.start == Start::Marking {
                    self.start = Start::Ready;
                }
            }
            Err(MarkError::Write(e)) => {
                // Nothing was marked nor assigned: appenders may retry here
                // (a new sequencer will be started for them).
                warn!(loglet = %self.config.loglet, "sequencer mark not written: {e}; stopping");
                for (_, token) in std::mem::take(&mut self.pending) {
                    effects.push(Effect::Reply {
                        token,
                        outcome: Err(SequencerError::Storage(e.clone())),
                    });
                }
                self.start = Start::Failed(e);
                self.stop(effects);
            }
            Err(MarkError::Sync(e)) => {
                // Nothing was assigned: every waiting appender may retry
                // elsewhere; the loglet must be sealed.
                // (Later appends are answered `Sealed`: not in the log.)
                warn!(loglet = %self.config.loglet, "sequencer mark not durable: {e}; stopping");
                self.seal(now, effects);
                self.stop(effects);
            }
        }
    }

    fn stop(&mut self, effects: &mut Vec<Effect<T>>) {
        if !self.stopped {
            self.stopped = true;
            effects.push(Effect::Stop);
        }
    }

    fn on_reply(
        &mut self,
        now: Instant,
        call: CallId,
        result: Result<StoreReply, CallError>,
        effects: &mut Vec<Effect<T>>,
    ) {
        let Some((to, first)) = self.calls.remove(&call) else {
            return;
        };
        match result {
            Ok(StoreReply::Stored { .. }) => {
                if let Some(batch) = self.inflight.get_mut(&first) {
                    batch.stored.yes(to);
                    batch.sends.remove(&to);
                }
                self.advance_commit(now, effects);
            }
            Ok(StoreReply::Sealed { .. }) => {
                if self.sealed_at.is_none() {
                    info!(loglet = %self.config.loglet, %to, "loglet sealed; refusing further appends");
                }
                self.seal(now, effects);
            }
            Ok(StoreReply::Failed(e)) => {
                warn!(loglet = %self.config.loglet, %to, first, "store failed: {e}");
                self.on_store_failed(now, call, to, first);
            }
            Err(e) => {
                debug!(loglet = %self.config.loglet, %to, first, "store not acknowledged: {e}");
                self.on_store_failed(now, call, to, first);
            }
        }
    }

    /// A store to `to` failed: it is sent again soon (unless a newer one is
    /// on its way).
    fn on_store_failed(&mut self, now: Instant, call: CallId, to: NodeId, first: Offset) {
        let retry = self.config.tuning.retry_after_failure;
        if let Some(send) = self
            .inflight
            .get_mut(&first)
            .and_then(|b| b.sends.get_mut(&to))
        {
            if send.call == Some(call) {
                send.call = None;
                send.due = after(now, retry).unwrap_or(now);
            }
        }
    }

    /// The loglet is sealed (learnt at `now`). Nothing more can commit:
    /// every uncommitted append becomes indeterminate, every pending one is
    /// refused.
    fn seal(&mut self, now: Instant, effects: &mut Vec<Effect<T>>) {
        if self.sealed_at.is_none() {
            self.sealed_at = Some(now);
        }
        self.calls.clear();
        for (_, batch) in std::mem::take(&mut self.inflight) {
            for (token, _) in batch.waiters {
                effects.push(Effect::Reply {
                    token,
                    outcome: Ok(AppendOutcome::Indeterminate),
                });
            }
        }
        for (_, token) in std::mem::take(&mut self.pending) {
            effects.push(Effect::Reply {
                token,
                outcome: Ok(AppendOutcome::Sealed),
            });
        }
    }

    /// Resend unacknowledged stores, give up on overdue appenders, stop
    /// after the linger, keep the heartbeat.
    fn on_tick(&mut self, now: Instant, effects: &mut Vec<Effect<T>>) {
        if self.stopped {
            return;
        }
        let tuning = self.config.tuning.clone();
        if let Some(sealed_at) = self.sealed_at {
            if reached(now, after(sealed_at, tuning.linger_after_seal)) {
                self.stop(effects);
            }
            return;
        }
        let firsts: Vec<Offset> = self.inflight.keys().copied().collect();
        for first in firsts {
            let mut due = Vec::new();
            if let Some(batch) = self.inflight.get(&first) {
                if !batch.is_stored() {
                    due = batch
                        .sends
                        .iter()
                        .filter(|(_, s)| now >= s.due)
                        .map(|(to, _)| *to)
                        .collect();
                }
            }
            for to in due {
                self.send_store(now, to, first, effects);
            }
            if let Some(batch) = self.inflight.get_mut(&first) {
                if reached(now, after(batch.created, tuning.append_deadline)) {
                    for (token, _) in batch.waiters.drain(..) {
                        effects.push(Effect::Reply {
                            token,
                            outcome: Ok(AppendOutcome::Indeterminate),
                        });
                    }
                }
            }
        }
        let heartbeat = self
            .last_release
            .and_then(|at| after(at, tuning.release_heartbeat));
        if reached(now, heartbeat) {
            self.release(now, effects);
        }
    }

    fn release(&mut self, now: Instant, effects: &mut Vec<Effect<T>>) {
        self.last_release = Some(now);
        effects.push(Effect::Release {
            global_tail: self.committed,
        });
    }

    /// Sends (again) the batch at `first` to `to`.
    fn send_store(
        &mut self,
        now: Instant,
        to: NodeId,
        first: Offset,
        effects: &mut Vec<Effect<T>>,
    ) {
        let Some(batch) = self.inflight.get_mut(&first) else {
            return;
        };
        let call = CallId(self.next_call);
        self.next_call = self.next_call.wrapping_add(1);
        let due = after(now, self.config.tuning.resend_after).unwrap_or(now);
        batch.sends.insert(
            to,
            Delivery {
                due,
                call: Some(call),
            },
        );
        self.calls.insert(call, (to, first));
        effects.push(Effect::Call {
            to,
            call,
            req: Store {
                loglet: self.config.loglet,
                first,
                records: batch.records.clone(),
                known_global_tail: self.committed,
                repair: false,
                from: None,
            },
            timeout: self.config.tuning.store_timeout,
        });
    }

    /// The LSN of `offset`, if there is one (`base_lsn` came from a peer).
    fn lsn_of(&self, offset: Offset) -> Option<Lsn> {
        self.config.base_lsn.0.checked_add(offset).map(Lsn)
    }

    /// Whether `n` more records fit after `end`: their offsets and LSNs
    /// must not pass `u64::MAX`.
    fn fits(&self, end: Offset, n: usize) -> bool {
        end.checked_add(n as Offset)
            .and_then(|e| self.lsn_of(e.saturating_sub(1)))
            .is_some()
    }

    /// Assigns offsets to the pending appends and sends them as batches.
    fn flush(&mut self, now: Instant, effects: &mut Vec<Effect<T>>) {
        let pending = std::mem::take(&mut self.pending);
        let mut iter = pending.into_iter().peekable();
        let tuning = self.config.tuning.clone();
        while iter.peek().is_some() {
            let first = self.next;
            let mut records = Vec::new();
            let mut bytes = 0;
            let mut waiters = Vec::new();
            while let Some((recs, _)) = iter.peek() {
                let size: usize = recs.iter().map(|r| r.len()).sum();
                if !records.is_empty()
                    && (records.len() + recs.len() > tuning.max_batch_records
                        || bytes + size > tuning.max_batch_bytes)
                {
                    break;
                }
                let Some((recs, token)) = iter.next() else {
                    break;
                };
                let at = first + records.len() as Offset;
                if !self.fits(at, recs.len()) {
                    // The loglet has no offsets (or LSNs) left for these:
                    // refused before any was assigned.
                    effects.push(Effect::Reply {
                        token,
                        outcome: Ok(AppendOutcome::Sealed),
                    });
                    continue;
                }
                waiters.push((token, at));
                bytes += size;
                records.extend(recs);
            }
            if records.is_empty() {
                continue;
            }
            self.next += records.len() as Offset;
            self.inflight.insert(
                first,
                Batch {
                    records: Arc::new(records),
                    stored: Tally::new(
                        self.config.nodeset.iter().copied(),
                        self.config.replication,
                    ),
                    sends: BTreeMap::new(),
                    created: now,
                    waiters,
                },
            );
            for i in 0..self.config.nodeset.len() {
                let to = self.config.nodeset[i];
                self.send_store(now, to, first, effects);
            }
        }
    }

    fn advance_commit(&mut self, now: Instant, effects: &mut Vec<Effect<T>>) {
        let before = self.committed;
        while let Some(entry) = self.inflight.first_entry() {
            if !entry.get().is_stored() {
                break;
            }
            let batch = entry.remove();
            self.committed += batch.records.len() as Offset;
            for (token, offset) in batch.waiters {
                // `flush` gave out only offsets whose LSN exists.
                let outcome = match self.lsn_of(offset) {
                    Some(first_lsn) => AppendOutcome::Appended { first_lsn },
                    None => AppendOutcome::Indeterminate,
                };
                effects.push(Effect::Reply {
                    token,
                    outcome: Ok(outcome),
                });
            }
        }
        if self.committed > before {
            // Servers learn of the commit from the release (and from the
            // next stores, which carry the committed tail).
            self.release(now, effects);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::log_server::LogServerError;
    use crate::log::Chain;
    use crate::storage::StorageError;
    use crate::types::LogId;
    use std::collections::BTreeSet;

    const L: LogletId = LogletId(5);

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn config(base_lsn: u64, nodes: u32, replication: usize) -> SequencerConfig {
        SequencerConfig {
            loglet: L,
            base_lsn: Lsn(base_lsn),
            nodeset: (1..=nodes).map(NodeId).collect(),
            replication,
            tuning: SequencerTuning::default(),
        }
    }

    /// A core and a virtual clock.
    struct Rig {
        /// The core under test (tokens are plain numbers).
        core: SequencerCore<u32>,
        /// Virtual time zero.
        t0: Instant,
        /// The virtual time the next input is handled at.
        now: Instant,
    }

    impl Rig {
        /// A core whose start mark is durable, with nothing assigned yet.
        fn ready(config: SequencerConfig) -> Rig {
            let mut rig = Rig::fresh(config);
            assert_eq!(rig.input(Input::Tick), vec![Effect::PersistStartMark]);
            assert!(rig.input(Input::MarkDurable { result: Ok(()) }).is_empty());
            rig
        }

        fn fresh(config: SequencerConfig) -> Rig {
            let t0 = Instant::now();
            Rig {
                core: SequencerCore::new(config),
                t0,
                now: t0,
            }
        }

        fn at(&mut self, ms: u64) -> &mut Self {
            self.now = self.t0 + Duration::from_millis(ms);
            self
        }

        fn input(&mut self, input: Input<u32>) -> Vec<Effect<u32>> {
            let env = Env {
                now: self.now,
                me: n(1),
                nodes: vec![n(1), n(2), n(3)],
                suspected: BTreeSet::new(),
            };
            self.core.handle(&env, input)
        }

        fn append(&mut self, token: u32, records: usize) -> Vec<Effect<u32>> {
            self.input(Input::Append {
                token,
                loglet: L,
                records: recs(records),
            })
        }

        fn flush(&mut self) -> Vec<Effect<u32>> {
            self.input(Input::Flush)
        }

        fn reply(
            &mut self,
            call: CallId,
            from: u32,
            result: Result<StoreReply, CallError>,
        ) -> Vec<Effect<u32>> {
            self.input(Input::Reply {
                call,
                from: n(from),
                result,
            })
        }

        fn stored(&mut self, call: CallId, from: u32) -> Vec<Effect<u32>> {
            self.reply(call, from, Ok(StoreReply::Stored { local_tail: 0 }))
        }

        fn tick(&mut self) -> Vec<Effect<u32>> {
            self.input(Input::Tick)
        }
    }

    fn recs(n: usize) -> Vec<Record> {
        (0..n).map(|i| Record(vec![i as u8])).collect()
    }

    fn replies(effects: &[Effect<u32>]) -> Vec<(u32, Result<AppendOutcome, SequencerError>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { token, outcome } => Some((*token, outcome.clone())),
                _ => None,
            })
            .collect()
    }

    /// The calls among `effects`: (call, to, first offset, records, tail).
    fn calls(effects: &[Effect<u32>]) -> Vec<(CallId, u32, Offset, usize, Offset)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Call { to, call, req, .. } => Some((
                    *call,
                    to.0,
                    req.first,
                    req.records.len(),
                    req.known_global_tail,
                )),
                _ => None,
            })
            .collect()
    }

    fn appended(token: u32, lsn: u64) -> (u32, Result<AppendOutcome, SequencerError>) {
        (
            token,
            Ok(AppendOutcome::Appended {
                first_lsn: Lsn(lsn),
            }),
        )
    }

    fn segment(sequencer: u32) -> Segment {
        Chain::initial(LogId(0), n(sequencer), vec![n(1), n(2), n(3)], 2).segments[0].clone()
    }

    #[test]
    fn nothing_is_assigned_before_the_start_mark_is_durable() {
        let mut r = Rig::fresh(config(10, 3, 2));
        assert_eq!(r.append(1, 1), vec![Effect::PersistStartMark]);
        assert!(r.flush().is_empty(), "not before the mark is durable");
        assert_eq!(r.core.next_offset(), 0);
        assert_eq!(
            r.input(Input::MarkDurable { result: Ok(()) }),
            vec![Effect::FlushWhenIdle]
        );
        let effects = r.flush();
        assert_eq!(
            calls(&effects),
            vec![
                (CallId(0), 1, 0, 1, 0),
                (CallId(1), 2, 0, 1, 0),
                (CallId(2), 3, 0, 1, 0)
            ]
        );
        assert_eq!(
            effects.last(),
            Some(&Effect::WatchCommit {
                offset: Some(0),
                deadline: Duration::from_secs(10)
            })
        );
    }

    #[test]
    fn a_mark_that_cannot_be_synced_stops_the_sequencer_with_nothing_assigned() {
        let mut r = Rig::fresh(config(10, 3, 2));
        r.append(1, 1);
        let effects = r.input(Input::MarkDurable {
            result: Err(MarkError::Sync("disk".into())),
        });
        assert_eq!(
            effects,
            vec![
                Effect::Reply {
                    token: 1,
                    outcome: Ok(AppendOutcome::Sealed)
                },
                Effect::Stop
            ]
        );
        assert_eq!(
            replies(&r.append(2, 1)),
            vec![(2, Ok(AppendOutcome::Sealed))]
        );
        assert_eq!(r.core.next_wake(), None);
    }

    #[test]
    fn a_mark_that_cannot_be_written_fails_the_appends_with_a_storage_error() {
        let mut r = Rig::fresh(config(10, 3, 2));
        r.append(1, 1);
        let effects = r.input(Input::MarkDurable {
            result: Err(MarkError::Write("full".into())),
        });
        let storage = Err(SequencerError::Storage("full".into()));
        assert_eq!(
            effects,
            vec![
                Effect::Reply {
                    token: 1,
                    outcome: storage.clone()
                },
                Effect::Stop
            ]
        );
        assert_eq!(replies(&r.append(2, 1)), vec![(2, storage)]);
    }

    #[test]
    fn appends_must_be_for_this_loglet_and_within_the_limits() {
        let mut r = Rig::ready(config(10, 3, 2));
        let other = r.input(Input::Append {
            token: 1,
            loglet: LogletId(6),
            records: recs(1),
        });
        assert_eq!(
            replies(&other),
            vec![(1, Err(SequencerError::NotSequencer(LogletId(6))))]
        );
        assert!(matches!(
            replies(&r.append(2, 0))[..],
            [(2, Err(SequencerError::Invalid(_)))]
        ));
        assert!(matches!(
            replies(&r.append(3, MAX_APPEND_RECORDS + 1))[..],
            [(3, Err(SequencerError::TooLarge { .. }))]
        ));
        let huge = r.input(Input::Append {
            token: 4,
            loglet: L,
            records: vec![Record(vec![0; MAX_RECORD_BYTES + 1])],
        });
        assert!(matches!(
            replies(&huge)[..],
            [(4, Err(SequencerError::TooLarge { .. }))]
        ));
        assert!(!r.core.has_pending());
    }

    #[test]
    fn concurrent_appends_share_one_batch_and_commit_at_r_acks() {
        let mut r = Rig::ready(config(10, 3, 2));
        assert_eq!(r.append(1, 2), vec![Effect::FlushWhenIdle]);
        assert!(r.append(2, 3).is_empty(), "one flush is asked for");
        let effects = r.flush();
        let sent = calls(&effects);
        assert_eq!(sent.len(), 3, "one store per server");
        assert!(sent.iter().all(|c| c.2 == 0 && c.3 == 5));
        assert!(r.stored(sent[0].0, 1).is_empty(), "one ack is not a commit");
        let effects = r.stored(sent[2].0, 3);
        assert_eq!(
            effects,
            vec![
                Effect::Reply {
                    token: 1,
                    outcome: Ok(AppendOutcome::Appended { first_lsn: Lsn(10) })
                },
                Effect::Reply {
                    token: 2,
                    outcome: Ok(AppendOutcome::Appended { first_lsn: Lsn(12) })
                },
                Effect::Release { global_tail: 5 },
                Effect::WatchCommit {
                    offset: None,
                    deadline: Duration::from_secs(10)
                },
            ]
        );
        assert_eq!(r.core.committed_tail(), 5);
        // The next batch carries the committed tail to the servers.
        r.append(3, 1);
        assert!(calls(&r.flush()).iter().all(|c| c.2 == 5 && c.4 == 5));
    }

    #[test]
    fn a_later_batch_never_commits_before_an_earlier_one() {
        let mut r = Rig::ready(config(10, 3, 2));
        r.append(1, 1);
        let first = calls(&r.flush());
        r.append(2, 1);
        let second = calls(&r.flush());
        assert!(r.stored(second[0].0, 1).is_empty());
        assert!(
            replies(&r.stored(second[1].0, 2)).is_empty(),
            "offset 0 is not committed yet"
        );
        assert!(replies(&r.stored(first[1].0, 2)).is_empty());
        assert_eq!(
            replies(&r.stored(first[2].0, 3)),
            vec![appended(1, 10), appended(2, 11)]
        );
    }

    #[test]
    fn a_full_window_holds_appends_until_a_batch_commits() {
        let mut r = Rig::ready(config(10, 1, 1));
        let mut first_calls = Vec::new();
        for w in 0..4 {
            assert_eq!(r.append(w, 1), vec![Effect::FlushWhenIdle]);
            first_calls.push(calls(&r.flush())[0].0);
        }
        assert!(r.append(9, 1).is_empty(), "four batches in flight: wait");
        assert!(calls(&r.flush()).is_empty(), "even if flushed");
        let effects = r.stored(first_calls[0], 1);
        assert!(effects.contains(&Effect::FlushWhenIdle), "{effects:?}");
        assert_eq!(calls(&r.flush())[0].2, 4);
    }

    #[test]
    fn a_seal_makes_uncommitted_appends_indeterminate_and_refuses_new_ones() {
        let mut r = Rig::ready(config(10, 3, 2));
        r.append(1, 1);
        let sent = calls(&r.flush());
        r.append(2, 1); // pending, no offset yet
        let effects = r.reply(sent[0].0, 1, Ok(StoreReply::Sealed { local_tail: 0 }));
        assert_eq!(
            replies(&effects),
            vec![
                (1, Ok(AppendOutcome::Indeterminate)),
                (2, Ok(AppendOutcome::Sealed))
            ]
        );
        assert!(r.core.is_sealed());
        assert_eq!(
            replies(&r.append(3, 1)),
            vec![(3, Ok(AppendOutcome::Sealed))]
        );
        assert!(r.flush().is_empty());
        // Late acknowledgements change nothing.
        assert!(r.stored(sent[1].0, 2).is_empty());
        assert_eq!(r.core.committed_tail(), 0);
    }

    #[test]
    fn a_sealed_sequencer_lingers_then_stops() {
        let mut r = Rig::ready(config(10, 3, 2));
        r.append(1, 1);
        let sent = calls(&r.flush());
        r.at(100)
            .reply(sent[0].0, 1, Ok(StoreReply::Sealed { local_tail: 0 }));
        assert_eq!(
            r.core.next_wake(),
            Some(r.t0 + Duration::from_millis(10_100))
        );
        assert!(r.at(10_099).tick().is_empty(), "no heartbeat once sealed");
        assert_eq!(r.at(10_100).tick(), vec![Effect::Stop]);
        assert_eq!(r.core.next_wake(), None);
        assert!(r.at(20_000).tick().is_empty());
    }

    #[test]
    fn unacknowledged_stores_are_resent() {
        let mut config = config(10, 3, 2);
        config.tuning.release_heartbeat = Duration::from_secs(3600);
        let mut r = Rig::ready(config);
        r.append(1, 1);
        let sent = calls(&r.flush());
        r.stored(sent[0].0, 1);
        assert_eq!(r.core.next_wake(), Some(r.t0 + Duration::from_millis(300)));
        assert!(calls(&r.at(299).tick()).is_empty(), "not yet due");
        let resent = calls(&r.at(300).tick());
        assert_eq!(
            resent.iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![2, 3],
            "the servers that did not acknowledge"
        );
        // The first call to N2 times out now: a newer one is on its way,
        // so nothing is sent earlier than planned.
        r.at(400).reply(
            sent[1].0,
            2,
            Err(CallError::Timeout(n(2), Duration::from_secs(2))),
        );
        assert_eq!(r.core.next_wake(), Some(r.t0 + Duration::from_millis(600)));
        // The newer call fails at once: it is retried after 100 ms.
        r.at(450).reply(
            resent[0].0,
            2,
            Ok(StoreReply::Failed(LogServerError::Unavailable)),
        );
        assert_eq!(r.core.next_wake(), Some(r.t0 + Duration::from_millis(550)));
        assert_eq!(
            calls(&r.at(550).tick())
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn a_batch_with_r_copies_is_not_resent() {
        let mut r = Rig::ready(config(10, 3, 2));
        r.append(1, 1);
        let first = calls(&r.flush());
        r.append(2, 1);
        let second = calls(&r.flush());
        r.stored(second[0].0, 1);
        r.stored(second[1].0, 2);
        let resent = calls(&r.at(300).tick());
        assert!(
            resent.iter().all(|c| c.2 == 0),
            "only the batch short of copies: {resent:?}"
        );
        assert_eq!(resent.len(), 3);
        assert_eq!(
            replies(&r.stored(first[0].0, 1)).len(),
            0,
            "one copy of offset 0"
        );
    }

    #[test]
    fn overdue_appenders_are_told_indeterminate() {
        let mut r = Rig::ready(config(10, 3, 2));
        r.append(1, 1);
        let sent = calls(&r.flush());
        assert!(replies(&r.at(2_999).tick()).is_empty());
        assert_eq!(
            replies(&r.at(3_000).tick()),
            vec![(1, Ok(AppendOutcome::Indeterminate))]
        );
        // The batch still commits later; nobody is waiting any more.
        r.stored(sent[0].0, 1);
        let effects = r.stored(sent[1].0, 2);
        assert!(replies(&effects).is_empty());
        assert_eq!(r.core.committed_tail(), 1);
    }

    #[test]
    fn an_idle_sequencer_heartbeats_its_committed_tail() {
        let mut r = Rig::ready(config(10, 1, 1));
        assert_eq!(r.core.next_wake(), Some(r.t0 + Duration::from_millis(500)));
        assert_eq!(r.at(500).tick(), vec![Effect::Release { global_tail: 0 }]);
        r.at(700).append(1, 2);
        let sent = calls(&r.flush());
        assert!(r
            .stored(sent[0].0, 1)
            .contains(&Effect::Release { global_tail: 2 }));
        assert_eq!(
            r.core.next_wake(),
            Some(r.t0 + Duration::from_millis(1_200)),
            "a release resets the heartbeat"
        );
        assert_eq!(r.at(1_200).tick(), vec![Effect::Release { global_tail: 2 }]);
    }

    #[test]
    fn the_watchdog_follows_the_oldest_uncommitted_batch() {
        let mut r = Rig::ready(config(10, 1, 1));
        let watch = |offset| Effect::WatchCommit {
            offset,
            deadline: Duration::from_secs(10),
        };
        r.append(1, 2);
        let a = calls(&r.flush());
        r.append(2, 1);
        let b = calls(&r.flush());
        assert!(!b.is_empty());
        assert!(r
            .stored(b[0].0, 1)
            .iter()
            .all(|e| !matches!(e, Effect::WatchCommit { .. })));
        let effects = r.stored(a[0].0, 1);
        assert_eq!(effects.last(), Some(&watch(None)), "both committed");
        r.append(3, 1);
        assert_eq!(r.flush().last(), Some(&watch(Some(3))));
    }

    #[test]
    fn replies_to_unknown_calls_count_for_nothing() {
        let mut r = Rig::ready(config(10, 3, 2));
        r.append(1, 1);
        let sent = calls(&r.flush());
        assert!(r.stored(CallId(99), 1).is_empty());
        assert!(r.stored(sent[0].0, 1).is_empty());
        assert!(
            r.stored(sent[0].0, 1).is_empty(),
            "a call's reply counts once"
        );
        assert_eq!(replies(&r.stored(sent[2].0, 3)), vec![appended(1, 10)]);
    }

    #[test]
    fn the_last_lsn_is_never_passed() {
        let mut r = Rig::ready(config(u64::MAX - 2, 2, 1));
        r.append(1, 2);
        r.append(2, 2);
        let effects = r.flush();
        assert_eq!(replies(&effects), vec![(2, Ok(AppendOutcome::Sealed))]);
        let sent = calls(&effects);
        assert_eq!(
            replies(&r.stored(sent[1].0, 2)),
            vec![appended(1, u64::MAX - 2)]
        );
        // The last LSN there is can be written, and nothing after it.
        r.append(3, 1);
        let sent = calls(&r.flush());
        assert_eq!(
            replies(&r.stored(sent[0].0, 1)),
            vec![appended(3, u64::MAX)]
        );
        r.append(4, 1);
        assert_eq!(replies(&r.flush()), vec![(4, Ok(AppendOutcome::Sealed))]);
        assert_eq!(r.core.next_offset(), 3);
    }

    #[test]
    fn batches_are_bounded() {
        let mut config = config(1, 1, 1);
        config.tuning.max_batch_records = 3;
        let mut r = Rig::ready(config);
        for w in 0..4 {
            r.append(w, 2);
        }
        let firsts: Vec<_> = calls(&r.flush()).iter().map(|c| (c.2, c.3)).collect();
        assert_eq!(firsts, vec![(0, 2), (2, 2), (4, 2), (6, 2)]);
        assert_eq!(r.core.next_offset(), 8);
    }

    #[test]
    fn only_the_segments_own_open_never_started_sequencer_may_start() {
        let fresh = || Ok(false);
        assert_eq!(may_start(&segment(1), n(1), fresh), Ok(()));
        let loglet = segment(1).loglet;
        assert_eq!(
            may_start(&segment(2), n(1), fresh),
            Err(SequencerError::NotSequencer(loglet))
        );
        let mut sealed = segment(1);
        sealed.sealed_tail = Some(4);
        assert_eq!(
            may_start(&sealed, n(1), fresh),
            Err(SequencerError::NotSequencer(loglet))
        );
        assert_eq!(
            may_start(&segment(1), n(1), || Ok(true)),
            Err(SequencerError::Gone(loglet)),
            "a marked loglet without a live sequencer must be sealed"
        );
        assert!(matches!(
            may_start(&segment(1), n(1), || Err(StorageError::Closed)),
            Err(SequencerError::Storage(_))
        ));
        let mut broken = segment(1);
        broken.replication = 0;
        assert!(matches!(
            may_start(&broken, n(1), || panic!("not read for an invalid segment")),
            Err(SequencerError::Invalid(_))
        ));
    }
}
