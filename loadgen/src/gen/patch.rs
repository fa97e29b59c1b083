//! Patch sites in pre-encoded requests: finding them once, writing them per request.
//!
//! Templates are encoded by prost with unique random placeholder values in every field
//! that changes per request (ids, timestamps, the sequence attribute). The encoder then
//! finds each placeholder's byte offset. Every patched field has a fixed width on the
//! wire (bytes of fixed length, `fixed64`, and a 7-byte varint), so a request is a copy
//! of the template plus a few in-place writes: no protobuf encoding per request.

use anyhow::{bail, Result};

use crate::rng::Rng;

/// Marks an absent patch site (a root span has no parent id).
pub const NO_OFFSET: u32 = u32::MAX;

/// Bytes in the padded varint that carries `loadgen.seq` (values below 2^49).
pub const SEQ_VARINT_LEN: usize = 7;

/// The largest value a [`SEQ_VARINT_LEN`]-byte varint carries.
pub const SEQ_VARINT_MAX: u64 = (1 << (7 * SEQ_VARINT_LEN)) - 1;

/// A fixed64 timestamp inside a template and its value relative to the request's base
/// time (wall clock when the request or trace group was generated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePatch {
    /// Byte offset of the 8 little-endian bytes.
    pub at: u32,
    /// Nanoseconds added to the base time (negative: in the past).
    pub offset_ns: i64,
}

/// Unique placeholder values for one template.
pub struct Placeholders {
    rng: Rng,
    seen: std::collections::HashSet<u64>,
}

impl Placeholders {
    /// A placeholder source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed ^ 0x5eed_91ac_e401_de55),
            seen: Default::default(),
        }
    }

    /// A fresh 64-bit value with its top bit set, different from every earlier one.
    pub fn next_u64(&mut self) -> u64 {
        loop {
            let v = self.rng.next_u64() | (1 << 63);
            if self.seen.insert(v) {
                return v;
            }
        }
    }

    /// A fresh timestamp placeholder: 19 decimal digits (like every Unix time in
    /// nanoseconds from 2001 to 2286), so that its OTLP/JSON form has the width of the
    /// real value that replaces it.
    pub fn timestamp(&mut self) -> u64 {
        loop {
            let v = 1_000_000_000_000_000_000 + self.rng.next_u64() % 8_999_999_999_999_999_999;
            if self.seen.insert(v) {
                return v;
            }
        }
    }

    /// A fresh 8-byte id.
    pub fn id8(&mut self) -> [u8; 8] {
        self.next_u64().to_be_bytes()
    }

    /// A fresh 16-byte id.
    pub fn id16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        out
    }

    /// A fresh value whose canonical varint is exactly [`SEQ_VARINT_LEN`] bytes long.
    pub fn seq_value(&mut self) -> i64 {
        loop {
            let v = (self.rng.next_u64() & SEQ_VARINT_MAX) | (1 << 48);
            if self.seen.insert(v) {
                return v as i64;
            }
        }
    }
}

/// Finds `needle` in `hay` at or after `from`.
pub fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() || needle.is_empty() {
        return None;
    }
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(p) => {
                let at = i + p;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
        }
    }
    None
}

/// Finds `tag` followed by `value` (at or after `from`) and returns the offset of `value`.
pub fn find_tagged(hay: &[u8], tag: u8, value: &[u8], from: usize) -> Result<u32> {
    let mut needle = Vec::with_capacity(1 + value.len());
    needle.push(tag);
    needle.extend_from_slice(value);
    match find_from(hay, &needle, from) {
        Some(at) => Ok((at + 1) as u32),
        None => bail!("placeholder for field tag {tag:#04x} not found in template"),
    }
}

/// The canonical varint encoding of `v`.
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Writes `v` as a varint of exactly [`SEQ_VARINT_LEN`] bytes (padded with continuation
/// bytes, which protobuf decoders accept).
#[inline]
pub fn write_seq_varint(buf: &mut [u8], at: usize, v: u64) {
    debug_assert!(v <= SEQ_VARINT_MAX);
    let dst = &mut buf[at..at + SEQ_VARINT_LEN];
    for (i, b) in dst.iter_mut().enumerate() {
        let part = ((v >> (7 * i)) & 0x7f) as u8;
        *b = if i + 1 < SEQ_VARINT_LEN {
            part | 0x80
        } else {
            part
        };
    }
}

/// Writes a fixed64 value.
#[inline]
pub fn write_fixed64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Applies time patches relative to `base_ns`.
#[inline]
pub fn patch_times(buf: &mut [u8], times: &[TimePatch], base_ns: u64) {
    for t in times {
        write_fixed64(buf, t.at as usize, base_ns.wrapping_add_signed(t.offset_ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn find_from_finds_after_offset() {
        let hay = b"abcabcabd";
        assert_eq!(find_from(hay, b"abc", 0), Some(0));
        assert_eq!(find_from(hay, b"abc", 1), Some(3));
        assert_eq!(find_from(hay, b"abd", 0), Some(6));
        assert_eq!(find_from(hay, b"abe", 0), None);
        assert_eq!(find_from(hay, b"d", 8), Some(8));
        assert_eq!(find_from(hay, b"d", 9), None);
    }

    #[test]
    fn padded_varint_decodes_with_prost() {
        let mut p = Placeholders::new(1);
        for v in [0u64, 1, 127, 128, 1 << 40, SEQ_VARINT_MAX] {
            let placeholder = p.seq_value();
            assert_eq!(varint(placeholder as u64).len(), SEQ_VARINT_LEN);
            let mut buf = vec![0u8; SEQ_VARINT_LEN];
            write_seq_varint(&mut buf, 0, v);
            let decoded = prost::encoding::decode_varint(&mut &buf[..]).unwrap();
            assert_eq!(decoded, v);
        }
    }

    #[test]
    fn patched_int_attribute_keeps_message_valid() {
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
        let mut p = Placeholders::new(2);
        let placeholder = p.seq_value();
        let kv = KeyValue {
            key: "loadgen.seq".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(placeholder)),
            }),
            ..Default::default()
        };
        let mut bytes = kv.encode_to_vec();
        let at = find_tagged(&bytes, 0x18, &varint(placeholder as u64), 0).unwrap();
        write_seq_varint(&mut bytes, at as usize, 42);
        let back = KeyValue::decode(&bytes[..]).unwrap();
        assert_eq!(back.value.unwrap().value, Some(Value::IntValue(42)));
    }
}
