//! The vocabulary every module shares: identifiers and positions.
//!
//! All of them are small `Copy` newtypes so a `LogletId` can never be passed
//! where an offset is expected. They serialize as their inner integer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the cluster: `N1`, `N2`, ... (ids start at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N{}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix('N')
            .or_else(|| s.strip_prefix('n'))
            .unwrap_or(s);
        match digits.parse::<u32>() {
            Ok(n) if n > 0 => Ok(NodeId(n)),
            _ => Err(format!(
                "invalid node id {s:?}: expected N1, N2, ... or 1, 2, ..."
            )),
        }
    }
}

/// A shard of the key space. Partition `p` owns log `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A replicated log (one per partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogId(pub u32);

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<PartitionId> for LogId {
    fn from(p: PartitionId) -> Self {
        LogId(p.0)
    }
}

/// One segment's replicated run of records. The id is derived from the log and
/// the segment index, so every sealer racing to extend a chain proposes the same
/// id for the next segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogletId(pub u64);

impl LogletId {
    pub fn new(log: LogId, segment: u32) -> Self {
        LogletId(((log.0 as u64) << 32) | segment as u64)
    }
    pub fn log(self) -> LogId {
        LogId((self.0 >> 32) as u32)
    }
    pub fn segment(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for LogletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.log(), self.segment())
    }
}

/// A position inside one loglet, starting at 0.
pub type Offset = u64;

/// A position in a log, global across segments, starting at 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const OLDEST: Lsn = Lsn(1);
    /// The LSN after this one (`u64::MAX` has none: it stays).
    pub fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition's leadership generation; strictly increasing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// FNV-1a's starting state (see [`fnv1a`]).
pub const FNV1A_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues the FNV-1a hash `h` over `bytes` (start from [`FNV1A_START`]).
/// Stable across builds and machines: what partitioning, type fingerprints,
/// call seeds and the simulator's trace hash are made of.
pub fn fnv1a(h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loglet_id_round_trips_log_and_segment() {
        let id = LogletId::new(LogId(7), 42);
        assert_eq!(id.log(), LogId(7));
        assert_eq!(id.segment(), 42);
        assert_eq!(id.to_string(), "7/42");
    }

    #[test]
    fn node_id_parses_both_spellings() {
        assert_eq!("N3".parse::<NodeId>(), Ok(NodeId(3)));
        assert_eq!("3".parse::<NodeId>(), Ok(NodeId(3)));
        assert!("N0".parse::<NodeId>().is_err());
        assert!("x".parse::<NodeId>().is_err());
    }
}
