//! gzip and zstd, with bounded decompression.
//!
//! [`decompress`] never produces more than `max_len` bytes: it streams and stops as soon as the
//! output would exceed the bound, so a zip bomb costs at most `max_len` bytes of memory and the
//! time to inflate them. A zstd frame also declares the window its decoder allocates before
//! any output; windows beyond [`zstd_window_log`] are refused as corrupt (libzstd alone would
//! allocate up to 128 MiB for a few bytes of input).

use std::io::{Read, Write};

use bytes::Bytes;

/// A content coding (`grpc-encoding` / `Content-Encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

impl Encoding {
    /// Parses a header value (case-insensitive `identity`, `gzip`, `zstd`; surrounding spaces
    /// ignored). `None` for anything else.
    pub fn from_header(value: &str) -> Option<Encoding> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("identity") {
            Some(Encoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") {
            Some(Encoding::Gzip)
        } else if v.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else {
            None
        }
    }

    /// The header value (`"identity"`, `"gzip"`, `"zstd"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }
}

/// Why decompression failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The decompressed data would exceed the limit.
    #[error("decompressed body exceeds {max_len} bytes")]
    TooLarge {
        /// The limit.
        max_len: usize,
    },
    /// The compressed data is malformed.
    #[error("corrupt compressed body")]
    Corrupt,
}

impl DecompressError {
    /// The gRPC status for a request that fails to decompress: `RESOURCE_EXHAUSTED` when too
    /// large (HTTP 413), `INVALID_ARGUMENT` when corrupt (HTTP 400). Both are permanent.
    pub fn code(&self) -> crate::grpc::Code {
        match self {
            DecompressError::TooLarge { .. } => crate::grpc::Code::ResourceExhausted,
            DecompressError::Corrupt => crate::grpc::Code::InvalidArgument,
        }
    }
}

/// Decompresses `data`, failing with [`DecompressError::TooLarge`] as soon as the output would
/// exceed `max_len` bytes.
pub fn decompress(enc: Encoding, data: &[u8], max_len: usize) -> Result<Bytes, DecompressError> {
    match enc {
        Encoding::Identity => {
            if data.len() > max_len {
                return Err(DecompressError::TooLarge { max_len });
            }
            Ok(Bytes::copy_from_slice(data))
        }
        Encoding::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(data), data.len(), max_len)
        }
        Encoding::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|_| DecompressError::Corrupt)?;
            dec.window_log_max(zstd_window_log(max_len))
                .map_err(|_| DecompressError::Corrupt)?;
            read_bounded(dec, data.len(), max_len)
        }
    }
}

/// The largest zstd window (as a power of two) accepted when at most `max_len` bytes may come
/// out. A back-reference never reaches further back than what was already decoded, so a window
/// beyond `max_len` is never needed; but encoders declare their level's window for streams of
/// unknown size (8 MiB: zstd's levels up to 19, Go's klauspost default), so 8 MiB is always
/// accepted. At most 128 MiB, libzstd's own default.
pub fn zstd_window_log(max_len: usize) -> u32 {
    let needed = usize::BITS - max_len.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

/// Decompresses a zlib stream (HTTP `Content-Encoding: deflate`, which Zipkin clients send),
/// failing with [`DecompressError::TooLarge`] as soon as the output would exceed `max_len`.
pub fn inflate_zlib(data: &[u8], max_len: usize) -> Result<Bytes, DecompressError> {
    read_bounded(flate2::read::ZlibDecoder::new(data), data.len(), max_len)
}

fn read_bounded(
    reader: impl Read,
    compressed_len: usize,
    max_len: usize,
) -> Result<Bytes, DecompressError> {
    let mut out = read_at_most(reader, compressed_len, max_len.saturating_add(1))?;
    if out.len() > max_len {
        return Err(DecompressError::TooLarge { max_len });
    }
    // The body may be held for long (the tail sampler keeps it for `decision_wait`): give back
    // what growing left unused, so it holds what it counts.
    if out.capacity() - out.len() > out.len() / 8 {
        out.shrink_to_fit();
    }
    Ok(Bytes::from(out))
}

/// Reads `reader` to its end or to `limit` bytes, whichever comes first, into a buffer whose
/// capacity never exceeds `limit`: the caller charged `limit` bytes, and `read_to_end` would
/// double its buffer past that (up to twice the limit for a body just over a power of two).
/// Starts from a typical 4-8x ratio over `compressed_len`, then doubles up to the limit.
fn read_at_most(
    mut reader: impl Read,
    compressed_len: usize,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let first = compressed_len.saturating_mul(6).max(64).min(limit);
    let mut out = Vec::new();
    out.reserve_exact(first);
    out.resize(first, 0);
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if out.len() >= limit {
                break;
            }
            let grow = out.len().max(64).min(limit - out.len());
            out.reserve_exact(grow);
            out.resize(out.len() + grow, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(DecompressError::Corrupt),
        }
    }
    out.truncate(filled);
    debug_assert!(out.capacity() <= limit);
    Ok(out)
}

/// Compresses the concatenation of `chunks` (gzip at the fast level, zstd at level 1).
/// `Identity` returns the concatenation.
pub fn compress(enc: Encoding, chunks: &[Bytes]) -> Bytes {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    match enc {
        Encoding::Identity => {
            let mut out = Vec::with_capacity(total);
            for c in chunks {
                out.extend_from_slice(c);
            }
            Bytes::from(out)
        }
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(total / 4 + 64),
                flate2::Compression::fast(),
            );
            for c in chunks {
                e.write_all(c).expect("writing to a Vec cannot fail");
            }
            Bytes::from(e.finish().expect("writing to a Vec cannot fail"))
        }
        Encoding::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(Vec::with_capacity(total / 4 + 64), 1)
                .expect("zstd encoder with level 1");
            e.include_contentsize(true).ok();
            e.set_pledged_src_size(Some(total as u64)).ok();
            for c in chunks {
                e.write_all(c).expect("writing to a Vec cannot fail");
            }
            Bytes::from(e.finish().expect("writing to a Vec cannot fail"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn headers() {
        assert_eq!(Encoding::from_header("GZIP"), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(" zstd "), Some(Encoding::Zstd));
        assert_eq!(Encoding::from_header("Identity"), Some(Encoding::Identity));
        assert_eq!(Encoding::from_header("br"), None);
        assert_eq!(Encoding::Gzip.as_str(), "gzip");
    }

    #[test]
    fn round_trips() {
        let chunks = [
            Bytes::from_static(b"hello "),
            Bytes::from(vec![7u8; 10_000]),
            Bytes::from_static(b"!"),
        ];
        let plain: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        for enc in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
            let c = compress(enc, &chunks);
            if enc != Encoding::Identity {
                assert!(c.len() < plain.len() / 10);
            }
            assert_eq!(decompress(enc, &c, plain.len()).unwrap(), plain, "{enc:?}");
            assert_eq!(
                decompress(enc, &c, plain.len() - 1),
                Err(DecompressError::TooLarge {
                    max_len: plain.len() - 1
                })
            );
        }
    }

    #[test]
    fn corrupt() {
        for enc in [Encoding::Gzip, Encoding::Zstd] {
            assert_eq!(
                decompress(enc, b"definitely not compressed", 1 << 20),
                Err(DecompressError::Corrupt)
            );
            let mut c = compress(enc, &[Bytes::from(vec![1u8; 1000])]).to_vec();
            c.truncate(c.len() / 2);
            assert_eq!(
                decompress(enc, &c, 1 << 20),
                Err(DecompressError::Corrupt),
                "{enc:?}"
            );
        }
    }

    /// A zstd frame of a few bytes declaring a 128 MiB window: refused under a 4 MiB limit
    /// (its decoder would allocate the window first); the 8 MiB window encoders declare for
    /// streams is accepted.
    #[test]
    fn zstd_windows_are_bounded() {
        use std::io::Write as _;
        let frame = |window_log: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            e.window_log(window_log).unwrap();
            e.include_contentsize(false).unwrap();
            e.write_all(b"a small body").unwrap();
            e.finish().unwrap()
        };
        assert_eq!(
            decompress(Encoding::Zstd, &frame(27), 4 << 20),
            Err(DecompressError::Corrupt)
        );
        assert_eq!(
            decompress(Encoding::Zstd, &frame(23), 4 << 20).unwrap(),
            &b"a small body"[..]
        );
        // A larger limit allows a larger window, up to libzstd's default.
        assert_eq!(
            decompress(Encoding::Zstd, &frame(27), 1 << 30).unwrap(),
            &b"a small body"[..]
        );
        assert_eq!(zstd_window_log(0), 23);
        assert_eq!(zstd_window_log(4 << 20), 23);
        assert_eq!(zstd_window_log((16 << 20) + 1), 25);
        assert_eq!(zstd_window_log(usize::MAX), 27);
    }

    /// The output buffer never grows past what the caller charged (`max_len + 1`), for a body
    /// of exactly `max_len + 1` bytes and for one just over a power of two, where doubling
    /// would reach twice the size.
    #[test]
    fn output_capacity_stays_within_the_limit() {
        let body = |len: usize| -> Vec<u8> { (0..len).map(|i| (i % 251) as u8).collect() };
        let cases = [
            (1 << 16, (1 << 16) + 1),
            (100_000, (1 << 16) + 1),
            ((1 << 17) - 1, 1 << 17),
            (1000, 1001),
            (10, 11),
            (0, 1),
        ];
        for enc in [Encoding::Gzip, Encoding::Zstd] {
            for (max_len, len) in cases {
                let plain = body(len);
                let c = compress(enc, &[Bytes::from(plain.clone())]);
                let out = match enc {
                    Encoding::Gzip => read_at_most(
                        flate2::read::MultiGzDecoder::new(&c[..]),
                        c.len(),
                        max_len + 1,
                    ),
                    _ => read_at_most(
                        zstd::stream::read::Decoder::new(&c[..]).unwrap(),
                        c.len(),
                        max_len + 1,
                    ),
                }
                .unwrap();
                assert_eq!(out.len(), len.min(max_len + 1), "{enc:?} {max_len} {len}");
                assert_eq!(out[..], plain[..out.len()], "{enc:?} {max_len} {len}");
                assert!(
                    out.capacity() <= max_len + 1,
                    "{enc:?}: capacity {} for max_len {max_len}, body {len}",
                    out.capacity()
                );
                let whole = decompress(enc, &c, max_len);
                if len > max_len {
                    assert_eq!(whole, Err(DecompressError::TooLarge { max_len }));
                } else {
                    assert_eq!(whole.unwrap(), plain);
                }
            }
        }
    }

    #[test]
    fn bombs_fail_fast() {
        // 100 MB of zeros, limit 4 MiB.
        let zeros = Bytes::from(vec![0u8; 100_000_000]);
        for enc in [Encoding::Gzip, Encoding::Zstd] {
            let bomb = compress(enc, std::slice::from_ref(&zeros));
            assert!(bomb.len() < 1_000_000, "{enc:?} {}", bomb.len());
            let t = Instant::now();
            assert_eq!(
                decompress(enc, &bomb, 4 << 20),
                Err(DecompressError::TooLarge { max_len: 4 << 20 })
            );
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{enc:?} took {:?}",
                t.elapsed()
            );
        }
    }
}
