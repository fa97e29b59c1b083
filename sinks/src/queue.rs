//! [`ExportQueue`]: batcher → bounded in-memory queue → sender tasks with retry,
//! for one exporter on one core.
//!
//! Every byte accepted by [`ExportQueue::try_push`] is counted in `queue_bytes`
//! until its batch is sent or has failed for good, so open batches, queued
//! batches and batches in flight together never exceed `queue.max_bytes`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use shardtel_config::ExporterConfig;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::Signal;

use crate::batch::{Batch, Batcher};
use crate::error::{Disposition, ExportError, QueueFull, SinkError};
use crate::exporter::{Exporter, QueueSettings};
use crate::notify::Notify;
use crate::report::{FailureReport, REPORT_INTERVAL};
use crate::retry::{random_unit, Backoff, RetryPolicy};
use crate::stats::{signal_index, ExporterStats};

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

/// One exporter instance on one core: batcher → bounded in-memory queue →
/// sender task(s) with retry. `!Send`: it lives and dies on its core.
pub struct ExportQueue {
    shared: Rc<Shared>,
}

struct Shared {
    name: String,
    core: usize,
    exporter: Exporter,
    retry: RetryPolicy,
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
}

impl ExportQueue {
    /// Builds the exporter for `core` and spawns its background tasks (batch
    /// timer, senders, failure reporter) on the current glommio executor.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor.
    pub fn start(cfg: &ExporterConfig, core: usize) -> Result<Rc<ExportQueue>, SinkError> {
        Self::start_on(cfg, core, 1)
    }

    /// [`ExportQueue::start`] for `core` of `cores`: exporters that own part of the data by
    /// routing key (`prometheusremotewrite` writes the `target_info` of the resources its core
    /// owns) need the count.
    pub fn start_on(
        cfg: &ExporterConfig,
        core: usize,
        cores: usize,
    ) -> Result<Rc<ExportQueue>, SinkError> {
        let (exporter, settings) = Exporter::build(cfg, core, cores)?;
        Ok(Self::with_exporter(
            cfg.name.clone(),
            core,
            exporter,
            settings,
        ))
    }

    fn with_exporter(
        name: String,
        core: usize,
        exporter: Exporter,
        settings: QueueSettings,
    ) -> Rc<Self> {
        let senders = exporter.senders();
        let label = format!("exporter {name} (core {core})");
        let shared = Rc::new(Shared {
            name,
            core,
            exporter,
            retry: settings.retry,
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
        });
        glommio::spawn_local(batch_timer(shared.clone())).detach();
        glommio::spawn_local(failure_reporter(shared.clone())).detach();
        for worker in 0..senders {
            glommio::spawn_local(sender(shared.clone(), worker)).detach();
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
        let s = &*self.shared;
        let held = s.queue_bytes.get();
        if !s.admits(piece.len) {
            s.stats.borrow_mut().refused_items[signal_index(signal)] += items;
            return Err(QueueFull {
                needed: piece.len,
                queued_bytes: held,
                max_bytes: s.max_bytes,
            });
        }
        s.queue_bytes.set(held + piece.len);
        let mut closed_any = false;
        let opened = s
            .batcher
            .borrow_mut()
            .push(signal, piece, items, Instant::now(), |batch| {
                s.ready.borrow_mut().push_back(batch);
                closed_any = true;
            });
        if closed_any {
            s.work.notify_all();
        }
        if opened {
            s.opened.notify_all();
        }
        Ok(())
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
    /// failed for good (then syncs files to disk), or until `deadline`.
    pub async fn drain(&self, deadline: Instant) -> DrainOutcome {
        let s = &*self.shared;
        loop {
            let progressed = s.progress.notified();
            s.flush_open_batches();
            if s.queue_bytes.get() == 0 && s.ready.borrow().is_empty() && s.in_flight.get() == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return DrainOutcome::TimedOut {
                    queue_bytes: s.queue_bytes.get(),
                    batches: s.ready.borrow().len() + s.in_flight.get(),
                };
            }
            future::or(progressed, glommio::timer::sleep(deadline - now)).await;
        }
        if let Err(err) = s.exporter.sync().await {
            log::warn!("exporter {} (core {}): {err}", s.name, s.core);
        }
        s.report.borrow_mut().flush(Instant::now());
        DrainOutcome::Drained
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ExporterStats {
        let s = &*self.shared;
        let mut stats = *s.stats.borrow();
        stats.queue_bytes = s.queue_bytes.get();
        stats.queued_batches = s.ready.borrow().len();
        stats.in_flight = s.in_flight.get();
        s.exporter.add_stats(&mut stats);
        stats
    }

    /// The exporter's configured name (`[exporters.NAME]`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The exporter's kind: `otlp`, `otlphttp`, `file`, `kafka` or `blackhole`.
    pub fn kind(&self) -> &'static str {
        self.shared.exporter.kind()
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
        held + bytes <= self.max_bytes || (held == 0 && bytes > self.max_bytes)
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
        future::or(
            async {
                glommio::timer::sleep(delay).await;
                true
            },
            async {
                closing.await;
                false
            },
        )
        .await
    }

    /// Sends one batch, retrying as the policy allows, and books the outcome.
    async fn send_with_retry(&self, worker: usize, batch: &Batch) {
        let i = signal_index(batch.signal);
        // Kinds that convert (prometheusremotewrite, loki) do it once, before the first attempt.
        let prepared = match self.exporter.prepare(batch).await {
            Ok(prepared) => prepared,
            Err(err) => return self.failed(i, batch.items, &err, Instant::now()),
        };
        let batch = match &prepared {
            Some(p) => {
                self.stats.borrow_mut().failed_items[i] += batch.items - p.items;
                if p.chunks.is_empty() {
                    // Nothing left to send once converted.
                    return;
                }
                p
            }
            None => batch,
        };
        let mut backoff = Backoff::new(self.retry, Instant::now());
        loop {
            let result = self.exporter.export(worker, batch).await;
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
                    return;
                }
                Err(err) => err,
            };
            let retry_in = match err.disposition() {
                Disposition::Retry { after } if self.retry.enabled => {
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
                        return;
                    }
                }
                None => return self.failed(i, batch.items, &err, now),
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
                if gave_up && self.retry.enabled {
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
        s.queue_bytes.set(s.queue_bytes.get() - batch.bytes);
        s.progress.notify_all();
    }
}

/// Logs suppressed failure summaries once the interval has passed.
async fn failure_reporter(s: Rc<Shared>) {
    while s.sleep_unless_closed(REPORT_INTERVAL).await {
        s.report.borrow_mut().maybe_log(Instant::now());
    }
}
