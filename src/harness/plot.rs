//! Latency over time, like Jepsen's `latency-raw.svg`.
//!
//! One point per completed call: x = invocation time since the first call
//! (s), y = latency (ms, log scale, since ok latencies and timeouts differ
//! by orders of magnitude). Green = ok, red = fail, orange = info (plotted
//! at the time the client gave up). Fault windows are shaded grey. Calls
//! that never completed have no latency and are not drawn.
//!
//! [`throughput_svg`] is the other view: ok completions per second per
//! ingress node, in half-second buckets, over the same shaded faults (what
//! the gray-failure targets are stated in; a few kilobytes, so a run's plot
//! can be kept in the repository).
//!
//! Rendered with plotters' SVG backend, which writes text as `<text>`
//! elements and needs no system fonts.

use super::history::{Call, Outcome};
use super::nemesis::FaultWindow;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const OK: RGBColor = RGBColor(40, 160, 60);
const FAIL: RGBColor = RGBColor(215, 40, 40);
const INFO: RGBColor = RGBColor(245, 150, 0);
const FAULT: RGBColor = RGBColor(160, 160, 160);

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing the plot: {0}")]
    Draw(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Each fault window as `(start s, end s)` on the x axis (an open window
/// runs to `x_end`).
fn fault_spans(windows: &[FaultWindow], secs: &dyn Fn(u64) -> f64, x_end: f64) -> Vec<(f64, f64)> {
    windows
        .iter()
        .map(|w| {
            let start = secs(w.start_ns).min(x_end);
            (start, w.end_ns.map_or(x_end, |t| secs(t).min(x_end)))
        })
        .collect()
}

/// Shades the fault spans from `y_lo` to `y_hi`, with a legend entry.
fn shade_faults<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    spans: &[(f64, f64)],
    y_lo: f64,
    y_hi: f64,
) -> Result<(), PlotError> {
    chart
        .draw_series(spans.iter().map(|&(start, end)| {
            Rectangle::new([(start, y_lo), (end, y_hi)], FAULT.mix(0.3).filled())
        }))
        .map_err(draw_err)?
        .label("fault")
        .legend(|(x, y)| Rectangle::new([(x - 6, y - 5), (x + 6, y + 5)], FAULT.mix(0.3).filled()));
    Ok(())
}

/// The legend box, top right.
fn draw_legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)
}

/// Renders the plot as an SVG document (about 70 bytes per point).
pub fn latency_svg(
    calls: &[Call],
    windows: &[FaultWindow],
    title: &str,
) -> Result<String, PlotError> {
    let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let secs = |t: u64| t.saturating_sub(t0) as f64 / 1e9;
    let points: Vec<(f64, f64, Outcome)> = calls
        .iter()
        .filter_map(|c| {
            let ms = c.latency_ns()? as f64 / 1e6;
            Some((secs(c.invoke_ns), ms.max(0.01), c.outcome))
        })
        .collect();

    let x_end = calls
        .iter()
        .map(|c| secs(c.complete_ns.unwrap_or(c.invoke_ns)))
        .fold(0.0, f64::max)
        .max(1e-3);
    let (lo, hi) = points.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (y_min, y_max) = if points.is_empty() {
        (1.0, 1000.0)
    } else {
        let lo = 10f64.powf(lo.log10().floor());
        // One spare decade on top keeps the legend clear of the points.
        let hi = 10f64.powf(hi.log10().ceil() + 1.0);
        (lo, hi.max(lo * 100.0))
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_end, (y_min..y_max).log_scale())
            .map_err(draw_err)?;
        let x_fmt = |v: &f64| {
            if x_end < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        };
        let y_fmt = |v: &f64| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        };
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("latency (ms)")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_err)?;

        let spans = fault_spans(windows, &secs, x_end);
        shade_faults(&mut chart, &spans, y_min, y_max)?;

        for (outcome, colour, label) in [
            (Outcome::Ok, OK, "ok"),
            (Outcome::Fail, FAIL, "fail"),
            (Outcome::Info, INFO, "info"),
        ] {
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.2 == outcome)
                        .map(|p| Circle::new((p.0, p.1), 2, colour.filled())),
                )
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        draw_legend(&mut chart)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The width of one throughput bucket.
const BUCKET_NS: u64 = 500_000_000;

/// One colour per ingress node (cycled).
const NODES: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Ok completions per second per ingress node, in [`BUCKET_NS`] buckets
/// since the first call: `(node, [(bucket start s, ok/s)])`.
pub fn throughput_series(calls: &[Call]) -> Vec<(u32, Vec<(f64, f64)>)> {
    let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let end = calls
        .iter()
        .filter_map(|c| c.complete_ns)
        .max()
        .unwrap_or(t0);
    let buckets = (end.saturating_sub(t0) / BUCKET_NS + 1) as usize;
    let mut per_node: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for c in calls {
        per_node.entry(c.node.0).or_insert_with(|| vec![0; buckets]);
        if c.outcome != Outcome::Ok {
            continue;
        }
        if let Some(t) = c.complete_ns {
            let b = (t.saturating_sub(t0) / BUCKET_NS) as usize;
            if let Some(slot) = per_node.get_mut(&c.node.0).and_then(|v| v.get_mut(b)) {
                *slot += 1;
            }
        }
    }
    let per_s = 1e9 / BUCKET_NS as f64;
    per_node
        .into_iter()
        .map(|(node, counts)| {
            let points = counts
                .iter()
                .enumerate()
                .map(|(i, &n)| ((i as u64 * BUCKET_NS) as f64 / 1e9, n as f64 * per_s))
                .collect();
            (node, points)
        })
        .collect()
}

/// Renders the throughput plot as an SVG document.
pub fn throughput_svg(
    calls: &[Call],
    windows: &[FaultWindow],
    title: &str,
) -> Result<String, PlotError> {
    let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let secs = |t: u64| t.saturating_sub(t0) as f64 / 1e9;
    let series = throughput_series(calls);
    let x_end = series
        .iter()
        .flat_map(|(_, p)| p.last().map(|l| l.0 + BUCKET_NS as f64 / 1e9))
        .fold(1e-3, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1.0, f64::max)
        * 1.25;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_end, 0f64..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("ok per second")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_err)?;
        let spans = fault_spans(windows, &secs, x_end);
        shade_faults(&mut chart, &spans, 0.0, y_max)?;
        for (i, (node, points)) in series.iter().enumerate() {
            let colour = NODES[i % NODES.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(format!("via N{node}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x - 8, y), (x + 8, y)], colour.stroke_width(2))
                });
        }
        draw_legend(&mut chart)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Renders and writes the latency plot to `path` (via a temporary file,
/// so a reader never sees half a plot).
pub fn write_latency_svg(
    path: &Path,
    calls: &[Call],
    windows: &[FaultWindow],
    title: &str,
) -> Result<(), PlotError> {
    write_svg(path, latency_svg(calls, windows, title)?)
}

/// Renders and writes the throughput plot to `path`, as the latency one.
pub fn write_throughput_svg(
    path: &Path,
    calls: &[Call],
    windows: &[FaultWindow],
    title: &str,
) -> Result<(), PlotError> {
    write_svg(path, throughput_svg(calls, windows, title)?)
}

fn write_svg(path: &Path, svg: String) -> Result<(), PlotError> {
    let tmp = path.with_extension("svg.tmp");
    let io = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, svg).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::OpType;
    use crate::harness::testkit::{Hist, MS};

    /// The contents of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    #[test]
    fn writes_an_svg_with_three_series_a_legend_and_shaded_faults() {
        let mut h = Hist::new();
        h.steady(3, 0, 10_000, 250, |node, t| match (node, t) {
            (3, 3000..=6000) => OpType::Info,
            (2, 4000..=4500) => OpType::Fail,
            _ => OpType::Ok,
        });
        let windows = [FaultWindow {
            start_ns: 3000 * MS,
            end_ns: Some(6000 * MS),
            faults: vec!["partition".into()],
            nemeses: vec![],
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency-raw.svg");
        write_latency_svg(&path, &h.calls(), &windows, "latency").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!path.with_extension("svg.tmp").exists());
        let texts = texts(&svg);
        for label in [
            "ok",
            "fail",
            "info",
            "fault",
            "latency (ms)",
            "time since start (s)",
        ] {
            assert!(
                texts.iter().any(|t| t == label),
                "no {label:?} in {texts:?}"
            );
        }
        // Points in each colour, plus one legend marker each.
        let circles = |c: RGBColor| {
            svg.lines()
                .filter(|l| l.contains("<circle") && l.contains(&format!("fill=\"{}\"", hex(c))))
                .count()
        };
        let calls = h.calls();
        let count = |o: Outcome| calls.iter().filter(|c| c.outcome == o).count();
        assert_eq!(circles(OK), count(Outcome::Ok) + 1);
        assert_eq!(circles(FAIL), count(Outcome::Fail) + 1);
        assert_eq!(circles(INFO), count(Outcome::Info) + 1);
        assert!(count(Outcome::Fail) > 0 && count(Outcome::Info) > 0);
        // The fault window and its legend patch.
        let shaded = svg
            .lines()
            .filter(|l| l.contains("<rect") && l.contains(&format!("fill=\"{}\"", hex(FAULT))))
            .count();
        assert_eq!(shaded, 2);
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
    }

    #[test]
    fn throughput_counts_ok_completions_per_node_and_half_second() {
        let mut h = Hist::new();
        // One call per node every 100 ms for 4 s; N3's fail from 1 s to 2 s.
        h.steady(3, 0, 4_000, 100, |node, t| match (node, t) {
            (3, 1000..2000) => OpType::Fail,
            _ => OpType::Ok,
        });
        let calls = h.calls();
        let series = throughput_series(&calls);
        assert_eq!(series.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
        let ok_in = |node: u32, at_s: f64| {
            let (_, points) = series.iter().find(|s| s.0 == node).unwrap();
            points.iter().find(|p| (p.0 - at_s).abs() < 1e-9).unwrap().1
        };
        // Five completions per half second: 10 per second.
        assert!((ok_in(1, 1.5) - 10.0).abs() < 1e-9, "{series:?}");
        assert_eq!(ok_in(3, 1.5), 0.0, "failures are not throughput");
        assert!((ok_in(3, 3.0) - 10.0).abs() < 1e-9);
        let ok_total: f64 = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1 / 2.0))
            .sum();
        let ok = calls.iter().filter(|c| c.outcome == Outcome::Ok).count();
        assert!((ok_total - ok as f64).abs() < 1e-6, "{ok_total} vs {ok}");

        let windows = [FaultWindow {
            start_ns: 1000 * MS,
            end_ns: Some(2000 * MS),
            faults: vec!["loss".into()],
            nemeses: vec![],
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("throughput.svg");
        write_throughput_svg(&path, &calls, &windows, "throughput").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let texts = texts(&svg);
        for label in ["via N1", "via N3", "fault", "ok per second"] {
            assert!(
                texts.iter().any(|t| t == label),
                "no {label:?} in {texts:?}"
            );
        }
        assert!(svg.len() < 50_000, "{} bytes", svg.len());
    }

    #[test]
    fn an_empty_history_still_renders() {
        let svg = latency_svg(&[], &[], "nothing").unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(texts(&svg).contains(&"nothing".to_string()));
    }
}
