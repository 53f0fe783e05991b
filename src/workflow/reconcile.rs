//! Reconciliation: webhooks can be lost (Notion gives up after about a day, and drops events
//! while a subscription is paused), so worker processes periodically compare each subscription
//! with Notion and start a sync for content edited since it was last read.
//!
//! Every `RECONCILE_INTERVAL_SECONDS`, one worker process at a time (an advisory lock) sweeps
//! the subscriptions that are due (see `Store::due_subscriptions`), longest unchecked first.
//! For each, with the user's token and one rate-limiter slot per request (a user with no free
//! slot is skipped until the next sweep; a subscription whose check ran out of slots midway
//! goes to the back of the line, so it cannot keep the user's others from being checked):
//! - a page: `GET /v1/pages/{id}`; edited since the last successful sync read it → sync it;
//! - a database: query each data source for rows edited since the last full sync of the
//!   database read it; rows not read since by a sync of their own are synced one by one (as
//!   a webhook for them would), or the whole database when there are many.
//!
//! "Read it" comes from the run history: the latest successful sync of that content whose
//! fetch succeeded started reading no earlier than its debounce deadline. So a sync that found
//! nothing changed counts, a row synced by its own webhook counts, and nothing in the sync
//! steps has to record anything. Notion's `last_edited_time` is rounded down to the minute, so
//! an edit counts as read only if the read started a minute (plus a margin for clock skew)
//! after it: a page read in the same minute as its last edit is synced once more, which is
//! the price of never missing the edit that followed in that minute.
//!
//! Never read (or the runs were pruned): synced without asking Notion. Content Notion no
//! longer shows us (404, 403, or a 401 that refreshing the user's token does not cure) is left
//! alone and logged; a trashed page is synced (its `last_edited_time` moves), which retires its
//! cards. Rows deleted from a database without their webhook are retired at the next full sync
//! of the database.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{
    ids::{NotionId, UserId},
    metrics::Metrics,
    notion::{ApiFlavor, ListPage, NotionClient, NotionError},
    ratelimit::{Grant, RateLimiter},
    store::{DebounceWindow, DueSubscription, Store, StoreResult, SyncTarget},
    tokens::{NotionTokens, RefreshError, Refreshed, UserToken},
};

/// Notion's `last_edited_time` has minute precision; plus a margin for the clocks.
const SETTLE: Duration = Duration::from_secs(65);
/// Subscriptions fetched from the database per round trip of a sweep.
const BATCH: i64 = 200;
/// At most this many subscriptions per sweep; the rest are first in line next time.
const MAX_PER_SWEEP: usize = 10_000;
/// More changed rows than this in one database: sync the whole database instead.
const MAX_ROW_SYNCS: usize = 20;

/// What a sweep needs.
pub struct Reconciler {
    pub store: Store,
    pub limiter: RateLimiter,
    pub notion: NotionClient,
    /// Opens users' Notion tokens, and refreshes one Notion refuses.
    pub tokens: Arc<NotionTokens>,
    pub debounce: DebounceWindow,
    pub flavor: ApiFlavor,
    /// `RECONCILE_INTERVAL_SECONDS`.
    pub interval: Duration,
    /// Counts the sweep's Notion requests with the fetch step's.
    pub metrics: Arc<Metrics>,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Subscriptions compared with Notion (or found never read).
    pub checked: usize,
    /// Syncs started or joined.
    pub started: usize,
    /// Users skipped because their rate limiter had no free slot.
    pub rate_limited_users: usize,
    /// Subscriptions Notion would not show us, or that failed to be checked.
    pub failed: usize,
}

/// The first sweep comes this long after start-up at most: a fleet restarted more often than
/// the interval (deploys, autoscaling) would otherwise never sweep. Sweeping soon after a
/// restart costs nothing: a subscription checked in the last half interval is not due.
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(60);

/// Sweeps every `interval` (the first one a minute after start-up, or an interval if that is
/// shorter) until `shutdown` resolves.
pub async fn run(reconciler: Reconciler, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let start = tokio::time::Instant::now() + reconciler.interval.min(FIRST_SWEEP_AFTER);
    let mut tick = tokio::time::interval_at(start, reconciler.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                // A sweep can take long (a Notion request per subscription): shutdown does
                // not wait for it; what it checked so far is recorded.
                let result = tokio::select! {
                    _ = &mut shutdown => return,
                    result = reconciler.sweep() => result,
                };
                match result {
                    Ok(Some(report)) if report != SweepReport::default() => tracing::info!(
                        checked = report.checked,
                        started = report.started,
                        rate_limited_users = report.rate_limited_users,
                        failed = report.failed,
                        "reconciliation started {} syncs", report.started
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconciliation sweep failed; will retry"),
                }
            }
        }
    }
}

/// The verdict on one subscription.
enum Verdict {
    /// Nothing edited since it was read.
    UpToDate,
    /// Start these syncs.
    Sync(Vec<SyncTarget>),
    /// No rate-limit slot for this user now. `partly`: the check had made requests already.
    RateLimited { partly: bool },
    /// Could not be checked (logged).
    Failed,
    /// Notion refused the user's token (401): refresh it and check again.
    Unauthorized,
}

/// What a sweep learnt about users' tokens, by the token (as stored) that Notion refused: the
/// token it was refreshed to, or `None` when it could not be (the user must reconnect). The
/// sweep's batches were read with the refused tokens.
type RefreshedTokens = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// The token to check with instead of `read`, following the sweep's refreshes (a token
/// refreshed twice in one sweep, e.g. once by a sync in between); `None`: refused and not
/// refreshable. At most as many steps as there are entries: a user who PUT an older token back
/// could make a cycle.
fn latest_token<'a>(refreshed: &'a RefreshedTokens, read: &'a [u8]) -> Option<&'a [u8]> {
    let mut token = read;
    for _ in 0..refreshed.len() {
        match refreshed.get(token) {
            Some(Some(next)) => token = next,
            Some(None) => return None,
            None => break,
        }
    }
    Some(token)
}

/// The outcome of one rate-limited Notion call.
enum Call<T> {
    Done(T),
    RateLimited,
    Failed(NotionError),
}

impl Reconciler {
    /// One sweep, if no other process is sweeping (`None` then).
    pub async fn sweep(&self) -> StoreResult<Option<SweepReport>> {
        let Some(lock) = self.store.try_sweep_lock().await? else {
            tracing::debug!("another process is reconciling");
            return Ok(None);
        };
        let report = self.sweep_locked().await;
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "could not release the reconciliation lock; its connection is closed instead");
        }
        report.map(Some)
    }

    async fn sweep_locked(&self) -> StoreResult<SweepReport> {
        let mut report = SweepReport::default();
        let mut skipped: Vec<UserId> = Vec::new();
        // What this sweep learnt about the tokens its batches were read with.
        let mut refreshed = RefreshedTokens::new();
        let mut seen = 0;
        // Half an interval: a subscription another process checked moments ago is not due, one
        // checked in the previous sweep is.
        let min_age = self.interval / 2;
        while seen < MAX_PER_SWEEP {
            let batch = self.store.due_subscriptions(min_age, &skipped, BATCH).await?;
            if batch.is_empty() {
                break;
            }
            for subscription in batch {
                seen += 1;
                if skipped.contains(&subscription.user_id) {
                    continue;
                }
                let verdict = self.check(&subscription, &mut refreshed).await?;
                let targets = match verdict {
                    Verdict::RateLimited { partly } => {
                        skipped.push(subscription.user_id);
                        report.rate_limited_users += 1;
                        if partly {
                            // Left first in line, it would take the user's slots at every sweep
                            // for the same requests and never let their other subscriptions be
                            // checked: it goes to the back, unchecked.
                            tracing::warn!(
                                user_id = %subscription.user_id,
                                notion_id = %subscription.notion_id,
                                "reconciliation ran out of the user's rate-limit slots in the middle of a check; it is checked again after the user's other subscriptions (a database with more data sources than NOTION_RATE_LIMIT_PER_MINUTE can never be checked whole)"
                            );
                            self.store.finish_reconcile(subscription.id, &[], self.debounce).await?;
                        }
                        continue;
                    }
                    Verdict::UpToDate => Vec::new(),
                    Verdict::Failed | Verdict::Unauthorized => {
                        report.failed += 1;
                        Vec::new()
                    }
                    Verdict::Sync(targets) => targets,
                };
                report.checked += 1;
                let runs = self.store.finish_reconcile(subscription.id, &targets, self.debounce).await?;
                report.started += runs.len();
                for (target, run) in targets.iter().zip(&runs) {
                    tracing::info!(
                        user_id = %target.user_id,
                        notion_id = %target.notion_id,
                        run_id = %run,
                        "reconciliation found an edit no webhook announced; syncing"
                    );
                }
            }
        }
        Ok(report)
    }

    /// Checks one subscription with the user's token, refreshing it once if Notion refuses it.
    async fn check(
        &self,
        subscription: &DueSubscription,
        refreshed_tokens: &mut RefreshedTokens,
    ) -> StoreResult<Verdict> {
        let user = subscription.user_id;
        let Some(stored) = latest_token(refreshed_tokens, &subscription.token_ciphertext) else {
            // Refused earlier in this sweep, and not refreshable: asking Notion again would
            // only be refused again (the user must reconnect; said once already).
            return Ok(Verdict::Failed);
        };
        let token = match self.tokens.open(user, stored.to_vec()) {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(user_id = %user, error = %e, "reconciliation cannot use the user's Notion token");
                return Ok(Verdict::Failed);
            }
        };
        let verdict = self.check_with(subscription, &token).await?;
        if !matches!(verdict, Verdict::Unauthorized) {
            return Ok(verdict);
        }
        let refreshed = match self.tokens.refresh(user, &token).await {
            Ok(Refreshed::Token(refreshed)) => {
                refreshed_tokens.insert(token.ciphertext().to_vec(), Some(refreshed.ciphertext().to_vec()));
                refreshed
            }
            Ok(Refreshed::Reconnect(why)) => {
                refreshed_tokens.insert(token.ciphertext().to_vec(), None);
                tracing::warn!(user_id = %user, notion_id = %subscription.notion_id, reason = %why, "reconciliation cannot check: Notion refuses the user's token");
                return Ok(Verdict::Failed);
            }
            Err(RefreshError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(user_id = %user, notion_id = %subscription.notion_id, error = %e, "reconciliation could not refresh the user's Notion token; next sweep tries again");
                return Ok(Verdict::Failed);
            }
        };
        Ok(match self.check_with(subscription, &refreshed).await? {
            Verdict::Unauthorized => {
                tracing::warn!(user_id = %user, notion_id = %subscription.notion_id, "reconciliation cannot check: Notion refuses the user's refreshed token too");
                Verdict::Failed
            }
            verdict => verdict,
        })
    }

    async fn check_with(&self, subscription: &DueSubscription, token: &UserToken) -> StoreResult<Verdict> {
        let user = subscription.user_id;
        let token = token.expose();
        // The Notion requests of this check that were answered.
        let mut made = 0u32;
        let read = self.store.last_read_at(user, std::slice::from_ref(&subscription.notion_id)).await?;
        let Some(&read_at) = read.get(&subscription.notion_id) else {
            // Never read by a successful sync (or its runs were pruned): sync it.
            return Ok(Verdict::Sync(vec![target(
                subscription,
                &subscription.notion_id,
                &subscription.kind,
            )]));
        };
        let verdict = if subscription.kind == "database" {
            self.check_database(subscription, token, read_at, &mut made).await?
        } else {
            match self
                .call(user, &mut made, || self.notion.retrieve_page(token, &subscription.notion_id))
                .await?
            {
                Call::Done(page) if edited_since(&page, read_at) => {
                    Verdict::Sync(vec![target(subscription, &subscription.notion_id, "page")])
                }
                Call::Done(_) => Verdict::UpToDate,
                Call::RateLimited => Verdict::RateLimited { partly: false },
                Call::Failed(e) => failed(subscription, &e),
            }
        };
        Ok(match verdict {
            // Refused after some of its requests were answered.
            Verdict::RateLimited { .. } => Verdict::RateLimited { partly: made > 0 },
            verdict => verdict,
        })
    }

    async fn check_database(
        &self,
        subscription: &DueSubscription,
        token: &str,
        read_at: DateTime<Utc>,
        made: &mut u32,
    ) -> StoreResult<Verdict> {
        let user = subscription.user_id;
        let database_id = subscription.notion_id.as_str();
        let whole = || Verdict::Sync(vec![target(subscription, database_id, "database")]);
        // Rows edited at or after this may not have been read by the last full sync.
        let since = read_at - chrono::Duration::from_std(SETTLE).unwrap_or_default();
        let filter = json!({
            "timestamp": "last_edited_time",
            "last_edited_time": {"on_or_after": since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}
        });

        let mut pages: Vec<ListPage> = Vec::new();
        if self.flavor == ApiFlavor::LegacyDatabase {
            let query = || self.notion.query_database_legacy(token, database_id, None, Some(filter.clone()));
            match self.call(user, made, query).await? {
                Call::Done(page) => pages.push(page),
                Call::RateLimited => return Ok(Verdict::RateLimited { partly: false }),
                Call::Failed(e) => return Ok(failed(subscription, &e)),
            }
        } else {
            let mut sources = subscription.data_source_ids.clone();
            if sources.is_empty() {
                let database = match self
                    .call(user, made, || self.notion.retrieve_database(token, database_id))
                    .await?
                {
                    Call::Done(database) => database,
                    Call::RateLimited => return Ok(Verdict::RateLimited { partly: false }),
                    Call::Failed(e) => return Ok(failed(subscription, &e)),
                };
                if edited_since(&database, read_at) {
                    return Ok(whole());
                }
                sources = data_source_ids(&database);
            }
            for source in &sources {
                let query = || self.notion.query_data_source(token, source, None, Some(filter.clone()));
                match self.call(user, made, query).await? {
                    Call::Done(page) => pages.push(page),
                    Call::RateLimited => return Ok(Verdict::RateLimited { partly: false }),
                    Call::Failed(e) => return Ok(failed(subscription, &e)),
                }
            }
        }

        // More edited rows than one page of results: the whole database.
        if pages.iter().any(|p| p.has_more) {
            return Ok(whole());
        }
        // Notion filters by time; the check is repeated here against the exact read time.
        let edited: Vec<(String, &Value)> = pages
            .iter()
            .flat_map(|p| &p.results)
            .filter(|row| edited_since(row, read_at))
            .filter_map(|row| Some((NotionId::parse(row.get("id")?.as_str()?).ok()?.to_string(), row)))
            .collect();
        if edited.is_empty() {
            return Ok(Verdict::UpToDate);
        }
        // A row synced on its own since its edit (its webhook arrived) needs nothing; only the
        // rest count towards syncing the whole database instead.
        let ids: Vec<String> = edited.iter().map(|(id, _)| id.clone()).collect();
        let rows_read = self.store.last_read_at(user, &ids).await?;
        let targets: Vec<SyncTarget> = edited
            .iter()
            .filter(|(id, row)| rows_read.get(id).is_none_or(|at| edited_since(row, *at)))
            .map(|(id, _)| target(subscription, id, "page"))
            .collect();
        Ok(match targets.len() {
            0 => Verdict::UpToDate,
            n if n > MAX_ROW_SYNCS => whole(),
            _ => Verdict::Sync(targets),
        })
    }

    /// One Notion request, after taking a slot from the user's rate limiter (`made` counts the
    /// ones answered). A 429 or 529 blocks the limiter for `Retry-After`, as it does for the fetch step.
    async fn call<T, F, Fut>(&self, user: UserId, made: &mut u32, request: F) -> StoreResult<Call<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, NotionError>>,
    {
        if let Grant::WaitUntil(_) = self.limiter.try_acquire_one(user).await? {
            return Ok(Call::RateLimited);
        }
        let answer = request().await;
        self.metrics.notion_request(match &answer {
            Ok(_) => Some(200),
            Err(e) => e.status(),
        });
        match answer {
            Ok(value) => {
                *made += 1;
                Ok(Call::Done(value))
            }
            Err(e) if e.asks_to_slow_down() => {
                self.limiter.block(user, e.retry_after().unwrap_or(Duration::from_secs(1))).await?;
                Ok(Call::RateLimited)
            }
            Err(e) => Ok(Call::Failed(e)),
        }
    }
}

fn target(subscription: &DueSubscription, notion_id: &str, kind: &str) -> SyncTarget {
    SyncTarget { user_id: subscription.user_id, notion_id: notion_id.to_owned(), kind: kind.to_owned() }
}

fn failed(subscription: &DueSubscription, e: &NotionError) -> Verdict {
    if e.is_unauthorized() {
        return Verdict::Unauthorized;
    }
    let (user, notion_id, kind) = (subscription.user_id, &subscription.notion_id, e.error_kind());
    if e.is_retryable() {
        tracing::warn!(user_id = %user, notion_id, error_kind = kind, error = %e, "reconciliation could not check; next sweep tries again");
    } else {
        tracing::info!(user_id = %user, notion_id, error_kind = kind, error = %e, "reconciliation: Notion does not show this content to the user");
    }
    Verdict::Failed
}

/// Whether Notion's object may have been edited after a read that started at `read_at`.
/// Without a readable `last_edited_time`, assume so.
pub fn edited_since(object: &Value, read_at: DateTime<Utc>) -> bool {
    match last_edited_time(object) {
        Some(edited) => edited + chrono::Duration::from_std(SETTLE).unwrap_or_default() > read_at,
        None => true,
    }
}

fn last_edited_time(object: &Value) -> Option<DateTime<Utc>> {
    let raw = object.get("last_edited_time")?.as_str()?;
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

fn data_source_ids(database: &Value) -> Vec<String> {
    database
        .get("data_sources")
        .and_then(Value::as_array)
        .map(|sources| sources.iter().filter_map(|s| s.get("id")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn an_edit_counts_as_read_only_once_its_minute_has_closed_before_the_read() {
        let page = json!({"object": "page", "last_edited_time": "2026-05-12T07:04:00.000Z"});
        // Read within the edit's minute: a later edit in that minute shows the same time.
        assert!(edited_since(&page, at("2026-05-12T07:04:30Z")));
        assert!(edited_since(&page, at("2026-05-12T07:05:04Z")));
        // Read after the minute (and the margin) closed: anything newer shows a later minute.
        assert!(!edited_since(&page, at("2026-05-12T07:05:06Z")));
        assert!(!edited_since(&page, at("2026-05-13T00:00:00Z")));
        // Edited after the read.
        assert!(edited_since(&page, at("2026-05-12T06:00:00Z")));
    }

    #[test]
    fn a_token_refreshed_in_the_sweep_is_followed_to_the_latest_and_a_refused_one_is_skipped() {
        let (t1, t2, t3, dead) = (b"t1".to_vec(), b"t2".to_vec(), b"t3".to_vec(), b"dead".to_vec());
        let mut refreshed = RefreshedTokens::new();
        assert_eq!(latest_token(&refreshed, &t1), Some(&t1[..]), "nothing learnt yet");
        refreshed.insert(t1.clone(), Some(t2.clone()));
        refreshed.insert(t2.clone(), Some(t3.clone()));
        refreshed.insert(dead.clone(), None);
        assert_eq!(latest_token(&refreshed, &t1), Some(&t3[..]));
        assert_eq!(latest_token(&refreshed, &t2), Some(&t3[..]));
        assert_eq!(latest_token(&refreshed, &dead), None);
        // A cycle (an older token put back) ends.
        refreshed.insert(t3.clone(), Some(t1.clone()));
        assert!(latest_token(&refreshed, &t1).is_some());
    }

    #[test]
    fn without_a_readable_time_an_object_counts_as_edited() {
        assert!(edited_since(&json!({"object": "page"}), Utc::now()));
        assert!(edited_since(&json!({"last_edited_time": "yesterday"}), Utc::now()));
    }

    #[test]
    fn data_source_ids_come_from_the_database_object() {
        let database = json!({"data_sources": [{"id": "a", "name": "A"}, {"id": "b"}]});
        assert_eq!(data_source_ids(&database), ["a", "b"]);
        assert!(data_source_ids(&json!({"object": "database"})).is_empty());
    }
}
