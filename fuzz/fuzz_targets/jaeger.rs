//! Jaeger PostSpansRequest (protobuf) and Thrift Batch bodies: any bytes get a translation or
//! an error, never a panic; a translation decodes as an ExportTraceServiceRequest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::translate::jaeger::{proto_to_otlp, thrift_to_otlp};

fuzz_target!(|data: &[u8]| {
    for translated in [proto_to_otlp(data), thrift_to_otlp(data)]
        .into_iter()
        .flatten()
    {
        ExportTraceServiceRequest::decode(&translated.request[..])
            .expect("a translation is a valid ExportTraceServiceRequest");
    }
});
