//! The generators' input: Notion JSON as the fetch step delivers it, children inlined.
//!
//! The JSON is kept as `serde_json::Value` on purpose: Notion adds block types and fields often,
//! and an unknown block must not fail a sync. These helpers read the few fields we need.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything one sync generates cards from: one page (page subscription) or every row of a data
/// source (database subscription).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub pages: Vec<ContentPage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPage {
    /// The Notion page object (id, properties including the title property, parent, in_trash…).
    pub page: Value,
    /// Top-level blocks in order; a block with children carries them in a `children` array,
    /// recursively.
    pub blocks: Vec<Value>,
    /// The page is trashed or deleted: it produces no cards.
    #[serde(default)]
    pub gone: bool,
}

impl ContentPage {
    /// The page id as Notion gives it.
    pub fn page_id(&self) -> Option<&str> {
        self.page.get("id").and_then(Value::as_str)
    }

    /// A row of a data source (or, before 2025-09-03, of a database): its parent is one.
    pub fn is_row(&self) -> bool {
        matches!(
            self.page.pointer("/parent/type").and_then(Value::as_str),
            Some("data_source_id" | "database_id")
        )
    }

    /// The rich text of the page's `title` property, whatever the property is named
    /// (`Name` in a data source, `title` on a standalone page).
    pub fn title(&self) -> &[Value] {
        self.properties()
            .find(|(_, property)| property_type(property) == "title")
            .and_then(|(_, property)| property.get("title"))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The page's properties as (name, property object) pairs, in the order of the JSON object.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.page
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|map| map.iter().map(|(name, property)| (name.as_str(), property)))
    }
}

/// A property's `type` (`title`, `rich_text`, `select`…), or "" if missing.
pub(crate) fn property_type(property: &Value) -> &str {
    property.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// A block's id, if it has one.
pub fn block_id(block: &Value) -> Option<&str> {
    block.get("id").and_then(Value::as_str)
}

/// A block's `type` (`paragraph`, `toggle`…), or "" if missing.
pub fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The type-specific payload, `block[block.type]` (`Null` if missing).
pub fn payload(block: &Value) -> &Value {
    block.get(block_type(block)).unwrap_or(&Value::Null)
}

/// The inlined children of a block (empty if none).
pub fn children(block: &Value) -> &[Value] {
    block.get("children").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The payload's `rich_text` array (empty if none).
pub fn rich_text(block: &Value) -> &[Value] {
    payload(block).get("rich_text").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A toggle, or a heading with `is_toggleable: true`: the blocks that make a card.
pub fn is_card_block(block: &Value) -> bool {
    match block_type(block) {
        "toggle" => true,
        "heading_1" | "heading_2" | "heading_3" | "heading_4" => {
            payload(block).get("is_toggleable").and_then(Value::as_bool).unwrap_or(false)
        }
        _ => false,
    }
}

/// Blocks whose children belong to another page (or database): never descended into.
pub fn is_foreign_container(block: &Value) -> bool {
    matches!(block_type(block), "child_page" | "child_database")
}

/// Calls `visit` on every block of `blocks`, depth first in document order, except the content of
/// child pages and child databases, which belong to other pages.
pub fn walk<'a>(blocks: &'a [Value], visit: &mut impl FnMut(&'a Value)) {
    for block in blocks {
        visit(block);
        if !is_foreign_container(block) {
            walk(children(block), visit);
        }
    }
}
