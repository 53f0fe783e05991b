//! The shared per-user Notion rate limiter: at most `NOTION_RATE_LIMIT_PER_MINUTE` requests
//! with one user's token in any 60-second window, across every worker process and restart
//! (its state is in the database), and a 429's `Retry-After` honoured for every process.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::store::Grant;
use crate::{
    ids::UserId,
    store::{Store, StoreResult, StoredNotionToken},
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

    /// Takes slots for up to `count` requests with `user`'s token (as many as are free), or
    /// says when one frees. Take only as many as will be used at once: a slot taken counts
    /// whether or not its request is made. At most a second's worth of the limit is taken at
    /// once (see [`RateLimiter::at_once`]).
    pub async fn acquire(&self, user: UserId, count: u32) -> StoreResult<Grant> {
        self.store.acquire_rate_limit_slots(user, self.per_minute, WINDOW, self.at_once(count)).await
    }

    /// One slot for a request that is made now or not at all (a reconciliation check): taken
    /// if one is free; if not, the refusal takes no place in the user's line of waiters, since
    /// the caller will not come back at its turn.
    pub async fn try_acquire_one(&self, user: UserId) -> StoreResult<Grant> {
        self.store.acquire_rate_limit_slots(user, self.per_minute, WINDOW, 0).await
    }

    /// How many of `count` slots wanted are taken in one grant: no more than the limit allows
    /// per second (at least one). A slot taken ahead that is not used soon enough stays
    /// counted for the whole window (see `steps::fetch`'s spare slots); at a limit of a few
    /// requests per minute, one such slot would cost the user a third of their minute.
    fn at_once(&self, count: u32) -> u32 {
        count.min((self.per_minute / 60).max(1))
    }

    /// The user's stored Notion token and slots for up to `count` requests with it, as
    /// [`RateLimiter::acquire`] takes them: what a crawl needs before its first request, in
    /// one round trip. `None`: the user has no token (no slot is taken).
    pub async fn token_and_slots(
        &self,
        user: UserId,
        count: u32,
    ) -> StoreResult<Option<(StoredNotionToken, Grant)>> {
        self.store.notion_token_and_slots(user, self.per_minute, WINDOW, self.at_once(count)).await
    }

    /// Notion said 429: no request with this user's token before `retry_after` has passed.
    pub async fn block(&self, user: UserId, retry_after: Duration) -> StoreResult<DateTime<Utc>> {
        self.store.block_rate_limit(user, retry_after).await
    }
}
