//! `--verify`: did every acknowledged span arrive, exactly once, in whole traces?
//!
//! While the run goes, each worker records which of its requests were acknowledged (one
//! bit per request, [`WorkerLedger`]) and which template each trace group used (2 bytes
//! per group), which gives every span's trace and every trace's span count without
//! storing spans. Span ids carry (run id, worker, sequence number) (see
//! [`crate::gen::IdScheme`]), so after the run a [`Source`] of the collector's output is
//! read back and each arrived span is marked in a bitmap.
//!
//! The report counts lost spans (acknowledged, never arrived), duplicates (arrived more
//! than once), incomplete kept traces (some but not all acknowledged spans arrived), and
//! spans from other runs (ignored). With `--sampled` the target tail-samples: a trace
//! with no arrived span was "not kept", which is not loss; only kept traces must be
//! complete.

pub mod bitset;
pub mod source;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::gen::{IdScheme, TemplateSet};
use bitset::BitSet;
pub use source::{Source, SourceSpec};

/// What one worker sent and had acknowledged.
#[derive(Debug, Clone, Default)]
pub struct WorkerLedger {
    /// Requests generated (and sent).
    pub requests_issued: u64,
    /// Bit per request index: accepted with nothing rejected.
    pub acked: BitSet,
    /// Template index of each group, in group order.
    pub group_templates: Vec<u16>,
}

/// Everything verification needs to know about what was sent.
pub struct RunLedger<'a> {
    /// This run's id (the first two bytes of every span id).
    pub run_id: u16,
    /// The templates the groups refer to.
    pub templates: &'a TemplateSet,
    /// One ledger per worker, by worker index.
    pub workers: Vec<WorkerLedger>,
}

#[derive(Debug, Default, Clone)]
struct WorkerArrivals {
    seen: BitSet,
    arrived_acked: u64,
}

/// Collects arrivals against a ledger.
pub struct Verifier<'a> {
    ledger: RunLedger<'a>,
    sampled: bool,
    arrivals: Vec<WorkerArrivals>,
    acked_spans: u64,
    duplicates: u64,
    other_runs: u64,
    unrecognised: u64,
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VerifyReport {
    /// Where arrivals were read from.
    pub source: String,
    /// Whether the target was declared to tail-sample.
    pub sampled: bool,
    /// Spans sent by this run.
    pub spans_sent: u64,
    /// Spans in acknowledged requests.
    pub spans_acknowledged: u64,
    /// Distinct spans of this run that arrived.
    pub spans_arrived: u64,
    /// Arrived spans whose request was not acknowledged (refused, failed, timed out).
    pub spans_arrived_unacknowledged: u64,
    /// Acknowledged spans that never arrived (with `--sampled`: only in kept traces).
    pub spans_lost: u64,
    /// Extra arrivals of spans that had already arrived.
    pub duplicates: u64,
    /// Spans from other runs (ignored).
    pub spans_from_other_runs: u64,
    /// Span ids that are not loadgen's or name a span this run never sent.
    pub spans_unrecognised: u64,
    /// Traces with at least one acknowledged span.
    pub traces_acknowledged: u64,
    /// Traces whose acknowledged spans all arrived.
    pub traces_complete: u64,
    /// Traces where some, but not all, acknowledged spans arrived.
    pub traces_incomplete: u64,
    /// Traces with acknowledged spans of which none arrived: lost, or (with
    /// `--sampled`) not kept by the sampler.
    pub traces_without_arrivals: u64,
    /// Lines or messages the source could not parse.
    pub unreadable_records: u64,
    /// The first parse error, if any.
    pub first_unreadable: Option<String>,
    /// Files (or partitions) read.
    pub inputs_read: u64,
    /// Seconds spent waiting for arrivals.
    pub waited_seconds: f64,
    /// Traces were acknowledged but not one arrived whole (a failure even with `--sampled`).
    pub nothing_arrived: bool,
    /// No loss, no incomplete kept trace, and some trace arrived whole.
    pub passed: bool,
}

impl<'a> Verifier<'a> {
    /// A verifier for `ledger`.
    pub fn new(ledger: RunLedger<'a>, sampled: bool) -> Self {
        let spr = u64::from(ledger.templates.items_per_request());
        let acked_spans = ledger.workers.iter().map(|w| w.acked.count() * spr).sum();
        let arrivals = vec![WorkerArrivals::default(); ledger.workers.len()];
        Self {
            ledger,
            sampled,
            arrivals,
            acked_spans,
            duplicates: 0,
            other_runs: 0,
            unrecognised: 0,
        }
    }

    fn locate(&self, seq: u64) -> (u64, u64) {
        let shape = &self.ledger.templates.shape;
        let per_group = u64::from(shape.items_per_group());
        let group = seq / per_group;
        let slot = seq % per_group;
        let request = group * u64::from(shape.pieces) + slot / u64::from(shape.items_per_request);
        (group, request)
    }

    /// Notes one arrived span id (hex, as in OTLP/JSON).
    pub fn observe_hex(&mut self, hex: &str) {
        match parse_hex8(hex) {
            Some(id) => self.observe(&id),
            None => self.unrecognised += 1,
        }
    }

    /// Notes one arrived span id.
    pub fn observe(&mut self, id: &[u8; 8]) {
        let (run, worker, seq) = IdScheme::parse_span_id(id);
        if run != self.ledger.run_id {
            self.other_runs += 1;
            return;
        }
        let Some(ledger) = self.ledger.workers.get(worker as usize) else {
            self.unrecognised += 1;
            return;
        };
        let (_, request) = self.locate(seq);
        if request >= ledger.requests_issued {
            self.unrecognised += 1;
            return;
        }
        let acked = ledger.acked.contains(request);
        let arrivals = &mut self.arrivals[worker as usize];
        if arrivals.seen.insert(seq) {
            self.duplicates += 1;
        } else if acked {
            arrivals.arrived_acked += 1;
        }
    }

    /// Acknowledged spans that have not arrived yet.
    pub fn missing(&self) -> u64 {
        let arrived: u64 = self.arrivals.iter().map(|a| a.arrived_acked).sum();
        self.acked_spans - arrived
    }

    /// Walks every trace of every group and builds the report.
    pub fn report(&self) -> VerifyReport {
        let set = self.ledger.templates;
        let shape = &set.shape;
        let per_group = u64::from(shape.items_per_group());
        let pieces = u64::from(shape.pieces);
        let spr = u64::from(shape.items_per_request);
        let mut r = VerifyReport {
            sampled: self.sampled,
            spans_acknowledged: self.acked_spans,
            duplicates: self.duplicates,
            spans_from_other_runs: self.other_runs,
            spans_unrecognised: self.unrecognised,
            ..Default::default()
        };
        let mut acked_in = Vec::new();
        let mut arrived_acked_in = Vec::new();
        let mut arrived_any_in = Vec::new();
        for (ledger, arrivals) in self.ledger.workers.iter().zip(&self.arrivals) {
            r.spans_sent += ledger.requests_issued * spr;
            for (g, &t) in ledger.group_templates.iter().enumerate() {
                let group = &set.groups[t as usize];
                let traces = group.traces as usize;
                acked_in.clear();
                acked_in.resize(traces, 0u32);
                arrived_acked_in.clear();
                arrived_acked_in.resize(traces, 0u32);
                arrived_any_in.clear();
                arrived_any_in.resize(traces, false);
                for slot in 0..per_group {
                    let request = g as u64 * pieces + slot / spr;
                    if request >= ledger.requests_issued {
                        break;
                    }
                    let trace = group.trace_of_slot[slot as usize] as usize;
                    let acked = ledger.acked.contains(request);
                    let arrived = arrivals.seen.contains(g as u64 * per_group + slot);
                    if arrived {
                        r.spans_arrived += 1;
                        arrived_any_in[trace] = true;
                        if !acked {
                            r.spans_arrived_unacknowledged += 1;
                        }
                    }
                    if acked {
                        acked_in[trace] += 1;
                        if arrived {
                            arrived_acked_in[trace] += 1;
                        }
                    }
                }
                for trace in 0..traces {
                    let acked = acked_in[trace];
                    if acked == 0 {
                        continue;
                    }
                    r.traces_acknowledged += 1;
                    let arrived = arrived_acked_in[trace];
                    let missing = u64::from(acked - arrived);
                    if arrived == acked {
                        r.traces_complete += 1;
                    } else if arrived == 0 && !arrived_any_in[trace] {
                        r.traces_without_arrivals += 1;
                        if !self.sampled {
                            r.spans_lost += missing;
                        }
                    } else {
                        r.traces_incomplete += 1;
                        r.spans_lost += missing;
                    }
                }
            }
        }
        // With `--sampled`, a run where nothing arrived at all would count every trace as "not
        // kept": a sampler that keeps nothing, or an exporter that never wrote, must not pass.
        r.nothing_arrived = r.traces_acknowledged > 0 && r.traces_complete == 0;
        r.passed = r.spans_lost == 0 && r.traces_incomplete == 0 && !r.nothing_arrived;
        r
    }
}

fn parse_hex8(s: &str) -> Option<[u8; 8]> {
    let b = s.as_bytes();
    if b.len() != 16 {
        return None;
    }
    let mut out = [0u8; 8];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// How long to keep reading.
#[derive(Debug, Clone, Copy)]
pub struct WaitPolicy {
    /// Give up after this long.
    pub wait: Duration,
    /// Stop once nothing new arrived for this long and nothing is missing.
    pub settle: Duration,
    /// Pause between polls.
    pub poll_interval: Duration,
}

/// Reads `source` until everything acknowledged arrived and the source went quiet for
/// `settle` (with `--sampled`: until it went quiet with no incomplete trace), or until
/// `wait` elapsed; then reports.
pub fn verify(
    mut verifier: Verifier<'_>,
    source: &mut dyn Source,
    policy: WaitPolicy,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport> {
    let start = Instant::now();
    let mut last_change = start;
    loop {
        let stats = source.poll(&mut |id| verifier.observe_hex(id))?;
        let now = Instant::now();
        if stats.bytes > 0 {
            last_change = now;
        }
        let quiet = now.duration_since(last_change) >= policy.settle;
        let missing = verifier.missing();
        progress(verifier.acked_spans - missing, verifier.acked_spans);
        let done = quiet
            && if verifier.sampled {
                verifier.report().traces_incomplete == 0
            } else {
                missing == 0
            };
        if done || now.duration_since(start) >= policy.wait {
            break;
        }
        std::thread::sleep(policy.poll_interval);
    }
    let mut report = verifier.report();
    let (bad, first) = source.bad_records();
    report.unreadable_records = bad;
    report.first_unreadable = first;
    report.source = source.describe();
    report.inputs_read = source.inputs();
    report.waited_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::tests::shape;
    use crate::wire::Signal;

    fn ledger<'a>(set: &'a TemplateSet, requests: u64, acked: &[u64]) -> RunLedger<'a> {
        let pieces = u64::from(set.shape.pieces);
        let groups = requests.div_ceil(pieces);
        let mut w = WorkerLedger {
            requests_issued: requests,
            group_templates: (0..groups)
                .map(|g| (g % set.groups.len() as u64) as u16)
                .collect(),
            ..Default::default()
        };
        for &a in acked {
            w.acked.insert(a);
        }
        RunLedger {
            run_id: 42,
            templates: set,
            workers: vec![w],
        }
    }

    fn spans_of_request(set: &TemplateSet, request: u64) -> std::ops::Range<u64> {
        let spr = u64::from(set.shape.items_per_request);
        request * spr..(request + 1) * spr
    }

    fn id(seq: u64) -> [u8; 8] {
        IdScheme {
            run_id: 42,
            worker: 0,
        }
        .span_id(seq)
    }

    #[test]
    fn everything_arrived_passes() {
        let set = TemplateSet::build(&shape(Signal::Traces)).unwrap();
        let mut v = Verifier::new(ledger(&set, 4, &[0, 1, 2, 3]), false);
        for r in 0..4 {
            for s in spans_of_request(&set, r) {
                v.observe(&id(s));
            }
        }
        v.observe(&id(0));
        v.observe(
            &IdScheme {
                run_id: 7,
                worker: 0,
            }
            .span_id(1),
        );
        assert_eq!(v.missing(), 0);
        let rep = v.report();
        assert!(rep.passed);
        assert_eq!(rep.spans_arrived, 400);
        assert_eq!(rep.duplicates, 1);
        assert_eq!(rep.spans_from_other_runs, 1);
        assert_eq!(rep.traces_complete, rep.traces_acknowledged);
    }

    #[test]
    fn a_dropped_request_is_loss_unless_sampled() {
        let set = TemplateSet::build(&shape(Signal::Traces)).unwrap();
        for sampled in [false, true] {
            let mut v = Verifier::new(ledger(&set, 3, &[0, 1, 2]), sampled);
            for r in [0, 2] {
                for s in spans_of_request(&set, r) {
                    v.observe(&id(s));
                }
            }
            assert_eq!(v.missing(), 100);
            let rep = v.report();
            // Whole traces per request: the dropped request's traces arrived not at all.
            assert_eq!(rep.traces_incomplete, 0);
            assert_eq!(rep.traces_without_arrivals, u64::from(set.groups[1].traces));
            assert_eq!(rep.spans_lost, if sampled { 0 } else { 100 });
            assert_eq!(rep.passed, sampled);
        }
    }

    #[test]
    fn a_sampled_run_where_nothing_arrived_fails() {
        let set = TemplateSet::build(&shape(Signal::Traces)).unwrap();
        let v = Verifier::new(ledger(&set, 3, &[0, 1, 2]), true);
        let rep = v.report();
        assert_eq!(rep.spans_lost, 0);
        assert_eq!(rep.traces_incomplete, 0);
        assert!(rep.nothing_arrived);
        assert!(!rep.passed);
    }

    #[test]
    fn split_traces_missing_a_piece_are_incomplete() {
        let mut s = shape(Signal::Traces);
        s.pieces = 2;
        let set = TemplateSet::build(&s).unwrap();
        let mut v = Verifier::new(ledger(&set, 2, &[0, 1]), true);
        for s in spans_of_request(&set, 0) {
            v.observe(&id(s));
        }
        let rep = v.report();
        assert!(!rep.passed);
        assert!(rep.traces_incomplete > 0);
        assert!(rep.spans_lost > 0 && rep.spans_lost <= 100);
    }

    #[test]
    fn unacknowledged_arrivals_are_not_expected() {
        let set = TemplateSet::build(&shape(Signal::Traces)).unwrap();
        let mut v = Verifier::new(ledger(&set, 2, &[0]), false);
        for r in 0..2 {
            for s in spans_of_request(&set, r) {
                v.observe(&id(s));
            }
        }
        v.observe(&id(10_000));
        v.observe_hex("zz");
        let rep = v.report();
        assert!(rep.passed);
        assert_eq!(rep.spans_arrived_unacknowledged, 100);
        assert_eq!(rep.spans_unrecognised, 2);
    }

    #[test]
    fn hex_parses() {
        assert_eq!(
            parse_hex8("0102030405060708"),
            Some([1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(parse_hex8("01020304050607"), None);
        assert_eq!(parse_hex8("010203040506070g"), None);
    }
}
