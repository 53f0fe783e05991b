//! `debounce`: wait until the content has been quiet for `DEBOUNCE_SECONDS` (never longer than
//! `DEBOUNCE_MAX_WAIT_SECONDS` after the first event) and until any earlier sync of the same
//! content has finished, so the last edit is always synced after the ones before it.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::{StepDeps, StepError, StepOutcome};
use crate::store::{ClaimedStep, DebounceState, StoreTx};

/// How often a sync blocked behind an earlier one looks again, as a backstop: the earlier
/// one wakes it when it ends.
const BLOCKED_RECHECK: Duration = Duration::from_secs(10);

pub async fn run(tx: &mut StoreTx, claim: &ClaimedStep, _deps: &StepDeps) -> Result<StepOutcome, StepError> {
    let DebounceState { until, blocked, events } = tx.debounce_state(claim.run_id).await?;
    let now = Utc::now();
    let wait_until = match until {
        Some(until) if until > now => Some(until),
        _ if blocked => Some(now + chrono::Duration::from_std(BLOCKED_RECHECK).unwrap_or_default()),
        _ => None,
    };
    let Some(until) = wait_until else {
        if !wanted(tx, claim).await? {
            return Ok(StepOutcome::Finish {
                output: json!({ "coalesced_events": events, "unfollowed": true }),
            });
        }
        return Ok(StepOutcome::Done { output: json!({ "coalesced_events": events }) });
    };
    // While this step ran, new events could not join this run and may have started another
    // one for the same content; if so, hand our events to it instead of waiting beside it.
    if let Some(other) = tx.merge_into_other_debouncing_sync(claim.run_id).await? {
        return Ok(StepOutcome::Finish { output: json!({ "merged_into": other }) });
    }
    Ok(StepOutcome::Wait { until, progress: None })
}

/// Whether a sync is still wanted before it fetches: a database's is read whole, so one the
/// user unsubscribed from while it waited would cost a crawl of every row, at the user's rate
/// limit, for nothing (persist writes nothing for content nobody follows). A page's sync is
/// judged at persist, where the page read says which database it is in now.
async fn wanted(tx: &mut StoreTx, claim: &ClaimedStep) -> Result<bool, StepError> {
    if claim.notion_kind.as_deref() != Some("database") {
        return Ok(true);
    }
    super::persist::followed(tx, claim, None).await
}
