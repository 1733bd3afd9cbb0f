//! The simulator's clock and event queue: a virtual clock that jumps to the
//! next event, and events ordered by time, then by the order they were
//! scheduled (so two events at one instant always run in the same order).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A queue of events of type `E` on a virtual clock.
pub struct Scheduler<E> {
    /// The virtual "time zero" (any instant: only differences matter).
    base: Instant,
    /// The current virtual time.
    now: Instant,
    /// Pending events: `(when, sequence number, event)`.
    queue: BinaryHeap<Reverse<(Instant, u64, Slot<E>)>>,
    /// Next sequence number (ties at one instant run in scheduling order).
    seq: u64,
}

/// An event in the heap; ordered by nothing (the key before it decides).
struct Slot<E>(E);

impl<E> PartialEq for Slot<E> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<E> Eq for Slot<E> {}
impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Slot<E> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<E> Scheduler<E> {
    pub fn new(base: Instant) -> Self {
        Scheduler {
            base,
            now: base,
            queue: BinaryHeap::new(),
            seq: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Schedules `event` at `at` (or now, if `at` is in the past).
    pub fn at(&mut self, at: Instant, event: E) {
        let at = at.max(self.now);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, Slot(event))));
    }

    /// Schedules `event` after `delay`.
    pub fn after(&mut self, delay: Duration, event: E) {
        self.at(self.now + delay, event);
    }

    /// The next event, with the clock moved to its time; `None` when the queue
    /// is empty or the next event lies beyond `until`.
    pub fn next(&mut self, until: Instant) -> Option<E> {
        let Reverse((at, _, _)) = self.queue.peek()?;
        if *at > until {
            self.now = self.now.max(until);
            return None;
        }
        let Reverse((at, _, Slot(event))) = self.queue.pop()?;
        self.now = self.now.max(at);
        Some(event)
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_run_in_time_then_scheduling_order() {
        let base = Instant::now();
        let mut s = Scheduler::new(base);
        s.after(Duration::from_millis(5), "b");
        s.after(Duration::from_millis(1), "a");
        s.after(Duration::from_millis(5), "c");
        let until = base + Duration::from_secs(1);
        assert_eq!(s.next(until), Some("a"));
        assert_eq!(s.elapsed(), Duration::from_millis(1));
        assert_eq!(s.next(until), Some("b"));
        assert_eq!(s.next(until), Some("c"));
        assert_eq!(s.elapsed(), Duration::from_millis(5));
        assert_eq!(s.next(until), None);
        s.after(Duration::from_secs(5), "late");
        assert_eq!(s.next(until), None);
        assert_eq!(s.now(), until, "the clock stops at the horizon");
        s.at(base, "past");
        assert_eq!(s.next(until), Some("past"), "the past is now");
    }
}
