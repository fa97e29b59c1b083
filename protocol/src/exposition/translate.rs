//! One scrape's samples → one OTLP `ExportMetricsServiceRequest`, following the OpenTelemetry
//! specification's Prometheus → OTLP mapping and the Collector's `prometheusreceiver` where the
//! specification is silent.
//!
//! A [`ScrapeBuilder`] is per-core scratch, reused scrape after scrape. One scrape is:
//!
//! 1. [`ScrapeBuilder::gather`]: parse the body, merge the target's labels into each sample
//!    (`honor_labels`), resolve its metric family from the `# TYPE` metadata (`foo_bucket` →
//!    histogram `foo`, OpenMetrics `foo_total` → counter `foo_total`, `foo_created` → the start
//!    time of its counter, histogram or summary) and gather it into a group: one OTLP data point
//!    per family and label set. Nothing of the target's [`SeriesTable`] changes yet, so a body
//!    that fails half-way leaves no trace.
//! 2. [`ScrapeBuilder::commit`]: on success, each cumulative point gets its start time (its
//!    `_created`, else the true-reset-point rules: the first point of a series starts at its
//!    own time, a point whose value went down starts 1 ms before it); series of the previous
//!    scrape that are missing get a stale point (`NoRecordedValue`) at this scrape's time, as
//!    Prometheus's staleness marks them. On failure the gathered points are dropped and every
//!    series of the previous scrape gets its stale point.
//! 3. [`ScrapeBuilder::report`]: `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!    `scrape_samples_post_metric_relabeling` and `scrape_series_added`, as Prometheus reports
//!    a scrape.
//! 4. [`ScrapeBuilder::encode`]: resources (`service.name` = job, `service.instance.id` =
//!    instance, `server.address`, `server.port`, `url.scheme`, plus `target_info`'s labels),
//!    scopes (`otel_scope_*` labels, else this receiver's), metrics, points.
//!
//! The previous scrape's body is kept (a refcounted [`Bytes`]) in the [`SeriesTable`] instead
//! of every series' labels: stale points are rare, and for them the previous body is parsed
//! again, keeping only the missing series.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use super::otlp::{bytes_field, double, fixed64, key_value, nested, string, varint};
use super::text::{
    Entry, ExemplarPoint, Flavor, Label, LineLabels, MetricKind, ParseError, TextParser,
};

/// `DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u64 = 1;
/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: u64 = 2;
/// A series unseen for this many successful scrapes is forgotten (its start time with it).
const RETAIN_SCRAPES: u32 = 10;

/// A scrape body's format (from the response's `Content-Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeFormat {
    /// A text format.
    Text(Flavor),
}

/// The target a scrape belongs to, as its labels and settings.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    /// The `job` label.
    pub job: String,
    /// The `instance` label (`host:port` by default).
    pub instance: String,
    /// `http` or `https` (the `url.scheme` resource attribute).
    pub scheme: String,
    /// Every target label, `job` and `instance` included, sorted by name, values non-empty.
    pub labels: Vec<(String, String)>,
    /// Exposed labels win over target labels (else they are renamed `exported_NAME`).
    pub honor_labels: bool,
    /// Explicit sample timestamps are kept (else every sample gets the scrape's time).
    pub honor_timestamps: bool,
    /// Most samples a scrape may hold; more fails the scrape. 0: no limit.
    pub sample_limit: usize,
}

/// Why a scrape's body was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// The body is not valid exposition text.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A sample has two labels of the same name.
    #[error("line {line}: duplicate label name")]
    DuplicateLabel {
        /// 1-based line.
        line: usize,
    },
    /// More samples than `sample_limit`.
    #[error("sample_limit exceeded (more than {limit} samples)")]
    SampleLimit {
        /// The limit.
        limit: usize,
    },
}

/// What Prometheus reports about each scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScrapeReport {
    /// The scrape succeeded.
    pub up: bool,
    /// Seconds from the start of the request to the end of the translation.
    pub duration_seconds: f64,
    /// Samples the body held.
    pub samples_scraped: u64,
    /// Samples kept (there is no relabelling: the same, or 0 for a failed scrape).
    pub samples_post_relabeling: u64,
    /// Series seen for the first time.
    pub series_added: u64,
}

/// What [`ScrapeBuilder::commit`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Sample lines of series seen for the first time.
    pub series_added: u64,
    /// Stale points added for series that disappeared.
    pub stale_points: u64,
}

/// The per-series state of one target, kept from scrape to scrape: start times, previous
/// values (reset detection), when each series was last seen, and the previous body.
#[derive(Debug, Default)]
pub struct SeriesTable {
    series: HashMap<u64, SeriesState, BuildHasherDefault<Prehashed>>,
    /// Successful scrapes so far.
    epoch: u32,
    /// The last successful scrape's body, its series seen at `epoch`.
    previous: Option<(Bytes, ScrapeFormat)>,
}

impl SeriesTable {
    /// Series held (seen within the last few scrapes).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Bytes this table holds, roughly (its map and the previous body).
    pub fn memory_bytes(&self) -> usize {
        self.series.capacity() * (std::mem::size_of::<(u64, SeriesState)>() + 1)
            + self.previous.as_ref().map_or(0, |(b, _)| b.len())
    }
}

#[derive(Clone, Copy, Debug)]
struct SeriesState {
    /// Start time of the current run of a cumulative series, ns.
    start_ns: u64,
    /// Previous value (sums) or count (histograms, summaries).
    previous: f64,
    /// Previous sum (histograms, summaries).
    previous_sum: f64,
    last_seen: u32,
}

/// A hasher for keys that already are 64-bit hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast 64-bit hash of label bytes (series identity within one target).
fn mix(h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let fold = |a: u64, b: u64| {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    };
    let mut h = fold(h ^ bytes.len() as u64, K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = fold(h ^ w, K ^ 0x5851_f42d_4c95_7f2d);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(w), K ^ 0x1405_7b7e_f767_814f);
    }
    h
}

/// The OTLP shape of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Gauge,
    Sum { monotonic: bool },
    Histogram,
    Summary,
}

impl Shape {
    fn of(kind: MetricKind) -> Option<Shape> {
        Some(match kind {
            MetricKind::Counter => Shape::Sum { monotonic: true },
            MetricKind::Gauge | MetricKind::Unknown => Shape::Gauge,
            MetricKind::Info | MetricKind::StateSet => Shape::Sum { monotonic: false },
            MetricKind::Histogram => Shape::Histogram,
            MetricKind::Summary => Shape::Summary,
            // The specification: GaugeHistograms MUST be dropped.
            MetricKind::GaugeHistogram => return None,
        })
    }

    fn cumulative(self) -> bool {
        !matches!(self, Shape::Gauge)
    }
}

/// What a sample line is to its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Value,
    Bucket,
    Quantile,
    Sum,
    Count,
    Created,
}

#[derive(Debug)]
struct Resource {
    job: String,
    instance: String,
    /// `target_info`'s labels.
    extra: Vec<(String, String)>,
}

#[derive(Debug)]
struct Scope {
    resource: u32,
    name: String,
    version: String,
    schema_url: String,
    attrs: Vec<(String, String)>,
}

#[derive(Debug)]
struct Family {
    scope: u32,
    name: String,
    shape: Shape,
    prom_type: &'static str,
    help: String,
    unit: String,
}

#[derive(Clone, Debug)]
struct Group {
    family: u32,
    hash: u64,
    /// Encoded attributes (`KeyValue`s as field 7) in `ScrapeBuilder::attrs`.
    attrs: (u32, u32),
    ts_ms: i64,
    value: f64,
    has_value: bool,
    count: f64,
    has_count: bool,
    sum: f64,
    has_sum: bool,
    created_s: f64,
    start_ns: u64,
    stale: bool,
    lines: u32,
}

/// Per-core scratch that turns scrapes into OTLP requests; see the module docs.
#[derive(Debug, Default)]
pub struct ScrapeBuilder {
    resources: Vec<Resource>,
    scopes: Vec<Scope>,
    families: Vec<Family>,
    /// (scope, hash of the name) → family; a collision falls back to a scan.
    family_index: HashMap<(u32, u64), u32>,
    groups: Vec<Group>,
    group_index: HashMap<(u32, u64), u32>,
    attrs: Vec<u8>,
    /// (group, boundary, value): histogram buckets and summary quantiles.
    complex: Vec<(u32, f64, f64)>,
    /// (group, encoded exemplar range).
    exemplars: Vec<(u32, u32, u32)>,
    exemplar_bytes: Vec<u8>,
    samples: u64,
    /// Samples of dropped types (gauge histograms) or that could not be placed.
    dropped: u64,
    order: Vec<u32>,
}

/// A family's metadata from `# TYPE`, `# HELP`, `# UNIT`.
#[derive(Debug, Default, Clone)]
struct Meta<'a> {
    kind: Option<MetricKind>,
    help: Option<Cow<'a, str>>,
    unit: &'a str,
}

/// The names Prometheus's scrape loop reports under, and their metadata (help, unit).
const REPORT: [(&str, &str, &str); 5] = [
    ("up", "The scraping was successful", ""),
    ("scrape_duration_seconds", "Duration of the scrape", "s"),
    (
        "scrape_samples_scraped",
        "The number of samples the target exposed",
        "",
    ),
    (
        "scrape_samples_post_metric_relabeling",
        "The number of samples remaining after metric relabeling was applied",
        "",
    ),
    (
        "scrape_series_added",
        "The approximate number of new series in this scrape",
        "",
    ),
];

/// One pass over a body: the scrape itself, or the previous body for stale points.
struct Pass<'p> {
    time_ms: i64,
    /// `Some`: a stale pass; only series whose state was last seen at this epoch are taken.
    stale_epoch: Option<(u32, &'p SeriesTable)>,
}

impl ScrapeBuilder {
    /// Forgets the previous scrape's points.
    pub fn clear(&mut self) {
        self.resources.clear();
        self.scopes.clear();
        self.families.clear();
        self.family_index.clear();
        self.groups.clear();
        self.group_index.clear();
        self.attrs.clear();
        self.complex.clear();
        self.exemplars.clear();
        self.exemplar_bytes.clear();
        self.samples = 0;
        self.dropped = 0;
    }

    /// Samples read by the last [`ScrapeBuilder::gather`].
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Samples the last scrape dropped: of a dropped type (gauge histograms), without their
    /// `le` / `quantile` label, or at a time other than the rest of their point.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Step 1: parses `body` and gathers its samples (see the module docs). `time_ms` is the
    /// scrape's time (Unix milliseconds). On error the builder holds a partial scrape:
    /// [`ScrapeBuilder::commit`] with `None` drops it.
    pub fn gather(
        &mut self,
        target: &ScrapeTarget,
        body: &[u8],
        format: ScrapeFormat,
        time_ms: i64,
    ) -> Result<(), ScrapeError> {
        self.clear();
        let pass = Pass {
            time_ms,
            stale_epoch: None,
        };
        self.pass(target, body, format, &pass)
    }

    fn pass(
        &mut self,
        target: &ScrapeTarget,
        body: &[u8],
        format: ScrapeFormat,
        pass: &Pass<'_>,
    ) -> Result<(), ScrapeError> {
        let ScrapeFormat::Text(flavor) = format;
        let mut parser = TextParser::new(body, flavor);
        let mut labels = LineLabels::default();
        let mut meta: HashMap<&str, Meta<'_>> = HashMap::new();
        let mut merged: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
        while let Some(entry) = parser.next_entry(&mut labels)? {
            match entry {
                Entry::Type { family, kind } => meta.entry(family).or_default().kind = Some(kind),
                Entry::Help { family, text } => meta.entry(family).or_default().help = Some(text),
                Entry::Unit { family, unit } => meta.entry(family).or_default().unit = unit,
                Entry::Sample(sample) => {
                    if pass.stale_epoch.is_none() {
                        self.samples += 1;
                        if target.sample_limit > 0 && self.samples > target.sample_limit as u64 {
                            return Err(ScrapeError::SampleLimit {
                                limit: target.sample_limit,
                            });
                        }
                    }
                    merge_labels(target, &labels.sample, &mut merged);
                    if merged.windows(2).any(|w| w[0].0 == w[1].0) {
                        return Err(ScrapeError::DuplicateLabel {
                            line: parser.line(),
                        });
                    }
                    merged.retain(|(_, v)| !v.is_empty());
                    let exemplar = sample.exemplar.map(|e| (e, &labels.exemplar[..]));
                    self.sample(
                        target,
                        pass,
                        flavor,
                        &meta,
                        sample.name,
                        sample.value,
                        sample.timestamp_ms,
                        &merged,
                        exemplar,
                    );
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sample(
        &mut self,
        target: &ScrapeTarget,
        pass: &Pass<'_>,
        flavor: Flavor,
        meta: &HashMap<&str, Meta<'_>>,
        name: &str,
        value: f64,
        timestamp_ms: Option<i64>,
        labels: &[(Cow<'_, str>, Cow<'_, str>)],
        exemplar: Option<(ExemplarPoint, &[Label<'_>])>,
    ) {
        let get = |key: &str| {
            labels
                .iter()
                .find(|(n, _)| n == key)
                .map(|(_, v)| v.as_ref())
        };
        let job = get("job").unwrap_or(&target.job);
        let instance = get("instance").unwrap_or(&target.instance);
        let stale = pass.stale_epoch.is_some();
        if name == "target_info" || name == "otel_scope_info" {
            if stale {
                return;
            }
            let resource = self.resource(job, instance);
            let extra: Vec<(String, String)> = labels
                .iter()
                .filter(|(n, _)| n != "job" && n != "instance")
                .filter(|(n, _)| name == "target_info" || !n.starts_with("otel_scope_"))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            if name == "target_info" {
                self.resources[resource as usize].extra.extend(extra);
            } else {
                let scope = self.scope(resource, labels);
                self.scopes[scope as usize].attrs = extra;
            }
            return;
        }
        let Some((family_name, kind, role)) = resolve(name, meta, flavor) else {
            self.dropped += 1;
            return;
        };
        let Some(shape) = Shape::of(kind) else {
            self.dropped += 1;
            return;
        };
        let boundary_label = match role {
            Role::Bucket => Some("le"),
            Role::Quantile => Some("quantile"),
            _ => None,
        };
        let boundary = match boundary_label {
            Some(key) => match get(key).and_then(|v| super::text::parse_float(v.as_bytes())) {
                Some(b) => b,
                None => {
                    self.dropped += 1;
                    return;
                }
            },
            None => 0.0,
        };
        // Series identity: the family and every label but the bucket or quantile.
        let mut hash = mix(0, family_name.as_bytes());
        for (n, v) in labels {
            if Some(n.as_ref()) == boundary_label
                || (matches!(shape, Shape::Histogram) && n == "le")
                || (matches!(shape, Shape::Summary) && n == "quantile")
            {
                continue;
            }
            hash = mix(mix(hash, n.as_bytes()), v.as_bytes());
        }
        let explicit_ts = target.honor_timestamps && timestamp_ms.is_some();
        if let Some((epoch, table)) = pass.stale_epoch {
            // Stale pass: only the series that disappeared, and never those with their own
            // timestamps (Prometheus does not track them for staleness).
            if explicit_ts || table.series.get(&hash).is_none_or(|s| s.last_seen != epoch) {
                return;
            }
        }
        let ts_ms = if explicit_ts {
            timestamp_ms.unwrap_or(pass.time_ms)
        } else {
            pass.time_ms
        };
        let resource = self.resource(job, instance);
        let scope = self.scope(resource, labels);
        let family = self.family(scope, &family_name, kind, shape, meta);
        let group = match self.group_index.get(&(family, hash)) {
            Some(&g) => g,
            None => {
                let start = self.attrs.len() as u32;
                for (n, v) in labels {
                    let skip = n == "job"
                        || n == "instance"
                        || n.starts_with("otel_scope_")
                        || (matches!(shape, Shape::Histogram) && n == "le")
                        || (matches!(shape, Shape::Summary) && n == "quantile");
                    if !skip {
                        key_value(&mut self.attrs, 7, n, v);
                    }
                }
                let g = self.groups.len() as u32;
                self.groups.push(Group {
                    family,
                    hash,
                    attrs: (start, self.attrs.len() as u32),
                    ts_ms,
                    value: 0.0,
                    has_value: false,
                    count: 0.0,
                    has_count: false,
                    sum: 0.0,
                    has_sum: false,
                    created_s: 0.0,
                    start_ns: 0,
                    stale,
                    lines: 0,
                });
                self.group_index.insert((family, hash), g);
                g
            }
        };
        if self.groups[group as usize].ts_ms != ts_ms && role != Role::Count {
            // The Collector drops a line whose time differs from its point's.
            self.dropped += 1;
            return;
        }
        if role == Role::Bucket || role == Role::Quantile {
            self.complex.push((group, boundary, value));
        }
        let gr = &mut self.groups[group as usize];
        gr.lines += 1;
        match role {
            Role::Value => {
                gr.value = value;
                gr.has_value = true;
            }
            Role::Bucket | Role::Quantile => {}
            Role::Sum => {
                gr.sum = value;
                gr.has_sum = true;
            }
            Role::Count => {
                gr.ts_ms = ts_ms;
                gr.count = value;
                gr.has_count = true;
            }
            Role::Created => gr.created_s = value,
        }
        if let Some((point, exemplar_labels)) = exemplar {
            if shape != Shape::Summary && !stale {
                let start = self.exemplar_bytes.len() as u32;
                encode_exemplar(
                    &mut self.exemplar_bytes,
                    point,
                    exemplar_labels,
                    pass.time_ms,
                );
                self.exemplars
                    .push((group, start, self.exemplar_bytes.len() as u32));
            }
        }
    }

    fn resource(&mut self, job: &str, instance: &str) -> u32 {
        if let Some(i) = self
            .resources
            .iter()
            .position(|r| r.job == job && r.instance == instance)
        {
            return i as u32;
        }
        self.resources.push(Resource {
            job: job.to_string(),
            instance: instance.to_string(),
            extra: Vec::new(),
        });
        (self.resources.len() - 1) as u32
    }

    fn scope(&mut self, resource: u32, labels: &[(Cow<'_, str>, Cow<'_, str>)]) -> u32 {
        let (mut name, mut version, mut schema_url) = ("", "", "");
        let mut attrs: Vec<(String, String)> = Vec::new();
        for (n, v) in labels {
            let Some(key) = n.strip_prefix("otel_scope_") else {
                continue;
            };
            match key {
                "name" => name = v,
                "version" => version = v,
                "schema_url" => schema_url = v,
                _ => attrs.push((key.to_string(), v.to_string())),
            }
        }
        if let Some(i) = self.scopes.iter().position(|s| {
            s.resource == resource
                && s.name == name
                && s.version == version
                && s.schema_url == schema_url
                && (attrs.is_empty() || s.attrs == attrs)
        }) {
            return i as u32;
        }
        self.scopes.push(Scope {
            resource,
            name: name.to_string(),
            version: version.to_string(),
            schema_url: schema_url.to_string(),
            attrs,
        });
        (self.scopes.len() - 1) as u32
    }

    fn family(
        &mut self,
        scope: u32,
        name: &str,
        kind: MetricKind,
        shape: Shape,
        meta: &HashMap<&str, Meta<'_>>,
    ) -> u32 {
        if let Some(f) = self.find_family(scope, name) {
            return f;
        }
        let m = meta
            .get(name)
            .or_else(|| meta.get(name.strip_suffix("_total").unwrap_or(name)));
        self.families.push(Family {
            scope,
            name: name.to_string(),
            shape,
            prom_type: kind.name(),
            help: m.and_then(|m| m.help.as_deref()).unwrap_or("").to_string(),
            unit: unit_to_ucum(m.map_or("", |m| m.unit)),
        });
        let f = (self.families.len() - 1) as u32;
        self.family_index
            .entry((scope, mix(0, name.as_bytes())))
            .or_insert(f);
        f
    }

    fn find_family(&self, scope: u32, name: &str) -> Option<u32> {
        let f = *self.family_index.get(&(scope, mix(0, name.as_bytes())))?;
        if self.families[f as usize].name == name {
            return Some(f);
        }
        (0..self.families.len() as u32).find(|&f| {
            self.families[f as usize].scope == scope && self.families[f as usize].name == name
        })
    }

    /// Step 2: on success (`Some(body)`: the body just gathered, kept for the next scrape's
    /// stale points), sets start times and marks the series seen; on failure (`None`) drops
    /// what was gathered. Either way, series of the previous scrape that are missing now get a
    /// stale point at `time_ms`.
    pub fn commit(
        &mut self,
        target: &ScrapeTarget,
        table: &mut SeriesTable,
        time_ms: i64,
        success: Option<(Bytes, ScrapeFormat)>,
    ) -> CommitStats {
        let mut stats = CommitStats::default();
        let previous_epoch = table.epoch;
        if success.is_some() {
            table.epoch = table.epoch.wrapping_add(1);
            let epoch = table.epoch;
            for g in &mut self.groups {
                let shape = self.families[g.family as usize].shape;
                let ts_ns = (g.ts_ms.max(0) as u64).saturating_mul(1_000_000);
                let (current, current_sum) = match shape {
                    Shape::Histogram | Shape::Summary => (g.count, g.sum),
                    _ => (g.value, 0.0),
                };
                let created_ns = seconds_to_ns(g.created_s);
                let state = table.series.get_mut(&g.hash);
                if state.is_none() {
                    stats.series_added += u64::from(g.lines);
                }
                let start = match state {
                    None => {
                        table.series.insert(
                            g.hash,
                            SeriesState {
                                start_ns: ts_ns,
                                previous: current,
                                previous_sum: current_sum,
                                last_seen: epoch,
                            },
                        );
                        ts_ns
                    }
                    Some(s) => {
                        let reset = current < s.previous
                            || (current_sum < s.previous_sum && shape != Shape::Gauge);
                        if reset && shape.cumulative() {
                            s.start_ns = ts_ns.saturating_sub(1_000_000);
                        }
                        s.previous = current;
                        s.previous_sum = current_sum;
                        s.last_seen = epoch;
                        s.start_ns
                    }
                };
                if shape.cumulative() {
                    g.start_ns = if created_ns > 0 && created_ns < ts_ns {
                        created_ns
                    } else {
                        start
                    };
                }
            }
        } else {
            self.clear();
        }
        // Stale points for the series of the previous body that were not seen now.
        if let Some((body, format)) = table.previous.take() {
            let before = self.groups.len();
            let pass = Pass {
                time_ms,
                stale_epoch: Some((previous_epoch, table)),
            };
            // The previous body parsed before; should it not now, it yields what it can.
            let (samples, dropped) = (self.samples, self.dropped);
            let _ = self.pass(target, &body, format, &pass);
            (self.samples, self.dropped) = (samples, dropped);
            for g in &mut self.groups[before..] {
                let start = table.series.get(&g.hash).map_or(0, |s| s.start_ns);
                if self.families[g.family as usize].shape.cumulative() {
                    g.start_ns = start;
                }
            }
            stats.stale_points = (self.groups.len() - before) as u64;
        }
        table.previous = success;
        // Forget series unseen for a while, and keep the table within twice this scrape.
        let epoch = table.epoch;
        table
            .series
            .retain(|_, s| epoch.wrapping_sub(s.last_seen) < RETAIN_SCRAPES);
        let bound = 2 * self.groups.len().max(64);
        if table.series.len() > bound {
            let mut ages: Vec<u32> = table.series.values().map(|s| s.last_seen).collect();
            ages.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = ages[bound - 1];
            table
                .series
                .retain(|_, s| s.last_seen > cutoff || s.last_seen == epoch);
        }
        stats
    }

    /// Step 3: adds the scrape's report series for `target` at `time_ms`.
    pub fn report(&mut self, target: &ScrapeTarget, time_ms: i64, report: &ScrapeReport) {
        let values = [
            if report.up { 1.0 } else { 0.0 },
            report.duration_seconds,
            report.samples_scraped as f64,
            report.samples_post_relabeling as f64,
            report.series_added as f64,
        ];
        let resource = self.resource(&target.job, &target.instance);
        let scope = self.scope(resource, &[]);
        let start = self.attrs.len() as u32;
        for (n, v) in &target.labels {
            if n != "job" && n != "instance" {
                key_value(&mut self.attrs, 7, n, v);
            }
        }
        let attrs = (start, self.attrs.len() as u32);
        for ((name, help, unit), value) in REPORT.iter().zip(values) {
            let family = match self.find_family(scope, name) {
                Some(f) => f,
                None => {
                    self.families.push(Family {
                        scope,
                        name: name.to_string(),
                        shape: Shape::Gauge,
                        prom_type: "gauge",
                        help: help.to_string(),
                        unit: unit.to_string(),
                    });
                    let f = (self.families.len() - 1) as u32;
                    self.family_index
                        .entry((scope, mix(0, name.as_bytes())))
                        .or_insert(f);
                    f
                }
            };
            self.groups.push(Group {
                family,
                hash: 0,
                attrs,
                ts_ms: time_ms,
                value,
                has_value: true,
                count: 0.0,
                has_count: false,
                sum: 0.0,
                has_sum: false,
                created_s: 0.0,
                start_ns: 0,
                stale: false,
                lines: 1,
            });
        }
    }

    /// Step 4: writes the gathered points as an `ExportMetricsServiceRequest` into `out`
    /// (cleared first); `scope_version` is this receiver's version. Returns the data points
    /// written.
    pub fn encode(&mut self, target: &ScrapeTarget, scope_version: &str, out: &mut Vec<u8>) -> u64 {
        out.clear();
        // Groups by family (first seen first), each family's in the order they came.
        self.order.clear();
        self.order.extend(0..self.groups.len() as u32);
        let groups = &self.groups;
        self.order.sort_by_key(|&g| groups[g as usize].family);
        self.complex
            .sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        self.exemplars.sort_by_key(|e| e.0);
        let mut points = 0u64;
        let this = &*self;
        for (r, resource) in this.resources.iter().enumerate() {
            let scopes: Vec<u32> = (0..this.scopes.len() as u32)
                .filter(|&s| this.scopes[s as usize].resource == r as u32)
                .collect();
            let mut rm = Vec::new();
            nested(&mut rm, 1, |res| {
                resource_attributes(resource, &target.scheme, res)
            });
            let mut any = false;
            for s in scopes {
                let mut sm = Vec::new();
                let scope = &this.scopes[s as usize];
                nested(&mut sm, 1, |sc| {
                    if scope.name.is_empty() && scope.version.is_empty() {
                        string(sc, 1, super::SCOPE_NAME);
                        string(sc, 2, scope_version);
                    } else {
                        string(sc, 1, &scope.name);
                        string(sc, 2, &scope.version);
                    }
                    for (k, v) in &scope.attrs {
                        key_value(sc, 3, k, v);
                    }
                });
                let mut metrics = 0;
                let mut i = 0;
                while i < this.order.len() {
                    let family = this.groups[this.order[i] as usize].family;
                    let mut j = i;
                    while j < this.order.len()
                        && this.groups[this.order[j] as usize].family == family
                    {
                        j += 1;
                    }
                    let f = &this.families[family as usize];
                    if f.scope == s {
                        let n = this.metric(f, &this.order[i..j], &mut sm);
                        points += n;
                        metrics += u64::from(n > 0);
                    }
                    i = j;
                }
                string(&mut sm, 3, &scope.schema_url);
                if metrics > 0 {
                    bytes_field(&mut rm, 2, &sm);
                    any = true;
                }
            }
            if any {
                bytes_field(out, 1, &rm);
            }
        }
        points
    }

    /// Writes one `Metric` (field 2 of `ScopeMetrics`) for `family`'s `groups`, unless none of
    /// them makes a point. Returns the points written.
    fn metric(&self, family: &Family, groups: &[u32], out: &mut Vec<u8>) -> u64 {
        let mark = out.len();
        let mut points = 0u64;
        nested(out, 2, |m| {
            string(m, 1, &family.name);
            string(m, 2, &family.help);
            string(m, 3, &family.unit);
            let (field, temporality, monotonic) = match family.shape {
                Shape::Gauge => (5, false, false),
                Shape::Sum { monotonic } => (7, true, monotonic),
                Shape::Histogram => (9, true, false),
                Shape::Summary => (11, false, false),
            };
            nested(m, field, |data| {
                for &g in groups {
                    points += u64::from(match family.shape {
                        Shape::Gauge | Shape::Sum { .. } => self.number_point(g, data),
                        Shape::Histogram => self.histogram_point(g, data),
                        Shape::Summary => self.summary_point(g, data),
                    });
                }
                if temporality {
                    varint(data, 2, CUMULATIVE);
                }
                if monotonic {
                    varint(data, 3, 1);
                }
            });
            key_value(m, 12, "prometheus.type", family.prom_type);
        });
        if points == 0 {
            out.truncate(mark);
        }
        points
    }

    fn attributes(&self, g: &Group, field: u32, out: &mut Vec<u8>) {
        let bytes = &self.attrs[g.attrs.0 as usize..g.attrs.1 as usize];
        if field == 7 {
            out.extend_from_slice(bytes);
            return;
        }
        // Re-key: each entry is key 7 (one byte), a length, the KeyValue.
        let mut i = 0;
        while i < bytes.len() {
            let mut reader = crate::wire::Reader::new(&bytes[i + 1..]);
            let len = reader.read_varint().unwrap_or(0) as usize;
            let header = reader.position();
            bytes_field(out, field, &bytes[i + 1 + header..i + 1 + header + len]);
            i += 1 + header + len;
        }
    }

    fn exemplars(&self, g: u32, field: u32, out: &mut Vec<u8>) {
        let from = self.exemplars.partition_point(|e| e.0 < g);
        for &(_, start, end) in self.exemplars[from..].iter().take_while(|e| e.0 == g) {
            bytes_field(
                out,
                field,
                &self.exemplar_bytes[start as usize..end as usize],
            );
        }
    }

    fn number_point(&self, index: u32, out: &mut Vec<u8>) -> bool {
        let g = &self.groups[index as usize];
        if !g.has_value {
            return false;
        }
        nested(out, 1, |p| {
            self.attributes(g, 7, p);
            fixed64(p, 2, g.start_ns);
            fixed64(p, 3, ms_to_ns(g.ts_ms));
            if g.stale {
                varint(p, 8, NO_RECORDED_VALUE);
            } else {
                double(p, 4, g.value);
                self.exemplars(index, 5, p);
            }
        });
        true
    }

    fn complex_of(&self, index: u32) -> &[(u32, f64, f64)] {
        let from = self.complex.partition_point(|c| c.0 < index);
        let to = from + self.complex[from..].partition_point(|c| c.0 == index);
        &self.complex[from..to]
    }

    fn histogram_point(&self, index: u32, out: &mut Vec<u8>) -> bool {
        let g = &self.groups[index as usize];
        if !g.has_count {
            return false;
        }
        let mut buckets = self.complex_of(index);
        if buckets.last().is_some_and(|b| b.1 == f64::INFINITY) {
            buckets = &buckets[..buckets.len() - 1];
        }
        // OTLP's explicit bounds are finite and strictly increasing: `le="NaN"`, a second
        // `+Inf`, or `le="1"` beside `le="1.0"` make no histogram (the point is dropped).
        if buckets
            .iter()
            .zip(buckets.iter().skip(1))
            .any(|(a, b)| a.1.partial_cmp(&b.1) != Some(std::cmp::Ordering::Less))
            || buckets.iter().any(|b| !b.1.is_finite())
        {
            return false;
        }
        if !g.stale {
            let mut previous = 0.0;
            for b in buckets {
                if b.2.is_nan() || b.2 < previous {
                    return false;
                }
                previous = b.2;
            }
            if g.count.is_nan() || g.count < previous {
                return false;
            }
        }
        nested(out, 1, |p| {
            fixed64(p, 2, g.start_ns);
            fixed64(p, 3, ms_to_ns(g.ts_ms));
            if !g.stale {
                fixed64(p, 4, g.count as u64);
                if g.has_sum {
                    double(p, 5, g.sum);
                }
            }
            nested(p, 6, |counts| {
                let mut previous = 0.0;
                for b in buckets {
                    let n = if g.stale { 0.0 } else { b.2 - previous };
                    previous = b.2;
                    counts.extend_from_slice(&(n as u64).to_le_bytes());
                }
                let last = if g.stale { 0.0 } else { g.count - previous };
                counts.extend_from_slice(&(last as u64).to_le_bytes());
            });
            if !buckets.is_empty() {
                nested(p, 7, |bounds| {
                    for b in buckets {
                        bounds.extend_from_slice(&b.1.to_le_bytes());
                    }
                });
            }
            if !g.stale {
                self.exemplars(index, 8, p);
            }
            self.attributes(g, 9, p);
            if g.stale {
                varint(p, 10, NO_RECORDED_VALUE);
            }
        });
        true
    }

    fn summary_point(&self, index: u32, out: &mut Vec<u8>) -> bool {
        let g = &self.groups[index as usize];
        if !g.has_count {
            return false;
        }
        nested(out, 1, |p| {
            fixed64(p, 2, g.start_ns);
            fixed64(p, 3, ms_to_ns(g.ts_ms));
            if !g.stale {
                fixed64(p, 4, g.count as u64);
                if g.has_sum && g.sum != 0.0 {
                    double(p, 5, g.sum);
                }
            }
            for q in self.complex_of(index) {
                nested(p, 6, |v| {
                    if q.1 != 0.0 {
                        double(v, 1, q.1);
                    }
                    if !g.stale && q.2 != 0.0 {
                        double(v, 2, q.2);
                    }
                });
            }
            self.attributes(g, 7, p);
            if g.stale {
                varint(p, 8, NO_RECORDED_VALUE);
            }
        });
        true
    }
}

/// A resource's attributes, as the Collector's `CreateResource` writes them.
fn resource_attributes(resource: &Resource, scheme: &str, out: &mut Vec<u8>) {
    let (host, port) = split_host_port(&resource.instance);
    key_value(out, 1, "service.name", &resource.job);
    if discernible_host(host) {
        key_value(out, 1, "server.address", host);
    }
    key_value(out, 1, "service.instance.id", &resource.instance);
    key_value(out, 1, "server.port", port);
    key_value(out, 1, "url.scheme", scheme);
    for (k, v) in &resource.extra {
        key_value(out, 1, k, v);
    }
}

/// Float seconds as Unix nanoseconds, whole seconds and fraction apart (as the Collector
/// converts `_created`); 0 for anything not positive and finite.
fn seconds_to_ns(seconds: f64) -> u64 {
    if !(seconds > 0.0 && seconds < 1.8e10) {
        return 0;
    }
    let whole = seconds.trunc();
    (whole as u64) * 1_000_000_000 + ((seconds - whole) * 1e9) as u64
}

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

/// Merges the target's labels into a sample's (Prometheus's `mutateSampleLabels`), sorted by
/// name. Empty values are still there (the caller drops them after the duplicate check).
fn merge_labels<'x>(
    target: &'x ScrapeTarget,
    exposed: &[Label<'x>],
    out: &mut Vec<(Cow<'x, str>, Cow<'x, str>)>,
) {
    out.clear();
    out.extend(exposed.iter().map(|l| (l.name.clone(), l.value.clone())));
    for (name, value) in &target.labels {
        let existing = out.iter().position(|(n, _)| n == name);
        match existing {
            Some(i) if target.honor_labels => {
                if out[i].1.is_empty() {
                    out[i].1 = Cow::Borrowed(value);
                }
            }
            None => out.push((Cow::Borrowed(name), Cow::Borrowed(value))),
            Some(i) => {
                // The exposed label moves to exported_NAME (exported_exported_NAME, ... when
                // taken), the target's takes its place.
                let exposed_value = std::mem::replace(&mut out[i].1, Cow::Borrowed(value));
                if !exposed_value.is_empty() {
                    let mut renamed = format!("exported_{name}");
                    while out.iter().any(|(n, _)| *n == renamed) {
                        renamed.insert_str(0, "exported_");
                    }
                    out.push((Cow::Owned(renamed), exposed_value));
                }
            }
        }
    }
    // Exposition is usually sorted already: insertion sort is linear then.
    for i in 1..out.len() {
        let mut j = i;
        while j > 0 && out[j - 1].0 > out[j].0 {
            out.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// The family of a sample named `name`, its type and the sample's role in it (see the module
/// docs); `None` for a line that fits no family (e.g. a `_created` for a gauge).
fn resolve<'n>(
    name: &'n str,
    meta: &HashMap<&str, Meta<'_>>,
    flavor: Flavor,
) -> Option<(Cow<'n, str>, MetricKind, Role)> {
    let kind_of = |family: &str| meta.get(family).and_then(|m| m.kind);
    if let Some(kind) = kind_of(name) {
        let role = match kind {
            MetricKind::Summary => Role::Quantile,
            MetricKind::Histogram | MetricKind::GaugeHistogram => Role::Bucket,
            _ => Role::Value,
        };
        return Some((Cow::Borrowed(name), kind, role));
    }
    let om = flavor == Flavor::OpenMetrics;
    for (suffix, role) in [
        ("_bucket", Role::Bucket),
        ("_count", Role::Count),
        ("_sum", Role::Sum),
        ("_gcount", Role::Count),
        ("_gsum", Role::Sum),
        ("_total", Role::Value),
        ("_created", Role::Created),
        ("_info", Role::Value),
    ] {
        let Some(base) = name.strip_suffix(suffix).filter(|b| !b.is_empty()) else {
            continue;
        };
        let Some(kind) = kind_of(base) else {
            continue;
        };
        use MetricKind::*;
        let fits = match (suffix, kind) {
            ("_bucket", Histogram | GaugeHistogram) => true,
            ("_count" | "_sum", Histogram | Summary) => true,
            ("_gcount" | "_gsum", GaugeHistogram) => true,
            ("_total", Counter) => true,
            ("_created", Counter | Histogram | Summary | GaugeHistogram) => om,
            ("_info", Info) => true,
            _ => false,
        };
        if !fits {
            continue;
        }
        let family = match (suffix, kind) {
            // Counters keep `_total` in their OTLP name, as the Collector does.
            ("_total", _) => Cow::Borrowed(name),
            ("_created", Counter) => Cow::Owned(format!("{base}_total")),
            _ => Cow::Borrowed(base),
        };
        return Some((family, kind, role));
    }
    Some((Cow::Borrowed(name), MetricKind::Unknown, Role::Value))
}

/// `host` and `port` of an instance (`host:port`, `[v6]:port`); the whole instance and `""`
/// when it has no port (Go's `net.SplitHostPort` failing).
fn split_host_port(instance: &str) -> (&str, &str) {
    if let Some(rest) = instance.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            return (host, port);
        }
        return (instance, "");
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port),
        _ => (instance, ""),
    }
}

/// Whether `host` identifies a machine (not loopback, unspecified or `localhost`), the
/// Collector's condition for `server.address`.
fn discernible_host(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Err(_) => host != "localhost",
    }
}

/// A Prometheus unit word as OTLP's UCUM unit (`seconds` → `s`, `bytes_per_second` → `By/s`,
/// `ratio` → `1`); unknown words stay as they are.
pub fn unit_to_ucum(unit: &str) -> String {
    fn word(w: &str) -> &str {
        match w {
            "days" => "d",
            "hours" => "h",
            "minutes" => "min",
            "seconds" => "s",
            "milliseconds" => "ms",
            "microseconds" => "us",
            "nanoseconds" => "ns",
            "bytes" => "By",
            "kibibytes" => "KiBy",
            "mebibytes" => "MiBy",
            "gibibytes" => "GiBy",
            "tibibytes" => "TiBy",
            "kilobytes" => "KBy",
            "megabytes" => "MBy",
            "gigabytes" => "GBy",
            "terabytes" => "TBy",
            "meters" => "m",
            "volts" => "V",
            "amperes" => "A",
            "joules" => "J",
            "watts" => "W",
            "grams" => "g",
            "celsius" => "Cel",
            "hertz" => "Hz",
            "percent" => "%",
            "ratio" => "1",
            other => other,
        }
    }
    fn per(w: &str) -> &str {
        match w {
            "second" => "s",
            "minute" => "m",
            "hour" => "h",
            "day" => "d",
            "week" => "w",
            "month" => "mo",
            "year" => "y",
            other => other,
        }
    }
    match unit.split_once("_per_") {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => format!("{}/{}", word(a), per(b)),
        _ => word(unit).to_string(),
    }
}

/// An OTLP `Exemplar` (without its field key): `trace_id` / `span_id` labels of the right
/// width and not all zero become the ids, every other label a filtered attribute.
fn encode_exemplar(body: &mut Vec<u8>, point: ExemplarPoint, labels: &[Label<'_>], time_ms: i64) {
    for l in labels {
        if l.value.is_empty() {
            continue;
        }
        let id_len = match l.name.to_ascii_lowercase().as_str() {
            "trace_id" => 16,
            "span_id" => 8,
            _ => 0,
        };
        if id_len > 0 {
            if let Some(id) = hex_id(&l.value, id_len) {
                bytes_field(body, if id_len == 16 { 5 } else { 4 }, &id);
                continue;
            }
        }
        key_value(body, 7, &l.name, &l.value);
    }
    fixed64(body, 2, ms_to_ns(point.timestamp_ms.unwrap_or(time_ms)));
    double(body, 3, point.value);
}

fn hex_id(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != len * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let id: Option<Vec<u8>> = (0..len)
        .map(|i| Some(digit(bytes[2 * i])? << 4 | digit(bytes[2 * i + 1])?))
        .collect();
    id.filter(|id| id.iter().any(|&b| b != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use crate::proto::common::v1::{any_value, KeyValue};
    use crate::proto::metrics::v1::{metric, Metric};
    use prost::Message;

    const T0: i64 = 1_700_000_000_000;

    fn target() -> ScrapeTarget {
        ScrapeTarget {
            job: "node".into(),
            instance: "10.1.2.3:9100".into(),
            scheme: "http".into(),
            labels: vec![
                ("env".into(), "prod".into()),
                ("instance".into(), "10.1.2.3:9100".into()),
                ("job".into(), "node".into()),
            ],
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
        }
    }

    struct Scraper {
        target: ScrapeTarget,
        builder: ScrapeBuilder,
        table: SeriesTable,
    }

    impl Scraper {
        fn new(target: ScrapeTarget) -> Self {
            Scraper {
                target,
                builder: ScrapeBuilder::default(),
                table: SeriesTable::default(),
            }
        }

        /// One scrape of `body` at `time`; `None` body: a failed scrape.
        fn scrape(
            &mut self,
            body: Option<&str>,
            flavor: Flavor,
            time: i64,
        ) -> ExportMetricsServiceRequest {
            let format = ScrapeFormat::Text(flavor);
            let ok = match body {
                Some(b) => self
                    .builder
                    .gather(&self.target, b.as_bytes(), format, time)
                    .map(|_| b),
                None => Err(ScrapeError::SampleLimit { limit: 0 }),
            };
            let up = ok.is_ok();
            let stats = self.builder.commit(
                &self.target,
                &mut self.table,
                time,
                ok.ok()
                    .map(|b| (Bytes::copy_from_slice(b.as_bytes()), format)),
            );
            let report = ScrapeReport {
                up,
                series_added: stats.series_added,
                ..Default::default()
            };
            self.builder.report(&self.target, time, &report);
            let mut out = Vec::new();
            self.builder.encode(&self.target, "9.9.9", &mut out);
            ExportMetricsServiceRequest::decode(&out[..]).expect("valid OTLP")
        }
    }

    fn metrics(req: &ExportMetricsServiceRequest) -> Vec<&Metric> {
        req.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .collect()
    }

    fn metric<'r>(req: &'r ExportMetricsServiceRequest, name: &str) -> &'r Metric {
        metrics(req)
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}: {:?}", names(req)))
    }

    fn names(req: &ExportMetricsServiceRequest) -> Vec<&str> {
        metrics(req).iter().map(|m| m.name.as_str()).collect()
    }

    fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TEXT: &str = "# HELP http_requests_total Requests.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027\n\
http_requests_total{code=\"400\",method=\"post\"} 3\n\
# TYPE temp gauge\n\
temp 21.5\n\
untyped_thing{x=\"\"} 4\n\
# TYPE lat histogram\n\
lat_bucket{le=\"0.1\"} 2\n\
lat_bucket{le=\"1\"} 5\n\
lat_bucket{le=\"+Inf\"} 6\n\
lat_sum 3.5\n\
lat_count 6\n\
# TYPE rpc summary\n\
rpc{quantile=\"0.5\"} 0.2\n\
rpc{quantile=\"0.99\"} 0.9\n\
rpc_sum 10\n\
rpc_count 40\n";

    #[test]
    fn prometheus_text_types_become_otlp_metrics() {
        let mut s = Scraper::new(target());
        let req = s.scrape(Some(TEXT), Flavor::Prometheus, T0);
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        assert_eq!(
            attrs(&rm.resource.as_ref().unwrap().attributes),
            kv(&[
                ("service.name", "node"),
                ("server.address", "10.1.2.3"),
                ("service.instance.id", "10.1.2.3:9100"),
                ("server.port", "9100"),
                ("url.scheme", "http"),
            ])
        );
        let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            (super::super::SCOPE_NAME, "9.9.9")
        );
        assert_eq!(
            names(&req),
            [
                "http_requests_total",
                "temp",
                "untyped_thing",
                "lat",
                "rpc",
                "up",
                "scrape_duration_seconds",
                "scrape_samples_scraped",
                "scrape_samples_post_metric_relabeling",
                "scrape_series_added"
            ]
        );
        let counter = metric(&req, "http_requests_total");
        assert_eq!(counter.description, "Requests.");
        assert_eq!(
            attrs(&counter.metadata),
            kv(&[("prometheus.type", "counter")])
        );
        let Some(metric::Data::Sum(sum)) = &counter.data else {
            panic!()
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 2);
        assert_eq!(sum.data_points.len(), 2);
        let p = &sum.data_points[1];
        // Sorted by name, the target's static label merged in, job and instance left out.
        assert_eq!(
            attrs(&p.attributes),
            kv(&[("code", "400"), ("env", "prod"), ("method", "post")])
        );
        assert_eq!(p.time_unix_nano, T0 as u64 * 1_000_000);
        assert_eq!(
            p.start_time_unix_nano, p.time_unix_nano,
            "first point: a true reset point"
        );

        let Some(metric::Data::Gauge(g)) = &metric(&req, "untyped_thing").data else {
            panic!()
        };
        assert_eq!(
            attrs(&g.data_points[0].attributes),
            kv(&[("env", "prod")]),
            "empty label dropped"
        );
        assert_eq!(g.data_points[0].start_time_unix_nano, 0);
        assert_eq!(
            attrs(&metric(&req, "untyped_thing").metadata),
            kv(&[("prometheus.type", "unknown")])
        );

        let Some(metric::Data::Histogram(h)) = &metric(&req, "lat").data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!((p.count, p.sum), (6, Some(3.5)));
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [2, 3, 1]);

        let Some(metric::Data::Summary(sm)) = &metric(&req, "rpc").data else {
            panic!()
        };
        let p = &sm.data_points[0];
        assert_eq!((p.count, p.sum), (40, 10.0));
        let q: Vec<(f64, f64)> = p
            .quantile_values
            .iter()
            .map(|q| (q.quantile, q.value))
            .collect();
        assert_eq!(q, [(0.5, 0.2), (0.99, 0.9)]);

        let Some(metric::Data::Gauge(up)) = &metric(&req, "up").data else {
            panic!()
        };
        assert_eq!(
            up.data_points[0].value,
            Some(crate::proto::metrics::v1::number_data_point::Value::AsDouble(1.0))
        );
        assert_eq!(metric(&req, "scrape_duration_seconds").unit, "s");
        let Some(metric::Data::Gauge(added)) = &metric(&req, "scrape_series_added").data else {
            panic!()
        };
        assert_eq!(
            added.data_points[0].value,
            Some(crate::proto::metrics::v1::number_data_point::Value::AsDouble(13.0))
        );
    }

    fn sum_points(
        req: &ExportMetricsServiceRequest,
        name: &str,
    ) -> Vec<(u64, u64, Option<f64>, u32)> {
        let Some(metric::Data::Sum(sum)) = &metric(req, name).data else {
            panic!()
        };
        sum.data_points
            .iter()
            .map(|p| {
                let v = match p.value {
                    Some(crate::proto::metrics::v1::number_data_point::Value::AsDouble(v)) => {
                        Some(v)
                    }
                    _ => None,
                };
                (p.start_time_unix_nano, p.time_unix_nano, v, p.flags)
            })
            .collect()
    }

    #[test]
    fn start_times_follow_true_reset_points() {
        let mut s = Scraper::new(target());
        let ns = |ms: i64| ms as u64 * 1_000_000;
        let body = |v: u32| format!("# TYPE c_total counter\nc_total {v}\n");
        let r1 = s.scrape(Some(&body(10)), Flavor::Prometheus, T0);
        assert_eq!(
            sum_points(&r1, "c_total"),
            [(ns(T0), ns(T0), Some(10.0), 0)]
        );
        let r2 = s.scrape(Some(&body(15)), Flavor::Prometheus, T0 + 15_000);
        assert_eq!(
            sum_points(&r2, "c_total"),
            [(ns(T0), ns(T0 + 15_000), Some(15.0), 0)]
        );
        // The counter went down: a reset, starting 1 ms before this point.
        let r3 = s.scrape(Some(&body(2)), Flavor::Prometheus, T0 + 30_000);
        assert_eq!(
            sum_points(&r3, "c_total"),
            [(ns(T0 + 29_999), ns(T0 + 30_000), Some(2.0), 0)]
        );
        let r4 = s.scrape(Some(&body(3)), Flavor::Prometheus, T0 + 45_000);
        assert_eq!(sum_points(&r4, "c_total")[0].0, ns(T0 + 29_999));
    }

    #[test]
    fn openmetrics_created_exemplars_units_info_and_dropped_types() {
        let body = "# TYPE foo counter\n\
# UNIT foo seconds\n\
# HELP foo Foo time.\n\
foo_total{a=\"b\"} 17.0 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\",user=\"x\"} 0.67 1700000000.5\n\
foo_created{a=\"b\"} 1600000000.25\n\
# TYPE build info\n\
build_info{version=\"1.2\"} 1\n\
# TYPE queue gaugehistogram\n\
queue_bucket{le=\"+Inf\"} 3\n\
queue_gcount 3\n\
queue_gsum 1\n\
# TYPE h histogram\n\
h_bucket{le=\"1\"} 1 # {trace_id=\"zz\"} 0.5\n\
h_bucket{le=\"+Inf\"} 2\n\
h_count 2\n\
h_sum 1.5\n\
h_created 1600000001\n\
# EOF\n";
        let mut s = Scraper::new(target());
        let req = s.scrape(Some(body), Flavor::OpenMetrics, T0);
        assert!(
            !names(&req).contains(&"queue"),
            "gauge histograms are dropped"
        );
        let foo = metric(&req, "foo_total");
        assert_eq!(
            (foo.unit.as_str(), foo.description.as_str()),
            ("s", "Foo time.")
        );
        let Some(metric::Data::Sum(sum)) = &foo.data else {
            panic!()
        };
        let p = &sum.data_points[0];
        assert_eq!(p.start_time_unix_nano, 1_600_000_000_250_000_000);
        let e = &p.exemplars[0];
        assert_eq!(
            e.trace_id,
            hex_id("4bf92f3577b34da6a3ce929d0e0e4736", 16).unwrap()
        );
        assert_eq!(e.span_id, hex_id("00f067aa0ba902b7", 8).unwrap());
        assert_eq!(attrs(&e.filtered_attributes), kv(&[("user", "x")]));
        assert_eq!(e.time_unix_nano, 1_700_000_000_500_000_000);
        let info = metric(&req, "build");
        let Some(metric::Data::Sum(info_sum)) = &info.data else {
            panic!()
        };
        assert!(!info_sum.is_monotonic);
        let Some(metric::Data::Histogram(h)) = &metric(&req, "h").data else {
            panic!()
        };
        let hp = &h.data_points[0];
        assert_eq!(hp.start_time_unix_nano, 1_600_000_001_000_000_000);
        // An id that is not 32 hex digits stays an attribute; no timestamp: the scrape's.
        assert_eq!(
            attrs(&hp.exemplars[0].filtered_attributes),
            kv(&[("trace_id", "zz")])
        );
        assert_eq!(hp.exemplars[0].time_unix_nano, T0 as u64 * 1_000_000);
    }

    #[test]
    fn disappearing_series_get_stale_points() {
        let mut s = Scraper::new(target());
        let both = "# TYPE c counter\nc{k=\"a\"} 1\nc{k=\"b\"} 2\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\nts_only 1 1600000000000\n";
        s.scrape(Some(both), Flavor::Prometheus, T0);
        let req = s.scrape(
            Some("# TYPE c counter\nc{k=\"a\"} 2\n"),
            Flavor::Prometheus,
            T0 + 1000,
        );
        let points = sum_points(&req, "c");
        assert_eq!(points.len(), 2);
        assert_eq!(
            points[0],
            (
                T0 as u64 * 1_000_000,
                (T0 + 1000) as u64 * 1_000_000,
                Some(2.0),
                0
            )
        );
        // k="b": no value, the NoRecordedValue flag, its start time kept.
        assert_eq!(
            points[1],
            (
                T0 as u64 * 1_000_000,
                (T0 + 1000) as u64 * 1_000_000,
                None,
                1
            )
        );
        let Some(metric::Data::Histogram(h)) = &metric(&req, "h").data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!((p.flags, p.count, p.sum), (1, 0, None));
        assert_eq!(p.explicit_bounds, [1.0]);
        assert_eq!(p.bucket_counts, [0, 0]);
        // A series with its own timestamp is not marked stale (as in Prometheus).
        assert!(!names(&req).contains(&"ts_only"));
        // Stale once only.
        let again = s.scrape(
            Some("# TYPE c counter\nc{k=\"a\"} 3\n"),
            Flavor::Prometheus,
            T0 + 2000,
        );
        assert_eq!(sum_points(&again, "c").len(), 1);
    }

    #[test]
    fn a_failed_scrape_marks_everything_stale_and_reports_down() {
        let mut s = Scraper::new(target());
        s.scrape(Some("a 1\nb 2\n"), Flavor::Prometheus, T0);
        let req = s.scrape(None, Flavor::Prometheus, T0 + 1000);
        let stale: Vec<u32> = ["a", "b"]
            .iter()
            .map(|n| {
                let Some(metric::Data::Gauge(g)) = &metric(&req, n).data else {
                    panic!()
                };
                g.data_points[0].flags
            })
            .collect();
        assert_eq!(stale, [1, 1]);
        let Some(metric::Data::Gauge(up)) = &metric(&req, "up").data else {
            panic!()
        };
        assert_eq!(
            up.data_points[0].value,
            Some(crate::proto::metrics::v1::number_data_point::Value::AsDouble(0.0))
        );
        // The next good scrape starts afresh: nothing stale left to mark.
        let next = s.scrape(Some("a 1\n"), Flavor::Prometheus, T0 + 2000);
        assert!(!names(&next).contains(&"b"));
        // A body that fails half-way changes nothing but marks the series stale.
        let mut s = Scraper::new(target());
        s.scrape(Some("a 1\n"), Flavor::Prometheus, T0);
        assert!(s
            .builder
            .gather(
                &s.target,
                b"a 2\nb{ 3\n",
                ScrapeFormat::Text(Flavor::Prometheus),
                T0 + 1000
            )
            .is_err());
        let st = s.builder.commit(&s.target, &mut s.table, T0 + 1000, None);
        assert_eq!(st.stale_points, 1);
    }

    #[test]
    fn honor_labels_and_exported_labels() {
        let body = "m{job=\"pushed\",instance=\"x:1\",env=\"dev\"} 1\n";
        let mut s = Scraper::new(target());
        let req = s.scrape(Some(body), Flavor::Prometheus, T0);
        let Some(metric::Data::Gauge(g)) = &metric(&req, "m").data else {
            panic!()
        };
        assert_eq!(
            attrs(&g.data_points[0].attributes),
            kv(&[
                ("env", "prod"),
                ("exported_env", "dev"),
                ("exported_instance", "x:1"),
                ("exported_job", "pushed")
            ])
        );
        let mut honor = target();
        honor.honor_labels = true;
        let mut s = Scraper::new(honor);
        let req = s.scrape(Some(body), Flavor::Prometheus, T0);
        // The exposed job and instance make a resource of their own; the report stays with the target.
        assert_eq!(req.resource_metrics.len(), 2);
        let r = attrs(
            &req.resource_metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes,
        );
        assert_eq!(r[0], ("service.name".to_string(), "pushed".to_string()));
        assert!(
            !r.iter().any(|(k, _)| k == "server.address")
                || r.contains(&("server.address".into(), "x".into()))
        );
        let Some(metric::Data::Gauge(g)) = &metric(&req, "m").data else {
            panic!()
        };
        assert_eq!(attrs(&g.data_points[0].attributes), kv(&[("env", "dev")]));
    }

    #[test]
    fn limits_and_invalid_samples() {
        let mut limited = target();
        limited.sample_limit = 2;
        let mut b = ScrapeBuilder::default();
        let text = ScrapeFormat::Text(Flavor::Prometheus);
        assert_eq!(
            b.gather(&limited, b"a 1\nb 1\nc 1\n", text, T0),
            Err(ScrapeError::SampleLimit { limit: 2 })
        );
        assert!(b.gather(&limited, b"a 1\nb 1\n", text, T0).is_ok());
        assert_eq!(
            b.gather(&target(), b"a{x=\"1\",x=\"2\"} 1\n", text, T0),
            Err(ScrapeError::DuplicateLabel { line: 1 })
        );
        // Decreasing buckets and a histogram without _count make no point (as the Collector).
        let mut s = Scraper::new(target());
        let req = s.scrape(
            Some("# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\nh_count 5\n# TYPE g histogram\ng_bucket{le=\"1\"} 1\n"),
            Flavor::Prometheus,
            T0,
        );
        assert!(!names(&req).contains(&"h") && !names(&req).contains(&"g"));
        // Bounds that are not finite and strictly increasing make no point either (they made
        // invalid OTLP: +Inf not last, NaN or a repeated bound in explicit_bounds).
        for buckets in [
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"NaN\"} 1\nh_bucket{le=\"+Inf\"} 1\n",
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\n",
        ] {
            let mut s = Scraper::new(target());
            let text =
                format!("# TYPE h histogram\n{buckets}h_count 1\nh_sum 1\n# TYPE ok gauge\nok 1\n");
            let req = s.scrape(Some(&text), Flavor::Prometheus, T0);
            assert!(
                !names(&req).contains(&"h") && names(&req).contains(&"ok"),
                "{buckets}"
            );
        }
    }

    #[test]
    fn target_info_becomes_resource_attributes() {
        let mut s = Scraper::new(target());
        let req = s.scrape(
            Some("target_info{region=\"eu\"} 1\nx 1\n"),
            Flavor::Prometheus,
            T0,
        );
        let r = attrs(
            &req.resource_metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes,
        );
        assert!(
            r.contains(&("region".to_string(), "eu".to_string())),
            "{r:?}"
        );
        assert!(!names(&req).contains(&"target_info"));
    }

    #[test]
    fn units_and_hosts() {
        assert_eq!(unit_to_ucum("seconds"), "s");
        assert_eq!(unit_to_ucum("bytes_per_second"), "By/s");
        assert_eq!(unit_to_ucum("ratio"), "1");
        assert_eq!(unit_to_ucum("widgets"), "widgets");
        assert_eq!(split_host_port("[::1]:9100"), ("::1", "9100"));
        assert_eq!(split_host_port("host"), ("host", ""));
        assert!(
            !discernible_host("127.0.0.1")
                && !discernible_host("localhost")
                && !discernible_host("0.0.0.0")
        );
        assert!(discernible_host("node-1"));
    }
}
