//! `generate`: turn the fetched content into flashcards. If the content (and the generator)
//! are the same as at the last successful sync, nothing changed: the run ends here and nothing
//! is written.

use serde_json::json;

use super::{StepDeps, StepError, StepOutcome, fetched_content};
use crate::{
    flashcards::{self, GenerateError},
    store::ClaimedStep,
};

pub async fn run(claim: &ClaimedStep, deps: &StepDeps) -> Result<StepOutcome, StepError> {
    let (user, notion_id) = super::sync_key(claim)?;
    let content = fetched_content(deps, claim).await?;
    // The generator takes part in the hash: switching generators regenerates every card.
    let hash = format!("{}:{}", deps.generator_id, flashcards::content_hash(&content));
    if deps.store.last_content_hash(user, notion_id).await?.as_deref() == Some(hash.as_str()) {
        tracing::info!("content unchanged since the last sync; nothing to generate or persist");
        return Ok(StepOutcome::Finish { output: json!({ "skipped": "unchanged", "content_hash": hash }) });
    }
    let cards = deps.generator.generate(&content).await.map_err(classify)?;
    Ok(StepOutcome::Done { output: json!({ "content_hash": hash, "cards": cards }) })
}

fn classify(e: GenerateError) -> StepError {
    if e.is_retryable() {
        StepError::Retryable {
            kind: e.error_kind().to_owned(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            progress: None,
        }
    } else {
        StepError::fatal(e.error_kind(), e.to_string())
    }
}
