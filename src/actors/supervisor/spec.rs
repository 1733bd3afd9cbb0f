//! How a supervisor is configured: its limits, its probe timing, its children.

use super::child::ChildSpec;
use std::collections::HashSet;
use std::time::Duration;

/// One supervisor of the tree and its children, in start order (an orderly
/// shutdown stops them in reverse order, so list dependencies first).
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    /// Path segment of this supervisor, e.g. `log`; the root's is its path.
    pub name: String,
    /// Failures tolerated within `within` before escalating; the next one
    /// makes this supervisor give up (its parent restarts it, or at the
    /// root, the node gives up).
    pub max_restarts: u32,
    pub within: Duration,
    /// How often children are pinged, checked for liveness and for overdue
    /// waits; the detection latency of every trigger is at most this long
    /// on top of its own deadline.
    pub ping_every: Duration,
    /// A child that does not answer a ping within this is wedged.
    pub ping_timeout: Duration,
    /// How long each child may take to stop in an orderly shutdown before
    /// it is killed.
    pub shutdown_timeout: Duration,
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A supervisor with keel's defaults: 5 restarts in 10 s, ping every
    /// 500 ms with a 1.5 s timeout, 5 s per child to shut down.
    ///
    /// A wedged actor is replaced 1.5–2 s after it stops answering, so a
    /// partition whose leader's processor wedges serves again within the
    /// 3 s the cluster promises after any single fault (with a 1 s ping and
    /// a 2 s timeout the Jepsen `stall` runs saw 2.8 s gaps). 1.5 s is still
    /// far beyond any legitimate pause of an actor that never blocks.
    pub fn new(name: impl Into<String>) -> Self {
        SupervisorSpec {
            name: name.into(),
            max_restarts: 5,
            within: Duration::from_secs(10),
            ping_every: Duration::from_millis(500),
            ping_timeout: Duration::from_millis(1500),
            shutdown_timeout: Duration::from_secs(5),
            children: Vec::new(),
        }
    }

    /// Appends a child.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    pub fn probe(mut self, ping_every: Duration, ping_timeout: Duration) -> Self {
        self.ping_every = ping_every;
        self.ping_timeout = ping_timeout;
        self
    }

    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Checks this spec and every nested one; `parent` is the path above it.
    pub(crate) fn validate(&self, parent: &str) -> Result<(), SpecError> {
        let path = if parent.is_empty() {
            self.name.clone()
        } else {
            format!("{parent}/{}", self.name)
        };
        check_name(parent, &self.name)?;
        for (field, d) in [
            ("within", self.within),
            ("ping_every", self.ping_every),
            ("ping_timeout", self.ping_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if d.is_zero() {
                return Err(SpecError::ZeroDuration {
                    supervisor: path,
                    field,
                });
            }
        }
        let mut seen = HashSet::new();
        for child in &self.children {
            check_name(&path, &child.name)?;
            if !seen.insert(child.name.as_str()) {
                return Err(SpecError::DuplicateChild {
                    parent: path,
                    name: child.name.clone(),
                });
            }
            child.starter.validate(&path)?;
        }
        Ok(())
    }

    /// Upper bound of an orderly stop of this subtree.
    pub(crate) fn stop_budget(&self) -> Duration {
        self.children
            .iter()
            .map(|c| c.starter.stop_budget(self.shutdown_timeout))
            .fold(self.shutdown_timeout, |a, b| a.saturating_add(b))
    }
}

fn check_name(parent: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.contains('/') {
        return Err(SpecError::InvalidName {
            parent: parent.to_string(),
            name: name.to_string(),
        });
    }
    Ok(())
}

/// A supervision tree that cannot be started as specified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "invalid child name {name:?} under {parent:?}: names are non-empty and contain no '/'"
    )]
    InvalidName { parent: String, name: String },
    #[error("{parent} has two children named {name:?}")]
    DuplicateChild { parent: String, name: String },
    #[error("{supervisor}: {field} must be greater than zero")]
    ZeroDuration {
        supervisor: String,
        field: &'static str,
    },
    #[error("a supervision tree must be started on an actix arbiter")]
    NoArbiter,
}
