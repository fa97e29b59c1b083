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
use shardtel_protocol::reframe::{encode_trace_spans, encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{scan_logs, scan_metrics, SpanBatch, TracesIndex};
use shardtel_protocol::Signal;
use shardtel_sinks::ExportQueue;

use crate::ingest::IngestError;
use crate::mesh::MeshEnds;
use crate::receiver;
use crate::sampler::{CoreShare, Kept, Sampler};
use crate::telemetry::{
    self, signal_index, Board, CoreState, MeshCounters, ReceiverCounters, Transport,
};

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
    mesh_counters: MeshCounters,
    senders: OnceCell<Vec<Option<ConnectedSender<SpanBatch>>>>,
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

    /// Admits a request of `bytes` (0 if not yet known), or refuses it.
    pub fn admit(&self) -> Result<InflightGuard<'_>, IngestError> {
        if self.draining() {
            return Err(IngestError::Draining);
        }
        if self.inflight_bytes.get() >= self.limits.max_inflight_bytes {
            return Err(IngestError::Overloaded(
                "too many request bytes in flight on this core",
            ));
        }
        self.inflight_requests.set(self.inflight_requests.get() + 1);
        Ok(InflightGuard {
            core: self,
            bytes: Cell::new(0),
        })
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
        let scanned = match signal {
            Signal::Traces => self.ingest_traces(body).await,
            Signal::Metrics => match scan_metrics(&body) {
                Ok(counts) => {
                    let n = counts.items as u64;
                    Ok((n, self.push_local(signal, whole(body), n).map(|_| n)))
                }
                Err(e) => Err(IngestError::Malformed(format!(
                    "malformed ExportMetricsServiceRequest: {e}"
                ))),
            },
            Signal::Logs => match scan_logs(&body) {
                Ok(counts) => {
                    let n = counts.items as u64;
                    Ok((n, self.push_local(signal, whole(body), n).map(|_| n)))
                }
                Err(e) => Err(IngestError::Malformed(format!(
                    "malformed ExportLogsServiceRequest: {e}"
                ))),
            },
        };
        match scanned {
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

    /// Scans and routes a trace request. The outer error is a malformed
    /// request; the inner one a refusal of a well-formed request of `n` spans.
    #[allow(clippy::type_complexity)]
    async fn ingest_traces(
        &self,
        body: Bytes,
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
                    // The request as received is already the request to export;
                    // only the sampler needs its index.
                    let index = if self.sampler.is_some() {
                        index.clone()
                    } else {
                        TracesIndex::default()
                    };
                    local = Some((
                        SpanBatch {
                            buf: body.clone(),
                            index,
                        },
                        true,
                    ));
                } else {
                    remote.push((
                        dest,
                        SpanBatch {
                            buf: body.clone(),
                            index: index.clone(),
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
        if let Some((batch, is_whole)) = local {
            let pushed = if self.sampler.is_some() {
                self.sample(batch).await;
                Ok(())
            } else if is_whole {
                self.push_local(Signal::Traces, whole(batch.buf), items)
            } else {
                let mut enc = Encoded::default();
                encode_traces(&batch, &mut enc);
                self.push_local(Signal::Traces, enc, batch.index.spans.len() as u64)
            };
            if let Err(e) = pushed {
                return Ok((items, Err(e)));
            }
        }
        for (dest, batch) in remote {
            if let Err(e) = self.send_to(dest, batch).await {
                return Ok((items, Err(e)));
            }
        }
        Ok((items, Ok(items)))
    }

    /// Sends a batch to its owner core, waiting at most [`MESH_SEND_TIMEOUT`]
    /// for room.
    async fn send_to(&self, dest: usize, batch: SpanBatch) -> Result<(), IngestError> {
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

    /// Hands an encoded piece to every exporter of the signal's pipeline on
    /// this core, refusing if any queue is full.
    fn push_local(&self, signal: Signal, piece: Encoded, items: u64) -> Result<(), IngestError> {
        let exporters = &self.pipelines[signal_index(signal)];
        if exporters.iter().any(|e| !e.has_room(piece.len)) {
            return Err(IngestError::Overloaded("an exporter queue is full"));
        }
        for exporter in exporters {
            if exporter.try_push(signal, piece.clone(), items).is_err() {
                return Err(IngestError::Overloaded("an exporter queue is full"));
            }
        }
        Ok(())
    }

    /// Delivers a batch received from another core: through the sampler if
    /// there is one, else straight to the exporters, waiting for queue room
    /// (backpressure flows back through the mesh).
    async fn deliver(&self, batch: SpanBatch) {
        if self.sampler.is_some() {
            return self.sample(batch).await;
        }
        let mut enc = Encoded::default();
        encode_traces(&batch, &mut enc);
        let items = batch.index.spans.len() as u64;
        self.push_wait(Signal::Traces, enc, items).await;
    }

    /// Pushes to every exporter of the signal, waiting for room in each.
    async fn push_wait(&self, signal: Signal, enc: Encoded, items: u64) {
        for exporter in &self.pipelines[signal_index(signal)] {
            loop {
                exporter.reserve(enc.len).await;
                if exporter.try_push(signal, enc.clone(), items).is_ok() {
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
    /// pushes it to the traces exporters.
    async fn export_kept(&self, kept: Vec<Kept>) {
        if kept.is_empty() {
            return;
        }
        let mut enc = Encoded::default();
        let mut items = 0u64;
        for k in &kept {
            encode_trace_spans(&k.batch, &k.spans, &mut enc);
            items += k.spans.len() as u64;
        }
        drop(kept);
        self.push_wait(Signal::Traces, enc, items).await;
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
        self.board.publish(snapshot);
    }
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
    /// Adds the request's body size to the core's in-flight bytes.
    pub fn add_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
        self.core
            .inflight_bytes
            .set(self.core.inflight_bytes.get() + n);
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
    } = setup;
    let fail = |msg: String| {
        let _ = ready.send(Err(format!("core {id} (cpu {cpu}): {msg}")));
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
                    match ExportQueue::start(cfg, id) {
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
                None => return fail(format!("processor {name} is not defined")),
            }
        }
    }

    let otlp = config.receivers.otlp.clone();
    let max_recv_msg_size = otlp.as_ref().map_or(4 << 20, |o| o.max_recv_msg_size);
    let core = Rc::new(Core {
        id,
        cores,
        cpu,
        limits: Limits {
            max_recv_msg_size,
            max_inflight_bytes: (max_recv_msg_size * 16).max(64 << 20),
            max_concurrent_streams: otlp.as_ref().map_or(256, |o| o.max_concurrent_streams),
        },
        counters: ReceiverCounters::default(),
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
    if let Some(sampler) = &core.sampler {
        let mut kept = Vec::new();
        sampler.borrow_mut().shutdown(Instant::now(), &mut kept);
        core.export_kept(kept).await;
    }
    let mut drained = true;
    for exporter in &core.exporters {
        drained &= exporter.drain(deadline).await == shardtel_sinks::DrainOutcome::Drained;
    }
    // Kafka receiver: commit what was accepted (and, if `drained`, exported), leave the group.
    if let Some(kafka) = kafka {
        kafka.finish(&core, drained).await;
    }
    publisher.cancel();
    core.publish();
    board.set_state(id, CoreState::Stopped);
}
