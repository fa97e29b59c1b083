//! Where a network exporter sends, and how: the `endpoint` URL, request `headers` and
//! `timeout` that the OTLP, Prometheus remote-write and Loki exporters share.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP address; IPv6 addresses without brackets.
    pub host: String,
    /// Port (always explicit in the config).
    pub port: u16,
    /// Path including its leading `/`, or empty.
    pub path: String,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 host: the HTTP `Host`/`:authority` value and
    /// what to resolve and connect to.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The path to request: `path`, or `/` when empty.
    pub fn path_or_root(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

impl FromStr for Endpoint {
    type Err = ConfigErrorKind;

    /// Parses `http://host:port[/path]` or `https://...`; the port is required. No user info,
    /// query or fragment.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ConfigErrorKind::InvalidUrl {
            value: text.to_string(),
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(invalid)?;
        if scheme != "http" && scheme != "https" {
            return Err(invalid());
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
            host.parse::<Ipv6Addr>().map_err(|_| invalid())?;
            (host, after.strip_prefix(':').ok_or_else(invalid)?)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(invalid)?;
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !host_ok {
                return Err(invalid());
            }
            (host, port)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if port == 0 {
            return Err(invalid());
        }
        Ok(Endpoint {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// Checks a header name (an HTTP token) and value (visible ASCII, spaces and tabs).
pub fn check_header(name: &str, value: &str) -> Result<(), ConfigErrorKind> {
    let invalid = |reason| ConfigErrorKind::InvalidHeader {
        name: name.to_string(),
        reason,
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(invalid(
            "names may only contain letters, digits and !#$%&'*+-.^_`|~",
        ));
    }
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(invalid("this header is set by shardtel"));
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(invalid(
            "values may only contain visible ASCII, spaces and tabs",
        ));
    }
    Ok(())
}

/// Which URLs an endpoint key accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointUse {
    Grpc,
    Http,
}

pub(crate) fn parse_endpoint(
    value: &DeValue<'_>,
    usage: EndpointUse,
) -> Result<Endpoint, ConfigErrorKind> {
    let text = decode::string(value)?;
    let endpoint: Endpoint = text.parse()?;
    if usage == EndpointUse::Grpc && !endpoint.path.is_empty() && endpoint.path != "/" {
        return Err(ConfigErrorKind::UnexpectedUrlPath { value: text });
    }
    Ok(endpoint)
}

pub(crate) fn required_endpoint(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    usage: EndpointUse,
) -> Option<Endpoint> {
    if s.get("endpoint").is_none() {
        let hint = match usage {
            EndpointUse::Grpc => "endpoint = \"http://host:4317\"",
            EndpointUse::Http => "endpoint = \"http://host:4318\"",
        };
        d.require(s, "endpoint", hint);
        return None;
    }
    d.field(s, "endpoint", |v| parse_endpoint(v, usage))
}

pub(crate) fn timeout(value: &DeValue<'_>) -> Result<Duration, ConfigErrorKind> {
    decode::min_duration(decode::duration(value)?, Duration::from_millis(1))
}

pub(crate) fn decode_headers(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    let Some(value) = s.get("headers") else {
        return headers;
    };
    let table = d.table(s.key("headers"), value, None);
    for (name, value) in table.entries() {
        let name_text = name.get_ref().as_ref();
        let parsed = d.value(table.key(name_text), value, |v| {
            let text = decode::string(v)?;
            check_header(name_text, &text)?;
            Ok(text)
        });
        if let Some(text) = parsed {
            if headers
                .insert(name_text.to_ascii_lowercase(), text)
                .is_some()
            {
                d.report(
                    table.key(name_text),
                    name.span(),
                    ConfigErrorKind::InvalidHeader {
                        name: name_text.to_string(),
                        reason: "set twice (header names are case-insensitive)",
                    },
                );
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_back() {
        for (text, host, port, path, authority) in [
            (
                "http://127.0.0.1:4317",
                "127.0.0.1",
                4317,
                "",
                "127.0.0.1:4317",
            ),
            ("http://tempo:4317/", "tempo", 4317, "/", "tempo:4317"),
            (
                "https://otlp.example.com:443/otlp",
                "otlp.example.com",
                443,
                "/otlp",
                "otlp.example.com:443",
            ),
            (
                "http://[::1]:4318/v1/traces",
                "::1",
                4318,
                "/v1/traces",
                "[::1]:4318",
            ),
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(
                (e.host.as_str(), e.port, e.path.as_str()),
                (host, port, path)
            );
            assert_eq!(e.authority(), authority);
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn bad_endpoints() {
        for bad in [
            "htp:/x",
            "tempo:4317",
            "ftp://tempo:21",
            "http://tempo",
            "http://tempo:",
            "http://tempo:0",
            "http://tempo:65536",
            "http://tempo:43a7",
            "http://:4317",
            "http://user@tempo:4317",
            "http://tempo:4317/x?y=1",
            "http://[::1:4317",
            "http://[zz]:4317",
            "http://te mpo:4317",
        ] {
            assert_eq!(
                bad.parse::<Endpoint>().unwrap_err().to_string(),
                format!("invalid url {bad:?} (expected http://host:port or https://host:port)"),
            );
        }
    }

    #[test]
    fn headers() {
        assert!(check_header("authorization", "Bearer abc").is_ok());
        assert!(check_header("X-Scope-OrgID", "tenant-1").is_ok());
        assert_eq!(
            check_header("bad name", "x").unwrap_err().to_string(),
            "invalid header \"bad name\": names may only contain letters, digits and !#$%&'*+-.^_`|~"
        );
        assert_eq!(
            check_header("x", "a\nb").unwrap_err().to_string(),
            "invalid header \"x\": values may only contain visible ASCII, spaces and tabs"
        );
        assert_eq!(
            check_header("Host", "x").unwrap_err().to_string(),
            "invalid header \"Host\": this header is set by shardtel"
        );
    }
}
