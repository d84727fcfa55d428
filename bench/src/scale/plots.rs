//! The scale plots (`docs/bench/scale-*.svg`): cost against the number of holds and
//! of waiters, one color per backend, both axes logarithmic (a total that grows
//! linearly is a line of slope one on the keepalive plot, a flat line on the per-hold
//! plots).

use std::time::Duration;

use crate::plot::color_of;
use crate::run::Report;
use crate::stats::fmt_duration;
use crate::svg::{Anchor, LogAxis, Svg};
use crate::target::BackendKind;

/// The plot files, relative to the report, with what each shows.
pub const FILES: [(&str, &str); 4] = [
    (
        ACQUIRE_SVG,
        "time per hold (acquire) and per session (open) against holds",
    ),
    (MEMORY_SVG, "client memory per hold against holds"),
    (KEEPALIVE_SVG, "keepalive requests per second against holds"),
    (
        HANDOFF_SVG,
        "hand-off p50 and p99 against waiters, with the holds held",
    ),
];

/// See [`FILES`].
pub const ACQUIRE_SVG: &str = "bench/scale-acquire.svg";
/// See [`FILES`].
pub const MEMORY_SVG: &str = "bench/scale-memory.svg";
/// See [`FILES`].
pub const KEEPALIVE_SVG: &str = "bench/scale-keepalive.svg";
/// See [`FILES`].
pub const HANDOFF_SVG: &str = "bench/scale-handoff.svg";

const GRID: &str = "#e3e3e3";
const AXIS: &str = "#555555";
const INK: &str = "#222222";

/// One line of a plot.
struct Line {
    kind: BackendKind,
    /// What it is, after the backend's name in the legend.
    what: &'static str,
    dashed: bool,
    /// (x, y), both positive.
    points: Vec<(f64, f64)>,
}

/// The four plots, as (path relative to the report, SVG document); empty when no
/// backend ran the case.
pub fn svgs(report: &Report) -> Vec<(&'static str, String)> {
    let scaled: Vec<_> = report
        .backends
        .iter()
        .filter_map(|backend| Some((backend.kind, backend.scale.as_ref()?)))
        .collect();
    if scaled.is_empty() {
        return Vec::new();
    }
    let mut acquire = Vec::new();
    let mut memory = Vec::new();
    let mut keepalive = Vec::new();
    let mut handoff = Vec::new();
    for (kind, scale) in &scaled {
        let kind = *kind;
        let holds = |point: &super::SizePoint| point.holds as f64;
        acquire.push(Line {
            kind,
            what: "acquire per hold",
            dashed: false,
            points: scale
                .sizes
                .iter()
                .map(|p| (holds(p), p.acquire_per_hold().as_secs_f64()))
                .collect(),
        });
        acquire.push(Line {
            kind,
            what: "open per session",
            dashed: true,
            points: scale
                .sizes
                .iter()
                .map(|p| (holds(p), p.open_per_session().as_secs_f64()))
                .collect(),
        });
        memory.push(Line {
            kind,
            what: "RSS per hold",
            dashed: false,
            points: scale
                .sizes
                .iter()
                .filter_map(|p| Some((holds(p), p.rss_per_hold_kb(scale.rss_connected_kb)?)))
                .collect(),
        });
        keepalive.push(Line {
            kind,
            what: "keepalive requests/s",
            dashed: false,
            points: scale
                .sizes
                .iter()
                .filter_map(|p| Some((holds(p), p.keepalive?.per_sec())))
                .collect(),
        });
        let summaries: Vec<_> = scale
            .handoff
            .iter()
            .filter_map(|result| Some((result.waiters as f64, result.samples.summary()?)))
            .collect();
        handoff.push(Line {
            kind,
            what: "p50",
            dashed: false,
            points: summaries
                .iter()
                .map(|(waiters, summary)| (*waiters, summary.p50.as_secs_f64()))
                .collect(),
        });
        handoff.push(Line {
            kind,
            what: "p99",
            dashed: true,
            points: summaries
                .iter()
                .map(|(waiters, summary)| (*waiters, summary.p99.as_secs_f64()))
                .collect(),
        });
    }
    let time = |seconds: f64| fmt_duration(Duration::from_secs_f64(seconds));
    let ttl = report.plan.scale_ttl.as_secs();
    vec![
        (
            ACQUIRE_SVG,
            lines_svg(
                "Time per hold: acquire (solid) and open session (dashed)",
                "locks held (log scale)",
                "time per hold",
                &acquire,
                &time,
            ),
        ),
        (
            MEMORY_SVG,
            lines_svg(
                "Client memory (RSS) per hold",
                "locks held (log scale)",
                "kB per hold",
                &memory,
                &|kb| format!("{kb} kB"),
            ),
        ),
        (
            KEEPALIVE_SVG,
            lines_svg(
                &format!("Keepalive requests/s at the store, all held ({ttl} s TTL)"),
                "locks held, one session each (log scale)",
                "requests per second",
                &keepalive,
                &|rate| format!("{rate}/s"),
            ),
        ),
        (
            HANDOFF_SVG,
            lines_svg(
                "Hand-off with the holds held: p50 (solid), p99 (dashed)",
                "waiters in line (log scale)",
                "hand-off latency",
                &handoff,
                &time,
            ),
        ),
    ]
}

/// A log-log line plot of `lines`, the y ticks labelled by `y_label_of`.
fn lines_svg(
    title: &str,
    x_title: &str,
    y_title: &str,
    lines: &[Line],
    y_label_of: &dyn Fn(f64) -> String,
) -> String {
    let (width, height) = (860.0, 520.0);
    let (left, right, top, bottom) = (90.0, 230.0, 50.0, height - 60.0);
    let drawn: Vec<&Line> = lines
        .iter()
        .filter(|line| !line.points.is_empty())
        .collect();
    let x_axis = LogAxis::covering(
        drawn
            .iter()
            .flat_map(|line| line.points.iter().map(|p| p.0)),
        left + 20.0,
        width - right - 20.0,
    );
    // Vertical: decades run bottom (small) to top (large).
    let y_axis = LogAxis::covering(
        drawn
            .iter()
            .flat_map(|line| line.points.iter().map(|p| p.1)),
        bottom,
        top,
    );
    let mut svg = Svg::new(width, height);
    svg.text(
        ((left + width - right) / 2.0, 26.0),
        title,
        16.0,
        Anchor::Middle,
        INK,
    );
    for minor in y_axis.minors() {
        let y = y_axis.at(minor);
        svg.line((left, y), (width - right, y), "#f1f1f1", 1.0, None);
    }
    for (value, label) in y_axis.decades_with(y_label_of) {
        let y = y_axis.at(value);
        svg.line((left, y), (width - right, y), GRID, 1.0, None);
        svg.text((left - 8.0, y + 4.0), &label, 11.0, Anchor::End, AXIS);
    }
    for (value, label) in x_axis.decades_with(|count| format!("{count}")) {
        let x = x_axis.at(value);
        svg.line((x, top), (x, bottom), GRID, 1.0, None);
        svg.text((x, bottom + 18.0), &label, 12.0, Anchor::Middle, AXIS);
    }
    svg.line((left, bottom), (width - right, bottom), AXIS, 1.0, None);
    svg.line((left, top), (left, bottom), AXIS, 1.0, None);
    svg.text(
        ((left + width - right) / 2.0, height - 18.0),
        x_title,
        13.0,
        Anchor::Middle,
        INK,
    );
    svg.vertical_text((24.0, (top + bottom) / 2.0), y_title, 13.0);
    let legend_x = width - right + 20.0;
    let mut legend_y = top + 10.0;
    for line in &drawn {
        let color = color_of(line.kind);
        let (stroke, dash, radius) = if line.dashed {
            (1.2, Some("5 4"), 2.5)
        } else {
            (2.2, None, 4.0)
        };
        let at: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|&(x, y)| (x_axis.at(x), y_axis.at(y)))
            .collect();
        svg.polyline(&at, color, stroke, dash);
        for (&(x, y), &center) in line.points.iter().zip(&at) {
            svg.circle(
                center,
                radius,
                color,
                &format!("{} {}, {x}: {}", line.kind, line.what, y_label_of(y)),
            );
        }
        svg.line(
            (legend_x, legend_y),
            (legend_x + 28.0, legend_y),
            color,
            stroke,
            dash,
        );
        svg.text(
            (legend_x + 36.0, legend_y + 4.0),
            &format!("{} {}", line.kind, line.what),
            12.0,
            Anchor::Start,
            INK,
        );
        legend_y += 20.0;
    }
    for line in lines.iter().filter(|line| line.points.is_empty()) {
        svg.text(
            (legend_x, legend_y + 4.0),
            &format!(
                "{} {}: {}",
                line.kind,
                line.what,
                if line.kind == BackendKind::Memory {
                    "no store to count"
                } else {
                    "not measured"
                }
            ),
            10.0,
            Anchor::Start,
            AXIS,
        );
        legend_y += 16.0;
    }
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_plot_draws_every_point_and_names_the_missing_lines() {
        let lines = [
            Line {
                kind: BackendKind::Etcd,
                what: "x",
                dashed: false,
                points: vec![(100.0, 1e-3), (1_000.0, 2e-3), (10_000.0, 4e-3)],
            },
            Line {
                kind: BackendKind::Memory,
                what: "y",
                dashed: true,
                points: Vec::new(),
            },
        ];
        let svg = lines_svg("t", "x", "y", &lines, &|v| format!("{v}"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("memory y: no store to count"));
        assert!(svg.contains(">10000<"), "x decades labelled: {svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
