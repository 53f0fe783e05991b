//! SQLite SQL: the embedded default, for one process on one machine. The same operations as
//! `pg`, with the same meaning; where PostgreSQL relies on row locks and `SKIP LOCKED` across
//! processes, this backend relies on SQLite's single writer: every transaction that writes
//! starts with `BEGIN IMMEDIATE`, so it holds the write lock from its first statement and
//! never has to upgrade a read lock (which SQLite would refuse with SQLITE_BUSY instead of
//! waiting).
//!
//! Conventions, shared with `migrations/sqlite`:
//! - ids are BLOB UUIDs (sqlx's encoding of `uuid::Uuid`);
//! - times are TEXT in one fixed-width UTC format (see [`ts`]), always written by the service,
//!   so that text order is time order;
//! - JSON is TEXT; lists are JSON arrays.
//!
//! New jobs wake this process's worker directly (see [`SqliteStore::wake`]): nothing else can
//! write to the database (see `DataDirLock` in `app.rs`), so there is nothing to listen for.

pub mod events;
pub mod flashcards;
pub mod jobs;
pub mod keys;
pub mod oauth;
pub mod ops;
pub mod ratelimit;
pub mod reconcile;
pub mod retention;
pub mod runs;
pub mod sync;
pub mod users;

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::{
    ConnectOptions, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::Notify;

use super::{PoolSettings, StoreResult};

/// Our migrations' bookkeeping table. apalis-sqlite keeps its own migrations in sqlx's default
/// `_sqlx_migrations` of the same file; sharing it would make each migrator refuse the other's.
const MIGRATIONS_TABLE: &str = "_cognie_sync_migrations";

/// How long a statement waits for another connection's write lock before giving up (and the
/// caller answers 503 or retries).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections for readers, which run in parallel in WAL mode.
const MAX_READERS: u32 = 8;

/// How long apalis's own writes (fetching jobs, acknowledging them, its heartbeats) wait for
/// the write lock. apalis ends its worker for good on the first error and drops the steps in
/// flight (their leases then expire: each loses its attempt, ~15 s later), so a write lock held
/// past [`BUSY_TIMEOUT`] (a large database's persist, a checkpoint on a slow disk) must not
/// be one.
const JOBS_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections for apalis: its fetch, acknowledgements and heartbeats.
const JOBS_CONNECTIONS: u32 = 3;

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Readers.
    pool: SqlitePool,
    /// apalis's own job bookkeeping (see [`JOBS_BUSY_TIMEOUT`]).
    jobs: SqlitePool,
    /// Our writes, one at a time: SQLite has a single writer anyway, and waiting for this
    /// connection is a fair, async queue, where waiting for SQLite's lock is sleep-and-retry
    /// (up to `BUSY_TIMEOUT`, then an error).
    writer: SqlitePool,
    /// Signalled after a commit that enqueued a job, so the worker fetches it at once.
    wake: Arc<Notify>,
    /// One reconciliation sweep at a time.
    sweep: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    pub async fn connect(settings: &PoolSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(settings.url.expose_secret())?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it returns, so a webhook answered 200 survives
            // a power cut too, not only a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.clamp(2, MAX_READERS))
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options.clone());
        let jobs = SqlitePoolOptions::new()
            .max_connections(JOBS_CONNECTIONS)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options.clone().busy_timeout(JOBS_BUSY_TIMEOUT));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool, jobs, writer, wake: Arc::new(Notify::new()), sweep: Arc::default() })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The connections apalis works with.
    pub fn jobs_pool(&self) -> &SqlitePool {
        &self.jobs
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.jobs.close().await;
        self.pool.close().await;
    }

    /// What the worker waits on for new jobs.
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Tells the worker that a job was committed.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// A write transaction: holds SQLite's write lock from its first statement.
    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        migrator().run(&self.writer).await?;
        Ok(())
    }

    pub async fn is_ready(&self) -> StoreResult<bool> {
        let migrator = migrator();
        let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select version from {MIGRATIONS_TABLE} where success"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .all(|m| applied.contains(&m.version)))
    }
}

/// A time as this backend stores it: UTC, microseconds, fixed width
/// (`2026-11-29T10:37:29.123456Z`), so text comparison is time comparison.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Now, as stored.
pub(crate) fn now() -> String {
    ts(Utc::now())
}

/// `duration` from now, as stored.
pub(crate) fn from_now(duration: Duration) -> String {
    ts(Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX))
}

/// `duration` ago, as stored.
pub(crate) fn ago(duration: Duration) -> String {
    ts(Utc::now() - chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn stored_times_sort_as_text_in_time_order() {
        let a = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        let c = a + chrono::Duration::milliseconds(500);
        let d = a + chrono::Duration::seconds(1);
        let stored: Vec<String> = [a, b, c, d].into_iter().map(ts).collect();
        let mut sorted = stored.clone();
        sorted.sort();
        assert_eq!(stored, sorted);
        assert_eq!(stored[0], "2026-11-29T10:00:00.000000Z");
        assert_eq!(stored[0].len(), stored[3].len());
    }
}
