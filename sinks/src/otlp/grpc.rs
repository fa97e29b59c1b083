//! `otlp`: OTLP/gRPC client, unary `Export` calls over one HTTP/2 (h2c)
//! connection per core, shared by that core's senders ([`SharedConnection`]).

use std::time::Duration;

use ::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, TE, USER_AGENT};
use ::http::{Method, Request, Response, StatusCode, Uri, Version};
use bytes::Bytes;
use hyper::body::Incoming;
use shardtel_protocol::compression::Encoding;
use shardtel_protocol::grpc::{decode_message, message_prefix, Code};
use shardtel_protocol::Signal;

use super::{parse_export_response, payload};
use crate::batch::Batch;
use crate::error::{grpc_code_for_http, ExportError, ExportReply};
use crate::retry::{decode_grpc_message, decode_status_details, retry_info_delay};
use crate::transport::http2::SharedConnection;
use crate::transport::{read_body, retry_after, with_timeout, ChunkBody, Target};

/// One `otlp` exporter on one core.
pub(crate) struct OtlpGrpcExporter {
    /// Traces, metrics, logs.
    uris: [Uri; 3],
    encoding: Encoding,
    timeout: Duration,
    headers: HeaderMap,
    connection: SharedConnection,
}

impl OtlpGrpcExporter {
    /// `headers` already holds the configured headers.
    pub(crate) fn new(
        target: Target,
        encoding: Encoding,
        timeout: Duration,
        mut headers: HeaderMap,
    ) -> Result<Self, ::http::Error> {
        let uris = [
            target.uri(Signal::Traces.grpc_path())?,
            target.uri(Signal::Metrics.grpc_path())?,
            target.uri(Signal::Logs.grpc_path())?,
        ];
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT));
        if encoding != Encoding::Identity {
            headers.insert(
                HeaderName::from_static("grpc-encoding"),
                HeaderValue::from_static(encoding.as_str()),
            );
        }
        if !timeout.is_zero() {
            // gRPC's timeout unit `m` is milliseconds; at most 8 digits.
            let millis = timeout.as_millis().min(99_999_999);
            headers.insert(
                HeaderName::from_static("grpc-timeout"),
                HeaderValue::from_str(&format!("{millis}m")).expect("digits are a valid header"),
            );
        }
        Ok(Self {
            uris,
            encoding,
            timeout,
            headers,
            connection: SharedConnection::new(target),
        })
    }

    /// Sends `batch` as one unary `Export` call.
    pub(crate) async fn export(&self, batch: &Batch) -> Result<ExportReply, ExportError> {
        let request = self.request(batch).await;
        let result = with_timeout(self.timeout, async {
            let mut sender = self.connection.sender().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| ExportError::Transport { source })?;
            read_response(response).await
        })
        .await;
        if matches!(
            result,
            Err(ExportError::Transport { .. } | ExportError::Timeout { .. })
        ) {
            // Streams still running on the old connection finish there; new
            // ones get a fresh connection (a silent peer shows only as timeouts).
            self.connection.reset();
        }
        result
    }

    async fn request(&self, batch: &Batch) -> Request<ChunkBody> {
        let payload = payload(batch, self.encoding).await;
        let len: usize = payload.iter().map(Bytes::len).sum();
        let prefix = message_prefix(len, self.encoding != Encoding::Identity);
        let body = ChunkBody::new(std::iter::once(Bytes::copy_from_slice(&prefix)).chain(payload));
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = self.uris[batch.signal.index()].clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Interprets a unary gRPC answer: HTTP status, then `grpc-status` from the
/// headers (trailers-only answer) or the trailers, then the response message.
async fn read_response(response: Response<Incoming>) -> Result<ExportReply, ExportError> {
    let (parts, body) = response.into_parts();
    if parts.status != StatusCode::OK {
        let retry_after = retry_after(&parts.headers);
        // Read (and drop) the body so the stream ends cleanly.
        let _ = read_body(body).await;
        return Err(ExportError::Grpc {
            code: grpc_code_for_http(parts.status),
            message: format!("http status {}", parts.status),
            retry_after,
        });
    }
    if parts.headers.contains_key("grpc-status") {
        check_status(&parts.headers)?;
        return Ok(ExportReply::default());
    }
    let (data, trailers) = read_body(body).await?;
    let trailers = trailers.ok_or(ExportError::MalformedResponse {
        reason: "grpc response without grpc-status",
    })?;
    check_status(&trailers)?;
    let encoding = parts
        .headers
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::from_header);
    Ok(parse_message(&data, encoding))
}

/// `Ok` for `grpc-status: 0`, the error otherwise.
fn check_status(headers: &HeaderMap) -> Result<(), ExportError> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map(Code::from_i32)
        .ok_or(ExportError::MalformedResponse {
            reason: "grpc response without a valid grpc-status",
        })?;
    if code == Code::Ok {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| decode_grpc_message(v.as_bytes()))
        .unwrap_or_default();
    let retry_after = headers
        .get("grpc-status-details-bin")
        .and_then(|v| decode_status_details(v.as_bytes()))
        .and_then(|status| retry_info_delay(&status));
    Err(ExportError::Grpc {
        code,
        message,
        retry_after,
    })
}

/// The largest response message decompressed (a partial success and its error message).
const MAX_RESPONSE: usize = 1 << 20;

/// The partial success inside a length-prefixed response message. A compressed one is
/// decompressed by the response's `grpc-encoding`: grpc-go servers (the Collector among them)
/// answer a gzip request with a gzip response unless told otherwise, so its rejected items
/// would otherwise count as sent. One that cannot be read counts as full success, as before.
fn parse_message(data: &Bytes, encoding: Option<Encoding>) -> ExportReply {
    match decode_message(data) {
        Ok((false, message)) => parse_export_response(&message),
        Ok((true, message)) => match encoding {
            Some(enc) if enc != Encoding::Identity => {
                match shardtel_protocol::compression::decompress(enc, &message, MAX_RESPONSE) {
                    Ok(plain) => parse_export_response(&plain),
                    Err(_) => ExportReply::default(),
                }
            }
            _ => ExportReply::default(),
        },
        _ => ExportReply::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        headers.insert("grpc-message", HeaderValue::from_static("backend%20down"));
        match check_status(&headers) {
            Err(ExportError::Grpc {
                code,
                message,
                retry_after,
            }) => {
                assert_eq!(
                    (code, message.as_str(), retry_after),
                    (Code::Unavailable, "backend down", None)
                );
            }
            other => panic!("{other:?}"),
        }
        headers.insert("grpc-status", HeaderValue::from_static("x"));
        assert!(matches!(
            check_status(&headers),
            Err(ExportError::MalformedResponse { .. })
        ));
    }

    #[test]
    fn message_prefix_is_checked() {
        let parse = |b: &'static [u8]| parse_message(&Bytes::from_static(b), None);
        assert_eq!(parse(&[]), ExportReply::default());
        assert_eq!(parse(&[0, 0, 0, 0, 9, 1]), ExportReply::default());
        assert_eq!(parse(&[0, 0, 0, 0, 0]), ExportReply::default());
    }

    /// A grpc-go server answers a gzip request with a gzip response: its partial success is
    /// read (it was taken for full success).
    #[test]
    fn a_compressed_partial_success_is_read() {
        // ExportTraceServiceResponse { partial_success { rejected_spans: 3, error_message: "x" } }
        let response = Bytes::from_static(&[0x0a, 0x05, 0x08, 0x03, 0x12, 0x01, b'x']);
        for enc in [Encoding::Gzip, Encoding::Zstd] {
            let packed =
                shardtel_protocol::compression::compress(enc, std::slice::from_ref(&response));
            let mut framed = message_prefix(packed.len(), true).to_vec();
            framed.extend_from_slice(&packed);
            let reply = parse_message(&Bytes::from(framed), Some(enc));
            assert_eq!(
                (reply.rejected, reply.message.as_str()),
                (3, "x"),
                "{enc:?}"
            );
        }
        // Without a known encoding it cannot be read: full success, as before.
        let packed = shardtel_protocol::compression::compress(Encoding::Gzip, &[response]);
        let mut framed = message_prefix(packed.len(), true).to_vec();
        framed.extend_from_slice(&packed);
        assert_eq!(
            parse_message(&Bytes::from(framed), None),
            ExportReply::default()
        );
    }
}
