//! `file`: OTLP JSON lines, one `Export*ServiceRequest` per line, as the
//! OpenTelemetry Collector's file exporter writes them.
//!
//! Each core writes its own file (`traces.jsonl` → `traces.core{N}.jsonl`) through
//! glommio's io_uring file API, so nothing blocks the reactor. A batch becomes
//! one line, written with one `write` (visible to readers at once). Before a
//! line would push the file past the size limit, the file is synced, shifted to
//! `.1` (older backups move up, the one past `max_backups` is deleted) and a new
//! file is started.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, Directory, OpenOptions};

use crate::batch::Batch;
use crate::error::ExportError;
use crate::offload;

/// The file core `core` writes for the configured `path`: `core{N}` goes
/// before the extension (`traces.jsonl` → `traces.core1.jsonl`, `out` → `out.core1`).
pub fn core_file_path(path: &Path, core: usize) -> Option<PathBuf> {
    let stem = path.file_stem()?;
    let mut name = OsString::from(stem);
    name.push(format!(".core{core}"));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    Some(path.with_file_name(name))
}

/// Backup `n` of `path`: `path.n`.
pub fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

struct OpenFile {
    file: BufferedFile,
    size: u64,
}

/// One `file` exporter on one core.
pub(crate) struct FileExporter {
    path: PathBuf,
    /// Rotate before the file would exceed this; zero never rotates.
    max_bytes: u64,
    max_backups: u32,
    /// `fdatasync` after every batch, before it counts as exported: with a disk queue in
    /// front, the queue forgets a batch once exported, so the file must hold it durably.
    sync_each_batch: bool,
    /// Taken out while a write is in progress (only one sender task writes).
    file: RefCell<Option<OpenFile>>,
}

impl FileExporter {
    /// `path` is this core's file (see [`core_file_path`]).
    pub(crate) fn new(
        path: PathBuf,
        max_bytes: u64,
        max_backups: u32,
        sync_each_batch: bool,
    ) -> Self {
        Self {
            path,
            max_bytes,
            max_backups,
            sync_each_batch,
            file: RefCell::new(None),
        }
    }

    /// Appends `batch` as one JSON line, rotating first if needed.
    pub(crate) async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        let (signal, chunks) = (batch.signal, batch.chunks.clone());
        let line = offload::run(batch.bytes, move || {
            let request = Batch::join(&chunks);
            let mut line = shardtel_protocol::json::from_protobuf(signal, &request)
                .map_err(|err| err.to_string())?;
            line.push(b'\n');
            Ok::<_, String>(line)
        })
        .await
        .map_err(|reason| ExportError::Json { reason })?;
        let taken = self.file.borrow_mut().take();
        let mut open = match taken {
            Some(open) => open,
            None => self.open().await?,
        };
        if self.max_bytes > 0 && open.size > 0 && open.size + line.len() as u64 > self.max_bytes {
            open = self.rotate(open).await?;
        }
        // On error the file is dropped and reopened (at its real size) next time.
        open.size = self.write_all(&open.file, line, open.size).await?;
        if self.sync_each_batch {
            open.file
                .fdatasync()
                .await
                .map_err(|e| self.err("sync", &self.path, e.into()))?;
        }
        *self.file.borrow_mut() = Some(open);
        Ok(())
    }

    /// Makes everything written so far durable (`fdatasync`).
    pub(crate) async fn sync(&self) -> Result<(), ExportError> {
        let taken = self.file.borrow_mut().take();
        if let Some(open) = taken {
            let synced = open.file.fdatasync().await;
            *self.file.borrow_mut() = Some(open);
            synced.map_err(|e| self.err("sync", &self.path, e.into()))?;
        }
        Ok(())
    }

    async fn open(&self) -> Result<OpenFile, ExportError> {
        if let Some(dir) = self.path.parent() {
            create_dir_all(dir)
                .await
                .map_err(|e| self.err("create directory", dir, e))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(shardtel_wal::permissions::FILE_MODE)
            .buffered_open(&self.path)
            .await
            .map_err(|e| self.err("open", &self.path, e.into()))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| self.err("stat", &self.path, e.into()))?;
        Ok(OpenFile { file, size })
    }

    async fn write_all(
        &self,
        file: &BufferedFile,
        mut buf: Vec<u8>,
        mut pos: u64,
    ) -> Result<u64, ExportError> {
        while !buf.is_empty() {
            let written = file
                .write_at(buf.clone(), pos)
                .await
                .map_err(|e| self.err("write", &self.path, e.into()))?;
            if written == 0 {
                return Err(self.err("write", &self.path, io::ErrorKind::WriteZero.into()));
            }
            buf.drain(..written);
            pos += written as u64;
        }
        Ok(pos)
    }

    /// Syncs and closes `open`, shifts the backups, and opens a new, empty file.
    async fn rotate(&self, open: OpenFile) -> Result<OpenFile, ExportError> {
        open.file
            .fdatasync()
            .await
            .map_err(|e| self.err("sync", &self.path, e.into()))?;
        open.file
            .close()
            .await
            .map_err(|e| self.err("close", &self.path, e.into()))?;
        if self.max_backups == 0 {
            remove_if_exists(&self.path)
                .await
                .map_err(|e| self.err("remove", &self.path, e))?;
        } else {
            // `rename` replaces its target, so the oldest backup falls off the end.
            for n in (1..self.max_backups).rev() {
                let from = backup_path(&self.path, n);
                rename_if_exists(&from, &backup_path(&self.path, n + 1))
                    .await
                    .map_err(|e| self.err("rename", &from, e))?;
            }
            glommio::io::rename(&self.path, backup_path(&self.path, 1))
                .await
                .map_err(|e| self.err("rename", &self.path, e.into()))?;
        }
        if let Some(dir) = self.path.parent() {
            sync_dir(dir).await;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(shardtel_wal::permissions::FILE_MODE)
            .buffered_open(&self.path)
            .await
            .map_err(|e| self.err("open", &self.path, e.into()))?;
        log::debug!("rotated {:?}", self.path);
        Ok(OpenFile { file, size: 0 })
    }

    fn err(&self, op: &'static str, path: &Path, source: io::Error) -> ExportError {
        ExportError::File {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// `mkdir -p`, new directories private (`0700`), on the core's blocking thread.
async fn create_dir_all(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    glommio::executor()
        .spawn_blocking(move || shardtel_wal::permissions::create_dir_all(&dir))
        .await
}

async fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match glommio::io::rename(from, to).await.map_err(io::Error::from) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

async fn remove_if_exists(path: &Path) -> io::Result<()> {
    match glommio::io::remove(path).await.map_err(io::Error::from) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes the renames durable; failure only costs durability of the names.
async fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(handle) = Directory::open(dir).await {
        let _ = handle.sync().await;
        let _ = handle.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_core_names() {
        let p = |s: &str, core| core_file_path(Path::new(s), core).unwrap();
        assert_eq!(
            p("./shardtel-data/traces.jsonl", 3),
            Path::new("./shardtel-data/traces.core3.jsonl")
        );
        assert_eq!(p("out", 0), Path::new("out.core0"));
        assert_eq!(p("/x/a.b.json", 1), Path::new("/x/a.b.core1.json"));
        assert_eq!(core_file_path(Path::new("/"), 0), None);
        assert_eq!(
            backup_path(Path::new("d/traces.core0.jsonl"), 2),
            Path::new("d/traces.core0.jsonl.2")
        );
    }

    #[test]
    fn files_and_directories_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("shardtel-file-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let path = root.join("a/b/traces.core0.jsonl");
        let file = path.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let exporter = FileExporter::new(file, 1, 2, false);
                let batch = || Batch {
                    signal: shardtel_protocol::Signal::Traces,
                    chunks: Vec::new(),
                    bytes: 0,
                    held: 0,
                    items: 0,
                    traces: Vec::new(),
                };
                // The second line rotates the first into a backup.
                exporter.export(&batch()).await.unwrap();
                exporter.export(&batch()).await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&root.join("a/b")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&backup_path(&path, 1)), 0o600);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
