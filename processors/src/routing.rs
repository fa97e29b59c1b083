//! The `routing` processor: which of a pipeline's exporters each trace (its spans in a batch on
//! the owner core), log record or data point goes to.
//!
//! Routes are tried in order; the first whose condition holds wins, else `default`. A trace
//! matches a route when its condition holds for any of its spans (with `trace.has_error` true
//! when any of them has status ERROR), so a trace is never split between routes. The spans of
//! each destination set are re-framed as slices of the request buffer: nothing is copied, and
//! one encoding is shared (reference-counted) by every exporter of the set.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use shardtel_config::{RoutingConfig, Signal};
use shardtel_protocol::hash::TraceIdHashBuilder;
use shardtel_protocol::scan::{Rewrites, SpanBatch};
use shardtel_protocol::TraceId;

use crate::condition::{Condition, SpanFields, SpanScalars};
use crate::resource_body;

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

#[derive(Default)]
struct Scratch {
    traces: HashMap<TraceId, u32, TraceIdHashBuilder>,
    /// Per trace (in order of first span): the set it goes to.
    sets: Vec<ExporterSet>,
    /// Per trace: the route bits that matched some span so far, and whether it has an error.
    matched: Vec<(u64, bool)>,
    /// Per span of the walk: its trace's position in `sets`.
    trace_of: Vec<u32>,
}

/// A routing processor compiled for one pipeline on one core.
pub struct Router {
    name: String,
    signal: Signal,
    routes: Vec<(Condition, ExporterSet)>,
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
        let stats = RouterStats {
            routed: (0..=routes.len()).map(|_| Cell::new(0)).collect(),
        };
        Ok(Router {
            name: name.to_string(),
            signal,
            default: set(&config.default)?,
            routes,
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
        let Scratch {
            traces,
            sets,
            matched,
            trace_of,
        } = &mut *scratch;
        traces.clear();
        sets.clear();
        matched.clear();
        trace_of.clear();
        // Traces in order of their first span, with whether any span has an error.
        for part in parts {
            for &i in part.spans {
                let t = part.batch.index.spans[i as usize].trace_id;
                let next = matched.len() as u32;
                let k = *traces.entry(t).or_insert(next);
                if k == next {
                    matched.push((0, false));
                }
                trace_of.push(k);
                if self.uses_trace {
                    let code = SpanScalars::read(part.span(i)).status_code;
                    matched[k as usize].1 |= code == 2;
                }
            }
        }
        // A route matches a trace when it holds for any span; routes after the first that
        // matched are not evaluated for that trace again.
        let all_routes = if self.routes.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.routes.len()) - 1
        };
        let mut pos = 0;
        for part in parts {
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
                let body = part.span(i);
                let fields = SpanFields::new(body, part.resource_of(i), has_error);
                for (r, (cond, _)) in self.routes.iter().enumerate() {
                    if undecided & (1 << r) == 0 {
                        break;
                    }
                    if cond.eval(&fields) {
                        matched[k].0 |= 1 << r;
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
