//! Appending to a loglet's sequencer.

use super::core::AppendOutcome;
use crate::log::{Record, Segment};
use actix::Message;
use serde::{Deserialize, Serialize};

/// Append `records` to the open segment `segment` (as the appender read it
/// from the chain: a segment's sequencer, nodeset and base never change, so
/// the sequencer's node can start serving it without a fresh chain of its own).
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "Result<AppendOutcome, SequencerError>")]
pub struct Append {
    /// The segment appended to.
    pub segment: Segment,
    /// The records, in order.
    pub records: Vec<Record>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SequencerError {
    /// The segment names another node as its sequencer.
    #[error("node is not the sequencer of loglet {0}")]
    NotSequencer(crate::types::LogletId),
    /// This node sequenced the loglet before and lost its in-memory state
    /// (restart): it must be sealed, never resumed.
    #[error("sequencer of loglet {0} is gone; the loglet must be sealed")]
    Gone(crate::types::LogletId),
    #[error("append of {records} records / {bytes} bytes exceeds the limit")]
    TooLarge { records: usize, bytes: usize },
    #[error("sequencer storage failure: {0}")]
    Storage(String),
    /// The append itself is malformed (no records, or a segment no
    /// sequencer can serve); nothing was assigned.
    #[error("invalid append: {0}")]
    Invalid(String),
}
