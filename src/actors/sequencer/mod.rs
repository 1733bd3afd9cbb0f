//! Sequencers: one actor per writable loglet sequenced by this node, plus the
//! manager that starts them.
//!
//! A sequencer never restarts in place: its next offset lives only in memory,
//! and reusing an offset would let two records claim one position. Every
//! loglet a sequencer is started for is therefore marked (durably) before it
//! hands out an offset; an append for a marked loglet whose sequencer is gone
//! (actor stopped, node restarted) is answered `Gone`, and the appender seals
//! the loglet and moves on to a new segment.
//!
//! Every rule is in [`core`]: offsets, batching, the commit rule, resends,
//! deadlines, the seal, the release heartbeat, when the start mark must be
//! durable, the commit watchdog's wait, and who may start a sequencer
//! ([`core::may_start`]). The actors here are shells: the sequencer carries
//! out its core's effects (store calls over `Net`, the start mark in
//! `Storage`, releases, its timer from `next_wake`, the watchdog wait); the
//! manager looks up the live sequencers (the actor registry, which only a
//! shell has) and asks the core whether it may start one.

pub mod core;
pub mod messages;

pub use self::core::{AppendOutcome, SequencerTuning, MAX_APPEND_BYTES, MAX_APPEND_RECORDS};
pub use messages::{Append, SequencerError};

use self::core::{Effect, Input, MarkError, SequencerConfig, SequencerCore};
use crate::actors::log_server::Release;
use crate::actors::supervisor::{ChildContext, WaitGuard};
use crate::actors::when_mailbox_drained;
use crate::log::Segment;
use crate::node::{Net, Wire};
use crate::storage::Storage;
use crate::types::{LogletId, Offset};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{info, info_span};

type Waiter = oneshot::Sender<Result<AppendOutcome, SequencerError>>;

/// Live sequencers of this node, shared with the router and local appenders so
/// appends reach a sequencer without going through the manager.
#[derive(Clone, Default)]
pub struct SequencerDirectory {
    /// The sequencer of each loglet (stopped ones are skipped and pruned).
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

/// The sequencer of one loglet: the shell of a [`SequencerCore`].
pub struct Sequencer {
    /// The loglet (for the start mark, releases and the watchdog).
    loglet: LogletId,
    /// The log-servers of the loglet (releases go to all of them).
    nodeset: Vec<crate::types::NodeId>,
    /// Calls to the log-servers, and what the core is told of the world.
    net: Net,
    /// Where the start mark is written.
    storage: Storage,
    /// The rules.
    core: SequencerCore<Waiter>,
    /// A release is scheduled for when the mailbox drains (they coalesce).
    release_scheduled: bool,
    /// The timer for the core's next wake, and when it fires.
    timer: Option<(Instant, SpawnHandle)>,
    /// The manager's identity for the watchdog: a commit that takes longer
    /// than the core's `commit_wait` restarts the manager, which stops its
    /// sequencers.
    cx: ChildContext,
    /// The watchdog wait the core asked for ([`Effect::WatchCommit`]).
    commit_wait: Option<WaitGuard>,
    /// Committed records already added to `committed`.
    counted: Offset,
    /// Records committed by this node's sequencers (for metrics).
    committed: Arc<std::sync::atomic::AtomicU64>,
    /// Log context: this node and the loglet.
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

impl Sequencer {
    fn new(
        segment: &Segment,
        net: Net,
        storage: Storage,
        tuning: SequencerTuning,
        cx: ChildContext,
        committed: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let span = info_span!("sequencer", node = %net.me(), loglet = %segment.loglet);
        Sequencer {
            loglet: segment.loglet,
            nodeset: segment.nodeset.clone(),
            core: SequencerCore::new(SequencerConfig::for_segment(segment, tuning)),
            net,
            storage,
            release_scheduled: false,
            timer: None,
            cx,
            commit_wait: None,
            counted: 0,
            committed,
            span,
        }
    }

    /// Runs `input` through the core, carries out the effects, and sets the
    /// timer for the core's next wake.
    fn run(&mut self, input: Input<Waiter>, ctx: &mut Context<Self>) {
        let effects = {
            let _span = self.span.enter();
            self.core.handle(&self.net.env(), input)
        };
        for effect in effects {
            self.perform(effect, ctx);
        }
        self.arm_timer(ctx);
    }

    fn perform(&mut self, effect: Effect<Waiter>, ctx: &mut Context<Self>) {
        match effect {
            Effect::PersistStartMark => {
                let (storage, loglet) = (self.storage.clone(), self.loglet);
                let mark = async move {
                    storage
                        .meta
                        .mark_sequencer_started(loglet)
                        .map_err(|e| MarkError::Write(e.to_string()))?;
                    storage
                        .sync_state()
                        .await
                        .map_err(|e| MarkError::Sync(e.to_string()))
                };
                ctx.spawn(
                    mark.into_actor(self)
                        .map(|result, act, ctx| act.run(Input::MarkDurable { result }, ctx)),
                );
            }
            Effect::Call {
                to,
                call,
                req,
                timeout,
            } => {
                let net = self.net.clone();
                let fut = async move { net.call(to, req, timeout).await };
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    act.run(
                        Input::Reply {
                            call,
                            from: to,
                            result,
                        },
                        ctx,
                    )
                }));
            }
            Effect::Reply { token, outcome } => {
                let _ = token.send(outcome);
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
            Effect::FlushWhenIdle => {
                // Every append already queued joins the batch.
                when_mailbox_drained(ctx, |act: &mut Self, ctx| act.run(Input::Flush, ctx));
            }
            Effect::WatchCommit { offset, deadline } => {
                self.commit_wait = None;
                self.commit_wait = offset.map(|o| {
                    let what = format!("commit of offset {o} of loglet {}", self.loglet);
                    self.cx.register_wait(what, deadline)
                });
            }
            Effect::Stop => ctx.stop(),
        }
    }

    /// Makes sure a tick arrives by the core's next wake (an earlier tick
    /// is harmless: the core checks what is due).
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.core.next_wake() else {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        if let Some((scheduled, handle)) = self.timer {
            if scheduled <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.run(Input::Tick, ctx);
        });
        self.timer = Some((at, handle));
    }

    /// Tells the nodeset how far the log is committed.
    fn release(&mut self) {
        let msg = Release {
            loglet: self.loglet,
            global_tail: self.core.committed_tail(),
        };
        for &to in &self.nodeset {
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
        info!(parent: &self.span, base_lsn = %self.core.config().base_lsn, "sequencer started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        info!(parent: &self.span, committed = self.core.committed_tail(), "sequencer stopped");
    }
}

impl Handler<Append> for Sequencer {
    type Result = ResponseFuture<Result<AppendOutcome, SequencerError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        let (token, rx) = oneshot::channel();
        self.run(
            Input::Append {
                token,
                loglet: msg.segment.loglet,
                records: msg.records,
            },
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or(Ok(AppendOutcome::Indeterminate)) })
    }
}

/// Starts sequencers on demand; answers for loglets whose sequencer is gone.
pub struct SequencerManager {
    /// Given to the sequencers it starts.
    net: Net,
    /// Where the sequencer marks are read (and written, by the sequencers).
    storage: Storage,
    /// The live sequencers (the registry only a shell has).
    directory: SequencerDirectory,
    /// Given to the sequencers it starts.
    tuning: SequencerTuning,
    /// The manager's identity for the sequencers' watchdog waits.
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
        // The registry lookup is the one thing here only a shell can do.
        let addr = match self.directory.get(loglet) {
            Some(addr) => addr,
            None => {
                let storage = &self.storage;
                let may = self::core::may_start(&msg.segment, self.net.me(), || {
                    storage.meta.sequencer_was_started(loglet)
                });
                if let Err(e) = may {
                    return Box::pin(async move { Err(e) });
                }
                let addr = Sequencer::new(
                    &msg.segment,
                    self.net.clone(),
                    self.storage.clone(),
                    self.tuning.clone(),
                    self.cx.clone(),
                    self.directory.committed.clone(),
                )
                .start();
                self.directory.insert(loglet, addr.clone());
                addr
            }
        };
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
