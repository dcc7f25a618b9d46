//! Byte sizes (`4KiB`, `1.5MB`, `512`) and durations (`30s`, `500ms`, `1m30s`) as written
//! on the command line, and their display in reports.

use std::time::Duration;

use crate::error::ParseError;

/// Parses a byte size: a number (decimals allowed) and an optional unit, binary (`KiB`,
/// `MiB`, `GiB`, `TiB`, and the one-letter `K`, `M`, `G`, `T`) or decimal (`KB`, `MB`,
/// `GB`, `TB`); case-insensitive, spaces allowed between number and unit.
///
/// # Errors
///
/// [`ParseError`] for an empty value, a bad number, an unknown unit or a size above `u64`.
pub fn parse_size(value: &str) -> Result<u64, ParseError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ParseError::Empty);
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(ParseError::Unit {
                value: value.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    if number.is_empty() {
        return Err(ParseError::Number(value.to_owned()));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| ParseError::Number(value.to_owned()));
    }
    let fractional: f64 = number
        .parse()
        .map_err(|_| ParseError::Number(value.to_owned()))?;
    let bytes = (fractional * multiplier as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(ParseError::Number(value.to_owned()));
    }
    Ok(bytes as u64)
}

/// Parses a duration: one or more `number unit` pairs (`ms`, `s`, `m`, `h`), e.g. `30s`,
/// `500ms`, `1m30s`, `1.5h`; a bare number is seconds.
///
/// # Errors
///
/// [`ParseError`] for an empty value, a bad number or an unknown unit.
pub fn parse_duration(value: &str) -> Result<Duration, ParseError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ParseError::Empty);
    }
    if let Ok(secs) = v.parse::<f64>() {
        return secs_to_duration(secs, value);
    }
    let mut total = 0.0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let n: f64 = number
            .parse()
            .map_err(|_| ParseError::Number(value.to_owned()))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(ParseError::Unit {
                    value: value.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        total += n * scale;
        rest = next;
    }
    secs_to_duration(total, value)
}

fn secs_to_duration(secs: f64, value: &str) -> Result<Duration, ParseError> {
    Duration::try_from_secs_f64(secs).map_err(|_| ParseError::Number(value.to_owned()))
}

/// Formats a byte count with the largest binary unit that keeps it at or above 1
/// (`4 KiB`, `1.5 MiB`, `512 B`).
#[must_use]
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a latency in microseconds as µs, ms or s with three significant figures.
#[must_use]
pub fn format_micros(micros: f64) -> String {
    if micros < 1_000.0 {
        format!("{micros:.0}µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2}ms", micros / 1_000.0)
    } else {
        format!("{:.2}s", micros / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4 kib"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("-4KiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations_parse_with_units_and_compounds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes_format_with_the_largest_unit() {
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(100), "100 B");
    }

    proptest! {
        #[test]
        fn any_size_round_trips_through_each_unit(n in 0u64..1 << 30, unit in 0usize..5) {
            let (suffix, mult) = [("B", 1u64), ("KiB", 1 << 10), ("MiB", 1 << 20), ("KB", 1000), ("MB", 1_000_000)][unit];
            let n = n % (u64::MAX / mult / 2).min(1 << 30);
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n * mult));
        }

        #[test]
        fn any_compound_duration_adds_up(m in 0u64..1000, s in 0u64..60, ms in 0u64..1000) {
            prop_assert_eq!(
                parse_duration(&format!("{m}m{s}s{ms}ms")),
                Ok(Duration::from_millis(m * 60_000 + s * 1000 + ms))
            );
        }

        #[test]
        fn garbage_never_panics(s in ".{0,12}") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
        }
    }
}
