//! `[receivers.kafka]`: consumes OTLP from Kafka topics in a consumer group and ingests the
//! messages exactly like OTLP requests (through the core's [`Intake`]: scanned, spans routed by
//! trace ID to their owner core), so tail sampling sees Kafka data unchanged.
//!
//! # Requests of many messages
//!
//! What one poll round finds in the consumer's queue is ingested as few requests as possible
//! (`batching`): consecutive messages of one signal are checked one by one (a
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
//! durable export queues, see `offsets::CommitGate::IngestLog`); every
//! `commit_interval` librdkafka commits what was stored. With `durability = "none"`,
//! "accepted" means: in the receiving core's in-memory export queue or tail sampler, or in the
//! bounded mesh channel to the owner core. To give that data time to be exported before its
//! offset is committed, the offsets stored for commit (every `commit_interval`) are those
//! processed `offsets::commit_delay` earlier (commit interval + sampler
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

mod batching;
mod consumer;
mod offsets;

pub(crate) use offsets::commit_delay;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Instant;

use glommio::task::JoinHandle;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shardtel_config::{Config, Signal as ConfigSignal};
use shardtel_protocol::Signal;

use self::batching::GroupLimits;
use self::consumer::{
    client_config, leave_group, ConsumerCounters, ConsumerState, PollLoop, ReceiverContext,
    ERROR_LOG_INTERVAL,
};
use self::offsets::{commit_gate, Clock, OffsetTracker};
use super::Intake;
use crate::telemetry::{label_values, Column, Exposition, Families, MetricType};

/// Why this core's consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaReceiverError {
    /// librdkafka refused the consumer's properties.
    #[error("receivers.kafka: invalid consumer settings: {0}")]
    Settings(#[source] KafkaError),
    /// The subscription failed.
    #[error("receivers.kafka: failed to subscribe to {topics:?}: {source}")]
    Subscribe {
        /// The topics.
        topics: Vec<String>,
        /// What librdkafka reported.
        #[source]
        source: KafkaError,
    },
}

/// The running receiver of one core; [`KafkaReceiverHandle::finish`] ends it.
pub struct KafkaReceiverHandle {
    intake: Rc<Intake>,
    /// The poll loop; `None` once finished.
    task: RefCell<Option<JoinHandle<Option<BaseConsumer<ReceiverContext>>>>>,
    /// The consumer's latest counters (the poll loop publishes them twice a second).
    snapshot: Rc<RefCell<Option<KafkaConsumerSnapshot>>>,
}

/// Starts this core's consumer if `[receivers.kafka]` feeds a pipeline; `None` otherwise.
/// The consumer joins the group in the background: nothing here waits for the network.
pub fn start(
    intake: Rc<Intake>,
    config: &Config,
) -> Result<Option<KafkaReceiverHandle>, KafkaReceiverError> {
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
        core: intake.core(),
        state: Mutex::new(ConsumerState {
            offsets: OffsetTracker::new(gate, kafka.commit_interval),
            clock: Clock::at(Instant::now()),
            assigned: 0,
            lag: Vec::new(),
            counters: ConsumerCounters::default(),
            error_log: shardtel_sinks::Throttle::new(ERROR_LOG_INTERVAL),
        }),
    };
    // librdkafka's threads off this reactor's CPU (see `shardtel_sinks::threads`).
    let consumer: BaseConsumer<ReceiverContext> =
        shardtel_sinks::threads::unpinned(|| client_config(kafka).create_with_context(context))
            .map_err(KafkaReceiverError::Settings)?;
    let mut names: Vec<&str> = topics.keys().map(String::as_str).collect();
    names.sort_unstable();
    consumer
        .subscribe(&names)
        .map_err(|source| KafkaReceiverError::Subscribe {
            topics: names.iter().map(|t| t.to_string()).collect(),
            source,
        })?;
    log::info!(
        "kafka receiver (core {}): consuming {names:?} in group {:?}; offsets committed {gate}",
        intake.core(),
        kafka.group_id
    );
    let snapshot = Rc::new(RefCell::new(None));
    let poll_loop = PollLoop {
        intake: intake.clone(),
        consumer,
        topics,
        encoding: kafka.encoding,
        max_message_bytes: kafka.max_message_bytes,
        limits: GroupLimits {
            max_bytes: kafka.max_request_bytes,
            max_messages: kafka.max_request_messages,
        },
        commit_interval: kafka.commit_interval,
        snapshot: snapshot.clone(),
        last_malformed_log: Cell::new(None),
        suppressed_malformed: Cell::new(0),
    };
    let task = glommio::spawn_local(poll_loop.run()).detach();
    Ok(Some(KafkaReceiverHandle {
        intake,
        task: RefCell::new(Some(task)),
        snapshot,
    }))
}

impl KafkaReceiverHandle {
    /// The consumer's latest counters, for telemetry.
    pub fn snapshot(&self) -> Option<KafkaConsumerSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// Waits for the poll loop to stop (it stops when the core starts draining), then commits
    /// and leaves the group, off the reactor. Call after the exporters drained. With an ingest
    /// log, the offsets committed are exactly those whose frames were released (what the core
    /// still holds, e.g. traces a sampler keeps for the next start, is consumed again by the
    /// partition's next owner). Without one: every processed offset when the exporters drained;
    /// when they did not (`drained` false: the shutdown timeout passed), only the offsets the
    /// commit delay lets through, so what is still queued is consumed again by the next owner.
    pub async fn finish(&self, drained: bool) {
        let task = self.task.borrow_mut().take();
        let Some(task) = task else { return };
        let Some(consumer) = task.await.flatten() else {
            return;
        };
        let id = self.intake.core();
        let final_commit = {
            let mut s = consumer.context().state();
            let mut tpl = TopicPartitionList::new();
            if !drained {
                log::warn!(
                    "kafka receiver (core {id}): exporters did not drain in time; committing only offsets released {}",
                    s.offsets.gate()
                );
            }
            // Both forget every position: nothing newer may be stored by the revocation while
            // leaving the group.
            let offsets = if self.intake.durable() || !drained {
                let clock = Clock::read(Instant::now(), self.intake.ingest_log_position());
                s.offsets.release_final(clock)
            } else {
                s.offsets.take_all_processed()
            };
            for (key, next) in offsets {
                let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(next));
            }
            tpl
        };
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
        let mut snapshot = self.snapshot.borrow_mut();
        if let Some(snap) = snapshot.as_mut() {
            snap.commits = closed.commits;
            snap.commit_failures = closed.commit_failures;
        }
    }
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
    /// Errors the consumer reported (brokers unreachable, a missing topic, failed
    /// authentication, ...): each logged, at most one line per 10 s per core.
    pub poll_errors: u64,
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

impl Families for KafkaConsumerSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.is_empty() {
            return;
        }
        let rows: Vec<_> = cores
            .iter()
            .map(|(core, k)| (label_values(&[("core", core)]), *k))
            .collect();
        out.table(&CONSUMER, &rows);
        let lag = out.gauge(
            "shardtel_receiver_kafka_lag",
            "Messages between the committed offset and the end of each assigned partition.",
        );
        for (core, k) in cores {
            for (topic, partition, messages) in &k.lag {
                lag.sample(
                    &[("topic", topic), ("partition", partition), ("core", core)],
                    *messages,
                );
            }
        }
    }
}

/// The Kafka consumer series, one per core.
const CONSUMER: [Column<KafkaConsumerSnapshot>; 10] = [
    (
        "shardtel_receiver_kafka_messages_total",
        MetricType::Counter,
        "Kafka messages whose data was accepted.",
        |k| k.consumed_messages.into(),
    ),
    (
        "shardtel_receiver_kafka_bytes_total",
        MetricType::Counter,
        "Value bytes of accepted Kafka messages.",
        |k| k.consumed_bytes.into(),
    ),
    (
        "shardtel_receiver_kafka_requests_total",
        MetricType::Counter,
        "Requests ingested, each made of consecutive Kafka messages of one signal.",
        |k| k.requests.into(),
    ),
    (
        "shardtel_receiver_kafka_malformed_messages_total",
        MetricType::Counter,
        "Kafka messages skipped as malformed (offset logged).",
        |k| k.malformed_messages.into(),
    ),
    (
        "shardtel_receiver_kafka_commits_total",
        MetricType::Counter,
        "Offset commits confirmed by the group coordinator.",
        |k| k.commits.into(),
    ),
    (
        "shardtel_receiver_kafka_commit_failures_total",
        MetricType::Counter,
        "Offset commits that failed.",
        |k| k.commit_failures.into(),
    ),
    (
        "shardtel_receiver_kafka_poll_errors_total",
        MetricType::Counter,
        "Errors the Kafka consumer reported (brokers unreachable, missing topic, authentication).",
        |k| k.poll_errors.into(),
    ),
    (
        "shardtel_receiver_kafka_assignments_total",
        MetricType::Counter,
        "Rebalances that assigned partitions to this core.",
        |k| k.assigned_events.into(),
    ),
    (
        "shardtel_receiver_kafka_revocations_total",
        MetricType::Counter,
        "Rebalances that revoked partitions from this core.",
        |k| k.revoked_events.into(),
    ),
    (
        "shardtel_receiver_kafka_assigned_partitions",
        MetricType::Gauge,
        "Partitions assigned to this core's consumer.",
        |k| k.assigned_partitions.into(),
    ),
];
