//! The intake path: recognise the body, verify its signature, store it durably (starting its
//! workflow in the same transaction), and only then report success.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{
    WebhookEvent,
    event::{self, BodyError, Disposition, ParsedBody},
    signature::{self, SignatureError},
};
use crate::{
    crypto::SecretCipher,
    ids::EventId,
    store::{IntakeOutcome, NewEvent, Store, StoreError},
};

/// Associated data binding a stored verification token to its purpose.
pub const VERIFICATION_TOKEN_AAD: &str = "notion-webhook-verification-token";

/// How long "no verification token stored yet" is remembered, so unsigned junk cannot make
/// every request query the database.
const MISSING_KEY_RECHECK: Duration = Duration::from_secs(1);

/// Handshakes one process stores per minute. Notion sends one when a subscription is made (and
/// when ops ask it to resend); the handshake needs no signature, so without a budget anyone
/// could make every request a database write on the path Notion's deliveries need.
pub const HANDSHAKES_PER_MINUTE: u32 = 10;
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(60);

/// The largest body taken for a handshake (`{"verification_token": ...}`, its token at most
/// [`event::MAX_VERIFICATION_TOKEN_LEN`] bytes) and so parsed before any signature check.
pub const MAX_HANDSHAKE_BODY: usize = 4096;

/// The latest handshake's token, for ops to paste into Notion.
pub struct LatestVerificationToken {
    pub token: SecretString,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Whether events are verified with it (no `NOTION_WEBHOOK_SECRET`, and it is the first).
    pub verifies_events: bool,
    /// Distinct tokens stored: more than one, and the latest may be anyone's.
    pub tokens: i64,
}

/// What a successful delivery became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeResult {
    VerificationReceived,
    Accepted(EventId),
    Duplicate(EventId),
    Ignored(EventId),
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("rejected: {0}")]
    Unauthorized(#[from] SignatureError),
    #[error("bad request: {0}")]
    BadRequest(#[from] BodyError),
    #[error("the event could not be stored: {0}")]
    Store(#[from] StoreError),
    #[error("the stored verification token could not be read: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// More handshakes than [`HANDSHAKES_PER_MINUTE`] came this minute; this one was not stored.
    #[error("more than {HANDSHAKES_PER_MINUTE} verification handshakes this minute; try again in {} s", .retry_after.as_secs())]
    TooManyHandshakes { retry_after: Duration },
}

/// The handshakes stored in the current minute.
#[derive(Default)]
struct HandshakeBudget {
    window_start: Option<Instant>,
    stored: u32,
}

impl HandshakeBudget {
    /// Takes one handshake's place in this minute, or says when the next minute starts.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let start = match self.window_start {
            Some(start) if now.duration_since(start) < HANDSHAKE_WINDOW => start,
            _ => {
                self.window_start = Some(now);
                self.stored = 0;
                now
            }
        };
        if self.stored >= HANDSHAKES_PER_MINUTE {
            let left = HANDSHAKE_WINDOW.saturating_sub(now.duration_since(start));
            // Whole seconds for `Retry-After`, rounded up so a retry is never early.
            return Err(Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)));
        }
        self.stored += 1;
        Ok(())
    }

    /// Returns a place taken for a handshake that was not stored after all.
    fn give_back(&mut self) {
        self.stored = self.stored.saturating_sub(1);
    }
}

/// The signing key, when it is learnt from the handshake rather than configured.
#[derive(Default)]
struct LearntKey {
    key: Option<SecretString>,
    missing_since: Option<Instant>,
}

pub struct Intake {
    store: Store,
    cipher: SecretCipher,
    configured_secret: Option<SecretString>,
    learnt: Mutex<LearntKey>,
    handshakes: Mutex<HandshakeBudget>,
}

impl Intake {
    pub fn new(store: Store, cipher: SecretCipher, configured_secret: Option<SecretString>) -> Self {
        Self { store, cipher, configured_secret, learnt: Mutex::default(), handshakes: Mutex::default() }
    }

    /// Handles one delivery. `Ok` means it is durable (or was a handshake, also stored).
    pub async fn receive(
        &self,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<IntakeResult, IntakeError> {
        // A body is parsed before its signature is checked only to recognise the handshake,
        // which Notion may send unsigned, and only if it is small enough to be one: an unsigned
        // megabyte costs no parse. Nothing from an unverified body is stored or acted on.
        let parsed = (body.len() <= MAX_HANDSHAKE_BODY).then(|| event::parse(body));
        let key = match &parsed {
            Some(Ok(ParsedBody::Handshake { .. })) => None,
            _ => self.signing_key().await?,
        };
        let verified =
            match decide(parsed, body, signature_header, key.as_ref().map(|k| k.expose_secret().as_bytes()))?
            {
                Decision::Handshake { verification_token } => {
                    let taken = self.handshake_budget().take(Instant::now());
                    taken.map_err(|retry_after| IntakeError::TooManyHandshakes { retry_after })?;
                    if let Err(e) = self.store_verification_token(&verification_token).await {
                        // Not stored: Notion's redelivery of it must not find the budget spent.
                        self.handshake_budget().give_back();
                        return Err(e);
                    }
                    return Ok(IntakeResult::VerificationReceived);
                }
                Decision::Store(verified) => verified,
            };
        let event = &verified.event;
        let new_event = verified.new_event(EventId::new());
        let (entity_id, ignore_reason) = (new_event.entity_id, new_event.ignore_reason);
        let result = match self.store.record_event(&new_event).await? {
            IntakeOutcome::Duplicate(id) => IntakeResult::Duplicate(id),
            IntakeOutcome::Stored(id) if ignore_reason.is_some() => IntakeResult::Ignored(id),
            IntakeOutcome::Stored(id) => IntakeResult::Accepted(id),
        };
        tracing::info!(
            event_type = %event.event_type,
            notion_event_id = event.notion_event_id.as_deref().unwrap_or(""),
            attempt_number = event.attempt_number.unwrap_or(0),
            notion_id = entity_id.unwrap_or(""),
            outcome = result.label(),
            ignore_reason = ignore_reason.unwrap_or(""),
            "Received Notion webhook"
        );
        Ok(result)
    }

    fn handshake_budget(&self) -> std::sync::MutexGuard<'_, HandshakeBudget> {
        self.handshakes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn store_verification_token(&self, token: &str) -> Result<(), IntakeError> {
        let ciphertext = self.cipher.encrypt(token, VERIFICATION_TOKEN_AAD);
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        self.store.record_verification_token(&ciphertext, &digest).await?;
        tracing::info!(
            "Received Notion webhook verification token; read it at GET /api/notion/webhook/verification-token \
             and paste it into Notion's webhook settings"
        );
        // Best effort: the handshake is stored, and its answer must not depend on this.
        let learnt = match &self.configured_secret {
            None => self.signing_key().await.ok().flatten(),
            Some(_) => None,
        };
        if learnt.is_some_and(|key| !same_secret(key.expose_secret(), token)) {
            // Trust on first use keeps the first token: a subscription made again (or anyone
            // posting a handshake first) leaves events signed with this one refused.
            tracing::warn!(
                "this verification token is not the one events are verified with (the first one received); \
                 if Notion's subscription uses it, set NOTION_WEBHOOK_SECRET to it, or its events are refused 401"
            );
        }
        Ok(())
    }

    /// The configured secret, or else the first verification token ever received.
    async fn signing_key(&self) -> Result<Option<SecretString>, IntakeError> {
        if let Some(secret) = &self.configured_secret {
            return Ok(Some(secret.clone()));
        }
        {
            let learnt = self.learnt.lock().expect("signing key lock poisoned");
            if let Some(key) = &learnt.key {
                return Ok(Some(key.clone()));
            }
            if learnt.missing_since.is_some_and(|at| at.elapsed() < MISSING_KEY_RECHECK) {
                return Ok(None);
            }
        }
        let stored = self.store.first_verification_token().await?;
        let key = stored.map(|ct| self.cipher.decrypt(&ct, VERIFICATION_TOKEN_AAD)).transpose()?;
        let mut learnt = self.learnt.lock().expect("signing key lock poisoned");
        // The first token never changes once stored, so it can be cached for good.
        learnt.key = key.clone();
        learnt.missing_since = key.is_none().then(Instant::now);
        Ok(key)
    }

    /// The latest verification token received, decrypted, with when it arrived and whether
    /// events are verified with it (not when `NOTION_WEBHOOK_SECRET` is set, nor when an
    /// earlier handshake's token is the one learnt).
    pub async fn latest_verification_token(&self) -> Result<Option<LatestVerificationToken>, IntakeError> {
        let Some((ct, received_at, tokens)) = self.store.latest_verification_token().await? else {
            return Ok(None);
        };
        let token = self.cipher.decrypt(&ct, VERIFICATION_TOKEN_AAD)?;
        // Best effort too: ops must see the latest token even if the learnt one cannot be read.
        let verifies_events = self.configured_secret.is_none()
            && matches!(self.signing_key().await, Ok(Some(key)) if same_secret(key.expose_secret(), token.expose_secret()));
        Ok(Some(LatestVerificationToken { token, received_at, verifies_events, tokens }))
    }

    /// Whether events are verified with `NOTION_WEBHOOK_SECRET` (else with the first handshake).
    pub fn uses_configured_secret(&self) -> bool {
        self.configured_secret.is_some()
    }
}

/// What intake does with a delivery, decided from the body, its `X-Notion-Signature` header and
/// the signing key alone (no database, no clock). [`Intake::receive`] runs exactly this between
/// looking the key up and storing the result; the fuzz targets drive it directly.
// Made and consumed once per delivery: boxing the event would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decision<'a> {
    /// The subscription's verification handshake (no signature needed): store its token.
    Handshake { verification_token: String },
    /// A correctly signed event: store it (and start its workflow unless it is ignored).
    Store(VerifiedEvent<'a>),
}

/// An event whose signature matched, with what is stored for it.
#[derive(Debug)]
pub struct VerifiedEvent<'a> {
    pub event: WebhookEvent,
    /// Recognises redeliveries: Notion's event id, else the SHA-256 of the body.
    pub dedupe_key: String,
    /// The raw body (valid UTF-8, as all JSON is), stored as the event's payload.
    pub payload: &'a str,
}

impl VerifiedEvent<'_> {
    /// The row to store under `id`: an accepted event names its page or database; an ignored
    /// one keeps what it said about its entity and why it is ignored.
    pub fn new_event(&self, id: EventId) -> NewEvent<'_> {
        let event = &self.event;
        let (entity_id, entity_kind, ignore_reason) = match &event.disposition {
            Disposition::Accept { kind, id } => (Some(id.as_str()), Some(kind.as_str()), None),
            Disposition::Ignore { reason } => (
                event.entity_id.as_ref().map(|id| id.as_str()),
                event.entity_type.as_deref(),
                Some(reason.as_str()),
            ),
        };
        NewEvent {
            id,
            dedupe_key: &self.dedupe_key,
            notion_event_id: event.notion_event_id.as_deref(),
            event_type: &event.event_type,
            entity_id,
            entity_kind,
            parent_id: event.parent_id.as_ref().map(|id| id.as_str()),
            parent_kind: event.parent_type.as_deref(),
            data_source_id: event.data_source_id.as_ref().map(|id| id.as_str()),
            attempt_number: event.attempt_number,
            event_time: event.timestamp,
            ignore_reason,
            payload: self.payload,
        }
    }
}

/// The intake decision for `body`, already parsed into `parsed` if it was small enough to be a
/// handshake (`None`: it is parsed once its signature is verified). `key` is the signing key, if
/// one is known. Only the handshake passes without a valid signature; the signature is checked
/// before the body's content matters, so an unsigned body learns nothing but 401.
pub fn decide<'a>(
    parsed: Option<Result<ParsedBody, BodyError>>,
    body: &'a [u8],
    signature_header: Option<&str>,
    key: Option<&[u8]>,
) -> Result<Decision<'a>, IntakeError> {
    if let Some(Ok(ParsedBody::Handshake { verification_token })) = parsed {
        return Ok(Decision::Handshake { verification_token });
    }
    let key = key.ok_or(SignatureError::NoSecret)?;
    signature::verify(key, body, signature_header)?;
    let parsed = parsed.unwrap_or_else(|| event::parse(body));
    let ParsedBody::Event(event) = parsed? else {
        // A body too large to be taken for a handshake is not one, even with its fields.
        return Err(BodyError::MissingType.into());
    };
    let payload = std::str::from_utf8(body).map_err(|e| BodyError::MalformedJson(e.to_string()))?;
    let dedupe_key = event.dedupe_key(body);
    Ok(Decision::Store(VerifiedEvent { event, dedupe_key, payload }))
}

impl IntakeResult {
    pub fn label(self) -> &'static str {
        match self {
            IntakeResult::VerificationReceived => "verification_received",
            IntakeResult::Accepted(_) => "accepted",
            IntakeResult::Duplicate(_) => "duplicate",
            IntakeResult::Ignored(_) => "ignored",
        }
    }
}

/// Compares a posted token with the signing key in constant time: the handshake that posts it
/// needs no credentials, so its timing must not tell how much of the key it guessed.
fn same_secret(key: &str, posted: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(key.as_bytes().ct_eq(posted.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"secret_test";

    fn decide_raw<'a>(
        body: &'a [u8],
        header: Option<&str>,
        key: Option<&[u8]>,
    ) -> Result<Decision<'a>, IntakeError> {
        decide(Some(event::parse(body)), body, header, key)
    }

    #[test]
    fn the_handshake_budget_refills_each_minute_and_says_when() {
        let mut budget = HandshakeBudget::default();
        let start = Instant::now();
        for _ in 0..HANDSHAKES_PER_MINUTE {
            assert!(budget.take(start).is_ok());
        }
        let later = start + Duration::from_millis(20_500);
        assert_eq!(budget.take(later), Err(Duration::from_secs(40)), "39.5 s left, rounded up");
        assert_eq!(budget.take(start + HANDSHAKE_WINDOW), Ok(()), "a new minute");
        for _ in 1..HANDSHAKES_PER_MINUTE {
            assert!(budget.take(start + HANDSHAKE_WINDOW).is_ok());
        }
        budget.give_back();
        assert_eq!(budget.take(start + HANDSHAKE_WINDOW), Ok(()), "a place given back is taken again");
    }

    #[test]
    fn a_body_too_large_for_a_handshake_is_parsed_only_once_verified() {
        let mut large = br#"{"verification_token":"secret_abc","padding":""#.to_vec();
        large.resize(MAX_HANDSHAKE_BODY + 1, b'x');
        large.extend_from_slice(br#""}"#);
        assert!(matches!(
            decide(None, &large, None, Some(KEY)),
            Err(IntakeError::Unauthorized(SignatureError::Missing))
        ));
        let signed = signature::sign(KEY, &large);
        assert!(matches!(
            decide(None, &large, Some(&signed), Some(KEY)),
            Err(IntakeError::BadRequest(BodyError::MissingType))
        ));
        let event = br#"{"type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
        let signed = signature::sign(KEY, event);
        assert!(matches!(decide(None, event, Some(&signed), Some(KEY)), Ok(Decision::Store(_))));
    }

    #[test]
    fn only_the_handshake_passes_unsigned() {
        let handshake = br#"{"verification_token":"secret_abc"}"#;
        assert!(matches!(
            decide_raw(handshake, None, None),
            Ok(Decision::Handshake { verification_token }) if verification_token == "secret_abc"
        ));
        let event = br#"{"type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
        assert!(matches!(
            decide_raw(event, None, Some(KEY)),
            Err(IntakeError::Unauthorized(SignatureError::Missing))
        ));
        let signed = signature::sign(KEY, event);
        assert!(matches!(
            decide_raw(event, Some(&signed), None),
            Err(IntakeError::Unauthorized(SignatureError::NoSecret))
        ));
        assert!(matches!(
            decide_raw(event, Some(&signed), Some(b"other")),
            Err(IntakeError::Unauthorized(SignatureError::Mismatch))
        ));
    }

    #[test]
    fn a_signed_event_is_stored_as_sent_and_a_signed_bad_body_is_a_400() {
        let event = br#"{"type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
        let Ok(Decision::Store(verified)) = decide_raw(event, Some(&signature::sign(KEY, event)), Some(KEY))
        else {
            panic!("a signed event is stored")
        };
        let row = verified.new_event(EventId::new());
        assert_eq!(row.payload.as_bytes(), event);
        assert_eq!(row.entity_id, Some("1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1"));
        assert_eq!((row.entity_kind, row.ignore_reason), (Some("page"), None));

        // Unsigned junk learns nothing but 401; signed junk is told what is wrong.
        let junk = b"{not json";
        assert!(matches!(decide_raw(junk, None, Some(KEY)), Err(IntakeError::Unauthorized(_))));
        assert!(matches!(
            decide_raw(junk, Some(&signature::sign(KEY, junk)), Some(KEY)),
            Err(IntakeError::BadRequest(BodyError::MalformedJson(_)))
        ));
    }
}
