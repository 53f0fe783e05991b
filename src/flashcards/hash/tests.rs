use serde_json::{Value, json};

use super::*;
use crate::flashcards::{
    ContentPage,
    test_fixtures::{T_GLYCO, T_KREBS, block, fixture_content, id, text},
};

fn hash_after(change: impl FnOnce(&mut Content)) -> String {
    let mut content = fixture_content();
    change(&mut content);
    content_hash(&content)
}

fn page(content: &mut Content) -> &mut ContentPage {
    &mut content.pages[0]
}

fn block_mut<'a>(content: &'a mut Content, block_id: &str) -> &'a mut Value {
    page(content).blocks.iter_mut().find(|b| b["id"] == block_id).expect("block in the fixture")
}

/// Sets `key` to `value` in every object of `value` that has it, at any depth.
fn set_everywhere(value: &mut Value, key: &str, new: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(slot) = map.get_mut(key) {
                *slot = new.clone();
            }
            map.values_mut().for_each(|v| set_everywhere(v, key, new));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| set_everywhere(v, key, new)),
        _ => {}
    }
}

#[test]
fn the_hash_is_lowercase_hex_sha256_and_deterministic() {
    let hash = content_hash(&fixture_content());

    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(hash, content_hash(&fixture_content()));
}

#[test]
fn volatile_fields_do_not_change_the_hash() {
    let original = content_hash(&fixture_content());
    let later = json!("2027-01-01T00:00:00.000Z");
    let someone = json!({"object": "user", "id": "d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70"});

    let touched = hash_after(|content| {
        let page = page(content);
        set_everywhere(&mut page.page, "last_edited_time", &later);
        set_everywhere(&mut page.page, "last_edited_by", &someone);
        page.page["request_id"] = json!("another-request");
        page.page["next_cursor"] = json!("abc");
        for block in &mut page.blocks {
            set_everywhere(block, "last_edited_time", &later);
            set_everywhere(block, "last_edited_by", &someone);
            set_everywhere(block, "created_time", &later);
        }
    });

    assert_eq!(touched, original, "timestamps, editors, request ids and cursors are not content");
}

#[test]
fn resigned_file_urls_do_not_change_the_hash_but_external_urls_do() {
    let with_image = |url: &str, expiry: &str| {
        hash_after(|content| {
            page(content).blocks.push(block(
                &id(1),
                "image",
                json!({"type": "file", "file": {"url": url, "expiry_time": expiry}, "caption": []}),
                vec![],
            ));
        })
    };
    let external = |url: &str| {
        hash_after(|content| {
            page(content).blocks.push(block(
                &id(1),
                "image",
                json!({"type": "external", "external": {"url": url}, "caption": []}),
                vec![],
            ));
        })
    };

    assert_eq!(
        with_image("https://s3.example/a.png?X-Amz-Signature=1", "2026-05-12T08:00:00.000Z"),
        with_image("https://s3.example/a.png?X-Amz-Signature=2", "2026-05-12T09:00:00.000Z"),
    );
    assert_ne!(external("https://example.org/a.png"), external("https://example.org/b.png"));
}

#[test]
fn json_key_order_and_empty_children_arrays_do_not_change_the_hash() {
    let original = content_hash(&fixture_content());

    let reordered = hash_after(|content| {
        for block in &mut page(content).blocks {
            let map = block.as_object_mut().unwrap();
            let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            entries.reverse();
            map.extend(entries);
        }
    });
    let empty_children = hash_after(|content| {
        for block in &mut page(content).blocks {
            if block.get("children").is_none() {
                block["children"] = json!([]);
            }
        }
    });

    assert_eq!(reordered, original);
    assert_eq!(empty_children, original);
}

/// A named edit of the fixture content.
type Change = Box<dyn FnOnce(&mut Content)>;

#[test]
fn any_text_structure_or_property_change_changes_the_hash() {
    let original = content_hash(&fixture_content());
    let changes: Vec<(&str, Change)> = vec![
        (
            "a toggle's title",
            Box::new(|c| block_mut(c, T_GLYCO)["toggle"]["rich_text"][2]["plain_text"] = json!("!")),
        ),
        (
            "an answer's text",
            Box::new(|c| {
                block_mut(c, T_KREBS)["children"][0]["paragraph"]["rich_text"] =
                    json!([text("In the cytosol.")])
            }),
        ),
        (
            "a code annotation (a cloze)",
            Box::new(|c| {
                block_mut(c, T_GLYCO)["toggle"]["rich_text"][1]["annotations"]["code"] = json!(true)
            }),
        ),
        (
            "a to-do's checked state",
            Box::new(|c| {
                block_mut(c, "1f3c8a2e-4b7d-810b-ac4d-f4a5b6c7d8eb")["to_do"]["checked"] = json!(true)
            }),
        ),
        (
            "a block's type",
            Box::new(|c| {
                let heading = block_mut(c, "1f3c8a2e-4b7d-8107-a809-b0c1d2e3f4a7");
                heading["heading_3"]["is_toggleable"] = json!(false);
            }),
        ),
        ("the order of blocks", Box::new(|c| page(c).blocks.swap(4, 5))),
        (
            "the nesting of blocks",
            Box::new(|c| {
                let moved = page(c).blocks.remove(7);
                block_mut(c, T_KREBS)["children"].as_array_mut().unwrap().push(moved);
            }),
        ),
        (
            "a removed block",
            Box::new(|c| {
                page(c).blocks.remove(1);
            }),
        ),
        (
            "a select-like property value",
            Box::new(|c| page(c).page["properties"]["Status"]["status"]["name"] = json!("Done")),
        ),
        (
            "a checkbox property",
            Box::new(|c| page(c).page["properties"]["Sync to flashcards"]["checkbox"] = json!(false)),
        ),
        (
            "the title",
            Box::new(|c| page(c).page["properties"]["Name"]["title"][0]["plain_text"] = json!("Respiration")),
        ),
        (
            "a property's name",
            Box::new(|c| {
                let properties = page(c).page["properties"].as_object_mut().unwrap();
                let tags = properties.remove("Tags").unwrap();
                properties.insert("Labels".to_owned(), tags);
            }),
        ),
        ("the page being gone", Box::new(|c| page(c).gone = true)),
        (
            "another page",
            Box::new(|c| {
                let copy = c.pages[0].clone();
                c.pages.push(copy);
            }),
        ),
    ];

    for (what, change) in changes {
        assert_ne!(hash_after(change), original, "changing {what} must change the hash");
    }
}

#[test]
fn a_gone_page_hashes_by_its_id_only() {
    let gone = |title: &str| {
        hash_after(|content| {
            let page = page(content);
            page.gone = true;
            page.page["properties"]["Name"]["title"][0]["plain_text"] = json!(title);
        })
    };

    assert_eq!(gone("one title"), gone("another title"));
}
