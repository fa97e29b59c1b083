//! The stderr logger behind the `log` facade: one line per record, with an RFC 3339 UTC
//! timestamp, the level, the core (on a reactor's threads) and the target, as text for people
//! or as one JSON object per line for log shippers (`[telemetry] log_format`).
//!
//! Text: `2026-12-06T10:00:00.123Z INFO  core=1 shardtel_engine::reactor: message`.
//!
//! JSON: `{"ts":"2026-12-06T10:00:00.123Z","level":"info","logger":"shardtel_engine::reactor",
//! "caller":"engine/src/reactor/mod.rs:120","msg":"message","core":1}`: the field names of the
//! OpenTelemetry Collector's JSON logs (zap's `ts`, `level`, `logger`, `caller`, `msg`), lower
//! case levels as zap writes them; `core` only on a core's threads.
//!
//! The filter is `[telemetry] log_level` (or `SHARDTEL_LOG`): a level, optionally with levels
//! per module (`"info,shardtel_engine::receivers=debug"`; the longest matching module wins).
//!
//! A line is formatted into one buffer and written with one `write` under stderr's lock, so
//! lines of different threads never interleave. Logging is never on the hot path per span:
//! warnings that could repeat per request are rate-limited where they are raised, and each
//! says how many it suppressed since the last line.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};
use shardtel_config::LogFormat;

/// Which records pass: a default level and levels per module (target prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// (module, level), longest module first.
    modules: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses a filter checked by [`shardtel_config::check_log_level`]; `None` if it is not
    /// valid.
    pub fn parse(spec: &str) -> Option<Filter> {
        shardtel_config::check_log_level(spec).ok()?;
        let mut filter = Filter {
            default: LevelFilter::Info,
            modules: Vec::new(),
        };
        for directive in spec.split(',') {
            match directive.trim().split_once('=') {
                Some((module, level)) => filter
                    .modules
                    .push((module.trim().to_string(), level.trim().parse().ok()?)),
                None => filter.default = directive.trim().parse().ok()?,
            }
        }
        filter
            .modules
            .sort_by_key(|(module, _)| std::cmp::Reverse(module.len()));
        Some(filter)
    }

    /// The level that applies to `target`.
    fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .find(|(module, _)| {
                target
                    .strip_prefix(module.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, level)| *level)
    }

    /// The most verbose level any target may log at (for [`log::set_max_level`]).
    fn max(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, Ord::max)
    }

    fn enabled(&self, level: Level, target: &str) -> bool {
        level <= self.level_for(target)
    }
}

struct StderrLogger {
    filter: Filter,
    format: LogFormat,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata.level(), metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(self.format, SystemTime::now(), current_core(), record);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The prefix of a reactor thread's name: `process` names the executors `shardtel-core{id}`,
/// and glommio names their threads `shardtel-core{id}-{executor number}`.
const CORE_THREAD_PREFIX: &str = "shardtel-core";

thread_local! {
    /// This thread's core, read from its name once.
    static CORE: Cell<Option<Option<usize>>> = const { Cell::new(None) };
}

/// The core whose reactor runs on this thread, if any.
fn current_core() -> Option<usize> {
    CORE.with(|cached| {
        if let Some(core) = cached.get() {
            return core;
        }
        let core = std::thread::current().name().and_then(core_of_thread);
        cached.set(Some(core));
        core
    })
}

/// The core in a thread name like `shardtel-core3-7`.
fn core_of_thread(name: &str) -> Option<usize> {
    let id = name.strip_prefix(CORE_THREAD_PREFIX)?;
    id.split('-').next()?.parse().ok()
}

/// One log line, newline included.
pub fn format_line(
    format: LogFormat,
    now: SystemTime,
    core: Option<usize>,
    record: &Record<'_>,
) -> String {
    let ts = humantime::format_rfc3339_millis(now);
    let mut line = String::with_capacity(128);
    match format {
        LogFormat::Text => {
            let _ = write!(line, "{ts} {:<5} ", record.level());
            if let Some(core) = core {
                let _ = write!(line, "core={core} ");
            }
            let _ = writeln!(line, "{}: {}", record.target(), record.args());
        }
        LogFormat::Json => {
            let _ = write!(
                line,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"logger\":",
                zap_level(record.level())
            );
            json_string(&mut line, record.target());
            if let (Some(file), Some(number)) = (record.file(), record.line()) {
                line.push_str(",\"caller\":");
                json_string(&mut line, &format!("{file}:{number}"));
            }
            line.push_str(",\"msg\":");
            json_string(&mut line, &record.args().to_string());
            if let Some(core) = core {
                let _ = write!(line, ",\"core\":{core}");
            }
            line.push_str("}\n");
        }
    }
    line
}

/// The level as zap (and so the OpenTelemetry Collector) writes it in JSON.
fn zap_level(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Appends `s` as a JSON string (RFC 8259 escapes; other characters as they are).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Installs the logger with the filter `level` (`SHARDTEL_LOG` in the environment overrides
/// it) and `format`. A second call changes nothing.
pub fn init(level: &str, format: LogFormat) {
    let from_env = std::env::var("SHARDTEL_LOG").ok();
    let env_filter = from_env.as_deref().map(|spec| (spec, Filter::parse(spec)));
    let filter = match &env_filter {
        Some((_, Some(filter))) => filter.clone(),
        _ => Filter::parse(level).unwrap_or_else(|| Filter::parse("info").expect("valid")),
    };
    let max = filter.max();
    let logger = Box::leak(Box::new(StderrLogger { filter, format }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
        if let Some((spec, None)) = env_filter {
            log::warn!(
                "SHARDTEL_LOG={spec:?} is not a valid log filter (expected off, error, warn, info, debug or trace, optionally per module: \"info,shardtel_engine=debug\"); using {level:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_line(format: LogFormat, core: Option<usize>, message: &str) -> String {
        let at = humantime::parse_rfc3339("2026-12-06T10:00:00.123Z").unwrap();
        format_line(
            format,
            at,
            core,
            &Record::builder()
                .level(Level::Warn)
                .target("shardtel_engine::reactor")
                .file(Some("engine/src/reactor/mod.rs"))
                .line(Some(42))
                .args(format_args!("{message}"))
                .build(),
        )
    }

    #[test]
    fn text_lines_carry_time_level_core_and_target() {
        assert_eq!(
            record_line(LogFormat::Text, Some(3), "queue full"),
            "2026-12-06T10:00:00.123Z WARN  core=3 shardtel_engine::reactor: queue full\n"
        );
        assert_eq!(
            record_line(LogFormat::Text, None, "queue full"),
            "2026-12-06T10:00:00.123Z WARN  shardtel_engine::reactor: queue full\n"
        );
    }

    #[test]
    fn json_lines_use_the_collectors_field_names_and_escape() {
        assert_eq!(
            record_line(LogFormat::Json, Some(0), "a \"quoted\"\nline\t\u{1} \\ é"),
            "{\"ts\":\"2026-12-06T10:00:00.123Z\",\"level\":\"warn\",\"logger\":\"shardtel_engine::reactor\",\"caller\":\"engine/src/reactor/mod.rs:42\",\"msg\":\"a \\\"quoted\\\"\\nline\\t\\u0001 \\\\ é\",\"core\":0}\n"
        );
        let line = record_line(LogFormat::Json, None, "x");
        assert!(!line.contains("core"), "{line}");
    }

    #[test]
    fn cores_from_thread_names() {
        assert_eq!(core_of_thread("shardtel-core3-7"), Some(3));
        assert_eq!(core_of_thread("shardtel-core12"), Some(12));
        assert_eq!(core_of_thread("shardtel-watch3"), None);
        assert_eq!(core_of_thread("main"), None);
    }

    #[test]
    fn filters_pick_the_longest_module() {
        let f =
            Filter::parse("warn,shardtel_engine=debug,shardtel_engine::receivers=error").unwrap();
        assert_eq!(f.max(), LevelFilter::Debug);
        assert!(f.enabled(Level::Debug, "shardtel_engine::process"));
        assert!(f.enabled(Level::Debug, "shardtel_engine"));
        assert!(!f.enabled(Level::Warn, "shardtel_engine::receivers::otlp"));
        assert!(f.enabled(Level::Error, "shardtel_engine::receivers"));
        assert!(!f.enabled(Level::Info, "shardtel_sinks::queue"));
        assert!(!f.enabled(Level::Debug, "shardtel_engineering"));
        assert!(f.enabled(Level::Warn, "shardtel_engineering"));
        assert_eq!(Filter::parse("TRACE").unwrap().max(), LevelFilter::Trace);
        assert_eq!(Filter::parse("loud"), None);
    }
}
