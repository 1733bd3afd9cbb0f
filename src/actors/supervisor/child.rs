//! What a supervised child sees: its slot, its context and its kill switch.
//!
//! A restart replaces an actor with a fresh incarnation built by the child's
//! factory, so nobody may keep an `Addr` of a child for long: callers go
//! through the child's [`Slot`], which always holds the live incarnation.

use super::launch::{launch, launch_on, Running};
use super::watchdog::{WaitGuard, Watchdog};
use super::{ChildKind, SupervisorSpec};
use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Context, Handler, MailboxError, Message};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// The liveness probe every supervised actor answers.
///
/// It travels through the mailbox like any other message, so an answer
/// proves the actor is processing messages: an actor stuck in `ctx.wait(..)`
/// or with a mailbox that never drains does not answer in time and is
/// replaced. The handler should do nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping;

impl Message for Ping {
    type Result = ();
}

/// Where callers find the *current* incarnation of a child actor.
///
/// Restarts swap the `Addr` inside. Look it up for every request (it is a
/// read lock and a clone) instead of caching it: a cached `Addr` of a
/// replaced incarnation only ever answers `MailboxError::Closed`.
pub struct Slot<A: Actor> {
    inner: Arc<RwLock<SlotState<A>>>,
}

struct SlotState<A: Actor> {
    path: Option<String>,
    current: Option<(u64, Addr<A>)>,
}

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot {
            inner: Arc::new(RwLock::new(SlotState {
                path: None,
                current: None,
            })),
        }
    }
}

/// Why a message could not be delivered through a [`Slot`].
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// No incarnation is running: not started yet, restarting, or stopped.
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("{path}: {source}")]
    Mailbox {
        path: String,
        #[source]
        source: MailboxError,
    },
}

impl<A: Actor> Slot<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The live incarnation's address, if one is running.
    pub fn addr(&self) -> Option<Addr<A>> {
        self.read(|s| s.current.as_ref().map(|(_, a)| a.clone()))
    }

    /// The live incarnation's number (1 for the first start).
    pub fn incarnation(&self) -> Option<u64> {
        self.read(|s| s.current.as_ref().map(|(i, _)| *i))
    }

    /// The child's path in the tree, e.g. `root/log/sealer`, once started.
    pub fn path(&self) -> Option<String> {
        self.read(|s| s.path.clone())
    }

    /// Sends `msg` to the live incarnation and awaits the answer.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, SlotError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let addr = self
            .addr()
            .ok_or_else(|| SlotError::NotRunning(self.label()))?;
        addr.send(msg).await.map_err(|source| SlotError::Mailbox {
            path: self.label(),
            source,
        })
    }

    pub(crate) fn publish(&self, path: &str, incarnation: u64, addr: Addr<A>) {
        self.write(|s| {
            s.path = Some(path.to_string());
            s.current = Some((incarnation, addr));
        });
    }

    /// Empties the slot if it still holds `incarnation`.
    pub(crate) fn clear_if(&self, incarnation: u64) {
        self.write(|s| {
            if s.current.as_ref().is_some_and(|(i, _)| *i == incarnation) {
                s.current = None;
            }
        });
    }

    fn label(&self) -> String {
        self.path().unwrap_or_else(|| "unstarted child".to_string())
    }

    fn read<T>(&self, f: impl FnOnce(&SlotState<A>) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write(&self, f: impl FnOnce(&mut SlotState<A>)) {
        f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner))
    }
}

/// An incarnation's kill switch: fired when the supervisor replaces it.
///
/// The supervisor also aborts the incarnation's actix task, which ends
/// everything running *inside* the actor's context. Work the actor started
/// *outside* it (a `tokio::spawn`ed task, a blocking job, an RPC on another
/// arbiter) must select on this switch, or it outlives its actor. Long waits
/// inside the actor may use [`KillSwitch::guard`] too, to end tidily.
#[derive(Clone, Debug)]
pub struct KillSwitch {
    rx: watch::Receiver<bool>,
}

/// The supervisor's end of a [`KillSwitch`].
#[derive(Debug)]
pub(crate) struct KillTrigger {
    tx: watch::Sender<bool>,
}

/// The guarded future was abandoned because its incarnation was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("killed: this actor incarnation was replaced")]
pub struct Killed;

pub(crate) fn kill_switch() -> (KillTrigger, KillSwitch) {
    let (tx, rx) = watch::channel(false);
    (KillTrigger { tx }, KillSwitch { rx })
}

impl KillTrigger {
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl KillSwitch {
    /// Fired, or orphaned (its supervisor side is gone, so nobody owns the
    /// incarnation any more).
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes once the switch is fired (or orphaned).
    pub async fn fired(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger was dropped: treat it as fired.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Runs `fut` unless the switch fires first.
    pub async fn guard<F: Future>(&self, fut: F) -> Result<F::Output, Killed> {
        tokio::select! {
            biased;
            _ = self.fired() => Err(Killed),
            out = fut => Ok(out),
        }
    }
}

/// Handed to a child when it starts: its identity for waits, its kill
/// switch, and a way to say why it stopped. Cheap to clone.
#[derive(Clone)]
pub struct ChildContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    path: String,
    incarnation: u64,
    watchdog: Watchdog,
    kill: KillSwitch,
    exit_reason: Mutex<Option<String>>,
    // Keeps a standalone context's switch from reading as orphaned.
    _own_trigger: Option<KillTrigger>,
}

impl ChildContext {
    pub(crate) fn new(
        path: String,
        incarnation: u64,
        watchdog: Watchdog,
        kill: KillSwitch,
    ) -> Self {
        ChildContext {
            inner: Arc::new(ContextInner {
                path,
                incarnation,
                watchdog,
                kill,
                exit_reason: Mutex::new(None),
                _own_trigger: None,
            }),
        }
    }

    /// A context outside any tree, for unit tests of an actor: nobody
    /// restarts it and its kill switch never fires.
    pub fn standalone(path: impl Into<String>, watchdog: Watchdog) -> Self {
        Self::detached(path, 1, watchdog)
    }

    pub(crate) fn detached(path: impl Into<String>, incarnation: u64, watchdog: Watchdog) -> Self {
        let (trigger, kill) = kill_switch();
        ChildContext {
            inner: Arc::new(ContextInner {
                path: path.into(),
                incarnation,
                watchdog,
                kill,
                exit_reason: Mutex::new(None),
                _own_trigger: Some(trigger),
            }),
        }
    }

    /// The child's path in the tree, e.g. `root/log/sealer`.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// 1 for the first start, +1 on every restart (also of an ancestor).
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The node's wait registry.
    pub fn watchdog(&self) -> &Watchdog {
        &self.inner.watchdog
    }

    /// This incarnation's kill switch.
    pub fn kill_switch(&self) -> KillSwitch {
        self.inner.kill.clone()
    }

    /// Registers a wait of this incarnation; see [`Watchdog::register`].
    pub fn register_wait(&self, what: impl Into<String>, deadline: Duration) -> WaitGuard {
        self.inner.watchdog.register(self, what, deadline)
    }

    /// Records why this incarnation is about to stop on its own (call it
    /// before `ctx.stop()`); the supervisor logs it as the restart reason.
    pub fn set_exit_reason(&self, reason: impl Into<String>) {
        *self
            .inner
            .exit_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason.into());
    }

    pub(crate) fn take_exit_reason(&self) -> Option<String> {
        self.inner
            .exit_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl std::fmt::Debug for ChildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildContext")
            .field("path", &self.inner.path)
            .field("incarnation", &self.inner.incarnation)
            .finish()
    }
}

/// Everything a supervisor passes when it starts an incarnation.
pub(crate) struct StartArgs {
    pub cx: ChildContext,
    pub kill: KillTrigger,
    pub sink: super::launch::ExitSink,
    pub tree: Arc<super::Tree>,
}

/// Builds and launches one incarnation of a child; kept behind a trait so
/// one supervisor can hold children of different actor types.
pub(crate) trait Starter: Send + Sync {
    fn start(&self, args: StartArgs) -> Result<Running, String>;
    /// How long an orderly stop of this child may take.
    fn stop_budget(&self, parent_shutdown_timeout: Duration) -> Duration;
    /// Checks a nested spec; `parent` is the path of the supervisor above.
    fn validate(&self, _parent: &str) -> Result<(), super::SpecError> {
        Ok(())
    }
}

/// One child of a supervisor: an actor, or a nested supervisor.
///
/// Specs are reusable: a restarted subtree starts its children again from
/// the same specs. Cloning shares the factory and the incarnation counter.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) kind: ChildKind,
    pub(crate) starter: Arc<dyn Starter>,
    incarnations: Arc<AtomicU64>,
}

impl ChildSpec {
    /// A child actor built by `make` on every (re)start; `slot` always holds
    /// the live incarnation. `make` must not block: it runs on the
    /// supervisor's arbiter. If it panics, the start counts as a failure.
    pub fn actor<A, F>(name: impl Into<String>, slot: Slot<A>, make: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Ping>,
        F: Fn(ChildContext) -> A + Send + Sync + 'static,
    {
        ChildSpec::new(
            name.into(),
            ChildKind::Actor,
            Arc::new(ActorStarter {
                slot,
                make: Box::new(make),
            }),
        )
    }

    /// Like [`actor`](Self::actor), but every incarnation runs on `home`, an
    /// arbiter of its own (a thread): for an actor whose handlers touch the
    /// disk, so a slow disk cannot delay the supervisor's thread. `make`
    /// still runs on the supervisor's arbiter; the actor is moved to `home`.
    pub fn actor_on<A, F>(
        name: impl Into<String>,
        slot: Slot<A>,
        home: actix::ArbiterHandle,
        make: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Ping> + Send,
        F: Fn(ChildContext) -> A + Send + Sync + 'static,
    {
        ChildSpec::new(
            name.into(),
            ChildKind::Actor,
            Arc::new(HomedActorStarter {
                slot,
                home,
                make: Box::new(make),
            }),
        )
    }

    /// A nested supervisor (a subsystem). When it gives up, its parent
    /// restarts it as a whole, with all its children.
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        ChildSpec::new(
            spec.name.clone(),
            ChildKind::Supervisor,
            Arc::new(super::SupervisorStarter { spec }),
        )
    }

    fn new(name: String, kind: ChildKind, starter: Arc<dyn Starter>) -> Self {
        ChildSpec {
            name,
            kind,
            starter,
            incarnations: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number the next incarnation gets.
    pub(crate) fn next_incarnation(&self) -> u64 {
        self.incarnations.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

type Factory<A> = Box<dyn Fn(ChildContext) -> A + Send + Sync>;

/// Runs a child's factory; a panic in it is an error, not a crash of the
/// supervisor.
fn make_actor<A>(make: &Factory<A>, cx: ChildContext) -> Result<A, String> {
    catch_unwind(AssertUnwindSafe(|| make(cx)))
        .map_err(|p| format!("factory panicked: {}", super::launch::panic_message(&*p)))
}

struct ActorStarter<A: Actor> {
    slot: Slot<A>,
    make: Factory<A>,
}

impl<A> Starter for ActorStarter<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    fn start(&self, args: StartArgs) -> Result<Running, String> {
        let actor = make_actor(&self.make, args.cx.clone())?;
        Ok(launch(
            actor,
            args.cx,
            args.kill,
            args.sink,
            Some(self.slot.clone()),
        ))
    }

    fn stop_budget(&self, parent_shutdown_timeout: Duration) -> Duration {
        parent_shutdown_timeout
    }
}

/// Starts each incarnation on an arbiter of its own (see
/// [`ChildSpec::actor_on`]).
struct HomedActorStarter<A: Actor> {
    slot: Slot<A>,
    /// The arbiter every incarnation runs on.
    home: actix::ArbiterHandle,
    make: Factory<A>,
}

impl<A> Starter for HomedActorStarter<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping> + Send,
{
    fn start(&self, args: StartArgs) -> Result<Running, String> {
        let actor = make_actor(&self.make, args.cx.clone())?;
        Ok(launch_on(
            &self.home,
            actor,
            args.cx,
            args.kill,
            args.sink,
            Some(self.slot.clone()),
        ))
    }

    fn stop_budget(&self, parent_shutdown_timeout: Duration) -> Duration {
        parent_shutdown_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn kill_switch_fires_and_guards() {
        let (trigger, switch) = kill_switch();
        assert!(!switch.is_fired());
        assert_eq!(switch.guard(async { 7 }).await, Ok(7));
        trigger.fire();
        assert!(switch.is_fired());
        assert_eq!(
            switch.guard(std::future::pending::<()>()).await,
            Err(Killed)
        );
    }

    #[actix_rt::test]
    async fn a_dropped_trigger_reads_as_fired() {
        let (trigger, switch) = kill_switch();
        drop(trigger);
        assert!(switch.is_fired());
        tokio::time::timeout(Duration::from_secs(5), switch.fired())
            .await
            .expect("an orphaned switch completes fired()");
    }

    #[test]
    fn standalone_context_is_never_killed() {
        let cx = ChildContext::standalone("test/actor", Watchdog::new());
        assert!(!cx.kill_switch().is_fired());
        assert_eq!(cx.incarnation(), 1);
    }
}
