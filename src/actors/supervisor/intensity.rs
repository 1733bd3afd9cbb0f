//! Restart intensity: how many restarts a supervisor tolerates in a window.
//!
//! Restarting forever hides a fault that a restart cannot fix (a corrupt
//! store, a dead disk). Past the limit the supervisor gives up and lets its
//! parent restart the larger subtree; at the root the node exits.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Restart times within a sliding window, keeping at most `cap` of them.
#[derive(Debug, Clone)]
pub(crate) struct RestartWindow {
    within: Duration,
    cap: usize,
    times: VecDeque<Instant>,
}

impl RestartWindow {
    pub fn new(within: Duration, cap: usize) -> Self {
        RestartWindow {
            within,
            cap: cap.max(1),
            times: VecDeque::new(),
        }
    }

    pub fn within(&self) -> Duration {
        self.within
    }

    pub fn record(&mut self, now: Instant) {
        self.trim(now);
        self.times.push_back(now);
        while self.times.len() > self.cap {
            self.times.pop_front();
        }
    }

    /// Restarts in the window ending at `now`.
    pub fn count(&self, now: Instant) -> usize {
        self.times
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.within)
            .count()
    }

    fn trim(&mut self, now: Instant) {
        while let Some(first) = self.times.front() {
            if now.saturating_duration_since(*first) > self.within {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }
}

/// "More than `max` restarts within `within`" (Erlang/OTP's rule), counted
/// over all children of one supervisor incarnation.
#[derive(Debug, Clone)]
pub(crate) struct Intensity {
    max: u32,
    window: RestartWindow,
}

impl Intensity {
    pub fn new(max: u32, within: Duration) -> Self {
        let cap = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
        Intensity {
            max,
            window: RestartWindow::new(within, cap),
        }
    }

    /// Counts one failure at `now`; true when it is one too many, in which
    /// case the supervisor escalates instead of restarting.
    pub fn exceeded_by_failure(&mut self, now: Instant) -> bool {
        self.window.record(now);
        self.window.count(now) > usize::try_from(self.max).unwrap_or(usize::MAX)
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn within(&self) -> Duration {
        self.window.within()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_max_then_escalates_on_the_next_failure() {
        let t0 = Instant::now();
        let mut i = Intensity::new(5, Duration::from_secs(10));
        for k in 0..5 {
            assert!(
                !i.exceeded_by_failure(t0 + Duration::from_secs(k)),
                "failure {k}"
            );
        }
        assert!(i.exceeded_by_failure(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut i = Intensity::new(2, Duration::from_secs(10));
        assert!(!i.exceeded_by_failure(t0));
        assert!(!i.exceeded_by_failure(t0 + Duration::from_secs(1)));
        // The first two fell out of the window by now.
        assert!(!i.exceeded_by_failure(t0 + Duration::from_secs(12)));
        assert!(!i.exceeded_by_failure(t0 + Duration::from_secs(13)));
        assert!(i.exceeded_by_failure(t0 + Duration::from_secs(14)));
    }

    #[test]
    fn zero_max_escalates_at_the_first_failure() {
        let mut i = Intensity::new(0, Duration::from_secs(1));
        assert!(i.exceeded_by_failure(Instant::now()));
    }

    #[test]
    fn window_is_bounded_by_its_cap() {
        let t0 = Instant::now();
        let mut w = RestartWindow::new(Duration::from_secs(60), 3);
        for k in 0..10 {
            w.record(t0 + Duration::from_millis(k));
        }
        assert_eq!(w.count(t0 + Duration::from_millis(10)), 3);
    }
}
