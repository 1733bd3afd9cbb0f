//! Bringing a node back after a lost disk (`keel node --rejoin`).
//!
//! A node whose data directory was emptied forgot promises it made: its
//! acceptor's ballots and accepted values, its log-server's records and
//! seals, its sequencers' start marks. It comes back under its old identity
//! in steps, each durable before the next, so a crash during a rejoin
//! resumes it (the mark `REJOINING` in the data directory stays until the
//! last step; `storage::RejoinProgress` records the steps taken):
//!
//! 1. **Fence** ([`fence`], before any actor of the node runs, so nothing
//!    is served from the blank state): read every log's chain linearizably
//!    (through the register, whose quorums then consist of the other
//!    nodes); mark every loglet of a segment whose nodeset holds this node
//!    `lost` and sealed on its log-server (so it never reads as empty and
//!    open: no normal store, and no seal counts it) and mark the sequencer
//!    of every segment it is in or sequences started (an append to it is
//!    answered `Gone` and sealed, never given offsets again); the plan is
//!    [`fence::fence_marks`]. Loglets created after this read are new to
//!    everyone.
//! 2. **Register** (`metadata::rejoin`): the acceptor does not vote until
//!    it learnt every key from a majority of the others.
//! 3. **Log** ([`log::LogRejoinCore`]): every lost loglet is sealed if open,
//!    its records copied back from the other members of its nodeset, and
//!    its mark cleared, so every segment is back to `r` copies.
//! 4. **Partitions**: the processors start from an empty state and follow
//!    the log from its start, or, where it was trimmed, restore a peer's
//!    snapshot first (see the partition processor).
//!
//! The [`Rejoiner`] actor (a shell over the two cores) runs steps 2 and 3
//! and then removes the mark; status shows where it stands.

pub mod fence;
pub mod log;

use self::log::{LogRejoinCore, LogRejoinEffect, LogRejoinInput};
use crate::actors::log_server::{ClearLost, GetRecords, LogServer, Store, StoreReply};
use crate::actors::metadata::messages::ListKeys;
use crate::actors::metadata::rejoin::{RejoinCore, RejoinEffect, RejoinInput, RejoinStatus};
use crate::actors::metadata::{MetadataClient, MetadataStore, StartVoting};
use crate::actors::supervisor::Slot;
use crate::log::{chain_key, Chain, LogClient};
use crate::node::Net;
use crate::storage::{identity, RejoinProgress, Storage};
use crate::types::{LogId, LogletId, NodeId};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// How long one register or peer call of a rejoin may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a seal of a lost open tail may take.
pub const SEAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes asked of a peer in one read of its records.
const COPY_PAGE_BYTES: u32 = 4 * 1024 * 1024;
/// How often the cores are ticked even when they asked for no wake (status
/// stays fresh, and no lost wake can stall a rejoin).
const TICK: Duration = Duration::from_millis(250);

/// Where a rejoin stands, for status (`keelctl status`, `/cluster/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinView {
    /// The step under way: `fence`, `register`, `log`, or `done`.
    pub step: String,
    /// What that step waits for, in words.
    pub detail: String,
}

/// The node's rejoin status, shared with the status source.
pub type RejoinState = Arc<Mutex<Option<RejoinView>>>;

/// Sets the shared status.
pub fn show(state: &RejoinState, step: &str, detail: String) {
    *state.lock().unwrap_or_else(|p| p.into_inner()) = Some(RejoinView {
        step: step.to_string(),
        detail,
    });
}

/// Why a fence could not be put up (retried by the caller).
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("reading the chain of log {log}: {reason}")]
    Chain { log: LogId, reason: String },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Step 1: marks every loglet this node may have held lost, from chains
/// read linearizably. Returns how many it marked. Loglets it already
/// holds state for (a fence repeated after a crash, or loglets re-replicated
/// since) are left as they are.
pub async fn fence(
    me: NodeId,
    logs: u32,
    meta: &MetadataClient,
    storage: &Storage,
) -> Result<usize, FenceError> {
    let mut marked = 0;
    for l in 0..logs {
        let log = LogId(l);
        let chain = meta
            .read_typed::<Chain>(&chain_key(log), CALL_TIMEOUT)
            .await
            .map_err(|e| FenceError::Chain {
                log,
                reason: e.to_string(),
            })?;
        let Some((_, chain)) = chain else {
            continue; // never created: nothing to forget
        };
        for mark in fence::fence_marks(me, &chain) {
            if mark.lost && fence::needs_fencing(&storage.log.loglet_state(mark.loglet)?) {
                storage
                    .log
                    .put_loglet_state(mark.loglet, &fence::fenced_state())?;
                marked += 1;
            }
            storage.meta.mark_sequencer_started(mark.loglet)?;
        }
    }
    let mut progress = storage.meta.rejoin_progress()?;
    progress.fenced = true;
    storage.meta.set_rejoin_progress(progress)?;
    storage.sync_state().await?;
    Ok(marked)
}

/// A call's outcome with either failure (the call's or the server's) in
/// words, as the cores take it.
fn in_words<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, crate::node::CallError>,
) -> Result<T, String> {
    r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// The rejoin actor: runs the register and log steps, then ends the rejoin.
pub struct Rejoiner {
    /// Calls to peers; builds the `Env`.
    net: Net,
    /// Register reads for the register step.
    meta: MetadataClient,
    /// Chain reads and seals for the log step.
    logs: LogClient,
    /// Progress and the local log-server's store.
    storage: Storage,
    /// The local log-server (repair stores, clearing marks).
    log_server: Slot<LogServer>,
    /// The local acceptor (told to vote).
    acceptor: Slot<MetadataStore>,
    /// The data directory (its rejoin mark goes at the end).
    data_dir: PathBuf,
    /// The register step (`None` once done, also in an earlier incarnation).
    register: Option<RejoinCore>,
    /// The log step.
    log: LogRejoinCore,
    /// Where status is shown.
    state: RejoinState,
    /// The rejoin mark was removed.
    finished: bool,
}

impl Rejoiner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        net: Net,
        meta: MetadataClient,
        logs: LogClient,
        storage: Storage,
        log_server: Slot<LogServer>,
        acceptor: Slot<MetadataStore>,
        data_dir: PathBuf,
        state: RejoinState,
    ) -> Self {
        let done = storage
            .meta
            .rejoin_progress()
            .map(|p| p.register_done)
            .unwrap_or(false);
        let log_count = logs.log_count();
        Rejoiner {
            net,
            meta,
            logs,
            storage,
            log_server,
            acceptor,
            data_dir,
            register: (!done).then(RejoinCore::new),
            log: LogRejoinCore::new(log_count),
            state,
            finished: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // What the cache learnt of keys still to be read may spare a read.
        let waiting = self.register.as_ref().map(|r| r.waiting_keys());
        for key in waiting.unwrap_or_default() {
            if let Some(v) = self.meta.cache().get(&key) {
                let version = v.version;
                self.feed_register(RejoinInput::Chosen { key, version }, ctx);
            }
        }
        self.feed_register(RejoinInput::Tick, ctx);
        self.feed_log(LogRejoinInput::Tick, ctx);
    }

    fn feed_register(&mut self, input: RejoinInput, ctx: &mut Context<Self>) {
        let env = self.net.env();
        let Some(core) = self.register.as_mut() else {
            return;
        };
        for effect in core.handle(&env, input) {
            match effect {
                RejoinEffect::List { to } => {
                    let net = self.net.clone();
                    let call = async move { net.call(to, ListKeys {}, CALL_TIMEOUT).await };
                    ctx.spawn(call.into_actor(self).map(move |r, act, ctx| {
                        let result = in_words(r);
                        act.feed_register(RejoinInput::Listed { from: to, result }, ctx)
                    }));
                }
                RejoinEffect::Read { key } => {
                    let meta = self.meta.clone();
                    let k = key.clone();
                    let read = async move { meta.read(&k, CALL_TIMEOUT).await };
                    ctx.spawn(read.into_actor(self).map(move |r, act, ctx| {
                        let result = r.map(|_| ()).map_err(|e| e.to_string());
                        act.feed_register(RejoinInput::Read { key, result }, ctx)
                    }));
                }
                RejoinEffect::Vote => {
                    let storage = self.storage.clone();
                    let vote = async move {
                        let mut p = storage.meta.rejoin_progress()?;
                        p.register_done = true;
                        storage.meta.set_rejoin_progress(p)?;
                        storage.sync_state().await
                    };
                    ctx.spawn(vote.into_actor(self).map(|r, act, _| match r {
                        Ok(()) => {
                            if let Some(a) = act.acceptor.addr() {
                                a.do_send(StartVoting);
                            }
                            act.register = None;
                            act.update();
                        }
                        // Not durable: the core is done, so start it over.
                        Err(e) => {
                            warn!("recording the register rejoin failed: {e}");
                            act.register = Some(RejoinCore::new());
                        }
                    }));
                }
            }
        }
        self.update();
    }

    fn feed_log(&mut self, input: LogRejoinInput, ctx: &mut Context<Self>) {
        let env = self.net.env();
        for effect in self.log.handle(&env, input) {
            match effect {
                LogRejoinEffect::ReadLost => {
                    let result = self
                        .storage
                        .log
                        .loglets()
                        .map(|all| {
                            all.into_iter()
                                .filter(|(_, s)| s.lost)
                                .map(|(l, _)| l)
                                .collect()
                        })
                        .map_err(|e| e.to_string());
                    ctx.notify(FeedLog(LogRejoinInput::Lost { result }));
                }
                LogRejoinEffect::ReadChain { log } => {
                    let logs = self.logs.clone();
                    let read = async move { logs.refresh_chain(log, CALL_TIMEOUT).await };
                    ctx.spawn(read.into_actor(self).map(move |r, act, ctx| {
                        let result = r.map_err(|e| e.to_string());
                        act.feed_log(LogRejoinInput::Chain { log, result }, ctx)
                    }));
                }
                LogRejoinEffect::Seal { segment } => {
                    let logs = self.logs.clone();
                    let log = segment.loglet.log();
                    let seal = async move { logs.seal_and_extend(&segment, SEAL_TIMEOUT).await };
                    ctx.spawn(seal.into_actor(self).map(move |r, act, ctx| {
                        let result = r.map_err(|e| e.to_string());
                        act.feed_log(LogRejoinInput::Chain { log, result }, ctx)
                    }));
                }
                LogRejoinEffect::GetRecords {
                    peer,
                    loglet,
                    from,
                    to,
                } => {
                    let net = self.net.clone();
                    let req = GetRecords {
                        loglet,
                        from,
                        to,
                        max_bytes: COPY_PAGE_BYTES,
                        include_uncommitted: true,
                    };
                    let call = async move { net.call(peer, req, CALL_TIMEOUT).await };
                    ctx.spawn(call.into_actor(self).map(move |r, act, ctx| {
                        let result = in_words(r);
                        let input = LogRejoinInput::Records {
                            loglet,
                            peer,
                            from,
                            result,
                        };
                        act.feed_log(input, ctx)
                    }));
                }
                LogRejoinEffect::Store {
                    loglet,
                    first,
                    records,
                } => {
                    let server = self.log_server.addr();
                    let store = Store {
                        loglet,
                        first,
                        records: Arc::new(records),
                        known_global_tail: 0,
                        repair: true,
                        from: None,
                    };
                    let call = async move {
                        let server =
                            server.ok_or_else(|| "local log-server restarting".to_string())?;
                        match server.send(store).await {
                            Ok(StoreReply::Stored { .. }) => Ok(()),
                            Ok(other) => Err(format!("repair store answered {other:?}")),
                            Err(e) => Err(format!("local log-server: {e}")),
                        }
                    };
                    ctx.spawn(call.into_actor(self).map(move |result, act, ctx| {
                        act.feed_log(LogRejoinInput::Stored { loglet, result }, ctx)
                    }));
                }
                LogRejoinEffect::Clear { loglet } => self.clear(loglet, ctx),
                LogRejoinEffect::Done => {}
            }
        }
        self.update();
    }

    fn clear(&mut self, loglet: LogletId, ctx: &mut Context<Self>) {
        let server = self.log_server.addr();
        let call = async move {
            let server = server.ok_or_else(|| "local log-server restarting".to_string())?;
            match server.send(ClearLost { loglet }).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("local log-server: {e}")),
            }
        };
        ctx.spawn(call.into_actor(self).map(move |result, act, ctx| {
            act.feed_log(LogRejoinInput::Cleared { loglet, result }, ctx)
        }));
    }

    /// Shows where the rejoin stands; ends it once both steps are done.
    fn update(&mut self) {
        if self.finished {
            return;
        }
        let env = self.net.env();
        if let Some(core) = &self.register {
            let detail = match core.status(&env) {
                RejoinStatus::Listing { answered, needed } => {
                    format!("listing register keys: {answered} of {needed} peers answered")
                }
                RejoinStatus::Reading { done, total } => {
                    format!("re-reading register keys: {done} of {total}")
                }
                RejoinStatus::Done => "voting again".into(),
            };
            show(&self.state, "register", detail);
            return;
        }
        if !self.log.is_done() {
            let s = self.log.status();
            let detail = match s.lost {
                None => "listing lost loglets".to_string(),
                Some(lost) => {
                    let mut d =
                        format!("re-replicating lost loglets: {} of {lost} back", s.cleared);
                    if s.awaiting_seal > 0 {
                        d.push_str(&format!(", {} open tail(s) being sealed", s.awaiting_seal));
                    }
                    if !s.waiting_for.is_empty() {
                        let peers: Vec<String> =
                            s.waiting_for.iter().map(|n| n.to_string()).collect();
                        d.push_str(&format!(", copying from {}", peers.join(", ")));
                    }
                    d
                }
            };
            show(&self.state, "log", detail);
            return;
        }
        match identity::finish_rejoin(&self.data_dir) {
            Ok(()) => {
                self.finished = true;
                info!("rejoin complete: this node votes, stores and counts again");
                show(&self.state, "done", "rejoin complete".into());
            }
            Err(e) => {
                warn!("ending the rejoin failed (retried): {e}");
                show(&self.state, "log", format!("removing the rejoin mark: {e}"));
            }
        }
    }
}

/// Feeds the log core from inside the actor (after a synchronous effect).
#[derive(Message)]
#[rtype(result = "()")]
struct FeedLog(LogRejoinInput);

impl Handler<FeedLog> for Rejoiner {
    type Result = ();
    fn handle(&mut self, msg: FeedLog, ctx: &mut Context<Self>) {
        self.feed_log(msg.0, ctx);
    }
}

impl Actor for Rejoiner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(node = %self.net.me(), "rejoin after a lost disk under way");
        if self.register.is_none() {
            if let Some(a) = self.acceptor.addr() {
                a.do_send(StartVoting);
            }
        }
        self.tick(ctx);
        // The cores' retries are due at `next_wake`; a steady tick serves
        // them all (a rejoin is rare and short, and the tick is cheap).
        ctx.run_interval(TICK, |act, ctx| {
            if !act.finished {
                act.tick(ctx);
            }
        });
    }
}

impl Handler<crate::actors::supervisor::Ping> for Rejoiner {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}

/// Whether the acceptor of a node with this progress may vote.
pub fn acceptor_votes(data_dir: &std::path::Path, progress: RejoinProgress) -> bool {
    !identity::rejoining(data_dir) || progress.register_done
}
