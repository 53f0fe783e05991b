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
            _ = tick.tick() => match store.redispatch_expired_leases(100).await {
                Ok(runs) if !runs.is_empty() => {
                    metrics.steps_taken_over(runs.len());
                    tracing::warn!(count = runs.len(), runs = ?runs, "took over steps whose worker stopped heartbeating");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lease sweep failed; will retry"),
            },
        }
    }
}
