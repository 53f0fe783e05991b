//! Any bytes as a webhook body: `event::parse` never panics, and what it returns is consistent.
//! Seeds: `tests/fixtures/notion` (Notion's envelopes) and `fuzz/seeds/webhook_event` (the
//! simple form); `fuzz/webhook.dict` gives libFuzzer the field names and event types.
#![no_main]

use cognie_sync::{
    ids::NotionId,
    webhook::event::{self, BodyError, Disposition, EventKind, ParsedBody},
};
use libfuzzer_sys::fuzz_target;

fn assert_canonical(id: &NotionId) {
    assert_eq!(NotionId::parse(id.as_str()).as_ref(), Ok(id), "ids come out canonical");
    assert_eq!(id.as_str().len(), 36);
}

/// What the body must parse as: a JSON object with a non-blank string `type` is an event;
/// without a type, one with a plausible string `verification_token` is the handshake. Either may still
/// be refused as malformed when a field the service reads has the wrong JSON type (a number
/// for `timestamp`, say), but never as "not an object" or "no type", and never as the other.
fn expected(body: &[u8]) -> Option<&'static str> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else { return None };
    match map.get("type") {
        Some(serde_json::Value::String(t)) if !t.trim().is_empty() => Some("event"),
        None | Some(serde_json::Value::Null)
            if map
                .get("verification_token")
                .and_then(|t| t.as_str())
                .is_some_and(|t| !t.is_empty() && t.len() <= event::MAX_VERIFICATION_TOKEN_LEN) =>
        {
            Some("handshake")
        }
        _ => None,
    }
}

fuzz_target!(|body: &[u8]| {
    let parsed = event::parse(body);
    match (expected(body), &parsed) {
        (Some("event"), Ok(ParsedBody::Event(_)))
        | (Some("handshake"), Ok(ParsedBody::Handshake { .. }))
        | (Some(_), Err(BodyError::MalformedJson(_)))
        | (None, _) => {}
        (Some(kind), other) => panic!("expected a {kind}, got {other:?}"),
    }
    let Ok(ParsedBody::Event(e)) = parsed else { return };
    assert!(!e.event_type.is_empty() && e.event_type.trim() == e.event_type, "{:?}", e.event_type);
    for id in [&e.entity_id, &e.parent_id, &e.data_source_id].into_iter().flatten() {
        assert_canonical(id);
    }
    match &e.disposition {
        Disposition::Accept { kind, id } => {
            assert_eq!(e.entity_id.as_ref(), Some(id), "an accepted event is about its entity");
            let prefix = match kind {
                EventKind::Page => "page.",
                EventKind::Database => "data",
            };
            assert!(e.event_type.starts_with(prefix), "{kind:?} from {}", e.event_type);
        }
        Disposition::Ignore { reason } => assert!(!reason.is_empty()),
    }
    let key = e.dedupe_key(body);
    assert_eq!(key, e.dedupe_key(body), "dedupe keys are deterministic");
    match &e.notion_event_id {
        Some(id) => assert_eq!(key, format!("notion:{id}")),
        None => assert!(key.starts_with("sha256:") && key.len() == 7 + 64),
    }
});
