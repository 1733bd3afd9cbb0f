//! Finding a sealed loglet's tail, without I/O.
//!
//! After an f-majority (`n - r + 1`) of log-servers sealed a loglet, every
//! committed record is on at least one of them (an f-majority intersects every
//! write quorum of `r`). Committed offsets form a prefix, so the union of the
//! responders' records holds every committed offset: the end of the contiguous
//! run in that union, starting from the highest global tail any responder
//! knew, is at or beyond the committed tail. That end is the sealed tail.
//! Records between the known global tail and the sealed tail may have fewer
//! than `r` copies: they are re-replicated before the tail is published.
//! Records beyond a gap were never committed and are cut off.

use crate::log::Record;
use crate::types::Offset;
use std::collections::BTreeMap;

/// One sealed responder's view.
#[derive(Clone, Debug, Default)]
pub struct SealedView {
    pub known_global_tail: Offset,
    pub local_tail: Offset,
}

/// Where repair starts and how far the responders' local data reaches.
pub fn repair_range(views: &[SealedView]) -> (Offset, Offset) {
    let global = views.iter().map(|v| v.known_global_tail).max().unwrap_or(0);
    let reach = views
        .iter()
        .map(|v| v.local_tail)
        .max()
        .unwrap_or(0)
        .max(global);
    (global, reach)
}

/// The records to re-replicate, `[global, tail)`, given every record the
/// responders hold from `global` on (several copies of one offset are
/// identical: a sequencer writes each offset once).
pub fn sealed_tail(
    global: Offset,
    found: impl IntoIterator<Item = (Offset, Record)>,
) -> (Offset, Vec<Record>) {
    let union: BTreeMap<Offset, Record> = found.into_iter().filter(|(o, _)| *o >= global).collect();
    let mut tail = global;
    let mut repair = Vec::new();
    for (offset, record) in union {
        // A record at `u64::MAX` (a peer can claim any offset) would end the
        // segment past the last offset there is: the run stops before it.
        if offset != tail || tail == Offset::MAX {
            break;
        }
        repair.push(record);
        tail += 1;
    }
    (tail, repair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(o: u64) -> (Offset, Record) {
        (o, Record(vec![o as u8]))
    }

    #[test]
    fn the_tail_is_the_end_of_the_contiguous_union_from_the_global_tail() {
        let views = [
            SealedView {
                known_global_tail: 3,
                local_tail: 5,
            },
            SealedView {
                known_global_tail: 4,
                local_tail: 7,
            },
        ];
        assert_eq!(repair_range(&views), (4, 7));
        // server A has 4; server B has 5 and 6; together contiguous up to 7.
        let (tail, repair) = sealed_tail(4, vec![r(4), r(5), r(6), r(5)]);
        assert_eq!(tail, 7);
        assert_eq!(repair, vec![r(4).1, r(5).1, r(6).1]);
    }

    #[test]
    fn records_beyond_a_gap_are_cut_off() {
        let (tail, repair) = sealed_tail(2, vec![r(2), r(4), r(5)]);
        assert_eq!(tail, 3);
        assert_eq!(repair.len(), 1);
    }

    #[test]
    fn a_run_up_to_the_last_offset_stops_before_it() {
        let max = Offset::MAX;
        let (tail, repair) = sealed_tail(max - 2, vec![r(max - 2), r(max - 1), r(max)]);
        assert_eq!(tail, max);
        assert_eq!(repair, vec![r(max - 2).1, r(max - 1).1]);
        assert_eq!(sealed_tail(max, vec![r(max)]), (max, Vec::new()));
    }

    #[test]
    fn nothing_above_the_global_tail_keeps_it() {
        assert_eq!(sealed_tail(9, Vec::new()).0, 9);
        assert_eq!(repair_range(&[]), (0, 0));
    }
}
