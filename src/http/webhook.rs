//! `POST /api/notion/webhook/notion` and its companions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{Request, RequestBody, web::Data};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, Enum, ExtractParamOptions, Object, OpenApi,
    param::{Header, Query},
    payload::Json,
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::{ApiTags, HttpState, auth::ApiToken, error::ErrorBody};
use crate::webhook::{IntakeError, IntakeResult, event::BodyError, signature::SignatureError};

/// Largest webhook body accepted (Notion's are a few KiB).
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

/// Longest the body of a delivery may take to arrive once its headers have. Notion sends a few
/// KiB at once; a client that trickles bytes would otherwise hold a connection and a task for as
/// long as it keeps each gap under the 60 s idle timeout.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest a delivery may wait on the database before it is answered 503. A database that
/// hangs (rather than refusing connections) would otherwise hang Notion's request on a pooled
/// connection for as long as TCP takes to give up. If the event was committed after all,
/// Notion's redelivery is answered `duplicate`.
pub const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lines about rejected deliveries that anyone can cause (unsigned, unreadable, beyond the
/// handshake budget) logged per second; the rest are counted in `cognie_webhooks_total` and
/// summed up in one line. A flood of junk must not fill the disk of `LOG_FILE`, nor block the
/// runtime's threads on a full log buffer.
const REJECTIONS_LOGGED_PER_SECOND: u32 = 5;

#[derive(Default)]
pub struct RejectionLog {
    window: std::sync::Mutex<RejectionWindow>,
}

#[derive(Default)]
struct RejectionWindow {
    start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl RejectionLog {
    /// Logs "Rejected Notion webhook" with `reason` and `error`, unless this second's share is
    /// used up.
    fn warn(&self, reason: &str, error: &str) {
        let (log, suppressed_before) = self.admit(std::time::Instant::now());
        if suppressed_before > 0 {
            tracing::warn!(
                not_logged = suppressed_before,
                "more Notion webhooks were rejected than are logged (see cognie_webhooks_total)"
            );
        }
        if log {
            if error.is_empty() {
                tracing::warn!(reason, "Rejected Notion webhook");
            } else {
                tracing::warn!(reason, error, "Rejected Notion webhook");
            }
        }
    }

    /// Whether a rejection at `now` is logged, and how many went unlogged in the second
    /// before it, when this one starts a new second (0 otherwise).
    fn admit(&self, now: std::time::Instant) -> (bool, u64) {
        let mut w = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut suppressed_before = 0;
        if w.start.is_none_or(|start| now.duration_since(start) >= std::time::Duration::from_secs(1)) {
            suppressed_before = w.suppressed;
            *w = RejectionWindow { start: Some(now), logged: 0, suppressed: 0 };
        }
        let log = w.logged < REJECTIONS_LOGGED_PER_SECOND;
        if log {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        (log, suppressed_before)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn rejections_beyond_five_a_second_are_counted_then_summed_up() {
        let log = RejectionLog::default();
        let start = Instant::now();
        let admitted: Vec<(bool, u64)> =
            (0..8).map(|n| log.admit(start + Duration::from_millis(n * 10))).collect();
        assert_eq!(admitted.iter().filter(|(logged, _)| *logged).count(), 5);
        assert!(admitted.iter().all(|(_, before)| *before == 0));
        assert_eq!(
            log.admit(start + Duration::from_millis(1_000)),
            (true, 3),
            "the next second sums up the last"
        );
        assert_eq!(log.admit(start + Duration::from_millis(1_010)), (true, 0));
    }
}

pub struct WebhookApi;

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AckStatus {
    /// The verification handshake's token was stored.
    VerificationReceived,
    /// Stored durably; its workflow has started.
    Accepted,
    /// This event was received before; nothing new was started.
    Duplicate,
    /// Stored, but its type does not affect flashcards.
    Ignored,
}

#[derive(Debug, Object)]
pub struct WebhookAck {
    pub status: AckStatus,
    /// Our id of the stored event (absent for the handshake).
    #[oai(skip_serializing_if_is_none)]
    pub event_id: Option<Uuid>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum WebhookResponse {
    /// Durable: stored (and its workflow started) before this answer was sent.
    #[oai(status = 200)]
    Ok(Json<WebhookAck>),
    /// The signature is valid but the body is not a usable event (malformed JSON, no `type`),
    /// or the request itself is malformed (e.g. a signature header that is not text).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, malformed or wrong `X-Notion-Signature`, or no signing secret known yet.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The body did not arrive within 10 s of the headers. Notion will redeliver.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// The body is larger than 1 MiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// A verification handshake beyond this instance's budget (10 a minute; it needs no
    /// signature, so it is budgeted): not stored. `Retry-After` says when the next minute starts.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// An unexpected failure; it was logged. Notion will redeliver.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is unavailable; nothing was stored. Notion will redeliver.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(Debug, Object)]
pub struct Challenge {
    pub challenge: String,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::rejected")]
pub enum ChallengeResponse {
    /// The challenge, echoed.
    #[oai(status = 200)]
    Ok(Json<Challenge>),
    /// No `challenge` query parameter.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

#[derive(Debug, Object)]
pub struct VerificationToken {
    /// The token Notion sent in its verification handshake: paste it into Notion's webhook
    /// settings to verify the subscription.
    pub verification_token: String,
    /// When it was last received.
    pub received_at: DateTime<Utc>,
    /// Whether incoming events are verified with `NOTION_WEBHOOK_SECRET` (`true`) or with the
    /// first verification token ever received (`false`).
    pub signing_secret_configured: bool,
    /// Whether incoming events are verified with this token. `false` with
    /// `NOTION_WEBHOOK_SECRET` set, and when an earlier handshake's token is the one in use
    /// (a subscription made again sends a new one): then set `NOTION_WEBHOOK_SECRET` to the
    /// token Notion's subscription shows, or its events are refused 401.
    pub verifies_events: bool,
    /// How many distinct handshake tokens are stored (those last received more than
    /// `RETENTION_DAYS` ago are pruned, but the first and the latest). More than one: a handshake needs no
    /// signature, so the latest may be anyone's; compare it with the token Notion's settings
    /// show before you paste it or set `NOTION_WEBHOOK_SECRET` to it.
    pub tokens_received: i64,
}

#[derive(ApiResponse)]
pub enum VerificationTokenResponse {
    #[oai(status = 200)]
    Ok(Json<VerificationToken>),
    /// Missing or wrong bearer token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No handshake has been received yet.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

rejections!(WebhookResponse { 400 => BadRequest, 401 => Unauthorized, 408 => RequestTimeout, 413 => PayloadTooLarge });
rejections!(ChallengeResponse { 400 => BadRequest }, |name, missing| match name {
    "challenge" if missing => Some("missing_challenge"),
    _ => None,
});

#[OpenApi(tag = "ApiTags::Webhook")]
impl WebhookApi {
    /// Receive a Notion webhook.
    ///
    /// The body must be signed: `X-Notion-Signature: sha256=<hex HMAC-SHA256 of the raw body>`,
    /// keyed with `NOTION_WEBHOOK_SECRET` (or, if unset, the first verification token received).
    /// The one exception is Notion's verification handshake `{"verification_token": ...}`,
    /// which is stored for ops to read. Accepts Notion's event envelopes and the simple form
    /// `{"type":"page.updated","page":{"id":...}}`. A 200 means the event is durable.
    #[oai(path = "/api/notion/webhook/notion", method = "post", operation_id = "receiveNotionWebhook")]
    async fn receive(
        &self,
        state: Data<&Arc<HttpState>>,
        /// `sha256=` followed by the lowercase hex HMAC-SHA256 of the raw body.
        #[oai(name = "X-Notion-Signature")]
        signature: Header<Option<String>>,
        body: RawWebhookBody,
    ) -> WebhookResponse {
        let bytes = match body.0 {
            Ok(bytes) => bytes,
            Err(unread) => {
                let (reason, code, message) = match &unread {
                    UnreadBody::TooLarge => (
                        "payload_too_large",
                        "payload_too_large",
                        format!("the body exceeds {MAX_WEBHOOK_BODY} bytes"),
                    ),
                    UnreadBody::TimedOut => (
                        "body_timeout",
                        "request_timeout",
                        format!("the body did not arrive within {BODY_READ_TIMEOUT:?}"),
                    ),
                    UnreadBody::Broken(e) => {
                        ("body_unreadable", "unreadable_body", format!("the body could not be read: {e}"))
                    }
                };
                state.metrics.webhook("rejected", reason);
                state.rejections.warn(reason, &message);
                let body = ErrorBody::new(code, message);
                return match unread {
                    UnreadBody::TooLarge => WebhookResponse::PayloadTooLarge(body),
                    UnreadBody::TimedOut => WebhookResponse::RequestTimeout(body),
                    UnreadBody::Broken(_) => WebhookResponse::BadRequest(body),
                };
            }
        };
        let received =
            tokio::time::timeout(STORE_TIMEOUT, state.intake.receive(&bytes, signature.0.as_deref())).await;
        let Ok(received) = received else {
            state.metrics.webhook("error", "database_timeout");
            tracing::error!(
                error = format!("the database did not answer within {STORE_TIMEOUT:?}"),
                "Error processing Notion webhook"
            );
            return WebhookResponse::Unavailable(ErrorBody::unavailable());
        };
        match received {
            Ok(result) => {
                state.metrics.webhook(result.label(), "");
                WebhookResponse::Ok(Json(ack(result)))
            }
            Err(IntakeError::Unauthorized(e)) => {
                state.metrics.webhook("rejected", e.reason());
                state.rejections.warn(e.reason(), "");
                let code = match e {
                    SignatureError::NoSecret => "no_signing_secret",
                    _ => "invalid_signature",
                };
                WebhookResponse::Unauthorized(ErrorBody::new(code, e.to_string()))
            }
            Err(e @ IntakeError::TooManyHandshakes { retry_after }) => {
                state.metrics.webhook("rejected", "too_many_handshakes");
                state.rejections.warn("too_many_handshakes", "");
                WebhookResponse::TooManyRequests(
                    ErrorBody::new("too_many_handshakes", e.to_string()),
                    retry_after.as_secs(),
                )
            }
            Err(IntakeError::BadRequest(e)) => {
                state.metrics.webhook("rejected", "invalid_body");
                tracing::warn!(reason = "invalid_body", error = %e, "Rejected Notion webhook");
                let code = match e {
                    BodyError::MalformedJson(_) => "malformed_json",
                    BodyError::NotAnObject | BodyError::MissingType | BodyError::HoldsNul => "invalid_event",
                };
                WebhookResponse::BadRequest(ErrorBody::new(code, e.to_string()))
            }
            Err(IntakeError::Store(e)) if e.is_unavailable() => {
                state.metrics.webhook("error", "database_unavailable");
                tracing::error!(error = %e, "Error processing Notion webhook");
                WebhookResponse::Unavailable(ErrorBody::unavailable())
            }
            Err(IntakeError::Store(crate::store::StoreError::InvalidData(e))) => {
                state.metrics.webhook("rejected", "unstorable_body");
                tracing::warn!(reason = "unstorable_body", error = %e, "Rejected Notion webhook");
                WebhookResponse::BadRequest(ErrorBody::new(
                    "invalid_event",
                    "the event contains data that cannot be stored",
                ))
            }
            Err(e) => {
                state.metrics.webhook("error", "internal");
                tracing::error!(error = %e, "Error processing Notion webhook");
                WebhookResponse::Internal(ErrorBody::internal())
            }
        }
    }

    /// Echo a verification challenge (`GET ...?challenge=X` → `{"challenge":"X"}`), for checking
    /// that the webhook endpoint is reachable.
    #[oai(path = "/api/notion/webhook/notion/verify", method = "get", operation_id = "verifyNotionWebhook")]
    async fn verify(&self, challenge: Query<String>) -> ChallengeResponse {
        ChallengeResponse::Ok(Json(Challenge { challenge: challenge.0 }))
    }

    /// The verification token from Notion's subscription handshake, for pasting into Notion's
    /// webhook settings ("Verify subscription").
    #[oai(
        path = "/api/notion/webhook/verification-token",
        method = "get",
        operation_id = "getWebhookVerificationToken"
    )]
    async fn verification_token(
        &self,
        _auth: ApiToken,
        state: Data<&Arc<HttpState>>,
    ) -> VerificationTokenResponse {
        match state.intake.latest_verification_token().await {
            Ok(Some(latest)) => VerificationTokenResponse::Ok(Json(VerificationToken {
                verification_token: latest.token.expose_secret().to_owned(),
                received_at: latest.received_at,
                signing_secret_configured: state.intake.uses_configured_secret(),
                verifies_events: latest.verifies_events,
                tokens_received: latest.tokens,
            })),
            Ok(None) => VerificationTokenResponse::NotFound(ErrorBody::new(
                "no_verification_token",
                "no verification handshake has been received yet",
            )),
            Err(IntakeError::Store(e)) if e.is_unavailable() => {
                VerificationTokenResponse::Unavailable(ErrorBody::unavailable())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the verification token");
                VerificationTokenResponse::Internal(ErrorBody::internal())
            }
        }
    }
}

fn ack(result: IntakeResult) -> WebhookAck {
    let (status, event_id) = match result {
        IntakeResult::VerificationReceived => (AckStatus::VerificationReceived, None),
        IntakeResult::Accepted(id) => (AckStatus::Accepted, Some(id.0)),
        IntakeResult::Duplicate(id) => (AckStatus::Duplicate, Some(id.0)),
        IntakeResult::Ignored(id) => (AckStatus::Ignored, Some(id.0)),
    };
    WebhookAck { status, event_id }
}

/// Why a delivery's body was not read.
#[derive(Debug)]
pub enum UnreadBody {
    /// It was over [`MAX_WEBHOOK_BODY`].
    TooLarge,
    /// It did not arrive within [`BODY_READ_TIMEOUT`].
    TimedOut,
    /// It broke off (the client reset the connection or sent less than it declared).
    Broken(String),
}

/// The raw request body, exactly as received (the signature covers these bytes), read with a
/// size cap that also holds for chunked bodies without a Content-Length, and a deadline. Any
/// content type is accepted: the signature, not the header, says whether the body is Notion's.
pub struct RawWebhookBody(Result<bytes::Bytes, UnreadBody>);

/// Documents the envelope in the spec; the handler itself reads raw bytes.
// Every field may be null or absent: the handler tolerates both (a null `type` is no type).
#[derive(Debug, Object)]
#[oai(rename = "NotionWebhookBody", nullable_all)]
pub struct NotionWebhookBodyDoc {
    /// Notion's event id (the same on every delivery attempt).
    pub id: Option<String>,
    /// e.g. `page.content_updated`, `data_source.content_updated`, `page.updated`.
    #[oai(rename = "type")]
    pub event_type: Option<String>,
    pub timestamp: Option<String>,
    pub attempt_number: Option<i32>,
    /// `{"id": ..., "type": "page" | "database" | "data_source" | ...}`
    pub entity: Option<serde_json::Value>,
    /// Event data; `data.parent` names the page's database / data source.
    pub data: Option<serde_json::Value>,
    /// Simple form: `{"id": ...}` of the page.
    pub page: Option<serde_json::Value>,
    /// Simple form: `{"id": ...}` of the database.
    pub database: Option<serde_json::Value>,
    /// Present only in the one-time verification handshake.
    pub verification_token: Option<String>,
}

impl<'a> ApiExtractor<'a> for RawWebhookBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        NotionWebhookBodyDoc::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("The raw event, exactly as Notion sent it (the signature covers these bytes)."),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: NotionWebhookBodyDoc::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let read = super::body::read_capped(request, body, MAX_WEBHOOK_BODY);
        Ok(Self(match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
            Ok(Ok(Some(bytes))) => Ok(bytes),
            Ok(Ok(None)) => Err(UnreadBody::TooLarge),
            Ok(Err(e)) => Err(UnreadBody::Broken(e.to_string())),
            Err(_) => Err(UnreadBody::TimedOut),
        }))
    }
}
