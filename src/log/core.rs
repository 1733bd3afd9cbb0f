//! The appender and the reader, without I/O: every rule of `LogClient`
//! (`client.rs` is its shell) as one state machine per node, [`LogCore`],
//! holding each operation in flight (an append, a read, a chain refresh, a
//! seal driven for a caller, a trim) and what the node knows of its logs'
//! chains and of its local log-server's tails.
//!
//! **Chains.** The core knows the chain of a log from `ChainSeen` (the
//! host's metadata cache, as it is now) and from its own register reads
//! (a newer version wins). *Refreshing* a chain is a linearizable register
//! read of `chain/<log>`; when the register holds none, the log's first
//! segment (sequenced on the partition's preferred leader, so a healthy
//! start needs no seal) is created by a CAS on version 0. A log beyond the
//! configured count is unknown.
//!
//! **Append** (`Input::Append` → `Done(Appended)`):
//! - A1. An append of no records, or of more than `MAX_APPEND_RECORDS`
//!   records, `MAX_APPEND_BYTES` bytes or a record of more than
//!   `MAX_RECORD_BYTES`, is refused (`TooLarge`) before anything is sent.
//! - A2. Each attempt goes to the sequencer of the chain's tail as this
//!   node knows it (refreshing the chain when it knows none), bounded by
//!   `append_timeout` and the deadline. Past the deadline the append is
//!   `Unavailable`, with the last reason.
//! - A3. `Sealed` (refused before any offset was assigned): the chain is
//!   refreshed once, then the appender waits up to `seal_grace` for the
//!   tail to move past the loglet; if it does not, it drives
//!   seal-and-extend itself, then tries again.
//! - A4. `Indeterminate` (offsets assigned, then sealed or stuck), or a call
//!   that may have been delivered: the outcome is unknown. The append ends
//!   `Indeterminate` and the loglet is sealed in the background so the log
//!   moves on (the caller decides about a retry).
//! - A5. `Gone`, `NotSequencer` or a sequencer storage failure: drive
//!   seal-and-extend, then try again.
//! - A6. Not delivered: if the sequencer's node is suspected or is this
//!   node, drive seal-and-extend; otherwise pause [`NOT_DELIVERED_PAUSE`]
//!   and try again.
//! - A7. `TooLarge` from the sequencer is `TooLarge`; `Invalid` (refused
//!   before any offset) is `Unavailable`.
//! - A8. A seal-and-extend that failed is followed by a pause of
//!   [`FAILED_SEAL_PAUSE`]; every seal driven is bounded by the deadline
//!   and `seal_timeout`.
//!
//! **Read** (`Input::Read` → `Done(Read)`):
//! - R1. The segment holding `from` in the chain this read knows; it is
//!   readable below its sealed tail, or, while open, below the global tail
//!   this node's log-server knows (`TailChanged`, asked for with
//!   `WatchTail`).
//! - R2. Local first (`ReadLocal`); at the open tail the local copy gets a
//!   grace of [`LOCAL_GRACE`] (the commit can be known a moment before this
//!   node's copy is written); then each other server of the nodeset that is
//!   not suspected, in nodeset order. The result is a contiguous run from
//!   `from`, at most `max` records (offsets without an LSN end it).
//! - R3. Read repair: a run read from a peer is stored back on this node
//!   (a repair store, best effort) if this node is in the nodeset.
//! - R4. Nothing readable: wait until the local tail moves, the chain
//!   changes (also a change seen while not waiting), or [`READ_PAUSE`];
//!   past the deadline the read ends empty.
//! - R5. After a wait the chain is refreshed if the local log-server found
//!   the loglet sealed, or if the wait ended without the loglet's tail
//!   moving and the chain was not confirmed by a register read within
//!   [`CHAIN_RECHECK`]; otherwise the known chain is used. A tail that moved
//!   shows the segment is still being written (or still has committed
//!   records to hand out, which a sealed one stops having at its sealed
//!   tail): a register read then would only delay records that are there to
//!   read. (Refreshing after every wait made the leader's own apply stall
//!   once a second on a two-round register read: the 15-25 ms tail of the
//!   one-client latency, docs/PERF.md.)
//! - R6. A read stalled at an open tail for more than twice `seal_grace`
//!   while the tail's sequencer is suspected seals it in the background.
//! - R7. A read stalled at an open tail for [`TAIL_PROBE_AFTER`] asks one
//!   other server of the nodeset (not suspected, in nodeset order; the next
//!   one only if it does not answer) for committed records from its offset
//!   on, at most once per [`TAIL_PROBE_AFTER`]. The server answers only
//!   below the global tail it knows, so what comes back is committed; its
//!   known global tail raises this node's view for every reader. A node cut
//!   off from the sequencer but not from the other log-servers (a bridge)
//!   thus keeps applying: the sequencer's commit reaches it through any
//!   server that stored it.
//!
//! **Trim** (`Input::Trim` → `Done(Trimmed)`): below what this node already
//! trimmed, nothing; otherwise every segment of the known chain that starts
//! below the bound and does not end at or below what was trimmed is trimmed
//! on every server of its nodeset (at most to its sealed tail), one segment
//! after the other, each waiting for all answers (best effort). When every
//! server answered, the bound is recorded and the segments that now lie
//! wholly below it leave the chain (one CAS on the known version; a
//! conflict leaves that to the next trim). A read from below the chain's
//! first LSN is `Trimmed`: the reader cannot catch up from the log. So is a
//! read whose records no server holds when some server it asked says it
//! trimmed them (its trim point lies past the offset): a segment trimmed
//! in part stays in the chain, and its trimmed records never come back.
//! `first` is then the LSN at that server's trim point.
//!
//! **Seal** (`Input::Seal` → `Done(Sealed)`): a seal-and-extend of a given
//! segment, driven for a caller, bounded by its deadline.
//!
//! Every seal-and-extend this core drives asks the node's own sealer
//! (`Effect::SealAndExtend`), which moves the next segment's sequencer here.

use super::calls::{CallId, MetaOp, Request, Response};
use super::chain::{chain_key, Chain, Segment};
use super::{LogConfig, Record, MAX_RECORD_BYTES};
use crate::actors::env::Env;
use crate::actors::log_server::{GetRecords, LogServerError, Store, TailInfo, Trim};
use crate::actors::metadata::core::Versioned;
use crate::actors::metadata::proposer::{Change, Outcome};
use crate::actors::metadata::MetaError;
use crate::actors::sealer::SealError;
use crate::actors::sequencer::{
    Append, AppendOutcome, SequencerError, MAX_APPEND_BYTES, MAX_APPEND_RECORDS,
};
use crate::node::CallError;
use crate::types::{LogId, LogletId, Lsn, NodeId, Offset, PartitionId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long a reader at the open tail waits for this node's own copy of a
/// committed record before fetching it from a peer.
pub const LOCAL_GRACE: Duration = Duration::from_millis(30);

/// How stale a waiting reader lets its view of the chain become.
pub const CHAIN_RECHECK: Duration = Duration::from_secs(1);

/// Longest wait of a reader between two looks at the tail.
pub const READ_PAUSE: Duration = Duration::from_millis(250);

/// How long a read at the open tail waits without its local tail moving
/// before it asks a peer what is committed (R7), and the least time between
/// two such probes of one read.
pub const TAIL_PROBE_AFTER: Duration = Duration::from_millis(500);

/// One peer read's timeout.
pub const PEER_READ_TIMEOUT: Duration = Duration::from_millis(500);

/// A read repair store's timeout.
pub const REPAIR_TIMEOUT: Duration = Duration::from_secs(2);

/// A trim call's timeout.
pub const TRIM_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes one read asks of a log-server.
pub const READ_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Pause before the next attempt after an append that was not delivered to
/// a sequencer that is not suspected.
pub const NOT_DELIVERED_PAUSE: Duration = Duration::from_millis(20);

/// Pause before the next attempt after a seal-and-extend failed.
pub const FAILED_SEAL_PAUSE: Duration = Duration::from_millis(50);

/// Shortest register read an appender that met a sealed segment makes.
pub const MIN_GRACE_REFRESH: Duration = Duration::from_millis(100);

/// Shortest register read of a reader's chain re-check.
pub const MIN_RECHECK: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("log {0} does not exist")]
    UnknownLog(LogId),
    #[error("append of {records} records / {bytes} bytes exceeds the limit ({MAX_APPEND_RECORDS} records, {MAX_APPEND_BYTES} bytes, {MAX_RECORD_BYTES} per record)")]
    TooLarge { records: usize, bytes: usize },
    /// The records may or may not be in the log; a retry must be idempotent.
    #[error("append outcome unknown: {0}")]
    Indeterminate(String),
    /// The records are certainly not in the log.
    #[error("log unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("log {0} does not exist")]
    UnknownLog(LogId),
    #[error("reading log {0}: {1}")]
    Unavailable(LogId, String),
    /// The records from `from` on were trimmed and their segments left the
    /// chain: the log starts at `first` (a reader this far behind cannot
    /// catch up from the log).
    #[error("log {log} starts at LSN {first}: LSN {from} was trimmed")]
    Trimmed { log: LogId, from: Lsn, first: Lsn },
}

/// A chain lookup failed: metadata unreachable or the log does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaOrUnknown {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("log {0} does not exist")]
    UnknownLog(LogId),
}

/// An operation of the host's (an API call in flight); chosen by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// A seal-and-extend asked of this node's sealer; chosen by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SealId(pub u64);

/// A read of this node's log-server store; chosen by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// How the core is set up.
#[derive(Clone, Debug)]
pub struct LogCoreConfig {
    /// Replication, timeouts and the nodeset of new logs.
    pub log: LogConfig,
    /// How many logs there are (one per partition); others are unknown.
    pub logs: u32,
}

/// What the core learns.
#[derive(Clone, Debug)]
pub enum Input {
    /// Append `records` to `log` by `deadline`.
    Append {
        op: OpId,
        log: LogId,
        records: Vec<Record>,
        deadline: Instant,
    },
    /// Read up to `max` records of `log` from `from` on, waiting until
    /// `deadline` for at least one.
    Read {
        op: OpId,
        log: LogId,
        from: Lsn,
        max: usize,
        deadline: Instant,
    },
    /// Read `log`'s chain through the register (creating its first segment
    /// if it has none) by `deadline`.
    Refresh {
        op: OpId,
        log: LogId,
        deadline: Instant,
    },
    /// Seal `segment` (if still the tail) and extend the chain with a
    /// segment sequenced here, by `deadline`.
    Seal {
        op: OpId,
        segment: Segment,
        deadline: Instant,
    },
    /// Drop `log`'s records below `below` on every log-server.
    Trim { op: OpId, log: LogId, below: Lsn },
    /// The caller of `op` is gone: forget it (no `Done` follows).
    Cancel { op: OpId },
    /// This node's metadata cache now holds `chain` for `log` (`None`:
    /// nothing, or nothing that decodes).
    ChainSeen {
        log: LogId,
        chain: Option<(u64, Chain)>,
    },
    /// This node's log-server's tail of `loglet` (after `WatchTail`, at once
    /// and on every change).
    TailChanged { loglet: LogletId, tail: TailInfo },
    /// The result of register operation `op`.
    MetaDone {
        op: MetaOp,
        result: Result<Outcome, MetaError>,
    },
    /// The result of seal-and-extend `op`.
    SealDone {
        op: SealId,
        result: Result<Chain, SealError>,
    },
    /// What the local store holds for `ReadLocal { read }`.
    LocalRecords {
        read: ReadId,
        result: Result<Vec<(Offset, Record)>, LogServerError>,
    },
    /// The one reply to call `call`.
    Reply {
        call: CallId,
        from: NodeId,
        result: Result<Response, CallError>,
    },
    /// Time passed (see [`LogCore::next_wake`]).
    Tick,
}

/// What an operation ended with.
#[derive(Clone, Debug, PartialEq)]
pub enum OpResult {
    /// Of an `Append`: the LSN of its first record.
    Appended(Result<Lsn, AppendError>),
    /// Of a `Read`: the records read (empty: nothing new by the deadline).
    Read(Result<Vec<(Lsn, Record)>, ReadError>),
    /// Of a `Refresh`.
    Chain(Result<Chain, MetaOrUnknown>),
    /// Of a `Seal`.
    Sealed(Result<Chain, SealError>),
    /// Of a `Trim`.
    Trimmed,
}

/// What the core asks its host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send `req` to `to`; answer with exactly one `Reply { call }` within
    /// `timeout`.
    Call {
        to: NodeId,
        call: CallId,
        req: Request,
        timeout: Duration,
    },
    /// Run `change` on register key `key` (`chain/<log>`) within `timeout`;
    /// answer with `MetaDone { op }`.
    Meta {
        op: MetaOp,
        key: String,
        change: Change,
        timeout: Duration,
    },
    /// Ask this node's sealer to seal `segment` and extend the chain with a
    /// segment sequenced by `next_sequencer` (always this node), waiting at
    /// most `timeout`; answer with `SealDone { op }`.
    SealAndExtend {
        op: SealId,
        segment: Segment,
        next_sequencer: NodeId,
        timeout: Duration,
    },
    /// Read `[from, to)` of `loglet` from this node's log-server store (at
    /// most `max_bytes`); answer with `LocalRecords { read }`.
    ReadLocal {
        read: ReadId,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    },
    /// Feed `TailChanged` for `loglet`: its current tail at once, then every
    /// change, until `UnwatchTail`.
    WatchTail { loglet: LogletId },
    /// No more `TailChanged` for `loglet` is needed.
    UnwatchTail { loglet: LogletId },
    /// Operation `op` ended.
    Done { op: OpId, result: OpResult },
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Appends taken (not refused as too large).
    pub appends: u64,
    /// Records of appends that succeeded.
    pub appended_records: u64,
    /// Appends that failed.
    pub append_errors: u64,
    /// Tail probes (R7) that found a commit this node had not heard of:
    /// how often it learned the tail from a peer instead of the sequencer.
    pub tail_probes_ahead: u64,
}

/// A chain refresh in flight (for an operation).
#[derive(Clone, Debug)]
struct Refresh {
    /// The log whose chain is read.
    log: LogId,
    /// The register operation in flight.
    op: MetaOp,
    /// When the read began (a chain it finds was confirmed then).
    started: Instant,
    /// The refresh's end (its creating CAS gets what is left).
    deadline: Instant,
    /// The first segment being created, once the register was found empty.
    creating: Option<Chain>,
}

#[derive(Clone, Debug)]
enum AppendState {
    /// Between two steps (never seen between inputs).
    Idle,
    /// Fetching the chain (none was known).
    Chain(Refresh),
    /// The append call to the tail's sequencer is in flight.
    Calling { segment: Segment, call: CallId },
    /// Met `Sealed`: the one register read before the grace.
    Refreshing {
        segment: Segment,
        grace_end: Instant,
        refresh: Refresh,
    },
    /// Met `Sealed`: waiting for the chain to move past `segment`.
    Grace {
        segment: Segment,
        grace_end: Instant,
    },
    /// Driving seal-and-extend.
    Sealing { seal: SealId },
    /// Waiting before the next attempt.
    Pause { until: Instant },
}

#[derive(Clone, Debug)]
struct AppendOp {
    /// The log appended to.
    log: LogId,
    /// The records, appended together or not at all.
    records: Vec<Record>,
    /// When the caller stops waiting (the operation ends by then).
    deadline: Instant,
    /// Why the last attempt failed (the error at the deadline says it).
    last: String,
    /// Where the append stands.
    state: AppendState,
}

#[derive(Clone, Debug)]
enum ReadState {
    /// Between two steps (never seen between inputs).
    Idle,
    /// Fetching the chain (none was known).
    Chain(Refresh),
    /// Waiting for the first `TailChanged` of the segment's loglet.
    AwaitTail { segment: Segment },
    /// The local read of `[offset, end)` in flight (`again`: after the grace).
    Local {
        segment: Segment,
        offset: Offset,
        end: Offset,
        read: ReadId,
        again: bool,
    },
    /// The local copy's grace at the open tail.
    LocalGrace {
        segment: Segment,
        offset: Offset,
        end: Offset,
        until: Instant,
    },
    /// A peer read in flight; `next` indexes the nodeset's next candidate.
    Peer {
        segment: Segment,
        offset: Offset,
        end: Offset,
        next: usize,
        call: CallId,
    },
    /// Nothing readable: waiting since `since`, at most until `until`.
    Wait {
        segment: Segment,
        since: Instant,
        until: Instant,
    },
    /// R7: a tail probe in flight to the nodeset's `next - 1`th server.
    Probe {
        segment: Segment,
        offset: Offset,
        next: usize,
        call: CallId,
    },
    /// The chain re-check after a wait.
    Recheck { refresh: Refresh },
}

#[derive(Clone, Debug)]
struct ReadOp {
    /// The log read.
    log: LogId,
    /// The first LSN wanted.
    from: Lsn,
    /// At most this many records are returned.
    max: usize,
    /// When the caller stops waiting (the operation ends by then).
    deadline: Instant,
    /// The chain this read follows.
    chain: Option<Chain>,
    /// Since when the read waits at an open tail (R6, R7).
    stalled_since: Option<Instant>,
    /// When this read last asked a peer for the committed tail (R7).
    probed_at: Option<Instant>,
    /// The chain changed while the read was not waiting (R4).
    chain_moved: bool,
    /// The loglet whose tail this read follows.
    watching: Option<LogletId>,
    /// The highest trim point a peer of this round reported past the
    /// offset read (none of them held it): the records are gone.
    peer_trimmed: Option<Offset>,
    /// Where the read stands.
    state: ReadState,
}

#[derive(Clone, Debug)]
struct TrimOp {
    /// The log trimmed.
    log: LogId,
    /// Every LSN below this goes.
    below: Lsn,
    /// The chain as known when the trim began.
    chain: Chain,
    /// What this node had trimmed before.
    done: Lsn,
    /// Index of the next segment to look at.
    at: usize,
    /// Trim calls of the current segment.
    pending: BTreeSet<CallId>,
    /// Some trim call failed: nothing is recorded as trimmed and no segment
    /// leaves the chain (the next trim does it all again).
    incomplete: bool,
    /// The CAS that drops the trimmed segments from the chain, in flight.
    compacting: Option<MetaOp>,
}

#[derive(Clone, Debug)]
enum Op {
    Append(AppendOp),
    Read(ReadOp),
    Refresh(Refresh),
    Seal { log: LogId, seal: SealId },
    Trim(TrimOp),
}

impl Op {
    fn log(&self) -> LogId {
        match self {
            Op::Append(a) => a.log,
            Op::Read(r) => r.log,
            Op::Refresh(r) => r.log,
            Op::Seal { log, .. } => *log,
            Op::Trim(t) => t.log,
        }
    }
}

/// What happened to one operation.
enum Event {
    Meta(MetaOp, Result<Outcome, MetaError>),
    Sealed(SealId, Result<Chain, SealError>),
    Local(ReadId, Result<Vec<(Offset, Record)>, LogServerError>),
    Reply(CallId, Result<Response, CallError>),
    /// The known chain of the operation's log changed.
    Chain,
    /// The known tail of this loglet changed.
    Tail(LogletId),
    Tick,
}

/// A node's appender and reader (see the module doc).
#[derive(Clone, Debug)]
pub struct LogCore {
    /// Timeouts, graces and pauses.
    config: LogConfig,
    /// How many logs there are (a log id at or past it is refused).
    logs: u32,
    /// Picks the ids of this core's CAS operations.
    rng: StdRng,
    /// Each log's chain as this node knows it, with its register version.
    chains: BTreeMap<LogId, (u64, Chain)>,
    /// When each log's chain was last confirmed by a register read.
    checked: BTreeMap<LogId, Instant>,
    /// How far each log was trimmed from here.
    trimmed: BTreeMap<LogId, Lsn>,
    /// The local log-server's tail of each watched loglet.
    tails: BTreeMap<LogletId, TailInfo>,
    /// The reads following each watched loglet.
    watchers: BTreeMap<LogletId, BTreeSet<OpId>>,
    /// Every operation in flight.
    ops: BTreeMap<OpId, Op>,
    /// Calls in flight, with their operation (`None`: a read repair).
    calls: BTreeMap<CallId, Option<OpId>>,
    /// Register operations in flight, with their operation.
    metas: BTreeMap<MetaOp, OpId>,
    /// Seals in flight, with their operation (`None`: in the background)
    /// and loglet.
    seals: BTreeMap<SealId, (Option<OpId>, LogletId)>,
    /// Local reads in flight, with their operation.
    reads: BTreeMap<ReadId, OpId>,
    /// The last id handed out.
    ids: u64,
    /// Counters for status and metrics.
    stats: LogStats,
}

fn remaining(deadline: Instant, env: &Env) -> Duration {
    deadline.saturating_duration_since(env.now)
}

/// The first server of `segment`'s nodeset from index `next` on that is
/// neither this node nor suspected, with its index (R2, R7).
fn next_peer(env: &Env, segment: &Segment, next: usize) -> Option<(usize, NodeId)> {
    segment
        .nodeset
        .iter()
        .copied()
        .enumerate()
        .skip(next)
        .find(|(_, peer)| *peer != env.me && !env.is_suspected(*peer))
}

/// The contiguous run of `records` from `from` on, at most `max` long.
fn contiguous(
    from: Offset,
    records: impl IntoIterator<Item = (Offset, Record)>,
    max: usize,
) -> Vec<(Offset, Record)> {
    let mut out = Vec::new();
    for (o, r) in records {
        if Some(o) != from.checked_add(out.len() as Offset) || out.len() >= max {
            break;
        }
        out.push((o, r));
    }
    out
}

impl LogCore {
    pub fn new(config: LogCoreConfig, seed: u64) -> Self {
        LogCore {
            config: config.log,
            logs: config.logs,
            rng: StdRng::seed_from_u64(seed),
            chains: BTreeMap::new(),
            checked: BTreeMap::new(),
            trimmed: BTreeMap::new(),
            tails: BTreeMap::new(),
            watchers: BTreeMap::new(),
            ops: BTreeMap::new(),
            calls: BTreeMap::new(),
            metas: BTreeMap::new(),
            seals: BTreeMap::new(),
            reads: BTreeMap::new(),
            ids: 0,
            stats: LogStats::default(),
        }
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// The chain of `log` as this node knows it.
    pub fn chain(&self, log: LogId) -> Option<&(u64, Chain)> {
        self.chains.get(&log)
    }

    /// Operations in flight.
    pub fn ops(&self) -> usize {
        self.ops.len()
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Append {
                op,
                log,
                records,
                deadline,
            } => self.start_append(env, op, log, records, deadline, &mut out),
            Input::Read {
                op,
                log,
                from,
                max,
                deadline,
            } => self.start_read(env, op, log, from, max, deadline, &mut out),
            Input::Refresh { op, log, deadline } => {
                match self.refresh(env, op, log, remaining(deadline, env), &mut out) {
                    Some(r) => {
                        self.ops.insert(op, Op::Refresh(r));
                    }
                    None => out.push(Effect::Done {
                        op,
                        result: OpResult::Chain(Err(MetaOrUnknown::UnknownLog(log))),
                    }),
                }
            }
            Input::Seal {
                op,
                segment,
                deadline,
            } => {
                let log = segment.loglet.log();
                let seal = self.seal(env, Some(op), segment, remaining(deadline, env), &mut out);
                self.ops.insert(op, Op::Seal { log, seal });
            }
            Input::Trim { op, log, below } => self.start_trim(op, log, below, &mut out),
            Input::Cancel { op } => {
                if let Some(Op::Read(r)) = self.ops.remove(&op) {
                    if let Some(loglet) = r.watching {
                        self.unwatch(op, loglet, &mut out);
                    }
                }
            }
            Input::ChainSeen { log, chain } => {
                if self.chains.get(&log) != chain.as_ref() {
                    match chain {
                        Some(c) => self.chains.insert(log, c),
                        None => self.chains.remove(&log),
                    };
                    self.chain_changed(env, log, &mut out);
                }
            }
            Input::TailChanged { loglet, tail } => self.tail_changed(env, loglet, tail, &mut out),
            Input::MetaDone { op, result } => {
                if let Some(id) = self.metas.remove(&op) {
                    self.event(env, id, Event::Meta(op, result), &mut out);
                }
            }
            Input::SealDone { op, result } => match self.seals.remove(&op) {
                Some((Some(id), _)) => self.event(env, id, Event::Sealed(op, result), &mut out),
                Some((None, loglet)) => {
                    if let Err(e) = result {
                        warn!(%loglet, "background seal failed: {e}");
                    }
                }
                None => {}
            },
            Input::LocalRecords { read, result } => {
                if let Some(id) = self.reads.remove(&read) {
                    self.event(env, id, Event::Local(read, result), &mut out);
                }
            }
            Input::Reply { call, from, result } => match self.calls.remove(&call) {
                Some(Some(id)) => self.event(env, id, Event::Reply(call, result), &mut out),
                Some(None) => {
                    if let Err(e) = result {
                        debug!(%from, "read repair not stored: {e}");
                    }
                }
                None => {}
            },
            Input::Tick => {
                let ids: Vec<OpId> = self.ops.keys().copied().collect();
                for id in ids {
                    self.event(env, id, Event::Tick, &mut out);
                }
            }
        }
        out
    }

    /// When the core wants a `Tick`: the earliest pause, grace or wait end.
    pub fn next_wake(&self) -> Option<Instant> {
        self.ops
            .values()
            .filter_map(|op| match op {
                Op::Append(a) => match &a.state {
                    AppendState::Grace { grace_end, .. } => Some(*grace_end),
                    AppendState::Pause { until } => Some(*until),
                    _ => None,
                },
                Op::Read(r) => match &r.state {
                    ReadState::AwaitTail { .. } => Some(r.deadline),
                    ReadState::LocalGrace { until, .. } | ReadState::Wait { until, .. } => {
                        Some(*until)
                    }
                    _ => None,
                },
                _ => None,
            })
            .min()
    }

    // Plumbing ---------------------------------------------------------------

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn event(&mut self, env: &Env, id: OpId, event: Event, out: &mut Vec<Effect>) {
        let Some(mut op) = self.ops.remove(&id) else {
            return;
        };
        let running = match &mut op {
            Op::Append(a) => self.append_event(env, id, a, event, out),
            Op::Read(r) => self.read_event(env, id, r, event, out),
            Op::Refresh(r) => match event {
                Event::Meta(m, result) if m == r.op => {
                    match self.refresh_step(env, id, r, result, out) {
                        Some(result) => {
                            out.push(Effect::Done {
                                op: id,
                                result: OpResult::Chain(result),
                            });
                            false
                        }
                        None => true,
                    }
                }
                _ => true,
            },
            Op::Seal { seal, .. } => match event {
                Event::Sealed(s, result) if s == *seal => {
                    out.push(Effect::Done {
                        op: id,
                        result: OpResult::Sealed(result),
                    });
                    false
                }
                _ => true,
            },
            Op::Trim(t) => self.trim_event(env, id, t, event, out),
        };
        if running {
            self.ops.insert(id, op);
        }
    }

    fn call(
        &mut self,
        owner: Option<OpId>,
        to: NodeId,
        req: Request,
        timeout: Duration,
        out: &mut Vec<Effect>,
    ) -> CallId {
        let call = CallId(self.next_id());
        self.calls.insert(call, owner);
        out.push(Effect::Call {
            to,
            call,
            req,
            timeout,
        });
        call
    }

    fn meta(
        &mut self,
        owner: OpId,
        log: LogId,
        change: Change,
        timeout: Duration,
        out: &mut Vec<Effect>,
    ) -> MetaOp {
        let op = MetaOp(self.next_id());
        self.metas.insert(op, owner);
        out.push(Effect::Meta {
            op,
            key: chain_key(log),
            change,
            timeout,
        });
        op
    }

    /// Asks this node's sealer to seal `segment` and to move the next
    /// segment's sequencer here.
    fn seal(
        &mut self,
        env: &Env,
        owner: Option<OpId>,
        segment: Segment,
        timeout: Duration,
        out: &mut Vec<Effect>,
    ) -> SealId {
        let op = SealId(self.next_id());
        self.seals.insert(op, (owner, segment.loglet));
        out.push(Effect::SealAndExtend {
            op,
            segment,
            next_sequencer: env.me,
            timeout,
        });
        op
    }

    /// Seal in the background (nobody waits for it).
    fn seal_in_background(&mut self, env: &Env, segment: Segment, out: &mut Vec<Effect>) {
        let timeout = self.config.seal_timeout;
        self.seal(env, None, segment, timeout, out);
    }

    // Chains -----------------------------------------------------------------

    /// Tells every operation of `log` that its known chain changed.
    fn chain_changed(&mut self, env: &Env, log: LogId, out: &mut Vec<Effect>) {
        let ids: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.log() == log)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.event(env, id, Event::Chain, out);
        }
    }

    /// What a register operation found (a newer version wins).
    fn learn(&mut self, env: &Env, log: LogId, version: u64, chain: &Chain, out: &mut Vec<Effect>) {
        if self.chains.get(&log).is_none_or(|(v, _)| version > *v) {
            self.chains.insert(log, (version, chain.clone()));
            self.chain_changed(env, log, out);
        }
    }

    fn decode(log: LogId, v: &Versioned) -> Result<Chain, MetaError> {
        rmp_serde::from_slice(&v.value).map_err(|e| MetaError::Decode {
            key: chain_key(log),
            reason: e.to_string(),
        })
    }

    /// Starts a refresh of `log`'s chain for `owner`; `None` if the log
    /// does not exist.
    fn refresh(
        &mut self,
        env: &Env,
        owner: OpId,
        log: LogId,
        timeout: Duration,
        out: &mut Vec<Effect>,
    ) -> Option<Refresh> {
        if log.0 >= self.logs {
            return None;
        }
        let op = self.meta(owner, log, Change::Read, timeout, out);
        Some(Refresh {
            log,
            op,
            started: env.now,
            deadline: env.now + timeout,
            creating: None,
        })
    }

    /// The next step of a refresh; `Some` once it is over.
    fn refresh_step(
        &mut self,
        env: &Env,
        owner: OpId,
        r: &mut Refresh,
        result: Result<Outcome, MetaError>,
        out: &mut Vec<Effect>,
    ) -> Option<Result<Chain, MetaOrUnknown>> {
        let log = r.log;
        let Some(initial) = r.creating.take() else {
            let value = match result {
                Ok(Outcome::Value(v) | Outcome::Conflict(v)) => v,
                Err(e) => return Some(Err(e.into())),
            };
            if let Some(v) = value {
                return Some(match Self::decode(log, &v) {
                    Ok(chain) => {
                        self.checked.insert(log, r.started);
                        self.learn(env, log, v.version, &chain, out);
                        Ok(chain)
                    }
                    Err(e) => Err(e.into()),
                });
            }
            // The first segment is sequenced where the partition's leader
            // will most likely be, so a healthy start needs no seal.
            let sequencer = if env.nodes.is_empty() {
                env.me
            } else {
                crate::actors::leader_elector::preferred_leader(PartitionId(log.0), &env.nodes)
            };
            let initial = Chain::initial(
                log,
                sequencer,
                self.config.nodeset.clone(),
                self.config.replication,
            );
            let value = match rmp_serde::to_vec_named(&initial) {
                Ok(v) => v,
                Err(e) => {
                    let e = MetaError::Decode {
                        key: chain_key(log),
                        reason: e.to_string(),
                    };
                    return Some(Err(e.into()));
                }
            };
            let change = Change::Cas {
                expected: 0,
                value,
                op: self.rng.gen::<u64>() | 1,
            };
            r.op = self.meta(owner, log, change, remaining(r.deadline, env), out);
            r.creating = Some(initial);
            return None;
        };
        Some(match result {
            Ok(Outcome::Value(Some(v))) => {
                info!(%log, sequencer = %initial.tail().sequencer, "created the log's first segment");
                self.learn(env, log, v.version, &initial, out);
                Ok(initial)
            }
            Ok(Outcome::Conflict(Some(v))) => match Self::decode(log, &v) {
                Ok(chain) => {
                    self.learn(env, log, v.version, &chain, out);
                    Ok(chain)
                }
                Err(e) => Err(e.into()),
            },
            Ok(Outcome::Conflict(None)) => Err(MetaOrUnknown::UnknownLog(log)),
            // A CAS that wrote nothing: no proposer answers so; unknown.
            Ok(Outcome::Value(None)) => Err(MetaError::Indeterminate {
                key: chain_key(log),
            }
            .into()),
            Err(e) => Err(e.into()),
        })
    }

    // Append -----------------------------------------------------------------

    fn start_append(
        &mut self,
        env: &Env,
        op: OpId,
        log: LogId,
        records: Vec<Record>,
        deadline: Instant,
        out: &mut Vec<Effect>,
    ) {
        let bytes: usize = records.iter().map(|r| r.len()).sum();
        if records.is_empty()
            || records.len() > MAX_APPEND_RECORDS
            || bytes > MAX_APPEND_BYTES
            || records.iter().any(|r| r.len() > MAX_RECORD_BYTES)
        {
            let e = AppendError::TooLarge {
                records: records.len(),
                bytes,
            };
            out.push(Effect::Done {
                op,
                result: OpResult::Appended(Err(e)),
            });
            return;
        }
        self.stats.appends += 1;
        let mut a = AppendOp {
            log,
            records,
            deadline,
            last: String::from("no attempt was made"),
            state: AppendState::Idle,
        };
        if self.append_attempt(env, op, &mut a, out) {
            self.ops.insert(op, Op::Append(a));
        }
    }

    fn append_done(
        &mut self,
        op: OpId,
        a: &AppendOp,
        result: Result<Lsn, AppendError>,
        out: &mut Vec<Effect>,
    ) -> bool {
        match &result {
            Ok(_) => self.stats.appended_records += a.records.len() as u64,
            Err(_) => self.stats.append_errors += 1,
        }
        out.push(Effect::Done {
            op,
            result: OpResult::Appended(result),
        });
        false
    }

    /// A2: one attempt (returns whether the append is still running).
    fn append_attempt(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        out: &mut Vec<Effect>,
    ) -> bool {
        if env.now >= a.deadline {
            let e = AppendError::Unavailable(format!("deadline passed; last: {}", a.last));
            return self.append_done(id, a, Err(e), out);
        }
        if let Some((_, chain)) = self.chains.get(&a.log) {
            let segment = chain.tail().clone();
            return self.append_call(env, id, a, segment, out);
        }
        match self.refresh(env, id, a.log, remaining(a.deadline, env), out) {
            Some(r) => {
                a.state = AppendState::Chain(r);
                true
            }
            None => self.append_done(id, a, Err(AppendError::UnknownLog(a.log)), out),
        }
    }

    fn append_call(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        segment: Segment,
        out: &mut Vec<Effect>,
    ) -> bool {
        let timeout = remaining(a.deadline, env).min(self.config.append_timeout);
        let req = Request::Append(Append {
            segment: segment.clone(),
            records: a.records.clone(),
        });
        let call = self.call(Some(id), segment.sequencer, req, timeout, out);
        a.state = AppendState::Calling { segment, call };
        true
    }

    fn append_event(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        event: Event,
        out: &mut Vec<Effect>,
    ) -> bool {
        match (std::mem::replace(&mut a.state, AppendState::Idle), event) {
            (AppendState::Chain(mut r), Event::Meta(op, result)) if op == r.op => {
                match self.refresh_step(env, id, &mut r, result, out) {
                    None => {
                        a.state = AppendState::Chain(r);
                        true
                    }
                    Some(Ok(chain)) => self.append_call(env, id, a, chain.tail().clone(), out),
                    Some(Err(MetaOrUnknown::UnknownLog(l))) => {
                        self.append_done(id, a, Err(AppendError::UnknownLog(l)), out)
                    }
                    Some(Err(MetaOrUnknown::Meta(e))) => {
                        a.last = e.to_string();
                        self.append_attempt(env, id, a, out)
                    }
                }
            }
            (AppendState::Calling { segment, call }, Event::Reply(c, result)) if c == call => {
                self.append_outcome(env, id, a, segment, result, out)
            }
            (
                AppendState::Refreshing {
                    segment,
                    grace_end,
                    mut refresh,
                },
                Event::Meta(op, result),
            ) if op == refresh.op => match self.refresh_step(env, id, &mut refresh, result, out) {
                None => {
                    a.state = AppendState::Refreshing {
                        segment,
                        grace_end,
                        refresh,
                    };
                    true
                }
                Some(_) => self.grace_check(env, id, a, segment, grace_end, out),
            },
            (AppendState::Grace { segment, grace_end }, Event::Chain | Event::Tick) => {
                self.grace_check(env, id, a, segment, grace_end, out)
            }
            (AppendState::Sealing { seal }, Event::Sealed(s, result)) if s == seal => {
                match result {
                    Ok(_) => self.append_attempt(env, id, a, out),
                    Err(e) => {
                        warn!(log = %a.log, "seal-and-extend failed: {e}");
                        let pause = FAILED_SEAL_PAUSE.min(remaining(a.deadline, env));
                        self.append_pause(env, id, a, pause, out)
                    }
                }
            }
            (AppendState::Pause { until }, Event::Tick) if env.now >= until => {
                self.append_attempt(env, id, a, out)
            }
            (state, _) => {
                a.state = state;
                true
            }
        }
    }

    /// A3–A7: what the sequencer's answer means.
    fn append_outcome(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        segment: Segment,
        result: Result<Response, CallError>,
        out: &mut Vec<Effect>,
    ) -> bool {
        let loglet = segment.loglet;
        match result {
            Ok(Response::Append(Ok(AppendOutcome::Appended { first_lsn }))) => {
                self.append_done(id, a, Ok(first_lsn), out)
            }
            Ok(Response::Append(Ok(AppendOutcome::Sealed))) => {
                a.last = format!("loglet {loglet} is sealed");
                self.await_extension(env, id, a, segment, out)
            }
            Ok(Response::Append(Ok(AppendOutcome::Indeterminate))) => {
                // Sealed (or stuck) after offsets were assigned. Make sure
                // the log moves on; the caller decides about a retry.
                self.seal_in_background(env, segment, out);
                let e = AppendError::Indeterminate(format!(
                    "loglet {loglet} was sealed with the append in flight"
                ));
                self.append_done(id, a, Err(e), out)
            }
            Ok(Response::Append(Err(SequencerError::TooLarge { records, bytes }))) => {
                self.append_done(id, a, Err(AppendError::TooLarge { records, bytes }), out)
            }
            Ok(Response::Append(Err(e @ SequencerError::Invalid(_)))) => {
                // Refused before any offset was assigned.
                self.append_done(id, a, Err(AppendError::Unavailable(e.to_string())), out)
            }
            Ok(Response::Append(Err(
                e @ (SequencerError::Gone(_)
                | SequencerError::NotSequencer(_)
                | SequencerError::Storage(_)),
            ))) => {
                a.last = e.to_string();
                self.drive_seal(env, id, a, segment, out)
            }
            Ok(other) => {
                // Not an answer to an append: what happened is unknown.
                self.seal_in_background(env, segment, out);
                let e = AppendError::Indeterminate(format!("the sequencer answered {other:?}"));
                self.append_done(id, a, Err(e), out)
            }
            Err(e) if !e.maybe_delivered() => {
                // Not delivered: the sequencer's node is down, suspected,
                // or restarting an actor. Move the sequencer here.
                a.last = e.to_string();
                if env.is_suspected(segment.sequencer) || segment.sequencer == env.me {
                    self.drive_seal(env, id, a, segment, out)
                } else {
                    let pause = NOT_DELIVERED_PAUSE.min(remaining(a.deadline, env));
                    self.append_pause(env, id, a, pause, out)
                }
            }
            Err(e) => {
                debug!(%loglet, "append outcome unknown: {e}");
                self.seal_in_background(env, segment, out);
                self.append_done(id, a, Err(AppendError::Indeterminate(e.to_string())), out)
            }
        }
    }

    /// A3: the sequencer said `Sealed`: someone is sealing. Give them a short
    /// grace to extend the chain, then drive the seal ourselves.
    fn await_extension(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        segment: Segment,
        out: &mut Vec<Effect>,
    ) -> bool {
        let grace_end = (env.now + self.config.seal_grace).min(a.deadline);
        // This node's view may be what is behind (an update missed while it
        // was partitioned): one register read settles that without waiting.
        let timeout = grace_end
            .saturating_duration_since(env.now)
            .max(MIN_GRACE_REFRESH);
        match self.refresh(env, id, a.log, timeout, out) {
            Some(refresh) => {
                a.state = AppendState::Refreshing {
                    segment,
                    grace_end,
                    refresh,
                };
                true
            }
            None => self.grace_check(env, id, a, segment, grace_end, out),
        }
    }

    fn grace_check(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        segment: Segment,
        grace_end: Instant,
        out: &mut Vec<Effect>,
    ) -> bool {
        if self
            .chains
            .get(&a.log)
            .is_some_and(|(_, c)| c.tail().loglet != segment.loglet)
        {
            return self.append_attempt(env, id, a, out);
        }
        if env.now >= grace_end {
            return self.drive_seal(env, id, a, segment, out);
        }
        a.state = AppendState::Grace { segment, grace_end };
        true
    }

    fn drive_seal(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        segment: Segment,
        out: &mut Vec<Effect>,
    ) -> bool {
        let timeout = remaining(a.deadline, env).min(self.config.seal_timeout);
        if timeout.is_zero() {
            return self.append_attempt(env, id, a, out);
        }
        let seal = self.seal(env, Some(id), segment, timeout, out);
        a.state = AppendState::Sealing { seal };
        true
    }

    fn append_pause(
        &mut self,
        env: &Env,
        id: OpId,
        a: &mut AppendOp,
        pause: Duration,
        out: &mut Vec<Effect>,
    ) -> bool {
        if pause.is_zero() {
            return self.append_attempt(env, id, a, out);
        }
        a.state = AppendState::Pause {
            until: env.now + pause,
        };
        true
    }

    // Read -------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn start_read(
        &mut self,
        env: &Env,
        op: OpId,
        log: LogId,
        from: Lsn,
        max: usize,
        deadline: Instant,
        out: &mut Vec<Effect>,
    ) {
        let mut r = ReadOp {
            log,
            from,
            max,
            deadline,
            chain: None,
            stalled_since: None,
            probed_at: None,
            chain_moved: false,
            watching: None,
            peer_trimmed: None,
            state: ReadState::Idle,
        };
        let running = match self.chains.get(&log) {
            Some((_, chain)) => {
                r.chain = Some(chain.clone());
                self.read_attempt(env, op, &mut r, out)
            }
            None => match self.refresh(env, op, log, remaining(deadline, env), out) {
                Some(refresh) => {
                    r.state = ReadState::Chain(refresh);
                    true
                }
                None => self.read_done(op, &mut r, Err(ReadError::UnknownLog(log)), out),
            },
        };
        if running {
            self.ops.insert(op, Op::Read(r));
        }
    }

    fn read_done(
        &mut self,
        id: OpId,
        r: &mut ReadOp,
        result: Result<Vec<(Lsn, Record)>, ReadError>,
        out: &mut Vec<Effect>,
    ) -> bool {
        if let Some(loglet) = r.watching.take() {
            self.unwatch(id, loglet, out);
        }
        out.push(Effect::Done {
            op: id,
            result: OpResult::Read(result),
        });
        false
    }

    /// Follows `loglet`'s local tail for read `id` (and no other loglet).
    fn watch(&mut self, id: OpId, r: &mut ReadOp, loglet: LogletId, out: &mut Vec<Effect>) {
        if r.watching == Some(loglet) {
            return;
        }
        if let Some(old) = r.watching.take() {
            self.unwatch(id, old, out);
        }
        let readers = self.watchers.entry(loglet).or_default();
        let first = readers.is_empty();
        readers.insert(id);
        r.watching = Some(loglet);
        if first {
            out.push(Effect::WatchTail { loglet });
        }
    }

    fn unwatch(&mut self, id: OpId, loglet: LogletId, out: &mut Vec<Effect>) {
        let Some(readers) = self.watchers.get_mut(&loglet) else {
            return;
        };
        readers.remove(&id);
        if readers.is_empty() {
            self.watchers.remove(&loglet);
            self.tails.remove(&loglet);
            out.push(Effect::UnwatchTail { loglet });
        }
    }

    fn tail_changed(&mut self, env: &Env, loglet: LogletId, tail: TailInfo, out: &mut Vec<Effect>) {
        let Some(readers) = self.watchers.get(&loglet) else {
            return;
        };
        let readers: Vec<OpId> = readers.iter().copied().collect();
        // Tails only grow (as the log-server publishes them).
        let next = match self.tails.get(&loglet) {
            Some(cur) => TailInfo {
                sealed: cur.sealed || tail.sealed,
                local_tail: cur.local_tail.max(tail.local_tail),
                known_global_tail: cur.known_global_tail.max(tail.known_global_tail),
                suspect: cur.suspect || tail.suspect,
            },
            None => tail,
        };
        if self.tails.get(&loglet) == Some(&next) {
            return;
        }
        self.tails.insert(loglet, next);
        for id in readers {
            self.event(env, id, Event::Tail(loglet), out);
        }
    }

    /// R1: what of the read's segment is readable now.
    fn read_attempt(&mut self, env: &Env, id: OpId, r: &mut ReadOp, out: &mut Vec<Effect>) -> bool {
        let Some(chain) = &r.chain else {
            return self.read_done(id, r, Ok(Vec::new()), out);
        };
        if r.from < chain.first_lsn() {
            let e = ReadError::Trimmed {
                log: chain.log,
                from: r.from,
                first: chain.first_lsn(),
            };
            return self.read_done(id, r, Err(e), out);
        }
        let segment = chain.segment_for(r.from).clone();
        let offset = segment
            .offset_of(r.from.max(segment.base_lsn))
            .unwrap_or_default();
        self.watch(id, r, segment.loglet, out);
        let Some(tail) = self.tails.get(&segment.loglet) else {
            r.state = ReadState::AwaitTail { segment };
            return true;
        };
        let end = segment.sealed_tail.unwrap_or(tail.known_global_tail);
        if offset < end {
            return self.read_local(id, r, segment, offset, end, false, out);
        }
        self.read_wait(env, id, r, segment, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_local(
        &mut self,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        offset: Offset,
        end: Offset,
        again: bool,
        out: &mut Vec<Effect>,
    ) -> bool {
        let read = ReadId(self.next_id());
        self.reads.insert(read, id);
        out.push(Effect::ReadLocal {
            read,
            loglet: segment.loglet,
            from: offset,
            to: end,
            max_bytes: READ_MAX_BYTES,
        });
        r.state = ReadState::Local {
            segment,
            offset,
            end,
            read,
            again,
        };
        true
    }

    /// R2: the next peer of the nodeset to ask, from index `next` on.
    #[allow(clippy::too_many_arguments)]
    fn read_peer(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        offset: Offset,
        end: Offset,
        next: usize,
        out: &mut Vec<Effect>,
    ) -> bool {
        if next == 0 {
            r.peer_trimmed = None;
        }
        if let Some((i, peer)) = next_peer(env, &segment, next) {
            let call = self.get_records(id, peer, &segment, offset, end, true, out);
            r.state = ReadState::Peer {
                segment,
                offset,
                end,
                next: i + 1,
                call,
            };
            return true;
        }
        if let Some(first) = r
            .peer_trimmed
            .take()
            .filter(|t| *t > offset)
            .and_then(|t| segment.lsn_of(t))
        {
            let e = ReadError::Trimmed {
                log: r.log,
                from: r.from,
                first,
            };
            return self.read_done(id, r, Err(e), out);
        }
        self.read_wait(env, id, r, segment, out)
    }

    /// R3: committed records this node should hold (it is in the segment's
    /// nodeset) but had to read from a peer, because it never got them or
    /// found its copy damaged, are stored here again, so every segment
    /// drifts back to full replication without a separate scrub. The local
    /// log-server writes only the offsets it lacks, and learns that every
    /// offset below `committed` is committed (at least the run's end: a run
    /// is only ever read below a known committed tail), so the next reader
    /// here starts from there.
    fn repair_locally(
        &mut self,
        env: &Env,
        segment: &Segment,
        run: &[(Offset, Record)],
        committed: Offset,
        out: &mut Vec<Effect>,
    ) {
        let (Some(&(first, _)), Some(&(last, _))) = (run.first(), run.last()) else {
            return;
        };
        if !segment.nodeset.contains(&env.me) {
            return;
        }
        let req = Request::Store(Store {
            loglet: segment.loglet,
            first,
            records: Arc::new(run.iter().map(|(_, r)| r.clone()).collect()),
            known_global_tail: committed.max(last.saturating_add(1)),
            repair: true,
            from: None,
        });
        self.call(None, env.me, req, REPAIR_TIMEOUT, out);
    }

    /// A run was read: it ends the read unless no offset of it has an LSN.
    fn read_run(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        run: Vec<(Offset, Record)>,
        out: &mut Vec<Effect>,
    ) -> bool {
        // Offsets whose LSN would pass `u64::MAX` (a hostile tail) end the
        // run: there is no LSN to give them.
        let run: Vec<(Lsn, Record)> = run
            .into_iter()
            .map_while(|(o, rec)| segment.lsn_of(o).map(|lsn| (lsn, rec)))
            .collect();
        if !run.is_empty() {
            return self.read_done(id, r, Ok(run), out);
        }
        self.read_wait(env, id, r, segment, out)
    }

    /// R4: nothing readable yet.
    fn read_wait(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        out: &mut Vec<Effect>,
    ) -> bool {
        if env.now >= r.deadline {
            return self.read_done(id, r, Ok(Vec::new()), out);
        }
        if r.chain_moved {
            r.chain_moved = false;
            return self.after_wait(env, id, r, segment, env.now, false, out);
        }
        let until = env.now + remaining(r.deadline, env).min(READ_PAUSE);
        r.state = ReadState::Wait {
            segment,
            since: env.now,
            until,
        };
        true
    }

    /// R5, R6, R7: after a wait that began at `since` (`moved`: it ended
    /// because the loglet's tail moved).
    #[allow(clippy::too_many_arguments)]
    fn after_wait(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        since: Instant,
        moved: bool,
        out: &mut Vec<Effect>,
    ) -> bool {
        let locally_sealed = self.tails.get(&segment.loglet).is_some_and(|t| t.sealed);
        if segment.sealed_tail.is_none() {
            let stalled = *r.stalled_since.get_or_insert(since);
            // The periodic tail check: a tail that stops moving while its
            // sequencer is suspected is sealed by whoever notices.
            if env.now.saturating_duration_since(stalled) > self.config.seal_grace * 2
                && env.is_suspected(segment.sequencer)
            {
                r.stalled_since = Some(env.now);
                self.seal_in_background(env, segment.clone(), out);
            }
            let probe_due = r
                .probed_at
                .is_none_or(|t| env.now.saturating_duration_since(t) >= TAIL_PROBE_AFTER);
            // A loglet sealed here is a chain question (R5), not a tail one.
            if probe_due
                && !locally_sealed
                && env.now.saturating_duration_since(stalled) >= TAIL_PROBE_AFTER
            {
                r.probed_at = Some(env.now);
                if let Some(offset) = segment.offset_of(r.from.max(segment.base_lsn)) {
                    return self.probe_tail(env, id, r, segment, offset, 0, out);
                }
            }
        }
        self.recheck_chain(env, id, r, segment, moved, out)
    }

    /// R7: asks the nodeset's next server from index `next` on (not this
    /// node, not suspected) for committed records from `offset`; with none
    /// left, goes on to the chain re-check.
    #[allow(clippy::too_many_arguments)]
    fn probe_tail(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        offset: Offset,
        next: usize,
        out: &mut Vec<Effect>,
    ) -> bool {
        if let Some((i, peer)) = next_peer(env, &segment, next) {
            let call = self.get_records(id, peer, &segment, offset, Offset::MAX, false, out);
            r.state = ReadState::Probe {
                segment,
                offset,
                next: i + 1,
                call,
            };
            return true;
        }
        self.recheck_chain(env, id, r, segment, false, out)
    }

    /// A peer read of `[offset, end)` of `segment` for read `id`
    /// (`uncommitted`: past the server's known global tail too).
    #[allow(clippy::too_many_arguments)]
    fn get_records(
        &mut self,
        id: OpId,
        peer: NodeId,
        segment: &Segment,
        offset: Offset,
        end: Offset,
        uncommitted: bool,
        out: &mut Vec<Effect>,
    ) -> CallId {
        let req = Request::GetRecords(GetRecords {
            loglet: segment.loglet,
            from: offset,
            to: end,
            max_bytes: READ_MAX_BYTES as u32,
            include_uncommitted: uncommitted,
        });
        self.call(Some(id), peer, req, PEER_READ_TIMEOUT, out)
    }

    /// R7: a probe's answer.
    #[allow(clippy::too_many_arguments)]
    fn probe_answered(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        offset: Offset,
        next: usize,
        result: Result<Response, CallError>,
        out: &mut Vec<Effect>,
    ) -> bool {
        let answer = match result {
            Ok(Response::Records(Ok(reply))) => Ok(reply),
            Ok(Response::Records(Err(e))) => Err(e.to_string()),
            Ok(other) => Err(format!("answered {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(why) => {
                // No answer from this server: the next one.
                debug!(loglet = %segment.loglet, "tail probe failed: {why}");
                return self.probe_tail(env, id, r, segment, offset, next, out);
            }
        };
        // The peer's known global tail is committed: every reader of the
        // loglet on this node may read up to it (other readers are told;
        // this one is not in `ops` while it runs).
        let known = self.tails.get(&segment.loglet).map(|t| t.known_global_tail);
        if known.is_some_and(|k| reply.tail.known_global_tail > k) {
            let raised = TailInfo {
                known_global_tail: reply.tail.known_global_tail,
                ..TailInfo::default()
            };
            self.tail_changed(env, segment.loglet, raised, out);
            self.stats.tail_probes_ahead += 1;
        }
        let run = contiguous(offset, reply.records, r.max);
        if !run.is_empty() {
            r.stalled_since = None;
            let committed = reply.tail.known_global_tail;
            self.repair_locally(env, &segment, &run, committed, out);
            return self.read_run(env, id, r, segment, run, out);
        }
        if self
            .tails
            .get(&segment.loglet)
            .is_some_and(|t| t.known_global_tail > offset)
        {
            // Committed past the offset, yet the probed server sent nothing
            // (trimmed or damaged there): the ordinary read path decides.
            return self.read_attempt(env, id, r, out);
        }
        self.recheck_chain(env, id, r, segment, false, out)
    }

    /// R5: the chain as known if it is fresh (or the tail `moved`), else a
    /// register read; then the next attempt.
    #[allow(clippy::too_many_arguments)]
    fn recheck_chain(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        segment: Segment,
        moved: bool,
        out: &mut Vec<Effect>,
    ) -> bool {
        let locally_sealed = self.tails.get(&segment.loglet).is_some_and(|t| t.sealed);
        let fresh = moved
            || self
                .checked
                .get(&r.log)
                .is_some_and(|t| env.now.saturating_duration_since(*t) < CHAIN_RECHECK);
        if let Some((_, chain)) = self.chains.get(&r.log) {
            if !locally_sealed && fresh {
                r.chain = Some(chain.clone());
                return self.read_attempt(env, id, r, out);
            }
        }
        let timeout = remaining(r.deadline, env).max(MIN_RECHECK);
        match self.refresh(env, id, r.log, timeout, out) {
            Some(refresh) => {
                r.state = ReadState::Recheck { refresh };
                true
            }
            None => {
                if let Some((_, chain)) = self.chains.get(&r.log) {
                    r.chain = Some(chain.clone());
                }
                self.read_attempt(env, id, r, out)
            }
        }
    }

    fn read_event(
        &mut self,
        env: &Env,
        id: OpId,
        r: &mut ReadOp,
        event: Event,
        out: &mut Vec<Effect>,
    ) -> bool {
        match (std::mem::replace(&mut r.state, ReadState::Idle), event) {
            (ReadState::Chain(mut refresh), Event::Meta(op, result)) if op == refresh.op => {
                match self.refresh_step(env, id, &mut refresh, result, out) {
                    None => {
                        r.state = ReadState::Chain(refresh);
                        true
                    }
                    Some(Ok(chain)) => {
                        r.chain = Some(chain);
                        self.read_attempt(env, id, r, out)
                    }
                    Some(Err(MetaOrUnknown::UnknownLog(l))) => {
                        self.read_done(id, r, Err(ReadError::UnknownLog(l)), out)
                    }
                    Some(Err(MetaOrUnknown::Meta(e))) => {
                        let e = ReadError::Unavailable(r.log, e.to_string());
                        self.read_done(id, r, Err(e), out)
                    }
                }
            }
            (ReadState::AwaitTail { segment }, Event::Tail(loglet)) if loglet == segment.loglet => {
                self.read_attempt(env, id, r, out)
            }
            (ReadState::AwaitTail { .. }, Event::Tick) if env.now >= r.deadline => {
                self.read_done(id, r, Ok(Vec::new()), out)
            }
            (
                ReadState::Local {
                    segment,
                    offset,
                    end,
                    read,
                    again,
                },
                Event::Local(done, result),
            ) if done == read => {
                let run = match result {
                    Ok(records) => contiguous(offset, records, r.max),
                    Err(e) => {
                        debug!(loglet = %segment.loglet, "local read failed: {e}");
                        Vec::new()
                    }
                };
                if !run.is_empty() {
                    return self.read_run(env, id, r, segment, run, out);
                }
                if !again && segment.sealed_tail.is_none() {
                    // At the open tail the commit can be known here (a
                    // release) a moment before this node's own copy is
                    // written: give the local log-server a short grace
                    // before asking a peer. A wedged local log-server costs
                    // only this grace.
                    r.state = ReadState::LocalGrace {
                        segment,
                        offset,
                        end,
                        until: env.now + LOCAL_GRACE,
                    };
                    return true;
                }
                self.read_peer(env, id, r, segment, offset, end, 0, out)
            }
            (
                ReadState::LocalGrace {
                    segment,
                    offset,
                    end,
                    ..
                },
                Event::Tail(loglet),
            ) if loglet == segment.loglet => {
                self.read_local(id, r, segment, offset, end, true, out)
            }
            (
                ReadState::LocalGrace {
                    segment,
                    offset,
                    end,
                    until,
                },
                Event::Tick,
            ) if env.now >= until => self.read_local(id, r, segment, offset, end, true, out),
            (
                ReadState::Peer {
                    segment,
                    offset,
                    end,
                    next,
                    call,
                },
                Event::Reply(c, result),
            ) if c == call => {
                match result {
                    Ok(Response::Records(Ok(reply))) => {
                        let trimmed = reply.trimmed_below;
                        let run = contiguous(offset, reply.records, r.max);
                        if !run.is_empty() {
                            self.repair_locally(env, &segment, &run, end, out);
                            return self.read_run(env, id, r, segment, run, out);
                        }
                        if trimmed > offset {
                            r.peer_trimmed = r.peer_trimmed.max(Some(trimmed));
                        }
                    }
                    Ok(Response::Records(Err(e))) => debug!("remote read failed: {e}"),
                    Ok(other) => debug!("remote read answered {other:?}"),
                    Err(e) => debug!("remote read failed: {e}"),
                }
                self.read_peer(env, id, r, segment, offset, end, next, out)
            }
            (
                ReadState::Probe {
                    segment,
                    offset,
                    next,
                    call,
                },
                Event::Reply(c, result),
            ) if c == call => self.probe_answered(env, id, r, segment, offset, next, result, out),
            (ReadState::Wait { segment, since, .. }, Event::Tail(loglet))
                if loglet == segment.loglet =>
            {
                self.after_wait(env, id, r, segment, since, true, out)
            }
            (ReadState::Wait { segment, since, .. }, Event::Chain) => {
                self.after_wait(env, id, r, segment, since, false, out)
            }
            (
                ReadState::Wait {
                    segment,
                    since,
                    until,
                },
                Event::Tick,
            ) if env.now >= until => self.after_wait(env, id, r, segment, since, false, out),
            (ReadState::Recheck { mut refresh }, Event::Meta(op, result)) if op == refresh.op => {
                match self.refresh_step(env, id, &mut refresh, result, out) {
                    None => {
                        r.state = ReadState::Recheck { refresh };
                        true
                    }
                    Some(Ok(chain)) => {
                        r.chain = Some(chain);
                        self.read_attempt(env, id, r, out)
                    }
                    Some(Err(_)) => {
                        if let Some((_, chain)) = self.chains.get(&r.log) {
                            r.chain = Some(chain.clone());
                        }
                        self.read_attempt(env, id, r, out)
                    }
                }
            }
            (state, event) => {
                // A chain change while not waiting ends the next wait at
                // once (the first lookup is not a change to wait for).
                if matches!(event, Event::Chain) && !matches!(state, ReadState::Chain(_)) {
                    r.chain_moved = true;
                }
                r.state = state;
                true
            }
        }
    }

    // Trim -------------------------------------------------------------------

    fn start_trim(&mut self, op: OpId, log: LogId, below: Lsn, out: &mut Vec<Effect>) {
        let done = self.trimmed.get(&log).copied().unwrap_or_default();
        let chain = match self.chains.get(&log) {
            Some((_, chain)) if below > done => chain.clone(),
            _ => {
                out.push(Effect::Done {
                    op,
                    result: OpResult::Trimmed,
                });
                return;
            }
        };
        let mut t = TrimOp {
            log,
            below,
            chain,
            done,
            at: 0,
            pending: BTreeSet::new(),
            incomplete: false,
            compacting: None,
        };
        if self.trim_next(op, &mut t, out) {
            self.ops.insert(op, Op::Trim(t));
        }
    }

    /// Trims the next segment that needs it; ends the trim when none does.
    fn trim_next(&mut self, id: OpId, t: &mut TrimOp, out: &mut Vec<Effect>) -> bool {
        while let Some(segment) = t.chain.segments.get(t.at).cloned() {
            if t.below <= segment.base_lsn {
                break;
            }
            t.at += 1;
            if segment.end_lsn().is_some_and(|end| end <= t.done) {
                continue;
            }
            let Some(upto) = segment.offset_of(t.below) else {
                continue;
            };
            let upto = segment.sealed_tail.map_or(upto, |s| upto.min(s));
            for &to in &segment.nodeset {
                let req = Request::Trim(Trim {
                    loglet: segment.loglet,
                    below: upto,
                });
                let call = self.call(Some(id), to, req, TRIM_TIMEOUT, out);
                t.pending.insert(call);
            }
            if !t.pending.is_empty() {
                return true;
            }
        }
        if t.incomplete {
            return self.trim_done(id, out);
        }
        self.trimmed.insert(t.log, t.below);
        // Segments trimmed on every server leave the chain.
        let compacted = self.chains.get(&t.log).and_then(|(version, chain)| {
            let smaller = chain.trimmed_below(t.below)?;
            Some((*version, rmp_serde::to_vec_named(&smaller).ok()?))
        });
        let Some((version, value)) = compacted else {
            return self.trim_done(id, out);
        };
        let change = Change::Cas {
            expected: version,
            value,
            op: self.rng.gen::<u64>() | 1,
        };
        t.compacting = Some(self.meta(id, t.log, change, TRIM_TIMEOUT, out));
        true
    }

    fn trim_done(&mut self, id: OpId, out: &mut Vec<Effect>) -> bool {
        out.push(Effect::Done {
            op: id,
            result: OpResult::Trimmed,
        });
        false
    }

    fn trim_event(
        &mut self,
        env: &Env,
        id: OpId,
        t: &mut TrimOp,
        event: Event,
        out: &mut Vec<Effect>,
    ) -> bool {
        let (call, result) = match event {
            Event::Reply(call, result) => (call, result),
            Event::Meta(op, result) if t.compacting == Some(op) => {
                // A conflict (a seal got there first) or no answer: the next
                // trim tries again with the newer chain.
                match result {
                    Ok(Outcome::Value(Some(v))) => match Self::decode(t.log, &v) {
                        Ok(chain) => {
                            info!(log = %t.log, first_lsn = %chain.first_lsn(), segments = chain.segments.len(), "trimmed segments left the chain");
                            self.learn(env, t.log, v.version, &chain, out);
                        }
                        Err(e) => warn!(log = %t.log, "compacted chain: {e}"),
                    },
                    Ok(Outcome::Conflict(Some(v))) => {
                        debug!(log = %t.log, "chain changed meanwhile; compacting next time");
                        if let Ok(chain) = Self::decode(t.log, &v) {
                            self.learn(env, t.log, v.version, &chain, out);
                        }
                    }
                    Ok(_) => debug!(log = %t.log, "no chain to compact"),
                    Err(e) => debug!(log = %t.log, "compacting the chain: {e}"),
                }
                return self.trim_done(id, out);
            }
            _ => return true,
        };
        if !t.pending.remove(&call) {
            return true;
        }
        match result {
            Err(e) => {
                t.incomplete = true;
                debug!(log = %t.log, "trim not delivered: {e}");
            }
            Ok(Response::Trim(Err(e))) => {
                t.incomplete = true;
                debug!(log = %t.log, "trim refused: {e}");
            }
            Ok(_) => {}
        }
        if t.pending.is_empty() {
            return self.trim_next(id, t, out);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::leader_elector::preferred_leader;
    use crate::actors::log_server::RecordsReply;

    const LOG: LogId = LogId(1);

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn nodes() -> Vec<NodeId> {
        vec![n(1), n(2), n(3)]
    }

    fn env(now: Instant) -> Env {
        Env {
            now,
            me: n(1),
            nodes: nodes(),
            suspected: BTreeSet::new(),
        }
    }

    fn suspecting(now: Instant, node: NodeId) -> Env {
        let mut e = env(now);
        e.suspected.insert(node);
        e
    }

    fn core() -> LogCore {
        LogCore::new(
            LogCoreConfig {
                log: LogConfig::new(nodes(), 2),
                logs: 4,
            },
            1,
        )
    }

    /// The chain of `LOG` with one open segment sequenced by N2.
    fn chain() -> Chain {
        Chain::initial(LOG, n(2), nodes(), 2)
    }

    /// `chain()` with its segment sealed at `tail` and a successor on `next`.
    fn extended(tail: Offset, next: NodeId) -> Chain {
        let c = chain();
        c.sealed_and_extended(c.tail().loglet, tail, next, nodes(), 2)
            .unwrap()
    }

    fn versioned(version: u64, chain: &Chain) -> Versioned {
        Versioned {
            version,
            value: rmp_serde::to_vec_named(chain).unwrap(),
            writer: 0,
        }
    }

    fn seen(core: &mut LogCore, now: Instant, version: u64, chain: &Chain) -> Vec<Effect> {
        core.handle(
            &env(now),
            Input::ChainSeen {
                log: LOG,
                chain: Some((version, chain.clone())),
            },
        )
    }

    fn rec(o: u64) -> Record {
        Record(vec![o as u8])
    }

    fn append(op: u64, deadline: Instant) -> Input {
        Input::Append {
            op: OpId(op),
            log: LOG,
            records: vec![rec(9)],
            deadline,
        }
    }

    fn read(op: u64, from: u64, max: usize, deadline: Instant) -> Input {
        Input::Read {
            op: OpId(op),
            log: LOG,
            from: Lsn(from),
            max,
            deadline,
        }
    }

    fn call_of(effects: &[Effect]) -> (NodeId, CallId, Request) {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Call { to, call, req, .. } => Some((*to, *call, req.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no call in {effects:?}"))
    }

    fn meta_of(effects: &[Effect]) -> (MetaOp, Change) {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Meta { op, change, .. } => Some((*op, change.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no register operation in {effects:?}"))
    }

    fn seal_of(effects: &[Effect]) -> SealId {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::SealAndExtend { op, .. } => Some(*op),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no seal in {effects:?}"))
    }

    fn read_of(effects: &[Effect]) -> ReadId {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::ReadLocal { read, .. } => Some(*read),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no local read in {effects:?}"))
    }

    fn reply(
        core: &mut LogCore,
        env: &Env,
        effects: &[Effect],
        result: Result<Response, CallError>,
    ) -> Vec<Effect> {
        let (from, call, _) = call_of(effects);
        core.handle(env, Input::Reply { call, from, result })
    }

    fn outcome(o: AppendOutcome) -> Result<Response, CallError> {
        Ok(Response::Append(Ok(o)))
    }

    fn refused(e: SequencerError) -> Result<Response, CallError> {
        Ok(Response::Append(Err(e)))
    }

    fn meta_done(
        core: &mut LogCore,
        env: &Env,
        effects: &[Effect],
        result: Result<Outcome, MetaError>,
    ) -> Vec<Effect> {
        let (op, _) = meta_of(effects);
        core.handle(env, Input::MetaDone { op, result })
    }

    fn tail(global: Offset) -> TailInfo {
        TailInfo {
            known_global_tail: global,
            local_tail: global,
            ..TailInfo::default()
        }
    }

    fn tail_changed(core: &mut LogCore, env: &Env, loglet: LogletId, t: TailInfo) -> Vec<Effect> {
        core.handle(env, Input::TailChanged { loglet, tail: t })
    }

    fn local(core: &mut LogCore, env: &Env, effects: &[Effect], offsets: &[u64]) -> Vec<Effect> {
        let read = read_of(effects);
        let result = Ok(offsets.iter().map(|&o| (o, rec(o))).collect());
        core.handle(env, Input::LocalRecords { read, result })
    }

    fn records(offsets: &[u64]) -> Result<Response, CallError> {
        Ok(Response::Records(Ok(RecordsReply {
            records: offsets.iter().map(|&o| (o, rec(o))).collect(),
            tail: TailInfo::default(),
            damaged: Vec::new(),
            trimmed_below: 0,
        })))
    }

    fn done(effects: &[Effect]) -> &OpResult {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Done { result, .. } => Some(result),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Done in {effects:?}"))
    }

    fn loglet0() -> LogletId {
        LogletId::new(LOG, 0)
    }

    fn down(to: NodeId) -> Result<Response, CallError> {
        Err(CallError::Unavailable(to, "down".into()))
    }

    // Append ------------------------------------------------------------------

    #[test]
    fn a1_an_append_too_large_is_refused_before_anything_is_sent() {
        let t0 = Instant::now();
        let mut c = core();
        let out = c.handle(
            &env(t0),
            Input::Append {
                op: OpId(1),
                log: LOG,
                records: Vec::new(),
                deadline: t0 + Duration::from_secs(1),
            },
        );
        assert_eq!(
            out,
            vec![Effect::Done {
                op: OpId(1),
                result: OpResult::Appended(Err(AppendError::TooLarge {
                    records: 0,
                    bytes: 0
                })),
            }]
        );
        let big = Record(vec![0; MAX_RECORD_BYTES + 1]);
        let out = c.handle(
            &env(t0),
            Input::Append {
                op: OpId(2),
                log: LOG,
                records: vec![big],
                deadline: t0 + Duration::from_secs(1),
            },
        );
        assert!(matches!(
            done(&out),
            OpResult::Appended(Err(AppendError::TooLarge { records: 1, .. }))
        ));
        assert_eq!(
            c.stats(),
            LogStats::default(),
            "refused appends are not counted"
        );
    }

    #[test]
    fn a2_an_append_goes_to_the_sequencer_of_the_known_tail_bounded_by_the_attempt_timeout() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        assert_eq!(
            out,
            vec![Effect::Call {
                to: n(2),
                call: CallId(1),
                req: Request::Append(Append {
                    segment: chain().tail().clone(),
                    records: vec![rec(9)],
                }),
                timeout: Duration::from_secs(2),
            }]
        );
        let out = c.handle(&env(t0), append(2, t0 + Duration::from_millis(700)));
        assert!(
            matches!(&out[..], [Effect::Call { timeout, .. }] if *timeout == Duration::from_millis(700))
        );
    }

    #[test]
    fn a2_appended_is_the_lsn_of_the_first_record() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = reply(
            &mut c,
            &env(t0),
            &out,
            outcome(AppendOutcome::Appended { first_lsn: Lsn(7) }),
        );
        assert_eq!(
            out,
            vec![Effect::Done {
                op: OpId(1),
                result: OpResult::Appended(Ok(Lsn(7))),
            }]
        );
        assert_eq!(
            c.stats(),
            LogStats {
                appends: 1,
                appended_records: 1,
                append_errors: 0,
                tail_probes_ahead: 0,
            }
        );
        assert_eq!(c.ops(), 0);
    }

    #[test]
    fn a2_without_a_known_chain_the_append_reads_it_first() {
        let t0 = Instant::now();
        let mut c = core();
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        assert_eq!(
            out,
            vec![Effect::Meta {
                op: MetaOp(1),
                key: "chain/1".into(),
                change: Change::Read,
                timeout: Duration::from_secs(5),
            }]
        );
        let out = meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(4, &chain())))),
        );
        assert_eq!(call_of(&out).0, n(2));
        assert_eq!(
            c.chain(LOG),
            Some(&(4, chain())),
            "what a read found is known"
        );
    }

    #[test]
    fn a_log_without_a_chain_gets_its_first_segment_on_the_preferred_leader() {
        let t0 = Instant::now();
        let mut c = core();
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(1);
        let out = meta_done(&mut c, &env(t1), &out, Ok(Outcome::Value(None)));
        let leader = preferred_leader(PartitionId(LOG.0), &nodes());
        let initial = Chain::initial(LOG, leader, nodes(), 2);
        match &out[..] {
            [Effect::Meta {
                key,
                change: Change::Cas {
                    expected, value, ..
                },
                timeout,
                ..
            }] => {
                assert_eq!((key.as_str(), *expected), ("chain/1", 0));
                assert_eq!(rmp_serde::from_slice::<Chain>(value).unwrap(), initial);
                assert_eq!(
                    *timeout,
                    Duration::from_secs(4),
                    "what is left of the refresh"
                );
            }
            other => panic!("{other:?}"),
        }
        let out = meta_done(
            &mut c,
            &env(t1),
            &out,
            Ok(Outcome::Value(Some(versioned(1, &initial)))),
        );
        assert_eq!(call_of(&out).0, leader);
        // Someone else created it first: theirs is used.
        let mut c = core();
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = meta_done(&mut c, &env(t0), &out, Ok(Outcome::Value(None)));
        let out = meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Conflict(Some(versioned(1, &chain())))),
        );
        assert_eq!(call_of(&out).0, n(2));
    }

    #[test]
    fn an_unknown_log_is_refused() {
        let t0 = Instant::now();
        let mut c = core();
        let out = c.handle(
            &env(t0),
            Input::Append {
                op: OpId(1),
                log: LogId(4),
                records: vec![rec(1)],
                deadline: t0 + Duration::from_secs(1),
            },
        );
        assert_eq!(
            done(&out),
            &OpResult::Appended(Err(AppendError::UnknownLog(LogId(4))))
        );
        let out = c.handle(
            &env(t0),
            Input::Read {
                op: OpId(2),
                log: LogId(4),
                from: Lsn(1),
                max: 1,
                deadline: t0,
            },
        );
        assert_eq!(
            done(&out),
            &OpResult::Read(Err(ReadError::UnknownLog(LogId(4))))
        );
    }

    #[test]
    fn a2_a_register_error_is_retried_and_past_the_deadline_the_append_is_unavailable() {
        let t0 = Instant::now();
        let mut c = core();
        let deadline = t0 + Duration::from_secs(1);
        let out = c.handle(&env(t0), append(1, deadline));
        let err = MetaError::Decode {
            key: "chain/1".into(),
            reason: "x".into(),
        };
        let t1 = t0 + Duration::from_millis(400);
        let out = meta_done(&mut c, &env(t1), &out, Err(err.clone()));
        assert!(
            matches!(&out[..], [Effect::Meta { change: Change::Read, timeout, .. }] if *timeout == Duration::from_millis(600))
        );
        let out = meta_done(&mut c, &env(deadline), &out, Err(err.clone()));
        assert_eq!(
            done(&out),
            &OpResult::Appended(Err(AppendError::Unavailable(format!(
                "deadline passed; last: {err}"
            ))))
        );
        assert_eq!(c.stats().append_errors, 1);
    }

    #[test]
    fn a3_sealed_reads_the_chain_once_waits_a_grace_then_drives_the_seal() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let deadline = t0 + Duration::from_secs(5);
        let out = c.handle(&env(t0), append(1, deadline));
        let out = reply(&mut c, &env(t0), &out, outcome(AppendOutcome::Sealed));
        assert_eq!(
            out,
            vec![Effect::Meta {
                op: MetaOp(2),
                key: "chain/1".into(),
                change: Change::Read,
                timeout: Duration::from_secs(1),
            }]
        );
        // The register has nothing newer: the grace runs.
        let out = meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(3, &chain())))),
        );
        assert!(out.is_empty());
        let grace_end = t0 + Duration::from_secs(1);
        assert_eq!(c.next_wake(), Some(grace_end));
        assert!(c
            .handle(&env(t0 + Duration::from_millis(500)), Input::Tick)
            .is_empty());
        let out = c.handle(&env(grace_end), Input::Tick);
        assert_eq!(
            out,
            vec![Effect::SealAndExtend {
                op: SealId(3),
                segment: chain().tail().clone(),
                next_sequencer: n(1),
                timeout: Duration::from_secs(4),
            }]
        );
        // The seal extended the chain (the host hands the new chain first):
        // the next attempt goes to the new tail's sequencer.
        let next = extended(0, n(1));
        seen(&mut c, grace_end, 4, &next);
        let out = c.handle(
            &env(grace_end),
            Input::SealDone {
                op: SealId(3),
                result: Ok(next.clone()),
            },
        );
        assert_eq!(call_of(&out).0, n(1));
        assert!(matches!(call_of(&out).2, Request::Append(a) if a.segment == *next.tail()));
    }

    #[test]
    fn a3_a_chain_that_moves_within_the_grace_is_retried_without_sealing() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = reply(&mut c, &env(t0), &out, outcome(AppendOutcome::Sealed));
        // The register read finds it extended.
        let next = extended(2, n(3));
        let out = meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(4, &next)))),
        );
        assert_eq!(call_of(&out).0, n(3));
        // Or the cache learns of it during the grace.
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = reply(&mut c, &env(t0), &out, outcome(AppendOutcome::Sealed));
        assert!(meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(3, &chain()))))
        )
        .is_empty());
        let out = seen(&mut c, t0 + Duration::from_millis(300), 4, &next);
        assert_eq!(call_of(&out).0, n(3));
    }

    #[test]
    fn a4_an_unknown_outcome_is_reported_and_the_loglet_sealed_in_the_background() {
        let t0 = Instant::now();
        for (result, why) in [
            (
                outcome(AppendOutcome::Indeterminate),
                "loglet 1/0 was sealed with the append in flight".to_string(),
            ),
            (
                Err(CallError::Timeout(n(2), Duration::from_secs(2))),
                CallError::Timeout(n(2), Duration::from_secs(2)).to_string(),
            ),
        ] {
            let mut c = core();
            seen(&mut c, t0, 3, &chain());
            let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
            let out = reply(&mut c, &env(t0), &out, result);
            assert_eq!(
                out,
                vec![
                    Effect::SealAndExtend {
                        op: SealId(2),
                        segment: chain().tail().clone(),
                        next_sequencer: n(1),
                        timeout: Duration::from_secs(10),
                    },
                    Effect::Done {
                        op: OpId(1),
                        result: OpResult::Appended(Err(AppendError::Indeterminate(why))),
                    },
                ]
            );
            // Nobody waits for that seal.
            let sealed = Input::SealDone {
                op: SealId(2),
                result: Err(SealError::Abandoned),
            };
            assert!(c.handle(&env(t0), sealed).is_empty());
        }
    }

    #[test]
    fn a5_a_gone_or_wrong_sequencer_is_sealed_away() {
        let t0 = Instant::now();
        for e in [
            SequencerError::Gone(loglet0()),
            SequencerError::NotSequencer(loglet0()),
            SequencerError::Storage("disk".into()),
        ] {
            let mut c = core();
            seen(&mut c, t0, 3, &chain());
            let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
            let out = reply(&mut c, &env(t0), &out, refused(e));
            assert!(
                matches!(&out[..], [Effect::SealAndExtend { timeout, .. }] if *timeout == Duration::from_secs(5))
            );
        }
    }

    #[test]
    fn a6_not_delivered_pauses_unless_the_sequencer_is_suspected_or_here() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        assert!(reply(&mut c, &env(t0), &out, down(n(2))).is_empty());
        let wake = t0 + NOT_DELIVERED_PAUSE;
        assert_eq!(c.next_wake(), Some(wake));
        let out = c.handle(&env(wake), Input::Tick);
        assert_eq!(call_of(&out).0, n(2));
        // Suspected: the seal moves the sequencer here.
        let out = reply(&mut c, &suspecting(wake, n(2)), &out, down(n(2)));
        assert!(matches!(&out[..], [Effect::SealAndExtend { .. }]));
        // A sequencer on this node that cannot be reached is gone too.
        let mut c = core();
        seen(&mut c, t0, 3, &Chain::initial(LOG, n(1), nodes(), 2));
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = reply(&mut c, &env(t0), &out, down(n(1)));
        assert!(matches!(&out[..], [Effect::SealAndExtend { .. }]));
    }

    #[test]
    fn a7_refusals_before_any_offset_are_final() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = reply(
            &mut c,
            &env(t0),
            &out,
            refused(SequencerError::TooLarge {
                records: 1,
                bytes: 2,
            }),
        );
        assert_eq!(
            done(&out),
            &OpResult::Appended(Err(AppendError::TooLarge {
                records: 1,
                bytes: 2
            }))
        );
        let out = c.handle(&env(t0), append(2, t0 + Duration::from_secs(5)));
        let e = SequencerError::Invalid("no".into());
        let out = reply(&mut c, &env(t0), &out, refused(e.clone()));
        assert_eq!(
            done(&out),
            &OpResult::Appended(Err(AppendError::Unavailable(e.to_string())))
        );
    }

    #[test]
    fn a8_a_failed_seal_pauses_before_the_next_attempt() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        let out = reply(
            &mut c,
            &env(t0),
            &out,
            refused(SequencerError::Gone(loglet0())),
        );
        let failed = Input::SealDone {
            op: seal_of(&out),
            result: Err(SealError::Abandoned),
        };
        assert!(c.handle(&env(t0), failed).is_empty());
        let wake = t0 + FAILED_SEAL_PAUSE;
        assert_eq!(c.next_wake(), Some(wake));
        assert_eq!(call_of(&c.handle(&env(wake), Input::Tick)).0, n(2));
    }

    #[test]
    fn a_cancelled_operation_is_forgotten() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
        assert!(c.handle(&env(t0), Input::Cancel { op: OpId(1) }).is_empty());
        assert!(reply(
            &mut c,
            &env(t0),
            &out,
            outcome(AppendOutcome::Appended { first_lsn: Lsn(1) })
        )
        .is_empty());
        assert_eq!(c.ops(), 0);
    }

    // Read --------------------------------------------------------------------

    /// A read of `LOG` from LSN 1 whose chain was confirmed by a register
    /// read at `t0`, past its first `WatchTail` (answered with `global`).
    fn reading(c: &mut LogCore, t0: Instant, deadline: Instant, global: Offset) -> Vec<Effect> {
        let out = c.handle(&env(t0), read(1, 1, 10, deadline));
        let out = meta_done(
            c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(3, &chain())))),
        );
        assert_eq!(out, vec![Effect::WatchTail { loglet: loglet0() }]);
        tail_changed(c, &env(t0), loglet0(), tail(global))
    }

    #[test]
    fn r1_r2_a_read_below_the_local_global_tail_is_served_locally() {
        let t0 = Instant::now();
        let mut c = core();
        let out = reading(&mut c, t0, t0 + Duration::from_secs(1), 3);
        assert_eq!(
            out,
            vec![Effect::ReadLocal {
                read: ReadId(2),
                loglet: loglet0(),
                from: 0,
                to: 3,
                max_bytes: READ_MAX_BYTES,
            }]
        );
        let out = local(&mut c, &env(t0), &out, &[0, 1, 2]);
        assert_eq!(
            out,
            vec![
                Effect::UnwatchTail { loglet: loglet0() },
                Effect::Done {
                    op: OpId(1),
                    result: OpResult::Read(Ok(vec![
                        (Lsn(1), rec(0)),
                        (Lsn(2), rec(1)),
                        (Lsn(3), rec(2))
                    ])),
                },
            ]
        );
    }

    #[test]
    fn r2_the_run_is_contiguous_from_the_start_and_at_most_max_long() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 3, &chain());
        let _ = c.handle(&env(t0), read(1, 1, 2, t0 + Duration::from_secs(1)));
        let out = tail_changed(&mut c, &env(t0), loglet0(), tail(9));
        let out = local(&mut c, &env(t0), &out, &[0, 1, 2]);
        assert_eq!(
            done(&out),
            &OpResult::Read(Ok(vec![(Lsn(1), rec(0)), (Lsn(2), rec(1))]))
        );
        let _ = c.handle(&env(t0), read(2, 1, 10, t0 + Duration::from_secs(1)));
        let out = tail_changed(&mut c, &env(t0), loglet0(), tail(9));
        let out = local(&mut c, &env(t0), &out, &[0, 2]);
        assert_eq!(done(&out), &OpResult::Read(Ok(vec![(Lsn(1), rec(0))])));
    }

    #[test]
    fn r2_records_that_no_server_holds_and_a_peer_trimmed_are_trimmed() {
        let t0 = Instant::now();
        let mut c = core();
        let out = reading(&mut c, t0, t0 + Duration::from_secs(1), 9);
        let out = local(&mut c, &env(t0), &out, &[]);
        assert!(out.is_empty(), "the local grace: {out:?}");
        let wake = t0 + LOCAL_GRACE;
        let again = c.handle(&env(wake), Input::Tick);
        let out = local(&mut c, &env(wake), &again, &[]);
        let trimmed = |below: Offset, offsets: &[Offset]| {
            Ok(Response::Records(Ok(RecordsReply {
                records: offsets.iter().map(|&o| (o, rec(o))).collect(),
                tail: TailInfo::default(),
                damaged: Vec::new(),
                trimmed_below: below,
            })))
        };
        // N2 trimmed below offset 5 (it holds 5..), N3 below 3: nobody
        // holds offset 0 any more, and the log (base LSN 1) resumes at 6.
        let out = reply(&mut c, &env(wake), &out, trimmed(5, &[5, 6]));
        assert_eq!(call_of(&out).0, n(3));
        let out = reply(&mut c, &env(wake), &out, trimmed(3, &[]));
        assert_eq!(
            done(&out),
            &OpResult::Read(Err(ReadError::Trimmed {
                log: LOG,
                from: Lsn(1),
                first: Lsn(6)
            }))
        );
        // A peer that still holds the records serves them, trimmed or not.
        let _ = c.handle(&env(wake), read(2, 1, 10, wake + Duration::from_secs(1)));
        let out = tail_changed(&mut c, &env(wake), loglet0(), tail(9));
        assert!(local(&mut c, &env(wake), &out, &[]).is_empty(), "the grace");
        let wake2 = wake + LOCAL_GRACE;
        let again = c.handle(&env(wake2), Input::Tick);
        let out = local(&mut c, &env(wake2), &again, &[]);
        let out = reply(&mut c, &env(wake2), &out, trimmed(5, &[]));
        let out = reply(&mut c, &env(wake2), &out, trimmed(0, &[0, 1]));
        assert!(
            out.iter().any(
                |e| matches!(e, Effect::Done { result: OpResult::Read(Ok(r)), .. } if r.len() == 2)
            ),
            "{out:?}"
        );
    }

    #[test]
    fn r2_at_the_open_tail_the_local_copy_gets_a_grace_then_peers_are_asked_in_order() {
        let t0 = Instant::now();
        let mut c = core();
        let out = reading(&mut c, t0, t0 + Duration::from_secs(1), 2);
        assert!(local(&mut c, &env(t0), &out, &[]).is_empty());
        let wake = t0 + LOCAL_GRACE;
        assert_eq!(c.next_wake(), Some(wake));
        let again = c.handle(&env(wake), Input::Tick);
        assert!(matches!(
            &again[..],
            [Effect::ReadLocal { from: 0, to: 2, .. }]
        ));
        let out = local(&mut c, &env(wake), &again, &[]);
        let get = Request::GetRecords(GetRecords {
            loglet: loglet0(),
            from: 0,
            to: 2,
            max_bytes: READ_MAX_BYTES as u32,
            include_uncommitted: true,
        });
        // This node (N1) is not asked; N2 first, then N3.
        assert!(
            matches!(&out[..], [Effect::Call { to, req, timeout, .. }] if *to == n(2) && *req == get && *timeout == PEER_READ_TIMEOUT)
        );
        let out = reply(&mut c, &env(wake), &out, down(n(2)));
        assert_eq!(call_of(&out).0, n(3));
        let out = reply(&mut c, &env(wake), &out, records(&[0, 1]));
        // R3: what came from a peer is stored back here.
        let (to, _, req) = call_of(&out);
        assert_eq!(to, n(1));
        assert_eq!(
            req,
            Request::Store(Store {
                loglet: loglet0(),
                first: 0,
                records: Arc::new(vec![rec(0), rec(1)]),
                // Read below the known committed tail: committed here too.
                known_global_tail: 2,
                repair: true,
                from: None,
            })
        );
        assert_eq!(
            done(&out),
            &OpResult::Read(Ok(vec![(Lsn(1), rec(0)), (Lsn(2), rec(1))]))
        );
    }

    #[test]
    fn r2_the_grace_ends_early_when_the_local_tail_moves() {
        let t0 = Instant::now();
        let mut c = core();
        let out = reading(&mut c, t0, t0 + Duration::from_secs(1), 2);
        assert!(local(&mut c, &env(t0), &out, &[]).is_empty());
        let moved = TailInfo {
            local_tail: 2,
            known_global_tail: 2,
            ..TailInfo::default()
        };
        let out = tail_changed(
            &mut c,
            &env(t0),
            loglet0(),
            TailInfo {
                local_tail: 3,
                ..moved
            },
        );
        assert!(matches!(&out[..], [Effect::ReadLocal { .. }]));
    }

    #[test]
    fn r2_suspected_peers_are_skipped_and_sealed_segments_have_no_grace() {
        let t0 = Instant::now();
        let mut c = core();
        let sealed = extended(5, n(3));
        seen(&mut c, t0, 4, &sealed);
        let _ = c.handle(&env(t0), read(1, 1, 10, t0 + Duration::from_secs(1)));
        let out = tail_changed(&mut c, &env(t0), loglet0(), tail(0));
        assert!(
            matches!(&out[..], [Effect::ReadLocal { from: 0, to: 5, .. }]),
            "{out:?}"
        );
        let out = local(&mut c, &suspecting(t0, n(2)), &out, &[]);
        assert_eq!(call_of(&out).0, n(3));
    }

    #[test]
    fn r3_no_read_repair_on_a_node_outside_the_nodeset() {
        let t0 = Instant::now();
        let mut c = core();
        let outside = Chain::initial(LOG, n(2), vec![n(2), n(3)], 2);
        seen(&mut c, t0, 3, &outside);
        let _ = c.handle(&env(t0), read(1, 1, 10, t0 + Duration::from_secs(1)));
        let out = tail_changed(&mut c, &env(t0), loglet0(), tail(1));
        assert!(local(&mut c, &env(t0), &out, &[]).is_empty());
        let out = c.handle(&env(t0 + LOCAL_GRACE), Input::Tick);
        let out = local(&mut c, &env(t0 + LOCAL_GRACE), &out, &[]);
        let out = reply(&mut c, &env(t0), &out, records(&[0]));
        assert!(
            !out.iter().any(|e| matches!(e, Effect::Call { .. })),
            "{out:?}"
        );
        assert_eq!(done(&out), &OpResult::Read(Ok(vec![(Lsn(1), rec(0))])));
    }

    #[test]
    fn r4_nothing_readable_waits_for_the_tail_and_ends_empty_at_the_deadline() {
        let t0 = Instant::now();
        let mut c = core();
        let deadline = t0 + Duration::from_millis(400);
        assert!(reading(&mut c, t0, deadline, 0).is_empty());
        assert_eq!(c.next_wake(), Some(t0 + READ_PAUSE));
        // The tail moves: read at once (the chain is fresh).
        let t1 = t0 + Duration::from_millis(10);
        let out = tail_changed(&mut c, &env(t1), loglet0(), tail(1));
        assert!(matches!(&out[..], [Effect::ReadLocal { to: 1, .. }]));
        // Another read that sees nothing until its deadline.
        let mut c = core();
        assert!(reading(&mut c, t0, deadline, 0).is_empty());
        let t1 = t0 + READ_PAUSE;
        assert!(c.handle(&env(t1), Input::Tick).is_empty());
        assert_eq!(
            c.next_wake(),
            Some(deadline),
            "the last wait is cut to the deadline"
        );
        let out = c.handle(&env(deadline), Input::Tick);
        assert_eq!(
            out,
            vec![
                Effect::UnwatchTail { loglet: loglet0() },
                Effect::Done {
                    op: OpId(1),
                    result: OpResult::Read(Ok(Vec::new())),
                },
            ]
        );
    }

    #[test]
    fn r4_a_chain_change_seen_while_not_waiting_ends_the_next_wait_at_once() {
        let t0 = Instant::now();
        let mut c = core();
        let out = reading(&mut c, t0, t0 + Duration::from_secs(1), 1);
        let next = extended(0, n(3));
        assert!(
            seen(&mut c, t0, 4, &next).is_empty(),
            "remembered, nothing else"
        );
        assert!(local(&mut c, &env(t0), &out, &[]).is_empty());
        let out = c.handle(&env(t0 + LOCAL_GRACE), Input::Tick);
        let out = local(&mut c, &env(t0 + LOCAL_GRACE), &out, &[]);
        let out = reply(&mut c, &env(t0 + LOCAL_GRACE), &out, down(n(2)));
        let out = reply(&mut c, &env(t0 + LOCAL_GRACE), &out, down(n(3)));
        // No wait: the read moves to the new segment straight away.
        assert_eq!(
            out,
            vec![
                Effect::UnwatchTail { loglet: loglet0() },
                Effect::WatchTail {
                    loglet: LogletId::new(LOG, 1)
                },
            ]
        );
    }

    #[test]
    fn r5_a_chain_not_confirmed_within_a_second_is_read_again_after_a_wait() {
        let t0 = Instant::now();
        let mut c = core();
        assert!(reading(&mut c, t0, t0 + Duration::from_secs(5), 0).is_empty());
        let t1 = t0 + CHAIN_RECHECK;
        let out = c.handle(&env(t1), Input::Tick);
        // Stalled past TAIL_PROBE_AFTER: a peer is asked first (R7); it
        // knows no more.
        let out = reply(&mut c, &env(t1), &out, records(&[]));
        assert!(
            matches!(&out[..], [Effect::Meta { change: Change::Read, timeout, .. }] if *timeout == Duration::from_secs(4))
        );
        // The register knows the segment sealed: the read follows it.
        let next = extended(0, n(3));
        let out = meta_done(
            &mut c,
            &env(t1),
            &out,
            Ok(Outcome::Value(Some(versioned(4, &next)))),
        );
        assert_eq!(
            out,
            vec![
                Effect::UnwatchTail { loglet: loglet0() },
                Effect::WatchTail {
                    loglet: LogletId::new(LOG, 1)
                },
            ]
        );
    }

    #[test]
    fn r5_a_wait_ended_by_a_moving_tail_reads_on_without_a_register_read() {
        let t0 = Instant::now();
        let mut c = core();
        assert!(reading(&mut c, t0, t0 + Duration::from_secs(5), 0).is_empty());
        // Well past CHAIN_RECHECK, but the wait ends because records were
        // committed: they are read at once, with the chain as known.
        let t1 = t0 + CHAIN_RECHECK + Duration::from_millis(100);
        let moved = TailInfo {
            known_global_tail: 1,
            local_tail: 1,
            ..TailInfo::default()
        };
        let out = tail_changed(&mut c, &env(t1), loglet0(), moved);
        assert!(!out.is_empty(), "the read goes on");
        assert!(
            !out.iter().any(|e| matches!(e, Effect::Meta { .. })),
            "no register read on progress: {out:?}"
        );
    }

    #[test]
    fn r5_a_loglet_sealed_on_the_local_log_server_makes_the_read_recheck_the_chain() {
        let t0 = Instant::now();
        let mut c = core();
        assert!(reading(&mut c, t0, t0 + Duration::from_secs(5), 0).is_empty());
        let sealed = TailInfo {
            sealed: true,
            ..TailInfo::default()
        };
        let out = tail_changed(&mut c, &env(t0), loglet0(), sealed);
        assert!(matches!(
            &out[..],
            [Effect::Meta {
                change: Change::Read,
                ..
            }]
        ));
    }

    #[test]
    fn r6_a_read_stalled_at_a_suspected_sequencer_seals_it_in_the_background() {
        let t0 = Instant::now();
        let run = |suspected: bool| {
            let mut c = core();
            assert!(reading(&mut c, t0, t0 + Duration::from_secs(10), 0).is_empty());
            let e = |now| {
                if suspected {
                    suspecting(now, n(2))
                } else {
                    env(now)
                }
            };
            let t1 = t0 + READ_PAUSE;
            assert!(c.handle(&e(t1), Input::Tick).is_empty());
            // More than twice the grace later.
            let t2 = t0 + Duration::from_millis(2_100);
            c.handle(&e(t2), Input::Tick)
        };
        let out = run(true);
        assert!(
            matches!(&out[0], Effect::SealAndExtend { segment, timeout, .. } if segment.loglet == loglet0() && *timeout == Duration::from_secs(10)),
            "{out:?}"
        );
        let out = run(false);
        assert!(!out
            .iter()
            .any(|e| matches!(e, Effect::SealAndExtend { .. })));
    }

    /// A reply to a tail probe: `offsets` and a known global tail.
    fn probed(offsets: &[u64], known_global_tail: Offset) -> Result<Response, CallError> {
        Ok(Response::Records(Ok(RecordsReply {
            records: offsets.iter().map(|&o| (o, rec(o))).collect(),
            tail: TailInfo {
                known_global_tail,
                local_tail: known_global_tail,
                ..TailInfo::default()
            },
            damaged: Vec::new(),
            trimmed_below: 0,
        })))
    }

    #[test]
    fn r7_a_read_cut_off_from_the_sequencer_learns_the_commit_from_another_log_server() {
        let t0 = Instant::now();
        let mut c = core();
        // N1 cannot reach N2, the sequencer; its own log-server got nothing.
        let e = |now| suspecting(now, n(2));
        assert!(reading(&mut c, t0, t0 + Duration::from_secs(10), 0).is_empty());
        let t1 = t0 + READ_PAUSE;
        assert!(
            c.handle(&e(t1), Input::Tick).is_empty(),
            "no probe before TAIL_PROBE_AFTER"
        );
        let t2 = t0 + TAIL_PROBE_AFTER;
        let out = c.handle(&e(t2), Input::Tick);
        let (to, _, req) = call_of(&out);
        assert_eq!(to, n(3), "the suspected sequencer's server is skipped");
        assert!(
            matches!(&req, Request::GetRecords(g) if g.from == 0 && g.to == Offset::MAX && !g.include_uncommitted),
            "only committed records are asked for: {req:?}"
        );
        // N3 holds two committed records and knows a third is committed.
        let out = reply(&mut c, &e(t2), &out, probed(&[0, 1], 3));
        let repair = out.iter().find_map(|x| match x {
            Effect::Call {
                to,
                req: Request::Store(s),
                ..
            } => Some((*to, s.clone())),
            _ => None,
        });
        let (to, store) = repair.expect("the run is stored here again");
        assert_eq!((to, store.first, store.repair), (n(1), 0, true));
        assert_eq!(
            store.known_global_tail, 3,
            "the local log-server learns the commit too"
        );
        assert_eq!(
            done(&out),
            &OpResult::Read(Ok(vec![(Lsn(1), rec(0)), (Lsn(2), rec(1))]))
        );
        assert_eq!(c.stats().tail_probes_ahead, 1);
    }

    #[test]
    fn r7_an_unanswered_probe_moves_to_the_next_server_and_an_idle_tail_is_probed_at_most_every_interval(
    ) {
        let t0 = Instant::now();
        let mut c = core();
        assert!(reading(&mut c, t0, t0 + Duration::from_secs(10), 0).is_empty());
        let t1 = t0 + TAIL_PROBE_AFTER;
        let out = c.handle(&env(t1), Input::Tick);
        assert_eq!(call_of(&out).0, n(2));
        let out = reply(&mut c, &env(t1), &out, down(n(2)));
        assert_eq!(call_of(&out).0, n(3), "no answer: the next server");
        // N3 knows nothing past the offset: an idle log, back to waiting.
        let out = reply(&mut c, &env(t1), &out, probed(&[], 0));
        assert!(
            !out.iter().any(|x| matches!(x, Effect::Call { .. })),
            "{out:?}"
        );
        assert_eq!(c.stats().tail_probes_ahead, 0);
        // The next probe waits a whole interval.
        let mut probes = 0;
        let mut now = t1;
        while now < t1 + TAIL_PROBE_AFTER * 4 {
            now = c.next_wake().expect("the read waits");
            let mut out = c.handle(&env(now), Input::Tick);
            while let Some(Effect::Call { call, to, req, .. }) = out.first().cloned() {
                if let Request::GetRecords(_) = req {
                    probes += 1;
                }
                out = c.handle(
                    &env(now),
                    Input::Reply {
                        call,
                        from: to,
                        result: probed(&[], 0),
                    },
                );
            }
            out.retain(|x| matches!(x, Effect::Meta { .. }));
            if let Some(Effect::Meta { op, .. }) = out.first().cloned() {
                c.handle(
                    &env(now),
                    Input::MetaDone {
                        op,
                        result: Ok(Outcome::Value(Some(versioned(3, &chain())))),
                    },
                );
            }
        }
        assert!(
            (3..=4).contains(&probes),
            "{probes} probes in {:?}",
            TAIL_PROBE_AFTER * 4
        );
    }

    #[test]
    fn a_read_whose_chain_cannot_be_read_is_unavailable() {
        let t0 = Instant::now();
        let mut c = core();
        let out = c.handle(&env(t0), read(1, 1, 10, t0 + Duration::from_secs(1)));
        let err = MetaError::Indeterminate {
            key: "chain/1".into(),
        };
        let out = meta_done(&mut c, &env(t0), &out, Err(err.clone()));
        assert_eq!(
            done(&out),
            &OpResult::Read(Err(ReadError::Unavailable(LOG, err.to_string())))
        );
    }

    // Trim, seal, chains ------------------------------------------------------

    #[test]
    fn trim_goes_segment_by_segment_and_not_again_below_what_was_trimmed() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 4, &extended(10, n(3)));
        let answer_all = |c: &mut LogCore, out: Vec<Effect>| {
            let mut next = Vec::new();
            for e in &out {
                if let Effect::Call { to, call, .. } = e {
                    next = c.handle(
                        &env(t0),
                        Input::Reply {
                            call: *call,
                            from: *to,
                            result: Ok(Response::Trim(Ok(()))),
                        },
                    );
                }
            }
            next
        };
        let trims = |out: &[Effect]| -> Vec<(NodeId, LogletId, Offset)> {
            out.iter()
                .filter_map(|e| match e {
                    Effect::Call {
                        to,
                        req: Request::Trim(t),
                        timeout,
                        ..
                    } => {
                        assert_eq!(*timeout, TRIM_TIMEOUT);
                        Some((*to, t.loglet, t.below))
                    }
                    _ => None,
                })
                .collect()
        };
        let trim = |op: u64, below: u64| Input::Trim {
            op: OpId(op),
            log: LOG,
            below: Lsn(below),
        };
        let trimmed = |op: u64| {
            vec![Effect::Done {
                op: OpId(op),
                result: OpResult::Trimmed,
            }]
        };
        let seg1 = LogletId::new(LOG, 1);
        let out = c.handle(&env(t0), trim(1, 15));
        assert_eq!(
            trims(&out),
            nodes()
                .into_iter()
                .map(|n| (n, loglet0(), 10))
                .collect::<Vec<_>>()
        );
        let out = answer_all(&mut c, out);
        assert_eq!(
            trims(&out),
            nodes()
                .into_iter()
                .map(|n| (n, seg1, 4))
                .collect::<Vec<_>>()
        );
        let out = answer_all(&mut c, out);
        // Segment 0 (LSNs 1..=10) is trimmed everywhere: it leaves the chain,
        // by a CAS on the version known.
        let compacted = extended(10, n(3)).trimmed_below(Lsn(15)).unwrap();
        assert_eq!(compacted.first_lsn(), Lsn(11));
        match &out[..] {
            [Effect::Meta {
                change: Change::Cas {
                    expected, value, ..
                },
                timeout,
                ..
            }] => {
                assert_eq!((*expected, *timeout), (4, TRIM_TIMEOUT));
                assert_eq!(rmp_serde::from_slice::<Chain>(value).unwrap(), compacted);
            }
            other => panic!("expected the compaction CAS, got {other:?}"),
        }
        let done = meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(5, &compacted)))),
        );
        assert!(done.contains(&Effect::Done {
            op: OpId(1),
            result: OpResult::Trimmed
        }));
        // A read from below the chain's first LSN is told so at once.
        let out = c.handle(
            &env(t0),
            Input::Read {
                op: OpId(9),
                log: LOG,
                from: Lsn(4),
                max: 10,
                deadline: t0 + Duration::from_secs(1),
            },
        );
        assert!(out.contains(&Effect::Done {
            op: OpId(9),
            result: OpResult::Read(Err(ReadError::Trimmed {
                log: LOG,
                from: Lsn(4),
                first: Lsn(11)
            }))
        }));
        let out = c.handle(&env(t0), trim(2, 12));
        assert_eq!(out, trimmed(2));
        // The first segment ends below what was trimmed: only the second.
        let out = c.handle(&env(t0), trim(3, 20));
        assert_eq!(
            trims(&out),
            nodes()
                .into_iter()
                .map(|n| (n, seg1, 9))
                .collect::<Vec<_>>()
        );
        // One server does not answer: nothing is recorded as trimmed (the
        // open tail never leaves the chain anyway), and the next trim asks
        // every server again.
        let mut last = Vec::new();
        for (i, e) in out.iter().enumerate() {
            if let Effect::Call { to, call, .. } = e {
                let result = if i == 0 {
                    Err(CallError::Timeout(n(1), Duration::from_secs(1)))
                } else {
                    Ok(Response::Trim(Ok(())))
                };
                last = c.handle(
                    &env(t0),
                    Input::Reply {
                        call: *call,
                        from: *to,
                        result,
                    },
                );
            }
        }
        assert_eq!(last, trimmed(3));
        let out = c.handle(&env(t0), trim(4, 20));
        assert_eq!(trims(&out).len(), 3, "asked again: {out:?}");
        // Without a known chain there is nothing to trim.
        let mut c = core();
        let out = c.handle(&env(t0), trim(1, 5));
        assert_eq!(out, trimmed(1));
    }

    #[test]
    fn a_seal_for_a_caller_moves_the_sequencer_here_within_its_deadline() {
        let t0 = Instant::now();
        let mut c = core();
        let segment = chain().tail().clone();
        let out = c.handle(
            &env(t0),
            Input::Seal {
                op: OpId(1),
                segment: segment.clone(),
                deadline: t0 + Duration::from_secs(3),
            },
        );
        assert_eq!(
            out,
            vec![Effect::SealAndExtend {
                op: SealId(1),
                segment,
                next_sequencer: n(1),
                timeout: Duration::from_secs(3),
            }]
        );
        let next = extended(0, n(1));
        let out = c.handle(
            &env(t0),
            Input::SealDone {
                op: SealId(1),
                result: Ok(next.clone()),
            },
        );
        assert_eq!(
            out,
            vec![Effect::Done {
                op: OpId(1),
                result: OpResult::Sealed(Ok(next))
            }]
        );
    }

    #[test]
    fn a_refresh_reads_the_register_and_marks_the_chain_confirmed() {
        let t0 = Instant::now();
        let mut c = core();
        let out = c.handle(
            &env(t0),
            Input::Refresh {
                op: OpId(1),
                log: LOG,
                deadline: t0 + Duration::from_secs(3),
            },
        );
        let out = meta_done(
            &mut c,
            &env(t0),
            &out,
            Ok(Outcome::Value(Some(versioned(2, &chain())))),
        );
        assert_eq!(
            out,
            vec![Effect::Done {
                op: OpId(1),
                result: OpResult::Chain(Ok(chain()))
            }]
        );
        // Confirmed at t0: a read waiting until t0 + 250 ms trusts it.
        let _ = c.handle(&env(t0), read(2, 1, 1, t0 + Duration::from_secs(3)));
        let _ = tail_changed(&mut c, &env(t0), loglet0(), tail(0));
        let out = c.handle(&env(t0 + READ_PAUSE), Input::Tick);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn chain_seen_replaces_what_is_known_and_a_newer_read_wins_over_it() {
        let t0 = Instant::now();
        let mut c = core();
        seen(&mut c, t0, 5, &extended(1, n(3)));
        // A hint corrected downwards by the cache is followed.
        seen(&mut c, t0, 3, &chain());
        assert_eq!(c.chain(LOG), Some(&(3, chain())));
        c.handle(
            &env(t0),
            Input::ChainSeen {
                log: LOG,
                chain: None,
            },
        );
        assert_eq!(c.chain(LOG), None);
    }

    #[test]
    fn the_same_inputs_give_the_same_effects() {
        let t0 = Instant::now();
        let script = || {
            let mut c = core();
            let mut all = Vec::new();
            let out = c.handle(&env(t0), append(1, t0 + Duration::from_secs(5)));
            all.extend(out.clone());
            let out = meta_done(&mut c, &env(t0), &out, Ok(Outcome::Value(None)));
            all.extend(out.clone());
            let out = meta_done(
                &mut c,
                &env(t0),
                &out,
                Ok(Outcome::Value(Some(versioned(1, &chain())))),
            );
            all.extend(out.clone());
            all.extend(reply(
                &mut c,
                &env(t0),
                &out,
                outcome(AppendOutcome::Sealed),
            ));
            all
        };
        assert_eq!(script(), script());
    }

    #[test]
    fn every_timer_moves_on_when_it_fires() {
        let t0 = Instant::now();
        let mut c = core();
        assert!(reading(&mut c, t0, t0 + Duration::from_secs(5), 0).is_empty());
        seen(&mut c, t0, 3, &chain());
        let _ = c.handle(&env(t0), append(2, t0 + Duration::from_secs(5)));
        let mut now = t0;
        for _ in 0..10 {
            let Some(wake) = c.next_wake() else { break };
            assert!(wake > now || wake == t0, "a wake in the past: {wake:?}");
            now = wake;
            for e in c.handle(&env(now), Input::Tick) {
                // Answer register reads with the same chain, calls with nothing.
                match e {
                    Effect::Meta { op, .. } => {
                        c.handle(
                            &env(now),
                            Input::MetaDone {
                                op,
                                result: Ok(Outcome::Value(Some(versioned(3, &chain())))),
                            },
                        );
                    }
                    Effect::Call { to, call, .. } => {
                        c.handle(
                            &env(now),
                            Input::Reply {
                                call,
                                from: to,
                                result: down(to),
                            },
                        );
                    }
                    _ => {}
                }
            }
            assert_ne!(c.next_wake(), Some(now), "ticked at {now:?} and still due");
        }
    }

    /// Random operations, random answers (hostile values included) in random
    /// order, chain and tail news, time passing: the core never panics, and
    /// every operation ends exactly once once everything was answered and
    /// its deadline passed.
    #[test]
    fn any_answers_end_every_operation_exactly_once() {
        use std::collections::BTreeMap as Map;
        for case in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(case);
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = core();
            let mut pending: Vec<Effect> = Vec::new();
            let mut ended: Map<OpId, u32> = Map::new();
            let mut started = 0u64;
            let chains = [chain(), extended(3, n(1)), extended(0, n(3))];
            let suspected = |rng: &mut StdRng, now| {
                if rng.gen_bool(0.3) {
                    suspecting(now, n(rng.gen_range(2..4)))
                } else {
                    env(now)
                }
            };
            for step in 0..3_000 {
                let quiet = step >= 300;
                now += Duration::from_millis(rng.gen_range(0..120));
                let e = suspected(&mut rng, now);
                let input = if !quiet && rng.gen_bool(0.08) {
                    started += 1;
                    let op = OpId(started);
                    let deadline = now + Duration::from_millis(rng.gen_range(0..3_000));
                    match rng.gen_range(0..5) {
                        0 => Input::Append {
                            op,
                            log: LOG,
                            records: vec![rec(1)],
                            deadline,
                        },
                        1 => Input::Read {
                            op,
                            log: LOG,
                            from: Lsn(rng.gen_range(0..6)),
                            max: rng.gen_range(0..4),
                            deadline,
                        },
                        2 => Input::Refresh {
                            op,
                            log: LOG,
                            deadline,
                        },
                        3 => Input::Seal {
                            op,
                            segment: chain().tail().clone(),
                            deadline,
                        },
                        _ => Input::Trim {
                            op,
                            log: LOG,
                            below: Lsn(rng.gen_range(0..8)),
                        },
                    }
                } else if !quiet && rng.gen_bool(0.05) {
                    let i = rng.gen_range(0..chains.len());
                    Input::ChainSeen {
                        log: LOG,
                        chain: Some((i as u64 + 1, chains[i].clone())),
                    }
                } else if !quiet && rng.gen_bool(0.05) {
                    let loglet = LogletId::new(LOG, rng.gen_range(0..2));
                    Input::TailChanged {
                        loglet,
                        tail: TailInfo {
                            sealed: rng.gen_bool(0.2),
                            local_tail: rng.gen_range(0..5),
                            known_global_tail: if rng.gen_bool(0.1) {
                                u64::MAX
                            } else {
                                rng.gen_range(0..5)
                            },
                            suspect: false,
                        },
                    }
                } else if !pending.is_empty() && rng.gen_bool(0.8) {
                    let i = rng.gen_range(0..pending.len());
                    match pending.swap_remove(i) {
                        Effect::Call { to, call, req, .. } => {
                            let result = match (req, rng.gen_range(0..4)) {
                                (_, 0) => down(to),
                                (_, 1) => Err(CallError::Timeout(to, Duration::ZERO)),
                                (Request::Append(_), k) => outcome(match k {
                                    2 => AppendOutcome::Sealed,
                                    _ => AppendOutcome::Appended {
                                        first_lsn: Lsn(rng.gen()),
                                    },
                                }),
                                (Request::GetRecords(g), _) => {
                                    records(&[g.from, g.from.saturating_add(1), u64::MAX])
                                }
                                (Request::Trim(_), _) => Ok(Response::Trim(Ok(()))),
                                (_, _) => Ok(Response::Store(
                                    crate::actors::log_server::StoreReply::Stored { local_tail: 0 },
                                )),
                            };
                            Input::Reply {
                                call,
                                from: to,
                                result,
                            }
                        }
                        Effect::Meta { op, .. } => {
                            let i = rng.gen_range(0..chains.len());
                            let result = match rng.gen_range(0..5) {
                                0 => Err(MetaError::Indeterminate {
                                    key: "chain/1".into(),
                                }),
                                1 => Ok(Outcome::Value(None)),
                                2 => Ok(Outcome::Conflict(Some(Versioned {
                                    version: 9,
                                    value: vec![1, 2],
                                    writer: 0,
                                }))),
                                _ => Ok(Outcome::Value(Some(versioned(i as u64 + 1, &chains[i])))),
                            };
                            Input::MetaDone { op, result }
                        }
                        Effect::SealAndExtend { op, .. } => {
                            let result = if rng.gen_bool(0.5) {
                                Ok(chains[1].clone())
                            } else {
                                Err(SealError::Abandoned)
                            };
                            Input::SealDone { op, result }
                        }
                        Effect::ReadLocal { read, from, .. } => {
                            let result = if rng.gen_bool(0.1) {
                                Err(LogServerError::Unavailable)
                            } else {
                                Ok((from..from.saturating_add(rng.gen_range(0..3)))
                                    .map(|o| (o, rec(o)))
                                    .collect())
                            };
                            Input::LocalRecords { read, result }
                        }
                        other => panic!("{other:?} is never kept pending"),
                    }
                } else {
                    Input::Tick
                };
                for effect in c.handle(&e, input) {
                    match effect {
                        Effect::Done { op, .. } => *ended.entry(op).or_default() += 1,
                        Effect::WatchTail { .. } | Effect::UnwatchTail { .. } => {}
                        other => pending.push(other),
                    }
                }
                // The host answers WatchTail at once, as the shell does.
                for loglet in c.watchers.keys().copied().collect::<Vec<_>>() {
                    if !c.tails.contains_key(&loglet) {
                        for effect in c.handle(
                            &e,
                            Input::TailChanged {
                                loglet,
                                tail: TailInfo::default(),
                            },
                        ) {
                            match effect {
                                Effect::Done { op, .. } => *ended.entry(op).or_default() += 1,
                                Effect::WatchTail { .. } | Effect::UnwatchTail { .. } => {}
                                other => pending.push(other),
                            }
                        }
                    }
                }
                if quiet && pending.is_empty() && c.ops() == 0 {
                    break;
                }
            }
            assert_eq!(c.ops(), 0, "case {case}: operations left");
            assert_eq!(
                ended.len() as u64,
                started,
                "case {case}: some operation never ended"
            );
            assert!(
                ended.values().all(|&k| k == 1),
                "case {case}: an operation ended twice"
            );
            assert!(
                c.watchers.is_empty() && c.tails.is_empty(),
                "case {case}: watches left"
            );
        }
    }
}
