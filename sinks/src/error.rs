//! What an export attempt returns — an [`ExportReply`] or an [`ExportError`] — and the one
//! place that decides which failures are retried ([`ExportError::disposition`], with the Kafka
//! error codes in [`kafka_code_is_retryable`]). Errors hold data; nothing here calls into an
//! exporter.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use shardtel_protocol::grpc::Code;

/// Building an exporter failed (bad configuration that validation let through).
/// Messages leave out the exporter's name (the caller adds it); the
/// `exporter` field carries it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Only `http` (h2c for gRPC) and `https` endpoints are supported.
    #[error("endpoint scheme {scheme:?} is not supported, use \"http\" or \"https\"")]
    UnsupportedScheme {
        /// Exporter name.
        exporter: String,
        /// The scheme that was configured.
        scheme: String,
    },
    /// The exporter's TLS settings (certificates, keys, CA bundle, server name) could not be
    /// loaded.
    #[error("tls: {source}")]
    Tls {
        /// Exporter name.
        exporter: String,
        /// What shardtel-tls reported (names the file and what is wrong with it).
        source: shardtel_tls::Error,
    },
    /// An `https://` endpoint was handed no TLS settings (a caller bug: build them with
    /// [`crate::client_tls`] before the reactors start).
    #[error("an https endpoint needs its tls settings, built before the reactors start")]
    TlsNotPrepared {
        /// Exporter name.
        exporter: String,
    },
    /// A configured header name or value is not valid HTTP.
    #[error("header {name:?} is not a valid http header")]
    InvalidHeader {
        /// Exporter name.
        exporter: String,
        /// Header name as configured.
        name: String,
    },
    /// An endpoint does not form a valid URI.
    #[error("endpoint {endpoint:?} is not a valid uri")]
    InvalidEndpoint {
        /// Exporter name.
        exporter: String,
        /// The endpoint as rendered.
        endpoint: String,
    },
    /// The file exporter's path names no file.
    #[error("path {path:?} has no file name")]
    InvalidPath {
        /// Exporter name.
        exporter: String,
        /// The configured path.
        path: PathBuf,
    },
    /// The exporter's disk queue could not be opened.
    #[error("failed to open the disk queue: {source}")]
    Queue {
        /// Exporter name.
        exporter: String,
        /// What the write-ahead log reported.
        source: shardtel_wal::WalError,
    },
    /// librdkafka refused the producer settings.
    #[error("invalid kafka producer settings: {message}")]
    Kafka {
        /// Exporter name.
        exporter: String,
        /// librdkafka's explanation.
        message: String,
    },
}

/// The export queue has no room for a piece; retry later or refuse upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("export queue full: {queued_bytes} of {max_bytes} bytes used, {needed} more needed")]
pub struct QueueFull {
    /// Size of the refused piece.
    pub needed: usize,
    /// Bytes queued or in flight at the time.
    pub queued_bytes: usize,
    /// The queue's bound (`queue.max_bytes`).
    pub max_bytes: usize,
}

/// What the backend said about an accepted request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExportReply {
    /// Items the backend rejected (`partial_success`).
    pub rejected: u64,
    /// The backend's explanation for the rejection.
    pub message: String,
}

/// One failed export attempt.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint's host name did not resolve.
    #[error("failed to resolve {host}: {source}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver error.
        source: io::Error,
    },
    /// TCP connect failed.
    #[error("failed to connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Socket error.
        source: io::Error,
    },
    /// The TLS handshake with the endpoint failed (certificate not trusted, name mismatch, no
    /// common protocol, refused client certificate, ...). Retried: certificates are re-read
    /// on both sides, and a backend may be restarting.
    #[error("tls handshake with {addr} failed: {source}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// rustls's error inside an I/O error.
        source: io::Error,
    },
    /// The HTTP connection failed during the request.
    #[error("transport error: {source}")]
    Transport {
        /// hyper's error.
        source: hyper::Error,
    },
    /// No complete answer within the configured timeout.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// The configured timeout.
        after: Duration,
    },
    /// The response broke the protocol (for example a gRPC answer without status).
    #[error("malformed response: {reason}")]
    MalformedResponse {
        /// What was wrong.
        reason: &'static str,
    },
    /// A gRPC status other than OK.
    #[error("grpc status {code} ({}): {message}", code.as_i32())]
    Grpc {
        /// gRPC status code.
        code: Code,
        /// `grpc-message`.
        message: String,
        /// `google.rpc.RetryInfo` delay from `grpc-status-details-bin`.
        retry_after: Option<Duration>,
    },
    /// An HTTP status other than 2xx.
    #[error("http status {status}: {message}")]
    Http {
        /// Response status.
        status: StatusCode,
        /// Message from the `google.rpc.Status` body, or the start of the body.
        message: String,
        /// `Retry-After` header.
        retry_after: Option<Duration>,
    },
    /// A storage backend (Prometheus remote write, Loki push) answered with a non-2xx status.
    #[error("http status {status}: {message}")]
    Push {
        /// Response status.
        status: StatusCode,
        /// The start of the response body.
        message: String,
        /// `Retry-After` header.
        retry_after: Option<Duration>,
    },
    /// The batch could not be rendered as OTLP JSON.
    #[error("failed to convert to otlp json: {reason}")]
    Json {
        /// The converter's message.
        reason: String,
    },
    /// The batch could not be cut into messages (it is not a valid request).
    #[error("failed to encode messages: {reason}")]
    Encode {
        /// What was wrong.
        reason: String,
    },
    /// Kafka did not take or did not acknowledge every message of the batch.
    #[error("kafka: {source} ({failed} messages failed delivery)")]
    Kafka {
        /// The first error (enqueueing or a delivery report).
        source: KafkaError,
        /// Messages whose delivery report was an error.
        failed: u64,
    },
    /// The conversion or export of the batch panicked (a bug; the batch would panic again).
    #[error(transparent)]
    Panicked(#[from] crate::panics::Panicked),
    /// A file operation failed.
    #[error("failed to {op} {path:?}: {source}")]
    File {
        /// What was being done (`open`, `write`, `rename`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Try again after a backoff (at least `after` when the server asked for it).
    Retry {
        /// Delay requested by the server (`Retry-After`, `RetryInfo`).
        after: Option<Duration>,
    },
    /// Retrying cannot help: count the batch as failed.
    Permanent,
}

impl ExportError {
    /// Classifies this error: retryable or permanent. The only place that decides.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Resolve { .. }
            | Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Transport { .. }
            | Self::Timeout { .. } => Disposition::Retry { after: None },
            Self::MalformedResponse { .. }
            | Self::Json { .. }
            | Self::Encode { .. }
            | Self::Panicked(_) => Disposition::Permanent,
            Self::Kafka { source, .. } => {
                if kafka_error_is_retryable(source) {
                    Disposition::Retry { after: None }
                } else {
                    Disposition::Permanent
                }
            }
            Self::Grpc {
                code, retry_after, ..
            } => match code {
                // The OTLP spec: retry RESOURCE_EXHAUSTED only when the server
                // says when (RetryInfo); otherwise it is a permanent refusal.
                Code::ResourceExhausted if retry_after.is_none() => Disposition::Permanent,
                code if code.is_retryable() => Disposition::Retry {
                    after: *retry_after,
                },
                _ => Disposition::Permanent,
            },
            Self::Http {
                status,
                retry_after,
                ..
            } => match status.as_u16() {
                429 | 502 | 503 | 504 => Disposition::Retry {
                    after: *retry_after,
                },
                _ => Disposition::Permanent,
            },
            // Remote-write and Loki clients retry 5xx and 429 and nothing else (the remote
            // write specification; Loki's own clients do the same).
            Self::Push {
                status,
                retry_after,
                ..
            } => match status.as_u16() {
                429 | 500..=599 => Disposition::Retry {
                    after: *retry_after,
                },
                _ => Disposition::Permanent,
            },
            Self::File { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::IsADirectory
                | io::ErrorKind::NotADirectory
                | io::ErrorKind::ReadOnlyFilesystem => Disposition::Permanent,
                // Disk full and the like may clear up.
                _ => Disposition::Retry { after: None },
            },
        }
    }
}

/// Whether a Kafka error code can clear up by itself (broker down, leader moving, timeouts,
/// a full queue) or will come back on every attempt (message too large, not authorized,
/// invalid topic or record). The Kafka exporter also decides per message with it. A fatal
/// error ([`kafka_code_is_fatal`]) is retryable: not on the same producer, which it leaves
/// unusable, but on the new one the exporter creates before the next attempt.
pub(crate) fn kafka_code_is_retryable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        code,
        C::MessageSizeTooLarge
            | C::MessageBatchTooLarge
            | C::InvalidRecord
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidArgument
    )
}

/// Whether a Kafka error code means the producer is unusable for good (librdkafka's fatal
/// errors, mostly the idempotent producer's lost sequence, e.g. an out-of-order sequence
/// number): every later message fails on it too, so it must be created again.
pub(crate) fn kafka_code_is_fatal(code: RDKafkaErrorCode) -> bool {
    code == RDKafkaErrorCode::Fatal
}

/// [`kafka_code_is_retryable`] for any Kafka error; configuration errors are permanent.
fn kafka_error_is_retryable(error: &KafkaError) -> bool {
    !matches!(error, KafkaError::ClientConfig(..) | KafkaError::Nul(_))
        && error
            .rdkafka_error_code()
            .is_none_or(kafka_code_is_retryable)
}

/// The gRPC code a non-200 HTTP answer to a gRPC call stands for (gRPC's
/// "HTTP to gRPC status code mapping").
pub(crate) fn grpc_code_for_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(code: i32, retry_after: Option<Duration>) -> ExportError {
        ExportError::Grpc {
            code: Code::from_i32(code),
            message: String::new(),
            retry_after,
        }
    }

    fn http(status: u16, retry_after: Option<Duration>) -> ExportError {
        ExportError::Http {
            status: StatusCode::from_u16(status).unwrap(),
            message: String::new(),
            retry_after,
        }
    }

    const RETRY: Disposition = Disposition::Retry { after: None };

    #[test]
    fn grpc_codes() {
        for code in [1, 4, 10, 11, 14, 15] {
            assert_eq!(grpc(code, None).disposition(), RETRY, "{code}");
        }
        for code in [2, 3, 5, 6, 7, 9, 12, 13, 16, 99] {
            assert_eq!(
                grpc(code, None).disposition(),
                Disposition::Permanent,
                "{code}"
            );
        }
        let wait = Some(Duration::from_secs(2));
        assert_eq!(grpc(8, None).disposition(), Disposition::Permanent);
        assert_eq!(
            grpc(8, wait).disposition(),
            Disposition::Retry { after: wait }
        );
        assert_eq!(
            grpc(14, wait).disposition(),
            Disposition::Retry { after: wait }
        );
    }

    #[test]
    fn http_statuses() {
        for status in [429, 502, 503, 504] {
            assert_eq!(http(status, None).disposition(), RETRY, "{status}");
        }
        for status in [400, 401, 403, 404, 405, 413, 415, 500, 501] {
            assert_eq!(
                http(status, None).disposition(),
                Disposition::Permanent,
                "{status}"
            );
        }
        let wait = Some(Duration::from_secs(7));
        assert_eq!(
            http(503, wait).disposition(),
            Disposition::Retry { after: wait }
        );
    }

    #[test]
    fn storage_push_statuses() {
        let push = |status: u16| ExportError::Push {
            status: StatusCode::from_u16(status).unwrap(),
            message: String::new(),
            retry_after: None,
        };
        for status in [429, 500, 502, 503, 504, 599] {
            assert_eq!(push(status).disposition(), RETRY, "{status}");
        }
        for status in [400, 401, 404, 409, 413] {
            assert_eq!(
                push(status).disposition(),
                Disposition::Permanent,
                "{status}"
            );
        }
    }

    #[test]
    fn transport_and_files() {
        let refused = ExportError::Connect {
            addr: "127.0.0.1:1".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.disposition(), RETRY);
        assert_eq!(
            ExportError::Timeout {
                after: Duration::from_secs(1)
            }
            .disposition(),
            RETRY
        );
        let file = |kind| ExportError::File {
            op: "write",
            path: "x".into(),
            source: io::Error::from(kind),
        };
        assert_eq!(
            file(io::ErrorKind::PermissionDenied).disposition(),
            Disposition::Permanent
        );
        assert_eq!(file(io::ErrorKind::StorageFull).disposition(), RETRY);
        assert_eq!(
            ExportError::MalformedResponse { reason: "x" }.disposition(),
            Disposition::Permanent
        );
    }

    #[test]
    fn kafka_classification() {
        let is_retryable = kafka_error_is_retryable;
        let produce = |code| KafkaError::MessageProduction(code);
        assert!(is_retryable(&produce(RDKafkaErrorCode::QueueFull)));
        assert!(is_retryable(&produce(RDKafkaErrorCode::MessageTimedOut)));
        assert!(is_retryable(&produce(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_retryable(&produce(
            RDKafkaErrorCode::NotLeaderForPartition
        )));
        assert!(!is_retryable(&produce(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(!is_retryable(&produce(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }

    #[test]
    fn messages_are_lowercase_and_name_codes() {
        let msg = grpc(14, None).to_string();
        assert_eq!(msg, "grpc status UNAVAILABLE (14): ");
        assert_eq!(http(400, None).to_string(), "http status 400 Bad Request: ");
        assert_eq!(
            grpc_code_for_http(StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(grpc_code_for_http(StatusCode::BAD_REQUEST), Code::Internal);
    }
}
