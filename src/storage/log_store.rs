//! What a log-server keeps: the records of every loglet it stores (in the
//! [`RecordLog`]) and each loglet's small durable state (in sled).

use super::record_log::RecordLog;
use super::{decode, encode, Result, StorageError, SyncLane};
use crate::types::{LogletId, Offset};
use serde::{Deserialize, Serialize};

const LOGLETS: &str = "log_loglets";

/// What a log-server remembers about one loglet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogletState {
    /// Set (and synced) by a seal; normal stores are refused afterwards.
    pub sealed: bool,
    /// Highest committed tail this server has been told of: every offset below
    /// it is committed. Reads are served only below it.
    pub known_global_tail: Offset,
    /// Records below this offset were trimmed away.
    pub trim_point: Offset,
    /// This server lost its copy of the loglet with its disk (marked by a
    /// rejoin's fence, always together with `sealed`): it may once have
    /// acknowledged offsets it no longer holds. It takes no normal store
    /// (sealed), reports every tail as suspect (no seal counts it), takes
    /// repairs, and is cleared once the rejoin copied every record its
    /// peers hold.
    #[serde(default)]
    pub lost: bool,
}

#[derive(Clone)]
pub struct LogStore {
    /// `LogletState` by loglet id (big-endian), in sled.
    loglets: sled::Tree,
    /// The records themselves.
    records: RecordLog,
    /// Marks record writes for the next sync.
    records_lane: SyncLane,
    /// Marks loglet state writes for the next sync.
    state_lane: SyncLane,
}

pub(super) fn open_loglets(db: &sled::Db) -> Result<sled::Tree> {
    Ok(db.open_tree(LOGLETS)?)
}

/// Every loglet state in `tree`.
pub(super) fn loglet_states(tree: &sled::Tree) -> Result<Vec<(LogletId, LogletState)>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let bytes: [u8; 8] = k.as_ref().try_into().map_err(|_| StorageError::Corrupt {
            tree: LOGLETS,
            reason: format!("key of {} bytes", k.len()),
        })?;
        out.push((LogletId(u64::from_be_bytes(bytes)), decode(LOGLETS, &v)?));
    }
    Ok(out)
}

impl LogStore {
    pub(super) fn new(
        loglets: sled::Tree,
        records: RecordLog,
        records_lane: SyncLane,
        state_lane: SyncLane,
    ) -> Self {
        LogStore {
            loglets,
            records,
            records_lane,
            state_lane,
        }
    }

    pub fn loglet_state(&self, loglet: LogletId) -> Result<LogletState> {
        match self.loglets.get(loglet.0.to_be_bytes())? {
            Some(bytes) => decode(LOGLETS, &bytes),
            None => Ok(LogletState::default()),
        }
    }

    pub fn put_loglet_state(&self, loglet: LogletId, state: &LogletState) -> Result<()> {
        self.loglets.insert(loglet.0.to_be_bytes(), encode(state))?;
        self.state_lane.mark_written();
        Ok(())
    }

    /// Every loglet this node has state for.
    pub fn loglets(&self) -> Result<Vec<(LogletId, LogletState)>> {
        loglet_states(&self.loglets)
    }

    /// Writes `records` at `first, first+1, ...` (durable after the next
    /// `Storage::sync`). Offsets already held are left as they are.
    pub fn put_records<R: AsRef<[u8]>>(
        &self,
        loglet: LogletId,
        first: Offset,
        records: &[R],
    ) -> Result<()> {
        self.records.put(loglet, first, records)?;
        self.records_lane.mark_written();
        Ok(())
    }

    /// Records in `[from, to)`, in offset order, stopping after `max_bytes`
    /// (at least one record is returned if any exists). Missing (and
    /// damaged) offsets are simply absent from the result.
    pub fn read_records(
        &self,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Vec<u8>)>> {
        self.records.read(loglet, from, to, max_bytes)
    }

    /// One past the highest offset stored for `loglet` (0 if none).
    pub fn local_tail(&self, loglet: LogletId) -> Result<Offset> {
        Ok(self.records.local_tail(loglet))
    }

    /// End of the contiguous run of stored offsets starting at `from`.
    pub fn contiguous_end(&self, loglet: LogletId, from: Offset) -> Result<Offset> {
        Ok(self.records.contiguous_end(loglet, from))
    }

    /// Drops the records below `below`. The caller records the trim point in
    /// the loglet's state, which is applied again whenever the store opens.
    pub fn trim(&self, loglet: LogletId, below: Offset) -> Result<()> {
        self.records.trim(loglet, below);
        Ok(())
    }

    /// The record log itself (stats, tests).
    pub fn records(&self) -> &RecordLog {
        &self.records
    }
}
