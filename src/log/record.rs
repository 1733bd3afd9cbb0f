//! The unit of the log: an opaque byte string. The log never looks inside;
//! partition processors encode their own commands.

use serde::{Deserialize, Serialize};

/// Largest record the log accepts. Bigger appends are refused with a typed
/// error before anything is written.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Record(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl Record {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Record({} bytes)", self.0.len())
    }
}

impl AsRef<[u8]> for Record {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Record {
    fn from(v: Vec<u8>) -> Self {
        Record(v)
    }
}

impl From<&[u8]> for Record {
    fn from(v: &[u8]) -> Self {
        Record(v.to_vec())
    }
}
