//! The `attributes`, `resource`, `filter`, `transform`, `routing` and `spanmetrics` processors of
//! each pipeline, per core, and where they run.
//!
//! A pipeline's processors (without `tail_sampling` and `memory_limiter`, which act elsewhere)
//! form a [`Chain`], applied to one item at a time in the listed order:
//!
//! - **Traces**, on the owner core: the processors listed before `tail_sampling` run on every
//!   span the core receives ([`Processors::traces_before`]), those after it on the spans the
//!   sampler keeps ([`Processors::traces_after`]); without a sampler all run before export.
//!   [`Chain::process_traces`] works on the batch's index: a span an action changes gets a new
//!   body recorded in [`shardtel_protocol::scan::Rewrites`], a filtered span leaves the index,
//!   a changed resource gets new header bytes; every other span stays a slice of the request
//!   buffer.
//! - **Metrics and logs**, on the receiving core: [`Chain::process_request`] re-frames the
//!   request around the changed records / data points
//!   ([`shardtel_protocol::rewrite::rewrite_request`]); a request nothing changed is exported
//!   as the buffer it arrived in.
//!
//! A pipeline's `routing` processor (its last) is compiled into a [`Router`] beside the chain:
//! on the owner core for traces ([`Router::route_parts`], whole traces), on the receiving core
//! for metrics and logs ([`Router::route_request`], each data point or log record), choosing the
//! pipeline's exporters ([`ExporterSet`]) of each item; see [`routing`].
//!
//! Before touching a span, an `attributes` stage whose actions all need an exact key looks for
//! those keys in the span's bytes (SIMD substring search): a span that contains none of them is
//! not parsed further.
//!
//! Depends on `shardtel-protocol` (scanner, re-framing, wire-level rewrites) and
//! `shardtel-config` only: the engine compiles a [`Processors`] value on each core, calls it on
//! the hot path, and publishes its counters ([`ProcessorSnapshot`]) as metric families.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod attributes;
pub mod condition;
mod filter;
pub mod routing;
mod spanmetrics;
mod transform;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use shardtel_config::{Config, ProcessorConfig};
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::rewrite::{
    fields, last_len_field, read_attributes, rewrite_metric_points, rewrite_request, write_message,
    write_resource, Attr, AttrValue, FieldEdit, ItemOutcome, RequestRewriter, RequestScratch,
};
use shardtel_protocol::scan::{SpanBatch, TracesIndex};
use shardtel_protocol::wire::{put_len_field, Reader, Value, WireError};
use shardtel_protocol::Signal;

pub use attributes::Actions;
pub use filter::Filter;
pub use routing::{
    ExporterSet, RoutedPiece, Router, RouterSnapshot, RoutingError, SpanGroups, SpanPart,
};
pub use spanmetrics::{SpanMetrics, SpanMetricsSnapshot};
pub use transform::Transform;

/// Why the processors of a (validated) configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A pipeline lists a processor that `[processors]` does not define.
    #[error("processor {name} is not defined")]
    Undefined {
        /// The processor's name.
        name: String,
    },
    /// A routing processor could not be built.
    #[error("processor {name}: {source}")]
    Routing {
        /// The processor's name.
        name: String,
        /// Why.
        #[source]
        source: RoutingError,
    },
    /// A processor's regular expression does not compile.
    #[error("processor {name}: {source}")]
    InvalidRegex {
        /// The processor's name.
        name: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
}

/// `Span.events`.
const SPAN_EVENTS: u32 = 11;

/// What kind of message an [`Item`] is.
#[derive(Clone, Copy, Debug)]
pub enum ItemKind<'a> {
    /// A `Span`.
    Span,
    /// A `LogRecord` (has a body).
    Log,
    /// A metric data point, with its metric's name.
    Point {
        /// `Metric.name`.
        metric_name: &'a [u8],
    },
    /// A `Resource`.
    Resource,
    /// A `Span.Event` (its name is field 2).
    SpanEvent,
}

/// One message going through a chain: its original bytes and, once read, its attributes
/// (pointing into those bytes until an action changes them) and log body.
pub struct Item<'a> {
    msg: &'a [u8],
    kind: ItemKind<'a>,
    attr_field: u32,
    attrs: &'a mut Vec<Attr>,
    read: bool,
    body: AttrValue,
    body_changed: bool,
    /// Other fields a `transform` replaced: `(field, new length-delimited value)`.
    edits: Vec<(u32, Bytes)>,
    /// A span's events once a `spanevent` statement changed one: every event's body, in
    /// order (the unchanged ones copied), written in place of the original `events`.
    events: Option<Vec<Bytes>>,
    /// Some action changed the item.
    pub changed: bool,
}

impl<'a> Item<'a> {
    /// An item over `msg`, using `scratch` for its attribute list.
    pub fn new(
        msg: &'a [u8],
        kind: ItemKind<'a>,
        attr_field: u32,
        scratch: &'a mut Vec<Attr>,
    ) -> Item<'a> {
        let body = match kind {
            ItemKind::Log => {
                last_len_field(msg, fields::LOG_BODY).map_or(AttrValue::Absent, AttrValue::Orig)
            }
            _ => AttrValue::Absent,
        };
        Item {
            msg,
            kind,
            attr_field,
            attrs: scratch,
            read: false,
            body,
            body_changed: false,
            edits: Vec::new(),
            events: None,
            changed: false,
        }
    }

    /// The new value of field `field`, if a statement replaced it.
    fn edit(&self, field: u32) -> Option<&[u8]> {
        self.edits
            .iter()
            .rev()
            .find(|(f, _)| *f == field)
            .map(|(_, b)| &b[..])
    }

    /// Replaces length-delimited field `field` (a span's name or status, a log record's
    /// severity text).
    fn set_edit(&mut self, field: u32, value: Bytes) {
        self.edits.retain(|(f, _)| *f != field);
        self.edits.push((field, value));
        self.changed = true;
    }

    /// The attribute list, read on first use.
    pub fn attrs(&mut self) -> &mut Vec<Attr> {
        if !self.read {
            read_attributes(self.msg, self.attr_field, self.attrs);
            self.read = true;
        }
        self.attrs
    }

    fn has_body(&self) -> bool {
        matches!(self.kind, ItemKind::Log)
    }

    fn set_body(&mut self, value: AttrValue) {
        self.body = value;
        self.body_changed = true;
        self.changed = true;
    }

    /// The new encoding of the item if an action changed it (written into `arena`).
    pub fn finish(&mut self, arena: &mut BytesMut) -> Option<Bytes> {
        if !self.changed {
            return None;
        }
        self.attrs();
        let edit = self.body_changed.then_some(FieldEdit {
            field: fields::LOG_BODY,
            value: &self.body,
        });
        write_message(self.msg, self.attr_field, self.attrs, edit, arena);
        let mut out = arena.split().freeze();
        // Each other replaced field: one more pass (only items a transform changed).
        for (field, value) in &self.edits {
            let value = AttrValue::Encoded(value.clone());
            let edit = Some(FieldEdit {
                field: *field,
                value: &value,
            });
            // Field 0 never occurs: every attribute is copied as it is.
            write_message(&out, 0, &[], edit, arena);
            out = arena.split().freeze();
        }
        // Events a `spanevent` statement changed: every original event left out, the new list
        // appended (in order; OTLP does not order a message's fields).
        if let Some(events) = &self.events {
            write_message(&out, SPAN_EVENTS, &[], None, arena);
            for e in events {
                put_len_field(arena, SPAN_EVENTS, e);
            }
            out = arena.split().freeze();
        }
        Some(out)
    }
}

/// Per-core counters of one processor in one pipeline.
#[derive(Debug, Default)]
pub struct StageStats {
    received: Cell<u64>,
    changed: Cell<u64>,
    dropped: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// A published copy of one processor's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorSnapshot {
    /// The processor's name.
    pub name: String,
    /// Its type.
    pub kind: &'static str,
    /// The pipeline.
    pub signal: Signal,
    /// Items (spans, data points, log records; resources for `resource`) it saw.
    pub received: u64,
    /// Items it changed.
    pub changed: u64,
    /// Items it dropped (filter).
    pub dropped: u64,
}

#[derive(Debug)]
enum Op {
    Attributes {
        actions: Actions,
        include_resource: bool,
    },
    Resource(Actions),
    Filter(Box<Filter>),
    Transform(Box<Transform>),
}

#[derive(Debug)]
struct Stage {
    name: String,
    op: Op,
    stats: StageStats,
}

impl Stage {
    fn resource_actions(&self) -> Option<&Actions> {
        match &self.op {
            Op::Attributes {
                actions,
                include_resource: true,
            } => Some(actions),
            Op::Resource(actions) => Some(actions),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self.op {
            Op::Attributes { .. } => "attributes",
            Op::Resource(_) => "resource",
            Op::Filter(_) => "filter",
            Op::Transform(_) => "transform",
        }
    }
}

#[derive(Default)]
struct Scratch {
    attrs: Vec<Attr>,
    arena: BytesMut,
    request: RequestScratch,
    /// Resource bodies seen by each stage of the current resource (see `resource_views`).
    versions: Vec<Bytes>,
    at_stage: Vec<usize>,
    drops: Vec<u32>,
    rewrites: Vec<(u32, Bytes)>,
    /// Resources a subset of spans belongs to ([`Chain::process_trace_spans`]).
    resources_used: Vec<bool>,
}

/// What a chain did to some spans of a shared batch ([`Chain::process_trace_spans`]).
#[derive(Clone, Debug, Default)]
pub struct SpanChanges {
    /// Spans filters dropped (ascending).
    pub dropped: Vec<u32>,
    /// Spans and resources rewritten.
    pub rewrites: shardtel_protocol::scan::Rewrites,
}

/// What a chain did to a batch or request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainOutcome {
    /// Something was rewritten or dropped.
    pub changed: bool,
    /// Items removed by filters.
    pub dropped: u64,
}

/// Looks for any of a few keys: one SIMD substring search per key (memchr's `memmem`; measured
/// faster than a one-pass multi-key search such as Teddy here, whose 3-byte fingerprints match
/// every `http.*` key of a typical span).
pub(crate) struct KeySearch(Vec<Finder<'static>>);

impl KeySearch {
    /// A search for any of `needles`.
    pub(crate) fn new(needles: &[Vec<u8>]) -> KeySearch {
        KeySearch(
            needles
                .iter()
                .map(|n| Finder::new(n).into_owned())
                .collect(),
        )
    }

    fn is_match(&self, haystack: &[u8]) -> bool {
        self.0.iter().any(|f| f.find(haystack).is_some())
    }
}

/// Bytes between two spans' ranges (their tag and length) that still join them into one run
/// to search.
const SPAN_GAP: usize = 16;

/// Whether any of `keys` occurs in the bytes of spans `spans` (ascending ranges in the batch's
/// buffer, as a scan or a partition leaves them): neighbouring spans are searched as one run,
/// so a run may also cover the few bytes between them (a false "maybe", never a miss).
pub(crate) fn spans_contain(
    keys: &KeySearch,
    batch: &SpanBatch,
    spans: impl Iterator<Item = u32>,
) -> bool {
    let buf = &batch.buf[..];
    let mut run: Option<(usize, usize)> = None;
    for i in spans {
        let r = &batch.index.spans[i as usize].range;
        let (start, end) = (r.start as usize, r.end as usize);
        match &mut run {
            Some((_, run_end)) if start >= *run_end && start - *run_end <= SPAN_GAP => {
                *run_end = end;
            }
            _ => {
                if let Some((a, b)) = run.replace((start, end)) {
                    if keys.is_match(&buf[a..b]) {
                        return true;
                    }
                }
            }
        }
    }
    run.is_some_and(|(a, b)| keys.is_match(&buf[a..b]))
}

/// The processors of one pipeline (or one side of the tail sampler), in order, on one core.
pub struct Chain {
    signal: Signal,
    stages: Vec<Stage>,
    touches_resources: bool,
    /// Some stage changes or reads resources.
    reads_resources: bool,
    /// When every stage is an `attributes` stage on items only or a `transform` whose every
    /// statement needs some string in an item to change it ([`Transform::presence`]): all those
    /// strings, looked for in the spans before any is parsed; `None` when some stage may change
    /// any item.
    needed_keys: Option<KeySearch>,
    scratch: RefCell<Scratch>,
}

impl Chain {
    /// Compiles the processors `names` (those that act on items) of `signal`'s pipeline.
    /// `None` when none of them does.
    pub fn build(
        config: &Config,
        signal: Signal,
        names: &[String],
    ) -> Result<Option<Chain>, ProcessorError> {
        let mut stages = Vec::new();
        for name in names {
            let err = |source| ProcessorError::InvalidRegex {
                name: name.clone(),
                source,
            };
            let op = match config.processors.get(name) {
                Some(ProcessorConfig::Attributes(a)) => Op::Attributes {
                    actions: Actions::compile(&a.actions).map_err(err)?,
                    include_resource: a.include_resource,
                },
                Some(ProcessorConfig::Resource(r)) => {
                    Op::Resource(Actions::compile(&r.attributes).map_err(err)?)
                }
                Some(ProcessorConfig::Filter(f)) => match f.rules(to_config_signal(signal)) {
                    Some(rules) => Op::Filter(Box::new(Filter::compile(rules).map_err(err)?)),
                    None => continue,
                },
                Some(ProcessorConfig::Transform(t)) => {
                    let groups = t.groups(signal);
                    if groups.is_empty() {
                        continue;
                    }
                    Op::Transform(Box::new(Transform::compile(groups).map_err(err)?))
                }
                Some(
                    ProcessorConfig::TailSampling(_)
                    | ProcessorConfig::MemoryLimiter(_)
                    | ProcessorConfig::Routing(_)
                    | ProcessorConfig::SpanMetrics(_),
                ) => continue,
                None => return Err(ProcessorError::Undefined { name: name.clone() }),
            };
            stages.push(Stage {
                name: name.clone(),
                op,
                stats: StageStats::default(),
            });
        }
        if stages.is_empty() {
            return Ok(None);
        }
        let touches_resources = stages.iter().any(|s| {
            s.resource_actions().is_some()
                || matches!(&s.op, Op::Transform(t) if t.has_resource_statements())
        });
        let reads_resources = touches_resources
            || stages
                .iter()
                .any(|s| matches!(s.op, Op::Filter(_) | Op::Transform(_)));
        // Every stage an attributes stage on items only, each with keys it needs present.
        let needed_keys = stages
            .iter()
            .map(|s| match &s.op {
                Op::Attributes {
                    actions,
                    include_resource: false,
                } => actions.presence().map(<[_]>::to_vec),
                Op::Transform(t) => t.presence().map(|w| KeySearch::new(&w).0),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|sets| KeySearch(sets.concat()));
        Ok(Some(Chain {
            signal,
            stages,
            touches_resources,
            reads_resources,
            needed_keys,
            scratch: RefCell::new(Scratch::default()),
        }))
    }

    /// Counters of every processor of the chain.
    pub fn snapshot(&self, out: &mut Vec<ProcessorSnapshot>) {
        for s in &self.stages {
            out.push(ProcessorSnapshot {
                name: s.name.clone(),
                kind: s.kind(),
                signal: self.signal,
                received: s.stats.received.get(),
                changed: s.stats.changed.get(),
                dropped: s.stats.dropped.get(),
            });
        }
    }

    #[cfg(test)]
    fn snapshot_vec(&self) -> Vec<ProcessorSnapshot> {
        let mut v = Vec::new();
        self.snapshot(&mut v);
        v
    }

    /// Runs the resource actions of every stage on `resource` (a `Resource` body): fills
    /// `scratch.versions` / `scratch.at_stage` (the resource each stage's items see: 0 is the
    /// original, `i` is `versions[i - 1]`; a filter sees what the stages before it left, a
    /// transform's item statements what its own resource statements left) and returns the
    /// final resource if it changed.
    fn resources(&self, resource: &[u8], scratch: &mut Scratch) -> Option<Bytes> {
        let Scratch {
            attrs,
            arena,
            versions,
            at_stage,
            ..
        } = scratch;
        versions.clear();
        at_stage.clear();
        if !self.touches_resources {
            return None;
        }
        for stage in &self.stages {
            at_stage.push(versions.len());
            if let Op::Transform(t) = &stage.op {
                if !t.has_resource_statements() {
                    continue;
                }
                let new = {
                    let current: &[u8] = versions.last().map_or(resource, |b| &b[..]);
                    let mut item = Item::new(
                        current,
                        ItemKind::Resource,
                        fields::RESOURCE_ATTRIBUTES,
                        attrs,
                    );
                    t.apply_resource(&mut item);
                    if !item.changed {
                        continue;
                    }
                    write_resource(current, item.attrs(), arena);
                    arena.split().freeze()
                };
                versions.push(new);
                // The stage's item statements run after its resource statements (as the
                // Collector runs a resource group before the span group listed after it), so
                // they see the resource those left.
                *at_stage.last_mut().expect("pushed above") = versions.len();
                continue;
            }
            let Some(actions) = stage.resource_actions() else {
                continue;
            };
            if matches!(stage.op, Op::Resource(_)) {
                bump(&stage.stats.received, 1);
            }
            let new = {
                let current: &[u8] = versions.last().map_or(resource, |b| &b[..]);
                if !actions.may_change(current, false) {
                    continue;
                }
                let mut item = Item::new(
                    current,
                    ItemKind::Resource,
                    fields::RESOURCE_ATTRIBUTES,
                    attrs,
                );
                actions.apply(&mut item);
                if !item.changed {
                    continue;
                }
                write_resource(current, item.attrs(), arena);
                arena.split().freeze()
            };
            if matches!(stage.op, Op::Resource(_)) {
                bump(&stage.stats.changed, 1);
            }
            versions.push(new);
        }
        versions.last().cloned()
    }

    /// Runs every stage on one item; `resource_of(stage)` is the resource body that stage
    /// sees. Returns `false` when a filter dropped the item.
    fn item<'r>(&self, item: &mut Item<'_>, resource_of: impl Fn(usize) -> &'r [u8]) -> bool {
        let has_body = item.has_body();
        for (k, stage) in self.stages.iter().enumerate() {
            match &stage.op {
                Op::Attributes { actions, .. } => {
                    bump(&stage.stats.received, 1);
                    // The key search looks at the original bytes, so it can rule the stage out
                    // only while no earlier stage changed the item: one may have inserted,
                    // renamed or set the very key this stage hashes or deletes.
                    if !item.changed && !actions.may_change(item.msg, has_body) {
                        continue;
                    }
                    let before = std::mem::replace(&mut item.changed, false);
                    actions.apply(item);
                    if item.changed {
                        bump(&stage.stats.changed, 1);
                    }
                    item.changed |= before;
                }
                Op::Resource(_) => {}
                Op::Transform(t) => {
                    if !t.has_item_statements() {
                        continue;
                    }
                    bump(&stage.stats.received, 1);
                    let before = std::mem::replace(&mut item.changed, false);
                    t.apply_item(item, resource_of(k));
                    if item.changed {
                        bump(&stage.stats.changed, 1);
                    }
                    item.changed |= before;
                }
                Op::Filter(filter) => {
                    bump(&stage.stats.received, 1);
                    if !filter.keeps(item, resource_of(k)) {
                        bump(&stage.stats.dropped, 1);
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Applies the chain to the spans of `batch` (see the module docs).
    pub fn process_traces(&self, batch: &mut SpanBatch) -> ChainOutcome {
        let mut scratch = self.scratch.borrow_mut();
        let scratch = &mut *scratch;
        let mut resource_rewrites = Vec::new();
        let spans = 0..batch.index.spans.len() as u32;
        if !self.walk_spans(batch, spans, false, scratch, &mut resource_rewrites) {
            return ChainOutcome::default();
        }
        let changed = !scratch.drops.is_empty()
            || !scratch.rewrites.is_empty()
            || !resource_rewrites.is_empty();
        merge(&mut batch.index.rewrites.spans, &mut scratch.rewrites);
        merge(&mut batch.index.rewrites.resources, &mut resource_rewrites);
        let dropped = if scratch.drops.is_empty() {
            0
        } else {
            let drops = &scratch.drops;
            let mut cursor = 0;
            batch.index.retain_spans(|i| {
                if drops.get(cursor) == Some(&i) {
                    cursor += 1;
                    false
                } else {
                    true
                }
            })
        };
        ChainOutcome {
            changed,
            dropped: dropped as u64,
        }
    }

    /// Applies the chain to spans `spans` (ascending indices) of a batch that is shared (the
    /// tail sampler's kept spans), leaving the batch as it is: returns what the chain dropped
    /// and rewrote, for [`shardtel_protocol::reframe::encode_trace_spans_rewritten`]. Nothing
    /// is allocated unless something changed.
    pub fn process_trace_spans(&self, batch: &SpanBatch, spans: &[u32]) -> SpanChanges {
        let mut scratch = self.scratch.borrow_mut();
        let scratch = &mut *scratch;
        let mut out = SpanChanges::default();
        let selected = spans.iter().copied();
        if self.walk_spans(batch, selected, true, scratch, &mut out.rewrites.resources) {
            out.dropped.extend_from_slice(&scratch.drops);
            out.rewrites.spans.append(&mut scratch.rewrites);
        }
        out
    }

    /// Runs the chain over spans `spans` (ascending) of `batch`, leaving in `scratch.drops` the
    /// spans filters dropped and in `scratch.rewrites` the rewritten ones, and pushing rewritten
    /// resources to `resource_rewrites` — every resource, or with `only_their_resources` those of
    /// the selected spans. False when nothing can change (no span was looked at).
    fn walk_spans(
        &self,
        batch: &SpanBatch,
        spans: impl ExactSizeIterator<Item = u32> + Clone,
        only_their_resources: bool,
        scratch: &mut Scratch,
        resource_rewrites: &mut Vec<(u32, Bytes)>,
    ) -> bool {
        // Only attribute actions that need keys none of which occurs in the bytes of these
        // spans: nothing can change, and no span is looked at. The keys are looked for over the
        // spans' ranges only (a core's share of a request routed by trace ID is about half of
        // it). (For a few spans of a batch, looking for the keys in each of them is cheaper.)
        if !only_their_resources
            && batch.index.rewrites.is_empty()
            && self
                .needed_keys
                .as_ref()
                .is_some_and(|keys| !spans_contain(keys, batch, spans.clone()))
        {
            for s in &self.stages {
                bump(&s.stats.received, spans.len() as u64);
            }
            return false;
        }
        let index = &batch.index;
        let buf = &batch.buf;
        scratch.drops.clear();
        scratch.rewrites.clear();
        // Resources: the original body, and the version each stage sees, per resource.
        let mut originals: Vec<&[u8]> = Vec::new();
        let mut views: Vec<Vec<Bytes>> = Vec::new();
        let mut stage_of: Vec<Vec<usize>> = Vec::new();
        if self.reads_resources {
            let mut used = std::mem::take(&mut scratch.resources_used);
            used.clear();
            used.resize(index.resources.len(), !only_their_resources);
            for i in spans.clone() {
                let scope = index.spans[i as usize].scope as usize;
                used[index.scopes[scope].resource as usize] = true;
            }
            for r in 0..index.resources.len() as u32 {
                let resource = resource_body(index, buf, r);
                originals.push(resource);
                if !used[r as usize] {
                    views.push(Vec::new());
                    stage_of.push(Vec::new());
                    continue;
                }
                if let Some(new) = self.resources(resource, scratch) {
                    let others = other_resource_headers(index, buf, r);
                    let mut fields_out = Vec::with_capacity(new.len() + others.len() + 8);
                    put_len_field(&mut fields_out, fields::RESOURCE, &new);
                    fields_out.extend_from_slice(&others);
                    resource_rewrites.push((r, tied_to_batch(batch, Bytes::from(fields_out))));
                }
                views.push(std::mem::take(&mut scratch.versions));
                stage_of.push(std::mem::take(&mut scratch.at_stage));
            }
            scratch.resources_used = used;
        }
        let mut attrs = std::mem::take(&mut scratch.attrs);
        for i in spans {
            let msg = batch.span(i as usize);
            let r = index.scopes[index.spans[i as usize].scope as usize].resource as usize;
            let resource_of = |k: usize| -> &[u8] {
                match stage_of.get(r).and_then(|s| s.get(k)) {
                    Some(&v) if v > 0 => &views[r][v - 1],
                    _ => originals.get(r).copied().unwrap_or_default(),
                }
            };
            let mut item = Item::new(msg, ItemKind::Span, fields::SPAN_ATTRIBUTES, &mut attrs);
            if !self.item(&mut item, resource_of) {
                scratch.drops.push(i);
                continue;
            }
            if let Some(b) = item.finish(&mut scratch.arena) {
                scratch.rewrites.push((i, tied_to_batch(batch, b)));
            }
        }
        scratch.attrs = attrs;
        true
    }

    /// Applies the chain to a validated metrics or logs request. `None` when nothing changed
    /// (export `body` as it is).
    pub fn process_request(
        &self,
        body: &Bytes,
    ) -> Result<Option<(Encoded, ChainOutcome)>, WireError> {
        let mut scratch = self.scratch.borrow_mut();
        let mut request = std::mem::take(&mut scratch.request);
        let mut rw = Rewriter {
            chain: self,
            scratch: &mut scratch,
            dropped: 0,
        };
        let mut out = Encoded::default();
        let changed = rewrite_request(body, &mut rw, &mut request, &mut out);
        let dropped = rw.dropped;
        scratch.request = request;
        let changed = changed?;
        if changed {
            if let Some(first) = out.chunks.first_mut() {
                *first = tied_to_origin(std::mem::take(first), body);
            }
        }
        Ok(changed.then_some((
            out,
            ChainOutcome {
                changed: true,
                dropped,
            },
        )))
    }
}

/// `new`, rewritten from spans of `batch`, tied to `batch`'s buffer when the batch holds a
/// release token (see [`tied_to_origin`]); as it is otherwise (nothing to keep unreleased).
fn tied_to_batch(batch: &SpanBatch, new: Bytes) -> Bytes {
    match batch.release_token {
        Some(_) => tied_to_origin(new, &batch.buf),
        None => new,
    }
}

/// `new`, rewritten from `origin`, as a buffer that keeps `origin` alive as long as any slice
/// of it lives. With `durability = "ack_after_sync"`, dropping the last slice of a request
/// body releases its ingest-log frame (the engine's `durability` module); a rewritten copy must
/// hold the original until the copy itself is safe downstream, or a crash could lose it.
pub fn tied_to_origin(new: Bytes, origin: &Bytes) -> Bytes {
    shardtel_protocol::scan::keep_alive(new, origin.clone())
}

fn to_config_signal(s: Signal) -> shardtel_config::Signal {
    match s {
        Signal::Traces => shardtel_config::Signal::Traces,
        Signal::Metrics => shardtel_config::Signal::Metrics,
        Signal::Logs => shardtel_config::Signal::Logs,
    }
}

/// Merges `new` (ascending) into `list` (ascending), replacing entries of the same index.
fn merge(list: &mut Vec<(u32, Bytes)>, new: &mut Vec<(u32, Bytes)>) {
    if new.is_empty() {
        return;
    }
    if list.is_empty() {
        std::mem::swap(list, new);
        return;
    }
    let old = std::mem::take(list);
    let mut a = old.into_iter().peekable();
    let mut b = new.drain(..).peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => list.extend(a.next()),
            (Some(x), Some(y)) if x.0 == y.0 => {
                a.next();
                list.extend(b.next());
            }
            (_, Some(_)) => list.extend(b.next()),
            (Some(_), None) => list.extend(a.next()),
            (None, None) => break,
        }
    }
}

/// The header fields of resource `r` of an index (its rewrite's, if rewritten), each whole.
fn resource_headers<'a>(
    index: &'a TracesIndex,
    buf: &'a [u8],
    r: u32,
    mut visit: impl FnMut(&'a [u8]),
) {
    match index.rewrites.resource(r) {
        Some(fields) => {
            let mut rd = Reader::new(fields);
            while !rd.is_empty() {
                let start = rd.position();
                let Ok(k) = rd.read_key() else { break };
                if rd.skip(k).is_err() {
                    break;
                }
                visit(&fields[start..rd.position()]);
            }
        }
        None => {
            for h in index.resource_headers(r) {
                visit(&buf[h]);
            }
        }
    }
}

/// The `Resource` body among a resource's rewritten header fields (complete fields).
fn resource_field_in(fields: &[u8]) -> Option<&[u8]> {
    let mut rd = Reader::new(fields);
    while let Some(Ok((k, v))) = rd.next_field() {
        if let (true, Value::Len(b)) = (k.field == fields::RESOURCE, v) {
            return Some(&fields[b]);
        }
    }
    None
}

/// The body of field `resource` (1), if `field` is that field.
fn resource_field(field: &[u8]) -> Option<&[u8]> {
    match Reader::new(field).next_field() {
        Some(Ok((k, Value::Len(b)))) if k.field == fields::RESOURCE => Some(&field[b]),
        _ => None,
    }
}

/// The `Resource` body of resource `r` of an index (empty when it has none).
fn resource_body<'a>(index: &'a TracesIndex, buf: &'a [u8], r: u32) -> &'a [u8] {
    let mut body: &[u8] = &[];
    resource_headers(index, buf, r, |field| {
        if let Some(b) = resource_field(field) {
            body = b;
        }
    });
    body
}

/// The other header fields of resource `r` (schema_url, unknown fields), encoded.
fn other_resource_headers(index: &TracesIndex, buf: &[u8], r: u32) -> Vec<u8> {
    let mut others = Vec::new();
    resource_headers(index, buf, r, |field| {
        if resource_field(field).is_none() {
            others.extend_from_slice(field);
        }
    });
    others
}

/// Drives a chain through [`rewrite_request`].
struct Rewriter<'c, 's> {
    chain: &'c Chain,
    scratch: &'s mut Scratch,
    dropped: u64,
}

impl RequestRewriter for Rewriter<'_, '_> {
    fn resource(&mut self, resource: &[u8]) -> Option<Bytes> {
        let new = self.chain.resources(resource, self.scratch);
        // Keep the original for the stages that see it.
        self.scratch
            .versions
            .insert(0, Bytes::copy_from_slice(resource));
        new
    }

    fn item(&mut self, msg: &[u8]) -> ItemOutcome {
        let chain = self.chain;
        let Scratch {
            attrs,
            arena,
            versions,
            at_stage,
            ..
        } = &mut *self.scratch;
        let resource_of = |k: usize| -> &[u8] {
            let v = at_stage.get(k).copied().unwrap_or(0);
            versions.get(v).map_or(&[][..], |b| &b[..])
        };
        let mut dropped = 0u64;
        let outcome = match chain.signal {
            Signal::Logs => {
                let mut item = Item::new(msg, ItemKind::Log, fields::LOG_ATTRIBUTES, attrs);
                if !chain.item(&mut item, resource_of) {
                    dropped += 1;
                    ItemOutcome::Drop
                } else {
                    match item.finish(arena) {
                        Some(b) => ItemOutcome::Replace(b),
                        None => ItemOutcome::Keep,
                    }
                }
            }
            _ => {
                let name = metric_name(msg);
                let mut point_arena = BytesMut::new();
                let outcome = rewrite_metric_points(msg, &mut point_arena, |point, field| {
                    let mut item =
                        Item::new(point, ItemKind::Point { metric_name: name }, field, attrs);
                    if !chain.item(&mut item, resource_of) {
                        dropped += 1;
                        return ItemOutcome::Drop;
                    }
                    match item.finish(arena) {
                        Some(b) => ItemOutcome::Replace(b),
                        None => ItemOutcome::Keep,
                    }
                });
                outcome
            }
        };
        self.dropped += dropped;
        outcome
    }
}

fn metric_name(metric: &[u8]) -> &[u8] {
    last_len_field(metric, 1).map_or(&[][..], |r| &metric[r])
}

/// The processors of every pipeline on one core.
#[derive(Default)]
pub struct Processors {
    /// Traces: processors before `tail_sampling` (all of them without a sampler), run on the
    /// owner core.
    pub traces_before: Option<Chain>,
    /// Traces: processors after `tail_sampling`, run on kept spans.
    pub traces_after: Option<Chain>,
    /// Metrics, on the receiving core.
    pub metrics: Option<Chain>,
    /// Logs, on the receiving core.
    pub logs: Option<Chain>,
    /// The traces pipeline's routing processor: which exporters each trace goes to, decided
    /// on the owner core after the sampler and every other processor.
    pub traces_router: Option<Router>,
    /// The metrics pipeline's routing processor: which exporters each data point goes to,
    /// decided on the receiving core after the metrics processors.
    pub metrics_router: Option<Router>,
    /// The logs pipeline's routing processor: which exporters each log record goes to,
    /// decided on the receiving core after the logs processors.
    pub logs_router: Option<Router>,
    /// The traces pipeline's `spanmetrics` processor, when listed before `tail_sampling` (or
    /// without one): counts every span the owner core receives.
    pub spanmetrics_before: Option<Rc<SpanMetrics>>,
    /// The same, listed after `tail_sampling`: counts the spans of kept traces.
    pub spanmetrics_after: Option<Rc<SpanMetrics>>,
    /// Its flush interval.
    pub spanmetrics_flush: Option<std::time::Duration>,
}

impl Processors {
    /// Compiles the processors of every pipeline of `config`.
    pub fn build(config: &Config) -> Result<Processors, ProcessorError> {
        let mut p = Processors::default();
        if let Some(traces) = &config.pipelines.traces {
            let split = traces.processors.iter().position(|n| {
                matches!(
                    config.processors.get(n),
                    Some(ProcessorConfig::TailSampling(_))
                )
            });
            let (before, after) = match split {
                Some(i) => (&traces.processors[..i], &traces.processors[i + 1..]),
                None => (&traces.processors[..], &[][..]),
            };
            p.traces_before = Chain::build(config, Signal::Traces, before)?;
            p.traces_after = Chain::build(config, Signal::Traces, after)?;
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            for (i, name) in traces.processors.iter().enumerate() {
                if let Some(ProcessorConfig::SpanMetrics(c)) = config.processors.get(name) {
                    let m = Rc::new(SpanMetrics::new(c, now_ns));
                    p.spanmetrics_flush = Some(c.flush_interval);
                    if split.is_some_and(|s| i > s) {
                        p.spanmetrics_after = Some(m);
                    } else {
                        p.spanmetrics_before = Some(m);
                    }
                }
                if let Some(ProcessorConfig::Routing(r)) = config.processors.get(name) {
                    let router = Router::build(name, r, Signal::Traces, &traces.exporters)
                        .map_err(|source| ProcessorError::Routing {
                            name: name.clone(),
                            source,
                        })?;
                    p.traces_router = Some(router);
                }
            }
        }
        if let Some(metrics) = &config.pipelines.metrics {
            p.metrics = Chain::build(config, Signal::Metrics, &metrics.processors)?;
            p.metrics_router = build_router(config, Signal::Metrics, metrics)?;
        }
        if let Some(logs) = &config.pipelines.logs {
            p.logs = Chain::build(config, Signal::Logs, &logs.processors)?;
            p.logs_router = build_router(config, Signal::Logs, logs)?;
        }
        Ok(p)
    }

    /// The chain of a metrics or logs pipeline.
    pub fn request_chain(&self, signal: Signal) -> Option<&Chain> {
        match signal {
            Signal::Metrics => self.metrics.as_ref(),
            Signal::Logs => self.logs.as_ref(),
            Signal::Traces => None,
        }
    }

    /// The routing processor of a metrics or logs pipeline, if it has one.
    pub fn request_router(&self, signal: Signal) -> Option<&Router> {
        match signal {
            Signal::Metrics => self.metrics_router.as_ref(),
            Signal::Logs => self.logs_router.as_ref(),
            Signal::Traces => None,
        }
    }

    /// Takes over from `old`, the processors a reload replaces: adds their counters to those
    /// of the same name and signal here, so that their series keep growing, and keeps `old`'s
    /// span metrics themselves (a reload cannot change them: `shardtel_config::reload`), with
    /// the counts of their window.
    pub fn carry_over(&mut self, old: &Processors) {
        fn chains(p: &Processors) -> Vec<(Signal, &Stage)> {
            [&p.traces_before, &p.traces_after, &p.metrics, &p.logs]
                .into_iter()
                .flatten()
                .flat_map(|c| c.stages.iter().map(move |s| (c.signal, s)))
                .collect()
        }
        let was = chains(old);
        for (signal, stage) in chains(self) {
            for (_, was) in was
                .iter()
                .filter(|(sig, was)| *sig == signal && was.name == stage.name)
            {
                bump(&stage.stats.received, was.stats.received.get());
                bump(&stage.stats.changed, was.stats.changed.get());
                bump(&stage.stats.dropped, was.stats.dropped.get());
            }
        }
        for (new, was) in [
            (&self.traces_router, &old.traces_router),
            (&self.metrics_router, &old.metrics_router),
            (&self.logs_router, &old.logs_router),
        ] {
            if let (Some(new), Some(was)) = (new, was) {
                new.carry_counters(was);
            }
        }
        self.spanmetrics_before.clone_from(&old.spanmetrics_before);
        self.spanmetrics_after.clone_from(&old.spanmetrics_after);
    }

    /// Counters of every routing processor on this core.
    pub fn router_snapshot(&self) -> Vec<RouterSnapshot> {
        [&self.traces_router, &self.metrics_router, &self.logs_router]
            .into_iter()
            .flatten()
            .map(Router::snapshot)
            .collect()
    }

    /// Counters of every processor on this core.
    pub fn snapshot(&self) -> Vec<ProcessorSnapshot> {
        let mut out = Vec::new();
        for chain in [
            &self.traces_before,
            &self.traces_after,
            &self.metrics,
            &self.logs,
        ]
        .into_iter()
        .flatten()
        {
            chain.snapshot(&mut out);
        }
        out
    }
}

/// The routing processor of `signal`'s pipeline `pipeline` (the last processor, if it is one),
/// compiled for its exporters.
fn build_router(
    config: &Config,
    signal: Signal,
    pipeline: &shardtel_config::Pipeline,
) -> Result<Option<Router>, ProcessorError> {
    for name in &pipeline.processors {
        if let Some(ProcessorConfig::Routing(r)) = config.processors.get(name) {
            let router = Router::build(name, r, signal, &pipeline.exporters).map_err(|source| {
                ProcessorError::Routing {
                    name: name.clone(),
                    source,
                }
            })?;
            return Ok(Some(router));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
