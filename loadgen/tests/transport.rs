//! The transport paths end to end: the real loadgen binary against in-test OTLP/gRPC
//! targets (h2c and TLS), with compression, refusals, failures, an unreachable target,
//! and every signal.

mod otlp_target;

use std::sync::Arc;

use std::time::{Duration, Instant};

use otlp_target::{
    grpc_receiver, grpc_receiver_on, http_file_exporter, http_file_exporter_on, run_with_json,
    temp_dir, url,
};

/// loadgen with `args` and 4 request templates; (exit code, JSON results, output).
fn run(
    dir: &std::path::Path,
    name: &str,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--templates", "4"]);
    run_with_json(dir, name, &all)
}

#[test]
fn grpc_counts_accepted_and_refused_with_gzip_and_zstd() {
    let dir = temp_dir("grpc");
    // Every fourth request is refused with UNAVAILABLE (trailers-only response).
    let target = grpc_receiver(Box::new(|i| if i % 4 == 3 { 14 } else { 0 }));
    let endpoint = url("http", &target);
    let (code, res, text) = run(
        &dir,
        "gzip",
        &[
            "-e",
            &endpoint,
            "--count",
            "40",
            "--connections",
            "2",
            "--concurrency",
            "4",
            "-c",
            "gzip",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["sent"], 40);
    assert_eq!(res["requests"]["accepted"], 30, "{text}");
    assert_eq!(res["requests"]["refused"], 10, "{text}");
    assert_eq!(
        res["refused_by_reason"]["grpc UNAVAILABLE (14)"], 10,
        "{text}"
    );
    assert_eq!(res["items"]["acknowledged"], 3000);
    assert_eq!(res["latency_us"]["count"], 40);
    assert_eq!(target.grpc_items(), 4000);
    assert!(target.encodings().iter().all(|e| e == "gzip"));
    let most = target.max_in_flight();
    assert!(
        (2..=8).contains(&most),
        "2 connections x 4 in flight, saw {most}"
    );
    drop(target);

    // Open loop at 200 requests/s for one second, zstd.
    let target = grpc_receiver(Box::new(|_| 0));
    let endpoint = url("grpc", &target);
    let (code, res, text) = run(
        &dir,
        "zstd",
        &[
            "-e",
            &endpoint,
            "--rate",
            "200",
            "--rate-unit",
            "requests",
            "--duration",
            "1s",
            "-c",
            "zstd",
            "--workers",
            "2",
            "--connections",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    // The schedule asks for 200 requests; on a loaded machine a few may still be due
    // at the deadline, and those are reported as behind schedule, not lost.
    let sent = res["requests"]["sent"].as_u64().unwrap();
    let behind = res["requests"]["behind_schedule"].as_u64().unwrap();
    assert!(
        (199..=201).contains(&(sent + behind)),
        "sent {sent} + behind {behind}\n{text}"
    );
    assert!(sent >= 150, "sent {sent}\n{text}");
    assert_eq!(res["requests"]["accepted"], sent);
    assert_eq!(res["mode"], "open");
    assert!(target.encodings().iter().all(|e| e == "zstd"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn grpc_errors_are_failures_by_code_and_no_acceptance_exits_1() {
    let dir = temp_dir("grpc-fail");
    let target = grpc_receiver(Box::new(|_| 3));
    let endpoint = url("http", &target);
    let (code, res, text) = run(&dir, "fail", &["-e", &endpoint, "--count", "7"]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        target.max_in_flight(),
        1,
        "closed loop defaults to 1 in flight"
    );
    assert_eq!(res["requests"]["failed"], 7, "{text}");
    assert_eq!(
        res["failed_by_reason"]["grpc INVALID_ARGUMENT (3)"], 7,
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn metrics_and_logs_are_sent_too() {
    let dir = temp_dir("signals");
    let target = grpc_receiver(Box::new(|_| 0));
    let endpoint = url("http", &target);
    let (code, res, text) = run(
        &dir,
        "metrics",
        &[
            "-e",
            &endpoint,
            "--signal",
            "metrics",
            "--count",
            "5",
            "--points-per-request",
            "30",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["items"]["acknowledged"], 150, "{text}");
    assert_eq!(res["item"], "points");
    let (code, res, text) = run(
        &dir,
        "logs",
        &[
            "-e",
            &endpoint,
            "--signal",
            "logs",
            "--count",
            "5",
            "--records-per-request",
            "20",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["items"]["acknowledged"], 100, "{text}");
    assert_eq!(target.grpc_items(), 250);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unreachable_target_gives_up_after_the_timeout() {
    let dir = temp_dir("unreachable");
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // Process start, the connection attempts' backoff and the report: well within this.
    const MARGIN: Duration = Duration::from_secs(9);
    let started = Instant::now();
    let (code, res, text) = run(
        &dir,
        "down",
        &["-e", &endpoint, "--count", "5", "--timeout", "1s"],
    );
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{text}");
    // It tries for the whole timeout (1 s without a connection), then gives up.
    assert!(
        took >= Duration::from_secs(1),
        "gave up after {took:?}\n{text}"
    );
    assert!(
        took < Duration::from_secs(1) + MARGIN,
        "took {took:?}\n{text}"
    );
    assert!(text.contains("giving up"), "{text}");
    assert!(res["connection_failures"].as_u64().unwrap() > 0, "{text}");
    assert_eq!(res["requests"]["sent"], 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn grpc_over_tls_with_a_ca_file_or_without_verification() {
    let dir = temp_dir("tls");
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    let cert_der = key.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.key_pair.serialize_der()),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let target = grpc_receiver_on(Box::new(|_| 0), Some(acceptor));
    let port = target.addr.port();

    let endpoint = format!("grpcs://localhost:{port}");
    let (code, res, text) = run(
        &dir,
        "ca",
        &[
            "-e",
            &endpoint,
            "--count",
            "3",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["accepted"], 3, "{text}");

    let endpoint = format!("https://127.0.0.1:{port}");
    let (code, res, text) = run(
        &dir,
        "insecure",
        &["-e", &endpoint, "--count", "2", "--insecure-skip-verify"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["accepted"], 2, "{text}");

    // The built-in web roots do not trust a self-signed certificate.
    let endpoint = format!("grpcs://localhost:{port}");
    let (code, res, text) = run(
        &dir,
        "untrusted",
        &["-e", &endpoint, "--count", "1", "--timeout", "1s"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(res["connection_failures"].as_u64().unwrap() > 0, "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn grpc_over_mtls_with_a_bearer_token() {
    let dir = temp_dir("mtls");
    // A CA signing the server's certificate (localhost) and the client's.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "loadgen test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |sans: Vec<String>, usage| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into()],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let cert_file = dir.join("client.pem");
    std::fs::write(&cert_file, client_cert.pem()).unwrap();
    let key_file = dir.join("client.key");
    std::fs::write(&key_file, client_key.serialize_pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    );
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.der().clone()], key_der)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let target = grpc_receiver_on(Box::new(|_| 0), Some(acceptor));
    let endpoint = format!("grpcs://localhost:{}", target.addr.port());

    let (code, res, text) = run(
        &dir,
        "mtls",
        &[
            "-e",
            &endpoint,
            "--count",
            "4",
            "--ca-file",
            ca.to_str().unwrap(),
            "--client-cert",
            cert_file.to_str().unwrap(),
            "--client-key",
            key_file.to_str().unwrap(),
            "--bearer-token",
            "loadgen-token",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["accepted"], 4, "{text}");
    assert_eq!(target.authorizations(), vec!["Bearer loadgen-token"; 4]);

    // Without the client certificate the server refuses the handshake: nothing is sent.
    let (code, res, text) = run(
        &dir,
        "no-cert",
        &[
            "-e",
            &endpoint,
            "--count",
            "1",
            "--timeout",
            "1s",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(res["requests"]["accepted"], 0, "{text}");
    assert_eq!(target.authorizations().len(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn requests_per_connection_replaces_connections_on_both_http_versions() {
    let dir = temp_dir("reconnect");
    // gRPC (HTTP/2): 2 connections, each replaced after every request.
    let grpc = grpc_receiver(Box::new(|_| 0));
    let (code, res, text) = run(
        &dir,
        "grpc",
        &[
            "-e",
            &url("http", &grpc),
            "--count",
            "8",
            "--connections",
            "2",
            "--requests-per-connection",
            "1",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["accepted"], 8, "{text}");
    // Each request had a connection of its own; the replacements of the last two may open
    // before loadgen exits.
    let opened = res["connections_opened"].as_u64().unwrap();
    assert!((8..=10).contains(&opened), "{opened} opened: {text}");
    let accepted = grpc.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(accepted >= 8, "the target accepted {accepted} connections");
    // HTTP/1.1: one connection, replaced after every third request.
    let http = http_file_exporter(&dir.join("traces.jsonl"), Box::new(|_| false));
    let (code, res, text) = run(
        &dir,
        "http",
        &[
            "-p",
            "http-protobuf",
            "-e",
            &url("http", &http),
            "--count",
            "9",
            "--requests-per-connection",
            "3",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["accepted"], 9, "{text}");
    let opened = res["connections_opened"].as_u64().unwrap();
    assert!((3..=4).contains(&opened), "{opened} opened: {text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn otlp_http_over_h2c_with_several_streams_per_connection() {
    let dir = temp_dir("h2c");
    let target = http_file_exporter_on(&dir.join("traces.jsonl"), Box::new(|_| false), true);
    let endpoint = url("http", &target);
    let (code, res, text) = run(
        &dir,
        "h2c",
        &[
            "-p",
            "http-protobuf",
            "--http2",
            "-e",
            &endpoint,
            "--count",
            "12",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(res["requests"]["accepted"], 12, "{text}");
    assert_eq!(res["concurrency"], 4, "{text}");
    assert_eq!(res["connections_opened"], 1, "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}
