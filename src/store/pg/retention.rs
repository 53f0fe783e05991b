//! Pruning, so the database does not grow forever: apalis's finished job rows (our tables hold
//! the history; their rows only slow the queue down) and, after the retention period, finished
//! runs with their steps and attempts, and old webhook events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgStore;
use crate::store::{Pruned, StoreResult};

/// Rows removed per statement, so pruning never holds long locks.
const BATCH: i64 = 5_000;

impl PgStore {
    /// Deletes apalis job rows that finished more than `grace` ago.
    pub async fn prune_finished_jobs(&self, grace: Duration) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                r#"
                delete from apalis.jobs
                where id in (
                    select id from apalis.jobs
                    where status in ('Done', 'Failed', 'Killed') and done_at < now() - make_interval(secs => $1)
                    limit $2
                    for update skip locked
                )
                "#,
            )
            .bind(grace.as_secs_f64())
            .bind(BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes apalis's rows of workers not seen for `older_than` that no job row refers to
    /// (a job's `lock_by` references its worker).
    pub async fn prune_gone_workers(&self, older_than: Duration) -> StoreResult<u64> {
        Ok(sqlx::query(
            r#"
            delete from apalis.workers w
            where w.last_seen < now() - make_interval(secs => $1)
              and not exists (select 1 from apalis.jobs j where j.lock_by = w.id)
            "#,
        )
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Deletes finished runs (with their steps, attempts and links) and webhook events older
    /// than `retention`; an event only once no run that stands for it is left.
    pub async fn prune_history(&self, retention: Duration) -> StoreResult<Pruned> {
        let mut pruned = Pruned::default();
        // Runs are looked at oldest first, a batch of them at a time, each batch after the last
        // run the batch before it looked at: the syncs kept for ever (below) lie among the
        // oldest, and are looked at once a sweep, not again by every batch that follows.
        let mut after: (DateTime<Utc>, Uuid) = (DateTime::UNIX_EPOCH, Uuid::nil());
        loop {
            let end: Option<(DateTime<Utc>, Uuid)> = sqlx::query_as(
                r#"
                select created_at, id from workflow_runs
                where state in ('succeeded', 'failed', 'cancelled')
                  and finished_at < now() - make_interval(secs => $1)
                  and created_at < now() - make_interval(secs => $1)
                  and (created_at, id) > ($2, $3)
                order by created_at, id
                offset $4 limit 1
                "#,
            )
            .bind(retention.as_secs_f64())
            .bind(after.0)
            .bind(after.1)
            .bind(BATCH - 1)
            .fetch_optional(&self.pool)
            .await?;
            // Steps and attempts have no foreign key to their run (it cost every transition
            // two checks): they go with it here.
            let deleted: i64 = sqlx::query_scalar(
                r#"
                with gone as (
                    delete from workflow_runs
                    where id in (
                        select id from workflow_runs r
                        where state in ('succeeded', 'failed', 'cancelled')
                          and finished_at < now() - make_interval(secs => $1)
                          -- The batch (before the cutoff, as a run finishes after it starts);
                          -- `created_at <= $4` bounds the index scan at its end.
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
                        for update skip locked
                    )
                    returning id
                ), steps as (
                    delete from workflow_steps s using gone where s.run_id = gone.id
                ), attempts as (
                    delete from workflow_step_attempts a using gone where a.run_id = gone.id
                )
                select count(*) from gone
                "#,
            )
            .bind(retention.as_secs_f64())
            .bind(after.0)
            .bind(after.1)
            // The last batch runs to the end: no run past the retention was created now.
            .bind(end.map_or_else(Utc::now, |(at, _)| at))
            .bind(end.map_or(Uuid::max(), |(_, id)| id))
            .fetch_one(&self.pool)
            .await?;
            pruned.runs += deleted as u64;
            match end {
                Some(end) => after = end,
                None => break,
            }
        }
        // What is left of the finished syncs past the retention is the latest one of each
        // content that read it (kept above): it keeps its record, not the content. Its steps'
        // outputs (the page's text) go, and its links to events, so those events go below.
        sqlx::query(
            r#"
            with kept as (
                select id from workflow_runs
                where workflow = 'notion_sync' and state = 'succeeded'
                  and finished_at < now() - make_interval(secs => $1)
                  and created_at < now() - make_interval(secs => $1)
            ), outputs as (
                update workflow_steps s set output = null
                from kept where s.run_id = kept.id and s.output is not null
            )
            delete from workflow_run_events l using kept where l.run_id = kept.id
            "#,
        )
        .bind(retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        loop {
            let deleted = sqlx::query(
                r#"
                delete from webhook_events
                where id in (
                    select e.id from webhook_events e
                    where e.received_at < now() - make_interval(secs => $1)
                      -- Kept while any run that stands for it is kept (a failed event run
                      -- can still be retried, and its step reads the event); the links go
                      -- with their runs, which are pruned first.
                      and not exists (select 1 from workflow_run_events l where l.event_id = e.id)
                    limit $2
                    for update skip locked
                )
                "#,
            )
            .bind(retention.as_secs_f64())
            .bind(BATCH)
            .execute(&self.pool)
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
            where last_received_at < now() - make_interval(secs => $1)
              and id <> (select min(id) from webhook_verification_tokens)
              and id <> (select id from webhook_verification_tokens order by last_received_at desc, id desc limit 1)
            "#,
        )
        .bind(retention.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(pruned)
    }
}
