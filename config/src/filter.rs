//! `type = "filter"`: drop spans, log records or metric data points that match conditions,
//! after the OpenTelemetry Collector's filter processor (its `include` / `exclude` match
//! properties form).
//!
//! ```toml
//! [processors.drop_health_checks]
//! type = "filter"
//! [processors.drop_health_checks.spans.exclude]
//! match_type = "regexp"
//! attributes = [{ key = "http.route", value = "^/(health|ready)" }]
//! ```
//!
//! An item is kept when it matches `include` (if set) and does not match `exclude` (if set).
//! Properties combine with AND; the values listed for one property with OR; every listed
//! attribute must match.

use shardtel_protocol::Signal;
use toml::de::DeValue;

use crate::attributes::{attribute_value, check_regex, AttributeValue};
use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// `type = "filter"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// `[processors.NAME.spans]`: conditions on spans (traces pipeline).
    pub spans: Option<FilterRules>,
    /// `[processors.NAME.logs]`: conditions on log records (logs pipeline).
    pub logs: Option<FilterRules>,
    /// `[processors.NAME.metrics]`: conditions on data points (metrics pipeline).
    pub metrics: Option<FilterRules>,
}

impl FilterConfig {
    /// The keys `type = "filter"` accepts.
    pub const KEYS: &'static [&'static str] = &["type", "spans", "logs", "metrics"];

    /// The rules for `signal`, if any.
    pub fn rules(&self, signal: Signal) -> Option<&FilterRules> {
        match signal {
            Signal::Traces => self.spans.as_ref(),
            Signal::Logs => self.logs.as_ref(),
            Signal::Metrics => self.metrics.as_ref(),
        }
    }
}

/// `include` and `exclude` of one signal; at least one is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRules {
    /// Keep only the items that match.
    pub include: Option<MatchProperties>,
    /// Drop the items that match.
    pub exclude: Option<MatchProperties>,
}

impl FilterRules {
    /// The keys of `[processors.NAME.spans]` (and `.logs`, `.metrics`).
    pub const KEYS: &'static [&'static str] = &["include", "exclude"];
}

/// How strings are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// `"strict"`: equal (the default).
    Strict,
    /// `"regexp"`: the regex matches somewhere in the string (write `^...$` for whole strings).
    Regexp,
}

impl MatchType {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["strict", "regexp"];
}

/// Conditions on one item; every one that is set must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchProperties {
    /// How `names`, `services`, `bodies`, `severity_texts` and string attribute values compare.
    pub match_type: MatchType,
    /// `span_names` or `metric_names`: the span's or metric's name is one of these.
    pub names: Vec<String>,
    /// `services`: the resource's `service.name` is one of these.
    pub services: Vec<String>,
    /// `attributes`: every one matches an attribute of the span, log record or data point.
    pub attributes: Vec<AttributeMatch>,
    /// `resource_attributes`: every one matches a resource attribute.
    pub resource_attributes: Vec<AttributeMatch>,
    /// `span_kinds` (spans): the span's kind is one of these (`SpanKind` numbers).
    pub span_kinds: Vec<i32>,
    /// `status_codes` (spans): the span's status is one of these.
    pub status_codes: Vec<StatusCode>,
    /// `bodies` (logs): the record's string body is one of these.
    pub bodies: Vec<String>,
    /// `severity_texts` (logs): the record's severity text is one of these.
    pub severity_texts: Vec<String>,
    /// `severity_number` (logs): the record's severity is at least this.
    pub severity_number: Option<SeverityMatch>,
}

/// `severity_number = { min = "WARN", match_undefined = false }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeverityMatch {
    /// Lowest matching `SeverityNumber` (1 to 24); names stand for the first number of their
    /// range: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21.
    pub min: i32,
    /// Whether records without a severity (0) match. Default false.
    pub match_undefined: bool,
}

/// One `{ key = "...", value = ... }` of `attributes` / `resource_attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMatch {
    /// The attribute key (exact).
    pub key: String,
    /// The value: equal (strict), or a regex on the value's text (regexp: a string, or an int,
    /// double or bool written as the Collector writes it). Absent: the key is
    /// present with any value.
    pub value: Option<AttributeValue>,
}

/// Span kinds as written in `span_kinds`, in `SpanKind` number order.
pub const SPAN_KINDS: &[&str] = &[
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];

/// A span status code, as written in `status_codes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusCode {
    /// `"UNSET"` (0).
    Unset,
    /// `"OK"` (1).
    Ok,
    /// `"ERROR"` (2).
    Error,
}

impl StatusCode {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["ERROR", "OK", "UNSET"];

    /// The OTLP `Status.code` value.
    pub fn code(self) -> i32 {
        match self {
            StatusCode::Unset => 0,
            StatusCode::Ok => 1,
            StatusCode::Error => 2,
        }
    }

    /// Decodes one entry of a `status_codes` list.
    pub(crate) fn decode(value: &DeValue<'_>) -> Result<StatusCode, ConfigErrorKind> {
        Ok(match decode::one_of(value, StatusCode::NAMES)? {
            "ERROR" => StatusCode::Error,
            "OK" => StatusCode::Ok,
            _ => StatusCode::Unset,
        })
    }
}

const SEVERITIES: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

fn keys(signal: Signal) -> &'static [&'static str] {
    match signal {
        Signal::Traces => &[
            "match_type",
            "span_names",
            "services",
            "attributes",
            "resource_attributes",
            "span_kinds",
            "status_codes",
        ],
        Signal::Logs => &[
            "match_type",
            "bodies",
            "severity_texts",
            "severity_number",
            "services",
            "attributes",
            "resource_attributes",
        ],
        Signal::Metrics => &[
            "match_type",
            "metric_names",
            "services",
            "attributes",
            "resource_attributes",
        ],
    }
}

pub(crate) fn decode_filter(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<FilterConfig> {
    d.check_keys(s, FilterConfig::KEYS);
    let mut ok = true;
    let mut rules = |signal: Signal, key: &str| {
        let r = d.section(s, key, FilterRules::KEYS);
        if !r.exists() {
            ok &= s.get(key).is_none();
            return None;
        }
        let include = properties(d, &r, "include", signal, &mut ok);
        let exclude = properties(d, &r, "exclude", signal, &mut ok);
        if r.get("include").is_none() && r.get("exclude").is_none() {
            d.report_at_key(
                r.path.clone(),
                ConfigErrorKind::MissingOneOf {
                    keys: FilterRules::KEYS,
                },
            );
            ok = false;
        }
        Some(FilterRules { include, exclude })
    };
    let config = FilterConfig {
        spans: rules(Signal::Traces, "spans"),
        logs: rules(Signal::Logs, "logs"),
        metrics: rules(Signal::Metrics, "metrics"),
    };
    if ok && config.spans.is_none() && config.logs.is_none() && config.metrics.is_none() {
        d.report_at_key(
            s.path.clone(),
            ConfigErrorKind::MissingOneOf {
                keys: &["spans", "logs", "metrics"],
            },
        );
        return None;
    }
    ok.then_some(config)
}

fn properties(
    d: &mut Decoder<'_>,
    parent: &Section<'_, '_>,
    key: &str,
    signal: Signal,
    ok: &mut bool,
) -> Option<MatchProperties> {
    let s = d.section(parent, key, keys(signal));
    if !s.exists() {
        *ok &= parent.get(key).is_none();
        return None;
    }
    let match_type = d.field_or(&s, "match_type", MatchType::Strict, |v| {
        Ok(match decode::one_of(v, MatchType::NAMES)? {
            "regexp" => MatchType::Regexp,
            _ => MatchType::Strict,
        })
    });
    let regexp = match_type == MatchType::Regexp;
    let mut failed = false;
    let names = match signal {
        Signal::Traces => string_list(d, &s, "span_names", regexp, &mut failed),
        Signal::Metrics => string_list(d, &s, "metric_names", regexp, &mut failed),
        Signal::Logs => Vec::new(),
    };
    let services = string_list(d, &s, "services", regexp, &mut failed);
    let bodies = string_list(d, &s, "bodies", regexp, &mut failed);
    let severity_texts = string_list(d, &s, "severity_texts", regexp, &mut failed);
    let attributes = list_field(d, &s, "attributes", &mut failed, |v| {
        attribute_matches(v, regexp)
    });
    let resource_attributes = list_field(d, &s, "resource_attributes", &mut failed, |v| {
        attribute_matches(v, regexp)
    });
    let span_kinds = list_field(d, &s, "span_kinds", &mut failed, |v| {
        each(v, |e| {
            let name = decode::one_of(e, SPAN_KINDS)?;
            Ok(SPAN_KINDS.iter().position(|k| *k == name).unwrap_or(0) as i32)
        })
    });
    let status_codes = list_field(d, &s, "status_codes", &mut failed, |v| {
        each(v, StatusCode::decode)
    });
    let severity_number = if s.get("severity_number").is_some() {
        let parsed = d.field(&s, "severity_number", severity_match);
        failed |= parsed.is_none();
        parsed
    } else {
        None
    };
    let props = MatchProperties {
        match_type,
        names,
        services,
        attributes,
        resource_attributes,
        span_kinds,
        status_codes,
        bodies,
        severity_texts,
        severity_number,
    };
    if failed {
        *ok = false;
        return None;
    }
    let empty = props.names.is_empty()
        && props.services.is_empty()
        && props.attributes.is_empty()
        && props.resource_attributes.is_empty()
        && props.span_kinds.is_empty()
        && props.status_codes.is_empty()
        && props.bodies.is_empty()
        && props.severity_texts.is_empty()
        && props.severity_number.is_none();
    if empty {
        d.report_at_key(
            s.path.clone(),
            ConfigErrorKind::MissingOneOf {
                keys: &keys(signal)[1..],
            },
        );
        *ok = false;
        return None;
    }
    Some(props)
}

/// The value of `key` read by `parse` (empty when absent; `failed` set when invalid).
fn list_field<T>(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    key: &str,
    failed: &mut bool,
    parse: impl FnOnce(&DeValue<'_>) -> Result<Vec<T>, ConfigErrorKind>,
) -> Vec<T> {
    if s.get(key).is_none() {
        return Vec::new();
    }
    let parsed = d.field(s, key, parse);
    *failed |= parsed.is_none();
    parsed.unwrap_or_default()
}

/// A non-empty array of strings; regexes when `regexp`.
fn string_list(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    key: &str,
    regexp: bool,
    failed: &mut bool,
) -> Vec<String> {
    list_field(d, s, key, failed, |v| {
        let values = decode::strings(v)?;
        if values.is_empty() {
            return Err(ConfigErrorKind::Empty);
        }
        if regexp {
            for p in &values {
                check_regex(p)?;
            }
        }
        Ok(values)
    })
}

/// A non-empty array whose elements `parse` reads.
fn each<T>(
    value: &DeValue<'_>,
    parse: impl Fn(&DeValue<'_>) -> Result<T, ConfigErrorKind>,
) -> Result<Vec<T>, ConfigErrorKind> {
    let DeValue::Array(array) = value else {
        return Err(ConfigErrorKind::WrongType {
            expected: "an array of strings",
            found: decode::describe(value),
        });
    };
    if array.is_empty() {
        return Err(ConfigErrorKind::Empty);
    }
    array.iter().map(|e| parse(e.get_ref())).collect()
}

fn attribute_matches(
    value: &DeValue<'_>,
    regexp: bool,
) -> Result<Vec<AttributeMatch>, ConfigErrorKind> {
    let DeValue::Array(array) = value else {
        return Err(ConfigErrorKind::WrongType {
            expected: "an array like [{ key = \"http.route\", value = \"/health\" }]",
            found: decode::describe(value),
        });
    };
    if array.is_empty() {
        return Err(ConfigErrorKind::Empty);
    }
    array
        .iter()
        .map(|e| {
            let DeValue::Table(t) = e.get_ref() else {
                return Err(ConfigErrorKind::WrongType {
                    expected: "a table like { key = \"http.route\", value = \"/health\" }",
                    found: decode::describe(e.get_ref()),
                });
            };
            for (k, _) in t.iter() {
                if !["key", "value"].contains(&k.get_ref().as_ref()) {
                    return Err(ConfigErrorKind::UnknownKey {
                        allowed: vec!["key", "value"],
                    });
                }
            }
            let key = t
                .get("key")
                .ok_or(ConfigErrorKind::MissingKey {
                    hint: "key = \"http.route\"",
                })
                .and_then(|v| decode::non_empty_string(v.get_ref()))?;
            let value = t
                .get("value")
                .map(|v| attribute_value(v.get_ref()))
                .transpose()?;
            if regexp {
                match &value {
                    Some(AttributeValue::String(p)) => {
                        check_regex(p)?;
                    }
                    Some(_) => {
                        return Err(ConfigErrorKind::WrongType {
                            expected: "a string regex as value (match_type = \"regexp\")",
                            found: decode::describe(
                                t.get("value").map(|v| v.get_ref()).unwrap_or(e.get_ref()),
                            ),
                        })
                    }
                    None => {}
                }
            }
            Ok(AttributeMatch { key, value })
        })
        .collect()
}

fn severity_match(value: &DeValue<'_>) -> Result<SeverityMatch, ConfigErrorKind> {
    let DeValue::Table(t) = value else {
        return Err(ConfigErrorKind::WrongType {
            expected: "a table like { min = \"WARN\", match_undefined = false }",
            found: decode::describe(value),
        });
    };
    for (k, _) in t.iter() {
        if !["min", "match_undefined"].contains(&k.get_ref().as_ref()) {
            return Err(ConfigErrorKind::UnknownKey {
                allowed: vec!["min", "match_undefined"],
            });
        }
    }
    let min = t.get("min").ok_or(ConfigErrorKind::MissingKey {
        hint: "min = \"WARN\"",
    })?;
    let min = match min.get_ref() {
        DeValue::String(_) => {
            let name = decode::one_of(min.get_ref(), SEVERITIES)?;
            1 + 4 * SEVERITIES.iter().position(|s| *s == name).unwrap_or(0) as i32
        }
        other => decode::in_range(decode::count(other, 24)?, 1, 24)? as i32,
    };
    let match_undefined = t
        .get("match_undefined")
        .map(|v| decode::boolean(v.get_ref()))
        .transpose()?
        .unwrap_or(false);
    Ok(SeverityMatch {
        min,
        match_undefined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pipeline_through, problems};
    use crate::{Config, ProcessorConfig};

    fn load(text: &str, pipeline: &str) -> Result<Config, crate::ConfigErrors> {
        let base = pipeline_through(pipeline, &["f"]);
        crate::testing::load(&format!("{text}{base}"), &|_| None)
    }

    fn filter(text: &str) -> FilterConfig {
        match crate::testing::processor(load(text, "traces"), "f") {
            ProcessorConfig::Filter(f) => f,
            other => panic!("{other:?}"),
        }
    }

    fn err(text: &str, pipeline: &str) -> String {
        problems(load(text, pipeline))
    }

    #[test]
    fn health_check_example() {
        let f = filter(
            r#"[processors.f]
type = "filter"
[processors.f.spans.exclude]
match_type = "regexp"
span_names = ["^GET /health"]
attributes = [{ key = "http.route", value = "^/(health|ready)" }]
"#,
        );
        let exclude = f.spans.unwrap().exclude.unwrap();
        assert_eq!(exclude.match_type, MatchType::Regexp);
        assert_eq!(exclude.names, ["^GET /health"]);
        assert_eq!(
            exclude.attributes,
            [AttributeMatch {
                key: "http.route".into(),
                value: Some(AttributeValue::String("^/(health|ready)".into()))
            }]
        );
        assert!(f.logs.is_none() && f.metrics.is_none());
    }

    #[test]
    fn every_condition() {
        let f = filter(
            r#"[processors.f]
type = "filter"
[processors.f.spans.include]
services = ["checkout"]
span_kinds = ["SERVER", "CLIENT"]
status_codes = ["ERROR"]
resource_attributes = [{ key = "deployment.environment.name", value = "prod" }, { key = "k8s.pod.name" }]
[processors.f.logs.exclude]
bodies = ["ping"]
severity_texts = ["DEBUG"]
severity_number = { min = "WARN", match_undefined = true }
attributes = [{ key = "retry", value = 3 }]
[processors.f.metrics.exclude]
match_type = "regexp"
metric_names = ["^go_"]
"#,
        );
        let inc = f.spans.unwrap().include.unwrap();
        assert_eq!(inc.span_kinds, [2, 3]);
        assert_eq!(inc.status_codes, [StatusCode::Error]);
        assert_eq!(inc.resource_attributes[1].value, None);
        let logs = f.logs.unwrap().exclude.unwrap();
        assert_eq!(
            logs.severity_number,
            Some(SeverityMatch {
                min: 13,
                match_undefined: true
            })
        );
        assert_eq!(logs.attributes[0].value, Some(AttributeValue::Int(3)));
        assert_eq!(f.metrics.unwrap().exclude.unwrap().names, ["^go_"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            err(
                r#"[processors.f]
type = "filter"
[processors.f.spans.exclude]
match_type = "regexp"
span_names = ["(["]
bodies = ["x"]
[processors.f.spans.include]
[processors.f.logs]
"#,
                "traces"
            ),
            "shardtel.toml:5: processors.f.spans.exclude.span_names: invalid regex \"([\": unclosed character class\n\
             shardtel.toml:6: processors.f.spans.exclude.bodies: unknown key (allowed: match_type, span_names, services, attributes, resource_attributes, span_kinds, status_codes)\n\
             shardtel.toml:7: processors.f.spans.include: missing required key (set at least one of span_names, services, attributes, resource_attributes, span_kinds, status_codes)\n\
             shardtel.toml:8: processors.f.logs: missing required key (set at least one of include, exclude)"
        );
        // The Collector refuses a non-string value in regexp mode too.
        assert_eq!(
            err(
                "[processors.f]\ntype = \"filter\"\n[processors.f.spans.exclude]\nmatch_type = \"regexp\"\nattributes = [{ key = \"code\", value = 503 }]\n",
                "traces"
            ),
            "shardtel.toml:5: processors.f.spans.exclude.attributes: expected a string regex as value (match_type = \"regexp\"), found integer 503"
        );
        assert_eq!(
            err("[processors.f]\ntype = \"filter\"\n", "traces"),
            "shardtel.toml:1: processors.f: missing required key (set at least one of spans, logs, metrics)"
        );
        // A filter without conditions for a signal cannot sit in that signal's pipeline.
        assert_eq!(
            err(
                "[processors.f]\ntype = \"filter\"\n[processors.f.spans.exclude]\nspan_names = [\"a\"]\n",
                "logs"
            ),
            "shardtel.toml:9: pipelines.logs.processors: processor \"f\" (type filter) processes traces only; remove it from the logs pipeline"
        );
        assert_eq!(
            err(
                "[processors.f]\ntype = \"filter\"\n[processors.f.logs.exclude]\nseverity_number = { min = \"LOUD\" }\nattributes = [{ key = \"a\", other = 1 }]\n",
                "logs"
            ),
            "shardtel.toml:4: processors.f.logs.exclude.severity_number: invalid value \"LOUD\" (allowed: \"TRACE\", \"DEBUG\", \"INFO\", \"WARN\", \"ERROR\", \"FATAL\")\n\
             shardtel.toml:5: processors.f.logs.exclude.attributes: unknown key (allowed: key, value)"
        );
    }
}
