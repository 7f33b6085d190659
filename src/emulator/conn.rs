//! The signal a handler uses to close the connection its request came on.
//!
//! An axum handler cannot close its own connection, yet one fault needs exactly that: store
//! the assignment, then drop the connection without answering. The accept loop puts a
//! [`ConnHandle`] in each request's extensions and races the connection against it; a handler
//! fires it. It lives apart from the accept loop so that handlers depend on this signal only,
//! not on the server that routes to them.

use tokio_util::sync::CancellationToken;

/// Lets a handler drop the connection its request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle(CancellationToken);

impl ConnHandle {
    /// A handle that fires `kill`; the connection task waits on `kill`.
    pub(crate) fn new(kill: CancellationToken) -> Self {
        Self(kill)
    }

    pub(crate) fn drop_connection(&self) {
        self.0.cancel();
    }
}
