//! [`Wal`]: one segment log — recovery on open, appends with group commit by a writer task,
//! checkpoints, segment deletion, bounds and statistics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::task::JoinHandle;
use hdrhistogram::Histogram;

use crate::checkpoint::CheckpointFile;
use crate::error::WalError;
use crate::frame::{self, Header, HEADER_LEN, MAX_PAYLOAD};
use crate::notify::Notify;

/// Disk errors are logged at most this often per log (with a count of those suppressed).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes read at once when scanning or reading segments.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// Settings of one log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Roll over to a new segment file once this many bytes are written (a frame larger than
    /// this gets a segment of its own). Segment files are pre-allocated to this size.
    pub segment_bytes: u64,
    /// Bound on retained bytes: segment bytes on disk plus frames waiting to be written.
    pub max_bytes: u64,
    /// A group commit starts this long after the first frame waiting for it...
    pub group_commit_interval: Duration,
    /// ...or as soon as this many bytes wait, whichever comes first.
    pub group_commit_bytes: usize,
    /// How often a moved checkpoint is written to disk.
    pub checkpoint_interval: Duration,
    /// Recent commits kept in memory (bytes) so a reader close behind the writer reads them
    /// without disk I/O. 0 turns the cache off.
    pub cache_bytes: usize,
    /// Name used in log messages, e.g. "ingest log (core 0)".
    pub name: String,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            group_commit_interval: Duration::from_millis(2),
            group_commit_bytes: 1 << 20,
            checkpoint_interval: Duration::from_millis(500),
            cache_bytes: 0,
            name: "wal".into(),
        }
    }
}

/// What recovery found when the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files found.
    pub segments: u64,
    /// Valid frames at or after the checkpoint: what a reader from the checkpoint will see.
    pub recovered_frames: u64,
    /// Torn or corrupt frames cut off (one per place a segment was cut).
    pub truncated_frames: u64,
    /// Bytes cut off behind them (non-zero bytes after the last valid frame of each segment).
    pub truncated_bytes: u64,
    /// The persisted checkpoint.
    pub checkpoint: u64,
    /// The next LSN to be assigned.
    pub next_lsn: u64,
}

/// A snapshot of a log's counters and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Segment files retained.
    pub segments: u64,
    /// Bytes of frames in retained segments.
    pub retained_bytes: u64,
    /// Bytes appended but not yet durable.
    pub pending_bytes: u64,
    /// Frames retained and not yet consumed (`next_lsn - checkpoint`, gaps included).
    pub unconsumed_frames: u64,
    /// The next LSN to be assigned.
    pub next_lsn: u64,
    /// The first LSN not consumed.
    pub checkpoint: u64,
    /// Frames appended since open.
    pub appended_frames: u64,
    /// Their bytes (headers included).
    pub appended_bytes: u64,
    /// Group commits that succeeded.
    pub commits: u64,
    /// Appends refused because the log was full.
    pub full_refusals: u64,
    /// Group commits that failed (each failed all its frames).
    pub failed_commits: u64,
    /// Frames dropped with [`Wal::drop_oldest_segment`].
    pub dropped_frames: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Recovery at open.
    pub recovery: Recovery,
    /// Milliseconds since the oldest retained segment holding unconsumed frames got its first
    /// frame (0 when everything is consumed). Segment granularity.
    pub oldest_unconsumed_age_ms: u64,
    /// fdatasync latency of group commits, microseconds, at [`FSYNC_QUANTILES`].
    pub fsync_quantiles_us: [u64; 5],
    /// Sum of fdatasync latencies, microseconds.
    pub fsync_sum_us: u64,
    /// Number of fdatasync calls measured.
    pub fsync_count: u64,
}

/// The quantiles of [`WalStats::fsync_quantiles_us`]: p50, p90, p99, p99.9 and the maximum.
pub const FSYNC_QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

/// One segment file as the log knows it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    /// Bytes of durable frames from the start of the file.
    pub(crate) durable_end: u64,
    /// The LSN after the last durable frame (`first_lsn` when empty).
    pub(crate) end_lsn: u64,
    /// No frame will be added: readers move on to the next segment at `durable_end`.
    pub(crate) sealed: bool,
    /// When its first frame was appended (recovered segments: when recovered).
    pub(crate) created: Instant,
}

/// A commit's buffer, kept for readers (see [`WalOptions::cache_bytes`]).
pub(crate) struct CachedCommit {
    pub(crate) segment: u64,
    /// File offset of `buf[0]`.
    pub(crate) base: u64,
    /// Valid bytes in `buf`.
    pub(crate) len: usize,
    pub(crate) buf: Rc<DmaBuffer>,
}

struct PendingFrame {
    header: [u8; HEADER_LEN],
    payload: Vec<Bytes>,
    len: usize,
    lsn: u64,
}

/// The outcome of one group commit, shared by every frame in it.
#[derive(Default)]
struct CommitSlot {
    result: RefCell<Option<Result<(), WalError>>>,
    done: Notify,
}

impl CommitSlot {
    fn complete(&self, result: Result<(), WalError>) {
        *self.result.borrow_mut() = Some(result);
        self.done.notify_all();
    }
}

struct Pending {
    frames: Vec<PendingFrame>,
    bytes: u64,
    since: Option<Instant>,
    slot: Rc<CommitSlot>,
}

#[derive(Default)]
struct Counters {
    appended_frames: u64,
    appended_bytes: u64,
    commits: u64,
    full_refusals: u64,
    failed_commits: u64,
    dropped_frames: u64,
    dropped_bytes: u64,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    pub(crate) segments: RefCell<VecDeque<Segment>>,
    pub(crate) cache: RefCell<VecDeque<CachedCommit>>,
    cache_bytes: Cell<usize>,
    next_lsn: Cell<u64>,
    retained_bytes: Cell<u64>,
    committing_bytes: Cell<u64>,
    checkpoint: Cell<u64>,
    pending: RefCell<Pending>,
    flush_requested: Cell<bool>,
    /// The next commit starts a new segment.
    roll: Cell<bool>,
    pub(crate) closed: Cell<bool>,
    discard: Cell<bool>,
    /// Frames were appended: the writer looks.
    writer_wake: Notify,
    /// A commit finished or the log closed: readers look.
    pub(crate) durable: Notify,
    /// The checkpoint moved: the housekeeper looks.
    housekeeping: Notify,
    /// Forgotten segments and their end LSNs: deleted once the stored checkpoint reaches them,
    /// so that recovery never finds fewer frames than the stored checkpoint says.
    to_delete: RefCell<Vec<(PathBuf, u64)>>,
    checkpoint_file: RefCell<Option<CheckpointFile>>,
    stored_checkpoint: Cell<u64>,
    counters: RefCell<Counters>,
    recovery: Recovery,
    fsync: RefCell<Histogram<u64>>,
    last_error_log: Cell<Option<Instant>>,
    suppressed_errors: Cell<u64>,
}

/// A per-core segment log. `!Send`: it lives on the glommio executor that opened it, where its
/// writer and housekeeping tasks run.
///
/// Dropping it stops its tasks after the frames already appended are committed; use
/// [`Wal::close`] to wait for that and persist the checkpoint.
pub struct Wal {
    inner: Rc<Inner>,
    writer: RefCell<Option<JoinHandle<()>>>,
    housekeeper: RefCell<Option<JoinHandle<()>>>,
}

/// An appended frame: its LSN, and [`Append::durable`] to wait for its group commit.
#[must_use = "a frame is acknowledged only once `durable` resolves"]
pub struct Append {
    lsn: u64,
    slot: Rc<CommitSlot>,
}

impl Append {
    /// The frame's log sequence number.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Resolves once the frame's group commit is on disk (written and fdatasync'ed), or
    /// failed (then the frame is not in the log).
    pub async fn durable(self) -> Result<u64, WalError> {
        loop {
            let done = self.slot.done.notified();
            if let Some(result) = self.slot.result.borrow().as_ref() {
                return result.clone().map(|()| self.lsn);
            }
            done.await;
        }
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and recovers it: segments are scanned, a
    /// torn or corrupt tail is cut off and counted (never fatal), segments wholly below the
    /// checkpoint are deleted. New frames go to a new segment. Spawns the writer and
    /// housekeeping tasks on the current executor.
    ///
    /// Runs at start-up: it lists and creates directories with `std::fs` (metadata only);
    /// segment contents are read through glommio.
    pub async fn open(dir: &Path, opts: WalOptions) -> Result<Wal, WalError> {
        crate::permissions::create_dir_all(dir).map_err(|e| WalError::io("create", dir, e))?;
        probe_device(dir).await?;
        let (checkpoint_file, stored) = CheckpointFile::open(dir).await?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| WalError::io("list", dir, e))?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let first = name.to_str()?.strip_suffix(".seg")?.parse::<u64>().ok()?;
                Some((first, entry.path()))
            })
            .collect();
        names.sort();
        let mut recovery = Recovery {
            segments: names.len() as u64,
            checkpoint: stored,
            ..Recovery::default()
        };
        let mut segments = VecDeque::new();
        let count = names.len();
        let now = Instant::now();
        for (i, (first_lsn, path)) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let scan = scan_segment(&path, first_lsn, stored).await?;
            recovery.recovered_frames += scan.unconsumed_frames;
            if let Some(cut) = &scan.cut {
                recovery.truncated_frames += 1;
                recovery.truncated_bytes += cut.nonzero_bytes;
                log::warn!(
                    "{}: {} at offset {} of {}; {}",
                    opts.name,
                    cut.reason,
                    scan.valid_end,
                    path.display(),
                    if last {
                        "the tail was truncated there"
                    } else {
                        "skipping to the next segment"
                    }
                );
            }
            if scan.valid_end == 0 || scan.end_lsn <= stored {
                // Empty, or wholly consumed.
                std::fs::remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
                continue;
            }
            if scan.cut.is_some() || scan.file_len != scan.valid_end {
                // Drop what follows the valid frames (torn tail, zeros of pre-allocation) so
                // that no stale bytes are ever read as frames again.
                let file = OpenOptions::new()
                    .write(true)
                    .dma_open(&path)
                    .await
                    .map_err(|e| WalError::io("open", &path, e.into()))?;
                file.truncate(scan.valid_end)
                    .await
                    .map_err(|e| WalError::io("truncate", &path, e.into()))?;
                file.fdatasync()
                    .await
                    .map_err(|e| WalError::io("sync", &path, e.into()))?;
                let _ = file.close().await;
            }
            segments.push_back(Segment {
                first_lsn,
                path,
                durable_end: scan.valid_end,
                end_lsn: scan.end_lsn,
                sealed: true,
                created: now,
            });
        }
        // The highest end, not the last segment's: segments whose LSNs overlap (damaged names or
        // contents) must not make a new frame reuse an LSN a recovered frame has.
        let next_lsn = segments
            .iter()
            .map(|s: &Segment| s.end_lsn)
            .max()
            .unwrap_or(0)
            .max(stored);
        recovery.next_lsn = next_lsn;
        let retained = segments.iter().map(|s| s.durable_end).sum();
        if recovery.truncated_frames > 0 || recovery.recovered_frames > 0 {
            log::info!(
                "{}: recovered {} frames after checkpoint {} ({} segments, {} torn or corrupt frames cut off)",
                opts.name,
                recovery.recovered_frames,
                stored,
                segments.len(),
                recovery.truncated_frames
            );
        }
        let inner = Rc::new(Inner {
            dir: dir.to_path_buf(),
            segments: RefCell::new(segments),
            cache: RefCell::new(VecDeque::new()),
            cache_bytes: Cell::new(0),
            next_lsn: Cell::new(next_lsn),
            retained_bytes: Cell::new(retained),
            committing_bytes: Cell::new(0),
            checkpoint: Cell::new(stored),
            pending: RefCell::new(Pending {
                frames: Vec::new(),
                bytes: 0,
                since: None,
                slot: Rc::default(),
            }),
            flush_requested: Cell::new(false),
            roll: Cell::new(false),
            closed: Cell::new(false),
            discard: Cell::new(false),
            writer_wake: Notify::default(),
            durable: Notify::default(),
            housekeeping: Notify::default(),
            to_delete: RefCell::new(Vec::new()),
            checkpoint_file: RefCell::new(Some(checkpoint_file)),
            stored_checkpoint: Cell::new(stored),
            counters: RefCell::new(Counters::default()),
            recovery,
            fsync: RefCell::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ),
            last_error_log: Cell::new(None),
            suppressed_errors: Cell::new(0),
            opts,
        });
        let writer = glommio::spawn_local(writer_task(inner.clone())).detach();
        let housekeeper = glommio::spawn_local(housekeeper_task(inner.clone())).detach();
        Ok(Wal {
            inner,
            writer: RefCell::new(Some(writer)),
            housekeeper: RefCell::new(Some(housekeeper)),
        })
    }

    /// What recovery found.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a frame of `kind` (1..=255) whose payload is the concatenation of `payload`.
    /// Never waits: the frame joins the next group commit, and [`Append::durable`] resolves
    /// when that commit is on disk. The payload's `Bytes` are held until then.
    ///
    /// Refuses with [`WalError::Full`] when retained plus waiting bytes would pass
    /// `max_bytes` (a frame larger than that is taken only when everything was consumed), and
    /// with [`WalError::Closed`] after close.
    pub fn append(&self, kind: u8, payload: Vec<Bytes>) -> Result<Append, WalError> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(WalError::Closed);
        }
        let len: usize = payload.iter().map(Bytes::len).sum();
        if len > MAX_PAYLOAD {
            return Err(WalError::TooLarge {
                len,
                max: MAX_PAYLOAD,
            });
        }
        let frame_len = (HEADER_LEN + len) as u64;
        if !inner.has_room(len) {
            inner.counters.borrow_mut().full_refusals += 1;
            return Err(WalError::Full {
                retained: inner.used_bytes(),
                max: inner.opts.max_bytes,
            });
        }
        let lsn = inner.next_lsn.get();
        inner.next_lsn.set(lsn + 1);
        let header = frame::encode_header(kind.max(1), lsn, &payload);
        let mut pending = inner.pending.borrow_mut();
        let was_empty = pending.frames.is_empty();
        pending.frames.push(PendingFrame {
            header,
            payload,
            len,
            lsn,
        });
        pending.bytes += frame_len;
        if was_empty {
            pending.since = Some(Instant::now());
        }
        let slot = pending.slot.clone();
        let wake = was_empty || pending.bytes >= inner.opts.group_commit_bytes as u64;
        drop(pending);
        {
            let mut c = inner.counters.borrow_mut();
            c.appended_frames += 1;
            c.appended_bytes += frame_len;
        }
        if wake {
            inner.writer_wake.notify_all();
        }
        Ok(Append { lsn, slot })
    }

    /// Commits everything appended so far now (without waiting for the group commit window)
    /// and waits for it.
    pub async fn flush(&self) -> Result<(), WalError> {
        let slot = {
            let pending = self.inner.pending.borrow();
            if pending.frames.is_empty() {
                return Ok(());
            }
            pending.slot.clone()
        };
        self.inner.flush_requested.set(true);
        self.inner.writer_wake.notify_all();
        Append { lsn: 0, slot }.durable().await.map(|_| ())
    }

    /// The next LSN to be assigned.
    pub fn next_lsn(&self) -> u64 {
        self.inner.next_lsn.get()
    }

    /// The first LSN not consumed (see [`Wal::checkpoint`]).
    pub fn checkpoint_lsn(&self) -> u64 {
        self.inner.checkpoint.get()
    }

    /// Records that every frame below `lsn` was consumed (a lower value than before is
    /// ignored). Segments holding only consumed frames are forgotten at once and deleted in
    /// the background; the checkpoint is written to disk within `checkpoint_interval`.
    pub fn checkpoint(&self, lsn: u64) {
        self.inner.advance_checkpoint(lsn);
    }

    /// Writes the checkpoint to disk now and deletes consumed segments.
    pub async fn persist_checkpoint(&self) -> Result<(), WalError> {
        self.inner.store_checkpoint().await?;
        self.inner.delete_queued().await;
        Ok(())
    }

    /// Bytes retained on disk plus bytes waiting to be written.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_bytes()
    }

    /// True when a frame with a payload of `len` bytes would be accepted now.
    pub fn has_room(&self, len: usize) -> bool {
        self.inner.has_room(len)
    }

    /// Drops the oldest sealed segment, consumed or not, to make room
    /// (`overflow = "drop_oldest"`). Returns the unconsumed frames and the bytes dropped, or
    /// `None` when only the segment being written is left (it is sealed at the next commit, so
    /// a later call can drop it).
    pub fn drop_oldest_segment(&self) -> Option<(u64, u64)> {
        let inner = &*self.inner;
        let mut segments = inner.segments.borrow_mut();
        if !segments.front()?.sealed {
            drop(segments);
            inner.roll_requested();
            return None;
        }
        let seg = segments.pop_front()?;
        drop(segments);
        let frames = seg
            .end_lsn
            .saturating_sub(seg.first_lsn.max(inner.checkpoint.get()));
        inner
            .retained_bytes
            .set(inner.retained_bytes.get() - seg.durable_end);
        if inner.checkpoint.get() < seg.end_lsn {
            inner.checkpoint.set(seg.end_lsn);
        }
        {
            let mut c = inner.counters.borrow_mut();
            c.dropped_frames += frames;
            c.dropped_bytes += seg.durable_end;
        }
        inner.forget_cached(seg.first_lsn);
        inner.to_delete.borrow_mut().push((seg.path, seg.end_lsn));
        inner.housekeeping.notify_all();
        inner.durable.notify_all();
        Some((frames, seg.durable_end))
    }

    /// Counts `frames` frames of `bytes` bytes that the caller dropped instead of appending
    /// (reported with the frames [`Wal::drop_oldest_segment`] dropped).
    pub fn count_dropped(&self, frames: u64, bytes: u64) {
        let mut c = self.inner.counters.borrow_mut();
        c.dropped_frames += frames;
        c.dropped_bytes += bytes;
    }

    /// A reader from `from` (use [`Wal::checkpoint_lsn`] to resume where the consumer left).
    pub fn reader(&self, from: u64) -> crate::reader::WalReader {
        crate::reader::WalReader::new(self.inner.clone(), from)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WalStats {
        let inner = &*self.inner;
        let c = inner.counters.borrow();
        let segments = inner.segments.borrow();
        let checkpoint = inner.checkpoint.get();
        let oldest = segments
            .iter()
            .find(|s| s.end_lsn > checkpoint)
            .map_or(0, |s| s.created.elapsed().as_millis() as u64);
        let h = inner.fsync.borrow();
        let mut fsync_quantiles_us = [0; 5];
        if !h.is_empty() {
            for (q, out) in FSYNC_QUANTILES.iter().zip(fsync_quantiles_us.iter_mut()) {
                *out = h.value_at_quantile(*q);
            }
        }
        WalStats {
            segments: segments.len() as u64,
            retained_bytes: inner.retained_bytes.get(),
            pending_bytes: inner.pending.borrow().bytes + inner.committing_bytes.get(),
            unconsumed_frames: inner.next_lsn.get().saturating_sub(checkpoint),
            next_lsn: inner.next_lsn.get(),
            checkpoint,
            appended_frames: c.appended_frames,
            appended_bytes: c.appended_bytes,
            commits: c.commits,
            full_refusals: c.full_refusals,
            failed_commits: c.failed_commits,
            dropped_frames: c.dropped_frames,
            dropped_bytes: c.dropped_bytes,
            recovery: inner.recovery,
            oldest_unconsumed_age_ms: oldest,
            fsync_quantiles_us,
            fsync_sum_us: (h.mean() * h.len() as f64) as u64,
            fsync_count: h.len(),
        }
    }

    /// Commits what was appended, persists the checkpoint, deletes consumed segments and stops
    /// the log's tasks. Appends after this fail with [`WalError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.set(true);
        self.inner.writer_wake.notify_all();
        self.inner.housekeeping.notify_all();
        let writer = self.writer.borrow_mut().take();
        if let Some(w) = writer {
            w.await;
        }
        let housekeeper = self.housekeeper.borrow_mut().take();
        if let Some(h) = housekeeper {
            h.await;
        }
    }

    /// Simulates a crash for tests: frames not yet committed are discarded (their appends
    /// fail), a commit in progress finishes, nothing else is written (no checkpoint).
    #[doc(hidden)]
    pub async fn crash(self) {
        self.inner.discard.set(true);
        self.close().await;
    }

    /// The segment files and their durable ends (for tests that damage the tail).
    #[doc(hidden)]
    pub fn durable_layout(&self) -> Vec<(PathBuf, u64)> {
        self.inner
            .segments
            .borrow()
            .iter()
            .map(|s| (s.path.clone(), s.durable_end))
            .collect()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.inner.closed.set(true);
        self.inner.writer_wake.notify_all();
        self.inner.housekeeping.notify_all();
        self.inner.durable.notify_all();
    }
}

impl Inner {
    fn used_bytes(&self) -> u64 {
        self.retained_bytes.get() + self.pending.borrow().bytes + self.committing_bytes.get()
    }

    /// True when a frame with a payload of `len` bytes fits under `max_bytes` now; a frame
    /// larger than the whole bound is let into an otherwise empty log (nothing pending,
    /// everything consumed) so it cannot block the log forever.
    fn has_room(&self, len: usize) -> bool {
        let frame_len = (HEADER_LEN + len) as u64;
        let used = self.used_bytes();
        used + frame_len <= self.opts.max_bytes
            || (self.checkpoint.get() >= self.next_lsn.get()
                && used == self.retained_bytes.get()
                && frame_len > self.opts.max_bytes)
    }

    fn roll_requested(&self) {
        self.roll.set(true);
    }

    fn advance_checkpoint(&self, lsn: u64) {
        if lsn <= self.checkpoint.get() {
            return;
        }
        self.checkpoint.set(lsn);
        self.release_consumed();
        self.housekeeping.notify_all();
    }

    /// Forgets the sealed segments whose frames were all consumed; they are deleted by the
    /// housekeeper.
    fn release_consumed(&self) {
        let lsn = self.checkpoint.get();
        let mut segments = self.segments.borrow_mut();
        let mut removed = false;
        while let Some(front) = segments.front() {
            if !(front.sealed && front.end_lsn <= lsn) {
                break;
            }
            let seg = segments.pop_front().expect("front exists");
            self.retained_bytes
                .set(self.retained_bytes.get() - seg.durable_end);
            self.forget_cached(seg.first_lsn);
            self.to_delete.borrow_mut().push((seg.path, seg.end_lsn));
            removed = true;
        }
        drop(segments);
        if removed {
            self.durable.notify_all();
            self.housekeeping.notify_all();
        }
    }

    fn forget_cached(&self, segment: u64) {
        let mut cache = self.cache.borrow_mut();
        let before = cache.len();
        cache.retain(|c| c.segment != segment);
        if cache.len() != before {
            self.cache_bytes
                .set(cache.iter().map(|c| c.buf.len()).sum::<usize>());
        }
    }

    /// Writes the checkpoint if it moved since it was last written.
    async fn store_checkpoint(&self) -> Result<(), WalError> {
        let mut file = loop {
            if let Some(file) = self.checkpoint_file.borrow_mut().take() {
                break file;
            }
            // Another task is writing it.
            glommio::timer::sleep(Duration::from_millis(1)).await;
        };
        let ck = self.checkpoint.get();
        let result = if ck != self.stored_checkpoint.get() {
            file.store(ck)
                .await
                .map(|()| self.stored_checkpoint.set(ck))
        } else {
            Ok(())
        };
        *self.checkpoint_file.borrow_mut() = Some(file);
        result
    }

    async fn delete_queued(&self) {
        let stored = self.stored_checkpoint.get();
        let paths: Vec<PathBuf> = {
            let mut queued = self.to_delete.borrow_mut();
            let (due, keep) = std::mem::take(&mut *queued)
                .into_iter()
                .partition(|(_, end)| *end <= stored);
            *queued = keep;
            due.into_iter().map(|(path, _)| path).collect()
        };
        for path in paths {
            if let Err(e) = glommio::io::remove(&path).await {
                log::warn!(
                    "{}: failed to delete {}: {e}",
                    self.opts.name,
                    path.display()
                );
            }
        }
    }

    fn log_error(&self, err: &WalError) {
        let now = Instant::now();
        let due = self
            .last_error_log
            .get()
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL);
        if due {
            let suppressed = self.suppressed_errors.replace(0);
            let hint = if err.is_out_of_space() {
                " (out of disk space: appends are refused with a retryable error until space returns)"
            } else {
                ""
            };
            log::error!(
                "{}: {err}{hint}{}",
                self.opts.name,
                if suppressed > 0 {
                    format!(" ({suppressed} more errors since the last report)")
                } else {
                    String::new()
                }
            );
            self.last_error_log.set(Some(now));
        } else {
            self.suppressed_errors.set(self.suppressed_errors.get() + 1);
        }
    }

    fn cache_commit(&self, commit: CachedCommit) {
        let limit = self.opts.cache_bytes;
        if limit == 0 || commit.buf.len() > limit {
            return;
        }
        let mut cache = self.cache.borrow_mut();
        let mut bytes = self.cache_bytes.get() + commit.buf.len();
        cache.push_back(commit);
        while bytes > limit {
            let Some(old) = cache.pop_front() else { break };
            bytes -= old.buf.len();
        }
        self.cache_bytes.set(bytes);
    }
}

/// The segment the writer appends to.
struct Active {
    first_lsn: u64,
    path: PathBuf,
    file: Rc<DmaFile>,
    /// Durable bytes.
    end: u64,
    /// Bytes of the last partial block, `[align_down(end), end)`: rewritten with the next
    /// commit, since O_DIRECT writes whole blocks.
    tail: Vec<u8>,
}

struct Writer {
    inner: Rc<Inner>,
    active: Option<Active>,
}

async fn writer_task(inner: Rc<Inner>) {
    let mut writer = Writer {
        inner: inner.clone(),
        active: None,
    };
    loop {
        let wake = inner.writer_wake.notified();
        let (empty, bytes, since) = {
            let p = inner.pending.borrow();
            (p.frames.is_empty(), p.bytes, p.since)
        };
        if empty {
            if inner.closed.get() {
                break;
            }
            wake.await;
            continue;
        }
        if inner.discard.get() {
            let taken = take_pending(&inner);
            taken.1.complete(Err(WalError::Closed));
            continue;
        }
        let urgent = inner.closed.get()
            || inner.flush_requested.get()
            || bytes >= inner.opts.group_commit_bytes as u64;
        if !urgent {
            let due = since.unwrap_or_else(Instant::now) + inner.opts.group_commit_interval;
            let now = Instant::now();
            if due > now {
                future::or(wake, glommio::timer::sleep(due - now)).await;
                continue;
            }
        }
        inner.flush_requested.set(false);
        let (frames, slot, bytes) = take_pending(&inner);
        inner.committing_bytes.set(bytes);
        let result = writer.commit(frames).await;
        inner.committing_bytes.set(0);
        match &result {
            Ok(()) => inner.counters.borrow_mut().commits += 1,
            Err(e) => {
                inner.counters.borrow_mut().failed_commits += 1;
                inner.log_error(e);
            }
        }
        slot.complete(result);
        inner.durable.notify_all();
    }
    if let Some(active) = writer.active.take() {
        let _ = active.file.fdatasync().await;
    }
    inner.durable.notify_all();
}

fn take_pending(inner: &Inner) -> (Vec<PendingFrame>, Rc<CommitSlot>, u64) {
    let mut p = inner.pending.borrow_mut();
    let frames = std::mem::take(&mut p.frames);
    let slot = std::mem::take(&mut p.slot);
    let bytes = std::mem::replace(&mut p.bytes, 0);
    p.since = None;
    (frames, slot, bytes)
}

/// A segment file written by the current commit.
struct Touched {
    first_lsn: u64,
    path: PathBuf,
    file: Rc<DmaFile>,
    end: u64,
    end_lsn: u64,
    created: bool,
    sealed: bool,
}

impl Writer {
    /// Writes `frames` (in LSN order) to the active segment, rolling over as needed, syncs
    /// every file written and publishes the new durable ends. On failure nothing of this commit
    /// becomes visible: the files are cut back to their durable ends (best effort), a segment
    /// the commit created is removed, and the next commit starts a new segment.
    async fn commit(&mut self, frames: Vec<PendingFrame>) -> Result<(), WalError> {
        let mut touched: Vec<Touched> = Vec::new();
        let mut result = self.write_all(&frames, &mut touched).await;
        if result.is_ok() {
            result = self.sync_all(&touched).await;
        }
        match result {
            Ok(()) => {
                self.publish(touched);
                Ok(())
            }
            Err(e) => {
                self.abandon(touched).await;
                Err(e)
            }
        }
    }

    async fn write_all(
        &mut self,
        frames: &[PendingFrame],
        touched: &mut Vec<Touched>,
    ) -> Result<(), WalError> {
        let segment_bytes = self.inner.opts.segment_bytes;
        let mut i = 0;
        while i < frames.len() {
            let need = (HEADER_LEN + frames[i].len) as u64;
            let roll = self.inner.roll.replace(false)
                || self
                    .active
                    .as_ref()
                    .is_none_or(|a| a.end > 0 && a.end + need > segment_bytes);
            if roll {
                if let Some(old) = self.active.take() {
                    note(touched, &old, false).sealed = true;
                    old.file
                        .fdatasync()
                        .await
                        .map_err(|e| WalError::io("sync", &old.path, e.into()))?;
                }
                let active = self.create(frames[i].lsn, need).await?;
                note(touched, &active, true);
                self.active = Some(active);
            }
            let active = self.active.as_ref().expect("active segment");
            let mut end = active.end;
            let mut j = i;
            while j < frames.len() {
                let len = (HEADER_LEN + frames[j].len) as u64;
                if j > i && end + len > segment_bytes {
                    break;
                }
                end += len;
                j += 1;
            }
            note(touched, active, false);
            self.write(&frames[i..j]).await?;
            let active = self.active.as_ref().expect("active segment");
            let t = note(touched, active, false);
            t.end = active.end;
            t.end_lsn = frames[j - 1].lsn + 1;
            i = j;
        }
        Ok(())
    }

    async fn sync_all(&self, touched: &[Touched]) -> Result<(), WalError> {
        if let Some(active) = &self.active {
            let t = Instant::now();
            let synced = active.file.fdatasync().await;
            self.inner
                .fsync
                .borrow_mut()
                .saturating_record(t.elapsed().as_micros().max(1) as u64);
            synced.map_err(|e| WalError::io("sync", &active.path, e.into()))?;
        }
        if touched.iter().any(|t| t.created) {
            sync_dir(&self.inner.dir).await?;
        }
        Ok(())
    }

    fn publish(&self, touched: Vec<Touched>) {
        let inner = &*self.inner;
        let mut segments = inner.segments.borrow_mut();
        let mut added = 0u64;
        for t in touched {
            if t.created {
                segments.push_back(Segment {
                    first_lsn: t.first_lsn,
                    path: t.path,
                    durable_end: 0,
                    end_lsn: t.first_lsn,
                    sealed: false,
                    created: Instant::now(),
                });
            }
            let Some(seg) = segments.iter_mut().find(|s| s.first_lsn == t.first_lsn) else {
                continue;
            };
            if t.end > seg.durable_end {
                added += t.end - seg.durable_end;
                seg.durable_end = t.end;
            }
            seg.end_lsn = seg.end_lsn.max(t.end_lsn);
            seg.sealed |= t.sealed;
        }
        // Every segment but the last is sealed.
        let n = segments.len();
        for seg in segments.iter_mut().take(n.saturating_sub(1)) {
            seg.sealed = true;
        }
        drop(segments);
        inner.retained_bytes.set(inner.retained_bytes.get() + added);
        // A segment may have been consumed while its last frames were being synced.
        inner.release_consumed();
    }

    async fn abandon(&mut self, touched: Vec<Touched>) {
        self.active = None;
        for t in touched {
            if t.created {
                let _ = t.file.truncate(0).await;
                let _ = glommio::io::remove(&t.path).await;
                continue;
            }
            let durable = self
                .inner
                .segments
                .borrow()
                .iter()
                .find(|s| s.first_lsn == t.first_lsn)
                .map(|s| s.durable_end);
            if let Some(end) = durable {
                let _ = t.file.truncate(end).await;
                let _ = t.file.fdatasync().await;
            }
        }
        if let Some(last) = self.inner.segments.borrow_mut().back_mut() {
            last.sealed = true;
        }
        self.inner.durable.notify_all();
    }

    async fn create(&self, first_lsn: u64, need: u64) -> Result<Active, WalError> {
        let inner = &*self.inner;
        let path = inner.dir.join(format!("{first_lsn:020}.seg"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::permissions::FILE_MODE)
            .dma_open(&path)
            .await
            .map_err(|e| WalError::io("create", &path, e.into()))?;
        let size = inner.opts.segment_bytes.max(file.align_up(need));
        if let Err(e) = file.pre_allocate(size, false).await {
            let _ = file.close().await;
            let _ = glommio::io::remove(&path).await;
            return Err(WalError::io("allocate", &path, e.into()));
        }
        Ok(Active {
            first_lsn,
            path,
            file: Rc::new(file),
            end: 0,
            tail: Vec::new(),
        })
    }

    /// Writes frames at the active segment's end in one aligned write (the partial last block
    /// is written again with its previous bytes first), without syncing.
    async fn write(&mut self, frames: &[PendingFrame]) -> Result<(), WalError> {
        let active = self.active.as_mut().expect("active segment");
        let align = active.file.alignment() as usize;
        let base = active.end - active.tail.len() as u64;
        let body: usize = frames.iter().map(|f| HEADER_LEN + f.len).sum();
        let valid = active.tail.len() + body;
        let size = valid.div_ceil(align) * align;
        let mut buf = active.file.alloc_dma_buffer(size);
        {
            let out = buf.as_bytes_mut();
            let mut at = active.tail.len();
            out[..at].copy_from_slice(&active.tail);
            for f in frames {
                out[at..at + HEADER_LEN].copy_from_slice(&f.header);
                at += HEADER_LEN;
                for chunk in &f.payload {
                    out[at..at + chunk.len()].copy_from_slice(chunk);
                    at += chunk.len();
                }
            }
            out[at..].fill(0);
        }
        let buf = Rc::new(buf);
        let written = active
            .file
            .write_rc_at(buf.clone(), base)
            .await
            .map_err(|e| WalError::io("write", &active.path, e.into()))?;
        if written < size {
            // A short O_DIRECT write: the device ran out of space part way.
            return Err(WalError::io(
                "write",
                &active.path,
                std::io::Error::from_raw_os_error(28),
            ));
        }
        let tail_start = (valid / align) * align;
        active.tail.clear();
        active
            .tail
            .extend_from_slice(&buf.as_bytes()[tail_start..valid]);
        active.end = base + valid as u64;
        self.inner.cache_commit(CachedCommit {
            segment: active.first_lsn,
            base,
            len: valid,
            buf,
        });
        Ok(())
    }
}

/// The entry of `touched` for `segment`, added if missing.
fn note<'a>(touched: &'a mut Vec<Touched>, segment: &Active, created: bool) -> &'a mut Touched {
    let i = match touched
        .iter()
        .position(|t| t.first_lsn == segment.first_lsn)
    {
        Some(i) => i,
        None => {
            touched.push(Touched {
                first_lsn: segment.first_lsn,
                path: segment.path.clone(),
                file: segment.file.clone(),
                end: segment.end,
                end_lsn: segment.first_lsn,
                created,
                sealed: false,
            });
            touched.len() - 1
        }
    };
    &mut touched[i]
}

/// Makes glommio's per-thread, per-device probe for polled I/O (IOPOLL) read real data.
///
/// glommio decides whether a device supports polled reads with a probe read at offset 0 of the
/// first DMA file opened on it, and remembers the answer. When that first file is empty (a new
/// segment or checkpoint file), the read succeeds without touching the device, polled reads are
/// wrongly enabled, and every later read of real data fails with EOPNOTSUPP on devices without
/// polling (virtio disks). Opening a file with a full block of data first gets the right answer.
async fn probe_device(dir: &Path) -> Result<(), WalError> {
    let path = dir.join(".iopoll-probe");
    std::fs::write(&path, [0x5Au8; 4096]).map_err(|e| WalError::io("create", &path, e))?;
    let opened = OpenOptions::new().read(true).dma_open(&path).await;
    let _ = std::fs::remove_file(&path);
    let file = opened.map_err(|e| WalError::io("open", &path, e.into()))?;
    let _ = file.close().await;
    Ok(())
}

async fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| WalError::io("open", dir, e.into()))?;
    let synced = d.sync().await;
    let _ = d.close().await;
    synced.map_err(|e| WalError::io("sync", dir, e.into()))
}

/// Persists the checkpoint when it moved and deletes forgotten segments, every
/// `checkpoint_interval` and once more at close (unless crashing).
async fn housekeeper_task(inner: Rc<Inner>) {
    loop {
        let wake = inner.housekeeping.notified();
        if !inner.closed.get() {
            future::or(wake, glommio::timer::sleep(inner.opts.checkpoint_interval)).await;
        }
        if inner.discard.get() {
            return;
        }
        let closed = inner.closed.get();
        if closed {
            // Let the writer finish first, so the last segments are sealed.
            while inner.committing_bytes.get() > 0 || !inner.pending.borrow().frames.is_empty() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                if inner.discard.get() {
                    return;
                }
            }
        }
        if let Err(e) = inner.store_checkpoint().await {
            inner.log_error(&e);
        }
        inner.delete_queued().await;
        if closed {
            return;
        }
    }
}

/// The valid frames of one segment.
struct Scan {
    valid_end: u64,
    end_lsn: u64,
    file_len: u64,
    unconsumed_frames: u64,
    cut: Option<Cut>,
}

struct Cut {
    reason: &'static str,
    nonzero_bytes: u64,
}

/// Reads a segment from the start, checking each frame (checksum, and LSNs that follow on from
/// `first_lsn`), until the end of the file, a zero-filled region, or an invalid frame.
async fn scan_segment(path: &Path, first_lsn: u64, checkpoint: u64) -> Result<Scan, WalError> {
    let file = OpenOptions::new()
        .read(true)
        .dma_open(path)
        .await
        .map_err(|e| WalError::io("open", path, e.into()))?;
    let file_len = file
        .file_size()
        .await
        .map_err(|e| WalError::io("stat", path, e.into()))?;
    let mut chunk = Chunk::default();
    let mut pos = 0u64;
    let mut expect = first_lsn;
    let mut unconsumed = 0;
    let mut cut = None;
    while pos < file_len {
        let view = chunk.view(&file, path, pos, HEADER_LEN, file_len).await?;
        if view.len() < HEADER_LEN {
            if view.iter().any(|b| *b != 0) {
                cut = Some("torn frame header");
            }
            break;
        }
        let head: &[u8; HEADER_LEN] = view[..HEADER_LEN].try_into().expect("17 bytes");
        let Some(header) = Header::parse(head) else {
            if head.iter().any(|b| *b != 0) {
                cut = Some("invalid frame header");
            } else if view.iter().any(|b| *b != 0) {
                cut = Some("zero header followed by data");
            }
            break;
        };
        if pos + header.frame_len() as u64 > file_len {
            cut = Some("frame runs past the end of the file");
            break;
        }
        let view = chunk
            .view(&file, path, pos, header.frame_len(), file_len)
            .await?;
        match frame::decode(view) {
            Ok((h, _)) if h.lsn == expect => {
                if h.lsn >= checkpoint {
                    unconsumed += 1;
                }
                expect += 1;
                pos += h.frame_len() as u64;
            }
            Ok(_) => {
                cut = Some("frame out of sequence");
                break;
            }
            Err(_) => {
                cut = Some("torn or corrupt frame (checksum mismatch)");
                break;
            }
        }
    }
    let cut = match cut {
        Some(reason) => {
            let rest = chunk.view(&file, path, pos, 0, file_len).await?;
            let nonzero = rest.iter().rposition(|b| *b != 0).map_or(1, |i| i + 1) as u64;
            Some(Cut {
                reason,
                nonzero_bytes: nonzero,
            })
        }
        None => None,
    };
    let _ = file.close().await;
    Ok(Scan {
        valid_end: pos,
        end_lsn: expect,
        file_len,
        unconsumed_frames: unconsumed,
        cut,
    })
}

/// A window of a file read into memory, for scanning.
#[derive(Default)]
struct Chunk {
    base: u64,
    bytes: Vec<u8>,
}

impl Chunk {
    /// The bytes from `pos` on, at least `need` of them when the file has them (reading
    /// [`READ_CHUNK`] or more when what is in memory does not cover them).
    async fn view(
        &mut self,
        file: &DmaFile,
        path: &Path,
        pos: u64,
        need: usize,
        file_len: u64,
    ) -> Result<&[u8], WalError> {
        let end = self.base + self.bytes.len() as u64;
        let covered = pos >= self.base && pos + need as u64 <= end && (need > 0 || pos < end);
        if !covered {
            let size = (need.max(READ_CHUNK) as u64).min(file_len.saturating_sub(pos)) as usize;
            self.bytes.clear();
            self.base = pos;
            if size > 0 {
                let read = file
                    .read_at(pos, size)
                    .await
                    .map_err(|e| WalError::io("read", path, e.into()))?;
                self.bytes.extend_from_slice(&read);
            }
        }
        let start = ((pos - self.base) as usize).min(self.bytes.len());
        Ok(&self.bytes[start..])
    }
}
