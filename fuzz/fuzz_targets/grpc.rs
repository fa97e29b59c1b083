//! gRPC framing with decompression, as the gRPC receiver handles a body (and the HTTP receiver
//! a `Content-Encoding`): the 5-byte message prefix, then gzip or zstd bounded by a limit, then
//! the scanner.
//!
//! Input: encoding choice, limit choice (1 B to 64 KiB), body. Checks: a decompressed message
//! never exceeds the limit (decompression bombs stop at it); framing and compression round-trip
//! the rest of the input exactly, and a limit one byte short is refused as too large.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardtel_fuzz::{scanned_items, Cursor};
use shardtel_protocol::compression::{compress, decompress, DecompressError, Encoding};
use shardtel_protocol::grpc::{decode_message, encode_message, PREFIX_LEN};
use shardtel_protocol::Signal;

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let encoding = match input.byte() % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let limit = 1 + input.byte() as usize * 256;
    let body = Bytes::copy_from_slice(input.rest());

    if let Ok((compressed, message)) = decode_message(&body) {
        assert_eq!(message.len() + PREFIX_LEN, body.len());
        let raw = if compressed {
            match decompress(encoding, &message, limit) {
                Ok(raw) => raw,
                Err(DecompressError::TooLarge { max_len }) => {
                    assert_eq!(max_len, limit);
                    return;
                }
                Err(DecompressError::Corrupt) => return,
            }
        } else {
            message
        };
        assert!(raw.len() <= limit || !compressed, "{} > {limit}", raw.len());
        for signal in Signal::ALL {
            let _ = scanned_items(signal, &raw);
        }
    }
    // Anything at all, as a compressed body of up to 64 KiB.
    for encoding in [Encoding::Gzip, Encoding::Zstd] {
        if let Ok(raw) = decompress(encoding, &body, limit) {
            assert!(raw.len() <= limit);
        }
    }

    let framed = encode_message(&body);
    assert_eq!(decode_message(&framed), Ok((false, body.clone())));
    for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
        let packed = compress(encoding, std::slice::from_ref(&body));
        assert_eq!(
            decompress(encoding, &packed, body.len()).as_ref(),
            Ok(&body)
        );
        if !body.is_empty() {
            assert_eq!(
                decompress(encoding, &packed, body.len() - 1),
                Err(DecompressError::TooLarge {
                    max_len: body.len() - 1
                })
            );
        }
    }
});
