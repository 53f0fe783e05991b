//! The steps. Each classifies its own failures where they happen: retryable (with an optional
//! earliest retry time) or fatal.
//!
//! Steps that only touch the database (`discover_users`, `debounce`, `persist`, and `generate`
//! with the local `rules` generator) run inside the transaction that also records their
//! outcome, under the run's row lock: their effects commit exactly when the step succeeds, and
//! a worker whose lease was taken over cannot apply them. Steps that call out (`fetch`, and
//! `generate` with the `openai` generator) run outside it, under a heartbeated lease.

pub mod debounce;
pub mod discover_users;
pub mod fetch;
pub mod generate;
pub mod persist;

use std::{borrow::Cow, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    flashcards::{Content, Generator},
    ids::UserId,
    notion::NotionClient,
    ratelimit::RateLimiter,
    store::{ClaimedStep, DebounceWindow, Store, StoreError, StoreResult, StoreTx},
};

/// What the steps need besides the claim.
pub struct StepDeps {
    pub store: Store,
    pub limiter: RateLimiter,
    pub debounce: DebounceWindow,
    pub notion: NotionClient,
    /// Opens users' Notion tokens, and refreshes one Notion refuses.
    pub tokens: std::sync::Arc<crate::tokens::NotionTokens>,
    pub generator: Generator,
    /// Names the generator (and model) in content hashes, so switching regenerates cards.
    pub generator_id: String,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// How long one `fetch` attempt crawls before it saves its progress and goes on in the
    /// next (see [`attempt_budget`]).
    pub fetch_budget: Duration,
    /// Likewise for `generate` with a generator that makes several model requests.
    pub generate_budget: Duration,
    /// Set when graceful shutdown begins: `fetch` (and a generation in parts) checkpoints after
    /// the request in flight, as when its budget runs out, so its run goes on at once on
    /// another worker from there.
    pub winding_down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long one attempt of a step that makes requests one after another (`fetch`'s crawl, the
/// `openai` generator's parts) may go on before it checkpoints: its timeout less one whole
/// request (the one in flight when the budget runs out finishes first) and a margin to record
/// the outcome. Work longer than one attempt (a large database, slow answers, a high rate limit
/// that never makes it wait) then goes on from its progress instead of timing out and starting
/// again from the last checkpoint, attempt after attempt.
pub fn attempt_budget(step_timeout: Duration, request_timeout: Duration) -> Duration {
    let margin = (step_timeout / 10).min(Duration::from_secs(5));
    let budget = step_timeout.saturating_sub(request_timeout).saturating_sub(margin);
    // A step timeout shorter than one request leaves no room: checkpoint after every request.
    budget.max(Duration::from_millis(1))
}

/// Logs what a run that succeeded did, once its success is committed, so that a result the
/// fence discarded (the lease had moved on) or a commit that failed and is redone is never
/// announced: for a sync, the seed guide's `Internal sync completed` (the line ops grep for
/// every sync), with persist's counts, or `content_unchanged` when generate found the content
/// as it was. A sync merged into another in debounce completes nothing of its own.
pub fn log_success(claim: &ClaimedStep, output: &Value) {
    if claim.workflow != crate::workflow::definition::SYNC_WORKFLOW {
        return;
    }
    match claim.step.as_str() {
        "persist" => {
            let count = |key: &str| output.get(key).and_then(Value::as_u64).unwrap_or_default();
            let flag = |key: &str| output.get(key).and_then(Value::as_bool).unwrap_or_default();
            tracing::info!(
                created = count("created"),
                updated = count("updated"),
                retired = count("retired"),
                unchanged = count("unchanged"),
                gone = flag("gone"),
                unfollowed = flag("unfollowed"),
                "Internal sync completed"
            );
        }
        "generate" if output.get("skipped").and_then(Value::as_str) == Some("unchanged") => {
            tracing::info!(content_unchanged = true, "Internal sync completed");
        }
        "debounce" | "generate" if output.get("unfollowed").and_then(Value::as_bool) == Some(true) => {
            tracing::info!(unfollowed = true, "Internal sync completed");
        }
        _ => {}
    }
}

/// A step that finished or must wait.
#[derive(Debug)]
pub enum StepOutcome {
    /// Continue with the workflow's next step (or finish, after the last one).
    Done { output: serde_json::Value },
    /// Nothing more to do: the run succeeded early (e.g. nothing changed).
    Finish { output: serde_json::Value },
    /// Not yet: run this step again at `until`, without spending an attempt (a debounce
    /// deadline, a rate-limit slot, a checkpoint). `progress` is kept for the next attempt.
    Wait { until: DateTime<Utc>, progress: Option<Progress> },
}

/// What a step that works in pieces (a crawl, a generation in parts) has done so far, saved
/// with the step for its next attempt.
#[derive(Debug)]
pub struct Progress {
    pub saved: serde_json::Value,
    /// This attempt added to it. A step's attempts count its failures since it last made
    /// progress: a long crawl or generation is failed by errors that keep it from moving, not
    /// by a few scattered over hours of work that goes on between them.
    pub advanced: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Worth trying again: network errors, timeouts, 429/5xx, the database being unavailable.
    /// `progress` is kept for the next attempt.
    #[error("{kind}: {message}")]
    Retryable { kind: String, message: String, retry_after: Option<Duration>, progress: Option<Progress> },
    /// Trying again cannot help (401/403/404, invalid content, missing token).
    #[error("{kind}: {message}")]
    Fatal { kind: String, message: String },
}

impl StepError {
    pub fn retryable(kind: &str, message: impl Into<String>) -> Self {
        StepError::Retryable {
            kind: kind.to_owned(),
            message: message.into(),
            retry_after: None,
            progress: None,
        }
    }

    pub fn fatal(kind: &str, message: impl Into<String>) -> Self {
        StepError::Fatal { kind: kind.to_owned(), message: message.into() }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        let kind = if e.is_unavailable() { "database_unavailable" } else { "database_error" };
        StepError::retryable(kind, e.to_string())
    }
}

/// Which steps run inside their outcome's transaction with this generator (see the module
/// docs): `generate` does when it computes the cards itself, and not when it calls a model.
pub fn transactional_steps(generator: &Generator) -> fn(&str) -> bool {
    match generator {
        Generator::Rules(_) => |step| is_database_only(step) || step == "generate",
        Generator::OpenAi(_) => is_database_only,
    }
}

/// The steps that only ever touch the database.
fn is_database_only(step: &str) -> bool {
    matches!(step, "discover_users" | "debounce" | "persist")
}

/// Whether the step's outcome is all it writes (it reads the database and calls out, but
/// changes nothing itself): recording the outcome again redoes the step's part of a
/// transaction that was undone, so the engine may run the next step in that transaction.
/// (`generate` also records the sync's time when the content is unchanged, but then it ends
/// the run: no step follows it in the transaction.)
pub fn writes_only_its_outcome(step: &str) -> bool {
    matches!(step, "fetch" | "generate")
}

/// The (user, content) a sync run is about.
fn sync_key(claim: &ClaimedStep) -> Result<(UserId, &str), StepError> {
    match (claim.user_id, claim.notion_id.as_deref()) {
        (Some(user), Some(notion_id)) => Ok((user, notion_id)),
        _ => Err(StepError::fatal("run_invalid", "a sync run must name a user and a Notion id")),
    }
}

/// The stored output of a step of the claim's run: the one this worker holds when it ran that
/// step itself (see [`crate::store::KnownOutputs`]), else what `read` reads from the store.
async fn step_output<'c>(
    claim: &'c ClaimedStep,
    step: &str,
    read: impl Future<Output = StoreResult<Option<Value>>>,
) -> Result<Option<Cow<'c, Value>>, StepError> {
    match claim.known_outputs.get(step) {
        Some(known) => Ok(known.map(Cow::Borrowed)),
        None => Ok(read.await?.map(Cow::Owned)),
    }
}

/// A field of a previous step's output (all of it when `field` is empty), read as `T`.
async fn previous_output<T: serde::de::DeserializeOwned>(
    claim: &ClaimedStep,
    step: &str,
    field: &str,
    read: impl Future<Output = StoreResult<Option<Value>>>,
) -> Result<T, StepError> {
    let output = required_output(claim, step, read).await?;
    read_field(&output, step, field)
}

/// A previous step's output, which must be there.
async fn required_output<'c>(
    claim: &'c ClaimedStep,
    step: &str,
    read: impl Future<Output = StoreResult<Option<Value>>>,
) -> Result<Cow<'c, Value>, StepError> {
    step_output(claim, step, read)
        .await?
        .ok_or_else(|| StepError::fatal("step_output_missing", format!("the `{step}` step left no output")))
}

/// A field of `step`'s `output` (all of it when `field` is empty), read as `T`.
fn read_field<T: serde::de::DeserializeOwned>(
    output: &Value,
    step: &str,
    field: &str,
) -> Result<T, StepError> {
    let value = if field.is_empty() { Some(output) } else { output.get(field) };
    T::deserialize(value.unwrap_or(&Value::Null)).map_err(|e| {
        StepError::fatal("step_output_invalid", format!("the `{step}` step's output cannot be read: {e}"))
    })
}

/// The data source ids of a database object (2025-09-03 `data_sources`), empty for anything
/// else; what a database subscription is matched by for `data_source.*` events.
fn data_source_ids(database: Option<&Value>) -> Vec<String> {
    database
        .and_then(|db| db.get("data_sources"))
        .and_then(Value::as_array)
        .map(|sources| sources.iter().filter_map(|s| s.get("id")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The content the fetch step read, as the generators take it, and the data source ids of the
/// database it read (if any); `read` reads it from the store when this worker does not hold it
/// already.
async fn fetched_content(
    claim: &ClaimedStep,
    read: impl Future<Output = StoreResult<Option<Value>>>,
) -> Result<(Content, Vec<String>), StepError> {
    content_of(&*required_output(claim, "fetch", read).await?)
}

/// [`fetched_content`], of the fetch step's `output` at hand.
fn content_of(output: &Value) -> Result<(Content, Vec<String>), StepError> {
    let content = read_field(output, "fetch", "content")?;
    let sources = data_source_ids(output.get("content").and_then(|c| c.get("database")));
    Ok((content, sources))
}

/// Runs a transactional step on the fenced transaction.
pub async fn run_in_tx(
    tx: &mut StoreTx,
    claim: &ClaimedStep,
    deps: &StepDeps,
) -> Result<StepOutcome, StepError> {
    match (claim.workflow.as_str(), claim.step.as_str()) {
        ("notion_event", "discover_users") => discover_users::run(tx, claim, deps).await,
        ("notion_sync", "debounce") => debounce::run(tx, claim, deps).await,
        ("notion_sync", "generate") => generate::run_in_tx(tx, claim, deps).await,
        ("notion_sync", "persist") => persist::run(tx, claim, deps).await,
        (workflow, step) => Err(unknown_step(workflow, step)),
    }
}

/// Runs a step that calls out to other services.
pub async fn run(claim: &ClaimedStep, deps: &StepDeps) -> Result<StepOutcome, StepError> {
    match (claim.workflow.as_str(), claim.step.as_str()) {
        ("notion_sync", "fetch") => fetch::run(claim, deps).await,
        ("notion_sync", "generate") => generate::run(claim, deps).await,
        (workflow, step) => Err(unknown_step(workflow, step)),
    }
}

fn unknown_step(workflow: &str, step: &str) -> StepError {
    StepError::fatal(
        "unknown_step",
        format!("workflow `{workflow}` has no step `{step}` in this version of cognie-sync"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_attempt_checkpoints_one_request_and_a_margin_before_its_timeout() {
        let secs = Duration::from_secs;
        // The defaults: 120 s step, 30 s requests, a 5 s margin.
        assert_eq!(attempt_budget(secs(120), secs(30)), secs(85));
        // Short steps: a tenth of the timeout as the margin.
        assert_eq!(attempt_budget(secs(4), secs(1)), Duration::from_millis(2_600));
        // A timeout shorter than one request: checkpoint after every request.
        assert_eq!(attempt_budget(secs(10), secs(30)), Duration::from_millis(1));
    }
}
