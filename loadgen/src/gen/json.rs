//! OTLP/JSON templates: the same pre-built variations as protobuf, converted once and
//! patched in place.
//!
//! The protobuf template holds placeholders whose JSON forms have the width of the real
//! values: ids as hex strings, timestamps as 19-digit decimal strings, and the
//! `loadgen.seq` value as a 15-digit decimal. One scan over the JSON text finds every
//! placeholder token. Per request, ids and timestamps are rewritten in place; the
//! sequence number replaces its token as a JSON number right-aligned with leading spaces
//! (`"intValue":          1234`), which keeps the width and is valid OTLP/JSON (64-bit
//! integers may be numbers or strings).

use std::collections::HashMap;

use anyhow::{bail, ensure, Result};

use super::patch::TimePatch;
use super::IdScheme;

/// A patch site in JSON text holding an id (hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonIdPatch {
    /// Offset of the first hex digit.
    pub at: u32,
    /// Trace index (trace ids) or span slot (span and parent ids).
    pub index: u32,
}

/// The `loadgen.seq` token of one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonSeqPatch {
    /// Offset of the token (its opening quote, if quoted).
    pub at: u32,
    /// Token width including quotes.
    pub width: u32,
    /// Span slot.
    pub slot: u32,
}

/// A request template in OTLP/JSON.
#[derive(Debug, Clone, Default)]
pub struct JsonTemplate {
    /// The JSON text holding placeholders.
    pub text: Vec<u8>,
    /// Trace id sites (one per span).
    pub trace_ids: Vec<JsonIdPatch>,
    /// Span id and parent span id sites, by the slot whose id they take.
    pub span_ids: Vec<JsonIdPatch>,
    /// Sequence number sites.
    pub seqs: Vec<JsonSeqPatch>,
    /// Timestamp sites (offset of the first digit of 19).
    pub times: Vec<TimePatch>,
}

#[derive(Debug, Clone, Copy)]
enum Site {
    Trace(u32),
    Span(u32),
    Seq(u32),
    Time(i64),
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out
}

/// Placeholder values of one protobuf template, as the generator recorded them.
pub struct PlaceholderValues<'a> {
    /// Trace id placeholder per trace index.
    pub trace_ids: &'a [(u32, [u8; 16])],
    /// (slot, placeholder) of every span id and parent span id.
    pub span_ids: &'a [(u32, [u8; 8])],
    /// (slot, placeholder) of every `loadgen.seq` value.
    pub seqs: &'a [(u32, i64)],
    /// (placeholder, offset from the base time) of every timestamp.
    pub times: &'a [(u64, i64)],
}

/// Builds a JSON template from the JSON form of a protobuf template by locating the
/// template's placeholder `values` in `text`.
pub fn locate(text: Vec<u8>, values: &PlaceholderValues<'_>) -> Result<JsonTemplate> {
    let mut sites: HashMap<Vec<u8>, Site> = HashMap::new();
    for &(t, id) in values.trace_ids {
        sites.insert(hex(&id), Site::Trace(t));
    }
    for &(slot, id) in values.span_ids {
        sites.insert(hex(&id), Site::Span(slot));
    }
    for &(slot, v) in values.seqs {
        let digits = v.to_string();
        ensure!(
            digits.len() == 15,
            "sequence placeholder must have 15 digits"
        );
        sites.insert(digits.into_bytes(), Site::Seq(slot));
    }
    for &(v, offset) in values.times {
        let digits = v.to_string();
        ensure!(
            digits.len() == 19,
            "timestamp placeholder must have 19 digits"
        );
        sites.insert(digits.into_bytes(), Site::Time(offset));
    }
    let mut out = JsonTemplate {
        text: Vec::new(),
        ..Default::default()
    };
    let mut found_once = 0usize;
    let b = &text[..];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let token = &b[start..j.min(b.len())];
                if let Some(site) = sites.get(token) {
                    record(
                        &mut out,
                        *site,
                        start,
                        (j + 1 - i) as u32,
                        i,
                        &mut found_once,
                    );
                }
                i = j + 1;
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if let Some(site) = sites.get(&b[start..i]) {
                    record(
                        &mut out,
                        *site,
                        start,
                        (i - start) as u32,
                        start,
                        &mut found_once,
                    );
                }
            }
            _ => i += 1,
        }
    }
    let expected = values.span_ids.len() + values.seqs.len() + values.times.len();
    if found_once != expected || out.trace_ids.len() != values.seqs.len() {
        bail!(
            "json template: found {found_once} of {expected} placeholders and {} trace ids for {} spans",
            out.trace_ids.len(),
            values.seqs.len()
        );
    }
    out.text = text;
    Ok(out)
}

fn record(
    out: &mut JsonTemplate,
    site: Site,
    content_at: usize,
    token_width: u32,
    token_at: usize,
    found_once: &mut usize,
) {
    match site {
        Site::Trace(t) => out.trace_ids.push(JsonIdPatch {
            at: content_at as u32,
            index: t,
        }),
        Site::Span(slot) => {
            *found_once += 1;
            out.span_ids.push(JsonIdPatch {
                at: content_at as u32,
                index: slot,
            })
        }
        Site::Seq(slot) => {
            *found_once += 1;
            out.seqs.push(JsonSeqPatch {
                at: token_at as u32,
                width: token_width,
                slot,
            })
        }
        Site::Time(offset) => {
            *found_once += 1;
            out.times.push(TimePatch {
                at: content_at as u32,
                offset_ns: offset,
            })
        }
    }
}

#[inline]
fn write_hex(dst: &mut [u8], bytes: &[u8]) {
    for (k, b) in bytes.iter().enumerate() {
        dst[2 * k] = HEX[(b >> 4) as usize];
        dst[2 * k + 1] = HEX[(b & 15) as usize];
    }
}

/// Writes `v` as exactly `width` decimal digits (zero-padded).
#[inline]
fn write_decimal(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Writes `v` right-aligned in `dst`, padded with spaces on the left.
#[inline]
fn write_padded(dst: &mut [u8], mut v: u64) {
    let mut k = dst.len();
    loop {
        k -= 1;
        dst[k] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || k == 0 {
            break;
        }
    }
    for d in &mut dst[..k] {
        *d = b' ';
    }
}

/// Rewrites the per-request fields of a copy of `tpl.text` held in `buf`.
#[inline]
pub fn patch(
    buf: &mut [u8],
    tpl: &JsonTemplate,
    base_ns: u64,
    ids: &IdScheme,
    seq_base: u64,
    trace_ids: &[[u8; 16]],
) {
    for p in &tpl.trace_ids {
        let at = p.at as usize;
        write_hex(&mut buf[at..at + 32], &trace_ids[p.index as usize]);
    }
    for p in &tpl.span_ids {
        let at = p.at as usize;
        write_hex(
            &mut buf[at..at + 16],
            &ids.span_id(seq_base + u64::from(p.index)),
        );
    }
    for p in &tpl.seqs {
        let at = p.at as usize;
        let v = ids.attribute_seq(seq_base + u64::from(p.slot));
        write_padded(&mut buf[at..at + p.width as usize], v);
    }
    for t in &tpl.times {
        let at = t.at as usize;
        write_decimal(
            &mut buf[at..at + 19],
            base_ns.wrapping_add_signed(t.offset_ns),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writers() {
        let mut b = [0u8; 19];
        write_decimal(&mut b, 1_700_000_000_123_456_789);
        assert_eq!(&b, b"1700000000123456789");
        let mut p = [0u8; 8];
        write_padded(&mut p, 1234);
        assert_eq!(&p, b"    1234");
        write_padded(&mut p, 0);
        assert_eq!(&p, b"       0");
        let mut h = [0u8; 4];
        write_hex(&mut h, &[0xab, 0x01]);
        assert_eq!(&h, b"ab01");
    }
}
