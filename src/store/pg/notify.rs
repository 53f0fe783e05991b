//! Wakes the step workers of every process when this process has committed step jobs.
//!
//! apalis-postgres's workers LISTEN on `apalis::job::insert` and fetch when a notification for
//! their queue arrives (they only read `job_type` and `id` from its JSON payload). apalis's own
//! row trigger sends one from inside every inserting transaction, and PostgreSQL lets only one
//! notifying transaction commit at a time (it holds a database-wide lock from before the commit
//! record is flushed until after), so every transaction that enqueued a step waited for the
//! others' disk flushes one by one. Our jobs are exempt from that trigger (migration
//! `..._notify_after_commit.sql`); instead, after such a commit, [`JobNotifier::notify`] asks a
//! background task to send one notification on a connection of its own, with
//! `synchronous_commit = off` (a notification carries no data: the job rows were already
//! committed durably by the transaction that inserted them). Requests that arrive while one
//! is being sent are coalesced into the next one. A lost notification (a broken connection)
//! costs at most the workers' poll interval, as before.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};
use tokio::sync::Notify;

use crate::store::jobs::STEP_QUEUE;

/// The channel apalis-postgres 1.0 listens on.
const CHANNEL: &str = "apalis::job::insert";

#[derive(Debug)]
pub struct JobNotifier {
    options: PgConnectOptions,
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

#[derive(Debug, Default)]
struct Shared {
    wake: Notify,
    closed: AtomicBool,
}

impl JobNotifier {
    /// Connects (lazily, on the first notification) with the pool's options.
    pub fn new(options: &PgConnectOptions) -> Self {
        let options = options.clone().options([("synchronous_commit", "off")]).disable_statement_logging();
        Self { options, shared: Arc::default(), started: OnceLock::new() }
    }

    /// Step jobs were committed: wake the workers soon. Never waits.
    pub fn notify(&self) {
        self.started.get_or_init(|| {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(send_notifications(self.options.clone(), self.shared.clone()));
            }
        });
        self.shared.wake.notify_one();
    }
}

impl Drop for JobNotifier {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

/// Sends one notification per wake-up, until the notifier is dropped.
async fn send_notifications(options: PgConnectOptions, shared: Arc<Shared>) {
    let mut conn: Option<PgConnection> = None;
    loop {
        shared.wake.notified().await;
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
        if conn.is_none() {
            match PgConnection::connect_with(&options).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "job notifier cannot connect; workers poll meanwhile");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let payload = format!(r#"{{"job_type":"{STEP_QUEUE}","id":"{}"}}"#, ulid::Ulid::new());
        let sent = sqlx::query("select pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&mut *c).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "job notification failed; workers poll meanwhile");
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}
