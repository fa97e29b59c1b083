//! A value built from files and rebuilt when they change, published to every core without
//! locks.
//!
//! [`Reloading::start`] reads the files and builds the value once, on the calling thread (start-up:
//! a problem is an error). With an interval, a plain background thread named
//! `shardtel-tls-reload` then re-reads the files every interval; when their bytes differ from
//! the last ones it built from, it builds a new value and swaps it in. Readers on any core
//! [`Reloading::load`] the current value; what they already hold stays valid (an established
//! TLS connection keeps its configuration). A build that fails keeps the previous value and is
//! logged once per distinct file content (or read error), never with the content. The thread
//! stops when the last clone of the [`Reloading`] is dropped.

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use crate::error::Error;
use crate::pem;

/// The current value of a file-built `T`, swapped when the files change.
pub struct Reloading<T> {
    current: Arc<ArcSwap<T>>,
    /// Dropping the last clone drops the sender, which wakes and ends the reload thread.
    _stop: Option<Arc<mpsc::Sender<()>>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Reloading {
            current: self.current.clone(),
            _stop: self._stop.clone(),
        }
    }
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("reloads", &self._stop.is_some())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads `paths` and builds the value with `build(contents)` (one byte vector per path, in
    /// order). With `interval`, a background thread re-reads them every `interval` and rebuilds
    /// on change; `what` names the value in its log lines (e.g. `receivers.otlp.tls`).
    pub fn start(
        what: String,
        paths: Vec<PathBuf>,
        interval: Option<Duration>,
        build: impl Fn(&[Vec<u8>]) -> Result<T, Error> + Send + 'static,
    ) -> Result<Self, Error> {
        Self::start_with(what, paths, interval, Missing::KeepPrevious, build)
    }

    /// Like [`Reloading::start`], with what a file that disappears after start-up means.
    pub fn start_with(
        what: String,
        paths: Vec<PathBuf>,
        interval: Option<Duration>,
        missing: Missing,
        build: impl Fn(&[Vec<u8>]) -> Result<T, Error> + Send + 'static,
    ) -> Result<Self, Error> {
        let contents = read_all(&paths)?;
        let current = Arc::new(ArcSwap::from_pointee(build(&contents)?));
        let Some(interval) = interval.filter(|_| !paths.is_empty()) else {
            return Ok(Reloading {
                current,
                _stop: None,
            });
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let watcher = Watcher {
            what,
            paths,
            build: Box::new(build),
            current: current.clone(),
            built_from: contents,
            last_problem: None,
            missing,
        };
        std::thread::Builder::new()
            .name("shardtel-tls-reload".into())
            .spawn(move || watcher.run(interval, stopped))
            .map_err(Error::ReloadThread)?;
        Ok(Reloading {
            current,
            _stop: Some(Arc::new(stop)),
        })
    }

    /// The current value, without taking a reference count (cheap enough per request).
    pub fn load(&self) -> Guard<Arc<T>> {
        self.current.load()
    }

    /// The current value, to keep (e.g. for the life of a connection).
    pub fn load_full(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Whether a background thread re-reads the files.
    pub fn reloads(&self) -> bool {
        self._stop.is_some()
    }
}

type Build<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, Error> + Send>;

/// What a watched file that no longer exists means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Keep the value built before (certificates and keys: a file being replaced).
    KeepPrevious,
    /// Build from empty contents (a token file: deleting it revokes its tokens).
    Empty,
}

struct Watcher<T> {
    what: String,
    paths: Vec<PathBuf>,
    build: Build<T>,
    current: Arc<ArcSwap<T>>,
    /// The file contents the current value was built from.
    built_from: Vec<Vec<u8>>,
    /// The last problem logged (file contents that failed to build, or a read error), so each
    /// is logged once.
    last_problem: Option<Problem>,
    missing: Missing,
}

#[derive(PartialEq, Eq)]
enum Problem {
    Read(String),
    Build(Vec<Vec<u8>>),
}

impl<T> Watcher<T> {
    fn run(mut self, interval: Duration, stopped: mpsc::Receiver<()>) {
        loop {
            match stopped.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => self.check(),
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn check(&mut self) {
        let read = if self.missing == Missing::Empty {
            self.paths
                .iter()
                .map(|p| match std::fs::symlink_metadata(p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    _ => pem::read(p),
                })
                .collect()
        } else {
            read_all(&self.paths)
        };
        let contents = match read {
            Ok(contents) => contents,
            Err(e) => {
                let problem = Problem::Read(e.to_string());
                if self.last_problem.as_ref() != Some(&problem) {
                    log::warn!(
                        "{}: {e}; keeping the previous configuration until it can be read",
                        self.what
                    );
                    self.last_problem = Some(problem);
                }
                return;
            }
        };
        if contents == self.built_from {
            self.last_problem = None;
            return;
        }
        if matches!(&self.last_problem, Some(Problem::Build(bad)) if *bad == contents) {
            return;
        }
        match (self.build)(&contents) {
            Ok(value) => {
                self.current.store(Arc::new(value));
                self.built_from = contents;
                self.last_problem = None;
                log::info!(
                    "{}: reloaded {}; new connections use it",
                    self.what,
                    self.files()
                );
            }
            Err(e) => {
                log::warn!(
                    "{}: {e}; keeping the previous configuration until the files are fixed",
                    self.what
                );
                self.last_problem = Some(Problem::Build(contents));
            }
        }
    }

    fn files(&self) -> String {
        let names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, Error> {
    paths.iter().map(|p| pem::read(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shardtel-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn parse(contents: &[Vec<u8>]) -> Result<u32, Error> {
        let text = String::from_utf8_lossy(&contents[0]);
        text.trim()
            .parse()
            .map_err(|_| crate::error::FileIssue::NoTokens.at("number"))
    }

    #[test]
    fn rebuilds_on_change_and_keeps_the_last_good_value() {
        let path = temp_file("number", "1");
        let value = Reloading::start(
            "test".into(),
            vec![path.clone()],
            Some(Duration::from_millis(20)),
            parse,
        )
        .unwrap();
        assert!(value.reloads());
        assert_eq!(**value.load(), 1);
        let held = value.load_full();
        std::fs::write(&path, "2").unwrap();
        wait_for("the new value", || **value.load() == 2);
        assert_eq!(*held, 1, "a value already taken is not changed");
        // A bad file keeps the last good value; a missing one too.
        std::fs::write(&path, "two").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(**value.load(), 2);
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(**value.load(), 2);
        std::fs::write(&path, "3").unwrap();
        wait_for("the value after the fix", || **value.load() == 3);
    }

    #[test]
    fn start_fails_on_a_bad_file_and_without_interval_never_reloads() {
        let path = temp_file("bad", "x");
        assert!(Reloading::start("test".into(), vec![path.clone()], None, parse).is_err());
        std::fs::write(&path, "5").unwrap();
        let value = Reloading::start("test".into(), vec![path.clone()], None, parse).unwrap();
        assert!(!value.reloads());
        std::fs::write(&path, "6").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(**value.load(), 5);
    }
}
