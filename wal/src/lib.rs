//! shardtel's write-ahead log: one append-only segment log per core and purpose (the ingest log
//! of received requests, and one persistent queue per exporter), written through glommio's
//! DMA (O_DIRECT) file API on io_uring, so nothing on the write path blocks the reactor.
//!
//! Main types:
//! - [`Wal`]: opened (and recovered) per core with [`Wal::open`]. [`Wal::append`] reserves an
//!   LSN and never waits; [`Append::durable`] resolves when the frame's **group commit** is
//!   written and `fdatasync`ed. A writer task commits frames that arrived within
//!   `group_commit_interval` (or once `group_commit_bytes` wait) together.
//! - [`WalReader`]: frames in LSN order from a position, up to what is durable; a consumer
//!   calls [`Wal::checkpoint`] with the first LSN it has not finished, and segments holding
//!   only consumed frames are deleted (unlinked by a background task).
//! - [`WalError`]: full ([`WalError::Full`], when retained bytes would pass `max_bytes`), disk
//!   errors with their errno ([`WalError::is_out_of_space`]), corruption. Everything but
//!   [`WalError::TooLarge`] is retryable: the caller refuses its client with a retryable error.
//!
//! # On disk
//!
//! A log is a directory of segment files `NNNNNNNNNNNNNNNNNNNN.seg` (20 digits: the LSN of the
//! segment's first frame) and a `checkpoint` file. Segments are pre-allocated to
//! `segment_bytes` and hold frames back to back (see [`frame`] for the 17-byte header: length,
//! CRC32C over type + LSN + payload, type, LSN). LSNs grow by one per frame within a segment; a
//! failed commit leaves a gap between segments. O_DIRECT writes whole blocks (the device's
//! logical block size): a commit writes the last partial block again, with the same leading
//! bytes, followed by the new frames and zeros.
//!
//! Directories the log creates are `0700` and its files `0600` ([`permissions`]).
//!
//! The checkpoint file holds the first unconsumed LSN in one of two 4 KiB slots, alternated and
//! checksummed, written and synced every `checkpoint_interval` when it moved.
//!
//! # Recovery
//!
//! [`Wal::open`] scans every segment. A segment ends at the first zero-filled header, the first
//! frame with a bad checksum, an implausible length or an unexpected LSN. In the last segment
//! that is a torn or unfinished write: the file is cut there (`ftruncate`) and the frame is
//! counted in [`Recovery::truncated_frames`], never fatal. In an earlier segment (corruption of
//! data that was once synced) the rest of that segment is skipped, counted the same way, and the
//! scan goes on with the next segment: later acknowledged frames are not given up for one bad
//! frame. New frames always go to a new segment.
//!
//! Layers: depends on glommio (files, timers, tasks), `bytes`, `crc32c`, `hdrhistogram` (fsync
//! latency) and `log`; used by `shardtel-sinks` (persistent export queues) and
//! `shardtel-engine` (the ingest log). It knows nothing of OTLP.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use shardtel_wal::{Wal, WalOptions};
//!
//! glommio::LocalExecutorBuilder::default()
//!     .spawn(|| async {
//!         let dir = std::path::Path::new("/var/lib/shardtel/ingest/core0");
//!         let wal = Wal::open(dir, WalOptions::default()).await.unwrap();
//!         let append = wal.append(1, vec![Bytes::from_static(b"request")]).unwrap();
//!         let lsn = append.durable().await.unwrap(); // now on disk
//!         let mut reader = wal.reader(wal.checkpoint_lsn());
//!         while let Some(frame) = reader.next().await.unwrap() {
//!             assert!(frame.lsn <= lsn);
//!             wal.checkpoint(frame.lsn + 1); // consumed
//!         }
//!         wal.close().await;
//!     })
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod checkpoint;
mod error;
pub mod frame;
mod log;
pub mod notify;
pub mod permissions;
mod reader;

pub use error::WalError;
pub use log::{Append, Recovery, Wal, WalOptions, WalStats, FSYNC_QUANTILES};
pub use reader::{Frame, WalReader};
