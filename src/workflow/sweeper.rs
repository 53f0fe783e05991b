//! Takes over the steps of dead workers: a step whose lease expired (no heartbeat) is made
//! runnable again, so another worker (or the restarted process) resumes it within about one
//! lease plus one sweep interval.

use std::{sync::Arc, time::Duration};

use crate::{metrics::Metrics, store::Store};

/// Runs until `shutdown` resolves.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                sweep(&store, &metrics).await;
            }
        }
    }
}

/// Runs one sweep takes over in one statement: each is a row lock and a new job.
const BATCH: i64 = 100;

/// Takes over every step whose lease has expired, a batch at a time, so a process that died
/// with more steps in flight than one batch (`WORKER_CONCURRENCY` goes up to 1024) has them
/// all handed on in this sweep, not one batch per interval. Returns how many were taken over
/// (a failed batch is logged and ends the sweep; the next one tries again).
pub async fn sweep(store: &Store, metrics: &Metrics) -> usize {
    let mut taken = 0;
    loop {
        match store.redispatch_expired_leases(BATCH).await {
            Ok(runs) => {
                if !runs.is_empty() {
                    metrics.steps_taken_over(runs.len());
                    tracing::warn!(count = runs.len(), runs = ?runs, "took over steps whose worker stopped heartbeating");
                }
                taken += runs.len();
                // A batch taken over is no longer expired, so each pass finds fewer: this ends.
                if (runs.len() as i64) < BATCH {
                    return taken;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease sweep failed; will retry");
                return taken;
            }
        }
    }
}
