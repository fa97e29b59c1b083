//! The Prometheus text exposition format (version 0.0.4): the metric families components hand
//! to telemetry, and the one renderer that writes them, escaping help texts and label values.
//!
//! A component describes what it counts as [`MetricFamily`] values added to an [`Exposition`]
//! (see [`super::Families`]); a family several components or cores add to is written once, with
//! one `# HELP` and one `# TYPE` line and every sample, in the order they were added.

use std::fmt::{Display, Write as _};

/// The type of a metric family (its `# TYPE` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// A value that only grows (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Quantiles (label `quantile`) with `_sum` and `_count` samples.
    Summary,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
        }
    }
}

/// The value of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleValue {
    /// A count or a size.
    Unsigned(u64),
    /// A difference (Kafka lag).
    Signed(i64),
    /// Seconds, quantiles.
    Float(f64),
}

impl From<u64> for SampleValue {
    fn from(v: u64) -> Self {
        SampleValue::Unsigned(v)
    }
}

impl From<usize> for SampleValue {
    fn from(v: usize) -> Self {
        SampleValue::Unsigned(v as u64)
    }
}

impl From<i64> for SampleValue {
    fn from(v: i64) -> Self {
        SampleValue::Signed(v)
    }
}

impl From<f64> for SampleValue {
    fn from(v: f64) -> Self {
        SampleValue::Float(v)
    }
}

impl From<bool> for SampleValue {
    fn from(v: bool) -> Self {
        SampleValue::Unsigned(u64::from(v))
    }
}

/// One sample of a family: a name suffix (`_sum`, `_count` of a summary, or none), its labels
/// and its value.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    suffix: &'static str,
    labels: Vec<(&'static str, String)>,
    value: SampleValue,
}

/// A metric family: its name, type, help text and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFamily {
    name: String,
    kind: MetricType,
    help: String,
    samples: Vec<Sample>,
}

impl MetricFamily {
    /// Adds a sample with `labels` (name, value; values are escaped when rendered).
    pub fn sample(
        &mut self,
        labels: &[(&'static str, &dyn Display)],
        value: impl Into<SampleValue>,
    ) -> &mut Self {
        self.sample_with_suffix("", labels, value)
    }

    /// Adds a sample of the series `name` + `suffix` (`_sum`, `_count` of a summary).
    pub fn sample_with_suffix(
        &mut self,
        suffix: &'static str,
        labels: &[(&'static str, &dyn Display)],
        value: impl Into<SampleValue>,
    ) -> &mut Self {
        self.sample_owned(suffix, label_values(labels), value)
    }

    /// [`MetricFamily::sample_with_suffix`] with labels already owned.
    pub fn sample_owned(
        &mut self,
        suffix: &'static str,
        labels: LabelValues,
        value: impl Into<SampleValue>,
    ) -> &mut Self {
        debug_assert!(labels.iter().all(|(name, _)| is_label_name(name)));
        self.samples.push(Sample {
            suffix,
            labels,
            value: value.into(),
        });
        self
    }
}

/// The labels of a sample, owned: `(name, value)`.
pub type LabelValues = Vec<(&'static str, String)>;

/// `labels`, owned.
pub fn label_values(labels: &Labels<'_>) -> LabelValues {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The metric families of one scrape, in the order they were first added.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

impl Exposition {
    /// The family `name`, added with `kind` and `help` if it is not there yet.
    pub fn family(
        &mut self,
        name: impl Into<String>,
        kind: MetricType,
        help: impl Into<String>,
    ) -> &mut MetricFamily {
        let name = name.into();
        debug_assert!(is_metric_name(&name), "{name}");
        match self.families.iter().position(|f| f.name == name) {
            Some(i) => {
                debug_assert_eq!(self.families[i].kind, kind, "{name}");
                &mut self.families[i]
            }
            None => {
                self.families.push(MetricFamily {
                    name,
                    kind,
                    help: help.into(),
                    samples: Vec::new(),
                });
                self.families.last_mut().expect("just pushed")
            }
        }
    }

    /// [`Exposition::family`] of a counter.
    pub fn counter(
        &mut self,
        name: impl Into<String>,
        help: impl Into<String>,
    ) -> &mut MetricFamily {
        self.family(name, MetricType::Counter, help)
    }

    /// [`Exposition::family`] of a gauge.
    pub fn gauge(&mut self, name: impl Into<String>, help: impl Into<String>) -> &mut MetricFamily {
        self.family(name, MetricType::Gauge, help)
    }

    /// [`Exposition::family`] of a summary.
    pub fn summary(
        &mut self,
        name: impl Into<String>,
        help: impl Into<String>,
    ) -> &mut MetricFamily {
        self.family(name, MetricType::Summary, help)
    }

    /// Adds one family per column (name, type, help, value of a row), with one sample per row
    /// (the row's labels and the column's value).
    pub fn table<T>(&mut self, columns: &[Column<T>], rows: &[(LabelValues, &T)]) {
        for (name, kind, help, value) in columns {
            let family = self.family(*name, *kind, *help);
            for (labels, row) in rows {
                family.sample_owned("", labels.clone(), value(row));
            }
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
            for s in &f.samples {
                out.push_str(&f.name);
                out.push_str(s.suffix);
                if !s.labels.is_empty() {
                    out.push('{');
                    for (i, (name, value)) in s.labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(name);
                        out.push_str("=\"");
                        escape_label_value(value, &mut out);
                        out.push('"');
                    }
                    out.push('}');
                }
                out.push(' ');
                write_value(s.value, &mut out);
                out.push('\n');
            }
        }
        out
    }
}

/// The labels of one sample: `(name, value)`.
pub type Labels<'a> = [(&'static str, &'a dyn Display)];

/// One column of [`Exposition::table`]: a family's name, type, help text, and how a row gives
/// its value.
pub type Column<T> = (
    &'static str,
    MetricType,
    &'static str,
    fn(&T) -> SampleValue,
);

/// A help text: backslash and newline escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and newline escaped.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(value: SampleValue, out: &mut String) {
    let _ = match value {
        SampleValue::Unsigned(v) => write!(out, "{v}"),
        SampleValue::Signed(v) => write!(out, "{v}"),
        SampleValue::Float(v) if v.is_nan() => write!(out, "NaN"),
        SampleValue::Float(v) if v.is_infinite() => {
            write!(out, "{}", if v > 0.0 { "+Inf" } else { "-Inf" })
        }
        SampleValue::Float(v) => write!(out, "{v}"),
    };
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A checker of the text exposition format, for tests: every line is a `# HELP`, a `# TYPE` or
/// a sample of the family the last `# TYPE` named; names, label names and values follow the
/// grammar; label values are unescaped. Returns the samples as (series name, labels, value).
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<Vec<ParsedSample>, String> {
    let mut samples = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |what: &str| Err(format!("line {}: {what}: {line:?}", n + 1));
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let Some((name, help)) = rest.split_once(' ') else {
                return fail("HELP without text");
            };
            if !is_metric_name(name) || !seen.insert(name.to_string()) {
                return fail("invalid or repeated family name");
            }
            if help.contains('\n') || unescape(help, false).is_none() {
                return fail("invalid escape in HELP");
            }
            family = Some((name.to_string(), String::new()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else {
                return fail("TYPE without a type");
            };
            if family.as_ref().map(|f| f.0.as_str()) != Some(name)
                || !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind)
            {
                return fail("TYPE does not follow its HELP, or an unknown type");
            }
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, kind)) = &family else {
            return fail("sample before any TYPE");
        };
        let series_end = line.find(['{', ' ']).unwrap_or(line.len());
        let series = &line[..series_end];
        let suffix_ok = match kind.as_str() {
            "summary" => {
                series == name
                    || series == format!("{name}_sum")
                    || series == format!("{name}_count")
            }
            _ => series == name,
        };
        if !suffix_ok {
            return fail("sample of another family");
        }
        let mut i = series_end;
        let mut labels = Vec::new();
        if line[i..].starts_with('{') {
            i += 1;
            loop {
                if line[i..].starts_with('}') {
                    i += 1;
                    break;
                }
                let Some(eq) = line[i..].find('=') else {
                    return fail("label without a value");
                };
                let label = &line[i..i + eq];
                i += eq + 1;
                if !is_label_name(label) || !line[i..].starts_with('"') {
                    return fail("invalid label name or unquoted value");
                }
                i += 1;
                let mut raw = String::new();
                let mut closed = false;
                let mut chars = line[i..].char_indices();
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e)) => {
                                raw.push('\\');
                                raw.push(e);
                            }
                            None => return fail("dangling escape"),
                        },
                        '"' => {
                            i += j + 1;
                            closed = true;
                            break;
                        }
                        c => raw.push(c),
                    }
                }
                if !closed {
                    return fail("unterminated label value");
                }
                let Some(value) = unescape(&raw, true) else {
                    return fail("invalid escape in a label value");
                };
                labels.push((label.to_string(), value));
                if line[i..].starts_with(',') {
                    i += 1;
                } else if line[i..].starts_with('}') {
                    i += 1;
                    break;
                } else {
                    return fail("expected , or } after a label");
                }
            }
        }
        let rest = &line[i..];
        let Some(value) = rest.strip_prefix(' ') else {
            return fail("no space before the value");
        };
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => return fail("invalid value"),
            },
        };
        samples.push(ParsedSample {
            series: series.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// A sample read back by [`parse`].
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedSample {
    pub(crate) series: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

/// Undoes the escapes of a label value (`\\`, `\"`, `\n`) or a help text (`\\`, `\n`).
#[cfg(test)]
fn unescape(s: &str, quotes: bool) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            '"' if quotes => out.push('"'),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped_and_the_text_parses() {
        let name = "a\"b\\c\nd";
        let mut e = Exposition::default();
        e.counter(
            "shardtel_x_total",
            "Items sent to \"x\" (a\\b)\nsecond line.",
        )
        .sample(&[("exporter", &name), ("core", &0)], 7u64)
        .sample(&[("exporter", &"plain"), ("core", &1)], 8u64);
        e.gauge("shardtel_y", "A gauge without labels.")
            .sample(&[], -3i64);
        let s = e.summary("shardtel_z_seconds", "A summary.");
        s.sample(&[("quantile", &0.5)], 0.25)
            .sample_with_suffix("_sum", &[], 1.5)
            .sample_with_suffix("_count", &[], 6u64);
        // The same family again (another core): one header, samples appended.
        e.counter("shardtel_x_total", "ignored")
            .sample(&[("exporter", &"late"), ("core", &2)], 9u64);
        let text = e.render();
        assert!(
            text.contains("shardtel_x_total{exporter=\"a\\\"b\\\\c\\nd\",core=\"0\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP shardtel_x_total Items sent to \"x\" (a\\\\b)\\nsecond line.\n")
        );
        assert_eq!(text.matches("# TYPE shardtel_x_total counter").count(), 1);
        assert!(text.contains("shardtel_y -3\n"));
        assert!(text.contains("shardtel_z_seconds_sum 1.5\n"));
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(samples.len(), 7);
        assert_eq!(
            samples[0],
            ParsedSample {
                series: "shardtel_x_total".into(),
                labels: vec![
                    ("exporter".into(), name.into()),
                    ("core".into(), "0".into())
                ],
                value: 7.0,
            }
        );
        assert_eq!(samples[2].labels[0].1, "late");
    }

    #[test]
    fn the_checker_refuses_unescaped_text() {
        for bad in [
            "# HELP x a\n# TYPE x counter\nx{l=\"a\"b\"} 1\n",
            "# HELP x a\n# TYPE x counter\nx{l=\"a\\qb\"} 1\n",
            "# HELP x a\n# TYPE x counter\ny 1\n",
            "# HELP x a\n# TYPE x counter\nx{l=\"a\"} one\n",
            "x 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_render_as_prometheus_numbers() {
        let mut out = String::new();
        for v in [
            SampleValue::Float(f64::NAN),
            SampleValue::Float(f64::INFINITY),
            SampleValue::Float(2.0),
            SampleValue::Unsigned(u64::MAX),
        ] {
            write_value(v, &mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf 2 18446744073709551615 ");
    }
}
