//! The cluster under test: node processes the harness started (on
//! loopback, or each in its own network namespace), or nodes someone else
//! runs (`--nodes-url`, where only the chaos endpoints are available).
//!
//! Everything that touches a node from outside goes through here: spawn,
//! `kill -9`, restart on the same data, `SIGSTOP`/`SIGCONT`, power loss of
//! a node's powerfs mount, the chaos endpoints and the status used to find
//! leaders. Dropping a [`Cluster`] resumes, stops and reaps every process it
//! started, then unmounts the nodes' powerfs mounts.

use super::nemesis::OneWayDirection;
use super::netns::{DropSpec, NetnsGuard, NetnsPlan};
use super::power::PowerMount;
use crate::cli::local::{all_partitions_led, fetch_status};
use crate::config::Config;
use crate::node::status::ClusterStatus;
use crate::powerfs::{PowerLossReport, Stats};
use crate::types::NodeId;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How the harness controls the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Processes on 127.0.0.1; partitions through the chaos endpoints.
    Loopback,
    /// Processes in network namespaces; partitions are firewall rules.
    Netns,
    /// Someone else's processes: no kill, pause or restart.
    Attached,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Loopback => "loopback",
            Mode::Netns => "netns",
            Mode::Attached => "attached",
        }
    }
}

struct NodeProc {
    id: NodeId,
    http: String,
    /// Program and arguments that (re)start the node.
    command: Vec<String>,
    log: PathBuf,
    /// The node's data directory as it resolves it (emptied by a wipe).
    data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// What to start.
pub struct StartOptions<'a> {
    pub dir: &'a Path,
    pub keel: &'a Path,
    pub nodes: u32,
    /// Loopback only; `None` picks free ports in 9000..9900.
    pub base_port: Option<u16>,
    pub netns: Option<NetnsPlan>,
    pub seed: u64,
    /// Put each node's data directory on its own powerfs mount, with this
    /// `keel-powerfs` executable.
    pub powerfs: Option<&'a Path>,
    /// Appended to every `keel node` command (flags the runs tune, such
    /// as a soak's short idempotency retention).
    pub node_args: Vec<String>,
}

/// How long a `keel-powerfs mount` may take to report "mounted".
const MOUNT_DEADLINE: Duration = Duration::from_secs(30);

/// How long powerfs may take to unmount and exit after SIGTERM.
const UNMOUNT_GRACE: Duration = Duration::from_secs(10);

pub struct Cluster {
    mode: Mode,
    nodes: Vec<NodeProc>,
    /// One per node when the data directories are on powerfs. Stopped
    /// after the nodes, in `Drop`.
    mounts: Vec<PowerMount>,
    /// Dropped after the processes (field order): namespaces outlive them.
    netns: Option<NetnsGuard>,
    /// Exits nobody asked for, reported once each.
    unexpected_exits: Vec<String>,
}

/// A base port whose QUIC (`base+i`) and HTTP (`base+100+i`) ports are free.
/// Runs spread over 9000..9800 in steps of 10, so concurrent harnesses
/// rarely collide.
fn pick_base_port(nodes: u32, seed: u64) -> Result<u16> {
    let candidates = (0..80u64).map(|k| 9000 + ((seed.wrapping_add(k * 7) % 80) * 10) as u16);
    crate::config::free_base_port(nodes, candidates)
        .ok_or_else(|| anyhow::anyhow!("no free port range found in 9000..9900; pass --base-port"))
}

/// Rewrites a node's config for netns mode: fixed ports on each node's
/// namespace address. Paths stay as `keel init` wrote them (relative to the
/// file), so the file keeps working where it is.
fn place_in_namespaces(path: &Path, plan: &NetnsPlan) -> Result<Config> {
    let mut config = Config::load_as_written(path)?;
    for n in &mut config.nodes {
        let ip = plan.node_ip(NodeId(n.id));
        n.quic = SocketAddr::from((ip, 7000));
        n.http = SocketAddr::from((ip, 8000));
    }
    config.validate()?;
    std::fs::write(path, config.to_toml())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(config)
}

/// Starts `node`'s command, with `extra` arguments appended.
fn spawn(node: &mut NodeProc, extra: &[&str]) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening {}", node.log.display()))?;
    let (prog, args) = node.command.split_first().context("empty command")?;
    let child = Command::new(prog)
        .args(args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} ({})", node.id, node.command.join(" ")))?;
    node.child = Some(child);
    node.paused = false;
    Ok(())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a plain syscall on a pid this process spawned and has not
    // reaped yet (we only reap in `try_wait`/`wait`, after which `child`
    // is dropped from the node).
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

impl Cluster {
    /// Writes certificates and configs into `dir`, starts every node and
    /// returns once they run (not yet once they lead: see
    /// [`Cluster::wait_ready`]).
    pub fn start(opts: StartOptions<'_>) -> Result<Cluster> {
        let dir = opts.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (mode, base, netns) = match opts.netns {
            Some(plan) => (Mode::Netns, 7000, Some(NetnsGuard::create(plan)?)),
            None => {
                let base = match opts.base_port {
                    Some(b) => b,
                    None => pick_base_port(opts.nodes, opts.seed)?,
                };
                (Mode::Loopback, base, None)
            }
        };
        let configs = crate::cli::init::run(dir, opts.nodes, base, true)?;
        // Built first, so that whatever fails below still stops what was
        // started (nodes, then mounts) on drop.
        let mut cluster = Cluster {
            mode,
            nodes: Vec::new(),
            mounts: Vec::new(),
            netns,
            unexpected_exits: Vec::new(),
        };
        for (i, path) in configs.iter().enumerate() {
            let id = NodeId(i as u32 + 1);
            let config = match &cluster.netns {
                Some(guard) => place_in_namespaces(path, &guard.plan)?,
                None => Config::load_as_written(path)?,
            };
            let http = config
                .address(id)
                .map(|a| format!("http://{}", a.http))
                .context("node missing from its own config")?;
            // The data directory as the node resolves it.
            let data_dir = Config::load(path)?.data_dir;
            if let Some(exe) = opts.powerfs {
                cluster
                    .mounts
                    .push(PowerMount::start(exe, id, &data_dir, dir, MOUNT_DEADLINE)?);
            }
            let mut command = match &cluster.netns {
                Some(g) => g.plan.exec_prefix(id),
                None => Vec::new(),
            };
            command.extend([
                opts.keel.display().to_string(),
                "node".into(),
                "--config".into(),
                path.display().to_string(),
            ]);
            command.extend(opts.node_args.iter().cloned());
            cluster.nodes.push(NodeProc {
                id,
                http,
                command,
                log: dir.join(format!("n{}.log", id.0)),
                data_dir,
                child: None,
                paused: false,
            });
        }
        for node in &mut cluster.nodes {
            spawn(node, &[])?;
        }
        Ok(cluster)
    }

    /// Nodes run by someone else. Node ids come from each node's
    /// `/health`, so the URLs may be given in any order.
    pub fn attach(urls: &[String]) -> Result<Cluster> {
        let mut nodes = Vec::new();
        for url in urls {
            let url = url.trim_end_matches('/').to_string();
            let health: Value = ureq::get(&format!("{url}/health"))
                .timeout(Duration::from_secs(5))
                .call()
                .with_context(|| format!("GET {url}/health"))?
                .into_json()
                .with_context(|| format!("decoding {url}/health"))?;
            let id: NodeId = health["node"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| health["node"].as_u64().map(|n| NodeId(n as u32)))
                .with_context(|| format!("{url}/health names no node: {health}"))?;
            nodes.push(NodeProc {
                id,
                http: url,
                command: Vec::new(),
                log: PathBuf::new(),
                data_dir: PathBuf::new(),
                child: None,
                paused: false,
            });
        }
        nodes.sort_by_key(|n| n.id);
        let ids: Vec<u32> = nodes.iter().map(|n| n.id.0).collect();
        if ids != (1..=nodes.len() as u32).collect::<Vec<_>>() {
            bail!(
                "--nodes-url must name nodes N1..N{} exactly once each, got {ids:?}",
                nodes.len()
            );
        }
        Ok(Cluster {
            mode: Mode::Attached,
            nodes,
            mounts: Vec::new(),
            netns: None,
            unexpected_exits: Vec::new(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Ingress base URL of every node, by id.
    pub fn urls(&self) -> BTreeMap<NodeId, String> {
        self.nodes.iter().map(|n| (n.id, n.http.clone())).collect()
    }

    /// The process id of `id`, while the harness runs it.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        let node = self.nodes.iter().find(|n| n.id == id)?;
        node.child.as_ref().map(|c| c.id())
    }

    /// `id`'s data directory as the node resolves it (`None` when attached).
    pub fn data_dir(&self, id: NodeId) -> Option<&Path> {
        let node = self.nodes.iter().find(|n| n.id == id)?;
        Some(node.data_dir.as_path()).filter(|d| !d.as_os_str().is_empty())
    }

    fn node(&mut self, id: NodeId) -> Result<&mut NodeProc> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    fn owned(&mut self, id: NodeId, what: &str) -> Result<&mut NodeProc> {
        if self.mode == Mode::Attached {
            bail!("{what} needs node processes the harness started; unavailable with --nodes-url");
        }
        self.node(id)
    }

    /// Waits until every node answers and every partition has a leader.
    pub fn wait_ready(&mut self, deadline: Duration) -> Result<ClusterStatus> {
        let until = Instant::now() + deadline;
        let mut last_err = String::from("no status yet");
        loop {
            self.reap();
            if let Some(e) = self.unexpected_exits.first() {
                bail!("{e}");
            }
            for node in &self.nodes {
                match fetch_status(&node.http) {
                    Ok(status) => {
                        let all_report = status.nodes.iter().all(|n| n.status.is_some());
                        if all_report && all_partitions_led(&status) {
                            return Ok(status);
                        }
                        last_err = "not every partition has a leader".into();
                        break;
                    }
                    Err(e) => last_err = format!("{}: {e:#}", node.id),
                }
            }
            if Instant::now() >= until {
                bail!(
                    "cluster not ready within {:.0} s ({last_err})",
                    deadline.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node leading the most partitions, asking each node in turn.
    pub fn leader(&self) -> Option<NodeId> {
        for node in &self.nodes {
            let Ok(status) = fetch_status(&node.http) else {
                continue;
            };
            let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
            for report in status.nodes.iter() {
                let Some(s) = &report.status else { continue };
                let led = s.partitions.iter().filter(|p| p.mode == "Leader").count();
                *count.entry(report.node).or_default() += led;
            }
            return count
                .into_iter()
                .filter(|(_, c)| *c > 0)
                .max_by_key(|&(n, c)| (c, std::cmp::Reverse(n)))
                .map(|(n, _)| n);
        }
        None
    }

    fn chaos(&self, id: NodeId, path: &str, body: Value) -> Result<Value> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))?;
        let url = format!("{}{path}", node.http);
        match ureq::post(&url)
            .timeout(Duration::from_secs(3))
            .send_json(body)
        {
            Ok(r) => Ok(r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(404, r)) => bail!(
                "{id}: {path} answered 404 ({}); were the nodes started with --chaos?",
                r.into_string().unwrap_or_default().trim()
            ),
            Err(e) => bail!("{id}: POST {path}: {e}"),
        }
    }

    /// Makes exactly the pairs in `blocks` (node → peers it drops) unable
    /// to talk: heals everyone first, then adds the new rules.
    pub fn partition(&self, blocks: &BTreeMap<NodeId, BTreeSet<NodeId>>) -> Result<()> {
        self.heal_network()?;
        for (&node, peers) in blocks {
            match &self.netns {
                Some(g) => g.block(node, peers)?,
                None => {
                    let list: Vec<u32> = peers.iter().map(|p| p.0).collect();
                    self.chaos(node, "/chaos/partition", json!({ "block": list }))?;
                }
            }
        }
        Ok(())
    }

    /// Removes every partition rule on every node; tries all nodes and
    /// reports the first error.
    pub fn heal_network(&self) -> Result<()> {
        let mut first = None;
        for node in &self.nodes {
            let r = match &self.netns {
                Some(g) => g.heal(node.id).map_err(anyhow::Error::from),
                None => self.chaos(node.id, "/chaos/heal", json!({})).map(drop),
            };
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Gray: `id` loses `percent`% of its packets to and from every peer
    /// (nftables in `--netns` mode, its socket filter otherwise).
    pub fn loss(&self, id: NodeId, percent: u8) -> Result<()> {
        let spec = DropSpec {
            percent,
            ..DropSpec::ALL
        };
        self.drop_with_peers(
            id,
            spec,
            json!({ "nodes": self.peers_of(id), "percent": percent }),
            "/chaos/loss",
        )
    }

    /// Gray: every packet `id` sends (or receives) is lost, the other
    /// direction intact.
    pub fn one_way(&self, id: NodeId, direction: OneWayDirection) -> Result<()> {
        let spec = DropSpec {
            inbound: direction == OneWayDirection::Inbound,
            outbound: direction == OneWayDirection::Outbound,
            percent: 100,
        };
        let body = json!({ "block": self.peers_of(id), "direction": direction.name() });
        self.drop_with_peers(id, spec, body, "/chaos/partition")
    }

    /// Gray: every sync of `id` takes `ms` longer (its chaos hook).
    pub fn slow_disk(&self, id: NodeId, ms: u64) -> Result<()> {
        self.chaos(id, "/chaos/slow-disk", json!({ "ms": ms }))
            .map(drop)
    }

    /// Gray: `id`'s runtime stops for `stall_ms` of every `every_ms`.
    pub fn slow_node(&self, id: NodeId, stall_ms: u64, every_ms: u64) -> Result<()> {
        self.chaos(
            id,
            "/chaos/slow-node",
            json!({ "stall_ms": stall_ms, "every_ms": every_ms }),
        )
        .map(drop)
    }

    /// Ends every fault a node's chaos endpoints made (socket rules, slow
    /// disk, slow node) on every node, in either mode; tries all nodes and
    /// reports the first error.
    pub fn heal_chaos(&self) -> Result<()> {
        let mut first = None;
        for node in &self.nodes {
            if let Err(e) = self.chaos(node.id, "/chaos/heal", json!({})) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Every node but `id`, as numbers.
    fn peers_of(&self, id: NodeId) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| n.id.0)
            .collect()
    }

    /// Drops `spec` of `id`'s traffic with all its peers: in its namespace,
    /// or through `path` with `body` on its chaos endpoint.
    fn drop_with_peers(&self, id: NodeId, spec: DropSpec, body: Value, path: &str) -> Result<()> {
        match &self.netns {
            Some(g) => {
                let peers = self
                    .nodes
                    .iter()
                    .map(|n| n.id)
                    .filter(|&n| n != id)
                    .collect();
                g.drop(id, &peers, spec).map_err(anyhow::Error::from)
            }
            None => self.chaos(id, path, body).map(drop),
        }
    }

    /// Datagrams dropped by `node`'s socket filter (chaos mode), as
    /// `GET /chaos` reports them.
    pub fn dropped_datagrams(&self, id: NodeId) -> Result<u64> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))?;
        let v: Value = ureq::get(&format!("{}/chaos", node.http))
            .timeout(Duration::from_secs(3))
            .call()?
            .into_json()?;
        let c = &v["counters"];
        Ok(
            c["dropped_inbound"].as_u64().unwrap_or(0)
                + c["dropped_outbound"].as_u64().unwrap_or(0),
        )
    }

    pub fn stall(&self, id: NodeId, actor: &str, wait_ms: Option<u64>) -> Result<()> {
        self.chaos(
            id,
            "/chaos/stall",
            json!({ "actor": actor, "wait_ms": wait_ms }),
        )
        .map(drop)
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self, id: NodeId) -> Result<()> {
        let node = self.owned(id, "kill")?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("{id} is not running"))?;
        child.kill().with_context(|| format!("killing {id}"))?;
        child.wait().with_context(|| format!("reaping {id}"))?;
        node.paused = false;
        Ok(())
    }

    /// Whether the nodes' data directories are on powerfs.
    pub fn on_powerfs(&self) -> bool {
        !self.mounts.is_empty()
    }

    fn mount(&mut self, id: NodeId) -> Result<&mut PowerMount> {
        self.mounts
            .iter_mut()
            .find(|m| m.node() == id)
            .with_context(|| format!("{id}'s data directory is not on powerfs"))
    }

    /// Cuts the power of `id`'s powerfs mount: everything the node never
    /// synced is dropped (with `tear`, the last unsynced write keeps a
    /// prefix). The node must be down (see [`Cluster::kill`]): a running
    /// node's files would answer EIO.
    pub fn power_loss(&mut self, id: NodeId, tear: Option<u64>) -> Result<PowerLossReport> {
        if self.node(id)?.child.is_some() {
            bail!("{id} is still running; kill it before cutting its power");
        }
        Ok(self.mount(id)?.power_loss(tear)?)
    }

    /// Data bytes `id`'s mount holds unsynced right now.
    pub fn unsynced_bytes(&mut self, id: NodeId) -> Result<u64> {
        Ok(self.mount(id)?.stats()?.bytes_unsynced)
    }

    /// The counters of `id`'s powerfs mount.
    pub fn powerfs_stats(&mut self, id: NodeId) -> Result<Stats> {
        Ok(self.mount(id)?.stats()?)
    }

    /// Starts a node that is not running, with the same command and data.
    pub fn restart(&mut self, id: NodeId) -> Result<()> {
        let node = self.owned(id, "restart")?;
        if node.child.is_some() {
            return Ok(());
        }
        spawn(node, &[])
    }

    /// A lost disk: `kill -9`, then everything in the node's data directory
    /// is deleted (the directory itself stays: on powerfs it is the mount).
    /// Returns how many entries went.
    pub fn wipe(&mut self, id: NodeId) -> Result<usize> {
        self.kill(id)?;
        let node = self.owned(id, "wipe")?;
        let dir = node.data_dir.clone();
        let mut removed = 0;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.with_context(|| format!("deleting {}", path.display()))?;
            removed += 1;
        }
        if removed == 0 {
            bail!("{id}'s data directory {} was already empty", dir.display());
        }
        Ok(removed)
    }

    /// Starts a wiped node with `--rejoin`.
    pub fn restart_rejoining(&mut self, id: NodeId) -> Result<()> {
        let node = self.owned(id, "restart --rejoin")?;
        if node.child.is_some() {
            return Ok(());
        }
        spawn(node, &["--rejoin"])
    }

    pub fn pause(&mut self, id: NodeId) -> Result<()> {
        let node = self.owned(id, "pause")?;
        let child = node
            .child
            .as_ref()
            .with_context(|| format!("{id} is not running"))?;
        signal(child, libc::SIGSTOP);
        node.paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: NodeId) -> Result<()> {
        let node = self.owned(id, "resume")?;
        if let Some(child) = &node.child {
            signal(child, libc::SIGCONT);
        }
        node.paused = false;
        Ok(())
    }

    /// Notes processes that exited on their own; returns the new notes.
    pub fn reap(&mut self) -> Vec<String> {
        let mut new = Vec::new();
        for node in &mut self.nodes {
            let Some(child) = &mut node.child else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                new.push(format!(
                    "{} exited on its own ({}); see {}",
                    node.id,
                    describe(status),
                    node.log.display()
                ));
                node.child = None;
            }
        }
        for mount in &mut self.mounts {
            if let Some(status) = mount.exited() {
                new.push(format!(
                    "{}'s keel-powerfs exited on its own ({}); see {}",
                    mount.node(),
                    describe(status),
                    mount.log().display()
                ));
            }
        }
        self.unexpected_exits.extend(new.iter().cloned());
        new
    }

    pub fn unexpected_exits(&self) -> &[String] {
        &self.unexpected_exits
    }

    /// Log file of a node the harness started.
    pub fn log_path(&self, id: NodeId) -> Option<&Path> {
        self.nodes
            .iter()
            .find(|n| n.id == id && !n.log.as_os_str().is_empty())
            .map(|n| n.log.as_path())
    }

    /// SIGCONT, SIGTERM, then SIGKILL what is left after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                signal(child, libc::SIGCONT);
                signal(child, libc::SIGTERM);
            }
            node.paused = false;
        }
        let until = Instant::now() + grace;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        eprintln!("keel-jepsen: {} did not stop in time; killing it", node.id);
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
        // Only once no node holds a file there.
        for mount in &mut self.mounts {
            if let Some(note) = mount.stop(UNMOUNT_GRACE) {
                eprintln!("keel-jepsen: {note}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_refuses_what_it_cannot_control_and_bad_urls() {
        let mut c = Cluster {
            mode: Mode::Attached,
            nodes: vec![NodeProc {
                id: NodeId(1),
                http: "http://127.0.0.1:1".into(),
                command: Vec::new(),
                log: PathBuf::new(),
                data_dir: PathBuf::new(),
                child: None,
                paused: false,
            }],
            mounts: Vec::new(),
            netns: None,
            unexpected_exits: Vec::new(),
        };
        let err = c.kill(NodeId(1)).unwrap_err().to_string();
        assert!(err.contains("--nodes-url"), "{err}");
        assert!(c.pause(NodeId(1)).is_err());
        assert!(c.restart(NodeId(1)).is_err());
        assert_eq!(c.log_path(NodeId(1)), None);
        // Nothing listens on port 1.
        assert!(Cluster::attach(&["http://127.0.0.1:1".into()]).is_err());
    }

    #[test]
    fn netns_configs_get_namespace_addresses_and_keep_their_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let configs = crate::cli::init::run(tmp.path(), 3, 7100, true).unwrap();
        let plan = NetnsPlan::new("t", [10, 77, 0], 3, super::super::netns::Firewall::Nft);
        let config = place_in_namespaces(&configs[1], &plan).unwrap();
        assert_eq!(
            config.address(NodeId(3)).unwrap().http.to_string(),
            "10.77.0.13:8000"
        );
        let loaded = Config::load(&configs[1]).unwrap();
        assert_eq!(loaded.nodes, config.nodes);
        assert_eq!(loaded.data_dir, tmp.path().join("n2/data"));
        assert_eq!(loaded.tls.dir, tmp.path().join("n2"));
        // Rewriting it again leaves the paths alone.
        place_in_namespaces(&configs[1], &plan).unwrap();
        assert_eq!(
            Config::load(&configs[1]).unwrap().data_dir,
            tmp.path().join("n2/data")
        );
    }

    #[test]
    fn picked_ports_are_free_and_in_range() {
        let base = pick_base_port(3, 12345).unwrap();
        assert!((9000..9800).contains(&base));
        assert_eq!(crate::config::free_base_port(3, [base]), Some(base));
    }
}
