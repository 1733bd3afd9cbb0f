//! The log-server's protocol core, without I/O: every rule a log-server
//! keeps, over a narrow [`LogServerStore`] (the node's record log and sled in
//! a node, the simulated disk in the simulator).
//!
//! Rules held here (DESIGN.md, "The log"):
//! - **limits**: a store of more than [`MAX_STORE_RECORDS`] records or
//!   [`MAX_STORE_BYTES`] bytes is refused, and so is one whose offsets would
//!   pass `u64::MAX` (checked offsets, never a wrap);
//! - **durable before acknowledged**: `Stored` is answered only once the
//!   records are synced ([`Effect::RespondAfterSync`] on [`Lane::Records`]);
//!   a seal or a trim only once the loglet state is ([`Lane::State`]);
//! - **the seal rule**: once sealed, every normal store is refused with
//!   `Sealed`; a sealer's tail-repair store is still accepted. With an
//!   f-majority sealed, no new write quorum can form;
//! - **the trim point is final**: offsets below it are never stored again,
//!   not by a late resend and not by a repair;
//! - **reads below the known global tail**: only committed offsets are served
//!   unless the caller asks for uncommitted ones (a sealer, or a reader that
//!   learned the tail elsewhere); offsets found damaged are reported with the
//!   records, so their absence is not taken for "never written";
//! - **suspect servers say so**: a server that may have lost records it
//!   cannot name flags every tail it reports (a seal must not count it);
//!   so does one that lost a whole loglet with its disk (`lost`, set by a
//!   rejoin's fence), which also refuses every normal store of it;
//! - **local readers follow the tail**: [`Effect::Tail`] whenever what a
//!   loglet's tail info says changes (and when a loglet is first loaded);
//! - **commit progress is watched**, for the health score only (no rule
//!   here depends on it): how long records stored for a peer's sequencer
//!   wait for their commit ([`super::commit_watch`],
//!   [`LogServerCore::judge_commits`]).
//!
//! The core keeps no truth of its own: a new core re-derives each loglet's
//! state from the store on first use. A storage error is answered as an
//! error, never read as absence.

use super::commit_watch::{CommitCounts, CommitWatch, SLOW_COMMIT};
use super::messages::{
    GetRecords, GetTail, LogServerError, RecordsReply, Release, Seal, Store, StoreReply, TailInfo,
    Trim, MAX_STORE_BYTES, MAX_STORE_RECORDS,
};
use crate::actors::bugs::{Bug, BugSet};
use crate::actors::env::Env;
use crate::log::Record;
use crate::storage::LogletState;
use crate::types::{LogletId, NodeId, Offset};
use std::collections::BTreeMap;
use std::time::Instant;
use tracing::{debug, info};

pub use crate::sim::disk::Lane;

/// What a log-server core needs from storage: synchronous reads, and writes
/// that are buffered (durable only after the host syncs their lane).
pub trait LogServerStore {
    /// The durable state of `loglet` (the default if it has none).
    fn loglet_state(&self, loglet: LogletId) -> crate::storage::Result<LogletState>;
    /// Writes `loglet`'s state ([`Lane::State`]).
    fn put_loglet_state(
        &mut self,
        loglet: LogletId,
        state: &LogletState,
    ) -> crate::storage::Result<()>;
    /// Writes `records` at `first, first + 1, ...` ([`Lane::Records`]);
    /// offsets already held are left as they are.
    fn put_records(
        &mut self,
        loglet: LogletId,
        first: Offset,
        records: &[Record],
    ) -> crate::storage::Result<()>;
    /// Records held in `[from, to)`, in offset order, stopping after
    /// `max_bytes` (at least one record if any is held). Missing and damaged
    /// offsets are absent.
    fn read_records(
        &self,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    ) -> crate::storage::Result<Vec<(Offset, Record)>>;
    /// One past the highest offset held for `loglet` (0 if none).
    fn local_tail(&self, loglet: LogletId) -> crate::storage::Result<Offset>;
    /// Drops the records below `below` (the caller persists the trim point).
    fn trim(&mut self, loglet: LogletId, below: Offset) -> crate::storage::Result<()>;
    /// Offsets of `[from, to)` found damaged and not stored again since.
    fn damaged_in(&self, loglet: LogletId, from: Offset, to: Offset) -> Vec<Offset>;
    /// Whether this server may lack records it cannot name.
    fn suspect(&self) -> bool;
}

/// A host's handle on one request, returned with its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

/// What the core is configured with.
#[derive(Clone, Debug)]
pub struct LogServerConfig {
    /// This node (for logs).
    pub node: NodeId,
    /// Deliberately wrong rules, for the simulator's tests (empty otherwise).
    pub bugs: BugSet,
}

/// A request a log-server serves.
#[derive(Clone, Debug)]
pub enum Request {
    Store(Store),
    Seal(Seal),
    GetTail(GetTail),
    GetRecords(GetRecords),
    Trim(Trim),
}

/// The answer to a [`Request`], of the matching kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Store(StoreReply),
    Seal(Result<TailInfo, LogServerError>),
    GetTail(Result<TailInfo, LogServerError>),
    GetRecords(Result<RecordsReply, LogServerError>),
    Trim(Result<(), LogServerError>),
}

impl Response {
    /// The same kind of answer, as the error `e`: what a host answers when
    /// the sync a [`Effect::RespondAfterSync`] waited for failed (nothing
    /// that sync covered may be acknowledged).
    pub fn failed(self, e: LogServerError) -> Response {
        match self {
            Response::Store(_) => Response::Store(StoreReply::Failed(e)),
            Response::Seal(_) => Response::Seal(Err(e)),
            Response::GetTail(_) => Response::GetTail(Err(e)),
            Response::GetRecords(_) => Response::GetRecords(Err(e)),
            Response::Trim(_) => Response::Trim(Err(e)),
        }
    }
}

/// Everything a log-server core learns.
#[derive(Clone, Debug)]
pub enum Input {
    /// A request to answer. `from` is the requester where the host knows it
    /// (no rule depends on it); `token` is the host's.
    Request {
        from: NodeId,
        token: Token,
        req: Request,
    },
    /// One-way: a sequencer's committed tail advanced.
    Release(Release),
}

/// What the host must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Answer `token` now.
    Respond { token: Token, resp: Response },
    /// Sync `lane`, then answer `token` with `resp`, or with
    /// [`Response::failed`] if the sync failed.
    RespondAfterSync {
        lane: Lane,
        token: Token,
        resp: Response,
    },
    /// What `loglet`'s tail info says changed (or the loglet was just
    /// loaded): tell this node's local readers.
    Tail { loglet: LogletId, info: TailInfo },
}

/// What the core knows of one loglet.
struct Loglet {
    /// The loglet's state (sealed, trim point, known global tail), as last
    /// written or learnt; the known global tail is advisory and rides along
    /// with the next state write.
    state: LogletState,
    /// One past the highest offset stored here.
    local_tail: Offset,
    /// Whether this server may lack records it cannot name.
    suspect: bool,
    /// The tail info last told to the host ([`Effect::Tail`]).
    published: TailInfo,
}

impl Loglet {
    fn tail_info(&self) -> TailInfo {
        TailInfo {
            sealed: self.state.sealed,
            local_tail: self.local_tail,
            known_global_tail: self.state.known_global_tail,
            suspect: self.suspect || self.state.lost,
        }
    }
}

/// One log-server: the records of every loglet whose nodeset holds its node.
pub struct LogServerCore<S> {
    /// Identity and bug switches.
    config: LogServerConfig,
    /// Where records and loglet states live.
    store: S,
    /// Loglets used since this core started, loaded from the store on first
    /// use.
    loglets: BTreeMap<LogletId, Loglet>,
    /// How long stored records wait here for their commit, by sequencer's
    /// node (the health score's commit-progress signal; no rule of this
    /// core depends on it).
    commits: CommitWatch,
}

impl<S: LogServerStore> LogServerCore<S> {
    pub fn new(config: LogServerConfig, store: S) -> Self {
        LogServerCore {
            commits: CommitWatch::new(config.node, SLOW_COMMIT),
            config,
            store,
            loglets: BTreeMap::new(),
        }
    }

    /// The store (for hosts and tests).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// What this core last knew of `loglet`'s tail, if it loaded it.
    pub fn tail_info(&self, loglet: LogletId) -> Option<TailInfo> {
        self.loglets.get(&loglet).map(Loglet::tail_info)
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        match input {
            Input::Request { from, token, req } => {
                // A normal store of records starts a commit wait (C1) once
                // it is stored.
                let watched = match &req {
                    Request::Store(m) if !m.repair && !m.records.is_empty() => {
                        Some(m.first.saturating_add(m.records.len() as Offset))
                    }
                    _ => None,
                };
                let sealing = matches!(req, Request::Seal(_));
                let (loglet, (sync, resp)) = match req {
                    Request::Store(m) => (m.loglet, self.on_store(m, &mut effects)),
                    Request::Seal(m) => (m.loglet, self.on_seal(m, &mut effects)),
                    Request::GetTail(m) => (m.loglet, self.on_get_tail(m, &mut effects)),
                    Request::GetRecords(m) => (m.loglet, self.on_get_records(m, &mut effects)),
                    Request::Trim(m) => (m.loglet, self.on_trim(m, &mut effects)),
                };
                if let Some(committed) =
                    self.loglets.get(&loglet).map(|l| l.state.known_global_tail)
                {
                    if sealing {
                        self.commits.sealed(env.now, loglet);
                    }
                    if let (Some(end), Response::Store(StoreReply::Stored { .. })) =
                        (watched, &resp)
                    {
                        self.commits.stored(env.now, from, loglet, end, committed);
                    }
                    self.commits.committed(env.now, loglet, committed);
                }
                self.publish(loglet, &mut effects);
                effects.push(match sync {
                    Some(lane) => Effect::RespondAfterSync { lane, token, resp },
                    None => Effect::Respond { token, resp },
                });
            }
            Input::Release(m) => {
                if let Ok(loglet) = self.loglet(m.loglet, &mut effects) {
                    if m.global_tail > loglet.state.known_global_tail {
                        loglet.state.known_global_tail = m.global_tail;
                    }
                    let committed = loglet.state.known_global_tail;
                    self.commits.committed(env.now, m.loglet, committed);
                }
                self.publish(m.loglet, &mut effects);
            }
        }
        effects
    }

    /// A rejoin copied every record of `loglet` its peers hold: this server
    /// counts again (it stays sealed). Durable once the host synced
    /// [`Lane::State`]; `false` if the loglet was not lost.
    pub fn clear_lost(&mut self, id: LogletId) -> Result<(bool, Vec<Effect>), LogServerError> {
        let mut effects = Vec::new();
        let loglet = self.loglet(id, &mut effects)?;
        if !loglet.state.lost {
            return Ok((false, effects));
        }
        let mut state = loglet.state.clone();
        state.lost = false;
        self.store.put_loglet_state(id, &state)?;
        if let Some(loglet) = self.loglets.get_mut(&id) {
            loglet.state = state;
        }
        info!(node = %self.config.node, loglet = %id, "lost loglet re-replicated: counted again");
        self.publish(id, &mut effects);
        Ok((true, effects))
    }

    /// The commit waits judged since the last call, by sequencer's node,
    /// with every open wait's stuck time counted up to `now` (see
    /// [`commit_watch`]).
    /// The host asks periodically and hands the counts to the health score.
    ///
    /// [`commit_watch`]: super::commit_watch
    pub fn judge_commits(&mut self, now: Instant) -> BTreeMap<NodeId, CommitCounts> {
        self.commits.judge(now)
    }

    /// A log-server has no timers.
    pub fn next_wake(&self) -> Option<Instant> {
        None
    }

    /// `id`'s state, loaded from the store on first use (and then published).
    fn loglet(
        &mut self,
        id: LogletId,
        effects: &mut Vec<Effect>,
    ) -> Result<&mut Loglet, LogServerError> {
        if !self.loglets.contains_key(&id) {
            let state = self.store.loglet_state(id)?;
            let local_tail = self.store.local_tail(id)?;
            let mut loglet = Loglet {
                state,
                local_tail,
                suspect: self.store.suspect(),
                published: TailInfo::default(),
            };
            loglet.published = loglet.tail_info();
            effects.push(Effect::Tail {
                loglet: id,
                info: loglet.published,
            });
            self.loglets.insert(id, loglet);
        }
        self.loglets.get_mut(&id).ok_or(LogServerError::Unavailable)
    }

    /// Tells the host if `id`'s tail info changed since it was last told.
    fn publish(&mut self, id: LogletId, effects: &mut Vec<Effect>) {
        if let Some(loglet) = self.loglets.get_mut(&id) {
            let info = loglet.tail_info();
            if info != loglet.published {
                loglet.published = info;
                effects.push(Effect::Tail { loglet: id, info });
            }
        }
    }

    fn on_store(&mut self, msg: Store, effects: &mut Vec<Effect>) -> (Option<Lane>, Response) {
        let failed = |e| (None, Response::Store(StoreReply::Failed(e)));
        let bytes: usize = msg.records.iter().map(|r| r.len()).sum();
        if msg.records.len() > MAX_STORE_RECORDS || bytes > MAX_STORE_BYTES {
            return failed(LogServerError::TooLarge {
                records: msg.records.len(),
                bytes,
            });
        }
        let refuse_sealed = !self.config.bugs.has(Bug::StoreAfterSeal);
        let loglet = match self.loglet(msg.loglet, effects) {
            Ok(l) => l,
            Err(e) => return failed(e),
        };
        let refused = loglet.state.sealed || loglet.state.lost;
        if refused && !msg.repair && (refuse_sealed || loglet.state.lost) {
            debug!(loglet = %msg.loglet, first = msg.first, "store refused: sealed");
            let local_tail = loglet.local_tail;
            return (None, Response::Store(StoreReply::Sealed { local_tail }));
        }
        let Some(end) = msg.first.checked_add(msg.records.len() as Offset) else {
            return failed(LogServerError::OutOfRange {
                first: msg.first,
                records: msg.records.len(),
            });
        };
        // Offsets below the trim point are gone for good: a late resend or
        // a repair of them must not bring them back.
        let skip = loglet.state.trim_point.saturating_sub(msg.first);
        let kept = usize::try_from(skip)
            .ok()
            .and_then(|skip| msg.records.get(skip..))
            .unwrap_or_default();
        let first = msg.first.saturating_add(skip);
        if let Err(e) = self.store.put_records(msg.loglet, first, kept) {
            return failed(e.into());
        }
        let Some(loglet) = self.loglets.get_mut(&msg.loglet) else {
            return failed(LogServerError::Unavailable);
        };
        // A store of no records stores no offset: the tail stays.
        if !msg.records.is_empty() {
            loglet.local_tail = loglet.local_tail.max(end);
        }
        if msg.known_global_tail > loglet.state.known_global_tail {
            loglet.state.known_global_tail = msg.known_global_tail;
        }
        let local_tail = loglet.local_tail;
        (
            Some(Lane::Records),
            Response::Store(StoreReply::Stored { local_tail }),
        )
    }

    fn on_seal(&mut self, msg: Seal, effects: &mut Vec<Effect>) -> (Option<Lane>, Response) {
        let node = self.config.node;
        let loglet = match self.loglet(msg.loglet, effects) {
            Ok(l) => l,
            Err(e) => return (None, Response::Seal(Err(e))),
        };
        if !loglet.state.sealed {
            info!(%node, loglet = %msg.loglet, local_tail = loglet.local_tail, "sealing");
            loglet.state.sealed = true;
        }
        let state = loglet.state.clone();
        let info = loglet.tail_info();
        // Written (and synced before the answer) even when sealed already:
        // a repeated seal must not be answered before the first is durable.
        if let Err(e) = self.store.put_loglet_state(msg.loglet, &state) {
            return (None, Response::Seal(Err(e.into())));
        }
        (Some(Lane::State), Response::Seal(Ok(info)))
    }

    fn on_get_tail(&mut self, msg: GetTail, effects: &mut Vec<Effect>) -> (Option<Lane>, Response) {
        let info = self.loglet(msg.loglet, effects).map(|l| l.tail_info());
        (None, Response::GetTail(info))
    }

    fn on_get_records(
        &mut self,
        msg: GetRecords,
        effects: &mut Vec<Effect>,
    ) -> (Option<Lane>, Response) {
        let (tail, trimmed_below) = match self.loglet(msg.loglet, effects) {
            Ok(l) => (l.tail_info(), l.state.trim_point),
            Err(e) => return (None, Response::GetRecords(Err(e))),
        };
        let to = if msg.include_uncommitted {
            msg.to
        } else {
            msg.to.min(tail.known_global_tail)
        };
        let max_bytes = usize::try_from(msg.max_bytes)
            .unwrap_or(usize::MAX)
            .min(MAX_STORE_BYTES);
        let records = match self.store.read_records(msg.loglet, msg.from, to, max_bytes) {
            Ok(r) => r,
            Err(e) => return (None, Response::GetRecords(Err(e.into()))),
        };
        // Reading may just have found damage: report it with the records.
        let damaged = self.store.damaged_in(msg.loglet, msg.from, to);
        (
            None,
            Response::GetRecords(Ok(RecordsReply {
                records,
                tail,
                damaged,
                trimmed_below,
            })),
        )
    }

    fn on_trim(&mut self, msg: Trim, effects: &mut Vec<Effect>) -> (Option<Lane>, Response) {
        let loglet = match self.loglet(msg.loglet, effects) {
            Ok(l) => l,
            Err(e) => return (None, Response::Trim(Err(e))),
        };
        // The trimmer (a partition leader) asserts that everything below
        // `below` is committed and applied by every replica.
        let below = msg.below;
        loglet.state.known_global_tail = loglet.state.known_global_tail.max(below);
        if below <= loglet.state.trim_point {
            return (None, Response::Trim(Ok(())));
        }
        if let Err(e) = self.store.trim(msg.loglet, below) {
            return (None, Response::Trim(Err(e.into())));
        }
        let Some(loglet) = self.loglets.get_mut(&msg.loglet) else {
            return (None, Response::Trim(Err(LogServerError::Unavailable)));
        };
        loglet.state.trim_point = below;
        let state = loglet.state.clone();
        if let Err(e) = self.store.put_loglet_state(msg.loglet, &state) {
            return (None, Response::Trim(Err(e.into())));
        }
        (Some(Lane::State), Response::Trim(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;
    use std::cell::Cell;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// An in-memory store that can fail one kind of operation, hold damaged
    /// offsets and be suspect.
    #[derive(Default)]
    struct MemStore {
        /// Records by loglet and offset.
        records: BTreeMap<(LogletId, Offset), Record>,
        /// Loglet states as written.
        states: BTreeMap<LogletId, LogletState>,
        /// Operations that fail with an I/O error.
        failing: BTreeSet<&'static str>,
        /// Offsets found damaged (until stored again).
        damaged: BTreeSet<(LogletId, Offset)>,
        /// Whether the store may lack records it cannot name.
        suspect: bool,
        /// The byte budget of the last read.
        last_max_bytes: Cell<usize>,
    }

    impl MemStore {
        fn check(&self, op: &'static str) -> crate::storage::Result<()> {
            if self.failing.contains(op) {
                Err(StorageError::Io(format!("{op} failed")))
            } else {
                Ok(())
            }
        }
        fn held(&self, loglet: LogletId) -> Vec<Offset> {
            self.records
                .range((loglet, 0)..=(loglet, Offset::MAX))
                .map(|((_, o), _)| *o)
                .collect()
        }
    }

    impl LogServerStore for MemStore {
        fn loglet_state(&self, loglet: LogletId) -> crate::storage::Result<LogletState> {
            self.check("loglet_state")?;
            Ok(self.states.get(&loglet).cloned().unwrap_or_default())
        }
        fn put_loglet_state(
            &mut self,
            loglet: LogletId,
            state: &LogletState,
        ) -> crate::storage::Result<()> {
            self.check("put_loglet_state")?;
            self.states.insert(loglet, state.clone());
            Ok(())
        }
        fn put_records(
            &mut self,
            loglet: LogletId,
            first: Offset,
            records: &[Record],
        ) -> crate::storage::Result<()> {
            self.check("put_records")?;
            for (i, r) in records.iter().enumerate() {
                let o = first + i as Offset;
                self.records.entry((loglet, o)).or_insert_with(|| r.clone());
                self.damaged.remove(&(loglet, o));
            }
            Ok(())
        }
        fn read_records(
            &self,
            loglet: LogletId,
            from: Offset,
            to: Offset,
            max_bytes: usize,
        ) -> crate::storage::Result<Vec<(Offset, Record)>> {
            self.check("read_records")?;
            self.last_max_bytes.set(max_bytes);
            let mut out: Vec<(Offset, Record)> = Vec::new();
            let mut bytes = 0;
            if from >= to {
                return Ok(out);
            }
            for ((_, o), r) in self.records.range((loglet, from)..(loglet, to)) {
                if !out.is_empty() && bytes + r.len() > max_bytes {
                    break;
                }
                bytes += r.len();
                out.push((*o, r.clone()));
            }
            Ok(out)
        }
        fn local_tail(&self, loglet: LogletId) -> crate::storage::Result<Offset> {
            self.check("local_tail")?;
            Ok(self.held(loglet).last().map_or(0, |o| o + 1))
        }
        fn trim(&mut self, loglet: LogletId, below: Offset) -> crate::storage::Result<()> {
            self.check("trim")?;
            self.records.retain(|(l, o), _| *l != loglet || *o >= below);
            Ok(())
        }
        fn damaged_in(&self, loglet: LogletId, from: Offset, to: Offset) -> Vec<Offset> {
            if from >= to {
                return Vec::new();
            }
            self.damaged
                .range((loglet, from)..(loglet, to))
                .map(|(_, o)| *o)
                .collect()
        }
        fn suspect(&self) -> bool {
            self.suspect
        }
    }

    const L: LogletId = LogletId(7);

    fn env() -> Env {
        Env {
            now: Instant::now(),
            me: NodeId(1),
            nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
            suspected: BTreeSet::new(),
        }
    }

    fn core_with(store: MemStore, bugs: BugSet) -> LogServerCore<MemStore> {
        LogServerCore::new(
            LogServerConfig {
                node: NodeId(1),
                bugs,
            },
            store,
        )
    }

    fn core() -> LogServerCore<MemStore> {
        core_with(MemStore::default(), BugSet::NONE)
    }

    fn recs(n: usize) -> Arc<Vec<Record>> {
        Arc::new((0..n).map(|i| Record(vec![i as u8; 3])).collect())
    }

    fn store_msg(first: Offset, n: usize, known_global_tail: Offset, repair: bool) -> Request {
        Request::Store(Store {
            loglet: L,
            first,
            records: recs(n),
            known_global_tail,
            repair,
            from: None,
        })
    }

    fn ask(core: &mut LogServerCore<MemStore>, token: u64, req: Request) -> Vec<Effect> {
        core.handle(
            &env(),
            Input::Request {
                from: NodeId(2),
                token: Token(token),
                req,
            },
        )
    }

    fn read(from: Offset, to: Offset, include_uncommitted: bool) -> Request {
        Request::GetRecords(GetRecords {
            loglet: L,
            from,
            to,
            max_bytes: u32::MAX,
            include_uncommitted,
        })
    }

    fn info(sealed: bool, local_tail: Offset, known_global_tail: Offset) -> TailInfo {
        TailInfo {
            sealed,
            local_tail,
            known_global_tail,
            suspect: false,
        }
    }

    /// The answer among `effects` (the last effect of a request).
    fn answer(effects: &[Effect]) -> &Response {
        match effects.last() {
            Some(Effect::Respond { resp, .. } | Effect::RespondAfterSync { resp, .. }) => resp,
            other => panic!("no answer: {other:?}"),
        }
    }

    fn offsets(effects: &[Effect]) -> Vec<Offset> {
        match answer(effects) {
            Response::GetRecords(Ok(r)) => r.records.iter().map(|(o, _)| *o).collect(),
            other => panic!("not records: {other:?}"),
        }
    }

    #[test]
    fn commit_waits_on_a_peers_sequencer_are_judged_by_the_release_and_a_seal_ends_them() {
        let mut c = core();
        let t = Instant::now();
        let ms = std::time::Duration::from_millis;
        let at = |n: u64| Env {
            now: t + ms(n),
            ..env()
        };
        let from_n2 = |token, req| Input::Request {
            from: NodeId(2),
            token: Token(token),
            req,
        };
        // Records 0..3 committed 5 ms after the store, 3..6 (piggybacked on
        // the next store) 300 ms after theirs: stuck for 200 ms.
        c.handle(&at(0), from_n2(1, store_msg(0, 3, 0, false)));
        let release = |global_tail| {
            Input::Release(Release {
                loglet: L,
                global_tail,
            })
        };
        c.handle(&at(5), release(3));
        c.handle(&at(10), from_n2(2, store_msg(3, 3, 3, false)));
        c.handle(&at(310), from_n2(3, store_msg(6, 3, 6, false)));
        let counts = c.judge_commits(t + ms(310));
        assert_eq!(
            counts.get(&NodeId(2)),
            Some(&CommitCounts {
                waits: 2,
                slow: 1,
                stuck: ms(200)
            })
        );
        // A repair and this node's own stores start no wait; 6..9 waits
        // until the seal ends it 150 ms later.
        c.handle(
            &at(320),
            Input::Request {
                from: NodeId(1),
                token: Token(4),
                req: store_msg(9, 3, 6, false),
            },
        );
        c.handle(&at(330), from_n2(5, store_msg(12, 3, 6, true)));
        c.handle(&at(460), from_n2(6, Request::Seal(Seal { loglet: L })));
        let counts = c.judge_commits(t + ms(5000));
        assert_eq!(
            counts.get(&NodeId(2)),
            Some(&CommitCounts {
                waits: 1,
                slow: 1,
                stuck: ms(50)
            })
        );
        assert!(!counts.contains_key(&NodeId(1)));
    }

    #[test]
    fn a_store_is_acknowledged_after_its_records_sync() {
        let mut c = core();
        let effects = ask(&mut c, 1, store_msg(0, 3, 0, false));
        assert_eq!(
            effects,
            vec![
                Effect::Tail {
                    loglet: L,
                    info: info(false, 0, 0)
                },
                Effect::Tail {
                    loglet: L,
                    info: info(false, 3, 0)
                },
                Effect::RespondAfterSync {
                    lane: Lane::Records,
                    token: Token(1),
                    resp: Response::Store(StoreReply::Stored { local_tail: 3 }),
                },
            ]
        );
        assert_eq!(c.store().held(L), vec![0, 1, 2]);
    }

    #[test]
    fn a_store_of_no_records_stores_no_offset() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 2, 0, false));
        let effects = ask(&mut c, 2, store_msg(9, 0, 0, false));
        assert_eq!(
            answer(&effects),
            &Response::Store(StoreReply::Stored { local_tail: 2 })
        );
    }

    #[test]
    fn stores_over_the_limits_are_refused_unwritten() {
        let mut c = core();
        let big = Request::Store(Store {
            loglet: L,
            first: 0,
            records: Arc::new(vec![Record(Vec::new()); MAX_STORE_RECORDS + 1]),
            known_global_tail: 0,
            repair: false,
            from: None,
        });
        assert_eq!(
            ask(&mut c, 1, big),
            vec![Effect::Respond {
                token: Token(1),
                resp: Response::Store(StoreReply::Failed(LogServerError::TooLarge {
                    records: MAX_STORE_RECORDS + 1,
                    bytes: 0
                })),
            }]
        );
        let heavy = Request::Store(Store {
            loglet: L,
            first: 0,
            records: Arc::new(vec![Record(vec![0; MAX_STORE_BYTES + 1])]),
            known_global_tail: 0,
            repair: false,
            from: None,
        });
        assert!(matches!(
            answer(&ask(&mut c, 2, heavy)),
            Response::Store(StoreReply::Failed(LogServerError::TooLarge { .. }))
        ));
        assert!(c.store().held(L).is_empty());
    }

    #[test]
    fn offsets_past_the_last_one_are_refused() {
        let mut c = core();
        let effects = ask(&mut c, 1, store_msg(Offset::MAX - 1, 3, 0, false));
        assert_eq!(
            effects.last(),
            Some(&Effect::Respond {
                token: Token(1),
                resp: Response::Store(StoreReply::Failed(LogServerError::OutOfRange {
                    first: Offset::MAX - 1,
                    records: 3
                })),
            })
        );
        assert!(c.store().held(L).is_empty());
    }

    #[test]
    fn a_seal_is_answered_after_the_state_syncs() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 2, 1, false));
        let effects = ask(&mut c, 2, Request::Seal(Seal { loglet: L }));
        assert_eq!(
            effects,
            vec![
                Effect::Tail {
                    loglet: L,
                    info: info(true, 2, 1)
                },
                Effect::RespondAfterSync {
                    lane: Lane::State,
                    token: Token(2),
                    resp: Response::Seal(Ok(info(true, 2, 1))),
                },
            ]
        );
        assert!(c.store().states[&L].sealed, "persisted before the answer");
        // A repeated seal is written and synced again: its answer must not
        // overtake the first seal's sync.
        let again = ask(&mut c, 3, Request::Seal(Seal { loglet: L }));
        assert!(matches!(
            again.as_slice(),
            [Effect::RespondAfterSync {
                lane: Lane::State,
                ..
            }]
        ));
    }

    #[test]
    fn once_sealed_normal_stores_are_refused_and_repairs_accepted() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 2, 0, false));
        ask(&mut c, 2, Request::Seal(Seal { loglet: L }));
        assert_eq!(
            ask(&mut c, 3, store_msg(2, 1, 0, false)),
            vec![Effect::Respond {
                token: Token(3),
                resp: Response::Store(StoreReply::Sealed { local_tail: 2 }),
            }]
        );
        assert_eq!(c.store().held(L), vec![0, 1], "nothing written");
        let effects = ask(&mut c, 4, store_msg(2, 1, 0, true));
        assert_eq!(
            answer(&effects),
            &Response::Store(StoreReply::Stored { local_tail: 3 })
        );
        assert_eq!(c.store().held(L), vec![0, 1, 2]);
    }

    #[test]
    fn bug_store_after_seal_accepts_a_normal_store() {
        let mut c = core_with(MemStore::default(), BugSet::NONE.with(Bug::StoreAfterSeal));
        ask(&mut c, 1, Request::Seal(Seal { loglet: L }));
        let effects = ask(&mut c, 2, store_msg(0, 1, 0, false));
        assert_eq!(
            effects.last(),
            Some(&Effect::RespondAfterSync {
                lane: Lane::Records,
                token: Token(2),
                resp: Response::Store(StoreReply::Stored { local_tail: 1 }),
            }),
            "the bug: a sealed server still acknowledges a normal store"
        );
        assert_eq!(c.store().held(L), vec![0]);
    }

    #[test]
    fn nothing_is_stored_below_the_trim_point() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 4, 0, false));
        let effects = ask(
            &mut c,
            2,
            Request::Trim(Trim {
                loglet: L,
                below: 6,
            }),
        );
        assert_eq!(
            effects,
            vec![
                Effect::Tail {
                    loglet: L,
                    info: info(false, 4, 6)
                },
                Effect::RespondAfterSync {
                    lane: Lane::State,
                    token: Token(2),
                    resp: Response::Trim(Ok(())),
                },
            ]
        );
        assert_eq!(c.store().states[&L].trim_point, 6);
        assert!(c.store().held(L).is_empty());
        // A late resend (and a repair) of trimmed offsets writes only what
        // lies at or above the trim point.
        let effects = ask(&mut c, 3, store_msg(3, 5, 0, true));
        assert_eq!(
            answer(&effects),
            &Response::Store(StoreReply::Stored { local_tail: 8 })
        );
        assert_eq!(c.store().held(L), vec![6, 7]);
        assert_eq!(c.store().records[&(L, 6)], recs(5)[3], "the right records");
    }

    #[test]
    fn a_trim_at_or_below_the_trim_point_is_answered_at_once() {
        let mut c = core();
        ask(
            &mut c,
            1,
            Request::Trim(Trim {
                loglet: L,
                below: 5,
            }),
        );
        let effects = ask(
            &mut c,
            2,
            Request::Trim(Trim {
                loglet: L,
                below: 5,
            }),
        );
        assert_eq!(
            effects,
            vec![Effect::Respond {
                token: Token(2),
                resp: Response::Trim(Ok(())),
            }]
        );
    }

    #[test]
    fn reads_stop_at_the_known_global_tail_unless_uncommitted_is_asked() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 5, 2, false));
        assert_eq!(offsets(&ask(&mut c, 2, read(0, 10, false))), vec![0, 1]);
        assert_eq!(
            offsets(&ask(&mut c, 3, read(0, 10, true))),
            vec![0, 1, 2, 3, 4]
        );
        let effects = c.handle(
            &env(),
            Input::Release(Release {
                loglet: L,
                global_tail: 4,
            }),
        );
        assert_eq!(
            effects,
            vec![Effect::Tail {
                loglet: L,
                info: info(false, 5, 4)
            }]
        );
        let effects = ask(&mut c, 4, read(1, 10, false));
        assert_eq!(offsets(&effects), vec![1, 2, 3]);
        assert!(matches!(
            answer(&effects),
            Response::GetRecords(Ok(RecordsReply { tail, .. })) if *tail == info(false, 5, 4)
        ));
    }

    #[test]
    fn reads_are_bounded_in_bytes() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 1, 1, false));
        ask(&mut c, 2, read(0, 1, false));
        assert_eq!(c.store().last_max_bytes.get(), MAX_STORE_BYTES);
        let small = Request::GetRecords(GetRecords {
            loglet: L,
            from: 0,
            to: 1,
            max_bytes: 10,
            include_uncommitted: false,
        });
        ask(&mut c, 3, small);
        assert_eq!(c.store().last_max_bytes.get(), 10);
    }

    #[test]
    fn damaged_offsets_are_reported_with_the_records() {
        let mut store = MemStore::default();
        store.damaged.insert((L, 1));
        store.damaged.insert((L, 9));
        let mut c = core_with(store, BugSet::NONE);
        ask(&mut c, 1, store_msg(0, 1, 0, false));
        let effects = ask(&mut c, 2, read(0, 5, true));
        assert!(matches!(
            answer(&effects),
            Response::GetRecords(Ok(RecordsReply { damaged, .. })) if *damaged == vec![1]
        ));
    }

    #[test]
    fn a_suspect_server_flags_every_tail_it_reports() {
        let store = MemStore {
            suspect: true,
            ..MemStore::default()
        };
        let mut c = core_with(store, BugSet::NONE);
        let effects = ask(&mut c, 1, Request::Seal(Seal { loglet: L }));
        assert!(matches!(
            answer(&effects),
            Response::Seal(Ok(TailInfo { suspect: true, .. }))
        ));
        let effects = ask(&mut c, 2, Request::GetTail(GetTail { loglet: L }));
        assert!(matches!(
            answer(&effects),
            Response::GetTail(Ok(TailInfo { suspect: true, .. }))
        ));
    }

    #[test]
    fn a_lost_loglet_takes_only_repairs_and_is_suspect_until_cleared() {
        let mut store = MemStore::default();
        let lost = LogletState {
            sealed: true,
            lost: true,
            ..LogletState::default()
        };
        store.states.insert(L, lost);
        let mut c = core_with(store, BugSet::NONE);
        let effects = ask(&mut c, 1, store_msg(0, 2, 0, false));
        assert_eq!(
            answer(&effects),
            &Response::Store(StoreReply::Sealed { local_tail: 0 })
        );
        let effects = ask(&mut c, 2, store_msg(0, 2, 0, true));
        assert_eq!(
            answer(&effects),
            &Response::Store(StoreReply::Stored { local_tail: 2 })
        );
        for req in [
            Request::Seal(Seal { loglet: L }),
            Request::GetTail(GetTail { loglet: L }),
        ] {
            let effects = ask(&mut c, 3, req);
            assert!(
                matches!(
                    answer(&effects),
                    Response::Seal(Ok(TailInfo { suspect: true, .. }))
                        | Response::GetTail(Ok(TailInfo { suspect: true, .. }))
                ),
                "{effects:?}"
            );
        }
        let (cleared, effects) = c.clear_lost(L).unwrap();
        assert!(cleared);
        assert!(effects.contains(&Effect::Tail {
            loglet: L,
            info: info(true, 2, 0)
        }));
        assert!(!c.store().states[&L].lost && c.store().states[&L].sealed);
        let effects = ask(&mut c, 4, Request::GetTail(GetTail { loglet: L }));
        assert_eq!(answer(&effects), &Response::GetTail(Ok(info(true, 2, 0))));
        // Still sealed: normal stores stay refused.
        let effects = ask(&mut c, 5, store_msg(2, 1, 0, false));
        assert!(matches!(
            answer(&effects),
            Response::Store(StoreReply::Sealed { .. })
        ));
        assert!(!c.clear_lost(L).unwrap().0);
    }

    #[test]
    fn storage_errors_are_answered_never_taken_for_absence() {
        let mut store = MemStore::default();
        store.failing.insert("loglet_state");
        let mut c = core_with(store, BugSet::NONE);
        assert!(matches!(
            ask(&mut c, 1, Request::GetTail(GetTail { loglet: L })).as_slice(),
            [Effect::Respond {
                resp: Response::GetTail(Err(LogServerError::Storage(_))),
                ..
            }]
        ));
        assert!(matches!(
            ask(&mut c, 2, store_msg(0, 1, 0, false)).as_slice(),
            [Effect::Respond {
                resp: Response::Store(StoreReply::Failed(LogServerError::Storage(_))),
                ..
            }]
        ));

        let mut store = MemStore::default();
        store.failing.insert("put_records");
        store.failing.insert("put_loglet_state");
        store.failing.insert("read_records");
        let mut c = core_with(store, BugSet::NONE);
        assert!(matches!(
            answer(&ask(&mut c, 3, store_msg(0, 1, 0, false))),
            Response::Store(StoreReply::Failed(LogServerError::Storage(_)))
        ));
        assert!(matches!(
            answer(&ask(&mut c, 4, Request::Seal(Seal { loglet: L }))),
            Response::Seal(Err(LogServerError::Storage(_)))
        ));
        assert!(matches!(
            answer(&ask(&mut c, 5, read(0, 1, true))),
            Response::GetRecords(Err(LogServerError::Storage(_)))
        ));
    }

    #[test]
    fn a_failed_sync_turns_an_answer_into_an_error_of_its_kind() {
        let e = LogServerError::Storage("sync".into());
        assert_eq!(
            Response::Store(StoreReply::Stored { local_tail: 1 }).failed(e.clone()),
            Response::Store(StoreReply::Failed(e.clone()))
        );
        assert_eq!(
            Response::Seal(Ok(TailInfo::default())).failed(e.clone()),
            Response::Seal(Err(e.clone()))
        );
        assert_eq!(
            Response::Trim(Ok(())).failed(e.clone()),
            Response::Trim(Err(e))
        );
    }

    #[test]
    fn tail_changes_are_published_once() {
        let mut c = core();
        let release = |global_tail| {
            Input::Release(Release {
                loglet: L,
                global_tail,
            })
        };
        assert_eq!(
            c.handle(&env(), release(3)),
            vec![
                Effect::Tail {
                    loglet: L,
                    info: info(false, 0, 0)
                },
                Effect::Tail {
                    loglet: L,
                    info: info(false, 0, 3)
                },
            ]
        );
        assert!(c.handle(&env(), release(3)).is_empty(), "no change");
        assert!(c.handle(&env(), release(1)).is_empty(), "never backwards");
        assert_eq!(
            ask(&mut c, 1, Request::GetTail(GetTail { loglet: L })),
            vec![Effect::Respond {
                token: Token(1),
                resp: Response::GetTail(Ok(info(false, 0, 3)))
            }]
        );
    }

    #[test]
    fn a_new_core_rederives_its_state_from_the_store() {
        let mut c = core();
        ask(&mut c, 1, store_msg(0, 3, 2, false));
        ask(&mut c, 2, Request::Seal(Seal { loglet: L }));
        let store = std::mem::take(&mut c.store);
        let mut c = core_with(store, BugSet::NONE);
        assert_eq!(
            answer(&ask(&mut c, 3, Request::GetTail(GetTail { loglet: L }))),
            &Response::GetTail(Ok(info(true, 3, 2)))
        );
        assert!(matches!(
            answer(&ask(&mut c, 4, store_msg(3, 1, 0, false))),
            Response::Store(StoreReply::Sealed { local_tail: 3 })
        ));
        assert_eq!(c.next_wake(), None);
    }
}
