//! Signals delivered to the executor thread while the log works (the process's SIGHUP and
//! SIGTERM handlers may run on any thread, a reactor's too): every open, append, read and
//! close still completes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use shardtel_wal::{Wal, WalOptions};

extern "C" fn ignore(_: i32) {}

#[test]
fn signals_to_the_executor_thread_never_stall_the_log() {
    // A handler that does nothing, without SA_RESTART: interrupted system calls fail with
    // EINTR, as with handlers that do not ask for restarts.
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();
    let dir = tempfile::tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let root = dir.path().to_path_buf();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<Pthread>();
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let executor = {
        let done = done.clone();
        let progress = progress.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                tid_tx.send(pthread_self()).unwrap();
                let opts = || WalOptions {
                    segment_bytes: 64 << 10,
                    group_commit_interval: Duration::from_micros(100),
                    ..WalOptions::default()
                };
                for round in 0..500u64 {
                    let d = root.join(format!("r{round}"));
                    let wal = Wal::open(&d, opts()).await.unwrap();
                    let mut appends = Vec::new();
                    for i in 0..20u64 {
                        appends.push(
                            wal.append(1, vec![Bytes::from(vec![i as u8; 3000])])
                                .unwrap(),
                        );
                    }
                    for a in appends {
                        a.durable().await.unwrap();
                    }
                    wal.close().await;
                    drop(wal);
                    let wal = Wal::open(&d, opts()).await.unwrap();
                    let mut reader = wal.reader(wal.checkpoint_lsn());
                    let mut n = 0;
                    while let Some(_f) = reader.next().await.unwrap() {
                        n += 1;
                    }
                    assert_eq!(n, 20);
                    wal.close().await;
                    progress.store(round + 1, Ordering::Relaxed);
                }
                done.store(true, Ordering::Relaxed);
            })
            .unwrap()
    };
    let tid = tid_rx.recv().unwrap();
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while !done.load(Ordering::Relaxed) {
        let _ = pthread_kill(tid, Signal::SIGUSR1);
        std::thread::sleep(Duration::from_micros(50));
        let p = progress.load(Ordering::Relaxed);
        if p != last.0 {
            last = (p, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(20),
            "the log stalled at round {p} after {:?} under signals",
            start.elapsed()
        );
    }
    executor.join().unwrap();
}
