//! The shared per-user Notion rate limiter's state: one row per user, locked while a grant is
//! decided (by one SQL function call), so every worker process and every restart sees the same
//! limiter.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::{
    ids::UserId,
    store::{Grant, StoreResult, StoredNotionToken},
};

impl PgStore {
    /// Counts up to `count` requests against `user`'s limit of `limit` per `window`, as many
    /// as there are free slots. Slots are counted by the database's clock, which every process
    /// shares.
    /// One call of `cognie_acquire_rate_limit_slots` (migration `..._rate_limit_slots.sql`):
    /// one round trip, and the user's row is locked only while that statement runs.
    pub async fn acquire_rate_limit_slots(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
        count: u32,
    ) -> StoreResult<Grant> {
        let (granted, wait): (i32, Option<f64>) = sqlx::query_as(
            r#"
            select granted, extract(epoch from wait_until - clock_timestamp())::float8
            from cognie_acquire_rate_limit_slots($1, $2, make_interval(secs => $3), $4)
            "#,
        )
        .bind(user)
        .bind(clamp_i32(limit))
        .bind(window.as_secs_f64())
        .bind(clamp_i32(count))
        .fetch_one(&self.pool)
        .await?;
        Ok(grant(granted, wait))
    }

    /// The user's stored Notion token and, when there is one, up to `count` slots as
    /// [`PgStore::acquire_rate_limit_slots`] takes them: what a crawl needs before its first
    /// request, in one round trip. `None`: no such user, or no token (no slot is taken).
    pub async fn notion_token_and_slots(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
        count: u32,
    ) -> StoreResult<Option<(StoredNotionToken, Grant)>> {
        let row: Option<(Vec<u8>, i32, Option<f64>)> = sqlx::query_as(
            r#"
            select u.notion_token_ciphertext, g.granted, extract(epoch from g.wait_until - clock_timestamp())::float8
            from users u, cognie_acquire_rate_limit_slots(u.id, $2, make_interval(secs => $3), $4) g
            where u.id = $1 and u.notion_token_ciphertext is not null
            "#,
        )
        .bind(user)
        .bind(clamp_i32(limit))
        .bind(window.as_secs_f64())
        .bind(clamp_i32(count))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(ciphertext, granted, wait)| (StoredNotionToken { ciphertext }, grant(granted, wait))))
    }

    /// Blocks `user`'s limiter for `for_at_least` (Notion answered 429 with Retry-After); until
    /// when, by this process's clock.
    pub async fn block_rate_limit(&self, user: UserId, for_at_least: Duration) -> StoreResult<DateTime<Utc>> {
        let wait: f64 = sqlx::query_scalar(
            r#"
            insert into notion_rate_limits (user_id, blocked_until)
            values ($1, now() + make_interval(secs => $2))
            on conflict (user_id) do update
            set blocked_until = greatest(coalesce(notion_rate_limits.blocked_until, excluded.blocked_until), excluded.blocked_until)
            returning extract(epoch from blocked_until - clock_timestamp())::float8
            "#,
        )
        .bind(user)
        .bind(for_at_least.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(from_now(wait))
    }
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A grant, its refusal's time on this process's clock: the database's time until a slot frees
/// is read as a wait from now. The step that must wait is scheduled by this clock
/// (`enqueue_at`), so a time on the database's clock from a worker whose clock runs ahead would
/// come due early, be refused again, and loop without pause until the clocks met.
fn grant(granted: i32, wait: Option<f64>) -> Grant {
    match (granted, wait) {
        (n, _) if n > 0 => Grant::Granted(n as u32),
        (_, Some(wait)) => Grant::WaitUntil(from_now(wait)),
        // Not reachable: a refusal always says until when.
        (_, None) => Grant::WaitUntil(Utc::now()),
    }
}

/// `seconds` from now, by this process's clock (none when already past).
fn from_now(seconds: f64) -> DateTime<Utc> {
    Utc::now() + Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
}
