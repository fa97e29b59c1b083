//! One process per data directory: an exclusive `flock` on `engine.data_dir/LOCK`.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;

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
    std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
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
    // The holder's pid, for the message above (the lock itself is what counts).
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(Some(DataDirLock { _file: file }))
}
