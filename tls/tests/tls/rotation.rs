//! Certificate rotation: files replaced while serving; new handshakes see the new files,
//! established connections keep working, a bad new file changes nothing.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shardtel_config::{ClientTlsConfig, ServerTlsConfig};
use shardtel_tls::{alpn, ClientStream, ClientTls, HandshakeFailureReason, ServerTls};

use crate::support::{echo_server, run, tcp, temp_dir, wait_until, write, Ca};

const TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD: Duration = Duration::from_millis(200);

async fn open(
    client: &ClientTls,
    addr: SocketAddr,
) -> std::io::Result<ClientStream<glommio::net::TcpStream>> {
    let name = client.server_name("localhost").unwrap();
    client.connect(tcp(addr).await, name).await
}

/// The DER of the certificate the server presented on `stream`.
fn presented(stream: &ClientStream<glommio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn echo(stream: &mut ClientStream<glommio::net::TcpStream>, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0u8; message.len()];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, message);
}

#[test]
fn a_rotated_server_certificate_is_used_by_new_connections_only() {
    let dir = temp_dir("rotate-server");
    let ca = Ca::new("test ca");
    let first = ca.server("first");
    let second = ca.server("second");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let cert = write(&dir, "server.pem", &first.cert_pem());
    let key = write(&dir, "server.key", &first.key_pem());
    let config = ServerTlsConfig {
        reload_interval: Some(RELOAD),
        ..ServerTlsConfig::new(&cert, &key)
    };
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        let (addr, served) = echo_server(tls.clone(), TIMEOUT);
        let client_config = ClientTlsConfig {
            ca_file: Some(ca_file),
            ..ClientTlsConfig::default()
        };
        let client = ClientTls::new("exporters.test.tls", &client_config, &[alpn::H2]).unwrap();

        let mut established = open(&client, addr).await.unwrap();
        assert_eq!(presented(&established), first.der());
        echo(&mut established, b"before").await;

        // Replace the key, then the certificate (a reload in between sees a mismatch, keeps
        // the old pair, and picks up the new one at the next interval).
        write(&dir, "server.key", &second.key_pem());
        write(&dir, "server.pem", &second.cert_pem());
        let started = std::time::Instant::now();
        let mut rotated = None;
        while rotated.is_none() {
            assert!(
                started.elapsed() < TIMEOUT,
                "the new certificate never appeared"
            );
            glommio::timer::sleep(RELOAD / 4).await;
            let stream = open(&client, addr).await.unwrap();
            if presented(&stream) == second.der() {
                rotated = Some(stream);
            }
        }
        let mut rotated = rotated.unwrap();
        echo(&mut rotated, b"new connection").await;
        // The connection made before the rotation still works, with the old certificate.
        echo(&mut established, b"after").await;
        assert_eq!(presented(&established), first.der());

        // A broken certificate file keeps the current pair.
        write(
            &dir,
            "server.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64\n",
        );
        glommio::timer::sleep(RELOAD * 3).await;
        let stream = open(&client, addr).await.unwrap();
        assert_eq!(presented(&stream), second.der());
        assert_eq!(tls.current().alpn_protocols, [b"h2".to_vec()]);
        assert!(served.borrow().failures.is_empty());
    });
}

#[test]
fn a_rotated_client_ca_changes_which_client_certificates_are_accepted() {
    let dir = temp_dir("rotate-ca");
    let old_ca = Ca::new("old client ca");
    let new_ca = Ca::new("new client ca");
    let server_ca = Ca::new("server ca");
    let server = server_ca.server("server");
    let client_ca_file = write(&dir, "clients.pem", &old_ca.pem());
    let config = ServerTlsConfig {
        client_ca_file: Some(client_ca_file),
        reload_interval: Some(RELOAD),
        ..ServerTlsConfig::new(
            write(&dir, "server.pem", &server.cert_pem()),
            write(&dir, "server.key", &server.key_pem()),
        )
    };
    let server_ca_file = write(&dir, "server-ca.pem", &server_ca.pem());
    let mut clients = Vec::new();
    for (name, leaf) in [("old", old_ca.client("old")), ("new", new_ca.client("new"))] {
        clients.push(ClientTlsConfig {
            ca_file: Some(server_ca_file.clone()),
            cert_file: Some(write(&dir, &format!("{name}.pem"), &leaf.cert_pem())),
            key_file: Some(write(&dir, &format!("{name}.key"), &leaf.key_pem())),
            ..ClientTlsConfig::default()
        });
    }
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        let (addr, served) = echo_server(tls, TIMEOUT);
        let old = ClientTls::new("exporters.old.tls", &clients[0], &[alpn::H2]).unwrap();
        let new = ClientTls::new("exporters.new.tls", &clients[1], &[alpn::H2]).unwrap();
        let mut stream = open(&old, addr).await.unwrap();
        echo(&mut stream, b"old ca").await;

        write(&dir, "clients.pem", &new_ca.pem());
        let started = std::time::Instant::now();
        loop {
            assert!(
                started.elapsed() < TIMEOUT,
                "the new client CA was never used"
            );
            let mut candidate = open(&new, addr).await.unwrap();
            candidate.write_all(b"new ca").await.unwrap();
            let _ = candidate.flush().await;
            let mut buf = [0u8; 6];
            if candidate.read_exact(&mut buf).await.is_ok() {
                break;
            }
            glommio::timer::sleep(RELOAD / 4).await;
        }
        // Now the old CA's clients are refused; the established connection carries on.
        let failures = served.borrow().failures.len();
        let mut refused = open(&old, addr).await.unwrap();
        let _ = refused.write_all(b"x").await;
        let _ = refused.flush().await;
        assert!(refused.read_exact(&mut [0u8; 1]).await.is_err());
        wait_until(TIMEOUT, "the refusal", || {
            served.borrow().failures.len() > failures
        })
        .await;
        assert_eq!(
            served.borrow().failures.last(),
            Some(&HandshakeFailureReason::BadClientCert)
        );
        echo(&mut stream, b"still here").await;
    });
}

#[test]
fn a_client_reloads_its_ca_file() {
    let dir = temp_dir("rotate-client");
    let old_ca = Ca::new("old server ca");
    let new_ca = Ca::new("new server ca");
    let server = new_ca.server("server");
    let config = ServerTlsConfig::new(
        write(&dir, "server.pem", &server.cert_pem()),
        write(&dir, "server.key", &server.key_pem()),
    );
    let ca_file = write(&dir, "ca.pem", &old_ca.pem());
    let client_config = ClientTlsConfig {
        ca_file: Some(ca_file),
        reload_interval: Some(RELOAD),
        ..ClientTlsConfig::default()
    };
    run(move || async move {
        let tls = ServerTls::new(&config, &[alpn::H2]).unwrap();
        let (addr, _served) = echo_server(tls, TIMEOUT);
        let client = ClientTls::new("exporters.test.tls", &client_config, &[alpn::H2]).unwrap();
        assert!(
            open(&client, addr).await.is_err(),
            "the old CA does not know this server"
        );
        write(&dir, "ca.pem", &new_ca.pem());
        let started = std::time::Instant::now();
        loop {
            assert!(
                started.elapsed() < TIMEOUT,
                "the new CA file was never used"
            );
            if let Ok(mut stream) = open(&client, addr).await {
                echo(&mut stream, b"trusted now").await;
                break;
            }
            glommio::timer::sleep(RELOAD / 4).await;
        }
    });
}
