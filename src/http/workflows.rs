//! Ops: list and inspect workflow runs, retry and cancel them, queue statistics.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;

use super::{
    ApiTags, HttpState,
    auth::ApiToken,
    body::JsonBody,
    error::ErrorBody,
    params::{
        NotionIdText, NullableStepText, RUN_STATES, RunStateText, STEPS, StepText, WORKFLOWS, WorkflowText,
    },
};
use crate::{
    ids::{RunId, UserId},
    store::{ActionError, RunCursor, RunDetail, RunFilter, RunRow, StoreError},
};

/// Who the API records as the actor of ops actions.
const ACTOR: &str = "api";
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// Most runs one bulk retry touches; call again for more.
const RETRY_FAILED_LIMIT: i64 = 10_000;

pub struct WorkflowsApi;

/// A workflow run.
#[derive(Debug, Object)]
pub struct Run {
    pub id: Uuid,
    /// `notion_event` (one per webhook event) or `notion_sync` (one per user and content).
    pub workflow: String,
    /// `pending`, `running`, `waiting` (debounce, rate limit or backoff; see `next_run_at`),
    /// `succeeded`, `failed` or `cancelled`.
    pub state: String,
    #[oai(nullable)]
    pub current_step: Option<String>,
    #[oai(nullable)]
    pub user_id: Option<Uuid>,
    #[oai(nullable)]
    pub notion_id: Option<String>,
    #[oai(nullable)]
    pub notion_kind: Option<String>,
    /// What last set the run going: `webhook`, `subscription`, `manual`, `reconcile`, or
    /// `retry` once an ops retry resumed it (the run's actions say who and when).
    pub trigger: String,
    /// The event run that started this sync. Once the retention period has passed, that run
    /// may be deleted before this one, and this id then names no run.
    #[oai(nullable)]
    pub parent_id: Option<Uuid>,
    /// Attempts of the current step so far.
    pub attempt: i32,
    #[oai(nullable)]
    pub error_kind: Option<String>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// When a waiting run runs next.
    #[oai(nullable)]
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct RunList {
    pub items: Vec<Run>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct Step {
    pub name: String,
    pub state: String,
    pub attempts: i32,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub error_kind: Option<String>,
    #[oai(nullable)]
    pub error: Option<String>,
}

#[derive(Debug, Object)]
pub struct RunAction {
    /// `retry` or `cancel`.
    pub action: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct RunWithSteps {
    #[oai(flatten)]
    pub run: Run,
    pub steps: Vec<Step>,
    /// The webhook events this run stands for (a sync coalesces many).
    pub event_ids: Vec<Uuid>,
    /// Ops actions taken on this run.
    pub actions: Vec<RunAction>,
}

#[derive(Debug, Object)]
pub struct Accepted {
    pub run_id: Uuid,
}

#[derive(Debug, Object, Default)]
pub struct RetryFailedRequest {
    #[oai(nullable)]
    pub user_id: Option<Uuid>,
    #[oai(nullable)]
    pub notion_id: Option<NotionIdText>,
    /// Only runs that failed at this step.
    pub step: Option<NullableStepText>,
    /// Only runs created at or after this time.
    #[oai(nullable)]
    pub since: Option<DateTime<Utc>>,
    /// Count and list the matching runs without retrying them (null counts as `false`).
    #[oai(default, nullable)]
    pub dry_run: bool,
}

#[derive(Debug, Object)]
pub struct RetryFailedResult {
    pub matched: u64,
    pub retried: u64,
    /// The runs retried (with `dry_run`, the runs that would be).
    pub run_ids: Vec<Uuid>,
}

#[derive(Debug, Object)]
pub struct QueueStatsBody {
    /// Runs by state.
    pub runs: std::collections::BTreeMap<String, i64>,
    /// Step records by step name, then by state.
    pub steps: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
    /// Age of the oldest run due to start but not started yet (null when none).
    #[oai(nullable)]
    pub oldest_pending_age_seconds: Option<f64>,
    /// The counts above that are estimates, e.g. `runs.succeeded`, `steps.fetch.succeeded`;
    /// empty when all are exact. Only `succeeded` counts are ever estimated, and only on
    /// large tables (over 50,000 rows): from PostgreSQL's table statistics, minus the exact
    /// counts of the other states. Every other count is exact.
    pub estimated: Vec<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum ListRunsResponse {
    #[oai(status = 200)]
    Ok(Json<RunList>),
    /// An unknown filter value or a bad cursor.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

// Built once per request and returned at once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum GetRunResponse {
    #[oai(status = 200)]
    Ok(Json<RunWithSteps>),
    /// `run_id` is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum RunActionResponse {
    /// Done; the run resumes (retry) or has ended (cancel).
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
    /// `run_id` is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `invalid_state`: the run's state does not allow it; `sync_already_pending`: retrying
    /// would put a second sync of the same content into debounce; `superseded`: a sync of the
    /// same content started after this one (it reads the content as it is now; retry that one).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum RetryFailedResponse {
    #[oai(status = 200)]
    Ok(Json<RetryFailedResult>),
    /// `invalid_filter`, or a malformed body.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The body is larger than 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
pub enum QueueStatsResponse {
    #[oai(status = 200)]
    Ok(Json<QueueStatsBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

rejections!(ListRunsResponse { 400 => BadRequest, 401 => Unauthorized }, |name, _| match name {
    "limit" => Some("invalid_limit"),
    // The filters that poem parses itself (the others are read as text and checked below).
    "since" | "user_id" => Some("invalid_filter"),
    _ => None,
});
rejections!(GetRunResponse { 400 => BadRequest, 401 => Unauthorized });
rejections!(RunActionResponse { 400 => BadRequest, 401 => Unauthorized });
rejections!(RetryFailedResponse { 400 => BadRequest, 401 => Unauthorized, 413 => PayloadTooLarge, 415 => UnsupportedMediaType });

#[OpenApi(tag = "ApiTags::Workflows")]
impl WorkflowsApi {
    /// List workflow runs, newest first, with filters and cursor pagination.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/workflows", method = "get", operation_id = "listWorkflows")]
    async fn list(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        /// `pending`, `running`, `waiting`, `succeeded`, `failed` or `cancelled`.
        #[oai(name = "state")]
        run_state: Query<Option<RunStateText>>,
        /// The current (or failed) step.
        step: Query<Option<StepText>>,
        /// `notion_event` or `notion_sync`.
        workflow: Query<Option<WorkflowText>>,
        user_id: Query<Option<Uuid>>,
        notion_id: Query<Option<NotionIdText>>,
        /// Runs created at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ListRunsResponse {
        let filter = match filter_from(
            run_state.0.map(|s| s.0),
            step.0.map(|s| s.0),
            workflow.0.map(|w| w.0),
            user_id.0,
            notion_id.0,
            since.0,
        ) {
            Ok(filter) => filter,
            Err(body) => return ListRunsResponse::BadRequest(body),
        };
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return ListRunsResponse::BadRequest(ErrorBody::new(
                "invalid_limit",
                format!("`limit` must be 1 to {MAX_LIMIT}"),
            ));
        }
        let cursor = match cursor.0.as_deref().map(super::cursor::decode).transpose() {
            Ok(cursor) => cursor.map(|(created_at, id)| RunCursor { created_at, id: RunId(id) }),
            Err(()) => {
                return ListRunsResponse::BadRequest(ErrorBody::new(
                    "invalid_cursor",
                    "`cursor` is not one we issued",
                ));
            }
        };
        match state.store.list_runs(&filter, cursor, i64::from(limit) + 1).await {
            Ok(rows) => {
                let (rows, next_cursor) =
                    super::cursor::page(rows, limit as usize, |r| (r.created_at, r.id.0));
                ListRunsResponse::Ok(Json(RunList {
                    items: rows.into_iter().map(Run::from).collect(),
                    next_cursor,
                }))
            }
            Err(e) => store_failure!(ListRunsResponse, e),
        }
    }

    /// A run with its step history, coalesced event ids and ops actions.
    #[oai(path = "/api/workflows/:run_id", method = "get", operation_id = "getWorkflow")]
    async fn get(&self, _auth: ApiToken, state: Data<&Arc<HttpState>>, run_id: Path<Uuid>) -> GetRunResponse {
        match state.store.run_detail(RunId(run_id.0)).await {
            Ok(Some(detail)) => GetRunResponse::Ok(Json(detail.into())),
            Ok(None) => GetRunResponse::NotFound(run_not_found(run_id.0)),
            Err(e) => store_failure!(GetRunResponse, e),
        }
    }

    /// Retry a failed or cancelled run: it resumes at the step it stopped at, with the
    /// outputs of the steps before it.
    #[oai(path = "/api/workflows/:run_id/retry", method = "post", operation_id = "retryWorkflow")]
    async fn retry(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        run_id: Path<Uuid>,
    ) -> RunActionResponse {
        action_response(run_id.0, state.store.retry_run(RunId(run_id.0), ACTOR).await, "retried")
    }

    /// Cancel a run that has not finished. A waiting run ends at once; a running step's result
    /// is discarded.
    #[oai(path = "/api/workflows/:run_id/cancel", method = "post", operation_id = "cancelWorkflow")]
    async fn cancel(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        run_id: Path<Uuid>,
    ) -> RunActionResponse {
        action_response(run_id.0, state.store.cancel_run(RunId(run_id.0), ACTOR).await, "cancelled")
    }

    /// Retry every failed run that matches the filters (at most 10,000 per call, oldest first).
    #[oai(path = "/api/workflows/retry-failed", method = "post", operation_id = "retryFailedWorkflows")]
    async fn retry_failed(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        body: JsonBody<RetryFailedRequest>,
    ) -> RetryFailedResponse {
        let body = body.0;
        let filter =
            match filter_from(None, body.step.map(|s| s.0), None, body.user_id, body.notion_id, body.since) {
                Ok(filter) => filter,
                Err(e) => return RetryFailedResponse::BadRequest(e),
            };
        match state.store.retry_failed(&filter, body.dry_run, RETRY_FAILED_LIMIT, ACTOR).await {
            Ok((matched, retried)) => RetryFailedResponse::Ok(Json(RetryFailedResult {
                matched: matched.len() as u64,
                // With `dry_run`, `retried` lists the runs that would be; none was.
                retried: if body.dry_run { 0 } else { retried.len() as u64 },
                run_ids: retried.iter().map(|id| id.0).collect(),
            })),
            Err(e) => store_failure!(RetryFailedResponse, e),
        }
    }

    /// Runs by state, steps by state, and the age of the oldest pending run. On large tables
    /// the `succeeded` counts are estimates (listed in `estimated`); all others are exact.
    #[oai(path = "/api/queue/stats", method = "get", operation_id = "queueStats")]
    async fn queue_stats(&self, _auth: ApiToken, state: Data<&Arc<HttpState>>) -> QueueStatsResponse {
        match state.store.queue_stats().await {
            Ok(stats) => QueueStatsResponse::Ok(Json(QueueStatsBody {
                runs: stats.runs,
                steps: stats.steps,
                oldest_pending_age_seconds: stats.oldest_pending_age_seconds,
                estimated: stats.estimated,
            })),
            Err(e) => store_failure!(QueueStatsResponse, e),
        }
    }
}

fn run_not_found(id: Uuid) -> Json<ErrorBody> {
    ErrorBody::new("run_not_found", format!("no workflow run {id}"))
}

fn action_response(id: Uuid, result: Result<(), ActionError>, done: &str) -> RunActionResponse {
    match result {
        Ok(()) => {
            tracing::info!(run_id = %id, action = done, "workflow run {done} through the API");
            RunActionResponse::Accepted(Json(Accepted { run_id: id }))
        }
        Err(ActionError::NotFound) => RunActionResponse::NotFound(run_not_found(id)),
        Err(ActionError::WrongState(state)) => {
            RunActionResponse::Conflict(ErrorBody::new("invalid_state", format!("the run is {state}")))
        }
        Err(e @ ActionError::SyncAlreadyDebouncing) => {
            RunActionResponse::Conflict(ErrorBody::new("sync_already_pending", e.to_string()))
        }
        Err(e @ ActionError::Superseded(_)) => {
            RunActionResponse::Conflict(ErrorBody::new("superseded", e.to_string()))
        }
        Err(ActionError::Store(e)) => store_failure!(RunActionResponse, e),
    }
}

fn filter_from(
    state: Option<String>,
    step: Option<String>,
    workflow: Option<String>,
    user_id: Option<Uuid>,
    notion_id: Option<NotionIdText>,
    since: Option<DateTime<Utc>>,
) -> Result<RunFilter, Json<ErrorBody>> {
    let one_of = |name: &str, value: Option<String>, allowed: &[&str]| match value {
        Some(v) if !allowed.contains(&v.as_str()) => {
            Err(ErrorBody::new("invalid_filter", format!("`{name}` must be one of {}", allowed.join(", "))))
        }
        other => Ok(other),
    };
    let notion_id = match notion_id {
        None => None,
        Some(raw) => {
            Some(raw.parse().map_err(|e| ErrorBody::new("invalid_filter", e.to_string()))?.to_string())
        }
    };
    // chrono reads signed and five-digit years too; no run is that old or that late, and
    // PostgreSQL cannot hold such a time (it would fail the query) while SQLite compares it
    // as text (`+10000-…` sorts before every year).
    if let Some(since) = since
        && !(1..=9999).contains(&since.year())
    {
        return Err(ErrorBody::new("invalid_filter", "`since` must be a time in the years 0001 to 9999"));
    }
    Ok(RunFilter {
        state: one_of("state", state, RUN_STATES)?,
        step: one_of("step", step, STEPS)?,
        workflow: one_of("workflow", workflow, WORKFLOWS)?,
        user_id: user_id.map(UserId),
        notion_id,
        since,
    })
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Self {
            id: r.id.0,
            workflow: r.workflow,
            state: r.state,
            current_step: r.current_step,
            user_id: r.user_id.map(|u| u.0),
            notion_id: r.notion_id,
            notion_kind: r.notion_kind,
            trigger: r.trigger,
            parent_id: r.parent_id.map(|p| p.0),
            attempt: r.attempt,
            error_kind: r.error_kind,
            last_error: r.last_error,
            next_run_at: r.next_run_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        }
    }
}

impl From<RunDetail> for RunWithSteps {
    fn from(d: RunDetail) -> Self {
        Self {
            run: d.run.into(),
            steps: d
                .steps
                .into_iter()
                .map(|s| Step {
                    name: s.name,
                    state: s.state,
                    attempts: s.attempts,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    error_kind: s.error_kind,
                    error: s.error,
                })
                .collect(),
            event_ids: d.event_ids.into_iter().map(|e| e.0).collect(),
            actions: d
                .actions
                .into_iter()
                .map(|a| RunAction { action: a.action, actor: a.actor, at: a.at })
                .collect(),
        }
    }
}
