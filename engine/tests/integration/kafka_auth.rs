//! SASL against a real broker: Tansu 0.6 (the durable build test.sh caches, see
//! `kafka_restart`) with `--authentication` (every client must authenticate). Users are made
//! with `tansu user create` (SCRAM-SHA-256 and SCRAM-SHA-512 credentials, kept in the broker's
//! sqlite storage) before authentication is turned on.
//!
//! Gateways (the `kafka` exporter) authenticate with each SCRAM mechanism and publish spans
//! received over OTLP/HTTP; a processor (the `kafka` receiver) authenticates too and exports
//! everything it consumes to a file, where every span must arrive. A wrong password, and no
//! SASL at all, must deliver nothing, and the log must say why.
//!
//! Not tested against a broker (Tansu 0.6 cannot): SASL PLAIN (it closes the connection in the
//! PLAIN handshake) and TLS (`--cert` does not make its listener speak TLS: it reads the
//! ClientHello as a Kafka frame). Unit tests in `sinks/src/kafka` check their librdkafka
//! properties.

use std::path::Path;
use std::time::Duration;

use crate::gen::{request, span};
use crate::harness::{base_config, free_port, read_traces, wait_until, Shardtel};
use crate::kafka::{create_topic_on, kafka_optional, unique_topic};
use crate::kafka_restart::{tansu_sqlite, DurableBroker};

/// A broker requiring authentication, with users `alice` (SCRAM-SHA-256, password
/// `alice-secret`) and `bob` (SCRAM-SHA-512, `bob-secret`) and a topic of 2 partitions. `None`
/// (after a loud message) when the durable Tansu is missing and `SHARDTEL_KAFKA_OPTIONAL=1`.
fn auth_broker(test: &str, dir: &Path) -> Option<(DurableBroker, String)> {
    let Some(bin) = tansu_sqlite() else {
        if kafka_optional() {
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: no durable tansu at target/tansu-sqlite/bin/tansu (SHARDTEL_KAFKA_OPTIONAL=1) !!!!!!!!\n"
            );
            return None;
        }
        panic!(
            "no durable tansu: run ./test.sh (it builds one into target/tansu-sqlite), set SHARDTEL_TANSU_SQLITE, or SHARDTEL_KAFKA_OPTIONAL=1 to skip"
        );
    };
    let mut broker = DurableBroker::start(bin, dir, free_port());
    let url = format!("tcp://{}", broker.address());
    for (mechanism, user) in [("scram256", "alice"), ("scram512", "bob")] {
        let password = format!("{user}-secret");
        broker.tansu(&[
            "user",
            "create",
            "--broker",
            &url,
            "--mechanism",
            mechanism,
            user,
            &password,
        ]);
    }
    let topic = unique_topic("auth-spans");
    create_topic_on(&broker.address(), &topic, 2);
    broker.kill();
    broker.args = vec!["--authentication".into()];
    broker.spawn();
    Some((broker, topic))
}

/// A gateway publishing traces to `topic` on `broker` with `auth` (`sasl = …` / `tls = …`
/// lines of the exporter).
fn gateway(broker: &str, topic: &str, auth: &str) -> Shardtel {
    let (broker, topic, auth) = (broker.to_string(), topic.to_string(), auth.to_string());
    Shardtel::start(move |dir, ports| {
        base_config(dir, ports, "")
            + &format!(
                r#"
[exporters.kafka]
brokers = ["{broker}"]
traces_topic = "{topic}"
timeout = "5s"
batch = {{ timeout = "50ms" }}
{auth}

[pipelines.traces]
receivers = ["otlp"]
exporters = ["kafka"]
"#
            )
    })
}

/// Posts 10 traces of 5 spans (trace ids from `tag`) over OTLP/HTTP; returns the spans.
fn post_spans(gw: &Shardtel, tag: u8) -> u64 {
    gw.post_traces(&request((0..50).map(|i| span(tag, i % 10, i)).collect()));
    50
}

fn sent(gw: &Shardtel) -> u64 {
    gw.metric_sum("shardtel_exporter_sent_spans_total", "exporter=\"kafka\"")
}

/// Publishes through a gateway with `auth` and waits until the broker took every span.
fn publish(broker: &DurableBroker, topic: &str, auth: &str, tag: u8) -> u64 {
    let mut gw = gateway(&broker.address(), topic, auth);
    let n = post_spans(&gw, tag);
    assert!(
        wait_until(30, || sent(&gw) == n),
        "gateway with {auth}: {} of {n} spans delivered; gateway log:\n{}\nbroker log:\n{}",
        sent(&gw),
        gw.log(),
        broker.log()
    );
    assert_eq!(gw.stop(), 0);
    n
}

/// A gateway with `auth` the broker must refuse: after 8 s nothing was delivered, and the log
/// says why (`expect` in it, case-insensitively).
fn refused(broker: &DurableBroker, topic: &str, auth: &str, expect: &str) {
    let mut gw = gateway(&broker.address(), topic, auth);
    post_spans(&gw, 99);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(sent(&gw), 0, "delivered with {auth}");
    let log = gw.log();
    assert!(
        log.to_lowercase().contains(expect),
        "no {expect:?} in the log of a gateway with {auth}:\n{log}"
    );
    gw.kill();
}

/// A processor consuming `topic` with `auth` into a file; waits until `spans` spans are there.
fn consume(broker: &DurableBroker, topic: &str, auth: &str, spans: u64) {
    let (address, topic, lines) = (broker.address(), topic.to_string(), auth.to_string());
    let mut p = Shardtel::start(move |dir, ports| {
        base_config(
            dir,
            ports,
            &format!(
                r#"
[receivers.kafka]
brokers = ["{address}"]
traces_topics = ["{topic}"]
group_id = "auth-{topic}"
initial_offset = "earliest"
session_timeout = "6s"
heartbeat_interval = "1s"
{lines}
"#
            ),
        ) + &format!(
            r#"
[exporters.file_traces]
type = "file"
path = "{dir}/out/traces.jsonl"
batch = {{ timeout = "50ms" }}

[pipelines.traces]
receivers = ["kafka"]
exporters = ["file_traces"]
"#,
            dir = dir.display()
        )
    });
    let out = p.out();
    let exported = || -> u64 {
        read_traces(&out)
            .iter()
            .flat_map(|(_, r)| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum()
    };
    assert!(
        wait_until(60, || exported() >= spans),
        "processor with {auth}: {} of {spans} spans exported; log:\n{}\nbroker log:\n{}",
        exported(),
        p.log(),
        broker.log()
    );
    assert_eq!(exported(), spans, "no span twice");
    assert_eq!(p.stop(), 0);
}

#[test]
fn scram_sha_256_and_512_authenticate_gateways_and_processors() {
    let dir = tempfile::tempdir().unwrap();
    let Some((broker, topic)) = auth_broker("scram", dir.path()) else {
        return;
    };
    let sasl = |mechanism: &str, user: &str, password: &str| {
        format!(
            r#"sasl = {{ mechanism = "{mechanism}", username = "{user}", password = "{password}" }}"#
        )
    };
    let mut total = 0;
    total += publish(
        &broker,
        &topic,
        &sasl("SCRAM-SHA-256", "alice", "alice-secret"),
        1,
    );
    total += publish(
        &broker,
        &topic,
        &sasl("SCRAM-SHA-512", "bob", "bob-secret"),
        2,
    );
    refused(
        &broker,
        &topic,
        &sasl("SCRAM-SHA-256", "alice", "wrong"),
        "authentication",
    );
    refused(&broker, &topic, "", "disconnected");
    consume(
        &broker,
        &topic,
        &sasl("SCRAM-SHA-512", "bob", "bob-secret"),
        total,
    );
}
