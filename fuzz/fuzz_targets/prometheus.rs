//! `prometheusremotewrite` conversion (`shardtel_sinks::prometheus::RemoteWriteConverter`):
//! arbitrary bytes as a sequence of `ExportMetricsServiceRequest`s (the per-series state of
//! delta points carries over between them) through native and classic converters.
//!
//! Input: settings choice, then length-prefixed requests. Checks beyond "no panic" (and no
//! runaway memory, which libFuzzer's RSS limit catches): each body is snappy-compressed and
//! decodes as a `WriteRequest` that Prometheus would not reject as a whole — every series has
//! a `__name__`, labels sorted, unique and non-empty — and a series' samples are newer than the
//! ones it had before.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_config::{ExponentialHistograms, PrometheusRemoteWriteExporterConfig};
use shardtel_fuzz::Cursor;
use shardtel_sinks::prometheus::RemoteWriteConverter;

/// The parts of `prometheus.WriteRequest` this target checks.
#[derive(Clone, PartialEq, Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Histogram {
    #[prost(int64, tag = "15")]
    timestamp: i64,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let choice = input.byte();
    let mut cfg = PrometheusRemoteWriteExporterConfig::new(
        "http://127.0.0.1:9090/api/v1/write".parse().unwrap(),
    );
    if choice & 1 != 0 {
        cfg.exponential_histograms = ExponentialHistograms::Classic;
    }
    cfg.add_metric_suffixes = choice & 2 != 0;
    cfg.max_series_per_core = 64;
    let cores = 1 + (choice >> 4) as usize % 3;
    let mut converter = RemoteWriteConverter::new(&cfg, (choice >> 2) as usize % cores, cores);
    // Newest timestamp written per series (labels rendered).
    let mut newest: HashMap<String, i64> = HashMap::new();
    while !input.is_empty() {
        let request = input.piece();
        let Ok((body, _dropped)) = converter.convert(request) else {
            continue;
        };
        if body.is_empty() {
            continue;
        }
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy block");
        let write = WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
        let mut in_this: HashMap<String, i64> = HashMap::new();
        for ts in &write.timeseries {
            assert!(
                ts.labels.windows(2).all(|w| w[0].name < w[1].name),
                "labels sorted and unique: {:?}",
                ts.labels
            );
            assert!(ts.labels.iter().any(|l| l.name == "__name__"));
            assert!(ts.labels.iter().all(|l| !l.value.is_empty()));
            assert!(ts.labels.iter().all(|l| !l.name.is_empty()));
            assert_eq!(ts.samples.len() + ts.histograms.len(), 1);
            let key = format!("{:?}", ts.labels);
            let t = ts
                .samples
                .iter()
                .map(|s| s.timestamp)
                .chain(ts.histograms.iter().map(|h| h.timestamp))
                .max()
                .unwrap();
            if let Some(before) = newest.get(&key) {
                assert!(t > *before, "{key}: {t} after {before}");
            }
            let latest = in_this.entry(key).or_insert(t);
            *latest = (*latest).max(t);
        }
        newest.extend(in_this);
    }
});
