//! Webhook events and verification tokens.

use chrono::{DateTime, Utc};

use super::{SqliteStore, jobs::enqueue_job, now, ts};
use crate::{
    ids::{EventId, RunId},
    store::{IntakeOutcome, NewEvent, StoreResult, jobs::StepJob},
};

impl SqliteStore {
    /// Stores an event and, if it is accepted, starts its event workflow and enqueues the
    /// run's first step, in one transaction. A duplicate (same dedupe key) inserts nothing.
    pub async fn record_event(&self, event: &NewEvent<'_>) -> StoreResult<IntakeOutcome> {
        let now = now();
        let mut tx = self.begin_write().await?;
        let inserted: Option<EventId> = sqlx::query_scalar(
            r#"
            insert into webhook_events (id, dedupe_key, notion_event_id, event_type, entity_id, entity_kind,
                parent_id, parent_kind, data_source_id, attempt_number, outcome, ignore_reason, event_time,
                payload, received_at)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                case when $11 is null then 'accepted' else 'ignored' end, $11, $12, json($13), $14)
            on conflict (dedupe_key) do nothing
            returning id
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
        .bind(event.event_time.map(ts))
        .bind(event.payload)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(event_id) = inserted else {
            let existing: EventId =
                sqlx::query_scalar(r#"select id from webhook_events where dedupe_key = $1"#)
                    .bind(event.dedupe_key)
                    .fetch_one(&mut *tx)
                    .await?;
            return Ok(IntakeOutcome::Duplicate(existing));
        };
        let accepted = event.ignore_reason.is_none();
        if accepted {
            let run_id = RunId::new();
            sqlx::query(
                r#"
                insert into workflow_runs (id, workflow, state, current_step, notion_id, notion_kind, trigger,
                    event_id, dispatch_seq, next_run_at, created_at, updated_at)
                values ($1, 'notion_event', 'pending', 'discover_users', $2, $3, 'webhook', $4, 1, $5, $5, $5)
                "#,
            )
            .bind(run_id)
            .bind(event.entity_id)
            .bind(event.entity_kind)
            .bind(event_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(r#"insert into workflow_run_events (run_id, event_id) values ($1, $2)"#)
                .bind(run_id)
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
            enqueue_job(&mut tx, StepJob { run_id, seq: 1 }, std::time::Duration::ZERO).await?;
        }
        tx.commit().await?;
        if accepted {
            self.wake();
        }
        Ok(IntakeOutcome::Stored(event_id))
    }

    /// Stores a verification token (encrypted) or notes that it was received again.
    pub async fn record_verification_token(&self, ciphertext: &[u8], token_sha256: &str) -> StoreResult<()> {
        sqlx::query(
            r#"
            insert into webhook_verification_tokens (token_ciphertext, token_sha256, first_received_at, last_received_at)
            values ($1, $2, $3, $3)
            on conflict (token_sha256) do update
            set last_received_at = excluded.last_received_at,
                times_received = webhook_verification_tokens.times_received + 1
            "#,
        )
        .bind(ciphertext)
        .bind(token_sha256)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn first_verification_token(&self) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            r#"select token_ciphertext from webhook_verification_tokens order by id limit 1"#,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

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
