//! What a log creates on disk is private to its user: directories `0700`, files `0600`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::Bytes;
use shardtel_wal::{Wal, WalOptions};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn directories_and_files_of_a_log_are_private() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data/ingest/core0");
    let open = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let wal = Wal::open(&open, WalOptions::default()).await.unwrap();
            let append = wal.append(1, vec![Bytes::from_static(b"x")]).unwrap();
            append.durable().await.unwrap();
            wal.close().await;
        })
        .unwrap()
        .join()
        .unwrap();
    for d in ["data", "data/ingest", "data/ingest/core0"] {
        assert_eq!(mode(&root.path().join(d)), 0o700, "{d}");
    }
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "seg")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with("checkpoint")), "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}
