//! Reading toml's spanned document tree into the typed sections, collecting every problem with
//! its dotted key and line instead of stopping at the first.
//!
//! Why not `#[derive(Deserialize)]`: serde stops at the first error and drops spans, so it can
//! neither report all problems at once nor give a line for problems found later (a pipeline
//! naming an undefined exporter, two listeners on one port). Each section's `decode` function
//! instead lists its allowed keys once ([`Decoder::section`] rejects every other key, the
//! equivalent of `deny_unknown_fields`), reads each key with a small parser, and records the key's
//! line in [`Locations`] for the validation pass.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::env::SourceMap;
use crate::error::{ComponentKind, ConfigError, ConfigErrorKind};
use crate::units::{format_duration, format_size, parse_duration, parse_size};

/// A value of the document with its byte span.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Lines of the decoded keys, for problems found after decoding.
#[derive(Debug, Default, Clone)]
pub(crate) struct Locations {
    lines: BTreeMap<String, usize>,
    /// Keys present in the file whose value could not be decoded: checks that involve them are
    /// skipped so one mistake is reported once.
    failed: BTreeSet<String>,
    /// Every component name the file defines, including those that failed to decode.
    pub(crate) defined: BTreeMap<ComponentKind, BTreeSet<String>>,
}

impl Locations {
    /// The line of `key`, or of its nearest enclosing key that has one.
    pub(crate) fn line(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.lines.get(key) {
                return Some(*line);
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    /// Whether `key` itself was given in the file (not just an enclosing table).
    pub(crate) fn given(&self, key: &str) -> bool {
        self.lines.contains_key(key) || self.failed.contains(key)
    }

    /// Whether `key` was present but invalid (its problem is already reported).
    pub(crate) fn failed(&self, key: &str) -> bool {
        self.failed.contains(key)
    }
}

/// A table of the document (possibly absent) and its dotted path.
pub(crate) struct Section<'t, 'i> {
    pub(crate) path: String,
    table: Option<&'t DeTable<'i>>,
}

impl<'t, 'i> Section<'t, 'i> {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        self.table?.get(key)
    }

    /// The dotted path of `key` in this table.
    pub(crate) fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Whether the table is present (and is a table).
    pub(crate) fn exists(&self) -> bool {
        self.table.is_some()
    }

    /// The table's entries, in key order.
    pub(crate) fn entries(
        &self,
    ) -> impl Iterator<Item = (&'t Spanned<Cow<'i, str>>, &'t Value<'i>)> {
        self.table.into_iter().flat_map(|t| t.iter())
    }
}

/// Appends `key` to a dotted path, quoting it when it is not a bare TOML key.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let segment = if bare {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    };
    if parent.is_empty() {
        segment.into_owned()
    } else {
        format!("{parent}.{segment}")
    }
}

/// Collects problems and key locations while the sections decode themselves.
pub(crate) struct Decoder<'s> {
    source: &'s SourceMap<'s>,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) locations: Locations,
}

impl<'s> Decoder<'s> {
    pub(crate) fn new(source: &'s SourceMap<'s>) -> Self {
        Decoder {
            source,
            errors: Vec::new(),
            locations: Locations::default(),
        }
    }

    /// Records a problem with `key` at `span`.
    pub(crate) fn report(&mut self, key: String, span: Range<usize>, kind: ConfigErrorKind) {
        let line = self.source.line(span.start);
        self.errors
            .push(ConfigError::new(key, kind).at(self.source.origin, Some(line)));
    }

    /// Records a problem with a key that failed to decode.
    fn report_failed(&mut self, key: String, span: Range<usize>, kind: ConfigErrorKind) {
        self.locations.failed.insert(key.clone());
        self.report(key, span, kind);
    }

    fn record(&mut self, key: &str, span: &Range<usize>) {
        let line = self.source.line(span.start);
        self.locations.lines.insert(key.to_string(), line);
    }

    /// The whole document as the root section, unknown top-level keys reported.
    pub(crate) fn root<'t, 'i>(
        &mut self,
        document: &'t DeTable<'i>,
        allowed: &'static [&'static str],
    ) -> Section<'t, 'i> {
        let section = Section {
            path: String::new(),
            table: Some(document),
        };
        self.check_keys(&section, allowed);
        section
    }

    /// The sub-table `key` of `parent`: absent gives an empty section; a non-table value is
    /// reported; unknown keys inside it are reported.
    pub(crate) fn section<'t, 'i>(
        &mut self,
        parent: &Section<'t, 'i>,
        key: &str,
        allowed: &'static [&'static str],
    ) -> Section<'t, 'i> {
        let path = parent.key(key);
        match parent.get(key) {
            Some(value) => self.table(path, value, Some(allowed)),
            None => Section { path, table: None },
        }
    }

    /// The sub-table `key` of `parent` whose keys are names (`[exporters.NAME]`), so any key is
    /// allowed.
    pub(crate) fn map_section<'t, 'i>(
        &mut self,
        parent: &Section<'t, 'i>,
        key: &str,
    ) -> Section<'t, 'i> {
        let path = parent.key(key);
        match parent.get(key) {
            Some(value) => self.table(path, value, None),
            None => Section { path, table: None },
        }
    }

    /// `value` at `path` as a table; `allowed = None` skips the unknown-key check (the caller
    /// checks once it knows which keys apply, see [`Decoder::check_keys`]).
    pub(crate) fn table<'t, 'i>(
        &mut self,
        path: String,
        value: &'t Value<'i>,
        allowed: Option<&'static [&'static str]>,
    ) -> Section<'t, 'i> {
        let DeValue::Table(table) = value.get_ref() else {
            let found = describe(value.get_ref());
            self.report_failed(
                path.clone(),
                value.span(),
                ConfigErrorKind::WrongType {
                    expected: "a table",
                    found,
                },
            );
            return Section { path, table: None };
        };
        self.record(&path, &value.span());
        let section = Section {
            path,
            table: Some(table),
        };
        if let Some(allowed) = allowed {
            self.check_keys(&section, allowed);
        }
        section
    }

    /// Reports every key of `section` not in `allowed`.
    pub(crate) fn check_keys(
        &mut self,
        section: &Section<'_, '_>,
        allowed: &'static [&'static str],
    ) {
        for (key, _) in section.entries() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                self.report(
                    section.key(key.get_ref()),
                    key.span(),
                    ConfigErrorKind::UnknownKey {
                        allowed: allowed.to_vec(),
                    },
                );
            }
        }
    }

    /// Decodes `key` of `section` with `parse`; `None` when absent or invalid (then reported).
    pub(crate) fn field<T>(
        &mut self,
        section: &Section<'_, '_>,
        key: &str,
        parse: impl FnOnce(&DeValue<'_>) -> Result<T, ConfigErrorKind>,
    ) -> Option<T> {
        let value = section.get(key)?;
        self.value(section.key(key), value, parse)
    }

    /// Like [`Decoder::field`], with a default for an absent or invalid key.
    pub(crate) fn field_or<T>(
        &mut self,
        section: &Section<'_, '_>,
        key: &str,
        default: T,
        parse: impl FnOnce(&DeValue<'_>) -> Result<T, ConfigErrorKind>,
    ) -> T {
        self.field(section, key, parse).unwrap_or(default)
    }

    /// Decodes `value` found at `path`.
    pub(crate) fn value<T>(
        &mut self,
        path: String,
        value: &Value<'_>,
        parse: impl FnOnce(&DeValue<'_>) -> Result<T, ConfigErrorKind>,
    ) -> Option<T> {
        match parse(value.get_ref()) {
            Ok(parsed) => {
                self.record(&path, &value.span());
                Some(parsed)
            }
            Err(kind) => {
                self.report_failed(path, value.span(), kind);
                None
            }
        }
    }

    /// An array of strings (component names); each element's line is recorded as `key[i]`.
    pub(crate) fn string_list(
        &mut self,
        section: &Section<'_, '_>,
        key: &str,
    ) -> Option<Vec<String>> {
        let value = section.get(key)?;
        let path = section.key(key);
        let DeValue::Array(array) = value.get_ref() else {
            let found = describe(value.get_ref());
            self.report_failed(
                path,
                value.span(),
                ConfigErrorKind::WrongType {
                    expected: "an array of names like [\"otlp\"]",
                    found,
                },
            );
            return None;
        };
        self.record(&path, &value.span());
        let mut names = Vec::new();
        for (i, element) in array.iter().enumerate() {
            if let Some(name) = self.value(format!("{path}[{i}]"), element, string) {
                names.push(name);
            }
        }
        Some(names)
    }

    /// Records a problem with `key` at the line of `key` or of its nearest enclosing key.
    pub(crate) fn report_at_key(&mut self, key: String, kind: ConfigErrorKind) {
        let line = self.locations.line(&key);
        self.errors
            .push(ConfigError::new(key, kind).at(self.source.origin, line));
    }

    /// Reports a required key that is absent, at the line of its table.
    pub(crate) fn require(&mut self, section: &Section<'_, '_>, key: &str, hint: &'static str) {
        let path = section.key(key);
        self.locations.failed.insert(path.clone());
        self.report_at_key(path, ConfigErrorKind::MissingKey { hint });
    }

    /// The type of component table `s` named `name`: its `type` key, else its name (or the part
    /// of the name before `/`) when that is a known type. `None` (reported) otherwise.
    pub(crate) fn component_type(
        &mut self,
        s: &Section<'_, '_>,
        name: &str,
        kind: ComponentKind,
        supported: &'static [&'static str],
        planned: &'static [&'static str],
    ) -> Option<String> {
        if s.get("type").is_some() {
            return self.field(s, "type", non_empty_string);
        }
        if let Some(ty) = type_from_name(name, supported, planned) {
            return Some(ty.to_string());
        }
        self.report_at_key(
            s.path.clone(),
            ConfigErrorKind::MissingType {
                kind,
                name: name.to_string(),
                allowed: supported,
            },
        );
        None
    }

    /// Reports that component table `s` (whose name spans `name_span`) has a type this build
    /// does not implement: a planned one, or an unknown one (naming the `supported` types). The
    /// problem is placed at the `type` key, or at the table when its name gave the type.
    pub(crate) fn report_unknown_type(
        &mut self,
        s: &Section<'_, '_>,
        name_span: Range<usize>,
        ty: String,
        kind: ComponentKind,
        supported: &'static [&'static str],
        planned: &'static [&'static str],
    ) {
        let span = s.get("type").map_or(name_span, |v| v.span());
        let problem = if planned.contains(&ty.as_str()) {
            ConfigErrorKind::UnsupportedType { kind, ty }
        } else {
            ConfigErrorKind::UnknownType {
                kind,
                ty,
                allowed: supported,
            }
        };
        let key = if s.get("type").is_some() {
            s.key("type")
        } else {
            s.path.clone()
        };
        self.report(key, span, problem);
    }

    /// Notes that the file defines a component, valid or not.
    pub(crate) fn define(&mut self, kind: ComponentKind, name: &str) {
        self.locations
            .defined
            .entry(kind)
            .or_default()
            .insert(name.to_string());
    }
}

/// The type a component table gets when it has no `type` key: its name, or the part of the name
/// before `/`, if that is a type this build knows of (supported or planned).
pub(crate) fn type_from_name(
    name: &str,
    supported: &[&'static str],
    planned: &[&'static str],
) -> Option<&'static str> {
    let base = name.split_once('/').map_or(name, |(base, _)| base);
    supported
        .iter()
        .chain(planned)
        .find(|t| **t == base)
        .copied()
}

/// Describes a value for a "found ..." message: its type, and its value when short.
pub(crate) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) if s.chars().count() <= 40 => format!("string {s:?}"),
        DeValue::String(_) => "a long string".to_string(),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

fn wrong_type(expected: &'static str, value: &DeValue<'_>) -> ConfigErrorKind {
    ConfigErrorKind::WrongType {
        expected,
        found: describe(value),
    }
}

/// The value of a TOML integer, if it fits an `i64`.
fn integer(value: &DeValue<'_>) -> Option<i64> {
    let integer = value.as_integer()?;
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// Any integer that fits an `i64`.
pub(crate) fn signed(value: &DeValue<'_>) -> Result<i64, ConfigErrorKind> {
    integer(value).ok_or_else(|| wrong_type("an integer", value))
}

/// A finite number: an integer or a float.
pub(crate) fn number(value: &DeValue<'_>) -> Result<f64, ConfigErrorKind> {
    let parsed = match value {
        DeValue::Integer(_) => integer(value).map(|i| i as f64),
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .filter(|f| f.is_finite())
        .ok_or_else(|| wrong_type("a number", value))
}

/// An array of strings.
pub(crate) fn strings(value: &DeValue<'_>) -> Result<Vec<String>, ConfigErrorKind> {
    let DeValue::Array(array) = value else {
        return Err(wrong_type("an array of strings like [\"a\", \"b\"]", value));
    };
    array
        .iter()
        .map(|element| string(element.get_ref()))
        .collect()
}

/// A string.
pub(crate) fn string(value: &DeValue<'_>) -> Result<String, ConfigErrorKind> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| wrong_type("a string", value))
}

/// A non-empty string.
pub(crate) fn non_empty_string(value: &DeValue<'_>) -> Result<String, ConfigErrorKind> {
    let text = string(value)?;
    if text.is_empty() {
        return Err(ConfigErrorKind::Empty);
    }
    Ok(text)
}

/// A non-empty path.
pub(crate) fn path(value: &DeValue<'_>) -> Result<PathBuf, ConfigErrorKind> {
    non_empty_string(value).map(PathBuf::from)
}

/// A boolean.
pub(crate) fn boolean(value: &DeValue<'_>) -> Result<bool, ConfigErrorKind> {
    value
        .as_bool()
        .ok_or_else(|| wrong_type("true or false", value))
}

/// A non-negative integer no larger than `max`.
pub(crate) fn count(value: &DeValue<'_>, max: u64) -> Result<u64, ConfigErrorKind> {
    let n = integer(value).ok_or_else(|| wrong_type("a non-negative integer", value))?;
    let n = u64::try_from(n).map_err(|_| wrong_type("a non-negative integer", value))?;
    if n > max {
        return Err(ConfigErrorKind::TooLarge {
            value: n.to_string(),
            max: max.to_string(),
        });
    }
    Ok(n)
}

/// A byte size: an integer, or a string with a unit (see [`parse_size`]).
pub(crate) fn size(value: &DeValue<'_>) -> Result<u64, ConfigErrorKind> {
    match value {
        DeValue::String(s) => parse_size(s),
        DeValue::Integer(_) => {
            count(value, u64::MAX).map_err(|_| wrong_type("a size like 4194304 or \"4MiB\"", value))
        }
        _ => Err(wrong_type("a size like 4194304 or \"4MiB\"", value)),
    }
}

/// A duration string (see [`parse_duration`]); the integer `0` is accepted as zero.
pub(crate) fn duration(value: &DeValue<'_>) -> Result<Duration, ConfigErrorKind> {
    match value {
        DeValue::String(s) => parse_duration(s),
        DeValue::Integer(_) => match integer(value) {
            Some(0) => Ok(Duration::ZERO),
            Some(n) => Err(ConfigErrorKind::DurationWithoutUnit { value: n }),
            None => Err(wrong_type("a duration like \"10s\"", value)),
        },
        _ => Err(wrong_type("a duration like \"10s\"", value)),
    }
}

/// A listen address, or `false` to disable the listener.
pub(crate) fn listen_address(value: &DeValue<'_>) -> Result<Option<SocketAddr>, ConfigErrorKind> {
    match value {
        DeValue::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ConfigErrorKind::InvalidAddress {
                value: s.to_string(),
            }),
        DeValue::Boolean(false) => Ok(None),
        _ => Err(wrong_type(
            "an address like \"0.0.0.0:4317\", or false to disable",
            value,
        )),
    }
}

/// One word of `allowed`.
pub(crate) fn one_of(
    value: &DeValue<'_>,
    allowed: &'static [&'static str],
) -> Result<&'static str, ConfigErrorKind> {
    let text = value
        .as_str()
        .ok_or_else(|| wrong_type("a string", value))?;
    allowed
        .iter()
        .find(|a| **a == text)
        .copied()
        .ok_or_else(|| ConfigErrorKind::NotOneOf {
            value: text.to_string(),
            allowed,
        })
}

/// Checks `min <= value` for sizes, formatting both in binary units.
pub(crate) fn min_size(value: u64, min: u64) -> Result<u64, ConfigErrorKind> {
    if value < min {
        return Err(ConfigErrorKind::TooSmall {
            value: format_size(value),
            min: format_size(min),
        });
    }
    Ok(value)
}

/// A size (`"4MiB"`, bytes) with `min <= size <= max`, both reported as sizes.
pub(crate) fn size_between(
    value: &DeValue<'_>,
    min: u64,
    max: u64,
) -> Result<usize, ConfigErrorKind> {
    let bytes = min_size(size(value)?, min)?;
    if bytes > max {
        return Err(ConfigErrorKind::TooLarge {
            value: format_size(bytes),
            max: format_size(max),
        });
    }
    Ok(bytes as usize)
}

/// Checks `min <= value <= max` for plain numbers.
pub(crate) fn in_range(value: u64, min: u64, max: u64) -> Result<u64, ConfigErrorKind> {
    if value < min {
        return Err(ConfigErrorKind::TooSmall {
            value: value.to_string(),
            min: min.to_string(),
        });
    }
    if value > max {
        return Err(ConfigErrorKind::TooLarge {
            value: value.to_string(),
            max: max.to_string(),
        });
    }
    Ok(value)
}

/// Checks `min <= value` for durations.
pub(crate) fn min_duration(value: Duration, min: Duration) -> Result<Duration, ConfigErrorKind> {
    if value < min {
        return Err(ConfigErrorKind::TooSmall {
            value: format_duration(value),
            min: format_duration(min),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Spanned<DeTable<'_>> {
        DeTable::parse(text).unwrap()
    }

    fn value_of<'i>(doc: &Spanned<DeTable<'i>>, key: &str) -> DeValue<'i> {
        doc.get_ref().get(key).unwrap().get_ref().clone()
    }

    #[test]
    fn join_quotes_keys_that_are_not_bare() {
        assert_eq!(join("", "engine"), "engine");
        assert_eq!(join("exporters", "tempo"), "exporters.tempo");
        assert_eq!(join("exporters", "otlp/tempo"), "exporters.\"otlp/tempo\"");
        assert_eq!(join("a", "b.c"), "a.\"b.c\"");
        assert_eq!(join("a", ""), "a.\"\"");
    }

    #[test]
    fn leaf_parsers() {
        let doc = parse(
            "i = 5\nneg = -1\nhex = 0x10\ns = \"4KiB\"\nz = 0\nf = 1.5\nb = false\nd = 1979-05-27\narr = [1]",
        );
        assert_eq!(count(&value_of(&doc, "hex"), 100).unwrap(), 16);
        assert_eq!(
            count(&value_of(&doc, "neg"), 100).unwrap_err().to_string(),
            "expected a non-negative integer, found integer -1"
        );
        assert_eq!(
            count(&value_of(&doc, "i"), 4).unwrap_err().to_string(),
            "5 is too large (maximum 4)"
        );
        assert_eq!(size(&value_of(&doc, "s")).unwrap(), 4096);
        assert_eq!(size(&value_of(&doc, "i")).unwrap(), 5);
        assert_eq!(
            size(&value_of(&doc, "f")).unwrap_err().to_string(),
            "expected a size like 4194304 or \"4MiB\", found float 1.5"
        );
        assert_eq!(duration(&value_of(&doc, "z")).unwrap(), Duration::ZERO);
        assert_eq!(
            duration(&value_of(&doc, "i")).unwrap_err().to_string(),
            "duration 5 has no unit (write e.g. \"5s\" or \"5ms\")"
        );
        assert_eq!(listen_address(&value_of(&doc, "b")).unwrap(), None);
        assert_eq!(
            string(&value_of(&doc, "d")).unwrap_err().to_string(),
            "expected a string, found datetime 1979-05-27"
        );
        assert_eq!(
            boolean(&value_of(&doc, "arr")).unwrap_err().to_string(),
            "expected true or false, found an array"
        );
        assert_eq!(
            one_of(&value_of(&doc, "s"), &["a", "b"])
                .unwrap_err()
                .to_string(),
            "invalid value \"4KiB\" (allowed: \"a\", \"b\")"
        );
    }

    #[test]
    fn locations_fall_back_to_the_enclosing_key() {
        let mut locations = Locations::default();
        locations.lines.insert("exporters.tempo".into(), 7);
        locations
            .lines
            .insert("exporters.tempo.batch.max_items".into(), 9);
        assert_eq!(locations.line("exporters.tempo.batch.max_items"), Some(9));
        assert_eq!(locations.line("exporters.tempo.batch.max_bytes"), Some(7));
        assert_eq!(locations.line("pipelines.traces.exporters[0]"), None);
    }
}
