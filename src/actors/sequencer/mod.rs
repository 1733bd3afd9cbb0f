//! Sequencers: one actor per writable loglet sequenced by this node, plus the
//! manager that starts them.
//!
//! A sequencer never restarts in place: its next offset lives only in memory,
//! and reusing an offset would let two records claim one position. The manager
//! therefore marks (durably) every loglet it starts a sequencer for; an append
//! for a marked loglet whose sequencer is gone (actor stopped, node restarted)
//! is answered `Gone`, and the appender seals the loglet and moves on to a new
//! segment.

pub mod core;
pub mod messages;

pub use self::core::{AppendOutcome, SequencerTuning};
pub use messages::{Append, SequencerError};

use self::core::{Effect, SequencerCore};
use crate::actors::log_server::{Release, Store, StoreReply};
use crate::actors::supervisor::{ChildContext, WaitGuard};
use crate::actors::when_mailbox_drained;
use crate::log::{Segment, MAX_RECORD_BYTES};
use crate::node::{Net, Wire};
use crate::storage::Storage;
use crate::types::{LogletId, NodeId, Offset};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn};

/// Most records in one append call.
pub const MAX_APPEND_RECORDS: usize = 4096;
/// Most bytes in one append call.
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

const TICK: Duration = Duration::from_millis(100);
/// An idle sequencer re-announces its committed tail this often, so readers
/// of an idle log (and servers that missed a release) catch up.
const RELEASE_HEARTBEAT: Duration = Duration::from_millis(500);
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// A sealed sequencer lingers this long (answering `Sealed`) before stopping.
const LINGER_AFTER_SEAL: Duration = Duration::from_secs(10);
/// Batches sent but not yet committed, at most. An idle sequencer sends an
/// append at once; under load, appends gather while the window is full and
/// leave together when a batch commits, so batches grow with the load
/// instead of splitting into one store (and one flush per server) each.
const MAX_INFLIGHT_BATCHES: usize = 4;
/// Longest a batch may stay uncommitted before the watchdog steps in.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

type Waiter = oneshot::Sender<AppendOutcome>;

/// Live sequencers of this node, shared with the router and local appenders so
/// appends reach a sequencer without going through the manager.
#[derive(Clone, Default)]
pub struct SequencerDirectory {
    inner: Arc<Mutex<HashMap<LogletId, Addr<Sequencer>>>>,
    /// Records committed by this node's sequencers (for metrics).
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl SequencerDirectory {
    pub fn committed_records(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, loglet: LogletId) -> Option<Addr<Sequencer>> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&loglet).filter(|a| a.connected()).cloned()
    }
    fn insert(&self, loglet: LogletId, addr: Addr<Sequencer>) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, a| a.connected());
        map.insert(loglet, addr);
    }
    /// Snapshot for status: loglet, committed tail is not tracked here.
    pub fn loglets(&self) -> Vec<LogletId> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, a)| a.connected())
            .map(|(l, _)| *l)
            .collect()
    }
    /// Stops every sequencer (node shutdown, or a restart of their manager):
    /// their loglets will be sealed, never resumed.
    pub fn clear(&self) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (_, addr) in map.drain() {
            let _ = addr.try_send(StopSequencer);
        }
    }
}

fn check_size(records: &[crate::log::Record]) -> Result<(), SequencerError> {
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

/// The sequencer of one loglet.
pub struct Sequencer {
    segment: Segment,
    net: Net,
    core: SequencerCore<Waiter>,
    /// False until this node's "sequencer started" mark is durable: no
    /// offset is handed out before then.
    ready: bool,
    flush_scheduled: bool,
    release_scheduled: bool,
    last_release: Instant,
    /// The manager's identity for the watchdog: a commit that takes longer
    /// than [`COMMIT_WAIT`] restarts the manager, which stops its sequencers.
    cx: ChildContext,
    commit_wait: Option<(Offset, WaitGuard)>,
    /// Committed records already added to `committed`.
    counted: Offset,
    committed: Arc<std::sync::atomic::AtomicU64>,
    span: tracing::Span,
}

/// Stop now (the manager is going away).
#[derive(Message)]
#[rtype(result = "()")]
struct StopSequencer;

impl Handler<StopSequencer> for Sequencer {
    type Result = ();
    fn handle(&mut self, _: StopSequencer, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// From the manager: the started-mark is durable (or could not be made so).
#[derive(Message)]
#[rtype(result = "()")]
struct MarkDurable(bool);

impl Sequencer {
    fn new(
        segment: Segment,
        net: Net,
        tuning: SequencerTuning,
        cx: ChildContext,
        committed: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let span = info_span!("sequencer", node = %net.me(), loglet = %segment.loglet);
        Sequencer {
            core: SequencerCore::new(
                segment.base_lsn,
                segment.nodeset.clone(),
                segment.replication as usize,
                tuning,
            ),
            segment,
            net,
            ready: false,
            cx,
            commit_wait: None,
            counted: 0,
            committed,
            flush_scheduled: false,
            release_scheduled: false,
            last_release: Instant::now(),
            span,
        }
    }

    fn perform(&mut self, effects: Vec<Effect<Waiter>>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Store {
                    to,
                    first,
                    records,
                    global_tail,
                } => self.send_store(to, first, records, global_tail, ctx),
                Effect::Reply { waiter, outcome } => {
                    let _ = waiter.send(outcome);
                }
                Effect::Release { global_tail } => {
                    let newly = global_tail.saturating_sub(self.counted);
                    self.counted = self.counted.max(global_tail);
                    self.committed
                        .fetch_add(newly, std::sync::atomic::Ordering::Relaxed);
                    if !self.release_scheduled {
                        self.release_scheduled = true;
                        when_mailbox_drained(ctx, |act: &mut Self, _| {
                            act.release_scheduled = false;
                            act.release();
                        });
                    }
                }
            }
        }
    }

    fn send_store(
        &mut self,
        to: NodeId,
        first: Offset,
        records: Arc<Vec<crate::log::Record>>,
        global_tail: Offset,
        ctx: &mut Context<Self>,
    ) {
        let req = Store {
            loglet: self.segment.loglet,
            first,
            records,
            known_global_tail: global_tail,
            repair: false,
        };
        let net = self.net.clone();
        let fut = async move { net.call(to, req, STORE_TIMEOUT).await };
        ctx.spawn(fut.into_actor(self).map(move |reply, act, ctx| {
            let effects = match reply {
                Ok(StoreReply::Stored { .. }) => act.core.on_stored(to, first),
                Ok(StoreReply::Sealed { .. }) => {
                    if !act.core.is_sealed() {
                        info!(parent: &act.span, %to, "loglet sealed; refusing further appends");
                        ctx.run_later(LINGER_AFTER_SEAL, |_, ctx| ctx.stop());
                    }
                    act.core.on_sealed()
                }
                Ok(StoreReply::Failed(e)) => {
                    warn!(parent: &act.span, %to, first, "store failed: {e}");
                    act.core.on_store_failed(to, first);
                    Vec::new()
                }
                Err(e) => {
                    debug!(parent: &act.span, %to, first, "store not acknowledged: {e}");
                    act.core.on_store_failed(to, first);
                    Vec::new()
                }
            };
            act.perform(effects, ctx);
            // A commit may have opened the window for the appends waiting.
            act.schedule_flush(ctx);
        }));
    }

    /// Tells the nodeset how far the log is committed.
    fn release(&mut self) {
        self.last_release = Instant::now();
        let msg = Release {
            loglet: self.segment.loglet,
            global_tail: self.core.committed_tail(),
        };
        for &to in &self.segment.nodeset {
            if to == self.net.me() {
                self.net
                    .local()
                    .tails
                    .publish_global(msg.loglet, msg.global_tail);
                if let Some(ls) = self.net.local().log_server.addr() {
                    let _ = ls.try_send(msg.clone());
                }
            } else {
                let _ = self.net.send(to, Wire::Release(msg.clone()));
            }
        }
    }
}

impl Actor for Sequencer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        info!(parent: &self.span, base_lsn = %self.segment.base_lsn, "sequencer started");
        ctx.run_interval(TICK, |act, ctx| {
            let effects = act.core.tick(Instant::now());
            act.perform(effects, ctx);
            // Keep one registered wait for the oldest uncommitted batch.
            let oldest = act.core.oldest_uncommitted().map(|(o, _)| o);
            if act.commit_wait.as_ref().map(|(o, _)| *o) != oldest {
                act.commit_wait = oldest.map(|o| {
                    let what = format!("commit of offset {o} of loglet {}", act.segment.loglet);
                    (o, act.cx.register_wait(what, COMMIT_WAIT))
                });
            }
            if !act.core.is_sealed() && act.last_release.elapsed() >= RELEASE_HEARTBEAT {
                act.release();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        info!(parent: &self.span, committed = self.core.committed_tail(), "sequencer stopped");
    }
}

impl Handler<Append> for Sequencer {
    type Result = ResponseFuture<Result<AppendOutcome, SequencerError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        if msg.segment.loglet != self.segment.loglet {
            let loglet = msg.segment.loglet;
            return Box::pin(async move { Err(SequencerError::NotSequencer(loglet)) });
        }
        if let Err(e) = check_size(&msg.records) {
            return Box::pin(async move { Err(e) });
        }
        let (tx, rx) = oneshot::channel();
        let effects = self.core.enqueue(msg.records, tx);
        self.perform(effects, ctx);
        self.schedule_flush(ctx);
        Box::pin(async move { Ok(rx.await.unwrap_or(AppendOutcome::Indeterminate)) })
    }
}

impl Handler<MarkDurable> for Sequencer {
    type Result = ();

    fn handle(&mut self, msg: MarkDurable, ctx: &mut Self::Context) {
        if msg.0 {
            self.ready = true;
            self.schedule_flush(ctx);
        } else {
            // Nothing was assigned: every waiting appender may retry elsewhere.
            warn!(parent: &self.span, "started-mark not durable; stopping");
            let effects = self.core.on_sealed();
            self.perform(effects, ctx);
            ctx.stop();
        }
    }
}

impl Sequencer {
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.ready
            && self.core.has_pending()
            && !self.flush_scheduled
            && self.core.inflight_batches() < MAX_INFLIGHT_BATCHES
        {
            self.flush_scheduled = true;
            // Every append already queued joins this batch.
            when_mailbox_drained(ctx, |act: &mut Self, ctx| {
                act.flush_scheduled = false;
                let effects = act.core.flush(Instant::now());
                act.perform(effects, ctx);
            });
        }
    }
}

/// Starts sequencers on demand; answers for loglets whose sequencer is gone.
pub struct SequencerManager {
    net: Net,
    storage: Storage,
    directory: SequencerDirectory,
    tuning: SequencerTuning,
    cx: ChildContext,
}

impl SequencerManager {
    pub fn new(
        net: Net,
        storage: Storage,
        directory: SequencerDirectory,
        tuning: SequencerTuning,
        cx: ChildContext,
    ) -> Self {
        SequencerManager {
            net,
            storage,
            directory,
            tuning,
            cx,
        }
    }
}

impl Actor for SequencerManager {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
    fn stopped(&mut self, _: &mut Self::Context) {
        self.directory.clear();
    }
}

impl Handler<Append> for SequencerManager {
    type Result = ResponseFuture<Result<AppendOutcome, SequencerError>>;

    fn handle(&mut self, msg: Append, _: &mut Self::Context) -> Self::Result {
        let loglet = msg.segment.loglet;
        if let Some(addr) = self.directory.get(loglet) {
            return Box::pin(async move {
                addr.send(msg)
                    .await
                    .unwrap_or(Ok(AppendOutcome::Indeterminate))
            });
        }
        // A decoded segment is valid already (serde `try_from`); a local
        // caller's is checked here, before anything is started for it.
        if let Err(e) = msg.segment.validate() {
            let e = SequencerError::Invalid(e.to_string());
            return Box::pin(async move { Err(e) });
        }
        if msg.segment.sequencer != self.net.me() || msg.segment.sealed_tail.is_some() {
            return Box::pin(async move { Err(SequencerError::NotSequencer(loglet)) });
        }
        match self.storage.meta.sequencer_was_started(loglet) {
            Ok(true) => return Box::pin(async move { Err(SequencerError::Gone(loglet)) }),
            Ok(false) => {}
            Err(e) => {
                let e = SequencerError::Storage(e.to_string());
                return Box::pin(async move { Err(e) });
            }
        }
        if let Err(e) = self.storage.meta.mark_sequencer_started(loglet) {
            let e = SequencerError::Storage(e.to_string());
            return Box::pin(async move { Err(e) });
        }
        let addr = Sequencer::new(
            msg.segment.clone(),
            self.net.clone(),
            self.tuning.clone(),
            self.cx.clone(),
            self.directory.committed.clone(),
        )
        .start();
        self.directory.insert(loglet, addr.clone());
        let storage = self.storage.clone();
        let ready = addr.clone();
        tokio::spawn(async move {
            // The mark must be durable before the first offset is handed out.
            let durable = storage.sync_state().await.is_ok();
            let _ = ready.send(MarkDurable(durable)).await;
        });
        Box::pin(async move {
            addr.send(msg)
                .await
                .unwrap_or(Ok(AppendOutcome::Indeterminate))
        })
    }
}

impl Handler<crate::actors::supervisor::Ping> for SequencerManager {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
