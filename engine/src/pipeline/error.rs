//! Why a request was not accepted, and what each reason answers: one gRPC code, one HTTP status
//! and whether to retry, decided here for every receiver.

use std::time::Duration;

use shardtel_protocol::compression::DecompressError;
use shardtel_protocol::grpc::{Code, GrpcFrameError};
use shardtel_protocol::json::JsonError;
use shardtel_protocol::scan::ScanError;
use shardtel_protocol::Signal;
use shardtel_wal::WalError;

/// Why a request was not accepted. Each variant maps to exactly one gRPC code and one HTTP
/// status (see [`IngestError::grpc_code`] and [`IngestError::http_status`]). The variants of
/// the hot path (overload, draining, memory) carry no allocation.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload is not a valid Export*ServiceRequest.
    #[error("malformed {}: {source}", request_name(*.signal))]
    Malformed {
        /// The request's signal.
        signal: Signal,
        /// What the scanner found.
        #[source]
        source: ScanError,
    },
    /// The gRPC message prefix is broken.
    #[error("malformed gRPC message framing: {0}")]
    GrpcFraming(#[source] GrpcFrameError),
    /// A gRPC message is flagged compressed but no `grpc-encoding` was sent.
    #[error("message is flagged compressed but no grpc-encoding was sent")]
    CompressedWithoutEncoding,
    /// The compressed gRPC message is corrupt.
    #[error("failed to decompress the message: {0}")]
    DecompressMessage(#[source] DecompressError),
    /// The compressed HTTP body is corrupt.
    #[error("failed to decompress the body: {0}")]
    DecompressBody(#[source] DecompressError),
    /// An OTLP/JSON body that does not convert to protobuf.
    #[error("malformed OTLP/JSON request: {0}")]
    Json(#[source] JsonError),
    /// Converting the request panicked (a bug; the request would panic again).
    #[error(transparent)]
    Internal(#[from] shardtel_sinks::panics::Panicked),
    /// The request body did not arrive within `receivers.otlp.read_timeout`.
    #[error("the request body did not arrive within {}", shardtel_config::format_duration(*.0))]
    BodyTimeout(Duration),
    /// The request (compressed or decompressed) exceeds the configured limit.
    #[error("request larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// The request is larger than an ingest-log frame may be.
    #[error("{0}")]
    TooLargeToLog(#[source] Box<WalError>),
    /// Queues or channels are full: retry later.
    #[error("shardtel is overloaded ({}); retry later", .0.message())]
    Overloaded(Overload),
    /// The core serves as many connections as `receivers.otlp.max_connections` allows it:
    /// retry later (on a new connection).
    #[error("shardtel serves too many connections; retry later")]
    TooManyConnections,
    /// The process's memory is above the memory limiter's soft limit: retry later.
    #[error("shardtel is above its memory limit; retry later")]
    MemoryLimited,
    /// The ingest log could not take the request (disk full, I/O error): retry later.
    #[error("shardtel cannot store the request (ingest log: {0}); retry later")]
    Storage(#[source] Box<WalError>),
    /// The collector is shutting down.
    #[error("shardtel is shutting down; retry on another instance or later")]
    Draining,
    /// No pipeline is configured for this signal.
    #[error("no {} pipeline is configured", .0.name())]
    NoPipeline(Signal),
    /// Content type or encoding not supported (the message names the value and what is).
    #[error("{0}")]
    Unsupported(String),
    /// `[receivers.otlp.auth]` is set and the request carries no accepted bearer token.
    #[error("{}", .0.message())]
    Unauthenticated(TokenProblem),
    /// A request of another format (Zipkin, Jaeger, Fluent Forward) that does not translate to
    /// OTLP; the message names what is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// What is wrong with a request's credentials (never the token itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenProblem {
    /// No `authorization: Bearer ...` header (or gRPC metadata), or an empty token.
    Missing,
    /// A bearer token that is not one of the accepted ones.
    Wrong,
}

/// Which bound refused an overloaded request (see [`IngestError::Overloaded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overload {
    /// The core's request bytes in flight are at `max_inflight_bytes`.
    InflightBytes,
    /// The channel to the core that owns some of the request's items is full.
    OwnerChannel,
    /// Too many acknowledged requests on this core wait for their export (ingest log).
    ExportWaiters,
    /// The ingest log is at its size bound.
    IngestLogFull,
    /// An exporter's queue is full.
    ExportQueue,
}

impl Overload {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Overload::InflightBytes => "too many request bytes in flight on this core",
            Overload::OwnerChannel => "the owner core's channel is full",
            Overload::ExportWaiters => "too many requests on this core wait for their export",
            Overload::IngestLogFull => "the ingest log is full",
            Overload::ExportQueue => "an exporter queue is full",
        }
    }
}

/// Why a receiver answered a request with an error: the `reason` label of
/// `shardtel_receiver_failed_requests_total`. One per bound or check, so an operator can
/// tell a client's fault (`malformed`, `too_large`, ...) from shardtel's own limits
/// (`inflight_bytes`, `export_queue_full`, ...), which say what to tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Not a valid request: bad protobuf or JSON, framing, compression (400).
    Malformed,
    /// Larger than `max_recv_msg_size` or than the ingest log takes (413).
    TooLarge,
    /// A content type, encoding or method the receiver does not take (415, UNIMPLEMENTED).
    Unsupported,
    /// No pipeline for the signal.
    NoPipeline,
    /// The body did not arrive within `read_timeout`.
    Timeout,
    /// The client's stream failed or ended before the body was complete.
    ClientAborted,
    /// No or a wrong bearer token.
    Unauthenticated,
    /// A bug contained to the request.
    Internal,
    /// Shutting down.
    Draining,
    /// At `max_connections`.
    Connections,
    /// Above the memory limiter's threshold.
    MemoryLimit,
    /// [`Overload::InflightBytes`].
    InflightBytes,
    /// [`Overload::OwnerChannel`].
    OwnerChannelFull,
    /// [`Overload::ExportWaiters`].
    ExportWaiters,
    /// [`Overload::IngestLogFull`].
    IngestLogFull,
    /// The ingest log could not store the request (a disk error).
    IngestLogError,
    /// [`Overload::ExportQueue`].
    ExportQueueFull,
}

impl FailReason {
    /// Every reason, in the order of [`FailReason::index`].
    pub const ALL: [FailReason; 17] = [
        FailReason::Malformed,
        FailReason::TooLarge,
        FailReason::Unsupported,
        FailReason::NoPipeline,
        FailReason::Timeout,
        FailReason::ClientAborted,
        FailReason::Unauthenticated,
        FailReason::Internal,
        FailReason::Draining,
        FailReason::Connections,
        FailReason::MemoryLimit,
        FailReason::InflightBytes,
        FailReason::OwnerChannelFull,
        FailReason::ExportWaiters,
        FailReason::IngestLogFull,
        FailReason::IngestLogError,
        FailReason::ExportQueueFull,
    ];

    /// The position in [`FailReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            FailReason::Malformed => "malformed",
            FailReason::TooLarge => "too_large",
            FailReason::Unsupported => "unsupported",
            FailReason::NoPipeline => "no_pipeline",
            FailReason::Timeout => "timeout",
            FailReason::ClientAborted => "client_aborted",
            FailReason::Unauthenticated => "unauthenticated",
            FailReason::Internal => "internal",
            FailReason::Draining => "draining",
            FailReason::Connections => "max_connections",
            FailReason::MemoryLimit => "memory_limit",
            FailReason::InflightBytes => "inflight_bytes",
            FailReason::OwnerChannelFull => "owner_channel_full",
            FailReason::ExportWaiters => "export_waiters",
            FailReason::IngestLogFull => "ingest_log_full",
            FailReason::IngestLogError => "ingest_log_error",
            FailReason::ExportQueueFull => "export_queue_full",
        }
    }
}

impl TokenProblem {
    /// Both, in the order of [`TokenProblem::index`].
    pub const ALL: [TokenProblem; 2] = [TokenProblem::Missing, TokenProblem::Wrong];

    /// The `reason` label of `shardtel_receiver_auth_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            TokenProblem::Missing => "missing",
            TokenProblem::Wrong => "wrong",
        }
    }

    /// The position in [`TokenProblem::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn message(self) -> &'static str {
        match self {
            TokenProblem::Missing => {
                "missing bearer token: send the header authorization: Bearer <token>"
            }
            TokenProblem::Wrong => "invalid bearer token",
        }
    }
}

/// The protobuf message a request of `signal` carries.
fn request_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "ExportTraceServiceRequest",
        Signal::Metrics => "ExportMetricsServiceRequest",
        Signal::Logs => "ExportLogsServiceRequest",
    }
}

/// What a refusal means to the client: the one classification the gRPC code, the HTTP status
/// and the retry advice are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// The request itself is wrong: do not retry it.
    Invalid,
    /// Larger than allowed: do not retry it.
    TooLarge,
    /// Not now: retry later.
    Unavailable,
    /// Above the memory limit: retry later.
    MemoryLimited,
    /// No pipeline for the signal.
    NoPipeline,
    /// A content type or encoding this receiver does not take.
    Unsupported,
    /// The client was too slow to send its request.
    Timeout,
    /// A bug: the request cannot be processed.
    Internal,
    /// No accepted credentials: do not retry without new ones.
    Unauthenticated,
}

impl IngestError {
    fn class(&self) -> Class {
        match self {
            IngestError::Malformed { .. }
            | IngestError::GrpcFraming(_)
            | IngestError::CompressedWithoutEncoding
            | IngestError::DecompressMessage(_)
            | IngestError::DecompressBody(_)
            | IngestError::Json(_)
            | IngestError::Invalid(_)
            | IngestError::TooLargeToLog(_) => Class::Invalid,
            IngestError::TooLarge { .. } => Class::TooLarge,
            IngestError::Overloaded(_)
            | IngestError::TooManyConnections
            | IngestError::Storage(_)
            | IngestError::Draining => Class::Unavailable,
            IngestError::MemoryLimited => Class::MemoryLimited,
            IngestError::NoPipeline(_) => Class::NoPipeline,
            IngestError::Unsupported(_) => Class::Unsupported,
            IngestError::BodyTimeout(_) => Class::Timeout,
            IngestError::Internal(_) => Class::Internal,
            IngestError::Unauthenticated(_) => Class::Unauthenticated,
        }
    }

    /// The `reason` label this error is counted under.
    pub fn reason(&self) -> FailReason {
        match self {
            IngestError::Malformed { .. }
            | IngestError::GrpcFraming(_)
            | IngestError::CompressedWithoutEncoding
            | IngestError::DecompressMessage(_)
            | IngestError::DecompressBody(_)
            | IngestError::Json(_)
            | IngestError::Invalid(_) => FailReason::Malformed,
            IngestError::TooLarge { .. } | IngestError::TooLargeToLog(_) => FailReason::TooLarge,
            IngestError::Overloaded(o) => match o {
                Overload::InflightBytes => FailReason::InflightBytes,
                Overload::OwnerChannel => FailReason::OwnerChannelFull,
                Overload::ExportWaiters => FailReason::ExportWaiters,
                Overload::IngestLogFull => FailReason::IngestLogFull,
                Overload::ExportQueue => FailReason::ExportQueueFull,
            },
            IngestError::TooManyConnections => FailReason::Connections,
            IngestError::Storage(_) => FailReason::IngestLogError,
            IngestError::Draining => FailReason::Draining,
            IngestError::MemoryLimited => FailReason::MemoryLimit,
            IngestError::NoPipeline(_) => FailReason::NoPipeline,
            IngestError::Unsupported(_) => FailReason::Unsupported,
            IngestError::BodyTimeout(_) => FailReason::Timeout,
            IngestError::Internal(_) => FailReason::Internal,
            IngestError::Unauthenticated(_) => FailReason::Unauthenticated,
        }
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> Code {
        match self.class() {
            Class::Invalid => Code::InvalidArgument,
            Class::TooLarge => Code::ResourceExhausted,
            Class::Unavailable | Class::MemoryLimited => Code::Unavailable,
            Class::NoPipeline | Class::Unsupported => Code::Unimplemented,
            Class::Timeout => Code::DeadlineExceeded,
            Class::Internal => Code::Internal,
            Class::Unauthenticated => Code::Unauthenticated,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self.class() {
            Class::Invalid => 400,
            Class::TooLarge => 413,
            Class::Unavailable => 503,
            Class::MemoryLimited => 429,
            Class::NoPipeline => 404,
            Class::Unsupported => 415,
            Class::Timeout => 408,
            Class::Internal => 500,
            Class::Unauthenticated => 401,
        }
    }

    /// The `WWW-Authenticate` challenge an HTTP answer carries (RFC 6750 §3), if any.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            IngestError::Unauthenticated(TokenProblem::Missing) => Some("Bearer"),
            IngestError::Unauthenticated(TokenProblem::Wrong) => {
                Some("Bearer error=\"invalid_token\"")
            }
            _ => None,
        }
    }

    /// How long a client should wait before retrying, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class() {
            Class::Unavailable | Class::MemoryLimited => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// True when the client may retry the same request.
    pub fn is_retryable(&self) -> bool {
        self.retry_after().is_some()
    }
}

impl From<crate::durability::AppendError> for IngestError {
    fn from(e: crate::durability::AppendError) -> Self {
        use crate::durability::AppendError;
        match e {
            AppendError::Unreleased => IngestError::Overloaded(Overload::ExportWaiters),
            AppendError::Full(_) => IngestError::Overloaded(Overload::IngestLogFull),
            AppendError::TooLarge(e) => IngestError::TooLargeToLog(Box::new(e)),
            AppendError::Disk(e) => IngestError::Storage(Box::new(e)),
        }
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

    #[test]
    fn each_error_has_one_code_one_status_and_retry_advice() {
        let wal = || Box::new(WalError::TooLarge { len: 9, max: 8 });
        let corrupt = DecompressError::Corrupt;
        for (e, code, status, retry) in [
            (
                IngestError::Malformed {
                    signal: Signal::Logs,
                    source: ScanError::Truncated { offset: 0 },
                },
                Code::InvalidArgument,
                400,
                false,
            ),
            (
                IngestError::GrpcFraming(GrpcFrameError::TooShort { len: 1 }),
                Code::InvalidArgument,
                400,
                false,
            ),
            (
                IngestError::CompressedWithoutEncoding,
                Code::InvalidArgument,
                400,
                false,
            ),
            (
                IngestError::DecompressMessage(corrupt),
                Code::InvalidArgument,
                400,
                false,
            ),
            (
                IngestError::DecompressBody(corrupt),
                Code::InvalidArgument,
                400,
                false,
            ),
            (
                IngestError::TooLargeToLog(wal()),
                Code::InvalidArgument,
                400,
                false,
            ),
            (
                IngestError::TooLarge { limit: 1 },
                Code::ResourceExhausted,
                413,
                false,
            ),
            (
                IngestError::Overloaded(Overload::ExportQueue),
                Code::Unavailable,
                503,
                true,
            ),
            (
                IngestError::TooManyConnections,
                Code::Unavailable,
                503,
                true,
            ),
            (IngestError::Storage(wal()), Code::Unavailable, 503, true),
            (IngestError::Draining, Code::Unavailable, 503, true),
            (IngestError::MemoryLimited, Code::Unavailable, 429, true),
            (
                IngestError::NoPipeline(Signal::Traces),
                Code::Unimplemented,
                404,
                false,
            ),
            (
                IngestError::Unsupported("x".into()),
                Code::Unimplemented,
                415,
                false,
            ),
            (
                IngestError::BodyTimeout(Duration::from_secs(30)),
                Code::DeadlineExceeded,
                408,
                false,
            ),
            (
                IngestError::Internal(shardtel_sinks::panics::Panicked {
                    message: "x".into(),
                }),
                Code::Internal,
                500,
                false,
            ),
            (
                IngestError::Unauthenticated(TokenProblem::Missing),
                Code::Unauthenticated,
                401,
                false,
            ),
            (
                IngestError::Unauthenticated(TokenProblem::Wrong),
                Code::Unauthenticated,
                401,
                false,
            ),
        ] {
            assert_eq!(e.grpc_code(), code, "{e:?}");
            assert_eq!(e.http_status(), status, "{e:?}");
            assert_eq!(e.is_retryable(), retry, "{e:?}");
            assert_eq!(e.www_authenticate().is_some(), status == 401, "{e:?}");
        }
    }

    #[test]
    fn errors_keep_their_source_and_their_message() {
        use std::error::Error as _;
        let scan = ScanError::Truncated { offset: 7 };
        let e = IngestError::Malformed {
            signal: Signal::Traces,
            source: scan,
        };
        assert_eq!(
            e.to_string(),
            "malformed ExportTraceServiceRequest: truncated protobuf at offset 7"
        );
        assert_eq!(e.source().map(|s| s.to_string()), Some(scan.to_string()));
        assert_eq!(e.http_status(), 400);
        let wal = WalError::TooLarge { len: 9, max: 8 };
        let e = IngestError::from(crate::durability::AppendError::TooLarge(wal.clone()));
        assert_eq!(e.to_string(), wal.to_string());
        assert_eq!(e.grpc_code(), Code::InvalidArgument);
        assert!(e.source().is_some());
        // The hot path's refusals stay small.
        assert!(std::mem::size_of::<IngestError>() <= 32);
    }
}
