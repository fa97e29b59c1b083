//! The targets of `[receivers.prometheus]`: each `static_configs` address of each scrape
//! config, its labels, URL and credentials, and the core that owns it.

use std::collections::BTreeMap;
use std::path::Path;

use http::header::HeaderValue;
use shardtel_config::{Authorization, BasicAuth, ClientTlsConfig, ScrapeConfig, ScrapeScheme};
use shardtel_protocol::exposition::{accept_header, ScrapeTarget};
use shardtel_protocol::route::owner_core;
use shardtel_tls::{alpn, ClientTls};

use super::client::Endpoint;

/// Why a target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A password or credentials file could not be read.
    #[error("receivers.prometheus job {job:?}: cannot read {path}: {source}")]
    SecretFile {
        /// The job.
        job: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings could not be built.
    #[error("receivers.prometheus job {job:?}: tls_config: {source}")]
    Tls {
        /// The job.
        job: String,
        /// Why.
        #[source]
        source: shardtel_tls::Error,
    },
}

/// One target: what it is (labels) and where it is (endpoint).
pub(super) struct Target {
    pub(super) labels: ScrapeTarget,
    pub(super) endpoint: Endpoint,
    pub(super) interval: std::time::Duration,
    /// Where in each interval this target is scraped, spreading targets over time.
    pub(super) offset: std::time::Duration,
}

/// The owner core of a target: a hash of its job and URL.
pub(super) fn owner(job: &str, url: &str, cores: usize) -> usize {
    owner_core(&key(job, url).to_le_bytes(), cores)
}

fn key(job: &str, url: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job.bytes().chain([0xff]).chain(url.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u128::from(h) | (u128::from(h.rotate_left(29)) << 64)
}

/// `host` without brackets and the port (the scheme's default when absent).
fn split(address: &str, scheme: ScrapeScheme) -> (String, u16) {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host.to_string(), port.unwrap_or(scheme.default_port()));
        }
    }
    match address.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            (h.to_string(), p.parse().unwrap_or(scheme.default_port()))
        }
        _ => (address.to_string(), scheme.default_port()),
    }
}

fn read_secret(job: &str, path: &Path) -> Result<String, TargetError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|source| TargetError::SecretFile {
            job: job.to_string(),
            path: path.display().to_string(),
            source,
        })
}

fn authorization(
    job: &str,
    basic: Option<&BasicAuth>,
    auth: Option<&Authorization>,
) -> Result<Option<HeaderValue>, TargetError> {
    use base64::Engine;
    let value = if let Some(b) = basic {
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => read_secret(job, file)?,
            (None, None) => String::new(),
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", b.username));
        format!("Basic {encoded}")
    } else if let Some(a) = auth {
        let credentials = match (&a.credentials, &a.credentials_file) {
            (Some(c), _) => c.clone(),
            (None, Some(file)) => read_secret(job, file)?,
            (None, None) => String::new(),
        };
        format!("{} {credentials}", a.scheme)
    } else {
        return Ok(None);
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| TargetError::SecretFile {
        job: job.to_string(),
        path: "(credentials)".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a valid header value"),
    })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

/// Every target of `configs` that `core` of `cores` owns.
pub(super) fn owned_targets(
    configs: &[ScrapeConfig],
    core: usize,
    cores: usize,
) -> Result<Vec<Target>, TargetError> {
    let mut out = Vec::new();
    for config in configs {
        let job = &config.job_name;
        let mut query = String::new();
        for (name, values) in &config.params {
            for value in values {
                query.push(if query.is_empty() { '?' } else { '&' });
                query.push_str(&form_encode(name));
                query.push('=');
                query.push_str(&form_encode(value));
            }
        }
        let path_and_query = format!("{}{query}", config.metrics_path);
        let mut owned = Vec::new();
        for group in &config.static_configs {
            for address in &group.targets {
                let scheme = config.scheme;
                let (host, port) = split(address, scheme);
                let bracketed = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let instance = format!("{bracketed}:{port}");
                let url = format!("{}://{instance}{path_and_query}", scheme.name());
                if owner(job, &url, cores) == core {
                    owned.push((host, port, instance, url, &group.labels));
                }
            }
        }
        if owned.is_empty() {
            continue;
        }
        let tls = match config.scheme {
            ScrapeScheme::Http => None,
            ScrapeScheme::Https => {
                let settings = config.tls.clone().unwrap_or_else(ClientTlsConfig::default);
                let what = format!("receivers.prometheus job {job:?} tls_config");
                Some(
                    ClientTls::new(&what, &settings, &[alpn::HTTP1]).map_err(|source| {
                        TargetError::Tls {
                            job: job.clone(),
                            source,
                        }
                    })?,
                )
            }
        };
        let auth = authorization(
            job,
            config.basic_auth.as_ref(),
            config.authorization.as_ref(),
        )?;
        let accept = HeaderValue::from_str(&accept_header(&config.scrape_protocols))
            .unwrap_or_else(|_| HeaderValue::from_static("*/*"));
        for (host, port, instance, url, labels) in owned {
            let mut all: BTreeMap<String, String> = labels.clone();
            all.insert("job".into(), job.clone());
            all.insert("instance".into(), instance.clone());
            let interval = config.scrape_interval;
            let offset_ns = (key(job, &url) as u64) % (interval.as_nanos().max(1) as u64);
            out.push(Target {
                labels: ScrapeTarget {
                    job: job.clone(),
                    instance: instance.clone(),
                    scheme: config.scheme.name().to_string(),
                    labels: all.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                    honor_labels: config.honor_labels,
                    honor_timestamps: config.honor_timestamps,
                    sample_limit: config.sample_limit as usize,
                },
                endpoint: Endpoint {
                    authority: HeaderValue::from_str(&instance)
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    host,
                    port,
                    path_and_query: path_and_query.clone(),
                    accept: accept.clone(),
                    authorization: auth.clone(),
                    tls: tls.clone(),
                    body_size_limit: config.body_size_limit as usize,
                    timeout: config.scrape_timeout,
                },
                interval,
                offset: std::time::Duration::from_nanos(offset_ns),
            });
        }
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` escaping of a query name or value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_one_owner_and_its_labels() {
        let mut config = ScrapeConfig::new(
            "node",
            (0..50).map(|i| format!("10.0.0.{i}:9100")).collect(),
        );
        config.params.insert("module".into(), vec!["if mib".into()]);
        config.static_configs[0]
            .labels
            .insert("env".into(), "prod".into());
        let configs = [config, ScrapeConfig::new("own", vec!["[::1]".into()])];
        let per_core: Vec<Vec<Target>> = (0..3)
            .map(|core| owned_targets(&configs, core, 3).unwrap())
            .collect();
        assert_eq!(per_core.iter().map(Vec::len).sum::<usize>(), 51);
        assert!(
            per_core.iter().all(|t| !t.is_empty()),
            "spread over the cores"
        );
        let all: Vec<&Target> = per_core.iter().flatten().collect();
        let v6 = all.iter().find(|t| t.labels.job == "own").unwrap();
        assert_eq!(v6.labels.instance, "[::1]:80");
        assert_eq!((v6.endpoint.host.as_str(), v6.endpoint.port), ("::1", 80));
        let node = all.iter().find(|t| t.labels.job == "node").unwrap();
        assert_eq!(node.endpoint.path_and_query, "/metrics?module=if+mib");
        assert_eq!(
            node.labels
                .labels
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["env", "instance", "job"]
        );
        assert!(node.offset < node.interval);
    }
}
