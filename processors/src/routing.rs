//! The `routing` processor: which of a pipeline's exporters each trace (its spans in a batch on
//! the owner core), log record or data point goes to.
//!
//! Routes are tried in order; the first whose condition holds wins, else `default` (the
//! OpenTelemetry Collector's routing connector does the same).
//!
//! - **Traces** ([`Router::route_spans`], [`Router::route_parts`]): a trace matches a route when
//!   its condition holds for any of its spans (with `trace.has_error` true when any of them has
//!   status ERROR), so a trace is never split between routes.
//! - **Logs** ([`Router::route_request`]): each log record on its own (the `log` context).
//! - **Metrics** ([`Router::route_request`]): each data point on its own (the `datapoint`
//!   context: its attributes, its metric's name, its resource), as the Collector's `datapoint`
//!   context does. A metric whose points all take one route, the common case (conditions on
//!   `metric.name` or the resource), stays one slice; a metric whose points go different ways is
//!   written once per destination with only that destination's points (a copy of that metric
//!   alone). A metric without points goes where a point without attributes would.
//!
//! The items of each destination set are re-framed as slices of the request buffer (new length
//! prefixes only), and one encoding is shared (reference-counted) by every exporter of the set;
//! a request whose items all go to one set is passed on as the buffer it arrived in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use shardtel_config::{RoutingConfig, Signal};
use shardtel_protocol::hash::TraceIdHashBuilder;
use shardtel_protocol::reframe::{encode_items, Encoded};
use shardtel_protocol::rewrite::{for_each_metric_point, rewrite_metric_points, ItemOutcome};
use shardtel_protocol::scan::{Rewrites, SpanBatch, TracesIndex};
use shardtel_protocol::TraceId;

use crate::condition::{Condition, Fields, LogFields, PointFields, SpanFields, SpanScalars};
use crate::{metric_name, resource_body, spans_contain, tied_to_origin, KeySearch};

/// A set of a pipeline's exporters, as bits of their positions in its `exporters` list.
pub type ExporterSet = u64;

/// At most this many exporters in a pipeline with a routing processor.
pub const MAX_EXPORTERS: usize = 64;

/// Why a routing processor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A route names an exporter the pipeline does not list (validation prevents it).
    #[error("route exporter {name} is not an exporter of the pipeline")]
    NotInPipeline {
        /// The exporter.
        name: String,
    },
    /// More exporters than [`MAX_EXPORTERS`].
    #[error("a pipeline with a routing processor may list at most 64 exporters")]
    TooManyExporters,
    /// A regex did not compile.
    #[error(transparent)]
    Regex(#[from] regex::Error),
}

/// Spans that go to the same exporters: `(set, ascending span indices)`.
pub type SpanGroups = Vec<(ExporterSet, Vec<u32>)>;

/// Per-core counters of a router.
#[derive(Debug, Default)]
struct RouterStats {
    /// Items per route (last: the default).
    routed: Vec<Cell<u64>>,
}

/// A published copy of a router's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterSnapshot {
    /// The processor's name.
    pub name: String,
    /// The pipeline.
    pub signal: Signal,
    /// `(route, items)`: route `"0"`, `"1"`, ... and `"default"`.
    pub routed: Vec<(String, u64)>,
}

/// One destination of a routed logs or metrics request ([`Router::route_request`]).
#[derive(Debug)]
pub struct RoutedPiece {
    /// The exporters it goes to (never empty).
    pub set: ExporterSet,
    /// The `Export{Logs,Metrics}ServiceRequest` for them: new length prefixes and slices of
    /// the request buffer (metrics split between sets: their copies, which keep the buffer
    /// alive).
    pub piece: Encoded,
    /// Log records or data points in it.
    pub items: u64,
    /// The piece is the request buffer as it arrived (every item goes to `set`).
    pub whole: bool,
}

/// The items of a logs or metrics request going to one set, while routing.
#[derive(Default)]
struct ItemGroup {
    set: ExporterSet,
    /// Ascending item (log record, metric) indices.
    items: Vec<u32>,
    /// Log records or data points.
    count: u64,
    /// Metrics written with only this set's points.
    rewrites: Rewrites,
}

#[derive(Default)]
struct Scratch {
    traces: HashMap<TraceId, u32, TraceIdHashBuilder>,
    /// Per trace (in order of first span): the set it goes to.
    sets: Vec<ExporterSet>,
    /// Per trace: the route bits that matched some span so far, and whether it has an error.
    matched: Vec<(u64, bool)>,
    /// Per span of the walk: its trace's position in `sets`.
    trace_of: Vec<u32>,
    /// Logs and metrics: the groups of the current request (the first `groups_used`), kept with
    /// their capacity.
    groups: Vec<ItemGroup>,
    groups_used: usize,
    /// The set of each point of the current metric.
    point_sets: Vec<ExporterSet>,
    /// Where the metrics written for one set are copied.
    arena: BytesMut,
    /// Traces: what is known of the routes for each part, before looking at its spans.
    knowns: Vec<Known>,
}

impl Scratch {
    /// The group of `set` among those used by the current request, added when new.
    fn group(&mut self, set: ExporterSet) -> &mut ItemGroup {
        let used = &mut self.groups[..self.groups_used];
        if let Some(i) = used.iter().position(|g| g.set == set) {
            return &mut self.groups[i];
        }
        if self.groups_used == self.groups.len() {
            self.groups.push(ItemGroup::default());
        }
        let g = &mut self.groups[self.groups_used];
        self.groups_used += 1;
        g.set = set;
        g.items.clear();
        g.count = 0;
        g.rewrites = Rewrites::default();
        g
    }
}

/// How a route's condition is decided for the spans of a batch without evaluating it on each.
struct RoutePlan {
    /// Strings one of which is in a span's bytes whenever the condition holds for it
    /// ([`Condition::witnesses`]): when none is in a batch's spans, the route matches none.
    witnesses: Option<KeySearch>,
    /// The condition reads resource attributes only: evaluated once per resource.
    per_resource: bool,
}

impl RoutePlan {
    fn of(c: &Condition) -> RoutePlan {
        RoutePlan {
            witnesses: c.witnesses().map(|w| KeySearch::new(&w)),
            per_resource: c.reads_only_resource(),
        }
    }
}

/// What is known of some routes for the items of a batch or a resource, before evaluating
/// their conditions on each item.
#[derive(Clone, Copy, Default)]
struct Known {
    /// Routes that hold for none of the items (no witness in their bytes).
    never: u64,
    /// Routes that read the resource only: decided by `holds`.
    per_resource: u64,
    /// Of `per_resource`, those that hold for the current resource.
    holds: u64,
}

impl Known {
    /// Whether route `r` holds, evaluating it with `eval` only when it is not known.
    #[inline]
    fn holds(&self, r: usize, eval: impl FnOnce() -> bool) -> bool {
        let bit = 1u64.checked_shl(r as u32).unwrap_or(0);
        if self.per_resource & bit != 0 {
            self.holds & bit != 0
        } else {
            self.never & bit == 0 && eval()
        }
    }
}

/// A routing processor compiled for one pipeline on one core.
pub struct Router {
    name: String,
    signal: Signal,
    routes: Vec<(Condition, ExporterSet)>,
    /// Per route: how its condition can be decided for many spans at once.
    plans: Vec<RoutePlan>,
    default: ExporterSet,
    /// Some condition reads `trace.has_error`.
    uses_trace: bool,
    stats: RouterStats,
    scratch: RefCell<Scratch>,
}

impl Router {
    /// Adds the counters of `old` (the router a reload replaces) to this one's when they have
    /// the same name: route by route (`route="0"`, `"1"`... keep growing) and the default.
    pub fn carry_counters(&self, old: &Router) {
        if self.name != old.name {
            return;
        }
        let (new, was) = (&self.stats.routed, &old.stats.routed);
        let (Some((new_default, new_routes)), Some((was_default, was_routes))) =
            (new.split_last(), was.split_last())
        else {
            return;
        };
        for (n, w) in new_routes
            .iter()
            .zip(was_routes)
            .chain([(new_default, was_default)])
        {
            n.set(n.get() + w.get());
        }
    }

    /// Compiles `config` for `signal`'s pipeline, whose exporters are `exporters` in order.
    pub fn build(
        name: &str,
        config: &RoutingConfig,
        signal: Signal,
        exporters: &[String],
    ) -> Result<Router, RoutingError> {
        if exporters.len() > MAX_EXPORTERS {
            return Err(RoutingError::TooManyExporters);
        }
        let set = |names: &[String]| -> Result<ExporterSet, RoutingError> {
            names
                .iter()
                .try_fold(0u64, |acc, n| match exporters.iter().position(|e| e == n) {
                    Some(i) => Ok(acc | (1 << i)),
                    None => Err(RoutingError::NotInPipeline { name: n.clone() }),
                })
        };
        let mut routes = Vec::new();
        for r in &config.routes {
            // Validation checked the condition for this signal.
            let Some(expr) = r.condition(signal) else {
                continue;
            };
            routes.push((Condition::compile(expr)?, set(&r.exporters)?));
        }
        let uses_trace = routes.iter().any(|(c, _)| c.uses_trace());
        let plans = routes.iter().map(|(c, _)| RoutePlan::of(c)).collect();
        let stats = RouterStats {
            routed: (0..=routes.len()).map(|_| Cell::new(0)).collect(),
        };
        Ok(Router {
            name: name.to_string(),
            signal,
            default: set(&config.default)?,
            routes,
            plans,
            uses_trace,
            stats,
            scratch: RefCell::new(Scratch::default()),
        })
    }

    /// The route counters.
    pub fn snapshot(&self) -> RouterSnapshot {
        let n = self.routes.len();
        RouterSnapshot {
            name: self.name.clone(),
            signal: self.signal,
            routed: self
                .stats
                .routed
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let route = if i == n {
                        "default".to_string()
                    } else {
                        i.to_string()
                    };
                    (route, c.get())
                })
                .collect(),
        }
    }

    /// The route (its position; `routes.len()` for the default) of the first route whose
    /// condition holds for `fields`, with what `known` says of some routes without evaluating
    /// them.
    fn first_match(&self, fields: &impl Fields, known: &Known) -> usize {
        self.routes
            .iter()
            .enumerate()
            .position(|(r, (cond, _))| known.holds(r, || cond.eval(fields)))
            .unwrap_or(self.routes.len())
    }

    /// The routes that hold for no item whose bytes are in `hay` (no witness of theirs in it),
    /// and those decided per resource.
    fn known_in(&self, hay: Option<&[u8]>) -> Known {
        let mut k = Known::default();
        for (r, plan) in self.plans.iter().enumerate().take(64) {
            if plan.per_resource {
                k.per_resource |= 1 << r;
            } else if let (Some(hay), Some(w)) = (hay, &plan.witnesses) {
                if !w.is_match(hay) {
                    k.never |= 1 << r;
                }
            }
        }
        k
    }

    /// Sets in `known` the resource-only routes that hold for the resource `resource`.
    fn resource_routes(&self, resource: &[u8], known: &mut Known) {
        known.holds = 0;
        if known.per_resource == 0 {
            return;
        }
        let fields = SpanFields::new(&[], resource, false);
        for (r, (cond, _)) in self.routes.iter().enumerate().take(64) {
            if known.per_resource & (1 << r) != 0 && cond.eval(&fields) {
                known.holds |= 1 << r;
            }
        }
    }

    /// The exporters of route `route` (see [`Router::first_match`]).
    fn set_of(&self, route: usize) -> ExporterSet {
        self.routes.get(route).map_or(self.default, |r| r.1)
    }

    /// Routes the items of a validated logs or metrics request `buf` (of this router's
    /// signal), which `index` indexes (its log records or metrics as entries of `spans`; see
    /// [`TracesIndex::scan_items`]): each log record, or each data point, goes to the exporters
    /// of the first route whose condition holds for it, else to `default`. `out` (cleared
    /// first) receives one piece per destination set, in the order the sets first occur;
    /// items whose set is empty (an empty `default`) are dropped, counted in the default
    /// route. A request that goes to one set whole is passed on as `buf` itself (one without
    /// items, to `default`).
    pub fn route_request(&self, buf: &Bytes, index: &TracesIndex, out: &mut Vec<RoutedPiece>) {
        out.clear();
        if index.spans.is_empty() {
            // No items (resources alone): nothing to decide, and nothing to count.
            if self.default != 0 {
                out.push(RoutedPiece {
                    set: self.default,
                    piece: Encoded {
                        chunks: vec![buf.clone()],
                        len: buf.len(),
                    },
                    items: 0,
                    whole: true,
                });
            }
            return;
        }
        let mut guard = self.scratch.borrow_mut();
        let scratch = &mut *guard;
        scratch.groups_used = 0;
        let mut known = self.known_in(Some(buf));
        let mut resource: (u32, &[u8]) = (u32::MAX, &[]);
        for (i, entry) in index.spans.iter().enumerate() {
            let r = index.scopes[entry.scope as usize].resource;
            if r != resource.0 {
                resource = (r, resource_body(index, buf, r));
                self.resource_routes(resource.1, &mut known);
            }
            let item = &buf[entry.range.start as usize..entry.range.end as usize];
            match self.signal {
                Signal::Metrics => {
                    self.route_metric(buf, i as u32, item, resource.1, &known, scratch)
                }
                _ => {
                    let route = self.first_match(&LogFields::new(item, resource.1), &known);
                    bump(&self.stats.routed[route]);
                    let group = scratch.group(self.set_of(route));
                    group.items.push(i as u32);
                    group.count += 1;
                }
            }
        }
        let groups = &scratch.groups[..scratch.groups_used];
        if let [only] = groups {
            if only.set != 0 && only.rewrites.is_empty() {
                out.push(RoutedPiece {
                    set: only.set,
                    piece: Encoded {
                        chunks: vec![buf.clone()],
                        len: buf.len(),
                    },
                    items: only.count,
                    whole: true,
                });
                return;
            }
        }
        for g in groups.iter().filter(|g| g.set != 0) {
            let mut piece = Encoded::default();
            encode_items(buf, index, &g.items, Some(&g.rewrites), &mut piece);
            out.push(RoutedPiece {
                set: g.set,
                piece,
                items: g.count,
                whole: false,
            });
        }
    }

    /// Routes metric `i` (`metric`, its body, of the resource `resource`) point by point into
    /// the groups of `scratch`.
    fn route_metric(
        &self,
        buf: &Bytes,
        i: u32,
        metric: &[u8],
        resource: &[u8],
        known: &Known,
        scratch: &mut Scratch,
    ) {
        let name = metric_name(metric);
        scratch.point_sets.clear();
        for_each_metric_point(metric, |p, attributes_field| {
            let fields = PointFields::new(&metric[p], attributes_field, name, resource);
            let route = self.first_match(&fields, known);
            bump(&self.stats.routed[route]);
            scratch.point_sets.push(self.set_of(route));
        });
        let Some(&first) = scratch.point_sets.first() else {
            // No points: where a point without attributes would go (nothing to count).
            let route = self.first_match(&PointFields::new(&[], 0, name, resource), known);
            scratch.group(self.set_of(route)).items.push(i);
            return;
        };
        if scratch.point_sets.iter().all(|s| *s == first) {
            let points = scratch.point_sets.len() as u64;
            let group = scratch.group(first);
            group.items.push(i);
            group.count += points;
            return;
        }
        // Points of several sets: the metric once per set, with that set's points only.
        let sets = std::mem::take(&mut scratch.point_sets);
        for (k, &set) in sets.iter().enumerate() {
            if sets[..k].contains(&set) {
                continue;
            }
            let points = sets.iter().filter(|s| **s == set).count() as u64;
            scratch.group(set).count += points;
            if set == 0 {
                continue;
            }
            let mut at = 0usize;
            let outcome = rewrite_metric_points(metric, &mut scratch.arena, |_, _| {
                let keep = sets.get(at) == Some(&set);
                at += 1;
                if keep {
                    ItemOutcome::Keep
                } else {
                    ItemOutcome::Drop
                }
            });
            // Always a new body: the metric has points of this set and of another.
            if let ItemOutcome::Replace(body) = outcome {
                let group = scratch.group(set);
                group.items.push(i);
                group.rewrites.spans.push((i, tied_to_origin(body, buf)));
            }
        }
        scratch.point_sets = sets;
    }

    /// Every route, as bits.
    fn all_routes(&self) -> u64 {
        if self.routes.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.routes.len()) - 1
        }
    }

    /// What is known of the routes for the spans of `part` without looking at them: those
    /// that read only the resource, and those without a witness in the spans' bytes.
    /// Rewritten spans are not in the buffer, so witnesses are looked for only in a part
    /// without rewrites.
    fn known_in_part(&self, part: &SpanPart<'_>) -> Known {
        let mut known = self.known_in(None);
        if part.extra.is_none() && part.batch.index.rewrites.is_empty() {
            for (r, plan) in self.plans.iter().enumerate().take(64) {
                if let (false, Some(w)) = (plan.per_resource, &plan.witnesses) {
                    if !spans_contain(w, part.batch, part.spans.iter().copied()) {
                        known.never |= 1 << r;
                    }
                }
            }
        }
        known
    }

    /// The route every span of `parts` takes, when it is known without looking at any span:
    /// every route either holds for none of them (no witness in their bytes) or reads only the
    /// resource, and the routes that hold are the same for every resource of the spans.
    fn uniform_route(&self, parts: &[SpanPart<'_>], knowns: &[Known]) -> Option<usize> {
        let all = self.all_routes();
        let mut holds: Option<u64> = None;
        for (part, known) in parts.iter().zip(knowns) {
            if part.spans.is_empty() {
                continue;
            }
            if known.never | known.per_resource != all {
                return None;
            }
            let mut known = *known;
            let index = &part.batch.index;
            let mut last = u32::MAX;
            for &i in part.spans {
                let r = index.scopes[index.spans[i as usize].scope as usize].resource;
                if r == last {
                    continue;
                }
                last = r;
                self.resource_routes(part.resource_of(i), &mut known);
                match holds {
                    Some(h) if h != known.holds => return None,
                    _ => holds = Some(known.holds),
                }
            }
        }
        let holds = holds?;
        Some(if holds == 0 {
            self.routes.len()
        } else {
            holds.trailing_zeros() as usize
        })
    }

    /// Groups spans `spans` (ascending indices) of `batch` by the exporters their trace goes
    /// to, into `out` (cleared first; at most one group per distinct set, spans ascending).
    /// `extra`: rewrites made for this export only (the processors after the sampler), read
    /// over the batch's own.
    pub fn route_spans(
        &self,
        batch: &SpanBatch,
        spans: &[u32],
        extra: Option<&Rewrites>,
        out: &mut SpanGroups,
    ) {
        let mut outs = [std::mem::take(out)];
        self.route_parts(
            &[SpanPart {
                batch,
                spans,
                extra,
            }],
            &mut outs,
        );
        let [o] = outs;
        *out = o;
    }

    /// [`Router::route_spans`] over several parts at once (the batches a tail-sampling decision
    /// released): the spans of one trace in any part are routed together. `out[k]` gets part
    /// `k`'s groups.
    pub fn route_parts(&self, parts: &[SpanPart<'_>], out: &mut [SpanGroups]) {
        debug_assert_eq!(parts.len(), out.len());
        let mut scratch = self.scratch.borrow_mut();
        // Each part's witnesses are looked for once, for both the check below and the walk.
        scratch.knowns.clear();
        scratch
            .knowns
            .extend(parts.iter().map(|part| self.known_in_part(part)));
        if let Some(route) = self.uniform_route(parts, &scratch.knowns) {
            // Every trace goes one way: no trace needs to be told apart.
            let set = self.set_of(route);
            for (part, out) in parts.iter().zip(out.iter_mut()) {
                out.clear();
                if !part.spans.is_empty() {
                    out.push((set, part.spans.to_vec()));
                    bump_by(&self.stats.routed[route], part.spans.len() as u64);
                }
            }
            return;
        }
        let Scratch {
            traces,
            sets,
            matched,
            trace_of,
            knowns,
            ..
        } = &mut *scratch;
        traces.clear();
        sets.clear();
        matched.clear();
        trace_of.clear();
        // Traces in order of their first span, with whether any span has an error.
        // Spans of a trace often come one after another: the last trace is kept at hand.
        let mut last: Option<(TraceId, u32)> = None;
        for part in parts {
            for &i in part.spans {
                let t = part.batch.index.spans[i as usize].trace_id;
                let k = match last {
                    Some((lt, k)) if lt == t => k,
                    _ => {
                        let next = matched.len() as u32;
                        let k = *traces.entry(t).or_insert(next);
                        if k == next {
                            matched.push((0, false));
                        }
                        last = Some((t, k));
                        k
                    }
                };
                trace_of.push(k);
                if self.uses_trace {
                    let code = SpanScalars::read(part.span(i)).status_code;
                    matched[k as usize].1 |= code == 2;
                }
            }
        }
        // A route matches a trace when it holds for any span; routes after the first that
        // matched are not evaluated for that trace again.
        let all_routes = self.all_routes();
        let mut pos = 0;
        for (p, part) in parts.iter().enumerate() {
            let mut known = knowns[p];
            let all_known = known.never | known.per_resource;
            // The current resource: its index and body.
            let mut resource: Option<(u32, &[u8])> = None;
            for &i in part.spans {
                let k = trace_of[pos] as usize;
                pos += 1;
                let (bits, has_error) = matched[k];
                let undecided = if bits == 0 {
                    all_routes
                } else {
                    (1u64 << bits.trailing_zeros()) - 1
                };
                if undecided == 0 {
                    continue;
                }
                let index = &part.batch.index;
                let r_of = index.scopes[index.spans[i as usize].scope as usize].resource;
                let resource_body = match resource {
                    Some((r, body)) if r == r_of => body,
                    _ => {
                        let body = part.resource_of(i);
                        self.resource_routes(body, &mut known);
                        resource = Some((r_of, body));
                        body
                    }
                };
                if all_known & undecided == undecided {
                    // Every route still open is decided for the whole part or the resource.
                    let holds = known.holds & undecided;
                    if holds != 0 {
                        matched[k].0 |= 1 << holds.trailing_zeros();
                    }
                    continue;
                }
                let body = part.span(i);
                let fields = SpanFields::new(body, resource_body, has_error);
                for (r, (cond, _)) in self.routes.iter().enumerate() {
                    let bit = 1u64.checked_shl(r as u32).unwrap_or(0);
                    if undecided & bit == 0 {
                        break;
                    }
                    if known.holds(r, || cond.eval(&fields)) {
                        matched[k].0 |= bit;
                        break;
                    }
                }
            }
        }
        for &(bits, _) in matched.iter() {
            let route = if bits == 0 {
                self.routes.len()
            } else {
                bits.trailing_zeros() as usize
            };
            sets.push(self.routes.get(route).map_or(self.default, |r| r.1));
        }
        let mut pos = 0;
        for (part, out) in parts.iter().zip(out.iter_mut()) {
            out.clear();
            for &i in part.spans {
                let k = trace_of[pos] as usize;
                pos += 1;
                let set = sets[k];
                let route = match matched[k].0 {
                    0 => self.routes.len(),
                    b => b.trailing_zeros() as usize,
                };
                bump(&self.stats.routed[route]);
                match out.iter_mut().find(|(s, _)| *s == set) {
                    Some((_, group)) => group.push(i),
                    None => out.push((set, vec![i])),
                }
            }
        }
    }
}

/// Spans of one batch to route: ascending indices, and rewrites made for this export only.
pub struct SpanPart<'a> {
    /// The batch.
    pub batch: &'a SpanBatch,
    /// Ascending span indices.
    pub spans: &'a [u32],
    /// Rewrites read over the batch's own (the processors after the sampler).
    pub extra: Option<&'a Rewrites>,
}

impl SpanPart<'_> {
    fn span(&self, i: u32) -> &[u8] {
        self.extra
            .and_then(|x| x.span(i))
            .map_or_else(|| self.batch.span(i as usize), |b| &b[..])
    }

    fn resource_of(&self, i: u32) -> &[u8] {
        let index = &self.batch.index;
        let r = index.scopes[index.spans[i as usize].scope as usize].resource;
        match self.extra.and_then(|x| x.resource(r)) {
            Some(fields) => crate::resource_field_in(fields).unwrap_or_default(),
            None => resource_body(index, &self.batch.buf, r),
        }
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

fn bump_by(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

#[cfg(test)]
mod tests {
    //! Logs and metrics routing: every log record and data point lands in exactly the pieces of
    //! its first matching route (else `default`), pieces are slices of the request, counters add
    //! up. (Traces routing is tested through the engine's integration tests.)
    use super::*;
    use prost::Message;
    use shardtel_config::Config;
    use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
    use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use shardtel_protocol::proto::common::v1::{any_value::Value as V, AnyValue, KeyValue};
    use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use shardtel_protocol::proto::metrics::v1::{
        metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics,
    };
    use shardtel_protocol::proto::resource::v1::Resource;

    fn kv(k: &str, v: V) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> V {
        V::StringValue(v.into())
    }

    /// The routing processor `route` (its TOML body) of a `signal` pipeline whose exporters are
    /// `a`, `b`, `c` (bits 1, 2, 4).
    fn router(signal: Signal, body: &str) -> Router {
        let text = format!(
            "[receivers.otlp]\n[exporters.a]\ntype = \"blackhole\"\n[exporters.b]\ntype = \"blackhole\"\n\
             [exporters.c]\ntype = \"blackhole\"\n[processors.route]\ntype = \"routing\"\n{body}\n\
             [pipelines.{}]\nreceivers = [\"otlp\"]\nprocessors = [\"route\"]\nexporters = [\"a\", \"b\", \"c\"]\n",
            signal.name()
        );
        let config = Config::from_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let mut p = crate::Processors::build(&config).unwrap();
        match signal {
            Signal::Logs => p.logs_router.take(),
            _ => p.metrics_router.take(),
        }
        .expect("a router")
    }

    fn route(router: &Router, signal: Signal, buf: &Bytes) -> Vec<RoutedPiece> {
        let mut index = TracesIndex::default();
        index.scan_items(buf, signal).unwrap();
        let mut out = Vec::new();
        router.route_request(buf, &index, &mut out);
        out
    }

    /// Every chunk of `piece` that is longer than a length prefix is a slice of `buf`.
    fn slices_of(piece: &Encoded, buf: &Bytes) -> bool {
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        piece
            .chunks
            .iter()
            .filter(|c| c.len() > 6)
            .all(|c| range.contains(&(c.as_ptr() as usize)))
    }

    /// A piece as the tests compare it: its set, what it holds, its item count.
    type Routed<T> = (ExporterSet, Vec<T>, u64);

    fn routed(router: &Router) -> Vec<(String, u64)> {
        router.snapshot().routed
    }

    fn record(n: i64, severity: i32, body: &str) -> LogRecord {
        LogRecord {
            severity_number: severity,
            severity_text: ["", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
                [(severity as usize).div_ceil(4)]
            .into(),
            body: Some(AnyValue {
                value: Some(s(body)),
            }),
            attributes: vec![kv("n", V::IntValue(n))],
            ..Default::default()
        }
    }

    fn logs(resources: Vec<(&str, Vec<LogRecord>)>) -> Bytes {
        let req = ExportLogsServiceRequest {
            resource_logs: resources
                .into_iter()
                .map(|(env, log_records)| ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![kv("env", s(env))],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records,
                        schema_url: "scope".into(),
                        ..Default::default()
                    }],
                    schema_url: "res".into(),
                })
                .collect(),
        };
        Bytes::from(req.encode_to_vec())
    }

    /// `(env, n)` of every record of a piece.
    fn records_of(piece: &Encoded) -> Vec<(String, i64)> {
        let req = ExportLogsServiceRequest::decode(piece.to_bytes()).unwrap();
        let mut out = Vec::new();
        for rl in req.resource_logs {
            assert_eq!(rl.schema_url, "res");
            let env = match &rl.resource.unwrap().attributes[0].value {
                Some(AnyValue {
                    value: Some(V::StringValue(e)),
                }) => e.clone(),
                other => panic!("{other:?}"),
            };
            for sl in rl.scope_logs {
                assert_eq!(sl.schema_url, "scope");
                for r in sl.log_records {
                    let Some(AnyValue {
                        value: Some(V::IntValue(n)),
                    }) = r.attributes[0].value
                    else {
                        panic!()
                    };
                    out.push((env.clone(), n));
                }
            }
        }
        out
    }

    #[test]
    fn log_records_go_one_by_one_to_their_first_matching_route() {
        let r = router(
            Signal::Logs,
            r#"default = ["a"]
[[processors.route.routes]]
condition = 'severity_number >= SEVERITY_NUMBER_ERROR'
exporters = ["b"]
[[processors.route.routes]]
condition = 'resource.attributes["env"] == "dev" or IsMatch(body, "^audit")'
exporters = ["b", "c"]
[[processors.route.routes]]
condition = 'severity_text == "WARN" and attributes["n"] > 3'
exporters = ["c"]
"#,
        );
        let buf = logs(vec![
            (
                "prod",
                vec![
                    record(0, 9, "ok"),
                    record(1, 17, "boom"),
                    record(2, 13, "audit: x"),
                    record(3, 13, "warn"),
                    record(4, 13, "warn"),
                    record(5, 21, "fatal"),
                ],
            ),
            ("dev", vec![record(6, 9, "ok"), record(7, 18, "err")]),
        ]);
        let pieces = route(&r, Signal::Logs, &buf);
        let by_set: Vec<Routed<(String, i64)>> = pieces
            .iter()
            .map(|p| (p.set, records_of(&p.piece), p.items))
            .collect();
        let prod = |ns: &[i64]| {
            ns.iter()
                .map(|n| ("prod".to_string(), *n))
                .collect::<Vec<_>>()
        };
        let mut dev_and_audit = prod(&[2]);
        dev_and_audit.push(("dev".into(), 6));
        let mut errors = prod(&[1, 5]);
        errors.push(("dev".into(), 7));
        assert_eq!(
            by_set,
            vec![
                (0b001, prod(&[0, 3]), 2),
                (0b010, errors, 3),
                (0b110, dev_and_audit, 2),
                (0b100, prod(&[4]), 1),
            ]
        );
        assert!(pieces.iter().all(|p| !p.whole && slices_of(&p.piece, &buf)));
        assert_eq!(
            routed(&r),
            [("0", 3), ("1", 2), ("2", 1), ("default", 2)]
                .map(|(k, n)| (k.to_string(), n))
                .to_vec()
        );
    }

    #[test]
    fn a_request_that_goes_one_way_is_passed_on_whole_and_an_empty_default_drops() {
        let r = router(
            Signal::Logs,
            r#"[[processors.route.routes]]
condition = 'severity_number >= SEVERITY_NUMBER_WARN'
exporters = ["b"]
"#,
        );
        let buf = logs(vec![("prod", vec![record(0, 13, "w"), record(1, 17, "e")])]);
        let pieces = route(&r, Signal::Logs, &buf);
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].whole);
        assert_eq!(pieces[0].piece.chunks.len(), 1);
        assert_eq!(pieces[0].piece.chunks[0].as_ptr(), buf.as_ptr());
        assert_eq!(pieces[0].items, 2);
        // No default: unmatched records go nowhere, counted under "default".
        let buf = logs(vec![("prod", vec![record(0, 9, "i"), record(1, 17, "e")])]);
        let pieces = route(&r, Signal::Logs, &buf);
        assert_eq!(pieces.len(), 1);
        assert_eq!(records_of(&pieces[0].piece), vec![("prod".to_string(), 1)]);
        let buf = logs(vec![("prod", vec![record(0, 9, "i")])]);
        assert!(route(&r, Signal::Logs, &buf).is_empty());
        assert_eq!(
            routed(&r),
            vec![("0".to_string(), 3), ("default".to_string(), 2)]
        );
    }

    fn gauge(name: &str, tenants: &[&str]) -> Metric {
        Metric {
            name: name.into(),
            unit: "1".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: tenants
                    .iter()
                    .enumerate()
                    .map(|(i, t)| NumberDataPoint {
                        attributes: vec![kv("tenant", s(t))],
                        value: Some(number_data_point::Value::AsInt(i as i64)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    fn metrics(metrics: Vec<Metric>) -> Bytes {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("shop"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        Bytes::from(req.encode_to_vec())
    }

    /// `(metric, tenant or bucket count, value)` of every point of a piece.
    fn points_of(piece: &Encoded) -> Vec<(String, String)> {
        let req = ExportMetricsServiceRequest::decode(piece.to_bytes()).unwrap();
        let mut out = Vec::new();
        for m in req
            .resource_metrics
            .into_iter()
            .flat_map(|r| r.scope_metrics)
            .flat_map(|s| s.metrics)
        {
            assert_eq!(m.unit, "1", "the metric's other fields stay");
            match m.data {
                Some(metric::Data::Gauge(g)) => {
                    for p in g.data_points {
                        let Some(AnyValue {
                            value: Some(V::StringValue(t)),
                        }) = &p.attributes[0].value
                        else {
                            panic!()
                        };
                        out.push((m.name.clone(), t.clone()));
                    }
                }
                Some(metric::Data::Histogram(h)) => {
                    for p in h.data_points {
                        out.push((m.name.clone(), format!("count {}", p.count)));
                    }
                }
                None => out.push((m.name.clone(), "no points".into())),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn data_points_go_one_by_one_and_a_split_metric_keeps_only_its_points() {
        let r = router(
            Signal::Metrics,
            r#"default = ["a"]
[[processors.route.routes]]
condition = 'metric.name == "errors" or IsMatch(metric.name, "^latency")'
exporters = ["b"]
[[processors.route.routes]]
condition = 'attributes["tenant"] == "vip" and resource.attributes["service.name"] == "shop"'
exporters = ["b", "c"]
"#,
        );
        let latency = Metric {
            name: "latency".into(),
            unit: "1".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 3,
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        };
        let empty = Metric {
            name: "errors".into(),
            unit: "1".into(),
            ..Default::default()
        };
        let buf = metrics(vec![
            gauge("requests", &["x", "vip", "y", "vip"]),
            gauge("errors", &["vip", "x"]),
            latency,
            gauge("cpu", &["x"]),
            empty,
        ]);
        let pieces = route(&r, Signal::Metrics, &buf);
        let got: Vec<Routed<(String, String)>> = pieces
            .iter()
            .map(|p| (p.set, points_of(&p.piece), p.items))
            .collect();
        let pts = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            got,
            vec![
                (
                    0b001,
                    pts(&[("requests", "x"), ("requests", "y"), ("cpu", "x")]),
                    3
                ),
                (0b110, pts(&[("requests", "vip"), ("requests", "vip")]), 2),
                (
                    0b010,
                    pts(&[
                        ("errors", "vip"),
                        ("errors", "x"),
                        ("latency", "count 3"),
                        ("errors", "no points")
                    ]),
                    3
                ),
            ]
        );
        // Whole metrics stay slices of the request; only `requests` (split) was copied.
        assert!(slices_of(&pieces[2].piece, &buf));
        assert_eq!(
            routed(&r),
            vec![
                ("0".to_string(), 3),
                ("1".to_string(), 2),
                ("default".to_string(), 3)
            ]
        );
    }

    /// A reload builds new processors; the logs and metrics routers' counters carry over,
    /// route by route, as the traces router's do.
    #[test]
    fn reload_carries_the_logs_and_metrics_route_counters() {
        let text = "[receivers.otlp]\n[exporters.a]\ntype = \"blackhole\"\n[exporters.b]\ntype = \"blackhole\"\n\
             [processors.route]\ntype = \"routing\"\ndefault = [\"a\"]\n[[processors.route.routes]]\n\
             condition = 'attributes[\"n\"] == 1'\nexporters = [\"b\"]\n\
             [pipelines.logs]\nreceivers = [\"otlp\"]\nprocessors = [\"route\"]\nexporters = [\"a\", \"b\"]\n\
             [pipelines.metrics]\nreceivers = [\"otlp\"]\nprocessors = [\"route\"]\nexporters = [\"a\", \"b\"]\n";
        let config = Config::from_str(text, "t.toml").unwrap();
        let old = crate::Processors::build(&config).unwrap();
        let buf = logs(vec![("prod", vec![record(1, 9, "x"), record(2, 9, "y")])]);
        route(old.logs_router.as_ref().unwrap(), Signal::Logs, &buf);
        let buf = metrics(vec![gauge("m", &["a", "b", "c"])]);
        route(old.metrics_router.as_ref().unwrap(), Signal::Metrics, &buf);
        let mut new = crate::Processors::build(&config).unwrap();
        new.carry_over(&old);
        let counters: Vec<(Signal, Vec<(String, u64)>)> = new
            .router_snapshot()
            .into_iter()
            .map(|r| (r.signal, r.routed))
            .collect();
        let c = |a: u64, d: u64| vec![("0".to_string(), a), ("default".to_string(), d)];
        assert_eq!(
            counters,
            vec![(Signal::Metrics, c(0, 3)), (Signal::Logs, c(1, 1))]
        );
    }

    mod model {
        //! Random logs requests and routes: each record is in exactly the pieces of the first
        //! route its severity and attribute match (else the default), once.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]
            #[test]
            fn every_record_lands_once_where_its_first_route_says(
                resources in prop::collection::vec(
                    prop::collection::vec((1i32..25, 0i64..4), 0..8), 1..4),
                min_severity in 1i32..25,
                wanted in 0i64..4,
                empty_default in any::<bool>(),
            ) {
                let default = if empty_default { "" } else { "\"a\"" };
                let r = router(Signal::Logs, &format!(
                    "default = [{default}]\n[[processors.route.routes]]\ncondition = 'severity_number >= {min_severity}'\nexporters = [\"b\"]\n\
                     [[processors.route.routes]]\ncondition = 'attributes[\"n\"] == {wanted}'\nexporters = [\"a\", \"c\"]\n"));
                let mut n = 0;
                let mut expected: Vec<(ExporterSet, Vec<(String, i64)>)> = Vec::new();
                let mut rs = Vec::new();
                for (k, recs) in resources.iter().enumerate() {
                    let env = format!("r{k}");
                    let mut records = Vec::new();
                    for (sev, attr) in recs {
                        let rec = record(*attr, *sev, "b");
                        let set = if *sev >= min_severity { 0b010 } else if *attr == wanted { 0b101 } else if empty_default { 0 } else { 0b001 };
                        if set != 0 {
                            match expected.iter_mut().find(|(s, _)| *s == set) {
                                Some((_, v)) => v.push((env.clone(), *attr)),
                                None => expected.push((set, vec![(env.clone(), *attr)])),
                            }
                        }
                        records.push(rec);
                        n += 1;
                    }
                    rs.push((env, records));
                }
                let buf = {
                    let req = ExportLogsServiceRequest {
                        resource_logs: rs.iter().map(|(env, recs)| ResourceLogs {
                            resource: Some(Resource { attributes: vec![kv("env", s(env))], ..Default::default() }),
                            scope_logs: vec![ScopeLogs { log_records: recs.clone(), schema_url: "scope".into(), ..Default::default() }],
                            schema_url: "res".into(),
                        }).collect(),
                    };
                    Bytes::from(req.encode_to_vec())
                };
                if n == 0 && !empty_default {
                    // No records: the request goes to the default as it is.
                    expected.push((0b001, Vec::new()));
                }
                let pieces = route(&r, Signal::Logs, &buf);
                let got: Vec<(ExporterSet, Vec<(String, i64)>)> =
                    pieces.iter().map(|p| (p.set, records_of(&p.piece))).collect();
                prop_assert_eq!(got, expected);
                let total: u64 = routed(&r).iter().map(|(_, n)| n).sum();
                prop_assert_eq!(total, n as u64);
            }
        }
    }

    mod traces_model {
        //! Random traces and routes: each trace goes to the first route whose condition holds
        //! for any of its spans (evaluated here on decoded spans), else the default. The
        //! shortcuts (routes without a witness in the batch, routes decided once per resource)
        //! never change where a trace goes.
        use super::*;
        use proptest::prelude::*;
        use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
        use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

        type Pred = fn(&Span, &[KeyValue], bool) -> bool;

        fn get<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a V> {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        }

        fn is_str(v: Option<&V>, want: &str) -> bool {
            matches!(v, Some(V::StringValue(x)) if x == want)
        }

        const POOL: &[(&str, Pred)] = &[
            (r#"resource.attributes["env"] == "dev""#, |_, r, _| {
                is_str(get(r, "env"), "dev")
            }),
            (r#"attributes["debug"] == true"#, |sp, _, _| {
                matches!(get(&sp.attributes, "debug"), Some(V::BoolValue(true)))
            }),
            ("trace.has_error", |_, _, e| e),
            (
                r#"attributes["key.a"] == "val-x" or name == "GET /a""#,
                |sp, _, _| is_str(get(&sp.attributes, "key.a"), "val-x") || sp.name == "GET /a",
            ),
            (
                r#"resource.attributes["env"] != "dev" and attributes["key.b"] > 0"#,
                |sp, r, _| {
                    !is_str(get(r, "env"), "dev")
                        && match get(&sp.attributes, "key.b") {
                            Some(V::IntValue(i)) => *i > 0,
                            Some(V::DoubleValue(d)) => *d > 0.0,
                            _ => false,
                        }
                },
            ),
            (r#"not (attributes["key.a"] == "val-y")"#, |sp, _, _| {
                !is_str(get(&sp.attributes, "key.a"), "val-y")
            }),
            (
                r#"IsMatch(attributes["key.a"], "^val-x")"#,
                |sp, _, _| matches!(get(&sp.attributes, "key.a"), Some(V::StringValue(x)) if x.starts_with("val-x")),
            ),
            (r#"attributes["zz"] == nil"#, |_, _, _| true),
            (r#"attributes["key.a"] != "val-x""#, |sp, _, _| {
                !is_str(get(&sp.attributes, "key.a"), "val-x")
            }),
            (
                r#"status.code == STATUS_CODE_ERROR and attributes["key.a"] == "val-xy""#,
                |sp, _, _| {
                    sp.status.as_ref().is_some_and(|s| s.code == 2)
                        && is_str(get(&sp.attributes, "key.a"), "val-xy")
                },
            ),
            (
                r#"resource.attributes["env"] == "dev" or attributes["key.a"] == "val-xy""#,
                |sp, r, _| {
                    is_str(get(r, "env"), "dev") || is_str(get(&sp.attributes, "key.a"), "val-xy")
                },
            ),
        ];

        fn value() -> impl Strategy<Value = V> {
            prop_oneof![
                prop::sample::select(vec!["val-x", "val-y", "val-xy", "GET /a", "dev"]).prop_map(s),
                (-1i64..3).prop_map(V::IntValue),
                any::<bool>().prop_map(V::BoolValue),
                Just(V::DoubleValue(0.5)),
            ]
        }

        fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
            prop::collection::btree_map(
                prop::sample::select(vec!["key.a", "key.b", "debug", "key.c"]),
                value(),
                0..4,
            )
            .prop_map(|m| m.into_iter().map(|(k, v)| kv(k, v)).collect())
        }

        fn any_span() -> impl Strategy<Value = Span> {
            (
                attributes(),
                prop::sample::select(vec!["GET /a", "x"]),
                0i32..3,
                0u8..4,
            )
                .prop_map(|(attributes, name, code, trace)| Span {
                    trace_id: vec![trace + 1; 16],
                    span_id: vec![2; 8],
                    name: name.into(),
                    attributes,
                    status: (code != 0).then(|| Status {
                        code,
                        message: String::new(),
                    }),
                    ..Default::default()
                })
        }

        fn env() -> impl Strategy<Value = Vec<KeyValue>> {
            prop::sample::select(vec![None, Some("dev"), Some("prod")])
                .prop_map(|e| e.map(|e| vec![kv("env", s(e))]).unwrap_or_default())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn every_trace_goes_where_its_first_matching_route_says(
                resources in prop::collection::vec(
                    (env(), prop::collection::vec(any_span(), 0..6)), 1..4),
                picks in prop::collection::vec(0..POOL.len(), 1..4),
            ) {
                let mut text = String::from("[receivers.otlp]\n");
                for e in 0..4 {
                    text += &format!("[exporters.e{e}]\ntype = \"blackhole\"\n");
                }
                text += "[processors.route]\ntype = \"routing\"\ndefault = [\"e3\"]\n";
                for (k, &p) in picks.iter().enumerate() {
                    text += &format!(
                        "[[processors.route.routes]]\ncondition = '{}'\nexporters = [\"e{k}\"]\n",
                        POOL[p].0
                    );
                }
                text += "[pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"route\"]\n\
                         exporters = [\"e0\", \"e1\", \"e2\", \"e3\"]\n";
                let config = Config::from_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
                let router = crate::Processors::build(&config).unwrap().traces_router.take().unwrap();

                // The reference: per trace, whether it has an error, then its first route.
                let spans: Vec<(&Span, &[KeyValue])> = resources
                    .iter()
                    .flat_map(|(r, sp)| sp.iter().map(move |sp| (sp, &r[..])))
                    .collect();
                let has_error = |t: &[u8]| {
                    spans.iter().any(|(sp, _)| {
                        sp.trace_id == t && sp.status.as_ref().is_some_and(|s| s.code == 2)
                    })
                };
                let route_of = |t: &[u8]| {
                    let e = has_error(t);
                    picks
                        .iter()
                        .position(|&p| {
                            spans
                                .iter()
                                .any(|(sp, r)| sp.trace_id == t && (POOL[p].1)(sp, r, e))
                        })
                        .unwrap_or(3)
                };
                let mut expected: SpanGroups = Vec::new();
                for (i, (sp, _)) in spans.iter().enumerate() {
                    let set = 1 << route_of(&sp.trace_id);
                    match expected.iter_mut().find(|(s, _)| *s == set) {
                        Some((_, g)) => g.push(i as u32),
                        None => expected.push((set, vec![i as u32])),
                    }
                }

                let req = ExportTraceServiceRequest {
                    resource_spans: resources
                        .iter()
                        .map(|(r, sp)| ResourceSpans {
                            resource: Some(Resource { attributes: r.clone(), ..Default::default() }),
                            scope_spans: vec![ScopeSpans { spans: sp.clone(), ..Default::default() }],
                            ..Default::default()
                        })
                        .collect(),
                };
                let batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
                let all: Vec<u32> = (0..batch.index.spans.len() as u32).collect();
                let mut got = Vec::new();
                router.route_spans(&batch, &all, None, &mut got);
                prop_assert_eq!(got, expected, "routes {:?}", picks.iter().map(|&p| POOL[p].0).collect::<Vec<_>>());
            }
        }
    }
}
