//! One reactor's state and lifecycle: the [`Core`] value built inside its
//! glommio executor, its exporters, its mesh ends, and the ingest path that
//! routes spans to their owner core.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::sync::Semaphore;
use shardtel_config::{Config, ProcessorConfig};
use shardtel_protocol::reframe::{
    encode_trace_spans, encode_trace_spans_rewritten, encode_traces, Encoded,
};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{scan_logs, scan_metrics, Hold, SpanBatch, TracesIndex};
use shardtel_protocol::Signal;
use shardtel_sinks::ExportQueue;

use crate::durability::{IngestLog, Tracked};
use crate::ingest::IngestError;
use crate::memory_limiter::{default_inflight_bytes, CoreLimiter, MemorySetup};
use crate::mesh::{MeshEnds, MeshMessage};
use crate::metric_routing::{self, MetricsRouter};
use crate::processors::Processors;
use crate::receiver;
use crate::receiver::connections::ConnectionLimit;
use crate::sampler::{CoreShare, Kept, Sampler};
use crate::telemetry::{
    self, signal_index, Board, CoreState, MeshCounters, ReceiverCounters, Transport,
};

/// Request bytes in flight charged to every admitted request besides its body: its headers
/// (an HTTP/2 header list is at most 8 KiB; HTTP/1.1 headers stay in the connection's read
/// buffer) and its state.
pub const REQUEST_OVERHEAD: usize = 16 << 10;

/// How long a receiving core waits for room on a full mesh channel before it
/// refuses the request as overloaded.
const MESH_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a core needs to start; built on the main thread, moved into
/// the executor.
pub struct CoreSetup {
    /// Core index, `0..cores`.
    pub id: usize,
    /// CPU the executor is pinned to.
    pub cpu: usize,
    /// Number of cores.
    pub cores: usize,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// This core's ends of the mesh.
    pub mesh: MeshEnds,
    /// Where state and snapshots are published.
    pub board: Arc<Board>,
    /// Set by the signal thread to start draining.
    pub shutdown: Arc<AtomicBool>,
    /// Start-up outcome, read by the main thread.
    pub ready: mpsc::Sender<Result<usize, String>>,
    /// The memory limiter, when a pipeline lists one.
    pub memory: Option<MemorySetup>,
}

/// Limits that bound one core's intake.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted message, compressed or not, in bytes.
    pub max_recv_msg_size: usize,
    /// Request bytes being processed on this core at once; above it new
    /// requests are refused as overloaded.
    pub max_inflight_bytes: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

/// One reactor's state. `!Send`: it never leaves its core.
pub struct Core {
    /// Core index.
    pub id: usize,
    /// Number of cores.
    pub cores: usize,
    /// CPU it is pinned to.
    pub cpu: usize,
    /// Intake limits.
    pub limits: Limits,
    /// Receiver counters.
    pub counters: ReceiverCounters,
    /// OTLP connections served on this core, and its share of `max_connections`.
    pub connections: ConnectionLimit,
    mesh_counters: MeshCounters,
    senders: OnceCell<Vec<Option<ConnectedSender<MeshMessage>>>>,
    /// One permit per destination: glommio's `send().await` must not be
    /// awaited by two tasks at once on the same sender.
    send_permits: Vec<Semaphore>,
    exporters: Vec<Rc<ExportQueue>>,
    pipelines: [Vec<Rc<ExportQueue>>; 3],
    scratch: RefCell<TracesIndex>,
    parts: RefCell<Vec<TracesIndex>>,
    inflight_bytes: Cell<usize>,
    inflight_requests: Cell<usize>,
    /// Closed when draining starts; every waiter wakes.
    drain_signal: Semaphore,
    board: Arc<Board>,
    /// Latest counters of this core's Kafka consumer (`crate::kafka_receiver`), published
    /// with the core's snapshot.
    pub(crate) kafka_snapshot: RefCell<Option<telemetry::KafkaConsumerSnapshot>>,
    /// The tail sampler of the traces pipeline, when it has one. Spans
    /// owned by this core pass through it before any exporter.
    sampler: Option<RefCell<Sampler>>,
    /// The attributes, resource and filter processors of every pipeline.
    processors: Processors,
    /// The memory limiter's view from this core.
    memory: Option<CoreLimiter>,
    /// Splits metrics by series owner when the metrics pipeline keeps per-series state.
    metrics_router: Option<MetricsRouter>,
    /// This core's ingest log, with `durability = "ack_after_sync"`.
    ingest_log: Option<IngestLog>,
}

impl Core {
    /// True once draining started.
    pub fn draining(&self) -> bool {
        self.drain_signal.try_acquire(1).is_err()
    }

    /// Resolves when draining starts.
    pub async fn wait_draining(&self) {
        let _ = self.drain_signal.acquire(1).await;
    }

    /// Admits a request, charging [`REQUEST_OVERHEAD`] to the core's request bytes in flight,
    /// or refuses it. Its body is charged as it arrives ([`InflightGuard::try_add`]).
    pub fn admit(&self) -> Result<InflightGuard<'_>, IngestError> {
        if self.draining() {
            return Err(IngestError::Draining);
        }
        let guard = InflightGuard {
            core: self,
            bytes: Cell::new(0),
        };
        self.inflight_requests.set(self.inflight_requests.get() + 1);
        guard.try_add(REQUEST_OVERHEAD)?;
        Ok(guard)
    }

    /// Like [`Core::admit`], also refusing when the memory limiter guards `signal` and the
    /// process is above its soft limit.
    pub fn admit_signal(&self, signal: Signal) -> Result<InflightGuard<'_>, IngestError> {
        if let Some(m) = &self.memory {
            m.check(signal, || self.buffered_bytes())?;
        }
        self.admit()
    }

    /// Data this core holds now: request bytes in flight, its export queues' bytes in memory
    /// and its tail sampler's charge (what the memory limiter's buffered threshold counts).
    fn buffered_bytes(&self) -> u64 {
        let queued: usize = self.exporters.iter().map(|e| e.queued_bytes()).sum();
        let sampled = self
            .sampler
            .as_ref()
            .map_or(0, |s| s.borrow().stats().buffered_bytes);
        (self.inflight_bytes.get() + queued) as u64 + sampled
    }

    /// Ingests one decoded (decompressed, protobuf) Export*ServiceRequest
    /// and counts the outcome. Returns the number of items accepted.
    pub async fn ingest(
        &self,
        signal: Signal,
        transport: Transport,
        body: Bytes,
    ) -> Result<u64, IngestError> {
        if self.pipelines[signal_index(signal)].is_empty() {
            self.counters.failed_request(signal, transport);
            return Err(IngestError::NoPipeline(signal));
        }
        if let Some(Err(e)) = self.memory.as_ref().map(|m| m.check_resident(signal)) {
            self.counters.refused(signal, transport, 0);
            return Err(e);
        }
        // A full exporter queue on this core refuses at once, before any write to the ingest
        // log and before the tail sampler, whose kept spans would otherwise wait for room while
        // the client waits for its answer.
        if self.pipelines[signal_index(signal)]
            .iter()
            .any(|e| !e.has_room(body.len()))
        {
            self.counters.failed_request(signal, transport);
            return Err(IngestError::Overloaded("an exporter queue is full"));
        }
        // Acknowledged means durable: the request is on disk before it is routed.
        let (body, hold) = match &self.ingest_log {
            Some(log) => match log.append(signal, body).await {
                Ok(tracked) => (tracked.body, Some(tracked.hold)),
                Err(e) => {
                    self.counters.failed_request(signal, transport);
                    return Err(e);
                }
            },
            None => (body, None),
        };
        match self.route(signal, body, hold).await {
            Err(e) => {
                self.counters.failed_request(signal, transport);
                Err(e)
            }
            Ok((n, Ok(_))) => {
                self.counters.accepted(signal, transport, n);
                Ok(n)
            }
            Ok((n, Err(e))) => {
                self.counters.refused(signal, transport, n);
                Err(e)
            }
        }
    }

    /// Replays a request from the ingest log: routed like a new one (without logging it
    /// again, unless `relog`: a request of another core's log goes into this core's log
    /// first), waiting out refusals.
    pub(crate) async fn replay(&self, signal: Signal, tracked: Tracked, relog: bool) {
        let mut wait = Duration::from_millis(10);
        loop {
            let body = match (&self.ingest_log, relog) {
                (Some(log), true) => match log.append(signal, tracked.body.clone()).await {
                    Ok(tracked) => tracked,
                    Err(e) if e.is_retryable() => {
                        glommio::timer::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => {
                        log::warn!(
                            "core {}: skipped a replayed {} request: {e}",
                            self.id,
                            signal.name()
                        );
                        return;
                    }
                },
                _ => Tracked {
                    body: tracked.body.clone(),
                    hold: tracked.hold.clone(),
                },
            };
            match self.route(signal, body.body, Some(body.hold)).await {
                Ok((_, Ok(_))) => return,
                Ok((_, Err(e))) if e.is_retryable() => {
                    glommio::timer::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Ok((_, Err(e))) | Err(e) => {
                    log::warn!(
                        "core {}: skipped a replayed {} request: {e}",
                        self.id,
                        signal.name()
                    );
                    return;
                }
            }
        }
    }

    /// Scans and routes a request. The outer error is a malformed request; the inner one a
    /// refusal of a well-formed request of `n` items.
    #[allow(clippy::type_complexity)]
    async fn route(
        &self,
        signal: Signal,
        body: Bytes,
        hold: Option<Hold>,
    ) -> Result<(u64, Result<u64, IngestError>), IngestError> {
        match signal {
            Signal::Traces => self.ingest_traces(body, hold).await,
            Signal::Metrics if self.metrics_router.is_some() => {
                self.ingest_routed_metrics(body).await
            }
            Signal::Metrics => match scan_metrics(&body) {
                Ok(counts) => {
                    let n = counts.items as u64;
                    let held = body.len();
                    let (piece, kept) = self.process_request(signal, body, n);
                    let held = held_bytes(piece.len, held);
                    Ok((
                        n,
                        self.push_local(signal, piece, None, kept, held).map(|_| n),
                    ))
                }
                Err(e) => Err(IngestError::Malformed(format!(
                    "malformed ExportMetricsServiceRequest: {e}"
                ))),
            },
            Signal::Logs => match scan_logs(&body) {
                Ok(counts) => {
                    let n = counts.items as u64;
                    let held = body.len();
                    let (piece, kept) = self.process_request(signal, body, n);
                    let held = held_bytes(piece.len, held);
                    Ok((
                        n,
                        self.push_local(signal, piece, None, kept, held).map(|_| n),
                    ))
                }
                Err(e) => Err(IngestError::Malformed(format!(
                    "malformed ExportLogsServiceRequest: {e}"
                ))),
            },
        }
    }

    /// True when requests are acknowledged only once on disk.
    pub fn durable(&self) -> bool {
        self.ingest_log.is_some()
    }

    /// The time and, with an ingest log, its next and first unreleased LSNs, the watermark moved
    /// over what was released so far (the Kafka receiver commits an offset once the frame of
    /// its message is released).
    pub(crate) fn offset_clock(&self) -> crate::kafka_offsets::Clock {
        let now = Instant::now();
        match &self.ingest_log {
            Some(log) => {
                log.advance();
                let (next_lsn, released_below) = log.position();
                crate::kafka_offsets::Clock {
                    now,
                    next_lsn,
                    released_below,
                }
            }
            None => crate::kafka_offsets::Clock::at(now),
        }
    }

    /// Scans and routes a trace request. The outer error is a malformed
    /// request; the inner one a refusal of a well-formed request of `n` spans.
    #[allow(clippy::type_complexity)]
    async fn ingest_traces(
        &self,
        body: Bytes,
        hold: Option<Hold>,
    ) -> Result<(u64, Result<u64, IngestError>), IngestError> {
        // (spans owned here, true when they are the whole request as received)
        let mut local: Option<(SpanBatch, bool)> = None;
        let mut remote: Vec<(usize, SpanBatch)> = Vec::new();
        let items;
        {
            let mut index = self.scratch.borrow_mut();
            index.scan(&body).map_err(|e| {
                IngestError::Malformed(format!("malformed ExportTraceServiceRequest: {e}"))
            })?;
            items = index.spans.len() as u64;
            if items == 0 {
                return Ok((0, Ok(0)));
            }
            let n = self.cores;
            let mut parts = self.parts.borrow_mut();
            if n > 1 {
                index.partition(n, |t| owner_core(t, n), &mut parts);
            }
            let single = n == 1 || parts.iter().filter(|p| !p.spans.is_empty()).count() == 1;
            if single {
                let dest = if n == 1 {
                    0
                } else {
                    owner_core(&index.spans[0].trace_id, n)
                };
                if dest == self.id {
                    // The request as received is already the request to export; only
                    // the sampler, processors and exporters that cut messages from the
                    // index need it.
                    let index = if self.sampler.is_some()
                        || self.processors.traces_before.is_some()
                        || self.traces_want_index()
                    {
                        index.clone()
                    } else {
                        TracesIndex::default()
                    };
                    local = Some((
                        SpanBatch {
                            buf: body.clone(),
                            index,
                            hold: hold.clone(),
                        },
                        true,
                    ));
                } else {
                    remote.push((
                        dest,
                        SpanBatch {
                            buf: body.clone(),
                            index: index.clone(),
                            hold: hold.clone(),
                        },
                    ));
                }
            } else {
                for (dest, part) in parts.iter_mut().enumerate() {
                    if part.spans.is_empty() {
                        continue;
                    }
                    let batch = SpanBatch {
                        buf: body.clone(),
                        index: std::mem::take(part),
                        hold: hold.clone(),
                    };
                    if dest == self.id {
                        local = Some((batch, false));
                    } else {
                        remote.push((dest, batch));
                    }
                }
            }
        }
        // Local first: if it is refused, nothing has left this core yet and
        // the client's retry creates no duplicate.
        if let Some((mut batch, mut is_whole)) = local {
            is_whole &= !self.process_owned(&mut batch);
            let pushed = if batch.index.spans.is_empty() && !is_whole {
                Ok(())
            } else if self.sampler.is_some() {
                self.sample(batch).await;
                Ok(())
            } else if is_whole {
                let held = batch.buf.len();
                let piece = whole(batch.buf.clone());
                // (The index is empty when no one needs it.)
                let index = self.shared_index(batch, items);
                self.push_local(Signal::Traces, piece, index.as_ref(), items, held)
            } else {
                let mut enc = Encoded::default();
                encode_traces(&batch, &mut enc);
                let held = held_bytes(enc.len, batch.buf.len());
                let spans = batch.index.spans.len() as u64;
                let index = self.shared_index(batch, spans);
                self.push_local(Signal::Traces, enc, index.as_ref(), spans, held)
            };
            if let Err(e) = pushed {
                return Ok((items, Err(e)));
            }
        }
        for (dest, batch) in remote {
            if let Err(e) = self.send_to(dest, MeshMessage::Spans(batch)).await {
                return Ok((items, Err(e)));
            }
        }
        Ok((items, Ok(items)))
    }

    /// Splits a metrics request by series owner (see [`crate::metric_routing`]): the local
    /// part first, then the others over the mesh. Errors as for [`Core::ingest_traces`].
    #[allow(clippy::type_complexity)]
    async fn ingest_routed_metrics(
        &self,
        body: Bytes,
    ) -> Result<(u64, Result<u64, IngestError>), IngestError> {
        let Some(router) = &self.metrics_router else {
            return Ok((0, Ok(0)));
        };
        let malformed =
            |e| IngestError::Malformed(format!("malformed ExportMetricsServiceRequest: {e}"));
        // The metrics processors run on the receiving core, before the split. A request they
        // changed is joined into one buffer (a copy of that request only) to be split.
        let mut dropped = 0;
        if self.processors.request_chain(Signal::Metrics).is_some() {
            scan_metrics(&body).map_err(malformed)?;
        }
        let body = match self.run_request_chain(Signal::Metrics, &body) {
            Some((piece, outcome)) => {
                dropped = outcome.dropped;
                let mut joined = Vec::with_capacity(piece.len);
                for chunk in &piece.chunks {
                    joined.extend_from_slice(chunk);
                }
                crate::processors::held(Bytes::from(joined), &body)
            }
            None => body,
        };
        let (points, mut parts) = router.split(&body, self.cores).map_err(malformed)?;
        let points = points + dropped;
        // Local first, as for spans: a refusal leaves nothing behind on other cores.
        parts.sort_by_key(|p| p.core != self.id);
        for part in parts {
            let held = held_bytes(part.piece.len, body.len());
            let pushed = if part.core == self.id {
                self.push_local(Signal::Metrics, part.piece, None, part.points, held)
            } else {
                let message = MeshMessage::Metrics {
                    piece: part.piece,
                    points: part.points,
                    held,
                };
                self.send_to(part.core, message).await
            };
            if let Err(e) = pushed {
                return Ok((points, Err(e)));
            }
        }
        Ok((points, Ok(points)))
    }

    /// Sends a message to its owner core, waiting at most [`MESH_SEND_TIMEOUT`]
    /// for room.
    async fn send_to(&self, dest: usize, batch: MeshMessage) -> Result<(), IngestError> {
        let Some(sender) = self.senders.get().and_then(|s| s[dest].as_ref()) else {
            return Err(IngestError::Draining);
        };
        let send = async {
            let _permit = self.send_permits[dest]
                .acquire_permit(1)
                .await
                .map_err(|_| IngestError::Draining)?;
            sender.send(batch).await.map_err(|_| IngestError::Draining)
        };
        match glommio::timer::timeout(MESH_SEND_TIMEOUT, async { Ok(send.await) }).await {
            Ok(Ok(())) => {
                let c = &self.mesh_counters.sent[dest];
                c.set(c.get() + 1);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let c = &self.mesh_counters.send_timeouts;
                c.set(c.get() + 1);
                Err(IngestError::Overloaded("the owner core's channel is full"))
            }
        }
    }

    /// Hands an encoded piece that keeps `held` bytes alive (see [`held_bytes`]) to every
    /// exporter of the signal's pipeline on this core, refusing if any queue is full. `index`:
    /// the spans the piece was encoded from, for exporters that cut messages from it.
    fn push_local(
        &self,
        signal: Signal,
        piece: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        held: usize,
    ) -> Result<(), IngestError> {
        if piece.is_empty() {
            return Ok(());
        }
        let exporters = &self.pipelines[signal_index(signal)];
        if exporters.iter().any(|e| !e.has_room(held.max(piece.len))) {
            return Err(IngestError::Overloaded("an exporter queue is full"));
        }
        for exporter in exporters {
            if exporter
                .try_push_indexed(signal, piece.clone(), index, items, held)
                .is_err()
            {
                return Err(IngestError::Overloaded("an exporter queue is full"));
            }
        }
        Ok(())
    }

    /// Delivers a batch received from another core: through the sampler if
    /// there is one, else straight to the exporters, waiting for queue room
    /// (backpressure flows back through the mesh).
    async fn deliver(&self, message: MeshMessage) {
        let mut batch = match message {
            MeshMessage::Spans(batch) => batch,
            MeshMessage::Metrics {
                piece,
                points,
                held,
            } => {
                return self
                    .push_wait(Signal::Metrics, piece, None, points, held)
                    .await;
            }
        };
        self.process_owned(&mut batch);
        if batch.index.spans.is_empty() {
            return;
        }
        if self.sampler.is_some() {
            return self.sample(batch).await;
        }
        let mut enc = Encoded::default();
        encode_traces(&batch, &mut enc);
        let items = batch.index.spans.len() as u64;
        let held = held_bytes(enc.len, batch.buf.len());
        let index = self.shared_index(batch, items);
        self.push_wait(Signal::Traces, enc, index.as_ref(), items, held)
            .await;
    }

    /// Whether an exporter of the traces pipeline cuts messages from the spans' index.
    fn traces_want_index(&self) -> bool {
        self.pipelines[signal_index(Signal::Traces)]
            .iter()
            .any(|e| e.wants_span_index())
    }

    /// `batch` (the owner core's spans, encoded into the piece being pushed) shared with the
    /// exporters that cut messages from its index, when there is one and it indexes all
    /// `items` spans; moved, not copied.
    fn shared_index(&self, batch: SpanBatch, items: u64) -> Option<Arc<SpanBatch>> {
        (batch.index.spans.len() as u64 == items && self.traces_want_index())
            .then(|| Arc::new(batch))
    }

    /// Pushes a piece that keeps `held` bytes alive to every exporter of the signal, waiting
    /// for room in each (`index`: as for [`Core::push_local`]).
    async fn push_wait(
        &self,
        signal: Signal,
        enc: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        held: usize,
    ) {
        for exporter in &self.pipelines[signal_index(signal)] {
            loop {
                exporter.reserve(held.max(enc.len)).await;
                if exporter
                    .try_push_indexed(signal, enc.clone(), index, items, held)
                    .is_ok()
                {
                    break;
                }
            }
        }
    }

    /// Hands spans this core owns to the tail sampler and exports what it
    /// decided to keep (late spans of sampled traces, early decisions).
    async fn sample(&self, batch: SpanBatch) {
        let mut kept = Vec::new();
        if let Some(sampler) = &self.sampler {
            sampler.borrow_mut().add(batch, Instant::now(), &mut kept);
        }
        self.export_kept(kept).await;
    }

    /// Encodes kept spans into one request (protobuf concatenation) and
    /// pushes it to the traces exporters. With processors listed after the sampler, they run on
    /// the kept spans of each batch in place: the batch (shared with its spans still buffered)
    /// is neither copied nor changed, their changes are applied while encoding.
    async fn export_kept(&self, kept: Vec<Kept>) {
        if kept.is_empty() {
            return;
        }
        let mut enc = Encoded::default();
        let mut items = 0u64;
        let mut held = 0usize;
        for k in &kept {
            let before = enc.len;
            match &self.processors.traces_after {
                None => {
                    encode_trace_spans(&k.batch, &k.spans, &mut enc);
                    items += k.spans.len() as u64;
                }
                Some(chain) => {
                    let changes = chain.process_trace_spans(&k.batch, &k.spans);
                    let rewrites = Some(&changes.rewrites);
                    if changes.dropped.is_empty() {
                        encode_trace_spans_rewritten(&k.batch, &k.spans, rewrites, &mut enc);
                        items += k.spans.len() as u64;
                    } else {
                        let mut dropped = changes.dropped.iter().peekable();
                        let left: Vec<u32> = k
                            .spans
                            .iter()
                            .copied()
                            .filter(|&i| dropped.next_if_eq(&&i).is_none())
                            .collect();
                        encode_trace_spans_rewritten(&k.batch, &left, rewrites, &mut enc);
                        items += left.len() as u64;
                    }
                }
            }
            if enc.len > before {
                held += held_bytes(enc.len - before, k.batch.buf.len());
            }
        }
        drop(kept);
        if enc.is_empty() {
            return;
        }
        self.push_wait(Signal::Traces, enc, None, items, held).await;
    }

    /// Decides the traces whose time has come; returns when the next one is due.
    async fn sampler_tick(&self) -> Duration {
        let Some(sampler) = &self.sampler else {
            return Duration::from_secs(1);
        };
        let mut kept = Vec::new();
        let now = Instant::now();
        let next = {
            let mut s = sampler.borrow_mut();
            s.tick(now, &mut kept);
            s.next_deadline()
        };
        self.export_kept(kept).await;
        next.map_or(Duration::from_millis(100), |d| {
            d.saturating_duration_since(Instant::now())
        })
        .clamp(Duration::from_millis(1), Duration::from_millis(100))
    }

    /// Runs the traces processors listed before the sampler (all of them without one) on a
    /// batch this core owns. Returns whether anything changed.
    fn process_owned(&self, batch: &mut SpanBatch) -> bool {
        match &self.processors.traces_before {
            Some(chain) => chain.process_traces(batch).changed,
            None => false,
        }
    }

    /// Runs a metrics or logs pipeline's processors on a validated request of `items` items:
    /// the piece to export and how many items it holds.
    fn process_request(&self, signal: Signal, body: Bytes, items: u64) -> (Encoded, u64) {
        match self.run_request_chain(signal, &body) {
            Some((piece, outcome)) => (piece, items.saturating_sub(outcome.dropped)),
            None => (whole(body), items),
        }
    }

    /// Runs a metrics or logs pipeline's processors on a validated request: the changed request
    /// and what the chain did, or `None` when there is no chain or it changed nothing.
    fn run_request_chain(
        &self,
        signal: Signal,
        body: &Bytes,
    ) -> Option<(Encoded, crate::processors::ChainOutcome)> {
        match self.processors.request_chain(signal)?.process_request(body) {
            Ok(changed) => changed,
            Err(e) => {
                // The scanner accepted the request, so the walk cannot fail; export it as is.
                log::warn!(
                    "core {}: {signal} processors skipped a request: {e}",
                    self.id
                );
                None
            }
        }
    }

    fn publish(&self) {
        let exporters = self
            .exporters
            .iter()
            .map(|e| (e.name().to_string(), e.kind(), e.stats()))
            .collect();
        let mut snapshot = telemetry::snapshot(
            self.id,
            self.cpu,
            &self.counters,
            &self.mesh_counters,
            exporters,
        );
        snapshot.kafka_receiver = self.kafka_snapshot.borrow().clone();
        snapshot.sampler = self.sampler.as_ref().map(|s| s.borrow().stats().clone());
        snapshot.processors = self.processors.snapshot();
        snapshot.memory = self.memory.as_ref().map(CoreLimiter::snapshot);
        snapshot.ingest_log = self.ingest_log.as_ref().map(IngestLog::snapshot);
        snapshot.connections = Some(self.connections.snapshot()).filter(|c| c.limit > 0);
        self.board.publish(snapshot);
    }
}

/// What an export queue is charged for a piece of `piece` bytes whose chunks are slices of a
/// request buffer of `buffer` bytes: the buffer stays in memory while any slice of it does, so
/// the piece is charged its own bytes but at least a quarter of the buffer (as the tail sampler
/// charges what it holds). Every buffer a queue keeps alive is then charged at least a quarter
/// by some piece: a queue holds at most four times its `max_bytes` in request buffers. Pieces
/// of one buffer on several cores or in several batches are each charged (a conservative
/// count).
pub fn held_bytes(piece: usize, buffer: usize) -> usize {
    piece.max(buffer / 4)
}

fn whole(body: Bytes) -> Encoded {
    let len = body.len();
    Encoded {
        chunks: vec![body],
        len,
    }
}

/// Tracks one admitted request; releases its accounting when dropped.
pub struct InflightGuard<'a> {
    core: &'a Core,
    bytes: Cell<usize>,
}

impl InflightGuard<'_> {
    /// Charges `n` more bytes of this request (body, decompressed body) to the core's request
    /// bytes in flight. Refuses when that would pass the core's bound, unless this request is
    /// the only one in flight (so one request up to `max_recv_msg_size` always gets through).
    pub fn try_add(&self, n: usize) -> Result<(), IngestError> {
        let c = self.core;
        if self.room() < n {
            return Err(IngestError::Overloaded(
                "too many request bytes in flight on this core",
            ));
        }
        self.bytes.set(self.bytes.get() + n);
        c.inflight_bytes.set(c.inflight_bytes.get() + n);
        Ok(())
    }

    /// Bytes this request may still add (see [`InflightGuard::try_add`]).
    pub fn room(&self) -> usize {
        let c = self.core;
        if c.inflight_bytes.get() == self.bytes.get() {
            return usize::MAX;
        }
        c.limits
            .max_inflight_bytes
            .saturating_sub(c.inflight_bytes.get())
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let c = self.core;
        c.inflight_bytes
            .set(c.inflight_bytes.get() - self.bytes.get());
        c.inflight_requests.set(c.inflight_requests.get() - 1);
    }
}

/// Runs one core until shutdown completes. Called inside its executor.
pub async fn run(setup: CoreSetup) {
    let CoreSetup {
        id,
        cpu,
        cores,
        config,
        mesh,
        board,
        shutdown,
        ready,
        memory,
    } = setup;
    let fail = |msg: String| {
        let _ = ready.send(Err(format!("core {id} (cpu {cpu}): {msg}")));
    };

    // Write-ahead logs live under the data directory (absolute: glommio's file calls need it).
    let durable = config.engine.durability == shardtel_config::Durability::AckAfterSync;
    let data_dir = match std::path::absolute(&config.engine.data_dir) {
        Ok(dir) => dir,
        Err(e) => return fail(format!("engine.data_dir: {e}")),
    };
    let ingest_log = if durable {
        match IngestLog::open(&data_dir, id, &config.engine.wal).await {
            Ok(log) => Some(log),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let disk_queues = shardtel_sinks::DiskQueueSettings {
        root: data_dir.join("queues"),
        segment_size: config.engine.wal.segment_size,
        group_commit_interval: config.engine.wal.group_commit_interval,
        group_commit_bytes: config.engine.wal.group_commit_bytes as usize,
        memory_bytes: memory
            .as_ref()
            .map_or(shardtel_sinks::DiskQueueSettings::MEMORY_BYTES, |m| {
                m.disk_queue_memory_bytes
            }),
        cache_bytes: memory
            .as_ref()
            .map_or(shardtel_sinks::DiskQueueSettings::CACHE_BYTES, |m| {
                m.disk_queue_cache_bytes
            }),
    };

    // Exporters used by some pipeline, one instance each on this core.
    let mut by_name: BTreeMap<String, Rc<ExportQueue>> = BTreeMap::new();
    let mut pipelines: [Vec<Rc<ExportQueue>>; 3] = Default::default();
    for (signal, pipeline) in [
        (Signal::Traces, &config.pipelines.traces),
        (Signal::Metrics, &config.pipelines.metrics),
        (Signal::Logs, &config.pipelines.logs),
    ] {
        let Some(pipeline) = pipeline else { continue };
        for name in &pipeline.exporters {
            let queue = match by_name.get(name) {
                Some(q) => q.clone(),
                None => {
                    let Some(cfg) = config.exporters.get(name) else {
                        return fail(format!("exporter {name} is not defined"));
                    };
                    match ExportQueue::start_with_storage(cfg, id, cores, Some(&disk_queues)).await
                    {
                        Ok(q) => {
                            by_name.insert(name.clone(), q.clone());
                            q
                        }
                        Err(e) => return fail(format!("exporter {name}: {e}")),
                    }
                }
            };
            pipelines[signal_index(signal)].push(queue);
        }
    }

    // The traces pipeline's tail sampler, if it lists one.
    let mut sampler = None;
    if let Some(traces) = &config.pipelines.traces {
        for name in &traces.processors {
            match config.processors.get(name) {
                Some(ProcessorConfig::TailSampling(cfg)) => {
                    match Sampler::new(cfg, CoreShare { core: id, cores }) {
                        Ok(s) => sampler = Some(RefCell::new(s)),
                        Err(e) => return fail(format!("processor {name}: {e}")),
                    }
                }
                Some(_) => {}
                None => return fail(format!("processor {name} is not defined")),
            }
        }
    }
    let processors = match Processors::build(&config) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };

    let otlp = config.receivers.otlp.clone();
    let max_recv_msg_size = otlp.as_ref().map_or(4 << 20, |o| o.max_recv_msg_size);
    let core = Rc::new(Core {
        id,
        cores,
        cpu,
        limits: Limits {
            max_recv_msg_size,
            max_inflight_bytes: memory
                .as_ref()
                .map_or(default_inflight_bytes(max_recv_msg_size), |m| {
                    m.max_inflight_bytes
                }),
            max_concurrent_streams: otlp.as_ref().map_or(256, |o| o.max_concurrent_streams),
        },
        counters: ReceiverCounters::default(),
        connections: otlp.as_ref().map_or(ConnectionLimit::new(0), |o| {
            let limit =
                ConnectionLimit::new(receiver::connections::per_core(o.max_connections, cores));
            match memory.as_ref() {
                Some(m) => limit.with_bytes_limit(m.connection_bytes, o.max_concurrent_streams),
                None => limit,
            }
        }),
        mesh_counters: MeshCounters::new(cores),
        senders: OnceCell::new(),
        send_permits: (0..cores).map(|_| Semaphore::new(1)).collect(),
        exporters: by_name.values().cloned().collect(),
        pipelines,
        scratch: RefCell::new(TracesIndex::default()),
        parts: RefCell::new(Vec::new()),
        inflight_bytes: Cell::new(0),
        inflight_requests: Cell::new(0),
        drain_signal: Semaphore::new(0),
        board: board.clone(),
        kafka_snapshot: RefCell::new(None),
        sampler,
        processors,
        memory: memory.map(|m| CoreLimiter::new(m.gauge, &config, m.buffered_limit)),
        metrics_router: (cores > 1 && metric_routing::needed(&config)).then(MetricsRouter::default),
        ingest_log,
    });

    // Mesh: receivers first (as tasks), then senders, so every connect
    // finds its peer.
    let mut consumers = Vec::new();
    for (from, rx) in mesh.receivers.into_iter().enumerate() {
        let Some(rx) = rx else { continue };
        let core = core.clone();
        consumers.push(
            glommio::spawn_local(async move {
                let rx = rx.connect().await;
                while let Some(batch) = rx.recv().await {
                    let c = &core.mesh_counters.received[from];
                    c.set(c.get() + 1);
                    core.deliver(batch).await;
                    // recv() never waits while the peer keeps the channel busy: give this
                    // core's other tasks (receivers, exporters, the sampler's timer,
                    // telemetry) their turn between batches.
                    futures_lite::future::yield_now().await;
                }
            })
            .detach(),
        );
    }
    let mut senders = Vec::with_capacity(cores);
    for tx in mesh.senders {
        senders.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    let _ = core.senders.set(senders);

    // Logs left by cores that no longer exist, drained by this core (start-up: std::fs lists).
    let (orphan_ingest, orphan_queues) = if durable {
        crate::durability::orphans_of(&config, &data_dir, id, cores)
    } else {
        (Vec::new(), Vec::new())
    };
    let wal_config = config.engine.wal.clone();
    crate::durability::adopt_orphaned_queues(&by_name, orphan_queues);
    // Requests acknowledged before a restart but not yet safe downstream are routed again
    // (the tail sampler rebuilds the traces it held); new requests are served meanwhile.
    let replay = core.ingest_log.is_some().then(|| {
        let core = core.clone();
        glommio::spawn_local(async move {
            let Some(log) = &core.ingest_log else { return };
            let recovered = log.recovered_frames();
            if recovered > 0 {
                log::info!(
                    "core {}: replaying {recovered} requests from the ingest log",
                    core.id
                );
            }
            let replayed = log
                .replay(|signal, tracked| core.replay(signal, tracked, false))
                .await;
            if replayed > 0 {
                log::info!("core {}: replayed {replayed} requests", core.id);
            }
            // Ingest logs of cores that no longer exist (the core count shrank).
            crate::durability::drain_orphaned_ingest_logs(&core, &orphan_ingest, &wal_config).await;
            loop {
                log.advance();
                glommio::timer::sleep(crate::durability::CHECKPOINT_EVERY).await;
            }
        })
        .detach()
    });

    // Receivers on every core: the same ports, SO_REUSEPORT.
    let listeners = match receiver::bind_all(&config) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut acceptors = Vec::new();
    for listener in listeners {
        acceptors
            .push(glommio::spawn_local(receiver::accept_loop(core.clone(), listener)).detach());
    }
    // Kafka receiver: this core's consumer of the group (stops polling when draining starts).
    let kafka = match crate::kafka_receiver::start(core.clone(), &config) {
        Ok(kafka) => kafka,
        Err(e) => return fail(e),
    };

    board.set_state(id, CoreState::Serving);
    core.publish();
    let _ = ready.send(Ok(id));
    let publisher = {
        let core = core.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                core.publish();
            }
        })
        .detach()
    };

    // While the process is above its soft limit, this core's freed memory goes back to the OS.
    let allocator = core.memory.as_ref().map(|m| {
        glommio::spawn_local(crate::memory_limiter::return_freed_memory_while_limited(
            m.gauge(),
        ))
        .detach()
    });

    // Stopped through a flag, never cancelled: a cancel while it waits for exporter room
    // would lose the kept spans it is pushing.
    let ticker_stop = Rc::new(Cell::new(false));
    let ticker = core.sampler.is_some().then(|| {
        let (core, stop) = (core.clone(), ticker_stop.clone());
        glommio::spawn_local(async move {
            while !stop.get() {
                let wait = core.sampler_tick().await;
                glommio::timer::sleep(wait).await;
            }
        })
        .detach()
    });

    while !shutdown.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + config.engine.shutdown_timeout;
    board.set_state(id, CoreState::Draining);
    core.drain_signal.close();
    for a in acceptors {
        a.await;
    }
    // In-flight requests finish (their connections were told to close).
    while core.inflight_requests.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Nothing more leaves this core: close the mesh; peers' consumers end
    // once every sender into them is closed and their channels are empty.
    if let Some(senders) = core.senders.get() {
        for s in senders.iter().flatten() {
            s.close();
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _ = glommio::timer::timeout(remaining, async {
        for c in consumers {
            c.await;
        }
        Ok(())
    })
    .await;
    // Every span this core owns has arrived: decide (or drop) what the
    // sampler still holds, as configured.
    if let Some(ticker) = ticker {
        ticker_stop.set(true);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = glommio::timer::timeout(remaining, async { Ok(ticker.await) }).await;
    }
    // With durability on, `on_shutdown = "drop"` drops nothing acknowledged: the pending
    // traces' ingest-log frames stay unreleased, and the next start replays them.
    let replay_pending = core.durable()
        && core
            .sampler
            .as_ref()
            .is_some_and(|s| s.borrow().on_shutdown() == shardtel_config::OnShutdown::Drop);
    if let Some(sampler) = core.sampler.as_ref().filter(|_| replay_pending) {
        sampler.borrow_mut().leak_pending();
    }
    if let Some(sampler) = core.sampler.as_ref().filter(|_| !replay_pending) {
        let mut kept = Vec::new();
        sampler.borrow_mut().shutdown(Instant::now(), &mut kept);
        // Within the deadline: a full queue whose destination is down would hold this forever.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let export = async {
            core.export_kept(kept).await;
            Ok(())
        };
        let _ = glommio::timer::timeout(remaining, export).await;
    }
    let mut drained = true;
    for exporter in &core.exporters {
        drained &= exporter.drain(deadline).await == shardtel_sinks::DrainOutcome::Drained;
    }
    // Kafka receiver: commit what was handed on (see `finish`), leave the group.
    if let Some(kafka) = kafka {
        kafka.finish(&core, drained).await;
    }
    if let Some(replay) = replay {
        replay.cancel();
    }
    if let Some(log) = &core.ingest_log {
        log.close().await;
    }
    publisher.cancel();
    if let Some(allocator) = allocator {
        allocator.cancel();
    }
    core.publish();
    board.set_state(id, CoreState::Stopped);
}
