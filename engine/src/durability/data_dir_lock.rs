//! One process per data directory: an exclusive `flock` on `engine.data_dir/LOCK`. The
//! directories the engine creates there are private to the user it runs as (0700, the lock
//! file 0600): they hold telemetry that may carry personal data.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use shardtel_config::{Config, Durability, QueueStorage};

/// Holds `engine.data_dir/LOCK` locked (`flock`, exclusive) while the process runs: two processes
/// writing the same logs would corrupt them (and with SO_REUSEPORT a second one on the same
/// ports starts without a bind error). Released when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Why `engine.data_dir` could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Creating the directory or opening the lock file failed.
    #[error("engine.data_dir: failed to {what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `flock` failed for another reason than a holder.
    #[error("engine.data_dir: failed to lock {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::errno::Errno,
    },
    /// Another process holds the lock.
    #[error("engine.data_dir {} is in use by another shardtel process (pid {holder}): give each process its own data_dir", .dir.display())]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The pid the holder wrote into the lock file.
        holder: String,
    },
}

/// Locks `engine.data_dir` when a write-ahead log lives there (`durability = "ack_after_sync"`
/// or a disk queue); `None` otherwise. Start-up only (`std::fs`).
pub fn lock_data_dir(config: &Config) -> Result<Option<DataDirLock>, DataDirError> {
    let disk_queues = config.exporters.values().any(|e| {
        e.kind
            .queue()
            .is_some_and(|q| q.storage == QueueStorage::Disk)
    });
    if config.engine.durability != Durability::AckAfterSync && !disk_queues {
        return Ok(None);
    }
    let dir = &config.engine.data_dir;
    let path = dir.join("LOCK");
    let io = |what: &'static str| {
        let path = path.clone();
        move |source| DataDirError::Io { what, path, source }
    };
    create_private_dir(dir).map_err(io("create the directory of"))?;
    warn_if_shared(dir);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io("open"))?;
    match nix::fcntl::flock(
        file.as_raw_fd(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EWOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(DataDirError::InUse {
                dir: dir.clone(),
                holder: holder.trim().to_string(),
            });
        }
        Err(source) => return Err(DataDirError::Lock { path, source }),
    }
    // The roots of the logs, before the logs create their directories in them.
    let roots = [
        (
            config.engine.durability == Durability::AckAfterSync,
            "ingest",
        ),
        (disk_queues, "queues"),
    ];
    for (_, root) in roots.iter().filter(|(used, _)| *used) {
        let root = dir.join(root);
        create_private_dir(&root).map_err(|source| DataDirError::Io {
            what: "create",
            path: root,
            source,
        })?;
    }
    // The holder's pid, for the message above (the lock itself is what counts).
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(Some(DataDirLock { _file: file }))
}

/// Creates `dir` and its missing parents with mode 0700 (an existing directory keeps its mode).
/// Start-up only (`std::fs`).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Logs a warning when `dir` (made by someone else) is open to its group or to others.
fn warn_if_shared(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "engine.data_dir {} has mode {mode:o}: its logs hold the telemetry received; consider chmod 700",
            dir.display()
        );
    }
}
