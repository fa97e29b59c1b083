//! The wire-format boundary: signals (the protocol crate's [`Signal`], with their paths),
//! compression, gRPC framing and OTLP/JSON conversion.
//!
//! Everything loadgen needs from the OTLP wire format beyond prost message types goes
//! through this module. gRPC framing, decompression and OTLP/JSON come from
//! `shardtel-protocol`, the encoder shared with the collector. Compression is done here
//! with a reusable [`Compressor`] (the protocol crate's `compress` builds a new encoder
//! per call, which halves the generator's speed); its output is checked against the
//! protocol crate's decompressor in the tests.

use anyhow::{bail, Context, Result};
use prost::Message;

use shardtel_protocol::compression::{self as protocol_compression, Encoding};
use shardtel_protocol::grpc;

/// Which OTLP signal a run sends: the protocol crate's, with its names and paths.
pub use shardtel_protocol::Signal;

/// What one item of `signal` is called in reports.
pub fn item_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "spans",
        Signal::Metrics => "points",
        Signal::Logs => "records",
    }
}

/// Body compression (`grpc-encoding` / `Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Bodies are sent as they are.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Compression {
    /// The header value naming this encoding, `None` for identity.
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    /// The level used when none is given: the fastest, so that compression costs the
    /// generator as little as possible (the protocol crate's levels).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Zstd => 1,
        }
    }
}

/// A reusable compressor: keeps its zstd context and deflate state between requests,
/// which matters at thousands of requests per second (creating a zstd context costs
/// more than compressing a 40 KB request at a fast level).
pub struct Compressor {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    deflate: Option<flate2::Compress>,
}

impl Compressor {
    /// A compressor for `compression` at `level`.
    pub fn new(compression: Compression, level: i32) -> Result<Self> {
        Ok(Self {
            compression,
            zstd: match compression {
                Compression::Zstd => Some(
                    zstd::bulk::Compressor::new(level).context("failed to start zstd encoder")?,
                ),
                _ => None,
            },
            deflate: match compression {
                Compression::Gzip => Some(flate2::Compress::new(
                    flate2::Compression::new(level.clamp(0, 9) as u32),
                    false,
                )),
                _ => None,
            },
        })
    }

    /// Compresses `data`, appending to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match self.compression {
            Compression::None => out.extend_from_slice(data),
            Compression::Zstd => {
                let z = self.zstd.as_mut().expect("zstd compressor");
                let start = out.len();
                out.reserve(zstd::zstd_safe::compress_bound(data.len()));
                out.resize(start + zstd::zstd_safe::compress_bound(data.len()), 0);
                let n = z
                    .compress_to_buffer(data, &mut out[start..])
                    .context("failed to zstd request")?;
                out.truncate(start + n);
            }
            Compression::Gzip => {
                let d = self.deflate.as_mut().expect("deflate state");
                d.reset();
                // RFC 1952 header: deflate, no flags, no mtime, unknown OS.
                out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
                let mut input = data;
                loop {
                    out.reserve(input.len() / 2 + 1024);
                    let before = d.total_in();
                    let status = d
                        .compress_vec(input, out, flate2::FlushCompress::Finish)
                        .context("failed to gzip request")?;
                    input = &input[(d.total_in() - before) as usize..];
                    if status == flate2::Status::StreamEnd {
                        break;
                    }
                }
                let mut crc = flate2::Crc::new();
                crc.update(data);
                out.extend_from_slice(&crc.sum().to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Upper bound for one decompressed body or file (the protocol crate requires a bound).
const MAX_DECOMPRESSED: usize = 1 << 36;

/// Decompresses a body sent with the `encoding` header value (`gzip`, `zstd`, `identity`).
pub fn decompress(encoding: &str, data: &[u8]) -> Result<Vec<u8>> {
    let encoding = match encoding.trim() {
        "" => Encoding::Identity,
        "x-gzip" => Encoding::Gzip,
        other => match Encoding::from_header(other) {
            Some(e) => e,
            None => bail!("unsupported content encoding {other:?}"),
        },
    };
    let plain = protocol_compression::decompress(encoding, data, MAX_DECOMPRESSED)
        .with_context(|| format!("failed to decompress {} body", encoding.as_str()))?;
    Ok(plain.to_vec())
}

/// The 5-byte gRPC length prefix: compressed flag, then the message length big-endian.
pub fn grpc_frame_header(compressed: bool, len: usize) -> [u8; 5] {
    grpc::message_prefix(len, compressed)
}

/// Splits a gRPC body into its first message (if any), decompressing it with
/// `encoding` when its compressed flag is set.
pub fn grpc_first_message(body: &[u8], encoding: Option<&str>) -> Result<Option<Vec<u8>>> {
    if body.is_empty() {
        return Ok(None);
    }
    if body.len() < 5 {
        bail!("truncated grpc frame header ({} bytes)", body.len());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let Some(msg) = body.get(5..5 + len) else {
        bail!(
            "truncated grpc message: header says {len} bytes, {} present",
            body.len() - 5
        );
    };
    if body[0] == 1 {
        let Some(enc) = encoding else {
            bail!("compressed grpc message without grpc-encoding");
        };
        return decompress(enc, msg).map(Some);
    }
    Ok(Some(msg.to_vec()))
}

/// Converts an `Export*ServiceRequest` in protobuf to OTLP/JSON.
pub fn protobuf_to_json(signal: Signal, protobuf: &[u8]) -> Result<Vec<u8>> {
    shardtel_protocol::json::from_protobuf(signal, protobuf).context("failed to encode otlp json")
}

/// Converts an OTLP/JSON `Export*ServiceRequest` to protobuf.
pub fn json_to_protobuf(signal: Signal, json: &[u8]) -> Result<bytes::Bytes> {
    shardtel_protocol::json::to_protobuf(signal, json).context("failed to read otlp json")
}

/// Items the server rejected, read from an `Export*ServiceResponse` in protobuf
/// (its `partial_success`).
pub fn rejected_items_protobuf(signal: Signal, body: &[u8]) -> Result<u64> {
    use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
    let rejected = match signal {
        Signal::Traces => trace::v1::ExportTraceServiceResponse::decode(body)?
            .partial_success
            .map_or(0, |p| p.rejected_spans),
        Signal::Metrics => metrics::v1::ExportMetricsServiceResponse::decode(body)?
            .partial_success
            .map_or(0, |p| p.rejected_data_points),
        Signal::Logs => logs::v1::ExportLogsServiceResponse::decode(body)?
            .partial_success
            .map_or(0, |p| p.rejected_log_records),
    };
    Ok(rejected.max(0) as u64)
}

/// Items the server rejected, read from an `Export*ServiceResponse` in OTLP/JSON.
pub fn rejected_items_json(signal: Signal, body: &[u8]) -> Result<u64> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_slice(body).context("invalid json response")?;
    let key = match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
        Signal::Logs => "rejectedLogRecords",
    };
    let n = v.get("partialSuccess").and_then(|p| p.get(key));
    Ok(match n {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    })
}

/// Joins a gRPC frame header and a message into one body.
#[cfg(test)]
pub fn grpc_framed(message: &[u8], compressed: bool) -> bytes::Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&grpc_frame_header(compressed, message.len()));
    out.extend_from_slice(message);
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reusable_compressor_round_trips_through_the_protocol_decoder() {
        let data = b"span span span trace trace".repeat(500);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for level in [c.default_level(), 3] {
                let mut z = Compressor::new(c, level).unwrap();
                for round in 0..3 {
                    let mut out = vec![9u8; round];
                    z.compress(&data, &mut out).unwrap();
                    let back = decompress(c.header_value().unwrap_or(""), &out[round..]).unwrap();
                    assert_eq!(back, data);
                }
            }
        }
    }

    #[test]
    fn grpc_frame_round_trips() {
        let framed = grpc_framed(b"abc", false);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 3]);
        assert_eq!(grpc_first_message(&framed, None).unwrap().unwrap(), b"abc");
        assert!(grpc_first_message(&framed[..6], None).is_err());
        assert_eq!(grpc_first_message(&[], None).unwrap(), None);
    }

    #[test]
    fn partial_success_is_read() {
        use opentelemetry_proto::tonic::collector::trace::v1::*;
        let resp = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 7,
                error_message: "x".into(),
            }),
        };
        let pb = resp.encode_to_vec();
        assert_eq!(rejected_items_protobuf(Signal::Traces, &pb).unwrap(), 7);
        let json = br#"{"partialSuccess":{"rejectedSpans":"3"}}"#;
        assert_eq!(rejected_items_json(Signal::Traces, json).unwrap(), 3);
        assert_eq!(rejected_items_json(Signal::Traces, b"{}").unwrap(), 0);
    }
}
