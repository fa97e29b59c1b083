//! Starting and stopping real `shardtel` processes, and reading what their
//! file exporters wrote.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::Signal;

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
}

/// The common head of a test config: engine, telemetry, receivers.
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

/// Exporters writing every signal to files under the data dir, plus pipelines.
pub fn file_pipelines(dir: &Path) -> String {
    format!(
        r#"
[exporters.file_traces]
type = "file"
path = "{dir}/out/traces.jsonl"
[exporters.file_traces.batch]
timeout = "50ms"
[exporters.file_metrics]
type = "file"
path = "{dir}/out/metrics.jsonl"
[exporters.file_metrics.batch]
timeout = "50ms"
[exporters.file_logs]
type = "file"
path = "{dir}/out/logs.jsonl"
[exporters.file_logs.batch]
timeout = "50ms"

[pipelines.traces]
receivers = ["otlp"]
exporters = ["file_traces"]
[pipelines.metrics]
receivers = ["otlp"]
exporters = ["file_metrics"]
[pipelines.logs]
receivers = ["otlp"]
exporters = ["file_logs"]
"#,
        dir = dir.display()
    )
}

impl Shardtel {
    /// Posts `req` as OTLP/HTTP protobuf on a new connection; it must be accepted (200).
    pub fn post_traces(&self, req: &ExportTraceServiceRequest) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/traces", self.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
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
        self.metrics()
            .lines()
            .filter(|l| {
                l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label_filter)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "shardtel did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
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

/// Every line of every file whose name starts with `stem` in `dir`, with the
/// core index parsed from `<stem>.core<N>.jsonl*`.
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
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            if !line.trim().is_empty() {
                out.push((core, line.to_string()));
            }
        }
    }
    out
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
