//! What the translators build: OTLP spans and log records with borrowed strings
//! ([`Span`], [`LogRecord`], [`Attributes`]), and their protobuf encoding as an
//! `ExportTraceServiceRequest` or `ExportLogsServiceRequest` written straight into one buffer
//! ([`encode_traces`], [`encode_logs`]).
//!
//! The encoding follows what the Collector's pdata writes, so that both decode to the same
//! messages: ids are left out when all zero, every `AnyValue` that holds a value writes it even
//! when it is the default (`""`, `0`, `false`), and a resource, scope and span status are always
//! written (possibly empty).

use std::borrow::Cow;

use crate::wire::{put_key, put_varint, WireType};

/// An attribute value (OTLP `AnyValue`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value<'a> {
    /// No value (an `AnyValue` with none of its fields set).
    #[default]
    Empty,
    /// `string_value`.
    Str(Cow<'a, str>),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(Cow<'a, [u8]>),
    /// `array_value`.
    Array(Vec<Value<'a>>),
    /// `kvlist_value`.
    Map(Attributes<'a>),
}

impl<'a> Value<'a> {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Key-value pairs in insertion order. [`Attributes::put`] replaces the value of a key already
/// present in place (as pdata's `Map.Put*` does), so a key appears once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes<'a> {
    entries: Vec<(Cow<'a, str>, Value<'a>)>,
}

impl<'a> Attributes<'a> {
    /// Empty, with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Attributes {
            entries: Vec::with_capacity(n),
        }
    }

    /// Sets `key` to `value`: in place when the key is present, appended otherwise.
    pub fn put(&mut self, key: impl Into<Cow<'a, str>>, value: Value<'a>) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Removes `key` (keeping the others in order); its value.
    pub fn remove(&mut self, key: &str) -> Option<Value<'a>> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

/// OTLP `Span.SpanKind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum SpanKind {
    /// `SPAN_KIND_UNSPECIFIED`.
    #[default]
    Unspecified = 0,
    /// `SPAN_KIND_INTERNAL`.
    Internal = 1,
    /// `SPAN_KIND_SERVER`.
    Server = 2,
    /// `SPAN_KIND_CLIENT`.
    Client = 3,
    /// `SPAN_KIND_PRODUCER`.
    Producer = 4,
    /// `SPAN_KIND_CONSUMER`.
    Consumer = 5,
}

/// OTLP `Status.StatusCode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum StatusCode {
    /// `STATUS_CODE_UNSET`.
    #[default]
    Unset = 0,
    /// `STATUS_CODE_OK`.
    Ok = 1,
    /// `STATUS_CODE_ERROR`.
    Error = 2,
}

/// An OTLP span event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event<'a> {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `name`.
    pub name: Cow<'a, str>,
    /// `attributes`.
    pub attributes: Attributes<'a>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
}

/// An OTLP span link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Link<'a> {
    /// `trace_id`.
    pub trace_id: [u8; 16],
    /// `span_id`.
    pub span_id: [u8; 8],
    /// `trace_state`.
    pub trace_state: Cow<'a, str>,
    /// `attributes`.
    pub attributes: Attributes<'a>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
}

/// An OTLP span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Span<'a> {
    /// `trace_id`.
    pub trace_id: [u8; 16],
    /// `span_id`.
    pub span_id: [u8; 8],
    /// `trace_state`.
    pub trace_state: Cow<'a, str>,
    /// `parent_span_id` (all zero: none).
    pub parent_span_id: [u8; 8],
    /// `flags`.
    pub flags: u32,
    /// `name`.
    pub name: Cow<'a, str>,
    /// `kind`.
    pub kind: SpanKind,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// `attributes`.
    pub attributes: Attributes<'a>,
    /// `events`.
    pub events: Vec<Event<'a>>,
    /// `links`.
    pub links: Vec<Link<'a>>,
    /// `status.code`.
    pub status_code: StatusCode,
    /// `status.message`.
    pub status_message: Cow<'a, str>,
}

/// An OTLP instrumentation scope (name and version only: no translator fills more).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope<'a> {
    /// `name`.
    pub name: Cow<'a, str>,
    /// `version`.
    pub version: Cow<'a, str>,
}

/// The spans of one scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScopeSpans<'a> {
    /// `scope`.
    pub scope: Scope<'a>,
    /// `spans`.
    pub spans: Vec<Span<'a>>,
}

/// The spans of one resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSpans<'a> {
    /// `resource.attributes`.
    pub resource: Attributes<'a>,
    /// `scope_spans`.
    pub scope_spans: Vec<ScopeSpans<'a>>,
}

/// An OTLP log record (the fields the Fluent Forward mapping fills).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRecord<'a> {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `body`.
    pub body: Value<'a>,
    /// `attributes`.
    pub attributes: Attributes<'a>,
}

// Field numbers of opentelemetry-proto (v1).
const REQUEST_RESOURCE: u32 = 1;
const RESOURCE: u32 = 1;
const RESOURCE_ATTRIBUTES: u32 = 1;
const RESOURCE_SCOPES: u32 = 2;
const SCOPE: u32 = 1;
const SCOPE_ITEMS: u32 = 2;
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;

/// Encodes `resources` as an `ExportTraceServiceRequest`, appended to `out`.
pub fn encode_traces(resources: &[ResourceSpans<'_>], out: &mut Vec<u8>) {
    let mut w = Writer { buf: out };
    for rs in resources {
        let r = w.begin(REQUEST_RESOURCE);
        let res = w.begin(RESOURCE);
        w.attributes(RESOURCE_ATTRIBUTES, &rs.resource);
        w.end(res);
        for ss in &rs.scope_spans {
            let s = w.begin(RESOURCE_SCOPES);
            w.scope(&ss.scope);
            for span in &ss.spans {
                let m = w.begin(SCOPE_ITEMS);
                w.span(span);
                w.end(m);
            }
            w.end(s);
        }
        w.end(r);
    }
}

/// Encodes `records` as an `ExportLogsServiceRequest` of one resource and one scope, both
/// empty (as the Collector's Fluent Forward receiver builds it), appended to `out`.
pub fn encode_logs(records: &[LogRecord<'_>], out: &mut Vec<u8>) {
    let mut w = LogsWriter::new(out);
    for record in records {
        w.record(record);
    }
    w.finish();
}

/// Writes an `ExportLogsServiceRequest` of one empty resource and one empty scope record by
/// record (so that records borrowing from short-lived buffers can be written as they are
/// made); [`LogsWriter::finish`] closes it.
pub struct LogsWriter<'b> {
    w: Writer<'b>,
    resource: usize,
    scope: usize,
    records: usize,
}

impl<'b> LogsWriter<'b> {
    /// Starts the request at the end of `out`.
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        let mut w = Writer { buf: out };
        let resource = w.begin(REQUEST_RESOURCE);
        let res = w.begin(RESOURCE);
        w.end(res);
        let scope = w.begin(RESOURCE_SCOPES);
        w.scope(&Scope::default());
        LogsWriter {
            w,
            resource,
            scope,
            records: 0,
        }
    }

    /// Appends one log record.
    pub fn record(&mut self, record: &LogRecord<'_>) {
        let m = self.w.begin(SCOPE_ITEMS);
        self.w.fixed64(1, record.time_unix_nano);
        self.w.any_value(5, &record.body);
        self.w.attributes(6, &record.attributes);
        self.w.end(m);
        self.records += 1;
    }

    /// Records written so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes written so far (the request is a few bytes longer once finished).
    pub fn len(&self) -> usize {
        self.w.buf.len()
    }

    /// True before anything was written (never: the request's head is written at once).
    pub fn is_empty(&self) -> bool {
        self.w.buf.is_empty()
    }

    /// Closes the scope, the resource and the request.
    pub fn finish(mut self) {
        self.w.end(self.scope);
        self.w.end(self.resource);
    }
}

/// Writes protobuf fields into a buffer; a nested message's length is written once its end
/// is known ([`Writer::begin`], [`Writer::end`]).
struct Writer<'b> {
    buf: &'b mut Vec<u8>,
}

impl Writer<'_> {
    /// Starts the length-delimited field `field`: one byte is kept for its length, which
    /// [`Writer::end`] fills in (moving the content when the length needs more bytes).
    fn begin(&mut self, field: u32) -> usize {
        put_key(self.buf, field, WireType::Len);
        self.buf.push(0);
        self.buf.len()
    }

    fn end(&mut self, start: usize) {
        let len = self.buf.len() - start;
        if len < 0x80 {
            self.buf[start - 1] = len as u8;
            return;
        }
        let mut prefix = [0u8; 10];
        let mut n = 0;
        let mut v = len as u64;
        while v >= 0x80 {
            prefix[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        n += 1;
        let old_end = self.buf.len();
        self.buf.resize(old_end + n - 1, 0);
        self.buf.copy_within(start..old_end, start + n - 1);
        self.buf[start - 1..start - 1 + n].copy_from_slice(&prefix[..n]);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        put_key(self.buf, field, WireType::Len);
        put_varint(self.buf, b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// A string or bytes field, left out when empty.
    fn bytes_nonempty(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.bytes(field, b);
        }
    }

    /// An id, left out when all zero.
    fn id(&mut self, field: u32, id: &[u8]) {
        if id.iter().any(|b| *b != 0) {
            self.bytes(field, id);
        }
    }

    fn varint(&mut self, field: u32, v: u64) {
        if v != 0 {
            put_key(self.buf, field, WireType::Varint);
            put_varint(self.buf, v);
        }
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            put_key(self.buf, field, WireType::I64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            put_key(self.buf, field, WireType::I32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn scope(&mut self, scope: &Scope<'_>) {
        let s = self.begin(SCOPE);
        self.bytes_nonempty(SCOPE_NAME, scope.name.as_bytes());
        self.bytes_nonempty(SCOPE_VERSION, scope.version.as_bytes());
        self.end(s);
    }

    fn attributes(&mut self, field: u32, attributes: &Attributes<'_>) {
        for (key, value) in attributes.iter() {
            let kv = self.begin(field);
            self.bytes_nonempty(1, key.as_bytes());
            self.any_value(2, value);
            self.end(kv);
        }
    }

    /// An `AnyValue` field: always written; its oneof member too, even when default.
    fn any_value(&mut self, field: u32, value: &Value<'_>) {
        let v = self.begin(field);
        match value {
            Value::Empty => {}
            Value::Str(s) => self.bytes(1, s.as_bytes()),
            Value::Bool(b) => {
                put_key(self.buf, 2, WireType::Varint);
                put_varint(self.buf, u64::from(*b));
            }
            Value::Int(i) => {
                put_key(self.buf, 3, WireType::Varint);
                put_varint(self.buf, *i as u64);
            }
            Value::Double(d) => {
                put_key(self.buf, 4, WireType::I64);
                self.buf.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Value::Array(values) => {
                let a = self.begin(5);
                for item in values {
                    self.any_value(1, item);
                }
                self.end(a);
            }
            Value::Map(map) => {
                let m = self.begin(6);
                self.attributes(1, map);
                self.end(m);
            }
            Value::Bytes(b) => self.bytes(7, b),
        }
        self.end(v);
    }

    fn span(&mut self, s: &Span<'_>) {
        self.id(1, &s.trace_id);
        self.id(2, &s.span_id);
        self.bytes_nonempty(3, s.trace_state.as_bytes());
        self.id(4, &s.parent_span_id);
        self.bytes_nonempty(5, s.name.as_bytes());
        self.varint(6, s.kind as i32 as u64);
        self.fixed64(7, s.start_time_unix_nano);
        self.fixed64(8, s.end_time_unix_nano);
        self.attributes(9, &s.attributes);
        for e in &s.events {
            let m = self.begin(11);
            self.fixed64(1, e.time_unix_nano);
            self.bytes_nonempty(2, e.name.as_bytes());
            self.attributes(3, &e.attributes);
            self.varint(4, u64::from(e.dropped_attributes_count));
            self.end(m);
        }
        for l in &s.links {
            let m = self.begin(13);
            self.id(1, &l.trace_id);
            self.id(2, &l.span_id);
            self.bytes_nonempty(3, l.trace_state.as_bytes());
            self.attributes(4, &l.attributes);
            self.varint(5, u64::from(l.dropped_attributes_count));
            self.end(m);
        }
        let st = self.begin(15);
        self.bytes_nonempty(2, s.status_message.as_bytes());
        self.varint(3, s.status_code as i32 as u64);
        self.end(st);
        self.fixed32(16, s.flags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::proto::common::v1::any_value;
    use prost::Message;

    #[test]
    fn put_replaces_in_place_and_remove_keeps_order() {
        let mut a = Attributes::default();
        a.put("a", Value::Int(1));
        a.put("b", Value::Int(2));
        a.put("a", Value::Int(3));
        a.put("c", Value::Int(4));
        let keys: Vec<_> = a.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(a.get("a"), Some(&Value::Int(3)));
        assert_eq!(a.remove("b"), Some(Value::Int(2)));
        let keys: Vec<_> = a.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["a", "c"]);
    }

    #[test]
    fn traces_decode_with_prost_and_long_messages_get_long_prefixes() {
        let mut attributes = Attributes::default();
        attributes.put("empty", Value::Str("".into()));
        attributes.put("zero", Value::Int(0));
        attributes.put("long", Value::Str("x".repeat(300).into()));
        let mut nested = Attributes::default();
        nested.put(
            "k",
            Value::Array(vec![Value::Bool(false), Value::Double(1.5)]),
        );
        attributes.put("map", Value::Map(nested));
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            name: "op".into(),
            kind: SpanKind::Client,
            start_time_unix_nano: 5,
            end_time_unix_nano: 7,
            attributes,
            events: vec![Event {
                time_unix_nano: 6,
                name: "e".into(),
                ..Default::default()
            }],
            status_code: StatusCode::Error,
            flags: 1,
            ..Default::default()
        };
        let resources = vec![ResourceSpans {
            resource: {
                let mut r = Attributes::default();
                r.put("service.name", Value::Str("svc".into()));
                r
            },
            scope_spans: vec![ScopeSpans {
                scope: Scope::default(),
                spans: vec![span.clone(); 40],
            }],
        }];
        let mut out = Vec::new();
        encode_traces(&resources, &mut out);
        let req = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 40);
        let s = &spans[39];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.kind, 3);
        assert_eq!(s.flags, 1);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(s.attributes.len(), 4);
        assert_eq!(
            s.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue(String::new()))
        );
        assert_eq!(
            s.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(0))
        );
        assert!(req.resource_spans[0].scope_spans[0].scope.is_some());
        // The same bytes prost writes (canonical length prefixes).
        assert_eq!(req.encode_to_vec().len(), out.len());
    }

    #[test]
    fn logs_have_one_empty_resource_and_scope() {
        let mut attributes = Attributes::default();
        attributes.put("fluent.tag", Value::Str("app".into()));
        let records = [LogRecord {
            time_unix_nano: 1,
            body: Value::Empty,
            attributes,
        }];
        let mut out = Vec::new();
        encode_logs(&records, &mut out);
        let req = ExportLogsServiceRequest::decode(&out[..]).unwrap();
        let rl = &req.resource_logs[0];
        assert!(rl.resource.as_ref().unwrap().attributes.is_empty());
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1);
        assert_eq!(r.body.as_ref().unwrap().value, None);
    }
}
