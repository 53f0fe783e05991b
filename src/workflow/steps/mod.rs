//! The steps. Each classifies its own failures where they happen: retryable (with an optional
//! earliest retry time) or fatal.

pub mod discover_users;

use std::time::Duration;

use crate::store::{Store, StoreError, pg::runs::ClaimedStep};

/// A step that finished.
#[derive(Debug)]
pub enum StepOutcome {
    /// Continue with the workflow's next step (or finish, after the last one).
    Done { output: serde_json::Value },
    /// Nothing more to do: the run succeeded early (e.g. no subscribers, nothing changed).
    Finish { output: serde_json::Value },
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Worth trying again: network errors, timeouts, 429/5xx, the database being unavailable.
    #[error("{kind}: {message}")]
    Retryable { kind: String, message: String, retry_after: Option<Duration> },
    /// Trying again cannot help (401/403/404, invalid content, missing token).
    #[error("{kind}: {message}")]
    Fatal { kind: String, message: String },
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            StepError::Retryable {
                kind: "database_unavailable".into(),
                message: e.to_string(),
                retry_after: None,
            }
        } else {
            StepError::Retryable { kind: "database_error".into(), message: e.to_string(), retry_after: None }
        }
    }
}

/// Runs the claimed step.
pub async fn run(store: &Store, claim: &ClaimedStep) -> Result<StepOutcome, StepError> {
    match (claim.workflow.as_str(), claim.step.as_str()) {
        ("notion_event", "discover_users") => discover_users::run(store, claim).await,
        (workflow, step) => Err(StepError::Fatal {
            kind: "unknown_step".into(),
            message: format!("workflow `{workflow}` has no step `{step}` in this version of cognie-sync"),
        }),
    }
}
