//! `keel-jepsen`: a Jepsen-style test of a keel cluster. Starts three node
//! processes (or attaches to running ones), runs a workload while a nemesis
//! injects faults, heals, checks the history and writes a report. See
//! `keel-jepsen --help`; the logic lives in `keel::harness::runner`.

use clap::Parser;
use keel::harness::checker::Validity;
use keel::harness::netns::parse_subnet;
use keel::harness::runner::{install_interrupt_handler, run, RunOptions, INTERRUPTED};
use keel::harness::schedule::{GrayParams, NemesisKind};
use keel::harness::workload::WorkloadKind;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "keel-jepsen",
    version,
    about = "Jepsen-style fault injection and history checking for a keel cluster",
    after_help = "Exit status: 0 when every checker passed, 1 when one failed (or was \
                  unknown without --allow-unknown), 2 when the run could not be carried out."
)]
struct Args {
    /// set, register or counter.
    #[arg(long, default_value = "set")]
    workload: WorkloadKind,
    /// none, partition-random-node, partition-leader, partition-halves,
    /// bridge, kill, pause, flap, stall, wipe, power-loss (implies --powerfs:
    /// kill -9 and cut the power of one node, then of all three, in turn),
    /// or the gray ones: loss, one-way, slow-disk, slow-node.
    #[arg(long, default_value = "partition-random-node")]
    nemesis: NemesisKind,
    /// Logical clients (threads), each with one operation in flight.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Total operations per second (default: as fast as the clients go).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of the faulted phase (the post-heal phase comes after).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 5)]
    fault_secs: u64,
    /// Seconds of health between faults (also before the first).
    #[arg(long, default_value_t = 5)]
    heal_secs: u64,
    /// Seconds the workload keeps running after the final heal (min 10).
    #[arg(long, default_value_t = 15)]
    post_heal_secs: u64,
    /// Server-side deadline per request (`keel-timeout-ms`); the client
    /// waits one second longer.
    #[arg(long, default_value_t = 3000)]
    request_timeout_ms: u64,
    /// Seed of the nemesis and workload choices (default: random; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Repeat with a fresh cluster N times (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Run directory (default target/jepsen/<timestamp>-<workload>-<nemesis>).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The keel executable (default: `keel` next to this one).
    #[arg(long)]
    keel: Option<PathBuf>,
    /// Attach to running nodes' ingress URLs, comma-separated (started with
    /// --chaos for partitions); kill and pause are then unavailable.
    #[arg(long, value_delimiter = ',')]
    nodes_url: Vec<String>,
    /// Loopback: first port (QUIC base+i, HTTP base+100+i); default: a
    /// free range in 9000..9900.
    #[arg(long)]
    base_port: Option<u16>,
    /// Run each node in its own network namespace (root; needs ip and nft
    /// or iptables); partitions become kernel firewall rules.
    #[arg(long)]
    netns: bool,
    /// Put each node's data directory on its own powerfs mount (FUSE; root
    /// or fusermount3), which the power-loss nemesis needs; with other
    /// nemeses it only runs the nodes on it.
    #[arg(long)]
    powerfs: bool,
    /// The keel-powerfs executable (default: `keel-powerfs` next to this one).
    #[arg(long)]
    powerfs_bin: Option<PathBuf>,
    /// power-loss: look up to this long at each fault for an instant when
    /// a victim holds unsynced writes (freezing the victims ~2 ms per look)
    /// before striking (0: strike at once).
    #[arg(long, default_value_t = 1000)]
    power_loss_aim_ms: u64,
    /// loss: percent of the victim's packets lost, both directions.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(1..=100))]
    loss_percent: u8,
    /// slow-disk: milliseconds added to every sync of the victim.
    #[arg(long, default_value_t = 300)]
    slow_disk_ms: u64,
    /// slow-node: milliseconds each stall of the victim's runtime lasts.
    #[arg(long, default_value_t = 200)]
    stall_ms: u64,
    /// slow-node: one stall starts every this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    stall_every_ms: u64,
    /// The /24 used inside the namespaces.
    #[arg(long, default_value = "10.77.0", value_parser = parse_subnet)]
    netns_subnet: [u8; 3],
    /// Keys per workload (default: 4 for set/register, 3 for counter, 5
    /// accounts for bank).
    #[arg(long)]
    keys: Option<usize>,
    /// Seconds to wait for every partition to have a leader.
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
    /// Keep the nodes' data directories after a valid run (always kept
    /// otherwise).
    #[arg(long)]
    keep_data: bool,
    /// Count an "unknown" checker result as a pass.
    #[arg(long)]
    allow_unknown: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = install_interrupt_handler() {
        eprintln!("keel-jepsen: cannot handle Ctrl-C: {e}");
    }
    let seed = args.seed.unwrap_or_else(rand::random::<u64>);
    let mut worst = ExitCode::SUCCESS;
    for i in 0..args.runs.max(1) {
        let mut opts = RunOptions::new(args.workload, args.nemesis, seed.wrapping_add(i as u64));
        opts.concurrency = args.concurrency;
        opts.rate = args.rate;
        opts.time = Duration::from_secs(args.time);
        opts.fault = Duration::from_secs(args.fault_secs);
        opts.heal = Duration::from_secs(args.heal_secs);
        opts.post_heal = Duration::from_secs(args.post_heal_secs);
        opts.request_timeout = Duration::from_millis(args.request_timeout_ms);
        opts.dir = args.dir.as_ref().map(|d| {
            if args.runs > 1 {
                d.join(format!("run-{}", i + 1))
            } else {
                d.clone()
            }
        });
        opts.keel = args.keel.clone();
        opts.nodes_url = args.nodes_url.clone();
        opts.base_port = args.base_port;
        opts.netns = args.netns.then_some(args.netns_subnet);
        opts.powerfs = args.powerfs;
        opts.powerfs_exe = args.powerfs_bin.clone();
        opts.power_loss_aim = Duration::from_millis(args.power_loss_aim_ms);
        opts.gray = GrayParams {
            loss_percent: args.loss_percent,
            slow_disk: Duration::from_millis(args.slow_disk_ms),
            stall: Duration::from_millis(args.stall_ms),
            stall_every: Duration::from_millis(args.stall_every_ms),
        };
        opts.keys = args.keys;
        opts.keep_data = args.keep_data;
        opts.ready_timeout = Duration::from_secs(args.ready_timeout_secs);
        if args.runs > 1 {
            eprintln!("keel-jepsen: run {} of {}", i + 1, args.runs);
        }
        match run(&opts) {
            Ok(out) => {
                println!("{}", out.summary.render());
                let verdict = if out.summary.passed(args.allow_unknown) {
                    "PASS"
                } else {
                    worst = ExitCode::from(1);
                    "FAIL"
                };
                let unknown = if out.summary.valid == Validity::Unknown {
                    " (unknown)"
                } else {
                    ""
                };
                println!(
                    "{verdict}{unknown}: seed {}; files in {}",
                    opts.seed,
                    out.dir.display()
                );
            }
            Err(e) => {
                eprintln!("keel-jepsen: error (seed {}): {e:#}", opts.seed);
                return ExitCode::from(2);
            }
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return ExitCode::from(2);
        }
    }
    worst
}
