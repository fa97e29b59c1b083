//! shardtel-loadgen: the bundled OTLP load generator.
//!
//! It answers three questions about a collector: how fast, how late, and whether
//! anything was lost. Load is open loop at a target rate (latency from each request's
//! scheduled time, which avoids coordinated omission) or closed loop at a concurrency,
//! from worker threads pinned to chosen CPUs. Requests are copies of pre-encoded
//! templates with ids, sequence numbers and timestamps patched in place, so generation
//! is never the bottleneck. `--verify` reads the collector's output back and reports
//! lost, duplicated and incomplete traces.
//!
//! Layers, bottom up: [`wire`] (signals, compression, framing, JSON; the boundary to
//! `shardtel-protocol`), [`rng`], [`gen`] (templates and the [`gen::Generator`]),
//! [`rate`] (the [`rate::RateController`] with an injectable clock), [`outcome`] and
//! [`transport`] (hyper over tokio, TLS with rustls), [`stats`], [`worker`] (one pinned
//! thread), [`verify`] (ledger, arrival sources, verdict), [`report`] and [`cli`].
//! It depends on `shardtel-protocol` and never on the engine, so an engine bug cannot
//! hide on both ends of a test.
//!
//! ```text
//! shardtel-loadgen --rate 200000 --duration 30s --cpus 0 --hgrm out.hgrm
//! ```

#![forbid(unsafe_code)]

mod cli;
mod gen;
mod outcome;
mod rate;
mod report;
mod rng;
mod stats;
mod transport;
mod verify;
mod wire;
mod worker;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use cli::{Args, RateUnit};
use gen::{BodyEncoder, Generator, IdScheme, Shape, TemplateSet};
use rate::Pace;
use report::RunReport;
use rng::{mix64, LatencyDistribution};
use stats::{Counts, LiveStats};
use transport::{Endpoint, Protocol, TlsOptions, Transport};
use wire::{Compression, Signal};
use worker::{WorkerPlan, WorkerResult};

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardtel-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn shape_of(args: &Args) -> Shape {
    Shape {
        signal: args.signal.into(),
        items_per_request: args.items_per_request(),
        spans_per_trace: args.spans_per_trace,
        pieces: args.split_traces.unwrap_or(1),
        attributes: args.attributes,
        attribute_size: args.attribute_size,
        error_ratio: args.error_ratio,
        latency: match args.latency_fixed {
            Some(d) => LatencyDistribution::Fixed(d),
            None => LatencyDistribution::LogNormal {
                median: args.latency_median,
                p99: args.latency_p99,
            },
        },
        vip_share: args.vip_share,
        templates: args.templates,
        seed: args.seed,
        json: args.protocol == cli::ProtocolArg::HttpJson,
    }
}

/// Splits `total` over `parts` as evenly as possible.
fn split_evenly(total: u64, parts: usize, i: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((i as u64) < total % parts)
}

fn run(args: Args) -> Result<ExitCode> {
    args.validate()?;
    let signal: Signal = args.signal.into();
    let protocol: Protocol = args.protocol.into();
    let compression: Compression = args.compression.into();
    let shape = shape_of(&args);
    let built = Instant::now();
    let set = TemplateSet::build(&shape).context("failed to build request templates")?;
    if !args.quiet {
        let bytes: usize = set
            .groups
            .iter()
            .flat_map(|g| g.requests.iter())
            .map(|r| r.protobuf.len())
            .sum();
        eprintln!(
            "shardtel-loadgen: {} template groups, {:.1} KB per request on average, built in {:.0?}",
            set.groups.len(),
            bytes as f64 / (set.groups.len() as f64 * f64::from(shape.pieces)) / 1024.0,
            built.elapsed()
        );
    }
    let run_id = args.run_id.unwrap_or_else(|| {
        let seed = gen::unix_nanos_now() ^ (u64::from(std::process::id()) << 32);
        (mix64(seed) as u16).max(1)
    });
    let encoder = BodyEncoder {
        signal,
        grpc: protocol == Protocol::Grpc,
        json: protocol == Protocol::HttpJson,
        compression,
        level: args
            .compression_level
            .unwrap_or(compression.default_level()),
    };
    let duration = match (args.duration, args.count) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    if args.dry_run {
        return dry_run(&args, set, encoder, run_id, duration);
    }

    let url = args
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", protocol.default_port()));
    let endpoint = Endpoint::parse(&url, protocol, signal, args.http_path.as_deref())?;
    let tls = TlsOptions {
        insecure_skip_verify: args.insecure_skip_verify,
        ca_file: args.ca_file.clone(),
        server_name: args.tls_server_name.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    };
    let transport = Arc::new(Transport::new(
        endpoint,
        protocol,
        signal,
        args.http2,
        compression,
        args.timeout,
        &tls,
        &args.request_headers(),
    )?);
    let workers = args.workers;
    let connections = args.connections.unwrap_or(workers);
    if !transport.http2 && args.concurrency.is_some_and(|c| c > 1) {
        eprintln!(
            "shardtel-loadgen: warning: HTTP/1.1 carries one request at a time per connection; \
             --concurrency acts as 1 (use --connections, or --http2)"
        );
    }
    let items_per_request = shape.items_per_request;
    let requests_per_second = args.rate.map(|r| match args.rate_unit {
        RateUnit::Requests => r,
        RateUnit::Items => r / f64::from(items_per_request),
    });

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal kills at once; the first one stops sending and reports.
        signal_hook::flag::register_conditional_default(sig, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let ready = Arc::new(Barrier::new(workers));
    let live: Vec<Arc<LiveStats>> = (0..workers)
        .map(|_| Arc::new(LiveStats::default()))
        .collect();
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let conns = split_evenly(connections as u64, workers, w) as usize;
        let share = conns as f64 / connections as f64;
        let pace = match requests_per_second {
            Some(rps) => Pace::open(rps * share),
            None => Pace::Closed,
        };
        let phase = match pace {
            Pace::Open { interval_ns } => {
                Duration::from_nanos((interval_ns * w as f64 / workers as f64) as u64)
            }
            Pace::Closed => Duration::ZERO,
        };
        let plan = WorkerPlan {
            index: w as u8,
            cpu: args.cpus.as_ref().map(|c| c.0[w % c.0.len()]),
            connections: conns,
            per_connection: match requests_per_second {
                Some(_) => args.max_in_flight,
                None => args.concurrency.unwrap_or(1),
            },
            pace,
            count: args.count.map(|c| split_evenly(c, workers, w)),
            duration,
            phase,
            spin: args.spin,
            requests_per_connection: args.requests_per_connection,
        };
        let ids = IdScheme {
            run_id,
            worker: w as u8,
        };
        let generator = Generator::new(set.clone(), ids, encoder, args.seed)?;
        let (transport, live, stop, ready) = (
            transport.clone(),
            live[w].clone(),
            stop.clone(),
            ready.clone(),
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{w}"))
                .spawn(move || worker::run_worker(plan, transport, generator, live, stop, ready))?,
        );
    }
    report::progress_loop(
        &live,
        wire::item_name(signal),
        items_per_request,
        Duration::from_secs(1),
        args.quiet,
        || handles.iter().all(|h| h.is_finished()),
    );
    let mut results: Vec<WorkerResult> = Vec::with_capacity(workers);
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r?),
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    for (w, r) in results.iter().enumerate() {
        if r.pinned == Some(false) {
            eprintln!("shardtel-loadgen: warning: worker {w} could not be pinned to its cpu");
        }
    }

    let mut counts = Counts::default();
    let mut latency = rate::new_histogram();
    let mut lag = rate::new_histogram();
    let mut elapsed = Duration::ZERO;
    for r in &results {
        counts.merge(&r.counts);
        latency.add(&r.recorder.latency)?;
        lag.add(&r.recorder.send_lag)?;
        elapsed = elapsed.max(r.elapsed);
    }
    let mut rep = RunReport {
        run_id: format!("{run_id:04x}"),
        signal: signal.name().into(),
        item: wire::item_name(signal).into(),
        protocol: protocol.as_str().into(),
        endpoint: transport.endpoint.url(),
        compression: compression.header_value().unwrap_or("none").into(),
        mode: if requests_per_second.is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        target_rate: args.rate,
        rate_unit: args.rate.map(|_| match args.rate_unit {
            RateUnit::Requests => "requests".to_string(),
            RateUnit::Items => wire::item_name(signal).to_string(),
        }),
        concurrency: requests_per_second.is_none().then(|| {
            if transport.http2 {
                args.concurrency.unwrap_or(1)
            } else {
                1
            }
        }),
        workers,
        connections,
        items_per_request,
        ..Default::default()
    };
    rep.fill(&counts, &latency, &lag, elapsed);

    if args.verify {
        let pattern = args
            .verify_file
            .clone()
            .context("--verify needs --verify-file")?;
        let ledger = verify::RunLedger {
            run_id,
            templates: &set,
            workers: results.iter().map(|r| r.ledger.clone()).collect(),
        };
        let verifier = verify::Verifier::new(ledger, args.sampled);
        let mut source = verify::SourceSpec::Files(pattern).open()?;
        let quiet = args.quiet;
        let mut last = Instant::now();
        let policy = verify::WaitPolicy {
            wait: args.verify_wait,
            settle: args.verify_settle,
            poll_interval: Duration::from_millis(200),
        };
        let verdict = verify::verify(verifier, source.as_mut(), policy, |arrived, acked| {
            if !quiet && last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                eprintln!("verify: {arrived} of {acked} acknowledged spans arrived");
            }
        })?;
        rep.verify = Some(verdict);
    }

    print!("{}", rep.to_text());
    if let Some(path) = &args.json {
        report::write_json(path, &rep)?;
    }
    if let Some(path) = &args.hgrm {
        report::write_hgrm(path, &latency)?;
    }
    if let Some(v) = &rep.verify {
        if !v.passed {
            return Ok(ExitCode::from(2));
        }
    }
    if counts.accepted == 0 {
        eprintln!("shardtel-loadgen: no request was accepted");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Per-worker dry-run result.
#[derive(Debug, Clone, Serialize)]
struct DryRunWorker {
    worker: usize,
    cpu: Option<usize>,
    pinned: Option<bool>,
    seconds: f64,
    requests: u64,
    items: u64,
    bytes: u64,
    items_per_second: f64,
    requests_per_second: f64,
    megabytes_per_second: f64,
}

/// `--dry-run`: generate only, as fast as possible, and report the rate.
fn dry_run(
    args: &Args,
    set: Arc<TemplateSet>,
    encoder: BodyEncoder,
    run_id: u16,
    duration: Option<Duration>,
) -> Result<ExitCode> {
    let workers = args.workers;
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let set = set.clone();
        let cpu = args.cpus.as_ref().map(|c| c.0[w % c.0.len()]);
        let count = args.count.map(|c| split_evenly(c, workers, w));
        let seed = args.seed;
        handles.push(std::thread::spawn(move || -> Result<DryRunWorker> {
            let pinned = cpu.map(worker::pin_current_thread);
            let ids = IdScheme {
                run_id,
                worker: w as u8,
            };
            let mut generator = Generator::new(set, ids, encoder, seed)?;
            let start = Instant::now();
            let (mut requests, mut items, mut bytes) = (0u64, 0u64, 0u64);
            loop {
                // Check the clock every 64 requests only.
                for _ in 0..64 {
                    let r = generator.next_request()?;
                    requests += 1;
                    items += u64::from(r.items);
                    bytes += r.body.len() as u64;
                    if count.is_some_and(|c| requests >= c) {
                        break;
                    }
                }
                if count.is_some_and(|c| requests >= c)
                    || duration.is_some_and(|d| start.elapsed() >= d)
                {
                    break;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            Ok(DryRunWorker {
                worker: w,
                cpu,
                pinned,
                seconds,
                requests,
                items,
                bytes,
                items_per_second: items as f64 / seconds,
                requests_per_second: requests as f64 / seconds,
                megabytes_per_second: bytes as f64 / seconds / 1e6,
            })
        }));
    }
    let mut results = Vec::with_capacity(workers);
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r?),
            Err(_) => bail!("a dry-run thread panicked"),
        }
    }
    let item = wire::item_name(encoder.signal);
    println!(
        "dry run: {} {} per request, {} framing, {} compression{}, {} template groups",
        set.shape.items_per_request,
        item,
        if encoder.grpc { "grpc" } else { "http" },
        encoder.compression.header_value().unwrap_or("no"),
        if encoder.json { ", json bodies" } else { "" },
        set.groups.len()
    );
    let mut total = 0.0;
    for r in &results {
        total += r.items_per_second;
        let cpu = match (r.cpu, r.pinned) {
            (Some(c), Some(true)) => format!("cpu {c}"),
            (Some(c), _) => format!("cpu {c} (pinning failed)"),
            _ => "unpinned".into(),
        };
        println!(
            "worker {} ({cpu}): {:.0} {item}/s  {:.0} req/s  {:.1} MB/s  ({} requests in {:.2} s)",
            r.worker,
            r.items_per_second,
            r.requests_per_second,
            r.megabytes_per_second,
            r.requests,
            r.seconds
        );
    }
    println!("total: {total:.0} {item}/s");
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "dry_run": { "items_per_second": total, "item": item, "workers": results } });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_adds_up() {
        for total in [0u64, 1, 7, 100] {
            for parts in 1..5 {
                let sum: u64 = (0..parts).map(|i| split_evenly(total, parts, i)).sum();
                assert_eq!(sum, total);
            }
        }
    }
}
