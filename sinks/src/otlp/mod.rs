//! OTLP exporters over the network: gRPC (`otlp`) and HTTP/protobuf (`otlphttp`).
//!
//! Both send the batch's protobuf bytes as they are (optionally compressed) over the shared
//! [`crate::transport`] (connected lazily on the current core, reconnected after a failure),
//! and read the `partial_success` of the `Export*ServiceResponse`s, which share one shape.

pub(crate) mod grpc;
pub(crate) mod http;

use bytes::Bytes;
use prost::Message;
use shardtel_protocol::compression::{compress, Encoding};

use crate::batch::Batch;
use crate::error::ExportReply;
use crate::offload;

/// The request body of `batch`: its chunks as they are, or compressed into one (on the core's
/// blocking thread when large).
async fn payload(batch: &Batch, encoding: Encoding) -> Vec<Bytes> {
    match encoding {
        Encoding::Identity => batch.chunks.clone(),
        encoding => {
            let chunks = batch.chunks.clone();
            vec![offload::run(batch.bytes, move || compress(encoding, &chunks)).await]
        }
    }
}

/// `Export{Trace,Metrics,Logs}ServiceResponse`: the three share this shape.
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// `Export*PartialSuccess`: `rejected_{spans,data_points,log_records}` and `error_message`.
#[derive(Clone, PartialEq, Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// Reads the partial success out of an encoded `Export*ServiceResponse`;
/// an undecodable response counts as full success (the data was accepted).
pub(crate) fn parse_export_response(body: &[u8]) -> ExportReply {
    match ExportResponse::decode(body) {
        Ok(ExportResponse {
            partial_success: Some(p),
        }) => ExportReply {
            rejected: u64::try_from(p.rejected).unwrap_or(0),
            message: p.error_message,
        },
        _ => ExportReply::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_success_is_read_for_any_signal() {
        let response = ExportResponse {
            partial_success: Some(PartialSuccess {
                rejected: 7,
                error_message: "span too old".into(),
            }),
        };
        let reply = parse_export_response(&response.encode_to_vec());
        assert_eq!(reply.rejected, 7);
        assert_eq!(reply.message, "span too old");
        assert_eq!(parse_export_response(&[]), ExportReply::default());
        assert_eq!(parse_export_response(&[0xff, 0xff]), ExportReply::default());
    }
}
