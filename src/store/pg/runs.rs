//! Workflow runs and steps: claiming a step attempt under a lease, heartbeats, and the fenced
//! transitions that record a step's outcome and enqueue what comes next in one transaction.
//!
//! A lease is fenced by its token alone (`id = $1 and lease_token = $2`): a claim sets a fresh
//! token together with `state = 'running'`, and every change out of `running` (a transition,
//! a cancel, the sweeper) clears it. Testing the state as well would be redundant, and harmful:
//! `state = 'running'` lets the planner walk a state-led index of the ops API instead of the
//! primary key, and on a busy table most of that index's entries are dead versions of runs
//! that passed through `running` (measured: 0.7 ms and 59 buffers instead of 3).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{
    PgStore,
    jobs::{enqueue_at, enqueue_job},
};
use crate::{
    ids::RunId,
    store::{
        AttemptEnd, ChainedSuccess, ClaimedStep, EventTarget, Fenced, StepFailure, StoreResult, Transition,
        jobs::StepJob,
    },
};

impl PgStore {
    /// Claims the current step of the job's run, if the job is still current (its `seq`
    /// matches) and the run is runnable: pending or waiting, or running under a lease that
    /// expired (its worker died).
    pub async fn claim_step(
        &self,
        job: StepJob,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<Option<ClaimedStep>> {
        let mut conn = self.pool.acquire().await?;
        claim_step(&mut conn, job, owner, lease).await
    }

    /// Claims like [`PgStore::claim_step`] inside a transaction that stays open (holding the
    /// run's row lock), so a step that only touches the database can run and be recorded in
    /// it: one commit for claim, step and outcome.
    pub async fn claim_and_begin(
        &self,
        job: StepJob,
        owner: &str,
        lease: Duration,
        unwritten: fn(&str) -> bool,
    ) -> StoreResult<Option<(ClaimedStep, sqlx::Transaction<'static, sqlx::Postgres>)>> {
        let mut tx = self.pool.begin().await?;
        Ok(claim_step_in_tx(&mut tx, job, owner, lease, unwritten).await?.map(|claim| (claim, tx)))
    }

    /// The stored output of a step of a run (its result, or its saved progress).
    pub async fn step_output(&self, run_id: RunId, step: &str) -> StoreResult<Option<serde_json::Value>> {
        let mut conn = self.pool.acquire().await?;
        step_output(&mut conn, run_id, step).await
    }

    /// Extends the lease of a claimed step. `false`: the lease is gone (stop working on it).
    pub async fn heartbeat(&self, claim: &ClaimedStep, lease: Duration) -> StoreResult<bool> {
        let updated = sqlx::query(
            r#"
            update workflow_runs
            set lease_expires_at = now() + make_interval(secs => $3)
            where id = $1 and lease_token = $2
            "#,
        )
        .bind(claim.run_id)
        .bind(claim.lease_token)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Opens a transaction that holds the claimed run's row lock, if the claim still holds the
    /// lease. Writes made in it commit only together with the step's transition, and no other
    /// worker can take the step over while it is open.
    pub async fn begin_fenced(
        &self,
        claim: &ClaimedStep,
    ) -> StoreResult<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        let mut tx = self.pool.begin().await?;
        Ok(match lock_claimed(&mut tx, claim).await? {
            Fenced::Applied => Some(tx),
            Fenced::LeaseLost => None,
        })
    }
}

/// Claims the current step of the job's run on `conn` (see [`PgStore::claim_step`]).
pub async fn claim_step(
    conn: &mut PgConnection,
    job: StepJob,
    owner: &str,
    lease: Duration,
) -> StoreResult<Option<ClaimedStep>> {
    let token = Uuid::new_v4();
    let row = sqlx::query(
        r#"
        with claimed as (
            update workflow_runs
            set state = 'running',
                lease_owner = $3,
                lease_token = $4,
                lease_expires_at = now() + make_interval(secs => $5),
                attempt = attempt + 1,
                next_run_at = null,
                updated_at = now()
            where id = $1
              and dispatch_seq = $2
              and (state in ('pending', 'waiting') or (state = 'running' and lease_expires_at < now()))
            returning id, workflow, current_step, attempt, user_id, notion_id, notion_kind, event_id
        ), step as (
            insert into workflow_steps (run_id, name, state, attempts, started_at)
            select id, current_step, 'running', 1, now() from claimed
            on conflict (run_id, name) do update
            set state = 'running', attempts = workflow_steps.attempts + 1, started_at = now(), finished_at = null
        ), abandoned as (
            -- Any attempt of the run still open was abandoned: this claim fences it off (the
            -- statement does not see the row `history` inserts).
            update workflow_step_attempts
            set finished_at = now(), outcome = $6, error_kind = $7, error = $8
            where run_id = $1 and outcome is null and exists (select 1 from claimed)
        ), history as (
            insert into workflow_step_attempts (lease_token, run_id, step, worker)
            select $4, id, current_step, $3 from claimed
        )
        select * from claimed
        "#,
    )
    .bind(job.run_id)
    .bind(job.seq)
    .bind(owner)
    .bind(token)
    .bind(lease.as_secs_f64())
    .bind(AttemptEnd::Abandoned.outcome())
    .bind(AttemptEnd::Abandoned.error_kind())
    .bind(AttemptEnd::Abandoned.error())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| ClaimedStep {
        run_id: r.get("id"),
        workflow: r.get("workflow"),
        step: r.get::<Option<String>, _>("current_step").unwrap_or_default(),
        attempt: r.get("attempt"),
        lease_token: token,
        user_id: r.get("user_id"),
        notion_id: r.get("notion_id"),
        notion_kind: r.get("notion_kind"),
        event_id: r.get("event_id"),
        event: None,
        known_outputs: Default::default(),
        unwritten: None,
    }))
}

/// Claims the current step of the job's run on a transaction that stays open (see
/// [`PgStore::claim_and_begin`]). When `unwritten(step)` (a step that runs in this
/// transaction), the run's row is only locked, with the claim's conditions: the step's
/// transition writes claim and outcome in one statement (one write of the run's row, its
/// step's and its attempt's instead of two each). Otherwise the claim is written now.
pub async fn claim_step_in_tx(
    conn: &mut PgConnection,
    job: StepJob,
    owner: &str,
    lease: Duration,
    unwritten: fn(&str) -> bool,
) -> StoreResult<Option<ClaimedStep>> {
    let row = sqlx::query(
        r#"
        select r.id, r.workflow, r.current_step, r.attempt + 1 as attempt, r.user_id, r.notion_id,
               r.notion_kind, r.event_id, r.state = 'running' as taken_over,
               e.id is not null as has_event, e.entity_id, e.entity_kind, e.parent_id, e.data_source_id, e.event_type
        from workflow_runs r
        left join webhook_events e on e.id = r.event_id
        where r.id = $1
          and r.dispatch_seq = $2
          and (r.state in ('pending', 'waiting') or (r.state = 'running' and r.lease_expires_at < now()))
        for no key update of r
        "#,
    )
    .bind(job.run_id)
    .bind(job.seq)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let step = r.get::<Option<String>, _>("current_step").unwrap_or_default();
    if !unwritten(&step) {
        return claim_step(conn, job, owner, lease).await;
    }
    if r.get::<bool, _>("taken_over") {
        // Rare (a worker died and its lease ran out before the sweeper re-queued the step), so
        // not worth a part of the transition's statement: the dead attempt is closed now.
        close_open_attempts(conn, job.run_id, AttemptEnd::Abandoned).await?;
    }
    Ok(Some(ClaimedStep {
        run_id: r.get("id"),
        workflow: r.get("workflow"),
        step,
        attempt: r.get("attempt"),
        lease_token: Uuid::new_v4(),
        user_id: r.get("user_id"),
        notion_id: r.get("notion_id"),
        notion_kind: r.get("notion_kind"),
        event_id: r.get("event_id"),
        // An event run's step reads its event: it comes with the claim, not a statement later.
        event: r.get::<bool, _>("has_event").then(|| EventTarget {
            entity_id: r.get("entity_id"),
            entity_kind: r.get("entity_kind"),
            parent_id: r.get("parent_id"),
            data_source_id: r.get("data_source_id"),
            event_type: r.get("event_type"),
        }),
        known_outputs: Default::default(),
        unwritten: Some(owner.to_owned()),
    }))
}

/// Ends every attempt of the run that is still open, as `end` says: attempts that can no
/// longer be recorded, because the run's lease moved on (a takeover) or the run ended (cancel).
pub async fn close_open_attempts(conn: &mut PgConnection, run_id: RunId, end: AttemptEnd) -> StoreResult<()> {
    sqlx::query(
        r#"
        update workflow_step_attempts set finished_at = now(), outcome = $2, error_kind = $3, error = $4
        where run_id = $1 and outcome is null
        "#,
    )
    .bind(run_id)
    .bind(end.outcome())
    .bind(end.error_kind())
    .bind(end.error())
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies a transition on a connection inside a fenced transaction (see [`Store::begin_fenced`]):
/// the run's and the step's records and the attempt's history in one statement, then the job
/// that comes next, if any. For a claim not written yet ([`ClaimedStep::unwritten`], whose
/// transaction holds the run's row lock) the same statement writes the claim too: the step's
/// record as started now, the attempt's history row whole.
///
/// `chained`: the successes of the steps before this one in the transaction that are not
/// written yet (see [`crate::store::StoreTx::continue_in_tx`]), in order; this claim is then
/// unwritten too. The same statement writes their step records and attempt histories, and
/// moves the run's `dispatch_seq` on by one each, as their own transitions would have.
pub async fn apply_transition(
    conn: &mut PgConnection,
    claim: &ClaimedStep,
    transition: &Transition,
    chained: &[ChainedSuccess],
) -> StoreResult<Fenced> {
    debug_assert!(chained.is_empty() || claim.unwritten.is_some(), "a chain's last claim is unwritten");
    // Run-level change; `dispatch_seq` moves on whenever a new job is enqueued (or the run is
    // claimed on), so any older job for this run becomes a no-op.
    let (state, next_step, next_at, error, finished): (
        &str,
        Option<&str>,
        Option<DateTime<Utc>>,
        Option<&StepFailure>,
        bool,
    ) = match transition {
        Transition::Advance { next_step, .. } => {
            ("pending", Some(next_step.as_str()), Some(Utc::now()), None, false)
        }
        Transition::Continue { next_step, .. } => ("running", Some(next_step.as_str()), None, None, false),
        Transition::Succeed { .. } => ("succeeded", None, None, None, true),
        Transition::Wait { at, error, .. } => ("waiting", None, Some(*at), error.as_ref(), false),
        Transition::Fail { failure } => ("failed", None, None, Some(failure), true),
    };
    // The next step's claim, when this worker goes on with it.
    let (owner, next_token, lease_secs) = match transition {
        Transition::Continue { owner, lease_token, lease, .. } => {
            (Some(owner.as_str()), Some(*lease_token), Some(lease.as_secs_f64()))
        }
        _ => (None, None, None),
    };
    let (step_state, output) = match transition {
        Transition::Advance { output, .. }
        | Transition::Continue { output, .. }
        | Transition::Succeed { output } => ("succeeded", Some(output)),
        Transition::Wait { output, .. } => ("waiting", output.as_ref()),
        Transition::Fail { .. } => ("failed", None),
    };
    let enqueue = next_at.is_some();
    // A sync that ends wakes the next sync of the same content, which may be waiting for it.
    let woken_key = crate::store::model::sync_ended_by(claim, transition);
    let row = sqlx::query(
        r#"
        with run as (
            update workflow_runs
            set state = $3,
                -- The claim's step, not the row's: a chain's successes before it (unwritten, see
                -- `chained`) have not moved the row on.
                current_step = coalesce($4, $16),
                -- The claim counted this attempt; a wait that spends none gives it back, and
                -- one that made progress starts the count over (`restarts_attempts`).
                attempt = case when $13::uuid is not null then 1
                               when $4::text is not null then 0
                               else case when $29 then 0 else $18 - 1 end + case when $10 then 1 else 0 end end,
                next_run_at = $5,
                error_kind = case when $3 = 'succeeded' then null else coalesce($6, error_kind) end,
                last_error = case when $3 = 'succeeded' then null else coalesce($7, last_error) end,
                dispatch_seq = dispatch_seq + cardinality($24::text[])
                               + case when $8 or $13::uuid is not null then 1 else 0 end,
                lease_owner = $12,
                lease_token = $13,
                -- From the clock, not the transaction's start: a transaction that ran steps
                -- (a claim's, a handoff's) may be older than the lease it hands on.
                lease_expires_at = clock_timestamp() + make_interval(secs => $14),
                finished_at = case when $9 then now() else null end,
                updated_at = now()
            where id = $1 and (lease_token = $2 or $19)
            returning id, dispatch_seq
        ), chained_steps as (
            -- A written claim's record exists (its attempts counted at the claim); an
            -- unwritten one's is started now.
            insert into workflow_steps (run_id, name, state, attempts, output, started_at, finished_at)
            select run.id, c.name, 'succeeded', case when c.written then 0 else 1 end, c.output, now(), now()
            from run, unnest($24::text[], $25::jsonb[], $27::boolean[]) as c(name, output, written)
            on conflict (run_id, name) do update
            set state = 'succeeded',
                attempts = workflow_steps.attempts + excluded.attempts,
                output = excluded.output,
                started_at = case when excluded.attempts > 0 then excluded.started_at else workflow_steps.started_at end,
                finished_at = excluded.finished_at
        ), chained_history as (
            insert into workflow_step_attempts (lease_token, run_id, step, worker, started_at, finished_at, outcome)
            select c.token, run.id, c.name, c.worker, now(), now(), 'succeeded'
            from run, unnest($26::uuid[], $24::text[], $28::text[]) as c(token, name, worker)
            on conflict (lease_token) do update
            set finished_at = now(), outcome = 'succeeded', error_kind = null, error = null
        ), step as (
            update workflow_steps s
            set state = $11,
                attempts = s.attempts - case when $10 then 0 else 1 end,
                output = coalesce($15, s.output),
                error_kind = coalesce($6, s.error_kind),
                error = coalesce($7, s.error),
                finished_at = case when $11 in ('succeeded', 'failed') then now() else s.finished_at end
            from run
            where s.run_id = run.id and s.name = $16 and not $19
        ), unwritten_step as (
            insert into workflow_steps (run_id, name, state, attempts, output, error_kind, error, started_at, finished_at)
            select id, $16, $11, case when $10 then 1 else 0 end, $15, $6, $7, now(),
                   case when $11 in ('succeeded', 'failed') then now() end
            from run where $19
            on conflict (run_id, name) do update
            set state = excluded.state,
                attempts = workflow_steps.attempts + excluded.attempts,
                output = coalesce(excluded.output, workflow_steps.output),
                error_kind = coalesce(excluded.error_kind, workflow_steps.error_kind),
                error = coalesce(excluded.error, workflow_steps.error),
                started_at = excluded.started_at,
                finished_at = excluded.finished_at
        ), history as (
            update workflow_step_attempts a
            set finished_at = now(), outcome = $17, error_kind = $6, error = $7
            from run
            where a.lease_token = $2 and not $19
        ), unwritten_history as (
            insert into workflow_step_attempts (lease_token, run_id, step, worker, started_at, finished_at, outcome, error_kind, error)
            select $2, id, $16, $20, now(), now(), $17, $6, $7 from run where $19
        ), next_step as (
            insert into workflow_steps (run_id, name, state, attempts, started_at)
            select id, $4, 'running', 1, now() from run where $13::uuid is not null
            on conflict (run_id, name) do update
            set state = 'running', attempts = workflow_steps.attempts + 1, started_at = now(), finished_at = null
        ), next_history as (
            insert into workflow_step_attempts (lease_token, run_id, step, worker)
            select $13, id, $4, $12 from run where $13::uuid is not null
        ), woken as (
            -- Not this run: this statement sees it as it was before (it may be the claim of its
            -- own debounce step, still `waiting` on disk), and must not write it twice.
            update workflow_runs w
            set next_run_at = greatest(now(), w.debounce_until), dispatch_seq = w.dispatch_seq + 1, updated_at = now()
            from run
            where $21 and w.workflow = 'notion_sync' and w.user_id = $22 and w.notion_id = $23 and w.id <> $1
              and (w.current_step = 'debounce') is true and (w.state = 'waiting') is true
              and w.next_run_at > greatest(now(), w.debounce_until)
            returning w.id, w.dispatch_seq, w.next_run_at
        )
        select run.dispatch_seq, woken.id as woken_id, woken.dispatch_seq as woken_seq, woken.next_run_at as woken_at
        from run left join woken on true
        "#,
    )
    .bind(claim.run_id)
    .bind(claim.lease_token)
    .bind(state)
    .bind(next_step)
    .bind(next_at)
    .bind(error.map(|e| e.kind.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .bind(enqueue)
    .bind(finished)
    .bind(transition.spends_attempt())
    .bind(step_state)
    .bind(owner)
    .bind(next_token)
    .bind(lease_secs)
    .bind(output)
    .bind(&claim.step)
    .bind(transition.outcome_label())
    .bind(claim.attempt)
    .bind(claim.unwritten.is_some())
    .bind(claim.unwritten.as_deref())
    .bind(woken_key.is_some())
    .bind(woken_key.map(|(user, _)| user))
    .bind(woken_key.map(|(_, notion_id)| notion_id))
    .bind(chained.iter().map(|c| c.step.as_str()).collect::<Vec<_>>())
    .bind(chained.iter().map(|c| &c.output).collect::<Vec<_>>())
    .bind(chained.iter().map(|c| c.lease_token).collect::<Vec<_>>())
    .bind(chained.iter().map(|c| c.claim_written).collect::<Vec<_>>())
    .bind(chained.iter().map(|c| c.worker.as_str()).collect::<Vec<_>>())
    .bind(transition.restarts_attempts())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Fenced::LeaseLost) };
    let seq: i64 = row.get("dispatch_seq");

    if let Some(at) = next_at {
        enqueue_at(conn, StepJob { run_id: claim.run_id, seq }, at).await?;
    }
    if let Some(woken) = row.get::<Option<RunId>, _>("woken_id") {
        enqueue_at(conn, StepJob { run_id: woken, seq: row.get("woken_seq") }, row.get("woken_at")).await?;
    }
    Ok(Fenced::Applied)
}

/// Locks a claimed run's row in a transaction, if the claim still holds its lease (see
/// [`PgStore::begin_fenced`], [`crate::store::StoreTx::continue_in_tx`]). `LeaseLost`
/// otherwise. `no key update`: the lock a transition's update of the row takes anyway.
pub async fn lock_claimed(conn: &mut PgConnection, claim: &ClaimedStep) -> StoreResult<Fenced> {
    let held: Option<i32> = sqlx::query_scalar(
        r#"select 1 from workflow_runs where id = $1 and lease_token = $2 for no key update"#,
    )
    .bind(claim.run_id)
    .bind(claim.lease_token)
    .fetch_optional(conn)
    .await?;
    Ok(if held.is_some() { Fenced::Applied } else { Fenced::LeaseLost })
}

/// The `output` of a succeeded step of a run, for the steps after it.
pub async fn step_output(
    conn: &mut PgConnection,
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

impl PgStore {
    /// Steps whose worker stopped heartbeating (it died, or lost the database for longer than
    /// its lease): make them runnable again with a fresh job. The dead worker's job, if apalis
    /// ever re-delivers it, carries a stale sequence number and does nothing.
    pub async fn redispatch_expired_leases(&self, limit: i64) -> StoreResult<Vec<RunId>> {
        let mut tx = self.pool.begin().await?;
        // A sync whose worker died in its debounce step cannot go back to waiting when another
        // sync of the same content started collecting events meanwhile (one debouncing sync
        // per key; trying would fail this whole statement on every sweep): its events move to
        // that sync and it ends, as the debounce step itself would have done.
        sqlx::query(
            r#"
            with expired as (
                select r.id,
                       (select o.id from workflow_runs o
                        where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
                          and o.id <> r.id and o.current_step = 'debounce' and o.state in ('pending', 'waiting')
                        limit 1) as other
                from workflow_runs r
                where r.state = 'running' and r.lease_expires_at < now()
                  and r.workflow = 'notion_sync' and r.current_step = 'debounce'
                for update of r skip locked
            ), merged as (
                select id, other from expired where other is not null
            ), moved as (
                insert into workflow_run_events (run_id, event_id)
                select m.other, e.event_id from merged m join workflow_run_events e on e.run_id = m.id
                on conflict do nothing
            ), step as (
                update workflow_steps s
                set state = 'succeeded', output = jsonb_build_object('merged_into', m.other), finished_at = now()
                from merged m
                where s.run_id = m.id and s.name = 'debounce'
            ), abandoned as (
                update workflow_step_attempts a
                set finished_at = now(), outcome = $1, error_kind = $2, error = $3
                from merged m
                where a.run_id = m.id and a.outcome is null
            )
            update workflow_runs r
            set state = 'succeeded', dispatch_seq = r.dispatch_seq + 1, lease_owner = null, lease_token = null,
                lease_expires_at = null, next_run_at = null, finished_at = now(), updated_at = now()
            from merged m
            where r.id = m.id
            "#,
        )
        .bind(AttemptEnd::Abandoned.outcome())
        .bind(AttemptEnd::Abandoned.error_kind())
        .bind(AttemptEnd::Abandoned.error())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            r#"
            with expired as (
                select id from workflow_runs
                where state = 'running' and lease_expires_at < now()
                order by lease_expires_at
                limit $1
                for update skip locked
            ), abandoned as (
                update workflow_step_attempts a
                set finished_at = now(), outcome = $2, error_kind = $3, error = $4
                from expired e
                where a.run_id = e.id and a.outcome is null
            )
            update workflow_runs r
            set state = 'pending',
                dispatch_seq = r.dispatch_seq + 1,
                lease_owner = null,
                lease_token = null,
                lease_expires_at = null,
                next_run_at = now(),
                updated_at = now()
            from expired
            where r.id = expired.id
            returning r.id, r.dispatch_seq
            "#,
        )
        .bind(limit)
        .bind(AttemptEnd::Abandoned.outcome())
        .bind(AttemptEnd::Abandoned.error_kind())
        .bind(AttemptEnd::Abandoned.error())
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let run_id: RunId = row.get("id");
            enqueue_job(&mut tx, StepJob { run_id, seq: row.get("dispatch_seq") }, Duration::ZERO).await?;
            ids.push(run_id);
        }
        tx.commit().await?;
        if !ids.is_empty() {
            self.jobs_committed();
        }
        Ok(ids)
    }
}
