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
//! State is applied in batches and flushed periodically (the log is durable;
//! a restarted processor replays from its persisted LSN).

pub mod core;
pub mod messages;

pub use messages::*;

use self::core::{recover, Applied, Applier, Command, Invocation, Outcome, Recovered};
use crate::actors::supervisor::{ChildContext, WaitGuard};
use crate::actors::when_mailbox_drained;
use crate::log::{AppendError, LogClient, Record};
use crate::storage::{PartitionStore, Storage};
use crate::types::{Epoch, LogId, Lsn, NodeId, PartitionId};
use actix::prelude::*;
use futures::stream::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tracing::{info, info_span, warn};

/// Most records read (and applied) in one batch.
const READ_BATCH: usize = 1024;
/// How long one read waits for new records before looking again.
const READ_WAIT: Duration = Duration::from_millis(500);
/// How often applied state is flushed (to report the persisted LSN).
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// Most invocations in one append.
const APPEND_BATCH: usize = 512;
/// How often a leader trims its log below what every replica persisted.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Appends a leader has in flight, at most. A lone request is appended at
/// once; under load, requests gather while both slots are busy and go out
/// together, so batches grow with the load instead of one append (three
/// stores, three flushes, a read and an apply on every replica) per handful.
const MAX_APPENDS_IN_FLIGHT: usize = 2;

/// How many of `pending` go into one append: at most [`APPEND_BATCH`], and
/// no more bytes than one append takes (at least one request). Without the
/// byte bound, a few hundred large requests made an append the log refuses
/// as too large, failing every request in it.
fn batch_len(pending: &[Invocation]) -> usize {
    let mut bytes = 0usize;
    for (i, inv) in pending.iter().take(APPEND_BATCH).enumerate() {
        bytes = bytes.saturating_add(Command::Invoke(inv.clone()).encode().len());
        if i > 0 && bytes > crate::actors::sequencer::MAX_APPEND_BYTES {
            return i;
        }
    }
    pending.len().min(APPEND_BATCH)
}

struct Waiter {
    tx: oneshot::Sender<InvokeReply>,
    deadline: Instant,
    /// Whether its record was handed to the log (outcome unknown until applied).
    appended: bool,
}

pub struct PartitionProcessor {
    partition: PartitionId,
    log: LogId,
    me: NodeId,
    storage: Storage,
    store: PartitionStore,
    logs: LogClient,
    state: Recovered,
    persisted: Lsn,
    mode: Mode,
    /// The epoch this node leads at (Candidate or Leader).
    epoch: Epoch,
    /// What the elector last asked for: lead at this epoch, or follow.
    desired: Option<Epoch>,
    waiters: HashMap<String, Vec<Waiter>>,
    pending: Vec<Invocation>,
    flush_scheduled: bool,
    appends_in_flight: usize,
    last_applied_at: Instant,
    persisting: bool,
    /// Set when storage failed and this incarnation is stopping.
    failed: Option<String>,
    cx: ChildContext,
    /// Held while announcing: a reign that never starts is a stuck wait.
    announcing: Option<WaitGuard>,
    span: tracing::Span,
}

impl PartitionProcessor {
    /// Panics if the partition's state cannot be opened: the supervisor counts
    /// that as a failed start (bounded restarts, then escalation).
    pub fn new(
        partition: PartitionId,
        storage: Storage,
        logs: LogClient,
        cx: ChildContext,
    ) -> Self {
        let store = storage
            .partition(partition)
            .unwrap_or_else(|e| panic!("opening partition {partition} state: {e}"));
        let state =
            recover(&store).unwrap_or_else(|e| panic!("recovering partition {partition}: {e}"));
        let me = logs.net().me();
        PartitionProcessor {
            partition,
            log: LogId::from(partition),
            me,
            storage,
            store,
            logs,
            persisted: state.applied,
            state,
            mode: Mode::Follower,
            epoch: Epoch(0),
            desired: None,
            waiters: HashMap::new(),
            pending: Vec::new(),
            flush_scheduled: false,
            appends_in_flight: 0,
            last_applied_at: Instant::now(),
            persisting: false,
            failed: None,
            cx,
            announcing: None,
            span: info_span!("processor", node = %me, partition = %partition),
        }
    }

    fn read_next(&mut self, ctx: &mut Context<Self>) {
        let logs = self.logs.clone();
        let (log, from) = (self.log, self.state.applied.next());
        ctx.spawn(
            async move { logs.read(log, from, READ_BATCH, READ_WAIT).await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    match result {
                        Ok(records) => act.apply(records, ctx),
                        Err(e) => warn!(parent: &act.span, "reading the log failed: {e}"),
                    }
                    act.read_next(ctx);
                }),
        );
    }

    fn apply(&mut self, records: Vec<(Lsn, Record)>, ctx: &mut Context<Self>) {
        if records.is_empty() {
            return;
        }
        let mut applier = Applier::new(&self.store, self.state);
        let mut outcomes = Vec::new();
        let mut reign = None;
        let result = (|| {
            for (lsn, record) in records {
                if lsn <= applier.applied() {
                    continue;
                }
                match applier.apply(lsn, &record.0)? {
                    Applied::Nothing => {}
                    Applied::Announced {
                        epoch,
                        node,
                        current,
                    } => {
                        if current && node == self.me && epoch == self.epoch {
                            reign = Some(epoch);
                        }
                    }
                    Applied::Request(id, outcome) => outcomes.push((id, outcome)),
                }
            }
            let (announced, leader, clock_ms) =
                (applier.announced, applier.leader, applier.clock_ms());
            let (write, applied) = applier.finish()?;
            self.store.apply(write)?;
            Ok::<_, crate::storage::StorageError>((announced, leader, clock_ms, applied))
        })();
        let (announced, leader, clock_ms, applied) = match result {
            Ok(done) => done,
            Err(e) => {
                // Never read a storage failure as "absent" and never write
                // half a batch: stop; the supervisor restarts this processor,
                // which replays from its last durable LSN. (A store write cut
                // short is completed when the store is reopened.)
                warn!(parent: &self.span, "storage failed while applying: {e}; restarting");
                self.failed = Some(e.to_string());
                ctx.stop();
                return;
            }
        };
        self.state.announced = announced;
        self.state.leader = leader;
        self.state.clock_ms = clock_ms;
        self.state.applied = applied;
        self.last_applied_at = Instant::now();
        for (id, outcome) in outcomes {
            let reply = match outcome {
                Outcome::Done(response) => InvokeReply::Done(response),
                Outcome::Fenced { .. } => InvokeReply::Fenced,
            };
            for waiter in self.waiters.remove(&id).unwrap_or_default() {
                let _ = waiter.tx.send(reply.clone());
            }
        }
        if let Some(epoch) = reign {
            if self.mode == Mode::Candidate {
                info!(parent: &self.span, %epoch, lsn = %applied, "reign started");
                self.mode = Mode::Leader;
                self.announcing = None;
                self.move_sequencer_here();
            }
        }
        if self.mode != Mode::Follower && self.state.announced > self.epoch {
            info!(parent: &self.span, announced = %self.state.announced, "deposed by a newer epoch");
            self.step_down(self.state.leader);
        }
        if self.state.announced > self.epoch && !self.waiters.is_empty() {
            // Every request still waiting here was stamped with an older epoch
            // and was not applied before the newer announcement: whatever of
            // it is in the log now is fenced. Say so at once, so the ingress
            // retries at the new leader instead of waiting out its deadline.
            for (_, waiters) in self.waiters.drain() {
                for w in waiters {
                    let _ = w.tx.send(InvokeReply::Fenced);
                }
            }
        }
    }

    /// A new leader seals the tail segment if its sequencer is elsewhere, so
    /// appends no longer depend on the previous leader's node.
    fn move_sequencer_here(&self) {
        let logs = self.logs.clone();
        let log = self.log;
        let me = self.me;
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

    fn step_down(&mut self, leader: Option<NodeId>) {
        self.mode = Mode::Follower;
        self.announcing = None;
        self.pending.clear();
        // Requests never handed to the log certainly did not happen; the
        // others will be answered when their records apply (fenced or done)
        // or at their deadline.
        for waiters in self.waiters.values_mut() {
            waiters.retain_mut(|w| {
                if w.appended {
                    return true;
                }
                let (tx, _) = oneshot::channel();
                let tx = std::mem::replace(&mut w.tx, tx);
                let _ = tx.send(InvokeReply::NotLeader { leader });
                false
            });
        }
        self.waiters.retain(|_, w| !w.is_empty());
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled
            && !self.pending.is_empty()
            && self.appends_in_flight < MAX_APPENDS_IN_FLIGHT
        {
            self.flush_scheduled = true;
            // Every request already queued joins the batch.
            when_mailbox_drained(ctx, |act: &mut Self, ctx| {
                act.flush_scheduled = false;
                while !act.pending.is_empty() && act.appends_in_flight < MAX_APPENDS_IN_FLIGHT {
                    let n = batch_len(&act.pending);
                    let batch: Vec<Invocation> = act.pending.drain(..n).collect();
                    act.append(batch, ctx);
                }
            });
        }
    }

    /// Appends `batch`; retries (same request ids) while any of its requests
    /// still waits and this node still leads at the same epoch.
    fn append(&mut self, batch: Vec<Invocation>, ctx: &mut Context<Self>) {
        for inv in &batch {
            for w in self.waiters.get_mut(&inv.request_id).into_iter().flatten() {
                w.appended = true;
            }
        }
        let records: Vec<Record> = batch
            .iter()
            .map(|inv| Record(Command::Invoke(inv.clone()).encode()))
            .collect();
        let logs = self.logs.clone();
        let log = self.log;
        let deadline = batch
            .iter()
            .filter_map(|inv| self.waiters.get(&inv.request_id))
            .flatten()
            .map(|w| w.deadline)
            .max()
            .unwrap_or_else(Instant::now);
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let epoch = self.epoch;
        self.appends_in_flight += 1;
        ctx.spawn(
            async move { logs.append(log, records, timeout).await }
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(_) => {}
                    Err(AppendError::TooLarge { .. }) | Err(AppendError::UnknownLog(_)) => {
                        let reason = result.unwrap_err().to_string();
                        for inv in &batch {
                            for w in act.waiters.remove(&inv.request_id).unwrap_or_default() {
                                let _ = w.tx.send(InvokeReply::Unavailable(reason.clone()));
                            }
                        }
                    }
                    Err(e) => {
                        let still_waiting: Vec<Invocation> = batch
                            .into_iter()
                            .filter(|inv| {
                                act.waiters
                                    .get(&inv.request_id)
                                    .is_some_and(|ws| ws.iter().any(|w| w.deadline > Instant::now()))
                            })
                            .collect();
                        if act.mode != Mode::Follower && act.epoch == epoch && !still_waiting.is_empty() {
                            warn!(parent: &act.span, "append failed ({e}); retrying {} requests", still_waiting.len());
                            act.append(still_waiting, ctx);
                        }
                    }
                })
                // A retry above took its own slot; this one is free again,
                // and requests that gathered meanwhile may go.
                .map(|(), act, ctx| {
                    act.appends_in_flight -= 1;
                    act.schedule_flush(ctx);
                }),
        );
    }

    /// Answers waiters whose deadline passed (their outcome is unknown).
    fn expire_waiters(&mut self) {
        let now = Instant::now();
        for waiters in self.waiters.values_mut() {
            waiters.retain_mut(|w| {
                if w.deadline > now {
                    return true;
                }
                let (tx, _) = oneshot::channel();
                let tx = std::mem::replace(&mut w.tx, tx);
                let _ = tx.send(if w.appended {
                    InvokeReply::Timeout
                } else {
                    InvokeReply::Unavailable(
                        "deadline passed before the request was appended".into(),
                    )
                });
                false
            });
        }
        self.waiters.retain(|_, w| !w.is_empty());
    }

    fn persist(&mut self, ctx: &mut Context<Self>) {
        if self.persisting || self.persisted >= self.state.applied {
            return;
        }
        self.persisting = true;
        let storage = self.storage.clone();
        let upto = self.state.applied;
        ctx.spawn(
            async move { storage.sync_state().await }
                .into_actor(self)
                .map(move |r, act, _| {
                    act.persisting = false;
                    if r.is_ok() {
                        act.persisted = act.persisted.max(upto);
                    }
                }),
        );
    }

    /// The leader trims the log below the smallest persisted LSN of all
    /// replicas (a replica that does not answer blocks trimming: it may need
    /// the log to catch up).
    fn trim(&self) {
        if self.mode != Mode::Leader {
            return;
        }
        let (logs, log, partition, mine) =
            (self.logs.clone(), self.log, self.partition, self.persisted);
        tokio::spawn(async move {
            let net = logs.net().clone();
            let others: Vec<NodeId> = net
                .nodes()
                .iter()
                .copied()
                .filter(|n| *n != net.me())
                .collect();
            let mut replies = net.broadcast(
                &others,
                || GetPersisted { partition },
                Duration::from_secs(1),
            );
            let mut lowest = mine;
            while let Some((_, reply)) = replies.next().await {
                match reply {
                    Ok(lsn) => lowest = lowest.min(lsn),
                    Err(_) => return,
                }
            }
            if lowest.0 > 0 {
                logs.trim(log, lowest.next()).await;
            }
        });
    }

    fn status(&self) -> ProcessorStatus {
        let status = match self.mode {
            _ if self.failed.is_some() => "StorageFailed",
            Mode::Candidate => "Announcing",
            Mode::Leader
                if self.logs.net().reachable()
                    < crate::actors::quorum::majority(self.logs.net().nodes().len()) =>
            {
                "NoMajority"
            }
            _ if self.last_applied_at.elapsed() > Duration::from_secs(5) => "Idle",
            _ => "Active",
        };
        ProcessorStatus {
            partition: self.partition,
            mode: self.mode,
            status: status.to_string(),
            epoch: self.state.announced,
            leader: self.state.leader,
            applied_lsn: self.state.applied,
            persisted_lsn: self.persisted,
            last_update_ms: self.last_applied_at.elapsed().as_millis() as u64,
            pending_requests: self.waiters.values().map(|w| w.len()).sum(),
        }
    }
}

impl Actor for PartitionProcessor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(8192);
        info!(parent: &self.span, applied = %self.state.applied, epoch = %self.state.announced, "processor started");
        self.read_next(ctx);
        ctx.run_interval(PERSIST_EVERY, |act, ctx| {
            act.expire_waiters();
            act.persist(ctx);
        });
        ctx.run_interval(TRIM_EVERY, |act, _| act.trim());
    }
}

impl Handler<BecomeLeader> for PartitionProcessor {
    type Result = ();

    fn handle(&mut self, msg: BecomeLeader, ctx: &mut Self::Context) {
        self.desired = Some(msg.epoch);
        self.announce(msg.epoch, ctx);
    }
}

impl PartitionProcessor {
    fn announce(&mut self, epoch: Epoch, ctx: &mut Context<Self>) {
        if self.desired != Some(epoch) || (self.mode != Mode::Follower && self.epoch == epoch) {
            return;
        }
        let msg = BecomeLeader { epoch };
        info!(parent: &self.span, epoch = %msg.epoch, "announcing leadership");
        self.mode = Mode::Candidate;
        self.epoch = msg.epoch;
        if self.announcing.is_none() {
            self.announcing = Some(self.cx.register_wait(
                format!("reign of epoch {} (own announcement applied)", msg.epoch),
                Duration::from_secs(20),
            ));
        }
        let logs = self.logs.clone();
        let log = self.log;
        let me = self.me;
        let epoch = msg.epoch;
        ctx.spawn(
            async move {
                let record = Record(Command::AnnounceLeader { epoch, node: me }.encode());
                // Retry until it is in the log or we are no longer candidate
                // (checked by the caller on each failure).
                logs.append(log, vec![record], Duration::from_secs(5)).await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                if let Err(e) = result {
                    if act.mode == Mode::Candidate && act.epoch == epoch {
                        warn!(parent: &act.span, %epoch, "announcement not appended ({e}); retrying");
                        act.mode = Mode::Follower;
                        ctx.run_later(Duration::from_millis(200), move |act, ctx| act.announce(epoch, ctx));
                    }
                }
            }),
        );
    }
}

impl Handler<BecomeFollower> for PartitionProcessor {
    type Result = ();

    fn handle(&mut self, msg: BecomeFollower, _: &mut Self::Context) {
        self.desired = None;
        if self.mode != Mode::Follower {
            info!(parent: &self.span, leader = ?msg.leader, "stepping down");
            self.step_down(msg.leader);
        }
    }
}

impl Handler<Invoke> for PartitionProcessor {
    type Result = ResponseFuture<InvokeReply>;

    fn handle(&mut self, msg: Invoke, ctx: &mut Self::Context) -> Self::Result {
        let reply = |r: InvokeReply| -> ResponseFuture<InvokeReply> { Box::pin(async move { r }) };
        // A peer's request is checked as the ingress checks a client's: a
        // malformed one is answered (400, certainly not applied) and never
        // joins a batch, where it would fail every request with it.
        if let Err(why) = msg.check(self.partition, self.logs.log_count()) {
            let err =
                core::Response::error(&crate::ingress::objects::HandlerError::BadArgument(why));
            return reply(InvokeReply::Done(err));
        }
        if self.mode != Mode::Leader {
            let leader = self.state.leader.filter(|l| *l != self.me);
            return reply(match self.mode {
                Mode::Candidate => {
                    InvokeReply::Unavailable("leader is announcing its reign".into())
                }
                _ => InvokeReply::NotLeader { leader },
            });
        }
        let net = self.logs.net();
        if net.reachable() < crate::actors::quorum::majority(net.nodes().len()) {
            return reply(InvokeReply::Unavailable(
                "leader cannot reach a majority".into(),
            ));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // A repeat of a request already applied is answered from its stored
        // result (an optimisation: applying it again would find the same).
        match Applier::new(&self.store, self.state).dedup(&msg.request_id, now_ms) {
            Ok(Some(response)) => return reply(InvokeReply::Done(response)),
            Ok(None) => {}
            Err(e) => return reply(InvokeReply::Unavailable(format!("storage failed: {e}"))),
        }
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_millis(msg.timeout_ms.clamp(1, 60_000));
        let known = self.waiters.contains_key(&msg.request_id);
        // A repeat of a request already handed to the log shares its fate.
        let appended = self
            .waiters
            .get(&msg.request_id)
            .is_some_and(|ws| ws.iter().any(|w| w.appended));
        self.waiters
            .entry(msg.request_id.clone())
            .or_default()
            .push(Waiter {
                tx,
                deadline,
                appended,
            });
        if !known {
            self.pending.push(Invocation {
                epoch: self.epoch,
                request_id: msg.request_id,
                timestamp_ms: now_ms,
                object: msg.object,
                key: msg.key,
                handler: msg.handler,
                arg: msg.arg,
            });
            self.schedule_flush(ctx);
        }
        Box::pin(async move { rx.await.unwrap_or(InvokeReply::Timeout) })
    }
}

impl Handler<GetPersisted> for PartitionProcessor {
    type Result = MessageResult<GetPersisted>;

    fn handle(&mut self, _: GetPersisted, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.persisted)
    }
}

impl Handler<GetProcessorStatus> for PartitionProcessor {
    type Result = MessageResult<GetProcessorStatus>;

    fn handle(&mut self, _: GetProcessorStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<crate::actors::supervisor::Ping> for PartitionProcessor {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::objects::ObjectType;

    fn inv(arg_bytes: usize) -> Invocation {
        Invocation {
            epoch: Epoch(1),
            request_id: "g:1".into(),
            timestamp_ms: 0,
            object: ObjectType::Register,
            key: "k".into(),
            handler: "write".into(),
            arg: vec![b'1'; arg_bytes],
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        assert_eq!(batch_len(&vec![inv(1); 1000]), APPEND_BATCH);
        assert_eq!(batch_len(&[inv(1), inv(1)]), 2);
        // 128 KiB arguments: 32 of them fill a 4 MiB append.
        let big = vec![inv(128 * 1024); 100];
        let n = batch_len(&big);
        assert!(n < 32 && n > 16, "{n}");
        let bytes: usize = big[..n]
            .iter()
            .map(|i| Command::Invoke(i.clone()).encode().len())
            .sum();
        assert!(bytes <= crate::actors::sequencer::MAX_APPEND_BYTES);
        // One request over the limit still goes alone (and fails alone).
        assert_eq!(batch_len(&[inv(5 << 20), inv(1)]), 1);
    }
}
