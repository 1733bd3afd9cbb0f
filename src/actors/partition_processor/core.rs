//! The partition processor's state machine, without I/O: what a log record
//! does to a partition's durable state.
//!
//! Every replica applies the same records in LSN order and reaches the same
//! state. Two rules make a leader change safe:
//! - `AnnounceLeader{epoch}` raises the partition's announced epoch; a leader's
//!   reign starts when it applies its own announcement;
//! - an `Invoke` stamped with an epoch below the announced one is dropped
//!   (fenced): a deposed leader's late appends change nothing.
//!
//! Requests are deduplicated by request id (the client's idempotency key, or
//! an id the ingress made up, so internal retries apply once); the result is
//! stored with the state and expires deterministically, by the timestamps the
//! leader wrote into the records.
//!
//! Three deliberately wrong rules can be switched on for the simulator's
//! tests ([`Applier::with_bugs`]): `Bug::ApplyStaleEpoch` (no fencing),
//! `Bug::PurgeByBatch` (expiry purged by the batch's newest timestamp) and
//! `Bug::DedupMissesOwnBatch` (a repeat batched with its first application
//! is not recognised).
//!
//! The state lives behind [`PartitionState`]: `storage::PartitionStore` in a
//! node, `sim::store_partition::SimPartitionStore` in the simulator. The
//! reign lifecycle around this state machine (who appends, who waits, when
//! state is synced and the log trimmed) is in `lifecycle.rs`.

use super::outbox::{self, delivery_id, Lane, Message, OutboxView};
use crate::actors::bugs::{Bug, BugSet};
use crate::objects::{Address, Context, HandlerError, ObjectState, Objects, Outgoing, Reply};
use crate::storage::{PartitionStore, PartitionWrite, StorageError};
use crate::types::{Epoch, Lsn, NodeId, PartitionId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long results of requests with a client idempotency key are kept by
/// default (a node's `idempotency_retention_secs`), and for records that
/// carry no retention of their own (written before records carried one).
pub const USER_KEY_RETENTION_MS: u64 = 24 * 3600 * 1000;
/// How long results of requests without one are kept (internal retries only).
pub const INTERNAL_RETENTION_MS: u64 = 60 * 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    AnnounceLeader {
        epoch: Epoch,
        node: NodeId,
    },
    Invoke(Invocation),
    /// Messages from a partition's outbox (see `outbox.rs`).
    Deliver(Delivery),
    /// Targets acknowledged the messages up to these sequence numbers: they
    /// leave the outbox. Not fenced: an acknowledgement is true whoever
    /// appended it.
    Acked {
        acks: Vec<(PartitionId, u64)>,
    },
    /// The leader's clock passed a timer's due time: advance the log's
    /// clock to `timestamp_ms` and fire every timer due by then.
    FireTimers {
        epoch: Epoch,
        timestamp_ms: u64,
    },
}

/// A batch of messages from `from`'s outbox, appended by this partition's
/// leader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The epoch of the leader that appended it (fenced if not the announced one).
    pub epoch: Epoch,
    /// The appending leader's wall clock (ms since the epoch).
    pub timestamp_ms: u64,
    /// The sending partition.
    pub from: PartitionId,
    /// Contiguous sequence numbers of the (from, this partition) pair.
    pub messages: Vec<Message>,
}

impl Delivery {
    /// The id its waiters wait under.
    pub fn id(&self) -> String {
        let first = self.messages.first().map_or(0, |m| m.seq);
        let last = self.messages.last().map_or(0, |m| m.seq);
        delivery_id(self.from, first, last)
    }
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("encoding a command")
    }
    /// Decodes a record. A command no honest leader writes (an
    /// announcement of node 0, which recovery cannot tell from "no
    /// leader") is an error too: every replica skips it alike.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let command: Command = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        match command {
            Command::AnnounceLeader { node, .. } if node.0 == 0 => {
                Err("announcement of node 0".into())
            }
            command => Ok(command),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// The epoch of the leader that appended it (fenced if not the announced one).
    pub epoch: Epoch,
    /// Deduplication id: `u:<idempotency key>` or `g:<generated id>`.
    pub request_id: String,
    /// The leader's wall clock when it appended the record (ms since epoch).
    pub timestamp_ms: u64,
    /// How long the result of a request with a client idempotency key is
    /// kept, by the log's clock (ms): the appending leader's configured
    /// retention. It travels in the record so that every replica decides
    /// expiry alike whatever its own configuration says; `None` (records
    /// from before the field, and generated ids): the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// The object's type name.
    pub object: String,
    /// The object's key (one writer per key: the partition's leader).
    pub key: String,
    /// The handler to run on the object.
    pub handler: String,
    /// The JSON argument.
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
}

/// A request's result, as returned to the client (and stored for dedup).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(value: &serde_json::Value) -> Self {
        Response {
            status: 200,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
    pub fn error(err: &HandlerError) -> Self {
        let mut body = serde_json::json!({ "error": err.to_string() });
        if let HandlerError::PreconditionFailed { current } = err {
            body["current"] = current.clone();
        }
        Response {
            status: err.http_status(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done(Response),
    /// Dropped: appended under `epoch`, but `announced` was already newer.
    Fenced {
        epoch: Epoch,
        announced: Epoch,
    },
}

/// What applying one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    /// A leader announcement; `current` if it names the current reign.
    Announced {
        epoch: Epoch,
        node: NodeId,
        current: bool,
    },
    /// A request's outcome, for whoever waits on this request id.
    Request(String, Outcome),
}

#[derive(Serialize, Deserialize)]
struct DedupEntry {
    /// Where the request applied.
    lsn: u64,
    /// When the result expires, by the log's clock.
    expires_ms: u64,
    /// The result, answered to repeats until then.
    response: Response,
}

const META_EPOCH: &[u8] = b"epoch";
const META_LEADER: &[u8] = b"leader";
/// The log's clock: the newest record timestamp applied so far (ms).
const META_CLOCK: &[u8] = b"clock";
/// Expiry index: `x` + expires_ms (BE) + request id.
const EXPIRY_PREFIX: &[u8] = b"x";

/// Marks state written with objects keyed by type name ([`object_prefix`]);
/// state without it that applied anything was written by an older keel,
/// whose keys this one cannot read.
const META_LAYOUT: &[u8] = b"layout";
/// The state layout this build writes.
const LAYOUT: &[u8] = &[2];

/// Durable state key of an object's sub-key: prefix-free (the type name's
/// length, the name, the key's length, the key), so one object's entries
/// are one key range.
pub fn object_prefix(object: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(object.len() + key.len() + 5);
    k.push(object.len().min(u8::MAX as usize) as u8);
    k.extend_from_slice(object.as_bytes());
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// Keys and values, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A partition's durable state, as the state machine reads and writes it:
/// synchronous reads, and one write per applied batch that becomes visible
/// as a whole (durable after the host syncs the state lane) and survives a
/// crash as a whole. A read error is an error, never absence.
pub trait PartitionState {
    /// The LSN the state covers (0: nothing applied).
    fn applied_lsn(&self) -> Result<Lsn, StorageError>;
    /// An object's value.
    fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// A request's stored result.
    fn dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// A meta value (announced epoch, leader, log clock, expiry index).
    fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// The first `limit` meta entries with keys in `[from, to)`, in order.
    fn meta_range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StorageError>;
    /// Every object `(key, value)` whose key starts with `prefix`, in order.
    fn objects_with_prefix(&self, prefix: &[u8]) -> Result<Entries, StorageError>;
    /// Applies `write` atomically. After an error the write may be partly
    /// applied: stop writing; reopening the store completes it.
    fn apply(&mut self, write: PartitionWrite) -> Result<(), StorageError>;
    /// Every store key (see [`PartitionWrite::ops`]) and value, in key
    /// order, without the journal: a snapshot's entries. Values are as
    /// written (a stored checksum is checked and left out).
    fn entries(&self) -> Result<Entries, StorageError>;
}

impl PartitionState for PartitionStore {
    fn applied_lsn(&self) -> Result<Lsn, StorageError> {
        PartitionStore::applied_lsn(self)
    }
    fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        PartitionStore::object(self, key)
    }
    fn dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        PartitionStore::dedup(self, key)
    }
    fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        PartitionStore::meta(self, key)
    }
    fn meta_range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StorageError> {
        PartitionStore::meta_range(self, from, to, limit)
    }
    fn objects_with_prefix(&self, prefix: &[u8]) -> Result<Entries, StorageError> {
        PartitionStore::objects_with_prefix(self, prefix)
    }
    fn apply(&mut self, write: PartitionWrite) -> Result<(), StorageError> {
        PartitionStore::apply(self, write)
    }
    fn entries(&self) -> Result<Entries, StorageError> {
        PartitionStore::entries(self)
    }
}

/// Writes of a batch not yet in the store: `None` is a removal.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Reads `key` through `overlay`, then the store.
fn read_through(
    overlay: &Overlay,
    key: &[u8],
    store: impl FnOnce() -> Result<Option<Vec<u8>>, StorageError>,
) -> Result<Option<Vec<u8>>, StorageError> {
    match overlay.get(key) {
        Some(v) => Ok(v.clone()),
        None => store(),
    }
}

/// The processor's view of its state while applying one batch: reads see the
/// batch's earlier writes; everything lands in one atomic write at the end.
///
/// Replicas are a function of the log: what a record does depends only on
/// the records before it, never on how they were batched or on a local
/// clock. Time comes from the log (the newest timestamp a leader wrote into
/// an applied record, kept with the state), and a storage error aborts the
/// batch (nothing of it is written) instead of reading as "absent".
pub struct Applier<'a, S: PartitionState + ?Sized = PartitionStore> {
    /// The state before this batch.
    store: &'a S,
    /// The object types whose handlers the records call.
    types: &'a Objects,
    /// How many partitions the cluster has (where a message goes).
    partitions: u32,
    /// Object writes of this batch.
    objects: Overlay,
    /// Dedup writes of this batch.
    dedup: Overlay,
    /// Meta writes of this batch.
    meta: Overlay,
    /// The newest epoch announced so far.
    pub announced: Epoch,
    /// Who announced it.
    pub leader: Option<NodeId>,
    /// The last LSN applied.
    applied: Lsn,
    /// The log's clock after the last applied record.
    clock_ms: u64,
    /// The newest timestamp of any request record of this batch, fenced ones
    /// included (only [`Bug::PurgeByBatch`] looks at it).
    batch_newest_ms: u64,
    /// Deliberately wrong rules (empty but in the simulator's tests).
    bugs: BugSet,
    /// This batch changed the outbox or the timers.
    outbox_changed: bool,
}

/// What the processor knows after recovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last LSN applied.
    pub applied: Lsn,
    /// The newest epoch announced.
    pub announced: Epoch,
    /// Who announced it.
    pub leader: Option<NodeId>,
    /// The log's clock at `applied` (ms).
    pub clock_ms: u64,
}

fn be_u64(bytes: Vec<u8>) -> Result<u64, StorageError> {
    let b: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| StorageError::Corrupt {
            tree: "partition meta",
            reason: format!("an 8-byte value has {} bytes", bytes.len()),
        })?;
    Ok(u64::from_be_bytes(b))
}

/// The 8-byte meta value under `key` in `store` (0 if there is none).
fn stored_u64<S: PartitionState + ?Sized>(store: &S, key: &[u8]) -> Result<u64, StorageError> {
    Ok(store.meta(key)?.map(be_u64).transpose()?.unwrap_or(0))
}

/// What `store` holds: the applied LSN, the announced epoch and leader, the
/// log's clock.
pub fn recover<S: PartitionState + ?Sized>(store: &S) -> Result<Recovered, StorageError> {
    let announced = Epoch(stored_u64(store, META_EPOCH)?);
    let leader = match store.meta(META_LEADER)? {
        Some(b) => {
            let b: [u8; 4] = b.as_slice().try_into().map_err(|_| StorageError::Corrupt {
                tree: "partition meta",
                reason: "leader is not 4 bytes".into(),
            })?;
            Some(u32::from_be_bytes(b)).filter(|n| *n > 0).map(NodeId)
        }
        None => None,
    };
    let clock_ms = stored_u64(store, META_CLOCK)?;
    let applied = store.applied_lsn()?;
    if applied > Lsn(0) && store.meta(META_LAYOUT)?.as_deref() != Some(LAYOUT) {
        return Err(StorageError::Corrupt {
            tree: "partition meta",
            reason:
                "the state was written by an older keel (objects keyed by a type tag, not a name); \
                     move the data directory away and rejoin the node (keel node --rejoin)"
                    .into(),
        });
    }
    Ok(Recovered {
        applied,
        announced,
        leader,
        clock_ms,
    })
}

/// One handler's view of its object's state. Its writes are kept apart and
/// join the batch only if the handler succeeds, so a handler that fails
/// changes nothing; a storage error is remembered and aborts the batch.
struct ObjectView<'b, 'a, S: PartitionState + ?Sized> {
    /// The batch so far.
    applier: &'b Applier<'a, S>,
    /// The object's key prefix.
    prefix: Vec<u8>,
    /// The handler's writes (`None`: a removal), joining the batch only if
    /// it succeeds.
    writes: Overlay,
    /// The first storage error a read met.
    error: std::cell::RefCell<Option<StorageError>>,
}

impl<S: PartitionState + ?Sized> ObjectView<'_, '_, S> {
    fn full_key(&self, sub: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(sub);
        k
    }

    fn fail(&self, e: StorageError) {
        self.error.borrow_mut().get_or_insert(e);
    }
}

impl<S: PartitionState + ?Sized> ObjectState for ObjectView<'_, '_, S> {
    fn get(&self, sub: &[u8]) -> Option<Vec<u8>> {
        let k = self.full_key(sub);
        if let Some(v) = self.writes.get(&k) {
            return v.clone();
        }
        let store = self.applier.store;
        read_through(&self.applier.objects, &k, || store.object(&k)).unwrap_or_else(|e| {
            self.fail(e);
            None
        })
    }
    fn put(&mut self, sub: &[u8], value: Vec<u8>) {
        let k = self.full_key(sub);
        self.writes.insert(k, Some(value));
    }
    fn remove(&mut self, sub: &[u8]) {
        let k = self.full_key(sub);
        self.writes.insert(k, None);
    }
    fn scan(&self, sub_prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefix = self.full_key(sub_prefix);
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            match self.applier.store.objects_with_prefix(&prefix) {
                Ok(entries) => entries.into_iter().collect(),
                Err(e) => {
                    self.fail(e);
                    return Vec::new();
                }
            };
        // The batch's writes, then the handler's own, over the store.
        for overlay in [&self.applier.objects, &self.writes] {
            let entries = overlay.range(prefix.clone()..);
            for (k, v) in entries.take_while(|(k, _)| k.starts_with(&prefix)) {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
        }
        merged
            .into_iter()
            .map(|(k, v)| (k[self.prefix.len()..].to_vec(), v))
            .collect()
    }
}

impl<'a, S: PartitionState + ?Sized> Applier<'a, S> {
    pub fn new(store: &'a S, recovered: Recovered, types: &'a Objects, partitions: u32) -> Self {
        let mut meta = Overlay::new();
        if recovered.applied == Lsn(0) {
            meta.insert(META_LAYOUT.to_vec(), Some(LAYOUT.to_vec()));
        }
        Applier {
            store,
            types,
            partitions,
            objects: Overlay::new(),
            dedup: Overlay::new(),
            meta,
            announced: recovered.announced,
            leader: recovered.leader,
            applied: recovered.applied,
            clock_ms: recovered.clock_ms,
            batch_newest_ms: 0,
            bugs: BugSet::NONE,
            outbox_changed: false,
        }
    }

    /// The same applier with `bugs` switched on (the simulator's tests only).
    pub fn with_bugs(mut self, bugs: BugSet) -> Self {
        self.bugs = bugs;
        self
    }

    pub fn applied(&self) -> Lsn {
        self.applied
    }

    /// The log's clock after the last applied record (ms).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Whether this batch changed the outbox or the timers.
    pub fn outbox_changed(&self) -> bool {
        self.outbox_changed
    }

    fn dedup_entry(&self, k: &[u8]) -> Result<Option<DedupEntry>, StorageError> {
        // With the bug, results of this batch are not seen (only what the
        // store holds): whether a repeat applies again depends on batching.
        let stored = if self.bugs.has(Bug::DedupMissesOwnBatch) {
            self.store.dedup(k)?
        } else {
            read_through(&self.dedup, k, || self.store.dedup(k))?
        };
        let Some(bytes) = stored else {
            return Ok(None);
        };
        rmp_serde::from_slice::<DedupEntry>(&bytes)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                tree: "partition dedup",
                reason: e.to_string(),
            })
    }

    /// The stored result of `request_id`, if it was applied and its entry
    /// had not expired at `now_ms` (expiry is decided by the log's clock, so
    /// every replica decides alike, whenever the entry is purged).
    pub fn dedup(&self, request_id: &str, now_ms: u64) -> Result<Option<Response>, StorageError> {
        Ok(self
            .dedup_entry(request_id.as_bytes())?
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| e.response))
    }

    /// Applies the record at `lsn`. An error means storage failed: nothing
    /// of this batch may be written (the processor restarts and replays).
    /// A record at or below the applied LSN was applied already: it changes
    /// nothing (an applied partition never goes backwards).
    pub fn apply(&mut self, lsn: Lsn, record: &[u8]) -> Result<Applied, StorageError> {
        if lsn <= self.applied {
            tracing::warn!(%lsn, applied = %self.applied, "record at or below the applied LSN ignored");
            return Ok(Applied::Nothing);
        }
        self.applied = lsn;
        let command = match Command::decode(record) {
            Ok(c) => c,
            Err(e) => {
                // Not ours (or corrupt): skip it deterministically on every replica.
                tracing::warn!(%lsn, "undecodable record skipped: {e}");
                return Ok(Applied::Nothing);
            }
        };
        match command {
            Command::AnnounceLeader { epoch, node } => {
                if epoch > self.announced {
                    self.announced = epoch;
                    self.leader = Some(node);
                    self.meta
                        .insert(META_EPOCH.to_vec(), Some(epoch.0.to_be_bytes().to_vec()));
                    self.meta
                        .insert(META_LEADER.to_vec(), Some(node.0.to_be_bytes().to_vec()));
                }
                // A leader re-announcing its own epoch (after a restart) resumes
                // its reign; anything older is history.
                let current = epoch == self.announced && self.leader == Some(node);
                Ok(Applied::Announced {
                    epoch,
                    node,
                    current,
                })
            }
            Command::Invoke(inv) => {
                self.batch_newest_ms = self.batch_newest_ms.max(inv.timestamp_ms);
                // Fencing: only requests of the announced epoch apply. (With
                // the bug, a deposed leader's late appends apply too.)
                let stale_applies =
                    self.bugs.has(Bug::ApplyStaleEpoch) && inv.epoch < self.announced;
                if inv.epoch != self.announced && !stale_applies {
                    let outcome = Outcome::Fenced {
                        epoch: inv.epoch,
                        announced: self.announced,
                    };
                    return Ok(Applied::Request(inv.request_id, outcome));
                }
                if inv.timestamp_ms > self.clock_ms {
                    self.clock_ms = inv.timestamp_ms;
                    self.meta.insert(
                        META_CLOCK.to_vec(),
                        Some(self.clock_ms.to_be_bytes().to_vec()),
                    );
                }
                if let Some(response) = self.dedup(&inv.request_id, self.clock_ms)? {
                    return Ok(Applied::Request(inv.request_id, Outcome::Done(response)));
                }
                let read_only = self.types.is_read_only(&inv.object, &inv.handler);
                let to = Address {
                    object: inv.object,
                    key: inv.key,
                    handler: inv.handler,
                };
                let seed = call_seed(lsn, &inv.request_id);
                let response = self.run_handler(&to, &inv.arg, seed)?;
                // A read changes nothing, so a repeat may simply run again:
                // only results of handlers that write are kept for dedup. A
                // call refused because the outbox is full changed nothing
                // either, and a retry may find room.
                let overloaded = response.status == 503;
                if !read_only && !overloaded {
                    self.remember(lsn, &inv.request_id, inv.retention_ms, response.clone());
                }
                Ok(Applied::Request(inv.request_id, Outcome::Done(response)))
            }
            Command::Deliver(delivery) => self.deliver(lsn, delivery),
            Command::Acked { acks } => {
                for (to, upto) in acks {
                    self.acknowledge(to, upto)?;
                }
                Ok(Applied::Nothing)
            }
            Command::FireTimers {
                epoch,
                timestamp_ms,
            } => {
                if epoch != self.announced {
                    return Ok(Applied::Nothing);
                }
                self.advance_clock(timestamp_ms);
                self.fire_timers()?;
                Ok(Applied::Nothing)
            }
        }
    }

    fn advance_clock(&mut self, ms: u64) {
        if ms > self.clock_ms {
            self.clock_ms = ms;
            self.meta.insert(
                META_CLOCK.to_vec(),
                Some(self.clock_ms.to_be_bytes().to_vec()),
            );
        }
    }

    /// Runs `to`'s handler on `arg` (JSON) with the call's random `seed`:
    /// on success its writes join the batch and its messages the outbox;
    /// on failure nothing changes. A storage error aborts the batch.
    fn run_handler(
        &mut self,
        to: &Address,
        arg: &[u8],
        seed: u64,
    ) -> Result<Response, StorageError> {
        let arg = match serde_json::from_slice(arg) {
            Ok(arg) => arg,
            Err(e) => return Ok(Response::error(&HandlerError::BadArgument(e.to_string()))),
        };
        let mut view = ObjectView {
            prefix: object_prefix(&to.object, &to.key),
            applier: self,
            writes: Overlay::new(),
            error: Default::default(),
        };
        let types = self.types;
        let (result, outgoing) = {
            let ctx = Context::new(&to.key, &mut view, self.clock_ms, seed);
            let mut ctx = ctx.for_object(&to.object, types);
            let result = types.call(&to.object, &to.handler, arg, &mut ctx);
            (result, ctx.into_outgoing())
        };
        if let Some(e) = view.error.into_inner() {
            return Err(e);
        }
        let writes = view.writes;
        let sends = outgoing.iter().filter(|o| o.delay_ms.is_none()).count() as u64;
        let depth = if sends > 0 {
            self.meta_u64(outbox::DEPTH_KEY)?
        } else {
            0
        };
        let result = result.and_then(|v| {
            if depth.saturating_add(sends) > outbox::MAX_OUTBOX {
                return Err(HandlerError::Overloaded(format!(
                    "the partition's outbox holds {depth} undelivered messages (at most {})",
                    outbox::MAX_OUTBOX
                )));
            }
            Ok(v)
        });
        Ok(match result {
            Ok(v) => {
                self.objects.extend(writes);
                for o in outgoing {
                    self.enqueue(to, o)?;
                }
                Response::ok(&v)
            }
            Err(e) => Response::error(&e),
        })
    }

    fn meta_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        read_through(&self.meta, key, || self.store.meta(key))
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64, StorageError> {
        Ok(self.meta_value(key)?.map(be_u64).transpose()?.unwrap_or(0))
    }

    fn put_u64(&mut self, key: Vec<u8>, value: u64) {
        self.meta.insert(key, Some(value.to_be_bytes().to_vec()));
    }

    /// Adds `sender`'s message `o` to the outbox (or the timer index).
    fn enqueue(&mut self, sender: &Address, o: Outgoing) -> Result<(), StorageError> {
        let reply_to = o.reply_to.map(|handler| Address {
            handler,
            ..sender.clone()
        });
        let message = Message {
            seq: 0,
            to: o.to,
            arg: o.arg,
            reply_to,
            sent_ms: self.clock_ms,
            due_ms: 0,
        };
        match o.delay_ms {
            Some(delay) => {
                let id = self.meta_u64(outbox::TIMER_ID_KEY)? + 1;
                self.put_u64(outbox::TIMER_ID_KEY.to_vec(), id);
                let due_ms = self.clock_ms.saturating_add(delay);
                let timer = Message { due_ms, ..message };
                self.meta
                    .insert(outbox::timer_key(due_ms, id), Some(timer.encode()));
                let count = self.meta_u64(outbox::TIMER_COUNT_KEY)?;
                self.put_u64(outbox::TIMER_COUNT_KEY.to_vec(), count + 1);
            }
            None => self.push_outbox(message)?,
        }
        self.outbox_changed = true;
        Ok(())
    }

    /// Numbers `message` in its pair and queues it.
    fn push_outbox(&mut self, mut message: Message) -> Result<(), StorageError> {
        let to = crate::ingress::http::partition_of(
            &message.to.object,
            &message.to.key,
            self.partitions,
        );
        let seq = self.meta_u64(&outbox::next_key(to))?.max(1);
        self.put_u64(outbox::next_key(to), seq + 1);
        message.seq = seq;
        self.meta
            .insert(outbox::queued_key(to, seq), Some(message.encode()));
        let depth = self.meta_u64(outbox::DEPTH_KEY)?;
        self.put_u64(outbox::DEPTH_KEY.to_vec(), depth + 1);
        self.outbox_changed = true;
        Ok(())
    }

    /// `to` holds every message up to `upto`: they leave the outbox.
    fn acknowledge(&mut self, to: PartitionId, upto: u64) -> Result<(), StorageError> {
        let acked = self.meta_u64(&outbox::acked_key(to))?;
        let sent = self.meta_u64(&outbox::next_key(to))?.saturating_sub(1);
        let upto = upto.min(sent);
        if upto <= acked {
            return Ok(());
        }
        for seq in acked + 1..=upto {
            self.meta.insert(outbox::queued_key(to, seq), None);
        }
        self.put_u64(outbox::acked_key(to), upto);
        let depth = self.meta_u64(outbox::DEPTH_KEY)?;
        self.put_u64(
            outbox::DEPTH_KEY.to_vec(),
            depth.saturating_sub(upto - acked),
        );
        self.outbox_changed = true;
        Ok(())
    }

    /// Moves every timer due by the log's clock into the outbox, in due
    /// order.
    fn fire_timers(&mut self) -> Result<(), StorageError> {
        let upto = outbox::timer_key(self.clock_ms.saturating_add(1), 0);
        let mut due: BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .meta_range(outbox::TIMER_PREFIX, &upto, usize::MAX)?
            .into_iter()
            .collect();
        for (k, v) in self.meta.range(outbox::TIMER_PREFIX.to_vec()..upto.clone()) {
            match v {
                Some(v) => due.insert(k.clone(), v.clone()),
                None => due.remove(k),
            };
        }
        if due.is_empty() {
            return Ok(());
        }
        let count = self.meta_u64(outbox::TIMER_COUNT_KEY)?;
        self.put_u64(
            outbox::TIMER_COUNT_KEY.to_vec(),
            count.saturating_sub(due.len() as u64),
        );
        for (key, bytes) in due {
            self.meta.insert(key, None);
            match rmp_serde::from_slice::<Message>(&bytes) {
                Ok(timer) => self.push_outbox(Message {
                    sent_ms: self.clock_ms,
                    ..timer
                })?,
                // Skipped alike on every replica.
                Err(e) => tracing::warn!("undecodable timer dropped: {e}"),
            }
        }
        self.outbox_changed = true;
        Ok(())
    }

    /// Applies a delivery: each message above the source's inbox mark, in
    /// order, stopping at a gap; answers with the new mark.
    fn deliver(&mut self, lsn: Lsn, delivery: Delivery) -> Result<Applied, StorageError> {
        let id = delivery.id();
        if delivery.epoch != self.announced {
            let outcome = Outcome::Fenced {
                epoch: delivery.epoch,
                announced: self.announced,
            };
            return Ok(Applied::Request(id, outcome));
        }
        self.advance_clock(delivery.timestamp_ms);
        let from = delivery.from;
        let mut mark = self.meta_u64(&outbox::inbox_key(from))?;
        for message in delivery.messages {
            if message.seq <= mark {
                continue;
            }
            if message.seq != mark + 1 {
                break;
            }
            mark = message.seq;
            self.advance_clock(message.due_ms);
            let seed = call_seed(lsn, &delivery_id(from, message.seq, message.seq));
            let response = self.run_handler(&message.to, &message.arg, seed)?;
            if let Some(reply_to) = message.reply_to {
                let mut reply = Reply {
                    from: message.to,
                    status: response.status,
                    body: serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null),
                };
                let mut arg = serde_json::to_vec(&reply).unwrap_or_default();
                if arg.len() > super::MAX_ARG_BYTES {
                    // A message must fit a delivery record: say so instead.
                    reply.status = 500;
                    reply.body = serde_json::json!({ "error": format!(
                        "the result ({} bytes) exceeds the {} bytes a message may carry",
                        arg.len(),
                        super::MAX_ARG_BYTES
                    )});
                    arg = serde_json::to_vec(&reply).unwrap_or_default();
                }
                self.push_outbox(Message {
                    seq: 0,
                    to: reply_to,
                    arg,
                    reply_to: None,
                    sent_ms: self.clock_ms,
                    due_ms: 0,
                })?;
            }
        }
        self.put_u64(outbox::inbox_key(from), mark);
        let response = Response::ok(&serde_json::json!({ "accepted": mark }));
        Ok(Applied::Request(id, Outcome::Done(response)))
    }

    /// Keeps `response` for repeats of `request_id` until it expires: a
    /// client key's for the record's `retention_ms` (the default without
    /// one), a generated id's for [`INTERNAL_RETENTION_MS`].
    fn remember(
        &mut self,
        lsn: Lsn,
        request_id: &str,
        retention_ms: Option<u64>,
        response: Response,
    ) {
        let retention = if request_id.starts_with("u:") {
            retention_ms.unwrap_or(USER_KEY_RETENTION_MS)
        } else {
            INTERNAL_RETENTION_MS
        };
        let expires_ms = self.clock_ms.saturating_add(retention);
        let entry = DedupEntry {
            lsn: lsn.0,
            expires_ms,
            response,
        };
        let bytes = rmp_serde::to_vec_named(&entry).expect("encoding a dedup entry");
        self.dedup
            .insert(request_id.as_bytes().to_vec(), Some(bytes));
        self.meta.insert(
            expiry_key(expires_ms, request_id.as_bytes()),
            Some(Vec::new()),
        );
    }

    /// Physically removes dedup entries that expired by the log's clock (they
    /// are already ignored by `dedup`). Run once per batch: purging at the
    /// end of a batch or after every record leaves the same state, because
    /// the clock only moves forward and an entry is removed only if its
    /// *current* expiry passed.
    fn purge_expired(&mut self) -> Result<(), StorageError> {
        // With the bug, "now" is the newest timestamp of this batch (fenced
        // records included) instead of the log's clock: what is purged then
        // depends on how the records were batched.
        let clock_ms = if self.bugs.has(Bug::PurgeByBatch) {
            self.batch_newest_ms
        } else {
            self.clock_ms
        };
        let upto = expiry_key(clock_ms.saturating_add(1), b"");
        let mut index: BTreeMap<Vec<u8>, ()> = self
            .store
            .meta_range(EXPIRY_PREFIX, &upto, usize::MAX)?
            .into_iter()
            .map(|(k, _)| (k, ()))
            .collect();
        for (k, v) in self.meta.range(EXPIRY_PREFIX.to_vec()..upto.clone()) {
            match v {
                Some(_) => index.insert(k.clone(), ()),
                None => index.remove(k),
            };
        }
        for (key, ()) in index {
            let id = &key[EXPIRY_PREFIX.len() + 8..];
            if let Some(entry) = self.dedup_entry(id)? {
                if entry.expires_ms <= clock_ms {
                    self.dedup.insert(id.to_vec(), None);
                }
            }
            self.meta.insert(key, None);
        }
        Ok(())
    }

    /// The atomic write of everything applied so far.
    pub fn finish(mut self) -> Result<(PartitionWrite, Lsn), StorageError> {
        self.purge_expired()?;
        let mut write = PartitionWrite::default();
        for (k, v) in &self.objects {
            match v {
                Some(v) => write.put_object(k, v),
                None => write.remove_object(k),
            }
        }
        for (k, v) in &self.dedup {
            match v {
                Some(v) => write.put_dedup(k, v),
                None => write.remove_dedup(k),
            }
        }
        for (k, v) in &self.meta {
            match v {
                Some(v) => write.put_meta(k, v),
                None => write.remove_meta(k),
            }
        }
        write.set_applied(self.applied);
        Ok((write, self.applied))
    }
}

/// The inbox mark of `from` in `store`: the highest sequence number of its
/// messages applied here.
pub fn inbox_mark<S: PartitionState + ?Sized>(
    store: &S,
    from: PartitionId,
) -> Result<u64, StorageError> {
    stored_u64(store, &outbox::inbox_key(from))
}

/// What `store`'s outbox and timers hold.
pub fn read_outbox<S: PartitionState + ?Sized>(store: &S) -> Result<OutboxView, StorageError> {
    let mut view = OutboxView::default();
    // Per target: the next sequence number, then the last acknowledged.
    for prefix in [outbox::NEXT_PREFIX, outbox::ACKED_PREFIX] {
        let (from, to) = outbox::keyed_range(prefix);
        for (k, v) in store.meta_range(&from, &to, usize::MAX)? {
            let Some(target) = outbox::keyed_partition(prefix, &k) else {
                continue;
            };
            let lane = view.lanes.entry(target).or_default();
            match prefix {
                outbox::NEXT_PREFIX => lane.sent = be_u64(v)?.saturating_sub(1),
                _ => lane.acked = be_u64(v)?,
            }
        }
    }
    let lanes: Vec<(PartitionId, Lane)> = view.lanes.iter().map(|(p, l)| (*p, *l)).collect();
    for (to, lane) in lanes {
        if lane.depth() > 0 {
            let first = queued(store, to, lane.acked + 1, 1)?;
            view.lanes.get_mut(&to).expect("listed").oldest_ms = first.first().map(|m| m.sent_ms);
        }
    }
    view.timers = stored_u64(store, outbox::TIMER_COUNT_KEY)?;
    let end = [outbox::TIMER_PREFIX, &[0xff; 17]].concat();
    view.next_timer_ms = store
        .meta_range(outbox::TIMER_PREFIX, &end, 1)?
        .first()
        .and_then(|(k, _)| outbox::timer_due(k));
    Ok(view)
}

/// Up to `max` messages towards `to` from sequence number `from` on, in
/// order, at most [`outbox::DELIVER_BYTES`] of them encoded (at least one).
pub fn queued<S: PartitionState + ?Sized>(
    store: &S,
    to: PartitionId,
    from: u64,
    max: usize,
) -> Result<Vec<Message>, StorageError> {
    let end = outbox::queued_key(to, u64::MAX);
    let mut bytes = 0usize;
    let mut out = Vec::new();
    for (_, v) in store.meta_range(&outbox::queued_key(to, from), &end, max)? {
        let m: Message = rmp_serde::from_slice(&v).map_err(|e| StorageError::Corrupt {
            tree: "partition outbox",
            reason: e.to_string(),
        })?;
        bytes += v.len();
        if !out.is_empty() && bytes > outbox::DELIVER_BYTES {
            break;
        }
        out.push(m);
    }
    Ok(out)
}

/// The seed of a call's random source: the same on every replica (the
/// record's LSN and request id), different for every call.
fn call_seed(lsn: Lsn, request_id: &str) -> u64 {
    crate::types::fnv1a(crate::types::FNV1A_START ^ lsn.0, request_id.bytes())
}

/// The meta key of the expiry-index entry of `request_id`'s result, which
/// expires at `expires_ms` (the index is ordered by expiry).
pub fn expiry_key(expires_ms: u64, request_id: &[u8]) -> Vec<u8> {
    let mut k = EXPIRY_PREFIX.to_vec();
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(request_id);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::types::PartitionId;
    use serde_json::json;

    /// The demo's types, which these tests call.
    static TYPES: std::sync::LazyLock<Objects> =
        std::sync::LazyLock::new(crate::objects::demo::objects);

    fn invoke(
        epoch: u64,
        id: &str,
        ts: u64,
        object: &str,
        handler: &str,
        arg: serde_json::Value,
    ) -> Vec<u8> {
        Command::Invoke(Invocation {
            epoch: Epoch(epoch),
            request_id: id.into(),
            timestamp_ms: ts,
            retention_ms: None,
            object: object.into(),
            key: "k".into(),
            handler: handler.into(),
            arg: serde_json::to_vec(&arg).unwrap(),
        })
        .encode()
    }

    fn announce(epoch: u64, node: u32) -> Vec<u8> {
        Command::AnnounceLeader {
            epoch: Epoch(epoch),
            node: NodeId(node),
        }
        .encode()
    }

    fn ap(a: &mut Applier<'_>, lsn: Lsn, record: &[u8]) -> Applied {
        a.apply(lsn, record).expect("storage works")
    }

    fn outcome(a: Applied) -> Outcome {
        match a {
            Applied::Request(_, o) => o,
            other => panic!("expected a request outcome, got {other:?}"),
        }
    }

    fn body(o: &Outcome) -> serde_json::Value {
        match o {
            Outcome::Done(r) => serde_json::from_slice(&r.body).unwrap(),
            Outcome::Fenced { .. } => json!("fenced"),
        }
    }

    #[test]
    fn stale_epochs_are_fenced_and_duplicates_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(0)).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        assert_eq!(
            ap(&mut a, Lsn(1), &announce(1, 1)),
            Applied::Announced {
                epoch: Epoch(1),
                node: NodeId(1),
                current: true
            }
        );
        let o = outcome(ap(
            &mut a,
            Lsn(2),
            &invoke(1, "g:a", 10, "Counter", "add", json!(5)),
        ));
        assert_eq!(body(&o), json!(5));
        // The same request id again (an internal retry): same answer, applied once.
        let o = outcome(ap(
            &mut a,
            Lsn(3),
            &invoke(1, "g:a", 11, "Counter", "add", json!(5)),
        ));
        assert_eq!(body(&o), json!(5));
        ap(&mut a, Lsn(4), &announce(2, 2));
        assert_eq!(a.leader, Some(NodeId(2)));
        // A deposed leader's late append is dropped.
        let o = outcome(ap(
            &mut a,
            Lsn(5),
            &invoke(1, "g:b", 12, "Counter", "add", json!(100)),
        ));
        assert_eq!(
            o,
            Outcome::Fenced {
                epoch: Epoch(1),
                announced: Epoch(2)
            }
        );
        // A stale announcement changes nothing.
        assert_eq!(
            ap(&mut a, Lsn(6), &announce(1, 1)),
            Applied::Announced {
                epoch: Epoch(1),
                node: NodeId(1),
                current: false
            }
        );
        assert_eq!(a.leader, Some(NodeId(2)));
        let o = outcome(ap(
            &mut a,
            Lsn(7),
            &invoke(2, "g:c", 13, "Counter", "get", json!(null)),
        ));
        assert_eq!(body(&o), json!(5));
        let (write, applied) = a.finish().unwrap();
        store.apply(write).unwrap();
        assert_eq!(applied, Lsn(7));
        let r = recover(&store).unwrap();
        assert_eq!(
            r,
            Recovered {
                applied: Lsn(7),
                announced: Epoch(2),
                leader: Some(NodeId(2)),
                clock_ms: 13,
            }
        );
        // Undecodable records are skipped, deterministically.
        let mut a = Applier::new(&store, r, &TYPES, 1);
        assert_eq!(ap(&mut a, Lsn(8), b"garbage"), Applied::Nothing);
        assert_eq!(a.applied(), Lsn(8));
        // Node 0 is no node: its announcement is skipped, and the state
        // recovery reads back is the state in memory.
        assert_eq!(ap(&mut a, Lsn(9), &announce(7, 0)), Applied::Nothing);
        assert_eq!(a.leader, Some(NodeId(2)));
        // A record at or below the applied LSN changes nothing.
        assert_eq!(ap(&mut a, Lsn(3), &announce(9, 3)), Applied::Nothing);
        assert_eq!(ap(&mut a, Lsn(8), &announce(9, 3)), Applied::Nothing);
        assert_eq!((a.applied(), a.announced), (Lsn(9), Epoch(2)));
    }

    #[test]
    fn dedup_entries_expire_by_the_log_clock() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(1)).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        ap(&mut a, Lsn(1), &announce(1, 1));
        ap(
            &mut a,
            Lsn(2),
            &invoke(1, "g:x", 1_000, "Counter", "add", json!(1)),
        );
        let (w, _) = a.finish().unwrap();
        store.apply(w).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        assert!(a.dedup("g:x", 2_000).unwrap().is_some());
        let later = 1_000 + INTERNAL_RETENTION_MS + 1;
        assert!(a.dedup("g:x", later).unwrap().is_none());
        let o = outcome(ap(
            &mut a,
            Lsn(3),
            &invoke(1, "g:x", later, "Counter", "add", json!(1)),
        ));
        assert_eq!(body(&o), json!(2), "an expired id applies again");
        let (w, _) = a.finish().unwrap();
        store.apply(w).unwrap();
        assert_eq!(
            store
                .meta_range(EXPIRY_PREFIX, b"y", usize::MAX)
                .unwrap()
                .len(),
            1,
            "old index purged"
        );
    }

    #[test]
    fn set_state_is_visible_within_and_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(2)).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        ap(&mut a, Lsn(1), &announce(1, 1));
        ap(&mut a, Lsn(2), &invoke(1, "g:1", 1, "Set", "add", json!(3)));
        let (w, _) = a.finish().unwrap();
        store.apply(w).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        ap(&mut a, Lsn(3), &invoke(1, "g:2", 2, "Set", "add", json!(1)));
        let o = outcome(ap(
            &mut a,
            Lsn(4),
            &invoke(1, "g:3", 3, "Set", "read", json!(null)),
        ));
        assert_eq!(body(&o), json!([3, 1]));
        let o = outcome(ap(
            &mut a,
            Lsn(5),
            &invoke(
                1,
                "g:4",
                4,
                "Register",
                "cas",
                json!({"expect": 1, "value": 2}),
            ),
        ));
        match o {
            Outcome::Done(r) => assert_eq!(r.status, 412),
            other => panic!("{other:?}"),
        }
    }

    /// A history with everything time- and batch-sensitive in it: repeats
    /// inside and after their retention, a leader clock that steps back,
    /// failing handlers, reads, fenced requests.
    fn history() -> Vec<Vec<u8>> {
        let later = 5_000 + INTERNAL_RETENTION_MS;
        let mut h = vec![announce(1, 1)];
        let steps: Vec<(u64, &str, u64, &str, &str, serde_json::Value)> = vec![
            (1, "g:1", 1_000, "Counter", "add", json!(1)),
            (1, "u:k", 2_000, "Counter", "add", json!(10)),
            (1, "g:2", 3_000, "Set", "add", json!("a")),
            (1, "g:1", 3_500, "Counter", "add", json!(1)),
            // The leader's clock steps back by far more than the retention.
            (
                1,
                "g:3",
                100,
                "Register",
                "cas",
                json!({"expect": 5, "value": 6}),
            ),
            (1, "g:4", 200, "Counter", "get", json!(null)),
            (1, "g:5", later, "Set", "add", json!("b")),
            // g:1 expired by the log's clock: it applies again.
            (1, "g:1", later + 1, "Counter", "add", json!(1)),
            // u:k is kept for a day: still a repeat.
            (1, "u:k", later + 2, "Counter", "add", json!(10)),
            (1, "g:6", 300, "Set", "read", json!(null)),
            (0, "g:7", later + 3, "Counter", "add", json!(100)),
            (
                1,
                "g:8",
                later + 4,
                "Reminder",
                "schedule",
                json!({"after_ms": 10}),
            ),
            (
                1,
                "g:9",
                later + 5,
                "Reminder",
                "schedule",
                json!({"after_ms": 1}),
            ),
        ];
        for (epoch, id, ts, object, handler, arg) in steps {
            h.push(invoke(epoch, id, ts, object, handler, arg));
        }
        // Timers fire (both are due by then), their messages are delivered
        // back to this partition, one twice, and acknowledged.
        h.push(fire(1, later + 20));
        let timers = vec![
            message(1, "Reminder", "fire", json!(2)),
            message(2, "Reminder", "fire", json!(1)),
        ];
        h.push(delivery(1, later + 21, 0, timers[..1].to_vec()));
        h.push(delivery(1, later + 22, 0, timers.clone()));
        h.push(
            Command::Acked {
                acks: vec![(PartitionId(0), 2)],
            }
            .encode(),
        );
        h.push(delivery(
            1,
            later + 23,
            7,
            vec![message(
                1,
                "Account",
                "credit",
                json!({"from": "x", "amount": 5}),
            )],
        ));
        h
    }

    fn fire(epoch: u64, ts: u64) -> Vec<u8> {
        Command::FireTimers {
            epoch: Epoch(epoch),
            timestamp_ms: ts,
        }
        .encode()
    }

    /// Message `seq` to `object/k/handler`.
    fn message(seq: u64, object: &str, handler: &str, arg: serde_json::Value) -> Message {
        to(seq, object, "k", handler, arg)
    }

    fn to(seq: u64, object: &str, key: &str, handler: &str, arg: serde_json::Value) -> Message {
        Message {
            seq,
            to: Address {
                object: object.into(),
                key: key.into(),
                handler: handler.into(),
            },
            arg: serde_json::to_vec(&arg).unwrap(),
            reply_to: None,
            sent_ms: 0,
            due_ms: 0,
        }
    }

    fn delivery(epoch: u64, ts: u64, from: u32, messages: Vec<Message>) -> Vec<u8> {
        Command::Deliver(Delivery {
            epoch: Epoch(epoch),
            timestamp_ms: ts,
            from: PartitionId(from),
            messages,
        })
        .encode()
    }

    fn call_on(
        id: &str,
        ts: u64,
        object: &str,
        key: &str,
        handler: &str,
        arg: serde_json::Value,
    ) -> Vec<u8> {
        Command::Invoke(Invocation {
            epoch: Epoch(1),
            request_id: id.into(),
            timestamp_ms: ts,
            retention_ms: None,
            object: object.into(),
            key: key.into(),
            handler: handler.into(),
            arg: serde_json::to_vec(&arg).unwrap(),
        })
        .encode()
    }

    /// A key of `object` in partition `p` of 2.
    fn key_in(object: &str, p: u32) -> String {
        (0..)
            .map(|i| format!("a{i}"))
            .find(|k| crate::ingress::http::partition_of(object, k, 2) == PartitionId(p))
            .unwrap()
    }

    /// Applies `records` from `first` on as one batch of `store`, `types`
    /// and 2 partitions; the outcomes' bodies.
    fn batch(
        store: &PartitionStore,
        types: &Objects,
        first: u64,
        records: &[Vec<u8>],
    ) -> Vec<serde_json::Value> {
        let mut a = Applier::new(store, recover(store).unwrap(), types, 2);
        let mut bodies = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if let Applied::Request(_, o) = ap(&mut a, Lsn(first + i as u64), r) {
                bodies.push(body(&o));
            }
        }
        let (w, _) = a.finish().unwrap();
        store.apply(w).unwrap();
        bodies
    }

    fn balance_of(store: &PartitionStore, key: &str) -> serde_json::Value {
        let mut a = Applier::new(store, recover(store).unwrap(), &TYPES, 2);
        let lsn = recover(store).unwrap().applied.next();
        body(&outcome(ap(
            &mut a,
            lsn,
            &call_on("g:b", 0, "Account", key, "balance", json!(null)),
        )))
    }

    #[test]
    fn a_transfer_sends_one_credit_that_applies_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let (sender, receiver) = (
            storage.partition(PartitionId(0)).unwrap(),
            storage.partition(PartitionId(1)).unwrap(),
        );
        let (a, b) = (key_in("Account", 0), key_in("Account", 1));
        let transfer = |n: i64| json!({"to": b, "amount": n});
        let bodies = batch(
            &sender,
            &TYPES,
            1,
            &[
                announce(1, 1),
                call_on("g:1", 10, "Account", &a, "deposit", json!(100)),
                call_on("g:2", 11, "Account", &a, "transfer", transfer(30)),
                // Refused (412): sends nothing.
                call_on("g:3", 12, "Account", &a, "transfer", transfer(500)),
                call_on("g:4", 13, "Account", &a, "transfer", transfer(20)),
            ],
        );
        assert_eq!(
            bodies,
            vec![
                json!(100),
                json!(70),
                json!({"error": "precondition failed", "current": 70}),
                json!(50)
            ]
        );
        let view = read_outbox(&sender).unwrap();
        assert_eq!(
            view.lanes[&PartitionId(1)],
            Lane {
                acked: 0,
                sent: 2,
                oldest_ms: Some(11)
            }
        );
        assert_eq!(view.depth(), 2);
        let queued = queued(&sender, PartitionId(1), 1, 10).unwrap();
        assert_eq!(queued.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(queued[0].to.key, b);

        // The receiver applies each once, whatever arrives how often.
        let deliver = |ms: &[Message]| delivery(1, 20, 0, ms.to_vec());
        let bodies = batch(
            &receiver,
            &TYPES,
            1,
            &[
                announce(1, 2),
                deliver(&queued[..1]),
                deliver(&queued),
                deliver(&queued[1..]),
                // A gap (3 is missing) is not applied.
                deliver(&[Message {
                    seq: 4,
                    ..queued[0].clone()
                }]),
                // A deposed leader's delivery is fenced.
                delivery(0, 21, 0, queued.clone()),
            ],
        );
        assert_eq!(
            bodies,
            vec![
                json!({"accepted": 1}),
                json!({"accepted": 2}),
                json!({"accepted": 2}),
                json!({"accepted": 2}),
                json!("fenced")
            ]
        );
        assert_eq!(balance_of(&receiver, &b), json!(50));
        assert_eq!(inbox_mark(&receiver, PartitionId(0)).unwrap(), 2);

        // Acknowledged: the outbox empties; an acknowledgement past what
        // was sent changes nothing more.
        batch(
            &sender,
            &TYPES,
            6,
            &[Command::Acked {
                acks: vec![(PartitionId(1), 1)],
            }
            .encode()],
        );
        assert_eq!(read_outbox(&sender).unwrap().depth(), 1);
        batch(
            &sender,
            &TYPES,
            7,
            &[Command::Acked {
                acks: vec![(PartitionId(1), 9)],
            }
            .encode()],
        );
        let view = read_outbox(&sender).unwrap();
        assert_eq!(
            view.lanes[&PartitionId(1)],
            Lane {
                acked: 2,
                sent: 2,
                oldest_ms: None
            }
        );
        assert!(queued_empty(&sender));
        // The next message continues the pair's numbering.
        batch(
            &sender,
            &TYPES,
            8,
            &[call_on("g:5", 14, "Account", &a, "transfer", transfer(5))],
        );
        assert_eq!(
            super::queued(&sender, PartitionId(1), 1, 10).unwrap()[0].seq,
            3
        );
    }

    fn queued_empty(store: &PartitionStore) -> bool {
        (0..2).all(|p| queued(store, PartitionId(p), 0, 10).unwrap().is_empty())
    }

    #[test]
    fn a_timer_fires_once_at_or_after_its_time_on_the_log_clock() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(0)).unwrap();
        let key = key_in("Reminder", 0);
        let bodies = batch(
            &store,
            &TYPES,
            1,
            &[
                announce(1, 1),
                call_on(
                    "g:1",
                    10_000,
                    "Reminder",
                    &key,
                    "schedule",
                    json!({"after_ms": 1_000, "note": "n"}),
                ),
            ],
        );
        assert_eq!(bodies, vec![json!({"id": 1, "due_ms": 11_000})]);
        let view = read_outbox(&store).unwrap();
        assert_eq!(
            (view.timers, view.next_timer_ms, view.depth()),
            (1, Some(11_000), 0)
        );
        // Not due yet by the log's clock; then due; then nothing left.
        batch(&store, &TYPES, 3, &[fire(1, 10_999)]);
        assert_eq!(read_outbox(&store).unwrap().timers, 1);
        batch(&store, &TYPES, 4, &[fire(0, 12_000)]);
        assert_eq!(
            read_outbox(&store).unwrap().timers,
            1,
            "a deposed leader's fire is fenced"
        );
        batch(&store, &TYPES, 5, &[fire(1, 11_000), fire(1, 11_001)]);
        let view = read_outbox(&store).unwrap();
        assert_eq!(
            (view.timers, view.next_timer_ms, view.depth()),
            (0, None, 1)
        );
        let fired = queued(&store, PartitionId(0), 1, 10).unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].due_ms, 11_000);
        // Delivered by a leader whose clock is behind: the handler still
        // sees a log clock at or past the due time.
        let bodies = batch(
            &store,
            &TYPES,
            7,
            &[
                delivery(1, 10_500, 0, fired.clone()),
                call_on("g:2", 10_600, "Reminder", &key, "read", json!(null)),
            ],
        );
        assert_eq!(bodies[0], json!({"accepted": 1}));
        let r = &bodies[1];
        assert_eq!(r["pending"], json!([]));
        assert_eq!(r["fired"][0]["id"], json!(1));
        assert!(r["fired"][0]["fired_ms"].as_u64().unwrap() >= 11_000, "{r}");
    }

    #[test]
    fn a_request_gets_the_receivers_result_back_as_a_message() {
        use crate::objects::{ObjectType, Reply};
        let mut types = crate::objects::demo::types();
        types.push(
            ObjectType::new("Asker")
                .handler("ask", |ctx, n: i64| {
                    ctx.request("Counter", "c", "add", &n, "answer")?;
                    // A reply to a handler that does not exist is refused.
                    assert!(ctx.request("Counter", "c", "add", &n, "nope").is_err());
                    assert!(ctx.send("Nobody", "c", "add", &n).is_err());
                    assert!(ctx.send("Counter", "c", "add", &"not a number").is_err());
                    Ok(())
                })
                .handler("answer", |ctx, r: Reply| {
                    ctx.set("answer", &r);
                    Ok(())
                }),
        );
        let types = Objects::new(types).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(0)).unwrap();
        let asker = key_in("Asker", 0);
        batch(
            &store,
            &types,
            1,
            &[
                announce(1, 1),
                call_on("g:1", 5, "Asker", &asker, "ask", json!(7)),
            ],
        );
        let counter_p = crate::ingress::http::partition_of("Counter", "c", 2);
        let sent = queued(&store, counter_p, 1, 10).unwrap();
        assert_eq!(sent.len(), 1, "only the valid send went out");
        assert_eq!(sent[0].reply_to.as_ref().unwrap().handler, "answer");
        // Delivered where the counter lives: its result goes back.
        let target = storage.partition(counter_p).unwrap();
        let lsn = recover(&target).unwrap().applied.0 + 1;
        let mut records = vec![delivery(1, 6, 0, sent)];
        if counter_p != PartitionId(0) {
            records.insert(0, announce(1, 1));
        }
        batch(&target, &types, lsn, &records);
        let back = queued(&target, PartitionId(0), 1, 10).unwrap();
        let back: Vec<&Message> = back.iter().filter(|m| m.to.object == "Asker").collect();
        assert_eq!(back.len(), 1);
        let reply: Reply = serde_json::from_slice(&back[0].arg).unwrap();
        assert_eq!(
            (reply.status, reply.body.clone(), reply.from.object.as_str()),
            (200, json!(7), "Counter")
        );
        assert_eq!(back[0].to.key, asker);
    }

    #[test]
    fn a_reply_too_large_for_a_message_comes_back_as_a_500_saying_so() {
        use crate::objects::{ObjectType, Reply};
        let types =
            Objects::new([ObjectType::new("Big").handler("make", |_, n: usize| Ok("x".repeat(n)))])
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let p = crate::ingress::http::partition_of("Big", "k", 2);
        let store = storage.partition(p).unwrap();
        let asker = Address {
            object: "Asker".into(),
            key: "a".into(),
            handler: "answer".into(),
        };
        let ask = |seq, n: usize| Message {
            reply_to: Some(asker.clone()),
            ..message(seq, "Big", "make", json!(n))
        };
        let limit = crate::actors::partition_processor::MAX_ARG_BYTES;
        batch(
            &store,
            &types,
            1,
            &[
                announce(1, 1),
                delivery(1, 5, 0, vec![ask(1, 10), ask(2, limit)]),
            ],
        );
        let replies: Vec<Reply> = queued(
            &store,
            crate::ingress::http::partition_of("Asker", "a", 2),
            1,
            10,
        )
        .unwrap()
        .iter()
        .map(|m| serde_json::from_slice(&m.arg).unwrap())
        .collect();
        assert_eq!(
            (replies[0].status, &replies[0].body),
            (200, &json!("x".repeat(10)))
        );
        assert_eq!(replies[1].status, 500);
        let why = replies[1].body["error"].as_str().unwrap();
        assert!(
            why.contains("exceeds the 131072 bytes a message may carry"),
            "{why}"
        );
    }

    /// Every key and value of a partition's store.
    type Dump = Vec<(Vec<u8>, Vec<u8>)>;

    /// Applies `records` cut into batches of the given sizes; returns the
    /// bodies of every outcome and the store's every key and value.
    fn apply_in_batches(records: &[Vec<u8>], sizes: &[usize]) -> (Vec<serde_json::Value>, Dump) {
        apply_in_batches_with(records, sizes, BugSet::NONE)
    }

    /// [`apply_in_batches`] with `bugs` switched on.
    fn apply_in_batches_with(
        records: &[Vec<u8>],
        sizes: &[usize],
        bugs: BugSet,
    ) -> (Vec<serde_json::Value>, Dump) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(9)).unwrap();
        let mut bodies = Vec::new();
        let mut next = 0usize;
        let mut sizes = sizes.iter().cycle();
        while next < records.len() {
            let n = (*sizes.next().unwrap()).min(records.len() - next);
            let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1).with_bugs(bugs);
            for (i, r) in records[next..next + n].iter().enumerate() {
                if let Applied::Request(_, o) = ap(&mut a, Lsn((next + i + 1) as u64), r) {
                    bodies.push(body(&o));
                }
            }
            let (w, _) = a.finish().unwrap();
            store.apply(w).unwrap();
            next += n;
        }
        (bodies, store.dump().unwrap())
    }

    /// `invoke` for a client key, with the retention its leader wrote.
    fn invoke_keyed(id: &str, ts: u64, retention_ms: Option<u64>, n: i64) -> Vec<u8> {
        Command::Invoke(Invocation {
            epoch: Epoch(1),
            request_id: id.into(),
            timestamp_ms: ts,
            retention_ms,
            object: "Counter".into(),
            key: "k".into(),
            handler: "add".into(),
            arg: serde_json::to_vec(&json!(n)).unwrap(),
        })
        .encode()
    }

    #[test]
    fn an_idempotency_result_expires_after_the_retention_in_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(3)).unwrap();
        let retention = 5_000;
        let t0 = 1_000_000;
        let records = [
            announce(1, 1),
            invoke_keyed("u:a", t0, Some(retention), 1),
            // One ms before the end of the retention: answered, not applied.
            invoke_keyed("u:a", t0 + retention - 1, Some(retention), 1),
            // A record without a retention keeps the 24 h default.
            invoke_keyed("u:b", t0 + retention - 1, None, 10),
            // At the end of the retention the result is gone: applies again.
            invoke_keyed("u:a", t0 + retention, Some(retention), 1),
            invoke_keyed("u:b", t0 + retention + 1, Some(retention), 10),
        ];
        let mut bodies = Vec::new();
        for (i, r) in records.iter().enumerate() {
            // One batch per record, so expiry also purges between them.
            let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
            if let Applied::Request(_, o) = ap(&mut a, Lsn(i as u64 + 1), r) {
                bodies.push(body(&o));
            }
            let (w, _) = a.finish().unwrap();
            store.apply(w).unwrap();
        }
        assert_eq!(
            bodies,
            [json!(1), json!(1), json!(11), json!(12), json!(11)]
        );
        // u:a's first entry was purged once expired; its second is held.
        let a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        assert_eq!(
            a.dedup("u:a", t0 + 2 * retention - 1)
                .unwrap()
                .map(|r| r.body),
            Some(b"12".to_vec())
        );
        assert_eq!(a.dedup("u:a", t0 + 2 * retention).unwrap(), None);
        assert!(a
            .dedup("u:b", t0 + USER_KEY_RETENTION_MS - 2)
            .unwrap()
            .is_some());
    }

    #[test]
    fn replicas_are_a_function_of_the_log_not_of_batching_or_clocks() {
        let records = history();
        let (bodies, one_batch) = apply_in_batches(&records, &[records.len()]);
        assert_eq!(
            bodies[3],
            json!(1),
            "a repeat within retention is answered, not applied"
        );
        assert_eq!(bodies[7], json!(12), "an expired id applies again");
        assert_eq!(
            bodies[8],
            json!(11),
            "a client key outlives the internal retention"
        );
        for sizes in [&[1][..], &[2], &[3, 1], &[5, 2, 1]] {
            let (b, dump) = apply_in_batches(&records, sizes);
            assert_eq!(b, bodies, "batches of {sizes:?}");
            assert_eq!(dump, one_batch, "stores differ with batches of {sizes:?}");
        }
        // And the expired entry of g:1 was purged, not only ignored.
        let expired = one_batch
            .iter()
            .filter(|(k, _)| k.first() == Some(&b'd') && &k[1..] == b"g:1")
            .count();
        assert_eq!(expired, 1, "one current entry for g:1");
    }

    #[test]
    fn the_bug_switches_break_fencing_and_batch_independence() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        // No fencing: a deposed leader's late request applies.
        let late = invoke(1, "g:late", 5, "Counter", "add", json!(7));
        for (p, bugs, expected) in [
            (20, BugSet::NONE, json!("fenced")),
            (21, BugSet::NONE.with(Bug::ApplyStaleEpoch), json!(7)),
        ] {
            let store = storage.partition(PartitionId(p)).unwrap();
            let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1).with_bugs(bugs);
            ap(&mut a, Lsn(1), &announce(1, 1));
            ap(&mut a, Lsn(2), &announce(2, 2));
            assert_eq!(body(&outcome(ap(&mut a, Lsn(3), &late))), expected);
        }
        // Purge by the batch's newest timestamp: a fenced record from a clock
        // far ahead purges a result still within its retention, if it was in
        // an earlier batch than the repeat.
        let records = vec![
            announce(1, 2),
            announce(2, 1),
            invoke(2, "g:x", 1_000, "Counter", "add", json!(1)),
            invoke(1, "g:late", 100_000, "Counter", "add", json!(100)),
            invoke(2, "g:x", 2_000, "Counter", "add", json!(1)),
        ];
        let bug = BugSet::NONE.with(Bug::PurgeByBatch);
        let (whole, _) = apply_in_batches_with(&records, &[5], bug);
        let (split, _) = apply_in_batches_with(&records, &[4, 1], bug);
        assert_eq!(whole.last(), Some(&json!(1)), "the repeat is answered");
        assert_eq!(split.last(), Some(&json!(2)), "the repeat applied again");
        let (right, _) = apply_in_batches_with(&records, &[4, 1], BugSet::NONE);
        assert_eq!(right.last(), Some(&json!(1)));
        // Dedup that misses its own batch: a repeat in the batch of its
        // first application applies again; in a later batch it does not.
        let records = vec![
            announce(1, 1),
            invoke(1, "u:once", 1_000, "Counter", "add", json!(5)),
            invoke(1, "u:once", 1_001, "Counter", "add", json!(5)),
        ];
        let bug = BugSet::NONE.with(Bug::DedupMissesOwnBatch);
        let (together, _) = apply_in_batches_with(&records, &[3], bug);
        let (apart, _) = apply_in_batches_with(&records, &[2, 1], bug);
        assert_eq!(together, vec![json!(5), json!(10)], "applied twice");
        assert_eq!(apart, vec![json!(5), json!(5)], "answered from dedup");
        let (right, _) = apply_in_batches_with(&records, &[3], BugSet::NONE);
        assert_eq!(right, vec![json!(5), json!(5)]);
    }

    #[test]
    fn a_read_error_while_applying_changes_nothing_and_a_replay_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(3)).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        ap(&mut a, Lsn(1), &announce(1, 1));
        let add = invoke(1, "g:once", 10, "Counter", "add", json!(5));
        ap(&mut a, Lsn(2), &add);
        let (w, _) = a.finish().unwrap();
        store.apply(w).unwrap();
        let before = store.dump().unwrap();
        // The same request again, and the dedup lookup fails: an error,
        // never "not applied yet".
        let mut a = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        store.inject_read_error_after(0);
        assert!(matches!(a.apply(Lsn(3), &add), Err(StorageError::Injected)));
        drop(a);
        assert_eq!(store.dump().unwrap(), before, "nothing written");
        // The processor restarts and replays from its durable LSN.
        let recovered = recover(&store).unwrap();
        assert_eq!(recovered.applied, Lsn(2));
        let mut a = Applier::new(&store, recovered, &TYPES, 1);
        assert_eq!(
            body(&outcome(ap(&mut a, Lsn(3), &add))),
            json!(5),
            "a repeat"
        );
        let get = invoke(1, "g:get", 11, "Counter", "get", json!(null));
        assert_eq!(
            body(&outcome(ap(&mut a, Lsn(4), &get))),
            json!(5),
            "applied once"
        );
        // A read error inside a handler aborts the same way.
        let add2 = invoke(1, "g:two", 12, "Counter", "add", json!(1));
        let mut a2 = Applier::new(&store, recover(&store).unwrap(), &TYPES, 1);
        // The dedup lookup passes; the handler's read of the counter fails.
        store.inject_read_error_after(1);
        assert!(matches!(
            a2.apply(Lsn(3), &add2),
            Err(StorageError::Injected)
        ));
        drop(a2);
        assert_eq!(store.dump().unwrap(), before, "nothing written");
    }
}
