//! The in-process test rig: N keel nodes in one process, each on its own
//! thread with its own actix `System`, on loopback with real QUIC, mutual TLS
//! and the fault-injecting socket.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use keel::rig::Rig;
//! use std::time::Duration;
//! let mut rig = Rig::builder(3).start()?;
//! rig.isolate(1);                                  // N1 drops all packets to and from N2, N3
//! rig.wait_for("N2 suspects N1", Duration::from_secs(3), |r| r.node(2).net.is_suspected(keel::types::NodeId(1)))?;
//! rig.heal();
//! rig.kill(3);                                     // crash-like stop
//! rig.restart(3)?;                                 // same data directory
//! # Ok(()) }
//! ```
//!
//! Tests are plain `#[test]` functions: the rig's methods block, and async
//! library calls run on the rig's own runtime with [`Rig::block_on`].

use crate::config::Config;
use crate::node::{Node, NodeOptions};
use crate::transport::{ClusterCa, FaultFilter};
use crate::types::NodeId;
use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

impl From<u32> for NodeId {
    fn from(n: u32) -> Self {
        NodeId(n)
    }
}

/// How to stop a node's thread.
enum Stop {
    /// Orderly: HTTP, actors, transport, flush.
    Graceful,
    /// Like a crash: every packet dropped first (no goodbyes reach the
    /// peers), then everything torn down without a shutdown sequence.
    Crash,
}

struct Running {
    node: Node,
    stop: oneshot::Sender<Stop>,
    thread: JoinHandle<()>,
    gave_up: Arc<Mutex<Option<String>>>,
}

pub struct RigBuilder {
    nodes: u32,
    partitions: u32,
    replication: u8,
    partitions_enabled: bool,
    chaos: bool,
    /// Applied records between two scheduled snapshots of a partition.
    snapshot_every: u64,
    /// The object types each node serves (index: node id - 1).
    objects: Vec<crate::objects::Objects>,
}

impl RigBuilder {
    /// Every node serves `objects` (default: the demo's).
    pub fn objects(mut self, objects: crate::objects::Objects) -> Self {
        self.objects = vec![objects; self.nodes as usize];
        self
    }
    /// Node `id` serves `objects` (to test a node that differs).
    pub fn objects_of(mut self, id: u32, objects: crate::objects::Objects) -> Self {
        self.objects[id as usize - 1] = objects;
        self
    }
    /// Snapshots every `records` applied records (0: on demand only).
    pub fn snapshot_every(mut self, records: u64) -> Self {
        self.snapshot_every = records;
        self
    }
    pub fn partitions(mut self, p: u32) -> Self {
        self.partitions = p;
        self
    }
    pub fn replication(mut self, r: u8) -> Self {
        self.replication = r;
        self
    }
    /// Without partition processors and electors: only the logs run.
    pub fn logs_only(mut self) -> Self {
        self.partitions_enabled = false;
        self
    }
    pub fn chaos(mut self) -> Self {
        self.chaos = true;
        self
    }

    pub fn start(self) -> Result<Rig> {
        let dir = tempfile::Builder::new().prefix("keel-rig-").tempdir()?;
        let ca = ClusterCa::generate()?;
        let base = free_port_base(self.nodes)?;
        let mut configs = Vec::new();
        for i in 1..=self.nodes {
            let mut c = Config::local_cluster(self.nodes, i, dir.path(), base);
            c.partitions = self.partitions;
            c.replication = self.replication;
            c.chaos = self.chaos;
            c.snapshot_every_records = self.snapshot_every;
            c.validate()?;
            // As `keel init` does: a node never starts on a blank directory.
            crate::cli::init::stamp_data_dir(&c.data_dir, &ca.cert(), NodeId(i))?;
            configs.push(c);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut rig = Rig {
            _dir: dir,
            ca,
            configs,
            faults: (0..self.nodes).map(|_| FaultFilter::new()).collect(),
            nodes: (0..self.nodes).map(|_| None).collect(),
            partitions_enabled: self.partitions_enabled,
            objects: self.objects,
            runtime,
        };
        for i in 1..=self.nodes {
            rig.restart(i)?;
        }
        Ok(rig)
    }
}

pub struct Rig {
    _dir: tempfile::TempDir,
    ca: ClusterCa,
    configs: Vec<Config>,
    faults: Vec<FaultFilter>,
    nodes: Vec<Option<Running>>,
    partitions_enabled: bool,
    /// The object types each node serves (index: node id - 1).
    objects: Vec<crate::objects::Objects>,
    runtime: tokio::runtime::Runtime,
}

/// Ports for one rig: QUIC `base+i`, HTTP `base+100+i`; chosen so that
/// concurrently running test binaries do not collide, and checked free.
///
/// Every port stays below 32768, where Linux's ephemeral range begins
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default): a port up there
/// can be checked free and then taken by any outgoing connection's local
/// port before the node binds it ("Address already in use" at start).
fn free_port_base(nodes: u32) -> Result<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid_slot = (std::process::id() % 53) as u16;
    let candidates = (0..200).map(|_| {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 40;
        RIG_PORTS_START + pid_slot * 400 + n * 10
    });
    crate::config::free_base_port(nodes, candidates)
        .ok_or_else(|| anyhow::anyhow!("no free port range found for the rig"))
}

/// Where rig port ranges begin: above the well-known services, and with
/// 53 slots of 400 ports each, below the ephemeral range.
const RIG_PORTS_START: u16 = 10_000;
const _: () = assert!(RIG_PORTS_START as u32 + 52 * 400 + 39 * 10 + 100 + 99 < 32_768);

impl Rig {
    pub fn builder(nodes: u32) -> RigBuilder {
        RigBuilder {
            nodes,
            partitions: 4,
            replication: 2.min(nodes as u8),
            partitions_enabled: true,
            chaos: false,
            snapshot_every: crate::config::DEFAULT_SNAPSHOT_EVERY_RECORDS,
            objects: vec![crate::objects::demo::objects(); nodes as usize],
        }
    }

    pub fn size(&self) -> u32 {
        self.configs.len() as u32
    }

    pub fn ids(&self) -> Vec<NodeId> {
        (1..=self.size()).map(NodeId).collect()
    }

    /// A running node. Panics if it is stopped (a test bug).
    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("N{id} is not running"))
            .node
    }

    pub fn is_running(&self, id: u32) -> bool {
        self.nodes[id as usize - 1].is_some()
    }

    pub fn config(&self, id: u32) -> &Config {
        &self.configs[id as usize - 1]
    }

    /// `http://127.0.0.1:<port>` of a node's ingress.
    pub fn http(&self, id: u32) -> String {
        format!(
            "http://{}",
            self.config(id)
                .address(NodeId(id))
                .expect("configured")
                .http
        )
    }

    fn quic(&self, id: u32) -> SocketAddr {
        self.config(id)
            .address(NodeId(id))
            .expect("configured")
            .quic
    }

    pub fn fault(&self, id: u32) -> &FaultFilter {
        &self.faults[id as usize - 1]
    }

    /// Runs an async computation on the rig's runtime.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.runtime.block_on(fut)
    }

    /// Splits the cluster: nodes in different groups drop each other's
    /// packets (both directions, at both ends). Nodes not listed form a group
    /// of their own each.
    pub fn partition(&self, groups: &[&[u32]]) {
        self.heal();
        let group_of = |n: u32| groups.iter().position(|g| g.contains(&n));
        for a in 1..=self.size() {
            let blocked: Vec<SocketAddr> = (1..=self.size())
                .filter(|&b| b != a && (group_of(a).is_none() || group_of(a) != group_of(b)))
                .map(|b| self.quic(b))
                .collect();
            self.fault(a).isolate(&blocked);
        }
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: u32) {
        let others: Vec<u32> = (1..=self.size()).filter(|&n| n != node).collect();
        self.partition(&[&[node], &others]);
    }

    /// `a` and `b` cannot talk; everyone else can.
    pub fn cut(&self, a: u32, b: u32) {
        self.fault(a).isolate(&[self.quic(b)]);
        self.fault(b).isolate(&[self.quic(a)]);
    }

    /// Removes every fault rule on every node.
    pub fn heal(&self) {
        for f in &self.faults {
            f.heal();
        }
    }

    /// Stops `id` like a crash (no goodbye reaches its peers).
    pub fn kill(&mut self, id: u32) {
        self.stop_node(id, Stop::Crash);
    }

    /// Stops `id` in order.
    pub fn stop(&mut self, id: u32) {
        self.stop_node(id, Stop::Graceful);
    }

    fn stop_node(&mut self, id: u32, how: Stop) {
        if let Some(running) = self.nodes[id as usize - 1].take() {
            let _ = running.stop.send(how);
            let _ = running.thread.join();
        }
    }

    /// Starts (or restarts) `id` on its data directory; waits until it serves.
    pub fn restart(&mut self, id: u32) -> Result<()> {
        self.start_node(id, false)
    }

    /// A lost disk: `id` crashes and its data directory is deleted.
    pub fn wipe(&mut self, id: u32) -> Result<()> {
        self.stop_node(id, Stop::Crash);
        let dir = &self.configs[id as usize - 1].data_dir;
        std::fs::remove_dir_all(dir).with_context(|| format!("deleting {}", dir.display()))?;
        Ok(())
    }

    /// Starts `id` as `keel node --rejoin` does; waits until it serves (its
    /// fence is up; the rejoin goes on in the background, see status).
    pub fn restart_rejoining(&mut self, id: u32) -> Result<()> {
        self.start_node(id, true)
    }

    fn start_node(&mut self, id: u32, rejoin: bool) -> Result<()> {
        self.stop_node(id, Stop::Graceful);
        let config = self.configs[id as usize - 1].clone();
        let fault = self.faults[id as usize - 1].clone();
        // A crashed node's filter still drops everything: a restart is a new process.
        fault.heal();
        let identity = self.ca.issue_node_cert(NodeId(id))?;
        let opts = NodeOptions {
            config,
            identity,
            ca: self.ca.cert(),
            fault,
            http_workers: 1,
            partitions_enabled: self.partitions_enabled,
            rejoin,
            objects: self.objects[id as usize - 1].clone(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<Stop>();
        let gave_up: Arc<Mutex<Option<String>>> = Arc::default();
        let gave_up2 = gave_up.clone();
        let thread = std::thread::Builder::new()
            .name(format!("keel-N{id}"))
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let on_give_up = move |reason: String| {
                        *gave_up2.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                    };
                    let node = match Node::start(opts, on_give_up).await {
                        Ok(node) => node,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!(e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(node.clone()));
                    match stop_rx.await.unwrap_or(Stop::Graceful) {
                        Stop::Graceful => node.shutdown().await,
                        Stop::Crash => node.crash().await,
                    }
                });
            })?;
        let node = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("node did not start within 30 s")??;
        self.nodes[id as usize - 1] = Some(Running {
            node,
            stop: stop_tx,
            thread,
            gave_up,
        });
        Ok(())
    }

    /// Why `id`'s supervision tree gave up, if it did.
    pub fn gave_up(&self, id: u32) -> Option<String> {
        self.nodes[id as usize - 1]
            .as_ref()
            .and_then(|r| r.gave_up.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Polls `cond` every 20 ms until it holds or `deadline` passes.
    pub fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut(&Rig) -> Option<T>,
    ) -> Result<T>
    where
        T: Sized,
    {
        let end = Instant::now() + deadline;
        loop {
            if let Some(v) = cond(self) {
                return Ok(v);
            }
            if Instant::now() >= end {
                bail!("timed out after {deadline:?} waiting for: {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node has a live connection to every other
    /// running node: what a test needs before it calls a peer directly,
    /// since a call on a peer with no connection fails at once.
    pub fn wait_connected(&self, deadline: Duration) -> Result<Duration> {
        self.wait_for(
            "every running node connected to every other",
            deadline,
            |r| {
                let running: Vec<u32> = (1..=r.size()).filter(|&i| r.is_running(i)).collect();
                running.iter().all(|&a| {
                    running
                        .iter()
                        .all(|&b| !r.node(a).net.is_suspected(NodeId(b)))
                })
            },
        )
    }

    /// Like [`wait_until`](Self::wait_until) for a boolean condition.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut(&Rig) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        self.wait_until(what, deadline, |r| cond(r).then_some(()))?;
        Ok(start.elapsed())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for id in 1..=self.size() {
            self.stop_node(id, Stop::Crash);
        }
    }
}
