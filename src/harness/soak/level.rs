//! Reading a soak's samples: whether a resource levelled off, the curve as
//! a compact table and the bytes written per acknowledged request. Pure
//! functions of the samples.

use super::sample::Sample;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How a series behaved over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// It grew in the last third by at most a tenth of what it grew in the
    /// first third (or by noise: 2% of its peak).
    Levelled,
    /// It still grew in the last third, but at most half as fast as in the
    /// first.
    Slowing,
    /// It grew in the last third more than half as fast as in the first.
    Growing,
    /// Too few samples to tell (fewer than two per third).
    TooShort,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Levelled => "levelled off",
            Level::Slowing => "still growing, slower",
            Level::Growing => "growing",
            Level::TooShort => "too short to tell",
        }
    }

    /// The worse of two verdicts (growing is worst, too short is no news).
    pub fn worst(self, other: Level) -> Level {
        let rank = |l: Level| match l {
            Level::TooShort => 0,
            Level::Levelled => 1,
            Level::Slowing => 2,
            Level::Growing => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// The growth of a series over the thirds of its time span. Peaks, not
/// end points, so a sawtooth (sled's file, RSS after a release) reads as
/// its envelope.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    /// The first value.
    pub first: f64,
    /// The highest value of each third.
    pub peaks: [f64; 3],
    /// How much the first third rose above the first value.
    pub growth_first: f64,
    /// How much the last third's peak rose above the middle third's.
    pub growth_last: f64,
    /// The verdict.
    pub level: Level,
}

/// Below this share of the peak, growth in the last third is noise.
const NOISE: f64 = 0.02;
/// Last-third growth up to this share of the first third's is levelled.
const LEVELLED: f64 = 0.1;
/// ... and up to this share, slowing.
const SLOWING: f64 = 0.5;

/// The trend of `series` (`(t, value)` in time order).
pub fn trend(series: &[(f64, f64)]) -> Trend {
    let short = Trend {
        first: series.first().map_or(0.0, |p| p.1),
        peaks: [0.0; 3],
        growth_first: 0.0,
        growth_last: 0.0,
        level: Level::TooShort,
    };
    let (Some(&(t0, first)), Some(&(t1, _))) = (series.first(), series.last()) else {
        return short;
    };
    let span = t1 - t0;
    if span <= 0.0 {
        return short;
    }
    let mut peaks = [f64::NEG_INFINITY; 3];
    let mut counts = [0usize; 3];
    for &(t, v) in series {
        let third = (((t - t0) / span * 3.0) as usize).min(2);
        peaks[third] = peaks[third].max(v);
        counts[third] += 1;
    }
    if counts.iter().any(|&c| c < 2) {
        return short;
    }
    let growth_first = (peaks[0] - first).max(0.0);
    let growth_last = peaks[2] - peaks[1];
    let level = if growth_last <= (NOISE * peaks[2]).max(LEVELLED * growth_first) {
        Level::Levelled
    } else if growth_last <= SLOWING * growth_first {
        Level::Slowing
    } else {
        Level::Growing
    };
    Trend {
        first,
        peaks,
        growth_first,
        growth_last,
        level,
    }
}

/// Samples by node, each in time order.
pub fn by_node(samples: &[Sample]) -> BTreeMap<u32, Vec<&Sample>> {
    let mut out: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        out.entry(s.node).or_default().push(s);
    }
    for v in out.values_mut() {
        v.sort_by_key(|s| s.t_ms);
    }
    out
}

/// Bytes a node wrote per request acknowledged cluster-wide between its
/// first and last sample (`None` without acknowledged requests).
pub fn bytes_per_request(series: &[&Sample]) -> Option<f64> {
    let (first, last) = (series.first()?, series.last()?);
    let acked = last.acked.checked_sub(first.acked).filter(|&a| a > 0)?;
    Some(last.write_bytes.saturating_sub(first.write_bytes) as f64 / acked as f64)
}

/// The sample times (ms) the curve shows: the first sample, the first at or
/// after each multiple of `every_ms`, and the last (instead of a row less
/// than a second before it: the final sample follows the last periodic one
/// closely when the load stops right after it).
pub fn curve_times(times: &[u64], every_ms: u64) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    let every = every_ms.max(1);
    let mut next = 0;
    for &t in times {
        if t >= next {
            out.push(t);
            next = (t / every + 1) * every;
        }
    }
    if let Some(&last) = times.last() {
        let rows = out.len();
        match out.last_mut() {
            Some(shown) if *shown == last => {}
            Some(shown) if last - *shown < 1000 && rows > 1 => *shown = last,
            _ => out.push(last),
        }
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

fn mm_ss(ms: u64) -> String {
    format!("{}:{:02}", ms / 60_000, ms / 1000 % 60)
}

/// The curve: one row per `every_ms`, each cell the nodes' values joined
/// by `/` (MiB).
pub fn render_curve(samples: &[Sample], every_ms: u64) -> String {
    let nodes = by_node(samples);
    let mut times: Vec<u64> = samples.iter().map(|s| s.t_ms).collect();
    times.sort_unstable();
    times.dedup();
    let ids: Vec<String> = nodes.keys().map(|n| format!("n{n}")).collect();
    let ids = ids.join("/");
    let mut out = format!(
        "{:>6} {:>10} {:>16} {:>16} {:>16} {:>16}\n",
        "t",
        "acked",
        format!("RSS {ids}"),
        format!("records/ {ids}"),
        format!("state/ {ids}"),
        format!("snapshots/ {ids}"),
    );
    for t in curve_times(&times, every_ms) {
        let at: Vec<&Sample> = nodes
            .values()
            .filter_map(|v| v.iter().find(|s| s.t_ms == t).copied())
            .collect();
        let cell =
            |f: &dyn Fn(&Sample) -> u64| at.iter().map(|s| mib(f(s))).collect::<Vec<_>>().join("/");
        let acked = at.iter().map(|s| s.acked).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>6} {:>10} {:>16} {:>16} {:>16} {:>16}",
            mm_ss(t),
            acked,
            cell(&|s| s.rss_kib * 1024),
            cell(&|s| s.records),
            cell(&|s| s.state),
            cell(&|s| s.snapshots),
        );
    }
    out.push_str("(MiB; acked: requests acknowledged cluster-wide)\n");
    out
}

/// Per node: RSS and disk trends, and bytes written per request.
pub struct NodeReport {
    /// The node.
    pub node: u32,
    /// Resident memory (bytes).
    pub rss: Trend,
    /// The whole data directory (bytes).
    pub disk: Trend,
    /// Bytes written per acknowledged request.
    pub bytes_per_request: Option<f64>,
    /// The last sample.
    pub last: Sample,
}

/// Reads every node's series.
pub fn node_reports(samples: &[Sample]) -> Vec<NodeReport> {
    by_node(samples)
        .into_iter()
        .filter_map(|(node, series)| {
            let last = (*series.last()?).clone();
            let secs = |s: &Sample| s.t_ms as f64 / 1000.0;
            let rss: Vec<(f64, f64)> = series
                .iter()
                .map(|s| (secs(s), (s.rss_kib * 1024) as f64))
                .collect();
            let disk: Vec<(f64, f64)> = series.iter().map(|s| (secs(s), s.disk() as f64)).collect();
            Some(NodeReport {
                node,
                rss: trend(&rss),
                disk: trend(&disk),
                bytes_per_request: bytes_per_request(&series),
                last,
            })
        })
        .collect()
}

fn describe(name: &str, t: &Trend) -> String {
    if t.level == Level::TooShort {
        return format!("{name} {}", t.level.name());
    }
    let m = |v: f64| v / (1024.0 * 1024.0);
    format!(
        "{name} {}: peaks {:.0}/{:.0}/{:.0} MiB by third (first {:.0}); +{:.1} MiB in the first third, {:+.1} in the last",
        t.level.name(),
        m(t.peaks[0]),
        m(t.peaks[1]),
        m(t.peaks[2]),
        m(t.first),
        m(t.growth_first),
        m(t.growth_last),
    )
}

/// The verdict section: per node, and the worst over nodes for memory and
/// for disk.
pub fn render_verdict(reports: &[NodeReport]) -> (String, Level, Level) {
    let mut out = String::new();
    let (mut rss, mut disk) = (Level::TooShort, Level::TooShort);
    for r in reports {
        rss = rss.worst(r.rss.level);
        disk = disk.worst(r.disk.level);
        let per = r
            .bytes_per_request
            .map_or("n/a".to_string(), |b| format!("{b:.0}"));
        let _ = writeln!(
            out,
            "n{}: {} bytes written per acknowledged request ({} MiB in all)\n  {}\n  {}",
            r.node,
            per,
            mib(r.last.write_bytes),
            describe("RSS", &r.rss),
            describe("disk", &r.disk),
        );
    }
    let _ = writeln!(out, "verdict: memory {}, disk {}", rss.name(), disk.name());
    (out, rss, disk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..=120)
            .map(|i| (i as f64 * 15.0, f(i as f64 * 15.0)))
            .collect()
    }

    #[test]
    fn a_series_that_saturates_levels_off() {
        // Rises to 100 over the first 300 s (a 5-minute retention filling),
        // then stays.
        let t = trend(&series(|t| 20.0 + 80.0 * (t / 300.0).min(1.0)));
        assert_eq!(t.level, Level::Levelled, "{t:?}");
        assert_eq!(t.first, 20.0);
        assert!((t.growth_first - 80.0).abs() < 1e-9);
    }

    #[test]
    fn a_series_that_grows_with_requests_is_growing() {
        let t = trend(&series(|t| 10.0 + t));
        assert_eq!(t.level, Level::Growing, "{t:?}");
        assert!((t.growth_last - 600.0).abs() < 16.0, "{t:?}");
    }

    #[test]
    fn a_square_root_slows_and_a_sawtooth_reads_as_its_envelope() {
        let t = trend(&series(|t| t.sqrt()));
        assert_eq!(t.level, Level::Slowing, "{t:?}");
        // sled's file: grows to 100, is compacted to 60, grows again,
        // forever between the same bounds.
        let saw = trend(&series(|t| {
            60.0 + (t % 200.0) / 5.0 + (t / 200.0).min(1.0) * 20.0
        }));
        assert_eq!(saw.level, Level::Levelled, "{saw:?}");
        // Noise on a flat line is flat.
        let flat = trend(&series(|t| 100.0 + (t / 15.0) % 2.0));
        assert_eq!(flat.level, Level::Levelled, "{flat:?}");
    }

    #[test]
    fn too_few_samples_say_so() {
        assert_eq!(trend(&[]).level, Level::TooShort);
        assert_eq!(trend(&[(0.0, 1.0), (1.0, 2.0)]).level, Level::TooShort);
        assert_eq!(Level::Growing.worst(Level::Levelled), Level::Growing);
        assert_eq!(Level::TooShort.worst(Level::Slowing), Level::Slowing);
    }

    fn sample(t_s: u64, node: u32, acked: u64, write_bytes: u64) -> Sample {
        Sample {
            t_ms: t_s * 1000,
            node,
            rss_kib: 70 * 1024,
            write_bytes,
            records: 1 << 20,
            state: 3 << 20,
            snapshots: 0,
            other: 4096,
            acked,
        }
    }

    #[test]
    fn bytes_per_request_curve_and_verdict_render() {
        let mut samples = Vec::new();
        for i in 0..=10u64 {
            for node in 1..=3 {
                samples.push(sample(i * 30, node, i * 1000, 5_000 + i * 1000 * 600));
            }
        }
        let nodes = by_node(&samples);
        assert_eq!(bytes_per_request(&nodes[&1]), Some(600.0));
        assert_eq!(
            curve_times(&[0, 30_000, 60_000, 90_000, 120_000, 130_000], 60_000),
            [0, 60_000, 120_000, 130_000]
        );
        assert_eq!(
            curve_times(&[0, 60_000, 120_000, 120_400], 60_000),
            [0, 60_000, 120_400],
            "a final sample right after the last row replaces it"
        );
        let curve = render_curve(&samples, 60_000);
        assert!(curve.contains("RSS n1/n2/n3"), "{curve}");
        assert!(
            curve.contains("  5:00      10000         70/70/70"),
            "{curve}"
        );
        assert_eq!(curve.lines().count(), 1 + 6 + 1, "{curve}");
        let (text, rss, disk) = render_verdict(&node_reports(&samples));
        assert_eq!((rss, disk), (Level::Levelled, Level::Levelled));
        assert!(
            text.contains("n2: 600 bytes written per acknowledged request"),
            "{text}"
        );
        assert!(
            text.ends_with("verdict: memory levelled off, disk levelled off\n"),
            "{text}"
        );
    }
}
