//! apalis wiring: the job tables' migrations, and the worker that turns each job into one step
//! attempt through the [`Engine`], on apalis-postgres or apalis-sqlite by the store's backend.

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;

use super::{Engine, wake::WakeStrategy};
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
///
/// apalis ends a worker for good when its backend fails once (a fetch or heartbeat while the
/// database is unreachable), and its monitor then just waits for shutdown, so the process
/// would live on without a worker. Here a worker that ends by itself is started again, after
/// a backoff, under a new name: jobs the old one had fetched but not finished are then
/// recognised as orphans (their worker stopped heartbeating) and re-queued by apalis.
pub async fn run_worker(
    store: Store,
    engine: Arc<Engine>,
    settings: WorkerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> Result<(), std::io::Error> {
    use futures::FutureExt as _;
    let shutdown = shutdown.boxed().shared();
    let mut incarnation = 0u32;
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let name = match incarnation {
            0 => settings.name.clone(),
            n => format!("{}-{n}", settings.name),
        };
        let monitor = monitor(&store, engine.clone(), &settings, name.clone(), shutdown_timeout);
        let control = monitor.context();
        let started = tokio::time::Instant::now();
        let run = monitor.run();
        tokio::pin!(run);
        tokio::select! {
            ended = &mut run => {
                let error = match ended {
                    Ok(()) => "the worker stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > RESTART_BACKOFF_RESET {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::error!(worker = %name, %error, restart_in_ms = backoff.as_millis() as u64, "step worker stopped; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.clone() => return Ok(()),
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                incarnation += 1;
                tracing::info!(worker = %format!("{}-{incarnation}", settings.name), "step worker restarted");
            }
            _ = shutdown.clone() => {
                // In-flight steps finish, but hand their run's next step to the queue.
                engine.stop_continuing();
                let _ = control.shutdown();
                // apalis waits for every in-flight step however long it takes (its own
                // shutdown timeout only applies to `run_with_signal`), and a step may take its
                // whole timeout, or retry in place for as long as the database is down. Near
                // the bound, steps still calling out release their runs (recorded in the time
                // left); past it whatever is left is dropped: its lease expires and another
                // worker (or this one, restarted) takes it over; a late result is fenced.
                let release_at = shutdown_timeout - RELEASE_MARGIN.min(shutdown_timeout / 2);
                if let Ok(ended) = tokio::time::timeout(release_at, &mut run).await {
                    return stopped(&name, ended);
                }
                engine.release_external_steps();
                return match tokio::time::timeout(shutdown_timeout - release_at, run).await {
                    Ok(ended) => stopped(&name, ended),
                    Err(_) => {
                        tracing::warn!(
                            worker = %name,
                            timeout_s = shutdown_timeout.as_secs_f64(),
                            "steps still in flight at the shutdown timeout were left to be taken over when their leases expire"
                        );
                        Ok(())
                    }
                };
            }
        }
    }
}

/// How a worker told to shut down ended. An error of apalis's own by then (a poll or heartbeat
/// that found no pooled connection during a database hiccup) is logged, not the process's exit
/// status: its steps finished or released their runs, and every job is in the database for the
/// next process (a CI run under load saw the service exit 1 on SIGTERM this way).
fn stopped<E: std::fmt::Display>(name: &str, ended: Result<(), E>) -> Result<(), std::io::Error> {
    if let Err(error) = ended {
        tracing::warn!(worker = %name, %error, "the step worker reported an error while shutting down");
    }
    Ok(())
}

/// How long before the shutdown bound steps still calling out release their runs (half the
/// bound when that is shorter): the time left to record the releases.
const RELEASE_MARGIN: Duration = Duration::from_secs(5);

/// The first and the longest wait before a stopped worker is started again, and how long a
/// worker must have run for the wait to start over from the first.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);

/// A monitor running one step worker named `name`, on the store's backend.
fn monitor(
    store: &Store,
    engine: Arc<Engine>,
    settings: &WorkerSettings,
    name: String,
    shutdown_timeout: Duration,
) -> Monitor {
    let concurrency = settings.concurrency;
    let poll = settings.poll_interval;
    let batch = settings.concurrency.clamp(1, 100);
    let monitor = Monitor::new().shutdown_timeout(shutdown_timeout);
    if let Some(pool) = store.pg_pool().cloned() {
        let config = apalis_postgres::Config::default()
            .queue(STEP_QUEUE)
            .batch_size(batch)
            // apalis's own orphan recovery is a backstop; our leases take over a dead worker's
            // step sooner. Results are recorded in our tables, not in apalis's.
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3);
        monitor.register(move |_| {
            // Woken by apalis's LISTEN on job inserts (every process's notifications), see
            // `wake` for why not with apalis's own `with_pubsub().poll_with_interval(..)`.
            let listen_pool = pool.clone();
            let strategy = WakeStrategy::new(
                move || apalis_postgres::Pubsub::new(listen_pool.clone(), STEP_QUEUE.to_owned()),
                poll,
            );
            let backend =
                PollWith::new(PostgresStorage::<StepJob>::new(&pool).with_config(config.clone()), strategy);
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .data(engine.clone())
                .concurrency(concurrency)
                .build(handle_job)
        })
    } else {
        let pool = store.sqlite_jobs_pool().cloned().expect("a store is PostgreSQL or SQLite");
        let wake = store.sqlite_wake_signal().expect("a SQLite store has a wake signal");
        let config = apalis_sqlite::Config::default()
            .queue(STEP_QUEUE)
            .batch_size(batch)
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3);
        monitor.register(move |_| {
            // Woken at once when this process commits a job (nothing else writes to the
            // file); the interval picks up jobs scheduled for later.
            let wake = wake.clone();
            let strategy = WakeStrategy::new(
                move || {
                    Box::pin(futures::stream::unfold(wake.clone(), |wake| async move {
                        wake.notified().await;
                        Some(((), wake))
                    }))
                },
                poll,
            );
            let backend =
                SqliteStorage::<StepJob>::new(&pool).with_config(config.clone()).poll_with_strategy(strategy);
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .data(engine.clone())
                .concurrency(concurrency)
                .build(handle_job)
        })
    }
}

/// One job = one step attempt. Errors are recorded on the run by the engine; apalis only sees
/// an error when the database itself failed and the job could not be enqueued again.
///
/// A failed job is never re-run by apalis (`max_attempts = 1`), and a run whose claim did not
/// happen would be left with no job at all. So while the database is unavailable the attempt is
/// tried again here, with a backoff: claims are fenced, so a repeat is harmless (if the claim
/// did commit, the run is leased, the repeat finds the job stale, and the lease expiry hands
/// the step to a worker). If this worker dies meanwhile, apalis re-queues the job as an orphan.
/// Any other database error (a bug, a constraint the data broke) is not worth repeating at
/// once: the job is enqueued again for later ([`Engine::redeliver`]), so the run is never left
/// without one.
async fn handle_job(
    job: StepJob,
    engine: Data<Arc<Engine>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let worker = worker.name();
    let mut delay = Duration::from_millis(100);
    loop {
        // The database is unavailable (for the step, or for enqueueing it again after another
        // error): try the job again in place.
        let unavailable = match engine.execute(job, worker).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_unavailable() => e,
            Err(e) => match engine.redeliver(job).await {
                Ok(later) => {
                    tracing::error!(
                        run_id = %job.run_id,
                        error = %e,
                        retry_in_ms = later.as_millis() as u64,
                        "step job failed on a database error; it is enqueued again (cancel the run to stop it)"
                    );
                    return Ok(());
                }
                Err(again) if again.is_unavailable() => again,
                // Returning would leave a run whose claim did not commit with no job at all
                // (apalis never runs a failed job again, and only a leased run is taken over):
                // try the whole job again later (`RETRY_MAX_DELAY_MS`, at most 30 s: the
                // worker's slot is held meanwhile), until it runs or can be enqueued (or the
                // run is cancelled, which makes the job stale).
                Err(again) => {
                    let later = engine.retry_max_delay().min(Duration::from_secs(30));
                    tracing::error!(
                        run_id = %job.run_id,
                        error = %e,
                        enqueue_error = %again,
                        retry_in_ms = later.as_millis() as u64,
                        "step job failed on a database error and could not be enqueued again; trying it again"
                    );
                    tokio::time::sleep(later).await;
                    continue;
                }
            },
        };
        tracing::warn!(
            run_id = %job.run_id,
            error = %unavailable,
            retry_in_ms = delay.as_millis() as u64,
            "database unavailable for a step job; trying it again"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
