//! Writing OTLP metrics protobuf directly into one buffer: nested messages get their length
//! written after their content (a one-byte placeholder, widened in place when the content
//! needs a longer varint), so no message is built twice.

use crate::wire::{put_key, put_varint, varint_len, WireType};

/// Appends a length-delimited field `field` whose content `content` writes.
#[inline]
pub(crate) fn nested(out: &mut Vec<u8>, field: u32, content: impl FnOnce(&mut Vec<u8>)) {
    put_key(out, field, WireType::Len);
    let at = out.len();
    out.push(0);
    let start = out.len();
    content(out);
    let len = out.len() - start;
    let width = varint_len(len as u64);
    if width > 1 {
        out.resize(out.len() + width - 1, 0);
        out.copy_within(start..start + len, start + width - 1);
    }
    let mut prefix = [0u8; 10];
    let mut cursor = &mut prefix[..];
    put_varint(&mut cursor, len as u64);
    out[at..at + width].copy_from_slice(&prefix[..width]);
}

/// A string field (skipped when empty, as proto3 does).
#[inline]
pub(crate) fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        bytes_field(out, field, value.as_bytes());
    }
}

/// A bytes field, written even when empty.
#[inline]
pub(crate) fn bytes_field(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    put_key(out, field, WireType::Len);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A fixed64 field (skipped when zero).
#[inline]
pub(crate) fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(out, field, WireType::I64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A double field, always written (for `optional` and `oneof` doubles).
#[inline]
pub(crate) fn double(out: &mut Vec<u8>, field: u32, value: f64) {
    put_key(out, field, WireType::I64);
    out.extend_from_slice(&value.to_le_bytes());
}

/// A varint field (skipped when zero).
#[inline]
pub(crate) fn varint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(out, field, WireType::Varint);
        put_varint(out, value);
    }
}

/// An OTLP `KeyValue` with a string value, as field `field`.
#[inline]
pub(crate) fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    nested(out, field, |kv| {
        string(kv, 1, key);
        nested(kv, 2, |any| bytes_field(any, 1, value.as_bytes()));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn nested_lengths_of_every_width_decode() {
        use crate::proto::common::v1::{any_value, KeyValue};
        for n in [0usize, 1, 100, 126, 127, 128, 300, 16_383, 16_384, 70_000] {
            let value = "v".repeat(n);
            let mut out = Vec::new();
            key_value(&mut out, 1, "k", &value);
            // `out` is field 1 of some message: strip its key and length by decoding the wrapper.
            #[derive(Clone, PartialEq, prost::Message)]
            struct Wrapper {
                #[prost(message, optional, tag = "1")]
                kv: Option<KeyValue>,
            }
            let kv = Wrapper::decode(&out[..]).unwrap().kv.unwrap();
            assert_eq!(kv.key, "k");
            let Some(any_value::Value::StringValue(v)) = kv.value.unwrap().value else {
                panic!()
            };
            assert_eq!(v.len(), n);
        }
    }
}
