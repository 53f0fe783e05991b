//! A step's fenced transaction, whichever backend holds it: the operations a transactional
//! step (discover_users, debounce, persist, and generate with the local generator) and the
//! engine's transition make inside it, all committed together or not at all.

use chrono::{DateTime, Utc};

use super::{StoreResult, jobs::StepJob, model::*, pg, sqlite};
use crate::ids::{EventId, RunId, UserId};

/// An open transaction that holds a claimed run (see [`super::Store::begin_fenced`]). Dropping
/// it rolls back.
pub struct StoreTx {
    conn: TxConn,
    handoff: Handoff,
    /// Whether [`StoreTx::enqueue`] added a job that is due now: its commit must wake the
    /// workers, whatever the engine's path.
    enqueued_due: bool,
}

enum TxConn {
    /// With what wakes the workers once the transaction's jobs are committed.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>, std::sync::Arc<pg::notify::JobNotifier>),
    /// With what wakes the worker once the transaction's jobs are committed.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, std::sync::Arc<tokio::sync::Notify>),
}

/// Whether a sync that a step starts in this transaction, due at once, is left for the
/// engine to claim on the same transaction instead of being queued (see
/// [`StoreTx::offer_handoff`]).
enum Handoff {
    Off,
    Offered,
    Deferred(StepJob),
}

impl StoreTx {
    pub(super) fn postgres(
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        notifier: std::sync::Arc<pg::notify::JobNotifier>,
    ) -> Self {
        Self { conn: TxConn::Postgres(tx, notifier), handoff: Handoff::Off, enqueued_due: false }
    }

    pub(super) fn sqlite(
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Self {
        Self { conn: TxConn::Sqlite(tx, wake), handoff: Handoff::Off, enqueued_due: false }
    }

    /// Lets the first sync started in this transaction that is due at once go without a job:
    /// [`StoreTx::take_handoff`] returns it, for the engine to claim here and run itself (no
    /// trip through the queue). A job not taken is enqueued at commit, as without the offer.
    pub fn offer_handoff(&mut self) {
        if matches!(self.handoff, Handoff::Off) {
            self.handoff = Handoff::Offered;
        }
    }

    /// The job of the sync left to the engine (see [`StoreTx::offer_handoff`]), if any: the
    /// caller must now claim its run on this transaction or enqueue it ([`StoreTx::enqueue`]).
    pub fn take_handoff(&mut self) -> Option<StepJob> {
        match std::mem::replace(&mut self.handoff, Handoff::Off) {
            Handoff::Deferred(job) => Some(job),
            _ => None,
        }
    }

    /// Starts the sync for `target`, or joins the one already collecting events in debounce,
    /// and enqueues its job (unless it is handed off: see [`StoreTx::offer_handoff`]).
    pub async fn start_or_join_sync(
        &mut self,
        target: &SyncTarget,
        trigger: SyncTrigger,
        event_id: Option<EventId>,
        parent_id: Option<RunId>,
        window: DebounceWindow,
    ) -> StoreResult<RunId> {
        let started = match &mut self.conn {
            TxConn::Postgres(tx, _) => {
                pg::sync::start_or_join(tx, target, trigger, event_id, parent_id, window).await?
            }
            TxConn::Sqlite(tx, _) => {
                sqlite::sync::start_or_join(tx, target, trigger, event_id, parent_id, window).await?
            }
        };
        if matches!(self.handoff, Handoff::Offered) && started.due <= Utc::now() {
            self.handoff = Handoff::Deferred(started.job);
        } else {
            self.enqueue(started.job, (started.due - Utc::now()).to_std().unwrap_or_default()).await?;
        }
        Ok(started.run_id)
    }

    /// Enqueues a step job due after `delay`.
    pub async fn enqueue(&mut self, job: StepJob, delay: std::time::Duration) -> StoreResult<()> {
        self.enqueued_due |= delay.is_zero();
        match &mut self.conn {
            TxConn::Postgres(tx, _) => pg::jobs::enqueue_job(tx, job, delay).await,
            TxConn::Sqlite(tx, _) => sqlite::jobs::enqueue_job(tx, job, delay).await,
        }
    }

    /// Claims the job's step on this transaction (see [`super::Store::claim_and_begin`], also
    /// for `unwritten`).
    pub async fn claim_step(
        &mut self,
        job: StepJob,
        owner: &str,
        lease: std::time::Duration,
        unwritten: fn(&str) -> bool,
    ) -> StoreResult<Option<ClaimedStep>> {
        match &mut self.conn {
            TxConn::Postgres(tx, _) => pg::runs::claim_step_in_tx(tx, job, owner, lease, unwritten).await,
            TxConn::Sqlite(tx, _) => sqlite::runs::claim_step(tx, job, owner, lease).await,
        }
    }

    pub async fn commit(mut self) -> StoreResult<()> {
        self.enqueue_handoff_left().await?;
        match self.conn {
            TxConn::Postgres(tx, notifier) => {
                tx.commit().await?;
                notifier.notify();
            }
            TxConn::Sqlite(tx, wake) => {
                tx.commit().await?;
                wake.notify_one();
            }
        }
        Ok(())
    }

    /// Commits a transaction that the engine enqueued no job in that is due now, so there is
    /// nothing to wake the workers for (e.g. a step that claimed the run's next step for its
    /// own worker); the workers are still woken for any due job [`StoreTx::enqueue`] added.
    pub async fn commit_without_jobs(self) -> StoreResult<()> {
        if self.enqueued_due || matches!(self.handoff, Handoff::Deferred(_)) {
            return self.commit().await;
        }
        match self.conn {
            TxConn::Postgres(tx, _) => tx.commit().await?,
            TxConn::Sqlite(tx, _) => tx.commit().await?,
        }
        Ok(())
    }

    /// A handed-off sync that nobody claimed still gets its job: a run is never left without.
    async fn enqueue_handoff_left(&mut self) -> StoreResult<()> {
        match self.take_handoff() {
            Some(job) => self.enqueue(job, std::time::Duration::ZERO).await,
            None => Ok(()),
        }
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
                    match &mut self.conn {
                        TxConn::Postgres(tx, _) => pg::$module::$name(&mut **tx $(, $arg)*).await,
                        TxConn::Sqlite(tx, _) => sqlite::$module::$name(&mut **tx $(, $arg)*).await,
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
    /// The content hash of the last successful sync of (user, content).
    pub async fn flashcards::last_content_hash(&mut self, user: UserId, notion_id: &str) -> StoreResult<Option<String>>;
    /// Records a successful sync: its content hash and time.
    pub async fn flashcards::record_sync(&mut self, user: UserId, notion_id: &str, run_id: RunId, content_hash: &str, data_source_ids: &[String]) -> StoreResult<()>;
}
