//! `kafka`: publishes OTLP to Kafka topics with librdkafka (rdkafka's bundled build).
//!
//! Traces: each message holds the spans of one trace, re-framed from the batch's slices, keyed
//! by the 16-byte trace ID; `partitioner = murmur2_random` (the Java client's partitioner)
//! keeps a trace on one partition. A trace whose encoding exceeds `max_message_bytes` becomes
//! several messages with the same key; it is never dropped. Metrics and logs: whole requests,
//! cut between resources when larger than the limit, without a key.
//!
//! Threads: each core owns a [`ThreadedProducer`]; librdkafka's own threads and the
//! producer's poll thread run beside the reactors. Enqueueing never blocks (librdkafka copies
//! the payload; a full producer queue is answered at once and retried after a short sleep on
//! the reactor). Delivery reports come back on the poll thread and complete one bounded
//! (single-slot) channel per batch, which the sending task awaits on its core.
//!
//! A batch succeeds when every message was acknowledged (`acks`); otherwise the attempt fails
//! with [`ExportError::Kafka`] and the queue's retry policy decides. A retried batch is sent
//! whole, so messages delivered by the failed attempt are delivered again (at-least-once).

mod messages;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use shardtel_config::{KafkaEncoding, KafkaExporterConfig, Signal as ConfigSignal};
use shardtel_protocol::Signal;

use crate::batch::Batch;
use crate::error::{ExportError, SinkError};
use crate::offload;
use crate::stats::KafkaProducerStats;

use self::messages::{request_messages, trace_messages, OutMessage};

/// How long the reactor sleeps before offering a message again to a full producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Bytes librdkafka adds to a message (key, record header) on top of `max_message_bytes`.
const RECORD_OVERHEAD: usize = 4096;

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
            Err((error, message)) => batch.failed(message.payload_len(), error.clone()),
        }
    }
}

/// The delivery reports of one batch's messages, collected on librdkafka's poll thread.
struct BatchDelivery {
    state: Mutex<DeliveryState>,
}

#[derive(Default)]
struct DeliveryState {
    /// Enqueued and not yet reported.
    pending: usize,
    /// Every message of the batch was offered (no more `pending` increments).
    sealed: bool,
    outcome: DeliveryOutcome,
    done: Option<oneshot::Sender<DeliveryOutcome>>,
}

/// What happened to a batch's messages.
#[derive(Clone, Debug, Default)]
struct DeliveryOutcome {
    delivered_messages: u64,
    delivered_bytes: u64,
    failed_messages: u64,
    failed_bytes: u64,
    first_error: Option<KafkaError>,
}

impl BatchDelivery {
    fn new(done: oneshot::Sender<DeliveryOutcome>) -> Arc<Self> {
        Arc::new(BatchDelivery {
            state: Mutex::new(DeliveryState {
                done: Some(done),
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeliveryState> {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_pending(&self) {
        self.lock().pending += 1;
    }

    /// An enqueue failed: the message will not be reported.
    fn remove_pending(&self) {
        let mut s = self.lock();
        s.pending -= 1;
        s.finish_if_done();
    }

    fn seal(&self) {
        let mut s = self.lock();
        s.sealed = true;
        s.finish_if_done();
    }

    fn delivered(&self, bytes: usize) {
        let mut s = self.lock();
        s.outcome.delivered_messages += 1;
        s.outcome.delivered_bytes += bytes as u64;
        s.pending -= 1;
        s.finish_if_done();
    }

    fn failed(&self, bytes: usize, error: KafkaError) {
        let mut s = self.lock();
        s.outcome.failed_messages += 1;
        s.outcome.failed_bytes += bytes as u64;
        s.outcome.first_error.get_or_insert(error);
        s.pending -= 1;
        s.finish_if_done();
    }
}

impl DeliveryState {
    fn finish_if_done(&mut self) {
        if self.sealed && self.pending == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(std::mem::take(&mut self.outcome));
            }
        }
    }
}

/// One `kafka` exporter on one core.
pub(crate) struct KafkaExporter {
    name: String,
    /// `None` only while dropping (the producer is destroyed off the reactor).
    producer: Option<ThreadedProducer<DeliveryContext>>,
    topics: [String; 3],
    encoding: KafkaEncoding,
    max_message_bytes: usize,
    /// How long to keep offering messages to a full producer queue before failing the attempt.
    enqueue_timeout: Duration,
    stats: std::cell::Cell<KafkaProducerStats>,
}

impl KafkaExporter {
    /// Creates the producer (librdkafka starts its threads; no broker is contacted yet).
    pub(crate) fn new(
        name: &str,
        c: &KafkaExporterConfig,
        queue_max_bytes: usize,
    ) -> Result<Self, SinkError> {
        let mut config = ClientConfig::new();
        let message_max = (c.max_message_bytes + RECORD_OVERHEAD).max(c.producer_batch_bytes);
        config
            .set("bootstrap.servers", c.brokers.join(","))
            .set("client.id", &c.client_id)
            .set("partitioner", "murmur2_random")
            .set("compression.codec", c.compression.name())
            .set("acks", c.acks.librdkafka_value())
            .set("enable.idempotence", c.enable_idempotence.to_string())
            .set("linger.ms", c.linger.as_millis().to_string())
            .set("batch.size", c.producer_batch_bytes.to_string())
            .set("message.max.bytes", message_max.to_string())
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
        let context = DeliveryContext {
            exporter: name.to_string(),
        };
        let producer: ThreadedProducer<DeliveryContext> = config
            .create_with_context(context)
            .map_err(|e| SinkError::Kafka {
                exporter: name.to_string(),
                message: e.to_string(),
            })?;
        Ok(KafkaExporter {
            name: name.to_string(),
            producer: Some(producer),
            topics: [
                c.topic(ConfigSignal::Traces).to_string(),
                c.topic(ConfigSignal::Metrics).to_string(),
                c.topic(ConfigSignal::Logs).to_string(),
            ],
            encoding: c.encoding,
            max_message_bytes: c.max_message_bytes,
            enqueue_timeout: c.timeout,
            stats: std::cell::Cell::new(KafkaProducerStats::default()),
        })
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

    /// Produces `batch` as messages and waits until every one was acknowledged or failed.
    pub(crate) async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let messages = self.messages(batch).await?;
        let topic = &self.topics[crate::stats::signal_index(batch.signal)];
        let (done_tx, done_rx) = oneshot::channel();
        let delivery = BatchDelivery::new(done_tx);
        let mut enqueue_error = None;
        let started = Instant::now();
        'messages: for message in &messages {
            loop {
                delivery.add_pending();
                let mut record = BaseRecord::with_opaque_to(topic, delivery.clone())
                    .payload(message.payload.as_ref());
                if let Some(key) = &message.key {
                    record = record.key(&key[..]);
                }
                match producer.send(record) {
                    Ok(()) => continue 'messages,
                    Err((error, _record)) => {
                        delivery.remove_pending();
                        let full = error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull);
                        if full {
                            self.count(|s| s.queue_full += 1);
                        }
                        if full && started.elapsed() < self.enqueue_timeout {
                            glommio::timer::sleep(QUEUE_FULL_PAUSE).await;
                            continue;
                        }
                        enqueue_error = Some(error);
                        break 'messages;
                    }
                }
            }
        }
        delivery.seal();
        drop(delivery);
        let outcome = done_rx.await.unwrap_or_else(|_| DeliveryOutcome {
            first_error: Some(KafkaError::Canceled),
            ..Default::default()
        });
        self.count(|s| {
            s.produced_messages += outcome.delivered_messages;
            s.produced_bytes += outcome.delivered_bytes;
            s.failed_messages += outcome.failed_messages;
            s.failed_bytes += outcome.failed_bytes;
        });
        match enqueue_error.or(outcome.first_error) {
            None => Ok(()),
            Some(source) => Err(ExportError::Kafka {
                failed: outcome.failed_messages,
                source,
            }),
        }
    }

    /// The batch as messages: scanning, grouping and re-framing run on the core's blocking
    /// thread for large batches.
    async fn messages(&self, batch: &Batch) -> Result<Vec<OutMessage>, ExportError> {
        let (signal, chunks) = (batch.signal, batch.chunks.clone());
        let (max_bytes, encoding) = (self.max_message_bytes, self.encoding);
        offload::run(batch.bytes, move || {
            let request = Batch::join(&chunks);
            let mut out = Vec::new();
            match signal {
                Signal::Traces => trace_messages(request, max_bytes, &mut out)
                    .map_err(|e| format!("batch is not a valid ExportTraceServiceRequest: {e}"))?,
                Signal::Metrics | Signal::Logs => {
                    request_messages(&request, max_bytes, &mut out)
                        .map_err(|e| format!("batch is not a valid {signal} request: {e}"))?
                }
            }
            if encoding == KafkaEncoding::OtlpJson {
                for message in &mut out {
                    let json = shardtel_protocol::json::from_protobuf(signal, &message.payload)
                        .map_err(|e| e.to_string())?;
                    message.payload = Bytes::from(json);
                }
            }
            Ok::<_, String>(out)
        })
        .await
        .map_err(|reason| ExportError::Encode { reason })
    }
}

impl Drop for KafkaExporter {
    fn drop(&mut self) {
        // Destroying a producer joins its threads and waits up to 500 ms for a flush: never
        // on a reactor. Every batch was awaited before, so nothing is left to deliver.
        if let Some(producer) = self.producer.take() {
            let name = self.name.clone();
            let spawned = std::thread::Builder::new()
                .name("shardtel-kafka-drop".into())
                .spawn(move || drop(producer));
            if let Err(e) = spawned {
                log::warn!(
                    "exporter {name}: could not stop the kafka producer off the reactor: {e}"
                );
            }
        }
    }
}

/// Whether a Kafka failure can clear up by itself (broker down, leader moving, timeouts) or
/// will fail again (message too large, not authorized, invalid topic or record).
pub(crate) fn is_retryable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidArgument
        )
    ) && !matches!(error, KafkaError::ClientConfig(..) | KafkaError::Nul(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert!(is_retryable(&produce(RDKafkaErrorCode::QueueFull)));
        assert!(is_retryable(&produce(RDKafkaErrorCode::MessageTimedOut)));
        assert!(is_retryable(&produce(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_retryable(&produce(
            RDKafkaErrorCode::NotLeaderForPartition
        )));
        assert!(!is_retryable(&produce(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(!is_retryable(&produce(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }

    #[test]
    fn delivery_completes_once_sealed_and_reported() {
        let (tx, mut rx) = oneshot::channel();
        let d = BatchDelivery::new(tx);
        d.add_pending();
        d.add_pending();
        d.delivered(10);
        assert!(rx.try_recv().unwrap().is_none());
        d.failed(
            5,
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert!(rx.try_recv().unwrap().is_none(), "not sealed yet");
        d.add_pending();
        d.remove_pending();
        d.seal();
        let outcome = rx.try_recv().unwrap().unwrap();
        assert_eq!(
            (
                outcome.delivered_messages,
                outcome.delivered_bytes,
                outcome.failed_messages,
                outcome.failed_bytes
            ),
            (1, 10, 1, 5)
        );
        assert!(outcome.first_error.is_some());
    }
}
