//! Test helpers: certificates made with rcgen, files in a per-test directory, glommio executors,
//! a TLS echo server.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use shardtel_tls::{HandshakeFailureReason, ServerTls};

/// Runs `test` on a fresh glommio executor.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(test)
        .expect("glommio executor starts")
        .join()
        .expect("test executor thread");
}

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shardtel-tls-test-{}-{name}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Writes `content` to `dir/name` atomically (a new file renamed over the old one, as
/// certificate tooling does) and returns the path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A certificate authority.
pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl Leaf {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The DER of the certificate, to compare with what a peer presented.
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
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
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, name: &str) -> Leaf {
        self.leaf(
            name,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, name: &str) -> Leaf {
        self.leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth, true)
    }

    fn leaf(
        &self,
        name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }
}

/// What the echo server saw: handshake failures by reason, and connections served.
#[derive(Default)]
pub struct Served {
    pub failures: Vec<HandshakeFailureReason>,
    pub failure_messages: Vec<String>,
    pub connections: usize,
    /// The ALPN protocol of each established connection.
    pub alpn: Vec<Option<Vec<u8>>>,
    /// Whether each established connection presented a client certificate.
    pub client_certs: Vec<bool>,
}

/// Starts a TLS echo server on 127.0.0.1 on the current executor: every established connection
/// echoes each read back until the peer closes. Returns its address and what it saw.
pub fn echo_server(tls: ServerTls, timeout: Duration) -> (SocketAddr, Rc<RefCell<Served>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Rc::new(RefCell::new(Served::default()));
    let seen = served.clone();
    glommio::spawn_local(async move {
        loop {
            let Ok(stream) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            let seen = seen.clone();
            glommio::spawn_local(async move {
                match tls.accept(stream, timeout).await {
                    Ok(mut stream) => {
                        {
                            let mut seen = seen.borrow_mut();
                            seen.connections += 1;
                            let conn = stream.get_ref().1;
                            seen.alpn.push(conn.alpn_protocol().map(<[u8]>::to_vec));
                            seen.client_certs.push(conn.peer_certificates().is_some());
                        }
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            let _ = stream.flush().await;
                        }
                    }
                    Err(failure) => {
                        let mut seen = seen.borrow_mut();
                        seen.failures.push(failure.reason);
                        seen.failure_messages.push(failure.to_string());
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    (addr, served)
}

/// Polls `cond` every 5 ms until it holds; panics after `within`.
pub async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// A plain TCP connection to `addr`.
pub async fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}
