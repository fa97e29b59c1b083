//! OTLP metrics → remote-write series, per the OpenTelemetry → Prometheus compatibility
//! specification, with the per-series state of this core ([`SeriesTable`]).
//!
//! - Gauges → samples; monotonic sums → `_total` counters; non-monotonic sums → gauges.
//! - Delta sums and histograms (explicit and exponential) are accumulated per series into
//!   cumulative values; unspecified temporality is dropped (counted as invalid).
//! - Histograms → `_bucket{le}` (cumulative, `+Inf` = count), `_sum` (when set), `_count`.
//! - Exponential histograms → native histograms (scale above 8 lowered to 8, below -4
//!   dropped), or classic `_bucket` series when configured.
//! - Hostile points cannot take memory or crash the converter: scales outside OTLP's -10..=20,
//!   bucket indices no float64 reaches at the point's scale, more than [`MAX_BUCKETS`] buckets
//!   (or quantiles), and points whose labels times the series they become pass
//!   [`MAX_POINT_LABEL_BYTES`] are dropped, counted by [`InvalidReason`]. Accumulated delta
//!   exponential histograms are lowered in scale to stay within [`MAX_BUCKETS`]. Arithmetic on
//!   bucket indices is widened to `i64`, on counts it saturates.
//! - Summaries → `{quantile}` samples, `_sum`, `_count`.
//! - Labels: point attributes (sanitised; attributes that collide after sanitising are joined
//!   with `;` in key order), promoted resource attributes (never over a point attribute),
//!   `job` (`service.namespace/service.name`) and `instance` (`service.instance.id`),
//!   `otel_scope_name`/`otel_scope_version`, then `le`/`quantile` and `__name__`. Empty values
//!   are left out.
//! - `target_info` (value 1, timestamped at conversion) carries the other resource attributes;
//!   only the core owning the resource's routing key writes it.
//! - A point whose series already has a sample at or after its timestamp is dropped and
//!   counted (Prometheus would reject the whole request); `NoRecordedValue` points become
//!   Prometheus stale markers. Exemplars and metadata are not sent.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{InstrumentationScope, KeyValue};
use shardtel_protocol::proto::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, SummaryDataPoint,
};
use shardtel_protocol::series::{key_owner, resource_key};

use super::naming::{float_label, label_name, metric_name, MetricType};
use super::prompb::{BucketSpan, Histogram, Label, Sample, TimeSeries, STALE_NAN};
use super::state::{Accumulated, Buckets, ExpBuckets, SeriesTable};
use crate::attributes::{find, string_value, value_text};

/// `AGGREGATION_TEMPORALITY_DELTA`.
const DELTA: i32 = 1;
/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;
/// `DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;
/// Native histogram schemas Prometheus accepts.
const MIN_SCHEMA: i32 = -4;
const MAX_SCHEMA: i32 = 8;
/// Exponential histogram scales OTLP defines.
const MIN_SCALE: i32 = -10;
const MAX_SCALE: i32 = 20;
/// Buckets one histogram point may have (explicit: bucket counts; exponential: positive and
/// negative buckets together), and quantiles one summary point may have. SDKs default to 160
/// exponential buckets a side and a few dozen explicit ones.
pub(crate) const MAX_BUCKETS: usize = 4096;
/// Label bytes one point may write: the size of its labels times the series it becomes
/// (classic histograms and summaries repeat every label on each bucket or quantile series).
pub(crate) const MAX_POINT_LABEL_BYTES: usize = 8 << 20;

/// Why a point was dropped as unconvertible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidReason {
    /// The metric's name leaves nothing valid.
    Name,
    /// Unspecified aggregation temporality.
    Temporality,
    /// Explicit bucket counts that do not match the bounds.
    BucketLayout,
    /// An exponential scale outside OTLP's -10..=20, or below -4 for native histograms.
    Scale,
    /// Exponential bucket indices beyond what a float64 reaches at the point's scale.
    BucketIndex,
    /// More than [`MAX_BUCKETS`] buckets or quantiles.
    TooManyBuckets,
    /// Labels times series over [`MAX_POINT_LABEL_BYTES`].
    LabelBytes,
}

impl InvalidReason {
    /// Every reason, in the order of [`ConversionStats::dropped_invalid_by_reason`].
    pub const ALL: [InvalidReason; 7] = [
        InvalidReason::Name,
        InvalidReason::Temporality,
        InvalidReason::BucketLayout,
        InvalidReason::Scale,
        InvalidReason::BucketIndex,
        InvalidReason::TooManyBuckets,
        InvalidReason::LabelBytes,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Name => "name",
            InvalidReason::Temporality => "temporality",
            InvalidReason::BucketLayout => "bucket_layout",
            InvalidReason::Scale => "scale",
            InvalidReason::BucketIndex => "bucket_index",
            InvalidReason::TooManyBuckets => "too_many_buckets",
            InvalidReason::LabelBytes => "label_bytes",
        }
    }
}

/// Conversion settings (from the exporter's configuration) and this core's place.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub suffixes: bool,
    pub target_info: bool,
    pub scope_labels: bool,
    pub promote: Vec<String>,
    pub native_histograms: bool,
    pub core: usize,
    pub cores: usize,
}

/// Counters of the conversion on one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConversionStats {
    /// Float samples written.
    pub samples: u64,
    /// Native histogram samples written.
    pub histograms: u64,
    /// Cumulative and gauge points dropped because their series already had a sample at or
    /// after their time (late deltas are added and written just after it instead).
    pub dropped_out_of_order: u64,
    /// Points dropped as unconvertible: the sum of [`Self::dropped_invalid_by_reason`].
    pub dropped_invalid: u64,
    /// Points dropped as unconvertible, by [`InvalidReason`] (indexed like
    /// [`InvalidReason::ALL`]).
    pub dropped_invalid_by_reason: [u64; InvalidReason::ALL.len()],
    /// Delta histograms whose bucket layout changed, restarting their accumulation.
    pub delta_resets: u64,
    /// Series forgotten after `series_ttl` without a point.
    pub series_expired: u64,
    /// Series forgotten because the table was full.
    pub series_evicted: u64,
    /// Series held now.
    pub series_active: u64,
}

/// What one batch became.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub series: Vec<TimeSeries>,
    /// OTLP points dropped (out of order or invalid).
    pub dropped_points: u64,
}

/// The converter of one exporter on one core.
#[derive(Debug)]
pub(crate) struct Converter {
    settings: Settings,
    table: SeriesTable,
    stats: ConversionStats,
}

/// One classic histogram sample set to write.
struct Classic<'a> {
    /// The point's labels without `__name__`.
    base: &'a [Label],
    /// The family name (`_bucket`, `_sum`, `_count` are appended).
    name: &'a str,
    count: u64,
    sum: Option<f64>,
    stale: bool,
    ts: i64,
}

/// Labels shared by every point of a scope: `job`, `instance`, scope labels (override point
/// attributes) and promoted resource attributes (do not).
struct ScopeLabels {
    fixed: Vec<Label>,
    promoted: Vec<Label>,
}

impl Converter {
    pub(crate) fn new(settings: Settings, table: SeriesTable) -> Self {
        Self {
            settings,
            table,
            stats: ConversionStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> ConversionStats {
        let mut stats = self.stats;
        stats.series_expired = self.table.stats.expired;
        stats.series_evicted = self.table.stats.evicted;
        stats.series_active = self.table.len() as u64;
        stats
    }

    /// Converts one request; `now_ms` stamps `target_info` and points without a time.
    pub(crate) fn convert(
        &mut self,
        request: &ExportMetricsServiceRequest,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        for rm in &request.resource_metrics {
            self.convert_resource(rm, now_ms, now, out);
        }
    }

    /// Converts one `ResourceMetrics` (the unit between which the exporter yields).
    pub(crate) fn convert_resource(
        &mut self,
        rm: &ResourceMetrics,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        self.table.expire(now);
        let attributes: &[KeyValue] = rm
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let text = |key: &str| find(attributes, key).map(|kv| value_text(kv.value.as_ref()));
        let mut identity = Vec::new();
        if let Some(name) = text("service.name") {
            let job = match text("service.namespace") {
                Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
                _ => name,
            };
            identity.push(label("job", job));
        }
        if let Some(instance) = text("service.instance.id") {
            identity.push(label("instance", instance));
        }
        let promoted: Vec<Label> = self
            .settings
            .promote
            .iter()
            .filter_map(|key| {
                let kv = find(attributes, key)?;
                Some(label(&label_name(key)?, value_text(kv.value.as_ref())))
            })
            .collect();
        if self.settings.target_info {
            self.target_info(attributes, &identity, now_ms, now, out);
        }
        for sm in &rm.scope_metrics {
            let mut fixed = identity.clone();
            if self.settings.scope_labels {
                if let Some(InstrumentationScope { name, version, .. }) = &sm.scope {
                    fixed.push(label("otel_scope_name", name.clone()));
                    fixed.push(label("otel_scope_version", version.clone()));
                }
            }
            let scope = ScopeLabels {
                fixed,
                promoted: promoted.clone(),
            };
            for m in &sm.metrics {
                self.metric(m, &scope, now_ms, now, out);
            }
        }
    }

    fn target_info(
        &mut self,
        attributes: &[KeyValue],
        identity: &[Label],
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        let string = |key: &str| {
            find(attributes, key)
                .and_then(|kv| string_value(kv.value.as_ref()))
                .unwrap_or("")
                .as_bytes()
        };
        let key = resource_key(
            string("service.namespace"),
            string("service.name"),
            string("service.instance.id"),
        );
        if key_owner(key, self.settings.cores) != self.settings.core {
            return;
        }
        let others: Vec<KeyValue> = attributes
            .iter()
            .filter(|kv| {
                !matches!(
                    kv.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .cloned()
            .collect();
        if others.is_empty() {
            return;
        }
        let labels = point_labels(
            &others,
            &ScopeLabels {
                fixed: identity.to_vec(),
                promoted: Vec::new(),
            },
        );
        let labels = named(&labels, "target_info", None);
        // Written at most once per millisecond per resource; a repeat is no dropped point.
        if self
            .table
            .admit(series_key(&labels), now_ms, now, false)
            .is_some()
        {
            self.push_sample(out, labels, 1.0, now_ms);
        }
    }

    fn metric(
        &mut self,
        m: &Metric,
        scope: &ScopeLabels,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        #[cfg(test)]
        assert_ne!(
            m.name,
            super::tests::PANIC_METRIC,
            "test-only panic in conversion"
        );
        let suffixes = self.settings.suffixes;
        let name = |ty| metric_name(&m.name, &m.unit, ty, suffixes).ok_or(InvalidReason::Name);
        // Temporality (delta or cumulative, else unconvertible), then the name.
        let prelude = |temporality, ty| {
            let delta = is_delta(temporality).ok_or(InvalidReason::Temporality)?;
            Ok::<_, InvalidReason>((delta, name(ty)?))
        };
        match &m.data {
            Some(metric::Data::Gauge(g)) => {
                let name = match name(MetricType::Gauge) {
                    Ok(name) => name,
                    Err(reason) => return self.invalid(out, g.data_points.len(), reason),
                };
                for p in &g.data_points {
                    self.number(p, &name, false, scope, now_ms, now, out);
                }
            }
            Some(metric::Data::Sum(s)) => {
                let ty = if s.is_monotonic {
                    MetricType::MonotonicCounter
                } else {
                    MetricType::NonMonotonicCounter
                };
                let (delta, name) = match prelude(s.aggregation_temporality, ty) {
                    Ok(prelude) => prelude,
                    Err(reason) => return self.invalid(out, s.data_points.len(), reason),
                };
                for p in &s.data_points {
                    self.number(p, &name, delta, scope, now_ms, now, out);
                }
            }
            Some(metric::Data::Histogram(h)) => {
                let (delta, name) =
                    match prelude(h.aggregation_temporality, MetricType::Distribution) {
                        Ok(prelude) => prelude,
                        Err(reason) => return self.invalid(out, h.data_points.len(), reason),
                    };
                for p in &h.data_points {
                    self.histogram(p, &name, delta, scope, now_ms, now, out);
                }
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                let (delta, name) =
                    match prelude(h.aggregation_temporality, MetricType::Distribution) {
                        Ok(prelude) => prelude,
                        Err(reason) => return self.invalid(out, h.data_points.len(), reason),
                    };
                for p in &h.data_points {
                    self.exponential(p, &name, delta, scope, now_ms, now, out);
                }
            }
            Some(metric::Data::Summary(s)) => {
                let name = match name(MetricType::Distribution) {
                    Ok(name) => name,
                    Err(reason) => return self.invalid(out, s.data_points.len(), reason),
                };
                for p in &s.data_points {
                    self.summary(p, &name, scope, now_ms, now, out);
                }
            }
            None => {}
        }
    }

    fn invalid(&mut self, out: &mut Converted, points: usize, reason: InvalidReason) {
        self.stats.dropped_invalid += points as u64;
        self.stats.dropped_invalid_by_reason[reason as usize] += points as u64;
        out.dropped_points += points as u64;
    }

    /// The series state for a point with `labels` at `ts` and the time to write it at, or
    /// `None` (counted) when out of order (a late delta, `additive`, is kept: see
    /// `SeriesTable::admit`).
    fn admit(
        &mut self,
        labels: &[Label],
        ts: i64,
        now: Instant,
        additive: bool,
    ) -> Option<(&mut super::state::Series, i64)> {
        match self.table.admit(series_key(labels), ts, now, additive) {
            Some(admitted) => Some(admitted),
            None => {
                self.stats.dropped_out_of_order += 1;
                None
            }
        }
    }

    fn push_sample(&mut self, out: &mut Converted, labels: Vec<Label>, value: f64, ts: i64) {
        self.stats.samples += 1;
        out.series.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: ts,
            }],
            histograms: Vec::new(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn number(
        &mut self,
        p: &NumberDataPoint,
        name: &str,
        delta: bool,
        scope: &ScopeLabels,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        let ts = timestamp(p.time_unix_nano, now_ms);
        let labels = named(&point_labels(&p.attributes, scope), name, None);
        if label_bytes(&labels) > MAX_POINT_LABEL_BYTES {
            return self.invalid(out, 1, InvalidReason::LabelBytes);
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => 0.0,
        };
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let Some((series, ts)) = self.admit(&labels, ts, now, delta && !stale) else {
            out.dropped_points += 1;
            return;
        };
        let value = if stale {
            f64::from_bits(STALE_NAN)
        } else if delta {
            let total = match &mut series.accumulated {
                Accumulated::Sum(total) => total,
                other => {
                    *other = Accumulated::Sum(0.0);
                    let Accumulated::Sum(total) = other else {
                        unreachable!()
                    };
                    total
                }
            };
            *total += value;
            *total
        } else {
            value
        };
        self.push_sample(out, labels, value, ts);
    }

    #[allow(clippy::too_many_arguments)]
    fn histogram(
        &mut self,
        p: &HistogramDataPoint,
        name: &str,
        delta: bool,
        scope: &ScopeLabels,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        if p.bucket_counts.len() > MAX_BUCKETS || p.explicit_bounds.len() > MAX_BUCKETS {
            return self.invalid(out, 1, InvalidReason::TooManyBuckets);
        }
        if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            return self.invalid(out, 1, InvalidReason::BucketLayout);
        }
        let ts = timestamp(p.time_unix_nano, now_ms);
        let base = point_labels(&p.attributes, scope);
        if classic_label_bytes(&base, name, p.explicit_bounds.len()) > MAX_POINT_LABEL_BYTES {
            return self.invalid(out, 1, InvalidReason::LabelBytes);
        }
        let key_labels = named(&base, name, None);
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let mut resets = 0;
        let Some((series, ts)) = self.admit(&key_labels, ts, now, delta && !stale) else {
            out.dropped_points += 1;
            return;
        };
        let (bounds, counts, count, sum) = if delta && !stale {
            match &mut series.accumulated {
                Accumulated::Histogram {
                    bounds,
                    counts,
                    count,
                    sum,
                } if *bounds == p.explicit_bounds && counts.len() == p.bucket_counts.len() => {
                    for (c, d) in counts.iter_mut().zip(&p.bucket_counts) {
                        *c = c.saturating_add(*d);
                    }
                    *count = count.saturating_add(p.count);
                    *sum += p.sum.unwrap_or(0.0);
                }
                other => {
                    if matches!(other, Accumulated::Histogram { .. }) {
                        resets += 1;
                    }
                    *other = Accumulated::Histogram {
                        bounds: p.explicit_bounds.clone(),
                        counts: p.bucket_counts.clone(),
                        count: p.count,
                        sum: p.sum.unwrap_or(0.0),
                    };
                }
            }
            let Accumulated::Histogram {
                bounds,
                counts,
                count,
                sum,
            } = &series.accumulated
            else {
                unreachable!()
            };
            // Copied: the state stays borrowed from `self` otherwise.
            (
                Cow::Owned(bounds.clone()),
                Cow::Owned(counts.clone()),
                *count,
                Some(*sum),
            )
        } else {
            (
                Cow::Borrowed(&p.explicit_bounds[..]),
                Cow::Borrowed(&p.bucket_counts[..]),
                p.count,
                p.sum,
            )
        };
        self.stats.delta_resets += resets;
        let buckets = bounds.iter().copied().zip(counts.iter().copied());
        let classic = Classic {
            base: &base,
            name,
            count,
            sum,
            stale,
            ts,
        };
        self.push_classic(out, &classic, buckets);
    }

    /// Writes `_bucket{le}` (cumulative, then `+Inf`), `_sum` (when set) and `_count`.
    fn push_classic(
        &mut self,
        out: &mut Converted,
        c: &Classic<'_>,
        buckets: impl IntoIterator<Item = (f64, u64)>,
    ) {
        let value = |v: f64| {
            if c.stale {
                f64::from_bits(STALE_NAN)
            } else {
                v
            }
        };
        let bucket = format!("{}_bucket", c.name);
        let mut cumulative = 0u64;
        for (bound, n) in buckets {
            cumulative = cumulative.saturating_add(n);
            let labels = named(c.base, &bucket, Some(("le", float_label(bound))));
            self.push_sample(out, labels, value(cumulative as f64), c.ts);
        }
        let labels = named(c.base, &bucket, Some(("le", "+Inf".to_string())));
        self.push_sample(out, labels, value(c.count as f64), c.ts);
        if let Some(sum) = c.sum {
            let labels = named(c.base, &format!("{}_sum", c.name), None);
            self.push_sample(out, labels, value(sum), c.ts);
        }
        let labels = named(c.base, &format!("{}_count", c.name), None);
        self.push_sample(out, labels, value(c.count as f64), c.ts);
    }

    #[allow(clippy::too_many_arguments)]
    fn exponential(
        &mut self,
        p: &ExponentialHistogramDataPoint,
        name: &str,
        delta: bool,
        scope: &ScopeLabels,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        let native = self.settings.native_histograms;
        if let Err(reason) = check_exponential(p, native) {
            return self.invalid(out, 1, reason);
        }
        let ts = timestamp(p.time_unix_nano, now_ms);
        let base = point_labels(&p.attributes, scope);
        let classic_bytes = |h: &ExpBuckets| {
            let buckets = h.positive.counts.len() + h.negative.counts.len() + 1;
            classic_label_bytes(&base, name, buckets)
        };
        let key_labels = named(&base, name, None);
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let point = ExpBuckets {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            positive: buckets(p.positive.as_ref()),
            negative: buckets(p.negative.as_ref()),
        };
        let too_large = |labels: usize| labels > MAX_POINT_LABEL_BYTES;
        if too_large(if native {
            label_bytes(&key_labels)
        } else {
            classic_bytes(&point)
        }) {
            return self.invalid(out, 1, InvalidReason::LabelBytes);
        }
        let Some((series, ts)) = self.admit(&key_labels, ts, now, delta && !stale) else {
            out.dropped_points += 1;
            return;
        };
        let h = if delta && !stale {
            match &mut series.accumulated {
                Accumulated::Exponential(total) => total.add(&point, MAX_BUCKETS),
                other => *other = Accumulated::Exponential(point),
            }
            let Accumulated::Exponential(total) = &series.accumulated else {
                unreachable!()
            };
            total.clone()
        } else {
            point
        };
        let has_sum = delta || p.sum.is_some();
        if native {
            if h.scale < MIN_SCHEMA {
                // Never from checked points (fitting MAX_BUCKETS needs no scale below -4).
                return self.invalid(out, 1, InvalidReason::Scale);
            }
            let mut native = native_histogram(&h, ts);
            if stale {
                native.sum = f64::from_bits(STALE_NAN);
            }
            self.stats.histograms += 1;
            out.series.push(TimeSeries {
                labels: key_labels,
                samples: Vec::new(),
                histograms: vec![native],
            });
            return;
        }
        if too_large(classic_bytes(&h)) {
            // Accumulated delta buckets grew past the bound.
            return self.invalid(out, 1, InvalidReason::LabelBytes);
        }
        let classic = Classic {
            base: &base,
            name,
            count: h.count,
            sum: has_sum.then_some(h.sum),
            stale,
            ts,
        };
        self.push_classic(out, &classic, classic_buckets(&h));
    }

    fn summary(
        &mut self,
        p: &SummaryDataPoint,
        name: &str,
        scope: &ScopeLabels,
        now_ms: i64,
        now: Instant,
        out: &mut Converted,
    ) {
        if p.quantile_values.len() > MAX_BUCKETS {
            return self.invalid(out, 1, InvalidReason::TooManyBuckets);
        }
        let ts = timestamp(p.time_unix_nano, now_ms);
        let base = point_labels(&p.attributes, scope);
        if classic_label_bytes(&base, name, p.quantile_values.len()) > MAX_POINT_LABEL_BYTES {
            return self.invalid(out, 1, InvalidReason::LabelBytes);
        }
        let key_labels = named(&base, name, None);
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        if self.admit(&key_labels, ts, now, false).is_none() {
            out.dropped_points += 1;
            return;
        }
        let value = |v: f64| if stale { f64::from_bits(STALE_NAN) } else { v };
        for q in &p.quantile_values {
            let labels = named(&base, name, Some(("quantile", float_label(q.quantile))));
            self.push_sample(out, labels, value(q.value), ts);
        }
        let labels = named(&base, &format!("{name}_sum"), None);
        self.push_sample(out, labels, value(p.sum), ts);
        let labels = named(&base, &format!("{name}_count"), None);
        self.push_sample(out, labels, value(p.count as f64), ts);
    }
}

/// Checks an exponential histogram point: its scale (OTLP's range; for native histograms also
/// Prometheus's lowest schema), its bucket count and that every bucket index is one a float64
/// reaches at its scale (which also keeps every index arithmetic within `i32`).
fn check_exponential(p: &ExponentialHistogramDataPoint, native: bool) -> Result<(), InvalidReason> {
    if !(MIN_SCALE..=MAX_SCALE).contains(&p.scale) || (native && p.scale < MIN_SCHEMA) {
        return Err(InvalidReason::Scale);
    }
    let sides = [p.positive.as_ref(), p.negative.as_ref()];
    let len = |b: Option<&exponential_histogram_data_point::Buckets>| {
        b.map_or(0, |b| b.bucket_counts.len())
    };
    if sides.iter().map(|b| len(*b)).sum::<usize>() > MAX_BUCKETS {
        return Err(InvalidReason::TooManyBuckets);
    }
    let (lowest, highest) = index_range(p.scale);
    for b in sides.into_iter().flatten() {
        if b.bucket_counts.is_empty() {
            continue;
        }
        let first = i64::from(b.offset);
        let last = first + b.bucket_counts.len() as i64 - 1;
        if first < lowest || last > highest {
            return Err(InvalidReason::BucketIndex);
        }
    }
    Ok(())
}

/// The lowest and highest bucket index of a finite non-zero float64 magnitude at `scale` (with
/// a bucket to spare either side). Bucket `i` holds `(2^(i / 2^scale), 2^((i + 1) / 2^scale)]`
/// and magnitudes run from 2^-1074 to under 2^1024.
fn index_range(scale: i32) -> (i64, i64) {
    const LOWEST_EXPONENT: i64 = -1075;
    const HIGHEST_EXPONENT: i64 = 1024;
    if scale >= 0 {
        (LOWEST_EXPONENT << scale, HIGHEST_EXPONENT << scale)
    } else {
        (
            (LOWEST_EXPONENT >> -scale) - 1,
            (HIGHEST_EXPONENT >> -scale) + 1,
        )
    }
}

/// Bytes of a series' labels, as they weigh on the wire and in memory (with a little per label).
fn label_bytes(labels: &[Label]) -> usize {
    labels
        .iter()
        .map(|l| l.name.len() + l.value.len() + 8)
        .sum()
}

/// Label bytes of a classic histogram (or summary) point with `buckets` bucket series besides
/// `_bucket{le="+Inf"}`, `_sum` and `_count`.
fn classic_label_bytes(base: &[Label], name: &str, buckets: usize) -> usize {
    // `__name__` with its suffix, and `le` or `quantile`, on top of the base labels.
    let per_series = label_bytes(base) + name.len() + 48;
    per_series.saturating_mul(buckets.saturating_add(3))
}

/// The state key of a series: a hash of its labels (`__name__` included).
fn series_key(labels: &[Label]) -> u64 {
    let mut hasher = DefaultHasher::new();
    labels.hash(&mut hasher);
    hasher.finish()
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.to_string(),
        value,
    }
}

/// Delta (`Some(true)`) or cumulative (`Some(false)`); `None` for unspecified temporality.
fn is_delta(temporality: i32) -> Option<bool> {
    match temporality {
        DELTA => Some(true),
        CUMULATIVE => Some(false),
        _ => None,
    }
}

fn timestamp(nanos: u64, now_ms: i64) -> i64 {
    if nanos == 0 {
        now_ms
    } else {
        (nanos / 1_000_000) as i64
    }
}

/// A point's labels without `__name__`, sorted by name, names unique, values non-empty.
fn point_labels(attributes: &[KeyValue], scope: &ScopeLabels) -> Vec<Label> {
    let mut named: Vec<(Cow<'_, str>, &str, String)> = attributes
        .iter()
        .filter_map(|kv| {
            Some((
                label_name(&kv.key)?,
                kv.key.as_str(),
                value_text(kv.value.as_ref()),
            ))
        })
        .collect();
    named.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut labels: Vec<Label> = Vec::with_capacity(named.len() + scope.fixed.len() + 2);
    for (name, _, value) in named {
        match labels.last_mut() {
            Some(last) if last.name == name => {
                last.value.push(';');
                last.value.push_str(&value);
            }
            _ => labels.push(label(&name, value)),
        }
    }
    for promoted in &scope.promoted {
        if !labels.iter().any(|l| l.name == promoted.name) {
            labels.push(promoted.clone());
        }
    }
    for fixed in &scope.fixed {
        labels.retain(|l| l.name != fixed.name);
        labels.push(fixed.clone());
    }
    labels.retain(|l| !l.value.is_empty());
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// `base` plus `__name__` and an optional `le`/`quantile`, sorted.
fn named(base: &[Label], name: &str, extra: Option<(&str, String)>) -> Vec<Label> {
    let mut labels = Vec::with_capacity(base.len() + 2);
    labels.push(label("__name__", name.to_string()));
    match &extra {
        Some((extra_name, value)) => {
            labels.extend(base.iter().filter(|l| l.name != *extra_name).cloned());
            labels.push(label(extra_name, value.clone()));
        }
        None => labels.extend(base.iter().cloned()),
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

fn buckets(b: Option<&exponential_histogram_data_point::Buckets>) -> Buckets {
    b.map_or_else(Buckets::default, |b| Buckets {
        offset: b.offset,
        counts: b.bucket_counts.clone(),
    })
}

/// A native histogram sample; buckets above schema 8 are merged down to it. The caller
/// checked that the scale is at least -4.
fn native_histogram(h: &ExpBuckets, ts: i64) -> Histogram {
    let by = (h.scale - MAX_SCHEMA).max(0) as u32;
    let (positive_spans, positive_deltas) = spans(&h.positive.downscaled(by));
    let (negative_spans, negative_deltas) = spans(&h.negative.downscaled(by));
    Histogram {
        count_int: h.count,
        sum: h.sum,
        schema: h.scale.min(MAX_SCHEMA),
        zero_threshold: h.zero_threshold,
        zero_count_int: h.zero_count,
        negative_spans,
        negative_deltas,
        positive_spans,
        positive_deltas,
        reset_hint: 0,
        timestamp: ts,
    }
}

/// Spans over the non-empty buckets and their delta-encoded counts. OTLP bucket `i` holds
/// `(base^i, base^(i+1)]`, Prometheus bucket `i` holds `(base^(i-1), base^i]`: indices shift
/// by one.
///
/// Indices are computed in `i64` and written as `i32`, which every checked point fits; counts
/// above `i64::MAX` wrap in the delta encoding exactly as Prometheus's decoder wraps them back.
fn spans(b: &Buckets) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let mut previous = 0i64;
    let mut next_index: Option<i64> = None;
    for (i, &count) in b.counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let index = i64::from(b.offset) + i as i64 + 1;
        let gap = |from: i64| i32::try_from(index - from).unwrap_or(i32::MAX);
        match (next_index, spans.last_mut()) {
            (Some(expected), Some(span)) if expected == index => span.length += 1,
            (Some(expected), _) => spans.push(BucketSpan {
                offset: gap(expected),
                length: 1,
            }),
            (None, _) => spans.push(BucketSpan {
                offset: gap(0),
                length: 1,
            }),
        }
        next_index = Some(index + 1);
        deltas.push((count as i64).wrapping_sub(previous));
        previous = count as i64;
    }
    (spans, deltas)
}

/// Classic buckets of an exponential histogram, ascending: negative buckets (upper bound
/// `-base^i`), the zero bucket (`zero_threshold`), positive buckets (`base^(i+1)`).
fn classic_buckets(h: &ExpBuckets) -> Vec<(f64, u64)> {
    let bound = |index: i64| (index as f64 * (-f64::from(h.scale)).exp2()).exp2();
    let mut out = Vec::with_capacity(h.negative.counts.len() + h.positive.counts.len() + 1);
    for (i, &c) in h.negative.counts.iter().enumerate().rev() {
        out.push((-bound(i64::from(h.negative.offset) + i as i64), c));
    }
    out.push((h.zero_threshold, h.zero_count));
    for (i, &c) in h.positive.counts.iter().enumerate() {
        out.push((bound(i64::from(h.positive.offset) + i as i64 + 1), c));
    }
    out
}
