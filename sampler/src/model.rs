//! Model test: random span arrivals (pieces of traces, late spans, bound overflows, ticks,
//! shutdown) fed to a [`Sampler`] and to a simple reference sampler built on `BTreeMap`s that
//! re-evaluates every policy from the generated spans at decision time and recomputes the
//! memory charge from scratch, compactions included. After every operation both must have
//! output exactly the same spans (by span id), counted the same, and held the same memory
//! charge; every trace must be accounted for; the sampler must also respect its bounds, never
//! output a span twice, and give the same results when run again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shardtel_config::{
    BufferCompression, DecisionCacheConfig, OnShutdown, Percentage, PolicyKind, StatusCode,
    TailSamplingConfig,
};
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::TraceId;

use super::compact::compact;
use super::compress::compressed_overhead;
use super::held::HeldBatch;
use super::table::{batch_cost_of, batch_overhead, span_field_len, trace_cost, BatchCost};
use super::testing::{batch_of, kv, policy, span, trace_id, ResourceSpec, SpanSpec};
use super::{probabilistic_hash, CoreShare, DecisionReason, Kept, Sampler};

const MS: u64 = 1_000_000;
const RATE: u64 = 3;
const SLOW_MS: u64 = 800;

#[derive(Clone, Debug)]
struct SpanGen {
    trace: u64,
    root: bool,
    status: i32,
    vip: bool,
    retry: bool,
    code: Option<i64>,
    dev: bool,
    trace_state: bool,
    start_ms: u64,
    duration_ms: u64,
    pad: usize,
}

#[derive(Clone, Debug)]
enum Op {
    Add { dt_ms: u64, spans: Vec<SpanGen> },
    Tick { dt_ms: u64 },
}

#[derive(Clone, Debug)]
struct Setup {
    max_traces: usize,
    max_spans: u32,
    max_bytes_per_trace: u64,
    max_bytes: u64,
    cache_sampled: usize,
    cache_not_sampled: usize,
    wait_ms: u64,
    after_root_ms: Option<u64>,
    drop_on_shutdown: bool,
    /// `buffer_compression = "lz4"` (set by the test, not drawn).
    compress: bool,
}

fn span_gen() -> impl Strategy<Value = SpanGen> {
    (
        (
            0u64..12,
            prop::bool::weighted(0.3),
            prop::sample::select(vec![0, 0, 0, 0, 0, 0, 1, 2]),
        ),
        (prop::bool::weighted(0.05), prop::bool::weighted(0.1)),
        prop::option::weighted(
            0.8,
            prop::sample::select(vec![200i64, 200, 200, 200, 404, 503]),
        ),
        (prop::bool::weighted(0.3), prop::bool::weighted(0.05)),
        (1u64..600, 0u64..700, 0usize..60),
    )
        .prop_map(
            |(
                (trace, root, status),
                (vip, retry),
                code,
                (dev, trace_state),
                (start_ms, duration_ms, pad),
            )| SpanGen {
                trace,
                root,
                status,
                vip,
                retry,
                code,
                dev,
                trace_state,
                start_ms,
                duration_ms,
                pad,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..400, prop::collection::vec(span_gen(), 1..8))
            .prop_map(|(dt_ms, spans)| Op::Add { dt_ms, spans }),
        1 => (0u64..1500).prop_map(|dt_ms| Op::Tick { dt_ms }),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        (1usize..6, 1u32..7),
        prop::sample::select(vec![60u64, 150, 400, 1 << 20]),
        prop::sample::select(vec![1500u64, 3000, 6000, 20_000, 1 << 40]),
        (0usize..4, 0usize..4),
        (200u64..3000, prop::option::of(0u64..1500)),
        any::<bool>(),
    )
        .prop_map(
            |(
                (max_traces, max_spans),
                max_bytes_per_trace,
                max_bytes,
                (cache_sampled, cache_not_sampled),
                (wait_ms, after_root_ms),
                drop_on_shutdown,
            )| Setup {
                max_traces,
                max_spans,
                max_bytes_per_trace,
                max_bytes,
                cache_sampled,
                cache_not_sampled,
                wait_ms,
                after_root_ms,
                drop_on_shutdown,
                compress: false,
            },
        )
}

fn string_policy(key: &str, values: &[&str], regex: bool) -> PolicyKind {
    PolicyKind::StringAttribute {
        key: key.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
        enabled_regex_matching: regex,
        invert: false,
    }
}

/// The policies under test, one of each kind except composite (unit-tested on its own).
fn sampler_config(s: &Setup) -> TailSamplingConfig {
    let mut c = TailSamplingConfig::new(vec![
        policy(
            "errors",
            PolicyKind::StatusCode {
                status_codes: vec![StatusCode::Error],
                invert: false,
            },
        ),
        policy(
            "slow",
            PolicyKind::Latency {
                threshold: Duration::from_millis(SLOW_MS),
                upper_threshold: None,
                invert: false,
            },
        ),
        policy("vip", string_policy("user.id", &["vip"], false)),
        policy(
            "no-status-code",
            PolicyKind::NumericAttribute {
                key: "http.status_code".into(),
                min_value: Some(0),
                max_value: Some(600),
                invert: true,
            },
        ),
        policy(
            "baseline",
            PolicyKind::Probabilistic {
                sampling_percentage: Percentage::new(20.0).unwrap(),
                hash_salt: "m".into(),
            },
        ),
        policy(
            "vendor",
            PolicyKind::TraceState {
                key: "vendor".into(),
                values: vec!["on".into()],
                invert: false,
            },
        ),
        policy(
            "rate",
            PolicyKind::RateLimiting {
                spans_per_second: RATE,
            },
        ),
        policy(
            "drop-dev",
            PolicyKind::Drop {
                policies: vec![
                    policy("dev", string_policy("env", &["^de"], true)),
                    policy(
                        "big",
                        PolicyKind::SpanCount {
                            min_spans: 3,
                            max_spans: None,
                            invert: false,
                        },
                    ),
                ],
            },
        ),
        policy(
            "small-retries",
            PolicyKind::And {
                policies: vec![
                    policy(
                        "retry",
                        PolicyKind::BooleanAttribute {
                            key: "retry".into(),
                            value: true,
                            invert: false,
                        },
                    ),
                    policy(
                        "small",
                        PolicyKind::SpanCount {
                            min_spans: 0,
                            max_spans: Some(2),
                            invert: false,
                        },
                    ),
                ],
            },
        ),
    ]);
    c.decision_wait = Duration::from_millis(s.wait_ms);
    c.decision_wait_after_root = s.after_root_ms.map(Duration::from_millis);
    c.max_traces_per_core = s.max_traces;
    c.max_buffered_bytes_per_core = s.max_bytes;
    c.max_spans_per_trace = s.max_spans;
    c.max_bytes_per_trace = s.max_bytes_per_trace;
    c.decision_cache = DecisionCacheConfig {
        sampled_cache_size: s.cache_sampled,
        non_sampled_cache_size: s.cache_not_sampled,
    };
    c.on_shutdown = if s.drop_on_shutdown {
        OnShutdown::Drop
    } else {
        OnShutdown::Decide
    };
    c.buffer_compression = if s.compress {
        BufferCompression::Lz4
    } else {
        BufferCompression::None
    };
    c
}

fn to_spec(g: &SpanGen, n: u64) -> SpanSpec {
    let mut attrs = Vec::new();
    attrs.push((
        "user.id",
        Value::StringValue(if g.vip { "vip" } else { "u-17" }.into()),
    ));
    if g.retry {
        attrs.push(("retry", Value::BoolValue(true)));
    }
    if let Some(code) = g.code {
        attrs.push(("http.status_code", Value::IntValue(code)));
    }
    let mut s = span(g.trace, n)
        .status(g.status)
        .times(g.start_ms * MS, (g.start_ms + g.duration_ms) * MS)
        .with_attrs(attrs)
        .pad(g.pad);
    if g.root {
        s = s.root();
    }
    if g.trace_state {
        s = s.trace_state("a=b,vendor=on");
    }
    s
}

/// Builds the batch for `spans` (prod resource first, then dev) and the spans in batch order,
/// each with its span id.
fn build(
    spans: &[SpanGen],
    next_span: &mut u64,
) -> (shardtel_protocol::scan::SpanBatch, Vec<(SpanGen, u64)>) {
    let env = |v: &str| ResourceSpec {
        attrs: vec![kv("env", Value::StringValue(v.into()))],
    };
    let mut groups = Vec::new();
    let mut order = Vec::new();
    for (dev, name) in [(false, "prod"), (true, "dev")] {
        let group: Vec<SpanGen> = spans.iter().filter(|s| s.dev == dev).cloned().collect();
        if group.is_empty() {
            continue;
        }
        let mut specs = Vec::new();
        for g in group {
            *next_span += 1;
            specs.push(to_spec(&g, *next_span));
            order.push((g, *next_span));
        }
        groups.push((env(name), specs));
    }
    (batch_of(&groups), order)
}

// ---------------------------------------------------------------------------------------
// The reference sampler.

struct ModelSpan {
    /// The model batch it is in now, and its position there.
    batch: usize,
    index: u32,
    id: u64,
    len: u64,
    span: SpanGen,
}

struct ModelTrace {
    id: TraceId,
    first_seen: u64,
    /// (arrival, order among root arrivals).
    root: Option<(u64, u64)>,
    spans: Vec<ModelSpan>,
}

impl ModelTrace {
    fn bytes(&self) -> u64 {
        self.spans.iter().map(|s| s.len).sum()
    }
}

/// What a span's batch knows about it: its resource and scope (keys distinct within the batch)
/// with their header fields (count, bytes), and its encoded field size.
#[derive(Clone, Copy)]
struct SpanPlace {
    resource: u32,
    resource_headers: (usize, u64),
    scope: u32,
    scope_headers: (usize, u64),
    field_len: u64,
}

/// A received or compacted batch.
struct ModelBatch {
    cost: BatchCost,
    places: Vec<SpanPlace>,
    queued: bool,
    /// With compression: the batch's spans uncompressed (the request as received, or the
    /// spans a compaction copied).
    plain: Option<HeldBatch>,
}

/// The cost of holding `plain`'s `spans` spans compressed, written out from the rule in
/// `CompressedBatch::cost`'s docs: the LZ4 block of the straggler compaction's layout of the
/// spans exactly, plus an index with `index_spans` span entries (the batch's whole index when
/// compressed as it is added) and `plain`'s resources, scopes and header ranges.
fn lz4_cost(plain: &HeldBatch, spans: u32, index_spans: usize) -> BatchCost {
    let block = crate::compress::block_len(&plain.buf) as u64;
    BatchCost {
        buf: block,
        own: block,
        own_spans_bytes: block,
        own_spans: spans,
        overhead: compressed_overhead(
            plain.index.resources.len(),
            plain.index.scopes.len(),
            index_spans,
            plain.index.headers.len(),
        ),
    }
}

impl ModelBatch {
    /// Written out from the rule in `BatchCost::is_sparse`'s docs, not by calling it.
    fn sparse(&self, live: u32) -> bool {
        let c = &self.cost;
        let part = c.own.max(c.buf.div_ceil(4)).min(c.buf);
        live > 0
            && live < c.own_spans
            && u128::from(live) * u128::from(c.own_spans_bytes) * 4
                < u128::from(part) * u128::from(c.own_spans)
    }
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Counts {
    decisions: [u64; 7],
    traces_received: u64,
    spans_received: u64,
    traces_sampled: u64,
    traces_not_sampled: u64,
    spans_sampled: u64,
    spans_not_sampled: u64,
    late_forwarded: u64,
    late_dropped: u64,
    shutdown_traces: u64,
    shutdown_spans: u64,
    compactions: u64,
    compacted_spans: u64,
    compacted_bytes: u64,
    votes: Vec<[u64; 3]>,
}

struct Model {
    setup: Setup,
    pending: BTreeMap<u64, ModelTrace>,
    by_id: BTreeMap<TraceId, u64>,
    next_seq: u64,
    next_root: u64,
    cache_sampled: VecDeque<TraceId>,
    cache_not_sampled: VecDeque<TraceId>,
    batches: Vec<ModelBatch>,
    /// Batches queued for compaction, with the time they became sparse.
    sparse: VecDeque<(usize, u64)>,
    rate_window: u64,
    rate_used: u64,
    now: u64,
    counts: Counts,
    /// Span ids output by the current operation.
    out: Vec<u64>,
}

impl Model {
    fn new(setup: Setup) -> Model {
        Model {
            setup,
            pending: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next_seq: 0,
            next_root: 0,
            cache_sampled: VecDeque::new(),
            cache_not_sampled: VecDeque::new(),
            batches: Vec::new(),
            sparse: VecDeque::new(),
            rate_window: 0,
            rate_used: 0,
            now: 0,
            counts: Counts {
                votes: vec![[0; 3]; 9],
                ..Counts::default()
            },
            out: Vec::new(),
        }
    }

    /// Buffered spans per batch, recomputed from the pending traces.
    fn live(&self) -> BTreeMap<usize, u32> {
        let mut live = BTreeMap::new();
        for s in self.pending.values().flat_map(|t| &t.spans) {
            *live.entry(s.batch).or_insert(0) += 1;
        }
        live
    }

    /// The charge, recomputed from scratch: each retained batch's part and overhead, plus the
    /// trace entries.
    fn bytes(&self) -> u64 {
        self.live()
            .keys()
            .map(|b| self.batches[*b].cost.charge())
            .sum::<u64>()
            + self
                .pending
                .values()
                .map(|t| trace_cost(t.spans.len()))
                .sum::<u64>()
    }

    fn cached(&self, id: &TraceId) -> Option<bool> {
        if self.cache_sampled.contains(id) {
            Some(true)
        } else if self.cache_not_sampled.contains(id) {
            Some(false)
        } else {
            None
        }
    }

    fn push(&mut self, seq: u64, span: ModelSpan) {
        let now = self.now;
        let t = self.pending.get_mut(&seq).unwrap();
        if !span.span.root || t.root.is_some() {
            t.spans.push(span);
            return;
        }
        t.root = Some((now, self.next_root));
        self.next_root += 1;
        t.spans.push(span);
    }

    fn add(&mut self, spans: Vec<ModelSpan>) {
        let added = spans.first().map(|s| s.batch);
        self.catch_up();
        for span in spans {
            self.counts.spans_received += 1;
            let id = trace_id(span.span.trace);
            if let Some(&seq) = self.by_id.get(&id) {
                let t = &self.pending[&seq];
                if t.spans.len() + 1 > self.setup.max_spans as usize {
                    self.decide(seq, DecisionReason::MaxSpansPerTrace);
                } else if t.bytes() + span.len > self.setup.max_bytes_per_trace {
                    self.decide(seq, DecisionReason::MaxBytesPerTrace);
                } else {
                    self.push(seq, span);
                    continue;
                }
            }
            match self.cached(&id) {
                Some(true) => {
                    self.counts.late_forwarded += 1;
                    self.out.push(span.id);
                    continue;
                }
                Some(false) => {
                    self.counts.late_dropped += 1;
                    continue;
                }
                None => {}
            }
            if self.pending.len() >= self.setup.max_traces {
                let oldest = *self.pending.keys().next().unwrap();
                self.decide(oldest, DecisionReason::MaxTraces);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.counts.traces_received += 1;
            let too_big = span.len > self.setup.max_bytes_per_trace;
            self.pending.insert(
                seq,
                ModelTrace {
                    id,
                    first_seen: self.now,
                    root: None,
                    spans: Vec::new(),
                },
            );
            self.by_id.insert(id, seq);
            self.push(seq, span);
            if too_big {
                self.decide(seq, DecisionReason::MaxBytesPerTrace);
            }
        }
        if let (true, Some(b)) = (self.setup.compress, added) {
            self.compress_added(b);
        }
        while self.bytes() > self.setup.max_bytes && !self.pending.is_empty() {
            let oldest = *self.pending.keys().next().unwrap();
            self.decide(oldest, DecisionReason::MaxBufferedBytes);
        }
        self.mark_sparse();
    }

    /// The batch just added (`b`) is held compressed: its buffered spans, at their positions.
    fn compress_added(&mut self, b: usize) {
        let mut live: Vec<u32> = self
            .pending
            .values()
            .flat_map(|t| &t.spans)
            .filter(|s| s.batch == b)
            .map(|s| s.index)
            .collect();
        if live.is_empty() {
            return;
        }
        live.sort();
        let batch = &mut self.batches[b];
        let plain = batch.plain.as_ref().expect("plain batch with compression");
        let copy = compact(plain, &live);
        batch.cost = lz4_cost(&copy, live.len() as u32, plain.index.spans.len());
    }

    /// The earliest deadline: timer of the first-arrived trace, or root_done of the trace
    /// whose root arrived first; the timer wins a tie.
    fn next_due(&self) -> Option<(u64, u64, DecisionReason)> {
        let timer = self.pending.iter().next().map(|(seq, t)| {
            (
                t.first_seen + self.setup.wait_ms * MS,
                *seq,
                DecisionReason::Timer,
            )
        });
        let root = self.setup.after_root_ms.and_then(|after| {
            self.pending
                .iter()
                .filter_map(|(seq, t)| t.root.map(|(at, order)| (order, at, *seq)))
                .min()
                .map(|(_, at, seq)| (at + after * MS, seq, DecisionReason::RootDone))
        });
        match (timer, root) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn tick(&mut self) {
        self.catch_up();
        self.mark_sparse();
    }

    /// Due decisions, then compaction of the batches sparse for a quarter of decision_wait.
    fn catch_up(&mut self) {
        while let Some((deadline, seq, reason)) = self.next_due() {
            if deadline > self.now {
                break;
            }
            self.decide(seq, reason);
        }
        // Batches that became sparse in this operation's decisions are queued after it (at
        // the same time), which cannot make them due now.
        self.mark_sparse();
        let grace = self.setup.wait_ms * MS / 4;
        while let Some(&(b, since)) = self.sparse.front() {
            if since + grace > self.now {
                break;
            }
            self.sparse.pop_front();
            if self.live().contains_key(&b) {
                self.compact(b);
            }
        }
    }

    /// Queues every batch that is sparse now and was not queued before.
    fn mark_sparse(&mut self) {
        for (b, live) in self.live() {
            let batch = &mut self.batches[b];
            if !batch.queued && batch.sparse(live) {
                batch.queued = true;
                self.sparse.push_back((b, self.now));
            }
        }
    }

    /// Moves batch `b`'s buffered spans, in batch order, into a new batch.
    fn compact(&mut self, b: usize) {
        let mut live: Vec<(u32, u64, usize)> = Vec::new();
        for (seq, t) in &self.pending {
            for (k, s) in t.spans.iter().enumerate() {
                if s.batch == b {
                    live.push((s.index, *seq, k));
                }
            }
        }
        live.sort();
        let new = self.batches.len();
        let mut places = Vec::new();
        let (mut resources, mut scopes, mut headers, mut buf, mut spans_bytes) = (0, 0, 0, 0, 0);
        let (mut last_resource, mut last_scope) = (None, None);
        for (i, &(index, seq, k)) in live.iter().enumerate() {
            let p = self.batches[b].places[index as usize];
            if last_scope != Some(p.scope) {
                if last_resource != Some(p.resource) {
                    resources += 1;
                    headers += p.resource_headers.0;
                    buf += p.resource_headers.1;
                    last_resource = Some(p.resource);
                }
                scopes += 1;
                headers += p.scope_headers.0;
                buf += p.scope_headers.1;
                last_scope = Some(p.scope);
            }
            buf += p.field_len;
            spans_bytes += p.field_len;
            places.push(p);
            let s = &mut self.pending.get_mut(&seq).unwrap().spans[k];
            s.batch = new;
            s.index = i as u32;
        }
        let (cost, plain) = if self.setup.compress {
            let old = self.batches[b].plain.as_ref().expect("plain batch");
            let indices: Vec<u32> = live.iter().map(|l| l.0).collect();
            let copy = compact(old, &indices);
            (lz4_cost(&copy, live.len() as u32, live.len()), Some(copy))
        } else {
            let cost = BatchCost {
                buf,
                own: buf,
                own_spans_bytes: spans_bytes,
                own_spans: live.len() as u32,
                overhead: batch_overhead(resources, scopes, live.len(), headers),
            };
            (cost, None)
        };
        self.batches.push(ModelBatch {
            cost,
            places,
            queued: false,
            plain,
        });
        self.counts.compactions += 1;
        self.counts.compacted_spans += live.len() as u64;
        self.counts.compacted_bytes += buf;
    }

    fn shutdown(&mut self) {
        while let Some(&seq) = self.pending.keys().next() {
            if self.setup.drop_on_shutdown {
                let t = self.pending.remove(&seq).unwrap();
                self.by_id.remove(&t.id);
                self.counts.shutdown_traces += 1;
                self.counts.shutdown_spans += t.spans.len() as u64;
            } else {
                self.decide(seq, DecisionReason::Shutdown);
            }
        }
    }

    /// Every policy re-evaluated from the spans.
    fn votes(&mut self, t: &ModelTrace) -> [u8; 9] {
        let spans: Vec<&SpanGen> = t.spans.iter().map(|s| &s.span).collect();
        let n = spans.len() as u64;
        let start = spans.iter().map(|s| s.start_ms).min().unwrap();
        let end = spans
            .iter()
            .map(|s| s.start_ms + s.duration_ms)
            .max()
            .unwrap();
        let threshold = (0.2f64 * 18_446_744_073_709_551_616.0) as u128;
        let window = self.now / 1_000_000_000;
        if window != self.rate_window {
            self.rate_window = window;
            self.rate_used = 0;
        }
        let rate = if self.rate_used + n <= RATE {
            self.rate_used += n;
            true
        } else {
            false
        };
        let v = |b: bool| u8::from(b);
        [
            v(spans.iter().any(|s| s.status == 2)),
            v(end - start >= SLOW_MS),
            v(spans.iter().any(|s| s.vip)),
            v(!spans.iter().any(|s| s.code.is_some())),
            v(u128::from(probabilistic_hash(&t.id, b"m")) < threshold),
            v(spans.iter().any(|s| s.trace_state)),
            v(rate),
            // drop: 2 means "drop"
            if spans.iter().any(|s| s.dev) && n >= 3 {
                2
            } else {
                0
            },
            v(spans.iter().any(|s| s.retry) && n <= 2),
        ]
    }

    fn decide(&mut self, seq: u64, reason: DecisionReason) {
        let t = self.pending.remove(&seq).unwrap();
        self.by_id.remove(&t.id);
        let votes = self.votes(&t);
        for (i, vote) in votes.iter().enumerate() {
            self.counts.votes[i][*vote as usize] += 1;
        }
        let sampled = votes.contains(&1) && !votes.contains(&2);
        self.counts.decisions[reason.index()] += 1;
        let n = t.spans.len() as u64;
        if sampled {
            self.counts.traces_sampled += 1;
            self.counts.spans_sampled += n;
            self.out.extend(t.spans.iter().map(|s| s.id));
        } else {
            self.counts.traces_not_sampled += 1;
            self.counts.spans_not_sampled += n;
        }
        let (cache, capacity) = if sampled {
            (&mut self.cache_sampled, self.setup.cache_sampled)
        } else {
            (&mut self.cache_not_sampled, self.setup.cache_not_sampled)
        };
        if capacity > 0 {
            if cache.len() == capacity {
                cache.pop_front();
            }
            cache.push_back(t.id);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running both.

/// What one run produced: per operation, the kept span ids in output order.
type Trail = Vec<Vec<u64>>;

fn sampler_counts(s: &Sampler) -> Counts {
    let st = s.stats();
    let mut decisions = [0; 7];
    decisions.copy_from_slice(&st.decisions);
    Counts {
        decisions,
        traces_received: st.traces_received,
        spans_received: st.spans_received,
        traces_sampled: st.traces_sampled,
        traces_not_sampled: st.traces_not_sampled,
        spans_sampled: st.spans_sampled,
        spans_not_sampled: st.spans_not_sampled,
        late_forwarded: st.late_spans_forwarded,
        late_dropped: st.late_spans_dropped,
        shutdown_traces: st.shutdown_dropped_traces,
        shutdown_spans: st.shutdown_dropped_spans,
        compactions: st.compactions,
        compacted_spans: st.compacted_spans,
        compacted_bytes: st.compacted_bytes,
        votes: st
            .policies
            .iter()
            .map(|p| [p.not_sample, p.sample, p.drop])
            .collect(),
    }
}

/// Where each span of `batch` sits: resource, scope, their header fields, its field size.
fn places(batch: &shardtel_protocol::scan::SpanBatch) -> Vec<SpanPlace> {
    let index = &batch.index;
    let headers = |h: &std::ops::Range<u32>| {
        let ranges = &index.headers[h.start as usize..h.end as usize];
        (
            ranges.len(),
            ranges.iter().map(|r| u64::from(r.end - r.start)).sum(),
        )
    };
    index
        .spans
        .iter()
        .map(|e| {
            let scope = &index.scopes[e.scope as usize];
            SpanPlace {
                resource: scope.resource,
                resource_headers: headers(&index.resources[scope.resource as usize].headers),
                scope: e.scope,
                scope_headers: headers(&scope.headers),
                field_len: span_field_len(u64::from(e.range.end - e.range.start)),
            }
        })
        .collect()
}

/// The span id of every kept span, in output order.
fn kept_span_ids(out: &[Kept]) -> Vec<u64> {
    let mut ids = Vec::new();
    for k in out {
        for &i in &k.spans {
            let body = k.batch.span_body(i as usize);
            let view = shardtel_protocol::span::SpanView::new(&body);
            let mut id = [0; 8];
            id.copy_from_slice(view.span_id());
            ids.push(u64::from_be_bytes(id));
        }
    }
    ids
}

/// Sampler statistics summed over the run, for the coverage report.
#[derive(Default)]
struct Coverage {
    runs: u64,
    with_compaction: u64,
    with_bound: u64,
}

thread_local! {
    static COVERAGE: std::cell::RefCell<Coverage> = std::cell::RefCell::new(Coverage::default());
}

fn run(setup: &Setup, ops: &[Op]) -> Result<Trail, TestCaseError> {
    let cfg = sampler_config(setup);
    let mut sampler = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
    let mut model = Model::new(setup.clone());
    let base = Instant::now();
    let mut now_ms = 0;
    let mut out: Vec<Kept> = Vec::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut trail = Trail::new();
    let mut next_span = 0;
    sampler.tick(base, &mut out);
    let steps = ops.iter().map(Some).chain([None]);
    for op in steps {
        out.clear();
        model.out.clear();
        match op {
            Some(Op::Add { dt_ms, spans }) => {
                now_ms += dt_ms;
                model.now = now_ms * MS;
                let (batch, order) = build(spans, &mut next_span);
                let n = model.batches.len();
                model.batches.push(ModelBatch {
                    cost: batch_cost_of(&batch),
                    places: places(&batch),
                    queued: false,
                    plain: setup.compress.then(|| HeldBatch::from(batch.clone())),
                });
                let model_spans = order
                    .into_iter()
                    .zip(&batch.index.spans)
                    .enumerate()
                    .map(|(i, ((span, id), e))| ModelSpan {
                        batch: n,
                        index: i as u32,
                        id,
                        len: u64::from(e.range.end - e.range.start),
                        span,
                    })
                    .collect();
                sampler.add(batch, base + Duration::from_millis(now_ms), &mut out);
                model.add(model_spans);
            }
            Some(Op::Tick { dt_ms }) => {
                now_ms += dt_ms;
                model.now = now_ms * MS;
                sampler.tick(base + Duration::from_millis(now_ms), &mut out);
                model.tick();
            }
            None => {
                now_ms += 1;
                model.now = now_ms * MS;
                sampler.shutdown(base + Duration::from_millis(now_ms), &mut out);
                model.shutdown();
            }
        }
        for k in &out {
            prop_assert!(
                k.spans.windows(2).all(|w| w[0] < w[1]),
                "unsorted {:?}",
                k.spans
            );
        }
        let got = kept_span_ids(&out);
        for id in &got {
            prop_assert!(seen.insert(*id), "span {id} output twice");
        }
        let got_set: BTreeSet<_> = got.iter().copied().collect();
        let want_set: BTreeSet<_> = model.out.iter().copied().collect();
        prop_assert_eq!(&got_set, &want_set, "kept spans after {:?}", op);
        let st = sampler.stats();
        prop_assert_eq!(&sampler_counts(&sampler), &model.counts);
        prop_assert_eq!(st.buffered_traces, model.pending.len() as u64);
        let spans: usize = model.pending.values().map(|t| t.spans.len()).sum();
        prop_assert_eq!(st.buffered_spans, spans as u64);
        prop_assert_eq!(st.buffered_bytes, model.bytes());
        prop_assert_eq!(st.buffered_batches, model.live().len() as u64);
        prop_assert!(st.buffered_traces <= setup.max_traces as u64);
        prop_assert!(st.buffered_bytes <= setup.max_bytes);
        // Every trace is accounted for, at every step.
        prop_assert_eq!(
            st.traces_received,
            st.decided_total() + st.shutdown_dropped_traces + st.buffered_traces
        );
        for t in model.pending.values() {
            prop_assert!(t.spans.len() <= setup.max_spans as usize);
            prop_assert!(t.bytes() <= setup.max_bytes_per_trace);
        }
        let deadline = model
            .next_due()
            .map(|(d, _, _)| base + Duration::from_nanos(d));
        prop_assert_eq!(sampler.next_deadline(), deadline);
        trail.push(got);
    }
    let st = sampler.stats();
    prop_assert_eq!(st.buffered_traces, 0);
    prop_assert_eq!(st.buffered_bytes, 0);
    prop_assert_eq!(st.buffered_batches, 0);
    prop_assert_eq!(
        st.spans_received,
        st.spans_sampled
            + st.spans_not_sampled
            + st.late_spans_forwarded
            + st.late_spans_dropped
            + st.shutdown_dropped_spans
    );
    COVERAGE.with(|c| {
        let mut c = c.borrow_mut();
        c.runs += 1;
        c.with_compaction += u64::from(st.compactions > 0);
        c.with_bound += u64::from(st.decided_early() > 0);
    });
    Ok(trail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sampler_agrees_with_the_reference_model(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let first = run(&setup, &ops)?;
        // Deterministic: the same input gives the same output, in the same order.
        let second = run(&setup, &ops)?;
        prop_assert_eq!(first, second);
    }

    /// The same with `buffer_compression = "lz4"`: the same spans kept, the same counts, and
    /// the charge of the compressed blocks exact.
    #[test]
    fn sampler_with_compression_agrees_with_the_reference_model(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let setup = Setup { compress: true, ..setup };
        let first = run(&setup, &ops)?;
        let second = run(&setup, &ops)?;
        prop_assert_eq!(&first, &second);
        // Compression changes where spans are held, never which are kept.
        let plain = run(&Setup { compress: false, ..setup }, &ops)?;
        let sorted = |t: &Trail| -> Vec<Vec<u64>> {
            t.iter().map(|ids| { let mut ids = ids.clone(); ids.sort_unstable(); ids }).collect()
        };
        // (Bounds decide by the charge, which compression changes: only unbounded runs.)
        if setup.max_bytes == 1 << 40 {
            prop_assert_eq!(sorted(&first), sorted(&plain));
        }
    }
}

/// The random runs do reach compactions and early decisions (not only the happy path).
#[test]
fn model_runs_cover_compaction_and_bounds() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (setup(), prop::collection::vec(op(), 1..60));
    for n in 0..200 {
        let (setup, ops) = strategy.new_tree(&mut runner).unwrap().current();
        // Every other run with compression.
        run(
            &Setup {
                compress: n % 2 == 1,
                ..setup
            },
            &ops,
        )
        .unwrap();
    }
    COVERAGE.with(|c| {
        let c = c.borrow();
        eprintln!(
            "model coverage: {} runs, {} compacted, {} decided early",
            c.runs, c.with_compaction, c.with_bound
        );
        assert!(
            c.with_compaction * 20 >= c.runs,
            "{} of {} runs compacted",
            c.with_compaction,
            c.runs
        );
        assert!(
            c.with_bound * 4 >= c.runs,
            "{} of {} runs decided early",
            c.with_bound,
            c.runs
        );
    });
}
