//! Write-ahead log recovery (`shardtel_wal::Wal::open`) of arbitrary segment and checkpoint
//! bytes, as a crash, a torn write or a damaged disk may leave them, then reading everything
//! back.
//!
//! Input: up to three segments (a first LSN and either raw bytes, or frames encoded from the
//! input and then cut or flipped), and optionally the checkpoint file's bytes. Checks: opening
//! never fails on bad data (it is cut off and counted); frames come back in increasing LSN
//! order, each one that the input really holds at that LSN (nothing invented); when the
//! segments do not overlap, every valid frame at or past the checkpoint comes back; a new
//! frame gets a higher LSN than any recovered; recovering again gives the same frames.
//!
//! The log lives in /dev/shm (tmpfs: glommio opens it without O_DIRECT, and syncs are free);
//! one glommio executor thread serves every input.
#![no_main]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardtel_fuzz::Cursor;
use shardtel_wal::frame;
use shardtel_wal::{Wal, WalOptions};

/// Segment files (first LSN, bytes) and the checkpoint file's bytes.
struct Layout {
    segments: Vec<(u64, Vec<u8>)>,
    checkpoint: Option<Vec<u8>>,
}

type Job = (Layout, mpsc::Sender<()>);

/// An input that takes longer is reported as a hang, naming the step the log was at. With
/// `HOLD_ON_HANG=1` the process writes every thread's stack (gdb) to /tmp/wal-hang-PID.txt and waits.
const HANG: Duration = Duration::from_secs(25);

/// The step the executor thread is at, for the message when an input hangs.
static STEP: AtomicU8 = AtomicU8::new(0);
const STEPS: [&str; 9] = [
    "idle",
    "writing the files",
    "recovering",
    "reading",
    "appending",
    "closing",
    "recovering again",
    "reading again",
    "closing again",
];

thread_local! {
    /// When the current step began, and the slowest step of this input (step, time).
    static TIMING: std::cell::Cell<(std::time::Instant, u8, Duration)> =
        std::cell::Cell::new((std::time::Instant::now(), 0, Duration::ZERO));
}

fn step(n: u8) {
    let now = std::time::Instant::now();
    TIMING.with(|t| {
        let (began, slowest, took) = t.get();
        let this = now - began;
        let prev = STEP.load(Ordering::Relaxed);
        let (slowest, took) = if n == 1 {
            (0, Duration::ZERO)
        } else if this > took {
            (prev, this)
        } else {
            (slowest, took)
        };
        t.set((now, slowest, took));
    });
    STEP.store(n, Ordering::Relaxed);
}

fn worker() -> &'static Mutex<mpsc::Sender<Job>> {
    static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let root = scratch_dir();
        glommio::LocalExecutorBuilder::default()
            .name("wal-fuzz")
            .spawn(move || async move {
                // A task that wakes the reactor every `WAL_FUZZ_TICK_MS` (default 50; 0: none),
                // as the engine's reactors always have one (their serve loop polls for shutdown
                // and reloads every 50 ms). Without it glommio 0.9 was seen to sleep through the
                // completion of a step on tmpfs (the executor parked in io_uring_enter with the
                // step's future pending; 4 times in about 560,000 executions, docs/testing.md);
                // with it, no input stalled. A tick re-polls no task but its own: only a
                // reactor-level event it lets the reactor see can unblock another task.
                let tick = std::env::var("WAL_FUZZ_TICK_MS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(50);
                if tick > 0 {
                    let ms = tick;
                    glommio::spawn_local(async move {
                        loop {
                            glommio::timer::sleep(Duration::from_millis(ms)).await;
                        }
                    })
                    .detach();
                }
                // Blocking between inputs is fine: nothing else runs on this executor.
                while let Ok((layout, done)) = rx.recv() {
                    let started = std::time::Instant::now();
                    check(&root.join("log"), layout).await;
                    if started.elapsed() > Duration::from_secs(2) {
                        let (_, slowest, took) = TIMING.with(|t| t.get());
                        eprintln!(
                            "SLOW input: {:?}, {took:?} of it {}",
                            started.elapsed(),
                            STEPS[slowest as usize]
                        );
                    }
                    let _ = done.send(());
                }
            })
            .expect("glommio executor");
        Mutex::new(tx)
    })
}

/// `shardtel-fuzz-wal-PID` in /dev/shm (else the temporary directory), after removing those
/// of processes that are gone (the directory lives as long as the process).
fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("shardtel-fuzz-wal-"));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("shardtel-fuzz-wal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        max_bytes: 1 << 30,
        group_commit_interval: Duration::from_micros(100),
        group_commit_bytes: 1 << 20,
        checkpoint_interval: Duration::from_secs(60),
        cache_bytes: 1 << 20,
        name: "fuzz".into(),
    }
}

/// The valid frames of a segment as the format defines them: from the start, each frame
/// checks and has the next LSN. (lsn, kind, payload).
fn valid_frames(first_lsn: u64, bytes: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let (mut pos, mut expect) = (0, first_lsn);
    while let Ok((h, range)) = frame::decode(&bytes[pos..]) {
        if h.lsn != expect {
            break;
        }
        out.push((h.lsn, h.kind, bytes[pos..][range].to_vec()));
        pos += h.frame_len();
        expect += 1;
    }
    out
}

async fn read_all(wal: &Wal) -> Vec<(u64, u8, Vec<u8>)> {
    let mut reader = wal.reader(wal.checkpoint_lsn());
    let mut frames = Vec::new();
    while let Some(f) = reader.next().await.expect("reading recovered frames") {
        frames.push((f.lsn, f.kind, f.payload.to_vec()));
    }
    frames
}

async fn check(dir: &Path, layout: Layout) {
    step(1);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut model = BTreeSet::new();
    let mut ranges = Vec::new();
    for (first, bytes) in &layout.segments {
        std::fs::write(dir.join(format!("{first:020}.seg")), bytes).unwrap();
        let frames = valid_frames(*first, bytes);
        if let (Some(a), Some(b)) = (frames.first(), frames.last()) {
            ranges.push((a.0, b.0));
        }
        model.extend(frames);
    }
    if let Some(ck) = &layout.checkpoint {
        std::fs::write(dir.join("checkpoint"), ck).unwrap();
    }
    ranges.sort();
    let disjoint = ranges.windows(2).all(|w| w[0].1 < w[1].0);

    step(2);
    let wal = Wal::open(dir, options())
        .await
        .unwrap_or_else(|e| panic!("recovery failed on bad data: {e}"));
    let checkpoint = wal.checkpoint_lsn();
    step(3);
    let frames = read_all(&wal).await;
    assert!(
        frames.windows(2).all(|w| w[0].0 < w[1].0),
        "LSNs increase: {:?}",
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    for f in &frames {
        assert!(
            f.0 >= checkpoint,
            "frame {} below checkpoint {checkpoint}",
            f.0
        );
        assert!(model.contains(f), "frame {} was not in the input", f.0);
    }
    if disjoint {
        let expected: Vec<_> = model
            .iter()
            .filter(|f| f.0 >= checkpoint)
            .cloned()
            .collect();
        assert_eq!(frames, expected, "every valid frame past the checkpoint");
    }
    step(4);
    let append = wal
        .append(7, vec![Bytes::from_static(b"after recovery")])
        .expect("append after recovery");
    let lsn = append.durable().await.expect("durable after recovery");
    if let Some(last) = frames.last() {
        assert!(lsn > last.0, "LSN {lsn} reused (last recovered {})", last.0);
    }
    step(5);
    wal.close().await;
    drop(wal);

    // Recovering what recovery left gives the same frames, and the new one.
    step(6);
    let wal = Wal::open(dir, options()).await.expect("second recovery");
    step(7);
    let again = read_all(&wal).await;
    let mut expected = frames.clone();
    expected.push((lsn, 7, b"after recovery".to_vec()));
    let again: Vec<_> = again.into_iter().filter(|f| f.0 >= checkpoint).collect();
    assert_eq!(again, expected, "a second recovery");
    step(8);
    wal.close().await;
    step(0);
}

/// Segment bytes from the input: raw, or frames encoded and then damaged.
fn segment(input: &mut Cursor<'_>, first: u64) -> Vec<u8> {
    let mode = input.byte();
    if mode & 1 == 0 {
        return input.piece().to_vec();
    }
    let mut out = Vec::new();
    let mut lsn = first;
    for _ in 0..(mode >> 1) % 8 {
        let kind = input.byte() | 1;
        // Now and then an LSN out of sequence.
        lsn += u64::from(input.byte() == 0xFF);
        let len = input.byte() as usize;
        frame::encode(kind, lsn, input.take(len), &mut out);
        lsn += 1;
    }
    match input.byte() % 4 {
        1 => out.truncate(input.u16() as usize),
        2 if !out.is_empty() => {
            let at = input.u16() as usize % out.len();
            out[at] ^= input.byte() | 1;
        }
        3 => out.extend(std::iter::repeat_n(0, input.byte() as usize * 64)),
        _ => {}
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let count = 1 + input.byte() % 3;
    let mut segments: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..count {
        let first = u64::from(input.byte() % 32);
        if segments.iter().any(|(f, _)| *f == first) {
            continue;
        }
        let bytes = segment(&mut input, first);
        segments.push((first, bytes));
    }
    let checkpoint = (input.byte() & 1 == 1).then(|| input.rest().to_vec());
    let (done, finished) = mpsc::channel();
    worker()
        .lock()
        .unwrap()
        .send((
            Layout {
                segments,
                checkpoint,
            },
            done,
        ))
        .expect("the executor runs");
    // A panic on the executor thread drops `done` unsent: report it as this input's crash.
    match finished.recv_timeout(HANG) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) if std::env::var_os("HOLD_ON_HANG").is_some() => {
            let pid = std::process::id();
            eprintln!("HANG {pid} at step {}", STEP.load(Ordering::Relaxed));
            // Every thread's stack, before libFuzzer's own timeout ends the process.
            let stacks = std::process::Command::new("gdb")
                .args([
                    "-p",
                    &pid.to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt",
                ])
                .output();
            if let Ok(out) = stacks {
                let path = format!("/tmp/wal-hang-{pid}.txt");
                let _ = std::fs::write(&path, &out.stdout);
                eprintln!("stacks in {path}");
            }
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "the log hangs {}",
            STEPS[STEP.load(Ordering::Relaxed) as usize]
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the check panicked on the executor thread (its message is above)")
        }
    }
});
