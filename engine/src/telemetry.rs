//! Self-telemetry: per-core counters, their published snapshots, and the
//! health (:13133) and Prometheus metrics (:8888) endpoints.
//!
//! Counters live on their core as `Cell<u64>`; once a second (and on every
//! state change) each core publishes a snapshot into its own slot of a
//! [`Board`]. The telemetry thread only reads snapshots, so the hot path never
//! shares a cache line with it.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use shardtel_protocol::Signal;
use shardtel_sinks::ExporterStats;

/// A metric family read from rows of `T`: name, type, help, value of a row.
pub(crate) type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes every family of `families`, with one sample per row: `labels` is the row's label
/// set (without braces).
pub(crate) fn render_families<T>(out: &mut String, families: &[Family<T>], rows: &[(String, &T)]) {
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for (labels, row) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(row));
        }
    }
}

/// Index of a signal in per-signal arrays.
pub fn signal_index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

/// The receiver transport a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc = 0,
    /// OTLP/HTTP.
    Http = 1,
    /// A Kafka topic (`[receivers.kafka]`).
    Kafka = 2,
}

/// Number of [`Transport`] variants (the size of per-transport arrays).
const TRANSPORTS: usize = 3;

impl Transport {
    fn name(i: usize) -> &'static str {
        ["grpc", "http", "kafka"][i]
    }

    /// The receiver a transport belongs to (the `receiver` label).
    fn receiver(i: usize) -> &'static str {
        ["otlp", "otlp", "kafka"][i]
    }
}

/// Lifecycle of one core, as the health endpoint sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CoreState {
    /// Building exporters, connecting the mesh, binding listeners.
    Starting = 0,
    /// Accepting requests.
    Serving = 1,
    /// Refusing new work and flushing what it holds.
    Draining = 2,
    /// Done.
    Stopped = 3,
}

/// Receiver counters of one core: `[signal][transport]`.
#[derive(Default)]
pub struct ReceiverCounters {
    accepted: [[Cell<u64>; TRANSPORTS]; 3],
    refused: [[Cell<u64>; TRANSPORTS]; 3],
    requests_failed: [[Cell<u64>; TRANSPORTS]; 3],
}

impl ReceiverCounters {
    /// Counts items (spans, points, records) accepted.
    pub fn accepted(&self, signal: Signal, transport: Transport, items: u64) {
        let c = &self.accepted[signal_index(signal)][transport as usize];
        c.set(c.get() + items);
    }

    /// Counts items refused (overload, shutdown) and the failed request.
    pub fn refused(&self, signal: Signal, transport: Transport, items: u64) {
        let c = &self.refused[signal_index(signal)][transport as usize];
        c.set(c.get() + items);
        self.failed_request(signal, transport);
    }

    /// Counts a request that failed (malformed, too large, refused).
    pub fn failed_request(&self, signal: Signal, transport: Transport) {
        let c = &self.requests_failed[signal_index(signal)][transport as usize];
        c.set(c.get() + 1);
    }

    fn snapshot(&self) -> [[[u64; 3]; TRANSPORTS]; 3] {
        let mut out = [[[0; 3]; TRANSPORTS]; 3];
        for (s, by_transport) in out.iter_mut().enumerate() {
            for (t, counts) in by_transport.iter_mut().enumerate() {
                *counts = [
                    self.accepted[s][t].get(),
                    self.refused[s][t].get(),
                    self.requests_failed[s][t].get(),
                ];
            }
        }
        out
    }
}

/// What one core publishes.
#[derive(Clone, Debug, Default)]
pub struct CoreSnapshot {
    /// Core index (0..cores).
    pub core: usize,
    /// CPU the core is pinned to.
    pub cpu: usize,
    /// `[signal][transport][accepted, refused, failed_requests]`.
    pub receiver: [[[u64; 3]; TRANSPORTS]; 3],
    /// Name, kind and statistics of each exporter instance on this core.
    pub exporters: Vec<(String, &'static str, ExporterStats)>,
    /// Span batches sent to each other core over the mesh.
    pub mesh_sent: Vec<u64>,
    /// Span batches received from each other core.
    pub mesh_received: Vec<u64>,
    /// Span batches whose mesh send timed out (request refused).
    pub mesh_send_timeouts: u64,
    /// This core's Kafka consumer, when `[receivers.kafka]` runs.
    pub kafka_receiver: Option<KafkaConsumerSnapshot>,
    /// Tail sampler statistics, when the traces pipeline samples.
    pub sampler: Option<crate::sampler::SamplerStats>,
    /// Counters of the attributes, resource and filter processors on this core.
    pub processors: Vec<crate::processors::ProcessorSnapshot>,
    /// The memory limiter, when a pipeline lists one.
    pub memory: Option<crate::memory_limiter::MemorySnapshot>,
    /// The ingest log, with `durability = "ack_after_sync"`.
    pub ingest_log: Option<crate::durability::IngestLogSnapshot>,
    /// OTLP connections served and refused.
    pub connections: Option<crate::receiver::connections::ConnectionSnapshot>,
}

/// Counters of one core's Kafka consumer (`[receivers.kafka]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaConsumerSnapshot {
    /// Messages whose data was accepted.
    pub consumed_messages: u64,
    /// Value bytes of those messages.
    pub consumed_bytes: u64,
    /// Requests ingested: consecutive messages of one signal are ingested together.
    pub requests: u64,
    /// Messages skipped as malformed (their offsets are committed).
    pub malformed_messages: u64,
    /// Offset commits the group coordinator confirmed.
    pub commits: u64,
    /// Offset commits that failed.
    pub commit_failures: u64,
    /// Rebalances that assigned partitions to this core.
    pub assigned_events: u64,
    /// Rebalances that revoked partitions from this core.
    pub revoked_events: u64,
    /// Partitions assigned now.
    pub assigned_partitions: u64,
    /// (topic, partition, lag in messages behind the partition's end), from librdkafka's
    /// statistics (every 5 s).
    pub lag: Vec<(String, i32, i64)>,
}

/// Per-core mesh counters.
pub struct MeshCounters {
    /// Batches sent to core `i`.
    pub sent: Vec<Cell<u64>>,
    /// Batches received from core `i`.
    pub received: Vec<Cell<u64>>,
    /// Sends that timed out.
    pub send_timeouts: Cell<u64>,
}

impl MeshCounters {
    /// Zeroed counters for `cores` peers.
    pub fn new(cores: usize) -> Self {
        Self {
            sent: (0..cores).map(|_| Cell::new(0)).collect(),
            received: (0..cores).map(|_| Cell::new(0)).collect(),
            send_timeouts: Cell::new(0),
        }
    }
}

/// Builds a snapshot from a core's live counters.
pub fn snapshot(
    core: usize,
    cpu: usize,
    receiver: &ReceiverCounters,
    mesh: &MeshCounters,
    exporters: Vec<(String, &'static str, ExporterStats)>,
) -> CoreSnapshot {
    CoreSnapshot {
        core,
        cpu,
        receiver: receiver.snapshot(),
        exporters,
        mesh_sent: mesh.sent.iter().map(Cell::get).collect(),
        mesh_received: mesh.received.iter().map(Cell::get).collect(),
        mesh_send_timeouts: mesh.send_timeouts.get(),
        kafka_receiver: None,
        sampler: None,
        processors: Vec::new(),
        memory: None,
        ingest_log: None,
        connections: None,
    }
}

/// Where cores publish their state and snapshots; read by the telemetry thread.
pub struct Board {
    states: Vec<AtomicU8>,
    snapshots: Vec<ArcSwapOption<CoreSnapshot>>,
}

impl Board {
    /// A board for `cores` cores, all `Starting`.
    pub fn new(cores: usize) -> Arc<Self> {
        Arc::new(Self {
            states: (0..cores)
                .map(|_| AtomicU8::new(CoreState::Starting as u8))
                .collect(),
            snapshots: (0..cores).map(|_| ArcSwapOption::empty()).collect(),
        })
    }

    /// Records a core's lifecycle state.
    pub fn set_state(&self, core: usize, state: CoreState) {
        self.states[core].store(state as u8, Ordering::Release);
    }

    /// Publishes a core's snapshot.
    pub fn publish(&self, snapshot: CoreSnapshot) {
        let core = snapshot.core;
        self.snapshots[core].store(Some(Arc::new(snapshot)));
    }

    /// True once every core serves and none drains.
    pub fn healthy(&self) -> bool {
        self.states
            .iter()
            .all(|s| s.load(Ordering::Acquire) == CoreState::Serving as u8)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.states
            .iter()
            .map(|s| match s.load(Ordering::Acquire) {
                0 => "starting",
                1 => "serving",
                2 => "draining",
                _ => "stopped",
            })
            .collect()
    }

    /// Renders all snapshots in the Prometheus text exposition format.
    pub fn render_metrics(&self) -> String {
        let snaps: Vec<Arc<CoreSnapshot>> = self
            .snapshots
            .iter()
            .filter_map(|s| s.load_full())
            .collect();
        let mut out = String::with_capacity(8192);
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
            for signal in SIGNALS {
                let name = format!("shardtel_receiver_{what}_{}_total", item(signal));
                let _ = writeln!(out, "# HELP {name} Number of {} {help}.", item(signal));
                let _ = writeln!(out, "# TYPE {name} counter");
                for s in &snaps {
                    for t in 0..TRANSPORTS {
                        if t == Transport::Kafka as usize && s.kafka_receiver.is_none() {
                            continue;
                        }
                        let v = s.receiver[signal_index(signal)][t][field];
                        let _ = writeln!(
                            out,
                            "{name}{{receiver=\"{}\",transport=\"{}\",core=\"{}\"}} {v}",
                            Transport::receiver(t),
                            Transport::name(t),
                            s.core
                        );
                    }
                }
            }
        }
        let name = "shardtel_receiver_failed_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests answered with an error (malformed, too large, refused)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for s in &snaps {
            for signal in SIGNALS {
                for t in 0..TRANSPORTS {
                    if t == Transport::Kafka as usize && s.kafka_receiver.is_none() {
                        continue;
                    }
                    let v = s.receiver[signal_index(signal)][t][2];
                    let _ = writeln!(
                        out,
                        "{name}{{receiver=\"{}\",transport=\"{}\",signal=\"{}\",core=\"{}\"}} {v}",
                        Transport::receiver(t),
                        Transport::name(t),
                        signal.name(),
                        s.core
                    );
                }
            }
        }
        for (what, help) in [
            ("sent", "successfully sent to the destination"),
            ("send_failed", "that failed to send (after retries)"),
        ] {
            for signal in SIGNALS {
                let name = format!("shardtel_exporter_{what}_{}_total", item(signal));
                let _ = writeln!(out, "# HELP {name} Number of {} {help}.", item(signal));
                let _ = writeln!(out, "# TYPE {name} counter");
                for s in &snaps {
                    for (exp, kind, st) in &s.exporters {
                        let v = if what == "sent" {
                            st.sent_items[signal_index(signal)]
                        } else {
                            st.failed_items[signal_index(signal)]
                        };
                        let _ = writeln!(
                            out,
                            "{name}{{exporter=\"{exp}\",type=\"{kind}\",core=\"{}\"}} {v}",
                            s.core
                        );
                    }
                }
            }
        }
        for (name, help, f) in [
            (
                "shardtel_exporter_queue_size_bytes",
                "Bytes queued or in flight in the exporter queue.",
                (|st: &ExporterStats| st.queue_bytes as u64) as fn(&ExporterStats) -> u64,
            ),
            (
                "shardtel_exporter_queue_batches",
                "Batches queued in the exporter queue.",
                |st: &ExporterStats| st.queued_batches as u64,
            ),
            (
                "shardtel_exporter_retries_total",
                "Send attempts that were retried.",
                |st: &ExporterStats| st.retries,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in &snaps {
                for (exp, _, st) in &s.exporters {
                    let _ = writeln!(
                        out,
                        "{name}{{exporter=\"{exp}\",core=\"{}\"}} {}",
                        s.core,
                        f(st)
                    );
                }
            }
        }
        render_kafka(&mut out, &snaps);
        render_prometheus_exporter(&mut out, &snaps);
        let connections: Vec<_> = snaps
            .iter()
            .filter_map(|s| s.connections.as_ref().map(|c| (s.core, c)))
            .collect();
        crate::receiver::connections::render(&connections, &mut out);
        let name = "shardtel_mesh_channel_depth";
        let _ = writeln!(
            out,
            "# HELP {name} Messages (span batches, routed metrics) in flight on the channel from one core to another."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for from in &snaps {
            for to in &snaps {
                if from.core == to.core {
                    continue;
                }
                let sent = from.mesh_sent.get(to.core).copied().unwrap_or(0);
                let recv = to.mesh_received.get(from.core).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{name}{{from=\"{}\",to=\"{}\"}} {}",
                    from.core,
                    to.core,
                    sent.saturating_sub(recv)
                );
            }
        }
        let name = "shardtel_mesh_sent_batches_total";
        let _ = writeln!(
            out,
            "# HELP {name} Messages (span batches, routed metrics) sent to another core."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for s in &snaps {
            for (to, v) in s.mesh_sent.iter().enumerate() {
                if to != s.core {
                    let _ = writeln!(out, "{name}{{from=\"{}\",to=\"{to}\"}} {v}", s.core);
                }
            }
        }
        let name = "shardtel_mesh_send_timeouts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Mesh sends that timed out; the request was refused."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for s in &snaps {
            let _ = writeln!(
                out,
                "{name}{{core=\"{}\"}} {}",
                s.core, s.mesh_send_timeouts
            );
        }
        let name = "shardtel_core_info";
        let _ = writeln!(out, "# HELP {name} One series per core: its CPU and state.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let states = self.state_names();
        for s in &snaps {
            let _ = writeln!(
                out,
                "{name}{{core=\"{}\",cpu=\"{}\",state=\"{}\"}} 1",
                s.core, s.cpu, states[s.core]
            );
        }
        let sampled: Vec<(usize, &crate::sampler::SamplerStats)> = snaps
            .iter()
            .filter_map(|s| s.sampler.as_ref().map(|st| (s.core, st)))
            .collect();
        if !sampled.is_empty() {
            crate::sampler::render(&sampled, &mut out);
        }
        let processors: Vec<(usize, &[crate::processors::ProcessorSnapshot])> =
            snaps.iter().map(|s| (s.core, &s.processors[..])).collect();
        crate::processors::render(&processors, &mut out);
        let memory: Vec<(usize, &crate::memory_limiter::MemorySnapshot)> = snaps
            .iter()
            .filter_map(|s| s.memory.as_ref().map(|m| (s.core, m)))
            .collect();
        crate::memory_limiter::render(&memory, &mut out);
        let ingest: Vec<_> = snaps
            .iter()
            .filter_map(|s| s.ingest_log.map(|l| (s.core, l)))
            .collect();
        let queues: Vec<_> = snaps
            .iter()
            .flat_map(|s| {
                s.exporters
                    .iter()
                    .filter_map(move |(name, _, st)| st.disk.map(|d| (s.core, name.as_str(), d)))
            })
            .collect();
        if !ingest.is_empty() || !queues.is_empty() {
            crate::durability::render(&mut out, &ingest, &queues);
        }
        out
    }
}

/// The `prometheusremotewrite` conversion series (only when such an exporter runs).
fn render_prometheus_exporter(out: &mut String, snaps: &[Arc<CoreSnapshot>]) {
    let series: [Family<ExporterStats>; 8] = [
        (
            "shardtel_exporter_prometheus_samples_total",
            "counter",
            "Float samples written to remote-write requests.",
            |st| st.prometheus.samples,
        ),
        (
            "shardtel_exporter_prometheus_histograms_total",
            "counter",
            "Native histogram samples written to remote-write requests.",
            |st| st.prometheus.histograms,
        ),
        (
            "shardtel_exporter_prometheus_dropped_out_of_order_points_total",
            "counter",
            "Points dropped because their series already had a sample at or after their time.",
            |st| st.prometheus.dropped_out_of_order,
        ),
        (
            "shardtel_exporter_prometheus_dropped_invalid_points_total",
            "counter",
            "Points dropped as unconvertible (name, temporality, buckets, scale).",
            |st| st.prometheus.dropped_invalid,
        ),
        (
            "shardtel_exporter_prometheus_delta_resets_total",
            "counter",
            "Delta histograms whose bucket layout changed, restarting their accumulation.",
            |st| st.prometheus.delta_resets,
        ),
        (
            "shardtel_exporter_prometheus_series_expired_total",
            "counter",
            "Series forgotten after series_ttl without a point.",
            |st| st.prometheus.series_expired,
        ),
        (
            "shardtel_exporter_prometheus_series_evicted_total",
            "counter",
            "Series forgotten because max_series_per_core was reached.",
            |st| st.prometheus.series_evicted,
        ),
        (
            "shardtel_exporter_prometheus_series",
            "gauge",
            "Series whose state this core holds.",
            |st| st.prometheus.series_active,
        ),
    ];
    let rows = exporter_rows(snaps, "prometheusremotewrite");
    if !rows.is_empty() {
        render_families(out, &series, &rows);
    }
}

/// `exporter` and `core` labels and stats of every exporter of type `kind`, on every core.
fn exporter_rows<'a>(
    snaps: &'a [Arc<CoreSnapshot>],
    kind: &str,
) -> Vec<(String, &'a ExporterStats)> {
    snaps
        .iter()
        .flat_map(|s| {
            s.exporters
                .iter()
                .filter(move |(_, k, _)| *k == kind)
                .map(move |(exp, _, st)| (format!("exporter=\"{exp}\",core=\"{}\"", s.core), st))
        })
        .collect()
}

/// The Kafka exporter and receiver series (only for cores that run them).
fn render_kafka(out: &mut String, snaps: &[Arc<CoreSnapshot>]) {
    let producer: [Family<ExporterStats>; 5] = [
        (
            "shardtel_exporter_kafka_produced_messages_total",
            "counter",
            "Messages the Kafka brokers acknowledged.",
            |st| st.kafka.produced_messages,
        ),
        (
            "shardtel_exporter_kafka_produced_bytes_total",
            "counter",
            "Value bytes (before compression) of acknowledged messages.",
            |st| st.kafka.produced_bytes,
        ),
        (
            "shardtel_exporter_kafka_failed_messages_total",
            "counter",
            "Messages whose delivery failed (their batch is retried or failed).",
            |st| st.kafka.failed_messages,
        ),
        (
            "shardtel_exporter_kafka_failed_bytes_total",
            "counter",
            "Value bytes of messages whose delivery failed.",
            |st| st.kafka.failed_bytes,
        ),
        (
            "shardtel_exporter_kafka_queue_full_total",
            "counter",
            "Times the producer's local queue was full when a message was offered.",
            |st| st.kafka.queue_full,
        ),
    ];
    let producers = exporter_rows(snaps, "kafka");
    if !producers.is_empty() {
        render_families(out, &producer, &producers);
    }
    let consumers: Vec<(String, &KafkaConsumerSnapshot)> = snaps
        .iter()
        .filter_map(|s| {
            s.kafka_receiver
                .as_ref()
                .map(|k| (format!("core=\"{}\"", s.core), k))
        })
        .collect();
    if consumers.is_empty() {
        return;
    }
    let consumer: [Family<KafkaConsumerSnapshot>; 9] = [
        (
            "shardtel_receiver_kafka_messages_total",
            "counter",
            "Kafka messages whose data was accepted.",
            |k| k.consumed_messages,
        ),
        (
            "shardtel_receiver_kafka_bytes_total",
            "counter",
            "Value bytes of accepted Kafka messages.",
            |k| k.consumed_bytes,
        ),
        (
            "shardtel_receiver_kafka_requests_total",
            "counter",
            "Requests ingested, each made of consecutive Kafka messages of one signal.",
            |k| k.requests,
        ),
        (
            "shardtel_receiver_kafka_malformed_messages_total",
            "counter",
            "Kafka messages skipped as malformed (offset logged).",
            |k| k.malformed_messages,
        ),
        (
            "shardtel_receiver_kafka_commits_total",
            "counter",
            "Offset commits confirmed by the group coordinator.",
            |k| k.commits,
        ),
        (
            "shardtel_receiver_kafka_commit_failures_total",
            "counter",
            "Offset commits that failed.",
            |k| k.commit_failures,
        ),
        (
            "shardtel_receiver_kafka_assignments_total",
            "counter",
            "Rebalances that assigned partitions to this core.",
            |k| k.assigned_events,
        ),
        (
            "shardtel_receiver_kafka_revocations_total",
            "counter",
            "Rebalances that revoked partitions from this core.",
            |k| k.revoked_events,
        ),
        (
            "shardtel_receiver_kafka_assigned_partitions",
            "gauge",
            "Partitions assigned to this core's consumer.",
            |k| k.assigned_partitions,
        ),
    ];
    render_families(out, &consumer, &consumers);
    let name = "shardtel_receiver_kafka_lag";
    header(
        out,
        name,
        "gauge",
        "Messages between the committed offset and the end of each assigned partition.",
    );
    for (labels, k) in &consumers {
        for (topic, partition, lag) in &k.lag {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{topic}\",partition=\"{partition}\",{labels}}} {lag}"
            );
        }
    }
}

/// Which endpoint a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// `GET /` (any path): 200 when healthy, 503 otherwise.
    Health,
    /// `GET /metrics`: Prometheus text.
    Metrics,
}

/// Serves one telemetry endpoint on a plain thread (never on a reactor).
pub fn serve(listener: TcpListener, board: Arc<Board>, endpoint: Endpoint) {
    let name = match endpoint {
        Endpoint::Health => "shardtel-health",
        Endpoint::Metrics => "shardtel-metrics",
    };
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &board, endpoint);
            }
        });
    if let Err(e) = spawned {
        log::error!("failed to start the {name} thread: {e}");
    }
}

fn answer(mut stream: TcpStream, board: &Board, endpoint: Endpoint) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let r = stream.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match endpoint {
        Endpoint::Health => {
            let states = board.state_names().join(",");
            if board.healthy() {
                (
                    "200 OK",
                    "application/json",
                    format!("{{\"status\":\"serving\",\"cores\":\"{states}\"}}\n"),
                )
            } else {
                (
                    "503 Service Unavailable",
                    "application/json",
                    format!("{{\"status\":\"unavailable\",\"cores\":\"{states}\"}}\n"),
                )
            }
        }
        Endpoint::Metrics if path == "/metrics" || path == "/" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            board.render_metrics(),
        ),
        Endpoint::Metrics => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
