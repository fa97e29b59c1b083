//! The processors' wire-level rewriting (`shardtel_protocol::rewrite`) of requests the scanner
//! accepted, as the attributes, resource and filter processors drive it: attributes read,
//! deleted, changed, added or copied, log bodies replaced or removed, items and data points
//! dropped, resources rewritten; for traces, rewritten spans and resources ride in the index
//! and are substituted when the batch is re-framed.
//!
//! Input: signal choice, a length-prefixed stream of edit choices (used cyclically), the
//! request. Checks: whatever the edits, the output is a request the scanner accepts, and prost
//! decodes it with the items that were not dropped.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardtel_fuzz::{prost_items, scanned_items, signal, Cursor};
use shardtel_protocol::reframe::{encode_traces, Encoded};
use shardtel_protocol::rewrite::{
    fields, read_attributes, rewrite_metric_points, rewrite_request, value_bytes, write_message,
    write_resource, Attr, AttrValue, FieldEdit, ItemOutcome, RequestRewriter, RequestScratch,
};
use shardtel_protocol::scan::{SpanBatch, TracesIndex};
use shardtel_protocol::wire::{Reader, Value};
use shardtel_protocol::Signal;

/// Edit choices, taken cyclically (all zeros when there are none: nothing changes).
struct Edits {
    bytes: Vec<u8>,
    at: usize,
}

impl Edits {
    fn next(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0;
        }
        let b = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        b
    }

    fn text(&mut self) -> String {
        let n = (self.next() % 12) as usize;
        let raw: Vec<u8> = (0..n).map(|_| self.next()).collect();
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// Edits the attributes (field `field`) of `msg`, and with `body` its log body; the new
    /// encoding when something changed.
    fn message(&mut self, msg: &[u8], field: u32, body: bool) -> Option<Bytes> {
        let mut attrs: Vec<Attr> = Vec::new();
        read_attributes(msg, field, &mut attrs);
        let mut changed = false;
        for _ in 0..(self.next() % 4) {
            let pick = self.next() as usize % attrs.len().max(1);
            changed = true;
            match self.next() % 6 {
                0 if !attrs.is_empty() => {
                    attrs.remove(pick);
                }
                1 if !attrs.is_empty() => {
                    let text = self.text();
                    attrs[pick].set_value(AttrValue::String(text));
                }
                2 if !attrs.is_empty() => attrs[pick].set_value(AttrValue::Absent),
                3 if !attrs.is_empty() => {
                    let copied = value_bytes(&attrs[pick].value, msg);
                    let key = self.text();
                    attrs.push(Attr::new(Bytes::from(key), copied));
                }
                _ => {
                    let (key, value) = (self.text(), self.text());
                    attrs.push(Attr::new(Bytes::from(key), AttrValue::String(value)));
                }
            }
        }
        let new_body = match (body, self.next() % 4) {
            (true, 1) => Some(AttrValue::Absent),
            (true, 2) => Some(AttrValue::String(self.text())),
            _ => None,
        };
        if !changed && new_body.is_none() {
            return None;
        }
        let edit = new_body.as_ref().map(|value| FieldEdit {
            field: fields::LOG_BODY,
            value,
        });
        let mut out = BytesMut::new();
        write_message(msg, field, &attrs, edit, &mut out);
        Some(out.freeze())
    }

    /// A new `Resource` body for `resource`, or `None`.
    fn resource(&mut self, resource: &[u8]) -> Option<Bytes> {
        let mut attrs: Vec<Attr> = Vec::new();
        read_attributes(resource, fields::RESOURCE_ATTRIBUTES, &mut attrs);
        if !self.next().is_multiple_of(3) {
            return None;
        }
        let (key, value) = (self.text(), self.text());
        attrs.push(Attr::new(Bytes::from(key), AttrValue::String(value)));
        let mut out = BytesMut::new();
        write_resource(resource, &attrs, &mut out);
        Some(out.freeze())
    }
}

/// Drives `rewrite_request` for metrics and logs, counting the items it dropped.
struct Rewriter<'e> {
    edits: &'e mut Edits,
    signal: Signal,
    dropped: usize,
}

impl RequestRewriter for Rewriter<'_> {
    fn resource(&mut self, resource: &[u8]) -> Option<Bytes> {
        self.edits.resource(resource)
    }

    fn item(&mut self, item: &[u8]) -> ItemOutcome {
        match self.signal {
            Signal::Logs => {
                if self.edits.next().is_multiple_of(5) {
                    self.dropped += 1;
                    return ItemOutcome::Drop;
                }
                match self.edits.message(item, fields::LOG_ATTRIBUTES, true) {
                    Some(b) => ItemOutcome::Replace(b),
                    None => ItemOutcome::Keep,
                }
            }
            _ => {
                let mut arena = BytesMut::new();
                let edits = &mut *self.edits;
                let mut dropped = 0;
                let outcome = rewrite_metric_points(item, &mut arena, |point, field| {
                    if edits.next().is_multiple_of(5) {
                        dropped += 1;
                        return ItemOutcome::Drop;
                    }
                    match edits.message(point, field, false) {
                        Some(b) => ItemOutcome::Replace(b),
                        None => ItemOutcome::Keep,
                    }
                });
                self.dropped += dropped;
                outcome
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let signal = signal(input.byte());
    let mut edits = Edits {
        bytes: input.piece().to_vec(),
        at: 0,
    };
    let request = Bytes::copy_from_slice(input.rest());
    let Ok(items) = scanned_items(signal, &request) else {
        return;
    };
    let (out, kept) = match signal {
        Signal::Traces => traces(&request, &mut edits),
        _ => {
            let mut rw = Rewriter {
                edits: &mut edits,
                signal,
                dropped: 0,
            };
            let mut out = Encoded::default();
            let changed =
                rewrite_request(&request, &mut rw, &mut RequestScratch::default(), &mut out)
                    .expect("a scanned request rewrites");
            let dropped = rw.dropped;
            if !changed {
                assert_eq!(out.to_bytes(), request, "unchanged: the original bytes");
            }
            (out.to_bytes(), items - dropped)
        }
    };
    let scanned = scanned_items(signal, &out)
        .unwrap_or_else(|e| panic!("the rewritten request is invalid: {e}"));
    assert_eq!(scanned, kept);
    assert_eq!(prost_items(signal, &out), Some(kept));
});

/// Rewrites spans and resources into the index, drops some spans, re-frames.
fn traces(request: &Bytes, edits: &mut Edits) -> (Bytes, usize) {
    let mut index = TracesIndex::default();
    index.scan(request).expect("scanned before");
    for i in 0..index.spans.len() {
        let range = index.spans[i].range.clone();
        let span = &request[range.start as usize..range.end as usize];
        if let Some(new) = edits.message(span, fields::SPAN_ATTRIBUTES, false) {
            index.rewrites.spans.push((i as u32, new));
        }
    }
    for r in 0..index.resources.len() as u32 {
        // The resource's header fields: `resource` (rewritten, or not) and the others as they are.
        let mut resource: Option<Bytes> = None;
        let mut others = Vec::new();
        for h in index.resource_headers(r) {
            let field = &request[h];
            match Reader::new(field).next_field() {
                Some(Ok((k, Value::Len(b)))) if k.field == fields::RESOURCE => {
                    resource = edits.resource(&field[b]);
                    if resource.is_none() {
                        others.extend_from_slice(field);
                    }
                }
                _ => others.extend_from_slice(field),
            }
        }
        if let Some(body) = resource {
            let mut fields_out = BytesMut::new();
            shardtel_protocol::wire::put_key(
                &mut fields_out,
                fields::RESOURCE,
                shardtel_protocol::wire::WireType::Len,
            );
            shardtel_protocol::wire::put_varint(&mut fields_out, body.len() as u64);
            fields_out.extend_from_slice(&body);
            fields_out.extend_from_slice(&others);
            index.rewrites.resources.push((r, fields_out.freeze()));
        }
    }
    let before = index.spans.len();
    let dropped = index.retain_spans(|_| !edits.next().is_multiple_of(5));
    let kept = index.spans.len();
    assert_eq!(kept + dropped, before);
    let batch = SpanBatch {
        buf: request.clone(),
        index,
        release_token: None,
    };
    let mut out = Encoded::default();
    encode_traces(&batch, &mut out);
    (out.to_bytes(), kept)
}
