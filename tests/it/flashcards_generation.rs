//! Flashcard generators against the fixtures and a fake OpenAI-compatible server.

use std::{
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use cognie_sync::flashcards::{
    Card, CardSource, Content, ContentPage, GenerateError, Generator, OpenAiGenerator, RulesGenerator,
};
use serde_json::{Value, json};

use crate::support::{
    fake_openai::{API_KEY, FakeOpenAi, MODEL, Reply},
    fixtures,
};

const PAGE_ID: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";
const T_GLYCO: &str = "1f3c8a2e-4b7d-8105-86e7-f8a9b0c1d2e5";
const T_KREBS: &str = "1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f6";
const H3_ETC: &str = "1f3c8a2e-4b7d-8107-a809-b0c1d2e3f4a7";
const T_EQ: &str = "1f3c8a2e-4b7d-810e-9f70-c7d8e9f0a11e";

fn json_fixture(name: &str) -> Value {
    serde_json::from_slice(&fixtures::bytes(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn results(name: &str) -> Vec<Value> {
    json_fixture(name)["results"].as_array().expect("a list response").clone()
}

/// The page "Cellular Respiration" as the fetch step delivers it: both pages of blocks, children
/// inlined from their fixtures.
fn fixture_content() -> Content {
    let mut blocks = results("blocks_children_page_1.json");
    blocks.extend(results("blocks_children_page_2.json"));
    for block in &mut blocks {
        let file = match block["id"].as_str() {
            Some(T_GLYCO) => "blocks_children_toggle_glycolysis.json",
            Some(T_KREBS) => "blocks_children_toggle_krebs.json",
            Some(H3_ETC) => "blocks_children_heading_etc.json",
            Some(T_EQ) => "blocks_children_toggle_equation.json",
            _ => continue,
        };
        block["children"] = Value::Array(results(file));
    }
    Content { pages: vec![ContentPage { page: json_fixture("page_retrieve.json"), blocks, gone: false }] }
}

fn openai(fake: &FakeOpenAi) -> Generator {
    Generator::OpenAi(OpenAiGenerator::new(fake.config()).expect("valid configuration"))
}

fn card(front: &str, back: &str, source_block_id: &str) -> Value {
    json!({"front": front, "back": back, "source_block_id": source_block_id})
}

/// Asserts that generating the fixture fails with `kind`, retryable or not, and returns the error.
async fn expect_failure(generator: &Generator, kind: &str, retryable: bool) -> GenerateError {
    let err = generator.generate(&fixture_content()).await.expect_err("generation should fail");
    assert_eq!(err.error_kind(), kind, "unexpected error: {err}");
    assert_eq!(err.is_retryable(), retryable, "{kind} retryable? ({err})");
    assert!(!err.to_string().contains(API_KEY), "the key leaked into: {err}");
    err
}

#[tokio::test]
async fn the_rules_generator_makes_the_fixture_pages_four_cards() {
    let cards = Generator::Rules(RulesGenerator).generate(&fixture_content()).await.unwrap();

    let ids: Vec<&str> = cards.iter().map(|c| c.source_block_id.as_str()).collect();
    assert_eq!(ids, vec![T_GLYCO, T_KREBS, H3_ETC, T_EQ]);
}

#[tokio::test]
async fn openai_cards_are_validated_and_returned_in_document_order() {
    // Arrange
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::Cards(json!([
        card("Where does the Krebs cycle take place?", "In the mitochondrial matrix.", T_KREBS),
        card("Net ATP yield of glycolysis?", "2 ATP per glucose (4 made, 2 used), plus 2 NADH.", T_GLYCO),
    ])));
    let generator = openai(&fake);

    // Act
    let cards = generator.generate(&fixture_content()).await.expect("valid cards");

    // Assert
    assert_eq!(
        cards,
        vec![
            Card {
                source_page_id: PAGE_ID.to_owned(),
                source_block_id: T_GLYCO.to_owned(),
                source: CardSource::Block,
                front: "Net ATP yield of glycolysis?".to_owned(),
                back: "2 ATP per glucose (4 made, 2 used), plus 2 NADH.".to_owned(),
            },
            Card {
                source_page_id: PAGE_ID.to_owned(),
                source_block_id: T_KREBS.to_owned(),
                source: CardSource::Block,
                front: "Where does the Krebs cycle take place?".to_owned(),
                back: "In the mitochondrial matrix.".to_owned(),
            },
        ]
    );
}

#[tokio::test]
async fn the_request_carries_the_key_the_model_json_mode_and_the_page_text_with_block_ids() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::Cards(json!([])));

    openai(&fake).generate(&fixture_content()).await.expect("an empty set of cards is valid");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "one call per generation");
    let request = &requests[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.authorization.as_deref(), Some(format!("Bearer {API_KEY}").as_str()));
    assert_eq!(request.body["model"], MODEL);
    assert_eq!(request.body["response_format"], json!({"type": "json_object"}));
    assert!(request.message("system").contains("\"source_block_id\""));
    let notes = request.message("user");
    for expected in [
        format!("[{PAGE_ID}] Cellular Respiration"),
        format!("[{T_GLYCO}] ▸ What is the net ATP yield of glycolysis?"),
        "[1f3c8a2e-4b7d-8201-8c1d-0a1b2c3d4e51] 2 ATP per glucose molecule".to_owned(),
        format!("[{T_EQ}] ▸ What is the overall equation of aerobic respiration?"),
        "Compare with Photosynthesis, which runs the process in reverse.".to_owned(),
    ] {
        assert!(notes.contains(&expected), "the prompt lacks {expected:?}:\n{notes}");
    }
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_a_retryable_invalid_output() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::Content("Here are your flashcards: 1. Glycolysis ...".to_owned()));

    expect_failure(&openai(&fake), "generator_invalid_output", true).await;
}

#[tokio::test]
async fn an_answer_citing_an_unknown_block_is_a_retryable_invalid_output() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::Cards(json!([
        card("Q", "A", T_GLYCO),
        card("Invented", "Not from the notes", "1f3c8a2e-4b7d-8999-8999-999999999999"),
    ])));

    let err = expect_failure(&openai(&fake), "generator_invalid_output", true).await;
    assert!(err.to_string().contains("1f3c8a2e-4b7d-8999-8999-999999999999"), "{err}");
}

#[tokio::test]
async fn an_answer_with_an_empty_back_is_a_retryable_invalid_output() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::Cards(json!([card("Q", "", T_GLYCO)])));

    expect_failure(&openai(&fake), "generator_invalid_output", true).await;
}

#[tokio::test]
async fn a_server_error_is_retryable() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::error(500, "The server had an error while processing your request."));

    let err = expect_failure(&openai(&fake), "generator_unavailable", true).await;
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn a_rate_limit_is_retryable_after_the_providers_wait() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::RateLimited { retry_after_seconds: 7 });

    let err = expect_failure(&openai(&fake), "generator_rate_limited", true).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_rejected_key_is_fatal_and_no_part_of_it_shows_in_the_error() {
    let fake = FakeOpenAi::start().await;
    let mut config = fake.config();
    config.api_key = "sk-fake-wrong-key".to_owned().into();
    let generator = Generator::OpenAi(OpenAiGenerator::new(config).unwrap());

    let err = expect_failure(&generator, "generator_unauthorized", false).await;

    let message = err.to_string();
    assert!(!message.contains("sk-fak") && !message.contains("wrong-key"), "{message}");
    assert_eq!(fake.requests()[0].authorization.as_deref(), Some("Bearer sk-fake-wrong-key"));
}

#[tokio::test]
async fn a_bad_request_or_unknown_model_is_fatal() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::error(400, "This model's maximum context length is 8192 tokens."));
    fake.push(Reply::error(404, "The model `fake-model` does not exist."));
    let generator = openai(&fake);

    let err = expect_failure(&generator, "generator_rejected", false).await;
    assert!(err.to_string().contains("maximum context length"), "{err}");
    expect_failure(&generator, "generator_rejected", false).await;
}

#[tokio::test]
async fn a_slow_answer_times_out_as_retryable() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::delayed(Duration::from_secs(5), Reply::Cards(json!([card("Q", "A", T_GLYCO)]))));
    let mut config = fake.config();
    config.timeout = Duration::from_millis(300);
    let generator = Generator::OpenAi(OpenAiGenerator::new(config).unwrap());

    let started = Instant::now();
    expect_failure(&generator, "generator_timeout", true).await;

    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    let fake = FakeOpenAi::start().await;
    let mut config = fake.config();
    drop(fake);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    config.base_url = format!("http://127.0.0.1:{port}/v1");
    let generator = Generator::OpenAi(OpenAiGenerator::new(config).unwrap());

    expect_failure(&generator, "generator_unavailable", true).await;
}

#[tokio::test]
async fn content_without_text_is_not_sent_to_the_model() {
    let fake = FakeOpenAi::start().await;
    let mut content = fixture_content();
    content.pages[0].gone = true;

    let cards = openai(&fake).generate(&content).await.unwrap();

    assert!(cards.is_empty());
    assert!(fake.requests().is_empty());
}

/// A page whose one paragraph holds `bytes` of text and whose title is `title`.
fn big_page(id: &str, title: &str, bytes: usize) -> ContentPage {
    let text = "The mitochondrion makes ATP. ".repeat(bytes / 29 + 1);
    let rich = |t: &str| json!([{"type": "text", "text": {"content": t}, "plain_text": t}]);
    ContentPage {
        page: json!({"object": "page", "id": id, "properties": {"title": {"type": "title", "title": rich(title)}}}),
        blocks: vec![json!({
            "object": "block", "id": format!("{}-block", &id[..8]), "type": "paragraph", "has_children": false,
            "paragraph": {"rich_text": rich(&text)}
        })],
        gone: false,
    }
}

#[tokio::test]
async fn large_notes_are_sent_in_parts_that_resume_where_they_stopped() {
    const IDS: [&str; 3] = [
        "2a000000-0000-4000-8000-000000000001",
        "2a000000-0000-4000-8000-000000000002",
        "2a000000-0000-4000-8000-000000000003",
    ];
    // Three pages of 30 KB: no two fit in one request.
    let content = Content {
        pages: IDS.iter().enumerate().map(|(i, id)| big_page(id, &format!("Page {i}"), 30_000)).collect(),
    };
    let fake = FakeOpenAi::start().await;
    let generator = openai(&fake);
    fake.push(Reply::Cards(json!([card("Q0", "A0", IDS[0])])));
    fake.push(Reply::error(503, "overloaded"));
    fake.push(Reply::Cards(json!([card("Q1", "A1", IDS[1])])));
    fake.push(Reply::Cards(json!([card("Q2", "A2", IDS[2])])));

    // No time left: one part per go, and the parts done are kept.
    let go = AtomicBool::new(false);
    let mut progress = Default::default();
    assert!(!generator.generate_from(&content, &mut progress, Duration::ZERO, &go).await.expect("part 1"));
    assert_eq!((progress.parts, progress.done, progress.cards.len()), (3, 1, 1));
    // A failure keeps what was done before it.
    let err = generator
        .generate_from(&content, &mut progress, Duration::ZERO, &go)
        .await
        .expect_err("part 2 fails");
    assert!(err.is_retryable(), "{err}");
    assert_eq!((progress.done, progress.cards.len()), (1, 1));
    // Time enough: the rest, in one go.
    assert!(
        generator.generate_from(&content, &mut progress, Duration::MAX, &go).await.expect("parts 2 and 3")
    );
    let fronts: Vec<&str> = progress.cards.iter().map(|c| c.front.as_str()).collect();
    assert_eq!(fronts, ["Q0", "Q1", "Q2"]);

    // Each request held one page, whole; the failed one was asked again.
    let asked: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| {
            let notes = r.message("user");
            let held: Vec<usize> = (0..3).filter(|i| notes.contains(IDS[*i])).collect();
            assert_eq!(held.len(), 1, "one page per request");
            assert!(notes.len() > 30_000 && notes.len() < 48 * 1024, "{}", notes.len());
            held[0]
        })
        .collect();
    assert_eq!(asked, [0, 1, 1, 2]);

    // Progress made from other parts (another split, another model) starts over.
    progress.fingerprint = "made from other notes".to_owned();
    progress.done = 1;
    fake.push(Reply::Cards(json!([card("Q0 again", "A0", IDS[0])])));
    assert!(
        !generator.generate_from(&content, &mut progress, Duration::ZERO, &go).await.expect("part 1 again")
    );
    assert_eq!((progress.done, progress.cards.len()), (1, 1));
    assert_eq!(progress.cards[0].front, "Q0 again");

    // Shutting down: time enough, but no new part after the one in flight.
    let stop = AtomicBool::new(true);
    fake.push(Reply::Cards(json!([card("Q1 again", "A1", IDS[1])])));
    assert!(!generator.generate_from(&content, &mut progress, Duration::MAX, &stop).await.expect("part 2"));
    assert_eq!((progress.done, progress.cards.len()), (2, 2));
}
