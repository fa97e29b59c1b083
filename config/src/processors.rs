//! `[processors.*]`: transformations between receivers and exporters. This build implements no
//! processor type yet; the dispatch is in place so each type becomes one enum variant.
//!
//! A processor's type is its `type` key, or its table name when that names a type
//! (`[processors.tail_sampling]`), or the part of the name before a `/`
//! (`[processors."tail_sampling/strict"]`), as in the OpenTelemetry Collector.

use std::collections::BTreeMap;

use crate::decode::{Decoder, Section};
use crate::error::{ComponentKind, ConfigErrorKind};

/// One `[processors.NAME]` table.
///
/// This enum has no variants yet: this build implements no processor, so every
/// `[processors.NAME]` table is reported as unsupported and `Config::processors` is always
/// empty. Code that handles processors can already be written as `match processor {}`; adding
/// `TailSampling(TailSamplingConfig)` here (and its case in this module's `decode`) will then make
/// the compiler point at every place that must handle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorConfig {}

impl ProcessorConfig {
    /// Processor types this build implements.
    pub const SUPPORTED: &'static [&'static str] = &[];
    /// Processor types shardtel plans (DESIGN.md) that this build does not implement yet.
    pub const PLANNED: &'static [&'static str] = &[
        "tail_sampling",
        "attributes",
        "resource",
        "filter",
        "probabilistic_sampler",
        "batch",
        "memory_limiter",
    ];
}

pub(crate) fn decode(
    d: &mut Decoder<'_>,
    root: &Section<'_, '_>,
) -> BTreeMap<String, ProcessorConfig> {
    let s = d.map_section(root, "processors");
    let processors = BTreeMap::new();
    for (key, value) in s.entries() {
        let name = key.get_ref().as_ref();
        d.define(ComponentKind::Processor, name);
        let table = d.table(s.key(name), value, None);
        if !table.exists() {
            continue;
        }
        let Some(ty) = d.component_type(
            &table,
            name,
            ComponentKind::Processor,
            ProcessorConfig::SUPPORTED,
            ProcessorConfig::PLANNED,
        ) else {
            continue;
        };
        let span = table.get("type").map_or_else(|| key.span(), |v| v.span());
        // One arm per implemented type goes here, e.g.
        // "tail_sampling" => processors.insert(name.to_string(), ProcessorConfig::TailSampling(..)),
        let kind = if ProcessorConfig::PLANNED.contains(&ty.as_str()) {
            ConfigErrorKind::UnsupportedType {
                kind: ComponentKind::Processor,
                ty,
            }
        } else {
            ConfigErrorKind::UnknownType {
                kind: ComponentKind::Processor,
                ty,
                allowed: ProcessorConfig::SUPPORTED,
            }
        };
        let key = if table.get("type").is_some() {
            table.key("type")
        } else {
            table.path.clone()
        };
        d.report(key, span, kind);
    }
    processors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::type_from_name;

    #[test]
    fn type_defaults_to_the_name_or_its_prefix() {
        let planned = ProcessorConfig::PLANNED;
        assert_eq!(
            type_from_name("tail_sampling", &[], planned),
            Some("tail_sampling")
        );
        assert_eq!(
            type_from_name("tail_sampling/strict", &[], planned),
            Some("tail_sampling")
        );
        assert_eq!(type_from_name("redact", &[], planned), None);
        assert_eq!(type_from_name("otlp", &["otlp"], &[]), Some("otlp"));
    }
}
