//! The reconciliation sweep's SQL: which subscriptions are due, when each piece of content was
//! last read by a successful sync, and starting the syncs it finds missing.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{SqliteStore, ago, now, sync};
use crate::{
    ids::{RunId, UserId},
    store::{DebounceWindow, DueSubscription, StoreResult, SweepLock, SyncTarget, SyncTrigger},
};

impl SqliteStore {
    /// One process uses the database, so an in-process lock is the whole story.
    pub async fn try_sweep_lock(&self) -> StoreResult<Option<SweepLock>> {
        Ok(self.sweep.clone().try_lock_owned().ok().map(SweepLock::Sqlite))
    }

    /// See the PostgreSQL twin for what makes a subscription due.
    pub async fn due_subscriptions(
        &self,
        min_age: Duration,
        skip_users: &[UserId],
        limit: i64,
    ) -> StoreResult<Vec<DueSubscription>> {
        let skip: Vec<String> = skip_users.iter().map(|u| u.0.simple().to_string()).collect();
        let rows = sqlx::query(
            r#"
            select s.id, s.user_id, s.notion_id, s.kind, s.data_source_ids,
                   u.notion_token_ciphertext as token_ciphertext
            from subscriptions s
            join users u on u.id = s.user_id
            where u.notion_token_ciphertext is not null
              and (s.reconciled_at is null or s.reconciled_at < $1)
              and lower(hex(s.user_id)) not in (select value from json_each($2))
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
                    and latest.finished_at >= coalesce(u.notion_connected_at, ''))
            order by s.reconciled_at is not null, s.reconciled_at, s.id
            limit $3
            "#,
        )
        .bind(ago(min_age))
        .bind(serde_json::to_string(&skip).expect("strings serialise"))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let sources: String = r.get("data_source_ids");
                Ok(DueSubscription {
                    id: r.get("id"),
                    user_id: r.get("user_id"),
                    notion_id: r.get("notion_id"),
                    kind: r.get("kind"),
                    data_source_ids: serde_json::from_str(&sources)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    token_ciphertext: r.get("token_ciphertext"),
                })
            })
            .collect()
    }

    pub async fn last_read_at(
        &self,
        user: UserId,
        notion_ids: &[String],
    ) -> StoreResult<HashMap<String, DateTime<Utc>>> {
        let rows = sqlx::query(
            r#"
            select r.notion_id,
                   max(case when r.state = 'failed' then max(r.created_at, coalesce(r.debounce_until, r.created_at))
                            when r.state <> 'succeeded' and r.current_step in ('debounce', 'fetch') then $3
                            else max(r.created_at, coalesce(r.debounce_until, r.created_at)) end) as read_at
            from workflow_runs r
            join users u on u.id = r.user_id
            where r.workflow = 'notion_sync' and r.user_id = $1
              and r.notion_id in (select value from json_each($2))
              and (
                  (r.state in ('pending', 'running', 'waiting') and r.current_step in ('debounce', 'fetch'))
                  or (r.state in ('succeeded', 'pending', 'running', 'waiting') and exists (
                      select 1 from workflow_steps s
                      where s.run_id = r.id and s.name = 'fetch' and s.state = 'succeeded'))
                  or (r.state = 'failed'
                      and r.finished_at >= coalesce(u.notion_connected_at, '')
                      and not exists (
                          select 1 from workflow_runs n
                          where n.workflow = 'notion_sync' and n.user_id = r.user_id
                            and n.notion_id = r.notion_id and n.created_at > r.created_at)))
            group by r.notion_id
            "#,
        )
        .bind(user)
        .bind(serde_json::to_string(notion_ids).expect("strings serialise"))
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let at: String = r.get("read_at");
                let at = DateTime::parse_from_rfc3339(&at).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok((r.get("notion_id"), at.with_timezone(&Utc)))
            })
            .collect()
    }

    pub async fn finish_reconcile(
        &self,
        subscription: Uuid,
        targets: &[SyncTarget],
        window: DebounceWindow,
    ) -> StoreResult<Vec<RunId>> {
        let mut tx = self.begin_write().await?;
        // First: a subscription deleted while the sweep checked it starts nothing.
        let kept = sqlx::query(r#"update subscriptions set reconciled_at = $2 where id = $1"#)
            .bind(subscription)
            .bind(now())
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
            self.wake();
        }
        Ok(runs)
    }
}
