//! systemd's readiness protocol (`sd_notify(3)`), for `Type=notify` units: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). Without `NOTIFY_SOCKET` (not started by systemd) every call is a no-op.
//!
//! The process sends [`ready`] once every core serves and [`stopping`] when it starts to
//! drain; a reload sends [`reloading`], then [`ready`] again once the new configuration runs.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to `NOTIFY_SOCKET`. `Ok(false)`
/// when the variable is not set.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.as_bytes();
    let addr = match socket.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(socket))?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it: systemd not hearing a state change is
/// worth a warning, never a reason to stop serving.
fn send(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!("sd_notify {state:?} to NOTIFY_SOCKET failed: {e}");
    }
}

/// Every core serves: `READY=1`, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// Draining before exit: `STOPPING=1`.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

/// A reload started: `RELOADING=1` (follow with [`ready`] once it is done). With `Type=notify`
/// and `ExecReload=`, systemd needs no `MONOTONIC_USEC=` (only `Type=notify-reload` does).
pub fn reloading() {
    send("RELOADING=1\nSTATUS=reloading");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both socket forms through real datagram sockets. One test, because it sets the
    /// process-wide `NOTIFY_SOCKET`.
    #[test]
    fn sends_to_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        // No other unit test of this crate reads or writes NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=serving").unwrap());
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        let name = format!("shardtel-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
        assert!(notify("STOPPING=1").unwrap());
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        std::env::set_var("NOTIFY_SOCKET", dir.path().join("absent"));
        assert!(
            notify("READY=1").is_err(),
            "no listener: an error, not silence"
        );
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap());
    }
}
