//! A fingerprint of everything in [`Content`] that can affect cards, so that a re-sync of
//! unchanged content can be skipped.
//!
//! `content_hash` is the lowercase hex SHA-256 of `cognie-sync/flashcards/content/v2\n` followed
//! by canonical JSON (object keys sorted, no whitespace) of
//! `{"pages": [{"gone": bool, "page": …, "blocks": [… with children …]}, …]}`, where, in page
//! order:
//! - a `gone` page contributes only `{"gone": true, "page": {"id": …}, "blocks": []}`;
//! - otherwise the whole page object and every block tree, in order and nesting (so text, rich
//!   text annotations and links, block types, checked states, languages, icons, captions,
//!   property values and block structure all count), **except** these volatile fields, dropped
//!   at any depth: `last_edited_time`, `last_edited_by`, `created_time`, `created_by`,
//!   `request_id`, `next_cursor`, `has_more`, `expiry_time`, and `url` next to an
//!   `expiry_time` (Notion-hosted file URLs are re-signed on every read). Property *names* are
//!   never dropped: the keys of `properties` are user data. A `children` array that is empty
//!   counts as absent.
//!
//! Timestamp properties (`last_edited_time`, `created_time`…) thus hash as their type only.
//! The version prefix changes when the rendering rules change, so that every page is
//! regenerated once after such a deploy. The generator (rules or a model) is not part of the
//! hash: a caller that switches generators should compare `(generator, hash)`.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Content;

/// v2: inline code already in `cN::…` form keeps its cloze number.
const VERSION: &str = "cognie-sync/flashcards/content/v2\n";

/// Fields whose value changes without the content changing.
const VOLATILE: [&str; 8] = [
    "last_edited_time",
    "last_edited_by",
    "created_time",
    "created_by",
    "request_id",
    "next_cursor",
    "has_more",
    "expiry_time",
];

/// The SHA-256 (lowercase hex) of the canonical form of `content` described in the module docs.
pub fn content_hash(content: &Content) -> String {
    let pages: Vec<Value> = content
        .pages
        .iter()
        .map(|page| {
            let (page_object, blocks) = if page.gone {
                let id = page.page.get("id").cloned().unwrap_or(Value::Null);
                (Value::Object(Map::from_iter([("id".to_owned(), id)])), Vec::new())
            } else {
                (stable(&page.page), page.blocks.iter().map(stable).collect())
            };
            Value::Object(Map::from_iter([
                ("gone".to_owned(), Value::Bool(page.gone)),
                ("page".to_owned(), page_object),
                ("blocks".to_owned(), Value::Array(blocks)),
            ]))
        })
        .collect();
    let mut canonical = String::from(VERSION);
    write_canonical(
        &Value::Object(Map::from_iter([("pages".to_owned(), Value::Array(pages))])),
        &mut canonical,
    );
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// `value` without its volatile fields.
fn stable(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let signed = map.contains_key("expiry_time");
            let kept = map.iter().filter_map(|(key, field)| {
                let volatile = VOLATILE.contains(&key.as_str()) || (signed && key == "url");
                let empty_children = key == "children" && field.as_array().is_some_and(Vec::is_empty);
                if volatile || empty_children {
                    return None;
                }
                let field = if key == "properties" { stable_properties(field) } else { stable(field) };
                Some((key.clone(), field))
            });
            Value::Object(kept.collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(stable).collect()),
        other => other.clone(),
    }
}

/// A `properties` map: its keys are property names (user data), only its values are filtered.
fn stable_properties(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(name, p)| (name.clone(), stable(p))).collect()),
        other => stable(other),
    }
}

/// Canonical JSON: object keys sorted by bytes, no whitespace, serde_json's escaping and numbers.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, field)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(field, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests;
