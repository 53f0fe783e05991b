use serde_json::json;

use super::{output::parse_cards, prompt::*, *};
use crate::flashcards::{
    CardSource, ContentPage,
    test_fixtures::{PAGE_ID, T_EQ, T_GLYCO, T_KREBS, fixture, fixture_content},
};

fn config() -> OpenAiConfig {
    OpenAiConfig {
        base_url: "https://api.example.com/v1/".to_owned(),
        api_key: SecretString::from("sk-test-secret"),
        model: "gpt-test".to_owned(),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn the_prompt_holds_the_page_text_with_every_block_id() {
    let prompts = user_prompts(&fixture_content(), usize::MAX);
    let [notes] = prompts.as_slice() else { panic!("the fixture is one part: {prompts:?}") };

    assert!(notes.contains(&format!("=== Page [{PAGE_ID}] Cellular Respiration ===")), "{notes}");
    assert!(notes.contains("Properties:\nStatus: Ready\nSync to flashcards: Yes\nTags: Biology, Exam 1"));
    assert!(notes.contains(&format!("[{T_GLYCO}] ▸ What is the net ATP yield of glycolysis?")));
    assert!(notes.contains("  [1f3c8a2e-4b7d-8203-ae3f-2c3d4e5f6a73] - Also called the citric acid cycle"));
    assert!(notes.contains("[1f3c8a2e-4b7d-8107-a809-b0c1d2e3f4a7] ### ▸ Electron transport chain"));
    assert!(notes.contains("[1f3c8a2e-4b7d-810c-bd5e-a5b6c7d8e9fc] ```python"));
    assert!(notes.contains("$C_6H_{12}O_6 + 6O_2 \\rightarrow 6CO_2 + 6H_2O$"));
    assert!(!notes.contains("1f3c8a2e-4b7d-81c2-a4e6-f8b0d2c4e6a8"), "child pages are not part of the notes");
    assert!(SYSTEM_PROMPT.contains("JSON"), "json_object mode requires the word JSON in the messages");
}

#[test]
fn there_is_nothing_to_ask_when_every_page_is_gone_or_empty() {
    let mut gone = fixture_content();
    gone.pages[0].gone = true;
    let empty =
        Content { pages: vec![ContentPage { page: json!({"id": PAGE_ID}), blocks: vec![], gone: false }] };

    assert!(user_prompts(&gone, usize::MAX).is_empty());
    assert!(user_prompts(&empty, usize::MAX).is_empty());
    assert!(user_prompts(&Content::default(), usize::MAX).is_empty());
}

fn page_with_text(n: u32, bytes: usize) -> ContentPage {
    let id = format!("2a000000-0000-4000-8000-{n:012}");
    let text = "x".repeat(bytes);
    let paragraph = json!({
        "object": "block", "id": format!("2c000000-0000-4000-8000-{n:012}"), "type": "paragraph", "has_children": false,
        "paragraph": {"rich_text": [{"type": "text", "text": {"content": text}, "plain_text": text}]}
    });
    ContentPage {
        page: json!({"object": "page", "id": id, "properties": {}}),
        blocks: vec![paragraph],
        gone: false,
    }
}

#[test]
fn notes_are_split_into_parts_of_whole_pages_in_document_order() {
    let content = Content {
        pages: vec![
            page_with_text(1, 400),
            page_with_text(2, 400),
            page_with_text(3, 2_000),
            page_with_text(4, 100),
        ],
    };
    let prompts = user_prompts(&content, 1_000);

    // Pages 1 and 2 fit together; page 3 is larger than a part and goes alone, whole; page 4
    // starts the next part.
    let pages_in = |prompt: &String| -> Vec<u32> {
        (1..=4).filter(|n| prompt.contains(&format!("2a000000-0000-4000-8000-{n:012}"))).collect()
    };
    assert_eq!(prompts.iter().map(pages_in).collect::<Vec<_>>(), [vec![1, 2], vec![3], vec![4]]);
    assert!(prompts.iter().all(|p| p.starts_with("Notes:\n")), "{prompts:?}");
    assert!(prompts[1].contains(&"x".repeat(2_000)), "a large page is never cut");
    assert!(prompts[0].len() <= 1_000 && prompts[2].len() <= 1_000);
    assert_eq!(user_prompts(&content, usize::MAX).len(), 1, "all in one part when it fits");
}

#[test]
fn a_page_larger_than_a_part_is_cut_between_its_top_level_blocks() {
    let block = |n: u32, ty: &str, bytes: usize| {
        let text = format!("{n}-{}", "x".repeat(bytes));
        json!({
            "object": "block", "id": format!("2c000000-0000-4000-8000-{n:012}"), "type": ty, "has_children": false,
            ty: {"rich_text": [{"type": "text", "text": {"content": text}, "plain_text": text}]}
        })
    };
    // Four paragraphs of ~300 bytes, then a numbered list of three, then a 1,500-byte paragraph.
    let mut blocks: Vec<_> = (1..=4).map(|n| block(n, "paragraph", 300)).collect();
    blocks.extend((5..=7).map(|n| block(n, "numbered_list_item", 300)));
    blocks.push(block(8, "paragraph", 1_500));
    let page = ContentPage {
        page: json!({"object": "page", "id": "2a000000-0000-4000-8000-000000000001", "properties": {}}),
        blocks,
        gone: false,
    };
    let whole = user_prompts(&Content { pages: vec![page.clone()] }, usize::MAX);
    let prompts = user_prompts(&Content { pages: vec![page] }, 1_000);

    let blocks_in = |prompt: &String| -> Vec<u32> {
        (1..=8).filter(|n| prompt.contains(&format!("2c000000-0000-4000-8000-{n:012}"))).collect()
    };
    assert_eq!(
        prompts.iter().map(blocks_in).collect::<Vec<_>>(),
        [vec![1, 2], vec![3, 4], vec![5, 6, 7], vec![8]],
        "whole blocks in order, a numbered list kept together, a block larger than a part alone"
    );
    assert!(prompts[0].contains("=== Page [2a000000-0000-4000-8000-000000000001]  ===\n"), "{}", prompts[0]);
    for prompt in &prompts[1..] {
        assert!(
            prompt
                .starts_with("Notes:\n\n=== Page [2a000000-0000-4000-8000-000000000001]  (continued) ===\n")
        );
    }
    assert!(
        prompts[..2].iter().all(|p| p.len() <= 1_000),
        "{:?}",
        prompts.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(prompts[2].contains("3. 7-"), "the list counts on across its items: {}", prompts[2]);
    let text = |prompts: &[String]| prompts.iter().map(|p| p.replace(" (continued)", "")).collect::<String>();
    assert_eq!(whole.len(), 1);
    assert_eq!(
        text(&prompts).matches("2c000000-").count(),
        text(&whole).matches("2c000000-").count(),
        "every block once"
    );
}

fn answer(cards: serde_json::Value) -> String {
    json!({"cards": cards}).to_string()
}

#[test]
fn valid_answers_become_cards_in_document_order_with_the_contents_id_spelling() {
    let index = SourceIndex::build(&fixture_content()).unwrap();
    let answer = answer(json!([
        {"front": "Overall equation?", "back": "C6H12O6 + 6O2 -> 6CO2 + 6H2O", "source_block_id": T_EQ},
        {"front": " Where is the Krebs cycle? ", "back": "Mitochondrial matrix", "source_block_id": T_KREBS.to_uppercase()},
        {"front": "Tags?", "back": "Biology, Exam 1", "source_block_id": PAGE_ID.replace('-', "")},
        {"front": "Again?", "back": "dropped", "source_block_id": T_KREBS},
    ]));

    let cards = parse_cards(&answer, &index).unwrap();

    let summary: Vec<(&str, &str, CardSource, &str)> = cards
        .iter()
        .map(|c| (c.source_page_id.as_str(), c.source_block_id.as_str(), c.source, c.front.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (PAGE_ID, PAGE_ID, CardSource::Row, "Tags?"),
            (PAGE_ID, T_KREBS, CardSource::Block, "Where is the Krebs cycle?"),
            (PAGE_ID, T_EQ, CardSource::Block, "Overall equation?"),
        ]
    );
}

#[test]
fn a_fenced_json_answer_is_accepted() {
    let index = SourceIndex::build(&fixture_content()).unwrap();
    let fenced =
        format!("```json\n{}\n```", answer(json!([{"front": "Q", "back": "A", "source_block_id": T_GLYCO}])));

    assert_eq!(parse_cards(&fenced, &index).unwrap().len(), 1);
}

#[test]
fn invalid_answers_are_retryable_invalid_output() {
    let index = SourceIndex::build(&fixture_content()).unwrap();
    let cases = [
        ("not JSON", "Sure! Here are your cards: ...".to_owned()),
        ("no cards array", json!({"flashcards": []}).to_string()),
        ("empty front", answer(json!([{"front": " ", "back": "A", "source_block_id": T_GLYCO}]))),
        ("missing back", answer(json!([{"front": "Q", "source_block_id": T_GLYCO}]))),
        (
            "unknown id",
            answer(
                json!([{"front": "Q", "back": "A", "source_block_id": "1f3c8a2e-0000-0000-0000-000000000000"}]),
            ),
        ),
        ("no id", answer(json!([{"front": "Q", "back": "A"}]))),
        (
            "a child page's id",
            answer(
                json!([{"front": "Q", "back": "A", "source_block_id": "1f3c8a2e-4b7d-81c2-a4e6-f8b0d2c4e6a8"}]),
            ),
        ),
    ];

    for (what, answer) in cases {
        let err = parse_cards(&answer, &index).expect_err(what);
        assert_eq!(err.error_kind(), "generator_invalid_output", "{what}: {err}");
        assert!(err.is_retryable(), "{what}");
    }
}

#[test]
fn rows_from_a_query_can_be_cited_by_their_page_id() {
    let rows = fixture("data_source_query.json")["results"].as_array().unwrap().clone();
    let content = Content {
        pages: rows.into_iter().map(|page| ContentPage { page, blocks: vec![], gone: false }).collect(),
    };
    let index = SourceIndex::build(&content).unwrap();
    let photosynthesis = "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5";

    let cards =
        parse_cards(&answer(json!([{"front": "Q", "back": "A", "source_block_id": photosynthesis}])), &index)
            .unwrap();

    assert_eq!((cards[0].source_page_id.as_str(), cards[0].source), (photosynthesis, CardSource::Row));
}

#[test]
fn the_endpoint_is_the_base_url_plus_chat_completions() {
    let generator = OpenAiGenerator::new(config()).unwrap();

    assert_eq!(generator.endpoint.as_str(), "https://api.example.com/v1/chat/completions");
}

type Edit = Box<dyn Fn(&mut OpenAiConfig)>;

#[test]
fn bad_settings_are_refused_naming_the_setting() {
    let cases: [(&str, Edit); 5] = [
        ("OPENAI_BASE_URL", Box::new(|c| c.base_url = "not a url".into())),
        ("OPENAI_BASE_URL", Box::new(|c| c.base_url = "ftp://example.com/v1".into())),
        ("OPENAI_API_KEY", Box::new(|c| c.api_key = SecretString::from(" "))),
        ("OPENAI_MODEL", Box::new(|c| c.model = String::new())),
        ("OpenAI timeout", Box::new(|c| c.timeout = Duration::ZERO)),
    ];

    for (setting, change) in cases {
        let mut config = config();
        change(&mut config);
        assert_eq!(OpenAiGenerator::new(config).unwrap_err().setting, setting);
    }
}

#[test]
fn the_key_never_shows_in_debug_output_or_provider_messages() {
    let generator = OpenAiGenerator::new(config()).unwrap();

    assert!(!format!("{generator:?}").contains("sk-test-secret"));
    let body = br#"{"error":{"message":"Model not found for key sk-test-secret"}}"#;
    let err = generator.status_error(StatusCode::BAD_REQUEST, None, body);
    assert_eq!(
        err.to_string(),
        "the flashcard model rejected the request (HTTP 400): Model not found for key [redacted]"
    );
    let err = generator.status_error(
        StatusCode::UNAUTHORIZED,
        None,
        br#"{"error":{"message":"Incorrect API key provided: sk-tes***cret"}}"#,
    );
    assert!(!err.to_string().contains("sk-tes"), "{err}");
}

#[test]
fn a_404_points_at_the_model_and_base_url_settings() {
    let generator = OpenAiGenerator::new(config()).unwrap();

    let err = generator.status_error(StatusCode::NOT_FOUND, None, b"404 page not found");

    assert_eq!(
        err.to_string(),
        "the flashcard model rejected the request (HTTP 404): 404 page not found; check OPENAI_MODEL, \
         and OPENAI_BASE_URL (it includes the version path, e.g. /v1)"
    );
}

#[test]
fn a_429_for_an_account_out_of_quota_fails_at_once_and_a_rate_limit_waits() {
    let generator = OpenAiGenerator::new(config()).unwrap();
    let quota = br#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
    let err = generator.status_error(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(20)), quota);
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("OPENAI_API_KEY has no quota left"), "{err}");

    let limited = br#"{"error": {"message": "Rate limit reached for requests", "type": "requests",
        "param": null, "code": "rate_limit_exceeded"}}"#;
    let err = generator.status_error(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(20)), limited);
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
}

#[test]
fn retry_after_is_read_in_seconds() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(RETRY_AFTER, "17".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(17)));
    headers.insert(RETRY_AFTER, "0.5".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_millis(500)));
    headers.insert(RETRY_AFTER, "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap());
    assert_eq!(retry_after(&headers), None);
}
