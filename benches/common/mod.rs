//! Measurement code shared by the benchmarks: latency summaries, the
//! machine's own fsync latency, CPU time and load, and the table printer.
#![allow(dead_code)]

pub mod http;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Latency percentiles of one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// Sorts `samples` in place and summarises them.
    pub fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Latency {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// `write(100 B)` + `fdatasync` on a fresh file in `dir`, `n` times: the cost
/// of one durable append on this filesystem (the call keel's record log makes),
/// which bounds every acknowledged append.
pub fn fsync_samples(dir: &Path, n: usize) -> std::io::Result<Vec<Duration>> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let payload = [0x5au8; 100];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&payload)?;
        // The call keel's record log makes durable with (see
        // `storage::record_log`): fdatasync of an appended file.
        file.sync_data()?;
        out.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(out)
}

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of another process of ours, from /proc.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// The 1-minute load average (how busy the shared machine was).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// `nproc` and the CPU model, for the report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// How many times `d` is `unit` (e.g. append latency over fsync latency).
pub fn times(d: Duration, unit: Duration) -> f64 {
    d.as_secs_f64() / unit.as_secs_f64().max(1e-9)
}

/// One row of a results table.
pub struct Row {
    pub phase: String,
    pub clients: usize,
    pub ops: usize,
    pub errors: usize,
    pub per_sec: Option<f64>,
    pub latency: Latency,
    pub fsync_p50: Duration,
    pub note: String,
}

impl Row {
    /// The machine's own `write(100 B) + fsync`, the unit of the other rows.
    pub fn fsync(latency: Latency, where_: &std::path::Path) -> Row {
        Row {
            phase: "fdatasync (write 100 B)".into(),
            clients: 1,
            ops: latency.count,
            errors: 0,
            per_sec: None,
            latency,
            fsync_p50: latency.p50,
            note: where_.display().to_string(),
        }
    }
}

pub fn print_table(unit: &str, rows: &[Row]) {
    println!(
        "{:<24} {:>8} {:>9} {:>7} {:>11} {:>10} {:>10} {:>10} {:>9}  note",
        "phase", "clients", unit, "errors", "per second", "p50", "p99", "max", "p50/fsync"
    );
    for r in rows {
        println!(
            "{:<24} {:>8} {:>9} {:>7} {:>11} {:>10} {:>10} {:>10} {:>8.1}x  {}",
            r.phase,
            r.clients,
            r.ops,
            r.errors,
            r.per_sec.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            times(r.latency.p50, r.fsync_p50),
            r.note,
        );
    }
}

/// Seconds per measured phase: `KEEL_BENCH_SECS` or the default.
pub fn phase_secs(default: u64) -> Duration {
    let secs = std::env::var("KEEL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| (1..=120).contains(s))
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// Concurrent clients of a phase: `KEEL_BENCH_CLIENTS` (within `range`) or
/// the default.
pub fn bench_clients(range: std::ops::RangeInclusive<usize>, default: usize) -> usize {
    std::env::var("KEEL_BENCH_CLIENTS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|c| range.contains(c))
        .unwrap_or(default)
}
