use serde_json::{Value, json};

use super::*;
use crate::flashcards::test_fixtures::{
    H3_ETC, PAGE_ID, T_EQ, T_GLYCO, T_KREBS, code, fixture, fixture_content, fixture_page, id,
    standalone_page, text, text_block,
};

fn generate(content: &Content) -> Vec<Card> {
    RulesGenerator.generate(content).expect("rules never fail on well-formed content")
}

fn page_with(blocks: Vec<Value>) -> Content {
    Content { pages: vec![standalone_page(&id(100), "Notes", blocks)] }
}

fn block_card(block_id: &str, front: &str, back: &str) -> Card {
    Card {
        source_page_id: PAGE_ID.to_owned(),
        source_block_id: block_id.to_owned(),
        source: CardSource::Block,
        front: front.to_owned(),
        back: back.to_owned(),
    }
}

#[test]
fn the_fixture_page_gives_exactly_its_four_toggle_cards_in_document_order() {
    let cards = generate(&fixture_content());

    assert_eq!(
        cards,
        vec![
            block_card(
                T_GLYCO,
                "What is the net ATP yield of glycolysis?",
                "2 ATP per glucose molecule (4 produced, 2 consumed), plus 2 NADH.",
            ),
            block_card(
                T_KREBS,
                "Where does the Krebs cycle take place?",
                "In the mitochondrial matrix.\n- Also called the citric acid cycle or TCA cycle.",
            ),
            block_card(
                H3_ETC,
                "Electron transport chain",
                "Located in the inner mitochondrial membrane; produces roughly 32–34 ATP by oxidative \
             phosphorylation, with O₂ as the final electron acceptor.",
            ),
            block_card(
                T_EQ,
                "What is the overall equation of aerobic respiration?",
                "$C_6H_{12}O_6 + 6O_2 \\rightarrow 6CO_2 + 6H_2O$",
            ),
        ]
    );
}

#[test]
fn the_fixture_page_is_a_row_but_its_toggles_replace_the_row_card() {
    let page = fixture_page();
    assert!(page.is_row(), "page_retrieve.json is a data-source row");

    let cards = generate(&fixture_content());

    assert!(cards.iter().all(|card| card.source == CardSource::Block));
}

#[test]
fn a_gone_page_gives_no_cards() {
    let mut page = fixture_page();
    page.gone = true;

    assert!(generate(&Content { pages: vec![page] }).is_empty());
}

#[test]
fn inline_code_in_a_front_becomes_numbered_clozes_and_stays_plain_in_the_back() {
    let toggle = json!({
        "object": "block", "id": id(1), "type": "toggle", "has_children": true,
        "toggle": {"rich_text": [text("The "), code("Krebs cycle"), text(" yields "), code("2 ATP"), text(".")]},
        "children": [{"object": "block", "id": id(2), "type": "paragraph",
                      "paragraph": {"rich_text": [text("Per turn: "), code("1 ATP"), text(".")]}}]
    });

    let cards = generate(&page_with(vec![toggle]));

    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].front, "The {{c1::Krebs cycle}} yields {{c2::2 ATP}}.");
    assert_eq!(cards[0].back, "Per turn: 1 ATP.");
}

#[test]
fn a_nested_toggle_is_its_own_card_and_part_of_its_parents_back() {
    let blocks = vec![text_block(
        &id(1),
        "toggle",
        "Outer question",
        vec![
            text_block(&id(2), "paragraph", "Outer answer.", vec![]),
            text_block(
                &id(3),
                "toggle",
                "Inner question",
                vec![text_block(&id(4), "paragraph", "Inner answer.", vec![])],
            ),
        ],
    )];

    let cards = generate(&page_with(blocks));

    let summary: Vec<(&str, &str, &str)> =
        cards.iter().map(|c| (c.source_block_id.as_str(), c.front.as_str(), c.back.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (id(1).as_str(), "Outer question", "Outer answer.\n▸ Inner question\n  Inner answer."),
            (id(3).as_str(), "Inner question", "Inner answer."),
        ]
    );
    assert!(cards.iter().all(|c| c.source_page_id == id(100)));
}

#[test]
fn toggleable_headings_are_cards_and_plain_headings_are_not() {
    let mut toggleable =
        text_block(&id(1), "heading_2", "Toggleable", vec![text_block(&id(2), "paragraph", "yes", vec![])]);
    toggleable["heading_2"]["is_toggleable"] = json!(true);
    let mut plain = text_block(&id(3), "heading_1", "Plain", vec![]);
    plain["heading_1"]["is_toggleable"] = json!(false);

    let cards = generate(&page_with(vec![plain, toggleable]));

    assert_eq!(cards.len(), 1);
    assert_eq!((cards[0].source_block_id.as_str(), cards[0].front.as_str()), (id(1).as_str(), "Toggleable"));
}

#[test]
fn toggles_inside_other_blocks_are_found_but_not_inside_child_pages() {
    let in_list = text_block(
        &id(1),
        "bulleted_list_item",
        "A list",
        vec![text_block(&id(2), "toggle", "Listed?", vec![text_block(&id(3), "paragraph", "Yes.", vec![])])],
    );
    let child_page = json!({
        "object": "block", "id": id(4), "type": "child_page", "has_children": true,
        "child_page": {"title": "Practice quiz"},
        "children": [text_block(&id(5), "toggle", "Elsewhere?", vec![text_block(&id(6), "paragraph", "Not here.", vec![])])]
    });

    let cards = generate(&page_with(vec![in_list, child_page]));

    assert_eq!(cards.iter().map(|c| c.front.as_str()).collect::<Vec<_>>(), vec!["Listed?"]);
}

#[test]
fn toggles_with_an_empty_title_or_no_answer_are_skipped() {
    let blocks = vec![
        text_block(&id(1), "toggle", "   ", vec![text_block(&id(2), "paragraph", "orphan answer", vec![])]),
        json!({"object": "block", "id": id(3), "type": "toggle", "has_children": false,
               "toggle": {"rich_text": []}}),
        text_block(&id(4), "toggle", "Not answered yet", vec![]),
        text_block(&id(5), "toggle", "Answered", vec![text_block(&id(6), "paragraph", "yes", vec![])]),
    ];

    let cards = generate(&page_with(blocks));

    assert_eq!(cards.iter().map(|c| c.front.as_str()).collect::<Vec<_>>(), vec!["Answered"]);
}

fn rows(file: &str) -> Content {
    let pages = fixture(file)["results"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| ContentPage { page: row.clone(), blocks: vec![], gone: false })
        .collect();
    Content { pages }
}

#[test]
fn data_source_rows_are_cards_of_their_title_and_other_properties() {
    let cards = generate(&rows("data_source_query.json"));

    assert_eq!(
        cards,
        vec![
            Card {
                source_page_id: PAGE_ID.to_owned(),
                source_block_id: PAGE_ID.to_owned(),
                source: CardSource::Row,
                front: "Cellular Respiration".to_owned(),
                back: "Status: Ready\nSync to flashcards: Yes\nTags: Biology, Exam 1".to_owned(),
            },
            Card {
                source_page_id: "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5".to_owned(),
                source_block_id: "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5".to_owned(),
                source: CardSource::Row,
                front: "Photosynthesis".to_owned(),
                back: "Status: Draft\nSync to flashcards: No\nTags: Biology".to_owned(),
            },
        ]
    );
}

#[test]
fn legacy_database_rows_are_cards_too() {
    let cards = generate(&rows("database_query_legacy_2022-06-28.json"));

    assert_eq!(
        cards.iter().map(|c| (c.front.as_str(), c.source)).collect::<Vec<_>>(),
        vec![("Cellular Respiration", CardSource::Row), ("Photosynthesis", CardSource::Row),]
    );
}

#[test]
fn row_properties_render_by_type_in_name_order_skipping_empty_ones() {
    let mut content = rows("data_source_query.json");
    content.pages.truncate(1);
    let properties = &mut content.pages[0].page["properties"];
    properties["Answer"] =
        json!({"id": "a", "type": "rich_text", "rich_text": [text("Makes "), code("ATP")]});
    properties["Empty"] = json!({"id": "e", "type": "rich_text", "rich_text": []});
    properties["Count"] = json!({"id": "c", "type": "number", "number": 36});
    properties["None"] = json!({"id": "n", "type": "number", "number": null});
    properties["Due"] =
        json!({"id": "d", "type": "date", "date": {"start": "2026-06-01", "end": "2026-06-03"}});
    properties["Link"] = json!({"id": "l", "type": "url", "url": "https://example.org"});
    properties["Mail"] = json!({"id": "m", "type": "email", "email": "a@example.org"});
    properties["Score"] = json!({"id": "s", "type": "formula", "formula": {"type": "number", "number": 2.5}});
    properties["Label"] =
        json!({"id": "f", "type": "formula", "formula": {"type": "string", "string": "hard"}});
    properties["Kind"] = json!({"id": "k", "type": "select", "select": {"name": "Process"}});
    properties["People"] = json!({"id": "p", "type": "people", "people": [{"object": "user", "id": "u"}]});
    properties["Name"]["title"] = json!([text("Role of "), code("O₂")]);

    let cards = generate(&content);

    assert_eq!(cards[0].front, "Role of {{c1::O₂}}");
    assert_eq!(
        cards[0].back,
        "Answer: Makes ATP\nCount: 36\nDue: 2026-06-01 → 2026-06-03\nKind: Process\nLabel: hard\n\
         Link: https://example.org\nMail: a@example.org\nScore: 2.5\nStatus: Ready\n\
         Sync to flashcards: Yes\nTags: Biology, Exam 1"
    );
}

#[test]
fn a_rows_toggles_are_its_cards_with_the_row_as_their_page() {
    let mut content = rows("data_source_query.json");
    content.pages[1].blocks = vec![text_block(
        &id(1),
        "toggle",
        "Where?",
        vec![text_block(&id(2), "paragraph", "Chloroplasts.", vec![])],
    )];

    let cards = generate(&content);

    let photosynthesis = "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5";
    let summary: Vec<(&str, &str, CardSource)> =
        cards.iter().map(|c| (c.source_page_id.as_str(), c.source_block_id.as_str(), c.source)).collect();
    assert_eq!(
        summary,
        vec![(PAGE_ID, PAGE_ID, CardSource::Row), (photosynthesis, id(1).as_str(), CardSource::Block),]
    );
}

#[test]
fn a_page_or_card_block_without_an_id_is_invalid_content() {
    let no_page_id =
        Content { pages: vec![ContentPage { page: json!({"object": "page"}), blocks: vec![], gone: false }] };
    let mut toggle = text_block(&id(1), "toggle", "Q", vec![text_block(&id(2), "paragraph", "A", vec![])]);
    toggle.as_object_mut().unwrap().remove("id");

    for content in [no_page_id, page_with(vec![toggle])] {
        let err = RulesGenerator.generate(&content).unwrap_err();
        assert_eq!(err.error_kind(), "generator_invalid_content");
        assert!(!err.is_retryable());
    }
}

#[test]
fn content_round_trips_through_serde_with_gone_defaulting_to_false() {
    let content: Content =
        serde_json::from_value(json!({"pages": [{"page": {"id": PAGE_ID}, "blocks": []}]})).expect("content");

    assert!(!content.pages[0].gone);
    let again: Content = serde_json::from_str(&serde_json::to_string(&content).unwrap()).unwrap();
    assert_eq!(again, content);
}
