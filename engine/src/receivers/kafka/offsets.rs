//! Which Kafka offsets may be committed: a message's offset is committed only once its data was
//! handed on ([`CommitGate`]).
//!
//! With `durability = "ack_after_sync"` ([`CommitGate::IngestLog`]), a message is in the
//! receiving core's ingest log before it is routed, and its offset may be committed once that
//! log frame is released (every span decided, kept data in durable export queues). With
//! `durability = "none"` ([`CommitGate::Delay`]), accepted data lives in memory: in the tail
//! sampler for up to `decision_wait`, then in a batch for up to the exporter's
//! `batch.timeout`, then in the export request; only positions at least [`commit_delay`] old
//! are released, so a `kill -9` loses nothing that the pipeline exported within that delay.
//! Either way [`OffsetTracker`] keeps snapshots of the processed positions (with the time and
//! the ingest log's next LSN when each was taken) and releases the newest one the gate lets
//! through; the partition's next owner consumes again everything after the last commit
//! (duplicates, never gaps). The same safe position is what a revoked partition is committed
//! at.
//!
//! A partition's first commit thus comes only once its first frames are released (with a tail
//! sampler, `decision_wait` after it was first read). Until then the group may hold no offset
//! for it, and a next owner (after a `kill -9`, or a processor joining the group) would start
//! where `initial_offset` says: with `"latest"`, at the log's end, skipping everything read
//! before. So the position a consumer starts a partition from (the offset of the first message
//! it reads after the assignment) is released at once ([`OffsetTracker::start`]): committing
//! it gives up nothing, as nothing before it is this consumer's to process.
//!
//! Pure state: no clock of its own, no librdkafka; the consumer feeds it and stores what it
//! releases.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use shardtel_config::{Config, KafkaReceiverConfig, ProcessorConfig, Signal};

/// (topic, partition).
pub(crate) type PartitionKey = (String, i32);

/// At most this many snapshots are kept: with a long delay they are spaced further apart than
/// the commit interval (commits then lag a little more than the delay).
const MAX_SNAPSHOTS: u32 = 256;

/// When processed offsets may be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitGate {
    /// `durability = "none"`: this long after they were processed (see [`commit_delay`]).
    Delay(Duration),
    /// `durability = "ack_after_sync"`: once the ingest-log frames of the messages are
    /// released, i.e. every span of them was decided and handed to durable export queues (or
    /// dropped by a decision), and every metric point or log record is in a durable export
    /// queue. Exact, not a guess: a processor that dies for good leaves nothing uncommitted
    /// that it had not handed on, so the partition's next owner consumes it again.
    IngestLog,
}

impl std::fmt::Display for CommitGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitGate::Delay(d) => write!(f, "{d:?} after processing"),
            CommitGate::IngestLog => {
                f.write_str("once their data is decided and in durable export queues")
            }
        }
    }
}

/// Where the clocks stand at a tick: the time, and with an ingest log, its next LSN (every
/// message processed so far has a smaller one) and its first unreleased LSN.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) now: Instant,
    pub(crate) next_lsn: u64,
    pub(crate) released_below: u64,
}

impl Clock {
    /// A clock without an ingest log.
    pub(crate) fn at(now: Instant) -> Clock {
        Clock {
            now,
            next_lsn: 0,
            released_below: 0,
        }
    }

    /// The clock at `now`, with the ingest log's (next LSN, first unreleased LSN) when there
    /// is one.
    pub(crate) fn read(now: Instant, ingest_log: Option<(u64, u64)>) -> Clock {
        match ingest_log {
            Some((next_lsn, released_below)) => Clock {
                now,
                next_lsn,
                released_below,
            },
            None => Clock::at(now),
        }
    }
}

/// The gate for this configuration: [`CommitGate::IngestLog`] with durability on, else the
/// [`commit_delay`].
pub(crate) fn commit_gate(config: &Config, kafka: &KafkaReceiverConfig) -> CommitGate {
    if config.engine.durability == shardtel_config::Durability::AckAfterSync {
        CommitGate::IngestLog
    } else {
        CommitGate::Delay(commit_delay(config, kafka))
    }
}

/// How long data consumed from Kafka may take to leave the process when nothing fails: the
/// commit interval, plus the longest `decision_wait` of a tail sampler in a traces pipeline fed
/// by the receiver, plus the longest batch timeout of the exporters of those pipelines.
pub(crate) fn commit_delay(config: &Config, kafka: &KafkaReceiverConfig) -> Duration {
    let mut pipeline = Duration::ZERO;
    for signal in [Signal::Traces, Signal::Metrics, Signal::Logs] {
        let Some(p) = config.pipelines.get(signal) else {
            continue;
        };
        if !p.receivers.iter().any(|r| r == "kafka") {
            continue;
        }
        let mut delay = Duration::ZERO;
        for name in &p.processors {
            if let Some(ProcessorConfig::TailSampling(sampling)) = config.processors.get(name) {
                delay = delay.max(sampling.decision_wait);
            }
        }
        let batch = p
            .exporters
            .iter()
            .filter_map(|e| config.exporters.get(e)?.kind.batch().map(|b| b.timeout))
            .max()
            .unwrap_or_default();
        pipeline = pipeline.max(delay + batch);
    }
    kafka.commit_interval + pipeline
}

/// Processed positions per partition, and which of them are old enough to commit.
#[derive(Debug)]
pub(crate) struct OffsetTracker {
    gate: CommitGate,
    spacing: Duration,
    /// Next offset to consume per assigned partition: everything before it was accepted or
    /// skipped.
    processed: HashMap<PartitionKey, i64>,
    /// Snapshots of `processed` with the clock's time and next LSN then, oldest first.
    history: VecDeque<(Instant, u64, HashMap<PartitionKey, i64>)>,
    /// Offsets released for commit last, per partition.
    released: HashMap<PartitionKey, i64>,
    /// Partitions revoked and not assigned again: positions reported for them are ignored (a
    /// request built before the revocation may still carry their messages).
    revoked: HashSet<PartitionKey>,
    /// Partitions whose starting position was released since they were assigned (few per
    /// core: searched linearly, so a message costs no allocation).
    started: Vec<PartitionKey>,
}

impl OffsetTracker {
    /// Releases offsets when `gate` allows; snapshots are taken at least `interval` apart.
    pub(crate) fn new(gate: CommitGate, interval: Duration) -> Self {
        let spacing = match gate {
            CommitGate::Delay(delay) => interval.max(delay / MAX_SNAPSHOTS),
            CommitGate::IngestLog => interval,
        };
        OffsetTracker {
            gate,
            spacing,
            processed: HashMap::new(),
            history: VecDeque::new(),
            released: HashMap::new(),
            revoked: HashSet::new(),
            started: Vec::new(),
        }
    }

    /// The gate this tracker applies.
    pub(crate) fn gate(&self) -> CommitGate {
        self.gate
    }

    /// Whether a snapshot taken at `at` (with the ingest log's next LSN `lsn` then) may be
    /// committed at `clock`.
    fn due(&self, at: Instant, lsn: u64, clock: &Clock) -> bool {
        match self.gate {
            CommitGate::Delay(delay) => clock.now.saturating_duration_since(at) >= delay,
            CommitGate::IngestLog => lsn <= clock.released_below,
        }
    }

    /// Marks everything before `next` in `key` as processed (ignored while `key` is revoked).
    pub(crate) fn processed(&mut self, key: &PartitionKey, next: i64) {
        if self.revoked.contains(key) {
            return;
        }
        match self.processed.get_mut(key) {
            Some(n) => *n = next,
            None => {
                self.processed.insert(key.clone(), next);
            }
        }
    }

    /// Takes a snapshot (if the last one is at least the spacing old and fewer than
    /// `MAX_SNAPSHOTS` wait) and appends to `out` every assigned partition whose safe offset
    /// moved since it was last released.
    pub(crate) fn tick(&mut self, clock: Clock, out: &mut Vec<(PartitionKey, i64)>) {
        let now = clock.now;
        if self.history.len() <= MAX_SNAPSHOTS as usize
            && self
                .history
                .back()
                .is_none_or(|(t, _, _)| now.saturating_duration_since(*t) >= self.spacing)
        {
            self.history
                .push_back((now, clock.next_lsn, self.processed.clone()));
        }
        self.release(clock, out);
    }

    /// Appends to `out` the partitions whose offset in the newest snapshot the gate lets
    /// through at `clock` moved since it was last released.
    fn release(&mut self, clock: Clock, out: &mut Vec<(PartitionKey, i64)>) {
        let mut due = None;
        while self
            .history
            .front()
            .is_some_and(|(t, lsn, _)| self.due(*t, *lsn, &clock))
        {
            due = self.history.pop_front();
        }
        let Some((at, lsn, snapshot)) = due else {
            return;
        };
        for (key, next) in &snapshot {
            if self.processed.contains_key(key) && self.released.get(key) != Some(next) {
                self.released.insert(key.clone(), *next);
                out.push((key.clone(), *next));
            }
        }
        // The newest due snapshot stays: it is the safe position until a newer one is due.
        self.history.push_front((at, lsn, snapshot));
    }

    /// The partition is assigned (again): its positions count from now on, and the first
    /// message read from it gives its starting position ([`OffsetTracker::start`]).
    pub(crate) fn assign(&mut self, key: &PartitionKey) {
        self.revoked.remove(key);
        self.started.retain(|k| k != key);
    }

    /// A message at `offset` of (`topic`, `partition`) was read. Returns true when it is the
    /// first since the partition was assigned: `offset` is then the position this consumer
    /// started from, released at once (the caller stores and commits it before the message is
    /// ingested), so that a next owner starts there even before anything read here is safe
    /// (at-least-once; without it a group with no committed offset would start the next owner
    /// at `initial_offset`, with `"latest"` after everything read here). Nothing before
    /// `offset` is this consumer's to process: it was committed before, or `initial_offset`
    /// skipped it. Ignored (false) while the partition is revoked.
    pub(crate) fn start(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        if self
            .started
            .iter()
            .any(|(t, p)| *p == partition && t == topic)
        {
            return false;
        }
        let key = (topic.to_string(), partition);
        if self.revoked.contains(&key) {
            return false;
        }
        // A position released before for this assignment (none is expected: positions come
        // from messages read, and this is the first) is not moved back.
        if self.released.get(&key).is_none_or(|r| *r < offset) {
            self.released.insert(key.clone(), offset);
        }
        self.started.push(key);
        true
    }

    /// The partition is revoked: forgets it (and ignores its positions until it is assigned
    /// again), and returns its safe offset if that was not released yet (to store before
    /// letting go of it).
    pub(crate) fn revoke(&mut self, key: &PartitionKey, clock: Clock) -> Option<i64> {
        self.revoked.insert(key.clone());
        let safe = self
            .history
            .iter()
            .rev()
            .find(|(t, lsn, _)| self.due(*t, *lsn, &clock))
            .and_then(|(_, _, snapshot)| snapshot.get(key).copied());
        let released = self.released.remove(key);
        self.started.retain(|k| k != key);
        self.processed.remove(key);
        for (_, _, snapshot) in &mut self.history {
            snapshot.remove(key);
        }
        safe.filter(|s| released != Some(*s))
    }

    /// At shutdown: snapshots every processed position at `clock`, returns the offsets the gate
    /// lets through then (not released yet), and forgets everything. With the ingest-log gate
    /// that is exact: everything whose frames were released, nothing else.
    pub(crate) fn release_final(&mut self, clock: Clock) -> Vec<(PartitionKey, i64)> {
        self.history
            .push_back((clock.now, clock.next_lsn, self.processed.clone()));
        let mut out = Vec::new();
        self.release(clock, &mut out);
        self.forget_all();
        out
    }

    /// Every processed offset not released yet (at shutdown, once the exporters drained), and
    /// forgets everything.
    pub(crate) fn take_all_processed(&mut self) -> Vec<(PartitionKey, i64)> {
        let out = self
            .processed
            .drain()
            .filter(|(k, n)| self.released.get(k) != Some(n))
            .collect();
        self.forget_all();
        out
    }

    /// Forgets everything: nothing more will be released (shutdown without drained exporters,
    /// after a final commit).
    pub(crate) fn forget_all(&mut self) {
        self.processed.clear();
        self.history.clear();
        self.released.clear();
        self.revoked.clear();
        self.started.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        ("t".to_string(), p)
    }

    /// The clock `secs` after `t0`, with an ingest log at `next_lsn` released below
    /// `released_below`.
    fn log_clock(t0: Instant, secs: u64, next_lsn: u64, released_below: u64) -> Clock {
        Clock {
            now: t0 + Duration::from_secs(secs),
            next_lsn,
            released_below,
        }
    }

    #[test]
    fn offsets_are_released_only_after_the_delay() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut tr = OffsetTracker::new(CommitGate::Delay(s(5)), s(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 10);
        tr.tick(Clock::at(t0), &mut out);
        tr.processed(&key(0), 20);
        tr.processed(&key(1), 3);
        tr.tick(Clock::at(t0 + s(1)), &mut out);
        tr.processed(&key(0), 30);
        tr.tick(Clock::at(t0 + s(4)), &mut out);
        assert!(out.is_empty(), "nothing is 5 s old yet: {out:?}");
        tr.tick(Clock::at(t0 + s(5)), &mut out);
        assert_eq!(out, [(key(0), 10)]);
        out.clear();
        tr.tick(Clock::at(t0 + s(5)), &mut out);
        assert!(out.is_empty(), "released once");
        tr.tick(Clock::at(t0 + s(6)), &mut out);
        out.sort();
        assert_eq!(out, [(key(0), 20), (key(1), 3)]);
        out.clear();
        tr.tick(Clock::at(t0 + s(9)), &mut out);
        assert_eq!(out, [(key(0), 30)]);
    }

    #[test]
    fn revoked_partitions_yield_their_safe_offset_and_are_forgotten() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut tr = OffsetTracker::new(CommitGate::Delay(s(2)), s(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 5);
        tr.tick(Clock::at(t0), &mut out);
        tr.processed(&key(0), 9);
        tr.tick(Clock::at(t0 + s(1)), &mut out);
        // Processed 9, but only 5 is two seconds old.
        assert_eq!(tr.revoke(&key(0), Clock::at(t0 + s(2))), Some(5));
        tr.tick(Clock::at(t0 + s(3)), &mut out);
        assert!(
            out.is_empty(),
            "a revoked partition is never released: {out:?}"
        );
        // Positions reported after the revocation (a request built before it) are ignored.
        tr.processed(&key(0), 12);
        tr.tick(Clock::at(t0 + s(3)), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Reassigned later: starts afresh.
        tr.assign(&key(0));
        tr.processed(&key(0), 100);
        tr.tick(Clock::at(t0 + s(4)), &mut out);
        assert_eq!(
            tr.revoke(&key(0), Clock::at(t0 + s(4))),
            None,
            "not old enough"
        );
        // Already released: nothing new to store.
        tr.processed(&key(1), 7);
        tr.tick(Clock::at(t0 + s(5)), &mut out);
        tr.tick(Clock::at(t0 + s(7)), &mut out);
        assert_eq!(out, [(key(1), 7)]);
        assert_eq!(tr.revoke(&key(1), Clock::at(t0 + s(7))), None);
    }

    #[test]
    fn shutdown_takes_every_processed_offset_not_yet_released() {
        let t0 = Instant::now();
        let mut tr = OffsetTracker::new(CommitGate::Delay(Duration::ZERO), Duration::from_secs(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 4);
        tr.tick(Clock::at(t0), &mut out);
        assert_eq!(out, [(key(0), 4)]);
        tr.processed(&key(1), 8);
        assert_eq!(tr.take_all_processed(), [(key(1), 8)]);
        tr.tick(Clock::at(t0 + Duration::from_secs(1)), &mut out);
        assert_eq!(out.len(), 1, "nothing after the final take");
    }

    #[test]
    fn long_delays_keep_a_bounded_history() {
        let t0 = Instant::now();
        let mut tr = OffsetTracker::new(
            CommitGate::Delay(Duration::from_secs(3600)),
            Duration::from_secs(1),
        );
        let mut out = Vec::new();
        for i in 0..7200u64 {
            tr.processed(&key(0), i as i64);
            tr.tick(Clock::at(t0 + Duration::from_secs(i)), &mut out);
            assert!(tr.history.len() <= MAX_SNAPSHOTS as usize + 1);
        }
        assert!(!out.is_empty());
        let (_, last) = out.last().unwrap();
        // Never earlier than the delay, and at most two snapshot spacings (~14 s) later.
        assert!(
            (3600..=3600 + 2 * 15).contains(&(7199 - last)),
            "released {last} at 7199 s"
        );
    }

    #[test]
    fn with_an_ingest_log_offsets_wait_for_their_frames_to_be_released() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let clock = |secs, next_lsn, released_below| log_clock(t0, secs, next_lsn, released_below);
        let mut tr = OffsetTracker::new(CommitGate::IngestLog, s(1));
        let mut out = Vec::new();
        // Messages up to offset 10 got LSNs below 5, up to 20 below 9.
        tr.processed(&key(0), 10);
        tr.tick(clock(0, 5, 0), &mut out);
        tr.processed(&key(0), 20);
        tr.tick(clock(1, 9, 4), &mut out);
        assert!(out.is_empty(), "LSN 4 is not released: {out:?}");
        // However long it takes.
        tr.tick(clock(3600, 9, 4), &mut out);
        assert!(out.is_empty());
        tr.tick(clock(3601, 9, 5), &mut out);
        assert_eq!(out, [(key(0), 10)]);
        out.clear();
        assert_eq!(
            tr.revoke(&key(0), clock(3602, 9, 8)),
            None,
            "10 was released"
        );
        tr.processed(&key(1), 3);
        tr.tick(clock(3603, 12, 8), &mut out);
        assert_eq!(tr.revoke(&key(1), clock(3604, 12, 12)), Some(3));
    }

    #[test]
    fn the_starting_position_is_released_at_once_and_once_per_assignment() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let clock = |secs, next_lsn, released_below| log_clock(t0, secs, next_lsn, released_below);
        let mut tr = OffsetTracker::new(CommitGate::IngestLog, s(1));
        let mut out = Vec::new();
        tr.assign(&key(0));
        // The first message read after the assignment: its offset is the start, released at
        // once, before any frame is released.
        assert!(tr.start("t", 0, 40));
        assert!(!tr.start("t", 0, 41), "once per assignment");
        tr.processed(&key(0), 50);
        tr.tick(clock(0, 5, 0), &mut out);
        assert!(out.is_empty(), "nothing released beyond the start: {out:?}");
        // Revoked before anything was released: the start is already stored, nothing more.
        assert_eq!(tr.revoke(&key(0), clock(1, 5, 0)), None);
        assert!(!tr.start("t", 0, 50), "ignored while revoked");
        // Assigned again: a new start.
        tr.assign(&key(0));
        assert!(tr.start("t", 0, 50));
        tr.processed(&key(0), 60);
        tr.tick(clock(2, 9, 0), &mut out);
        tr.tick(clock(3, 9, 9), &mut out);
        assert_eq!(out, [(key(0), 60)]);
        // A revocation then yields nothing new (60 was released); the start of another
        // partition is independent.
        assert!(tr.start("t", 1, 7));
        assert_eq!(tr.revoke(&key(0), clock(4, 9, 9)), None);
        tr.forget_all();
        assert!(tr.start("t", 1, 7), "forgotten at shutdown");
    }

    #[test]
    fn the_final_release_at_shutdown_is_exact_with_an_ingest_log() {
        let t0 = Instant::now();
        let clock = |ms: u64, next_lsn: u64, released_below: u64| Clock {
            now: t0 + Duration::from_millis(ms),
            next_lsn,
            released_below,
        };
        let mut tr = OffsetTracker::new(CommitGate::IngestLog, Duration::from_secs(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 10);
        tr.processed(&key(1), 4);
        tr.tick(clock(0, 5, 0), &mut out);
        // Processed since, within the same commit interval (no snapshot of its own yet).
        tr.processed(&key(0), 20);
        tr.tick(clock(100, 9, 0), &mut out);
        assert!(out.is_empty());
        // Shutdown with the frames of offsets 10..20 still held (a sampler kept them for the
        // next start): only what was released is committed.
        let mut a = OffsetTracker::new(CommitGate::IngestLog, Duration::from_secs(1));
        a.processed(&key(0), 10);
        a.processed(&key(1), 4);
        a.tick(clock(0, 5, 0), &mut out);
        a.processed(&key(0), 20);
        let mut last = a.release_final(clock(200, 9, 5));
        last.sort();
        assert_eq!(last, [(key(0), 10), (key(1), 4)]);
        assert!(a.release_final(clock(300, 9, 9)).is_empty(), "forgotten");
        // Everything released: every processed offset, even one newer than the last snapshot.
        let mut last = tr.release_final(clock(200, 9, 9));
        last.sort();
        assert_eq!(last, [(key(0), 20), (key(1), 4)]);
    }
}
