//! `keel local`: a cluster of node processes on loopback, laid out by
//! `keel init` under one directory (the CA, one directory per node, and the
//! nodes' logs). Waits until every partition
//! has a leader, prints how to call it, and stops every node on Ctrl-C.
//! Running it again reuses the data: state survives.

use super::{init, table};
use crate::node::status::ClusterStatus;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Where certificates, configs, data and logs go.
    #[arg(long, default_value = "keel-data")]
    pub dir: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// First port: QUIC on base+i, HTTP on base+100+i.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Expose the chaos endpoints (fault injection) on every node.
    #[arg(long)]
    pub chaos: bool,
}

fn port_free(addr: std::net::SocketAddr) -> Result<()> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .with_context(|| {
            format!(
                "port {} is in use (is another keel cluster running?)",
                addr.port()
            )
        })?;
    std::net::UdpSocket::bind(std::net::SocketAddr::new(addr.ip(), addr.port() - 100))
        .map(drop)
        .with_context(|| {
            format!(
                "UDP port {} is in use (is another keel cluster running?)",
                addr.port() - 100
            )
        })
}

struct Nodes(Vec<(u32, Child)>);

impl Nodes {
    /// SIGTERM, then SIGKILL whatever is left after `grace`.
    fn stop(&mut self, grace: Duration) {
        for (_, child) in &self.0 {
            // SAFETY: plain syscall on a pid we own.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for (i, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("N{i} did not stop in time; killing it");
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

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

pub fn fetch_status(http: &str) -> Result<ClusterStatus> {
    let resp = ureq::get(&format!("{http}/cluster/status"))
        .timeout(Duration::from_secs(5))
        .call()
        .with_context(|| format!("GET {http}/cluster/status"))?;
    resp.into_json().context("decoding /cluster/status")
}

/// Whether every partition has a node in `Leader` mode.
pub fn all_partitions_led(status: &ClusterStatus) -> bool {
    let mut led = std::collections::BTreeSet::new();
    let mut partitions = std::collections::BTreeSet::new();
    for n in status.nodes.iter().filter_map(|n| n.status.as_ref()) {
        for p in &n.partitions {
            partitions.insert(p.partition);
            if p.mode == "Leader" {
                led.insert(p.partition);
            }
        }
    }
    !partitions.is_empty() && led == partitions
}

fn spawn(exe: &Path, dir: &Path, i: u32, config: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("n{i}.log")))
        .with_context(|| format!("opening {}/n{i}.log", dir.display()))?;
    Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting N{i}"))
}

/// Starts the cluster of this binary's nodes (they serve `objects`, whose
/// routes the hints show) and waits for Ctrl-C.
pub fn run(args: LocalArgs, objects: &crate::objects::Objects) -> Result<()> {
    let configs = init::run(&args.dir, args.nodes, args.base_port, args.chaos)?;
    let config = crate::config::Config::load(&configs[0])?;
    for n in &config.nodes {
        port_free(n.http)?;
    }
    let exe = std::env::current_exe().context("locating the keel executable")?;
    let mut nodes = Nodes(Vec::new());
    for (i, path) in (1..).zip(&configs) {
        nodes.0.push((i, spawn(&exe, &args.dir, i, path)?));
    }
    let urls: Vec<String> = config
        .nodes
        .iter()
        .map(|n| format!("http://{}", n.http))
        .collect();
    println!(
        "keel: starting {} nodes; data, configs and logs in {}",
        args.nodes,
        args.dir.display()
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        for (i, child) in &mut nodes.0 {
            if let Some(code) = child.try_wait()? {
                bail!(
                    "N{i} exited during start-up ({code}); see {}/n{i}.log",
                    args.dir.display()
                );
            }
        }
        if let Ok(status) = fetch_status(&urls[0]) {
            if all_partitions_led(&status) {
                break status;
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "not every partition had a leader within 60 s; see the logs in {}",
                args.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    println!("\nIngress (any node accepts any request):");
    for u in &urls {
        println!("  {u}");
    }
    println!("\nTry:");
    if objects.names().any(|n| n == "Counter") {
        println!("  curl -s -X POST {}/Counter/visits/add -d 1", urls[0]);
        println!("  curl -s {}/Counter/visits/get", urls[1 % urls.len()]);
        println!(
            "  curl -s -X POST {}/Register/r1/cas -d '{{\"expect\":null,\"value\":7}}'",
            urls[0]
        );
    } else {
        println!(
            "  POST (GET for readers) {}/{{Object}}/{{key}}/{{handler}} with a JSON body; served:",
            urls[0]
        );
        println!("    {}", objects.describe());
    }
    println!(
        "  cargo run --release --bin keelctl -- --url {} status",
        urls[0]
    );
    println!("\n{}", table::cluster_status(&status));
    println!("Ctrl-C stops all {} nodes.", args.nodes);

    let (tx, rx) = std::sync::mpsc::channel();
    let _ = ctrlc_channel(tx);
    loop {
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            println!("\nstopping...");
            nodes.stop(Duration::from_secs(10));
            nodes.0.clear();
            println!("stopped; state kept in {}", args.dir.display());
            return Ok(());
        }
        for (i, child) in &mut nodes.0 {
            if let Some(code) = child.try_wait()? {
                eprintln!("N{i} exited ({code}); see {}/n{i}.log", args.dir.display());
            }
        }
        nodes
            .0
            .retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
        if nodes.0.is_empty() {
            bail!("every node exited");
        }
    }
}

/// Delivers one message on SIGINT or SIGTERM.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    let _ = tx.send(());
                });
            }
        })?;
    Ok(())
}
