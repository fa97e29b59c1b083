//! Modes of what shardtel creates on disk: the write-ahead logs (ingest log, export queues) and
//! exported files hold telemetry, which can carry secrets and personal data, so they are private
//! to the user shardtel runs as. Directories are created `0700`, files `0600` (less what the
//! umask removes); directories and files that already exist keep the mode they have.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Mode of directories shardtel creates.
pub const DIR_MODE: u32 = 0o700;

/// Mode of files shardtel creates.
pub const FILE_MODE: u32 = 0o600;

/// `mkdir -p` with [`DIR_MODE`] for every directory it creates. Blocking (metadata only): call
/// it at start-up or from a blocking thread.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_directories_are_private_and_existing_ones_kept() {
        let root = std::env::temp_dir().join(format!("shardtel-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&root.join("a/b")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&root.join("a/b")), 0o700);
        assert_eq!(mode(&root), 0o755, "an existing directory keeps its mode");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
