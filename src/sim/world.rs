//! The simulated world: the nodes, the network, the clock and event queue,
//! the failure detector, the clients and the fault schedule, all driven by
//! one seeded RNG. Every effect a core returns is carried out here, the way
//! the actix shells carry them out in a real node:
//! - calls go through [`SimNet`] (delay, loss, duplication, cuts) and get
//!   exactly one answer: the reply, or a [`CallError`] at their timeout
//!   (`Timeout` if the request may have arrived, `Unavailable` if the link
//!   is cut or the target is down when it is sent);
//! - writes go to the node's [`SimDisk`](super::disk::SimDisk) at once; a
//!   sync completes after a short disk latency, and only then is an answer
//!   that depends on it sent (a crash in between loses it);
//! - timers are wake-up events at the cores' `next_wake`;
//! - local services (the proposer, the sealer, the log client, the
//!   log-server's store) are called directly on the same node;
//! - a processor's snapshot is the store's entries it hands over, kept per
//!   node and partition once the state lane's sync completed (it survives a
//!   crash, as an fsynced file does); a fetch asks the other nodes in turn
//!   over the simulated network for theirs.

mod rejoin;

pub use self::rejoin::{RejoinCall, SimRejoin};
use super::client::{ClientAction, Clients};
use super::faults::{Fault, Schedule};
use super::net::{LinkConfig, SimNet};
use super::node::{LogFrom, MetaFrom, Node, NodeSetup, ReplyTo};
use super::register_client::{
    RegisterAction, RegisterClients, REGISTER_KEY, REGISTER_OP_TIMEOUT, REGISTER_THINK_US,
};
use super::scheduler::Scheduler;
use super::trace::Trace;
use crate::actors::env::Env;
use crate::actors::leader_elector::{
    ElectorEffect, ElectorInput, Leadership, MetaChange, MetaResult, PreVote, PreVoteReply, Told,
};
use crate::actors::log_server::core::{
    Effect as LsEffect, Input as LsInput, Request as LsRequest, Response as LsResponse, Token,
};
use crate::actors::log_server::{Release, TailInfo};
use crate::actors::metadata::core::{AcceptReply, Versioned};
use crate::actors::metadata::core::{AcceptorEffect, AcceptorInput};
use crate::actors::metadata::proposer::{Change, Outcome};
use crate::actors::metadata::proposer_core::{CallId as PCallId, ProposerEffect, ProposerInput};
use crate::actors::metadata::{
    AcceptorRequest, AcceptorResponse, CasOutcome, MetaError, MetaUpdate,
};
use crate::actors::partition_processor::{
    Deliver, FetchError, GetPersisted, Invoke, InvokeReply, Mode, PersistedReply, ProcessorEffect,
    ProcessorInput,
};
use crate::actors::rejoin::log as rejoin_log;
use crate::actors::sealer::core::{SealerEffect, SealerInput};
use crate::actors::sealer::SealError;
use crate::actors::sequencer::core::{
    may_start, Effect as SeqEffect, Input as SeqInput, SequencerConfig, SequencerCore,
    SequencerTuning,
};
use crate::actors::sequencer::{Append, SequencerError};
use crate::log::calls::{Request as LogRequest, Response as LogResponse};
use crate::log::core::{Effect as LogEffect, Input as LogInput, OpId as LogOpId, OpResult};
use crate::log::{chain_key, Chain};
use crate::node::CallError;
use crate::sim::disk::Lane;
use crate::storage::Snapshot;
use crate::transport::health::{PeerSample, SAMPLE_EVERY};
use crate::types::{LogId, LogletId, Lsn, NodeId, PartitionId};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A request between nodes (or from a client).
#[derive(Clone, Debug)]
pub enum Req {
    /// To the log-server.
    Log(LogRequest),
    /// Metadata phase 1 or 2, to the acceptor.
    Phase(AcceptorRequest),
    /// To partition `p`'s elector.
    PreVote(PreVote),
    /// To a partition's processor.
    Persisted(GetPersisted),
    /// A partition's newest snapshot at `at_least` or later, to the node
    /// holding it.
    Snapshot { p: usize, at_least: Lsn },
    /// A client's request, to a partition's processor.
    Invoke(Invoke),
    /// Another partition's messages, to a partition's processor.
    Deliver(Deliver),
    /// The keys a node's acceptor holds state for (a rejoin's listing).
    ListKeys,
}

/// The answer to a [`Req`].
#[derive(Clone, Debug)]
pub enum Resp {
    /// From the log-server or a sequencer.
    Log(LogResponse),
    /// From the acceptor.
    Phase(AcceptorResponse),
    /// From an elector.
    PreVote(PreVoteReply),
    /// From a processor.
    Persisted(PersistedReply),
    /// A node's snapshot, or why it has none to give.
    Snapshot(Result<Snapshot, String>),
    /// From a processor, to a client.
    Invoke(InvokeReply),
    /// An acceptor's keys with their accepted versions, or why it cannot
    /// list them (it rejoins too).
    Keys(Result<Vec<(String, u64)>, String>),
}

/// A message on the network.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A call `id`, answered to `reply_to`.
    Request { reply_to: ReplyTo, req: Req },
    /// The answer to call `id`.
    Reply { id: u64, resp: Resp },
    /// One-way: a sequencer's committed tail.
    Release(Release),
    /// One-way: a register value was chosen.
    MetaUpdate(MetaUpdate),
}

/// What waits for a sync of a node's lane.
#[derive(Clone, Debug)]
pub enum AfterSync {
    /// Answer a served request.
    Answer { token: u64, resp: Resp },
    /// Tell a sequencer its start mark is durable.
    Mark(LogletId),
    /// Tell partition `p`'s processor its state is synced up to `upto`.
    Persisted { p: usize, upto: Lsn },
    /// Keep partition `p`'s snapshot and tell its processor.
    Snapshot { p: usize, snapshot: Snapshot },
    /// A rejoin's fence marks are durable.
    Fenced,
    /// A rejoin cleared `loglet`'s lost mark durably.
    Cleared { loglet: LogletId },
}

/// Everything that can happen.
#[derive(Clone, Debug)]
pub enum Event {
    /// A message arrives at node `to` (or a client, for replies to clients).
    Deliver { to: Dest, msg: Msg },
    /// Node `node`'s cores may have timers due.
    Wake { node: usize, inc: u64 },
    /// A sync of `lane` on `node` completes.
    Synced {
        node: usize,
        inc: u64,
        lane: Lane,
        then: AfterSync,
    },
    /// Call `id` times out if it has not been answered.
    CallTimeout { id: u64 },
    /// A sequencer's `FlushWhenIdle` (every input queued so far is handled).
    Flush {
        node: usize,
        inc: u64,
        loglet: LogletId,
    },
    /// A processor's `Drain`.
    Drained { node: usize, inc: u64, p: usize },
    /// A stopped processor is started again from its store.
    RestartProcessor { node: usize, inc: u64, p: usize },
    /// A log client's wait for its sealer (`token`) ends.
    SealTimeout {
        node: usize,
        inc: u64,
        token: u64,
        loglet: LogletId,
    },
    /// Client `c` acts.
    Client { c: usize },
    /// Register client `c` acts.
    RegisterClient { c: usize },
    /// A fault of the schedule.
    Fault(Fault),
    /// The targeted strand ends (see [`World::maybe_strand`]).
    StrandOver,
    /// The failure detector of `at` re-evaluates `peer`.
    Detect { at: usize, peer: usize },
    /// Node `node` scores its peers' health (every `SAMPLE_EVERY`).
    Health { node: usize, inc: u64 },
    /// An event an overloaded node handles late, now (not delayed again).
    Late(Box<Event>),
}

/// Where a message goes.
#[derive(Clone, Copy, Debug)]
pub enum Dest {
    Node(usize),
    Client(usize),
}

/// Who made a call, to route its answer.
#[derive(Clone, Copy, Debug)]
pub enum Origin {
    Proposer(PCallId),
    Sequencer(LogletId, crate::actors::sequencer::core::CallId),
    Sealer(crate::log::calls::CallId),
    Log(crate::log::calls::CallId),
    Elector(usize, crate::actors::leader_elector::core::CallId),
    Processor(usize, crate::actors::partition_processor::lifecycle::CallId),
    /// Partition `p`'s delivery from its outbox.
    Deliver(usize, crate::actors::partition_processor::lifecycle::CallId),
    /// Partition `p`'s snapshot fetch (at least this LSN), asking the
    /// `next`-th of the other nodes.
    Snapshot {
        p: usize,
        at_least: Lsn,
        next: usize,
    },
    /// A rejoin's call.
    Rejoin(RejoinCall),
}

/// A call waiting for its one answer.
#[derive(Clone, Debug)]
pub struct PendingCall {
    /// The caller.
    pub owner: Owner,
    /// The callee.
    pub to: NodeId,
    /// When it is due (for the timeout's error).
    pub timeout: Duration,
}

/// Who waits for a call.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    /// A core of node `node` in incarnation `inc`.
    Node {
        /// The node's index.
        node: usize,
        /// Its incarnation when it called (a restarted node gets no answer).
        inc: u64,
        /// Which core called.
        origin: Origin,
    },
    /// A client.
    Client(usize),
}

/// What the world records for the invariants as it runs.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `(partition, epoch)` → the node elected (and every other claimant).
    pub elected: BTreeMap<(u32, u64), BTreeSet<u32>>,
    /// Appends the log acknowledged: log, first LSN, records.
    pub acked: Vec<(LogId, Lsn, Vec<Vec<u8>>)>,
    /// Invariant violations seen while running.
    pub violations: Vec<String>,
    /// Acceptors that accepted each `(key, version, writer)`.
    pub accepted: BTreeMap<(String, u64, u64), BTreeSet<usize>>,
    /// Every CAS started: its id, key and expected version.
    pub cas_ops: BTreeMap<u64, (String, u64)>,
    /// CAS ids whose proposer reported a conflict.
    pub conflicts: BTreeSet<u64>,
    /// Disks lost (wipes carried out).
    pub wipes: u64,
    /// Syncs that a slow disk delayed.
    pub slow_syncs: u64,
    /// Events a stalled or overloaded node handled late.
    pub stalled_events: u64,
    /// Rejoins that ended.
    pub rejoins: u64,
    /// Times a node's health score called a peer degraded, by peer.
    pub degradations: BTreeMap<u32, u64>,
}

/// The simulated cluster and everything around it.
pub struct World {
    /// The one RNG of the run.
    pub rng: StdRng,
    /// The clock and event queue.
    pub sched: Scheduler<Event>,
    /// The network's state.
    pub net: SimNet,
    /// The link behaviour when healthy.
    pub link: LinkConfig,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Their setup.
    pub setup: NodeSetup,
    /// Calls waiting for an answer, by id.
    pub calls: BTreeMap<u64, PendingCall>,
    /// The last id handed out (calls, tokens, operations).
    pub ids: u64,
    /// `suspected[a]`: the peers node `a`'s failure detector suspects.
    pub suspected: Vec<BTreeSet<NodeId>>,
    /// `bad_since[a][b]`: since when `a` has not been able to talk to `b`.
    pub bad_since: Vec<Vec<Option<Instant>>>,
    /// How long a broken link takes to be suspected.
    pub detect_lag: Duration,
    /// The clients.
    pub clients: Clients,
    /// The clients of the metadata register (their history is the
    /// clients' one).
    pub registers: RegisterClients,
    /// The fault schedule.
    pub schedule: Schedule,
    /// When the run ends.
    pub end: Duration,
    /// Final reads start here.
    pub final_reads: Duration,
    /// What happened.
    pub trace: Trace,
    /// What the invariants need.
    pub observed: Observed,
    /// Nodes down, by index.
    pub down: BTreeSet<usize>,
    /// Records of appends in flight, by log client operation id.
    pub appending: BTreeMap<u64, Vec<Vec<u8>>>,
    /// The targeted fault's length, while it is armed (see
    /// [`World::maybe_deafen`]).
    pub deafen_once: Option<Duration>,
    /// The second targeted fault's length, while it is armed (see
    /// [`World::maybe_strand`]).
    pub strand_once: Option<Duration>,
    /// While a strand lasts: when it ends (the schedule's faults wait).
    pub strand_until: Option<Instant>,
    /// How much longer each node's syncs take (by index; a slow disk).
    pub slow_disk: Vec<Duration>,
    /// Until when each node handles nothing (by index; a stall).
    pub stalled_until: Vec<Option<Instant>>,
    /// How late each node handles every event (zero: on time), by index.
    pub overloaded: Vec<Duration>,
    /// No fault before this.
    pub faults_from: Duration,
    /// Accepts being served (host token) and the write each carries.
    pub pending_accepts: BTreeMap<u64, (String, u64, u64)>,
}

/// The shortest strand worth starting: detection (1 s) and an election.
const STRAND_AT_LEAST: Duration = Duration::from_millis(1500);

/// Disk latency of one sync.
const SYNC_LATENCY_US: std::ops::RangeInclusive<u64> = 200..=1500;

impl World {
    fn now_us(&self) -> u64 {
        self.sched.elapsed().as_micros() as u64
    }

    fn id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn trace(&mut self, node: usize, what: &'static str, detail: u64) {
        let at = self.now_us();
        self.trace.record(at, node as u32 + 1, what, detail);
    }

    fn trace_text(
        &mut self,
        node: u32,
        what: &'static str,
        detail: u64,
        text: impl FnOnce() -> String,
    ) {
        let at = self.now_us();
        let text = self.trace.is_full().then(text);
        self.trace.record_text(at, node, what, detail, text);
    }

    /// What node `n` knows of the world now.
    pub fn env(&self, n: usize) -> Env {
        Env {
            now: self.sched.now(),
            me: self.nodes[n].id,
            nodes: self.setup.nodes.clone(),
            suspected: self.suspected[n].clone(),
        }
    }

    fn idx(&self, node: NodeId) -> usize {
        node.0 as usize - 1
    }

    fn alive(&self, n: usize, inc: u64) -> bool {
        self.nodes[n].up && self.nodes[n].inc == inc
    }

    // -----------------------------------------------------------------
    // The network

    /// Sends `msg` from node `from` to `to` through the network.
    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let (a, b) = (self.nodes[from].id, self.nodes[to].id);
        let delays = self.net.deliveries(a, b, &mut self.rng);
        for d in delays {
            self.sched.after(
                d,
                Event::Deliver {
                    to: Dest::Node(to),
                    msg: msg.clone(),
                },
            );
        }
    }

    /// Makes a call from `owner` (on `from`, or a client) to `to`.
    fn call(&mut self, owner: Owner, to: NodeId, req: Req, timeout: Duration) -> u64 {
        let id = self.id();
        let t = self.idx(to);
        self.calls.insert(id, PendingCall { owner, to, timeout });
        let reply_to = match owner {
            Owner::Node { node, .. } => ReplyTo::Node {
                to: self.nodes[node].id,
                id,
            },
            Owner::Client(client) => ReplyTo::Client { client, id },
        };
        let msg = Msg::Request { reply_to, req };
        match owner {
            Owner::Node { node, .. } => {
                if self.suspected[node].contains(&to) {
                    // The transport refuses at once: not delivered.
                    self.calls.get_mut(&id).expect("just inserted").timeout = Duration::ZERO;
                    self.sched
                        .after(Duration::from_micros(50), Event::CallTimeout { id });
                    return id;
                }
                self.send(node, t, msg);
            }
            Owner::Client(_) if !self.nodes[t].up => {
                // Connection refused: not delivered.
                self.calls.get_mut(&id).expect("just inserted").timeout = Duration::ZERO;
                self.sched
                    .after(Duration::from_micros(200), Event::CallTimeout { id });
                return id;
            }
            Owner::Client(_) => {
                // Clients reach every node's ingress directly.
                let d = Duration::from_micros(self.rng.gen_range(100..=1000));
                self.sched.after(
                    d,
                    Event::Deliver {
                        to: Dest::Node(t),
                        msg,
                    },
                );
            }
        }
        self.sched.after(timeout, Event::CallTimeout { id });
        id
    }

    /// A call by core `origin` of node `n` (incarnation `inc`) to `to`.
    fn node_call(
        &mut self,
        n: usize,
        inc: u64,
        origin: Origin,
        to: NodeId,
        req: Req,
        timeout: Duration,
    ) -> u64 {
        let owner = Owner::Node {
            node: n,
            inc,
            origin,
        };
        self.call(owner, to, req, timeout)
    }

    /// Answers a request served by node `n` under host token `token`.
    fn answer(&mut self, n: usize, token: u64, resp: Resp) {
        let Some(cores) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let Some(reply_to) = cores.serving.remove(&token) else {
            return;
        };
        match reply_to {
            ReplyTo::Node { to, id } => {
                let t = self.idx(to);
                self.send(n, t, Msg::Reply { id, resp });
            }
            ReplyTo::Client { client, id } => {
                let d = Duration::from_micros(self.rng.gen_range(100..=1000));
                self.sched.after(
                    d,
                    Event::Deliver {
                        to: Dest::Client(client),
                        msg: Msg::Reply { id, resp },
                    },
                );
            }
        }
    }

    /// Syncs `lane` of node `n` after the disk's latency, then `then`.
    fn sync_then(&mut self, n: usize, lane: Lane, then: AfterSync) {
        let inc = self.nodes[n].inc;
        let mut d = Duration::from_micros(self.rng.gen_range(SYNC_LATENCY_US));
        if let Some(slow) = self.slow_disk.get(n).filter(|s| !s.is_zero()) {
            d += *slow;
            self.observed.slow_syncs += 1;
        }
        self.sched.after(
            d,
            Event::Synced {
                node: n,
                inc,
                lane,
                then,
            },
        );
    }

    // -----------------------------------------------------------------
    // Handling events

    /// The node whose thread handles `event` (none: a client's or the
    /// world's own).
    fn handled_by(&self, event: &Event) -> Option<usize> {
        match event {
            Event::Deliver {
                to: Dest::Node(n), ..
            }
            | Event::Wake { node: n, .. }
            | Event::Synced { node: n, .. }
            | Event::Flush { node: n, .. }
            | Event::Drained { node: n, .. }
            | Event::RestartProcessor { node: n, .. }
            | Event::SealTimeout { node: n, .. }
            | Event::Detect { at: n, .. }
            | Event::Health { node: n, .. } => Some(*n),
            Event::CallTimeout { id } => match self.calls.get(id).map(|c| &c.owner) {
                Some(Owner::Node { node, .. }) => Some(*node),
                _ => None,
            },
            _ => None,
        }
    }

    /// Handles one event.
    pub fn handle(&mut self, event: Event) {
        // A stalled node handles its events when the stall ends, in order;
        // an overloaded one each of them its delay late, in order.
        if let Some(n) = self.handled_by(&event) {
            if let Some(until) = self.stalled_until[n].filter(|u| *u > self.sched.now()) {
                self.observed.stalled_events += 1;
                self.sched.at(until, event);
                return;
            }
            if !self.overloaded[n].is_zero() {
                self.observed.stalled_events += 1;
                self.sched
                    .after(self.overloaded[n], Event::Late(Box::new(event)));
                return;
            }
        }
        self.handle_now(event);
    }

    /// Handles one event now.
    fn handle_now(&mut self, event: Event) {
        match event {
            Event::Late(event) => self.handle_now(*event),
            Event::Deliver { to, msg } => self.deliver(to, msg),
            Event::Wake { node, inc } => {
                if self.alive(node, inc) {
                    let now = self.sched.now();
                    if let Some(c) = self.nodes[node].cores.as_mut() {
                        c.wakes.retain(|t| *t > now);
                    }
                    self.trace(node, "wake", 0);
                    self.tick(node);
                }
            }
            Event::Synced {
                node,
                inc,
                lane,
                then,
            } => {
                if !self.alive(node, inc) {
                    return;
                }
                self.nodes[node].disk.borrow_mut().sync(lane);
                self.trace(node, "synced", lane as u64);
                match then {
                    AfterSync::Answer { token, resp } => self.answer(node, token, resp),
                    AfterSync::Mark(loglet) => {
                        self.feed_sequencer(node, loglet, SeqInput::MarkDurable { result: Ok(()) })
                    }
                    AfterSync::Persisted { p, upto } => self.feed_processor(
                        node,
                        p,
                        ProcessorInput::Persisted {
                            upto,
                            result: Ok(()),
                        },
                    ),
                    AfterSync::Fenced => self.fenced(node),
                    AfterSync::Cleared { loglet } => self.rejoin_feed(
                        node,
                        None,
                        Some(rejoin_log::LogRejoinInput::Cleared {
                            loglet,
                            result: Ok(()),
                        }),
                    ),
                    AfterSync::Snapshot { p, snapshot } => {
                        let lsn = snapshot.lsn;
                        let held = &mut self.nodes[node].snapshots;
                        if held.get(&p).is_none_or(|s| s.lsn < lsn) {
                            held.insert(p, snapshot);
                        }
                        self.trace(node, "snapshot", lsn.0);
                        self.feed_processor(
                            node,
                            p,
                            ProcessorInput::SnapshotWritten {
                                lsn,
                                result: Ok(()),
                            },
                        );
                    }
                }
            }
            Event::CallTimeout { id } => {
                let Some(pending) = self.calls.remove(&id) else {
                    return;
                };
                let err = if pending.timeout.is_zero() {
                    CallError::Unavailable(pending.to, "unreachable".into())
                } else {
                    CallError::Timeout(pending.to, pending.timeout)
                };
                self.trace_text(pending.to.0, "call-timeout", id, String::new);
                self.complete(id, pending, Err(err));
            }
            Event::Flush { node, inc, loglet } => {
                if self.alive(node, inc) {
                    self.feed_sequencer(node, loglet, SeqInput::Flush);
                }
            }
            Event::Drained { node, inc, p } => {
                if self.alive(node, inc) {
                    self.feed_processor(node, p, ProcessorInput::Drained);
                }
            }
            Event::RestartProcessor { node, inc, p } => {
                if self.alive(node, inc) {
                    let base = self.sched.now() - self.sched.elapsed();
                    let core = self.nodes[node].processor(&self.setup, p, base);
                    if let Some(c) = self.nodes[node].cores.as_mut() {
                        c.processors[p] = core;
                    }
                    self.trace(node, "proc-restart", p as u64);
                    self.feed_processor(node, p, ProcessorInput::Tick);
                }
            }
            Event::SealTimeout {
                node,
                inc,
                token,
                loglet,
            } => {
                if !self.alive(node, inc) {
                    return;
                }
                let seal = self.nodes[node]
                    .cores
                    .as_mut()
                    .and_then(|c| c.seals.remove(&token));
                if let Some(op) = seal {
                    let result = Err(SealError::Timeout {
                        loglet,
                        stage: "waiting for the local sealer".into(),
                    });
                    self.feed_log(node, LogInput::SealDone { op, result });
                }
            }
            Event::Client { c } => self.client_wake(c),
            Event::RegisterClient { c } => self.register_wake(c),
            Event::Fault(f) => {
                // While a strand lasts, it is the only fault.
                if self
                    .strand_until
                    .is_none_or(|until| self.sched.now() >= until)
                {
                    self.fault(f)
                }
            }
            Event::StrandOver => {
                self.strand_until = None;
                self.fault(Fault::HealLinks);
            }
            Event::Detect { at, peer } => self.detect(at, peer),
            Event::Health { node, inc } => {
                if self.alive(node, inc) {
                    self.score_health(node);
                    self.sched.after(SAMPLE_EVERY, Event::Health { node, inc });
                }
            }
        }
    }

    /// A message arrives.
    fn deliver(&mut self, to: Dest, msg: Msg) {
        match to {
            Dest::Client(_) => {
                if let Msg::Reply { id, resp } = msg {
                    if let Some(pending) = self.calls.remove(&id) {
                        self.trace_text(0, "client-reply", id, String::new);
                        self.complete(id, pending, Ok(resp));
                    }
                }
            }
            Dest::Node(n) => {
                if !self.nodes[n].up {
                    return;
                }
                if self.trace.is_full() {
                    let mut text = format!("{msg:?}");
                    text.truncate(240);
                    self.trace_text(n as u32 + 1, "deliver", 0, || text);
                }
                match msg {
                    Msg::Request { reply_to, req } => self.serve(n, reply_to, req),
                    Msg::Reply { id, resp } => {
                        if let Some(pending) = self.calls.remove(&id) {
                            self.trace(n, "reply", id);
                            self.complete(id, pending, Ok(resp));
                        }
                    }
                    Msg::Release(r) => {
                        self.trace(n, "release", r.global_tail);
                        self.feed_log_server(n, LsInput::Release(r));
                    }
                    Msg::MetaUpdate(u) => {
                        self.trace(n, "meta-update", u.value.version);
                        self.observe(n, u.key, u.value);
                    }
                }
            }
        }
    }

    /// The one answer to a call reaches its caller.
    fn complete(&mut self, id: u64, pending: PendingCall, result: Result<Resp, CallError>) {
        match pending.owner {
            Owner::Client(c) => {
                let res = match result {
                    Ok(Resp::Invoke(r)) => Ok(r),
                    Ok(_) => Err((false, "a wrong reply".to_string())),
                    Err(e) => Err((e.maybe_delivered(), e.to_string())),
                };
                // The client matches its attempt by the call id it noted.
                let now = self.now_us();
                if let Some(action) = self.clients.reply(c, id, res, now) {
                    self.client_act(c, action);
                }
            }
            Owner::Node { node, inc, origin } => {
                if !self.alive(node, inc) {
                    return;
                }
                let from = pending.to;
                match origin {
                    Origin::Proposer(call) => {
                        let result = match result {
                            Ok(Resp::Phase(r)) => Ok(r),
                            Ok(_) => Err(CallError::Remote(from, "a wrong reply".into())),
                            Err(e) => Err(e),
                        };
                        self.feed_proposer(node, ProposerInput::Reply { call, from, result });
                    }
                    Origin::Sequencer(loglet, call) => {
                        let result = match result {
                            Ok(Resp::Log(LogResponse::Store(r))) => Ok(r),
                            Ok(_) => Err(CallError::Remote(from, "a wrong reply".into())),
                            Err(e) => Err(e),
                        };
                        self.feed_sequencer(node, loglet, SeqInput::Reply { call, from, result });
                    }
                    Origin::Sealer(call) => {
                        let result = match result {
                            Ok(Resp::Log(r)) => Ok(r),
                            Ok(_) => Err(CallError::Remote(from, "a wrong reply".into())),
                            Err(e) => Err(e),
                        };
                        self.feed_sealer(node, SealerInput::Reply { call, from, result });
                    }
                    Origin::Log(call) => {
                        let result = match result {
                            Ok(Resp::Log(r)) => Ok(r),
                            Ok(_) => Err(CallError::Remote(from, "a wrong reply".into())),
                            Err(e) => Err(e),
                        };
                        self.feed_log(node, LogInput::Reply { call, from, result });
                    }
                    Origin::Elector(p, call) => {
                        let result = match result {
                            Ok(Resp::PreVote(r)) => Ok(r),
                            Ok(_) => Err(CallError::Remote(from, "a wrong reply".into())),
                            Err(e) => Err(e),
                        };
                        self.feed_elector(node, p, ElectorInput::Reply { call, from, result });
                    }
                    Origin::Processor(p, call) => {
                        let reply = match result {
                            Ok(Resp::Persisted(l)) => Ok(l),
                            Ok(_) => Err(CallError::Remote(from, "a wrong reply".into())),
                            Err(e) => Err(e),
                        };
                        self.feed_processor(
                            node,
                            p,
                            ProcessorInput::PersistedOf {
                                call,
                                node: from,
                                reply,
                            },
                        );
                    }
                    Origin::Deliver(p, call) => {
                        let reply = match result {
                            Ok(Resp::Invoke(r)) => Ok(r),
                            Ok(_) => Err(format!("{from}: a wrong reply")),
                            Err(e) => Err(e.to_string()),
                        };
                        self.feed_processor(node, p, ProcessorInput::Delivered { call, reply });
                    }
                    Origin::Snapshot { p, at_least, next } => match result {
                        Ok(Resp::Snapshot(Ok(snapshot))) => {
                            let lsn = snapshot.lsn;
                            self.trace(node, "snapshot-fetched", lsn.0);
                            self.feed_processor(
                                node,
                                p,
                                ProcessorInput::SnapshotSource { from, lsn },
                            );
                            self.feed_processor(
                                node,
                                p,
                                ProcessorInput::SnapshotFetched {
                                    result: Ok(snapshot),
                                },
                            );
                        }
                        _ => self.fetch_snapshot(node, inc, p, at_least, next + 1),
                    },
                    Origin::Rejoin(call) => self.rejoin_reply(node, call, result),
                }
            }
        }
    }

    /// Node `n` serves a request.
    fn serve(&mut self, n: usize, reply_to: ReplyTo, req: Req) {
        let token = self.id();
        // A fencing node serves only the register (as a node whose fence
        // runs before its other actors start); the rest is not answered.
        if self.gated(n) && !matches!(req, Req::Phase(_) | Req::ListKeys) {
            return;
        }
        let Some(cores) = self.nodes[n].cores.as_mut() else {
            return;
        };
        cores.serving.insert(token, reply_to);
        match req {
            Req::ListKeys => {
                let keys = cores.acceptor.list_keys().map_err(|e| e.to_string());
                self.answer(n, token, Resp::Keys(keys));
            }
            Req::Log(LogRequest::Append(a)) => {
                self.trace(n, "serve-append", a.segment.loglet.0);
                self.serve_append(n, token, a)
            }
            Req::Log(r) => {
                let req = match r {
                    LogRequest::Seal(m) => LsRequest::Seal(m),
                    LogRequest::GetRecords(m) => LsRequest::GetRecords(m),
                    LogRequest::Store(m) => LsRequest::Store(m),
                    LogRequest::Trim(m) => LsRequest::Trim(m),
                    LogRequest::Append(_) => unreachable!("handled above"),
                };
                self.trace(n, "serve-log", token);
                let from = match reply_to {
                    ReplyTo::Node { to, .. } => to,
                    ReplyTo::Client { .. } => self.nodes[n].id,
                };
                self.feed_log_server(
                    n,
                    LsInput::Request {
                        from,
                        token: Token(token),
                        req,
                    },
                );
            }
            Req::Phase(req) => {
                self.trace(n, "serve-phase", token);
                if let AcceptorRequest::Accept(m) = &req {
                    self.pending_accepts
                        .insert(token, (m.key.clone(), m.value.version, m.value.writer));
                }
                let from = match reply_to {
                    ReplyTo::Node { to, .. } => to,
                    ReplyTo::Client { .. } => self.nodes[n].id,
                };
                let env = self.env(n);
                let acceptor = &mut self.nodes[n].cores.as_mut().expect("up").acceptor;
                let effects = acceptor.handle(&env, AcceptorInput::Request { from, token, req });
                for e in effects {
                    let (token, resp, lane) = match e {
                        AcceptorEffect::Respond { token, resp } => (token, resp, None),
                        AcceptorEffect::RespondAfterSync { lane, token, resp } => {
                            (token, resp, Some(lane))
                        }
                    };
                    if let Some(write) = self.pending_accepts.remove(&token) {
                        if matches!(resp, AcceptorResponse::Accept(Ok(AcceptReply::Accepted))) {
                            self.observed.accepted.entry(write).or_default().insert(n);
                        }
                    }
                    let resp = Resp::Phase(resp);
                    match lane {
                        Some(lane) => self.sync_then(n, lane, AfterSync::Answer { token, resp }),
                        None => self.answer(n, token, resp),
                    }
                }
            }
            Req::PreVote(v) => {
                let p = v.partition.0 as usize;
                self.trace(n, "serve-prevote", p as u64);
                self.feed_elector(n, p, ElectorInput::Request { token, req: v });
            }
            Req::Persisted(g) => {
                let p = g.partition.0 as usize;
                self.feed_processor(n, p, ProcessorInput::GetPersisted { token });
            }
            Req::Snapshot { p, at_least } => {
                let held = self.nodes[n]
                    .snapshots
                    .get(&p)
                    .filter(|s| s.lsn >= at_least)
                    .cloned()
                    .ok_or_else(|| format!("no snapshot at {at_least} or later"));
                self.trace(n, "serve-snapshot", p as u64);
                self.answer(n, token, Resp::Snapshot(held));
            }
            Req::Invoke(req) => {
                let p = req.partition;
                let input = ProcessorInput::Invoke { token, req };
                self.serve_processor(n, token, p, "serve-invoke", input);
            }
            Req::Deliver(req) => {
                let p = req.partition;
                let input = ProcessorInput::Deliver { token, req };
                self.serve_processor(n, token, p, "serve-deliver", input);
            }
        }
    }

    /// A request for a partition's processor (a client's or a delivery),
    /// answered `token`: fed to the processor, or refused if there is no
    /// such partition.
    fn serve_processor(
        &mut self,
        n: usize,
        token: u64,
        partition: PartitionId,
        what: &'static str,
        input: ProcessorInput,
    ) {
        let p = partition.0 as usize;
        self.trace(n, what, p as u64);
        if p >= self.setup.partitions as usize {
            let refusal = InvokeReply::Unavailable("no such partition".into());
            return self.answer(n, token, Resp::Invoke(refusal));
        }
        self.feed_processor(n, p, input);
    }

    /// The sequencer manager's rule: a live sequencer takes the append;
    /// otherwise one is started if [`may_start`] allows it.
    fn serve_append(&mut self, n: usize, token: u64, a: Append) {
        let loglet = a.segment.loglet;
        let me = self.nodes[n].id;
        let cores = self.nodes[n].cores.as_mut().expect("up");
        if !cores.sequencers.contains_key(&loglet) {
            let store = cores.log_server.store().clone();
            if let Err(e) = may_start(&a.segment, me, || Ok(store.sequencer_was_started(loglet))) {
                self.answer(n, token, Resp::Log(LogResponse::Append(Err(e))));
                return;
            }
            let config = SequencerConfig::for_segment(&a.segment, SequencerTuning::default());
            cores.sequencers.insert(loglet, SequencerCore::new(config));
            self.trace(n, "seq-start", loglet.0);
        }
        self.feed_sequencer(
            n,
            loglet,
            SeqInput::Append {
                token,
                loglet,
                records: a.records,
            },
        );
    }

    // -----------------------------------------------------------------
    // Feeding cores and carrying out their effects

    /// Ticks every core of node `n` whose wake is due, then re-arms.
    fn tick(&mut self, n: usize) {
        let now = self.sched.now();
        let Some(c) = self.nodes[n].cores.as_ref() else {
            return;
        };
        let due = |w: Option<Instant>| w.is_some_and(|t| t <= now);
        let rejoin = due(c.rejoin.as_ref().and_then(|r| r.next_wake()));
        let proposer = due(c.proposer.next_wake());
        let sealer = due(c.sealer.next_wake());
        let log = due(c.log.next_wake());
        let seqs: Vec<LogletId> = c
            .sequencers
            .iter()
            .filter(|(_, s)| due(s.next_wake()))
            .map(|(l, _)| *l)
            .collect();
        let gated = c.rejoin.as_ref().is_some_and(|r| r.gated());
        let electors: Vec<usize> = (0..c.electors.len())
            .filter(|p| !gated && due(c.electors[*p].next_wake()))
            .collect();
        let procs: Vec<usize> = (0..c.processors.len())
            .filter(|p| {
                !gated
                    && c.processors[*p]
                        .as_ref()
                        .is_some_and(|x| due(x.next_wake()))
            })
            .collect();
        if rejoin {
            self.rejoin_tick(n);
        }
        if proposer {
            self.feed_proposer(n, ProposerInput::Tick);
        }
        if sealer {
            self.feed_sealer(n, SealerInput::Tick);
        }
        if log {
            self.feed_log(n, LogInput::Tick);
        }
        for l in seqs {
            self.feed_sequencer(n, l, SeqInput::Tick);
        }
        for p in electors {
            self.feed_elector(n, p, ElectorInput::Tick);
        }
        for p in procs {
            self.feed_processor(n, p, ProcessorInput::Tick);
        }
        self.arm(n);
    }

    /// Schedules a wake-up of node `n` at its cores' earliest wake.
    fn arm(&mut self, n: usize) {
        let inc = self.nodes[n].inc;
        let now = self.sched.now();
        let gated = self.gated(n);
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        // A fencing node's electors and processors do not run yet.
        let held_back = |w: Option<Instant>| w.filter(|_| !gated);
        let next = [
            c.proposer.next_wake(),
            c.sealer.next_wake(),
            c.log.next_wake(),
            c.rejoin.as_ref().and_then(|r| r.next_wake()),
        ]
        .into_iter()
        .chain(c.sequencers.values().map(|s| s.next_wake()))
        .chain(c.electors.iter().map(|e| held_back(e.next_wake())))
        .chain(
            c.processors
                .iter()
                .flatten()
                .map(|p| held_back(p.next_wake())),
        )
        .flatten()
        .min();
        let Some(at) = next else {
            return;
        };
        let at = at.max(now);
        if c.wakes.first().is_some_and(|t| *t <= at) {
            return;
        }
        c.wakes.insert(at);
        self.sched.at(at, Event::Wake { node: n, inc });
    }

    fn feed_log_server(&mut self, n: usize, input: LsInput) {
        if self.gated(n) {
            return;
        }
        let env = self.env(n);
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let effects = c.log_server.handle(&env, input);
        self.log_server_effects(n, effects);
    }

    /// Carries out node `n`'s log-server effects.
    fn log_server_effects(&mut self, n: usize, effects: Vec<LsEffect>) {
        for e in effects {
            match e {
                LsEffect::Respond { token, resp } => {
                    self.answer(n, token.0, Resp::Log(ls_to_log(resp)))
                }
                LsEffect::RespondAfterSync { lane, token, resp } => self.sync_then(
                    n,
                    lane,
                    AfterSync::Answer {
                        token: token.0,
                        resp: Resp::Log(ls_to_log(resp)),
                    },
                ),
                LsEffect::Tail { loglet, info } => self.tail_changed(n, loglet, info),
            }
        }
    }

    /// Node `n`'s view of `loglet`'s tail changed: tell its log client if
    /// it watches.
    fn tail_changed(&mut self, n: usize, loglet: LogletId, info: TailInfo) {
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let mut info = info;
        if let Some(old) = c.tails.get(&loglet) {
            info.known_global_tail = info.known_global_tail.max(old.known_global_tail);
        }
        if c.tails.get(&loglet) == Some(&info) {
            return;
        }
        c.tails.insert(loglet, info);
        if c.watched.contains(&loglet) {
            self.feed_log(n, LogInput::TailChanged { loglet, tail: info });
        }
    }

    fn feed_sequencer(&mut self, n: usize, loglet: LogletId, input: SeqInput<u64>) {
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let Some(seq) = c.sequencers.get_mut(&loglet) else {
            // Gone: an append still gets its answer.
            if let SeqInput::Append { token, .. } = input {
                self.answer(
                    n,
                    token,
                    Resp::Log(LogResponse::Append(Err(SequencerError::Gone(loglet)))),
                );
            }
            return;
        };
        let effects = seq.handle(&env, input);
        for e in effects {
            match e {
                SeqEffect::PersistStartMark => {
                    let c = self.nodes[n].cores.as_ref().expect("up");
                    c.log_server.store().mark_sequencer_started(loglet);
                    self.sync_then(n, Lane::State, AfterSync::Mark(loglet));
                }
                SeqEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    self.node_call(
                        n,
                        inc,
                        Origin::Sequencer(loglet, call),
                        to,
                        Req::Log(LogRequest::Store(req)),
                        timeout,
                    );
                }
                SeqEffect::Reply { token, outcome } => {
                    self.answer(n, token, Resp::Log(LogResponse::Append(outcome)));
                }
                SeqEffect::Release { global_tail } => {
                    // Every segment's nodeset is the log's (all nodes).
                    let nodeset = self.setup.log.nodeset.clone();
                    for to in nodeset {
                        let t = self.idx(to);
                        self.send(
                            n,
                            t,
                            Msg::Release(Release {
                                loglet,
                                global_tail,
                            }),
                        );
                    }
                }
                SeqEffect::FlushWhenIdle => {
                    self.sched.after(
                        Duration::ZERO,
                        Event::Flush {
                            node: n,
                            inc,
                            loglet,
                        },
                    );
                }
                // The commit watchdog restarts a stuck sequencer's manager in
                // a node; the simulator lets the core's own deadlines act.
                SeqEffect::WatchCommit { .. } => {}
                SeqEffect::Stop => {
                    if let Some(c) = self.nodes[n].cores.as_mut() {
                        c.sequencers.remove(&loglet);
                    }
                    self.trace(n, "seq-stop", loglet.0);
                }
            }
        }
        self.arm(n);
    }

    fn feed_proposer(&mut self, n: usize, input: ProposerInput) {
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let effects = c.proposer.handle(&env, input);
        let mut deafen = false;
        for e in effects {
            match e {
                ProposerEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    let chain_cas = match &req {
                        AcceptorRequest::Accept(a) => {
                            a.key.starts_with("chain/")
                                && self.observed.cas_ops.contains_key(&a.value.writer)
                        }
                        AcceptorRequest::Prepare(_) => false,
                    };
                    self.node_call(n, inc, Origin::Proposer(call), to, Req::Phase(req), timeout);
                    if chain_cas {
                        deafen = true;
                    }
                }
                ProposerEffect::Chosen { key, value, .. } => {
                    if self.observe(n, key.clone(), value.clone()) {
                        for t in 0..self.nodes.len() {
                            if t != n {
                                let msg = Msg::MetaUpdate(MetaUpdate {
                                    key: key.clone(),
                                    value: value.clone(),
                                });
                                self.send(n, t, msg);
                            }
                        }
                    }
                }
                ProposerEffect::Done { op, result } => self.meta_done(n, op, result),
            }
        }
        if deafen {
            self.maybe_deafen(n);
        }
        self.arm(n);
    }

    /// The targeted fault of this seed, if armed and still due: the node
    /// that just sent the accepts of a chain CAS stops hearing the others
    /// (its accepts arrive, their answers do not) for a while, so the CAS
    /// may be chosen while its proposer cannot tell.
    fn maybe_deafen(&mut self, n: usize) {
        let Some(length) = self.deafen_once else {
            return;
        };
        let start = self.schedule.healed_at.saturating_sub(length);
        if self.sched.elapsed() < self.faults_from || self.sched.elapsed() > start {
            return;
        }
        self.deafen_once = None;
        let node = self.nodes[n].id;
        self.fault(Fault::Deafen(node));
        self.sched.after(length, Event::Fault(Fault::HealLinks));
    }

    /// The second targeted fault of this seed, if armed and still due: a
    /// leader starts its reign, and nothing it sends gets through for a
    /// while, though it still hears everyone (the rest of the cluster is
    /// made whole and the schedule's faults wait, so another node can take
    /// over). The stranded leader keeps taking requests it cannot append,
    /// its peers seal its segment under it, and after the strand it must
    /// learn that it was deposed without anything acknowledged being lost.
    fn maybe_strand(&mut self, n: usize) {
        let Some(length) = self.strand_once else {
            return;
        };
        // It ends by the final heal, and lasts long enough for a takeover.
        let length = length.min(self.schedule.healed_at.saturating_sub(self.sched.elapsed()));
        if self.sched.elapsed() < self.faults_from || length < STRAND_AT_LEAST {
            return;
        }
        self.strand_once = None;
        let node = self.nodes[n].id;
        // The others are whole, so one of them can take over.
        self.fault(Fault::HealAll);
        self.fault(Fault::Strand(node));
        self.strand_until = Some(self.sched.now() + length);
        self.sched.after(length, Event::StrandOver);
    }

    /// Node `n`'s cache sees `value` of `key`; whether it was news.
    fn observe(&mut self, n: usize, key: String, value: Versioned) -> bool {
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return false;
        };
        if c.cache
            .get(&key)
            .is_some_and(|v| v.version >= value.version)
        {
            return false;
        }
        c.cache.insert(key.clone(), value.clone());
        let electors = c.electors.len();
        if c.rejoin.is_some() {
            let version = value.version;
            let input = crate::actors::metadata::rejoin::RejoinInput::Chosen {
                key: key.clone(),
                version,
            };
            self.rejoin_feed(n, Some(input), None);
        }
        if let Some(p) = key
            .strip_prefix("leader/")
            .and_then(|p| p.parse::<usize>().ok())
        {
            if let Ok(leadership) = rmp_serde::from_slice::<Leadership>(&value.value) {
                if p < electors {
                    self.feed_elector(
                        n,
                        p,
                        ElectorInput::LeadershipSeen {
                            version: value.version,
                            leadership,
                        },
                    );
                }
            }
        }
        true
    }

    /// Starts a register operation on node `n`'s proposer for `from`.
    fn meta(
        &mut self,
        n: usize,
        from: MetaFrom,
        key: String,
        change: Change,
        timeout: Duration,
    ) -> u64 {
        let op = self.id();
        // As the node's proposer does, every CAS gets a fresh random id (it
        // recognises its own write across retries by it).
        let change = match change {
            Change::Cas {
                expected, value, ..
            } => {
                let id = self.rng.gen::<u64>() | 1;
                self.observed.cas_ops.insert(id, (key.clone(), expected));
                Change::Cas {
                    expected,
                    value,
                    op: id,
                }
            }
            read => read,
        };
        if let (Some(c), Change::Cas { op: id, .. }) = (self.nodes[n].cores.as_mut(), &change) {
            c.cas_of.insert(op, *id);
        }
        if let Some(c) = self.nodes[n].cores.as_mut() {
            c.metas.insert(op, from);
        }
        self.feed_proposer(
            n,
            ProposerInput::Run {
                op,
                key,
                change,
                timeout,
            },
        );
        op
    }

    /// A register operation of node `n` ended.
    fn meta_done(&mut self, n: usize, op: u64, result: Result<Outcome, MetaError>) {
        let Some(from) = self.nodes[n]
            .cores
            .as_mut()
            .and_then(|c| c.metas.remove(&op))
        else {
            return;
        };
        let cas = self.nodes[n]
            .cores
            .as_mut()
            .and_then(|c| c.cas_of.remove(&op));
        if let (Some(id), Ok(Outcome::Conflict(_))) = (cas, &result) {
            self.observed.conflicts.insert(id);
        }
        match from {
            MetaFrom::Register(c) => {
                let now = self.now_us();
                if let Err(e) = self
                    .registers
                    .done(c, op, result, now, &mut self.clients.history)
                {
                    self.observed.violations.push(e);
                }
                let think = Duration::from_micros(self.rng.gen_range(REGISTER_THINK_US));
                self.sched.after(think, Event::RegisterClient { c });
            }
            MetaFrom::Sealer(op) => self.feed_sealer(n, SealerInput::MetaDone { op, result }),
            MetaFrom::Fence { log } => self.fence_read(n, log, result),
            MetaFrom::RejoinRead { key } => self.rejoin_read(n, key, result),
            MetaFrom::Log(op) => self.feed_log(n, LogInput::MetaDone { op, result }),
            MetaFrom::Elector { p, op, cas } => {
                let key = crate::actors::leader_elector::leader_key(PartitionId(p as u32));
                let decode = |v: Versioned| {
                    rmp_serde::from_slice::<Leadership>(&v.value)
                        .map(|l| (v.version, l))
                        .map_err(|e| MetaError::Decode {
                            key: key.clone(),
                            reason: e.to_string(),
                        })
                };
                let result = if cas {
                    MetaResult::Cas(result.and_then(|o| match o {
                        Outcome::Value(Some(v)) => Ok(CasOutcome::Applied { version: v.version }),
                        Outcome::Value(None) => Err(MetaError::Indeterminate { key: key.clone() }),
                        Outcome::Conflict(cur) => {
                            Ok(CasOutcome::Conflict(cur.map(&decode).transpose()?))
                        }
                    }))
                } else {
                    MetaResult::Read(result.and_then(|o| match o {
                        Outcome::Value(v) | Outcome::Conflict(v) => v.map(&decode).transpose(),
                    }))
                };
                self.feed_elector(n, p, ElectorInput::MetaDone { op, result });
            }
        }
    }

    fn feed_sealer(&mut self, n: usize, input: SealerInput) {
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let effects = c.sealer.handle(&env, input);
        for e in effects {
            match e {
                SealerEffect::Meta {
                    op,
                    key,
                    change,
                    timeout,
                } => {
                    self.meta(n, MetaFrom::Sealer(op), key, change, timeout);
                }
                SealerEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    self.node_call(n, inc, Origin::Sealer(call), to, Req::Log(req), timeout);
                }
                SealerEffect::Respond { token, result } => {
                    self.trace_text(n as u32 + 1, "seal-done", token, || format!("{result:?}"));
                    let seal = self.nodes[n]
                        .cores
                        .as_mut()
                        .and_then(|c| c.seals.remove(&token));
                    if let Some(op) = seal {
                        self.feed_log(n, LogInput::SealDone { op, result });
                    }
                }
            }
        }
        self.arm(n);
    }

    /// Feeds `ChainSeen` to node `n`'s log client for every log whose
    /// cached chain differs from the one the core knows.
    fn chain_news(&mut self, n: usize) -> Vec<LogInput> {
        let Some(c) = self.nodes[n].cores.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in 0..self.setup.partitions {
            let log = LogId(p);
            let cached = c.cache.get(&chain_key(log));
            let version = cached.map(|v| v.version);
            if c.log.chain(log).map(|(v, _)| *v) == version {
                continue;
            }
            let chain = cached.and_then(|v| {
                rmp_serde::from_slice::<Chain>(&v.value)
                    .ok()
                    .map(|ch| (v.version, ch))
            });
            out.push(LogInput::ChainSeen { log, chain });
        }
        out
    }

    fn feed_log(&mut self, n: usize, input: LogInput) {
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let mut inputs = self.chain_news(n);
        inputs.push(input);
        for input in inputs {
            let Some(c) = self.nodes[n].cores.as_mut() else {
                return;
            };
            let effects = c.log.handle(&env, input);
            for e in effects {
                self.log_effect(n, inc, e);
            }
        }
        self.arm(n);
    }

    fn log_effect(&mut self, n: usize, inc: u64, e: LogEffect) {
        match e {
            LogEffect::Call {
                to,
                call,
                req,
                timeout,
            } => {
                self.node_call(n, inc, Origin::Log(call), to, Req::Log(req), timeout);
            }
            LogEffect::Meta {
                op,
                key,
                change,
                timeout,
            } => {
                self.meta(n, MetaFrom::Log(op), key, change, timeout);
            }
            LogEffect::SealAndExtend {
                op,
                segment,
                next_sequencer,
                timeout,
            } => {
                let token = self.id();
                if let Some(c) = self.nodes[n].cores.as_mut() {
                    c.seals.insert(token, op);
                }
                let log = segment.loglet.log();
                self.trace(n, "seal-ask", segment.loglet.0);
                // The shell waits for its sealer at most `timeout`.
                self.sched.after(
                    timeout,
                    Event::SealTimeout {
                        node: n,
                        inc,
                        token,
                        loglet: segment.loglet,
                    },
                );
                self.feed_sealer(
                    n,
                    SealerInput::Request {
                        token,
                        log,
                        loglet: segment.loglet,
                        next_sequencer,
                    },
                );
            }
            LogEffect::ReadLocal {
                read,
                loglet,
                from,
                to,
                max_bytes,
            } => {
                let result = {
                    let c = self.nodes[n].cores.as_ref().expect("up");
                    use crate::actors::log_server::core::LogServerStore;
                    c.log_server
                        .store()
                        .read_records(loglet, from, to, max_bytes)
                        .map_err(crate::actors::log_server::LogServerError::from)
                };
                self.feed_log_inner(n, LogInput::LocalRecords { read, result });
            }
            LogEffect::WatchTail { loglet } => {
                let tail = {
                    let c = self.nodes[n].cores.as_mut().expect("up");
                    c.watched.insert(loglet);
                    let mut tail = c.log_server.tail_info(loglet).unwrap_or_default();
                    if let Some(known) = c.tails.get(&loglet) {
                        tail.known_global_tail =
                            tail.known_global_tail.max(known.known_global_tail);
                    }
                    tail
                };
                self.feed_log_inner(n, LogInput::TailChanged { loglet, tail });
            }
            LogEffect::UnwatchTail { loglet } => {
                if let Some(c) = self.nodes[n].cores.as_mut() {
                    c.watched.remove(&loglet);
                }
            }
            LogEffect::Done { op, result } => self.log_done(n, op, result),
        }
    }

    /// An input to the log client from one of its own effects (no chain
    /// news in between, as the shell's queue).
    fn feed_log_inner(&mut self, n: usize, input: LogInput) {
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let effects = c.log.handle(&env, input);
        for e in effects {
            self.log_effect(n, inc, e);
        }
    }

    /// A log client operation of node `n` ended.
    fn log_done(&mut self, n: usize, op: LogOpId, result: OpResult) {
        let Some(from) = self.nodes[n]
            .cores
            .as_mut()
            .and_then(|c| c.log_ops.remove(&op.0))
        else {
            return;
        };
        match (from, result) {
            (LogFrom::Append { p, op: pop }, OpResult::Appended(result)) => {
                if let (Ok(lsn), Some(records)) = (&result, self.appending.remove(&op.0)) {
                    self.observed.acked.push((LogId(p as u32), *lsn, records));
                }
                self.feed_processor(n, p, ProcessorInput::Appended { op: pop, result })
            }
            (LogFrom::Read { p }, OpResult::Read(records)) => {
                self.feed_processor(n, p, ProcessorInput::Records { records })
            }
            (LogFrom::RejoinChain { log }, OpResult::Chain(result)) => {
                self.rejoin_chain(n, log, result.map_err(|e| e.to_string()))
            }
            (LogFrom::RejoinSeal { log }, OpResult::Sealed(result)) => {
                self.rejoin_chain(n, log, result.map_err(|e| e.to_string()))
            }
            (LogFrom::MoveRefresh { p }, OpResult::Chain(Ok(chain))) => {
                let tail = chain.tail().clone();
                if tail.sequencer != self.nodes[n].id && tail.sealed_tail.is_none() {
                    let id = self.id();
                    if let Some(c) = self.nodes[n].cores.as_mut() {
                        c.log_ops.insert(id, LogFrom::MoveSeal);
                    }
                    let deadline = self.sched.now() + Duration::from_secs(3);
                    let _ = p;
                    self.feed_log(
                        n,
                        LogInput::Seal {
                            op: LogOpId(id),
                            segment: tail,
                            deadline,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Starts a log client operation of node `n` for `from`.
    fn log_op(&mut self, n: usize, from: LogFrom, make: impl FnOnce(LogOpId) -> LogInput) {
        let id = self.id();
        if let Some(c) = self.nodes[n].cores.as_mut() {
            c.log_ops.insert(id, from);
        }
        self.feed_log(n, make(LogOpId(id)));
    }

    fn feed_elector(&mut self, n: usize, p: usize, input: ElectorInput) {
        if self.gated(n) {
            return;
        }
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let effects = c.electors[p].handle(&env, input);
        for e in effects {
            match e {
                ElectorEffect::Meta {
                    op,
                    key,
                    change,
                    timeout,
                } => {
                    let (change, cas) = match change {
                        MetaChange::Read => (Change::Read, false),
                        MetaChange::Cas { expect, value } => (
                            Change::Cas {
                                expected: expect,
                                value: rmp_serde::to_vec_named(&value).expect("encodes"),
                                op: 0,
                            },
                            true,
                        ),
                    };
                    self.meta(n, MetaFrom::Elector { p, op, cas }, key, change, timeout);
                }
                ElectorEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    self.node_call(
                        n,
                        inc,
                        Origin::Elector(p, call),
                        to,
                        Req::PreVote(req),
                        timeout,
                    );
                }
                ElectorEffect::Respond { token, resp } => {
                    self.answer(n, token, Resp::PreVote(resp))
                }
                ElectorEffect::Tell(told) => {
                    let input = match told {
                        Told::Leader(epoch) => ProcessorInput::BecomeLeader { epoch },
                        Told::Follower(leader) => ProcessorInput::BecomeFollower { leader },
                    };
                    self.feed_processor(n, p, input);
                }
                ElectorEffect::Elected { epoch } => {
                    let me = self.nodes[n].id.0;
                    self.trace(n, "elected", epoch.0);
                    let who = self
                        .observed
                        .elected
                        .entry((p as u32, epoch.0))
                        .or_default();
                    who.insert(me);
                    if who.len() > 1 {
                        let v = format!("partition {p}: epoch {} won by nodes {who:?}", epoch.0);
                        self.observed.violations.push(v);
                    }
                }
            }
        }
        self.arm(n);
    }

    fn feed_processor(&mut self, n: usize, p: usize, input: ProcessorInput) {
        if self.gated(n) {
            return;
        }
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let Some(pp) = c.processors[p].as_mut() else {
            match input {
                ProcessorInput::Invoke { token, .. } | ProcessorInput::Deliver { token, .. } => {
                    self.answer(
                        n,
                        token,
                        Resp::Invoke(InvokeReply::Unavailable("restarting".into())),
                    )
                }
                ProcessorInput::GetPersisted { token } => {
                    // Not answered: the caller's call times out.
                    if let Some(c) = self.nodes[n].cores.as_mut() {
                        c.serving.remove(&token);
                    }
                }
                _ => {}
            }
            return;
        };
        let was_leading = pp.mode() == Mode::Leader;
        let effects = pp.handle(&env, input);
        if !was_leading && pp.mode() == Mode::Leader {
            self.maybe_strand(n);
        }
        for e in effects {
            match e {
                ProcessorEffect::Reply { token, reply } => {
                    self.answer(n, token, Resp::Invoke(reply))
                }
                ProcessorEffect::RespondPersisted { token, reply } => {
                    self.answer(n, token, Resp::Persisted(reply))
                }
                ProcessorEffect::WriteSnapshot { snapshot } => {
                    self.sync_then(n, Lane::State, AfterSync::Snapshot { p, snapshot })
                }
                // No operator asks in the simulator.
                ProcessorEffect::SnapshotDone { .. } => {}
                ProcessorEffect::FetchSnapshot { at_least } => {
                    self.trace(n, "fetch-snapshot", at_least.0);
                    self.fetch_snapshot(n, inc, p, at_least, 0);
                }
                ProcessorEffect::Append {
                    op,
                    records,
                    timeout,
                } => {
                    let deadline = self.sched.now() + timeout;
                    let id = self.ids + 1;
                    self.appending
                        .insert(id, records.iter().map(|r| r.0.clone()).collect());
                    self.log_op(n, LogFrom::Append { p, op }, |id| LogInput::Append {
                        op: id,
                        log: LogId(p as u32),
                        records,
                        deadline,
                    });
                }
                ProcessorEffect::Read { from, max, wait } => {
                    let deadline = self.sched.now() + wait;
                    self.log_op(n, LogFrom::Read { p }, |id| LogInput::Read {
                        op: id,
                        log: LogId(p as u32),
                        from,
                        max,
                        deadline,
                    });
                }
                ProcessorEffect::SyncState { upto } => {
                    self.sync_then(n, Lane::State, AfterSync::Persisted { p, upto })
                }
                ProcessorEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    self.node_call(
                        n,
                        inc,
                        Origin::Processor(p, call),
                        to,
                        Req::Persisted(req),
                        timeout,
                    );
                }
                ProcessorEffect::Deliver {
                    call,
                    to,
                    fresh,
                    req,
                    timeout,
                } => {
                    // The target's leader as this node's replica of that
                    // partition knows it (the register's cache in a node),
                    // else the nodes in turn.
                    let target = req.partition.0 as usize;
                    let known = self.nodes[n]
                        .cores
                        .as_ref()
                        .and_then(|c| c.processors.get(target)?.as_ref()?.state().leader);
                    let nodes = &self.setup.nodes;
                    let to = to
                        .or(known.filter(|_| !fresh))
                        .unwrap_or(nodes[call.0 as usize % nodes.len()]);
                    self.node_call(
                        n,
                        inc,
                        Origin::Deliver(p, call),
                        to,
                        Req::Deliver(req),
                        timeout,
                    );
                }
                ProcessorEffect::Trim { below } => {
                    self.log_op(n, LogFrom::Trim, |id| LogInput::Trim {
                        op: id,
                        log: LogId(p as u32),
                        below,
                    });
                }
                ProcessorEffect::MoveSequencerHere => {
                    let deadline = self.sched.now() + Duration::from_secs(3);
                    self.log_op(n, LogFrom::MoveRefresh { p }, |id| LogInput::Refresh {
                        op: id,
                        log: LogId(p as u32),
                        deadline,
                    });
                }
                ProcessorEffect::Drain => {
                    self.sched
                        .after(Duration::ZERO, Event::Drained { node: n, inc, p });
                }
                // The supervisor's watchdog; the simulator checks liveness
                // itself (after the heal).
                ProcessorEffect::Watch { .. } | ProcessorEffect::Unwatch => {}
                ProcessorEffect::Stop { reason } => {
                    self.trace_text(n as u32 + 1, "proc-stop", p as u64, || reason);
                    if let Some(c) = self.nodes[n].cores.as_mut() {
                        c.processors[p] = None;
                    }
                    self.sched.after(
                        Duration::from_millis(500),
                        Event::RestartProcessor { node: n, inc, p },
                    );
                }
            }
        }
        self.arm(n);
    }

    /// Partition `p`'s processor on node `n` asks the `next`-th other node
    /// for a snapshot; past the last one, none came.
    fn fetch_snapshot(&mut self, n: usize, inc: u64, p: usize, at_least: Lsn, next: usize) {
        let me = self.nodes[n].id;
        let peer = self
            .setup
            .nodes
            .iter()
            .filter(|id| **id != me)
            .nth(next)
            .copied();
        match peer {
            Some(to) => {
                let origin = Origin::Snapshot { p, at_least, next };
                let req = Req::Snapshot { p, at_least };
                self.node_call(n, inc, origin, to, req, Duration::from_secs(2));
            }
            None => self.feed_processor(
                n,
                p,
                ProcessorInput::SnapshotFetched {
                    result: Err(FetchError::NoneHeld { at_least }),
                },
            ),
        }
    }

    // -----------------------------------------------------------------
    // Clients

    fn client_wake(&mut self, c: usize) {
        let now = self.now_us();
        if self.sched.elapsed() >= self.end {
            return;
        }
        let action = match self.clients.resume(c, now) {
            Some(a) => a,
            None => {
                let final_reads = self.sched.elapsed() >= self.final_reads;
                self.clients.start(c, now, final_reads, &mut self.rng)
            }
        };
        self.trace_text(0, "client", c as u64, String::new);
        self.client_act(c, action);
    }

    /// Register client `c` wakes: it starts its next operation on its
    /// node's proposer, or waits.
    fn register_wake(&mut self, c: usize) {
        if self.sched.elapsed() >= self.end {
            return;
        }
        let now = self.now_us();
        let n = self.registers.clients[c].node;
        let up = self.nodes[n].cores.is_some();
        let next_value = &mut self.clients.next_value;
        let fresh = || {
            let v = *next_value;
            *next_value += 1;
            v
        };
        match self
            .registers
            .wake(c, now, up, fresh, &mut self.clients.history)
        {
            RegisterAction::Sleep(d) => self.sched.after(d, Event::RegisterClient { c }),
            RegisterAction::Run(change) => {
                self.trace(n, "register-client", c as u64);
                // The watchdog: an answer normally comes first.
                let give_up = REGISTER_OP_TIMEOUT + Duration::from_millis(500);
                self.sched.after(give_up, Event::RegisterClient { c });
                let op = self.meta(
                    n,
                    MetaFrom::Register(c),
                    REGISTER_KEY.to_string(),
                    change,
                    REGISTER_OP_TIMEOUT,
                );
                self.registers.started(c, op);
            }
        }
    }

    fn client_act(&mut self, c: usize, action: ClientAction) {
        match action {
            ClientAction::Sleep(d) => self.sched.after(d, Event::Client { c }),
            ClientAction::Send {
                to,
                invoke,
                timeout,
            } => {
                let id = self.call(Owner::Client(c), to, Req::Invoke(invoke), timeout);
                self.clients.sent(c, id);
            }
        }
    }

    // -----------------------------------------------------------------
    // Faults and the failure detector

    fn fault(&mut self, f: Fault) {
        self.trace_text(0, "fault", 0, || format!("{f:?}"));
        let ids: Vec<NodeId> = self.setup.nodes.clone();
        match f {
            Fault::Isolate(n) => self.net.isolate(n, &ids),
            Fault::CutOneWay { from, to } => self.net.cut_one_way(from, to),
            Fault::Split { minority } => {
                for a in &minority {
                    for b in ids.iter().filter(|b| !minority.contains(b)) {
                        self.net.cut(*a, *b);
                    }
                }
            }
            Fault::Crash(node) => {
                let n = self.idx(node);
                if self.nodes[n].up {
                    self.nodes[n].crash(&mut self.rng);
                    self.down.insert(n);
                }
            }
            Fault::Restart(node) => self.restart(self.idx(node)),
            Fault::Wipe(node) => {
                let n = self.idx(node);
                if self.another_at_risk(n) {
                    // A second lost copy is beyond the model: a crash.
                    if self.nodes[n].up {
                        self.nodes[n].crash(&mut self.rng);
                        self.down.insert(n);
                    }
                } else {
                    self.nodes[n].wipe(&mut self.rng);
                    self.down.insert(n);
                    self.observed.wipes += 1;
                }
            }
            Fault::Rejoin(node) => self.restart(self.idx(node)),
            Fault::Lossy {
                from,
                to,
                drop,
                duplicate,
            } => {
                let link = LinkConfig {
                    drop,
                    duplicate,
                    ..self.link.clone()
                };
                self.net.degrade(from, to, link);
            }
            Fault::Deafen(node) => {
                for other in ids.iter().filter(|o| **o != node) {
                    self.net.cut_one_way(*other, node);
                }
            }
            Fault::Strand(node) => {
                for other in ids.iter().filter(|o| **o != node) {
                    self.net.cut_one_way(node, *other);
                }
            }
            Fault::SlowDisk { node, delay } => {
                let n = self.idx(node);
                self.slow_disk[n] = delay;
            }
            Fault::Overload { node, delay } => {
                let n = self.idx(node);
                self.overloaded[n] = delay;
            }
            Fault::Stall { node, length } => {
                let n = self.idx(node);
                let until = self.sched.now() + length;
                self.stalled_until[n] = Some(self.stalled_until[n].map_or(until, |u| u.max(until)));
            }
            Fault::HealLinks => self.net.heal(),
            Fault::HealAll => {
                self.net.heal();
                self.slow_disk.iter_mut().for_each(|d| *d = Duration::ZERO);
                self.overloaded.iter_mut().for_each(|d| *d = Duration::ZERO);
                for n in 0..self.nodes.len() {
                    if !self.nodes[n].up {
                        self.restart(n);
                    }
                }
            }
        }
        self.links_changed();
    }

    /// Starts node `n` from its disk.
    pub fn restart(&mut self, n: usize) {
        if self.nodes[n].up {
            return;
        }
        let base = self.sched.now() - self.sched.elapsed();
        let setup = self.setup.clone();
        self.nodes[n].start(&setup, base, &mut self.rng);
        self.down.remove(&n);
        // A fresh failure detector trusts everyone until it learns better.
        self.suspected[n].clear();
        for b in 0..self.nodes.len() {
            self.bad_since[n][b] = None;
        }
        self.links_changed();
        self.trace(n, "start", self.nodes[n].inc);
        let inc = self.nodes[n].inc;
        self.sched
            .after(SAMPLE_EVERY, Event::Health { node: n, inc });
        self.start_rejoin(n);
        // A host ticks the electors and processors once when it starts them.
        for p in 0..self.setup.partitions as usize {
            self.feed_elector(n, p, ElectorInput::Tick);
            self.feed_processor(n, p, ProcessorInput::Tick);
        }
        self.arm(n);
    }

    /// Whether `a` hears from `b` now (`b` is up and `b → a` is not cut):
    /// a heartbeat detector suspects a peer it stops hearing from.
    fn link_ok(&self, a: usize, b: usize) -> bool {
        let (x, y) = (self.nodes[a].id, self.nodes[b].id);
        self.nodes[b].up && self.net.can_send(y, x)
    }

    /// The truth of the links changed: schedule the detectors' verdicts.
    fn links_changed(&mut self) {
        let now = self.sched.now();
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a == b {
                    continue;
                }
                let ok = self.link_ok(a, b);
                match (ok, self.bad_since[a][b]) {
                    (false, None) => {
                        self.bad_since[a][b] = Some(now);
                        self.sched
                            .after(self.detect_lag, Event::Detect { at: a, peer: b });
                    }
                    (true, Some(_)) => {
                        self.bad_since[a][b] = None;
                        // Heartbeats resume: trust comes back quickly.
                        self.sched
                            .after(Duration::from_millis(150), Event::Detect { at: a, peer: b });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Node `n`'s health score takes a sample, as the transport's does
    /// every `SAMPLE_EVERY`: the commit waits its log-server judged since
    /// the last one; its electors learn which peers are degraded.
    fn score_health(&mut self, n: usize) {
        let now = self.sched.now();
        let me = self.nodes[n].id;
        let peers: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|x| x.id)
            .filter(|id| *id != me)
            .collect();
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        let counts = c.log_server.judge_commits(now);
        for p in &peers {
            let t = c.health_totals.entry(*p).or_insert(PeerSample {
                generation: Some(1),
                ..PeerSample::default()
            });
            if let Some(k) = counts.get(p) {
                t.commit_waits += k.waits;
                t.commit_slow += k.slow;
                t.commit_stuck += k.stuck;
            }
        }
        let changes = c.health.observe(now, &c.health_totals);
        let degraded: BTreeSet<NodeId> = peers
            .iter()
            .copied()
            .filter(|p| !c.health.is_healthy(*p))
            .collect();
        for change in changes {
            let what = if change.healthy {
                "peer-healthy"
            } else {
                *self.observed.degradations.entry(change.peer.0).or_default() += 1;
                "peer-degraded"
            };
            self.trace(n, what, change.peer.0 as u64);
        }
        // Who sequences each log's tail, as this node knows the chain, and
        // whether it is sick: a leader moves a sick sequencer here (the
        // processor's shell tells its core every second in a node).
        let tails: Vec<(usize, NodeId)> = (0..self.setup.partitions)
            .filter_map(|p| {
                let c = self.nodes[n].cores.as_ref()?;
                let (_, chain) = c.log.chain(crate::types::LogId(p))?;
                Some((p as usize, chain.tail().sequencer))
            })
            .collect();
        let suspected = self.suspected[n].clone();
        for (p, sequencer) in tails {
            let sick = degraded.contains(&sequencer) || suspected.contains(&sequencer);
            self.feed_processor(n, p, ProcessorInput::TailSequencer { sequencer, sick });
        }
        // Told every sample, as an elector's tick reads it in a node.
        for p in 0..self.setup.partitions as usize {
            self.feed_elector(
                n,
                p,
                ElectorInput::Health {
                    degraded: degraded.clone(),
                },
            );
        }
        self.arm(n);
    }

    fn detect(&mut self, at: usize, peer: usize) {
        let now = self.sched.now();
        let id = self.nodes[peer].id;
        let suspect = match self.bad_since[at][peer] {
            Some(since) => now.saturating_duration_since(since) >= self.detect_lag,
            None => false,
        };
        let changed = if suspect {
            self.suspected[at].insert(id)
        } else {
            self.suspected[at].remove(&id)
        };
        if changed {
            self.trace(at, if suspect { "suspect" } else { "trust" }, id.0 as u64);
        }
    }
}

/// The log-server's answer as the log cores' calls see it.
fn ls_to_log(resp: LsResponse) -> LogResponse {
    match resp {
        LsResponse::Store(r) => LogResponse::Store(r),
        LsResponse::Seal(r) => LogResponse::Seal(r),
        LsResponse::GetTail(r) => LogResponse::Seal(r),
        LsResponse::GetRecords(r) => LogResponse::Records(r),
        LsResponse::Trim(r) => LogResponse::Trim(r),
    }
}
