//! A partition processor's durable state: object state, idempotency results
//! and the applied LSN, all in one sled tree so that one batch writes them
//! atomically (the applied LSN never runs ahead of, or behind, the state it
//! covers).

use super::Result;
use crate::types::{Lsn, PartitionId};

const APPLIED: &[u8] = b"\x00applied";
const OBJECT: u8 = b'o';
const DEDUP: u8 = b'd';
const META: u8 = b'm';

#[derive(Clone)]
pub struct PartitionStore {
    tree: sled::Tree,
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

/// Writes that become visible together, with the LSN they bring state up to.
#[derive(Default)]
pub struct PartitionWrite {
    batch: sled::Batch,
    ops: usize,
}

impl PartitionWrite {
    pub fn put_object(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(prefixed(OBJECT, key), value);
        self.ops += 1;
    }
    pub fn put_dedup(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(prefixed(DEDUP, key), value);
        self.ops += 1;
    }
    pub fn remove_dedup(&mut self, key: &[u8]) {
        self.batch.remove(prefixed(DEDUP, key));
        self.ops += 1;
    }
    pub fn remove_meta(&mut self, key: &[u8]) {
        self.batch.remove(prefixed(META, key));
        self.ops += 1;
    }
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(prefixed(META, key), value);
        self.ops += 1;
    }
    pub fn set_applied(&mut self, lsn: Lsn) {
        self.batch.insert(APPLIED, &lsn.0.to_be_bytes());
        self.ops += 1;
    }
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }
}

impl PartitionStore {
    pub(super) fn open(db: &sled::Db, partition: PartitionId) -> Result<Self> {
        Ok(PartitionStore {
            tree: db.open_tree(format!("partition/{}", partition.0))?,
        })
    }

    pub fn applied_lsn(&self) -> Result<Lsn> {
        Ok(match self.tree.get(APPLIED)? {
            Some(v) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                Lsn(u64::from_be_bytes(b))
            }
            _ => Lsn(0),
        })
    }

    pub fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(prefixed(OBJECT, key))?.map(|v| v.to_vec()))
    }

    pub fn dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(prefixed(DEDUP, key))?.map(|v| v.to_vec()))
    }

    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(prefixed(META, key))?.map(|v| v.to_vec()))
    }

    /// Meta keys in `[from, to)` (without their values).
    pub fn meta_range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for item in self.tree.range(prefixed(META, from)..prefixed(META, to)) {
            let (k, _) = item?;
            out.push(k[1..].to_vec());
        }
        Ok(out)
    }

    /// Every object `(key, value)` with keys starting with `prefix`.
    pub fn objects_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefixed(OBJECT, prefix)) {
            let (k, v) = item?;
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Applies `write` atomically (durable after the next `Storage::sync`).
    pub fn apply(&self, write: PartitionWrite) -> Result<()> {
        self.tree.apply_batch(write.batch)?;
        Ok(())
    }
}
