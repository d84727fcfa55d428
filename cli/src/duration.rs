//! Duration flags: one syntax for every TTL, timeout and grace period, the library's
//! ([`parse_duration`]: `1500ms`, `2s`, `1m`, `1h`, or a bare number).
//!
//! A bare number means milliseconds, as in URLs, except for `--ttl` and `--grace`,
//! where it means seconds: scripts write `--ttl 30` meaning 30 s, and reading it as
//! 30 ms would silently make every session expire almost at once.

use std::time::Duration;

use distsync::store::raw::{parse_duration, parse_url_timeout, BareNumber};

/// The longest duration any flag takes: a day.
const MAX: Duration = Duration::from_secs(86_400);

/// `--timeout`: `1500ms`, `2s`, `1m`, or bare milliseconds; more than zero.
pub(crate) fn timeout(text: &str) -> Result<Duration, String> {
    at_most_a_day(text, parse_url_timeout(text)?)
}

/// `--ttl`: `1500ms`, `2s`, `1m`, or bare whole seconds; more than zero.
pub(crate) fn ttl(text: &str) -> Result<Duration, String> {
    at_most_a_day(text, parse_duration(text, BareNumber::Seconds)?)
}

/// `--grace`: `1500ms`, `2s`, `1m`, or bare seconds (a fraction too, `0.5`); zero is
/// allowed (SIGTERM and SIGKILL then both come at the deadline).
pub(crate) fn grace(text: &str) -> Result<Duration, String> {
    let bare_seconds = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    let duration = if bare_seconds {
        match text.parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 && secs <= MAX.as_secs_f64() => {
                Duration::from_secs_f64(secs)
            }
            _ => return Err(not_a_duration(text)),
        }
    } else if is_zero_with_unit(text) {
        Duration::ZERO
    } else {
        parse_url_timeout(text)?
    };
    at_most_a_day(text, duration)
}

fn is_whole_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `0ms`, `0s`, `0m` (which `parse_url_timeout` refuses, as a zero timeout).
fn is_zero_with_unit(text: &str) -> bool {
    ["ms", "s", "m"].iter().any(|unit| {
        text.strip_suffix(unit)
            .is_some_and(|digits| is_whole_number(digits) && digits.bytes().all(|b| b == b'0'))
    })
}

fn at_most_a_day(text: &str, duration: Duration) -> Result<Duration, String> {
    if duration > MAX {
        return Err(format!("{text:?}: at most a day (`86400s`, `1440m`)"));
    }
    Ok(duration)
}

fn not_a_duration(text: &str) -> String {
    format!("{text:?} is not a duration (e.g. `1500ms`, `2s`, `1m`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_the_url_syntax_with_bare_milliseconds() {
        assert_eq!(timeout("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(timeout("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(timeout("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(timeout("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(timeout("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "0", "0s", "1.5s", "2 s", "25h", "-1", "1441m"] {
            assert!(timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bare_ttl_stays_seconds() {
        assert_eq!(ttl("10"), Ok(Duration::from_secs(10)));
        assert_eq!(ttl("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(ttl("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(ttl("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(ttl("86400"), Ok(MAX));
        for bad in ["", "0", "0s", "86401", "1.5", "10x"] {
            assert!(ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bare_grace_stays_seconds_and_may_be_zero() {
        assert_eq!(grace("5"), Ok(Duration::from_secs(5)));
        assert_eq!(grace("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(grace("0"), Ok(Duration::ZERO));
        assert_eq!(grace("0s"), Ok(Duration::ZERO));
        assert_eq!(grace("0ms"), Ok(Duration::ZERO));
        assert_eq!(grace("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(grace("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", ".", "-1", "1e3", "86401", "nan", "5 s"] {
            assert!(grace(bad).is_err(), "{bad}");
        }
    }
}
