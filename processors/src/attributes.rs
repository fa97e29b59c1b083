//! Compiled attribute actions (the `attributes` and `resource` processors) and how they change
//! one [`Item`].

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memmem::Finder;
use regex::Regex;
use sha2::{Digest, Sha256};
use shardtel_config::{
    ActionKind, AttributeAction, AttributeValue, KeyMatch, ValueSource, LOG_BODY_KEY,
};
use shardtel_protocol::rewrite::{value_bytes, Attr, AttrValue};
use shardtel_protocol::span::AnyValueRef;
use shardtel_protocol::wire::put_varint;

use super::Item;

/// Which attributes an action touches.
#[derive(Debug)]
enum Keys {
    Exact(Bytes),
    Regex(Regex),
    /// A log record's body (`log.body`).
    Body,
}

#[derive(Debug)]
enum Source {
    /// An encoded `AnyValue` body.
    Value(Bytes),
    From(Bytes),
}

#[derive(Debug)]
enum Op {
    Insert(Source),
    Update(Source),
    Upsert(Source),
    Delete,
    Hash,
    Extract { re: Regex, groups: Vec<Bytes> },
    Mask { re: Regex, replacement: String },
}

#[derive(Debug)]
struct Action {
    keys: Keys,
    op: Op,
}

/// An ordered list of actions, compiled.
#[derive(Debug)]
pub struct Actions {
    actions: Vec<Action>,
    /// Finders for the exact keys, when every action needs its key to be present: an item
    /// whose bytes contain none of them cannot be changed.
    presence: Option<Vec<Finder<'static>>>,
    /// Some action changes log bodies.
    has_body: bool,
}

/// Encodes a configuration value as an `AnyValue` body.
pub(crate) fn encode_value(v: &AttributeValue) -> Bytes {
    let mut b = BytesMut::new();
    match v {
        AttributeValue::String(s) => {
            b.put_u8(0x0a);
            put_varint(&mut b, s.len() as u64);
            b.put_slice(s.as_bytes());
        }
        AttributeValue::Bool(x) => {
            b.put_u8(0x10);
            b.put_u8(u8::from(*x));
        }
        AttributeValue::Int(i) => {
            b.put_u8(0x18);
            put_varint(&mut b, *i as u64);
        }
        AttributeValue::Double(d) => {
            b.put_u8(0x21);
            b.put_f64_le(*d);
        }
    }
    b.freeze()
}

impl Actions {
    /// Compiles validated actions (`Err` only for regexes the config crate did not check).
    pub fn compile(actions: &[AttributeAction]) -> Result<Actions, regex::Error> {
        let mut out = Vec::with_capacity(actions.len());
        let mut needs_presence = true;
        let mut keys: Vec<Bytes> = Vec::new();
        for a in actions {
            let keys_sel = match &a.key {
                KeyMatch::Exact(k) if k == LOG_BODY_KEY => Keys::Body,
                KeyMatch::Exact(k) => Keys::Exact(Bytes::from(k.clone().into_bytes())),
                KeyMatch::Regex(p) => Keys::Regex(Regex::new(p)?),
            };
            let source = |s: &ValueSource| match s {
                ValueSource::Value(v) => Source::Value(encode_value(v)),
                ValueSource::FromAttribute(k) => Source::From(Bytes::from(k.clone().into_bytes())),
            };
            let op = match &a.kind {
                ActionKind::Insert(s) => Op::Insert(source(s)),
                ActionKind::Update(s) => Op::Update(source(s)),
                ActionKind::Upsert(s) => Op::Upsert(source(s)),
                ActionKind::Delete => Op::Delete,
                ActionKind::Hash => Op::Hash,
                ActionKind::Extract { pattern } => {
                    let re = Regex::new(pattern)?;
                    let groups = re
                        .capture_names()
                        .flatten()
                        .map(|n| Bytes::from(n.to_string().into_bytes()))
                        .collect();
                    Op::Extract { re, groups }
                }
                ActionKind::Mask {
                    pattern,
                    replacement,
                } => Op::Mask {
                    re: Regex::new(pattern)?,
                    replacement: replacement.clone(),
                },
            };
            // Insert and upsert change items that lack the key; regexes may match any key.
            match (&keys_sel, &op) {
                (_, Op::Insert(_) | Op::Upsert(_)) | (Keys::Regex(_), _) => needs_presence = false,
                (Keys::Exact(k), _) => keys.push(k.clone()),
                (Keys::Body, _) => {}
            }
            out.push(Action { keys: keys_sel, op });
        }
        let has_body = out.iter().any(|a| matches!(a.keys, Keys::Body));
        let presence = needs_presence.then(|| {
            keys.iter()
                .map(|k| Finder::new(k.as_ref()).into_owned())
                .collect()
        });
        Ok(Actions {
            actions: out,
            presence,
            has_body,
        })
    }

    /// False when no action can change a message whose bytes are `msg`: no body action
    /// applies (`has_body` false: spans, data points, resources) and none of the keys that
    /// every other action needs occurs in its bytes. True means "maybe". `msg` must be what
    /// the stage would see: an item's original bytes tell nothing once an earlier stage of the
    /// chain changed it (it may have inserted or renamed one of the keys).
    #[inline]
    pub fn may_change(&self, msg: &[u8], has_body: bool) -> bool {
        if has_body && self.has_body {
            return true;
        }
        match &self.presence {
            Some(finders) => finders.iter().any(|f| f.find(msg).is_some()),
            None => true,
        }
    }

    /// Finders of the keys one of which an item must contain for an action to change it
    /// (outside log bodies), or `None` when some action may change any item (insert, upsert,
    /// regex keys).
    pub fn presence(&self) -> Option<&[Finder<'static>]> {
        self.presence.as_deref()
    }

    /// Applies every action, in order, to `item`.
    pub fn apply(&self, item: &mut Item<'_>) {
        for a in &self.actions {
            match &a.keys {
                Keys::Body => {
                    if item.has_body() {
                        apply_body(&a.op, item);
                    }
                }
                Keys::Exact(k) => apply_exact(k, &a.op, item),
                Keys::Regex(re) => apply_regex(re, &a.op, item),
            }
        }
    }
}

fn position(item: &mut Item<'_>, key: &[u8]) -> Option<usize> {
    let msg = item.msg;
    item.attrs().iter().position(|a| a.key(msg) == key)
}

fn resolve(source: &Source, item: &mut Item<'_>) -> Option<AttrValue> {
    match source {
        Source::Value(b) => Some(AttrValue::Encoded(b.clone())),
        Source::From(k) => {
            let i = position(item, k)?;
            let msg = item.msg;
            Some(value_bytes(&item.attrs()[i].value, msg))
        }
    }
}

fn apply_exact(key: &Bytes, op: &Op, item: &mut Item<'_>) {
    let found = position(item, key);
    match (op, found) {
        (Op::Insert(s), None) | (Op::Upsert(s), None) => {
            if let Some(v) = resolve(s, item) {
                item.attrs().push(Attr::new(key.clone(), v));
                item.changed = true;
            }
        }
        (Op::Update(s), Some(i)) | (Op::Upsert(s), Some(i)) => {
            if let Some(v) = resolve(s, item) {
                item.attrs()[i].set_value(v);
                item.changed = true;
            }
        }
        (Op::Delete, Some(_)) => {
            let msg = item.msg;
            item.attrs().retain(|a| a.key(msg) != key.as_ref());
            item.changed = true;
        }
        (Op::Extract { re, groups }, Some(i)) => {
            let msg = item.msg;
            let Some(s) = item.attrs()[i].value(msg).as_str() else {
                return;
            };
            let Some(caps) = re.captures(s) else { return };
            let found = group_values(groups, &caps);
            for (g, v) in found {
                upsert(item, g, AttrValue::String(v));
            }
        }
        (Op::Hash | Op::Mask { .. }, Some(i)) => {
            let msg = item.msg;
            if let Some(v) = rewrite_value(op, item.attrs()[i].value(msg)) {
                item.attrs()[i].set_value(v);
                item.changed = true;
            }
        }
        _ => {}
    }
}

fn apply_regex(re: &Regex, op: &Op, item: &mut Item<'_>) {
    let msg = item.msg;
    let matching: Vec<usize> = item
        .attrs()
        .iter()
        .enumerate()
        .filter(|(_, a)| std::str::from_utf8(a.key(msg)).is_ok_and(|k| re.is_match(k)))
        .map(|(i, _)| i)
        .collect();
    if matching.is_empty() {
        return;
    }
    match op {
        Op::Delete => {
            let mut i = 0;
            item.attrs().retain(|_| {
                i += 1;
                !matching.contains(&(i - 1))
            });
            item.changed = true;
        }
        Op::Update(s) => {
            if let Some(v) = resolve(s, item) {
                for &i in &matching {
                    item.attrs()[i].set_value(v.clone());
                }
                item.changed = true;
            }
        }
        Op::Hash | Op::Mask { .. } => {
            for i in matching {
                if let Some(v) = rewrite_value(op, item.attrs()[i].value(msg)) {
                    item.attrs()[i].set_value(v);
                    item.changed = true;
                }
            }
        }
        // Insert, upsert and extract take exact keys (the config crate enforces it).
        _ => {}
    }
}

/// Each named group of an `extract` match with its text, in the pattern's order: `""` for a
/// group that took no part in the match, as the Collector writes (Go's `FindStringSubmatch`
/// gives `""` for it).
fn group_values(groups: &[Bytes], caps: &regex::Captures<'_>) -> Vec<(Bytes, String)> {
    groups
        .iter()
        .map(|g| {
            let text = std::str::from_utf8(g)
                .ok()
                .and_then(|name| caps.name(name))
                .map_or("", |m| m.as_str());
            (g.clone(), text.to_string())
        })
        .collect()
}

fn upsert(item: &mut Item<'_>, key: Bytes, value: AttrValue) {
    match position(item, &key) {
        Some(i) => item.attrs()[i].set_value(value),
        None => item.attrs().push(Attr::new(key, value)),
    }
    item.changed = true;
}

fn apply_body(op: &Op, item: &mut Item<'_>) {
    let present = !matches!(item.body, AttrValue::Absent);
    match (op, present) {
        (Op::Insert(s), false) | (Op::Update(s), true) | (Op::Upsert(s), _) => {
            if let Some(v) = resolve(s, item) {
                item.set_body(v);
            }
        }
        (Op::Delete, true) => item.set_body(AttrValue::Absent),
        (Op::Hash | Op::Mask { .. }, true) => {
            let msg = item.msg;
            if let Some(v) =
                rewrite_value(op, shardtel_protocol::rewrite::value_ref(&item.body, msg))
            {
                item.set_body(v);
            }
        }
        (Op::Extract { re, groups }, true) => {
            let msg = item.msg;
            let found: Vec<(Bytes, String)> = {
                let body = shardtel_protocol::rewrite::value_ref(&item.body, msg);
                let Some(s) = body.as_str() else { return };
                let Some(caps) = re.captures(s) else { return };
                group_values(groups, &caps)
            };
            for (g, v) in found {
                upsert(item, g, AttrValue::String(v));
            }
        }
        _ => {}
    }
}

/// The new value of a `hash` or `mask` action, or `None` when it does not change `v`.
fn rewrite_value(op: &Op, v: AnyValueRef<'_>) -> Option<AttrValue> {
    match op {
        Op::Hash => Some(AttrValue::String(hash_value(v))),
        Op::Mask { re, replacement } => {
            let s = v.as_str()?;
            match re.replace_all(s, replacement.as_str()) {
                std::borrow::Cow::Borrowed(_) => None,
                std::borrow::Cow::Owned(masked) => Some(AttrValue::String(masked)),
            }
        }
        _ => None,
    }
}

/// The value a `hash` action leaves, as the OpenTelemetry Collector's `sha2Hasher`
/// (contrib `internal/coreinternal/attraction/hasher.go`, v0.165.0) computes it: the lowercase
/// hex SHA-256 of a string's UTF-8 bytes (the empty string too), of a boolean as one byte (1 or
/// 0), of an integer or a double as its 8 little-endian bytes (the double's IEEE 754 bits).
/// Bytes, arrays, maps and no value become the empty string.
pub(crate) fn hash_value(v: AnyValueRef<'_>) -> String {
    let mut h = Sha256::new();
    match v {
        AnyValueRef::String(s) => h.update(s.as_bytes()),
        AnyValueRef::Bool(b) => h.update([u8::from(b)]),
        AnyValueRef::Int(i) => h.update(i.to_le_bytes()),
        AnyValueRef::Double(d) => h.update(d.to_bits().to_le_bytes()),
        AnyValueRef::Bytes(_)
        | AnyValueRef::Array(_)
        | AnyValueRef::KvList(_)
        | AnyValueRef::Empty => return String::new(),
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
