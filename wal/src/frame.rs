//! The on-disk frame: a 17-byte header and a payload, checked by CRC32C.
//!
//! ```text
//! offset  size  field
//!      0     4  len      payload length, u32 little-endian
//!      4     4  crc      CRC32C over kind, lsn and payload, u32 little-endian
//!      8     1  kind     frame type, 1..=255 (0 is never written: a zero-filled tail is no frame)
//!      9     8  lsn      log sequence number, u64 little-endian
//!     17   len  payload
//! ```
//!
//! Frames follow each other without padding inside a segment file.

use bytes::Bytes;

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 17;

/// Largest payload a frame may carry (1 GiB). A larger length in a header is corruption.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// The encoded header of a frame whose payload is the concatenation of `payload`.
pub fn encode_header(kind: u8, lsn: u64, payload: &[Bytes]) -> [u8; HEADER_LEN] {
    debug_assert!(kind != 0, "frame kind 0 is reserved");
    let len: usize = payload.iter().map(Bytes::len).sum();
    debug_assert!(len <= MAX_PAYLOAD);
    let mut header = [0u8; HEADER_LEN];
    header[8] = kind;
    header[9..17].copy_from_slice(&lsn.to_le_bytes());
    let mut crc = crc32c::crc32c(&header[8..17]);
    for chunk in payload {
        crc = crc32c::crc32c_append(crc, chunk);
    }
    header[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Encodes a whole frame into `out` (header then payload).
pub fn encode(kind: u8, lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let chunk = Bytes::copy_from_slice(payload);
    out.extend_from_slice(&encode_header(kind, lsn, std::slice::from_ref(&chunk)));
    out.extend_from_slice(payload);
}

/// A header read back from disk, not yet checked against its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: usize,
    /// Stored checksum.
    pub crc: u32,
    /// Frame type.
    pub kind: u8,
    /// Log sequence number.
    pub lsn: u64,
}

impl Header {
    /// Parses a header; `None` for a zero kind (zero-filled space: no frame here) or a length
    /// over [`MAX_PAYLOAD`].
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Option<Header> {
        let len = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
        let kind = bytes[8];
        let lsn = u64::from_le_bytes(bytes[9..17].try_into().ok()?);
        (kind != 0 && len <= MAX_PAYLOAD).then_some(Header {
            len,
            crc,
            kind,
            lsn,
        })
    }

    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len
    }

    /// True when `payload` is this header's payload.
    pub fn checks(&self, payload: &[u8]) -> bool {
        let mut tail = [0u8; 9];
        tail[0] = self.kind;
        tail[1..9].copy_from_slice(&self.lsn.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&tail), payload);
        payload.len() == self.len && crc == self.crc
    }
}

/// Why bytes at some position are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Zero-filled, or fewer bytes than a header: the written part ends here.
    End,
    /// A header that is not plausible, a frame running past the end, or a checksum mismatch.
    Corrupt,
}

/// Decodes the frame at the start of `buf`: its header and payload range, or why there is none.
/// `buf` must hold the whole frame (the caller reads more when `Err(Invalid::End)` is due to a
/// short buffer and more bytes exist).
pub fn decode(buf: &[u8]) -> Result<(Header, std::ops::Range<usize>), Invalid> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Err(if buf.iter().all(|b| *b == 0) {
            Invalid::End
        } else {
            Invalid::Corrupt
        });
    };
    let head: &[u8; HEADER_LEN] = head.try_into().map_err(|_| Invalid::Corrupt)?;
    let Some(header) = Header::parse(head) else {
        return Err(if head.iter().all(|b| *b == 0) {
            Invalid::End
        } else {
            Invalid::Corrupt
        });
    };
    let range = HEADER_LEN..header.frame_len();
    match buf.get(range.clone()) {
        Some(payload) if header.checks(payload) => Ok((header, range)),
        _ => Err(Invalid::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut out = Vec::new();
        encode(3, 42, b"hello", &mut out);
        assert_eq!(out.len(), HEADER_LEN + 5);
        let (h, range) = decode(&out).unwrap();
        assert_eq!((h.kind, h.lsn, h.len), (3, 42, 5));
        assert_eq!(&out[range], b"hello");
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
        assert_eq!(decode(&[0u8; 40]), Err(Invalid::End));
        assert_eq!(decode(&[0u8; 5]), Err(Invalid::End));
        assert_eq!(decode(&out[..10]), Err(Invalid::Corrupt));
        assert_eq!(decode(&out[..out.len() - 1]), Err(Invalid::Corrupt));
    }

    #[test]
    fn chunked_header_matches_contiguous() {
        let chunks = [Bytes::from_static(b"he"), Bytes::from_static(b"llo")];
        let mut out = Vec::new();
        encode(1, 7, b"hello", &mut out);
        assert_eq!(&encode_header(1, 7, &chunks)[..], &out[..HEADER_LEN]);
    }
}
