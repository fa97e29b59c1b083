//! The text exposition formats: Prometheus text 0.0.4 and OpenMetrics 1.0, as one line parser
//! with a [`Flavor`] switch.
//!
//! [`TextParser::next_entry`] returns one [`Entry`] per meaningful line (`# HELP`, `# TYPE`,
//! `# UNIT`, a sample), borrowing names and unescaped values from the body; label values are
//! copied only when they hold escapes. Every line is checked as Prometheus's own parsers check
//! it (metric and label name characters, quoting, escapes, UTF-8 label values, numbers,
//! timestamps), so hostile text gets a [`ParseError`] naming the line, never a panic. Where the
//! two flavors differ:
//!
//! - Prometheus 0.0.4: any run of spaces and tabs separates tokens, blank lines and other `#`
//!   comments are skipped, timestamps are integer milliseconds, `untyped` is the unknown type.
//! - OpenMetrics: `# UNIT` and `# EOF` (required, last), no other comments, timestamps are
//!   seconds (float), exemplars (`# {trace_id="..."} 1.0 1.5e9`) after a sample, and the types
//!   `gaugehistogram`, `stateset`, `info`, `unknown`.

use std::borrow::Cow;

/// Which text format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

/// A metric family's type (`# TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics).
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `unknown` (OpenMetrics), `untyped` (0.0.4), or no `# TYPE` at all.
    Unknown,
}

impl MetricKind {
    fn parse(word: &[u8], flavor: Flavor) -> Option<MetricKind> {
        Some(match (word, flavor) {
            (b"counter", _) => MetricKind::Counter,
            (b"gauge", _) => MetricKind::Gauge,
            (b"histogram", _) => MetricKind::Histogram,
            (b"summary", _) => MetricKind::Summary,
            (b"untyped", Flavor::Prometheus) => MetricKind::Unknown,
            (b"unknown", Flavor::OpenMetrics) => MetricKind::Unknown,
            (b"gaugehistogram", Flavor::OpenMetrics) => MetricKind::GaugeHistogram,
            (b"info", Flavor::OpenMetrics) => MetricKind::Info,
            (b"stateset", Flavor::OpenMetrics) => MetricKind::StateSet,
            _ => return None,
        })
    }

    /// The type's name as Prometheus's metadata writes it (`unknown` for untyped).
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::GaugeHistogram => "gaugehistogram",
            MetricKind::Summary => "summary",
            MetricKind::Info => "info",
            MetricKind::StateSet => "stateset",
            MetricKind::Unknown => "unknown",
        }
    }
}

/// One label of a sample or exemplar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    /// The label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    pub name: Cow<'a, str>,
    /// The value, unescaped.
    pub value: Cow<'a, str>,
}

/// The labels a sample line carries, and those of its exemplar; reused from line to line.
#[derive(Debug, Default)]
pub struct LineLabels<'a> {
    /// The sample's labels, in the order written.
    pub sample: Vec<Label<'a>>,
    /// The exemplar's labels (OpenMetrics), when [`Sample::exemplar`] is set.
    pub exemplar: Vec<Label<'a>>,
}

/// An exemplar's value and time (its labels are in [`LineLabels::exemplar`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExemplarPoint {
    /// The exemplar's value.
    pub value: f64,
    /// Its timestamp in milliseconds, when given.
    pub timestamp_ms: Option<i64>,
}

/// One sample line (its labels are in [`LineLabels::sample`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The series name as written (`foo_bucket`, `foo_total`, ...).
    pub name: &'a str,
    /// The value (NaN and ±Inf allowed).
    pub value: f64,
    /// The explicit timestamp in milliseconds, when given.
    pub timestamp_ms: Option<i64>,
    /// The exemplar (OpenMetrics only).
    pub exemplar: Option<ExemplarPoint>,
}

/// What one line said.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry<'a> {
    /// `# TYPE family kind`.
    Type {
        /// The family name.
        family: &'a str,
        /// Its type.
        kind: MetricKind,
    },
    /// `# HELP family text` (unescaped).
    Help {
        /// The family name.
        family: &'a str,
        /// The text.
        text: Cow<'a, str>,
    },
    /// `# UNIT family unit` (OpenMetrics).
    Unit {
        /// The family name.
        family: &'a str,
        /// The unit word (`seconds`, `bytes`).
        unit: &'a str,
    },
    /// A sample.
    Sample(Sample<'a>),
}

/// Why a body is not valid exposition text: the 1-based line and what is wrong there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Parses a text exposition body line by line; see the module docs.
#[derive(Debug)]
pub struct TextParser<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    flavor: Flavor,
    eof: bool,
}

/// The rest of one line, consumed token by token.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn skip_blanks(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
        self.i - start
    }

    /// A run of bytes up to the next blank (or the end).
    fn word(&mut self) -> &'a [u8] {
        let start = self.i;
        while !matches!(self.peek(), None | Some(b' ' | b'\t')) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
}

fn is_name_start(b: u8, metric: bool) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || (metric && b == b':')
}

fn is_name_char(b: u8, metric: bool) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || (metric && b == b':')
}

/// Reads a metric (`metric`) or label name; `None` when the cursor is not at one.
fn name<'a>(c: &mut Cursor<'a>, metric: bool) -> Option<&'a str> {
    let start = c.i;
    if !c.peek().is_some_and(|b| is_name_start(b, metric)) {
        return None;
    }
    c.i += 1;
    while c.peek().is_some_and(|b| is_name_char(b, metric)) {
        c.i += 1;
    }
    // ASCII only, checked above.
    std::str::from_utf8(&c.s[start..c.i]).ok()
}

/// A float as Go's `strconv.ParseFloat` reads it for Prometheus (decimal, exponent,
/// `NaN`, `Inf`, `+Inf`, `-Inf`, `Infinity`, any case).
pub fn parse_float(word: &[u8]) -> Option<f64> {
    if word.is_empty() || word.len() > 64 {
        return None;
    }
    // Rust's parser accepts what Go's does for decimal text, and the same special words;
    // neither accepts a blank or a trailing character.
    let text = std::str::from_utf8(word).ok()?;
    text.parse::<f64>().ok()
}

fn parse_timestamp(word: &[u8], flavor: Flavor) -> Result<i64, &'static str> {
    match flavor {
        Flavor::Prometheus => std::str::from_utf8(word)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or("invalid timestamp (expected integer milliseconds)"),
        Flavor::OpenMetrics => {
            let seconds = parse_float(word).ok_or("invalid timestamp")?;
            if !seconds.is_finite() {
                return Err("invalid timestamp");
            }
            let ms = seconds * 1000.0;
            if !(-9.2e18..=9.2e18).contains(&ms) {
                return Err("timestamp out of range");
            }
            Ok(ms as i64)
        }
    }
}

/// Unescapes `raw` (the text between the quotes of a label value, or a HELP text): `\\`,
/// `\n` and `\"` (a backslash before anything else stays as written, as Prometheus keeps it).
fn unescape(raw: &[u8]) -> Result<Cow<'_, str>, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "invalid UTF-8")?;
    if !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Ok(Cow::Owned(out))
}

/// `{name="value",...}` at the cursor (which is at `{`), into `out`.
fn labels<'a>(c: &mut Cursor<'a>, out: &mut Vec<Label<'a>>) -> Result<(), &'static str> {
    debug_assert_eq!(c.peek(), Some(b'{'));
    c.i += 1;
    loop {
        c.skip_blanks();
        if c.eat(b'}') {
            return Ok(());
        }
        let label = name(c, false).ok_or("invalid label name")?;
        c.skip_blanks();
        if !c.eat(b'=') {
            return Err("expected '=' after label name");
        }
        c.skip_blanks();
        if !c.eat(b'"') {
            return Err("expected '\"' to start a label value");
        }
        let start = c.i;
        loop {
            match c.peek() {
                None => return Err("unterminated label value"),
                Some(b'"') => break,
                Some(b'\\') => c.i += 2,
                Some(_) => c.i += 1,
            }
        }
        let value = unescape(&c.s[start..c.i]).map_err(|_| "invalid UTF-8 in label value")?;
        c.i += 1;
        out.push(Label {
            name: Cow::Borrowed(label),
            value,
        });
        c.skip_blanks();
        if c.eat(b',') {
            continue;
        }
        if c.eat(b'}') {
            return Ok(());
        }
        return Err("expected ',' or '}' after label value");
    }
}

impl<'a> TextParser<'a> {
    /// A parser over `body` in `flavor`.
    pub fn new(body: &'a [u8], flavor: Flavor) -> Self {
        TextParser {
            buf: body,
            pos: 0,
            line: 0,
            flavor,
            eof: false,
        }
    }

    /// The 1-based number of the line last read.
    pub fn line(&self) -> usize {
        self.line
    }

    fn error(&self, reason: &'static str) -> ParseError {
        ParseError {
            line: self.line,
            reason,
        }
    }

    /// The next entry, its labels written to `labels` (cleared first); `Ok(None)` at the end of
    /// the body (for OpenMetrics: after `# EOF`, which must be there).
    pub fn next_entry(
        &mut self,
        labels: &mut LineLabels<'a>,
    ) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            if self.pos >= self.buf.len() {
                if self.flavor == Flavor::OpenMetrics && !self.eof {
                    return Err(self.error("missing '# EOF' at the end"));
                }
                return Ok(None);
            }
            let rest = &self.buf[self.pos..];
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(n) => (&rest[..n], self.pos + n + 1),
                None => (rest, self.buf.len()),
            };
            self.pos = next;
            self.line += 1;
            if self.eof {
                return Err(self.error("data after '# EOF'"));
            }
            match self.parse_line(line, labels) {
                Ok(Some(entry)) => return Ok(Some(entry)),
                Ok(None) => continue,
                Err(reason) => return Err(self.error(reason)),
            }
        }
    }

    fn parse_line(
        &mut self,
        line: &'a [u8],
        labels: &mut LineLabels<'a>,
    ) -> Result<Option<Entry<'a>>, &'static str> {
        let om = self.flavor == Flavor::OpenMetrics;
        let mut c = Cursor { s: line, i: 0 };
        if !om {
            c.skip_blanks();
        }
        match c.peek() {
            None if om => return Err("empty line"),
            None => return Ok(None),
            Some(b'#') => return self.comment(c),
            _ => {}
        }
        labels.sample.clear();
        labels.exemplar.clear();
        let metric = name(&mut c, true).ok_or("invalid metric name")?;
        if c.peek() == Some(b'{') {
            self::labels(&mut c, &mut labels.sample)?;
        }
        if c.skip_blanks() == 0 {
            return Err("expected a blank before the value");
        }
        let value = parse_float(c.word()).ok_or("invalid sample value")?;
        c.skip_blanks();
        let mut timestamp_ms = None;
        if !c.done() && c.peek() != Some(b'#') {
            timestamp_ms = Some(parse_timestamp(c.word(), self.flavor)?);
            c.skip_blanks();
        }
        let mut exemplar = None;
        if c.peek() == Some(b'#') {
            if !om {
                return Err("unexpected '#' after the sample (exemplars need OpenMetrics)");
            }
            c.i += 1;
            if c.skip_blanks() == 0 || c.peek() != Some(b'{') {
                return Err("invalid exemplar (expected '# {labels} value')");
            }
            self::labels(&mut c, &mut labels.exemplar)?;
            let label_chars: usize = labels
                .exemplar
                .iter()
                .map(|l| l.name.chars().count() + l.value.chars().count())
                .sum();
            if label_chars > 128 {
                return Err("exemplar labels longer than 128 characters");
            }
            if c.skip_blanks() == 0 {
                return Err("expected a blank before the exemplar value");
            }
            let value = parse_float(c.word()).ok_or("invalid exemplar value")?;
            c.skip_blanks();
            let mut ts = None;
            if !c.done() {
                ts = Some(parse_timestamp(c.word(), self.flavor)?);
                c.skip_blanks();
            }
            exemplar = Some(ExemplarPoint {
                value,
                timestamp_ms: ts,
            });
        }
        if !c.done() {
            return Err("unexpected text after the sample");
        }
        Ok(Some(Entry::Sample(Sample {
            name: metric,
            value,
            timestamp_ms,
            exemplar,
        })))
    }

    fn comment(&mut self, mut c: Cursor<'a>) -> Result<Option<Entry<'a>>, &'static str> {
        let om = self.flavor == Flavor::OpenMetrics;
        c.i += 1;
        let blanks = c.skip_blanks();
        let keyword = c.word();
        if om && keyword == b"EOF" && blanks == 1 && c.done() {
            self.eof = true;
            return Ok(None);
        }
        let known = matches!(keyword, b"HELP" | b"TYPE") || (om && keyword == b"UNIT");
        if blanks == 0 || !known || c.skip_blanks() == 0 {
            if om {
                return Err("invalid comment (OpenMetrics allows only HELP, TYPE, UNIT and EOF)");
            }
            // Prometheus 0.0.4: any other comment is ignored.
            return Ok(None);
        }
        let family = name(&mut c, true).ok_or("invalid metric name in comment")?;
        match keyword {
            b"HELP" => {
                let text = if c.done() {
                    Cow::Borrowed("")
                } else {
                    if c.skip_blanks() == 0 {
                        return Err("expected a blank after the metric name");
                    }
                    help_text(&c.s[c.i..], self.flavor)
                };
                Ok(Some(Entry::Help { family, text }))
            }
            b"TYPE" => {
                if c.skip_blanks() == 0 {
                    return Err("expected a blank after the metric name");
                }
                let kind = MetricKind::parse(c.word(), self.flavor).ok_or("invalid metric type")?;
                c.skip_blanks();
                if !c.done() {
                    return Err("unexpected text after the metric type");
                }
                Ok(Some(Entry::Type { family, kind }))
            }
            _ => {
                let unit = if c.done() {
                    ""
                } else {
                    if c.skip_blanks() == 0 {
                        return Err("expected a blank after the metric name");
                    }
                    let word = c.word();
                    if !c.done() || !word.iter().all(|&b| is_name_char(b, true)) {
                        return Err("invalid unit");
                    }
                    std::str::from_utf8(word).map_err(|_| "invalid unit")?
                };
                Ok(Some(Entry::Unit { family, unit }))
            }
        }
    }
}

/// A HELP text, unescaped: 0.0.4 knows `\\` and `\n`, OpenMetrics also `\"`. Invalid UTF-8 is
/// replaced (Prometheus does not check HELP texts; OTLP strings must be UTF-8).
fn help_text(raw: &[u8], flavor: Flavor) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(raw);
    if !text.contains('\\') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if flavor == Flavor::OpenMetrics => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &str, flavor: Flavor) -> Result<Vec<(Entry<'_>, Vec<Label<'_>>)>, ParseError> {
        let mut p = TextParser::new(body.as_bytes(), flavor);
        let mut labels = LineLabels::default();
        let mut out = Vec::new();
        while let Some(e) = p.next_entry(&mut labels)? {
            out.push((e, labels.sample.clone()));
        }
        Ok(out)
    }

    fn label<'a>(name: &'a str, value: &'a str) -> Label<'a> {
        Label {
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(value),
        }
    }

    /// The example of the Prometheus exposition-format documentation.
    #[test]
    fn prometheus_documentation_example() {
        let body = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#;
        let entries = all(body, Flavor::Prometheus).unwrap();
        assert_eq!(entries.len(), 18);
        assert_eq!(
            entries[0].0,
            Entry::Help {
                family: "http_requests_total",
                text: Cow::Borrowed("The total number of HTTP requests.")
            }
        );
        assert_eq!(
            entries[1].0,
            Entry::Type {
                family: "http_requests_total",
                kind: MetricKind::Counter
            }
        );
        let Entry::Sample(s) = &entries[3].0 else {
            panic!()
        };
        assert_eq!(
            (s.name, s.value, s.timestamp_ms),
            ("http_requests_total", 3.0, Some(1395066363000))
        );
        assert_eq!(
            entries[3].1,
            vec![label("method", "post"), label("code", "400")]
        );
        assert_eq!(
            entries[4].1,
            vec![
                label("path", "C:\\DIR\\FILE.TXT"),
                label("error", "Cannot find file:\n\"FILE.TXT\"")
            ]
        );
        let Entry::Sample(weird) = &entries[6].0 else {
            panic!()
        };
        assert_eq!(weird.value, f64::INFINITY);
        assert_eq!(weird.timestamp_ms, Some(-3982045));
        let Entry::Sample(sum) = &entries[16].0 else {
            panic!()
        };
        assert_eq!(sum.value, 1.7560473e7);
    }

    /// From the OpenMetrics 1.0 specification's examples.
    #[test]
    fn openmetrics_specification_examples() {
        let body = "# TYPE foo counter\n\
# UNIT foo seconds\n\
# HELP foo Counter with \\\"quotes\\\" and a \\n line\n\
foo_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n\
foo_created{a=\"b\"} 1520430000.123\n\
# TYPE acme_http_router_request_seconds summary\n\
acme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32\n\
acme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\n\
# TYPE bar histogram\n\
bar_bucket{le=\"0.01\"} 0 # {span_id=\"a\"} 0.005 1520879607.0\n\
bar_bucket{le=\"+Inf\"} NaN\n\
# TYPE state stateset\n\
state{state=\"a\"} 1\n\
# TYPE info_x info\n\
info_x_info{name=\"pretty name\",version=\"8.2.7\"} 1\n\
# EOF\n";
        let mut p = TextParser::new(body.as_bytes(), Flavor::OpenMetrics);
        let mut labels = LineLabels::default();
        let mut n = 0;
        while let Some(e) = p.next_entry(&mut labels).unwrap() {
            n += 1;
            match e {
                Entry::Help { text, .. } => {
                    assert_eq!(text, "Counter with \"quotes\" and a \n line")
                }
                Entry::Unit { family, unit } => assert_eq!((family, unit), ("foo", "seconds")),
                Entry::Sample(s) if s.name == "foo_total" => {
                    assert_eq!(s.timestamp_ms, Some(1520879607789));
                    assert_eq!(
                        s.exemplar,
                        Some(ExemplarPoint {
                            value: 0.67,
                            timestamp_ms: None
                        })
                    );
                    assert_eq!(labels.exemplar, vec![label("trace_id", "KOO5S4vxi0o")]);
                }
                Entry::Sample(s) if s.name == "bar_bucket" && s.exemplar.is_some() => {
                    assert_eq!(s.exemplar.unwrap().timestamp_ms, Some(1520879607000));
                }
                Entry::Sample(s) if s.name == "bar_bucket" => assert!(s.value.is_nan()),
                _ => {}
            }
        }
        assert_eq!(n, 15);
    }

    #[test]
    fn special_values_and_blanks() {
        let body = "a NaN\nb +Inf\nc -Inf\nd 1e-3\ne{} 5\nf{x=\"1\",} 6\n  g\t7 \t 8\n";
        let entries = all(body, Flavor::Prometheus).unwrap();
        let values: Vec<f64> = entries
            .iter()
            .map(|(e, _)| match e {
                Entry::Sample(s) => s.value,
                _ => panic!(),
            })
            .collect();
        assert!(values[0].is_nan());
        assert_eq!(
            &values[1..],
            &[f64::INFINITY, f64::NEG_INFINITY, 1e-3, 5.0, 6.0, 7.0]
        );
        assert_eq!(entries[5].1, vec![label("x", "1")]);
        let Entry::Sample(g) = &entries[6].0 else {
            panic!()
        };
        assert_eq!(g.timestamp_ms, Some(8));
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_problem() {
        let cases: &[(&str, Flavor, usize, &str)] = &[
            (
                "ok 1\n1bad 2\n",
                Flavor::Prometheus,
                2,
                "invalid metric name",
            ),
            (
                "a{b=\"c} 1\n",
                Flavor::Prometheus,
                1,
                "unterminated label value",
            ),
            (
                "a{b=c} 1\n",
                Flavor::Prometheus,
                1,
                "expected '\"' to start a label value",
            ),
            (
                "a{b=\"c\" d=\"e\"} 1\n",
                Flavor::Prometheus,
                1,
                "expected ',' or '}' after label value",
            ),
            ("a abc\n", Flavor::Prometheus, 1, "invalid sample value"),
            (
                "a 1 1.5\n",
                Flavor::Prometheus,
                1,
                "invalid timestamp (expected integer milliseconds)",
            ),
            (
                "a 1 2 3\n",
                Flavor::Prometheus,
                1,
                "unexpected text after the sample",
            ),
            (
                "# TYPE a foo\n",
                Flavor::Prometheus,
                1,
                "invalid metric type",
            ),
            (
                "# TYPE a info\n",
                Flavor::Prometheus,
                1,
                "invalid metric type",
            ),
            (
                "a 1 # {x=\"y\"} 1\n",
                Flavor::Prometheus,
                1,
                "unexpected '#' after the sample (exemplars need OpenMetrics)",
            ),
            (
                "a 1\n",
                Flavor::OpenMetrics,
                1,
                "missing '# EOF' at the end",
            ),
            ("# EOF\na 1\n", Flavor::OpenMetrics, 2, "data after '# EOF'"),
            (
                "# hello\n# EOF\n",
                Flavor::OpenMetrics,
                1,
                "invalid comment (OpenMetrics allows only HELP, TYPE, UNIT and EOF)",
            ),
            ("\n# EOF\n", Flavor::OpenMetrics, 1, "empty line"),
            (
                "a 1 # {x=\"y\"}\n# EOF\n",
                Flavor::OpenMetrics,
                1,
                "expected a blank before the exemplar value",
            ),
            (
                "a 1 NaN\n# EOF\n",
                Flavor::OpenMetrics,
                1,
                "invalid timestamp",
            ),
            (
                "a{b=\"c\"}1\n",
                Flavor::Prometheus,
                1,
                "expected a blank before the value",
            ),
        ];
        for (body, flavor, line, reason) in cases {
            let err = all(body, *flavor).unwrap_err();
            assert_eq!((err.line, err.reason), (*line, *reason), "{body:?}");
        }
        // Invalid UTF-8 in a label value.
        let mut p = TextParser::new(b"a{b=\"\xff\"} 1\n", Flavor::Prometheus);
        let err = p.next_entry(&mut LineLabels::default()).unwrap_err();
        assert_eq!(err.reason, "invalid UTF-8 in label value");
        // Long exemplar labels.
        let long = format!("a 1 # {{trace_id=\"{}\"}} 1\n# EOF\n", "x".repeat(130));
        assert_eq!(
            all(&long, Flavor::OpenMetrics).unwrap_err().reason,
            "exemplar labels longer than 128 characters"
        );
    }

    #[test]
    fn other_comments_are_skipped_in_prometheus_text() {
        let entries = all(
            "# just a comment\n#HELP x y\n# HELP\n\nx 1\n",
            Flavor::Prometheus,
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn help_escapes_differ_by_flavor() {
        assert_eq!(
            help_text(br#"a\\b\nc\"d\q"#, Flavor::Prometheus),
            "a\\b\nc\\\"d\\q"
        );
        assert_eq!(help_text(br#"a\"b"#, Flavor::OpenMetrics), "a\"b");
    }
}
