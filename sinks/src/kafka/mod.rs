//! `kafka`: publishes OTLP to Kafka topics with librdkafka (rdkafka's bundled build).
//!
//! Traces: each message holds the spans of one trace, keyed by the 16-byte trace ID;
//! `partitioner = murmur2_random` (the Java client's partitioner) keeps a trace on one
//! partition. A trace whose encoding exceeds the topic's `max_message_bytes` (less the record
//! framing, [`messages::value_limit`]) becomes several messages with the same key; it is never
//! dropped. Metrics and logs: slices of the batch, one per run of consecutive resources of one
//! service instance (cut between resources when larger than the limit), keyed by the
//! instance's resource key, so one partition (and one processor) gets all of an instance's
//! series and log streams.
//!
//! Trace batches of a memory queue come with the owner cores' span indexes
//! ([`crate::batch::Batch::traces`]): the exporter groups spans by trace from them without
//! joining or scanning the batch; batches of bytes (a disk queue) are joined and scanned
//! structurally first.
//!
//! Copies: a trace message's value is written once into a reused buffer (new length prefixes,
//! header fields, span bytes), and librdkafka copies it into its own message (rdkafka's safe
//! API always passes `RD_KAFKA_MSG_F_COPY`). Metrics and logs values are slices of the batch.
//!
//! Threads: each core owns a [`ThreadedProducer`]; librdkafka's own threads and the
//! producer's poll thread run beside the reactors. Enqueueing never blocks (a full producer
//! queue is answered at once and the message is offered again after a short sleep on the
//! reactor). Delivery reports come back on the poll thread and are counted without locks in
//! the batch's [`BatchDelivery`]; when the last report of a batch is in, its single-slot
//! channel completes and wakes the sending task on its core.
//!
//! A batch succeeds when no message failed with a retryable error. Otherwise the attempt fails
//! with [`ExportError::Kafka`] and the queue's retry policy decides; a retried batch is sent
//! whole, so messages delivered by the failed attempt are delivered again (at-least-once). A
//! message that can never be delivered (too large for the topic, not authorized) is counted,
//! logged and reported as rejected; it does not hold back the rest of its batch.
//!
//! A librdkafka *fatal* error (the idempotent producer lost track of its sequence numbers,
//! e.g. an out-of-order sequence) leaves the producer unusable: every later message fails
//! with `_FATAL`. Before each attempt the exporter checks its producer and, after a fatal
//! error, logs it (at most once per 10 s per core) and creates a new producer; the batch
//! that failed is retried on it whole. Batches still in flight on the old producer finish
//! there (their delivery reports come from its threads), and the old producer is destroyed
//! off the reactor once the last of them is done.

mod messages;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use shardtel_config::{KafkaEncoding, KafkaExporterConfig};
use shardtel_protocol::{Signal, TraceId};

use crate::batch::Batch;
use crate::error::{
    kafka_code_is_fatal, kafka_code_is_retryable, ExportError, ExportReply, SinkError,
};
use crate::offload;

pub use self::messages::TraceMessages;
use self::messages::{request_messages, value_limit, ResourceKey};

/// How long the reactor sleeps before offering a message again to a full producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);
/// Bytes librdkafka's produce request adds around the record batches it carries.
const REQUEST_OVERHEAD: usize = 4096;
/// The producing task yields to the reactor's other tasks after this many messages.
const YIELD_EVERY: usize = 64;
/// Undeliverable messages are logged at most this often per exporter and core.
const REJECTED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Producers re-created after a fatal error are logged at most this often per exporter and
/// core.
const FATAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One core's librdkafka producer, shared by the batches in flight on it.
type CoreProducer = ThreadedProducer<DeliveryContext>;

/// Message-level counters of one `kafka` exporter on one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KafkaProducerStats {
    /// Messages the brokers acknowledged.
    pub produced_messages: u64,
    /// Value bytes of those messages (before compression).
    pub produced_bytes: u64,
    /// Messages whose delivery failed (the batch is retried or counted as failed).
    pub failed_messages: u64,
    /// Value bytes of those messages.
    pub failed_bytes: u64,
    /// Times the producer's local queue was full when a message was offered.
    pub queue_full: u64,
    /// Times the producer was re-created after a fatal librdkafka error.
    pub producer_restarts: u64,
}

/// librdkafka log lines go to the `log` crate under target `librdkafka`.
struct DeliveryContext {
    exporter: String,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => log::Level::Error,
            RDKafkaLogLevel::Warning => log::Level::Warn,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => log::Level::Info,
            RDKafkaLogLevel::Debug => log::Level::Debug,
        };
        log::log!(target: "librdkafka", level, "exporter {}: {fac}: {message}", self.exporter);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A fatal error makes the producer unusable; it is raised once per producer (which the
        // exporter then re-creates, logging that too, throttled).
        if error.rdkafka_error_code().is_some_and(kafka_code_is_fatal) {
            log::error!(target: "librdkafka", "exporter {}: fatal producer error: {error}: {reason}", self.exporter);
            return;
        }
        // Transient broker errors are retried by librdkafka and show up in delivery reports;
        // log them at debug to keep a down broker from flooding the log.
        log::debug!(target: "librdkafka", "exporter {}: {error}: {reason}", self.exporter);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<BatchDelivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchDelivery>) {
        match result {
            Ok(message) => batch.delivered(message.payload_len()),
            Err((error, message)) => {
                let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                batch.failed(code, message.payload().unwrap_or_default());
            }
        }
        // Dropping `batch` here may release the batch's last reference: that completes it.
    }
}

/// The delivery reports of one batch's messages, counted on librdkafka's poll thread.
///
/// Every enqueued message holds a reference (its delivery opaque) until its report is in, and
/// the sending task holds one until it offered every message: the last reference dropped
/// sends the counts through `done` to the task. Lock-free.
struct BatchDelivery {
    signal: Signal,
    /// How the message values are encoded (to count the items of failed ones).
    encoding: KafkaEncoding,
    delivered_messages: AtomicU64,
    delivered_bytes: AtomicU64,
    failed_messages: AtomicU64,
    failed_bytes: AtomicU64,
    /// Items in messages that failed permanently (counted from their payload).
    rejected_items: AtomicU64,
    /// First error that a retry may clear up, and first that it cannot.
    retryable: OnceLock<RDKafkaErrorCode>,
    permanent: OnceLock<RDKafkaErrorCode>,
    done: Option<oneshot::Sender<DeliveryOutcome>>,
}

/// What happened to a batch's messages, read once every report is in.
#[derive(Debug, Default, PartialEq, Eq)]
struct DeliveryOutcome {
    delivered_messages: u64,
    delivered_bytes: u64,
    failed_messages: u64,
    failed_bytes: u64,
    rejected_items: u64,
    retryable: Option<RDKafkaErrorCode>,
    permanent: Option<RDKafkaErrorCode>,
}

impl BatchDelivery {
    fn new(
        signal: Signal,
        encoding: KafkaEncoding,
    ) -> (Arc<Self>, oneshot::Receiver<DeliveryOutcome>) {
        let (done, rx) = oneshot::channel();
        let delivery = Arc::new(BatchDelivery {
            signal,
            encoding,
            delivered_messages: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            failed_messages: AtomicU64::new(0),
            failed_bytes: AtomicU64::new(0),
            rejected_items: AtomicU64::new(0),
            retryable: OnceLock::new(),
            permanent: OnceLock::new(),
            done: Some(done),
        });
        (delivery, rx)
    }

    fn delivered(&self, bytes: usize) {
        self.delivered_messages.fetch_add(1, Ordering::Relaxed);
        self.delivered_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn failed(&self, code: RDKafkaErrorCode, payload: &[u8]) {
        self.failed_messages.fetch_add(1, Ordering::Relaxed);
        self.failed_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        if kafka_code_is_retryable(code) {
            let _ = self.retryable.set(code);
        } else {
            let _ = self.permanent.set(code);
            self.rejected_items.fetch_add(
                count_items(self.signal, self.encoding, payload),
                Ordering::Relaxed,
            );
        }
    }

    fn outcome(&self) -> DeliveryOutcome {
        DeliveryOutcome {
            delivered_messages: self.delivered_messages.load(Ordering::Relaxed),
            delivered_bytes: self.delivered_bytes.load(Ordering::Relaxed),
            failed_messages: self.failed_messages.load(Ordering::Relaxed),
            failed_bytes: self.failed_bytes.load(Ordering::Relaxed),
            rejected_items: self.rejected_items.load(Ordering::Relaxed),
            retryable: self.retryable.get().copied(),
            permanent: self.permanent.get().copied(),
        }
    }
}

impl Drop for BatchDelivery {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(self.outcome());
        }
    }
}

/// Spans, points or records in an encoded request (0 if it does not scan). OTLP/JSON is
/// converted to protobuf first (only failed messages are counted, so this is rare).
fn count_items(signal: Signal, encoding: KafkaEncoding, payload: &[u8]) -> u64 {
    use shardtel_protocol::scan::{scan_logs, scan_metrics, TracesIndex};
    let converted;
    let payload = match encoding {
        KafkaEncoding::OtlpProto => payload,
        KafkaEncoding::OtlpJson => match shardtel_protocol::json::to_protobuf(signal, payload) {
            Ok(pb) => {
                converted = pb;
                &converted[..]
            }
            Err(_) => return 0,
        },
    };
    match signal {
        Signal::Traces => {
            let mut index = TracesIndex::default();
            index.scan(payload).map_or(0, |()| index.spans.len() as u64)
        }
        Signal::Metrics => scan_metrics(payload).map_or(0, |c| c.items as u64),
        Signal::Logs => scan_logs(payload).map_or(0, |c| c.items as u64),
    }
}

/// The messages of one batch, ready to produce.
enum BatchMessages {
    /// Protobuf traces: written one at a time into a reused buffer.
    Traces(Box<TraceMessages>),
    /// Metrics and logs slices, or OTLP/JSON values of any signal.
    Values(Vec<(MessageKey, Bytes)>),
}

/// The key of a message: its trace's id, or its resources' [`ResourceKey`].
enum MessageKey {
    Trace(TraceId),
    Resource(ResourceKey),
}

impl MessageKey {
    fn bytes(&self) -> &[u8] {
        match self {
            MessageKey::Trace(id) => id,
            MessageKey::Resource(key) => key,
        }
    }
}

/// librdkafka producer properties for `c`, with `queue_max_bytes` of local buffering.
fn producer_config(c: &KafkaExporterConfig, queue_max_bytes: usize) -> ClientConfig {
    let mut config = ClientConfig::new();
    // A record batch holds several messages: never more than one message may be (the topic's
    // limit applies to the batch).
    let batch_bytes = c.producer_batch_bytes.min(c.max_message_bytes);
    config
        .set("bootstrap.servers", c.brokers.join(","))
        .set("client.id", &c.client_id)
        .set("partitioner", "murmur2_random")
        .set("compression.codec", c.compression.name())
        .set("acks", c.acks.librdkafka_value())
        .set("enable.idempotence", c.enable_idempotence.to_string())
        .set("linger.ms", c.linger.as_millis().to_string())
        .set("batch.size", batch_bytes.to_string())
        .set(
            "message.max.bytes",
            (c.max_message_bytes + REQUEST_OVERHEAD).to_string(),
        )
        .set("message.timeout.ms", c.timeout.as_millis().to_string())
        // What librdkafka holds is bounded by the export queue already; keep its own
        // buffer at the same size (in KiB, at least librdkafka's minimum of 1).
        .set(
            "queue.buffering.max.kbytes",
            (queue_max_bytes / 1024).max(1).to_string(),
        );
    for (key, value) in c.auth.client_properties() {
        config.set(key, value);
    }
    for (key, value) in &c.librdkafka {
        config.set(key, value);
    }
    config
}

/// One `kafka` exporter on one core.
pub(crate) struct KafkaExporter {
    name: String,
    /// The producer's properties, to create it again after a fatal error.
    config: ClientConfig,
    /// `None` only while dropping (the producer is destroyed off the reactor). Replaced after a
    /// fatal error; batches in flight keep the one they were sent with.
    producer: RefCell<Option<Arc<CoreProducer>>>,
    /// Fatal errors (producer re-created): one error line per interval.
    fatal_log: crate::report::Throttle,
    topics: [String; 3],
    encoding: KafkaEncoding,
    /// Largest message value ([`value_limit`] of `max_message_bytes`).
    max_value_bytes: usize,
    /// How long to keep offering messages to a full producer queue before failing the attempt.
    enqueue_timeout: Duration,
    stats: std::cell::Cell<KafkaProducerStats>,
    /// Undeliverable messages: one warning per interval, with a count of those held back.
    rejected_log: crate::report::Throttle,
}

impl KafkaExporter {
    /// Creates the producer (librdkafka starts its threads; no broker is contacted yet).
    pub(crate) fn new(
        name: &str,
        c: &KafkaExporterConfig,
        queue_max_bytes: usize,
    ) -> Result<Self, SinkError> {
        let config = producer_config(c, queue_max_bytes);
        let producer = create_producer(name, &config)?;
        Ok(KafkaExporter {
            name: name.to_string(),
            config,
            producer: RefCell::new(Some(Arc::new(producer))),
            fatal_log: crate::report::Throttle::new(FATAL_LOG_INTERVAL),
            topics: [
                c.topic(Signal::Traces).to_string(),
                c.topic(Signal::Metrics).to_string(),
                c.topic(Signal::Logs).to_string(),
            ],
            encoding: c.encoding,
            max_value_bytes: value_limit(c.max_message_bytes),
            enqueue_timeout: c.timeout,
            stats: std::cell::Cell::new(KafkaProducerStats::default()),
            rejected_log: crate::report::Throttle::new(REJECTED_LOG_INTERVAL),
        })
    }

    /// OTLP protobuf trace messages are cut from the owner cores' span indexes when the batch
    /// has them.
    pub(crate) fn uses_span_index(&self) -> bool {
        self.encoding == KafkaEncoding::OtlpProto
    }

    /// This exporter's producer counters.
    pub(crate) fn stats(&self) -> KafkaProducerStats {
        self.stats.get()
    }

    fn count(&self, f: impl FnOnce(&mut KafkaProducerStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// The producer to send the next attempt with: the current one, or, when it hit a fatal
    /// error, a new one (the old one stays with the batches in flight on it). `None` only
    /// while dropping.
    fn producer(&self) -> Option<Arc<CoreProducer>> {
        let current = self.producer.borrow().clone()?;
        let Some((code, reason)) = current.client().fatal_error() else {
            return Some(current);
        };
        let held_back = self.fatal_log.due(Instant::now());
        match create_producer(&self.name, &self.config) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.producer.borrow_mut() = Some(fresh.clone());
                self.count(|s| s.producer_restarts += 1);
                if let Some(held_back) = held_back {
                    log::error!(
                        "exporter {}: the kafka producer hit a fatal error ({code:?}: {reason}); created a new one, failed batches are retried on it{held_back}",
                        self.name
                    );
                }
                self.retire(current);
                Some(fresh)
            }
            Err(e) => {
                // This attempt fails on the old producer (`_FATAL`, retryable); the next
                // one tries again.
                if let Some(held_back) = held_back {
                    log::error!(
                        "exporter {}: the kafka producer hit a fatal error ({code:?}: {reason}) and could not be created again: {e}{held_back}",
                        self.name
                    );
                }
                Some(current)
            }
        }
    }

    /// Lets go of a producer a batch was sent with: when it is not the current one any more
    /// (replaced after a fatal error), it may be the last reference, and destroying a producer
    /// blocks, so it is dropped on a thread of its own.
    fn retire(&self, producer: Arc<CoreProducer>) {
        let current = self.producer.borrow();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &producer)) {
            return;
        }
        drop(current);
        drop_off_reactor(&self.name, producer);
    }

    /// Produces `batch` as messages and waits until every one was acknowledged or failed.
    pub(crate) async fn export(&self, batch: &Batch) -> Result<ExportReply, ExportError> {
        let Some(producer) = self.producer() else {
            return Ok(ExportReply::default());
        };
        // Retired when done, also when this future is dropped half-way.
        let in_use = InUse {
            exporter: self,
            producer: Some(producer),
        };
        let producer = in_use.producer.as_deref().expect("set above");
        self.export_with(producer, batch).await
    }

    /// [`Self::export`] on `producer`.
    async fn export_with(
        &self,
        producer: &CoreProducer,
        batch: &Batch,
    ) -> Result<ExportReply, ExportError> {
        let messages = self.messages(batch).await?;
        let topic = &self.topics[batch.signal.index()];
        let (delivery, done) = BatchDelivery::new(batch.signal, self.encoding);
        let deadline = Instant::now() + self.enqueue_timeout;
        let mut offered = Offered::default();
        match messages {
            BatchMessages::Traces(mut traces) => {
                let mut value = Vec::with_capacity(self.max_value_bytes.min(64 << 10));
                while let Some((key, _spans)) = traces.next_into(&mut value) {
                    if !self
                        .offer(
                            producer,
                            topic,
                            Some(&key),
                            &value,
                            &delivery,
                            deadline,
                            &mut offered,
                        )
                        .await
                    {
                        break;
                    }
                }
            }
            BatchMessages::Values(values) => {
                for (key, value) in &values {
                    if !self
                        .offer(
                            producer,
                            topic,
                            Some(key.bytes()),
                            value,
                            &delivery,
                            deadline,
                            &mut offered,
                        )
                        .await
                    {
                        break;
                    }
                }
            }
        }
        // Once this reference is gone, the last delivery report sends the outcome.
        drop(delivery);
        let outcome = done.await.unwrap_or_else(|_| DeliveryOutcome {
            retryable: Some(RDKafkaErrorCode::Fail),
            ..Default::default()
        });
        self.finish(batch.signal, offered, outcome)
    }

    /// Offers one message, waiting out a full producer queue until `deadline`; returns false
    /// when the batch must stop (a retryable enqueue failure, recorded in `offered`).
    #[allow(clippy::too_many_arguments)]
    async fn offer(
        &self,
        producer: &CoreProducer,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        delivery: &Arc<BatchDelivery>,
        deadline: Instant,
        offered: &mut Offered,
    ) -> bool {
        loop {
            let mut record = BaseRecord::with_opaque_to(topic, delivery.clone()).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            let error = match producer.send(record) {
                Ok(()) => {
                    offered.messages += 1;
                    if offered.messages % YIELD_EVERY == 0 {
                        glommio::yield_if_needed().await;
                    }
                    return true;
                }
                Err((error, _record)) => error,
            };
            let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
            if code == RDKafkaErrorCode::QueueFull {
                self.count(|s| s.queue_full += 1);
                if Instant::now() < deadline {
                    glommio::timer::sleep(QUEUE_FULL_PAUSE).await;
                    continue;
                }
            }
            if kafka_code_is_retryable(code) {
                offered.retryable = Some(error);
                return false;
            }
            // This message can never be taken (e.g. larger than `message.max.bytes`): count it
            // and carry on with the others.
            offered.rejected_messages += 1;
            offered.rejected_bytes += value.len() as u64;
            offered.rejected_items += count_items(delivery.signal, delivery.encoding, value);
            offered.permanent.get_or_insert(error);
            return true;
        }
    }

    /// Counts the outcome of a batch and turns it into the attempt's result.
    fn finish(
        &self,
        signal: Signal,
        offered: Offered,
        outcome: DeliveryOutcome,
    ) -> Result<ExportReply, ExportError> {
        self.count(|s| {
            s.produced_messages += outcome.delivered_messages;
            s.produced_bytes += outcome.delivered_bytes;
            s.failed_messages += outcome.failed_messages + offered.rejected_messages;
            s.failed_bytes += outcome.failed_bytes + offered.rejected_bytes;
        });
        let retryable = offered
            .retryable
            .or_else(|| outcome.retryable.map(KafkaError::MessageProduction));
        if let Some(source) = retryable {
            return Err(ExportError::Kafka {
                failed: outcome.failed_messages,
                source,
            });
        }
        let permanent = offered
            .permanent
            .or_else(|| outcome.permanent.map(KafkaError::MessageProduction));
        let Some(error) = permanent else {
            return Ok(ExportReply::default());
        };
        let messages = offered.rejected_messages + outcome.failed_messages;
        let message = format!("{messages} {signal} messages can never be delivered: {error}");
        if let Some(held_back) = self.rejected_log.due(Instant::now()) {
            log::warn!("exporter {}: {message}{held_back}", self.name);
        }
        Ok(ExportReply {
            rejected: offered.rejected_items + outcome.rejected_items,
            message,
        })
    }

    /// The batch as messages: joining, scanning and grouping run on the core's blocking
    /// thread for large batches.
    async fn messages(&self, batch: &Batch) -> Result<BatchMessages, ExportError> {
        let signal = batch.signal;
        let (max_bytes, encoding) = (self.max_value_bytes, self.encoding);
        let indexed: usize = batch.traces.iter().map(|t| t.index.spans.len()).sum();
        if signal == Signal::Traces
            && encoding == KafkaEncoding::OtlpProto
            && !batch.traces.is_empty()
            // (Always true when the engine hands indexes over; the bytes are the reference.)
            && indexed as u64 == batch.items
        {
            // The owner cores' indexes came with the batch: only grouping is left, nothing
            // to join or scan (still off the reactor for large batches). (Shared, not copied.)
            let traces = batch.traces.clone();
            return Ok(offload::run(batch.bytes, move || {
                BatchMessages::Traces(Box::new(TraceMessages::from_batches(traces, max_bytes)))
            })
            .await);
        }
        let chunks = batch.chunks.clone();
        offload::run(batch.bytes, move || {
            let request = Batch::join(&chunks);
            let invalid =
                |e: &dyn std::fmt::Display| format!("batch is not a valid {signal} request: {e}");
            let mut values: Vec<(MessageKey, Bytes)> = Vec::new();
            match signal {
                Signal::Traces => {
                    let mut traces =
                        TraceMessages::new(request, max_bytes).map_err(|e| invalid(&e))?;
                    if encoding == KafkaEncoding::OtlpProto {
                        return Ok(BatchMessages::Traces(Box::new(traces)));
                    }
                    // OTLP/JSON (the protobuf path returned above): each message converted,
                    // and cut again where its JSON outgrows the limit.
                    let mut value = Vec::new();
                    while let Some((key, _)) = traces.next_into(&mut value) {
                        push_json(
                            signal,
                            MessageKey::Trace(key),
                            &value,
                            max_bytes,
                            &mut values,
                        )?;
                    }
                }
                Signal::Metrics | Signal::Logs => {
                    let mut slices = Vec::new();
                    request_messages(&request, max_bytes, &mut slices).map_err(|e| invalid(&e))?;
                    for (key, v) in slices {
                        match encoding {
                            KafkaEncoding::OtlpJson => push_json(
                                signal,
                                MessageKey::Resource(key),
                                &v,
                                max_bytes,
                                &mut values,
                            )?,
                            KafkaEncoding::OtlpProto => values.push((MessageKey::Resource(key), v)),
                        }
                    }
                }
            }
            Ok::<_, String>(BatchMessages::Values(values))
        })
        .await
        .map_err(|reason| ExportError::Encode { reason })
    }
}

/// Appends the OTLP/JSON value(s) of `proto`, one message of `signal` (protobuf, cut to at most
/// `max_bytes`), keyed `key`, to `out`: one value when its JSON fits `max_bytes`. OTLP/JSON is
/// larger than protobuf (hex ids, field names, quoting: 1.5 to 3 times), so a message cut to
/// the limit as protobuf may be over it as JSON and would be refused by the broker. Such a
/// message is cut again (spans of a trace; metrics and logs between resources) with its
/// protobuf limit shrunk by the factor its JSON grew, and every piece is converted in turn.
/// A piece that cannot be cut further (one span, one resource) goes as it is, like an
/// oversized protobuf one: if the broker refuses it, it is counted and reported as rejected.
fn push_json(
    signal: Signal,
    key: MessageKey,
    proto: &[u8],
    max_bytes: usize,
    out: &mut Vec<(MessageKey, Bytes)>,
) -> Result<(), String> {
    let json = shardtel_protocol::json::from_protobuf(signal, proto).map_err(|e| e.to_string())?;
    if json.len() <= max_bytes {
        out.push((key, Bytes::from(json)));
        return Ok(());
    }
    // The protobuf bytes whose JSON fits, with a tenth to spare for pieces that grow more
    // than the average.
    let limit = (proto.len() as u128 * max_bytes as u128 * 9 / 10 / json.len() as u128) as usize;
    let invalid =
        |e: &dyn std::fmt::Display| format!("message is not a valid {signal} request: {e}");
    // (A copy, on this rare path only.)
    let proto = Bytes::copy_from_slice(proto);
    let mut pieces: Vec<(MessageKey, Bytes)> = Vec::new();
    match signal {
        Signal::Traces => {
            let mut traces = TraceMessages::new(proto, limit.max(1)).map_err(|e| invalid(&e))?;
            let mut value = Vec::new();
            while let Some((trace, _)) = traces.next_into(&mut value) {
                pieces.push((MessageKey::Trace(trace), Bytes::copy_from_slice(&value)));
            }
        }
        Signal::Metrics | Signal::Logs => {
            let mut slices = Vec::new();
            request_messages(&proto, limit.max(1), &mut slices).map_err(|e| invalid(&e))?;
            pieces.extend(
                slices
                    .into_iter()
                    .map(|(k, v)| (MessageKey::Resource(k), v)),
            );
        }
    }
    if pieces.len() <= 1 {
        // Cannot be cut: one span or one resource.
        out.push((key, Bytes::from(json)));
        return Ok(());
    }
    // Each piece holds fewer spans or resources than `proto`: the recursion ends.
    for (key, piece) in pieces {
        push_json(signal, key, &piece, max_bytes, out)?;
    }
    Ok(())
}

/// What happened while offering a batch's messages to the producer.
#[derive(Default)]
struct Offered {
    messages: usize,
    /// Messages the producer refused for good at enqueue time, their bytes and items.
    rejected_messages: u64,
    rejected_bytes: u64,
    rejected_items: u64,
    permanent: Option<KafkaError>,
    /// A refusal that a later attempt may not get (queue still full at the deadline).
    retryable: Option<KafkaError>,
}

impl Drop for KafkaExporter {
    fn drop(&mut self) {
        // Every batch was awaited before, so nothing is left to deliver.
        if let Some(producer) = self.producer.get_mut().take() {
            drop_off_reactor(&self.name, producer);
        }
    }
}

/// The producer an attempt sends with, retired ([`KafkaExporter::retire`]) when the attempt
/// ends or is dropped.
struct InUse<'a> {
    exporter: &'a KafkaExporter,
    producer: Option<Arc<CoreProducer>>,
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            self.exporter.retire(producer);
        }
    }
}

/// Creates a producer with `config` (librdkafka starts its threads, off this reactor's CPU:
/// see `crate::threads`; no broker is contacted yet).
fn create_producer(name: &str, config: &ClientConfig) -> Result<CoreProducer, SinkError> {
    let context = DeliveryContext {
        exporter: name.to_string(),
    };
    crate::threads::unpinned(|| config.create_with_context(context)).map_err(|e| SinkError::Kafka {
        exporter: name.to_string(),
        message: e.to_string(),
    })
}

/// Drops a reference to a producer on a thread of its own: destroying a producer (when this
/// is the last reference) joins its threads and waits up to 500 ms for a flush, never on a
/// reactor.
fn drop_off_reactor(name: &str, producer: Arc<CoreProducer>) {
    let spawned = std::thread::Builder::new()
        .name("shardtel-kafka-drop".into())
        .spawn(move || drop(producer));
    if let Err(e) = spawned {
        log::warn!("exporter {name}: could not stop the kafka producer off the reactor: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_config::{KafkaAuth, KafkaTlsConfig, SaslConfig, SaslMechanism};

    #[test]
    fn delivery_completes_when_the_last_report_is_in() {
        let (d, mut rx) = BatchDelivery::new(Signal::Logs, KafkaEncoding::OtlpProto);
        let (m1, m2) = (d.clone(), d.clone());
        drop(d); // the sending task is done offering
        m1.delivered(10);
        drop(m1);
        assert!(rx.try_recv().unwrap().is_none(), "one report outstanding");
        m2.failed(RDKafkaErrorCode::MessageTimedOut, &[0; 5]);
        drop(m2);
        let outcome = rx.try_recv().unwrap().unwrap();
        assert_eq!(
            outcome,
            DeliveryOutcome {
                delivered_messages: 1,
                delivered_bytes: 10,
                failed_messages: 1,
                failed_bytes: 5,
                rejected_items: 0,
                retryable: Some(RDKafkaErrorCode::MessageTimedOut),
                permanent: None,
            }
        );
    }

    #[test]
    fn permanent_failures_count_the_items_they_held() {
        use prost::Message;
        use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
        use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let payload = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 3],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let (d, mut rx) = BatchDelivery::new(Signal::Logs, KafkaEncoding::OtlpProto);
        d.failed(RDKafkaErrorCode::MessageSizeTooLarge, &payload);
        drop(d);
        let outcome = rx.try_recv().unwrap().unwrap();
        assert_eq!(outcome.rejected_items, 3);
        assert_eq!(
            outcome.permanent,
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        assert_eq!(outcome.retryable, None);
    }

    /// A trace of `spans` spans, and a logs request of `resources` resources of 20 records.
    fn json_fixtures(spans: u32, resources: usize) -> (Vec<u8>, Vec<u8>) {
        use prost::Message;
        use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
        use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
        use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let traces = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![7; 16],
                            span_id: (u64::from(i) + 1).to_be_bytes().to_vec(),
                            parent_span_id: vec![9; 8],
                            name: format!("span-{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let logs = ExportLogsServiceRequest {
            resource_logs: (0..resources)
                .map(|r| ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: (0..20)
                            .map(|i| LogRecord {
                                trace_id: vec![r as u8; 16],
                                span_id: vec![i; 8],
                                severity_text: "INFO".into(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        (traces.encode_to_vec(), logs.encode_to_vec())
    }

    #[test]
    fn json_messages_are_cut_again_to_fit_the_limit() {
        use prost::Message;
        use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
        use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
        use shardtel_protocol::proto::trace::v1::Span;
        let max = 4096;
        let (traces, logs) = json_fixtures(200, 30);
        // Cut as protobuf first (as `messages` does), then converted.
        let mut trace_messages = TraceMessages::new(Bytes::from(traces.clone()), max).unwrap();
        let (mut proto_messages, mut values) = (0, Vec::new());
        let mut value = Vec::new();
        while let Some((key, _)) = trace_messages.next_into(&mut value) {
            proto_messages += 1;
            push_json(
                Signal::Traces,
                MessageKey::Trace(key),
                &value,
                max,
                &mut values,
            )
            .unwrap();
        }
        assert!(values.len() > proto_messages, "JSON needs more messages");
        let mut spans = Vec::new();
        for (key, v) in &values {
            assert!(v.len() <= max, "a JSON trace message of {} bytes", v.len());
            assert_eq!(key.bytes(), [7; 16]);
            let pb = shardtel_protocol::json::to_protobuf(Signal::Traces, v).unwrap();
            let req = ExportTraceServiceRequest::decode(pb).unwrap();
            spans.extend(req.resource_spans[0].scope_spans[0].spans.clone());
        }
        // Every span once, in order (JSON writes an absent status as an empty one).
        let sent = ExportTraceServiceRequest::decode(&traces[..]).unwrap();
        let names = |spans: &[Span]| spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&spans),
            names(&sent.resource_spans[0].scope_spans[0].spans)
        );

        let mut slices = Vec::new();
        request_messages(&Bytes::from(logs.clone()), max, &mut slices).unwrap();
        let mut values = Vec::new();
        for (key, v) in &slices {
            push_json(
                Signal::Logs,
                MessageKey::Resource(*key),
                v,
                max,
                &mut values,
            )
            .unwrap();
        }
        assert!(values.len() > slices.len());
        // Every record once, in order (JSON writes an absent resource or scope as an empty one).
        let records = |req: ExportLogsServiceRequest| -> Vec<(Vec<u8>, Vec<u8>)> {
            req.resource_logs
                .into_iter()
                .flat_map(|r| r.scope_logs)
                .flat_map(|s| s.log_records)
                .map(|r| (r.trace_id, r.span_id))
                .collect()
        };
        let mut got = Vec::new();
        for (_, v) in &values {
            assert!(v.len() <= max, "a JSON logs message of {} bytes", v.len());
            let pb = shardtel_protocol::json::to_protobuf(Signal::Logs, v).unwrap();
            got.extend(records(ExportLogsServiceRequest::decode(pb).unwrap()));
        }
        assert_eq!(
            got,
            records(ExportLogsServiceRequest::decode(&logs[..]).unwrap())
        );

        // One resource bigger than the limit as JSON cannot be cut: it goes alone, whole.
        let (_, one) = json_fixtures(1, 1);
        let mut values = Vec::new();
        push_json(
            Signal::Logs,
            MessageKey::Resource([0; 8]),
            &one,
            512,
            &mut values,
        )
        .unwrap();
        assert_eq!(values.len(), 1);
        assert!(values[0].1.len() > 512);
    }

    #[test]
    fn failed_json_messages_count_their_items() {
        let (traces, logs) = json_fixtures(3, 2);
        let json = |signal, pb: &[u8]| shardtel_protocol::json::from_protobuf(signal, pb).unwrap();
        assert_eq!(
            count_items(
                Signal::Traces,
                KafkaEncoding::OtlpJson,
                &json(Signal::Traces, &traces)
            ),
            3
        );
        assert_eq!(
            count_items(
                Signal::Logs,
                KafkaEncoding::OtlpJson,
                &json(Signal::Logs, &logs)
            ),
            40
        );
        assert_eq!(
            count_items(Signal::Logs, KafkaEncoding::OtlpProto, &logs),
            40
        );
        let (d, mut rx) = BatchDelivery::new(Signal::Traces, KafkaEncoding::OtlpJson);
        d.failed(
            RDKafkaErrorCode::MessageSizeTooLarge,
            &json(Signal::Traces, &traces),
        );
        drop(d);
        assert_eq!(rx.try_recv().unwrap().unwrap().rejected_items, 3);
    }

    fn config(auth: KafkaAuth) -> KafkaExporterConfig {
        let mut c = KafkaExporterConfig::new(vec!["k1:9092".into(), "k2:9093".into()]);
        c.auth = auth;
        c
    }

    fn props(c: &ClientConfig) -> std::collections::BTreeMap<String, String> {
        c.config_map()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn producer_properties_map_the_settings() {
        let p = props(&producer_config(&config(KafkaAuth::default()), 64 << 20));
        for (key, value) in [
            ("bootstrap.servers", "k1:9092,k2:9093"),
            ("partitioner", "murmur2_random"),
            ("compression.codec", "lz4"),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
            ("message.max.bytes", "1004096"),
            ("message.timeout.ms", "30000"),
            ("queue.buffering.max.kbytes", "65536"),
            ("security.protocol", "plaintext"),
        ] {
            assert_eq!(p.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert!(!p
            .keys()
            .any(|k| k.starts_with("sasl.") || k.starts_with("ssl.")));
    }

    /// Every SASL mechanism with and without TLS maps to librdkafka's properties, and
    /// librdkafka accepts them (creating a client checks every name and value; no broker is
    /// contacted). SCRAM is also run against a real broker (`engine/tests/integration/kafka_auth.rs`); PLAIN and TLS only here.
    #[test]
    fn sasl_and_tls_map_to_properties_librdkafka_accepts() {
        let dir = std::env::temp_dir().join(format!("shardtel-kafka-tls-{}", std::process::id()));
        let tls = KafkaTlsConfig {
            ca_file: Some(dir.join("ca.pem")),
            cert_file: Some(dir.join("client.pem")),
            key_file: Some(dir.join("client.key")),
            insecure_skip_verify: false,
        };
        for mechanism in [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ] {
            for tls in [None, Some(tls.clone())] {
                let auth = KafkaAuth {
                    sasl: Some(SaslConfig {
                        mechanism,
                        username: "user".into(),
                        password: "secret".into(),
                    }),
                    tls,
                };
                let with_tls = auth.tls.is_some();
                let c = producer_config(&config(auth), 1 << 20);
                let p = props(&c);
                let expect = |k: &str| p.get(k).map(String::as_str);
                assert_eq!(
                    expect("security.protocol"),
                    Some(if with_tls {
                        "sasl_ssl"
                    } else {
                        "sasl_plaintext"
                    })
                );
                assert_eq!(expect("sasl.mechanisms"), Some(mechanism.name()));
                assert_eq!(expect("sasl.username"), Some("user"));
                // (`config_map` hides secrets; `get` does not.)
                assert_eq!(c.get("sasl.password"), Some("secret"));
                if with_tls {
                    let path = |f: &str| dir.join(f).display().to_string();
                    assert_eq!(p["ssl.ca.location"], path("ca.pem"));
                    assert_eq!(p["ssl.certificate.location"], path("client.pem"));
                    assert_eq!(p["ssl.key.location"], path("client.key"));
                } else {
                    let producer: Result<ThreadedProducer<DeliveryContext>, _> = c
                        .create_with_context(DeliveryContext {
                            exporter: "t".into(),
                        });
                    assert!(producer.is_ok(), "{mechanism:?}: {:?}", producer.err());
                }
            }
        }
        // TLS without client files, certificates not verified: librdkafka accepts it as is.
        let auth = KafkaAuth {
            sasl: None,
            tls: Some(KafkaTlsConfig {
                insecure_skip_verify: true,
                ..Default::default()
            }),
        };
        let c = producer_config(&config(auth), 1 << 20);
        let p = props(&c);
        assert_eq!(p["security.protocol"], "ssl");
        assert_eq!(p["enable.ssl.certificate.verification"], "false");
        assert_eq!(p["ssl.endpoint.identification.algorithm"], "none");
        let producer: Result<ThreadedProducer<DeliveryContext>, _> =
            c.create_with_context(DeliveryContext {
                exporter: "t".into(),
            });
        assert!(producer.is_ok(), "{:?}", producer.err());
    }

    #[test]
    fn record_batches_never_exceed_the_topic_limit() {
        let mut c = config(KafkaAuth::default());
        c.max_message_bytes = 256 << 10;
        let p = props(&producer_config(&c, 1 << 20));
        assert_eq!(p["batch.size"], (256 << 10).to_string());
    }
}

/// A fatal librdkafka error on a producer (librdkafka's mock cluster, no broker needed).
#[cfg(test)]
mod fatal_tests {
    use super::*;
    use prost::Message as _;
    use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
    use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn logs_batch() -> Batch {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        severity_text: "fatal-test".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = Bytes::from(req.encode_to_vec());
        Batch {
            signal: Signal::Logs,
            bytes: bytes.len(),
            held: bytes.len(),
            chunks: vec![bytes],
            items: 1,
            traces: Vec::new(),
        }
    }

    #[test]
    fn fatal_is_the_only_code_that_needs_a_new_producer_and_it_is_retried() {
        assert!(kafka_code_is_fatal(RDKafkaErrorCode::Fatal));
        assert!(kafka_code_is_retryable(RDKafkaErrorCode::Fatal));
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageSizeTooLarge,
        ] {
            assert!(!kafka_code_is_fatal(code), "{code:?}");
        }
    }

    /// After a fatal error (raised with librdkafka's test hook) every message fails on that
    /// producer with `_FATAL`; the next attempt goes through a new producer.
    #[test]
    #[allow(unsafe_code)]
    fn a_fatal_error_makes_a_new_producer_and_the_next_attempt_is_delivered() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let mut c = KafkaExporterConfig::new(vec!["127.0.0.1:1".into()]);
                // An in-process mock cluster (replaces bootstrap.servers).
                c.librdkafka
                    .insert("test.mock.num.brokers".into(), "1".into());
                c.timeout = Duration::from_secs(20);
                let e = KafkaExporter::new("k", &c, 1 << 20).unwrap();
                e.export(&logs_batch()).await.unwrap();
                assert_eq!(e.stats().produced_messages, 1);
                let old = e.producer.borrow().clone().unwrap();
                let reason = c"injected by a test";
                // SAFETY: `old` keeps the client alive for the call; librdkafka's test hook
                // only records a fatal error on it (the reason is copied).
                let code = unsafe {
                    rdkafka::bindings::rd_kafka_test_fatal_error(
                        old.client().native_ptr(),
                        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                        reason.as_ptr(),
                    )
                };
                assert_eq!(
                    code,
                    rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                );
                assert!(old.client().fatal_error().is_some());
                drop(old);
                // Old code: `_FATAL` on every attempt, forever.
                for _ in 0..3 {
                    e.export(&logs_batch()).await.unwrap();
                }
                let stats = e.stats();
                assert_eq!(
                    (stats.produced_messages, stats.producer_restarts),
                    (4, 1),
                    "{stats:?}"
                );
                let current = e.producer.borrow().clone().unwrap();
                assert!(current.client().fatal_error().is_none());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
