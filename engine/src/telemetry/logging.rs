//! A small stderr logger for the `log` facade: `LEVEL target: message`, with a level from
//! `[telemetry] log_level` or `SHARDTEL_LOG`.

use std::io::Write;

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{}.{:03} {:5} {}: {}",
            now.as_secs(),
            now.subsec_millis(),
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger; `level` is one of error, warn, info, debug, trace.
/// `SHARDTEL_LOG` in the environment overrides it.
pub fn init(level: &str) {
    let level = std::env::var("SHARDTEL_LOG").unwrap_or_else(|_| level.to_string());
    let filter = level.parse().unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter);
    }
}
