use serde_json::json;

use super::*;
use crate::flashcards::test_fixtures::{block, code, id, inline_equation, text, text_block};

#[test]
fn nested_bulleted_and_numbered_lists_are_indented_two_spaces_per_level() {
    let blocks = vec![
        text_block(
            &id(1),
            "bulleted_list_item",
            "Stages",
            vec![
                text_block(
                    &id(2),
                    "numbered_list_item",
                    "Glycolysis",
                    vec![text_block(&id(3), "bulleted_list_item", "in the cytoplasm", vec![])],
                ),
                text_block(&id(4), "numbered_list_item", "Krebs cycle", vec![]),
            ],
        ),
        text_block(&id(5), "bulleted_list_item", "Products", vec![]),
    ];

    assert_eq!(
        render_blocks(&blocks),
        "- Stages\n  1. Glycolysis\n    - in the cytoplasm\n  2. Krebs cycle\n- Products"
    );
}

#[test]
fn numbering_restarts_after_another_block_and_honours_start_index_and_format() {
    let numbered = |n: u32, content: &str, extra: serde_json::Value| {
        let mut payload = json!({"rich_text": [text(content)]});
        payload.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        block(&id(n), "numbered_list_item", payload, vec![])
    };
    let blocks = vec![
        numbered(1, "one", json!({})),
        numbered(2, "two", json!({})),
        text_block(&id(3), "paragraph", "Then:", vec![]),
        numbered(4, "five", json!({"list_start_index": 5})),
        numbered(5, "six", json!({})),
        text_block(&id(6), "paragraph", "Letters and numerals:", vec![]),
        numbered(7, "a", json!({"list_format": "letters"})),
        numbered(8, "b", json!({"list_format": "letters"})),
        text_block(&id(9), "divider", "", vec![]),
        numbered(10, "i", json!({"list_format": "roman", "list_start_index": 4})),
    ];

    assert_eq!(
        render_blocks(&blocks),
        "1. one\n2. two\nThen:\n5. five\n6. six\nLetters and numerals:\na. a\nb. b\n---\niv. i"
    );
}

#[test]
fn to_dos_show_their_checked_state() {
    let mut done = text_block(&id(1), "to_do", "Review glycolysis", vec![]);
    done["to_do"]["checked"] = json!(true);
    let mut open = text_block(&id(2), "to_do", "Review fermentation", vec![]);
    open["to_do"]["checked"] = json!(false);

    assert_eq!(render_blocks(&[done, open]), "[x] Review glycolysis\n[ ] Review fermentation");
}

#[test]
fn code_blocks_are_fenced_with_their_language_and_keep_their_layout() {
    let source = "def net_atp(glucose: int) -> int:\n\n    return 36 * glucose  ";
    let python = block(
        &id(1),
        "code",
        json!({"rich_text": [text(source)], "caption": [text("Rough budget")], "language": "python"}),
        vec![],
    );
    let plain =
        block(&id(2), "code", json!({"rich_text": [text("x = 1")], "language": "plain text"}), vec![]);
    let nested = text_block(
        &id(3),
        "bulleted_list_item",
        "Example:",
        vec![block(
            &id(4),
            "code",
            json!({"rich_text": [text("let a = 1;\n  a")], "language": "rust"}),
            vec![],
        )],
    );

    assert_eq!(
        render_blocks(&[python, plain, nested]),
        "```python\ndef net_atp(glucose: int) -> int:\n\n    return 36 * glucose\n```\nRough budget\n\
         ```\nx = 1\n```\n\
         - Example:\n  ```rust\n  let a = 1;\n    a\n  ```"
    );
}

#[test]
fn equations_keep_their_latex_inline_and_as_blocks() {
    let inline = block(
        &id(1),
        "paragraph",
        json!({"rich_text": [text("Energy: "), inline_equation("E = mc^2"), text(".")]}),
        vec![],
    );
    let display = block(&id(2), "equation", json!({"expression": "\\int_0^1 x\\,dx = \\tfrac12"}), vec![]);

    assert_eq!(render_blocks(&[inline, display]), "Energy: $E = mc^2$.\n$$\\int_0^1 x\\,dx = \\tfrac12$$");
}

#[test]
fn callouts_show_their_emoji_and_quotes_mark_every_line() {
    let callout = block(
        &id(1),
        "callout",
        json!({"rich_text": [text("Remember the matrix.")], "icon": {"type": "emoji", "emoji": "💡"}}),
        vec![text_block(&id(2), "paragraph", "Inside the callout", vec![])],
    );
    let external_icon = block(
        &id(3),
        "callout",
        json!({"rich_text": [text("No emoji here.")], "icon": {"type": "external", "external": {"url": "https://x"}}}),
        vec![],
    );
    let quote = text_block(&id(4), "quote", "To be\nor not to be", vec![]);

    assert_eq!(
        render_blocks(&[callout, external_icon, quote]),
        "💡 Remember the matrix.\n  Inside the callout\nNo emoji here.\n> To be\n> or not to be"
    );
}

#[test]
fn nested_toggles_show_their_summary_and_their_own_children() {
    let blocks = vec![
        text_block(&id(1), "paragraph", "Main idea.", vec![]),
        text_block(
            &id(2),
            "toggle",
            "Why?",
            vec![
                text_block(&id(3), "paragraph", "Because.", vec![]),
                text_block(&id(4), "bulleted_list_item", "Also this", vec![]),
            ],
        ),
        text_block(&id(5), "divider", "", vec![]),
    ];

    assert_eq!(render_blocks(&blocks), "Main idea.\n▸ Why?\n  Because.\n  - Also this\n---");
}

#[test]
fn empty_text_trailing_spaces_and_blank_lines_are_dropped() {
    let blocks = vec![
        block(&id(1), "paragraph", json!({"rich_text": []}), vec![]),
        text_block(&id(2), "paragraph", "First line   \n\n   \nsecond line\t", vec![]),
        text_block(&id(3), "bulleted_list_item", "", vec![text_block(&id(4), "paragraph", "child", vec![])]),
    ];

    assert_eq!(render_blocks(&blocks), "First line\nsecond line\n  child");
}

#[test]
fn mentions_links_and_code_runs_read_as_their_plain_text_in_a_back() {
    let mention = json!({
        "type": "mention",
        "mention": {"type": "page", "page": {"id": "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5"}},
        "annotations": {"code": false},
        "plain_text": "Photosynthesis",
        "href": "https://www.notion.so/1f3c8a2e4b7d80b78d3ae5f7a9c1b3d5"
    });
    let date = json!({
        "type": "mention",
        "mention": {"type": "date", "date": {"start": "2022-12-16", "end": null, "time_zone": null}},
        "plain_text": "2022-12-16"
    });
    let paragraph = block(
        &id(1),
        "paragraph",
        json!({"rich_text": [text("See "), mention, text(" on "), date, text(", yield "), code("2 ATP")]}),
        vec![],
    );

    assert_eq!(render_blocks(&[paragraph]), "See Photosynthesis on 2022-12-16, yield 2 ATP");
}

#[test]
fn tables_columns_and_captions_render_and_child_pages_do_not() {
    let row = |n: u32, a: &str, b: &str| {
        block(&id(n), "table_row", json!({"cells": [[text(a)], [text(b)]]}), vec![])
    };
    let table = block(
        &id(1),
        "table",
        json!({"table_width": 2, "has_column_header": true}),
        vec![row(2, "Stage", "ATP"), row(3, "Glycolysis", "2")],
    );
    let columns = block(
        &id(4),
        "column_list",
        json!({}),
        vec![
            block(&id(5), "column", json!({}), vec![text_block(&id(6), "paragraph", "left", vec![])]),
            block(&id(7), "column", json!({}), vec![text_block(&id(8), "paragraph", "right", vec![])]),
        ],
    );
    let image = block(
        &id(9),
        "image",
        json!({"type": "file", "file": {"url": "https://s3/x.png", "expiry_time": "2026-05-12T08:04:00.000Z"},
               "caption": [text("Mitochondrion")]}),
        vec![],
    );
    let child_page = block(
        &id(10),
        "child_page",
        json!({"title": "Practice quiz"}),
        vec![text_block(&id(11), "paragraph", "not read", vec![])],
    );
    let unsupported = block(&id(12), "unsupported", json!({}), vec![]);

    assert_eq!(
        render_blocks(&[table, columns, image, child_page, unsupported]),
        "Stage | ATP\nGlycolysis | 2\nleft\nright\nMitochondrion"
    );
}

#[test]
fn fronts_turn_each_code_run_into_a_numbered_cloze() {
    let items = vec![
        text("The "),
        code("Krebs cycle"),
        text(" makes "),
        code("2"),
        text(" "),
        code("ATP"),
        text(" per glucose"),
    ];

    assert_eq!(cloze_text(&items), "The {{c1::Krebs cycle}} makes {{c2::2}} {{c3::ATP}} per glucose");
}

#[test]
fn code_already_in_cloze_form_keeps_its_number() {
    let items = vec![code("c2::ATP"), text(" from "), code("glucose"), text(" and "), code("c2::NADH")];
    assert_eq!(cloze_text(&items), "{{c2::ATP}} from {{c1::glucose}} and {{c2::NADH}}");
    // Not the form: no number, or nothing after it.
    let items = vec![code("c::x"), text(" "), code("c3::")];
    assert_eq!(cloze_text(&items), "{{c1::c::x}} {{c2::c3::}}");
}

#[test]
fn adjacent_code_runs_make_one_cloze_and_blank_code_runs_stay_plain() {
    let mut bold_code = code("34");
    bold_code["annotations"]["bold"] = json!(true);
    let items = vec![code("32–"), bold_code, code(" ATP "), text("and"), code("  "), text("more")];

    assert_eq!(cloze_text(&items), "{{c1::32–34 ATP}} and  more");
}

#[test]
fn the_marked_rendering_prefixes_every_block_with_its_id_and_keeps_heading_levels() {
    let mut heading = text_block(&id(1), "heading_2", "Key questions", vec![]);
    heading["heading_2"]["is_toggleable"] = json!(false);
    let mut toggle_heading = text_block(
        &id(2),
        "heading_3",
        "ETC",
        vec![text_block(&id(3), "paragraph", "Inner membrane", vec![])],
    );
    toggle_heading["heading_3"]["is_toggleable"] = json!(true);
    let toggle =
        text_block(&id(4), "toggle", "Where?", vec![text_block(&id(5), "paragraph", "Matrix", vec![])]);

    assert_eq!(
        render_blocks_marked(&[heading, toggle_heading, toggle]),
        format!(
            "[{}] ## Key questions\n[{}] ### ▸ ETC\n  [{}] Inner membrane\n[{}] ▸ Where?\n  [{}] Matrix",
            id(1),
            id(2),
            id(3),
            id(4),
            id(5)
        )
    );
}
