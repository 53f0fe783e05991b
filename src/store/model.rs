//! The store's vocabulary: what the rest of the service hands to and gets from the database,
//! whichever backend holds it. The SQL lives in `pg/` and `sqlite/`.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::StoreError;
use crate::ids::{EventId, RunId, UserId};

// --- Webhook intake

/// A verified event, ready to store.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: EventId,
    pub dedupe_key: &'a str,
    pub notion_event_id: Option<&'a str>,
    pub event_type: &'a str,
    pub entity_id: Option<&'a str>,
    pub entity_kind: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub parent_kind: Option<&'a str>,
    pub data_source_id: Option<&'a str>,
    pub attempt_number: Option<i32>,
    pub event_time: Option<DateTime<Utc>>,
    /// `None`: accepted (a run starts); `Some(reason)`: recorded and ignored.
    pub ignore_reason: Option<&'a str>,
    /// The raw body, stored as JSON.
    pub payload: &'a str,
}

/// The event workflow to start with an accepted event.
#[derive(Debug, Clone, Copy)]
pub struct StartRun {
    pub run_id: RunId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Stored now (and its run started, if it was accepted).
    Stored(EventId),
    /// The same event was stored before; nothing new was started.
    Duplicate(EventId),
}

// --- Runs and step attempts

/// A step attempt this worker holds. Every write about it is conditional on `lease_token`, so
/// a worker whose lease was taken over cannot record a late result (fencing).
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    pub run_id: RunId,
    pub workflow: String,
    pub step: String,
    /// 1 for the first attempt of this step.
    pub attempt: i32,
    pub lease_token: Uuid,
    pub user_id: Option<UserId>,
    pub notion_id: Option<String>,
    pub notion_kind: Option<String>,
    pub event_id: Option<EventId>,
    /// What the run's webhook event touched, when the claim read it with the run (PostgreSQL,
    /// an event run's step that runs in the claim's transaction); otherwise read it from the
    /// store.
    pub event: Option<EventTarget>,
    /// Outputs of this run's steps that the worker already holds (see [`KnownOutputs`]).
    pub known_outputs: KnownOutputs,
    /// `Some(owner)`: the claim is not written yet, only the run's row is locked by the open
    /// transaction the step runs in (PostgreSQL, a step that only touches the database); the
    /// transition writes claim and outcome at once, as `owner`'s attempt under `lease_token`.
    /// Only that transaction can record it (see [`super::StoreTx::claim_step`]).
    pub unwritten: Option<String>,
}

/// Outputs of a run's steps that a worker holds because it ran those steps itself and went on
/// with the run: the steps after them take these instead of reading them back from the store
/// (a sync's fetched content is its largest value). A step not listed is read from the store.
/// Each output is shared, not copied, from one step's claim to the next.
#[derive(Debug, Clone, Default)]
pub struct KnownOutputs(Vec<(String, Option<std::sync::Arc<serde_json::Value>>)>);

impl KnownOutputs {
    /// `Some(output)`: known (`Some(None)`: the step is known to have stored no output);
    /// `None`: not known here, read the store.
    pub fn get(&self, step: &str) -> Option<Option<&serde_json::Value>> {
        self.0.iter().rev().find(|(name, _)| name == step).map(|(_, output)| output.as_deref())
    }

    /// These outputs and `step`'s.
    pub fn with(&self, step: &str, output: Option<serde_json::Value>) -> Self {
        let mut outputs = self.0.clone();
        outputs.push((step.to_owned(), output.map(std::sync::Arc::new)));
        Self(outputs)
    }
}

/// The (user, content) of the sync run the transition ends, if it ends one: the next sync of
/// the same content, which may be waiting in debounce for it to end, is woken by the same
/// transition.
pub(crate) fn sync_ended_by<'c>(
    claim: &'c ClaimedStep,
    transition: &Transition,
) -> Option<(UserId, &'c str)> {
    let ends = matches!(transition, Transition::Succeed { .. } | Transition::Fail { .. });
    match (ends && claim.workflow == "notion_sync", claim.user_id, claim.notion_id.as_deref()) {
        (true, Some(user), Some(notion_id)) => Some((user, notion_id)),
        _ => None,
    }
}

/// How a step attempt ended, as the engine decided.
#[derive(Debug, Clone)]
pub enum Transition {
    /// The step succeeded; the run continues at `next_step` now.
    Advance { output: serde_json::Value, next_step: String },
    /// The step succeeded and the same worker goes on with `next_step` at once, claimed in the
    /// same transaction under a new lease (`lease_token`, held by `owner` for `lease`): no job
    /// is queued for it. If that worker dies, the lease expires and the lease sweeper makes
    /// the run runnable again with a job, as for any step whose worker died.
    Continue {
        output: serde_json::Value,
        next_step: String,
        owner: String,
        lease_token: Uuid,
        lease: Duration,
    },
    /// The step succeeded and was the last: the run succeeded.
    Succeed { output: serde_json::Value },
    /// Run this step again at `at` (a backoff, a rate-limit wait, a debounce). The run waits,
    /// holding no worker. `error` is recorded when the wait follows a failure; `output` keeps
    /// the step's progress (e.g. a half-done crawl). Only a failure spends an attempt: waiting
    /// for a rate-limit slot or a debounce deadline does not.
    Wait {
        at: DateTime<Utc>,
        error: Option<StepFailure>,
        output: Option<serde_json::Value>,
        spend_attempt: bool,
        /// The attempt added to the step's progress: the failures before it no longer count
        /// against the step's attempts (only this one does, if it failed).
        progressed: bool,
    },
    /// The run failed; a retry through the API resumes at this step.
    Fail { failure: StepFailure },
}

impl Transition {
    /// How the attempt ended, as recorded in its history and metrics.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            Transition::Advance { .. } | Transition::Continue { .. } | Transition::Succeed { .. } => {
                "succeeded"
            }
            Transition::Wait { error: None, .. } => "waiting",
            Transition::Wait { error: Some(_), .. } => "retrying",
            Transition::Fail { .. } => "failed",
        }
    }

    /// Whether the attempt that just ended counts against the step's attempts.
    pub fn spends_attempt(&self) -> bool {
        !matches!(self, Transition::Wait { spend_attempt: false, .. })
    }

    /// Whether the step's count of attempts starts over before this one is counted (see
    /// [`Transition::Wait`]'s `progressed`).
    pub fn restarts_attempts(&self) -> bool {
        matches!(self, Transition::Wait { progressed: true, .. })
    }
}

/// How an attempt that can no longer be recorded is closed in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Its worker stopped heartbeating, and the step was taken over or swept back to the
    /// queue. Its result, if it ever comes, is discarded (the run's lease moved on).
    Abandoned,
    /// Ops cancelled the run under it.
    Cancelled,
}

impl AttemptEnd {
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Abandoned => "abandoned",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn error_kind(self) -> Option<&'static str> {
        match self {
            Self::Abandoned => Some("lease_expired"),
            Self::Cancelled => None,
        }
    }

    pub fn error(self) -> Option<&'static str> {
        match self {
            Self::Abandoned => Some(
                "the worker stopped heartbeating before the attempt ended; the step was handed to another attempt",
            ),
            Self::Cancelled => None,
        }
    }
}

/// A chained step's success that is not written yet: the step that it continued into runs in
/// the same transaction, and that step's transition writes both (see
/// [`super::StoreTx::continue_in_tx`]): the run's row is written once for the chain instead
/// of once a step.
#[derive(Debug, Clone)]
pub struct ChainedSuccess {
    pub step: String,
    pub output: serde_json::Value,
    /// The attempt's lease token (its history row's key).
    pub lease_token: Uuid,
    /// The worker that made the attempt.
    pub worker: String,
    /// Whether its claim is written (else see [`ClaimedStep::unwritten`]).
    pub claim_written: bool,
}

/// How [`super::StoreTx::continue_in_tx`] recorded a step's success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continued {
    /// Not written yet: it is written with the next recorded transition of the transaction,
    /// so the next step's claim is not written either ([`ClaimedStep::unwritten`]).
    Deferred,
    /// Written now, with the next step's claim (SQLite).
    Written,
    /// The lease is no longer ours.
    LeaseLost,
}

#[derive(Debug, Clone)]
pub struct StepFailure {
    pub kind: String,
    pub message: String,
}

/// The result of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    Applied,
    /// The lease is no longer ours (expired and taken over, or the run was cancelled).
    LeaseLost,
}

// --- Sync runs and debounce

/// What a webhook event touched, as stored at intake.
#[derive(Debug, Clone)]
pub struct EventTarget {
    pub entity_id: Option<String>,
    pub entity_kind: Option<String>,
    pub parent_id: Option<String>,
    pub data_source_id: Option<String>,
    pub event_type: String,
}

/// One sync to run: `user` re-syncs `notion_id` (a page or a database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTarget {
    pub user_id: UserId,
    pub notion_id: String,
    pub kind: String,
}

/// A sync run started or joined, and its job: due at `due` (now, when nothing delays it).
#[derive(Debug, Clone, Copy)]
pub struct StartedSync {
    pub run_id: RunId,
    pub job: super::jobs::StepJob,
    pub due: DateTime<Utc>,
    /// The run's attempts of its current step (debounce) so far.
    pub attempt: i32,
}

/// Why a sync starts, and so how its debounce behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTrigger {
    /// A webhook event: trailing debounce.
    Webhook,
    /// A new subscription's first sync: no debounce.
    Subscription,
    /// `POST /api/notion/sync`: no debounce.
    Manual,
    /// The reconciliation sweep found a change webhooks missed.
    Reconcile,
}

impl SyncTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTrigger::Webhook => "webhook",
            SyncTrigger::Subscription => "subscription",
            SyncTrigger::Manual => "manual",
            SyncTrigger::Reconcile => "reconcile",
        }
    }

    /// Webhook-driven syncs wait for edits to settle; the others run at once.
    pub fn debounced(self) -> bool {
        matches!(self, SyncTrigger::Webhook | SyncTrigger::Reconcile)
    }
}

/// The debounce window (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct DebounceWindow {
    pub quiet: Duration,
    pub max_wait: Duration,
}

// --- Users and subscriptions

/// What makes two emails the same user (`users.email_key`, unique): Unicode lowercase, folded
/// here rather than by the database, whose `lower()` depends on its locale (SQLite's only
/// folds ASCII).
pub fn email_key(email: &str) -> String {
    email.to_lowercase()
}

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub notion_connected: bool,
    pub notion_workspace_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct SubscriptionRow {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub notion_id: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// A user's Notion credentials as stored: decrypt with the user id as associated data.
#[derive(Debug, Clone)]
pub struct StoredNotionToken {
    pub ciphertext: Vec<u8>,
}

/// The OAuth details stored with a token.
#[derive(Debug, Clone, Default)]
pub struct NotionWorkspace {
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub bot_id: Option<String>,
    /// The OAuth refresh token, encrypted (`None`: none was issued; storing the token clears
    /// any earlier one, which belonged to the token it replaces).
    pub refresh_ciphertext: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user with this email already exists")]
    DuplicateEmail,
    #[error("no such user")]
    UnknownUser,
    #[error("the user is already subscribed to this content")]
    DuplicateSubscription,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for UserError {
    fn from(e: sqlx::Error) -> Self {
        UserError::Store(e.into())
    }
}

// --- Ops

/// A run as the API shows it.
#[derive(Debug, Clone, FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub workflow: String,
    pub state: String,
    pub current_step: Option<String>,
    pub user_id: Option<UserId>,
    pub notion_id: Option<String>,
    pub notion_kind: Option<String>,
    pub trigger: String,
    pub parent_id: Option<RunId>,
    pub attempt: i32,
    pub error_kind: Option<String>,
    pub last_error: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct StepRow {
    pub name: String,
    pub state: String,
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct ActionRow {
    pub action: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct RunDetail {
    pub run: RunRow,
    pub steps: Vec<StepRow>,
    pub event_ids: Vec<EventId>,
    pub actions: Vec<ActionRow>,
}

/// Filters of `GET /api/workflows` (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<String>,
    pub step: Option<String>,
    pub workflow: Option<String>,
    pub user_id: Option<UserId>,
    pub notion_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// A position in the newest-first list: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCursor {
    pub created_at: DateTime<Utc>,
    pub id: RunId,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no such run")]
    NotFound,
    /// The run is in a state the action does not apply to.
    #[error("the run is {0}")]
    WrongState(String),
    /// Retrying would put a second sync of the same content into debounce.
    #[error("another sync of the same content is already collecting events")]
    SyncAlreadyDebouncing,
    /// A sync of the same content started after this one: it reads the content as it is now,
    /// while this one would resume with what it read before (and could write older cards over
    /// newer ones).
    #[error(
        "sync {0} of the same content started after this one; it reads the content as it is now (retry that one if it failed)"
    )]
    Superseded(RunId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ActionError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.constraint() == Some("workflow_runs_one_debouncing_sync_key") => {
                ActionError::SyncAlreadyDebouncing
            }
            _ => ActionError::Store(e.into()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    pub runs: BTreeMap<String, i64>,
    pub steps: BTreeMap<String, BTreeMap<String, i64>>,
    pub oldest_pending_age_seconds: Option<f64>,
    /// Which of the counts are estimates, as `runs.succeeded` or `steps.<name>.succeeded`;
    /// empty when every count is exact (PostgreSQL estimates `succeeded` on large tables; see
    /// `PgStore::queue_stats`).
    pub estimated: Vec<String>,
}

// --- Flashcards

/// A card to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCard {
    pub source_page_id: String,
    pub source_block_id: String,
    /// `block` or `row`.
    pub source_kind: String,
    pub container_id: Option<String>,
    pub front: String,
    pub back: String,
}

/// Where a sync run stands in its debounce step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceState {
    /// Its deadline: no sync before it (unless the run must wait longer, see `blocked`).
    pub until: Option<DateTime<Utc>>,
    /// An earlier sync of the same content is past debounce and unfinished: this one must
    /// run after it.
    pub blocked: bool,
    /// How many webhook events the run stands for.
    pub events: i64,
}

impl NewCard {
    /// One card per source (block id and kind), in the order of first appearance: for a source
    /// named more than once, its last card, with the last container any of them named (what
    /// writing them one after another would leave). The store writes each source once.
    pub fn one_per_source(cards: Vec<NewCard>) -> Vec<NewCard> {
        let mut index = std::collections::HashMap::with_capacity(cards.len());
        let mut unique: Vec<NewCard> = Vec::with_capacity(cards.len());
        for card in cards {
            let key = (card.source_block_id.clone(), card.source_kind.clone());
            match index.get(&key) {
                Some(&i) => {
                    let earlier: &mut NewCard = &mut unique[i];
                    let container = card.container_id.clone().or_else(|| earlier.container_id.take());
                    *earlier = NewCard { container_id: container, ..card };
                }
                None => {
                    index.insert(key, unique.len());
                    unique.push(card);
                }
            }
        }
        unique
    }
}

/// What one sync read, and so what its cards replace.
#[derive(Debug, Clone, Default)]
pub struct SyncScope {
    /// Pages whose content was read: their cards not in the new set are retired.
    pub pages: Vec<String>,
    /// A database synced as a whole: cards of its rows that were not read are retired too.
    pub container: Option<String>,
}

/// A successful sync, as persist records it with the cards: the content hash (to skip
/// unchanged content next time), and for a database, its data source ids.
#[derive(Debug, Clone, Default)]
pub struct SyncRecord {
    pub notion_id: String,
    /// `None`: the cards were not made from the content (it is no longer followed), so the
    /// next sync must not skip it as unchanged.
    pub content_hash: Option<String>,
    pub data_source_ids: Vec<String>,
}

/// What a persist changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersistCounts {
    pub created: u64,
    pub updated: u64,
    pub retired: u64,
    /// Cards already as this sync found them, or last written by a sync that started reading
    /// after this one (left as it wrote them: it read newer text).
    pub unchanged: u64,
}

#[derive(Debug, Clone, FromRow)]
pub struct CardRow {
    pub id: uuid::Uuid,
    pub front: String,
    pub back: String,
    pub source_page_id: String,
    pub source_block_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `GET /api/notion/sync-status/{page_id}` reports about one page or database.
#[derive(Debug, Clone)]
pub struct SyncStatus {
    pub last_synced_at: Option<DateTime<Utc>>,
    pub live_cards: i64,
    pub known: bool,
}

// --- The per-user rate limiter

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many requests (at least one, at most as many as were asked for) may be made now;
    /// they have been counted.
    Granted(u32),
    /// No slot now: come back at this time, this caller's turn in the user's line of waiters
    /// (when the slot for its place frees; see `..._rate_limit_waiters_in_line.sql`).
    WaitUntil(DateTime<Utc>),
}

// --- Reconciliation

/// A subscription to compare with Notion now, with its user's (encrypted) token.
#[derive(Debug, Clone, FromRow)]
pub struct DueSubscription {
    pub id: Uuid,
    pub user_id: UserId,
    pub notion_id: String,
    pub kind: String,
    pub data_source_ids: Vec<String>,
    pub token_ciphertext: Vec<u8>,
}

// --- Retention

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub runs: u64,
    pub events: u64,
    /// Handshake tokens last received before the retention (never the first, which signs
    /// events when no secret is configured, nor the latest, which ops read).
    pub verification_tokens: u64,
}

// --- Secrets at rest

/// Where an encrypted value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRow {
    /// `users.notion_token_ciphertext` (the user id is the associated data).
    UserNotionToken(UserId),
    /// `users.notion_refresh_token_ciphertext` (`<user id>:refresh` is the associated data).
    UserNotionRefreshToken(UserId),
    /// `webhook_verification_tokens.token_ciphertext`.
    VerificationToken(i64),
    /// `service_secrets.ciphertext` of the secret with this name.
    ServiceSecret(String),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{KnownOutputs, NewCard};

    #[test]
    fn known_outputs_tell_known_empty_and_unknown_apart_and_the_latest_wins() {
        let known = KnownOutputs::default()
            .with("debounce", Some(json!({"events": 1})))
            .with("fetch", None)
            .with("fetch", Some(json!({"content": "page"})));
        assert_eq!(known.get("debounce"), Some(Some(&json!({"events": 1}))));
        assert_eq!(known.get("fetch"), Some(Some(&json!({"content": "page"}))), "the latest entry wins");
        assert_eq!(known.get("generate"), None, "unknown: read the store");
        let with_empty = known.with("generate", None);
        assert_eq!(with_empty.get("generate"), Some(None), "known to have no output");
        assert_eq!(known.get("generate"), None, "extending makes a new set; the old one is unchanged");
    }

    fn card(block: &str, front: &str, container: Option<&str>) -> NewCard {
        NewCard {
            source_page_id: "page".into(),
            source_block_id: block.into(),
            source_kind: "block".into(),
            container_id: container.map(Into::into),
            front: front.into(),
            back: "back".into(),
        }
    }

    #[test]
    fn a_source_named_twice_keeps_its_last_card_and_the_last_container_named() {
        let cards = NewCard::one_per_source(vec![
            card("a", "first", Some("db")),
            card("b", "only", None),
            card("a", "second", None),
        ]);
        let fronts: Vec<(&str, &str, Option<&str>)> = cards
            .iter()
            .map(|c| (c.source_block_id.as_str(), c.front.as_str(), c.container_id.as_deref()))
            .collect();
        assert_eq!(fronts, vec![("a", "second", Some("db")), ("b", "only", None)]);
        let mut row = card("a", "x", None);
        row.source_kind = "row".into();
        assert_eq!(NewCard::one_per_source(vec![card("a", "x", None), row]).len(), 2, "kinds are apart");
    }
}
