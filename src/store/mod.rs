//! All SQL lives here. The rest of the service calls these typed operations; each backend keeps
//! its SQL in its own module (`pg`, and later `sqlite`).

pub mod jobs;
pub mod pg;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    ConnectOptions, PgPool,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use pg::events::{IntakeOutcome, NewEvent, StartRun};

/// Our migrations (apalis runs its own, in its own schema).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// A handle on the system of record. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not accepting work right now. Callers answer 503
    /// (Notion redelivers) and workers retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused a value (e.g. JSON it cannot store): the input is at fault.
    #[error("the database rejected the data: {0}")]
    InvalidData(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // 08: connection exception; 57P0x: shutting down / cannot connect now;
                // 53300: too many connections; 40001/40P01: retry the transaction.
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "53300"
                        || code == "40001"
                        || code == "40P01" =>
                {
                    StoreError::Unavailable(e)
                }
                // 22: data exception (bad JSON escape, value out of range, ...).
                Some(code) if code.starts_with("22") => StoreError::InvalidData(e),
                _ => StoreError::Database(e),
            },
            _ => StoreError::Database(e),
        }
    }
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How to open the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Create the database when it does not exist (the embedded default does this).
    pub create_database: bool,
}

impl Store {
    /// Opens the pool. Connections are made lazily, so a database that is down at start-up
    /// shows as "not ready" rather than a crash; [`Store::migrate`] waits for it.
    pub async fn connect(settings: &PoolSettings) -> StoreResult<Self> {
        let url = settings.url.expose_secret();
        if settings.create_database && !sqlx::Postgres::database_exists(url).await? {
            tracing::info!("creating the database named in the default DATABASE_URL");
            sqlx::Postgres::create_database(url).await?;
        }
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()?
            .application_name("cognie-sync")
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            // A broken connection fails one query (which the caller maps to 503 or a retry)
            // instead of costing every request a ping.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies our migrations. Run after the job queue's own (see `workflow::queue::setup`).
    /// Safe to run from many processes at once: sqlx serialises them with an advisory lock.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Readiness: the database answers and every migration we ship is applied.
    pub async fn is_ready(&self) -> StoreResult<bool> {
        let applied: Vec<i64> = sqlx::query_scalar(r#"select version from _sqlx_migrations where success"#)
            .fetch_all(&self.pool)
            .await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .all(|m| applied.contains(&m.version)))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
