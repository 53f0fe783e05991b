//! `fetch`: read the page and all its blocks (or the database's rows and their blocks) with the
//! user's Notion token, one request at a time, each through the shared per-user rate limiter.
//!
//! The crawl is resumable: when the limiter says "not before T", or a request fails in a way
//! worth retrying, the crawl's progress is saved with the step and the step is rescheduled,
//! holding no worker. Waiting for a slot spends no attempt; a failure does, and so does Notion's
//! own 429 or 529 (retried after its `Retry-After`, which also holds off every other request
//! with the user's token), as DESIGN's failure rules say. A crawl that runs
//! longer than its budget (see [`super::attempt_budget`]) checkpoints the same way and goes on
//! at once in a new attempt, so a long crawl never runs into the step's timeout. So does a crawl
//! under way when graceful shutdown begins, after its request in flight: another worker goes on
//! with it.

use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use super::{Progress, StepDeps, StepError, StepOutcome};
use crate::{
    notion::{ApiFlavor, Crawl, CrawlError, LEGACY_NOTION_VERSION, NotionError, Restart},
    ratelimit::Grant,
    store::ClaimedStep,
    tokens::{RefreshError, Refreshed, UserToken},
};

/// The most rate-limit slots a crawl takes at once: the requests it will make next, one after
/// another, each costs no round trip to the limiter of its own; a slot not used (the request
/// failed and the step must wait) stays counted, so few are taken.
const SLOTS_AT_ONCE: usize = 4;

/// How many times in a row a crawl reads a list again from its start after Notion refused the
/// cursor of its next page (see [`Crawl::restart_list`]; a list read to its end starts the
/// count over). The next refusal fails the attempt instead, so a Notion that keeps refusing a
/// cursor ends the run after its attempts, rather than re-reading the same pages for ever.
const LIST_RESTARTS_IN_A_ROW: u32 = 3;

/// How long a slot taken ahead may wait for its request. The limiter counts a request from its
/// grant, and its window is a second longer than Notion's so that a request granted late in
/// one window cannot reach Notion inside the next (`src/ratelimit`); a slot used long after
/// its grant would eat into that second. An older spare slot is left unused (it stays counted).
const SPARE_SLOT_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(500);

pub async fn run(claim: &ClaimedStep, deps: &StepDeps) -> Result<StepOutcome, StepError> {
    let (user, notion_id) = super::sync_key(claim)?;
    let saved = super::step_output(claim, "fetch", deps.store.step_output(claim.run_id, "fetch")).await?;
    let resumed = saved.as_deref().and_then(|o| o.get("progress")).and_then(|saved| {
        Crawl::deserialize(saved)
            .inspect_err(|e| {
                // A deploy changed the crawl's format mid-way: reading again costs requests,
                // failing the run would cost the sync.
                tracing::warn!(error = %e, "saved crawl progress is unreadable; the crawl starts over");
            })
            .ok()
    });
    // Saved progress thrown away is not progress made again (see `counted_from` below).
    let restarted = resumed.is_none() && saved.as_deref().is_some_and(|o| o.get("progress").is_some());
    let mut crawl = match resumed {
        Some(crawl) => crawl,
        None if claim.notion_kind.as_deref() == Some("database") => Crawl::database(notion_id, flavor(deps)),
        None => Crawl::page(notion_id),
    };

    // The token and the slots for the first requests come in one round trip. A slot taken
    // ahead counts its age from before the call: the grant is made somewhere within it.
    let asked = Instant::now();
    let (stored, first) =
        deps.limiter.token_and_slots(user, slots_wanted(&crawl)).await?.ok_or_else(|| {
            StepError::fatal(
                "notion_token_missing",
                "the user has no Notion token; connect Notion or PUT a token",
            )
        })?;
    let mut token = deps.tokens.open(user, stored.ciphertext).map_err(undecryptable)?;
    // Notion's 401 to an OAuth token is answered with one refresh per attempt.
    let mut refreshed = false;

    let started = Instant::now();
    let applied_before = crawl.requests_applied();
    // Requests past this count are progress (`Progress::advanced`): none in an attempt that
    // started over, so workers of two versions that cannot read each other's saved crawls do
    // not keep restarting it without ever running out of attempts.
    let counted_from = if restarted { u64::MAX } else { applied_before };
    // A list read again changes the crawl without applying an answer.
    let mut reshaped = false;
    let mut slots = Some((first, asked));
    // The first grant's first slot serves the request that follows the call, however long the
    // call took; only slots taken ahead of their request age.
    let mut first_request = true;
    while let Some(request) = crawl.next_request() {
        // Each attempt makes at least one request, so even a tiny budget makes progress.
        let out_of_time = started.elapsed() >= deps.fetch_budget
            || deps.winding_down.load(std::sync::atomic::Ordering::SeqCst);
        if out_of_time && crawl.requests_applied() > applied_before {
            // Checkpoint: the next attempt goes on from here at once, spending no attempt.
            tracing::debug!(
                requests = crawl.requests_applied(),
                "fetch checkpoint: the crawl goes on in the next attempt"
            );
            let progress = Some(progress(&crawl, counted_from));
            return Ok(StepOutcome::Wait { until: chrono::Utc::now(), progress });
        }
        let (grant, granted_at) = match slots.take() {
            Some((grant, at)) if first_request || at.elapsed() < SPARE_SLOT_MAX_AGE => (grant, at),
            _ => {
                let asked = Instant::now();
                let grant = deps.limiter.acquire(user, slots_wanted(&crawl)).await;
                (grant.map_err(|e| keeping_progress(e.into(), &crawl, counted_from))?, asked)
            }
        };
        first_request = false;
        match grant {
            Grant::Granted(n) => {
                // This request takes one; the rest serve the next ones, while they are young.
                slots = (n > 1).then(|| (Grant::Granted(n - 1), granted_at));
            }
            Grant::WaitUntil(until) => {
                deps.metrics.rate_limit_wait();
                tracing::debug!(%until, requests = crawl.requests_applied(), "rate limit reached; fetch continues later");
                // Nothing read since the crawl was saved (or started): the saved one stays. A
                // run that comes back at its turn and finds its slot taken (by a request that
                // came first) is refused again; it does not rewrite its crawl (megabytes for a
                // large database) as it was.
                let unchanged = !restarted && !reshaped && crawl.requests_applied() == applied_before;
                let progress = (!unchanged).then(|| progress(&crawl, counted_from));
                return Ok(StepOutcome::Wait { until, progress });
            }
        }
        let answer = deps.notion.execute(token.expose(), &request).await;
        deps.metrics.notion_request(match &answer {
            Ok(_) => Some(200),
            Err(e) => e.status(),
        });
        match answer {
            Ok(answer) => crawl.apply(&request, answer).map_err(|e| crawl_error(e, &crawl, counted_from))?,
            // Notion no longer takes the cursor of a list's next page (it expired, or names a
            // block deleted since; a 404 there says the same): read the list again without it.
            Err(e) if request.cursor().is_some() && (e.is_cursor_rejected() || e.is_not_found()) => {
                let restart =
                    crawl.restart_list(&request).map_err(|e| crawl_error(e, &crawl, counted_from))?;
                reshaped = true;
                tracing::info!(error = %e, ?restart, requests = crawl.requests_applied(), "Notion refused a list's cursor; the list is read again without it");
                if restart == Restart::FromTheStart {
                    let restarts = crawl.restarts_in_a_row();
                    if restarts > LIST_RESTARTS_IN_A_ROW {
                        return Err(StepError::Retryable {
                            kind: "notion_cursor_rejected".to_owned(),
                            message: format!(
                                "Notion refused the cursor of a list's next page {restarts} times in a row; last: {e}"
                            ),
                            retry_after: None,
                            progress: Some(progress(&crawl, counted_from)),
                        });
                    }
                }
            }
            // Gone: the root ends the crawl as "gone" (its cards are retired); a nested block
            // deleted meanwhile is left out.
            Err(e) if e.is_not_found() => {
                crawl.apply_not_found(&request).map_err(|e| crawl_error(e, &crawl, counted_from))?
            }
            // The request was not applied: the loop makes it again with the new token.
            Err(e) if e.is_unauthorized() && !refreshed => {
                refreshed = true;
                token = match refreshed_token(deps, user, &token, &crawl, counted_from).await? {
                    Ok(token) => token,
                    // The token endpoint asked for fewer requests: retried like the API's.
                    Err(slow) => return Err(slow_down(slow, deps, user, &crawl, counted_from).await),
                };
            }
            Err(e) if e.asks_to_slow_down() => {
                return Err(slow_down(e, deps, user, &crawl, counted_from).await);
            }
            Err(e) => return Err(notion_error(e, &crawl, counted_from)),
        }
    }
    let requests = crawl.requests_applied();
    let content = crawl.finish().map_err(|e| StepError::fatal(e.error_kind(), e.to_string()))?;
    tracing::info!(requests, pages = content.pages.len(), gone = content.gone, "fetched from Notion");
    Ok(StepOutcome::Done { output: json!({ "content": content }) })
}

fn slots_wanted(crawl: &Crawl) -> u32 {
    crawl.requests_ahead().clamp(1, SLOTS_AT_ONCE) as u32
}

fn flavor(deps: &StepDeps) -> ApiFlavor {
    if deps.notion.version() == LEGACY_NOTION_VERSION {
        ApiFlavor::LegacyDatabase
    } else {
        ApiFlavor::DataSources
    }
}

/// The crawl as the step saves it; it advanced if it applied more than `counted_from` requests
/// and is not reading again what a list refused made it read once already.
fn progress(crawl: &Crawl, counted_from: u64) -> Progress {
    let advanced = crawl.requests_applied() > counted_from && crawl.restarts_in_a_row() == 0;
    Progress { saved: json!({ "progress": crawl }), advanced }
}

fn crawl_error(e: CrawlError, crawl: &Crawl, counted_from: u64) -> StepError {
    if e.is_retryable() {
        StepError::Retryable {
            kind: e.error_kind().to_owned(),
            message: e.to_string(),
            retry_after: None,
            progress: Some(progress(crawl, counted_from)),
        }
    } else {
        StepError::fatal(e.error_kind(), e.to_string())
    }
}

/// Notion refused the user's token (401): the refreshed one, Notion's request to slow down
/// (the token endpoint's 429 or 529, retried after its `Retry-After`), or why the
/// sync cannot go on.
async fn refreshed_token(
    deps: &StepDeps,
    user: crate::ids::UserId,
    refused: &UserToken,
    crawl: &Crawl,
    counted_from: u64,
) -> Result<Result<UserToken, NotionError>, StepError> {
    match deps.tokens.refresh(user, refused).await {
        Ok(Refreshed::Token(token)) => Ok(Ok(token)),
        Err(RefreshError::Unavailable(e)) if e.asks_to_slow_down() => Ok(Err(e)),
        Ok(Refreshed::Reconnect(why)) => Err(StepError::fatal("notion_unauthorized", why)),
        Err(RefreshError::Store(e)) => Err(keeping_progress(e.into(), crawl, counted_from)),
        Err(RefreshError::Unavailable(e)) => Err(StepError::Retryable {
            kind: e.error_kind().to_owned(),
            message: format!("refreshing the user's Notion token: {e}"),
            retry_after: e.retry_after(),
            progress: Some(progress(crawl, counted_from)),
        }),
        Err(e @ RefreshError::Interrupted(_)) => Err(StepError::Retryable {
            kind: "notion_token_refresh_interrupted".to_owned(),
            message: e.to_string(),
            retry_after: None,
            progress: Some(progress(crawl, counted_from)),
        }),
        Err(RefreshError::Rejected(e)) => {
            Err(StepError::fatal(e.error_kind(), RefreshError::Rejected(e).to_string()))
        }
        Err(RefreshError::Undecryptable(e)) => Err(undecryptable(e)),
    }
}

fn undecryptable(e: crate::crypto::CryptoError) -> StepError {
    StepError::fatal("notion_token_undecryptable", e.to_string())
}

/// A retryable failure of the crawl's own (the database, while taking slots or storing a
/// refreshed token) keeps the progress made so far, as Notion's failures do: the requests this
/// attempt applied are not made again.
fn keeping_progress(e: StepError, crawl: &Crawl, counted_from: u64) -> StepError {
    match e {
        StepError::Retryable { kind, message, retry_after, progress: None } => {
            StepError::Retryable { kind, message, retry_after, progress: Some(progress(crawl, counted_from)) }
        }
        other => other,
    }
}

/// Notion asked for fewer requests (a 429, or a 529, which it asks to be treated alike). Every
/// request with the user's token holds off for its `Retry-After` (the user's limiter is
/// blocked, so every worker does, not just this step), and the step is retried after it,
/// keeping its progress. The retry spends an attempt (DESIGN's failure rules: 429/529 retry up
/// to `NOTION_MAX_RETRIES`), so a Notion that keeps refusing fails the run, for ops to retry,
/// instead of holding it and the content's later syncs, queued behind it, for ever. Attempts
/// count failures since the crawl last moved on, so slow-downs spread over a long crawl do not
/// add up; and only the step that met the slow-down spends one: the user's other steps wait
/// for the blocked limiter as for any slot.
async fn slow_down(
    e: NotionError,
    deps: &StepDeps,
    user: crate::ids::UserId,
    crawl: &Crawl,
    counted_from: u64,
) -> StepError {
    // At least a second, also for `Retry-After: 0` or a date already past (a skewed clock).
    let wait = e.retry_after().unwrap_or_default().max(std::time::Duration::from_secs(1));
    let (until, blocked) = match deps.limiter.block(user, wait).await {
        Ok(until) => (until, true),
        Err(block) => {
            tracing::warn!(error = %block, "could not record Notion's Retry-After on the limiter");
            (chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(), false)
        }
    };
    tracing::info!(
        error_kind = e.error_kind(),
        error = %e,
        %until,
        requests = crawl.requests_applied(),
        "Notion asked for fewer requests; fetch is retried after its Retry-After"
    );
    // A Retry-After Notion named is waited for in full (until the limiter's block ends, which
    // another 429 may have made later; the engine waits longer if its backoff says so); a bare
    // 429 is retried after the engine's backoff, and a retry that comes before the block's end
    // waits for the limiter, spending nothing more. With no block recorded, nothing else holds
    // the retry off: it waits for the second at least.
    let retry_after = (e.retry_after().is_some() || !blocked)
        .then(|| (until - chrono::Utc::now()).to_std().unwrap_or_default());
    StepError::Retryable {
        kind: e.error_kind().to_owned(),
        message: e.to_string(),
        retry_after,
        progress: Some(progress(crawl, counted_from)),
    }
}

/// Classifies a failed request.
fn notion_error(e: NotionError, crawl: &Crawl, counted_from: u64) -> StepError {
    if e.is_retryable() {
        StepError::Retryable {
            kind: e.error_kind().to_owned(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            progress: Some(progress(crawl, counted_from)),
        }
    } else {
        StepError::fatal(e.error_kind(), e.to_string())
    }
}
