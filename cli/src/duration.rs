//! Duration flags: one syntax for every TTL, timeout, grace period and schedule, the
//! library's ([`parse_duration`]: `1500ms`, `2s`, `1m`, `1h`), the same as in URLs.
//!
//! A bare number is refused with both readings in the message, on every flag: scripts
//! write `--ttl 30` meaning seconds, URLs and most drivers read a bare timeout as
//! milliseconds, and either reading makes the other's values a thousand times off
//! without a word. Only `--grace` takes a bare `0`, which means the same in every unit.

use std::time::Duration;

use distsync::store::raw::parse_duration;

/// The longest duration any flag takes: a day.
const MAX: Duration = Duration::from_secs(86_400);

/// `--timeout`, `--ttl`, `schedule`'s EVERY and every other duration flag but
/// `--grace`: `1500ms`, `2s`, `1m`, `1h`; more than zero, at most a day.
pub(crate) fn positive(text: &str) -> Result<Duration, String> {
    at_most_a_day(text, parse_duration(text)?)
}

/// `--grace`: `1500ms`, `2s`, `1m`, `1h`, or zero (`0`, `0s`, `0ms`: SIGTERM and
/// SIGKILL then both come at the deadline).
pub(crate) fn grace(text: &str) -> Result<Duration, String> {
    let zero = ["", "ms", "s", "m", "h"].iter().any(|unit| {
        text.strip_suffix(unit)
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b == b'0'))
    });
    if zero {
        return Ok(Duration::ZERO);
    }
    at_most_a_day(text, parse_duration(text)?)
}

fn at_most_a_day(text: &str, duration: Duration) -> Result<Duration, String> {
    if duration > MAX {
        return Err(format!("{text:?}: at most a day (`86400s`, `1440m`)"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_flag_takes_the_url_syntax() {
        for parse in [positive, grace] {
            assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
            assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
            assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
            assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
            assert_eq!(parse("86400s"), Ok(MAX));
            for bad in ["", "1.5s", "2 s", "25h", "-1", "1441m", "10x", "0.5", "nan"] {
                assert!(parse(bad).is_err(), "{bad}");
            }
        }
    }

    #[test]
    fn a_bare_number_is_refused_with_both_spellings() {
        for parse in [positive, grace] {
            let error = parse("30").unwrap_err();
            assert!(
                error.contains("`30ms`") && error.contains("`30s`"),
                "{error}"
            );
        }
    }

    #[test]
    fn only_grace_may_be_zero() {
        for zero in ["0", "0s", "0ms", "00"] {
            assert_eq!(grace(zero), Ok(Duration::ZERO), "{zero}");
            assert!(positive(zero).is_err(), "{zero}");
        }
    }
}
