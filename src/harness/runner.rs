//! One Jepsen-style run end to end: cluster up, clients and nemesis on a
//! schedule, final heal, post-heal phase, final reads, checks, report.
//!
//! Threads: one per logical client (bounded by `--concurrency`), each doing
//! one operation at a time against its own node; the calling thread drives
//! the nemesis and prints progress. A client whose call ends `info`
//! continues under a new process id (`process + concurrency`), as the
//! history format requires.

use super::checker::{check_all_with, CheckConfig, Validity};
use super::client::NodeClient;
use super::cluster::{Cluster, Mode, StartOptions};
use super::history::{pair, Op, OpType};
use super::nemesis::{Fault, FaultTimeline, PowerLossDrop};
use super::netns::{check_prerequisites, NetnsPlan};
use super::power::check_available;
use super::recorder::Recorder;
use super::report::{timestamp, RunSummary};
use super::schedule::{
    block_lists, fault_windows, flap_toggles, tear_seed, Chooser, GrayParams, Injection,
    NemesisKind,
};
use super::stats::Stats;
use super::workload::{OpSpec, Workload, WorkloadKind};
use crate::cli::local::fetch_status;
use crate::node::status::ClusterStatus;
use crate::types::NodeId;
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM (see [`install_interrupt_handler`]); a run then
/// heals, stops its nodes, cleans up and returns an error.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Everything a run needs. [`RunOptions::new`] gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub workload: WorkloadKind,
    pub nemesis: NemesisKind,
    pub concurrency: usize,
    /// Total operations per second over all clients; `None` = as fast as
    /// the clients go.
    pub rate: Option<f64>,
    /// The faulted part of the run; the post-heal phase comes after it.
    pub time: Duration,
    pub fault: Duration,
    pub heal: Duration,
    /// At least 10 s: the heal checker measures the last 10 s.
    pub post_heal: Duration,
    pub seed: u64,
    /// The run directory; default `target/jepsen/<timestamp>-<workload>-<nemesis>`.
    pub dir: Option<PathBuf>,
    /// The `keel` executable; default: next to the current executable.
    pub keel: Option<PathBuf>,
    /// Attach to these ingress URLs instead of starting nodes.
    pub nodes_url: Vec<String>,
    /// Run nodes in network namespaces on this /24 (first three octets).
    pub netns: Option<[u8; 3]>,
    /// Put each node's data directory on its own powerfs mount (implied by
    /// the `power-loss` nemesis).
    pub powerfs: bool,
    /// The `keel-powerfs` executable; default: next to the current one.
    pub powerfs_exe: Option<PathBuf>,
    /// `power-loss`: how long the nemesis may spend, at a fault's start,
    /// looking for an instant when a victim holds unsynced writes (it
    /// freezes the victims for a few ms per look; zero: strike at once). A
    /// node that syncs promptly holds unsynced data only briefly, and a
    /// power loss that finds none tests no more than `kill`.
    pub power_loss_aim: Duration,
    /// How hard the gray nemeses (`loss`, `slow-disk`, `slow-node`) hit.
    pub gray: GrayParams,
    pub base_port: Option<u16>,
    pub nodes: u32,
    /// Server-side deadline sent as `keel-timeout-ms`.
    pub request_timeout: Duration,
    pub ready_timeout: Duration,
    /// Keys per workload; `None` = the workload's default.
    pub keys: Option<usize>,
    /// Keep the nodes' data directories after a valid run (they are
    /// always kept after a failed or unknown one, for forensics).
    pub keep_data: bool,
    /// Print a progress line every this often; `None` = silent.
    pub progress: Option<Duration>,
    pub check: CheckConfig,
}

impl RunOptions {
    pub fn new(workload: WorkloadKind, nemesis: NemesisKind, seed: u64) -> Self {
        RunOptions {
            workload,
            nemesis,
            concurrency: 10,
            rate: None,
            time: Duration::from_secs(60),
            fault: Duration::from_secs(5),
            heal: Duration::from_secs(5),
            post_heal: Duration::from_secs(15),
            seed,
            dir: None,
            keel: None,
            nodes_url: Vec::new(),
            netns: None,
            powerfs: false,
            powerfs_exe: None,
            power_loss_aim: Duration::from_secs(1),
            gray: GrayParams::default(),
            base_port: None,
            nodes: 3,
            request_timeout: Duration::from_millis(3000),
            ready_timeout: Duration::from_secs(60),
            keys: None,
            keep_data: false,
            progress: Some(Duration::from_secs(2)),
            check: CheckConfig::default(),
        }
    }

    /// Refuses combinations that cannot work, with the reason.
    pub fn validate(&self) -> Result<()> {
        if self.post_heal < Duration::from_secs(10) {
            bail!("--post-heal-secs must be at least 10 (the heal checker measures the last 10 s)");
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            bail!("--concurrency must be in 1..=256");
        }
        if self.nemesis == NemesisKind::SlowNode {
            crate::node::stall::StallPattern::new(self.gray.stall, self.gray.stall_every)
                .map_err(|e| anyhow::anyhow!("--stall-ms/--stall-every-ms: {e}"))?;
        }
        if self.nemesis == NemesisKind::SlowDisk && self.gray.slow_disk > Duration::from_secs(10) {
            bail!("--slow-disk-ms must be at most 10000");
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                bail!("--rate must be a positive number of ops/s");
            }
        }
        if !(1..=60_000).contains(&(self.request_timeout.as_millis() as u64)) {
            bail!("--request-timeout-ms must be in 1..=60000");
        }
        if !self.nodes_url.is_empty() {
            if self.uses_powerfs() {
                bail!(
                    "--powerfs (and --nemesis power-loss) mounts the data directories of nodes \
                     the harness starts; it cannot be combined with --nodes-url"
                );
            }
            if self.netns.is_some() {
                bail!("--netns starts its own nodes; it cannot be combined with --nodes-url");
            }
            if self.nemesis.needs_processes() {
                bail!(
                    "nemesis {} signals node processes, which is unavailable with --nodes-url \
                     (the harness did not start them); use a partition, flap, bridge, stall or none",
                    self.nemesis
                );
            }
        }
        if !(3..=9).contains(&self.nodes) && self.nodes_url.is_empty() {
            bail!("--nodes must be in 3..=9");
        }
        Ok(())
    }

    /// Combinations that work but weaken a checker.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let in_flight = self.request_timeout + Duration::from_secs(1);
        if self.post_heal < Duration::from_secs(10) + in_flight {
            out.push(format!(
                "--post-heal-secs {} is shorter than 10 s plus the client timeout ({:.1} s): a call \
                 in flight at the final heal may end inside the heal checker's quiet window",
                self.post_heal.as_secs(),
                in_flight.as_secs_f64()
            ));
        }
        out
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("target/jepsen").join(format!(
                "{}-{}-{}",
                timestamp(now),
                self.workload,
                self.nemesis
            ))
        })
    }

    /// Whether the nodes' data directories go on powerfs mounts.
    pub fn uses_powerfs(&self) -> bool {
        self.powerfs || self.nemesis.needs_powerfs()
    }

    fn keel_exe(&self) -> Result<PathBuf> {
        match &self.keel {
            Some(p) => Ok(p.clone()),
            None => sibling_exe("keel", "--keel"),
        }
    }

    fn powerfs_exe(&self) -> Result<PathBuf> {
        match &self.powerfs_exe {
            Some(p) => Ok(p.clone()),
            None => sibling_exe("keel-powerfs", "--powerfs-bin"),
        }
    }
}

/// The executable `name` next to the current one (or one directory up,
/// where test binaries in `target/<profile>/deps` find it).
fn sibling_exe(name: &str, flag: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating the current executable")?;
    let dir = me.parent().context("current executable has no directory")?;
    let exe = dir.join(name);
    if exe.is_file() {
        return Ok(exe);
    }
    let up = dir.parent().map(|d| d.join(name));
    match up {
        Some(p) if p.is_file() => Ok(p),
        _ => bail!(
            "no {name} executable next to {}; build it (cargo build --bin {name}) or pass {flag}",
            me.display()
        ),
    }
}

/// Sets [`INTERRUPTED`] on SIGINT or SIGTERM. Call once, from a binary.
pub fn install_interrupt_handler() -> Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    eprintln!("\nkeel-jepsen: interrupted; healing and stopping the nodes");
                    INTERRUPTED.store(true, Ordering::SeqCst);
                }
            });
        })?;
    Ok(())
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Live counters for the progress line (the report uses the history).
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    ok: AtomicU64,
    fail: AtomicU64,
    info: AtomicU64,
    bugs: AtomicU64,
}

/// What the clients share.
struct Shared<'a> {
    rec: &'a Recorder,
    workload: &'a Workload,
    counters: &'a Counters,
    stop: &'a AtomicBool,
    bugs: &'a Mutex<Vec<String>>,
}

/// One history line of `op` by `process` on `node` (the recorder stamps
/// its time).
fn history_line(
    process: u64,
    node: NodeId,
    op: &OpSpec,
    kind: OpType,
    value: Value,
    error: Option<String>,
) -> Op {
    Op {
        process,
        kind,
        f: op.f,
        key: op.key.clone(),
        value,
        node,
        time_ns: 0,
        error,
    }
}

fn record_call(
    shared: &Shared<'_>,
    client: &NodeClient,
    process: u64,
    node: NodeId,
    op: &OpSpec,
) -> OpType {
    let line = |kind, value, error| history_line(process, node, op, kind, value, error);
    shared.rec.op(line(OpType::Invoke, op.value.clone(), None));
    let done = client.call(op);
    shared
        .rec
        .op(line(done.kind, done.value.clone(), done.error.clone()));
    let c = shared.counters;
    c.ops.fetch_add(1, Ordering::Relaxed);
    match done.kind {
        OpType::Ok => c.ok.fetch_add(1, Ordering::Relaxed),
        OpType::Fail => c.fail.fetch_add(1, Ordering::Relaxed),
        _ => c.info.fetch_add(1, Ordering::Relaxed),
    };
    if let Some(bug) = done.bug {
        c.bugs.fetch_add(1, Ordering::Relaxed);
        let mut bugs = shared.bugs.lock().unwrap_or_else(|p| p.into_inner());
        if bugs.len() < 20 {
            bugs.push(format!("{} {} on {node}: {bug}", op.f, op.key));
        }
    }
    shared.workload.observe(op, done.kind, &done.value);
    done.kind
}

/// A setup operation (the bank's deposits), before any fault: retried with
/// one idempotency key until acknowledged, so it applies exactly once, and
/// recorded as one call from its first attempt to that acknowledgement.
fn setup_call(
    shared: &Shared<'_>,
    client: &NodeClient,
    process: u64,
    node: NodeId,
    op: &OpSpec,
    prefix: &str,
) -> Result<()> {
    let line = |kind, value| history_line(process, node, op, kind, value, None);
    shared.rec.op(line(OpType::Invoke, op.value.clone()));
    let key = format!("{prefix}-setup-{}", op.key);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let done = client.call_with(client.object(), op, Some(&key));
        if done.kind == OpType::Ok {
            shared.rec.op(line(OpType::Ok, done.value));
            return Ok(());
        }
        if Instant::now() >= until || interrupted() {
            bail!(
                "setup {} {} never acknowledged: {:?}",
                op.f,
                op.key,
                done.error
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every partition has a leader whose outbox holds no message
/// and no timer, as the nodes' `/cluster/status` report it; how long that
/// took, or what was still waiting at the deadline.
fn wait_drained(urls: &[String], deadline: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::from("no status read yet");
    while start.elapsed() < deadline {
        for url in urls {
            match fetch_status(url) {
                Ok(status) => match undrained(&status) {
                    None => return Ok(start.elapsed()),
                    Some(why) => last = why,
                },
                Err(e) => last = format!("{e:#}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// What a cluster status shows still waiting in an outbox (`None`: every
/// partition has a leader and its outbox is empty).
fn undrained(status: &ClusterStatus) -> Option<String> {
    let mut leaders = BTreeMap::new();
    for s in status.nodes.iter().filter_map(|n| n.status.as_ref()) {
        for p in s.partitions.iter().filter(|p| p.mode == "Leader") {
            leaders.insert(p.partition, &p.outbox);
        }
    }
    if leaders.len() < status.logs.len() {
        return Some(format!(
            "{} of {} partitions have a leader",
            leaders.len(),
            status.logs.len()
        ));
    }
    leaders
        .into_iter()
        .find(|(_, o)| o.depth > 0 || o.timers > 0)
        .map(|(p, o)| format!("partition {p}: {} messages, {} timers", o.depth, o.timers))
}

/// One logical client: one op at a time against `node` until `stop`.
fn client_loop(
    shared: &Shared<'_>,
    slot: usize,
    concurrency: usize,
    node: NodeId,
    client: NodeClient,
    rate: Option<f64>,
    seed: u64,
) {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut process = slot as u64;
    let interval = rate.map(|r| Duration::from_secs_f64(concurrency as f64 / r));
    let mut next_at = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) && !interrupted() {
        if let Some(i) = interval {
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            }
            next_at = next_at.max(now) + i;
        }
        let op = shared.workload.next_op(&mut rng);
        let started = Instant::now();
        let kind = record_call(shared, &client, process, node, &op);
        if kind == OpType::Info {
            process += concurrency as u64;
        }
        // A refusal that came back at once (a dead node refuses
        // connections) must not turn the client into a busy loop.
        let spent = started.elapsed();
        if kind != OpType::Ok && spent < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(100) - spent);
        }
    }
}

/// A step of the nemesis schedule.
#[derive(Clone, Debug)]
enum Step {
    /// Start a window.
    Inject,
    /// Flap: cut again / heal for a moment.
    FlapCut,
    FlapHeal,
    /// End of a window.
    Heal,
    /// End of the faulted part: heal everything, whatever is active.
    FinalHeal,
}

fn plan_steps(opts: &RunOptions, rng: &mut StdRng) -> Vec<(Duration, Step)> {
    let mut steps = Vec::new();
    if opts.nemesis != NemesisKind::None {
        for w in fault_windows(opts.time, opts.fault, opts.heal) {
            steps.push((w.start, Step::Inject));
            if opts.nemesis == NemesisKind::Flap {
                for (at, cut) in flap_toggles(rng, w.start, w.end).into_iter().skip(1) {
                    steps.push((at, if cut { Step::FlapCut } else { Step::FlapHeal }));
                }
            }
            steps.push((w.end, Step::Heal));
        }
    }
    steps.push((opts.time, Step::FinalHeal));
    steps.sort_by_key(|s| s.0);
    steps
}

/// Drives the cluster for the nemesis and logs what it did.
struct NemesisDriver<'a> {
    kind: NemesisKind,
    /// See [`RunOptions::power_loss_aim`].
    aim: Duration,
    chooser: Chooser,
    cluster: &'a mut Cluster,
    rec: &'a Recorder,
    active: Option<Injection>,
    errors: Vec<String>,
    now: String,
}

impl NemesisDriver<'_> {
    fn note_error(&mut self, what: &str, e: anyhow::Error) {
        let msg = format!("{:.1}s {what}: {e:#}", self.rec.now_ns() as f64 / 1e9);
        eprintln!("keel-jepsen: nemesis: {msg}");
        self.errors.push(msg);
    }

    fn inject(&mut self) {
        let leader = if self.kind == NemesisKind::PartitionLeader {
            self.cluster.leader()
        } else {
            None
        };
        let nodes = self.cluster.ids();
        let Some(inj) = self.chooser.next(&nodes, leader) else {
            return;
        };
        self.apply(inj);
    }

    fn apply(&mut self, inj: Injection) {
        if let Injection::PowerLoss { nodes, tear } = &inj {
            self.power_loss(nodes, *tear);
            return;
        }
        let r = match &inj {
            Injection::Partition { .. } | Injection::Bridge { .. } => {
                self.cluster.partition(&block_lists(&inj.cut()))
            }
            Injection::Kill(n) => self.cluster.kill(*n),
            Injection::Wipe(n) => self.cluster.wipe(*n).map(drop),
            Injection::Pause(n) => self.cluster.pause(*n),
            Injection::PowerLoss { .. } => unreachable!("handled above"),
            Injection::Stall {
                node,
                actor,
                wait_ms,
            } => self.cluster.stall(*node, actor, *wait_ms),
            Injection::Loss { node, percent } => self.cluster.loss(*node, *percent),
            Injection::OneWay { node, direction } => self.cluster.one_way(*node, *direction),
            Injection::SlowDisk { node, ms } => self.cluster.slow_disk(*node, *ms),
            Injection::SlowNode {
                node,
                stall_ms,
                every_ms,
            } => self.cluster.slow_node(*node, *stall_ms, *every_ms),
        };
        match r {
            Ok(()) => {
                self.rec.event(inj.fault(), self.kind.name());
                self.now = inj.describe();
                self.active = Some(inj);
            }
            Err(e) => {
                self.note_error(&inj.describe(), e);
                // A half-applied partition is worse than none.
                if !matches!(inj.fault().name(), "kill" | "wipe") {
                    let _ = self.cluster.heal_network();
                }
            }
        }
    }

    /// `kill -9` every victim first (a whole cluster goes down at once),
    /// then cuts each one's power. Logs one `power-loss` event for the
    /// nodes whose power was cut, with what each mount dropped, and a
    /// `kill` for any node that went down but whose power could not be cut.
    fn power_loss(&mut self, nodes: &[NodeId], tear: Option<u64>) {
        let (order, waited) = self.aim(nodes);
        let mut down = Vec::new();
        for &n in &order {
            match self.cluster.kill(n) {
                Ok(()) => down.push(n),
                Err(e) => self.note_error(&format!("kill -9 {n}"), e),
            }
        }
        let mut lost = Vec::new();
        let mut dropped = Vec::new();
        for &n in &down {
            match self.cluster.power_loss(n, tear.map(|s| tear_seed(s, n))) {
                Ok(report) => {
                    lost.push(n);
                    dropped.push(PowerLossDrop { node: n, report });
                }
                Err(e) => self.note_error(&format!("power loss of {n}"), e),
            }
        }
        for &n in down.iter().filter(|n| !lost.contains(n)) {
            self.rec.event(Fault::Kill { node: n }, self.kind.name());
        }
        if !lost.is_empty() {
            lost.sort();
            dropped.sort_by_key(|d| d.node);
            let fault = Fault::PowerLoss {
                nodes: lost,
                tear: tear.is_some(),
                waited_ms: (!self.aim.is_zero()).then_some(waited.as_millis() as u64),
                dropped,
            };
            self.rec.event(fault, self.kind.name());
        }
        if !down.is_empty() {
            down.sort();
            let inj = Injection::PowerLoss { nodes: down, tear };
            self.now = inj.describe();
            self.active = Some(inj);
        }
    }

    /// Picks the instant of a power loss: at most [`NemesisDriver::aim`]
    /// long, freezes the victims (`SIGSTOP`), lets the requests they
    /// already sent to their mounts settle, and asks each mount what it
    /// holds unsynced. If one holds unsynced bytes the victims stay frozen
    /// for the kill: what the mounts hold then is exactly what a power cut
    /// at the freeze would lose. Otherwise they are thawed, run a moment,
    /// and the next probe follows. Returns the kill order (nodes holding
    /// unsynced bytes first) and how long it took; at the deadline the
    /// victims run and are killed as they are.
    fn aim(&mut self, nodes: &[NodeId]) -> (Vec<NodeId>, Duration) {
        /// Time for requests already in a mount's queue to be answered.
        const SETTLE: Duration = Duration::from_millis(2);
        /// Time the victims run between two probes.
        const RUN: Duration = Duration::from_millis(5);
        let started = Instant::now();
        let until = started + self.aim;
        // Bounded by the deadline: every probe takes at least SETTLE + RUN.
        while Instant::now() < until && !interrupted() {
            let mut frozen = Vec::new();
            for &n in nodes {
                match self.cluster.pause(n) {
                    Ok(()) => frozen.push(n),
                    Err(e) => self.note_error(&format!("SIGSTOP {n} (aiming)"), e),
                }
            }
            std::thread::sleep(SETTLE);
            let mut holding = Vec::new();
            let mut failed = false;
            for &n in nodes {
                match self.cluster.unsynced_bytes(n) {
                    Ok(b) if b > 0 => holding.push(n),
                    Ok(_) => {}
                    Err(e) => {
                        self.note_error(&format!("powerfs status of {n}"), e);
                        failed = true;
                    }
                }
            }
            if !holding.is_empty() || failed || frozen.len() < nodes.len() {
                let rest = nodes.iter().filter(|n| !holding.contains(n));
                let order = holding.iter().chain(rest).copied().collect();
                return (order, started.elapsed());
            }
            for &n in &frozen {
                if let Err(e) = self.cluster.resume(n) {
                    self.note_error(&format!("SIGCONT {n} (aiming)"), e);
                }
            }
            std::thread::sleep(RUN);
        }
        (nodes.to_vec(), started.elapsed())
    }

    /// Undoes whatever is active and logs a heal. Best effort on every
    /// part: a failed restart must not leave the network cut.
    fn heal(&mut self) {
        match self.active.take() {
            Some(Injection::Kill(n)) => match self.cluster.restart(n) {
                Ok(()) => {
                    self.rec.event(Fault::Restart { node: n }, self.kind.name());
                }
                Err(e) => self.note_error(&format!("restart {n}"), e),
            },
            Some(Injection::Wipe(n)) => match self.cluster.restart_rejoining(n) {
                Ok(()) => {
                    self.rec.event(Fault::Restart { node: n }, self.kind.name());
                }
                Err(e) => self.note_error(&format!("restart {n} --rejoin"), e),
            },
            Some(Injection::PowerLoss { nodes, .. }) => {
                for n in nodes {
                    match self.cluster.restart(n) {
                        Ok(()) => {
                            self.rec.event(Fault::Restart { node: n }, self.kind.name());
                        }
                        Err(e) => self.note_error(&format!("restart {n}"), e),
                    }
                }
            }
            Some(Injection::Pause(n)) => match self.cluster.resume(n) {
                Ok(()) => {
                    self.rec.event(Fault::Resume { node: n }, self.kind.name());
                }
                Err(e) => self.note_error(&format!("SIGCONT {n}"), e),
            },
            _ => {}
        }
        if self.kind.is_network() {
            if let Err(e) = self.cluster.heal_network() {
                self.note_error("heal", e);
                return;
            }
        }
        if matches!(self.kind, NemesisKind::SlowDisk | NemesisKind::SlowNode) {
            if let Err(e) = self.cluster.heal_chaos() {
                self.note_error("heal", e);
                return;
            }
        }
        self.rec.event(Fault::Heal, self.kind.name());
        self.now = "healthy".into();
    }

    fn step(&mut self, step: &Step, windows: &mut Vec<Injection>) {
        match step {
            Step::Inject => {
                self.inject();
                if let Some(a) = &self.active {
                    windows.push(a.clone());
                }
            }
            Step::FlapCut => {
                if let Some(inj) = windows.last().cloned() {
                    self.apply(inj);
                }
            }
            Step::FlapHeal | Step::Heal | Step::FinalHeal => self.heal(),
        }
    }
}

/// What one run produced.
pub struct RunOutcome {
    pub summary: RunSummary,
    pub dir: PathBuf,
}

/// Runs once; the cluster is stopped (or left to its owner) on return.
pub fn run(opts: &RunOptions) -> Result<RunOutcome> {
    opts.validate()?;
    let dir = opts.run_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let say = |s: String| {
        if opts.progress.is_some() {
            eprintln!("{s}");
        }
    };
    for w in opts.warnings() {
        say(format!("keel-jepsen: warning: {w}"));
    }
    say(format!(
        "keel-jepsen: seed {} (re-run with --seed {}); workload {}, nemesis {}; run dir {}",
        opts.seed,
        opts.seed,
        opts.workload,
        opts.nemesis,
        dir.display()
    ));

    let mut cluster = if !opts.nodes_url.is_empty() {
        say(
            "keel-jepsen: attached to running nodes: kill, pause and restart are unavailable"
                .into(),
        );
        Cluster::attach(&opts.nodes_url)?
    } else {
        let netns = match opts.netns {
            Some(subnet) => {
                let fw = check_prerequisites()?;
                let tag = format!("{}", std::process::id() % 10_000_000);
                Some(NetnsPlan::new(&tag, subnet, opts.nodes, fw))
            }
            None => None,
        };
        let keel = opts.keel_exe()?;
        let powerfs = if opts.uses_powerfs() {
            let exe = opts.powerfs_exe()?;
            check_available()?;
            Some(exe)
        } else {
            None
        };
        Cluster::start(StartOptions {
            dir: &dir,
            keel: &keel,
            nodes: opts.nodes,
            base_port: opts.base_port,
            netns,
            seed: opts.seed,
            powerfs: powerfs.as_deref(),
            node_args: Vec::new(),
        })?
    };
    let started = Instant::now();
    let status = cluster.wait_ready(opts.ready_timeout)?;
    // Stall victims name partition actors: use the cluster's real count.
    let partitions = status
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref())
        .map(|s| s.partitions.len() as u32)
        .max()
        .unwrap_or(1);
    say(format!(
        "keel-jepsen: {} nodes ready ({} mode{}) in {:.1} s: {}",
        cluster.ids().len(),
        cluster.mode().name(),
        if cluster.on_powerfs() {
            ", data on powerfs"
        } else {
            ""
        },
        started.elapsed().as_secs_f64(),
        cluster
            .urls()
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    ));

    let rec = Recorder::create(&dir)?;
    let prefix = format!("j{:x}", opts.seed ^ rec_nonce());
    let workload = Workload::new(
        opts.workload,
        &prefix,
        opts.keys.unwrap_or(opts.workload.default_keys()),
    );
    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let bugs = Mutex::new(Vec::new());
    let shared = Shared {
        rec: &rec,
        workload: &workload,
        counters: &counters,
        stop: &stop,
        bugs: &bugs,
    };
    let urls = cluster.urls();
    let ids = cluster.ids();
    let object = opts.workload.object();

    for (i, op) in workload.setup().iter().enumerate() {
        let node = ids[i % ids.len()];
        let client = NodeClient::new(&urls[&node], object, opts.request_timeout);
        setup_call(&shared, &client, 2_000_000 + i as u64, node, op, &prefix)?;
    }

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let steps = plan_steps(opts, &mut rng);
    let chooser = Chooser::new(opts.nemesis, StdRng::seed_from_u64(rng.gen()), partitions)
        .with_gray(opts.gray);
    let mut node_exits = Vec::new();
    let nemesis_errors;
    {
        let mut driver = NemesisDriver {
            kind: opts.nemesis,
            aim: opts.power_loss_aim,
            chooser,
            cluster: &mut cluster,
            rec: &rec,
            active: None,
            errors: Vec::new(),
            now: "healthy".into(),
        };
        std::thread::scope(|s| -> Result<()> {
            for slot in 0..opts.concurrency {
                let node = ids[slot % ids.len()];
                let client = NodeClient::new(&urls[&node], object, opts.request_timeout);
                let shared = &shared;
                let (c, rate, seed) = (opts.concurrency, opts.rate, opts.seed);
                std::thread::Builder::new()
                    .name(format!("client-{slot}"))
                    .spawn_scoped(s, move || {
                        client_loop(shared, slot, c, node, client, rate, seed)
                    })?;
            }
            let t0 = Instant::now();
            let total = opts.time + opts.post_heal;
            let mut windows = Vec::new();
            let mut next_progress = t0;
            let mut pending = steps.iter().peekable();
            loop {
                if interrupted() {
                    break;
                }
                let now = t0.elapsed();
                while let Some((at, step)) = pending.peek() {
                    if *at > now {
                        break;
                    }
                    driver.step(step, &mut windows);
                    pending.next();
                }
                for exit in driver.cluster.reap() {
                    eprintln!("keel-jepsen: {exit}");
                    node_exits.push(exit);
                }
                if let Some(every) = opts.progress {
                    if Instant::now() >= next_progress {
                        eprintln!(
                            "[{:6.1}s] ops {:6} ok {:6} fail {:5} info {:5} | {}",
                            t0.elapsed().as_secs_f64(),
                            counters.ops.load(Ordering::Relaxed),
                            counters.ok.load(Ordering::Relaxed),
                            counters.fail.load(Ordering::Relaxed),
                            counters.info.load(Ordering::Relaxed),
                            driver.now
                        );
                        next_progress += every;
                    }
                }
                if now >= total && pending.peek().is_none() {
                    break;
                }
                let wake = pending
                    .peek()
                    .map_or(total, |(at, _)| (*at).min(total))
                    .saturating_sub(t0.elapsed())
                    .clamp(Duration::from_millis(1), Duration::from_millis(100));
                std::thread::sleep(wake);
            }
            stop.store(true, Ordering::Relaxed);
            if interrupted() {
                // Leave nothing faulted behind, whatever was active.
                driver.heal();
            }
            Ok(())
        })?;
        nemesis_errors = driver.errors;
    }
    if interrupted() {
        bail!("interrupted; partial history in {}", dir.display());
    }

    // Messages between partitions (the bank's credits) land once every
    // outbox drained: wait for that, with a deadline, before the final reads.
    if opts.workload == WorkloadKind::Bank {
        let urls: Vec<String> = ids.iter().map(|n| urls[n].clone()).collect();
        match wait_drained(&urls, Duration::from_secs(30)) {
            Ok(took) => say(format!(
                "keel-jepsen: every outbox drained ({took:?} after the load)"
            )),
            Err(why) => {
                counters.bugs.fetch_add(1, Ordering::Relaxed);
                bugs.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("the outboxes never drained: {why}"));
            }
        }
    }

    // Final reads: every key from every node, after the heal.
    say("keel-jepsen: final reads".into());
    let mut process = 1_000_000u64;
    for &node in &ids {
        let client = NodeClient::new(&urls[&node], object, opts.request_timeout);
        for op in workload.final_reads() {
            let until = Instant::now() + Duration::from_secs(20);
            for _attempt in 0..10 {
                process += 1;
                if record_call(&shared, &client, process, node, &op) == OpType::Ok
                    || Instant::now() >= until
                    || interrupted()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    let mut dropped = BTreeMap::new();
    if cluster.mode() == Mode::Loopback {
        for &n in &ids {
            if let Ok(d) = cluster.dropped_datagrams(n) {
                dropped.insert(n.to_string(), d);
            }
        }
    }
    let mut powerfs_stats = BTreeMap::new();
    if cluster.on_powerfs() {
        for &n in &ids {
            match cluster.powerfs_stats(n) {
                Ok(st) => {
                    powerfs_stats.insert(n.to_string(), st);
                }
                Err(e) => eprintln!("keel-jepsen: powerfs status of {n}: {e:#}"),
            }
        }
    }
    for exit in cluster.reap() {
        node_exits.push(exit);
    }
    let mode = cluster.mode();
    let on_powerfs = cluster.on_powerfs();
    drop(cluster);

    let (ops, events, write_error) = rec.snapshot();
    if let Some(e) = write_error {
        bail!("{e}");
    }
    say(format!("keel-jepsen: checking {} history lines", ops.len()));
    let results = check_all_with(&ops, &events, ids.len(), &opts.check);
    let calls = pair(&ops).unwrap_or_default();
    let timeline = FaultTimeline::new(&events, ids.len())?;
    let mut summary = RunSummary {
        seed: opts.seed,
        workload: opts.workload.to_string(),
        nemesis: opts.nemesis.to_string(),
        mode: mode.name().into(),
        dir: dir.clone(),
        concurrency: opts.concurrency,
        rate: opts.rate,
        time_s: opts.time.as_secs_f64(),
        fault_s: opts.fault.as_secs_f64(),
        heal_s: opts.heal.as_secs_f64(),
        post_heal_s: opts.post_heal.as_secs_f64(),
        request_timeout_ms: opts.request_timeout.as_millis() as u64,
        clock_zero_utc: super::report::timestamp_ms(rec.start_unix_ms()),
        ops: 0,
        ok: 0,
        fail: 0,
        info: 0,
        bugs: counters.bugs.load(Ordering::Relaxed) as usize,
        bug_samples: bugs.into_inner().unwrap_or_else(|p| p.into_inner()),
        fault_windows: 0,
        nemesis_errors,
        node_exits,
        recovery_ms: BTreeMap::new(),
        availability: None,
        window_recovery: Vec::new(),
        window_throughput: Vec::new(),
        majority_calls: BTreeMap::new(),
        minority_calls: BTreeMap::new(),
        dropped_datagrams: dropped,
        on_powerfs,
        power_losses: super::report::power_losses(&events, &calls),
        powerfs_stats,
        stats: Stats::default(),
        results: Vec::new(),
        valid: Validity::Unknown,
    };
    summary.derive(&calls, &timeline, results);
    let title = format!(
        "keel {} / {} (seed {})",
        opts.workload, opts.nemesis, opts.seed
    );
    if let Err(e) =
        super::plot::write_latency_svg(&dir.join("latency.svg"), &calls, timeline.windows(), &title)
    {
        eprintln!("keel-jepsen: latency plot: {e}");
    }
    if let Err(e) = super::plot::write_throughput_svg(
        &dir.join("throughput.svg"),
        &calls,
        timeline.windows(),
        &title,
    ) {
        eprintln!("keel-jepsen: throughput plot: {e}");
    }
    std::fs::write(dir.join("summary.txt"), summary.render())?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if mode != Mode::Attached && !opts.keep_data && summary.valid == Validity::Valid {
        // A few hundred MB of sled files per run; logs and histories stay.
        for n in &ids {
            let _ = std::fs::remove_dir_all(dir.join(format!("n{}", n.0)));
        }
    }
    Ok(RunOutcome { summary, dir })
}

/// Distinguishes runs with the same seed against the same cluster.
fn rec_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() & 0xffff_ffff)
        .unwrap_or(0)
        << 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nemesis: NemesisKind) -> RunOptions {
        let mut o = RunOptions::new(WorkloadKind::Set, nemesis, 1);
        o.time = Duration::from_secs(20);
        o
    }

    #[test]
    fn steps_inject_and_heal_each_window_then_heal_finally() {
        let mut rng = StdRng::seed_from_u64(1);
        let steps = plan_steps(&opts(NemesisKind::Kill), &mut rng);
        let names: Vec<String> = steps
            .iter()
            .map(|(at, s)| format!("{}:{s:?}", at.as_secs()))
            .collect();
        assert_eq!(
            names,
            [
                "5:Inject",
                "10:Heal",
                "15:Inject",
                "20:Heal",
                "20:FinalHeal"
            ]
        );
        let none = plan_steps(&opts(NemesisKind::None), &mut rng);
        assert_eq!(none.len(), 1);
        assert!(matches!(none[0].1, Step::FinalHeal));
    }

    #[test]
    fn flap_steps_toggle_inside_each_window() {
        let mut rng = StdRng::seed_from_u64(2);
        let steps = plan_steps(&opts(NemesisKind::Flap), &mut rng);
        let first_heal = steps
            .iter()
            .position(|(_, s)| matches!(s, Step::Heal))
            .unwrap();
        let inside = &steps[1..first_heal];
        assert!(!inside.is_empty());
        assert!(matches!(inside[0].1, Step::FlapHeal), "{inside:?}");
        assert!(inside
            .iter()
            .all(|(at, _)| *at > Duration::from_secs(5) && *at < Duration::from_secs(10)));
        // Times never go backwards.
        assert!(steps.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn options_refuse_what_cannot_work() {
        let mut o = opts(NemesisKind::Kill);
        assert!(o.validate().is_ok());
        assert!(
            o.warnings().is_empty(),
            "15 s after the heal, 4 s in flight"
        );
        o.post_heal = Duration::from_secs(12);
        assert!(o.validate().is_ok());
        assert_eq!(o.warnings().len(), 1);
        o.post_heal = Duration::from_secs(5);
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least 10"));
        let mut o = opts(NemesisKind::Pause);
        o.nodes_url = vec!["http://127.0.0.1:9101".into()];
        let err = o.validate().unwrap_err().to_string();
        assert!(err.contains("--nodes-url"), "{err}");
        o.nemesis = NemesisKind::PartitionLeader;
        assert!(o.validate().is_ok());
        o.netns = Some([10, 77, 0]);
        assert!(o.validate().is_err());
        o.netns = None;
        o.powerfs = true;
        let err = o.validate().unwrap_err().to_string();
        assert!(err.contains("--powerfs"), "{err}");
        let mut o = opts(NemesisKind::PowerLoss);
        assert!(o.uses_powerfs());
        assert!(o.validate().is_ok());
        o.nodes_url = vec!["http://127.0.0.1:9101".into()];
        assert!(o.validate().is_err());
        assert!(!opts(NemesisKind::Kill).uses_powerfs());
        let mut o = opts(NemesisKind::None);
        o.rate = Some(0.0);
        assert!(o.validate().is_err());
        o.rate = None;
        o.concurrency = 0;
        assert!(o.validate().is_err());
    }

    #[test]
    fn the_default_run_dir_names_workload_and_nemesis() {
        let d = opts(NemesisKind::Bridge).run_dir();
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        assert!(d.starts_with("target/jepsen"));
        assert!(name.ends_with("-set-bridge"), "{name}");
    }
}
