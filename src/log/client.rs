//! `LogClient`: the library API partition processors use to append to and
//! read from logs. One per node, cheap to clone.
//!
//! Every rule (who drives a seal and when, read repair, the chain re-check,
//! trim) is in [`LogCore`](super::core::LogCore); this is its shell. Each
//! API call becomes an operation of the node's one core, and the calling
//! task waits for its `Done` while it
//! - carries nothing out itself: calls, register operations and seals run
//!   as spawned tasks that feed their result back; local store reads and
//!   tail subscriptions are answered at once;
//! - hands the core this node's metadata cache value of its log's chain
//!   whenever the cache changes (and before every input about that log);
//! - ticks the core when its `next_wake` is due (the core is told `Tick`
//!   only then), so every timer of an operation runs while its caller waits.
//!
//! A caller that stops waiting (its future dropped) cancels its operation.

use super::calls::{perform, run_meta};
use super::chain::{chain_key, Chain, Segment};
pub use super::core::{AppendError, MetaOrUnknown, ReadError};
use super::core::{Effect, Input, LogCore, LogCoreConfig, OpId, OpResult};
use super::{LogConfig, Record};
use crate::actors::log_server::{LogServerError, TailWatch};
use crate::actors::metadata::{MetaError, MetadataClient};
use crate::actors::sealer::{SealAndExtend, SealError, Sealer};
use crate::actors::supervisor::Slot;
use crate::node::{CallError, Net};
use crate::storage::Storage;
use crate::types::{LogId, LogletId, Lsn};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Counters for status and metrics.
#[derive(Default)]
pub struct LogMetrics {
    /// Appends taken (not refused as too large).
    pub appends: AtomicU64,
    /// Records of appends that succeeded.
    pub appended_records: AtomicU64,
    /// Appends that failed.
    pub append_errors: AtomicU64,
    /// Seal-and-extend requests this node's log client sent its sealer.
    pub seals_driven: AtomicU64,
    /// Commits this node's readers learned from a peer log-server rather
    /// than from the sequencer (a bridge or a lossy link to it).
    pub tail_probes_ahead: AtomicU64,
}

#[derive(Clone)]
pub struct LogClient {
    /// The core and the services it drives, shared by every clone.
    shared: Arc<Shared>,
}

/// What every clone of a node's `LogClient` shares.
struct Shared {
    /// Calls to other nodes (and the `Env`).
    net: Net,
    /// Carries out register operations; its cache is the node's chain view.
    meta: MetadataClient,
    /// This node's sealer, which carries out seal-and-extend.
    sealer: Slot<Sealer>,
    /// The local log-server's records (local reads).
    storage: Storage,
    /// The local log-server's tails (fed to the core while watched).
    tails: TailWatch,
    /// Timeouts and graces of log operations.
    config: LogConfig,
    /// How many logs there are.
    logs: u32,
    /// Counters for status and metrics.
    metrics: LogMetrics,
    /// The protocol.
    core: Mutex<LogCore>,
    /// Callers waiting for their operation's result.
    waiters: Mutex<HashMap<OpId, oneshot::Sender<OpResult>>>,
    /// The last operation id handed out.
    ops: AtomicU64,
    /// The earliest time the core may want a tick; changed with a
    /// notification only when it moves earlier (callers sleeping until a
    /// later one would be late; waking early is harmless).
    wake: watch::Sender<Option<Instant>>,
    /// The tasks feeding the tails of watched loglets.
    forwarders: Mutex<HashMap<LogletId, tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        net: Net,
        meta: MetadataClient,
        sealer: Slot<Sealer>,
        storage: Storage,
        tails: TailWatch,
        config: LogConfig,
        logs: u32,
    ) -> Self {
        let core = LogCore::new(
            LogCoreConfig {
                log: config.clone(),
                logs,
            },
            rand::random(),
        );
        LogClient {
            shared: Arc::new(Shared {
                net,
                meta,
                sealer,
                storage,
                tails,
                config,
                logs,
                metrics: LogMetrics::default(),
                core: Mutex::new(core),
                waiters: Mutex::default(),
                ops: AtomicU64::new(0),
                wake: watch::channel(None).0,
                forwarders: Mutex::default(),
            }),
        }
    }

    pub fn metrics(&self) -> &LogMetrics {
        &self.shared.metrics
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    pub fn net(&self) -> &Net {
        &self.shared.net
    }

    /// How many logs (one per partition) there are.
    pub fn log_count(&self) -> u32 {
        self.shared.logs
    }

    /// The chain as this node last saw it (a hint).
    pub fn cached_chain(&self, log: LogId) -> Option<Chain> {
        self.shared
            .meta
            .cached_typed::<Chain>(&chain_key(log))
            .map(|(_, c)| c)
    }

    /// The chain, read linearizably; creates the log's first segment (sequenced
    /// on the partition's preferred leader) if the log has none yet.
    pub async fn refresh_chain(
        &self,
        log: LogId,
        timeout: Duration,
    ) -> Result<Chain, MetaOrUnknown> {
        let deadline = Instant::now() + timeout;
        match self
            .run(log, |op| Input::Refresh { op, log, deadline })
            .await
        {
            Some(OpResult::Chain(result)) => result,
            _ => Err(MetaOrUnknown::Meta(MetaError::Timeout {
                op: "read",
                key: chain_key(log),
                timeout,
                attempts: 0,
                last: "the log client dropped the operation".into(),
            })),
        }
    }

    /// Seals `segment` (if it is still the tail) and extends the chain with a
    /// segment sequenced on this node.
    pub async fn seal_and_extend(
        &self,
        segment: &Segment,
        timeout: Duration,
    ) -> Result<Chain, SealError> {
        let deadline = Instant::now() + timeout;
        let segment = segment.clone();
        let log = segment.loglet.log();
        match self
            .run(log, |op| Input::Seal {
                op,
                segment,
                deadline,
            })
            .await
        {
            Some(OpResult::Sealed(result)) => result,
            _ => Err(SealError::Abandoned),
        }
    }

    /// Appends `records` to `log`; returns the LSN of the first one.
    pub async fn append(
        &self,
        log: LogId,
        records: Vec<Record>,
        timeout: Duration,
    ) -> Result<Lsn, AppendError> {
        let deadline = Instant::now() + timeout;
        match self
            .run(log, |op| Input::Append {
                op,
                log,
                records,
                deadline,
            })
            .await
        {
            Some(OpResult::Appended(result)) => result,
            _ => Err(AppendError::Indeterminate(
                "the log client dropped the append".into(),
            )),
        }
    }

    /// Drops `log`'s records below `below` on every log-server (best effort:
    /// a server that misses it keeps its copies; a reader behind the trim
    /// point restores a snapshot instead).
    pub async fn trim(&self, log: LogId, below: Lsn) {
        self.run(log, |op| Input::Trim { op, log, below }).await;
    }

    /// Reads up to `max` records of `log` from `from` on, waiting up to `wait`
    /// for at least one. An empty result means nothing new within `wait`.
    pub async fn read(
        &self,
        log: LogId,
        from: Lsn,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(Lsn, Record)>, ReadError> {
        let deadline = Instant::now() + wait;
        match self
            .run(log, |op| Input::Read {
                op,
                log,
                from,
                max,
                deadline,
            })
            .await
        {
            Some(OpResult::Read(result)) => result,
            _ => Err(ReadError::Unavailable(
                log,
                "the log client dropped the read".into(),
            )),
        }
    }

    /// Starts an operation about `log` and drives the core until it is done
    /// (see the module doc); `None` if the core dropped it.
    async fn run(&self, log: LogId, make: impl FnOnce(OpId) -> Input) -> Option<OpResult> {
        let shared = &self.shared;
        let op = OpId(shared.ops.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, mut rx) = oneshot::channel();
        lock(&shared.waiters).insert(op, tx);
        let mut cancel = CancelOnDrop {
            shared: shared.clone(),
            op,
            armed: true,
        };
        let mut wake = shared.wake.subscribe();
        let mut changes = shared.meta.cache().changes();
        shared.feed(Some(log), Some(make(op)));
        loop {
            let next = *wake.borrow_and_update();
            let sleep = async move {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut rx => {
                    cancel.armed = false;
                    return result.ok();
                }
                _ = wake.changed() => {}
                _ = changes.changed() => shared.feed(Some(log), None),
                _ = sleep => shared.tick(),
            }
        }
    }
}

/// Cancels a caller's operation when the caller stops waiting.
struct CancelOnDrop {
    /// Where the operation is cancelled.
    shared: Arc<Shared>,
    /// The operation to cancel.
    op: OpId,
    /// Cleared once the operation is done.
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.shared.waiters).remove(&self.op);
            self.shared.feed(None, Some(Input::Cancel { op: self.op }));
        }
    }
}

impl Shared {
    /// Hands the core `input`, first telling it this node's cached chain of
    /// `sync` if that changed, and carries out what it asks, answering the
    /// effects served at once (local reads, tails) before returning.
    fn feed(self: &Arc<Self>, sync: Option<LogId>, input: Option<Input>) {
        let mut queue: VecDeque<Input> = input.into_iter().collect();
        let mut sync = sync;
        loop {
            let effects = {
                let mut core = lock(&self.core);
                let env = self.net.env();
                let mut effects = Vec::new();
                if let Some(seen) = sync.take().and_then(|log| self.chain_news(&core, log)) {
                    effects.extend(core.handle(&env, seen));
                }
                if let Some(input) = queue.pop_front() {
                    effects.extend(core.handle(&env, input));
                }
                self.publish(&core);
                effects
            };
            for effect in effects {
                self.execute(effect, &mut queue);
            }
            if queue.is_empty() {
                return;
            }
        }
    }

    /// Ticks the core if something is due.
    fn tick(self: &Arc<Self>) {
        let due = {
            let core = lock(&self.core);
            let due = core.next_wake().is_some_and(|at| at <= Instant::now());
            if !due {
                self.publish(&core);
            }
            due
        };
        if due {
            self.feed(None, Some(Input::Tick));
        }
    }

    /// `ChainSeen` for `log` if the cache holds another version than the core.
    fn chain_news(&self, core: &LogCore, log: LogId) -> Option<Input> {
        let cached = self.meta.cache().get(&chain_key(log));
        let version = cached.as_ref().map(|v| v.version);
        if core.chain(log).map(|(v, _)| *v) == version {
            return None;
        }
        let chain = cached.and_then(|v| {
            rmp_serde::from_slice::<Chain>(&v.value)
                .ok()
                .map(|c| (v.version, c))
        });
        Some(Input::ChainSeen { log, chain })
    }

    /// The core's counters and next wake, to the metrics and the sleepers.
    fn publish(&self, core: &LogCore) {
        let stats = core.stats();
        let m = &self.metrics;
        m.appends.store(stats.appends, Ordering::Relaxed);
        m.appended_records
            .store(stats.appended_records, Ordering::Relaxed);
        m.append_errors
            .store(stats.append_errors, Ordering::Relaxed);
        m.tail_probes_ahead
            .store(stats.tail_probes_ahead, Ordering::Relaxed);
        let next = core.next_wake();
        self.wake.send_if_modified(|cur| {
            let earlier = match (*cur, next) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(c), Some(n)) => n < c,
            };
            *cur = next;
            earlier
        });
    }

    fn spawn(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(task))
    }

    /// Carries out one effect; answers to effects served at once go to `queue`.
    fn execute(self: &Arc<Self>, effect: Effect, queue: &mut VecDeque<Input>) {
        match effect {
            Effect::Call {
                to,
                call,
                req,
                timeout,
            } => {
                let shared = self.clone();
                let task = async move {
                    let result = perform(&shared.net, to, req, timeout).await;
                    shared.feed(
                        None,
                        Some(Input::Reply {
                            call,
                            from: to,
                            result,
                        }),
                    );
                };
                if self.spawn(task).is_none() {
                    let result = Err(CallError::Unavailable(to, "no runtime".into()));
                    queue.push_back(Input::Reply {
                        call,
                        from: to,
                        result,
                    });
                }
            }
            Effect::Meta {
                op,
                key,
                change,
                timeout,
            } => {
                let shared = self.clone();
                let log = key
                    .strip_prefix("chain/")
                    .and_then(|n| n.parse().ok())
                    .map(LogId);
                let task = async move {
                    let result = run_meta(&shared.meta, &key, change, timeout).await;
                    shared.feed(log, Some(Input::MetaDone { op, result }));
                };
                if self.spawn(task).is_none() {
                    let result = Err(MetaError::Timeout {
                        op: "read",
                        key: String::new(),
                        timeout,
                        attempts: 0,
                        last: "no runtime".into(),
                    });
                    queue.push_back(Input::MetaDone { op, result });
                }
            }
            Effect::SealAndExtend {
                op,
                segment,
                next_sequencer,
                timeout,
            } => {
                let shared = self.clone();
                let task = async move {
                    let result = shared.ask_sealer(&segment, next_sequencer, timeout).await;
                    let log = Some(segment.loglet.log());
                    shared.feed(log, Some(Input::SealDone { op, result }));
                };
                if self.spawn(task).is_none() {
                    queue.push_back(Input::SealDone {
                        op,
                        result: Err(SealError::Abandoned),
                    });
                }
            }
            Effect::ReadLocal {
                read,
                loglet,
                from,
                to,
                max_bytes,
            } => {
                let result = self
                    .storage
                    .log
                    .read_records(loglet, from, to, max_bytes)
                    .map(|l| l.into_iter().map(|(o, r)| (o, Record(r))).collect())
                    .map_err(LogServerError::from);
                queue.push_back(Input::LocalRecords { read, result });
            }
            Effect::WatchTail { loglet } => {
                let mut rx = self.tails.subscribe(loglet);
                let tail = *rx.borrow_and_update();
                queue.push_back(Input::TailChanged { loglet, tail });
                let weak: Weak<Shared> = Arc::downgrade(self);
                let forwarder = self.spawn(async move {
                    while rx.changed().await.is_ok() {
                        let tail = *rx.borrow_and_update();
                        let Some(shared) = weak.upgrade() else {
                            return;
                        };
                        shared.feed(None, Some(Input::TailChanged { loglet, tail }));
                    }
                });
                if let Some(old) = forwarder.and_then(|f| lock(&self.forwarders).insert(loglet, f))
                {
                    old.abort();
                }
            }
            Effect::UnwatchTail { loglet } => {
                if let Some(forwarder) = lock(&self.forwarders).remove(&loglet) {
                    forwarder.abort();
                }
            }
            Effect::Done { op, result } => {
                if let Some(waiter) = lock(&self.waiters).remove(&op) {
                    let _ = waiter.send(result);
                }
            }
        }
    }

    /// Asks this node's sealer to seal `segment` and extend the chain.
    async fn ask_sealer(
        &self,
        segment: &Segment,
        next_sequencer: crate::types::NodeId,
        timeout: Duration,
    ) -> Result<Chain, SealError> {
        let Some(sealer) = self.sealer.addr() else {
            return Err(SealError::Abandoned);
        };
        self.metrics.seals_driven.fetch_add(1, Ordering::Relaxed);
        let req = SealAndExtend {
            log: segment.loglet.log(),
            loglet: segment.loglet,
            next_sequencer,
        };
        match tokio::time::timeout(timeout, sealer.send(req)).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SealError::Abandoned),
            Err(_) => Err(SealError::Timeout {
                loglet: segment.loglet,
                stage: "waiting for the local sealer".into(),
            }),
        }
    }
}
