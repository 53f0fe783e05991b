//! Step jobs in apalis-sqlite 1.0's `Jobs` table, inserted on our own transactions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::SqliteStore;
use crate::store::{StoreResult, jobs::StepJob};

/// Enqueues a step job due after `delay`, on the caller's connection (and so transaction).
/// `max_attempts = 1`: apalis must never re-run a job by itself; retries are new jobs that our
/// engine schedules. apalis-sqlite keeps `run_at` in whole seconds and starts a job once
/// `run_at <= now`, so the due time is rounded up: a job never starts before its time.
pub async fn enqueue_job(conn: &mut SqliteConnection, job: StepJob, delay: Duration) -> StoreResult<()> {
    let (id, payload) = job.encode();
    let due = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + delay;
    let run_at = due.as_secs() as i64 + i64::from(due.subsec_nanos() > 0 && !delay.is_zero());
    sqlx::query(
        r#"
        insert into Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, metadata)
        values ($1, $2, 'cognie_sync.steps', 'Pending', 0, 1, $3, 0, '{}')
        "#,
    )
    .bind(payload)
    .bind(id)
    .bind(run_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Enqueues a step job due at `at` (at once if that has passed), on the caller's connection.
pub async fn enqueue_at(conn: &mut SqliteConnection, job: StepJob, at: DateTime<Utc>) -> StoreResult<()> {
    let delay = (at - Utc::now()).to_std().unwrap_or_default();
    enqueue_job(conn, job, delay).await
}

impl SqliteStore {
    /// Enqueues a step job on its own (see [`crate::store::Store::redeliver`]).
    pub async fn redeliver(&self, job: StepJob, delay: Duration) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        enqueue_job(&mut tx, job, delay).await?;
        tx.commit().await?;
        self.wake_signal().notify_one();
        Ok(())
    }
}
