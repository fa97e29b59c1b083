//! Ingest durability (`engine.durability = "ack_after_sync"`): each core's ingest log, the
//! release of its frames once their data is safe downstream, replay after a restart, and the
//! write-ahead log metrics.
//!
//! # Acknowledged means durable
//!
//! [`IngestLog::append`] appends a request body to the receiving core's log and waits for its
//! group commit; only then is the request routed, and only then does the client get success.
//!
//! # When a frame may be forgotten (DESIGN.md invariant 4)
//!
//! A frame may be dropped from the log once every span of it was decided by the sampler (kept
//! spans handed to *durable* export queues, dropped spans dropped) or, without a sampler, handed
//! to the durable export queues. Instead of per-channel watermarks, the engine uses the fact
//! that the hot path never copies span bytes (invariant 2): after the append, the request body
//! is wrapped in a [`bytes::Bytes`] that keeps the frame's token alive
//! ([`shardtel_protocol::scan::keep_alive`]). Every span batch routed
//! over the mesh, every buffer the sampler holds, every piece in an export batch waiting for
//! its disk-queue append (or, for in-memory queues, for its send) is a slice of that buffer.
//! When the last slice (and the last clone of the token) is dropped, on whichever core, the token marks the frame's LSN released
//! in a ring of single-writer-per-slot atomics. The receiving core scans the ring from its low
//! watermark every [`CHECKPOINT_EVERY`] and checkpoints its log at the first unreleased LSN;
//! whole segments below it are deleted. A refused request drops its body at once, so its frame
//! is released at once.
//!
//! Anything that copies span bytes out of the request buffer (a rewriting processor, the
//! metrics split after a processor changed a request, the sampler's compaction of stragglers)
//! must keep the frame unreleased until the copy is in a durable export queue: the copy is made
//! a `Bytes` whose owner also holds the original (`crate::processors::held`) or the frame's
//! release token.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardtel_config::WalConfig;
use shardtel_protocol::scan::Hold;
use shardtel_protocol::Signal;
use shardtel_wal::{Wal, WalError, WalOptions, WalStats, FSYNC_QUANTILES};

use crate::ingest::IngestError;

/// How often a core moves its ingest log's checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Requests per core whose frames may be unreleased at once; more are refused as overloaded.
pub const MAX_UNRELEASED: u64 = 1 << 18;

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
/// [`Tracked::hold`] clone (kept by copies of its spans, see [`SpanBatch::hold`]) are gone.
///
/// [`SpanBatch::hold`]: shardtel_protocol::scan::SpanBatch::hold
struct FrameToken {
    lsn: u64,
    ring: Arc<ReleaseRing>,
}

impl Drop for FrameToken {
    fn drop(&mut self) {
        self.ring.release(self.lsn);
    }
}

/// A logged request body, ready to route: `body` is the same bytes, tracked so that the frame is
/// released when the last slice of them and the last clone of `hold` are dropped.
pub struct Tracked {
    /// The request body.
    pub body: Bytes,
    /// The frame's token: give a clone to whatever copies span bytes out of `body` and keeps
    /// the copy in memory (the sampler's compaction), so the frame outlives the copy.
    pub hold: Hold,
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
    /// Frames appended but not yet released (the watermark lag).
    pub unreleased_frames: u64,
}

/// One core's ingest log.
pub struct IngestLog {
    wal: Wal,
    ring: Arc<ReleaseRing>,
    low: std::cell::Cell<u64>,
    counters: std::cell::Cell<IngestLogSnapshot>,
}

impl IngestLog {
    /// Opens (and recovers) the log of core `core` under `data_dir/ingest/coreN`.
    pub async fn open(data_dir: &Path, core: usize, cfg: &WalConfig) -> Result<IngestLog, String> {
        let dir = data_dir.join("ingest").join(format!("core{core}"));
        Self::open_dir(&dir, core, cfg).await
    }

    /// Opens (and recovers) the ingest log in `dir`.
    pub async fn open_dir(dir: &Path, core: usize, cfg: &WalConfig) -> Result<IngestLog, String> {
        let dir = dir.to_path_buf();
        let options = WalOptions {
            segment_bytes: cfg.segment_bytes_for(cfg.ingest_max_bytes),
            max_bytes: cfg.ingest_max_bytes,
            group_commit_interval: cfg.group_commit_interval,
            group_commit_bytes: cfg.group_commit_bytes as usize,
            checkpoint_interval: Duration::from_millis(200),
            cache_bytes: 0,
            name: format!("ingest log (core {core})"),
        };
        let wal = Wal::open(&dir, options)
            .await
            .map_err(|e| format!("failed to open the ingest log {}: {e}", dir.display()))?;
        let low = wal.checkpoint_lsn();
        Ok(IngestLog {
            wal,
            ring: Arc::new(ReleaseRing::new()),
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
    pub async fn append(&self, signal: Signal, body: Bytes) -> Result<Tracked, IngestError> {
        if self.wal.next_lsn() - self.low.get() >= MAX_UNRELEASED {
            self.advance();
            if self.wal.next_lsn() - self.low.get() >= MAX_UNRELEASED {
                self.count(|c| c.refused_unreleased += 1);
                return Err(IngestError::Overloaded(
                    "too many requests on this core wait for their export",
                ));
            }
        }
        let append = match self.wal.append(kind(signal), vec![body.clone()]) {
            Ok(append) => append,
            Err(e) => return Err(self.refusal(e)),
        };
        let lsn = append.lsn();
        match append.durable().await {
            Ok(_) => Ok(self.track(lsn, body)),
            Err(e) => {
                self.ring.release(lsn);
                Err(self.refusal(e))
            }
        }
    }

    fn refusal(&self, e: WalError) -> IngestError {
        match e {
            WalError::Full { .. } => {
                self.count(|c| c.refused_full += 1);
                IngestError::Overloaded("the ingest log is full")
            }
            WalError::TooLarge { .. } => IngestError::Malformed(e.to_string()),
            e => {
                self.count(|c| c.refused_disk += 1);
                IngestError::Storage(format!("ingest log: {e}"))
            }
        }
    }

    /// `body`, tracked for the frame `lsn`.
    fn track(&self, lsn: u64, body: Bytes) -> Tracked {
        let hold: Hold = Arc::new(FrameToken {
            lsn,
            ring: self.ring.clone(),
        });
        Tracked {
            body: shardtel_protocol::scan::keep_alive(body, hold.clone()),
            hold,
        }
    }

    /// The next LSN to be appended and the first unreleased one: every frame below the second
    /// is released (as of the last [`IngestLog::advance`]).
    pub fn position(&self) -> (u64, u64) {
        (self.wal.next_lsn(), self.low.get())
    }

    /// Moves the low watermark over released frames and checkpoints the log there.
    pub fn advance(&self) {
        let next = self.wal.next_lsn();
        let mut low = self.low.get();
        while low < next && self.ring.released(low) {
            low += 1;
        }
        self.low.set(low);
        self.wal.checkpoint(low);
    }

    /// Reads the frames retained from before the restart, hands each (tracked) to `ingest`,
    /// and releases the LSNs that have no frame (failed commits). Returns the frames replayed.
    pub async fn replay<F, Fut>(&self, mut ingest: F) -> u64
    where
        F: FnMut(Signal, Tracked) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let end = self.wal.next_lsn();
        let mut expect = self.low.get();
        let mut reader = self.wal.reader(expect);
        let mut replayed = 0;
        loop {
            let frame = match reader.next().await {
                Ok(Some(frame)) if frame.lsn < end => frame,
                Ok(_) => break,
                Err(e) => {
                    log::error!("ingest log: replay stopped early: {e}");
                    break;
                }
            };
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
            replayed += 1;
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

/// Holds `engine.data_dir/LOCK` locked (`flock`, exclusive) while the process runs: two processes
/// writing the same logs would corrupt them (and with SO_REUSEPORT a second one on the same
/// ports starts without a bind error). Released when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Locks `engine.data_dir` when a write-ahead log lives there (`durability = "ack_after_sync"`
/// or a disk queue); `None` otherwise. Start-up only (`std::fs`).
pub fn lock_data_dir(config: &shardtel_config::Config) -> Result<Option<DataDirLock>, String> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let disk_queues = config.exporters.values().any(|e| {
        e.kind
            .queue()
            .is_some_and(|q| q.storage == shardtel_config::QueueStorage::Disk)
    });
    if config.engine.durability != shardtel_config::Durability::AckAfterSync && !disk_queues {
        return Ok(None);
    }
    let dir = &config.engine.data_dir;
    let path = dir.join("LOCK");
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("engine.data_dir: failed to {what} {}: {e}", path.display())
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", &e))?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail("open", &e))?;
    match nix::fcntl::flock(
        file.as_raw_fd(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EWOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(format!(
                "engine.data_dir {} is in use by another shardtel process (pid {}): give each process its own data_dir",
                dir.display(),
                holder.trim()
            ));
        }
        Err(e) => return Err(fail("lock", &e)),
    }
    // The holder's pid, for the message above (the lock itself is what counts).
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(Some(DataDirLock { _file: file }))
}

/// The orphaned logs core `core` of `cores` drains: ingest logs and exporter queues of cores
/// `core + k * cores` (k ≥ 1) that exist on disk, as (ingest dirs, (exporter, queue dir)).
pub fn orphans_of(
    config: &shardtel_config::Config,
    data_dir: &Path,
    core: usize,
    cores: usize,
) -> (Vec<std::path::PathBuf>, Vec<(String, std::path::PathBuf)>) {
    let mine = |n: usize| n >= cores && n % cores == core;
    let core_of = |name: &std::ffi::OsStr| -> Option<usize> {
        name.to_str()?.strip_prefix("core")?.parse().ok()
    };
    let mut ingest = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("ingest")) {
        for e in entries.flatten() {
            if core_of(&e.file_name()).is_some_and(mine) {
                ingest.push(e.path());
            }
        }
    }
    let root = data_dir.join("queues");
    let mut queues = Vec::new();
    for name in config.exporters.keys() {
        let Some(dir) = shardtel_sinks::queue_dir(&root, name, 0)
            .parent()
            .map(Path::to_path_buf)
        else {
            continue;
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if core_of(&e.file_name()).is_some_and(mine) {
                    queues.push((name.clone(), e.path()));
                }
            }
        }
    }
    ingest.sort();
    queues.sort();
    (ingest, queues)
}

/// Replays the ingest logs in `dirs` (of cores that no longer exist) through `core`'s own
/// ingest log, waits until their frames are released, then removes them.
pub(crate) async fn drain_orphaned_ingest_logs(
    core: &crate::core::Core,
    dirs: &[std::path::PathBuf],
    cfg: &WalConfig,
) {
    for dir in dirs {
        let orphan = match IngestLog::open_dir(dir, core.id, cfg).await {
            Ok(orphan) => orphan,
            Err(e) => {
                log::error!("core {}: {e}", core.id);
                continue;
            }
        };
        log::info!(
            "core {}: draining the orphaned ingest log {} ({} requests)",
            core.id,
            dir.display(),
            orphan.recovered_frames()
        );
        let n = orphan
            .replay(|signal, tracked| core.replay(signal, tracked, true))
            .await;
        while orphan.unreleased_frames() > 0 {
            orphan.advance();
            glommio::timer::sleep(CHECKPOINT_EVERY).await;
        }
        orphan.close().await;
        drop(orphan);
        let path = dir.clone();
        let _ = glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(path))
            .await;
        log::info!(
            "core {}: drained {n} requests of the orphaned ingest log {}",
            core.id,
            dir.display()
        );
    }
}

/// Moves each orphaned export queue into this core's queue of the same exporter, in the
/// background.
pub(crate) fn adopt_orphaned_queues(
    queues: &std::collections::BTreeMap<String, std::rc::Rc<shardtel_sinks::ExportQueue>>,
    orphans: Vec<(String, std::path::PathBuf)>,
) {
    for (name, dir) in orphans {
        let Some(queue) = queues.get(&name).cloned() else {
            continue;
        };
        glommio::spawn_local(async move {
            match queue.adopt_orphan(&dir).await {
                Ok(n) => log::info!(
                    "exporter {name}: moved {n} batches of the orphaned queue {}",
                    dir.display()
                ),
                Err(e) => log::error!("exporter {name}: orphaned queue {}: {e}", dir.display()),
            }
        })
        .detach();
    }
}

/// Warns about write-ahead logs no core will open (at start-up, with `std::fs`): queues of
/// exporters no longer configured, when they still hold data. (Logs of cores that no longer
/// exist are drained by the remaining cores, see [`orphans_of`].)
pub fn report_orphaned_logs(config: &shardtel_config::Config) {
    let root = config.engine.data_dir.join("queues");
    let Ok(exporters) = std::fs::read_dir(&root) else {
        return;
    };
    for exporter in exporters.flatten() {
        let configured = config.exporters.keys().any(|name| {
            shardtel_sinks::queue_dir(&root, name, 0).parent() == Some(&exporter.path())
        });
        if configured {
            continue;
        }
        let bytes: u64 = walk_segments(&exporter.path());
        if bytes > 0 {
            log::warn!(
                "{} holds {bytes} bytes of queued batches of an exporter that is no longer configured; they are not sent: configure the exporter again to send them, or remove the directory",
                exporter.path().display()
            );
        }
    }
}

fn walk_segments(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_segments(&path)
            } else if path.extension().is_some_and(|x| x == "seg") {
                e.metadata().map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
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

/// Renders the ingest log and disk queue series.
pub fn render(
    out: &mut String,
    ingest: &[(usize, IngestLogSnapshot)],
    queues: &[(usize, &str, WalStats)],
) {
    use crate::telemetry::{header, render_families, Family};
    use std::fmt::Write as _;
    let series: [Family<IngestLogSnapshot>; 11] = [
        (
            "shardtel_ingest_log_bytes",
            "gauge",
            "Bytes of the ingest log on disk (retained segments).",
            |s| s.wal.retained_bytes,
        ),
        (
            "shardtel_ingest_log_segments",
            "gauge",
            "Segment files of the ingest log.",
            |s| s.wal.segments,
        ),
        (
            "shardtel_ingest_log_frames",
            "gauge",
            "Requests in the ingest log not yet released (watermark lag).",
            |s| s.unreleased_frames,
        ),
        (
            "shardtel_ingest_log_oldest_age_seconds",
            "gauge",
            "Age of the oldest unreleased segment of the ingest log.",
            |s| s.wal.oldest_unconsumed_age_ms / 1000,
        ),
        (
            "shardtel_ingest_log_appended_frames_total",
            "counter",
            "Requests appended to the ingest log.",
            |s| s.wal.appended_frames,
        ),
        (
            "shardtel_ingest_log_refused_full_total",
            "counter",
            "Requests refused because the ingest log was full (backpressure).",
            |s| s.refused_full,
        ),
        (
            "shardtel_ingest_log_refused_disk_errors_total",
            "counter",
            "Requests refused because the disk failed (out of space, I/O error).",
            |s| s.refused_disk,
        ),
        (
            "shardtel_ingest_log_refused_unreleased_total",
            "counter",
            "Requests refused because too many requests awaited their export.",
            |s| s.refused_unreleased,
        ),
        (
            "shardtel_ingest_log_recovered_frames_total",
            "counter",
            "Frames found in the ingest log at start-up.",
            |s| s.wal.recovery.recovered_frames,
        ),
        (
            "shardtel_ingest_log_truncated_frames_total",
            "counter",
            "Torn or corrupt frames cut off at start-up.",
            |s| s.wal.recovery.truncated_frames,
        ),
        (
            "shardtel_ingest_log_replayed_frames_total",
            "counter",
            "Frames replayed at start-up.",
            |s| s.replayed_frames,
        ),
    ];
    let rows: Vec<(String, &IngestLogSnapshot)> = ingest
        .iter()
        .map(|(core, s)| (format!("core=\"{core}\""), s))
        .collect();
    render_families(out, &series, &rows);
    let queue_series: [Family<WalStats>; 8] = [
        (
            "shardtel_exporter_queue_disk_bytes",
            "gauge",
            "Bytes of the exporter's disk queue (retained segments).",
            |s| s.retained_bytes,
        ),
        (
            "shardtel_exporter_queue_disk_frames",
            "gauge",
            "Batches in the disk queue not yet accepted by the destination.",
            |s| s.unconsumed_frames,
        ),
        (
            "shardtel_exporter_queue_oldest_age_seconds",
            "gauge",
            "Age of the oldest segment holding unsent batches.",
            |s| s.oldest_unconsumed_age_ms / 1000,
        ),
        (
            "shardtel_exporter_queue_full_refusals_total",
            "counter",
            "Appends refused because the disk queue was full.",
            |s| s.full_refusals,
        ),
        (
            "shardtel_exporter_queue_dropped_frames_total",
            "counter",
            "Batches dropped with overflow = \"drop_oldest\".",
            |s| s.dropped_frames,
        ),
        (
            "shardtel_exporter_queue_dropped_bytes_total",
            "counter",
            "Bytes dropped with overflow = \"drop_oldest\".",
            |s| s.dropped_bytes,
        ),
        (
            "shardtel_exporter_queue_recovered_frames_total",
            "counter",
            "Batches found in the disk queue at start-up.",
            |s| s.recovery.recovered_frames,
        ),
        (
            "shardtel_exporter_queue_truncated_frames_total",
            "counter",
            "Torn or corrupt batches cut off at start-up.",
            |s| s.recovery.truncated_frames,
        ),
    ];
    let rows: Vec<(String, &WalStats)> = queues
        .iter()
        .map(|(core, exporter, s)| (format!("exporter=\"{exporter}\",core=\"{core}\""), s))
        .collect();
    render_families(out, &queue_series, &rows);
    let name = "shardtel_wal_fsync_seconds";
    header(
        out,
        name,
        "summary",
        "fdatasync latency of write-ahead log group commits.",
    );
    let logs = ingest
        .iter()
        .map(|(core, s)| (*core, "ingest".to_string(), s.wal))
        .chain(
            queues
                .iter()
                .map(|(core, exporter, s)| (*core, format!("queue/{exporter}"), *s)),
        );
    for (core, log, s) in logs {
        for (q, v) in FSYNC_QUANTILES.iter().zip(s.fsync_quantiles_us) {
            let _ = writeln!(
                out,
                "{name}{{log=\"{log}\",core=\"{core}\",quantile=\"{q}\"}} {}",
                v as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{log=\"{log}\",core=\"{core}\"}} {}",
            s.fsync_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "{name}_count{{log=\"{log}\",core=\"{core}\"}} {}",
            s.fsync_count
        );
    }
}
