//! A hardened edge (issue 16), through the real process: hostile clients, crashes and bad input
//! never take the service away, and what shardtel writes to disk is private.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod clients;
mod data;
mod formats;

/// Waits on `s` until the server closes it; returns when (how long after `since`).
pub(crate) fn closed_after(mut s: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}
