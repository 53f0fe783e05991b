//! The periodic pruning job (see `store::pg::retention`): apalis's finished job rows every few
//! seconds; history older than `RETENTION_DAYS`, and apalis's rows of workers gone for an hour,
//! every hour. Idempotent and safe to run in every
//! worker process at once (rows are claimed with SKIP LOCKED).

use std::time::Duration;

use crate::store::Store;

/// How long a finished job row is kept. Our own tables hold each step's history, so the row
/// is useless once done; and it is costly while kept: apalis-postgres acknowledges results by
/// joining against every row its worker has locked (done rows keep `lock_by`), so each ack
/// costs time in proportion to the rows a worker finished within the grace period (measured:
/// 1.4 ms per ack with 3,000 such rows, about 1 ms of database time per step job at ~100
/// syncs/s with a 60 s grace).
const JOB_GRACE: Duration = Duration::from_secs(5);
const JOB_EVERY: Duration = Duration::from_secs(5);
const HISTORY_EVERY: Duration = Duration::from_secs(3_600);
/// A worker's row outlives its process by this much (apalis updates `last_seen` every few
/// seconds while it runs), then goes with the hourly pruning.
const WORKER_GONE: Duration = Duration::from_secs(3_600);

/// Runs until `shutdown` resolves.
pub async fn run(store: Store, retention: Duration, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut jobs = tokio::time::interval(JOB_EVERY);
    let mut history = tokio::time::interval(HISTORY_EVERY);
    jobs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    history.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = jobs.tick() => match store.prune_finished_jobs(JOB_GRACE).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(jobs = n, "pruned finished job rows"),
                Err(e) => tracing::warn!(error = %e, "pruning job rows failed; will retry"),
            },
            _ = history.tick() => {
                // Long on a big history: shutdown does not wait for it (what it deleted so far
                // is committed batch by batch or not at all).
                let pruned = tokio::select! {
                    _ = &mut shutdown => return,
                    pruned = store.prune_history(retention) => pruned,
                };
                match pruned {
                    Ok(p) if p.runs + p.events + p.verification_tokens > 0 => tracing::info!(
                        runs = p.runs,
                        events = p.events,
                        verification_tokens = p.verification_tokens,
                        "pruned history older than RETENTION_DAYS"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning history failed; will retry"),
                }
                match store.prune_gone_workers(WORKER_GONE).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(workers = n, "pruned the queue's rows of workers gone for an hour"),
                    Err(e) => tracing::warn!(error = %e, "pruning gone workers failed; will retry"),
                }
            }
        }
    }
}
