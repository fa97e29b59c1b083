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
    /// Ask a running shardtel to reload its configuration file (sends it SIGHUP; the result is
    /// in its log and in shardtel_config_reloads_total). Names the process with --pid, or
    /// finds it through the lock file in engine.data_dir of --config (written when durability
    /// or a disk queue is on).
    Reload {
        /// Process id of the running shardtel.
        #[arg(long)]
        pid: Option<i32>,
    },
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

/// Sends SIGHUP to `pid`, or to the pid in `engine.data_dir/LOCK` of the file at `config`.
fn send_reload(pid: Option<i32>, config: Option<&Path>) -> Result<i32, String> {
    let pid = match (pid, config) {
        (Some(pid), _) => pid,
        (None, Some(path)) => {
            let config = Config::from_file(path).map_err(|e| e.to_string())?;
            let lock = config.engine.data_dir.join("LOCK");
            let text = std::fs::read_to_string(&lock).map_err(|e| {
                format!(
                    "cannot read {} ({e}); it exists only with durability or a disk queue: pass --pid",
                    lock.display()
                )
            })?;
            // A stale file names a pid that may belong to another process by now.
            let file = std::fs::File::open(&lock).map_err(|e| e.to_string())?;
            use std::os::fd::AsRawFd as _;
            let free =
                nix::fcntl::flock(file.as_raw_fd(), nix::fcntl::FlockArg::LockSharedNonblock);
            if free.is_ok() {
                return Err(format!("no running shardtel holds {}", lock.display()));
            }
            text.trim()
                .parse()
                .map_err(|_| format!("{} holds no pid: pass --pid", lock.display()))?
        }
        (None, None) => return Err("pass --pid PID or --config FILE".to_string()),
    };
    let target = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGHUP)
        .map_err(|e| format!("cannot signal pid {pid}: {e}"))?;
    Ok(pid)
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc's own setting applies).
///
/// mimalloc asks for huge pages (`MADV_HUGEPAGE`) on the arenas it reserves, so on a kernel
/// with THP in `madvise` or `always` mode a touched byte makes a whole 2 MiB page resident:
/// the unused tails of large blocks (request buffers held for `decision_wait` by a tail
/// sampler) and freed pages not yet purged all count in RSS. Measured on tail sampling's
/// memory step: 1.56× the wire size per buffered span with THP, 1.3–1.4× without
/// (docs/tail-sampling.md), for less system CPU (no huge page zeroing and compaction). The
/// flag is the process's: it also covers the arena mimalloc reserved before `main` ran,
/// which an allocator option set now could not.
fn disable_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours. A failure
    // (a kernel without THP) leaves things as they were, which is fine.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Some(Command::Reload { pid }) => match send_reload(pid, cli.config.as_deref()) {
            Ok(pid) => {
                println!("sent SIGHUP to shardtel (pid {pid}); see its log for the outcome");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shardtel reload: {e}");
                ExitCode::FAILURE
            }
        },
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
            let source: Option<shardtel_engine::process::ConfigSource> =
                cli.config.clone().map(|path| {
                    Box::new(move || check_file(&path)) as shardtel_engine::process::ConfigSource
                });
            match shardtel_engine::process::run(config, source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
