//! `--plot FILE.svg`: one chart of every run's latency distribution, as a
//! CDF (x: latency in ms on a log scale, y: percent of samples at or below
//! it), drawn with plotters' SVG backend.
//!
//! A run is one series: `target workload clients`. Lock workloads plot
//! acquire latency, `election` and `watchers` the resign → all-watchers
//! handoff, `sessions` the keepalives; `failover` has too few samples and
//! is left out. With `--compare` a run has the same colour on every target,
//! Paxlock solid, etcd dashed and ZooKeeper dotted, so they read side by
//! side.
//!
//! The scale workloads add charts of their own beside it
//! ([`write_scale_svgs`]): keepalive p99 and leader CPU against sessions,
//! leader memory against locks held, and a soak's p99 and memory over time.

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

/// How a target's lines are drawn: `(dash, gap)` in pixels, `None` solid.
fn dash_of(target: &str) -> Option<(u32, u32)> {
    match target {
        "paxlock" => None,
        "etcd" => Some((8, 5)),
        _ => Some((2, 4)),
    }
}

/// One line of the chart.
struct Series {
    label: String,
    dash: Option<(u32, u32)>,
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
        // CDFs climb from bottom left to top right: lower right is free.
        draw_lines(&mut chart, &series, SeriesLabelPosition::LowerRight)?;
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
            dash: dash_of(r.target),
            colour: COLOURS[colour_index % COLOURS.len()],
            points: cdf_points(samples),
        });
    }
    out
}

/// Draws every series with points on `chart`, and the legend at
/// `legend`.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        draw_line(chart, s)?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("drawing the legend: {e}"))?;
    Ok(())
}

/// Draws `s` on `chart` with its legend entry.
fn draw_line<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    s: &Series,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let colour = s.colour;
    let style = colour.stroke_width(2);
    let points = s.points.iter().copied();
    let drawn = match s.dash {
        Some((dash, gap)) => chart.draw_series(DashedLineSeries::new(points, dash, gap, style)),
        None => chart.draw_series(LineSeries::new(points, style)),
    }
    .map_err(|e| anyhow::anyhow!("drawing {}: {e}", s.label))?;
    // The legend's sample shows the dash as the chart does: three
    // segments with gaps, touching for a solid line.
    let gap = s.dash.map_or(0, |(_, gap)| gap.min(3) as i32);
    drawn.label(s.label.as_str()).legend(move |(x, y)| {
        EmptyElement::at((x, y))
            + PathElement::new(vec![(0, 0), (6 - gap, 0)], colour.stroke_width(2))
            + PathElement::new(vec![(7, 0), (13 - gap, 0)], colour.stroke_width(2))
            + PathElement::new(vec![(14, 0), (20, 0)], colour.stroke_width(2))
    });
    Ok(())
}

/// Writes the scale workloads' charts next to `path` (`NAME.svg` gives
/// `NAME-sessions.svg`, `NAME-state.svg`, `NAME-soak.svg`), each only if a
/// run has figures for it; returns the files written.
pub fn write_scale_svgs(
    path: &Path,
    results: &[BenchResult],
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let stem = path.with_extension("");
    let named = |suffix: &str| std::path::PathBuf::from(format!("{}-{suffix}.svg", stem.display()));
    let mut charts: Vec<(std::path::PathBuf, Chart)> = Vec::new();
    let against = |workload: &str, figure: &str| -> Vec<Series> {
        by_target(results, |r| {
            (r.workload == workload)
                .then(|| figure_of(r, figure).map(|v| (r.clients as f64, v)))
                .flatten()
                .into_iter()
                .collect()
        })
    };
    charts.push((
        named("sessions"),
        Chart {
            title: "sessions: keepalive p99 against sessions kept alive",
            x_desc: "sessions",
            y_desc: "keepalive p99 (ms)",
            series: against("sessions", "keepalive_p99_ms"),
        },
    ));
    charts.push((
        named("sessions-cpu"),
        Chart {
            title: "sessions: the leader's CPU against sessions kept alive",
            x_desc: "sessions",
            y_desc: "leader CPU (% of one core)",
            series: against("sessions", "leader_cpu_pct"),
        },
    ));
    charts.push((
        named("state"),
        Chart {
            title: "state: the leader's resident memory against locks held",
            x_desc: "locks held",
            y_desc: "leader memory (MiB)",
            series: against("state", "leader_rss_mib"),
        },
    ));
    let over_time = |pick: fn(&super::Timeline) -> &Vec<(f64, f64)>| {
        by_target(results, |r| {
            r.timeline
                .as_ref()
                .map(|t| pick(t).clone())
                .unwrap_or_default()
        })
    };
    charts.push((
        named("soak"),
        Chart {
            title: "soak: acquire p99 per interval over the run",
            x_desc: "minutes",
            y_desc: "acquire p99 (ms)",
            series: over_time(|t| &t.p99_ms),
        },
    ));
    charts.push((
        named("soak-memory"),
        Chart {
            title: "soak: every member's resident memory together over the run",
            x_desc: "minutes",
            y_desc: "members' memory (MiB)",
            series: over_time(|t| &t.rss_mib),
        },
    ));
    let mut written = Vec::new();
    for (file, chart) in charts {
        if chart.series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let svg = chart.render()?;
        std::fs::write(&file, svg).with_context(|| format!("writing {}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}

/// A figure of a result by name.
fn figure_of(r: &BenchResult, name: &str) -> Option<f64> {
    r.figures
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
}

/// One series per target, of the points `points` picks from each of its
/// results, in x order.
fn by_target(
    results: &[BenchResult],
    points: impl Fn(&BenchResult) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    let mut targets: Vec<&'static str> = Vec::new();
    for r in results {
        if !targets.contains(&r.target) {
            targets.push(r.target);
        }
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            let mut all: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| r.target == target)
                .flat_map(&points)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: target.to_string(),
                dash: dash_of(target),
                colour: COLOURS[i % COLOURS.len()],
                points: all,
            }
        })
        .collect()
}

/// A line chart on linear axes from zero.
struct Chart {
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    series: Vec<Series>,
}

impl Chart {
    fn render(&self) -> anyhow::Result<String> {
        let max = |pick: fn(&(f64, f64)) -> f64| {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(pick))
                .fold(0.0_f64, f64::max)
        };
        let (x_hi, y_hi) = (max(|p| p.0).max(1e-9) * 1.05, max(|p| p.1).max(1e-9) * 1.15);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(self.title, ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(0.0..x_hi, 0.0..y_hi)?;
            chart
                .configure_mesh()
                .x_desc(self.x_desc)
                .y_desc(self.y_desc)
                .x_label_formatter(&|v| fmt_ms(*v))
                .y_label_formatter(&|v| fmt_ms(*v))
                .draw()?;
            draw_lines(&mut chart, &self.series, SeriesLabelPosition::UpperLeft)?;
            root.present()?;
        }
        Ok(svg)
    }
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
            timeline: None,
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
                timeline: None,
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
