//! Connections for statements whose caller may give up on them.

use std::{
    ops::{Deref, DerefMut},
    time::Duration,
};

use sqlx::{Connection, PgConnection, PgPool, Postgres, pool::PoolConnection};

use crate::store::StoreResult;

/// How long a connection given up on mid-statement may take to finish the statement, still
/// counted in the pool, before it is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection for work whose caller may give up mid-statement: a request's deadline
/// (the webhook's store timeout, a health check's) drops the future. Given up on, the
/// connection waits for the statement's answer for at most [`DRAIN_TIMEOUT`], still holding
/// its place in the pool, and is closed if none comes.
///
/// Handed back as it is, sqlx would wait for that answer with no deadline (our sockets have no
/// keepalive, and over TLS even closing waits on the server). Against a server gone silent (a
/// host lost without a reset, a failover that moved the address), each such connection stayed
/// out of the pool until the kernel gave the socket up, about 15 minutes, and enough of them
/// kept every delivery out (503) long after the database was back. Waiting a bounded time
/// first, rather than closing at once, keeps a slow but live server from being handed a new
/// session for every request that gives up while its statement still runs.
pub(crate) struct Abandonable(Option<PoolConnection<Postgres>>);

impl Abandonable {
    pub(crate) async fn acquire(pool: &PgPool) -> StoreResult<Self> {
        Ok(Self(Some(pool.acquire().await?)))
    }

    /// Done with it: the connection goes back to the pool.
    pub(crate) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Deref for Abandonable {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.0.as_deref().expect("held until released")
    }
}

impl DerefMut for Abandonable {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.0.as_deref_mut().expect("held until released")
    }
}

impl Drop for Abandonable {
    /// Not released: given up on, or failed (an error on the way out with `?`).
    fn drop(&mut self) {
        let Some(mut conn) = self.0.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to wait on (the process is ending): closed without a word to the server.
            drop(conn.detach());
            return;
        };
        runtime.spawn(async move {
            // `flush` is sqlx's "wait until ready": it reads the answers still owed, nothing
            // else (at once when nothing is owed, e.g. after an error).
            match tokio::time::timeout(DRAIN_TIMEOUT, conn.flush()).await {
                Ok(Ok(())) => drop(conn),
                // Detached from the pool (which opens a replacement when it needs one) and
                // dropped: its socket is closed without a word to the server.
                _ => drop(conn.detach()),
            }
        });
    }
}
