//! Lazy, zero-copy field access to one encoded `Span` or `Resource`.
//!
//! A [`SpanView`] wraps the bytes of a Span body (as indexed by [`crate::scan::TracesIndex`]) and
//! reads fields on demand; [`SpanView::fields`] reads all the scalar fields in one pass. Views
//! never panic: on malformed bytes (possible only when a view is built over unvalidated input)
//! accessors stop at the damage and return what they found so far, or defaults.

use crate::scan::TracesIndex;
use crate::wire::{Reader, Value, WireType};

/// A borrowed `AnyValue`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnyValueRef<'a> {
    /// `string_value`.
    String(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// `array_value`: the encoded `ArrayValue` body (see [`AnyValueRef::array_items`]).
    Array(&'a [u8]),
    /// `kvlist_value`: the encoded `KeyValueList` body (see [`AnyValueRef::kv_items`]).
    KvList(&'a [u8]),
    /// No value set.
    Empty,
}

impl<'a> AnyValueRef<'a> {
    /// Parses an encoded `AnyValue` body. The last value field wins, as in prost.
    pub fn parse(body: &'a [u8]) -> AnyValueRef<'a> {
        let mut v = AnyValueRef::Empty;
        let mut r = Reader::new(body);
        while let Some(Ok((key, value))) = r.next_field() {
            v = match (key.field, value) {
                (1, Value::Len(b)) => match std::str::from_utf8(&body[b]) {
                    Ok(s) => AnyValueRef::String(s),
                    Err(_) => return AnyValueRef::Empty,
                },
                (2, Value::Varint(x)) => AnyValueRef::Bool(x != 0),
                (3, Value::Varint(x)) => AnyValueRef::Int(x as i64),
                (4, Value::I64(x)) => AnyValueRef::Double(f64::from_bits(x)),
                (5, Value::Len(b)) => AnyValueRef::Array(&body[b]),
                (6, Value::Len(b)) => AnyValueRef::KvList(&body[b]),
                (7, Value::Len(b)) => AnyValueRef::Bytes(&body[b]),
                _ => continue,
            };
        }
        v
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValueRef::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items of an array value (empty for other kinds).
    pub fn array_items(&self) -> impl Iterator<Item = AnyValueRef<'a>> + 'a {
        let body: &'a [u8] = match self {
            AnyValueRef::Array(b) => b,
            _ => &[],
        };
        fields(body, 1).map(AnyValueRef::parse)
    }

    /// The entries of a kvlist value (empty for other kinds).
    pub fn kv_items(&self) -> impl Iterator<Item = (&'a [u8], AnyValueRef<'a>)> + 'a {
        let body: &'a [u8] = match self {
            AnyValueRef::KvList(b) => b,
            _ => &[],
        };
        fields(body, 1).map(parse_key_value)
    }
}

/// Length-delimited payloads of every occurrence of `field` in `body`, in order; stops at the
/// first malformed field.
fn fields(body: &[u8], field: u32) -> impl Iterator<Item = &[u8]> + '_ {
    let mut r = Reader::new(body);
    std::iter::from_fn(move || loop {
        match r.next_field()? {
            Ok((k, Value::Len(b))) if k.field == field => return Some(&body[b]),
            Ok(_) => continue,
            Err(_) => return None,
        }
    })
}

/// Splits a `KeyValue` body into (key bytes, value).
fn parse_key_value(body: &[u8]) -> (&[u8], AnyValueRef<'_>) {
    let mut key: &[u8] = &[];
    let mut value = AnyValueRef::Empty;
    let mut r = Reader::new(body);
    while let Some(Ok((k, v))) = r.next_field() {
        match (k.field, v) {
            (1, Value::Len(b)) => key = &body[b],
            (2, Value::Len(b)) => value = AnyValueRef::parse(&body[b]),
            _ => {}
        }
    }
    (key, value)
}

/// The first attribute named `key` among the `KeyValue` fields `field` of `msg` (the item's
/// bytes, before any change), read without copying.
///
/// The common shape of a `KeyValue` (`key` first, one-byte lengths, then only its `value`) is
/// told apart from `key` by its bytes alone; any other shape is parsed in full, as a decoder
/// would (the last `key` and `value` fields count).
pub fn find_attribute<'a>(msg: &'a [u8], field: u32, key: &[u8]) -> Option<AnyValueRef<'a>> {
    let mut r = Reader::new(msg);
    while !r.is_empty() {
        let k = r.read_key().ok()?;
        if k.field != field || k.wire_type != WireType::Len {
            r.skip(k).ok()?;
            continue;
        }
        let b = r.read_len().ok()?;
        if other_key(&msg[b.clone()], key) {
            continue;
        }
        let mut kr = Reader::nested(msg, b);
        let mut found: &[u8] = &[];
        let mut value = None;
        while let Some(Ok((kk, vv))) = kr.next_field() {
            match (kk.field, vv) {
                (1, Value::Len(x)) => found = &msg[x],
                (2, Value::Len(x)) => value = Some(x),
                _ => {}
            }
        }
        if found == key {
            return Some(value.map_or(AnyValueRef::Empty, |x| AnyValueRef::parse(&msg[x])));
        }
    }
    None
}

/// Whether the `KeyValue` body `kv` is certainly not named `key`: its key comes first with a
/// one-byte length, differs from `key`, and is followed by nothing or by one `value` field
/// with a one-byte length that ends the message (so no later `key` field can rename it).
#[inline(always)]
fn other_key(kv: &[u8], key: &[u8]) -> bool {
    let [0x0a, n, rest @ ..] = kv else {
        return false;
    };
    let n = usize::from(*n);
    if n >= 0x80 || rest.len() < n || &rest[..n] == key {
        return false;
    }
    match &rest[n..] {
        [] => true,
        [0x12, l, v @ ..] => *l < 0x80 && v.len() == usize::from(*l),
        _ => false,
    }
}

/// All scalar fields of a span, read in one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanFields<'a> {
    /// `trace_id` (16 bytes in a scanned span).
    pub trace_id: &'a [u8],
    /// `span_id` (8 bytes in a scanned span).
    pub span_id: &'a [u8],
    /// `parent_span_id` (empty for a root span).
    pub parent_span_id: &'a [u8],
    /// `trace_state` (UTF-8 in a scanned span).
    pub trace_state: &'a [u8],
    /// `name` (UTF-8 in a scanned span).
    pub name: &'a [u8],
    /// `kind` (SpanKind).
    pub kind: i32,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// `status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// `status.message`.
    pub status_message: &'a [u8],
    /// `flags`.
    pub flags: u32,
}

/// Lazy view of one encoded `Span` body.
#[derive(Clone, Copy, Debug)]
pub struct SpanView<'a> {
    body: &'a [u8],
}

impl<'a> SpanView<'a> {
    /// A view over the bytes of one Span body (no tag/length prefix).
    pub fn new(body: &'a [u8]) -> Self {
        SpanView { body }
    }

    /// The Span body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Reads every scalar field in one pass (last occurrence wins; status fields merge).
    pub fn fields(&self) -> SpanFields<'a> {
        let mut f = SpanFields::default();
        let body = self.body;
        let mut r = Reader::new(body);
        // Each field's value read by its wire type directly (no `Value` built for the
        // attributes, events and links skipped over); a malformed field ends the walk, as
        // `next_field` would.
        while !r.is_empty() {
            let Ok(k) = r.read_key() else { break };
            let v = match k.wire_type {
                WireType::Len => match r.read_len() {
                    Ok(b) => {
                        match k.field {
                            1 => f.trace_id = &body[b],
                            2 => f.span_id = &body[b],
                            3 => f.trace_state = &body[b],
                            4 => f.parent_span_id = &body[b],
                            5 => f.name = &body[b],
                            15 => f.merge_status(&body[b]),
                            _ => {}
                        }
                        continue;
                    }
                    Err(_) => break,
                },
                WireType::Varint => match r.read_varint() {
                    Ok(x) => Value::Varint(x),
                    Err(_) => break,
                },
                WireType::I64 => match r.read_fixed64() {
                    Ok(x) => Value::I64(x),
                    Err(_) => break,
                },
                WireType::I32 => match r.read_fixed32() {
                    Ok(x) => Value::I32(x),
                    Err(_) => break,
                },
                WireType::StartGroup | WireType::EndGroup => break,
            };
            match (k.field, v) {
                (6, Value::Varint(x)) => f.kind = x as i32,
                (7, Value::I64(x)) => f.start_time_unix_nano = x,
                (8, Value::I64(x)) => f.end_time_unix_nano = x,
                (16, Value::I32(x)) => f.flags = x,
                _ => {}
            }
        }
        f
    }
}

impl<'a> SpanFields<'a> {
    /// Merges a `Status` body into the status fields (a repeated `status` merges, as a decoder
    /// does).
    fn merge_status(&mut self, status: &'a [u8]) {
        let mut sr = Reader::new(status);
        while let Some(Ok((sk, sv))) = sr.next_field() {
            match (sk.field, sv) {
                (2, Value::Len(m)) => self.status_message = &status[m],
                (3, Value::Varint(c)) => self.status_code = c as i32,
                _ => {}
            }
        }
    }
}

impl<'a> SpanView<'a> {
    fn last_len(&self, field: u32) -> &'a [u8] {
        let mut out: &'a [u8] = &[];
        let mut r = Reader::new(self.body);
        while let Some(Ok((k, v))) = r.next_field() {
            if let (true, Value::Len(b)) = (k.field == field, v) {
                out = &self.body[b];
            }
        }
        out
    }

    fn last_scalar(&self, field: u32) -> u64 {
        let mut out = 0;
        let mut r = Reader::new(self.body);
        while let Some(Ok((k, v))) = r.next_field() {
            if k.field == field {
                match v {
                    Value::Varint(x) | Value::I64(x) => out = x,
                    Value::I32(x) => out = u64::from(x),
                    Value::Len(_) => {}
                }
            }
        }
        out
    }

    /// `trace_id`.
    pub fn trace_id(&self) -> &'a [u8] {
        self.last_len(1)
    }
    /// `span_id`.
    pub fn span_id(&self) -> &'a [u8] {
        self.last_len(2)
    }
    /// `parent_span_id`.
    pub fn parent_span_id(&self) -> &'a [u8] {
        self.last_len(4)
    }
    /// `trace_state`.
    pub fn trace_state(&self) -> &'a [u8] {
        self.last_len(3)
    }
    /// `name`.
    pub fn name(&self) -> &'a [u8] {
        self.last_len(5)
    }
    /// `kind` (SpanKind as an integer).
    pub fn kind(&self) -> i32 {
        self.last_scalar(6) as i32
    }
    /// `start_time_unix_nano`.
    pub fn start_time_unix_nano(&self) -> u64 {
        self.last_scalar(7)
    }
    /// `end_time_unix_nano`.
    pub fn end_time_unix_nano(&self) -> u64 {
        self.last_scalar(8)
    }
    /// `status.code`: 0 unset, 1 ok, 2 error.
    pub fn status_code(&self) -> i32 {
        self.fields().status_code
    }
    /// The first attribute named `key`.
    pub fn attribute(&self, key: &[u8]) -> Option<AnyValueRef<'a>> {
        find_attribute(self.body, 9, key)
    }
    /// All attributes as (key, value), in order.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a [u8], AnyValueRef<'a>)> + 'a {
        fields(self.body, 9).map(parse_key_value)
    }
}

/// Lazy view of one encoded `Resource` body.
#[derive(Clone, Copy, Debug)]
pub struct ResourceView<'a> {
    body: &'a [u8],
}

impl<'a> ResourceView<'a> {
    /// A view over the bytes of one Resource body (no tag/length prefix).
    pub fn new(body: &'a [u8]) -> Self {
        ResourceView { body }
    }
    /// The first attribute named `key`.
    pub fn attribute(&self, key: &[u8]) -> Option<AnyValueRef<'a>> {
        find_attribute(self.body, 1, key)
    }
    /// All attributes as (key, value), in order.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a [u8], AnyValueRef<'a>)> + 'a {
        fields(self.body, 1).map(parse_key_value)
    }
}

impl TracesIndex {
    /// The first attribute named `key` of resource `resource` (an index into `resources`) of
    /// the request `buf` this index was built from.
    pub fn resource_attribute<'a>(
        &'a self,
        buf: &'a [u8],
        resource: u32,
        key: &[u8],
    ) -> Option<AnyValueRef<'a>> {
        if let Some(fields) = self.rewrites.resource(resource) {
            return resource_attribute_in(fields, key);
        }
        for h in self.resource_headers(resource) {
            let Some(field) = buf.get(h) else { continue };
            let mut r = Reader::new(field);
            if let Some(Ok((k, Value::Len(b)))) = r.next_field() {
                if k.field == 1 {
                    if let Some(v) = ResourceView::new(&field[b]).attribute(key) {
                        return Some(v);
                    }
                }
            }
        }
        None
    }
}

/// The first attribute named `key` of the `Resource` among the encoded header fields `fields`
/// (a rewritten resource's, see [`crate::scan::Rewrites`]).
fn resource_attribute_in<'a>(fields: &'a [u8], key: &[u8]) -> Option<AnyValueRef<'a>> {
    let mut r = Reader::new(fields);
    while let Some(Ok((k, v))) = r.next_field() {
        if let (1, Value::Len(b)) = (k.field, v) {
            if let Some(v) = ResourceView::new(&fields[b]).attribute(key) {
                return Some(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::proto::common::v1::{
        any_value::Value as V, AnyValue, ArrayValue, KeyValue, KeyValueList,
    };
    use crate::proto::resource::v1::Resource;
    use crate::proto::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    fn kv(k: &str, v: V) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn sample() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            trace_state: "ts".into(),
            name: "GET /".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            flags: 0x100,
            attributes: vec![
                kv("s", V::StringValue("x".into())),
                kv("b", V::BoolValue(true)),
                kv("i", V::IntValue(-5)),
                kv("d", V::DoubleValue(1.5)),
                kv("y", V::BytesValue(vec![9, 9])),
                kv(
                    "a",
                    V::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(V::IntValue(1)),
                        }],
                    }),
                ),
                kv(
                    "m",
                    V::KvlistValue(KeyValueList {
                        values: vec![kv("in", V::StringValue("n".into()))],
                    }),
                ),
                KeyValue {
                    key: "e".into(),
                    value: None,
                    ..Default::default()
                },
                kv("s", V::StringValue("second".into())),
            ],
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reads_fields() {
        let body = sample().encode_to_vec();
        let v = SpanView::new(&body);
        let f = v.fields();
        assert_eq!(f.trace_id, &[1; 16]);
        assert_eq!(f.span_id, &[2; 8]);
        assert_eq!(f.parent_span_id, &[3; 8]);
        assert_eq!(f.trace_state, b"ts");
        assert_eq!(f.name, b"GET /");
        assert_eq!(f.kind, 2);
        assert_eq!((f.start_time_unix_nano, f.end_time_unix_nano), (10, 20));
        assert_eq!(f.status_code, 2);
        assert_eq!(f.status_message, b"boom");
        assert_eq!(f.flags, 0x100);
        assert_eq!(v.trace_id(), f.trace_id);
        assert_eq!(v.span_id(), f.span_id);
        assert_eq!(v.parent_span_id(), f.parent_span_id);
        assert_eq!(v.name(), f.name);
        assert_eq!(v.trace_state(), f.trace_state);
        assert_eq!(v.kind(), 2);
        assert_eq!(v.start_time_unix_nano(), 10);
        assert_eq!(v.end_time_unix_nano(), 20);
        assert_eq!(v.status_code(), 2);
    }

    #[test]
    fn reads_attributes() {
        let body = sample().encode_to_vec();
        let v = SpanView::new(&body);
        assert_eq!(v.attribute(b"s"), Some(AnyValueRef::String("x")));
        assert_eq!(v.attribute(b"b"), Some(AnyValueRef::Bool(true)));
        assert_eq!(v.attribute(b"i"), Some(AnyValueRef::Int(-5)));
        assert_eq!(v.attribute(b"d"), Some(AnyValueRef::Double(1.5)));
        assert_eq!(v.attribute(b"y"), Some(AnyValueRef::Bytes(&[9, 9])));
        assert_eq!(v.attribute(b"e"), Some(AnyValueRef::Empty));
        assert_eq!(v.attribute(b"nope"), None);
        let a = v.attribute(b"a").unwrap();
        assert_eq!(
            a.array_items().collect::<Vec<_>>(),
            vec![AnyValueRef::Int(1)]
        );
        let m = v.attribute(b"m").unwrap();
        assert_eq!(
            m.kv_items().collect::<Vec<_>>(),
            vec![(&b"in"[..], AnyValueRef::String("n"))]
        );
        assert_eq!(v.attributes().count(), 9);
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [
            &[0xffu8, 0xff][..],
            &[0x0a, 0x50],
            &[0x4a, 0x02, 0x0a, 0x09],
            &[],
        ] {
            let v = SpanView::new(bytes);
            let _ = v.fields();
            let _ = v.attribute(b"k");
            let _ = v.name();
        }
    }

    #[test]
    fn resource_attribute_lookup() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", V::StringValue("svc".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![sample()],
                    ..Default::default()
                }],
                schema_url: "u".into(),
            }],
        };
        let buf = req.encode_to_vec();
        let mut idx = TracesIndex::default();
        idx.scan(&buf).unwrap();
        assert_eq!(
            idx.resource_attribute(&buf, 0, b"service.name"),
            Some(AnyValueRef::String("svc"))
        );
        assert_eq!(idx.resource_attribute(&buf, 0, b"other"), None);
    }

    /// `find_attribute` before its fast path: every `KeyValue` parsed in full.
    fn find_attribute_parsed<'a>(
        body: &'a [u8],
        field: u32,
        key: &[u8],
    ) -> Option<AnyValueRef<'a>> {
        let mut r = Reader::new(body);
        while let Some(Ok((k, v))) = r.next_field() {
            let (true, Value::Len(b)) = (k.field == field, v) else {
                continue;
            };
            let kv = &body[b];
            let mut kr = Reader::new(kv);
            let (mut found, mut value) = (&[][..], None);
            while let Some(Ok((kk, vv))) = kr.next_field() {
                match (kk.field, vv) {
                    (1, Value::Len(x)) => found = &kv[x],
                    (2, Value::Len(x)) => value = Some(&kv[x]),
                    _ => {}
                }
            }
            if found == key {
                return Some(value.map_or(AnyValueRef::Empty, AnyValueRef::parse));
            }
        }
        None
    }

    mod find_attribute_model {
        //! The fast path of `find_attribute` (a `KeyValue` told apart by its first bytes) finds
        //! exactly what parsing every `KeyValue` finds, for canonical and odd shapes: value
        //! first, repeated keys, long keys and values, unknown fields, truncated bytes.
        use super::*;
        use proptest::prelude::*;

        fn put_len(out: &mut Vec<u8>, field: u32, payload: &[u8]) {
            crate::wire::put_len_field(out, field, payload);
        }

        /// One field of a `KeyValue`: 0 key, 1 string value, 2 int value, 3 unknown varint.
        fn kv_field() -> impl Strategy<Value = (u8, usize)> {
            (0u8..4, 0usize..4)
        }

        const KEYS: [&str; 4] = ["a", "b", "http.method", ""];

        fn encode_kv(fields: &[(u8, usize)]) -> Vec<u8> {
            let long_key = "k".repeat(130);
            let long_value = "v".repeat(200);
            let mut kv = Vec::new();
            for &(f, pick) in fields {
                match f {
                    0 => {
                        let key = if pick == 3 {
                            long_key.as_str()
                        } else {
                            KEYS[pick]
                        };
                        put_len(&mut kv, 1, key.as_bytes());
                    }
                    1 => {
                        let mut any = Vec::new();
                        let v = if pick == 3 { long_value.as_str() } else { "x" };
                        put_len(&mut any, 1, v.as_bytes());
                        put_len(&mut kv, 2, &any);
                    }
                    2 => {
                        let mut any = vec![0x18];
                        crate::wire::put_varint(&mut any, pick as u64 * 300);
                        put_len(&mut kv, 2, &any);
                    }
                    _ => {
                        kv.push(0x18);
                        crate::wire::put_varint(&mut kv, pick as u64);
                    }
                }
            }
            kv
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn fast_path_finds_what_parsing_finds(
                kvs in prop::collection::vec(prop::collection::vec(kv_field(), 0..4), 0..6),
                cut in prop::option::of(0usize..400),
                wanted in 0usize..5,
            ) {
                let mut body = Vec::new();
                put_len(&mut body, 5, b"name");
                for fields in &kvs {
                    put_len(&mut body, 9, &encode_kv(fields));
                }
                body.push(0x50); // field 10, varint
                body.push(1);
                if let Some(c) = cut {
                    body.truncate(c.min(body.len()));
                }
                let long_key = "k".repeat(130);
                let key = match wanted {
                    3 => long_key.as_str(),
                    4 => "absent",
                    k => KEYS[k],
                };
                prop_assert_eq!(
                    find_attribute(&body, 9, key.as_bytes()),
                    find_attribute_parsed(&body, 9, key.as_bytes())
                );
            }
        }
    }

    /// `SpanView::fields` as it read before its direct loop: every field through `next_field`.
    fn fields_parsed(body: &[u8]) -> SpanFields<'_> {
        let mut f = SpanFields::default();
        let mut r = Reader::new(body);
        while let Some(Ok((k, v))) = r.next_field() {
            match (k.field, v) {
                (1, Value::Len(b)) => f.trace_id = &body[b],
                (2, Value::Len(b)) => f.span_id = &body[b],
                (3, Value::Len(b)) => f.trace_state = &body[b],
                (4, Value::Len(b)) => f.parent_span_id = &body[b],
                (5, Value::Len(b)) => f.name = &body[b],
                (6, Value::Varint(x)) => f.kind = x as i32,
                (7, Value::I64(x)) => f.start_time_unix_nano = x,
                (8, Value::I64(x)) => f.end_time_unix_nano = x,
                (15, Value::Len(b)) => f.merge_status(&body[b]),
                (16, Value::I32(x)) => f.flags = x,
                _ => {}
            }
        }
        f
    }

    mod fields_model {
        //! The direct loop of `SpanView::fields` reads what reading every field through
        //! `next_field` reads: for encoded spans cut anywhere, and for arbitrary bytes.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn direct_loop_reads_what_next_field_reads(
                name in "[a-z ]{0,20}",
                kind in 0i32..6,
                code in prop::option::of(0i32..3),
                start in any::<u64>(),
                flags in any::<u32>(),
                attrs in 0usize..4,
                cut in prop::option::of(0usize..200),
            ) {
                let span = Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start.wrapping_add(5),
                    attributes: (0..attrs).map(|i| kv(&format!("k{i}"), V::IntValue(i as i64))).collect(),
                    status: code.map(|code| Status { code, message: "m".into() }),
                    flags,
                    ..Default::default()
                };
                let mut body = span.encode_to_vec();
                if let Some(c) = cut {
                    body.truncate(c.min(body.len()));
                }
                prop_assert_eq!(SpanView::new(&body).fields(), fields_parsed(&body));
            }

            #[test]
            fn direct_loop_reads_what_next_field_reads_on_any_bytes(
                body in prop::collection::vec(any::<u8>(), 0..64),
            ) {
                prop_assert_eq!(SpanView::new(&body).fields(), fields_parsed(&body));
            }
        }
    }
}
