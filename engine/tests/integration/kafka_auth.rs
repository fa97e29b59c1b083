//! SASL and TLS against a real broker: the shared Apache Kafka test broker's
//! SASL_PLAINTEXT, SSL and SASL_SSL listeners (tests/peers/kafka/kafka.sh: the SCRAM users are
//! made when its storage is formatted, the PLAIN user is in the listener's JAAS configuration,
//! and a test CA made by the script signs the broker's and a client's certificate; the SSL
//! listener requires a client certificate).
//!
//! Gateways (the `kafka` exporter) authenticate with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512,
//! over plain TCP and over TLS, or with a client certificate, and publish spans received over
//! OTLP/HTTP; processors (the `kafka` receiver) authenticate the same ways and export
//! everything they consume to a file, where every span must arrive once. A wrong password, no
//! SASL on a SASL listener, no client certificate where one is required and a broker
//! certificate from an unknown CA must deliver nothing, and the log must say why.

use std::time::Duration;

use crate::gen::{request, span};
use crate::harness::{base_config, read_traces, wait_until, Shardtel};
use crate::kafka::{
    broker, create_topic_on, listener, listening, tls_file, unique_topic, Listener,
};

/// A gateway publishing traces to `topic` on `address` with `auth` (`sasl = …` / `tls = …`
/// lines of the exporter).
fn gateway(address: &str, topic: &str, auth: &str) -> Shardtel {
    let (address, topic, auth) = (address.to_string(), topic.to_string(), auth.to_string());
    Shardtel::start(move |dir, ports| {
        base_config(dir, ports, "")
            + &format!(
                r#"
[exporters.kafka]
brokers = ["{address}"]
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

/// Publishes through a gateway on `address` with `auth` and waits until the broker took
/// every span.
fn publish(address: &str, topic: &str, auth: &str, tag: u8) -> u64 {
    let mut gw = gateway(address, topic, auth);
    let n = post_spans(&gw, tag);
    assert!(
        wait_until(30, || sent(&gw) == n),
        "gateway on {address} with {auth}: {} of {n} spans delivered; log:\n{}",
        sent(&gw),
        gw.log()
    );
    assert_eq!(gw.stop(), 0);
    n
}

/// Gateways the broker must refuse, each `(address, auth, expect)`: all run at once; after
/// 8 s none delivered anything, and each log says why (`expect` in it, case-insensitively).
fn refused(topic: &str, cases: &[(String, String, &str)]) {
    let mut gateways: Vec<Shardtel> = cases
        .iter()
        .map(|(address, auth, _)| {
            let gw = gateway(address, topic, auth);
            post_spans(&gw, 99);
            gw
        })
        .collect();
    std::thread::sleep(Duration::from_secs(8));
    for (gw, (address, auth, expect)) in gateways.iter_mut().zip(cases) {
        assert_eq!(sent(gw), 0, "delivered on {address} with {auth}");
        let log = gw.log();
        assert!(
            log.to_lowercase().contains(expect),
            "no {expect:?} in the log of a gateway on {address} with {auth}:\n{log}"
        );
        gw.kill();
    }
}

/// A processor consuming `topic` from `address` with `auth` (group `group`) into a file;
/// waits until `spans` spans are there, and checks none came twice.
fn consume(address: &str, topic: &str, group: &str, auth: &str, spans: u64) {
    let (address, topic, group, lines) = (
        address.to_string(),
        topic.to_string(),
        group.to_string(),
        auth.to_string(),
    );
    let mut p = Shardtel::start(move |dir, ports| {
        base_config(
            dir,
            ports,
            &format!(
                r#"
[receivers.kafka]
brokers = ["{address}"]
traces_topics = ["{topic}"]
group_id = "{group}"
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
        "processor with {auth}: {} of {spans} spans exported; log:\n{}",
        exported(),
        p.log()
    );
    assert_eq!(exported(), spans, "no span twice");
    assert_eq!(p.stop(), 0);
}

fn sasl(mechanism: &str, user: &str, password: &str) -> String {
    format!(
        r#"sasl = {{ mechanism = "{mechanism}", username = "{user}", password = "{password}" }}"#
    )
}

/// `tls = { … }` with the test CA, and the client certificate when `client_cert`.
fn tls(client_cert: bool) -> String {
    let mut fields = vec![format!("ca_file = {:?}", tls_file("ca.pem"))];
    if client_cert {
        fields.push(format!("cert_file = {:?}", tls_file("client.pem")));
        fields.push(format!("key_file = {:?}", tls_file("client.key")));
    }
    format!("tls = {{ {} }}", fields.join(", "))
}

/// The listener's address when the broker and the test CA are there (`None` after a loud
/// message with `SHARDTEL_KAFKA_OPTIONAL=1` when not).
fn secured(test: &str, l: Listener) -> Option<String> {
    let address = listener(l);
    if !listening(test, &address) {
        return None;
    }
    assert!(
        tls_file("ca.pem").is_file(),
        "no test CA at {} (the broker on {address} was not started by tests/peers/kafka/kafka.sh; set SHARDTEL_KAFKA_DIR to its directory)",
        tls_file("ca.pem").display()
    );
    Some(address)
}

/// A new topic of 2 partitions (made over the PLAINTEXT listener of the same broker).
fn topic(prefix: &str) -> String {
    let topic = unique_topic(prefix);
    create_topic_on(&broker(), &topic, 2);
    topic
}

#[test]
fn sasl_plain_and_scram_authenticate_and_wrong_passwords_are_refused() {
    let Some(address) = secured("sasl", Listener::Sasl) else {
        return;
    };
    let topic = topic("sasl-spans");
    let mut total = 0;
    for (tag, auth) in [
        (1, sasl("PLAIN", "carol", "carol-secret")),
        (2, sasl("SCRAM-SHA-256", "alice", "alice-secret")),
        (3, sasl("SCRAM-SHA-512", "bob", "bob-secret")),
    ] {
        total += publish(&address, &topic, &auth, tag);
    }
    let auth_failed = "authentication failed";
    refused(
        &topic,
        &[
            (
                address.clone(),
                sasl("PLAIN", "carol", "wrong"),
                auth_failed,
            ),
            (
                address.clone(),
                sasl("SCRAM-SHA-256", "alice", "wrong"),
                auth_failed,
            ),
            // bob exists for SCRAM-SHA-512 only.
            (
                address.clone(),
                sasl("SCRAM-SHA-256", "bob", "bob-secret"),
                auth_failed,
            ),
            (address.clone(), String::new(), "disconnected"),
        ],
    );
    consume(
        &address,
        &topic,
        &format!("scram-{topic}"),
        &sasl("SCRAM-SHA-512", "bob", "bob-secret"),
        total,
    );
    consume(
        &address,
        &topic,
        &format!("plain-{topic}"),
        &sasl("PLAIN", "carol", "carol-secret"),
        total,
    );
}

#[test]
fn tls_with_a_client_certificate_of_the_test_ca() {
    let Some(address) = secured("tls", Listener::Ssl) else {
        return;
    };
    let topic = topic("tls-spans");
    let mut total = publish(&address, &topic, &tls(true), 1);
    // Without verifying the broker's certificate (the client certificate is still needed).
    total += publish(
        &address,
        &topic,
        &format!(
            "tls = {{ insecure_skip_verify = true, cert_file = {:?}, key_file = {:?} }}",
            tls_file("client.pem"),
            tls_file("client.key")
        ),
        2,
    );
    refused(
        &topic,
        &[
            // The listener requires a client certificate: the broker's TLS alert.
            (address.clone(), tls(false), "alert bad certificate"),
            // The system's CAs do not know the test CA.
            (
                address.clone(),
                format!(
                    "tls = {{ cert_file = {:?}, key_file = {:?} }}",
                    tls_file("client.pem"),
                    tls_file("client.key")
                ),
                "certificate verify failed",
            ),
            // Plain Kafka protocol to a TLS listener.
            (address.clone(), String::new(), "disconnected"),
        ],
    );
    consume(&address, &topic, &format!("tls-{topic}"), &tls(true), total);
}

#[test]
fn sasl_over_tls_with_the_test_ca() {
    let Some(address) = secured("sasl_ssl", Listener::SaslSsl) else {
        return;
    };
    let topic = topic("sasl-ssl-spans");
    let over_tls = |mechanism: &str, user: &str, password: &str| {
        format!("{}\n{}", sasl(mechanism, user, password), tls(false))
    };
    let mut total = publish(
        &address,
        &topic,
        &over_tls("SCRAM-SHA-256", "alice", "alice-secret"),
        1,
    );
    total += publish(
        &address,
        &topic,
        &over_tls("PLAIN", "carol", "carol-secret"),
        2,
    );
    refused(
        &topic,
        &[
            (
                address.clone(),
                over_tls("SCRAM-SHA-512", "bob", "wrong"),
                "authentication failed",
            ),
            (
                address.clone(),
                sasl("SCRAM-SHA-512", "bob", "bob-secret") + "\ntls = { }",
                "certificate verify failed",
            ),
        ],
    );
    consume(
        &address,
        &topic,
        &format!("sasl-ssl-{topic}"),
        &over_tls("SCRAM-SHA-512", "bob", "bob-secret"),
        total,
    );
}
