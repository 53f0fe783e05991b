//! Pruning, so the database does not grow forever: apalis's finished job rows and, after the
//! retention period, finished runs with their steps and attempts, and old webhook events.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::{SqliteStore, ago};
use crate::store::{Pruned, StoreResult};

/// Rows removed per statement, so pruning never holds the write lock for long.
const BATCH: i64 = 1_000;

impl SqliteStore {
    pub async fn prune_finished_jobs(&self, grace: Duration) -> StoreResult<u64> {
        let cutoff = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(grace);
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                r#"
                delete from Jobs
                where rowid in (
                    select rowid from Jobs
                    where status in ('Done', 'Failed', 'Killed') and done_at < $1
                    limit $2
                )
                "#,
            )
            .bind(cutoff.as_secs() as i64)
            .bind(BATCH)
            .execute(&self.writer)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes apalis's rows of workers not seen for `older_than` that no job row refers to.
    pub async fn prune_gone_workers(&self, older_than: Duration) -> StoreResult<u64> {
        let cutoff =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(older_than);
        Ok(sqlx::query(
            r#"
            delete from Workers
            where last_seen < $1 and not exists (select 1 from Jobs j where j.lock_by = Workers.id)
            "#,
        )
        .bind(cutoff.as_secs() as i64)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub async fn prune_history(&self, retention: Duration) -> StoreResult<Pruned> {
        let cutoff = ago(retention);
        let mut pruned = Pruned::default();
        // Runs are looked at oldest first, a batch at a time, each batch after the last run the
        // one before it looked at (see PostgreSQL's twin): the syncs kept for ever are looked
        // at once a sweep, not again by every batch, each holding the write lock.
        let mut after: (String, Uuid) = (String::new(), Uuid::nil());
        loop {
            let end: Option<(String, Uuid)> = sqlx::query_as(
                r#"
                select created_at, id from workflow_runs
                -- `+state`: walked in order on the (created_at, id) index, not gathered from the
                -- state index and sorted (every remaining run past the retention, each batch).
                where +state in ('succeeded', 'failed', 'cancelled') and finished_at < $1 and created_at < $1
                  and (created_at, id) > ($2, $3)
                order by created_at, id
                limit 1 offset $4
                "#,
            )
            .bind(&cutoff)
            .bind(&after.0)
            .bind(after.1)
            .bind(BATCH - 1)
            .fetch_optional(&self.pool)
            .await?;
            let deleted = sqlx::query(
                r#"
                delete from workflow_runs
                where id in (
                    select id from workflow_runs r
                    where state in ('succeeded', 'failed', 'cancelled') and finished_at < $1
                    -- The batch: `created_at <= $4` bounds the index scan at its end (SQLite bounds
                    -- a range by one row value only); before the cutoff, as a run finishes after
                    -- it starts.
                    and (created_at, id) > ($2, $3)
                    and created_at <= $4
                    and (created_at, id) <= ($4, $5)
                    -- The latest sync of each piece of content that read it is kept, however old:
                    -- it is reconciliation's record of when the content was last read
                    -- (`last_read_at`); without it, content nobody edited would be synced whole
                    -- again every retention period.
                    and not (r.workflow = 'notion_sync' and r.state = 'succeeded'
                        and exists (
                            select 1 from workflow_steps s
                            where s.run_id = r.id and s.name = 'fetch' and s.state = 'succeeded')
                        and not exists (
                            select 1 from workflow_runs n
                            join workflow_steps ns on ns.run_id = n.id and ns.name = 'fetch' and ns.state = 'succeeded'
                            where n.workflow = 'notion_sync' and n.user_id = r.user_id
                              and n.notion_id = r.notion_id and n.state = 'succeeded'
                              and n.created_at > r.created_at))
                )
                "#,
            )
            .bind(&cutoff)
            .bind(&after.0)
            .bind(after.1)
            // The last batch runs to the cutoff, which no run it prunes reaches.
            .bind(end.as_ref().map_or(&cutoff, |(at, _)| at))
            .bind(end.as_ref().map_or(Uuid::max(), |(_, id)| *id))
            .execute(&self.writer)
            .await?
            .rows_affected();
            pruned.runs += deleted;
            match end {
                Some(end) => after = end,
                None => break,
            }
        }
        // What is left of the finished syncs past the retention is the latest one of each
        // content that read it (kept above): it keeps its record, not the content. Its steps'
        // outputs (the page's text) go, and its links to events, so those events go below.
        let mut tx = self.begin_write().await?;
        for strip in [
            "update workflow_steps set output = null where output is not null and run_id in (
                 select id from workflow_runs
                 where workflow = 'notion_sync' and state = 'succeeded' and finished_at < $1
                   and created_at < $1)",
            "delete from workflow_run_events where run_id in (
                 select id from workflow_runs
                 where workflow = 'notion_sync' and state = 'succeeded' and finished_at < $1
                   and created_at < $1)",
        ] {
            sqlx::query(strip).bind(&cutoff).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        loop {
            let deleted = sqlx::query(
                r#"
                delete from webhook_events
                where id in (
                    select e.id from webhook_events e
                    where e.received_at < $1
                      -- Kept while any run that stands for it is kept (a failed event run
                      -- can still be retried, and its step reads the event); the links go
                      -- with their runs, which are pruned first.
                      and not exists (select 1 from workflow_run_events l where l.event_id = e.id)
                    limit $2
                )
                "#,
            )
            .bind(&cutoff)
            .bind(BATCH)
            .execute(&self.writer)
            .await?
            .rows_affected();
            pruned.events += deleted;
            if deleted < BATCH as u64 {
                break;
            }
        }
        pruned.verification_tokens = sqlx::query(
            r#"
            delete from webhook_verification_tokens
            where last_received_at < $1
              and id <> (select min(id) from webhook_verification_tokens)
              and id <> (select id from webhook_verification_tokens order by last_received_at desc, id desc limit 1)
            "#,
        )
        .bind(&cutoff)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(pruned)
    }
}
