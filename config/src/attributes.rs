//! `type = "attributes"` and `type = "resource"`: ordered actions on attributes, following the
//! OpenTelemetry Collector's attributes and resource processors.
//!
//! ```toml
//! [processors.redact]
//! type = "attributes"
//! [[processors.redact.actions]]
//! key = "http.url"
//! action = "hash"
//! [[processors.redact.actions]]
//! key = "log.body"            # the log record's body
//! action = "mask"
//! pattern = '\d{4}-\d{4}-\d{4}-\d{4}'
//! replacement = "[REDACTED]"
//! ```
//!
//! Every regex is compiled here, so a bad pattern is a configuration error with its line.

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// The pseudo key that names a log record's body in `attributes` actions.
pub const LOG_BODY_KEY: &str = "log.body";

/// `type = "attributes"`: actions on span, log record and data point attributes (and log
/// bodies through the key `log.body`), applied in order to each item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributesConfig {
    /// The actions, at least one, applied in order.
    pub actions: Vec<AttributeAction>,
    /// Also apply the actions to resource attributes. Default false.
    pub include_resource: bool,
}

impl AttributesConfig {
    /// The keys `type = "attributes"` accepts.
    pub const KEYS: &'static [&'static str] = &["type", "actions", "include_resource"];
}

/// `type = "resource"`: actions on resource attributes, applied in order to each resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    /// The actions (key `attributes`, as in the OpenTelemetry Collector), at least one.
    pub attributes: Vec<AttributeAction>,
}

impl ResourceConfig {
    /// The keys `type = "resource"` accepts.
    pub const KEYS: &'static [&'static str] = &["type", "attributes"];
}

/// One action: which keys it touches and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeAction {
    /// The keys the action applies to.
    pub key: KeyMatch,
    /// What it does.
    pub kind: ActionKind,
}

/// How an action selects attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    /// `key = "http.url"`: exactly this key (`log.body`: the log record's body).
    Exact(String),
    /// `pattern` (delete, hash) or `key_pattern` (update, delete, hash, mask): every key the
    /// regex matches (unanchored). Never matches the log body.
    Regex(String),
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// Adds the key when it is absent.
    Insert(ValueSource),
    /// Sets the value when the key is present.
    Update(ValueSource),
    /// Sets the value, adding the key when absent.
    Upsert(ValueSource),
    /// Removes the key.
    Delete,
    /// Replaces the value with the lowercase hex SHA-256 of its bytes.
    Hash,
    /// Applies `pattern` to the string value and upserts each named group's match as an
    /// attribute named after the group.
    Extract {
        /// A regex with at least one named group, e.g. `^/api/(?P<version>v\d+)/`.
        pattern: String,
    },
    /// Replaces every match of `pattern` inside the string value with `replacement`
    /// (`$1`, `$name` expand to groups).
    Mask {
        /// The regex to replace.
        pattern: String,
        /// The replacement. Default `****`.
        replacement: String,
    },
}

impl ActionKind {
    /// The accepted `action` values.
    pub const NAMES: &'static [&'static str] = &[
        "insert", "update", "upsert", "delete", "hash", "extract", "mask",
    ];
    /// Default `replacement` of `mask`.
    pub const DEFAULT_REPLACEMENT: &'static str = "****";

    /// The `action` value.
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Insert(_) => "insert",
            ActionKind::Update(_) => "update",
            ActionKind::Upsert(_) => "upsert",
            ActionKind::Delete => "delete",
            ActionKind::Hash => "hash",
            ActionKind::Extract { .. } => "extract",
            ActionKind::Mask { .. } => "mask",
        }
    }

    fn keys(action: &str) -> &'static [&'static str] {
        match action {
            "insert" | "upsert" => &["action", "key", "value", "from_attribute"],
            "update" => &["action", "key", "key_pattern", "value", "from_attribute"],
            "delete" | "hash" => &["action", "key", "pattern", "key_pattern"],
            "extract" => &["action", "key", "pattern"],
            "mask" => &["action", "key", "key_pattern", "pattern", "replacement"],
            _ => &["action", "key"],
        }
    }
}

/// Where a new value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// `value = ...`: a constant (write `"${NAME}"` to take it from the environment).
    Value(AttributeValue),
    /// `from_attribute = "key"`: the value of another attribute of the same item (the action
    /// does nothing when that attribute is absent).
    FromAttribute(String),
}

/// A constant attribute value from the configuration.
#[derive(Debug, Clone)]
pub enum AttributeValue {
    /// A TOML string.
    String(String),
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Double(f64),
    /// A TOML boolean.
    Bool(bool),
}

impl PartialEq for AttributeValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (AttributeValue::String(a), AttributeValue::String(b)) => a == b,
            (AttributeValue::Int(a), AttributeValue::Int(b)) => a == b,
            (AttributeValue::Double(a), AttributeValue::Double(b)) => a.to_bits() == b.to_bits(),
            (AttributeValue::Bool(a), AttributeValue::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for AttributeValue {}

/// A string, integer, float or boolean.
pub(crate) fn attribute_value(value: &DeValue<'_>) -> Result<AttributeValue, ConfigErrorKind> {
    Ok(match value {
        DeValue::String(s) => AttributeValue::String(s.to_string()),
        DeValue::Integer(_) => AttributeValue::Int(decode::signed(value)?),
        DeValue::Float(_) => AttributeValue::Double(decode::number(value)?),
        DeValue::Boolean(b) => AttributeValue::Bool(*b),
        other => {
            return Err(ConfigErrorKind::WrongType {
                expected: "a string, integer, float or boolean",
                found: decode::describe(other),
            })
        }
    })
}

/// Compiles `pattern`, turning a failure into a config error.
pub(crate) fn check_regex(pattern: &str) -> Result<regex::Regex, ConfigErrorKind> {
    regex::Regex::new(pattern).map_err(|e| ConfigErrorKind::InvalidRegex {
        pattern: pattern.to_string(),
        message: e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    })
}

fn regex_string(value: &DeValue<'_>) -> Result<String, ConfigErrorKind> {
    let pattern = decode::non_empty_string(value)?;
    check_regex(&pattern)?;
    Ok(pattern)
}

pub(crate) fn decode_attributes(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> Option<AttributesConfig> {
    d.check_keys(s, AttributesConfig::KEYS);
    let include_resource = d.field_or(s, "include_resource", false, decode::boolean);
    let actions = decode_actions(d, s, "actions", true)?;
    Some(AttributesConfig {
        actions,
        include_resource,
    })
}

pub(crate) fn decode_resource(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<ResourceConfig> {
    d.check_keys(s, ResourceConfig::KEYS);
    let attributes = decode_actions(d, s, "attributes", false)?;
    Some(ResourceConfig { attributes })
}

/// The array of action tables at `key` of `s`: required, non-empty. `None` when absent or when
/// any action is invalid (each problem is reported).
fn decode_actions(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    key: &str,
    log_body: bool,
) -> Option<Vec<AttributeAction>> {
    let path = s.key(key);
    let Some(value) = s.get(key) else {
        d.require(
            s,
            key,
            "[[...actions]] tables like { key = \"user.email\", action = \"delete\" }",
        );
        return None;
    };
    let DeValue::Array(list) = value.get_ref() else {
        d.value(path, value, |v| {
            Err::<(), _>(ConfigErrorKind::WrongType {
                expected: "an array of action tables ([[...]] or [{ key = .., action = .. }])",
                found: decode::describe(v),
            })
        });
        return None;
    };
    if list.is_empty() {
        d.value(path, value, |_| Err::<(), _>(ConfigErrorKind::Empty));
        return None;
    }
    d.value(path.clone(), value, |_| Ok(()));
    let mut actions = Vec::new();
    let mut ok = true;
    for (i, element) in list.iter().enumerate() {
        let table = d.table(format!("{path}[{i}]"), element, None);
        if !table.exists() {
            ok = false;
            continue;
        }
        match decode_action(d, &table, log_body) {
            Some(action) => actions.push(action),
            None => ok = false,
        }
    }
    ok.then_some(actions)
}

fn decode_action(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    log_body: bool,
) -> Option<AttributeAction> {
    let Some(action_value) = s.get("action") else {
        d.require(
            s,
            "action",
            "action = \"delete\" (or insert, update, upsert, hash, extract, mask)",
        );
        return None;
    };
    let action = d.value(s.key("action"), action_value, |v| {
        decode::one_of(v, ActionKind::NAMES)
    })?;
    d.check_keys(s, ActionKind::keys(action));
    let exact = d.field(s, "key", decode::non_empty_string);
    if let (Some(key), false) = (&exact, log_body) {
        if key == LOG_BODY_KEY {
            d.report_at_key(s.key("key"), ConfigErrorKind::LogBodyNotAllowed);
            return None;
        }
    }
    // `pattern` names keys for delete and hash (the Collector's meaning); values otherwise.
    let key_regex_names: &[&'static str] = match action {
        "delete" | "hash" => &["key_pattern", "pattern"],
        "update" | "mask" => &["key_pattern"],
        _ => &[],
    };
    let mut key_regex = None;
    let mut failed = s.get("key").is_some() && exact.is_none();
    for name in key_regex_names {
        if s.get(name).is_some() {
            if key_regex.is_some() || s.get("key").is_some() {
                let span = s.get(name).map(|v| v.span()).unwrap_or_default();
                d.report(
                    s.key(name),
                    span,
                    ConfigErrorKind::KeyConflict {
                        keys: key_regex_names_with_key(action),
                    },
                );
                return None;
            }
            key_regex = d.field(s, name, regex_string);
            failed |= key_regex.is_none();
        }
    }
    let key = match (exact, key_regex) {
        (Some(k), None) => KeyMatch::Exact(k),
        (None, Some(p)) => KeyMatch::Regex(p),
        _ if failed => return None,
        _ => {
            d.report_at_key(
                s.path.clone(),
                ConfigErrorKind::MissingOneOf {
                    keys: key_regex_names_with_key(action),
                },
            );
            return None;
        }
    };
    let kind = match action {
        "insert" | "update" | "upsert" => {
            let source = value_source(d, s)?;
            match action {
                "insert" => ActionKind::Insert(source),
                "update" => ActionKind::Update(source),
                _ => ActionKind::Upsert(source),
            }
        }
        "delete" => ActionKind::Delete,
        "hash" => ActionKind::Hash,
        "extract" => {
            let Some(v) = s.get("pattern") else {
                d.require(s, "pattern", "pattern = '^/api/(?P<version>v\\d+)/'");
                return None;
            };
            let pattern = d.value(s.key("pattern"), v, |v| {
                let pattern = decode::non_empty_string(v)?;
                let re = check_regex(&pattern)?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(ConfigErrorKind::NoNamedGroup { pattern });
                }
                Ok(pattern)
            })?;
            ActionKind::Extract { pattern }
        }
        _ => {
            let Some(v) = s.get("pattern") else {
                d.require(s, "pattern", "pattern = '\\d{4}-\\d{4}-\\d{4}-\\d{4}'");
                return None;
            };
            let pattern = d.value(s.key("pattern"), v, regex_string)?;
            let replacement = d.field_or(
                s,
                "replacement",
                ActionKind::DEFAULT_REPLACEMENT.to_string(),
                decode::string,
            );
            ActionKind::Mask {
                pattern,
                replacement,
            }
        }
    };
    Some(AttributeAction { key, kind })
}

fn key_regex_names_with_key(action: &str) -> &'static [&'static str] {
    match action {
        "delete" | "hash" => &["key", "key_pattern", "pattern"],
        "update" | "mask" => &["key", "key_pattern"],
        _ => &["key"],
    }
}

fn value_source(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<ValueSource> {
    match (s.get("value"), s.get("from_attribute")) {
        (Some(_), Some(v)) => {
            d.report(
                s.key("from_attribute"),
                v.span(),
                ConfigErrorKind::KeyConflict {
                    keys: &["value", "from_attribute"],
                },
            );
            None
        }
        (Some(_), None) => d.field(s, "value", attribute_value).map(ValueSource::Value),
        (None, Some(_)) => d
            .field(s, "from_attribute", decode::non_empty_string)
            .map(ValueSource::FromAttribute),
        (None, None) => {
            d.report_at_key(
                s.path.clone(),
                ConfigErrorKind::MissingOneOf {
                    keys: &["value", "from_attribute"],
                },
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pipeline_through, problems};
    use crate::{Config, ProcessorConfig};

    fn load(text: &str) -> Result<Config, crate::ConfigErrors> {
        let env = |name: &str| (name == "HOST_NAME").then(|| "node-7".to_string());
        let base = pipeline_through("logs", &["p"]);
        crate::testing::load(&format!("{text}{base}"), &env)
    }

    fn processor(text: &str) -> ProcessorConfig {
        crate::testing::processor(load(text), "p")
    }

    fn err(text: &str) -> String {
        problems(load(text))
    }

    #[test]
    fn design_redact_example_parses_as_written() {
        let p = processor(
            r#"[processors.p]
type = "attributes"
[[processors.p.actions]]
key = "http.url"
action = "hash"
[[processors.p.actions]]
key = "user.email"
action = "delete"
[[processors.p.actions]]
key = "log.body"            # the log record's body
action = "mask"
pattern = '\d{4}-\d{4}-\d{4}-\d{4}'
replacement = "[REDACTED]"
"#,
        );
        let ProcessorConfig::Attributes(a) = p else {
            panic!("{p:?}")
        };
        assert!(!a.include_resource);
        assert_eq!(
            a.actions,
            vec![
                AttributeAction {
                    key: KeyMatch::Exact("http.url".into()),
                    kind: ActionKind::Hash
                },
                AttributeAction {
                    key: KeyMatch::Exact("user.email".into()),
                    kind: ActionKind::Delete
                },
                AttributeAction {
                    key: KeyMatch::Exact("log.body".into()),
                    kind: ActionKind::Mask {
                        pattern: r"\d{4}-\d{4}-\d{4}-\d{4}".into(),
                        replacement: "[REDACTED]".into()
                    }
                },
            ]
        );
    }

    #[test]
    fn every_action_and_key_form() {
        let p = processor(
            r#"[processors.p]
type = "attributes"
include_resource = true
actions = [
  { key = "env", action = "insert", value = "prod" },
  { key = "retries", action = "upsert", value = 3 },
  { key_pattern = "^secret\\.", action = "update", value = false },
  { key = "copy", action = "upsert", from_attribute = "env" },
  { pattern = "token$", action = "delete" },
  { key_pattern = "^x-", action = "hash" },
  { key = "http.route", action = "extract", pattern = '^/api/(?P<version>v\d+)/' },
  { key_pattern = "email", action = "mask", pattern = "@.*" },
  { key = "ratio", action = "update", value = 0.5 },
]
"#,
        );
        let ProcessorConfig::Attributes(a) = p else {
            panic!()
        };
        assert!(a.include_resource);
        let kinds: Vec<&str> = a.actions.iter().map(|a| a.kind.name()).collect();
        assert_eq!(
            kinds,
            [
                "insert", "upsert", "update", "upsert", "delete", "hash", "extract", "mask",
                "update"
            ]
        );
        assert_eq!(
            a.actions[1].kind,
            ActionKind::Upsert(ValueSource::Value(AttributeValue::Int(3)))
        );
        assert_eq!(a.actions[2].key, KeyMatch::Regex("^secret\\.".into()));
        assert_eq!(
            a.actions[3].kind,
            ActionKind::Upsert(ValueSource::FromAttribute("env".into()))
        );
        assert_eq!(a.actions[4].key, KeyMatch::Regex("token$".into()));
        assert_eq!(
            a.actions[7].kind,
            ActionKind::Mask {
                pattern: "@.*".into(),
                replacement: "****".into()
            }
        );
        assert_eq!(
            a.actions[8].kind,
            ActionKind::Update(ValueSource::Value(AttributeValue::Double(0.5)))
        );
    }

    #[test]
    fn resource_actions_take_values_from_the_environment() {
        let p = processor(
            r#"[processors.p]
type = "resource"
[[processors.p.attributes]]
key = "host.name"
action = "upsert"
value = "${HOST_NAME}"
[[processors.p.attributes]]
key = "cloud.region"
action = "insert"
value = "${REGION:-eu-west-1}"
[[processors.p.attributes]]
key = "telemetry.sdk.name"
action = "delete"
"#,
        );
        let ProcessorConfig::Resource(r) = p else {
            panic!()
        };
        assert_eq!(
            r.attributes[0].kind,
            ActionKind::Upsert(ValueSource::Value(AttributeValue::String("node-7".into())))
        );
        assert_eq!(
            r.attributes[1].kind,
            ActionKind::Insert(ValueSource::Value(AttributeValue::String(
                "eu-west-1".into()
            )))
        );
        assert_eq!(r.attributes[2].kind, ActionKind::Delete);
    }

    #[test]
    fn action_errors_name_line_key_and_what_is_allowed() {
        assert_eq!(
            err(r#"[processors.p]
type = "attributes"
[[processors.p.actions]]
key = "a"
action = "remove"
[[processors.p.actions]]
action = "delete"
[[processors.p.actions]]
key = "b"
action = "mask"
pattern = "(["
[[processors.p.actions]]
key = "c"
action = "insert"
[[processors.p.actions]]
key = "d"
action = "extract"
pattern = "v\\d+"
[[processors.p.actions]]
key = "e"
action = "hash"
pattern = "f"
[[processors.p.actions]]
key = "g"
action = "delete"
value = 1
"#),
            "shardtel.toml:5: processors.p.actions[0].action: invalid value \"remove\" (allowed: \"insert\", \"update\", \"upsert\", \"delete\", \"hash\", \"extract\", \"mask\")\n\
             shardtel.toml:6: processors.p.actions[1]: missing required key (set at least one of key, key_pattern, pattern)\n\
             shardtel.toml:11: processors.p.actions[2].pattern: invalid regex \"([\": unclosed character class\n\
             shardtel.toml:12: processors.p.actions[3]: missing required key (set at least one of value, from_attribute)\n\
             shardtel.toml:18: processors.p.actions[4].pattern: regex \"v\\\\d+\" has no named group (write e.g. (?P<name>...))\n\
             shardtel.toml:22: processors.p.actions[5].pattern: set only one of key, key_pattern, pattern\n\
             shardtel.toml:26: processors.p.actions[6].value: unknown key (allowed: action, key, pattern, key_pattern)"
        );
        assert_eq!(
            err("[processors.p]\ntype = \"attributes\"\nactions = []\n"),
            "shardtel.toml:3: processors.p.actions: must not be empty"
        );
        assert_eq!(
            err("[processors.p]\ntype = \"attributes\"\nfoo = 1\n"),
            "shardtel.toml:1: processors.p.actions: missing required key ([[...actions]] tables like { key = \"user.email\", action = \"delete\" })\n\
             shardtel.toml:3: processors.p.foo: unknown key (allowed: type, actions, include_resource)"
        );
        assert_eq!(
            err("[processors.p]\ntype = \"resource\"\nattributes = [{ key = \"log.body\", action = \"delete\" }]\n"),
            "shardtel.toml:3: processors.p.attributes[0].key: \"log.body\" names a log record's body, which the resource processor cannot change"
        );
    }
}
