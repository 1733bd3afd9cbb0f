//! The deterministic simulator: every node's protocol cores on one thread,
//! a virtual clock that jumps to the next event, a network that delays,
//! reorders, duplicates, drops and cuts (also one way), disks that lose
//! unsynced writes on a crash, and clients, all driven by one seed: the same
//! seed gives the same run, event for event.
//!
//! [`run`] builds a [`World`](world::World) of three nodes from a seed, lets
//! the clients work through the seed's fault schedule, a final heal and a
//! quiet period, and checks every invariant ([`invariants`]). A failing seed
//! replays with `cargo run --release --bin keel-sim -- --seed S --trace`.
//!
//! The base [`Instant`] of the virtual clock is taken once per run; only
//! differences from it reach the cores, so runs do not depend on it.

pub mod client;
pub mod disk;
pub mod faults;
pub mod invariants;
pub mod net;
pub mod node;
pub mod register_client;
pub mod scheduler;
pub mod store_log;
pub mod store_meta;
pub mod store_partition;
pub mod trace;
pub mod world;

use self::client::Clients;
use self::faults::{FaultConfig, Schedule};
use self::net::{LinkConfig, SimNet};
use self::node::{Node, NodeSetup};
use self::register_client::RegisterClients;
use self::scheduler::Scheduler;
use self::trace::Trace;
use self::world::{Event, Observed, World};
use crate::actors::bugs::BugSet;
use crate::actors::leader_elector::ElectorConfig;
use crate::log::LogConfig;
use crate::types::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What a run simulates.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes in the cluster.
    pub nodes: u32,
    /// Partitions (and logs).
    pub partitions: u32,
    /// Concurrent clients.
    pub clients: usize,
    /// Whether each node also runs a client of the metadata register.
    pub register_clients: bool,
    /// Deliberately wrong rules to switch on.
    pub bugs: BugSet,
    /// How faults are drawn (and when the final heal is).
    pub faults: FaultConfig,
    /// Simulated time after the final heal.
    pub quiet: Duration,
    /// Keep every trace entry with a description (slower).
    pub full_trace: bool,
    /// How often replicas are compared while the run goes.
    pub check_every: Duration,
    /// Applied records between two snapshots of a partition (small, so
    /// runs take snapshots and trim past crashed or cut-off nodes, which
    /// then restore them).
    pub snapshot_every: u64,
    /// A fixed fault schedule instead of the drawn one (a scenario test);
    /// the seed still draws everything else.
    pub schedule: Option<Schedule>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            partitions: 2,
            clients: 3,
            register_clients: true,
            bugs: BugSet::NONE,
            faults: FaultConfig::default(),
            quiet: Duration::from_secs(13),
            full_trace: false,
            check_every: Duration::from_secs(1),
            snapshot_every: 40,
            schedule: None,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Invariants broken (empty: the run passed).
    pub violations: Vec<String>,
    /// When the first violation was seen (simulated).
    pub failed_at: Option<Duration>,
    /// Events handled.
    pub events: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// Client operations: ok, fail, info.
    pub ops: (u64, u64, u64),
    /// Disks lost and rejoins that ended.
    pub wipes: (u64, u64),
    /// Syncs a slow disk delayed, and events a stalled node handled late.
    pub gray: (u64, u64),
    /// Times a node's health score called a peer degraded, by peer.
    pub degradations: BTreeMap<u32, u64>,
    /// `(partition, epoch)` → the nodes elected (one, unless broken).
    pub elected: BTreeMap<(u32, u64), BTreeSet<u32>>,
    /// The trace's hash (equal for equal runs).
    pub trace_hash: u64,
    /// The trace (the last entries, or all of them in a full trace).
    pub trace: Trace,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Builds the world of `seed`.
pub fn world(seed: u64, config: &SimConfig) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<NodeId> = (1..=config.nodes).map(NodeId).collect();
    let base = Instant::now();
    let link = LinkConfig::default();
    // Wall clocks differ: one node is sometimes far ahead.
    let skewed = rng.gen_bool(0.5).then(|| rng.gen_range(0..ids.len()));
    let nodes: Vec<Node> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let skew: i64 = if Some(i) == skewed {
                rng.gen_range(70_000..100_000)
            } else {
                rng.gen_range(-1000..1000)
            };
            Node::new(*id, (1_700_000_000_000i64 + skew) as u64)
        })
        .collect();
    let setup = NodeSetup {
        nodes: ids.clone(),
        partitions: config.partitions,
        log: LogConfig::new(ids.clone(), 2),
        bugs: config.bugs,
        elector: ElectorConfig::default(),
        snapshot_every: config.snapshot_every,
        objects: crate::objects::demo::objects(),
    };
    let drawn = Schedule::draw(&config.faults, &ids, &mut rng);
    let schedule = config.schedule.clone().unwrap_or(drawn);
    let deafen_once = rng
        .gen_bool(0.5)
        .then(|| Duration::from_millis(rng.gen_range(800..3000)));
    let strand_once = rng
        .gen_bool(0.5)
        .then(|| Duration::from_millis(rng.gen_range(1500..4000)));
    let n = ids.len();
    let end = schedule.healed_at + config.quiet;
    let mut w = World {
        rng,
        sched: Scheduler::new(base),
        net: SimNet::new(link.clone()),
        link,
        nodes,
        setup,
        calls: BTreeMap::new(),
        ids: 0,
        suspected: vec![BTreeSet::new(); n],
        bad_since: vec![vec![None; n]; n],
        detect_lag: Duration::from_secs(1),
        clients: Clients::new(config.clients, ids.clone(), config.partitions),
        registers: if config.register_clients {
            RegisterClients::new(n, config.clients as u64)
        } else {
            RegisterClients::default()
        },
        schedule,
        end,
        final_reads: end.saturating_sub(Duration::from_secs(3)),
        trace: Trace::new(config.full_trace),
        observed: Observed::default(),
        down: BTreeSet::new(),
        appending: BTreeMap::new(),
        pending_accepts: BTreeMap::new(),
        deafen_once,
        strand_once,
        strand_until: None,
        slow_disk: vec![Duration::ZERO; ids.len()],
        stalled_until: vec![None; ids.len()],
        overloaded: vec![Duration::ZERO; ids.len()],
        faults_from: config.faults.start,
    };
    for i in 0..n {
        w.restart(i);
    }
    for (at, fault) in w.schedule.events.clone() {
        w.sched.at(base + at, Event::Fault(fault));
    }
    for c in 0..config.clients {
        let d = Duration::from_millis(w.rng.gen_range(500..1500));
        w.sched.after(d, Event::Client { c });
    }
    for c in 0..w.registers.clients.len() {
        let d = Duration::from_millis(w.rng.gen_range(500..1500));
        w.sched.after(d, Event::RegisterClient { c });
    }
    w
}

/// Runs `seed` and checks every invariant.
pub fn run(seed: u64, config: &SimConfig) -> Report {
    let mut w = world(seed, config);
    let base = w.sched.now();
    let until = base + w.end;
    let mut events = 0u64;
    let mut next_check = base + config.check_every;
    let mut violations = Vec::new();
    let mut failed_at = None;
    while let Some(event) = w.sched.next(until) {
        events += 1;
        w.handle(event);
        if w.sched.now() >= next_check {
            next_check = w.sched.now() + config.check_every;
            let found = invariants::replicas_agree(&w);
            if !found.is_empty() && violations.is_empty() {
                failed_at = Some(w.sched.elapsed());
                violations.extend(found);
            }
            if !w.observed.violations.is_empty() && failed_at.is_none() {
                failed_at = Some(w.sched.elapsed());
            }
            if failed_at.is_some() {
                break;
            }
        }
    }
    if violations.is_empty() {
        violations = invariants::check_end(&w);
        if !violations.is_empty() && failed_at.is_none() {
            failed_at = Some(w.sched.elapsed());
        }
    } else {
        violations.extend(w.observed.violations.clone());
    }
    let mut ops = (0, 0, 0);
    for op in &w.clients.history {
        match op.kind {
            crate::harness::history::OpType::Ok => ops.0 += 1,
            crate::harness::history::OpType::Fail => ops.1 += 1,
            crate::harness::history::OpType::Info => ops.2 += 1,
            crate::harness::history::OpType::Invoke => {}
        }
    }
    Report {
        seed,
        violations,
        failed_at,
        events,
        simulated: w.sched.elapsed(),
        ops,
        wipes: (w.observed.wipes, w.observed.rejoins),
        gray: (w.observed.slow_syncs, w.observed.stalled_events),
        degradations: w.observed.degradations.clone(),
        elected: w.observed.elected.clone(),
        trace_hash: w.trace.hash(),
        trace: w.trace,
    }
}
