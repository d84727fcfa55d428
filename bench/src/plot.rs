//! SVG plots of a run, drawn with `plotters` beside the tables of `docs/BENCHMARKS.md`:
//!
//! - `cycle.svg`: each store's uncontended cycle p50 as bars, distsync's fair and
//!   unfair lock beside the peers and the raw sequence, whose p50 is also drawn as a
//!   line across (the floor);
//! - `handoff.svg`: each store's hand-off p50 (solid) and p99 (dashed) against the
//!   waiters, for each implementation of the hand-off case, and the fair lock's with
//!   the scale case's holds held (up to 1,000 waiters);
//! - `contended.svg`: each store's grants per second against the clients cycling one
//!   lock, for each implementation of the contended case.
//!
//! A panel per store; both axes of the line plots are logarithmic. A plot is drawn
//! when the run measured what it shows; [`draw_all`] says which were, so that the
//! report links only those.

use std::path::Path;
use std::time::Duration;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::contender::Role;
use crate::run::{BackendReport, Report};
use crate::target::BackendKind;
use crate::Result;

/// A plot written by [`draw_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drawn {
    /// The report section it belongs beside (a marker name of [`crate::report`]).
    pub section: &'static str,
    /// Its file name in the plot directory.
    pub file: &'static str,
    /// Its alternative text.
    pub alt: &'static str,
}

/// The plots: section, file and alternative text.
const PLOTS: [Drawn; 3] = [
    Drawn {
        section: "cycle",
        file: "cycle.svg",
        alt: "Uncontended cycle p50 per store: distsync's fair and unfair lock, the peers \
              and the raw sequence",
    },
    Drawn {
        section: "handoff",
        file: "handoff.svg",
        alt: "Hand-off p50 and p99 against the waiters, per store",
    },
    Drawn {
        section: "contended",
        file: "contended.svg",
        alt: "Contended grants per second against the clients on one lock, per store",
    },
];

/// The colours of the series: distsync's fair lock, its unfair lock, the raw
/// sequence, then the peers in turn.
const FAIR: RGBColor = RGBColor(31, 119, 180);
const UNFAIR: RGBColor = RGBColor(44, 160, 44);
const RAW: RGBColor = RGBColor(127, 127, 127);
const PEERS: [RGBColor; 5] = [
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// Width of a plot, and height of one row of panels, in pixels.
const WIDTH: u32 = 1100;
const ROW_HEIGHT: u32 = 330;
const FONT: &str = "sans-serif";

/// Draws every plot the run has figures for into `dir` (created if missing) and
/// returns those drawn. A plot that fails to draw is left out, with a warning.
pub fn draw_all(report: &Report, dir: &Path) -> Vec<Drawn> {
    if let Err(error) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), %error, "no plots: cannot make their directory");
        return Vec::new();
    }
    let mut drawn = Vec::new();
    for plot in PLOTS {
        let path = dir.join(plot.file);
        let outcome = match plot.section {
            "cycle" => cycle(report, &path),
            "handoff" => handoff(report, &path),
            _ => contended(report, &path),
        };
        match outcome {
            Ok(true) => drawn.push(plot),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "drawing a plot failed");
            }
        }
    }
    drawn
}

/// A series' short name: the row label up to its parenthesis (`raw` for the raw
/// sequence).
pub fn short(label: &str) -> String {
    if label.starts_with("raw:") {
        return "raw".to_owned();
    }
    label.split(" (").next().unwrap_or(label).trim().to_owned()
}

/// The colour of a series of `role`, the `peer`-th peer of its panel.
fn color(role: Role, peer: usize) -> RGBColor {
    match role {
        Role::Library => FAIR,
        Role::Unfair => UNFAIR,
        Role::Raw => RAW,
        Role::Peer => PEERS[peer % PEERS.len()],
    }
}

/// A line of one panel: its name, colour, points and whether it is dashed.
struct Line {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// One panel per store in `panels`, two to a row, each drawn by `draw`.
fn panels<T>(
    path: &Path,
    title: &str,
    panels: &[(BackendKind, T)],
    draw: impl Fn(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, BackendKind, &T) -> Result<()>,
) -> Result<()> {
    let rows = u32::try_from(panels.len().div_ceil(2)).unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (WIDTH, 40 + rows * ROW_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let areas = root.split_evenly((rows as usize, 2));
    for (area, (kind, data)) in areas.iter().zip(panels) {
        draw(area, *kind, data)?;
    }
    root.present()?;
    Ok(())
}

/// The range of a log axis that holds `values`: from the power of ten at or below the
/// least to the one at or above the most, so that the axis has labelled ticks.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (low, high) = values
        .filter(|value| value.is_finite() && *value > 0.0)
        .fold(None, |range: Option<(f64, f64)>, value| {
            let (low, high) = range.unwrap_or((value, value));
            Some((low.min(value), high.max(value)))
        })?;
    let low = 10f64.powf(low.log10().floor());
    let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
    // A hair wider, so that rounding keeps both powers of ten on the axis.
    Some(low * 0.999..high * 1.001)
}

/// Draws `lines` on `area` with log axes.
fn line_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    (x_desc, x_range): (&str, std::ops::Range<f64>),
    y_desc: &str,
    lines: &[Line],
) -> Result<()> {
    let Some(y_range) = log_range(
        lines
            .iter()
            .flat_map(|line| line.points.iter().map(|p| p.1)),
    ) else {
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| figure(*y))
        .label_style((FONT, 12))
        .draw()?;
    for line in lines {
        let style = line.color.stroke_width(2);
        let legend = line.color;
        if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))?;
        } else {
            chart
                .draw_series(LineSeries::new(line.points.clone(), style))?
                .label(line.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], legend));
        }
        chart.draw_series(
            line.points
                .iter()
                .map(|&point| Circle::new(point, 3, line.color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 11))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// A figure for an axis label: up to three significant digits.
fn figure(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The cycle p50 of every measured row of `backend`: name, role, p50 in µs.
fn cycle_bars(backend: &BackendReport) -> Vec<(String, Role, f64)> {
    backend
        .cycle
        .iter()
        .filter_map(|row| {
            let summary = row.samples.summary()?;
            let micros = summary.p50.as_secs_f64() * 1e6;
            Some((short(&row.label), row.role, micros))
        })
        .collect()
}

fn cycle(report: &Report, path: &Path) -> Result<bool> {
    let stores: Vec<_> = report
        .backends
        .iter()
        .map(|backend| (backend.kind, cycle_bars(backend)))
        .filter(|(_, bars)| !bars.is_empty())
        .collect();
    if stores.is_empty() {
        return Ok(false);
    }
    panels(
        path,
        "Uncontended lock+unlock cycle, p50 (µs)",
        &stores,
        |area, kind, bars| {
            let high = bars.iter().map(|bar| bar.2).fold(0.0, f64::max) * 1.25;
            let count = bars.len();
            let mut chart = ChartBuilder::on(area)
                .caption(kind.as_str(), (FONT, 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(220)
                .build_cartesian_2d(0.0..high.max(1.0), (0..count - 1).into_segmented())?;
            let names: Vec<String> = bars.iter().map(|bar| bar.0.clone()).collect();
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(count)
                .y_label_formatter(&|value| match value {
                    SegmentValue::Exact(index) | SegmentValue::CenterOf(index) => {
                        names.get(*index).cloned().unwrap_or_default()
                    }
                    SegmentValue::Last => String::new(),
                })
                .x_label_formatter(&|x| figure(*x))
                .x_desc("p50, µs")
                .label_style((FONT, 12))
                .draw()?;
            let mut peers = 0;
            let colors: Vec<RGBColor> = bars
                .iter()
                .map(|bar| {
                    let color = color(bar.1, peers);
                    peers += usize::from(bar.1 == Role::Peer);
                    color
                })
                .collect();
            chart.draw_series(
                Histogram::horizontal(&chart)
                    .margin(6)
                    .style_func(|index, _| match index {
                        SegmentValue::Exact(index) | SegmentValue::CenterOf(index) => {
                            colors.get(*index).copied().unwrap_or(RAW).filled()
                        }
                        SegmentValue::Last => RAW.filled(),
                    })
                    .data(bars.iter().enumerate().map(|(index, bar)| (index, bar.2))),
            )?;
            chart.draw_series(bars.iter().enumerate().map(|(index, bar)| {
                Text::new(
                    figure(bar.2),
                    (bar.2 + high * 0.01, SegmentValue::CenterOf(index)),
                    TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
                )
            }))?;
            // The raw sequence's p50 across: the floor.
            if let Some(raw) = bars.iter().find(|bar| bar.1 == Role::Raw) {
                chart.draw_series(DashedLineSeries::new(
                    [(raw.2, SegmentValue::Exact(0)), (raw.2, SegmentValue::Last)],
                    5,
                    4,
                    BLACK.mix(0.6).stroke_width(1),
                ))?;
            }
            Ok(())
        },
    )?;
    Ok(true)
}

/// One implementation's points before they become [`Line`]s: its name, role, and each
/// point's x with its y values.
type Series<const N: usize> = (String, Role, Vec<(f64, [f64; N])>);

/// The lines of one panel from `points`, each an implementation's name, role, x and
/// its y values: an implementation's points make one series (in the order they come),
/// coloured by its role, which draws a line per y value, the first solid (named in the
/// legend) and the others dashed.
fn series_lines<const N: usize>(
    points: impl IntoIterator<Item = (String, Role, f64, [f64; N])>,
) -> Vec<Line> {
    let mut series: Vec<Series<N>> = Vec::new();
    for (name, role, x, ys) in points {
        match series.iter_mut().find(|(known, ..)| *known == name) {
            Some((.., points)) => points.push((x, ys)),
            None => series.push((name, role, vec![(x, ys)])),
        }
    }
    let mut lines = Vec::new();
    let mut peers = 0;
    for (name, role, points) in series {
        let color = color(role, peers);
        peers += usize::from(role == Role::Peer);
        for index in 0..N {
            lines.push(Line {
                name: name.clone(),
                color,
                points: points.iter().map(|&(x, ys)| (x, ys[index])).collect(),
                dashed: index > 0,
            });
        }
    }
    lines
}

/// The hand-off lines of `backend`: p50 and p99 (dashed) of each implementation, and
/// the fair lock's with the scale case's holds held.
fn handoff_lines(backend: &BackendReport) -> Vec<Line> {
    let measured = backend.handoff.iter().filter_map(|result| {
        let summary = result.samples.summary()?;
        let (name, role) = match (&result.peer, result.unfair) {
            (Some(peer), _) => (short(peer), Role::Peer),
            (None, true) => (crate::cycle::UNFAIR_LABEL.to_owned(), Role::Unfair),
            (None, false) => (crate::cycle::LABEL.to_owned(), Role::Library),
        };
        let ys = [millis(summary.p50), millis(summary.p99)];
        Some((name, role, result.waiters as f64, ys))
    });
    let scale = backend.scale.iter().flat_map(|scale| &scale.handoff);
    let held = scale.filter_map(|result| {
        let summary = result.samples.summary()?;
        let name = "distsync, 10,000 holds held".to_owned();
        let ys = [millis(summary.p50), millis(summary.p99)];
        Some((name, Role::Raw, result.waiters as f64, ys))
    });
    series_lines(measured.chain(held))
}

/// The contended lines of `backend`: grants per second against clients, one per
/// implementation.
fn contended_lines(backend: &BackendReport) -> Vec<Line> {
    series_lines(
        backend
            .contended
            .iter()
            .filter(|result| result.grants > 0)
            .map(|result| {
                let role = result.role.unwrap_or(Role::Peer);
                let point = [result.rate()];
                (short(&result.label), role, result.clients as f64, point)
            }),
    )
}

/// Draws the line plot `title` of every store whose `lines` are not empty, with `axes`
/// (the x axis's name and its range when the points give none, the y axis's name);
/// `false` when no store has any.
fn line_plot(
    report: &Report,
    path: &Path,
    title: &str,
    lines: fn(&BackendReport) -> Vec<Line>,
    (x_desc, x_default, y_desc): (&str, std::ops::Range<f64>, &str),
) -> Result<bool> {
    let stores: Vec<_> = report
        .backends
        .iter()
        .map(|backend| (backend.kind, lines(backend)))
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if stores.is_empty() {
        return Ok(false);
    }
    panels(path, title, &stores, |area, kind, lines| {
        let x_range = log_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)))
            .unwrap_or(x_default.clone());
        line_panel(area, kind.as_str(), (x_desc, x_range), y_desc, lines)
    })?;
    Ok(true)
}

fn handoff(report: &Report, path: &Path) -> Result<bool> {
    line_plot(
        report,
        path,
        "Contended hand-off: p50 (solid) and p99 (dashed) against waiters, ms",
        handoff_lines,
        ("waiters", 1.0..10.0, "ms"),
    )
}

fn contended(report: &Report, path: &Path) -> Result<bool> {
    line_plot(
        report,
        path,
        "Contended throughput: grants per second against clients on one lock",
        contended_lines,
        ("clients", 1.0..100.0, "grants/s"),
    )
}
