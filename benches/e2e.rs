//! End-to-end requests per second through the HTTP ingress.
//!
//! Starts three `keel node` processes from the release binary (as `keel
//! local` does: separate processes, each with its own runtime, HTTP workers,
//! QUIC endpoint and sled database, on loopback), waits until every
//! partition has a leader, then drives `POST /Counter/{key}/add` over 1000
//! keys through all three ingresses with HTTP/1.1 keep-alive connections.
//! Separate processes rather than the in-process rig because that is how
//! keel runs, and it lets the generator's CPU be told apart from the nodes'.
//!
//! Run with `cargo bench --bench e2e`. Cargo builds the node binary for the
//! bench (`target/release/keel`, the release profile's settings), so this is
//! the same as `cargo build --release --bins && cargo bench --bench e2e`.
//! `KEEL_BIN` overrides the binary, `KEEL_BENCH_SECS` the load phase (10 s),
//! `KEEL_BENCH_CLIENTS` the number of connections (96), and `KEEL_NODE_ARGS`
//! adds flags to every `keel node` (e.g. `--http-workers 1`).
//!
//! Phases: a ceiling check (requests the ingress refuses at once, 400: the
//! generator and HTTP stack alone), one client with one request at a time,
//! then the concurrent load. Afterwards every counter is read back: the sum
//! must lie between the acknowledged adds and the acknowledged plus the
//! unknown-outcome ones.
//!
//! `KEEL_BENCH_SCALING=1` runs the scaling grid instead: a fresh cluster at
//! 1, 4 and 16 partitions, each over 100 and 100,000 keys, the same
//! concurrent load on each, with every node's RSS under load and after 5 s
//! at rest. Adding `KEEL_BENCH_SOAK_SECS=600` runs one cluster (4
//! partitions, 100,000 keys) under that load for so long instead, printing
//! throughput, p99 and every node's RSS each 30 s.

mod common;

use anyhow::{bail, Context, Result};
use common::http::Conn;
use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

const KEYS: u64 = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let load_secs = phase_secs(10);
    let clients = bench_clients(1..=4096, 96);
    let exe = node_binary()?;
    if std::env::var_os("KEEL_BENCH_SCALING").is_some() {
        return scaling(&exe, clients, load_secs);
    }
    println!("keel e2e benchmark: 3 `keel node` processes on loopback ({}), r = 2, 4 partitions, POST /Counter/{{key}}/add over {KEYS} keys", exe.display());
    println!(
        "machine: {}; load average at start: {}",
        machine(),
        load_average()
    );

    let dir = tempfile::Builder::new().prefix("keel-e2e-").tempdir()?;
    let base = free_port_base()?;
    let configs = keel::cli::init::run(dir.path(), 3, base, false)?;
    let mut cluster = Cluster::start(&exe, dir.path(), &configs)?;
    let config = keel::config::Config::load(&configs[0])?;
    let ingresses: Vec<SocketAddr> = config.nodes.iter().map(|n| n.http).collect();
    let url = format!("http://{}", ingresses[0]);
    cluster.wait_led(&url, dir.path())?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut fsyncs = fsync_samples(dir.path(), 100)?;
    let mut acked = 0usize;
    let mut unknown = 0usize;

    // Warm-up: leaders' sequencers in place, connections and caches hot.
    let warm = rt.block_on(drive(&ingresses, 16, Duration::from_secs(2), add_request));
    acked += warm.count(200);
    unknown += warm.unknown();
    if warm.count(200) == 0 {
        bail!("no request succeeded during warm-up: {:?}", warm.statuses);
    }

    let ceiling = rt.block_on(drive(
        &ingresses,
        clients,
        Duration::from_secs(2),
        |_, _| ("POST", "/Counter/k/add".to_string(), b"\"x\"".to_vec()),
    ));
    let single = rt.block_on(drive(
        &ingresses[..1],
        1,
        Duration::from_secs(3),
        add_request,
    ));
    acked += single.count(200);
    unknown += single.unknown();
    // The same, split by where the key's leader is: N1 itself, or another
    // node (one more QUIC round trip for the forwarded request).
    let (local_keys, forwarded_keys) = keys_by_leader(&url)?;
    let mut split = Vec::new();
    for (name, keys) in [("led by N1", local_keys), ("forwarded", forwarded_keys)] {
        if keys.is_empty() {
            continue;
        }
        let run = rt.block_on(drive(
            &ingresses[..1],
            1,
            Duration::from_secs(2),
            move |_, i| {
                let key = keys[i % keys.len()];
                ("POST", format!("/Counter/k{key}/add"), b"1".to_vec())
            },
        ));
        acked += run.count(200);
        unknown += run.unknown();
        split.push((name, run));
    }

    let counters_before = rt.block_on(scrape(&ingresses))?;
    let cpu_nodes_before = cluster.cpu();
    let cpu_gen_before = cpu_time();
    let load = rt.block_on(drive(&ingresses, clients, load_secs, add_request));
    let gen_cores = (cpu_time() - cpu_gen_before).as_secs_f64() / load.elapsed.as_secs_f64();
    let rss_after_load = cluster.rss_mib();
    let node_cores = (cluster.cpu() - cpu_nodes_before).as_secs_f64() / load.elapsed.as_secs_f64();
    acked += load.count(200);
    unknown += load.unknown();
    let counters = rt.block_on(scrape(&ingresses))?.since(&counters_before);

    fsyncs.extend(fsync_samples(dir.path(), 100)?);
    let fsync = Latency::of(&mut fsyncs);
    cluster.check_alive()?;
    let total = rt.block_on(sum_counters(&ingresses))?;

    let rows = vec![
        Row::fsync(fsync, dir.path()),
        ceiling.row("ceiling: 400 at ingress", clients, fsync.p50, 400, "bad argument: generator + HTTP only, nothing appended".into()),
        single.row("single client", 1, fsync.p50, 200, "one request at a time, via N1's ingress".into()),
        load.row(
            "concurrent",
            clients,
            fsync.p50,
            200,
            format!("over 3 ingresses; CPU: nodes {node_cores:.2} cores, generator {gen_cores:.2} cores"),
        ),
    ];
    println!();
    print_table("requests", &rows);
    for (name, run) in &split {
        println!(
            "single client, keys {name}: p50 {}, p99 {} ({} requests)",
            ms(run.latency().p50),
            ms(run.latency().p99),
            run.count(200)
        );
    }
    println!("ceiling phase answers: {:?}", ceiling.statuses_summary());
    println!(
        "concurrent phase, all nodes: {} append calls ({:.1} records each), {} group-commit flushes ({:.1} requests per flush)",
        counters.appends,
        counters.records as f64 / counters.appends.max(1) as f64,
        counters.flushes,
        load.count(200) as f64 / counters.flushes.max(1) as f64,
    );
    println!(
        "non-200 answers in the concurrent phase: {:?}",
        load.errors()
    );
    println!(
        "counters: sum {total}, acknowledged adds {acked}, unknown outcome {unknown}: {}",
        if (acked as i64..=(acked + unknown) as i64).contains(&total) {
            "consistent"
        } else {
            "INCONSISTENT"
        }
    );
    println!("RSS of N1/N2/N3 at the end of the concurrent phase: {rss_after_load} MiB");
    println!("load average at end: {}", load_average());
    let s = single.latency();
    let l = load.latency();
    println!(
        "\nsummary: {clients} clients: {:.0} req/s (goal >= 5000), p50 {}, p99 {} (goal < 50 ms); single client p50 {} = {:.1}x fdatasync p50 {} (goal <= 5x)",
        load.per_sec(200),
        ms(l.p50),
        ms(l.p99),
        ms(s.p50),
        times(s.p50, fsync.p50),
        ms(fsync.p50),
    );
    cluster.stop();
    if !(acked as i64..=(acked + unknown) as i64).contains(&total) {
        bail!(
            "counter sum {total} is outside [{acked}, {}]",
            acked + unknown
        );
    }
    Ok(())
}

/// The `keel` binary cargo built for this bench (`target/release/keel`, same
/// profile settings as `cargo build --release`), or `KEEL_BIN`.
fn node_binary() -> Result<PathBuf> {
    let exe = std::env::var_os("KEEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keel")));
    if !exe.is_file() {
        bail!(
            "{} not found: run `cargo build --release --bins`",
            exe.display()
        );
    }
    Ok(exe)
}

/// The bench's keys whose partition N1 leads, and the others.
fn keys_by_leader(url: &str) -> Result<(Vec<u64>, Vec<u64>)> {
    let status = keel::cli::local::fetch_status(url)?;
    let mut leaders = std::collections::HashMap::new();
    for node in status.nodes.iter().filter_map(|n| n.status.as_ref()) {
        for p in node.partitions.iter().filter(|p| p.mode == "Leader") {
            leaders.insert(p.partition, node.node);
        }
    }
    let partitions = leaders.len().max(1) as u32;
    Ok((0..KEYS).partition(|k| {
        let p = keel::ingress::http::partition_of("Counter", &format!("k{k}"), partitions);
        leaders.get(&p) == Some(&keel::types::NodeId(1))
    }))
}

/// QUIC `base+i` and HTTP `base+100+i` all free, below 32768 where the
/// ephemeral range begins.
fn free_port_base() -> Result<u16> {
    let slot = (std::process::id() % 50) as u16;
    let candidates = (0..200u16).map(|n| 20_000 + slot * 200 + (n % 40) * 5);
    keel::config::free_base_port(3, candidates).context("no free port range")
}

/// The node processes; stopped (SIGTERM, then SIGKILL) when dropped.
struct Cluster {
    children: Vec<Child>,
}

impl Cluster {
    fn start(exe: &Path, dir: &Path, configs: &[PathBuf]) -> Result<Cluster> {
        let mut cluster = Cluster {
            children: Vec::new(),
        };
        for (i, config) in (1..).zip(configs) {
            let log = std::fs::File::create(dir.join(format!("n{i}.log")))?;
            let child = Command::new(exe)
                .arg("node")
                .arg("--config")
                .arg(config)
                .args(
                    std::env::var("KEEL_NODE_ARGS")
                        .ok()
                        .iter()
                        .flat_map(|a| a.split_whitespace()),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting N{i}"))?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// Waits (60 s at most) until every partition has a leader.
    fn wait_led(&mut self, url: &str, dir: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if keel::cli::local::fetch_status(url)
                .is_ok_and(|s| keel::cli::local::all_partitions_led(&s))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "not every partition had a leader within 60 s; logs in {}",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every node's resident set, in MiB, as `a/b/c`.
    fn rss_mib(&self) -> String {
        self.children
            .iter()
            .map(|c| {
                std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|kb| kb.parse::<u64>().ok())
                    })
                    .map_or("?".to_string(), |kb| (kb / 1024).to_string())
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn check_alive(&mut self) -> Result<()> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!("N{} exited: {status}", i + 1);
            }
        }
        Ok(())
    }

    /// CPU time used by the node processes so far.
    fn cpu(&self) -> Duration {
        self.children
            .iter()
            .filter_map(|c| cpu_time_of(c.id()))
            .sum()
    }

    fn stop(&mut self) {
        for c in &self.children {
            // SAFETY: a plain syscall on a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `POST /Counter/k<n>/add 1`, the key drawn per client from a fixed sequence.
fn add_request(client: usize, i: usize) -> (&'static str, String, Vec<u8>) {
    add_over(KEYS)(client, i)
}

/// [`add_request`] over `keys` keys.
fn add_over(keys: u64) -> impl Fn(usize, usize) -> (&'static str, String, Vec<u8>) + Clone {
    move |client, i| {
        let key = (client as u64 * 7919 + i as u64 * 104_729) % keys;
        ("POST", format!("/Counter/k{key}/add"), b"1".to_vec())
    }
}

/// The scaling grid (or, with `KEEL_BENCH_SOAK_SECS`, one long run).
fn scaling(exe: &Path, clients: usize, load_secs: Duration) -> Result<()> {
    let soak = std::env::var("KEEL_BENCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let grid: &[(u32, u64)] = if soak.is_some() {
        &[(4, 100_000)]
    } else {
        &[
            (1, 100),
            (1, 100_000),
            (4, 100),
            (4, 100_000),
            (16, 100),
            (16, 100_000),
        ]
    };
    println!("keel e2e scaling: 3 `keel node` processes on loopback, r = 2, POST /Counter/{{key}}/add, {clients} clients over 3 ingresses");
    println!(
        "machine: {}; load average at start: {}",
        machine(),
        load_average()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let probe = tempfile::Builder::new().prefix("keel-scaling-").tempdir()?;
    let fsync = Latency::of(&mut fsync_samples(probe.path(), 100)?);
    let mut rows = vec![Row::fsync(fsync, probe.path())];
    for &(partitions, keys) in grid {
        let dir = tempfile::Builder::new().prefix("keel-scaling-").tempdir()?;
        let configs = keel::cli::init::run(dir.path(), 3, free_port_base()?, false)?;
        for path in &configs {
            let text = std::fs::read_to_string(path)?;
            if !text.contains("\npartitions = 4\n") {
                bail!("{} does not say `partitions = 4`", path.display());
            }
            std::fs::write(
                path,
                text.replace(
                    "\npartitions = 4\n",
                    &format!("\npartitions = {partitions}\n"),
                ),
            )?;
        }
        let mut cluster = Cluster::start(exe, dir.path(), &configs)?;
        let config = keel::config::Config::load(&configs[0])?;
        let ingresses: Vec<SocketAddr> = config.nodes.iter().map(|n| n.http).collect();
        cluster.wait_led(&format!("http://{}", ingresses[0]), dir.path())?;
        let warm = rt.block_on(drive(
            &ingresses,
            16,
            Duration::from_secs(2),
            add_over(keys),
        ));
        if warm.count(200) == 0 {
            bail!("no request succeeded during warm-up: {:?}", warm.statuses);
        }
        if let Some(total) = soak {
            let started = Instant::now();
            println!("\n  t      req/s      p50      p99   RSS N1/N2/N3 (MiB)");
            while started.elapsed() < total {
                let run = rt.block_on(drive(
                    &ingresses,
                    clients,
                    Duration::from_secs(30),
                    add_over(keys),
                ));
                let l = run.latency();
                println!(
                    "{:>4}s {:>9.0} {:>8} {:>8}   {}",
                    started.elapsed().as_secs(),
                    run.per_sec(200),
                    ms(l.p50),
                    ms(l.p99),
                    cluster.rss_mib()
                );
            }
            cluster.check_alive()?;
            continue;
        }
        let cpu_before = cluster.cpu();
        let load = rt.block_on(drive(&ingresses, clients, load_secs, add_over(keys)));
        let cores = (cluster.cpu() - cpu_before).as_secs_f64() / load.elapsed.as_secs_f64();
        let under_load = cluster.rss_mib();
        // At rest: what the nodes keep once the load has stopped.
        std::thread::sleep(Duration::from_secs(5));
        let at_rest = cluster.rss_mib();
        cluster.check_alive()?;
        rows.push(load.row(
            &format!("{partitions} partitions, {keys} keys"),
            clients,
            fsync.p50,
            200,
            format!("nodes {cores:.2} cores; RSS MiB under load {under_load}, at rest {at_rest}"),
        ));
        cluster.stop();
    }
    if rows.len() > 1 {
        println!();
        print_table("requests", &rows);
    }
    Ok(())
}

/// What one phase measured.
struct Run {
    elapsed: Duration,
    /// Latency of every answered request, by status.
    by_status: BTreeMap<u16, Vec<Duration>>,
    /// Requests with no HTTP answer (connection error or client timeout).
    statuses: BTreeMap<String, usize>,
}

impl Run {
    fn count(&self, status: u16) -> usize {
        self.by_status.get(&status).map_or(0, Vec::len)
    }
    /// Adds whose outcome is unknown: 504 and unanswered requests.
    fn unknown(&self) -> usize {
        self.count(504) + self.statuses.values().sum::<usize>()
    }
    fn per_sec(&self, status: u16) -> f64 {
        self.count(status) as f64 / self.elapsed.as_secs_f64()
    }
    fn latency(&self) -> Latency {
        let mut all: Vec<Duration> = self.by_status.values().flatten().copied().collect();
        Latency::of(&mut all)
    }
    fn statuses_summary(&self) -> BTreeMap<String, usize> {
        let mut out = self.statuses.clone();
        for (s, v) in &self.by_status {
            out.insert(s.to_string(), v.len());
        }
        out
    }
    fn errors(&self) -> BTreeMap<String, usize> {
        let mut out = self.statuses.clone();
        for (s, v) in &self.by_status {
            if *s != 200 {
                out.insert(s.to_string(), v.len());
            }
        }
        out
    }
    fn row(
        &self,
        phase: &str,
        clients: usize,
        fsync_p50: Duration,
        expect: u16,
        note: String,
    ) -> Row {
        let total: usize = self.by_status.values().map(Vec::len).sum::<usize>()
            + self.statuses.values().sum::<usize>();
        Row {
            phase: phase.into(),
            clients,
            ops: self.count(expect),
            errors: total - self.count(expect),
            per_sec: Some(self.per_sec(expect)),
            latency: self.latency(),
            fsync_p50,
            note,
        }
    }
}

/// `clients` connections spread over `ingresses`, each sending one request
/// at a time from `request(client, i)` until `length` has passed.
async fn drive<F>(ingresses: &[SocketAddr], clients: usize, length: Duration, request: F) -> Run
where
    F: Fn(usize, usize) -> (&'static str, String, Vec<u8>) + 'static,
{
    let request = Rc::new(request);
    let started = Instant::now();
    let end = started + length;
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let addr = ingresses[c % ingresses.len()];
            let request = request.clone();
            local.spawn_local(async move {
                let mut by_status: BTreeMap<u16, Vec<Duration>> = BTreeMap::new();
                let mut failures: BTreeMap<String, usize> = BTreeMap::new();
                let mut conn = None;
                // Bounded by time; the count bound is a backstop.
                for i in 0..10_000_000usize {
                    if Instant::now() >= end {
                        break;
                    }
                    if conn.is_none() {
                        match Conn::connect(addr).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                *failures.entry(format!("connect: {e}")).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let (method, path, body) = request(c, i);
                    let t = Instant::now();
                    let result = conn
                        .as_mut()
                        .expect("connected")
                        .call(method, &path, &body, REQUEST_TIMEOUT)
                        .await;
                    match result {
                        Ok((status, _)) => by_status.entry(status).or_default().push(t.elapsed()),
                        Err(e) => {
                            conn = None;
                            *failures.entry(e.to_string()).or_default() += 1;
                        }
                    }
                }
                (by_status, failures)
            })
        })
        .collect();
    let results = local.run_until(futures::future::join_all(tasks)).await;
    let mut run = Run {
        elapsed: started.elapsed(),
        by_status: BTreeMap::new(),
        statuses: BTreeMap::new(),
    };
    for (by_status, failures) in results.into_iter().flatten() {
        for (s, v) in by_status {
            run.by_status.entry(s).or_default().extend(v);
        }
        for (k, n) in failures {
            *run.statuses.entry(k).or_default() += n;
        }
    }
    run
}

/// Reads every counter (through the log, linearizably) and sums them.
async fn sum_counters(ingresses: &[SocketAddr]) -> Result<i64> {
    let mut conn = Conn::connect(ingresses[0]).await?;
    let mut total = 0i64;
    for key in 0..KEYS {
        let (status, body) = conn
            .call("GET", &format!("/Counter/k{key}/get"), b"", REQUEST_TIMEOUT)
            .await?;
        if status != 200 {
            bail!(
                "reading counter k{key}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        total += serde_json::from_slice::<i64>(&body)
            .with_context(|| format!("counter k{key}: {}", String::from_utf8_lossy(&body)))?;
    }
    Ok(total)
}

/// Log counters summed over the nodes (from `GET /metrics`).
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    appends: u64,
    records: u64,
    flushes: u64,
}

impl Counters {
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            appends: self.appends.saturating_sub(before.appends),
            records: self.records.saturating_sub(before.records),
            flushes: self.flushes.saturating_sub(before.flushes),
        }
    }
}

async fn scrape(ingresses: &[SocketAddr]) -> Result<Counters> {
    let mut total = Counters::default();
    for addr in ingresses {
        let mut conn = Conn::connect(*addr).await?;
        let (status, body) = conn.call("GET", "/metrics", b"", REQUEST_TIMEOUT).await?;
        if status != 200 {
            bail!("GET /metrics on {addr}: HTTP {status}");
        }
        let text = String::from_utf8_lossy(&body);
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        total.appends += value("keel_appends_total");
        total.records += value("keel_appended_records_total");
        total.flushes += value("keel_storage_flushes_total");
    }
    Ok(total)
}
