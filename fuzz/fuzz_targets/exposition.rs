//! Feeds arbitrary bytes to the Prometheus text and OpenMetrics parsers and, through the scrape
//! translator, to the OTLP encoder: no panic, and whatever a scrape accepts encodes to a valid
//! `ExportMetricsServiceRequest`. A second scrape of the same target against other bytes
//! exercises start times and stale points.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_protocol::exposition::text::{LineLabels, TextParser};
use shardtel_protocol::exposition::{
    Flavor, ScrapeBuilder, ScrapeFormat, ScrapeReport, ScrapeTarget, SeriesTable,
};
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;

fuzz_target!(|data: &[u8]| {
    for flavor in [Flavor::Prometheus, Flavor::OpenMetrics] {
        let mut parser = TextParser::new(data, flavor);
        let mut labels = LineLabels::default();
        while let Ok(Some(_)) = parser.next_entry(&mut labels) {}
    }
    let target = ScrapeTarget {
        job: "fuzz".into(),
        instance: "127.0.0.1:1".into(),
        scheme: "http".into(),
        labels: vec![
            ("instance".into(), "127.0.0.1:1".into()),
            ("job".into(), "fuzz".into()),
            ("zone".into(), "a".into()),
        ],
        honor_labels: data.first().is_some_and(|b| b & 1 == 1),
        honor_timestamps: true,
        sample_limit: 10_000,
    };
    let mut builder = ScrapeBuilder::default();
    let mut table = SeriesTable::default();
    let mut out = Vec::new();
    // The whole input, then its second half, as two scrapes of one target.
    let half = &data[data.len() / 2..];
    for (i, body) in [data, half].into_iter().enumerate() {
        let format = ScrapeFormat::Text(if data.len() % 2 == 0 {
            Flavor::Prometheus
        } else {
            Flavor::OpenMetrics
        });
        let time = 1_700_000_000_000 + i as i64 * 15_000;
        let ok = builder.gather(&target, body, format, time).is_ok();
        let kept = ok.then(|| (Bytes::copy_from_slice(body), format));
        let stats = builder.commit(&target, &mut table, time, kept);
        let report = ScrapeReport {
            up: ok,
            series_added: stats.series_added,
            ..Default::default()
        };
        builder.report(&target, time, &report);
        builder.encode(&target, "0", &mut out);
        ExportMetricsServiceRequest::decode(&out[..]).expect("the translator wrote valid OTLP");
    }
});
