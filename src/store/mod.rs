//! All SQL lives here. The rest of the service calls the typed operations of [`Store`] (and,
//! inside a step's fenced transaction, of [`StoreTx`]); each backend keeps its SQL in its own
//! module: `pg` (PostgreSQL, production and scale-out) and `sqlite` (the embedded default, one
//! process). Both implement the same operations with the same meaning; the integration suite
//! runs against both.

pub mod jobs;
mod keys;
pub mod model;
pub mod pg;
mod refresh;
pub mod sqlite;
mod tx;

use std::time::Duration;

use secrecy::SecretString;

pub use model::*;
pub use tx::StoreTx;

use crate::ids::{NotionId, RunId, UserId};

/// A handle on the system of record. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Postgres(pg::PgStore),
    Sqlite(sqlite::SqliteStore),
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Postgres,
    Sqlite,
}

impl BackendKind {
    /// The backend a `DATABASE_URL` names, by its scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase())?;
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(BackendKind::Postgres),
            "sqlite" => Some(BackendKind::Sqlite),
            _ => None,
        }
    }
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
    /// The engine asked the store for something its own rules forbid (a bug): the transaction
    /// is rolled back rather than committed half-written, and the step's job is delivered
    /// again.
    #[error("store invariant broken: {0}")]
    Invariant(&'static str),
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
            // SQLite's codes are numbers that PostgreSQL's SQLSTATEs can look like (42501, a
            // missing privilege, ends in SQLITE_BUSY's byte): each backend's codes are read
            // only on its own errors.
            sqlx::Error::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                match db.code() {
                    Some(code) if sqlite_unavailable(&code) => StoreError::Unavailable(e),
                    _ => StoreError::Database(e),
                }
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // PostgreSQL. 08: connection exception; 57P0x: shutting down / cannot connect
                // now; 53000/53100/53300: the server is short of resources (disk full, too
                // many connections; not 53200/53400, which one statement can hit every time);
                // 40001/40P01: retry the transaction.
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || matches!(code, "53000" | "53100" | "53300")
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

/// Whether a SQLite result code (primary or extended, as sqlx reports it) means "try later":
/// SQLITE_BUSY (5) and SQLITE_LOCKED (6) (the busy timeout ran out: another writer held the
/// lock too long), SQLITE_NOMEM (7), SQLITE_READONLY (8) (e.g. the volume remounted read-only),
/// SQLITE_IOERR (10), SQLITE_FULL (13) and SQLITE_CANTOPEN (14) (the file or its WAL cannot be
/// opened, e.g. the volume is gone when the pool reconnects), with their extended codes.
fn sqlite_unavailable(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14))
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
    /// PostgreSQL ends a session that sits idle inside a transaction this long
    /// (`idle_in_transaction_session_timeout`), releasing its locks. A worker that hangs or
    /// loses the network mid-step would otherwise hold its run's row lock until the server
    /// notices the dead client (hours with default TCP keepalives), and the lease sweeper, which
    /// skips locked runs, would never take the run over. `None`: the server's setting.
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl Store {
    /// Opens the pool for the backend the URL names. Connections are made lazily, so a
    /// database that is down at start-up shows as "not ready" rather than a crash;
    /// [`Store::migrate`] waits for it.
    pub async fn connect(settings: &PoolSettings) -> StoreResult<Self> {
        use secrecy::ExposeSecret;
        let backend = match BackendKind::of_url(settings.url.expose_secret()) {
            Some(BackendKind::Sqlite) => Backend::Sqlite(sqlite::SqliteStore::connect(settings).await?),
            _ => Backend::Postgres(pg::PgStore::connect(settings).await?),
        };
        Ok(Self { backend })
    }

    pub fn from_pg_pool(pool: sqlx::PgPool) -> Self {
        Self { backend: Backend::Postgres(pg::PgStore::new(pool)) }
    }

    pub fn kind(&self) -> BackendKind {
        match &self.backend {
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// The PostgreSQL pool, when that is the backend (the job queue's wiring needs it).
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres(s) => Some(s.pool()),
            Backend::Sqlite(_) => None,
        }
    }

    /// The SQLite pool, when that is the backend.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.backend {
            Backend::Postgres(_) => None,
            Backend::Sqlite(s) => Some(s.pool()),
        }
    }

    /// The SQLite connections the step worker's apalis storage works with.
    pub fn sqlite_jobs_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.backend {
            Backend::Postgres(_) => None,
            Backend::Sqlite(s) => Some(s.jobs_pool()),
        }
    }

    /// What wakes the SQLite worker when a job is committed (PostgreSQL uses LISTEN/NOTIFY).
    pub fn sqlite_wake_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        match &self.backend {
            Backend::Postgres(_) => None,
            Backend::Sqlite(s) => Some(s.wake_signal()),
        }
    }

    /// Opens a transaction that holds the claimed run, if the claim still holds the lease.
    /// Writes made in it commit only together with the step's transition, and no other worker
    /// can take the step over while it is open.
    pub async fn begin_fenced(&self, claim: &ClaimedStep) -> StoreResult<Option<StoreTx>> {
        // An unwritten claim is fenced only by the transaction that locked its run.
        debug_assert!(claim.unwritten.is_none(), "an unwritten claim is recorded in its own transaction");
        Ok(match &self.backend {
            Backend::Postgres(s) => s.begin_fenced(claim).await?.map(|tx| StoreTx::postgres(tx, s.clone())),
            Backend::Sqlite(s) => s.begin_fenced(claim).await?.map(|tx| StoreTx::sqlite(tx, s.wake_signal())),
        })
    }

    /// Opens a transaction to record a step's outcome in (a step that ran outside any). On
    /// PostgreSQL it takes no lock first: the transition is fenced itself (it changes the run
    /// only under the claim's lease token, and says `LeaseLost` otherwise), which saves a
    /// statement per step. On SQLite it is [`Store::begin_fenced`] (one writer at a time).
    pub async fn begin_record(&self, claim: &ClaimedStep) -> StoreResult<Option<StoreTx>> {
        debug_assert!(claim.unwritten.is_none(), "an unwritten claim is recorded in its own transaction");
        Ok(match &self.backend {
            Backend::Postgres(s) => Some(StoreTx::postgres(s.pool().begin().await?, s.clone())),
            Backend::Sqlite(_) => self.begin_fenced(claim).await?,
        })
    }

    /// Claims the job's step (see [`Store::claim_step`]) in a transaction that stays open and
    /// holds the run, so a step that only touches the database runs and is recorded in the
    /// same transaction as its claim. Commit it at once to run the step outside it.
    ///
    /// `unwritten(step)`: on PostgreSQL, the claim of such a step (one that will run in this
    /// transaction) is not written but only locked, and written with its outcome (see
    /// [`ClaimedStep::unwritten`]). SQLite writes every claim at once.
    pub async fn claim_and_begin(
        &self,
        job: jobs::StepJob,
        owner: &str,
        lease: Duration,
        unwritten: fn(&str) -> bool,
    ) -> StoreResult<Option<(ClaimedStep, StoreTx)>> {
        Ok(match &self.backend {
            Backend::Postgres(s) => s
                .claim_and_begin(job, owner, lease, unwritten)
                .await?
                .map(|(claim, tx)| (claim, StoreTx::postgres(tx, s.clone()))),
            Backend::Sqlite(s) => s
                .claim_and_begin(job, owner, lease)
                .await?
                .map(|(claim, tx)| (claim, StoreTx::sqlite(tx, s.wake_signal()))),
        })
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Postgres(s) => s.pool().close().await,
            Backend::Sqlite(s) => s.close().await,
        }
    }
}

impl Store {
    /// Resumes a failed or cancelled run at the step it stopped at.
    pub async fn retry_run(&self, id: RunId, actor: &str) -> Result<(), ActionError> {
        match &self.backend {
            Backend::Postgres(s) => {
                s.retry_run(id, actor).await?;
                s.jobs_committed();
                Ok(())
            }
            Backend::Sqlite(s) => s.retry_run(id, actor).await,
        }
    }

    /// Cancels a run that has not finished. A waiting run stops at once; a running step's
    /// worker loses its lease, so its result is discarded. A sync waiting behind the cancelled
    /// one is queued to go on now: the workers are woken for it, as after a retry, instead of
    /// finding it at their next poll.
    pub async fn cancel_run(&self, id: RunId, actor: &str) -> Result<(), ActionError> {
        match &self.backend {
            Backend::Postgres(s) => {
                s.cancel_run(id, actor).await?;
                s.jobs_committed();
                Ok(())
            }
            Backend::Sqlite(s) => s.cancel_run(id, actor).await,
        }
    }

    /// Retries every failed run that matches (or only counts them, with `dry_run`). At most
    /// `limit` runs per call, oldest first, superseded syncs last. Returns (matched, retried); with `dry_run`, the
    /// runs that would be retried instead (every match but superseded syncs). One transaction
    /// per run: a run that cannot be retried (it changed meanwhile, or its content already has
    /// a debouncing sync) does not hold up the others.
    pub async fn retry_failed(
        &self,
        filter: &RunFilter,
        dry_run: bool,
        limit: i64,
        actor: &str,
    ) -> StoreResult<(Vec<RunId>, Vec<RunId>)> {
        let matched = match &self.backend {
            Backend::Postgres(s) => s.failed_run_ids(filter, limit).await?,
            Backend::Sqlite(s) => s.failed_run_ids(filter, limit).await?,
        };
        if dry_run {
            let would = matched.iter().filter(|(_, superseded)| !superseded).map(|(id, _)| *id).collect();
            return Ok((matched.into_iter().map(|(id, _)| id).collect(), would));
        }
        let mut retried = Vec::with_capacity(matched.len());
        // Superseded syncs are known already: each would only be refused (see `retry_run`).
        for (id, _) in matched.iter().filter(|(_, superseded)| !superseded) {
            match self.retry_run(*id, actor).await {
                Ok(()) => retried.push(*id),
                Err(ActionError::Store(e)) => return Err(e),
                Err(e) => tracing::info!(run_id = %id, reason = %e, "not retried"),
            }
        }
        Ok((matched.into_iter().map(|(id, _)| id).collect(), retried))
    }
}

/// Held while this process sweeps; no other process sweeps meanwhile.
pub enum SweepLock {
    Postgres(pg::reconcile::PgSweepLock),
    Sqlite(tokio::sync::OwnedMutexGuard<()>),
}

impl SweepLock {
    pub async fn release(self) -> StoreResult<()> {
        match self {
            SweepLock::Postgres(lock) => lock.release().await,
            SweepLock::Sqlite(guard) => {
                drop(guard);
                Ok(())
            }
        }
    }
}

/// Held while this process refreshes a user's Notion token: no other process refreshes that
/// user's token meanwhile (Notion may rotate the refresh token, so a second refresh with the
/// old one would be refused). The refresh reads and writes the token through it.
pub enum TokenRefreshLock {
    Postgres(pg::users::PgTokenRefreshLock),
    Sqlite(sqlite::users::SqliteTokenRefreshLock),
}

impl TokenRefreshLock {
    /// The user's encrypted Notion token and refresh token. `None`: no token at all.
    pub async fn credentials(&mut self) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
        match self {
            TokenRefreshLock::Postgres(lock) => lock.credentials().await,
            TokenRefreshLock::Sqlite(lock) => lock.credentials().await,
        }
    }

    /// Stores a refreshed pair if the stored token is still `read`. `false`: it changed
    /// meanwhile. `refresh: None` keeps the stored refresh token.
    pub async fn replace(&mut self, read: &[u8], token: &[u8], refresh: Option<&[u8]>) -> StoreResult<bool> {
        match self {
            TokenRefreshLock::Postgres(lock) => lock.replace(read, token, refresh).await,
            TokenRefreshLock::Sqlite(lock) => lock.replace(read, token, refresh).await,
        }
    }

    pub async fn release(self) -> StoreResult<()> {
        match self {
            TokenRefreshLock::Postgres(lock) => lock.release().await,
            TokenRefreshLock::Sqlite(_) => Ok(()),
        }
    }
}

/// Forwards each listed operation to the backend's method of the same name and signature.
macro_rules! delegate {
    ($( $(#[$attr:meta])* pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$attr])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.backend {
                        Backend::Postgres(s) => s.$name($($arg),*).await,
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    /// Applies our migrations (after the job queue's own, see `workflow::queue::setup`).
    /// Safe to run from many processes at once.
    pub async fn migrate(&self) -> StoreResult<()>;
    /// Readiness: the database answers and every migration we ship is applied.
    pub async fn is_ready(&self) -> StoreResult<bool>;

    // --- Webhook intake
    /// Stores an event and, if it is accepted, starts its event workflow and enqueues the
    /// run's first step, atomically. A duplicate (same dedupe key) inserts nothing at all.
    pub async fn record_event(&self, event: &NewEvent<'_>) -> StoreResult<IntakeOutcome>;
    /// Stores a verification token (encrypted) or notes that it was received again.
    pub async fn record_verification_token(&self, ciphertext: &[u8], token_sha256: &str) -> StoreResult<()>;
    /// The first token ever received: the signing key when none is configured.
    pub async fn first_verification_token(&self) -> StoreResult<Option<Vec<u8>>>;
    /// The most recently received token (what ops paste into Notion's UI), with when, and how
    /// many distinct tokens are stored.
    pub async fn latest_verification_token(&self) -> StoreResult<Option<(Vec<u8>, chrono::DateTime<chrono::Utc>, i64)>>;

    // --- Runs and step attempts
    /// Claims the current step of the job's run, if the job is still current (its `seq`
    /// matches) and the run is runnable: pending or waiting, or running under a lease that
    /// expired (its worker died).
    pub async fn claim_step(&self, job: jobs::StepJob, owner: &str, lease: Duration) -> StoreResult<Option<ClaimedStep>>;
    /// Enqueues `job` again, due after `delay`: for a job that failed on an unexpected
    /// database error, which would otherwise leave its run with no job at all. A repeat is
    /// harmless: claims are fenced by the run's state and dispatch sequence.
    pub async fn redeliver(&self, job: jobs::StepJob, delay: Duration) -> StoreResult<()>;
    /// The stored output of a step of a run (its result, or its saved progress).
    pub async fn step_output(&self, run_id: RunId, step: &str) -> StoreResult<Option<serde_json::Value>>;
    /// Extends the lease of a claimed step. `false`: the lease is gone (stop working on it).
    pub async fn heartbeat(&self, claim: &ClaimedStep, lease: Duration) -> StoreResult<bool>;
    /// Steps whose worker stopped heartbeating: runnable again with a fresh job.
    pub async fn redispatch_expired_leases(&self, limit: i64) -> StoreResult<Vec<RunId>>;

    // --- Users and subscriptions
    pub async fn create_user(&self, email: &str) -> Result<UserRow, UserError>;
    pub async fn user(&self, id: UserId) -> StoreResult<Option<UserRow>>;
    /// Stores an (already encrypted) Notion token for the user. `false`: no such user.
    pub async fn set_notion_token(&self, id: UserId, ciphertext: &[u8], workspace: &NotionWorkspace) -> StoreResult<bool>;
    pub async fn notion_token(&self, id: UserId) -> StoreResult<Option<StoredNotionToken>>;
    /// Waits for the lock on refreshing `id`'s Notion token across processes.
    pub async fn token_refresh_lock(&self, id: UserId) -> StoreResult<TokenRefreshLock>;
    /// Subscribes the user and starts the first sync, in one transaction.
    pub async fn subscribe(&self, user_id: UserId, notion_id: &NotionId, kind: &str, window: DebounceWindow) -> Result<(SubscriptionRow, RunId), UserError>;
    pub async fn subscriptions(&self, user_id: UserId) -> StoreResult<Vec<SubscriptionRow>>;
    /// `false`: there was no such subscription.
    pub async fn unsubscribe(&self, user_id: UserId, notion_id: &NotionId) -> StoreResult<bool>;
    /// Starts (or joins) a sync without debounce: a manual sync.
    pub async fn start_manual_sync(&self, target: &SyncTarget, window: DebounceWindow) -> StoreResult<RunId>;

    // --- OAuth
    /// Records a state issued to `user`, valid until `expires_at`. `false`: no such user.
    pub async fn issue_oauth_state(&self, nonce: uuid::Uuid, user: UserId, expires_at: chrono::DateTime<chrono::Utc>) -> StoreResult<bool>;
    /// Uses up the state `nonce` issued to `user`: `true` exactly once, for an unexpired state.
    pub async fn consume_oauth_state(&self, nonce: uuid::Uuid, user: UserId) -> StoreResult<bool>;

    // --- Ops
    /// Runs matching `filter`, newest first, after `cursor`; at most `limit`.
    pub async fn list_runs(&self, filter: &RunFilter, cursor: Option<RunCursor>, limit: i64) -> StoreResult<Vec<RunRow>>;
    pub async fn run_detail(&self, id: RunId) -> StoreResult<Option<RunDetail>>;
    pub async fn queue_stats(&self) -> StoreResult<QueueStats>;

    // --- Flashcards
    /// The content hash of the last successful sync of (user, content).
    pub async fn last_content_hash(&self, user: UserId, notion_id: &str) -> StoreResult<Option<String>>;
    /// A user's live cards, oldest first, optionally only those from one page or database,
    /// after `cursor` (created_at, id); at most `limit`.
    pub async fn live_cards(&self, user: UserId, notion_id: Option<&str>, cursor: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>, limit: i64) -> StoreResult<Vec<CardRow>>;
    /// Sync facts about `notion_id` across users.
    pub async fn sync_status(&self, notion_id: &str) -> StoreResult<SyncStatus>;

    // --- The per-user rate limiter
    /// Counts up to `count` requests against `user`'s limit of `limit` per `window`, as many as
    /// there are free slots; with none free, the caller takes a place (of `count` slots) in
    /// the user's line of waiters and is told its turn. `count` 0: one slot if free, and a
    /// refusal takes no place (the caller will not come back).
    pub async fn acquire_rate_limit_slots(&self, user: UserId, limit: u32, window: Duration, count: u32) -> StoreResult<Grant>;
    /// The user's stored Notion token and, when there is one, up to `count` slots as
    /// [`Store::acquire_rate_limit_slots`] takes them (one round trip on PostgreSQL).
    pub async fn notion_token_and_slots(&self, user: UserId, limit: u32, window: Duration, count: u32) -> StoreResult<Option<(StoredNotionToken, Grant)>>;
    /// Blocks `user`'s limiter for `for_at_least` (Notion answered 429 with Retry-After).
    pub async fn block_rate_limit(&self, user: UserId, for_at_least: Duration) -> StoreResult<chrono::DateTime<chrono::Utc>>;

    // --- Reconciliation
    /// Takes the sweep lock if no other sweeper holds it.
    pub async fn try_sweep_lock(&self) -> StoreResult<Option<SweepLock>>;
    /// Subscriptions to compare with Notion, longest unchecked first.
    pub async fn due_subscriptions(&self, min_age: Duration, skip_users: &[UserId], limit: i64) -> StoreResult<Vec<DueSubscription>>;
    /// For each of `notion_ids` that a sync of `user`'s has read or is about to read: when the
    /// latest such sync started reading, at the earliest (now, for a sync still in debounce or
    /// fetching: it reads everything edited before now). Without the in-flight syncs, a sweep
    /// during a slow sync would start another sync of the same edit.
    pub async fn last_read_at(&self, user: UserId, notion_ids: &[String]) -> StoreResult<std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>;
    /// Records that the subscription was checked and starts (or joins) a sync for each target.
    pub async fn finish_reconcile(&self, subscription: uuid::Uuid, targets: &[SyncTarget], window: DebounceWindow) -> StoreResult<Vec<RunId>>;

    // --- Secrets at rest (for rotating TOKEN_ENCRYPTION_KEY)
    /// The encrypted values at rest, with where they live, at most `limit` (`i64::MAX`: all).
    pub async fn encrypted_secrets(&self, limit: i64) -> StoreResult<Vec<(SecretRow, Vec<u8>)>>;
    /// Replaces one encrypted value, if it is still `old`. `false`: it changed meanwhile.
    pub async fn replace_encrypted_secret(&self, row: SecretRow, old: &[u8], new: &[u8]) -> StoreResult<bool>;
    /// The service secret `name` (encrypted) as stored: `generated` if none was, which is
    /// stored now; else the one stored first, also by a concurrent first start.
    pub async fn service_secret(&self, name: &str, generated: &[u8]) -> StoreResult<Vec<u8>>;

    // --- Retention
    /// Deletes job rows that finished more than `grace` ago.
    pub async fn prune_finished_jobs(&self, grace: Duration) -> StoreResult<u64>;
    /// Deletes finished runs (with their steps, attempts and links) and webhook events older
    /// than `retention`; an event only once no run that stands for it is left.
    pub async fn prune_history(&self, retention: Duration) -> StoreResult<Pruned>;
    /// Deletes apalis's rows of workers not seen for `older_than` that no job row refers to:
    /// every process start (and every worker restart after a database outage) registers a
    /// worker under a new name, and apalis never removes them.
    pub async fn prune_gone_workers(&self, older_than: Duration) -> StoreResult<u64>;
}
