//! Log templates: log records with bodies, severities, attributes and (mostly) trace
//! context, spread over two resources.

use anyhow::{ensure, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use prost::Message;

use super::patch::{find_from, Placeholders, TimePatch};
use super::{
    descriptive_attributes, resource, scope, sized_string, vocabulary, GroupTemplate,
    RequestTemplate, Shape,
};
use crate::rng::Rng;

const MESSAGES: &[&str] = &[
    "request completed",
    "order created",
    "payment authorized",
    "cache miss, loading from database",
    "retrying upstream call",
    "user session refreshed",
    "inventory reserved",
];

/// Builds one group of `shape.pieces` requests of `shape.items_per_request` records.
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
    let mut per_resource: [Vec<LogRecord>; 2] = [Vec::new(), Vec::new()];
    let mut placed: [Vec<(u64, u64, i64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..shape.items_per_request {
        let r = (rng.next_u64() % 2) as usize;
        let error = rng.chance(shape.error_ratio);
        let (severity, text) = if error {
            (SeverityNumber::Error, "ERROR")
        } else {
            match rng.next_u64() % 20 {
                0 => (SeverityNumber::Warn, "WARN"),
                1 | 2 => (SeverityNumber::Debug, "DEBUG"),
                _ => (SeverityNumber::Info, "INFO"),
            }
        };
        let msg = MESSAGES[(rng.next_u64() % MESSAGES.len() as u64) as usize];
        let body = format!(
            "{msg} user=user-{} id={}",
            rng.next_u64() % 100_000,
            sized_string(rng, "", shape.attribute_size as usize)
        );
        let with_context = rng.next_u64() % 10 < 7;
        let mut trace_id = Vec::new();
        let mut span_id = Vec::new();
        if with_context {
            trace_id = vec![0; 16];
            span_id = vec![0; 8];
            rng.fill(&mut trace_id);
            rng.fill(&mut span_id);
        }
        let (time, observed) = (ph.timestamp(), ph.timestamp());
        let offset = -((rng.next_u64() % 500_000_000) as i64);
        per_resource[r].push(LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            severity_number: severity as i32,
            severity_text: text.into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(body)),
            }),
            attributes: descriptive_attributes(rng, shape.attributes, shape.attribute_size, error),
            dropped_attributes_count: 0,
            flags: u32::from(with_context),
            trace_id,
            span_id,
            event_name: String::new(),
        });
        placed[r].push((time, observed, offset));
    }
    let mut resource_logs = Vec::with_capacity(2);
    let mut order = Vec::with_capacity(shape.items_per_request as usize);
    for (r, log_records) in per_resource.into_iter().enumerate() {
        if log_records.is_empty() {
            continue;
        }
        order.extend(placed[r].iter().copied());
        resource_logs.push(ResourceLogs {
            resource: Some(resources[r].clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    let protobuf = ExportLogsServiceRequest { resource_logs }.encode_to_vec();
    let mut times = Vec::with_capacity(order.len() * 2);
    let mut json_times = Vec::with_capacity(order.len() * 2);
    let mut cursor = 0;
    for (time, observed, offset) in order {
        let t = find_from(&protobuf, &time.to_le_bytes(), cursor);
        let o = find_from(&protobuf, &observed.to_le_bytes(), cursor);
        let (Some(t), Some(o)) = (t, o) else {
            anyhow::bail!("log record placeholder not found in template");
        };
        times.push(TimePatch {
            at: t as u32,
            offset_ns: offset,
        });
        // Observed by the SDK a little after the event.
        times.push(TimePatch {
            at: o as u32,
            offset_ns: offset + 250_000,
        });
        json_times.push((time, offset));
        json_times.push((observed, offset + 250_000));
        cursor = t.max(o) + 8;
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
    tpl.with_json(crate::wire::Signal::Logs, &values)
}

/// Decodes a patched request and checks its record count and timestamps.
pub fn check_patched(buf: &[u8], items: u32, base_ns: u64) -> Result<()> {
    let req = ExportLogsServiceRequest::decode(buf)?;
    let mut records = 0u32;
    for rec in req
        .resource_logs
        .iter()
        .flat_map(|r| r.scope_logs.iter().flat_map(|s| s.log_records.iter()))
    {
        ensure!(
            rec.observed_time_unix_nano > rec.time_unix_nano,
            "patched record observed before its time"
        );
        ensure!(
            rec.time_unix_nano <= base_ns && rec.time_unix_nano + 3_600_000_000_000 > base_ns,
            "record timestamp left unpatched"
        );
        records += 1;
    }
    ensure!(
        records == items,
        "patched template has {records} records, expected {items}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{patch::patch_times, tests::shape};
    use crate::wire::Signal;

    #[test]
    fn records_are_counted_and_timestamps_patched() {
        let mut s = shape(Signal::Logs);
        s.error_ratio = 0.5;
        let group = build_group(&s, 4).unwrap();
        let tpl = &group.requests[0];
        let mut buf = tpl.protobuf.clone();
        patch_times(&mut buf, &tpl.times, 1_800_000_000_000_000_000);
        check_patched(&buf, 100, 1_800_000_000_000_000_000).unwrap();
        let req = ExportLogsServiceRequest::decode(&buf[..]).unwrap();
        let errors = req
            .resource_logs
            .iter()
            .flat_map(|r| r.scope_logs.iter().flat_map(|s| s.log_records.iter()))
            .filter(|r| r.severity_number == SeverityNumber::Error as i32)
            .count();
        assert!(
            (20..80).contains(&errors),
            "{errors} errors of 100 at ratio 0.5"
        );
    }
}
