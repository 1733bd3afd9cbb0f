//! Records of every loglet this node stores, and each loglet's durable state.
//!
//! Records are stored in *runs*: one sled value holds the records of one
//! store, keyed `(loglet, first offset)` big-endian, so a loglet's runs are
//! one contiguous, ordered key range. One insert per store rather than one
//! per record: sled's per-insert cost (a copy of the leaf page, a log entry,
//! a page rewrite every few updates) dominated the append path, and a run is
//! written atomically. The runs of a loglet never overlap: a store that
//! covers offsets already held (a resend, or a tail repair cut along other
//! boundaries) writes only the missing ones, so every offset has exactly one
//! home and the run before an offset is the only one that can hold it.

use super::{decode, encode, Result, StorageError};
use crate::types::{LogletId, Offset};
use serde::{Deserialize, Serialize};

const RUNS: &str = "log_runs";
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
    runs: sled::Tree,
    loglets: sled::Tree,
}

fn run_key(loglet: LogletId, first: Offset) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&loglet.0.to_be_bytes());
    key[8..].copy_from_slice(&first.to_be_bytes());
    key
}

fn first_of(key: &[u8]) -> Result<Offset> {
    let bytes: [u8; 8] = key
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("run key is not 16 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(reason: &str) -> StorageError {
    StorageError::Corrupt {
        tree: RUNS,
        reason: reason.to_string(),
    }
}

/// A run's value: `[u32 count]` then `count` times `[u32 len][len bytes]`,
/// all big-endian.
fn encode_run<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let bytes: usize = records.iter().map(|r| r.as_ref().len() + 4).sum();
    let mut out = Vec::with_capacity(4 + bytes);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        let r = r.as_ref();
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Number of records in an encoded run (its header only).
fn run_len(value: &[u8]) -> Result<Offset> {
    let bytes: [u8; 4] = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("run shorter than its header"))?;
    Ok(u32::from_be_bytes(bytes) as Offset)
}

/// The records of an encoded run, in order. Checks every length against
/// the value, so a damaged value is an error, never a panic.
fn decode_run(value: &[u8]) -> Result<Vec<&[u8]>> {
    let count = run_len(value)? as usize;
    let mut out = Vec::with_capacity(count.min(value.len() / 4));
    let mut at = 4;
    for _ in 0..count {
        let len: [u8; 4] = value
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("run cut short in a length"))?;
        let len = u32::from_be_bytes(len) as usize;
        at += 4;
        let record = value
            .get(at..at.saturating_add(len))
            .ok_or_else(|| corrupt("run cut short in a record"))?;
        out.push(record);
        at += len;
    }
    if at != value.len() {
        return Err(corrupt("trailing bytes after a run"));
    }
    Ok(out)
}

impl LogStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        Ok(LogStore {
            runs: db.open_tree(RUNS)?,
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

    /// The run that starts at or before `offset`, if it reaches past it:
    /// `(first, end)`. Runs never overlap, so no earlier run can.
    fn run_covering(&self, loglet: LogletId, offset: Offset) -> Result<Option<(Offset, Offset)>> {
        let before = self
            .runs
            .range(run_key(loglet, 0)..=run_key(loglet, offset))
            .next_back()
            .transpose()?;
        Ok(match before {
            Some((k, v)) => {
                let first = first_of(&k)?;
                let end = first + run_len(&v)?;
                (end > offset).then_some((first, end))
            }
            None => None,
        })
    }

    /// Writes `records` at `first, first+1, ...` (not yet durable: see `Storage::sync`).
    /// Offsets already stored are left as they are: a sequencer assigns each
    /// offset exactly once, so a resend or a repair only ever carries the
    /// bytes already there. Each missing stretch is one atomic insert.
    pub fn put_records<R: AsRef<[u8]>>(
        &self,
        loglet: LogletId,
        first: Offset,
        records: &[R],
    ) -> Result<()> {
        let end = first + records.len() as Offset;
        // Stretches of [first, end) already held, in order.
        let mut held = Vec::new();
        if let Some(run) = self.run_covering(loglet, first)? {
            held.push(run);
        }
        for item in self
            .runs
            .range(run_key(loglet, first)..run_key(loglet, end))
        {
            let (k, v) = item?;
            let start = first_of(&k)?;
            if held.last().is_some_and(|&(f, _)| f == start) {
                continue;
            }
            held.push((start, start + run_len(&v)?));
        }
        let mut at = first;
        for (h_first, h_end) in held.into_iter().chain([(end, end)]) {
            if h_first > at {
                let gap = &records[(at - first) as usize..(h_first.min(end) - first) as usize];
                self.runs.insert(run_key(loglet, at), encode_run(gap))?;
            }
            at = at.max(h_end);
            if at >= end {
                break;
            }
        }
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
        let start = match self.run_covering(loglet, from)? {
            Some((first, _)) => first,
            None => from,
        };
        let mut bytes = 0usize;
        for item in self.runs.range(run_key(loglet, start)..run_key(loglet, to)) {
            let (k, v) = item?;
            let run_first = first_of(&k)?;
            for (i, record) in decode_run(&v)?.into_iter().enumerate() {
                let offset = run_first + i as Offset;
                if offset < from {
                    continue;
                }
                if offset >= to || (!out.is_empty() && bytes + record.len() > max_bytes) {
                    return Ok(out);
                }
                bytes += record.len();
                out.push((offset, record.to_vec()));
            }
        }
        Ok(out)
    }

    /// One past the highest offset stored for `loglet` (0 if none).
    pub fn local_tail(&self, loglet: LogletId) -> Result<Offset> {
        let last = self
            .runs
            .range(run_key(loglet, 0)..=run_key(loglet, Offset::MAX))
            .next_back()
            .transpose()?;
        match last {
            Some((k, v)) => Ok(first_of(&k)? + run_len(&v)?),
            None => Ok(0),
        }
    }

    /// End of the contiguous run of stored offsets starting at `from`.
    pub fn contiguous_end(&self, loglet: LogletId, from: Offset) -> Result<Offset> {
        let mut expect = match self.run_covering(loglet, from)? {
            Some((_, end)) => end,
            None => from,
        };
        for item in self
            .runs
            .range(run_key(loglet, expect)..=run_key(loglet, Offset::MAX))
        {
            let (k, v) = item?;
            if first_of(&k)? != expect {
                break;
            }
            expect += run_len(&v)?;
        }
        Ok(expect)
    }

    /// Removes the runs that end at or below `below`. A run reaching past
    /// it stays whole: trimming is a promise about what may go, not what
    /// must.
    pub fn trim(&self, loglet: LogletId, below: Offset) -> Result<()> {
        let mut batch = sled::Batch::default();
        for item in self.runs.range(run_key(loglet, 0)..run_key(loglet, below)) {
            let (k, v) = item?;
            if first_of(&k)? + run_len(&v)? <= below {
                batch.remove(k);
            }
        }
        self.runs.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::types::LogId;

    fn recs(offsets: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        offsets.map(|o| format!("r{o}").into_bytes()).collect()
    }

    fn offsets(s: &LogStore, l: LogletId, from: Offset, to: Offset) -> Vec<Offset> {
        s.read_records(l, from, to, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(o, r)| {
                assert_eq!(r, format!("r{o}").into_bytes(), "record at {o}");
                o
            })
            .collect()
    }

    fn runs(s: &LogStore, l: LogletId) -> Vec<(Offset, Offset)> {
        s.runs
            .range(run_key(l, 0)..=run_key(l, Offset::MAX))
            .map(|item| {
                let (k, v) = item.unwrap();
                let first = first_of(&k).unwrap();
                (first, first + run_len(&v).unwrap())
            })
            .collect()
    }

    #[test]
    fn reads_start_and_stop_inside_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap().log;
        let l = LogletId::new(LogId(1), 0);
        s.put_records(l, 0, &recs(0..5)).unwrap();
        s.put_records(l, 5, &recs(5..9)).unwrap();
        assert_eq!(offsets(&s, l, 3, 7), vec![3, 4, 5, 6]);
        assert_eq!(offsets(&s, l, 8, 100), vec![8]);
        assert_eq!(offsets(&s, l, 9, 100), Vec::<Offset>::new());
        // The byte budget stops mid-run, after at least one record.
        let first_two = s.read_records(l, 2, 9, 5).unwrap();
        assert_eq!(
            first_two.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(s.read_records(l, 2, 9, 0).unwrap().len(), 1);
        assert_eq!(s.local_tail(l).unwrap(), 9);
        assert_eq!(s.contiguous_end(l, 0).unwrap(), 9);
        assert_eq!(s.contiguous_end(l, 6).unwrap(), 9);
    }

    #[test]
    fn overlapping_stores_fill_only_the_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap().log;
        let l = LogletId::new(LogId(2), 1);
        s.put_records(l, 2, &recs(2..4)).unwrap();
        s.put_records(l, 6, &recs(6..8)).unwrap();
        // A repair along other boundaries: covers both runs and the gaps
        // around them.
        s.put_records(l, 0, &recs(0..10)).unwrap();
        assert_eq!(runs(&s, l), vec![(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]);
        assert_eq!(offsets(&s, l, 0, 10), (0..10).collect::<Vec<_>>());
        // A resend of what is held changes nothing; one starting inside a
        // run adds only what lies beyond.
        s.put_records(l, 3, &recs(3..7)).unwrap();
        s.put_records(l, 9, &recs(9..12)).unwrap();
        assert_eq!(
            runs(&s, l),
            vec![(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]
        );
        assert_eq!(offsets(&s, l, 0, 20), (0..12).collect::<Vec<_>>());
        assert_eq!(s.local_tail(l).unwrap(), 12);
    }

    #[test]
    fn gaps_tails_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap().log;
        let l = LogletId::new(LogId(3), 0);
        let other = LogletId::new(LogId(3), 1);
        s.put_records(l, 0, &recs(0..3)).unwrap();
        s.put_records(l, 5, &recs(5..6)).unwrap();
        s.put_records(other, 0, &recs(0..4)).unwrap();
        assert_eq!(offsets(&s, l, 0, 10), vec![0, 1, 2, 5]);
        assert_eq!(s.contiguous_end(l, 0).unwrap(), 3);
        assert_eq!(s.contiguous_end(l, 3).unwrap(), 3);
        assert_eq!(s.contiguous_end(l, 5).unwrap(), 6);
        assert_eq!(s.local_tail(l).unwrap(), 6);
        s.trim(l, 2).unwrap();
        assert_eq!(
            offsets(&s, l, 0, 10),
            vec![0, 1, 2, 5],
            "a straddling run stays"
        );
        s.trim(l, 4).unwrap();
        assert_eq!(offsets(&s, l, 0, 10), vec![5]);
        assert_eq!(
            offsets(&s, other, 0, 10),
            vec![0, 1, 2, 3],
            "other loglets untouched"
        );
    }

    #[test]
    fn damaged_runs_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[0, 0, 0][..],
            &[0, 0, 0, 1][..],
            &[0, 0, 0, 1, 0, 0, 0, 9, 1][..],
            &[0, 0, 0, 1, 0, 0, 0, 1, 1, 7][..],
            &[255, 255, 255, 255, 0, 0, 0, 0][..],
        ] {
            assert!(decode_run(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap().log;
        let l = LogletId::new(LogId(4), 0);
        s.runs
            .insert(run_key(l, 0), &[0, 0, 0, 2, 0, 0, 0, 1, 7][..])
            .unwrap();
        assert!(matches!(
            s.read_records(l, 0, 10, usize::MAX),
            Err(StorageError::Corrupt { .. })
        ));
        s.runs.insert(run_key(l, 0), &[0, 0][..]).unwrap();
        assert!(s.local_tail(l).is_err());
        assert!(s.put_records(l, 1, &recs(1..2)).is_err());
    }
}
