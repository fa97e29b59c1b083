//! gRPC message framing (the 5-byte length prefix) and status codes.
//!
//! A gRPC request or response body is a sequence of messages, each prefixed by one flag byte
//! (1 = compressed with the `grpc-encoding`) and a 4-byte big-endian length. OTLP export calls
//! are unary: exactly one message per body.

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the message prefix.
pub const PREFIX_LEN: usize = 5;

/// A malformed gRPC body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrpcFrameError {
    /// Fewer than 5 bytes.
    #[error("grpc body too short for a message prefix ({len} bytes)")]
    TooShort {
        /// Body length.
        len: usize,
    },
    /// The flag byte is neither 0 nor 1.
    #[error("invalid grpc compressed flag {flag}")]
    InvalidFlag {
        /// The flag byte.
        flag: u8,
    },
    /// The body ends before the declared message length.
    #[error("grpc message truncated: prefix says {declared} bytes, body has {available}")]
    Truncated {
        /// Declared length.
        declared: usize,
        /// Bytes after the prefix.
        available: usize,
    },
    /// Bytes after the one message (a second message in a unary call, or garbage).
    #[error("{extra} unexpected bytes after the grpc message")]
    TrailingBytes {
        /// Number of extra bytes.
        extra: usize,
    },
}

impl GrpcFrameError {
    /// The gRPC status for a request with a malformed body: `INVALID_ARGUMENT`.
    pub fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

/// Decodes a body holding exactly one length-prefixed message: returns (compressed, message),
/// the message being a zero-copy slice of `body`.
pub fn decode_message(body: &Bytes) -> Result<(bool, Bytes), GrpcFrameError> {
    if body.len() < PREFIX_LEN {
        return Err(GrpcFrameError::TooShort { len: body.len() });
    }
    let compressed = match body[0] {
        0 => false,
        1 => true,
        flag => return Err(GrpcFrameError::InvalidFlag { flag }),
    };
    let declared = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let available = body.len() - PREFIX_LEN;
    if available < declared {
        return Err(GrpcFrameError::Truncated {
            declared,
            available,
        });
    }
    if available > declared {
        return Err(GrpcFrameError::TrailingBytes {
            extra: available - declared,
        });
    }
    Ok((compressed, body.slice(PREFIX_LEN..)))
}

/// The 5-byte prefix of a message of `len` bytes (for chaining with [`crate::reframe::Encoded`]
/// chunks without copying them). `len` must fit in `u32`.
pub fn message_prefix(len: usize, compressed: bool) -> [u8; PREFIX_LEN] {
    debug_assert!(len <= u32::MAX as usize);
    let l = (len as u32).to_be_bytes();
    [u8::from(compressed), l[0], l[1], l[2], l[3]]
}

/// Frames an uncompressed message (copies it after the prefix).
pub fn encode_message(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX_LEN + msg.len());
    out.put_slice(&message_prefix(msg.len(), false));
    out.put_slice(msg);
    out.freeze()
}

/// gRPC status codes (`grpc-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client sent an invalid request (malformed protobuf/JSON): do not retry.
    InvalidArgument = 3,
    /// The deadline expired.
    DeadlineExceeded = 4,
    /// Not found (unknown service or method path).
    NotFound = 5,
    /// Already exists.
    AlreadyExists = 6,
    /// Permission denied.
    PermissionDenied = 7,
    /// Out of a resource (memory, queue space): retryable with backoff.
    ResourceExhausted = 8,
    /// Rejected because the system is not in a required state.
    FailedPrecondition = 9,
    /// Aborted (concurrency conflict).
    Aborted = 10,
    /// Out of range.
    OutOfRange = 11,
    /// Not implemented / not supported.
    Unimplemented = 12,
    /// Internal error.
    Internal = 13,
    /// Temporarily unavailable (overload, shutting down): retryable.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// Missing or bad authentication.
    Unauthenticated = 16,
}

impl Code {
    /// The code for an integer `grpc-status`, `Unknown` for values outside 0..=16.
    pub fn from_i32(v: i32) -> Code {
        use Code::*;
        match v {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// The integer value, as sent in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical upper-case name (`"INVALID_ARGUMENT"`).
    pub fn name(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Whether OTLP clients retry this code (OTLP spec: "Failures" — CANCELLED,
    /// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS).
    pub fn is_retryable(self) -> bool {
        use Code::*;
        matches!(
            self,
            Cancelled
                | DeadlineExceeded
                | ResourceExhausted
                | Aborted
                | OutOfRange
                | Unavailable
                | DataLoss
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = encode_message(b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(
            decode_message(&framed),
            Ok((false, Bytes::from_static(b"hello")))
        );
        let mut c = framed.to_vec();
        c[0] = 1;
        assert_eq!(
            decode_message(&Bytes::from(c)),
            Ok((true, Bytes::from_static(b"hello")))
        );
        assert_eq!(
            decode_message(&encode_message(b"")),
            Ok((false, Bytes::new()))
        );
        assert_eq!(message_prefix(0x01020304, true), [1, 1, 2, 3, 4]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode_message(&Bytes::from_static(b"")),
            Err(GrpcFrameError::TooShort { len: 0 })
        );
        assert_eq!(
            decode_message(&Bytes::from_static(&[0, 0, 0])),
            Err(GrpcFrameError::TooShort { len: 3 })
        );
        assert_eq!(
            decode_message(&Bytes::from_static(&[2, 0, 0, 0, 0])),
            Err(GrpcFrameError::InvalidFlag { flag: 2 })
        );
        assert_eq!(
            decode_message(&Bytes::from_static(&[0, 0, 0, 0, 3, 1])),
            Err(GrpcFrameError::Truncated {
                declared: 3,
                available: 1
            })
        );
        assert_eq!(
            decode_message(&Bytes::from_static(&[0, 0, 0, 0, 1, 1, 0, 0])),
            Err(GrpcFrameError::TrailingBytes { extra: 2 })
        );
        // Two messages in one unary body are rejected.
        let mut two = encode_message(b"a").to_vec();
        two.extend_from_slice(&encode_message(b"b"));
        assert_eq!(
            decode_message(&Bytes::from(two)),
            Err(GrpcFrameError::TrailingBytes { extra: 6 })
        );
        let huge = Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_message(&huge),
            Err(GrpcFrameError::Truncated { .. })
        ));
    }

    #[test]
    fn codes() {
        for v in 0..=16 {
            assert_eq!(Code::from_i32(v).as_i32(), v);
        }
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(Code::InvalidArgument.to_string(), "INVALID_ARGUMENT");
        assert!(Code::Unavailable.is_retryable());
        assert!(!Code::InvalidArgument.is_retryable());
    }
}
