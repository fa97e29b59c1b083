//! Handshakes: ALPN, server names, mTLS accepted and refused by reason, plaintext and idle
//! clients, the lowest version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shardtel_config::{ClientTlsConfig, ServerTlsConfig, TlsVersion};
use shardtel_tls::{alpn, ClientTls, HandshakeFailureReason, ServerTls, PLAINTEXT_HTTP_RESPONSE};

use crate::support::{echo_server, run, tcp, temp_dir, wait_until, write, Ca};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with `client` to `addr` as `host`, sends `ping` and expects it echoed back.
async fn ping(client: &ClientTls, addr: std::net::SocketAddr, host: &str) -> std::io::Result<()> {
    let name = client.server_name(host).unwrap();
    let mut stream = client.connect(tcp(addr).await, name).await?;
    stream.write_all(b"ping").await?;
    stream.flush().await?;
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

fn client_with_ca(ca_file: &std::path::Path, alpn: &[&[u8]]) -> ClientTls {
    let config = ClientTlsConfig {
        ca_file: Some(ca_file.to_path_buf()),
        ..ClientTlsConfig::default()
    };
    ClientTls::new("exporters.test.tls", &config, alpn).unwrap()
}

#[test]
fn handshake_negotiates_alpn_and_verifies_the_server_name() {
    let dir = temp_dir("alpn");
    let ca = Ca::new("test ca");
    let server = ca.server("server");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let config = ServerTlsConfig::new(
        write(&dir, "server.pem", &server.cert_pem()),
        write(&dir, "server.key", &server.key_pem()),
    );
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2, alpn::HTTP1]).unwrap();
        assert!(!tls.requires_client_cert());
        let (addr, served) = echo_server(tls, TIMEOUT);

        // gRPC offers h2 only; an HTTP client may offer http/1.1 only.
        let grpc = client_with_ca(&ca_file, &[alpn::H2]);
        ping(&grpc, addr, "localhost").await.unwrap();
        let http1 = client_with_ca(&ca_file, &[alpn::HTTP1]);
        ping(&http1, addr, "localhost").await.unwrap();
        // The certificate names 127.0.0.1 too: an IP endpoint verifies against it.
        ping(&grpc, addr, "127.0.0.1").await.unwrap();
        assert_eq!(
            served.borrow().alpn,
            [
                Some(b"h2".to_vec()),
                Some(b"http/1.1".to_vec()),
                Some(b"h2".to_vec())
            ]
        );

        // server_name replaces the endpoint's host, for SNI and verification.
        let config = ClientTlsConfig {
            ca_file: Some(ca_file.clone()),
            server_name: Some("localhost".into()),
            ..ClientTlsConfig::default()
        };
        let named = ClientTls::new("exporters.named.tls", &config, &[alpn::H2]).unwrap();
        ping(&named, addr, "10.1.2.3").await.unwrap();
        let config = ClientTlsConfig {
            server_name: Some("tempo.internal".into()),
            ..config
        };
        let wrong = ClientTls::new("exporters.wrong.tls", &config, &[alpn::H2]).unwrap();
        let error = ping(&wrong, addr, "localhost").await.unwrap_err();
        assert!(error.to_string().contains("certificate"), "{error}");

        // A client offering only protocols the server does not speak is refused.
        let h3 = client_with_ca(&ca_file, &[b"h3"]);
        assert!(ping(&h3, addr, "localhost").await.is_err());
        wait_until(TIMEOUT, "two failures", || {
            served.borrow().failures.len() == 2
        })
        .await;
        let mut failures = served.borrow().failures.clone();
        failures.sort_by_key(|r| r.index());
        assert_eq!(
            failures,
            [
                HandshakeFailureReason::Protocol,
                HandshakeFailureReason::ClientAlert
            ],
            "{:?}",
            served.borrow().failure_messages
        );
        assert_eq!(served.borrow().connections, 4);
    });
}

#[test]
fn mtls_accepts_a_good_client_certificate_and_refuses_others_by_reason() {
    let dir = temp_dir("mtls");
    let ca = Ca::new("test ca");
    let other_ca = Ca::new("someone else's ca");
    let server = ca.server("server");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let config = ServerTlsConfig {
        client_ca_file: Some(ca_file.clone()),
        ..ServerTlsConfig::new(
            write(&dir, "server.pem", &server.cert_pem()),
            write(&dir, "server.key", &server.key_pem()),
        )
    };
    let mut clients = Vec::new();
    for (name, leaf) in [
        ("good", ca.client("good")),
        ("untrusted", other_ca.client("untrusted")),
        ("expired", ca.expired_client("expired")),
    ] {
        let cert = write(&dir, &format!("{name}.pem"), &leaf.cert_pem());
        let key = write(&dir, &format!("{name}.key"), &leaf.key_pem());
        clients.push((cert, key));
    }
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        assert!(tls.requires_client_cert());
        let (addr, served) = echo_server(tls, TIMEOUT);
        let client = |cert_key: Option<&(std::path::PathBuf, std::path::PathBuf)>| {
            let config = ClientTlsConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: cert_key.map(|(c, _)| c.clone()),
                key_file: cert_key.map(|(_, k)| k.clone()),
                ..ClientTlsConfig::default()
            };
            ClientTls::new("exporters.test.tls", &config, &[alpn::H2]).unwrap()
        };

        ping(&client(Some(&clients[0])), addr, "localhost")
            .await
            .unwrap();
        assert_eq!(served.borrow().client_certs, [true]);

        // Refused: no certificate, one from an unknown CA, an expired one. With TLS 1.3 the
        // client finishes its side first; the refusal arrives as the first read fails, with
        // the alert that says why.
        use rustls::AlertDescription as Alert;
        let expected = [
            (
                None,
                HandshakeFailureReason::NoClientCert,
                Alert::CertificateRequired,
            ),
            (
                Some(&clients[1]),
                HandshakeFailureReason::BadClientCert,
                Alert::UnknownCA,
            ),
            (
                Some(&clients[2]),
                HandshakeFailureReason::ExpiredClientCert,
                Alert::CertificateExpired,
            ),
        ];
        for (i, (cert_key, reason, alert)) in expected.into_iter().enumerate() {
            let error = ping(&client(cert_key), addr, "localhost")
                .await
                .unwrap_err();
            let cause = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>());
            assert_eq!(cause, Some(&rustls::Error::AlertReceived(alert)), "{error}");
            wait_until(TIMEOUT, "the refusal", || {
                served.borrow().failures.len() == i + 1
            })
            .await;
            assert_eq!(
                served.borrow().failures[i],
                reason,
                "{:?}",
                served.borrow().failure_messages
            );
        }
        assert_eq!(served.borrow().connections, 1);
    });
}

#[test]
fn plaintext_and_garbage_to_a_tls_port_are_refused_and_classified() {
    let dir = temp_dir("plaintext");
    let ca = Ca::new("test ca");
    let server = ca.server("server");
    let config = ServerTlsConfig::new(
        write(&dir, "server.pem", &server.cert_pem()),
        write(&dir, "server.key", &server.key_pem()),
    );
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2, alpn::HTTP1]).unwrap();
        let (addr, served) = echo_server(tls, TIMEOUT);

        // HTTP/1: told why, then closed.
        let mut stream = tcp(addr).await;
        stream
            .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, PLAINTEXT_HTTP_RESPONSE);

        // h2c (gRPC without TLS): closed. The preface may arrive in pieces.
        let mut stream = tcp(addr).await;
        stream.write_all(b"PR").await.unwrap();
        glommio::timer::sleep(Duration::from_millis(20)).await;
        stream
            .write_all(b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        assert!(answer.is_empty());

        // Not TLS, not HTTP.
        let mut stream = tcp(addr).await;
        stream.write_all(&[0, 1, 2, 3]).await.unwrap();
        let _ = stream.read_to_end(&mut Vec::new()).await;

        // A client that connects and leaves.
        drop(tcp(addr).await);

        wait_until(TIMEOUT, "four failures", || {
            served.borrow().failures.len() == 4
        })
        .await;
        let served = served.borrow();
        assert_eq!(
            served.failures,
            [
                HandshakeFailureReason::Plaintext,
                HandshakeFailureReason::Plaintext,
                HandshakeFailureReason::Protocol,
                HandshakeFailureReason::Closed,
            ]
        );
        assert!(
            served.failure_messages[2].contains("first byte 0x00 does not start a TLS handshake"),
            "{:?}",
            served.failure_messages
        );
        assert_eq!(served.connections, 0);
    });
}

#[test]
fn an_idle_client_times_out() {
    let dir = temp_dir("idle");
    let ca = Ca::new("test ca");
    let server = ca.server("server");
    let config = ServerTlsConfig::new(
        write(&dir, "server.pem", &server.cert_pem()),
        write(&dir, "server.key", &server.key_pem()),
    );
    run(move || async move {
        let timeout = Duration::from_millis(300);
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        let (addr, served) = echo_server(tls, timeout);
        let started = Instant::now();
        let idle = tcp(addr).await;
        // A client that sent half a ClientHello and stalled times out the same way.
        let mut stalled = tcp(addr).await;
        stalled.write_all(&[0x16, 0x03, 0x01, 0x01]).await.unwrap();
        wait_until(TIMEOUT, "two timeouts", || {
            served.borrow().failures.len() == 2
        })
        .await;
        let elapsed = started.elapsed();
        assert!(elapsed >= timeout, "gave up after {elapsed:?}");
        assert_eq!(
            served.borrow().failures,
            [
                HandshakeFailureReason::Timeout,
                HandshakeFailureReason::Timeout
            ]
        );
        drop((idle, stalled));
    });
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client() {
    let dir = temp_dir("version");
    let ca = Ca::new("test ca");
    let server = ca.server("server");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let config = ServerTlsConfig {
        min_version: TlsVersion::Tls13,
        ..ServerTlsConfig::new(
            write(&dir, "server.pem", &server.cert_pem()),
            write(&dir, "server.key", &server.key_pem()),
        )
    };
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        let (addr, served) = echo_server(tls, TIMEOUT);
        // A TLS 1.2-only client, built directly with rustls.
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&ca_file).unwrap();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls12 = rustls::ClientConfig::builder_with_provider(shardtel_tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = futures_rustls::TlsConnector::from(Arc::new(tls12));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        assert!(connector.connect(name, tcp(addr).await).await.is_err());
        // TLS 1.3 clients are served.
        ping(&client_with_ca(&ca_file, &[alpn::H2]), addr, "localhost")
            .await
            .unwrap();
        wait_until(TIMEOUT, "the refusal", || {
            served.borrow().failures.len() == 1
        })
        .await;
        assert_eq!(served.borrow().failures, [HandshakeFailureReason::Protocol]);
        assert_eq!(served.borrow().connections, 1);
    });
}

#[test]
fn insecure_skip_verify_accepts_an_unknown_server_and_ca_file_does_not() {
    let dir = temp_dir("insecure");
    let unknown = Ca::new("unknown ca");
    let server = unknown.server("server");
    let trusted = Ca::new("trusted ca");
    let trusted_file = write(&dir, "trusted.pem", &trusted.pem());
    let config = ServerTlsConfig::new(
        write(&dir, "server.pem", &server.cert_pem()),
        write(&dir, "server.key", &server.key_pem()),
    );
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        let (addr, _served) = echo_server(tls, TIMEOUT);
        let insecure = ClientTlsConfig {
            insecure_skip_verify: true,
            ..ClientTlsConfig::default()
        };
        let insecure = ClientTls::new("exporters.insecure.tls", &insecure, &[alpn::H2]).unwrap();
        ping(&insecure, addr, "any.name").await.unwrap();
        let error = ping(
            &client_with_ca(&trusted_file, &[alpn::H2]),
            addr,
            "localhost",
        )
        .await
        .unwrap_err();
        let cause = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                cause,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{error}"
        );
    });
}

#[test]
fn bad_files_fail_at_start_naming_the_file() {
    let dir = temp_dir("start");
    let ca = Ca::new("test ca");
    let server = ca.server("server");
    let other = ca.server("other");
    let cert = write(&dir, "server.pem", &server.cert_pem());
    let wrong_key = write(&dir, "other.key", &other.key_pem());
    let error = ServerTls::new(&ServerTlsConfig::new(&cert, &wrong_key), &[alpn::H2]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: the private key does not match the certificate in {}",
            wrong_key.display(),
            cert.display()
        )
    );
    let missing = dir.join("missing.pem");
    let config = ClientTlsConfig {
        ca_file: Some(missing.clone()),
        ..ClientTlsConfig::default()
    };
    let error = ClientTls::new("exporters.x.tls", &config, &[alpn::H2]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{error}"
    );
}
