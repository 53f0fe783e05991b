//! Users, their Notion tokens, and their subscriptions (the Cognie app calls these).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{ApiTags, HttpState, auth::ApiToken, error::ErrorBody};
use crate::{
    ids::{NotionId, UserId},
    store::{
        StoreError,
        pg::users::{NotionWorkspace, SubscriptionRow, UserError, UserRow},
    },
};

pub struct UsersApi;

#[derive(Debug, Object)]
pub struct NewUser {
    /// Unique (case-insensitive).
    pub email: String,
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
    pub token: String,
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
    pub notion_id: String,
    pub kind: SubscriptionKind,
}

#[derive(Debug, Object)]
pub struct Subscription {
    pub id: Uuid,
    /// Canonical form: lowercase, dashed.
    pub notion_id: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
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
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
pub enum GetUserResponse {
    #[oai(status = 200)]
    Ok(Json<User>),
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
pub enum NoContentResponse {
    /// Done.
    #[oai(status = 204)]
    NoContent,
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
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
pub enum ListSubscriptionsResponse {
    #[oai(status = 200)]
    Ok(Json<SubscriptionList>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

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
        body: Json<NewUser>,
    ) -> CreateUserResponse {
        let email = body.0.email.trim();
        if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
            return CreateUserResponse::BadRequest(ErrorBody::new(
                "invalid_email",
                "`email` must be an email address",
            ));
        }
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
        body: Json<NotionTokenBody>,
    ) -> NoContentResponse {
        let token = body.0.token.trim();
        if token.is_empty() || token.len() > 2048 || token.chars().any(char::is_whitespace) {
            return NoContentResponse::BadRequest(ErrorBody::new(
                "invalid_token",
                "`token` must be a Notion token",
            ));
        }
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
        body: Json<NewSubscription>,
    ) -> CreateSubscriptionResponse {
        let notion_id = match NotionId::parse(&body.0.notion_id) {
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
        notion_id: Path<String>,
    ) -> NoContentResponse {
        let notion_id = match NotionId::parse(&notion_id.0) {
            Ok(id) => id,
            Err(e) => {
                return NoContentResponse::BadRequest(ErrorBody::new("invalid_notion_id", e.to_string()));
            }
        };
        match state.store.unsubscribe(UserId(user_id.0), &notion_id).await {
            Ok(true) => NoContentResponse::NoContent,
            Ok(false) => NoContentResponse::NotFound(ErrorBody::new(
                "subscription_not_found",
                format!("user {} is not subscribed to {notion_id}", user_id.0),
            )),
            Err(e) => store_failure!(NoContentResponse, e),
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
