//! `shardtel validate`'s file checks: `Config::from_str_checked` with the real [`FileChecker`]
//! names the file, the key and its line.

use std::path::Path;

use shardtel_config::Config;
use shardtel_tls::FileChecker;

use crate::support::{temp_dir, write, Ca};

/// A configuration with TLS and auth on the receiver and TLS on two exporters, naming the
/// files in `dir` (`server.pem`, `server.key`, `clients.pem`, `tokens`, `ca.pem`, `client.pem`,
/// `client.key`); the first file key is on line 3.
fn config_text(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"[receivers.otlp]
[receivers.otlp.tls]
cert_file = "{d}/server.pem"
key_file = "{d}/server.key"
client_ca_file = "{d}/clients.pem"
[receivers.otlp.auth]
bearer_token_file = "{d}/tokens"
[exporters.tempo]
type = "otlp"
endpoint = "https://tempo:4317"
[exporters.tempo.tls]
ca_file = "{d}/ca.pem"
cert_file = "{d}/client.pem"
key_file = "{d}/client.key"
[exporters.loki]
endpoint = "https://loki:3100/loki/api/v1/push"
[pipelines.traces]
receivers = ["otlp"]
exporters = ["tempo"]
[pipelines.logs]
receivers = ["otlp"]
exporters = ["loki"]
"#
    )
}

fn check(dir: &Path) -> Result<Config, String> {
    Config::from_str_checked(&config_text(dir), "gw.toml", &FileChecker).map_err(|e| {
        e.to_string()
            .replace(&format!("{}/", dir.display()), "DIR/")
    })
}

/// Writes a complete, valid set of files.
fn good_files(dir: &Path) -> (Ca, Ca) {
    let ca = Ca::new("ca");
    let clients = Ca::new("clients");
    let server = ca.server("server");
    let client = ca.client("client");
    write(dir, "server.pem", &server.cert_pem());
    write(dir, "server.key", &server.key_pem());
    write(dir, "clients.pem", &clients.pem());
    write(dir, "tokens", "token-1\n");
    write(dir, "ca.pem", &ca.pem());
    write(dir, "client.pem", &client.cert_pem());
    write(dir, "client.key", &client.key_pem());
    (ca, clients)
}

#[test]
fn good_files_pass() {
    let dir = temp_dir("files-good");
    good_files(&dir);
    let config = check(&dir).unwrap();
    assert!(config.receivers.otlp.unwrap().tls.is_some());
    // A combined file (key and certificate in one PEM) is fine too.
    let server = std::fs::read_to_string(dir.join("server.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("server.key")).unwrap();
    write(&dir, "server.pem", &server);
    write(&dir, "server.key", &server);
    check(&dir).unwrap();
}

#[test]
fn every_bad_file_is_named_with_its_key_and_line() {
    let dir = temp_dir("files-bad");
    let (ca, _) = good_files(&dir);
    // The server key belongs to another certificate; the client CA bundle is empty; the token
    // file has a malformed line; the exporter's CA file is missing; its client certificate
    // file holds a key, and its key file a certificate.
    write(&dir, "server.key", &ca.server("other").key_pem());
    write(&dir, "clients.pem", "# no certificates yet\n");
    write(&dir, "tokens", "token-1\nsecret token\n");
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let client = ca.client("client");
    write(&dir, "client.pem", &client.key_pem());
    write(&dir, "client.key", &client.cert_pem());
    let errors = check(&dir).unwrap_err();
    assert_eq!(
        errors,
        "gw.toml:4: receivers.otlp.tls.key_file: DIR/server.key: the private key does not match the certificate in DIR/server.pem\n\
         gw.toml:5: receivers.otlp.tls.client_ca_file: DIR/clients.pem: no certificate found (expected PEM \"CERTIFICATE\" blocks)\n\
         gw.toml:7: receivers.otlp.auth.bearer_token_file: DIR/tokens: line 2: not a valid bearer token (letters, digits and -._~+/ followed by = padding); the value is not shown\n\
         gw.toml:12: exporters.tempo.tls.ca_file: DIR/ca.pem: cannot read: No such file or directory (os error 2)\n\
         gw.toml:13: exporters.tempo.tls.cert_file: DIR/client.pem: no certificate found (expected PEM \"CERTIFICATE\" blocks)\n\
         gw.toml:14: exporters.tempo.tls.key_file: DIR/client.key: no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block; encrypted keys are not supported)"
    );
    assert!(!errors.contains("secret"));
}

#[test]
fn malformed_pem_and_unsupported_keys_are_explained() {
    let dir = temp_dir("files-malformed");
    good_files(&dir);
    write(
        &dir,
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    // A PKCS#8 block whose content is not a key ring can load.
    write(
        &dir,
        "client.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    write(&dir, "tokens", "# only comments\n");
    let errors = check(&dir).unwrap_err();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 3, "{errors}");
    assert!(
        lines[0].starts_with(
            "gw.toml:3: receivers.otlp.tls.cert_file: DIR/server.pem: certificate 1 (counting from 1) does not parse: "
        ),
        "{errors}"
    );
    assert_eq!(
        lines[1],
        "gw.toml:7: receivers.otlp.auth.bearer_token_file: DIR/tokens: no tokens in this file and bearer_tokens is empty, so every request would be refused"
    );
    assert!(
        lines[2].starts_with(
            "gw.toml:14: exporters.tempo.tls.key_file: DIR/client.key: unsupported private key"
        ),
        "{errors}"
    );
}
