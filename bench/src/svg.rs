//! A minimal SVG writer and a logarithmic time axis, enough for the bench's plots.

use std::fmt::Write as _;

/// An SVG document being written.
pub struct Svg {
    width: f64,
    height: f64,
    body: String,
}

impl std::fmt::Debug for Svg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svg")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// Escapes text for SVG content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How text is anchored at its point.
#[derive(Clone, Copy, Debug)]
pub enum Anchor {
    /// The point is the text's start.
    Start,
    /// The point is the text's middle.
    Middle,
    /// The point is the text's end.
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

impl Svg {
    /// An empty white canvas.
    pub fn new(width: f64, height: f64) -> Self {
        let mut svg = Self {
            width,
            height,
            body: String::new(),
        };
        svg.rect(0.0, 0.0, width, height, "#ffffff", None);
        svg
    }

    /// A filled rectangle, optionally with a hover title.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, title: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}""#,
            w.max(0.0),
            h.max(0.0)
        );
        match title {
            Some(title) => {
                let _ = writeln!(self.body, "><title>{}</title></rect>", escape(title));
            }
            None => self.body.push_str("/>\n"),
        }
    }

    /// A straight line; `dash` like `"4 3"`.
    pub fn line(
        &mut self,
        from: (f64, f64),
        to: (f64, f64),
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let dash = dash.map_or(String::new(), |dash| {
            format!(r#" stroke-dasharray="{dash}""#)
        });
        let _ = writeln!(
            self.body,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{stroke}" stroke-width="{width}"{dash}/>"#,
            from.0, from.1, to.0, to.1
        );
    }

    /// A polyline through `points`.
    pub fn polyline(
        &mut self,
        points: &[(f64, f64)],
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let points: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let dash = dash.map_or(String::new(), |dash| {
            format!(r#" stroke-dasharray="{dash}""#)
        });
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="{width}"{dash}/>"#,
            points.join(" ")
        );
    }

    /// A filled circle with a hover title.
    pub fn circle(&mut self, center: (f64, f64), radius: f64, fill: &str, title: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{radius}" fill="{fill}"><title>{}</title></circle>"#,
            center.0,
            center.1,
            escape(title)
        );
    }

    /// Text at a point.
    pub fn text(&mut self, at: (f64, f64), text: &str, size: f64, anchor: Anchor, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{:.1}" y="{:.1}" font-size="{size}" text-anchor="{}" fill="{fill}">{}</text>"#,
            at.0,
            at.1,
            anchor.as_str(),
            escape(text)
        );
    }

    /// Text rotated a quarter turn counter-clockwise about its point (a y-axis title).
    pub fn vertical_text(&mut self, at: (f64, f64), text: &str, size: f64) {
        let _ = writeln!(
            self.body,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="middle" fill="#333333" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"##,
            escape(text),
            x = at.0,
            y = at.1,
        );
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
{}</svg>
"#,
            self.body,
            w = self.width,
            h = self.height,
        )
    }
}

/// A logarithmic axis over seconds, from a decade below the smallest value to a decade
/// above the largest, mapped onto pixels `[start, end]`.
#[derive(Clone, Copy, Debug)]
pub struct LogAxis {
    low: f64,
    high: f64,
    start: f64,
    end: f64,
}

impl LogAxis {
    /// An axis covering every positive value of `values` (seconds).
    pub fn covering(values: impl IntoIterator<Item = f64>, start: f64, end: f64) -> Self {
        let (mut min, mut max) = (f64::INFINITY, 0.0_f64);
        for value in values.into_iter().filter(|value| *value > 0.0) {
            min = min.min(value);
            max = max.max(value);
        }
        if !min.is_finite() {
            (min, max) = (1e-3, 1e-3);
        }
        let low = min.log10().floor();
        let mut high = max.log10().ceil();
        if high <= low {
            high = low + 1.0;
        }
        Self {
            low,
            high,
            start,
            end,
        }
    }

    /// The pixel of `seconds` (clamped to the axis).
    pub fn at(&self, seconds: f64) -> f64 {
        let exponent = seconds.max(1e-12).log10().clamp(self.low, self.high);
        self.start + (exponent - self.low) / (self.high - self.low) * (self.end - self.start)
    }

    /// The decades on the axis: (seconds, label).
    pub fn decades(&self) -> Vec<(f64, String)> {
        let (low, high) = (self.low as i32, self.high as i32);
        (low..=high)
            .map(|exponent| {
                let seconds = 10_f64.powi(exponent);
                (seconds, time_label(seconds))
            })
            .collect()
    }

    /// The decades on the axis, labelled by `label` (for an axis of something other
    /// than seconds): (value, label).
    pub fn decades_with(&self, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
        let (low, high) = (self.low as i32, self.high as i32);
        (low..=high)
            .map(|exponent| {
                let value = 10_f64.powi(exponent);
                (value, label(value))
            })
            .collect()
    }

    /// Minor ticks (2× and 5× each decade) inside the axis.
    pub fn minors(&self) -> Vec<f64> {
        let (low, high) = (self.low as i32, self.high as i32);
        (low..high)
            .flat_map(|exponent| {
                let decade = 10_f64.powi(exponent);
                [2.0 * decade, 5.0 * decade]
            })
            .collect()
    }
}

/// A round time for an axis label: `1 µs`, `10 ms`, `1 s`.
pub fn time_label(seconds: f64) -> String {
    let (value, unit) = if seconds < 1e-6 {
        (seconds * 1e9, "ns")
    } else if seconds < 1e-3 {
        (seconds * 1e6, "µs")
    } else if seconds < 1.0 {
        (seconds * 1e3, "ms")
    } else {
        (seconds, "s")
    };
    format!("{} {unit}", (value * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_spans_whole_decades() {
        let axis = LogAxis::covering([2e-5, 3e-3], 0.0, 400.0);
        let labels: Vec<String> = axis.decades().into_iter().map(|(_, label)| label).collect();
        assert_eq!(labels, ["10 µs", "100 µs", "1 ms", "10 ms"]);
        assert!((axis.at(1e-5) - 0.0).abs() < 1e-9);
        assert!((axis.at(1e-2) - 400.0).abs() < 1e-9);
        assert!((axis.at(1e-3) - 800.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn text_is_escaped() {
        let mut svg = Svg::new(10.0, 10.0);
        svg.text((1.0, 1.0), "a<b & \"c\"", 10.0, Anchor::Start, "#000");
        let document = svg.finish();
        assert!(document.starts_with("<svg xmlns"));
        assert!(document.contains("a&lt;b &amp; &quot;c&quot;"));
    }
}
