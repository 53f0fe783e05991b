//! apalis wiring: the job tables' migrations, and the worker that turns each job into one step
//! attempt through the [`Engine`], on apalis-postgres or apalis-sqlite by the store's backend.

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;

use super::Engine;
use crate::store::{
    Store,
    jobs::{STEP_QUEUE, StepJob},
};

/// Applies apalis's own migrations for the store's backend. Run before ours.
pub async fn setup(store: &Store) -> anyhow::Result<()> {
    if let Some(pool) = store.pg_pool() {
        PostgresStorage::setup(pool).await?;
    }
    if let Some(pool) = store.sqlite_pool() {
        // apalis-sqlite's setup also sets `PRAGMA synchronous = OFF` on the connection it runs
        // on, which would make commits on that connection non-durable. Run it on a connection
        // of its own, closed afterwards; the store's connections keep synchronous = FULL.
        let options = pool.connect_options().as_ref().clone();
        let setup_pool =
            sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        let result = SqliteStorage::setup(&setup_pool).await;
        setup_pool.close().await;
        result?;
    }
    Ok(())
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
    store: Store,
    engine: Arc<Engine>,
    settings: WorkerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> Result<(), std::io::Error> {
    let name = settings.name.clone();
    let concurrency = settings.concurrency;
    let poll = settings.poll_interval;
    let batch = settings.concurrency.clamp(1, 100);
    let engine_for_shutdown = engine.clone();
    let monitor = Monitor::new().shutdown_timeout(shutdown_timeout);
    let monitor = if let Some(pool) = store.pg_pool().cloned() {
        let config = apalis_postgres::Config::default()
            .queue(STEP_QUEUE)
            .batch_size(batch)
            // apalis's own orphan recovery is a backstop; our leases take over a dead worker's
            // step sooner. Results are recorded in our tables, not in apalis's.
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3);
        monitor.register(move |_| {
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
    } else {
        let pool = store.sqlite_pool().cloned().expect("a store is PostgreSQL or SQLite");
        let wake = store.sqlite_wake_signal().expect("a SQLite store has a wake signal");
        let config = apalis_sqlite::Config::default()
            .queue(STEP_QUEUE)
            .batch_size(batch)
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3);
        monitor.register(move |_| {
            // Woken at once when this process commits a job (nothing else writes to the
            // file); the interval picks up jobs scheduled for later.
            let woken = Box::pin(futures::stream::unfold(wake.clone(), |wake| async move {
                wake.notified().await;
                Some(((), wake))
            }));
            let strategy = Strategy::new().stream(woken).interval(poll);
            let backend =
                SqliteStorage::<StepJob>::new(&pool).with_config(config.clone()).poll_with_strategy(strategy);
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .data(engine.clone())
                .concurrency(concurrency)
                .build(handle_job)
        })
    };
    let stopping = engine_for_shutdown;
    monitor
        .run_with_signal(async move {
            shutdown.await;
            // In-flight steps finish, but hand their run's next step to the queue.
            stopping.stop_continuing();
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
    engine.execute(job, worker.name()).await.map_err(|e| {
        tracing::error!(run_id = %job.run_id, error = %e, "step attempt could not be recorded; its lease will expire and the step be taken over");
        Box::new(e) as BoxDynError
    })
}
