//! Validating scanner: indexes an `ExportTraceServiceRequest` without decoding it, and validates
//! and counts metrics and logs requests.
//!
//! [`TracesIndex::scan`] walks `ResourceSpans → ScopeSpans → Span`, validates the wire structure
//! of every field (nested messages, attributes recursively with a depth limit, UTF-8 of string
//! fields, trace id 16 bytes, span id 8 bytes) and records offsets: the header fields of each
//! resource and scope, and the body range and trace id of each span. Nothing is copied and,
//! once the index's vectors have grown, nothing is allocated.
//!
//! Anything the scanner accepts, `prost` decodes too (the scanner is at least as strict).
//! Repeated occurrences of a scalar field follow prost's last-wins rule.

use std::ops::Range;

use crate::wire::{Key, Reader, WireError, WireType};
use crate::TraceId;

/// Nesting limit for embedded messages, counted from the request (depth 0). prost gives up at
/// 100; OTLP's deepest fixed path is 6 levels, the rest is `AnyValue` nesting.
pub const MAX_DEPTH: u32 = 64;

/// Why a request was rejected. Offsets are absolute positions in the scanned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The message ends in the middle of a field.
    #[error("truncated protobuf at offset {offset}")]
    Truncated {
        /// Where the incomplete item starts.
        offset: u32,
    },
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("invalid varint at offset {offset}")]
    InvalidVarint {
        /// Where the varint starts.
        offset: u32,
    },
    /// A field key above `u32::MAX` or with field number 0.
    #[error("invalid field key at offset {offset}")]
    InvalidKey {
        /// Where the key starts.
        offset: u32,
    },
    /// Wire type 6 or 7.
    #[error("invalid wire type {wire_type} at offset {offset}")]
    InvalidWireType {
        /// Where the key starts.
        offset: u32,
        /// The wire type found.
        wire_type: u8,
    },
    /// A group field (wire types 3/4).
    #[error("unsupported group field at offset {offset}")]
    GroupNotSupported {
        /// Where the key starts.
        offset: u32,
    },
    /// A known field encoded with the wrong wire type.
    #[error("field {field} has wire type {wire_type}, which its type does not allow, at offset {offset}")]
    WrongWireType {
        /// Where the key starts.
        offset: u32,
        /// Field number.
        field: u32,
        /// Wire type found.
        wire_type: u8,
    },
    /// A packed repeated field whose length does not hold whole elements.
    #[error("malformed packed repeated field at offset {offset}")]
    InvalidPacked {
        /// Where the payload starts.
        offset: u32,
    },
    /// A trace id that is not 16 bytes (0 when the span has none). Also a link's, log record's
    /// or exemplar's trace id that is neither empty nor 16 bytes.
    #[error("trace id must be 16 bytes, got {len}")]
    InvalidTraceIdLength {
        /// Length found.
        len: u32,
    },
    /// A span id that is not 8 bytes (0 when the span has none). Also a `parent_span_id`, or a
    /// link's or log record's span id, that is neither empty nor 8 bytes.
    #[error("span id must be 8 bytes, got {len}")]
    InvalidSpanIdLength {
        /// Length found.
        len: u32,
    },
    /// A string field that is not valid UTF-8.
    #[error("invalid utf-8 in string field at offset {offset}")]
    InvalidUtf8 {
        /// Where the string payload starts.
        offset: u32,
    },
    /// Messages nested deeper than [`MAX_DEPTH`].
    #[error("messages nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The buffer is larger than 4 GiB (offsets are `u32`).
    #[error("request too large to index")]
    TooLarge,
}

impl ScanError {
    /// The gRPC status for a request rejected with this error: always `INVALID_ARGUMENT`
    /// (permanent, the client must not retry; HTTP 400).
    pub fn code(&self) -> crate::grpc::Code {
        crate::grpc::Code::InvalidArgument
    }
}

impl From<WireError> for ScanError {
    #[inline]
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated { offset } => ScanError::Truncated { offset },
            WireError::InvalidVarint { offset } => ScanError::InvalidVarint { offset },
            WireError::InvalidKey { offset } => ScanError::InvalidKey { offset },
            WireError::InvalidWireType { offset, wire_type } => {
                ScanError::InvalidWireType { offset, wire_type }
            }
            WireError::GroupNotSupported { offset } => ScanError::GroupNotSupported { offset },
        }
    }
}

/// One `ResourceSpans` of an indexed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceEntry {
    /// Indices into [`TracesIndex::headers`]: the resource's non-child fields.
    pub headers: Range<u32>,
}

/// One `ScopeSpans` of an indexed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeEntry {
    /// Index into [`TracesIndex::resources`].
    pub resource: u32,
    /// Indices into [`TracesIndex::headers`]: the scope's non-child fields.
    pub headers: Range<u32>,
}

/// One `Span` of an indexed request. (Not `Copy`: `Range` is not.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanEntry {
    /// Index into [`TracesIndex::scopes`].
    pub scope: u32,
    /// The Span message body (no tag/length prefix) in the request buffer.
    pub range: Range<u32>,
    /// The span's trace id.
    pub trace_id: TraceId,
}

/// Index of an `ExportTraceServiceRequest` held in one buffer. Reusable scratch: [`clear`]
/// keeps capacity.
///
/// Invariants after [`scan`] or [`partition`]: `spans[i].scope` is non-decreasing and
/// `scopes[j].resource` is non-decreasing (children follow their parents in order).
///
/// [`clear`]: TracesIndex::clear
/// [`scan`]: TracesIndex::scan
/// [`partition`]: TracesIndex::partition
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct TracesIndex {
    /// One entry per `ResourceSpans`.
    pub resources: Vec<ResourceEntry>,
    /// One entry per `ScopeSpans`.
    pub scopes: Vec<ScopeEntry>,
    /// One entry per `Span`.
    pub spans: Vec<SpanEntry>,
    /// Raw field ranges (tag+len+value, i.e. the complete encoded field) of every field of a
    /// ResourceSpans / ScopeSpans that is NOT a child list (resource, schema_url, scope,
    /// unknown fields...).
    pub headers: Vec<Range<u32>>,
    /// Spans and resources that processors rewrote (empty after a scan).
    pub rewrites: Rewrites,
    /// True when every span's field prefix in the buffer is minimal: the one-byte tag `0x12`
    /// and the shortest length varint, as every encoder writes it. The re-framing encoder then
    /// reuses the prefix without reading it (a cache miss per kept span when a sampler exports
    /// a batch seconds after it arrived). Set by the scan and kept by `partition`; false where
    /// unknown, which only costs that read.
    pub span_prefixes_minimal: bool,
}

/// Messages of an indexed batch that processors rewrote: the re-framing encoder writes these
/// bytes instead of the original slices; everything else stays a slice of the buffer.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Rewrites {
    /// (span index, new `Span` body), ascending by index.
    pub spans: Vec<(u32, bytes::Bytes)>,
    /// (resource index, the new complete header fields of that `ResourceSpans` — its
    /// `resource`, `schema_url` and unknown fields — encoded), ascending by index.
    pub resources: Vec<(u32, bytes::Bytes)>,
}

impl Rewrites {
    /// True when nothing was rewritten.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.resources.is_empty()
    }

    /// The new body of span `i`, if it was rewritten.
    #[inline]
    pub fn span(&self, i: u32) -> Option<&bytes::Bytes> {
        if self.spans.is_empty() {
            return None;
        }
        find(&self.spans, i)
    }

    /// The new header fields of resource `r`, if it was rewritten.
    #[inline]
    pub fn resource(&self, r: u32) -> Option<&bytes::Bytes> {
        if self.resources.is_empty() {
            return None;
        }
        find(&self.resources, r)
    }

    /// Bytes held by the rewritten messages.
    pub fn bytes(&self) -> usize {
        self.spans
            .iter()
            .chain(&self.resources)
            .map(|(_, b)| b.len())
            .sum()
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.resources.clear();
    }
}

fn find(list: &[(u32, bytes::Bytes)], i: u32) -> Option<&bytes::Bytes> {
    list.binary_search_by_key(&i, |(k, _)| *k)
        .ok()
        .map(|p| &list[p].1)
}

/// Releases something when its last clone is dropped: what a buffer's data depends on beyond
/// the buffer itself (the engine: the on-disk copy of the request, whose frame is released with
/// the token; see [`SpanBatch::release_token`]).
pub type ReleaseToken = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// `data` as a buffer that also keeps `keep` alive for as long as any slice of it lives (a
/// [`ReleaseToken`], the buffer a copy was made from, ...).
pub fn keep_alive<K: Send + 'static>(data: bytes::Bytes, keep: K) -> bytes::Bytes {
    struct KeepAlive<K> {
        data: bytes::Bytes,
        _keep: K,
    }
    impl<K> AsRef<[u8]> for KeepAlive<K> {
        fn as_ref(&self) -> &[u8] {
            &self.data
        }
    }
    bytes::Bytes::from_owner(KeepAlive { data, _keep: keep })
}

/// A self-contained batch of spans: the request buffer + its index. This is what crosses
/// cores (`Send`).
#[derive(Clone)]
pub struct SpanBatch {
    /// The request buffer the index points into.
    pub buf: bytes::Bytes,
    /// Index of (part of) `buf`.
    pub index: TracesIndex,
    /// Kept with the batch and with any copy made of its spans (the engine: the token that
    /// keeps the request's ingest-log frame from being released while its spans are only in
    /// memory). `None` when nothing needs keeping.
    pub release_token: Option<ReleaseToken>,
}

impl std::fmt::Debug for SpanBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanBatch")
            .field("buf", &self.buf)
            .field("index", &self.index)
            .field("release_token", &self.release_token.is_some())
            .finish()
    }
}

impl SpanBatch {
    /// Scans `buf` into a new batch.
    pub fn scan(buf: bytes::Bytes) -> Result<SpanBatch, ScanError> {
        Self::scan_with::<true>(buf)
    }

    /// [`Self::scan`] for a request validated before ([`TracesIndex::scan_structure`]).
    pub fn scan_structure(buf: bytes::Bytes) -> Result<SpanBatch, ScanError> {
        Self::scan_with::<false>(buf)
    }

    fn scan_with<const VALIDATE: bool>(buf: bytes::Bytes) -> Result<SpanBatch, ScanError> {
        let mut index = TracesIndex::default();
        index.scan_with::<VALIDATE>(&buf)?;
        Ok(SpanBatch {
            buf,
            index,
            release_token: None,
        })
    }

    /// The body of span `i` (index into `index.spans`) as a zero-copy slice (its rewritten
    /// body, if a processor rewrote it).
    pub fn span_body(&self, i: usize) -> bytes::Bytes {
        if let Some(b) = self.index.rewrites.span(i as u32) {
            return b.clone();
        }
        let r = &self.index.spans[i].range;
        self.buf.slice(r.start as usize..r.end as usize)
    }

    /// The bytes of span `i`'s body (its rewritten body, if a processor rewrote it).
    #[inline]
    pub fn span(&self, i: usize) -> &[u8] {
        if let Some(b) = self.index.rewrites.span(i as u32) {
            return b;
        }
        let r = &self.index.spans[i].range;
        &self.buf[r.start as usize..r.end as usize]
    }
}

/// Counts of a validated metrics or logs request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemCounts {
    /// Number of `ResourceMetrics` / `ResourceLogs`.
    pub resources: u32,
    /// Number of data points / log records.
    pub items: u32,
}

#[inline(always)]
fn off(pos: usize) -> u32 {
    pos as u32
}

#[inline(always)]
fn wrong(key: Key) -> ScanError {
    ScanError::WrongWireType {
        offset: off(key.offset),
        field: key.field,
        wire_type: key.wire_type as u8,
    }
}

#[inline(always)]
fn expect(key: Key, wt: WireType) -> Result<(), ScanError> {
    if key.wire_type == wt {
        Ok(())
    } else {
        Err(wrong(key))
    }
}

/// ASCII test for short strings, inlined (the standard one is an out-of-line call): whole
/// 8-byte words, the tail as one overlapping word.
#[inline(always)]
fn is_ascii(s: &[u8]) -> bool {
    #[inline(always)]
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    let n = s.len();
    if n >= 8 {
        // Up to 16 bytes: two overlapping words, no loop.
        let mut acc = word(s, 0) | word(s, n - 8);
        let mut i = 8;
        while i + 8 < n {
            acc |= word(s, i);
            i += 8;
        }
        acc & 0x8080_8080_8080_8080 == 0
    } else if n >= 4 {
        let head = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let tail = u32::from_le_bytes([s[n - 4], s[n - 3], s[n - 2], s[n - 1]]);
        (head | tail) & 0x8080_8080 == 0
    } else {
        s.iter().fold(0u8, |a, &b| a | b) < 0x80
    }
}

#[inline(always)]
fn check_utf8(buf: &[u8], r: Range<usize>) -> Result<(), ScanError> {
    let s = &buf[r.start..r.end];
    if is_ascii(s) || std::str::from_utf8(s).is_ok() {
        Ok(())
    } else {
        Err(ScanError::InvalidUtf8 {
            offset: off(r.start),
        })
    }
}

#[inline(always)]
fn read_str(r: &mut Reader<'_>, key: Key) -> Result<(), ScanError> {
    expect(key, WireType::Len)?;
    let range = r.read_len()?;
    check_utf8(r.buffer(), range)
}

#[inline(always)]
fn read_varint_field(r: &mut Reader<'_>, key: Key) -> Result<u64, ScanError> {
    expect(key, WireType::Varint)?;
    Ok(r.read_varint()?)
}

#[inline(always)]
fn read_fixed64_field(r: &mut Reader<'_>, key: Key) -> Result<u64, ScanError> {
    expect(key, WireType::I64)?;
    Ok(r.read_fixed64()?)
}

#[inline(always)]
fn read_fixed32_field(r: &mut Reader<'_>, key: Key) -> Result<u32, ScanError> {
    expect(key, WireType::I32)?;
    Ok(r.read_fixed32()?)
}

#[inline(always)]
pub(crate) fn read_msg(r: &mut Reader<'_>, key: Key) -> Result<Range<usize>, ScanError> {
    expect(key, WireType::Len)?;
    Ok(r.read_len()?)
}

#[inline(always)]
fn nested(depth: u32) -> Result<u32, ScanError> {
    if depth >= MAX_DEPTH {
        Err(ScanError::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

/// Straight-line check of the common `KeyValue` shapes: a short key then a value holding one
/// string, int, bool or double, every length one byte. `true` means valid; `false` means "not
/// this shape or not sure", and the general path decides (and reports the error).
#[inline(always)]
fn key_value_fast(b: &[u8]) -> bool {
    if b.len() < 4 || b[0] != 0x0a || b[1] >= 0x80 {
        return false;
    }
    let p = 2 + b[1] as usize;
    if p + 2 > b.len() || b[p] != 0x12 || b[p + 1] >= 0x80 {
        return false;
    }
    let v = &b[p + 2..];
    if v.len() != b[p + 1] as usize || !is_ascii(&b[2..p]) {
        return false;
    }
    match v {
        [] => true,
        [0x0a, len, s @ ..] => *len < 0x80 && s.len() == *len as usize && is_ascii(s),
        [0x18 | 0x10, varint @ ..] => {
            // One varint filling the rest: continuation bits on all bytes but the last.
            let n = varint.len();
            (1..10).contains(&n)
                && varint[n - 1] < 0x80
                && varint[..n - 1].iter().all(|&x| x >= 0x80)
        }
        [0x21, _, _, _, _, _, _, _, _] => true,
        _ => false,
    }
}

/// Validates a `KeyValue` message body at `depth`.
#[inline]
pub(crate) fn validate_key_value(
    buf: &[u8],
    body: Range<usize>,
    depth: u32,
) -> Result<(), ScanError> {
    let mut r = Reader::nested(buf, body);
    while let Some(tag) = r.peek() {
        match tag {
            0x0a => {
                r.bump();
                let b = r.read_len()?;
                check_utf8(buf, b)?;
            }
            0x12 => {
                r.bump();
                let b = r.read_len()?;
                validate_any_value(buf, b, nested(depth)?)?;
            }
            0x18 => {
                r.bump();
                r.read_varint()?;
            }
            _ => {
                let key = r.read_key()?;
                match key.field {
                    1 => read_str(&mut r, key)?,
                    2 => {
                        let b = read_msg(&mut r, key)?;
                        validate_any_value(buf, b, nested(depth)?)?;
                    }
                    3 => {
                        read_varint_field(&mut r, key)?;
                    }
                    _ => r.skip(key)?,
                }
            }
        }
    }
    Ok(())
}

/// Validates an `AnyValue` message body at `depth`.
#[inline]
pub(crate) fn validate_any_value(
    buf: &[u8],
    body: Range<usize>,
    depth: u32,
) -> Result<(), ScanError> {
    let mut r = Reader::nested(buf, body);
    while let Some(tag) = r.peek() {
        match tag {
            0x0a => {
                r.bump();
                let b = r.read_len()?;
                check_utf8(buf, b)?;
            }
            0x10 | 0x18 | 0x40 => {
                r.bump();
                r.read_varint()?;
            }
            0x21 => {
                r.bump();
                r.read_fixed64()?;
            }
            0x3a => {
                r.bump();
                r.read_len()?;
            }
            _ => {
                let key = r.read_key()?;
                any_value_field_slow(&mut r, key, depth)?;
            }
        }
    }
    Ok(())
}

#[inline(never)]
fn any_value_field_slow(r: &mut Reader<'_>, key: Key, depth: u32) -> Result<(), ScanError> {
    let buf = r.buffer();
    match key.field {
        1 => read_str(r, key)?,
        2 | 3 | 8 => {
            read_varint_field(r, key)?;
        }
        4 => {
            read_fixed64_field(r, key)?;
        }
        5 | 6 => {
            // ArrayValue { repeated AnyValue values = 1 } / KeyValueList { repeated KeyValue values = 1 }
            let b = read_msg(r, key)?;
            let d = nested(depth)?;
            let mut inner = Reader::nested(buf, b);
            while !inner.is_empty() {
                let k = inner.read_key()?;
                if k.field == 1 {
                    let v = read_msg(&mut inner, k)?;
                    if key.field == 5 {
                        validate_any_value(buf, v, nested(d)?)?;
                    } else {
                        validate_key_value(buf, v, nested(d)?)?;
                    }
                } else {
                    inner.skip(k)?;
                }
            }
        }
        7 => {
            read_msg(r, key)?;
        }
        _ => r.skip(key)?,
    }
    Ok(())
}

/// Kinds of fields for the table-driven validator used on the colder message types.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Varint,
    I64,
    I32,
    Str,
    /// bytes that must be empty or 16 long
    OptTraceId,
    /// bytes that must be empty or 8 long
    OptSpanId,
    KeyValue,
    AnyValue,
    Msg(&'static [(u32, Kind)]),
    /// repeated fixed64/double: packed (length multiple of 8) or one I64 per element
    PackedI64,
    /// repeated varint: packed or one varint per element
    PackedVarint,
}

fn validate_table(
    buf: &[u8],
    body: Range<usize>,
    table: &'static [(u32, Kind)],
    depth: u32,
) -> Result<(), ScanError> {
    let mut r = Reader::nested(buf, body);
    while !r.is_empty() {
        let key = r.read_key()?;
        let Some(&(_, kind)) = table.iter().find(|(f, _)| *f == key.field) else {
            r.skip(key)?;
            continue;
        };
        validate_field(&mut r, key, kind, depth)?;
    }
    Ok(())
}

#[inline]
fn validate_field(r: &mut Reader<'_>, key: Key, kind: Kind, depth: u32) -> Result<(), ScanError> {
    let buf = r.buffer();
    match kind {
        Kind::Varint => {
            read_varint_field(r, key)?;
        }
        Kind::I64 => {
            read_fixed64_field(r, key)?;
        }
        Kind::I32 => {
            read_fixed32_field(r, key)?;
        }
        Kind::Str => read_str(r, key)?,
        Kind::OptTraceId => {
            let b = read_msg(r, key)?;
            if !b.is_empty() && b.len() != 16 {
                return Err(ScanError::InvalidTraceIdLength {
                    len: b.len() as u32,
                });
            }
        }
        Kind::OptSpanId => {
            let b = read_msg(r, key)?;
            if !b.is_empty() && b.len() != 8 {
                return Err(ScanError::InvalidSpanIdLength {
                    len: b.len() as u32,
                });
            }
        }
        Kind::KeyValue => {
            let b = read_msg(r, key)?;
            validate_key_value(buf, b, nested(depth)?)?;
        }
        Kind::AnyValue => {
            let b = read_msg(r, key)?;
            validate_any_value(buf, b, nested(depth)?)?;
        }
        Kind::Msg(table) => {
            let b = read_msg(r, key)?;
            validate_table(buf, b, table, nested(depth)?)?;
        }
        Kind::PackedI64 => match key.wire_type {
            WireType::I64 => {
                r.read_fixed64()?;
            }
            WireType::Len => {
                let b = r.read_len()?;
                if b.len() % 8 != 0 {
                    return Err(ScanError::InvalidPacked {
                        offset: off(b.start),
                    });
                }
            }
            _ => return Err(wrong(key)),
        },
        Kind::PackedVarint => match key.wire_type {
            WireType::Varint => {
                r.read_varint()?;
            }
            WireType::Len => {
                let b = r.read_len()?;
                let mut inner = Reader::nested(buf, b);
                while !inner.is_empty() {
                    inner.read_varint()?;
                }
            }
            _ => return Err(wrong(key)),
        },
    }
    Ok(())
}

const ENTITY_REF: &[(u32, Kind)] = &[
    (1, Kind::Str),
    (2, Kind::Str),
    (3, Kind::Str),
    (4, Kind::Str),
];
/// `Resource`
const RESOURCE: &[(u32, Kind)] = &[
    (1, Kind::KeyValue),
    (2, Kind::Varint),
    (3, Kind::Msg(ENTITY_REF)),
];
/// `InstrumentationScope`
const SCOPE: &[(u32, Kind)] = &[
    (1, Kind::Str),
    (2, Kind::Str),
    (3, Kind::KeyValue),
    (4, Kind::Varint),
];
/// `ResourceSpans` / `ResourceMetrics` / `ResourceLogs` header fields (child list excluded).
pub(crate) const RESOURCE_HEADERS: &[(u32, Kind)] = &[(1, Kind::Msg(RESOURCE)), (3, Kind::Str)];
/// `ScopeSpans` / `ScopeMetrics` / `ScopeLogs` header fields (child list excluded).
pub(crate) const SCOPE_HEADERS: &[(u32, Kind)] = &[(1, Kind::Msg(SCOPE)), (3, Kind::Str)];
const EVENT: &[(u32, Kind)] = &[
    (1, Kind::I64),
    (2, Kind::Str),
    (3, Kind::KeyValue),
    (4, Kind::Varint),
];
const LINK: &[(u32, Kind)] = &[
    (1, Kind::OptTraceId),
    (2, Kind::OptSpanId),
    (3, Kind::Str),
    (4, Kind::KeyValue),
    (5, Kind::Varint),
    (6, Kind::I32),
];
const STATUS: &[(u32, Kind)] = &[(2, Kind::Str), (3, Kind::Varint)];

const EXEMPLAR: &[(u32, Kind)] = &[
    (7, Kind::KeyValue),
    (2, Kind::I64),
    (3, Kind::I64),
    (6, Kind::I64),
    (4, Kind::OptSpanId),
    (5, Kind::OptTraceId),
];
const NUMBER_POINT: &[(u32, Kind)] = &[
    (7, Kind::KeyValue),
    (2, Kind::I64),
    (3, Kind::I64),
    (4, Kind::I64),
    (6, Kind::I64),
    (5, Kind::Msg(EXEMPLAR)),
    (8, Kind::Varint),
];
const HISTOGRAM_POINT: &[(u32, Kind)] = &[
    (9, Kind::KeyValue),
    (2, Kind::I64),
    (3, Kind::I64),
    (4, Kind::I64),
    (5, Kind::I64),
    (6, Kind::PackedI64),
    (7, Kind::PackedI64),
    (8, Kind::Msg(EXEMPLAR)),
    (10, Kind::Varint),
    (11, Kind::I64),
    (12, Kind::I64),
];
const BUCKETS: &[(u32, Kind)] = &[(1, Kind::Varint), (2, Kind::PackedVarint)];
const EXP_HISTOGRAM_POINT: &[(u32, Kind)] = &[
    (1, Kind::KeyValue),
    (2, Kind::I64),
    (3, Kind::I64),
    (4, Kind::I64),
    (5, Kind::I64),
    (6, Kind::Varint),
    (7, Kind::I64),
    (8, Kind::Msg(BUCKETS)),
    (9, Kind::Msg(BUCKETS)),
    (10, Kind::Varint),
    (11, Kind::Msg(EXEMPLAR)),
    (12, Kind::I64),
    (13, Kind::I64),
    (14, Kind::I64),
];
const QUANTILE: &[(u32, Kind)] = &[(1, Kind::I64), (2, Kind::I64)];
const SUMMARY_POINT: &[(u32, Kind)] = &[
    (7, Kind::KeyValue),
    (2, Kind::I64),
    (3, Kind::I64),
    (4, Kind::I64),
    (5, Kind::I64),
    (6, Kind::Msg(QUANTILE)),
    (8, Kind::Varint),
];
const LOG_RECORD: &[(u32, Kind)] = &[
    (1, Kind::I64),
    (11, Kind::I64),
    (2, Kind::Varint),
    (3, Kind::Str),
    (5, Kind::AnyValue),
    (6, Kind::KeyValue),
    (7, Kind::Varint),
    (8, Kind::I32),
    (9, Kind::OptTraceId),
    (10, Kind::OptSpanId),
    (12, Kind::Str),
];

/// Depths of the fixed OTLP levels (request = 0).
pub(crate) const RESOURCE_DEPTH: u32 = 1;
pub(crate) const SCOPE_DEPTH: u32 = 2;
const ITEM_DEPTH: u32 = 3;

/// Validates one header field (a non-child field of a ResourceX / ScopeX message) and returns
/// nothing; unknown fields are skipped.
#[inline]
fn validate_header(
    r: &mut Reader<'_>,
    key: Key,
    table: &'static [(u32, Kind)],
    depth: u32,
) -> Result<(), ScanError> {
    match table.iter().find(|(f, _)| *f == key.field) {
        Some(&(_, kind)) => validate_field(r, key, kind, depth),
        None => Ok(r.skip(key)?),
    }
}

/// Pass one over a `Resource*`/`Scope*` message: validates every field except the child list
/// (field 2, only checked to be length-delimited) and calls `on_header` with the complete range
/// of each of them. Returns whether there are children.
#[inline]
pub(crate) fn container_headers<H>(
    buf: &[u8],
    body: Range<usize>,
    table: &'static [(u32, Kind)],
    depth: u32,
    on_header: H,
) -> Result<bool, ScanError>
where
    H: FnMut(Range<usize>),
{
    headers_pass::<true, H>(buf, body, table, depth, on_header)
}

/// [`container_headers`], validating the header fields only when `VALIDATE` (a structural
/// pass otherwise: wire types and lengths).
#[inline]
fn headers_pass<const VALIDATE: bool, H>(
    buf: &[u8],
    body: Range<usize>,
    table: &'static [(u32, Kind)],
    depth: u32,
    mut on_header: H,
) -> Result<bool, ScanError>
where
    H: FnMut(Range<usize>),
{
    let mut r = Reader::nested(buf, body);
    let mut children = false;
    while !r.is_empty() {
        let key = r.read_key()?;
        if key.field == 2 {
            read_msg(&mut r, key)?;
            children = true;
        } else {
            if VALIDATE {
                validate_header(&mut r, key, table, depth)?;
            } else {
                r.skip(key)?;
            }
            on_header(key.offset..r.position());
        }
    }
    Ok(children)
}

/// Pass two over a message already checked by [`container_headers`]: calls `on_child` with the
/// body of every field 2.
#[inline]
pub(crate) fn container_children<C>(
    buf: &[u8],
    body: Range<usize>,
    mut on_child: C,
) -> Result<(), ScanError>
where
    C: FnMut(Range<usize>) -> Result<(), ScanError>,
{
    let mut r = Reader::nested(buf, body);
    while !r.is_empty() {
        let key = r.read_key()?;
        if key.field == 2 {
            let b = r.read_len()?;
            on_child(b)?;
        } else {
            r.skip(key)?;
        }
    }
    Ok(())
}

/// Both passes, for callers that do not record headers.
#[inline]
fn walk_container<C>(
    buf: &[u8],
    body: Range<usize>,
    table: &'static [(u32, Kind)],
    depth: u32,
    on_child: C,
) -> Result<(), ScanError>
where
    C: FnMut(Range<usize>) -> Result<(), ScanError>,
{
    if container_headers(buf, body.clone(), table, depth, |_| {})? {
        container_children(buf, body, on_child)?;
    }
    Ok(())
}

/// The span fields not handled by `scan_span`'s fast path (ids excluded).
#[inline(never)]
fn span_field_slow(r: &mut Reader<'_>, key: Key, depth: u32) -> Result<(), ScanError> {
    let buf = r.buffer();
    match key.field {
        3 | 5 => read_str(r, key)?,
        6 | 10 | 12 | 14 => {
            read_varint_field(r, key)?;
        }
        7 | 8 => {
            read_fixed64_field(r, key)?;
        }
        9 => {
            let b = read_msg(r, key)?;
            validate_key_value(buf, b, depth + 1)?;
        }
        11 => {
            let b = read_msg(r, key)?;
            validate_table(buf, b, EVENT, depth + 1)?;
        }
        13 => {
            let b = read_msg(r, key)?;
            validate_table(buf, b, LINK, depth + 1)?;
        }
        15 => {
            let b = read_msg(r, key)?;
            validate_table(buf, b, STATUS, depth + 1)?;
        }
        16 => {
            read_fixed32_field(r, key)?;
        }
        _ => r.skip(key)?,
    }
    Ok(())
}

/// Validates one Span body and returns its trace id.
#[inline]
fn scan_span(buf: &[u8], body: Range<usize>) -> Result<TraceId, ScanError> {
    let depth = ITEM_DEPTH;
    let mut r = Reader::nested(buf, body);
    let mut trace_id: &[u8] = &[];
    let mut span_id_len = 0usize;
    let mut parent_len = 0usize;
    while let Some(tag) = r.peek() {
        // Attributes are most of a span: test for them first, with a direct branch.
        if tag == 0x4a {
            r.bump();
            let b = r.read_len()?;
            if !key_value_fast(&buf[b.clone()]) {
                validate_key_value(buf, b, depth + 1)?;
            }
            continue;
        }
        match tag {
            0x0a => {
                r.bump();
                let b = r.read_len()?;
                trace_id = &buf[b];
            }
            0x12 => {
                r.bump();
                span_id_len = r.read_len()?.len();
            }
            0x1a | 0x2a => {
                r.bump();
                let b = r.read_len()?;
                check_utf8(buf, b)?;
            }
            0x22 => {
                r.bump();
                parent_len = r.read_len()?.len();
            }
            0x30 | 0x50 | 0x60 | 0x70 => {
                r.bump();
                r.read_varint()?;
            }
            0x39 | 0x41 => {
                r.bump();
                r.read_fixed64()?;
            }
            _ => {
                let key = r.read_key()?;
                match key.field {
                    1 => {
                        let b = read_msg(&mut r, key)?;
                        trace_id = &buf[b];
                    }
                    2 => span_id_len = read_msg(&mut r, key)?.len(),
                    4 => parent_len = read_msg(&mut r, key)?.len(),
                    _ => span_field_slow(&mut r, key, depth)?,
                }
            }
        }
    }
    let Ok(trace_id) = <TraceId>::try_from(trace_id) else {
        return Err(ScanError::InvalidTraceIdLength {
            len: trace_id.len() as u32,
        });
    };
    if span_id_len != 8 {
        return Err(ScanError::InvalidSpanIdLength {
            len: span_id_len as u32,
        });
    }
    if parent_len != 0 && parent_len != 8 {
        return Err(ScanError::InvalidSpanIdLength {
            len: parent_len as u32,
        });
    }
    Ok(trace_id)
}

/// The trace id of a Span body, checking only the wire structure of its fields (see
/// [`TracesIndex::scan_structure`]); the last `trace_id` field wins, as in [`scan_span`].
#[inline]
fn span_trace_id(buf: &[u8], body: Range<usize>) -> Result<TraceId, ScanError> {
    let mut r = Reader::nested(buf, body);
    let mut trace_id: &[u8] = &[];
    while !r.is_empty() {
        let key = r.read_key()?;
        if key.field == 1 {
            let b = read_msg(&mut r, key)?;
            trace_id = &buf[b];
        } else {
            r.skip(key)?;
        }
    }
    <TraceId>::try_from(trace_id).map_err(|_| ScanError::InvalidTraceIdLength {
        len: trace_id.len() as u32,
    })
}

impl TracesIndex {
    /// Empties the index, keeping its capacity.
    pub fn clear(&mut self) {
        self.resources.clear();
        self.scopes.clear();
        self.spans.clear();
        self.headers.clear();
        self.rewrites.clear();
        self.span_prefixes_minimal = false;
    }

    /// Validates and indexes an `ExportTraceServiceRequest`; on error the index content is
    /// unspecified.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(), ScanError> {
        self.scan_with::<true>(buf)
    }

    /// Indexes an `ExportTraceServiceRequest` that was validated before (by [`Self::scan`] on
    /// its way in, e.g. a batch re-framed from scanned requests): the same index as `scan` for
    /// any request `scan` accepts, but only the wire structure is checked (tags, wire types,
    /// lengths, nesting, 16-byte trace ids), not what fields hold (UTF-8, attribute values,
    /// span id lengths, events, links). Several times cheaper; never panics on any input.
    pub fn scan_structure(&mut self, buf: &[u8]) -> Result<(), ScanError> {
        self.scan_with::<false>(buf)
    }

    fn scan_with<const VALIDATE: bool>(&mut self, buf: &[u8]) -> Result<(), ScanError> {
        self.clear();
        self.span_prefixes_minimal = true;
        if buf.len() > u32::MAX as usize {
            return Err(ScanError::TooLarge);
        }
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let key = r.read_key()?;
            if key.field == 1 {
                let b = read_msg(&mut r, key)?;
                self.scan_resource_spans::<VALIDATE>(buf, b)?;
            } else {
                r.skip(key)?;
            }
        }
        Ok(())
    }

    fn scan_resource_spans<const VALIDATE: bool>(
        &mut self,
        buf: &[u8],
        body: Range<usize>,
    ) -> Result<(), ScanError> {
        let resource = self.resources.len() as u32;
        let first = self.headers.len() as u32;
        // Headers first (pass one), so that they are contiguous in `self.headers`.
        let headers = &mut self.headers;
        let children = headers_pass::<VALIDATE, _>(
            buf,
            body.clone(),
            RESOURCE_HEADERS,
            RESOURCE_DEPTH,
            |h| headers.push(h.start as u32..h.end as u32),
        )?;
        self.resources.push(ResourceEntry {
            headers: first..self.headers.len() as u32,
        });
        if children {
            let TracesIndex {
                scopes,
                spans,
                headers,
                span_prefixes_minimal,
                ..
            } = self;
            container_children(buf, body, |scope_body| {
                scan_scope_spans::<VALIDATE>(
                    buf,
                    scope_body,
                    resource,
                    scopes,
                    spans,
                    headers,
                    span_prefixes_minimal,
                )
            })?;
        }
        Ok(())
    }

    /// Split into one index per destination: `out[d]` receives the spans whose
    /// `dest(trace_id) == d`, keeping only the resources/scopes those spans need (renumbered).
    /// `out` is cleared first and resized to `n`. Panics if `dest` returns `n` or more.
    pub fn partition(
        &self,
        n: usize,
        mut dest: impl FnMut(&TraceId) -> usize,
        out: &mut Vec<TracesIndex>,
    ) {
        out.truncate(n);
        for o in out.iter_mut() {
            o.clear();
        }
        out.resize_with(n, TracesIndex::default);
        // Per destination: (source scope, source resource) last copied, u32::MAX for none.
        // On the stack for up to 64 destinations.
        let mut small = [(u32::MAX, u32::MAX); 64];
        let mut large = Vec::new();
        let last: &mut [(u32, u32)] = if n <= small.len() {
            &mut small[..n]
        } else {
            large.resize(n, (u32::MAX, u32::MAX));
            &mut large
        };
        for o in out.iter_mut() {
            o.span_prefixes_minimal = self.span_prefixes_minimal;
        }
        for (i, span) in self.spans.iter().enumerate() {
            let d = dest(&span.trace_id);
            assert!(d < n, "partition: dest returned {d} for {n} destinations");
            let o = &mut out[d];
            let (last_scope, last_resource) = &mut last[d];
            if *last_scope != span.scope {
                let scope = &self.scopes[span.scope as usize];
                if *last_resource != scope.resource {
                    let res = &self.resources[scope.resource as usize];
                    let first = o.headers.len() as u32;
                    o.headers.extend_from_slice(
                        &self.headers[res.headers.start as usize..res.headers.end as usize],
                    );
                    if let Some(b) = self.rewrites.resource(scope.resource) {
                        o.rewrites
                            .resources
                            .push((o.resources.len() as u32, b.clone()));
                    }
                    o.resources.push(ResourceEntry {
                        headers: first..o.headers.len() as u32,
                    });
                    *last_resource = scope.resource;
                }
                let first = o.headers.len() as u32;
                o.headers.extend_from_slice(
                    &self.headers[scope.headers.start as usize..scope.headers.end as usize],
                );
                o.scopes.push(ScopeEntry {
                    resource: o.resources.len() as u32 - 1,
                    headers: first..o.headers.len() as u32,
                });
                *last_scope = span.scope;
            }
            if let Some(b) = self.rewrites.span(i as u32) {
                o.rewrites.spans.push((o.spans.len() as u32, b.clone()));
            }
            o.spans.push(SpanEntry {
                scope: o.scopes.len() as u32 - 1,
                range: span.range.clone(),
                trace_id: span.trace_id,
            });
        }
    }

    /// Total encoded size of the span bodies (for byte accounting), rewritten ones at their new
    /// size.
    pub fn span_bytes(&self) -> usize {
        let mut n: usize = self
            .spans
            .iter()
            .map(|s| (s.range.end - s.range.start) as usize)
            .sum();
        for (i, b) in &self.rewrites.spans {
            let r = &self.spans[*i as usize].range;
            n = n + b.len() - (r.end - r.start) as usize;
        }
        n
    }

    /// Keeps the spans for which `keep(index)` is true, in order, and removes the scopes and
    /// resources whose spans were all removed (those that had none stay). Rewrites follow
    /// their spans and resources. Returns the number of spans removed.
    pub fn retain_spans(&mut self, mut keep: impl FnMut(u32) -> bool) -> usize {
        let before = self.spans.len();
        let mut kept_in_scope = vec![false; self.scopes.len()];
        let mut had_in_scope = vec![false; self.scopes.len()];
        let mut new_index = Vec::with_capacity(self.spans.len());
        let mut n = 0u32;
        for (i, s) in self.spans.iter().enumerate() {
            let k = keep(i as u32);
            had_in_scope[s.scope as usize] = true;
            kept_in_scope[s.scope as usize] |= k;
            new_index.push(k.then(|| {
                n += 1;
                n - 1
            }));
        }
        if n as usize == before {
            return 0;
        }
        let mut had_in_resource = vec![false; self.resources.len()];
        let mut kept_in_resource = vec![false; self.resources.len()];
        for (j, sc) in self.scopes.iter().enumerate() {
            had_in_resource[sc.resource as usize] |= had_in_scope[j];
            kept_in_resource[sc.resource as usize] |= kept_in_scope[j];
        }
        let keep_resource: Vec<bool> = (0..self.resources.len())
            .map(|r| kept_in_resource[r] || !had_in_resource[r])
            .collect();
        let keep_scope: Vec<bool> = self
            .scopes
            .iter()
            .enumerate()
            .map(|(j, sc)| {
                keep_resource[sc.resource as usize] && (kept_in_scope[j] || !had_in_scope[j])
            })
            .collect();
        let mut resource_map = vec![u32::MAX; self.resources.len()];
        let mut r = 0u32;
        for (old, keep) in keep_resource.iter().enumerate() {
            if *keep {
                resource_map[old] = r;
                r += 1;
            }
        }
        let mut scope_map = vec![u32::MAX; self.scopes.len()];
        let mut c = 0u32;
        for (old, keep) in keep_scope.iter().enumerate() {
            if *keep {
                scope_map[old] = c;
                c += 1;
            }
        }
        let mut old = 0usize;
        self.spans.retain_mut(|s| {
            let k = new_index[old].is_some();
            old += 1;
            s.scope = scope_map[s.scope as usize];
            k
        });
        let mut j = 0usize;
        self.scopes.retain_mut(|sc| {
            let k = keep_scope[j];
            j += 1;
            sc.resource = resource_map[sc.resource as usize];
            k
        });
        let mut r = 0usize;
        self.resources.retain(|_| {
            r += 1;
            keep_resource[r - 1]
        });
        self.rewrites
            .spans
            .retain_mut(|(i, _)| match new_index[*i as usize] {
                Some(n) => {
                    *i = n;
                    true
                }
                None => false,
            });
        self.rewrites.resources.retain_mut(|(i, _)| {
            let m = resource_map[*i as usize];
            *i = m;
            m != u32::MAX
        });
        before - n as usize
    }

    /// The complete encoded header fields (tag+len+value) of resource `resource`.
    pub fn resource_headers(&self, resource: u32) -> impl Iterator<Item = Range<usize>> + '_ {
        let h = &self.resources[resource as usize].headers;
        self.headers[h.start as usize..h.end as usize]
            .iter()
            .map(|r| r.start as usize..r.end as usize)
    }

    /// The complete encoded header fields (tag+len+value) of scope `scope`.
    pub fn scope_headers(&self, scope: u32) -> impl Iterator<Item = Range<usize>> + '_ {
        let h = &self.scopes[scope as usize].headers;
        self.headers[h.start as usize..h.end as usize]
            .iter()
            .map(|r| r.start as usize..r.end as usize)
    }
}

/// One pass over a `ScopeSpans`: its header fields (validated when `VALIDATE`) and its spans,
/// in field order. (Spans add no headers, so the scope's headers stay contiguous without the
/// two passes a `ResourceSpans` needs; one pass reads each span's tag and length once.)
fn scan_scope_spans<const VALIDATE: bool>(
    buf: &[u8],
    body: Range<usize>,
    resource: u32,
    scopes: &mut Vec<ScopeEntry>,
    spans: &mut Vec<SpanEntry>,
    headers: &mut Vec<Range<u32>>,
    prefixes_minimal: &mut bool,
) -> Result<(), ScanError> {
    let scope = scopes.len() as u32;
    let first = headers.len() as u32;
    let mut r = Reader::nested(buf, body);
    while !r.is_empty() {
        let key = r.read_key()?;
        if key.field == 2 {
            let span_body = read_msg(&mut r, key)?;
            // A one-byte tag and the shortest length varint, exactly when together they are
            // one byte longer than the shortest varint (neither can be shorter).
            *prefixes_minimal &= span_body.start - key.offset
                == 1 + crate::wire::varint_len((span_body.end - span_body.start) as u64);
            let trace_id = if VALIDATE {
                scan_span(buf, span_body.clone())?
            } else {
                span_trace_id(buf, span_body.clone())?
            };
            spans.push(SpanEntry {
                scope,
                range: span_body.start as u32..span_body.end as u32,
                trace_id,
            });
        } else {
            if VALIDATE {
                validate_header(&mut r, key, SCOPE_HEADERS, SCOPE_DEPTH)?;
            } else {
                r.skip(key)?;
            }
            headers.push(key.offset as u32..r.position() as u32);
        }
    }
    scopes.push(ScopeEntry {
        resource,
        headers: first..headers.len() as u32,
    });
    Ok(())
}

/// Validates an `ExportMetricsServiceRequest` and counts data points (all point types:
/// gauge/sum number points, histogram, exponential histogram, summary points).
pub fn scan_metrics(buf: &[u8]) -> Result<ItemCounts, ScanError> {
    let mut counts = ItemCounts::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let key = r.read_key()?;
        if key.field != 1 {
            r.skip(key)?;
            continue;
        }
        let rm = read_msg(&mut r, key)?;
        counts.resources += 1;
        walk_container(buf, rm, RESOURCE_HEADERS, RESOURCE_DEPTH, |sm| {
            walk_container(buf, sm, SCOPE_HEADERS, SCOPE_DEPTH, |metric| {
                counts.items = counts.items.saturating_add(scan_metric(buf, metric)?);
                Ok(())
            })
        })?;
    }
    Ok(counts)
}

/// Validates one `Metric` and returns its number of data points as prost would decode them
/// (the data oneof: a later field of another kind replaces, of the same kind merges).
pub(crate) fn scan_metric(buf: &[u8], body: Range<usize>) -> Result<u32, ScanError> {
    let depth = ITEM_DEPTH;
    let mut r = Reader::nested(buf, body);
    let mut kind = 0u32;
    let mut points = 0u32;
    while !r.is_empty() {
        let key = r.read_key()?;
        match key.field {
            1..=3 => read_str(&mut r, key)?,
            12 => validate_field(&mut r, key, Kind::KeyValue, depth)?,
            5 | 7 | 9 | 10 | 11 => {
                let data = read_msg(&mut r, key)?;
                let point_table = match key.field {
                    5 | 7 => NUMBER_POINT,
                    9 => HISTOGRAM_POINT,
                    10 => EXP_HISTOGRAM_POINT,
                    _ => SUMMARY_POINT,
                };
                let mut n = 0u32;
                let mut inner = Reader::nested(buf, data);
                while !inner.is_empty() {
                    let k = inner.read_key()?;
                    match k.field {
                        1 => {
                            let p = read_msg(&mut inner, k)?;
                            validate_table(buf, p, point_table, depth + 2)?;
                            n += 1;
                        }
                        // aggregation_temporality (sum, histograms), is_monotonic (sum)
                        2 if key.field != 5 && key.field != 11 => {
                            read_varint_field(&mut inner, k)?;
                        }
                        3 if key.field == 7 => {
                            read_varint_field(&mut inner, k)?;
                        }
                        _ => inner.skip(k)?,
                    }
                }
                if kind == key.field {
                    points = points.saturating_add(n);
                } else {
                    kind = key.field;
                    points = n;
                }
            }
            _ => r.skip(key)?,
        }
    }
    Ok(points)
}

/// Validates an `ExportLogsServiceRequest` and counts log records.
pub fn scan_logs(buf: &[u8]) -> Result<ItemCounts, ScanError> {
    let mut counts = ItemCounts::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let key = r.read_key()?;
        if key.field != 1 {
            r.skip(key)?;
            continue;
        }
        let rl = read_msg(&mut r, key)?;
        counts.resources += 1;
        walk_container(buf, rl, RESOURCE_HEADERS, RESOURCE_DEPTH, |sl| {
            walk_container(buf, sl, SCOPE_HEADERS, SCOPE_DEPTH, |record| {
                validate_table(buf, record, LOG_RECORD, ITEM_DEPTH)?;
                counts.items = counts.items.saturating_add(1);
                Ok(())
            })
        })?;
    }
    Ok(counts)
}

impl TracesIndex {
    /// Validates an `ExportLogsServiceRequest` or `ExportMetricsServiceRequest` (`signal`) as
    /// [`scan_logs`] and [`scan_metrics`] do, and indexes it like a trace request: the three
    /// signals share the layout `Resource* → Scope* → item` (fields 1, 2 and 2), so each
    /// `LogRecord` or `Metric` becomes an entry of [`TracesIndex::spans`] (its trace id zeros)
    /// and the re-framing encoder ([`crate::reframe::encode_items`]) writes any subset of them
    /// as slices of `buf`. Returns the items: log records, data points (for traces, as
    /// [`TracesIndex::scan`]: spans). On error the index content is unspecified.
    pub fn scan_items(&mut self, buf: &[u8], signal: crate::Signal) -> Result<u64, ScanError> {
        if signal == crate::Signal::Traces {
            self.scan(buf)?;
            return Ok(self.spans.len() as u64);
        }
        self.clear();
        if buf.len() > u32::MAX as usize {
            return Err(ScanError::TooLarge);
        }
        let mut total = 0u64;
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let key = r.read_key()?;
            if key.field != 1 {
                r.skip(key)?;
                continue;
            }
            let body = read_msg(&mut r, key)?;
            let resource = self.resources.len() as u32;
            let first = self.headers.len() as u32;
            let headers = &mut self.headers;
            let children =
                container_headers(buf, body.clone(), RESOURCE_HEADERS, RESOURCE_DEPTH, |h| {
                    headers.push(h.start as u32..h.end as u32)
                })?;
            self.resources.push(ResourceEntry {
                headers: first..self.headers.len() as u32,
            });
            if !children {
                continue;
            }
            let TracesIndex {
                scopes,
                spans,
                headers,
                ..
            } = &mut *self;
            container_children(buf, body, |scope_body| {
                let scope = scopes.len() as u32;
                let first = headers.len() as u32;
                let has_items =
                    container_headers(buf, scope_body.clone(), SCOPE_HEADERS, SCOPE_DEPTH, |h| {
                        headers.push(h.start as u32..h.end as u32)
                    })?;
                scopes.push(ScopeEntry {
                    resource,
                    headers: first..headers.len() as u32,
                });
                if has_items {
                    container_children(buf, scope_body, |item| {
                        let n = match signal {
                            crate::Signal::Metrics => scan_metric(buf, item.clone())?,
                            _ => {
                                validate_table(buf, item.clone(), LOG_RECORD, ITEM_DEPTH)?;
                                1
                            }
                        };
                        total += u64::from(n);
                        spans.push(SpanEntry {
                            scope,
                            range: item.start as u32..item.end as u32,
                            trace_id: [0; 16],
                        });
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::proto::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use crate::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn span(tid: u8, name: &str) -> Span {
        Span {
            trace_id: vec![tid; 16],
            span_id: vec![1; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    schema_url: "s".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn indexes_spans() {
        let buf = request(vec![span(1, "a"), span(2, "b")]);
        let mut idx = TracesIndex::default();
        idx.scan(&buf).unwrap();
        assert_eq!(idx.resources.len(), 1);
        assert_eq!(idx.scopes.len(), 1);
        assert_eq!(idx.spans.len(), 2);
        assert_eq!(idx.spans[1].trace_id, [2; 16]);
        let s = &idx.spans[0];
        let decoded = Span::decode(&buf[s.range.start as usize..s.range.end as usize]).unwrap();
        assert_eq!(decoded, span(1, "a"));
        // The scope's schema_url is its one header.
        assert_eq!(idx.scopes[0].headers.len(), 1);
        assert_eq!(
            idx.span_bytes(),
            span(1, "a").encoded_len() + span(2, "b").encoded_len()
        );
    }

    #[test]
    fn ascii_check_all_lengths_and_positions() {
        for n in 0..48usize {
            let mut s = vec![b'a'; n];
            assert!(is_ascii(&s), "{n}");
            for i in 0..n {
                s[i] = 0x80;
                assert!(!is_ascii(&s), "{n} {i}");
                s[i] = b'a';
            }
        }
    }

    #[test]
    fn missing_or_bad_ids() {
        let mut s = span(1, "a");
        s.trace_id.clear();
        let mut idx = TracesIndex::default();
        assert_eq!(
            idx.scan(&request(vec![s])),
            Err(ScanError::InvalidTraceIdLength { len: 0 })
        );
        let mut s = span(1, "a");
        s.span_id = vec![1; 3];
        assert_eq!(
            idx.scan(&request(vec![s])),
            Err(ScanError::InvalidSpanIdLength { len: 3 })
        );
        let mut s = span(1, "a");
        s.parent_span_id = vec![1; 9];
        assert_eq!(
            idx.scan(&request(vec![s])),
            Err(ScanError::InvalidSpanIdLength { len: 9 })
        );
    }

    #[test]
    fn last_trace_id_wins() {
        // A span body with trace_id twice: prost keeps the second.
        let mut body = span(1, "a").encode_to_vec();
        crate::wire::put_len_field(&mut body, 1, &[7; 16]);
        let mut scope = Vec::new();
        crate::wire::put_len_field(&mut scope, 2, &body);
        let mut rs = Vec::new();
        crate::wire::put_len_field(&mut rs, 2, &scope);
        let mut req = Vec::new();
        crate::wire::put_len_field(&mut req, 1, &rs);
        let mut idx = TracesIndex::default();
        idx.scan(&req).unwrap();
        assert_eq!(idx.spans[0].trace_id, [7; 16]);
        let decoded = ExportTraceServiceRequest::decode(&req[..]).unwrap();
        assert_eq!(
            decoded.resource_spans[0].scope_spans[0].spans[0].trace_id,
            vec![7; 16]
        );
    }

    #[test]
    fn bad_utf8_and_wire_type() {
        let mut s = span(1, "a");
        s.name = "\u{e9}".into();
        let mut buf = request(vec![s]);
        let pos = buf.iter().position(|&b| b == 0xc3).unwrap();
        buf[pos] = 0xff;
        let mut idx = TracesIndex::default();
        assert_eq!(
            idx.scan(&buf),
            Err(ScanError::InvalidUtf8 { offset: pos as u32 })
        );
        assert!(ExportTraceServiceRequest::decode(&buf[..]).is_err());

        // kind (field 6) as a fixed64
        let mut body = span(1, "a").encode_to_vec();
        crate::wire::put_key(&mut body, 6, WireType::I64);
        body.extend_from_slice(&[0; 8]);
        let mut scope = Vec::new();
        crate::wire::put_len_field(&mut scope, 2, &body);
        let mut rs = Vec::new();
        crate::wire::put_len_field(&mut rs, 2, &scope);
        let mut req = Vec::new();
        crate::wire::put_len_field(&mut req, 1, &rs);
        assert!(matches!(
            idx.scan(&req),
            Err(ScanError::WrongWireType {
                field: 6,
                wire_type: 1,
                ..
            })
        ));
        assert!(ExportTraceServiceRequest::decode(&req[..]).is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut body = span(1, "a").encode_to_vec();
        crate::wire::put_key(&mut body, 100, WireType::I32);
        body.extend_from_slice(&[0; 4]);
        crate::wire::put_key(&mut body, 101, WireType::I64);
        body.extend_from_slice(&[0; 8]);
        crate::wire::put_key(&mut body, 102, WireType::Varint);
        body.push(5);
        crate::wire::put_len_field(&mut body, 103, b"xyz");
        let mut scope = Vec::new();
        crate::wire::put_len_field(&mut scope, 2, &body);
        crate::wire::put_len_field(&mut scope, 9, b"unknown scope field");
        let mut rs = Vec::new();
        crate::wire::put_len_field(&mut rs, 2, &scope);
        let mut req = Vec::new();
        crate::wire::put_len_field(&mut req, 1, &rs);
        let mut idx = TracesIndex::default();
        idx.scan(&req).unwrap();
        assert_eq!(idx.spans.len(), 1);
        assert_eq!(idx.scopes[0].headers.len(), 1);
        // Groups are rejected.
        let mut g = req.clone();
        crate::wire::put_key(&mut g, 5, WireType::StartGroup);
        crate::wire::put_key(&mut g, 5, WireType::EndGroup);
        assert!(matches!(
            idx.scan(&g),
            Err(ScanError::GroupNotSupported { .. })
        ));
    }

    #[test]
    fn too_deep() {
        let mut v = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..70 {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let mut s = span(1, "a");
        s.attributes.push(KeyValue {
            key: "k".into(),
            value: Some(v),
            ..Default::default()
        });
        let mut idx = TracesIndex::default();
        assert_eq!(idx.scan(&request(vec![s])), Err(ScanError::TooDeep));
    }

    /// An attribute value nested `depth` kvlists deep.
    fn kvlist_nest(depth: usize) -> AnyValue {
        let mut v = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..depth {
            v = AnyValue {
                value: Some(any_value::Value::KvlistValue(
                    crate::proto::common::v1::KeyValueList {
                        values: vec![KeyValue {
                            key: "k".into(),
                            value: Some(v),
                            ..Default::default()
                        }],
                    },
                )),
            };
        }
        v
    }

    /// Regression: 65-deep kvlists in every signal are refused as too deep, not recursed into
    /// without bound.
    #[test]
    fn deep_kvlists_are_refused_in_every_signal() {
        use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
        use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
        use crate::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use crate::proto::metrics::v1::{
            metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
        };
        let attribute = |depth| KeyValue {
            key: "k".into(),
            value: Some(kvlist_nest(depth)),
            ..Default::default()
        };
        let mut s = span(1, "a");
        s.attributes.push(attribute(65));
        let mut idx = TracesIndex::default();
        assert_eq!(idx.scan(&request(vec![s])), Err(ScanError::TooDeep));
        // 19 levels (3 messages each) stay within MAX_DEPTH.
        let mut s = span(1, "a");
        s.attributes.push(attribute(19));
        idx.scan(&request(vec![s])).unwrap();

        let logs = |depth| {
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord {
                            body: Some(kvlist_nest(depth)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        assert_eq!(scan_logs(&logs(65)), Err(ScanError::TooDeep));
        assert_eq!(scan_logs(&logs(19)).unwrap().items, 1);

        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![attribute(65)],
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        assert_eq!(scan_metrics(&metrics), Err(ScanError::TooDeep));
    }

    /// Regression: a varint of 11 bytes, or of 10 that overflows 64 bits, is an invalid varint
    /// wherever it is (a length, a key, a span's time); it never reads past its tenth byte.
    #[test]
    fn overlong_varints_are_invalid() {
        let eleven = [
            0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x01,
        ];
        let overflow = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        for varint in [&eleven[..], &overflow[..]] {
            // As the length of a ResourceSpans.
            let mut buf = vec![0x0a];
            buf.extend_from_slice(varint);
            buf.extend_from_slice(&[0; 16]);
            let mut idx = TracesIndex::default();
            assert_eq!(
                idx.scan(&buf),
                Err(ScanError::InvalidVarint { offset: 1 }),
                "{varint:?}"
            );
            assert!(matches!(
                scan_metrics(&buf),
                Err(ScanError::InvalidVarint { offset: 1 })
            ));
            assert!(matches!(
                scan_logs(&buf),
                Err(ScanError::InvalidVarint { offset: 1 })
            ));
            // As a key at the top.
            assert_eq!(
                idx.scan(varint),
                Err(ScanError::InvalidVarint { offset: 0 })
            );
            // As a span's kind (field 6, varint), inside a valid span.
            let mut body = span(1, "a").encode_to_vec();
            let at = body.len();
            body.push(6 << 3);
            body.extend_from_slice(varint);
            let err = idx.scan(&request_with_span_body(&body)).unwrap_err();
            assert!(
                matches!(err, ScanError::InvalidVarint { offset } if offset as usize > at),
                "{err:?}"
            );
        }
    }

    /// `ExportTraceServiceRequest` holding one span whose body is `body` (valid or not).
    fn request_with_span_body(body: &[u8]) -> Vec<u8> {
        let len_field = |field: u8, payload: &[u8]| {
            let mut out = vec![field << 3 | 2];
            crate::wire::put_varint(&mut out, payload.len() as u64);
            out.extend_from_slice(payload);
            out
        };
        len_field(1, &len_field(2, &len_field(2, body)))
    }

    /// Regression: a length prefix far beyond the buffer (up to u64::MAX) is a truncated
    /// message, found without allocating or overflowing.
    #[test]
    fn huge_length_prefixes_are_truncation() {
        for len in [
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            1 << 40,
            i64::MAX as u64,
            u64::MAX,
        ] {
            let mut buf = vec![0x0a];
            crate::wire::put_varint(&mut buf, len);
            buf.extend_from_slice(&[0x12, 0x00]);
            let mut idx = TracesIndex::default();
            assert!(
                matches!(idx.scan(&buf), Err(ScanError::Truncated { .. })),
                "{len}: {:?}",
                idx.scan(&buf)
            );
            assert!(matches!(
                scan_metrics(&buf),
                Err(ScanError::Truncated { .. })
            ));
            assert!(matches!(scan_logs(&buf), Err(ScanError::Truncated { .. })));
            // Deeper: a span attribute's key.
            let mut key_value = vec![0x0a];
            crate::wire::put_varint(&mut key_value, len);
            let mut body = span(1, "a").encode_to_vec();
            body.push(9 << 3 | 2);
            crate::wire::put_varint(&mut body, key_value.len() as u64);
            body.extend_from_slice(&key_value);
            let err = idx.scan(&request_with_span_body(&body)).unwrap_err();
            assert!(matches!(err, ScanError::Truncated { .. }), "{len}: {err:?}");
        }
    }

    #[test]
    fn partition_keeps_needed_parents() {
        let buf = request(vec![span(1, "a"), span(2, "b"), span(1, "c")]);
        let mut idx = TracesIndex::default();
        idx.scan(&buf).unwrap();
        let mut out = Vec::new();
        idx.partition(3, |t| t[0] as usize, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out[0].spans.is_empty() && out[0].scopes.is_empty() && out[0].resources.is_empty());
        assert_eq!(out[1].spans.len(), 2);
        assert_eq!(out[1].scopes.len(), 1);
        assert_eq!(out[1].resources.len(), 1);
        assert_eq!(out[2].spans.len(), 1);
        assert_eq!(out[1].headers.len(), idx.headers.len());
        // Reuse keeps working after shrinking.
        idx.partition(1, |_| 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].spans.len(), 3);
    }
}
