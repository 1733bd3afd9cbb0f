//! Volatile bytes of one file: non-overlapping extents of data written since
//! the file was last synced, kept in memory. Pure data structure, no I/O.
//!
//! Appends (a write that starts where the previous extent ends) grow that
//! extent in place, so many small sequential writes cost one allocation that
//! doubles, not one extent each.

use std::collections::BTreeMap;

/// Non-overlapping byte extents keyed by their start offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extents {
    /// Start offset -> bytes. No two extents overlap; adjacent ones may be
    /// merged but need not be.
    map: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths, kept so stats need not walk the map.
    bytes: u64,
}

impl Extents {
    /// No extents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The extents in offset order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.map.iter().map(|(&o, d)| (o, d.as_slice()))
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// Overwrites `[offset, offset + data.len())` with `data`.
    /// The caller guarantees `offset + data.len()` does not overflow.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Fast path: a pure append to the last extent.
        if let Some((&start, last)) = self.map.iter_mut().next_back() {
            if start + last.len() as u64 == offset {
                last.extend_from_slice(data);
                self.bytes += data.len() as u64;
                return;
            }
        }
        self.cut(offset, end);
        // Merge with a neighbour that ends exactly at `offset` or starts at `end`.
        let prev = self
            .map
            .range(..offset)
            .next_back()
            .filter(|(&s, d)| s + d.len() as u64 == offset)
            .map(|(&s, _)| s);
        // The neighbour's bytes stay counted: they move into the merged extent.
        let next = self.map.remove(&end);
        match prev {
            Some(s) => {
                if let Some(d) = self.map.get_mut(&s) {
                    d.extend_from_slice(data);
                    if let Some(n) = &next {
                        d.extend_from_slice(n);
                    }
                }
            }
            None => {
                let mut d = data.to_vec();
                if let Some(n) = &next {
                    d.extend_from_slice(n);
                }
                self.map.insert(offset, d);
            }
        }
        self.bytes += data.len() as u64;
    }

    /// Removes every byte at or after `len`.
    pub fn truncate(&mut self, len: u64) {
        self.cut(len, u64::MAX);
    }

    /// Removes the bytes of `[from, to)`, splitting extents that straddle it.
    fn cut(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        // The extent that starts before `from` and reaches into the range.
        if let Some((&s, d)) = self.map.range_mut(..from).next_back() {
            let e = s + d.len() as u64;
            if e > from {
                let keep_head = (from - s) as usize;
                let tail = if e > to {
                    Some(d[(to - s) as usize..].to_vec())
                } else {
                    None
                };
                let removed = d.len() - keep_head - tail.as_ref().map_or(0, Vec::len);
                d.truncate(keep_head);
                self.bytes -= removed as u64;
                if let Some(t) = tail {
                    self.map.insert(to, t);
                    return;
                }
            }
        }
        // Extents that start inside the range.
        let inside: Vec<u64> = self.map.range(from..to).map(|(&s, _)| s).collect();
        for s in inside {
            let Some(d) = self.map.remove(&s) else {
                continue;
            };
            let e = s + d.len() as u64;
            if e > to {
                let tail = d[(to - s) as usize..].to_vec();
                self.bytes -= (d.len() - tail.len()) as u64;
                self.map.insert(to, tail);
            } else {
                self.bytes -= d.len() as u64;
            }
        }
    }

    /// The pieces of `[offset, offset + len)` that are held, in order, as
    /// `(start, bytes)` clipped to the range.
    pub fn overlapping(&self, offset: u64, len: u64) -> Vec<(u64, &[u8])> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        if let Some((&s, d)) = self.map.range(..offset).next_back() {
            let e = s + d.len() as u64;
            if e > offset {
                let a = (offset - s) as usize;
                let b = (e.min(end) - s) as usize;
                out.push((offset, &d[a..b]));
            }
        }
        for (&s, d) in self.map.range(offset..end) {
            let e = (s + d.len() as u64).min(end);
            out.push((s, &d[..(e - s) as usize]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: a plain byte vector with a "held" mask.
    fn flatten(x: &Extents, upto: u64) -> Vec<Option<u8>> {
        let mut v = vec![None; upto as usize];
        for (o, d) in x.iter() {
            for (i, b) in d.iter().enumerate() {
                v[o as usize + i] = Some(*b);
            }
        }
        v
    }

    fn check_invariants(x: &Extents) {
        let mut prev_end = 0;
        let mut sum = 0;
        for (o, d) in x.iter() {
            assert!(o >= prev_end, "extents overlap");
            assert!(!d.is_empty(), "empty extent kept");
            prev_end = o + d.len() as u64;
            sum += d.len() as u64;
        }
        assert_eq!(sum, x.bytes(), "byte count drifted");
    }

    #[test]
    fn powerfs_extents_match_a_reference_under_random_writes_and_truncates() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _round in 0..200 {
            let mut x = Extents::new();
            let mut reference: Vec<Option<u8>> = vec![None; 256];
            for _ in 0..40 {
                let r = next();
                if r % 7 == 0 {
                    let len = next() % 256;
                    x.truncate(len);
                    for b in reference.iter_mut().skip(len as usize) {
                        *b = None;
                    }
                } else {
                    let off = next() % 200;
                    let len = 1 + next() % 50;
                    let len = len.min(256 - off);
                    let byte = (next() % 251) as u8;
                    let data = vec![byte; len as usize];
                    x.write(off, &data);
                    for i in 0..len {
                        reference[(off + i) as usize] = Some(byte);
                    }
                }
                check_invariants(&x);
                assert_eq!(flatten(&x, 256), reference);
            }
        }
    }

    #[test]
    fn powerfs_extents_appends_grow_one_extent() {
        let mut x = Extents::new();
        for i in 0..1000u64 {
            x.write(i * 3, &[1, 2, 3]);
        }
        assert_eq!(x.iter().count(), 1);
        assert_eq!(x.bytes(), 3000);
    }

    #[test]
    fn powerfs_extents_overlapping_clips_to_the_range() {
        let mut x = Extents::new();
        x.write(10, &[1; 10]);
        x.write(30, &[2; 10]);
        let got = x.overlapping(15, 20);
        assert_eq!(got, vec![(15, &[1u8; 5][..]), (30, &[2u8; 5][..])]);
        assert!(x.overlapping(20, 10).is_empty());
    }
}
