//! `[receivers.prometheus]`: the Prometheus scrape receiver. The Collector embeds Prometheus's
//! YAML under `config:`; shardtel takes the same keys as TOML tables:
//!
//! ```toml
//! [[receivers.prometheus.scrape_configs]]
//! job_name = "node"
//! scrape_interval = "15s"
//! [[receivers.prometheus.scrape_configs.static_configs]]
//! targets = ["127.0.0.1:9100"]
//! labels = { env = "prod" }
//! ```
//!
//! Supported keys per scrape config: `job_name`, `scrape_interval`, `scrape_timeout`,
//! `metrics_path`, `scheme`, `params`, `honor_labels`, `honor_timestamps`, `static_configs`
//! (`targets`, `labels`), `basic_auth` (`username`, `password`, `password_file`),
//! `authorization` (`type`, `credentials`, `credentials_file`), `bearer_token`,
//! `bearer_token_file`, `tls_config` (the `[exporters.NAME.tls]` keys), `sample_limit`,
//! `body_size_limit`, `scrape_protocols`. Service discovery and relabelling are not supported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shardtel_protocol::exposition::ScrapeProtocol;
use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;
use crate::tls::ClientTlsConfig;

/// `[receivers.prometheus]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusReceiverConfig {
    /// `[[receivers.prometheus.scrape_configs]]`, at least one.
    pub scrape_configs: Vec<ScrapeConfig>,
}

impl PrometheusReceiverConfig {
    /// The keys `[receivers.prometheus]` accepts.
    pub const KEYS: &'static [&'static str] = &["scrape_configs"];
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScrapeScheme {
    /// Plain HTTP (the default).
    #[default]
    Http,
    /// HTTPS (TLS with `tls_config`, or the system's trust store).
    Https,
}

impl ScrapeScheme {
    /// `"http"` or `"https"`.
    pub fn name(self) -> &'static str {
        match self {
            ScrapeScheme::Http => "http",
            ScrapeScheme::Https => "https",
        }
    }

    /// The port of a target given without one (Prometheus 2.x adds it).
    pub fn default_port(self) -> u16 {
        match self {
            ScrapeScheme::Http => 80,
            ScrapeScheme::Https => 443,
        }
    }
}

/// `basic_auth`. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Option<String>,
    /// A file holding the password (read at start-up; trailing newlines removed).
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[hidden]"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `authorization` (or the older `bearer_token` / `bearer_token_file`). `Debug` never shows
/// the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The scheme (`Bearer` by default).
    pub scheme: String,
    /// The credentials.
    pub credentials: Option<String>,
    /// A file holding them (read at start-up; trailing newlines removed).
    pub credentials_file: Option<PathBuf>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("scheme", &self.scheme)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[hidden]"),
            )
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

/// One target group of `static_configs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticConfig {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    /// Labels every sample of these targets gets.
    pub labels: BTreeMap<String, String>,
}

/// One `[[receivers.prometheus.scrape_configs]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeConfig {
    /// The `job` label. Required, unique.
    pub job_name: String,
    /// How often each target is scraped. Default 1m (Prometheus's global default).
    pub scrape_interval: Duration,
    /// How long one scrape may take, at most `scrape_interval`. Default 10s (or the interval
    /// when shorter).
    pub scrape_timeout: Duration,
    /// The path scraped. Default `/metrics`.
    pub metrics_path: String,
    /// `http` (default) or `https`.
    pub scheme: ScrapeScheme,
    /// Query parameters (`module = ["if_mib"]`).
    pub params: BTreeMap<String, Vec<String>>,
    /// Exposed labels win over the target's. Default false.
    pub honor_labels: bool,
    /// Timestamps the target exposes are kept. Default true.
    pub honor_timestamps: bool,
    /// The targets and their labels.
    pub static_configs: Vec<StaticConfig>,
    /// `basic_auth`.
    pub basic_auth: Option<BasicAuth>,
    /// `authorization`, `bearer_token`, `bearer_token_file`.
    pub authorization: Option<Authorization>,
    /// `tls_config`: how an `https` target is verified, the client certificate.
    pub tls: Option<ClientTlsConfig>,
    /// Samples one scrape may hold; more fails the scrape (`up` 0). 0 (default): no limit
    /// beyond `body_size_limit`.
    pub sample_limit: u64,
    /// Largest uncompressed response body; a larger one fails the scrape. Default 64 MiB
    /// (Prometheus: no limit).
    pub body_size_limit: u64,
    /// Formats asked for, in order of preference (Prometheus's names).
    pub scrape_protocols: Vec<ScrapeProtocol>,
}

impl ScrapeConfig {
    /// The keys a scrape config accepts.
    pub const KEYS: &'static [&'static str] = &[
        "job_name",
        "scrape_interval",
        "scrape_timeout",
        "metrics_path",
        "scheme",
        "params",
        "honor_labels",
        "honor_timestamps",
        "static_configs",
        "basic_auth",
        "authorization",
        "bearer_token",
        "bearer_token_file",
        "tls_config",
        "sample_limit",
        "body_size_limit",
        "scrape_protocols",
    ];
    /// Default `scrape_interval`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    /// Default `scrape_timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `body_size_limit`.
    pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 64 << 20;

    /// A config for `job_name` scraping `targets`, defaults for the rest.
    pub fn new(job_name: impl Into<String>, targets: Vec<String>) -> Self {
        ScrapeConfig {
            job_name: job_name.into(),
            scrape_interval: Self::DEFAULT_INTERVAL,
            scrape_timeout: Self::DEFAULT_TIMEOUT,
            metrics_path: "/metrics".into(),
            scheme: ScrapeScheme::Http,
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            static_configs: vec![StaticConfig {
                targets,
                labels: BTreeMap::new(),
            }],
            basic_auth: None,
            authorization: None,
            tls: None,
            sample_limit: 0,
            body_size_limit: Self::DEFAULT_BODY_SIZE_LIMIT,
            scrape_protocols: ScrapeProtocol::DEFAULT.to_vec(),
        }
    }
}

/// Whether `name` is a label name a target may set: `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.bytes();
    chars
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

/// Whether `target` is `host` or `host:port` (an IPv6 host in brackets), without scheme or path.
pub fn is_valid_target(target: &str) -> bool {
    if target.is_empty() || target.contains(['/', '?', '#', ' ', '@']) {
        return false;
    }
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return false,
            },
            None => return false,
        }
    } else {
        match target.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return false,
            None => (target, None),
        }
    };
    !host.is_empty() && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

pub(crate) fn decode(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<PrometheusReceiverConfig> {
    let Some(value) = s.get("scrape_configs") else {
        d.require(
            s,
            "scrape_configs",
            "[[receivers.prometheus.scrape_configs]] with job_name and static_configs",
        );
        return None;
    };
    let path = s.key("scrape_configs");
    let list = array_of_tables(d, &path, value, "scrape config")?;
    let mut configs = Vec::new();
    let mut ok = true;
    for (i, element) in list.iter().enumerate() {
        let table = d.table(format!("{path}[{i}]"), element, Some(ScrapeConfig::KEYS));
        if !table.exists() {
            ok = false;
            continue;
        }
        match decode_scrape_config(d, &table) {
            Some(c) => {
                if configs
                    .iter()
                    .any(|o: &ScrapeConfig| o.job_name == c.job_name)
                {
                    d.report_at_key(
                        table.key("job_name"),
                        ConfigErrorKind::DuplicateJobName {
                            name: c.job_name.clone(),
                        },
                    );
                    ok = false;
                }
                configs.push(c);
            }
            None => ok = false,
        }
    }
    ok.then_some(PrometheusReceiverConfig {
        scrape_configs: configs,
    })
}

/// `value` at `path` as a non-empty array of tables (`[[...]]`), or reported.
fn array_of_tables<'t, 'i>(
    d: &mut Decoder<'_>,
    path: &str,
    value: &'t decode::Value<'i>,
    what: &'static str,
) -> Option<&'t toml::de::DeArray<'i>> {
    let expected = match what {
        "scrape config" => "an array of scrape config tables ([[...scrape_configs]])",
        _ => "an array of tables ([[...static_configs]] or [{ targets = [..] }])",
    };
    d.value(path.to_string(), value, |v| match v {
        DeValue::Array(a) if a.is_empty() => Err(ConfigErrorKind::Empty),
        DeValue::Array(_) => Ok(()),
        other => Err(ConfigErrorKind::WrongType {
            expected,
            found: decode::describe(other),
        }),
    })?;
    match value.get_ref() {
        DeValue::Array(a) => Some(a),
        _ => None,
    }
}

fn decode_scrape_config(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<ScrapeConfig> {
    let job_name = if s.get("job_name").is_some() {
        d.field(s, "job_name", decode::non_empty_string)
    } else {
        d.require(s, "job_name", "job_name = \"node\"");
        None
    };
    let scrape_interval = d.field_or(s, "scrape_interval", ScrapeConfig::DEFAULT_INTERVAL, |v| {
        decode::min_duration(decode::duration(v)?, Duration::from_millis(1))
    });
    let scrape_timeout = d.field(s, "scrape_timeout", |v| {
        decode::min_duration(decode::duration(v)?, Duration::from_millis(1))
    });
    if let Some(timeout) = scrape_timeout.filter(|t| *t > scrape_interval) {
        d.report_at_key(
            s.key("scrape_timeout"),
            ConfigErrorKind::ScrapeTimeoutTooLong {
                timeout,
                interval: scrape_interval,
            },
        );
    }
    let scrape_timeout =
        scrape_timeout.unwrap_or(ScrapeConfig::DEFAULT_TIMEOUT.min(scrape_interval));
    let metrics_path = d.field_or(s, "metrics_path", "/metrics".to_string(), |v| {
        let path = decode::non_empty_string(v)?;
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(ConfigErrorKind::WrongType {
                expected: "a path like \"/metrics\"",
                found: decode::describe(v),
            });
        }
        Ok(path)
    });
    let scheme = d.field_or(s, "scheme", ScrapeScheme::Http, |v| {
        Ok(match decode::one_of(v, &["http", "https"])? {
            "https" => ScrapeScheme::Https,
            _ => ScrapeScheme::Http,
        })
    });
    let params = d.field_or(s, "params", BTreeMap::new(), |v| {
        let DeValue::Table(t) = v else {
            return Err(ConfigErrorKind::WrongType {
                expected: "a table of string arrays like { module = [\"if_mib\"] }",
                found: decode::describe(v),
            });
        };
        let mut out = BTreeMap::new();
        for (k, v) in t.iter() {
            out.insert(k.get_ref().to_string(), decode::strings(v.get_ref())?);
        }
        Ok(out)
    });
    let honor_labels = d.field_or(s, "honor_labels", false, decode::boolean);
    let honor_timestamps = d.field_or(s, "honor_timestamps", true, decode::boolean);
    let sample_limit = d.field_or(s, "sample_limit", 0, |v| decode::count(v, u64::MAX));
    let body_size_limit = d.field_or(
        s,
        "body_size_limit",
        ScrapeConfig::DEFAULT_BODY_SIZE_LIMIT,
        |v| Ok(decode::size_between(v, 1 << 10, 1 << 30)? as u64),
    );
    let scrape_protocols = d.field_or(
        s,
        "scrape_protocols",
        ScrapeProtocol::DEFAULT.to_vec(),
        |v| {
            let names = decode::strings(v)?;
            if names.is_empty() {
                return Err(ConfigErrorKind::Empty);
            }
            names
                .iter()
                .map(|n| {
                    ScrapeProtocol::from_name(n).ok_or_else(|| ConfigErrorKind::NotOneOf {
                        value: n.clone(),
                        allowed: ScrapeProtocol::NAMES,
                    })
                })
                .collect()
        },
    );
    let static_configs = decode_static_configs(d, s);
    let basic_auth = decode_basic_auth(d, s);
    let authorization = decode_authorization(d, s);
    let tls = crate::tls::decode_client_at(d, s, "tls_config");
    Some(ScrapeConfig {
        job_name: job_name?,
        scrape_interval,
        scrape_timeout,
        metrics_path,
        scheme,
        params,
        honor_labels,
        honor_timestamps,
        static_configs: static_configs?,
        basic_auth,
        authorization,
        tls,
        sample_limit,
        body_size_limit,
        scrape_protocols,
    })
}

fn decode_static_configs(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<Vec<StaticConfig>> {
    let Some(value) = s.get("static_configs") else {
        d.require(
            s,
            "static_configs",
            "[[...static_configs]] with targets = [\"127.0.0.1:9100\"]",
        );
        return None;
    };
    let path = s.key("static_configs");
    let list = array_of_tables(d, &path, value, "static config")?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, element) in list.iter().enumerate() {
        let t = d.table(
            format!("{path}[{i}]"),
            element,
            Some(&["targets", "labels"]),
        );
        if !t.exists() {
            ok = false;
            continue;
        }
        let targets = d.field(&t, "targets", |v| {
            let targets = decode::strings(v)?;
            if let Some(bad) = targets.iter().find(|t| !is_valid_target(t)) {
                return Err(ConfigErrorKind::InvalidTarget { value: bad.clone() });
            }
            Ok(targets)
        });
        if t.get("targets").is_none() {
            d.require(&t, "targets", "targets = [\"127.0.0.1:9100\"]");
        }
        let labels = d.field_or(&t, "labels", BTreeMap::new(), |v| {
            let DeValue::Table(table) = v else {
                return Err(ConfigErrorKind::WrongType {
                    expected: "a table of strings like { env = \"prod\" }",
                    found: decode::describe(v),
                });
            };
            let mut labels = BTreeMap::new();
            for (k, v) in table.iter() {
                let name = k.get_ref().to_string();
                if !is_valid_label_name(&name) {
                    return Err(ConfigErrorKind::InvalidLabelName { value: name });
                }
                labels.insert(name, decode::string(v.get_ref())?);
            }
            Ok(labels)
        });
        match targets {
            Some(targets) => out.push(StaticConfig { targets, labels }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_basic_auth(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<BasicAuth> {
    s.get("basic_auth")?;
    let t = d.section(s, "basic_auth", &["username", "password", "password_file"]);
    if !t.exists() {
        return None;
    }
    let username = d.field_or(&t, "username", String::new(), decode::string);
    let password = d.field(&t, "password", decode::string);
    let password_file = d.field(&t, "password_file", decode::path);
    if password.is_some() && password_file.is_some() {
        d.report_at_key(
            t.key("password_file"),
            ConfigErrorKind::KeyConflict {
                keys: &["password", "password_file"],
            },
        );
    }
    Some(BasicAuth {
        username,
        password,
        password_file,
    })
}

fn decode_authorization(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<Authorization> {
    let bearer = d.field(s, "bearer_token", decode::non_empty_string);
    let bearer_file = d.field(s, "bearer_token_file", decode::path);
    let given = |key: &str| s.get(key).is_some();
    if given("bearer_token") && given("bearer_token_file") {
        d.report_at_key(
            s.key("bearer_token_file"),
            ConfigErrorKind::KeyConflict {
                keys: &["bearer_token", "bearer_token_file"],
            },
        );
    }
    if given("authorization") && (given("bearer_token") || given("bearer_token_file")) {
        d.report_at_key(
            s.key("authorization"),
            ConfigErrorKind::KeyConflict {
                keys: &["authorization", "bearer_token"],
            },
        );
    }
    if given("basic_auth")
        && (given("authorization") || given("bearer_token") || given("bearer_token_file"))
    {
        d.report_at_key(
            s.key("basic_auth"),
            ConfigErrorKind::KeyConflict {
                keys: &["basic_auth", "authorization"],
            },
        );
    }
    if bearer.is_some() || bearer_file.is_some() {
        return Some(Authorization {
            scheme: "Bearer".into(),
            credentials: bearer,
            credentials_file: bearer_file,
        });
    }
    s.get("authorization")?;
    let t = d.section(
        s,
        "authorization",
        &["type", "credentials", "credentials_file"],
    );
    if !t.exists() {
        return None;
    }
    let scheme = d.field_or(&t, "type", "Bearer".to_string(), decode::non_empty_string);
    let credentials = d.field(&t, "credentials", decode::string);
    let credentials_file = d.field(&t, "credentials_file", decode::path);
    if credentials.is_some() && credentials_file.is_some() {
        d.report_at_key(
            t.key("credentials_file"),
            ConfigErrorKind::KeyConflict {
                keys: &["credentials", "credentials_file"],
            },
        );
    }
    Some(Authorization {
        scheme,
        credentials,
        credentials_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const BASE: &str = "[exporters.blackhole]\n[pipelines.metrics]\nreceivers = [\"prometheus\"]\nexporters = [\"blackhole\"]\n";

    #[test]
    fn a_full_scrape_config_decodes() {
        let text = format!(
            r#"[[receivers.prometheus.scrape_configs]]
job_name = "node"
scrape_interval = "15s"
scrape_timeout = "5s"
metrics_path = "/probe"
scheme = "https"
params = {{ module = ["if_mib"] }}
honor_labels = true
honor_timestamps = false
sample_limit = 1000
body_size_limit = "10MiB"
scrape_protocols = ["PrometheusText0.0.4"]
basic_auth = {{ username = "u", password = "p" }}
tls_config = {{ insecure_skip_verify = true }}
[[receivers.prometheus.scrape_configs.static_configs]]
targets = ["127.0.0.1:9100", "node-2"]
labels = {{ env = "prod" }}
[[receivers.prometheus.scrape_configs]]
job_name = "self"
bearer_token = "abc"
static_configs = [{{ targets = ["[::1]:9090"] }}]
{BASE}"#
        );
        let config = Config::from_str(&text, "t.toml").unwrap();
        let p = config.receivers.prometheus.unwrap();
        let node = &p.scrape_configs[0];
        assert_eq!(node.scrape_interval, Duration::from_secs(15));
        assert_eq!(node.scrape_timeout, Duration::from_secs(5));
        assert_eq!(node.scheme, ScrapeScheme::Https);
        assert_eq!(node.params["module"], ["if_mib"]);
        assert!(node.honor_labels && !node.honor_timestamps);
        assert_eq!((node.sample_limit, node.body_size_limit), (1000, 10 << 20));
        assert_eq!(node.scrape_protocols, [ScrapeProtocol::PrometheusText0]);
        assert_eq!(node.static_configs[0].labels["env"], "prod");
        assert!(node.tls.as_ref().unwrap().insecure_skip_verify);
        assert_eq!(node.basic_auth.as_ref().unwrap().username, "u");
        let own = &p.scrape_configs[1];
        assert_eq!(own.scrape_interval, ScrapeConfig::DEFAULT_INTERVAL);
        assert_eq!(own.scrape_timeout, ScrapeConfig::DEFAULT_TIMEOUT);
        assert_eq!(
            own.authorization.as_ref().unwrap().credentials.as_deref(),
            Some("abc")
        );
        assert!(
            !format!("{own:?}").contains("abc"),
            "credentials are never printed"
        );
    }

    #[test]
    fn problems_are_reported_at_their_keys() {
        let text = format!(
            r#"[[receivers.prometheus.scrape_configs]]
job_name = "a"
scrape_interval = "10s"
scrape_timeout = "20s"
static_configs = [{{ targets = ["http://x:1/metrics"] }}]
[[receivers.prometheus.scrape_configs]]
job_name = "a"
scrape_protocols = ["Nope"]
static_configs = [{{ targets = ["x:1"], labels = {{ __bad = "1" }} }}]
[[receivers.prometheus.scrape_configs]]
static_configs = []
{BASE}"#
        );
        let errors = Config::from_str(&text, "t.toml").unwrap_err().to_string();
        for expected in [
            "t.toml:4: receivers.prometheus.scrape_configs[0].scrape_timeout: scrape_timeout 20s is longer than scrape_interval 10s",
            "receivers.prometheus.scrape_configs[0].static_configs[0].targets: invalid target \"http://x:1/metrics\"",
            "t.toml:8: receivers.prometheus.scrape_configs[1].scrape_protocols: invalid value \"Nope\"",
            "receivers.prometheus.scrape_configs[1].static_configs[0].labels: invalid label name \"__bad\"",
            "receivers.prometheus.scrape_configs[2].job_name: missing required key",
            "receivers.prometheus.scrape_configs[2].static_configs: must not be empty",
        ] {
            assert!(errors.contains(expected), "{expected}\nnot in\n{errors}");
        }
    }

    #[test]
    fn prometheus_feeds_metrics_only() {
        let text = "[[receivers.prometheus.scrape_configs]]\njob_name = \"a\"\nstatic_configs = [{ targets = [\"x:1\"] }]\n[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"prometheus\"]\nexporters = [\"blackhole\"]\n";
        let errors = Config::from_str(text, "t.toml").unwrap_err().to_string();
        assert!(
            errors.contains(
                "receiver \"prometheus\" receives metrics only; remove it from the traces pipeline"
            ),
            "{errors}"
        );
    }

    #[test]
    fn targets_and_label_names() {
        for ok in ["a:1", "a", "[::1]:9100", "[::1]", "10.0.0.1:65535"] {
            assert!(is_valid_target(ok), "{ok}");
        }
        for bad in ["", "a:0", "a:x", "::1", "http://a", "a:1/x", "[::1"] {
            assert!(!is_valid_target(bad), "{bad}");
        }
        assert!(is_valid_label_name("env") && is_valid_label_name("_x"));
        assert!(
            !is_valid_label_name("__x")
                && !is_valid_label_name("1a")
                && !is_valid_label_name("a-b")
        );
    }
}
