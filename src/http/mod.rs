//! The HTTP API: poem-openapi operations only. Each operation declares exactly the statuses it
//! returns; everything else (unknown routes, bad JSON, ...) goes through [`error::render`].

/// Maps a store failure to the 503 / 500 pair every endpoint shares (declared before the
/// modules that use it). Needs `StoreError` and `ErrorBody` in scope.
macro_rules! store_failure {
    ($response:ident, $err:expr) => {{
        let err: &StoreError = &$err;
        if err.is_unavailable() {
            $response::Unavailable(ErrorBody::unavailable())
        } else {
            tracing::error!(error = %err, "request failed");
            $response::Internal(ErrorBody::internal())
        }
    }};
}

/// Implements `rejected`, the `#[oai(bad_request_handler = "Self::rejected")]` of a response
/// enum: requests poem-openapi cannot extract are answered with the enum's own variants (by
/// status; anything else is a 400 `BadRequest`), so the spec declares every status the
/// operation can answer. `$codes` is `|param_name, missing| Option<code>` (see
/// [`error::rejected`]). Needs `ErrorBody` in scope.
macro_rules! rejections {
    ($response:ident { $($status:literal => $variant:ident),+ $(,)? }) => {
        rejections!($response { $($status => $variant),+ }, |_, _| None);
    };
    ($response:ident { $($status:literal => $variant:ident),+ $(,)? }, $codes:expr) => {
        impl $response {
            fn rejected(err: poem::Error) -> Self {
                let (status, body) = crate::http::error::rejected(err, $codes);
                match status.as_u16() {
                    $($status => Self::$variant(body),)+
                    _ => Self::BadRequest(body),
                }
            }
        }
    };
}

mod allow;
pub mod auth;
pub mod body;
pub mod cursor;
pub mod error;
pub mod health;
pub mod notion;
pub mod oauth;
pub mod params;
mod recent;
pub mod tls;
pub mod users;
pub mod webhook;
pub mod workflows;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};
use secrecy::SecretString;

use crate::{
    crypto::SecretCipher,
    store::{DebounceWindow, Store},
    webhook::Intake,
};

/// What the handlers need, shared by every request.
pub struct HttpState {
    pub store: Store,
    pub intake: Intake,
    pub api_token: SecretString,
    pub cipher: SecretCipher,
    pub debounce: DebounceWindow,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// OAuth "Connect Notion".
    pub oauth: oauth::NotionConnect,
    /// How many rejected deliveries are logged (see [`webhook::RejectionLog`]).
    pub rejections: webhook::RejectionLog,
}

/// Groups in the spec and in Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Notion calls these.
    Webhook,
    /// Users, their Notion connection and subscriptions (the Cognie app calls these).
    Users,
    /// Syncing with Notion: manual syncs, sync status, connecting a Notion account.
    Notion,
    /// Ops: workflow runs, retries, cancellation, queue statistics.
    Workflows,
    /// Liveness, readiness and metrics.
    Health,
}

type Apis = (
    webhook::WebhookApi,
    users::UsersApi,
    notion::NotionApi,
    oauth::OAuthApi,
    workflows::WorkflowsApi,
    health::HealthApi,
);

/// The OpenAPI service: the source of both the routes and the spec.
pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (webhook::WebhookApi, users::UsersApi, notion::NotionApi, oauth::OAuthApi, workflows::WorkflowsApi, health::HealthApi), "cognie-sync", env!("CARGO_PKG_VERSION"))
        .description(
            "Keeps Cognie flashcards in step with Notion: verified webhook intake, durable sync \
             workflows, and the operations API. Management endpoints need `Authorization: Bearer <API_TOKEN>`.",
        )
}

/// The generated spec, as checked in at `openapi/openapi.json`.
pub fn spec_json() -> String {
    api_service().spec()
}

/// All routes: the API, its spec at `/openapi.json`, Swagger UI at `/docs`.
pub fn routes(state: Arc<HttpState>) -> impl Endpoint {
    let api = api_service();
    let spec: serde_json::Value = serde_json::from_str(&api.spec()).expect("the generated spec is JSON");
    let allowed = Arc::new(allow::AllowedMethods::from_spec(&spec));
    let ops = Arc::new(health::OpsState::new(state.store.clone(), state.metrics.clone()));
    Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/docs", api.swagger_ui())
        .nest("/", api)
        .data(state)
        .data(ops)
        .catch_all_error(error::render)
        .around(move |ep, req| allow::add_allow_header(allowed.clone(), ep, req))
}

/// The ops endpoints alone (`/healthz`, `/readyz`, `/metrics`, as in the API), for
/// `OPS_BIND_ADDR`: probes and scrapes of any process, a `worker` too, on a port that need not
/// be reachable from outside.
pub fn ops_routes(ops: Arc<health::OpsState>) -> impl Endpoint {
    let api = OpenApiService::new(health::HealthApi, "cognie-sync ops", env!("CARGO_PKG_VERSION"));
    Route::new().nest("/", api).data(ops).catch_all_error(error::render)
}
