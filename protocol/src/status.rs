//! Response bodies: `google.rpc.Status` (gRPC `grpc-status-details-bin`, OTLP/HTTP error
//! bodies) and `Export*ServiceResponse` with its partial-success field, in protobuf and JSON.

use bytes::{Bytes, BytesMut};

use crate::grpc::Code;
use crate::wire::{put_key, put_len_field, put_varint, WireType};
use crate::Signal;

/// `google.rpc.Status { code = 1, message = 2 }` in protobuf.
pub fn rpc_status_protobuf(code: Code, message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 16);
    if code != Code::Ok {
        put_key(&mut out, 1, WireType::Varint);
        // int32: negative values would take 10 bytes; codes are never negative.
        put_varint(&mut out, code.as_i32() as u64);
    }
    if !message.is_empty() {
        put_len_field(&mut out, 2, message.as_bytes());
    }
    out.freeze()
}

/// `google.rpc.Status` in JSON: `{"code":3,"message":"..."}` (fields at their default are
/// left out, as the protobuf JSON mapping does).
pub fn rpc_status_json(code: Code, message: &str) -> Bytes {
    let mut out = String::with_capacity(message.len() + 32);
    out.push('{');
    if code != Code::Ok {
        out.push_str(&format!("\"code\":{}", code.as_i32()));
    }
    if !message.is_empty() {
        if code != Code::Ok {
            out.push(',');
        }
        out.push_str("\"message\":");
        out.push_str(&json_string(message));
    }
    out.push('}');
    Bytes::from(out)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("serialising a str cannot fail")
}

/// Name of the rejected-count field of the partial success message of `signal`, in JSON.
fn rejected_json_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
        Signal::Logs => "rejectedLogRecords",
    }
}

/// `Export{Trace,Metrics,Logs}ServiceResponse` in protobuf: empty when `rejected == 0` and
/// `error_message` is empty, else `partial_success { rejected_* = 1, error_message = 2 }`.
/// (The three messages share field numbers.)
pub fn export_response(_signal: Signal, rejected: u64, error_message: &str) -> Bytes {
    if rejected == 0 && error_message.is_empty() {
        return Bytes::new();
    }
    let mut inner = BytesMut::with_capacity(error_message.len() + 16);
    if rejected != 0 {
        put_key(&mut inner, 1, WireType::Varint);
        put_varint(&mut inner, rejected.min(i64::MAX as u64));
    }
    if !error_message.is_empty() {
        put_len_field(&mut inner, 2, error_message.as_bytes());
    }
    let mut out = BytesMut::with_capacity(inner.len() + 6);
    put_len_field(&mut out, 1, &inner);
    out.freeze()
}

/// The JSON form of [`export_response`]: `{}` or
/// `{"partialSuccess":{"rejectedSpans":"3","errorMessage":"..."}}` (int64 as a string).
pub fn export_response_json(signal: Signal, rejected: u64, error_message: &str) -> Bytes {
    if rejected == 0 && error_message.is_empty() {
        return Bytes::from_static(b"{}");
    }
    let mut fields = Vec::with_capacity(2);
    if rejected != 0 {
        fields.push(format!(
            "\"{}\":\"{}\"",
            rejected_json_name(signal),
            rejected.min(i64::MAX as u64)
        ));
    }
    if !error_message.is_empty() {
        fields.push(format!("\"errorMessage\":{}", json_string(error_message)));
    }
    Bytes::from(format!("{{\"partialSuccess\":{{{}}}}}", fields.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::logs::v1::ExportLogsServiceResponse;
    use crate::proto::collector::metrics::v1::ExportMetricsServiceResponse;
    use crate::proto::collector::trace::v1::ExportTraceServiceResponse;
    use prost::Message;

    /// `google.rpc.Status` (not in opentelemetry-proto).
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }

    #[test]
    fn rpc_status() {
        let b = rpc_status_protobuf(Code::InvalidArgument, "bad span");
        assert_eq!(
            RpcStatus::decode(b).unwrap(),
            RpcStatus {
                code: 3,
                message: "bad span".into()
            }
        );
        assert!(rpc_status_protobuf(Code::Ok, "").is_empty());
        assert_eq!(
            &rpc_status_json(Code::Unavailable, "busy")[..],
            br#"{"code":14,"message":"busy"}"#
        );
        assert_eq!(&rpc_status_json(Code::Ok, "")[..], b"{}");
    }

    #[test]
    fn export_responses() {
        assert!(export_response(Signal::Traces, 0, "").is_empty());
        let t = ExportTraceServiceResponse::decode(export_response(Signal::Traces, 3, "dropped"))
            .unwrap();
        let ps = t.partial_success.unwrap();
        assert_eq!(
            (ps.rejected_spans, ps.error_message.as_str()),
            (3, "dropped")
        );
        let m =
            ExportMetricsServiceResponse::decode(export_response(Signal::Metrics, 5, "")).unwrap();
        assert_eq!(m.partial_success.unwrap().rejected_data_points, 5);
        let l =
            ExportLogsServiceResponse::decode(export_response(Signal::Logs, 0, "warn")).unwrap();
        let ps = l.partial_success.unwrap();
        assert_eq!(
            (ps.rejected_log_records, ps.error_message.as_str()),
            (0, "warn")
        );

        assert_eq!(&export_response_json(Signal::Traces, 0, "")[..], b"{}");
        assert_eq!(
            &export_response_json(Signal::Logs, 2, "x")[..],
            br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"x"}}"#
        );
        assert_eq!(
            &export_response_json(Signal::Metrics, 1, "")[..],
            br#"{"partialSuccess":{"rejectedDataPoints":"1"}}"#
        );
    }
}
