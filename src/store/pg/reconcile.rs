//! The reconciliation sweep's SQL: one sweeper at a time, which subscriptions are due, when
//! each piece of content was last read by a successful sync, and starting the syncs it finds
//! missing.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, pool::PoolConnection};
use uuid::Uuid;

use super::{PgStore, sync};
use crate::{
    ids::{RunId, UserId},
    store::{DebounceWindow, DueSubscription, StoreResult, SweepLock, SyncTarget, SyncTrigger},
};

/// The advisory lock key the sweeper holds while it sweeps ("cogn" "reco").
const SWEEP_LOCK_KEY: i64 = 0x636f_676e_7265_636f;

/// PostgreSQL's sweep lock: no other process sweeps meanwhile. A session-level advisory
/// lock on a connection that is closed rather than returned to the pool if the sweep is
/// dropped midway (shutdown), so the lock can never outlive the sweep.
pub struct PgSweepLock {
    conn: PoolConnection<Postgres>,
}

impl PgSweepLock {
    pub async fn release(mut self) -> StoreResult<()> {
        sqlx::query(r#"select pg_advisory_unlock($1)"#).bind(SWEEP_LOCK_KEY).execute(&mut *self.conn).await?;
        Ok(())
    }
}

impl PgStore {
    /// Takes the sweep lock if no other process holds it.
    pub async fn try_sweep_lock(&self) -> StoreResult<Option<SweepLock>> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        let locked: bool = sqlx::query_scalar(r#"select pg_try_advisory_lock($1)"#)
            .bind(SWEEP_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        Ok(locked.then_some(SweepLock::Postgres(PgSweepLock { conn })))
    }

    /// Subscriptions to compare with Notion, longest unchecked first: the user has a token,
    /// the subscription was not checked in the last `min_age`, no sync of it is under way (that
    /// sync reads the latest state anyway), and its latest sync did not fail since the user's
    /// token was last set (ops retry failed runs; reconnecting Notion makes it due again).
    pub async fn due_subscriptions(
        &self,
        min_age: Duration,
        skip_users: &[UserId],
        limit: i64,
    ) -> StoreResult<Vec<DueSubscription>> {
        let skip: Vec<Uuid> = skip_users.iter().map(|u| u.0).collect();
        Ok(sqlx::query_as::<_, DueSubscription>(
            r#"
            select s.id, s.user_id, s.notion_id, s.kind, s.data_source_ids,
                   u.notion_token_ciphertext as token_ciphertext
            from subscriptions s
            join users u on u.id = s.user_id
            where u.notion_token_ciphertext is not null
              and (s.reconciled_at is null or s.reconciled_at < now() - make_interval(secs => $1))
              and s.user_id <> all($2::uuid[])
              and not exists (
                  select 1 from workflow_runs r
                  where r.workflow = 'notion_sync' and r.user_id = s.user_id and r.notion_id = s.notion_id
                    and r.state in ('pending', 'running', 'waiting'))
              and not exists (
                  select 1 from (
                      select r.state, r.finished_at from workflow_runs r
                      where r.workflow = 'notion_sync' and r.user_id = s.user_id and r.notion_id = s.notion_id
                      order by r.created_at desc
                      limit 1) latest
                  where latest.state = 'failed'
                    and latest.finished_at >= coalesce(u.notion_connected_at, '-infinity'))
            order by s.reconciled_at nulls first, s.id
            limit $3
            "#,
        )
        .bind(min_age.as_secs_f64())
        .bind(&skip)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// For each of `notion_ids` that a successful sync of `user`'s has read: when the latest
    /// such sync started reading, at the earliest. A sync reads after its debounce deadline
    /// (and after it was created), so anything Notion shows as edited well before this time
    /// was in what it read. Only syncs whose `fetch` step succeeded count: a run merged into
    /// another during debounce read nothing. A sync still in debounce or fetching counts as
    /// reading now: it will read everything edited before now. A sync that failed since the
    /// user's token was set, and is the content's latest, counts as having read it (ops retry
    /// it, as [`Self::due_subscriptions`] leaves such a subscription alone): a later edit makes
    /// it due again, but a database row whose own sync fails for good is not synced again, and
    /// failed again, at every sweep.
    pub async fn last_read_at(
        &self,
        user: UserId,
        notion_ids: &[String],
    ) -> StoreResult<HashMap<String, DateTime<Utc>>> {
        let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            r#"
            select r.notion_id,
                   max(case when r.state = 'failed' then greatest(r.created_at, coalesce(r.debounce_until, r.created_at))
                            when r.state <> 'succeeded' and r.current_step in ('debounce', 'fetch') then now()
                            else greatest(r.created_at, coalesce(r.debounce_until, r.created_at)) end)
            from workflow_runs r
            join users u on u.id = r.user_id
            where r.workflow = 'notion_sync' and r.user_id = $1 and r.notion_id = any($2)
              and (
                  (r.state in ('pending', 'running', 'waiting') and r.current_step in ('debounce', 'fetch'))
                  or (r.state in ('succeeded', 'pending', 'running', 'waiting') and exists (
                      select 1 from workflow_steps s
                      where s.run_id = r.id and s.name = 'fetch' and s.state = 'succeeded'))
                  or (r.state = 'failed'
                      and r.finished_at >= coalesce(u.notion_connected_at, '-infinity')
                      and not exists (
                          select 1 from workflow_runs n
                          where n.workflow = 'notion_sync' and n.user_id = r.user_id
                            and n.notion_id = r.notion_id and n.created_at > r.created_at)))
            group by r.notion_id
            "#,
        )
        .bind(user)
        .bind(notion_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records that the subscription was checked and starts (or joins, debounced like a
    /// webhook) a sync for each of `targets`, in one transaction.
    pub async fn finish_reconcile(
        &self,
        subscription: Uuid,
        targets: &[SyncTarget],
        window: DebounceWindow,
    ) -> StoreResult<Vec<RunId>> {
        let mut tx = self.pool.begin().await?;
        // First, and locking the row: a subscription deleted while the sweep checked it (the
        // user unsubscribed meanwhile) starts nothing.
        let kept = sqlx::query(r#"update subscriptions set reconciled_at = now() where id = $1"#)
            .bind(subscription)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if kept == 0 {
            return Ok(Vec::new());
        }
        let mut runs = Vec::with_capacity(targets.len());
        for target in targets {
            runs.push(sync::start_or_join_sync(&mut tx, target, SyncTrigger::Reconcile, window).await?);
        }
        tx.commit().await?;
        if !runs.is_empty() {
            self.jobs_committed();
        }
        Ok(runs)
    }
}
