//! Trace templates: realistic traces (one SERVER root, children with parent ids, nested
//! timestamps, errors, VIP users) laid out over one or several requests.

use anyhow::{bail, ensure, Result};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

use super::patch::{find_from, find_tagged, varint, Placeholders, TimePatch, NO_OFFSET};
use super::{
    descriptive_attributes, kv_int, kv_str, resource, scope, vocabulary, GroupTemplate, IdScheme,
    RequestTemplate, Shape, SpanPatch,
};
use crate::rng::Rng;

/// The attribute that carries each span's sequence number.
pub const SEQ_ATTRIBUTE: &str = "loadgen.seq";

/// One span before layout.
struct SpanSpec {
    parent: Option<u32>,
    name: String,
    kind: SpanKind,
    start_offset_ns: i64,
    end_offset_ns: i64,
    error: bool,
    resource: usize,
    attributes: Vec<KeyValue>,
}

/// Where a placeholder span ended up, to find its patch sites after encoding.
struct SpanPlaceholders {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    start: u64,
    end: u64,
    seq: i64,
    trace: u32,
    slot: u32,
    parent_slot: u32,
    start_offset_ns: i64,
    end_offset_ns: i64,
}

fn build_trace(shape: &Shape, rng: &mut Rng, spans: u32) -> Vec<SpanSpec> {
    let vip = rng.chance(shape.vip_share);
    let user = if vip {
        "vip".to_string()
    } else {
        format!("user-{}", rng.next_u64() % 100_000)
    };
    let root_resource = (rng.next_u64() % 2) as usize;
    let mut out: Vec<SpanSpec> = Vec::with_capacity(spans as usize);
    for i in 0..spans {
        let error = rng.chance(shape.error_ratio);
        let (parent, name, kind, start, end, res) = if i == 0 {
            let dur = shape.latency.sample_nanos(rng) as i64;
            let slack = (rng.next_u64() % 1_000_000) as i64;
            let route =
                vocabulary::ROUTES[(rng.next_u64() % vocabulary::ROUTES.len() as u64) as usize];
            let method =
                vocabulary::METHODS[(rng.next_u64() % vocabulary::METHODS.len() as u64) as usize];
            let start = -(dur + slack);
            (
                None,
                format!("{method} {route}"),
                SpanKind::Server,
                start,
                start + dur,
                root_resource,
            )
        } else {
            let p = (rng.next_u64() % u64::from(i)) as u32;
            let parent = &out[p as usize];
            let parent_dur = (parent.end_offset_ns - parent.start_offset_ns).max(1_000);
            let share = 0.1 + 0.8 * rng.next_f64();
            let dur = (shape.latency.sample_nanos(rng) as i64)
                .min((parent_dur as f64 * share) as i64)
                .max(1);
            let start =
                parent.start_offset_ns + ((parent_dur - dur).max(0) as f64 * rng.next_f64()) as i64;
            let n = (rng.next_u64() % vocabulary::CHILD_NAMES.len() as u64) as usize;
            let name = vocabulary::CHILD_NAMES[n];
            let kind = if name.starts_with("HTTP")
                || name.starts_with("SELECT")
                || name.starts_with("INSERT")
                || name.starts_with("cache")
            {
                SpanKind::Client
            } else if name.starts_with("kafka") {
                SpanKind::Producer
            } else {
                SpanKind::Internal
            };
            let res = (rng.next_u64() % 2) as usize;
            (Some(p), name.to_string(), kind, start, start + dur, res)
        };
        let mut attributes = Vec::with_capacity(shape.attributes as usize + 2);
        attributes.push(kv_str("user.id", &user));
        attributes.push(kv_int(SEQ_ATTRIBUTE, 0)); // replaced by a placeholder at layout
        attributes.extend(descriptive_attributes(
            rng,
            shape.attributes,
            shape.attribute_size,
            error,
        ));
        out.push(SpanSpec {
            parent,
            name,
            kind,
            start_offset_ns: start,
            end_offset_ns: end,
            error,
            resource: res,
            attributes,
        });
    }
    out
}

/// Builds one group: `shape.pieces` requests of `shape.items_per_request` spans.
pub fn build_group(shape: &Shape, seed: u64) -> Result<GroupTemplate> {
    let mut rng = Rng::new(seed);
    let (lo, hi) = shape.spans_per_trace;
    ensure!(
        lo >= 1 && lo <= hi,
        "spans per trace must be a range like 5..15 with 1 <= low <= high"
    );
    let n_services = vocabulary::SERVICES.len() as u64;
    let s0 = (rng.next_u64() % n_services) as usize;
    let s1 = (s0 + 1 + (rng.next_u64() % (n_services - 1)) as usize) % n_services as usize;
    let resources = [resource(&mut rng, s0), resource(&mut rng, s1)];

    let group_spans = shape.items_per_group();
    let mut traces: Vec<Vec<SpanSpec>> = Vec::new();
    let mut remaining = group_spans;
    while remaining > 0 {
        let n = (rng.range_inclusive(u64::from(lo), u64::from(hi)) as u32).min(remaining);
        traces.push(build_trace(shape, &mut rng, n));
        remaining -= n;
    }

    // Piece p of every trace, for p in 0..pieces: the roots go first, and each request
    // mixes pieces of many traces.
    let pieces = shape.pieces as usize;
    let mut order: Vec<(u32, u32)> = Vec::with_capacity(group_spans as usize);
    for p in 0..pieces {
        for (t, trace) in traces.iter().enumerate() {
            let n = trace.len();
            for s in n * p / pieces..n * (p + 1) / pieces {
                order.push((t as u32, s as u32));
            }
        }
    }
    debug_assert_eq!(order.len(), group_spans as usize);

    // Slots: position in the group in encoding order (resource 0 first in each request).
    let spr = shape.items_per_request as usize;
    let mut slot_of: Vec<Vec<u32>> = traces.iter().map(|t| vec![0; t.len()]).collect();
    let mut request_layout: Vec<[Vec<(u32, u32)>; 2]> = Vec::with_capacity(pieces);
    for (j, chunk) in order.chunks(spr).enumerate() {
        let mut by_resource: [Vec<(u32, u32)>; 2] = [Vec::new(), Vec::new()];
        for &(t, s) in chunk {
            by_resource[traces[t as usize][s as usize].resource].push((t, s));
        }
        let mut slot = (j * spr) as u32;
        for list in &by_resource {
            for &(t, s) in list {
                slot_of[t as usize][s as usize] = slot;
                slot += 1;
            }
        }
        request_layout.push(by_resource);
    }

    let mut trace_of_slot = vec![0u32; group_spans as usize];
    for (t, slots) in slot_of.iter().enumerate() {
        for &slot in slots {
            trace_of_slot[slot as usize] = t as u32;
        }
    }

    let mut ph = Placeholders::new(seed);
    let trace_placeholders: Vec<[u8; 16]> = traces.iter().map(|_| ph.id16()).collect();
    let mut requests = Vec::with_capacity(pieces);
    for layout in &request_layout {
        let mut placed: Vec<SpanPlaceholders> = Vec::with_capacity(spr);
        let mut resource_spans = Vec::with_capacity(2);
        for (r, list) in layout.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut spans = Vec::with_capacity(list.len());
            for &(t, s) in list {
                let spec = &traces[t as usize][s as usize];
                let p = SpanPlaceholders {
                    trace_id: trace_placeholders[t as usize],
                    span_id: ph.id8(),
                    parent_span_id: spec.parent.map(|_| ph.id8()),
                    start: ph.timestamp(),
                    end: ph.timestamp(),
                    seq: ph.seq_value(),
                    trace: t,
                    slot: slot_of[t as usize][s as usize],
                    parent_slot: spec.parent.map_or(0, |ps| slot_of[t as usize][ps as usize]),
                    start_offset_ns: spec.start_offset_ns,
                    end_offset_ns: spec.end_offset_ns,
                };
                let mut attributes = spec.attributes.clone();
                attributes[1] = kv_int(SEQ_ATTRIBUTE, p.seq);
                spans.push(Span {
                    trace_id: p.trace_id.to_vec(),
                    span_id: p.span_id.to_vec(),
                    trace_state: String::new(),
                    parent_span_id: p.parent_span_id.map(|id| id.to_vec()).unwrap_or_default(),
                    flags: 0x100 | 0x01, // parent-is-remote known, sampled
                    name: spec.name.clone(),
                    kind: spec.kind as i32,
                    start_time_unix_nano: p.start,
                    end_time_unix_nano: p.end,
                    attributes,
                    dropped_attributes_count: 0,
                    events: Vec::new(),
                    dropped_events_count: 0,
                    links: Vec::new(),
                    dropped_links_count: 0,
                    status: spec.error.then(|| Status {
                        message: "internal error".into(),
                        code: StatusCode::Error as i32,
                    }),
                });
                placed.push(p);
            }
            resource_spans.push(ResourceSpans {
                resource: Some(resources[r].clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            });
        }
        let protobuf = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        let mut tpl = locate(protobuf, &placed)?;
        if shape.json {
            tpl = with_json(tpl, &placed)?;
        }
        requests.push(tpl);
    }
    Ok(GroupTemplate {
        requests,
        trace_of_slot,
        traces: traces.len() as u32,
    })
}

fn locate(protobuf: Vec<u8>, placed: &[SpanPlaceholders]) -> Result<RequestTemplate> {
    let mut spans = Vec::with_capacity(placed.len());
    let mut times = Vec::with_capacity(placed.len() * 2);
    let mut cursor = 0usize;
    for p in placed {
        let Some(trace_at) = find_from(&protobuf, &p.trace_id, cursor) else {
            bail!("trace id placeholder not found in template");
        };
        let find = |needle: &[u8]| match find_from(&protobuf, needle, trace_at) {
            Some(at) => Ok(at as u32),
            None => Err(anyhow::anyhow!("span placeholder not found in template")),
        };
        let span_id_at = find(&p.span_id)?;
        let parent_span_id_at = match p.parent_span_id {
            Some(id) => find(&id)?,
            None => NO_OFFSET,
        };
        let start_at = find(&p.start.to_le_bytes())?;
        let end_at = find(&p.end.to_le_bytes())?;
        let seq_at = find_tagged(&protobuf, 0x18, &varint(p.seq as u64), trace_at)?;
        times.push(TimePatch {
            at: start_at,
            offset_ns: p.start_offset_ns,
        });
        times.push(TimePatch {
            at: end_at,
            offset_ns: p.end_offset_ns,
        });
        spans.push(SpanPatch {
            trace_id_at: trace_at as u32,
            span_id_at,
            parent_span_id_at,
            seq_at,
            trace: p.trace,
            slot: p.slot,
            parent_slot: p.parent_slot,
        });
        cursor = trace_at + 16;
    }
    Ok(RequestTemplate {
        protobuf,
        items: placed.len() as u32,
        times,
        spans,
        json: None,
    })
}

fn with_json(tpl: RequestTemplate, placed: &[SpanPlaceholders]) -> Result<RequestTemplate> {
    let mut trace_ids: Vec<(u32, [u8; 16])> =
        placed.iter().map(|p| (p.trace, p.trace_id)).collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    let mut span_ids = Vec::with_capacity(placed.len() * 2);
    let mut seqs = Vec::with_capacity(placed.len());
    let mut times = Vec::with_capacity(placed.len() * 2);
    for p in placed {
        span_ids.push((p.slot, p.span_id));
        if let Some(parent) = p.parent_span_id {
            span_ids.push((p.parent_slot, parent));
        }
        seqs.push((p.slot, p.seq));
        times.push((p.start, p.start_offset_ns));
        times.push((p.end, p.end_offset_ns));
    }
    let values = super::json::PlaceholderValues {
        trace_ids: &trace_ids,
        span_ids: &span_ids,
        seqs: &seqs,
        times: &times,
    };
    tpl.with_json(crate::wire::Signal::Traces, &values)
}

/// Decodes a patched request and checks every span carries the ids, sequence number and
/// trace id the patch table promised.
pub fn check_patched(
    buf: &[u8],
    tpl: &RequestTemplate,
    ids: &IdScheme,
    seq_base: u64,
    trace_ids: &[[u8; 16]],
) -> Result<()> {
    let req = ExportTraceServiceRequest::decode(buf)?;
    let spans: Vec<&Span> = req
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
        .collect();
    ensure!(
        spans.len() == tpl.spans.len(),
        "patched template lost spans"
    );
    for (span, p) in spans.iter().zip(&tpl.spans) {
        let seq = seq_base + u64::from(p.slot);
        ensure!(span.span_id == ids.span_id(seq), "patched span id mismatch");
        ensure!(
            span.trace_id == trace_ids[p.trace as usize],
            "patched trace id mismatch"
        );
        if p.parent_span_id_at != NO_OFFSET {
            let parent = ids.span_id(seq_base + u64::from(p.parent_slot));
            ensure!(span.parent_span_id == parent, "patched parent id mismatch");
        } else {
            ensure!(span.parent_span_id.is_empty(), "root span has a parent");
        }
        let seq_attr = span.attributes.iter().find(|kv| kv.key == SEQ_ATTRIBUTE);
        let value = seq_attr
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref());
        ensure!(
            value == Some(&Value::IntValue(ids.attribute_seq(seq) as i64)),
            "patched loadgen.seq mismatch"
        );
        ensure!(
            span.end_time_unix_nano >= span.start_time_unix_nano,
            "patched span ends before it starts"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{patch_request, tests::shape, TemplateSet};
    use crate::wire::Signal;
    use std::collections::{HashMap, HashSet};

    fn decode_group(shape: &Shape) -> (GroupTemplate, Vec<Vec<Span>>) {
        let set = TemplateSet::build(shape).unwrap();
        let group = set.groups[0].clone();
        let ids = IdScheme {
            run_id: 77,
            worker: 1,
        };
        let trace_ids = ids.trace_ids(0, shape.items_per_group(), group.traces);
        let reqs = group
            .requests
            .iter()
            .map(|tpl| {
                let mut buf = tpl.protobuf.clone();
                patch_request(
                    &mut buf,
                    tpl,
                    1_800_000_000_000_000_000,
                    &ids,
                    0,
                    &trace_ids,
                );
                ExportTraceServiceRequest::decode(&buf[..])
                    .unwrap()
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans.into_iter().flat_map(|s| s.spans))
                    .collect()
            })
            .collect();
        (group, reqs)
    }

    #[test]
    fn whole_traces_have_one_server_root_and_valid_parents() {
        let s = shape(Signal::Traces);
        let (group, reqs) = decode_group(&s);
        assert_eq!(reqs.len(), 1);
        let spans = &reqs[0];
        assert_eq!(spans.len(), 100);
        let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], s)).collect();
        let mut roots: HashMap<&[u8], usize> = HashMap::new();
        for span in spans {
            if span.parent_span_id.is_empty() {
                assert_eq!(span.kind, SpanKind::Server as i32);
                *roots.entry(&span.trace_id[..]).or_default() += 1;
            } else {
                let parent = by_id[&span.parent_span_id[..]];
                assert_eq!(parent.trace_id, span.trace_id);
                assert!(parent.start_time_unix_nano <= span.start_time_unix_nano);
                assert!(parent.end_time_unix_nano >= span.end_time_unix_nano);
            }
            assert!(span.end_time_unix_nano <= 1_800_000_000_000_000_000);
            assert!(span.start_time_unix_nano > 1_800_000_000_000_000_000 - 3_600_000_000_000);
            assert_eq!(span.attributes.len(), 10);
        }
        assert_eq!(roots.len() as u32, group.traces);
        assert!(roots.values().all(|&n| n == 1));
    }

    #[test]
    fn vip_traces_mark_every_span() {
        let mut s = shape(Signal::Traces);
        s.vip_share = 0.5;
        let (_, reqs) = decode_group(&s);
        let mut user_of: HashMap<Vec<u8>, HashSet<String>> = HashMap::new();
        for span in &reqs[0] {
            let user = span
                .attributes
                .iter()
                .find(|kv| kv.key == "user.id")
                .unwrap();
            let Some(Value::StringValue(u)) = user.value.as_ref().unwrap().value.clone() else {
                panic!("user.id is not a string");
            };
            user_of.entry(span.trace_id.clone()).or_default().insert(u);
        }
        assert!(user_of.values().all(|users| users.len() == 1));
        let vip = user_of.values().filter(|u| u.contains("vip")).count();
        assert!(
            vip > 0 && vip < user_of.len(),
            "vip traces {vip} of {}",
            user_of.len()
        );
    }

    #[test]
    fn split_traces_spread_over_requests_and_mix_traces() {
        let mut s = shape(Signal::Traces);
        s.pieces = 3;
        s.spans_per_trace = (9, 15);
        let (group, reqs) = decode_group(&s);
        assert_eq!(reqs.len(), 3);
        let mut requests_of: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
        for (j, spans) in reqs.iter().enumerate() {
            assert_eq!(spans.len(), 100);
            let traces: HashSet<&Vec<u8>> = spans.iter().map(|s| &s.trace_id).collect();
            assert!(
                traces.len() >= 10,
                "request {j} mixes only {} traces",
                traces.len()
            );
            for span in spans {
                requests_of
                    .entry(span.trace_id.clone())
                    .or_default()
                    .insert(j);
            }
        }
        let spread = requests_of.values().filter(|r| r.len() >= 2).count();
        assert!(
            spread * 10 >= requests_of.len() * 9,
            "most traces span several requests"
        );
        assert_eq!(group.trace_of_slot.len(), 300);
    }
}
