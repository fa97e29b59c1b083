//! Running shardtel as a service: the log lines a real process writes to stderr (text and
//! JSON), and systemd's readiness protocol through a real unix datagram socket.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::gen::{request, span};
use crate::harness::{free_port, http_get, wait_until, Shardtel};
use crate::test_config::{millis, secs, Batch, Component, Pipeline, Retry, TestConfig};

/// A config whose only traces exporter points at a closed port, so that a request makes its
/// core log a (rate-limited) retry warning; `format` and `level` go into `[telemetry]`.
fn failing_exporter(
    format: &str,
    level: &str,
) -> impl FnOnce(&std::path::Path, crate::harness::Ports) -> String {
    let format = format.to_string();
    let level = level.to_string();
    move |dir, ports| {
        let config = TestConfig::new(dir, ports)
            .exporter(
                "dead",
                Component::otlphttp(&format!("http://127.0.0.1:{}", free_port()))
                    .batch(Batch::timeout(millis(10)))
                    .retry(Retry::forever(millis(20), millis(100))),
            )
            .traces(Pipeline::otlp_to(&["dead"]))
            .with(|c| c.engine.shutdown_timeout = secs(1));
        let mut table = config.to_table();
        let telemetry = table
            .get_mut("telemetry")
            .and_then(|t| t.as_table_mut())
            .expect("[telemetry]");
        telemetry.insert("log_format".into(), format.into());
        telemetry.insert("log_level".into(), level.into());
        toml::to_string(&table).unwrap()
    }
}

/// Starts a failing exporter, sends traces until its retry warning is in the log, stops the
/// process and returns the log.
fn log_of_failing_exporter(format: &str, level: &str) -> String {
    let mut st = Shardtel::start(failing_exporter(format, level));
    st.post_traces(&request((0..10).map(|i| span(7, i, 0)).collect()));
    assert!(
        wait_until(30, || st.log().contains("will be retried")),
        "no retry warning; log:\n{}",
        st.log()
    );
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());
    st.log()
}

/// The core named in a sinks failure summary: `exporter dead (core N): ...`.
fn core_in_label(message: &str) -> Option<u64> {
    let rest = message.split("exporter dead (core ").nth(1)?;
    rest.split(')').next()?.parse().ok()
}

fn assert_recent_rfc3339(ts: &str, line: &str) {
    let at = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("{ts:?}: {e} in {line:?}"));
    assert!(ts.ends_with('Z') && ts.contains('T'), "{line:?}");
    let age = SystemTime::now()
        .duration_since(at)
        .unwrap_or_else(|_| panic!("timestamp in the future: {line:?}"));
    assert!(age < Duration::from_secs(600), "{line:?}");
}

#[test]
fn text_logs_carry_rfc3339_time_level_core_and_target() {
    let log = log_of_failing_exporter("text", "info");
    let mut on_core = 0;
    let mut lines = 0;
    for line in log.lines() {
        lines += 1;
        // `TS LEVEL [core=N ]target: message`
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_recent_rfc3339(ts, line);
        let level = &rest[..5];
        assert!(
            ["ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"].contains(&level),
            "{line:?}"
        );
        let rest = &rest[6..];
        let (core, rest) = match rest.strip_prefix("core=") {
            Some(r) => {
                let (n, r) = r.split_once(' ').unwrap();
                (Some(n.parse::<u64>().expect("core=N")), r)
            }
            None => (None, rest),
        };
        let (target, message) = rest.split_once(": ").unwrap();
        assert!(target.starts_with("shardtel_"), "{line:?}");
        assert!(!target.contains(' '), "{line:?}");
        if message.contains("will be retried") {
            assert_eq!(level, "WARN ", "{line:?}");
            assert_eq!(target, "shardtel_sinks::report", "{line:?}");
            // The core the reactor thread says equals the core the exporter names.
            assert_eq!(core, core_in_label(message), "{line:?}");
            on_core += 1;
        }
    }
    assert!(lines >= 3, "{log}");
    assert!(on_core >= 1, "no exporter warning with its core:\n{log}");
    assert!(
        log.contains("INFO  shardtel_engine::process: serving"),
        "{log}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_collectors_field_names() {
    // Per-module levels: shardtel_engine at info, everything else at warn.
    let log = log_of_failing_exporter("json", "warn,shardtel_engine=info");
    let mut retry_warnings = 0;
    let mut serving = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let o = v.as_object().unwrap();
        assert_recent_rfc3339(o["ts"].as_str().unwrap(), line);
        let level = o["level"].as_str().unwrap();
        assert!(
            ["error", "warn", "info", "debug"].contains(&level),
            "{line:?}"
        );
        let logger = o["logger"].as_str().unwrap();
        let msg = o["msg"].as_str().unwrap();
        let caller = o["caller"].as_str().unwrap();
        let (file, number) = caller.rsplit_once(':').unwrap();
        assert!(file.ends_with(".rs"), "{line:?}");
        number.parse::<u32>().unwrap();
        for key in o.keys() {
            assert!(
                ["ts", "level", "logger", "caller", "msg", "core"].contains(&key.as_str()),
                "unexpected field {key}: {line:?}"
            );
        }
        if !logger.starts_with("shardtel_engine") {
            assert!(
                level == "warn" || level == "error",
                "the filter lets only warnings through outside shardtel_engine: {line:?}"
            );
        }
        if msg.contains("will be retried") {
            assert_eq!(level, "warn");
            assert_eq!(logger, "shardtel_sinks::report");
            assert!(caller.starts_with("sinks/src/report.rs:"), "{line:?}");
            assert_eq!(o["core"].as_u64(), core_in_label(msg), "{line:?}");
            retry_warnings += 1;
        }
        if msg.starts_with("serving ") {
            assert_eq!(logger, "shardtel_engine::process");
            assert!(
                o.get("core").is_none(),
                "the main thread has no core: {line:?}"
            );
            serving += 1;
        }
    }
    assert!(retry_warnings >= 1, "{log}");
    assert_eq!(serving, 1, "{log}");
}

#[test]
fn sd_notify_ready_once_every_core_serves_and_stopping_on_drain() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut st = Shardtel::start_config(|c| c.file_pipelines());
    // Restarted with NOTIFY_SOCKET, as systemd starts a Type=notify unit.
    st.kill();
    let spawned = Instant::now();
    st.spawn_with(|command| {
        command.env("NOTIFY_SOCKET", &socket_path);
    });
    let mut buf = [0u8; 512];
    let n = systemd.recv(&mut buf).expect("READY=1 within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on "),
        "{ready:?}"
    );
    assert!(spawned.elapsed() < Duration::from_secs(30));
    // READY means every core serves: health answers 200 and every core is serving.
    let (code, body) = http_get(st.ports.health, "/").unwrap();
    assert_eq!(code, 200, "{body}");
    let metrics = st.metrics();
    let cores: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("shardtel_core_info{"))
        .collect();
    assert!(!cores.is_empty(), "{metrics}");
    assert!(
        cores.iter().all(|l| l.contains("state=\"serving\"")),
        "{cores:?}"
    );
    assert!(
        ready.contains(&format!("on {} cores", cores.len())),
        "{ready:?}"
    );

    // SIGTERM; the datagram waits in the socket's queue.
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());
    let n = systemd.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=draining");
    // Nothing else was sent.
    systemd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(systemd.recv(&mut buf).is_err());
}
