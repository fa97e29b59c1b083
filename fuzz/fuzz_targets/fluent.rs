//! Fluent Forward streams: the framer cuts any bytes into events or errors, and each event
//! translates or errors, never panics; what is written decodes as an ExportLogsServiceRequest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::translate::fluent::translate_event;
use shardtel_protocol::translate::msgpack::Framer;
use shardtel_protocol::translate::otlp::LogsWriter;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut logs = LogsWriter::new(&mut out);
    let mut rest = data;
    let mut framer = Framer::default();
    while let Ok(Some(len)) = framer.advance(rest) {
        let _ = translate_event(&rest[..len], 1 << 20, &mut logs);
        rest = &rest[len..];
    }
    logs.finish();
    ExportLogsServiceRequest::decode(&out[..]).expect("the request decodes");
});
