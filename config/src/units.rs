//! Human units: byte sizes (`"4MiB"`) and durations (`"1h30m"`), parsed and formatted.

use std::time::Duration;

use crate::error::ConfigErrorKind;

/// Parses a byte size: a plain number of bytes (`"1024"`) or a number with a unit, case-insensitive:
/// `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000) and `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).
/// Fractions are allowed with a unit (`"1.5MiB"`) and rounded down to whole bytes.
///
/// ```
/// assert_eq!(shardtel_config::parse_size("4MiB").unwrap(), 4 * 1024 * 1024);
/// assert_eq!(shardtel_config::parse_size("512 KB").unwrap(), 512_000);
/// assert!(shardtel_config::parse_size("4 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, ConfigErrorKind> {
    let invalid = || ConfigErrorKind::InvalidSize {
        value: text.to_string(),
    };
    let (number, rest) = split_number(text.trim()).ok_or_else(invalid)?;
    let unit: u64 = match rest.trim_start().to_ascii_lowercase().as_str() {
        "" if number.frac_digits == 0 => 1,
        "b" if number.frac_digits == 0 => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    let bytes = number.scale(u128::from(unit)).ok_or_else(invalid)?;
    u64::try_from(bytes).map_err(|_| invalid())
}

/// Parses a duration: one or more `<number><unit>` parts, e.g. `"200ms"`, `"10s"`, `"1m"`,
/// `"1h30m"`, `"1.5s"`. Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`. `"0"` alone is zero.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(shardtel_config::parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(shardtel_config::parse_duration("200ms").unwrap(), Duration::from_millis(200));
/// assert!(shardtel_config::parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ConfigErrorKind> {
    let invalid = || ConfigErrorKind::InvalidDuration {
        value: text.to_string(),
    };
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after_number) = split_number(rest).ok_or_else(invalid)?;
        let unit_len = after_number
            .find(|c: char| !(c.is_ascii_alphabetic() || c == 'µ'))
            .unwrap_or(after_number.len());
        let nanos_per_unit: u128 = match &after_number[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            _ => return Err(invalid()),
        };
        let nanos = number.scale(nanos_per_unit).ok_or_else(invalid)?;
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(invalid)?;
        rest = after_number[unit_len..].trim_start();
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| invalid())?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration the way [`parse_duration`] reads it: `"1h30m"`, `"200ms"`, `"0s"`.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_string();
    }
    let mut nanos = duration.as_nanos();
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= size {
            out.push_str(&format!("{}{unit}", nanos / size));
            nanos %= size;
        }
    }
    out
}

/// Formats a byte size with the largest binary unit that divides it: `"4MiB"`, `"1536 bytes"`.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    if bytes == 1 {
        "1 byte".to_string()
    } else {
        format!("{bytes} bytes")
    }
}

/// A decimal number split into its integer part and up to 9 fraction digits.
struct Number {
    int: u128,
    frac: u128,
    frac_digits: u32,
}

impl Number {
    /// `self × unit`, fraction rounded down; `None` on overflow.
    fn scale(&self, unit: u128) -> Option<u128> {
        let whole = self.int.checked_mul(unit)?;
        let frac = self.frac.checked_mul(unit)? / 10u128.pow(self.frac_digits);
        whole.checked_add(frac)
    }
}

/// Splits a leading `digits[.digits]` off `text`.
fn split_number(text: &str) -> Option<(Number, &str)> {
    let int_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if int_len == 0 || int_len > 30 {
        return None;
    }
    let int = text[..int_len].parse().ok()?;
    let rest = &text[int_len..];
    let Some(after_dot) = rest.strip_prefix('.') else {
        return Some((
            Number {
                int,
                frac: 0,
                frac_digits: 0,
            },
            rest,
        ));
    };
    let frac_len = after_dot
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after_dot.len());
    if frac_len == 0 || frac_len > 9 {
        return None;
    }
    let frac = after_dot[..frac_len].parse().ok()?;
    Some((
        Number {
            int,
            frac,
            frac_digits: frac_len as u32,
        },
        &after_dot[frac_len..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("12B").unwrap(), 12);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("4mib").unwrap(), 4 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("4MB").unwrap(), 4_000_000);
        assert_eq!(parse_size(" 2 GiB ").unwrap(), 2 << 30);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            "",
            "MiB",
            "4 parsecs",
            "-1",
            "1.5",
            "1.5B",
            "4MiBs",
            "1e3",
            "4.MiB",
            "99999999TiB",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid size {bad:?} (expected a number of bytes or a string like \"512KiB\", \"4MiB\", \"1GB\")")
            );
        }
        assert!(parse_size("99999999999999999999999999999999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("250µs").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "",
            "10",
            "s",
            "5x",
            "1h30",
            "-1s",
            "1.s",
            "10 seconds",
            "1e3s",
            "999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid duration {bad:?} (expected a string like \"200ms\", \"10s\", \"1m\", \"1h30m\")")
            );
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in [
            "0s", "200ms", "10s", "5m", "1h30m", "1s500ms", "250us", "7ns", "48h",
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(1536), "1536 bytes");
        assert_eq!(format_size(1), "1 byte");
        assert_eq!(format_size(0), "0 bytes");
        assert_eq!(format_size(3 << 30), "3GiB");
        assert_eq!(parse_size(&format_size(512 << 10)).unwrap(), 512 << 10);
    }
}
