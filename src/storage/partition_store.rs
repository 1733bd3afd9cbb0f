//! A partition processor's durable state: object state, idempotency results
//! and the applied LSN, all in one sled tree. One write becomes visible as a
//! whole and survives a crash as a whole: the applied LSN never runs ahead
//! of, or behind, the state it covers.
//!
//! How a write stays atomic without `sled::Tree::apply_batch` (whose
//! `pin_log` seals and writes sled's IO buffer twice per call, two extra disk
//! writes per applied batch on every replica): the write is first recorded
//! as a journal, then applied key by key. sled recovers a prefix of its log
//! (after a power loss too: what our sync made durable is a prefix, and
//! sled's recovery stops at the first write that is not intact), so after a
//! crash the journal found is the latest write, the only one that may be
//! partly applied, and nothing later is present; opening the store
//! re-applies it (its puts and removes are absolute, so doing them twice is
//! harmless, even when it had completed).
//!
//! The journal lives in a tree of its own and is overwritten, never removed:
//! one value (the head) for a write up to [`CHUNK_BYTES`], and chunks
//! written before the head for a larger one, every piece stamped with the
//! write's sequence number. A chunk stamped with a later number than the
//! head belongs to a write whose head never landed: that write never
//! started to apply, and the head's own write had completed before it
//! began, so the journal is ignored. (Kept with the state, in the tree's
//! first leaf, the journal made sled copy that leaf, journal and all, on
//! every write, and its removal merged and rewrote it again: under load
//! that was most of a replica's apply time; see docs/PERF.md.)
//!
//! Every value carries a checksum: a damaged value is a `Corrupt` error
//! (the processor stops and is restarted; it never reads damage as absence).

use super::{open_value, seal_value, Result, StorageError, SyncLane};
use crate::types::{Lsn, PartitionId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const APPLIED: &[u8] = b"\x00applied";
/// Where an older keel kept the journal, in the state tree itself:
/// `[u32 chunks]`, then the chunks under `LEGACY_JOURNAL_CHUNK` + index. A
/// store opened with one left there completes it and removes it.
const LEGACY_JOURNAL: &[u8] = b"\x00journal";
const LEGACY_JOURNAL_CHUNK: &[u8] = b"\x00journal/";
/// The head of the latest write's journal, in the journal tree:
/// `[u64 sequence][u32 further chunks]` and the write's first bytes.
const JOURNAL_HEAD: &[u8] = b"head";
/// Chunk `i >= 1` of the journal is `[u64 sequence]` and its bytes, under
/// this prefix and `i` (big-endian u32).
const JOURNAL_CHUNK: &[u8] = b"chunk/";
/// Journals are cut into chunks of at most this many bytes, so no value
/// comes near sled's blob threshold.
const CHUNK_BYTES: usize = 256 * 1024;
const TREE: &str = "partition state";
const OBJECT: u8 = b'o';
const DEDUP: u8 = b'd';
const META: u8 = b'm';

#[derive(Clone)]
pub struct PartitionStore {
    /// Objects, results, meta values and the applied LSN.
    tree: sled::Tree,
    /// The latest write, recorded before it is applied (see the module doc).
    journal: sled::Tree,
    /// The sequence number of the next write's journal: one more than the
    /// head's at open, so every journal piece names the write it belongs to.
    next_write: Arc<AtomicU64>,
    /// Marks every write for the next sync.
    lane: SyncLane,
    /// Reads left to fail (a fault hook for tests; 0 in normal operation).
    fail_reads: Arc<AtomicU64>,
}

fn chunk_key(prefix: &[u8], i: u32) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// `[u64 sequence]` then `parts`, checksummed: one piece of a journal.
fn journal_piece(sequence: u64, parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + parts.iter().map(|p| p.len()).sum::<usize>());
    body.extend_from_slice(&sequence.to_be_bytes());
    for part in parts {
        body.extend_from_slice(part);
    }
    seal_value(&body)
}

/// The sequence number and the rest of a journal piece.
fn open_piece(bytes: &[u8]) -> Result<(u64, &[u8])> {
    let body = open_value(TREE, bytes)?;
    let (seq, rest) = body
        .split_at_checked(8)
        .ok_or_else(|| corrupt("journal piece shorter than its sequence number"))?;
    Ok((u64::from_be_bytes(seq.try_into().expect("8 bytes")), rest))
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

/// Writes that become visible together, with the LSN they bring state up to.
/// In order; a later write to a key wins.
#[derive(Default)]
pub struct PartitionWrite {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl PartitionWrite {
    pub fn put_object(&mut self, key: &[u8], value: &[u8]) {
        self.ops.push((prefixed(OBJECT, key), Some(value.to_vec())));
    }
    pub fn put_dedup(&mut self, key: &[u8], value: &[u8]) {
        self.ops.push((prefixed(DEDUP, key), Some(value.to_vec())));
    }
    pub fn remove_object(&mut self, key: &[u8]) {
        self.ops.push((prefixed(OBJECT, key), None));
    }
    pub fn remove_dedup(&mut self, key: &[u8]) {
        self.ops.push((prefixed(DEDUP, key), None));
    }
    pub fn remove_meta(&mut self, key: &[u8]) {
        self.ops.push((prefixed(META, key), None));
    }
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.ops.push((prefixed(META, key), Some(value.to_vec())));
    }
    pub fn set_applied(&mut self, lsn: Lsn) {
        self.ops
            .push((APPLIED.to_vec(), Some(lsn.0.to_be_bytes().to_vec())));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Puts `value` under a store key (as [`ops`](Self::ops) names them):
    /// how a snapshot's entries are restored. Anything but a key of the
    /// partition's state (an object, a result, a meta value, the applied
    /// LSN) is refused.
    pub fn put_raw(&mut self, store_key: &[u8], value: &[u8]) -> Result<()> {
        Self::check_store_key(store_key)?;
        self.ops.push((store_key.to_vec(), Some(value.to_vec())));
        Ok(())
    }

    /// Removes a store key (see [`put_raw`](Self::put_raw)).
    pub fn remove_raw(&mut self, store_key: &[u8]) -> Result<()> {
        Self::check_store_key(store_key)?;
        self.ops.push((store_key.to_vec(), None));
        Ok(())
    }

    fn check_store_key(key: &[u8]) -> Result<()> {
        match key.first() {
            Some(&OBJECT | &DEDUP | &META) => Ok(()),
            _ if key == APPLIED => Ok(()),
            _ => Err(StorageError::Invalid(format!(
                "{key:?} is not a key of partition state"
            ))),
        }
    }

    /// The writes in order, each a store key (see [`object_key`](Self::object_key)
    /// and its siblings) and its new value (`None`: removed). Other stores of
    /// partition state (the simulator's) lay their keys out the same way.
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }

    /// The store key of an object key.
    pub fn object_key(key: &[u8]) -> Vec<u8> {
        prefixed(OBJECT, key)
    }

    /// The store key of a request's stored result.
    pub fn dedup_key(key: &[u8]) -> Vec<u8> {
        prefixed(DEDUP, key)
    }

    /// The store key of a meta value.
    pub fn meta_key(key: &[u8]) -> Vec<u8> {
        prefixed(META, key)
    }

    /// The store key of the applied LSN (8 bytes, big-endian).
    pub const APPLIED_KEY: &'static [u8] = APPLIED;

    /// `[u32 n]` then per op `[u8 1=put|0=remove][u32 klen][key]` and, for a
    /// put, `[u32 vlen][value]`; big-endian (the journal's encoding).
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .ops
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum();
        let mut out = Vec::with_capacity(4 + size);
        out.extend_from_slice(&(self.ops.len() as u32).to_be_bytes());
        for (k, v) in &self.ops {
            out.push(v.is_some() as u8);
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s output; damage is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, at: 0 };
        let n = r.len()?;
        let mut ops = Vec::with_capacity(n.min(bytes.len() / 9));
        for _ in 0..n {
            let put = match r.take(1)?[0] {
                0 => false,
                1 => true,
                _ => return Err(corrupt("unknown op")),
            };
            let klen = r.len()?;
            let key = r.take(klen)?.to_vec();
            let value = if put {
                let vlen = r.len()?;
                Some(r.take(vlen)?.to_vec())
            } else {
                None
            };
            ops.push((key, value));
        }
        if r.at != bytes.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(PartitionWrite { ops })
    }
}

fn corrupt(reason: &str) -> StorageError {
    StorageError::Corrupt {
        tree: "partition journal",
        reason: reason.to_string(),
    }
}

/// Bounds-checked reading of an encoded journal.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| corrupt("cut short"))?;
        self.at += n;
        Ok(s)
    }

    fn len(&mut self) -> Result<usize> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| corrupt("length"))?;
        Ok(u32::from_be_bytes(b) as usize)
    }
}

impl PartitionStore {
    /// Opens the store and finishes the last write if a crash cut it short.
    /// A partition has one writer (its processor): open the store where
    /// that writer starts, not alongside it.
    pub(super) fn open(db: &sled::Db, partition: PartitionId, lane: SyncLane) -> Result<Self> {
        let store = PartitionStore {
            tree: db.open_tree(format!("partition/{}", partition.0))?,
            journal: db.open_tree(format!("partition/{}/journal", partition.0))?,
            next_write: Arc::new(AtomicU64::new(0)),
            lane,
            fail_reads: Arc::new(AtomicU64::new(0)),
        };
        if let Some(write) = store.legacy_journal()? {
            store.write_through(&write)?;
            store.clear_legacy_journal()?;
        }
        let (sequence, write) = store.read_journal()?;
        store.next_write.store(sequence + 1, Ordering::SeqCst);
        if let Some(write) = write {
            store.write_through(&write)?;
            store.lane.mark_written();
        }
        Ok(store)
    }

    /// The head's sequence number (0: no journal yet) and the latest write,
    /// unless it is known to have completed.
    fn read_journal(&self) -> Result<(u64, Option<PartitionWrite>)> {
        let Some(head) = self.journal.get(JOURNAL_HEAD)? else {
            return Ok((0, None));
        };
        let (sequence, rest) = open_piece(&head)?;
        let (further, first) = rest
            .split_at_checked(4)
            .ok_or_else(|| corrupt("journal head"))?;
        let further = u32::from_be_bytes(further.try_into().expect("4 bytes"));
        let mut bytes = first.to_vec();
        for i in 1..=further {
            let chunk = self
                .journal
                .get(chunk_key(JOURNAL_CHUNK, i))?
                .ok_or_else(|| corrupt("journal chunk missing"))?;
            match open_piece(&chunk)? {
                (s, part) if s == sequence => bytes.extend_from_slice(part),
                // A later write's chunk: that write never started to apply
                // (its head is missing), and this head's write had completed.
                (s, _) if s > sequence => return Ok((s, None)),
                _ => return Err(corrupt("journal chunk older than its head")),
            }
        }
        PartitionWrite::decode(&bytes).map(|w| (sequence, Some(w)))
    }

    /// A journal left in the state tree by an older keel, if any.
    fn legacy_journal(&self) -> Result<Option<PartitionWrite>> {
        let Some(head) = self.tree.get(LEGACY_JOURNAL)? else {
            return Ok(None);
        };
        let head = open_value(TREE, &head)?;
        let chunks = u32::from_be_bytes(head.try_into().map_err(|_| corrupt("journal head"))?);
        let mut bytes = Vec::new();
        for i in 0..chunks {
            let chunk = self
                .tree
                .get(chunk_key(LEGACY_JOURNAL_CHUNK, i))?
                .ok_or_else(|| corrupt("journal chunk missing"))?;
            bytes.extend_from_slice(open_value(TREE, &chunk)?);
        }
        PartitionWrite::decode(&bytes).map(Some)
    }

    fn clear_legacy_journal(&self) -> Result<()> {
        let chunks = match self.tree.get(LEGACY_JOURNAL)? {
            Some(head) => open_value(TREE, &head)
                .ok()
                .and_then(|h| h.try_into().ok())
                .map_or(0, u32::from_be_bytes),
            None => 0,
        };
        self.tree.remove(LEGACY_JOURNAL)?;
        for i in 0..chunks {
            self.tree.remove(chunk_key(LEGACY_JOURNAL_CHUNK, i))?;
        }
        self.lane.mark_written();
        Ok(())
    }

    /// A fault hook for tests: after `skip` more reads succeed, the next
    /// one fails with [`StorageError::Injected`] (once).
    pub fn inject_read_error_after(&self, skip: u64) {
        self.fail_reads.store(skip + 1, Ordering::SeqCst);
    }

    fn read_fault(&self) -> Result<()> {
        // 0: no fault armed; 1: this read fails; n > 1: n - 1 reads to go.
        let armed = self
            .fail_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match armed {
            Ok(1) => Err(StorageError::Injected),
            _ => Ok(()),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_fault()?;
        match self.tree.get(key)? {
            Some(v) => Ok(Some(open_value(TREE, &v)?.to_vec())),
            None => Ok(None),
        }
    }

    pub fn applied_lsn(&self) -> Result<Lsn> {
        match self.get(APPLIED)? {
            Some(v) => {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("applied LSN"))?;
                Ok(Lsn(u64::from_be_bytes(b)))
            }
            None => Ok(Lsn(0)),
        }
    }

    pub fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(&prefixed(OBJECT, key))
    }

    pub fn dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(&prefixed(DEDUP, key))
    }

    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(&prefixed(META, key))
    }

    /// The first `limit` meta entries with keys in `[from, to)`, in order.
    pub fn meta_range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read_fault()?;
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for item in self
            .tree
            .range(prefixed(META, from)..prefixed(META, to))
            .take(limit)
        {
            let (k, v) = item?;
            out.push((k[1..].to_vec(), open_value(TREE, &v)?.to_vec()));
        }
        Ok(out)
    }

    /// Every object `(key, value)` with keys starting with `prefix`.
    pub fn objects_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read_fault()?;
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefixed(OBJECT, prefix)) {
            let (k, v) = item?;
            out.push((k[1..].to_vec(), open_value(TREE, &v)?.to_vec()));
        }
        Ok(out)
    }

    /// Every key and stored value of the partition, in key order (tests
    /// compare replicas byte for byte).
    pub fn dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every key and value of the partition's state, in key order, without
    /// the journal, checksums checked and stripped (a snapshot's entries).
    /// Read inside the partition's single writer, together with the applied
    /// LSN, this is a consistent cut: no write is half applied between two
    /// of the writer's steps.
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read_fault()?;
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            if k.starts_with(LEGACY_JOURNAL) {
                continue;
            }
            out.push((k.to_vec(), open_value(TREE, &v)?.to_vec()));
        }
        Ok(out)
    }

    /// Applies `write` atomically (durable after the next `Storage::sync`).
    /// After an error the write may be partly applied: stop writing and
    /// reopen the store, which completes it.
    pub fn apply(&self, write: PartitionWrite) -> Result<()> {
        if write.is_empty() {
            return Ok(());
        }
        let bytes = write.encode();
        let sequence = self.next_write.fetch_add(1, Ordering::SeqCst);
        let mut chunks = bytes.chunks(CHUNK_BYTES);
        let first = chunks.next().unwrap_or_default();
        let mut further = 0u32;
        for (i, chunk) in chunks.enumerate() {
            further = i as u32 + 1;
            self.journal.insert(
                chunk_key(JOURNAL_CHUNK, further),
                journal_piece(sequence, &[chunk]),
            )?;
        }
        self.journal.insert(
            JOURNAL_HEAD,
            journal_piece(sequence, &[&further.to_be_bytes(), first]),
        )?;
        self.write_through(&write)?;
        self.lane.mark_written();
        Ok(())
    }

    fn write_through(&self, write: &PartitionWrite) -> Result<()> {
        for (key, value) in &write.ops {
            match value {
                Some(v) => self.tree.insert(key.as_slice(), seal_value(v))?,
                None => self.tree.remove(key.as_slice())?,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    fn sample() -> PartitionWrite {
        let mut w = PartitionWrite::default();
        w.put_object(b"Counter/a", b"1");
        w.put_dedup(b"g:1", b"response");
        w.put_meta(b"x-index", b"");
        w.remove_dedup(b"g:0");
        w.remove_meta(b"x-old");
        w.put_object(b"Counter/a", b"2");
        w.set_applied(Lsn(42));
        w
    }

    #[test]
    fn journal_round_trips_and_rejects_damage() {
        let bytes = sample().encode();
        assert_eq!(PartitionWrite::decode(&bytes).unwrap().ops, sample().ops);
        for cut in 0..bytes.len() {
            assert!(
                PartitionWrite::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PartitionWrite::decode(&longer).is_err());
        let mut bad_op = bytes;
        bad_op[4] = 7;
        assert!(PartitionWrite::decode(&bad_op).is_err());
        assert!(PartitionWrite::decode(&[255, 255, 255, 255]).is_err());
    }

    #[test]
    fn a_write_cut_short_is_completed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(3)).unwrap();
        let mut first = PartitionWrite::default();
        first.put_dedup(b"g:0", b"old");
        first.put_meta(b"x-old", b"");
        first.set_applied(Lsn(41));
        store.apply(first).unwrap();
        // A crash after the journal and the first op of the next write.
        let next = sample();
        store
            .journal
            .insert(
                JOURNAL_HEAD,
                journal_piece(9, &[&0u32.to_be_bytes(), &next.encode()]),
            )
            .unwrap();
        store.tree.insert(b"oCounter/a", seal_value(b"1")).unwrap();
        assert_eq!(store.applied_lsn().unwrap(), Lsn(41));
        drop(store);
        let store = storage.partition(PartitionId(3)).unwrap();
        assert_eq!(store.applied_lsn().unwrap(), Lsn(42));
        assert_eq!(store.object(b"Counter/a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.dedup(b"g:1").unwrap(), Some(b"response".to_vec()));
        assert_eq!(store.dedup(b"g:0").unwrap(), None);
        assert_eq!(store.meta(b"x-old").unwrap(), None);
        let keys: Vec<Vec<u8>> = store
            .meta_range(b"x", b"y", usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"x-index".to_vec()]);
        // The journal stays (overwritten by the next write, never removed):
        // opening again re-applies the same write, which changes nothing.
        let before = store.dump().unwrap();
        let store = storage.partition(PartitionId(3)).unwrap();
        assert_eq!(store.dump().unwrap(), before);
        assert_eq!(store.applied_lsn().unwrap(), Lsn(42));
        // The next write's journal continues the sequence.
        let mut third = PartitionWrite::default();
        third.put_object(b"Counter/a", b"3");
        third.set_applied(Lsn(43));
        store.apply(third).unwrap();
        assert_eq!(store.read_journal().unwrap().0, 10);
        let store = storage.partition(PartitionId(3)).unwrap();
        assert_eq!(store.object(b"Counter/a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(store.applied_lsn().unwrap(), Lsn(43));
    }

    #[test]
    fn a_journal_left_in_the_state_tree_by_an_older_keel_is_completed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(6)).unwrap();
        store
            .tree
            .insert(
                chunk_key(LEGACY_JOURNAL_CHUNK, 0),
                seal_value(&sample().encode()),
            )
            .unwrap();
        store
            .tree
            .insert(LEGACY_JOURNAL, seal_value(&1u32.to_be_bytes()))
            .unwrap();
        drop(store);
        let store = storage.partition(PartitionId(6)).unwrap();
        assert_eq!(store.applied_lsn().unwrap(), Lsn(42));
        assert_eq!(store.object(b"Counter/a").unwrap(), Some(b"2".to_vec()));
        assert!(store
            .dump()
            .unwrap()
            .iter()
            .all(|(k, _)| !k.starts_with(LEGACY_JOURNAL)));
    }

    #[tokio::test]
    async fn applied_writes_survive_reopen_of_the_database() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path()).unwrap();
            let store = storage.partition(PartitionId(0)).unwrap();
            store.apply(sample()).unwrap();
            storage.sync().await.unwrap();
        }
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(0)).unwrap();
        assert_eq!(store.applied_lsn().unwrap(), Lsn(42));
        assert_eq!(store.object(b"Counter/a").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn large_writes_are_chunked_and_a_headless_journal_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(4)).unwrap();
        let mut big = PartitionWrite::default();
        for i in 0..40u32 {
            big.put_object(&i.to_be_bytes(), &vec![i as u8; 32 * 1024]);
        }
        big.set_applied(Lsn(7));
        store.apply(big).unwrap();
        assert_eq!(
            store.object(&39u32.to_be_bytes()).unwrap(),
            Some(vec![39; 32 * 1024])
        );
        let (sequence, journal) = store.read_journal().unwrap();
        let further = journal.unwrap().encode().len().div_ceil(CHUNK_BYTES) - 1;
        assert!(further >= 4, "a 1.3 MB write takes several chunks");
        assert!(store
            .journal
            .get(chunk_key(JOURNAL_CHUNK, 1))
            .unwrap()
            .is_some());
        // A crash while the next large write's chunks were being written,
        // before its head: that write never started to apply, and the one
        // before it had completed, so opening ignores the journal.
        let mut next = PartitionWrite::default();
        next.put_object(b"never", b"applied");
        next.set_applied(Lsn(8));
        store
            .journal
            .insert(
                chunk_key(JOURNAL_CHUNK, 1),
                journal_piece(sequence + 1, &[&next.encode()]),
            )
            .unwrap();
        store.tree.insert(b"oCounter/a", seal_value(b"1")).unwrap();
        drop(store);
        let store = storage.partition(PartitionId(4)).unwrap();
        assert_eq!(store.applied_lsn().unwrap(), Lsn(7));
        assert_eq!(store.object(b"never").unwrap(), None);
        // Not re-applied: the value written after the completed write stays.
        assert_eq!(store.object(b"Counter/a").unwrap(), Some(b"1".to_vec()));
        // The next write takes a sequence number after the stray chunk's.
        assert_eq!(store.next_write.load(Ordering::SeqCst), sequence + 2);
    }

    #[test]
    fn entries_restore_into_an_other_store_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let from = storage.partition(PartitionId(6)).unwrap();
        from.apply(sample()).unwrap();
        let entries = from.entries().unwrap();
        assert!(entries.iter().all(|(k, _)| !k.starts_with(LEGACY_JOURNAL)));
        assert!(entries.contains(&(APPLIED.to_vec(), 42u64.to_be_bytes().to_vec())));
        // Another replica with state of its own: every old key goes.
        let to = storage.partition(PartitionId(7)).unwrap();
        let mut old = PartitionWrite::default();
        old.put_object(b"stale", b"x");
        old.set_applied(Lsn(3));
        to.apply(old).unwrap();
        let mut restore = PartitionWrite::default();
        for (k, _) in to.entries().unwrap() {
            restore.remove_raw(&k).unwrap();
        }
        for (k, v) in &entries {
            restore.put_raw(k, v).unwrap();
        }
        to.apply(restore).unwrap();
        assert_eq!(to.entries().unwrap(), entries);
        assert_eq!(to.dump().unwrap(), from.dump().unwrap());
        assert!(PartitionWrite::default()
            .put_raw(b"\x00journal", b"")
            .is_err());
        assert!(PartitionWrite::default().remove_raw(b"").is_err());
    }

    #[test]
    fn damage_and_read_errors_are_errors_not_absence() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = storage.partition(PartitionId(5)).unwrap();
        store.apply(sample()).unwrap();
        let key = prefixed(OBJECT, b"Counter/a");
        let mut raw = store.tree.get(&key).unwrap().unwrap().to_vec();
        raw[4] ^= 1;
        store.tree.insert(&key, raw).unwrap();
        assert!(matches!(
            store.object(b"Counter/a"),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(store.objects_with_prefix(b"Counter").is_err());
        store.inject_read_error_after(1);
        assert_eq!(store.dedup(b"g:1").unwrap(), Some(b"response".to_vec()));
        assert!(matches!(store.dedup(b"g:1"), Err(StorageError::Injected)));
        assert_eq!(store.dedup(b"g:1").unwrap(), Some(b"response".to_vec()));
    }
}
