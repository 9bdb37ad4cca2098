//! Human-friendly durations (`90m`, `1h30m`, a bare number in the flag's unit) and RFC 3339 times.

use std::time::Duration;

/// Parses a duration such as `90m`, `2h`, `1h30m`, `45s`, `250ms` or `1d`; a bare number is taken
/// in `bare_unit`.
///
/// ```
/// use std::time::Duration;
/// use sessionize::config::parse_duration;
/// let minute = Duration::from_secs(60);
/// assert_eq!(parse_duration("1h30m", minute), Ok(90 * minute));
/// assert_eq!(parse_duration("45", minute), Ok(45 * minute));
/// assert!(parse_duration("1x", minute).is_err());
/// ```
pub fn parse_duration(text: &str, bare_unit: Duration) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(number) = text.parse::<f64>() {
        return if number.is_finite() && number >= 0.0 {
            Ok(bare_unit.mul_f64(number))
        } else {
            Err(format!("invalid duration {text:?}"))
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit after its last number"))?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {text:?} (use ms, s, m, h or d)"
                ));
            }
        };
        total += unit.mul_f64(number);
        rest = tail;
    }
    Ok(total)
}

/// `duration` in whole milliseconds, the unit of event times (the largest `u64` if longer).
pub fn whole_millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Parses an RFC 3339 time such as `2026-03-01T10:00:00Z` into epoch milliseconds.
///
/// ```
/// use sessionize::config::parse_timestamp_ms;
/// assert_eq!(parse_timestamp_ms("2026-03-01T00:00:00Z"), Ok(1_772_323_200_000));
/// assert!(parse_timestamp_ms("yesterday").is_err());
/// ```
pub fn parse_timestamp_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-03-01T10:00:00Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_numbers() {
        let hour = Duration::from_secs(3600);
        assert_eq!(parse_duration("2", hour), Ok(2 * hour));
        assert_eq!(parse_duration("1.5", hour), Ok(hour * 3 / 2));
        assert_eq!(parse_duration("90m", hour), Ok(hour * 3 / 2));
        assert_eq!(parse_duration("2h", hour), Ok(2 * hour));
        assert_eq!(
            parse_duration("250ms", hour),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("1h30m15s", hour),
            Ok(hour + Duration::from_secs(30 * 60 + 15))
        );
        assert!(parse_duration("", hour).is_err());
        assert!(parse_duration("-1", hour).is_err());
        assert!(parse_duration("5 parsecs", hour).is_err());
        assert!(parse_duration("h", hour).is_err());
    }

    #[test]
    fn times_are_rfc_3339_in_any_offset() {
        assert_eq!(
            parse_timestamp_ms("2026-03-01T01:00:00+01:00"),
            parse_timestamp_ms("2026-03-01T00:00:00Z")
        );
        assert_eq!(parse_timestamp_ms(" 1970-01-01T00:00:01.5Z "), Ok(1500));
        assert!(parse_timestamp_ms("2026-03-01").is_err());
    }

    #[test]
    fn whole_milliseconds_round_down_and_saturate() {
        assert_eq!(whole_millis(Duration::from_micros(1999)), 1);
        assert_eq!(whole_millis(Duration::MAX), u64::MAX);
    }
}
