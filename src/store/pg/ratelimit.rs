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
    /// as there are free slots. Times are the database's clock, which every process shares.
    /// One call of `cognie_acquire_rate_limit_slots` (migration `..._rate_limit_slots.sql`):
    /// one round trip, and the user's row is locked only while that statement runs.
    pub async fn acquire_rate_limit_slots(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
        count: u32,
    ) -> StoreResult<Grant> {
        let (granted, wait_until): (i32, Option<DateTime<Utc>>) = sqlx::query_as(
            r#"select granted, wait_until from cognie_acquire_rate_limit_slots($1, $2, make_interval(secs => $3), $4)"#,
        )
        .bind(user)
        .bind(clamp_i32(limit))
        .bind(window.as_secs_f64())
        .bind(clamp_i32(count))
        .fetch_one(&self.pool)
        .await?;
        Ok(grant(granted, wait_until))
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
        let row: Option<(Vec<u8>, i32, Option<DateTime<Utc>>)> = sqlx::query_as(
            r#"
            select u.notion_token_ciphertext, g.granted, g.wait_until
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
        Ok(row.map(|(ciphertext, granted, wait_until)| {
            (StoredNotionToken { ciphertext }, grant(granted, wait_until))
        }))
    }

    /// Blocks `user`'s limiter for `for_at_least` (Notion answered 429 with Retry-After).
    pub async fn block_rate_limit(&self, user: UserId, for_at_least: Duration) -> StoreResult<DateTime<Utc>> {
        let until: DateTime<Utc> = sqlx::query_scalar(
            r#"
            insert into notion_rate_limits (user_id, blocked_until)
            values ($1, now() + make_interval(secs => $2))
            on conflict (user_id) do update
            set blocked_until = greatest(coalesce(notion_rate_limits.blocked_until, excluded.blocked_until), excluded.blocked_until)
            returning blocked_until
            "#,
        )
        .bind(user)
        .bind(for_at_least.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(until)
    }
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn grant(granted: i32, wait_until: Option<DateTime<Utc>>) -> Grant {
    match (granted, wait_until) {
        (n, _) if n > 0 => Grant::Granted(n as u32),
        (_, Some(until)) => Grant::WaitUntil(until),
        // Not reachable: a refusal always says until when.
        (_, None) => Grant::WaitUntil(Utc::now()),
    }
}
