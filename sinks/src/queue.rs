//! [`ExportQueue`]: batcher → bounded queue (in memory, or on disk) → sender tasks with
//! retry, for one exporter on one core.
//!
//! In memory, every byte accepted by [`ExportQueue::try_push`] is counted in `queue_bytes`
//! until its batch is sent or has failed for good, so open batches, queued batches and batches
//! in flight together never exceed `queue.max_bytes`. A piece whose chunks are slices of a
//! larger buffer is counted as what it keeps alive ([`ExportQueue::try_push_held`]).
//!
//! On disk (`queue.storage = "disk"`, see [`crate::disk_queue`]), `queue_bytes` counts what is
//! in memory until it is durable (open batches, batches being appended); a saver task appends
//! closed batches to the queue's write-ahead log, senders read them back and a batch leaves
//! the log only once the destination accepted it. `queue.max_bytes` bounds the log.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use shardtel_config::ExporterConfig;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;
use shardtel_tls::ClientTls;

use crate::batch::{Batch, Batcher};
use crate::disk_queue::{queue_dir, DiskQueue, DiskQueueSettings};
use crate::error::{Disposition, ExportError, QueueFull, SinkError};
use crate::exporter::{Exporter, QueueSettings};
use crate::notify::Notify;
use crate::panics::Contained;
use crate::report::{FailureReport, REPORT_INTERVAL};
use crate::retry::{random_unit, Backoff, RetryPolicy};
use crate::stats::ExporterStats;

/// How [`ExportQueue::drain`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Everything queued was sent or failed for good.
    Drained,
    /// The deadline passed first; this much was still queued or in flight.
    TimedOut {
        /// Bytes still held.
        queue_bytes: usize,
        /// Batches not yet sent (queued plus in flight).
        batches: usize,
    },
}

/// New settings for an [`ExportQueue`], built and ready to swap in
/// ([`ExportQueue::prepare_settings`]).
pub struct PreparedSettings {
    exporter: Exporter,
    settings: QueueSettings,
}

/// One exporter instance on one core: batcher → bounded in-memory queue →
/// sender task(s) with retry. `!Send`: it lives and dies on its core.
pub struct ExportQueue {
    shared: Rc<Shared>,
}

struct Shared {
    name: String,
    core: usize,
    /// Swapped by [`ExportQueue::apply_settings`] (a reload); each send attempt takes the
    /// current one.
    exporter: RefCell<Rc<Exporter>>,
    retry: Cell<RetryPolicy>,
    max_bytes: usize,
    batcher: RefCell<Batcher>,
    ready: RefCell<VecDeque<Batch>>,
    queue_bytes: Cell<usize>,
    in_flight: Cell<usize>,
    stats: RefCell<ExporterStats>,
    report: RefCell<FailureReport>,
    closed: Cell<bool>,
    /// A batch was closed: senders look at `ready`.
    work: Notify,
    /// A batch opened: the timer looks at the deadlines.
    opened: Notify,
    /// Bytes were released or a batch finished: `reserve` and `drain` look.
    progress: Notify,
    /// The queue was dropped: every task exits.
    closing: Notify,
    /// `queue.storage = "disk"`.
    disk: Option<DiskQueue>,
    /// Keeps the owner cores' span indexes with trace batches ([`ExportQueue::wants_span_index`]).
    keeps_index: bool,
    /// After a failed append, the saver waits until then.
    save_retry_at: Cell<Option<Instant>>,
}

impl ExportQueue {
    /// Builds the exporter for `core` and spawns its background tasks (batch
    /// timer, senders, failure reporter) on the current glommio executor.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor.
    /// The queue is kept in memory whatever `queue.storage` says; see
    /// [`ExportQueue::start_with_storage`].
    pub fn start(cfg: &ExporterConfig, core: usize) -> Result<Rc<ExportQueue>, SinkError> {
        Self::start_on(cfg, core, 1)
    }

    /// [`ExportQueue::start`] for `core` of `cores`: exporters that own part of the data by
    /// routing key (`prometheusremotewrite` writes the `target_info` of the resources its core
    /// owns) need the count. An `https://` exporter's TLS files are read here, on the calling
    /// reactor (tests and tools; the engine reads them before its reactors start with
    /// [`crate::client_tls`] and calls [`ExportQueue::start_with_storage`]).
    pub fn start_on(
        cfg: &ExporterConfig,
        core: usize,
        cores: usize,
    ) -> Result<Rc<ExportQueue>, SinkError> {
        let tls = crate::client_tls(cfg)?;
        let (exporter, settings) = Exporter::build(cfg, core, cores, tls.as_ref())?;
        Ok(Self::with_exporter(
            cfg.name.clone(),
            core,
            exporter,
            settings,
            None,
        ))
    }

    /// Like [`ExportQueue::start_on`], with a disk queue under `disk.root` when the exporter's
    /// `queue.storage` is `"disk"` (never for the blackhole, which keeps nothing). Opening
    /// recovers what the queue held: batches not yet accepted by the destination are sent
    /// again. `tls`: what [`crate::client_tls`] made of `cfg` before the reactors started
    /// (required for an `https://` endpoint).
    pub async fn start_with_storage(
        cfg: &ExporterConfig,
        core: usize,
        cores: usize,
        disk: Option<&DiskQueueSettings>,
        tls: Option<&ClientTls>,
    ) -> Result<Rc<ExportQueue>, SinkError> {
        let (exporter, settings) = Exporter::build(cfg, core, cores, tls)?;
        let disk = match disk {
            Some(d)
                if settings.storage == shardtel_config::QueueStorage::Disk
                    && exporter.kind() != "blackhole" =>
            {
                let dir = queue_dir(&d.root, &cfg.name, core);
                let queue = DiskQueue::open(
                    &dir,
                    &cfg.name,
                    core,
                    settings.max_queue_bytes,
                    settings.overflow,
                    d,
                )
                .await
                .map_err(|source| SinkError::Queue {
                    exporter: cfg.name.clone(),
                    source,
                })?;
                Some(queue)
            }
            _ => None,
        };
        Ok(Self::with_exporter(
            cfg.name.clone(),
            core,
            exporter,
            settings,
            disk,
        ))
    }

    fn with_exporter(
        name: String,
        core: usize,
        exporter: Exporter,
        settings: QueueSettings,
        disk: Option<DiskQueue>,
    ) -> Rc<Self> {
        let senders = exporter.senders();
        let keeps_index = disk.is_none() && exporter.uses_span_index();
        let label = format!("exporter {name} (core {core})");
        let shared = Rc::new(Shared {
            name,
            core,
            exporter: RefCell::new(Rc::new(exporter)),
            retry: Cell::new(settings.retry),
            max_bytes: settings.max_queue_bytes,
            batcher: RefCell::new(Batcher::new(settings.batch)),
            ready: RefCell::new(VecDeque::new()),
            queue_bytes: Cell::new(0),
            in_flight: Cell::new(0),
            stats: RefCell::new(ExporterStats::default()),
            report: RefCell::new(FailureReport::new(label, REPORT_INTERVAL)),
            closed: Cell::new(false),
            work: Notify::default(),
            opened: Notify::default(),
            progress: Notify::default(),
            closing: Notify::default(),
            disk,
            keeps_index,
            save_retry_at: Cell::new(None),
        });
        glommio::spawn_local(batch_timer(shared.clone())).detach();
        glommio::spawn_local(failure_reporter(shared.clone())).detach();
        if shared.disk.is_some() {
            glommio::spawn_local(saver(shared.clone())).detach();
        }
        for worker in 0..senders {
            if shared.disk.is_some() {
                glommio::spawn_local(disk_sender(shared.clone(), worker)).detach();
            } else {
                glommio::spawn_local(sender(shared.clone(), worker)).detach();
            }
        }
        Rc::new(ExportQueue { shared })
    }

    /// Adds encoded `Export*ServiceRequest` bytes carrying `items` spans,
    /// points or records. Pieces of one signal are concatenated into batches
    /// bounded by the batch settings.
    ///
    /// Refuses with [`QueueFull`] at once when the piece would push the bytes
    /// held (open + queued + in flight) past `queue.max_bytes`; never blocks.
    /// A piece larger than `queue.max_bytes` is taken only into an empty
    /// queue, so it is delayed, never refused forever.
    pub fn try_push(&self, signal: Signal, piece: Encoded, items: u64) -> Result<(), QueueFull> {
        let len = piece.len;
        self.try_push_held(signal, piece, items, len)
    }

    /// [`ExportQueue::try_push`] of a piece that keeps `held` bytes in memory (at least its
    /// length): the buffers its chunks are slices of, when they are larger than the piece. The
    /// queue counts `held` against `queue.max_bytes` (and in `queue_bytes`) until the batch is
    /// sent, or, on disk, until its append is durable.
    pub fn try_push_held(
        &self,
        signal: Signal,
        piece: Encoded,
        items: u64,
        held: usize,
    ) -> Result<(), QueueFull> {
        self.try_push_indexed(signal, piece, None, items, held)
    }

    /// Whether this queue keeps the owner core's index of the spans pushed with
    /// [`ExportQueue::try_push_indexed`] (a `kafka` exporter of OTLP protobuf with a memory
    /// queue: it then cuts trace messages without joining and re-scanning the batch). A disk
    /// queue hands over bytes only.
    pub fn wants_span_index(&self) -> bool {
        self.shared.keeps_index
    }

    /// [`ExportQueue::try_push_held`] of a trace piece encoded from `index` (its spans, as the
    /// owner core indexed them), kept with the batch when [`Self::wants_span_index`].
    pub fn try_push_indexed(
        &self,
        signal: Signal,
        piece: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        held: usize,
    ) -> Result<(), QueueFull> {
        let s = &*self.shared;
        let index = index.filter(|_| s.keeps_index).cloned();
        let charge = held.max(piece.len);
        let queued = s.queue_bytes.get();
        if !s.admits(charge) {
            s.stats.borrow_mut().refused_items[signal.index()] += items;
            return Err(QueueFull {
                needed: charge,
                queued_bytes: queued,
                max_bytes: s.max_bytes,
            });
        }
        s.queue_bytes.set(queued + charge);
        let mut closed_any = false;
        let opened = s.batcher.borrow_mut().push_held(
            signal,
            piece,
            index,
            charge,
            items,
            Instant::now(),
            |batch| {
                s.ready.borrow_mut().push_back(batch);
                closed_any = true;
            },
        );
        if closed_any {
            s.work.notify_all();
        }
        if opened {
            s.opened.notify_all();
        }
        Ok(())
    }

    /// Bytes held in memory now: open, queued and in-flight batches (for a disk queue, until
    /// their append is durable).
    pub fn queued_bytes(&self) -> usize {
        self.shared.queue_bytes.get()
    }

    /// True when a piece of `bytes` would be accepted now (see [`ExportQueue::try_push`]).
    pub fn has_room(&self, bytes: usize) -> bool {
        self.shared.admits(bytes)
    }

    /// Waits until a piece of `bytes` would be accepted. Room is not
    /// reserved: call [`ExportQueue::try_push`] right after, without awaiting
    /// in between, and it succeeds. Also returns when the queue is dropped.
    pub async fn reserve(&self, bytes: usize) {
        let s = &*self.shared;
        loop {
            let progressed = s.progress.notified();
            if s.admits(bytes) || s.closed.get() {
                return;
            }
            progressed.await;
        }
    }

    /// Closes the open batches and waits until everything queued was sent or
    /// failed for good (then syncs files to disk), or until `deadline`. A disk queue is
    /// closed either way: what was not sent stays on disk (all of it once it was saved) and is
    /// sent after the next start.
    pub async fn drain(&self, deadline: Instant) -> DrainOutcome {
        let s = &*self.shared;
        loop {
            let progressed = s.progress.notified();
            s.flush_open_batches();
            let disk_empty = s.disk.as_ref().is_none_or(DiskQueue::is_empty);
            if s.queue_bytes.get() == 0
                && s.ready.borrow().is_empty()
                && s.in_flight.get() == 0
                && disk_empty
            {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                let outcome = DrainOutcome::TimedOut {
                    queue_bytes: s.queue_bytes.get()
                        + s.disk
                            .as_ref()
                            .map_or(0, |d| d.stats().retained_bytes as usize),
                    batches: s.ready.borrow().len()
                        + s.in_flight.get()
                        + s.disk
                            .as_ref()
                            .map_or(0, |d| d.stats().unconsumed_frames as usize),
                };
                if let Some(disk) = &s.disk {
                    disk.close().await;
                }
                return outcome;
            }
            // Disk senders notify `progress`; a short tick covers saves finishing meanwhile.
            let tick = (deadline - now).min(std::time::Duration::from_millis(20));
            future::or(progressed, glommio::timer::sleep(tick)).await;
        }
        if let Some(disk) = &s.disk {
            disk.close().await;
        }
        let exporter = s.exporter.borrow().clone();
        if let Err(err) = exporter.sync().await {
            log::warn!("exporter {} (core {}): {err}", s.name, s.core);
        }
        s.report.borrow_mut().flush(Instant::now());
        DrainOutcome::Drained
    }

    /// With a disk queue: moves the batches of an orphaned queue directory of this exporter
    /// (a core that no longer exists after the core count shrank) into this queue, then removes
    /// the directory. Returns the batches moved (0 without a disk queue).
    pub async fn adopt_orphan(&self, dir: &std::path::Path) -> Result<u64, SinkError> {
        let s = &*self.shared;
        let Some(disk) = &s.disk else { return Ok(0) };
        disk.adopt(dir, &s.name)
            .await
            .map_err(|source| SinkError::Queue {
                exporter: s.name.clone(),
                source,
            })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ExporterStats {
        let s = &*self.shared;
        let mut stats = *s.stats.borrow();
        stats.queue_bytes = s.queue_bytes.get();
        stats.queued_batches = s.ready.borrow().len();
        stats.in_flight = s.in_flight.get();
        stats.disk = s.disk.as_ref().map(DiskQueue::stats);
        s.exporter.borrow().add_stats(&mut stats);
        stats
    }

    /// Builds the exporter `cfg` describes (a reload: same name and type, same queue settings)
    /// for this queue's core of `cores`, with `tls` for an `https://` endpoint (read off the
    /// reactors, see [`crate::client_tls`]), to swap in with [`ExportQueue::apply_settings`].
    pub fn prepare_settings(
        &self,
        cfg: &ExporterConfig,
        cores: usize,
        tls: Option<&ClientTls>,
    ) -> Result<PreparedSettings, SinkError> {
        let (exporter, settings) = Exporter::build(cfg, self.shared.core, cores, tls)?;
        Ok(PreparedSettings { exporter, settings })
    }

    /// Swaps in new settings: the next send attempt of every batch (queued, or retrying) uses
    /// the new destination, headers, timeout and compression; the retry policy applies to
    /// batches whose first attempt starts after it; new batches close by the new batch
    /// limits. Attempts in flight finish with the old ones. The queue itself (its bytes, its
    /// disk log, its counters) stays as it is.
    pub fn apply_settings(&self, prepared: PreparedSettings) {
        let s = &*self.shared;
        s.exporter.replace(Rc::new(prepared.exporter));
        s.retry.set(prepared.settings.retry);
        s.batcher.borrow_mut().set_limits(prepared.settings.batch);
    }

    /// The exporter's configured name (`[exporters.NAME]`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The exporter's kind: `otlp`, `otlphttp`, `file`, `kafka` or `blackhole`.
    pub fn kind(&self) -> &'static str {
        self.shared.exporter.borrow().kind()
    }

    /// The core this instance belongs to.
    pub fn core(&self) -> usize {
        self.shared.core
    }
}

impl Drop for ExportQueue {
    fn drop(&mut self) {
        // The tasks hold `Shared`; tell them to let go.
        let s = &*self.shared;
        s.closed.set(true);
        s.closing.notify_all();
        s.work.notify_all();
        s.opened.notify_all();
        s.progress.notify_all();
    }
}

impl Shared {
    /// Whether a piece of `bytes` fits: within `max_bytes`, or alone in an
    /// empty queue when it is larger than the whole bound.
    fn admits(&self, bytes: usize) -> bool {
        let held = self.queue_bytes.get();
        match &self.disk {
            Some(disk) => disk.admits(held, bytes),
            None => held + bytes <= self.max_bytes || (held == 0 && bytes > self.max_bytes),
        }
    }

    fn flush_open_batches(&self) {
        let mut closed_any = false;
        self.batcher.borrow_mut().flush_all(|batch| {
            self.ready.borrow_mut().push_back(batch);
            closed_any = true;
        });
        if closed_any {
            self.work.notify_all();
        }
    }

    /// Sleeps for `delay`; false if the queue was dropped meanwhile.
    async fn sleep_unless_closed(&self, delay: std::time::Duration) -> bool {
        let closing = self.closing.notified();
        if self.closed.get() {
            return false;
        }
        let slept = future::or(
            async {
                glommio::timer::sleep(delay).await;
                true
            },
            async {
                closing.await;
                false
            },
        )
        .await;
        // The timer may fire in the same poll as the close.
        slept && !self.closed.get()
    }

    /// Sends one batch, retrying as the policy allows, and books the outcome. False when the
    /// queue was dropped before there was an outcome.
    async fn send_with_retry(&self, worker: usize, batch: &Batch) -> bool {
        let i = batch.signal.index();
        // Kinds that convert (prometheusremotewrite, loki) do it once, before the first attempt.
        // A conversion or export that panics fails this batch for good (counted), not the core:
        // retried, or replayed from a disk queue after a restart, it would only panic again.
        // Converter state the panic left half updated is per-series bookkeeping; the next batch
        // carries on from it.
        let exporter = self.exporter.borrow().clone();
        let prepare = Contained::new(Box::pin(exporter.prepare(batch)));
        let prepared = match prepare.await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(err)) => {
                self.failed(i, batch.items, &err, Instant::now());
                return true;
            }
            Err(panicked) => {
                self.stats.borrow_mut().conversion_panics += 1;
                log::error!(
                    "exporter {} (core {}): converting a batch panicked ({}); its {} items are dropped",
                    self.name,
                    self.core,
                    panicked.message,
                    batch.items
                );
                let err = ExportError::from(panicked);
                self.failed(i, batch.items, &err, Instant::now());
                return true;
            }
        };
        let batch = match &prepared {
            Some(p) => {
                self.stats.borrow_mut().failed_items[i] += batch.items - p.items;
                if p.chunks.is_empty() {
                    // Nothing left to send once converted.
                    return true;
                }
                p
            }
            None => batch,
        };
        let mut backoff = Backoff::new(self.retry.get(), Instant::now());
        loop {
            // After a reload, the next attempt goes out with the new settings.
            let exporter = self.exporter.borrow().clone();
            let export = Contained::new(Box::pin(exporter.export(worker, batch)));
            let result = export.await.unwrap_or_else(|p| Err(p.into()));
            let now = Instant::now();
            let err = match result {
                Ok(reply) => {
                    let rejected = reply.rejected.min(batch.items);
                    let mut stats = self.stats.borrow_mut();
                    stats.sent_requests[i] += 1;
                    stats.sent_items[i] += batch.items - rejected;
                    stats.failed_items[i] += rejected;
                    drop(stats);
                    if reply.rejected > 0 {
                        self.report
                            .borrow_mut()
                            .rejected(rejected, || reply.message, now);
                    }
                    return true;
                }
                Err(err) => err,
            };
            let retry_in = match err.disposition() {
                Disposition::Retry { after } if self.retry.get().enabled => {
                    backoff.next_delay(now, after, random_unit())
                }
                _ => None,
            };
            match retry_in {
                Some(delay) => {
                    {
                        let mut stats = self.stats.borrow_mut();
                        stats.retries_by_signal[i] += 1;
                        stats.retries += 1;
                    }
                    log::debug!(
                        "exporter {} (core {}): retrying in {delay:?}: {err}",
                        self.name,
                        self.core
                    );
                    self.report.borrow_mut().retry(|| err.to_string(), now);
                    if !self.sleep_unless_closed(delay).await {
                        return false;
                    }
                }
                None => {
                    self.failed(i, batch.items, &err, now);
                    return true;
                }
            }
        }
    }

    /// Books a batch of `items` that failed for good with `err`.
    fn failed(&self, i: usize, items: u64, err: &ExportError, now: Instant) {
        let mut stats = self.stats.borrow_mut();
        stats.failed_requests[i] += 1;
        stats.failed_items[i] += items;
        drop(stats);
        let gave_up = matches!(err.disposition(), Disposition::Retry { .. });
        self.report.borrow_mut().permanent(
            items,
            || {
                if gave_up && self.retry.get().enabled {
                    format!("gave up retrying: {err}")
                } else {
                    err.to_string()
                }
            },
            now,
        );
    }
}

/// Closes batches when their timeout passes.
async fn batch_timer(s: Rc<Shared>) {
    loop {
        let opened = s.opened.notified();
        if s.closed.get() {
            return;
        }
        let deadline = s.batcher.borrow().next_deadline();
        match deadline {
            None => opened.await,
            Some(at) => {
                let now = Instant::now();
                if at > now && !s.sleep_unless_closed(at - now).await {
                    return;
                }
                let mut closed_any = false;
                s.batcher
                    .borrow_mut()
                    .flush_expired(Instant::now(), |batch| {
                        s.ready.borrow_mut().push_back(batch);
                        closed_any = true;
                    });
                if closed_any {
                    s.work.notify_all();
                }
            }
        }
    }
}

/// One sender: takes closed batches in order and sends them.
async fn sender(s: Rc<Shared>, worker: usize) {
    loop {
        let work = s.work.notified();
        if s.closed.get() {
            return;
        }
        let next = s.ready.borrow_mut().pop_front();
        let Some(batch) = next else {
            work.await;
            continue;
        };
        s.in_flight.set(s.in_flight.get() + 1);
        s.send_with_retry(worker, &batch).await;
        s.in_flight.set(s.in_flight.get() - 1);
        s.queue_bytes.set(s.queue_bytes.get() - batch.held);
        s.progress.notify_all();
    }
}

/// Disk queues: appends closed batches to the log; a batch's bytes are released once its
/// append is durable. A failed append puts the batch back and retries after a pause; a full
/// log waits for room (or drops the oldest segment with `overflow = "drop_oldest"`).
async fn saver(s: Rc<Shared>) {
    let Some(disk) = &s.disk else { return };
    loop {
        let work = s.work.notified();
        if s.closed.get() {
            return;
        }
        if let Some(at) = s.save_retry_at.get() {
            let now = Instant::now();
            if at > now && !s.sleep_unless_closed(at - now).await {
                return;
            }
            s.save_retry_at.set(None);
        }
        let next = s.ready.borrow_mut().pop_front();
        let Some(batch) = next else {
            work.await;
            continue;
        };
        match disk.append(&batch) {
            Ok(append) => {
                let s = s.clone();
                glommio::spawn_local(async move {
                    match append.durable().await {
                        Ok(_) => {
                            s.queue_bytes.set(s.queue_bytes.get() - batch.held);
                            s.progress.notify_all();
                        }
                        Err(err) => {
                            s.report
                                .borrow_mut()
                                .retry(|| format!("disk queue: {err}"), Instant::now());
                            s.ready.borrow_mut().push_front(batch);
                            s.save_retry_at
                                .set(Some(Instant::now() + std::time::Duration::from_millis(100)));
                            s.work.notify_all();
                        }
                    }
                })
                .detach();
            }
            Err(err) => {
                s.ready.borrow_mut().push_front(batch);
                let dropped = matches!(err, shardtel_wal::WalError::Full { .. })
                    && disk.overflow() == shardtel_config::QueueOverflow::DropOldest
                    && disk.drop_oldest();
                if !dropped {
                    s.save_retry_at
                        .set(Some(Instant::now() + std::time::Duration::from_millis(50)));
                }
            }
        }
    }
}

/// The first wait after a failed read of a disk queue, doubled up to [`FETCH_RETRY_MAX`].
const FETCH_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const FETCH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Disk queues: one sender reads the next durable batch from the log, sends it with retries,
/// and marks it done, which moves the log's checkpoint past every finished batch.
async fn disk_sender(s: Rc<Shared>, worker: usize) {
    let Some(disk) = &s.disk else { return };
    // A log that cannot be read (a failing disk) is retried with backoff, and said once per
    // REPORT_INTERVAL with what was held back: not ten lines a second onto that same disk.
    let read_errors = crate::report::Throttle::new(REPORT_INTERVAL);
    let mut read_backoff = FETCH_RETRY_MIN;
    loop {
        let closing = s.closing.notified();
        if s.closed.get() {
            return;
        }
        let fetched = future::or(async { Some(disk.fetch().await) }, async {
            closing.await;
            None
        })
        .await;
        let (lsn, batch) = match fetched {
            None | Some(Ok(None)) => return,
            Some(Ok(Some(next))) => next,
            Some(Err(err)) => {
                if let Some(more) = read_errors.due(Instant::now()) {
                    log::error!(
                        "exporter {} (core {}): reading its disk queue: {err}; retrying{more}",
                        s.name,
                        s.core
                    );
                }
                if !s.sleep_unless_closed(read_backoff).await {
                    return;
                }
                read_backoff = (read_backoff * 2).min(FETCH_RETRY_MAX);
                continue;
            }
        };
        read_backoff = FETCH_RETRY_MIN;
        s.in_flight.set(s.in_flight.get() + 1);
        let finished = s.send_with_retry(worker, &batch).await;
        s.in_flight.set(s.in_flight.get() - 1);
        if finished {
            disk.done(lsn);
        }
        s.progress.notify_all();
    }
}

/// Logs suppressed failure summaries once the interval has passed.
async fn failure_reporter(s: Rc<Shared>) {
    while s.sleep_unless_closed(REPORT_INTERVAL).await {
        s.report.borrow_mut().maybe_log(Instant::now());
    }
}
