//! A step's fenced transaction, whichever backend holds it: the operations a transactional
//! step (discover_users, debounce, persist, and generate with the local generator) and the
//! engine's transition make inside it, all committed together or not at all.

use chrono::Utc;

use super::{StoreError, StoreResult, jobs::StepJob, model::*, pg, sqlite};
use crate::ids::{EventId, RunId, UserId};

/// An open transaction that holds a claimed run (see [`super::Store::begin_fenced`]). Dropping
/// it rolls back.
pub struct StoreTx {
    conn: TxConn,
    handoff: Handoff,
    /// Whether [`StoreTx::enqueue`] added a job that is due now: its commit must wake the
    /// workers, whatever the engine's path.
    enqueued_due: bool,
    /// Successes recorded by [`StoreTx::continue_in_tx`] and not written yet.
    chained: Vec<ChainedSuccess>,
    /// A sync this transaction found blocked behind an earlier one (see
    /// [`StoreTx::debounce_state`]): checked again once committed.
    blocked_sync: Option<RunId>,
}

enum TxConn {
    /// With the store it came from: what wakes the workers once the transaction's jobs are
    /// committed, and the pool for what must follow the commit.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>, pg::PgStore),
    /// With what wakes the worker once the transaction's jobs are committed.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, std::sync::Arc<tokio::sync::Notify>),
}

/// Whether a sync that a step starts in this transaction, due at once, is left for the
/// engine to claim on the same transaction instead of being queued (see
/// [`StoreTx::offer_handoff`]).
enum Handoff {
    Off,
    Offered,
    Deferred(HandedSync),
}

/// A sync started in a transaction and left to the engine to claim on it (see
/// [`StoreTx::offer_handoff`]).
#[derive(Debug)]
pub struct HandedSync {
    job: StepJob,
    target: SyncTarget,
    /// The run's attempts of its debounce step so far.
    attempt: i32,
}

impl HandedSync {
    /// Its job, to enqueue when the engine does not claim it.
    pub fn job(&self) -> StepJob {
        self.job
    }
}

impl StoreTx {
    pub(super) fn postgres(tx: sqlx::Transaction<'static, sqlx::Postgres>, store: pg::PgStore) -> Self {
        Self {
            conn: TxConn::Postgres(tx, store),
            handoff: Handoff::Off,
            enqueued_due: false,
            chained: Vec::new(),
            blocked_sync: None,
        }
    }

    pub(super) fn sqlite(
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            conn: TxConn::Sqlite(tx, wake),
            handoff: Handoff::Off,
            enqueued_due: false,
            chained: Vec::new(),
            blocked_sync: None,
        }
    }

    /// Lets the first sync started in this transaction that is due at once go without a job:
    /// [`StoreTx::take_handoff`] returns it, for the engine to claim here and run itself (no
    /// trip through the queue). A job not taken is enqueued at commit, as without the offer.
    pub fn offer_handoff(&mut self) {
        if matches!(self.handoff, Handoff::Off) {
            self.handoff = Handoff::Offered;
        }
    }

    /// The sync left to the engine (see [`StoreTx::offer_handoff`]), if any: the caller must
    /// now claim its run on this transaction ([`StoreTx::claim_handed_off`]) or enqueue its job
    /// ([`StoreTx::enqueue`]).
    pub fn take_handoff(&mut self) -> Option<HandedSync> {
        match std::mem::replace(&mut self.handoff, Handoff::Off) {
            Handoff::Deferred(handed) => Some(handed),
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
            let target = target.clone();
            self.handoff =
                Handoff::Deferred(HandedSync { job: started.job, target, attempt: started.attempt });
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

    /// Claims the handed-off sync's first step on this transaction (see
    /// [`super::Store::claim_and_begin`], also for `unwritten`).
    ///
    /// On PostgreSQL, when that step (debounce) runs in this transaction, nothing needs to be
    /// read or written for the claim: this transaction created or joined the run a moment ago,
    /// so it holds the run's row lock and knows its state (waiting, in debounce, at the job's
    /// sequence number), and the step's transition writes claim and outcome at once.
    pub async fn claim_handed_off(
        &mut self,
        handed: &HandedSync,
        owner: &str,
        lease: std::time::Duration,
        unwritten: fn(&str) -> bool,
    ) -> StoreResult<Option<ClaimedStep>> {
        // As `start_or_join_sync` creates it (its SQL names the same workflow and step).
        const FIRST_STEP: &str = "debounce";
        match &mut self.conn {
            TxConn::Postgres(..) if unwritten(FIRST_STEP) => Ok(Some(ClaimedStep {
                run_id: handed.job.run_id,
                workflow: "notion_sync".to_owned(),
                step: FIRST_STEP.to_owned(),
                attempt: handed.attempt + 1,
                lease_token: uuid::Uuid::new_v4(),
                user_id: Some(handed.target.user_id),
                notion_id: Some(handed.target.notion_id.clone()),
                // The kind it was started with: a Notion id names a page or a database, never
                // both, so a run joined for the same id has the same kind.
                notion_kind: Some(handed.target.kind.clone()),
                event_id: None,
                event: None,
                known_outputs: Default::default(),
                unwritten: Some(owner.to_owned()),
            })),
            TxConn::Postgres(tx, _) => {
                pg::runs::claim_step_in_tx(tx, handed.job, owner, lease, unwritten).await
            }
            TxConn::Sqlite(tx, _) => sqlite::runs::claim_step(tx, handed.job, owner, lease).await,
        }
    }

    /// Applies a step's transition: the run's and the step's new state, the attempt's history,
    /// and the job that comes next; with them, the successes that [`StoreTx::continue_in_tx`]
    /// left unwritten. `LeaseLost` when the claim no longer holds the run.
    pub async fn apply_transition(
        &mut self,
        claim: &ClaimedStep,
        transition: &Transition,
    ) -> StoreResult<Fenced> {
        let chained = std::mem::take(&mut self.chained);
        match &mut self.conn {
            TxConn::Postgres(tx, _) => pg::runs::apply_transition(tx, claim, transition, &chained).await,
            TxConn::Sqlite(tx, _) => {
                debug_assert!(chained.is_empty(), "SQLite writes each transition at once");
                sqlite::runs::apply_transition(tx, claim, transition).await
            }
        }
    }

    /// Records that the claimed step succeeded and its run goes on, in this transaction, with
    /// the step that `transition` (a `Continue`) claims for this worker.
    ///
    /// On PostgreSQL the success is not written now but with the next transition applied in
    /// this transaction, in the same statement ([`Continued::Deferred`]: the next step's claim
    /// is then unwritten too): a chain of steps recorded in one transaction (fetch's outcome,
    /// generate, persist) writes the run's row once instead of once a step. The run's row is
    /// locked now (unless this transaction holds it already: an unwritten claim), so the lease
    /// is checked here as the transition would have, and nobody can take the run over before
    /// the transaction ends. A transaction dropped before that writes nothing, as before.
    /// SQLite writes the transition at once ([`Continued::Written`]).
    pub async fn continue_in_tx(
        &mut self,
        claim: &ClaimedStep,
        transition: &Transition,
    ) -> StoreResult<Continued> {
        let Transition::Continue { output, owner, .. } = transition else {
            unreachable!("only a Continue goes on in its transaction");
        };
        let fenced = match &mut self.conn {
            TxConn::Postgres(..) if claim.unwritten.is_some() => Fenced::Applied,
            TxConn::Postgres(tx, _) => pg::runs::lock_claimed(tx, claim).await?,
            TxConn::Sqlite(..) => {
                return Ok(match self.apply_transition(claim, transition).await? {
                    Fenced::Applied => Continued::Written,
                    Fenced::LeaseLost => Continued::LeaseLost,
                });
            }
        };
        if fenced == Fenced::LeaseLost {
            return Ok(Continued::LeaseLost);
        }
        self.chained.push(ChainedSuccess {
            step: claim.step.clone(),
            output: output.clone(),
            lease_token: claim.lease_token,
            // The worker that goes on with the run is the one that holds it.
            worker: owner.clone(),
            claim_written: claim.unwritten.is_none(),
        });
        Ok(Continued::Deferred)
    }

    pub async fn commit(mut self) -> StoreResult<()> {
        self.check_no_chained_pending()?;
        self.enqueue_handoff_left().await?;
        match self.conn {
            TxConn::Postgres(tx, store) => {
                tx.commit().await?;
                store.jobs_committed();
                recheck_blocked_sync(&store, self.blocked_sync).await;
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
        self.check_no_chained_pending()?;
        match self.conn {
            TxConn::Postgres(tx, store) => {
                tx.commit().await?;
                recheck_blocked_sync(&store, self.blocked_sync).await;
            }
            TxConn::Sqlite(tx, _) => tx.commit().await?,
        }
        Ok(())
    }

    /// Where a sync run stands in its debounce step: its deadline, whether an earlier sync of
    /// the same content must end first, how many events it stands for (one statement).
    ///
    /// A blocked sync is woken by the earlier one's end, but only once its wait is committed:
    /// an end that commits between this read and this transaction's commit finds it still
    /// `pending` (or `waiting` from before) and wakes nobody, and the sync would sit out its
    /// whole recheck interval. So on PostgreSQL a transaction that read "blocked" looks again
    /// once it has committed. SQLite needs no second look: this transaction holds the only
    /// write lock, so the earlier sync's end commits before this read or after this commit.
    pub async fn debounce_state(&mut self, run_id: RunId) -> StoreResult<DebounceState> {
        let state = match &mut self.conn {
            TxConn::Postgres(tx, _) => pg::sync::debounce_state(tx, run_id).await?,
            TxConn::Sqlite(tx, _) => sqlite::sync::debounce_state(tx, run_id).await?,
        };
        if state.blocked && matches!(self.conn, TxConn::Postgres(..)) {
            self.blocked_sync = Some(run_id);
        }
        Ok(state)
    }

    /// A chain's deferred successes are written by the transition that ends the chain; a
    /// commit before it would keep the steps' effects but not their records, so it is refused
    /// (the transaction rolls back when dropped, and the step runs again).
    fn check_no_chained_pending(&self) -> StoreResult<()> {
        debug_assert!(self.chained.is_empty(), "a chain's successes are written before its commit");
        if self.chained.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Invariant("commit with a chain's successes still unwritten"))
        }
    }

    /// A handed-off sync that nobody claimed still gets its job: a run is never left without.
    async fn enqueue_handoff_left(&mut self) -> StoreResult<()> {
        match self.take_handoff() {
            Some(handed) => self.enqueue(handed.job, std::time::Duration::ZERO).await,
            None => Ok(()),
        }
    }
}

/// After a commit that recorded a sync as blocked (see [`StoreTx::debounce_state`]): wakes it
/// if the sync it waited for has ended meanwhile. The commit stands either way; if this fails,
/// the sync's own recheck interval still brings it back.
async fn recheck_blocked_sync(store: &pg::PgStore, run_id: Option<RunId>) {
    let Some(run_id) = run_id else { return };
    match pg::sync::wake_if_unblocked(store, run_id).await {
        Ok(true) => tracing::debug!(%run_id, "the sync it waited for ended meanwhile; woken"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%run_id, error = %e, "could not recheck a blocked sync; it waits for its recheck")
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
    /// The `output` of a step of a run, for the steps after it.
    pub async fn runs::step_output(&mut self, run_id: RunId, step: &str) -> StoreResult<Option<serde_json::Value>>;

    /// What a webhook event touched, as stored at intake.
    pub async fn sync::event_target(&mut self, event_id: EventId) -> StoreResult<Option<EventTarget>>;
    /// Everyone subscribed to what the event touched, and what each of them must re-sync.
    pub async fn sync::subscribers(&mut self, target: &EventTarget) -> StoreResult<Vec<SyncTarget>>;
    /// Whether sync run `run_id` of `user` is to write what it read: the user follows what
    /// `target` names (as an event about it would match), or the run was asked for by hand
    /// (a manual sync, or an ops retry of one; a retry of any other sync is judged like the sync
    /// it retries, by the user's subscriptions as they are now). `unread`: the page could not be read, so the database
    /// it was last in is taken from its cards.
    pub async fn sync::sync_wanted(&mut self, run_id: RunId, user: UserId, target: &EventTarget, unread: bool) -> StoreResult<bool>;
    /// If another sync of the same content is collecting events in debounce, moves this run's
    /// events onto it and returns its id.
    pub async fn sync::merge_into_other_debouncing_sync(&mut self, run_id: RunId) -> StoreResult<Option<RunId>>;

    /// Upserts a sync's cards, retires those in its scope whose source is gone, and records
    /// the sync (one statement on PostgreSQL).
    pub async fn flashcards::persist_sync(&mut self, user: UserId, run_id: RunId, scope: &SyncScope, cards: &[NewCard], record: &SyncRecord) -> StoreResult<PersistCounts>;
    /// The content hash of the last successful sync of (user, content).
    pub async fn flashcards::last_content_hash(&mut self, user: UserId, notion_id: &str) -> StoreResult<Option<String>>;
    /// Records a sync that found its content unchanged, so persists nothing: its time on the
    /// sync state and the subscription, and a database's data source ids (a subscription made
    /// again after an unsubscribe learns them here).
    pub async fn flashcards::record_sync(&mut self, user: UserId, run_id: RunId, record: &SyncRecord) -> StoreResult<()>;
}
