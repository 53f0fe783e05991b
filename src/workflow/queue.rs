//! apalis wiring: the job tables' migrations, and the worker that turns each job into one step
//! attempt through the [`Engine`].

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_postgres::{Config as QueueConfig, PostgresStorage};
use sqlx::PgPool;

use super::Engine;
use crate::store::jobs::{STEP_QUEUE, StepJob};

/// Applies apalis's own migrations (schema `apalis`). Run before ours.
pub async fn setup(pool: &PgPool) -> Result<(), apalis_postgres::Error> {
    PostgresStorage::setup(pool).await
}

/// A worker name unique to this process, so a restarted process never inherits (and strands)
/// the jobs of its previous life, which apalis would otherwise treat as still alive.
pub fn unique_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("cognie-sync-{host}-{}-{}", std::process::id(), ulid::Ulid::new())
}

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub name: String,
    pub concurrency: usize,
    pub poll_interval: Duration,
}

/// Runs the step worker until `shutdown` resolves, then stops taking jobs and waits up to
/// `shutdown_timeout` for in-flight steps.
pub async fn run_worker(
    pool: PgPool,
    engine: Arc<Engine>,
    settings: WorkerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> Result<(), std::io::Error> {
    let config = QueueConfig::default()
        .queue(STEP_QUEUE)
        .batch_size(settings.concurrency.clamp(1, 100))
        // apalis's own orphan recovery is a backstop; our leases take over a dead worker's
        // step sooner. Results are recorded in our tables, not in apalis's.
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(3);
    let name = settings.name.clone();
    let concurrency = settings.concurrency;
    let poll = settings.poll_interval;
    Monitor::new()
        .register(move |_| {
            let backend = PostgresStorage::<StepJob>::new(&pool)
                .with_config(config.clone())
                .with_pubsub()
                .poll_with_interval(poll);
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .data(engine.clone())
                .concurrency(concurrency)
                .build(handle_job)
        })
        .shutdown_timeout(shutdown_timeout)
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)
}

/// One job = one step attempt. Errors are recorded on the run by the engine; apalis only sees
/// an error when the database itself failed, and the run's lease then lets another worker
/// take the step over.
async fn handle_job(
    job: StepJob,
    engine: Data<Arc<Engine>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    engine.execute(job, worker.name()).await.map_err(|e| Box::new(e) as BoxDynError)
}
