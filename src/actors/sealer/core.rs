//! The seal job, without I/O: every rule of sealing a loglet, finding and
//! repairing its tail and extending the chain, as a state machine
//! ([`SealJob`]), the sharing of one job per loglet among a node's callers
//! ([`SealerCore`]), and the tail arithmetic ([`repair_range`],
//! [`sealed_tail`]).
//!
//! A job, in order (each step is one rule; its test is named after it):
//! 1. **Read the chain** `chain/<log>` (a linearizable register read). No
//!    chain: `UnknownLog`; the loglet not in it: `UnknownLoglet`; the loglet
//!    already sealed there: done, with that chain.
//! 2. **Seal an f-majority.** `Seal` goes to every server of the nodeset not
//!    yet sealed in this round and not excluded; the round ends once an
//!    f-majority (`n - r + 1`, [`quorum`](crate::actors::quorum)) of them
//!    sealed, or when every call answered. A server that seals but reports
//!    itself `suspect` (damage it cannot name) is sealed but excluded. A
//!    refusal or a failed call is retried after [`RETRY_PAUSE`]. When fewer
//!    servers than the f-majority are left that are not excluded, the job
//!    pauses, forgets what it excluded and what it sealed, and tries all of
//!    them again (a read error may pass, a damaged server may be repaired).
//! 3. **Fetch the unreleased records** `[global, reach)` of every sealed
//!    responder (`global`: the highest known global tail of any of them;
//!    `reach`: the highest local tail), one responder after the other, each
//!    read moving forward from where the last reply ended. A responder whose
//!    reply names damaged offsets (it may have acknowledged them), or whose
//!    read fails, is **excluded** and the job starts over at step 1.
//! 4. **Find the tail**: the end of the contiguous run of the union of the
//!    records found, from `global` on ([`sealed_tail`]). Records beyond a gap
//!    were never committed and are cut off.
//! 5. **Repair** `[global, tail)` to `r` copies with repair stores (accepted
//!    by sealed servers), in chunks of [`REPAIR_CHUNK`] records; a chunk
//!    short of `r` copies after every call answered is sent again after
//!    [`RETRY_PAUSE`] to the servers that did not store it.
//! 6. **Publish**: one CAS of the chain on the version read in step 1, with
//!    the loglet sealed at the tail and the next segment (sequenced by the
//!    job's `next_sequencer`, on the configured nodeset). Applied: done. A
//!    conflict whose chain has the loglet sealed: done, with it (another
//!    sealer won). Any other conflict, or an outcome the register could not
//!    tell (`Indeterminate`, our write may have been adopted), starts over
//!    at step 1 while time is left.
//!
//! **Deadlines.** The job has one deadline; every call and register
//! operation is bounded by what is left of it (a call by at most
//! [`CALL_TIMEOUT`]), and a stage that would have to pause past it, or a
//! fetch still reading at it, ends the job with `Timeout { stage }`.
//!
//! Safety (why the tail covers every committed record): after an
//! f-majority (`n - r + 1`) of log-servers sealed a loglet, every committed
//! record is on at least one of them (an f-majority intersects every write
//! quorum of `r`). Committed offsets form a prefix, so the union of the
//! responders' records holds every committed offset: the end of the
//! contiguous run in that union, starting from the highest global tail any
//! responder knew, is at or beyond the committed tail. A responder that may
//! have lost records it acknowledged is never counted toward the f-majority.
//!
//! Deliberate bugs (`SealConfig::bugs`, only ever set by the simulator's
//! tests, see [`crate::actors::bugs`]): `SealWrongQuorum` takes `n - r`
//! seals as enough; `RepairStopsAtFirstGap` ends the tail (and the repair)
//! at the first offset the first responder lacks.

use crate::actors::bugs::{Bug, BugSet};
use crate::actors::log_server::{GetRecords, Seal, Store, StoreReply};
use crate::actors::metadata::core::Versioned;
use crate::actors::metadata::proposer::{Change, Outcome};
use crate::actors::metadata::MetaError;
use crate::actors::quorum::{Tally, Verdict};
use crate::log::calls::{CallId, MetaOp, Request, Response};
use crate::log::{chain_key, Chain, LogConfig, Record, Segment};
use crate::node::CallError;
use crate::types::{LogId, LogletId, NodeId, Offset};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::actors::env::Env;

/// Why a seal-and-extend did not produce a chain with the loglet sealed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("log {0} has no chain")]
    UnknownLog(LogId),
    #[error("loglet {0} is not in the chain of its log")]
    UnknownLoglet(LogletId),
    #[error("seal of loglet {loglet} timed out while {stage}")]
    Timeout { loglet: LogletId, stage: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("sealer restarted with the job in flight")]
    Abandoned,
    /// The chain cannot be extended as asked (its LSNs would overflow, or
    /// the configured nodeset is unusable).
    #[error(transparent)]
    Chain(#[from] crate::log::chain::ChainError),
}

/// Pause between retries of a stage that could not complete yet.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Longest wait for one call inside a stage: short enough to retry within
/// the job.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Most bytes one fetch of unreleased records asks for.
pub const FETCH_MAX_BYTES: u32 = 4 * 1024 * 1024;

/// Records per repair store.
pub const REPAIR_CHUNK: usize = 2048;

// ---------------------------------------------------------------------------
// The tail arithmetic

/// One sealed responder's view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealedView {
    /// Every offset below this is committed, as the responder knew it.
    pub known_global_tail: Offset,
    /// One past the highest offset the responder stores.
    pub local_tail: Offset,
}

/// Where repair starts and how far the responders' local data reaches.
pub fn repair_range(views: &[SealedView]) -> (Offset, Offset) {
    let global = views.iter().map(|v| v.known_global_tail).max().unwrap_or(0);
    let reach = views
        .iter()
        .map(|v| v.local_tail)
        .max()
        .unwrap_or(0)
        .max(global);
    (global, reach)
}

/// The records to re-replicate, `[global, tail)`, given every record the
/// responders hold from `global` on (several copies of one offset are
/// identical: a sequencer writes each offset once).
pub fn sealed_tail(
    global: Offset,
    found: impl IntoIterator<Item = (Offset, Record)>,
) -> (Offset, Vec<Record>) {
    let union: BTreeMap<Offset, Record> = found.into_iter().filter(|(o, _)| *o >= global).collect();
    let mut tail = global;
    let mut repair = Vec::new();
    for (offset, record) in union {
        // A record at `u64::MAX` (a peer can claim any offset) would end the
        // segment past the last offset there is: the run stops before it.
        if offset != tail || tail == Offset::MAX {
            break;
        }
        repair.push(record);
        tail += 1;
    }
    (tail, repair)
}

// ---------------------------------------------------------------------------
// One job

/// How a job seals and what it builds.
#[derive(Clone, Debug)]
pub struct SealConfig {
    /// Log-servers of the segment the job appends.
    pub nodeset: Vec<NodeId>,
    /// Replication factor of the segment the job appends.
    pub replication: u8,
    /// Deliberately wrong rules (empty but in the simulator's tests).
    pub bugs: BugSet,
    /// Seeds the job's random choices (the id of its CAS).
    pub seed: u64,
}

impl SealConfig {
    /// The configuration of the node's log, with `seed`.
    pub fn new(log: &LogConfig, seed: u64) -> Self {
        SealConfig {
            nodeset: log.nodeset.clone(),
            replication: log.replication,
            bugs: BugSet::NONE,
            seed,
        }
    }
}

/// What a job learns.
#[derive(Clone, Debug)]
pub enum SealInput {
    /// The result of the register operation `op` the job asked for.
    MetaDone {
        op: MetaOp,
        result: Result<Outcome, MetaError>,
    },
    /// The one reply to call `call` (or why there is none).
    Reply {
        call: CallId,
        from: NodeId,
        result: Result<Response, CallError>,
    },
    /// Time passed (see [`SealJob::next_wake`]).
    Tick,
}

/// What a job asks its host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum SealEffect {
    /// Run `change` on the register key `key` (always `chain/<log>`) within
    /// `timeout`; answer with `MetaDone { op }`.
    Meta {
        op: MetaOp,
        key: String,
        change: Change,
        timeout: Duration,
    },
    /// Send `req` to `to`; answer with exactly one `Reply { call }` within
    /// `timeout`.
    Call {
        to: NodeId,
        call: CallId,
        req: Request,
        timeout: Duration,
    },
    /// The job is over: the chain with the loglet sealed, or why not. It
    /// takes no more input.
    Done { result: Result<Chain, SealError> },
}

/// What the chain read of this attempt found.
#[derive(Clone, Debug)]
struct Base {
    /// The register version of `chain` (the CAS expects it).
    version: u64,
    /// The chain as read (the base of the next one).
    chain: Chain,
    /// The loglet's segment in `chain`.
    segment: Segment,
}

/// A pause before a stage tries again.
#[derive(Clone, Copy, Debug)]
struct Pause {
    /// When the stage tries again.
    until: Instant,
    /// Forget excluded and sealed servers before the next round (too few
    /// usable servers were left).
    start_over: bool,
}

#[derive(Clone, Debug)]
struct Sealing {
    /// The chain read this attempt works from.
    base: Base,
    /// Servers that sealed in this stage (counted toward the f-majority).
    views: BTreeMap<NodeId, SealedView>,
    /// Seal calls of the current round.
    pending: BTreeMap<CallId, NodeId>,
    /// Set while the stage waits before its next round.
    pause: Option<Pause>,
}

#[derive(Clone, Debug)]
struct Fetching {
    /// The chain read this attempt works from.
    base: Base,
    /// The sealed responders, in the order they are read.
    responders: Vec<(NodeId, SealedView)>,
    /// The highest known global tail: every offset below is committed.
    global: Offset,
    /// The highest local tail of the sealed responders: nothing is read past it.
    reach: Offset,
    /// Index in `responders` of the one being read.
    at: usize,
    /// Where the next read of that responder starts.
    next: Offset,
    /// The read in flight.
    call: Option<CallId>,
    /// Every record found so far.
    found: Vec<(Offset, Record)>,
    /// The records of the first responder (for `RepairStopsAtFirstGap`).
    first: Vec<(Offset, Record)>,
}

#[derive(Clone, Debug)]
struct Repairing {
    /// The chain read this attempt works from.
    base: Base,
    /// Where the repaired range starts (the highest known global tail).
    global: Offset,
    /// The sealed tail: where the repaired range ends.
    tail: Offset,
    /// The records of `[global, tail)`, in offset order.
    records: Vec<Record>,
    /// Index of the chunk being stored.
    chunk: usize,
    /// That chunk's records, shared by its stores.
    chunk_records: Arc<Vec<Record>>,
    /// Servers that stored the chunk.
    stored: BTreeSet<NodeId>,
    /// Store calls of the current round.
    pending: BTreeMap<CallId, NodeId>,
    /// Set while the stage waits before its next round.
    pause: Option<Instant>,
}

#[derive(Clone, Debug)]
enum Stage {
    ReadChain {
        op: MetaOp,
    },
    Seal(Sealing),
    Fetch(Fetching),
    Repair(Repairing),
    Publish {
        op: MetaOp,
        next: Chain,
        tail: Offset,
        global: Offset,
    },
    Finished,
}

/// One seal-and-extend of one loglet. Built with [`SealJob::new`] (which
/// also returns its first effects), driven by [`SealJob::handle`]; ends
/// with exactly one [`SealEffect::Done`].
#[derive(Clone, Debug)]
pub struct SealJob {
    /// The log the loglet belongs to.
    log: LogId,
    /// The loglet being sealed.
    loglet: LogletId,
    /// The sequencer node of the segment the job appends.
    next_sequencer: NodeId,
    /// The new segment's nodeset and replication, the bug switches, the seed.
    config: SealConfig,
    /// When the job ends, done or not.
    deadline: Instant,
    /// Picks the compare-and-set operation id (seeded by the host).
    rng: StdRng,
    /// The last id handed out (calls and register operations share it).
    ids: u64,
    /// Responders found unusable in this job (see the module doc).
    excluded: BTreeSet<NodeId>,
    /// Where the job stands, with that stage's state.
    stage: Stage,
}

impl SealJob {
    /// A job sealing `loglet` of `log` and appending a segment sequenced by
    /// `next_sequencer`, over by `deadline`; and its first effects.
    pub fn new(
        log: LogId,
        loglet: LogletId,
        next_sequencer: NodeId,
        config: SealConfig,
        deadline: Instant,
        env: &Env,
    ) -> (SealJob, Vec<SealEffect>) {
        let rng = StdRng::seed_from_u64(config.seed);
        let mut job = SealJob {
            log,
            loglet,
            next_sequencer,
            config,
            deadline,
            rng,
            ids: 0,
            excluded: BTreeSet::new(),
            stage: Stage::Finished,
        };
        let mut out = Vec::new();
        job.read_chain(env, &mut out);
        (job, out)
    }

    pub fn loglet(&self) -> LogletId {
        self.loglet
    }

    /// Whether the job has ended (its `Done` was emitted).
    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Finished)
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: SealInput) -> Vec<SealEffect> {
        let mut out = Vec::new();
        match input {
            SealInput::MetaDone { op, result } => self.on_meta(env, op, result, &mut out),
            SealInput::Reply { call, result, .. } => self.on_reply(env, call, result, &mut out),
            SealInput::Tick => self.on_tick(env, &mut out),
        }
        out
    }

    /// When the job wants a `Tick` (the end of a pause).
    pub fn next_wake(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Seal(s) => s.pause.map(|p| p.until),
            Stage::Repair(r) => r.pause,
            _ => None,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn remaining(&self, env: &Env) -> Duration {
        self.deadline.saturating_duration_since(env.now)
    }

    fn call_timeout(&self, env: &Env) -> Duration {
        self.remaining(env).min(CALL_TIMEOUT)
    }

    fn timeout(&self, stage: impl Into<String>) -> SealError {
        SealError::Timeout {
            loglet: self.loglet,
            stage: stage.into(),
        }
    }

    fn finish(&mut self, result: Result<Chain, SealError>, out: &mut Vec<SealEffect>) {
        self.stage = Stage::Finished;
        out.push(SealEffect::Done { result });
    }

    fn call(&mut self, env: &Env, to: NodeId, req: Request, out: &mut Vec<SealEffect>) -> CallId {
        let call = CallId(self.next_id());
        out.push(SealEffect::Call {
            to,
            call,
            req,
            timeout: self.call_timeout(env),
        });
        call
    }

    /// The number of seals that is enough.
    fn seal_quorum(&self, segment: &Segment) -> usize {
        if self.config.bugs.has(Bug::SealWrongQuorum) {
            segment
                .nodeset
                .len()
                .saturating_sub(segment.replication as usize)
        } else {
            segment.f_majority()
        }
    }

    // Step 1 ---------------------------------------------------------------

    fn read_chain(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        let op = MetaOp(self.next_id());
        out.push(SealEffect::Meta {
            op,
            key: chain_key(self.log),
            change: Change::Read,
            timeout: self.remaining(env),
        });
        self.stage = Stage::ReadChain { op };
    }

    fn on_meta(
        &mut self,
        env: &Env,
        op: MetaOp,
        result: Result<Outcome, MetaError>,
        out: &mut Vec<SealEffect>,
    ) {
        match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::ReadChain { op: want } if want == op => self.on_chain_read(env, result, out),
            Stage::Publish {
                op: want,
                next,
                tail,
                global,
            } if want == op => self.on_published(env, result, next, tail, global, out),
            other => self.stage = other,
        }
    }

    fn decode(&self, v: &Versioned) -> Result<Chain, SealError> {
        rmp_serde::from_slice(&v.value).map_err(|e| {
            SealError::Meta(MetaError::Decode {
                key: chain_key(self.log),
                reason: e.to_string(),
            })
        })
    }

    fn on_chain_read(
        &mut self,
        env: &Env,
        result: Result<Outcome, MetaError>,
        out: &mut Vec<SealEffect>,
    ) {
        let value = match result {
            Ok(Outcome::Value(v) | Outcome::Conflict(v)) => v,
            Err(e) => return self.finish(Err(e.into()), out),
        };
        let Some(value) = value else {
            return self.finish(Err(SealError::UnknownLog(self.log)), out);
        };
        let chain = match self.decode(&value) {
            Ok(chain) => chain,
            Err(e) => return self.finish(Err(e), out),
        };
        let Some(segment) = chain.segment(self.loglet).cloned() else {
            return self.finish(Err(SealError::UnknownLoglet(self.loglet)), out);
        };
        if segment.sealed_tail.is_some() {
            debug!(loglet = %self.loglet, "already sealed in the chain");
            return self.finish(Ok(chain), out);
        }
        let base = Base {
            version: value.version,
            chain,
            segment,
        };
        self.stage = Stage::Seal(Sealing {
            base,
            views: BTreeMap::new(),
            pending: BTreeMap::new(),
            pause: None,
        });
        self.seal_round(env, out);
    }

    // Step 2 ---------------------------------------------------------------

    fn seal_round(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        let Stage::Seal(mut s) = std::mem::replace(&mut self.stage, Stage::Finished) else {
            return;
        };
        let need = self.seal_quorum(&s.base.segment);
        let usable = s
            .base
            .segment
            .nodeset
            .iter()
            .filter(|n| !self.excluded.contains(n))
            .count();
        if usable < need {
            // Not enough servers left to count on: a read error may pass
            // and a damaged server may be repaired, so try them all again.
            if self.remaining(env) < RETRY_PAUSE {
                let excluded = &self.excluded;
                let e = self.timeout(format!(
                    "waiting for an f-majority of usable seals ({need} needed; not usable: {excluded:?})"
                ));
                return self.finish(Err(e), out);
            }
            s.pause = Some(Pause {
                until: env.now + RETRY_PAUSE,
                start_over: true,
            });
            self.stage = Stage::Seal(s);
            return;
        }
        let missing: Vec<NodeId> = s
            .base
            .segment
            .nodeset
            .iter()
            .copied()
            .filter(|n| !s.views.contains_key(n) && !self.excluded.contains(n))
            .collect();
        for to in missing {
            let req = Request::Seal(Seal {
                loglet: self.loglet,
            });
            let call = self.call(env, to, req, out);
            s.pending.insert(call, to);
        }
        let idle = s.pending.is_empty();
        self.stage = Stage::Seal(s);
        if idle {
            self.seal_round_ended(env, out);
        }
    }

    fn on_seal_reply(
        &mut self,
        env: &Env,
        mut s: Sealing,
        call: CallId,
        result: Result<Response, CallError>,
        out: &mut Vec<SealEffect>,
    ) {
        let Some(from) = s.pending.remove(&call) else {
            self.stage = Stage::Seal(s);
            return;
        };
        match result {
            Ok(Response::Seal(Ok(tail))) if tail.suspect => {
                warn!(loglet = %self.loglet, %from, "sealed, but not counted: the server may have lost records it cannot name");
                self.excluded.insert(from);
            }
            Ok(Response::Seal(Ok(tail))) => {
                s.views.insert(
                    from,
                    SealedView {
                        known_global_tail: tail.known_global_tail,
                        local_tail: tail.local_tail,
                    },
                );
            }
            Ok(Response::Seal(Err(e))) => warn!(loglet = %self.loglet, %from, "seal refused: {e}"),
            Ok(other) => warn!(loglet = %self.loglet, %from, "seal answered with {other:?}"),
            Err(e) => debug!(loglet = %self.loglet, %from, "seal not answered: {e}"),
        }
        let need = self.seal_quorum(&s.base.segment);
        let mut tally = Tally::new(
            s.base
                .segment
                .nodeset
                .iter()
                .copied()
                .filter(|n| !self.excluded.contains(n)),
            need,
        );
        for &node in s.views.keys() {
            tally.yes(node);
        }
        if tally.verdict() == Verdict::Reached {
            return self.start_fetch(env, s.base, s.views, out);
        }
        let idle = s.pending.is_empty();
        self.stage = Stage::Seal(s);
        if idle {
            self.seal_round_ended(env, out);
        }
    }

    /// Every call of the round answered and the f-majority is not there.
    fn seal_round_ended(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        let Stage::Seal(mut s) = std::mem::replace(&mut self.stage, Stage::Finished) else {
            return;
        };
        if self.remaining(env) < RETRY_PAUSE {
            let need = self.seal_quorum(&s.base.segment);
            let e = self.timeout(format!(
                "waiting for an f-majority of seals ({} of {need} sealed)",
                s.views.len()
            ));
            return self.finish(Err(e), out);
        }
        s.pause = Some(Pause {
            until: env.now + RETRY_PAUSE,
            start_over: false,
        });
        self.stage = Stage::Seal(s);
    }

    // Step 3 ---------------------------------------------------------------

    fn start_fetch(
        &mut self,
        env: &Env,
        base: Base,
        views: BTreeMap<NodeId, SealedView>,
        out: &mut Vec<SealEffect>,
    ) {
        let responders: Vec<(NodeId, SealedView)> = views.into_iter().collect();
        let (global, reach) = repair_range(
            &responders
                .iter()
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
        );
        self.stage = Stage::Fetch(Fetching {
            base,
            responders,
            global,
            reach,
            at: 0,
            next: global,
            call: None,
            found: Vec::new(),
            first: Vec::new(),
        });
        self.fetch_next(env, out);
    }

    /// Asks the responder being read for its next records, moving on to the
    /// next responder when this one has nothing more in range.
    fn fetch_next(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        let Stage::Fetch(mut f) = std::mem::replace(&mut self.stage, Stage::Finished) else {
            return;
        };
        if self.remaining(env).is_zero() {
            // A responder may keep handing out records one by one: the
            // fetch ends at the deadline like every stage.
            let e = self.timeout("reading unreleased records");
            return self.finish(Err(e), out);
        }
        while let Some((node, view)) = f.responders.get(f.at).cloned() {
            if f.next < view.local_tail.min(f.reach) {
                let req = Request::GetRecords(GetRecords {
                    loglet: f.base.segment.loglet,
                    from: f.next,
                    to: f.reach,
                    max_bytes: FETCH_MAX_BYTES,
                    include_uncommitted: true,
                });
                f.call = Some(self.call(env, node, req, out));
                self.stage = Stage::Fetch(f);
                return;
            }
            f.at += 1;
            f.next = f.global;
        }
        self.fetched(env, f, out);
    }

    fn on_fetch_reply(
        &mut self,
        env: &Env,
        mut f: Fetching,
        call: CallId,
        result: Result<Response, CallError>,
        out: &mut Vec<SealEffect>,
    ) {
        if f.call != Some(call) {
            self.stage = Stage::Fetch(f);
            return;
        }
        f.call = None;
        let Some(&(from, _)) = f.responders.get(f.at) else {
            return self.fetched(env, f, out);
        };
        let unusable = match result {
            Ok(Response::Records(Ok(reply))) if !reply.damaged.is_empty() => Some(format!(
                "it lost records it may have acknowledged (offsets {:?})",
                reply.damaged
            )),
            Ok(Response::Records(Ok(reply))) if !reply.records.is_empty() => {
                // Only records in [next, reach) count, in order (o < reach,
                // so o + 1 fits); a reply that does not move the read
                // forward ends this responder's reads.
                let before = f.next;
                for (o, r) in reply.records {
                    if o >= f.next && o < f.reach {
                        f.next = o + 1;
                        if f.at == 0 {
                            f.first.push((o, r.clone()));
                        }
                        f.found.push((o, r));
                    }
                }
                if f.next == before {
                    f.at += 1;
                    f.next = f.global;
                }
                None
            }
            Ok(Response::Records(Ok(_))) => {
                f.at += 1;
                f.next = f.global;
                None
            }
            Ok(Response::Records(Err(e))) => Some(format!("reading its records failed: {e}")),
            Ok(other) => Some(format!(
                "reading its records failed: answered with {other:?}"
            )),
            Err(e) => Some(format!("reading its records failed: {e}")),
        };
        if let Some(why) = unusable {
            warn!(loglet = %self.loglet, node = %from, "not counting this responder: {why}");
            self.excluded.insert(from);
            return self.read_chain(env, out);
        }
        self.stage = Stage::Fetch(f);
        self.fetch_next(env, out);
    }

    // Step 4 ---------------------------------------------------------------

    fn fetched(&mut self, env: &Env, f: Fetching, out: &mut Vec<SealEffect>) {
        if self.remaining(env).is_zero() {
            let e = self.timeout("reading unreleased records");
            return self.finish(Err(e), out);
        }
        let found = if self.config.bugs.has(Bug::RepairStopsAtFirstGap) {
            f.first
        } else {
            f.found
        };
        let (tail, repair) = sealed_tail(f.global, found);
        if repair.is_empty() {
            return self.publish(env, f.base, f.global, tail, out);
        }
        let chunk_records = Arc::new(repair.iter().take(REPAIR_CHUNK).cloned().collect());
        self.stage = Stage::Repair(Repairing {
            base: f.base,
            global: f.global,
            tail,
            records: repair,
            chunk: 0,
            chunk_records,
            stored: BTreeSet::new(),
            pending: BTreeMap::new(),
            pause: None,
        });
        self.repair_round(env, out);
    }

    // Step 5 ---------------------------------------------------------------

    fn repair_round(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        let Stage::Repair(mut r) = std::mem::replace(&mut self.stage, Stage::Finished) else {
            return;
        };
        let first = r.global + (r.chunk * REPAIR_CHUNK) as Offset;
        let missing: Vec<NodeId> = r
            .base
            .segment
            .nodeset
            .iter()
            .copied()
            .filter(|n| !r.stored.contains(n))
            .collect();
        for to in missing {
            let req = Request::Store(Store {
                loglet: r.base.segment.loglet,
                first,
                records: r.chunk_records.clone(),
                known_global_tail: r.global,
                repair: true,
                from: None,
            });
            let call = self.call(env, to, req, out);
            r.pending.insert(call, to);
        }
        let idle = r.pending.is_empty();
        self.stage = Stage::Repair(r);
        if idle {
            self.repair_round_ended(env, out);
        }
    }

    fn on_repair_reply(
        &mut self,
        env: &Env,
        mut r: Repairing,
        call: CallId,
        result: Result<Response, CallError>,
        out: &mut Vec<SealEffect>,
    ) {
        let Some(from) = r.pending.remove(&call) else {
            self.stage = Stage::Repair(r);
            return;
        };
        match result {
            Ok(Response::Store(StoreReply::Stored { .. })) => {
                r.stored.insert(from);
            }
            other => debug!(loglet = %self.loglet, %from, "repair store failed: {other:?}"),
        }
        let need = r.base.segment.replication as usize;
        let mut tally = Tally::new(r.base.segment.nodeset.iter().copied(), need);
        for &node in &r.stored {
            tally.yes(node);
        }
        if tally.verdict() == Verdict::Reached {
            r.chunk += 1;
            let start = r.chunk * REPAIR_CHUNK;
            if start >= r.records.len() {
                return self.publish(env, r.base, r.global, r.tail, out);
            }
            r.chunk_records = Arc::new(
                r.records[start..]
                    .iter()
                    .take(REPAIR_CHUNK)
                    .cloned()
                    .collect(),
            );
            r.stored.clear();
            r.pending.clear();
            self.stage = Stage::Repair(r);
            return self.repair_round(env, out);
        }
        let idle = r.pending.is_empty();
        self.stage = Stage::Repair(r);
        if idle {
            self.repair_round_ended(env, out);
        }
    }

    fn repair_round_ended(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        let Stage::Repair(mut r) = std::mem::replace(&mut self.stage, Stage::Finished) else {
            return;
        };
        if self.remaining(env) < RETRY_PAUSE {
            let first = r.global + (r.chunk * REPAIR_CHUNK) as Offset;
            let e = self.timeout(format!(
                "repairing offsets from {first} ({} of {} copies)",
                r.stored.len(),
                r.base.segment.replication
            ));
            return self.finish(Err(e), out);
        }
        r.pause = Some(env.now + RETRY_PAUSE);
        self.stage = Stage::Repair(r);
    }

    // Step 6 ---------------------------------------------------------------

    fn publish(
        &mut self,
        env: &Env,
        base: Base,
        global: Offset,
        tail: Offset,
        out: &mut Vec<SealEffect>,
    ) {
        // A decoded chain is valid, so its only open segment (this one) is
        // its tail; what can still fail is an extension past the last LSN or
        // an unusable nodeset, both typed errors.
        let next = match base.chain.sealed_and_extended(
            self.loglet,
            tail,
            self.next_sequencer,
            self.config.nodeset.clone(),
            self.config.replication,
        ) {
            Ok(next) => next,
            Err(e) => return self.finish(Err(e.into()), out),
        };
        let value = match rmp_serde::to_vec_named(&next) {
            Ok(v) => v,
            Err(e) => {
                let e = MetaError::Decode {
                    key: chain_key(self.log),
                    reason: e.to_string(),
                };
                return self.finish(Err(e.into()), out);
            }
        };
        let op = MetaOp(self.next_id());
        out.push(SealEffect::Meta {
            op,
            key: chain_key(self.log),
            change: Change::Cas {
                expected: base.version,
                value,
                op: self.rng.gen::<u64>() | 1,
            },
            timeout: self.remaining(env),
        });
        self.stage = Stage::Publish {
            op,
            next,
            tail,
            global,
        };
    }

    fn on_published(
        &mut self,
        env: &Env,
        result: Result<Outcome, MetaError>,
        next: Chain,
        tail: Offset,
        global: Offset,
        out: &mut Vec<SealEffect>,
    ) {
        match result {
            Ok(Outcome::Value(Some(_))) => {
                info!(
                    loglet = %self.loglet,
                    sealed_tail = tail,
                    repaired = tail - global,
                    next_loglet = %next.tail().loglet,
                    next_sequencer = %self.next_sequencer,
                    base_lsn = %next.tail().base_lsn,
                    "sealed and extended"
                );
                self.finish(Ok(next), out)
            }
            Ok(Outcome::Conflict(Some(current))) => {
                let current = match self.decode(&current) {
                    Ok(c) => c,
                    Err(e) => return self.finish(Err(e), out),
                };
                if current
                    .segment(self.loglet)
                    .is_some_and(|s| s.sealed_tail.is_some())
                {
                    debug!(loglet = %self.loglet, "another sealer published first");
                    return self.finish(Ok(current), out);
                }
                // The chain changed in another way; start over from it.
                if self.remaining(env).is_zero() {
                    let e = self.timeout("publishing the new segment");
                    return self.finish(Err(e), out);
                }
                self.read_chain(env, out);
            }
            Ok(Outcome::Conflict(None)) => self.finish(Err(SealError::UnknownLog(self.log)), out),
            // A CAS that wrote nothing (no proposer answers so): the outcome
            // is not known, like an indeterminate one.
            Ok(Outcome::Value(None)) | Err(MetaError::Indeterminate { .. })
                if !self.remaining(env).is_zero() =>
            {
                // Our write reached a minority and the register moved on: it
                // may have been adopted. The next round re-reads the chain
                // and finds the loglet sealed (by us or anyone) or seals
                // again.
                debug!(loglet = %self.loglet, "publishing the new segment: outcome unknown; re-reading the chain");
                self.read_chain(env, out);
            }
            Ok(Outcome::Value(None)) => {
                let e = MetaError::Indeterminate {
                    key: chain_key(self.log),
                };
                self.finish(Err(e.into()), out)
            }
            Err(e) => self.finish(Err(e.into()), out),
        }
    }

    // Routing --------------------------------------------------------------

    fn on_reply(
        &mut self,
        env: &Env,
        call: CallId,
        result: Result<Response, CallError>,
        out: &mut Vec<SealEffect>,
    ) {
        match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::Seal(s) => self.on_seal_reply(env, s, call, result, out),
            Stage::Fetch(f) => self.on_fetch_reply(env, f, call, result, out),
            Stage::Repair(r) => self.on_repair_reply(env, r, call, result, out),
            other => self.stage = other,
        }
    }

    fn on_tick(&mut self, env: &Env, out: &mut Vec<SealEffect>) {
        match &mut self.stage {
            Stage::Seal(s) => {
                let Some(pause) = s.pause.filter(|p| env.now >= p.until) else {
                    return;
                };
                s.pause = None;
                if pause.start_over {
                    self.excluded.clear();
                    s.views.clear();
                }
                self.seal_round(env, out);
            }
            Stage::Repair(r) if r.pause.is_some_and(|until| env.now >= until) => {
                r.pause = None;
                self.repair_round(env, out);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// A node's jobs

/// A node's sealer: what its jobs build and how long each may take.
#[derive(Clone, Debug)]
pub struct SealerConfig {
    /// Log-servers of every segment a job appends.
    pub nodeset: Vec<NodeId>,
    /// Replication factor of every segment a job appends.
    pub replication: u8,
    /// One job's deadline, from its first request.
    pub seal_timeout: Duration,
    /// Deliberately wrong rules, passed to every job (empty but in the
    /// simulator's tests).
    pub bugs: BugSet,
}

impl SealerConfig {
    /// The sealer of a node whose log is configured as `log`.
    pub fn new(log: &LogConfig) -> Self {
        SealerConfig {
            nodeset: log.nodeset.clone(),
            replication: log.replication,
            seal_timeout: log.seal_timeout,
            bugs: BugSet::NONE,
        }
    }
}

/// What a node's sealer learns.
#[derive(Clone, Debug)]
pub enum SealerInput {
    /// Seal `loglet` (if it is still the tail of `log`'s chain) and append a
    /// segment sequenced by `next_sequencer`; answer `token` (the host's)
    /// with `Respond`.
    Request {
        token: u64,
        log: LogId,
        loglet: LogletId,
        next_sequencer: NodeId,
    },
    /// The result of register operation `op`.
    MetaDone {
        op: MetaOp,
        result: Result<Outcome, MetaError>,
    },
    /// The one reply to call `call`.
    Reply {
        call: CallId,
        from: NodeId,
        result: Result<Response, CallError>,
    },
    /// Time passed (see [`SealerCore::next_wake`]).
    Tick,
}

/// What a node's sealer asks its host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum SealerEffect {
    /// As [`SealEffect::Meta`].
    Meta {
        op: MetaOp,
        key: String,
        change: Change,
        timeout: Duration,
    },
    /// As [`SealEffect::Call`].
    Call {
        to: NodeId,
        call: CallId,
        req: Request,
        timeout: Duration,
    },
    /// The answer to the request `token`.
    Respond {
        token: u64,
        result: Result<Chain, SealError>,
    },
}

/// One job and who waits for it.
#[derive(Clone, Debug)]
struct Running {
    /// The job itself.
    job: SealJob,
    /// Tokens of the requests the job answers.
    waiters: Vec<u64>,
}

/// A node's seal jobs. Rule: concurrent requests for one loglet share one
/// job (the first request's log and next sequencer), which has the deadline
/// `seal_timeout` from that request; every request is answered with the
/// job's result. The host carries out calls and register operations under
/// this core's ids (it maps them to each job's own).
#[derive(Clone, Debug)]
pub struct SealerCore {
    /// What each job is built with.
    config: SealerConfig,
    /// Seeds each job.
    rng: StdRng,
    /// The running job of each loglet (one per loglet).
    jobs: BTreeMap<LogletId, Running>,
    /// This core's call ids, to each job's own.
    calls: BTreeMap<CallId, (LogletId, CallId)>,
    /// This core's register operation ids, to each job's own.
    metas: BTreeMap<MetaOp, (LogletId, MetaOp)>,
    /// The last id handed out.
    ids: u64,
    /// Jobs that ended with a chain (for metrics).
    completed: u64,
}

impl SealerCore {
    pub fn new(config: SealerConfig, seed: u64) -> Self {
        SealerCore {
            config,
            rng: StdRng::seed_from_u64(seed),
            jobs: BTreeMap::new(),
            calls: BTreeMap::new(),
            metas: BTreeMap::new(),
            ids: 0,
            completed: 0,
        }
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: SealerInput) -> Vec<SealerEffect> {
        let mut out = Vec::new();
        match input {
            SealerInput::Request {
                token,
                log,
                loglet,
                next_sequencer,
            } => {
                if let Some(running) = self.jobs.get_mut(&loglet) {
                    running.waiters.push(token);
                    return out;
                }
                let config = SealConfig {
                    nodeset: self.config.nodeset.clone(),
                    replication: self.config.replication,
                    bugs: self.config.bugs,
                    seed: self.rng.gen(),
                };
                let deadline = env.now + self.config.seal_timeout;
                let (job, effects) =
                    SealJob::new(log, loglet, next_sequencer, config, deadline, env);
                self.jobs.insert(
                    loglet,
                    Running {
                        job,
                        waiters: vec![token],
                    },
                );
                self.translate(loglet, effects, &mut out);
            }
            SealerInput::MetaDone { op, result } => {
                if let Some((loglet, op)) = self.metas.remove(&op) {
                    self.feed(env, loglet, SealInput::MetaDone { op, result }, &mut out);
                }
            }
            SealerInput::Reply { call, from, result } => {
                if let Some((loglet, call)) = self.calls.remove(&call) {
                    let input = SealInput::Reply { call, from, result };
                    self.feed(env, loglet, input, &mut out);
                }
            }
            SealerInput::Tick => {
                let due: Vec<LogletId> = self
                    .jobs
                    .iter()
                    .filter(|(_, r)| r.job.next_wake().is_some_and(|t| t <= env.now))
                    .map(|(l, _)| *l)
                    .collect();
                for loglet in due {
                    self.feed(env, loglet, SealInput::Tick, &mut out);
                }
            }
        }
        out
    }

    /// The earliest wake any job wants.
    pub fn next_wake(&self) -> Option<Instant> {
        self.jobs.values().filter_map(|r| r.job.next_wake()).min()
    }

    /// Loglets with a job in flight.
    pub fn jobs(&self) -> impl Iterator<Item = LogletId> + '_ {
        self.jobs.keys().copied()
    }

    /// Jobs that ended with a chain so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    fn feed(&mut self, env: &Env, loglet: LogletId, input: SealInput, out: &mut Vec<SealerEffect>) {
        let Some(running) = self.jobs.get_mut(&loglet) else {
            return;
        };
        let effects = running.job.handle(env, input);
        self.translate(loglet, effects, out);
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn translate(
        &mut self,
        loglet: LogletId,
        effects: Vec<SealEffect>,
        out: &mut Vec<SealerEffect>,
    ) {
        for effect in effects {
            match effect {
                SealEffect::Meta {
                    op,
                    key,
                    change,
                    timeout,
                } => {
                    let mine = MetaOp(self.next_id());
                    self.metas.insert(mine, (loglet, op));
                    out.push(SealerEffect::Meta {
                        op: mine,
                        key,
                        change,
                        timeout,
                    });
                }
                SealEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    let mine = CallId(self.next_id());
                    self.calls.insert(mine, (loglet, call));
                    out.push(SealerEffect::Call {
                        to,
                        call: mine,
                        req,
                        timeout,
                    });
                }
                SealEffect::Done { result } => {
                    let waiters = self
                        .jobs
                        .remove(&loglet)
                        .map(|r| r.waiters)
                        .unwrap_or_default();
                    // Replies still due to the finished job are dropped.
                    self.calls.retain(|_, (l, _)| *l != loglet);
                    self.metas.retain(|_, (l, _)| *l != loglet);
                    if result.is_ok() {
                        self.completed += 1;
                    }
                    for token in waiters {
                        out.push(SealerEffect::Respond {
                            token,
                            result: result.clone(),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::log_server::{RecordsReply, TailInfo};
    use crate::types::Lsn;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn nodes() -> Vec<NodeId> {
        vec![n(1), n(2), n(3)]
    }

    const LOG: LogId = LogId(0);

    fn loglet() -> LogletId {
        LogletId::new(LOG, 0)
    }

    fn env(now: Instant) -> Env {
        Env {
            now,
            me: n(1),
            nodes: nodes(),
            suspected: BTreeSet::new(),
        }
    }

    fn chain() -> Chain {
        Chain::initial(LOG, n(1), nodes(), 2)
    }

    fn versioned(version: u64, chain: &Chain) -> Versioned {
        Versioned {
            version,
            value: rmp_serde::to_vec_named(chain).unwrap(),
            writer: 0,
        }
    }

    fn config(bugs: BugSet) -> SealConfig {
        SealConfig {
            nodeset: nodes(),
            replication: 2,
            bugs,
            seed: 7,
        }
    }

    /// A job with a 10 s deadline from `t0`, sequencing the next segment on N2.
    fn job(t0: Instant, bugs: BugSet) -> (SealJob, Vec<SealEffect>) {
        SealJob::new(
            LOG,
            loglet(),
            n(2),
            config(bugs),
            t0 + Duration::from_secs(10),
            &env(t0),
        )
    }

    fn rec(o: Offset) -> Record {
        Record(vec![o as u8])
    }

    fn sealed(local_tail: Offset, known_global_tail: Offset) -> Result<Response, CallError> {
        Ok(Response::Seal(Ok(TailInfo {
            sealed: true,
            local_tail,
            known_global_tail,
            suspect: false,
        })))
    }

    fn suspect() -> Result<Response, CallError> {
        Ok(Response::Seal(Ok(TailInfo {
            sealed: true,
            suspect: true,
            ..TailInfo::default()
        })))
    }

    fn records(offsets: &[Offset]) -> Result<Response, CallError> {
        Ok(Response::Records(Ok(RecordsReply {
            records: offsets.iter().map(|&o| (o, rec(o))).collect(),
            tail: TailInfo::default(),
            damaged: Vec::new(),
            trimmed_below: 0,
        })))
    }

    fn stored() -> Result<Response, CallError> {
        Ok(Response::Store(StoreReply::Stored { local_tail: 0 }))
    }

    fn lost(to: NodeId) -> Result<Response, CallError> {
        Err(CallError::Unavailable(to, "down".into()))
    }

    /// The calls among `effects`, as (to, call, request).
    fn calls(effects: &[SealEffect]) -> Vec<(NodeId, CallId, Request)> {
        effects
            .iter()
            .filter_map(|e| match e {
                SealEffect::Call { to, call, req, .. } => Some((*to, *call, req.clone())),
                _ => None,
            })
            .collect()
    }

    fn call_to(effects: &[SealEffect], to: NodeId) -> CallId {
        calls(effects)
            .into_iter()
            .find(|(t, _, _)| *t == to)
            .map(|(_, c, _)| c)
            .unwrap_or_else(|| panic!("no call to {to} in {effects:?}"))
    }

    fn meta_op(effects: &[SealEffect]) -> MetaOp {
        effects
            .iter()
            .find_map(|e| match e {
                SealEffect::Meta { op, .. } => Some(*op),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no register operation in {effects:?}"))
    }

    /// The chain a publishing CAS among `effects` writes, and the version it
    /// expects.
    fn published(effects: &[SealEffect]) -> (u64, Chain) {
        effects
            .iter()
            .find_map(|e| match e {
                SealEffect::Meta {
                    change:
                        Change::Cas {
                            expected, value, ..
                        },
                    ..
                } => Some((*expected, rmp_serde::from_slice(value).unwrap())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no CAS in {effects:?}"))
    }

    fn reply(
        job: &mut SealJob,
        now: Instant,
        effects: &[SealEffect],
        from: NodeId,
        result: Result<Response, CallError>,
    ) -> Vec<SealEffect> {
        let call = call_to(effects, from);
        job.handle(&env(now), SealInput::Reply { call, from, result })
    }

    /// A job past its chain read (version 5 of `chain()`), with its seal calls.
    fn sealing(t0: Instant, bugs: BugSet) -> (SealJob, Vec<SealEffect>) {
        let (mut job, first) = job(t0, bugs);
        let seals = job.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&first),
                result: Ok(Outcome::Value(Some(versioned(5, &chain())))),
            },
        );
        (job, seals)
    }

    fn done(effects: &[SealEffect]) -> Result<Chain, SealError> {
        match effects {
            [SealEffect::Done { result }] => result.clone(),
            other => panic!("expected the job's end, got {other:?}"),
        }
    }

    #[test]
    fn a_job_starts_by_reading_the_chain() {
        let t0 = Instant::now();
        let (job, effects) = job(t0, BugSet::NONE);
        assert_eq!(
            effects,
            vec![SealEffect::Meta {
                op: MetaOp(1),
                key: "chain/0".into(),
                change: Change::Read,
                timeout: Duration::from_secs(10),
            }]
        );
        assert!(!job.is_done());
        assert_eq!(job.next_wake(), None);
    }

    #[test]
    fn a_missing_chain_or_loglet_ends_the_job() {
        let t0 = Instant::now();
        let (mut j, e) = job(t0, BugSet::NONE);
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&e),
                result: Ok(Outcome::Value(None)),
            },
        );
        assert_eq!(done(&out), Err(SealError::UnknownLog(LOG)));
        assert!(j.is_done());

        let (mut j, e) = job(t0, BugSet::NONE);
        let other = Chain::initial(LogId(1), n(1), nodes(), 2);
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&e),
                result: Ok(Outcome::Value(Some(versioned(1, &other)))),
            },
        );
        assert_eq!(done(&out), Err(SealError::UnknownLoglet(loglet())));

        let (mut j, e) = job(t0, BugSet::NONE);
        let garbage = Versioned {
            version: 1,
            value: vec![0xc1],
            writer: 0,
        };
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&e),
                result: Ok(Outcome::Value(Some(garbage))),
            },
        );
        assert!(matches!(
            done(&out),
            Err(SealError::Meta(MetaError::Decode { .. }))
        ));

        let (mut j, e) = job(t0, BugSet::NONE);
        let err = MetaError::Indeterminate {
            key: "chain/0".into(),
        };
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&e),
                result: Err(err.clone()),
            },
        );
        assert_eq!(done(&out), Err(SealError::Meta(err)));
    }

    #[test]
    fn a_loglet_already_sealed_in_the_chain_is_done_without_sealing() {
        let t0 = Instant::now();
        let (mut j, e) = job(t0, BugSet::NONE);
        let c = chain()
            .sealed_and_extended(loglet(), 4, n(3), nodes(), 2)
            .unwrap();
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&e),
                result: Ok(Outcome::Value(Some(versioned(2, &c)))),
            },
        );
        assert_eq!(done(&out), Ok(c));
    }

    #[test]
    fn every_server_of_the_nodeset_is_asked_to_seal() {
        let t0 = Instant::now();
        let (_, seals) = sealing(t0, BugSet::NONE);
        let seal = |to: u32, call: u64| SealEffect::Call {
            to: n(to),
            call: CallId(call),
            req: Request::Seal(Seal { loglet: loglet() }),
            timeout: CALL_TIMEOUT,
        };
        assert_eq!(seals, vec![seal(1, 2), seal(2, 3), seal(3, 4)]);
    }

    #[test]
    fn an_f_majority_of_seals_is_enough_and_the_tail_is_published_in_one_cas() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(0, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(3), sealed(0, 0));
        // Nothing unreleased: straight to the CAS on version 5.
        let (expected, next) = published(&out);
        assert_eq!(expected, 5);
        assert_eq!(
            next,
            chain()
                .sealed_and_extended(loglet(), 0, n(2), nodes(), 2)
                .unwrap()
        );
        // The late third answer changes nothing.
        assert!(reply(&mut j, t0, &seals, n(2), sealed(0, 0)).is_empty());
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&out),
                result: Ok(Outcome::Value(Some(versioned(6, &next)))),
            },
        );
        assert_eq!(done(&out), Ok(next));
    }

    #[test]
    fn a_suspect_server_is_sealed_but_not_counted() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), suspect()).is_empty());
        assert!(reply(&mut j, t0, &seals, n(2), sealed(2, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(3), sealed(1, 0));
        // Records are read from N2 and N3 only.
        let reads: Vec<NodeId> = calls(&out).into_iter().map(|(to, _, _)| to).collect();
        assert_eq!(reads, vec![n(2)]);
    }

    #[test]
    fn a_round_without_an_f_majority_pauses_then_asks_only_the_servers_not_sealed() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(0, 0)).is_empty());
        let refused = Ok(Response::Seal(Err(
            crate::actors::log_server::LogServerError::Unavailable,
        )));
        assert!(reply(&mut j, t0, &seals, n(2), refused).is_empty());
        assert!(reply(&mut j, t0, &seals, n(3), lost(n(3))).is_empty());
        let wake = t0 + RETRY_PAUSE;
        assert_eq!(j.next_wake(), Some(wake));
        assert!(j
            .handle(&env(t0 + Duration::from_millis(50)), SealInput::Tick)
            .is_empty());
        let again = j.handle(&env(wake), SealInput::Tick);
        let to: Vec<NodeId> = calls(&again).into_iter().map(|(to, _, _)| to).collect();
        assert_eq!(to, vec![n(2), n(3)]);
        assert_eq!(j.next_wake(), None);
    }

    #[test]
    fn too_few_usable_servers_make_the_job_forget_and_ask_them_all_again() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), suspect()).is_empty());
        assert!(reply(&mut j, t0, &seals, n(2), suspect()).is_empty());
        assert!(reply(&mut j, t0, &seals, n(3), sealed(0, 0)).is_empty());
        // Round over, f-majority missing: a pause, then only N3 is left
        // usable, which is too few: another pause, and everything is forgotten.
        let t1 = t0 + RETRY_PAUSE;
        assert!(j.handle(&env(t1), SealInput::Tick).is_empty());
        let t2 = t1 + RETRY_PAUSE;
        assert_eq!(j.next_wake(), Some(t2));
        let again = j.handle(&env(t2), SealInput::Tick);
        let to: Vec<NodeId> = calls(&again).into_iter().map(|(to, _, _)| to).collect();
        assert_eq!(to, nodes());
    }

    #[test]
    fn a_stage_that_cannot_finish_before_the_deadline_ends_the_job_with_a_timeout() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        let late = t0 + Duration::from_millis(9_950);
        assert!(reply(&mut j, late, &seals, n(1), sealed(0, 0)).is_empty());
        assert!(reply(&mut j, late, &seals, n(2), lost(n(2))).is_empty());
        let out = reply(&mut j, late, &seals, n(3), lost(n(3)));
        assert_eq!(
            done(&out),
            Err(SealError::Timeout {
                loglet: loglet(),
                stage: "waiting for an f-majority of seals (1 of 2 sealed)".into(),
            })
        );
        // Calls get what is left of the deadline, at most a second.
        let (mut j, first) = job(t0, BugSet::NONE);
        let seals = j.handle(
            &env(late),
            SealInput::MetaDone {
                op: meta_op(&first),
                result: Ok(Outcome::Value(Some(versioned(5, &chain())))),
            },
        );
        assert!(seals.iter().all(|e| matches!(
            e,
            SealEffect::Call { timeout, .. } if *timeout == Duration::from_millis(50)
        )));
    }

    #[test]
    fn unreleased_records_are_read_from_every_responder_and_repaired_to_r_copies() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(3, 1)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(4, 2));
        // global = 2, reach = 4: N1 holds up to 3.
        let get = |from: Offset| {
            Request::GetRecords(GetRecords {
                loglet: loglet(),
                from,
                to: 4,
                max_bytes: FETCH_MAX_BYTES,
                include_uncommitted: true,
            })
        };
        assert_eq!(calls(&out), vec![(n(1), CallId(5), get(2))]);
        let out = reply(&mut j, t0, &out, n(1), records(&[2]));
        assert_eq!(calls(&out), vec![(n(2), CallId(6), get(2))]);
        let out = reply(&mut j, t0, &out, n(2), records(&[2, 3]));
        let store = Request::Store(Store {
            loglet: loglet(),
            first: 2,
            records: Arc::new(vec![rec(2), rec(3)]),
            known_global_tail: 2,
            repair: true,
            from: None,
        });
        let to: Vec<(NodeId, Request)> = calls(&out).into_iter().map(|(t, _, r)| (t, r)).collect();
        assert_eq!(
            to,
            vec![(n(1), store.clone()), (n(2), store.clone()), (n(3), store)]
        );
        assert!(reply(&mut j, t0, &out, n(3), stored()).is_empty());
        let cas = reply(&mut j, t0, &out, n(1), stored());
        let (_, next) = published(&cas);
        assert_eq!(next.segments[0].sealed_tail, Some(4));
        assert_eq!(next.tail().base_lsn, Lsn(5));
    }

    #[test]
    fn each_read_starts_where_the_last_reply_ended_and_a_reply_that_does_not_move_ends_it() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(5, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let out = reply(&mut j, t0, &out, n(1), records(&[0, 1]));
        match &calls(&out)[..] {
            [(to, _, Request::GetRecords(g))] => assert_eq!((*to, g.from), (n(1), 2)),
            other => panic!("{other:?}"),
        }
        // Offsets out of range or behind the read do not move it: N1 is done.
        let out = reply(&mut j, t0, &out, n(1), records(&[1, 9]));
        assert!(
            matches!(&calls(&out)[0].2, Request::Store(s) if s.first == 0 && s.records.len() == 2)
        );
    }

    #[test]
    fn records_beyond_a_gap_are_cut_off_at_the_seal() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(4, 1)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(1, 1));
        let out = reply(&mut j, t0, &out, n(1), records(&[1, 3]));
        // Offset 2 is nowhere: the tail is 2 and offset 3 is cut off.
        let stores = calls(&out);
        assert!(matches!(&stores[0].2, Request::Store(s) if s.first == 1 && s.records.len() == 1));
        reply(&mut j, t0, &out, n(1), stored());
        let cas = reply(&mut j, t0, &out, n(2), stored());
        assert_eq!(published(&cas).1.segments[0].sealed_tail, Some(2));
    }

    #[test]
    fn a_responder_that_reports_damage_is_excluded_and_the_job_starts_over() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(2, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(2, 0));
        let damaged = Ok(Response::Records(Ok(RecordsReply {
            records: vec![(0, rec(0))],
            tail: TailInfo::default(),
            damaged: vec![1],
            trimmed_below: 0,
        })));
        let out = reply(&mut j, t0, &out, n(1), damaged);
        // Back to the chain, then a seal round without N1.
        assert!(matches!(
            &out[..],
            [SealEffect::Meta {
                change: Change::Read,
                ..
            }]
        ));
        let seals = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&out),
                result: Ok(Outcome::Value(Some(versioned(5, &chain())))),
            },
        );
        let to: Vec<NodeId> = calls(&seals).into_iter().map(|(to, _, _)| to).collect();
        assert_eq!(to, vec![n(2), n(3)]);
    }

    #[test]
    fn a_responder_whose_read_fails_is_excluded() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(2, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(2, 0));
        let out = reply(&mut j, t0, &out, n(1), records(&[0, 1]));
        let out = reply(&mut j, t0, &out, n(2), lost(n(2)));
        let seals = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&out),
                result: Ok(Outcome::Value(Some(versioned(5, &chain())))),
            },
        );
        let to: Vec<NodeId> = calls(&seals).into_iter().map(|(to, _, _)| to).collect();
        assert_eq!(to, vec![n(1), n(3)]);
    }

    #[test]
    fn a_repair_chunk_short_of_r_copies_is_sent_again_to_the_others_after_a_pause() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        assert!(reply(&mut j, t0, &seals, n(1), sealed(1, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let stores = reply(&mut j, t0, &out, n(1), records(&[0]));
        assert!(reply(&mut j, t0, &stores, n(1), stored()).is_empty());
        let sealed_here = Ok(Response::Store(StoreReply::Sealed { local_tail: 0 }));
        assert!(reply(&mut j, t0, &stores, n(2), sealed_here).is_empty());
        assert!(reply(&mut j, t0, &stores, n(3), lost(n(3))).is_empty());
        let wake = t0 + RETRY_PAUSE;
        assert_eq!(j.next_wake(), Some(wake));
        let again = j.handle(&env(wake), SealInput::Tick);
        let to: Vec<NodeId> = calls(&again).into_iter().map(|(to, _, _)| to).collect();
        assert_eq!(to, vec![n(2), n(3)]);
        let cas = reply(&mut j, wake, &again, n(3), stored());
        assert_eq!(published(&cas).1.segments[0].sealed_tail, Some(1));
    }

    #[test]
    fn a_long_repair_goes_in_chunks() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        let total = REPAIR_CHUNK as Offset + 1;
        assert!(reply(&mut j, t0, &seals, n(1), sealed(total, 0)).is_empty());
        let out = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let all: Vec<Offset> = (0..total).collect();
        let stores = reply(&mut j, t0, &out, n(1), records(&all));
        assert!(
            matches!(&calls(&stores)[0].2, Request::Store(s) if s.first == 0 && s.records.len() == REPAIR_CHUNK)
        );
        assert!(reply(&mut j, t0, &stores, n(1), stored()).is_empty());
        let next = reply(&mut j, t0, &stores, n(2), stored());
        assert!(
            matches!(&calls(&next)[0].2, Request::Store(s) if s.first == REPAIR_CHUNK as Offset && s.records.len() == 1)
        );
    }

    #[test]
    fn a_conflict_with_the_loglet_sealed_is_another_sealers_win() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        reply(&mut j, t0, &seals, n(1), sealed(0, 0));
        let cas = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let theirs = chain()
            .sealed_and_extended(loglet(), 0, n(3), nodes(), 2)
            .unwrap();
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&cas),
                result: Ok(Outcome::Conflict(Some(versioned(6, &theirs)))),
            },
        );
        assert_eq!(done(&out), Ok(theirs));
    }

    #[test]
    fn any_other_conflict_or_an_unknown_outcome_starts_over_from_the_chain() {
        let t0 = Instant::now();
        for result in [
            Ok(Outcome::Conflict(Some(versioned(6, &chain())))),
            Err(MetaError::Indeterminate {
                key: "chain/0".into(),
            }),
        ] {
            let (mut j, seals) = sealing(t0, BugSet::NONE);
            reply(&mut j, t0, &seals, n(1), sealed(0, 0));
            let cas = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
            let out = j.handle(
                &env(t0),
                SealInput::MetaDone {
                    op: meta_op(&cas),
                    result,
                },
            );
            assert!(
                matches!(
                    &out[..],
                    [SealEffect::Meta {
                        change: Change::Read,
                        ..
                    }]
                ),
                "{out:?}"
            );
        }
        // At the deadline an unknown outcome is the register's error, and a
        // conflict is a timeout.
        let end = t0 + Duration::from_secs(10);
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        reply(&mut j, t0, &seals, n(1), sealed(0, 0));
        let cas = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let err = MetaError::Indeterminate {
            key: "chain/0".into(),
        };
        let out = j.handle(
            &env(end),
            SealInput::MetaDone {
                op: meta_op(&cas),
                result: Err(err.clone()),
            },
        );
        assert_eq!(done(&out), Err(SealError::Meta(err)));
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        reply(&mut j, t0, &seals, n(1), sealed(0, 0));
        let cas = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let out = j.handle(
            &env(end),
            SealInput::MetaDone {
                op: meta_op(&cas),
                result: Ok(Outcome::Conflict(Some(versioned(6, &chain())))),
            },
        );
        assert!(
            matches!(done(&out), Err(SealError::Timeout { stage, .. }) if stage == "publishing the new segment")
        );
        // A register that lost the chain altogether.
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        reply(&mut j, t0, &seals, n(1), sealed(0, 0));
        let cas = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        let out = j.handle(
            &env(t0),
            SealInput::MetaDone {
                op: meta_op(&cas),
                result: Ok(Outcome::Conflict(None)),
            },
        );
        assert_eq!(done(&out), Err(SealError::UnknownLog(LOG)));
    }

    #[test]
    fn replies_that_belong_to_no_pending_call_change_nothing() {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, BugSet::NONE);
        let stray = SealInput::Reply {
            call: CallId(99),
            from: n(1),
            result: sealed(0, 0),
        };
        assert!(j.handle(&env(t0), stray).is_empty());
        let stale = SealInput::MetaDone {
            op: MetaOp(1),
            result: Ok(Outcome::Value(None)),
        };
        assert!(j.handle(&env(t0), stale).is_empty());
        // One answer per call: a duplicate does not count twice.
        assert!(reply(&mut j, t0, &seals, n(1), sealed(0, 0)).is_empty());
        assert!(reply(&mut j, t0, &seals, n(1), sealed(0, 0)).is_empty());
        let cas = reply(&mut j, t0, &seals, n(2), sealed(0, 0));
        assert_eq!(
            published(&cas).0,
            5,
            "two distinct seals are the f-majority"
        );
    }

    #[test]
    fn requests_for_one_loglet_share_one_job() {
        let t0 = Instant::now();
        let mut core = SealerCore::new(
            SealerConfig {
                nodeset: nodes(),
                replication: 2,
                seal_timeout: Duration::from_secs(10),
                bugs: BugSet::NONE,
            },
            1,
        );
        let request = |token| SealerInput::Request {
            token,
            log: LOG,
            loglet: loglet(),
            next_sequencer: n(1),
        };
        let first = core.handle(&env(t0), request(1));
        assert!(
            matches!(&first[..], [SealerEffect::Meta { timeout, .. }] if *timeout == Duration::from_secs(10))
        );
        assert!(core.handle(&env(t0), request(2)).is_empty());
        assert_eq!(core.jobs().collect::<Vec<_>>(), vec![loglet()]);
        let SealerEffect::Meta { op, .. } = &first[0] else {
            unreachable!()
        };
        let c = chain()
            .sealed_and_extended(loglet(), 0, n(3), nodes(), 2)
            .unwrap();
        let out = core.handle(
            &env(t0),
            SealerInput::MetaDone {
                op: *op,
                result: Ok(Outcome::Value(Some(versioned(2, &c)))),
            },
        );
        assert_eq!(
            out,
            vec![
                SealerEffect::Respond {
                    token: 1,
                    result: Ok(c.clone())
                },
                SealerEffect::Respond {
                    token: 2,
                    result: Ok(c)
                },
            ]
        );
        assert_eq!(core.jobs().count(), 0);
        assert_eq!(core.completed(), 1);
        // A later request starts a new job.
        assert_eq!(core.handle(&env(t0), request(3)).len(), 1);
    }

    /// N1 lags: it holds offsets 0 and 1; offset 2 was acknowledged with
    /// copies on N2 and N3 (r = 2). N1 seals first.
    /// Returns the job, its seal calls, what N1's seal brought, and the time.
    fn lagging_n1(bugs: BugSet) -> (SealJob, Vec<SealEffect>, Vec<SealEffect>, Instant) {
        let t0 = Instant::now();
        let (mut j, seals) = sealing(t0, bugs);
        let out = reply(&mut j, t0, &seals, n(1), sealed(2, 0));
        (j, seals, out, t0)
    }

    #[test]
    fn bug_seal_wrong_quorum_cuts_off_an_acknowledged_record() {
        let (mut j, _, out, t0) = lagging_n1(BugSet::NONE.with(Bug::SealWrongQuorum));
        // With n - r = 1 seal counted as enough, N1 alone decides the tail.
        let stores = reply(&mut j, t0, &out, n(1), records(&[0, 1]));
        reply(&mut j, t0, &stores, n(1), stored());
        let cas = reply(&mut j, t0, &stores, n(2), stored());
        assert_eq!(
            published(&cas).1.segments[0].sealed_tail,
            Some(2),
            "offset 2, acknowledged, is cut off"
        );

        // Without the bug, N1 alone is not enough; N2 brings offset 2.
        let (mut j, seals, out, t0) = lagging_n1(BugSet::NONE);
        assert!(out.is_empty(), "one seal is not an f-majority");
        let out = reply(&mut j, t0, &seals, n(2), sealed(3, 0));
        let out = reply(&mut j, t0, &out, n(1), records(&[0, 1]));
        let stores = reply(&mut j, t0, &out, n(2), records(&[0, 1, 2]));
        reply(&mut j, t0, &stores, n(1), stored());
        let cas = reply(&mut j, t0, &stores, n(2), stored());
        assert_eq!(published(&cas).1.segments[0].sealed_tail, Some(3));
    }

    #[test]
    fn bug_repair_stops_at_first_gap_cuts_off_an_acknowledged_record() {
        let run = |bugs: BugSet| {
            let (mut j, seals, _, t0) = lagging_n1(bugs);
            let out = reply(&mut j, t0, &seals, n(2), sealed(3, 0));
            let out = reply(&mut j, t0, &out, n(1), records(&[0, 1]));
            let stores = reply(&mut j, t0, &out, n(2), records(&[0, 1, 2]));
            reply(&mut j, t0, &stores, n(1), stored());
            let cas = reply(&mut j, t0, &stores, n(2), stored());
            published(&cas).1.segments[0].sealed_tail
        };
        assert_eq!(run(BugSet::NONE), Some(3));
        assert_eq!(
            run(BugSet::NONE.with(Bug::RepairStopsAtFirstGap)),
            Some(2),
            "offset 2, acknowledged and on N2, is cut off at N1's gap"
        );
    }

    #[test]
    fn the_tail_is_the_end_of_the_contiguous_union_from_the_global_tail() {
        let views = [
            SealedView {
                known_global_tail: 3,
                local_tail: 5,
            },
            SealedView {
                known_global_tail: 4,
                local_tail: 7,
            },
        ];
        assert_eq!(repair_range(&views), (4, 7));
        // server A has 4; server B has 5 and 6; together contiguous up to 7.
        let r = |o: Offset| (o, rec(o));
        let (tail, repair) = sealed_tail(4, vec![r(4), r(5), r(6), r(5)]);
        assert_eq!(tail, 7);
        assert_eq!(repair, vec![rec(4), rec(5), rec(6)]);
    }

    #[test]
    fn records_beyond_a_gap_are_not_part_of_the_tail() {
        let r = |o: Offset| (o, rec(o));
        let (tail, repair) = sealed_tail(2, vec![r(2), r(4), r(5)]);
        assert_eq!(tail, 3);
        assert_eq!(repair.len(), 1);
    }

    #[test]
    fn a_run_up_to_the_last_offset_stops_before_it() {
        let max = Offset::MAX;
        let r = |o: Offset| (o, rec(o));
        let (tail, repair) = sealed_tail(max - 2, vec![r(max - 2), r(max - 1), r(max)]);
        assert_eq!(tail, max);
        assert_eq!(repair, vec![rec(max - 2), rec(max - 1)]);
        assert_eq!(sealed_tail(max, vec![r(max)]), (max, Vec::new()));
    }

    #[test]
    fn nothing_above_the_global_tail_keeps_it() {
        assert_eq!(sealed_tail(9, Vec::new()).0, 9);
        assert_eq!(repair_range(&[]), (0, 0));
    }

    /// Random replies (hostile values included), in random order, with time
    /// passing: the job never panics, ends exactly once, and ends by its
    /// deadline once every call was answered.
    #[test]
    fn any_replies_end_the_job_exactly_once() {
        let edgy = |rng: &mut StdRng| match rng.gen_range(0..4) {
            0 => rng.gen_range(0..6),
            1 => Offset::MAX - rng.gen_range(0..3),
            2 => rng.gen(),
            _ => rng.gen_range(0..3000),
        };
        for case in 0..300u64 {
            let mut rng = StdRng::seed_from_u64(case);
            let t0 = Instant::now();
            let mut now = t0;
            let bugs = if case % 7 == 0 {
                BugSet::NONE.with(Bug::SealWrongQuorum)
            } else {
                BugSet::NONE
            };
            let (mut j, mut pending) = job(t0, bugs);
            let mut ended = 0;
            for _ in 0..5_000 {
                if ended > 0 {
                    assert!(pending
                        .iter()
                        .all(|e| !matches!(e, SealEffect::Done { .. })));
                }
                now += Duration::from_millis(rng.gen_range(0..200));
                let effects = if pending.is_empty() || rng.gen_bool(0.1) {
                    j.handle(&env(now), SealInput::Tick)
                } else {
                    let i = rng.gen_range(0..pending.len());
                    match pending.swap_remove(i) {
                        SealEffect::Meta { op, .. } => {
                            let result = match rng.gen_range(0..6) {
                                0 => Err(MetaError::Indeterminate {
                                    key: "chain/0".into(),
                                }),
                                1 => Ok(Outcome::Value(None)),
                                2 => Ok(Outcome::Conflict(Some(Versioned {
                                    version: 1,
                                    value: vec![rng.gen(); 3],
                                    writer: 0,
                                }))),
                                3 => Ok(Outcome::Conflict(Some(versioned(6, &chain())))),
                                _ => Ok(Outcome::Value(Some(versioned(5, &chain())))),
                            };
                            j.handle(&env(now), SealInput::MetaDone { op, result })
                        }
                        SealEffect::Call { to, call, req, .. } => {
                            let result = match (req, rng.gen_range(0..5)) {
                                (_, 0) => lost(to),
                                (Request::Seal(_), _) => Ok(Response::Seal(Ok(TailInfo {
                                    sealed: true,
                                    local_tail: edgy(&mut rng),
                                    known_global_tail: edgy(&mut rng),
                                    suspect: rng.gen_bool(0.1),
                                }))),
                                (Request::GetRecords(g), _) => {
                                    let k = rng.gen_range(0..4);
                                    let offsets: Vec<Offset> = (0..k)
                                        .map(|_| {
                                            if rng.gen_bool(0.7) {
                                                g.from.saturating_add(rng.gen_range(0..3))
                                            } else {
                                                edgy(&mut rng)
                                            }
                                        })
                                        .collect();
                                    let mut reply = records(&offsets);
                                    if rng.gen_bool(0.05) {
                                        if let Ok(Response::Records(Ok(r))) = &mut reply {
                                            r.damaged.push(g.from);
                                        }
                                    }
                                    reply
                                }
                                (_, _) => stored(),
                            };
                            j.handle(
                                &env(now),
                                SealInput::Reply {
                                    call,
                                    from: to,
                                    result,
                                },
                            )
                        }
                        SealEffect::Done { .. } => unreachable!("Done is never kept pending"),
                    }
                };
                for e in effects {
                    match e {
                        SealEffect::Done { .. } => ended += 1,
                        other => pending.push(other),
                    }
                }
                if ended > 0 && pending.is_empty() {
                    break;
                }
            }
            assert_eq!(ended, 1, "case {case}: the job ended {ended} times");
            assert!(j.is_done());
        }
    }
}
