//! Where arrived spans are read from: a [`Source`] yields the span ids it finds.
//!
//! [`FileSource`] reads a file exporter's OTLP/JSON lines (one
//! `ExportTraceServiceRequest` per line) from every file matching a glob, incrementally:
//! files are tracked by inode, so a rotated file (renamed to a backup) is not read twice,
//! a truncated one is read again from the start, and only complete lines are consumed.
//! `.gz` and `.zst` files are read whole, once, when they decompress cleanly.
//!
//! A Kafka source (`--verify-kafka`, consuming the exporter's topic) will implement the
//! same trait; it is not written yet.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// What one poll found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Bytes consumed.
    pub bytes: u64,
    /// Spans seen.
    pub spans: u64,
}

/// A place where the collector's output can be read back.
pub trait Source {
    /// A human description (for the report).
    fn describe(&self) -> String;

    /// Reads whatever arrived since the last poll and calls `on_span` with each span id
    /// (as found: lowercase hex in OTLP/JSON).
    fn poll(&mut self, on_span: &mut dyn FnMut(&str)) -> Result<PollStats>;

    /// Lines (or messages) that could not be parsed, with the first error.
    fn bad_records(&self) -> (u64, Option<String>);

    /// Files (or partitions) read.
    fn inputs(&self) -> u64;
}

/// How the user asked for arrivals to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Files matching a glob pattern, OTLP/JSON lines.
    Files(String),
}

impl SourceSpec {
    /// Opens the source.
    pub fn open(&self) -> Result<Box<dyn Source>> {
        match self {
            SourceSpec::Files(pattern) => Ok(Box::new(FileSource::new(pattern)?)),
        }
    }
}

#[derive(Debug, Default)]
struct Cursor {
    offset: u64,
    partial: Vec<u8>,
    done: bool,
}

/// Reads OTLP/JSON lines from files matching a glob.
#[derive(Debug)]
pub struct FileSource {
    pattern: String,
    files: HashMap<(u64, u64), Cursor>,
    bad_lines: u64,
    first_error: Option<String>,
}

/// Bytes read from a file per step.
const CHUNK: usize = 8 << 20;

impl FileSource {
    /// A source over `pattern` (checked for syntax now; files may appear later).
    pub fn new(pattern: &str) -> Result<Self> {
        glob::Pattern::new(pattern).with_context(|| format!("invalid glob {pattern:?}"))?;
        Ok(Self {
            pattern: pattern.to_string(),
            files: HashMap::new(),
            bad_lines: 0,
            first_error: None,
        })
    }

    fn read_plain(
        &mut self,
        key: (u64, u64),
        path: &Path,
        len: u64,
        on_span: &mut dyn FnMut(&str),
        stats: &mut PollStats,
    ) -> Result<()> {
        let cursor = self.files.entry(key).or_default();
        if len < cursor.offset {
            cursor.offset = 0;
            cursor.partial.clear();
        }
        if len == cursor.offset {
            return Ok(());
        }
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("failed to open {}", path.display())),
        };
        f.seek(SeekFrom::Start(cursor.offset))?;
        let mut buf = std::mem::take(&mut cursor.partial);
        let mut bad = (0u64, None);
        loop {
            let start = buf.len();
            buf.resize(start + CHUNK, 0);
            let n = f.read(&mut buf[start..])?;
            buf.truncate(start + n);
            if n == 0 {
                break;
            }
            cursor.offset += n as u64;
            stats.bytes += n as u64;
            let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            for line in buf[..complete].split(|&b| b == b'\n') {
                parse_line(line, on_span, stats, &mut bad);
            }
            buf.drain(..complete);
        }
        cursor.partial = buf;
        self.note_bad(bad);
        Ok(())
    }

    fn read_compressed(
        &mut self,
        key: (u64, u64),
        path: &Path,
        on_span: &mut dyn FnMut(&str),
        stats: &mut PollStats,
    ) -> Result<()> {
        if self.files.get(&key).is_some_and(|c| c.done) {
            return Ok(());
        }
        let raw = match std::fs::read(path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let encoding = match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => "gzip",
            _ => "zstd",
        };
        // Still being written: try again on the next poll.
        let Ok(plain) = crate::wire::decompress(encoding, &raw) else {
            return Ok(());
        };
        let mut bad = (0u64, None);
        for line in plain.split(|&b| b == b'\n') {
            parse_line(line, on_span, stats, &mut bad);
        }
        stats.bytes += raw.len() as u64;
        self.note_bad(bad);
        self.files.entry(key).or_default().done = true;
        Ok(())
    }

    fn note_bad(&mut self, (n, first): (u64, Option<String>)) {
        self.bad_lines += n;
        if self.first_error.is_none() {
            self.first_error = first;
        }
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("files {}", self.pattern)
    }

    fn poll(&mut self, on_span: &mut dyn FnMut(&str)) -> Result<PollStats> {
        let mut stats = PollStats::default();
        let mut paths: Vec<PathBuf> = glob::glob(&self.pattern)
            .with_context(|| format!("invalid glob {:?}", self.pattern))?
            .filter_map(|p| p.ok())
            .collect();
        paths.sort();
        for path in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let key = (meta.dev(), meta.ino());
            let compressed = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("gz") | Some("zst")
            );
            if compressed {
                self.read_compressed(key, &path, on_span, &mut stats)?;
            } else {
                self.read_plain(key, &path, meta.len(), on_span, &mut stats)?;
            }
        }
        Ok(stats)
    }

    fn bad_records(&self) -> (u64, Option<String>) {
        (self.bad_lines, self.first_error.clone())
    }

    fn inputs(&self) -> u64 {
        self.files.len() as u64
    }
}

/// Only the fields verification needs; everything else in a line is skipped.
#[derive(Deserialize)]
struct TracesLine<'a> {
    #[serde(default, borrow, rename = "resourceSpans", alias = "resource_spans")]
    resource_spans: Vec<ResourceSpansLine<'a>>,
}

#[derive(Deserialize)]
struct ResourceSpansLine<'a> {
    #[serde(default, borrow, rename = "scopeSpans", alias = "scope_spans")]
    scope_spans: Vec<ScopeSpansLine<'a>>,
}

#[derive(Deserialize)]
struct ScopeSpansLine<'a> {
    #[serde(default, borrow)]
    spans: Vec<SpanLine<'a>>,
}

#[derive(Deserialize)]
struct SpanLine<'a> {
    #[serde(default, borrow, rename = "spanId", alias = "span_id")]
    span_id: Cow<'a, str>,
}

fn parse_line(
    line: &[u8],
    on_span: &mut dyn FnMut(&str),
    stats: &mut PollStats,
    bad: &mut (u64, Option<String>),
) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match serde_json::from_slice::<TracesLine<'_>>(line) {
        Ok(req) => {
            for span in req
                .resource_spans
                .iter()
                .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
            {
                stats.spans += 1;
                on_span(&span.span_id);
            }
        }
        Err(e) => {
            bad.0 += 1;
            if bad.1.is_none() {
                bad.1 = Some(format!("invalid otlp json line: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "shardtel-loadgen-{name}-{}-{}",
            std::process::id(),
            crate::gen::unix_nanos_now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn line(ids: &[&str]) -> String {
        let spans: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"traceId":"00","spanId":"{id}","name":"x","attributes":[]}}"#))
            .collect();
        format!(
            r#"{{"resourceSpans":[{{"resource":{{}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        ) + "\n"
    }

    fn poll_ids(src: &mut FileSource) -> Vec<String> {
        let mut out = Vec::new();
        src.poll(&mut |id| out.push(id.to_string())).unwrap();
        out
    }

    #[test]
    fn reads_incrementally_across_rotation_and_partial_lines() {
        let dir = temp_dir("rotation");
        let live = dir.join("traces.jsonl");
        let mut f = File::create(&live).unwrap();
        f.write_all(line(&["a1", "a2"]).as_bytes()).unwrap();
        let second = line(&["b1"]);
        f.write_all(&second.as_bytes()[..10]).unwrap();
        f.flush().unwrap();
        let mut src = FileSource::new(&format!("{}/traces*.jsonl*", dir.display())).unwrap();
        assert_eq!(poll_ids(&mut src), ["a1", "a2"]);
        f.write_all(&second.as_bytes()[10..]).unwrap();
        f.flush().unwrap();
        assert_eq!(poll_ids(&mut src), ["b1"]);
        // Rotate: the old file becomes a backup, a new one starts. Nothing is re-read.
        drop(f);
        std::fs::rename(&live, dir.join("traces.jsonl.1")).unwrap();
        std::fs::write(&live, line(&["c1"])).unwrap();
        assert_eq!(poll_ids(&mut src), ["c1"]);
        assert!(poll_ids(&mut src).is_empty());
        // A compressed backup is read once, whole.
        let mut gz = Vec::new();
        crate::wire::Compressor::new(crate::wire::Compression::Gzip, 1)
            .unwrap()
            .compress(line(&["d1"]).as_bytes(), &mut gz)
            .unwrap();
        std::fs::write(dir.join("traces.jsonl.2.gz"), gz).unwrap();
        assert_eq!(poll_ids(&mut src), ["d1"]);
        assert!(poll_ids(&mut src).is_empty());
        // Garbage is counted, not fatal.
        std::fs::write(dir.join("traces-x.jsonl"), "not json\n").unwrap();
        assert!(poll_ids(&mut src).is_empty());
        assert_eq!(src.bad_records().0, 1);
        assert_eq!(src.inputs(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
