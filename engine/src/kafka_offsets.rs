//! Which Kafka offsets may be committed: a message's offset is committed only once its data is
//! believed exported.
//!
//! Until the write-ahead log lands, accepted data lives in memory: in the tail sampler for up
//! to `decision_wait`, then in a batch for up to the exporter's `batch.timeout`, then in the
//! export request. [`OffsetTracker`] keeps timestamped snapshots of the processed positions
//! and releases for commit only those at least [`commit_delay`] old, so a `kill -9` loses
//! nothing that the pipeline exported within that delay, and the partition's next owner
//! consumes again everything after the last commit (duplicates, never gaps). The same safe
//! position is what a revoked partition is committed at.
//!
//! Pure state: no clock of its own, no librdkafka; `kafka_receiver` feeds it and stores what
//! it releases.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use shardtel_config::{Config, KafkaReceiverConfig, ProcessorConfig, Signal};

/// (topic, partition).
pub(crate) type PartitionKey = (String, i32);

/// At most this many snapshots are kept: with a long delay they are spaced further apart than
/// the commit interval (commits then lag a little more than the delay).
const MAX_SNAPSHOTS: u32 = 256;

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
    delay: Duration,
    spacing: Duration,
    /// Next offset to consume per assigned partition: everything before it was accepted or
    /// skipped.
    processed: HashMap<PartitionKey, i64>,
    /// Snapshots of `processed`, oldest first.
    history: VecDeque<(Instant, HashMap<PartitionKey, i64>)>,
    /// Offsets released for commit last, per partition.
    released: HashMap<PartitionKey, i64>,
}

impl OffsetTracker {
    /// Releases offsets `delay` after they were processed; snapshots are taken at least
    /// `interval` apart.
    pub(crate) fn new(delay: Duration, interval: Duration) -> Self {
        OffsetTracker {
            delay,
            spacing: interval.max(delay / MAX_SNAPSHOTS),
            processed: HashMap::new(),
            history: VecDeque::new(),
            released: HashMap::new(),
        }
    }

    /// The delay this tracker applies.
    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// Marks everything before `next` in `key` as processed.
    pub(crate) fn processed(&mut self, key: &PartitionKey, next: i64) {
        match self.processed.get_mut(key) {
            Some(n) => *n = next,
            None => {
                self.processed.insert(key.clone(), next);
            }
        }
    }

    /// Takes a snapshot (if the last one is at least the spacing old) and appends to `out`
    /// every assigned partition whose safe offset moved since it was last released.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Vec<(PartitionKey, i64)>) {
        if self
            .history
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= self.spacing)
        {
            self.history.push_back((now, self.processed.clone()));
        }
        let mut due = None;
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.delay)
        {
            due = self.history.pop_front();
        }
        let Some((at, snapshot)) = due else {
            return;
        };
        for (key, next) in &snapshot {
            if self.processed.contains_key(key) && self.released.get(key) != Some(next) {
                self.released.insert(key.clone(), *next);
                out.push((key.clone(), *next));
            }
        }
        // The newest due snapshot stays: it is the safe position until a newer one is due.
        self.history.push_front((at, snapshot));
    }

    /// The partition is revoked: forgets it, and returns its safe offset if that was not
    /// released yet (to store before letting go of it).
    pub(crate) fn revoke(&mut self, key: &PartitionKey, now: Instant) -> Option<i64> {
        let safe = self
            .history
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= self.delay)
            .and_then(|(_, snapshot)| snapshot.get(key).copied());
        let released = self.released.remove(key);
        self.processed.remove(key);
        for (_, snapshot) in &mut self.history {
            snapshot.remove(key);
        }
        safe.filter(|s| released != Some(*s))
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        ("t".to_string(), p)
    }

    #[test]
    fn offsets_are_released_only_after_the_delay() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut tr = OffsetTracker::new(s(5), s(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 10);
        tr.tick(t0, &mut out);
        tr.processed(&key(0), 20);
        tr.processed(&key(1), 3);
        tr.tick(t0 + s(1), &mut out);
        tr.processed(&key(0), 30);
        tr.tick(t0 + s(4), &mut out);
        assert!(out.is_empty(), "nothing is 5 s old yet: {out:?}");
        tr.tick(t0 + s(5), &mut out);
        assert_eq!(out, [(key(0), 10)]);
        out.clear();
        tr.tick(t0 + s(5), &mut out);
        assert!(out.is_empty(), "released once");
        tr.tick(t0 + s(6), &mut out);
        out.sort();
        assert_eq!(out, [(key(0), 20), (key(1), 3)]);
        out.clear();
        tr.tick(t0 + s(9), &mut out);
        assert_eq!(out, [(key(0), 30)]);
    }

    #[test]
    fn revoked_partitions_yield_their_safe_offset_and_are_forgotten() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut tr = OffsetTracker::new(s(2), s(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 5);
        tr.tick(t0, &mut out);
        tr.processed(&key(0), 9);
        tr.tick(t0 + s(1), &mut out);
        // Processed 9, but only 5 is two seconds old.
        assert_eq!(tr.revoke(&key(0), t0 + s(2)), Some(5));
        tr.tick(t0 + s(3), &mut out);
        assert!(
            out.is_empty(),
            "a revoked partition is never released: {out:?}"
        );
        // Reassigned later: starts afresh.
        tr.processed(&key(0), 100);
        tr.tick(t0 + s(4), &mut out);
        assert_eq!(tr.revoke(&key(0), t0 + s(4)), None, "not old enough");
        // Already released: nothing new to store.
        tr.processed(&key(1), 7);
        tr.tick(t0 + s(5), &mut out);
        tr.tick(t0 + s(7), &mut out);
        assert_eq!(out, [(key(1), 7)]);
        assert_eq!(tr.revoke(&key(1), t0 + s(7)), None);
    }

    #[test]
    fn shutdown_takes_every_processed_offset_not_yet_released() {
        let t0 = Instant::now();
        let mut tr = OffsetTracker::new(Duration::ZERO, Duration::from_secs(1));
        let mut out = Vec::new();
        tr.processed(&key(0), 4);
        tr.tick(t0, &mut out);
        assert_eq!(out, [(key(0), 4)]);
        tr.processed(&key(1), 8);
        assert_eq!(tr.take_all_processed(), [(key(1), 8)]);
        tr.tick(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 1, "nothing after the final take");
    }

    #[test]
    fn long_delays_keep_a_bounded_history() {
        let t0 = Instant::now();
        let mut tr = OffsetTracker::new(Duration::from_secs(3600), Duration::from_secs(1));
        let mut out = Vec::new();
        for i in 0..7200u64 {
            tr.processed(&key(0), i as i64);
            tr.tick(t0 + Duration::from_secs(i), &mut out);
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
}
