//! Helpers shared by the fuzz targets: reading structured choices out of the fuzzer's bytes,
//! and counting what a request holds with a full `prost` decode (the independent reference the
//! targets check the zero-copy code against).

use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::Signal;

/// Takes choices and pieces off the front of the fuzzer's input; past the end every choice is
/// 0 and every piece empty, so any input is a valid sequence of choices.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    /// The next byte (0 at the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next little-endian `u16` (0 at the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// A piece prefixed by its `u16` length.
    pub fn piece(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The signal a choice byte names.
pub fn signal(choice: u8) -> Signal {
    match choice % 3 {
        0 => Signal::Traces,
        1 => Signal::Metrics,
        _ => Signal::Logs,
    }
}

/// Spans, data points or log records in an encoded request of `signal`, by a full prost
/// decode; `None` when prost rejects it.
pub fn prost_items(signal: Signal, pb: &[u8]) -> Option<usize> {
    Some(match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(pb)
            .ok()?
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
        Signal::Metrics => {
            use shardtel_protocol::proto::metrics::v1::metric::Data;
            ExportMetricsServiceRequest::decode(pb)
                .ok()?
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                })
                .sum()
        }
        Signal::Logs => ExportLogsServiceRequest::decode(pb)
            .ok()?
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum(),
    })
}

/// Items in a request the scanner accepts (spans, data points, log records); `Err` with the
/// scanner's message when it refuses it.
pub fn scanned_items(signal: Signal, pb: &[u8]) -> Result<usize, String> {
    use shardtel_protocol::scan::{scan_logs, scan_metrics, TracesIndex};
    match signal {
        Signal::Traces => {
            let mut index = TracesIndex::default();
            index.scan(pb).map_err(|e| e.to_string())?;
            Ok(index.spans.len())
        }
        Signal::Metrics => scan_metrics(pb)
            .map(|c| c.items as usize)
            .map_err(|e| e.to_string()),
        Signal::Logs => scan_logs(pb)
            .map(|c| c.items as usize)
            .map_err(|e| e.to_string()),
    }
}
