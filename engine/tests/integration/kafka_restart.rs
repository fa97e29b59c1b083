//! Restarts mid-stream, with real OTLP/HTTP clients recording every span acknowledged to them,
//! read back from the topic with an rdkafka consumer and decoded with prost (duplicates are
//! counted and reported):
//!
//! - the broker: a gateway publishes to an Apache Kafka broker of the test's own (on ports of
//!   its own, not the shared :9092; `tests/peers/kafka/kafka.sh run`) that is killed (SIGKILL)
//!   and restarted on the same log directory while the clients keep sending. The producer's
//!   deliveries fail while the broker is down, the exporter retries them, and afterwards every
//!   acknowledged span is in the topic.
//! - the gateway: `kill -9` of the gateway while acknowledged spans wait in its export queue
//!   and in librdkafka (a 300 ms linger keeps some there), then a restart on the same
//!   `data_dir` — with the Kafka exporter's default memory queue (its batches hold their
//!   ingest-log frames until the broker acknowledged them, so the ingest log replays them) and
//!   with a disk queue. Against the shared broker.
//!
//! Before reading, each test waits until the gateway has nothing left to export and the
//! partitions' high watermarks stop moving; then it reads every partition up to its high
//! watermark and reports any gap in the offsets (with an idempotent producer and no
//! transactions, a partition's offsets are contiguous), so that a span missing from the topic
//! is told apart from a message the reader did not get.
//!
//! Without the shared broker these tests fail, unless `SHARDTEL_KAFKA_OPTIONAL=1` (they skip
//! loudly); the broker of the restart test uses the jars test.sh fetched for it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;

use crate::gen::{request, span};
use crate::harness::{base_config, free_port, wait_until, Shardtel};
use crate::kafka::{
    broker, broker_available, create_topic_on, java_partition, span_ids, unique_topic, Consumed,
};

/// An Apache Kafka broker of a test's own: `tests/peers/kafka/kafka.sh run`, PLAINTEXT on
/// 127.0.0.1:`port`, its log directory under `dir/kafka` (kept across restarts), its output
/// in `dir/kafka.log`.
pub(crate) struct OwnBroker {
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    pub(crate) fn start(dir: &Path) -> Self {
        let mut broker = OwnBroker {
            dir: dir.to_path_buf(),
            port: free_port(),
            controller_port: free_port(),
            child: None,
        };
        broker.spawn();
        broker
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default();
        // The end is what tells.
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }

    /// Starts the broker on its log directory (formatted the first time) and waits until it
    /// accepts connections.
    pub(crate) fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.log"))
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/kafka/kafka.sh");
        // The script execs java: the child is the JVM, and `kill` is a SIGKILL of the broker.
        let mut child = Command::new(script)
            .arg("run")
            .arg(self.dir.join("kafka"))
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("failed to run tests/peers/kafka/kafka.sh");
        let address = self.address().parse().unwrap();
        let up = wait_until(120, || {
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                || child.try_wait().unwrap().is_some()
        });
        let exited = child.try_wait().unwrap();
        assert!(
            up && exited.is_none(),
            "the broker did not listen on {} within 120 s ({exited:?}); log:\n{}",
            self.address(),
            self.log()
        );
        self.child = Some(child);
    }

    /// SIGKILL: the broker stops at once, as in a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
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
    if !broker_available("broker_restart_mid_stream_loses_nothing_acknowledged") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut broker = OwnBroker::start(dir.path());
    let partitions = 4;
    let topic = unique_topic("restart-spans");
    create_topic_on(&broker.address(), &topic, partitions);

    // Deliveries time out after 2 s (the outage below lasts longer), and the exporter retries
    // them every 100 ms..1 s for as long as it takes. The producer is idempotent (the
    // default): the broker keeps its producer state across the restart.
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
    assert!(
        drained(&gateway),
        "the gateway still holds data after 120 s; metrics:\n{}",
        gateway.metrics()
    );
    let contents = TopicContents::settled(&broker.address(), &topic, partitions);
    let (lost, duplicates, unacknowledged) = contents.tally(acked);
    eprintln!(
        "kafka broker restart: {} requests sent, {} refused; {} spans acknowledged, {lost} lost, {duplicates} duplicates, {unacknowledged} unacknowledged spans published; exporter retries {retries}, failed deliveries {failed_messages}; {} messages, offsets (partition, low, high) {:?}, gaps {:?}",
        sent_requests,
        record.refused,
        acked.len(),
        contents.messages.len(),
        contents.watermarks,
        contents.gaps
    );
    assert!(
        contents.gaps.is_empty(),
        "the reader missed offsets of the topic (partition, first, last): {:?}",
        contents.gaps
    );
    assert_eq!(
        lost,
        0,
        "{lost} acknowledged spans are not in the topic; {}\ngateway log:\n{}\nbroker log:\n{}",
        contents.diagnose(acked, partitions),
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

/// What a topic held once its producers were done.
struct TopicContents {
    messages: Vec<Consumed>,
    /// (partition, low watermark, high watermark) when the reading started.
    watermarks: Vec<(i32, i64, i64)>,
    /// Offsets below a partition's high watermark that the reader did not get:
    /// (partition, first, last), inclusive.
    gaps: Vec<(i32, i64, i64)>,
}

impl TopicContents {
    /// Waits until the high watermarks of `topic`'s partitions stay the same for 2 s (at most
    /// 120 s), then reads every partition from its low watermark up to its high watermark
    /// (at most 120 s more) and notes every gap in the offsets read.
    fn settled(broker: &str, topic: &str, partitions: i32) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("group.id", format!("reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        let watermarks = || -> Vec<(i32, i64, i64)> {
            (0..partitions)
                .map(|p| {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, p, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
                    (p, low, high)
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = watermarks();
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < Duration::from_secs(2) {
            assert!(
                Instant::now() < deadline,
                "the high watermarks of {topic} still move after 120 s: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
            let now = watermarks();
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
        }

        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut next: BTreeMap<i32, i64> = last.iter().map(|&(p, low, _)| (p, low)).collect();
        let mut gaps = Vec::new();
        let mut messages = Vec::new();
        let done = |next: &BTreeMap<i32, i64>| last.iter().all(|&(p, _, high)| next[&p] >= high);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(&next) && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (p, offset) = (m.partition(), m.offset());
                    let expected = next[&p];
                    if offset > expected {
                        gaps.push((p, expected, offset - 1));
                    }
                    if offset >= expected {
                        next.insert(p, offset + 1);
                    }
                    messages.push(Consumed {
                        partition: p,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(e)) => eprintln!("reader: {e}"),
                None => {}
            }
        }
        for &(p, _, high) in &last {
            if next[&p] < high {
                gaps.push((p, next[&p], high - 1));
            }
        }
        TopicContents {
            messages,
            watermarks: last,
            gaps,
        }
    }

    /// (acknowledged spans not found, duplicates, spans found that were never acknowledged).
    fn tally(&self, acked: &BTreeSet<(Vec<u8>, Vec<u8>)>) -> (usize, usize, usize) {
        let mut seen: BTreeMap<(Vec<u8>, Vec<u8>), usize> = BTreeMap::new();
        for m in &self.messages {
            let req = ExportTraceServiceRequest::decode(m.payload.as_slice())
                .expect("every message value is an ExportTraceServiceRequest");
            for id in span_ids([&req]) {
                *seen.entry(id).or_default() += 1;
            }
        }
        let lost = acked.iter().filter(|id| !seen.contains_key(*id)).count();
        let duplicates: usize = seen.values().map(|n| n - 1).sum();
        let unacknowledged = seen.keys().filter(|id| !acked.contains(*id)).count();
        (lost, duplicates, unacknowledged)
    }

    /// What to print when acknowledged spans are missing: the offsets read, the gaps, and for
    /// each partition the missing spans' traces belong to (by the partitioner), how many.
    fn diagnose(&self, acked: &BTreeSet<(Vec<u8>, Vec<u8>)>, partitions: i32) -> String {
        let found: BTreeSet<(Vec<u8>, Vec<u8>)> = self
            .messages
            .iter()
            .flat_map(|m| {
                span_ids([&ExportTraceServiceRequest::decode(m.payload.as_slice()).unwrap()])
            })
            .collect();
        let mut missing_by_partition: BTreeMap<i32, (BTreeSet<Vec<u8>>, usize)> = BTreeMap::new();
        for (trace, span) in acked {
            if !found.contains(&(trace.clone(), span.clone())) {
                let e = missing_by_partition
                    .entry(java_partition(trace, partitions))
                    .or_default();
                e.0.insert(trace.clone());
                e.1 += 1;
            }
        }
        let missing: Vec<String> = missing_by_partition
            .iter()
            .map(|(p, (traces, spans))| {
                format!("partition {p}: {spans} spans of {} traces", traces.len())
            })
            .collect();
        format!(
            "watermarks (partition, low, high) {:?}; {} messages read; offset gaps (partition, first, last) {:?}; missing: {}",
            self.watermarks,
            self.messages.len(),
            self.gaps,
            missing.join(", ")
        )
    }
}

/// Waits (at most 120 s) until `gateway` holds nothing unexported: no unreleased ingest-log
/// frame (with durability on, a frame is released once its spans are exported) and nothing
/// in its export queues. True when it got there.
fn drained(gateway: &Shardtel) -> bool {
    wait_until(120, || {
        let m = gateway.metrics();
        let sum = |name: &str| -> Option<u64> {
            let lines: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .collect();
            (!lines.is_empty()).then(|| {
                lines
                    .iter()
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum()
            })
        };
        sum("shardtel_ingest_log_frames") == Some(0)
            && sum("shardtel_exporter_queue_size_bytes") == Some(0)
    })
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
    let broker = broker();
    create_topic_on(&broker, &topic, partitions);
    // A 300 ms linger and 200 ms batches keep acknowledged spans in the export queue and in
    // librdkafka at any moment.
    let mut gateway = {
        let (topic, broker) = (topic.clone(), broker.clone());
        let queue = queue.to_string();
        Shardtel::start(move |dir, ports| {
            base_config(dir, ports, "")
                + &format!(
                    r#"
[exporters.kafka]
brokers = ["{broker}"]
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
    // Everything exported, and the broker done with it, before the topic is read.
    assert!(
        drained(&gateway),
        "the restarted gateway still holds data after 120 s; metrics:\n{}\nlog:\n{}",
        gateway.metrics(),
        gateway.log()
    );
    let contents = TopicContents::settled(&broker, &topic, partitions);
    let (lost, duplicates, unacknowledged) = contents.tally(acked);
    let log = gateway.log();
    eprintln!(
        "gateway kill -9 ({what}): {sent_requests} requests sent, {} refused; {} spans acknowledged ({acked_before} before the kill, {exported_before} exported by then), {lost} lost, {duplicates} duplicates, {unacknowledged} unacknowledged spans published; {} messages at offsets {:?} (partition, low, high), gaps {:?}",
        record.refused,
        acked.len(),
        contents.messages.len(),
        contents.watermarks,
        contents.gaps
    );
    assert!(
        contents.gaps.is_empty(),
        "the reader missed offsets of the topic (partition, first, last): {:?}",
        contents.gaps
    );
    if lost > 0 {
        // Tell a lost span from a lossy read: a second reader, and what the gateway says it
        // produced; and whether the missing spans were acknowledged before the kill.
        let again = TopicContents::settled(&broker, &topic, partitions);
        let (lost_again, _, _) = again.tally(acked);
        let (missing_before, _, _) = again.tally(&before_kill);
        let metrics = gateway.metrics();
        let kafka: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("kafka") || l.contains("queue_size") || l.contains("sent_spans"))
            })
            .collect();
        panic!(
            "{lost} acknowledged spans are not in the topic ({what}; a second read misses {lost_again}, {missing_before} of them acknowledged before the kill); {}\ngateway metrics:\n{}\ngateway log:\n{log}",
            contents.diagnose(acked, partitions),
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
