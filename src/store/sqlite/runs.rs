//! Workflow runs and steps: claiming a step attempt under a lease, heartbeats, and the fenced
//! transitions that record a step's outcome and enqueue what comes next in one transaction.

use std::time::Duration;

use chrono::Utc;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{
    SqliteStore, from_now,
    jobs::{enqueue_at, enqueue_job},
    now, ts,
};
use crate::{
    ids::RunId,
    store::{AttemptEnd, ClaimedStep, Fenced, StoreResult, Transition, jobs::StepJob},
};

impl SqliteStore {
    /// Claims the current step of the job's run, if the job is still current (its `seq`
    /// matches) and the run is runnable: pending or waiting, or running under a lease that
    /// expired (its worker died).
    pub async fn claim_step(
        &self,
        job: StepJob,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<Option<ClaimedStep>> {
        let mut tx = self.begin_write().await?;
        let claim = claim_step(&mut tx, job, owner, lease).await?;
        if claim.is_some() {
            tx.commit().await?;
        }
        Ok(claim)
    }

    /// Claims like [`SqliteStore::claim_step`] inside a write transaction that stays open, so
    /// a step that only touches the database can run and be recorded in it.
    pub async fn claim_and_begin(
        &self,
        job: StepJob,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<Option<(ClaimedStep, sqlx::Transaction<'static, sqlx::Sqlite>)>> {
        let mut tx = self.begin_write().await?;
        Ok(claim_step(&mut tx, job, owner, lease).await?.map(|claim| (claim, tx)))
    }

    pub async fn step_output(&self, run_id: RunId, step: &str) -> StoreResult<Option<serde_json::Value>> {
        let mut conn = self.pool.acquire().await?;
        step_output(&mut conn, run_id, step).await
    }

    /// On the readers' pool, not in the writer's queue: a burst of writes (webhook intake, long
    /// steps' transactions) can keep that queue longer than a lease, and a step whose heartbeats
    /// wait in it would be taken over while its worker is alive. Here the update waits for
    /// SQLite's lock itself (up to its busy timeout), between those writes.
    pub async fn heartbeat(&self, claim: &ClaimedStep, lease: Duration) -> StoreResult<bool> {
        let updated = sqlx::query(
            r#"
            update workflow_runs set lease_expires_at = $3
            where id = $1 and lease_token = $2 and state = 'running'
            "#,
        )
        .bind(claim.run_id)
        .bind(claim.lease_token)
        .bind(from_now(lease))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Opens a write transaction, if the claim still holds the lease. SQLite has one writer
    /// at a time, so while it is open nobody else can take the step over.
    pub async fn begin_fenced(
        &self,
        claim: &ClaimedStep,
    ) -> StoreResult<Option<sqlx::Transaction<'static, sqlx::Sqlite>>> {
        let mut tx = self.begin_write().await?;
        let held: Option<i32> = sqlx::query_scalar(
            r#"select 1 from workflow_runs where id = $1 and lease_token = $2 and state = 'running'"#,
        )
        .bind(claim.run_id)
        .bind(claim.lease_token)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(held.map(|_| tx))
    }

    /// Steps whose worker stopped heartbeating: runnable again with a fresh job.
    pub async fn redispatch_expired_leases(&self, limit: i64) -> StoreResult<Vec<RunId>> {
        let now = now();
        let mut tx = self.begin_write().await?;
        // A sync whose process died in its debounce step cannot go back to waiting when another
        // sync of the same content started collecting events meanwhile (one debouncing sync per
        // key): its events move to that sync and it ends, as the debounce step would have done.
        let merged: Vec<(RunId, RunId)> = sqlx::query_as(
            r#"
            select r.id,
                   (select o.id from workflow_runs o
                    where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
                      and o.id <> r.id and o.current_step = 'debounce' and o.state in ('pending', 'waiting')
                    limit 1) as other
            from workflow_runs r
            where r.state = 'running' and r.lease_expires_at < $1
              and r.workflow = 'notion_sync' and r.current_step = 'debounce'
              and other is not null
            "#,
        )
        .bind(&now)
        .fetch_all(&mut *tx)
        .await?;
        for (run, other) in merged {
            sqlx::query(
                r#"
                insert into workflow_run_events (run_id, event_id)
                select $2, event_id from workflow_run_events where run_id = $1
                on conflict do nothing
                "#,
            )
            .bind(run)
            .bind(other)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                r#"
                update workflow_steps set state = 'succeeded', output = json_object('merged_into', $2), finished_at = $3
                where run_id = $1 and name = 'debounce'
                "#,
            )
            .bind(run)
            .bind(other.to_string())
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                r#"
                update workflow_runs
                set state = 'succeeded', dispatch_seq = dispatch_seq + 1, lease_owner = null, lease_token = null,
                    lease_expires_at = null, next_run_at = null, finished_at = $2, updated_at = $2
                where id = $1
                "#,
            )
            .bind(run)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            close_open_attempts(&mut tx, run, AttemptEnd::Abandoned, &now).await?;
        }
        let rows = sqlx::query(
            r#"
            update workflow_runs
            set state = 'pending',
                dispatch_seq = dispatch_seq + 1,
                lease_owner = null,
                lease_token = null,
                lease_expires_at = null,
                next_run_at = $2,
                updated_at = $2
            where id in (
                select id from workflow_runs
                where state = 'running' and lease_expires_at < $2
                order by lease_expires_at
                limit $1
            )
            returning id, dispatch_seq
            "#,
        )
        .bind(limit)
        .bind(&now)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let run_id: RunId = row.get("id");
            close_open_attempts(&mut tx, run_id, AttemptEnd::Abandoned, &now).await?;
            enqueue_job(&mut tx, StepJob { run_id, seq: row.get("dispatch_seq") }, Duration::ZERO).await?;
            ids.push(run_id);
        }
        tx.commit().await?;
        if !ids.is_empty() {
            self.wake();
        }
        Ok(ids)
    }
}

/// Claims the current step of the job's run inside the write transaction of `conn` (see
/// [`SqliteStore::claim_step`]).
pub async fn claim_step(
    conn: &mut SqliteConnection,
    job: StepJob,
    owner: &str,
    lease: Duration,
) -> StoreResult<Option<ClaimedStep>> {
    let token = Uuid::new_v4();
    let now = now();
    let row = sqlx::query(
        r#"
        update workflow_runs
        set state = 'running',
            lease_owner = $3,
            lease_token = $4,
            lease_expires_at = $5,
            attempt = attempt + 1,
            next_run_at = null,
            updated_at = $6
        where id = $1
          and dispatch_seq = $2
          and (state in ('pending', 'waiting') or (state = 'running' and lease_expires_at < $6))
        returning id, workflow, current_step, attempt, user_id, notion_id, notion_kind, event_id
        "#,
    )
    .bind(job.run_id)
    .bind(job.seq)
    .bind(owner)
    .bind(token)
    .bind(from_now(lease))
    .bind(&now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let claim = ClaimedStep {
        run_id: row.get("id"),
        workflow: row.get("workflow"),
        step: row.get::<Option<String>, _>("current_step").unwrap_or_default(),
        attempt: row.get("attempt"),
        lease_token: token,
        user_id: row.get("user_id"),
        notion_id: row.get("notion_id"),
        notion_kind: row.get("notion_kind"),
        event_id: row.get("event_id"),
        event: None,
        known_outputs: Default::default(),
        unwritten: None,
    };
    // Any attempt of the run still open was abandoned (a takeover): this claim fences it off.
    close_open_attempts(conn, claim.run_id, AttemptEnd::Abandoned, &now).await?;
    start_attempt(conn, claim.run_id, &claim.step, token, owner, &now).await?;
    Ok(Some(claim))
}

/// A step attempt begins: the step's record is running (one more attempt), and the attempt's
/// history row names its lease token and worker.
async fn start_attempt(
    conn: &mut SqliteConnection,
    run_id: RunId,
    step: &str,
    token: Uuid,
    worker: &str,
    now: &str,
) -> StoreResult<()> {
    sqlx::query(
        r#"
        insert into workflow_steps (run_id, name, state, attempts, started_at)
        values ($1, $2, 'running', 1, $3)
        on conflict (run_id, name) do update
        set state = 'running', attempts = workflow_steps.attempts + 1, started_at = excluded.started_at,
            finished_at = null
        "#,
    )
    .bind(run_id)
    .bind(step)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"
        insert into workflow_step_attempts (lease_token, run_id, step, worker, started_at)
        values ($1, $2, $3, $4, $5)
        "#,
    )
    .bind(token)
    .bind(run_id)
    .bind(step)
    .bind(worker)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends every attempt of the run that is still open, as `end` says: attempts that can no
/// longer be recorded, because the run's lease moved on (a takeover) or the run ended (cancel).
pub async fn close_open_attempts(
    conn: &mut SqliteConnection,
    run_id: RunId,
    end: AttemptEnd,
    now: &str,
) -> StoreResult<()> {
    sqlx::query(
        r#"
        update workflow_step_attempts set finished_at = $5, outcome = $2, error_kind = $3, error = $4
        where run_id = $1 and outcome is null
        "#,
    )
    .bind(run_id)
    .bind(end.outcome())
    .bind(end.error_kind())
    .bind(end.error())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies a transition inside a fenced transaction (see [`SqliteStore::begin_fenced`]).
pub async fn apply_transition(
    conn: &mut SqliteConnection,
    claim: &ClaimedStep,
    transition: &Transition,
) -> StoreResult<Fenced> {
    debug_assert!(claim.unwritten.is_none(), "SQLite writes every claim when it is made");
    let now = Utc::now();
    let (state, next_step, next_at, error, finished) = match transition {
        Transition::Advance { next_step, .. } => {
            ("pending", Some(next_step.as_str()), Some(now), None, false)
        }
        Transition::Continue { next_step, .. } => ("running", Some(next_step.as_str()), None, None, false),
        Transition::Succeed { .. } => ("succeeded", None, None, None, true),
        Transition::Wait { at, error, .. } => ("waiting", None, Some(*at), error.as_ref(), false),
        Transition::Fail { failure } => ("failed", None, None, Some(failure), true),
    };
    let spends_attempt = transition.spends_attempt();
    // The next step's claim, when this worker goes on with it.
    let (owner, next_token, lease_expires) = match transition {
        Transition::Continue { owner, lease_token, lease, .. } => {
            (Some(owner.as_str()), Some(*lease_token), Some(from_now(*lease)))
        }
        _ => (None, None, None),
    };
    let continues = next_token.is_some();
    let row = sqlx::query(
        r#"
        update workflow_runs
        set state = $3,
            current_step = coalesce($4, current_step),
            -- See the PostgreSQL twin: a wait gives back the claim's count unless it spends
            -- the attempt, and progress starts the count over.
            attempt = case when $15 then 1 when $4 is not null then 0
                           else case when $16 then 0 else attempt - 1 end + case when $10 then 1 else 0 end end,
            next_run_at = $5,
            error_kind = case when $3 = 'succeeded' then null else coalesce($6, error_kind) end,
            last_error = case when $3 = 'succeeded' then null else coalesce($7, last_error) end,
            dispatch_seq = dispatch_seq + case when $8 or $15 then 1 else 0 end,
            lease_owner = $12,
            lease_token = $13,
            lease_expires_at = $14,
            finished_at = case when $9 then $11 else null end,
            updated_at = $11
        where id = $1 and lease_token = $2 and state = 'running'
        returning dispatch_seq
        "#,
    )
    .bind(claim.run_id)
    .bind(claim.lease_token)
    .bind(state)
    .bind(next_step)
    .bind(next_at.map(ts))
    .bind(error.map(|e| e.kind.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .bind(next_at.is_some())
    .bind(finished)
    .bind(spends_attempt)
    .bind(ts(now))
    .bind(owner)
    .bind(next_token)
    .bind(lease_expires)
    .bind(continues)
    .bind(transition.restarts_attempts())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Fenced::LeaseLost) };
    let seq: i64 = row.get("dispatch_seq");

    let (step_state, output) = match transition {
        Transition::Advance { output, .. }
        | Transition::Continue { output, .. }
        | Transition::Succeed { output } => ("succeeded", Some(output)),
        Transition::Wait { output, .. } => ("waiting", output.as_ref()),
        Transition::Fail { .. } => ("failed", None),
    };
    sqlx::query(
        r#"
        update workflow_steps
        set state = $3,
            attempts = attempts - case when $7 then 0 else 1 end,
            output = coalesce($4, output),
            error_kind = coalesce($5, error_kind),
            error = coalesce($6, error),
            finished_at = case when $3 in ('succeeded', 'failed') then $8 else finished_at end
        where run_id = $1 and name = $2
        "#,
    )
    .bind(claim.run_id)
    .bind(&claim.step)
    .bind(step_state)
    .bind(output)
    .bind(error.map(|e| e.kind.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .bind(spends_attempt)
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;

    sqlx::query(
        r#"
        update workflow_step_attempts set finished_at = $2, outcome = $3, error_kind = $4, error = $5
        where lease_token = $1
        "#,
    )
    .bind(claim.lease_token)
    .bind(ts(now))
    .bind(transition.outcome_label())
    .bind(error.map(|e| e.kind.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .execute(&mut *conn)
    .await?;

    if let (Some(token), Some(next_step), Some(owner)) = (next_token, next_step, owner) {
        start_attempt(conn, claim.run_id, next_step, token, owner, &ts(now)).await?;
    }

    if let Some(at) = next_at {
        enqueue_at(conn, StepJob { run_id: claim.run_id, seq }, at).await?;
    }
    // A sync that ends wakes the next sync of the same content, which may be waiting for it.
    if let Some((user, notion_id)) = crate::store::model::sync_ended_by(claim, transition) {
        super::sync::wake_next_sync(conn, user, notion_id).await?;
    }
    Ok(Fenced::Applied)
}

/// The `output` of a step of a run, for the steps after it.
pub async fn step_output(
    conn: &mut SqliteConnection,
    run_id: RunId,
    step: &str,
) -> StoreResult<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar(r#"select output from workflow_steps where run_id = $1 and name = $2"#)
        .bind(run_id)
        .bind(step)
        .fetch_optional(conn)
        .await?
        .flatten())
}
