//! The Notion client against the fake Notion: pagination, recursion, errors, OAuth.

use std::time::{Duration, Instant};

use cognie_sync::notion::{
    ApiFlavor, Crawl, CrawlRequest, FetchedContent, LEGACY_NOTION_VERSION, NotionClient, NotionClientConfig,
    NotionError,
};
use serde_json::{Value, json};

use crate::support::{
    fake_notion::{FakeNotion, Fault, ids},
    fixtures,
};

const TOKEN: &str = "ntn_test_9Kq2xWv7Lp3Rz8Yb";
const CLIENT_ID: &str = "463558a3-725e-4f37-b6d3-0889894f68de";
const CLIENT_SECRET: &str = "secret_client_Hf83kQp2Zx";
const REDIRECT_URI: &str = "https://sync.example.com/api/notion/auth/callback";

async fn fake() -> FakeNotion {
    let fake = FakeNotion::start().await;
    fake.allow_token(TOKEN);
    fake
}

fn client(fake: &FakeNotion) -> NotionClient {
    client_with(fake, "2025-09-03", Duration::from_secs(5))
}

fn client_with(fake: &FakeNotion, version: &str, timeout: Duration) -> NotionClient {
    NotionClient::new(NotionClientConfig { base_url: fake.base_url(), version: version.to_owned(), timeout })
        .expect("the client builds")
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixtures::bytes(name)).expect("fixture JSON")
}

/// What the fetch step does, minus the rate limiter: one request at a time until done.
async fn crawl(client: &NotionClient, mut crawl: Crawl) -> Result<FetchedContent, NotionError> {
    while let Some(request) = crawl.next_request() {
        let answer = client.execute(TOKEN, &request).await?;
        crawl.apply(&request, answer).expect("the crawl accepts Notion's answer");
    }
    Ok(crawl.finish().expect("finished"))
}

fn ids_of(blocks: &[Value]) -> Vec<&str> {
    blocks.iter().map(|b| b["id"].as_str().expect("id")).collect()
}

fn count_blocks(blocks: &[Value]) -> usize {
    blocks
        .iter()
        .map(|b| 1 + b.get("children").and_then(Value::as_array).map_or(0, |c| count_blocks(c)))
        .sum()
}

/// Asserts the error's class and that no secret leaks into its text, debug form or causes.
fn assert_error(err: &NotionError, kind: &str, retryable: bool) {
    assert_eq!(err.error_kind(), kind, "{err:?}");
    assert_eq!(err.is_retryable(), retryable, "{err:?}");
    let mut texts = vec![err.to_string(), format!("{err:?}")];
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    for text in texts {
        for secret in [TOKEN, CLIENT_SECRET] {
            assert!(!text.contains(secret), "a secret leaked into: {text}");
        }
    }
}

// ----- pages, blocks and the crawl -----

#[tokio::test]
async fn the_fake_pages_the_fixture_page_exactly_like_the_recorded_api() {
    let fake = fake().await;
    fake.load_fixture_page();
    let client = client(&fake);

    let first = client.list_block_children(TOKEN, ids::PAGE, None).await.expect("first page");
    let recorded = fixture("blocks_children_page_1.json");
    assert_eq!(first.results, recorded["results"].as_array().unwrap().clone());
    assert_eq!(first.next_cursor.as_deref(), recorded["next_cursor"].as_str());
    assert!(first.has_more);

    let second =
        client.list_block_children(TOKEN, ids::PAGE, first.next_cursor.as_deref()).await.expect("second");
    let recorded = fixture("blocks_children_page_2.json");
    assert_eq!(second.results, recorded["results"].as_array().unwrap().clone());
    assert_eq!(second.next_cursor, None);
    assert!(!second.has_more);
}

#[tokio::test]
async fn the_fixture_page_is_crawled_with_every_block_once_and_nested_as_in_notion() {
    let fake = fake().await;
    fake.load_fixture_page();

    let content = crawl(&client(&fake), Crawl::page(ids::PAGE)).await.expect("crawled");

    assert!(!content.gone);
    let page = &content.pages[0];
    assert_eq!(page.page["properties"]["Name"]["title"][0]["plain_text"], "Cellular Respiration");
    assert_eq!(page.blocks.len(), 17);
    assert_eq!(count_blocks(&page.blocks), 22);
    let toggle = page.blocks.iter().find(|b| b["id"] == ids::T_KREBS).expect("the Krebs toggle");
    assert_eq!(
        ids_of(toggle["children"].as_array().unwrap()),
        ["1f3c8a2e-4b7d-8202-9d2e-1b2c3d4e5f62", "1f3c8a2e-4b7d-8203-ae3f-2c3d4e5f6a73"]
    );
    assert!(page.blocks[16].get("children").is_none(), "the child page is not entered");

    // 1 page + 2 pages of top-level blocks + 4 blocks with children, each list once.
    assert_eq!(fake.requests().len(), 7);
    assert_eq!(fake.count("/v1/pages/"), 1);
    assert_eq!(fake.count(&format!("/v1/blocks/{}/children", ids::T_GLYCO)), 1);
    assert_eq!(fake.count(&format!("/v1/blocks/{}/children", ids::CHILD_PAGE)), 0);
    assert!(fake.requests().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn every_request_carries_the_token_the_version_and_the_largest_page_size() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.load_fixture_database();
    let client = client(&fake);

    client.retrieve_page(TOKEN, ids::PAGE).await.expect("page");
    client.list_block_children(TOKEN, ids::PAGE, None).await.expect("children");
    client.query_data_source(TOKEN, ids::DATA_SOURCE, None, None).await.expect("rows");

    let log = fake.requests();
    assert_eq!(log.len(), 3);
    for request in &log {
        assert_eq!(request.token.as_deref(), Some(TOKEN));
        assert_eq!(request.notion_version.as_deref(), Some("2025-09-03"));
    }
    assert_eq!(log[1].query.as_deref(), Some("page_size=100"));
    assert_eq!(log[2].method, "POST");
    let oldest_first = json!([{"timestamp": "created_time", "direction": "ascending"}]);
    assert_eq!(log[2].body, Some(json!({"page_size": 100, "sorts": oldest_first})));
}

#[tokio::test]
async fn ids_are_accepted_without_dashes() {
    let fake = fake().await;
    fake.load_fixture_page();
    let page = client(&fake).retrieve_page(TOKEN, &ids::PAGE.replace('-', "")).await.expect("page");
    assert_eq!(page["id"], ids::PAGE);
}

#[tokio::test]
async fn a_page_in_the_trash_ends_the_crawl_as_gone_after_one_request() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.trash_page(ids::PAGE);

    let content = crawl(&client(&fake), Crawl::page(ids::PAGE)).await.expect("crawled");

    assert!(content.gone);
    assert!(content.pages[0].gone);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_removed_page_is_a_not_found_error_the_crawl_can_record_as_gone() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.remove_page(ids::PAGE);
    let client = client(&fake);
    let mut crawl = Crawl::page(ids::PAGE);
    let request = crawl.next_request().expect("a first request");

    let err = client.execute(TOKEN, &request).await.expect_err("404");

    assert_error(&err, "notion_not_found", false);
    assert!(err.is_not_found());
    assert!(err.to_string().contains("Could not find page with ID"), "{err}");
    crawl.apply_not_found(&request).expect("recorded");
    assert!(crawl.finish().expect("finished").gone);
}

// ----- databases -----

#[tokio::test]
async fn a_data_source_query_is_paginated_and_sends_the_filter() {
    let fake = fake().await;
    fake.load_fixture_database();
    fake.set_page_size_cap(1);
    let client = client(&fake);
    let filter = json!({"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": "2026-05-01"}});

    let first =
        client.query_data_source(TOKEN, ids::DATA_SOURCE, None, Some(filter.clone())).await.expect("p1");
    assert_eq!(ids_of(&first.results), [ids::PAGE]);
    assert!(first.has_more);
    let cursor = first.next_cursor.as_deref();
    let second =
        client.query_data_source(TOKEN, ids::DATA_SOURCE, cursor, Some(filter.clone())).await.expect("p2");
    assert_eq!(ids_of(&second.results), [ids::PHOTOSYNTHESIS]);
    assert!(!second.has_more);

    let log = fake.requests();
    assert_eq!(log[0].path, format!("/v1/data_sources/{}/query", ids::DATA_SOURCE));
    assert_eq!(
        log[1].body,
        Some(json!({"page_size": 100, "start_cursor": ids::PHOTOSYNTHESIS, "filter": filter,
                    "sorts": [{"timestamp": "created_time", "direction": "ascending"}]}))
    );
}

#[tokio::test]
async fn a_crawl_query_window_is_sent_as_a_created_time_filter_with_the_oldest_first_sort() {
    let fake = fake().await;
    fake.load_fixture_database();
    let from = "2026-05-04T09:12:00.000Z";
    let window = |id: &str, legacy: bool| {
        // A window's first page: a new query, so no cursor.
        let (id, cursor, created_from) = (id.to_owned(), None, Some(from.to_owned()));
        if legacy {
            CrawlRequest::QueryDatabase { id, cursor, created_from }
        } else {
            CrawlRequest::QueryDataSource { id, cursor, created_from }
        }
    };

    client(&fake).execute(TOKEN, &window(ids::DATA_SOURCE, false)).await.expect("rows");
    let legacy = client_with(&fake, LEGACY_NOTION_VERSION, Duration::from_secs(5));
    legacy.execute(TOKEN, &window(ids::DATABASE, true)).await.expect("legacy rows");

    let expected = json!({"page_size": 100,
                          "filter": {"timestamp": "created_time", "created_time": {"on_or_after": from}},
                          "sorts": [{"timestamp": "created_time", "direction": "ascending"}]});
    let log = fake.requests();
    assert_eq!(log[0].path, format!("/v1/data_sources/{}/query", ids::DATA_SOURCE));
    assert_eq!(log[0].body, Some(expected.clone()));
    assert_eq!(log[1].path, format!("/v1/databases/{}/query", ids::DATABASE));
    assert_eq!(log[1].body, Some(expected));
}

#[tokio::test]
async fn a_legacy_database_query_is_paginated_under_the_2022_version() {
    let fake = fake().await;
    fake.load_fixture_database();
    fake.set_page_size_cap(1);
    let client = client_with(&fake, LEGACY_NOTION_VERSION, Duration::from_secs(5));

    let first = client.query_database_legacy(TOKEN, ids::DATABASE, None, None).await.expect("p1");
    let second = client
        .query_database_legacy(TOKEN, ids::DATABASE, first.next_cursor.as_deref(), None)
        .await
        .expect("p2");

    assert_eq!(ids_of(&first.results), [ids::PAGE]);
    assert_eq!(ids_of(&second.results), [ids::PHOTOSYNTHESIS]);
    assert_eq!(second.results[0]["parent"], json!({"type": "database_id", "database_id": ids::DATABASE}));
    assert_eq!(fake.requests()[0].path, format!("/v1/databases/{}/query", ids::DATABASE));
    assert_eq!(fake.requests()[0].notion_version.as_deref(), Some("2022-06-28"));
}

#[tokio::test]
async fn a_database_is_crawled_through_its_data_source_without_retrieving_its_rows() {
    let fake = fake().await;
    fake.load_fixture_database();
    fake.load_fixture_page();
    fake.set_page_size_cap(1);

    let content =
        crawl(&client(&fake), Crawl::database(ids::DATABASE, ApiFlavor::DataSources)).await.expect("ok");

    assert!(!content.gone);
    assert_eq!(content.database.as_ref().map(|d| d["id"].clone()), Some(json!(ids::DATABASE)));
    assert_eq!(
        content.pages.iter().map(|p| p.page["id"].as_str().unwrap()).collect::<Vec<_>>(),
        [ids::PAGE, ids::PHOTOSYNTHESIS]
    );
    assert_eq!(count_blocks(&content.pages[0].blocks), 22);
    assert!(content.pages[1].blocks.is_empty());
    assert_eq!(fake.count("/v1/pages/"), 0, "rows come with the query");
    assert_eq!(fake.count("/v1/databases/"), 1);
    assert_eq!(fake.count("/v1/data_sources/"), 2, "two rows, one per page");
}

#[tokio::test]
async fn a_legacy_database_crawl_queries_the_database_itself() {
    let fake = fake().await;
    fake.load_fixture_database();
    fake.load_fixture_page();
    let client = client_with(&fake, LEGACY_NOTION_VERSION, Duration::from_secs(5));

    let content =
        crawl(&client, Crawl::database(ids::DATABASE, ApiFlavor::LegacyDatabase)).await.expect("ok");

    assert_eq!(content.pages.len(), 2);
    assert_eq!(content.database, None);
    assert_eq!(fake.count(&format!("/v1/databases/{}/query", ids::DATABASE)), 1);
}

#[tokio::test]
async fn a_legacy_query_on_a_database_with_two_data_sources_is_an_invalid_request() {
    let fake = fake().await;
    let database = json!({"object": "database", "id": ids::DATABASE, "data_sources": [
        {"id": ids::DATA_SOURCE, "name": "a"}, {"id": "1f3c8a2e-4b7d-8056-92c4-000d6f8b0a4c", "name": "b"}
    ]});
    fake.add_database(database);
    let client = client_with(&fake, LEGACY_NOTION_VERSION, Duration::from_secs(5));

    let err = client.query_database_legacy(TOKEN, ids::DATABASE, None, None).await.expect_err("400");

    assert_error(&err, "notion_invalid_request", false);
    assert_eq!(err.code(), Some("validation_error"));
    let NotionError::Api { additional_data: Some(data), .. } = &err else { panic!("{err:?}") };
    assert_eq!(data["error_type"], "multiple_data_sources_for_database");
}

// ----- errors over real HTTP -----

#[tokio::test]
async fn an_unknown_token_is_a_fatal_unauthorized_error() {
    let fake = fake().await;
    fake.load_fixture_page();
    let err = client(&fake).retrieve_page("ntn_revoked_token", ids::PAGE).await.expect_err("401");
    assert_error(&err, "notion_unauthorized", false);
    assert_eq!(err.to_string(), "Notion answered HTTP 401 (unauthorized): API token is invalid.");
    assert!(!format!("{err:?}").contains("ntn_revoked_token"));
}

#[tokio::test]
async fn fatal_statuses_map_to_their_error_kinds() {
    let fake = fake().await;
    fake.load_fixture_page();
    let client = client(&fake);
    for (status, kind) in
        [(400, "notion_invalid_request"), (403, "notion_forbidden"), (404, "notion_not_found")]
    {
        fake.inject("/v1/pages/", Fault::Status(status));
        let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("injected");
        assert_error(&err, kind, false);
        assert_eq!(err.status(), Some(status));
    }
}

#[tokio::test]
async fn a_429_is_retryable_after_the_retry_after_header() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.inject("/", Fault::RateLimited { retry_after_secs: 7 });

    let err = client(&fake).list_block_children(TOKEN, ids::PAGE, None).await.expect_err("429");

    assert_error(&err, "notion_rate_limited", true);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.code(), Some("rate_limited"));
    assert_eq!(fake.requests()[0].status, 429);
}

#[tokio::test]
async fn server_errors_and_overload_are_retryable() {
    let fake = fake().await;
    fake.load_fixture_page();
    let client = client(&fake);
    for (status, kind) in [
        (500, "notion_server_error"),
        (502, "notion_server_error"),
        (503, "notion_server_error"),
        (504, "notion_server_error"),
        (529, "notion_overloaded"),
        (409, "notion_conflict"),
    ] {
        fake.inject("/v1/pages/", Fault::Status(status));
        let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("injected");
        assert_error(&err, kind, true);
    }
}

#[tokio::test]
async fn a_failed_call_is_one_request_the_client_never_retries_by_itself() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.inject("/", Fault::Status(503));
    let client = client(&fake);

    client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("503");
    client.retrieve_page(TOKEN, ids::PAGE).await.expect("the next call succeeds");

    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
}

#[tokio::test]
async fn a_slow_answer_is_a_retryable_timeout() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.inject("/", Fault::Delay(Duration::from_secs(2)));
    let client = client_with(&fake, "2025-09-03", Duration::from_millis(200));

    let started = Instant::now();
    let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("timeout");

    assert_error(&err, "notion_timeout", true);
    assert!(started.elapsed() < Duration::from_secs(1), "gave up after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_connection_broken_mid_answer_is_a_retryable_connection_error() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.inject("/v1/blocks/", Fault::Reset);

    let err = client(&fake).list_block_children(TOKEN, ids::PAGE, None).await.expect_err("reset");

    assert_error(&err, "notion_connection", true);
    assert!(fake.requests()[0].reset);
}

#[tokio::test]
async fn an_unreachable_notion_is_a_retryable_connection_error() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = NotionClient::new(NotionClientConfig {
        base_url,
        version: "2025-09-03".into(),
        timeout: Duration::from_secs(2),
    })
    .unwrap();

    let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("refused");

    assert_error(&err, "notion_connection", true);
}

#[tokio::test]
async fn a_success_answer_that_is_not_json_is_a_retryable_malformed_response() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.inject("/", Fault::Garbage);

    let err = client(&fake).retrieve_page(TOKEN, ids::PAGE).await.expect_err("garbage");

    assert_error(&err, "notion_malformed_response", true);
    assert_eq!(err.status(), Some(200));
}

#[tokio::test]
async fn a_fault_for_one_path_leaves_others_alone_and_always_faults_persist_until_cleared() {
    let fake = fake().await;
    fake.load_fixture_page();
    let client = client(&fake);
    fake.inject_always("/v1/blocks/", Fault::Status(500));

    client.retrieve_page(TOKEN, ids::PAGE).await.expect("pages are unaffected");
    for _ in 0..2 {
        client.list_block_children(TOKEN, ids::PAGE, None).await.expect_err("always 500");
    }
    fake.clear_faults();
    client.list_block_children(TOKEN, ids::PAGE, None).await.expect("cleared");
}

#[tokio::test]
async fn the_fake_refuses_requests_without_a_version_or_a_known_token_like_notion() {
    let fake = fake().await;
    fake.load_fixture_page();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/pages/{}", fake.base_url(), ids::PAGE);

    let no_version = http.get(&url).bearer_auth(TOKEN).send().await.expect("answered");
    assert_eq!(no_version.status(), 400);
    let body: Value = no_version.json().await.expect("JSON");
    assert_eq!((body["object"].as_str(), body["code"].as_str()), (Some("error"), Some("missing_version")));

    let unknown =
        http.get(&url).bearer_auth("ntn_nobody").header("Notion-Version", "2025-09-03").send().await;
    let unknown = unknown.expect("answered");
    assert_eq!(unknown.status(), 401);
    let body: Value = unknown.json().await.expect("JSON");
    assert_eq!(body["message"], fixture("error_401_unauthorized.json")["message"]);
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn the_fake_can_bound_requests_per_token_in_any_window() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.allow_token("ntn_other");
    let client = client(&fake);
    for _ in 0..3 {
        client.retrieve_page(TOKEN, ids::PAGE).await.expect("page");
    }
    client.retrieve_page("ntn_other", ids::PAGE).await.expect("page");

    assert_eq!(fake.requests_for_token(TOKEN).len(), 3);
    assert_eq!(fake.max_requests_in_window(TOKEN, Duration::from_secs(60)), 3);
    assert_eq!(fake.max_requests_in_window("ntn_other", Duration::from_secs(60)), 1);
    fake.reset_log();
    assert!(fake.requests().is_empty());
}

// ----- OAuth -----

#[tokio::test]
async fn an_oauth_code_is_exchanged_once_for_a_token_that_then_works() {
    let fake = FakeNotion::start().await;
    fake.set_oauth_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    fake.add_oauth_code("code-1");
    fake.load_fixture_page();
    let client = client(&fake);

    let token =
        client.exchange_oauth_code(CLIENT_ID, CLIENT_SECRET, "code-1", REDIRECT_URI).await.expect("ok");

    assert!(token.access_token.starts_with("ntn_"));
    assert_eq!(token.bot_id, "1e7d2a9b-3c4f-81a5-b8c2-0027d4e9f6a1");
    assert_eq!(token.workspace_id, "5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f");
    assert_eq!(token.workspace_name.as_deref(), Some("Maya's Study Space"));
    assert!(!format!("{token:?}").contains(&token.access_token));
    let exchange = &fake.requests()[0];
    assert_eq!(exchange.path, "/v1/oauth/token");
    assert_eq!(exchange.token, None);
    assert_eq!(
        exchange.body,
        Some(json!({"grant_type": "authorization_code", "code": "code-1", "redirect_uri": REDIRECT_URI}))
    );
    client.retrieve_page(&token.access_token, ids::PAGE).await.expect("the new token is accepted");

    let err = client
        .exchange_oauth_code(CLIENT_ID, CLIENT_SECRET, "code-1", REDIRECT_URI)
        .await
        .expect_err("a code works once");
    assert_error(&err, "notion_oauth_invalid_grant", false);
    assert_eq!(err.status(), Some(400));
    assert!(!err.to_string().contains("code-1"));
}

#[tokio::test]
async fn a_wrong_client_secret_is_an_invalid_client_error_without_the_secret_in_it() {
    let fake = FakeNotion::start().await;
    fake.set_oauth_client(CLIENT_ID, "the-real-secret", REDIRECT_URI);
    fake.add_oauth_code("code-2");

    let err = client(&fake)
        .exchange_oauth_code(CLIENT_ID, CLIENT_SECRET, "code-2", REDIRECT_URI)
        .await
        .expect_err("wrong secret");

    assert_error(&err, "notion_oauth_invalid_client", false);
}

#[tokio::test]
async fn no_secret_appears_in_any_error() {
    let fake = fake().await;
    fake.load_fixture_page();
    fake.set_oauth_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    let client = client(&fake);
    let short = client_with(&fake, "2025-09-03", Duration::from_millis(100));

    fake.inject("/", Fault::RateLimited { retry_after_secs: 1 });
    let rate_limited = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("429");
    fake.inject("/", Fault::Reset);
    let reset = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("reset");
    fake.inject("/", Fault::Delay(Duration::from_millis(500)));
    let timeout = short.retrieve_page(TOKEN, ids::PAGE).await.expect_err("timeout");
    let not_found =
        client.list_block_children(TOKEN, "00000000000000000000000000000000", None).await.expect_err("404");
    let oauth = client
        .exchange_oauth_code(CLIENT_ID, CLIENT_SECRET, "never-issued", REDIRECT_URI)
        .await
        .expect_err("");

    for (err, kind, retryable) in [
        (&rate_limited, "notion_rate_limited", true),
        (&reset, "notion_connection", true),
        (&timeout, "notion_timeout", true),
        (&not_found, "notion_not_found", false),
        (&oauth, "notion_oauth_invalid_grant", false),
    ] {
        assert_error(err, kind, retryable);
    }
}
