//! What the supervision tree reports: per child, its incarnation and restart
//! history; per node, the registered waits.
//!
//! Restart counts are kept per child *path* for the life of the tree, so they
//! survive restarts of the subtree that holds the child.

use super::intensity::RestartWindow;
use super::launch::ControlSender;
use super::unix_ms;
use super::watchdog::WaitInfo;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A serializable snapshot of one node's supervision tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionStatus {
    pub node: Option<NodeId>,
    /// Every supervised child (the root included), by path.
    pub children: Vec<ChildStatus>,
    /// Every registered wait, oldest first.
    pub waits: Vec<WaitInfo>,
    /// An orderly shutdown is in progress or done.
    pub shutting_down: bool,
    /// Set once the root exceeded its restart intensity and gave up.
    pub gave_up: Option<String>,
}

impl SupervisionStatus {
    pub fn child(&self, path: &str) -> Option<&ChildStatus> {
        self.children.iter().find(|c| c.path == path)
    }

    /// The longest-running wait, the first thing to look at on a stuck node.
    pub fn oldest_wait(&self) -> Option<&WaitInfo> {
        self.waits.iter().max_by_key(|w| w.waited_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    Actor,
    Supervisor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    Running,
    /// Dead and not (yet) replaced: its start failed, or its supervisor gave up.
    Down,
    /// Stopped by an orderly shutdown.
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// e.g. `root/log/sealer`.
    pub path: String,
    pub kind: ChildKind,
    pub state: ChildState,
    /// Current (or last) incarnation; 1 for the first start.
    pub incarnation: u64,
    /// Restarts of this child by its supervisor, for the life of the tree. A
    /// child started afresh because an ancestor was restarted gets a new
    /// incarnation but no restart here: the ancestor's count holds it.
    pub restarts_total: u64,
    /// Restarts within the last `window_ms`, the supervisor's intensity window.
    pub restarts_in_window: u32,
    pub window_ms: u64,
    pub last_restart: Option<RestartRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// e.g. `panicked: ...`, `ping unanswered within 1s`,
    /// `wait 'seal of loglet 0/3' overdue by 1.2 s`.
    pub reason: String,
    pub at_unix_ms: u64,
    pub ago_ms: u64,
}

/// The tree's live record, shared by all its supervisors.
#[derive(Default)]
pub(crate) struct Board {
    entries: BTreeMap<String, Entry>,
}

struct Entry {
    kind: ChildKind,
    state: ChildState,
    incarnation: u64,
    restarts_total: u64,
    recent: RestartWindow,
    last_restart: Option<(String, SystemTime, Instant)>,
    control: Option<ControlSender>,
}

/// How many restart times a child's entry keeps for its window count.
const RECENT_CAP: usize = 256;

impl Board {
    pub fn started(
        &mut self,
        path: &str,
        kind: ChildKind,
        window: Duration,
        incarnation: u64,
        control: ControlSender,
    ) {
        let entry = self
            .entries
            .entry(path.to_string())
            .or_insert_with(|| Entry {
                kind,
                state: ChildState::Running,
                incarnation,
                restarts_total: 0,
                recent: RestartWindow::new(window, RECENT_CAP),
                last_restart: None,
                control: None,
            });
        entry.state = ChildState::Running;
        entry.incarnation = incarnation;
        entry.control = Some(control);
    }

    pub fn restarted(&mut self, path: &str, reason: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(path) {
            e.restarts_total += 1;
            e.recent.record(now);
            e.last_restart = Some((reason.to_string(), SystemTime::now(), now));
            e.state = ChildState::Down;
            e.control = None;
        }
    }

    /// Marks `path` and everything below it.
    pub fn set_subtree_state(&mut self, path: &str, state: ChildState) {
        let prefix = format!("{path}/");
        for (p, e) in self.entries.iter_mut() {
            if p == path || p.starts_with(&prefix) {
                e.state = state;
                e.control = None;
            }
        }
    }

    pub fn control(&self, path: &str) -> Result<ControlSender, ChaosError> {
        let entry = self
            .entries
            .get(path)
            .ok_or_else(|| ChaosError::UnknownChild(path.to_string()))?;
        entry
            .control
            .clone()
            .ok_or_else(|| ChaosError::NotRunning(path.to_string()))
    }

    pub fn snapshot(&self, now: Instant) -> Vec<ChildStatus> {
        self.entries
            .iter()
            .map(|(path, e)| ChildStatus {
                path: path.clone(),
                kind: e.kind,
                state: e.state,
                incarnation: e.incarnation,
                restarts_total: e.restarts_total,
                restarts_in_window: u32::try_from(e.recent.count(now)).unwrap_or(u32::MAX),
                window_ms: u64::try_from(e.recent.within().as_millis()).unwrap_or(u64::MAX),
                last_restart: e
                    .last_restart
                    .as_ref()
                    .map(|(reason, wall, at)| RestartRecord {
                        reason: reason.clone(),
                        at_unix_ms: unix_ms(*wall),
                        ago_ms: u64::try_from(now.saturating_duration_since(*at).as_millis())
                            .unwrap_or(u64::MAX),
                    }),
            })
            .collect()
    }
}

/// Why a chaos command could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    #[error("no supervised child at {0}")]
    UnknownChild(String),
    #[error("{0} is not running")]
    NotRunning(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[test]
    fn restart_counts_survive_a_fresh_start_of_the_same_path() {
        let mut board = Board::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let window = Duration::from_secs(10);
        board.started("root/a", ChildKind::Actor, window, 1, tx.clone());
        board.restarted("root/a", "panicked: boom", now);
        board.started("root/a", ChildKind::Actor, window, 2, tx.clone());
        board.restarted("root/a", "ping unanswered", now);
        board.started("root/a", ChildKind::Actor, window, 3, tx);
        let snap = board.snapshot(now);
        assert_eq!(snap.len(), 1);
        let a = &snap[0];
        assert_eq!(a.incarnation, 3);
        assert_eq!(a.restarts_total, 2);
        assert_eq!(a.restarts_in_window, 2);
        assert_eq!(a.state, ChildState::Running);
        assert_eq!(a.last_restart.as_ref().unwrap().reason, "ping unanswered");
        let later = board.snapshot(now + Duration::from_secs(11));
        assert_eq!(later[0].restarts_in_window, 0);
        assert_eq!(later[0].restarts_total, 2);
    }

    #[test]
    fn control_is_only_offered_for_running_children() {
        let mut board = Board::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        assert_eq!(
            board.control("root/x").err(),
            Some(ChaosError::UnknownChild("root/x".into()))
        );
        board.started("root/x", ChildKind::Actor, Duration::from_secs(1), 1, tx);
        assert!(board.control("root/x").is_ok());
        board.set_subtree_state("root", ChildState::Stopped);
        assert_eq!(
            board.control("root/x").err(),
            Some(ChaosError::NotRunning("root/x".into()))
        );
    }
}
