//! TLS and authentication settings of the network edges: `[receivers.otlp.tls]` (the server
//! side), `[receivers.otlp.auth]` (bearer tokens) and `[exporters.NAME.tls]` (the client side of
//! the `otlp`, `otlphttp`, `prometheusremotewrite` and `loki` exporters).
//!
//! Key names are the OpenTelemetry Collector's `configtls` ones (`cert_file`, `key_file`,
//! `client_ca_file`, `ca_file`, `insecure_skip_verify`, `min_version`, `reload_interval`;
//! `server_name`, also accepted under configtls's `server_name_override`).
//!
//! This crate only decodes and cross-checks the keys. Whether the named files exist and parse
//! (certificates, keys, CA bundles, token files) needs a crypto library, so a [`CheckFiles`]
//! implementation from outside (the `shardtel-tls` crate) is handed to
//! [`crate::Config::from_file_checked`]; its problems come back here to be placed at their key
//! and line like every other problem.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// The lowest TLS protocol version a side accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `"1.2"` (the default): TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// `"1.3"`: TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// The accepted values (TLS 1.0 and 1.1 are not supported at all).
    pub const NAMES: &'static [&'static str] = &["1.2", "1.3"];

    /// The config value.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[receivers.otlp.tls]`: TLS on both OTLP listeners (gRPC and HTTP), optionally requiring
/// client certificates (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// The server's certificate chain (PEM, leaf first). Required.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC). Required.
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when set, every client
    /// must present a valid certificate (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Lowest accepted protocol version. Default TLS 1.2.
    pub min_version: TlsVersion,
    /// Re-read `cert_file`, `key_file` and `client_ca_file` this often; new handshakes use the
    /// new files, established connections keep theirs. `None` (the default): never.
    pub reload_interval: Option<Duration>,
}

impl ServerTlsConfig {
    /// The keys `[receivers.otlp.tls]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "cert_file",
        "key_file",
        "client_ca_file",
        "min_version",
        "reload_interval",
    ];

    /// A configuration with `cert_file` and `key_file` and the defaults for the rest.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        ServerTlsConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            min_version: TlsVersion::Tls12,
            reload_interval: None,
        }
    }
}

/// `[exporters.NAME.tls]`: how an exporter verifies its `https://` endpoint and which client
/// certificate it presents. An `https://` endpoint without this table uses the system's trust
/// store and no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) to verify the server with, instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM); needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name to send (SNI) and to verify the server's certificate against, instead of the
    /// endpoint's host. Also accepted as `server_name_override` (configtls's name).
    pub server_name: Option<String>,
    /// Accept any server certificate. Off by default; logged as a warning at start.
    pub insecure_skip_verify: bool,
    /// Lowest accepted protocol version. Default TLS 1.2.
    pub min_version: TlsVersion,
    /// Re-read `ca_file`, `cert_file` and `key_file` this often; new connections use the new
    /// files. `None` (the default): never.
    pub reload_interval: Option<Duration>,
}

impl ClientTlsConfig {
    /// The keys `[exporters.NAME.tls]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "ca_file",
        "cert_file",
        "key_file",
        "server_name",
        "server_name_override",
        "insecure_skip_verify",
        "min_version",
        "reload_interval",
    ];
}

/// `[receivers.otlp.auth]`: requests must carry `authorization: Bearer TOKEN` with one of these
/// tokens (HTTP header or gRPC metadata).
///
/// `Debug` shows how many tokens there are, never the tokens.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Accepted tokens; several allow rotation without downtime.
    pub bearer_tokens: Vec<String>,
    /// A file of accepted tokens, one per line (blank lines and `#` comments ignored), re-read
    /// when it changes. Its tokens are accepted alongside `bearer_tokens`.
    pub bearer_token_file: Option<PathBuf>,
}

impl AuthConfig {
    /// The keys `[receivers.otlp.auth]` accepts.
    pub const KEYS: &'static [&'static str] = &["bearer_tokens", "bearer_token_file"];
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "bearer_tokens",
                &format_args!("[{} hidden]", self.bearer_tokens.len()),
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .finish()
    }
}

/// Whether `token` is an RFC 6750 `b64token`: letters, digits and `-._~+/`, then `=` padding.
pub fn is_valid_bearer_token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Checks the files a configuration names: that they exist and parse, and that a key matches
/// its certificate. Implemented outside this leaf crate (by `shardtel-tls`) because parsing
/// certificates needs a crypto library; see [`crate::Config::from_file_checked`].
///
/// Each method returns the problems of one table, each naming the key it is about (one of the
/// table's keys, e.g. `"key_file"`).
pub trait CheckFiles {
    /// `[receivers.otlp.tls]`.
    fn server_tls(&self, tls: &ServerTlsConfig) -> Vec<FileProblem>;
    /// `[exporters.NAME.tls]`.
    fn client_tls(&self, tls: &ClientTlsConfig) -> Vec<FileProblem>;
    /// `[receivers.otlp.auth]`.
    fn auth(&self, auth: &AuthConfig) -> Vec<FileProblem>;
}

/// A problem [`CheckFiles`] found with one file.
#[derive(Debug)]
pub struct FileProblem {
    /// The key naming the file, within its table (e.g. `"cert_file"`).
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

/// `[receivers.otlp.tls]`, when present and valid (problems are reported).
pub(crate) fn decode_server(
    d: &mut Decoder<'_>,
    parent: &Section<'_, '_>,
) -> Option<ServerTlsConfig> {
    parent.get("tls")?;
    let s = d.section(parent, "tls", ServerTlsConfig::KEYS);
    if !s.exists() {
        return None;
    }
    let cert_file = required_path(
        d,
        &s,
        "cert_file",
        "cert_file = \"/etc/shardtel/server.pem\"",
    );
    let key_file = required_path(d, &s, "key_file", "key_file = \"/etc/shardtel/server.key\"");
    let client_ca_file = d.field(&s, "client_ca_file", decode::path);
    let min_version = d.field_or(&s, "min_version", TlsVersion::Tls12, min_version);
    let reload_interval = d.field(&s, "reload_interval", reload_interval).flatten();
    Some(ServerTlsConfig {
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
        min_version,
        reload_interval,
    })
}

/// `[exporters.NAME.tls]`, when present and valid (problems are reported).
pub(crate) fn decode_client(
    d: &mut Decoder<'_>,
    parent: &Section<'_, '_>,
) -> Option<ClientTlsConfig> {
    decode_client_at(d, parent, "tls")
}

/// A client TLS table under `key` of `parent` (`tls_config` in a scrape config, Prometheus's
/// name), when present and valid (problems are reported).
pub(crate) fn decode_client_at(
    d: &mut Decoder<'_>,
    parent: &Section<'_, '_>,
    key: &str,
) -> Option<ClientTlsConfig> {
    parent.get(key)?;
    let s = d.section(parent, key, ClientTlsConfig::KEYS);
    if !s.exists() {
        return None;
    }
    let ca_file = d.field(&s, "ca_file", decode::path);
    let cert_file = d.field(&s, "cert_file", decode::path);
    let key_file = d.field(&s, "key_file", decode::path);
    let mut server_name = d.field(&s, "server_name", self::server_name);
    let alias = d.field(&s, "server_name_override", self::server_name);
    if s.get("server_name").is_some() && s.get("server_name_override").is_some() {
        d.report_at_key(
            s.key("server_name_override"),
            ConfigErrorKind::AliasConflict {
                key: "server_name_override",
                other: "server_name",
            },
        );
    } else if alias.is_some() {
        server_name = alias;
    }
    let insecure_skip_verify = d.field_or(&s, "insecure_skip_verify", false, decode::boolean);
    let min_version = d.field_or(&s, "min_version", TlsVersion::Tls12, min_version);
    let reload_interval = d.field(&s, "reload_interval", reload_interval).flatten();
    let failed = |d: &Decoder<'_>, key: &str| d.locations.failed(&s.key(key));
    if cert_file.is_some() != key_file.is_some()
        && !failed(d, "cert_file")
        && !failed(d, "key_file")
    {
        let (present, reason) = if cert_file.is_some() {
            (
                "cert_file",
                "cert_file needs key_file (a client certificate needs its private key)",
            )
        } else {
            (
                "key_file",
                "key_file needs cert_file (a private key needs its client certificate)",
            )
        };
        d.report_at_key(s.key(present), ConfigErrorKind::TlsSetting { reason });
    }
    if insecure_skip_verify && ca_file.is_some() {
        d.report_at_key(
            s.key("insecure_skip_verify"),
            ConfigErrorKind::KeyConflict {
                keys: &["ca_file", "insecure_skip_verify"],
            },
        );
    }
    Some(ClientTlsConfig {
        ca_file,
        cert_file,
        key_file,
        server_name,
        insecure_skip_verify,
        min_version,
        reload_interval,
    })
}

/// `[receivers.otlp.auth]`, when present and valid (problems are reported).
pub(crate) fn decode_auth(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> Option<AuthConfig> {
    let value = parent.get("auth")?;
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        // Not `decode::describe`: `auth = "..."` may well be a token.
        let found = type_only(value.get_ref()).to_string();
        let kind = ConfigErrorKind::WrongType {
            expected: "a table",
            found,
        };
        d.report(parent.key("auth"), value.span(), kind);
        return None;
    }
    let s = d.section(parent, "auth", AuthConfig::KEYS);
    if !s.exists() {
        return None;
    }
    let bearer_tokens = match s.get("bearer_tokens") {
        Some(value) => tokens(d, s.key("bearer_tokens"), value),
        None => Some(Vec::new()),
    };
    let bearer_token_file = d.field(&s, "bearer_token_file", decode::path);
    let given = |key: &str| s.get(key).is_some();
    if !given("bearer_tokens") && !given("bearer_token_file") {
        d.report_at_key(
            s.path.clone(),
            ConfigErrorKind::MissingOneOf {
                keys: AuthConfig::KEYS,
            },
        );
        return None;
    }
    if bearer_tokens.as_ref().is_some_and(Vec::is_empty) && !given("bearer_token_file") {
        d.report_at_key(s.key("bearer_tokens"), ConfigErrorKind::Empty);
        return None;
    }
    Some(AuthConfig {
        bearer_tokens: bearer_tokens?,
        bearer_token_file,
    })
}

/// `bearer_tokens`: like [`decode::strings`], but a problem never shows a value (it may be a
/// secret). Each token's line is recorded as `bearer_tokens[i]`.
fn tokens(d: &mut Decoder<'_>, path: String, value: &decode::Value<'_>) -> Option<Vec<String>> {
    // Checks the type and records the key's line (for problems found later).
    d.value(path.clone(), value, |v| match v {
        DeValue::Array(_) => Ok(()),
        other => Err(ConfigErrorKind::WrongType {
            expected: "an array of strings like [\"${SHARDTEL_TOKEN}\"]",
            found: type_only(other).to_string(),
        }),
    })?;
    let DeValue::Array(array) = value.get_ref() else {
        return None;
    };
    let mut tokens = Vec::with_capacity(array.len());
    let mut ok = true;
    for (i, element) in array.iter().enumerate() {
        let parsed = d.value(format!("{path}[{i}]"), element, |v| {
            let Some(token) = v.as_str() else {
                return Err(ConfigErrorKind::WrongType {
                    expected: "a string",
                    found: type_only(v).to_string(),
                });
            };
            if token.is_empty() {
                return Err(ConfigErrorKind::Empty);
            }
            if !is_valid_bearer_token(token) {
                return Err(ConfigErrorKind::InvalidToken);
            }
            Ok(token.to_string())
        });
        match parsed {
            Some(token) => tokens.push(token),
            None => ok = false,
        }
    }
    ok.then_some(tokens)
}

/// A value's type with its article, without the value.
fn type_only(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn required_path(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    key: &str,
    hint: &'static str,
) -> Option<PathBuf> {
    if s.get(key).is_none() {
        d.require(s, key, hint);
        return None;
    }
    d.field(s, key, decode::path)
}

fn min_version(value: &DeValue<'_>) -> Result<TlsVersion, ConfigErrorKind> {
    if !matches!(value, DeValue::String(_)) {
        return Err(ConfigErrorKind::WrongType {
            expected: "a version string, \"1.2\" or \"1.3\"",
            found: decode::describe(value),
        });
    }
    Ok(match decode::one_of(value, TlsVersion::NAMES)? {
        "1.3" => TlsVersion::Tls13,
        _ => TlsVersion::Tls12,
    })
}

/// A duration of at least 1s; zero means "never" (`None`).
fn reload_interval(value: &DeValue<'_>) -> Result<Option<Duration>, ConfigErrorKind> {
    let interval = decode::duration(value)?;
    if interval.is_zero() {
        return Ok(None);
    }
    decode::min_duration(interval, Duration::from_secs(1)).map(Some)
}

fn server_name(value: &DeValue<'_>) -> Result<String, ConfigErrorKind> {
    let name = decode::non_empty_string(value)?;
    let dns = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if dns || name.parse::<IpAddr>().is_ok() {
        Ok(name)
    } else {
        Err(ConfigErrorKind::InvalidServerName { value: name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ConfigErrors, OtlpReceiverConfig};

    /// A pipeline for every signal, so any exporter fits; `snippet` comes first (line 1).
    fn with_base(snippet: &str) -> String {
        format!(
            "{snippet}\n[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"blackhole\"]\n"
        )
    }

    fn load(snippet: &str) -> Result<Config, ConfigErrors> {
        let text = with_base(snippet);
        let text = if snippet.contains("[receivers.otlp]") {
            text
        } else {
            format!("{text}[receivers.otlp]\n")
        };
        Config::load(&text, "t.toml", &|_| None, &[0])
    }

    fn ok(snippet: &str) -> Config {
        load(snippet).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
    }

    fn err(snippet: &str) -> String {
        match load(snippet) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn receiver(config: &Config) -> &OtlpReceiverConfig {
        config.receivers.otlp.as_ref().unwrap()
    }

    #[test]
    fn every_receiver_key_is_read() {
        let config = ok(r#"[receivers.otlp]
[receivers.otlp.tls]
cert_file = "/etc/shardtel/server.pem"
key_file = "/etc/shardtel/server.key"
client_ca_file = "/etc/shardtel/ca.pem"
min_version = "1.3"
reload_interval = "1m"
[receivers.otlp.auth]
bearer_tokens = ["token-1", "dG9rZW4yCg=="]
bearer_token_file = "/etc/shardtel/tokens""#);
        let otlp = receiver(&config);
        assert_eq!(
            otlp.tls,
            Some(ServerTlsConfig {
                cert_file: "/etc/shardtel/server.pem".into(),
                key_file: "/etc/shardtel/server.key".into(),
                client_ca_file: Some("/etc/shardtel/ca.pem".into()),
                min_version: TlsVersion::Tls13,
                reload_interval: Some(Duration::from_secs(60)),
            })
        );
        assert_eq!(
            otlp.auth,
            Some(AuthConfig {
                bearer_tokens: vec!["token-1".into(), "dG9rZW4yCg==".into()],
                bearer_token_file: Some("/etc/shardtel/tokens".into()),
            })
        );
    }

    #[test]
    fn receiver_defaults() {
        let config = ok("[receivers.otlp]\ntls = { cert_file = \"s.pem\", key_file = \"s.key\" }\nauth = { bearer_token_file = \"tokens\" }");
        let otlp = receiver(&config);
        assert_eq!(otlp.tls, Some(ServerTlsConfig::new("s.pem", "s.key")));
        let tls = otlp.tls.as_ref().unwrap();
        assert_eq!(
            (tls.min_version, tls.reload_interval, &tls.client_ca_file),
            (TlsVersion::Tls12, None, &None)
        );
        let auth = otlp.auth.as_ref().unwrap();
        assert!(auth.bearer_tokens.is_empty());
        assert_eq!(auth.bearer_token_file, Some("tokens".into()));
        // No table, no TLS and no authentication; "0s" turns reloading off.
        let plain = ok("[receivers.otlp]");
        assert_eq!(
            (&receiver(&plain).tls, &receiver(&plain).auth),
            (&None, &None)
        );
        let never = ok(
            "[receivers.otlp.tls]\ncert_file = \"a\"\nkey_file = \"b\"\nreload_interval = \"0s\"",
        );
        assert_eq!(receiver(&never).tls.as_ref().unwrap().reload_interval, None);
    }

    #[test]
    fn receiver_problems_name_key_and_line() {
        assert_eq!(
            err("[receivers.otlp.tls]\nca_file = \"ca.pem\"\nmin_version = \"1.1\"\nreload_interval = \"10ms\""),
            "t.toml:1: receivers.otlp.tls.cert_file: missing required key (cert_file = \"/etc/shardtel/server.pem\")\n\
             t.toml:1: receivers.otlp.tls.key_file: missing required key (key_file = \"/etc/shardtel/server.key\")\n\
             t.toml:2: receivers.otlp.tls.ca_file: unknown key (allowed: cert_file, key_file, client_ca_file, min_version, reload_interval)\n\
             t.toml:3: receivers.otlp.tls.min_version: invalid value \"1.1\" (allowed: \"1.2\", \"1.3\")\n\
             t.toml:4: receivers.otlp.tls.reload_interval: 10ms is too small (minimum 1s)"
        );
        assert_eq!(
            err("[receivers.otlp.tls]\ncert_file = \"\"\nkey_file = 7\nmin_version = 1.3\nreload_interval = 60\nclient_ca_file = false"),
            "t.toml:2: receivers.otlp.tls.cert_file: must not be empty\n\
             t.toml:3: receivers.otlp.tls.key_file: expected a string, found integer 7\n\
             t.toml:4: receivers.otlp.tls.min_version: expected a version string, \"1.2\" or \"1.3\", found float 1.3\n\
             t.toml:5: receivers.otlp.tls.reload_interval: duration 60 has no unit (write e.g. \"60s\" or \"60ms\")\n\
             t.toml:6: receivers.otlp.tls.client_ca_file: expected a string, found boolean false"
        );
        assert_eq!(
            err("[receivers.otlp]\ntls = true\nauth = \"token\""),
            "t.toml:2: receivers.otlp.tls: expected a table, found boolean true\n\
             t.toml:3: receivers.otlp.auth: expected a table, found a string"
        );
    }

    #[test]
    fn auth_problems_never_show_a_token() {
        assert_eq!(
            err("[receivers.otlp.auth]\n"),
            "t.toml:1: receivers.otlp.auth: missing required key (set at least one of bearer_tokens, bearer_token_file)"
        );
        assert_eq!(
            err("[receivers.otlp.auth]\nbearer_tokens = []\n"),
            "t.toml:2: receivers.otlp.auth.bearer_tokens: must not be empty"
        );
        // With a token file, an empty list is fine: the file's tokens count.
        ok("[receivers.otlp.auth]\nbearer_tokens = []\nbearer_token_file = \"t\"\n");
        let errors = err(
            "[receivers.otlp.auth]\nbearer_tokens = [\"good\",\n  \"sec ret\",\n  12345678,\n  \"\"]\nbearer_token = \"x\"\nbearer_token_file = \"\"",
        );
        assert_eq!(
            errors,
            "t.toml:3: receivers.otlp.auth.bearer_tokens[1]: a bearer token may only contain letters, digits and -._~+/ followed by = padding (RFC 6750); the value is not shown\n\
             t.toml:4: receivers.otlp.auth.bearer_tokens[2]: expected a string, found an integer\n\
             t.toml:5: receivers.otlp.auth.bearer_tokens[3]: must not be empty\n\
             t.toml:6: receivers.otlp.auth.bearer_token: unknown key (allowed: bearer_tokens, bearer_token_file)\n\
             t.toml:7: receivers.otlp.auth.bearer_token_file: must not be empty"
        );
        assert!(!errors.contains("sec ret") && !errors.contains("12345678"));
        let errors = err("[receivers.otlp.auth]\nbearer_tokens = \"s3cret\"\n");
        assert_eq!(
            errors,
            "t.toml:2: receivers.otlp.auth.bearer_tokens: expected an array of strings like [\"${SHARDTEL_TOKEN}\"], found a string"
        );
    }

    #[test]
    fn every_exporter_key_is_read_and_https_is_accepted() {
        let config = ok(r#"[exporters.tempo]
type = "otlp"
endpoint = "https://tempo.internal:4317"
tls = { ca_file = "/ca.pem", cert_file = "/c.pem", key_file = "/c.key", server_name = "tempo", min_version = "1.3", reload_interval = "5m" }
[exporters.vendor]
type = "otlphttp"
endpoint = "https://collector:4318"
tls = { insecure_skip_verify = true, server_name_override = "10.0.0.7" }
[exporters.prom]
type = "prometheusremotewrite"
endpoint = "https://prometheus:9090/api/v1/write"
[exporters.prom.tls]
ca_file = "/prom-ca.pem"
[exporters.loki]
endpoint = "https://loki:3100/loki/api/v1/push"
tls = {}"#);
        assert_eq!(
            config.exporters["tempo"].kind.tls(),
            Some(&ClientTlsConfig {
                ca_file: Some("/ca.pem".into()),
                cert_file: Some("/c.pem".into()),
                key_file: Some("/c.key".into()),
                server_name: Some("tempo".into()),
                insecure_skip_verify: false,
                min_version: TlsVersion::Tls13,
                reload_interval: Some(Duration::from_secs(300)),
            })
        );
        assert_eq!(
            config.exporters["vendor"].kind.tls(),
            Some(&ClientTlsConfig {
                insecure_skip_verify: true,
                server_name: Some("10.0.0.7".into()),
                ..ClientTlsConfig::default()
            })
        );
        let prom = config.exporters["prom"].kind.tls().unwrap();
        assert_eq!(prom.ca_file, Some("/prom-ca.pem".into()));
        assert_eq!(
            config.exporters["loki"].kind.tls(),
            Some(&ClientTlsConfig::default())
        );
        for (name, endpoint) in [
            ("tempo", "https://tempo.internal:4317"),
            ("vendor", "https://collector:4318"),
            ("prom", "https://prometheus:9090/api/v1/write"),
            ("loki", "https://loki:3100/loki/api/v1/push"),
        ] {
            assert_eq!(
                config.exporters[name].kind.endpoints()[0].to_string(),
                endpoint
            );
        }
        // An https endpoint without a tls table: the system trust store, no client certificate.
        let plain = ok("[exporters.tempo]\ntype = \"otlp\"\nendpoint = \"https://tempo:4317\"");
        let tempo = &plain.exporters["tempo"].kind;
        assert_eq!(
            (tempo.tls(), tempo.endpoints()[0].scheme.as_str()),
            (None, "https")
        );
    }

    #[test]
    fn exporter_problems_name_key_and_line() {
        assert_eq!(
            err(r#"[exporters.a]
type = "otlp"
endpoint = "https://a:4317"
[exporters.a.tls]
cert_file = "/c.pem"
server_name = "tempo internal"
insecure_skip_verify = "yes"
ca = "/ca.pem"
[exporters.b]
type = "loki"
endpoint = "https://l:3100/p"
tls = { key_file = "/k.pem", ca_file = "/ca.pem", insecure_skip_verify = true, server_name = "l", server_name_override = "m" }
[exporters.c]
type = "otlphttp"
endpoint = "http://c:4318"
tls = { ca_file = "/ca.pem" }
[exporters.d]
type = "file"
path = "/d.jsonl"
tls = { ca_file = "/ca.pem" }
[exporters.e]
type = "prometheusremotewrite"
endpoint = "https://p:9090/api/v1/write"
tls = { min_version = "1.0", reload_interval = "soon" }"#),
            "t.toml:5: exporters.a.tls.cert_file: cert_file needs key_file (a client certificate needs its private key)\n\
             t.toml:6: exporters.a.tls.server_name: invalid server name \"tempo internal\" (expected a DNS name like \"tempo.internal\" or an IP address)\n\
             t.toml:7: exporters.a.tls.insecure_skip_verify: expected true or false, found string \"yes\"\n\
             t.toml:8: exporters.a.tls.ca: unknown key (allowed: ca_file, cert_file, key_file, server_name, server_name_override, insecure_skip_verify, min_version, reload_interval)\n\
             t.toml:12: exporters.b.tls.server_name_override: server_name_override and server_name mean the same thing (set only one)\n\
             t.toml:12: exporters.b.tls.key_file: key_file needs cert_file (a private key needs its client certificate)\n\
             t.toml:12: exporters.b.tls.insecure_skip_verify: set only one of ca_file, insecure_skip_verify\n\
             t.toml:16: exporters.c.tls: tls settings apply to https:// endpoints only, and http://c:4318 is plaintext (use https://)\n\
             t.toml:20: exporters.d.tls: unknown key (allowed: type, path, rotation, batch, retry, queue)\n\
             t.toml:24: exporters.e.tls.min_version: invalid value \"1.0\" (allowed: \"1.2\", \"1.3\")\n\
             t.toml:24: exporters.e.tls.reload_interval: invalid duration \"soon\" (expected a string like \"200ms\", \"10s\", \"1m\", \"1h30m\")"
        );
        // otlphttp: one https signal endpoint is enough for a tls table.
        ok("[exporters.c]\ntype = \"otlphttp\"\nendpoint = \"http://c:4318\"\nlogs_endpoint = \"https://loki:3100/otlp/v1/logs\"\ntls = { ca_file = \"/ca.pem\" }");
    }

    /// Reports a problem for every file key it is shown, to check where problems are placed.
    struct EveryFileIsBad;

    impl EveryFileIsBad {
        fn problem(key: &'static str, path: &std::path::Path) -> FileProblem {
            FileProblem {
                key,
                path: path.to_path_buf(),
                error: format!("bad {key}").into(),
            }
        }
    }

    impl CheckFiles for EveryFileIsBad {
        fn server_tls(&self, tls: &ServerTlsConfig) -> Vec<FileProblem> {
            vec![
                Self::problem("cert_file", &tls.cert_file),
                Self::problem("key_file", &tls.key_file),
            ]
        }
        fn client_tls(&self, tls: &ClientTlsConfig) -> Vec<FileProblem> {
            tls.ca_file
                .iter()
                .map(|p| Self::problem("ca_file", p))
                .collect()
        }
        fn auth(&self, auth: &AuthConfig) -> Vec<FileProblem> {
            auth.bearer_token_file
                .iter()
                .map(|p| Self::problem("bearer_token_file", p))
                .collect()
        }
    }

    #[test]
    fn file_problems_are_placed_at_their_key() {
        let text = with_base(
            "[receivers.otlp]\n[receivers.otlp.tls]\ncert_file = \"/s.pem\"\n\nkey_file = \"/s.key\"\n\
             [receivers.otlp.auth]\nbearer_token_file = \"/tokens\"\n\
             [exporters.t]\ntype = \"otlp\"\nendpoint = \"https://t:4317\"\ntls = { ca_file = \"/ca.pem\" }",
        );
        let errors = Config::load_checked(&text, "t.toml", &|_| None, &[0], Some(&EveryFileIsBad))
            .unwrap_err();
        assert_eq!(
            errors.to_string(),
            "t.toml:3: receivers.otlp.tls.cert_file: /s.pem: bad cert_file\n\
             t.toml:5: receivers.otlp.tls.key_file: /s.key: bad key_file\n\
             t.toml:7: receivers.otlp.auth.bearer_token_file: /tokens: bad bearer_token_file\n\
             t.toml:11: exporters.t.tls.ca_file: /ca.pem: bad ca_file"
        );
        // Without a checker the files are not looked at.
        Config::load(&text, "t.toml", &|_| None, &[0]).unwrap();
    }

    #[test]
    fn bearer_token_syntax() {
        for good in [
            "abc",
            "a-b.c_d~e+f/g",
            "dG9rZW4=",
            "x==",
            "0123456789abcdef",
        ] {
            assert!(is_valid_bearer_token(good), "{good}");
        }
        for bad in ["", "=", "a b", "a=b", "tok\"en", "é", "a\tb", "Bearer x"] {
            assert!(!is_valid_bearer_token(bad), "{bad}");
        }
    }

    #[test]
    fn auth_debug_hides_the_tokens() {
        let auth = AuthConfig {
            bearer_tokens: vec!["s3cret-token".into(), "other".into()],
            bearer_token_file: Some("/etc/shardtel/tokens".into()),
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert!(shown.contains("[2 hidden]"), "{shown}");
    }
}
