//! The wait registry: every wait an actor makes is visible, with a deadline.
//!
//! A wait that nobody can see is how a node ends up stuck for minutes ("still
//! waiting for sealing to complete"). Actors register each wait here before
//! they start it and hold the returned [`WaitGuard`] for as long as they wait;
//! the supervisor of the owning actor checks the registry on every tick and
//! restarts an owner whose wait is past its deadline. The restarted actor
//! re-derives its state from durable storage and retries.

use super::child::ChildContext;
use super::unix_ms;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The wait registry of one node, shared by all its actors; cheap to clone.
#[derive(Clone, Default)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    node: Option<NodeId>,
    next_id: AtomicU64,
    waits: Mutex<BTreeMap<u64, Wait>>,
}

struct Wait {
    what: String,
    owner: String,
    incarnation: u64,
    since: Instant,
    since_wall: SystemTime,
    deadline: Duration,
}

/// One registered wait, as shown by status pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitInfo {
    /// What is awaited, e.g. `seal of loglet 0/3`.
    pub what: String,
    /// Path of the waiting actor, e.g. `root/log/sealer`.
    pub owner: String,
    /// Incarnation of the waiting actor.
    pub incarnation: u64,
    /// When the wait began, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// How long it has been waiting so far.
    pub waited_ms: u64,
    /// How long it may wait before its supervisor restarts it.
    pub deadline_ms: u64,
    /// Whether the deadline has passed.
    pub overdue: bool,
}

/// A wait past its deadline, as the supervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Overdue {
    pub owner: String,
    pub incarnation: u64,
    pub what: String,
    pub by: Duration,
}

impl Watchdog {
    /// A registry whose log lines carry no node id (tests, tools).
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry of node `node`; supervisors label their logs with it.
    pub fn for_node(node: NodeId) -> Self {
        Watchdog {
            inner: Arc::new(Inner {
                node: Some(node),
                ..Inner::default()
            }),
        }
    }

    pub fn node(&self) -> Option<NodeId> {
        self.inner.node
    }

    /// Registers a wait of `owner` that must end within `deadline`.
    ///
    /// The wait is unregistered when the guard drops, so hold the guard in the
    /// future (or actor field) that does the waiting.
    pub fn register(
        &self,
        owner: &ChildContext,
        what: impl Into<String>,
        deadline: Duration,
    ) -> WaitGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let wait = Wait {
            what: what.into(),
            owner: owner.path().to_string(),
            incarnation: owner.incarnation(),
            since: Instant::now(),
            since_wall: SystemTime::now(),
            deadline,
        };
        self.waits().insert(id, wait);
        WaitGuard {
            registry: self.inner.clone(),
            id,
        }
    }

    /// Every registered wait, oldest first.
    pub fn snapshot(&self) -> Vec<WaitInfo> {
        let now = Instant::now();
        let waits = self.waits();
        let mut out: Vec<WaitInfo> = waits
            .values()
            .map(|w| {
                let waited = now.saturating_duration_since(w.since);
                WaitInfo {
                    what: w.what.clone(),
                    owner: w.owner.clone(),
                    incarnation: w.incarnation,
                    since_unix_ms: unix_ms(w.since_wall),
                    waited_ms: millis(waited),
                    deadline_ms: millis(w.deadline),
                    overdue: waited > w.deadline,
                }
            })
            .collect();
        // Ids grow with registration time, so the map order is already oldest
        // first; sorting keeps that true if a clock ever disagrees.
        out.sort_by_key(|w| std::cmp::Reverse(w.waited_ms));
        out
    }

    /// Waits past their deadline at `now`.
    pub(crate) fn overdue(&self, now: Instant) -> Vec<Overdue> {
        self.waits()
            .values()
            .filter_map(|w| {
                let waited = now.saturating_duration_since(w.since);
                (waited > w.deadline).then(|| Overdue {
                    owner: w.owner.clone(),
                    incarnation: w.incarnation,
                    what: w.what.clone(),
                    by: waited - w.deadline,
                })
            })
            .collect()
    }

    /// Drops every wait of one incarnation: it was replaced, so its waits
    /// must not trigger another restart even if it leaked a guard.
    pub(crate) fn forget(&self, owner: &str, incarnation: u64) -> usize {
        let mut waits = self.waits();
        let before = waits.len();
        waits.retain(|_, w| !(w.owner == owner && w.incarnation == incarnation));
        before - waits.len()
    }

    fn waits(&self) -> MutexGuard<'_, BTreeMap<u64, Wait>> {
        // A panic while holding this lock cannot leave a half-written map
        // (every critical section is one map operation), so poison is ignored.
        self.inner
            .waits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps a wait registered; dropping it ends the wait.
#[must_use = "the wait is unregistered as soon as the guard is dropped"]
pub struct WaitGuard {
    registry: Arc<Inner>,
    id: u64,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut waits = self
            .registry
            .waits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        waits.remove(&self.id);
    }
}

impl std::fmt::Debug for WaitGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitGuard").field("id", &self.id).finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::supervisor::child::ChildContext;

    #[test]
    fn guard_registers_and_unregisters() {
        let dog = Watchdog::new();
        let cx = ChildContext::detached("root/log/sealer", 3, dog.clone());
        let guard = dog.register(&cx, "seal of loglet 0/3", Duration::from_secs(5));
        let snap = dog.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].what, "seal of loglet 0/3");
        assert_eq!(snap[0].owner, "root/log/sealer");
        assert_eq!(snap[0].incarnation, 3);
        assert_eq!(snap[0].deadline_ms, 5000);
        assert!(!snap[0].overdue);
        drop(guard);
        assert!(dog.snapshot().is_empty());
    }

    #[test]
    fn overdue_reports_only_waits_past_their_deadline() {
        let dog = Watchdog::new();
        let cx = ChildContext::detached("root/a", 1, dog.clone());
        let _short = dog.register(&cx, "short", Duration::ZERO);
        let _long = dog.register(&cx, "long", Duration::from_secs(3600));
        let later = Instant::now() + Duration::from_millis(10);
        let overdue = dog.overdue(later);
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].what, "short");
        assert!(overdue[0].by >= Duration::from_millis(10));
    }

    #[test]
    fn forget_drops_only_that_incarnation_and_late_guard_drop_is_harmless() {
        let dog = Watchdog::new();
        let old = ChildContext::detached("root/a", 1, dog.clone());
        let new = ChildContext::detached("root/a", 2, dog.clone());
        let leaked = dog.register(&old, "old wait", Duration::from_secs(1));
        let _kept = dog.register(&new, "new wait", Duration::from_secs(1));
        assert_eq!(dog.forget("root/a", 1), 1);
        let snap = dog.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].what, "new wait");
        drop(leaked);
        assert_eq!(dog.snapshot().len(), 1);
    }
}
