//! Notion-facing operations for the Cognie app: manual syncs and sync status.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use uuid::Uuid;

use super::{ApiTags, HttpState, auth::ApiToken, error::ErrorBody, workflows::Accepted};
use crate::{
    ids::{NotionId, UserId},
    store::{StoreError, pg::sync::SyncTarget},
};

pub struct NotionApi;

#[derive(Debug, Object)]
pub struct ManualSync {
    pub user_id: Uuid,
    /// A page or database id, with or without dashes.
    pub notion_id: String,
}

#[derive(ApiResponse)]
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
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[OpenApi(tag = "ApiTags::Notion")]
impl NotionApi {
    /// Sync a page or database for a user now, skipping debounce. The kind comes from the
    /// user's subscription to it; anything else is synced as a page.
    #[oai(path = "/api/notion/sync", method = "post", operation_id = "startManualSync")]
    async fn manual_sync(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        body: Json<ManualSync>,
    ) -> ManualSyncResponse {
        let notion_id = match NotionId::parse(&body.0.notion_id) {
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
}
