//! The shared per-user Notion rate limiter's state: one row per user, locked while a grant is
//! decided (by one SQL function call), so every worker process and every restart sees the same
//! limiter.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::{
    ids::UserId,
    store::{Grant, StoreResult},
};

impl PgStore {
    /// Counts one request against `user`'s limit of `limit` per `window`, if a slot is free.
    /// Times are the database's clock, which every process shares. One call of
    /// `cognie_acquire_rate_limit_slot` (migration `..._rate_limit_in_one_statement.sql`): one
    /// round trip, and the user's row is locked only while that statement runs.
    pub async fn acquire_rate_limit_slot(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
    ) -> StoreResult<Grant> {
        let (granted, wait_until): (bool, Option<DateTime<Utc>>) = sqlx::query_as(
            r#"select granted, wait_until from cognie_acquire_rate_limit_slot($1, $2, make_interval(secs => $3))"#,
        )
        .bind(user)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(window.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(match (granted, wait_until) {
            (true, _) => Grant::Granted,
            (false, Some(until)) => Grant::WaitUntil(until),
            // Not reachable: a refusal always says until when.
            (false, None) => Grant::WaitUntil(Utc::now()),
        })
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
