//! [`WalError`]: why an append, a commit, a read or recovery failed, classified once.

use std::io;

/// Why the log could not do what was asked. `Clone`: one failed group commit fails every frame
/// in it, and each waiter gets its own copy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// Appending would take the retained bytes past `max_bytes`. Retry later (or drop the
    /// oldest segment, for queues configured that way).
    #[error("the log is full ({retained} of {max} bytes retained)")]
    Full {
        /// Bytes retained on disk and waiting to be written.
        retained: u64,
        /// The configured bound.
        max: u64,
    },
    /// A payload larger than [`crate::frame::MAX_PAYLOAD`].
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The disk refused a write, a sync, a file creation or a read.
    #[error("failed to {op} {path}: {message}")]
    Io {
        /// What was being done: "write", "sync", "create", "read", ...
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The error's kind.
        kind: io::ErrorKind,
        /// The OS error number, when there is one.
        errno: Option<i32>,
        /// The error's text.
        message: String,
    },
    /// A frame read back at run time failed its checksum (the disk changed under us).
    #[error("corrupt frame in {path} at offset {offset}")]
    Corrupt {
        /// The segment file.
        path: String,
        /// Byte offset of the frame.
        offset: u64,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, err: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.display().to_string(),
            kind: err.kind(),
            errno: err.raw_os_error(),
            message: err.to_string(),
        }
    }

    /// The disk (or a quota or file-size limit) is out of space: ENOSPC, EDQUOT or EFBIG.
    pub fn is_out_of_space(&self) -> bool {
        matches!(
            self,
            WalError::Io {
                errno: Some(libc_errno::ENOSPC | libc_errno::EDQUOT | libc_errno::EFBIG),
                ..
            }
        )
    }

    /// True for conditions that may clear by themselves (full, disk errors): the caller should
    /// refuse with a retryable error. False for [`WalError::TooLarge`].
    pub fn is_retryable(&self) -> bool {
        !matches!(self, WalError::TooLarge { .. })
    }
}

/// The few Linux errno values the classification needs (no libc dependency for three numbers).
mod libc_errno {
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_errors() {
        let path = std::path::Path::new("/x");
        for errno in [27, 28, 122] {
            let e = WalError::io("write", path, io::Error::from_raw_os_error(errno));
            assert!(e.is_out_of_space() && e.is_retryable(), "{e}");
        }
        let eio = WalError::io("write", path, io::Error::from_raw_os_error(5));
        assert!(!eio.is_out_of_space() && eio.is_retryable());
        assert!(eio.to_string().starts_with("failed to write /x: "));
    }
}
