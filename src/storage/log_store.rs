//! Records of every loglet this node stores, and each loglet's durable state.
//!
//! Records are keyed `(loglet, offset)` big-endian so a loglet's records are
//! one contiguous, ordered key range.

use super::{decode, encode, Result};
use crate::types::{LogletId, Offset};
use serde::{Deserialize, Serialize};

const RECORDS: &str = "log_records";
const LOGLETS: &str = "log_loglets";

/// What a log-server remembers about one loglet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogletState {
    /// Set (and flushed) by a seal; normal stores are refused afterwards.
    pub sealed: bool,
    /// Highest committed tail this server has been told of: every offset below
    /// it is committed. Reads are served only below it.
    pub known_global_tail: Offset,
    /// Records below this offset were trimmed away.
    pub trim_point: Offset,
}

#[derive(Clone)]
pub struct LogStore {
    records: sled::Tree,
    loglets: sled::Tree,
}

fn record_key(loglet: LogletId, offset: Offset) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&loglet.0.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

fn offset_of(key: &[u8]) -> Offset {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[8..16]);
    u64::from_be_bytes(b)
}

impl LogStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        Ok(LogStore {
            records: db.open_tree(RECORDS)?,
            loglets: db.open_tree(LOGLETS)?,
        })
    }

    pub fn loglet_state(&self, loglet: LogletId) -> Result<LogletState> {
        match self.loglets.get(loglet.0.to_be_bytes())? {
            Some(bytes) => decode(LOGLETS, &bytes),
            None => Ok(LogletState::default()),
        }
    }

    pub fn put_loglet_state(&self, loglet: LogletId, state: &LogletState) -> Result<()> {
        self.loglets.insert(loglet.0.to_be_bytes(), encode(state))?;
        Ok(())
    }

    /// Every loglet this node has state for.
    pub fn loglets(&self) -> Result<Vec<(LogletId, LogletState)>> {
        let mut out = Vec::new();
        for item in self.loglets.iter() {
            let (k, v) = item?;
            let mut b = [0u8; 8];
            if k.len() != 8 {
                continue;
            }
            b.copy_from_slice(&k);
            out.push((LogletId(u64::from_be_bytes(b)), decode(LOGLETS, &v)?));
        }
        Ok(out)
    }

    /// Writes `records` at `first, first+1, ...` (not yet durable: see `Storage::sync`).
    /// Rewriting an offset with the same record is harmless: a sequencer assigns
    /// each offset exactly once, so repairs only ever copy identical bytes.
    pub fn put_records<R: AsRef<[u8]>>(
        &self,
        loglet: LogletId,
        first: Offset,
        records: &[R],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (i, record) in records.iter().enumerate() {
            batch.insert(
                &record_key(loglet, first + i as Offset)[..],
                record.as_ref(),
            );
        }
        self.records.apply_batch(batch)?;
        Ok(())
    }

    /// Records in `[from, to)`, in offset order, stopping after `max_bytes`
    /// (at least one record is returned if any exists). Missing offsets are
    /// simply absent from the result.
    pub fn read_records(
        &self,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Vec<u8>)>> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let mut bytes = 0usize;
        for item in self
            .records
            .range(record_key(loglet, from)..record_key(loglet, to))
        {
            let (k, v) = item?;
            if !out.is_empty() && bytes + v.len() > max_bytes {
                break;
            }
            bytes += v.len();
            out.push((offset_of(&k), v.to_vec()));
        }
        Ok(out)
    }

    /// One past the highest offset stored for `loglet` (0 if none).
    pub fn local_tail(&self, loglet: LogletId) -> Result<Offset> {
        let last = self
            .records
            .range(record_key(loglet, 0)..=record_key(loglet, Offset::MAX))
            .next_back()
            .transpose()?;
        Ok(last.map(|(k, _)| offset_of(&k) + 1).unwrap_or(0))
    }

    /// End of the contiguous run of stored offsets starting at `from`.
    pub fn contiguous_end(&self, loglet: LogletId, from: Offset) -> Result<Offset> {
        let mut expect = from;
        for item in self
            .records
            .range(record_key(loglet, from)..=record_key(loglet, Offset::MAX))
        {
            let (k, _) = item?;
            if offset_of(&k) != expect {
                break;
            }
            expect += 1;
        }
        Ok(expect)
    }

    /// Removes records below `below`.
    pub fn trim(&self, loglet: LogletId, below: Offset) -> Result<()> {
        let mut batch = sled::Batch::default();
        for item in self
            .records
            .range(record_key(loglet, 0)..record_key(loglet, below))
        {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.records.apply_batch(batch)?;
        Ok(())
    }
}
