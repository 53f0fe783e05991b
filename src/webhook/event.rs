//! Webhook bodies: Notion's real envelopes (`type`, `id`, `entity`, `data.parent`, ...), the
//! seed guide's simple form (`{"type":"page.updated","page":{"id":...}}`, also `database.*`),
//! and the one-time verification handshake (`{"verification_token":...}`).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::ids::NotionId;

/// What a request body turned out to be.
#[derive(Debug)]
pub enum ParsedBody {
    /// The subscription's one-time verification handshake.
    Handshake { verification_token: String },
    /// An event (not yet signature-checked: see `intake`).
    Event(WebhookEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("the event has no `type`")]
    MissingType,
    /// PostgreSQL can store a NUL neither in `text` nor in `jsonb`; refused on every backend
    /// alike (Notion's events carry ids and types, never a NUL).
    #[error("the body holds a NUL character (\\u0000), which cannot be stored")]
    HoldsNul,
}

/// The kind of Notion object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Page,
    Database,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Page => "page",
            EventKind::Database => "database",
        }
    }
}

/// A parsed event, in the fields the service uses. The raw body is kept by the caller: it is
/// what was signed and what gets stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// Notion's event id; absent in the seed's simple form.
    pub notion_event_id: Option<String>,
    pub event_type: String,
    pub entity_id: Option<NotionId>,
    /// `entity.type` as sent (`page`, `database`, `data_source`, `block`, `comment`, ...).
    pub entity_type: Option<String>,
    pub parent_id: Option<NotionId>,
    pub parent_type: Option<String>,
    pub data_source_id: Option<NotionId>,
    pub attempt_number: Option<i32>,
    pub timestamp: Option<DateTime<Utc>>,
    /// Whether the event starts work, and on what.
    pub disposition: Disposition,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Start the event workflow for this page or database.
    Accept { kind: EventKind, id: NotionId },
    /// Record it, answer 200, start nothing.
    Ignore { reason: String },
}

impl WebhookEvent {
    /// How redeliveries of this event are recognised: Notion's event id (the same on every
    /// `attempt_number`), or the SHA-256 of the body when there is none. An id longer than
    /// any of Notion's (a UUID) is keyed by its SHA-256: the key is indexed, and PostgreSQL
    /// cannot index a value of a few kilobytes (the insert failed, answering 500).
    pub fn dedupe_key(&self, raw_body: &[u8]) -> String {
        match &self.notion_event_id {
            Some(id) if id.len() <= MAX_PLAIN_EVENT_ID_LEN => format!("notion:{id}"),
            Some(id) => format!("notion-sha256:{}", hex::encode(Sha256::digest(id.as_bytes()))),
            None => format!("sha256:{}", hex::encode(Sha256::digest(raw_body))),
        }
    }
}

/// The longest event id used as its own dedupe key, in bytes.
const MAX_PLAIN_EVENT_ID_LEN: usize = 200;

/// Event types that can change a page's or database's flashcards.
const PAGE_TYPES: &[&str] = &[
    "page.created",
    "page.updated",
    "page.content_updated",
    "page.properties_updated",
    "page.moved",
    "page.deleted",
    "page.undeleted",
];
const DATABASE_TYPES: &[&str] = &[
    "database.created",
    "database.updated",
    "database.content_updated",
    "database.schema_updated",
    "database.moved",
    "database.deleted",
    "database.undeleted",
    "data_source.created",
    "data_source.content_updated",
    "data_source.schema_updated",
    "data_source.moved",
    "data_source.deleted",
    "data_source.undeleted",
];

/// The longest verification token accepted in a handshake, in bytes.
pub const MAX_VERIFICATION_TOKEN_LEN: usize = 256;

/// Whether a NUL character is in any string of `value`, keys included.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(key, v)| key.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Parses a body. Unknown fields and values are accepted: Notion adds event types and author
/// kinds over time, and an unknown type is recorded and ignored, not rejected. A field the
/// service reads whose value has another shape than expected (a number for `timestamp`, a
/// string for `entity`) is read as absent, never a reason to refuse a signed event: the body
/// is valid JSON, and refusing it would lose the event once Notion stops redelivering.
pub fn parse(body: &[u8]) -> Result<ParsedBody, BodyError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BodyError::MalformedJson(e.to_string()))?;
    let Some(raw) = value.as_object() else { return Err(BodyError::NotAnObject) };
    if holds_nul(&value) {
        return Err(BodyError::HoldsNul);
    }

    // A `null` type is no type (a handshake may carry one).
    let Some(event_type) = raw.get("type").filter(|t| !t.is_null()) else {
        // Anyone can send a handshake, and each distinct token is stored: only plausible
        // tokens (Notion's are about 50 characters) count as one.
        if let Some(serde_json::Value::String(token)) = raw.get("verification_token")
            && !token.is_empty()
            && token.len() <= MAX_VERIFICATION_TOKEN_LEN
        {
            return Ok(ParsedBody::Handshake { verification_token: token.clone() });
        }
        return Err(BodyError::MissingType);
    };
    let event_type = match event_type {
        serde_json::Value::String(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => return Err(BodyError::MissingType),
    };

    // The real envelope names the object in `entity`; the seed's form in `page` / `database`.
    let object = |name: &str| raw.get(name).filter(|v| v.is_object());
    let (entity_raw, entity_type) = match (object("entity"), object("page"), object("database")) {
        (Some(entity), _, _) => (id_text(entity.get("id")), text(entity.get("type"))),
        (None, Some(page), _) => (id_text(page.get("id")), Some("page".to_owned())),
        (None, None, Some(db)) => (id_text(db.get("id")), Some("database".to_owned())),
        _ => (None, None),
    };
    let entity_id = entity_raw.as_deref().and_then(|id| NotionId::parse(id).ok());
    let parent = object("data").and_then(|d| d.get("parent")).filter(|p| p.is_object());
    let parent_id_of =
        |key: &str| parent.and_then(|p| id_text(p.get(key))).and_then(|id| NotionId::parse(&id).ok());

    let disposition = disposition(&event_type, entity_raw.as_deref(), entity_id.as_ref());
    Ok(ParsedBody::Event(WebhookEvent {
        notion_event_id: id_text(raw.get("id")),
        event_type,
        entity_id,
        entity_type,
        parent_id: parent_id_of("id"),
        parent_type: parent.and_then(|p| text(p.get("type"))),
        data_source_id: parent_id_of("data_source_id"),
        attempt_number: raw
            .get("attempt_number")
            .and_then(serde_json::Value::as_i64)
            .and_then(|n| i32::try_from(n).ok()),
        timestamp: raw
            .get("timestamp")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        disposition,
    }))
}

fn disposition(event_type: &str, entity_raw: Option<&str>, entity_id: Option<&NotionId>) -> Disposition {
    let kind = if PAGE_TYPES.contains(&event_type) {
        EventKind::Page
    } else if DATABASE_TYPES.contains(&event_type) {
        EventKind::Database
    } else {
        return Disposition::Ignore {
            reason: format!("event type `{event_type}` does not affect flashcards"),
        };
    };
    match (entity_id, entity_raw) {
        (Some(id), _) => Disposition::Accept { kind, id: id.clone() },
        (None, Some(raw)) => Disposition::Ignore { reason: format!("entity id `{raw}` is not a Notion id") },
        (None, None) => Disposition::Ignore { reason: "the event names no page or database".to_owned() },
    }
}

/// A string field as sent; any other value is read as absent.
fn text(value: Option<&serde_json::Value>) -> Option<String> {
    value.and_then(serde_json::Value::as_str).map(str::to_owned)
}

/// Ids are strings in Notion's payloads; accept numbers too rather than failing a signed event.
fn id_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str) -> WebhookEvent {
        match parse(body.as_bytes()).expect("parses") {
            ParsedBody::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn the_real_envelope_yields_entity_parent_and_attempt() {
        let e = event(
            r#"{"id":"4e8d2c6a-1b3f-4a5e-8d7c-9b0a1f2e3d4c","timestamp":"2026-05-12T07:04:19.874Z",
                "type":"page.content_updated","attempt_number":3,
                "entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"page"},
                "data":{"parent":{"id":"1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2","type":"database",
                        "data_source_id":"1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b"}}}"#,
        );
        assert_eq!(e.notion_event_id.as_deref(), Some("4e8d2c6a-1b3f-4a5e-8d7c-9b0a1f2e3d4c"));
        assert_eq!(e.attempt_number, Some(3));
        assert_eq!(e.parent_type.as_deref(), Some("database"));
        assert_eq!(e.data_source_id.unwrap().as_str(), "1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b");
        let page = NotionId::parse("1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1").unwrap();
        assert_eq!(e.disposition, Disposition::Accept { kind: EventKind::Page, id: page });
        assert!(e.timestamp.is_some());
    }

    #[test]
    fn the_seed_form_is_accepted_for_pages_and_databases() {
        let e = event(r#"{"type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#);
        assert!(matches!(e.disposition, Disposition::Accept { kind: EventKind::Page, .. }));
        let e = event(r#"{"type":"database.updated","database":{"id":"1f3c8a2e4b7d8012a6e9c1d3f5a7b9e2"}}"#);
        assert!(matches!(e.disposition, Disposition::Accept { kind: EventKind::Database, .. }));
    }

    #[test]
    fn unknown_types_and_non_notion_ids_are_ignored_not_rejected() {
        let e = event(
            r#"{"type":"comment.created","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"comment"}}"#,
        );
        assert!(matches!(e.disposition, Disposition::Ignore { .. }));
        let e = event(r#"{"type":"page.updated","page":{"id":"test"}}"#);
        assert!(matches!(e.disposition, Disposition::Ignore { ref reason } if reason.contains("test")));
    }

    #[test]
    fn the_handshake_is_recognised_by_its_token() {
        let parsed = parse(br#"{"verification_token":"secret_abc"}"#).unwrap();
        assert!(
            matches!(parsed, ParsedBody::Handshake { verification_token } if verification_token == "secret_abc")
        );
        let parsed = parse(br#"{"type":null,"verification_token":"secret_abc"}"#).unwrap();
        assert!(matches!(parsed, ParsedBody::Handshake { .. }), "a null type is no type");
    }

    #[test]
    fn an_empty_or_implausibly_long_verification_token_is_no_handshake() {
        assert_eq!(parse(br#"{"verification_token":""}"#).unwrap_err(), BodyError::MissingType);
        let long = format!(r#"{{"verification_token":"{}"}}"#, "x".repeat(MAX_VERIFICATION_TOKEN_LEN + 1));
        assert_eq!(parse(long.as_bytes()).unwrap_err(), BodyError::MissingType);
        let longest = format!(r#"{{"verification_token":"{}"}}"#, "x".repeat(MAX_VERIFICATION_TOKEN_LEN));
        assert!(matches!(parse(longest.as_bytes()), Ok(ParsedBody::Handshake { .. })));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(matches!(parse(b"{not json"), Err(BodyError::MalformedJson(_))));
        assert_eq!(parse(b"[1,2]").unwrap_err(), BodyError::NotAnObject);
        let nul = br#"{"type":"page.updated","entity":{"id":"x","type":"page"},"note":[{"a\u0000":1}]}"#;
        assert_eq!(parse(nul).unwrap_err(), BodyError::HoldsNul);
        let escaped_backslash =
            br#"{"type":"page.updated","entity":{"id":"x","type":"page"},"note":"\\u0000"}"#;
        assert!(parse(escaped_backslash).is_ok(), "a backslash and `u0000` is text, not a NUL");
        assert_eq!(parse(br#"{"page":{"id":"x"}}"#).unwrap_err(), BodyError::MissingType);
    }

    #[test]
    fn dedupe_prefers_the_event_id_and_falls_back_to_the_body_hash() {
        let with_id = event(r#"{"id":"e1","type":"page.updated","page":{"id":"x"}}"#);
        assert_eq!(with_id.dedupe_key(b"anything"), "notion:e1");
        let without = event(r#"{"type":"page.updated","page":{"id":"x"}}"#);
        assert_ne!(without.dedupe_key(b"a"), without.dedupe_key(b"b"));
        assert!(without.dedupe_key(b"a").starts_with("sha256:"));
    }

    #[test]
    fn an_event_id_too_long_to_index_is_keyed_by_its_hash() {
        let long = "e".repeat(3000);
        let e = event(&format!(r#"{{"id":"{long}","type":"page.updated","page":{{"id":"x"}}}}"#));
        let key = e.dedupe_key(b"body");
        assert!(key.starts_with("notion-sha256:") && key.len() < 100, "{key}");
        assert_eq!(key, e.dedupe_key(b"another delivery's body"), "redeliveries share it");
        let other = event(&format!(r#"{{"id":"{long}f","type":"page.updated","page":{{"id":"x"}}}}"#));
        assert_ne!(key, other.dedupe_key(b"body"));
        let uuid = event(r#"{"id":"4e8d2c6a-1b3f-4a5e-8d7c-9b0a1f2e3d4c","type":"page.updated"}"#);
        assert_eq!(uuid.dedupe_key(b"body"), "notion:4e8d2c6a-1b3f-4a5e-8d7c-9b0a1f2e3d4c");
    }

    #[test]
    fn fields_of_an_unexpected_shape_are_read_as_absent_not_refused() {
        let e = event(
            r#"{"id":"e1","type":"page.updated","timestamp":1715000000,"attempt_number":"2",
                "entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":7},
                "data":{"parent":"x"}}"#,
        );
        assert_eq!((e.timestamp, e.attempt_number, e.entity_type), (None, None, None));
        assert_eq!((e.parent_id, e.parent_type), (None, None));
        assert!(matches!(e.disposition, Disposition::Accept { kind: EventKind::Page, .. }));
        // An `entity` that is no object: the seed's `page` still names the page.
        let e =
            event(r#"{"type":"page.updated","entity":"x","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#);
        assert!(matches!(e.disposition, Disposition::Accept { kind: EventKind::Page, .. }));
        let e = event(r#"{"type":"page.updated","data":[1],"entity":null}"#);
        assert!(matches!(e.disposition, Disposition::Ignore { .. }), "{e:?}");
    }
}
