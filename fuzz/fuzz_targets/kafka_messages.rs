//! Kafka message checking and grouping at the protocol level: the receiver checks each message
//! value on its own (OTLP/JSON converted to protobuf first, then the scanner) and joins the
//! valid ones of a signal into one request by concatenation, which protobuf defines as their
//! merge (`engine/src/kafka_group.rs`). The engine's `RequestGroup` is not reachable from
//! outside the engine; this target checks the property it relies on with the same protocol
//! functions.
//!
//! Input: messages, each a choice byte (signal, JSON or protobuf) and a length-prefixed value.
//! Checks: the concatenation of the values that passed is accepted by the scanner and by prost,
//! with as many items as the messages had together.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardtel_fuzz::{prost_items, scanned_items, signal, Cursor};
use shardtel_protocol::json::to_protobuf;
use shardtel_protocol::Signal;

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    // Per signal: the joined request and the items of its messages.
    let mut groups: [(Vec<u8>, usize, usize); 3] = Default::default();
    while !input.is_empty() {
        let choice = input.byte();
        let value = input.piece();
        let signal = signal(choice);
        let converted;
        let pb: &[u8] = if choice & 0x80 != 0 {
            match to_protobuf(signal, value) {
                Ok(pb) => {
                    converted = pb;
                    &converted
                }
                Err(_) => continue,
            }
        } else {
            value
        };
        let Ok(items) = scanned_items(signal, pb) else {
            continue;
        };
        let group = &mut groups[index(signal)];
        group.0.extend_from_slice(pb);
        group.1 += items;
        group.2 += 1;
    }
    for signal in Signal::ALL {
        let (body, items, messages) = &groups[index(signal)];
        if *messages == 0 {
            continue;
        }
        let scanned = scanned_items(signal, body)
            .unwrap_or_else(|e| panic!("{messages} valid messages joined are invalid: {e}"));
        assert_eq!(scanned, *items);
        assert_eq!(prost_items(signal, body), Some(*items));
    }
});

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}
