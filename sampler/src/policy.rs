//! Compiled sampling policies and how their votes combine.
//!
//! Policies that look at individual spans (`status_code`, `string_attribute`,
//! `numeric_attribute`, `boolean_attribute`, `trace_state`) are evaluated incrementally: each
//! arriving span sets bits in its trace's summary (status codes seen, one bit per span
//! predicate), so a decision never walks the spans again. The other policies read the summary
//! (duration, span count) or the trace id (`probabilistic`) at decision time; `rate_limiting` and
//! `composite` also keep per-second counters.
//!
//! Votes combine as in the OpenTelemetry Collector: the trace is sampled when at least one
//! policy votes sample and no `drop` policy matches. `invert` flips a policy's own vote (like
//! the Collector with its `disableinvertdecisions` feature gate); an inverted policy never
//! vetoes other policies — that is what `drop` is for.

use regex::RegexSet;
use shardtel_config::{PolicyConfig, PolicyKind, TailSamplingConfig};
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::span::AnyValueRef;
use shardtel_protocol::wire::{Reader, Value};
use shardtel_protocol::TraceId;

use super::span_fields::{self, Keys, SpanFacts};
use super::table::Trace;
use super::{CoreShare, SamplerError};

/// Most span predicates (`string_attribute`, `numeric_attribute`, `boolean_attribute`,
/// `trace_state`, counting those inside `and`, `drop` and `composite`) one sampler supports:
/// each takes one bit of a trace's summary.
pub const MAX_SPAN_PREDICATES: usize = 64;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The probabilistic policy's hash of a trace id: 64-bit FNV-1a over the salt's bytes followed
/// by the 16 trace id bytes, then the MurmurHash3 `fmix64` finaliser. A trace is sampled at
/// `p` percent when `hash < p / 100 × 2^64`.
///
/// The function is fixed (no per-process seed), so every core, node and replay agrees; it is
/// unrelated to `owner_core`'s hash, so which core owns a trace does not bias its sampling.
pub fn probabilistic_hash(trace_id: &TraceId, salt: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for &b in salt.iter().chain(trace_id.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash threshold of `percent` (0 to 100): sampled when `hash < threshold`.
fn probabilistic_threshold(percent: f64) -> u128 {
    let scaled = percent / 100.0 * 18_446_744_073_709_551_616.0;
    (scaled as u128).min(1 << 64)
}

/// Something checked on every arriving span (and its resource); one bit of
/// [`Trace::matched`].
#[derive(Debug)]
enum SpanPredicate {
    String {
        key: Vec<u8>,
        values: Vec<String>,
        regexes: Option<RegexSet>,
    },
    Numeric {
        key: Vec<u8>,
        min: Option<i64>,
        max: Option<i64>,
    },
    Bool {
        key: Vec<u8>,
        value: bool,
    },
    TraceState {
        key: String,
        values: Vec<String>,
    },
}

impl SpanPredicate {
    fn attribute_key(&self) -> Option<&[u8]> {
        match self {
            SpanPredicate::String { key, .. }
            | SpanPredicate::Numeric { key, .. }
            | SpanPredicate::Bool { key, .. } => Some(key),
            SpanPredicate::TraceState { .. } => None,
        }
    }

    /// Like [`SpanPredicate::matches_value`] for an encoded `AnyValue` body; an exact string
    /// match compares the bytes of a plain short string without decoding it.
    fn matches_encoded(&self, value: &[u8]) -> bool {
        if let SpanPredicate::String {
            values,
            regexes: None,
            ..
        } = self
        {
            if let [0x0a, len, s @ ..] = value {
                if *len < 0x80 && s.len() == usize::from(*len) {
                    // Equal bytes to a (UTF-8) value are valid UTF-8 too.
                    return values.iter().any(|v| v.as_bytes() == s);
                }
            }
        }
        self.matches_value(&AnyValueRef::parse(value))
    }

    fn matches_value(&self, value: &AnyValueRef<'_>) -> bool {
        match (self, value) {
            (
                SpanPredicate::String {
                    values, regexes, ..
                },
                AnyValueRef::String(s),
            ) => match regexes {
                Some(set) => set.is_match(s),
                None => values.iter().any(|v| v == s),
            },
            (SpanPredicate::Numeric { min, max, .. }, AnyValueRef::Int(i)) => {
                min.is_none_or(|m| *i >= m) && max.is_none_or(|m| *i <= m)
            }
            (SpanPredicate::Numeric { min, max, .. }, AnyValueRef::Double(d)) => {
                min.is_none_or(|m| *d >= m as f64) && max.is_none_or(|m| *d <= m as f64)
            }
            (SpanPredicate::Bool { value, .. }, AnyValueRef::Bool(b)) => b == value,
            _ => false,
        }
    }

    fn matches_trace_state(&self, trace_state: &[u8]) -> bool {
        let SpanPredicate::TraceState { key, values } = self else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(trace_state) else {
            return false;
        };
        // W3C tracestate: comma-separated `key=value` members, optional spaces/tabs around.
        text.split(',').any(|member| {
            let member = member.trim_matches([' ', '\t']);
            member
                .split_once('=')
                .is_some_and(|(k, v)| k == key && values.iter().any(|want| want == v))
        })
    }
}

/// A compiled policy. `Drop` appears only at the top level.
#[derive(Debug)]
enum Rule {
    Always,
    Status { mask: u8 },
    Latency { min: u64, max: Option<u64> },
    Predicate { bit: u32 },
    Probabilistic { threshold: u128, salt: Vec<u8> },
    RateLimiting(Budget),
    SpanCount { min: u32, max: Option<u32> },
    And(Vec<Node>),
    Drop(Vec<Node>),
    Composite(Composite),
}

#[derive(Debug)]
struct Node {
    rule: Rule,
    invert: bool,
}

/// Spans sampled in the current one-second window, against a per-second budget.
#[derive(Debug)]
struct Budget {
    per_second: u64,
    window: u64,
    used: u64,
}

impl Budget {
    fn new(per_second: u64) -> Self {
        Budget {
            per_second,
            window: 0,
            used: 0,
        }
    }

    fn roll(&mut self, window: u64) {
        if window != self.window {
            self.window = window;
            self.used = 0;
        }
    }

    fn fits(&self, spans: u64) -> bool {
        self.used + spans <= self.per_second
    }
}

#[derive(Debug)]
struct Composite {
    total: Budget,
    /// Sub-policies in `policy_order`, each with its own budget.
    subs: Vec<(Node, Budget)>,
}

/// What a decision reads about a trace.
pub(crate) struct Facts<'a> {
    pub(crate) trace: &'a Trace,
    /// Decision time, nanoseconds since the sampler's epoch (rate windows).
    pub(crate) now: u64,
}

impl Facts<'_> {
    fn span_count(&self) -> u64 {
        self.trace.spans.len() as u64
    }
}

/// One top-level policy's vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    /// The policy says sample.
    Sample,
    /// The policy does not say sample.
    NotSample,
    /// A `drop` policy matched: the trace is dropped.
    Drop,
}

/// All policies of one sampler, compiled.
#[derive(Debug)]
pub(crate) struct Policies {
    predicates: Vec<SpanPredicate>,
    top: Vec<(String, Node)>,
    /// The distinct attribute keys the predicates read.
    keys: Keys,
    /// For each of `keys`, the predicates (bit numbers) that read it.
    key_predicates: Vec<Vec<usize>>,
    /// Bits of predicates that read attributes (span and resource).
    attribute_bits: u64,
    /// Bits of `trace_state` predicates.
    trace_state_bits: u64,
}

impl Policies {
    pub(crate) fn compile(
        config: &TailSamplingConfig,
        share: CoreShare,
    ) -> Result<Policies, SamplerError> {
        let mut p = Policies {
            predicates: Vec::new(),
            top: Vec::new(),
            keys: Keys::default(),
            key_predicates: Vec::new(),
            attribute_bits: 0,
            trace_state_bits: 0,
        };
        for policy in &config.policies {
            let node = p.node(policy, share)?;
            p.top.push((policy.name.clone(), node));
        }
        for (bit, predicate) in p.predicates.iter().enumerate() {
            let Some(key) = predicate.attribute_key() else {
                p.trace_state_bits |= 1 << bit;
                continue;
            };
            p.attribute_bits |= 1 << bit;
            match p.keys.position(key) {
                Some(i) => p.key_predicates[i].push(bit),
                None => {
                    p.keys.push(key.to_vec());
                    p.key_predicates.push(vec![bit]);
                }
            }
        }
        Ok(p)
    }

    fn predicate(&mut self, name: &str, predicate: SpanPredicate) -> Result<Rule, SamplerError> {
        if self.predicates.len() == MAX_SPAN_PREDICATES {
            return Err(SamplerError::TooManySpanPredicates {
                policy: name.to_string(),
                max: MAX_SPAN_PREDICATES,
            });
        }
        self.predicates.push(predicate);
        Ok(Rule::Predicate {
            bit: (self.predicates.len() - 1) as u32,
        })
    }

    fn node(&mut self, policy: &PolicyConfig, share: CoreShare) -> Result<Node, SamplerError> {
        let name = &policy.name;
        let (rule, invert) = match &policy.kind {
            PolicyKind::AlwaysSample => (Rule::Always, false),
            PolicyKind::StatusCode {
                status_codes,
                invert,
            } => {
                let mask = status_codes.iter().fold(0u8, |m, c| m | 1 << c.code());
                (Rule::Status { mask }, *invert)
            }
            PolicyKind::Latency {
                threshold,
                upper_threshold,
                invert,
            } => (
                Rule::Latency {
                    min: threshold.as_nanos().min(u128::from(u64::MAX)) as u64,
                    max: upper_threshold.map(|u| u.as_nanos().min(u128::from(u64::MAX)) as u64),
                },
                *invert,
            ),
            PolicyKind::StringAttribute {
                key,
                values,
                enabled_regex_matching,
                invert,
            } => {
                let regexes = if *enabled_regex_matching {
                    Some(
                        RegexSet::new(values).map_err(|source| SamplerError::InvalidRegex {
                            policy: name.clone(),
                            source,
                        })?,
                    )
                } else {
                    None
                };
                let predicate = SpanPredicate::String {
                    key: key.as_bytes().to_vec(),
                    values: values.clone(),
                    regexes,
                };
                (self.predicate(name, predicate)?, *invert)
            }
            PolicyKind::NumericAttribute {
                key,
                min_value,
                max_value,
                invert,
            } => {
                let predicate = SpanPredicate::Numeric {
                    key: key.as_bytes().to_vec(),
                    min: *min_value,
                    max: *max_value,
                };
                (self.predicate(name, predicate)?, *invert)
            }
            PolicyKind::BooleanAttribute { key, value, invert } => {
                let predicate = SpanPredicate::Bool {
                    key: key.as_bytes().to_vec(),
                    value: *value,
                };
                (self.predicate(name, predicate)?, *invert)
            }
            PolicyKind::TraceState {
                key,
                values,
                invert,
            } => {
                let predicate = SpanPredicate::TraceState {
                    key: key.clone(),
                    values: values.clone(),
                };
                (self.predicate(name, predicate)?, *invert)
            }
            PolicyKind::Probabilistic {
                sampling_percentage,
                hash_salt,
            } => (
                Rule::Probabilistic {
                    threshold: probabilistic_threshold(sampling_percentage.get()),
                    salt: hash_salt.as_bytes().to_vec(),
                },
                false,
            ),
            PolicyKind::RateLimiting { spans_per_second } => (
                Rule::RateLimiting(Budget::new(share.split(*spans_per_second))),
                false,
            ),
            PolicyKind::SpanCount {
                min_spans,
                max_spans,
                invert,
            } => (
                Rule::SpanCount {
                    min: *min_spans,
                    max: *max_spans,
                },
                *invert,
            ),
            PolicyKind::And { policies } => (Rule::And(self.nodes(policies, share)?), false),
            PolicyKind::Drop { policies } => (Rule::Drop(self.nodes(policies, share)?), false),
            PolicyKind::Composite {
                max_total_spans_per_second,
                policy_order,
                policies,
                rate_allocation,
            } => {
                let total = share.split(*max_total_spans_per_second);
                let equal = total / policies.len().max(1) as u64;
                let mut subs = Vec::new();
                for sub_name in policy_order {
                    let Some(sub) = policies.iter().find(|p| &p.name == sub_name) else {
                        continue;
                    };
                    let percent = rate_allocation
                        .iter()
                        .find(|a| &a.policy == sub_name)
                        .map_or(0, |a| a.percent);
                    let allocated = if percent == 0 {
                        equal
                    } else {
                        total * u64::from(percent) / 100
                    };
                    subs.push((self.node(sub, share)?, Budget::new(allocated)));
                }
                (
                    Rule::Composite(Composite {
                        total: Budget::new(total),
                        subs,
                    }),
                    false,
                )
            }
        };
        Ok(Node { rule, invert })
    }

    fn nodes(
        &mut self,
        policies: &[PolicyConfig],
        share: CoreShare,
    ) -> Result<Vec<Node>, SamplerError> {
        policies.iter().map(|p| self.node(p, share)).collect()
    }

    /// Names of the top-level policies, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&str, bool)> {
        self.top
            .iter()
            .map(|(name, node)| (name.as_str(), matches!(node.rule, Rule::Drop(_))))
    }

    /// Whether any span predicate reads attributes (so resources must be checked per batch).
    pub(crate) fn reads_attributes(&self) -> bool {
        self.attribute_bits != 0
    }

    /// For each resource of `batch`, the predicate bits its attributes match (into `out`).
    pub(crate) fn resource_bits(&self, batch: &SpanBatch, out: &mut Vec<u64>) {
        out.clear();
        let resources = batch.index.resources.len();
        if !self.reads_attributes() {
            out.resize(resources, 0);
            return;
        }
        for r in 0..resources as u32 {
            // One pass over the resource's attributes for every key (the first attribute with a
            // key counts, as `TracesIndex::resource_attribute` finds it).
            let mut bits = 0;
            let mut seen = 0;
            let mut resource = |body: &[u8]| {
                span_fields::read_attributes(body, 1, &self.keys, &mut seen, |i, value| {
                    for &bit in &self.key_predicates[i] {
                        if self.predicates[bit].matches_encoded(value) {
                            bits |= 1 << bit;
                        }
                    }
                });
            };
            match batch.index.rewrites.resource(r) {
                // A rewritten resource: its header fields, one after the other.
                Some(fields) => {
                    let mut f = Reader::new(fields);
                    while let Some(Ok((k, v))) = f.next_field() {
                        if let (1, Value::Len(b)) = (k.field, v) {
                            resource(&fields[b]);
                        }
                    }
                }
                None => {
                    for h in batch.index.resource_headers(r) {
                        let Some(field) = batch.buf.get(h) else {
                            continue;
                        };
                        let mut f = Reader::new(field);
                        if let Some(Ok((k, Value::Len(b)))) = f.next_field() {
                            if k.field == 1 {
                                resource(&field[b]);
                            }
                        }
                    }
                }
            }
            out.push(bits);
        }
    }

    /// Reads span `body`: the fields the trace summary needs, and the predicate bits the span's
    /// own attributes and trace state match.
    pub(crate) fn scan_span<'a>(&self, body: &'a [u8]) -> (SpanFacts<'a>, u64) {
        let mut bits = 0;
        let facts = span_fields::read(body, &self.keys, |i, value| {
            for &bit in &self.key_predicates[i] {
                if self.predicates[bit].matches_encoded(value) {
                    bits |= 1 << bit;
                }
            }
        });
        if self.trace_state_bits != 0 && !facts.trace_state.is_empty() {
            for (bit, p) in self.predicates.iter().enumerate() {
                if self.trace_state_bits & (1 << bit) != 0
                    && p.matches_trace_state(facts.trace_state)
                {
                    bits |= 1 << bit;
                }
            }
        }
        (facts, bits)
    }

    /// Evaluates every top-level policy in order, writing each vote into `votes`, and returns
    /// whether the trace is sampled.
    pub(crate) fn decide(&mut self, facts: &Facts<'_>, votes: &mut Vec<Vote>) -> bool {
        votes.clear();
        let mut sample = false;
        let mut drop = false;
        for (_, node) in &mut self.top {
            let hit = node.evaluate(facts);
            let vote = match (&node.rule, hit) {
                (Rule::Drop(_), true) => Vote::Drop,
                (_, true) => Vote::Sample,
                (_, false) => Vote::NotSample,
            };
            sample |= vote == Vote::Sample;
            drop |= vote == Vote::Drop;
            votes.push(vote);
        }
        sample && !drop
    }
}

impl Node {
    /// Whether this policy says sample (for a `drop` sub-policy: matches).
    fn evaluate(&mut self, facts: &Facts<'_>) -> bool {
        let t = facts.trace;
        let hit = match &mut self.rule {
            Rule::Always => true,
            Rule::Status { mask } => t.any_status(*mask),
            Rule::Latency { min, max } => {
                let d = t.duration_nanos();
                d >= *min && max.is_none_or(|m| d <= m)
            }
            Rule::Predicate { bit } => t.matched & (1 << *bit) != 0,
            Rule::Probabilistic { threshold, salt } => {
                u128::from(probabilistic_hash(&t.id, salt)) < *threshold
            }
            Rule::RateLimiting(budget) => {
                budget.roll(facts.now / NANOS_PER_SECOND);
                let spans = facts.span_count();
                if budget.fits(spans) {
                    budget.used += spans;
                    true
                } else {
                    false
                }
            }
            Rule::SpanCount { min, max } => {
                let n = facts.span_count();
                n >= u64::from(*min) && max.is_none_or(|m| n <= u64::from(m))
            }
            // Short-circuits like the Collector: later sub-policies (and their rate counters)
            // are not evaluated once one says no.
            Rule::And(subs) | Rule::Drop(subs) => subs.iter_mut().all(|n| n.evaluate(facts)),
            Rule::Composite(c) => c.evaluate(facts),
        };
        hit != self.invert
    }
}

impl Composite {
    /// The first sub-policy that says sample decides: sampled if its own and the total budget
    /// for this second have room for the trace's spans, not sampled otherwise (later
    /// sub-policies are not tried, as in the Collector).
    fn evaluate(&mut self, facts: &Facts<'_>) -> bool {
        let window = facts.now / NANOS_PER_SECOND;
        self.total.roll(window);
        let spans = facts.span_count();
        for (node, budget) in &mut self.subs {
            budget.roll(window);
            if node.evaluate(facts) {
                if budget.fits(spans) && self.total.fits(spans) {
                    budget.used += spans;
                    self.total.used += spans;
                    return true;
                }
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::IdMap;
    use crate::table::TraceTable;
    use crate::testing::{batch_of, config, kv, policy, span, trace_id, ResourceSpec, SpanSpec};
    use shardtel_config::{Percentage, RateAllocation, StatusCode};
    use shardtel_protocol::proto::common::v1::any_value::Value;
    use std::time::Duration;

    /// Builds the summary the sampler would build for one trace made of `spans`, all under
    /// `resource`, and evaluates `policy` (alone) at time `now`.
    struct Harness {
        policies: Policies,
        votes: Vec<Vote>,
    }

    impl Harness {
        fn new(kind: PolicyKind) -> Harness {
            Harness::with_share(kind, CoreShare::SINGLE)
        }

        fn with_share(kind: PolicyKind, share: CoreShare) -> Harness {
            let cfg = config(vec![policy("p", kind)]);
            Harness {
                policies: Policies::compile(&cfg, share).unwrap(),
                votes: Vec::new(),
            }
        }

        fn vote_at(&mut self, resource: &ResourceSpec, spans: &[SpanSpec], now: u64) -> Vote {
            let batch = batch_of(&[(resource.clone(), spans.to_vec())]);
            let mut table = TraceTable::new(IdMap::default());
            let t = table.create(spans[0].trace_id, 0);
            let mut resource_bits = Vec::new();
            self.policies.resource_bits(&batch, &mut resource_bits);
            for (i, entry) in batch.index.spans.iter().enumerate() {
                let body = &batch.buf[entry.range.start as usize..entry.range.end as usize];
                let (f, bits) = self.policies.scan_span(body);
                let resource = batch.index.scopes[entry.scope as usize].resource as usize;
                let trace = table.get_mut(t);
                trace.matched |= bits | resource_bits[resource];
                trace.spans.push(crate::table::SpanRef {
                    slot: 0,
                    span: i as u32,
                });
                if f.start != 0 {
                    trace.min_start = trace.min_start.min(f.start);
                }
                trace.max_end = trace.max_end.max(f.end);
                trace.status_seen |= 1 << f.status;
            }
            let facts = Facts {
                trace: table.get(t),
                now,
            };
            self.policies.decide(&facts, &mut self.votes);
            self.votes[0]
        }

        fn vote(&mut self, spans: &[SpanSpec]) -> Vote {
            self.vote_at(&ResourceSpec::default(), spans, 0)
        }
    }

    fn spans_with(attrs: Vec<(&str, Value)>) -> Vec<SpanSpec> {
        vec![span(1, 1).with_attrs(attrs), span(1, 2)]
    }

    #[test]
    fn always_sample() {
        assert_eq!(
            Harness::new(PolicyKind::AlwaysSample).vote(&[span(1, 1)]),
            Vote::Sample
        );
    }

    #[test]
    fn status_code_any_span_and_inverted() {
        let errors = |invert| PolicyKind::StatusCode {
            status_codes: vec![StatusCode::Error],
            invert,
        };
        let mut h = Harness::new(errors(false));
        let ok = [span(1, 1).status(1), span(1, 2)];
        let failed = [span(1, 1).status(1), span(1, 2).status(2)];
        assert_eq!(h.vote(&ok), Vote::NotSample);
        assert_eq!(h.vote(&failed), Vote::Sample);
        let mut h = Harness::new(errors(true));
        assert_eq!(h.vote(&ok), Vote::Sample);
        assert_eq!(h.vote(&failed), Vote::NotSample);
        let mut h = Harness::new(PolicyKind::StatusCode {
            status_codes: vec![StatusCode::Ok, StatusCode::Unset],
            invert: false,
        });
        assert_eq!(h.vote(&[span(1, 1).status(2)]), Vote::NotSample);
        assert_eq!(h.vote(&[span(1, 1).status(2), span(1, 2)]), Vote::Sample);
    }

    #[test]
    fn latency_uses_earliest_start_and_latest_end() {
        let ms = 1_000_000;
        let mut h = Harness::new(PolicyKind::Latency {
            threshold: Duration::from_secs(1),
            upper_threshold: None,
            invert: false,
        });
        // Neither span lasts a second, the trace does: 100ms .. 1100ms.
        let slow = [
            span(1, 1).times(100 * ms, 600 * ms),
            span(1, 2).times(700 * ms, 1100 * ms),
        ];
        assert_eq!(h.vote(&slow), Vote::Sample);
        let fast = [
            span(1, 1).times(100 * ms, 600 * ms),
            span(1, 2).times(200 * ms, 1099 * ms),
        ];
        assert_eq!(h.vote(&fast), Vote::NotSample);
        // Exactly the threshold counts.
        assert_eq!(h.vote(&[span(1, 1).times(ms, 1001 * ms)]), Vote::Sample);
        let mut h = Harness::new(PolicyKind::Latency {
            threshold: Duration::from_millis(500),
            upper_threshold: Some(Duration::from_millis(900)),
            invert: false,
        });
        assert_eq!(h.vote(&slow), Vote::NotSample);
        assert_eq!(h.vote(&[span(1, 1).times(ms, 901 * ms)]), Vote::Sample);
        assert_eq!(h.vote(&[span(1, 1).times(ms, 400 * ms)]), Vote::NotSample);
        let mut h = Harness::new(PolicyKind::Latency {
            threshold: Duration::from_secs(1),
            upper_threshold: None,
            invert: true,
        });
        assert_eq!(h.vote(&fast), Vote::Sample);
    }

    #[test]
    fn string_attribute_exact_regex_resource_and_inverted() {
        let vip = |values: &[&str], regex, invert| PolicyKind::StringAttribute {
            key: "user.id".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            enabled_regex_matching: regex,
            invert,
        };
        let s = |v: &str| Value::StringValue(v.into());
        let mut h = Harness::new(vip(&["vip"], false, false));
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", s("vip"))])),
            Vote::Sample
        );
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", s("vip2"))])),
            Vote::NotSample
        );
        assert_eq!(
            h.vote(&spans_with(vec![("user", s("vip"))])),
            Vote::NotSample
        );
        // Only string values match.
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", Value::IntValue(1))])),
            Vote::NotSample
        );
        // Resource attributes count too.
        let resource = ResourceSpec {
            attrs: vec![kv("user.id", s("vip"))],
        };
        assert_eq!(h.vote_at(&resource, &[span(1, 1)], 0), Vote::Sample);
        // Regexes are unanchored, any of them may match.
        let mut h = Harness::new(vip(&["^v.p$", "gold"], true, false));
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", s("vxp"))])),
            Vote::Sample
        );
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", s("a-gold-b"))])),
            Vote::Sample
        );
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", s("vxpp"))])),
            Vote::NotSample
        );
        let mut h = Harness::new(vip(&["vip"], false, true));
        assert_eq!(
            h.vote(&spans_with(vec![("user.id", s("vip"))])),
            Vote::NotSample
        );
        assert_eq!(h.vote(&spans_with(vec![("user.id", s("x"))])), Vote::Sample);
    }

    #[test]
    fn numeric_attribute_range() {
        let range = |min, max, invert| PolicyKind::NumericAttribute {
            key: "http.status_code".into(),
            min_value: min,
            max_value: max,
            invert,
        };
        let code = |c| spans_with(vec![("http.status_code", Value::IntValue(c))]);
        let mut h = Harness::new(range(Some(500), Some(599), false));
        assert_eq!(h.vote(&code(500)), Vote::Sample);
        assert_eq!(h.vote(&code(599)), Vote::Sample);
        assert_eq!(h.vote(&code(499)), Vote::NotSample);
        assert_eq!(h.vote(&code(600)), Vote::NotSample);
        assert_eq!(
            h.vote(&spans_with(vec![(
                "http.status_code",
                Value::DoubleValue(503.5)
            )])),
            Vote::Sample
        );
        assert_eq!(
            h.vote(&spans_with(vec![(
                "http.status_code",
                Value::StringValue("503".into())
            )])),
            Vote::NotSample
        );
        let mut h = Harness::new(range(None, Some(-1), false));
        assert_eq!(h.vote(&code(-5)), Vote::Sample);
        assert_eq!(h.vote(&code(0)), Vote::NotSample);
        let mut h = Harness::new(range(Some(400), None, true));
        assert_eq!(h.vote(&code(200)), Vote::Sample);
        assert_eq!(h.vote(&code(404)), Vote::NotSample);
    }

    #[test]
    fn boolean_attribute() {
        let mut h = Harness::new(PolicyKind::BooleanAttribute {
            key: "retry".into(),
            value: true,
            invert: false,
        });
        assert_eq!(
            h.vote(&spans_with(vec![("retry", Value::BoolValue(true))])),
            Vote::Sample
        );
        assert_eq!(
            h.vote(&spans_with(vec![("retry", Value::BoolValue(false))])),
            Vote::NotSample
        );
        assert_eq!(
            h.vote(&spans_with(vec![("retry", Value::IntValue(1))])),
            Vote::NotSample
        );
        let mut h = Harness::new(PolicyKind::BooleanAttribute {
            key: "retry".into(),
            value: false,
            invert: true,
        });
        assert_eq!(
            h.vote(&spans_with(vec![("retry", Value::BoolValue(false))])),
            Vote::NotSample
        );
        assert_eq!(h.vote(&spans_with(vec![])), Vote::Sample);
    }

    #[test]
    fn probabilistic_is_a_pure_function_of_the_trace_id_and_salt() {
        let kind = |p: f64, salt: &str| PolicyKind::Probabilistic {
            sampling_percentage: Percentage::new(p).unwrap(),
            hash_salt: salt.into(),
        };
        let mut ten = Harness::new(kind(10.0, ""));
        let mut all = Harness::new(kind(100.0, ""));
        let mut none = Harness::new(kind(0.0, ""));
        let mut salted = Harness::new(kind(10.0, "other"));
        let (mut sampled, mut salted_sampled, mut both) = (0, 0, 0);
        let n = 20_000u32;
        for i in 0..n {
            let spans = [span(0, 1).trace(trace_id(u64::from(i) * 7919))];
            let v = ten.vote(&spans) == Vote::Sample;
            // Same answer again, and from the hash directly.
            assert_eq!(ten.vote(&spans) == Vote::Sample, v);
            let h = probabilistic_hash(&spans[0].trace_id, b"");
            assert_eq!(u128::from(h) < probabilistic_threshold(10.0), v);
            assert_eq!(all.vote(&spans), Vote::Sample);
            assert_eq!(none.vote(&spans), Vote::NotSample);
            let s = salted.vote(&spans) == Vote::Sample;
            sampled += u32::from(v);
            salted_sampled += u32::from(s);
            both += u32::from(v && s);
        }
        // 10% ± 5 standard deviations (σ = sqrt(n p (1-p)) ≈ 42).
        for count in [sampled, salted_sampled] {
            assert!((1790..=2210).contains(&count), "{count}");
        }
        // The salt gives an independent choice: about 1% in both.
        assert!((120..=290).contains(&both), "{both}");
        // Pinned values: the hash must never change between versions.
        assert_eq!(probabilistic_hash(&[0; 16], b""), 0xa5e0_dba6_c385_580a);
        assert_eq!(
            probabilistic_hash(&[0xab; 16], b"salt"),
            0x1c06_7f67_a24c_da16
        );
    }

    #[test]
    fn rate_limiting_counts_spans_per_second_and_core() {
        let spans = |n: u64| -> Vec<SpanSpec> { (0..n).map(|i| span(1, i + 1)).collect() };
        let second = NANOS_PER_SECOND;
        let mut h = Harness::new(PolicyKind::RateLimiting {
            spans_per_second: 10,
        });
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(6), 0),
            Vote::Sample
        );
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(4), 10),
            Vote::Sample
        );
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(1), second - 1),
            Vote::NotSample
        );
        // A new second starts a new budget.
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(10), second),
            Vote::Sample
        );
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(11), 3 * second),
            Vote::NotSample
        );
        // 11 spans/s over 3 cores: 4, 4 and 3.
        let budgets: Vec<u64> = (0..3)
            .map(|core| CoreShare { core, cores: 3 }.split(11))
            .collect();
        assert_eq!(budgets, [4, 4, 3]);
        let mut h = Harness::with_share(
            PolicyKind::RateLimiting {
                spans_per_second: 11,
            },
            CoreShare { core: 2, cores: 3 },
        );
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(4), 0),
            Vote::NotSample
        );
        assert_eq!(
            h.vote_at(&ResourceSpec::default(), &spans(3), 0),
            Vote::Sample
        );
    }

    #[test]
    fn span_count_range() {
        let spans = |n: u64| -> Vec<SpanSpec> { (0..n).map(|i| span(1, i + 1)).collect() };
        let mut h = Harness::new(PolicyKind::SpanCount {
            min_spans: 2,
            max_spans: Some(3),
            invert: false,
        });
        assert_eq!(h.vote(&spans(1)), Vote::NotSample);
        assert_eq!(h.vote(&spans(2)), Vote::Sample);
        assert_eq!(h.vote(&spans(3)), Vote::Sample);
        assert_eq!(h.vote(&spans(4)), Vote::NotSample);
        let mut h = Harness::new(PolicyKind::SpanCount {
            min_spans: 3,
            max_spans: None,
            invert: true,
        });
        assert_eq!(h.vote(&spans(2)), Vote::Sample);
        assert_eq!(h.vote(&spans(30)), Vote::NotSample);
    }

    #[test]
    fn trace_state_members() {
        let mut h = Harness::new(PolicyKind::TraceState {
            key: "vendor".into(),
            values: vec!["on".into(), "yes".into()],
            invert: false,
        });
        let with = |ts: &str| [span(1, 1).trace_state(ts), span(1, 2)];
        assert_eq!(h.vote(&with("vendor=on")), Vote::Sample);
        assert_eq!(h.vote(&with("a=b, vendor=yes ,c=d")), Vote::Sample);
        assert_eq!(h.vote(&with("vendor=off")), Vote::NotSample);
        assert_eq!(h.vote(&with("xvendor=on")), Vote::NotSample);
        assert_eq!(h.vote(&with("")), Vote::NotSample);
    }

    #[test]
    fn and_needs_every_sub_policy() {
        let mut h = Harness::new(PolicyKind::And {
            policies: vec![
                policy(
                    "err",
                    PolicyKind::StatusCode {
                        status_codes: vec![StatusCode::Error],
                        invert: false,
                    },
                ),
                policy(
                    "big",
                    PolicyKind::SpanCount {
                        min_spans: 2,
                        max_spans: None,
                        invert: false,
                    },
                ),
            ],
        });
        assert_eq!(h.vote(&[span(1, 1).status(2), span(1, 2)]), Vote::Sample);
        assert_eq!(h.vote(&[span(1, 1).status(2)]), Vote::NotSample);
        assert_eq!(h.vote(&[span(1, 1), span(1, 2)]), Vote::NotSample);
    }

    #[test]
    fn drop_vetoes_every_other_vote() {
        let health = PolicyKind::StringAttribute {
            key: "http.route".into(),
            values: vec!["/health".into()],
            enabled_regex_matching: false,
            invert: false,
        };
        let cfg = config(vec![
            policy("all", PolicyKind::AlwaysSample),
            policy(
                "no-health",
                PolicyKind::Drop {
                    policies: vec![policy("h", health)],
                },
            ),
        ]);
        let mut p = Policies::compile(&cfg, CoreShare::SINGLE).unwrap();
        assert_eq!(
            p.names().collect::<Vec<_>>(),
            [("all", false), ("no-health", true)]
        );
        let mut h = Harness {
            policies: p,
            votes: Vec::new(),
        };
        let route = |r: &str| spans_with(vec![("http.route", Value::StringValue(r.into()))]);
        h.vote(&route("/health"));
        assert_eq!(h.votes, [Vote::Sample, Vote::Drop]);
        h.vote(&route("/cart"));
        assert_eq!(h.votes, [Vote::Sample, Vote::NotSample]);
        // And the combined decision.
        p = h.policies;
        let batch = batch_of(&[(ResourceSpec::default(), route("/health"))]);
        let mut table = TraceTable::new(IdMap::default());
        let t = table.create([1; 16], 0);
        let range = &batch.index.spans[0].range;
        table.get_mut(t).matched = p
            .scan_span(&batch.buf[range.start as usize..range.end as usize])
            .1;
        let mut votes = Vec::new();
        assert!(!p.decide(
            &Facts {
                trace: table.get(t),
                now: 0
            },
            &mut votes
        ));
        table.get_mut(t).matched = 0;
        assert!(p.decide(
            &Facts {
                trace: table.get(t),
                now: 0
            },
            &mut votes
        ));
    }

    #[test]
    fn composite_first_matching_sub_policy_decides_within_its_share() {
        let errors = policy(
            "errors",
            PolicyKind::StatusCode {
                status_codes: vec![StatusCode::Error],
                invert: false,
            },
        );
        let mut h = Harness::new(PolicyKind::Composite {
            max_total_spans_per_second: 10,
            policy_order: vec!["errors".into(), "rest".into()],
            policies: vec![errors, policy("rest", PolicyKind::AlwaysSample)],
            rate_allocation: vec![RateAllocation {
                policy: "errors".into(),
                percent: 60,
            }],
        });
        let err = |n: u64| -> Vec<SpanSpec> { (0..n).map(|i| span(1, i + 1).status(2)).collect() };
        let ok = |n: u64| -> Vec<SpanSpec> { (0..n).map(|i| span(1, i + 1)).collect() };
        let r = ResourceSpec::default();
        // errors: 6 spans/s; rest: 10 / 2 sub-policies = 5 spans/s; total 10.
        assert_eq!(h.vote_at(&r, &err(4), 0), Vote::Sample);
        // errors is out of budget: not sampled, and "rest" is not tried.
        assert_eq!(h.vote_at(&r, &err(3), 0), Vote::NotSample);
        assert_eq!(h.vote_at(&r, &ok(5), 0), Vote::Sample);
        // The total (10) is reached although "errors" has 2 left.
        assert_eq!(h.vote_at(&r, &err(2), 0), Vote::NotSample);
        assert_eq!(h.vote_at(&r, &err(1), 0), Vote::Sample);
        // Next second.
        assert_eq!(h.vote_at(&r, &ok(5), NANOS_PER_SECOND), Vote::Sample);
        assert_eq!(h.vote_at(&r, &ok(1), NANOS_PER_SECOND), Vote::NotSample);
    }

    #[test]
    fn too_many_span_predicates_is_an_error() {
        let policies = (0..=MAX_SPAN_PREDICATES)
            .map(|i| {
                policy(
                    &format!("p{i}"),
                    PolicyKind::BooleanAttribute {
                        key: "k".into(),
                        value: true,
                        invert: false,
                    },
                )
            })
            .collect();
        let err = Policies::compile(&config(policies), CoreShare::SINGLE).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy \"p64\": more than 64 attribute and trace_state policies"
        );
    }
}
