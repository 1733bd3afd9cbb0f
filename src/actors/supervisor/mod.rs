//! The supervision tree: every actor of a node runs under a supervisor that
//! restarts it when it dies or gets stuck.
//!
//! A stuck wait is the failure keel exists to prevent (a seal wait that never
//! ends keeps a whole cluster from serving). So no wait is trusted: every
//! wait is registered with a deadline in the node's [`Watchdog`], and past it
//! the supervisor replaces the waiting actor with a fresh incarnation, which
//! re-derives its state from durable storage and retries.
//!
//! # What triggers a restart
//! Each is logged at `warn` with the child's path and the reason, and counted
//! in [`SupervisionStatus`]:
//! - the incarnation ended: it panicked (`panicked: <message>`), stopped
//!   (`stopped[: <reason given with ChildContext::set_exit_reason>]`), or its
//!   mailbox closed (seen by the periodic `connected()` check);
//! - it did not answer a [`Ping`] within `ping_timeout` (a wedged mailbox, e.g.
//!   `ctx.wait` on a future that never ends);
//! - one of its registered waits is past its deadline
//!   (`wait 'seal of loglet 0/3' overdue by 1.2 s`).
//!
//! A restart fires the old incarnation's [`KillSwitch`], aborts its task (so
//! it handles no further message, even if wedged; actix runs its
//! `stopping`/`stopped` hooks), drops its waits from the registry, builds a new
//! incarnation with the child's factory and publishes it in the child's
//! [`Slot`].
//!
//! # Intensity and escalation
//! More than `max_restarts` failures within `within` (over all children of one
//! supervisor) make the supervisor give up: it kills its children and stops.
//! Its parent sees a failed child and restarts the whole subtree, counting it
//! against its own intensity. When the root gives up, `on_give_up` is called;
//! the node binary exits non-zero.
//!
//! # Conventions for supervised actors
//! - Answer [`Ping`] with an empty handler, and keep handlers short: long work
//!   goes into `ctx.spawn`, not `ctx.wait`, or pings time out.
//! - Reach other actors through their [`Slot`]s, never through a kept `Addr`.
//! - Register every wait for another component with
//!   [`ChildContext::register_wait`] and hold the guard while waiting.
//! - Work started outside the actor's own context (spawned tasks, blocking
//!   jobs) selects on the [`KillSwitch`] so it ends with its incarnation.
//! - Keep truth in storage or the metadata register, never only in fields:
//!   any incarnation may be replaced at any time.
//!
//! Children run on the supervisor's arbiter. A handler that blocks its thread
//! stalls that whole arbiter, supervisor included; that is why no actor may.

mod child;
mod intensity;
mod launch;
mod root;
mod spec;
mod status;
mod watchdog;

#[cfg(test)]
mod tests;

pub use child::{ChildContext, ChildSpec, KillSwitch, Killed, Ping, Slot, SlotError};
pub use launch::Chaos;
pub use root::{start_root, RootHandle, ShutdownError};
pub use spec::{SpecError, SupervisorSpec};
pub use status::{
    ChaosError, ChildKind, ChildState, ChildStatus, RestartRecord, SupervisionStatus,
};
pub use watchdog::{WaitGuard, WaitInfo, Watchdog};

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MailboxError, Message};
use child::{kill_switch, StartArgs, Starter};
use intensity::Intensity;
use launch::{launch, Exit, ExitSink, Running};
use status::Board;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// State shared by every supervisor of one tree.
pub(crate) struct Tree {
    watchdog: Watchdog,
    board: Mutex<Board>,
    shutting_down: AtomicBool,
    gave_up: Mutex<Option<String>>,
}

impl Tree {
    fn new(watchdog: Watchdog) -> Self {
        Tree {
            watchdog,
            board: Mutex::new(Board::default()),
            shutting_down: AtomicBool::new(false),
            gave_up: Mutex::new(None),
        }
    }

    fn board(&self) -> MutexGuard<'_, Board> {
        // Every critical section is a single map update; poison is harmless.
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    fn node(&self) -> String {
        self.watchdog
            .node()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    }
}

/// Sent by a child's exit guard when an incarnation ends.
struct ChildExited {
    index: usize,
    incarnation: u64,
    exit: Exit,
}

impl Message for ChildExited {
    type Result = ();
}

/// Where a supervisor is in an orderly stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopPhase {
    Running,
    Stopping,
    Done,
}

struct Child {
    spec: ChildSpec,
    path: String,
    running: Option<Running>,
    /// Why the child is down and awaiting a restart on the next tick (its
    /// last start failed).
    down: Option<String>,
}

/// The supervisor actor: starts its children, probes them, restarts them.
pub(crate) struct Supervisor {
    spec: SupervisorSpec,
    tree: Arc<Tree>,
    cx: ChildContext,
    intensity: Intensity,
    children: Vec<Child>,
    phase: StopPhase,
    gave_up: bool,
}

impl Supervisor {
    fn new(spec: SupervisorSpec, cx: ChildContext, tree: Arc<Tree>) -> Self {
        let children = spec
            .children
            .iter()
            .map(|c| Child {
                spec: c.clone(),
                path: format!("{}/{}", cx.path(), c.name),
                running: None,
                down: None,
            })
            .collect();
        Supervisor {
            intensity: Intensity::new(spec.max_restarts, spec.within),
            spec,
            tree,
            cx,
            children,
            phase: StopPhase::Running,
            gave_up: false,
        }
    }

    fn path(&self) -> &str {
        self.cx.path()
    }

    /// No probing and no restarts: stopping, given up, or the tree shuts down.
    fn inactive(&self) -> bool {
        self.phase != StopPhase::Running || self.gave_up || self.tree.shutting_down()
    }

    fn current(&mut self, index: usize, incarnation: u64) -> Option<&mut Running> {
        self.children
            .get_mut(index)?
            .running
            .as_mut()
            .filter(|r| r.incarnation() == incarnation)
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(index) else {
            return;
        };
        let incarnation = child.spec.next_incarnation();
        let (trigger, switch) = kill_switch();
        let cx = ChildContext::new(
            child.path.clone(),
            incarnation,
            self.tree.watchdog.clone(),
            switch,
        );
        let me = ctx.address();
        // One message per incarnation, and it must not be lost to a full
        // mailbox: that is what do_send is for.
        let sink: ExitSink = Box::new(move |exit| {
            me.do_send(ChildExited {
                index,
                incarnation,
                exit,
            })
        });
        let args = StartArgs {
            cx,
            kill: trigger,
            sink,
            tree: self.tree.clone(),
        };
        match child.spec.starter.start(args) {
            Ok(running) => {
                tracing::debug!(node = %self.tree.node(), child = %child.path, incarnation, "child started");
                self.tree.board().started(
                    &child.path,
                    child.spec.kind,
                    self.spec.within,
                    incarnation,
                    running.control(),
                );
                child.running = Some(running);
                child.down = None;
            }
            Err(reason) => {
                tracing::warn!(node = %self.tree.node(), child = %child.path, incarnation, %reason, "child failed to start");
                self.tree
                    .board()
                    .set_subtree_state(&child.path, ChildState::Down);
                child.down = Some(reason);
            }
        }
    }

    /// Every `ping_every`: liveness, overdue waits, pings, pending restarts.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.inactive() {
            return;
        }
        let overdue = self.tree.watchdog.overdue(Instant::now());
        for index in 0..self.children.len() {
            if self.inactive() {
                return;
            }
            let child = &mut self.children[index];
            let Some(running) = child.running.as_mut() else {
                if let Some(reason) = child.down.take() {
                    self.on_failure(index, reason, ctx);
                }
                continue;
            };
            let incarnation = running.incarnation();
            if !running.connected() {
                // Its exit report is on its way (an incarnation on another
                // arbiter closes its mailbox before the report arrives, and
                // the report says why); fail on the closed mailbox alone
                // only if no report came within a ping timeout.
                let closed = *running.closed_at.get_or_insert_with(Instant::now);
                if closed.elapsed() >= self.spec.ping_timeout {
                    self.fail(index, incarnation, "exited (mailbox closed)".into(), ctx);
                }
                continue;
            }
            let late = overdue
                .iter()
                .filter(|w| w.owner == child.path && w.incarnation == incarnation)
                .max_by_key(|w| w.by);
            if let Some(w) = late {
                let reason = format!("wait '{}' overdue by {:.1} s", w.what, w.by.as_secs_f64());
                self.fail(index, incarnation, reason, ctx);
                continue;
            }
            if !running.ping_in_flight {
                running.ping_in_flight = true;
                let timeout = self.spec.ping_timeout;
                let pong = running.ping(timeout);
                ctx.spawn(
                    wrap_future::<_, Self>(pong).map(move |res, act, ctx| {
                        act.on_pong(index, incarnation, timeout, res, ctx)
                    }),
                );
            }
        }
    }

    fn on_pong(
        &mut self,
        index: usize,
        incarnation: u64,
        timeout: Duration,
        res: Result<(), MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(running) = self.current(index, incarnation) else {
            return;
        };
        running.ping_in_flight = false;
        match res {
            Ok(()) => {}
            Err(MailboxError::Timeout) => {
                let reason = format!("ping unanswered within {timeout:?}");
                self.fail(index, incarnation, reason, ctx);
            }
            // The exit report, or the closed-mailbox check in `tick`,
            // ends the incarnation.
            Err(MailboxError::Closed) => {}
        }
    }

    /// A failure of the child's *current* incarnation; stale reports about
    /// an incarnation already replaced are ignored.
    fn fail(&mut self, index: usize, incarnation: u64, reason: String, ctx: &mut Context<Self>) {
        if self.inactive() || self.current(index, incarnation).is_none() {
            return;
        }
        self.on_failure(index, reason, ctx);
    }

    fn on_failure(&mut self, index: usize, reason: String, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.intensity.exceeded_by_failure(now) {
            let path = &self.children[index].path;
            let why = format!(
                "more than {} restarts within {:?}; last: {path}: {reason}",
                self.intensity.max(),
                self.intensity.within(),
            );
            self.give_up(why, ctx);
            return;
        }
        self.restart(index, &reason, now, ctx);
    }

    fn restart(&mut self, index: usize, reason: &str, now: Instant, ctx: &mut Context<Self>) {
        let child = &mut self.children[index];
        let old = child.running.take();
        let old_incarnation = old.as_ref().map(Running::incarnation);
        tracing::warn!(
            node = %self.tree.node(),
            child = %child.path,
            incarnation = ?old_incarnation,
            %reason,
            "restarting child"
        );
        if let Some(inc) = old_incarnation {
            self.tree.watchdog.forget(&child.path, inc);
        }
        {
            let mut board = self.tree.board();
            board.restarted(&child.path, reason, now);
            board.set_subtree_state(&child.path, ChildState::Down);
        }
        // Kill the old incarnation before its successor exists, so the two
        // never both handle messages; its slot entry is replaced on start.
        if let Some(old) = &old {
            old.kill();
        }
        self.start_child(index, ctx);
        drop(old);
    }

    /// Restart intensity exceeded: kill every child, stop, and let the parent
    /// (or the root's `on_give_up`) handle the rest.
    fn give_up(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(node = %self.tree.node(), supervisor = %self.path(), %reason, "giving up");
        self.gave_up = true;
        self.kill_children();
        self.cx.set_exit_reason(format!("gave up: {reason}"));
        ctx.stop();
    }

    fn kill_children(&mut self) {
        for child in self.children.iter_mut().rev() {
            child.down = None;
            if let Some(running) = child.running.take() {
                self.tree
                    .watchdog
                    .forget(&child.path, running.incarnation());
                drop(running);
                self.tree
                    .board()
                    .set_subtree_state(&child.path, ChildState::Down);
            }
        }
    }

    /// Stops the children one by one in reverse start order, each within its
    /// budget, then stops this supervisor.
    fn begin_orderly_stop(&mut self, ctx: &mut Context<Self>) {
        self.phase = StopPhase::Stopping;
        let mut work = Vec::new();
        for child in self.children.iter_mut().rev() {
            child.down = None;
            if let Some(running) = child.running.take() {
                let budget = child.spec.starter.stop_budget(self.spec.shutdown_timeout);
                work.push((child.path.clone(), budget, running));
            } else {
                self.tree
                    .board()
                    .set_subtree_state(&child.path, ChildState::Stopped);
            }
        }
        let tree = self.tree.clone();
        let stop_all = async move {
            for (path, budget, running) in work {
                let incarnation = running.incarnation();
                if !running.stop(budget).await {
                    tracing::warn!(node = %tree.node(), child = %path, ?budget, "child did not stop in time; killed");
                }
                tree.watchdog.forget(&path, incarnation);
                tree.board().set_subtree_state(&path, ChildState::Stopped);
            }
        };
        ctx.spawn(wrap_future::<_, Self>(stop_all).map(|(), act, ctx| {
            act.phase = StopPhase::Done;
            ctx.stop();
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
        ctx.run_interval(self.spec.ping_every, |act, ctx| act.tick(ctx));
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> actix::Running {
        // Children are stopped one by one only in the tree's orderly
        // shutdown. Any other end (given up, killed by the parent, the task
        // dropped with the runtime) kills them at once: actix also calls this
        // while dropping a live context, where no timer may be created.
        let orderly = self.tree.shutting_down() && !self.cx.kill_switch().is_fired();
        let has_children = self.children.iter().any(|c| c.running.is_some());
        if self.phase == StopPhase::Running && orderly && has_children {
            self.begin_orderly_stop(ctx);
            return actix::Running::Continue;
        }
        self.kill_children();
        actix::Running::Stop
    }
}

impl Handler<Ping> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        self.fail(msg.index, msg.incarnation, msg.exit.to_string(), ctx);
    }
}

/// Starts a nested supervisor as a child of another.
pub(crate) struct SupervisorStarter {
    spec: SupervisorSpec,
}

impl Starter for SupervisorStarter {
    fn start(&self, args: StartArgs) -> Result<Running, String> {
        let sup = Supervisor::new(self.spec.clone(), args.cx.clone(), args.tree);
        Ok(launch(sup, args.cx, args.kill, args.sink, None))
    }

    fn stop_budget(&self, _parent_shutdown_timeout: Duration) -> Duration {
        self.spec.stop_budget()
    }

    fn validate(&self, parent: &str) -> Result<(), SpecError> {
        self.spec.validate(parent)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
