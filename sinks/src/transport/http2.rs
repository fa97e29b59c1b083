//! One HTTP/2 (h2c) connection per core and target, shared by the core's sender tasks: the
//! transport of `otlp` (gRPC).

use std::cell::RefCell;

use hyper::client::conn::http2;

use super::{drive, ChunkBody, Target};
use crate::error::ExportError;
use crate::net::LocalExec;

/// A lazily opened HTTP/2 connection, reopened after it closes or is [`reset`](Self::reset).
pub(crate) struct SharedConnection {
    target: Target,
    conn: RefCell<Option<http2::SendRequest<ChunkBody>>>,
    /// Lets one task connect while the others wait for its connection.
    connecting: glommio::sync::Semaphore,
}

impl SharedConnection {
    /// No connection is opened until the first request.
    pub(crate) fn new(target: Target) -> Self {
        Self {
            target,
            conn: RefCell::new(None),
            connecting: glommio::sync::Semaphore::new(1),
        }
    }

    /// The shared connection, opened first if there is none (or it closed).
    pub(crate) async fn sender(&self) -> Result<http2::SendRequest<ChunkBody>, ExportError> {
        if let Some(sender) = self.live_sender() {
            return Ok(sender);
        }
        let _permit = self
            .connecting
            .acquire_permit(1)
            .await
            .expect("the connect semaphore is never closed");
        if let Some(sender) = self.live_sender() {
            return Ok(sender);
        }
        let io = self.target.connect().await?;
        let (sender, connection) = http2::Builder::new(LocalExec)
            .handshake::<_, ChunkBody>(io)
            .await
            .map_err(|source| ExportError::Transport { source })?;
        drive(connection);
        *self.conn.borrow_mut() = Some(sender.clone());
        Ok(sender)
    }

    /// Forgets the connection: streams still running on it finish there, new ones get a fresh
    /// connection.
    pub(crate) fn reset(&self) {
        self.conn.borrow_mut().take();
    }

    fn live_sender(&self) -> Option<http2::SendRequest<ChunkBody>> {
        let mut conn = self.conn.borrow_mut();
        match conn.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                conn.take();
                None
            }
            None => None,
        }
    }
}
