//! Runs the deterministic simulator over many seeds in parallel:
//! `keel-sim --seeds 100000 [--jobs N]`, or one seed with its full trace:
//! `keel-sim --seed S --trace`. On a failure it prints the seed, the events
//! that led to it and the command that replays it.

use clap::Parser;
use keel::actors::bugs::{Bug, BugSet};
use keel::sim::{run, Report, SimConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "keel's deterministic simulator")]
struct Args {
    /// How many seeds to run (from --start on).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Threads (default: every core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the full trace of the seed (with --seed).
    #[arg(long)]
    trace: bool,
    /// Switch a deliberate bug on (SealWrongQuorum, StoreAfterSeal,
    /// ApplyStaleEpoch, PurgeByBatch, ConflictAfterPartialAccept,
    /// DedupMissesOwnBatch, RepairStopsAtFirstGap, RejoinBlank).
    #[arg(long)]
    bug: Vec<String>,
    /// Keep going after a failure.
    #[arg(long)]
    keep_going: bool,
    /// Let half the crashes also lose the node's disk (it rejoins).
    #[arg(long)]
    wipes: bool,
    /// Add the gray faults: a slow disk (syncs 50-500 ms late) and a node
    /// that stalls for 20-300 ms again and again.
    #[arg(long)]
    gray: bool,
}

fn bug(name: &str) -> Option<Bug> {
    Some(match name {
        "SealWrongQuorum" => Bug::SealWrongQuorum,
        "StoreAfterSeal" => Bug::StoreAfterSeal,
        "ApplyStaleEpoch" => Bug::ApplyStaleEpoch,
        "PurgeByBatch" => Bug::PurgeByBatch,
        "ConflictAfterPartialAccept" => Bug::ConflictAfterPartialAccept,
        "DedupMissesOwnBatch" => Bug::DedupMissesOwnBatch,
        "RepairStopsAtFirstGap" => Bug::RepairStopsAtFirstGap,
        "RejoinBlank" => Bug::RejoinBlank,
        _ => return None,
    })
}

/// The command that replays `seed` under the same schedule and bugs.
fn replay(seed: u64, args: &Args) -> String {
    let mut cmd = format!("cargo run --release --bin keel-sim -- --seed {seed} --trace");
    for b in &args.bug {
        cmd.push_str(&format!(" --bug {b}"));
    }
    if args.wipes {
        cmd.push_str(" --wipes");
    }
    if args.gray {
        cmd.push_str(" --gray");
    }
    cmd
}

fn print_failure(r: &Report, args: &Args) {
    println!("seed {} FAILED at {:?} simulated", r.seed, r.failed_at);
    for v in &r.violations {
        println!("  violation: {v}");
    }
    println!("events leading to it (last {}):", r.trace.entries().count());
    print!("{}", r.trace.render());
    println!("replay: {}", replay(r.seed, args));
}

fn main() {
    let args = Args::parse();
    let mut bugs = BugSet::NONE;
    for name in &args.bug {
        match bug(name) {
            Some(b) => bugs = bugs.with(b),
            None => {
                eprintln!("unknown bug {name}");
                std::process::exit(2);
            }
        }
    }
    let mut config = SimConfig {
        bugs,
        full_trace: args.trace,
        ..SimConfig::default()
    };
    config.faults.wipes = args.wipes;
    config.faults.gray = args.gray;
    if let Some(seed) = args.seed {
        let started = Instant::now();
        let r = run(seed, &config);
        if args.trace {
            print!("{}", r.trace.render());
        }
        let real = started.elapsed();
        println!(
            "seed {seed}: {} events, {:?} simulated in {real:?} ({:.0}x), ops ok/fail/info {:?}, disks lost/rejoined {:?}, syncs slowed/events stalled {:?}, peers degraded {}",
            r.events,
            r.simulated,
            r.simulated.as_secs_f64() / real.as_secs_f64().max(1e-9),
            r.ops,
            r.wipes,
            r.gray,
            r.degradations.values().sum::<u64>()
        );
        if r.passed() {
            println!("passed");
        } else {
            print_failure(&r, &args);
            std::process::exit(1);
        }
        return;
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = AtomicU64::new(args.start);
    let end = args.start.saturating_add(args.seeds);
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let simulated_us = AtomicU64::new(0);
    let failures: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let r = run(seed, &config);
                simulated_us.fetch_add(r.simulated.as_micros() as u64, Ordering::Relaxed);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 1000 == 0 {
                    eprintln!(
                        "{n} seeds, {:.1} seeds/s",
                        n as f64 / started.elapsed().as_secs_f64()
                    );
                }
                if !r.passed() {
                    if !args.keep_going {
                        stop.store(true, Ordering::Relaxed);
                    }
                    failures.lock().unwrap().push(r);
                }
            });
        }
    });
    let real = started.elapsed();
    let n = done.load(Ordering::Relaxed);
    let simulated = Duration::from_micros(simulated_us.load(Ordering::Relaxed));
    let ratio = simulated.as_secs_f64() / real.as_secs_f64().max(1e-9);
    println!(
        "{n} seeds in {real:.1?} on {jobs} threads: {:.1} seeds/s, {simulated:.0?} simulated, {ratio:.0}x real time ({:.0}x per thread)",
        n as f64 / real.as_secs_f64().max(1e-9),
        ratio / jobs as f64
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|r| r.seed);
    if let Some(first) = failures.first() {
        println!("{} failing seeds", failures.len());
        print_failure(first, &args);
        std::process::exit(1);
    }
    println!("all passed");
}
