//! Metric and label names as the OpenTelemetry → Prometheus compatibility specification writes
//! them (the same rules as Prometheus's `otlptranslator`, "underscore escaping with suffixes").
//!
//! - Metric names keep `[a-zA-Z0-9:]`; every run of other characters becomes one `_`. The unit
//!   is appended as a word (`s` → `seconds`, `By/s` → `bytes_per_second`, `{packets}` is
//!   dropped) unless the name already has it, monotonic sums end in `_total` and gauges of
//!   unit `1` in `_ratio` (never doubled), and a leading digit gets a `_` prefix.
//! - Label names keep `[a-zA-Z0-9]`; every run of other characters (`_` included) becomes one
//!   `_`, a leading digit or `_` gets a `key` prefix (`key_123`, `key_foo`), so no attribute
//!   can produce a label starting with `__`, which Prometheus reserves (`__name__`).

use std::borrow::Cow;

/// The OTLP metric kind, as naming needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricType {
    /// Gauge (and the `target_info` family).
    Gauge,
    /// Monotonic sum: `_total`.
    MonotonicCounter,
    /// Non-monotonic sum, written as a gauge without `_ratio`.
    NonMonotonicCounter,
    /// Explicit or exponential histogram, or summary.
    Distribution,
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// `unit` cleaned like a name token run: invalid characters to `_`, runs of `_` collapsed, no
/// leading `_`.
fn clean_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = if is_metric_char(c) { c } else { '_' };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    out
}

/// The main and "per" unit words of `unit` (`"By/s"` → `("bytes", "per_second")`); parts in
/// braces are annotations and dropped.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(unit_word(main))
    };
    let per = match parts.next().map(str::trim) {
        Some(per) if !per.is_empty() && !per.contains(['{', '}']) => {
            clean_unit(&format!("per_{}", per_unit_word(per)))
        }
        _ => String::new(),
    };
    (main, per)
}

/// The Prometheus metric family name of an OTLP metric, or `None` when nothing valid is left
/// (the metric is dropped and counted). Without `suffixes` only the characters are fixed.
pub(crate) fn metric_name(
    name: &str,
    unit: &str,
    ty: MetricType,
    suffixes: bool,
) -> Option<String> {
    let mut out = if suffixes {
        let mut tokens: Vec<&str> = name
            .split(|c: char| !is_metric_char(c))
            .filter(|t| !t.is_empty())
            .collect();
        let (main, per) = unit_suffixes(unit);
        let main = main.trim_end_matches('_');
        let per = if per == "per_" {
            ""
        } else {
            per.trim_end_matches('_')
        };
        let main = if tokens.contains(&main) { "" } else { main };
        let per = if tokens.contains(&per) { "" } else { per };
        if !main.is_empty() {
            tokens.push(main);
        }
        if !per.is_empty() {
            tokens.push(per);
        }
        if ty == MetricType::MonotonicCounter {
            tokens.retain(|t| *t != "total");
            tokens.push("total");
        }
        if unit == "1" && ty == MetricType::Gauge {
            tokens.retain(|t| *t != "ratio");
            tokens.push("ratio");
        }
        tokens.join("_")
    } else {
        name.split(|c: char| !is_metric_char(c) && c != '_')
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("_")
    };
    if out.bytes().all(|b| b == b'_') {
        return None;
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

/// The Prometheus label name of an attribute key, or `None` for an empty key.
pub(crate) fn label_name(key: &str) -> Option<Cow<'_, str>> {
    let valid = |b: u8| b.is_ascii_alphanumeric();
    let bytes = key.as_bytes();
    let first = *bytes.first()?;
    // Already a canonical label: letters/digits in words joined by single underscores.
    let canonical = first.is_ascii_alphabetic()
        && !key.ends_with("__")
        && bytes
            .windows(2)
            .all(|w| (valid(w[1]) || w[1] == b'_') && !(w[0] == b'_' && w[1] == b'_'))
        && bytes.iter().all(|&b| valid(b) || b == b'_');
    if canonical {
        return Some(Cow::Borrowed(key));
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') || out.is_empty() {
            out.push('_');
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') {
        out.insert_str(0, "key");
    }
    Some(Cow::Owned(out))
}

/// Bucket bounds and quantiles are written as attribute values are (`le="0.5"`, `+Inf`).
pub(crate) use crate::attributes::float_label;

#[cfg(test)]
mod tests {
    use super::*;
    use MetricType::*;

    fn name(n: &str, unit: &str, ty: MetricType) -> String {
        metric_name(n, unit, ty, true).unwrap()
    }

    #[test]
    fn units_become_words() {
        assert_eq!(
            name("http.server.request.duration", "s", Distribution),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            name("system.memory.usage", "By", Gauge),
            "system_memory_usage_bytes"
        );
        assert_eq!(
            name("network.io", "By/s", Gauge),
            "network_io_bytes_per_second"
        );
        assert_eq!(name("requests", "1/s", Gauge), "requests_per_second");
        assert_eq!(name("x", "m/mo", Gauge), "x_meters_per_month");
        assert_eq!(name("temp", "Cel", Gauge), "temp_celsius");
        assert_eq!(name("cpu", "%", Gauge), "cpu_percent");
        // Annotations are dropped; unknown units are appended cleaned.
        assert_eq!(
            name("system.network.dropped", "{packets}", MonotonicCounter),
            "system_network_dropped_total"
        );
        assert_eq!(
            name("system.network.dropped", "packets", Gauge),
            "system_network_dropped_packets"
        );
        assert_eq!(name("queue", "my-unit", Gauge), "queue_my_unit");
    }

    #[test]
    fn suffixes_are_not_doubled() {
        assert_eq!(
            name("request_duration_seconds", "s", Distribution),
            "request_duration_seconds"
        );
        assert_eq!(
            name("requests_total", "1", MonotonicCounter),
            "requests_total"
        );
        assert_eq!(
            name("total.requests", "", MonotonicCounter),
            "requests_total"
        );
        assert_eq!(name("cpu.utilization", "1", Gauge), "cpu_utilization_ratio");
        assert_eq!(name("cpu_ratio", "1", Gauge), "cpu_ratio");
        // _ratio only for gauges; non-monotonic sums get no _total.
        assert_eq!(name("used", "1", NonMonotonicCounter), "used");
        assert_eq!(name("used", "1", MonotonicCounter), "used_total");
        assert_eq!(
            name("bytes.sent", "By", MonotonicCounter),
            "bytes_sent_total"
        );
    }

    #[test]
    fn invalid_characters_and_leading_digits() {
        assert_eq!(
            name("(lambda).function.executions(#)", "", Gauge),
            "lambda_function_executions"
        );
        assert_eq!(name("a__b..c", "", Gauge), "a_b_c");
        assert_eq!(name("2xx.count", "", Gauge), "_2xx_count");
        assert_eq!(name("ns:metric", "", Gauge), "ns:metric");
        assert_eq!(name("höhe", "", Gauge), "h_he");
        assert_eq!(metric_name("...", "", Gauge, true), None);
        assert_eq!(metric_name("", "", Gauge, true), None);
        // Without suffixes: characters only, underscores kept.
        assert_eq!(
            metric_name("http.duration__x", "s", MonotonicCounter, false).unwrap(),
            "http_duration__x"
        );
        assert_eq!(metric_name("9lives", "", Gauge, false).unwrap(), "_9lives");
    }

    #[test]
    fn label_names() {
        assert_eq!(label_name("http.method").unwrap(), "http_method");
        assert_eq!(label_name("method").unwrap(), "method");
        assert!(matches!(label_name("a_b1"), Some(Cow::Borrowed(_))));
        assert_eq!(label_name("a..b--c").unwrap(), "a_b_c");
        assert_eq!(label_name("123").unwrap(), "key_123");
        assert_eq!(label_name("_foo").unwrap(), "key_foo");
        assert_eq!(label_name("__name__").unwrap(), "key_name_");
        assert_eq!(label_name("__x").unwrap(), "key_x");
        assert_eq!(label_name("a__b").unwrap(), "a_b");
        assert_eq!(label_name("ключ").unwrap(), "key_");
        assert_eq!(label_name(""), None);
    }
}
