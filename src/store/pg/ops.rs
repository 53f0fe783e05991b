//! What ops read and do: list and inspect runs, retry and cancel them, queue statistics.

use std::collections::BTreeMap;

use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::{PgStore, abandonable::Abandonable, jobs::enqueue_job, sync};
use crate::{
    ids::{EventId, RunId, UserId},
    store::{
        ActionError, ActionRow, AttemptEnd, QueueStats, RunCursor, RunDetail, RunFilter, RunRow, StepRow,
        StoreResult, jobs::StepJob,
    },
};

const RUN_COLUMNS: &str = "id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger, parent_id, \
     attempt, error_kind, last_error, next_run_at, created_at, updated_at, finished_at";

/// Up to this many rows (as PostgreSQL's statistics count them), `queue_stats` counts a table
/// exactly, in full (a few milliseconds). Above it, `succeeded` is estimated.
pub const QUEUE_STATS_EXACT_ROWS: i64 = 50_000;

/// A table's size as PostgreSQL's statistics know it, without reading the table.
#[derive(Debug, Clone, Copy)]
struct TableSize {
    /// Live rows by the cumulative statistics (`pg_stat_user_tables.n_live_tup`: inserts minus
    /// deletes, reset by VACUUM and ANALYZE to what they counted; seconds behind at most).
    live: i64,
    /// `pg_class.reltuples` as of the last VACUUM or ANALYZE (-1: never).
    reltuples: i64,
}

impl TableSize {
    /// The live-row estimate: the cumulative statistics, unless they were reset (after a
    /// crash, or `pg_stat_reset`), then the last VACUUM / ANALYZE.
    fn estimate(self) -> i64 {
        if self.live > 0 { self.live } else { self.reltuples.max(0) }
    }

    /// Whether the table is small enough to count in full. Either source saying "large" is
    /// believed, so that a reset never makes a large table look small.
    fn count_exactly(self, exact_rows: i64) -> bool {
        self.live.max(self.reltuples) <= exact_rows
    }
}

impl PgStore {
    /// Runs matching `filter`, newest first, after `cursor`; at most `limit`.
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<RunCursor>,
        limit: i64,
    ) -> StoreResult<Vec<RunRow>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("select {RUN_COLUMNS} from workflow_runs where true"));
        push_filter(&mut q, filter);
        if let Some(c) = cursor {
            q.push(" and (created_at, id) < (").push_bind(c.created_at).push(", ").push_bind(c.id).push(")");
        }
        q.push(" order by created_at desc, id desc limit ").push_bind(limit);
        Ok(q.build_query_as::<RunRow>().fetch_all(&self.pool).await?)
    }

    pub async fn run_detail(&self, id: RunId) -> StoreResult<Option<RunDetail>> {
        let Some(run) = sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(format!(
            "select {RUN_COLUMNS} from workflow_runs where id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let steps = sqlx::query_as::<_, StepRow>(
            r#"
            select name, state, attempts, started_at, finished_at, error_kind, error
            from workflow_steps where run_id = $1
            order by started_at nulls last, name
            "#,
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let event_ids: Vec<EventId> = sqlx::query_scalar(
            r#"
            select e.event_id from workflow_run_events e join webhook_events w on w.id = e.event_id
            where e.run_id = $1 order by w.received_at, e.event_id
            "#,
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let actions = sqlx::query_as::<_, ActionRow>(
            r#"select action, actor, at from workflow_run_actions where run_id = $1 order by at, id"#,
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(RunDetail { run, steps, event_ids, actions }))
    }

    /// Resumes a failed or cancelled run at the step it stopped at.
    pub async fn retry_run(&self, id: RunId, actor: &str) -> Result<(), ActionError> {
        let mut tx = self.pool.begin().await?;
        retry_in(&mut tx, id, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels a run that has not finished. A waiting run stops at once; a running step's
    /// worker loses its lease, so its result is discarded.
    pub async fn cancel_run(&self, id: RunId, actor: &str) -> Result<(), ActionError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            r#"
            update workflow_runs
            set state = 'cancelled', dispatch_seq = dispatch_seq + 1, next_run_at = null,
                lease_owner = null, lease_token = null, lease_expires_at = null,
                finished_at = now(), updated_at = now()
            where id = $1 and state in ('pending', 'running', 'waiting')
            returning workflow, user_id, notion_id, current_step
            "#,
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(state_error(&mut tx, id).await) };
        sqlx::query(
            r#"
            update workflow_steps set state = 'cancelled', finished_at = now()
            where run_id = $1 and name = $2 and state in ('pending', 'running', 'waiting')
            "#,
        )
        .bind(id)
        .bind(row.get::<Option<String>, _>("current_step"))
        .execute(&mut *tx)
        .await?;
        // A step in flight will not be recorded (its lease is gone): its attempt ends here.
        super::runs::close_open_attempts(&mut tx, id, AttemptEnd::Cancelled).await?;
        record_action(&mut tx, id, "cancel", actor).await?;
        let (workflow, user, notion_id): (String, Option<UserId>, Option<String>) =
            (row.get("workflow"), row.get("user_id"), row.get("notion_id"));
        if let (true, Some(user), Some(notion_id)) = (workflow == "notion_sync", user, notion_id) {
            sync::wake_next_sync(&mut tx, user, &notion_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The failed runs that match `filter` (its state aside), each with whether a retry would
    /// be refused as superseded (see [`ActionError::Superseded`]): at most `limit`, oldest
    /// first, superseded ones after all the others.
    pub async fn failed_run_ids(&self, filter: &RunFilter, limit: i64) -> StoreResult<Vec<(RunId, bool)>> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "select r.id, r.workflow = 'notion_sync' and exists (
                 select 1 from workflow_runs n
                 where n.workflow = 'notion_sync' and n.user_id = r.user_id
                   and n.notion_id = r.notion_id and n.created_at > r.created_at
             ) as superseded
             from workflow_runs r where r.state = 'failed'",
        );
        push_filter(&mut q, &RunFilter { state: None, ..filter.clone() });
        // Superseded syncs last: they are never retried, so they must not take up the limit
        // of the runs that can be (thousands of them fail together in an outage).
        q.push(" order by superseded, r.created_at, r.id limit ").push_bind(limit);
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Runs by state, step records by name and state, and the age of the oldest pending run.
    ///
    /// Every count is exact except `succeeded` on large tables: counting a million rows takes
    /// longer than this endpoint may (it also serves `/metrics`), and keeping counters in the
    /// engine's transactions would add a write to every state change. So, above
    /// [`QUEUE_STATS_EXACT_ROWS`] rows, the other states (few: in flight, failed, cancelled) are
    /// counted exactly from indexes, and `succeeded` is the table's live rows by PostgreSQL's
    /// statistics minus those exact counts (for steps, the rows of each step name by the
    /// column's statistics from the last ANALYZE, minus that step's exact counts). Those
    /// counts are named in [`QueueStats::estimated`].
    pub async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.queue_stats_with_exact_rows(QUEUE_STATS_EXACT_ROWS).await
    }

    /// [`PgStore::queue_stats`] with another size limit for exact counting (tests pass -1 to
    /// take the estimating path on any table).
    #[doc(hidden)]
    pub async fn queue_stats_with_exact_rows(&self, exact_rows: i64) -> StoreResult<QueueStats> {
        // Each read on a connection of its own, closed if the caller (a health check, a
        // metrics scrape) gives up on it.
        let (runs_size, steps_size) = self.table_sizes().await?;
        let ((runs, runs_estimated), (steps, steps_estimated), oldest_pending_age_seconds) = tokio::try_join!(
            self.count_runs(runs_size, exact_rows),
            self.count_steps(steps_size, exact_rows),
            self.oldest_pending_age(),
        )?;
        let mut estimated = Vec::new();
        if runs_estimated {
            estimated.push("runs.succeeded".to_owned());
        }
        estimated.extend(steps_estimated.iter().map(|name| format!("steps.{name}.succeeded")));
        Ok(QueueStats { runs, steps, oldest_pending_age_seconds, estimated })
    }

    /// Runs by state (every state present, 0 when none); `true` when `succeeded` is estimated.
    async fn count_runs(
        &self,
        size: TableSize,
        exact_rows: i64,
    ) -> StoreResult<(BTreeMap<String, i64>, bool)> {
        let mut conn = Abandonable::acquire(&self.pool).await?;
        let mut runs: BTreeMap<String, i64> =
            ["pending", "running", "waiting", "succeeded", "failed", "cancelled"]
                .map(|s| (s.to_owned(), 0))
                .into();
        if size.count_exactly(exact_rows) {
            let rows = sqlx::query(r#"select state, count(*) as n from workflow_runs group by state"#)
                .fetch_all(&mut *conn)
                .await?;
            for row in rows {
                runs.insert(row.get("state"), row.get("n"));
            }
            conn.release();
            return Ok((runs, false));
        }
        // The states other than succeeded are few (in flight, or kept for ops): counted exactly,
        // from an index led by the state, at any table size.
        let rows = sqlx::query(
            r#"
            select state, count(*) as n from workflow_runs
            where state in ('pending', 'running', 'waiting', 'failed', 'cancelled')
            group by state
            "#,
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut counted = 0;
        for row in rows {
            let n: i64 = row.get("n");
            counted += n;
            runs.insert(row.get("state"), n);
        }
        runs.insert("succeeded".into(), (size.estimate() - counted).max(0));
        conn.release();
        Ok((runs, true))
    }

    /// Step records by name and state; the names whose `succeeded` count is estimated.
    async fn count_steps(
        &self,
        size: TableSize,
        exact_rows: i64,
    ) -> StoreResult<(BTreeMap<String, BTreeMap<String, i64>>, Vec<String>)> {
        let mut conn = Abandonable::acquire(&self.pool).await?;
        // The share of each step name in workflow_steps, from the last ANALYZE (there are only a
        // handful of names, so all of them are in the column's most-common-values list).
        let shares: Vec<(String, f64)> = if size.count_exactly(exact_rows) {
            Vec::new()
        } else {
            sqlx::query_as(
                r#"
                select v.name, v.share::float8
                from pg_stats s
                cross join lateral unnest(s.most_common_vals::text::text[], s.most_common_freqs) as v(name, share)
                where s.schemaname = current_schema() and s.tablename = 'workflow_steps'
                  and s.attname = 'name' and not s.inherited
                "#,
            )
            .fetch_all(&mut *conn)
            .await?
        };
        // Small, or never analyzed (no shares to estimate with): counted in full.
        let sql = if shares.is_empty() {
            r#"select name, state, count(*) as n from workflow_steps group by name, state"#
        } else {
            // Served by workflow_steps_not_succeeded_idx.
            r#"select name, state, count(*) as n from workflow_steps where state <> 'succeeded' group by name, state"#
        };
        let mut steps: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for row in sqlx::query(sql).fetch_all(&mut *conn).await? {
            steps.entry(row.get("name")).or_default().insert(row.get("state"), row.get("n"));
        }
        conn.release();
        let mut estimated = Vec::with_capacity(shares.len());
        for (name, share) in shares {
            let total = (size.estimate() as f64 * share).round() as i64;
            let by_state = steps.entry(name.clone()).or_default();
            let counted: i64 = by_state.values().sum();
            by_state.insert("succeeded".into(), (total - counted).max(0));
            estimated.push(name);
        }
        estimated.sort();
        Ok((steps, estimated))
    }

    /// Seconds since the oldest run that is due but not started became due (`None`: none):
    /// pending, or waiting past its time (a retry, a rate-limit slot or a debounce deadline
    /// that came while the workers were down or behind).
    async fn oldest_pending_age(&self) -> StoreResult<Option<f64>> {
        let mut conn = Abandonable::acquire(&self.pool).await?;
        let age = sqlx::query_scalar(
            r#"
            select extract(epoch from now() - min(coalesce(next_run_at, created_at)))::float8
            from workflow_runs
            where state = 'pending' or (state = 'waiting' and next_run_at <= now())
            "#,
        )
        .fetch_one(&mut *conn)
        .await?;
        conn.release();
        Ok(age)
    }

    /// The sizes of workflow_runs and workflow_steps by PostgreSQL's statistics (no table read).
    async fn table_sizes(&self) -> StoreResult<(TableSize, TableSize)> {
        let mut conn = Abandonable::acquire(&self.pool).await?;
        let (runs_live, runs_reltuples, steps_live, steps_reltuples): (i64, f64, i64, f64) = sqlx::query_as(
            r#"
            select pg_stat_get_live_tuples('workflow_runs'::regclass),
                   (select reltuples::float8 from pg_class where oid = 'workflow_runs'::regclass),
                   pg_stat_get_live_tuples('workflow_steps'::regclass),
                   (select reltuples::float8 from pg_class where oid = 'workflow_steps'::regclass)
            "#,
        )
        .fetch_one(&mut *conn)
        .await?;
        conn.release();
        Ok((
            TableSize { live: runs_live, reltuples: runs_reltuples as i64 },
            TableSize { live: steps_live, reltuples: steps_reltuples as i64 },
        ))
    }
}

fn push_filter(q: &mut QueryBuilder<Postgres>, f: &RunFilter) {
    if let Some(state) = &f.state {
        q.push(" and state = ").push_bind(state.clone());
    }
    if let Some(step) = &f.step {
        q.push(" and current_step = ").push_bind(step.clone());
    }
    if let Some(workflow) = &f.workflow {
        q.push(" and workflow = ").push_bind(workflow.clone());
    }
    if let Some(user) = f.user_id {
        q.push(" and user_id = ").push_bind(user);
    }
    if let Some(notion_id) = &f.notion_id {
        q.push(" and notion_id = ").push_bind(notion_id.clone());
    }
    if let Some(since) = f.since {
        q.push(" and created_at >= ").push_bind(since);
    }
}

/// The first sync of the same content started after `id`, if `id` is a sync that a retry would
/// resume (see [`ActionError::Superseded`]).
async fn superseded_by(conn: &mut PgConnection, id: RunId) -> StoreResult<Option<RunId>> {
    Ok(sqlx::query_scalar(
        r#"
        select n.id from workflow_runs r
        join workflow_runs n on n.workflow = 'notion_sync' and n.user_id = r.user_id
                            and n.notion_id = r.notion_id and n.created_at > r.created_at
        where r.id = $1 and r.workflow = 'notion_sync' and r.state in ('failed', 'cancelled')
        order by n.created_at
        limit 1
        "#,
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

async fn retry_in(conn: &mut PgConnection, id: RunId, actor: &str) -> Result<(), ActionError> {
    if let Some(newer) = superseded_by(conn, id).await? {
        return Err(ActionError::Superseded(newer));
    }
    let row = sqlx::query(
        r#"
        update workflow_runs
        set state = 'pending', retried_from = case when trigger = 'retry' then retried_from else trigger end, trigger = 'retry', attempt = 0, dispatch_seq = dispatch_seq + 1, next_run_at = now(),
            finished_at = null, updated_at = now()
        where id = $1 and state in ('failed', 'cancelled')
        returning dispatch_seq, current_step
        "#,
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Err(state_error(conn, id).await) };
    sqlx::query(
        r#"update workflow_steps set state = 'pending', finished_at = null where run_id = $1 and name = $2"#,
    )
    .bind(id)
    .bind(row.get::<Option<String>, _>("current_step"))
    .execute(&mut *conn)
    .await?;
    enqueue_job(conn, StepJob { run_id: id, seq: row.get("dispatch_seq") }, std::time::Duration::ZERO)
        .await?;
    record_action(conn, id, "retry", actor).await?;
    Ok(())
}

/// Why an action matched no row: the run is missing, or in the wrong state.
async fn state_error(conn: &mut PgConnection, id: RunId) -> ActionError {
    match sqlx::query_scalar::<_, String>(r#"select state from workflow_runs where id = $1"#)
        .bind(id)
        .fetch_optional(conn)
        .await
    {
        Ok(Some(state)) => ActionError::WrongState(state),
        Ok(None) => ActionError::NotFound,
        Err(e) => e.into(),
    }
}

async fn record_action(conn: &mut PgConnection, id: RunId, action: &str, actor: &str) -> StoreResult<()> {
    sqlx::query(r#"insert into workflow_run_actions (run_id, action, actor) values ($1, $2, $3)"#)
        .bind(id)
        .bind(action)
        .bind(actor)
        .execute(conn)
        .await?;
    Ok(())
}
