//! `loki` conversion (`shardtel_sinks::loki::LokiConverter`): arbitrary bytes as an
//! `ExportLogsServiceRequest`, through every line format and both encodings.
//!
//! Checks beyond "no panic": a protobuf body is a snappy block holding a `PushRequest` with as
//! many entries as the request had records; a JSON body is valid JSON (every string escaped)
//! with as many values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_config::{LokiEncoding, LokiExporterConfig, LokiLineFormat};
use shardtel_fuzz::{prost_items, Cursor};
use shardtel_protocol::Signal;
use shardtel_sinks::loki::{LokiConverter, PushRequest};

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let choice = input.byte();
    let request = input.rest();
    let Some(records) = prost_items(Signal::Logs, request) else {
        return;
    };
    let mut cfg =
        LokiExporterConfig::new("http://127.0.0.1:3100/loki/api/v1/push".parse().unwrap());
    cfg.line_format = match choice % 3 {
        0 => LokiLineFormat::Body,
        1 => LokiLineFormat::Json,
        _ => LokiLineFormat::Logfmt,
    };
    if choice & 4 != 0 {
        cfg.attribute_labels = vec!["level".into(), "http.method".into()];
    }
    for encoding in [LokiEncoding::Protobuf, LokiEncoding::Json] {
        cfg.encoding = encoding;
        let body = LokiConverter::new(&cfg)
            .convert(request)
            .expect("prost accepted the request");
        if records == 0 {
            assert!(body.is_empty());
            continue;
        }
        let entries = match encoding {
            LokiEncoding::Protobuf => {
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(&body)
                    .expect("snappy block");
                let push = PushRequest::decode(raw.as_slice()).expect("a PushRequest");
                push.streams.iter().map(|s| s.entries.len()).sum::<usize>()
            }
            LokiEncoding::Json => {
                let json: serde_json::Value =
                    serde_json::from_slice(&body).expect("the JSON body parses");
                json["streams"]
                    .as_array()
                    .expect("streams")
                    .iter()
                    .map(|s| s["values"].as_array().expect("values").len())
                    .sum()
            }
        };
        assert_eq!(entries, records);
    }
});
