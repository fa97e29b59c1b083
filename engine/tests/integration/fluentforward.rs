//! The fluentforward receiver (`[receivers.fluentforward]`) through real clients: npm's
//! fluent-logger in Message, PackedForward and CompressedPackedForward modes, each event
//! acknowledged (the logger fails without its `{"ack": chunk}`), and PyPI's fluent-logger
//! (Message mode; it has no acknowledgements). What arrives at shardtel's file exporter must be,
//! field by field, the records the clients sent, mapped as docs/receivers.md says.
//! Acknowledged means durable: records acknowledged before a `kill -9` are exported after the
//! restart. A malformed event closes its connection without losing the events before it.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use prost::Message;
use serde_json::Value as Json;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::common::v1::AnyValue;
use shardtel_protocol::proto::logs::v1::LogRecord;
use shardtel_protocol::Signal;

use crate::clients::{clients_dir, run_json, sorted, typed, CollectorPath, SCRIPTS};
use crate::gen::{kv, s};
use crate::harness::{free_port, proc_status_kib, read_lines, wait_until, Shardtel};
use crate::test_config::{Batch, Component, Cores, Pipeline};

fn start(port: u16, batch_timeout: Duration) -> Shardtel {
    start_on(port, batch_timeout, Cores::All)
}

fn start_on(port: u16, batch_timeout: Duration, cores: Cores) -> Shardtel {
    Shardtel::start_config(|mut c| {
        c.engine.cores = cores;
        let out = c.out_dir();
        c.receiver("fluentforward", Component::fluentforward_receiver(port))
            .exporter(
                "file_logs",
                Component::file(out.join("logs.jsonl")).batch(Batch::timeout(batch_timeout)),
            )
            .logs(Pipeline::otlp_to(&["file_logs"]).receivers(&["fluentforward"]))
    })
}

/// Every log record in the file exporter's output, its attributes sorted.
pub(crate) fn records_in(dir: &Path) -> Vec<LogRecord> {
    read_lines(dir, "logs")
        .into_iter()
        .flat_map(|(_, line)| {
            let pb = shardtel_protocol::json::to_protobuf(Signal::Logs, line.as_bytes()).unwrap();
            ExportLogsServiceRequest::decode(pb.as_ref())
                .unwrap()
                .resource_logs
        })
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .map(|mut r| {
            r.attributes = sorted(r.attributes);
            r
        })
        .collect()
}

/// The records a client printed (`[{time_ns, record}]`) as shardtel must deliver them.
pub(crate) fn expected(sent: &Json, tag: &str) -> Vec<LogRecord> {
    sent.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut body = None;
            let mut attributes = vec![kv("fluent.tag", s(tag))];
            for (k, v) in e["record"].as_object().unwrap() {
                if k == "log" || k == "message" {
                    body = Some(AnyValue {
                        value: Some(typed(v)),
                    });
                } else {
                    attributes.push(kv(k, typed(v)));
                }
            }
            LogRecord {
                time_unix_nano: e["time_ns"].as_str().unwrap().parse().unwrap(),
                body: Some(body.unwrap_or_default()),
                attributes: sorted(attributes),
                ..Default::default()
            }
        })
        .collect()
}

/// Waits until every record of `want` arrived (matched by tag and time), then compares them.
pub(crate) fn check_delivered(st: &Shardtel, want: &[LogRecord]) {
    let tag = &want[0]
        .attributes
        .iter()
        .find(|a| a.key == "fluent.tag")
        .unwrap()
        .value;
    let mine = |st: &Shardtel| {
        let mut got: Vec<_> = records_in(&st.out())
            .into_iter()
            .filter(|r| {
                r.attributes
                    .iter()
                    .any(|a| a.key == "fluent.tag" && &a.value == tag)
            })
            .collect();
        got.sort_by_key(|r| r.time_unix_nano);
        got.dedup();
        got
    };
    assert!(
        wait_until(20, || mine(st).len() >= want.len()),
        "{} of {} records arrived; log:\n{}",
        mine(st).len(),
        want.len(),
        st.log()
    );
    let mut want = want.to_vec();
    want.sort_by_key(|r| r.time_unix_nano);
    assert_eq!(mine(st), want);
}

fn node_send(dir: &Path, port: u16, mode: &str, tag: &str, n: usize) -> Json {
    run_json(
        Path::new("node"),
        &[
            &format!("{SCRIPTS}/fluent.js"),
            &port.to_string(),
            mode,
            tag,
            &n.to_string(),
        ],
        &[("NODE_PATH", &dir.join("node/node_modules"))],
    )
}

#[test]
fn fluent_loggers_deliver_every_record_and_get_their_acks() {
    let Some(dir) =
        clients_dir("fluentforward::fluent_loggers_deliver_every_record_and_get_their_acks")
    else {
        return;
    };
    let port = free_port();
    let st = start(port, Duration::from_millis(50));
    let mut total = 0;
    for mode in ["Message", "PackedForward", "CompressedPackedForward"] {
        let tag = format!("app.{}", mode.to_lowercase());
        let sent = node_send(&dir, port, mode, &tag, 25);
        check_delivered(&st, &expected(&sent, &tag));
        total += 25;
    }
    let python = dir.join("otel/bin/python");
    let sent = run_json(
        &python,
        &[
            &format!("{SCRIPTS}/fluent_message.py"),
            &port.to_string(),
            "py.app",
            "10",
        ],
        &[],
    );
    check_delivered(&st, &expected(&sent, "py.app"));
    total += 10;
    let accepted = || {
        st.metric_sum(
            "shardtel_receiver_accepted_log_records_total",
            "receiver=\"fluentforward\",transport=\"tcp\"",
        )
    };
    assert!(
        wait_until(5, || accepted() == total),
        "{} != {total}",
        accepted()
    );
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let Some(dir) = clients_dir("fluentforward::acknowledged_records_survive_kill_9") else {
        return;
    };
    let port = free_port();
    // Nothing leaves the exporter's batch before the kill.
    let mut st = start(port, Duration::from_secs(3600));
    let sent = node_send(&dir, port, "PackedForward", "durable", 40);
    st.kill();
    assert!(records_in(&st.out()).is_empty());
    st.reconfigure(|c| {
        let out = c.out_dir();
        c.exporters.insert(
            "file_logs".into(),
            Component::file(out.join("logs.jsonl"))
                .batch(Batch::timeout(Duration::from_millis(50))),
        );
    });
    st.spawn();
    check_delivered(&st, &expected(&sent, "durable"));
    assert!(st.log().contains("replaying"), "{}", st.log());
}

#[test]
fn a_malformed_event_closes_its_connection_after_the_good_ones() {
    let port = free_port();
    let st = start(port, Duration::from_millis(50));
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // ["ok", 1700000000, {"log": "fine"}], then a map where an event must be an array.
    let mut bytes = vec![0x93, 0xa2, b'o', b'k', 0xce];
    bytes.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    bytes.extend_from_slice(&[0x81, 0xa3, b'l', b'o', b'g', 0xa4, b'f', b'i', b'n', b'e']);
    bytes.extend_from_slice(&[0x81, 0xa1, b'x', 0x01]);
    c.write_all(&bytes).unwrap();
    let mut rest = Vec::new();
    let closed = std::io::Read::read_to_end(&mut c, &mut rest);
    assert!(closed.is_ok() && rest.is_empty(), "{closed:?} {rest:?}");
    assert!(wait_until(20, || records_in(&st.out()).len() == 1));
    let r = &records_in(&st.out())[0];
    assert_eq!(r.body.clone().unwrap().value, Some(s("fine")));
    let failed = || {
        st.metric_sum(
            "shardtel_receiver_failed_requests_total",
            "receiver=\"fluentforward\",transport=\"tcp\",signal=\"logs\"",
        )
    };
    assert!(wait_until(5, || failed() == 1), "{}", failed());
}

#[test]
fn the_collectors_fluentforward_receiver_and_shardtels_agree() {
    let test = "fluentforward::the_collectors_fluentforward_receiver_and_shardtels_agree";
    let Some(dir) = clients_dir(test) else { return };
    let Some(collector) = CollectorPath::start(test) else {
        return;
    };
    let port = free_port();
    let direct = start(port, Duration::from_millis(50));
    for target in [port, collector.fluent] {
        for mode in ["Message", "PackedForward", "CompressedPackedForward"] {
            node_send(
                &dir,
                target,
                mode,
                &format!("cmp.{}", mode.to_lowercase()),
                10,
            );
        }
    }
    let via = &collector.shardtel;
    let all = |st: &Shardtel| {
        let mut records = records_in(&st.out());
        records.sort_by_key(|r| (r.time_unix_nano, format!("{:?}", r.attributes)));
        records
    };
    assert!(
        wait_until(20, || all(&direct).len() == 30 && all(via).len() == 30),
        "direct {}, through the Collector {} of 30; Collector log:\n{}",
        all(&direct).len(),
        all(via).len(),
        collector.otelcol.log()
    );
    assert_eq!(all(&direct), all(via));
}

/// `["ok", 1700000000, {"log": "fine"}]`, a whole event.
fn good_event() -> Vec<u8> {
    let mut bytes = vec![0x93, 0xa2, b'o', b'k', 0xce];
    bytes.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    bytes.extend_from_slice(&[0x81, 0xa3, b'l', b'o', b'g', 0xa4, b'f', b'i', b'n', b'e']);
    bytes
}

#[test]
fn connections_holding_large_unfinished_events_stay_within_the_cores_bytes_in_flight() {
    // One core, no OTLP receiver: 64 MiB of request bytes in flight (the default), and the
    // receiver's default max_recv_msg_size of 8 MiB.
    const CONNECTIONS: usize = 16;
    const SENT: usize = 7 << 20;
    let port = free_port();
    let st = start_on(port, Duration::from_millis(50), Cores::List(vec![0]));
    let pid = st.child.as_ref().unwrap().id();
    let rss_before = proc_status_kib(pid, "VmRSS");
    // ["big", 1700000000, {"log": <a string of 8 MiB - 1 KiB>}], of which 7 MiB are sent.
    let mut head = vec![0x93, 0xa3, b'b', b'i', b'g', 0xce];
    head.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    head.extend_from_slice(&[0x81, 0xa3, b'l', b'o', b'g', 0xdb]);
    head.extend_from_slice(&((8u32 << 20) - 1024).to_be_bytes());
    let chunk = vec![b'y'; 1 << 20];
    let mut held = Vec::new();
    let mut closed = 0;
    for _ in 0..CONNECTIONS {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut sent = c.write_all(&head).is_ok();
        for _ in 0..SENT / chunk.len() {
            sent = sent && c.write_all(&chunk).is_ok();
        }
        // Whatever the server read of it, it has read by now; a closed connection reads EOF
        // or a reset at once.
        std::thread::sleep(Duration::from_millis(300));
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut c, &mut byte) {
            Err(e) if sent && e.kind() == std::io::ErrorKind::WouldBlock => held.push(c),
            _ => closed += 1,
        }
    }
    let rss_after = proc_status_kib(pid, "VmRSS");
    let refused = || {
        st.metric_sum(
            "shardtel_receiver_failed_requests_by_reason_total",
            "reason=\"inflight_bytes\"",
        )
    };
    assert!(
        closed >= CONNECTIONS / 2 - 2 && !held.is_empty(),
        "{} connections hold 7 MiB each, {closed} were closed",
        held.len()
    );
    assert!(
        wait_until(5, || refused() == closed as u64),
        "{} refusals counted, {closed} connections closed",
        refused()
    );
    // The held events are within the 64 MiB bound (each buffer 8 MiB), not 16 of them.
    let grew = rss_after.saturating_sub(rss_before) >> 10;
    assert!(grew < 100, "RSS grew by {grew} MiB");
    // The held connections go away; a good client is served (once the server saw them close:
    // a client that comes before may still be refused, and sends again).
    drop(held);
    let served = wait_until(20, || {
        if records_in(&st.out()).is_empty() {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.write_all(&good_event());
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        !records_in(&st.out()).is_empty()
    });
    assert!(served, "log:\n{}", st.log());
    let r = &records_in(&st.out())[0];
    assert_eq!(r.body.clone().unwrap().value, Some(s("fine")));
}
