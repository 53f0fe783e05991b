//! What can go wrong when talking to Notion, and how each failure is classified.
//!
//! The workflow engine decides "retry later" or "fail the run now" from [`NotionError::is_retryable`]
//! and records [`NotionError::error_kind`] on the run, so both are part of the service's contract.
//!
//! | `error_kind` | when | retryable |
//! |---|---|---|
//! | `notion_invalid_request` | HTTP 400 (`validation_error`, `invalid_json`, `missing_version`, ...) | no |
//! | `notion_unauthorized` | HTTP 401 (`unauthorized`: token invalid, revoked or expired) | no |
//! | `notion_forbidden` | HTTP 403 (`restricted_resource`: missing capability or a workspace limit) | no |
//! | `notion_not_found` | HTTP 404 (`object_not_found`: deleted, or not shared with the integration) | no |
//! | `notion_unconfirmed_not_found` | HTTP 404 whose body is not Notion's (a proxy's, a wrong `NOTION_API_BASE_URL`): not taken to mean the content is gone | yes |
//! | `notion_conflict` | HTTP 409 (`conflict_error`) | yes |
//! | `notion_rate_limited` | HTTP 429 (`rate_limited`), after [`NotionError::retry_after`] | yes |
//! | `notion_request_blocked` | HTTP 429 with `rate_limit_reason: public_api_request_blocked` ("retrying won't help") | no |
//! | `notion_overloaded` | HTTP 529 (`service_overload`), after [`NotionError::retry_after`] | yes |
//! | `notion_server_error` | HTTP 500, 502, 503, 504 and any other 5xx | yes |
//! | `notion_unexpected_status` | any other status (3xx, 405, 413, ...) | no |
//! | `notion_timeout` | no complete answer within the configured timeout | yes |
//! | `notion_connection` | connect failure, reset or broken connection while sending or reading | yes |
//! | `notion_malformed_response` | a success answer whose body is not the JSON we expect | yes |
//! | `notion_oauth_invalid_grant` | token endpoint: `invalid_grant` (code reused, revoked, expired, redirect mismatch) | no |
//! | `notion_oauth_invalid_client` | token endpoint: `invalid_client` or HTTP 401 (wrong client id or secret) | no |
//! | `notion_oauth_failed` | token endpoint: any other OAuth error (`invalid_request`, ...) | no |
//! | `notion_client_config` | the client could not be built (bad base URL, TLS set-up) | no |
//!
//! No variant ever holds a token, a client secret or an OAuth code: the client keeps them in
//! request headers and bodies only, and error bodies from Notion do not echo them.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Longest `Retry-After` we honour. Notion documents ≤ 60 s per connection but "can be > 1 min"
/// for the workspace limit; an absurd value from a broken proxy must not park a run for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotionError {
    /// Notion answered with an error status. `code` and `message` come from its error body
    /// (`{"object":"error","status","code","message","request_id"}`); `code` is `None` when the
    /// body was not Notion's (e.g. an HTML 502 from a proxy): the status alone classifies it.
    #[error("Notion answered HTTP {status} ({}): {message}", .code.as_deref().unwrap_or("no error code"))]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
        request_id: Option<String>,
        /// From the `Retry-After` header, else from the body's `additional_data.retry_after`.
        retry_after: Option<Duration>,
        /// Notion's `additional_data`, e.g. `rate_limit_reason` or `child_data_source_ids`.
        additional_data: Option<Value>,
    },

    /// The OAuth token endpoint refused the exchange, with an RFC 6749 error body
    /// (`{"error":"invalid_grant","error_description":...}`).
    #[error("Notion's OAuth token endpoint answered HTTP {status} ({error}): {}", .description.as_deref().unwrap_or("no description"))]
    OAuth { status: u16, error: String, description: Option<String> },

    #[error("Notion did not answer within {after:?}")]
    Timeout {
        after: Duration,
        #[source]
        source: reqwest::Error,
    },

    #[error("the connection to Notion failed while {stage}")]
    Connection {
        stage: &'static str,
        #[source]
        source: reqwest::Error,
    },

    /// A response we could not use: not JSON, not the expected shape, or too large.
    #[error("Notion sent a response that could not be read (HTTP {status}): {detail}")]
    MalformedResponse { status: u16, detail: String },

    #[error("the Notion client could not be set up: {reason}")]
    Config { reason: String },
}

impl NotionError {
    /// Notion's request to slow down, remembered from an earlier answer and still in force for
    /// `left`: what a caller that did not ask again is told (a 429, so it is handled as one).
    pub fn still_slowed_down(left: Duration) -> Self {
        Self::Api {
            status: 429,
            code: Some("rate_limited".to_owned()),
            message: format!(
                "Notion asked to slow down; not asking again for another {} ms",
                left.as_millis()
            ),
            request_id: None,
            retry_after: Some(left),
            additional_data: None,
        }
    }

    /// The error with every copy of `secret` in Notion's own words (its message, description
    /// or an unreadable body) replaced by `label`: a token endpoint that quotes the request
    /// must not put a code or refresh token into a log line or a run's `last_error`.
    pub fn without_secret(self, secret: &str, label: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let clean = |text: String| text.replace(secret, label);
        match self {
            Self::Api { status, code, message, request_id, retry_after, additional_data } => {
                Self::Api { status, code, message: clean(message), request_id, retry_after, additional_data }
            }
            Self::OAuth { status, error, description } => {
                Self::OAuth { status, error: clean(error), description: description.map(clean) }
            }
            Self::MalformedResponse { status, detail } => {
                Self::MalformedResponse { status, detail: clean(detail) }
            }
            other => other,
        }
    }

    /// A short, stable, `notion_`-prefixed name for the failure class (see the module docs).
    pub fn error_kind(&self) -> &'static str {
        match self {
            Self::Api { status, .. } => match status {
                400 => "notion_invalid_request",
                401 => "notion_unauthorized",
                403 => "notion_forbidden",
                404 if self.is_not_found() => "notion_not_found",
                404 => "notion_unconfirmed_not_found",
                409 => "notion_conflict",
                429 if self.is_request_blocked() => "notion_request_blocked",
                429 => "notion_rate_limited",
                529 => "notion_overloaded",
                500..=599 => "notion_server_error",
                _ => "notion_unexpected_status",
            },
            Self::OAuth { status, error, .. } => match error.as_str() {
                "invalid_grant" => "notion_oauth_invalid_grant",
                "invalid_client" | "unauthorized_client" => "notion_oauth_invalid_client",
                _ if *status == 401 => "notion_oauth_invalid_client",
                _ => "notion_oauth_failed",
            },
            Self::Timeout { .. } => "notion_timeout",
            Self::Connection { .. } => "notion_connection",
            Self::MalformedResponse { .. } => "notion_malformed_response",
            Self::Config { .. } => "notion_client_config",
        }
    }

    /// Whether the same request may succeed later. Transient trouble (rate limits, overload,
    /// server errors, timeouts, broken connections, garbled bodies) is; a request Notion
    /// rejected for what it is (bad token, no access, gone, invalid) is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => match status {
                404 => !self.is_not_found(),
                409 | 529 => true,
                429 => !self.is_request_blocked(),
                500..=599 => true,
                _ => false,
            },
            Self::Timeout { .. } | Self::Connection { .. } | Self::MalformedResponse { .. } => true,
            Self::OAuth { .. } | Self::Config { .. } => false,
        }
    }

    /// How long Notion asked us to wait before the next request (429, 529, sometimes 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status Notion answered with, if it answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. }
            | Self::OAuth { status, .. }
            | Self::MalformedResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Notion's error `code` (`object_not_found`, ...) or the OAuth `error` (`invalid_grant`).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            Self::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True for a 401 from the API: the token is bad, revoked or expired (an expired OAuth
    /// token can be refreshed).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Api { status: 401, .. })
    }

    /// True for Notion's own 404 (`object_not_found`): the object was deleted or is no longer
    /// shared with the integration. A 404 without Notion's error body came from something else
    /// on the way (a proxy, a wrong base URL) and says nothing about the content: taken as
    /// "gone", it would retire the cards of every page read while it lasts.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, code: Some(code), .. } if code == "object_not_found")
    }

    /// Notion no longer accepts the `start_cursor` of a list's next page (400
    /// `validation_error`, "The start_cursor provided is invalid: ..."): cursors are only good
    /// for a while, and a block list's cursor is the id of its next block, which may have been
    /// deleted since. The list must be read again without it.
    pub fn is_cursor_rejected(&self) -> bool {
        matches!(
            self,
            Self::Api { status: 400, code: Some(code), message, .. }
                if code == "validation_error" && message.contains("start_cursor")
        )
    }

    /// Notion asks for fewer requests: a 429 (other than a blocked request), or a 529, which
    /// Notion asks to be treated like a 429. Neither says anything is wrong with the request.
    pub fn asks_to_slow_down(&self) -> bool {
        match self {
            Self::Api { status: 429, .. } => !self.is_request_blocked(),
            Self::Api { status: 529, .. } => true,
            _ => false,
        }
    }

    fn is_request_blocked(&self) -> bool {
        let Self::Api { additional_data: Some(data), .. } = self else { return false };
        data.get("rate_limit_reason").and_then(Value::as_str) == Some("public_api_request_blocked")
    }

    /// Builds the error for a non-2xx answer from the REST API. Pure, so the mapping is tested
    /// without a server. `retry_after_header` is the raw `Retry-After` value, if any.
    pub fn from_api_response(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<ApiErrorBody>(body).ok().filter(|b| b.object == "error");
        let header_delay = retry_after_header.and_then(parse_retry_after);
        match parsed {
            Some(body) => {
                let body_delay = body
                    .additional_data
                    .as_ref()
                    .and_then(|data| data.get("retry_after"))
                    .and_then(delay_from_json);
                Self::Api {
                    status,
                    code: Some(body.code),
                    message: body.message,
                    request_id: body.request_id,
                    retry_after: header_delay.or(body_delay),
                    additional_data: body.additional_data,
                }
            }
            // Deliberately not echoing the body: it is not Notion's, so we cannot know what it holds.
            None => Self::Api {
                status,
                code: None,
                message: format!("the error body was not a Notion error ({} bytes)", body.len()),
                request_id: None,
                retry_after: header_delay,
                additional_data: None,
            },
        }
    }

    /// Builds the error for a non-2xx answer from `/v1/oauth/token`, which speaks RFC 6749
    /// (`{"error","error_description"}`) for grant problems but Notion's own shape for the rest
    /// (rate limits, missing version, server errors).
    pub fn from_oauth_response(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Self {
        if (400..500).contains(&status)
            && status != 429
            && let Ok(oauth) = serde_json::from_slice::<OAuthErrorBody>(body)
        {
            return Self::OAuth { status, error: oauth.error, description: oauth.error_description };
        }
        // Notion's status-code page lists `invalid_grant` as an API-shaped `code` too; read as
        // the grant problem it is (a refused code, 400), not as a misconfigured client.
        if status == 400
            && let Ok(api) = serde_json::from_slice::<ApiErrorBody>(body)
            && api.object == "error"
            && api.code == "invalid_grant"
        {
            return Self::OAuth { status, error: api.code, description: Some(api.message) };
        }
        Self::from_api_response(status, retry_after_header, body)
    }
}

#[derive(Deserialize)]
struct ApiErrorBody {
    object: String,
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    additional_data: Option<Value>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// `Retry-After` is documented as integer seconds; HTTP also allows an HTTP-date, which the
/// official SDK honours too, so we accept both.
fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `additional_data.retry_after` is "a string of whole seconds"; accept a number as well.
fn delay_from_json(value: &Value) -> Option<Duration> {
    let secs = match value {
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests;
