//! The partition processor's lifecycle, without I/O: one [`ProcessorCore`]
//! per partition and node, around the state machine of `core.rs`
//! ([`Applier`]), which says what each record does to the state.
//!
//! The rules, each with a test below:
//! - **Follow the log**: read from the applied LSN on, apply what arrives in
//!   LSN order, read again, forever (an applied partition never goes back).
//! - **Reign**: the elector says lead at an epoch; the processor appends
//!   `AnnounceLeader{epoch}` (retried 200 ms after a failure while it is still
//!   wanted) and is a *candidate* until it applies that very announcement:
//!   only then does its reign start, and it moves the log's sequencer next
//!   to itself. A newer announcement deposes it.
//! - **Who serves**: only a leader in its reign that reaches a majority
//!   takes requests; a follower answers with a hint of who leads, a
//!   candidate says it is announcing; a malformed request is answered at once
//!   and never joins a batch.
//! - **Requests**: a repeat of a request already applied is answered from its
//!   stored result; a repeat of one in flight shares its fate; every request
//!   waits until its record applies or its deadline (≤ 60 s) passes.
//! - **Batching**: at most [`MAX_APPENDS_IN_FLIGHT`] appends of requests are
//!   in flight; requests that arrive meanwhile leave together, in batches of
//!   at most [`APPEND_BATCH`] requests and the log's byte limit.
//! - **Retries**: an append whose outcome is unknown is retried with the same
//!   request ids (applied once, by dedup) while some of its requests still
//!   wait and the reign is the same; an append the log refused outright
//!   (too large, unknown log) fails its requests at once.
//! - **Outcomes**: a request whose record applied gets its response; one
//!   fenced (an older epoch) is told so; when a newer reign is announced,
//!   every request still waiting is fenced at once; stepping down answers
//!   the requests never handed to the log (certainly not applied) and keeps
//!   the others until they apply or time out; past its deadline a request
//!   is told its outcome is unknown (appended) or that it was not applied.
//! - **Time**: timestamps a leader writes into records come from the wall
//!   clock of the config, read at `env.now` (virtual in the simulator); time
//!   in apply is the log's clock (`core.rs`).
//! - **Durability**: applied state is synced every [`PERSIST_EVERY`]; the
//!   persisted LSN (what peers are told) is what a completed sync covered.
//! - **Snapshots**: once [`ProcessorConfig::snapshot_every`] records were
//!   applied since the last snapshot (checked at each tick), or when an
//!   operator asks, the core reads every entry of its store at the applied
//!   LSN (a consistent cut: the core is its store's only writer and applies
//!   whole batches) and asks its host to write the file; one at a time. The
//!   host syncs the state lane first, so a snapshot is reported only once
//!   its file is fsynced and the state it holds is durable here too; only
//!   then does it count (status, trimming, serving peers). A leader waits
//!   [`LEADER_SNAPSHOT_FACTOR`] times as many records: reading every entry
//!   takes its thread tens to hundreds of milliseconds, which every request
//!   of the node's partitions would wait out, while the followers' snapshots
//!   (a majority with the default three replicas) already let the log be
//!   trimmed.
//! - **A sick sequencer moves**: a leader moves its log's sequencer to its
//!   own node when its reign starts; later, told that the tail's sequencer
//!   is another node it scores sick (suspected or degraded,
//!   [`ProcessorInput::TailSequencer`]), it moves it again, at most once per
//!   [`SEQUENCER_MOVE_EVERY`]. A healthy remote sequencer stays (a follower
//!   that sealed while it suspected the leader, and still does, would
//!   otherwise take it back again and again).
//! - **Trim**: every [`TRIM_EVERY`] a leader asks every replica for its
//!   newest snapshot, and trims the log below the highest LSN a majority's
//!   snapshots cover (counting its own), never above its own persisted LSN
//!   (see [`trim_bound`]). A replica behind that point (dead, cut off,
//!   lagging, or wiped) catches up from a snapshot. Every replica having
//!   persisted its state past an LSN is not enough to trim below it: a
//!   replica that then loses its disk could be rebuilt from neither the log
//!   nor a snapshot (the simulator found it: a wiped node waited for a
//!   snapshot nobody held, its partition unserved).
//! - **Behind the trim point**: a read answered `Trimmed` (the log starts
//!   past the next LSN this replica needs) is not retried: status says
//!   `BehindTrim`, and the core asks its host to fetch a snapshot at or past
//!   the LSN before the log's first (`RestoringSnapshot` while it comes,
//!   naming the peer and LSN). A snapshot of another partition, older than
//!   needed, or not newer than what is applied here is refused; a failed or
//!   refused fetch reads the log again after [`FETCH_RETRY`] (and fetches
//!   again if still behind). A snapshot that fits replaces the whole state
//!   in one atomic write (every old key removed, every entry put), the core
//!   re-derives its state from the store as a start does, syncs, follows
//!   the log from the snapshot's LSN + 1, and keeps the snapshot as its own.
//! - **Storage errors**: a failed read or write while applying stops the
//!   processor (nothing of the batch is written; requests waiting are told
//!   the outcome is unknown); its host restarts it from its durable LSN.

use super::core::{
    inbox_mark, queued, read_outbox, recover, Applied, Applier, Command, Delivery, Entries,
    Invocation, Outcome, PartitionState, Recovered, Response,
};
use super::messages::{
    Deliver, FetchError, GetPersisted, Invoke, InvokeReply, Mode, OutboxStatus, PersistedReply,
    ProcessorStatus, RestoreView,
};
use super::outbox::{OutboxView, DELIVER_BATCH};
use crate::actors::bugs::BugSet;
use crate::actors::env::Env;
use crate::log::{AppendError, ReadError, Record};
use crate::node::CallError;
use crate::objects::{HandlerError, Objects};
use crate::storage::{PartitionWrite, Snapshot, StorageError};
use crate::types::{Epoch, Lsn, NodeId, PartitionId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A leader moves a sick sequencer here at most this often (a move is a
/// seal and a new segment).
pub const SEQUENCER_MOVE_EVERY: Duration = Duration::from_secs(5);

/// Most records read (and applied) in one batch.
pub const READ_BATCH: usize = 1024;
/// How long one read waits for new records before looking again.
pub const READ_WAIT: Duration = Duration::from_millis(500);
/// How often applied state is synced (to report the persisted LSN), and
/// waiters past their deadline are answered.
pub const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// Most invocations in one append.
pub const APPEND_BATCH: usize = 512;
/// How often a leader trims its log below what a majority's snapshots cover.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);
/// A leader snapshots after this many times `snapshot_every` records (see
/// the module doc).
pub const LEADER_SNAPSHOT_FACTOR: u64 = 4;
/// Appends a leader has in flight, at most. A lone request is appended at
/// once; under load, requests gather while both slots are busy and go out
/// together, so batches grow with the load instead of one append (three
/// stores, three flushes, a read and an apply on every replica) per handful.
pub const MAX_APPENDS_IN_FLIGHT: usize = 2;
/// How long the append of an announcement may take.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed announcement it is tried again.
pub const ANNOUNCE_RETRY: Duration = Duration::from_millis(200);
/// How long a reign may take to start before the wait counts as stuck.
pub const REIGN_WAIT: Duration = Duration::from_secs(20);
/// How long a replica has to say how far it persisted.
pub const PERSISTED_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest timeout an append of requests gets.
pub const MIN_APPEND_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest a request may wait (ms).
pub const MAX_REQUEST_WAIT_MS: u64 = 60_000;
/// A processor that applied nothing for this long is `Idle` in status.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);
/// How long after a failed or refused snapshot fetch the log is read again.
pub const FETCH_RETRY: Duration = Duration::from_secs(1);
/// How long after a failed snapshot write the schedule tries again.
pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(5);
/// How long a delivery to another partition's leader may take.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause after a failed delivery; it doubles up to
/// [`DELIVER_RETRY_MAX`] while deliveries to that partition keep failing.
pub const DELIVER_RETRY_MIN: Duration = Duration::from_millis(20);
/// The longest pause between two deliveries to a partition that fails them.
pub const DELIVER_RETRY_MAX: Duration = Duration::from_secs(1);
/// How long the append of an acknowledgement or of fired timers may take.
pub const OUTBOX_APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a failed acknowledgement or timer append the next is tried.
pub const OUTBOX_APPEND_RETRY: Duration = Duration::from_millis(100);

/// The highest LSN a leader may trim the log up to (inclusive), if any:
/// - `snapshots`: the newest retained snapshot of each replica that has one
///   (the leader's own included): the highest LSN such that a majority of
///   `nodes` hold a snapshot at or past it (a replica behind it, live, dead
///   or wiped, can always fetch one from a live node, even after one more
///   node lost its disk);
/// - never above `cap`, the leader's own persisted LSN.
pub fn trim_bound(snapshots: &[Lsn], nodes: usize, cap: Lsn) -> Option<Lsn> {
    let mut held = snapshots.to_vec();
    held.sort_by(|a, b| b.cmp(a));
    let majority = nodes / 2 + 1;
    let bound = held.get(majority - 1).copied()?.min(cap);
    (bound.0 > 0).then_some(bound)
}

/// How many of `pending` go into one append: at most [`APPEND_BATCH`], and
/// no more bytes than one append takes (at least one request). Without the
/// byte bound, a few hundred large requests made an append the log refuses
/// as too large, failing every request in it.
pub fn batch_len(pending: &[Invocation]) -> usize {
    let mut bytes = 0usize;
    for (i, inv) in pending.iter().take(APPEND_BATCH).enumerate() {
        bytes = bytes.saturating_add(Command::Invoke(inv.clone()).encode().len());
        if i > 0 && bytes > crate::actors::sequencer::MAX_APPEND_BYTES {
            return i;
        }
    }
    pending.len().min(APPEND_BATCH)
}

/// A wall clock read off the monotonic one: `unix_ms` at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// An instant of `Env::now`'s clock ...
    pub at: Instant,
    /// ... and the wall clock's milliseconds since the UNIX epoch then.
    pub unix_ms: u64,
}

impl WallClock {
    /// Milliseconds since the UNIX epoch at `now`.
    pub fn ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The instant the wall clock reads `ms` (its origin, for times before it).
    pub fn instant(&self, ms: u64) -> Instant {
        self.at + Duration::from_millis(ms.saturating_sub(self.unix_ms))
    }
}

/// What a processor core is configured with.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// The partition processed.
    pub partition: PartitionId,
    /// How many partitions (and logs) the cluster has: a request must belong
    /// to this one.
    pub partitions: u32,
    /// Where the timestamps a leader writes into records come from.
    pub wall_clock: WallClock,
    /// Deliberately wrong rules (empty but in the simulator's tests).
    pub bugs: BugSet,
    /// Applied records between two scheduled snapshots (0: on demand only).
    pub snapshot_every: u64,
    /// The newest snapshot this node held when the core started (its host
    /// lists its snapshot directory).
    pub snapshot_held: Option<Lsn>,
    /// How long results of requests with a client idempotency key are kept
    /// (ms of log clock). Written into each such record while this core
    /// leads, so replicas configured otherwise still expire alike.
    pub idempotency_retention_ms: u64,
    /// The object types whose handlers the records call (the same on every
    /// node of the cluster).
    pub objects: Objects,
}

/// A host's handle on a request it waits to answer.
pub type Token = u64;
/// A local service operation (an append), chosen by the core.
pub type OpId = u64;

/// A call to another node, chosen by the core (its own counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// Everything a processor learns.
#[derive(Debug)]
pub enum ProcessorInput {
    /// Time passed (see [`ProcessorCore::next_wake`]); the first tick starts
    /// following the log.
    Tick,
    /// A client's request, forwarded by an ingress; answered with exactly one
    /// [`ProcessorEffect::Reply`] for `token`.
    Invoke { token: Token, req: Invoke },
    /// A replica asks how far this one persisted; answered with
    /// [`ProcessorEffect::RespondPersisted`].
    GetPersisted { token: Token },
    /// The elector: lead at `epoch`.
    BecomeLeader { epoch: Epoch },
    /// The elector: follow (`leader`, if known).
    BecomeFollower { leader: Option<NodeId> },
    /// The read asked for with [`ProcessorEffect::Read`] completed.
    Records {
        records: Result<Vec<(Lsn, Record)>, ReadError>,
    },
    /// The append `op` completed: the LSN of its first record, or why not.
    Appended {
        op: OpId,
        result: Result<Lsn, AppendError>,
    },
    /// The sync asked for with [`ProcessorEffect::SyncState`] completed.
    Persisted {
        upto: Lsn,
        result: Result<(), StorageError>,
    },
    /// A replica's answer to a trim round's call.
    PersistedOf {
        call: CallId,
        node: NodeId,
        reply: Result<PersistedReply, CallError>,
    },
    /// Every input queued when [`ProcessorEffect::Drain`] was asked for has
    /// been handled.
    Drained,
    /// An operator asks for a snapshot now; answered with exactly one
    /// [`ProcessorEffect::SnapshotDone`] for `token`.
    TakeSnapshot { token: Token },
    /// The write asked for with [`ProcessorEffect::WriteSnapshot`] completed
    /// (the file is fsynced), or why not.
    SnapshotWritten {
        lsn: Lsn,
        result: Result<(), String>,
    },
    /// The fetch asked for with [`ProcessorEffect::FetchSnapshot`] found
    /// `from`'s snapshot at `lsn` and fetches it (for status).
    SnapshotSource { from: NodeId, lsn: Lsn },
    /// The fetch completed: a verified snapshot, or why none came.
    SnapshotFetched {
        result: Result<Snapshot, FetchError>,
    },
    /// Messages from another partition's leader; answered with exactly one
    /// [`ProcessorEffect::Reply`] for `token`.
    Deliver { token: Token, req: Deliver },
    /// The host's periodic look at the log: its tail is sequenced by
    /// `sequencer`, which this node scores `sick` (suspected or degraded).
    TailSequencer { sequencer: NodeId, sick: bool },
    /// The answer to [`ProcessorEffect::Deliver`] `call` (`Err`: no answer
    /// came, the reason says why).
    Delivered {
        call: CallId,
        reply: Result<InvokeReply, String>,
    },
}

impl ProcessorInput {
    /// The input's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorInput::Tick => "tick",
            ProcessorInput::Invoke { .. } => "invoke",
            ProcessorInput::GetPersisted { .. } => "get-persisted",
            ProcessorInput::BecomeLeader { .. } => "become-leader",
            ProcessorInput::BecomeFollower { .. } => "become-follower",
            ProcessorInput::Records { .. } => "records",
            ProcessorInput::Appended { .. } => "appended",
            ProcessorInput::Persisted { .. } => "persisted",
            ProcessorInput::PersistedOf { .. } => "persisted-of",
            ProcessorInput::Drained => "drained",
            ProcessorInput::TakeSnapshot { .. } => "take-snapshot",
            ProcessorInput::SnapshotWritten { .. } => "snapshot-written",
            ProcessorInput::SnapshotSource { .. } => "snapshot-source",
            ProcessorInput::SnapshotFetched { .. } => "snapshot-fetched",
            ProcessorInput::Deliver { .. } => "deliver",
            ProcessorInput::Delivered { .. } => "delivered",
            ProcessorInput::TailSequencer { .. } => "tail-sequencer",
        }
    }
}

/// Everything a processor asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorEffect {
    /// Answer the request of `token`.
    Reply { token: Token, reply: InvokeReply },
    /// Answer a replica's [`ProcessorInput::GetPersisted`].
    RespondPersisted { token: Token, reply: PersistedReply },
    /// Append `records` to the partition's log within `timeout`; answer with
    /// [`ProcessorInput::Appended`].
    Append {
        op: OpId,
        records: Vec<Record>,
        timeout: Duration,
    },
    /// Read up to `max` records from `from` on, waiting up to `wait` for at
    /// least one; answer with [`ProcessorInput::Records`] (empty: nothing new).
    Read {
        from: Lsn,
        max: usize,
        wait: Duration,
    },
    /// Sync the state lane (everything applied up to `upto`); answer with
    /// [`ProcessorInput::Persisted`].
    SyncState { upto: Lsn },
    /// Ask `to` how far it persisted; answer with exactly one
    /// [`ProcessorInput::PersistedOf`].
    Call {
        to: NodeId,
        call: CallId,
        req: GetPersisted,
        timeout: Duration,
    },
    /// Trim the log below `below` (best effort, no answer).
    Trim { below: Lsn },
    /// Seal the log's tail segment and extend the chain with one sequenced on
    /// this node, if its sequencer is elsewhere (best effort, no answer).
    MoveSequencerHere,
    /// Deliver [`ProcessorInput::Drained`] once every input already queued
    /// was handled (requests that arrived together leave together).
    Drain,
    /// A wait starts that must end within `limit` (a supervisor restarts a
    /// processor stuck past it); [`ProcessorEffect::Unwatch`] ends it.
    Watch { what: String, limit: Duration },
    /// The wait of the last [`ProcessorEffect::Watch`] is over.
    Unwatch,
    /// Storage failed: stop; the host restarts the processor from its state.
    Stop { reason: String },
    /// Sync the state lane, then write `snapshot` durably (and apply the
    /// retention); answer with [`ProcessorInput::SnapshotWritten`].
    WriteSnapshot { snapshot: Snapshot },
    /// Answer the operator's [`ProcessorInput::TakeSnapshot`]: the LSN of
    /// the snapshot now held, or why there is none.
    SnapshotDone {
        token: Token,
        result: Result<Lsn, String>,
    },
    /// Fetch a snapshot of this partition at `at_least` or later from the
    /// peers (verified); answer with [`ProcessorInput::SnapshotFetched`].
    FetchSnapshot { at_least: Lsn },
    /// Send `req` to the leader of `req.partition`: `to` if known, else the
    /// one the register names (read afresh if `fresh`: the cached one said
    /// it does not lead); answer with exactly one
    /// [`ProcessorInput::Delivered`] for `call`.
    Deliver {
        call: CallId,
        to: Option<NodeId>,
        fresh: bool,
        req: Deliver,
        timeout: Duration,
    },
}

/// A request waiting for its outcome.
#[derive(Clone, Debug)]
struct Waiter {
    /// Whom to answer.
    token: Token,
    /// When the caller stops waiting.
    deadline: Instant,
    /// Whether its record was handed to the log (outcome unknown until applied).
    appended: bool,
}

/// An append in flight.
#[derive(Clone, Debug)]
enum AppendOp {
    /// This node's announcement of `epoch`.
    Announce { epoch: Epoch },
    /// Requests stamped with `epoch`.
    Requests {
        batch: Vec<Invocation>,
        epoch: Epoch,
    },
    /// Another partition's messages (its waiters wait under `id`).
    Delivery { id: String },
    /// Acknowledgements received from targets.
    Acks { acks: Vec<(PartitionId, u64)> },
    /// Due timers fired.
    Fire,
}

/// The delivery loop's state towards one target partition (leader only).
#[derive(Clone, Debug, Default)]
struct Sending {
    /// The delivery out, if one is.
    in_flight: Option<CallId>,
    /// The highest sequence number the target said it holds.
    accepted: u64,
    /// No delivery before this (the last one failed).
    retry_at: Option<Instant>,
    /// The pause after the next failure.
    backoff: Duration,
    /// The target's leader, as its last answer named it.
    hint: Option<NodeId>,
    /// The target's leader should be read from the register afresh.
    fresh: bool,
}

/// A leader's round of "how far did you persist?".
#[derive(Clone, Debug)]
struct TrimRound {
    /// The calls of this round still unanswered, and whom each went to.
    calls: BTreeMap<CallId, NodeId>,
    /// The newest snapshot of each replica that answered with one (this
    /// node's included).
    snapshots: Vec<Lsn>,
    /// How many replicas there are (this node included).
    nodes: usize,
}

/// A snapshot being fetched to restore from.
#[derive(Clone, Debug)]
struct Restore {
    /// The oldest snapshot LSN of use.
    at_least: Lsn,
    /// The peer and LSN the host fetches from, once it found one.
    source: Option<(NodeId, Lsn)>,
}

/// Why a snapshot cannot be restored.
enum RestoreError {
    /// The snapshot is unfit (it is refused; another fetch follows).
    Refused(String),
    /// This node's store failed (the processor stops).
    Storage(StorageError),
}

/// What applying one batch produced.
struct Batch {
    /// The state after it.
    state: Recovered,
    /// Requests' outcomes, in log order.
    outcomes: Vec<(String, Outcome)>,
    /// This node's own current announcement applied (its reign's epoch).
    reign: Option<Epoch>,
    /// The batch changed the outbox or the timers.
    outbox_changed: bool,
}

pub struct ProcessorCore<S: PartitionState> {
    /// What this core is configured with.
    config: ProcessorConfig,
    /// The partition's durable state.
    store: S,
    /// What is applied (in memory and in `store`).
    state: Recovered,
    /// What a completed sync covered.
    persisted: Lsn,
    /// Follower, candidate or leader.
    mode: Mode,
    /// The epoch this node leads at (candidate or leader).
    epoch: Epoch,
    /// What the elector last asked for: lead at this epoch, or follow.
    desired: Option<Epoch>,
    /// Requests waiting, by request id (several callers may share one).
    waiters: BTreeMap<String, Vec<Waiter>>,
    /// Requests not yet handed to the log, in arrival order.
    pending: Vec<Invocation>,
    /// A [`ProcessorEffect::Drain`] is out.
    drain_asked: bool,
    /// Appends in flight, by op.
    appends: BTreeMap<OpId, AppendOp>,
    /// How many of them carry requests.
    appends_in_flight: usize,
    /// The next op id.
    next_op: OpId,
    /// The next call id.
    next_call: u64,
    /// A read is out (the log is being followed).
    reading: bool,
    /// A sync is out.
    persisting: bool,
    /// When a record was last applied (set at the first input).
    last_applied_at: Option<Instant>,
    /// When this leader last moved a sick sequencer here (a move per
    /// [`SEQUENCER_MOVE_EVERY`] at most).
    sequencer_moved_at: Option<Instant>,
    /// Why this core stopped, if it did.
    failed: Option<String>,
    /// A reign's start is being waited for (a watch is out).
    awaiting_reign: bool,
    /// A failed announcement to try again, and when.
    announce_retry: Option<(Instant, Epoch)>,
    /// The log no longer holds the next record this replica needs (it
    /// starts at this LSN): it cannot catch up from the log, says so in
    /// status, and reads again at each tick instead of spinning.
    behind_trim: Option<Lsn>,
    /// When waiters are next expired and state next synced.
    next_persist: Option<Instant>,
    /// When the leader next trims.
    next_trim: Option<Instant>,
    /// The trim round in flight.
    trim_round: Option<TrimRound>,
    /// The newest snapshot held (its file fsynced).
    latest_snapshot: Option<Lsn>,
    /// The LSN of the snapshot being written, if one is.
    snapshot_writing: Option<Lsn>,
    /// Operators waiting for the snapshot being written.
    snapshot_waiters: Vec<Token>,
    /// No scheduled snapshot before this (a write failed).
    snapshot_after: Option<Instant>,
    /// The snapshot fetch under way, if any.
    restore: Option<Restore>,
    /// When the log is read again after a failed fetch.
    fetch_retry: Option<Instant>,
    /// Why the last fetch failed or its snapshot was refused (for status).
    fetch_error: Option<String>,
    /// Snapshots written since start (for status and metrics).
    snapshots_taken: u64,
    /// Snapshots restored since start.
    snapshots_restored: u64,
    /// The outbox and timers as the state holds them (re-read after every
    /// batch that changed them, and after a restore).
    outbox: OutboxView,
    /// The delivery loop, per target partition (leader only).
    sending: BTreeMap<PartitionId, Sending>,
    /// Acknowledgements received and not yet appended (highest per target).
    acks: BTreeMap<PartitionId, u64>,
    /// An `Acked` append is out.
    acking: bool,
    /// A `FireTimers` append is out.
    firing: bool,
    /// Messages delivered and acknowledged since start.
    delivered: u64,
    /// Why the last delivery failed (cleared by a success).
    delivery_error: Option<String>,
    /// When the delivery loop wants to run next (a timer falls due, a
    /// failed delivery is retried); the periodic tick runs it meanwhile.
    outbox_wake: Option<Instant>,
    /// No acknowledgement or timer append before this (the last failed).
    outbox_append_after: Option<Instant>,
}

impl<S: PartitionState> ProcessorCore<S> {
    /// A processor over `store`, at the state it holds.
    pub fn new(config: ProcessorConfig, store: S) -> Result<Self, StorageError> {
        let state = recover(&store)?;
        let outbox = read_outbox(&store)?;
        Ok(ProcessorCore {
            store,
            persisted: state.applied,
            state,
            mode: Mode::Follower,
            epoch: Epoch(0),
            desired: None,
            waiters: BTreeMap::new(),
            pending: Vec::new(),
            drain_asked: false,
            appends: BTreeMap::new(),
            appends_in_flight: 0,
            next_op: 1,
            next_call: 1,
            reading: false,
            persisting: false,
            last_applied_at: None,
            sequencer_moved_at: None,
            failed: None,
            awaiting_reign: false,
            announce_retry: None,
            behind_trim: None,
            next_persist: None,
            next_trim: None,
            trim_round: None,
            latest_snapshot: config.snapshot_held,
            snapshot_writing: None,
            snapshot_waiters: Vec::new(),
            snapshot_after: None,
            restore: None,
            fetch_retry: None,
            fetch_error: None,
            snapshots_taken: 0,
            snapshots_restored: 0,
            outbox,
            sending: BTreeMap::new(),
            acks: BTreeMap::new(),
            acking: false,
            firing: false,
            delivered: 0,
            delivery_error: None,
            outbox_wake: None,
            outbox_append_after: None,
            config,
        })
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: ProcessorInput) -> Vec<ProcessorEffect> {
        let mut out = Vec::new();
        self.last_applied_at.get_or_insert(env.now);
        if let Some(reason) = &self.failed {
            // Stopped: nothing changes any more; a request still gets an answer.
            if let ProcessorInput::Invoke { token, .. } | ProcessorInput::Deliver { token, .. } =
                input
            {
                out.push(ProcessorEffect::Reply {
                    token,
                    reply: InvokeReply::Unavailable(format!("storage failed: {reason}")),
                });
            }
            return out;
        }
        match input {
            ProcessorInput::Tick => self.tick(env, &mut out),
            ProcessorInput::TailSequencer { sequencer, sick } => {
                let due = self
                    .sequencer_moved_at
                    .is_none_or(|at| env.now.saturating_duration_since(at) >= SEQUENCER_MOVE_EVERY);
                if self.mode == Mode::Leader && sick && sequencer != env.me && due {
                    info!(partition = %self.config.partition, %sequencer, "the log's sequencer is on a sick node: moving it here");
                    self.sequencer_moved_at = Some(env.now);
                    out.push(ProcessorEffect::MoveSequencerHere);
                }
            }
            ProcessorInput::Invoke { token, req } => self.invoke(env, token, req, &mut out),
            ProcessorInput::GetPersisted { token } => out.push(ProcessorEffect::RespondPersisted {
                token,
                reply: self.persisted_reply(),
            }),
            ProcessorInput::BecomeLeader { epoch } => {
                self.desired = Some(epoch);
                self.announce(env, epoch, &mut out);
            }
            ProcessorInput::BecomeFollower { leader } => {
                self.desired = None;
                if self.mode != Mode::Follower {
                    info!(partition = %self.config.partition, ?leader, "stepping down");
                    self.step_down(leader, &mut out);
                }
            }
            ProcessorInput::Records { records } => {
                match records {
                    Ok(records) => {
                        if !records.is_empty() {
                            self.behind_trim = None;
                        }
                        self.apply(env, records, &mut out)
                    }
                    Err(ReadError::Trimmed { first, .. }) => {
                        if self.behind_trim != Some(first) {
                            warn!(partition = %self.config.partition, applied = %self.state.applied, log_starts_at = %first,
                                "behind the trim point: the log no longer holds what this replica needs; fetching a snapshot");
                        }
                        self.behind_trim = Some(first);
                        self.reading = false;
                        self.fetch(first, &mut out);
                        return out;
                    }
                    Err(e) => {
                        warn!(partition = %self.config.partition, "reading the log failed: {e}")
                    }
                }
                if self.failed.is_none() {
                    out.push(self.read());
                }
            }
            ProcessorInput::Appended { op, result } => self.appended(env, op, result, &mut out),
            ProcessorInput::Persisted { upto, result } => {
                self.persisting = false;
                match result {
                    Ok(()) => self.persisted = self.persisted.max(upto),
                    Err(e) => {
                        warn!(partition = %self.config.partition, "syncing state failed: {e}")
                    }
                }
            }
            ProcessorInput::PersistedOf { call, node, reply } => {
                self.persisted_of(call, node, reply, &mut out)
            }
            ProcessorInput::Drained => {
                self.drain_asked = false;
                while !self.pending.is_empty() && self.appends_in_flight < MAX_APPENDS_IN_FLIGHT {
                    let n = batch_len(&self.pending);
                    let batch: Vec<Invocation> = self.pending.drain(..n).collect();
                    self.append(env, batch, &mut out);
                }
            }
            ProcessorInput::TakeSnapshot { token } => self.take_snapshot_now(token, &mut out),
            ProcessorInput::SnapshotWritten { lsn, result } => {
                self.snapshot_written(env, lsn, result, &mut out)
            }
            ProcessorInput::SnapshotSource { from, lsn } => {
                if let Some(r) = &mut self.restore {
                    info!(partition = %self.config.partition, %from, %lsn, "restoring a snapshot");
                    r.source = Some((from, lsn));
                }
            }
            ProcessorInput::SnapshotFetched { result } => {
                self.snapshot_fetched(env, result, &mut out)
            }
            ProcessorInput::Deliver { token, req } => self.deliver_in(env, token, req, &mut out),
            ProcessorInput::Delivered { call, reply } => self.delivered(env, call, reply),
        }
        if self.failed.is_none() {
            self.pump(env, &mut out);
        }
        out
    }

    /// What this processor was configured with.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// What a replica asking how far this one persisted is told.
    pub fn persisted_reply(&self) -> PersistedReply {
        PersistedReply {
            persisted: self.persisted,
            snapshot: self.latest_snapshot,
        }
    }

    /// The newest snapshot held (its file fsynced).
    pub fn latest_snapshot(&self) -> Option<Lsn> {
        self.latest_snapshot
    }

    /// Asks for a snapshot at `first - 1` or later (the log starts at
    /// `first`), unless a fetch is under way or waits for its retry.
    fn fetch(&mut self, first: Lsn, out: &mut Vec<ProcessorEffect>) {
        if self.restore.is_some() || self.fetch_retry.is_some() {
            return;
        }
        let at_least = Lsn(first.0.saturating_sub(1)).max(self.state.applied.next());
        self.restore = Some(Restore {
            at_least,
            source: None,
        });
        out.push(ProcessorEffect::FetchSnapshot { at_least });
    }

    /// Starts writing a snapshot of the store at the applied LSN.
    fn start_snapshot(&mut self, entries: Option<Entries>) -> Result<ProcessorEffect, String> {
        let lsn = self.state.applied;
        let entries = match entries {
            Some(e) => e,
            None => self.store.entries().map_err(|e| e.to_string())?,
        };
        self.snapshot_writing = Some(lsn);
        Ok(ProcessorEffect::WriteSnapshot {
            snapshot: Snapshot {
                partition: self.config.partition,
                lsn,
                entries,
            },
        })
    }

    /// The schedule: a snapshot once enough was applied since the last one.
    fn maybe_snapshot(&mut self, now: Instant, out: &mut Vec<ProcessorEffect>) {
        let every = match self.mode {
            Mode::Leader => self
                .config
                .snapshot_every
                .saturating_mul(LEADER_SNAPSHOT_FACTOR),
            _ => self.config.snapshot_every,
        };
        let since = self
            .state
            .applied
            .0
            .saturating_sub(self.latest_snapshot.unwrap_or_default().0);
        if every == 0
            || since < every
            || self.snapshot_writing.is_some()
            || self.restore.is_some()
            || self.snapshot_after.is_some_and(|t| now < t)
        {
            return;
        }
        match self.start_snapshot(None) {
            Ok(effect) => out.push(effect),
            Err(e) => {
                warn!(partition = %self.config.partition, "reading state for a snapshot failed: {e}");
                self.snapshot_after = Some(now + SNAPSHOT_RETRY);
            }
        }
    }

    fn take_snapshot_now(&mut self, token: Token, out: &mut Vec<ProcessorEffect>) {
        let done = |result| ProcessorEffect::SnapshotDone { token, result };
        if self.restore.is_some() {
            return out.push(done(Err("restoring a snapshot; try again later".into())));
        }
        if self.snapshot_writing.is_some() {
            return self.snapshot_waiters.push(token);
        }
        if self.state.applied.0 == 0 {
            return out.push(done(Err("nothing applied yet".into())));
        }
        if self.latest_snapshot == Some(self.state.applied) {
            return out.push(done(Ok(self.state.applied)));
        }
        match self.start_snapshot(None) {
            Ok(effect) => {
                self.snapshot_waiters.push(token);
                out.push(effect);
            }
            Err(e) => out.push(done(Err(format!("reading state failed: {e}")))),
        }
    }

    fn snapshot_written(
        &mut self,
        env: &Env,
        lsn: Lsn,
        result: Result<(), String>,
        out: &mut Vec<ProcessorEffect>,
    ) {
        if self.snapshot_writing != Some(lsn) {
            return;
        }
        self.snapshot_writing = None;
        match &result {
            Ok(()) => {
                info!(partition = %self.config.partition, %lsn, "snapshot taken");
                self.latest_snapshot = self.latest_snapshot.max(Some(lsn));
                self.snapshots_taken += 1;
                self.snapshot_after = None;
            }
            Err(e) => {
                warn!(partition = %self.config.partition, %lsn, "writing a snapshot failed: {e}");
                self.snapshot_after = Some(env.now + SNAPSHOT_RETRY);
            }
        }
        for token in std::mem::take(&mut self.snapshot_waiters) {
            out.push(ProcessorEffect::SnapshotDone {
                token,
                result: result.clone().map(|()| lsn),
            });
        }
    }

    fn snapshot_fetched(
        &mut self,
        env: &Env,
        result: Result<Snapshot, FetchError>,
        out: &mut Vec<ProcessorEffect>,
    ) {
        let Some(restore) = self.restore.take() else {
            return;
        };
        let snapshot = match result {
            Ok(s) => s,
            Err(e) => {
                warn!(partition = %self.config.partition, "fetching a snapshot failed: {e}");
                self.fetch_error = Some(e.to_string());
                self.fetch_retry = Some(env.now + FETCH_RETRY);
                return;
            }
        };
        let refused = if snapshot.partition != self.config.partition {
            Some(format!("it is of partition {}", snapshot.partition))
        } else if snapshot.lsn < restore.at_least {
            Some(format!(
                "it covers LSN {}, older than the {} needed",
                snapshot.lsn, restore.at_least
            ))
        } else if snapshot.lsn <= self.state.applied {
            Some(format!(
                "it covers LSN {}, not past the {} applied here",
                snapshot.lsn, self.state.applied
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            warn!(partition = %self.config.partition, "snapshot refused: {why}");
            self.fetch_error = Some(format!("snapshot refused: {why}"));
            self.fetch_retry = Some(env.now + FETCH_RETRY);
            return;
        }
        let write = match self.restore_write(&snapshot) {
            Ok(w) => w,
            Err(RestoreError::Refused(why)) => {
                warn!(partition = %self.config.partition, "snapshot refused: {why}");
                self.fetch_error = Some(format!("snapshot refused: {why}"));
                self.fetch_retry = Some(env.now + FETCH_RETRY);
                return;
            }
            Err(RestoreError::Storage(e)) => return self.fail(e, out),
        };
        let restored = self.store.apply(write).and_then(|()| {
            let state = recover(&self.store)?;
            Ok((state, read_outbox(&self.store)?))
        });
        let state = match restored {
            Ok((state, outbox)) => {
                self.outbox = outbox;
                state
            }
            Err(e) => return self.fail(e, out),
        };
        info!(partition = %self.config.partition, lsn = %state.applied, from = ?restore.source.map(|s| s.0), "snapshot restored");
        self.state = state;
        self.behind_trim = None;
        self.fetch_error = None;
        self.snapshots_restored += 1;
        self.last_applied_at = Some(env.now);
        if self.mode != Mode::Follower && self.state.announced > self.epoch {
            self.step_down(self.state.leader, out);
        }
        self.persist(out);
        self.reading = true;
        out.push(self.read());
        // Kept as this node's own snapshot: it can serve it, and it counts
        // for trimming once written.
        if self.snapshot_writing.is_none() && self.latest_snapshot < Some(snapshot.lsn) {
            if let Ok(effect) = self.start_snapshot(Some(snapshot.entries)) {
                out.push(effect);
            }
        }
    }

    /// The one write that makes the store hold exactly `snapshot`: every
    /// key not in it removed, every entry put (the journal makes it atomic).
    fn restore_write(&self, snapshot: &Snapshot) -> Result<PartitionWrite, RestoreError> {
        let applied = snapshot
            .entries
            .iter()
            .find(|(k, _)| k == PartitionWrite::APPLIED_KEY)
            .map(|(_, v)| v.as_slice());
        if applied != Some(&snapshot.lsn.0.to_be_bytes()[..]) {
            return Err(RestoreError::Refused(format!(
                "its state does not say it covers LSN {}",
                snapshot.lsn
            )));
        }
        let mut write = PartitionWrite::default();
        let keep: std::collections::BTreeSet<&[u8]> =
            snapshot.entries.iter().map(|(k, _)| k.as_slice()).collect();
        for (key, _) in self.store.entries().map_err(RestoreError::Storage)? {
            if !keep.contains(key.as_slice()) {
                write
                    .remove_raw(&key)
                    .map_err(|e| RestoreError::Refused(e.to_string()))?;
            }
        }
        for (key, value) in &snapshot.entries {
            write
                .put_raw(key, value)
                .map_err(|e| RestoreError::Refused(e.to_string()))?;
        }
        Ok(write)
    }

    /// A storage error: stop (nothing more is written; waiters are told the
    /// outcome is unknown); the host restarts the processor from its state.
    fn fail(&mut self, e: StorageError, out: &mut Vec<ProcessorEffect>) {
        warn!(partition = %self.config.partition, "storage failed: {e}; restarting");
        let reason = e.to_string();
        self.failed = Some(reason.clone());
        for (_, waiters) in std::mem::take(&mut self.waiters) {
            for w in waiters {
                out.push(ProcessorEffect::Reply {
                    token: w.token,
                    reply: InvokeReply::Timeout,
                });
            }
        }
        out.push(ProcessorEffect::Stop { reason });
    }

    /// When the core wants its next [`ProcessorInput::Tick`] (`None` before
    /// the first one, which a host delivers when it starts the core, and
    /// after it stopped).
    pub fn next_wake(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        let outbox = self.outbox_wake.filter(|_| self.mode == Mode::Leader);
        [
            self.next_persist,
            self.next_trim,
            self.announce_retry.map(|(at, _)| at),
            self.fetch_retry,
            outbox,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// For status.
    pub fn status(&self, env: &Env) -> ProcessorStatus {
        let since = env
            .now
            .saturating_duration_since(self.last_applied_at.unwrap_or(env.now));
        let status = match self.mode {
            _ if self.failed.is_some() => "StorageFailed",
            Mode::Candidate => "Announcing",
            Mode::Leader if !env.has_majority() => "NoMajority",
            _ if self.restore.as_ref().is_some_and(|r| r.source.is_some()) => "RestoringSnapshot",
            _ if self.behind_trim.is_some() => "BehindTrim",
            _ if since > IDLE_AFTER => "Idle",
            _ => "Active",
        };
        ProcessorStatus {
            partition: self.config.partition,
            mode: self.mode,
            status: status.to_string(),
            epoch: self.state.announced,
            leader: self.state.leader,
            applied_lsn: self.state.applied,
            persisted_lsn: self.persisted,
            last_update_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
            pending_requests: self.waiters.values().map(Vec::len).sum(),
            snapshot_lsn: self.latest_snapshot,
            snapshot_fetch_error: self.fetch_error.clone(),
            restoring: self.restore.as_ref().map(|r| RestoreView {
                at_least: r.at_least,
                from: r.source.map(|s| s.0),
                lsn: r.source.map(|s| s.1),
            }),
            snapshots_taken: self.snapshots_taken,
            snapshots_restored: self.snapshots_restored,
            outbox: OutboxStatus::of(
                &self.outbox,
                self.config.wall_clock.ms(env.now),
                self.delivered,
                self.delivery_error.clone(),
            ),
        }
    }

    /// The outbox and timers as the state holds them.
    pub fn outbox(&self) -> &OutboxView {
        &self.outbox
    }

    /// What is applied.
    pub fn state(&self) -> Recovered {
        self.state
    }

    /// What a completed sync covered.
    pub fn persisted(&self) -> Lsn {
        self.persisted
    }

    /// Follower, candidate or leader.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The partition's state.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Why the core stopped, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    fn read(&self) -> ProcessorEffect {
        ProcessorEffect::Read {
            from: self.state.applied.next(),
            max: READ_BATCH,
            wait: READ_WAIT,
        }
    }

    fn tick(&mut self, env: &Env, out: &mut Vec<ProcessorEffect>) {
        let now = env.now;
        if self.fetch_retry.is_some_and(|at| now >= at) {
            self.fetch_retry = None;
        }
        if !self.reading && self.restore.is_none() && self.fetch_retry.is_none() {
            self.reading = true;
            out.push(self.read());
        }
        if let Some((at, epoch)) = self.announce_retry {
            if now >= at {
                self.announce_retry = None;
                self.announce(env, epoch, out);
            }
        }
        match self.next_persist {
            None => self.next_persist = Some(now + PERSIST_EVERY),
            Some(at) if now >= at => {
                self.next_persist = Some(now + PERSIST_EVERY);
                self.expire_waiters(now, out);
                self.persist(out);
                self.maybe_snapshot(now, out);
            }
            Some(_) => {}
        }
        match self.next_trim {
            None => self.next_trim = Some(now + TRIM_EVERY),
            Some(at) if now >= at => {
                self.next_trim = Some(now + TRIM_EVERY);
                self.trim(env, out);
            }
            Some(_) => {}
        }
    }

    fn invoke(&mut self, env: &Env, token: Token, req: Invoke, out: &mut Vec<ProcessorEffect>) {
        let mut reply = |reply| out.push(ProcessorEffect::Reply { token, reply });
        // A peer's request is checked as the ingress checks a client's: a
        // malformed one is answered (400, certainly not applied) and never
        // joins a batch, where it would fail every request with it.
        if let Err(why) = req.check(
            self.config.partition,
            self.config.partitions,
            &self.config.objects,
        ) {
            return reply(InvokeReply::Done(Response::error(
                &HandlerError::BadArgument(why),
            )));
        }
        if let Err(refusal) = self.serving(env) {
            return reply(refusal);
        }
        let now_ms = self.config.wall_clock.ms(env.now);
        // A repeat of a request already applied is answered from its stored
        // result (an optimisation: applying it again would find the same).
        match Applier::new(
            &self.store,
            self.state,
            &self.config.objects,
            self.config.partitions,
        )
        .dedup(&req.request_id, now_ms)
        {
            Ok(Some(response)) => return reply(InvokeReply::Done(response)),
            Ok(None) => {}
            Err(e) => return reply(InvokeReply::Unavailable(format!("storage failed: {e}"))),
        }
        let wait = Duration::from_millis(req.timeout_ms.clamp(1, MAX_REQUEST_WAIT_MS));
        let known = self.waiters.contains_key(&req.request_id);
        // A repeat of a request already handed to the log shares its fate.
        let appended = self
            .waiters
            .get(&req.request_id)
            .is_some_and(|ws| ws.iter().any(|w| w.appended));
        self.waiters
            .entry(req.request_id.clone())
            .or_default()
            .push(Waiter {
                token,
                deadline: env.now + wait,
                appended,
            });
        if !known {
            // Only a client key's result outlives the internal retention,
            // and only the leader's setting counts: it is in the record.
            let retention_ms = req
                .request_id
                .starts_with("u:")
                .then_some(self.config.idempotency_retention_ms);
            self.pending.push(Invocation {
                epoch: self.epoch,
                request_id: req.request_id,
                timestamp_ms: now_ms,
                retention_ms,
                object: req.object,
                key: req.key,
                handler: req.handler,
                arg: req.arg,
            });
            self.schedule_flush(out);
        }
    }

    /// Whether this node serves requests now: a leader in its reign that
    /// reaches a majority; otherwise the answer to give.
    fn serving(&self, env: &Env) -> Result<(), InvokeReply> {
        match self.mode {
            Mode::Leader if env.has_majority() => Ok(()),
            Mode::Leader => Err(InvokeReply::Unavailable(
                "leader cannot reach a majority".into(),
            )),
            Mode::Candidate => Err(InvokeReply::Unavailable(
                "leader is announcing its reign".into(),
            )),
            Mode::Follower => Err(InvokeReply::NotLeader {
                leader: self.state.leader.filter(|l| *l != env.me),
            }),
        }
    }

    /// Another partition's leader delivers messages: what is already here
    /// is acknowledged at once; the rest is appended as one `Deliver`
    /// record and acknowledged when it applies.
    fn deliver_in(
        &mut self,
        env: &Env,
        token: Token,
        req: Deliver,
        out: &mut Vec<ProcessorEffect>,
    ) {
        let mut reply = |reply| out.push(ProcessorEffect::Reply { token, reply });
        if let Err(why) = req.check(self.config.partition, self.config.partitions) {
            return reply(InvokeReply::Done(Response::error(
                &HandlerError::BadArgument(why),
            )));
        }
        if let Err(refusal) = self.serving(env) {
            return reply(refusal);
        }
        let mark = match inbox_mark(&self.store, req.from) {
            Ok(mark) => mark,
            Err(e) => return reply(InvokeReply::Unavailable(format!("storage failed: {e}"))),
        };
        let (first, last) = match (req.messages.first(), req.messages.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return,
        };
        if last <= mark || first > mark + 1 {
            // Held already, or it would overtake a message not yet here:
            // the mark tells the sender where to go on from.
            return reply(InvokeReply::Done(Response::ok(
                &serde_json::json!({ "accepted": mark }),
            )));
        }
        let now_ms = self.config.wall_clock.ms(env.now);
        let delivery = Delivery {
            epoch: self.epoch,
            timestamp_ms: now_ms,
            from: req.from,
            messages: req.messages,
        };
        let id = delivery.id();
        let wait = Duration::from_millis(req.timeout_ms.clamp(1, MAX_REQUEST_WAIT_MS));
        let known = self.waiters.contains_key(&id);
        self.waiters.entry(id.clone()).or_default().push(Waiter {
            token,
            deadline: env.now + wait,
            appended: true,
        });
        if known {
            return;
        }
        self.append_one(
            AppendOp::Delivery { id },
            Command::Deliver(delivery),
            wait,
            out,
        );
    }

    /// The leader's delivery loop: fires due timers, appends the
    /// acknowledgements received, and sends each target partition the
    /// messages it does not hold yet (one delivery per target at a time).
    fn pump(&mut self, env: &Env, out: &mut Vec<ProcessorEffect>) {
        // Without a reign and a majority nothing is sent; the periodic tick
        // (every PERSIST_EVERY) looks again.
        self.outbox_wake = None;
        if self.mode != Mode::Leader || !env.has_majority() {
            return;
        }
        let may_append = self.outbox_append_after.is_none_or(|at| env.now >= at);
        let now_ms = self.config.wall_clock.ms(env.now);
        // Due by this leader's clock, or by the log's (a previous leader's
        // clock may have run ahead): applying the record fires it either way.
        let clock_ms = now_ms.max(self.state.clock_ms);
        if may_append
            && !self.firing
            && self.outbox.next_timer_ms.is_some_and(|due| due <= clock_ms)
        {
            self.firing = true;
            let record = Command::FireTimers {
                epoch: self.epoch,
                timestamp_ms: now_ms,
            };
            self.append_one(AppendOp::Fire, record, OUTBOX_APPEND_TIMEOUT, out);
        }
        if may_append && !self.acking && !self.acks.is_empty() {
            self.acking = true;
            let acks: Vec<(PartitionId, u64)> =
                std::mem::take(&mut self.acks).into_iter().collect();
            let record = Command::Acked { acks: acks.clone() };
            self.append_one(AppendOp::Acks { acks }, record, OUTBOX_APPEND_TIMEOUT, out);
        }
        let lanes: Vec<_> = self.outbox.lanes.iter().map(|(p, l)| (*p, *l)).collect();
        for (to, lane) in lanes {
            let sending = self.sending.entry(to).or_default();
            if sending.in_flight.is_some() || sending.retry_at.is_some_and(|at| env.now < at) {
                continue;
            }
            let from = lane.acked.max(sending.accepted) + 1;
            if from > lane.sent {
                continue;
            }
            let messages = match queued(&self.store, to, from, DELIVER_BATCH) {
                Ok(m) if !m.is_empty() => m,
                Ok(_) => continue,
                Err(e) => return self.fail(e, out),
            };
            let call = CallId(self.next_call);
            self.next_call += 1;
            let sending = self.sending.entry(to).or_default();
            sending.in_flight = Some(call);
            out.push(ProcessorEffect::Deliver {
                call,
                to: sending.hint,
                fresh: sending.fresh,
                req: Deliver {
                    partition: to,
                    from: self.config.partition,
                    messages,
                    timeout_ms: DELIVER_TIMEOUT.as_millis() as u64,
                },
                timeout: DELIVER_TIMEOUT,
            });
        }
        let timer = self
            .outbox
            .next_timer_ms
            .filter(|due| !self.firing && *due > clock_ms)
            .map(|due| env.now + Duration::from_millis(due - clock_ms));
        let retry = self
            .sending
            .values()
            .filter_map(|s| s.retry_at)
            .filter(|at| *at > env.now)
            .min();
        let append = self.outbox_append_after.filter(|at| *at > env.now);
        self.outbox_wake = [timer, retry, append].into_iter().flatten().min();
    }

    /// A target's answer to a delivery.
    fn delivered(&mut self, env: &Env, call: CallId, reply: Result<InvokeReply, String>) {
        let Some((&to, sending)) = self
            .sending
            .iter_mut()
            .find(|(_, s)| s.in_flight == Some(call))
        else {
            return;
        };
        sending.in_flight = None;
        let accepted = match &reply {
            Ok(InvokeReply::Done(r)) if r.status == 200 => {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["accepted"].as_u64())
            }
            _ => None,
        };
        let failure = match (accepted, reply) {
            (Some(mark), _) => {
                let lane = self.outbox.lanes.get(&to).copied().unwrap_or_default();
                let before = sending.accepted.max(lane.acked);
                self.delivered += mark.saturating_sub(before);
                sending.accepted = sending.accepted.max(mark);
                sending.backoff = Duration::ZERO;
                sending.retry_at = None;
                sending.fresh = false;
                self.delivery_error = None;
                if mark > lane.acked {
                    let ack = self.acks.entry(to).or_default();
                    *ack = (*ack).max(mark);
                }
                return;
            }
            (None, Ok(InvokeReply::NotLeader { leader })) => {
                sending.hint = leader;
                sending.fresh = leader.is_none();
                match leader {
                    Some(l) => format!("the node asked does not lead partition {to} ({l} does)"),
                    None => format!("the node asked does not lead partition {to}"),
                }
            }
            (None, Ok(InvokeReply::Done(r))) => format!(
                "partition {to} refused a delivery ({}): {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            (None, Ok(other)) => {
                sending.hint = None;
                format!("partition {to}: {other:?}")
            }
            (None, Err(e)) => {
                sending.hint = None;
                e
            }
        };
        sending.backoff = (sending.backoff * 2).clamp(DELIVER_RETRY_MIN, DELIVER_RETRY_MAX);
        sending.retry_at = Some(env.now + sending.backoff);
        if self.delivery_error.as_deref() != Some(&failure) {
            warn!(partition = %self.config.partition, target = %to, "delivery failed: {failure}");
        }
        self.delivery_error = Some(failure);
    }

    /// Asks for a drain when requests wait and an append slot is free: every
    /// request already queued then joins the batch.
    fn schedule_flush(&mut self, out: &mut Vec<ProcessorEffect>) {
        if !self.drain_asked
            && !self.pending.is_empty()
            && self.appends_in_flight < MAX_APPENDS_IN_FLIGHT
        {
            self.drain_asked = true;
            out.push(ProcessorEffect::Drain);
        }
    }

    /// Appends `batch` (stamped with the current epoch) in one append slot.
    fn append(&mut self, env: &Env, batch: Vec<Invocation>, out: &mut Vec<ProcessorEffect>) {
        for inv in &batch {
            for w in self.waiters.get_mut(&inv.request_id).into_iter().flatten() {
                w.appended = true;
            }
        }
        let records: Vec<Record> = batch
            .iter()
            .map(|inv| Record(Command::Invoke(inv.clone()).encode()))
            .collect();
        let deadline = batch
            .iter()
            .filter_map(|inv| self.waiters.get(&inv.request_id))
            .flatten()
            .map(|w| w.deadline)
            .max()
            .unwrap_or(env.now);
        let timeout = deadline
            .saturating_duration_since(env.now)
            .max(MIN_APPEND_TIMEOUT);
        let op = self.op();
        self.appends_in_flight += 1;
        self.appends.insert(
            op,
            AppendOp::Requests {
                batch,
                epoch: self.epoch,
            },
        );
        out.push(ProcessorEffect::Append {
            op,
            records,
            timeout,
        });
    }

    fn appended(
        &mut self,
        env: &Env,
        op: OpId,
        result: Result<Lsn, AppendError>,
        out: &mut Vec<ProcessorEffect>,
    ) {
        match self.appends.remove(&op) {
            None => {}
            Some(AppendOp::Announce { epoch }) => {
                if let Err(e) = result {
                    if self.mode == Mode::Candidate && self.epoch == epoch {
                        warn!(partition = %self.config.partition, %epoch, "announcement not appended ({e}); retrying");
                        self.mode = Mode::Follower;
                        self.announce_retry = Some((env.now + ANNOUNCE_RETRY, epoch));
                    }
                }
            }
            Some(AppendOp::Delivery { id }) => {
                if let Err(e) = result {
                    // The sender tries again (a delivery applies once).
                    let reply = match e {
                        AppendError::TooLarge { .. } | AppendError::UnknownLog(_) => {
                            InvokeReply::Unavailable(e.to_string())
                        }
                        _ => InvokeReply::Timeout,
                    };
                    for w in self.waiters.remove(&id).unwrap_or_default() {
                        out.push(ProcessorEffect::Reply {
                            token: w.token,
                            reply: reply.clone(),
                        });
                    }
                }
            }
            Some(AppendOp::Acks { acks }) => {
                self.acking = false;
                if result.is_err() {
                    self.outbox_append_after = Some(env.now + OUTBOX_APPEND_RETRY);
                    // Still true: appended with the next round.
                    if self.mode == Mode::Leader {
                        for (to, mark) in acks {
                            let ack = self.acks.entry(to).or_default();
                            *ack = (*ack).max(mark);
                        }
                    }
                }
            }
            Some(AppendOp::Fire) => {
                self.firing = false;
                if result.is_err() {
                    self.outbox_append_after = Some(env.now + OUTBOX_APPEND_RETRY);
                }
            }
            Some(AppendOp::Requests { batch, epoch }) => {
                match result {
                    Ok(_) => {}
                    Err(e @ (AppendError::TooLarge { .. } | AppendError::UnknownLog(_))) => {
                        // Certainly not in the log, and never will be.
                        let reason = e.to_string();
                        for inv in &batch {
                            for w in self.waiters.remove(&inv.request_id).unwrap_or_default() {
                                out.push(ProcessorEffect::Reply {
                                    token: w.token,
                                    reply: InvokeReply::Unavailable(reason.clone()),
                                });
                            }
                        }
                    }
                    Err(e) => {
                        let still_waiting: Vec<Invocation> = batch
                            .into_iter()
                            .filter(|inv| {
                                self.waiters
                                    .get(&inv.request_id)
                                    .is_some_and(|ws| ws.iter().any(|w| w.deadline > env.now))
                            })
                            .collect();
                        if self.mode != Mode::Follower
                            && self.epoch == epoch
                            && !still_waiting.is_empty()
                        {
                            warn!(partition = %self.config.partition, "append failed ({e}); retrying {} requests", still_waiting.len());
                            // The retry takes a slot of its own.
                            self.append(env, still_waiting, out);
                        }
                    }
                }
                // This slot is free again: requests that gathered meanwhile may go.
                self.appends_in_flight -= 1;
                self.schedule_flush(out);
            }
        }
    }

    fn announce(&mut self, env: &Env, epoch: Epoch, out: &mut Vec<ProcessorEffect>) {
        if self.desired != Some(epoch) || (self.mode != Mode::Follower && self.epoch == epoch) {
            return;
        }
        info!(partition = %self.config.partition, %epoch, "announcing leadership");
        self.mode = Mode::Candidate;
        self.epoch = epoch;
        if !self.awaiting_reign {
            self.awaiting_reign = true;
            out.push(ProcessorEffect::Watch {
                what: format!("reign of epoch {epoch} (own announcement applied)"),
                limit: REIGN_WAIT,
            });
        }
        let record = Command::AnnounceLeader {
            epoch,
            node: env.me,
        };
        self.append_one(AppendOp::Announce { epoch }, record, ANNOUNCE_TIMEOUT, out);
    }

    /// Appends the one record `command`, remembered as `op` until it is
    /// answered.
    fn append_one(
        &mut self,
        op: AppendOp,
        command: Command,
        timeout: Duration,
        out: &mut Vec<ProcessorEffect>,
    ) {
        let id = self.op();
        self.appends.insert(id, op);
        out.push(ProcessorEffect::Append {
            op: id,
            records: vec![Record(command.encode())],
            timeout,
        });
    }

    fn end_reign_wait(&mut self, out: &mut Vec<ProcessorEffect>) {
        if self.awaiting_reign {
            self.awaiting_reign = false;
            out.push(ProcessorEffect::Unwatch);
        }
    }

    fn step_down(&mut self, leader: Option<NodeId>, out: &mut Vec<ProcessorEffect>) {
        self.mode = Mode::Follower;
        self.end_reign_wait(out);
        self.pending.clear();
        // The next leader delivers from the state; what this one knew of
        // its targets goes (a redelivery is dropped by the target's mark).
        self.sending.clear();
        self.acks.clear();
        // Requests never handed to the log certainly did not happen; the
        // others will be answered when their records apply (fenced or done)
        // or at their deadline.
        for waiters in self.waiters.values_mut() {
            waiters.retain(|w| {
                if w.appended {
                    return true;
                }
                out.push(ProcessorEffect::Reply {
                    token: w.token,
                    reply: InvokeReply::NotLeader { leader },
                });
                false
            });
        }
        self.waiters.retain(|_, w| !w.is_empty());
    }

    /// Applies one batch of the log. Every record's effect and the applied
    /// LSN land in one write, or (on a storage error) nothing does.
    fn apply(&mut self, env: &Env, records: Vec<(Lsn, Record)>, out: &mut Vec<ProcessorEffect>) {
        if records.is_empty() {
            return;
        }
        let done = Self::apply_batch(
            &self.store,
            self.state,
            &self.config,
            env.me,
            self.epoch,
            records,
        )
        .and_then(|(write, batch)| {
            self.store.apply(write)?;
            Ok(batch)
        });
        let batch = match done {
            Ok(batch) => batch,
            Err(e) => {
                // Never read a storage failure as "absent" and never write
                // half a batch: stop; the host restarts this processor,
                // which replays from its last durable LSN. (A store write cut
                // short is completed when the store is reopened.)
                return self.fail(e, out);
            }
        };
        self.state = batch.state;
        self.last_applied_at = Some(env.now);
        if batch.outbox_changed {
            match read_outbox(&self.store) {
                Ok(view) => self.outbox = view,
                Err(e) => return self.fail(e, out),
            }
        }
        for (id, outcome) in batch.outcomes {
            let reply = match outcome {
                Outcome::Done(response) => InvokeReply::Done(response),
                Outcome::Fenced { .. } => InvokeReply::Fenced,
            };
            for w in self.waiters.remove(&id).unwrap_or_default() {
                out.push(ProcessorEffect::Reply {
                    token: w.token,
                    reply: reply.clone(),
                });
            }
        }
        if let Some(epoch) = batch.reign {
            if self.mode == Mode::Candidate {
                info!(partition = %self.config.partition, %epoch, lsn = %self.state.applied, "reign started");
                self.mode = Mode::Leader;
                self.end_reign_wait(out);
                out.push(ProcessorEffect::MoveSequencerHere);
            }
        }
        if self.mode != Mode::Follower && self.state.announced > self.epoch {
            info!(partition = %self.config.partition, announced = %self.state.announced, "deposed by a newer epoch");
            self.step_down(self.state.leader, out);
        }
        if self.state.announced > self.epoch && !self.waiters.is_empty() {
            // Every request still waiting here was stamped with an older epoch
            // and was not applied before the newer announcement: whatever of
            // it is in the log now is fenced. Say so at once, so the ingress
            // retries at the new leader instead of waiting out its deadline.
            for (_, waiters) in std::mem::take(&mut self.waiters) {
                for w in waiters {
                    out.push(ProcessorEffect::Reply {
                        token: w.token,
                        reply: InvokeReply::Fenced,
                    });
                }
            }
        }
    }

    /// Runs `records` through an applier over `store` at `state`.
    fn apply_batch(
        store: &S,
        state: Recovered,
        config: &ProcessorConfig,
        me: NodeId,
        epoch: Epoch,
        records: Vec<(Lsn, Record)>,
    ) -> Result<(crate::storage::PartitionWrite, Batch), StorageError> {
        let mut applier =
            Applier::new(store, state, &config.objects, config.partitions).with_bugs(config.bugs);
        let mut outcomes = Vec::new();
        let mut reign = None;
        for (lsn, record) in records {
            if lsn <= applier.applied() {
                continue;
            }
            match applier.apply(lsn, &record.0)? {
                Applied::Nothing => {}
                Applied::Announced {
                    epoch: announced,
                    node,
                    current,
                } => {
                    if current && node == me && announced == epoch {
                        reign = Some(announced);
                    }
                }
                Applied::Request(id, outcome) => outcomes.push((id, outcome)),
            }
        }
        let after = Recovered {
            applied: applier.applied(),
            announced: applier.announced,
            leader: applier.leader,
            clock_ms: applier.clock_ms(),
        };
        let outbox_changed = applier.outbox_changed();
        let (write, _) = applier.finish()?;
        Ok((
            write,
            Batch {
                state: after,
                outcomes,
                reign,
                outbox_changed,
            },
        ))
    }

    /// Answers waiters whose deadline passed (their outcome is unknown).
    fn expire_waiters(&mut self, now: Instant, out: &mut Vec<ProcessorEffect>) {
        for waiters in self.waiters.values_mut() {
            waiters.retain(|w| {
                if w.deadline > now {
                    return true;
                }
                let reply = if w.appended {
                    InvokeReply::Timeout
                } else {
                    InvokeReply::Unavailable(
                        "deadline passed before the request was appended".into(),
                    )
                };
                out.push(ProcessorEffect::Reply {
                    token: w.token,
                    reply,
                });
                false
            });
        }
        self.waiters.retain(|_, w| !w.is_empty());
    }

    fn persist(&mut self, out: &mut Vec<ProcessorEffect>) {
        if self.persisting || self.persisted >= self.state.applied {
            return;
        }
        self.persisting = true;
        out.push(ProcessorEffect::SyncState {
            upto: self.state.applied,
        });
    }

    /// A leader asks every replica how far it persisted.
    fn trim(&mut self, env: &Env, out: &mut Vec<ProcessorEffect>) {
        if self.mode != Mode::Leader {
            return;
        }
        let peers: Vec<NodeId> = env.peers().collect();
        let mut round = TrimRound {
            calls: BTreeMap::new(),
            snapshots: self.latest_snapshot.into_iter().collect(),
            nodes: peers.len() + 1,
        };
        for to in peers {
            let call = CallId(self.next_call);
            self.next_call += 1;
            round.calls.insert(call, to);
            out.push(ProcessorEffect::Call {
                to,
                call,
                req: GetPersisted {
                    partition: self.config.partition,
                },
                timeout: PERSISTED_TIMEOUT,
            });
        }
        self.trim_round = Some(round);
        self.trim_round_progress(out);
    }

    fn persisted_of(
        &mut self,
        call: CallId,
        node: NodeId,
        reply: Result<PersistedReply, CallError>,
        out: &mut Vec<ProcessorEffect>,
    ) {
        let Some(round) = &mut self.trim_round else {
            return;
        };
        if round.calls.remove(&call).is_none_or(|to| to != node) {
            return;
        }
        if let Ok(reply) = reply {
            round.snapshots.extend(reply.snapshot);
        }
        self.trim_round_progress(out);
    }

    /// Once every replica answered or failed to: trims below [`trim_bound`].
    fn trim_round_progress(&mut self, out: &mut Vec<ProcessorEffect>) {
        let Some(round) = &self.trim_round else {
            return;
        };
        if !round.calls.is_empty() {
            return;
        }
        let bound = trim_bound(&round.snapshots, round.nodes, self.persisted);
        self.trim_round = None;
        if let Some(bound) = bound {
            out.push(ProcessorEffect::Trim {
                below: bound.next(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::bugs::Bug;
    use crate::sim::store_partition::{SharedDisk, SimPartitionStore};
    use std::collections::BTreeSet;

    const P: PartitionId = PartitionId(0);
    /// The wall clock's reading at the rig's origin.
    const WALL0: u64 = 1_000_000;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    /// A log shared by the replicas of a test: record `i` is at LSN `i + 1`.
    #[derive(Default)]
    struct Log(Vec<Record>);

    impl Log {
        fn append(&mut self, records: &[Record]) -> Lsn {
            self.0.extend_from_slice(records);
            Lsn((self.0.len() - records.len() + 1) as u64)
        }
        fn command(&mut self, command: Command) -> Lsn {
            self.append(&[Record(command.encode())])
        }
        fn range(&self, from: u64, to: u64) -> Vec<(Lsn, Record)> {
            (from..=to)
                .map(|lsn| (Lsn(lsn), self.0[lsn as usize - 1].clone()))
                .collect()
        }
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
    }

    /// One node's processor over a simulated disk, on nodes 1..=3.
    struct Rig {
        core: ProcessorCore<SimPartitionStore>,
        disk: SharedDisk,
        t0: Instant,
        me: NodeId,
        bugs: BugSet,
        /// Applied records between two scheduled snapshots.
        every: u64,
    }

    impl Rig {
        fn new(me: u32) -> Self {
            Rig::with_bugs(me, BugSet::NONE)
        }

        fn with_bugs(me: u32, bugs: BugSet) -> Self {
            Rig::with(me, bugs, 0)
        }

        /// A processor that snapshots every `every` applied records.
        fn snapshotting(me: u32, every: u64) -> Self {
            Rig::with(me, BugSet::NONE, every)
        }

        fn with(me: u32, bugs: BugSet, every: u64) -> Self {
            let disk = SharedDisk::default();
            let t0 = Instant::now();
            let core = Rig::open(&disk, t0, bugs, every, None);
            Rig {
                core,
                disk,
                t0,
                me: n(me),
                bugs,
                every,
            }
        }

        fn open(
            disk: &SharedDisk,
            t0: Instant,
            bugs: BugSet,
            every: u64,
            held: Option<Lsn>,
        ) -> ProcessorCore<SimPartitionStore> {
            let config = ProcessorConfig {
                partition: P,
                partitions: 1,
                wall_clock: WallClock {
                    at: t0,
                    unix_ms: WALL0,
                },
                bugs,
                snapshot_every: every,
                snapshot_held: held,
                idempotency_retention_ms:
                    crate::actors::partition_processor::core::USER_KEY_RETENTION_MS,
                objects: crate::objects::demo::objects(),
            };
            let store = SimPartitionStore::open(disk.clone(), P).unwrap();
            ProcessorCore::new(config, store).unwrap()
        }

        /// The processor restarted on the same disk (nothing lost, its
        /// snapshots still held).
        fn restart(&mut self) {
            let held = self.core.latest_snapshot();
            self.core = Rig::open(&self.disk, self.t0, self.bugs, self.every, held);
        }

        fn env(&self, at: u64, suspected: &[u32]) -> Env {
            Env {
                now: self.t0 + ms(at),
                me: self.me,
                nodes: vec![n(1), n(2), n(3)],
                suspected: suspected.iter().map(|i| n(*i)).collect::<BTreeSet<_>>(),
            }
        }

        fn feed(&mut self, at: u64, input: ProcessorInput) -> Vec<ProcessorEffect> {
            self.feed_cut(at, &[], input)
        }

        fn feed_cut(
            &mut self,
            at: u64,
            suspected: &[u32],
            input: ProcessorInput,
        ) -> Vec<ProcessorEffect> {
            let env = self.env(at, suspected);
            self.core.handle(&env, input)
        }

        fn deliver(&mut self, at: u64, records: Vec<(Lsn, Record)>) -> Vec<ProcessorEffect> {
            self.feed(
                at,
                ProcessorInput::Records {
                    records: Ok(records),
                },
            )
        }

        fn invoke(&mut self, at: u64, token: Token, req: Invoke) -> Vec<ProcessorEffect> {
            self.feed(at, ProcessorInput::Invoke { token, req })
        }
    }

    fn read(from: u64) -> ProcessorEffect {
        ProcessorEffect::Read {
            from: Lsn(from),
            max: READ_BATCH,
            wait: READ_WAIT,
        }
    }

    fn req(id: &str, handler: &str, arg: &str, timeout_ms: u64) -> Invoke {
        Invoke {
            partition: P,
            request_id: id.into(),
            object: "Counter".into(),
            key: "k".into(),
            handler: handler.into(),
            arg: arg.as_bytes().to_vec(),
            timeout_ms,
        }
    }

    fn add(id: &str, delta: i64) -> Invoke {
        req(id, "add", &delta.to_string(), 1000)
    }

    fn announce(epoch: u64, node: u32) -> Command {
        Command::AnnounceLeader {
            epoch: Epoch(epoch),
            node: n(node),
        }
    }

    fn invocation(epoch: u64, id: &str, ts: u64, handler: &str, arg: &str) -> Command {
        Command::Invoke(Invocation {
            epoch: Epoch(epoch),
            request_id: id.into(),
            timestamp_ms: ts,
            retention_ms: None,
            object: "Counter".into(),
            key: "k".into(),
            handler: handler.into(),
            arg: arg.as_bytes().to_vec(),
        })
    }

    fn done(body: &str) -> InvokeReply {
        InvokeReply::Done(Response {
            status: 200,
            body: body.as_bytes().to_vec(),
        })
    }

    fn reply(token: Token, reply: InvokeReply) -> ProcessorEffect {
        ProcessorEffect::Reply { token, reply }
    }

    /// The appends among `effects`: op, records, timeout.
    fn appends(effects: &[ProcessorEffect]) -> Vec<(OpId, Vec<Record>, Duration)> {
        effects
            .iter()
            .filter_map(|e| match e {
                ProcessorEffect::Append {
                    op,
                    records,
                    timeout,
                } => Some((*op, records.clone(), *timeout)),
                _ => None,
            })
            .collect()
    }

    /// The request ids of an append's records.
    fn ids(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match Command::decode(&r.0).unwrap() {
                Command::Invoke(inv) => inv.request_id,
                other => panic!("not a request: {other:?}"),
            })
            .collect()
    }

    /// `me` leads at epoch 1 (its announcement at LSN 1 of `log`), at 0 ms.
    fn leader(me: u32, log: &mut Log) -> Rig {
        let mut r = Rig::new(me);
        lead(&mut r, 1, log);
        r
    }

    /// `r` ticks, is told to lead at `epoch`, and applies its announcement.
    fn lead(r: &mut Rig, epoch: u64, log: &mut Log) {
        let from = log.len() + 1;
        r.feed(0, ProcessorInput::Tick);
        let effects = r.feed(
            0,
            ProcessorInput::BecomeLeader {
                epoch: Epoch(epoch),
            },
        );
        let [(op, records, _)] = &appends(&effects)[..] else {
            panic!("one announcement: {effects:?}");
        };
        let lsn = log.append(records);
        r.feed(
            0,
            ProcessorInput::Appended {
                op: *op,
                result: Ok(lsn),
            },
        );
        let effects = r.deliver(0, log.range(from, log.len()));
        assert!(
            effects.contains(&ProcessorEffect::MoveSequencerHere),
            "{effects:?}"
        );
        assert_eq!(r.core.mode(), Mode::Leader);
    }

    /// The leader `r` takes `req` (token `token`) and appends it alone.
    fn appended_alone(r: &mut Rig, at: u64, token: Token, req: Invoke) -> (OpId, Vec<Record>) {
        assert_eq!(r.invoke(at, token, req), vec![ProcessorEffect::Drain]);
        let effects = r.feed(at, ProcessorInput::Drained);
        let [(op, records, _)] = &appends(&effects)[..] else {
            panic!("one append: {effects:?}");
        };
        (*op, records.clone())
    }

    fn account(id: &str, ts: u64, key: &str, handler: &str, arg: serde_json::Value) -> Command {
        Command::Invoke(Invocation {
            epoch: Epoch(1),
            request_id: id.into(),
            timestamp_ms: ts,
            retention_ms: None,
            object: "Account".into(),
            key: key.into(),
            handler: handler.into(),
            arg: serde_json::to_vec(&arg).unwrap(),
        })
    }

    /// The deliveries among `effects`: call, hinted node, request.
    fn deliveries(effects: &[ProcessorEffect]) -> Vec<(CallId, Option<NodeId>, Deliver)> {
        effects
            .iter()
            .filter_map(|e| match e {
                ProcessorEffect::Deliver { call, to, req, .. } => Some((*call, *to, req.clone())),
                _ => None,
            })
            .collect()
    }

    /// Appends `records` to `log`, tells `r` the append `op` succeeded and
    /// lets it apply them.
    fn append_and_apply(
        r: &mut Rig,
        at: u64,
        log: &mut Log,
        op: OpId,
        records: &[Record],
    ) -> Vec<ProcessorEffect> {
        let from = log.len() + 1;
        let lsn = log.append(records);
        let mut effects = r.feed(
            at,
            ProcessorInput::Appended {
                op,
                result: Ok(lsn),
            },
        );
        effects.extend(r.deliver(at, log.range(from, log.len())));
        effects
    }

    #[test]
    fn a_leader_moves_a_sick_remote_sequencer_here_at_most_every_five_seconds() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let moves = |effects: Vec<ProcessorEffect>| {
            effects
                .iter()
                .filter(|e| **e == ProcessorEffect::MoveSequencerHere)
                .count()
        };
        let seen = |sequencer, sick| ProcessorInput::TailSequencer {
            sequencer: NodeId(sequencer),
            sick,
        };
        // Its own, or a healthy one elsewhere: stays.
        assert_eq!(moves(r.feed(1_000, seen(1, false))), 0);
        assert_eq!(moves(r.feed(1_000, seen(3, false))), 0);
        // A sick one elsewhere moves, then not again for five seconds.
        assert_eq!(moves(r.feed(1_000, seen(3, true))), 1);
        assert_eq!(moves(r.feed(5_999, seen(3, true))), 0);
        assert_eq!(moves(r.feed(6_000, seen(3, true))), 1);
        // A follower never moves it.
        let mut f = Rig::new(2);
        f.feed(0, ProcessorInput::Tick);
        assert_eq!(moves(f.feed(1_000, seen(3, true))), 0);
    }

    #[test]
    fn the_leader_delivers_its_outbox_and_appends_the_acknowledgements() {
        // One partition: the core is sender and receiver at once.
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        log.command(account("g:1", WALL0, "a", "deposit", serde_json::json!(10)));
        log.command(account(
            "g:2",
            WALL0,
            "a",
            "transfer",
            serde_json::json!({"to": "b", "amount": 4}),
        ));
        let effects = r.deliver(5, log.range(2, 3));
        let [(call, None, req)] = &deliveries(&effects)[..] else {
            panic!("one delivery: {effects:?}");
        };
        assert_eq!(
            (
                req.partition,
                req.from,
                req.messages.len(),
                req.messages[0].seq
            ),
            (P, P, 1, 1)
        );
        assert_eq!(r.core.status(&r.env(5, &[])).outbox.depth, 1);
        // No second delivery while one is out.
        assert!(deliveries(&r.feed(6, ProcessorInput::Tick)).is_empty());

        // As the receiver: appended as one record, answered once applied.
        let effects = r.feed(
            7,
            ProcessorInput::Deliver {
                token: 9,
                req: req.clone(),
            },
        );
        let [(op, records, _)] = &appends(&effects)[..] else {
            panic!("one append: {effects:?}");
        };
        let effects = append_and_apply(&mut r, 8, &mut log, *op, records);
        let accepted = done(r#"{"accepted":1}"#);
        assert!(effects.contains(&reply(9, accepted.clone())), "{effects:?}");
        // A repeat is answered at once, from the inbox mark.
        let effects = r.feed(
            9,
            ProcessorInput::Deliver {
                token: 10,
                req: req.clone(),
            },
        );
        assert_eq!(effects, vec![reply(10, accepted.clone())]);

        // As the sender: the answer makes one acknowledgement record.
        let effects = r.feed(
            10,
            ProcessorInput::Delivered {
                call: *call,
                reply: Ok(accepted),
            },
        );
        let [(op, records, _)] = &appends(&effects)[..] else {
            panic!("one acknowledgement: {effects:?}");
        };
        assert_eq!(
            Command::decode(&records[0].0).unwrap(),
            Command::Acked { acks: vec![(P, 1)] }
        );
        assert!(
            deliveries(&effects).is_empty(),
            "accepted messages are not sent again"
        );
        append_and_apply(&mut r, 11, &mut log, *op, records);
        let status = r.core.status(&r.env(12, &[]));
        assert_eq!((status.outbox.depth, status.outbox.delivered), (0, 1));

        // A failed delivery is retried after a pause, at the hinted node.
        log.command(account(
            "g:3",
            WALL0 + 20,
            "a",
            "transfer",
            serde_json::json!({"to": "b", "amount": 1}),
        ));
        let effects = r.deliver(20, log.range(log.len(), log.len()));
        let [(call, _, req)] = &deliveries(&effects)[..] else {
            panic!("one delivery: {effects:?}");
        };
        assert_eq!(req.messages[0].seq, 2);
        let hint = Ok(InvokeReply::NotLeader { leader: Some(n(2)) });
        assert!(deliveries(&r.feed(
            21,
            ProcessorInput::Delivered {
                call: *call,
                reply: hint
            }
        ))
        .is_empty());
        assert_eq!(r.core.next_wake(), Some(r.t0 + ms(21) + DELIVER_RETRY_MIN));
        let effects = r.feed(41, ProcessorInput::Tick);
        let [(call, Some(to), _)] = &deliveries(&effects)[..] else {
            panic!("a retry at the hinted node: {effects:?}");
        };
        assert_eq!(*to, n(2));
        let effects = r.feed(
            42,
            ProcessorInput::Delivered {
                call: *call,
                reply: Err("timed out".into()),
            },
        );
        assert!(deliveries(&effects).is_empty());
        assert_eq!(
            r.core.status(&r.env(42, &[])).outbox.last_error.as_deref(),
            Some("timed out")
        );
        // A follower delivers nothing.
        r.feed(43, ProcessorInput::BecomeFollower { leader: Some(n(2)) });
        assert!(deliveries(&r.feed(2_000, ProcessorInput::Tick)).is_empty());
    }

    #[test]
    fn a_due_timer_makes_the_leader_append_fire_timers() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let schedule = Command::Invoke(Invocation {
            epoch: Epoch(1),
            request_id: "g:1".into(),
            timestamp_ms: WALL0,
            retention_ms: None,
            object: "Reminder".into(),
            key: "k".into(),
            handler: "schedule".into(),
            arg: br#"{"after_ms": 100}"#.to_vec(),
        });
        log.command(schedule);
        let effects = r.deliver(0, log.range(2, 2));
        assert!(appends(&effects).is_empty(), "not due yet: {effects:?}");
        assert_eq!(r.core.next_wake(), Some(r.t0 + ms(100)));
        // Due, but cut off from the majority: nothing is appended, and the
        // core does not ask to be woken at once over and over.
        let effects = r.feed_cut(100, &[2, 3], ProcessorInput::Tick);
        assert!(appends(&effects).is_empty(), "{effects:?}");
        assert!(r.core.next_wake().unwrap() > r.t0 + ms(100));
        let effects = r.feed(100, ProcessorInput::Tick);
        let [(op, records, _)] = &appends(&effects)[..] else {
            panic!("one append: {effects:?}");
        };
        assert_eq!(
            Command::decode(&records[0].0).unwrap(),
            Command::FireTimers {
                epoch: Epoch(1),
                timestamp_ms: WALL0 + 100
            }
        );
        let effects = append_and_apply(&mut r, 101, &mut log, *op, records);
        let [(_, _, req)] = &deliveries(&effects)[..] else {
            panic!("the fired timer is delivered: {effects:?}");
        };
        assert_eq!(
            (req.messages[0].to.handler.as_str(), req.messages[0].due_ms),
            ("fire", WALL0 + 100)
        );
        assert_eq!(r.core.status(&r.env(101, &[])).outbox.timers, 0);
    }

    #[test]
    fn a_processor_follows_the_log_from_its_applied_lsn_in_order() {
        let mut r = Rig::new(2);
        assert_eq!(r.core.next_wake(), None, "a host ticks once at start");
        assert_eq!(r.feed(0, ProcessorInput::Tick), vec![read(1)]);
        assert_eq!(r.core.next_wake(), Some(r.t0 + PERSIST_EVERY));
        assert_eq!(
            r.feed(100, ProcessorInput::Tick),
            vec![],
            "one read at a time"
        );
        let mut log = Log::default();
        log.command(announce(1, 1));
        log.command(invocation(1, "g:a", 10, "add", "5"));
        assert_eq!(r.deliver(150, log.range(1, 2)), vec![read(3)]);
        let state = r.core.state();
        assert_eq!(
            (state.applied, state.announced, state.leader),
            (Lsn(2), Epoch(1), Some(n(1)))
        );
        // Records already applied change nothing; an empty read or a failed
        // one reads again from the same place.
        assert_eq!(r.deliver(160, log.range(1, 2)), vec![read(3)]);
        assert_eq!(r.deliver(170, vec![]), vec![read(3)]);
        let failed = r.feed(
            180,
            ProcessorInput::Records {
                records: Err(ReadError::UnknownLog(crate::types::LogId(0))),
            },
        );
        assert_eq!(failed, vec![read(3)]);
        assert_eq!(r.core.state(), state);
        // The log was trimmed past what this replica needs: status says so,
        // and a snapshot is fetched instead of reading again.
        let behind = r.feed(185, trimmed(3, 40));
        assert_eq!(
            behind,
            vec![ProcessorEffect::FetchSnapshot { at_least: Lsn(39) }]
        );
        assert_eq!(r.core.status(&r.env(186, &[])).status, "BehindTrim");
        assert_eq!(
            r.feed(190, ProcessorInput::Tick),
            vec![],
            "no read meanwhile"
        );
        // None came: the log is read again a while later.
        let none = Err(FetchError::NoneHeld { at_least: Lsn(39) });
        r.feed(191, ProcessorInput::SnapshotFetched { result: none });
        let status = r.core.status(&r.env(192, &[]));
        assert_eq!(status.status, "BehindTrim");
        assert_eq!(
            status.snapshot_fetch_error.as_deref(),
            Some("no reachable peer holds a snapshot at LSN 39 or later")
        );
        assert!(!r.feed(1190, ProcessorInput::Tick).contains(&read(3)));
        assert_eq!(r.feed(1191, ProcessorInput::Tick), vec![read(3)]);
        log.command(invocation(1, "g:b", 11, "add", "1"));
        assert_eq!(r.deliver(195, log.range(3, 3)), vec![read(4)]);
        assert_ne!(r.core.status(&r.env(196, &[])).status, "BehindTrim");
        let state = r.core.state();
        // A restart resumes from what the store holds.
        r.restart();
        assert_eq!(r.core.state(), state);
        assert_eq!(r.feed(1200, ProcessorInput::Tick), vec![read(4)]);
    }

    /// A read answered: the log starts at `first`, `from` was trimmed.
    fn trimmed(from: u64, first: u64) -> ProcessorInput {
        ProcessorInput::Records {
            records: Err(ReadError::Trimmed {
                log: crate::types::LogId(0),
                from: Lsn(from),
                first: Lsn(first),
            }),
        }
    }

    /// A log of an announcement and `n` additions to the counter.
    fn counting_log(n: u64) -> Log {
        let mut log = Log::default();
        log.command(announce(1, 1));
        for i in 0..n {
            log.command(invocation(1, &format!("g:{i}"), 10 + i, "add", "1"));
        }
        log
    }

    #[test]
    fn a_leader_snapshots_on_schedule_only_after_four_times_as_many_records() {
        let mut log = Log::default();
        let mut r = Rig::snapshotting(1, 3);
        lead(&mut r, 1, &mut log);
        let snapshots = |effects: &[ProcessorEffect]| {
            effects
                .iter()
                .filter(|e| matches!(e, ProcessorEffect::WriteSnapshot { .. }))
                .count()
        };
        let mut at = 100;
        while log.len() < 3 * LEADER_SNAPSHOT_FACTOR - 1 {
            let lsn = log.command(invocation(1, &format!("g:{at}"), at, "add", "1"));
            r.deliver(at, log.range(lsn.0, lsn.0));
            at += 300;
            assert_eq!(
                snapshots(&r.feed(at, ProcessorInput::Tick)),
                0,
                "a leader at {} records: not yet",
                log.len()
            );
        }
        let lsn = log.command(invocation(1, "g:last", at, "add", "1"));
        r.deliver(at, log.range(lsn.0, lsn.0));
        assert_eq!(snapshots(&r.feed(at + 300, ProcessorInput::Tick)), 1);
    }

    #[test]
    fn a_snapshot_is_taken_after_enough_records_and_on_demand() {
        let log = counting_log(5);
        let mut r = Rig::snapshotting(2, 3);
        r.feed(0, ProcessorInput::Tick);
        r.deliver(10, log.range(1, 2));
        assert_eq!(
            r.feed(200, ProcessorInput::Tick),
            vec![ProcessorEffect::SyncState { upto: Lsn(2) }],
            "two records: not yet"
        );
        r.deliver(210, log.range(3, 3));
        let effects = r.feed(400, ProcessorInput::Tick);
        let [ProcessorEffect::WriteSnapshot { snapshot }] = &effects[..] else {
            panic!("{effects:?}");
        };
        assert_eq!((snapshot.partition, snapshot.lsn), (P, Lsn(3)));
        assert_eq!(snapshot.entries, r.core.store().entries().unwrap());
        assert_eq!(r.feed(600, ProcessorInput::Tick), vec![], "one at a time");
        assert_eq!(
            r.core.persisted_reply().snapshot,
            None,
            "not before it is durable"
        );
        r.feed(
            610,
            ProcessorInput::SnapshotWritten {
                lsn: Lsn(3),
                result: Ok(()),
            },
        );
        assert_eq!(r.core.latest_snapshot(), Some(Lsn(3)));
        assert_eq!(
            r.feed(620, ProcessorInput::GetPersisted { token: 4 }),
            vec![ProcessorEffect::RespondPersisted {
                token: 4,
                reply: PersistedReply {
                    persisted: Lsn(0),
                    snapshot: Some(Lsn(3))
                }
            }]
        );
        let status = r.core.status(&r.env(620, &[]));
        assert_eq!(
            (status.snapshot_lsn, status.snapshots_taken),
            (Some(Lsn(3)), 1)
        );
        // On demand: what is held answers at once; a newer state is written.
        let done = |token, lsn: u64| ProcessorEffect::SnapshotDone {
            token,
            result: Ok(Lsn(lsn)),
        };
        assert_eq!(
            r.feed(630, ProcessorInput::TakeSnapshot { token: 1 }),
            vec![done(1, 3)]
        );
        r.deliver(640, log.range(4, 5));
        let effects = r.feed(650, ProcessorInput::TakeSnapshot { token: 2 });
        assert!(
            matches!(&effects[..], [ProcessorEffect::WriteSnapshot { snapshot }] if snapshot.lsn == Lsn(5)),
            "{effects:?}"
        );
        assert_eq!(
            r.feed(651, ProcessorInput::TakeSnapshot { token: 3 }),
            vec![]
        );
        let failed = r.feed(
            660,
            ProcessorInput::SnapshotWritten {
                lsn: Lsn(5),
                result: Err("disk full".into()),
            },
        );
        let err = |token| ProcessorEffect::SnapshotDone {
            token,
            result: Err("disk full".into()),
        };
        assert_eq!(failed, vec![err(2), err(3)]);
        assert_eq!(r.core.latest_snapshot(), Some(Lsn(3)));
        // The schedule waits a while after a failed write.
        assert!(!r
            .feed(800, ProcessorInput::Tick)
            .iter()
            .any(|e| matches!(e, ProcessorEffect::WriteSnapshot { .. })));
        r.deliver(5_700, log.range(6, 6));
        let later = r.feed(5_800, ProcessorInput::Tick);
        assert!(
            later
                .iter()
                .any(|e| matches!(e, ProcessorEffect::WriteSnapshot { snapshot } if snapshot.lsn == Lsn(6))),
            "{later:?}"
        );
        // A restarted processor knows the snapshots its host holds.
        r.restart();
        assert_eq!(r.core.latest_snapshot(), Some(Lsn(3)));
        // Nothing applied: nothing to snapshot.
        let mut empty = Rig::new(3);
        assert_eq!(
            empty.feed(0, ProcessorInput::TakeSnapshot { token: 9 }),
            vec![ProcessorEffect::SnapshotDone {
                token: 9,
                result: Err("nothing applied yet".into())
            }]
        );
    }

    #[test]
    fn behind_the_trim_point_a_replica_restores_a_snapshot_and_follows_the_log() {
        let mut log = counting_log(5);
        // N1 applied LSNs 1..=6; its state at 6 is the snapshot.
        let mut n1 = Rig::new(1);
        n1.feed(0, ProcessorInput::Tick);
        n1.deliver(10, log.range(1, 6));
        let snapshot = Snapshot {
            partition: P,
            lsn: Lsn(6),
            entries: n1.core.store().entries().unwrap(),
        };
        // N2 applied 1..=2, then the log was trimmed: it starts at 7.
        let mut n2 = Rig::new(2);
        n2.feed(0, ProcessorInput::Tick);
        n2.deliver(10, log.range(1, 2));
        assert_eq!(
            n2.feed(20, trimmed(3, 7)),
            vec![ProcessorEffect::FetchSnapshot { at_least: Lsn(6) }]
        );
        assert_eq!(n2.core.status(&n2.env(21, &[])).status, "BehindTrim");
        n2.feed(
            30,
            ProcessorInput::SnapshotSource {
                from: n(1),
                lsn: Lsn(6),
            },
        );
        let status = n2.core.status(&n2.env(31, &[]));
        assert_eq!(status.status, "RestoringSnapshot");
        assert_eq!(
            status.restoring,
            Some(RestoreView {
                at_least: Lsn(6),
                from: Some(n(1)),
                lsn: Some(Lsn(6))
            })
        );
        let effects = n2.feed(
            40,
            ProcessorInput::SnapshotFetched {
                result: Ok(snapshot.clone()),
            },
        );
        assert_eq!(
            effects,
            vec![
                ProcessorEffect::SyncState { upto: Lsn(6) },
                read(7),
                ProcessorEffect::WriteSnapshot {
                    snapshot: snapshot.clone()
                },
            ],
            "synced, following the log after the snapshot, and kept"
        );
        assert_eq!(n2.core.state(), n1.core.state());
        assert_eq!(n2.core.store().dump(), n1.core.store().dump());
        let status = n2.core.status(&n2.env(41, &[]));
        assert_eq!(
            (status.status.as_str(), status.snapshots_restored),
            ("Active", 1)
        );
        // Both apply what follows alike.
        log.command(invocation(1, "g:next", 100, "add", "1"));
        n1.deliver(50, log.range(7, 7));
        n2.deliver(50, log.range(7, 7));
        assert_eq!(n2.core.store().dump(), n1.core.store().dump());
        // A restart keeps the restored state.
        n2.restart();
        assert_eq!(n2.core.state(), n1.core.state());
    }

    #[test]
    fn an_unfit_snapshot_is_refused_and_fetched_again_later() {
        let log = counting_log(5);
        let mut n1 = Rig::new(1);
        n1.feed(0, ProcessorInput::Tick);
        n1.deliver(10, log.range(1, 6));
        let good = Snapshot {
            partition: P,
            lsn: Lsn(6),
            entries: n1.core.store().entries().unwrap(),
        };
        let mut other = good.clone();
        other.partition = PartitionId(1);
        let mut older = good.clone();
        older.lsn = Lsn(4);
        let mut lying = good.clone();
        lying.lsn = Lsn(7);
        let mut foreign = good.clone();
        foreign.entries.insert(0, (b"\x00journal".to_vec(), vec![]));
        let mut n2 = Rig::new(2);
        n2.feed(0, ProcessorInput::Tick);
        n2.deliver(10, log.range(1, 2));
        let before = (n2.core.state(), n2.core.store().dump());
        let mut at = 1_000;
        for bad in [other, older, lying, foreign] {
            assert_eq!(
                n2.feed(at, trimmed(3, 6)),
                vec![ProcessorEffect::FetchSnapshot { at_least: Lsn(5) }]
            );
            let effects = n2.feed(at + 1, ProcessorInput::SnapshotFetched { result: Ok(bad) });
            assert_eq!(effects, vec![], "refused");
            assert_eq!((n2.core.state(), n2.core.store().dump()), before);
            assert_eq!(n2.core.status(&n2.env(at + 2, &[])).status, "BehindTrim");
            assert_eq!(
                n2.feed(at + 2, trimmed(3, 6)),
                vec![],
                "not before the pause"
            );
            at += 1_000 + FETCH_RETRY.as_millis() as u64;
            let again = n2.feed(at, ProcessorInput::Tick);
            assert!(again.contains(&read(3)), "{again:?}");
        }
        // A snapshot not newer than what is applied is never restored.
        let mut ahead = Rig::new(3);
        ahead.feed(0, ProcessorInput::Tick);
        ahead.deliver(10, log.range(1, 6));
        ahead.feed(20, trimmed(7, 9));
        let effects = ahead.feed(21, ProcessorInput::SnapshotFetched { result: Ok(good) });
        assert_eq!(effects, vec![]);
        assert_eq!(ahead.core.state(), n1.core.state());
    }

    #[test]
    fn the_trim_bound_is_the_highest_lsn_a_majoritys_snapshots_cover() {
        let l = |v: &[u64]| v.iter().map(|x| Lsn(*x)).collect::<Vec<_>>();
        assert_eq!(trim_bound(&l(&[8, 7]), 3, Lsn(9)), Some(Lsn(7)));
        assert_eq!(trim_bound(&l(&[8]), 3, Lsn(9)), None, "one is no majority");
        assert_eq!(trim_bound(&[], 3, Lsn(9)), None, "persisted is not enough");
        assert_eq!(trim_bound(&l(&[3, 9, 6, 1]), 5, Lsn(9)), Some(Lsn(3)));
        // Never above the leader's own persisted LSN; nothing at 0.
        assert_eq!(trim_bound(&l(&[8, 7]), 3, Lsn(4)), Some(Lsn(4)));
        assert_eq!(trim_bound(&l(&[0, 0]), 3, Lsn(4)), None);
    }

    #[test]
    fn only_a_leader_in_its_reign_serves_and_a_malformed_request_is_refused_at_once() {
        let mut log = Log::default();
        let mut r = Rig::new(2);
        r.feed(0, ProcessorInput::Tick);
        // A follower knows no leader yet, then hints at it.
        assert_eq!(
            r.invoke(1, 1, add("g:1", 1)),
            vec![reply(1, InvokeReply::NotLeader { leader: None })]
        );
        log.command(announce(1, 1));
        r.deliver(2, log.range(1, 1));
        assert_eq!(
            r.invoke(3, 2, add("g:1", 1)),
            vec![reply(2, InvokeReply::NotLeader { leader: Some(n(1)) })]
        );
        // A candidate says so.
        r.feed(4, ProcessorInput::BecomeLeader { epoch: Epoch(2) });
        assert_eq!(
            r.invoke(5, 3, add("g:1", 1)),
            vec![reply(
                3,
                InvokeReply::Unavailable("leader is announcing its reign".into())
            )]
        );
        // A malformed request is answered whatever the role, never batched.
        let effects = r.invoke(6, 4, req("g:2", "add", "\"x\"", 1000));
        let [ProcessorEffect::Reply {
            token: 4,
            reply: InvokeReply::Done(response),
        }] = &effects[..]
        else {
            panic!("{effects:?}");
        };
        assert_eq!(response.status, 400);
        // The node a follower last saw leading is itself: no hint.
        let mut r = Rig::new(1);
        r.feed(0, ProcessorInput::Tick);
        r.deliver(1, log.range(1, 1));
        assert_eq!(
            r.invoke(2, 1, add("g:1", 1)),
            vec![reply(1, InvokeReply::NotLeader { leader: None })]
        );
    }

    #[test]
    fn the_reign_starts_when_the_processor_applies_its_own_announcement() {
        let mut log = Log::default();
        let mut r = Rig::new(1);
        r.feed(0, ProcessorInput::Tick);
        let effects = r.feed(10, ProcessorInput::BecomeLeader { epoch: Epoch(2) });
        assert_eq!(
            effects,
            vec![
                ProcessorEffect::Watch {
                    what: "reign of epoch e2 (own announcement applied)".into(),
                    limit: REIGN_WAIT,
                },
                ProcessorEffect::Append {
                    op: 1,
                    records: vec![Record(announce(2, 1).encode())],
                    timeout: ANNOUNCE_TIMEOUT,
                },
            ]
        );
        assert_eq!(r.core.mode(), Mode::Candidate);
        assert_eq!(
            r.feed(20, ProcessorInput::BecomeLeader { epoch: Epoch(2) }),
            vec![],
            "told again: already announcing"
        );
        // Someone else's announcement, or an older one of this node, is no reign.
        log.command(announce(1, 1));
        log.command(announce(3, 3));
        assert_eq!(
            r.deliver(30, log.range(1, 2)),
            vec![ProcessorEffect::Unwatch, read(3)]
        );
        assert_eq!(r.core.mode(), Mode::Follower, "deposed by N3's epoch 3");
        // Its own announcement of the current epoch starts the reign.
        r.feed(40, ProcessorInput::BecomeLeader { epoch: Epoch(4) });
        log.command(announce(4, 1));
        assert_eq!(
            r.deliver(50, log.range(3, 3)),
            vec![
                ProcessorEffect::Unwatch,
                ProcessorEffect::MoveSequencerHere,
                read(4)
            ]
        );
        assert_eq!(r.core.mode(), Mode::Leader);
        assert_eq!(r.core.status(&r.env(60, &[])).status, "Active");
    }

    #[test]
    fn a_failed_announcement_is_retried_after_200_ms_while_still_wanted() {
        let mut r = Rig::new(1);
        r.feed(0, ProcessorInput::Tick);
        let effects = r.feed(10, ProcessorInput::BecomeLeader { epoch: Epoch(1) });
        let op = appends(&effects)[0].0;
        let failed = r.feed(
            20,
            ProcessorInput::Appended {
                op,
                result: Err(AppendError::Unavailable("no sequencer".into())),
            },
        );
        assert_eq!(failed, vec![]);
        assert_eq!(r.core.mode(), Mode::Follower);
        assert_eq!(
            r.core.next_wake(),
            Some(r.t0 + ms(200)),
            "the persist tick first"
        );
        r.feed(200, ProcessorInput::Tick);
        assert_eq!(r.core.next_wake(), Some(r.t0 + ms(220)));
        let again = r.feed(220, ProcessorInput::Tick);
        assert_eq!(
            again,
            vec![ProcessorEffect::Append {
                op: op + 1,
                records: vec![Record(announce(1, 1).encode())],
                timeout: ANNOUNCE_TIMEOUT,
            }],
            "the same announcement, under the same watch"
        );
        // No longer wanted: no retry.
        r.feed(
            230,
            ProcessorInput::Appended {
                op: op + 1,
                result: Err(AppendError::Unavailable("no sequencer".into())),
            },
        );
        r.feed(240, ProcessorInput::BecomeFollower { leader: None });
        assert_eq!(r.feed(430, ProcessorInput::Tick), vec![]);
    }

    #[test]
    fn a_leader_that_reaches_no_majority_refuses_requests() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let effects = r.feed_cut(
            10,
            &[2, 3],
            ProcessorInput::Invoke {
                token: 1,
                req: add("g:1", 1),
            },
        );
        assert_eq!(
            effects,
            vec![reply(
                1,
                InvokeReply::Unavailable("leader cannot reach a majority".into())
            )]
        );
        assert_eq!(r.core.status(&r.env(10, &[2, 3])).status, "NoMajority");
        assert_eq!(
            r.invoke(10, 2, add("g:1", 1)),
            vec![ProcessorEffect::Drain],
            "one peer is enough"
        );
    }

    #[test]
    fn requests_gather_while_two_appends_are_in_flight() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        assert_eq!(r.invoke(10, 1, add("g:1", 1)), vec![ProcessorEffect::Drain]);
        assert_eq!(r.invoke(10, 2, add("g:2", 1)), vec![], "one drain asked");
        let a = appends(&r.feed(10, ProcessorInput::Drained));
        assert_eq!(a.len(), 1);
        assert_eq!(
            ids(&a[0].1),
            ["g:1", "g:2"],
            "queued together, appended together"
        );
        assert_eq!(a[0].2, ms(1000), "the latest deadline of the batch");
        appended_alone(&mut r, 20, 3, add("g:3", 1));
        // Both slots are busy: requests gather.
        assert_eq!(r.invoke(30, 4, add("g:4", 1)), vec![]);
        assert_eq!(r.invoke(30, 5, add("g:5", 1)), vec![]);
        let freed = r.feed(
            40,
            ProcessorInput::Appended {
                op: a[0].0,
                result: Ok(Lsn(2)),
            },
        );
        assert_eq!(freed, vec![ProcessorEffect::Drain]);
        let c = appends(&r.feed(40, ProcessorInput::Drained));
        assert_eq!(ids(&c[0].1), ["g:4", "g:5"]);
        assert_eq!(r.core.status(&r.env(40, &[])).pending_requests, 5);
    }

    fn big(arg_bytes: usize) -> Invocation {
        Invocation {
            epoch: Epoch(1),
            request_id: "g:1".into(),
            timestamp_ms: 0,
            retention_ms: None,
            object: "Register".into(),
            key: "k".into(),
            handler: "write".into(),
            arg: vec![b'1'; arg_bytes],
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        assert_eq!(batch_len(&vec![big(1); 1000]), APPEND_BATCH);
        assert_eq!(batch_len(&[big(1), big(1)]), 2);
        // 128 KiB arguments: 32 of them fill a 4 MiB append.
        let many = vec![big(128 * 1024); 100];
        let n = batch_len(&many);
        assert!(n < 32 && n > 16, "{n}");
        let bytes: usize = many[..n]
            .iter()
            .map(|i| Command::Invoke(i.clone()).encode().len())
            .sum();
        assert!(bytes <= crate::actors::sequencer::MAX_APPEND_BYTES);
        // One request over the limit still goes alone (and fails alone).
        assert_eq!(batch_len(&[big(5 << 20), big(1)]), 1);
    }

    #[test]
    fn a_request_is_answered_when_its_record_applies_and_repeats_share_its_fate() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        assert_eq!(r.invoke(10, 1, add("g:1", 5)), vec![ProcessorEffect::Drain]);
        assert_eq!(
            r.invoke(11, 2, add("g:1", 5)),
            vec![],
            "a repeat joins the first"
        );
        let a = appends(&r.feed(12, ProcessorInput::Drained));
        assert_eq!(ids(&a[0].1), ["g:1"]);
        let lsn = log.append(&a[0].1);
        assert_eq!(
            r.deliver(20, log.range(lsn.0, lsn.0)),
            vec![reply(1, done("5")), reply(2, done("5")), read(3)]
        );
        // Later repeats are answered from the stored result, not appended.
        assert_eq!(r.invoke(30, 3, add("g:1", 5)), vec![reply(3, done("5"))]);
    }

    #[test]
    fn timestamps_in_records_come_from_the_wall_clock_at_env_now() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let (_, records) = appended_alone(&mut r, 1234, 1, add("g:1", 1));
        let Command::Invoke(inv) = Command::decode(&records[0].0).unwrap() else {
            panic!("a request");
        };
        assert_eq!((inv.timestamp_ms, inv.epoch), (WALL0 + 1234, Epoch(1)));
        assert_eq!(
            inv.retention_ms, None,
            "a generated id keeps the internal retention"
        );
        // A client key carries the leader's configured retention.
        let (_, records) = appended_alone(&mut r, 1300, 2, add("u:k", 1));
        let Command::Invoke(inv) = Command::decode(&records[0].0).unwrap() else {
            panic!("a request");
        };
        assert_eq!(
            inv.retention_ms,
            Some(crate::actors::partition_processor::core::USER_KEY_RETENTION_MS)
        );
    }

    #[test]
    fn an_indeterminate_append_is_retried_with_the_same_request_ids_until_the_deadline() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let (op, records) = appended_alone(&mut r, 10, 1, add("g:1", 1));
        let unknown = || Err(AppendError::Indeterminate("sealed".into()));
        let retry = r.feed(
            500,
            ProcessorInput::Appended {
                op,
                result: unknown(),
            },
        );
        assert_eq!(
            retry,
            vec![ProcessorEffect::Append {
                op: op + 1,
                records: records.clone(),
                timeout: ms(510),
            }]
        );
        // Past the deadline nobody waits: no retry.
        assert_eq!(
            r.feed(
                1010,
                ProcessorInput::Appended {
                    op: op + 1,
                    result: unknown()
                }
            ),
            vec![]
        );
        // Nor after a step down (the reign is over).
        let (op, _) = appended_alone(&mut r, 1100, 2, add("g:2", 1));
        r.feed(1110, ProcessorInput::BecomeFollower { leader: Some(n(2)) });
        assert_eq!(
            r.feed(
                1120,
                ProcessorInput::Appended {
                    op,
                    result: unknown()
                }
            ),
            vec![]
        );
    }

    #[test]
    fn an_append_the_log_refuses_fails_its_requests_at_once() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let (op, _) = appended_alone(&mut r, 10, 1, add("g:1", 1));
        let error = AppendError::TooLarge {
            records: 1,
            bytes: 9 << 20,
        };
        let effects = r.feed(
            20,
            ProcessorInput::Appended {
                op,
                result: Err(error.clone()),
            },
        );
        assert_eq!(
            effects,
            vec![reply(1, InvokeReply::Unavailable(error.to_string()))]
        );
        assert_eq!(r.core.status(&r.env(20, &[])).pending_requests, 0);
    }

    #[test]
    fn past_its_deadline_a_request_learns_whether_it_may_have_applied() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        appended_alone(&mut r, 10, 1, req("g:1", "add", "1", 100));
        appended_alone(&mut r, 10, 2, req("g:2", "add", "1", 100));
        // Both slots busy: this one is never handed to the log.
        assert_eq!(r.invoke(10, 3, req("g:3", "add", "1", 100)), vec![]);
        assert_eq!(r.feed(100, ProcessorInput::Tick), vec![], "not yet");
        let expired = r.feed(200, ProcessorInput::Tick);
        assert_eq!(
            expired,
            vec![
                reply(1, InvokeReply::Timeout),
                reply(2, InvokeReply::Timeout),
                reply(
                    3,
                    InvokeReply::Unavailable(
                        "deadline passed before the request was appended".into()
                    )
                ),
                ProcessorEffect::SyncState { upto: Lsn(1) },
            ]
        );
    }

    #[test]
    fn stepping_down_answers_requests_never_appended_and_keeps_the_others() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let (_, first) = appended_alone(&mut r, 10, 1, add("g:1", 1));
        appended_alone(&mut r, 10, 2, add("g:2", 1));
        assert_eq!(r.invoke(10, 3, add("g:3", 1)), vec![]);
        let down = r.feed(20, ProcessorInput::BecomeFollower { leader: Some(n(2)) });
        assert_eq!(
            down,
            vec![reply(3, InvokeReply::NotLeader { leader: Some(n(2)) })]
        );
        assert_eq!(r.core.mode(), Mode::Follower);
        // An appended request is answered when its record applies.
        let lsn = log.append(&first);
        assert_eq!(
            r.deliver(30, log.range(lsn.0, lsn.0)),
            vec![reply(1, done("1")), read(3)]
        );
    }

    #[test]
    fn a_newer_announcement_deposes_the_leader_and_fences_every_waiting_request() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let (_, late) = appended_alone(&mut r, 10, 1, add("g:1", 1));
        log.command(announce(2, 2));
        assert_eq!(
            r.deliver(20, log.range(2, 2)),
            vec![reply(1, InvokeReply::Fenced), read(3)]
        );
        assert_eq!(r.core.mode(), Mode::Follower);
        // The deposed leader's late record changes nothing anywhere.
        let lsn = log.append(&late);
        log.command(invocation(2, "g:get", 30, "get", "null"));
        let mut replica = Rig::new(3);
        replica.feed(0, ProcessorInput::Tick);
        replica.deliver(40, log.range(1, lsn.0 + 1));
        let mut reader = Applier::new(
            replica.core.store(),
            replica.core.state(),
            &replica.core.config.objects,
            1,
        );
        let get = reader.apply(
            Lsn(99),
            &invocation(2, "g:get2", 50, "get", "null").encode(),
        );
        assert_eq!(
            get.unwrap(),
            Applied::Request(
                "g:get2".into(),
                Outcome::Done(Response::ok(&serde_json::json!(0)))
            )
        );
    }

    #[test]
    fn applied_state_is_synced_periodically_and_its_lsn_reported() {
        let mut log = Log::default();
        log.command(announce(1, 1));
        log.command(invocation(1, "g:1", 10, "add", "1"));
        let mut r = Rig::new(2);
        r.feed(0, ProcessorInput::Tick);
        r.deliver(50, log.range(1, 2));
        assert_eq!(
            r.feed(200, ProcessorInput::Tick),
            vec![ProcessorEffect::SyncState { upto: Lsn(2) }]
        );
        assert_eq!(
            r.feed(400, ProcessorInput::Tick),
            vec![],
            "one sync at a time"
        );
        let ask = ProcessorInput::GetPersisted { token: 9 };
        assert_eq!(
            r.feed(401, ask),
            vec![ProcessorEffect::RespondPersisted {
                token: 9,
                reply: PersistedReply::default()
            }],
            "not before the sync completed"
        );
        r.feed(
            410,
            ProcessorInput::Persisted {
                upto: Lsn(2),
                result: Ok(()),
            },
        );
        assert_eq!(r.core.persisted(), Lsn(2));
        assert_eq!(
            r.feed(600, ProcessorInput::Tick),
            vec![],
            "nothing new to sync"
        );
        // A failed sync reports nothing new; the next period tries again.
        log.command(invocation(1, "g:2", 20, "add", "1"));
        r.deliver(700, log.range(3, 3));
        assert_eq!(
            r.feed(800, ProcessorInput::Tick),
            vec![ProcessorEffect::SyncState { upto: Lsn(3) }]
        );
        r.feed(
            810,
            ProcessorInput::Persisted {
                upto: Lsn(3),
                result: Err(StorageError::Flush("disk gone".into())),
            },
        );
        assert_eq!(r.core.persisted(), Lsn(2));
        assert_eq!(
            r.feed(1000, ProcessorInput::Tick),
            vec![ProcessorEffect::SyncState { upto: Lsn(3) }]
        );
        assert_eq!(r.core.status(&r.env(1000, &[])).persisted_lsn, Lsn(2));
    }

    #[test]
    fn a_leader_trims_below_a_majoritys_snapshots_only() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        assert_eq!(
            r.feed(200, ProcessorInput::Tick),
            vec![ProcessorEffect::SyncState { upto: Lsn(1) }]
        );
        r.feed(
            210,
            ProcessorInput::Persisted {
                upto: Lsn(1),
                result: Ok(()),
            },
        );
        assert_eq!(r.feed(9_999, ProcessorInput::Tick), vec![]);
        let asked = r.feed(10_000, ProcessorInput::Tick);
        let calls: Vec<(NodeId, CallId)> = asked
            .iter()
            .map(|e| match e {
                ProcessorEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    assert_eq!(
                        (req, *timeout),
                        (&GetPersisted { partition: P }, PERSISTED_TIMEOUT)
                    );
                    (*to, *call)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(calls.iter().map(|c| c.0).collect::<Vec<_>>(), [n(2), n(3)]);
        let answer = |r: &mut Rig, (node, call): (NodeId, CallId), reply| {
            r.feed(10_010, ProcessorInput::PersistedOf { call, node, reply })
        };
        let at = |persisted: u64, snapshot: Option<u64>| {
            Ok(PersistedReply {
                persisted: Lsn(persisted),
                snapshot: snapshot.map(Lsn),
            })
        };
        assert_eq!(answer(&mut r, calls[0], at(5, None)), vec![]);
        assert_eq!(
            answer(&mut r, calls[1], at(7, None)),
            vec![],
            "every replica persisted past 1, but no snapshot covers it: a \
             replica that lost its disk could not be rebuilt"
        );
        // A replica that does not answer blocks the trim while no majority
        // holds a snapshot.
        let round = |r: &mut Rig, at_ms: u64| -> Vec<(NodeId, CallId)> {
            r.feed(at_ms, ProcessorInput::Tick)
                .into_iter()
                .filter_map(|e| match e {
                    ProcessorEffect::Call { to, call, .. } => Some((to, call)),
                    _ => None,
                })
                .collect()
        };
        let asked = round(&mut r, 20_000);
        let lost = |to| Err(CallError::Timeout(to, PERSISTED_TIMEOUT));
        assert_eq!(answer(&mut r, asked[0], lost(asked[0].0)), vec![]);
        assert_eq!(
            answer(&mut r, asked[1], at(9, Some(1))),
            vec![],
            "one snapshot is no majority"
        );
        // With a majority of snapshots, a silent replica no longer blocks:
        // the trim reaches the snapshot floor (capped at what this node
        // persisted).
        log.command(invocation(1, "g:x", 30, "add", "1"));
        r.deliver(20_100, log.range(2, 2));
        r.feed(20_200, ProcessorInput::Tick);
        r.feed(
            20_210,
            ProcessorInput::Persisted {
                upto: Lsn(2),
                result: Ok(()),
            },
        );
        let asked = round(&mut r, 30_000);
        assert_eq!(answer(&mut r, asked[0], lost(asked[0].0)), vec![]);
        assert_eq!(
            answer(&mut r, asked[1], at(1, Some(2))),
            vec![],
            "this node holds none: still no majority"
        );
        // (as if its own snapshot at 2 had just been written)
        r.core.latest_snapshot = Some(Lsn(2));
        let asked = round(&mut r, 40_000);
        assert_eq!(answer(&mut r, asked[0], lost(asked[0].0)), vec![]);
        assert_eq!(
            answer(&mut r, asked[1], at(1, Some(2))),
            vec![ProcessorEffect::Trim { below: Lsn(3) }],
            "below the snapshot floor, past the silent replica and the lagging one"
        );
        // A follower never trims.
        r.feed(40_100, ProcessorInput::BecomeFollower { leader: None });
        assert_eq!(r.feed(50_000, ProcessorInput::Tick), vec![]);
    }

    #[test]
    fn a_storage_error_while_applying_stops_the_processor_and_writes_nothing() {
        let mut log = Log::default();
        let mut r = leader(1, &mut log);
        let (_, records) = appended_alone(&mut r, 10, 1, add("g:1", 1));
        let lsn = log.append(&records);
        let before = (r.core.state(), r.core.store().dump());
        r.core.store().inject_read_error_after(0);
        let effects = r.deliver(20, log.range(lsn.0, lsn.0));
        assert_eq!(
            effects,
            vec![
                reply(1, InvokeReply::Timeout),
                ProcessorEffect::Stop {
                    reason: "injected read error".into()
                },
            ]
        );
        assert_eq!(
            (r.core.state(), r.core.store().dump()),
            before,
            "nothing written"
        );
        assert_eq!(r.core.status(&r.env(20, &[])).status, "StorageFailed");
        assert_eq!(r.core.next_wake(), None);
        assert_eq!(r.feed(30, ProcessorInput::Tick), vec![]);
        assert_eq!(
            r.invoke(30, 2, add("g:2", 1)),
            vec![reply(
                2,
                InvokeReply::Unavailable("storage failed: injected read error".into())
            )]
        );
        // Restarted, it replays from its durable LSN and applies once.
        r.restart();
        assert_eq!(r.feed(40, ProcessorInput::Tick), vec![read(lsn.0)]);
        r.deliver(50, log.range(lsn.0, lsn.0));
        assert_eq!(r.core.state().applied, lsn);
    }

    #[test]
    fn bug_apply_stale_epoch_applies_a_write_whose_client_was_told_it_was_fenced() {
        for bugs in [BugSet::NONE, BugSet::NONE.with(Bug::ApplyStaleEpoch)] {
            let mut log = Log::default();
            let mut old = Rig::with_bugs(1, bugs);
            lead(&mut old, 1, &mut log);
            let (_, late) = appended_alone(&mut old, 10, 1, add("g:w", 5));
            // N2 takes over before the write is in the log.
            let mut new = Rig::with_bugs(2, bugs);
            new.feed(0, ProcessorInput::Tick);
            new.deliver(0, log.range(1, 1));
            lead(&mut new, 2, &mut log);
            // N1 learns of the new reign and tells its client "not applied".
            assert_eq!(
                old.deliver(20, log.range(2, 2)),
                vec![reply(1, InvokeReply::Fenced), read(3)]
            );
            // Its write lands late, after the new reign began; a client of
            // N2 reads the counter right after it.
            log.append(&late);
            let (_, get) = appended_alone(&mut new, 30, 7, req("g:r", "get", "null", 1000));
            let lsn = log.append(&get);
            let read = new.deliver(40, log.range(3, lsn.0));
            let seen = if bugs.is_empty() { "0" } else { "5" };
            assert_eq!(read[0], reply(7, done(seen)), "with {bugs:?}");
        }
    }

    #[test]
    fn bug_purge_by_batch_makes_replicas_depend_on_how_they_batched() {
        let mut log = Log::default();
        log.command(announce(1, 2));
        log.command(announce(2, 1));
        log.command(invocation(2, "g:x", 1_000, "add", "1"));
        // The deposed N2's late append, its clock far ahead: fenced.
        log.command(invocation(1, "g:late", 100_000, "add", "100"));
        // A retry of g:x, well within its retention by the log's clock.
        log.command(invocation(2, "g:x", 2_000, "add", "1"));
        log.command(invocation(2, "g:get", 2_001, "get", "null"));
        let counter = |bugs: BugSet, batches: &[(u64, u64)]| {
            let mut r = Rig::with_bugs(3, bugs);
            r.feed(0, ProcessorInput::Tick);
            for (from, to) in batches {
                r.deliver(10, log.range(*from, *to));
            }
            let mut reader =
                Applier::new(r.core.store(), r.core.state(), &r.core.config.objects, 1);
            let get = invocation(2, "g:get2", 2_002, "get", "null").encode();
            match reader.apply(Lsn(7), &get).unwrap() {
                Applied::Request(_, Outcome::Done(response)) => {
                    String::from_utf8(response.body).unwrap()
                }
                other => panic!("{other:?}"),
            }
        };
        let whole = [(1, 6)];
        let split = [(1, 4), (5, 6)];
        assert_eq!(counter(BugSet::NONE, &whole), "1");
        assert_eq!(
            counter(BugSet::NONE, &split),
            "1",
            "the same log, the same state"
        );
        let bug = BugSet::NONE.with(Bug::PurgeByBatch);
        assert_eq!(counter(bug, &whole), "1");
        assert_eq!(
            counter(bug, &split),
            "2",
            "the retry applied twice on this replica"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_effects() {
        let run = || {
            let mut log = Log::default();
            let mut r = leader(1, &mut log);
            let mut all = Vec::new();
            for (i, id) in ["g:b", "g:a", "g:c"].iter().enumerate() {
                all.extend(r.invoke(10, i as u64, add(id, 1)));
            }
            all.extend(r.feed(10, ProcessorInput::Drained));
            log.command(announce(2, 2));
            all.extend(r.deliver(20, log.range(2, 2)));
            all
        };
        assert_eq!(run(), run());
    }
}
