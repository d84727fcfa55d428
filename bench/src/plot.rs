//! The SVG plots: cycle latency per backend and implementation, and hand-off latency
//! against the number of waiters per backend. Both use logarithmic time axes, since
//! the in-process store and a process-spawning peer differ by four decades.

use crate::cycle::Role;
use crate::run::Report;
use crate::stats::fmt_duration;
use crate::svg::{Anchor, LogAxis, Svg};
use crate::target::BackendKind;

const GRID: &str = "#e3e3e3";
const AXIS: &str = "#555555";
const INK: &str = "#222222";

fn role_color(role: Role) -> &'static str {
    match role {
        Role::Library => "#1f77b4",
        Role::Raw => "#8c8c8c",
        Role::Diagnostic => "#c6dbef",
        Role::Peer => "#ff7f0e",
        Role::Baseline => "#cfcfcf",
    }
}

fn backend_color(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Memory => "#2ca02c",
        BackendKind::Etcd => "#1f77b4",
        BackendKind::Redis => "#d62728",
        BackendKind::Postgres => "#9467bd",
    }
}

/// The color of `kind` in every plot (for plots drawn outside this module).
pub fn color_of(kind: BackendKind) -> &'static str {
    backend_color(kind)
}

/// A generous average width of one character of 12 px text, for layout.
const TEXT_WIDTH: f64 = 7.2;

/// A row label short enough for the plot: without its parenthesised remark, and at most
/// 70 characters.
fn plot_label(label: &str) -> String {
    let short = label.split(" (").next().unwrap_or(label);
    if short.chars().count() > 70 {
        let cut: String = short.chars().take(69).collect();
        format!("{cut}…")
    } else {
        short.to_owned()
    }
}

/// Horizontal bars: p50 of every cycle row, grouped by backend, with a whisker to p99.
pub fn cycle_svg(report: &Report) -> String {
    struct Bar {
        label: String,
        role: Role,
        p50: f64,
        p99: f64,
        first_of_backend: bool,
    }
    let mut bars = Vec::new();
    for backend in &report.backends {
        let mut first = true;
        for row in &backend.cycle {
            if let Some(summary) = row.samples.summary() {
                bars.push(Bar {
                    label: format!("{} · {}", backend.kind, plot_label(&row.label)),
                    role: row.role,
                    p50: summary.p50.as_secs_f64(),
                    p99: summary.p99.as_secs_f64(),
                    first_of_backend: first,
                });
                first = false;
            }
        }
    }
    let longest = bars
        .iter()
        .map(|bar| bar.label.chars().count())
        .max()
        .unwrap_or(10);
    let (right, top, row_height) = (40.0, 58.0, 24.0);
    let left = (TEXT_WIDTH * longest as f64 + 30.0).max(200.0);
    let width = (left + 720.0).max(900.0);
    let height = top + row_height * bars.len().max(1) as f64 + 70.0;
    let axis = LogAxis::covering(
        bars.iter().flat_map(|bar| [bar.p50, bar.p99]),
        left,
        width - right,
    );
    let bottom = top + row_height * bars.len().max(1) as f64;
    let mut svg = Svg::new(width, height);
    svg.text(
        (width / 2.0, 24.0),
        "Uncontended lock+unlock cycle: p50 (bar) and p99 (whisker), log scale",
        16.0,
        Anchor::Middle,
        INK,
    );
    time_grid_vertical(&mut svg, &axis, top, bottom);
    for (index, bar) in bars.iter().enumerate() {
        let y = top + row_height * index as f64;
        if bar.first_of_backend && index > 0 {
            svg.line((10.0, y), (width - right, y), "#999999", 1.0, Some("2 3"));
        }
        svg.text(
            (left - 8.0, y + row_height * 0.65),
            &bar.label,
            12.0,
            Anchor::End,
            INK,
        );
        let x50 = axis.at(bar.p50);
        let title = format!(
            "{}: p50 {}, p99 {}",
            bar.label,
            fmt_duration(std::time::Duration::from_secs_f64(bar.p50)),
            fmt_duration(std::time::Duration::from_secs_f64(bar.p99))
        );
        svg.rect(
            left,
            y + 4.0,
            x50 - left,
            row_height - 8.0,
            role_color(bar.role),
            Some(&title),
        );
        let x99 = axis.at(bar.p99);
        let middle = y + row_height / 2.0;
        svg.line((x50, middle), (x99, middle), INK, 1.2, None);
        svg.line((x99, middle - 5.0), (x99, middle + 5.0), INK, 1.2, None);
        svg.text(
            (x99 + 6.0, middle + 4.0),
            &fmt_duration(std::time::Duration::from_secs_f64(bar.p50)),
            10.0,
            Anchor::Start,
            AXIS,
        );
    }
    svg.line((left, top), (left, bottom), AXIS, 1.0, None);
    let legend = [
        (Role::Library, "distsync"),
        (Role::Raw, "raw store commands"),
        (Role::Diagnostic, "raw + one distsync step"),
        (Role::Peer, "peer library / program"),
        (Role::Baseline, "process spawn only"),
    ];
    let mut x = 20.0;
    for (role, name) in legend {
        svg.rect(x, height - 30.0, 14.0, 14.0, role_color(role), None);
        svg.text((x + 20.0, height - 19.0), name, 12.0, Anchor::Start, INK);
        x += 20.0 + TEXT_WIDTH * name.chars().count() as f64 + 30.0;
    }
    svg.finish()
}

/// Vertical grid lines and labels of a horizontal time axis.
fn time_grid_vertical(svg: &mut Svg, axis: &LogAxis, top: f64, bottom: f64) {
    for minor in axis.minors() {
        let x = axis.at(minor);
        svg.line((x, top), (x, bottom), "#f1f1f1", 1.0, None);
    }
    for (seconds, label) in axis.decades() {
        let x = axis.at(seconds);
        svg.line((x, top), (x, bottom), GRID, 1.0, None);
        svg.text((x, bottom + 16.0), &label, 11.0, Anchor::Middle, AXIS);
        svg.text((x, top - 6.0), &label, 11.0, Anchor::Middle, AXIS);
    }
}

/// One backend's hand-off points: (waiters, p50 seconds, p99 seconds).
type Series = (BackendKind, Vec<(usize, f64, f64)>);

/// Lines: hand-off p50 (solid) and p99 (dashed) against waiters, one color per backend.
pub fn handoff_svg(report: &Report) -> String {
    let series: Vec<Series> = report
        .backends
        .iter()
        .map(|backend| {
            let points = backend
                .handoff
                .iter()
                .filter_map(|result| {
                    let summary = result.samples.summary()?;
                    Some((
                        result.waiters,
                        summary.p50.as_secs_f64(),
                        summary.p99.as_secs_f64(),
                    ))
                })
                .collect();
            (backend.kind, points)
        })
        .filter(|(_, points): &Series| !points.is_empty())
        .collect();
    let (width, height) = (820.0, 520.0);
    let (left, right, top, bottom) = (90.0, 190.0, 50.0, height - 60.0);
    let waiters: Vec<usize> = {
        let mut all: Vec<usize> = report.plan.waiters.clone();
        all.sort_unstable();
        all.dedup();
        all
    };
    let (low, high) = (
        waiters.first().copied().unwrap_or(1).max(1) as f64,
        waiters.last().copied().unwrap_or(1).max(1) as f64,
    );
    let span = (high.log10() - low.log10()).max(1e-9);
    let x_at = |count: usize| {
        let inner = width - right - left - 40.0;
        left + 20.0 + ((count.max(1) as f64).log10() - low.log10()) / span * inner
    };
    // A vertical axis: decades run bottom (fast) to top (slow).
    let axis = LogAxis::covering(
        series
            .iter()
            .flat_map(|(_, points)| points.iter().flat_map(|point| [point.1, point.2])),
        bottom,
        top,
    );
    let mut svg = Svg::new(width, height);
    svg.text(
        ((left + width - right) / 2.0, 26.0),
        "Lock hand-off: unlock() → next waiter holds (log scale)",
        16.0,
        Anchor::Middle,
        INK,
    );
    for minor in axis.minors() {
        let y = axis.at(minor);
        svg.line((left, y), (width - right, y), "#f1f1f1", 1.0, None);
    }
    for (seconds, label) in axis.decades() {
        let y = axis.at(seconds);
        svg.line((left, y), (width - right, y), GRID, 1.0, None);
        svg.text((left - 8.0, y + 4.0), &label, 11.0, Anchor::End, AXIS);
    }
    for &count in &waiters {
        let x = x_at(count);
        svg.line((x, top), (x, bottom), GRID, 1.0, None);
        svg.text(
            (x, bottom + 18.0),
            &count.to_string(),
            12.0,
            Anchor::Middle,
            AXIS,
        );
    }
    svg.line((left, bottom), (width - right, bottom), AXIS, 1.0, None);
    svg.line((left, top), (left, bottom), AXIS, 1.0, None);
    svg.text(
        ((left + width - right) / 2.0, height - 18.0),
        "waiters in line (log scale)",
        13.0,
        Anchor::Middle,
        INK,
    );
    svg.vertical_text((24.0, (top + bottom) / 2.0), "hand-off latency", 13.0);
    for (kind, points) in &series {
        let color = backend_color(*kind);
        let p50: Vec<(f64, f64)> = points.iter().map(|p| (x_at(p.0), axis.at(p.1))).collect();
        let p99: Vec<(f64, f64)> = points.iter().map(|p| (x_at(p.0), axis.at(p.2))).collect();
        svg.polyline(&p50, color, 2.2, None);
        svg.polyline(&p99, color, 1.2, Some("5 4"));
        for (point, at) in points.iter().zip(&p50) {
            svg.circle(
                *at,
                4.0,
                color,
                &format!(
                    "{kind}, {} waiters: p50 {}",
                    point.0,
                    fmt_duration(std::time::Duration::from_secs_f64(point.1))
                ),
            );
        }
        for (point, at) in points.iter().zip(&p99) {
            svg.circle(
                *at,
                2.5,
                color,
                &format!(
                    "{kind}, {} waiters: p99 {}",
                    point.0,
                    fmt_duration(std::time::Duration::from_secs_f64(point.2))
                ),
            );
        }
    }
    let mut y = top + 10.0;
    let x = width - right + 20.0;
    for (kind, _) in &series {
        let color = backend_color(*kind);
        svg.line((x, y), (x + 28.0, y), color, 2.2, None);
        svg.text(
            (x + 36.0, y + 4.0),
            &format!("{kind} p50"),
            12.0,
            Anchor::Start,
            INK,
        );
        y += 20.0;
        svg.line((x, y), (x + 28.0, y), color, 1.2, Some("5 4"));
        svg.text(
            (x + 36.0, y + 4.0),
            &format!("{kind} p99"),
            12.0,
            Anchor::Start,
            INK,
        );
        y += 26.0;
    }
    for (kind, reason) in report.backends.iter().flat_map(|backend| {
        backend
            .handoff
            .iter()
            .filter(|result| result.samples.is_empty())
            .map(move |result| (backend.kind, format!("at {}: not measured", result.waiters)))
    }) {
        svg.text(
            (x, y + 4.0),
            &format!("{kind} {reason}"),
            10.0,
            Anchor::Start,
            AXIS,
        );
        y += 16.0;
    }
    svg.finish()
}
