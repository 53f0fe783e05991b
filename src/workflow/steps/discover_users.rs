//! `discover_users`: find every user subscribed to what the event touched (the page itself,
//! or the database / data source it belongs to) and start one sync per (user, content), or
//! join the sync already collecting events in debounce for that key. No subscriber: the run
//! succeeds with nothing to do.

use serde_json::json;

use super::{StepDeps, StepError, StepOutcome};
use crate::store::{ClaimedStep, StoreTx, SyncTrigger};

pub async fn run(tx: &mut StoreTx, claim: &ClaimedStep, deps: &StepDeps) -> Result<StepOutcome, StepError> {
    let event_id =
        claim.event_id.ok_or_else(|| StepError::fatal("event_missing", "the run names no event"))?;
    let target = match &claim.event {
        Some(read_with_the_claim) => read_with_the_claim.clone(),
        None => tx
            .event_target(event_id)
            .await?
            .ok_or_else(|| StepError::fatal("event_missing", format!("event {event_id} no longer exists")))?,
    };
    let subscribers = tx.subscribers(&target).await?;
    if subscribers.is_empty() {
        tracing::info!(event_type = %target.event_type, "no subscribers for this content");
    }
    let mut syncs = Vec::with_capacity(subscribers.len());
    for target in &subscribers {
        let run_id = tx
            .start_or_join_sync(
                target,
                SyncTrigger::Webhook,
                Some(event_id),
                Some(claim.run_id),
                deps.debounce,
            )
            .await?;
        syncs.push(json!({ "user_id": target.user_id, "notion_id": target.notion_id, "kind": target.kind, "run_id": run_id }));
    }
    Ok(StepOutcome::Done { output: json!({ "syncs": syncs }) })
}
