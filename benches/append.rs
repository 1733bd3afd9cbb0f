//! Append throughput and latency of the replicated log.
//!
//! Three nodes on the in-process rig (real QUIC on loopback, one record log
//! with its fdatasync group commit per node), logs only, r = 2, every store
//! synced before it is acknowledged, 100-byte records, one log (so one
//! sequencer: the harder case). In the same run it measures the machine's own
//! `write(100 B) + fdatasync` latency on the filesystem holding the rig's data.
//!
//! Phases (each `KEEL_BENCH_SECS`, default 4 s):
//! - one appender on the sequencer's node, one record at a time;
//! - the same from a node without the sequencer (one extra QUIC hop);
//! - 64 and 256 appenders in flight, spread over the three nodes' `LogClient`s.
//!
//! Run: `cargo bench --bench append`.

mod common;

use anyhow::{bail, Context, Result};
use common::*;
use keel::log::Record;
use keel::rig::Rig;
use keel::types::{LogId, NodeId};
use std::time::{Duration, Instant};

const LOG: LogId = LogId(0);
const RECORD_BYTES: usize = 100;
const APPEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on appends per appender and phase (the phase's time bounds it first).
const MAX_PER_APPENDER: usize = 1_000_000;

fn main() -> Result<()> {
    let secs = phase_secs(4);
    println!("keel append benchmark: 3 nodes (in-process rig), r = 2, flush before ack, {RECORD_BYTES}-byte records, one log");
    println!(
        "machine: {}; load average at start: {}",
        machine(),
        load_average()
    );

    let rig = Rig::builder(3).logs_only().replication(2).start()?;
    rig.wait_for(
        "every node connected to every other",
        Duration::from_secs(10),
        |r| {
            r.ids()
                .iter()
                .all(|a| r.ids().iter().all(|b| !r.node(a.0).net.is_suspected(*b)))
        },
    )?;
    let sequencer = {
        let logs = rig.node(1).logs.clone();
        rig.block_on(logs.refresh_chain(LOG, Duration::from_secs(5)))
            .context("creating the log")?
            .tail()
            .sequencer
    };
    let other = rig
        .ids()
        .into_iter()
        .find(|n| *n != sequencer)
        .expect("3 nodes");
    let data_dir = rig.config(1).data_dir.clone();
    let probe_dir = data_dir
        .parent()
        .context("rig data directory")?
        .to_path_buf();

    // Warm up: the sequencer exists, connections and caches are hot.
    let warm = sequential(&rig, sequencer, Duration::from_millis(500));
    if warm.ok == 0 {
        bail!("warm-up appends all failed ({} errors)", warm.errors);
    }

    let mut fsyncs = fsync_samples(&probe_dir, 100)?;
    let mut rows = Vec::new();

    let seq = sequential(&rig, sequencer, secs);
    let remote = sequential(&rig, other, secs);
    let mut concurrent = Vec::new();
    for appenders in [64, 256] {
        concurrent.push((appenders, spread(&rig, appenders, secs)));
    }

    fsyncs.extend(fsync_samples(&probe_dir, 100)?);
    let fsync = Latency::of(&mut fsyncs);
    rows.push(Row::fsync(fsync, &probe_dir));
    rows.push(seq.row(
        format!("sequential on {sequencer}"),
        1,
        fsync.p50,
        "appender on the sequencer's node".into(),
    ));
    rows.push(remote.row(
        format!("sequential on {other}"),
        1,
        fsync.p50,
        "one more QUIC round trip to the sequencer".into(),
    ));
    for (appenders, run) in &concurrent {
        let note = format!(
            "{:.1} records/flush, CPU {:.0}% of 2 cores = {:.0} us/record",
            run.records_per_flush(),
            run.cpu_share() * 100.0,
            run.cpu_per_record().as_secs_f64() * 1e6,
        );
        rows.push(run.row("concurrent".into(), *appenders, fsync.p50, note));
    }
    println!();
    print_table("records", &rows);
    println!("load average at end: {}", load_average());

    let (_, best) = concurrent
        .iter()
        .max_by(|a, b| a.1.per_sec().total_cmp(&b.1.per_sec()))
        .expect("phases ran");
    let seq_lat = seq.latency();
    println!(
        "\nsummary: sequential append p50 {} = {:.1}x fdatasync p50 {} (goal <= 3x); {} appenders: {:.0} records/s (goal >= 50000), p99 {}",
        ms(seq_lat.p50),
        times(seq_lat.p50, fsync.p50),
        ms(fsync.p50),
        best.appenders,
        best.per_sec(),
        ms(best.latency().p99),
    );
    drop(rig);
    Ok(())
}

/// What one phase measured.
struct Run {
    appenders: usize,
    ok: usize,
    errors: usize,
    samples: Vec<Duration>,
    elapsed: Duration,
    cpu: Duration,
    flushes: u64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn latency(&self) -> Latency {
        Latency::of(&mut self.samples.clone())
    }
    fn records_per_flush(&self) -> f64 {
        // Each record is stored (and flushed) on every node of the nodeset.
        self.ok as f64 * 3.0 / self.flushes.max(1) as f64
    }
    /// Process CPU time per acknowledged record: what the whole cluster
    /// spends on one append. Steadier than throughput on a shared machine.
    fn cpu_per_record(&self) -> Duration {
        self.cpu / self.ok.max(1) as u32
    }
    fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.elapsed.as_secs_f64() / 2.0
    }
    fn row(&self, phase: String, clients: usize, fsync_p50: Duration, note: String) -> Row {
        Row {
            phase,
            clients,
            ops: self.ok,
            errors: self.errors,
            per_sec: Some(self.per_sec()),
            latency: self.latency(),
            fsync_p50,
            note,
        }
    }
}

fn flushes(rig: &Rig) -> u64 {
    rig.ids()
        .iter()
        .map(|n| rig.node(n.0).storage.flush_count())
        .sum()
}

fn payload(i: usize) -> Record {
    let mut bytes = format!("bench-{i:012}-").into_bytes();
    bytes.resize(RECORD_BYTES, b'.');
    Record(bytes)
}

/// One appender on `node`, one record at a time, for `length`.
fn sequential(rig: &Rig, node: NodeId, length: Duration) -> Run {
    measure(rig, &[node], 1, length)
}

/// `appenders` appenders spread round-robin over every node's `LogClient`.
fn spread(rig: &Rig, appenders: usize, length: Duration) -> Run {
    measure(rig, &rig.ids(), appenders, length)
}

fn measure(rig: &Rig, nodes: &[NodeId], appenders: usize, length: Duration) -> Run {
    let clients: Vec<_> = (0..appenders)
        .map(|i| rig.node(nodes[i % nodes.len()].0).logs.clone())
        .collect();
    let flushes_before = flushes(rig);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let end = started + length;
    let results = rig.block_on(async move {
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(a, logs)| {
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut errors = 0;
                    for i in 0..MAX_PER_APPENDER {
                        if Instant::now() >= end {
                            break;
                        }
                        let record = payload(a * MAX_PER_APPENDER + i);
                        let t = Instant::now();
                        match logs.append(LOG, vec![record], APPEND_TIMEOUT).await {
                            Ok(_) => samples.push(t.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (samples, errors)
                })
            })
            .collect();
        futures::future::join_all(tasks).await
    });
    let elapsed = started.elapsed();
    let mut run = Run {
        appenders,
        ok: 0,
        errors: 0,
        samples: Vec::new(),
        elapsed,
        cpu: cpu_time() - cpu_before,
        flushes: flushes(rig) - flushes_before,
    };
    for result in results {
        match result {
            Ok((samples, errors)) => {
                run.ok += samples.len();
                run.errors += errors;
                run.samples.extend(samples);
            }
            Err(_) => run.errors += 1,
        }
    }
    run
}
