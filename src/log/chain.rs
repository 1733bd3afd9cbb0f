//! A log's chain of segments, kept in the metadata register under `chain/<log>`.
//!
//! Invariants (checked by [`Chain::validate`]):
//! - segments are numbered 0, 1, 2, ... and each one's loglet id is derived
//!   from `(log, index)`, so racing sealers propose the same id for the next one;
//! - every segment but the last is sealed, with `base_lsn(i+1) = base_lsn(i) + sealed_tail(i)`;
//! - the last segment is open: the chain always has exactly one writable loglet.
//!   Sealing the tail and appending its successor happen in one CAS.

use crate::types::{LogId, LogletId, Lsn, NodeId, Offset};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub index: u32,
    /// LSN of the segment's offset 0.
    pub base_lsn: Lsn,
    pub loglet: LogletId,
    pub sequencer: NodeId,
    pub nodeset: Vec<NodeId>,
    pub replication: u8,
    /// Number of records the segment kept, once sealed.
    pub sealed_tail: Option<Offset>,
}

impl Segment {
    pub fn lsn_of(&self, offset: Offset) -> Lsn {
        Lsn(self.base_lsn.0 + offset)
    }
    pub fn offset_of(&self, lsn: Lsn) -> Offset {
        lsn.0 - self.base_lsn.0
    }
    /// One past the last LSN of a sealed segment.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.sealed_tail.map(|t| Lsn(self.base_lsn.0 + t))
    }
    /// The seal quorum: `n - r + 1` servers intersect every write quorum.
    pub fn f_majority(&self) -> usize {
        crate::actors::quorum::f_majority(self.nodeset.len(), self.replication as usize)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub log: LogId,
    pub segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("chain of log {0} is invalid: {1}")]
    Invalid(LogId, String),
}

impl Chain {
    /// The chain of a new log: one open segment starting at LSN 1.
    pub fn initial(log: LogId, sequencer: NodeId, nodeset: Vec<NodeId>, replication: u8) -> Self {
        Chain {
            log,
            segments: vec![Segment {
                index: 0,
                base_lsn: Lsn::OLDEST,
                loglet: LogletId::new(log, 0),
                sequencer,
                nodeset,
                replication,
                sealed_tail: None,
            }],
        }
    }

    /// The open, writable segment.
    pub fn tail(&self) -> &Segment {
        self.segments.last().expect("a chain always has a segment")
    }

    pub fn segment(&self, loglet: LogletId) -> Option<&Segment> {
        self.segments.iter().find(|s| s.loglet == loglet)
    }

    /// The segment that holds `lsn`, or the tail if `lsn` is at or beyond its base.
    pub fn segment_for(&self, lsn: Lsn) -> &Segment {
        self.segments
            .iter()
            .find(|s| match s.end_lsn() {
                Some(end) => lsn < end,
                None => true,
            })
            .unwrap_or_else(|| self.tail())
    }

    /// Seals the tail at `sealed_tail` and opens its successor. Returns `None`
    /// if `loglet` is no longer the tail (someone extended the chain already).
    pub fn sealed_and_extended(
        &self,
        loglet: LogletId,
        sealed_tail: Offset,
        sequencer: NodeId,
        nodeset: Vec<NodeId>,
        replication: u8,
    ) -> Option<Chain> {
        let tail = self.tail();
        if tail.loglet != loglet {
            return None;
        }
        let mut next = self.clone();
        let last = next.segments.last_mut().expect("non-empty");
        last.sealed_tail = Some(sealed_tail);
        let base_lsn = Lsn(last.base_lsn.0 + sealed_tail);
        let index = last.index + 1;
        next.segments.push(Segment {
            index,
            base_lsn,
            loglet: LogletId::new(self.log, index),
            sequencer,
            nodeset,
            replication,
            sealed_tail: None,
        });
        Some(next)
    }

    pub fn validate(&self) -> Result<(), ChainError> {
        let bad = |why: String| Err(ChainError::Invalid(self.log, why));
        if self.segments.is_empty() {
            return bad("no segments".into());
        }
        for (i, s) in self.segments.iter().enumerate() {
            if s.index as usize != i || s.loglet != LogletId::new(self.log, s.index) {
                return bad(format!(
                    "segment {i} has index {} loglet {}",
                    s.index, s.loglet
                ));
            }
            if s.replication == 0 || s.replication as usize > s.nodeset.len() {
                return bad(format!(
                    "segment {i}: replication {} of {}",
                    s.replication,
                    s.nodeset.len()
                ));
            }
            let last = i + 1 == self.segments.len();
            match (s.sealed_tail, last) {
                (None, false) => return bad(format!("segment {i} is open but not last")),
                (Some(_), true) => return bad("last segment is sealed".into()),
                _ => {}
            }
            if let Some(next) = self.segments.get(i + 1) {
                if Some(next.base_lsn) != s.end_lsn() {
                    return bad(format!("segment {} does not start where {i} ends", i + 1));
                }
            }
        }
        Ok(())
    }
}

/// The metadata register key of `log`'s chain.
pub fn chain_key(log: LogId) -> String {
    format!("chain/{}", log.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeId> {
        vec![NodeId(1), NodeId(2), NodeId(3)]
    }

    #[test]
    fn extending_moves_the_base_and_derives_the_loglet_id() {
        let c = Chain::initial(LogId(4), NodeId(1), nodes(), 2);
        c.validate().unwrap();
        assert_eq!(c.tail().f_majority(), 2);
        let c2 = c
            .sealed_and_extended(c.tail().loglet, 10, NodeId(2), nodes(), 2)
            .unwrap();
        c2.validate().unwrap();
        assert_eq!(c2.tail().base_lsn, Lsn(11));
        assert_eq!(c2.tail().loglet, LogletId::new(LogId(4), 1));
        assert_eq!(c2.segment_for(Lsn(10)).index, 0);
        assert_eq!(c2.segment_for(Lsn(11)).index, 1);
        assert_eq!(c2.segment_for(Lsn(500)).index, 1);
        // Extending a loglet that is no longer the tail is a no-op.
        assert!(c2
            .sealed_and_extended(LogletId::new(LogId(4), 0), 3, NodeId(3), nodes(), 2)
            .is_none());
    }

    #[test]
    fn empty_sealed_segments_are_skipped_by_lsn_lookup() {
        let c = Chain::initial(LogId(0), NodeId(1), nodes(), 2);
        let c = c
            .sealed_and_extended(c.tail().loglet, 0, NodeId(2), nodes(), 2)
            .unwrap();
        let c = c
            .sealed_and_extended(c.tail().loglet, 5, NodeId(3), nodes(), 2)
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.segment_for(Lsn(1)).index, 1);
        assert_eq!(c.segment_for(Lsn(6)).index, 2);
    }

    #[test]
    fn validate_rejects_broken_chains() {
        let mut c = Chain::initial(LogId(0), NodeId(1), nodes(), 2);
        c.segments[0].sealed_tail = Some(1);
        assert!(c.validate().is_err());
        let mut c = Chain::initial(LogId(0), NodeId(1), nodes(), 4);
        assert!(c.validate().is_err());
        c.segments.clear();
        assert!(c.validate().is_err());
    }
}
