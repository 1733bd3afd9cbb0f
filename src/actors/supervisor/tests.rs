//! Behaviour of the tree under real failures: panics, overdue waits, wedged
//! mailboxes, escalation, shutdown. Probing is fast here (tens of ms) so the
//! whole module runs in a few seconds; every wait for a condition polls with
//! a deadline.

use super::*;
use actix::prelude::*;
use std::future::pending;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

const DEADLINE: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A supervisor spec with fast probing.
fn fast(name: &str) -> SupervisorSpec {
    SupervisorSpec::new(name)
        .probe(ms(20), ms(150))
        .shutdown_timeout(ms(1000))
}

/// Polls `cond` until it yields a value, failing the test after `DEADLINE`.
async fn eventually<T>(what: &str, mut cond: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(ms(5)).await;
    }
}

/// Waits until `slot` holds incarnation `n` and that incarnation answers.
async fn answering(slot: &Slot<Probe>, n: u64) {
    eventually(&format!("incarnation {n} answering"), async || {
        // Bounded: a wedged incarnation never answers.
        match tokio::time::timeout(ms(200), slot.send(Hello)).await {
            Ok(Ok(got)) if got == n => Some(()),
            _ => None,
        }
    })
    .await
}

/// Shared event log of the test actors.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn push(&self, e: String) {
        self.0.lock().unwrap().push(e);
    }
    fn position(&self, e: &str) -> Option<usize> {
        self.0.lock().unwrap().iter().position(|x| x == e)
    }
    fn contains(&self, e: &str) -> bool {
        self.position(e).is_some()
    }
}

/// The test actor: answers, panics, waits or wedges on command.
struct Probe {
    name: &'static str,
    cx: ChildContext,
    events: Events,
    held_wait: Option<WaitGuard>,
    /// Crashes this sibling when stopping (to fail a child during shutdown).
    crash_on_stop: Option<Slot<Probe>>,
}

impl Probe {
    fn spec(name: &'static str, slot: &Slot<Probe>, events: &Events) -> ChildSpec {
        let events = events.clone();
        ChildSpec::actor(name, slot.clone(), move |cx| Probe {
            name,
            cx,
            events: events.clone(),
            held_wait: None,
            crash_on_stop: None,
        })
    }
}

impl Probe {
    /// Like `spec`, but every incarnation runs on `home`.
    fn spec_on(
        name: &'static str,
        slot: &Slot<Probe>,
        events: &Events,
        home: actix::ArbiterHandle,
    ) -> ChildSpec {
        let events = events.clone();
        ChildSpec::actor_on(name, slot.clone(), home, move |cx| Probe {
            name,
            cx,
            events: events.clone(),
            held_wait: None,
            crash_on_stop: None,
        })
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Self::Context) {
        let e = format!("{} started {}", self.name, self.cx.incarnation());
        self.events.push(e);
    }
    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(addr) = self.crash_on_stop.as_ref().and_then(Slot::addr) {
            addr.do_send(Crash);
        }
        let e = format!("{} stopped {}", self.name, self.cx.incarnation());
        self.events.push(e);
    }
}

impl Handler<Ping> for Probe {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Hello;

impl Handler<Hello> for Probe {
    type Result = u64;
    fn handle(&mut self, _: Hello, _: &mut Self::Context) -> u64 {
        self.cx.incarnation()
    }
}

/// Which thread the handler runs on.
#[derive(Message)]
#[rtype(result = "std::thread::ThreadId")]
struct WhichThread;

impl Handler<WhichThread> for Probe {
    type Result = MessageResult<WhichThread>;
    fn handle(&mut self, _: WhichThread, _: &mut Self::Context) -> Self::Result {
        MessageResult(std::thread::current().id())
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Crash> for Probe {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        let e = format!("{} crashed {}", self.name, self.cx.incarnation());
        self.events.push(e);
        panic!("boom in {} handler", self.name);
    }
}

/// Registers a wait and keeps it, while still answering every message: only
/// the watchdog can tell that something is wrong.
#[derive(Message)]
#[rtype(result = "()")]
struct HoldWait(&'static str, Duration);

impl Handler<HoldWait> for Probe {
    type Result = ();
    fn handle(&mut self, HoldWait(what, deadline): HoldWait, _: &mut Self::Context) {
        self.held_wait = Some(self.cx.register_wait(what, deadline));
    }
}

/// Wedges the mailbox with `ctx.wait` on a future that never ends (and does
/// not look at the kill switch), after starting a detached task that reports
/// when the kill switch fires.
#[derive(Message)]
#[rtype(result = "()")]
struct Wedge;

impl Handler<Wedge> for Probe {
    type Result = ();
    fn handle(&mut self, _: Wedge, ctx: &mut Self::Context) {
        let kill = self.cx.kill_switch();
        let events = self.events.clone();
        let note = format!("{} kill switch fired {}", self.name, self.cx.incarnation());
        actix_rt::spawn(async move {
            kill.fired().await;
            events.push(note);
        });
        ctx.wait(actix::fut::wrap_future(pending::<()>()));
    }
}

/// For trees that must not give up; `finish` checks that they did not.
fn no_give_up() -> impl FnOnce(String) + Send + 'static {
    |_| {}
}

/// Ends a test's tree: it must still be running, and stop in order.
async fn finish(root: RootHandle) {
    let status = root.status();
    assert_eq!(status.gave_up, None);
    assert!(!root.is_stopped());
    root.shutdown().await.expect("orderly shutdown");
}

fn restarts(root: &RootHandle, path: &str) -> u64 {
    root.status().child(path).map_or(0, |c| c.restarts_total)
}

fn last_reason(root: &RootHandle, path: &str) -> String {
    root.status()
        .child(path)
        .and_then(|c| c.last_restart.clone())
        .map(|r| r.reason)
        .unwrap_or_default()
}

#[actix_rt::test]
async fn a_panic_in_a_handler_is_restarted_and_the_slot_serves_the_new_incarnation() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root").child(Probe::spec("a", &slot, &events));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;

    assert!(
        slot.send(Crash).await.is_err(),
        "the panicking handler never replies"
    );
    answering(&slot, 2).await;

    assert_eq!(restarts(&root, "root/a"), 1);
    let reason = last_reason(&root, "root/a");
    assert!(
        reason.starts_with("panicked: boom in a handler"),
        "{reason}"
    );
    assert_eq!(slot.path().as_deref(), Some("root/a"));
    finish(root).await;
}

#[actix_rt::test]
async fn a_child_on_its_own_arbiter_runs_there_and_is_restarted_killed_and_stopped_like_any() {
    let home = actix::Arbiter::new();
    let events = Events::default();
    let slot = Slot::new();
    // A longer ping timeout than `fast`: the panic below prints its
    // backtrace on the home thread, which answers no ping meanwhile (on
    // one thread the supervisor could not have pinged in between).
    let spec = fast("root").probe(ms(20), ms(1000)).child(Probe::spec_on(
        "disk",
        &slot,
        &events,
        home.handle(),
    ));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;
    let there = slot.send(WhichThread).await.unwrap();
    assert_ne!(there, std::thread::current().id(), "it runs on its home");

    // A panic there is seen here and restarted there.
    assert!(slot.send(Crash).await.is_err());
    answering(&slot, 2).await;
    let reason = last_reason(&root, "root/disk");
    assert!(
        reason.starts_with("panicked: boom in disk handler"),
        "{reason}"
    );
    assert_eq!(slot.send(WhichThread).await.unwrap(), there);

    // A wedged mailbox there is caught by the ping and the incarnation is
    // aborted on its own thread: its stop hook runs, its mailbox closes.
    let old = slot.addr().unwrap();
    slot.send(Wedge).await.unwrap();
    answering(&slot, 3).await;
    let reason = last_reason(&root, "root/disk");
    assert!(reason.starts_with("ping unanswered within"), "{reason}");
    eventually("the wedged incarnation's stop hook", async || {
        events.contains("disk stopped 2").then_some(())
    })
    .await;
    assert!(!old.connected());
    assert_eq!(restarts(&root, "root/disk"), 2);

    // An orderly stop reaches it too.
    finish(root).await;
    assert!(events.contains("disk stopped 3"));
    home.stop();
    home.join().unwrap();
}

#[actix_rt::test]
async fn an_overdue_wait_restarts_its_owner_and_the_wait_is_gone() {
    let events = Events::default();
    let slot = Slot::new();
    // Pings are answered throughout: only the watchdog can see this.
    let spec = fast("root").child(Probe::spec("sealer", &slot, &events));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;

    slot.send(HoldWait("seal of loglet 0/3", ms(100)))
        .await
        .unwrap();
    let waits = root.status().waits;
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].what, "seal of loglet 0/3");
    assert_eq!(waits[0].owner, "root/sealer");
    assert_eq!(waits[0].incarnation, 1);

    answering(&slot, 2).await;
    let reason = last_reason(&root, "root/sealer");
    assert!(
        reason.starts_with("wait 'seal of loglet 0/3' overdue by "),
        "{reason}"
    );
    assert!(
        root.watchdog().snapshot().is_empty(),
        "the old wait is gone"
    );
    assert_eq!(restarts(&root, "root/sealer"), 1);
    finish(root).await;
}

#[actix_rt::test]
async fn a_wedged_mailbox_is_caught_by_the_ping_and_the_old_incarnation_is_killed() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root").child(Probe::spec("w", &slot, &events));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;
    let old = slot.addr().unwrap();

    slot.send(Wedge).await.unwrap();
    answering(&slot, 2).await;

    let reason = last_reason(&root, "root/w");
    assert!(reason.starts_with("ping unanswered within"), "{reason}");
    eventually("the old incarnation's kill switch", async || {
        events.contains("w kill switch fired 1").then_some(())
    })
    .await;
    // The wedged instance is gone, not lingering: its stop hook ran, its
    // mailbox is closed, and nothing sent to it is handled.
    assert!(events.contains("w stopped 1"));
    assert!(!old.connected());
    let late = tokio::time::timeout(ms(500), old.send(Hello)).await;
    assert!(matches!(late, Ok(Err(MailboxError::Closed))), "{late:?}");
    assert_eq!(restarts(&root, "root/w"), 1);
    finish(root).await;
}

#[actix_rt::test]
async fn chaos_panics_and_stalls_any_child() {
    let events = Events::default();
    let slot = Slot::new();
    // A long ping timeout, so the stall with a wait is caught by the watchdog.
    let spec = fast("root")
        .probe(ms(20), Duration::from_secs(3))
        .child(Probe::spec("c", &slot, &events));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;

    root.chaos("root/c", Chaos::Panic).unwrap();
    answering(&slot, 2).await;
    let reason = last_reason(&root, "root/c");
    assert_eq!(reason, "panicked: chaos: panic injected into root/c");

    root.chaos("root/c", Chaos::Stall { wait: Some(ms(50)) })
        .unwrap();
    answering(&slot, 3).await;
    let reason = last_reason(&root, "root/c");
    assert!(
        reason.starts_with("wait 'chaos stall' overdue by "),
        "{reason}"
    );
    assert!(root.status().waits.is_empty());

    assert_eq!(
        root.chaos("root/nope", Chaos::Panic),
        Err(ChaosError::UnknownChild("root/nope".into()))
    );
    finish(root).await;
}

#[actix_rt::test]
async fn chaos_stall_without_a_wait_is_caught_by_the_ping() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root").child(Probe::spec("s", &slot, &events));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;
    root.chaos("root/s", Chaos::Stall { wait: None }).unwrap();
    answering(&slot, 2).await;
    let reason = last_reason(&root, "root/s");
    assert!(reason.starts_with("ping unanswered within"), "{reason}");
    finish(root).await;
}

#[actix_rt::test]
async fn too_many_restarts_escalate_and_the_parent_restarts_the_subtree() {
    let events = Events::default();
    let a = Slot::new();
    let b = Slot::new();
    let sub = fast("sub")
        .intensity(2, Duration::from_secs(10))
        .child(Probe::spec("a", &a, &events))
        .child(Probe::spec("b", &b, &events));
    let spec = fast("root").child(ChildSpec::supervisor(sub));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&a, 1).await;
    answering(&b, 1).await;

    // Two failures are within the sub-supervisor's limit.
    for n in 1..=2 {
        let _ = a.send(Crash).await;
        answering(&a, n + 1).await;
    }
    assert_eq!(restarts(&root, "root/sub"), 0);
    assert_eq!(b.incarnation(), Some(1));

    // The third is one too many: the parent restarts the whole subtree.
    let _ = a.send(Crash).await;
    answering(&a, 4).await;
    answering(&b, 2).await;
    assert!(
        events.contains("b stopped 1"),
        "the sibling's old incarnation ended"
    );

    let status = root.status();
    let sub = status.child("root/sub").unwrap();
    assert_eq!(sub.restarts_total, 1);
    assert_eq!(sub.incarnation, 2);
    let reason = &sub.last_restart.as_ref().unwrap().reason;
    assert!(
        reason.contains("gave up: more than 2 restarts")
            && reason.contains("root/sub/a: panicked: boom in a handler"),
        "{reason}"
    );
    assert_eq!(status.child("root/sub/a").unwrap().restarts_total, 2);
    assert_eq!(status.child("root/sub/b").unwrap().restarts_total, 0);
    assert_eq!(restarts(&root, "root"), 0);
    assert!(status.gave_up.is_none());
    finish(root).await;
}

#[actix_rt::test]
async fn the_root_gives_up_past_its_intensity() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root")
        .intensity(1, Duration::from_secs(10))
        .child(Probe::spec("a", &slot, &events));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let root = start_root(spec, Watchdog::new(), move |reason| {
        let _ = tx.send(reason);
    })
    .unwrap();
    answering(&slot, 1).await;

    let _ = slot.send(Crash).await;
    answering(&slot, 2).await;
    assert!(!root.is_stopped());
    let _ = slot.send(Crash).await;

    let reason = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("on_give_up called in time")
        .expect("on_give_up called");
    assert!(
        reason.starts_with("gave up: more than 1 restarts")
            && reason.contains("root/a: panicked: boom in a handler"),
        "{reason}"
    );
    tokio::time::timeout(DEADLINE, root.stopped())
        .await
        .expect("root ended");
    assert!(
        slot.addr().is_none(),
        "the last incarnation was killed, not replaced"
    );
    let status = root.status();
    assert_eq!(status.gave_up.as_deref(), Some(reason.as_str()));
    assert_eq!(status.child("root/a").unwrap().restarts_total, 1);
    assert_eq!(status.child("root/a").unwrap().state, ChildState::Down);
}

#[actix_rt::test]
async fn orderly_shutdown_stops_children_in_reverse_order() {
    let events = Events::default();
    let first = Slot::new();
    let middle = Slot::new();
    let last = Slot::new();
    let gave_up = Arc::new(AtomicUsize::new(0));
    let spec = fast("root")
        .child(Probe::spec("first", &first, &events))
        .child(ChildSpec::supervisor(
            fast("sub").child(Probe::spec("middle", &middle, &events)),
        ))
        .child(Probe::spec("last", &last, &events));
    let counter = gave_up.clone();
    let root = start_root(spec, Watchdog::new(), move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    answering(&first, 1).await;
    answering(&middle, 1).await;
    answering(&last, 1).await;

    tokio::time::timeout(DEADLINE, root.shutdown())
        .await
        .expect("shutdown in time")
        .expect("orderly");

    let stopped_last = events.position("last stopped 1").unwrap();
    let stopped_middle = events.position("middle stopped 1").unwrap();
    let stopped_first = events.position("first stopped 1").unwrap();
    assert!(stopped_last < stopped_middle && stopped_middle < stopped_first);
    assert!(root.is_stopped());
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    assert!(first.addr().is_none() && middle.addr().is_none() && last.addr().is_none());
    let status = root.status();
    assert!(status.shutting_down);
    assert_eq!(status.children.len(), 5, "root, first, sub, middle, last");
    for child in &status.children {
        assert_eq!(child.restarts_total, 0, "{}", child.path);
        assert_eq!(child.state, ChildState::Stopped, "{}", child.path);
    }
}

#[actix_rt::test]
async fn a_child_failing_during_shutdown_is_not_restarted() {
    let events = Events::default();
    let victim = Slot::new();
    let stopper = Slot::new();
    // Stopped first (reverse order), `stopper` crashes `victim` on its way
    // out, while victim's own supervisor is still running normally.
    let stopper_spec = {
        let events = events.clone();
        let victim = victim.clone();
        ChildSpec::actor("stopper", stopper.clone(), move |cx| Probe {
            name: "stopper",
            cx,
            events: events.clone(),
            held_wait: None,
            crash_on_stop: Some(victim.clone()),
        })
    };
    let spec = fast("root")
        .child(ChildSpec::supervisor(
            fast("sub").child(Probe::spec("victim", &victim, &events)),
        ))
        .child(stopper_spec);
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&victim, 1).await;
    answering(&stopper, 1).await;

    tokio::time::timeout(DEADLINE, root.shutdown())
        .await
        .expect("shutdown in time")
        .expect("orderly");

    assert!(events.contains("victim crashed 1"), "the crash did happen");
    assert!(
        !events.contains("victim started 2"),
        "and was not restarted"
    );
    let status = root.status();
    assert_eq!(status.child("root/sub/victim").unwrap().restarts_total, 0);
    assert_eq!(status.gave_up, None);
}

/// Refuses every orderly stop.
struct Stubborn;

impl Actor for Stubborn {
    type Context = Context<Self>;
    fn stopping(&mut self, _: &mut Self::Context) -> actix::Running {
        actix::Running::Continue
    }
}

impl Handler<Ping> for Stubborn {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

#[actix_rt::test]
async fn a_child_that_will_not_stop_is_killed_after_its_shutdown_timeout() {
    let slot = Slot::new();
    let spec = fast("root")
        .shutdown_timeout(ms(100))
        .child(ChildSpec::actor("stubborn", slot.clone(), |_| Stubborn));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    let addr = eventually("stubborn running", async || slot.addr()).await;

    let started = tokio::time::Instant::now();
    tokio::time::timeout(DEADLINE, root.shutdown())
        .await
        .expect("shutdown in time")
        .expect("the tree still ends in order");
    assert!(started.elapsed() >= ms(100), "it was given its timeout");
    assert!(!addr.connected(), "then killed");
    assert!(slot.addr().is_none());
    let status = root.status();
    assert_eq!(
        status.child("root/stubborn").unwrap().state,
        ChildState::Stopped
    );
}

#[actix_rt::test]
async fn status_shows_restart_counts_and_current_waits() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root").child(Probe::spec("p", &slot, &events));
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;
    let _ = slot.send(Crash).await;
    answering(&slot, 2).await;
    slot.send(HoldWait(
        "leadership of partition 4",
        Duration::from_secs(60),
    ))
    .await
    .unwrap();

    let status = root.status();
    let p = status.child("root/p").unwrap();
    assert_eq!(
        (
            p.kind,
            p.state,
            p.incarnation,
            p.restarts_total,
            p.restarts_in_window
        ),
        (ChildKind::Actor, ChildState::Running, 2, 1, 1)
    );
    assert_eq!(p.window_ms, 10_000);
    let wait = status.oldest_wait().unwrap();
    assert_eq!(
        (
            wait.what.as_str(),
            wait.owner.as_str(),
            wait.incarnation,
            wait.overdue
        ),
        ("leadership of partition 4", "root/p", 2, false)
    );
    assert_eq!(wait.deadline_ms, 60_000);
    assert!(wait.waited_ms < wait.deadline_ms);
    let root_status = status.child("root").unwrap();
    assert_eq!(root_status.kind, ChildKind::Supervisor);

    let json = serde_json::to_string(&status).unwrap();
    let back: SupervisionStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(back, status);
    finish(root).await;
}

#[actix_rt::test]
async fn a_failing_factory_counts_as_a_failure_and_is_retried() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root").child({
        let events = events.clone();
        ChildSpec::actor("f", slot.clone(), move |cx: ChildContext| {
            assert!(cx.incarnation() != 2, "cannot build incarnation 2");
            Probe {
                name: "f",
                cx,
                events: events.clone(),
                held_wait: None,
                crash_on_stop: None,
            }
        })
    });
    let root = start_root(spec, Watchdog::new(), no_give_up()).unwrap();
    answering(&slot, 1).await;
    let _ = slot.send(Crash).await;
    answering(&slot, 3).await;
    assert_eq!(restarts(&root, "root/f"), 2);
    let reason = last_reason(&root, "root/f");
    assert!(
        reason.starts_with("factory panicked: cannot build incarnation 2"),
        "{reason}"
    );
    finish(root).await;
}

#[actix_rt::test]
async fn dropping_the_last_handle_kills_the_tree_without_giving_up() {
    let events = Events::default();
    let slot = Slot::new();
    let spec = fast("root").child(Probe::spec("d", &slot, &events));
    let gave_up = Arc::new(AtomicUsize::new(0));
    let counter = gave_up.clone();
    let root = start_root(spec, Watchdog::new(), move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    answering(&slot, 1).await;
    drop(root);
    eventually("the child to be gone", async || {
        events.contains("d stopped 1").then_some(())
    })
    .await;
    assert!(slot.addr().is_none());
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
}

#[test]
fn handles_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RootHandle>();
    send_sync::<Slot<Probe>>();
    send_sync::<ChildContext>();
    send_sync::<Watchdog>();
    send_sync::<WaitGuard>();
    send_sync::<KillSwitch>();
    send_sync::<SupervisionStatus>();
}

#[test]
fn stopping_the_actix_system_is_not_a_give_up() {
    let gave_up = Arc::new(AtomicUsize::new(0));
    let stopped = Events::default();
    {
        let system = actix::System::new();
        let counter = gave_up.clone();
        let events = stopped.clone();
        system.block_on(async move {
            let slot = Slot::new();
            let spec = fast("root").child(Probe::spec("k", &slot, &events));
            let root = start_root(spec, Watchdog::new(), move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            answering(&slot, 1).await;
            // Leak the handle: only the runtime going away ends this tree.
            std::mem::forget(root);
        });
        // Dropping the system drops every task, the root's included.
    }
    assert!(stopped.contains("k started 1"));
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
}

#[test]
fn invalid_specs_are_refused_before_anything_starts() {
    let slot = Slot::<Probe>::new();
    let events = Events::default();
    let dup = fast("root")
        .child(Probe::spec("a", &slot, &events))
        .child(Probe::spec("a", &slot, &events));
    assert_eq!(
        dup.validate("").unwrap_err(),
        SpecError::DuplicateChild {
            parent: "root".into(),
            name: "a".into()
        }
    );
    let nested_bad = fast("root").child(ChildSpec::supervisor(
        fast("sub").child(Probe::spec("x/y", &slot, &events)),
    ));
    assert_eq!(
        nested_bad.validate("").unwrap_err(),
        SpecError::InvalidName {
            parent: "root/sub".into(),
            name: "x/y".into()
        }
    );
    let zero = fast("root").probe(Duration::ZERO, ms(10));
    assert!(matches!(
        zero.validate(""),
        Err(SpecError::ZeroDuration {
            field: "ping_every",
            ..
        })
    ));
    // Valid, but no arbiter on this plain test thread.
    assert_eq!(
        start_root(fast("root"), Watchdog::new(), |_| {}).err(),
        Some(SpecError::NoArbiter)
    );
}
