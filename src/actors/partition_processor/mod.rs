//! The partition processor: one per partition and node. It follows the
//! partition's log and applies every record, in LSN order, to durable state
//! (see `core.rs`); on the leader it also turns requests into records and
//! answers each once its record is applied.
//!
//! Leadership comes from the elector (`BecomeLeader{epoch}`), but the reign
//! starts only when the processor applies its own `AnnounceLeader{epoch}`;
//! then it moves the log's sequencer next to itself. Requests append in
//! batches; an append whose outcome is unknown is retried with the same
//! request id (applied once, by dedup) until the request's deadline.
//!
//! State is applied in batches and synced periodically (the log is durable;
//! a restarted processor replays from its persisted LSN).
//!
//! Snapshots ([`snapshots`]): the core reads its store's entries inside this
//! actor's handler (the actor is the store's only writer, so entries and the
//! applied LSN are a consistent cut); the shell syncs the state lane, then
//! writes the file off the actor thread and feeds the result back. Peers'
//! `GetSnapshot` requests are served from the snapshot directory; a core
//! behind the trim point gets a verified snapshot fetched from the peers and
//! restores it itself, in one atomic write, within its handler.
//!
//! Every rule lives in the cores: [`lifecycle`] ([`ProcessorCore`]: the
//! reign, requests, batching, retries, persistence, trimming) and [`core`]
//! (the state machine). This module is the actix shell: it feeds the core
//! the clock and the failure detector's verdicts (`Net::env`), requests and
//! role changes from its mailbox and the results of the futures it spawns
//! for the core's effects, and wakes the core when it asks to be.

pub mod core;
pub mod lifecycle;
pub mod messages;
pub mod outbox;
pub mod snapshots;

pub use lifecycle::{ProcessorConfig, ProcessorCore, ProcessorEffect, ProcessorInput, WallClock};
pub use messages::*;
pub use snapshots::SnapshotSettings;

use crate::actors::bugs::BugSet;
use crate::actors::leader_elector::leader_of;
use crate::actors::metadata::MetadataClient;
use crate::actors::supervisor::{ChildContext, WaitGuard};
use crate::actors::when_mailbox_drained;
use crate::log::LogClient;
use crate::objects::Objects;
use crate::storage::{PartitionStore, Storage};
use crate::types::{LogId, Lsn, NodeId, PartitionId};
use actix::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tracing::{info, info_span, warn};

/// A processor step at least this long is logged: the partition served
/// nothing meanwhile, so every request to it waited that long.
const SLOW_STEP: Duration = Duration::from_millis(20);

/// The actix shell of a [`ProcessorCore`].
/// How often the processor tells its core who sequences its log's tail.
const TAIL_SEQUENCER_EVERY: Duration = Duration::from_secs(1);

pub struct PartitionProcessor {
    /// The rules, over this node's state of the partition.
    core: ProcessorCore<PartitionStore>,
    /// The partition's log.
    log: LogId,
    /// Syncs the state lane.
    storage: Storage,
    /// Appends, reads, trims and seals the log; its `Net` calls peers.
    logs: LogClient,
    /// Requests waiting for the core's reply, by token.
    waiting: BTreeMap<lifecycle::Token, oneshot::Sender<InvokeReply>>,
    /// The next token.
    next_token: lifecycle::Token,
    /// Registers this incarnation's waits with the watchdog.
    cx: ChildContext,
    /// The wait the core asked to be watched (a reign that never starts).
    watch: Option<WaitGuard>,
    /// The wake-up the core asked for, and its timer.
    timer: Option<(Instant, SpawnHandle)>,
    /// This processor's log span.
    span: tracing::Span,
    /// Where snapshots are kept, how often taken, how many retained.
    snapshots: SnapshotSettings,
    /// Operators waiting for a snapshot, by token.
    snapshot_waiting: BTreeMap<lifecycle::Token, oneshot::Sender<Result<SnapshotTaken, String>>>,
    /// Finds other partitions' leaders (the register's cache), for
    /// deliveries from the outbox.
    meta: MetadataClient,
}

/// What a node gives each of its partition processors besides its storage
/// and log.
#[derive(Clone)]
pub struct ProcessorOptions {
    /// Where snapshots are kept, how often taken, how many retained.
    pub snapshots: SnapshotSettings,
    /// How long client-keyed results are kept (the node's configured value,
    /// written into the records it appends as leader).
    pub idempotency_retention_ms: u64,
    /// The object types served.
    pub objects: Objects,
    /// The register's client, to find other partitions' leaders.
    pub meta: MetadataClient,
}

impl PartitionProcessor {
    /// Panics if the partition's state cannot be opened: the supervisor counts
    /// that as a failed start (bounded restarts, then escalation).
    pub fn new(
        partition: PartitionId,
        storage: Storage,
        logs: LogClient,
        cx: ChildContext,
        options: ProcessorOptions,
    ) -> Self {
        let ProcessorOptions {
            snapshots,
            idempotency_retention_ms,
            objects,
            meta,
        } = options;
        let store = storage
            .partition(partition)
            .unwrap_or_else(|e| panic!("opening partition {partition} state: {e}"));
        // What this node holds now, as a restarted node finds it on disk.
        let held = snapshots.dir.latest(partition).unwrap_or_else(|e| {
            warn!(%partition, "listing snapshots failed: {e}");
            None
        });
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let config = ProcessorConfig {
            partition,
            partitions: logs.log_count(),
            wall_clock: WallClock {
                at: Instant::now(),
                unix_ms,
            },
            bugs: BugSet::NONE,
            snapshot_every: snapshots.every,
            snapshot_held: held,
            idempotency_retention_ms,
            objects,
        };
        let core = ProcessorCore::new(config, store)
            .unwrap_or_else(|e| panic!("recovering partition {partition}: {e}"));
        let me = logs.net().me();
        PartitionProcessor {
            core,
            log: LogId::from(partition),
            storage,
            logs,
            waiting: BTreeMap::new(),
            next_token: 1,
            cx,
            watch: None,
            timer: None,
            span: info_span!("processor", node = %me, partition = %partition),
            snapshots,
            snapshot_waiting: BTreeMap::new(),
            meta,
        }
    }

    fn partition(&self) -> PartitionId {
        PartitionId(self.log.0)
    }

    /// Fetches a snapshot at `at_least` or later: the peers that hold one,
    /// the newest first, each tried in turn.
    fn fetch_snapshot(&mut self, at_least: Lsn, ctx: &mut Context<Self>) {
        let (net, partition) = (self.logs.net().clone(), self.partition());
        ctx.spawn(
            async move { snapshots::probe(&net, partition, at_least).await }
                .into_actor(self)
                .map(move |found, act, ctx| {
                    act.fetch_from(found.into(), at_least, None, ctx);
                }),
        );
    }

    fn fetch_from(
        &mut self,
        mut candidates: VecDeque<(NodeId, Lsn)>,
        at_least: Lsn,
        failed: Option<FetchError>,
        ctx: &mut Context<Self>,
    ) {
        let Some((from, lsn)) = candidates.pop_front() else {
            let error = failed.unwrap_or(FetchError::NoneHeld { at_least });
            return self.run(ProcessorInput::SnapshotFetched { result: Err(error) }, ctx);
        };
        self.run(ProcessorInput::SnapshotSource { from, lsn }, ctx);
        let (net, partition) = (self.logs.net().clone(), self.partition());
        ctx.spawn(
            async move { snapshots::download(&net, from, partition, lsn).await }
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(snapshot) => act.run(
                        ProcessorInput::SnapshotFetched {
                            result: Ok(snapshot),
                        },
                        ctx,
                    ),
                    Err(e) => {
                        warn!(parent: &act.span, "snapshot fetch failed: {e}");
                        act.fetch_from(candidates, at_least, Some(e), ctx);
                    }
                }),
        );
    }

    /// Feeds `input` to the core and carries out its effects.
    fn run(&mut self, input: ProcessorInput, ctx: &mut Context<Self>) {
        let env = self.logs.net().env();
        let kind = input.kind();
        let started = Instant::now();
        let effects = self.core.handle(&env, input);
        let took = started.elapsed();
        if took >= SLOW_STEP {
            // A snapshot's read or a large batch, usually.
            tracing::info!(partition = %self.core.config().partition, input = kind, took_ms = took.as_millis() as u64, "slow processor step");
        }
        for effect in effects {
            self.carry_out(effect, ctx);
        }
        self.arm(ctx);
    }

    /// Keeps one timer, at the core's `next_wake`.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.core.next_wake() else {
            return;
        };
        if let Some((armed, handle)) = self.timer {
            if armed == at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.run(ProcessorInput::Tick, ctx);
        });
        self.timer = Some((at, handle));
    }

    fn carry_out(&mut self, effect: ProcessorEffect, ctx: &mut Context<Self>) {
        match effect {
            ProcessorEffect::Reply { token, reply } => {
                if let Some(tx) = self.waiting.remove(&token) {
                    let _ = tx.send(reply);
                }
            }
            // Answered where the request is handled.
            ProcessorEffect::RespondPersisted { .. } => {}
            ProcessorEffect::Append {
                op,
                records,
                timeout,
            } => {
                let (logs, log) = (self.logs.clone(), self.log);
                ctx.spawn(
                    async move { logs.append(log, records, timeout).await }
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            act.run(ProcessorInput::Appended { op, result }, ctx)
                        }),
                );
            }
            ProcessorEffect::Read { from, max, wait } => {
                let (logs, log) = (self.logs.clone(), self.log);
                ctx.spawn(
                    async move { logs.read(log, from, max, wait).await }
                        .into_actor(self)
                        .map(|records, act, ctx| act.run(ProcessorInput::Records { records }, ctx)),
                );
            }
            ProcessorEffect::SyncState { upto } => {
                let storage = self.storage.clone();
                ctx.spawn(
                    async move { storage.sync_state().await }
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            act.run(ProcessorInput::Persisted { upto, result }, ctx)
                        }),
                );
            }
            ProcessorEffect::Call {
                to,
                call,
                req,
                timeout,
            } => {
                let net = self.logs.net().clone();
                ctx.spawn(
                    async move { net.call(to, req, timeout).await }
                        .into_actor(self)
                        .map(move |reply, act, ctx| {
                            act.run(
                                ProcessorInput::PersistedOf {
                                    call,
                                    node: to,
                                    reply,
                                },
                                ctx,
                            )
                        }),
                );
            }
            ProcessorEffect::Trim { below } => {
                let (logs, log) = (self.logs.clone(), self.log);
                tokio::spawn(async move { logs.trim(log, below).await });
            }
            ProcessorEffect::MoveSequencerHere => self.move_sequencer_here(),
            ProcessorEffect::Drain => {
                when_mailbox_drained(ctx, |act: &mut Self, ctx| {
                    act.run(ProcessorInput::Drained, ctx)
                });
            }
            ProcessorEffect::Watch { what, limit } => {
                self.watch = Some(self.cx.register_wait(what, limit));
            }
            ProcessorEffect::Unwatch => self.watch = None,
            ProcessorEffect::Stop { .. } => ctx.stop(),
            ProcessorEffect::WriteSnapshot { snapshot } => {
                let (storage, settings) = (self.storage.clone(), self.snapshots.clone());
                let lsn = snapshot.lsn;
                ctx.spawn(
                    snapshots::write(storage, settings, snapshot)
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            act.run(ProcessorInput::SnapshotWritten { lsn, result }, ctx)
                        }),
                );
            }
            ProcessorEffect::SnapshotDone { token, result } => {
                if let Some(tx) = self.snapshot_waiting.remove(&token) {
                    let partition = self.partition();
                    let path = |lsn| self.snapshots.dir.path(partition, lsn);
                    let _ = tx.send(result.map(|lsn| SnapshotTaken {
                        partition,
                        lsn,
                        path: path(lsn).display().to_string(),
                    }));
                }
            }
            ProcessorEffect::FetchSnapshot { at_least } => self.fetch_snapshot(at_least, ctx),
            ProcessorEffect::Deliver {
                call,
                to,
                fresh,
                req,
                timeout,
            } => {
                let (net, meta) = (self.logs.net().clone(), self.meta.clone());
                ctx.spawn(
                    async move {
                        let leader = match to {
                            Some(node) => node,
                            None => {
                                let lookup = timeout.min(Duration::from_millis(500));
                                leader_of(&meta, req.partition, lookup, fresh).await?
                            }
                        };
                        net.call(leader, req, timeout)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .into_actor(self)
                    .map(move |reply, act, ctx| {
                        act.run(ProcessorInput::Delivered { call, reply }, ctx)
                    }),
                );
            }
        }
    }

    /// Seals the tail segment if its sequencer is elsewhere, so appends no
    /// longer depend on the previous leader's node.
    fn move_sequencer_here(&self) {
        let logs = self.logs.clone();
        let log = self.log;
        let me = self.logs.net().me();
        tokio::spawn(async move {
            let chain = match logs.refresh_chain(log, Duration::from_secs(3)).await {
                Ok(c) => c,
                Err(_) => return,
            };
            if chain.tail().sequencer != me {
                let timeout = logs.config().seal_timeout;
                if let Err(e) = logs.seal_and_extend(chain.tail(), timeout).await {
                    warn!(%log, "moving the sequencer to the leader failed: {e}");
                }
            }
        });
    }
}

impl Actor for PartitionProcessor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(8192);
        let state = self.core.state();
        info!(parent: &self.span, applied = %state.applied, epoch = %state.announced, "processor started");
        self.run(ProcessorInput::Tick, ctx);
        // The core decides whether a sick sequencer moves here; this only
        // tells it, from the chain this node has cached, who sequences.
        ctx.run_interval(TAIL_SEQUENCER_EVERY, |act, ctx| {
            let Some(chain) = act.logs.cached_chain(act.log) else {
                return;
            };
            let sequencer = chain.tail().sequencer;
            let net = act.logs.net();
            let sick = net.is_suspected(sequencer) || net.is_degraded(sequencer);
            act.run(ProcessorInput::TailSequencer { sequencer, sick }, ctx);
        });
    }
}

impl Handler<BecomeLeader> for PartitionProcessor {
    type Result = ();

    fn handle(&mut self, msg: BecomeLeader, ctx: &mut Self::Context) {
        self.run(ProcessorInput::BecomeLeader { epoch: msg.epoch }, ctx);
    }
}

impl Handler<BecomeFollower> for PartitionProcessor {
    type Result = ();

    fn handle(&mut self, msg: BecomeFollower, ctx: &mut Self::Context) {
        self.run(ProcessorInput::BecomeFollower { leader: msg.leader }, ctx);
    }
}

impl PartitionProcessor {
    /// Feeds the core the input `with(token)` and answers with the reply
    /// the core gives that token. A core that stopped (or a shell that
    /// dropped the request) leaves its outcome unknown.
    fn ask(
        &mut self,
        with: impl FnOnce(lifecycle::Token) -> ProcessorInput,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<InvokeReply> {
        let token = self.next_token;
        self.next_token += 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(token, tx);
        self.run(with(token), ctx);
        Box::pin(async move { rx.await.unwrap_or(InvokeReply::Timeout) })
    }
}

impl Handler<Invoke> for PartitionProcessor {
    type Result = ResponseFuture<InvokeReply>;

    fn handle(&mut self, req: Invoke, ctx: &mut Self::Context) -> Self::Result {
        self.ask(|token| ProcessorInput::Invoke { token, req }, ctx)
    }
}

impl Handler<Deliver> for PartitionProcessor {
    type Result = ResponseFuture<InvokeReply>;

    fn handle(&mut self, req: Deliver, ctx: &mut Self::Context) -> Self::Result {
        self.ask(|token| ProcessorInput::Deliver { token, req }, ctx)
    }
}

impl Handler<GetPersisted> for PartitionProcessor {
    type Result = MessageResult<GetPersisted>;

    fn handle(&mut self, _: GetPersisted, ctx: &mut Self::Context) -> Self::Result {
        let env = self.logs.net().env();
        let mut answer = self.core.persisted_reply();
        for effect in self
            .core
            .handle(&env, ProcessorInput::GetPersisted { token: 0 })
        {
            match effect {
                ProcessorEffect::RespondPersisted { reply, .. } => answer = reply,
                other => self.carry_out(other, ctx),
            }
        }
        self.arm(ctx);
        MessageResult(answer)
    }
}

impl Handler<GetSnapshot> for PartitionProcessor {
    type Result = ResponseFuture<Result<SnapshotChunk, SnapshotServeError>>;

    fn handle(&mut self, req: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        let (dir, partition) = (self.snapshots.dir.clone(), self.partition());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || snapshots::serve(&dir, partition, &req))
                .await
                .unwrap_or_else(|e| Err(SnapshotServeError::Unreadable(e.to_string())))
        })
    }
}

impl Handler<TakeSnapshot> for PartitionProcessor {
    type Result = ResponseFuture<Result<SnapshotTaken, String>>;

    fn handle(&mut self, _: TakeSnapshot, ctx: &mut Self::Context) -> Self::Result {
        let token = self.next_token;
        self.next_token += 1;
        let (tx, rx) = oneshot::channel();
        self.snapshot_waiting.insert(token, tx);
        self.run(ProcessorInput::TakeSnapshot { token }, ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err("the processor stopped before the snapshot was written".into())
            })
        })
    }
}

impl Handler<GetProcessorStatus> for PartitionProcessor {
    type Result = MessageResult<GetProcessorStatus>;

    fn handle(&mut self, _: GetProcessorStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.status(&self.logs.net().env()))
    }
}

impl Handler<crate::actors::supervisor::Ping> for PartitionProcessor {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
