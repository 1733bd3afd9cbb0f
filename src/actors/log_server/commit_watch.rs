//! Commit progress as one log-server sees it: how long the records it stored
//! waited for their commit, by the node whose sequencer sent them.
//!
//! A sequencer sends each batch to every server of its nodeset, commits it
//! once `r` of them stored it, and tells them (piggybacked on its next store,
//! a `Release`, or its heartbeat). A server that stored a batch and then
//! waits long to hear of its commit is waiting on the sequencer: with a
//! nodeset of every node and `r` below its size, one slow *other* server
//! holds no commit back, and this server's own slowness is outside the wait
//! (it starts once the store was handled here). So a link can be fast while
//! the node behind it is too slow to sequence (a stalled runtime, a CPU
//! starved by something else), and this is what shows it: the health score's
//! commit-progress signal (`transport::health`, H1).
//!
//! Two things are measured, per sequencer's node, because each misses what
//! the other sees: how many waits were *slow* (lasted `slow_after` or
//! more: an overloaded sequencer commits everything late, but it commits
//! little, so it is rarely waited on at any one moment), and the *time
//! stuck*, how long the oldest record waiting here had been waiting for
//! more than `slow_after` (a stalled sequencer sends nothing new, so the
//! few batches in flight when it stopped are all that wait, and the quick
//! commits between its stalls outnumber them).
//!
//! - C1. A normal store (not a repair) of at least one record from a peer
//!   (not this node's own sequencer), past what is known committed, starts a
//!   wait for its end at `now`; a resend of what is already waited for
//!   starts none.
//! - C2. A wait ends when the loglet's known global tail reaches its end;
//!   it was slow if it lasted `slow_after` or more. While a loglet's
//!   oldest wait is older than `slow_after`, the loglet is
//!   *stuck*; stuck time is counted up to its commit, or up to the host's
//!   next [`CommitWatch::judge`] (a sequencer that stopped is counted
//!   while it is stopped), never twice for the same stretch of a loglet.
//! - C3. A seal ends every wait of the loglet, its stuck time counted so
//!   far: its records may never commit, and that is the seal's doing.
//! - C4. Bounded: at most [`MAX_WAITS`] waits per loglet (a newer one joins
//!   the newest, keeping its start), and a loglet without waits is
//!   forgotten.

use crate::types::{LogletId, NodeId, Offset};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A record waiting here longer than this for its commit makes its loglet
/// stuck (C2). A healthy sequencer on loopback commits in well under 10 ms,
/// under heavy load in tens.
pub const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// Most open waits kept per loglet (C4).
pub const MAX_WAITS: usize = 64;

/// What was judged of one sequencer's node since the last
/// [`CommitWatch::judge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitCounts {
    /// Waits that ended (C2, C3).
    pub waits: u64,
    /// Of those, the ones that lasted `slow_after` or more.
    pub slow: u64,
    /// Time its loglets were stuck (C2).
    pub stuck: Duration,
}

/// One open wait.
#[derive(Clone, Copy, Debug)]
struct Wait {
    /// One past the last offset the store carried.
    end: Offset,
    /// When the store was handled here.
    since: Instant,
}

impl Wait {
    /// C2: whether it lasted (or, still open, has lasted) `slow_after` or
    /// more by `now`.
    fn is_slow(&self, now: Instant, slow_after: Duration) -> bool {
        now.saturating_duration_since(self.since) >= slow_after
    }
}

/// The open waits of one loglet.
#[derive(Clone, Debug)]
struct LogletWaits {
    /// The node whose sequencer the waits are on (the sender of the stores).
    sequencer: NodeId,
    /// Oldest first; ends increase.
    waits: VecDeque<Wait>,
    /// Stuck time is counted up to here already (C2: never twice).
    counted_to: Option<Instant>,
}

impl LogletWaits {
    /// Stuck time of the oldest wait not counted yet, up to `now`.
    fn stuck_until(&mut self, now: Instant, slow_after: Duration) -> Duration {
        let Some(oldest) = self.waits.front() else {
            return Duration::ZERO;
        };
        let from = oldest.since + slow_after;
        let from = self.counted_to.map_or(from, |c| c.max(from));
        if now <= from {
            return Duration::ZERO;
        }
        self.counted_to = Some(now);
        now - from
    }
}

/// Every open wait of this log-server, and what was judged.
#[derive(Clone, Debug)]
pub struct CommitWatch {
    /// This node (its own sequencer's stores are not watched).
    me: NodeId,
    /// How long a wait may last before its loglet is stuck.
    slow_after: Duration,
    /// By loglet.
    loglets: BTreeMap<LogletId, LogletWaits>,
    /// Judged since the last `judge`, by sequencer's node.
    counts: BTreeMap<NodeId, CommitCounts>,
}

impl CommitWatch {
    pub fn new(me: NodeId, slow_after: Duration) -> Self {
        CommitWatch {
            me,
            slow_after,
            loglets: BTreeMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// C1: `from` stored records up to `end` of `loglet`, of which
    /// everything below `committed` is known committed.
    pub fn stored(
        &mut self,
        now: Instant,
        from: NodeId,
        loglet: LogletId,
        end: Offset,
        committed: Offset,
    ) {
        if from == self.me || end <= committed {
            return;
        }
        if self
            .loglets
            .get(&loglet)
            .is_some_and(|l| l.sequencer != from)
        {
            // Another node sends this loglet's stores (a sealer's repair
            // comes marked as such): the old waits say nothing about it.
            self.sealed(now, loglet);
        }
        let entry = self.loglets.entry(loglet).or_insert(LogletWaits {
            sequencer: from,
            waits: VecDeque::new(),
            counted_to: None,
        });
        let full = entry.waits.len() >= MAX_WAITS;
        match entry.waits.back_mut() {
            Some(last) if last.end >= end => {}
            Some(last) if full => last.end = end,
            _ => entry.waits.push_back(Wait { end, since: now }),
        }
    }

    /// C2: everything below `global_tail` of `loglet` is known committed.
    pub fn committed(&mut self, now: Instant, loglet: LogletId, global_tail: Offset) {
        let Some(entry) = self.loglets.get_mut(&loglet) else {
            return;
        };
        let mut judged = CommitCounts::default();
        while let Some(wait) = entry.waits.front().copied() {
            if wait.end > global_tail {
                break;
            }
            judged.stuck += entry.stuck_until(now, self.slow_after);
            judged.waits += 1;
            if wait.is_slow(now, self.slow_after) {
                judged.slow += 1;
            }
            entry.waits.pop_front();
        }
        if judged.waits > 0 {
            let counts = self.counts.entry(entry.sequencer).or_default();
            counts.waits += judged.waits;
            counts.slow += judged.slow;
            counts.stuck += judged.stuck;
        }
        if entry.waits.is_empty() {
            self.loglets.remove(&loglet);
        }
    }

    /// C3: `loglet` was sealed here.
    pub fn sealed(&mut self, now: Instant, loglet: LogletId) {
        if let Some(mut entry) = self.loglets.remove(&loglet) {
            let stuck = entry.stuck_until(now, self.slow_after);
            let slow = entry
                .waits
                .iter()
                .filter(|w| w.is_slow(now, self.slow_after))
                .count();
            let counts = self.counts.entry(entry.sequencer).or_default();
            counts.waits += entry.waits.len() as u64;
            counts.slow += slow as u64;
            counts.stuck += stuck;
        }
    }

    /// What was judged since the last call, by sequencer's node, with the
    /// stuck time of every open wait counted up to `now` (C2).
    pub fn judge(&mut self, now: Instant) -> BTreeMap<NodeId, CommitCounts> {
        for entry in self.loglets.values_mut() {
            let stuck = entry.stuck_until(now, self.slow_after);
            if !stuck.is_zero() {
                self.counts.entry(entry.sequencer).or_default().stuck += stuck;
            }
        }
        std::mem::take(&mut self.counts)
    }

    /// Open waits (for tests).
    pub fn open_waits(&self) -> usize {
        self.loglets.values().map(|l| l.waits.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: LogletId = LogletId(7);
    const ME: NodeId = NodeId(1);
    const SEQ: NodeId = NodeId(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn watch() -> (CommitWatch, Instant) {
        (CommitWatch::new(ME, SLOW_COMMIT), Instant::now())
    }

    fn judged(w: &mut CommitWatch, at: Instant, node: NodeId) -> CommitCounts {
        w.judge(at).get(&node).copied().unwrap_or_default()
    }

    #[test]
    fn c1_c2_quick_commits_are_never_stuck_and_a_late_one_is_stuck_past_the_threshold() {
        let (mut w, t) = watch();
        w.stored(t, SEQ, L, 10, 0);
        w.stored(t + ms(1), SEQ, L, 20, 0);
        w.committed(t + ms(5), L, 10);
        assert_eq!(w.open_waits(), 1);
        // 20 commits 300 ms after its store: stuck for the last 200.
        w.committed(t + ms(301), L, 20);
        let c = judged(&mut w, t + ms(301), SEQ);
        assert_eq!(
            c,
            CommitCounts {
                waits: 2,
                slow: 1,
                stuck: ms(200)
            }
        );
        assert_eq!(w.open_waits(), 0, "a loglet without waits is forgotten");
        assert_eq!(judged(&mut w, t + ms(400), SEQ), CommitCounts::default());
    }

    #[test]
    fn c1_own_stores_resends_and_committed_stores_start_no_wait() {
        let (mut w, t) = watch();
        w.stored(t, ME, L, 10, 0);
        w.stored(t, SEQ, L, 10, 10);
        assert_eq!(w.open_waits(), 0);
        w.stored(t, SEQ, L, 10, 0);
        // A resend of the same records later does not restart the wait.
        w.stored(t + ms(200), SEQ, L, 10, 0);
        assert_eq!(w.open_waits(), 1);
        w.committed(t + ms(250), L, 10);
        assert_eq!(judged(&mut w, t + ms(250), SEQ).stuck, ms(150));
    }

    #[test]
    fn c2_a_stopped_sequencer_is_stuck_at_every_judgement_and_no_stretch_counts_twice() {
        let (mut w, t) = watch();
        w.stored(t, SEQ, L, 10, 0);
        // A later wait overlapping the oldest adds nothing while it waits.
        w.stored(t + ms(50), SEQ, L, 20, 0);
        assert_eq!(judged(&mut w, t + ms(80), SEQ).stuck, ms(0));
        assert_eq!(judged(&mut w, t + ms(500), SEQ).stuck, ms(400));
        assert_eq!(judged(&mut w, t + ms(1000), SEQ).stuck, ms(500));
        // Both commit at 1100: the stretch since the last judgement, once.
        w.committed(t + ms(1100), L, 20);
        assert_eq!(
            judged(&mut w, t + ms(1100), SEQ),
            CommitCounts {
                waits: 2,
                slow: 2,
                stuck: ms(100)
            }
        );
    }

    #[test]
    fn c3_a_seal_ends_the_waits_with_their_stuck_time_so_far() {
        let (mut w, t) = watch();
        w.stored(t, SEQ, L, 10, 0);
        w.sealed(t + ms(150), L);
        assert_eq!(
            judged(&mut w, t + ms(900), SEQ),
            CommitCounts {
                waits: 1,
                slow: 1,
                stuck: ms(50)
            }
        );
        assert_eq!(w.open_waits(), 0);
    }

    #[test]
    fn c4_waits_are_bounded_and_a_new_sequencer_starts_afresh() {
        let (mut w, t) = watch();
        for i in 1..=(MAX_WAITS as u64 * 3) {
            w.stored(t, SEQ, L, i, 0);
        }
        assert_eq!(w.open_waits(), MAX_WAITS);
        w.committed(t + ms(1), L, MAX_WAITS as u64 * 3);
        assert_eq!(judged(&mut w, t + ms(1), SEQ).waits, MAX_WAITS as u64);
        let other = NodeId(2);
        w.stored(t, SEQ, L, 500, 0);
        w.stored(t + ms(10), other, L, 510, 0);
        assert_eq!(w.open_waits(), 1);
        w.committed(t + ms(210), L, 510);
        let counts = w.judge(t + ms(210));
        assert_eq!(counts.get(&other).map(|c| c.stuck), Some(ms(100)));
        assert_eq!(
            counts.get(&SEQ).map(|c| c.waits),
            Some(1),
            "ended by the change"
        );
    }
}
