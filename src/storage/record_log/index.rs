//! Where each stored offset lives, without I/O.
//!
//! Per loglet, a map of non-overlapping *pieces*: a stretch `[lo, hi)` of
//! offsets held by one on-disk entry (which may hold more: a piece shrinks
//! when part of its entry is trimmed or found damaged). Every stored offset
//! has exactly one home, so a read never has to choose between copies. The
//! index also counts live pieces per segment file: a file none refers to
//! can be deleted.

use crate::types::{LogletId, Offset};
use std::collections::{BTreeMap, HashMap};

/// An entry's place on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Which segment file.
    pub segment: u64,
    /// Byte position of the entry in it.
    pub pos: u64,
    /// Length of the whole entry (header and payload).
    pub len: u64,
}

/// Offsets `[lo, hi)` of one loglet, read from the entry at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub lo: Offset,
    pub hi: Offset,
    pub at: Location,
}

#[derive(Default)]
pub struct Index {
    /// Pieces of each loglet, keyed by `lo`.
    loglets: HashMap<LogletId, BTreeMap<Offset, Piece>>,
    /// Live pieces per segment file (absent: none).
    live: BTreeMap<u64, usize>,
}

impl Index {
    /// The stretches of `[first, end)` no piece holds, in order.
    pub fn missing(&self, loglet: LogletId, first: Offset, end: Offset) -> Vec<(Offset, Offset)> {
        let mut out = Vec::new();
        let mut at = first;
        for p in self.overlapping(loglet, first, end) {
            if p.lo > at {
                out.push((at, p.lo));
            }
            at = at.max(p.hi);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// Adds a piece where nothing is held (callers pass a stretch from
    /// [`missing`](Self::missing)).
    pub fn insert(&mut self, loglet: LogletId, piece: Piece) {
        debug_assert!(piece.lo < piece.hi);
        debug_assert!(self.overlapping(loglet, piece.lo, piece.hi).is_empty());
        self.loglets
            .entry(loglet)
            .or_default()
            .insert(piece.lo, piece);
        *self.live.entry(piece.at.segment).or_default() += 1;
    }

    /// Adds a piece over whatever held its offsets: when a scan meets an
    /// offset twice (a damaged copy re-stored later), the later copy wins.
    /// Returns the segments left without live pieces.
    pub fn insert_over(&mut self, loglet: LogletId, piece: Piece) -> Vec<u64> {
        let emptied = self.remove_range(loglet, piece.lo, piece.hi);
        self.insert(loglet, piece);
        emptied
            .into_iter()
            .filter(|s| *s != piece.at.segment)
            .collect()
    }

    /// Forgets offsets `[lo, hi)` of `loglet` (splitting pieces that reach
    /// past either end). Returns the segments left without live pieces.
    pub fn remove_range(&mut self, loglet: LogletId, lo: Offset, hi: Offset) -> Vec<u64> {
        let hit = self.overlapping(loglet, lo, hi);
        let mut emptied = Vec::new();
        if hit.is_empty() {
            return emptied;
        }
        let pieces = self
            .loglets
            .get_mut(&loglet)
            .expect("overlapping pieces exist");
        for p in hit {
            pieces.remove(&p.lo);
            let mut parts = 0;
            if p.lo < lo {
                pieces.insert(p.lo, Piece { hi: lo, ..p });
                parts += 1;
            }
            if p.hi > hi {
                pieces.insert(hi, Piece { lo: hi, ..p });
                parts += 1;
            }
            let count = self.live.entry(p.at.segment).or_default();
            *count = *count + parts - 1;
            if *count == 0 {
                self.live.remove(&p.at.segment);
                emptied.push(p.at.segment);
            }
        }
        if pieces.is_empty() {
            self.loglets.remove(&loglet);
        }
        emptied
    }

    /// Forgets every offset of `loglet`.
    pub fn forget(&mut self, loglet: LogletId) -> Vec<u64> {
        self.remove_range(loglet, 0, Offset::MAX)
    }

    /// The pieces holding offsets of `[from, to)`, clipped to it, in order.
    pub fn pieces(&self, loglet: LogletId, from: Offset, to: Offset) -> Vec<Piece> {
        self.overlapping(loglet, from, to)
            .into_iter()
            .map(|p| Piece {
                lo: p.lo.max(from),
                hi: p.hi.min(to),
                at: p.at,
            })
            .collect()
    }

    /// One past the highest offset held (0 if none).
    pub fn local_tail(&self, loglet: LogletId) -> Offset {
        self.loglets
            .get(&loglet)
            .and_then(|m| m.values().next_back())
            .map_or(0, |p| p.hi)
    }

    /// The end of the run of held offsets that starts at `from` (`from` if
    /// `from` itself is not held).
    pub fn contiguous_end(&self, loglet: LogletId, from: Offset) -> Offset {
        let mut end = from;
        for p in self.overlapping(loglet, from, Offset::MAX) {
            if p.lo > end {
                break;
            }
            end = end.max(p.hi);
        }
        end
    }

    /// Whether any piece still lives in `segment`.
    pub fn is_live(&self, segment: u64) -> bool {
        self.live.contains_key(&segment)
    }

    /// Every loglet with at least one stored offset.
    pub fn loglets(&self) -> impl Iterator<Item = LogletId> + '_ {
        self.loglets.keys().copied()
    }

    /// Pieces overlapping `[from, to)`, unclipped, in order.
    fn overlapping(&self, loglet: LogletId, from: Offset, to: Offset) -> Vec<Piece> {
        let Some(pieces) = self.loglets.get(&loglet) else {
            return Vec::new();
        };
        if from >= to {
            return Vec::new();
        }
        let mut out = Vec::new();
        // The piece starting at or before `from` may reach into the range.
        if let Some((_, p)) = pieces.range(..=from).next_back() {
            if p.hi > from {
                out.push(*p);
            }
        }
        for (_, p) in pieces.range((
            std::ops::Bound::Excluded(from),
            std::ops::Bound::Excluded(to),
        )) {
            out.push(*p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogId;

    const L: LogletId = LogletId(1);

    fn at(segment: u64) -> Location {
        Location {
            segment,
            pos: 0,
            len: 1,
        }
    }

    fn piece(lo: Offset, hi: Offset, segment: u64) -> Piece {
        Piece {
            lo,
            hi,
            at: at(segment),
        }
    }

    fn spans(i: &Index) -> Vec<(Offset, Offset, u64)> {
        i.pieces(L, 0, Offset::MAX)
            .into_iter()
            .map(|p| (p.lo, p.hi, p.at.segment))
            .collect()
    }

    #[test]
    fn missing_stretches_and_tails() {
        let mut i = Index::default();
        assert_eq!(i.missing(L, 0, 10), vec![(0, 10)]);
        i.insert(L, piece(2, 4, 1));
        i.insert(L, piece(6, 8, 1));
        assert_eq!(i.missing(L, 0, 10), vec![(0, 2), (4, 6), (8, 10)]);
        assert_eq!(i.missing(L, 3, 7), vec![(4, 6)]);
        assert_eq!(i.missing(L, 2, 4), vec![]);
        assert_eq!(i.local_tail(L), 8);
        assert_eq!(i.contiguous_end(L, 0), 0);
        assert_eq!(i.contiguous_end(L, 2), 4);
        assert_eq!(i.contiguous_end(L, 3), 4);
        i.insert(L, piece(4, 6, 2));
        assert_eq!(i.contiguous_end(L, 2), 8);
        assert_eq!(i.local_tail(LogletId::new(LogId(9), 0)), 0);
    }

    #[test]
    fn removing_splits_pieces_and_reports_empty_segments() {
        let mut i = Index::default();
        i.insert(L, piece(0, 10, 1));
        i.insert(L, piece(10, 12, 2));
        // A damaged offset in the middle of a piece splits it.
        assert_eq!(i.remove_range(L, 4, 5), Vec::<u64>::new());
        assert_eq!(spans(&i), vec![(0, 4, 1), (5, 10, 1), (10, 12, 2)]);
        assert!(i.is_live(1));
        // A trim below 11 empties segment 1 and keeps part of segment 2's piece.
        assert_eq!(i.remove_range(L, 0, 11), vec![1]);
        assert_eq!(spans(&i), vec![(11, 12, 2)]);
        assert!(!i.is_live(1));
        assert_eq!(i.forget(L), vec![2]);
        assert!(i.loglets().next().is_none());
    }

    #[test]
    fn a_later_copy_wins_on_insert_over() {
        let mut i = Index::default();
        i.insert(L, piece(0, 6, 1));
        assert_eq!(i.insert_over(L, piece(2, 3, 2)), Vec::<u64>::new());
        assert_eq!(spans(&i), vec![(0, 2, 1), (2, 3, 2), (3, 6, 1)]);
        let mut emptied = i.insert_over(L, piece(0, 6, 3));
        emptied.sort_unstable();
        assert_eq!(emptied, vec![1, 2]);
        assert_eq!(spans(&i), vec![(0, 6, 3)]);
    }

    #[test]
    fn pieces_are_clipped_to_the_range() {
        let mut i = Index::default();
        i.insert(L, piece(0, 5, 1));
        i.insert(L, piece(5, 9, 1));
        let p = i.pieces(L, 3, 7);
        assert_eq!(
            p.iter().map(|p| (p.lo, p.hi)).collect::<Vec<_>>(),
            vec![(3, 5), (5, 7)]
        );
        assert!(i.pieces(L, 7, 7).is_empty());
        assert!(i.pieces(L, 9, 20).is_empty());
    }
}
