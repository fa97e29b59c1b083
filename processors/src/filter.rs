//! The `filter` processor's conditions, compiled, and how they match one [`Item`].

use regex::{Regex, RegexSet};
use shardtel_config::{AttributeMatch, AttributeValue, FilterRules, MatchProperties, MatchType};
use shardtel_protocol::span::{AnyValueRef, ResourceView, SpanView};
use shardtel_protocol::wire::{Reader, Value};

use super::{transform, Item, ItemKind};

#[derive(Debug)]
enum Strings {
    Strict(Vec<String>),
    Regex(RegexSet),
}

impl Strings {
    fn new(values: &[String], match_type: MatchType) -> Result<Option<Strings>, regex::Error> {
        if values.is_empty() {
            return Ok(None);
        }
        Ok(Some(match match_type {
            MatchType::Strict => Strings::Strict(values.to_vec()),
            MatchType::Regexp => Strings::Regex(RegexSet::new(values)?),
        }))
    }

    fn matches(&self, s: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(s) else {
            return false;
        };
        match self {
            Strings::Strict(v) => v.iter().any(|x| x == s),
            Strings::Regex(set) => set.is_match(s),
        }
    }
}

#[derive(Debug)]
enum ValueMatch {
    Any,
    Equal(AttributeValue),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, v: AnyValueRef<'_>) -> bool {
        match (self, v) {
            (ValueMatch::Any, _) => true,
            (ValueMatch::Regex(re), AnyValueRef::String(s)) => re.is_match(s),
            (ValueMatch::Regex(re), v) => {
                let mut text = ValueText::default();
                value_text(v, &mut text).is_some_and(|s| re.is_match(s))
            }
            (ValueMatch::Equal(AttributeValue::String(a)), AnyValueRef::String(b)) => a == b,
            (ValueMatch::Equal(AttributeValue::Int(a)), AnyValueRef::Int(b)) => *a == b,
            (ValueMatch::Equal(AttributeValue::Double(a)), AnyValueRef::Double(b)) => *a == b,
            (ValueMatch::Equal(AttributeValue::Bool(a)), AnyValueRef::Bool(b)) => *a == b,
            _ => false,
        }
    }
}

/// A non-string value's text, written on the stack (a double's `'f'` form has at most
/// 1 + 309 digits before the point or 2 + 324 digits after it: 512 bytes hold any).
struct ValueText {
    buf: [u8; 512],
    len: usize,
}

impl Default for ValueText {
    fn default() -> ValueText {
        ValueText {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl std::fmt::Write for ValueText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The text a `regexp` attribute condition matches, as the Collector's filter processor makes
/// it (`attributeStringValue`): a string as it is, a boolean `true` / `false`, an integer in
/// decimal, a double in Go's `strconv.FormatFloat(v, 'f', -1, 64)` form (the shortest digits
/// that read back to the same double, never an exponent: Rust's `Display` of `f64`, except
/// that Go writes the infinities `+Inf` / `-Inf`). `None` for bytes, arrays, maps and no
/// value, which never match.
fn value_text<'v>(v: AnyValueRef<'v>, text: &'v mut ValueText) -> Option<&'v str> {
    use std::fmt::Write;
    match v {
        AnyValueRef::String(s) => return Some(s),
        AnyValueRef::Bool(b) => return Some(if b { "true" } else { "false" }),
        AnyValueRef::Double(d) if d.is_infinite() => {
            return Some(if d > 0.0 { "+Inf" } else { "-Inf" })
        }
        AnyValueRef::Int(i) => write!(text, "{i}").ok()?,
        AnyValueRef::Double(d) => write!(text, "{d}").ok()?,
        AnyValueRef::Bytes(_) | AnyValueRef::Array(_) | AnyValueRef::KvList(_) => return None,
        AnyValueRef::Empty => return None,
    }
    std::str::from_utf8(&text.buf[..text.len]).ok()
}

fn attribute_matches(
    list: &[AttributeMatch],
    match_type: MatchType,
) -> Result<Vec<(Vec<u8>, ValueMatch)>, regex::Error> {
    list.iter()
        .map(|m| {
            let v = match (&m.value, match_type) {
                (None, _) => ValueMatch::Any,
                (Some(AttributeValue::String(p)), MatchType::Regexp) => {
                    ValueMatch::Regex(Regex::new(p)?)
                }
                (Some(v), _) => ValueMatch::Equal(v.clone()),
            };
            Ok((m.key.as_bytes().to_vec(), v))
        })
        .collect()
}

/// One `include` or `exclude`, compiled.
#[derive(Debug)]
struct Properties {
    names: Option<Strings>,
    services: Option<Strings>,
    attributes: Vec<(Vec<u8>, ValueMatch)>,
    resource_attributes: Vec<(Vec<u8>, ValueMatch)>,
    span_kinds: Vec<i32>,
    status_codes: Vec<i32>,
    bodies: Option<Strings>,
    severity_texts: Option<Strings>,
    severity: Option<(i32, bool)>,
}

impl Properties {
    fn compile(p: &MatchProperties) -> Result<Properties, regex::Error> {
        let t = p.match_type;
        Ok(Properties {
            names: Strings::new(&p.names, t)?,
            services: Strings::new(&p.services, t)?,
            attributes: attribute_matches(&p.attributes, t)?,
            resource_attributes: attribute_matches(&p.resource_attributes, t)?,
            span_kinds: p.span_kinds.clone(),
            status_codes: p.status_codes.iter().map(|c| c.code()).collect(),
            bodies: Strings::new(&p.bodies, t)?,
            severity_texts: Strings::new(&p.severity_texts, t)?,
            severity: p.severity_number.map(|s| (s.min, s.match_undefined)),
        })
    }

    /// Whether every condition holds for `item` under `resource` (a `Resource` body).
    fn matches(&self, item: &mut Item<'_>, resource: &[u8]) -> bool {
        let resource_view = ResourceView::new(resource);
        if let Some(services) = &self.services {
            match resource_view.attribute(b"service.name") {
                Some(AnyValueRef::String(s)) if services.matches(s.as_bytes()) => {}
                _ => return false,
            }
        }
        for (key, m) in &self.resource_attributes {
            if !resource_view.attribute(key).is_some_and(|v| m.matches(v)) {
                return false;
            }
        }
        match item.kind {
            ItemKind::Span => {
                if self.names.is_some()
                    || !self.span_kinds.is_empty()
                    || !self.status_codes.is_empty()
                {
                    // The name and status an earlier `transform` left, else the original
                    // (the kind no statement sets).
                    let f = SpanView::new(item.msg).fields();
                    let name = item.edit(transform::SPAN_NAME).unwrap_or(f.name);
                    if self.names.as_ref().is_some_and(|n| !n.matches(name)) {
                        return false;
                    }
                    if !self.span_kinds.is_empty() && !self.span_kinds.contains(&f.kind) {
                        return false;
                    }
                    if !self.status_codes.is_empty()
                        && !self.status_codes.contains(&transform::status(item).0)
                    {
                        return false;
                    }
                }
            }
            ItemKind::Point { metric_name } => {
                if self.names.as_ref().is_some_and(|n| !n.matches(metric_name)) {
                    return false;
                }
            }
            ItemKind::Log => {
                if self.bodies.is_some() || self.severity_texts.is_some() || self.severity.is_some()
                {
                    let (number, text) = severity(item.msg);
                    // The severity text an earlier `transform` left, else the original.
                    let text = item.edit(transform::LOG_SEVERITY_TEXT).unwrap_or(text);
                    if let Some(bodies) = &self.bodies {
                        let msg = item.msg;
                        match shardtel_protocol::rewrite::value_ref(&item.body, msg) {
                            AnyValueRef::String(s) if bodies.matches(s.as_bytes()) => {}
                            _ => return false,
                        }
                    }
                    if self
                        .severity_texts
                        .as_ref()
                        .is_some_and(|t| !t.matches(text))
                    {
                        return false;
                    }
                    if let Some((min, undefined)) = self.severity {
                        let ok = if number == 0 {
                            undefined
                        } else {
                            number >= min
                        };
                        if !ok {
                            return false;
                        }
                    }
                }
            }
            ItemKind::Resource | ItemKind::SpanEvent => {}
        }
        for (key, m) in &self.attributes {
            let msg = item.msg;
            let found = item
                .attrs()
                .iter()
                .find(|a| a.key(msg) == key.as_slice())
                .map(|a| a.value(msg));
            if !found.is_some_and(|v| m.matches(v)) {
                return false;
            }
        }
        true
    }
}

/// (severity_number, severity_text) of a `LogRecord` body.
fn severity(msg: &[u8]) -> (i32, &[u8]) {
    let mut number = 0;
    let mut text: &[u8] = &[];
    let mut r = Reader::new(msg);
    while let Some(Ok((k, v))) = r.next_field() {
        match (k.field, v) {
            (2, Value::Varint(n)) => number = n as i32,
            (3, Value::Len(b)) => text = &msg[b],
            _ => {}
        }
    }
    (number, text)
}

/// The rules of one signal, compiled.
#[derive(Debug)]
pub struct Filter {
    include: Option<Properties>,
    exclude: Option<Properties>,
}

impl Filter {
    /// Compiles validated rules.
    pub fn compile(rules: &FilterRules) -> Result<Filter, regex::Error> {
        Ok(Filter {
            include: rules
                .include
                .as_ref()
                .map(Properties::compile)
                .transpose()?,
            exclude: rules
                .exclude
                .as_ref()
                .map(Properties::compile)
                .transpose()?,
        })
    }

    /// Whether `item` (of a resource whose `Resource` body is `resource`) is kept.
    pub fn keeps(&self, item: &mut Item<'_>, resource: &[u8]) -> bool {
        if let Some(include) = &self.include {
            if !include.matches(item, resource) {
                return false;
            }
        }
        match &self.exclude {
            Some(exclude) => !exclude.matches(item, resource),
            None => true,
        }
    }
}
