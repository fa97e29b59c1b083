//! The configuration and its `${ENV}` substitution (`shardtel_config::Config`): arbitrary text
//! with arbitrary variable values; then the value of one variable placed inside a string and
//! outside quotes in a known file.
//!
//! Input: a length-prefixed variable value, then the file. Checks beyond "no panic": a value
//! inside a string comes out exactly as it is; a value outside quotes never adds a key, table
//! or component to the file (it is refused, or it stays one value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardtel_config::Config;
use shardtel_fuzz::Cursor;

const BASE: &str = "[receivers.otlp]\n[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"blackhole\"]\n";

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let value = String::from_utf8_lossy(input.piece()).into_owned();
    let lookup = |name: &str| (name != "UNSET").then(|| value.clone());
    if let Ok(text) = std::str::from_utf8(input.rest()) {
        let _ = Config::from_str_with_env(text, "fuzz.toml", &lookup);
    }

    let text = format!("[engine]\ndata_dir = \"${{V}}\"\n{BASE}");
    if let Ok(config) = Config::from_str_with_env(&text, "fuzz.toml", &lookup) {
        assert_eq!(config.engine.data_dir.as_os_str(), value.as_str());
        only_base(&config);
    }
    let text = format!("[engine]\ndata_dir = '${{V}}'\n{BASE}");
    if let Ok(config) = Config::from_str_with_env(&text, "fuzz.toml", &lookup) {
        assert_eq!(config.engine.data_dir.as_os_str(), value.as_str());
        only_base(&config);
    }
    for text in [
        format!("[engine]\ncores = ${{V}}\n{BASE}"),
        format!("[engine]\ncores = [${{V}}]\n{BASE}"),
        format!("[exporters.x]\ntype = \"blackhole\"\nheaders = {{ a = ${{V}} }}\n{BASE}"),
    ] {
        if let Ok(config) = Config::from_str_with_env(&text, "fuzz.toml", &lookup) {
            only_base(&config);
        }
    }
});

/// The components of `BASE` and nothing else (the third file's `x` aside).
fn only_base(config: &Config) {
    let exporters: Vec<&str> = config
        .exporters
        .keys()
        .map(String::as_str)
        .filter(|n| *n != "x")
        .collect();
    assert_eq!(exporters, ["blackhole"], "a value added an exporter");
    assert!(config.processors.is_empty(), "a value added a processor");
    assert!(config.receivers.kafka.is_none(), "a value added a receiver");
    assert!(config.pipelines.metrics.is_none() && config.pipelines.logs.is_none());
}
