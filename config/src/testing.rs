//! Helpers for this crate's unit tests: a snippet under test, followed by the smallest valid
//! rest of a file, loaded as `shardtel.toml`.

use crate::{Config, ConfigErrors, ProcessorConfig};

/// The rest of a file for a snippet that defines processors: an OTLP receiver, a blackhole
/// exporter and the `signal` pipeline through `processors`, in six lines.
pub(crate) fn pipeline_through(signal: &str, processors: &[&str]) -> String {
    let names: Vec<String> = processors.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[receivers.otlp]\n[exporters.blackhole]\n[pipelines.{signal}]\nreceivers = [\"otlp\"]\nprocessors = [{}]\nexporters = [\"blackhole\"]\n",
        names.join(", ")
    )
}

/// Loads `text` as `shardtel.toml`, with environment variables from `env`.
pub(crate) fn load(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    Config::from_str_with_env(text, "shardtel.toml", env)
}

/// The problems found, as displayed; panics when the file loaded.
pub(crate) fn problems(loaded: Result<Config, ConfigErrors>) -> String {
    match loaded {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.to_string(),
    }
}

/// Processor `name` of a file that loads; panics with the problems otherwise.
pub(crate) fn processor(loaded: Result<Config, ConfigErrors>, name: &str) -> ProcessorConfig {
    match loaded {
        Ok(mut config) => config
            .processors
            .remove(name)
            .unwrap_or_else(|| panic!("no processor {name:?}")),
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}
