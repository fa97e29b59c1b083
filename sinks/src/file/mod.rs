//! `file`: OTLP JSON lines, one `Export*ServiceRequest` per line, as the
//! OpenTelemetry Collector's file exporter writes them.
//!
//! Each core writes its own file (`traces.jsonl` → `traces.core{N}.jsonl`) through
//! glommio's io_uring file API, so nothing blocks the reactor. A batch becomes
//! one line, written with one `write` (visible to readers at once). Before a
//! line would push the file past the size limit, the file is synced, shifted to
//! `.1` (older backups move up, the one past `max_backups` is deleted) and a new
//! file is started.
//!
//! Every line in the file is whole. A batch whose write or sync fails (`ENOSPC`, or a short
//! write then `EFBIG` under `RLIMIT_FSIZE`) is cut off again (`ftruncate` to the length before
//! it), so its retry starts on a line of its own instead of after a torn one. A file reopened
//! for append that does not end in `\n` (a crash mid-write, or a failed cut) loses its torn
//! last line first, with a warning.

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

/// How much of a file's tail is read at a time when looking for its last `\n`.
const TAIL_CHUNK: u64 = 64 << 10;

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
        let before = open.size;
        match self.append(&open.file, line, before).await {
            Ok(after) => {
                open.size = after;
                *self.file.borrow_mut() = Some(open);
                Ok(())
            }
            Err(err) => {
                // The batch failed and will be retried: nothing of it may stay, or the retry's
                // line would continue this one's torn bytes. The file is dropped and reopened
                // next time; if this cut fails, reopening cuts the torn line instead.
                if let Err(e) = open.file.truncate(before).await {
                    log::warn!(
                        "file exporter: cannot cut {:?} back to {before} bytes after a failed \
                         write: {e}",
                        self.path
                    );
                }
                Err(err)
            }
        }
    }

    /// Writes `line` at `pos` and, with `sync_each_batch`, syncs it; the new end of the file.
    async fn append(
        &self,
        file: &BufferedFile,
        line: Vec<u8>,
        pos: u64,
    ) -> Result<u64, ExportError> {
        let end = self.write_all(file, line, pos).await?;
        if self.sync_each_batch {
            file.fdatasync()
                .await
                .map_err(|e| self.err("sync", &self.path, e.into()))?;
        }
        Ok(end)
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
            .read(true)
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
        let size = self.cut_torn_tail(&file, size).await?;
        Ok(OpenFile { file, size })
    }

    /// Cuts `file` (`size` bytes) back to just after its last `\n`, so appends start on a line
    /// of their own; the new size. Reads backwards in [`TAIL_CHUNK`]s, only as far as the torn
    /// line goes.
    async fn cut_torn_tail(&self, file: &BufferedFile, size: u64) -> Result<u64, ExportError> {
        let mut end = size;
        let keep = loop {
            if end == 0 {
                break 0;
            }
            let start = end.saturating_sub(TAIL_CHUNK);
            let want = (end - start) as usize;
            let chunk = file
                .read_at(start, want)
                .await
                .map_err(|e| self.err("read", &self.path, e.into()))?;
            if chunk.len() != want {
                let short = io::Error::new(io::ErrorKind::UnexpectedEof, "short read of the tail");
                return Err(self.err("read", &self.path, short));
            }
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                break start + i as u64 + 1;
            }
            end = start;
        };
        if keep < size {
            file.truncate(keep)
                .await
                .map_err(|e| self.err("truncate", &self.path, e.into()))?;
            log::warn!(
                "file exporter: {:?} ended in a torn line (a crash or a failed write): cut its \
                 last {} bytes",
                self.path,
                size - keep
            );
        }
        Ok(keep)
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

    /// A batch of one span named `batch-{tag}-xxx…` (`pad` x's), as the queue hands it over.
    fn tagged_batch(tag: u32, pad: usize) -> Batch {
        use prost::Message;
        use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
        use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let span = Span {
            trace_id: vec![1; 16],
            span_id: tag.to_be_bytes().repeat(2),
            name: format!("batch-{tag}-{}", "x".repeat(pad)),
            ..Span::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let bytes = bytes::Bytes::from(request.encode_to_vec());
        Batch {
            signal: shardtel_protocol::Signal::Traces,
            bytes: bytes.len(),
            held: bytes.len(),
            chunks: vec![bytes],
            items: 1,
            traces: Vec::new(),
        }
    }

    /// The tags of the lines of `path`, in order; panics on a line that is not whole JSON.
    fn tags_in(path: &Path) -> Vec<u32> {
        let text = std::fs::read(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with(b"\n"),
            "{path:?} ends in a torn line"
        );
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| {
                let json: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                    panic!("malformed line: {e}: {}", String::from_utf8_lossy(line))
                });
                let name = json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]
                    .as_str()
                    .unwrap();
                name.split('-').nth(1).unwrap().parse().unwrap()
            })
            .collect()
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    /// A file left with a torn last line (here longer than [`TAIL_CHUNK`], and a file that is
    /// one torn line) is cut back to its last `\n` before the next line goes in, and the
    /// rotation limit counts what is left.
    #[test]
    fn a_torn_tail_is_cut_before_appending() {
        let root = std::env::temp_dir().join(format!("shardtel-file-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let path = root.join("traces.core0.jsonl");
        let file = path.clone();
        run(move || async move {
            FileExporter::new(file, 0, 1, false)
                .export(&tagged_batch(0, 10))
                .await
                .unwrap();
        });
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut torn = std::fs::read(&path).unwrap();
        torn.extend_from_slice(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"batch-9-"#);
        torn.extend(std::iter::repeat_n(b'x', 100 << 10));
        std::fs::write(&path, &torn).unwrap();
        let file = path.clone();
        run(move || async move {
            // Room for both lines only once the torn one is gone: no rotation.
            let exporter = FileExporter::new(file, 2 * whole + 10, 1, false);
            exporter.export(&tagged_batch(1, 10)).await.unwrap();
        });
        assert_eq!(tags_in(&path), [0, 1]);
        assert!(!backup_path(&path, 1).exists(), "rotated on the torn size");

        std::fs::write(&path, br#"{"resourceSpans":[{"#).unwrap();
        let file = path.clone();
        run(move || async move {
            FileExporter::new(file, 0, 1, false)
                .export(&tagged_batch(2, 10))
                .await
                .unwrap();
        });
        assert_eq!(tags_in(&path), [2]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A tmpfs of `size_kib` mounted on a new directory, unmounted on drop.
    struct SmallFilesystem {
        dir: PathBuf,
    }

    impl SmallFilesystem {
        /// `None`, said loudly, where mounting is not allowed (it needs root).
        fn mount(size_kib: u32) -> Option<Self> {
            let dir =
                std::env::temp_dir().join(format!("shardtel-small-fs-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
                .arg(&dir)
                .status()
                .is_ok_and(|status| status.success());
            if !mounted {
                eprintln!("SKIPPED: cannot mount a {size_kib} KiB tmpfs on {dir:?} (needs root)");
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
            Some(SmallFilesystem { dir })
        }
    }

    impl Drop for SmallFilesystem {
        fn drop(&mut self) {
            // Lazily: a file the executor dropped may still be closing.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    /// A full disk for real: a write runs out of space mid-line (`ENOSPC` after a short
    /// write). The failed batch leaves nothing behind, and once space returns its retry and
    /// the batches after it are whole lines, each batch exactly once.
    #[test]
    fn a_write_that_runs_out_of_space_leaves_no_torn_line() {
        let Some(fs) = SmallFilesystem::mount(64) else {
            return;
        };
        let filler = fs.dir.join("filler");
        std::fs::write(&filler, vec![0u8; 40 << 10]).unwrap();
        let path = fs.dir.join("traces.core0.jsonl");
        let file = path.clone();
        let failed_at = std::sync::Arc::new(std::sync::Mutex::new(None));
        let failed = failed_at.clone();
        run(move || async move {
            let exporter = FileExporter::new(file.clone(), 0, 0, true);
            let mut tag = 0;
            let failed_tag = loop {
                assert!(tag < 20, "the small filesystem never filled up");
                match exporter.export(&tagged_batch(tag, 3000)).await {
                    Ok(()) => tag += 1,
                    Err(err) => {
                        let text = err.to_string();
                        assert!(text.contains("No space left"), "{text}");
                        break tag;
                    }
                }
            };
            assert!(failed_tag > 0, "the first batch did not fit");
            *failed.lock().unwrap() = Some(failed_tag);
            // While the disk stays full the retry fails too, and leaves nothing either.
            assert!(exporter
                .export(&tagged_batch(failed_tag, 3000))
                .await
                .is_err());
            assert_eq!(tags_in(&file), (0..failed_tag).collect::<Vec<_>>());
            // Space returns: the retry and the batches after it go in whole.
            std::fs::remove_file(file.with_file_name("filler")).unwrap();
            for tag in failed_tag..failed_tag + 3 {
                exporter.export(&tagged_batch(tag, 3000)).await.unwrap();
            }
        });
        let failed_tag = failed_at.lock().unwrap().unwrap();
        assert_eq!(tags_in(&path), (0..failed_tag + 3).collect::<Vec<_>>());
        drop(fs);
    }
}
