//! The `shardtel` binary: run on the embedded default configuration or a
//! file, validate a file, or print the embedded default.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardtel_config::{Config, DEFAULT_CONFIG};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `shardtel --help` opens with: what shardtel is, for someone who just installed it.
const ABOUT: &str = "shardtel: an OpenTelemetry collector for traces, metrics and logs.

It receives OTLP over gRPC and HTTP (or from Kafka), filters it, rewrites attributes,
tail-samples whole traces, batches it and exports it to OTLP backends, Kafka, Prometheus
remote write, Loki or files. One reactor runs pinned to each CPU core; by default a request
is on disk before its client is acknowledged.

Without a command it runs until SIGTERM or SIGINT, then drains what it holds and exits.";

/// What follows the options in `--help`: the first steps.
const AFTER_HELP: &str = "Getting started:
  shardtel default-config > shardtel.toml    the embedded default configuration, commented
  shardtel validate --config shardtel.toml   print every problem with its file and line
  shardtel --config shardtel.toml            run (health on :13133, metrics on :8888)

Logs go to stderr ([telemetry] log_level, log_format = \"text\" or \"json\"; SHARDTEL_LOG
overrides the level). Documentation: README.md and docs/ (configuration.md, operations.md).";

/// `shardtel --version`: the version, and what the program is.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nAn OpenTelemetry collector (OTLP traces, metrics and logs) with one pinned reactor per CPU core.",
    "\nSee `shardtel --help`; start from `shardtel default-config` and check files with `shardtel validate --config FILE`."
);

#[derive(Parser)]
#[command(
    name = "shardtel",
    version,
    long_version = LONG_VERSION,
    about = "shardtel: an OpenTelemetry collector for traces, metrics and logs",
    long_about = ABOUT,
    after_help = AFTER_HELP
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default runs:
    /// OTLP in on 127.0.0.1:4317/4318, every core, files under ./shardtel-data/.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file (--config FILE); print every problem and exit non-zero if any.
    Validate,
    /// Print the embedded default configuration (commented; a starting point for your own).
    DefaultConfig,
}

fn load(path: &Option<PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => check_file(p),
        None => Ok(Config::embedded_default()),
    }
}

/// Reads and validates `path`, including the certificate, key, CA and token files it names.
fn check_file(path: &Path) -> Result<Config, String> {
    let config =
        Config::from_file_checked(path, &shardtel_tls::FileChecker).map_err(|e| e.to_string())?;
    refuse_unserved_tls(&config, &path.display().to_string())?;
    Ok(config)
}

/// TLS and authentication settings that this build reads and checks but does not serve yet:
/// the receivers and exporters are wired to shardtel-tls in issue 15's next step. Refused, so
/// that no receiver runs in plaintext or without authentication while its file says otherwise.
// Remove with that step.
fn refuse_unserved_tls(config: &Config, origin: &str) -> Result<(), String> {
    let mut keys = Vec::new();
    if let Some(otlp) = &config.receivers.otlp {
        if otlp.tls.is_some() {
            keys.push("receivers.otlp.tls".to_string());
        }
        if otlp.auth.is_some() {
            keys.push("receivers.otlp.auth".to_string());
        }
    }
    for (name, exporter) in &config.exporters {
        if exporter
            .kind
            .endpoints()
            .iter()
            .any(|e| e.scheme == "https")
        {
            keys.push(format!("exporters.{name}"));
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                "{origin}: {key}: TLS and authentication are checked but not served by this build yet"
            )
        })
        .collect();
    Err(lines.join("\n"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Some(Command::Validate) => {
            let Some(path) = &cli.config else {
                eprintln!("shardtel validate needs --config FILE");
                return ExitCode::from(2);
            };
            match check_file(path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            shardtel_engine::telemetry::logging::init(
                &config.telemetry.log_level,
                config.telemetry.log_format,
            );
            match shardtel_engine::process::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
