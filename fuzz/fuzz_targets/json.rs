//! OTLP/JSON (`shardtel_protocol::json`), as OTLP/HTTP JSON bodies and Kafka JSON messages
//! arrive: the first byte picks the signal, the rest is the body.
//!
//! Checks beyond "no panic": what `to_protobuf` accepts decodes with prost (with the same item
//! count the scanner sees, when the scanner accepts it); the JSON `from_protobuf` writes for it
//! (the file exporter's output) reads back, and writing that again gives the same JSON (the
//! protobuf bytes may differ: `"status":{}` reads back as an empty status where the original
//! had none). Arbitrary bytes also go to `from_protobuf`, which the file exporter feeds with
//! batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardtel_fuzz::{prost_items, scanned_items, signal, Cursor};
use shardtel_protocol::json::{from_protobuf, to_protobuf};

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let signal = signal(input.byte());
    let body = input.rest();
    if let Ok(pb) = to_protobuf(signal, body) {
        let items = prost_items(signal, &pb).expect("to_protobuf output decodes with prost");
        if let Ok(scanned) = scanned_items(signal, &pb) {
            assert_eq!(scanned, items, "the scanner counts what prost counts");
        }
        let written = from_protobuf(signal, &pb).expect("from_protobuf reads to_protobuf output");
        let again = to_protobuf(signal, &written).expect("the JSON written reads back");
        assert_eq!(prost_items(signal, &again), Some(items));
        let rewritten = from_protobuf(signal, &again).expect("from_protobuf of its own output");
        assert_eq!(
            String::from_utf8_lossy(&rewritten),
            String::from_utf8_lossy(&written),
            "JSON written, read and written again is the same"
        );
    }
    if let Ok(json) = from_protobuf(signal, body) {
        to_protobuf(signal, &json).expect("the JSON written for accepted protobuf reads back");
    }
});
