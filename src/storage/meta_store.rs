//! Small durable records of the control plane: the metadata register's
//! acceptor state (one entry per register key; the acceptor core reaches it
//! through [`AcceptorStore`]), and the marks of loglets whose sequencer this
//! node has started (a sequencer never restarts in place).

use super::{decode, encode, Result, StorageError, SyncLane};
use crate::actors::metadata::core::{AcceptorState, AcceptorStore};
use crate::types::LogletId;
use serde::{de::DeserializeOwned, Serialize};

const ACCEPTOR: &str = "meta_acceptor";
const SEQUENCERS: &str = "sequencer_marks";
const REJOIN: &str = "rejoin";
/// The key of [`RejoinProgress`] in the rejoin tree.
const PROGRESS: &[u8] = b"progress";

/// How far a rejoin after a lost disk got (see `actors::rejoin`); read again
/// by every restart during the rejoin, so no step is taken back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RejoinProgress {
    /// Every loglet this node may have held before the wipe is marked lost
    /// (and its sequencer marked started): the log-server may serve.
    pub fenced: bool,
    /// The register rejoin completed: the acceptor may vote.
    pub register_done: bool,
}

#[derive(Clone)]
pub struct MetaStore {
    /// Acceptor state per register key (checksummed values).
    acceptor: sled::Tree,
    /// One empty value per loglet whose sequencer started here.
    sequencers: sled::Tree,
    /// A rejoin's progress (empty unless this node rejoined).
    rejoin: sled::Tree,
    /// Marks every write for the next sync.
    lane: SyncLane,
}

impl MetaStore {
    pub(super) fn open(db: &sled::Db, lane: SyncLane) -> Result<Self> {
        Ok(MetaStore {
            acceptor: db.open_tree(ACCEPTOR)?,
            sequencers: db.open_tree(SEQUENCERS)?,
            rejoin: db.open_tree(REJOIN)?,
            lane,
        })
    }

    pub fn acceptor_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.acceptor
            .get(key.as_bytes())?
            .map(|v| decode(ACCEPTOR, &v))
            .transpose()
    }

    pub fn acceptor_put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.acceptor.insert(key.as_bytes(), encode(value))?;
        self.lane.mark_written();
        Ok(())
    }

    /// Every register key this acceptor holds state for.
    pub fn acceptor_keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for item in self.acceptor.iter().keys() {
            keys.push(String::from_utf8_lossy(&item?).into_owned());
        }
        Ok(keys)
    }

    /// Records that a sequencer for `loglet` was started here.
    pub fn mark_sequencer_started(&self, loglet: LogletId) -> Result<()> {
        self.sequencers.insert(loglet.0.to_be_bytes(), &[])?;
        self.lane.mark_written();
        Ok(())
    }

    pub fn sequencer_was_started(&self, loglet: LogletId) -> Result<bool> {
        Ok(self.sequencers.contains_key(loglet.0.to_be_bytes())?)
    }

    /// A rejoin's progress (the default if none was recorded).
    pub fn rejoin_progress(&self) -> Result<RejoinProgress> {
        self.rejoin
            .get(PROGRESS)?
            .map(|v| decode(REJOIN, &v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Records a rejoin's progress (durable after the next state sync).
    pub fn set_rejoin_progress(&self, progress: RejoinProgress) -> Result<()> {
        self.rejoin.insert(PROGRESS, encode(&progress))?;
        self.lane.mark_written();
        Ok(())
    }
}

/// The acceptor's state in sled (checksummed values, synced with the state
/// lane).
impl AcceptorStore for MetaStore {
    fn get(&self, key: &str) -> std::result::Result<Option<AcceptorState>, StorageError> {
        self.acceptor_get(key)
    }

    fn put(&mut self, key: &str, state: &AcceptorState) -> std::result::Result<(), StorageError> {
        self.acceptor_put(key, state)
    }

    fn keys(&self) -> std::result::Result<Vec<String>, StorageError> {
        self.acceptor_keys()
    }
}
