//! What became of a request: accepted, refused (retryable), or failed, and why.
//!
//! Classification happens here and nowhere else. Refused means the target asked the
//! client to come back later: gRPC `UNAVAILABLE` / `RESOURCE_EXHAUSTED`, HTTP 429 / 503.
//! Everything else that is not success is a failure, keyed by its status code or by
//! transport error, timeout or malformed response.

use std::fmt;

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Success status; `rejected` items were refused through `partial_success`.
    Accepted {
        /// Items the server reported as rejected.
        rejected: u64,
    },
    /// A retryable refusal.
    Refused(Reason),
    /// Anything else.
    Failed(Reason),
}

/// Why a request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A non-zero `grpc-status`.
    Grpc(u16),
    /// A non-2xx HTTP status.
    Http(u16),
    /// The connection failed or broke.
    Transport(TransportError),
    /// No response within `--timeout`.
    Timeout,
    /// A gRPC response without `grpc-status`.
    MissingGrpcStatus,
    /// A response body loadgen could not read.
    BadResponse,
}

/// Kinds of transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportError {
    /// The connection closed with the request in flight.
    Closed,
    /// An HTTP/1 or HTTP/2 protocol error (including stream resets).
    Protocol,
    /// Any other I/O error.
    Io,
}

/// gRPC status code names, by code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// gRPC `RESOURCE_EXHAUSTED`.
pub const GRPC_RESOURCE_EXHAUSTED: u16 = 8;
/// gRPC `UNAVAILABLE`.
pub const GRPC_UNAVAILABLE: u16 = 14;

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Grpc(code) => match GRPC_CODES.get(code as usize) {
                Some(name) => write!(f, "grpc {name} ({code})"),
                None => write!(f, "grpc status {code}"),
            },
            Reason::Http(status) => write!(f, "http {status}"),
            Reason::Transport(TransportError::Closed) => {
                f.write_str("transport: connection closed")
            }
            Reason::Transport(TransportError::Protocol) => f.write_str("transport: protocol error"),
            Reason::Transport(TransportError::Io) => f.write_str("transport: i/o error"),
            Reason::Timeout => f.write_str("timeout"),
            Reason::MissingGrpcStatus => f.write_str("grpc response without grpc-status"),
            Reason::BadResponse => f.write_str("unreadable response"),
        }
    }
}

/// Classifies a final `grpc-status` (0 = accepted; `rejected` from partial success).
pub fn classify_grpc(code: u16, rejected: u64) -> Outcome {
    match code {
        0 => Outcome::Accepted { rejected },
        GRPC_UNAVAILABLE | GRPC_RESOURCE_EXHAUSTED => Outcome::Refused(Reason::Grpc(code)),
        other => Outcome::Failed(Reason::Grpc(other)),
    }
}

/// Classifies an HTTP status that is not a success.
pub fn classify_http_error(status: u16) -> Outcome {
    match status {
        429 | 503 => Outcome::Refused(Reason::Http(status)),
        other => Outcome::Failed(Reason::Http(other)),
    }
}

/// Maps a hyper error to a transport failure kind.
pub fn classify_hyper_error(e: &hyper::Error) -> TransportError {
    if e.is_closed() || e.is_canceled() || e.is_incomplete_message() {
        TransportError::Closed
    } else if e.is_parse() || e.is_user() {
        TransportError::Protocol
    } else {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if s.downcast_ref::<std::io::Error>().is_some() {
                return TransportError::Io;
            }
            source = s.source();
        }
        TransportError::Protocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_are_refusals() {
        assert_eq!(classify_grpc(0, 2), Outcome::Accepted { rejected: 2 });
        assert_eq!(classify_grpc(14, 0), Outcome::Refused(Reason::Grpc(14)));
        assert_eq!(classify_grpc(8, 0), Outcome::Refused(Reason::Grpc(8)));
        assert_eq!(classify_grpc(3, 0), Outcome::Failed(Reason::Grpc(3)));
        assert_eq!(
            classify_http_error(429),
            Outcome::Refused(Reason::Http(429))
        );
        assert_eq!(
            classify_http_error(503),
            Outcome::Refused(Reason::Http(503))
        );
        assert_eq!(classify_http_error(400), Outcome::Failed(Reason::Http(400)));
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(Reason::Grpc(14).to_string(), "grpc UNAVAILABLE (14)");
        assert_eq!(Reason::Grpc(99).to_string(), "grpc status 99");
        assert_eq!(Reason::Http(503).to_string(), "http 503");
        assert_eq!(Reason::Timeout.to_string(), "timeout");
    }
}
