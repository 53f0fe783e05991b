//! Notion misbehaving: connections closed or reset, answers too slow, bodies trickling in,
//! malformed JSON, 529 and 503 with `Retry-After`, and 429 for each `rate_limit_reason`. Each
//! must end in the right retry or failure, first at the client, then through whole syncs.

use crate::on_db;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use cognie_sync::notion::{NotionClient, NotionClientConfig, NotionError};
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    app::{API_TOKEN, TempDir, expect_json},
    eventually,
    fake_notion::{FakeNotion, Fault, RecordedRequest, ids},
    run_step,
};

const TOKEN: &str = "ntn_faults_8Hq2Lw0Zp4";

async fn fake() -> FakeNotion {
    let fake = FakeNotion::start().await;
    fake.allow_token(TOKEN);
    fake.load_fixture_page();
    fake
}

fn client(fake: &FakeNotion, timeout: Duration) -> NotionClient {
    NotionClient::new(NotionClientConfig { base_url: fake.base_url(), version: "2025-09-03".into(), timeout })
        .expect("the client builds")
}

fn assert_kind(err: &NotionError, kind: &str, retryable: bool) {
    assert_eq!(err.error_kind(), kind, "{err:?}");
    assert_eq!(err.is_retryable(), retryable, "{err:?}");
    assert!(!format!("{err:?}").contains(TOKEN), "the token leaked into {err:?}");
}

// ----- the client -----

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_retryable_connection_error() {
    let fake = fake().await;
    fake.inject("/v1/pages/", Fault::Drop);
    let client = client(&fake, Duration::from_secs(5));

    let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("no answer");

    assert_kind(&err, "notion_connection", true);
    assert!(fake.requests()[0].dropped, "the fake closed the connection");
    // The fake (and the client's pool) carry on.
    client.retrieve_page(TOKEN, ids::PAGE).await.expect("the next request is answered");
}

#[tokio::test]
async fn a_body_that_trickles_in_slower_than_the_timeout_is_a_retryable_timeout() {
    let fake = fake().await;
    fake.inject("/v1/blocks/", Fault::SlowBody { total: Duration::from_secs(3) });
    let client = client(&fake, Duration::from_millis(500));

    let started = Instant::now();
    let err = client.list_block_children(TOKEN, ids::PAGE, None).await.expect_err("too slow");

    assert_kind(&err, "notion_timeout", true);
    assert_eq!(fake.requests()[0].status, 200, "the status line came in time; the body did not");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout covers the body: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_body_within_the_timeout_is_read_whole() {
    let fake = fake().await;
    let client = client(&fake, Duration::from_secs(10));
    let normal = client.list_block_children(TOKEN, ids::PAGE, None).await.expect("normal");
    fake.inject("/v1/blocks/", Fault::SlowBody { total: Duration::from_millis(300) });

    let slow = client.list_block_children(TOKEN, ids::PAGE, None).await.expect("slow but complete");

    assert_eq!(slow, normal);
}

#[tokio::test]
async fn malformed_json_in_a_success_answer_is_a_retryable_malformed_response() {
    let fake = fake().await;
    let client = client(&fake, Duration::from_secs(5));
    for path in ["/v1/pages/", "/v1/blocks/"] {
        fake.inject(path, Fault::MalformedJson);
    }

    let page = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("cut-off JSON");
    let list = client.list_block_children(TOKEN, ids::PAGE, None).await.expect_err("cut-off JSON");

    for err in [&page, &list] {
        assert_kind(err, "notion_malformed_response", true);
        assert_eq!(err.status(), Some(200));
    }
}

#[tokio::test]
async fn overload_and_unavailability_are_retryable_after_their_retry_after() {
    let fake = fake().await;
    let client = client(&fake, Duration::from_secs(5));
    for (status, kind, secs) in [(529, "notion_overloaded", 7), (503, "notion_server_error", 2)] {
        fake.inject("/v1/pages/", Fault::StatusRetryAfter { status, retry_after_secs: secs });
        let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("injected");
        assert_kind(&err, kind, true);
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(secs)), "{err:?}");
    }
}

#[tokio::test]
async fn each_rate_limit_reason_is_classified_and_only_a_blocked_request_is_final() {
    let fake = fake().await;
    let client = client(&fake, Duration::from_secs(5));
    let cases = [
        ("public_api_request_rate_limit", Some(17), "notion_rate_limited", true),
        // The workspace limit's Retry-After may exceed a minute.
        ("public_api_space_request_rate_limit", Some(95), "notion_rate_limited", true),
        ("public_api_endpoint_rate_limit", Some(3), "notion_rate_limited", true),
        // "Other values can appear": still a rate limit.
        ("public_api_some_future_limit", Some(4), "notion_rate_limited", true),
        // No Retry-After at all: retryable; the caller picks the wait.
        ("public_api_request_rate_limit", None, "notion_rate_limited", true),
        // "Retrying won't help".
        ("public_api_request_blocked", None, "notion_request_blocked", false),
    ];
    for (reason, retry_after_secs, kind, retryable) in cases {
        fake.inject("/v1/pages/", Fault::RateLimitedBecause { reason, retry_after_secs });
        let err = client.retrieve_page(TOKEN, ids::PAGE).await.expect_err("429");
        assert_kind(&err, kind, retryable);
        assert_eq!(err.status(), Some(429), "{reason}");
        assert_eq!(err.code(), Some("rate_limited"), "{reason}");
        assert_eq!(err.retry_after(), retry_after_secs.map(Duration::from_secs), "{reason}: {err:?}");
        let NotionError::Api { additional_data: Some(data), .. } = &err else { panic!("{err:?}") };
        assert_eq!(data["rate_limit_reason"], reason);
    }
}

// ----- whole syncs -----

struct Env {
    app: TestApp,
    notion: FakeNotion,
    user: String,
}

async fn setup(adjust: impl FnOnce(&mut HashMap<&'static str, String>)) -> Env {
    let notion = fake().await;
    let base = notion.base_url();
    let app = TestApp::spawn_with(|s| {
        s.insert("NOTION_API_BASE_URL", base);
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
        adjust(s);
    })
    .await;
    let user = expect_json(
        app.client
            .post(app.url("/api/users"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"email": "faults@example.com"}))
            .send()
            .await
            .expect("POST user"),
        201,
    )
    .await;
    let user = user["id"].as_str().expect("id").to_owned();
    app.put_notion_token(&user, TOKEN).await;
    Env { app, notion, user }
}

impl Env {
    /// Subscribes to the fixture page and waits for its first sync to end.
    async fn sync_fixture_page(&self) -> Value {
        self.subscribe_and_sync(ids::PAGE, "page").await
    }

    /// Subscribes to `notion_id` and waits for its first sync to end.
    async fn subscribe_and_sync(&self, notion_id: &str, kind: &str) -> Value {
        let created = expect_json(
            self.app
                .client
                .post(self.app.url(&format!("/api/users/{}/subscriptions", self.user)))
                .bearer_auth(API_TOKEN)
                .json(&json!({"notion_id": notion_id, "kind": kind}))
                .send()
                .await
                .expect("subscribe"),
            201,
        )
        .await;
        let run_id = created["run_id"].as_str().expect("run id").to_owned();
        eventually(&format!("run {run_id} to end"), Duration::from_secs(60), || async {
            let run =
                expect_json(self.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
            ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or("")).then_some(run)
        })
        .await
    }

    async fn live_cards(&self) -> i64 {
        self.app.count("select count(*) from flashcards where retired_at is null").await
    }

    /// The gap between the first request answered `status` and the request after it.
    fn gap_after(&self, status: u16) -> Duration {
        let requests = self.notion.requests_for_token(TOKEN);
        let at = requests.iter().position(|r| r.status == status).expect("the fault was served");
        let next = requests.get(at + 1).expect("a request after the fault");
        next.at.duration_since(requests[at].at)
    }
}

#[tokio::test]
async fn a_sync_rides_out_every_kind_of_transient_fault_in_one_fetch() {
    let env = setup(|s| {
        s.insert("NOTION_MAX_RETRIES", "8".into());
    })
    .await;
    // One of each, in the order the crawl makes its requests (page, then block lists).
    env.notion.inject("/v1/pages/", Fault::Drop);
    env.notion.inject("/v1/pages/", Fault::MalformedJson);
    env.notion.inject("/v1/blocks/", Fault::Reset);
    env.notion.inject("/v1/blocks/", Fault::StatusRetryAfter { status: 529, retry_after_secs: 1 });
    env.notion.inject(
        "/v1/blocks/",
        Fault::RateLimitedBecause {
            reason: "public_api_space_request_rate_limit",
            retry_after_secs: Some(1),
        },
    );
    env.notion.inject("/v1/blocks/", Fault::Garbage);
    env.notion.inject("/v1/blocks/", Fault::SlowBody { total: Duration::from_millis(200) });

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(env.live_cards().await, 4, "the page's four cards, once");
    let fetch = run_step(&run, "fetch");
    assert_eq!(fetch["attempts"], 7, "six failed attempts and the one that finished: {fetch}");
    let kinds: Vec<String> = on_db!(env.app.db, |db| sqlx::query_scalar(
        "select error_kind from workflow_step_attempts where step = 'fetch' and error_kind is not null
         order by started_at",
    )
    .fetch_all(db)
    .await)
    .expect("attempts");
    assert_eq!(
        kinds,
        [
            "notion_connection",
            "notion_malformed_response",
            "notion_connection",
            "notion_overloaded",
            "notion_rate_limited",
            "notion_malformed_response"
        ]
    );
    // Retry-After is honoured for the 529 and the 429 (the step's retry and the user's limiter).
    for status in [529, 429] {
        let gap = env.gap_after(status);
        assert!(gap >= Duration::from_millis(950), "after the {status}, the next request came in {gap:?}");
    }
    // The crawl resumed where it failed: the page was read once successfully, each block list once.
    let ok = |prefix: &str| {
        let answered =
            |r: &&RecordedRequest| r.status == 200 && matches!(r.fault, None | Some(Fault::SlowBody { .. }));
        env.notion.requests().iter().filter(answered).filter(|r| r.path.starts_with(prefix)).count()
    };
    assert_eq!(ok("/v1/pages/"), 1);
    assert_eq!(ok("/v1/blocks/"), 6, "2 pages of top-level blocks + 4 toggles' children");
}

/// A step's attempts count the failures since it last made progress: a crawl that moves on
/// between its errors (hours of a large database's crawl, a few 502s spread over them) is not
/// failed by their total, only by errors that keep it from moving.
#[tokio::test]
async fn failures_a_crawl_moves_on_between_do_not_add_up() {
    let env = setup(|s| {
        s.insert("NOTION_MAX_RETRIES", "1".into());
    })
    .await;
    // Every other block list fails once: three failures, each after a request that worked in
    // the same attempt. (A zero delay answers normally.)
    for fault in [Fault::Status(502), Fault::Delay(Duration::ZERO)].into_iter().cycle().take(5) {
        env.notion.inject("/v1/blocks/", fault);
    }

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "two attempts, three failures, each after progress: {run}");
    assert_eq!(env.live_cards().await, 4);
    let failed = env.notion.requests().iter().filter(|r| r.status == 502).count();
    assert_eq!(failed, 3, "each injected failure was met");
    assert_eq!(run_step(&run, "fetch")["attempts"], 4, "three failed attempts and the one that finished");
}

#[tokio::test]
async fn a_crawl_longer_than_one_attempt_checkpoints_instead_of_timing_out() {
    // fetch may run 2 s per attempt, Notion answers in 0.4 s, and the page takes 7 requests:
    // 2.8 s of crawling. An attempt that ran into its timeout would start over every time.
    let dir = TempDir::new();
    let file = crate::support::app::workflow_file_with(
        &dir,
        "timeout_seconds = 120\nattempts = \"notion\"",
        "timeout_seconds = 2\nattempts = \"notion\"",
    );
    let env = setup(|s| {
        s.insert("WORKFLOW_FILE", file.clone());
        s.insert("NOTION_TIMEOUT_SECONDS", "1".into());
        s.insert("NOTION_MAX_RETRIES", "1".into());
    })
    .await;
    env.notion.inject_always("/v1/", Fault::Delay(Duration::from_millis(400)));

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(env.live_cards().await, 4);
    let outcomes: Vec<Option<String>> = on_db!(env.app.db, |db| sqlx::query_scalar(
        "select outcome from workflow_step_attempts where step = 'fetch' order by started_at",
    )
    .fetch_all(db)
    .await)
    .expect("attempts");
    let last = outcomes.len() - 1;
    assert!(outcomes.len() >= 3, "the crawl went on over several attempts: {outcomes:?}");
    assert!(outcomes[..last].iter().all(|o| o.as_deref() == Some("waiting")), "{outcomes:?}");
    assert_eq!(outcomes[last].as_deref(), Some("succeeded"));
    // Each request was made once: every attempt went on where the previous one stopped.
    assert_eq!(env.notion.count("/v1/pages/"), 1);
    assert_eq!(env.notion.count("/v1/blocks/"), 6);
}

/// Notion's 429 and 529 are retried after their `Retry-After` and spend an attempt each, as
/// any retryable Notion failure does (DESIGN's failure rules): a Notion that keeps asking for
/// fewer requests fails the run after `NOTION_MAX_RETRIES` retries instead of holding it (and
/// the content's later syncs) for ever, and ops' retry goes on where the crawl stopped.
#[tokio::test]
async fn slow_downs_that_never_stop_fail_the_run_after_its_attempts_and_ops_retry_resumes_it() {
    let env = setup(|s| {
        s.insert("NOTION_MAX_RETRIES", "2".into());
    })
    .await;
    env.notion.inject("/v1/blocks/", Fault::StatusRetryAfter { status: 529, retry_after_secs: 1 });
    env.notion.inject_always(
        "/v1/blocks/",
        Fault::RateLimitedBecause { reason: "public_api_request_rate_limit", retry_after_secs: Some(1) },
    );

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "failed", "three attempts allowed, each met a slow-down: {run}");
    assert_eq!(run["error_kind"], "notion_rate_limited", "{run}");
    assert_eq!(run_step(&run, "fetch")["attempts"], 3, "{run}");
    let requests = env.notion.requests_for_token(TOKEN);
    let slowed: Vec<u16> = requests.iter().map(|r| r.status).filter(|s| matches!(s, 429 | 529)).collect();
    assert_eq!(slowed, [529, 429, 429], "one per attempt, none after the last: {requests:?}");
    let gaps: Vec<Duration> = requests.windows(2).skip(1).map(|w| w[1].at.duration_since(w[0].at)).collect();
    assert!(
        gaps.iter().all(|gap| *gap >= Duration::from_millis(950)),
        "each Retry-After was honoured: {gaps:?}"
    );

    // Notion calms down; ops retry the run. The page read before the slow-downs is not read again.
    env.notion.clear_faults();
    let run_id = run["id"].as_str().expect("id");
    expect_json(
        env.app
            .client
            .post(env.app.url(&format!("/api/workflows/{run_id}/retry")))
            .bearer_auth(API_TOKEN)
            .json(&json!({}))
            .send()
            .await
            .expect("retry"),
        202,
    )
    .await;
    let run = eventually("the retried run to succeed", Duration::from_secs(60), || async {
        let run = expect_json(env.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
        (run["state"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(env.live_cards().await, 4, "{run}");
    let read = |prefix: &str| {
        env.notion.requests().iter().filter(|r| r.status == 200 && r.path.starts_with(prefix)).count()
    };
    assert_eq!(read("/v1/pages/"), 1, "the crawl resumed where it stopped");
    assert_eq!(read("/v1/blocks/"), 6);
}

#[tokio::test]
async fn a_rate_limit_without_retry_after_still_holds_the_user_off_for_a_while() {
    let env = setup(|_| {}).await;
    env.notion.inject(
        "/v1/blocks/",
        Fault::RateLimitedBecause { reason: "public_api_request_rate_limit", retry_after_secs: None },
    );

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(env.live_cards().await, 4);
    let gap = env.gap_after(429);
    assert!(gap >= Duration::from_millis(950), "a bare 429 is not retried at once: {gap:?}");
}

#[tokio::test]
async fn a_blocked_request_fails_the_run_at_once() {
    let env = setup(|_| {}).await;
    env.notion.inject(
        "/v1/pages/",
        Fault::RateLimitedBecause { reason: "public_api_request_blocked", retry_after_secs: None },
    );

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error_kind"], "notion_request_blocked");
    assert_eq!(run_step(&run, "fetch")["attempts"], 1, "retrying won't help, so it is not retried");
    assert_eq!(env.notion.count("/v1/"), 1);
}

#[tokio::test]
async fn malformed_answers_that_never_stop_fail_the_run_after_its_attempts() {
    let env = setup(|s| {
        s.insert("NOTION_MAX_RETRIES", "2".into());
    })
    .await;
    env.notion.inject_always("/v1/blocks/", Fault::MalformedJson);

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error_kind"], "notion_malformed_response");
    assert_eq!(run_step(&run, "fetch")["attempts"], 3);
    assert_eq!(env.notion.count("/v1/blocks/"), 3, "NOTION_MAX_RETRIES=2: three attempts, then stop");
    assert_eq!(env.live_cards().await, 0);
}

#[tokio::test]
async fn a_notion_request_slower_than_notion_timeout_seconds_times_out_and_is_retried() {
    let env = setup(|s| {
        s.insert("NOTION_TIMEOUT_SECONDS", "1".into());
    })
    .await;
    // Slower than the configured timeout, far faster than the 30 s default.
    env.notion.inject("/v1/blocks/", Fault::Delay(Duration::from_secs(3)));

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(env.live_cards().await, 4);
    let kinds: Vec<Option<String>> = on_db!(env.app.db, |db| sqlx::query_scalar(
        "select error_kind from workflow_step_attempts where step = 'fetch' order by started_at",
    )
    .fetch_all(db)
    .await)
    .expect("attempts");
    assert_eq!(kinds, [Some("notion_timeout".to_owned()), None], "{run}");
}

// ----- lists whose cursor Notion no longer takes -----

/// Requests to `path` answered `status`, split by whether they carried a `start_cursor`.
fn list_requests(env: &Env, path: &str, status: u16) -> (usize, usize) {
    let requests = env.notion.requests();
    let matching = requests.iter().filter(|r| r.path == path && r.status == status);
    let (next_pages, first_pages): (Vec<_>, Vec<_>) = matching.partition(|r| {
        r.query.as_deref().is_some_and(|q| q.contains("start_cursor"))
            || r.body.as_ref().is_some_and(|b| b["start_cursor"].is_string())
    });
    (first_pages.len(), next_pages.len())
}

/// Notion stops taking a cursor after a while, and a block list's cursor is its next block,
/// which may be deleted between two pages of the list: the list is read again from its start
/// (a 404 on a next page means the same), no block twice, no attempt spent, nothing retired.
#[tokio::test]
async fn a_list_whose_next_cursor_notion_refuses_is_read_again_and_every_card_is_written() {
    let env = setup(|_| {}).await;
    env.notion.inject_on_cursor("/v1/blocks/", Fault::CursorRejected, 1);
    env.notion.inject_on_cursor("/v1/blocks/", Fault::Status(404), 1);

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(env.live_cards().await, 4, "the page's four cards, once");
    assert_eq!(run_step(&run, "fetch")["attempts"], 1, "reading a list again spends no attempt: {run}");
    let page_list = format!("/v1/blocks/{}/children", ids::PAGE);
    assert_eq!(list_requests(&env, &page_list, 400), (0, 1), "the refused cursor");
    assert_eq!(list_requests(&env, &page_list, 404), (0, 1), "the next page not found");
    assert_eq!(list_requests(&env, &page_list, 200), (3, 1), "the first page three times, the second once");
    for toggle in [ids::T_GLYCO, ids::T_KREBS, ids::T_EQ, ids::H3_ETC] {
        let list = format!("/v1/blocks/{toggle}/children");
        assert_eq!(list_requests(&env, &list, 200), (1, 0), "{toggle}'s children are read once");
    }
}

/// A Notion that never takes a cursor ends the run after its attempts: a list is read again
/// from its start at most 3 times in a row (the count is saved with the crawl, so it carries
/// over into the next attempt): no endless re-reading of first pages.
#[tokio::test]
async fn cursors_notion_never_takes_fail_the_run_after_its_attempts() {
    let env = setup(|s| {
        s.insert("NOTION_MAX_RETRIES", "1".into());
    })
    .await;
    env.notion.inject_on_cursor("/v1/blocks/", Fault::CursorRejected, 1000);

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error_kind"], "notion_cursor_rejected", "{run}");
    assert_eq!(run_step(&run, "fetch")["attempts"], 2, "NOTION_MAX_RETRIES=1: two attempts: {run}");
    let page_list = format!("/v1/blocks/{}/children", ids::PAGE);
    assert_eq!(
        list_requests(&env, &page_list, 400),
        (0, 5),
        "the first attempt reads the list again three times and gives up on the fourth refusal; the second on its first"
    );
    assert_eq!(env.live_cards().await, 0, "nothing written from a list read in part");
}

/// A database query's refused cursor goes on as a new window from the last row read (queries
/// are sorted by creation time), without reading the rows before it again.
#[tokio::test]
async fn a_query_whose_next_cursor_notion_refuses_goes_on_from_its_last_row() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    env.notion.load_fixture_page();
    env.notion.set_page_size_cap(1);
    env.notion.inject_on_cursor("/v1/data_sources/", Fault::CursorRejected, 1);

    let run = env.subscribe_and_sync(ids::DATABASE, "database").await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run_step(&run, "fetch")["attempts"], 1, "{run}");
    let query = format!("/v1/data_sources/{}/query", ids::DATA_SOURCE);
    let bodies: Vec<Value> = env
        .notion
        .requests()
        .into_iter()
        .filter(|r| r.path == query)
        .map(|r| r.body.expect("a query has a body"))
        .collect();
    assert!(bodies.len() >= 3, "first page, refused next page, new window: {bodies:?}");
    assert!(bodies[1]["start_cursor"].is_string(), "{bodies:?}");
    let first_row = "2026-05-04T09:12:00.000Z";
    assert_eq!(bodies[2]["start_cursor"], Value::Null, "the new window starts without a cursor: {bodies:?}");
    assert_eq!(
        bodies[2]["filter"]["created_time"]["on_or_after"], first_row,
        "from the last row read: {bodies:?}"
    );
    for row in [ids::PAGE, ids::PHOTOSYNTHESIS] {
        let list = format!("/v1/blocks/{row}/children");
        let (first_pages, _) = list_requests(&env, &list, 200);
        assert_eq!(first_pages, 1, "row {row}'s blocks are read once");
    }
}

/// A 404 whose body is not Notion's (a proxy's, a wrong `NOTION_API_BASE_URL`) says nothing
/// about the page: it is retried, not taken to mean the page is gone (which would retire its
/// cards).
#[tokio::test]
async fn a_404_that_is_not_notions_is_retried_not_taken_for_a_page_gone() {
    let env = setup(|_| {}).await;
    env.notion.inject("/v1/pages/", Fault::NotNotions(404));

    let run = env.sync_fixture_page().await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(env.live_cards().await, 4, "{run}");
    assert_eq!(run_step(&run, "fetch")["attempts"], 2, "{run}");
    let kinds: Vec<String> = on_db!(env.app.db, |db| sqlx::query_scalar(
        "select error_kind from workflow_step_attempts where step = 'fetch' and error_kind is not null",
    )
    .fetch_all(db)
    .await)
    .expect("attempts");
    assert_eq!(kinds, ["notion_unconfirmed_not_found"]);
}
