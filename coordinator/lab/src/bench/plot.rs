//! `--plot FILE.svg`: one chart of every run's latency distribution, as a
//! CDF (x: latency in ms on a log scale, y: percent of samples at or below
//! it), drawn with plotters' SVG backend.
//!
//! A run is one series: `target workload clients`. Lock workloads plot
//! acquire latency, `election` the resign → all-watchers handoff;
//! `failover` has too few samples and is left out. With `--compare` a run
//! has the same colour for both targets, Paxlock solid and etcd dashed, so
//! pairs read side by side.

use std::path::Path;

use anyhow::{bail, Context};
use plotters::prelude::*;

use super::BenchResult;

/// Chart size in pixels.
const SIZE: (u32, u32) = (1100, 700);
/// Points per series at most: the SVG stays small with 100k-sample runs.
const MAX_POINTS: usize = 600;
/// Run colours (matplotlib's tab10): plotters' palettes start with yellow,
/// which is unreadable on white.
const COLOURS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Renders the chart of `results` and writes it to `path`.
pub fn write_svg(path: &Path, results: &[BenchResult]) -> anyhow::Result<()> {
    let svg = render(results)?;
    // Rendered in memory first so a failed render leaves no half file.
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// One line of the chart.
struct Series {
    label: String,
    dashed: bool,
    colour: RGBColor,
    /// `(latency ms, percent of samples <= it)`, latency ascending.
    points: Vec<(f64, f64)>,
}

/// The SVG text of the chart of `results`.
pub fn render(results: &[BenchResult]) -> anyhow::Result<String> {
    let series = series(results);
    if series.is_empty() {
        bail!("no run has latency samples to plot");
    }
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(ms, _)| ms))
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), ms| {
            (lo.min(ms), hi.max(ms))
        });
    // A little air around the data; a log axis needs a positive start.
    let (lo, hi) = ((lo / 1.5).max(1e-3), (hi * 1.5).max(lo * 10.0));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "paxlock-lab bench: latency distribution (CDF)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("% of samples at or below")
            .x_label_formatter(&|v| fmt_ms(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        for s in &series {
            let colour = s.colour;
            let style = colour.stroke_width(2);
            let drawn = if s.dashed {
                chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
            };
            // Two segments with a gap for etcd, touching for Paxlock, so
            // the legend shows the dash like the chart does.
            let gap = if s.dashed { 4 } else { 0 };
            drawn.label(s.label.as_str()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (10 - gap, 0)], colour.stroke_width(2))
                    + PathElement::new(vec![(10 + gap, 0), (20, 0)], colour.stroke_width(2))
            });
        }
        chart
            .configure_series_labels()
            // CDFs climb from bottom left to top right: lower right is free.
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn series(results: &[BenchResult]) -> Vec<Series> {
    // Colour by run (workload, clients), so etcd's dashed line of a run
    // matches Paxlock's solid one.
    let mut runs: Vec<(&str, usize)> = Vec::new();
    let mut out = Vec::new();
    for r in results {
        let Some(latency) = &r.latency else { continue };
        let samples = &latency.samples.0;
        if samples.is_empty() {
            continue;
        }
        let run = (r.workload.as_str(), r.clients);
        let colour_index = match runs.iter().position(|x| *x == run) {
            Some(i) => i,
            None => {
                runs.push(run);
                runs.len() - 1
            }
        };
        out.push(Series {
            label: format!(
                "{} {} c={} ({}, n={})",
                r.target,
                r.workload,
                r.clients,
                latency.what,
                samples.len()
            ),
            dashed: r.target == "etcd",
            colour: COLOURS[colour_index % COLOURS.len()],
            points: cdf_points(samples),
        });
    }
    out
}

/// CDF points of sorted nanosecond samples: every `step`-th rank plus the
/// largest, so the tail's last point is exact.
fn cdf_points(sorted_ns: &[u64]) -> Vec<(f64, f64)> {
    let n = sorted_ns.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(MAX_POINTS).max(1);
    let point = |i: usize| {
        let ms = (sorted_ns[i] as f64 / 1e6).max(1e-3);
        (ms, 100.0 * (i + 1) as f64 / n as f64)
    };
    let mut points: Vec<(f64, f64)> = (0..n).step_by(step).map(point).collect();
    if !(n - 1).is_multiple_of(step) {
        points.push(point(n - 1));
    }
    points
}

/// An axis label with about three significant digits and no trailing
/// zeros (the log axis puts ticks at values like 0.2 or 50).
fn fmt_ms(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::{Latency, Samples};
    use super::*;

    fn result(target: &'static str, workload: &str, ns: Vec<u64>) -> BenchResult {
        let mut samples = Samples(ns);
        samples.sort();
        BenchResult {
            target,
            workload: workload.into(),
            clients: 8,
            figures: Vec::new(),
            latency: Some(Latency {
                what: "acquire",
                samples,
            }),
        }
    }

    #[test]
    fn cdf_keeps_the_largest_sample_and_caps_points() {
        let ns: Vec<u64> = (1..=10_000).map(|i| i * 1000).collect();
        let points = cdf_points(&ns);
        assert!(points.len() <= MAX_POINTS + 1, "{}", points.len());
        assert_eq!(points.last().copied(), Some((10.0, 100.0)));
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf_points(&[2_000_000]), vec![(2.0, 100.0)]);
        assert!(cdf_points(&[]).is_empty());
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(fmt_ms(0.2), "0.2");
        assert_eq!(fmt_ms(50.0), "50");
        assert_eq!(fmt_ms(1.0), "1");
        assert_eq!(fmt_ms(0.005), "0.005");
        assert_eq!(fmt_ms(1234.0), "1234");
    }

    #[test]
    fn renders_one_labelled_series_per_run() -> anyhow::Result<()> {
        let results = vec![
            result(
                "paxlock",
                "contended",
                (1..500).map(|i| i * 10_000).collect(),
            ),
            result("etcd", "contended", (1..500).map(|i| i * 30_000).collect()),
            BenchResult {
                target: "paxlock",
                workload: "failover".into(),
                clients: 8,
                figures: Vec::new(),
                latency: None,
            },
        ];
        let svg = render(&results)?;
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("paxlock contended c=8 (acquire, n=499)"));
        assert!(svg.contains("etcd contended c=8 (acquire, n=499)"));
        assert!(!svg.contains("failover"));
        Ok(())
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        assert!(render(&[]).is_err());
    }
}
