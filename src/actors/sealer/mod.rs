//! The sealer: seals a loglet, repairs its tail and extends the chain with the
//! next segment. One per node, on demand.
//!
//! Every rule is in [`core`]: the seal job ([`core::SealJob`]) and the
//! sharing of one job per loglet ([`core::SealerCore`]). This actor is its
//! shell: it hands each `SealAndExtend` to the core, carries out the core's
//! calls (through `Net`) and register operations (through the node's
//! `MetadataClient`) and feeds their results back, ticks the core at its
//! `next_wake`, answers the callers, and registers a watchdog wait for every
//! job in flight (the supervisor restarts a sealer whose job outlives its
//! deadline; callers then get `Abandoned` and retry, sealing being
//! idempotent).

pub mod core;

pub use self::core::SealError;
use self::core::{SealerConfig, SealerCore, SealerEffect, SealerInput};
use crate::actors::metadata::MetadataClient;
use crate::actors::supervisor::{ChildContext, WaitGuard};
use crate::log::calls::{perform, run_meta};
use crate::log::{Chain, LogConfig};
use crate::node::Net;
use crate::types::{LogId, LogletId, NodeId};
use actix::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::info_span;

/// Seal `loglet` (if it is still the tail of `log`'s chain) and append a new
/// segment sequenced by `next_sequencer`. Returns the chain that has `loglet`
/// sealed, whoever sealed it.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Chain, SealError>")]
pub struct SealAndExtend {
    /// The log whose chain is extended.
    pub log: LogId,
    /// The loglet to seal (a no-op once the chain moved past it).
    pub loglet: LogletId,
    /// The node whose sequencer serves the new segment.
    pub next_sequencer: NodeId,
}

type Waiter = oneshot::Sender<Result<Chain, SealError>>;

/// Slack the watchdog gives a job past its deadline (for the final CAS).
const WAIT_SLACK: Duration = Duration::from_secs(2);

pub struct Sealer {
    /// Calls to log-servers go through it; it also builds the `Env`.
    net: Net,
    /// Carries out the core's register operations.
    meta: MetadataClient,
    /// The protocol.
    core: SealerCore,
    /// Callers waiting for an answer, by the token the core answers.
    waiters: BTreeMap<u64, Waiter>,
    /// The last token handed out.
    tokens: u64,
    /// One watchdog wait per job in flight.
    guards: BTreeMap<LogletId, WaitGuard>,
    /// Seals this node completed (for metrics; outlives restarts).
    completed: Arc<AtomicU64>,
    /// How many of the core's completed jobs are counted in `completed`.
    counted: u64,
    /// The tick scheduled for the core's `next_wake`.
    wake: Option<(Instant, SpawnHandle)>,
    /// The seal timeout (the watchdog's deadline, with slack).
    seal_timeout: Duration,
    /// Registers the watchdog waits.
    cx: ChildContext,
}

impl Sealer {
    pub fn new(
        net: Net,
        meta: MetadataClient,
        config: LogConfig,
        completed: Arc<AtomicU64>,
        cx: ChildContext,
    ) -> Self {
        Sealer {
            net,
            meta,
            core: SealerCore::new(SealerConfig::new(&config), rand::random()),
            waiters: BTreeMap::new(),
            tokens: 0,
            guards: BTreeMap::new(),
            completed,
            counted: 0,
            wake: None,
            seal_timeout: config.seal_timeout,
            cx,
        }
    }

    /// Hands `input` to the core and carries out what it asks.
    fn feed(&mut self, input: SealerInput, ctx: &mut Context<Self>) {
        let env = self.net.env();
        let effects = {
            let _span = info_span!("seal", node = %env.me).entered();
            self.core.handle(&env, input)
        };
        for effect in effects {
            match effect {
                SealerEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    let net = self.net.clone();
                    ctx.spawn(
                        async move { perform(&net, to, req, timeout).await }
                            .into_actor(self)
                            .map(move |result, act, ctx| {
                                act.feed(
                                    SealerInput::Reply {
                                        call,
                                        from: to,
                                        result,
                                    },
                                    ctx,
                                )
                            }),
                    );
                }
                SealerEffect::Meta {
                    op,
                    key,
                    change,
                    timeout,
                } => {
                    let meta = self.meta.clone();
                    ctx.spawn(
                        async move { run_meta(&meta, &key, change, timeout).await }
                            .into_actor(self)
                            .map(move |result, act, ctx| {
                                act.feed(SealerInput::MetaDone { op, result }, ctx)
                            }),
                    );
                }
                SealerEffect::Respond { token, result } => {
                    if let Some(waiter) = self.waiters.remove(&token) {
                        let _ = waiter.send(result);
                    }
                }
            }
        }
        self.after_feed(ctx);
    }

    /// Keeps the watchdog waits, the metric and the tick in step with the core.
    fn after_feed(&mut self, ctx: &mut Context<Self>) {
        let jobs: Vec<LogletId> = self.core.jobs().collect();
        self.guards.retain(|loglet, _| jobs.contains(loglet));
        for loglet in jobs {
            let (cx, timeout) = (&self.cx, self.seal_timeout);
            self.guards.entry(loglet).or_insert_with(|| {
                cx.register_wait(format!("seal of loglet {loglet}"), timeout + WAIT_SLACK)
            });
        }
        let completed = self.core.completed();
        if completed > self.counted {
            self.completed
                .fetch_add(completed - self.counted, Ordering::Relaxed);
            self.counted = completed;
        }
        let want = self.core.next_wake();
        if self.wake.map(|(at, _)| at) != want {
            if let Some((_, handle)) = self.wake.take() {
                ctx.cancel_future(handle);
            }
            if let Some(at) = want {
                let after = at.saturating_duration_since(Instant::now());
                let handle = ctx.run_later(after, |act, ctx| {
                    act.wake = None;
                    act.feed(SealerInput::Tick, ctx);
                });
                self.wake = Some((at, handle));
            }
        }
    }
}

impl Actor for Sealer {
    type Context = Context<Self>;
}

impl Handler<SealAndExtend> for Sealer {
    type Result = ResponseFuture<Result<Chain, SealError>>;

    fn handle(&mut self, msg: SealAndExtend, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.tokens += 1;
        let token = self.tokens;
        self.waiters.insert(token, tx);
        self.feed(
            SealerInput::Request {
                token,
                log: msg.log,
                loglet: msg.loglet,
                next_sequencer: msg.next_sequencer,
            },
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or(Err(SealError::Abandoned)) })
    }
}

impl Handler<crate::actors::supervisor::Ping> for Sealer {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
