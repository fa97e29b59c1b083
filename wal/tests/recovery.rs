//! Recovery of segment files no clean run writes (found by the `wal_recovery` fuzz target).

use std::time::Duration;

use bytes::Bytes;
use shardtel_wal::{frame, Wal, WalOptions};

/// Empty frames of `kind` 1 with LSNs `lsns`, back to back.
fn frames(lsns: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for lsn in lsns {
        frame::encode(1, lsn, &[], &mut out);
    }
    out
}

/// Regression (fuzz finding): segments whose LSNs overlap — `…09.seg` holding 9..=14 and
/// `…11.seg` holding 11..=12 — made the next LSN the last segment's end (13), so a new frame
/// reused LSN 13 below recovered frame 14. The next LSN is the highest end.
#[test]
fn overlapping_segments_never_make_an_lsn_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(path.join(format!("{:020}.seg", 0)), []).unwrap();
    std::fs::write(path.join(format!("{:020}.seg", 9)), frames(9..15)).unwrap();
    std::fs::write(path.join(format!("{:020}.seg", 11)), frames(11..13)).unwrap();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let options = WalOptions {
                group_commit_interval: Duration::from_millis(1),
                ..WalOptions::default()
            };
            let wal = Wal::open(&path, options).await.unwrap();
            assert_eq!(wal.recovery().next_lsn, 15);
            let append = wal.append(7, vec![Bytes::from_static(b"new")]).unwrap();
            assert_eq!(append.durable().await.unwrap(), 15);
            let mut reader = wal.reader(0);
            let mut lsns = Vec::new();
            while let Some(f) = reader.next().await.unwrap() {
                lsns.push(f.lsn);
            }
            assert_eq!(lsns, [9, 10, 11, 12, 13, 14, 15]);
            wal.close().await;
        })
        .unwrap()
        .join()
        .unwrap();
}
