//! The rejoin after a lost disk in the simulator, hosted as the node's
//! `actors::rejoin` shell hosts it (same cores, same steps):
//!
//! - a wiped node's start is the operator's `keel node --rejoin`: it writes
//!   the rejoin mark durably on the blank disk, then starts with its
//!   acceptor not voting and everything else **gated** (no request but
//!   the register's is served, no elector or processor runs) until
//! - the **fence** read every chain through the register (whose quorums
//!   then consist of the other nodes) and wrote the marks of
//!   [`fence_marks`], synced;
//! - then the gate opens and [`RejoinCore`] (the register) and
//!   [`LogRejoinCore`] (the log) run; each effect is carried out the way
//!   the shell does: a list of keys is a call to a peer's acceptor, a
//!   key read is a read through this node's proposer, a chain read and a
//!   seal go through this node's log client, a copy is a call to a peer's
//!   log-server, a repair store is a call to this node's own log-server;
//! - when both are done the mark is removed. A crash during a rejoin keeps
//!   the mark and the progress (both synced), so the next start resumes.
//!
//! With `Bug::RejoinBlank`, a wiped node starts blank instead, voting and
//! serving at once: what the rejoin exists to prevent.

use super::{AfterSync, Origin, Req, Resp, World};
use crate::actors::bugs::Bug;
use crate::actors::log_server::core::LogServerStore;
use crate::actors::log_server::{GetRecords, Store};
use crate::actors::metadata::proposer::{Change, Outcome};
use crate::actors::metadata::rejoin::{RejoinCore, RejoinEffect, RejoinInput};
use crate::actors::metadata::MetaError;
use crate::actors::rejoin::fence::{fence_marks, fenced_state, needs_fencing};
use crate::actors::rejoin::log::{LogRejoinCore, LogRejoinEffect, LogRejoinInput};
use crate::actors::rejoin::{CALL_TIMEOUT, SEAL_TIMEOUT};
use crate::log::calls::{Request as LogRequest, Response as LogResponse};
use crate::log::core::Input as LogInput;
use crate::log::{chain_key, Chain};
use crate::node::CallError;
use crate::sim::disk::Lane;
use crate::sim::node::{LogFrom, MetaFrom};
use crate::storage::RejoinProgress;
use crate::types::{LogId, LogletId, NodeId, Offset};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The rejoin mark and its progress on a simulated disk (state lane), as
/// `REJOINING` and `RejoinProgress` are in a node's data directory.
const REJOIN_KEY: &[u8] = b"rejoin/progress";
/// Most bytes asked of a peer in one read of its records.
const COPY_PAGE_BYTES: u32 = 64 * 1024;
/// How long after a failed chain read the fence tries again.
const FENCE_RETRY: Duration = Duration::from_millis(500);

/// A rejoin call to another node (or this node's own log-server).
#[derive(Clone, Copy, Debug)]
pub enum RejoinCall {
    /// The key list of `to`'s acceptor.
    List { to: NodeId },
    /// A page of `loglet`'s records from `peer`, from `from`.
    Records {
        loglet: LogletId,
        peer: NodeId,
        from: Offset,
    },
    /// A repair store of `loglet` into this node's log-server.
    Store { loglet: LogletId },
}

/// One node's rejoin while it runs (gone with the cores at a crash).
#[derive(Debug)]
pub struct SimRejoin {
    /// While fencing: the logs whose chain is still to be read.
    fence: Option<BTreeSet<LogId>>,
    /// Chain reads of the fence in flight.
    fence_reading: BTreeSet<LogId>,
    /// The fence's chains read so far.
    fence_chains: Vec<Chain>,
    /// When failed fence reads are asked again.
    fence_again: Option<Instant>,
    /// The fence's marks are written and their sync is out.
    fence_syncing: bool,
    /// The register step (`None` once the acceptor votes).
    register: Option<RejoinCore>,
    /// The log step.
    log: LogRejoinCore,
}

impl SimRejoin {
    /// Whether requests other than the register's wait (the fence is not
    /// up yet).
    pub fn gated(&self) -> bool {
        self.fence.is_some()
    }

    /// When the rejoin wants to be ticked.
    pub fn next_wake(&self) -> Option<Instant> {
        let register = self.register.as_ref().and_then(|r| r.next_wake());
        let log = (!self.gated()).then(|| self.log.next_wake()).flatten();
        [self.fence_again, register, log]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The progress on `disk`, if a rejoin is under way.
fn progress(world: &World, n: usize) -> Option<RejoinProgress> {
    let disk = world.nodes[n].disk.borrow();
    let bytes = disk.get(REJOIN_KEY)?;
    Some(crate::storage::decode("rejoin", bytes).unwrap_or_default())
}

/// Writes `p` and syncs the state lane at once (the real node's mark and
/// progress are written and synced before it goes on).
fn put_progress(world: &World, n: usize, p: RejoinProgress) {
    let mut disk = world.nodes[n].disk.borrow_mut();
    disk.put(Lane::State, REJOIN_KEY.to_vec(), crate::storage::encode(&p));
    disk.sync(Lane::State);
}

impl World {
    /// Whether node `n` is fencing (only the register is served).
    pub(super) fn gated(&self, n: usize) -> bool {
        self.nodes[n]
            .cores
            .as_ref()
            .and_then(|c| c.rejoin.as_ref())
            .is_some_and(|r| r.gated())
    }

    /// Whether some node other than `n` is down or still rejoining: a
    /// wipe then would be a second lost copy, outside the failure model
    /// (one lost disk at a time, with both others up to copy from).
    pub(super) fn another_at_risk(&self, n: usize) -> bool {
        (0..self.nodes.len()).any(|o| {
            o != n && (!self.nodes[o].up || self.nodes[o].wiped || progress(self, o).is_some())
        })
    }

    /// Node `n` starts (cores just built): a wiped node writes the rejoin
    /// mark first; a node with the mark starts its rejoin.
    pub(super) fn start_rejoin(&mut self, n: usize) {
        if std::mem::take(&mut self.nodes[n].wiped) {
            if self.setup.bugs.has(Bug::RejoinBlank) {
                return;
            }
            put_progress(self, n, RejoinProgress::default());
        }
        let Some(p) = progress(self, n) else {
            return;
        };
        self.trace(
            n,
            "rejoin-start",
            p.fenced as u64 * 2 + p.register_done as u64,
        );
        let logs = self.setup.partitions;
        let Some(c) = self.nodes[n].cores.as_mut() else {
            return;
        };
        c.acceptor.set_voting(p.register_done);
        c.rejoin = Some(SimRejoin {
            fence: (!p.fenced).then(|| (0..logs).map(LogId).collect()),
            fence_reading: BTreeSet::new(),
            fence_chains: Vec::new(),
            fence_again: None,
            fence_syncing: false,
            register: (!p.register_done).then(RejoinCore::new),
            log: LogRejoinCore::new(logs),
        });
        if p.fenced {
            self.rejoin_feed(n, Some(RejoinInput::Tick), Some(LogRejoinInput::Tick));
        } else {
            self.fence_step(n);
        }
    }

    /// Ticks whatever of node `n`'s rejoin is due.
    pub(super) fn rejoin_tick(&mut self, n: usize) {
        let now = self.sched.now();
        let Some(r) = self.nodes[n].cores.as_mut().and_then(|c| c.rejoin.as_mut()) else {
            return;
        };
        if r.fence_again.is_some_and(|t| t <= now) {
            r.fence_again = None;
            self.fence_step(n);
        } else if !r.gated() {
            self.rejoin_feed(n, Some(RejoinInput::Tick), Some(LogRejoinInput::Tick));
        }
    }

    /// Asks for every chain the fence still lacks.
    fn fence_step(&mut self, n: usize) {
        let Some(r) = self.nodes[n].cores.as_mut().and_then(|c| c.rejoin.as_mut()) else {
            return;
        };
        let Some(left) = r.fence.as_ref() else {
            return;
        };
        let ask: Vec<LogId> = left
            .iter()
            .filter(|l| !r.fence_reading.contains(l))
            .copied()
            .collect();
        r.fence_reading.extend(ask.iter().copied());
        for log in ask {
            let from = MetaFrom::Fence { log };
            self.meta(n, from, chain_key(log), Change::Read, CALL_TIMEOUT);
        }
    }

    /// A fence read of `log`'s chain ended.
    pub(super) fn fence_read(&mut self, n: usize, log: LogId, result: Result<Outcome, MetaError>) {
        let now = self.sched.now();
        let Some(r) = self.nodes[n].cores.as_mut().and_then(|c| c.rejoin.as_mut()) else {
            return;
        };
        if !r.fence_reading.remove(&log) {
            return;
        }
        let chain = match result {
            Ok(Outcome::Value(v)) | Ok(Outcome::Conflict(v)) => v
                .map(|v| rmp_serde::from_slice::<Chain>(&v.value).map_err(|e| e.to_string()))
                .transpose(),
            Err(e) => Err(e.to_string()),
        };
        match chain {
            Ok(chain) => {
                r.fence_chains.extend(chain);
                if let Some(left) = r.fence.as_mut() {
                    left.remove(&log);
                }
            }
            Err(_) => {
                r.fence_again.get_or_insert(now + FENCE_RETRY);
                return;
            }
        }
        if r.fence.as_ref().is_some_and(|l| l.is_empty()) && !r.fence_syncing {
            r.fence_syncing = true;
            let chains = std::mem::take(&mut r.fence_chains);
            self.write_fence(n, &chains);
        }
    }

    /// Writes the fence's marks for `chains`, then syncs them.
    fn write_fence(&mut self, n: usize, chains: &[Chain]) {
        let me = self.nodes[n].id;
        let Some(c) = self.nodes[n].cores.as_ref() else {
            return;
        };
        let mut store = c.log_server.store().clone();
        let mut marked = 0;
        for mark in chains.iter().flat_map(|ch| fence_marks(me, ch)) {
            let current = store.loglet_state(mark.loglet).unwrap_or_default();
            if mark.lost && needs_fencing(&current) {
                let _ = store.put_loglet_state(mark.loglet, &fenced_state());
                marked += 1;
            }
            store.mark_sequencer_started(mark.loglet);
        }
        self.trace(n, "fence-written", marked);
        self.sync_then(n, Lane::State, AfterSync::Fenced);
    }

    /// The fence is durable: record it, open the gate, start the cores.
    pub(super) fn fenced(&mut self, n: usize) {
        let Some(mut p) = progress(self, n) else {
            return;
        };
        p.fenced = true;
        put_progress(self, n, p);
        if let Some(r) = self.nodes[n].cores.as_mut().and_then(|c| c.rejoin.as_mut()) {
            r.fence = None;
            r.fence_syncing = false;
        }
        self.trace(n, "fenced", 0);
        // The host ticks the electors and processors it held back.
        for p in 0..self.setup.partitions as usize {
            self.feed_elector(n, p, crate::actors::leader_elector::ElectorInput::Tick);
            self.feed_processor(
                n,
                p,
                crate::actors::partition_processor::ProcessorInput::Tick,
            );
        }
        self.rejoin_feed(n, Some(RejoinInput::Tick), Some(LogRejoinInput::Tick));
    }

    /// Feeds the rejoin's cores (either input may be absent) and carries
    /// out their effects; ends the rejoin once both are done.
    pub(super) fn rejoin_feed(
        &mut self,
        n: usize,
        register: Option<RejoinInput>,
        log: Option<LogRejoinInput>,
    ) {
        let env = self.env(n);
        let inc = self.nodes[n].inc;
        let Some(r) = self.nodes[n].cores.as_mut().and_then(|c| c.rejoin.as_mut()) else {
            return;
        };
        if r.gated() {
            return;
        }
        let reg_effects = match (r.register.as_mut(), register) {
            (Some(core), Some(input)) => core.handle(&env, input),
            _ => Vec::new(),
        };
        let log_effects = match log {
            Some(input) => r.log.handle(&env, input),
            None => Vec::new(),
        };
        for e in reg_effects {
            match e {
                RejoinEffect::List { to } => {
                    let origin = Origin::Rejoin(RejoinCall::List { to });
                    self.node_call(n, inc, origin, to, Req::ListKeys, CALL_TIMEOUT);
                }
                RejoinEffect::Read { key } => {
                    self.trace_text(n as u32 + 1, "rejoin-read", 0, || key.clone());
                    let from = MetaFrom::RejoinRead { key: key.clone() };
                    self.meta(n, from, key, Change::Read, CALL_TIMEOUT);
                }
                RejoinEffect::Vote => {
                    if let Some(mut p) = progress(self, n) {
                        p.register_done = true;
                        put_progress(self, n, p);
                    }
                    if let Some(c) = self.nodes[n].cores.as_mut() {
                        c.acceptor.set_voting(true);
                        if let Some(r) = c.rejoin.as_mut() {
                            r.register = None;
                        }
                    }
                    self.trace(n, "rejoin-votes", 0);
                }
            }
        }
        for e in log_effects {
            self.log_rejoin_effect(n, inc, e);
        }
        self.maybe_end_rejoin(n);
        self.arm(n);
    }

    fn log_rejoin_effect(&mut self, n: usize, inc: u64, e: LogRejoinEffect) {
        let me = self.nodes[n].id;
        match e {
            LogRejoinEffect::ReadLost => {
                let result = match self.nodes[n].cores.as_ref() {
                    Some(c) => c
                        .log_server
                        .store()
                        .lost_loglets()
                        .map_err(|e| e.to_string()),
                    None => return,
                };
                self.rejoin_feed(n, None, Some(LogRejoinInput::Lost { result }));
            }
            LogRejoinEffect::ReadChain { log } => {
                let deadline = self.sched.now() + CALL_TIMEOUT;
                self.log_op(n, LogFrom::RejoinChain { log }, |op| LogInput::Refresh {
                    op,
                    log,
                    deadline,
                });
            }
            LogRejoinEffect::Seal { segment } => {
                let log = segment.loglet.log();
                let deadline = self.sched.now() + SEAL_TIMEOUT;
                self.log_op(n, LogFrom::RejoinSeal { log }, |op| LogInput::Seal {
                    op,
                    segment,
                    deadline,
                });
            }
            LogRejoinEffect::GetRecords {
                peer,
                loglet,
                from,
                to,
            } => {
                let req = LogRequest::GetRecords(GetRecords {
                    loglet,
                    from,
                    to,
                    max_bytes: COPY_PAGE_BYTES,
                    include_uncommitted: true,
                });
                let origin = Origin::Rejoin(RejoinCall::Records { loglet, peer, from });
                self.node_call(n, inc, origin, peer, Req::Log(req), CALL_TIMEOUT);
            }
            LogRejoinEffect::Store {
                loglet,
                first,
                records,
            } => {
                let req = LogRequest::Store(Store {
                    loglet,
                    first,
                    records: Arc::new(records),
                    known_global_tail: 0,
                    repair: true,
                    from: None,
                });
                let origin = Origin::Rejoin(RejoinCall::Store { loglet });
                self.node_call(n, inc, origin, me, Req::Log(req), CALL_TIMEOUT);
            }
            LogRejoinEffect::Clear { loglet } => {
                let result = match self.nodes[n].cores.as_mut() {
                    Some(c) => c.log_server.clear_lost(loglet),
                    None => return,
                };
                match result {
                    Ok((_, effects)) => {
                        self.log_server_effects(n, effects);
                        self.sync_then(n, Lane::State, AfterSync::Cleared { loglet });
                    }
                    Err(e) => {
                        let result = Err(e.to_string());
                        self.rejoin_feed(n, None, Some(LogRejoinInput::Cleared { loglet, result }));
                    }
                }
            }
            LogRejoinEffect::Done => self.trace(n, "rejoin-log-done", 0),
        }
    }

    /// A rejoin call of node `n` was answered (or failed).
    pub(super) fn rejoin_reply(
        &mut self,
        n: usize,
        call: RejoinCall,
        result: Result<Resp, CallError>,
    ) {
        match call {
            RejoinCall::List { to } => {
                let result = match result {
                    Ok(Resp::Keys(r)) => r,
                    Ok(_) => Err("a wrong reply".into()),
                    Err(e) => Err(e.to_string()),
                };
                let input = RejoinInput::Listed { from: to, result };
                self.rejoin_feed(n, Some(input), None);
            }
            RejoinCall::Records { loglet, peer, from } => {
                let result = match result {
                    Ok(Resp::Log(LogResponse::Records(r))) => r.map_err(|e| e.to_string()),
                    Ok(_) => Err("a wrong reply".into()),
                    Err(e) => Err(e.to_string()),
                };
                let input = LogRejoinInput::Records {
                    loglet,
                    peer,
                    from,
                    result,
                };
                self.rejoin_feed(n, None, Some(input));
            }
            RejoinCall::Store { loglet } => {
                use crate::actors::log_server::StoreReply;
                let result = match result {
                    Ok(Resp::Log(LogResponse::Store(StoreReply::Stored { .. }))) => Ok(()),
                    Ok(other) => Err(format!("repair store answered {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                self.rejoin_feed(n, None, Some(LogRejoinInput::Stored { loglet, result }));
            }
        }
    }

    /// A register read of the rejoin ended.
    pub(super) fn rejoin_read(
        &mut self,
        n: usize,
        key: String,
        result: Result<Outcome, MetaError>,
    ) {
        let result = result.map(|_| ()).map_err(|e| e.to_string());
        self.trace_text(n as u32 + 1, "rejoin-read-done", 0, || {
            format!("{key}: {result:?}")
        });
        self.rejoin_feed(n, Some(RejoinInput::Read { key, result }), None);
    }

    /// A chain read or seal of the log step ended.
    pub(super) fn rejoin_chain(&mut self, n: usize, log: LogId, result: Result<Chain, String>) {
        self.rejoin_feed(n, None, Some(LogRejoinInput::Chain { log, result }));
    }

    /// Both steps done: the mark goes (synced at once).
    fn maybe_end_rejoin(&mut self, n: usize) {
        let Some(r) = self.nodes[n].cores.as_ref().and_then(|c| c.rejoin.as_ref()) else {
            return;
        };
        if r.gated() || r.register.is_some() || !r.log.is_done() {
            return;
        }
        {
            let mut disk = self.nodes[n].disk.borrow_mut();
            disk.remove(Lane::State, REJOIN_KEY);
            disk.sync(Lane::State);
        }
        if let Some(c) = self.nodes[n].cores.as_mut() {
            c.rejoin = None;
        }
        self.observed.rejoins += 1;
        self.trace(n, "rejoin-done", 0);
    }

    /// Nodes whose rejoin has not ended (for the end-of-run check).
    pub fn still_rejoining(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|n| self.nodes[*n].wiped || progress(self, *n).is_some())
            .map(|n| self.nodes[n].id)
            .collect()
    }
}
