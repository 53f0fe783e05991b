//! The shared per-user Notion rate limiter's state: one row per granted request in the window,
//! one per waiter in line, and the user's 429 block, decided under SQLite's write lock so every
//! grant sees the others.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{SqliteStore, ts};
use crate::{
    ids::UserId,
    store::{Grant, StoreResult, StoredNotionToken},
};

impl SqliteStore {
    pub async fn acquire_rate_limit_slots(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
        count: u32,
    ) -> StoreResult<Grant> {
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let mut tx = self.begin_write().await?;
        // Read once the write lock is held: a grant stamped while waiting for it would be
        // counted from before it was made, and its slot would free early.
        let now = Utc::now();
        sqlx::query(r#"delete from notion_rate_grants where user_id = $1 and granted_at <= $2"#)
            .bind(user)
            .bind(ts(now - window))
            .execute(&mut *tx)
            .await?;
        let blocked_until: Option<DateTime<Utc>> =
            sqlx::query_scalar(r#"select blocked_until from notion_rate_limits where user_id = $1"#)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        let live: i64 = sqlx::query_scalar(r#"select count(*) from notion_rate_grants where user_id = $1"#)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        let grant = match blocked_until {
            Some(until) if until > now => Grant::WaitUntil(until),
            _ if live < i64::from(limit) => {
                let granted = (i64::from(limit) - live).min(i64::from(count.max(1))) as u32;
                for _ in 0..granted {
                    sqlx::query(r#"insert into notion_rate_grants (user_id, granted_at) values ($1, $2)"#)
                        .bind(user)
                        .bind(ts(now))
                        .execute(&mut *tx)
                        .await?;
                }
                Grant::Granted(granted)
            }
            // A place in line, after the waiters already in it (see PostgreSQL's
            // `..._rate_limit_waiters_in_line.sql`): the first waiter's turn is when the slot
            // taken `limit` grants ago frees, the next one's when the slot after it does, and
            // past this window's slots, one window (and a second, for the time from a turn to
            // its grant) after the turn of the waiter `limit` places ahead.
            _ => {
                sqlx::query(r#"delete from notion_rate_waits where user_id = $1 and wake_at <= $2"#)
                    .bind(user)
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                let waiting: i64 =
                    sqlx::query_scalar(r#"select count(*) from notion_rate_waits where user_id = $1"#)
                        .bind(user)
                        .fetch_one(&mut *tx)
                        .await?;
                let place = live - i64::from(limit) + waiting;
                let turn = if place < live {
                    let frees: DateTime<Utc> = sqlx::query_scalar(
                        r#"select granted_at from notion_rate_grants where user_id = $1
                           order by granted_at limit 1 offset $2"#,
                    )
                    .bind(user)
                    .bind(place)
                    .fetch_one(&mut *tx)
                    .await?;
                    frees + window
                } else {
                    let ahead: DateTime<Utc> = sqlx::query_scalar(
                        r#"select wake_at from notion_rate_waits where user_id = $1
                           order by wake_at limit 1 offset $2"#,
                    )
                    .bind(user)
                    .bind(waiting - i64::from(limit))
                    .fetch_one(&mut *tx)
                    .await?;
                    ahead + window + chrono::Duration::seconds(1)
                };
                // A place is as many slots as the caller asked for: what it takes at its turn
                // (none for a caller that asked for 0: it will not come back).
                for _ in 0..count.min(limit.max(1)) {
                    sqlx::query(r#"insert into notion_rate_waits (user_id, wake_at) values ($1, $2)"#)
                        .bind(user)
                        .bind(ts(turn))
                        .execute(&mut *tx)
                        .await?;
                }
                Grant::WaitUntil(turn)
            }
        };
        tx.commit().await?;
        Ok(grant)
    }

    /// As on PostgreSQL, in two statements (one process, nothing to save on round trips).
    pub async fn notion_token_and_slots(
        &self,
        user: UserId,
        limit: u32,
        window: Duration,
        count: u32,
    ) -> StoreResult<Option<(StoredNotionToken, Grant)>> {
        let Some(token) = self.notion_token(user).await? else { return Ok(None) };
        Ok(Some((token, self.acquire_rate_limit_slots(user, limit, window, count).await?)))
    }

    pub async fn block_rate_limit(&self, user: UserId, for_at_least: Duration) -> StoreResult<DateTime<Utc>> {
        let until =
            ts(Utc::now() + chrono::Duration::from_std(for_at_least).unwrap_or(chrono::Duration::MAX));
        let until: DateTime<Utc> = sqlx::query_scalar(
            r#"
            insert into notion_rate_limits (user_id, blocked_until) values ($1, $2)
            on conflict (user_id) do update
            set blocked_until = max(coalesce(notion_rate_limits.blocked_until, excluded.blocked_until),
                                    excluded.blocked_until)
            returning blocked_until
            "#,
        )
        .bind(user)
        .bind(until)
        .fetch_one(&self.writer)
        .await?;
        Ok(until)
    }
}
