//! Structured webhook bodies in both formats (Notion's envelope with `entity` / `data.parent`,
//! and the simple `{"type":..,"page"|"database":{"id":..}}`), with ids in every spelling and
//! junk where ids belong: the parser must classify each exactly as the contract says.
#![no_main]

use arbitrary::Arbitrary;
use cognie_sync::{
    ids::NotionId,
    webhook::event::{self, Disposition, EventKind, ParsedBody},
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const PAGE_TYPES: &[&str] = &["page.created", "page.updated", "page.content_updated", "page.deleted"];
const DATABASE_TYPES: &[&str] = &["database.updated", "data_source.content_updated", "data_source.deleted"];
const IGNORED_TYPES: &[&str] = &["comment.created", "page.locked", "view.updated", "file_upload.completed"];

#[derive(Debug, Arbitrary)]
enum Format {
    Notion,
    Simple,
}

#[derive(Debug, Arbitrary)]
enum TypeChoice {
    Page(u8),
    Database(u8),
    Ignored(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum IdChoice {
    /// A real id, dashed or not, upper or lower case, maybe padded with spaces.
    Hex {
        bytes: [u8; 16],
        dashed: bool,
        upper: bool,
        padded: bool,
    },
    Text(String),
    Number(i64),
    Null,
    Missing,
}

#[derive(Debug, Arbitrary)]
struct Envelope {
    format: Format,
    event_type: TypeChoice,
    entity: IdChoice,
    event_id: Option<String>,
    attempt_number: Option<i64>,
    parent: IdChoice,
    data_source: IdChoice,
    timestamp: Option<String>,
    extra: Option<(String, String)>,
}

impl IdChoice {
    fn json(&self) -> Option<Value> {
        match self {
            IdChoice::Hex { bytes, dashed, upper, padded } => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut id = if *dashed {
                    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
                } else {
                    hex
                };
                if *upper {
                    id = id.to_uppercase();
                }
                if *padded {
                    id = format!(" {id} ");
                }
                Some(json!(id))
            }
            IdChoice::Text(s) => Some(json!(s)),
            IdChoice::Number(n) => Some(json!(n)),
            IdChoice::Null => Some(Value::Null),
            IdChoice::Missing => None,
        }
    }

    /// The canonical id this choice must parse to, if it is one.
    fn expected(&self) -> Option<NotionId> {
        match self {
            IdChoice::Hex { bytes, .. } => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                Some(NotionId::parse(&hex).expect("32 hex digits are an id"))
            }
            IdChoice::Text(s) => NotionId::parse(s).ok(),
            _ => None,
        }
    }
}

fn object_with_id(id: &IdChoice) -> Value {
    let mut object = serde_json::Map::new();
    if let Some(id) = id.json() {
        object.insert("id".into(), id);
    }
    Value::Object(object)
}

fuzz_target!(|e: Envelope| {
    let event_type = match &e.event_type {
        TypeChoice::Page(i) => PAGE_TYPES[*i as usize % PAGE_TYPES.len()].to_owned(),
        TypeChoice::Database(i) => DATABASE_TYPES[*i as usize % DATABASE_TYPES.len()].to_owned(),
        TypeChoice::Ignored(i) => IGNORED_TYPES[*i as usize % IGNORED_TYPES.len()].to_owned(),
        TypeChoice::Other(t) => t.clone(),
    };
    let mut body = json!({ "type": event_type });
    let is_database = matches!(e.event_type, TypeChoice::Database(_));
    match e.format {
        Format::Notion => {
            let mut entity = object_with_id(&e.entity);
            entity["type"] = json!(if is_database { "database" } else { "page" });
            body["entity"] = entity;
            let mut parent = object_with_id(&e.parent);
            parent["type"] = json!("database");
            if let Some(ds) = e.data_source.json() {
                parent["data_source_id"] = ds;
            }
            body["data"] = json!({ "parent": parent });
        }
        Format::Simple => {
            body[if is_database { "database" } else { "page" }] = object_with_id(&e.entity);
        }
    }
    if let Some(id) = &e.event_id {
        body["id"] = json!(id);
    }
    if let Some(n) = e.attempt_number {
        body["attempt_number"] = json!(n);
    }
    if let Some(t) = &e.timestamp {
        body["timestamp"] = json!(t);
    }
    // Any other field, as Notion adds them over time (the ones the service reads keep their types).
    const READ: &[&str] = &[
        "type",
        "id",
        "timestamp",
        "attempt_number",
        "entity",
        "data",
        "page",
        "database",
        "verification_token",
    ];
    if let Some((k, v)) = &e.extra
        && !READ.contains(&k.as_str())
    {
        body[k.as_str()] = json!(v);
    }
    let raw = serde_json::to_vec(&body).expect("a JSON value serialises");

    let parsed = event::parse(&raw);
    if event_type.trim().is_empty() {
        assert!(parsed.is_err(), "a blank type is refused: {parsed:?}");
        return;
    }
    let Ok(ParsedBody::Event(parsed)) = parsed else {
        panic!("{body} did not parse as an event: {parsed:?}")
    };
    assert_eq!(parsed.event_type, event_type.trim());

    let expected_kind = match &e.event_type {
        TypeChoice::Page(_) => Some(EventKind::Page),
        TypeChoice::Database(_) => Some(EventKind::Database),
        TypeChoice::Ignored(_) => None,
        // A random string might name a known type; only its acceptance is checked below.
        TypeChoice::Other(_) => match &parsed.disposition {
            Disposition::Accept { kind, .. } => Some(*kind),
            Disposition::Ignore { .. } => None,
        },
    };
    match (expected_kind, e.entity.expected()) {
        (Some(kind), Some(id)) => {
            assert_eq!(parsed.disposition, Disposition::Accept { kind, id }, "{body}")
        }
        _ => assert!(
            matches!(parsed.disposition, Disposition::Ignore { .. }),
            "{body}: {:?}",
            parsed.disposition
        ),
    }
    if let Format::Notion = e.format {
        assert_eq!(parsed.parent_id, e.parent.expected(), "{body}");
        assert_eq!(parsed.data_source_id, e.data_source.expected(), "{body}");
    }
    let expected_attempt = e.attempt_number.and_then(|n| i32::try_from(n).ok());
    assert_eq!(parsed.attempt_number, expected_attempt);
    match e.event_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => assert_eq!(parsed.dedupe_key(&raw), format!("notion:{id}")),
        _ => assert!(parsed.dedupe_key(&raw).starts_with("sha256:")),
    }
});
