//! The sealer: seals a loglet, repairs its tail and extends the chain with the
//! next segment. One per node, on demand.
//!
//! Safe to run from several nodes at once and restartable at any step:
//! - sealing is idempotent on every log-server;
//! - any f-majority of sealed servers yields a tail that covers every
//!   committed record (see `core.rs`), and records up to it are repaired to
//!   `r` copies before it is published;
//! - publishing is one CAS on the chain's version: the first sealer wins, the
//!   others find the loglet already sealed in the chain and are done;
//! - a responder that cannot be read, or that may lack records it
//!   acknowledged (it found them damaged, or is suspect), is not counted: the
//!   job seals another f-majority without it, so one bad server never stops a
//!   seal and never makes it cut off a committed record. When too few usable
//!   responders remain, the job pauses and tries them all again.
//!
//! Concurrent requests for the same loglet on one node share one job. Every
//! stage has the job's deadline; the caller learns the outcome or a typed
//! error, never waits forever.

pub mod core;

use self::core::{repair_range, sealed_tail, SealedView};
use crate::actors::log_server::{GetRecords, Seal, Store, StoreReply};
use crate::actors::metadata::{CasOutcome, MetaError, MetadataClient};
use crate::actors::supervisor::ChildContext;
use crate::log::{chain_key, Chain, LogConfig, Record, Segment};
use crate::node::Net;
use crate::types::{LogId, LogletId, NodeId, Offset};
use actix::prelude::*;
use futures::stream::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn, Instrument};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("log {0} has no chain")]
    UnknownLog(LogId),
    #[error("loglet {0} is not in the chain of its log")]
    UnknownLoglet(LogletId),
    #[error("seal of loglet {loglet} timed out while {stage}")]
    Timeout { loglet: LogletId, stage: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("sealer restarted with the job in flight")]
    Abandoned,
    /// The chain cannot be extended as asked (its LSNs would overflow, or
    /// the configured nodeset is unusable).
    #[error(transparent)]
    Chain(#[from] crate::log::chain::ChainError),
}

/// Seal `loglet` (if it is still the tail of `log`'s chain) and append a new
/// segment sequenced by `next_sequencer`. Returns the chain that has `loglet`
/// sealed, whoever sealed it.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Chain, SealError>")]
pub struct SealAndExtend {
    pub log: LogId,
    pub loglet: LogletId,
    pub next_sequencer: NodeId,
}

type Waiter = oneshot::Sender<Result<Chain, SealError>>;

pub struct Sealer {
    net: Net,
    meta: MetadataClient,
    config: LogConfig,
    jobs: HashMap<LogletId, Vec<Waiter>>,
    /// Seals this node completed (for metrics).
    completed: Arc<std::sync::atomic::AtomicU64>,
    cx: ChildContext,
}

impl Sealer {
    pub fn new(
        net: Net,
        meta: MetadataClient,
        config: LogConfig,
        completed: Arc<std::sync::atomic::AtomicU64>,
        cx: ChildContext,
    ) -> Self {
        Sealer {
            net,
            meta,
            config,
            jobs: HashMap::new(),
            completed,
            cx,
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
        let loglet = msg.loglet;
        let first = !self.jobs.contains_key(&loglet);
        self.jobs.entry(loglet).or_default().push(tx);
        if first {
            let job = Job {
                net: self.net.clone(),
                meta: self.meta.clone(),
                config: self.config.clone(),
                log: msg.log,
                loglet,
                next_sequencer: msg.next_sequencer,
                deadline: Instant::now() + self.config.seal_timeout,
            };
            let span = info_span!("seal", node = %self.net.me(), loglet = %loglet);
            // The watchdog restarts this sealer if the job outlives its
            // deadline (plus slack for the final CAS); callers retry, and
            // sealing is idempotent.
            let guard = self.cx.register_wait(
                format!("seal of loglet {loglet}"),
                self.config.seal_timeout + Duration::from_secs(2),
            );
            ctx.spawn(
                async move {
                    let result = job.run().await;
                    drop(guard);
                    result
                }
                .instrument(span)
                .into_actor(self)
                .map(move |result, act, _| {
                    if result.is_ok() {
                        act.completed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    for waiter in act.jobs.remove(&loglet).unwrap_or_default() {
                        let _ = waiter.send(result.clone());
                    }
                }),
            );
        }
        Box::pin(async move { rx.await.unwrap_or(Err(SealError::Abandoned)) })
    }
}

struct Job {
    net: Net,
    meta: MetadataClient,
    config: LogConfig,
    log: LogId,
    loglet: LogletId,
    next_sequencer: NodeId,
    deadline: Instant,
}

/// Pause between retries of a stage that could not complete yet.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What reading the responders' unreleased records found.
enum Fetched {
    /// Every responder's records in the range.
    All(Vec<(Offset, Record)>),
    /// This responder cannot be counted on (and why).
    Unusable(NodeId, String),
}

impl Job {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn timeout(&self, stage: impl Into<String>) -> SealError {
        SealError::Timeout {
            loglet: self.loglet,
            stage: stage.into(),
        }
    }

    /// Per-call timeout inside a stage: short enough to retry within the job.
    fn call_timeout(&self) -> Duration {
        self.remaining().min(Duration::from_secs(1))
    }

    async fn run(self) -> Result<Chain, SealError> {
        let key = chain_key(self.log);
        // Responders found unusable in this job (see the module doc).
        let mut excluded = BTreeSet::new();
        loop {
            let (version, chain) = self
                .meta
                .read_typed::<Chain>(&key, self.remaining())
                .await?
                .ok_or(SealError::UnknownLog(self.log))?;
            let segment = chain
                .segment(self.loglet)
                .cloned()
                .ok_or(SealError::UnknownLoglet(self.loglet))?;
            if segment.sealed_tail.is_some() {
                debug!("already sealed in the chain");
                return Ok(chain);
            }
            let views = self.seal_f_majority(&segment, &mut excluded).await?;
            let (global, reach) = repair_range(&views.values().cloned().collect::<Vec<_>>());
            let found = match self
                .fetch_unreleased(&segment, &views, global, reach)
                .await?
            {
                Fetched::All(found) => found,
                Fetched::Unusable(node, why) => {
                    warn!(%node, "not counting this responder: {why}");
                    excluded.insert(node);
                    continue;
                }
            };
            let (tail, repair) = sealed_tail(global, found);
            if !repair.is_empty() {
                self.repair(&segment, global, repair).await?;
            }
            // A decoded chain is valid, so its only open segment (this one)
            // is its tail; what can still fail is an extension past the last
            // LSN or an unusable nodeset, both typed errors.
            let next = chain.sealed_and_extended(
                self.loglet,
                tail,
                self.next_sequencer,
                self.config.nodeset.clone(),
                self.config.replication,
            )?;
            let outcome = match self
                .meta
                .cas_typed(&key, version, &next, self.remaining())
                .await
            {
                Ok(outcome) => outcome,
                // Our write reached a minority and the register moved on: it
                // may have been adopted. The next round re-reads the chain and
                // finds the loglet sealed (by us or anyone) or seals again.
                Err(MetaError::Indeterminate { .. }) if !self.remaining().is_zero() => {
                    debug!("publishing the new segment: outcome unknown; re-reading the chain");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match outcome {
                CasOutcome::Applied { .. } => {
                    info!(
                        sealed_tail = tail,
                        repaired = tail - global,
                        next_loglet = %next.tail().loglet,
                        next_sequencer = %self.next_sequencer,
                        base_lsn = %next.tail().base_lsn,
                        "sealed and extended"
                    );
                    return Ok(next);
                }
                CasOutcome::Conflict(Some((_, current))) => {
                    if current
                        .segment(self.loglet)
                        .is_some_and(|s| s.sealed_tail.is_some())
                    {
                        debug!("another sealer published first");
                        return Ok(current);
                    }
                    // The chain changed in another way; start over from it.
                }
                CasOutcome::Conflict(None) => return Err(SealError::UnknownLog(self.log)),
            }
            if self.remaining().is_zero() {
                return Err(self.timeout("publishing the new segment"));
            }
        }
    }

    /// Seals on every usable server of the nodeset until an f-majority of
    /// them answered. A suspect server is sealed too, but not counted.
    async fn seal_f_majority(
        &self,
        segment: &Segment,
        excluded: &mut BTreeSet<NodeId>,
    ) -> Result<HashMap<NodeId, SealedView>, SealError> {
        let need = segment.f_majority();
        let mut views = HashMap::new();
        loop {
            let usable = segment
                .nodeset
                .iter()
                .filter(|n| !excluded.contains(n))
                .count();
            if usable < need {
                // Not enough servers left to count on: a read error may pass
                // and a damaged server may be repaired, so try them all again.
                if self.remaining() < RETRY_PAUSE {
                    return Err(self.timeout(format!(
                        "waiting for an f-majority of usable seals ({need} needed; not usable: {excluded:?})"
                    )));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                excluded.clear();
                views.clear();
                continue;
            }
            let missing: Vec<NodeId> = segment
                .nodeset
                .iter()
                .copied()
                .filter(|n| !views.contains_key(n) && !excluded.contains(n))
                .collect();
            let make = || Seal {
                loglet: self.loglet,
            };
            let mut calls = self.net.broadcast(&missing, make, self.call_timeout());
            while let Some((from, reply)) = calls.next().await {
                match reply {
                    Ok(Ok(tail)) if tail.suspect => {
                        warn!(%from, "sealed, but not counted: the server may have lost records it cannot name");
                        excluded.insert(from);
                    }
                    Ok(Ok(tail)) => {
                        views.insert(
                            from,
                            SealedView {
                                known_global_tail: tail.known_global_tail,
                                local_tail: tail.local_tail,
                            },
                        );
                    }
                    Ok(Err(e)) => warn!(%from, "seal refused: {e}"),
                    Err(e) => debug!(%from, "seal not answered: {e}"),
                }
                if views.len() >= need {
                    return Ok(views);
                }
            }
            if self.remaining() < RETRY_PAUSE {
                return Err(self.timeout(format!(
                    "waiting for an f-majority of seals ({} of {need} sealed)",
                    views.len()
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Every record the sealed responders hold in `[global, reach)`, or the
    /// first responder that cannot be counted on for them.
    async fn fetch_unreleased(
        &self,
        segment: &Segment,
        views: &HashMap<NodeId, SealedView>,
        global: Offset,
        reach: Offset,
    ) -> Result<Fetched, SealError> {
        let mut found = Vec::new();
        for (&from, view) in views {
            let mut next = global;
            while next < view.local_tail.min(reach) {
                let req = GetRecords {
                    loglet: segment.loglet,
                    from: next,
                    to: reach,
                    max_bytes: 4 * 1024 * 1024,
                    include_uncommitted: true,
                };
                match self.net.call(from, req, self.call_timeout()).await {
                    Ok(Ok(reply)) if !reply.damaged.is_empty() => {
                        return Ok(Fetched::Unusable(
                            from,
                            format!(
                                "it lost records it may have acknowledged (offsets {:?})",
                                reply.damaged
                            ),
                        ));
                    }
                    Ok(Ok(reply)) if !reply.records.is_empty() => {
                        // Only records in [next, reach) count, in order (o <
                        // reach, so o + 1 fits); a reply that does not move
                        // the read forward ends this responder's reads.
                        let before = next;
                        for (o, r) in reply.records {
                            if o >= next && o < reach {
                                next = o + 1;
                                found.push((o, r));
                            }
                        }
                        if next == before {
                            break;
                        }
                    }
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => {
                        return Ok(Fetched::Unusable(
                            from,
                            format!("reading its records failed: {e}"),
                        ))
                    }
                    Err(e) => {
                        return Ok(Fetched::Unusable(
                            from,
                            format!("reading its records failed: {e}"),
                        ))
                    }
                }
            }
        }
        if self.remaining().is_zero() {
            return Err(self.timeout("reading unreleased records"));
        }
        Ok(Fetched::All(found))
    }

    /// Re-replicates `[global, global + records.len())` to `r` servers.
    async fn repair(
        &self,
        segment: &Segment,
        global: Offset,
        records: Vec<Record>,
    ) -> Result<(), SealError> {
        const CHUNK: usize = 2048;
        let r = segment.replication as usize;
        for (i, chunk) in records.chunks(CHUNK).enumerate() {
            let first = global + (i * CHUNK) as Offset;
            let chunk = Arc::new(chunk.to_vec());
            let mut stored: Vec<NodeId> = Vec::new();
            loop {
                let missing: Vec<NodeId> = segment
                    .nodeset
                    .iter()
                    .copied()
                    .filter(|n| !stored.contains(n))
                    .collect();
                let make = || Store {
                    loglet: segment.loglet,
                    first,
                    records: chunk.clone(),
                    known_global_tail: global,
                    repair: true,
                };
                let mut calls = self.net.broadcast(&missing, make, self.call_timeout());
                while let Some((from, reply)) = calls.next().await {
                    match reply {
                        Ok(StoreReply::Stored { .. }) => stored.push(from),
                        other => debug!(%from, "repair store failed: {other:?}"),
                    }
                    if stored.len() >= r {
                        break;
                    }
                }
                if stored.len() >= r {
                    break;
                }
                if self.remaining() < RETRY_PAUSE {
                    return Err(self.timeout(format!(
                        "repairing offsets from {first} ({} of {r} copies)",
                        stored.len()
                    )));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Ok(())
    }
}

impl Handler<crate::actors::supervisor::Ping> for Sealer {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
