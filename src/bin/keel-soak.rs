//! `keel-soak`: a long mixed load on a healthy three-node loopback cluster,
//! sampling every node's memory and disk, to show that they level off. See
//! `keel-soak --help`; the logic lives in `keel::harness::soak`.

use clap::Parser;
use keel::harness::runner::{install_interrupt_handler, INTERRUPTED};
use keel::harness::soak::{run, SoakOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "keel-soak",
    version,
    about = "Soak a three-node keel cluster and record its memory and disk over time",
    after_help = "Writes resources.csv (one line per node per sample) and summary.txt (the \
                  curve, bytes written per request, the levelling verdict) into the run \
                  directory. Exit status: 0 when every counter read back within its bounds \
                  and no node exited, 1 when not, 2 when the run could not be carried out \
                  or was interrupted."
)]
struct Args {
    /// Seconds of load.
    #[arg(long, default_value_t = 1800)]
    time: u64,
    /// Keys per object type (Counter, Register, Set).
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Closed-loop clients (threads), each with one request in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds between two samples of every node.
    #[arg(long, default_value_t = 15)]
    sample: u64,
    /// Seconds the nodes keep idempotency-key results (short, so that the
    /// dedup table fills and levels off within the run).
    #[arg(long, default_value_t = 300)]
    idempotency_retention: u64,
    /// The nodes' sled page cache in MiB (default: theirs, 256).
    #[arg(long)]
    state_cache_mib: Option<u64>,
    /// Server-side deadline per request (`keel-timeout-ms`).
    #[arg(long, default_value_t = 3000)]
    request_timeout_ms: u64,
    /// Seed of the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run directory (default target/soak/<unix time>).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The keel executable (default: `keel` next to this one).
    #[arg(long)]
    keel: Option<PathBuf>,
    /// Loopback: first port (QUIC base+i, HTTP base+100+i); default: a
    /// free range in 9000..9900.
    #[arg(long)]
    base_port: Option<u16>,
    /// Keep the nodes' data directories after a passing run.
    #[arg(long)]
    keep_data: bool,
}

fn keel_next_to_me() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let exe = me.parent()?.join("keel");
    exe.is_file().then_some(exe)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = install_interrupt_handler() {
        eprintln!("keel-soak: cannot handle Ctrl-C: {e}");
    }
    let Some(keel) = args.keel.clone().or_else(keel_next_to_me) else {
        eprintln!("keel-soak: no keel executable next to this one; pass --keel");
        return ExitCode::from(2);
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("target/soak").join(now.to_string())
    });
    let mut opts = SoakOptions::new(keel, dir);
    opts.time = Duration::from_secs(args.time);
    opts.keys = args.keys.max(1);
    opts.concurrency = args.concurrency.max(1);
    opts.sample = Duration::from_secs(args.sample.max(1));
    opts.idempotency_retention = Duration::from_secs(args.idempotency_retention.max(1));
    opts.state_cache_mib = args.state_cache_mib;
    opts.request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    opts.seed = args.seed;
    opts.base_port = args.base_port;
    opts.keep_data = args.keep_data;
    match run(&opts) {
        Ok(out) => {
            println!("{}", out.summary);
            println!("files in {}", out.dir.display());
            if INTERRUPTED.load(Ordering::SeqCst) {
                ExitCode::from(2)
            } else if out.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("keel-soak: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
