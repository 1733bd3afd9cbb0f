//! `keel node`: one node process. Logs with `RUST_LOG` (default `info`),
//! stops cleanly on SIGINT/SIGTERM, exits non-zero if its supervision tree
//! gives up, its storage can no longer sync, or it cannot start (one clear
//! error line).

use crate::config::{Config, NodeAddress, Timing, TlsPaths};
use crate::node::{Node, NodeOptions};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// TOML config (see `keel init`); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (N1 or 1).
    #[arg(long)]
    pub node: Option<crate::types::NodeId>,
    /// Data directory (relative to the working directory); it must carry
    /// this node's identity, which only `keel init` creates.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory with ca.pem, n<id>.pem, n<id>.key (relative to the working
    /// directory).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// A cluster member: `ID=QUIC_ADDR,HTTP_ADDR` (repeat; include this node).
    #[arg(long = "member", value_parser = parse_member)]
    pub members: Vec<NodeAddress>,
    /// Number of partitions (and logs).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Expose `POST /chaos/*` fault injection.
    #[arg(long)]
    pub chaos: bool,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    pub http_workers: usize,
    /// Rejoin after a lost disk: an empty (or missing) data directory is
    /// taken as this node's; the node fences what it may have held, learns
    /// the register from a majority before it votes, and copies back its
    /// log records (see `keelctl status`). Harmless on a directory that
    /// holds this node's data (it starts as usual).
    #[arg(long)]
    pub rejoin: bool,
    /// Seconds a result is kept for retries with the same idempotency-key
    /// (default 86400); only a partition leader's value counts.
    #[arg(long)]
    pub idempotency_retention_secs: Option<u64>,
    /// MiB of sled page cache for the partition state (default 256): most
    /// of a loaded node's memory.
    #[arg(long)]
    pub state_cache_mib: Option<u64>,
}

fn parse_member(s: &str) -> Result<NodeAddress, String> {
    let (id, addrs) = s.split_once('=').ok_or("expected ID=QUIC_ADDR,HTTP_ADDR")?;
    let id: crate::types::NodeId = id.parse()?;
    let (quic, http) = addrs
        .split_once(',')
        .ok_or("expected ID=QUIC_ADDR,HTTP_ADDR")?;
    let quic: SocketAddr = quic
        .parse()
        .map_err(|e| format!("bad QUIC address {quic:?}: {e}"))?;
    let http: SocketAddr = http
        .parse()
        .map_err(|e| format!("bad HTTP address {http:?}: {e}"))?;
    Ok(NodeAddress {
        id: id.0,
        quic,
        http,
    })
}

/// The effective config: file, then flags.
pub fn resolve(args: &NodeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let Some(node) = args.node else {
                bail!("give --config FILE, or --node, --data-dir, --tls-dir and --member flags");
            };
            Config {
                node: node.0,
                data_dir: args
                    .data_dir
                    .clone()
                    .context("--data-dir is required without --config")?,
                partitions: 4,
                replication: 2,
                chaos: false,
                tls: TlsPaths {
                    dir: args
                        .tls_dir
                        .clone()
                        .context("--tls-dir is required without --config")?,
                },
                timing: Timing::default(),
                nodes: Vec::new(),
                snapshot_dir: None,
                snapshot_every_records: crate::config::DEFAULT_SNAPSHOT_EVERY_RECORDS,
                snapshot_retain: crate::config::DEFAULT_SNAPSHOT_RETAIN,
                idempotency_retention_secs: crate::config::DEFAULT_IDEMPOTENCY_RETENTION_SECS,
                state_cache_mib: crate::config::DEFAULT_STATE_CACHE_MIB,
            }
        }
    };
    if let Some(n) = args.node {
        config.node = n.0;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(d) = &args.tls_dir {
        config.tls.dir = d.clone();
    }
    if !args.members.is_empty() {
        config.nodes = args.members.clone();
    }
    if let Some(p) = args.partitions {
        config.partitions = p;
    }
    if let Some(secs) = args.idempotency_retention_secs {
        config.idempotency_retention_secs = secs;
    }
    if let Some(mib) = args.state_cache_mib {
        config.state_cache_mib = mib;
    }
    config.replication = config.replication.min(config.nodes.len().max(1) as u8);
    config.chaos |= args.chaos;
    config.validate()?;
    Ok(config)
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one node serving `objects` until SIGINT or SIGTERM.
pub fn run(args: NodeArgs, objects: crate::objects::Objects) -> Result<()> {
    init_tracing();
    let config = resolve(&args)?;
    let mut opts = NodeOptions::from_config(config)?;
    opts.objects = objects;
    opts.http_workers = args.http_workers;
    opts.rejoin = args.rejoin;
    let gave_up: Arc<Mutex<Option<String>>> = Arc::default();
    let system = actix::System::new();
    let outcome = system.block_on({
        let gave_up = gave_up.clone();
        async move {
            let on_give_up = {
                let gave_up = gave_up.clone();
                move |reason: String| {
                    *gave_up.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("supervision tree gave up: {reason}"));
                    actix::System::current().stop_with_code(2);
                }
            };
            let node = Node::start(opts, on_give_up).await?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
            // A failed sync poisons storage for good (nothing written before
            // it can be trusted): only a restart, which re-reads what is on
            // disk, helps. Exit non-zero so the operator or init restarts us.
            let storage = node.storage.clone();
            let storage_failed = async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    if let Some(reason) = storage.failure() {
                        return reason;
                    }
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = node.root.stopped() => {}
                reason = storage_failed => {
                    tracing::error!("storage failed: {reason}; stopping");
                    *gave_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("storage failed: {reason}"));
                }
            }
            node.shutdown().await;
            Ok::<_, anyhow::Error>(())
        }
    });
    outcome?;
    if let Some(reason) = gave_up.lock().unwrap_or_else(|p| p.into_inner()).take() {
        bail!("{reason}");
    }
    Ok(())
}
