//! A fresh database per test, on either backend, removed afterwards.
//!
//! The suite runs against SQLite always, and against PostgreSQL when `TEST_DATABASE_URL` names
//! a server (CI sets it, and `TEST_REQUIRE_POSTGRES=1` so that a missing server fails instead of
//! skipping). Scenarios written with [`conformance!`](crate::conformance) run on both; the few
//! that need PostgreSQL itself (several processes on one database, its query plans, a proxy in
//! front of its port) start with [`postgres_or_skip`].

use std::future::Future;

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, SqlitePool};

use super::app::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

tokio::task_local! {
    /// The backend the current scenario runs on (set by `conformance!`).
    static BACKEND: Backend;
}

/// The backend of the running scenario: the one `conformance!` chose; elsewhere PostgreSQL
/// when there is a server, else SQLite (so every test runs on a machine with no database).
pub fn current_backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(if server_url().is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    })
}

/// Runs `scenario` with `backend` as the current one; a PostgreSQL run without a server is
/// skipped (see [`postgres_or_skip`]).
pub async fn run_on(backend: Backend, scenario: impl Future<Output = ()>) {
    if backend == Backend::Postgres && !postgres_or_skip() {
        return;
    }
    BACKEND.scope(backend, scenario).await
}

/// The PostgreSQL server tests create their databases on, if there is one.
pub fn server_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.trim().is_empty())
}

/// `true` when PostgreSQL tests can run. Without `TEST_DATABASE_URL` they are skipped (with a
/// note), unless `TEST_REQUIRE_POSTGRES` is set, as in CI: then the missing server is a failure.
pub fn postgres_or_skip() -> bool {
    if server_url().is_some() {
        return true;
    }
    if std::env::var("TEST_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("TEST_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not");
    }
    eprintln!("skipped on PostgreSQL: TEST_DATABASE_URL is not set");
    false
}

/// Replaces the database name in a postgres URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A test's own database: a PostgreSQL database created on the test server (dropped
/// afterwards), or a SQLite file in a temporary directory.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    name: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A fresh database on the current backend.
    pub async fn create() -> Self {
        match current_backend() {
            Backend::Postgres => Self::create_postgres().await,
            Backend::Sqlite => Self::create_sqlite(),
        }
    }

    pub async fn create_postgres() -> Self {
        let server = server_url().expect("PostgreSQL tests need TEST_DATABASE_URL (see postgres_or_skip)");
        let name = format!("cognie_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server).await.expect("connect to TEST_DATABASE_URL");
        // The name is ours (a uuid), not input.
        sqlx::query(AssertSqlSafe(format!(r#"create database "{name}""#)))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let url = with_database(&server, &name);
        Self { backend: Backend::Postgres, url, name, _dir: None }
    }

    pub fn create_sqlite() -> Self {
        let dir = TempDir::new();
        let url = format!("sqlite://{}/test.db", dir.path());
        Self { backend: Backend::Sqlite, url, name: String::new(), _dir: Some(dir) }
    }

    /// The service's store on this database, migrated (the job queue's tables included).
    pub async fn store(&self) -> cognie_sync::store::Store {
        let settings = cognie_sync::store::PoolSettings {
            url: self.url.clone().into(),
            max_connections: 8,
            acquire_timeout: std::time::Duration::from_secs(30),
            create_database: true,
            idle_in_transaction_timeout: None,
        };
        let store = cognie_sync::store::Store::connect(&settings).await.expect("open the store");
        cognie_sync::workflow::queue::setup(&store).await.expect("the job queue's migrations");
        store.migrate().await.expect("migrate");
        store
    }

    /// A pool on this database, for the test's own assertions.
    pub async fn connect(&self) -> Db {
        match self.backend {
            Backend::Postgres => {
                Db::Pg(PgPool::connect(&self.url).await.expect("connect to the test database"))
            }
            Backend::Sqlite => Db::Sqlite(
                SqlitePool::connect_with(
                    self.url
                        .parse::<sqlx::sqlite::SqliteConnectOptions>()
                        .expect("sqlite url")
                        .busy_timeout(std::time::Duration::from_secs(10)),
                )
                .await
                .expect("open the test database"),
            ),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let Some(server) = server_url() else { return };
        let name = self.name.clone();
        // Drop runs outside async code; use a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        r#"drop database if exists "{name}" with (force)"#
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A pool on a test's database. Assertions that read the same on both backends go through
/// [`on_db!`](crate::on_db); PostgreSQL-only tests use [`Db::pg`].
#[derive(Clone)]
pub enum Db {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    /// The PostgreSQL pool of a PostgreSQL-only test.
    pub fn pg(&self) -> &PgPool {
        match self {
            Db::Pg(pool) => pool,
            Db::Sqlite(_) => panic!("this test runs on PostgreSQL only"),
        }
    }

    /// SQL for "now" in the backend's time format.
    pub fn now_sql(&self) -> &'static str {
        match self {
            Db::Pg(_) => "now()",
            Db::Sqlite(_) => "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')",
        }
    }

    /// SQL for `column` moved by `minutes` (negative: into the past).
    pub fn shifted_sql(&self, column: &str, minutes: i64) -> String {
        match self {
            Db::Pg(_) => format!("{column} + make_interval(mins => {minutes})"),
            Db::Sqlite(_) => format!("strftime('%Y-%m-%dT%H:%M:%f000Z', {column}, '{minutes:+} minutes')"),
        }
    }

    /// SQL that counts this backend's queued step jobs (apalis's job table).
    pub fn step_jobs_sql(&self) -> &'static str {
        match self {
            Db::Pg(_) => "select count(*) from apalis.jobs where job_type = 'cognie_sync.steps'",
            Db::Sqlite(_) => "select count(*) from Jobs where job_type = 'cognie_sync.steps'",
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Pg(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Runs the same sqlx expression on whichever pool `db` holds: `on_db!(app.db, |pool| ...)`.
/// The SQL must read the same on both backends (no casts, no PostgreSQL functions).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db {
            $crate::support::db::Db::Pg($pool) => $body,
            $crate::support::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// A scenario that must hold on both backends: becomes the tests `<name>::sqlite` and
/// `<name>::postgres`.
#[macro_export]
macro_rules! conformance {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario() $body

            #[tokio::test]
            async fn sqlite() {
                $crate::support::db::run_on($crate::support::db::Backend::Sqlite, scenario()).await
            }

            #[tokio::test]
            async fn postgres() {
                $crate::support::db::run_on($crate::support::db::Backend::Postgres, scenario()).await
            }
        }
    };
}
