//! [`WalReader`]: frames in LSN order from a starting LSN, read from the segment files (or from
//! the cache of recent commits) up to what is durable.

use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use crate::error::WalError;
use crate::frame::{self, Header, HEADER_LEN};
use crate::log::{Inner, READ_CHUNK};

/// A frame read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its log sequence number.
    pub lsn: u64,
    /// Its type.
    pub kind: u8,
    /// Its payload (a slice of a read buffer of up to about 1 MiB).
    pub payload: Bytes,
}

/// Reads durable frames in LSN order. Frames below the starting LSN are skipped; a segment
/// deleted under the reader (dropped as the oldest) is skipped too: the reader goes on at the
/// oldest segment left.
pub struct WalReader {
    inner: Rc<Inner>,
    next: u64,
    segment: Option<u64>,
    offset: u64,
    file: Option<(u64, Rc<DmaFile>)>,
    chunk: Bytes,
    chunk_segment: u64,
    chunk_base: u64,
    corrupt_frames: u64,
}

impl WalReader {
    pub(crate) fn new(inner: Rc<Inner>, from: u64) -> Self {
        WalReader {
            inner,
            next: from,
            segment: None,
            offset: 0,
            file: None,
            chunk: Bytes::new(),
            chunk_segment: u64::MAX,
            chunk_base: 0,
            corrupt_frames: 0,
        }
    }

    /// The LSN the next frame will have at least.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Frames skipped because they failed their checksum when read back (each skips the rest
    /// of its segment).
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt_frames
    }

    /// The next durable frame, or `None` when the reader is at the durable end.
    pub async fn next(&mut self) -> Result<Option<Frame>, WalError> {
        loop {
            let (first, end, path) = {
                let segments = self.inner.segments.borrow();
                let at = self
                    .segment
                    .and_then(|f| segments.iter().position(|s| s.first_lsn == f));
                let at = match at {
                    Some(i) => i,
                    None => {
                        // Not placed yet, or the segment is gone: the first one that may hold
                        // `next`.
                        let Some(i) = segments
                            .iter()
                            .position(|s| s.end_lsn > self.next || !s.sealed)
                        else {
                            return Ok(None);
                        };
                        self.segment = Some(segments[i].first_lsn);
                        self.offset = 0;
                        i
                    }
                };
                let s = &segments[at];
                let done = self.offset >= s.durable_end || (s.sealed && s.end_lsn <= self.next);
                if done {
                    if s.sealed || at + 1 < segments.len() {
                        self.segment = segments.get(at + 1).map(|n| n.first_lsn);
                        self.offset = 0;
                        if self.segment.is_none() {
                            return Ok(None);
                        }
                        continue;
                    }
                    return Ok(None);
                }
                (s.first_lsn, s.durable_end, s.path.clone())
            };
            let head = self.bytes(first, &path, HEADER_LEN, end).await?;
            let header = head
                .get(..HEADER_LEN)
                .and_then(|h| Header::parse(h.try_into().expect("17 bytes")))
                .filter(|h| self.offset + h.frame_len() as u64 <= end);
            let Some(header) = header else {
                self.skip_corrupt(&path);
                return Err(WalError::Corrupt {
                    path: path.display().to_string(),
                    offset: self.offset,
                });
            };
            let whole = self.bytes(first, &path, header.frame_len(), end).await?;
            let Ok((h, range)) = frame::decode(&whole) else {
                self.skip_corrupt(&path);
                return Err(WalError::Corrupt {
                    path: path.display().to_string(),
                    offset: self.offset,
                });
            };
            self.offset += h.frame_len() as u64;
            if h.lsn < self.next {
                continue;
            }
            self.next = h.lsn + 1;
            return Ok(Some(Frame {
                lsn: h.lsn,
                kind: h.kind,
                payload: whole.slice(range),
            }));
        }
    }

    /// Like [`WalReader::next`], but waits for a frame to become durable; `None` once the log
    /// is closed.
    pub async fn next_wait(&mut self) -> Result<Option<Frame>, WalError> {
        let inner = self.inner.clone();
        loop {
            let durable = inner.durable.notified();
            if let Some(frame) = self.next().await? {
                return Ok(Some(frame));
            }
            if inner.closed.get() {
                return Ok(None);
            }
            durable.await;
        }
    }

    fn skip_corrupt(&mut self, path: &std::path::Path) {
        self.corrupt_frames += 1;
        log::error!(
            "{}: corrupt frame in {} at offset {}; skipping the rest of the segment",
            self.inner.opts.name,
            path.display(),
            self.offset
        );
        self.offset = u64::MAX;
    }

    /// `len` bytes (fewer only at `end`) of segment `first` from the reader's offset.
    async fn bytes(
        &mut self,
        first: u64,
        path: &std::path::Path,
        len: usize,
        end: u64,
    ) -> Result<Bytes, WalError> {
        let offset = self.offset;
        let chunk_end = self.chunk_base + self.chunk.len() as u64;
        if self.chunk_segment == first
            && offset >= self.chunk_base
            && offset + len as u64 <= chunk_end
        {
            let start = (offset - self.chunk_base) as usize;
            return Ok(self.chunk.slice(start..start + len));
        }
        let size = (len.max(READ_CHUNK) as u64).min(end - offset) as usize;
        let cached = {
            let cache = self.inner.cache.borrow();
            cache
                .iter()
                .find(|c| {
                    c.segment == first
                        && offset >= c.base
                        && offset + len as u64 <= c.base + c.len as u64
                })
                .map(|c| {
                    let start = (offset - c.base) as usize;
                    let stop = (start + size).min(c.len);
                    Bytes::copy_from_slice(&c.buf.as_bytes()[start..stop])
                })
        };
        let chunk = match cached {
            Some(bytes) => bytes,
            None => {
                let file = match &self.file {
                    Some((f, file)) if *f == first => file.clone(),
                    _ => {
                        let file = OpenOptions::new()
                            .read(true)
                            .dma_open(path)
                            .await
                            .map_err(|e| WalError::io("open", path, e.into()))?;
                        let file = Rc::new(file);
                        self.file = Some((first, file.clone()));
                        file
                    }
                };
                let read = file
                    .read_at(offset, size)
                    .await
                    .map_err(|e| WalError::io("read", path, e.into()))?;
                Bytes::copy_from_slice(&read)
            }
        };
        self.chunk = chunk;
        self.chunk_segment = first;
        self.chunk_base = offset;
        Ok(self.chunk.slice(..len.min(self.chunk.len())))
    }
}
