//! A bounded MessagePack reader: values as a borrowed tree ([`Msg`]), every length checked
//! against what is left of the input, nesting refused beyond [`MAX_DEPTH`]; and [`Framer`],
//! which finds where one top-level value ends in a stream that arrives in pieces, resuming
//! where it stopped (each byte is looked at once however the stream is cut).

/// Deepest nesting of arrays and maps accepted.
pub const MAX_DEPTH: usize = 64;

/// Why MessagePack input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackError {
    /// The input ends inside a value.
    #[error("truncated msgpack input at offset {offset}")]
    Truncated {
        /// Where the incomplete value starts.
        offset: usize,
    },
    /// The byte 0xc1, which MessagePack never uses.
    #[error("invalid msgpack type byte 0xc1 at offset {offset}")]
    InvalidType {
        /// Where it was read.
        offset: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("msgpack input nested deeper than {MAX_DEPTH} levels at offset {offset}")]
    TooDeep {
        /// Where the level that was too deep starts.
        offset: usize,
    },
}

/// A MessagePack value borrowing its strings and binaries from the input.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg<'a> {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// `float 32`.
    F32(f32),
    /// `float 64`.
    F64(f64),
    /// `str` (bytes as sent; UTF-8 not checked here).
    Str(&'a [u8]),
    /// `bin`.
    Bin(&'a [u8]),
    /// `array`.
    Array(Vec<Msg<'a>>),
    /// `map`, pairs in the order sent.
    Map(Vec<(Msg<'a>, Msg<'a>)>),
    /// `ext`: its type and data.
    Ext(i8, &'a [u8]),
}

/// What a value's first bytes say about it.
enum Head {
    /// A value of `len` bytes in all (header included).
    Scalar(usize),
    /// An array or map header of `header` bytes with `items` values after it (a map counts
    /// keys and values).
    Container { header: usize, items: u64 },
}

/// Reads the head of the value at `buf[0..]`; `None` when `buf` is too short to tell.
fn head(buf: &[u8], offset: usize) -> Result<Option<Head>, MsgpackError> {
    let Some(&b) = buf.first() else {
        return Ok(None);
    };
    let be = |n: usize| -> Option<u64> {
        let bytes = buf.get(1..1 + n)?;
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let sized =
        |n: usize, extra: usize| be(n).map(|len| Head::Scalar(1 + n + extra + len as usize));
    Ok(match b {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(Head::Scalar(1)),
        0x80..=0x8f => Some(Head::Container {
            header: 1,
            items: 2 * u64::from(b & 0x0f),
        }),
        0x90..=0x9f => Some(Head::Container {
            header: 1,
            items: u64::from(b & 0x0f),
        }),
        0xa0..=0xbf => Some(Head::Scalar(1 + usize::from(b & 0x1f))),
        0xc1 => return Err(MsgpackError::InvalidType { offset }),
        0xc4 | 0xd9 => sized(1, 0),
        0xc5 | 0xda => sized(2, 0),
        0xc6 | 0xdb => sized(4, 0),
        0xc7 => sized(1, 1),
        0xc8 => sized(2, 1),
        0xc9 => sized(4, 1),
        0xca => Some(Head::Scalar(5)),
        0xcb => Some(Head::Scalar(9)),
        0xcc | 0xd0 => Some(Head::Scalar(2)),
        0xcd | 0xd1 => Some(Head::Scalar(3)),
        0xce | 0xd2 => Some(Head::Scalar(5)),
        0xcf | 0xd3 => Some(Head::Scalar(9)),
        0xd4 => Some(Head::Scalar(3)),
        0xd5 => Some(Head::Scalar(4)),
        0xd6 => Some(Head::Scalar(6)),
        0xd7 => Some(Head::Scalar(10)),
        0xd8 => Some(Head::Scalar(18)),
        0xdc => be(2).map(|n| Head::Container {
            header: 3,
            items: n,
        }),
        0xdd => be(4).map(|n| Head::Container {
            header: 5,
            items: n,
        }),
        0xde => be(2).map(|n| Head::Container {
            header: 3,
            items: 2 * n,
        }),
        0xdf => be(4).map(|n| Head::Container {
            header: 5,
            items: 2 * n,
        }),
    })
}

/// Finds the end of one top-level value in a buffer that grows: call [`Framer::advance`] with
/// the whole buffer each time more arrived; it continues where it stopped.
#[derive(Clone, Debug, Default)]
pub struct Framer {
    pos: usize,
    /// Values still expected at each open level (the top level expects one).
    open: Vec<u64>,
}

impl Framer {
    /// The length of the first complete value of `buf` once it has arrived whole (`None`:
    /// more bytes are needed). After `Some`, the framer starts over: call
    /// [`Framer::advance`] with what follows the value.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, MsgpackError> {
        if self.open.is_empty() {
            self.open.push(1);
        }
        loop {
            let Some(h) = head(&buf[self.pos.min(buf.len())..], self.pos)? else {
                return Ok(None);
            };
            let (len, items) = match h {
                Head::Scalar(len) => (len, 0),
                Head::Container { header, items } => (header, items),
            };
            if self.pos + len > buf.len() {
                return Ok(None);
            }
            self.pos += len;
            if let Some(top) = self.open.last_mut() {
                *top -= 1;
            }
            if items > 0 {
                if self.open.len() >= MAX_DEPTH {
                    return Err(MsgpackError::TooDeep { offset: self.pos });
                }
                self.open.push(items);
            }
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
            if self.open.is_empty() {
                let end = self.pos;
                self.pos = 0;
                return Ok(Some(end));
            }
        }
    }

    /// Bytes of the current value looked at so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// A cursor over MessagePack input.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Where the reader is.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The first byte of the next value, without reading it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(MsgpackError::Truncated { offset: self.pos })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, MsgpackError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// An array header: its length (`None` if the next value is not an array).
    pub fn read_array_len(&mut self) -> Result<Option<usize>, MsgpackError> {
        let start = self.pos;
        let n = match self.take(1)?[0] {
            b @ 0x90..=0x9f => u64::from(b & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            _ => {
                self.pos = start;
                return Ok(None);
            }
        };
        self.check_count(n, start)?;
        Ok(Some(n as usize))
    }

    /// A map header: its number of pairs (`None` if the next value is not a map).
    pub fn read_map_len(&mut self) -> Result<Option<usize>, MsgpackError> {
        let start = self.pos;
        let n = match self.take(1)?[0] {
            b @ 0x80..=0x8f => u64::from(b & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => {
                self.pos = start;
                return Ok(None);
            }
        };
        self.check_count(n.saturating_mul(2), start)?;
        Ok(Some(n as usize))
    }

    /// Every value takes at least one byte: a count larger than what is left is truncated
    /// input (and never allocates).
    fn check_count(&self, n: u64, offset: usize) -> Result<(), MsgpackError> {
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(MsgpackError::Truncated { offset });
        }
        Ok(())
    }

    /// The next value, whole.
    pub fn read(&mut self) -> Result<Msg<'a>, MsgpackError> {
        self.read_at(0)
    }

    fn read_at(&mut self, depth: usize) -> Result<Msg<'a>, MsgpackError> {
        let start = self.pos;
        let b = self.take(1)?[0];
        let len = |r: &mut Self, n: usize| r.be(n).map(|l| l as usize);
        Ok(match b {
            0x00..=0x7f => Msg::Uint(u64::from(b)),
            0xe0..=0xff => Msg::Int(i64::from(b as i8)),
            0xc0 => Msg::Nil,
            0xc1 => return Err(MsgpackError::InvalidType { offset: start }),
            0xc2 => Msg::Bool(false),
            0xc3 => Msg::Bool(true),
            0xa0..=0xbf => Msg::Str(self.take(usize::from(b & 0x1f))?),
            0xd9 => {
                let n = len(self, 1)?;
                Msg::Str(self.take(n)?)
            }
            0xda => {
                let n = len(self, 2)?;
                Msg::Str(self.take(n)?)
            }
            0xdb => {
                let n = len(self, 4)?;
                Msg::Str(self.take(n)?)
            }
            0xc4 => {
                let n = len(self, 1)?;
                Msg::Bin(self.take(n)?)
            }
            0xc5 => {
                let n = len(self, 2)?;
                Msg::Bin(self.take(n)?)
            }
            0xc6 => {
                let n = len(self, 4)?;
                Msg::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = len(self, 1 << (b - 0xc7))?;
                let ty = self.take(1)?[0] as i8;
                Msg::Ext(ty, self.take(n)?)
            }
            0xd4..=0xd8 => {
                let ty = self.take(1)?[0] as i8;
                Msg::Ext(ty, self.take(1 << (b - 0xd4))?)
            }
            0xca => Msg::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Msg::F64(f64::from_bits(self.be(8)?)),
            0xcc => Msg::Uint(self.be(1)?),
            0xcd => Msg::Uint(self.be(2)?),
            0xce => Msg::Uint(self.be(4)?),
            0xcf => Msg::Uint(self.be(8)?),
            0xd0 => Msg::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Msg::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Msg::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Msg::Int(self.be(8)? as i64),
            0x90..=0x9f | 0xdc | 0xdd => {
                self.pos = start;
                let n = self.read_array_len()?.unwrap_or(0);
                if depth >= MAX_DEPTH {
                    return Err(MsgpackError::TooDeep { offset: start });
                }
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.read_at(depth + 1)?);
                }
                Msg::Array(items)
            }
            0x80..=0x8f | 0xde | 0xdf => {
                self.pos = start;
                let n = self.read_map_len()?.unwrap_or(0);
                if depth >= MAX_DEPTH {
                    return Err(MsgpackError::TooDeep { offset: start });
                }
                let mut pairs = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let k = self.read_at(depth + 1)?;
                    let v = self.read_at(depth + 1)?;
                    pairs.push((k, v));
                }
                Msg::Map(pairs)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back() {
        // ["tag", 1700000000, {"log": "hi", "n": -3, "f": 1.5}]
        let mut b = vec![0x93, 0xa3, b't', b'a', b'g', 0xce];
        b.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        b.extend_from_slice(&[0x83, 0xa3, b'l', b'o', b'g', 0xa2, b'h', b'i']);
        b.extend_from_slice(&[0xa1, b'n', 0xfd, 0xa1, b'f', 0xcb]);
        b.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        let v = Reader::new(&b).read().unwrap();
        let Msg::Array(items) = v else { panic!() };
        assert_eq!(items[0], Msg::Str(b"tag"));
        assert_eq!(items[1], Msg::Uint(1_700_000_000));
        let Msg::Map(pairs) = &items[2] else { panic!() };
        assert_eq!(pairs[1], (Msg::Str(b"n"), Msg::Int(-3)));
        assert_eq!(pairs[2].1, Msg::F64(1.5));
        // The framer finds the same end however the bytes arrive.
        for cut in 0..b.len() {
            let mut f = Framer::default();
            assert_eq!(f.advance(&b[..cut]).unwrap(), None, "cut {cut}");
            assert_eq!(f.advance(&b).unwrap(), Some(b.len()));
        }
        let mut two = b.clone();
        two.extend_from_slice(&b);
        let mut f = Framer::default();
        assert_eq!(f.advance(&two).unwrap(), Some(b.len()));
        assert_eq!(f.advance(&two[b.len()..]).unwrap(), Some(b.len()));
    }

    #[test]
    fn hostile_lengths_and_depth_are_refused() {
        // An array claiming 2^32-1 items in 5 bytes.
        assert!(Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).read().is_err());
        // A str32 claiming 4 GiB.
        assert!(Reader::new(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'])
            .read()
            .is_err());
        // 1000 nested arrays.
        let deep = vec![0x91; 1000];
        assert!(matches!(
            Reader::new(&deep).read(),
            Err(MsgpackError::TooDeep { .. })
        ));
        assert!(matches!(
            Framer::default().advance(&deep),
            Err(MsgpackError::TooDeep { .. })
        ));
        assert!(Reader::new(&[0xc1]).read().is_err());
    }
}
