//! One core's ingest log: append and wait for the group commit, track each frame's release,
//! checkpoint at the first unreleased frame, replay what a restart found; its metric families.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardtel_config::WalConfig;
use shardtel_protocol::scan::ReleaseToken;
use shardtel_protocol::Signal;
use shardtel_wal::{Wal, WalError, WalOptions, WalStats, FSYNC_QUANTILES};

use crate::telemetry::{Column, Exposition, Families, MetricFamily, MetricType};

/// How often a core moves its ingest log's checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Requests per core whose frames may be unreleased at once; more are refused as overloaded.
pub const MAX_UNRELEASED: u64 = 1 << 18;

/// Why an ingest log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("failed to open the ingest log {}: {source}", .dir.display())]
pub struct OpenError {
    /// The log's directory.
    pub dir: PathBuf,
    /// What the log reported.
    #[source]
    pub source: WalError,
}

/// Why the ingest log did not take a request (each counted in [`IngestLogSnapshot`]).
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// [`MAX_UNRELEASED`] frames wait for their data to be handed on: retry later.
    #[error("too many requests on this core wait for their export")]
    Unreleased,
    /// The log holds `ingest_max_bytes`: retry later.
    #[error("the ingest log is full")]
    Full(#[source] WalError),
    /// The request is larger than a frame may be: permanent.
    #[error("{0}")]
    TooLarge(#[source] WalError),
    /// The disk failed (out of space, I/O error): retry later.
    #[error("ingest log: {0}")]
    Disk(#[source] WalError),
}

/// LSNs released by their frame tokens. Slot `lsn % MAX_UNRELEASED` holds `lsn + 1` once
/// `lsn` is released; each slot has one writer at a time (the frame's guard), the owning core
/// only reads.
struct ReleaseRing {
    slots: Box<[AtomicU64]>,
}

impl ReleaseRing {
    fn new() -> Self {
        ReleaseRing {
            slots: (0..MAX_UNRELEASED).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn release(&self, lsn: u64) {
        self.slots[(lsn % MAX_UNRELEASED) as usize].store(lsn + 1, Ordering::Release);
    }

    fn released(&self, lsn: u64) -> bool {
        self.slots[(lsn % MAX_UNRELEASED) as usize].load(Ordering::Acquire) == lsn + 1
    }
}
/// Releases a frame's LSN when dropped: once the last slice of the logged body and every
/// [`Tracked::release_token`] clone (kept by copies of its spans, see [`SpanBatch::release_token`]) are gone.
///
/// [`SpanBatch::release_token`]: shardtel_protocol::scan::SpanBatch::release_token
struct FrameToken {
    lsn: u64,
    ring: Arc<ReleaseRing>,
}

impl Drop for FrameToken {
    fn drop(&mut self) {
        self.ring.release(self.lsn);
    }
}

/// A frame appended and waiting for its group commit: released when dropped, unless
/// [`PendingFrame::tracked`] handed its LSN on to a [`FrameToken`].
struct PendingFrame<'a> {
    lsn: u64,
    ring: &'a ReleaseRing,
}

impl PendingFrame<'_> {
    /// The frame is on disk: its release now belongs to the token made from the returned LSN.
    fn tracked(self) -> u64 {
        let lsn = self.lsn;
        std::mem::forget(self);
        lsn
    }
}

impl Drop for PendingFrame<'_> {
    fn drop(&mut self) {
        self.ring.release(self.lsn);
    }
}

/// A logged request body, ready to route: `body` is the same bytes, tracked so that the frame is
/// released when the last slice of them and the last clone of `release_token` are dropped.
pub struct Tracked {
    /// The request body.
    pub body: Bytes,
    /// The frame's token: give a clone to whatever copies span bytes out of `body` and keeps
    /// the copy in memory (the sampler's compaction), so the frame outlives the copy.
    pub release_token: ReleaseToken,
}

/// Times a failed read during replay is retried before replay stops.
pub const REPLAY_READ_RETRIES: u32 = 5;
/// The first wait before such a retry (doubled each time: 0.2 s to 3.2 s).
const REPLAY_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// What [`IngestLog::replay`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// Frames handed to the pipeline.
    pub frames: u64,
    /// False when a read kept failing: the frames from there on were neither replayed nor
    /// released.
    pub complete: bool,
}

/// Counters of one core's ingest log, with the log's own statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestLogSnapshot {
    /// The log.
    pub wal: WalStats,
    /// Requests refused because the log was full.
    pub refused_full: u64,
    /// Requests refused because the disk failed (out of space, I/O error).
    pub refused_disk: u64,
    /// Requests refused because [`MAX_UNRELEASED`] frames were unreleased.
    pub refused_unreleased: u64,
    /// Frames replayed at start-up.
    pub replayed_frames: u64,
    /// Replays stopped by a read that kept failing (their frames stay in the log).
    pub replay_stopped: u64,
    /// Frames appended but not yet released (the watermark lag).
    pub unreleased_frames: u64,
}

/// Whether the ingest logs of the process may still move their checkpoints. Frozen when a
/// reactor dies: unwinding it drops the spans it held for other cores, which releases their
/// frames although the spans were never exported; no log checkpoints past them after that, so
/// the next start replays them (and nothing acknowledged is lost).
#[derive(Clone, Debug, Default)]
pub struct Checkpoints {
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpoints {
    /// Stops every log of the process from moving its checkpoint, for good.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// True once frozen.
    pub fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

/// One core's ingest log.
pub struct IngestLog {
    wal: Wal,
    ring: Arc<ReleaseRing>,
    checkpoints: Checkpoints,
    low: std::cell::Cell<u64>,
    counters: std::cell::Cell<IngestLogSnapshot>,
}

impl IngestLog {
    /// Opens (and recovers) the log of core `core` under `data_dir/ingest/coreN`; it moves its
    /// checkpoint until `checkpoints` is frozen.
    pub async fn open(
        data_dir: &Path,
        core: usize,
        cfg: &WalConfig,
        checkpoints: Checkpoints,
    ) -> Result<IngestLog, OpenError> {
        let dir = data_dir.join("ingest").join(format!("core{core}"));
        Self::open_dir(&dir, core, cfg, checkpoints).await
    }

    /// Opens (and recovers) the ingest log in `dir`.
    pub async fn open_dir(
        dir: &Path,
        core: usize,
        cfg: &WalConfig,
        checkpoints: Checkpoints,
    ) -> Result<IngestLog, OpenError> {
        let dir = dir.to_path_buf();
        if let Err(e) = super::create_private_dir(&dir) {
            let source = WalError::Io {
                op: "create",
                path: dir.display().to_string(),
                kind: e.kind(),
                errno: e.raw_os_error(),
                message: e.to_string(),
            };
            return Err(OpenError { dir, source });
        }
        let options = WalOptions {
            segment_bytes: cfg.segment_bytes_for(cfg.ingest_max_bytes),
            max_bytes: cfg.ingest_max_bytes,
            group_commit_interval: cfg.group_commit_interval,
            group_commit_bytes: cfg.group_commit_bytes as usize,
            checkpoint_interval: Duration::from_millis(200),
            cache_bytes: 0,
            name: format!("ingest log (core {core})"),
        };
        let wal = match Wal::open(&dir, options).await {
            Ok(wal) => wal,
            Err(source) => return Err(OpenError { dir, source }),
        };
        let low = wal.checkpoint_lsn();
        Ok(IngestLog {
            wal,
            ring: Arc::new(ReleaseRing::new()),
            checkpoints,
            low: std::cell::Cell::new(low),
            counters: std::cell::Cell::new(IngestLogSnapshot::default()),
        })
    }

    fn count(&self, f: impl FnOnce(&mut IngestLogSnapshot)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Appends `body` (a decoded request of `signal`), waits until it is on disk, and returns
    /// the body to route, tracked (see [`Tracked`]).
    pub async fn append(&self, signal: Signal, body: Bytes) -> Result<Tracked, AppendError> {
        if self.wal.next_lsn() - self.low.get() >= MAX_UNRELEASED {
            self.advance();
            if self.wal.next_lsn() - self.low.get() >= MAX_UNRELEASED {
                self.count(|c| c.refused_unreleased += 1);
                return Err(AppendError::Unreleased);
            }
        }
        let append = match self.wal.append(kind(signal), vec![body.clone()]) {
            Ok(append) => append,
            Err(e) => return Err(self.refusal(e)),
        };
        // Released if this future is dropped before the commit completes (a drained or
        // timed-out request): nothing was routed, and the client was never answered.
        let pending = PendingFrame {
            lsn: append.lsn(),
            ring: &self.ring,
        };
        match append.durable().await {
            Ok(_) => Ok(self.track(pending.tracked(), body)),
            Err(e) => Err(self.refusal(e)),
        }
    }

    fn refusal(&self, e: WalError) -> AppendError {
        match e {
            WalError::Full { .. } => {
                self.count(|c| c.refused_full += 1);
                AppendError::Full(e)
            }
            WalError::TooLarge { .. } => AppendError::TooLarge(e),
            e => {
                self.count(|c| c.refused_disk += 1);
                AppendError::Disk(e)
            }
        }
    }

    /// `body`, tracked for the frame `lsn`.
    fn track(&self, lsn: u64, body: Bytes) -> Tracked {
        let release_token: ReleaseToken = Arc::new(FrameToken {
            lsn,
            ring: self.ring.clone(),
        });
        Tracked {
            body: shardtel_protocol::scan::keep_alive(body, release_token.clone()),
            release_token,
        }
    }

    /// The next LSN to be appended and the first unreleased one: every frame below the second
    /// is released (as of the last [`IngestLog::advance`]).
    pub fn position(&self) -> (u64, u64) {
        (self.wal.next_lsn(), self.low.get())
    }

    /// Moves the low watermark over released frames and checkpoints the log there (not once
    /// [`Checkpoints`] are frozen).
    pub fn advance(&self) {
        let next = self.wal.next_lsn();
        let mut low = self.low.get();
        while low < next && self.ring.released(low) {
            low += 1;
        }
        // Read after the ring: a release made by a dying reactor follows its freeze.
        if self.checkpoints.frozen() {
            return;
        }
        self.low.set(low);
        self.wal.checkpoint(low);
    }

    /// Reads the frames retained from before the restart, hands each (tracked) to `ingest`,
    /// and releases the LSNs that have no frame (failed commits).
    ///
    /// A frame that fails its checksum costs the rest of its segment (the reader skips there,
    /// counted in `corrupt_frames` of the log's statistics); replay goes on with the next
    /// segment. A read that fails (an I/O error, no file descriptor left) is retried
    /// [`REPLAY_READ_RETRIES`] times, backing off; if it still fails, replay stops there and
    /// the frames from that one on are **not** released: the log keeps them for the next start
    /// (it cannot be checkpointed past them, so it fills, and receivers refuse, until the
    /// process is restarted), instead of dropping acknowledged requests unread.
    pub async fn replay<F, Fut>(&self, mut ingest: F) -> Replayed
    where
        F: FnMut(Signal, Tracked) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let end = self.wal.next_lsn();
        let mut expect = self.low.get();
        let mut reader = self.wal.reader(expect);
        let mut replayed = Replayed {
            frames: 0,
            complete: true,
        };
        let mut failures = 0;
        loop {
            let frame = match reader.next().await {
                Ok(Some(frame)) if frame.lsn < end => frame,
                Ok(_) => break,
                // Logged by the reader, which moved to the next segment.
                Err(WalError::Corrupt { .. }) => continue,
                Err(e) if failures < REPLAY_READ_RETRIES => {
                    failures += 1;
                    let wait = REPLAY_RETRY_BACKOFF * (1 << failures);
                    log::warn!(
                        "ingest log: replay read failed at LSN {expect} ({e}); retrying in {wait:?}"
                    );
                    glommio::timer::sleep(wait).await;
                    continue;
                }
                Err(e) => {
                    log::error!(
                        "ingest log: replay stopped at LSN {expect}: {e}; the {} requests from \
                         there stay in the log for the next start (the log cannot be \
                         checkpointed past them: it fills, and receivers refuse, until a restart)",
                        end - expect
                    );
                    self.count(|c| c.replay_stopped += 1);
                    replayed.complete = false;
                    return replayed;
                }
            };
            failures = 0;
            for gap in expect..frame.lsn {
                self.ring.release(gap);
            }
            expect = frame.lsn + 1;
            let Some(signal) = signal_of(frame.kind) else {
                self.ring.release(frame.lsn);
                continue;
            };
            let tracked = self.track(frame.lsn, frame.payload);
            ingest(signal, tracked).await;
            replayed.frames += 1;
            self.count(|c| c.replayed_frames += 1);
        }
        for gap in expect..end {
            self.ring.release(gap);
        }
        replayed
    }

    /// Frames recovered at open (to replay).
    pub fn recovered_frames(&self) -> u64 {
        self.wal.recovery().recovered_frames
    }

    /// Counters and log statistics.
    pub fn snapshot(&self) -> IngestLogSnapshot {
        let mut s = self.counters.get();
        s.wal = self.wal.stats();
        s.unreleased_frames = self.unreleased_frames();
        s
    }

    /// Frames appended but not yet released (the watermark lag).
    pub fn unreleased_frames(&self) -> u64 {
        self.wal.next_lsn() - self.low.get()
    }

    /// Checkpoints what was released and closes the log (persisting the checkpoint).
    pub async fn close(&self) {
        self.advance();
        self.wal.close().await;
    }
}

fn kind(signal: Signal) -> u8 {
    match signal {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

fn signal_of(kind: u8) -> Option<Signal> {
    match kind {
        1 => Some(Signal::Traces),
        2 => Some(Signal::Metrics),
        3 => Some(Signal::Logs),
        _ => None,
    }
}

impl Families for IngestLogSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.is_empty() {
            return;
        }
        let columns: [Column<IngestLogSnapshot>; 12] = [
            (
                "shardtel_ingest_log_bytes",
                MetricType::Gauge,
                "Bytes of the ingest log on disk (retained segments).",
                |s| s.wal.retained_bytes.into(),
            ),
            (
                "shardtel_ingest_log_segments",
                MetricType::Gauge,
                "Segment files of the ingest log.",
                |s| s.wal.segments.into(),
            ),
            (
                "shardtel_ingest_log_frames",
                MetricType::Gauge,
                "Requests in the ingest log not yet released (watermark lag).",
                |s| s.unreleased_frames.into(),
            ),
            (
                "shardtel_ingest_log_oldest_age_seconds",
                MetricType::Gauge,
                "Age of the oldest unreleased segment of the ingest log.",
                |s| (s.wal.oldest_unconsumed_age_ms / 1000).into(),
            ),
            (
                "shardtel_ingest_log_appended_frames_total",
                MetricType::Counter,
                "Requests appended to the ingest log.",
                |s| s.wal.appended_frames.into(),
            ),
            (
                "shardtel_ingest_log_refused_full_total",
                MetricType::Counter,
                "Requests refused because the ingest log was full (backpressure).",
                |s| s.refused_full.into(),
            ),
            (
                "shardtel_ingest_log_refused_disk_errors_total",
                MetricType::Counter,
                "Requests refused because the disk failed (out of space, I/O error).",
                |s| s.refused_disk.into(),
            ),
            (
                "shardtel_ingest_log_refused_unreleased_total",
                MetricType::Counter,
                "Requests refused because too many requests awaited their export.",
                |s| s.refused_unreleased.into(),
            ),
            (
                "shardtel_ingest_log_recovered_frames_total",
                MetricType::Counter,
                "Frames found in the ingest log at start-up.",
                |s| s.wal.recovery.recovered_frames.into(),
            ),
            (
                "shardtel_ingest_log_truncated_frames_total",
                MetricType::Counter,
                "Torn or corrupt frames cut off at start-up.",
                |s| s.wal.recovery.truncated_frames.into(),
            ),
            (
                "shardtel_ingest_log_replayed_frames_total",
                MetricType::Counter,
                "Frames replayed at start-up.",
                |s| s.replayed_frames.into(),
            ),
            (
                "shardtel_ingest_log_replay_stopped_total",
                MetricType::Counter,
                "Replays stopped by a read that kept failing; their requests stay in the log for the next start.",
                |s| s.replay_stopped.into(),
            ),
        ];
        let rows: Vec<_> = cores
            .iter()
            .map(|(core, s)| (crate::telemetry::label_values(&[("core", core)]), *s))
            .collect();
        out.table(&columns, &rows);
        for (core, s) in cores {
            wal_fsync_latency(out, "ingest", *core, &s.wal);
        }
    }
}

/// The name and help text of the summary of write-ahead log fsync latencies, shared by the
/// ingest logs and the exporters' disk queues (label `log`).
pub const WAL_FSYNC_SECONDS: (&str, &str) = (
    "shardtel_wal_fsync_seconds",
    "fdatasync latency of write-ahead log group commits.",
);

/// Adds the fsync latency of one write-ahead log (`log`: `ingest`, `queue/<exporter>`) of
/// `core` to the [`WAL_FSYNC_SECONDS`] summary.
pub fn wal_fsync_latency(out: &mut Exposition, log: &str, core: usize, stats: &WalStats) {
    let family: &mut MetricFamily = out.summary(WAL_FSYNC_SECONDS.0, WAL_FSYNC_SECONDS.1);
    for (q, v) in FSYNC_QUANTILES.iter().zip(stats.fsync_quantiles_us) {
        family.sample(
            &[("log", &log), ("core", &core), ("quantile", q)],
            v as f64 / 1e6,
        );
    }
    family
        .sample_with_suffix(
            "_sum",
            &[("log", &log), ("core", &core)],
            stats.fsync_sum_us as f64 / 1e6,
        )
        .sample_with_suffix(
            "_count",
            &[("log", &log), ("core", &core)],
            stats.fsync_count,
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_config() -> WalConfig {
        WalConfig {
            ingest_max_bytes: 64 << 20,
            segment_size: 1 << 20,
            // Long enough that the first poll of an append finds its commit still pending.
            group_commit_interval: Duration::from_millis(50),
            group_commit_bytes: 1 << 20,
        }
    }

    /// Runs `test` on a glommio executor of its own.
    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { test().await })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A frame that fails its checksum at replay costs the rest of its segment, not every
    /// segment after it: those are replayed, and replay counts as complete.
    #[test]
    fn a_corrupt_frame_at_replay_costs_only_the_rest_of_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        on_executor(move || async move {
            let cfg = WalConfig {
                segment_size: 1 << 20,
                ..wal_config()
            };
            let log = IngestLog::open_dir(&path, 0, &cfg, Checkpoints::default())
                .await
                .unwrap();
            // Nine requests of 300 KiB: three segments of three, none released (held).
            let mut held = Vec::new();
            for i in 0..9u8 {
                let body = Bytes::from(vec![i; 300 << 10]);
                held.push(log.append(Signal::Traces, body).await.unwrap());
            }
            log.close().await;
            drop(held);

            let log = IngestLog::open_dir(&path, 0, &cfg, Checkpoints::default())
                .await
                .unwrap();
            let mut segments: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect();
            segments.sort();
            assert!(segments.len() >= 3, "{segments:?}");
            // One byte of the first request's payload flipped on disk, after the open.
            {
                use std::io::{Read, Seek, SeekFrom, Write};
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&segments[0])
                    .unwrap();
                let at = 4096;
                let mut b = [0u8];
                f.seek(SeekFrom::Start(at)).unwrap();
                f.read_exact(&mut b).unwrap();
                f.seek(SeekFrom::Start(at)).unwrap();
                f.write_all(&[!b[0]]).unwrap();
                f.sync_all().unwrap();
            }
            let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = seen.clone();
            let replayed = log
                .replay(|_, tracked| {
                    sink.borrow_mut().push(tracked.body[0]);
                    async {}
                })
                .await;
            let seen = seen.borrow().clone();
            assert!(replayed.complete);
            assert_eq!(replayed.frames, seen.len() as u64);
            // The first segment held requests 0, 1 and 2 (a fourth did not fit): the corrupt
            // one and the rest of its segment are lost, every later segment is replayed.
            assert_eq!(seen, [3, 4, 5, 6, 7, 8]);
            log.close().await;
        });
    }

    /// A request future dropped while it waits for the group commit (a drain, a timeout) must
    /// not leave its frame unreleased: the watermark would stop there, every later request
    /// would be replayed after a restart, and the log would fill.
    #[test]
    fn a_dropped_append_future_releases_its_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        on_executor(move || async move {
            let log = IngestLog::open_dir(&path, 0, &wal_config(), Checkpoints::default())
                .await
                .unwrap();
            let mut dropped = Box::pin(log.append(Signal::Traces, Bytes::from_static(b"dropped")));
            assert!(
                futures_lite::future::poll_once(&mut dropped)
                    .await
                    .is_none(),
                "the commit is 50 ms away"
            );
            assert_eq!(log.position(), (1, 0), "appended, not yet released");
            drop(dropped);
            // An acknowledged request after it, then exported (body and token dropped).
            let kept = log
                .append(Signal::Traces, Bytes::from_static(b"kept"))
                .await
                .unwrap();
            drop(kept);
            log.advance();
            assert_eq!(log.unreleased_frames(), 0);
            log.close().await;

            // A clean restart replays nothing: no duplicate of the exported request.
            let log = IngestLog::open_dir(&path, 0, &wal_config(), Checkpoints::default())
                .await
                .unwrap();
            let replayed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = replayed.clone();
            log.replay(|_, tracked| {
                sink.borrow_mut().push(tracked.body.clone());
                async {}
            })
            .await;
            assert_eq!(*replayed.borrow(), Vec::<Bytes>::new());
            log.close().await;
        });
    }
}
