//! Zipkin v2 JSON and protobuf bodies: any bytes get a translation or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardtel_protocol::translate::zipkin::{json_v2_to_otlp, proto_to_otlp, ZipkinOptions};

fuzz_target!(|data: &[u8]| {
    let options = ZipkinOptions {
        parse_string_tags: data.first().is_some_and(|b| b & 1 == 1),
    };
    let _ = json_v2_to_otlp(data, options);
    let _ = proto_to_otlp(data, options);
});
