//! The Notion fixtures as [`Content`], and small block builders, for the unit tests.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{Content, ContentPage};

pub const PAGE_ID: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";
pub const T_GLYCO: &str = "1f3c8a2e-4b7d-8105-86e7-f8a9b0c1d2e5";
pub const T_KREBS: &str = "1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f6";
pub const H3_ETC: &str = "1f3c8a2e-4b7d-8107-a809-b0c1d2e3f4a7";
pub const T_EQ: &str = "1f3c8a2e-4b7d-810e-9f70-c7d8e9f0a11e";

pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/notion").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn results(name: &str) -> Vec<Value> {
    fixture(name)["results"].as_array().expect("a list response").clone()
}

/// The page "Cellular Respiration" as the fetch step delivers it: both pages of its children,
/// each block with children given them from the matching fixture. `child_page` has no fixture
/// and stays without children.
pub fn fixture_page() -> ContentPage {
    let children_files = [
        (T_GLYCO, "blocks_children_toggle_glycolysis.json"),
        (T_KREBS, "blocks_children_toggle_krebs.json"),
        (H3_ETC, "blocks_children_heading_etc.json"),
        (T_EQ, "blocks_children_toggle_equation.json"),
    ];
    let mut blocks = results("blocks_children_page_1.json");
    blocks.extend(results("blocks_children_page_2.json"));
    for block in &mut blocks {
        let id = block["id"].as_str().expect("block id").to_owned();
        if let Some((_, file)) = children_files.iter().find(|(parent, _)| *parent == id) {
            let kids = results(file);
            for kid in &kids {
                assert_eq!(kid["parent"]["block_id"], id.as_str(), "{file} holds children of {id}");
            }
            block["children"] = Value::Array(kids);
        }
    }
    ContentPage { page: fixture("page_retrieve.json"), blocks, gone: false }
}

pub fn fixture_content() -> Content {
    Content { pages: vec![fixture_page()] }
}

/// A standalone page (parent: a page), titled `title`, with `blocks`.
pub fn standalone_page(id: &str, title: &str, blocks: Vec<Value>) -> ContentPage {
    ContentPage {
        page: json!({
            "object": "page",
            "id": id,
            "parent": {"type": "page_id", "page_id": "1f3c8a2e-4b7d-8005-9b1d-3f5a7c9e1b2d"},
            "properties": {"title": {"id": "title", "type": "title", "title": [text(title)]}}
        }),
        blocks,
        gone: false,
    }
}

/// A plain rich-text item.
pub fn text(content: &str) -> Value {
    json!({
        "type": "text",
        "text": {"content": content, "link": null},
        "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false,
                        "code": false, "color": "default"},
        "plain_text": content,
        "href": null
    })
}

/// A `code`-annotated rich-text item.
pub fn code(content: &str) -> Value {
    let mut item = text(content);
    item["annotations"]["code"] = Value::Bool(true);
    item
}

/// An inline equation rich-text item.
pub fn inline_equation(expression: &str) -> Value {
    json!({
        "type": "equation",
        "equation": {"expression": expression},
        "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false,
                        "code": false, "color": "default"},
        "plain_text": expression,
        "href": null
    })
}

/// A block of `ty` with `payload` and `children`.
pub fn block(id: &str, ty: &str, payload: Value, children: Vec<Value>) -> Value {
    let mut block = json!({
        "object": "block",
        "id": id,
        "created_time": "2026-05-04T09:12:00.000Z",
        "last_edited_time": "2026-05-11T18:41:00.000Z",
        "has_children": !children.is_empty(),
        "in_trash": false,
        "type": ty,
    });
    block[ty] = payload;
    if !children.is_empty() {
        block["children"] = Value::Array(children);
    }
    block
}

/// A block of `ty` whose payload is `{rich_text: [text]}`.
pub fn text_block(id: &str, ty: &str, content: &str, children: Vec<Value>) -> Value {
    block(id, ty, json!({"rich_text": [text(content)], "color": "default"}), children)
}

/// A block id for tests: `n` in the last group of a fixed prefix.
pub fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}
