//! Webhook events and verification tokens.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{PgStore, abandonable::Abandonable};
use crate::{
    ids::{EventId, RunId},
    store::{IntakeOutcome, NewEvent, StartRun, StoreResult, jobs::StepJob},
};

impl PgStore {
    /// Stores an event and, if it is accepted, starts its event workflow and enqueues the
    /// run's first step: one statement, so one round trip and one atomic commit. A duplicate
    /// (same dedupe key) inserts nothing at all.
    pub async fn record_event(&self, event: &NewEvent<'_>) -> StoreResult<IntakeOutcome> {
        let run = event.ignore_reason.is_none().then(|| StartRun { run_id: RunId::new() });
        let job = run.map(|r| StepJob { run_id: r.run_id, seq: 1 }.encode());
        let (job_id, job_payload) = job.unzip();
        // The webhook gives up on the database after a deadline (503; Notion redelivers).
        let mut conn = Abandonable::acquire(&self.pool).await?;
        let inserted: Option<uuid::Uuid> = sqlx::query_scalar(
            r#"
            with ev as (
                insert into webhook_events (id, dedupe_key, notion_event_id, event_type, entity_id, entity_kind,
                    parent_id, parent_kind, data_source_id, attempt_number, outcome, ignore_reason, event_time, payload)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                    case when $11::text is null then 'accepted' else 'ignored' end, $11, $12, $13::text::jsonb)
                on conflict (dedupe_key) do nothing
                returning id
            ), run as (
                insert into workflow_runs (id, workflow, state, current_step, notion_id, notion_kind, trigger,
                    event_id, dispatch_seq, next_run_at)
                select $14, 'notion_event', 'pending', 'discover_users', $5, $6, 'webhook', ev.id, 1, now()
                from ev
                where $14::uuid is not null
                returning id
            ), link as (
                insert into workflow_run_events (run_id, event_id)
                select run.id, ev.id from run, ev
            ), job as (
                insert into apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata)
                select $15, 'cognie_sync.steps', $16, 'Pending', 0, 1, now(), 0, ''::hstore
                from run
            )
            select id from ev
            "#,
        )
        .bind(event.id)
        .bind(event.dedupe_key)
        .bind(event.notion_event_id)
        .bind(event.event_type)
        .bind(event.entity_id)
        .bind(event.entity_kind)
        .bind(event.parent_id)
        .bind(event.parent_kind)
        .bind(event.data_source_id)
        .bind(event.attempt_number)
        .bind(event.ignore_reason)
        .bind(event.event_time)
        .bind(event.payload)
        .bind(run.map(|r| r.run_id))
        .bind(job_id)
        .bind(job_payload)
        .fetch_optional(&mut *conn)
        .await?;
        let outcome = match inserted {
            Some(id) => {
                if run.is_some() {
                    self.jobs_committed();
                }
                IntakeOutcome::Stored(EventId(id))
            }
            None => IntakeOutcome::Duplicate(existing_event(&mut conn, event.dedupe_key).await?),
        };
        conn.release();
        Ok(outcome)
    }

    /// Stores a verification token (encrypted) or notes that it was received again.
    ///
    /// Token inserts take turns (a lock held until the statement commits): an identity is
    /// handed out at insert, not at commit, so two handshakes at once could otherwise commit
    /// ids 2 then 1, and an instance that read the "first" token in between would sign with a
    /// different key (for good: it is cached) than every other instance.
    pub async fn record_verification_token(&self, ciphertext: &[u8], token_sha256: &str) -> StoreResult<()> {
        let mut conn = Abandonable::acquire(&self.pool).await?;
        sqlx::query(
            r#"
            insert into webhook_verification_tokens (token_ciphertext, token_sha256)
            select $1, $2 from (select pg_advisory_xact_lock(hashtextextended('cognie-sync verification tokens', 0))) turn
            on conflict (token_sha256) do update
            set last_received_at = now(),
                times_received = webhook_verification_tokens.times_received + 1
            "#,
        )
        .bind(ciphertext)
        .bind(token_sha256)
        .execute(&mut *conn)
        .await?;
        conn.release();
        Ok(())
    }

    /// The first token ever received: the signing key when none is configured.
    pub async fn first_verification_token(&self) -> StoreResult<Option<Vec<u8>>> {
        let mut conn = Abandonable::acquire(&self.pool).await?;
        let token = sqlx::query_scalar(
            r#"select token_ciphertext from webhook_verification_tokens order by id limit 1"#,
        )
        .fetch_optional(&mut *conn)
        .await?;
        conn.release();
        Ok(token)
    }

    /// The most recently received token (what ops paste into Notion's UI), with when.
    pub async fn latest_verification_token(&self) -> StoreResult<Option<(Vec<u8>, DateTime<Utc>, i64)>> {
        Ok(sqlx::query_as(
            r#"
            select token_ciphertext, last_received_at, count(*) over () as tokens
            from webhook_verification_tokens
            order by last_received_at desc, id desc
            limit 1
            "#,
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// The id of the event already stored under `dedupe_key`. The row exists: our insert conflicted
/// with it (a fresh statement, so it sees rows committed after the insert's snapshot).
async fn existing_event(conn: &mut PgConnection, dedupe_key: &str) -> StoreResult<EventId> {
    let id: uuid::Uuid = sqlx::query_scalar(r#"select id from webhook_events where dedupe_key = $1"#)
        .bind(dedupe_key)
        .fetch_one(conn)
        .await?;
    Ok(EventId(id))
}
