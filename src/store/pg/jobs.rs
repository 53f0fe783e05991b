//! Step jobs in apalis-postgres 1.0's `apalis.jobs`, inserted on our own transactions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::PgStore;
use crate::store::{StoreResult, jobs::StepJob};

/// Inserts one pending job; `$1` id, `$2` payload, `$3` seconds from now until it is due (from
/// the clock, not the transaction's start: the delay was worked out from the clock, and a job
/// enqueued late in a long transaction, a large fan-out's, must not come due early).
/// `max_attempts = 1`: apalis must never re-run a job by itself (it would do so at once, with
/// no backoff); retries are new jobs that our engine schedules.
pub const INSERT_JOB_SQL: &str = r#"
insert into apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata)
values ($1, 'cognie_sync.steps', $2, 'Pending', 0, 1, clock_timestamp() + make_interval(secs => $3), 0, ''::hstore)
"#;

/// Enqueues a step job due after `delay`, on the caller's connection (and so transaction).
pub async fn enqueue_job(conn: &mut PgConnection, job: StepJob, delay: Duration) -> StoreResult<()> {
    let (id, payload) = job.encode();
    sqlx::query(INSERT_JOB_SQL).bind(id).bind(payload).bind(delay.as_secs_f64()).execute(conn).await?;
    Ok(())
}

/// Enqueues a step job due at `at` (at once if that has passed), on the caller's connection.
pub async fn enqueue_at(conn: &mut PgConnection, job: StepJob, at: DateTime<Utc>) -> StoreResult<()> {
    let delay = (at - Utc::now()).to_std().unwrap_or_default();
    enqueue_job(conn, job, delay).await
}

impl PgStore {
    /// Enqueues a step job on its own (see [`crate::store::Store::redeliver`]).
    pub async fn redeliver(&self, job: StepJob, delay: Duration) -> StoreResult<()> {
        let mut conn = self.pool().acquire().await?;
        enqueue_job(&mut conn, job, delay).await?;
        if delay.is_zero() {
            self.jobs_committed();
        }
        Ok(())
    }
}
