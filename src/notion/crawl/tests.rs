//! The crawl over the fixture page "Cellular Respiration", answered from the fixture files as the
//! real API answered them (block children in pages of 8).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;

const PAGE: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";
const PHOTOSYNTHESIS: &str = "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5";
const DATABASE: &str = "1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2";
const DATA_SOURCE: &str = "1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b";
const SECOND_DATA_SOURCE: &str = "1f3c8a2e-4b7d-8056-92c4-000d6f8b0a4c";
const PAGE_2_CURSOR: &str = "1f3c8a2e-4b7d-8109-8a2b-d2e3f4a5b6c9";
const T_GLYCO: &str = "1f3c8a2e-4b7d-8105-86e7-f8a9b0c1d2e5";
const T_KREBS: &str = "1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f6";
const H3_ETC: &str = "1f3c8a2e-4b7d-8107-a809-b0c1d2e3f4a7";
const T_EQ: &str = "1f3c8a2e-4b7d-810e-9f70-c7d8e9f0a11e";
const CHILD_PAGE: &str = "1f3c8a2e-4b7d-81c2-a4e6-f8b0d2c4e6a8";

macro_rules! fixture {
    ($name:literal) => {
        serde_json::from_str::<Value>(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/notion/",
            $name
        )))
        .expect("fixture is JSON")
    };
}

fn list(results: Vec<Value>, next_cursor: Option<&str>) -> Value {
    json!({"object": "list", "results": results, "next_cursor": next_cursor, "has_more": next_cursor.is_some(),
           "type": "block", "block": {}, "request_id": "r"})
}

fn children(block_id: &str, cursor: Option<&str>) -> CrawlRequest {
    CrawlRequest::ListChildren { block_id: block_id.to_owned(), cursor: cursor.map(str::to_owned) }
}

/// What the real API answers for the fixture page; the rows of the fixture database too.
fn fixture_answer(request: &CrawlRequest) -> Value {
    match request {
        CrawlRequest::RetrievePage { page_id } if page_id == PAGE => fixture!("page_retrieve.json"),
        CrawlRequest::ListChildren { block_id, cursor } => match (block_id.as_str(), cursor.as_deref()) {
            (PAGE, None) => fixture!("blocks_children_page_1.json"),
            (PAGE, Some(PAGE_2_CURSOR)) => fixture!("blocks_children_page_2.json"),
            (T_GLYCO, None) => fixture!("blocks_children_toggle_glycolysis.json"),
            (T_KREBS, None) => fixture!("blocks_children_toggle_krebs.json"),
            (H3_ETC, None) => fixture!("blocks_children_heading_etc.json"),
            (T_EQ, None) => fixture!("blocks_children_toggle_equation.json"),
            (PHOTOSYNTHESIS, None) => list(vec![], None),
            other => panic!("the crawl asked for children it should not: {other:?}"),
        },
        other => panic!("no fixture answers {other:?}"),
    }
}

/// Runs `crawl` to the end, answering with `answer`; returns the content and the requests made.
fn drive(mut crawl: Crawl, answer: impl Fn(&CrawlRequest) -> Value) -> (FetchedContent, Vec<CrawlRequest>) {
    let mut made = Vec::new();
    while let Some(request) = crawl.next_request() {
        assert!(made.len() < 100, "the crawl does not end: {made:?}");
        crawl.apply(&request, answer(&request)).expect("the answer is accepted");
        made.push(request);
    }
    assert_eq!(crawl.requests_applied(), made.len() as u64);
    (crawl.finish().expect("finished"), made)
}

fn ids(blocks: &[Value]) -> Vec<&str> {
    blocks.iter().map(|b| b["id"].as_str().expect("block id")).collect()
}

fn all_block_ids<'a>(blocks: &'a [Value], into: &mut Vec<&'a str>) {
    for block in blocks {
        into.push(block["id"].as_str().expect("block id"));
        if let Some(kids) = block.get("children").and_then(Value::as_array) {
            all_block_ids(kids, into);
        }
    }
}

fn fixture_database(sources: &[&str]) -> Value {
    json!({
        "object": "database", "id": DATABASE, "title": [], "in_trash": false, "archived": false,
        "data_sources": sources.iter().map(|id| json!({"id": id, "name": "Study notes"})).collect::<Vec<_>>(),
        "request_id": "r"
    })
}

#[test]
fn the_fixture_page_is_read_list_page_first_and_each_list_is_requested_once() {
    let (_, made) = drive(Crawl::page(PAGE), fixture_answer);
    assert_eq!(
        made,
        vec![
            CrawlRequest::RetrievePage { page_id: PAGE.to_owned() },
            children(PAGE, None),
            // A list's next page right after the one before it, while its cursor is fresh,
            // then the blocks' own lists (the last-read first).
            children(PAGE, Some(PAGE_2_CURSOR)),
            children(T_EQ, None),
            children(T_GLYCO, None),
            children(T_KREBS, None),
            children(H3_ETC, None),
        ]
    );
}

#[test]
fn the_fixture_page_assembles_into_its_documented_tree() {
    let (content, _) = drive(Crawl::page(PAGE), fixture_answer);
    assert!(!content.gone);
    assert_eq!(content.database, None);
    let [page] = content.pages.as_slice() else { panic!("one page expected: {content:?}") };
    assert!(!page.gone);
    assert_eq!(page.page["id"], PAGE);

    let ids_json = fixture!("ids.json");
    let expected_top: Vec<&str> = [
        "h1", "intro", "callout", "h2", "t_glyco", "t_krebs", "h3_etc", "bul1", "bul2", "num1", "todo",
        "code", "div", "t_eq", "mention", "empty",
    ]
    .iter()
    .map(|key| ids_json["blocks"][key].as_str().expect("id in ids.json"))
    .chain([CHILD_PAGE])
    .collect();
    assert_eq!(ids(&page.blocks), expected_top);

    let by_id = |id: &str| page.blocks.iter().find(|b| b["id"] == id).expect("top-level block");
    assert_eq!(by_id(T_GLYCO)["children"], fixture!("blocks_children_toggle_glycolysis.json")["results"]);
    assert_eq!(by_id(T_KREBS)["children"], fixture!("blocks_children_toggle_krebs.json")["results"]);
    assert_eq!(by_id(H3_ETC)["children"], fixture!("blocks_children_heading_etc.json")["results"]);
    assert_eq!(by_id(T_EQ)["children"], fixture!("blocks_children_toggle_equation.json")["results"]);
    assert_eq!(
        ids(by_id(T_KREBS)["children"].as_array().expect("array")),
        ["1f3c8a2e-4b7d-8202-9d2e-1b2c3d4e5f62", "1f3c8a2e-4b7d-8203-ae3f-2c3d4e5f6a73"]
    );

    let child_page = by_id(CHILD_PAGE);
    assert_eq!(child_page["type"], "child_page");
    assert_eq!(child_page["has_children"], true);
    assert!(child_page.get("children").is_none(), "a child page is another page: not entered");
    assert!(by_id(PAGE_2_CURSOR).get("children").is_none(), "blocks without children get no array");
}

#[test]
fn every_block_of_the_fixture_page_appears_exactly_once() {
    let (content, _) = drive(Crawl::page(PAGE), fixture_answer);
    let mut seen = Vec::new();
    all_block_ids(&content.pages[0].blocks, &mut seen);
    let unique: BTreeSet<&str> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 17 + 5);
    assert_eq!(unique.len(), seen.len(), "a block appears twice: {seen:?}");
}

#[test]
fn the_stored_page_object_drops_the_per_response_request_id() {
    let (content, _) = drive(Crawl::page(PAGE), fixture_answer);
    let mut expected = fixture!("page_retrieve.json");
    expected.as_object_mut().expect("object").remove("request_id");
    assert_eq!(content.pages[0].page, expected);
}

#[test]
fn a_crawl_saved_and_restored_between_every_request_ends_with_the_same_content() {
    let (uninterrupted, expected_requests) = drive(Crawl::page(PAGE), fixture_answer);

    let mut stored = serde_json::to_string(&Crawl::page(PAGE)).expect("serialises");
    let mut made = Vec::new();
    loop {
        let mut crawl: Crawl = serde_json::from_str(&stored).expect("deserialises");
        let Some(request) = crawl.next_request() else {
            assert_eq!(crawl.finish().expect("finished"), uninterrupted);
            break;
        };
        crawl.apply(&request, fixture_answer(&request)).expect("accepted");
        made.push(request);
        stored = serde_json::to_string(&crawl).expect("serialises");
    }
    assert_eq!(made, expected_requests);
}

#[test]
fn the_requests_ahead_are_all_made_and_there_is_always_one_until_the_end() {
    let (_, all) = drive(Crawl::page(PAGE), fixture_answer);
    let mut crawl = Crawl::page(PAGE);
    assert_eq!(crawl.requests_ahead(), 2, "a page, then its children");
    let mut made = 0;
    while let Some(request) = crawl.next_request() {
        let ahead = crawl.requests_ahead();
        assert!((1..=all.len() - made).contains(&ahead), "{ahead} ahead with {} left", all.len() - made);
        crawl.apply(&request, fixture_answer(&request)).expect("accepted");
        made += 1;
    }
    assert_eq!(crawl.requests_ahead(), 0);
}

#[test]
fn fetched_content_round_trips_through_serde() {
    let (content, _) = drive(Crawl::page(PAGE), fixture_answer);
    let text = serde_json::to_string(&content).expect("serialises");
    assert_eq!(serde_json::from_str::<FetchedContent>(&text).expect("deserialises"), content);
}

#[test]
fn a_page_in_the_trash_ends_the_crawl_as_gone_without_reading_its_blocks() {
    for flag in ["in_trash", "archived"] {
        let mut page = fixture!("page_retrieve.json");
        page[flag] = json!(true);
        let (content, made) = drive(Crawl::page(PAGE), |_| page.clone());
        assert_eq!(made.len(), 1, "{flag}: only the page is retrieved");
        assert!(content.gone, "{flag}");
        assert!(content.pages[0].gone, "{flag}");
        assert!(content.pages[0].blocks.is_empty());
    }
}

#[test]
fn a_root_page_reported_not_found_ends_the_crawl_as_gone() {
    let mut crawl = Crawl::page(PAGE);
    let request = crawl.next_request().expect("a first request");
    crawl.apply_not_found(&request).expect("recorded");
    assert_eq!(crawl.next_request(), None);
    let content = crawl.finish().expect("finished");
    assert!(content.gone);
    assert!(content.pages.is_empty());
}

#[test]
fn a_page_whose_blocks_are_not_found_after_it_was_read_is_gone() {
    let mut crawl = Crawl::page(PAGE);
    crawl
        .apply(&CrawlRequest::RetrievePage { page_id: PAGE.into() }, fixture!("page_retrieve.json"))
        .unwrap();
    crawl.apply_not_found(&children(PAGE, None)).expect("recorded");
    let content = crawl.finish().expect("finished");
    assert!(content.gone);
    // The page read before is gone too, so nothing makes cards from it.
    assert!(content.pages.iter().all(|p| p.gone && p.blocks.is_empty()), "{:?}", content.pages);
}

#[test]
fn a_nested_block_deleted_during_the_crawl_is_left_out_and_the_rest_is_read() {
    let mut crawl = Crawl::page(PAGE);
    let mut made = Vec::new();
    while let Some(request) = crawl.next_request() {
        if request == children(T_KREBS, None) {
            crawl.apply_not_found(&request).expect("recorded");
        } else {
            crawl.apply(&request, fixture_answer(&request)).expect("accepted");
        }
        made.push(request);
    }
    assert_eq!(made.len(), 7, "nothing skipped but the deleted block: {made:?}");
    let content = crawl.finish().expect("finished");
    assert!(!content.gone);
    let top = ids(&content.pages[0].blocks);
    assert_eq!(top.len(), 16);
    assert!(!top.contains(&T_KREBS));
    assert!(top.contains(&T_EQ));
}

#[test]
fn the_answer_to_another_request_is_refused_and_changes_nothing() {
    let mut crawl = Crawl::page(PAGE);
    let before = crawl.clone();
    let wrong = children(PAGE, None);
    let err = crawl.apply(&wrong, fixture!("blocks_children_page_1.json")).expect_err("out of step");
    assert_eq!(
        err,
        CrawlError::OutOfStep {
            expected: Some(Box::new(CrawlRequest::RetrievePage { page_id: PAGE.into() })),
            given: Box::new(wrong.clone())
        }
    );
    assert_eq!(err.error_kind(), "notion_crawl_misuse");
    assert!(crawl.apply_not_found(&wrong).is_err());
    assert_eq!(crawl, before);
}

#[test]
fn a_malformed_answer_is_refused_and_the_same_request_can_be_made_again() {
    let mut crawl = Crawl::page(PAGE);
    crawl
        .apply(&CrawlRequest::RetrievePage { page_id: PAGE.into() }, fixture!("page_retrieve.json"))
        .unwrap();
    let before = crawl.clone();
    let request = children(PAGE, None);
    for bad in [
        json!({"object": "error"}),
        json!({"results": [], "has_more": true, "next_cursor": null}),
        json!({"results": [{"object": "block", "has_children": true}], "has_more": false}),
        json!([1, 2]),
    ] {
        let err = crawl.apply(&request, bad.clone()).expect_err("malformed");
        assert!(err.is_retryable(), "{bad}");
        assert_eq!(err.error_kind(), "notion_malformed_response");
        assert_eq!(crawl, before, "{bad}");
    }
    crawl.apply(&request, fixture!("blocks_children_page_1.json")).expect("the retry is accepted");
}

#[test]
fn a_page_answer_that_is_not_a_page_is_refused() {
    let mut crawl = Crawl::page(PAGE);
    let request = crawl.next_request().unwrap();
    let err = crawl.apply(&request, fixture!("error_404_object_not_found.json")).expect_err("not a page");
    assert!(matches!(err, CrawlError::MalformedResponse { .. }), "{err:?}");
}

#[test]
fn finishing_early_is_refused() {
    assert_eq!(Crawl::page(PAGE).finish(), Err(CrawlError::Unfinished));
}

#[test]
fn child_databases_and_partial_blocks_are_not_entered() {
    let blocks = vec![
        json!({"object": "block", "id": "db", "type": "child_database", "has_children": true}),
        json!({"object": "block", "id": "partial"}),
        json!({"object": "block", "id": "cols", "type": "column_list", "has_children": true}),
    ];
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::RetrievePage { .. } => json!({"object": "page", "id": "p", "in_trash": false}),
        CrawlRequest::ListChildren { block_id, .. } if block_id == "p" => list(blocks.clone(), None),
        CrawlRequest::ListChildren { block_id, .. } if block_id == "cols" => {
            list(vec![json!({"object": "block", "id": "col1", "type": "column", "has_children": true})], None)
        }
        CrawlRequest::ListChildren { block_id, .. } if block_id == "col1" => list(
            vec![json!({"object": "block", "id": "para", "type": "paragraph", "has_children": false})],
            None,
        ),
        other => panic!("unexpected {other:?}"),
    };
    let (content, made) = drive(Crawl::page("p"), answer);
    assert_eq!(made.len(), 4);
    let blocks = &content.pages[0].blocks;
    assert!(blocks[0].get("children").is_none());
    assert!(blocks[1].get("children").is_none());
    assert_eq!(blocks[2]["children"][0]["children"][0]["id"], "para");
}

#[test]
fn unsupported_blocks_are_not_entered_even_when_they_say_they_have_children() {
    // Notion shows some blocks (AI meeting notes, say) as `unsupported`, and refuses to list
    // their children.
    let blocks = vec![
        json!({"object": "block", "id": "notes", "type": "unsupported", "has_children": true, "unsupported": {}}),
        json!({"object": "block", "id": "para", "type": "paragraph", "has_children": false}),
    ];
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::RetrievePage { .. } => json!({"object": "page", "id": "p"}),
        CrawlRequest::ListChildren { block_id, .. } if block_id == "p" => list(blocks.clone(), None),
        other => panic!("unexpected {other:?}"),
    };
    let (content, made) = drive(Crawl::page("p"), answer);
    assert_eq!(made.len(), 2, "the page and its top-level list: {made:?}");
    assert_eq!(ids(&content.pages[0].blocks), ["notes", "para"]);
}

#[test]
fn a_query_is_read_whole_before_any_rows_blocks() {
    // Three pages of rows: each next page is asked for right after the one before it, while
    // its cursor is fresh, and only then the rows' blocks.
    let row = |id: &str| json!({"object": "page", "id": id, "created_time": "2026-01-01T10:00:00.000Z"});
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::QueryDataSource { cursor: None, .. } => list(vec![row("r1"), row("r2")], Some("c2")),
        CrawlRequest::QueryDataSource { cursor: Some(c), .. } if c == "c2" => {
            list(vec![row("r3")], Some("c3"))
        }
        CrawlRequest::QueryDataSource { cursor: Some(c), .. } if c == "c3" => list(vec![row("r4")], None),
        CrawlRequest::ListChildren { .. } => list(vec![], None),
        other => panic!("unexpected {other:?}"),
    };
    let (content, made) = drive(Crawl::data_source(DATA_SOURCE), answer);
    assert!(made[..3].iter().all(|r| matches!(r, CrawlRequest::QueryDataSource { .. })), "{made:?}");
    assert!(made[3..].iter().all(|r| matches!(r, CrawlRequest::ListChildren { .. })), "{made:?}");
    assert_eq!(made.len(), 3 + 4);
    let read: Vec<&str> = content.pages.iter().map(|p| p.page["id"].as_str().expect("id")).collect();
    assert_eq!(read, ["r1", "r2", "r3", "r4"], "rows in query order");
}

/// Page "p" with five blocks listed a, b | c, d | e (each cursor: the next block's id).
fn five_blocks_in_three_pages(request: &CrawlRequest) -> Value {
    let block = |id: &str| json!({"object": "block", "id": id, "type": "paragraph", "has_children": false});
    match request {
        CrawlRequest::RetrievePage { .. } => json!({"object": "page", "id": "p"}),
        CrawlRequest::ListChildren { cursor: None, .. } => list(vec![block("a"), block("b")], Some("c")),
        CrawlRequest::ListChildren { cursor: Some(c), .. } if c == "c" => {
            list(vec![block("c"), block("d")], Some("e"))
        }
        CrawlRequest::ListChildren { cursor: Some(c), .. } if c == "e" => list(vec![block("e")], None),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_long_child_list_is_followed_cursor_by_cursor_in_order() {
    let (content, made) = drive(Crawl::page("p"), five_blocks_in_three_pages);
    assert_eq!(made.len(), 4);
    assert_eq!(ids(&content.pages[0].blocks), ["a", "b", "c", "d", "e"]);
}

#[test]
fn a_database_is_read_through_its_data_sources_without_retrieving_rows_again() {
    let rows = fixture!("data_source_query.json")["results"].as_array().expect("rows").clone();
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::RetrieveDatabase { id } if id == DATABASE => {
            fixture_database(&[DATA_SOURCE, SECOND_DATA_SOURCE])
        }
        // The first data source answers in two pages, the second is empty.
        CrawlRequest::QueryDataSource { id, cursor: None, .. } if id == DATA_SOURCE => {
            json!({"object": "list", "results": [rows[0]], "next_cursor": PHOTOSYNTHESIS, "has_more": true})
        }
        CrawlRequest::QueryDataSource { id, cursor: Some(c), .. }
            if id == DATA_SOURCE && c == PHOTOSYNTHESIS =>
        {
            json!({"object": "list", "results": [rows[1]], "next_cursor": null, "has_more": false})
        }
        CrawlRequest::QueryDataSource { id, cursor: None, .. } if id == SECOND_DATA_SOURCE => {
            list(vec![], None)
        }
        other => fixture_answer(other),
    };
    let (content, made) = drive(Crawl::database(DATABASE, ApiFlavor::DataSources), answer);

    assert!(!made.iter().any(|r| matches!(r, CrawlRequest::RetrievePage { .. })), "{made:?}");
    assert_eq!(made[0], CrawlRequest::RetrieveDatabase { id: DATABASE.into() });
    assert_eq!(made[1], query(DATA_SOURCE, None, None));
    assert_eq!(made[2], query(DATA_SOURCE, Some(PHOTOSYNTHESIS), None), "the query is read whole first");
    assert_eq!(made.len(), 1 + 2 + 1 + 6 + 1, "database, 2 + 1 queries, 6 lists for a row, 1 for the other");
    assert_eq!(content.database.as_ref().map(|d| &d["id"]), Some(&json!(DATABASE)));
    assert!(content.database.as_ref().is_some_and(|d| d.get("request_id").is_none()));
    let pages: Vec<&str> = content.pages.iter().map(|p| p.page["id"].as_str().expect("id")).collect();
    assert_eq!(pages, [PAGE, PHOTOSYNTHESIS]);
    assert_eq!(content.pages[0].blocks.len(), 17);
    assert!(content.pages[1].blocks.is_empty());
}

#[test]
fn a_legacy_database_is_queried_directly() {
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::QueryDatabase { id, cursor: None, .. } if id == DATABASE => {
            fixture!("database_query_legacy_2022-06-28.json")
        }
        other => fixture_answer(other),
    };
    let (content, made) = drive(Crawl::database(DATABASE, ApiFlavor::LegacyDatabase), answer);
    assert_eq!(
        made[0],
        CrawlRequest::QueryDatabase { id: DATABASE.into(), cursor: None, created_from: None }
    );
    assert_eq!(made.len(), 1 + 6 + 1);
    assert_eq!(content.database, None);
    assert_eq!(content.pages.len(), 2);
    assert_eq!(content.pages[0].page["parent"]["type"], "database_id");
}

#[test]
fn a_row_repeated_by_a_shifting_query_is_read_once() {
    let rows = fixture!("data_source_query.json")["results"].as_array().expect("rows").clone();
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::QueryDataSource { cursor: None, .. } => {
            json!({"object": "list", "results": [rows[0], rows[1]], "next_cursor": "more", "has_more": true})
        }
        CrawlRequest::QueryDataSource { cursor: Some(_), .. } => {
            json!({"object": "list", "results": [rows[1]], "next_cursor": null, "has_more": false})
        }
        other => fixture_answer(other),
    };
    let (content, made) = drive(Crawl::data_source(DATA_SOURCE), answer);
    assert_eq!(content.pages.len(), 2);
    assert_eq!(made.iter().filter(|r| **r == children(PHOTOSYNTHESIS, None)).count(), 1);
}

#[test]
fn a_trashed_row_is_kept_as_gone_and_its_blocks_are_not_read() {
    let mut rows = fixture!("data_source_query.json");
    rows["results"][0]["in_trash"] = json!(true);
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::QueryDataSource { .. } => rows.clone(),
        other => fixture_answer(other),
    };
    let (content, made) = drive(Crawl::data_source(DATA_SOURCE), answer);
    assert_eq!(made.len(), 2, "the query and the live row's blocks: {made:?}");
    assert!(!content.gone);
    assert!(content.pages[0].gone);
    assert!(!content.pages[1].gone);
}

#[test]
fn a_row_whose_blocks_are_not_found_is_gone_and_the_others_are_read() {
    let mut crawl = Crawl::data_source(DATA_SOURCE);
    let query = crawl.next_request().unwrap();
    crawl.apply(&query, fixture!("data_source_query.json")).unwrap();
    assert_eq!(crawl.next_request(), Some(children(PAGE, None)));
    crawl.apply_not_found(&children(PAGE, None)).expect("recorded");
    while let Some(request) = crawl.next_request() {
        crawl.apply(&request, fixture_answer(&request)).unwrap();
    }
    let content = crawl.finish().unwrap();
    assert!(!content.gone);
    assert!(content.pages[0].gone);
    assert!(!content.pages[1].gone);
}

fn query(id: &str, cursor: Option<&str>, created_from: Option<&str>) -> CrawlRequest {
    CrawlRequest::QueryDataSource {
        id: id.to_owned(),
        cursor: cursor.map(str::to_owned),
        created_from: created_from.map(str::to_owned),
    }
}

/// A row page with its own id, created at `created`, with no blocks.
fn row(n: usize, created: &str) -> Value {
    json!({"object": "page", "id": format!("00000000-0000-4000-8000-{n:012}"), "created_time": created,
           "in_trash": false, "properties": {}})
}

/// A page of a query answer; `capped`: Notion's marker of a result cut at its 10,000 rows.
fn rows_page(rows: &[Value], next_cursor: Option<&str>, capped: bool) -> Value {
    let mut page = json!({"object": "list", "results": rows, "next_cursor": next_cursor,
                          "has_more": next_cursor.is_some(), "type": "page_or_data_source"});
    if capped {
        page["request_status"] =
            json!({"type": "incomplete", "incomplete_reason": "query_result_limit_reached"});
    }
    page
}

#[test]
fn a_query_capped_by_notion_is_read_on_in_created_time_windows_and_every_row_is_read_once() {
    // Six rows, oldest first; Notion's cap is played by 4 rows per query, in pages of 2. Rows 3
    // and 4 were created at the same minute, so the second window returns row 3 again.
    let times = [
        "2026-01-01T10:00:00.000Z",
        "2026-01-01T10:01:00.000Z",
        "2026-01-01T10:02:00.000Z",
        "2026-01-01T10:03:00.000Z",
        "2026-01-01T10:03:00.000Z",
        "2026-01-01T10:04:00.000Z",
    ];
    let rows: Vec<Value> = times.iter().enumerate().map(|(n, t)| row(n, t)).collect();
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::QueryDataSource { cursor: None, created_from: None, .. } => {
            rows_page(&rows[0..2], Some("w1p2"), true)
        }
        CrawlRequest::QueryDataSource { cursor: Some(c), created_from: None, .. } if c == "w1p2" => {
            rows_page(&rows[2..4], None, true)
        }
        CrawlRequest::QueryDataSource { cursor: None, created_from: Some(from), .. } if from == times[3] => {
            rows_page(&rows[3..5], Some("w2p2"), false)
        }
        CrawlRequest::QueryDataSource { cursor: Some(c), created_from: Some(_), .. } if c == "w2p2" => {
            rows_page(&rows[5..6], None, false)
        }
        CrawlRequest::ListChildren { cursor: None, .. } => list(vec![], None),
        other => panic!("unexpected request {other:?}"),
    };
    let (content, made) = drive(Crawl::data_source(DATA_SOURCE), answer);

    let read: Vec<&str> = content.pages.iter().map(|p| p.page["id"].as_str().expect("id")).collect();
    let expected: Vec<&str> = rows.iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!(read, expected, "every row once, oldest first");
    let queries: Vec<&CrawlRequest> =
        made.iter().filter(|r| matches!(r, CrawlRequest::QueryDataSource { .. })).collect();
    assert_eq!(
        queries,
        [
            &query(DATA_SOURCE, None, None),
            &query(DATA_SOURCE, Some("w1p2"), None),
            &query(DATA_SOURCE, None, Some(times[3])),
            &query(DATA_SOURCE, Some("w2p2"), Some(times[3])),
        ]
    );
    assert_eq!(made.len(), 4 + 6, "four query pages and each row's blocks once: {made:?}");
}

#[test]
fn a_window_that_cannot_move_on_ends_the_crawl_in_an_error_not_a_partial_result() {
    // Every row of the capped window was created at the minute the window began with: the
    // next window would be the same query.
    let at = "2026-01-01T10:00:00.000Z";
    let mut crawl = Crawl::data_source(DATA_SOURCE);
    let first = crawl.next_request().expect("the query");
    crawl.apply(&first, rows_page(&[row(0, "2026-01-01T09:00:00.000Z"), row(1, at)], None, true)).unwrap();
    // The next window at once: the rows' blocks wait until the query is read whole.
    let window = crawl.next_request().expect("a second window");
    assert_eq!(window, query(DATA_SOURCE, None, Some(at)));

    let err = crawl.apply(&window, rows_page(&[row(1, at), row(2, at)], None, true)).expect_err("stuck");
    assert_eq!(err.error_kind(), "notion_query_incomplete");
    assert!(!err.is_retryable(), "asking again gets the same answer");
    assert!(err.to_string().contains("query_result_limit_reached"), "{err}");
    assert_eq!(crawl.next_request(), Some(window.clone()), "nothing was recorded");
}

#[test]
fn a_query_stopped_short_for_an_unknown_reason_ends_the_crawl_in_an_error_not_a_partial_result() {
    let rows = fixture!("data_source_query.json")["results"].as_array().expect("rows").clone();
    let mut crawl = Crawl::data_source(DATA_SOURCE);
    let query = crawl.next_request().expect("the query");
    let stopped = json!({"object": "list", "results": [rows[0]], "next_cursor": null, "has_more": false,
                         "request_status": {"type": "incomplete", "incomplete_reason": "something_new"}});
    let err = crawl.apply(&query, stopped).expect_err("incomplete");
    assert_eq!(err.error_kind(), "notion_query_incomplete");
    assert!(err.to_string().contains("something_new"), "{err}");
    assert_eq!(crawl.next_request(), Some(query.clone()), "nothing was recorded");
    // A complete status is an ordinary answer.
    let complete = json!({"object": "list", "results": [], "next_cursor": null, "has_more": false,
                          "request_status": {"type": "complete"}});
    crawl.apply(&query, complete).expect("accepted");
}

#[test]
fn a_saved_query_from_before_windows_is_read_as_the_first_window() {
    let saved = json!({"call": "query_data_source", "id": DATA_SOURCE, "cursor": "c"});
    let request: CrawlRequest = serde_json::from_value(saved.clone()).expect("readable");
    assert_eq!(request, query(DATA_SOURCE, Some("c"), None));
    assert_eq!(serde_json::to_value(&request).unwrap(), saved, "written the same way");
}

#[test]
fn a_data_source_reported_not_found_is_skipped_but_the_database_is_not_gone() {
    let mut crawl = Crawl::database(DATABASE, ApiFlavor::DataSources);
    crawl
        .apply(&CrawlRequest::RetrieveDatabase { id: DATABASE.into() }, fixture_database(&[DATA_SOURCE]))
        .unwrap();
    let query = crawl.next_request().unwrap();
    crawl.apply_not_found(&query).unwrap();
    let content = crawl.finish().unwrap();
    assert!(!content.gone);
    assert!(content.pages.is_empty());
}

#[test]
fn a_data_source_not_found_partway_through_its_query_takes_the_rows_read_from_it_along() {
    const OTHER_SOURCE: &str = "2f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3c";
    let of_source = |n: usize, source: &str| {
        let mut page = row(n, "2026-01-01T00:00:00.000Z");
        page["parent"] = json!({"type": "data_source_id", "data_source_id": source, "database_id": DATABASE});
        page
    };
    let mut crawl = Crawl::database(DATABASE, ApiFlavor::DataSources);
    crawl
        .apply(
            &CrawlRequest::RetrieveDatabase { id: DATABASE.into() },
            fixture_database(&[DATA_SOURCE, OTHER_SOURCE]),
        )
        .unwrap();
    let mut gone_rows = Vec::new();
    while let Some(request) = crawl.next_request() {
        match &request {
            CrawlRequest::QueryDataSource { id, cursor: None, .. } if id == DATA_SOURCE => {
                // The id as the query's answer spells it: without dashes, upper case.
                let source = DATA_SOURCE.replace('-', "").to_uppercase();
                gone_rows = vec![of_source(1, &source), of_source(2, &source)];
                crawl.apply(&request, rows_page(&gone_rows, Some("c2"), false)).unwrap();
            }
            CrawlRequest::QueryDataSource { id, cursor: Some(_), .. } if id == DATA_SOURCE => {
                crawl.apply_not_found(&request).unwrap();
            }
            CrawlRequest::QueryDataSource { .. } => {
                // The other source's rows: its own, and row 1, moved there from the first.
                let rows = [of_source(3, OTHER_SOURCE), of_source(1, OTHER_SOURCE)];
                crawl.apply(&request, rows_page(&rows, None, false)).unwrap();
            }
            CrawlRequest::ListChildren { block_id, .. } => {
                assert!(
                    !block_id.ends_with("000000000002"),
                    "no row only the vanished source had is read: {request:?}"
                );
                crawl.apply(&request, list(vec![], None)).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(gone_rows.len(), 2, "the vanished source was read");
    let content = crawl.finish().unwrap();
    assert!(!content.gone);
    let live = |n: usize| {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let copies: Vec<bool> = content.pages.iter().filter(|p| p.page["id"] == id).map(|p| p.gone).collect();
        assert!(!copies.is_empty(), "row {n} is in the content");
        copies.contains(&false)
    };
    assert!(!live(2), "the rows read only from the vanished source are gone");
    assert!(live(3), "the other source's rows are read");
    assert!(live(1), "a row that moved to the other source is read from it");
}

#[test]
fn a_database_in_the_trash_ends_the_crawl_as_gone() {
    let mut database = fixture_database(&[DATA_SOURCE]);
    database["in_trash"] = json!(true);
    let (content, made) = drive(Crawl::database(DATABASE, ApiFlavor::DataSources), |_| database.clone());
    assert_eq!(made.len(), 1);
    assert!(content.gone);
}

#[test]
fn a_database_without_data_sources_is_refused_with_a_hint_about_the_version() {
    let mut crawl = Crawl::database(DATABASE, ApiFlavor::DataSources);
    let request = crawl.next_request().unwrap();
    let err = crawl.apply(&request, json!({"object": "database", "id": DATABASE})).expect_err("malformed");
    assert!(err.to_string().contains("2025-09-03"), "{err}");
}

#[test]
fn crawl_requests_serialise_with_a_readable_tag() {
    let value = serde_json::to_value(children("b", Some("c"))).unwrap();
    assert_eq!(value, json!({"call": "list_children", "block_id": "b", "cursor": "c"}));
}

#[test]
fn a_block_list_whose_cursor_is_refused_is_read_again_from_its_start_and_each_block_appears_once() {
    let (expected, _) = drive(Crawl::page(PAGE), fixture_answer);
    let mut crawl = Crawl::page(PAGE);
    let mut made = Vec::new();
    let mut refused = false;
    while let Some(request) = crawl.next_request() {
        assert!(made.len() < 100, "the crawl does not end: {made:?}");
        if request == children(PAGE, Some(PAGE_2_CURSOR)) && !refused {
            refused = true;
            assert_eq!(crawl.restart_list(&request), Ok(Restart::FromTheStart));
            assert_eq!(crawl.restarts_in_a_row(), 1);
            assert_eq!(crawl.next_request(), Some(children(PAGE, None)), "the list again, from its start");
            continue;
        }
        crawl.apply(&request, fixture_answer(&request)).expect("accepted");
        made.push(request);
    }
    assert!(refused);
    assert_eq!(crawl.restarts_in_a_row(), 0, "the list was read to its end the second time");
    let content = crawl.finish().expect("finished");
    assert_eq!(content, expected, "the same content as a crawl whose cursor was taken");
    let first_pages = made.iter().filter(|r| **r == children(PAGE, None)).count();
    assert_eq!(first_pages, 2, "the first page read twice: {made:?}");
    for toggle in [T_GLYCO, T_KREBS, T_EQ, H3_ETC] {
        let reads = made.iter().filter(|r| **r == children(toggle, None)).count();
        assert_eq!(reads, 1, "{toggle}'s children are read once, under the blocks read again");
    }
}

#[test]
fn a_query_whose_cursor_is_refused_goes_on_from_its_last_row_read() {
    let times = ["2026-01-01T10:00:00.000Z", "2026-01-01T10:01:00.000Z", "2026-01-01T10:02:00.000Z"];
    let rows: Vec<Value> = times.iter().enumerate().map(|(n, t)| row(n, t)).collect();
    let mut crawl = Crawl::data_source(DATA_SOURCE);
    let first = query(DATA_SOURCE, None, None);
    crawl.apply(&first, rows_page(&rows[0..2], Some("p2"), false)).unwrap();
    let refused = query(DATA_SOURCE, Some("p2"), None);
    assert_eq!(crawl.next_request(), Some(refused.clone()));

    assert_eq!(crawl.restart_list(&refused), Ok(Restart::FromTheLastRow));
    let window = query(DATA_SOURCE, None, Some(times[1]));
    assert_eq!(crawl.next_request(), Some(window.clone()), "a new window from the last row read");
    // Notion answers it from row 1 (created at that minute) on: row 1 is not read twice.
    crawl.apply(&window, rows_page(&rows[1..3], None, false)).unwrap();
    while let Some(request) = crawl.next_request() {
        assert!(matches!(request, CrawlRequest::ListChildren { cursor: None, .. }), "{request:?}");
        crawl.apply(&request, list(vec![], None)).unwrap();
    }
    let content = crawl.finish().unwrap();
    let read: Vec<&Value> = content.pages.iter().map(|p| &p.page["id"]).collect();
    let expected: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
    assert_eq!(read, expected, "every row once, in order");
}

#[test]
fn a_query_whose_rows_read_do_not_move_its_window_on_is_read_again_from_the_windows_start() {
    let start = "2026-01-01T10:00:00.000Z";
    let rows: Vec<Value> = (0..2).map(|n| row(n, start)).collect();
    let mut crawl = Crawl::data_source(DATA_SOURCE);
    let windowed = query(DATA_SOURCE, None, Some(start));
    // As if a capped window had already moved the query on to `start`.
    crawl.todo[0].request = windowed.clone();
    crawl.apply(&windowed, rows_page(&rows, Some("p2"), false)).unwrap();
    let refused = query(DATA_SOURCE, Some("p2"), Some(start));
    assert_eq!(crawl.restart_list(&refused), Ok(Restart::FromTheStart));
    assert_eq!(crawl.next_request(), Some(windowed));
    assert_eq!(crawl.restarts_in_a_row(), 1, "counted: the window's rows are read again");
}

#[test]
fn only_a_lists_next_page_can_be_read_again_from_its_start() {
    let mut crawl = Crawl::page(PAGE);
    let retrieve = CrawlRequest::RetrievePage { page_id: PAGE.to_owned() };
    assert!(crawl.restart_list(&retrieve).is_err());
    crawl.apply(&retrieve, fixture_answer(&retrieve)).unwrap();
    assert!(crawl.restart_list(&children(PAGE, None)).is_err(), "a first page has no cursor to refuse");
    assert!(crawl.restart_list(&children(PAGE, Some("elsewhere"))).is_err(), "not the current request");
    assert_eq!(crawl.next_request(), Some(children(PAGE, None)), "nothing changed");
}

/// A page of 25 blocks listed 4 at a time, three of them toggles whose 9 children are listed 4
/// at a time too (cursor: the next block's position), crawled while Notion refuses cursors at
/// random: whatever it refuses, the content is the same as when it refuses none, every block
/// once and in order.
#[test]
fn whatever_cursors_notion_refuses_each_block_is_read_once_and_in_order() {
    const TOGGLES: [usize; 3] = [3, 10, 17];
    let block = |id: String, children: bool| json!({"object": "block", "id": id, "type": if children { "toggle" } else { "paragraph" }, "has_children": children});
    let list_of = |ids: Vec<(String, bool)>, cursor: Option<&str>| {
        let start: usize = cursor.map_or(0, |c| c.parse().expect("a position"));
        let end = (start + 4).min(ids.len());
        let next = (end < ids.len()).then(|| end.to_string());
        let blocks = ids[start..end].iter().map(|(id, kids)| block(id.clone(), *kids)).collect();
        list(blocks, next.as_deref())
    };
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::RetrievePage { .. } => json!({"object": "page", "id": "p"}),
        CrawlRequest::ListChildren { block_id, cursor } if block_id == "p" => {
            let top = (0..25).map(|n| (format!("b{n}"), TOGGLES.contains(&n))).collect();
            list_of(top, cursor.as_deref())
        }
        CrawlRequest::ListChildren { block_id, cursor } => {
            let kids = (0..9).map(|n| (format!("{block_id}.{n}"), false)).collect();
            list_of(kids, cursor.as_deref())
        }
        other => panic!("unexpected {other:?}"),
    };
    let (expected, _) = drive(Crawl::page("p"), answer);
    let mut all = Vec::new();
    all_block_ids(&expected.pages[0].blocks, &mut all);
    assert_eq!(all.len(), 25 + 3 * 9);

    for seed in 1..=40u64 {
        let mut state = seed;
        let mut refuse = || {
            // A small LCG: a third of the cursors refused, differently for every seed.
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % 3 == 0
        };
        let mut crawl = Crawl::page("p");
        let mut steps = 0;
        while let Some(request) = crawl.next_request() {
            steps += 1;
            assert!(steps < 2_000, "seed {seed}: the crawl does not end");
            if request.cursor().is_some() && refuse() {
                assert_eq!(crawl.restart_list(&request), Ok(Restart::FromTheStart), "seed {seed}");
                continue;
            }
            crawl.apply(&request, answer(&request)).expect("accepted");
        }
        assert_eq!(crawl.finish().expect("finished"), expected, "seed {seed}");
    }
}

/// Rows created a minute apart, two a minute, queried 3 at a time while Notion refuses cursors
/// at random: each refusal goes on from the last row read, and every row is read once, in order.
#[test]
fn whatever_query_cursors_notion_refuses_each_row_is_read_once_and_in_order() {
    let rows: Vec<Value> = (0..20).map(|n| row(n, &format!("2026-01-01T10:{:02}:00.000Z", n / 2))).collect();
    let answer = |request: &CrawlRequest| match request {
        CrawlRequest::QueryDataSource { cursor, created_from, .. } => {
            // As Notion answers: the window's rows oldest first, 3 a page.
            let from = created_from.as_deref().unwrap_or("");
            let window: Vec<Value> =
                rows.iter().filter(|r| r["created_time"].as_str().unwrap_or("") >= from).cloned().collect();
            let start: usize = cursor.as_deref().map_or(0, |c| c.parse().expect("a position"));
            let end = (start + 3).min(window.len());
            let next = (end < window.len()).then(|| end.to_string());
            rows_page(&window[start..end], next.as_deref(), false)
        }
        CrawlRequest::ListChildren { cursor: None, .. } => list(vec![], None),
        other => panic!("unexpected {other:?}"),
    };
    let expected: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
    for seed in 1..=40u64 {
        let mut state = seed;
        let mut refuse = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % 3 == 0
        };
        let mut crawl = Crawl::data_source(DATA_SOURCE);
        let mut steps = 0;
        while let Some(request) = crawl.next_request() {
            steps += 1;
            assert!(steps < 2_000, "seed {seed}: the crawl does not end");
            if request.cursor().is_some() && refuse() {
                crawl.restart_list(&request).expect("a query's next page");
                continue;
            }
            crawl.apply(&request, answer(&request)).expect("accepted");
        }
        let content = crawl.finish().expect("finished");
        let read: Vec<&Value> = content.pages.iter().map(|p| &p.page["id"]).collect();
        assert_eq!(read, expected, "seed {seed}");
        assert!(content.pages.iter().all(|p| !p.gone), "seed {seed}");
    }
}

/// A cursor refused at the same depth every time (the first next page taken, the second not)
/// keeps counting: taking an earlier cursor again is no way past the refusal.
#[test]
fn a_cursor_refused_at_the_same_depth_every_time_keeps_counting() {
    let mut crawl = Crawl::page("p");
    let mut refusals = 0;
    while refusals < 5 {
        let request = crawl.next_request().expect("more to read");
        if request.cursor() == Some("e") {
            crawl.restart_list(&request).expect("a next page");
            refusals += 1;
            assert_eq!(crawl.restarts_in_a_row(), refusals, "after page 2 was taken again");
        } else {
            crawl.apply(&request, five_blocks_in_three_pages(&request)).expect("accepted");
        }
    }
}
