//! Wire-level rewriting of single messages (a span, log record, data point or resource) and of
//! whole metrics and logs requests, without decoding what does not change.
//!
//! - [`read_attributes`] lists a message's attributes as [`Attr`]s that point into the message
//!   (no copy); a processor changes the list ([`Attr::set_value`], removing, appending).
//! - [`write_message`] writes a new encoding of that one message: every other field copied as
//!   its original bytes, attributes whose key and value did not change copied as their original
//!   `KeyValue` bytes, new ones encoded.
//! - [`rewrite_request`] walks an `Export{Metrics,Logs}ServiceRequest` and asks a
//!   [`RequestRewriter`] about each resource and item; unchanged items and resources stay
//!   slices of the request buffer in the output [`Encoded`], and a request where nothing
//!   changed comes out as the original buffer.
//! - [`rewrite_metric_points`] does the same one level down, for the data points of a `Metric`.
//!
//! Traces use the index instead ([`crate::scan::Rewrites`]): a rewritten span or resource is
//! recorded next to the index and substituted when the batch is re-framed.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::reframe::Encoded;
use crate::span::AnyValueRef;
use crate::wire::{put_key, put_varint, varint_len, Reader, Value, WireError, WireType};

/// Field numbers of `attributes` in the messages processors change.
pub mod fields {
    /// `Span.attributes`.
    pub const SPAN_ATTRIBUTES: u32 = 9;
    /// `Resource.attributes`.
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    /// `LogRecord.attributes`.
    pub const LOG_ATTRIBUTES: u32 = 6;
    /// `LogRecord.body`.
    pub const LOG_BODY: u32 = 5;
    /// `ResourceSpans.resource` / `ResourceMetrics.resource` / `ResourceLogs.resource`.
    pub const RESOURCE: u32 = 1;
}

/// An attribute key: a range of the message, or shared bytes (from the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrKey {
    /// `msg[range]`.
    Orig(Range<usize>),
    /// New key bytes (UTF-8).
    Shared(Bytes),
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// No `value` field.
    Absent,
    /// An `AnyValue` body at `msg[range]`.
    Orig(Range<usize>),
    /// An encoded `AnyValue` body.
    Encoded(Bytes),
    /// A string value.
    String(String),
}

/// One attribute of a message being rewritten.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    /// The key.
    pub key: AttrKey,
    /// The value.
    pub value: AttrValue,
    /// The original `KeyValue` body while neither key nor value changed; written as is.
    pub original: Option<Range<usize>>,
}

impl Attr {
    /// A new attribute.
    pub fn new(key: Bytes, value: AttrValue) -> Attr {
        Attr {
            key: AttrKey::Shared(key),
            value,
            original: None,
        }
    }

    /// The key bytes.
    pub fn key<'a>(&'a self, msg: &'a [u8]) -> &'a [u8] {
        match &self.key {
            AttrKey::Orig(r) => &msg[r.clone()],
            AttrKey::Shared(b) => b,
        }
    }

    /// The value.
    pub fn value<'a>(&'a self, msg: &'a [u8]) -> AnyValueRef<'a> {
        value_ref(&self.value, msg)
    }

    /// Replaces the value.
    pub fn set_value(&mut self, value: AttrValue) {
        self.value = value;
        self.original = None;
    }
}

/// The value `v` (whose `Orig` ranges point into `msg`) as a borrowed `AnyValue`.
pub fn value_ref<'a>(v: &'a AttrValue, msg: &'a [u8]) -> AnyValueRef<'a> {
    match v {
        AttrValue::Absent => AnyValueRef::Empty,
        AttrValue::Orig(r) => AnyValueRef::parse(&msg[r.clone()]),
        AttrValue::Encoded(b) => AnyValueRef::parse(b),
        AttrValue::String(s) => AnyValueRef::String(s),
    }
}

/// The encoded `AnyValue` body of a value (for copying a value elsewhere).
pub fn value_bytes(v: &AttrValue, msg: &[u8]) -> AttrValue {
    match v {
        AttrValue::Orig(r) => AttrValue::Encoded(Bytes::copy_from_slice(&msg[r.clone()])),
        other => other.clone(),
    }
}

/// Reads the attributes (every field `field`, each a `KeyValue`) of `msg` into `out`, which is
/// cleared first. Stops at the first malformed field (never on scanned input).
pub fn read_attributes(msg: &[u8], field: u32, out: &mut Vec<Attr>) {
    out.clear();
    let mut r = Reader::new(msg);
    while let Some(Ok((k, v))) = r.next_field() {
        let (true, Value::Len(kv)) = (k.field == field, v) else {
            continue;
        };
        let mut key = kv.start..kv.start;
        let mut value = AttrValue::Absent;
        let mut inner = Reader::nested(msg, kv.clone());
        while let Some(Ok((ik, iv))) = inner.next_field() {
            match (ik.field, iv) {
                (1, Value::Len(b)) => key = b,
                (2, Value::Len(b)) => value = AttrValue::Orig(b),
                _ => {}
            }
        }
        out.push(Attr {
            key: AttrKey::Orig(key),
            value,
            original: Some(kv),
        });
    }
}

/// The value of the last field `field` of `msg` when it is length-delimited (e.g. a log body).
pub fn last_len_field(msg: &[u8], field: u32) -> Option<Range<usize>> {
    let mut found = None;
    let mut r = Reader::new(msg);
    while let Some(Ok((k, v))) = r.next_field() {
        if let (true, Value::Len(b)) = (k.field == field, v) {
            found = Some(b);
        }
    }
    found
}

fn value_len(v: &AttrValue) -> Option<usize> {
    match v {
        AttrValue::Absent => None,
        AttrValue::Orig(r) => Some(r.len()),
        AttrValue::Encoded(b) => Some(b.len()),
        AttrValue::String(s) => Some(1 + varint_len(s.len() as u64) + s.len()),
    }
}

fn put_value(out: &mut BytesMut, v: &AttrValue, msg: &[u8]) {
    match v {
        AttrValue::Absent => {}
        AttrValue::Orig(r) => out.put_slice(&msg[r.clone()]),
        AttrValue::Encoded(b) => out.put_slice(b),
        AttrValue::String(s) => {
            out.put_u8(0x0a);
            put_varint(out, s.len() as u64);
            out.put_slice(s.as_bytes());
        }
    }
}

fn len_field(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(len as u64) + len
}

/// Encoded size of an attribute's `KeyValue` body.
fn key_value_len(a: &Attr, msg: &[u8]) -> usize {
    if let Some(r) = &a.original {
        return r.len();
    }
    let key = a.key(msg).len();
    let mut n = len_field(1, key);
    if let Some(v) = value_len(&a.value) {
        n += len_field(2, v);
    }
    n
}

fn put_attr(out: &mut BytesMut, field: u32, a: &Attr, msg: &[u8]) {
    put_key(out, field, WireType::Len);
    put_varint(out, key_value_len(a, msg) as u64);
    if let Some(r) = &a.original {
        out.put_slice(&msg[r.clone()]);
        return;
    }
    let key = a.key(msg);
    out.put_u8(0x0a);
    put_varint(out, key.len() as u64);
    out.put_slice(key);
    if let Some(v) = value_len(&a.value) {
        out.put_u8(0x12);
        put_varint(out, v as u64);
        put_value(out, &a.value, msg);
    }
}

/// A replacement for one length-delimited field of a message (a log record's body).
#[derive(Clone, Copy, Debug)]
pub struct FieldEdit<'a> {
    /// The field number.
    pub field: u32,
    /// The new value (an `AnyValue` body), or `Absent` to remove the field.
    pub value: &'a AttrValue,
}

/// Writes a new encoding of `msg` into `out`: every field except `attr_field` (and
/// `edit.field`) copied as its original bytes, in order, then `attrs`, then the edited field.
pub fn write_message(
    msg: &[u8],
    attr_field: u32,
    attrs: &[Attr],
    edit: Option<FieldEdit<'_>>,
    out: &mut BytesMut,
) {
    out.reserve(msg.len() + 64);
    let skip = edit.map_or(0, |e| e.field);
    let mut r = Reader::new(msg);
    let mut run = 0..0;
    while !r.is_empty() {
        let start = r.position();
        let Ok(k) = r.read_key() else { break };
        if r.skip(k).is_err() {
            break;
        }
        if k.field == attr_field || k.field == skip {
            out.put_slice(&msg[run.clone()]);
            run = r.position()..r.position();
        } else if run.is_empty() {
            run = start..r.position();
        } else {
            run.end = r.position();
        }
    }
    out.put_slice(&msg[run]);
    for a in attrs {
        put_attr(out, attr_field, a, msg);
    }
    if let Some(FieldEdit { field, value }) = edit {
        if let Some(len) = value_len(value) {
            put_key(out, field, WireType::Len);
            put_varint(out, len as u64);
            put_value(out, value, msg);
        }
    }
}

/// Writes a `Resource` body with `attrs` in place of the attributes of `resource` (another
/// `Resource` body, possibly empty).
pub fn write_resource(resource: &[u8], attrs: &[Attr], out: &mut BytesMut) {
    write_message(resource, fields::RESOURCE_ATTRIBUTES, attrs, None, out);
}

/// What a [`RequestRewriter`] decided for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Keep the item as it is (a slice of the request).
    Keep,
    /// Leave the item out.
    Drop,
    /// Use this message body instead.
    Replace(Bytes),
}

/// Decides, for [`rewrite_request`], what happens to each resource and item.
pub trait RequestRewriter {
    /// Called for each `Resource{Metrics,Logs}` with its `Resource` body (empty when it has
    /// none), before its items. Returns a new `Resource` body to use instead, or `None`.
    fn resource(&mut self, resource: &[u8]) -> Option<Bytes>;
    /// Called for each item (`Metric` or `LogRecord` body) of the current resource.
    fn item(&mut self, item: &[u8]) -> ItemOutcome;
}

/// Scratch space of [`rewrite_request`], reusable across requests.
#[derive(Default, Debug)]
pub struct RequestScratch {
    /// (scope, item body range, outcome) of the current resource.
    items: Vec<(u32, Range<usize>, ItemOutcome)>,
    /// (scope field range, header ranges start..end in `headers`).
    scopes: Vec<(Range<usize>, Range<usize>)>,
    headers: Vec<Range<usize>>,
}

/// Rewrites an `Export{Metrics,Logs}ServiceRequest` (the three-level resource → scope → item
/// layout) into `out`: resources and items `rw` keeps stay slices of `buf`; replaced ones are
/// the new bytes; dropped items are left out, and so are scopes and resources whose items were
/// all dropped. Returns whether anything changed (when nothing did, `out` received `buf`).
/// `buf` must have been validated by the scanner.
pub fn rewrite_request(
    buf: &Bytes,
    rw: &mut impl RequestRewriter,
    scratch: &mut RequestScratch,
    out: &mut Encoded,
) -> Result<bool, WireError> {
    let mut changed = false;
    let mut prefixes = BytesMut::new();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let field_start = r.position();
        let key = r.read_key()?;
        if key.field != 1 || key.wire_type != WireType::Len {
            r.skip(key)?;
            out.push_slice(buf, field_start..r.position());
            continue;
        }
        let body = r.read_len()?;
        let field_end = r.position();
        if rewrite_resource(buf, body, rw, scratch, &mut prefixes, out)? {
            changed = true;
        } else {
            out.push_slice(buf, field_start..field_end);
        }
    }
    Ok(changed)
}

/// One `Resource{Metrics,Logs}` at `buf[body]`. Returns false (writing nothing) when nothing
/// in it changed.
fn rewrite_resource(
    buf: &Bytes,
    body: Range<usize>,
    rw: &mut impl RequestRewriter,
    scratch: &mut RequestScratch,
    prefixes: &mut BytesMut,
    out: &mut Encoded,
) -> Result<bool, WireError> {
    scratch.items.clear();
    scratch.scopes.clear();
    scratch.headers.clear();
    // Pass one: the resource message, headers, scopes and item outcomes.
    let mut resource: Range<usize> = body.start..body.start;
    let mut r = Reader::nested(buf, body.clone());
    let mut resource_headers = Vec::new();
    while !r.is_empty() {
        let start = r.position();
        let key = r.read_key()?;
        if key.field == 2 && key.wire_type == WireType::Len {
            let scope = r.read_len()?;
            scratch.scopes.push((scope, 0..0));
            continue;
        }
        if key.field == fields::RESOURCE && key.wire_type == WireType::Len {
            resource = r.read_len()?;
        } else {
            r.skip(key)?;
        }
        resource_headers.push(start..r.position());
    }
    let new_resource = rw.resource(&buf[resource.clone()]);
    let mut any = new_resource.is_some();
    for s in 0..scratch.scopes.len() {
        let scope = scratch.scopes[s].0.clone();
        let first = scratch.headers.len();
        let mut r = Reader::nested(buf, scope);
        while !r.is_empty() {
            let start = r.position();
            let key = r.read_key()?;
            if key.field == 2 && key.wire_type == WireType::Len {
                let item = r.read_len()?;
                let outcome = rw.item(&buf[item.clone()]);
                any |= outcome != ItemOutcome::Keep;
                scratch.items.push((s as u32, item, outcome));
            } else {
                r.skip(key)?;
                scratch.headers.push(start..r.position());
            }
        }
        scratch.scopes[s].1 = first..scratch.headers.len();
    }
    if !any {
        return Ok(false);
    }
    // Pass two: sizes.
    let item_len = |(_, range, outcome): &(u32, Range<usize>, ItemOutcome)| match outcome {
        ItemOutcome::Keep => Some(len_field(2, range.len())),
        ItemOutcome::Drop => None,
        ItemOutcome::Replace(b) => Some(len_field(2, b.len())),
    };
    let mut scope_lens = Vec::with_capacity(scratch.scopes.len());
    let mut items = scratch.items.iter().peekable();
    let mut res_len = 0usize;
    let mut seen_resource = false;
    for h in &resource_headers {
        res_len += match (&new_resource, buf[h.start] == 0x0a) {
            (Some(b), true) if !seen_resource => len_field(fields::RESOURCE, b.len()),
            (Some(_), true) => len_field(fields::RESOURCE, 0),
            _ => h.len(),
        };
        seen_resource |= buf[h.start] == 0x0a;
    }
    if let (Some(b), false) = (&new_resource, seen_resource) {
        res_len += len_field(fields::RESOURCE, b.len());
    }
    let mut kept_any_scope = false;
    for (s, (_, headers)) in scratch.scopes.iter().enumerate() {
        let mut len: usize = scratch.headers[headers.clone()]
            .iter()
            .map(|h| h.len())
            .sum();
        let mut had = false;
        let mut kept = false;
        while let Some(item) = items.next_if(|i| i.0 as usize == s) {
            had = true;
            if let Some(n) = item_len(item) {
                len += n;
                kept = true;
            }
        }
        let emit = kept || !had;
        scope_lens.push(emit.then_some(len));
        if emit {
            res_len += len_field(2, len);
            kept_any_scope |= kept;
        }
    }
    if !kept_any_scope && !scratch.items.is_empty() {
        // Every item was dropped: the whole resource goes.
        return Ok(true);
    }
    // Pass three: emit.
    prefixes.put_u8(0x0a);
    put_varint(prefixes, res_len as u64);
    out.push(prefixes.split().freeze());
    let mut wrote_resource = false;
    for h in &resource_headers {
        match (&new_resource, buf[h.start] == 0x0a) {
            (Some(b), true) => {
                if !wrote_resource {
                    put_key(prefixes, fields::RESOURCE, WireType::Len);
                    put_varint(prefixes, b.len() as u64);
                    out.push(prefixes.split().freeze());
                    out.push(b.clone());
                    wrote_resource = true;
                } else {
                    // A repeated resource field merges in prost; the replacement stands for all.
                    put_key(prefixes, fields::RESOURCE, WireType::Len);
                    put_varint(prefixes, 0);
                    out.push(prefixes.split().freeze());
                }
            }
            _ => out.push_slice(buf, h.clone()),
        }
    }
    if let (Some(b), false) = (&new_resource, wrote_resource) {
        put_key(prefixes, fields::RESOURCE, WireType::Len);
        put_varint(prefixes, b.len() as u64);
        out.push(prefixes.split().freeze());
        out.push(b.clone());
    }
    let mut items = scratch.items.iter().peekable();
    for (s, (_, headers)) in scratch.scopes.iter().enumerate() {
        let Some(len) = scope_lens[s] else {
            while items.next_if(|i| i.0 as usize == s).is_some() {}
            continue;
        };
        prefixes.put_u8(0x12);
        put_varint(prefixes, len as u64);
        out.push(prefixes.split().freeze());
        for h in &scratch.headers[headers.clone()] {
            out.push_slice(buf, h.clone());
        }
        while let Some((_, range, outcome)) = items.next_if(|i| i.0 as usize == s) {
            match outcome {
                ItemOutcome::Drop => {}
                ItemOutcome::Keep => {
                    let plen = 1 + varint_len(range.len() as u64);
                    if original_prefix_ok(buf, range) {
                        out.push_slice(buf, range.start - plen..range.end);
                    } else {
                        prefixes.put_u8(0x12);
                        put_varint(prefixes, range.len() as u64);
                        out.push(prefixes.split().freeze());
                        out.push_slice(buf, range.clone());
                    }
                }
                ItemOutcome::Replace(b) => {
                    prefixes.put_u8(0x12);
                    put_varint(prefixes, b.len() as u64);
                    out.push(prefixes.split().freeze());
                    out.push(b.clone());
                }
            }
        }
    }
    Ok(true)
}

/// True when the bytes before `buf[r]` are exactly the minimal key (field 2) and length.
fn original_prefix_ok(buf: &[u8], r: &Range<usize>) -> bool {
    let plen = 1 + varint_len(r.len() as u64);
    if r.start < plen || buf[r.start - plen] != 0x12 {
        return false;
    }
    let mut lr = Reader::new(&buf[r.start - plen + 1..r.start]);
    lr.read_varint().ok() == Some(r.len() as u64) && lr.is_empty()
}

/// The attributes field of the data points of a metric's data field `data_field` (gauge 5,
/// sum 7, histogram 9, exponential histogram 10, summary 11).
pub fn point_attributes_field(data_field: u32) -> Option<u32> {
    match data_field {
        5 | 7 | 11 => Some(7),
        9 => Some(9),
        10 => Some(1),
        _ => None,
    }
}

/// Calls `point(range, attributes_field)` for each data point of one `Metric` body, in order:
/// `metric[range]` is the point's body. Only the points prost keeps are visited (the data
/// oneof: a data field of another kind replaces what came before, one of the same kind
/// merges), the ones the scanner counts. Allocates nothing.
pub fn for_each_metric_point(metric: &[u8], mut point: impl FnMut(Range<usize>, u32)) {
    // Only the points of the last run of one kind are the metric's.
    let mut kind = 0u32;
    let mut run_from = 0usize;
    let mut r = Reader::new(metric);
    while let Some(Ok((k, v))) = r.next_field() {
        if let (Some(_), Value::Len(data)) = (point_attributes_field(k.field), v) {
            if k.field != kind {
                kind = k.field;
                run_from = data.start;
            }
        }
    }
    let mut r = Reader::new(metric);
    while let Some(Ok((k, v))) = r.next_field() {
        let (Some(attr_field), Value::Len(data)) = (point_attributes_field(k.field), v) else {
            continue;
        };
        if data.start < run_from {
            continue;
        }
        let mut inner = Reader::nested(metric, data);
        while let Some(Ok((pk, pv))) = inner.next_field() {
            if let (1, Value::Len(p)) = (pk.field, pv) {
                point(p, attr_field);
            }
        }
    }
}

/// Rewrites the data points of one `Metric` body: `point(point_body, attributes_field)`
/// decides each point (those [`for_each_metric_point`] visits; earlier data fields are copied
/// as they are). Returns `Keep` when every point was kept, `Drop` when the metric had points
/// and all were dropped, else the new `Metric` body (other fields and kept points copied).
pub fn rewrite_metric_points(
    metric: &[u8],
    arena: &mut BytesMut,
    mut point: impl FnMut(&[u8], u32) -> ItemOutcome,
) -> ItemOutcome {
    let mut changed = false;
    let mut total = 0usize;
    let mut kept = 0usize;
    let mut outcomes: Vec<(Range<usize>, ItemOutcome)> = Vec::new();
    for_each_metric_point(metric, |p, attr_field| {
        let o = point(&metric[p.clone()], attr_field);
        total += 1;
        if o != ItemOutcome::Drop {
            kept += 1;
        }
        changed |= o != ItemOutcome::Keep;
        outcomes.push((p, o));
    });
    if !changed {
        return ItemOutcome::Keep;
    }
    if kept == 0 && total > 0 {
        return ItemOutcome::Drop;
    }
    let mut outcomes = outcomes.into_iter().peekable();
    let mut r = Reader::new(metric);
    while !r.is_empty() {
        let start = r.position();
        let Ok(k) = r.read_key() else { break };
        let is_data = point_attributes_field(k.field).is_some() && k.wire_type == WireType::Len;
        if !is_data {
            if r.skip(k).is_err() {
                break;
            }
            arena.put_slice(&metric[start..r.position()]);
            continue;
        }
        let Ok(data) = r.read_len() else { break };
        let mut body = BytesMut::new();
        let mut inner = Reader::nested(metric, data);
        while !inner.is_empty() {
            let s = inner.position();
            let Ok(pk) = inner.read_key() else { break };
            if pk.field == 1 && pk.wire_type == WireType::Len {
                let Ok(p) = inner.read_len() else { break };
                match outcomes.next_if(|(range, _)| *range == p) {
                    Some((_, ItemOutcome::Drop)) => {}
                    Some((_, ItemOutcome::Replace(b))) => {
                        put_key(&mut body, 1, WireType::Len);
                        put_varint(&mut body, b.len() as u64);
                        body.put_slice(&b);
                    }
                    _ => body.put_slice(&metric[s..inner.position()]),
                }
            } else if inner.skip(pk).is_ok() {
                body.put_slice(&metric[s..inner.position()]);
            } else {
                break;
            }
        }
        put_key(arena, k.field, WireType::Len);
        put_varint(arena, body.len() as u64);
        arena.put_slice(&body);
    }
    ItemOutcome::Replace(arena.split().freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::common::v1::{any_value, AnyValue, KeyValue};
    use crate::proto::logs::v1::LogRecord;
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    /// Found by the fuzzing campaign (target `rewrite`): a `Metric` with a histogram and then a
    /// gauge. prost keeps only the gauge (a later data field of another kind replaces), and so
    /// does the scanner's count; the rewriter must decide only the gauge's points, or the
    /// items it reports dropped are not the ones that leave the request.
    #[test]
    fn only_the_data_field_prost_keeps_is_rewritten() {
        use crate::proto::metrics::v1::{
            metric, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        };
        let hist = Metric {
            name: "m".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint::default()],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        }
        .encode_to_vec();
        let gauge = Metric {
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(), NumberDataPoint::default()],
            })),
            ..Default::default()
        }
        .encode_to_vec();
        let both = [hist.as_slice(), gauge.as_slice()].concat();
        let decoded = Metric::decode(both.as_slice()).unwrap();
        assert!(
            matches!(decoded.data, Some(metric::Data::Gauge(ref g)) if g.data_points.len() == 2)
        );
        // Dropping the first point the rewriter is shown drops a gauge point.
        let mut seen = Vec::new();
        let mut arena = BytesMut::new();
        let outcome = rewrite_metric_points(&both, &mut arena, |_point, field| {
            seen.push(field);
            if seen.len() == 1 {
                ItemOutcome::Drop
            } else {
                ItemOutcome::Keep
            }
        });
        assert_eq!(seen, [7, 7], "only the gauge's points are decided");
        let ItemOutcome::Replace(out) = outcome else {
            panic!("{outcome:?}")
        };
        match Metric::decode(out.as_ref()).unwrap().data {
            Some(metric::Data::Gauge(g)) => assert_eq!(g.data_points.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rewrites_attributes_and_body_of_one_record() {
        let rec = LogRecord {
            time_unix_nano: 7,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("card 4111".into())),
            }),
            attributes: vec![kv("a", "1"), kv("user.email", "x@y"), kv("c", "3")],
            ..Default::default()
        };
        let msg = rec.encode_to_vec();
        let mut attrs = Vec::new();
        read_attributes(&msg, fields::LOG_ATTRIBUTES, &mut attrs);
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[1].key(&msg), b"user.email");
        assert_eq!(attrs[1].value(&msg), AnyValueRef::String("x@y"));
        attrs.remove(1);
        attrs[1].set_value(AttrValue::String("three".into()));
        attrs.push(Attr::new(Bytes::from_static(b"new"), AttrValue::Absent));
        let body = AttrValue::String("card ****".into());
        let mut out = BytesMut::new();
        write_message(
            &msg,
            fields::LOG_ATTRIBUTES,
            &attrs,
            Some(FieldEdit {
                field: fields::LOG_BODY,
                value: &body,
            }),
            &mut out,
        );
        let got = LogRecord::decode(out.freeze()).unwrap();
        let mut want = rec.clone();
        want.attributes = vec![
            kv("a", "1"),
            kv("c", "three"),
            KeyValue {
                key: "new".into(),
                value: None,
                ..Default::default()
            },
        ];
        want.body = Some(AnyValue {
            value: Some(any_value::Value::StringValue("card ****".into())),
        });
        assert_eq!(got, want);
    }
}
