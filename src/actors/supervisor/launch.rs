//! Launching one incarnation of a child, and noticing when it ends.
//!
//! actix restarts an actor only after an orderly stop; a panic in a handler
//! silently ends the actor's task. So the supervisor spawns each incarnation
//! itself: the actor's context future runs inside a wrapper task that catches
//! a panic (keeping its message for the restart reason) and, through an exit
//! guard, reports every way the incarnation can end, including being
//! cancelled. Keeping the task's abort handle also gives the supervisor a
//! kill that works on an actor stuck in `ctx.wait(..)`, which no message can
//! reach: aborting drops the context without handling any further message
//! (actix then runs the actor's `stopping`/`stopped` hooks once).

use super::child::{ChildContext, KillTrigger, Ping, Slot};
use actix::fut::{wrap_future, ActorFutureExt};
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MailboxError};
use futures::future::{BoxFuture, LocalBoxFuture};
use futures::FutureExt;
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// How an incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Its context finished: the actor stopped itself (with the reason it
    /// gave via `ChildContext::set_exit_reason`, if any) or was stopped.
    Stopped(Option<String>),
    /// A handler or hook panicked.
    Panicked(String),
    /// Its task was dropped without finishing (aborted, or runtime shutdown).
    Cancelled,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Stopped(None) => write!(f, "stopped"),
            Exit::Stopped(Some(reason)) => write!(f, "stopped: {reason}"),
            Exit::Panicked(msg) => write!(f, "panicked: {msg}"),
            Exit::Cancelled => write!(f, "task cancelled"),
        }
    }
}

/// Called exactly once when an incarnation ends.
pub(crate) type ExitSink = Box<dyn FnOnce(Exit) + Send>;

/// Fault injection on a live incarnation, for tests and chaos endpoints.
///
/// It works on any supervised actor without its cooperation: the command is
/// executed by a future the supervisor installs in the child's own context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chaos {
    /// Wedge the actor: its context enters `ctx.wait` on a future that only
    /// the kill switch ends, so it stops processing messages (pings too).
    /// With `wait` set, it also registers a wait named `chaos stall` with
    /// that deadline, as a stuck protocol step would.
    Stall { wait: Option<Duration> },
    /// Panic inside the actor's context, as a buggy handler would.
    Panic,
}

pub(crate) enum Control {
    /// Orderly stop: the actor finishes its current message, then stops.
    Stop,
    Chaos(Chaos),
}

pub(crate) type ControlSender = mpsc::UnboundedSender<Control>;

/// Type-erased view of a live incarnation's address.
trait Probe {
    fn connected(&self) -> bool;
    fn ping(&self, timeout: Duration) -> LocalBoxFuture<'static, Result<(), MailboxError>>;
    fn unpublish(&self);
}

struct AddrProbe<A: Actor> {
    addr: actix::Addr<A>,
    slot: Option<Slot<A>>,
    incarnation: u64,
}

impl<A> Probe for AddrProbe<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    fn connected(&self) -> bool {
        self.addr.connected()
    }

    fn ping(&self, timeout: Duration) -> LocalBoxFuture<'static, Result<(), MailboxError>> {
        Box::pin(self.addr.send(Ping).timeout(timeout))
    }

    fn unpublish(&self) {
        if let Some(slot) = &self.slot {
            slot.clear_if(self.incarnation);
        }
    }
}

/// The supervisor's handle on a live incarnation. Dropping it kills the
/// incarnation (fires its kill switch, aborts its task) and empties its slot.
pub(crate) struct Running {
    pub cx: ChildContext,
    pub ping_in_flight: bool,
    /// When the supervisor first saw the mailbox closed, waiting for the
    /// exit report that says why.
    pub closed_at: Option<tokio::time::Instant>,
    kill: KillTrigger,
    control: ControlSender,
    /// Ends the incarnation's task without its cooperation.
    abort: Abort,
    /// Completes when the incarnation's task has ended (taken by `stop`).
    done: Option<BoxFuture<'static, ()>>,
    probe: Box<dyn Probe + Send>,
}

/// How to abort an incarnation's task: a tokio task on the supervisor's own
/// arbiter, or an abortable future on the child's home arbiter.
enum Abort {
    Local(AbortHandle),
    Remote(futures::future::AbortHandle),
}

impl Abort {
    fn abort(&self) {
        match self {
            Abort::Local(h) => h.abort(),
            Abort::Remote(h) => h.abort(),
        }
    }
}

impl Running {
    pub fn incarnation(&self) -> u64 {
        self.cx.incarnation()
    }

    /// False once the actor's mailbox is gone (it stopped or died).
    pub fn connected(&self) -> bool {
        self.probe.connected()
    }

    pub fn ping(&self, timeout: Duration) -> LocalBoxFuture<'static, Result<(), MailboxError>> {
        self.probe.ping(timeout)
    }

    pub fn control(&self) -> ControlSender {
        self.control.clone()
    }

    /// Fires the kill switch and aborts the task: the actor handles no
    /// further message. Its slot entry stays until the handle is dropped.
    pub fn kill(&self) {
        self.kill.fire();
        self.abort.abort();
    }

    /// Orderly stop within `budget`, then a kill if it did not finish.
    /// Returns whether it stopped in time.
    pub async fn stop(mut self, budget: Duration) -> bool {
        let _ = self.control.send(Control::Stop);
        let Some(done) = self.done.take() else {
            return true;
        };
        // actix polls a context one last time while its runtime is being torn
        // down; there is no timer then, and dropping `self` kills the rest.
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        tokio::time::timeout(budget, done).await.is_ok()
        // Dropping `self` kills whatever is left.
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        self.probe.unpublish();
    }
}

/// Spawns `actor` as one incarnation on the current arbiter and publishes
/// its address in `slot`. `sink` hears how it ends.
pub(crate) fn launch<A>(
    actor: A,
    cx: ChildContext,
    kill: KillTrigger,
    sink: ExitSink,
    slot: Option<Slot<A>>,
) -> Running
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    let (control, control_rx) = mpsc::unbounded_channel();
    let mut ctx = Context::<A>::new();
    let addr = ctx.address();
    arm_control(&mut ctx, control_rx, cx.clone());
    let guard = ExitGuard {
        cx: cx.clone(),
        sink: Some(sink),
    };
    let task = actix_rt::spawn(run_incarnation(ctx.into_future(actor), guard));
    let abort = Abort::Local(task.abort_handle());
    running(
        cx,
        kill,
        control,
        abort,
        task.map(|_| ()).boxed(),
        addr,
        slot,
    )
}

/// Like [`launch`], but the incarnation runs on `home`, another arbiter
/// (its own thread): for an actor whose handlers do blocking work (disk
/// reads and writes) that must not delay the supervisor's thread, which
/// also drives QUIC, timers and the failure detector's pings.
///
/// The mailbox is made here, so the address is published at once; the
/// context is built on `home`, since actix contexts never move between
/// threads. If `home` is gone, the incarnation ends at once as cancelled.
pub(crate) fn launch_on<A>(
    home: &actix::ArbiterHandle,
    actor: A,
    cx: ChildContext,
    kill: KillTrigger,
    sink: ExitSink,
    slot: Option<Slot<A>>,
) -> Running
where
    A: Actor<Context = Context<A>> + Handler<Ping> + Send,
{
    let (control, control_rx) = mpsc::unbounded_channel();
    let (tx, rx) = actix::dev::channel::channel::<A>(16);
    let addr = actix::Addr::new(tx);
    let (abort, registration) = futures::future::AbortHandle::new_pair();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let guard = ExitGuard {
        cx: cx.clone(),
        sink: Some(sink),
    };
    let home_cx = cx.clone();
    // If the closure never runs, dropping it drops the guard: the
    // supervisor hears `Cancelled`, and `done` completes.
    home.spawn_fn(move || {
        let mut ctx = Context::<A>::with_receiver(rx);
        arm_control(&mut ctx, control_rx, home_cx);
        let run = futures::future::Abortable::new(
            run_incarnation(ctx.into_future(actor), guard),
            registration,
        );
        actix_rt::spawn(async move {
            let _ = run.await;
            drop(done_tx);
        });
    });
    let done = done_rx.map(|_| ()).boxed();
    running(cx, kill, control, Abort::Remote(abort), done, addr, slot)
}

/// Publishes a launched incarnation's address in `slot` and returns its
/// handle; what [`launch`] and [`launch_on`] share once the task is spawned.
fn running<A>(
    cx: ChildContext,
    kill: KillTrigger,
    control: ControlSender,
    abort: Abort,
    done: BoxFuture<'static, ()>,
    addr: actix::Addr<A>,
    slot: Option<Slot<A>>,
) -> Running
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    if let Some(slot) = &slot {
        slot.publish(cx.path(), cx.incarnation(), addr.clone());
    }
    Running {
        ping_in_flight: false,
        closed_at: None,
        kill,
        control,
        abort,
        done: Some(done),
        probe: Box::new(AddrProbe {
            addr,
            slot,
            incarnation: cx.incarnation(),
        }),
        cx,
    }
}

async fn run_incarnation<F>(fut: F, guard: ExitGuard)
where
    F: Future<Output = ()>,
{
    let mut fut = Box::pin(fut);
    // The context is dropped right after a panic and never polled again, so
    // observing it half-updated is not a concern.
    let exit = match AssertUnwindSafe(fut.as_mut()).catch_unwind().await {
        Ok(()) => Exit::Stopped(guard.cx.take_exit_reason()),
        Err(payload) => Exit::Panicked(panic_message(&*payload)),
    };
    // Dropping a context that is still alive runs the actor's stop hooks;
    // after a panic they may panic again. Keep that from hiding the exit.
    if std::panic::catch_unwind(AssertUnwindSafe(move || drop(fut))).is_err() {
        tracing::warn!(child = %guard.cx.path(), "actor panicked again while being dropped");
    }
    guard.finish(exit);
}

/// Reports the end of an incarnation exactly once, also when its task is
/// dropped (aborted) instead of finishing.
struct ExitGuard {
    cx: ChildContext,
    sink: Option<ExitSink>,
}

impl ExitGuard {
    fn finish(mut self, exit: Exit) {
        if let Some(sink) = self.sink.take() {
            sink(exit);
        }
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink(Exit::Cancelled);
        }
    }
}

/// Installs the control future in a child's context: it stops the actor on
/// request or when its kill switch fires, and executes chaos commands.
fn arm_control<A>(ctx: &mut Context<A>, mut rx: mpsc::UnboundedReceiver<Control>, cx: ChildContext)
where
    A: Actor<Context = Context<A>>,
{
    let kill = cx.kill_switch();
    let next = async move {
        let cmd = tokio::select! {
            biased;
            _ = kill.fired() => None,
            cmd = rx.recv() => cmd,
        };
        (cmd, rx)
    };
    ctx.spawn(wrap_future::<_, A>(next).map(
        move |(cmd, rx), _act, ctx: &mut Context<A>| match cmd {
            None | Some(Control::Stop) => ctx.stop(),
            Some(Control::Chaos(Chaos::Panic)) => {
                // Deliberate: this is the fault being injected.
                panic!("chaos: panic injected into {}", cx.path())
            }
            Some(Control::Chaos(Chaos::Stall { wait })) => {
                let guard = wait.map(|deadline| cx.register_wait("chaos stall", deadline));
                let kill = cx.kill_switch();
                ctx.wait(wrap_future(async move {
                    kill.fired().await;
                    drop(guard);
                }));
                arm_control(ctx, rx, cx);
            }
        },
    ));
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
