//! A node's configuration: TOML file and/or command-line flags.
//!
//! Every node of a cluster can share one file listing all nodes; `node`
//! (or `--node`) picks which one this process is. Relative paths in the file
//! are relative to the file's own directory (`keel init` writes each node's
//! config next to its certificates and data, so the directory can be moved);
//! paths given as flags are relative to the working directory.
//!
//! ```toml
//! node = 1
//! data_dir = "data"         # carries the node's IDENTITY (see storage::identity)
//! partitions = 4
//! replication = 2
//! chaos = false
//! # Partition snapshots (see storage::snapshot): where they are kept
//! # (default "<data_dir>/snapshots"), how many applied records between two
//! # scheduled ones (0: only on demand, `keelctl snapshot`), how many to keep.
//! snapshot_dir = "snapshots"
//! snapshot_every_records = 50000
//! snapshot_retain = 2
//! # How long a request's result is kept for retries with the same
//! # Idempotency-Key (seconds of the log's clock; default 24 h).
//! idempotency_retention_secs = 86400
//! # sled's page cache for the partition state (MiB, at least 1): most of a
//! # loaded node's memory; it fills up to this size and stays there.
//! state_cache_mib = 256
//!
//! [tls]
//! dir = "."                 # ca.pem, n<id>.pem, n<id>.key
//!
//! [[nodes]]
//! id = 1
//! quic = "127.0.0.1:7101"
//! http = "127.0.0.1:8101"
//! # ... one [[nodes]] entry per node
//! ```

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid config {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeAddress {
    pub id: u32,
    /// Address peers reach this node's QUIC endpoint at.
    pub quic: SocketAddr,
    /// Address clients reach this node's HTTP ingress at.
    pub http: SocketAddr,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsPaths {
    /// Directory holding `ca.pem`, `n<id>.pem` and `n<id>.key`.
    pub dir: PathBuf,
}

/// Failure-detection and retry timings (milliseconds in the file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Timing {
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keep_alive_ms: 250,
            idle_timeout_ms: 1000,
            request_timeout_ms: 5000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which of `nodes` this process is (so one file can serve every node).
    pub node: u32,
    /// Where this node's durable state lives; it must carry this node's
    /// identity (`keel init` creates it), or the node refuses to start.
    pub data_dir: PathBuf,
    /// Number of partitions, and so of logs.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Copies of each record a log keeps (`r`).
    #[serde(default = "default_replication")]
    pub replication: u8,
    /// Expose `POST /chaos/*` (fault injection). Off by default.
    #[serde(default)]
    pub chaos: bool,
    /// Where the CA certificate and this node's certificate and key are.
    pub tls: TlsPaths,
    /// Failure detection and request deadlines.
    #[serde(default)]
    pub timing: Timing,
    /// Every member of the (static) cluster, this node included.
    pub nodes: Vec<NodeAddress>,
    /// Where partition snapshots are kept; `None`: `<data_dir>/snapshots`
    /// (see [`Config::snapshot_dir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_dir: Option<PathBuf>,
    /// A partition is snapshotted once it applied this many records since
    /// its last snapshot; 0 turns the schedule off (on demand only).
    #[serde(default = "default_snapshot_every_records")]
    pub snapshot_every_records: u64,
    /// How many snapshots of each partition are kept (at least 1): the
    /// newest may be the one a peer is fetching when another is taken.
    #[serde(default = "default_snapshot_retain")]
    pub snapshot_retain: u32,
    /// How long the result of a request with an `idempotency-key` is kept
    /// for its retries (seconds, at least 1), so that the dedup table stays
    /// bounded. Only the partition leader's value counts: it writes it into
    /// each record it appends and every replica expires by the record, so
    /// nodes that disagree stay consistent; a client must retry within the
    /// smallest value any node that may lead has.
    #[serde(default = "default_idempotency_retention_secs")]
    pub idempotency_retention_secs: u64,
    /// sled's page cache for `state/` (MiB): bounds most of a loaded
    /// node's resident memory, so operators size it to the host.
    #[serde(default = "default_state_cache_mib")]
    pub state_cache_mib: u64,
}

fn default_partitions() -> u32 {
    4
}
/// Applied records between two scheduled snapshots.
pub const DEFAULT_SNAPSHOT_EVERY_RECORDS: u64 = 50_000;
/// Snapshots kept per partition.
pub const DEFAULT_SNAPSHOT_RETAIN: u32 = 2;
fn default_snapshot_every_records() -> u64 {
    DEFAULT_SNAPSHOT_EVERY_RECORDS
}
fn default_snapshot_retain() -> u32 {
    DEFAULT_SNAPSHOT_RETAIN
}
/// How long idempotency-key results are kept (seconds): 24 h.
pub const DEFAULT_IDEMPOTENCY_RETENTION_SECS: u64 =
    crate::actors::partition_processor::core::USER_KEY_RETENTION_MS / 1000;
fn default_idempotency_retention_secs() -> u64 {
    DEFAULT_IDEMPOTENCY_RETENTION_SECS
}
/// sled's page cache unless configured (MiB).
pub const DEFAULT_STATE_CACHE_MIB: u64 = crate::storage::DEFAULT_STATE_CACHE_BYTES / (1024 * 1024);
fn default_state_cache_mib() -> u64 {
    DEFAULT_STATE_CACHE_MIB
}
fn default_replication() -> u8 {
    2
}

impl Config {
    /// Reads a config file and resolves its relative paths (`data_dir`,
    /// `tls.dir`) against the file's own directory, so a node directory
    /// made by `keel init` works wherever it is copied to. The result holds
    /// absolute paths.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config = Self::load_as_written(path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.data_dir = resolve(base, &config.data_dir);
        config.tls.dir = resolve(base, &config.tls.dir);
        config.snapshot_dir = config.snapshot_dir.map(|d| resolve(base, &d));
        Ok(config)
    }

    /// Reads a config file with its paths exactly as written (relative to
    /// the file's directory), for tools that change a file and write it
    /// back.
    pub fn load_as_written(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn me(&self) -> NodeId {
        NodeId(self.node)
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|n| NodeId(n.id)).collect();
        ids.sort();
        ids
    }

    pub fn address(&self, id: NodeId) -> Option<&NodeAddress> {
        self.nodes.iter().find(|n| n.id == id.0)
    }

    /// Where partition snapshots are kept.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.snapshot_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("snapshots"))
    }

    /// How long idempotency-key results are kept, in ms of log clock.
    pub fn idempotency_retention_ms(&self) -> u64 {
        self.idempotency_retention_secs.saturating_mul(1000)
    }

    /// sled's page cache for `state/`, in bytes.
    pub fn state_cache_bytes(&self) -> u64 {
        self.state_cache_mib.saturating_mul(1024 * 1024)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.timing.request_timeout_ms)
    }

    /// Checks everything that can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.nodes.is_empty() {
            return bad("no [[nodes]] listed".into());
        }
        let mut ids: Vec<u32> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.contains(&0) {
            return bad(format!(
                "node ids must be unique and start at 1, got {ids:?}"
            ));
        }
        if self.address(self.me()).is_none() {
            return bad(format!(
                "this node is N{} but the cluster lists only {}",
                self.node,
                ids.iter()
                    .map(|i| format!("N{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut addrs: Vec<SocketAddr> = self.nodes.iter().flat_map(|n| [n.quic, n.http]).collect();
        addrs.sort();
        if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("address {} is used twice", w[0]));
        }
        if self.partitions == 0 || self.partitions > 1024 {
            return bad(format!(
                "partitions must be in 1..=1024, got {}",
                self.partitions
            ));
        }
        if self.replication == 0 || self.replication as usize > self.nodes.len() {
            return bad(format!(
                "replication must be in 1..={} (the node count), got {}",
                self.nodes.len(),
                self.replication
            ));
        }
        if self.timing.idle_timeout_ms <= self.timing.keep_alive_ms {
            return bad("timing.idle_timeout_ms must exceed timing.keep_alive_ms".into());
        }
        if self.idempotency_retention_secs == 0 {
            return bad("idempotency_retention_secs must be at least 1".into());
        }
        if self.state_cache_mib == 0 {
            return bad("state_cache_mib must be at least 1".into());
        }
        if self.snapshot_retain == 0 {
            return bad("snapshot_retain must be at least 1".into());
        }
        if self
            .snapshot_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return bad(
                "snapshot_dir must not be empty (leave it out for <data_dir>/snapshots)".into(),
            );
        }
        Ok(())
    }

    /// A loopback cluster of `n` nodes with ports from `base` (QUIC `base+i`,
    /// HTTP `base+100+i`), data under `root`.
    pub fn local_cluster(n: u32, node: u32, root: &Path, base: u16) -> Self {
        Config {
            node,
            data_dir: root.join(format!("n{node}")),
            partitions: default_partitions(),
            replication: default_replication().min(n as u8),
            chaos: false,
            tls: TlsPaths {
                dir: root.join("certs"),
            },
            timing: Timing::default(),
            snapshot_dir: None,
            snapshot_every_records: DEFAULT_SNAPSHOT_EVERY_RECORDS,
            snapshot_retain: DEFAULT_SNAPSHOT_RETAIN,
            idempotency_retention_secs: DEFAULT_IDEMPOTENCY_RETENTION_SECS,
            state_cache_mib: DEFAULT_STATE_CACHE_MIB,
            nodes: (1..=n)
                .map(|i| NodeAddress {
                    id: i,
                    quic: SocketAddr::from(([127, 0, 0, 1], base + i as u16)),
                    http: SocketAddr::from(([127, 0, 0, 1], base + 100 + i as u16)),
                })
                .collect(),
        }
    }
}

/// `path` if absolute, else `base/path`, made absolute against the working
/// directory (left relative only if the working directory is unknown).
fn resolve(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// The first of `candidates` at which a local cluster of `nodes` finds all
/// its ports free on loopback now: QUIC `base+i`, HTTP `base+100+i` (the
/// layout of [`Config::local_cluster`]). Callers choose the candidates so
/// that concurrent processes start their search apart.
pub fn free_base_port(nodes: u32, candidates: impl IntoIterator<Item = u16>) -> Option<u16> {
    candidates.into_iter().find(|&base| {
        (1..=nodes as u16).all(|i| {
            let (quic, http) = (base.saturating_add(i), base.saturating_add(100 + i));
            std::net::UdpSocket::bind(("127.0.0.1", quic)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", http)).is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_cluster_config_round_trips_and_validates() {
        let c = Config::local_cluster(3, 2, Path::new("/tmp/k"), 7100);
        c.validate().unwrap();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.address(NodeId(3)).unwrap().http.port(), 7203);
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n1");
        std::fs::create_dir(&dir).unwrap();
        let mut c = Config::local_cluster(3, 1, Path::new("unused"), 7100);
        c.data_dir = PathBuf::from("data");
        c.tls.dir = PathBuf::from(".");
        let path = dir.join("n1.toml");
        std::fs::write(&path, c.to_toml()).unwrap();

        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.data_dir, dir.join("data"));
        assert_eq!(loaded.tls.dir, dir.join("."));
        assert_eq!(Config::load_as_written(&path).unwrap(), c);
        assert_eq!(loaded.snapshot_dir(), dir.join("data/snapshots"));
        assert_eq!(loaded.snapshot_every_records, 50_000, "the default");
        assert_eq!(loaded.snapshot_retain, 2, "the default");
        assert_eq!(loaded.idempotency_retention_secs, 86_400, "the default");
        c.snapshot_dir = Some(PathBuf::from("snaps"));
        std::fs::write(&path, c.to_toml()).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().snapshot_dir(),
            dir.join("snaps")
        );

        // Absolute paths stay as they are.
        c.data_dir = PathBuf::from("/srv/keel/data");
        std::fs::write(&path, c.to_toml()).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().data_dir,
            PathBuf::from("/srv/keel/data")
        );
    }

    #[test]
    fn invalid_configs_say_what_is_wrong() {
        let mut c = Config::local_cluster(3, 4, Path::new("/tmp/k"), 7100);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("this node is N4 but the cluster lists only N1, N2, N3"),
            "{err}"
        );
        c.node = 1;
        c.replication = 4;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("replication"));
        c.replication = 2;
        c.nodes[1].quic = c.nodes[0].quic;
        assert!(c.validate().unwrap_err().to_string().contains("used twice"));
        c.nodes = Config::local_cluster(3, 1, Path::new("/tmp/k"), 7100).nodes;
        c.snapshot_retain = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("snapshot_retain"));
        c.snapshot_retain = 1;
        c.validate().unwrap();
        c.idempotency_retention_secs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("idempotency_retention_secs"));
        c.idempotency_retention_secs = 300;
        c.validate().unwrap();
        let err = toml::from_str::<Config>("node = 1\nbogus = 3").unwrap_err();
        assert!(err.message().contains("unknown field"), "{}", err.message());
    }
}
