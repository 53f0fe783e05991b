//! A step's fenced transaction, whichever backend holds it: the operations a transactional
//! step (discover_users, debounce, persist) and the engine's transition make inside it, all
//! committed together or not at all.

use chrono::{DateTime, Utc};

use super::{StoreResult, model::*, pg, sqlite};
use crate::ids::{EventId, RunId, UserId};

/// An open transaction that holds a claimed run (see [`super::Store::begin_fenced`]). Dropping
/// it rolls back.
pub enum StoreTx {
    /// With what wakes the workers once the transaction's jobs are committed.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>, std::sync::Arc<pg::notify::JobNotifier>),
    /// With what wakes the worker once the transaction's jobs are committed.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, std::sync::Arc<tokio::sync::Notify>),
}

impl StoreTx {
    pub async fn commit(self) -> StoreResult<()> {
        match self {
            StoreTx::Postgres(tx, notifier) => {
                tx.commit().await?;
                notifier.notify();
            }
            StoreTx::Sqlite(tx, wake) => {
                tx.commit().await?;
                wake.notify_one();
            }
        }
        Ok(())
    }

    /// Commits a transaction that enqueued no job that is due now, so there is nothing to
    /// wake the workers for (e.g. a step that claimed the run's next step for its own worker).
    pub async fn commit_without_jobs(self) -> StoreResult<()> {
        match self {
            StoreTx::Postgres(tx, _) => tx.commit().await?,
            StoreTx::Sqlite(tx, _) => tx.commit().await?,
        }
        Ok(())
    }
}

/// Forwards each listed operation to the backend module's function of the same name, which
/// takes the transaction's connection first.
macro_rules! delegate_tx {
    ($( $(#[$attr:meta])* pub async fn $module:ident::$name:ident(&mut self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl StoreTx {
            $(
                $(#[$attr])*
                pub async fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                    match self {
                        StoreTx::Postgres(tx, _) => pg::$module::$name(&mut **tx $(, $arg)*).await,
                        StoreTx::Sqlite(tx, _) => sqlite::$module::$name(&mut **tx $(, $arg)*).await,
                    }
                }
            )*
        }
    };
}

delegate_tx! {
    /// Applies a step's transition: the run's and the step's new state, the attempt's history,
    /// and the job that comes next. `LeaseLost` when the claim no longer holds the run.
    pub async fn runs::apply_transition(&mut self, claim: &ClaimedStep, transition: &Transition) -> StoreResult<Fenced>;
    /// The `output` of a step of a run, for the steps after it.
    pub async fn runs::step_output(&mut self, run_id: RunId, step: &str) -> StoreResult<Option<serde_json::Value>>;

    /// What a webhook event touched, as stored at intake.
    pub async fn sync::event_target(&mut self, event_id: EventId) -> StoreResult<Option<EventTarget>>;
    /// Everyone subscribed to what the event touched, and what each of them must re-sync.
    pub async fn sync::subscribers(&mut self, target: &EventTarget) -> StoreResult<Vec<SyncTarget>>;
    /// Starts the sync for `target`, or joins the one already collecting events in debounce.
    pub async fn sync::start_or_join_sync(&mut self, target: &SyncTarget, trigger: SyncTrigger, event_id: Option<EventId>, parent_id: Option<RunId>, window: DebounceWindow) -> StoreResult<RunId>;
    /// The debounce deadline of a sync run, and whether an earlier sync of the same content is
    /// still past debounce and unfinished (this one must run after it).
    pub async fn sync::debounce_state(&mut self, run_id: RunId) -> StoreResult<(Option<DateTime<Utc>>, bool)>;
    /// A sync of (user, content) ended: wake the next one, which may be waiting for it.
    pub async fn sync::wake_next_sync(&mut self, user_id: UserId, notion_id: &str) -> StoreResult<()>;
    /// How many webhook events a run stands for.
    pub async fn sync::coalesced_event_count(&mut self, run_id: RunId) -> StoreResult<i64>;
    /// If another sync of the same content is collecting events in debounce, moves this run's
    /// events onto it and returns its id.
    pub async fn sync::merge_into_other_debouncing_sync(&mut self, run_id: RunId) -> StoreResult<Option<RunId>>;

    /// Upserts a sync's cards and retires those in its scope whose source is gone.
    pub async fn flashcards::persist_cards(&mut self, user: UserId, run_id: RunId, scope: &SyncScope, cards: &[NewCard]) -> StoreResult<PersistCounts>;
    /// Records a successful sync: its content hash and time.
    pub async fn flashcards::record_sync(&mut self, user: UserId, notion_id: &str, run_id: RunId, content_hash: &str, data_source_ids: &[String]) -> StoreResult<()>;
}
