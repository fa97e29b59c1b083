//! Routing metrics by series identity: which core owns a metric, and splitting an
//! `ExportMetricsServiceRequest` per owner core without copying it.
//!
//! A Prometheus series is fixed by `job` (`service.namespace/service.name`), `instance`
//! (`service.instance.id`), the metric name and the point's labels. Exporters that keep state
//! per series (delta → cumulative) need every point of a series on one core, so a metric is
//! owned by [`owner_core`] of [`metric_key`]: a hash of the resource's three identifying
//! attributes and the metric's name. All series of one metric of one service instance meet on
//! one core; different metrics spread over the cores. A resource's `target_info` series is owned
//! by the core of [`resource_key`] alone, so [`MetricsRouting::split`] also sends every resource
//! (its header fields, without metrics if it has none there) to that core.
//!
//! [`MetricsRouting`] reuses [`TracesIndex`]: the three OTLP signals share the layout
//! `Resource* → Scope* → item`, and the encoder only writes new length prefixes. For metrics,
//! each index "span" is one `Metric` and its 16-byte routing key holds the metric key.

use std::ops::Range;

use bytes::Bytes;

use crate::reframe::{encode_traces, Encoded};
use crate::route::owner_core;
use crate::scan::{self, ResourceEntry, ScanError, ScopeEntry, SpanEntry, TracesIndex};
use crate::span::ResourceView;
use crate::wire::Reader;

/// 64-bit FNV-1a, continued from `state`.
fn fnv(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// Separates the hashed fields; never part of UTF-8 text.
const SEPARATOR: &[u8] = &[0xff];

/// The routing key of a resource: its `service.namespace`, `service.name` and
/// `service.instance.id` string values (empty when absent or not strings).
pub fn resource_key(namespace: &[u8], name: &[u8], instance: &[u8]) -> u64 {
    let mut h = fnv(FNV_OFFSET, namespace);
    h = fnv(h, SEPARATOR);
    h = fnv(h, name);
    h = fnv(h, SEPARATOR);
    fnv(h, instance)
}

/// The routing key of a metric named `name` of the resource with key `resource`.
pub fn metric_key(resource: u64, name: &[u8]) -> u64 {
    fnv(fnv(resource, SEPARATOR), name)
}

/// The core (in `0..cores`) that owns routing key `key`: [`owner_core`] over the key's bytes.
pub fn key_owner(key: u64, cores: usize) -> usize {
    owner_core(&key_id(key), cores)
}

fn key_id(key: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&key.to_le_bytes());
    id
}

fn key_of(id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_le_bytes(b)
}

/// The routing key of an encoded `Resource` message body.
pub fn resource_key_of(resource: &[u8]) -> u64 {
    let view = ResourceView::new(resource);
    let text = |key: &[u8]| {
        view.attribute(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .as_bytes()
    };
    resource_key(
        text(b"service.namespace"),
        text(b"service.name"),
        text(b"service.instance.id"),
    )
}

/// One destination's part of a split request.
#[derive(Debug, Default)]
pub struct MetricsPart {
    /// The encoded `ExportMetricsServiceRequest` (slices of the original buffer plus new
    /// length prefixes); empty when the destination gets nothing.
    pub encoded: Encoded,
    /// Data points in it.
    pub points: u64,
}

/// Scratch for indexing and splitting metrics requests on one core; reusable.
#[derive(Debug, Default)]
pub struct MetricsRouting {
    index: TracesIndex,
    /// Data points of each metric (parallel to `index.spans`).
    points: Vec<u32>,
    /// Routing key of each resource (parallel to `index.resources`).
    resource_keys: Vec<u64>,
    parts: Vec<TracesIndex>,
}

impl MetricsRouting {
    /// Validates (as [`scan::scan_metrics`] does) and indexes an `ExportMetricsServiceRequest`;
    /// returns its number of data points.
    pub fn scan(&mut self, buf: &[u8]) -> Result<u64, ScanError> {
        let MetricsRouting {
            index,
            points,
            resource_keys,
            ..
        } = self;
        index.clear();
        points.clear();
        resource_keys.clear();
        if buf.len() > u32::MAX as usize {
            return Err(ScanError::TooLarge);
        }
        let mut total = 0u64;
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let key = r.read_key()?;
            if key.field != 1 {
                r.skip(key)?;
                continue;
            }
            let body = scan::read_msg(&mut r, key)?;
            let resource = index.resources.len() as u32;
            let first = index.headers.len() as u32;
            let mut resource_body: Option<Range<usize>> = None;
            let headers = &mut index.headers;
            let children = scan::container_headers(
                buf,
                body.clone(),
                scan::RESOURCE_HEADERS,
                scan::RESOURCE_DEPTH,
                |h| {
                    headers.push(h.start as u32..h.end as u32);
                },
            )?;
            // The Resource message (field 1) among the headers, for the routing key.
            for h in &index.headers[first as usize..] {
                let mut hr = Reader::nested(buf, h.start as usize..h.end as usize);
                if let Ok(k) = hr.read_key() {
                    if k.field == 1 {
                        resource_body = hr.read_len().ok();
                    }
                }
            }
            let rkey =
                resource_body.map_or(resource_key(b"", b"", b""), |b| resource_key_of(&buf[b]));
            resource_keys.push(rkey);
            index.resources.push(ResourceEntry {
                headers: first..index.headers.len() as u32,
            });
            if !children {
                continue;
            }
            let TracesIndex {
                scopes,
                spans,
                headers,
                ..
            } = &mut *index;
            scan::container_children(buf, body, |scope_body| {
                let scope = scopes.len() as u32;
                let first = headers.len() as u32;
                let has_metrics = scan::container_headers(
                    buf,
                    scope_body.clone(),
                    scan::SCOPE_HEADERS,
                    scan::SCOPE_DEPTH,
                    |h| headers.push(h.start as u32..h.end as u32),
                )?;
                scopes.push(ScopeEntry {
                    resource,
                    headers: first..headers.len() as u32,
                });
                if has_metrics {
                    scan::container_children(buf, scope_body, |metric| {
                        let n = scan::scan_metric(buf, metric.clone())?;
                        total += u64::from(n);
                        points.push(n);
                        spans.push(SpanEntry {
                            scope,
                            range: metric.start as u32..metric.end as u32,
                            trace_id: key_id(metric_key(rkey, metric_name(buf, metric))),
                        });
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
        }
        Ok(total)
    }

    /// The index of the last scanned request: its resources, scopes and metrics (each metric an
    /// entry of `spans`, as [`TracesIndex::scan_items`] indexes it).
    pub fn index(&self) -> &TracesIndex {
        &self.index
    }

    /// The owner core of every metric (and `target_info`) of the last scanned request when
    /// all of them have the same one, else `None`.
    pub fn single_owner(&self, cores: usize) -> Option<usize> {
        let mut owners = self
            .index
            .spans
            .iter()
            .map(|s| key_owner(key_of(&s.trace_id), cores))
            .chain(self.resource_keys.iter().map(|k| key_owner(*k, cores)));
        let first = owners.next()?;
        owners.all(|o| o == first).then_some(first)
    }

    /// Splits the last scanned request (held in `buf`) into one part per core: `out[d]` gets
    /// the metrics core `d` owns, under their resources and scopes, and every resource whose
    /// `target_info` `d` owns. `out` is resized to `cores`.
    pub fn split(&mut self, buf: &Bytes, cores: usize, out: &mut Vec<MetricsPart>) {
        out.clear();
        out.resize_with(cores, MetricsPart::default);
        let MetricsRouting {
            index,
            points,
            resource_keys,
            parts,
        } = self;
        index.partition(cores, |id| key_owner(key_of(id), cores), parts);
        for (span, n) in index.spans.iter().zip(points.iter()) {
            out[key_owner(key_of(&span.trace_id), cores)].points += u64::from(*n);
        }
        // Resources whose target_info owner got none of their metrics: header fields only.
        let mut metric = 0usize;
        let mut scope = 0usize;
        for (r, key) in resource_keys.iter().enumerate() {
            let owner = key_owner(*key, cores);
            let scope_end = scope
                + index.scopes[scope..]
                    .iter()
                    .take_while(|s| s.resource as usize == r)
                    .count();
            let mut has = false;
            while metric < index.spans.len() && (index.spans[metric].scope as usize) < scope_end {
                has |= key_owner(key_of(&index.spans[metric].trace_id), cores) == owner;
                metric += 1;
            }
            scope = scope_end;
            if !has {
                let part = &mut parts[owner];
                let h = &index.resources[r].headers;
                let first = part.headers.len() as u32;
                part.headers
                    .extend_from_slice(&index.headers[h.start as usize..h.end as usize]);
                part.resources.push(ResourceEntry {
                    headers: first..part.headers.len() as u32,
                });
            }
        }
        for (part, out) in parts.iter_mut().zip(out.iter_mut()) {
            if part.resources.is_empty() {
                continue;
            }
            let batch = scan::SpanBatch {
                buf: buf.clone(),
                index: std::mem::take(part),
                release_token: None,
            };
            encode_traces(&batch, &mut out.encoded);
            *part = batch.index;
        }
    }
}

/// The `name` (field 1) of a validated `Metric` body; empty when absent.
fn metric_name(buf: &[u8], body: Range<usize>) -> &[u8] {
    let mut r = Reader::nested(buf, body);
    let mut name: &[u8] = &[];
    while let Some(Ok((key, value))) = r.next_field() {
        if key.field == 1 {
            if let crate::wire::Value::Len(range) = value {
                name = &buf[range];
            }
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use crate::proto::common::v1::{any_value, AnyValue, KeyValue};
    use crate::proto::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use crate::proto::resource::v1::Resource;
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn gauge(name: &str, points: usize) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..points)
                    .map(|i| NumberDataPoint {
                        value: Some(number_data_point::Value::AsInt(i as i64)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    fn request() -> ExportMetricsServiceRequest {
        let resource = |svc: &str, extra: bool| Resource {
            attributes: if extra {
                vec![kv("service.name", svc), kv("host.name", "h1")]
            } else {
                vec![kv("service.name", svc)]
            },
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![
                ResourceMetrics {
                    resource: Some(resource("a", true)),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: (0..40).map(|i| gauge(&format!("m{i}"), 2)).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceMetrics {
                    resource: Some(resource("b", false)),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = resource_key(b"", b"svc", b"1");
        assert_eq!(a, resource_key(b"", b"svc", b"1"));
        assert_ne!(a, resource_key(b"svc", b"", b"1"));
        assert_ne!(metric_key(a, b"x"), metric_key(a, b"y"));
        let encoded = Resource {
            attributes: vec![kv("service.instance.id", "1"), kv("service.name", "svc")],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(resource_key_of(&encoded), a);
    }

    #[test]
    fn split_keeps_every_metric_once_and_resources_for_target_info() {
        let req = request();
        let buf = Bytes::from(req.encode_to_vec());
        let mut routing = MetricsRouting::default();
        assert_eq!(routing.scan(&buf).unwrap(), 80);
        assert_eq!(routing.single_owner(1), Some(0));
        let cores = 3;
        assert_eq!(routing.single_owner(cores), None);
        let mut parts = Vec::new();
        routing.split(&buf, cores, &mut parts);
        let mut names = Vec::new();
        let mut points = 0;
        for (core, part) in parts.iter().enumerate() {
            let decoded = ExportMetricsServiceRequest::decode(part.encoded.to_bytes()).unwrap();
            let mut n = 0;
            for rm in &decoded.resource_metrics {
                let res = rm.resource.as_ref().unwrap().encode_to_vec();
                let rkey = resource_key_of(&res);
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        assert_eq!(key_owner(metric_key(rkey, m.name.as_bytes()), cores), core);
                        names.push(m.name.clone());
                        n += 2;
                    }
                }
            }
            assert_eq!(n, part.points);
            points += part.points;
            // Each resource reaches its target_info owner.
            for rm in &req.resource_metrics {
                let rkey = resource_key_of(&rm.resource.as_ref().unwrap().encode_to_vec());
                if key_owner(rkey, cores) == core {
                    assert!(decoded
                        .resource_metrics
                        .iter()
                        .any(|d| d.resource == rm.resource));
                }
            }
        }
        assert_eq!(points, 80);
        names.sort();
        let mut want: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn scan_rejects_what_scan_metrics_rejects() {
        let buf = request().encode_to_vec();
        for cut in [1, 7, buf.len() / 2, buf.len() - 1] {
            let mut routing = MetricsRouting::default();
            assert_eq!(
                routing.scan(&buf[..cut]).is_err(),
                scan::scan_metrics(&buf[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
