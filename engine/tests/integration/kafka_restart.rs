//! Restarts mid-stream, with real OTLP/HTTP clients recording every span acknowledged to them,
//! read back from the topic with an rdkafka consumer and decoded with prost (duplicates are
//! counted and reported):
//!
//! - the broker: a gateway publishes to a durable Kafka-protocol broker (Tansu with its
//!   `sqlite://` storage, on a port of its own, not the shared :9092) that is killed (SIGKILL)
//!   and restarted while the clients keep sending. The producer's deliveries fail while the
//!   broker is down, the exporter retries them, and afterwards every acknowledged span is in
//!   the topic.
//! - the gateway: `kill -9` of the gateway while acknowledged spans wait in its export queue
//!   and in librdkafka (a 300 ms linger keeps some there), then a restart on the same
//!   `data_dir` — with the Kafka exporter's default memory queue (its batches hold their
//!   ingest-log frames until the broker acknowledged them, so the ingest log replays them) and
//!   with a disk queue. Against the shared broker on :9092.
//!
//! The durable Tansu is a separate build (`cargo install tansu --features dynostore,libsql`,
//! which test.sh caches under `target/tansu-sqlite`); `SHARDTEL_TANSU_SQLITE` names another
//! binary. Without it the test fails, unless `SHARDTEL_KAFKA_OPTIONAL=1` (it skips loudly).

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;

use crate::gen::{request, span};
use crate::harness::{base_config, free_port, wait_until, Shardtel};
use crate::kafka::{
    broker_available, create_topic_on, kafka_optional, read_topic_on, span_ids, unique_topic,
    BROKER,
};

/// The durable Tansu binary, if it is built.
pub(crate) fn tansu_sqlite() -> Option<PathBuf> {
    let bin = std::env::var_os("SHARDTEL_TANSU_SQLITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tansu-sqlite/bin/tansu")
        });
    bin.is_file().then_some(bin)
}

/// A Tansu broker on `127.0.0.1:port` keeping its data in `dir/tansu.db`.
pub(crate) struct DurableBroker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// More `tansu broker` arguments (authentication, TLS), from the next spawn on.
    pub(crate) args: Vec<String>,
}

impl DurableBroker {
    pub(crate) fn start(bin: PathBuf, dir: &Path, port: u16) -> Self {
        let mut broker = DurableBroker {
            bin,
            dir: dir.to_path_buf(),
            port,
            child: None,
            args: Vec::new(),
        };
        broker.spawn();
        broker
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    /// Runs `tansu ARGS` (e.g. `user create`) against this broker's binary; panics on failure.
    pub(crate) fn tansu(&self, args: &[&str]) {
        let out = Command::new(&self.bin)
            .current_dir(&self.dir)
            .args(args)
            .output()
            .expect("failed to run tansu");
        assert!(
            out.status.success(),
            "tansu {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the broker on the same storage and waits until it accepts connections.
    pub(crate) fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let url = format!("tcp://{}", self.address());
        let child = Command::new(&self.bin)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // Relative to the working directory: `dir/tansu.db`.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("failed to start tansu");
        self.child = Some(child);
        let address = self.address().parse().unwrap();
        assert!(
            wait_until(60, || TcpStream::connect_timeout(
                &address,
                Duration::from_millis(200)
            )
            .is_ok()),
            "tansu did not listen on {} within 60 s; log:\n{}",
            self.address(),
            self.log()
        );
    }

    /// SIGKILL: the broker stops at once, as in a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the client saw.
#[derive(Default)]
struct ClientRecord {
    acknowledged: BTreeSet<(Vec<u8>, Vec<u8>)>,
    refused: u64,
}

#[test]
fn broker_restart_mid_stream_loses_nothing_acknowledged() {
    let Some(bin) = tansu_sqlite() else {
        if kafka_optional() {
            eprintln!(
                "\n!!!!!!!! SKIPPED broker_restart_mid_stream_loses_nothing_acknowledged: no durable tansu at target/tansu-sqlite/bin/tansu (SHARDTEL_KAFKA_OPTIONAL=1) !!!!!!!!\n"
            );
            return;
        }
        panic!(
            "no durable tansu: run ./test.sh (it builds one into target/tansu-sqlite), set SHARDTEL_TANSU_SQLITE, or SHARDTEL_KAFKA_OPTIONAL=1 to skip"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = DurableBroker::start(bin, dir.path(), free_port());
    let partitions = 4;
    let topic = unique_topic("restart-spans");
    create_topic_on(&broker.address(), &topic, partitions);

    // Deliveries time out after 2 s (the outage below lasts longer), and the exporter retries
    // them every 100 ms..1 s for as long as it takes. Idempotence is off: Tansu 0.6's sqlite
    // storage panics on an idempotent producer's first produce after a restart
    // (`idempotent_message_check`: "more or less than one row") and then refuses every
    // produce, so the producer's own retries may add duplicates here (counted below).
    let gateway = {
        let (topic, address) = (topic.clone(), broker.address());
        Shardtel::start(move |dir, ports| {
            base_config(dir, ports, "")
                + &format!(
                    r#"
[exporters.kafka]
brokers = ["{address}"]
traces_topic = "{topic}"
timeout = "2s"
enable_idempotence = false
batch = {{ timeout = "50ms" }}
retry = {{ initial_interval = "100ms", max_interval = "1s", max_elapsed_time = "0s" }}
queue = {{ max_bytes = "16MiB" }}

[pipelines.traces]
receivers = ["otlp"]
exporters = ["kafka"]
"#
                )
        })
    };

    // Two clients send requests of 5 new traces of 4 spans over OTLP/HTTP for 14 s;
    // the broker is killed at 4 s and restarted at 9 s.
    let clients = Clients::start(&gateway, 60);
    let started = Instant::now();
    let until = |secs: u64| {
        let at = started + Duration::from_secs(secs);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    };
    until(4);
    let acked_before = clients.acknowledged();
    broker.kill();
    until(9);
    broker.spawn();
    until(14);
    let (record, sent_requests) = clients.finish();
    let acked = &record.acknowledged;
    assert!(acked_before > 0, "nothing acknowledged before the restart");
    assert!(
        acked.len() > acked_before,
        "nothing acknowledged after the restart"
    );

    // Everything accepted leaves the gateway once the broker is back.
    let accepted = || gateway.metric_sum("shardtel_receiver_accepted_spans_total", "");
    let exported =
        || gateway.metric_sum("shardtel_exporter_sent_spans_total", "exporter=\"kafka\"");
    assert!(
        wait_until(180, || accepted() > 0 && exported() >= accepted()),
        "gateway exported {} of {} accepted spans; gateway log:\n{}\nbroker log:\n{}",
        exported(),
        accepted(),
        gateway.log(),
        broker.log()
    );
    let retries = gateway.metric_sum("shardtel_exporter_retries_total", "");
    let failed_messages = gateway.metric_sum("shardtel_exporter_kafka_failed_messages_total", "");
    assert!(
        retries > 0 && failed_messages > 0,
        "the outage did not reach the exporter (retries {retries}, failed messages {failed_messages}); metrics:\n{}",
        gateway.metrics()
    );

    // Read it all back from the restarted broker.
    let (lost, duplicates, unacknowledged) =
        read_back(&broker.address(), &topic, partitions, acked);
    eprintln!(
        "kafka broker restart: {} requests sent, {} refused; {} spans acknowledged, {lost} lost, {duplicates} duplicates, {unacknowledged} unacknowledged spans published; exporter retries {retries}, failed deliveries {failed_messages}",
        sent_requests,
        record.refused,
        acked.len()
    );
    assert_eq!(
        lost,
        0,
        "{lost} acknowledged spans are not in the topic; gateway log:\n{}\nbroker log:\n{}",
        gateway.log(),
        broker.log()
    );
}

/// OTLP/HTTP clients recording what was acknowledged to them.
struct Clients {
    record: Arc<Mutex<ClientRecord>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    /// Two clients, each sending a request of 5 new traces of 4 spans every 10 ms (trace ids
    /// built from `seed`), until [`Clients::finish`]. A refused or failed request (the gateway
    /// or the broker down) is counted and the client goes on.
    fn start(gateway: &Shardtel, seed: u8) -> Self {
        let record = Arc::new(Mutex::new(ClientRecord::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let url = format!("{}/v1/traces", gateway.http_url());
        let threads = (0..2u8)
            .map(|c| {
                let (record, stop, sent, url) =
                    (record.clone(), stop.clone(), sent.clone(), url.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let req = request(
                            (0..20)
                                .map(|i| span(seed + c, n * 5 + i % 5, n * 4 + i / 5))
                                .collect(),
                        );
                        n += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let ok = client
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .body(req.encode_to_vec())
                            .send()
                            .is_ok_and(|r| r.status().is_success());
                        let mut r = record.lock().unwrap();
                        if ok {
                            r.acknowledged.extend(span_ids([&req]));
                        } else {
                            r.refused += 1;
                        }
                        drop(r);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Clients {
            record,
            stop,
            sent,
            threads,
        }
    }

    /// Spans acknowledged so far.
    fn acknowledged(&self) -> usize {
        self.record.lock().unwrap().acknowledged.len()
    }

    /// The spans acknowledged so far.
    fn snapshot(&self) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
        self.record.lock().unwrap().acknowledged.clone()
    }

    /// Stops the clients; returns what they saw and the requests they sent.
    fn finish(self) -> (ClientRecord, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let record = std::mem::take(&mut *self.record.lock().unwrap());
        (record, self.sent.load(Ordering::Relaxed))
    }
}

/// Reads `topic` back (decoding each message once) until every span of `acked` is seen or
/// 120 s pass; returns (acknowledged spans not found, duplicates, spans found that were never
/// acknowledged).
fn read_back(
    broker: &str,
    topic: &str,
    partitions: i32,
    acked: &BTreeSet<(Vec<u8>, Vec<u8>)>,
) -> (usize, usize, usize) {
    let mut seen: BTreeMap<(Vec<u8>, Vec<u8>), usize> = BTreeMap::new();
    let mut decoded = 0;
    let mut missing = acked.len();
    let mut done = |ms: &[crate::kafka::Consumed]| {
        for m in &ms[decoded..] {
            let req = ExportTraceServiceRequest::decode(m.payload.as_slice())
                .expect("every message value is an ExportTraceServiceRequest");
            for id in span_ids([&req]) {
                let known = acked.contains(&id);
                let n = seen.entry(id).or_default();
                if *n == 0 && known {
                    missing -= 1;
                }
                *n += 1;
            }
        }
        decoded = ms.len();
        missing == 0
    };
    let messages = read_topic_on(broker, topic, partitions, 120, &mut done);
    done(&messages);
    let lost = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let unacknowledged = seen.keys().filter(|id| !acked.contains(*id)).count();
    (lost, duplicates, unacknowledged)
}

#[test]
fn gateway_kill_9_with_the_default_memory_queue_loses_nothing_acknowledged() {
    gateway_kill_9("memory queue (default)", "", 70);
}

#[test]
fn gateway_kill_9_with_a_disk_queue_loses_nothing_acknowledged() {
    gateway_kill_9("disk queue", "queue = { storage = \"disk\" }", 80);
}

/// `kill -9` of a gateway (durability on, the default) mid-stream, restart on the same
/// `data_dir`: every span acknowledged to the clients is in the topic afterwards.
fn gateway_kill_9(what: &str, queue: &str, seed: u8) {
    if !broker_available("gateway_kill_9") {
        return;
    }
    let partitions = 4;
    let topic = unique_topic("gateway-kill9");
    create_topic_on(BROKER, &topic, partitions);
    // A 300 ms linger and 200 ms batches keep acknowledged spans in the export queue and in
    // librdkafka at any moment.
    let mut gateway = {
        let topic = topic.clone();
        let queue = queue.to_string();
        Shardtel::start(move |dir, ports| {
            base_config(dir, ports, "")
                + &format!(
                    r#"
[exporters.kafka]
brokers = ["{BROKER}"]
traces_topic = "{topic}"
linger = "300ms"
batch = {{ timeout = "200ms" }}
{queue}

[pipelines.traces]
receivers = ["otlp"]
exporters = ["kafka"]
"#
                )
        })
    };
    let clients = Clients::start(&gateway, seed);
    std::thread::sleep(Duration::from_secs(3));
    let before_kill = clients.snapshot();
    let acked_before = before_kill.len();
    let exported_before =
        gateway.metric_sum("shardtel_exporter_sent_spans_total", "exporter=\"kafka\"");
    gateway.kill();
    std::thread::sleep(Duration::from_millis(500));
    gateway.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let (record, sent_requests) = clients.finish();
    let acked = &record.acknowledged;
    assert!(
        acked_before > 0 && acked.len() > acked_before,
        "acknowledged {acked_before} spans before the kill and {} in all",
        acked.len()
    );
    let (lost, duplicates, unacknowledged) = read_back(BROKER, &topic, partitions, acked);
    let log = gateway.log();
    eprintln!(
        "gateway kill -9 ({what}): {sent_requests} requests sent, {} refused; {} spans acknowledged ({acked_before} before the kill, {exported_before} exported by then), {lost} lost, {duplicates} duplicates, {unacknowledged} unacknowledged spans published",
        record.refused,
        acked.len()
    );
    if lost > 0 {
        // Tell a lost span from a slow or lossy read: a second reader, and what the gateway
        // says it produced; and whether the missing spans were acknowledged before the kill.
        let (again, _, _) = read_back(BROKER, &topic, partitions, acked);
        let (missing_before, _, _) = read_back(BROKER, &topic, partitions, &before_kill);
        let metrics = gateway.metrics();
        let kafka: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("kafka") || l.contains("queue_size") || l.contains("sent_spans"))
            })
            .collect();
        panic!(
            "{lost} acknowledged spans are not in the topic ({what}; a second read misses {again}, {missing_before} of them acknowledged before the kill); gateway metrics:\n{}\ngateway log:\n{log}",
            kafka.join("\n")
        );
    }
    // Acknowledged requests were still unreleased in the ingest log at the kill (waiting in
    // the queue or in librdkafka), so the test exercised the replay.
    assert!(
        log.contains("replaying"),
        "no replay after kill -9 ({what}):\n{log}"
    );
    assert_eq!(gateway.stop(), 0, "gateway log:\n{}", gateway.log());
}
