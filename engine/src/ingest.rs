//! What every receiver does with a decoded request body: scan it, route
//! trace spans to their owner cores, hand metrics and logs to the local
//! pipeline, and classify failures once for both transports.

use std::time::Duration;

use shardtel_protocol::grpc::Code;
use shardtel_protocol::Signal;

/// Why a request was not accepted. Each variant maps to exactly one gRPC
/// code and one HTTP status (see [`IngestError::grpc_code`] and
/// [`IngestError::http_status`]).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload is not a valid Export*ServiceRequest.
    #[error("{0}")]
    Malformed(String),
    /// The request (compressed or decompressed) exceeds the configured limit.
    #[error("request larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// Queues or channels are full: retry later.
    #[error("shardtel is overloaded ({0}); retry later")]
    Overloaded(&'static str),
    /// The core serves as many connections as `receivers.otlp.max_connections` allows it:
    /// retry later (on a new connection).
    #[error("shardtel serves too many connections; retry later")]
    TooManyConnections,
    /// The process's memory is above the memory limiter's soft limit: retry later.
    #[error("shardtel is above its memory limit; retry later")]
    MemoryLimited,
    /// The write-ahead log could not take the request (disk full, I/O error): retry later.
    #[error("shardtel cannot store the request ({0}); retry later")]
    Storage(String),
    /// The collector is shutting down.
    #[error("shardtel is shutting down; retry on another instance or later")]
    Draining,
    /// No pipeline is configured for this signal.
    #[error("no {} pipeline is configured", .0.name())]
    NoPipeline(Signal),
    /// Content type or encoding not supported.
    #[error("{0}")]
    Unsupported(String),
}

impl IngestError {
    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> Code {
        match self {
            IngestError::Malformed(_) => Code::InvalidArgument,
            IngestError::TooLarge { .. } => Code::ResourceExhausted,
            IngestError::Overloaded(_)
            | IngestError::TooManyConnections
            | IngestError::Storage(_)
            | IngestError::Draining
            | IngestError::MemoryLimited => Code::Unavailable,
            IngestError::NoPipeline(_) | IngestError::Unsupported(_) => Code::Unimplemented,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Malformed(_) => 400,
            IngestError::TooLarge { .. } => 413,
            IngestError::Overloaded(_)
            | IngestError::TooManyConnections
            | IngestError::Storage(_)
            | IngestError::Draining => 503,
            IngestError::MemoryLimited => 429,
            IngestError::NoPipeline(_) => 404,
            IngestError::Unsupported(_) => 415,
        }
    }

    /// How long a client should wait before retrying, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Overloaded(_)
            | IngestError::TooManyConnections
            | IngestError::Storage(_)
            | IngestError::Draining
            | IngestError::MemoryLimited => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// True when the client may retry the same request.
    pub fn is_retryable(&self) -> bool {
        self.retry_after().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_refusals_are_retryable() {
        let e = IngestError::MemoryLimited;
        assert_eq!(e.grpc_code(), Code::Unavailable);
        assert_eq!(e.http_status(), 429);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(e.is_retryable());
    }
}
