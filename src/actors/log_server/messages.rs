//! What a log-server answers, locally (actix messages) and over QUIC (the same
//! types, serialized).

use crate::log::Record;
use crate::types::{LogletId, NodeId, Offset};
use actix::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most records in one store; bigger batches are refused.
pub const MAX_STORE_RECORDS: usize = 16 * 1024;
/// Most bytes in one store or one records reply.
pub const MAX_STORE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LogServerError {
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("store of {records} records / {bytes} bytes exceeds the limit")]
    TooLarge { records: usize, bytes: usize },
    #[error("log-server is restarting")]
    Unavailable,
    /// A store's offsets would pass `u64::MAX`.
    #[error("a store of {records} records at offset {first} passes the last offset")]
    OutOfRange { first: Offset, records: usize },
}

impl From<crate::storage::StorageError> for LogServerError {
    fn from(e: crate::storage::StorageError) -> Self {
        LogServerError::Storage(e.to_string())
    }
}

/// Persist `records` at `first..`; acknowledged only once flushed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "StoreReply")]
pub struct Store {
    /// The loglet the records belong to.
    pub loglet: LogletId,
    /// The offset of the first record.
    pub first: Offset,
    /// The records, at `first, first + 1, ...` (shared by the stores of one
    /// batch).
    pub records: Arc<Vec<Record>>,
    /// Every offset below this is committed (piggybacked by the sequencer).
    pub known_global_tail: Offset,
    /// A sealer's tail repair: accepted even when sealed.
    pub repair: bool,
    /// The peer that sent the store, set by the receiving node from the
    /// authenticated connection, never read off the wire (`None`: sent by
    /// this node). Only the commit-progress watch uses it.
    #[serde(skip)]
    pub from: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreReply {
    Stored {
        local_tail: Offset,
    },
    /// The loglet is sealed here; normal stores are refused.
    Sealed {
        local_tail: Offset,
    },
    Failed(LogServerError),
}

/// Seal the loglet here: refuse normal stores from now on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<TailInfo, LogServerError>")]
pub struct Seal {
    /// The loglet to seal.
    pub loglet: LogletId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<TailInfo, LogServerError>")]
pub struct GetTail {
    /// The loglet asked about.
    pub loglet: LogletId,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailInfo {
    /// Whether this server sealed the loglet (refuses normal stores).
    pub sealed: bool,
    /// One past the highest offset stored here.
    pub local_tail: Offset,
    /// Every offset below this is known committed.
    pub known_global_tail: Offset,
    /// This server may have lost records it cannot name (unattributable
    /// damage on disk): a seal must not count it toward its f-majority.
    #[serde(default)]
    pub suspect: bool,
}

/// Records in `[from, to)`. Without `include_uncommitted` only offsets below
/// the known global tail are returned (a sealer reads past it on sealed
/// loglets; a reader that learned the tail elsewhere may too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<RecordsReply, LogServerError>")]
pub struct GetRecords {
    /// The loglet to read.
    pub loglet: LogletId,
    /// The first offset wanted.
    pub from: Offset,
    /// One past the last offset wanted.
    pub to: Offset,
    /// A bound on the reply's size (at least one record is returned).
    pub max_bytes: u32,
    /// Read past the known global tail too.
    pub include_uncommitted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordsReply {
    /// The records held in the range, in offset order.
    pub records: Vec<(Offset, Record)>,
    /// The server's tail info when it read them.
    pub tail: TailInfo,
    /// Offsets of the requested range this server found damaged and has not
    /// stored again since: it may have acknowledged them, so their absence
    /// from `records` is not evidence that they were never written.
    #[serde(default)]
    pub damaged: Vec<Offset>,
    /// This server's trim point: offsets below it were trimmed here and
    /// are gone for good (a reader that finds them nowhere is behind the
    /// trim point and must catch up from a snapshot).
    #[serde(default)]
    pub trimmed_below: Offset,
}

/// Drop records below `below`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<(), LogServerError>")]
pub struct Trim {
    /// The loglet to trim.
    pub loglet: LogletId,
    /// Every offset below this goes (and is committed and applied).
    pub below: Offset,
}

/// One-way: the committed tail advanced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The loglet whose commit advanced.
    pub loglet: LogletId,
    /// Every offset below this is committed.
    pub global_tail: Offset,
}
