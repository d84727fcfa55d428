//! Latency samples and their summary (percentiles, throughput).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latencies measured one by one (one entry per operation).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Samples {
    durations: Vec<Duration>,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency.
    pub fn push(&mut self, duration: Duration) {
        self.durations.push(duration);
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: &Samples) {
        self.durations.extend_from_slice(&other.durations);
    }

    /// The latencies, in the order recorded.
    pub fn durations(&self) -> &[Duration] {
        &self.durations
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> usize {
        self.durations.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }

    /// The summary, or `None` without samples.
    pub fn summary(&self) -> Option<Summary> {
        if self.durations.is_empty() {
            return None;
        }
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        let count = sorted.len();
        Some(Summary {
            count,
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            ops_per_sec: per_second(count, total),
        })
    }
}

/// The summary of a set of [`Samples`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Operations per second for one client running them back to back:
    /// `count / sum of the samples`.
    pub ops_per_sec: f64,
}

/// The nearest-rank percentile `q` (0 < q <= 1) of sorted, non-empty `sorted`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `count` operations in `elapsed`, per second (0 for an empty interval).
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Worker `index`'s part of `total` items split among `workers` (the first
/// `total % workers` take one more), so the parts add up to `total`.
pub fn share(total: usize, workers: usize, index: usize) -> usize {
    let workers = workers.max(1);
    total / workers + usize::from(index < total % workers)
}

/// A duration for a table: µs below 1 ms, ms with precision up to 10 s, else s.
pub fn fmt_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.1} µs")
    } else if micros < 10_000_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else {
        format!("{:.1} s", micros / 1e6)
    }
}

/// A rate for a table, with thousands grouped by a thin space.
pub fn fmt_rate(rate: f64) -> String {
    if rate >= 100.0 {
        let whole = rate.round() as u64;
        let digits = whole.to_string();
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                grouped.push('\u{2009}');
            }
            grouped.push(digit);
        }
        grouped
    } else {
        format!("{rate:.1}")
    }
}

/// `a / b` as a ratio for a table (`×1.23`), or `n/a` when `b` is zero.
pub fn fmt_ratio(a: Duration, b: Duration) -> String {
    match ratio(a, b) {
        Some(ratio) => format!("×{ratio:.2}"),
        None => "n/a".into(),
    }
}

/// `a / b`, or `None` when `b` is zero.
pub fn ratio(a: Duration, b: Duration) -> Option<f64> {
    let b = b.as_secs_f64();
    (b > 0.0).then(|| a.as_secs_f64() / b)
}
