//! `discover_users`: find the users subscribed to the event's page or database and start one
//! sync per (user, content). Subscriptions arrive with the Notion integration; until then no
//! user can be subscribed, so every event run ends here with nothing to do.

use serde_json::json;

use super::{StepError, StepOutcome};
use crate::store::{Store, pg::runs::ClaimedStep};

pub async fn run(_store: &Store, claim: &ClaimedStep) -> Result<StepOutcome, StepError> {
    tracing::info!(notion_id = claim.notion_id.as_deref().unwrap_or(""), "no subscribers for this content");
    Ok(StepOutcome::Finish { output: json!({ "users": [], "sync_runs": [] }) })
}
