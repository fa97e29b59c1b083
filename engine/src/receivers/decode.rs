//! Decoding a request body into protobuf: decompression (gzip, zstd) and OTLP/JSON conversion,
//! shared by the receivers.
//!
//! - **Charged before it is spent.** What decoding may allocate (the decompressed body, the
//!   converted protobuf: each at most `max_recv_msg_size`) is reserved on the request's
//!   [`InflightGuard`] first, and decoding is bounded by the reservation; what it did not use
//!   is given back after. OTLP/JSON is converted streaming (`shardtel_protocol::json`), so a
//!   body costs its output, never a document tree (a gzip'd body of `{}` spans no longer costs
//!   a hundred times its size).
//! - **Off the reactor when large.** A body of at least [`OFFLOAD_BYTES`], and any compressed
//!   JSON, is decoded on the core's blocking thread (pinned to the core's CPU, as the exporters'
//!   offloaded work); at most [`OFFLOADED`] at once per core, the others wait for their turn.
//! - **Contained.** A panic while decoding fails the request (`INTERNAL`, HTTP 500) and is
//!   counted by the receiver; the core carries on.

use bytes::Bytes;
use glommio::sync::Semaphore;
use shardtel_protocol::compression::{decompress, DecompressError, Encoding};
use shardtel_protocol::json::{to_protobuf_within, ToProtobufError};
use shardtel_protocol::Signal;
use shardtel_sinks::panics;

use super::intake::InflightGuard;
use crate::pipeline::{IngestError, Overload};

/// Bodies of at least this many bytes are decoded off the reactor.
pub const OFFLOAD_BYTES: usize = 64 << 10;
/// Bodies a core decodes off its reactor at once (queued on its blocking thread).
pub const OFFLOADED: u64 = 4;

/// The format of a body (and of the response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

/// Where a compressed payload sat, for the error that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// An HTTP body (`Content-Encoding`).
    Body,
    /// A gRPC message (`grpc-encoding`).
    Message,
}

/// One core's decoding: the turns of its blocking thread.
pub struct Decoder {
    offloaded: Semaphore,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            offloaded: Semaphore::new(OFFLOADED),
        }
    }
}

/// What to decode.
pub struct Job {
    /// The request's signal.
    pub signal: Signal,
    /// Its format.
    pub format: Format,
    /// Its compression.
    pub encoding: Encoding,
    /// Where the compression was declared.
    pub payload: Payload,
    /// The received bytes (already charged).
    pub input: Bytes,
    /// `max_recv_msg_size`: the most a decompressed body, and a converted one, may hold.
    pub limit: usize,
    /// Test-only: the decoding panics (feature `fault-injection`).
    pub fault: bool,
}

impl Decoder {
    /// Runs `work` on the core's blocking thread, in its turn (at most [`OFFLOADED`] at once).
    pub async fn offload<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> R {
        let _turn = self.offloaded.acquire_permit(1).await;
        glommio::executor().spawn_blocking(work).await
    }

    /// Decodes `job` into protobuf, charged to `guard` (see the module docs). A body that needs
    /// no decoding is returned as it is.
    pub async fn decode(&self, guard: &InflightGuard<'_>, job: Job) -> Result<Bytes, IngestError> {
        let compressed = job.encoding != Encoding::Identity;
        let json = job.format == Format::Json;
        if !compressed && !json && !job.fault {
            return Ok(job.input);
        }
        // What decoding may allocate, as far as this request may still add on its core
        // (reserved once it is this request's turn: waiting holds nothing more).
        let most = job.limit * (usize::from(compressed) + usize::from(json));
        let reserve = || {
            let reserved = most.min(guard.room());
            guard.try_add(reserved).map(|()| reserved)
        };
        let offload = job.input.len() >= OFFLOAD_BYTES || (compressed && json);
        let (reserved, result) = if offload {
            let _turn = self.offloaded.acquire_permit(1).await;
            let reserved = reserve()?;
            let decoded = glommio::executor()
                .spawn_blocking(move || decode_contained(job, reserved))
                .await;
            (reserved, decoded)
        } else {
            let reserved = reserve()?;
            (reserved, decode_contained(job, reserved))
        };
        // Keep the charge of what was made, give back the rest.
        let kept = result.as_ref().map_or(0, Bytes::len);
        guard.release(reserved - kept.min(reserved));
        result
    }
}

/// [`decode_bounded`] with its panics contained.
fn decode_contained(job: Job, reserved: usize) -> Result<Bytes, IngestError> {
    panics::contain(|| {
        if job.fault {
            panic!("injected fault: decoding panics");
        }
        decode_bounded(job, reserved)
    })
    .unwrap_or_else(|p| Err(p.into()))
}

/// Decompresses and converts `job` without allocating more than `reserved` bytes for its
/// outputs (each also at most `job.limit`). Only the result is kept.
fn decode_bounded(job: Job, reserved: usize) -> Result<Bytes, IngestError> {
    let Job {
        signal,
        format,
        encoding,
        payload,
        input,
        limit,
        ..
    } = job;
    let raw = if encoding == Encoding::Identity {
        input
    } else {
        let cap = limit.min(reserved);
        let raw = decompress(encoding, &input, cap).map_err(|e| match e {
            DecompressError::TooLarge { .. } => too_large_or_overloaded(limit, cap),
            other => match payload {
                Payload::Body => IngestError::DecompressBody(other),
                Payload::Message => IngestError::DecompressMessage(other),
            },
        })?;
        drop(input);
        raw
    };
    if format == Format::Protobuf {
        return Ok(raw);
    }
    // The decompressed JSON is held while it converts: the rest of the reservation bounds the
    // protobuf.
    let held = if encoding == Encoding::Identity {
        0
    } else {
        raw.len()
    };
    let cap = limit.min(reserved - held.min(reserved));
    match to_protobuf_within(signal, &raw, cap) {
        Ok(pb) => Ok(Bytes::from(pb)),
        Err(ToProtobufError::Invalid(e)) => Err(IngestError::Json(e)),
        Err(ToProtobufError::TooLarge { .. }) => Err(too_large_or_overloaded(limit, cap)),
    }
}

/// The error for a decoded body that passed `cap`: too large if `cap` is the configured
/// `limit`, else a retryable refusal (the core's request bytes in flight are near their bound).
pub fn too_large_or_overloaded(limit: usize, cap: usize) -> IngestError {
    if cap < limit {
        IngestError::Overloaded(Overload::InflightBytes)
    } else {
        IngestError::TooLarge { limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(format: Format, encoding: Encoding, input: Vec<u8>, limit: usize) -> Job {
        Job {
            signal: Signal::Traces,
            format,
            encoding,
            payload: Payload::Body,
            input: Bytes::from(input),
            limit,
            fault: false,
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        shardtel_protocol::compression::compress(Encoding::Gzip, &[Bytes::copy_from_slice(data)])
            .to_vec()
    }

    #[test]
    fn decoding_stays_within_its_reservation() {
        // 100k empty spans: 300 KB of JSON, 200 KB of protobuf.
        let json = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec!["{}"; 100_000].join(",")
        );
        let zipped = gzip(json.as_bytes());
        let limit = 1 << 20;
        let pb = decode_bounded(
            job(Format::Json, Encoding::Gzip, zipped.clone(), limit),
            2 * limit,
        )
        .unwrap();
        assert!(pb.len() > 200_000 && pb.len() < 200_100, "{}", pb.len());
        // Room for the JSON but not for its protobuf: refused as overloaded (retryable).
        let short = json.len() + 1000;
        let e = decode_bounded(
            job(Format::Json, Encoding::Gzip, zipped.clone(), limit),
            short,
        )
        .unwrap_err();
        assert!(matches!(e, IngestError::Overloaded(_)), "{e}");
        // Larger than the limit once decompressed: too large (permanent).
        let e = decode_bounded(
            job(Format::Json, Encoding::Gzip, zipped, 200_000),
            usize::MAX,
        )
        .unwrap_err();
        assert!(matches!(e, IngestError::TooLarge { limit: 200_000 }), "{e}");
        // Corrupt: names what was corrupt.
        let e = decode_bounded(
            job(Format::Protobuf, Encoding::Gzip, vec![1, 2, 3], limit),
            limit,
        )
        .unwrap_err();
        assert!(matches!(e, IngestError::DecompressBody(_)), "{e}");
    }

    #[test]
    fn a_panic_while_decoding_fails_the_request() {
        let mut j = job(Format::Json, Encoding::Identity, b"{}".to_vec(), 1024);
        j.fault = true;
        let e = decode_contained(j, 1024).unwrap_err();
        assert!(matches!(e, IngestError::Internal(_)), "{e}");
        assert_eq!(e.http_status(), 500);
    }
}
