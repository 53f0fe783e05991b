//! The shared per-user Notion rate limiter: at most `NOTION_RATE_LIMIT_PER_MINUTE` requests
//! with one user's token in any 60-second window, across every worker process and restart
//! (its state is in the database), and a 429's `Retry-After` honoured for every process.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::store::Grant;
use crate::{
    ids::UserId,
    store::{Store, StoreResult},
};

/// Notion counts requests when they arrive; we count them when granted, a moment earlier. The
/// margin keeps a request that was granted late in one window from landing with the next
/// window's requests inside 60 seconds as Notion sees them.
const WINDOW: Duration = Duration::from_millis(61_000);

#[derive(Clone)]
pub struct RateLimiter {
    store: Store,
    per_minute: u32,
}

impl RateLimiter {
    pub fn new(store: Store, per_minute: u32) -> Self {
        Self { store, per_minute }
    }

    /// Takes a slot for one request with `user`'s token, or says when one frees.
    pub async fn acquire(&self, user: UserId) -> StoreResult<Grant> {
        self.store.acquire_rate_limit_slot(user, self.per_minute, WINDOW).await
    }

    /// Notion said 429: no request with this user's token before `retry_after` has passed.
    pub async fn block(&self, user: UserId, retry_after: Duration) -> StoreResult<DateTime<Utc>> {
        self.store.block_rate_limit(user, retry_after).await
    }
}
