//! Metric templates: gauges, monotonic cumulative sums and explicit-bucket histograms,
//! each with several data points, spread over two resources.

use anyhow::{ensure, Result};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use prost::Message;

use super::patch::{find_from, Placeholders, TimePatch};
use super::{
    descriptive_attributes, resource, scope, vocabulary, GroupTemplate, RequestTemplate, Shape,
};
use crate::rng::Rng;

const GAUGES: &[(&str, &str)] = &[
    ("system.cpu.utilization", "1"),
    ("system.memory.usage", "By"),
    ("process.runtime.heap.used", "By"),
];
const SUMS: &[(&str, &str)] = &[
    ("http.server.request.count", "{request}"),
    ("messaging.client.sent.messages", "{message}"),
    ("db.client.operations", "{operation}"),
];
const HISTOGRAMS: &[(&str, &str)] = &[
    ("http.server.request.duration", "s"),
    ("http.client.request.duration", "s"),
    ("db.client.operation.duration", "s"),
];
const BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Cumulative sums and histograms start this long before each request.
const CUMULATIVE_START_NS: i64 = -60_000_000_000;

/// Builds one group of `shape.pieces` requests of `shape.items_per_request` data points.
pub fn build_group(shape: &Shape, seed: u64) -> Result<GroupTemplate> {
    let mut rng = Rng::new(seed);
    let mut ph = Placeholders::new(seed);
    let n = vocabulary::SERVICES.len() as u64;
    let s0 = (rng.next_u64() % n) as usize;
    let s1 = (s0 + 1 + (rng.next_u64() % (n - 1)) as usize) % n as usize;
    let resources = [resource(&mut rng, s0), resource(&mut rng, s1)];
    let mut requests = Vec::with_capacity(shape.pieces as usize);
    for _ in 0..shape.pieces {
        requests.push(build_request(shape, &mut rng, &mut ph, &resources)?);
    }
    Ok(GroupTemplate {
        requests,
        trace_of_slot: Vec::new(),
        traces: 0,
    })
}

fn build_request(
    shape: &Shape,
    rng: &mut Rng,
    ph: &mut Placeholders,
    resources: &[opentelemetry_proto::tonic::resource::v1::Resource; 2],
) -> Result<RequestTemplate> {
    let mut per_resource: [Vec<Metric>; 2] = [Vec::new(), Vec::new()];
    // Placeholders in encoding order: (start, time, time offset).
    let mut placed: [Vec<(u64, u64, i64)>; 2] = [Vec::new(), Vec::new()];
    let mut remaining = shape.items_per_request;
    let mut kind = (rng.next_u64() % 3) as usize;
    while remaining > 0 {
        let points = (rng.range_inclusive(1, 10) as u32).min(remaining);
        remaining -= points;
        let r = (rng.next_u64() % 2) as usize;
        let pick = |rng: &mut Rng, list: &[(&'static str, &'static str)]| {
            list[(rng.next_u64() % list.len() as u64) as usize]
        };
        let mut stamps = Vec::with_capacity(points as usize);
        for _ in 0..points {
            let time_offset = -((rng.next_u64() % 1_000_000_000) as i64);
            stamps.push((ph.timestamp(), ph.timestamp(), time_offset));
        }
        let attrs = |rng: &mut Rng| {
            let error = rng_bool(rng);
            descriptive_attributes(rng, shape.attributes, shape.attribute_size, error)
        };
        // Gauges and sums: one point per stamp, its attributes drawn before its value.
        let number_points = |rng: &mut Rng, value: fn(&mut Rng) -> number_data_point::Value| {
            stamps
                .iter()
                .map(|&(start, time, _)| NumberDataPoint {
                    attributes: attrs(rng),
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    exemplars: Vec::new(),
                    flags: 0,
                    value: Some(value(rng)),
                })
                .collect()
        };
        let (name, unit, data) = match kind % 3 {
            0 => {
                let (name, unit) = pick(rng, GAUGES);
                let data_points = number_points(rng, |rng| {
                    number_data_point::Value::AsDouble(rng.next_f64() * 100.0)
                });
                (name, unit, Data::Gauge(Gauge { data_points }))
            }
            1 => {
                let (name, unit) = pick(rng, SUMS);
                let data_points = number_points(rng, |rng| {
                    number_data_point::Value::AsInt((rng.next_u64() % 1_000_000) as i64)
                });
                (
                    name,
                    unit,
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                )
            }
            _ => {
                let (name, unit) = pick(rng, HISTOGRAMS);
                let data_points = stamps
                    .iter()
                    .map(|&(start, time, _)| {
                        let bucket_counts: Vec<u64> =
                            (0..=BOUNDS.len()).map(|_| rng.next_u64() % 500).collect();
                        let count = bucket_counts.iter().sum();
                        HistogramDataPoint {
                            attributes: attrs(rng),
                            start_time_unix_nano: start,
                            time_unix_nano: time,
                            count,
                            sum: Some(count as f64 * 0.042),
                            bucket_counts,
                            explicit_bounds: BOUNDS.to_vec(),
                            exemplars: Vec::new(),
                            flags: 0,
                            min: Some(0.001),
                            max: Some(9.5),
                        }
                    })
                    .collect();
                (
                    name,
                    unit,
                    Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                )
            }
        };
        kind += 1;
        per_resource[r].push(Metric {
            name: name.into(),
            description: String::new(),
            unit: unit.into(),
            metadata: Vec::new(),
            data: Some(data),
        });
        placed[r].extend(stamps);
    }
    let mut resource_metrics = Vec::with_capacity(2);
    let mut order = Vec::with_capacity(shape.items_per_request as usize);
    for (r, metrics) in per_resource.into_iter().enumerate() {
        if metrics.is_empty() {
            continue;
        }
        order.extend(placed[r].iter().copied());
        resource_metrics.push(ResourceMetrics {
            resource: Some(resources[r].clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    let protobuf = ExportMetricsServiceRequest { resource_metrics }.encode_to_vec();
    let mut times = Vec::with_capacity(order.len() * 2);
    let mut json_times = Vec::with_capacity(order.len() * 2);
    let mut cursor = 0;
    for (start, time, time_offset) in order {
        let s = find_from(&protobuf, &start.to_le_bytes(), cursor);
        let t = find_from(&protobuf, &time.to_le_bytes(), cursor);
        let (Some(s), Some(t)) = (s, t) else {
            anyhow::bail!("data point placeholder not found in template");
        };
        times.push(TimePatch {
            at: s as u32,
            offset_ns: CUMULATIVE_START_NS,
        });
        times.push(TimePatch {
            at: t as u32,
            offset_ns: time_offset,
        });
        json_times.push((start, CUMULATIVE_START_NS));
        json_times.push((time, time_offset));
        cursor = s.max(t) + 8;
    }
    let tpl = RequestTemplate {
        protobuf,
        items: shape.items_per_request,
        times,
        spans: Vec::new(),
        json: None,
    };
    if !shape.json {
        return Ok(tpl);
    }
    let values = super::json::PlaceholderValues {
        trace_ids: &[],
        span_ids: &[],
        seqs: &[],
        times: &json_times,
    };
    tpl.with_json(crate::wire::Signal::Metrics, &values)
}

fn rng_bool(rng: &mut Rng) -> bool {
    rng.next_u64() % 50 == 0
}

/// Decodes a patched request and checks its point count and timestamps.
pub fn check_patched(buf: &[u8], items: u32, base_ns: u64) -> Result<()> {
    let req = ExportMetricsServiceRequest::decode(buf)?;
    let mut points = 0u32;
    for m in req
        .resource_metrics
        .iter()
        .flat_map(|r| r.scope_metrics.iter().flat_map(|s| s.metrics.iter()))
    {
        let stamps: Vec<(u64, u64)> = match &m.data {
            Some(Data::Gauge(g)) => g
                .data_points
                .iter()
                .map(|p| (p.start_time_unix_nano, p.time_unix_nano))
                .collect(),
            Some(Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| (p.start_time_unix_nano, p.time_unix_nano))
                .collect(),
            Some(Data::Histogram(h)) => h
                .data_points
                .iter()
                .map(|p| (p.start_time_unix_nano, p.time_unix_nano))
                .collect(),
            _ => Vec::new(),
        };
        for (start, time) in stamps {
            ensure!(start < time, "patched data point starts after its time");
            ensure!(
                time <= base_ns && time + 3_600_000_000_000 > base_ns,
                "data point timestamp left unpatched"
            );
            points += 1;
        }
    }
    ensure!(
        points == items,
        "patched template has {points} points, expected {items}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{patch::patch_times, tests::shape};
    use crate::wire::Signal;

    #[test]
    fn points_are_counted_and_timestamps_patched() {
        let mut s = shape(Signal::Metrics);
        s.items_per_request = 37;
        let group = build_group(&s, 9).unwrap();
        let tpl = &group.requests[0];
        assert_eq!(tpl.times.len(), 74);
        let mut buf = tpl.protobuf.clone();
        patch_times(&mut buf, &tpl.times, 1_800_000_000_000_000_000);
        check_patched(&buf, 37, 1_800_000_000_000_000_000).unwrap();
        let req = ExportMetricsServiceRequest::decode(&buf[..]).unwrap();
        let kinds: std::collections::HashSet<_> = req
            .resource_metrics
            .iter()
            .flat_map(|r| r.scope_metrics.iter().flat_map(|s| s.metrics.iter()))
            .map(|m| std::mem::discriminant(m.data.as_ref().unwrap()))
            .collect();
        assert_eq!(kinds.len(), 3, "gauges, sums and histograms");
    }
}
