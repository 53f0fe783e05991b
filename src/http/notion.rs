//! Notion-facing operations for the Cognie app: manual syncs and sync status.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{
    ApiTags, HttpState,
    auth::ApiToken,
    body::JsonBody,
    error::ErrorBody,
    params::NotionIdText,
    workflows::{Accepted, Run},
};
use crate::{
    ids::UserId,
    store::{RunFilter, StoreError, SyncTarget},
};

/// How many recent runs the sync status lists.
const STATUS_RUNS: i64 = 20;

pub struct NotionApi;

#[derive(Debug, Object)]
pub struct ManualSync {
    pub user_id: Uuid,
    /// A page or database id, with or without dashes.
    pub notion_id: NotionIdText,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum ManualSyncResponse {
    /// The sync has started (or an already pending sync of this content now runs at once).
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
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

#[derive(Debug, Object)]
pub struct SyncStatusBody {
    /// Canonical form.
    pub page_id: String,
    /// The state of the latest sync run (`never_synced` when there is none).
    pub state: String,
    /// When the content was last synced successfully (for any user).
    #[oai(nullable)]
    pub last_synced_at: Option<DateTime<Utc>>,
    /// Live flashcards from this page (or this database's rows).
    pub flashcards: i64,
    /// Recent sync runs, latest first.
    pub runs: Vec<Run>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum SyncStatusResponse {
    #[oai(status = 200)]
    Ok(Json<SyncStatusBody>),
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// Nothing is known about this page: no subscription, sync or card.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

rejections!(ManualSyncResponse { 400 => BadRequest, 401 => Unauthorized, 413 => PayloadTooLarge, 415 => UnsupportedMediaType });
rejections!(SyncStatusResponse { 400 => BadRequest, 401 => Unauthorized });

#[OpenApi(tag = "ApiTags::Notion")]
impl NotionApi {
    /// Sync a page or database for a user now, skipping debounce. The kind comes from the
    /// user's subscription to it; anything else is synced as a page.
    #[oai(path = "/api/notion/sync", method = "post", operation_id = "startManualSync")]
    async fn manual_sync(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        body: JsonBody<ManualSync>,
    ) -> ManualSyncResponse {
        let notion_id = match body.0.notion_id.parse() {
            Ok(id) => id,
            Err(e) => {
                return ManualSyncResponse::BadRequest(ErrorBody::new("invalid_notion_id", e.to_string()));
            }
        };
        let user = UserId(body.0.user_id);
        let subscriptions = match state.store.user(user).await {
            Ok(None) => {
                return ManualSyncResponse::NotFound(ErrorBody::new(
                    "user_not_found",
                    format!("no user {user}"),
                ));
            }
            Ok(Some(_)) => state.store.subscriptions(user).await,
            Err(e) => return store_failure!(ManualSyncResponse, e),
        };
        let kind = match subscriptions {
            Ok(subs) => subs
                .into_iter()
                .find(|s| s.notion_id == notion_id.as_str())
                .map_or("page".to_owned(), |s| s.kind),
            Err(e) => return store_failure!(ManualSyncResponse, e),
        };
        let target = SyncTarget { user_id: user, notion_id: notion_id.to_string(), kind };
        match state.store.start_manual_sync(&target, state.debounce).await {
            Ok(run_id) => ManualSyncResponse::Accepted(Json(Accepted { run_id: run_id.0 })),
            Err(e) => store_failure!(ManualSyncResponse, e),
        }
    }

    /// The sync status of a page or database: state of the latest sync, when it last synced,
    /// its live flashcards, and its recent sync runs.
    #[oai(path = "/api/notion/sync-status/:page_id", method = "get", operation_id = "getSyncStatus")]
    async fn sync_status(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        page_id: Path<NotionIdText>,
    ) -> SyncStatusResponse {
        let id = match page_id.0.parse() {
            Ok(id) => id,
            Err(e) => {
                return SyncStatusResponse::BadRequest(ErrorBody::new("invalid_notion_id", e.to_string()));
            }
        };
        let status = match state.store.sync_status(id.as_str()).await {
            Ok(status) => status,
            Err(e) => return store_failure!(SyncStatusResponse, e),
        };
        if !status.known {
            return SyncStatusResponse::NotFound(ErrorBody::new(
                "unknown_page",
                format!("nothing is known about {id}"),
            ));
        }
        let filter = RunFilter {
            workflow: Some("notion_sync".into()),
            notion_id: Some(id.to_string()),
            ..RunFilter::default()
        };
        let runs = match state.store.list_runs(&filter, None, STATUS_RUNS).await {
            Ok(runs) => runs,
            Err(e) => return store_failure!(SyncStatusResponse, e),
        };
        SyncStatusResponse::Ok(Json(SyncStatusBody {
            page_id: id.to_string(),
            state: runs.first().map_or_else(|| "never_synced".to_owned(), |r| r.state.clone()),
            last_synced_at: status.last_synced_at,
            flashcards: status.live_cards,
            runs: runs.into_iter().map(Run::from).collect(),
        }))
    }
}
