//! The `transform` processor: statements of the statement language ([`shardtel_config::ottl`])
//! compiled once and applied to one [`Item`] at a time.
//!
//! A statement reads the item through its wire view (attributes are parsed only when a
//! statement changes them or a condition reads them after a change), so an item no statement
//! changes is left as its original bytes. Setting a value to what it already is changes
//! nothing.
//!
//! Statements of the `spanevent` context run, in their place among the span statements, on
//! each event of the span: an event is an [`Item`] of its own (over its bytes inside the span),
//! whose conditions may read the span as the statements before left it (`span.name`, ...). A
//! span one of whose events changed is re-encoded with the new list of events; a span whose
//! events none changed stays as it is.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use regex::Regex;
use shardtel_config::ottl::{
    Context, Expr, Function, Literal, MapPath, MergeStrategy, Path, PatternMode,
};
use shardtel_config::StatementGroup;
use shardtel_protocol::rewrite::{value_ref, Attr, AttrKey, AttrValue};
use shardtel_protocol::span::AnyValueRef;
use shardtel_protocol::wire::{Reader, Value};

use crate::attributes::encode_value;
use crate::condition::{raw_attribute, Condition, Fields, Val};
use crate::{Item, ItemKind};

/// `Span.name`, `Span.kind`, `Span.status`, `LogRecord.severity_number`, `LogRecord.severity_text`.
pub(crate) const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_STATUS: u32 = 15;
const LOG_SEVERITY_NUMBER: u32 = 2;
pub(crate) const LOG_SEVERITY_TEXT: u32 = 3;
/// `Span.Event.time_unix_nano` (fixed64), `name`, `attributes`, `dropped_attributes_count`.
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
const EVENT_DROPPED_ATTRIBUTES: u32 = 4;
/// `Span.events`.
const SPAN_EVENTS: u32 = 11;

#[derive(Debug)]
enum Source {
    /// A constant, encoded as an `AnyValue` body, and as a value to compare with.
    Const(Bytes, Literal),
    Path(Path),
}

#[derive(Debug)]
enum Op {
    Set(Path, Source),
    DeleteKey(Bytes),
    DeleteMatchingKeys(Regex),
    KeepKeys(Vec<Bytes>),
    TruncateAll(usize),
    Limit(usize, Vec<Bytes>),
    ReplacePattern(Path, Regex, String),
    ReplaceAllPatterns(PatternMode, Regex, String),
    Rename(Bytes, Bytes),
    /// `merge_maps(attributes, resource.attributes, strategy)`.
    MergeResource(MergeStrategy),
}

#[derive(Debug)]
struct CompiledStatement {
    op: Op,
    condition: Option<Condition>,
    /// A `spanevent` statement: it runs on each event of the span.
    event: bool,
}

/// The statements of one transform processor for one signal, compiled.
#[derive(Debug, Default)]
pub struct Transform {
    /// Statements of the resource context.
    resource: Vec<CompiledStatement>,
    /// Statements of the item context (span, log, data point), and of the span-event
    /// context in their place among the span statements.
    item: Vec<CompiledStatement>,
    /// The attribute list of the event being looked at (reused).
    event_attrs: RefCell<Vec<Attr>>,
}

fn literal_value(l: &Literal) -> Option<Bytes> {
    use shardtel_config::AttributeValue as A;
    let v = match l {
        Literal::String(s) => A::String(s.clone()),
        Literal::Int(i) => A::Int(*i),
        Literal::Double(d) => A::Double(*d),
        Literal::Bool(b) => A::Bool(*b),
        Literal::Nil => return None,
    };
    Some(encode_value(&v))
}

fn keys(list: &[String]) -> Vec<Bytes> {
    list.iter()
        .map(|k| Bytes::from(k.clone().into_bytes()))
        .collect()
}

impl Transform {
    /// Compiles the (checked) statement groups of one signal.
    pub fn compile(groups: &[StatementGroup]) -> Result<Transform, regex::Error> {
        let mut t = Transform::default();
        for g in groups {
            for st in &g.statements {
                let op = match &st.function {
                    Function::Set { target, value } => {
                        let source = match value {
                            Expr::Path(p) => Source::Path(p.clone()),
                            Expr::Literal(l) => match literal_value(l) {
                                Some(b) => Source::Const(b, l.clone()),
                                // `set(x, nil)` does nothing, as in OTTL.
                                None => continue,
                            },
                            _ => continue,
                        };
                        Op::Set(target.clone(), source)
                    }
                    Function::DeleteKey { key, .. } => {
                        Op::DeleteKey(Bytes::from(key.clone().into_bytes()))
                    }
                    Function::DeleteMatchingKeys { pattern, .. } => {
                        Op::DeleteMatchingKeys(Regex::new(pattern)?)
                    }
                    Function::KeepKeys { keys: k, .. } => Op::KeepKeys(keys(k)),
                    Function::TruncateAll { limit, .. } => Op::TruncateAll(*limit),
                    Function::Limit {
                        limit, priority, ..
                    } => Op::Limit(*limit, keys(priority)),
                    Function::ReplacePattern {
                        target,
                        pattern,
                        replacement,
                    } => Op::ReplacePattern(
                        target.clone(),
                        Regex::new(pattern)?,
                        replacement.clone(),
                    ),
                    Function::ReplaceAllPatterns {
                        mode,
                        pattern,
                        replacement,
                        ..
                    } => Op::ReplaceAllPatterns(*mode, Regex::new(pattern)?, replacement.clone()),
                    Function::MergeMaps {
                        source, strategy, ..
                    } => match source {
                        MapPath::ResourceAttributes => Op::MergeResource(*strategy),
                        // Merging a map into itself changes nothing.
                        MapPath::Attributes => continue,
                    },
                    Function::Rename { from, to, .. } => Op::Rename(
                        Bytes::from(from.clone().into_bytes()),
                        Bytes::from(to.clone().into_bytes()),
                    ),
                };
                let condition = st.condition.as_ref().map(Condition::compile).transpose()?;
                let compiled = CompiledStatement {
                    op,
                    condition,
                    event: g.context == Context::SpanEvent,
                };
                match g.context {
                    Context::Resource => t.resource.push(compiled),
                    _ => t.item.push(compiled),
                }
            }
        }
        Ok(t)
    }

    /// Whether some statement runs on resources.
    pub fn has_resource_statements(&self) -> bool {
        !self.resource.is_empty()
    }

    /// Byte strings one of which occurs in an item's bytes whenever some statement may change
    /// it (for each statement, the keys its action needs or the witnesses of its condition,
    /// [`Condition::witnesses`]): when none occurs in a batch, the processor changes none of its
    /// items. `None` when some statement may change any item, or runs on resources.
    ///
    /// Statements run in order, but one that changes nothing leaves the next one the item's
    /// original bytes, so the witnesses of each statement on those bytes hold for the whole list.
    pub fn presence(&self) -> Option<Vec<Vec<u8>>> {
        if !self.resource.is_empty() {
            return None;
        }
        let mut all = Vec::new();
        for st in &self.item {
            let action = match &st.op {
                Op::DeleteKey(k) | Op::Rename(k, _) => Some(vec![k.to_vec()]),
                Op::ReplacePattern(Path::Attribute(k), ..) => Some(vec![k.as_bytes().to_vec()]),
                _ => None,
            };
            let condition = st.condition.as_ref().and_then(Condition::witnesses);
            let w = match (action, condition) {
                (Some(a), Some(c)) => {
                    if a.len() <= c.len() {
                        a
                    } else {
                        c
                    }
                }
                (a, c) => a.or(c)?,
            };
            if w.iter().any(Vec::is_empty) {
                return None;
            }
            all.extend(w);
        }
        Some(all)
    }

    /// Whether some statement runs on items.
    pub fn has_item_statements(&self) -> bool {
        !self.item.is_empty()
    }

    /// Runs the resource statements on `item` (a `Resource`).
    pub fn apply_resource(&self, item: &mut Item<'_>) {
        run(&self.resource, item, &[], None);
    }

    /// Runs the item statements on `item`, whose resource is the `Resource` body `resource`:
    /// each run of span (log, data point) statements on the item, each run of span-event
    /// statements on every event of the span.
    pub fn apply_item(&self, item: &mut Item<'_>, resource: &[u8]) {
        let mut rest = &self.item[..];
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|s| s.event == first.event).count();
            let (statements, tail) = rest.split_at(n);
            if first.event {
                self.run_events(statements, item, resource);
            } else {
                run(statements, item, resource, None);
            }
            rest = tail;
        }
    }

    /// Runs span-event statements on each event of `span`: an event they change is
    /// re-encoded, and the span takes the new list of events.
    fn run_events(&self, statements: &[CompiledStatement], span: &mut Item<'_>, resource: &[u8]) {
        let msg = span.msg;
        let mut scratch = self.event_attrs.borrow_mut();
        let mut arena = BytesMut::new();
        let mut originals = Reader::new(msg);
        let mut j = 0;
        loop {
            // The event as earlier statements left it: a slice of the span, or its new body.
            let holder;
            let body: &[u8] = match &span.events {
                Some(events) => {
                    let Some(b) = events.get(j) else { break };
                    holder = b.clone();
                    &holder
                }
                None => match next_len_field(&mut originals, SPAN_EVENTS) {
                    Some(r) => &msg[r],
                    None => break,
                },
            };
            let mut event = Item::new(body, ItemKind::SpanEvent, EVENT_ATTRIBUTES, &mut scratch);
            run(statements, &mut event, resource, Some(&*span));
            if let Some(new) = event.finish(&mut arena) {
                let events = span.events.get_or_insert_with(|| {
                    let mut r = Reader::new(msg);
                    std::iter::from_fn(|| next_len_field(&mut r, SPAN_EVENTS))
                        .map(|r| Bytes::copy_from_slice(&msg[r]))
                        .collect()
                });
                events[j] = new;
                span.changed = true;
            }
            j += 1;
        }
    }
}

/// The payload range of the next field `field` (length-delimited) `r` reads.
fn next_len_field(r: &mut Reader<'_>, field: u32) -> Option<std::ops::Range<usize>> {
    while let Some(Ok((k, v))) = r.next_field() {
        if let (true, Value::Len(b)) = (k.field == field, v) {
            return Some(b);
        }
    }
    None
}

/// Runs `statements` on `item`; `span` is the span of a span event.
fn run(
    statements: &[CompiledStatement],
    item: &mut Item<'_>,
    resource: &[u8],
    span: Option<&Item<'_>>,
) {
    for st in statements {
        if let Some(c) = &st.condition {
            if !c.eval(&ItemFields {
                item,
                resource,
                span,
            }) {
                continue;
            }
        }
        apply(&st.op, item, resource, span);
    }
}

/// An item as conditions and `set` sources see it: its current state (and, for a span event,
/// its span's).
struct ItemFields<'x, 'a, 's> {
    item: &'x Item<'a>,
    resource: &'x [u8],
    span: Option<&'x Item<'s>>,
}

/// Attribute `key` of `item` as it is now.
fn attribute<'x>(item: &'x Item<'_>, key: &str) -> Val<'x> {
    let msg = item.msg;
    if item.read {
        let found = item.attrs.iter().find(|a| a.key(msg) == key.as_bytes());
        found.map_or(Val::Nil, |a| Val::from(a.value(msg)))
    } else {
        raw_attribute(msg, item.attr_field, key.as_bytes()).map_or(Val::Nil, Val::from)
    }
}

/// `time_unix_nano` (fixed64) of a span event.
fn fixed64(msg: &[u8], field: u32) -> i64 {
    let mut out = 0;
    let mut r = Reader::new(msg);
    while let Some(Ok((k, v))) = r.next_field() {
        if let (true, Value::I64(x)) = (k.field == field, v) {
            out = x as i64;
        }
    }
    out
}

impl Fields for ItemFields<'_, '_, '_> {
    fn get(&self, path: &Path) -> Val<'_> {
        let item = self.item;
        let msg = item.msg;
        let span = || {
            self.span.map(|s| ItemFields {
                item: s,
                resource: self.resource,
                span: None,
            })
        };
        match path {
            Path::Attribute(k) => attribute(item, k),
            Path::ResourceAttribute(k) => {
                raw_attribute(self.resource, 1, k.as_bytes()).map_or(Val::Nil, Val::from)
            }
            Path::Name if matches!(item.kind, ItemKind::SpanEvent) => match item.edit(EVENT_NAME) {
                Some(b) => Val::Str(b),
                None => Val::Str(len_field(msg, EVENT_NAME)),
            },
            Path::Name => match item.edit(SPAN_NAME) {
                Some(b) => Val::Str(b),
                None => Val::Str(len_field(msg, SPAN_NAME)),
            },
            Path::TimeUnixNano => Val::Int(fixed64(msg, EVENT_TIME)),
            Path::DroppedAttributesCount => Val::Int(scalar(msg, EVENT_DROPPED_ATTRIBUTES)),
            Path::SpanAttribute(k) => self.span.map_or(Val::Nil, |s| attribute(s, k)),
            Path::SpanName => span().map_or(Val::Nil, |s| s.owned(&Path::Name)),
            Path::SpanKind => span().map_or(Val::Nil, |s| s.owned(&Path::Kind)),
            Path::SpanStatusCode => span().map_or(Val::Nil, |s| s.owned(&Path::StatusCode)),
            Path::SpanStatusMessage => span().map_or(Val::Nil, |s| s.owned(&Path::StatusMessage)),
            Path::Kind => Val::Int(i64::from(scalar(msg, SPAN_KIND) as i32)),
            Path::StatusCode => Val::Int(i64::from(status(item).0)),
            Path::StatusMessage => Val::Str(status(item).1),
            Path::Body => Val::from(value_ref(&item.body, msg)),
            Path::SeverityNumber => Val::Int(scalar(msg, LOG_SEVERITY_NUMBER)),
            Path::SeverityText => match item.edit(LOG_SEVERITY_TEXT) {
                Some(b) => Val::Str(b),
                None => Val::Str(len_field(msg, LOG_SEVERITY_TEXT)),
            },
            Path::MetricName => match item.kind {
                ItemKind::Point { metric_name } => Val::Str(metric_name),
                _ => Val::Nil,
            },
            Path::TraceHasError => Val::Nil,
        }
    }
}

impl<'x> ItemFields<'x, '_, '_> {
    /// [`Fields::get`] of a span's scalar fields, borrowing the span rather than `self`.
    fn owned(&self, path: &Path) -> Val<'x> {
        let item: &'x Item<'_> = self.item;
        let msg = item.msg;
        match path {
            Path::Name => match item.edit(SPAN_NAME) {
                Some(b) => Val::Str(b),
                None => Val::Str(len_field(msg, SPAN_NAME)),
            },
            Path::Kind => Val::Int(i64::from(scalar(msg, SPAN_KIND) as i32)),
            Path::StatusCode => Val::Int(i64::from(status(item).0)),
            Path::StatusMessage => Val::Str(status(item).1),
            _ => Val::Nil,
        }
    }
}

fn scalar(msg: &[u8], field: u32) -> i64 {
    let mut out = 0;
    let mut r = Reader::new(msg);
    while let Some(Ok((k, v))) = r.next_field() {
        if let (true, Value::Varint(x)) = (k.field == field, v) {
            out = x as i64;
        }
    }
    out
}

fn len_field(msg: &[u8], field: u32) -> &[u8] {
    shardtel_protocol::rewrite::last_len_field(msg, field).map_or(&[][..], |r| &msg[r])
}

/// `(code, message)` of a span's status, edited or original.
pub(crate) fn status<'i>(item: &'i Item<'_>) -> (i32, &'i [u8]) {
    let body = match item.edit(SPAN_STATUS) {
        Some(b) => b,
        None => len_field(item.msg, SPAN_STATUS),
    };
    let mut code = 0;
    let mut message: &[u8] = &[];
    let mut r = Reader::new(body);
    while let Some(Ok((k, v))) = r.next_field() {
        match (k.field, v) {
            (2, Value::Len(m)) => message = &body[m],
            (3, Value::Varint(c)) => code = c as i32,
            _ => {}
        }
    }
    (code, message)
}

fn encode_status(code: i32, message: &[u8]) -> Bytes {
    use bytes::BufMut;
    let mut b = bytes::BytesMut::new();
    if !message.is_empty() {
        b.put_u8(0x12);
        shardtel_protocol::wire::put_varint(&mut b, message.len() as u64);
        b.put_slice(message);
    }
    if code != 0 {
        b.put_u8(0x18);
        shardtel_protocol::wire::put_varint(&mut b, code as u64);
    }
    b.freeze()
}

/// A value to write, from a `set` source.
fn resolve(
    source: &Source,
    item: &Item<'_>,
    resource: &[u8],
    span: Option<&Item<'_>>,
) -> Option<(AttrValue, Option<Vec<u8>>)> {
    match source {
        Source::Const(b, l) => {
            let s = match l {
                Literal::String(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            };
            Some((AttrValue::Encoded(b.clone()), s))
        }
        Source::Path(p) => {
            let fields = ItemFields {
                item,
                resource,
                span,
            };
            let v = fields.get(p);
            let out = match v {
                Val::Str(s) => (
                    AttrValue::String(String::from_utf8_lossy(s).into_owned()),
                    Some(s.to_vec()),
                ),
                Val::Int(i) => (AttrValue::Encoded(literal_value(&Literal::Int(i))?), None),
                Val::Double(d) => (
                    AttrValue::Encoded(literal_value(&Literal::Double(d))?),
                    None,
                ),
                Val::Bool(b) => (AttrValue::Encoded(literal_value(&Literal::Bool(b))?), None),
                Val::Nil | Val::Other => return None,
            };
            Some(out)
        }
    }
}

/// The current value of an attribute as an encoded `AnyValue` body, for comparing.
fn same_value(a: &Attr, new: &AttrValue, msg: &[u8]) -> bool {
    let new = match new {
        AttrValue::String(s) => AnyValueRef::String(s),
        AttrValue::Encoded(b) => AnyValueRef::parse(b),
        other => value_ref(other, msg),
    };
    a.value(msg) == new
}

fn position(item: &mut Item<'_>, key: &[u8]) -> Option<usize> {
    let msg = item.msg;
    item.attrs().iter().position(|a| a.key(msg) == key)
}

fn apply(op: &Op, item: &mut Item<'_>, resource: &[u8], span: Option<&Item<'_>>) {
    let msg = item.msg;
    // An action on one key the item does not have changes nothing: look for the key in the
    // item's bytes rather than read its attribute list.
    if let Op::DeleteKey(k) | Op::Rename(k, _) = op {
        if !item.read && raw_attribute(msg, item.attr_field, k).is_none() {
            return;
        }
    }
    match op {
        Op::Set(target, source) => {
            let Some((value, text)) = resolve(source, item, resource, span) else {
                return;
            };
            set(target, value, text, item);
        }
        Op::DeleteKey(k) => retain(item, |key, _| key != &k[..]),
        Op::DeleteMatchingKeys(re) => retain(item, |key, _| {
            !std::str::from_utf8(key).is_ok_and(|k| re.is_match(k))
        }),
        Op::KeepKeys(keys) => retain(item, |key, _| keys.iter().any(|k| &k[..] == key)),
        Op::TruncateAll(limit) => {
            let attrs = item.attrs();
            let mut changed = false;
            for a in attrs.iter_mut() {
                let AnyValueRef::String(s) = a.value(msg) else {
                    continue;
                };
                if s.len() <= *limit {
                    continue;
                }
                let mut end = *limit;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = s[..end].to_string();
                a.set_value(AttrValue::String(cut));
                changed = true;
            }
            item.changed |= changed;
        }
        Op::Limit(limit, priority) => {
            let attrs = item.attrs();
            if attrs.len() <= *limit {
                return;
            }
            let mut keep = vec![false; attrs.len()];
            let mut kept = 0;
            for (i, a) in attrs.iter().enumerate() {
                if kept < *limit && priority.iter().any(|p| &p[..] == a.key(msg)) {
                    keep[i] = true;
                    kept += 1;
                }
            }
            for k in keep.iter_mut() {
                if kept < *limit && !*k {
                    *k = true;
                    kept += 1;
                }
            }
            let mut i = 0;
            attrs.retain(|_| {
                i += 1;
                keep[i - 1]
            });
            item.changed = true;
        }
        Op::ReplacePattern(target, re, replacement) => {
            let current = {
                let fields = ItemFields {
                    item,
                    resource,
                    span,
                };
                match fields.get(target) {
                    Val::Str(s) => match std::str::from_utf8(s) {
                        Ok(s) => Some(s.to_string()),
                        Err(_) => None,
                    },
                    _ => None,
                }
            };
            let Some(current) = current else { return };
            if let std::borrow::Cow::Owned(new) = re.replace_all(&current, replacement.as_str()) {
                if new != current {
                    let text = Some(new.as_bytes().to_vec());
                    set(target, AttrValue::String(new), text, item);
                }
            }
        }
        Op::ReplaceAllPatterns(mode, re, replacement) => {
            let attrs = item.attrs();
            let mut changed = false;
            for a in attrs.iter_mut() {
                match mode {
                    PatternMode::Value => {
                        let AnyValueRef::String(s) = a.value(msg) else {
                            continue;
                        };
                        if let std::borrow::Cow::Owned(new) =
                            re.replace_all(s, replacement.as_str())
                        {
                            if new != s {
                                a.set_value(AttrValue::String(new));
                                changed = true;
                            }
                        }
                    }
                    PatternMode::Key => {
                        let Ok(k) = std::str::from_utf8(a.key(msg)) else {
                            continue;
                        };
                        if let std::borrow::Cow::Owned(new) =
                            re.replace_all(k, replacement.as_str())
                        {
                            if new != k {
                                a.key = AttrKey::Shared(Bytes::from(new.into_bytes()));
                                a.original = None;
                                changed = true;
                            }
                        }
                    }
                }
            }
            if changed && *mode == PatternMode::Key {
                merge_repeated_keys(attrs, msg);
            }
            item.changed |= changed;
        }
        Op::MergeResource(strategy) => {
            let mut source = Vec::new();
            shardtel_protocol::rewrite::read_attributes(resource, 1, &mut source);
            for a in &source {
                let key = a.key(resource);
                let value = shardtel_protocol::rewrite::value_bytes(&a.value, resource);
                match (position(item, key), strategy) {
                    (None, MergeStrategy::Insert | MergeStrategy::Upsert) => {
                        item.attrs()
                            .push(Attr::new(Bytes::copy_from_slice(key), value));
                        item.changed = true;
                    }
                    (Some(i), MergeStrategy::Update | MergeStrategy::Upsert)
                        if !same_value(&item.attrs()[i], &value, msg) =>
                    {
                        item.attrs()[i].set_value(value);
                        item.changed = true;
                    }
                    _ => {}
                }
            }
        }
        Op::Rename(from, to) => {
            if from == to {
                return;
            }
            let Some(i) = position(item, from) else {
                return;
            };
            let attrs = item.attrs();
            attrs[i].key = AttrKey::Shared(to.clone());
            attrs[i].original = None;
            let mut j = 0;
            attrs.retain(|a| {
                j += 1;
                j - 1 == i || a.key(msg) != &to[..]
            });
            item.changed = true;
        }
    }
}

/// Keys made equal by renaming become one attribute, as in the Collector (whose
/// `replace_all_patterns` writes each attribute into a new map in order): at the first
/// position, with the value of the last attribute that has the key. OTLP attribute keys are
/// unique.
fn merge_repeated_keys(attrs: &mut Vec<Attr>, msg: &[u8]) {
    let mut j = 1;
    while j < attrs.len() {
        let key = attrs[j].key(msg);
        match attrs[..j].iter().position(|a| a.key(msg) == key) {
            Some(i) => {
                let later = attrs.remove(j);
                attrs[i].set_value(later.value);
            }
            None => j += 1,
        }
    }
}

fn retain(item: &mut Item<'_>, mut keep: impl FnMut(&[u8], &Attr) -> bool) {
    let msg = item.msg;
    let attrs = item.attrs();
    let before = attrs.len();
    attrs.retain(|a| keep(a.key(msg), a));
    if attrs.len() != before {
        item.changed = true;
    }
}

fn set(target: &Path, value: AttrValue, text: Option<Vec<u8>>, item: &mut Item<'_>) {
    let msg = item.msg;
    match target {
        Path::Attribute(k) => match position(item, k.as_bytes()) {
            Some(i) => {
                if !same_value(&item.attrs()[i], &value, msg) {
                    item.attrs()[i].set_value(value);
                    item.changed = true;
                }
            }
            None => {
                item.attrs()
                    .push(Attr::new(Bytes::from(k.clone().into_bytes()), value));
                item.changed = true;
            }
        },
        Path::Body => {
            let same = {
                let fields = ItemFields {
                    item,
                    resource: &[],
                    span: None,
                };
                let current = fields.get(&Path::Body);
                let new = match &value {
                    AttrValue::String(s) => AnyValueRef::String(s),
                    AttrValue::Encoded(b) => AnyValueRef::parse(b),
                    _ => AnyValueRef::Empty,
                };
                current == Val::from(new)
            };
            if !same {
                item.set_body(value);
            }
        }
        Path::Name | Path::StatusMessage | Path::SeverityText => {
            let Some(text) = text else { return };
            let current: Vec<u8> = {
                let fields = ItemFields {
                    item,
                    resource: &[],
                    span: None,
                };
                match fields.get(target) {
                    Val::Str(s) => s.to_vec(),
                    _ => Vec::new(),
                }
            };
            if current == text {
                return;
            }
            match target {
                Path::Name if matches!(item.kind, ItemKind::SpanEvent) => {
                    item.set_edit(EVENT_NAME, Bytes::from(text))
                }
                Path::Name => item.set_edit(SPAN_NAME, Bytes::from(text)),
                Path::SeverityText => item.set_edit(LOG_SEVERITY_TEXT, Bytes::from(text)),
                _ => {
                    let code = status(item).0;
                    item.set_edit(SPAN_STATUS, encode_status(code, &text));
                }
            }
        }
        Path::StatusCode => {
            let AttrValue::Encoded(b) = &value else {
                return;
            };
            let AnyValueRef::Int(code) = AnyValueRef::parse(b) else {
                return;
            };
            if !(0..=2).contains(&code) {
                return;
            }
            let (current, message) = status(item);
            if i64::from(current) == code {
                return;
            }
            let new = encode_status(code as i32, message);
            item.set_edit(SPAN_STATUS, new);
        }
        _ => {}
    }
}
