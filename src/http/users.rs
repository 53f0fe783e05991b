//! Users, their Notion tokens, and their subscriptions (the Cognie app calls these).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;

use super::{
    ApiTags, HttpState,
    auth::ApiToken,
    body::JsonBody,
    error::ErrorBody,
    params::{EmailText, NotionIdText, TokenText},
};
use crate::{
    ids::{NotionId, UserId},
    store::{NotionWorkspace, StoreError, SubscriptionRow, UserError, UserRow},
};

pub struct UsersApi;

#[derive(Debug, Object)]
pub struct NewUser {
    /// Unique (case-insensitive: Unicode lowercase).
    pub email: EmailText,
}

#[derive(Debug, Object)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    /// Whether a Notion token is stored (the token itself is never returned).
    pub notion_connected: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct NotionTokenBody {
    /// An internal integration token or an OAuth access token. Stored encrypted; never returned.
    pub token: TokenText,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// One page (and everything nested in it).
    Page,
    /// A database: its data sources and every row page.
    Database,
}

impl SubscriptionKind {
    fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Page => "page",
            SubscriptionKind::Database => "database",
        }
    }
}

#[derive(Debug, Object)]
pub struct NewSubscription {
    /// The page or database id, with or without dashes.
    pub notion_id: NotionIdText,
    pub kind: SubscriptionKind,
}

#[derive(Debug, Object)]
pub struct Subscription {
    pub id: Uuid,
    /// Canonical form: lowercase, dashed.
    pub notion_id: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub last_synced_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct CreatedSubscription {
    pub id: Uuid,
    pub notion_id: String,
    pub kind: String,
    /// The first sync, started now.
    pub run_id: Uuid,
}

#[derive(Debug, Object)]
pub struct SubscriptionList {
    pub items: Vec<Subscription>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum CreateUserResponse {
    #[oai(status = 201)]
    Created(Json<User>),
    /// Not an email address.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// A user with this email exists.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
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
#[oai(bad_request_handler = "Self::rejected")]
pub enum GetUserResponse {
    #[oai(status = 200)]
    Ok(Json<User>),
    /// A parameter is malformed (e.g. not a UUID).
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
pub enum NoContentResponse {
    /// Done.
    #[oai(status = 204)]
    NoContent,
    /// `invalid_token`, or a malformed parameter or body.
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

/// DELETE has no body, so none of the body's statuses (413, 415).
#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum DeleteSubscriptionResponse {
    /// Unsubscribed.
    #[oai(status = 204)]
    NoContent,
    /// `invalid_notion_id`, or a malformed parameter.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// `subscription_not_found`.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum CreateSubscriptionResponse {
    /// Subscribed; the first sync has started.
    #[oai(status = 201)]
    Created(Json<CreatedSubscription>),
    /// Not a Notion id.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Already subscribed.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
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
#[oai(bad_request_handler = "Self::rejected")]
pub enum ListSubscriptionsResponse {
    #[oai(status = 200)]
    Ok(Json<SubscriptionList>),
    /// A parameter is malformed (e.g. not a UUID).
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

#[derive(Debug, Object)]
pub struct Flashcard {
    pub id: Uuid,
    pub front: String,
    pub back: String,
    /// The page the card comes from (a row page for database rows).
    pub source_page_id: String,
    /// The toggle / heading block, or the row page, the card is made from.
    pub source_block_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct FlashcardList {
    pub items: Vec<Flashcard>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum ListFlashcardsResponse {
    #[oai(status = 200)]
    Ok(Json<FlashcardList>),
    /// `invalid_notion_id`, `invalid_limit`, `invalid_cursor`, or a malformed parameter.
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

rejections!(CreateUserResponse { 400 => BadRequest, 401 => Unauthorized, 413 => PayloadTooLarge, 415 => UnsupportedMediaType });
rejections!(GetUserResponse { 400 => BadRequest, 401 => Unauthorized });
rejections!(NoContentResponse { 400 => BadRequest, 401 => Unauthorized, 413 => PayloadTooLarge, 415 => UnsupportedMediaType });
rejections!(DeleteSubscriptionResponse { 400 => BadRequest, 401 => Unauthorized });
rejections!(CreateSubscriptionResponse { 400 => BadRequest, 401 => Unauthorized, 413 => PayloadTooLarge, 415 => UnsupportedMediaType });
rejections!(ListSubscriptionsResponse { 400 => BadRequest, 401 => Unauthorized });
rejections!(ListFlashcardsResponse { 400 => BadRequest, 401 => Unauthorized }, |name, _| match name {
    "limit" => Some("invalid_limit"),
    _ => None,
});

fn user_not_found(id: Uuid) -> Json<ErrorBody> {
    ErrorBody::new("user_not_found", format!("no user {id}"))
}

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// Create a user.
    #[oai(path = "/api/users", method = "post", operation_id = "createUser")]
    async fn create_user(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        body: JsonBody<NewUser>,
    ) -> CreateUserResponse {
        if !body.0.email.is_valid() {
            return CreateUserResponse::BadRequest(ErrorBody::new(
                "invalid_email",
                "`email` must be an email address (one `@`, no spaces, at most 254 characters)",
            ));
        }
        let email = body.0.email.0.as_str();
        match state.store.create_user(email).await {
            Ok(user) => CreateUserResponse::Created(Json(user.into())),
            Err(UserError::DuplicateEmail) => CreateUserResponse::Conflict(ErrorBody::new(
                "email_taken",
                "a user with this email already exists",
            )),
            Err(UserError::Store(e)) => store_failure!(CreateUserResponse, e),
            Err(e) => {
                tracing::error!(error = %e, "creating a user failed");
                CreateUserResponse::Internal(ErrorBody::internal())
            }
        }
    }

    /// Get a user.
    #[oai(path = "/api/users/:user_id", method = "get", operation_id = "getUser")]
    async fn get_user(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        user_id: Path<Uuid>,
    ) -> GetUserResponse {
        match state.store.user(UserId(user_id.0)).await {
            Ok(Some(user)) => GetUserResponse::Ok(Json(user.into())),
            Ok(None) => GetUserResponse::NotFound(user_not_found(user_id.0)),
            Err(e) => store_failure!(GetUserResponse, e),
        }
    }

    /// Store the user's Notion token (encrypted at rest; never returned or logged).
    #[oai(path = "/api/users/:user_id/notion-token", method = "put", operation_id = "setNotionToken")]
    async fn set_notion_token(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        user_id: Path<Uuid>,
        body: JsonBody<NotionTokenBody>,
    ) -> NoContentResponse {
        if !body.0.token.is_valid() {
            return NoContentResponse::BadRequest(ErrorBody::new(
                "invalid_token",
                "`token` must be a Notion token (1 to 2048 printable ASCII characters, no spaces)",
            ));
        }
        let token = body.0.token.0.as_str();
        let user = UserId(user_id.0);
        let ciphertext = state.cipher.encrypt(token, &user.to_string());
        match state.store.set_notion_token(user, &ciphertext, &NotionWorkspace::default()).await {
            Ok(true) => NoContentResponse::NoContent,
            Ok(false) => NoContentResponse::NotFound(user_not_found(user_id.0)),
            Err(e) => store_failure!(NoContentResponse, e),
        }
    }

    /// Subscribe the user to a page or database; starts the first sync.
    #[oai(path = "/api/users/:user_id/subscriptions", method = "post", operation_id = "createSubscription")]
    async fn subscribe(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        user_id: Path<Uuid>,
        body: JsonBody<NewSubscription>,
    ) -> CreateSubscriptionResponse {
        let notion_id = match body.0.notion_id.parse() {
            Ok(id) => id,
            Err(e) => {
                return CreateSubscriptionResponse::BadRequest(ErrorBody::new(
                    "invalid_notion_id",
                    e.to_string(),
                ));
            }
        };
        match state.store.subscribe(UserId(user_id.0), &notion_id, body.0.kind.as_str(), state.debounce).await
        {
            Ok((row, run_id)) => CreateSubscriptionResponse::Created(Json(CreatedSubscription {
                id: row.id,
                notion_id: row.notion_id,
                kind: row.kind,
                run_id: run_id.0,
            })),
            Err(UserError::UnknownUser) => CreateSubscriptionResponse::NotFound(user_not_found(user_id.0)),
            Err(UserError::DuplicateSubscription) => CreateSubscriptionResponse::Conflict(ErrorBody::new(
                "already_subscribed",
                "the user is already subscribed to this content",
            )),
            Err(UserError::Store(e)) => store_failure!(CreateSubscriptionResponse, e),
            Err(e) => {
                tracing::error!(error = %e, "subscribing failed");
                CreateSubscriptionResponse::Internal(ErrorBody::internal())
            }
        }
    }

    /// List the user's subscriptions.
    #[oai(path = "/api/users/:user_id/subscriptions", method = "get", operation_id = "listSubscriptions")]
    async fn list_subscriptions(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        user_id: Path<Uuid>,
    ) -> ListSubscriptionsResponse {
        let user = UserId(user_id.0);
        match state.store.user(user).await {
            Ok(None) => return ListSubscriptionsResponse::NotFound(user_not_found(user_id.0)),
            Err(e) => return store_failure!(ListSubscriptionsResponse, e),
            Ok(Some(_)) => {}
        }
        match state.store.subscriptions(user).await {
            Ok(rows) => ListSubscriptionsResponse::Ok(Json(SubscriptionList {
                items: rows.into_iter().map(Into::into).collect(),
            })),
            Err(e) => store_failure!(ListSubscriptionsResponse, e),
        }
    }

    /// The user's live flashcards (retired ones are not listed), oldest first, optionally only
    /// those from one page or database.
    #[oai(path = "/api/users/:user_id/flashcards", method = "get", operation_id = "listFlashcards")]
    async fn list_flashcards(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        user_id: Path<Uuid>,
        /// A page id, or a database id (its rows' cards).
        notion_id: Query<Option<NotionIdText>>,
        /// Page size, 1 to 500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ListFlashcardsResponse {
        let notion_id = match notion_id.0.as_ref().map(NotionIdText::parse).transpose() {
            Ok(id) => id,
            Err(e) => {
                return ListFlashcardsResponse::BadRequest(ErrorBody::new(
                    "invalid_notion_id",
                    e.to_string(),
                ));
            }
        };
        let limit = limit.0.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return ListFlashcardsResponse::BadRequest(ErrorBody::new(
                "invalid_limit",
                "`limit` must be 1 to 500",
            ));
        }
        let cursor = match cursor.0.as_deref().map(super::cursor::decode).transpose() {
            Ok(cursor) => cursor,
            Err(()) => {
                return ListFlashcardsResponse::BadRequest(ErrorBody::new(
                    "invalid_cursor",
                    "`cursor` is not one we issued",
                ));
            }
        };
        let user = UserId(user_id.0);
        match state.store.user(user).await {
            Ok(None) => return ListFlashcardsResponse::NotFound(user_not_found(user_id.0)),
            Err(e) => return store_failure!(ListFlashcardsResponse, e),
            Ok(Some(_)) => {}
        }
        let rows = match state
            .store
            .live_cards(user, notion_id.as_ref().map(NotionId::as_str), cursor, i64::from(limit) + 1)
            .await
        {
            Ok(rows) => rows,
            Err(e) => return store_failure!(ListFlashcardsResponse, e),
        };
        let (items, next_cursor) = super::cursor::page(rows, limit as usize, |r| (r.created_at, r.id));
        ListFlashcardsResponse::Ok(Json(FlashcardList {
            items: items
                .into_iter()
                .map(|r| Flashcard {
                    id: r.id,
                    front: r.front,
                    back: r.back,
                    source_page_id: r.source_page_id,
                    source_block_id: r.source_block_id,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                })
                .collect(),
            next_cursor,
        }))
    }

    /// Unsubscribe. The flashcards already made are kept.
    #[oai(
        path = "/api/users/:user_id/subscriptions/:notion_id",
        method = "delete",
        operation_id = "deleteSubscription"
    )]
    async fn unsubscribe(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        user_id: Path<Uuid>,
        notion_id: Path<NotionIdText>,
    ) -> DeleteSubscriptionResponse {
        let notion_id = match notion_id.0.parse() {
            Ok(id) => id,
            Err(e) => {
                return DeleteSubscriptionResponse::BadRequest(ErrorBody::new(
                    "invalid_notion_id",
                    e.to_string(),
                ));
            }
        };
        match state.store.unsubscribe(UserId(user_id.0), &notion_id).await {
            Ok(true) => DeleteSubscriptionResponse::NoContent,
            Ok(false) => DeleteSubscriptionResponse::NotFound(ErrorBody::new(
                "subscription_not_found",
                format!("user {} is not subscribed to {notion_id}", user_id.0),
            )),
            Err(e) => store_failure!(DeleteSubscriptionResponse, e),
        }
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id.0,
            email: row.email,
            notion_connected: row.notion_connected,
            created_at: row.created_at,
        }
    }
}

impl From<SubscriptionRow> for Subscription {
    fn from(row: SubscriptionRow) -> Self {
        Self {
            id: row.id,
            notion_id: row.notion_id,
            kind: row.kind,
            created_at: row.created_at,
            last_synced_at: row.last_synced_at,
        }
    }
}
