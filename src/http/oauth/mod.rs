//! OAuth "Connect Notion": send the user to Notion's consent page, then take the code Notion
//! redirects back with, exchange it for the user's access token and store it encrypted.
//!
//! `GET /api/notion/auth?user_id=` (management) answers 302 to Notion's authorize URL with a
//! signed, expiring, single-use `state` bound to the user. `GET /api/notion/auth/callback` is
//! public: the user's browser arrives there from Notion, so the state is the only proof of who
//! started the flow. Neither the code, nor the token, nor the client secret is ever logged.

pub mod state;

use std::sync::Arc;

use chrono::Utc;
use poem::web::Data;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Query, payload::Json};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use self::state::StateSigner;
use super::{ApiTags, HttpState, auth::ApiToken, error::ErrorBody};
use crate::{
    config::Config,
    crypto::SecretCipher,
    ids::UserId,
    notion::{NotionClient, NotionError},
    store::{NotionWorkspace, StoreError},
    tokens::refresh_token_owner,
};

/// What the OAuth endpoints need (part of [`HttpState`]).
pub struct NotionConnect {
    /// `None` when `NOTION_CLIENT_ID` / `NOTION_CLIENT_SECRET` / `NOTION_REDIRECT_URI` are not set.
    client: Option<OAuthClient>,
    notion: NotionClient,
    signer: StateSigner,
}

struct OAuthClient {
    id: String,
    secret: SecretString,
    redirect_uri: String,
}

impl NotionConnect {
    pub fn new(config: &Config, notion: NotionClient, cipher: &SecretCipher) -> Self {
        let client =
            match (&config.notion_client_id, &config.notion_client_secret, &config.notion_redirect_uri) {
                (Some(id), Some(secret), Some(redirect_uri)) => Some(OAuthClient {
                    id: id.clone(),
                    secret: secret.clone(),
                    redirect_uri: redirect_uri.clone(),
                }),
                _ => None,
            };
        Self { client, notion, signer: StateSigner::new(cipher, config.oauth_state_ttl) }
    }

    fn client(&self) -> Option<&OAuthClient> {
        self.client.as_ref()
    }
}

fn not_configured() -> Json<ErrorBody> {
    ErrorBody::new(
        "oauth_not_configured",
        "OAuth is not configured: set NOTION_CLIENT_ID, NOTION_CLIENT_SECRET and NOTION_REDIRECT_URI",
    )
}

fn invalid_state() -> Json<ErrorBody> {
    ErrorBody::new(
        "invalid_state",
        "the state is invalid, expired or already used; start again at GET /api/notion/auth",
    )
}

pub struct OAuthApi;

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum AuthorizeResponse {
    /// Send the user's browser to `Location`: Notion's consent page. The URL carries a state
    /// that is valid once, for this user, for `OAUTH_STATE_TTL_SECONDS` (10 minutes).
    #[oai(status = 302)]
    Found(#[oai(header = "Location")] String),
    /// `user_id` is missing or not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No such user.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `oauth_not_configured` (NOTION_CLIENT_ID, NOTION_CLIENT_SECRET and NOTION_REDIRECT_URI
    /// are not set), or the database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The outcome of a completed OAuth flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ConnectStatus {
    /// The user's Notion access token is stored (encrypted); syncs use it from now on.
    Connected,
}

#[derive(Debug, Object)]
pub struct Connected {
    pub status: ConnectStatus,
    pub user_id: Uuid,
    /// The Notion workspace the user authorised (Notion may not name it).
    #[oai(nullable)]
    pub workspace_name: Option<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum CallbackResponse {
    /// Connected: the token is stored, encrypted.
    #[oai(status = 200)]
    Ok(Json<Connected>),
    /// `missing_parameter` (no `code` or `state`), `invalid_state` (forged, another
    /// deployment's, expired or already used; also when the user it was issued to has been
    /// deleted, which deletes the user's states), `invalid_grant` (Notion refused the code: used
    /// before, expired or revoked) or `authorization_denied` (the user declined in Notion).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The user the state was issued to was deleted while the code was being exchanged.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `notion_unavailable` (Notion could not be reached or failed; start again later) or
    /// `notion_oauth_failed` (Notion refused our client credentials or request: check
    /// NOTION_CLIENT_ID, NOTION_CLIENT_SECRET and NOTION_REDIRECT_URI).
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// `oauth_not_configured`, or the database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

rejections!(AuthorizeResponse { 400 => BadRequest, 401 => Unauthorized }, |name, missing| match name {
    "user_id" if missing => Some("missing_parameter"),
    _ => None,
});
rejections!(CallbackResponse { 400 => BadRequest });

#[OpenApi(tag = "ApiTags::Notion")]
impl OAuthApi {
    /// Start connecting a user's Notion account: answers 302 to Notion's OAuth consent page.
    /// The Cognie app calls this with its API token and sends the user's browser to the
    /// `Location` it gets back; Notion then redirects to `NOTION_REDIRECT_URI`, which must
    /// reach `GET /api/notion/auth/callback`.
    #[oai(path = "/api/notion/auth", method = "get", operation_id = "startNotionOAuth")]
    async fn authorize(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
        /// The Cognie user who is connecting Notion.
        user_id: Query<Uuid>,
    ) -> AuthorizeResponse {
        let Some(client) = state.oauth.client() else {
            return AuthorizeResponse::Unavailable(not_configured());
        };
        let user = UserId(user_id.0);
        let (signed, issued) = state.oauth.signer.issue(user, Utc::now());
        match state.store.issue_oauth_state(issued.nonce, user, issued.expires_at).await {
            Ok(true) => {}
            Ok(false) => {
                return AuthorizeResponse::NotFound(ErrorBody::new(
                    "user_not_found",
                    format!("no user {user}"),
                ));
            }
            Err(e) => return store_failure!(AuthorizeResponse, e),
        }
        let url = state.oauth.notion.oauth_authorize_url(&client.id, &client.redirect_uri, &signed);
        tracing::info!(user_id = %user, "sending the user to Notion to connect their account");
        AuthorizeResponse::Found(url.into())
    }

    /// Complete connecting Notion (public: Notion redirects the user's browser here). Checks
    /// the state, exchanges the code at `{NOTION_API_BASE_URL}/v1/oauth/token` and stores the
    /// access token encrypted, with the workspace and bot ids.
    #[oai(path = "/api/notion/auth/callback", method = "get", operation_id = "completeNotionOAuth")]
    async fn callback(
        &self,
        state: Data<&Arc<HttpState>>,
        /// The temporary code from Notion.
        code: Query<Option<String>>,
        /// The state issued by `GET /api/notion/auth`.
        #[oai(name = "state")]
        oauth_state: Query<Option<String>>,
        /// Set by Notion instead of `code` when the user declined (e.g. `access_denied`).
        error: Query<Option<String>>,
    ) -> CallbackResponse {
        let Some(client) = state.oauth.client() else {
            return CallbackResponse::Unavailable(not_configured());
        };
        if let Some(error) = error.0.as_deref() {
            // Echoed only if it looks like an OAuth error code.
            let shown = if error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                error
            } else {
                "an error"
            };
            tracing::info!(error = shown, "the user did not connect Notion");
            return CallbackResponse::BadRequest(ErrorBody::new(
                "authorization_denied",
                format!("Notion reported `{shown}`: access was not granted"),
            ));
        }
        let (Some(code), Some(raw_state)) = (
            code.0.as_deref().map(str::trim).filter(|c| !c.is_empty()),
            oauth_state.0.as_deref().filter(|s| !s.is_empty()),
        ) else {
            return CallbackResponse::BadRequest(ErrorBody::new(
                "missing_parameter",
                "the `code` and `state` query parameters are required",
            ));
        };

        let verified = match state.oauth.signer.verify(raw_state, Utc::now()) {
            Ok(verified) => verified,
            Err(e) => {
                tracing::info!(reason = %e, "refused an OAuth callback");
                return CallbackResponse::BadRequest(invalid_state());
            }
        };
        let user = verified.user;
        match state.store.consume_oauth_state(verified.nonce, user).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(user_id = %user, "refused an OAuth callback: state already used or expired");
                return CallbackResponse::BadRequest(invalid_state());
            }
            Err(e) => return store_failure!(CallbackResponse, e),
        }

        let token = match state
            .oauth
            .notion
            .exchange_oauth_code(&client.id, client.secret.expose_secret(), code, &client.redirect_uri)
            .await
        {
            Ok(token) => token,
            Err(e) => return exchange_failure(&e, code, user),
        };

        let ciphertext = state.cipher.encrypt(&token.access_token, &user.to_string());
        let workspace = NotionWorkspace {
            workspace_id: Some(token.workspace_id.clone()),
            workspace_name: token.workspace_name.clone(),
            bot_id: Some(token.bot_id.clone()),
            refresh_ciphertext: token
                .refresh_token
                .as_deref()
                .map(|refresh| state.cipher.encrypt(refresh, &refresh_token_owner(user))),
        };
        match state.store.set_notion_token(user, &ciphertext, &workspace).await {
            Ok(true) => {}
            Ok(false) => {
                return CallbackResponse::NotFound(ErrorBody::new(
                    "user_not_found",
                    format!("no user {user}"),
                ));
            }
            Err(e) => return store_failure!(CallbackResponse, e),
        }
        tracing::info!(
            user_id = %user,
            workspace_id = %token.workspace_id,
            bot_id = %token.bot_id,
            "connected the user's Notion account"
        );
        CallbackResponse::Ok(Json(Connected {
            status: ConnectStatus::Connected,
            user_id: user.0,
            workspace_name: token.workspace_name,
        }))
    }
}

/// A failed code exchange: the user's problem (400) or Notion's / our configuration's (502),
/// never a 500. Notion's description is logged with the code blanked out, in case Notion
/// echoes the request body in a validation message.
fn exchange_failure(e: &NotionError, code: &str, user: UserId) -> CallbackResponse {
    let detail = e.to_string().replace(code, "[code]");
    match e.error_kind() {
        "notion_oauth_invalid_grant" => {
            tracing::info!(user_id = %user, error = %detail, "Notion refused the OAuth code");
            CallbackResponse::BadRequest(ErrorBody::new(
                "invalid_grant",
                "Notion refused the code: it was already used, has expired or was revoked; \
                 start again at GET /api/notion/auth",
            ))
        }
        kind if e.is_retryable() => {
            tracing::warn!(user_id = %user, error_kind = kind, error = %detail, "the OAuth code exchange failed");
            CallbackResponse::BadGateway(ErrorBody::new(
                "notion_unavailable",
                "Notion could not be reached or failed; try connecting again later",
            ))
        }
        kind => {
            tracing::error!(user_id = %user, error_kind = kind, error = %detail, "Notion refused the OAuth code exchange");
            CallbackResponse::BadGateway(ErrorBody::new(
                "notion_oauth_failed",
                format!(
                    "Notion refused the code exchange ({kind}); check NOTION_CLIENT_ID, \
                     NOTION_CLIENT_SECRET and NOTION_REDIRECT_URI"
                ),
            ))
        }
    }
}
