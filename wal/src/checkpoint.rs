//! The checkpoint file: the first LSN a log's consumer has not consumed yet, stored durably in
//! one of two 4 KiB slots (alternating, each with a sequence number and a CRC32C), so a torn
//! write of one slot leaves the other intact.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::error::WalError;

/// Name of the checkpoint file inside a log directory.
pub const FILE_NAME: &str = "checkpoint";
const SLOT: u64 = 4096;
const MAGIC: u32 = 0x4B43_5753; // "SWCK"

/// One slot: magic, sequence, lsn, crc over the first 20 bytes.
fn encode(seq: u64, lsn: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..20].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let b = bytes.get(0..24)?;
    let magic = u32::from_le_bytes(b[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(b[20..24].try_into().ok()?);
    if magic != MAGIC || crc != crc32c::crc32c(&b[0..20]) {
        return None;
    }
    Some((
        u64::from_le_bytes(b[4..12].try_into().ok()?),
        u64::from_le_bytes(b[12..20].try_into().ok()?),
    ))
}

/// The open checkpoint file of one log.
pub(crate) struct CheckpointFile {
    file: Rc<DmaFile>,
    path: PathBuf,
    seq: u64,
}

impl CheckpointFile {
    /// Opens (creating if needed) the file in `dir`; returns it and the stored LSN (0 if none).
    pub(crate) async fn open(dir: &Path) -> Result<(CheckpointFile, u64), WalError> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(crate::permissions::FILE_MODE)
            .dma_open(&path)
            .await
            .map_err(|e| WalError::io("open", &path, e.into()))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| WalError::io("stat", &path, e.into()))?;
        let mut best: Option<(u64, u64)> = None;
        if size >= 2 * SLOT {
            for slot in 0..2 {
                let read = file
                    .read_at_aligned(slot * SLOT, SLOT as usize)
                    .await
                    .map_err(|e| WalError::io("read", &path, e.into()))?;
                if let Some((seq, lsn)) = decode(&read) {
                    if best.is_none_or(|(s, _)| seq > s) {
                        best = Some((seq, lsn));
                    }
                }
            }
        } else {
            file.pre_allocate(2 * SLOT, false)
                .await
                .map_err(|e| WalError::io("allocate", &path, e.into()))?;
        }
        let (seq, lsn) = best.unwrap_or((0, 0));
        Ok((
            CheckpointFile {
                file: Rc::new(file),
                path,
                seq,
            },
            lsn,
        ))
    }

    /// Stores `lsn` durably (write + fdatasync of the other slot).
    pub(crate) async fn store(&mut self, lsn: u64) -> Result<(), WalError> {
        let seq = self.seq + 1;
        let mut buf = self.file.alloc_dma_buffer(SLOT as usize);
        let bytes = buf.as_bytes_mut();
        bytes.fill(0);
        bytes[..24].copy_from_slice(&encode(seq, lsn));
        let written = self
            .file
            .write_at(buf, (seq % 2) * SLOT)
            .await
            .map_err(|e| WalError::io("write", &self.path, e.into()))?;
        if written < SLOT as usize {
            return Err(WalError::io(
                "write",
                &self.path,
                std::io::Error::from(std::io::ErrorKind::WriteZero),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| WalError::io("sync", &self.path, e.into()))?;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trip() {
        let slot = encode(7, 1234);
        assert_eq!(decode(&slot), Some((7, 1234)));
        let mut bad = slot;
        bad[13] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&[0u8; 24]), None);
    }
}
