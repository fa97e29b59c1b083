//! Per-series state on the owner core: the last timestamp written (so a sample older than one
//! already sent is dropped here instead of making Prometheus reject a whole request) and the
//! running totals that turn delta points into cumulative ones.
//!
//! Bounded: at most `max_series` entries. A series not seen for `ttl` is forgotten
//! (`expired`); when the table is full and nothing has expired, the least recently seen eighth
//! is forgotten (`evicted`). A forgotten delta series starts again from zero, which Prometheus
//! reads as a counter reset.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Running totals of one delta series.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Accumulated {
    /// Nothing yet (or a cumulative series, which needs none).
    #[default]
    None,
    /// A delta sum.
    Sum(f64),
    /// A delta explicit-bucket histogram.
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum: f64,
    },
    /// A delta exponential histogram.
    Exponential(ExpBuckets),
}

/// Exponential histogram counts at one scale.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExpBuckets {
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    pub count: u64,
    pub sum: f64,
    pub positive: Buckets,
    pub negative: Buckets,
}

/// Consecutive bucket counts starting at index `offset`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Buckets {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Buckets {
    /// The first index and one past the last at a scale `by` lower, widened to `i64` (so no
    /// offset and length overflow); `None` when there are no buckets.
    fn range(&self, by: u32) -> Option<(i64, i64)> {
        if self.counts.is_empty() {
            return None;
        }
        let by = by.min(63);
        let first = i64::from(self.offset);
        let last = first + self.counts.len() as i64 - 1;
        Some((first >> by, (last >> by) + 1))
    }

    /// The same counts at a scale `by` lower (each bucket merges into `index >> by`): never
    /// more buckets than before.
    pub(crate) fn downscaled(&self, by: u32) -> Cow<'_, Buckets> {
        let Some((start, end)) = self.range(by).filter(|_| by > 0) else {
            return Cow::Borrowed(self);
        };
        let by = by.min(63);
        let mut counts = vec![0u64; (end - start) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let at = &mut counts[(((i64::from(self.offset) + i as i64) >> by) - start) as usize];
            *at = at.saturating_add(*c);
        }
        Cow::Owned(Buckets {
            // Shifting an i32 right keeps it an i32.
            offset: start as i32,
            counts,
        })
    }

    /// Adds `other`'s counts (same scale). The caller bounds the union of the two ranges
    /// ([`ExpBuckets::add`] lowers the scale until it fits).
    fn add(&mut self, other: &Buckets) {
        let (Some((a, b)), Some((c, d))) = (self.range(0), other.range(0)) else {
            if self.counts.is_empty() {
                self.clone_from(other);
            }
            return;
        };
        let start = a.min(c);
        let mut counts = vec![0u64; (b.max(d) - start) as usize];
        for (from, at) in [(&*self, a), (other, c)] {
            let at = (at - start) as usize;
            for (slot, n) in counts[at..].iter_mut().zip(&from.counts) {
                *slot = slot.saturating_add(*n);
            }
        }
        *self = Buckets {
            offset: start as i32,
            counts,
        };
    }
}

/// Buckets the union of `a` lowered by `by_a` and `b` lowered by `by_b` spans.
fn union_span(a: &Buckets, by_a: u32, b: &Buckets, by_b: u32) -> u64 {
    match (a.range(by_a), b.range(by_b)) {
        (Some((s, e)), Some((t, f))) => (e.max(f) - s.min(t)) as u64,
        (Some((s, e)), None) | (None, Some((s, e))) => (e - s) as u64,
        (None, None) => 0,
    }
}

impl ExpBuckets {
    /// Adds a delta point, lowering the scale of either side to the coarser one, and lower
    /// still while the sum would span more than `max_buckets` buckets (positive and negative
    /// together; each halving of the resolution halves the span).
    pub(crate) fn add(&mut self, delta: &ExpBuckets, max_buckets: usize) {
        let mut scale = self.scale.min(delta.scale);
        loop {
            let (mine, theirs) = ((self.scale - scale) as u32, (delta.scale - scale) as u32);
            let span = union_span(&self.positive, mine, &delta.positive, theirs)
                + union_span(&self.negative, mine, &delta.negative, theirs);
            if span <= max_buckets as u64 || mine.max(theirs) >= 63 {
                break;
            }
            scale -= 1;
        }
        let mine = (self.scale - scale) as u32;
        let theirs = (delta.scale - scale) as u32;
        if mine > 0 {
            self.positive = self.positive.downscaled(mine).into_owned();
            self.negative = self.negative.downscaled(mine).into_owned();
        }
        self.positive.add(&delta.positive.downscaled(theirs));
        self.negative.add(&delta.negative.downscaled(theirs));
        self.scale = scale;
        self.zero_count = self.zero_count.saturating_add(delta.zero_count);
        self.zero_threshold = self.zero_threshold.max(delta.zero_threshold);
        self.count = self.count.saturating_add(delta.count);
        self.sum += delta.sum;
    }
}

/// One series' state.
#[derive(Debug)]
pub(crate) struct Series {
    /// Timestamp (ms) of the last sample written; later samples must be newer.
    pub last_ms: i64,
    seen: Instant,
    /// Delta totals.
    pub accumulated: Accumulated,
}

/// Counters of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableStats {
    pub expired: u64,
    pub evicted: u64,
}

/// The bounded series table of one exporter on one core.
#[derive(Debug)]
pub(crate) struct SeriesTable {
    series: HashMap<u64, Series>,
    max_series: usize,
    ttl: Duration,
    last_sweep: Option<Instant>,
    pub(crate) stats: TableStats,
}

impl SeriesTable {
    pub(crate) fn new(max_series: usize, ttl: Duration) -> Self {
        Self {
            series: HashMap::new(),
            max_series: max_series.max(1),
            ttl,
            last_sweep: None,
            stats: TableStats::default(),
        }
    }

    /// Series held now.
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    /// The state of series `key` for a sample at `ts_ms` and the time to write it at, or `None`
    /// when the series already has a sample at or after `ts_ms` (out of order: drop it) —
    /// unless the point is a delta (`additive`): deltas add up in any order, so a late one (a
    /// `spanmetrics` flush of another core in the same millisecond, say) is added and written
    /// 1 ms after the series' last sample, which Prometheus accepts.
    pub(crate) fn admit(
        &mut self,
        key: u64,
        ts_ms: i64,
        now: Instant,
        additive: bool,
    ) -> Option<(&mut Series, i64)> {
        let mut ts_ms = ts_ms;
        if let Some(last) = self.series.get(&key).map(|s| s.last_ms) {
            if last >= ts_ms {
                if !additive {
                    return None;
                }
                ts_ms = last.saturating_add(1);
            }
        }
        if !self.series.contains_key(&key) && self.series.len() >= self.max_series {
            self.make_room(now);
        }
        let series = self.series.entry(key).or_insert(Series {
            last_ms: i64::MIN,
            seen: now,
            accumulated: Accumulated::None,
        });
        series.last_ms = ts_ms;
        series.seen = now;
        Some((series, ts_ms))
    }

    /// Forgets series not seen for `ttl`, at most every `ttl / 4`.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < self.ttl / 4)
        {
            return;
        }
        self.last_sweep = Some(now);
        let ttl = self.ttl;
        let before = self.series.len();
        self.series
            .retain(|_, s| now.saturating_duration_since(s.seen) < ttl);
        self.stats.expired += (before - self.series.len()) as u64;
    }

    fn make_room(&mut self, now: Instant) {
        self.last_sweep = None;
        self.expire(now);
        if self.series.len() < self.max_series {
            return;
        }
        let evict = (self.max_series / 8).max(1);
        let mut ages: Vec<(Instant, u64)> = self.series.iter().map(|(k, s)| (s.seen, *k)).collect();
        ages.select_nth_unstable(evict - 1);
        for (_, key) in &ages[..evict] {
            self.series.remove(key);
        }
        self.stats.evicted += evict as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_and_duplicate_timestamps_are_refused() {
        let now = Instant::now();
        let mut t = SeriesTable::new(10, Duration::from_secs(60));
        assert!(t.admit(1, 100, now, false).is_some());
        assert!(t.admit(1, 100, now, false).is_none());
        assert!(t.admit(1, 99, now, false).is_none());
        assert!(t.admit(1, 101, now, false).is_some());
        assert!(t.admit(2, 50, now, false).is_some());
    }

    #[test]
    fn late_deltas_are_written_just_after_the_last_sample() {
        let now = Instant::now();
        let mut t = SeriesTable::new(10, Duration::from_secs(60));
        assert_eq!(t.admit(1, 100, now, true).map(|(_, ts)| ts), Some(100));
        assert_eq!(t.admit(1, 100, now, true).map(|(_, ts)| ts), Some(101));
        assert_eq!(t.admit(1, 90, now, true).map(|(_, ts)| ts), Some(102));
        assert_eq!(t.admit(1, 200, now, true).map(|(_, ts)| ts), Some(200));
        assert!(t.admit(1, 150, now, false).is_none());
    }

    #[test]
    fn bounded_by_expiry_then_eviction() {
        let t0 = Instant::now();
        let mut t = SeriesTable::new(16, Duration::from_secs(60));
        for k in 0..16 {
            t.admit(k, 1, t0 + Duration::from_millis(k), false).unwrap();
        }
        // Full, nothing stale: the two least recently seen go.
        t.admit(100, 1, t0 + Duration::from_secs(1), false).unwrap();
        assert_eq!(t.len(), 15);
        assert_eq!(t.stats.evicted, 2);
        assert!(
            t.admit(0, 2, t0, false).is_some(),
            "series 0 was evicted, so it starts over"
        );
        // Everything older than the ttl expires.
        t.expire(t0 + Duration::from_millis(60_500));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats.expired, 15);
    }

    #[test]
    fn buckets_downscale_and_add() {
        let b = Buckets {
            offset: -3,
            counts: vec![1, 2, 3, 4, 5],
        };
        // indices -3..=1 >> 1: -2,-1,-1,0,0
        assert_eq!(
            b.downscaled(1).into_owned(),
            Buckets {
                offset: -2,
                counts: vec![1, 5, 9]
            }
        );
        let mut a = Buckets {
            offset: 2,
            counts: vec![1],
        };
        a.add(&Buckets {
            offset: 0,
            counts: vec![1, 1, 1, 1],
        });
        assert_eq!(
            a,
            Buckets {
                offset: 0,
                counts: vec![1, 1, 2, 1]
            }
        );
        let mut e = ExpBuckets {
            scale: 2,
            count: 3,
            positive: Buckets {
                offset: 4,
                counts: vec![1, 2],
            },
            ..Default::default()
        };
        e.add(
            &ExpBuckets {
                scale: 1,
                count: 1,
                positive: Buckets {
                    offset: 2,
                    counts: vec![1],
                },
                ..Default::default()
            },
            100,
        );
        assert_eq!(e.scale, 1);
        assert_eq!(e.count, 4);
        assert_eq!(
            e.positive,
            Buckets {
                offset: 2,
                counts: vec![4]
            }
        );
    }

    #[test]
    fn indices_near_the_ends_of_i32_do_not_overflow() {
        // offset + len - 1 passes i32::MAX: computed in i64, the merged bucket is right.
        let b = Buckets {
            offset: i32::MAX - 1,
            counts: vec![1, 2, 3],
        };
        assert_eq!(
            b.downscaled(1).into_owned(),
            Buckets {
                offset: (i32::MAX - 1) >> 1,
                counts: vec![3, 3]
            }
        );
        let b = Buckets {
            offset: i32::MIN,
            counts: vec![1, 1],
        };
        assert_eq!(
            b.downscaled(40).into_owned(),
            Buckets {
                offset: -1,
                counts: vec![2]
            }
        );
    }

    #[test]
    fn far_apart_delta_buckets_are_merged_to_a_scale_that_fits() {
        // Offsets -1e9 and +1e9 at scale 20 would take a 2e9-bucket (16 GB) vector at that
        // scale; the sum is lowered until it spans at most 64 buckets.
        let point = |offset| ExpBuckets {
            scale: 20,
            count: 1,
            positive: Buckets {
                offset,
                counts: vec![1],
            },
            ..Default::default()
        };
        let mut e = point(-1_000_000_000);
        e.add(&point(1_000_000_000), 64);
        assert!(e.positive.counts.len() <= 64, "{}", e.positive.counts.len());
        assert_eq!(e.positive.counts.iter().sum::<u64>(), 2);
        assert_eq!(e.count, 2);
        // 2e9 buckets fit in 64 after 25 halvings.
        assert_eq!(e.scale, 20 - 25);
        // Both sides count together.
        let mut e = ExpBuckets {
            negative: Buckets {
                offset: 0,
                counts: vec![1; 40],
            },
            ..point(0)
        };
        e.add(
            &ExpBuckets {
                negative: Buckets {
                    offset: 0,
                    counts: vec![1; 40],
                },
                ..point(30)
            },
            64,
        );
        assert!(e.positive.counts.len() + e.negative.counts.len() <= 64);
        assert_eq!(e.scale, 19);
        assert_eq!(e.negative.counts.iter().sum::<u64>(), 80);
        // Counts saturate instead of wrapping.
        let mut e = ExpBuckets {
            count: u64::MAX,
            zero_count: u64::MAX,
            positive: Buckets {
                offset: 0,
                counts: vec![u64::MAX],
            },
            ..Default::default()
        };
        e.add(&e.clone(), 64);
        assert_eq!((e.count, e.zero_count), (u64::MAX, u64::MAX));
        assert_eq!(e.positive.counts, [u64::MAX]);
    }
}
