//! Wake-all notification between tasks of one core (shared with the write-ahead log).

pub(crate) use shardtel_wal::notify::Notify;
