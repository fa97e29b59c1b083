//! One pass over an encoded span for exactly what the sampler needs: parent (root or not),
//! trace state, start and end times, status code, and the first value of a few attribute keys.
//!
//! `shardtel_protocol::span::SpanView` answers the same questions one accessor at a time, each
//! a general field walk; on the bench payloads (8 attributes per span) `fields()` plus one
//! `attribute()` cost about 1 µs per span, three quarters of the sampler's time. This reader
//! makes one pass with the protocol crate's `wire::Reader`, matches the tags it wants as single
//! bytes, and compares attribute keys without decoding values it does not need. Semantics
//! follow `SpanView` exactly (last occurrence of a scalar field wins, status fields merge, the
//! first attribute with a given key counts); malformed bytes end the pass without panicking.

use shardtel_protocol::wire::{Reader, WireType};

/// Span fields read by [`read`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpanFacts<'a> {
    /// `parent_span_id` is not empty.
    pub(crate) has_parent: bool,
    /// `trace_state`.
    pub(crate) trace_state: &'a [u8],
    /// `start_time_unix_nano`.
    pub(crate) start: u64,
    /// `end_time_unix_nano`.
    pub(crate) end: u64,
    /// `status.code`.
    pub(crate) status: i32,
}

/// The attribute keys the policies read (at most 64), with the set of their lengths, which
/// lets [`read`] pass over a `KeyValue` of any other length without comparing bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys {
    list: Vec<Vec<u8>>,
    /// Bit `l` set when a key is `l` bytes long (every bit when one is 128 bytes or longer).
    lens: u128,
}

impl Keys {
    /// The index of `key`, if it is one of the keys.
    pub(crate) fn position(&self, key: &[u8]) -> Option<usize> {
        self.list.iter().position(|k| k.as_slice() == key)
    }

    /// Adds `key`; its index is the number of keys before it.
    pub(crate) fn push(&mut self, key: Vec<u8>) {
        self.lens |= match key.len() {
            l @ 0..128 => 1 << l,
            _ => u128::MAX,
        };
        self.list.push(key);
    }

    /// Every key, as bits.
    fn all(&self) -> u64 {
        debug_assert!(self.list.len() <= 64);
        if self.list.len() >= 64 {
            u64::MAX
        } else {
            (1 << self.list.len()) - 1
        }
    }
}

const TAG_TRACE_ID: u8 = 1 << 3 | 2;
const TAG_SPAN_ID: u8 = 2 << 3 | 2;
const TAG_TRACE_STATE: u8 = 3 << 3 | 2;
const TAG_PARENT: u8 = 4 << 3 | 2;
const TAG_NAME: u8 = 5 << 3 | 2;
const TAG_KIND: u8 = 6 << 3;
const TAG_START: u8 = 7 << 3 | 1;
const TAG_END: u8 = 8 << 3 | 1;
const TAG_ATTRIBUTE: u8 = 9 << 3 | 2;
const TAG_STATUS: u8 = 15 << 3 | 2;
/// `flags`: field 16, wire type I32, as a two-byte varint.
const TAG_FLAGS: [u8; 2] = [(16 << 3 | 5) as u8 | 0x80, 1];
const TAG_KV_KEY: u8 = 1 << 3 | 2;
const TAG_KV_VALUE: u8 = 2 << 3 | 2;
const TAG_STATUS_CODE: u8 = 3 << 3;

/// Reads `body` (a Span message body). For each `keys[i]` (at most 64), calls `found(i, value)`
/// with the encoded `AnyValue` body of the first attribute with that key, if any (empty when
/// the attribute has no value).
pub(crate) fn read<'a>(
    body: &'a [u8],
    keys: &Keys,
    mut found: impl FnMut(usize, &'a [u8]),
) -> SpanFacts<'a> {
    let mut facts = SpanFacts::default();
    let mut seen: u64 = 0;
    let all = keys.all();
    let n = body.len();
    let mut pos = 0;
    // trace_id and span_id as every encoder writes them first (16 and 8 bytes): nothing to read.
    if body.get(..2) == Some(&[TAG_TRACE_ID, 16]) && n >= 18 {
        pos = 18;
        if body.get(18..20) == Some(&[TAG_SPAN_ID, 8]) && n >= 28 {
            pos = 28;
        }
    }
    // Then what every encoder writes next, in this order: trace_state (if any), parent_span_id,
    // name, kind, start and end time. Each is read here when it comes next with a one-byte
    // length, exactly as the loop below would read it; whatever does not (and everything after)
    // is left to the loop.
    if let Some((value, next)) = short_len(body, pos, TAG_TRACE_STATE) {
        facts.trace_state = value;
        pos = next;
    }
    if let Some((value, next)) = short_len(body, pos, TAG_PARENT) {
        facts.has_parent = !value.is_empty();
        pos = next;
    }
    if let Some((_, next)) = short_len(body, pos, TAG_NAME) {
        pos = next;
    }
    if body.get(pos) == Some(&TAG_KIND) && body.get(pos + 1).is_some_and(|b| *b < 0x80) {
        pos += 2;
    }
    for (tag, field) in [(TAG_START, &mut facts.start), (TAG_END, &mut facts.end)] {
        if body.get(pos) == Some(&tag) {
            if let Some(&bytes) = body.get(pos + 1..).and_then(|b| b.first_chunk::<8>()) {
                *field = u64::from_le_bytes(bytes);
                pos += 9;
            }
        }
    }
    while let Some(&tag) = body.get(pos) {
        // The common shape first: a one-byte tag of a length-delimited field (field numbers
        // 1..=15) with a one-byte length, read without the general loop's dispatch.
        if tag & 7 == 2 && tag < 0x80 {
            if let Some(&len) = body.get(pos + 1) {
                if len < 0x80 {
                    let start = pos + 2;
                    let end = start + usize::from(len);
                    if end > n {
                        break;
                    }
                    pos = end;
                    let value = &body[start..end];
                    if tag == TAG_ATTRIBUTE && seen != all {
                        if let Some(i) = match_key_value(value, keys, seen, &mut found) {
                            seen |= 1 << i;
                        }
                    } else {
                        take_len_field(tag, value, &mut facts);
                    }
                    continue;
                }
            }
        }
        // `flags` (field 16, fixed32), which current SDKs write on every span, after the
        // attributes: its two-byte tag and four bytes passed over without the general reader.
        if tag == TAG_FLAGS[0] && body.get(pos + 1) == Some(&TAG_FLAGS[1]) {
            if n - pos < 6 {
                break;
            }
            pos += 6;
            continue;
        }
        // Field numbers 1..=15 have one-byte tags: dispatch on the wire type directly.
        if !(8..0x80).contains(&tag) {
            let mut r = Reader::nested(body, pos..n);
            let Ok(key) = r.read_key() else { break };
            if r.skip(key).is_err() {
                break;
            }
            pos = r.position();
            continue;
        }
        pos += 1;
        match tag & 7 {
            2 => {
                let Some(len) = varint(body, &mut pos) else {
                    break;
                };
                if len > (n - pos) as u64 {
                    break;
                }
                let value = &body[pos..pos + len as usize];
                pos += len as usize;
                if tag == TAG_ATTRIBUTE && seen != all {
                    if let Some(i) = match_key_value(value, keys, seen, &mut found) {
                        seen |= 1 << i;
                    }
                } else {
                    take_len_field(tag, value, &mut facts);
                }
            }
            1 => {
                let Some(&bytes) = body.get(pos..).and_then(|b| b.first_chunk::<8>()) else {
                    break;
                };
                pos += 8;
                if tag == TAG_START {
                    facts.start = u64::from_le_bytes(bytes);
                } else if tag == TAG_END {
                    facts.end = u64::from_le_bytes(bytes);
                }
            }
            0 => {
                if varint(body, &mut pos).is_none() {
                    break;
                }
            }
            5 => {
                if n - pos < 4 {
                    break;
                }
                pos += 4;
            }
            // Groups and wire types 6/7: malformed here, as for a full decode.
            _ => break,
        }
    }
    facts
}

/// For each `keys[i]` not in `seen`, calls `found(i, value)` with the encoded `AnyValue` body of
/// the first `KeyValue` field `field` (a one-byte tag, wire type LEN) of message `body` with that
/// key, and adds `i` to `seen`. Used for a Resource's attributes (field 1), which may come in
/// several Resource messages: `seen` carries over from one to the next, so the first wins, as
/// `ResourceView::attribute` finds it.
pub(crate) fn read_attributes<'a>(
    body: &'a [u8],
    field: u32,
    keys: &Keys,
    seen: &mut u64,
    mut found: impl FnMut(usize, &'a [u8]),
) {
    let mut r = Reader::new(body);
    while let Some(Ok((k, v))) = r.next_field() {
        if let (true, shardtel_protocol::wire::Value::Len(range)) = (k.field == field, v) {
            if let Some(i) = match_key_value(&body[range], keys, *seen, &mut found) {
                *seen |= 1 << i;
            }
        }
    }
}

/// The value of a length-delimited field at `body[pos]` with tag `tag` and a one-byte length,
/// and the position after it; `None` when the field there is not that.
#[inline(always)]
fn short_len(body: &[u8], pos: usize, tag: u8) -> Option<(&[u8], usize)> {
    match body.get(pos..)? {
        [t, len, rest @ ..] if *t == tag && *len < 0x80 && rest.len() >= usize::from(*len) => {
            Some((&rest[..usize::from(*len)], pos + 2 + usize::from(*len)))
        }
        _ => None,
    }
}

/// The varint at `body[*pos]`, moving `pos` past it; `None` when truncated or invalid.
#[inline(always)]
fn varint(body: &[u8], pos: &mut usize) -> Option<u64> {
    match body.get(*pos) {
        Some(&b) if b < 0x80 => {
            *pos += 1;
            Some(u64::from(b))
        }
        Some(_) => {
            let mut r = Reader::nested(body, *pos..body.len());
            let v = r.read_varint().ok()?;
            *pos = r.position();
            Some(v)
        }
        None => None,
    }
}

/// What the sampler takes from length-delimited field `tag` (other than an attribute whose
/// key is to be matched) with body `value`.
#[inline(always)]
fn take_len_field<'a>(tag: u8, value: &'a [u8], facts: &mut SpanFacts<'a>) {
    match tag {
        TAG_STATUS => {
            if let Some(code) = status_code(value) {
                facts.status = code;
            }
        }
        TAG_TRACE_STATE => facts.trace_state = value,
        TAG_PARENT => facts.has_parent = !value.is_empty(),
        _ => {}
    }
}

/// If KeyValue `kv` has one of `keys` not yet in `seen`, calls `found` with its index and
/// value and returns the index. A key of a length no key has is passed over without comparing
/// bytes.
#[inline(always)]
fn match_key_value<'a>(
    kv: &'a [u8],
    keys: &Keys,
    seen: u64,
    found: &mut impl FnMut(usize, &'a [u8]),
) -> Option<usize> {
    let (key, value) = split_key_value(kv);
    if key.len() < 128 && keys.lens & (1 << key.len()) == 0 {
        return None;
    }
    let i = keys
        .list
        .iter()
        .enumerate()
        .position(|(i, k)| seen & (1 << i) == 0 && k.as_slice() == key)?;
    found(i, value.unwrap_or_default());
    Some(i)
}

/// The key and (encoded AnyValue) value of a KeyValue body; the last occurrence of each wins,
/// as in a full decode.
#[inline(always)]
fn split_key_value(kv: &[u8]) -> (&[u8], Option<&[u8]>) {
    // The shape every encoder writes: the key, then the value, nothing else.
    if let [TAG_KV_KEY, key_len, rest @ ..] = kv {
        let key_len = usize::from(*key_len);
        if key_len < 0x80 && rest.len() >= key_len {
            let (key, rest) = rest.split_at(key_len);
            match rest {
                [] => return (key, None),
                [TAG_KV_VALUE, value_len, value @ ..]
                    if *value_len < 0x80 && value.len() == usize::from(*value_len) =>
                {
                    return (key, Some(value));
                }
                _ => {}
            }
        }
    }
    let mut key: &[u8] = &[];
    let mut value = None;
    let mut r = Reader::new(kv);
    while let Some(Ok((k, v))) = r.next_field() {
        if let shardtel_protocol::wire::Value::Len(range) = v {
            match k.field {
                1 => key = &kv[range],
                2 => value = Some(&kv[range]),
                _ => {}
            }
        }
    }
    (key, value)
}

/// The `code` of a Status body, if present (last wins).
fn status_code(status: &[u8]) -> Option<i32> {
    let mut code = None;
    let mut r = Reader::new(status);
    while let Some(tag) = r.peek() {
        if tag == TAG_STATUS_CODE {
            r.bump();
            let Ok(value) = r.read_varint() else { break };
            code = Some(value as i32);
        } else {
            let Ok(key) = r.read_key() else { break };
            if key.wire_type == WireType::Len && r.read_len().is_err() {
                break;
            }
            if key.wire_type != WireType::Len && r.skip(key).is_err() {
                break;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{kv, span};
    use proptest::prelude::*;
    use prost::Message;
    use shardtel_protocol::proto::common::v1::any_value::Value;
    use shardtel_protocol::proto::trace::v1::{Span, Status};
    use shardtel_protocol::span::{AnyValueRef, SpanView};

    /// What SpanView says about the same span.
    fn reference<'a>(
        body: &'a [u8],
        keys: &[Vec<u8>],
    ) -> (SpanFacts<'a>, Vec<Option<AnyValueRef<'a>>>) {
        let view = SpanView::new(body);
        let f = view.fields();
        let facts = SpanFacts {
            has_parent: !f.parent_span_id.is_empty(),
            trace_state: f.trace_state,
            start: f.start_time_unix_nano,
            end: f.end_time_unix_nano,
            status: f.status_code,
        };
        (facts, keys.iter().map(|k| view.attribute(k)).collect())
    }

    fn ours<'a>(body: &'a [u8], keys: &[Vec<u8>]) -> (SpanFacts<'a>, Vec<Option<AnyValueRef<'a>>>) {
        let mut values = vec![None; keys.len()];
        let mut set = Keys::default();
        for k in keys {
            set.push(k.clone());
        }
        let facts = read(body, &set, |i, v| values[i] = Some(AnyValueRef::parse(v)));
        (facts, values)
    }

    fn keys() -> Vec<Vec<u8>> {
        ["user.id", "a", "b", "retry"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn reads_what_span_view_reads() {
        let spec = span(1, 1).status(2).trace_state("k=v").with_attrs(vec![
            ("a", Value::IntValue(5)),
            ("user.id", Value::StringValue("vip".into())),
            ("a", Value::IntValue(6)),
            ("long", Value::StringValue("x".repeat(300))),
        ]);
        let body = spec.to_proto().encode_to_vec();
        let (facts, values) = ours(&body, &keys());
        assert_eq!((facts, values.clone()), reference(&body, &keys()));
        assert!(facts.has_parent);
        assert_eq!(facts.status, 2);
        assert_eq!(values[0], Some(AnyValueRef::String("vip")));
        assert_eq!(values[1], Some(AnyValueRef::Int(5)));
        assert_eq!(values[2], None);
    }

    #[test]
    fn non_canonical_encodings_agree_too() {
        // A KeyValue whose value comes first and whose key is repeated (last wins), a long
        // key, two status messages (merged), repeated scalar fields (last wins).
        let mut body = Vec::new();
        let mut kv_body = Vec::new();
        kv_body.extend([TAG_KV_VALUE, 2, 0x18, 0x07]);
        kv_body.extend([TAG_KV_KEY, 1, b'x', TAG_KV_KEY, 1, b'a']);
        body.push(TAG_ATTRIBUTE);
        body.push(kv_body.len() as u8);
        body.extend(&kv_body);
        let long_key = vec![b'k'; 200];
        let long = kv(
            std::str::from_utf8(&long_key).unwrap(),
            Value::BoolValue(true),
        )
        .encode_to_vec();
        body.push(TAG_ATTRIBUTE);
        body.extend([(long.len() as u8) | 0x80, (long.len() >> 7) as u8]);
        body.extend(&long);
        for code in [2u8, 1] {
            body.extend([TAG_STATUS, 2, TAG_STATUS_CODE, code]);
        }
        let message_only = Status {
            message: "m".into(),
            code: 0,
        }
        .encode_to_vec();
        body.extend([TAG_STATUS, message_only.len() as u8]);
        body.extend(&message_only);
        for t in [5u64, 9] {
            body.push(TAG_START);
            body.extend(t.to_le_bytes());
        }
        let mut keys = keys();
        keys.push(long_key);
        let (facts, values) = ours(&body, &keys);
        assert_eq!((facts, values.clone()), reference(&body, &keys));
        assert_eq!(values[1], Some(AnyValueRef::Int(7)));
        assert_eq!(values[0], None);
        assert_eq!(values[4], Some(AnyValueRef::Bool(true)));
        assert_eq!((facts.status, facts.start), (1, 9));
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z]{0,5}".prop_map(Value::StringValue),
            any::<i64>().prop_map(Value::IntValue),
            any::<bool>().prop_map(Value::BoolValue),
            any::<f64>().prop_map(Value::DoubleValue),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_span_view_on_encoded_spans(
            attrs in prop::collection::vec((prop::sample::select(vec!["a", "b", "c", "user.id", "retry"]), any_value()), 0..10),
            parent in any::<bool>(),
            status in prop::option::of(0i32..3),
            trace_state in "[a-z=,]{0,10}",
            start in any::<u64>(),
            end in any::<u64>(),
            name in "[a-z]{0,200}",
            kind in 0i32..6,
            flags in any::<u32>(),
        ) {
            let span = Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                parent_span_id: if parent { vec![3; 8] } else { Vec::new() },
                trace_state,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: attrs.into_iter().map(|(k, v)| kv(k, v)).collect(),
                status: status.map(|code| Status { code, message: String::new() }),
                flags,
                ..Default::default()
            };
            let body = span.encode_to_vec();
            // Debug strings, so that NaN equals NaN.
            prop_assert_eq!(
                format!("{:?}", ours(&body, &keys())),
                format!("{:?}", reference(&body, &keys()))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ours(&body, &keys());
        }
    }
}
