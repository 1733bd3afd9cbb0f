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

use crate::ingress::objects::{self, HandlerError, ObjectState, ObjectType};
use crate::storage::{PartitionStore, PartitionWrite, StorageError};
use crate::types::{Epoch, Lsn, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long results of requests with a client idempotency key are kept.
pub const USER_KEY_RETENTION_MS: u64 = 24 * 3600 * 1000;
/// How long results of requests without one are kept (internal retries only).
pub const INTERNAL_RETENTION_MS: u64 = 60 * 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    AnnounceLeader { epoch: Epoch, node: NodeId },
    Invoke(Invocation),
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("encoding a command")
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    pub epoch: Epoch,
    /// Deduplication id: `u:<idempotency key>` or `g:<generated id>`.
    pub request_id: String,
    /// The leader's wall clock when it appended the record (ms since epoch).
    pub timestamp_ms: u64,
    pub object: ObjectType,
    pub key: String,
    pub handler: String,
    /// The JSON argument.
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
}

/// A request's result, as returned to the client (and stored for dedup).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub status: u16,
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
    lsn: u64,
    expires_ms: u64,
    response: Response,
}

const META_EPOCH: &[u8] = b"epoch";
const META_LEADER: &[u8] = b"leader";
/// Expiry index: `x` + expires_ms (BE) + request id.
const EXPIRY_PREFIX: &[u8] = b"x";

/// Durable state key of an object's sub-key: prefix-free, so one object's
/// entries are one key range.
pub fn object_prefix(object: ObjectType, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 6);
    k.push(object as u8);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// The processor's view of its state while applying one batch: reads see the
/// batch's earlier writes; everything lands in one atomic write at the end.
pub struct Applier<'a> {
    store: &'a PartitionStore,
    objects: BTreeMap<Vec<u8>, Vec<u8>>,
    dedup: BTreeMap<Vec<u8>, Vec<u8>>,
    write: PartitionWrite,
    pub announced: Epoch,
    pub leader: Option<NodeId>,
    applied: Lsn,
    /// Newest record timestamp seen in this batch.
    clock_ms: u64,
}

/// What the processor knows after recovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub applied: Lsn,
    pub announced: Epoch,
    pub leader: Option<NodeId>,
}

pub fn recover(store: &PartitionStore) -> Result<Recovered, StorageError> {
    let announced = store
        .meta(META_EPOCH)?
        .and_then(|b| b.try_into().ok().map(u64::from_be_bytes))
        .map(Epoch)
        .unwrap_or_default();
    let leader = store
        .meta(META_LEADER)?
        .and_then(|b| b.try_into().ok().map(u32::from_be_bytes))
        .filter(|n| *n > 0)
        .map(NodeId);
    Ok(Recovered {
        applied: store.applied_lsn()?,
        announced,
        leader,
    })
}

struct ObjectView<'b, 'a> {
    applier: &'b mut Applier<'a>,
    prefix: Vec<u8>,
}

impl ObjectState for ObjectView<'_, '_> {
    fn get(&self, sub: &[u8]) -> Option<Vec<u8>> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(sub);
        match self.applier.objects.get(&k) {
            Some(v) => Some(v.clone()),
            None => self.applier.store.object(&k).ok().flatten(),
        }
    }
    fn put(&mut self, sub: &[u8], value: Vec<u8>) {
        let mut k = self.prefix.clone();
        k.extend_from_slice(sub);
        self.applier.write.put_object(&k, &value);
        self.applier.objects.insert(k, value);
    }
    fn scan(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .applier
            .store
            .objects_with_prefix(&self.prefix)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (k, v) in self.applier.objects.range(self.prefix.clone()..) {
            if !k.starts_with(&self.prefix) {
                break;
            }
            merged.insert(k.clone(), v.clone());
        }
        merged
            .into_iter()
            .map(|(k, v)| (k[self.prefix.len()..].to_vec(), v))
            .collect()
    }
}

impl<'a> Applier<'a> {
    pub fn new(store: &'a PartitionStore, recovered: Recovered) -> Self {
        Applier {
            store,
            objects: BTreeMap::new(),
            dedup: BTreeMap::new(),
            write: PartitionWrite::default(),
            announced: recovered.announced,
            leader: recovered.leader,
            applied: recovered.applied,
            clock_ms: 0,
        }
    }

    pub fn applied(&self) -> Lsn {
        self.applied
    }

    /// The stored result of `request_id`, if it was applied and its entry
    /// had not expired at `now_ms` (a record's timestamp: expiry is decided by
    /// the log, so every replica decides alike, whenever the entry is purged).
    pub fn dedup(&self, request_id: &str, now_ms: u64) -> Option<Response> {
        let k = request_id.as_bytes();
        let bytes = match self.dedup.get(k) {
            Some(v) => Some(v.clone()),
            None => self.store.dedup(k).ok().flatten(),
        }?;
        rmp_serde::from_slice::<DedupEntry>(&bytes)
            .ok()
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| e.response)
    }

    /// Applies the record at `lsn`.
    pub fn apply(&mut self, lsn: Lsn, record: &[u8]) -> Applied {
        debug_assert!(lsn > self.applied, "records are applied in order");
        self.applied = lsn;
        let command = match Command::decode(record) {
            Ok(c) => c,
            Err(e) => {
                // Not ours (or corrupt): skip it deterministically on every replica.
                tracing::warn!(%lsn, "undecodable record skipped: {e}");
                return Applied::Nothing;
            }
        };
        match command {
            Command::AnnounceLeader { epoch, node } => {
                if epoch > self.announced {
                    self.announced = epoch;
                    self.leader = Some(node);
                    self.write.put_meta(META_EPOCH, &epoch.0.to_be_bytes());
                    self.write.put_meta(META_LEADER, &node.0.to_be_bytes());
                }
                // A leader re-announcing its own epoch (after a restart) resumes
                // its reign; anything older is history.
                let current = epoch == self.announced && self.leader == Some(node);
                Applied::Announced {
                    epoch,
                    node,
                    current,
                }
            }
            Command::Invoke(inv) => {
                if inv.epoch != self.announced {
                    let outcome = Outcome::Fenced {
                        epoch: inv.epoch,
                        announced: self.announced,
                    };
                    return Applied::Request(inv.request_id, outcome);
                }
                self.clock_ms = self.clock_ms.max(inv.timestamp_ms);
                if let Some(response) = self.dedup(&inv.request_id, inv.timestamp_ms) {
                    return Applied::Request(inv.request_id, Outcome::Done(response));
                }
                let response = match serde_json::from_slice(&inv.arg) {
                    Ok(arg) => {
                        let mut view = ObjectView {
                            prefix: object_prefix(inv.object, &inv.key),
                            applier: self,
                        };
                        match objects::invoke(inv.object, &inv.handler, &arg, &mut view) {
                            Ok(v) => Response::ok(&v),
                            Err(e) => Response::error(&e),
                        }
                    }
                    Err(e) => Response::error(&HandlerError::BadArgument(e.to_string())),
                };
                let retention = if inv.request_id.starts_with("u:") {
                    USER_KEY_RETENTION_MS
                } else {
                    INTERNAL_RETENTION_MS
                };
                let expires_ms = inv.timestamp_ms.saturating_add(retention);
                let entry = DedupEntry {
                    lsn: lsn.0,
                    expires_ms,
                    response: response.clone(),
                };
                let bytes = rmp_serde::to_vec_named(&entry).expect("encoding a dedup entry");
                self.write.put_dedup(inv.request_id.as_bytes(), &bytes);
                self.dedup.insert(inv.request_id.as_bytes().to_vec(), bytes);
                let mut index = EXPIRY_PREFIX.to_vec();
                index.extend_from_slice(&expires_ms.to_be_bytes());
                index.extend_from_slice(inv.request_id.as_bytes());
                self.write.put_meta(&index, b"");
                Applied::Request(inv.request_id, Outcome::Done(response))
            }
        }
    }

    /// Physically removes dedup entries that expired by the newest record's
    /// clock (they are already ignored by `dedup`).
    fn purge_expired(&mut self) {
        if self.clock_ms == 0 {
            return;
        }
        let mut upto = EXPIRY_PREFIX.to_vec();
        upto.extend_from_slice(&self.clock_ms.to_be_bytes());
        for index in self
            .store
            .meta_range(EXPIRY_PREFIX, &upto)
            .unwrap_or_default()
        {
            let id = &index[EXPIRY_PREFIX.len() + 8..];
            if !self.dedup.contains_key(id) {
                self.write.remove_dedup(id);
            }
            self.write.remove_meta(&index);
        }
    }

    /// The atomic write of everything applied so far.
    pub fn finish(mut self) -> (PartitionWrite, Lsn) {
        self.purge_expired();
        self.write.set_applied(self.applied);
        (self.write, self.applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::types::PartitionId;
    use serde_json::json;

    fn invoke(
        epoch: u64,
        id: &str,
        ts: u64,
        object: ObjectType,
        handler: &str,
        arg: serde_json::Value,
    ) -> Vec<u8> {
        Command::Invoke(Invocation {
            epoch: Epoch(epoch),
            request_id: id.into(),
            timestamp_ms: ts,
            object,
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
        let mut a = Applier::new(&store, recover(&store).unwrap());
        assert_eq!(
            a.apply(Lsn(1), &announce(1, 1)),
            Applied::Announced {
                epoch: Epoch(1),
                node: NodeId(1),
                current: true
            }
        );
        let o = outcome(a.apply(
            Lsn(2),
            &invoke(1, "g:a", 10, ObjectType::Counter, "add", json!(5)),
        ));
        assert_eq!(body(&o), json!(5));
        // The same request id again (an internal retry): same answer, applied once.
        let o = outcome(a.apply(
            Lsn(3),
            &invoke(1, "g:a", 11, ObjectType::Counter, "add", json!(5)),
        ));
        assert_eq!(body(&o), json!(5));
        a.apply(Lsn(4), &announce(2, 2));
        assert_eq!(a.leader, Some(NodeId(2)));
        // A deposed leader's late append is dropped.
        let o = outcome(a.apply(
            Lsn(5),
            &invoke(1, "g:b", 12, ObjectType::Counter, "add", json!(100)),
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
            a.apply(Lsn(6), &announce(1, 1)),
            Applied::Announced {
                epoch: Epoch(1),
                node: NodeId(1),
                current: false
            }
        );
        assert_eq!(a.leader, Some(NodeId(2)));
        let o = outcome(a.apply(
            Lsn(7),
            &invoke(2, "g:c", 13, ObjectType::Counter, "get", json!(null)),
        ));
        assert_eq!(body(&o), json!(5));
        let (write, applied) = a.finish();
        store.apply(write).unwrap();
        assert_eq!(applied, Lsn(7));
        let r = recover(&store).unwrap();
        assert_eq!(
            r,
            Recovered {
                applied: Lsn(7),
                announced: Epoch(2),
                leader: Some(NodeId(2))
            }
        );
        // Undecodable records are skipped, deterministically.
        let mut a = Applier::new(&store, r);
        assert_eq!(a.apply(Lsn(8), b"garbage"), Applied::Nothing);
        assert_eq!(a.applied(), Lsn(8));
    }

    #[test]
    fn dedup_entries_expire_by_the_log_clock() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(1)).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap());
        a.apply(Lsn(1), &announce(1, 1));
        a.apply(
            Lsn(2),
            &invoke(1, "g:x", 1_000, ObjectType::Counter, "add", json!(1)),
        );
        let (w, _) = a.finish();
        store.apply(w).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap());
        assert!(a.dedup("g:x", 2_000).is_some());
        let later = 1_000 + INTERNAL_RETENTION_MS + 1;
        assert!(a.dedup("g:x", later).is_none());
        let o = outcome(a.apply(
            Lsn(3),
            &invoke(1, "g:x", later, ObjectType::Counter, "add", json!(1)),
        ));
        assert_eq!(body(&o), json!(2), "an expired id applies again");
        let (w, _) = a.finish();
        store.apply(w).unwrap();
        assert_eq!(
            store.meta_range(EXPIRY_PREFIX, b"y").unwrap().len(),
            1,
            "old index purged"
        );
    }

    #[test]
    fn set_state_is_visible_within_and_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(2)).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap());
        a.apply(Lsn(1), &announce(1, 1));
        a.apply(
            Lsn(2),
            &invoke(1, "g:1", 1, ObjectType::Set, "add", json!(3)),
        );
        let (w, _) = a.finish();
        store.apply(w).unwrap();
        let mut a = Applier::new(&store, recover(&store).unwrap());
        a.apply(
            Lsn(3),
            &invoke(1, "g:2", 2, ObjectType::Set, "add", json!(1)),
        );
        let o = outcome(a.apply(
            Lsn(4),
            &invoke(1, "g:3", 3, ObjectType::Set, "read", json!(null)),
        ));
        assert_eq!(body(&o), json!([3, 1]));
        let o = outcome(a.apply(
            Lsn(5),
            &invoke(
                1,
                "g:4",
                4,
                ObjectType::Register,
                "cas",
                json!({"expect": 1, "value": 2}),
            ),
        ));
        match o {
            Outcome::Done(r) => assert_eq!(r.status, 412),
            other => panic!("{other:?}"),
        }
    }
}
