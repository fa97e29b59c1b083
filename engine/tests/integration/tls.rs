//! TLS, mTLS and bearer tokens end to end (`[receivers.otlp.tls]`, `[receivers.otlp.auth]`,
//! `[exporters.NAME.tls]`), through real clients: the OpenTelemetry SDK's OTLP exporters (tonic
//! with rustls for gRPC, its hyper client with hyper-rustls for HTTP), a second shardtel exporting over
//! `https://` with a client certificate, a real Prometheus 2.42 serving remote write over TLS,
//! and rustls itself where a test needs the certificate a server presents. Certificates are
//! made per test with rcgen.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::InstrumentationScope;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use shardtel_protocol::Signal;

use crate::gen;
use crate::harness::{free_port, read_lines, spans_in, wait_until, Shardtel};
use crate::test_config::{Batch, Component, Pipeline, ReceiverAuth, ReceiverTls};

pub(crate) const TOKEN: &str = "s3cret-token-for-tests";

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA and the certificates issued by it, as PEM files in a directory of their own.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy)]
pub(crate) enum Leaf {
    /// `localhost` and 127.0.0.1, server authentication.
    Server,
    /// Client authentication.
    Client,
    /// Client authentication, expired in 2021.
    ExpiredClient,
}

impl Pki {
    /// A new CA named `name`; its certificate is `ca.pem`.
    pub(crate) fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki { dir, cert, key }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a `leaf` certificate named `name`, written to `name.pem` and `name.key`
    /// (replacing them atomically, as certificate tooling does).
    pub(crate) fn issue(&self, name: &str, leaf: Leaf) -> Pair {
        let key = KeyPair::generate().unwrap();
        let sans = match leaf {
            Leaf::Server => vec!["localhost".to_string(), "127.0.0.1".to_string()],
            Leaf::Client | Leaf::ExpiredClient => Vec::new(),
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match leaf {
            Leaf::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Leaf::Client | Leaf::ExpiredClient => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if matches!(leaf, Leaf::ExpiredClient) {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Pair {
            cert: write_atomically(self.dir.path(), &format!("{name}.pem"), &cert.pem()),
            key: write_atomically(
                self.dir.path(),
                &format!("{name}.key"),
                &key.serialize_pem(),
            ),
        }
    }
}

fn write_atomically(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn certificate_der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A rustls client config (ring) trusting `ca`, presenting `client` when given, offering
/// `alpn`.
fn rustls_client(ca: &Path, client: Option<&Pair>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(&pair.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A hyper-rustls connector over `rustls_client(ca, client, ...)`: HTTP/1.1 without ALPN, or
/// (`h2`) HTTP/2 by ALPN `h2`; `http://` URLs go out in plaintext.
pub(crate) fn connector(
    ca: &Path,
    client: Option<&Pair>,
    h2: bool,
) -> HttpsConnector<HttpConnector> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(rustls_client(ca, client, &[]))
        .https_or_http();
    if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    }
}

/// An HTTP answer read in full.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) version: http::Version,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// One request with hyper over `connector` (a runtime of its own); the answer, or the error's
/// text.
pub(crate) fn request(
    connector: HttpsConnector<HttpConnector>,
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Reply, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build::<_, Full<bytes::Bytes>>(connector);
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder.body(Full::from(body)).unwrap();
        let send = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?;
            Ok(Reply {
                status: parts.status.as_u16(),
                version: parts.version,
                headers: parts.headers,
                body: body.to_bytes().to_vec(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), send)
            .await
            .map_err(|_| "timed out".to_string())?
    })
}

/// How a test client authenticates.
#[derive(Clone)]
struct Credentials<'a> {
    ca: &'a Path,
    client: Option<&'a Pair>,
    token: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    fn new(ca: &'a Path, client: Option<&'a Pair>, token: Option<&'a str>) -> Self {
        Credentials { ca, client, token }
    }
}

/// A span with ids made from `n`, for the SDK exporters' `export`.
fn span_data(name: &str, n: u64) -> SpanData {
    let now = SystemTime::now();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(((0x7157u128 << 64) | u128::from(n)).to_be_bytes()),
            SpanId::from_bytes((0x5150_0000_0000_0000 | n).to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: name.to_string().into(),
        start_time: now,
        end_time: now,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("tls-test").build(),
    }
}

/// Exports `spans` with the SDK's gRPC exporter (tonic over rustls) to `url`; the error text
/// when the export fails.
fn export_grpc(url: &str, creds: &Credentials<'_>, spans: Vec<SpanData>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(3));
        if url.starts_with("https") {
            let ca = std::fs::read_to_string(creds.ca).unwrap();
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost");
            if let Some(pair) = creds.client {
                let cert = std::fs::read_to_string(&pair.cert).unwrap();
                let key = std::fs::read_to_string(&pair.key).unwrap();
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            builder = builder.with_tls_config(tls);
        }
        if let Some(token) = creds.token {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
            builder = builder.with_metadata(metadata);
        }
        let exporter = builder.build().map_err(|e| e.to_string())?;
        exporter.export(spans).await.map_err(|e| e.to_string())
    })
}

/// Exports `spans` with the SDK's HTTP/protobuf exporter (its hyper client over rustls) to
/// `url/v1/traces`; the error text when the export fails.
fn export_http(url: &str, creds: &Credentials<'_>, spans: Vec<SpanData>) -> Result<(), String> {
    let mut headers = HashMap::new();
    if let Some(token) = creds.token {
        headers.insert("authorization".to_string(), format!("Bearer {token}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = HyperClient::new(
            connector(creds.ca, creds.client, false),
            Duration::from_secs(3),
            None,
        );
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{url}/v1/traces"))
            .with_headers(headers)
            .with_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        exporter.export(spans).await.map_err(|e| e.to_string())
    })
}

/// Waits until the sum of `name` over the series whose labels contain `filter` satisfies
/// `holds` (cores publish their counters once a second); panics with the metrics after 10 s.
pub(crate) fn wait_for_metric(
    st: &Shardtel,
    name: &str,
    filter: &str,
    holds: impl Fn(u64) -> bool,
) {
    let counted = || crate::harness::metric_sum_in(&st.metrics(), name, filter);
    assert!(
        wait_until(10, || holds(counted())),
        "{name}{{{filter}}} is {}:\n{}",
        counted(),
        st.metrics()
    );
}

fn https(port: u16) -> String {
    format!("https://localhost:{port}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn arrived_names(st: &Shardtel) -> BTreeSet<String> {
    spans_in(&st.out()).into_iter().map(|s| s.name).collect()
}

/// A shardtel whose OTLP listeners speak TLS with `pki`'s server certificate, optionally
/// requiring client certificates of `pki`'s CA and [`TOKEN`]; spans, metrics and logs go to
/// files.
fn tls_collector(pki: &Pki, mtls: bool, token: bool) -> Shardtel {
    let server = pki.issue("server", Leaf::Server);
    Shardtel::start_config(|c| {
        c.file_pipelines().with(|c| {
            let tls = ReceiverTls::new(&server.cert, &server.key);
            c.otlp.tls = Some(if mtls {
                tls.client_ca(pki.ca_file())
            } else {
                tls
            });
            if token {
                c.otlp.auth = Some(ReceiverAuth::tokens(&[TOKEN]));
            }
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn sdk_exporters_send_over_tls_and_over_mtls_with_a_token() {
    let pki = Pki::new("tls-test CA");
    let client = pki.issue("client", Leaf::Client);
    let tls_only = tls_collector(&pki, false, false);
    let guarded = tls_collector(&pki, true, true);
    let anonymous = Credentials {
        ca: &pki.ca_file(),
        client: None,
        token: None,
    };
    let full = Credentials {
        ca: &pki.ca_file(),
        client: Some(&client),
        token: Some(TOKEN),
    };
    for (st, creds, tag) in [(&tls_only, &anonymous, "tls"), (&guarded, &full, "mtls")] {
        let grpc: Vec<_> = (0..20)
            .map(|i| span_data(&format!("{tag}-grpc-{i}"), i))
            .collect();
        export_grpc(&https(st.ports.grpc), creds, grpc).unwrap();
        let http: Vec<_> = (0..20)
            .map(|i| span_data(&format!("{tag}-http-{i}"), 100 + i))
            .collect();
        export_http(&https(st.ports.http), creds, http).unwrap();
        let expected: BTreeSet<String> = (0..20)
            .flat_map(|i| [format!("{tag}-grpc-{i}"), format!("{tag}-http-{i}")])
            .collect();
        assert!(
            wait_until(20, || arrived_names(st) == expected),
            "{tag}: arrived {:?}; log:\n{}",
            arrived_names(st),
            st.log()
        );
        for transport in ["grpc", "http"] {
            let filter = format!("transport=\"{transport}\"");
            let name = "shardtel_receiver_tls_handshakes_total";
            wait_for_metric(st, name, &filter, |n| n >= 1);
        }
    }
    // The OTLP/HTTP listener also speaks HTTP/2 when the client picks it by ALPN.
    let body = gen::request(vec![gen::span(7, 1, 1)]).encode_to_vec();
    let reply = request(
        connector(&pki.ca_file(), Some(&client), true),
        "POST",
        &format!("{}/v1/traces", https(guarded.ports.http)),
        &[
            ("content-type", "application/x-protobuf".to_string()),
            ("authorization", format!("Bearer {TOKEN}")),
        ],
        body,
    )
    .unwrap();
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}

#[test]
fn refused_clients_get_the_right_error_and_nothing_is_written() {
    let pki = Pki::new("tls-test CA");
    let client = pki.issue("client", Leaf::Client);
    let expired = pki.issue("expired", Leaf::ExpiredClient);
    let rogue_ca = Pki::new("someone else's CA");
    let rogue = rogue_ca.issue("rogue", Leaf::Client);
    let st = tls_collector(&pki, true, true);
    let ca = pki.ca_file();
    let creds = |client, token| Credentials::new(&ca, client, token);
    let (client, expired, rogue) = (&client, &expired, &rogue);

    // TLS refusals: by the handshake, counted by reason.
    for (case, who, reason, alert) in [
        (
            "no client certificate",
            creds(None, Some(TOKEN)),
            "no_client_cert",
            "CertificateRequired",
        ),
        (
            "untrusted client certificate",
            creds(Some(rogue), Some(TOKEN)),
            "bad_client_cert",
            "UnknownCA",
        ),
        (
            "expired client certificate",
            creds(Some(expired), Some(TOKEN)),
            "expired_client_cert",
            "CertificateExpired",
        ),
    ] {
        let grpc = export_grpc(&https(st.ports.grpc), &who, vec![span_data(case, 1)]);
        assert!(grpc.is_err(), "{case}: gRPC export succeeded");
        let http = export_http(&https(st.ports.http), &who, vec![span_data(case, 2)]);
        assert!(http.is_err(), "{case}: HTTP export succeeded");
        for transport in ["grpc", "http"] {
            let filter = format!("transport=\"{transport}\",reason=\"{reason}\"");
            let name = "shardtel_receiver_tls_handshake_failures_total";
            wait_for_metric(&st, name, &filter, |n| n >= 1);
        }
        // The client learns why: the server's alert reaches rustls.
        let error = direct_handshake_error(st.ports.http, &who);
        assert_eq!(error, format!("received fatal alert: {alert}"), "{case}");
    }

    // Token refusals: 401 / UNAUTHENTICATED, counted by reason.
    for (case, token, reason) in [
        ("wrong token", Some("not-the-token"), "wrong"),
        ("missing token", None, "missing"),
    ] {
        let who = creds(Some(client), token);
        let grpc = export_grpc(&https(st.ports.grpc), &who, vec![span_data(case, 3)]);
        let error = grpc.expect_err(case);
        assert!(error.contains("Unauthenticated"), "{case}: {error}");
        let http = export_http(&https(st.ports.http), &who, vec![span_data(case, 4)]);
        let error = http.expect_err(case);
        assert!(error.contains("401"), "{case}: {error}");
        // One refusal per transport (the clients do not retry UNAUTHENTICATED or 401).
        for transport in ["grpc", "http"] {
            let filter = format!("transport=\"{transport}\",reason=\"{reason}\"");
            wait_for_metric(&st, "shardtel_receiver_auth_failures_total", &filter, |n| {
                n == 1
            });
        }
        // The HTTP answer: 401, the challenge, and a google.rpc.Status with code 16, in the
        // request's format.
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(token) = token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let reply = request(
            connector(&ca, Some(client), false),
            "POST",
            &format!("{}/v1/traces", https(st.ports.http)),
            &headers,
            br#"{"resourceSpans":[]}"#.to_vec(),
        )
        .unwrap();
        assert_eq!(reply.status, 401, "{case}");
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["code"], 16, "{case}: {body}");
        assert!(!body.to_string().contains("not-the-token"), "{body}");
    }
    assert!(
        !st.log().contains("not-the-token") && !st.log().contains(TOKEN),
        "a token reached the log:\n{}",
        st.log()
    );

    // Plaintext to the TLS ports: HTTP/1.1 gets a 400 that says why, gRPC (h2c) is closed.
    let plain = Credentials {
        ca: &ca,
        client: None,
        token: Some(TOKEN),
    };
    let http = export_http(
        &format!("http://localhost:{}", st.ports.http),
        &plain,
        vec![span_data("plaintext", 5)],
    );
    assert!(http.expect_err("plaintext HTTP").contains("400"));
    let grpc = export_grpc(
        &format!("http://localhost:{}", st.ports.grpc),
        &plain,
        vec![span_data("plaintext", 6)],
    );
    assert!(grpc.is_err(), "plaintext gRPC succeeded");
    let response = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/traces", st.ports.http))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("https://"));
    for transport in ["grpc", "http"] {
        let filter = format!("transport=\"{transport}\",reason=\"plaintext\"");
        let name = "shardtel_receiver_tls_handshake_failures_total";
        wait_for_metric(&st, name, &filter, |n| n >= 1);
    }

    // Nothing of the above was written: once a good request arrived, it is all there is.
    let good = Credentials {
        ca: &ca,
        client: Some(client),
        token: Some(TOKEN),
    };
    export_grpc(&https(st.ports.grpc), &good, vec![span_data("good", 9)]).unwrap();
    assert!(
        wait_until(10, || !arrived_names(&st).is_empty()),
        "the good span did not arrive; log:\n{}",
        st.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        arrived_names(&st),
        BTreeSet::from(["good".to_string()]),
        "refused requests were written"
    );
}

/// A TLS handshake and one HTTP/1.1 request with rustls directly (`who`'s CA and client
/// certificate); the error rustls reports.
fn direct_handshake_error(port: u16, who: &Credentials<'_>) -> String {
    let config = Arc::new(rustls_client(who.ca, who.client, &[b"http/1.1"]));
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = "GET /v1/traces HTTP/1.1\r\nhost: localhost\r\n\r\n";
    if let Err(e) = tls.write_all(request.as_bytes()) {
        return e.to_string();
    }
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Err(e) => e.to_string(),
        Ok(_) => format!(
            "no error; the server answered {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// One TLS connection that keeps its session, for HTTP/1.1 requests (keep-alive).
struct TlsConnection {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsConnection {
    fn open(port: u16, ca: &Path) -> TlsConnection {
        let config = Arc::new(rustls_client(ca, None, &[b"http/1.1"]));
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        TlsConnection { stream }
    }

    /// The certificate the server presented (DER).
    fn server_certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// POSTs `body` to `/v1/traces`; the response status.
    fn post_traces(&mut self, body: &[u8]) -> u16 {
        self.post_traces_head(body)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// POSTs `body` to `/v1/traces`; the response head.
    fn post_traces_head(&mut self, body: &[u8]) -> String {
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
        self.stream.flush().unwrap();
        let mut response = Vec::new();
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            let n = self.stream.read(&mut byte).unwrap();
            assert_eq!(n, 1, "connection closed mid-response");
            response.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&response).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut rest = vec![0u8; length];
        self.stream.read_exact(&mut rest).unwrap();
        head
    }
}

#[test]
fn rotated_certificates_reach_new_connections_and_open_ones_keep_working() {
    let pki = Pki::new("tls-test CA");
    let first = pki.issue("server", Leaf::Server);
    let st = Shardtel::start_config(|c| {
        c.file_pipelines().with(|c| {
            c.otlp.tls = Some(
                ReceiverTls::new(&first.cert, &first.key).reload_interval(Duration::from_secs(1)),
            );
        })
    });
    let before = certificate_der(&first.cert);
    let mut open = TlsConnection::open(st.ports.http, &pki.ca_file());
    assert_eq!(open.server_certificate(), before);
    let request = |n| gen::request(vec![gen::span(9, n, 1)]).encode_to_vec();
    assert_eq!(open.post_traces(&request(1)), 200);

    // Replace both files (same names, new key), as a renewal does.
    let renewed = pki.issue("server", Leaf::Server);
    assert_eq!(renewed.cert, first.cert);
    let after = certificate_der(&renewed.cert);
    assert_ne!(after, before);
    let mut presented = Vec::new();
    assert!(
        wait_until(15, || {
            presented = TlsConnection::open(st.ports.http, &pki.ca_file()).server_certificate();
            presented == after
        }),
        "new connections still get the old certificate; log:\n{}",
        st.log()
    );
    // The connection opened before the rotation carries on with its session.
    assert_eq!(open.post_traces(&request(2)), 200);
    assert_eq!(open.server_certificate(), before);
    let mut fresh = TlsConnection::open(st.ports.http, &pki.ca_file());
    assert_eq!(fresh.post_traces(&request(3)), 200);
    assert!(
        wait_until(10, || spans_in(&st.out()).len() == 3),
        "spans: {}",
        spans_in(&st.out()).len()
    );
    assert!(st.log().contains("reloaded"), "log:\n{}", st.log());
}

#[test]
fn a_tls_connection_over_the_limit_completes_its_handshake_and_reads_a_retryable_refusal() {
    let pki = Pki::new("tls-test CA");
    let server = pki.issue("server", Leaf::Server);
    // One core, so that the limit of one connection is exact.
    let st = Shardtel::start_config(|c| {
        c.file_pipelines().with(|c| {
            c.engine.cores = crate::test_config::Cores::List(vec![0]);
            c.otlp.max_connections = Some(1);
            c.otlp.tls = Some(ReceiverTls::new(&server.cert, &server.key));
        })
    });
    let body = gen::request(vec![gen::span(5, 1, 1)]).encode_to_vec();
    let mut held = TlsConnection::open(st.ports.http, &pki.ca_file());
    assert_eq!(held.post_traces(&body), 200);
    let mut over = TlsConnection::open(st.ports.http, &pki.ca_file());
    let head = over.post_traces_head(&body).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // The held connection carries on.
    assert_eq!(held.post_traces(&body), 200);
    wait_for_metric(
        &st,
        "shardtel_receiver_refused_connections_total",
        "transport=\"http\",answered=\"true\"",
        |n| n == 1,
    );
    wait_for_metric(&st, "shardtel_receiver_tls_handshakes_total", "", |n| {
        n == 2
    });
}

#[test]
fn a_shardtel_exports_over_https_with_a_client_certificate_to_a_shardtel_with_mtls() {
    let pki = Pki::new("tls-test CA");
    let gateway_client = pki.issue("gateway-client", Leaf::Client);
    let downstream = tls_collector(&pki, true, true);
    let ca = pki.ca_file();
    let authorization = format!("Bearer {TOKEN}");
    let with_tls = |exporter: Component| {
        exporter
            .tls(&ca, Some((&gateway_client.cert, &gateway_client.key)))
            .set("headers.authorization", authorization.as_str())
            .batch(Batch::timeout(Duration::from_millis(50)))
    };
    let upstream = Shardtel::start_config(|c| {
        c.exporter(
            "tempo",
            with_tls(Component::otlp(&https(downstream.ports.grpc))),
        )
        .exporter(
            "gateway",
            with_tls(Component::otlphttp(&https(downstream.ports.http))),
        )
        .traces(Pipeline::otlp_to(&["tempo"]))
        .logs(Pipeline::otlp_to(&["gateway"]))
    });
    let spans: Vec<_> = (0..30).map(|i| gen::span(3, i, i)).collect();
    let expected: BTreeSet<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
    upstream.post_traces(&gen::request(spans));
    upstream.post_accepted(Signal::Logs, logs_request(&["first", "second"]));
    assert!(
        wait_until(20, || {
            let arrived: BTreeSet<String> = spans_in(&downstream.out())
                .iter()
                .map(|s| hex(&s.span_id))
                .collect();
            arrived == expected
        }),
        "spans over https (gRPC) did not all arrive; upstream log:\n{}\ndownstream log:\n{}",
        upstream.log(),
        downstream.log()
    );
    assert!(
        wait_until(20, || {
            let lines = read_lines(&downstream.out(), "logs");
            lines.len() == 1 && lines[0].1.contains("first") && lines[0].1.contains("second")
        }),
        "logs over https (HTTP) did not arrive; upstream log:\n{}\ndownstream log:\n{}",
        upstream.log(),
        downstream.log()
    );
    for transport in ["grpc", "http"] {
        let filter = format!("transport=\"{transport}\"");
        let name = "shardtel_receiver_tls_handshakes_total";
        wait_for_metric(&downstream, name, &filter, |n| n >= 1);
    }
    let refused = "shardtel_receiver_auth_failures_total";
    wait_for_metric(&downstream, refused, "", |n| n == 0);
}

fn logs_request(bodies: &[&str]) -> Vec<u8> {
    let records = bodies
        .iter()
        .map(|b| LogRecord {
            time_unix_nano: now_nanos(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(b.to_string())),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Prometheus over TLS

/// Debian's Prometheus 2.42 with TLS and client certificates on a free port (`--web.config.file`
/// with `tls_server_config`), remote write on; killed when dropped.
struct TlsPrometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsPrometheus {
    fn start(server: &Pair, ca: &Path) -> TlsPrometheus {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web.yml");
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
                server.cert.display(),
                server.key.display(),
                ca.display()
            ),
        )
        .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package) runs");
        TlsPrometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for TlsPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_remote_write_over_https_with_a_client_certificate() {
    let pki = Pki::new("tls-test CA");
    let server = pki.issue("prometheus", Leaf::Server);
    let client = pki.issue("shardtel", Leaf::Client);
    let prometheus = TlsPrometheus::start(&server, &pki.ca_file());
    let base = format!("https://127.0.0.1:{}", prometheus.port);
    let get = |path: &str, client: Option<&Pair>| {
        let connector = connector(&pki.ca_file(), client, false);
        request(connector, "GET", &format!("{base}{path}"), &[], Vec::new())
    };
    assert!(
        wait_until(30, || get("/-/ready", Some(&client))
            .is_ok_and(|r| r.status == 200)),
        "prometheus not ready over TLS; its log:\n{}",
        prometheus.log()
    );
    // Without a client certificate Prometheus refuses the connection.
    assert!(get("/-/ready", None).is_err());

    let st = Shardtel::start_config(|c| {
        c.exporter(
            "prometheus",
            Component::prometheus_remote_write(&format!("{base}/api/v1/write"))
                .tls(&pki.ca_file(), Some((&client.cert, &client.key)))
                .batch(Batch::timeout(Duration::from_millis(50))),
        )
        .metrics(Pipeline::otlp_to(&["prometheus"]))
    });
    let t = now_nanos();
    let gauge = Metric {
        name: "tls_test_temperature".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: t,
                value: Some(number_data_point::Value::AsDouble(42.5)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![gauge],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    st.post_accepted(Signal::Metrics, request.encode_to_vec());
    let query = format!(
        "/api/v1/query?query=tls_test_temperature&time={:.3}",
        t as f64 / 1e9
    );
    let value = || -> Option<f64> {
        let reply = get(&query, Some(&client)).ok()?;
        let response: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        response["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    };
    assert!(
        wait_until(20, || value() == Some(42.5)),
        "the sample did not arrive: {:?}; shardtel log:\n{}\nprometheus log:\n{}",
        value(),
        st.log(),
        prometheus.log()
    );
    let sent = "shardtel_exporter_sent_metric_points_total";
    wait_for_metric(&st, sent, "exporter=\"prometheus\"", |n| n == 1);
}

/// An OTLP/HTTP client over TLS that chose `h2` (as Go's exporters do) gets the gRPC
/// listener's connection clock: its SETTINGS ACK and PING answers start no request-head
/// deadline, and once idle for `idle_timeout` it is told `GOAWAY` rather than dropped at
/// `read_header_timeout`.
#[test]
fn an_idle_h2_client_of_the_https_listener_gets_goaway_at_idle_timeout() {
    use crate::h2frames::{frame, GOAWAY, PREFACE, SETTINGS};
    const PING: u8 = 6;
    const ACK: u8 = 1;
    let (read_header, idle) = (Duration::from_millis(500), Duration::from_millis(2000));
    let pki = Pki::new("tls-test CA");
    let server = pki.issue("server", Leaf::Server);
    let st = Shardtel::start_config(|c| {
        c.file_pipelines().with(|c| {
            c.otlp.tls = Some(ReceiverTls::new(&server.cert, &server.key));
            c.otlp.read_header_timeout = Some(read_header);
            c.otlp.idle_timeout = Some(idle);
        })
    });
    let config = Arc::new(rustls_client(&pki.ca_file(), None, &[b"h2"]));
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", st.ports.http)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    let since = std::time::Instant::now();
    tls.write_all(PREFACE).unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    tls.flush().unwrap();
    // Answer what the server sends (its SETTINGS, its keep-alive pings) until its GOAWAY.
    let (mut settings_acked, mut pings) = (false, 0);
    let goaway_after = loop {
        let mut header = [0u8; 9];
        if let Err(e) = tls.read_exact(&mut header) {
            panic!(
                "closed without GOAWAY after {:?} ({e}; {pings} pings answered); log:\n{}",
                since.elapsed(),
                st.log()
            );
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).unwrap();
        match (header[3], header[4] & ACK) {
            (GOAWAY, _) => break since.elapsed(),
            (SETTINGS, 0) => {
                tls.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
                settings_acked = true;
            }
            (PING, 0) => {
                tls.write_all(&frame(PING, ACK, 0, &payload)).unwrap();
                pings += 1;
            }
            _ => {}
        }
        tls.flush().unwrap();
    };
    assert!(settings_acked);
    assert!(
        goaway_after >= idle - Duration::from_millis(50)
            && goaway_after <= idle + Duration::from_millis(1500),
        "GOAWAY after {goaway_after:?} (idle_timeout {idle:?}, {pings} pings answered)"
    );
}
