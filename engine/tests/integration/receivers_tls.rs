//! TLS, mTLS and bearer tokens on the zipkin, jaeger and fluentforward receivers
//! (`[receivers.NAME.tls]`, `[receivers.NAME.auth]`), through real clients: the OpenTelemetry
//! Python SDK's Zipkin exporters (a `requests` session with the CA and an `authorization`
//! header), its Jaeger gRPC exporter (grpcio's SSL channel credentials, with a client
//! certificate for mTLS, composed with access-token call credentials) and Thrift exporter
//! (https, `SSL_CERT_FILE`, a header on its Thrift HTTP transport), npm's fluent-logger with
//! `tls`/`tlsOptions` (acknowledged events, over mTLS) and PyPI's fluent-logger (plaintext, to
//! a TLS port). What is accepted arrives field by field as the receivers' own tests check it;
//! what is refused gets its status (401 with `WWW-Authenticate`, `UNAUTHENTICATED`, a closed
//! handshake), is counted under its receiver and transport, and writes nothing. A certificate
//! rotated under `reload_interval` reaches new connections; `shardtel validate` names bad files
//! of these tables. Certificates are made per test (`tls::Pki`, rcgen).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::clients::{clients_dir, try_send_spans, SdkSpan, SCRIPTS};
use crate::harness::{free_port, spans_in, Shardtel};
use crate::test_config::{Component, Pipeline, ReceiverAuth, ReceiverTls};
use crate::tls::{connector, request, wait_for_metric, Leaf, Pair, Pki, TOKEN};

/// The receiver's listeners' TLS with `server`'s certificate, requiring client certificates of
/// `pki` with `mtls`.
fn receiver_tls(pki: &Pki, server: &Pair, mtls: bool) -> ReceiverTls {
    let tls = ReceiverTls::new(&server.cert, &server.key);
    if mtls {
        tls.client_ca(pki.ca_file())
    } else {
        tls
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// How many of the spans in `st`'s output there are (every span, whoever sent it).
fn spans_written(st: &Shardtel) -> usize {
    spans_in(&st.out()).len()
}

/// Waits until `name{filter}` is exactly `n`.
fn expect_metric(st: &Shardtel, name: &str, filter: &str, n: u64) {
    wait_for_metric(st, name, filter, |v| v == n);
}

#[test]
fn zipkin_over_https_with_a_token_through_the_python_sdk() {
    let test = "receivers_tls::zipkin_over_https_with_a_token_through_the_python_sdk";
    let Some(dir) = clients_dir(test) else { return };
    let pki = Pki::new("zipkin test CA");
    let server = pki.issue("server", Leaf::Server);
    let port = free_port();
    let st = Shardtel::start_config(|c| {
        c.receiver(
            "zipkin",
            Component::zipkin_receiver(port)
                .server_tls(&receiver_tls(&pki, &server, false))
                .server_auth(&ReceiverAuth::tokens(&[TOKEN])),
        )
        .file_exporters()
        .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["zipkin"]))
    });
    let ca = pki.ca_file();
    let url = format!("https://127.0.0.1:{port}/api/v2/spans");
    let with = |token: Option<&'static str>| {
        let mut env = vec![("SHARDTEL_CA_FILE", ca.as_os_str())];
        env.extend(token.map(|t| ("SHARDTEL_TOKEN", os(t))));
        env
    };
    // Accepted: JSON and protobuf over https with the token.
    let json = try_send_spans(&dir, "otel", "zipkin-json", &url, 21, &with(Some(TOKEN)))
        .unwrap_or_else(|e| panic!("zipkin-json over https: {e}\nlog:\n{}", st.log()));
    crate::zipkin::check_delivered(&st, &json);
    let proto = try_send_spans(&dir, "otel", "zipkin-proto", &url, 22, &with(Some(TOKEN)))
        .unwrap_or_else(|e| panic!("zipkin-proto over https: {e}\nlog:\n{}", st.log()));
    crate::zipkin::check_delivered(&st, &proto);
    let sent = json.len() + proto.len();

    // Refused: no token, a wrong token, plaintext to the TLS port.
    let missing = try_send_spans(&dir, "otel", "zipkin-json", &url, 23, &with(None));
    assert!(missing.is_err(), "accepted without a token");
    let wrong = try_send_spans(&dir, "otel", "zipkin-json", &url, 24, &with(Some("n0pe")));
    assert!(wrong.is_err(), "accepted with a wrong token");
    let plain_url = format!("http://127.0.0.1:{port}/api/v2/spans");
    let plain = try_send_spans(
        &dir,
        "otel",
        "zipkin-json",
        &plain_url,
        25,
        &[("SHARDTEL_TOKEN", os(TOKEN))],
    );
    let plain = plain.expect_err("plaintext to the TLS port was accepted");
    assert!(plain.contains("export failed"), "{plain}");

    // The answers themselves: 401 with the challenge of RFC 6750.
    let post = |headers: &[(&str, String)]| {
        request(
            connector(&ca, None, false),
            "POST",
            &url,
            headers,
            b"[]".to_vec(),
        )
        .unwrap()
    };
    let reply = post(&[("content-type", "application/json".into())]);
    assert_eq!(
        reply.status,
        401,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    let reply = post(&[("authorization", "Bearer n0pe".into())]);
    assert_eq!(reply.status, 401);
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("n0pe"));
    let reply = post(&[("authorization", format!("Bearer {TOKEN}"))]);
    assert_eq!(reply.status, 202);

    let refused = "shardtel_receiver_auth_failures_total";
    let zipkin = "receiver=\"zipkin\",transport=\"http\"";
    expect_metric(&st, refused, &format!("{zipkin},reason=\"missing\""), 2);
    expect_metric(&st, refused, &format!("{zipkin},reason=\"wrong\""), 2);
    let failed = "shardtel_receiver_tls_handshake_failures_total";
    wait_for_metric(
        &st,
        failed,
        &format!("{zipkin},reason=\"plaintext\""),
        |n| n >= 1,
    );
    wait_for_metric(&st, "shardtel_receiver_tls_handshakes_total", zipkin, |n| {
        n >= 5
    });
    expect_metric(
        &st,
        "shardtel_receiver_accepted_spans_total",
        zipkin,
        sent as u64,
    );
    // Nothing refused was written.
    assert_eq!(spans_written(&st), sent, "log:\n{}", st.log());
    assert!(!st.log().contains(TOKEN), "a token in the log");
}

#[test]
fn jaeger_over_tls_with_a_token_through_the_python_sdk() {
    let test = "receivers_tls::jaeger_over_tls_with_a_token_through_the_python_sdk";
    let Some(dir) = clients_dir(test) else { return };
    let pki = Pki::new("jaeger test CA");
    let server = pki.issue("server", Leaf::Server);
    let (grpc, thrift) = (free_port(), free_port());
    let st = Shardtel::start_config(|c| {
        c.receiver(
            "jaeger",
            Component::jaeger_receiver(grpc, thrift)
                .server_tls(&receiver_tls(&pki, &server, false))
                .server_auth(&ReceiverAuth::tokens(&[TOKEN])),
        )
        .file_exporters()
        .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["jaeger"]))
    });
    let ca = pki.ca_file();
    let grpc_at = format!("127.0.0.1:{grpc}");
    let thrift_url = format!("https://127.0.0.1:{thrift}/api/traces?format=jaeger.thrift");
    let tls_env = [("SHARDTEL_CA_FILE", ca.as_os_str())];
    let token_env = [
        ("SHARDTEL_CA_FILE", ca.as_os_str()),
        ("SHARDTEL_TOKEN", os(TOKEN)),
    ];

    let over_grpc = try_send_spans(&dir, "jaeger", "jaeger-grpc", &grpc_at, 31, &token_env)
        .unwrap_or_else(|e| panic!("jaeger-grpc over TLS: {e}\nlog:\n{}", st.log()));
    crate::jaeger::check_delivered(&st, &over_grpc, true);
    let thrift_env = [
        ("SSL_CERT_FILE", ca.as_os_str()),
        ("SHARDTEL_TOKEN", os(TOKEN)),
    ];
    let over_thrift = try_send_spans(
        &dir,
        "jaeger",
        "jaeger-thrift",
        &thrift_url,
        32,
        &thrift_env,
    )
    .unwrap_or_else(|e| panic!("jaeger-thrift over https: {e}\nlog:\n{}", st.log()));
    crate::jaeger::check_delivered(&st, &over_thrift, false);
    let sent = over_grpc.len() + over_thrift.len();

    // gRPC: a wrong token is UNAUTHENTICATED, no token too; plaintext (h2c) is refused.
    let wrong_env = [
        ("SHARDTEL_CA_FILE", ca.as_os_str()),
        ("SHARDTEL_TOKEN", os("n0pe")),
    ];
    let wrong = try_send_spans(&dir, "jaeger", "jaeger-grpc", &grpc_at, 33, &wrong_env);
    assert!(wrong.is_err(), "accepted with a wrong token");
    let missing = try_send_spans(&dir, "jaeger", "jaeger-grpc", &grpc_at, 34, &tls_env);
    assert!(missing.is_err(), "accepted without a token");
    let plain = try_send_spans(&dir, "jaeger", "jaeger-grpc", &grpc_at, 35, &[]);
    assert!(plain.is_err(), "plaintext to the TLS port was accepted");
    // Thrift: the exporter reports success whatever the status (it only logs it); the counters
    // and the output show the refusal.
    let _ = try_send_spans(
        &dir,
        "jaeger",
        "jaeger-thrift",
        &thrift_url,
        36,
        &[("SSL_CERT_FILE", ca.as_os_str())],
    );
    let reply = request(
        connector(&ca, None, false),
        "POST",
        &thrift_url,
        &[("content-type", "application/x-thrift".into())],
        Vec::new(),
    )
    .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer");

    let refused = "shardtel_receiver_auth_failures_total";
    let on_grpc = "receiver=\"jaeger\",transport=\"grpc\"";
    let on_thrift = "receiver=\"jaeger\",transport=\"thrift_http\"";
    expect_metric(&st, refused, &format!("{on_grpc},reason=\"wrong\""), 1);
    expect_metric(&st, refused, &format!("{on_grpc},reason=\"missing\""), 1);
    expect_metric(&st, refused, &format!("{on_thrift},reason=\"missing\""), 2);
    wait_for_metric(
        &st,
        "shardtel_receiver_tls_handshake_failures_total",
        &format!("{on_grpc},reason=\"plaintext\""),
        |n| n >= 1,
    );
    expect_metric(
        &st,
        "shardtel_receiver_accepted_spans_total",
        "receiver=\"jaeger\"",
        sent as u64,
    );
    assert_eq!(spans_written(&st), sent, "log:\n{}", st.log());
}

#[test]
fn jaeger_grpc_over_mtls_needs_a_client_certificate() {
    let test = "receivers_tls::jaeger_grpc_over_mtls_needs_a_client_certificate";
    let Some(dir) = clients_dir(test) else { return };
    let pki = Pki::new("jaeger mtls CA");
    let server = pki.issue("server", Leaf::Server);
    let client = pki.issue("client", Leaf::Client);
    let (grpc, thrift) = (free_port(), free_port());
    let st = Shardtel::start_config(|c| {
        c.receiver(
            "jaeger",
            Component::jaeger_receiver(grpc, thrift).server_tls(&receiver_tls(&pki, &server, true)),
        )
        .file_exporters()
        .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["jaeger"]))
    });
    let ca = pki.ca_file();
    let at = format!("127.0.0.1:{grpc}");
    let with_cert = [
        ("SHARDTEL_CA_FILE", ca.as_os_str()),
        ("SHARDTEL_CLIENT_CERT", client.cert.as_os_str()),
        ("SHARDTEL_CLIENT_KEY", client.key.as_os_str()),
    ];
    let spans: Vec<SdkSpan> = try_send_spans(&dir, "jaeger", "jaeger-grpc", &at, 41, &with_cert)
        .unwrap_or_else(|e| panic!("jaeger-grpc over mTLS: {e}\nlog:\n{}", st.log()));
    crate::jaeger::check_delivered(&st, &spans, true);
    let without = [("SHARDTEL_CA_FILE", ca.as_os_str())];
    let refused = try_send_spans(&dir, "jaeger", "jaeger-grpc", &at, 42, &without);
    assert!(refused.is_err(), "accepted without a client certificate");
    wait_for_metric(
        &st,
        "shardtel_receiver_tls_handshake_failures_total",
        "receiver=\"jaeger\",transport=\"grpc\",reason=\"no_client_cert\"",
        |n| n >= 1,
    );
    assert_eq!(spans_written(&st), spans.len(), "log:\n{}", st.log());
}

/// npm fluent-logger (PackedForward, acknowledged) with `env`; (succeeded, stdout, stderr).
/// Stopped after 30 s: a logger whose connection failed waits for its reconnect interval.
fn node_send(
    dir: &Path,
    port: u16,
    tag: &str,
    n: usize,
    env: &[(&str, &OsStr)],
) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args([
            "30",
            "node",
            &format!("{SCRIPTS}/fluent.js"),
            &port.to_string(),
            "PackedForward",
            tag,
            &n.to_string(),
        ])
        .env("NODE_PATH", dir.join("node/node_modules"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fluent_logger_over_mtls_gets_its_acks_and_plaintext_is_refused() {
    let test = "receivers_tls::fluent_logger_over_mtls_gets_its_acks_and_plaintext_is_refused";
    let Some(dir) = clients_dir(test) else { return };
    let pki = Pki::new("fluent mtls CA");
    let server = pki.issue("server", Leaf::Server);
    let client = pki.issue("client", Leaf::Client);
    let port = free_port();
    let st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        c.receiver(
            "fluentforward",
            Component::fluentforward_receiver(port).server_tls(&receiver_tls(&pki, &server, true)),
        )
        .exporter("file_logs", Component::file(out.join("logs.jsonl")))
        .logs(Pipeline::otlp_to(&["file_logs"]).receivers(&["fluentforward"]))
    });
    let ca = pki.ca_file();
    let mtls = [
        ("FLUENT_CA", ca.as_os_str()),
        ("FLUENT_CERT", client.cert.as_os_str()),
        ("FLUENT_KEY", client.key.as_os_str()),
    ];
    let (ok, stdout, stderr) = node_send(&dir, port, "tls.app", 7, &mtls);
    assert!(
        ok,
        "fluent-logger over mTLS failed: {stderr}\nlog:\n{}",
        st.log()
    );
    let sent: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let want = crate::fluentforward::expected(&sent, "tls.app");
    crate::fluentforward::check_delivered(&st, &want);

    // Without a client certificate: the handshake fails, no ack, nothing written.
    let (ok, _, _) = node_send(
        &dir,
        port,
        "tls.nocert",
        3,
        &[("FLUENT_CA", ca.as_os_str())],
    );
    assert!(
        !ok,
        "fluent-logger without a client certificate got its acks"
    );
    let failed = "shardtel_receiver_tls_handshake_failures_total";
    let fluent = "receiver=\"fluentforward\",transport=\"tcp\"";
    wait_for_metric(
        &st,
        failed,
        &format!("{fluent},reason=\"no_client_cert\""),
        |n| n >= 1,
    );

    // PyPI's fluent-logger speaks plaintext only: its MessagePack is no TLS handshake.
    let python = dir.join("otel/bin/python");
    let out = Command::new(python)
        .args([
            &format!("{SCRIPTS}/fluent_message.py"),
            &port.to_string(),
            "tls.plain",
            "3",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // It may or may not notice (a write to a socket the server then closes can succeed).
    let _ = out.status;
    wait_for_metric(&st, failed, &format!("{fluent},reason=\"protocol\""), |n| {
        n >= 1
    });
    wait_for_metric(&st, "shardtel_receiver_tls_handshakes_total", fluent, |n| {
        n >= 1
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let records = crate::fluentforward::records_in(&st.out());
    assert_eq!(records.len(), want.len(), "log:\n{}", st.log());
}

#[test]
fn validate_checks_the_files_of_these_receivers() {
    let pki = Pki::new("validate CA");
    let server = pki.issue("server", Leaf::Server);
    let other = pki.issue("other", Leaf::Server);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let config = format!(
        "[receivers.zipkin]\nendpoint = \"127.0.0.1:{}\"\n[receivers.zipkin.tls]\n\
         cert_file = {:?}\nkey_file = {:?}\n\
         [receivers.fluentforward]\nendpoint = \"127.0.0.1:{}\"\n[receivers.fluentforward.tls]\n\
         cert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n\
         [receivers.jaeger]\ngrpc = \"127.0.0.1:{}\"\nthrift_http = false\n\
         [receivers.jaeger.auth]\nbearer_token_file = {:?}\n\
         [exporters.blackhole]\n\
         [pipelines.traces]\nreceivers = [\"zipkin\", \"jaeger\"]\nexporters = [\"blackhole\"]\n\
         [pipelines.logs]\nreceivers = [\"fluentforward\"]\nexporters = [\"blackhole\"]\n",
        free_port(),
        server.cert,
        other.key,
        free_port(),
        server.cert,
        server.key,
        missing,
        free_port(),
        dir.path().join("no-tokens"),
    );
    let path = dir.path().join("shardtel.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardtel"))
        .args(["validate", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "shardtel.toml:5: receivers.zipkin.tls.key_file: ",
        "shardtel.toml:11: receivers.fluentforward.tls.client_ca_file: ",
        "shardtel.toml:16: receivers.jaeger.auth.bearer_token_file: ",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
}

/// Copies `pair` to `cert` and `key` atomically (copy, then rename), as certificate tooling
/// replaces files.
fn install(pair: &Pair, cert: &Path, key: &Path) {
    for (from, to) in [(&pair.cert, cert), (&pair.key, key)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

#[test]
fn zipkin_picks_up_a_rotated_certificate_with_reload_interval() {
    let test = "receivers_tls::zipkin_picks_up_a_rotated_certificate_with_reload_interval";
    let Some(dir) = clients_dir(test) else { return };
    let (old_ca, new_ca) = (Pki::new("old CA"), Pki::new("new CA"));
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (
        files.path().join("server.pem"),
        files.path().join("server.key"),
    );
    install(&old_ca.issue("server", Leaf::Server), &cert, &key);
    let port = free_port();
    let st = Shardtel::start_config(|c| {
        c.receiver(
            "zipkin",
            Component::zipkin_receiver(port).server_tls(
                &ReceiverTls::new(&cert, &key).reload_interval(std::time::Duration::from_secs(1)),
            ),
        )
        .file_exporters()
        .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["zipkin"]))
    });
    let url = format!("https://127.0.0.1:{port}/api/v2/spans");
    let trusting = |pki: &Pki, seed: u64| {
        let ca = pki.ca_file();
        try_send_spans(
            &dir,
            "otel",
            "zipkin-json",
            &url,
            seed,
            &[("SHARDTEL_CA_FILE", ca.as_os_str())],
        )
    };
    let before = trusting(&old_ca, 51)
        .unwrap_or_else(|e| panic!("before the rotation: {e}\nlog:\n{}", st.log()));
    install(&new_ca.issue("server", Leaf::Server), &cert, &key);
    let mut seed = 52;
    let after = crate::harness::wait_until(15, || {
        seed += 1;
        trusting(&new_ca, seed).is_ok()
    });
    assert!(
        after,
        "the new certificate was not served; log:\n{}",
        st.log()
    );
    assert!(
        st.log().contains("receivers.zipkin.tls: reloaded"),
        "the reload is not logged under its table; log:\n{}",
        st.log()
    );
    assert!(
        trusting(&old_ca, 99).is_err(),
        "the old certificate is still served"
    );
    crate::zipkin::check_delivered(&st, &before);
}
