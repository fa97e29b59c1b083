//! One core's Kafka consumer: the librdkafka client and its callbacks (rebalances, commits,
//! statistics, log lines), the poll loop that gathers messages into requests and ingests them
//! through the core's intake, and leaving the group.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use shardtel_config::{KafkaEncoding, KafkaReceiverConfig};
use shardtel_protocol::scan::TracesIndex;
use shardtel_protocol::Signal;

use super::batching::{
    check, check_converted, convert, Built, Checked, GroupLimits, GroupOffsets, RequestGroup,
};
use super::offsets::{Clock, OffsetTracker};
use super::KafkaConsumerSnapshot;
use crate::receivers::decode;
use crate::receivers::{Intake, Transport};

/// Longest sleep between two polls of an empty queue.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(10);
/// First and longest wait before offering a refused message again.
const RETRY_INITIAL: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often librdkafka reports statistics (consumer lag).
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);
/// The poll loop yields to the core's other tasks at least this often (messages).
const YIELD_EVERY_MESSAGES: usize = 256;
/// Skipped malformed messages are logged at most this often per core.
const MALFORMED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Consumer errors are logged at most this often per core.
pub(super) const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by the poll loop and the consumer's callbacks. Both run on the core's thread
/// (callbacks inside `poll`), except while the consumer is destroyed on the blocking thread;
/// the lock is never contended.
pub(super) struct ConsumerState {
    /// Processed offsets, and which are old enough to commit.
    pub(super) offsets: OffsetTracker,
    /// The clock of the last commit tick (a revocation, inside `poll`, uses it).
    pub(super) clock: Clock,
    pub(super) assigned: usize,
    pub(super) lag: Vec<(String, i32, i64)>,
    pub(super) counters: ConsumerCounters,
    /// Consumer errors: one warning per [`ERROR_LOG_INTERVAL`].
    pub(super) error_log: shardtel_sinks::Throttle,
}

#[derive(Clone, Copy, Default)]
pub(super) struct ConsumerCounters {
    pub(super) consumed_messages: u64,
    pub(super) consumed_bytes: u64,
    /// Requests ingested (each made of one or more messages).
    pub(super) requests: u64,
    pub(super) malformed_messages: u64,
    pub(super) commits: u64,
    pub(super) commit_failures: u64,
    pub(super) assigned_events: u64,
    pub(super) revoked_events: u64,
    pub(super) poll_errors: u64,
}

/// librdkafka callbacks: rebalances, commit results, statistics and log lines.
pub(super) struct ReceiverContext {
    pub(super) core: usize,
    pub(super) state: Mutex<ConsumerState>,
}

impl ReceiverContext {
    pub(super) fn state(&self) -> MutexGuard<'_, ConsumerState> {
        // A poisoned lock only means a panic elsewhere; the offsets are still right.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an error the consumer reported and warns about it, at most once per
    /// [`ERROR_LOG_INTERVAL`] per core (with the number held back): a missing topic, failed
    /// authentication or unreachable brokers leave the core idle, and that must show.
    /// librdkafka keeps retrying by itself.
    pub(super) fn consumer_error(&self, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut s = self.state();
        s.counters.poll_errors += 1;
        let due = s.error_log.due(now);
        drop(s);
        if let Some(more) = due {
            log::warn!("kafka receiver (core {}): {error}{more}", self.core);
        }
    }
}

impl ClientContext for ReceiverContext {
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
        log::log!(target: "librdkafka", level, "kafka receiver (core {}): {fac}: {message}", self.core);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.consumer_error(&format_args!("{error}: {reason}"));
    }

    fn stats(&self, statistics: Statistics) {
        let mut lag = Vec::new();
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.desired && p.consumer_lag >= 0 {
                    lag.push((topic.clone(), partition, p.consumer_lag));
                }
            }
        }
        lag.sort();
        self.state().lag = lag;
    }
}

impl ConsumerContext for ReceiverContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut s = self.state();
                s.counters.assigned_events += 1;
                s.assigned += tpl.count();
                for e in tpl.elements() {
                    s.offsets.assign(&(e.topic().to_string(), e.partition()));
                }
                log::info!(
                    "kafka receiver (core {}): assigned {}",
                    self.core,
                    describe(tpl)
                );
            }
            Rebalance::Revoke(tpl) => {
                // Store the revoked partitions at their safe position (data believed
                // exported); librdkafka commits them before it lets go of them, so their next
                // owner consumes again what this process may still hold.
                let mut s = self.state();
                s.counters.revoked_events += 1;
                let mut commit = TopicPartitionList::new();
                let clock = Clock {
                    now: Instant::now(),
                    ..s.clock
                };
                for e in tpl.elements() {
                    let key = (e.topic().to_string(), e.partition());
                    if let Some(next) = s.offsets.revoke(&key, clock) {
                        let _ = commit.add_partition_offset(
                            e.topic(),
                            e.partition(),
                            Offset::Offset(next),
                        );
                    }
                }
                s.assigned = s.assigned.saturating_sub(tpl.count());
                drop(s);
                log::info!(
                    "kafka receiver (core {}): revoked {}",
                    self.core,
                    describe(tpl)
                );
                if commit.count() > 0 {
                    if let Err(e) = consumer.store_offsets(&commit) {
                        self.state().counters.commit_failures += 1;
                        log::warn!(
                            "kafka receiver (core {}): failed to store the offsets of revoked partitions: {e}",
                            self.core
                        );
                    }
                }
            }
            Rebalance::Error(e) => {
                log::warn!("kafka receiver (core {}): rebalance failed: {e}", self.core)
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let mut s = self.state();
        match result {
            Ok(()) => s.counters.commits += 1,
            // Nothing to commit is not a failure.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                s.counters.commit_failures += 1;
                drop(s);
                log::warn!(
                    "kafka receiver (core {}): commit of {} failed: {e}",
                    self.core,
                    describe(offsets)
                );
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    if parts.is_empty() {
        "no partitions".to_string()
    } else {
        parts.join(", ")
    }
}

/// librdkafka consumer properties for `c`.
pub(super) fn client_config(c: &KafkaReceiverConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", c.brokers.join(","))
        .set("group.id", &c.group_id)
        .set("client.id", &c.client_id)
        .set("auto.offset.reset", c.initial_offset.name())
        .set(
            "session.timeout.ms",
            c.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            c.heartbeat_interval.as_millis().to_string(),
        )
        .set("partition.assignment.strategy", c.rebalance_strategy.name())
        // librdkafka commits what this module stores, and only that: offsets of data
        // that was accepted (see the module docs).
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            c.commit_interval.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        );
    for (key, value) in c.auth.client_properties() {
        config.set(key, value);
    }
    for (key, value) in &c.librdkafka {
        config.set(key, value);
    }
    config
}

/// One core's poll loop: polls the consumer's queue, gathers consecutive messages of one signal
/// into requests, ingests them through the core's intake, and stores the offsets the gate lets
/// through.
pub(super) struct PollLoop {
    pub(super) intake: Rc<Intake>,
    pub(super) consumer: BaseConsumer<ReceiverContext>,
    pub(super) topics: HashMap<String, Signal>,
    pub(super) encoding: KafkaEncoding,
    pub(super) limits: GroupLimits,
    /// `max_message_bytes`.
    pub(super) max_message_bytes: usize,
    pub(super) commit_interval: Duration,
    /// Where the latest counters are published for the core's snapshot.
    pub(super) snapshot: Rc<RefCell<Option<KafkaConsumerSnapshot>>>,
    pub(super) last_malformed_log: Cell<Option<Instant>>,
    pub(super) suppressed_malformed: Cell<u64>,
}

/// What became of one request built from messages.
enum Outcome {
    /// Accepted or skipped: its offsets are processed.
    Done,
    /// Shutting down before it was accepted: its offsets stay.
    Stopped,
}

/// A message owned by librdkafka (its value is copied once, when its request is built).
type Polled<'a> = BorrowedMessage<'a>;

impl PollLoop {
    fn state(&self) -> MutexGuard<'_, ConsumerState> {
        self.consumer.context().state()
    }

    /// Polls until the core drains; returns the consumer for the final commit.
    pub(super) async fn run(self) -> Option<BaseConsumer<ReceiverContext>> {
        let mut idle = Duration::ZERO;
        let mut next_commit = Instant::now() + self.commit_interval;
        let mut next_publish = Instant::now();
        let mut index = TracesIndex::default();
        let mut group = RequestGroup::default();
        // The message that did not fit the last request: the first of the next.
        let mut carry: Option<Polled<'_>> = None;
        while !self.intake.draining() {
            let now = Instant::now();
            if now >= next_commit {
                self.commit_tick();
                next_commit = now + self.commit_interval;
            }
            if now >= next_publish {
                self.publish();
                next_publish = now + Duration::from_millis(500);
            }
            carry = self.poll_round(carry, &mut group, &mut index).await;
            let (built, offsets) = group.build(|m| m.payload().unwrap_or_default());
            let Some(built) = built else {
                if offsets.is_empty() && carry.is_none() {
                    idle = (idle * 2).clamp(Duration::from_millis(1), MAX_IDLE_SLEEP);
                    glommio::timer::sleep(idle).await;
                } else {
                    self.processed(&offsets);
                }
                continue;
            };
            idle = Duration::ZERO;
            if let Outcome::Stopped = self.ingest(built, &offsets).await {
                break;
            }
            glommio::yield_if_needed().await;
        }
        drop(carry);
        self.publish();
        Some(self.consumer)
    }

    /// Gathers into `group` what the consumer's queue holds now (starting with `carry`): the
    /// consecutive messages of one signal within the request limits, each checked (malformed
    /// ones skipped). Returns the message that starts the next request, if one did not fit.
    async fn poll_round<'a>(
        &'a self,
        mut carry: Option<Polled<'a>>,
        group: &mut RequestGroup<Polled<'a>>,
        index: &mut TracesIndex,
    ) -> Option<Polled<'a>> {
        let mut polled = 0usize;
        loop {
            let message = match carry.take() {
                Some(m) => m,
                None => match self.consumer.poll(Duration::ZERO) {
                    None => return None,
                    Some(Err(e)) => {
                        self.consumer.context().consumer_error(&e);
                        return None;
                    }
                    Some(Ok(m)) => {
                        self.note_start(&m);
                        m
                    }
                },
            };
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            let Some(&signal) = self.topics.get(topic) else {
                group.consumed(topic, partition, offset);
                let reason = format!("topic {topic:?} is not subscribed");
                self.skip_malformed(topic, partition, offset, &reason);
                continue;
            };
            // Another signal, or no room left for even an empty message: the next request's.
            if !group.admits(signal, 0, self.limits) {
                return Some(message);
            }
            let value = message.payload().unwrap_or_default();
            match self.check(signal, value, index).await {
                Err(reason) => {
                    group.consumed(topic, partition, offset);
                    self.skip_malformed(topic, partition, offset, &reason);
                }
                Ok(checked) => {
                    let (len, value_len) = (checked.len(value), value.len());
                    if !group.admits(signal, len, self.limits) {
                        return Some(message);
                    }
                    group.consumed(topic, partition, offset);
                    group.push(signal, message, (len, value_len), checked);
                }
            }
            polled += 1;
            if polled % YIELD_EVERY_MESSAGES == 0 {
                glommio::yield_if_needed().await;
            }
        }
    }

    /// Checks a message value (see [`check`]); a large OTLP/JSON value is converted off the
    /// reactor (the core's decoder's turns).
    async fn check(
        &self,
        signal: Signal,
        value: &[u8],
        index: &mut TracesIndex,
    ) -> Result<Checked, String> {
        let max = self.max_message_bytes;
        if self.encoding != KafkaEncoding::OtlpJson
            || value.len() < decode::OFFLOAD_BYTES
            || value.len() > max
        {
            return check(signal, self.encoding, value, index, max);
        }
        let owned = Bytes::copy_from_slice(value);
        let converted = self
            .intake
            .decoder()
            .offload(move || convert(signal, &owned, max))
            .await?;
        check_converted(signal, value, Some(converted), index)
    }

    /// Marks the offsets of a request (and of the malformed messages skipped with it)
    /// processed.
    fn processed(&self, offsets: &GroupOffsets) {
        mark_processed(&mut self.state(), offsets);
    }

    /// Ingests one request built from messages, waiting out refusals; marks its offsets
    /// processed unless stopped. A refused request is offered again whole.
    async fn ingest(&self, built: Built, offsets: &GroupOffsets) -> Outcome {
        let mut wait = RETRY_INITIAL;
        loop {
            let attempt = match self.intake.admit(built.signal) {
                Ok(guard) => match guard.try_add(built.body.len()) {
                    Ok(()) => {
                        self.intake
                            .ingest(built.signal, Transport::Kafka, built.body.clone())
                            .await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match attempt {
                Ok(_) => {
                    let mut s = self.state();
                    s.counters.consumed_messages += built.messages;
                    s.counters.consumed_bytes += built.value_bytes;
                    s.counters.requests += 1;
                    mark_processed(&mut s, offsets);
                    return Outcome::Done;
                }
                Err(e) if e.is_retryable() => {
                    if self.intake.draining() {
                        return Outcome::Stopped;
                    }
                    log::debug!(
                        "kafka receiver (core {}): a request of {} messages refused, retrying in {wait:?}: {e}",
                        self.intake.core(),
                        built.messages
                    );
                    futures_lite::future::or(
                        glommio::timer::sleep(wait),
                        self.intake.wait_draining(),
                    )
                    .await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    // Every message was checked, so this is not bad input but a pipeline that
                    // cannot take the signal: retrying cannot help either.
                    self.state().counters.malformed_messages += built.messages;
                    for ((topic, partition), next) in offsets.iter() {
                        log::warn!(
                            "kafka receiver (core {}): skipped {topic}[{partition}] up to offset {}: {e}",
                            self.intake.core(),
                            next - 1
                        );
                    }
                    self.processed(offsets);
                    return Outcome::Done;
                }
            }
        }
    }

    /// Counts and logs a skipped message (its offset is processed with the request being
    /// gathered, see [`RequestGroup::consumed`]).
    fn skip_malformed(&self, topic: &str, partition: i32, offset: i64, reason: &str) {
        self.state().counters.malformed_messages += 1;
        let now = Instant::now();
        let due = self
            .last_malformed_log
            .get()
            .is_none_or(|t| now.duration_since(t) >= MALFORMED_LOG_INTERVAL);
        if due {
            let suppressed = self.suppressed_malformed.replace(0);
            log::warn!(
                "kafka receiver (core {}): skipped malformed message {topic}[{partition}] offset {offset}: {reason}{}",
                self.intake.core(),
                if suppressed > 0 {
                    format!(" ({suppressed} more skipped since the last report)")
                } else {
                    String::new()
                }
            );
            self.last_malformed_log.set(Some(now));
        } else {
            self.suppressed_malformed
                .set(self.suppressed_malformed.get() + 1);
        }
    }

    /// The first message read from a partition since it was assigned: stores its offset, the
    /// position this consumer starts from, and commits it at once (asynchronously; librdkafka's
    /// auto-commit commits the stored offset again if that fails), so that a next owner starts
    /// there rather than at `initial_offset` even if this process dies before anything it read
    /// is safe (see [`OffsetTracker::start`]).
    fn note_start(&self, message: &Polled<'_>) {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if !self.state().offsets.start(topic, partition, offset) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(offset));
        let result = self
            .consumer
            .store_offsets(&tpl)
            .and_then(|()| self.consumer.commit(&tpl, CommitMode::Async));
        if let Err(e) = result {
            self.state().counters.commit_failures += 1;
            log::warn!(
                "kafka receiver (core {}): failed to commit the starting offset {offset} of {topic}[{partition}]: {e}",
                self.intake.core()
            );
        }
    }

    /// Stores for commit the offsets the gate lets through (see [`super::offsets`]).
    fn commit_tick(&self) {
        let mut due = Vec::new();
        let clock = Clock::read(Instant::now(), self.intake.ingest_log_position());
        let mut s = self.state();
        s.clock = clock;
        s.offsets.tick(clock, &mut due);
        drop(s);
        let mut tpl = TopicPartitionList::new();
        for (key, next) in due {
            let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(next));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                self.state().counters.commit_failures += 1;
                log::warn!(
                    "kafka receiver (core {}): failed to store offsets: {e}",
                    self.intake.core()
                );
            }
        }
    }

    fn publish(&self) {
        let s = self.state();
        let c = s.counters;
        *self.snapshot.borrow_mut() = Some(KafkaConsumerSnapshot {
            consumed_messages: c.consumed_messages,
            consumed_bytes: c.consumed_bytes,
            requests: c.requests,
            malformed_messages: c.malformed_messages,
            commits: c.commits,
            commit_failures: c.commit_failures,
            poll_errors: c.poll_errors,
            assigned_events: c.assigned_events,
            revoked_events: c.revoked_events,
            assigned_partitions: s.assigned as u64,
            lag: s.lag.clone(),
        });
    }
}

/// Marks the offsets of a request (and of the malformed messages skipped with it) processed.
fn mark_processed(s: &mut ConsumerState, offsets: &GroupOffsets) {
    for (key, next) in offsets.iter() {
        s.offsets.processed(key, *next);
    }
}

/// Longest wait for a consumer to leave its group at shutdown.
const LEAVE_GROUP_MAX: Duration = Duration::from_secs(5);

/// Drops the consumer (which leaves the group) on a thread of its own, waiting at most
/// [`LEAVE_GROUP_MAX`]: librdkafka's destroy can wait forever for its broker threads (seen on
/// SIGTERM right after consuming a backlog, with fetched messages never polled), and shutdown
/// must not hang on it. The final commit is already done; a consumer that did not leave in time
/// is dropped from the group after `session_timeout`, and the process exits regardless.
pub(super) fn leave_group(consumer: BaseConsumer<ReceiverContext>, core: usize) {
    let (done, left) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("kafka-leave-{core}"))
        .spawn(move || {
            drop(consumer);
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        log::warn!("kafka receiver (core {core}): no thread to leave the group on: {e}");
        return;
    }
    if left.recv_timeout(LEAVE_GROUP_MAX).is_err() {
        log::warn!(
            "kafka receiver (core {core}): the consumer did not leave the group within {LEAVE_GROUP_MAX:?} (offsets are committed); exiting without waiting for it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_config::{KafkaAuth, KafkaTlsConfig, SaslConfig, SaslMechanism};

    #[test]
    fn consumer_properties_map_the_settings() {
        let mut c = KafkaReceiverConfig::new(vec!["k1:9092".into(), "k2:9092".into()]);
        c.group_id = "processors".into();
        c.auth = KafkaAuth {
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha256,
                username: "u".into(),
                password: "p".into(),
            }),
            tls: Some(KafkaTlsConfig {
                insecure_skip_verify: true,
                ..Default::default()
            }),
        };
        c.librdkafka
            .insert("fetch.max.bytes".into(), "1048576".into());
        let config = client_config(&c);
        for (key, value) in [
            ("bootstrap.servers", "k1:9092,k2:9092"),
            ("group.id", "processors"),
            ("auto.offset.reset", "latest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "3000"),
            // Only offsets this module stores are committed.
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
            ("auto.commit.interval.ms", "1000"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("enable.ssl.certificate.verification", "false"),
            ("fetch.max.bytes", "1048576"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
        // librdkafka accepts every name and value (no broker is contacted).
        let consumer: KafkaResult<BaseConsumer> = config.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
