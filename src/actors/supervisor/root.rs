//! The root of a node's tree and the handle the embedding keeps.

use super::child::{kill_switch, ChildContext};
use super::launch::{launch, Chaos, Control, Exit, ExitSink, Running};
use super::status::{ChaosError, ChildKind, ChildState, SupervisionStatus};
use super::{SpecError, Supervisor, SupervisorSpec, Tree, Watchdog};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The embedding's handle on a running tree; cheap to clone, usable from any
/// thread (an HTTP status handler, the node's main).
///
/// Dropping the last clone kills the tree without calling `on_give_up`:
/// keep one for as long as the node runs.
#[derive(Clone)]
pub struct RootHandle {
    inner: Arc<RootInner>,
}

struct RootInner {
    tree: Arc<Tree>,
    path: String,
    root: Mutex<Option<Running>>,
    done: watch::Receiver<bool>,
    stop_budget: Duration,
}

impl Drop for RootInner {
    fn drop(&mut self) {
        // Not a failure: keep the exit from reading as one.
        self.tree.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// An orderly shutdown that did not finish in time; the rest was killed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("supervision tree did not stop within {0:?}; the rest was killed")]
pub struct ShutdownError(pub Duration);

/// Starts a node's supervision tree on the current actix arbiter.
///
/// `on_give_up` is called once, with the reason, if the root exceeds its
/// restart intensity or dies (not when the actix system itself stops); the
/// node binary exits non-zero from it. It runs on the arbiter thread, so it
/// must be quick.
pub fn start_root(
    spec: SupervisorSpec,
    watchdog: Watchdog,
    on_give_up: impl FnOnce(String) + Send + 'static,
) -> Result<RootHandle, SpecError> {
    spec.validate("")?;
    if actix_rt::Arbiter::try_current().is_none() {
        return Err(SpecError::NoArbiter);
    }
    let tree = Arc::new(Tree::new(watchdog.clone()));
    let path = spec.name.clone();
    let (done_tx, done) = watch::channel(false);
    let sink: ExitSink = {
        let tree = tree.clone();
        let path = path.clone();
        Box::new(move |exit: Exit| {
            // A cancelled root task means the runtime itself is going away
            // (or the handle was dropped): an ending, not a failure.
            if tree.shutting_down() || exit == Exit::Cancelled {
                tree.board().set_subtree_state(&path, ChildState::Stopped);
            } else {
                let reason = match exit {
                    Exit::Stopped(Some(reason)) => reason,
                    other => format!("root supervisor {other}"),
                };
                tracing::error!(node = %tree.node(), %reason, "supervision tree gave up");
                tree.board().set_subtree_state(&path, ChildState::Down);
                *tree.gave_up.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                on_give_up(reason);
            }
            done_tx.send_replace(true);
        })
    };
    let (trigger, switch) = kill_switch();
    let cx = ChildContext::new(path.clone(), 1, watchdog, switch);
    let stop_budget = spec.stop_budget();
    let within = spec.within;
    let root = launch(
        Supervisor::new(spec, cx.clone(), tree.clone()),
        cx,
        trigger,
        sink,
        None,
    );
    tree.board()
        .started(&path, ChildKind::Supervisor, within, 1, root.control());
    Ok(RootHandle {
        inner: Arc::new(RootInner {
            tree,
            path,
            root: Mutex::new(Some(root)),
            done,
            stop_budget,
        }),
    })
}

impl RootHandle {
    /// A snapshot of every child and every registered wait.
    pub fn status(&self) -> SupervisionStatus {
        let tree = &self.inner.tree;
        SupervisionStatus {
            node: tree.watchdog.node(),
            children: tree.board().snapshot(Instant::now()),
            waits: tree.watchdog.snapshot(),
            shutting_down: tree.shutting_down(),
            gave_up: tree
                .gave_up
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    pub fn watchdog(&self) -> &Watchdog {
        &self.inner.tree.watchdog
    }

    /// The root's path, e.g. `root`.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// Injects a fault into the live incarnation of the child at `path`.
    pub fn chaos(&self, path: &str, chaos: Chaos) -> Result<(), ChaosError> {
        let control = self.inner.tree.board().control(path)?;
        control
            .send(Control::Chaos(chaos))
            .map_err(|_| ChaosError::NotRunning(path.to_string()))
    }

    /// Whether the root has ended (shut down or gave up).
    pub fn is_stopped(&self) -> bool {
        *self.inner.done.borrow()
    }

    /// Completes when the root has ended (shut down or gave up).
    pub async fn stopped(&self) {
        let mut done = self.inner.done.clone();
        // An error means the sink is gone, which also means the root ended.
        let _ = done.wait_for(|d| *d).await;
    }

    /// Orderly stop of the whole tree: no restarts from now on; each
    /// supervisor stops its children in reverse start order (each within its
    /// `shutdown_timeout`, else killed), then itself.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.tree.shutting_down.store(true, Ordering::SeqCst);
        let control = {
            let root = self
                .inner
                .root
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            root.as_ref().map(Running::control)
        };
        if let Some(control) = control {
            let _ = control.send(Control::Stop);
        }
        let budget = self.inner.stop_budget;
        let in_time = tokio::time::timeout(budget, self.stopped()).await.is_ok();
        // Kills whatever is left; a no-op after an orderly stop.
        let root = self
            .inner
            .root
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(root);
        if in_time {
            Ok(())
        } else {
            Err(ShutdownError(budget))
        }
    }
}
