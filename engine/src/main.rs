//! The `shardtel` binary: run on the embedded default configuration or a
//! file, validate a file, or print the embedded default.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardtel_config::{Config, DEFAULT_CONFIG};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// shardtel: an OpenTelemetry collector with one pinned reactor per core.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default runs:
    /// OTLP in on 127.0.0.1:4317/4318, every core, files under ./shardtel-data/.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file; print every problem and exit non-zero if any.
    Validate,
    /// Print the embedded default configuration.
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
    Config::from_file_checked(path, &shardtel_tls::FileChecker).map_err(|e| e.to_string())
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
            shardtel_engine::telemetry::logging::init(&config.telemetry.log_level);
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
