//! One error body everywhere: `{"code": "snake_case", "message": "..."}`, including poem's own
//! errors (unknown route, wrong method, bad JSON, missing content type, ...).

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{Object, payload::Json};

/// The body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `invalid_signature`.
    pub code: String,
    /// A human-readable explanation. Never contains internals or secrets.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Json<Self> {
        Json(Self { code: code.to_owned(), message: message.into() })
    }

    /// The body for 500s: the cause goes to the log, never to the client.
    pub fn internal() -> Json<Self> {
        Self::new("internal_error", "an internal error occurred; it has been logged")
    }

    pub fn unavailable() -> Json<Self> {
        Self::new("database_unavailable", "the database is unavailable; retry later")
    }
}

/// The code for an HTTP status, for errors that did not choose their own.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        _ if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

/// Turns any error poem or poem-openapi raises into our error body.
pub async fn render(err: poem::Error) -> Response {
    let status = err.status();
    let message = if status.is_server_error() {
        tracing::error!(error = %err, status = status.as_u16(), "request failed");
        "an internal error occurred; it has been logged".to_owned()
    } else if status == StatusCode::UNAUTHORIZED {
        "a valid `Authorization: Bearer <API_TOKEN>` header is required".to_owned()
    } else {
        err.to_string()
    };
    let body = ErrorBody { code: code_for(status).to_owned(), message };
    Json(body).with_status(status).into_response()
}
