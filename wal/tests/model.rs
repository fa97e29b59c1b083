//! Model test of the log (STYLE.md: stateful parts get model tests, like vector's
//! `disk_v2/tests/model`): random appends, group commits, flushes, reads with checkpoints,
//! dropped segments, clean restarts and crashes — simulated by discarding what was not
//! committed and then truncating, overwriting or corrupting the last segment at arbitrary
//! offsets past its durable end — checked against a simple in-memory model:
//!
//! - no frame that was acknowledged durable (flush or `Append::durable` returned Ok) is lost,
//!   unless it was consumed before a persisted checkpoint or dropped as the oldest segment;
//! - frames come back in strictly increasing LSN order, each with the payload appended under
//!   its LSN (nothing invented, nothing out of order);
//! - nothing below a persisted checkpoint is delivered again, and no LSN of a durable frame is
//!   reused after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use shardtel_wal::{Append, Wal, WalError, WalOptions, WalReader};

#[derive(Clone, Debug)]
enum Op {
    /// Append a frame; `wait` awaits its group commit at once.
    Append { len: usize, wait: bool },
    /// Flush pending frames and await every outstanding append.
    Flush,
    /// Read up to `n` durable frames and checkpoint after the last.
    Consume(usize),
    /// Write the checkpoint to disk now.
    Persist,
    /// Drop the oldest segment (overflow = "drop_oldest").
    DropOldest,
    /// Clean close and reopen.
    Restart,
    /// Crash, damage the last segment past its durable end, reopen.
    Crash { at: u32, damage: Damage },
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    Garbage(u8),
    FlipByte,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0usize..2500, any::<bool>()).prop_map(|(len, wait)| Op::Append { len, wait }),
        3 => Just(Op::Flush),
        3 => (1usize..8).prop_map(Op::Consume),
        1 => Just(Op::Persist),
        1 => Just(Op::DropOldest),
        1 => Just(Op::Restart),
        2 => (any::<u32>(), prop_oneof![
            Just(Damage::Truncate),
            any::<u8>().prop_map(Damage::Garbage),
            Just(Damage::FlipByte),
        ]).prop_map(|(at, damage)| Op::Crash { at, damage }),
    ]
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 8192,
        max_bytes: 96 * 1024,
        group_commit_interval: Duration::from_millis(1),
        group_commit_bytes: 4096,
        checkpoint_interval: Duration::from_millis(5),
        cache_bytes: 16 * 1024,
        name: "model".into(),
    }
}

fn payload(lsn_hint: u64, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (lsn_hint as usize * 31 + i * 7) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[derive(Default)]
struct Model {
    /// Payload of every frame that may still be in the log.
    frames: BTreeMap<u64, Bytes>,
    /// Frames acknowledged durable.
    durable: BTreeSet<u64>,
    /// The checkpoint known to be on disk.
    persisted: u64,
    /// The last LSN the current reader delivered.
    delivered: Option<u64>,
}

impl Model {
    /// Checks a frame the reader delivered after `prev`.
    fn delivered(&mut self, lsn: u64, bytes: &Bytes, floor: u64) -> Result<(), String> {
        if let Some(prev) = self.delivered {
            if lsn <= prev {
                return Err(format!("frame {lsn} delivered after {prev}"));
            }
        }
        let from = self.delivered.map_or(floor, |p| p + 1);
        if let Some(lost) = self.durable.range(from..lsn).next() {
            return Err(format!("durable frame {lost} skipped (delivered {lsn})"));
        }
        match self.frames.get(&lsn) {
            Some(expected) if expected == bytes => {}
            Some(_) => return Err(format!("frame {lsn} has the wrong payload")),
            None => {
                return Err(format!(
                    "frame {lsn} was never appended (or was lost before)"
                ))
            }
        }
        self.delivered = Some(lsn);
        Ok(())
    }
}

async fn run(ops: Vec<Op>, dir: &Path) -> Result<(), String> {
    let mut wal = Wal::open(dir, options()).await.map_err(|e| e.to_string())?;
    let mut reader = wal.reader(wal.checkpoint_lsn());
    let mut model = Model::default();
    let mut outstanding: Vec<(Append, Bytes)> = Vec::new();
    for op in ops {
        match op {
            Op::Append { len, wait } => {
                let bytes = payload(wal.next_lsn(), len);
                match wal.append(7, vec![bytes.clone()]) {
                    Ok(append) => {
                        model.frames.insert(append.lsn(), bytes.clone());
                        if wait {
                            let lsn = append.durable().await.map_err(|e| e.to_string())?;
                            model.durable.insert(lsn);
                        } else {
                            outstanding.push((append, bytes));
                        }
                    }
                    Err(WalError::Full { .. }) => {}
                    Err(e) => return Err(format!("append failed: {e}")),
                }
            }
            Op::Flush => {
                wal.flush().await.map_err(|e| e.to_string())?;
                for (append, _) in outstanding.drain(..) {
                    let lsn = append.durable().await.map_err(|e| e.to_string())?;
                    model.durable.insert(lsn);
                }
            }
            Op::Consume(n) => {
                let floor = wal.checkpoint_lsn();
                for _ in 0..n {
                    match reader.next().await {
                        Ok(Some(frame)) => {
                            model.delivered(frame.lsn, &frame.payload, floor)?;
                            wal.checkpoint(frame.lsn + 1);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(format!("read failed: {e}")),
                    }
                }
            }
            Op::Persist => {
                wal.persist_checkpoint().await.map_err(|e| e.to_string())?;
                model.persisted = wal.checkpoint_lsn();
            }
            Op::DropOldest => {
                if wal.drop_oldest_segment().is_some() {
                    // Everything below the new checkpoint is gone; the reader skips ahead.
                    let ck = wal.checkpoint_lsn();
                    model.durable.retain(|l| *l >= ck);
                    if model.delivered.is_some_and(|d| d < ck) || model.delivered.is_none() {
                        model.delivered = ck.checked_sub(1);
                    }
                }
            }
            Op::Restart | Op::Crash { .. } => {
                let clean = matches!(op, Op::Restart);
                let layout = wal.durable_layout();
                if clean {
                    wal.close().await;
                    model.persisted = wal.checkpoint_lsn();
                    for (append, _) in outstanding.drain(..) {
                        let lsn = append.durable().await.map_err(|e| e.to_string())?;
                        model.durable.insert(lsn);
                    }
                    drop(wal);
                } else {
                    wal.crash().await;
                    outstanding.clear();
                    if let Op::Crash { at, damage } = op {
                        damage_tail(&layout, at, damage);
                    }
                }
                wal = Wal::open(dir, options()).await.map_err(|e| e.to_string())?;
                let ck = wal.checkpoint_lsn();
                if ck < model.persisted {
                    return Err(format!(
                        "recovered checkpoint {ck} is below the persisted {}",
                        model.persisted
                    ));
                }
                if let Some(&max) = model.durable.iter().next_back() {
                    if wal.next_lsn() <= max {
                        return Err(format!(
                            "next lsn {} would reuse durable lsn {max}",
                            wal.next_lsn()
                        ));
                    }
                }
                // Everything recovered, checked against the model.
                let mut check = wal.reader(ck);
                model.delivered = None;
                let mut seen = BTreeMap::new();
                loop {
                    match check.next().await {
                        Ok(Some(frame)) => {
                            model.delivered(frame.lsn, &frame.payload, ck)?;
                            seen.insert(frame.lsn, frame.payload);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(format!("read after restart failed: {e}")),
                    }
                }
                if let Some(lost) = model.durable.range(ck..).find(|l| !seen.contains_key(l)) {
                    return Err(format!("durable frame {lost} lost across restart"));
                }
                // What survived is all there is; it is on disk now.
                model.frames = seen;
                model.durable = model.frames.keys().copied().collect();
                model.delivered = None;
                reader = wal.reader(ck);
                check_reader_starts(&reader, ck);
            }
        }
    }
    wal.close().await;
    Ok(())
}

fn check_reader_starts(reader: &WalReader, ck: u64) {
    assert_eq!(reader.position(), ck);
}

/// Damages the last segment at or after its durable end: what a crash in the middle of a
/// write can leave behind.
fn damage_tail(layout: &[(std::path::PathBuf, u64)], at: u32, damage: Damage) {
    let Some((path, durable)) = layout.last() else {
        return;
    };
    let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(path) else {
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len <= *durable {
        return;
    }
    let offset = durable + u64::from(at) % (len - durable);
    match damage {
        Damage::Truncate => file.set_len(offset).unwrap(),
        Damage::Garbage(seed) => {
            let junk: Vec<u8> = (0..300u32)
                .map(|i| (i as u8).wrapping_mul(seed | 1))
                .collect();
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&junk[..junk.len().min((len - offset) as usize)])
                .unwrap();
        }
        Damage::FlipByte => {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&[0xA5]).unwrap();
        }
    }
    file.sync_all().unwrap();
}

fn in_executor(ops: Vec<Op>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { run(ops, &path).await })
        .unwrap()
        .join()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        if let Err(e) = in_executor(ops) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// A torn frame in the middle of an earlier segment: the scan skips the rest of that segment
/// and keeps the later segments' frames.
#[test]
fn corrupt_frame_in_a_sealed_segment_skips_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let result: Result<(), String> = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let wal = Wal::open(&path, options()).await.unwrap();
            for i in 0..20u64 {
                let a = wal.append(1, vec![payload(i, 1500)]).unwrap();
                a.durable().await.unwrap();
            }
            let layout = wal.durable_layout();
            wal.close().await;
            drop(wal);
            assert!(layout.len() >= 3, "{layout:?}");
            // Flip a payload byte of the first segment's second frame.
            let (first, _) = &layout[0];
            let mut f = std::fs::OpenOptions::new().write(true).open(first).unwrap();
            f.seek(SeekFrom::Start(1517 + 17 + 100)).unwrap();
            f.write_all(&[0xFF]).unwrap();
            drop(f);
            let wal = Wal::open(&path, options()).await.unwrap();
            let rec = wal.recovery();
            assert_eq!(rec.truncated_frames, 1, "{rec:?}");
            let mut reader = wal.reader(0);
            let mut lsns = Vec::new();
            while let Some(frame) = reader.next().await.unwrap() {
                lsns.push(frame.lsn);
            }
            // Frame 0 survives, the rest of segment 0 is skipped, every later segment is kept.
            assert_eq!(lsns[0], 0);
            assert!(!lsns.contains(&1));
            assert_eq!(*lsns.last().unwrap(), 19);
            assert_eq!(rec.recovered_frames, lsns.len() as u64);
            wal.close().await;
            Ok(())
        })
        .unwrap()
        .join()
        .unwrap();
    result.unwrap();
}
