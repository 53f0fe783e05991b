//! One error body everywhere: `{"code": "snake_case", "message": "..."}`, including poem's own
//! errors (unknown route, wrong method, bad JSON, missing content type, ...).

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    Object,
    error::{ParseParamError, ParsePathError},
    payload::Json,
};

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
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        _ if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

/// The message of every 401.
const UNAUTHORIZED: &str = "a valid `Authorization: Bearer <API_TOKEN>` header is required";

/// A request poem-openapi could not extract (a parameter or body that does not parse, a missing
/// or unsupported content type, a missing or wrong bearer token), as the status and body the
/// operation declares for it. `param_code(name, missing)` may give a parameter's failures their
/// own code (e.g. `invalid_limit`); otherwise the code follows the status (`bad_request`).
/// Operations hand their errors here through `#[oai(bad_request_handler)]` (see the
/// `rejections!` macro), so that each of these statuses is in the spec.
pub fn rejected(
    err: poem::Error,
    param_code: impl Fn(&str, bool) -> Option<&'static str>,
) -> (StatusCode, Json<ErrorBody>) {
    let status = err.status();
    if status == StatusCode::UNAUTHORIZED {
        return (status, ErrorBody::new(code_for(status), UNAUTHORIZED));
    }
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        let missing = e.reason.ends_with("expects an input value.");
        let message = if missing {
            format!("the `{}` parameter is required", e.name)
        } else {
            format!("`{}` is invalid: {}", e.name, e.reason)
        };
        let code = param_code(e.name, missing).unwrap_or("bad_request");
        return (StatusCode::BAD_REQUEST, ErrorBody::new(code, message));
    }
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        // poem-openapi names path parameters by position; the reason says what was wrong.
        return (
            StatusCode::BAD_REQUEST,
            ErrorBody::new("bad_request", format!("invalid path: {}", e.reason)),
        );
    }
    (status, ErrorBody::new(code_for(status), err.to_string()))
}

/// Turns any error poem or poem-openapi raises into our error body.
pub async fn render(err: poem::Error) -> Response {
    let status = err.status();
    let message = if status.is_server_error() {
        tracing::error!(error = %err, status = status.as_u16(), "request failed");
        "an internal error occurred; it has been logged".to_owned()
    } else if status == StatusCode::UNAUTHORIZED {
        UNAUTHORIZED.to_owned()
    } else {
        err.to_string()
    };
    let body = ErrorBody { code: code_for(status).to_owned(), message };
    Json(body).with_status(status).into_response()
}
