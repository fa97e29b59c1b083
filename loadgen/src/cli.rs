//! The command line: flags, their documentation, and value parsers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

use crate::transport::Protocol;
use crate::wire::{Compression, Signal};

const EXAMPLES: &str = "\
EXAMPLES:
  # 200k spans/s open loop over OTLP/gRPC for 30 s, loadgen pinned to CPU 0
  shardtel-loadgen --rate 200000 --duration 30s --cpus 0

  # Closed loop, 4 connections x 8 in flight, OTLP/HTTP protobuf over h2c, zstd
  shardtel-loadgen -p http-protobuf -e http://127.0.0.1:4318 --http2 \\
      --connections 4 --concurrency 8 --compression zstd --count 10000

  # Loss check against a collector writing a file exporter's JSON lines
  shardtel-loadgen --rate 50000 --duration 20s --split-traces --verify \\
      --verify-file './shardtel-data/traces*.jsonl*' --verify-wait 15s

  # Same, but the collector tail-samples: only kept traces must be complete
  shardtel-loadgen --rate 50000 --duration 20s --verify --sampled \\
      --verify-file './shardtel-data/traces*.jsonl*'

  # How fast can this machine generate? (no network)
  shardtel-loadgen --dry-run --duration 5s --cpus 0

OUTPUT:
  stderr: a progress line every second (request and item rates, refusals and
  failures, p99 latency of the last second, requests in flight).
  stdout: the final report (duration, requests sent/accepted/refused/failed by
  reason, items acknowledged, achieved rates, latency p50/p90/p99/p99.9/max from
  the intended send time, send lag, and the --verify verdict).
  --json FILE writes the same as JSON; --hgrm FILE the latency distribution.

EXIT STATUS:
  0 success; 1 usage or set-up error, or no request was accepted;
  2 --verify found lost spans or incomplete traces.";

/// OTLP load generator for shardtel and any OpenTelemetry collector.
///
/// Sends realistic traces, metrics or logs over OTLP/gRPC or OTLP/HTTP, open loop at a
/// target rate (latency measured from each request's scheduled send time, so a slow
/// target cannot hide behind coordinated omission) or closed loop at a fixed
/// concurrency, and reports throughput, refusals, failures and HDR latency percentiles.
/// With --verify it reads the collector's file-exporter output back and reports lost,
/// duplicated and incomplete traces.
///
/// Requests are copies of pre-encoded templates whose ids, sequence numbers and
/// timestamps are patched in place, so one core generates millions of spans per
/// second (uncompressed; gzip and zstd cost far more than generation); --dry-run
/// measures it. Every span id is run id (2 bytes) + worker (1 byte) + sequence number
/// (5 bytes), also in the span attribute loadgen.seq.
#[derive(Debug, Parser)]
#[command(name = "shardtel-loadgen", version, after_long_help = EXAMPLES)]
pub struct Args {
    // ---- target ----
    /// Target URL: http://host:port, https://, grpc:// (= http) or grpcs:// (= https).
    /// Default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 otherwise.
    /// For OTLP/HTTP a path in the URL replaces /v1/<signal>.
    #[arg(short, long, help_heading = "Target")]
    pub endpoint: Option<String>,

    /// Wire protocol.
    #[arg(short, long, value_enum, default_value_t = ProtocolArg::Grpc, help_heading = "Target")]
    pub protocol: ProtocolArg,

    /// Request path for OTLP/HTTP (default /v1/traces, /v1/metrics or /v1/logs).
    #[arg(long, value_name = "PATH", help_heading = "Target")]
    pub http_path: Option<String>,

    /// Use HTTP/2 for OTLP/HTTP (h2c, or ALPN h2 over TLS). gRPC always uses HTTP/2.
    /// HTTP/1.1 carries one request at a time per connection.
    #[arg(long, help_heading = "Target")]
    pub http2: bool,

    /// Body compression (grpc-encoding / Content-Encoding).
    #[arg(short, long, value_enum, default_value_t = CompressionArg::None, help_heading = "Target")]
    pub compression: CompressionArg,

    /// Compression level (default: gzip 1, zstd 1; zstd also takes negative levels,
    /// which are faster still).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Target"
    )]
    pub compression_level: Option<i32>,

    /// Extra request header, repeatable: -H 'authorization: Bearer x'.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header, help_heading = "Target")]
    pub headers: Vec<(String, String)>,

    /// Per-request timeout; a request without a response by then counts as failed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, help_heading = "Target")]
    pub timeout: Duration,

    /// TLS: accept any server certificate (test setups only).
    #[arg(long, help_heading = "Target")]
    pub insecure_skip_verify: bool,

    /// TLS: trust the CA certificates in this PEM file instead of the built-in roots.
    #[arg(long, value_name = "PEM", help_heading = "Target")]
    pub ca_file: Option<PathBuf>,

    /// TLS: the name to check the server certificate against (default: the URL host).
    #[arg(long, value_name = "NAME", help_heading = "Target")]
    pub tls_server_name: Option<String>,

    /// TLS: present this client certificate chain (PEM) for mTLS; needs --client-key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "client_key",
        help_heading = "Target"
    )]
    pub client_cert: Option<PathBuf>,

    /// TLS: the private key (PEM) of --client-cert.
    #[arg(
        long,
        value_name = "PEM",
        requires = "client_cert",
        help_heading = "Target"
    )]
    pub client_key: Option<PathBuf>,

    /// Send `authorization: Bearer TOKEN` with every request (the same as
    /// -H 'authorization: Bearer TOKEN').
    #[arg(long, value_name = "TOKEN", help_heading = "Target")]
    pub bearer_token: Option<String>,

    // ---- load ----
    /// Signal to send.
    #[arg(short, long, value_enum, default_value_t = SignalArg::Traces, help_heading = "Load")]
    pub signal: SignalArg,

    /// Open loop: send at this rate (per second, in --rate-unit), split over the
    /// workers. Without --rate the run is closed loop (see --concurrency).
    #[arg(short, long, value_name = "N", help_heading = "Load")]
    pub rate: Option<f64>,

    /// Unit of --rate: requests, or items (spans, metric points or log records;
    /// "spans" is accepted as a synonym of items).
    #[arg(long, value_name = "UNIT", value_enum, default_value_t = RateUnit::Items, help_heading = "Load")]
    pub rate_unit: RateUnit,

    /// Closed loop: requests kept in flight per connection (HTTP/1.1: 1).
    #[arg(long, value_name = "N", conflicts_with = "rate", help_heading = "Load")]
    pub concurrency: Option<usize>,

    /// Open loop: most requests in flight per HTTP/2 connection; further due
    /// requests wait (and their wait counts in their latency).
    #[arg(long, value_name = "N", default_value_t = 256, help_heading = "Load")]
    pub max_in_flight: usize,

    /// How long to send (default 10s unless --count is given).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Load")]
    pub duration: Option<Duration>,

    /// Stop after this many requests in total.
    #[arg(short = 'n', long, value_name = "N", help_heading = "Load")]
    pub count: Option<u64>,

    /// Worker threads, each with its own runtime, connections and share of the rate.
    #[arg(
        short,
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Load"
    )]
    pub workers: usize,

    /// Pin workers to these CPUs, round robin: "1", "0,1", "2-5".
    #[arg(long, value_name = "LIST", value_parser = parse_cpus, help_heading = "Load")]
    pub cpus: Option<CpuList>,

    /// Connections in total, spread over the workers (default: one per worker).
    #[arg(long, value_name = "N", help_heading = "Load")]
    pub connections: Option<usize>,

    /// Close a connection once it carried N requests and open a new one in its place (1: a
    /// new connection, and TLS handshake, per request: measures the connection rate a target
    /// sustains). Default: connections live as long as the run.
    #[arg(long, value_name = "N", help_heading = "Load")]
    pub requests_per_connection: Option<u64>,

    /// Busy-wait for sub-millisecond send timing instead of sleeping (burns the
    /// worker's CPU; the default timer is accurate to about 1 ms, see "send lag").
    #[arg(long, help_heading = "Load")]
    pub spin: bool,

    // ---- shape ----
    /// Spans per trace: a number or an inclusive range like 5..15.
    #[arg(long, value_name = "N|LOW..HIGH", default_value = "5..15", value_parser = parse_range, help_heading = "Traces")]
    pub spans_per_trace: (u32, u32),

    /// Spans per request.
    #[arg(long, value_name = "N", default_value_t = 100, help_heading = "Traces")]
    pub spans_per_request: u32,

    /// Descriptive attributes per span, point or record (HTTP semantic conventions
    /// first, then attr.N), besides user.id and loadgen.seq.
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = "Traces")]
    pub attributes: u32,

    /// Length in bytes of generated string attribute values.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 16,
        help_heading = "Traces"
    )]
    pub attribute_size: u32,

    /// Share of spans with status ERROR (logs: share of ERROR records).
    #[arg(
        long,
        value_name = "RATIO",
        default_value_t = 0.03,
        help_heading = "Traces"
    )]
    pub error_ratio: f64,

    /// Median span duration of the log-normal latency distribution.
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = parse_duration, help_heading = "Traces")]
    pub latency_median: Duration,

    /// 99th percentile span duration of the log-normal distribution.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration, help_heading = "Traces")]
    pub latency_p99: Duration,

    /// Every span takes exactly this long (replaces the log-normal distribution; child
    /// spans are still nested inside their parents).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Traces")]
    pub latency_fixed: Option<Duration>,

    /// Share of traces whose spans all carry user.id = "vip" (others: "user-N").
    #[arg(
        long,
        value_name = "RATIO",
        default_value_t = 0.01,
        help_heading = "Traces"
    )]
    pub vip_share: f64,

    /// Spread each trace over PIECES consecutive requests on different connections
    /// (3 when given without a value), each request mixing pieces of many traces, as
    /// services send them.
    #[arg(long, value_name = "PIECES", num_args = 0..=1, default_missing_value = "3", help_heading = "Traces")]
    pub split_traces: Option<u32>,

    /// Metric data points per request (--signal metrics).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        help_heading = "Metrics and logs"
    )]
    pub points_per_request: u32,

    /// Log records per request (--signal logs).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        help_heading = "Metrics and logs"
    )]
    pub records_per_request: u32,

    /// Pre-built variations (template groups) requests are copied from.
    #[arg(
        long,
        value_name = "K",
        default_value_t = 64,
        help_heading = "Generation"
    )]
    pub templates: u32,

    /// Seed for the templates (same seed, same shapes).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Generation"
    )]
    pub seed: u64,

    /// Run id in the first two bytes of every span id (default: random, non-zero).
    #[arg(long, value_name = "ID", value_parser = parse_run_id, help_heading = "Generation")]
    pub run_id: Option<u16>,

    /// Only generate (no network) for --duration or --count, then print the rate per
    /// worker. Ignores --rate.
    #[arg(long, help_heading = "Generation")]
    pub dry_run: bool,

    // ---- reporting ----
    /// Write the latency distribution in HdrHistogram .hgrm format (values in ms).
    #[arg(long, value_name = "FILE", help_heading = "Reporting")]
    pub hgrm: Option<PathBuf>,

    /// Write the results as JSON.
    #[arg(long, value_name = "FILE", help_heading = "Reporting")]
    pub json: Option<PathBuf>,

    /// No progress line.
    #[arg(short, long, help_heading = "Reporting")]
    pub quiet: bool,

    // ---- verify ----
    /// After the run, read the collector's output back and check that every
    /// acknowledged span arrived exactly once, in whole traces. Traces only.
    #[arg(long, requires = "verify_file", help_heading = "Verify")]
    pub verify: bool,

    /// File exporter output to read: OTLP/JSON lines, one ExportTraceServiceRequest per
    /// line; a glob such as './shardtel-data/traces*.jsonl*' (quote it) covers one file
    /// per core and rotated backups (.gz / .zst backups are decompressed).
    #[arg(long, value_name = "GLOB", help_heading = "Verify")]
    pub verify_file: Option<String>,

    /// Longest wait for acknowledged spans to arrive after the run.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, help_heading = "Verify")]
    pub verify_wait: Duration,

    /// Stop waiting once nothing is missing and the output has not grown for this long.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, help_heading = "Verify")]
    pub verify_settle: Duration,

    /// The target tail-samples: a trace with no arrived span was not kept (not loss);
    /// only kept traces must be complete.
    #[arg(long, requires = "verify", help_heading = "Verify")]
    pub sampled: bool,
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// OTLP/gRPC (HTTP/2).
    Grpc,
    /// OTLP/HTTP, protobuf bodies.
    #[value(alias = "http")]
    HttpProtobuf,
    /// OTLP/HTTP, JSON bodies (about twice the bytes of protobuf).
    HttpJson,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Grpc => Protocol::Grpc,
            ProtocolArg::HttpProtobuf => Protocol::HttpProtobuf,
            ProtocolArg::HttpJson => Protocol::HttpJson,
        }
    }
}

/// `--signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalArg {
    /// Spans.
    Traces,
    /// Gauges, sums and histograms.
    Metrics,
    /// Log records.
    Logs,
}

impl From<SignalArg> for Signal {
    fn from(s: SignalArg) -> Self {
        match s {
            SignalArg::Traces => Signal::Traces,
            SignalArg::Metrics => Signal::Metrics,
            SignalArg::Logs => Signal::Logs,
        }
    }
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `--rate-unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateUnit {
    /// Requests per second.
    Requests,
    /// Items (spans, points, records) per second.
    #[value(alias = "spans", alias = "points", alias = "records")]
    Items,
}

/// CPU ids for `--cpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 30s, 500ms, 2m)"))
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{v:?} is not a number (use N or LOW..HIGH)"))
    };
    let (lo, hi) = if let Some((a, b)) = s.split_once("..=") {
        (parse(a)?, parse(b)?)
    } else if let Some((a, b)) = s.split_once("..") {
        (parse(a)?, parse(b)?)
    } else if let Some((a, b)) = s.split_once('-') {
        (parse(a)?, parse(b)?)
    } else {
        let v = parse(s)?;
        (v, v)
    };
    if lo == 0 || lo > hi {
        return Err(format!("range {s:?} must satisfy 1 <= low <= high"));
    }
    Ok((lo, hi))
}

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("{v:?} is not a cpu id (use 1, 0,1 or 2-5)"))
        };
        if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("cpu range {part:?} is backwards"));
            }
            out.extend(a..=b);
        } else {
            out.push(num(part)?);
        }
    }
    if out.is_empty() {
        return Err("empty cpu list".into());
    }
    Ok(CpuList(out))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let Some((k, v)) = s.split_once(':').or_else(|| s.split_once('=')) else {
        return Err(format!("header {s:?} must look like 'name: value'"));
    };
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("header {s:?} has no name"));
    }
    Ok((k.to_ascii_lowercase(), v.trim().to_string()))
}

fn parse_run_id(s: &str) -> Result<u16, String> {
    let v = if let Some(hex) = s.strip_prefix("0x") {
        u16::from_str_radix(hex, 16)
    } else {
        s.parse::<u16>()
    }
    .map_err(|_| format!("{s:?} is not a 16-bit number"))?;
    if v == 0 {
        return Err("run id must not be 0".into());
    }
    Ok(v)
}

impl Args {
    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.workers == 0 || self.workers > 255 {
            bail!("--workers must be between 1 and 255");
        }
        if let Some(c) = self.connections {
            if c < self.workers {
                bail!(
                    "--connections ({c}) must be at least --workers ({})",
                    self.workers
                );
            }
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate must be a positive number");
            }
        }
        if self.concurrency == Some(0) || self.max_in_flight == 0 {
            bail!("--concurrency and --max-in-flight must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.error_ratio) || !(0.0..=1.0).contains(&self.vip_share) {
            bail!("--error-ratio and --vip-share must be between 0 and 1");
        }
        if self.count == Some(0) {
            bail!("--count must be at least 1");
        }
        if self.requests_per_connection == Some(0) {
            bail!("--requests-per-connection must be at least 1");
        }
        if self.latency_p99 < self.latency_median {
            bail!("--latency-p99 must not be below --latency-median");
        }
        if self.templates == 0 || self.templates > u32::from(u16::MAX) {
            bail!("--templates must be between 1 and 65535");
        }
        if self.verify && self.signal != SignalArg::Traces {
            bail!("--verify checks spans: use it with --signal traces");
        }
        if self.verify && self.dry_run {
            bail!("--verify needs a real run, not --dry-run");
        }
        if self.split_traces.is_some() && self.signal != SignalArg::Traces {
            bail!("--split-traces applies to --signal traces");
        }
        if let Some(p) = self.split_traces {
            if p == 0 || p > self.spans_per_request {
                bail!("--split-traces PIECES must be between 1 and --spans-per-request");
            }
        }
        if self.items_per_request() == 0 {
            bail!("items per request must be at least 1");
        }
        if self.bearer_token.is_some() && self.headers.iter().any(|(k, _)| k == "authorization") {
            bail!("--bearer-token and -H 'authorization: ...' both set the authorization header");
        }
        if self.bearer_token.as_deref().is_some_and(str::is_empty) {
            bail!("--bearer-token must not be empty");
        }
        Ok(())
    }

    /// The extra request headers: -H ones, and `authorization` from --bearer-token.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        if let Some(token) = &self.bearer_token {
            headers.push(("authorization".into(), format!("Bearer {token}")));
        }
        headers
    }

    /// Items per request for the chosen signal.
    pub fn items_per_request(&self) -> u32 {
        match self.signal {
            SignalArg::Traces => self.spans_per_request,
            SignalArg::Metrics => self.points_per_request,
            SignalArg::Logs => self.records_per_request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_range("5..15"), Ok((5, 15)));
        assert_eq!(parse_range("5..=15"), Ok((5, 15)));
        assert_eq!(parse_range("10"), Ok((10, 10)));
        assert!(parse_range("0..3").is_err());
        assert!(parse_range("9..3").is_err());
        assert_eq!(parse_cpus("0,2-4"), Ok(CpuList(vec![0, 2, 3, 4])));
        assert!(parse_cpus("x").is_err());
        assert_eq!(
            parse_header("Authorization: Bearer t"),
            Ok(("authorization".into(), "Bearer t".into()))
        );
        assert_eq!(parse_run_id("0x00ff"), Ok(255));
        assert!(parse_run_id("0").is_err());
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
    }

    #[test]
    fn flags_combine() {
        let a = Args::try_parse_from([
            "x",
            "--rate",
            "1000",
            "--split-traces",
            "--verify",
            "--verify-file",
            "/tmp/x*.jsonl",
        ])
        .unwrap();
        assert_eq!(a.split_traces, Some(3));
        a.validate().unwrap();
        let a = Args::try_parse_from(["x", "--split-traces", "4"]).unwrap();
        assert_eq!(a.split_traces, Some(4));
        assert!(Args::try_parse_from(["x", "--rate", "1", "--concurrency", "2"]).is_err());
        assert!(Args::try_parse_from(["x", "--verify"]).is_err());
        let a = Args::try_parse_from(["x", "--signal", "metrics", "--split-traces"]).unwrap();
        assert!(a.validate().is_err());
        let a = Args::try_parse_from(["x", "--rate-unit", "spans"]).unwrap();
        assert_eq!(a.rate_unit, RateUnit::Items);
    }

    #[test]
    fn client_certificate_and_token_flags() {
        assert!(Args::try_parse_from(["x", "--client-cert", "c.pem"]).is_err());
        assert!(Args::try_parse_from(["x", "--client-key", "c.key"]).is_err());
        let a = Args::try_parse_from([
            "x",
            "--client-cert",
            "c.pem",
            "--client-key",
            "c.key",
            "--bearer-token",
            "s3cret",
            "-H",
            "x-scope-orgid: t1",
        ])
        .unwrap();
        a.validate().unwrap();
        assert_eq!(
            a.request_headers(),
            [
                ("x-scope-orgid".to_string(), "t1".to_string()),
                ("authorization".to_string(), "Bearer s3cret".to_string())
            ]
        );
        let a = Args::try_parse_from(["x", "--bearer-token", "a", "-H", "Authorization: Bearer b"])
            .unwrap();
        assert!(a.validate().is_err());
    }
}
