//! The sequencer's protocol core, without I/O.
//!
//! One sequencer owns one writable loglet. It assigns offsets, sends each
//! batch to every log-server of the nodeset, and commits offset `k` once `r`
//! servers stored it **and** every offset below `k` is committed. Only then is
//! an append acknowledged. Commit progress is released to the log-servers so
//! readers may read below it.
//!
//! Outcomes an appender can receive:
//! - `Appended`: committed; survives any seal.
//! - `Sealed`: refused before an offset was assigned; certainly not in the log,
//!   safe to retry elsewhere.
//! - `Indeterminate`: offsets were assigned but the outcome is unknown (the
//!   loglet was sealed, or the commit did not happen in time); the record may
//!   or may not survive a seal's tail repair. Retries must be idempotent.

use crate::log::Record;
use crate::types::{Lsn, NodeId, Offset};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Batching and retry knobs.
#[derive(Clone, Debug)]
pub struct SequencerTuning {
    /// Most records in one store batch.
    pub max_batch_records: usize,
    /// Most bytes in one store batch.
    pub max_batch_bytes: usize,
    /// Resend a store to a server that has not acknowledged it after this long.
    pub resend_after: Duration,
    /// Answer `Indeterminate` to appenders whose batch is not committed after this long.
    pub append_deadline: Duration,
}

impl Default for SequencerTuning {
    fn default() -> Self {
        SequencerTuning {
            max_batch_records: 4096,
            max_batch_bytes: 2 * 1024 * 1024,
            resend_after: Duration::from_millis(300),
            append_deadline: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AppendOutcome {
    /// Committed; the first record got `first_lsn`, the others follow it.
    Appended { first_lsn: Lsn },
    /// Refused before any offset was assigned: not in the log.
    Sealed,
    /// Offsets were assigned but the commit is unknown.
    Indeterminate,
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub enum Effect<W> {
    Store {
        to: NodeId,
        first: Offset,
        records: Arc<Vec<Record>>,
        global_tail: Offset,
    },
    Reply {
        waiter: W,
        outcome: AppendOutcome,
    },
    /// The committed tail advanced: tell the nodeset (coalesce freely).
    Release {
        global_tail: Offset,
    },
}

struct Batch<W> {
    records: Arc<Vec<Record>>,
    acked: BTreeSet<NodeId>,
    /// When a store was last sent to each server still missing.
    sent: HashMap<NodeId, Instant>,
    created: Instant,
    /// Appenders waiting on this batch and the offset of their first record.
    waiters: Vec<(W, Offset)>,
}

pub struct SequencerCore<W> {
    base_lsn: Lsn,
    nodeset: Vec<NodeId>,
    replication: usize,
    tuning: SequencerTuning,
    next: Offset,
    committed: Offset,
    /// Uncommitted batches by first offset.
    inflight: BTreeMap<Offset, Batch<W>>,
    /// Appends received but not yet given offsets (the shell flushes them).
    pending: Vec<(Vec<Record>, W)>,
    sealed: bool,
}

impl<W> SequencerCore<W> {
    pub fn new(
        base_lsn: Lsn,
        nodeset: Vec<NodeId>,
        replication: usize,
        tuning: SequencerTuning,
    ) -> Self {
        SequencerCore {
            base_lsn,
            nodeset,
            replication,
            tuning,
            next: 0,
            committed: 0,
            inflight: BTreeMap::new(),
            pending: Vec::new(),
            sealed: false,
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }
    pub fn committed_tail(&self) -> Offset {
        self.committed
    }
    pub fn next_offset(&self) -> Offset {
        self.next
    }
    pub fn inflight_batches(&self) -> usize {
        self.inflight.len()
    }
    /// When the oldest uncommitted batch was created (for the watchdog/status).
    pub fn oldest_uncommitted(&self) -> Option<(Offset, Instant)> {
        self.inflight.iter().next().map(|(o, b)| (*o, b.created))
    }
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues an append; the shell calls [`flush`](Self::flush) soon after
    /// (coalescing every append that arrived in between into one batch).
    ///
    /// An append of no records is answered at once (the shell refuses them
    /// before they get here): there is nothing to commit, and a batch of
    /// none would share its first offset with the next batch.
    pub fn enqueue(&mut self, records: Vec<Record>, waiter: W) -> Vec<Effect<W>> {
        let outcome = match self.lsn_of(self.next) {
            _ if self.sealed => AppendOutcome::Sealed,
            Some(first_lsn) if records.is_empty() => AppendOutcome::Appended { first_lsn },
            None if records.is_empty() => AppendOutcome::Sealed,
            _ => {
                self.pending.push((records, waiter));
                return Vec::new();
            }
        };
        vec![Effect::Reply { waiter, outcome }]
    }

    /// The LSN of `offset`, if there is one (`base_lsn` came from a peer).
    fn lsn_of(&self, offset: Offset) -> Option<Lsn> {
        self.base_lsn.0.checked_add(offset).map(Lsn)
    }

    /// Whether `n` more records fit after `end`: their offsets and LSNs
    /// must not pass `u64::MAX`.
    fn fits(&self, end: Offset, n: usize) -> bool {
        end.checked_add(n as Offset)
            .and_then(|e| self.lsn_of(e.saturating_sub(1)))
            .is_some()
    }

    /// Assigns offsets to the pending appends and sends them as batches.
    pub fn flush(&mut self, now: Instant) -> Vec<Effect<W>> {
        let mut effects = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        let mut iter = pending.into_iter().peekable();
        while iter.peek().is_some() {
            let first = self.next;
            let mut records = Vec::new();
            let mut bytes = 0;
            let mut waiters = Vec::new();
            while let Some((recs, _)) = iter.peek() {
                let size: usize = recs.iter().map(|r| r.len()).sum();
                if !records.is_empty()
                    && (records.len() + recs.len() > self.tuning.max_batch_records
                        || bytes + size > self.tuning.max_batch_bytes)
                {
                    break;
                }
                let Some((recs, waiter)) = iter.next() else {
                    break;
                };
                let at = first + records.len() as Offset;
                if !self.fits(at, recs.len()) {
                    // The loglet has no offsets (or LSNs) left for these:
                    // refused before any was assigned.
                    effects.push(Effect::Reply {
                        waiter,
                        outcome: AppendOutcome::Sealed,
                    });
                    continue;
                }
                waiters.push((waiter, at));
                bytes += size;
                records.extend(recs);
            }
            if records.is_empty() {
                continue;
            }
            self.next += records.len() as Offset;
            let records = Arc::new(records);
            let mut sent = HashMap::new();
            for &to in &self.nodeset {
                sent.insert(to, now);
                effects.push(Effect::Store {
                    to,
                    first,
                    records: records.clone(),
                    global_tail: self.committed,
                });
            }
            self.inflight.insert(
                first,
                Batch {
                    records,
                    acked: BTreeSet::new(),
                    sent,
                    created: now,
                    waiters,
                },
            );
        }
        effects
    }

    /// A server stored the batch starting at `first`. Only servers of the
    /// nodeset count towards its `r` copies.
    pub fn on_stored(&mut self, from: NodeId, first: Offset) -> Vec<Effect<W>> {
        if !self.nodeset.contains(&from) {
            return Vec::new();
        }
        if let Some(batch) = self.inflight.get_mut(&first) {
            batch.acked.insert(from);
            batch.sent.remove(&from);
        }
        self.advance_commit()
    }

    /// A store to `from` failed (transport error); it is resent on a later tick.
    pub fn on_store_failed(&mut self, from: NodeId, first: Offset) {
        if let Some(batch) = self.inflight.get_mut(&first) {
            batch.sent.remove(&from);
        }
    }

    /// A server refused a store because the loglet is sealed. Nothing more
    /// can commit: every uncommitted append becomes indeterminate.
    pub fn on_sealed(&mut self) -> Vec<Effect<W>> {
        self.sealed = true;
        let mut effects = Vec::new();
        for (_, batch) in std::mem::take(&mut self.inflight) {
            for (waiter, _) in batch.waiters {
                effects.push(Effect::Reply {
                    waiter,
                    outcome: AppendOutcome::Indeterminate,
                });
            }
        }
        for (_, waiter) in std::mem::take(&mut self.pending) {
            effects.push(Effect::Reply {
                waiter,
                outcome: AppendOutcome::Sealed,
            });
        }
        effects
    }

    /// Periodic: resend unacknowledged stores, give up on overdue appenders.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect<W>> {
        let mut effects = Vec::new();
        for (&first, batch) in self.inflight.iter_mut() {
            if batch.acked.len() < self.replication {
                for &to in &self.nodeset {
                    if batch.acked.contains(&to) {
                        continue;
                    }
                    let due = match batch.sent.get(&to) {
                        Some(at) => now.duration_since(*at) >= self.tuning.resend_after,
                        None => true,
                    };
                    if due {
                        batch.sent.insert(to, now);
                        effects.push(Effect::Store {
                            to,
                            first,
                            records: batch.records.clone(),
                            global_tail: self.committed,
                        });
                    }
                }
            }
            if now.duration_since(batch.created) >= self.tuning.append_deadline {
                for (waiter, _) in batch.waiters.drain(..) {
                    effects.push(Effect::Reply {
                        waiter,
                        outcome: AppendOutcome::Indeterminate,
                    });
                }
            }
        }
        effects
    }

    fn advance_commit(&mut self) -> Vec<Effect<W>> {
        let mut effects = Vec::new();
        let before = self.committed;
        while let Some(entry) = self.inflight.first_entry() {
            if entry.get().acked.len() < self.replication {
                break;
            }
            let batch = entry.remove();
            self.committed += batch.records.len() as Offset;
            for (waiter, offset) in batch.waiters {
                // `flush` gave out only offsets whose LSN exists.
                let outcome = match self.lsn_of(offset) {
                    Some(first_lsn) => AppendOutcome::Appended { first_lsn },
                    None => AppendOutcome::Indeterminate,
                };
                effects.push(Effect::Reply { waiter, outcome });
            }
        }
        if self.committed > before {
            effects.push(Effect::Release {
                global_tail: self.committed,
            });
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> SequencerCore<u32> {
        SequencerCore::new(
            Lsn(10),
            vec![NodeId(1), NodeId(2), NodeId(3)],
            2,
            SequencerTuning::default(),
        )
    }

    fn recs(n: usize) -> Vec<Record> {
        (0..n).map(|i| Record(vec![i as u8])).collect()
    }

    fn replies(effects: &[Effect<u32>]) -> Vec<(u32, AppendOutcome)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { waiter, outcome } => Some((*waiter, outcome.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn concurrent_appends_share_one_batch_and_commit_at_r_acks() {
        let mut c = core();
        let now = Instant::now();
        assert!(c.enqueue(recs(2), 1).is_empty());
        assert!(c.enqueue(recs(3), 2).is_empty());
        let effects = c.flush(now);
        let stores: Vec<_> = effects
            .iter()
            .filter(|e| matches!(e, Effect::Store { first: 0, .. }))
            .collect();
        assert_eq!(stores.len(), 3, "one store per server");
        assert!(
            c.on_stored(NodeId(1), 0).is_empty(),
            "one ack is not a commit"
        );
        let effects = c.on_stored(NodeId(3), 0);
        assert_eq!(
            replies(&effects),
            vec![
                (1, AppendOutcome::Appended { first_lsn: Lsn(10) }),
                (2, AppendOutcome::Appended { first_lsn: Lsn(12) })
            ]
        );
        assert!(effects.contains(&Effect::Release { global_tail: 5 }));
        assert_eq!(c.committed_tail(), 5);
    }

    #[test]
    fn a_later_batch_never_commits_before_an_earlier_one() {
        let mut c = core();
        let now = Instant::now();
        c.enqueue(recs(1), 1);
        c.flush(now);
        c.enqueue(recs(1), 2);
        c.flush(now);
        assert!(c.on_stored(NodeId(1), 1).is_empty());
        assert!(
            c.on_stored(NodeId(2), 1).is_empty(),
            "offset 0 is not committed yet"
        );
        let effects = c.on_stored(NodeId(2), 0);
        assert!(replies(&effects).is_empty());
        let effects = c.on_stored(NodeId(3), 0);
        assert_eq!(
            replies(&effects),
            vec![
                (1, AppendOutcome::Appended { first_lsn: Lsn(10) }),
                (2, AppendOutcome::Appended { first_lsn: Lsn(11) })
            ]
        );
    }

    #[test]
    fn seal_makes_uncommitted_indeterminate_and_refuses_new_appends() {
        let mut c = core();
        let now = Instant::now();
        c.enqueue(recs(1), 1);
        c.flush(now);
        c.enqueue(recs(1), 2); // pending, no offset yet
        let effects = c.on_sealed();
        assert_eq!(
            replies(&effects),
            vec![
                (1, AppendOutcome::Indeterminate),
                (2, AppendOutcome::Sealed)
            ]
        );
        assert_eq!(
            replies(&c.enqueue(recs(1), 3)),
            vec![(3, AppendOutcome::Sealed)]
        );
        assert!(c.flush(now).is_empty());
    }

    #[test]
    fn unacknowledged_stores_are_resent_and_overdue_appenders_released() {
        let mut c = core();
        let t0 = Instant::now();
        c.enqueue(recs(1), 1);
        c.flush(t0);
        c.on_stored(NodeId(1), 0);
        c.on_store_failed(NodeId(2), 0);
        let effects = c.tick(t0 + Duration::from_millis(1));
        let resent: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Store { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(
            resent,
            vec![NodeId(2)],
            "failed store resent at once, N3 not yet due"
        );
        let effects = c.tick(t0 + Duration::from_millis(400));
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Store { to: NodeId(3), .. })));
        let effects = c.tick(t0 + Duration::from_secs(4));
        assert_eq!(replies(&effects), vec![(1, AppendOutcome::Indeterminate)]);
        // The batch still commits later; nobody is waiting any more.
        let effects = c.on_stored(NodeId(3), 0);
        assert!(replies(&effects).is_empty());
        assert_eq!(c.committed_tail(), 1);
    }

    #[test]
    fn empty_appends_are_answered_at_once_and_never_share_an_offset() {
        let mut c = core();
        let now = Instant::now();
        assert_eq!(
            replies(&c.enqueue(Vec::new(), 1)),
            vec![(1, AppendOutcome::Appended { first_lsn: Lsn(10) })]
        );
        c.enqueue(recs(2), 2);
        c.flush(now);
        c.on_stored(NodeId(1), 0);
        let effects = c.on_stored(NodeId(2), 0);
        assert_eq!(
            replies(&effects),
            vec![(2, AppendOutcome::Appended { first_lsn: Lsn(10) })]
        );
        c.on_sealed();
        assert_eq!(
            replies(&c.enqueue(Vec::new(), 3)),
            vec![(3, AppendOutcome::Sealed)]
        );
    }

    #[test]
    fn the_last_lsn_is_never_passed_and_strangers_do_not_count() {
        let mut c = SequencerCore::new(
            Lsn(u64::MAX - 2),
            vec![NodeId(1), NodeId(2)],
            1,
            SequencerTuning::default(),
        );
        let now = Instant::now();
        c.enqueue(recs(2), 1);
        c.enqueue(recs(2), 2);
        let effects = c.flush(now);
        assert_eq!(replies(&effects), vec![(2, AppendOutcome::Sealed)]);
        assert!(
            c.on_stored(NodeId(9), 0).is_empty(),
            "N9 is not in the nodeset"
        );
        let effects = c.on_stored(NodeId(2), 0);
        assert_eq!(
            replies(&effects),
            vec![(
                1,
                AppendOutcome::Appended {
                    first_lsn: Lsn(u64::MAX - 2)
                }
            )]
        );
        // The last LSN there is can be written, and nothing after it.
        c.enqueue(recs(1), 3);
        assert!(replies(&c.flush(now)).is_empty());
        assert_eq!(
            replies(&c.on_stored(NodeId(1), 2)),
            vec![(
                3,
                AppendOutcome::Appended {
                    first_lsn: Lsn(u64::MAX)
                }
            )]
        );
        c.enqueue(recs(1), 4);
        assert_eq!(replies(&c.flush(now)), vec![(4, AppendOutcome::Sealed)]);
        assert_eq!(c.next_offset(), 3);
    }

    #[test]
    fn batches_are_bounded() {
        let mut c = SequencerCore::new(
            Lsn(1),
            vec![NodeId(1)],
            1,
            SequencerTuning {
                max_batch_records: 3,
                ..Default::default()
            },
        );
        for w in 0..4 {
            c.enqueue(recs(2), w);
        }
        let effects = c.flush(Instant::now());
        let firsts: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Store { first, records, .. } => Some((*first, records.len())),
                _ => None,
            })
            .collect();
        assert_eq!(firsts, vec![(0, 2), (2, 2), (4, 2), (6, 2)]);
        assert_eq!(c.next_offset(), 8);
    }
}
