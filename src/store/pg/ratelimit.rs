//! The shared per-user Notion rate limiter's state: one row per user, locked while a grant is
//! decided, so every worker process and every restart sees the same limiter.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::{
    ids::UserId,
    store::{Grant, StoreResult},
};

impl PgStore {
    /// Counts one request against `user`'s limit of `limit` per `window`, if a slot is free.
    /// Times are the database's clock, which every process shares.
    pub async fn acquire_rate_limit_slot(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
    ) -> StoreResult<Grant> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            r#"insert into notion_rate_limits (user_id) values ($1) on conflict (user_id) do nothing"#,
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        let (grants, blocked_until, now): (Vec<DateTime<Utc>>, Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(
            r#"select recent_grants, blocked_until, now() from notion_rate_limits where user_id = $1 for update"#,
        )
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let mut live: Vec<DateTime<Utc>> = grants.into_iter().filter(|at| *at > now - window).collect();
        live.sort();
        let grant = match blocked_until {
            Some(until) if until > now => Grant::WaitUntil(until),
            _ if live.len() < limit as usize => {
                live.push(now);
                Grant::Granted
            }
            // The slot that frees first is the one taken `limit` grants ago.
            _ => Grant::WaitUntil(live[live.len() - limit as usize] + window),
        };
        sqlx::query(r#"update notion_rate_limits set recent_grants = $2 where user_id = $1"#)
            .bind(user)
            .bind(&live)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(grant)
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
