//! A soak: a healthy three-node loopback cluster under a steady mixed load
//! for a long time, to show that memory and disk level off (bounded by the
//! live state plus the configured retention) instead of growing with the
//! number of requests.
//!
//! [`run`] starts the nodes with a short idempotency retention, runs
//! closed-loop clients ([`mix`]) and samples every node ([`sample`]) into
//! `resources.csv`; at the end it reads every counter back and checks it
//! against what the clients did ([`ledger`]), and writes `summary.txt`:
//! the curve, the bytes written per request and the levelling verdict
//! ([`level`]).

pub mod ledger;
pub mod level;
pub mod mix;
pub mod sample;

use super::client::NodeClient;
use super::cluster::{Cluster, StartOptions};
use super::history::{OpType, F};
use super::runner::INTERRUPTED;
use super::workload::OpSpec;
use crate::objects::demo::DemoObject;
use crate::types::NodeId;
use anyhow::{Context, Result};
use ledger::{check_counter, CounterCheck, CounterLedger};
use level::{node_reports, render_curve, render_verdict, Level};
use mix::Kind;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sample::{sample_node, Sample, CSV_HEADER};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Everything a soak needs; [`SoakOptions::new`] gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// The `keel` executable the nodes run.
    pub keel: PathBuf,
    /// The run directory (created; the nodes' directories go inside).
    pub dir: PathBuf,
    /// How long the load runs.
    pub time: Duration,
    /// Keys per object type.
    pub keys: usize,
    /// Client threads, each with one request in flight.
    pub concurrency: usize,
    /// Time between two samples of every node.
    pub sample: Duration,
    /// The nodes' idempotency retention (`--idempotency-retention-secs`).
    pub idempotency_retention: Duration,
    /// The nodes' sled page cache (`--state-cache-mib`; `None`: their
    /// default): it bounds most of a node's memory, so a small one shows
    /// within a short run whether anything else grows.
    pub state_cache_mib: Option<u64>,
    /// Server-side deadline per request; the client waits a second longer.
    pub request_timeout: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// Loopback base port (`None`: a free range).
    pub base_port: Option<u16>,
    /// Keep the nodes' data directories (else removed after a passing run).
    pub keep_data: bool,
    /// Print a line per sample to stderr.
    pub progress: bool,
}

impl SoakOptions {
    /// The defaults: 30 minutes over 100,000 keys, 8 clients, a sample
    /// every 15 s, a 5-minute idempotency retention.
    pub fn new(keel: PathBuf, dir: PathBuf) -> Self {
        SoakOptions {
            keel,
            dir,
            time: Duration::from_secs(1800),
            keys: 100_000,
            concurrency: 8,
            sample: Duration::from_secs(15),
            idempotency_retention: Duration::from_secs(300),
            state_cache_mib: None,
            request_timeout: Duration::from_secs(3),
            seed: 1,
            base_port: None,
            keep_data: false,
            progress: true,
        }
    }
}

/// What a soak found.
#[derive(Debug)]
pub struct SoakOutcome {
    /// The run directory (`resources.csv`, `summary.txt`, node logs).
    pub dir: PathBuf,
    /// Every sample taken.
    pub samples: Vec<Sample>,
    /// Requests acknowledged.
    pub acked: u64,
    /// The final counter reads.
    pub counters: CounterCheck,
    /// Answers a correct service never gives (unexpected 4xx, a retry with
    /// the same idempotency key answered differently), the first few.
    pub bugs: Vec<String>,
    /// Nodes that exited during the run.
    pub exits: Vec<String>,
    /// Worst memory verdict over the nodes.
    pub memory: Level,
    /// Worst disk verdict over the nodes.
    pub disk: Level,
    /// `summary.txt`'s text.
    pub summary: String,
}

impl SoakOutcome {
    /// The run is correct: counters within bounds, no bug, no node lost.
    /// (Levelling is reported, not judged: a short run cannot show it.)
    pub fn passed(&self) -> bool {
        self.counters.passed() && self.bugs.is_empty() && self.exits.is_empty()
    }
}

/// Request counts, shared by the clients and read by the sampler.
#[derive(Default)]
struct Counts {
    /// Requests answered 200.
    acked: AtomicU64,
    /// Requests refused (certainly not applied).
    failed: AtomicU64,
    /// Requests with an unknown outcome (timeouts, 5xx other than 503).
    unknown: AtomicU64,
}

/// Bugs kept verbatim.
const BUGS_KEPT: usize = 20;
/// Requests one client sends at most (the load is bounded in count as well
/// as in time).
const MAX_OPS_PER_CLIENT_PER_SEC: u64 = 20_000;
/// Attempts at each final counter read.
const FINAL_READ_TRIES: u32 = 5;
/// How long the final reads may take at most.
const FINAL_READ_BUDGET: Duration = Duration::from_secs(600);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What the client threads share.
struct Shared<'a> {
    /// The options.
    opts: &'a SoakOptions,
    /// Ingress URLs, one per node.
    urls: Vec<String>,
    /// Counter adds per key.
    ledger: CounterLedger,
    /// Request counts.
    counts: Counts,
    /// Bugs seen, the first [`BUGS_KEPT`].
    bugs: Mutex<Vec<String>>,
}

impl Shared<'_> {
    fn bug(&self, what: String) {
        let mut bugs = self.bugs.lock().unwrap_or_else(|p| p.into_inner());
        if bugs.len() < BUGS_KEPT {
            bugs.push(what);
        }
    }

    /// Sends `op` and counts its answer.
    fn call(
        &self,
        client: &NodeClient,
        object: DemoObject,
        op: &OpSpec,
        key: Option<&str>,
    ) -> Option<Value> {
        let c = client.call_with(object, op, key);
        if let Some(bug) = c.bug {
            self.bug(format!("{}/{}: {bug}", object.name(), op.key));
        }
        let counter = match c.kind {
            OpType::Ok => &self.counts.acked,
            OpType::Fail => &self.counts.failed,
            _ => &self.counts.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (c.kind == OpType::Ok).then_some(c.value)
    }
}

/// One closed-loop client until `deadline` (or an interrupt, or its
/// operation budget).
fn client(shared: &Shared<'_>, index: usize, deadline: Instant) {
    let opts = shared.opts;
    let url = &shared.urls[index % shared.urls.len()];
    let client = NodeClient::new(url, DemoObject::Counter, opts.request_timeout);
    let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_mul(1000).wrapping_add(index as u64));
    let budget = opts.time.as_secs().max(1) * MAX_OPS_PER_CLIENT_PER_SEC;
    for n in 0..budget {
        if Instant::now() >= deadline || interrupted() {
            break;
        }
        let op = mix::next_op(&mut rng, opts.keys);
        match op.kind {
            Kind::CounterAdd => {
                shared.ledger.attempt(op.key_index);
                if shared.call(&client, op.object, &op.spec, None).is_some() {
                    shared.ledger.ack(op.key_index);
                }
            }
            Kind::CounterAddKeyed { repeat } => {
                let key = format!("soak-{:x}-{index}-{n}", opts.seed);
                shared.ledger.attempt(op.key_index);
                let first = shared.call(&client, op.object, &op.spec, Some(&key));
                let again = if repeat {
                    shared.call(&client, op.object, &op.spec, Some(&key))
                } else {
                    None
                };
                if let (Some(a), Some(b)) = (&first, &again) {
                    if a != b {
                        shared.bug(format!(
                            "Counter/{}: a retry with idempotency-key {key} answered {b}, the first {a}",
                            op.spec.key
                        ));
                    }
                }
                if first.is_some() || again.is_some() {
                    shared.ledger.ack(op.key_index);
                }
            }
            _ => {
                shared.call(&client, op.object, &op.spec, None);
            }
        }
    }
}

/// Samples every node each `every` until `stop` says so (or is dropped),
/// at most `most` times, and once more at the end; writes each sample to
/// `csv` as it is taken.
#[allow(clippy::too_many_arguments)]
fn sampler(
    nodes: &[(NodeId, u32, PathBuf)],
    counts: &Counts,
    started: Instant,
    every: Duration,
    most: u64,
    stop: mpsc::Receiver<()>,
    csv: &mut std::fs::File,
    progress: bool,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = started;
    for _ in 0..most {
        let t_ms = started.elapsed().as_millis() as u64;
        let acked = counts.acked.load(Ordering::Relaxed);
        let mut line = format!("soak: {:>5} s, {acked} acknowledged;", t_ms / 1000);
        for (id, pid, dir) in nodes {
            match sample_node(t_ms, id.0, *pid, dir, acked) {
                Ok(s) => {
                    let _ = writeln!(csv, "{}", s.csv_line());
                    line.push_str(&format!(
                        " {id} {} MiB RSS, {} MiB disk;",
                        s.rss_kib / 1024,
                        s.disk() >> 20
                    ));
                    samples.push(s);
                }
                Err(e) => line.push_str(&format!(" {id} unreadable ({e});")),
            }
        }
        let _ = csv.flush();
        if progress {
            eprintln!("{}", line.trim_end_matches(';'));
        }
        next += every;
        let wait = next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Asked to stop (or the load is gone): one final sample.
            _ => break,
        }
    }
    let t_ms = started.elapsed().as_millis() as u64;
    let acked = counts.acked.load(Ordering::Relaxed);
    for (id, pid, dir) in nodes {
        if let Ok(s) = sample_node(t_ms, id.0, *pid, dir, acked) {
            let _ = writeln!(csv, "{}", s.csv_line());
            samples.push(s);
        }
    }
    let _ = csv.flush();
    samples
}

/// Reads back every counter that was added to, `concurrency` readers in
/// parallel, each read retried a few times.
fn check_counters(shared: &Shared<'_>) -> CounterCheck {
    let keys = shared.ledger.touched();
    let readers = shared.opts.concurrency.max(1);
    let until = Instant::now() + FINAL_READ_BUDGET;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let keys = &keys;
                s.spawn(move || {
                    let url = &shared.urls[r % shared.urls.len()];
                    let client =
                        NodeClient::new(url, DemoObject::Counter, shared.opts.request_timeout);
                    let mut check = CounterCheck::default();
                    for &i in keys.iter().skip(r).step_by(readers) {
                        let op = OpSpec {
                            f: F::Read,
                            key: mix::key_name(i),
                            value: Value::Null,
                        };
                        let mut verdict = None;
                        for _ in 0..FINAL_READ_TRIES {
                            if interrupted() || Instant::now() >= until {
                                break;
                            }
                            let c = client.call_with(DemoObject::Counter, &op, None);
                            if c.kind == OpType::Ok {
                                let (acked, attempted) = shared.ledger.bounds(i);
                                verdict = Some(match c.value.as_i64() {
                                    Some(v) => check_counter(v, acked, attempted),
                                    None => Err(format!("read {} (not a number)", c.value)),
                                });
                                break;
                            }
                        }
                        check.record(&op.key, verdict);
                    }
                    check
                })
            })
            .collect();
        let mut all = CounterCheck::default();
        for h in handles {
            if let Ok(c) = h.join() {
                all.merge(c);
            }
        }
        all
    })
}

/// Runs a soak (see the module doc). `Err` when it could not be carried
/// out (the cluster did not start); a run that found a problem is an `Ok`
/// whose [`SoakOutcome::passed`] is false.
pub fn run(opts: &SoakOptions) -> Result<SoakOutcome> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let retention_secs = opts.idempotency_retention.as_secs().max(1);
    let mut node_args = vec![
        "--idempotency-retention-secs".to_string(),
        retention_secs.to_string(),
    ];
    if let Some(mib) = opts.state_cache_mib {
        node_args.extend(["--state-cache-mib".to_string(), mib.to_string()]);
    }
    let mut cluster = Cluster::start(StartOptions {
        dir,
        keel: &opts.keel,
        nodes: 3,
        base_port: opts.base_port,
        netns: None,
        seed: opts.seed,
        powerfs: None,
        node_args,
    })?;
    cluster.wait_ready(Duration::from_secs(60))?;
    let mut nodes = Vec::new();
    for id in cluster.ids() {
        let pid = cluster
            .pid(id)
            .with_context(|| format!("{id} is not running"))?;
        let data = cluster
            .data_dir(id)
            .with_context(|| format!("{id} has no data directory"))?;
        nodes.push((id, pid, data.to_path_buf()));
    }
    let shared = Shared {
        opts,
        urls: cluster.urls().into_values().collect(),
        ledger: CounterLedger::new(opts.keys.max(1)),
        counts: Counts::default(),
        bugs: Mutex::new(Vec::new()),
    };
    let csv_path = dir.join("resources.csv");
    let mut csv = std::fs::File::create(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(csv, "{CSV_HEADER}")?;
    if opts.progress {
        eprintln!(
            "soak: {} clients over {} keys for {} s, idempotency retention {} s; files in {}",
            opts.concurrency,
            opts.keys,
            opts.time.as_secs(),
            retention_secs,
            dir.display()
        );
    }

    let started = Instant::now();
    let deadline = started + opts.time;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // The sampler is bounded in count too: the load's time plus the calls
    // still in flight at its end, in samples.
    let sampled_for = opts.time + 2 * opts.request_timeout + Duration::from_secs(10);
    let most_samples = (sampled_for.as_millis() / opts.sample.as_millis().max(1)) as u64 + 1;
    let samples = std::thread::scope(|s| {
        let sampling = s.spawn(|| {
            sampler(
                &nodes,
                &shared.counts,
                started,
                opts.sample,
                most_samples,
                stop_rx,
                &mut csv,
                opts.progress,
            )
        });
        let clients: Vec<_> = (0..opts.concurrency.max(1))
            .map(|i| {
                let shared = &shared;
                s.spawn(move || client(shared, i, deadline))
            })
            .collect();
        for c in clients {
            let _ = c.join();
        }
        let _ = stop_tx.send(());
        sampling.join().unwrap_or_default()
    });
    let load_ms = started.elapsed().as_millis() as u64;
    if opts.progress {
        eprintln!("soak: load done; reading back every counter");
    }
    let counters = check_counters(&shared);
    cluster.reap();
    let exits = cluster.unexpected_exits().to_vec();
    let bugs = shared.bugs.into_inner().unwrap_or_else(|p| p.into_inner());
    let counts = &shared.counts;
    let acked = counts.acked.load(Ordering::Relaxed);

    let reports = node_reports(&samples);
    let (verdict, memory, disk) = render_verdict(&reports);
    let every_ms = if opts.time >= Duration::from_secs(300) {
        60_000
    } else {
        opts.sample.as_millis() as u64
    };
    let mut summary = format!(
        "keel soak: 3 nodes (loopback), {} clients, {} keys, {:.0} s of load, idempotency retention {} s, a sample every {} s, seed {}\n\
         requests: {} acknowledged ({:.0}/s), {} refused, {} unknown\n\n",
        opts.concurrency,
        opts.keys,
        load_ms as f64 / 1000.0,
        retention_secs,
        opts.sample.as_secs_f64(),
        opts.seed,
        acked,
        acked as f64 * 1000.0 / load_ms.max(1) as f64,
        counts.failed.load(Ordering::Relaxed),
        counts.unknown.load(Ordering::Relaxed),
    );
    summary.push_str(&render_curve(&samples, every_ms));
    summary.push('\n');
    summary.push_str(&verdict);
    summary.push_str(&counters.render());
    summary.push('\n');
    for b in &bugs {
        summary.push_str(&format!("bug: {b}\n"));
    }
    for e in &exits {
        summary.push_str(&format!("node exited: {e}\n"));
    }
    let outcome = SoakOutcome {
        dir: dir.clone(),
        samples,
        acked,
        counters,
        bugs,
        exits,
        memory,
        disk,
        summary,
    };
    let verdict_line = if outcome.passed() { "PASS" } else { "FAIL" };
    let summary = format!("{}{verdict_line}\n", outcome.summary);
    std::fs::write(dir.join("summary.txt"), &summary)?;
    drop(cluster);
    if outcome.passed() && !opts.keep_data {
        remove_node_data(dir, &nodes);
    }
    Ok(SoakOutcome { summary, ..outcome })
}

/// Removes the nodes' data directories (hundreds of MB after a long run);
/// logs, samples and the summary stay.
fn remove_node_data(dir: &Path, nodes: &[(NodeId, u32, PathBuf)]) {
    for (id, _, data) in nodes {
        // Only directories inside the run directory.
        if data.starts_with(dir) {
            let _ = std::fs::remove_dir_all(dir.join(format!("n{}", id.0)));
        }
    }
}
