//! `generate`: turn the fetched content into flashcards. If the content (and the generator)
//! are the same as at the last successful sync, nothing changed: the run ends here, and only
//! the sync's time (and a database's data sources) is recorded.

use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::{Progress, StepDeps, StepError, StepOutcome, fetched_content};
use crate::{
    flashcards::{self, Content, GenerateError, PartialCards},
    notion::FetchedContent,
    store::{ClaimedStep, StoreTx, SyncRecord},
};

/// With a generator that calls out (a model): outside any transaction. A model's generation
/// is made in parts (one request each): one that outlasts the attempt's budget saves the parts
/// done and goes on at once in a new attempt, spending none, as `fetch` does.
pub async fn run(claim: &ClaimedStep, deps: &StepDeps) -> Result<StepOutcome, StepError> {
    let (user, notion_id) = super::sync_key(claim)?;
    let fetch = super::required_output(claim, "fetch", deps.store.step_output(claim.run_id, "fetch")).await?;
    if !still_followed(claim, deps, super::read_field(&fetch, "fetch", "content")?).await? {
        // A model's generation is paid for; persist would write none of its cards.
        return Ok(StepOutcome::Finish { output: json!({ "unfollowed": true }) });
    }
    let (content, sources) = super::content_of(&fetch)?;
    let saved =
        super::step_output(claim, "generate", deps.store.step_output(claim.run_id, "generate")).await?;
    let mut progress = saved
        .as_deref()
        .and_then(|output| output.get("progress"))
        .and_then(|saved| PartialCards::deserialize(saved).ok())
        .unwrap_or_default();
    let last_hash = deps.store.last_content_hash(user, notion_id).await?;
    match generate(content, last_hash, &mut progress, deps.generate_budget, deps).await? {
        Generated::Cards(outcome) => Ok(outcome),
        Generated::Unchanged(hash) => {
            // Under the claim's lease, as every write of a step: an attempt whose lease was
            // taken over while it ran must not record an older hash over a newer sync's.
            let Some(mut tx) = deps.store.begin_fenced(claim).await? else { return Err(lease_lost()) };
            tx.record_sync(user, claim.run_id, &unchanged_record(notion_id, &hash, sources)).await?;
            tx.commit().await?;
            Ok(unchanged(hash))
        }
    }
}

/// Whether the user still follows what the sync read, asked as persist asks it (see
/// [`super::persist::followed`]), under the claim's lease, in a transaction that writes
/// nothing. Content nobody follows any more (unsubscribed while its sync waited) is not sent
/// to the model. A re-subscribe after this answer starts a sync of its own, which generates.
async fn still_followed(
    claim: &ClaimedStep,
    deps: &StepDeps,
    fetched: FetchedContent,
) -> Result<bool, StepError> {
    let Some(mut tx) = deps.store.begin_fenced(claim).await? else { return Err(lease_lost()) };
    let followed = super::persist::followed(&mut tx, claim, Some(&fetched)).await?;
    // Nothing was written: undone, which releases the run's row and the subscription.
    drop(tx);
    Ok(followed)
}

fn lease_lost() -> StepError {
    StepError::retryable("lease_lost", "the step's lease was lost; nothing recorded")
}

/// With the local generator: in the transaction that records the outcome (nothing is called
/// out; the rules take milliseconds of CPU, not a model's seconds of waiting), the one that
/// also recorded `fetch` when this worker ran it and that will record `persist`: one commit
/// for the three.
pub async fn run_in_tx(
    tx: &mut StoreTx,
    claim: &ClaimedStep,
    deps: &StepDeps,
) -> Result<StepOutcome, StepError> {
    let (user, notion_id) = super::sync_key(claim)?;
    let (content, sources) = fetched_content(claim, tx.step_output(claim.run_id, "fetch")).await?;
    let last_hash = tx.last_content_hash(user, notion_id).await?;
    let mut progress = PartialCards::default();
    match generate(content, last_hash, &mut progress, Duration::MAX, deps).await? {
        Generated::Cards(outcome) => Ok(outcome),
        Generated::Unchanged(hash) => {
            tx.record_sync(user, claim.run_id, &unchanged_record(notion_id, &hash, sources)).await?;
            Ok(unchanged(hash))
        }
    }
}

enum Generated {
    Cards(StepOutcome),
    /// The content hash is the last sync's: nothing to generate or persist, but the sync still
    /// happened (its time is recorded; see [`crate::store::StoreTx::record_sync`]).
    Unchanged(String),
}

/// The cards for `content` (going on from `progress`), the parts done so far when `budget`
/// ran out, or the run's early end when its hash is the last sync's.
async fn generate(
    content: Content,
    last_hash: Option<String>,
    progress: &mut PartialCards,
    budget: Duration,
    deps: &StepDeps,
) -> Result<Generated, StepError> {
    // The generator takes part in the hash: switching generators regenerates every card.
    let hash = format!("{}:{}", deps.generator_id, flashcards::content_hash(&content));
    if last_hash.as_deref() == Some(hash.as_str()) {
        return Ok(Generated::Unchanged(hash));
    }
    let done_before = progress.done;
    // Graceful shutdown: a generation in parts stops after the part in flight, keeping them.
    let result = deps.generator.generate_from(&content, progress, budget, &deps.winding_down).await;
    // More parts done than were saved. Saved parts thrown away and made again (other notes, a
    // worker of another version) are not progress: workers that disagree would otherwise
    // restart each other's parts and never run out of attempts.
    let advanced = progress.done > done_before;
    match result {
        Ok(true) => {
            let cards = std::mem::take(&mut progress.cards);
            Ok(Generated::Cards(StepOutcome::Done {
                output: json!({ "content_hash": hash, "cards": cards }),
            }))
        }
        Ok(false) => {
            let progress = Some(saved(progress, advanced));
            Ok(Generated::Cards(StepOutcome::Wait { until: Utc::now(), progress }))
        }
        Err(e) => Err(classify(e, progress, advanced)),
    }
}

/// The parts of a generation done so far, as the step saves them; `advanced`: this attempt
/// made some of them.
fn saved(progress: &PartialCards, advanced: bool) -> Progress {
    Progress { saved: json!({ "progress": progress }), advanced }
}

/// What an unchanged sync records (the hash stays the same).
fn unchanged_record(notion_id: &str, hash: &str, data_source_ids: Vec<String>) -> SyncRecord {
    SyncRecord { notion_id: notion_id.to_owned(), content_hash: Some(hash.to_owned()), data_source_ids }
}

/// The early end of a sync whose content is unchanged.
fn unchanged(hash: String) -> StepOutcome {
    // The sync ends here: its `Internal sync completed` says `content_unchanged` (logged once
    // committed, see `super::log_success`).
    StepOutcome::Finish { output: json!({ "skipped": "unchanged", "content_hash": hash }) }
}

/// A retry keeps the parts done before the failure (none with the local generator).
fn classify(e: GenerateError, progress: &PartialCards, advanced: bool) -> StepError {
    if e.is_retryable() {
        StepError::Retryable {
            kind: e.error_kind().to_owned(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            progress: (progress.done > 0).then(|| saved(progress, advanced)),
        }
    } else {
        StepError::fatal(e.error_kind(), e.to_string())
    }
}
