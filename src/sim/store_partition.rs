//! A partition processor's state on the simulated disk: [`PartitionState`]
//! over [`SimDisk`]'s `State` lane, laid out like `storage::PartitionStore`
//! (the same keys, under a prefix per partition).
//!
//! One `apply` survives a crash as a whole or not at all, as the real store's
//! does: the whole write is first put as one journal value, then key by key,
//! then the journal is removed. A crash keeps a prefix of the lane's unsynced
//! writes, so any key of a write that survived implies its journal did, and
//! opening the store re-applies a journal it finds (its puts and removes are
//! absolute: doing them twice is harmless).

use crate::actors::partition_processor::core::{Entries, PartitionState};
use crate::sim::disk::{Lane, SimDisk};
use crate::storage::{PartitionWrite, StorageError};
use crate::types::{Lsn, PartitionId};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// One node's disk, shared by every store of that node.
pub type SharedDisk = Rc<RefCell<SimDisk>>;

/// The journal of the write being applied (under the partition's prefix).
const JOURNAL: &[u8] = b"\x00journal";

/// One partition's state on a simulated disk.
pub struct SimPartitionStore {
    /// The node's disk.
    disk: SharedDisk,
    /// `partition/<id, 4 bytes BE>/`: every key of this partition starts so.
    prefix: Vec<u8>,
    /// Reads left before one fails (0: no fault armed), for fault tests.
    fail_reads: Cell<u64>,
}

impl SimPartitionStore {
    /// Opens `partition`'s state on `disk`, completing a write a crash cut short.
    pub fn open(disk: SharedDisk, partition: PartitionId) -> Result<Self, StorageError> {
        let mut prefix = b"partition/".to_vec();
        prefix.extend_from_slice(&partition.0.to_be_bytes());
        prefix.push(b'/');
        let store = SimPartitionStore {
            disk,
            prefix,
            fail_reads: Cell::new(0),
        };
        let journal = store.key(JOURNAL);
        let found = store.disk.borrow().get(&journal).map(<[u8]>::to_vec);
        if let Some(bytes) = found {
            let write = PartitionWrite::decode(&bytes)?;
            store.write_through(&write);
            store.disk.borrow_mut().remove(Lane::State, &journal);
        }
        Ok(store)
    }

    /// After `skip` more reads succeed, the next one fails (once) with
    /// [`StorageError::Injected`].
    pub fn inject_read_error_after(&self, skip: u64) {
        self.fail_reads.set(skip + 1);
    }

    /// Every key (without the partition's prefix) and value, in order: two
    /// replicas that applied the same log hold the same.
    pub fn dump(&self) -> Entries {
        let disk = self.disk.borrow();
        disk.scan_prefix(&self.prefix)
            .map(|(k, v)| (k[self.prefix.len()..].to_vec(), v.to_vec()))
            .collect()
    }

    fn key(&self, store_key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(store_key);
        k
    }

    fn read_fault(&self) -> Result<(), StorageError> {
        match self.fail_reads.get() {
            0 => Ok(()),
            1 => {
                self.fail_reads.set(0);
                Err(StorageError::Injected)
            }
            n => {
                self.fail_reads.set(n - 1);
                Ok(())
            }
        }
    }

    fn get(&self, store_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.read_fault()?;
        Ok(self
            .disk
            .borrow()
            .get(&self.key(store_key))
            .map(<[u8]>::to_vec))
    }

    fn write_through(&self, write: &PartitionWrite) {
        let mut disk = self.disk.borrow_mut();
        for (k, v) in write.ops() {
            match v {
                Some(v) => disk.put(Lane::State, self.key(k), v.clone()),
                None => disk.remove(Lane::State, &self.key(k)),
            }
        }
    }
}

impl PartitionState for SimPartitionStore {
    fn applied_lsn(&self) -> Result<Lsn, StorageError> {
        match self.get(PartitionWrite::APPLIED_KEY)? {
            None => Ok(Lsn(0)),
            Some(v) => {
                let b: [u8; 8] = v.as_slice().try_into().map_err(|_| StorageError::Corrupt {
                    tree: "sim partition state",
                    reason: format!("the applied LSN has {} bytes", v.len()),
                })?;
                Ok(Lsn(u64::from_be_bytes(b)))
            }
        }
    }

    fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(&PartitionWrite::object_key(key))
    }

    fn dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(&PartitionWrite::dedup_key(key))
    }

    fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(&PartitionWrite::meta_key(key))
    }

    fn meta_range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StorageError> {
        self.read_fault()?;
        if from >= to {
            return Ok(Vec::new());
        }
        let (lo, hi) = (
            self.key(&PartitionWrite::meta_key(from)),
            self.key(&PartitionWrite::meta_key(to)),
        );
        // Store keys are the kind byte, then the key.
        let skip = self.prefix.len() + 1;
        let disk = self.disk.borrow();
        Ok(disk
            .range(&lo, &hi)
            .take(limit)
            .map(|(k, v)| (k[skip..].to_vec(), v.to_vec()))
            .collect())
    }

    fn objects_with_prefix(&self, prefix: &[u8]) -> Result<Entries, StorageError> {
        self.read_fault()?;
        let start = self.key(&PartitionWrite::object_key(prefix));
        let skip = self.prefix.len() + 1;
        let disk = self.disk.borrow();
        Ok(disk
            .scan_prefix(&start)
            .map(|(k, v)| (k[skip..].to_vec(), v.to_vec()))
            .collect())
    }

    fn entries(&self) -> Result<Entries, StorageError> {
        self.read_fault()?;
        let mut entries = self.dump();
        entries.retain(|(k, _)| k != JOURNAL);
        Ok(entries)
    }

    fn apply(&mut self, write: PartitionWrite) -> Result<(), StorageError> {
        if write.is_empty() {
            return Ok(());
        }
        let journal = self.key(JOURNAL);
        self.disk
            .borrow_mut()
            .put(Lane::State, journal.clone(), write.encode());
        self.write_through(&write);
        self.disk.borrow_mut().remove(Lane::State, &journal);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The write of batch `i`: object `k<i>` = `i`, the counter `all` = `i`,
    /// the removal of `k<i-2>`, and applied LSN `i`.
    fn batch(i: u64) -> PartitionWrite {
        let mut w = PartitionWrite::default();
        w.put_object(format!("k{i}").as_bytes(), &i.to_be_bytes());
        w.put_object(b"all", &i.to_be_bytes());
        if i >= 2 {
            w.remove_object(format!("k{}", i - 2).as_bytes());
        }
        w.put_meta(b"m", &i.to_be_bytes());
        w.set_applied(Lsn(i));
        w
    }

    /// The state after batches `1..=upto`, exactly.
    fn expected(store: &SimPartitionStore, upto: u64) {
        assert_eq!(store.applied_lsn().unwrap(), Lsn(upto));
        let all = store.object(b"all").unwrap();
        assert_eq!(all, (upto > 0).then(|| upto.to_be_bytes().to_vec()));
        let objects = store.objects_with_prefix(b"k").unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = (upto.saturating_sub(1).max(1)..=upto)
            .filter(|i| *i > 0)
            .map(|i| (format!("k{i}").into_bytes(), i.to_be_bytes().to_vec()))
            .collect();
        assert_eq!(objects, want, "objects after batch {upto}");
        assert_eq!(
            store.meta_range(b"m", b"n", usize::MAX).unwrap().len(),
            usize::from(upto > 0)
        );
        assert!(
            store.dump().iter().all(|(k, _)| k != JOURNAL),
            "journal cleared"
        );
    }

    #[test]
    fn a_crash_keeps_every_synced_batch_and_whole_batches_of_the_rest() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut outcomes = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let disk: SharedDisk = Rc::default();
            let mut store = SimPartitionStore::open(disk.clone(), PartitionId(3)).unwrap();
            // Another partition's state is not this one's.
            let mut other = SimPartitionStore::open(disk.clone(), PartitionId(4)).unwrap();
            other.apply(batch(1)).unwrap();
            let total = rng.gen_range(1..=8u64);
            let synced = rng.gen_range(0..=total);
            for i in 1..=total {
                store.apply(batch(i)).unwrap();
                if i == synced {
                    disk.borrow_mut().sync(Lane::State);
                }
            }
            expected(&store, total);
            disk.borrow_mut().crash(&mut rng);
            let store = SimPartitionStore::open(disk.clone(), PartitionId(3)).unwrap();
            let survived = store.applied_lsn().unwrap().0;
            assert!(
                (synced..=total).contains(&survived),
                "synced {synced}, wrote {total}, found {survived}"
            );
            expected(&store, survived);
            outcomes.insert((survived == synced, survived == total));
        }
        assert!(
            outcomes.len() >= 3,
            "crashes kept none, some and all: {outcomes:?}"
        );
    }

    #[test]
    fn read_errors_are_errors_and_empty_writes_write_nothing() {
        let disk: SharedDisk = Rc::default();
        let mut store = SimPartitionStore::open(disk.clone(), PartitionId(0)).unwrap();
        store.apply(PartitionWrite::default()).unwrap();
        assert!(!disk.borrow().is_dirty(Lane::State));
        store.apply(batch(1)).unwrap();
        store.inject_read_error_after(1);
        assert!(store.object(b"all").unwrap().is_some());
        assert!(matches!(store.object(b"all"), Err(StorageError::Injected)));
        assert!(store.object(b"all").unwrap().is_some(), "once");
        assert!(store.meta_range(b"n", b"m", usize::MAX).unwrap().is_empty());
    }
}
