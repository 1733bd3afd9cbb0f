//! One simulated node: its disk, and, while it is up, every protocol core a
//! keel node runs (metadata acceptor and proposer, log-server, sequencers,
//! sealer, log client, one elector and one processor per partition) with the
//! host's bookkeeping that pairs their effects with the inputs that answer
//! them. The routing itself is in `world.rs`.

use super::disk::SimDisk;
use super::store_log::SimLogStore;
use super::store_meta::SimAcceptorStore;
use super::store_partition::SimPartitionStore;
use crate::actors::bugs::BugSet;
use crate::actors::leader_elector::{ElectorConfig, ElectorCore};
use crate::actors::log_server::core::{LogServerConfig, LogServerCore};
use crate::actors::log_server::TailInfo;
use crate::actors::metadata::core::{AcceptorCore, Versioned};
use crate::actors::metadata::proposer_core::{ProposerConfig, ProposerCore};
use crate::actors::partition_processor::{ProcessorConfig, ProcessorCore, WallClock};
use crate::actors::sealer::core::{SealerConfig, SealerCore};
use crate::actors::sequencer::core::SequencerCore;
use crate::log::calls::MetaOp;
use crate::log::core::{LogCore, LogCoreConfig, SealId};
use crate::log::LogConfig;
use crate::storage::Snapshot;
use crate::transport::health::{HealthConfig, HealthCore, PeerSample};
use crate::types::{LogletId, NodeId, PartitionId};
use rand::rngs::StdRng;
use rand::Rng;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

/// Who asked the node's proposer for a register operation.
#[derive(Clone, Debug)]
pub enum MetaFrom {
    /// Register client `c` (see `register_client.rs`).
    Register(usize),
    /// The sealer's operation.
    Sealer(MetaOp),
    /// The log client's operation.
    Log(MetaOp),
    /// Partition `p`'s elector: a read (`cas: false`) or a claim.
    Elector { p: usize, op: u64, cas: bool },
    /// A rejoin's fence: the chain of `log`.
    Fence { log: crate::types::LogId },
    /// A rejoin's re-read of a register key.
    RejoinRead { key: String },
}

/// What a log client operation was started for.
#[derive(Clone, Copy, Debug)]
pub enum LogFrom {
    /// Partition `p`'s processor append `op`.
    Append { p: usize, op: u64 },
    /// Partition `p`'s processor read.
    Read { p: usize },
    /// Partition `p`'s trim (no answer).
    Trim,
    /// The chain read of a "move the sequencer here" of partition `p`.
    MoveRefresh { p: usize },
    /// The seal of a "move the sequencer here".
    MoveSeal,
    /// A rejoin's chain read of `log`.
    RejoinChain { log: crate::types::LogId },
    /// A rejoin's seal of `log`'s lost open tail.
    RejoinSeal { log: crate::types::LogId },
}

/// Whom a request served by this node is answered to.
#[derive(Clone, Copy, Debug)]
pub enum ReplyTo {
    /// A call of another (or this) node: its call id.
    Node { to: NodeId, id: u64 },
    /// A client's call.
    Client { client: usize, id: u64 },
}

/// What a live node runs.
pub struct Cores {
    /// The metadata acceptor (CASPaxos phase 1 and 2) over the disk.
    pub acceptor: AcceptorCore<SimAcceptorStore>,
    /// The node's metadata proposer.
    pub proposer: ProposerCore,
    /// The log-server over the disk.
    pub log_server: LogServerCore<SimLogStore>,
    /// Live sequencers, by loglet (tokens are the host's `serving` ids).
    pub sequencers: BTreeMap<LogletId, SequencerCore<u64>>,
    /// The seal jobs of this node.
    pub sealer: SealerCore,
    /// The appender and reader.
    pub log: LogCore,
    /// One elector per partition.
    pub electors: Vec<ElectorCore>,
    /// One processor per partition (`None` while a stopped one restarts).
    pub processors: Vec<Option<ProcessorCore<SimPartitionStore>>>,
    /// The latest value seen of each register key (the metadata cache).
    pub cache: BTreeMap<String, Versioned>,
    /// Proposer operations in flight, to who asked.
    pub metas: BTreeMap<u64, MetaFrom>,
    /// Proposer operations that are a CAS, to the CAS's id.
    pub cas_of: BTreeMap<u64, u64>,
    /// Sealer requests in flight (sealer token), to the log client's seal.
    pub seals: BTreeMap<u64, SealId>,
    /// Log client operations in flight, to what they are for.
    pub log_ops: BTreeMap<u64, LogFrom>,
    /// Loglets whose tail the log client watches.
    pub watched: BTreeSet<LogletId>,
    /// The tail of each loglet as this node knows it (its log-server's and
    /// its sequencers' releases), for the log client.
    pub tails: BTreeMap<LogletId, TailInfo>,
    /// Requests being served, by host token.
    pub serving: BTreeMap<u64, ReplyTo>,
    /// Instants a wake-up event is already scheduled for.
    pub wakes: BTreeSet<Instant>,
    /// While this node rejoins after a lost disk: the fence and the
    /// rejoin's cores (see `world/rejoin.rs`).
    pub rejoin: Option<super::world::SimRejoin>,
    /// The score of this node's peers, as the transport keeps it in a node
    /// (from commit progress only: the simulated network keeps no packet
    /// or RTT statistics, and its calls time out by the schedule).
    pub health: HealthCore,
    /// Commit waits judged by this node's log-server, as running totals by
    /// peer (what the transport's peer counters hold in a node).
    pub health_totals: BTreeMap<NodeId, PeerSample>,
}

/// One node of the simulated cluster.
pub struct Node {
    /// Its id (1-based).
    pub id: NodeId,
    /// Whether it runs.
    pub up: bool,
    /// Bumped at every crash: events of an older incarnation are dropped.
    pub inc: u64,
    /// What survives a crash.
    pub disk: Rc<RefCell<SimDisk>>,
    /// This node's wall clock, in ms since the UNIX epoch at the start
    /// (clocks of nodes differ: timestamps in records come from them).
    pub wall_ms: u64,
    /// The cores while up.
    pub cores: Option<Cores>,
    /// The newest snapshot of each partition (by index) this node holds;
    /// kept across crashes, as a synced file is.
    pub snapshots: BTreeMap<usize, Snapshot>,
    /// Its disk was replaced: the next start is the operator's
    /// `keel node --rejoin` (which writes the rejoin mark first).
    pub wiped: bool,
}

/// What every node is configured with.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// Every node of the cluster.
    pub nodes: Vec<NodeId>,
    /// Partitions (and logs).
    pub partitions: u32,
    /// The log's configuration.
    pub log: LogConfig,
    /// Deliberately wrong rules.
    pub bugs: BugSet,
    /// The elector's timing.
    pub elector: ElectorConfig,
    /// Applied records between two snapshots of a partition.
    pub snapshot_every: u64,
    /// The object types the processors serve (the demo's).
    pub objects: crate::objects::Objects,
}

impl Node {
    pub fn new(id: NodeId, wall_ms: u64) -> Self {
        Node {
            id,
            up: false,
            inc: 0,
            disk: Rc::new(RefCell::new(SimDisk::default())),
            wall_ms,
            cores: None,
            snapshots: BTreeMap::new(),
            wiped: false,
        }
    }

    /// A processor of partition `p` on this node's disk, at the state the
    /// disk holds (`None` if the store cannot be opened).
    pub fn processor(
        &self,
        setup: &NodeSetup,
        p: usize,
        base: Instant,
    ) -> Option<ProcessorCore<SimPartitionStore>> {
        let store = SimPartitionStore::open(self.disk.clone(), PartitionId(p as u32)).ok()?;
        let config = ProcessorConfig {
            partition: PartitionId(p as u32),
            partitions: setup.partitions,
            wall_clock: WallClock {
                at: base,
                unix_ms: self.wall_ms,
            },
            bugs: setup.bugs,
            snapshot_every: setup.snapshot_every,
            snapshot_held: self.snapshots.get(&p).map(|s| s.lsn),
            idempotency_retention_ms:
                crate::actors::partition_processor::core::USER_KEY_RETENTION_MS,
            objects: setup.objects.clone(),
        };
        ProcessorCore::new(config, store).ok()
    }

    /// Starts the node's cores over what its disk holds.
    pub fn start(&mut self, setup: &NodeSetup, base: Instant, rng: &mut StdRng) {
        let store = SimLogStore::open(self.disk.clone()).expect("the simulated log store opens");
        let log_server = LogServerCore::new(
            LogServerConfig {
                node: self.id,
                bugs: setup.bugs,
            },
            store,
        );
        let mut sealer_config = SealerConfig::new(&setup.log);
        sealer_config.bugs = setup.bugs;
        let electors = (0..setup.partitions)
            .map(|p| ElectorCore::new(PartitionId(p), setup.elector.clone(), rng.gen()))
            .collect();
        let processors = (0..setup.partitions as usize)
            .map(|p| self.processor(setup, p, base))
            .collect();
        self.cores = Some(Cores {
            acceptor: AcceptorCore::new(SimAcceptorStore::open(self.disk.clone())),
            proposer: ProposerCore::new(ProposerConfig { bugs: setup.bugs }, rng.gen()),
            log_server,
            sequencers: BTreeMap::new(),
            sealer: SealerCore::new(sealer_config, rng.gen()),
            log: LogCore::new(
                LogCoreConfig {
                    log: setup.log.clone(),
                    logs: setup.partitions,
                },
                rng.gen(),
            ),
            electors,
            processors,
            cache: BTreeMap::new(),
            metas: BTreeMap::new(),
            cas_of: BTreeMap::new(),
            seals: BTreeMap::new(),
            log_ops: BTreeMap::new(),
            watched: BTreeSet::new(),
            tails: BTreeMap::new(),
            serving: BTreeMap::new(),
            wakes: BTreeSet::new(),
            rejoin: None,
            health: HealthCore::new(HealthConfig::default()),
            health_totals: BTreeMap::new(),
        });
        self.up = true;
    }

    /// The power goes: the cores and everything in memory are gone; the
    /// disk keeps what was synced and a prefix of the rest.
    pub fn crash(&mut self, rng: &mut StdRng) {
        self.cores = None;
        self.up = false;
        self.inc += 1;
        self.disk.borrow_mut().crash(rng);
    }

    /// The disk is lost (after a crash): a blank one replaces it, and the
    /// snapshot files go with it.
    pub fn wipe(&mut self, rng: &mut StdRng) {
        if self.up {
            self.crash(rng);
        }
        self.disk = Rc::new(RefCell::new(SimDisk::default()));
        self.snapshots.clear();
        self.wiped = true;
    }
}
