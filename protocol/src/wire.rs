//! Low-level zero-copy protobuf reader and writer helpers.
//!
//! [`Reader`] walks the fields of one encoded message held in a larger buffer. All positions it
//! reports (and every error offset) are absolute offsets into that buffer, so a nested reader
//! built with [`Reader::nested`] still reports positions relative to the start of the request.
//! Errors are small `Copy` values ([`WireError`]); nothing here allocates.
//!
//! The rules follow what `prost` accepts, so that anything this module accepts `prost` decodes
//! too: varints are at most 10 bytes (the tenth byte at most `0x01`), keys fit in `u32`, field
//! number 0 and wire types 6/7 are invalid. Groups (wire types 3/4, deprecated since proto2) are
//! rejected outright.

use std::ops::Range;

/// Protobuf wire type of a field (the low three bits of its key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WireType {
    /// Variable-length integer (int32, int64, uint32, uint64, sint*, bool, enum).
    Varint = 0,
    /// Eight little-endian bytes (fixed64, sfixed64, double).
    I64 = 1,
    /// Length-delimited (string, bytes, embedded messages, packed repeated fields).
    Len = 2,
    /// Start of a group (deprecated).
    StartGroup = 3,
    /// End of a group (deprecated).
    EndGroup = 4,
    /// Four little-endian bytes (fixed32, sfixed32, float).
    I32 = 5,
}

/// A malformed protobuf encoding. Offsets are absolute positions in the scanned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends in the middle of a field.
    #[error("truncated message at offset {offset}")]
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
    /// A field key larger than `u32::MAX` or with field number 0.
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
    /// A group (wire type 3 or 4); OTLP never uses them.
    #[error("unsupported group field at offset {offset}")]
    GroupNotSupported {
        /// Where the key starts.
        offset: u32,
    },
}

/// One field key: field number, wire type and where the key starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// Field number (>= 1).
    pub field: u32,
    /// Wire type.
    pub wire_type: WireType,
    /// Absolute offset of the first byte of the key.
    pub offset: usize,
}

/// A field value as read by [`Reader::next_field`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A varint.
    Varint(u64),
    /// Eight bytes, little-endian.
    I64(u64),
    /// Four bytes, little-endian.
    I32(u32),
    /// Absolute range of a length-delimited payload.
    Len(Range<usize>),
}

/// Zero-copy cursor over the fields of one message held in `buf[pos..end]`.
///
/// `buf` is the whole request (truncated to the end of the message), so positions are absolute.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[inline(always)]
fn off(pos: usize) -> u32 {
    pos.min(u32::MAX as usize) as u32
}

impl<'a> Reader<'a> {
    /// A reader over the whole of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// A reader over `buf[range]`, reporting absolute positions.
    ///
    /// `range` must lie inside `buf` (it is clamped otherwise).
    #[inline]
    pub fn nested(buf: &'a [u8], range: Range<usize>) -> Self {
        let end = range.end.min(buf.len());
        Reader {
            buf: &buf[..end],
            pos: range.start.min(end),
        }
    }

    /// Current absolute position.
    #[inline(always)]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Absolute end of the message.
    #[inline(always)]
    pub fn end(&self) -> usize {
        self.buf.len()
    }

    /// True when every field has been read.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The underlying buffer (up to the end of this message).
    #[inline(always)]
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }

    /// Reads a varint.
    #[inline(always)]
    pub fn read_varint(&mut self) -> Result<u64, WireError> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            Some(&b) => match self.buf.get(self.pos + 1) {
                Some(&c) if c < 0x80 => {
                    self.pos += 2;
                    Ok(u64::from(b & 0x7f) | (u64::from(c) << 7))
                }
                _ => self.read_varint_slow(),
            },
            None => Err(WireError::Truncated {
                offset: off(self.pos),
            }),
        }
    }

    /// The next byte, without consuming it.
    #[inline(always)]
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Consumes one byte (after [`Reader::peek`] returned `Some`).
    #[inline(always)]
    pub fn bump(&mut self) {
        debug_assert!(self.pos < self.buf.len());
        self.pos += 1;
    }

    #[inline(never)]
    fn read_varint_slow(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(start + i) else {
                return Err(WireError::Truncated { offset: off(start) });
            };
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(WireError::InvalidVarint { offset: off(start) });
                }
                self.pos = start + i + 1;
                return Ok(value);
            }
        }
        Err(WireError::InvalidVarint { offset: off(start) })
    }

    /// Reads a field key. Rejects field number 0, keys above `u32::MAX`, groups and wire
    /// types 6/7.
    #[inline(always)]
    pub fn read_key(&mut self) -> Result<Key, WireError> {
        let offset = self.pos;
        let key = match self.buf.get(offset) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                u64::from(b)
            }
            _ => self.read_varint()?,
        };
        if key > u64::from(u32::MAX) || key < 8 {
            return Err(WireError::InvalidKey {
                offset: off(offset),
            });
        }
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::I64,
            2 => WireType::Len,
            5 => WireType::I32,
            3 | 4 => {
                return Err(WireError::GroupNotSupported {
                    offset: off(offset),
                })
            }
            w => {
                return Err(WireError::InvalidWireType {
                    offset: off(offset),
                    wire_type: w as u8,
                })
            }
        };
        Ok(Key {
            field: (key >> 3) as u32,
            wire_type,
            offset,
        })
    }

    /// Reads the length prefix of a length-delimited value and skips over the payload,
    /// returning its absolute range.
    #[inline(always)]
    pub fn read_len(&mut self) -> Result<Range<usize>, WireError> {
        let at = self.pos;
        let len = self.read_varint()?;
        let start = self.pos;
        let remaining = self.buf.len() - start;
        if len > remaining as u64 {
            return Err(WireError::Truncated { offset: off(at) });
        }
        let end = start + len as usize;
        self.pos = end;
        Ok(start..end)
    }

    /// Reads eight little-endian bytes.
    #[inline(always)]
    pub fn read_fixed64(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        match self.buf.get(start..start + 8) {
            Some(b) => {
                self.pos = start + 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(u64::from_le_bytes(a))
            }
            None => Err(WireError::Truncated { offset: off(start) }),
        }
    }

    /// Reads four little-endian bytes.
    #[inline(always)]
    pub fn read_fixed32(&mut self) -> Result<u32, WireError> {
        let start = self.pos;
        match self.buf.get(start..start + 4) {
            Some(b) => {
                self.pos = start + 4;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Ok(u32::from_le_bytes(a))
            }
            None => Err(WireError::Truncated { offset: off(start) }),
        }
    }

    /// Skips the value of a field whose key was just read.
    #[inline(always)]
    pub fn skip(&mut self, key: Key) -> Result<(), WireError> {
        match key.wire_type {
            WireType::Varint => self.read_varint().map(|_| ()),
            WireType::I64 => self.advance(8),
            WireType::I32 => self.advance(4),
            WireType::Len => self.read_len().map(|_| ()),
            WireType::StartGroup | WireType::EndGroup => Err(WireError::GroupNotSupported {
                offset: off(key.offset),
            }),
        }
    }

    #[inline(always)]
    fn advance(&mut self, n: usize) -> Result<(), WireError> {
        if self.buf.len() - self.pos < n {
            return Err(WireError::Truncated {
                offset: off(self.pos),
            });
        }
        self.pos += n;
        Ok(())
    }

    /// Reads the value of a field whose key was just read.
    #[inline(always)]
    pub fn read_value(&mut self, key: Key) -> Result<Value, WireError> {
        Ok(match key.wire_type {
            WireType::Varint => Value::Varint(self.read_varint()?),
            WireType::I64 => Value::I64(self.read_fixed64()?),
            WireType::I32 => Value::I32(self.read_fixed32()?),
            WireType::Len => Value::Len(self.read_len()?),
            WireType::StartGroup | WireType::EndGroup => {
                return Err(WireError::GroupNotSupported {
                    offset: off(key.offset),
                })
            }
        })
    }

    /// Reads the next field (key and value); `None` at the end of the message.
    #[inline(always)]
    pub fn next_field(&mut self) -> Option<Result<(Key, Value), WireError>> {
        if self.is_empty() {
            return None;
        }
        Some(self.read_key().and_then(|k| Ok((k, self.read_value(k)?))))
    }
}

/// Number of bytes `value` takes as a varint (1..=10).
#[inline(always)]
pub const fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a varint.
#[inline]
pub fn put_varint(out: &mut impl bytes::BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Appends a field key.
#[inline]
pub fn put_key(out: &mut impl bytes::BufMut, field: u32, wire_type: WireType) {
    put_varint(out, (u64::from(field) << 3) | wire_type as u64);
}

/// Appends a length-delimited field (key, length, payload).
#[inline]
pub fn put_len_field(out: &mut impl bytes::BufMut, field: u32, payload: &[u8]) {
    put_key(out, field, WireType::Len);
    put_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

/// Encoded size of a length-delimited field with a one-or-more byte key.
#[inline(always)]
pub const fn len_field_size(field: u32, payload_len: usize) -> usize {
    varint_len((field as u64) << 3) + varint_len(payload_len as u64) + payload_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    #[test]
    fn varint_round_trip_and_len() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let b = enc(v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(b.len(), prost::encoding::encoded_len_varint(v));
            let mut r = Reader::new(&b);
            assert_eq!(r.read_varint().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn varint_errors() {
        // 11 continuation bytes.
        let b = [0xffu8; 11];
        assert_eq!(
            Reader::new(&b).read_varint(),
            Err(WireError::InvalidVarint { offset: 0 })
        );
        // Tenth byte 0x02 overflows.
        let mut b = vec![0xffu8; 9];
        b.push(0x02);
        assert_eq!(
            Reader::new(&b).read_varint(),
            Err(WireError::InvalidVarint { offset: 0 })
        );
        // Truncated.
        assert_eq!(
            Reader::new(&[0x80]).read_varint(),
            Err(WireError::Truncated { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[]).read_varint(),
            Err(WireError::Truncated { offset: 0 })
        );
    }

    #[test]
    fn keys() {
        let mut r = Reader::new(&[0x08, 0x96, 0x01]);
        let k = r.read_key().unwrap();
        assert_eq!((k.field, k.wire_type, k.offset), (1, WireType::Varint, 0));
        assert_eq!(r.read_varint().unwrap(), 150);
        assert_eq!(
            Reader::new(&[0x00]).read_key(),
            Err(WireError::InvalidKey { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0x0b]).read_key(),
            Err(WireError::GroupNotSupported { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0x0e]).read_key(),
            Err(WireError::InvalidWireType {
                offset: 0,
                wire_type: 6
            })
        );
        // Key above u32::MAX.
        let b = enc(u64::from(u32::MAX) + 1);
        assert_eq!(
            Reader::new(&b).read_key(),
            Err(WireError::InvalidKey { offset: 0 })
        );
    }

    #[test]
    fn fields_and_skip() {
        let mut b = Vec::new();
        put_key(&mut b, 1, WireType::I64);
        b.extend_from_slice(&7u64.to_le_bytes());
        put_len_field(&mut b, 2, b"abc");
        put_key(&mut b, 3, WireType::I32);
        b.extend_from_slice(&9u32.to_le_bytes());
        let mut r = Reader::new(&b);
        let (k, v) = r.next_field().unwrap().unwrap();
        assert_eq!((k.field, v), (1, Value::I64(7)));
        let (k, v) = r.next_field().unwrap().unwrap();
        assert_eq!((k.field, v), (2, Value::Len(11..14)));
        let k = r.read_key().unwrap();
        r.skip(k).unwrap();
        assert!(r.next_field().is_none());
        // A length running past the end is truncated, with the offset of the length.
        let mut r = Reader::new(&[0x12, 0x05, b'a']);
        r.read_key().unwrap();
        assert_eq!(r.read_len(), Err(WireError::Truncated { offset: 1 }));
        // Nested readers report absolute offsets.
        let mut r = Reader::nested(&b, 9..14);
        assert_eq!(r.next_field().unwrap().unwrap().1, Value::Len(11..14));
        assert_eq!(len_field_size(2, 3), 5);
    }
}
