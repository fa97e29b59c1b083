//! A bounded reader of Thrift's binary protocol (the `TBinaryProtocol` encoding, strict or
//! not), enough to walk structs: field headers, scalars, strings, lists, and skipping anything
//! else. Every length is checked against what is left of the input; nesting deeper than
//! [`MAX_DEPTH`] is refused; errors carry the offset where they were found.

/// Deepest nesting of structs, lists, sets and maps accepted.
pub const MAX_DEPTH: usize = 32;

/// Why Thrift input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThriftError {
    /// The input ends inside a value.
    #[error("truncated thrift input at offset {offset}")]
    Truncated {
        /// Where the incomplete value starts.
        offset: usize,
    },
    /// A negative length or one longer than what is left.
    #[error("invalid thrift length {len} at offset {offset}")]
    InvalidLength {
        /// The length read.
        len: i64,
        /// Where it was read.
        offset: usize,
    },
    /// A type byte that is not a Thrift type.
    #[error("invalid thrift type {ty} at offset {offset}")]
    InvalidType {
        /// The byte.
        ty: u8,
        /// Where it was read.
        offset: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("thrift input nested deeper than {MAX_DEPTH} levels at offset {offset}")]
    TooDeep {
        /// Where the level that was too deep starts.
        offset: usize,
    },
    /// A required field is missing.
    #[error("required field {field} of {message} is not set")]
    MissingField {
        /// The struct.
        message: &'static str,
        /// The field's name.
        field: &'static str,
    },
}

/// A Thrift type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// `STOP`: end of a struct's fields.
    Stop,
    /// `BOOL`.
    Bool,
    /// `BYTE` (i8).
    Byte,
    /// `DOUBLE`.
    Double,
    /// `I16`.
    I16,
    /// `I32`.
    I32,
    /// `I64`.
    I64,
    /// `STRING` (also `binary`).
    String,
    /// `STRUCT`.
    Struct,
    /// `MAP`.
    Map,
    /// `SET`.
    Set,
    /// `LIST`.
    List,
}

impl Type {
    fn from_byte(b: u8, offset: usize) -> Result<Type, ThriftError> {
        Ok(match b {
            0 => Type::Stop,
            2 => Type::Bool,
            3 => Type::Byte,
            4 => Type::Double,
            6 => Type::I16,
            8 => Type::I32,
            10 => Type::I64,
            11 => Type::String,
            12 => Type::Struct,
            13 => Type::Map,
            14 => Type::Set,
            15 => Type::List,
            ty => return Err(ThriftError::InvalidType { ty, offset }),
        })
    }

    /// The smallest encoding of a value of this type, in bytes (bounds list sizes).
    fn min_size(self) -> usize {
        match self {
            Type::Stop => 0,
            Type::Bool | Type::Byte | Type::Struct => 1,
            Type::I16 => 2,
            Type::I32 | Type::String => 4,
            Type::Double | Type::I64 => 8,
            Type::Map | Type::Set | Type::List => 5,
        }
    }
}

/// A cursor over Thrift binary-protocol input.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    /// Where the reader is.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ThriftError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(ThriftError::Truncated { offset: self.pos })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ThriftError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A `bool`.
    pub fn read_bool(&mut self) -> Result<bool, ThriftError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// An `i16`.
    pub fn read_i16(&mut self) -> Result<i16, ThriftError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// An `i32`.
    pub fn read_i32(&mut self) -> Result<i32, ThriftError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// An `i64`.
    pub fn read_i64(&mut self) -> Result<i64, ThriftError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A `double`.
    pub fn read_double(&mut self) -> Result<f64, ThriftError> {
        Ok(f64::from_bits(u64::from_be_bytes(self.array()?)))
    }

    /// A `string` or `binary`: its bytes (a slice of the input).
    pub fn read_binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let offset = self.pos;
        let len = self.read_i32()?;
        if len < 0 || len as usize > self.buf.len() - self.pos {
            return Err(ThriftError::InvalidLength {
                len: i64::from(len),
                offset,
            });
        }
        self.take(len as usize)
    }

    /// The next field header of a struct: `None` at its `STOP`.
    pub fn read_field(&mut self) -> Result<Option<(Type, i16)>, ThriftError> {
        let offset = self.pos;
        let ty = Type::from_byte(self.take(1)?[0], offset)?;
        if ty == Type::Stop {
            return Ok(None);
        }
        Ok(Some((ty, self.read_i16()?)))
    }

    /// A list (or set) header: the element type and the number of elements, checked against
    /// what is left of the input.
    pub fn read_list(&mut self) -> Result<(Type, usize), ThriftError> {
        let offset = self.pos;
        let ty = Type::from_byte(self.take(1)?[0], offset)?;
        let len = self.read_i32()?;
        if len < 0
            || (len as usize).saturating_mul(ty.min_size().max(1)) > self.buf.len() - self.pos
        {
            return Err(ThriftError::InvalidLength {
                len: i64::from(len),
                offset,
            });
        }
        Ok((ty, len as usize))
    }

    /// Enters a nested struct or list; refused beyond [`MAX_DEPTH`]. Pair with
    /// [`Reader::leave`].
    pub fn enter(&mut self) -> Result<(), ThriftError> {
        if self.depth >= MAX_DEPTH {
            return Err(ThriftError::TooDeep { offset: self.pos });
        }
        self.depth += 1;
        Ok(())
    }

    /// Leaves what [`Reader::enter`] entered.
    pub fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Skips a value of type `ty`.
    pub fn skip(&mut self, ty: Type) -> Result<(), ThriftError> {
        match ty {
            Type::Stop => {}
            Type::Bool | Type::Byte => {
                self.take(1)?;
            }
            Type::I16 => {
                self.take(2)?;
            }
            Type::I32 => {
                self.take(4)?;
            }
            Type::Double | Type::I64 => {
                self.take(8)?;
            }
            Type::String => {
                self.read_binary()?;
            }
            Type::Struct => {
                self.enter()?;
                while let Some((ty, _)) = self.read_field()? {
                    self.skip(ty)?;
                }
                self.leave();
            }
            Type::List | Type::Set => {
                self.enter()?;
                let (ty, n) = self.read_list()?;
                for _ in 0..n {
                    self.skip(ty)?;
                }
                self.leave();
            }
            Type::Map => {
                self.enter()?;
                let offset = self.pos;
                let k = Type::from_byte(self.take(1)?[0], offset)?;
                let v = Type::from_byte(self.take(1)?[0], offset + 1)?;
                let n = self.read_i32()?;
                let min = k.min_size() + v.min_size();
                if n < 0 || (n as usize).saturating_mul(min.max(1)) > self.buf.len() - self.pos {
                    return Err(ThriftError::InvalidLength {
                        len: i64::from(n),
                        offset,
                    });
                }
                for _ in 0..n {
                    self.skip(k)?;
                    self.skip(v)?;
                }
                self.leave();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_and_deep_nesting_are_refused() {
        // A string claiming 1000 bytes with 2 left.
        let mut r = Reader::new(&[0, 0, 3, 232, b'a', b'b']);
        assert!(matches!(
            r.read_binary(),
            Err(ThriftError::InvalidLength { len: 1000, .. })
        ));
        // A list of 2^31-1 i64s.
        let mut r = Reader::new(&[10, 0x7f, 0xff, 0xff, 0xff]);
        assert!(r.read_list().is_err());
        // Structs nested in structs, 100 deep.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[12, 0, 1]);
        }
        let mut r = Reader::new(&deep);
        assert!(matches!(
            r.skip(Type::Struct),
            Err(ThriftError::TooDeep { .. })
        ));
        // A map of bools to strings, skipped whole.
        let map = [2, 11, 0, 0, 0, 1, 1, 0, 0, 0, 1, b'x', 0];
        let mut r = Reader::new(&map);
        r.skip(Type::Map).unwrap();
        assert_eq!(r.position(), map.len() - 1);
    }
}
