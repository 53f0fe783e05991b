//! What ops read and do: list and inspect runs, retry and cancel them, queue statistics.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{SqliteStore, jobs::enqueue_job, now, sync, ts};
use crate::{
    ids::{EventId, RunId, UserId},
    store::{
        ActionError, ActionRow, AttemptEnd, QueueStats, RunCursor, RunDetail, RunFilter, RunRow, StepRow,
        StoreError, StoreResult, jobs::StepJob,
    },
};

const RUN_COLUMNS: &str = "id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger, parent_id, \
     attempt, error_kind, last_error, next_run_at, created_at, updated_at, finished_at";

/// A retry that would put a second sync of the same content into debounce breaks the
/// one-debouncing-sync index; everything else is a store error.
fn action_error(e: sqlx::Error) -> ActionError {
    match &e {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            ActionError::SyncAlreadyDebouncing
        }
        _ => ActionError::Store(StoreError::from(e)),
    }
}

impl SqliteStore {
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<RunCursor>,
        limit: i64,
    ) -> StoreResult<Vec<RunRow>> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("select {RUN_COLUMNS} from workflow_runs where 1"));
        push_filter(&mut q, filter);
        if let Some(c) = cursor {
            let at = ts(c.created_at);
            q.push(" and (created_at < ").push_bind(at.clone());
            q.push(" or (created_at = ").push_bind(at).push(" and id < ").push_bind(c.id).push("))");
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
            order by started_at is null, started_at, name
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

    pub async fn retry_run(&self, id: RunId, actor: &str) -> Result<(), ActionError> {
        let mut tx = self.begin_write().await?;
        retry_in(&mut tx, id, actor).await?;
        tx.commit().await.map_err(action_error)?;
        self.wake();
        Ok(())
    }

    pub async fn cancel_run(&self, id: RunId, actor: &str) -> Result<(), ActionError> {
        let now = now();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            r#"
            update workflow_runs
            set state = 'cancelled', dispatch_seq = dispatch_seq + 1, next_run_at = null,
                lease_owner = null, lease_token = null, lease_expires_at = null,
                finished_at = $2, updated_at = $2
            where id = $1 and state in ('pending', 'running', 'waiting')
            returning workflow, user_id, notion_id, current_step
            "#,
        )
        .bind(id)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(action_error)?;
        let Some(row) = row else { return Err(state_error(&mut tx, id).await) };
        sqlx::query(
            r#"
            update workflow_steps set state = 'cancelled', finished_at = $3
            where run_id = $1 and name = $2 and state in ('pending', 'running', 'waiting')
            "#,
        )
        .bind(id)
        .bind(row.get::<Option<String>, _>("current_step"))
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(action_error)?;
        // A step in flight will not be recorded (its lease is gone): its attempt ends here.
        super::runs::close_open_attempts(&mut tx, id, AttemptEnd::Cancelled, &now).await?;
        record_action(&mut tx, id, "cancel", actor).await?;
        let (workflow, user, notion_id): (String, Option<UserId>, Option<String>) =
            (row.get("workflow"), row.get("user_id"), row.get("notion_id"));
        if let (true, Some(user), Some(notion_id)) = (workflow == "notion_sync", user, notion_id) {
            sync::wake_next_sync(&mut tx, user, &notion_id).await?;
        }
        tx.commit().await.map_err(action_error)?;
        self.wake();
        Ok(())
    }

    /// The failed runs that match `filter` (its state aside), each with whether a retry would
    /// be refused as superseded (see [`ActionError::Superseded`]): at most `limit`, oldest
    /// first, superseded ones after all the others.
    pub async fn failed_run_ids(&self, filter: &RunFilter, limit: i64) -> StoreResult<Vec<(RunId, bool)>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
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

    pub async fn queue_stats(&self) -> StoreResult<QueueStats> {
        let mut stats = QueueStats::default();
        for state in ["pending", "running", "waiting", "succeeded", "failed", "cancelled"] {
            stats.runs.insert(state.to_owned(), 0);
        }
        let runs = sqlx::query(r#"select state, count(*) as n from workflow_runs group by state"#)
            .fetch_all(&self.pool)
            .await?;
        for row in runs {
            stats.runs.insert(row.get("state"), row.get("n"));
        }
        let steps =
            sqlx::query(r#"select name, state, count(*) as n from workflow_steps group by name, state"#)
                .fetch_all(&self.pool)
                .await?;
        for row in steps {
            stats.steps.entry(row.get("name")).or_default().insert(row.get("state"), row.get("n"));
        }
        // Due but not started: pending, or waiting past its time (see the PostgreSQL twin).
        let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
            r#"select min(coalesce(next_run_at, created_at)) from workflow_runs
               where state = 'pending' or (state = 'waiting' and next_run_at <= $1)"#,
        )
        .bind(ts(Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        stats.oldest_pending_age_seconds =
            oldest.map(|at| (Utc::now() - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
        Ok(stats)
    }
}

fn push_filter(q: &mut QueryBuilder<Sqlite>, f: &RunFilter) {
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
        q.push(" and created_at >= ").push_bind(ts(since));
    }
}

/// The first sync of the same content started after `id`, if `id` is a sync that a retry would
/// resume (see [`ActionError::Superseded`]).
async fn superseded_by(conn: &mut SqliteConnection, id: RunId) -> StoreResult<Option<RunId>> {
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

async fn retry_in(conn: &mut SqliteConnection, id: RunId, actor: &str) -> Result<(), ActionError> {
    if let Some(newer) = superseded_by(conn, id).await? {
        return Err(ActionError::Superseded(newer));
    }
    let now = now();
    let row = sqlx::query(
        r#"
        update workflow_runs
        set state = 'pending', retried_from = case when trigger = 'retry' then retried_from else trigger end, trigger = 'retry', attempt = 0, dispatch_seq = dispatch_seq + 1, next_run_at = $2,
            finished_at = null, updated_at = $2
        where id = $1 and state in ('failed', 'cancelled')
        returning dispatch_seq, current_step
        "#,
    )
    .bind(id)
    .bind(&now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(action_error)?;
    let Some(row) = row else { return Err(state_error(conn, id).await) };
    sqlx::query(
        r#"update workflow_steps set state = 'pending', finished_at = null where run_id = $1 and name = $2"#,
    )
    .bind(id)
    .bind(row.get::<Option<String>, _>("current_step"))
    .execute(&mut *conn)
    .await
    .map_err(action_error)?;
    enqueue_job(conn, StepJob { run_id: id, seq: row.get("dispatch_seq") }, std::time::Duration::ZERO)
        .await?;
    record_action(conn, id, "retry", actor).await?;
    Ok(())
}

async fn state_error(conn: &mut SqliteConnection, id: RunId) -> ActionError {
    match sqlx::query_scalar::<_, String>(r#"select state from workflow_runs where id = $1"#)
        .bind(id)
        .fetch_optional(conn)
        .await
    {
        Ok(Some(state)) => ActionError::WrongState(state),
        Ok(None) => ActionError::NotFound,
        Err(e) => action_error(e),
    }
}

async fn record_action(conn: &mut SqliteConnection, id: RunId, action: &str, actor: &str) -> StoreResult<()> {
    sqlx::query(r#"insert into workflow_run_actions (run_id, action, actor, at) values ($1, $2, $3, $4)"#)
        .bind(id)
        .bind(action)
        .bind(actor)
        .bind(now())
        .execute(conn)
        .await?;
    Ok(())
}
