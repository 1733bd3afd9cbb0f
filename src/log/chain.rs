//! A log's chain of segments, kept in the metadata register under `chain/<log>`.
//!
//! Invariants (checked by [`Chain::validate`] and [`Segment::validate`]):
//! - segments are numbered consecutively (0, 1, 2, ... until trimming drops
//!   the oldest, see [`Chain::trimmed_below`]) and each one's loglet id is
//!   derived from `(log, index)`, so racing sealers propose the same id for
//!   the next one;
//! - each segment has a non-empty nodeset without duplicates, a replication
//!   factor `1 <= r <= n`, and a base LSN of at least 1 whose end (base plus
//!   sealed tail) fits in a `u64`;
//! - every segment but the last is sealed, with `base_lsn(i+1) = base_lsn(i) + sealed_tail(i)`;
//! - the last segment is open: the chain always has exactly one writable loglet.
//!   Sealing the tail and appending its successor happen in one CAS.
//!
//! Both types check these when they are decoded (`serde(try_from)`): a chain
//! or segment that came off the wire or out of the register is valid, or it
//! is a decode error. [`Chain::sealed_and_extended`] validates what it
//! builds; [`Chain::initial`] is given the node's validated configuration.

use crate::types::{LogId, LogletId, Lsn, NodeId, Offset};
use serde::{Deserialize, Serialize};

/// One run of a log's records: a loglet, its sequencer and how it is
/// replicated; sealed once it has a `sealed_tail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSegment")]
pub struct Segment {
    /// Position in the chain (0 for the first segment).
    pub index: u32,
    /// LSN of the segment's offset 0.
    pub base_lsn: Lsn,
    /// The loglet holding the segment's records.
    pub loglet: LogletId,
    /// The node whose sequencer assigns its offsets.
    pub sequencer: NodeId,
    /// The log-servers that store its records.
    pub nodeset: Vec<NodeId>,
    /// How many of the nodeset store a record before it commits (`r`).
    pub replication: u8,
    /// Number of records the segment kept, once sealed.
    pub sealed_tail: Option<Offset>,
}

/// A segment as encoded, before it is checked.
#[derive(Deserialize)]
struct RawSegment {
    /// See [`Segment::index`].
    index: u32,
    /// See [`Segment::base_lsn`].
    base_lsn: Lsn,
    /// See [`Segment::loglet`].
    loglet: LogletId,
    /// See [`Segment::sequencer`].
    sequencer: NodeId,
    /// See [`Segment::nodeset`].
    nodeset: Vec<NodeId>,
    /// See [`Segment::replication`].
    replication: u8,
    /// See [`Segment::sealed_tail`].
    sealed_tail: Option<Offset>,
}

impl TryFrom<RawSegment> for Segment {
    type Error = ChainError;
    fn try_from(raw: RawSegment) -> Result<Self, ChainError> {
        let s = Segment {
            index: raw.index,
            base_lsn: raw.base_lsn,
            loglet: raw.loglet,
            sequencer: raw.sequencer,
            nodeset: raw.nodeset,
            replication: raw.replication,
            sealed_tail: raw.sealed_tail,
        };
        s.validate()?;
        Ok(s)
    }
}

impl Segment {
    /// The LSN of `offset`, `None` past the last LSN there is.
    pub fn lsn_of(&self, offset: Offset) -> Option<Lsn> {
        self.base_lsn.0.checked_add(offset).map(Lsn)
    }
    /// The offset of `lsn`, `None` if `lsn` lies before this segment.
    pub fn offset_of(&self, lsn: Lsn) -> Option<Offset> {
        lsn.0.checked_sub(self.base_lsn.0)
    }
    /// One past the last LSN of a sealed segment (it fits: see [`validate`](Self::validate)).
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.sealed_tail
            .and_then(|t| self.base_lsn.0.checked_add(t))
            .map(Lsn)
    }
    /// The seal quorum: `n - r + 1` servers intersect every write quorum.
    /// (`1 <= r <= n` holds for every decoded or built segment.)
    pub fn f_majority(&self) -> usize {
        crate::actors::quorum::f_majority(self.nodeset.len(), self.replication as usize)
    }

    /// Checks what a sequencer, a sealer and a reader rely on.
    pub fn validate(&self) -> Result<(), ChainError> {
        let log = self.loglet.log();
        let bad = |why: String| Err(ChainError::Invalid(log, why));
        let i = self.index;
        if self.loglet != LogletId::new(log, i) {
            return bad(format!("segment {i} has loglet {}", self.loglet));
        }
        if self.nodeset.is_empty() {
            return bad(format!("segment {i} has an empty nodeset"));
        }
        let mut nodes = self.nodeset.clone();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.len() != self.nodeset.len() {
            return bad(format!("segment {i} names a node twice in its nodeset"));
        }
        if nodes.iter().chain([&self.sequencer]).any(|n| n.0 == 0) {
            return bad(format!("segment {i} names node 0"));
        }
        if self.replication == 0 || self.replication as usize > self.nodeset.len() {
            return bad(format!(
                "segment {i}: replication {} of {}",
                self.replication,
                self.nodeset.len()
            ));
        }
        if self.base_lsn < Lsn::OLDEST {
            return bad(format!("segment {i} starts at LSN 0"));
        }
        if let Some(t) = self.sealed_tail {
            if self.base_lsn.0.checked_add(t).is_none() {
                return bad(format!(
                    "segment {i}: base {} plus sealed tail {t} overflows",
                    self.base_lsn
                ));
            }
        }
        Ok(())
    }
}

/// A log's segments (the value of `chain/<log>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawChain")]
pub struct Chain {
    /// The log this chain belongs to.
    pub log: LogId,
    /// The segments in LSN order; only the last is writable.
    pub segments: Vec<Segment>,
}

/// A chain as encoded, before it is checked (its segments are checked one
/// by one as they decode).
#[derive(Deserialize)]
struct RawChain {
    /// See [`Chain::log`].
    log: LogId,
    /// See [`Chain::segments`].
    segments: Vec<Segment>,
}

impl TryFrom<RawChain> for Chain {
    type Error = ChainError;
    fn try_from(raw: RawChain) -> Result<Self, ChainError> {
        let c = Chain {
            log: raw.log,
            segments: raw.segments,
        };
        c.validate()?;
        Ok(c)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("chain of log {0} is invalid: {1}")]
    Invalid(LogId, String),
    /// Extending a loglet that is no longer the chain's tail.
    #[error("loglet {0} is not the tail of its chain")]
    NotTail(LogletId),
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

    /// The first LSN the chain still maps: everything below it was trimmed
    /// and its segments left the chain.
    pub fn first_lsn(&self) -> Lsn {
        self.segments.first().map_or(Lsn::OLDEST, |s| s.base_lsn)
    }

    /// The chain without its leading sealed segments that end at or below
    /// `below` (their records are trimmed on every server); `None` if there
    /// is none to drop. The open tail always stays, so does every LSN
    /// mapping of what remains: this keeps the chain (and every register
    /// round that carries it) as small as the untrimmed part of the log.
    pub fn trimmed_below(&self, below: Lsn) -> Option<Chain> {
        let drop = self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
            .take_while(|s| s.end_lsn().is_some_and(|end| end <= below))
            .count();
        if drop == 0 {
            return None;
        }
        Some(Chain {
            log: self.log,
            segments: self.segments[drop..].to_vec(),
        })
    }

    /// The open, writable segment.
    pub fn tail(&self) -> &Segment {
        // Every chain that was decoded passed `validate` (serde `try_from`),
        // every chain built here starts with a segment, grows, and drops
        // only sealed segments before its tail: none is ever empty.
        self.segments.last().expect("a chain always has a segment")
    }

    pub fn segment(&self, loglet: LogletId) -> Option<&Segment> {
        self.segments.iter().find(|s| s.loglet == loglet)
    }

    /// The segment that holds `lsn`, or the tail if `lsn` is at or beyond
    /// its base (the first segment if `lsn` is below [`first_lsn`](Self::first_lsn):
    /// callers check that first).
    pub fn segment_for(&self, lsn: Lsn) -> &Segment {
        self.segments
            .iter()
            .find(|s| match s.end_lsn() {
                Some(end) => lsn < end,
                None => true,
            })
            .unwrap_or_else(|| self.tail())
    }

    /// Seals the tail at `sealed_tail` and opens its successor. `NotTail` if
    /// `loglet` is no longer the tail (someone extended the chain already);
    /// `Invalid` if the result would not be a valid chain (the tail's LSNs
    /// would overflow, or the new segment's nodeset is unusable).
    pub fn sealed_and_extended(
        &self,
        loglet: LogletId,
        sealed_tail: Offset,
        sequencer: NodeId,
        nodeset: Vec<NodeId>,
        replication: u8,
    ) -> Result<Chain, ChainError> {
        let tail = self.tail();
        if tail.loglet != loglet {
            return Err(ChainError::NotTail(loglet));
        }
        let invalid = |why: String| ChainError::Invalid(self.log, why);
        let base_lsn = tail
            .base_lsn
            .0
            .checked_add(sealed_tail)
            .map(Lsn)
            .ok_or_else(|| invalid(format!("sealing {loglet} at {sealed_tail} overflows")))?;
        let index = tail
            .index
            .checked_add(1)
            .ok_or_else(|| invalid("no segment index left".into()))?;
        let mut next = self.clone();
        if let Some(last) = next.segments.last_mut() {
            last.sealed_tail = Some(sealed_tail);
        }
        next.segments.push(Segment {
            index,
            base_lsn,
            loglet: LogletId::new(self.log, index),
            sequencer,
            nodeset,
            replication,
            sealed_tail: None,
        });
        next.validate()?;
        Ok(next)
    }

    pub fn validate(&self) -> Result<(), ChainError> {
        let bad = |why: String| Err(ChainError::Invalid(self.log, why));
        if self.segments.is_empty() {
            return bad("no segments".into());
        }
        let first = self.segments[0].index;
        for (i, s) in self.segments.iter().enumerate() {
            let expected = u32::try_from(i).ok().and_then(|i| first.checked_add(i));
            if Some(s.index) != expected || s.loglet != LogletId::new(self.log, s.index) {
                return bad(format!(
                    "segment {i} has index {} loglet {}",
                    s.index, s.loglet
                ));
            }
            s.validate()?;
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
            .is_err());
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

    #[test]
    fn trimmed_segments_leave_the_chain_and_it_stays_bounded() {
        let mut c = Chain::initial(LogId(1), NodeId(1), nodes(), 2);
        let mut largest = 0;
        for i in 0..10_000u64 {
            c = c
                .sealed_and_extended(
                    c.tail().loglet,
                    i % 3,
                    NodeId(1 + (i % 3) as u32),
                    nodes(),
                    2,
                )
                .unwrap();
            // A trim every 50 seals, below the last 20 segments.
            if i % 50 == 49 {
                let keep_from = c.segments[c.segments.len() - 20].base_lsn;
                if let Some(t) = c.trimmed_below(keep_from) {
                    assert!(t.first_lsn() <= keep_from, "nothing untrimmed dropped");
                    assert_eq!(t.tail(), c.tail());
                    // The rest maps LSNs exactly as before.
                    for s in &t.segments {
                        assert_eq!(c.segment(s.loglet), Some(s));
                    }
                    c = t;
                }
            }
            c.validate().unwrap();
            largest = largest.max(encoded(&c).len());
        }
        assert_eq!(c.tail().index, 10_000, "every seal extended the chain");
        assert!(c.segments.len() <= 70, "{} segments kept", c.segments.len());
        assert!(largest < 8 * 1024, "the chain peaked at {largest} bytes");
        // A trimmed chain decodes (its first index is not 0).
        assert_eq!(rmp_serde::from_slice::<Chain>(&encoded(&c)).unwrap(), c);
        // Nothing to drop: the open tail and anything above `below` stay.
        let fresh = Chain::initial(LogId(1), NodeId(1), nodes(), 2);
        assert_eq!(fresh.trimmed_below(Lsn(1_000)), None);
        let one = fresh
            .sealed_and_extended(fresh.tail().loglet, 5, NodeId(2), nodes(), 2)
            .unwrap();
        assert_eq!(one.trimmed_below(Lsn(5)), None, "segment 0 ends at 6");
        let t = one.trimmed_below(Lsn(6)).unwrap();
        assert_eq!((t.segments.len(), t.first_lsn()), (1, Lsn(6)));
        // A gap in the numbering does not decode.
        let mut gap = c.clone();
        gap.segments.remove(1);
        assert!(rmp_serde::from_slice::<Chain>(&encoded(&gap)).is_err());
    }

    fn encoded<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn invalid_chains_and_segments_do_not_decode() {
        let good = Chain::initial(LogId(2), NodeId(1), nodes(), 2);
        assert_eq!(
            rmp_serde::from_slice::<Chain>(&encoded(&good)).unwrap(),
            good
        );
        let mut broken: Vec<Chain> = Vec::new();
        let mut c = good.clone();
        c.segments.clear();
        broken.push(c);
        let mut c = good.clone();
        c.segments[0].sealed_tail = Some(3);
        broken.push(c);
        let mut c = good.clone();
        c.segments[0].nodeset = vec![NodeId(1), NodeId(1)];
        broken.push(c);
        let mut c = good.clone();
        c.segments[0].nodeset.clear();
        c.segments[0].replication = 0;
        broken.push(c);
        let mut c = good.clone();
        c.segments[0].replication = 0;
        broken.push(c);
        let mut c = good.clone();
        c.segments[0].base_lsn = Lsn(0);
        broken.push(c);
        let mut c = good.clone();
        c.segments[0].loglet = LogletId::new(LogId(3), 0);
        broken.push(c);
        // Two segments, the first sealed so that its end overflows.
        let mut c = good
            .sealed_and_extended(good.tail().loglet, 5, NodeId(2), nodes(), 2)
            .unwrap();
        c.segments[0].base_lsn = Lsn(u64::MAX - 1);
        broken.push(c);
        for c in broken {
            let err = rmp_serde::from_slice::<Chain>(&encoded(&c)).unwrap_err();
            assert!(err.to_string().contains("invalid"), "{c:?}: {err}");
        }
        let mut s = good.tail().clone();
        s.replication = 4;
        assert!(rmp_serde::from_slice::<Segment>(&encoded(&s)).is_err());
    }

    #[test]
    fn lsn_arithmetic_never_overflows() {
        let c = Chain::initial(LogId(0), NodeId(1), nodes(), 2);
        let s = c.tail();
        assert_eq!(s.lsn_of(4), Some(Lsn(5)));
        assert_eq!(s.lsn_of(u64::MAX), None);
        assert_eq!(s.offset_of(Lsn(0)), None);
        assert_eq!(s.offset_of(Lsn(1)), Some(0));
        assert_eq!(
            c.sealed_and_extended(s.loglet, u64::MAX, NodeId(2), nodes(), 2),
            Err(ChainError::Invalid(
                LogId(0),
                "sealing 0/0 at 18446744073709551615 overflows".into()
            ))
        );
        let c = c
            .sealed_and_extended(s.loglet, u64::MAX - 1, NodeId(2), nodes(), 2)
            .unwrap();
        assert_eq!(c.tail().base_lsn, Lsn(u64::MAX));
        assert_eq!(c.segment_for(Lsn(u64::MAX)).index, 1);
        assert!(c
            .sealed_and_extended(c.tail().loglet, 1, NodeId(2), nodes(), 2)
            .is_err());
        // A bad nodeset for the next segment is refused, not built.
        let c = Chain::initial(LogId(0), NodeId(1), nodes(), 2);
        assert!(c
            .sealed_and_extended(c.tail().loglet, 1, NodeId(2), Vec::new(), 2)
            .is_err());
    }
}
