//! The intake: the narrow handle every receiver of a core gets instead of the whole core.
//!
//! A receiver admits a request ([`Intake::admit`]: refused while draining, above the memory
//! limiter's threshold, or when the core's request bytes in flight are at their bound), charges
//! what the request holds as it grows ([`InflightGuard::try_add`]), decodes it
//! ([`Intake::decoder`]: decompression, OTLP/JSON, charged before they allocate), hands the
//! decoded body to
//! [`Intake::ingest`], and counts what it refused itself ([`Intake::counters`]). It waits for
//! [`Intake::wait_draining`] to stop. Nothing else of the core is within its reach.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::Semaphore;
use shardtel_protocol::Signal;

use super::decode::Decoder;
use crate::memory_limiter::CoreLimiter;
use crate::pipeline::{FailReason, IngestError, Overload, Pipeline, Rejected};
use crate::telemetry::{Exposition, Families};

/// Request bytes in flight charged to every admitted request besides its body: its headers
/// (an HTTP/2 header list is at most 8 KiB; HTTP/1.1 headers stay in the connection's read
/// buffer) and its state.
pub const REQUEST_OVERHEAD: usize = 16 << 10;

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

/// The receiver transport a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc = 0,
    /// OTLP/HTTP.
    Http = 1,
    /// A Kafka topic (`[receivers.kafka]`).
    Kafka = 2,
    /// Zipkin over HTTP (`[receivers.zipkin]`).
    Zipkin = 3,
    /// Jaeger gRPC `PostSpans` (`[receivers.jaeger]`).
    JaegerGrpc = 4,
    /// Jaeger Thrift over HTTP (`[receivers.jaeger]`).
    JaegerThrift = 5,
    /// Fluent Forward over TCP (`[receivers.fluentforward]`).
    FluentForward = 6,
    /// Prometheus scrapes (`[receivers.prometheus]`).
    Scrape = 7,
}

/// Number of [`Transport`] variants (the size of per-transport arrays).
pub const TRANSPORTS: usize = 8;

impl Transport {
    /// Every transport, in index order.
    pub const ALL: [Transport; TRANSPORTS] = [
        Transport::Grpc,
        Transport::Http,
        Transport::Kafka,
        Transport::Zipkin,
        Transport::JaegerGrpc,
        Transport::JaegerThrift,
        Transport::FluentForward,
        Transport::Scrape,
    ];

    /// The `transport` label.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc | Transport::JaegerGrpc => "grpc",
            Transport::Http | Transport::Zipkin => "http",
            Transport::Kafka => "kafka",
            Transport::JaegerThrift => "thrift_http",
            Transport::FluentForward => "tcp",
            Transport::Scrape => "scrape",
        }
    }

    /// The receiver a transport belongs to (the `receiver` label).
    pub fn receiver(self) -> &'static str {
        match self {
            Transport::Grpc | Transport::Http => "otlp",
            Transport::Kafka => "kafka",
            Transport::Zipkin => "zipkin",
            Transport::JaegerGrpc | Transport::JaegerThrift => "jaeger",
            Transport::FluentForward => "fluentforward",
            Transport::Scrape => "prometheus",
        }
    }
}

/// One core's intake (see the module docs). `!Send`: it never leaves its core.
pub struct Intake {
    core: usize,
    pipeline: Rc<Pipeline>,
    limits: Limits,
    counters: ReceiverCounters,
    inflight_bytes: Cell<usize>,
    inflight_requests: Cell<usize>,
    /// Closed when draining starts; every waiter wakes.
    drain_signal: Semaphore,
    /// The memory limiter's view from this core.
    memory: Option<CoreLimiter>,
    /// Decompression and OTLP/JSON conversion, and this core's turns to offload them.
    decoder: Decoder,
}

impl Intake {
    /// The intake of `pipeline`'s core.
    pub fn new(pipeline: Rc<Pipeline>, limits: Limits, memory: Option<CoreLimiter>) -> Intake {
        Intake {
            core: pipeline.core(),
            pipeline,
            limits,
            counters: ReceiverCounters::default(),
            inflight_bytes: Cell::new(0),
            inflight_requests: Cell::new(0),
            drain_signal: Semaphore::new(0),
            memory,
            decoder: Decoder::default(),
        }
    }

    /// The core this intake belongs to (for log lines).
    pub fn core(&self) -> usize {
        self.core
    }

    /// The limits of this core's intake.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes (decompresses, converts) request bodies for this core's receivers.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The receiver counters, for what a receiver refuses before [`Intake::ingest`].
    pub fn counters(&self) -> &ReceiverCounters {
        &self.counters
    }

    /// True once draining started.
    pub fn draining(&self) -> bool {
        self.drain_signal.try_acquire(1).is_err()
    }

    /// Resolves when draining starts.
    pub async fn wait_draining(&self) {
        let _ = self.drain_signal.acquire(1).await;
    }

    /// Starts draining: new requests are refused, every [`Intake::wait_draining`] wakes.
    pub fn start_draining(&self) {
        self.drain_signal.close();
    }

    /// Requests admitted and not finished.
    pub fn requests_in_flight(&self) -> usize {
        self.inflight_requests.get()
    }

    /// The memory limiter's view from this core, when a pipeline lists one.
    pub fn memory(&self) -> Option<&CoreLimiter> {
        self.memory.as_ref()
    }

    /// Admits a request of `signal`, charging [`REQUEST_OVERHEAD`] to the core's request bytes
    /// in flight, or refuses it: while draining, when the memory limiter guards `signal` and
    /// the core's buffered data or the process is above its threshold, or when the core's
    /// request bytes in flight are at their bound. Its body is charged as it arrives
    /// ([`InflightGuard::try_add`]).
    pub fn admit(&self, signal: Signal) -> Result<InflightGuard<'_>, IngestError> {
        if let Some(m) = &self.memory {
            m.check(signal, || self.buffered_bytes())
                .map_err(|_| IngestError::MemoryLimited)?;
        }
        if self.draining() {
            return Err(IngestError::Draining);
        }
        let guard = InflightGuard {
            intake: self,
            bytes: Cell::new(0),
            request: true,
        };
        self.inflight_requests.set(self.inflight_requests.get() + 1);
        guard.try_add(REQUEST_OVERHEAD)?;
        Ok(guard)
    }

    /// A charge to the core's request bytes in flight for what a connection holds outside any
    /// request (a Fluent Forward connection's partial events): nothing at first, then what it
    /// adds ([`InflightGuard::try_add`], refused at the core's bound like a request body's
    /// growth) until released or dropped. It is no request: it is not counted among the
    /// requests in flight, and it is never refused for the memory limiter or draining (the
    /// bytes it charges are what the memory limiter's buffered threshold sees).
    pub fn hold(&self) -> InflightGuard<'_> {
        InflightGuard {
            intake: self,
            bytes: Cell::new(0),
            request: false,
        }
    }

    /// Data this core holds now: request bytes in flight, its export queues' bytes in memory
    /// and its tail sampler's charge (what the memory limiter's buffered threshold counts).
    fn buffered_bytes(&self) -> u64 {
        self.inflight_bytes.get() as u64 + self.pipeline.buffered_bytes()
    }

    /// Ingests one decoded (decompressed, protobuf) Export*ServiceRequest received over
    /// `transport` and counts the outcome. Returns the number of items accepted.
    pub async fn ingest(
        &self,
        signal: Signal,
        transport: Transport,
        body: Bytes,
    ) -> Result<u64, IngestError> {
        if let Some(Err(_)) = self.memory.as_ref().map(|m| m.check_resident(signal)) {
            let error = IngestError::MemoryLimited;
            self.counters.refused(signal, transport, 0, &error);
            return Err(error);
        }
        match self.pipeline.ingest(signal, body).await {
            Ok(n) => {
                self.counters.accepted(signal, transport, n);
                Ok(n)
            }
            Err(Rejected {
                error,
                refused_items: Some(n),
                partial,
            }) => {
                // Parts of a split request queued before another was refused are exported.
                if let Some(p) = partial {
                    self.counters.accepted(signal, transport, p.queued_items);
                }
                self.counters.refused(signal, transport, n, &error);
                Err(error)
            }
            Err(Rejected {
                error,
                refused_items: None,
                ..
            }) => {
                self.counters
                    .failed_request(signal, transport, error.reason());
                Err(error)
            }
        }
    }

    /// True when requests are acknowledged only once on disk (the ingest log).
    pub fn durable(&self) -> bool {
        self.pipeline.durable()
    }

    /// With an ingest log: its next LSN and the first unreleased one (every frame below is
    /// released). A receiver that acknowledges upstream (Kafka offsets) only once its data is
    /// safe reads it.
    pub fn ingest_log_position(&self) -> Option<(u64, u64)> {
        self.pipeline.ingest_log_position()
    }
}

/// Tracks one admitted request (or a connection's [`Intake::hold`]); releases its accounting
/// when dropped.
pub struct InflightGuard<'a> {
    intake: &'a Intake,
    bytes: Cell<usize>,
    /// Counted among the requests in flight (not a [`Intake::hold`]).
    request: bool,
}

impl InflightGuard<'_> {
    /// Charges `n` more bytes of this request (body, decompressed body) to the core's request
    /// bytes in flight. Refuses when that would pass the core's bound, unless this request is
    /// the only one in flight (so one request up to `max_recv_msg_size` always gets through).
    pub fn try_add(&self, n: usize) -> Result<(), IngestError> {
        let c = self.intake;
        if self.room() < n {
            return Err(IngestError::Overloaded(Overload::InflightBytes));
        }
        self.bytes.set(self.bytes.get() + n);
        c.inflight_bytes.set(c.inflight_bytes.get() + n);
        Ok(())
    }

    /// Gives back `n` of the bytes this request was charged (a reservation it did not use).
    pub fn release(&self, n: usize) {
        let c = self.intake;
        let n = n.min(self.bytes.get());
        self.bytes.set(self.bytes.get() - n);
        c.inflight_bytes.set(c.inflight_bytes.get() - n);
    }

    /// Bytes this request may still add (see [`InflightGuard::try_add`]).
    pub fn room(&self) -> usize {
        let c = self.intake;
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
        let c = self.intake;
        c.inflight_bytes
            .set(c.inflight_bytes.get() - self.bytes.get());
        if self.request {
            c.inflight_requests.set(c.inflight_requests.get() - 1);
        }
    }
}

/// Receiver counters of one core: `[signal][transport]`, failed requests also by reason.
#[derive(Default)]
pub struct ReceiverCounters {
    accepted: [[Cell<u64>; TRANSPORTS]; 3],
    refused: [[Cell<u64>; TRANSPORTS]; 3],
    requests_failed: [[[Cell<u64>; REASONS]; TRANSPORTS]; 3],
}

/// How many [`FailReason`]s there are.
const REASONS: usize = FailReason::ALL.len();

impl ReceiverCounters {
    /// Counts items (spans, points, records) accepted.
    pub fn accepted(&self, signal: Signal, transport: Transport, items: u64) {
        let c = &self.accepted[signal.index()][transport as usize];
        c.set(c.get() + items);
    }

    /// Counts items refused by a retryable error (overload, shutdown) and the failed request.
    pub fn refused(&self, signal: Signal, transport: Transport, items: u64, why: &IngestError) {
        let c = &self.refused[signal.index()][transport as usize];
        c.set(c.get() + items);
        self.failed_request(signal, transport, why.reason());
    }

    /// Counts a request answered with `error`: its items as refused when the client may retry
    /// it, else only the failed request.
    pub fn failed(&self, signal: Signal, transport: Transport, error: &IngestError) {
        if error.is_retryable() {
            self.refused(signal, transport, 0, error);
        } else {
            self.failed_request(signal, transport, error.reason());
        }
    }

    /// Counts a request that failed (malformed, too large, refused), by reason.
    pub fn failed_request(&self, signal: Signal, transport: Transport, reason: FailReason) {
        let c = &self.requests_failed[signal.index()][transport as usize][reason.index()];
        c.set(c.get() + 1);
    }

    /// The counters, for telemetry; `active`: the transports whose series the core publishes
    /// (OTLP's always; the others only where their receiver runs).
    pub fn snapshot(&self, active: [bool; TRANSPORTS]) -> ReceiverSnapshot {
        let mut counts = [[[0; 2]; TRANSPORTS]; 3];
        let mut failed = [[[0; REASONS]; TRANSPORTS]; 3];
        for s in 0..3 {
            for t in 0..TRANSPORTS {
                counts[s][t] = [self.accepted[s][t].get(), self.refused[s][t].get()];
                for (r, c) in self.requests_failed[s][t].iter().enumerate() {
                    failed[s][t][r] = c.get();
                }
            }
        }
        ReceiverSnapshot {
            counts,
            failed,
            active,
        }
    }
}

/// What a core publishes about its receivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverSnapshot {
    /// `[signal][transport][accepted, refused]` items.
    pub counts: [[[u64; 2]; TRANSPORTS]; 3],
    /// `[signal][transport][reason]` failed requests, by [`FailReason::index`].
    pub failed: [[[u64; REASONS]; TRANSPORTS]; 3],
    /// The transports whose series this core publishes.
    pub active: [bool; TRANSPORTS],
}

impl Default for ReceiverSnapshot {
    fn default() -> Self {
        ReceiverSnapshot {
            counts: [[[0; 2]; TRANSPORTS]; 3],
            failed: [[[0; REASONS]; TRANSPORTS]; 3],
            active: [false; TRANSPORTS],
        }
    }
}

impl ReceiverSnapshot {
    /// Failed requests of `signal` over `transport`, whatever the reason.
    pub fn failed_requests(&self, signal: Signal, transport: Transport) -> u64 {
        self.failed[signal.index()][transport as usize].iter().sum()
    }
}

impl ReceiverSnapshot {
    /// The transports whose series this core publishes.
    fn transports(&self) -> impl Iterator<Item = Transport> + '_ {
        Transport::ALL
            .into_iter()
            .filter(|t| matches!(t, Transport::Grpc | Transport::Http) || self.active[*t as usize])
    }
}

impl Families for ReceiverSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let item = |s: Signal| match s {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        };
        for (field, what, help) in [
            (0, "accepted", "successfully pushed into the pipeline"),
            (
                1,
                "refused",
                "refused (overload or shutdown); the client may retry",
            ),
        ] {
            for signal in Signal::ALL {
                let family = out.counter(
                    format!("shardtel_receiver_{what}_{}_total", item(signal)),
                    format!("Number of {} {help}.", item(signal)),
                );
                for (core, s) in cores {
                    for t in s.transports() {
                        family.sample(
                            &[
                                ("receiver", &t.receiver()),
                                ("transport", &t.name()),
                                ("core", core),
                            ],
                            s.counts[signal.index()][t as usize][field],
                        );
                    }
                }
            }
        }
        let failed = out.counter(
            "shardtel_receiver_failed_requests_total",
            "Requests answered with an error (malformed, too large, refused).",
        );
        for (core, s) in cores {
            for signal in Signal::ALL {
                for t in s.transports() {
                    failed.sample(
                        &[
                            ("receiver", &t.receiver()),
                            ("transport", &t.name()),
                            ("signal", &signal.name()),
                            ("core", core),
                        ],
                        s.failed_requests(signal, t),
                    );
                }
            }
        }
        let by_reason = out.counter(
            "shardtel_receiver_failed_requests_by_reason_total",
            "Requests answered with an error, by reason: the client's (malformed, too_large, \
             unsupported, timeout, client_aborted, unauthenticated) or a bound of shardtel's \
             (inflight_bytes, owner_channel_full, export_queue_full, ingest_log_full, \
             export_waiters, memory_limit, max_connections, draining). A reason has a series \
             once it occurred.",
        );
        for (core, s) in cores {
            for signal in Signal::ALL {
                for t in s.transports() {
                    for reason in FailReason::ALL {
                        let n = s.failed[signal.index()][t as usize][reason.index()];
                        if n > 0 {
                            by_reason.sample(
                                &[
                                    ("receiver", &t.receiver()),
                                    ("transport", &t.name()),
                                    ("signal", &signal.name()),
                                    ("core", core),
                                    ("reason", &reason.label()),
                                ],
                                n,
                            );
                        }
                    }
                }
            }
        }
    }
}
