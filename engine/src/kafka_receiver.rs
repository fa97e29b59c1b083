//! `[receivers.kafka]`: consumes OTLP from Kafka topics in a consumer group and ingests the
//! messages exactly like OTLP requests ([`Core::ingest`]: scanned, spans routed by trace ID to
//! their owner core), so tail sampling sees Kafka data unchanged.
//!
//! # Requests of many messages
//!
//! What one poll round finds in the consumer's queue is ingested as few requests as possible
//! (`crate::kafka_group`): consecutive messages of one signal are checked one by one (a
//! malformed one is skipped, counted and logged with topic, partition and offset), copied once
//! into one buffer (OTLP/JSON converted to protobuf first), and ingested as one request of at
//! most `max_request_bytes` / `max_request_messages`. With durability on that is one ingest-log
//! frame and one group-commit entry for the whole run of messages, so the per-core bound on
//! unreleased frames limits requests, not messages. A refused request is offered again whole;
//! its offsets (and those of malformed messages skipped while it was gathered) are processed
//! only once it was accepted.
//!
//! # Threads and cores
//!
//! Every core runs one consumer of the group, so the topics' partitions spread over the cores
//! of every shardtel process in the group (each partition is read by exactly one core of one
//! process). The consumer is a librdkafka `BaseConsumer`: librdkafka fetches on its own
//! threads; the core polls the consumer's queue without waiting (`poll(0)`) from a task of its
//! own, sleeping 1–10 ms when the queue is empty. Rebalance, commit and statistics callbacks
//! run inside that poll, on the core, and do no network round trip: this module only *stores*
//! offsets (a local operation) and librdkafka's background thread commits the stored offsets
//! every `commit_interval`, on revocation and on close.
//! Destroying the consumer (leaving the group) blocks, so it runs on the core's blocking
//! thread.
//!
//! # Offsets: at-least-once
//!
//! A message's offset counts as processed once `ingest` accepted the request holding its data,
//! or once it was skipped as malformed (counted, logged with its offset, never retried, so it
//! cannot block its partition) and the request gathered with it was accepted. With
//! `engine.durability = "ack_after_sync"` (the default), a message's offset is stored for
//! commit once the ingest-log frame of its request is released (every span decided and handed to
//! durable export queues, see [`crate::kafka_offsets::CommitGate::IngestLog`]); every
//! `commit_interval` librdkafka commits what was stored. With `durability = "none"`,
//! "accepted" means: in the receiving core's in-memory export queue or tail sampler, or in the
//! bounded mesh channel to the owner core. To give that data time to be exported before its
//! offset is committed, the offsets stored for commit (every `commit_interval`) are those
//! processed [`crate::kafka_offsets::commit_delay`] earlier (commit interval + sampler
//! `decision_wait` + batch timeout): a `kill -9` then loses nothing that the pipeline exported
//! within that delay, and everything after the last commit is consumed again by the partition's
//! next owner (duplicates, never gaps). A refused request (queues full, shutting down) is
//! retried with backoff and its offsets are not advanced.
//!
//! On a rebalance, partitions being revoked are stored at that same safe position, and
//! librdkafka commits them before it lets go of them; their next owner consumes again what this
//! process may still hold unexported; positions of a revoked partition reported later (by a
//! request gathered before the revocation) are ignored until it is assigned again. On shutdown, the consumer stops before the exporters
//! drain and commits every processed offset after they drained.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use glommio::task::JoinHandle;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use shardtel_config::{Config, KafkaEncoding, KafkaReceiverConfig, Signal as ConfigSignal};
use shardtel_protocol::scan::TracesIndex;
use shardtel_protocol::Signal;

use crate::core::Core;
use crate::kafka_group::{check, Built, GroupLimits, GroupOffsets, RequestGroup};
use crate::kafka_offsets::{commit_gate, Clock, OffsetTracker};
use crate::telemetry::{KafkaConsumerSnapshot, Transport};

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

/// State shared by the poll loop and the consumer's callbacks. Both run on the core's thread
/// (callbacks inside `poll`), except while the consumer is destroyed on the blocking thread;
/// the lock is never contended.
struct ConsumerState {
    /// Processed offsets, and which are old enough to commit.
    offsets: OffsetTracker,
    /// The clock of the last commit tick (a revocation, inside `poll`, uses it).
    clock: Clock,
    assigned: usize,
    lag: Vec<(String, i32, i64)>,
    counters: ConsumerCounters,
}

#[derive(Clone, Copy, Default)]
struct ConsumerCounters {
    consumed_messages: u64,
    consumed_bytes: u64,
    /// Requests ingested (each made of one or more messages).
    requests: u64,
    malformed_messages: u64,
    commits: u64,
    commit_failures: u64,
    assigned_events: u64,
    revoked_events: u64,
    poll_errors: u64,
}

/// librdkafka callbacks: rebalances, commit results, statistics and log lines.
struct ReceiverContext {
    core: usize,
    state: Mutex<ConsumerState>,
}

impl ReceiverContext {
    fn state(&self) -> MutexGuard<'_, ConsumerState> {
        // A poisoned lock only means a panic elsewhere; the offsets are still right.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        log::debug!(target: "librdkafka", "kafka receiver (core {}): {error}: {reason}", self.core);
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

/// The running receiver of one core; [`KafkaReceiverHandle::finish`] ends it.
pub struct KafkaReceiverHandle {
    task: JoinHandle<Option<BaseConsumer<ReceiverContext>>>,
}

/// Starts this core's consumer if `[receivers.kafka]` feeds a pipeline; `None` otherwise.
/// The consumer joins the group in the background: nothing here waits for the network.
pub fn start(core: Rc<Core>, config: &Config) -> Result<Option<KafkaReceiverHandle>, String> {
    let Some(kafka) = &config.receivers.kafka else {
        return Ok(None);
    };
    let mut topics: HashMap<String, Signal> = HashMap::new();
    for (config_signal, signal) in [
        (ConfigSignal::Traces, Signal::Traces),
        (ConfigSignal::Metrics, Signal::Metrics),
        (ConfigSignal::Logs, Signal::Logs),
    ] {
        let fed = config
            .pipelines
            .get(config_signal)
            .is_some_and(|p| p.receivers.iter().any(|r| r == "kafka"));
        if fed {
            for topic in kafka.topics(config_signal) {
                topics.insert(topic.clone(), signal);
            }
        }
    }
    if topics.is_empty() {
        log::warn!("receivers.kafka feeds no pipeline (or has no topics); not consuming");
        return Ok(None);
    }
    let gate = commit_gate(config, kafka);
    let context = ReceiverContext {
        core: core.id,
        state: Mutex::new(ConsumerState {
            offsets: OffsetTracker::new(gate, kafka.commit_interval),
            clock: Clock::at(Instant::now()),
            assigned: 0,
            lag: Vec::new(),
            counters: ConsumerCounters::default(),
        }),
    };
    // librdkafka's threads off this reactor's CPU (see `shardtel_sinks::threads`).
    let consumer: BaseConsumer<ReceiverContext> =
        shardtel_sinks::threads::unpinned(|| client_config(kafka).create_with_context(context))
            .map_err(|e| format!("receivers.kafka: invalid consumer settings: {e}"))?;
    let mut names: Vec<&str> = topics.keys().map(String::as_str).collect();
    names.sort_unstable();
    consumer
        .subscribe(&names)
        .map_err(|e| format!("receivers.kafka: failed to subscribe to {names:?}: {e}"))?;
    log::info!(
        "kafka receiver (core {}): consuming {names:?} in group {:?}; offsets committed {gate}",
        core.id,
        kafka.group_id
    );
    let receiver = Receiver {
        core,
        consumer,
        topics,
        encoding: kafka.encoding,
        limits: GroupLimits {
            max_bytes: kafka.max_request_bytes,
            max_messages: kafka.max_request_messages,
        },
        commit_interval: kafka.commit_interval,
        last_malformed_log: Cell::new(None),
        suppressed_malformed: Cell::new(0),
    };
    let task = glommio::spawn_local(receiver.run()).detach();
    Ok(Some(KafkaReceiverHandle { task }))
}

/// librdkafka consumer properties for `c`.
fn client_config(c: &KafkaReceiverConfig) -> ClientConfig {
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

struct Receiver {
    core: Rc<Core>,
    consumer: BaseConsumer<ReceiverContext>,
    topics: HashMap<String, Signal>,
    encoding: KafkaEncoding,
    limits: GroupLimits,
    commit_interval: Duration,
    last_malformed_log: Cell<Option<Instant>>,
    suppressed_malformed: Cell<u64>,
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

impl Receiver {
    fn state(&self) -> MutexGuard<'_, ConsumerState> {
        self.consumer.context().state()
    }

    /// Polls until the core drains; returns the consumer for the final commit.
    async fn run(self) -> Option<BaseConsumer<ReceiverContext>> {
        let mut idle = Duration::ZERO;
        let mut next_commit = Instant::now() + self.commit_interval;
        let mut next_publish = Instant::now();
        let mut index = TracesIndex::default();
        let mut group = RequestGroup::default();
        // The message that did not fit the last request: the first of the next.
        let mut carry: Option<Polled<'_>> = None;
        while !self.core.draining() {
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
                        self.state().counters.poll_errors += 1;
                        log::debug!("kafka receiver (core {}): {e}", self.core.id);
                        return None;
                    }
                    Some(Ok(m)) => m,
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
            match check(signal, self.encoding, value, index) {
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
            let attempt = match self.core.admit_signal(built.signal) {
                Ok(guard) => match guard.try_add(built.body.len()) {
                    Ok(()) => {
                        self.core
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
                    if self.core.draining() {
                        return Outcome::Stopped;
                    }
                    log::debug!(
                        "kafka receiver (core {}): a request of {} messages refused, retrying in {wait:?}: {e}",
                        self.core.id,
                        built.messages
                    );
                    futures_lite::future::or(
                        glommio::timer::sleep(wait),
                        self.core.wait_draining(),
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
                            self.core.id,
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
                self.core.id,
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

    /// Stores for commit the offsets the gate lets through (see [`crate::kafka_offsets`]).
    fn commit_tick(&self) {
        let mut due = Vec::new();
        let clock = self.core.offset_clock();
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
                    self.core.id
                );
            }
        }
    }

    fn publish(&self) {
        let s = self.state();
        let c = s.counters;
        *self.core.kafka_snapshot.borrow_mut() = Some(KafkaConsumerSnapshot {
            consumed_messages: c.consumed_messages,
            consumed_bytes: c.consumed_bytes,
            requests: c.requests,
            malformed_messages: c.malformed_messages,
            commits: c.commits,
            commit_failures: c.commit_failures,
            assigned_events: c.assigned_events,
            revoked_events: c.revoked_events,
            assigned_partitions: s.assigned as u64,
            lag: s.lag.clone(),
        });
    }
}

impl KafkaReceiverHandle {
    /// Waits for the poll loop to stop (it stops when the core starts draining), then commits
    /// and leaves the group, off the reactor. Call after the exporters drained. With an ingest
    /// log, the offsets committed are exactly those whose frames were released (what the core
    /// still holds, e.g. traces a sampler keeps for the next start, is consumed again by the
    /// partition's next owner). Without one: every processed offset when the exporters drained;
    /// when they did not (`drained` false: the shutdown timeout passed), only the offsets the
    /// commit delay lets through, so what is still queued is consumed again by the next owner.
    pub async fn finish(self, core: &Core, drained: bool) {
        let Some(consumer) = self.task.await.flatten() else {
            return;
        };
        let final_commit = {
            let mut s = consumer.context().state();
            let mut tpl = TopicPartitionList::new();
            if !drained {
                log::warn!(
                    "kafka receiver (core {}): exporters did not drain in time; committing only offsets released {}",
                    core.id,
                    s.offsets.gate()
                );
            }
            // Both forget every position: nothing newer may be stored by the revocation while
            // leaving the group.
            let offsets = if core.durable() || !drained {
                s.offsets.release_final(core.offset_clock())
            } else {
                s.offsets.take_all_processed()
            };
            for (key, next) in offsets {
                let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(next));
            }
            tpl
        };
        let id = core.id;
        let closed = glommio::executor()
            .spawn_blocking(move || {
                if final_commit.count() > 0 {
                    // Stored too, so the commit on close does not go back to older offsets.
                    if let Err(e) = consumer.store_offsets(&final_commit) {
                        log::warn!(
                            "kafka receiver (core {id}): failed to store final offsets: {e}"
                        );
                    }
                    if let Err(e) = consumer.commit(&final_commit, CommitMode::Sync) {
                        log::warn!("kafka receiver (core {id}): final commit failed: {e}");
                    }
                }
                let counters = consumer.context().state().counters;
                leave_group(consumer, id);
                counters
            })
            .await;
        let mut snapshot = core.kafka_snapshot.borrow_mut();
        if let Some(snap) = snapshot.as_mut() {
            snap.commits = closed.commits;
            snap.commit_failures = closed.commit_failures;
        }
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
fn leave_group(consumer: BaseConsumer<ReceiverContext>, core: usize) {
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
