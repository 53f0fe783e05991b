//! PostgreSQL SQL, one module per concern. Lowercase SQL in raw strings; functions take an
//! executor or a pool so callers can compose transactions.

mod abandonable;
pub mod events;
pub mod flashcards;
pub mod jobs;
pub mod keys;
pub mod notify;
pub mod oauth;
pub mod ops;
pub mod ratelimit;
pub mod reconcile;
pub mod retention;
pub mod runs;
pub mod sync;
pub mod users;

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use sqlx::{
    ConnectOptions, PgPool,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use self::abandonable::Abandonable;
use super::{PoolSettings, StoreResult};

/// Our migrations (apalis runs its own, in its own schema).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL backend: the system of record for production and scale-out.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
    /// Wakes every process's step workers after we commit step jobs (see `notify`).
    pub(super) notifier: Arc<notify::JobNotifier>,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        let notifier = Arc::new(notify::JobNotifier::new(&pool.connect_options()));
        Self { pool, notifier }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Step jobs were committed: wake the workers (every process's).
    pub fn jobs_committed(&self) {
        self.notifier.notify();
    }

    pub async fn connect(settings: &PoolSettings) -> StoreResult<Self> {
        let url = settings.url.expose_secret();
        if settings.create_database && !sqlx::Postgres::database_exists(url).await? {
            tracing::info!("creating the database named in DATABASE_URL");
            sqlx::Postgres::create_database(url).await?;
        }
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()?
            .application_name("cognie-sync")
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let options = match settings.idle_in_transaction_timeout {
            Some(timeout) => options
                .options([("idle_in_transaction_session_timeout", format!("{}ms", timeout.as_millis()))]),
            None => options,
        };
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            // A broken connection fails one query (which the caller maps to 503 or a retry)
            // instead of costing every request a ping.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self::new(pool))
    }

    /// Safe to run from many processes at once: sqlx serialises them with an advisory lock.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn is_ready(&self) -> StoreResult<bool> {
        // Its caller gives up after a deadline.
        let mut conn = Abandonable::acquire(&self.pool).await?;
        let applied: Vec<i64> = sqlx::query_scalar(r#"select version from _sqlx_migrations where success"#)
            .fetch_all(&mut *conn)
            .await?;
        conn.release();
        Ok(MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .all(|m| applied.contains(&m.version)))
    }
}
