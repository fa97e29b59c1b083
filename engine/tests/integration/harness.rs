//! Starting and stopping real `shardtel` processes, sending them OTLP/HTTP requests, and
//! reading what their file exporters wrote and what their metrics say.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::trace::v1::Span;
use shardtel_protocol::Signal;

use crate::gen::{flatten, Flat};
use crate::test_config::TestConfig;

/// A port that was free a moment ago.
///
/// No port is given twice in one test process: shardtel binds with SO_REUSEPORT, so a port
/// handed to two tests (one of them with its server stopped for a while) would let two
/// processes share it and split each other's traffic.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The ports one shardtel process listens on.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub grpc: u16,
    pub http: u16,
    pub health: u16,
    pub metrics: u16,
}

impl Ports {
    pub fn new() -> Self {
        Self {
            grpc: free_port(),
            http: free_port(),
            health: free_port(),
            metrics: free_port(),
        }
    }
}

/// A running shardtel process with its own data directory.
pub struct Shardtel {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub config_path: PathBuf,
    /// The configuration it was started with, when it came from [`Shardtel::start_config`].
    config: Option<TestConfig>,
}

/// The common head of a test config as text: engine, telemetry, receivers.
///
/// Kept for the Kafka tests, which patch it with `replacen` (checked by
/// `test_config::base_config_still_holds_what_the_kafka_tests_patch`); new tests use
/// [`Shardtel::start_config`].
pub fn base_config(dir: &Path, ports: Ports, extra_receiver: &str) -> String {
    format!(
        r#"
[engine]
cores = "all"
data_dir = "{dir}"
shutdown_timeout = "10s"

[telemetry]
health = "127.0.0.1:{health}"
metrics = "127.0.0.1:{metrics}"

[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
{extra_receiver}
"#,
        dir = dir.display(),
        health = ports.health,
        metrics = ports.metrics,
        grpc = ports.grpc,
        http = ports.http,
    )
}

impl Shardtel {
    /// Posts `body` (an encoded `Export*ServiceRequest` of `signal`) as OTLP/HTTP protobuf
    /// with `client` (a keep-alive connection of its pool, or a new one); the response.
    pub fn post(
        &self,
        client: &reqwest::blocking::Client,
        signal: Signal,
        body: Vec<u8>,
    ) -> reqwest::Result<reqwest::blocking::Response> {
        client
            .post(format!("{}/v1/{signal}", self.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
    }

    /// Posts `body` as OTLP/HTTP protobuf of `signal` on a new connection (the kernel spreads
    /// new connections over the cores); it must be accepted (200).
    pub fn post_accepted(&self, signal: Signal, body: Vec<u8>) {
        let resp = self
            .post(&reqwest::blocking::Client::new(), signal, body)
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    }

    /// Posts `req` as OTLP/HTTP protobuf on a new connection; it must be accepted (200).
    pub fn post_traces(&self, req: &ExportTraceServiceRequest) {
        self.post_accepted(Signal::Traces, req.encode_to_vec());
    }

    /// Starts shardtel on the configuration `build` makes of [`TestConfig::new`] (this
    /// process's data dir and ports); waits for health 200.
    pub fn start_config(build: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        let mut config = None;
        let mut st = Self::start(|dir, ports| {
            let built = build(TestConfig::new(dir, ports));
            let text = built.render();
            config = Some(built);
            text
        });
        st.config = config;
        st
    }

    /// Rewrites the config file with `change` made to the configuration it was started with;
    /// the next [`Shardtel::spawn`] reads it.
    ///
    /// # Panics
    ///
    /// If it was not started by [`Shardtel::start_config`].
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut TestConfig)) {
        let config = self
            .config
            .as_mut()
            .expect("reconfigure needs a Shardtel started by start_config");
        change(config);
        std::fs::write(&self.config_path, config.render()).unwrap();
    }

    /// Like [`Shardtel::start_config`], letting `adjust` change the command first (env).
    pub fn start_config_with(
        build: impl FnOnce(TestConfig) -> TestConfig,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports::new();
        let config = build(TestConfig::new(dir.path(), ports));
        let config_path = dir.path().join("shardtel.toml");
        std::fs::write(&config_path, config.render()).unwrap();
        let mut s = Shardtel {
            child: None,
            dir,
            ports,
            config_path,
            config: Some(config),
        };
        s.spawn_with(adjust);
        s
    }

    /// Starts shardtel on a config built by `make(dir, ports)`; waits for health 200.
    pub fn start(make: impl FnOnce(&Path, Ports) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports::new();
        let config = make(dir.path(), ports);
        let config_path = dir.path().join("shardtel.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut s = Shardtel {
            child: None,
            dir,
            ports,
            config_path,
            config: None,
        };
        s.spawn();
        s
    }

    /// (Re)starts the process on the same config.
    pub fn spawn(&mut self) {
        self.spawn_with(|_| {});
    }

    /// Like [`Shardtel::spawn`], letting `adjust` change the command first (limits, env).
    pub fn spawn_with(&mut self, adjust: impl FnOnce(&mut Command)) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("shardtel.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardtel"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(log);
        adjust(&mut command);
        let child = command.spawn().expect("failed to start shardtel");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("shardtel exited at start ({status}); log:\n{}", self.log());
            }
            if http_get(self.ports.health, "/").is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shardtel not healthy within 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shardtel.log")).unwrap_or_default()
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Prometheus text from the metrics endpoint.
    pub fn metrics(&self) -> String {
        http_get(self.ports.metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Sum of a metric over all its series, filtered by a label substring.
    pub fn metric_sum(&self, name: &str, label_filter: &str) -> u64 {
        metric_sum_in(&self.metrics(), name, label_filter)
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.stop_timed().0
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code and the time from the
    /// signal to the exit. Panics if the process still runs 30 s after the signal.
    pub fn stop_timed(&mut self) -> (i32, Duration) {
        let Some(mut child) = self.child.take() else {
            return (0, Duration::ZERO);
        };
        let signalled = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = signalled + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), signalled.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "shardtel did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Shardtel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A connection to 127.0.0.1:`port` with a 20 s read timeout.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// Sends `body` as one OTLP/HTTP protobuf trace request on `s` (HTTP/1.1, keep-alive) and
/// reads the response; returns its head (status line and headers), having read its body.
pub fn http_post(s: &mut TcpStream, body: &[u8]) -> std::io::Result<String> {
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).map_err(std::io::Error::other)?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest)?;
    Ok(head)
}

/// Every complete line of every file whose name starts with `stem` in `dir`, with the
/// core index parsed from `<stem>.core<N>.jsonl*`. A last line without its newline is being
/// written (tests read while the exporter writes): it is left for the next read.
pub fn read_lines(dir: &Path, stem: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(stem))
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let core = name
            .split(".core")
            .nth(1)
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        let bytes = std::fs::read(&f).unwrap();
        out.extend(complete_lines(&bytes).into_iter().map(|line| (core, line)));
    }
    out
}

/// The non-empty lines of a file being written, leaving out a last line without its newline
/// (still being written: the next read gets it).
pub fn complete_lines(bytes: &[u8]) -> Vec<String> {
    let complete = &bytes[..bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
    String::from_utf8_lossy(complete)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Decoded trace requests from the file exporter output, with their core.
pub fn read_traces(dir: &Path) -> Vec<(usize, ExportTraceServiceRequest)> {
    read_lines(dir, "traces")
        .into_iter()
        .map(|(core, line)| {
            let pb = shardtel_protocol::json::to_protobuf(Signal::Traces, line.as_bytes())
                .unwrap_or_else(|e| panic!("file exporter wrote invalid OTLP JSON: {e}: {line}"));
            (
                core,
                ExportTraceServiceRequest::decode(pb.as_ref()).unwrap(),
            )
        })
        .collect()
}

/// The spans in the file exporter output under `dir`.
pub fn spans_in(dir: &Path) -> Vec<Span> {
    read_traces(dir)
        .into_iter()
        .flat_map(|(_, r)| r.resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

/// The spans in the file exporter output under `dir` with their resource and scope, sorted
/// (see [`flatten`]).
pub fn flat_spans_in(dir: &Path) -> Vec<Flat> {
    let requests: Vec<_> = read_traces(dir).into_iter().map(|(_, r)| r).collect();
    flatten(&requests)
}

/// The span ids in the file exporter output under `dir`.
pub fn span_ids_in(dir: &Path) -> std::collections::HashSet<Vec<u8>> {
    spans_in(dir).into_iter().map(|s| s.span_id).collect()
}

/// Sum of a metric over the series of Prometheus text `metrics` whose labels contain
/// `label_filter`.
pub fn metric_sum_in(metrics: &str, name: &str, label_filter: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label_filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/PID/status` field in KiB (`"VmRSS"`, `"VmHWM"`); 0 once the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A current-thread tokio runtime for the async clients (gRPC, the OTLP SDK).
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until `f` returns true, up to `secs`.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
