//! The real binary, as ops run it: several processes on one database, signals, crashes.

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use crate::support::{
    app::{TempDir, base_settings},
    db::{Db, TestDb, postgres_or_skip},
    eventually, fixtures,
    process::ServiceProcess,
};
use crate::{conformance, on_db};

const PAGE: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";

/// Settings for processes sharing `db`, and a pool for assertions.
async fn shared_setup(db: &TestDb, data_dir: &TempDir) -> (HashMap<&'static str, String>, Db) {
    let settings = base_settings(&db.url, data_dir.path());
    // Apply migrations once, so the processes start on a ready database.
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_cognie-sync"))
        .arg("migrate")
        .env_clear()
        .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .status()
        .expect("run migrate");
    assert!(migrate.success(), "cognie-sync migrate failed");
    let pool = db.connect().await;
    (settings, pool)
}

async fn post_signed(client: &reqwest::Client, url: &str, body: &[u8]) -> reqwest::Response {
    let signature = cognie_sync::webhook::signature::sign(fixtures::secret().as_bytes(), body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("X-Notion-Signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("POST webhook")
}

#[tokio::test]
async fn sigterm_stops_the_service_cleanly() {
    if !postgres_or_skip() {
        return;
    }
    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let (settings, _pool) = shared_setup(&db, &data_dir).await;
    let service = ServiceProcess::start("serve", &settings);
    let ready = reqwest::get(service.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let log = service.log.clone();
    assert!(
        service.terminate(Duration::from_secs(15)),
        "the service did not exit cleanly within 15 s of SIGTERM"
    );
    let log = log.lock().expect("log").join("\n");
    assert!(log.contains("shutting down") && log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn an_api_process_and_two_worker_processes_share_the_work_without_running_a_step_twice() {
    if !postgres_or_skip() {
        return;
    }
    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let (mut settings, pool) = shared_setup(&db, &data_dir).await;
    settings.insert("DEBOUNCE_SECONDS", "0".into());
    let user: uuid::Uuid =
        sqlx::query_scalar("insert into users (id, email) values ($1, 'w@example.com') returning id")
            .bind(uuid::Uuid::now_v7())
            .fetch_one(pool.pg())
            .await
            .expect("user");
    sqlx::query("insert into subscriptions (id, user_id, notion_id, kind) values ($1, $2, $3, 'page')")
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(PAGE)
        .execute(pool.pg())
        .await
        .expect("subscription");

    let api = ServiceProcess::start("api", &settings);
    // Workers serve no API; their health and metrics are on OPS_BIND_ADDR.
    let mut worker_settings = settings.clone();
    worker_settings.insert("OPS_BIND_ADDR", "127.0.0.1:0".into());
    let worker_a = ServiceProcess::start("worker", &worker_settings);
    let worker_b = ServiceProcess::start("worker", &worker_settings);

    let client = reqwest::Client::new();
    let events = 40;
    for n in 0..events {
        let body = json!({"id": format!("evt-{n}"), "type": "page.content_updated", "entity": {"id": PAGE, "type": "page"}})
            .to_string();
        let response = post_signed(&client, &api.url("/api/notion/webhook/notion"), body.as_bytes()).await;
        assert_eq!(response.status(), 200);
    }
    eventually("every event run to succeed", Duration::from_secs(30), || async {
        let done: i64 = sqlx::query_scalar(
            "select count(*) from workflow_runs where workflow = 'notion_event' and state = 'succeeded'",
        )
        .fetch_one(pool.pg())
        .await
        .expect("count");
        (done == events).then_some(())
    })
    .await;

    // Each step of each run succeeded in exactly one claim, whoever made it.
    let doubled: i64 = sqlx::query_scalar(
        "select count(*) from (select run_id, step from workflow_step_attempts where outcome = 'succeeded'
         group by run_id, step having count(*) > 1) d",
    )
    .fetch_one(pool.pg())
    .await
    .expect("attempts");
    assert_eq!(doubled, 0, "a step succeeded twice");
    let workers: Vec<(String, i64)> = sqlx::query_as(
        "select worker, count(*) from workflow_step_attempts where step = 'discover_users' group by worker",
    )
    .fetch_all(pool.pg())
    .await
    .expect("workers");
    assert!(workers.iter().all(|(w, _)| w.starts_with("cognie-sync-")), "{workers:?}");
    let claims: i64 = workers.iter().map(|(_, n)| n).sum();
    assert_eq!(claims, events, "one claim per event run: {workers:?}");
    // Each worker's metrics count the steps it ran: together, every event run's discover_users.
    let mut counted = 0;
    for worker in [&worker_a, &worker_b] {
        let healthz = client.get(worker.ops_url("/healthz")).send().await.expect("healthz");
        assert_eq!(healthz.status(), 200);
        let metrics = client.get(worker.ops_url("/metrics")).send().await.expect("metrics");
        let text = metrics.text().await.expect("metrics text");
        let series = "cognie_step_duration_seconds_count{step=\"discover_users\",outcome=\"succeeded\"} ";
        counted +=
            text.lines().find_map(|l| l.strip_prefix(series)).map_or(0, |n| n.parse::<i64>().expect("count"));
    }
    assert_eq!(counted, events, "every discover_users counted once, by the worker that ran it");
    drop((api, worker_a, worker_b));
}

const TOKEN: &str = "ntn_process_test_token";

/// A user with a Notion token and a subscription to `notion_id`, through `api`'s HTTP API.
/// A user with the test token who subscribed to `pages`: the runs of their first syncs.
async fn subscribed_user(client: &reqwest::Client, api: &ServiceProcess, pages: &[&str]) -> Vec<String> {
    let user = create_user(client, api).await;
    let put = client
        .put(api.url(&format!("/api/users/{user}/notion-token")))
        .bearer_auth(crate::support::app::API_TOKEN)
        .json(&json!({"token": TOKEN}))
        .send()
        .await
        .expect("PUT token");
    assert_eq!(put.status(), 204);
    subscribe(client, api, &user, pages).await
}

async fn create_user(client: &reqwest::Client, api: &ServiceProcess) -> String {
    let user: serde_json::Value = client
        .post(api.url("/api/users"))
        .bearer_auth(crate::support::app::API_TOKEN)
        .json(&json!({"email": "p@example.com"}))
        .send()
        .await
        .expect("create user")
        .json()
        .await
        .expect("user json");
    user["id"].as_str().expect("id").to_owned()
}

/// Subscribes `user` to each of `pages`: the runs of their first syncs.
async fn subscribe(
    client: &reqwest::Client,
    api: &ServiceProcess,
    user: &str,
    pages: &[&str],
) -> Vec<String> {
    let mut runs = Vec::new();
    for page in pages {
        let created: serde_json::Value = client
            .post(api.url(&format!("/api/users/{user}/subscriptions")))
            .bearer_auth(crate::support::app::API_TOKEN)
            .json(&json!({"notion_id": page, "kind": "page"}))
            .send()
            .await
            .expect("subscribe")
            .json()
            .await
            .expect("subscription json");
        runs.push(created["run_id"].as_str().expect("run id").to_owned());
    }
    runs
}

/// Serves a page `id` (the fixture page's properties) with no blocks: two requests to sync.
fn add_empty_page(notion: &crate::support::fake_notion::FakeNotion, id: &str) {
    let mut page: serde_json::Value =
        serde_json::from_slice(&fixtures::bytes("page_retrieve.json")).expect("page");
    page["id"] = json!(id);
    notion.add_page(page);
    notion.set_children(id, vec![]);
}

async fn run_state(pool: &Db, run_id: &str) -> (String, Option<String>) {
    let id = uuid::Uuid::parse_str(run_id).expect("run id");
    on_db!(pool, |p| sqlx::query_as("select state, current_step from workflow_runs where id = $1")
        .bind(id)
        .fetch_one(p)
        .await)
    .expect("run")
}

/// A service process on a fresh database whose first sync is in `fetch`, waiting on a block
/// listing that the fake Notion holds for 60 s, with a 2 s step lease; `extra` settings on top.
struct MidFetch {
    _notion: crate::support::fake_notion::FakeNotion,
    _db: TestDb,
    _data_dir: TempDir,
    settings: HashMap<&'static str, String>,
    pool: Db,
    service: ServiceProcess,
    run_id: String,
}

async fn mid_fetch(extra: &[(&'static str, &str)]) -> MidFetch {
    mid_fetch_held(extra, Duration::from_secs(60)).await
}

/// [`mid_fetch`] with the first block listing held for `hold`.
async fn mid_fetch_held(extra: &[(&'static str, &str)], hold: Duration) -> MidFetch {
    use crate::support::fake_notion::{FakeNotion, Fault, ids};
    let notion = FakeNotion::start().await;
    notion.load_fixture_page();
    notion.allow_token(TOKEN);
    notion.inject_times("/v1/blocks", Fault::Delay(hold), 1);
    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let (mut settings, pool) = shared_setup(&db, &data_dir).await;
    settings.insert("NOTION_API_BASE_URL", notion.base_url());
    settings.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    settings.insert("STEP_LEASE_SECONDS", "2".into());
    for (key, value) in extra {
        settings.insert(key, (*value).to_owned());
    }
    let service = ServiceProcess::start("serve", &settings);
    let run_id = subscribed_user(&reqwest::Client::new(), &service, &[ids::PAGE]).await.remove(0);
    eventually("the sync to be waiting on Notion", Duration::from_secs(20), || async {
        (notion.in_flight() > 0
            && run_state(&pool, &run_id).await == ("running".into(), Some("fetch".into())))
            .then_some(())
    })
    .await;
    MidFetch { _notion: notion, _db: db, _data_dir: data_dir, settings, pool, service, run_id }
}

conformance! {
async fn a_service_killed_mid_step_resumes_after_restart_and_the_effect_happens_once() {
    // Every part bound: the fake Notion and the database live as long as the test.
    let MidFetch { _notion, _db, _data_dir, settings, pool, service: first, run_id } = mid_fetch(&[]).await;
    let client = reqwest::Client::new();
    first.kill9();

    let second = ServiceProcess::start("serve", &settings);
    eventually("the run to complete after the restart", Duration::from_secs(30), || async {
        (run_state(&pool, &run_id).await.0 == "succeeded").then_some(())
    })
    .await;

    let cards: i64 = on_db!(pool, |p| sqlx::query_scalar(
        "select count(*) from flashcards where retired_at is null"
    )
    .fetch_one(p)
    .await)
    .expect("cards");
    assert_eq!(cards, 4, "exactly the page's cards, once");
    let run = uuid::Uuid::parse_str(&run_id).expect("run id");
    let fetch_claims: Vec<(Option<String>, String)> = on_db!(pool, |p| sqlx::query_as(
        "select outcome, worker from workflow_step_attempts where run_id = $1 and step = 'fetch' order by started_at",
    )
    .bind(run)
    .fetch_all(p)
    .await)
    .expect("claims");
    assert_eq!(fetch_claims.len(), 2, "{fetch_claims:?}");
    assert_eq!(fetch_claims[0].0.as_deref(), Some("abandoned"), "the killed attempt was closed at the takeover");
    assert_eq!(fetch_claims[1].0.as_deref(), Some("succeeded"));
    assert_ne!(fetch_claims[0].1, fetch_claims[1].1, "the restarted process took over under a new name");
    let persisted: i64 = on_db!(pool, |p| sqlx::query_scalar(
        "select count(*) from workflow_step_attempts where run_id = $1 and step = 'persist' and outcome = 'succeeded'",
    )
    .bind(run)
    .fetch_one(p)
    .await)
    .expect("persist");
    assert_eq!(persisted, 1);
    // The seed guide's line for every sync, logged once its result is committed: once, by
    // the process that completed it, with what it wrote.
    let completed = second.log_lines("Internal sync completed");
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0]["created"], 4, "{completed:?}");
    assert_eq!(completed[0]["gone"], false, "{completed:?}");
    assert_eq!(completed[0]["span"]["run_id"], run_id, "{completed:?}");
    // A sync that finds the content as it was says so instead.
    let user: uuid::Uuid = on_db!(pool, |p| sqlx::query_scalar("select user_id from workflow_runs where id = $1")
        .bind(run)
        .fetch_one(p)
        .await)
    .expect("user");
    let manual = client
        .post(second.url("/api/notion/sync"))
        .bearer_auth(crate::support::app::API_TOKEN)
        .json(&json!({"user_id": user, "notion_id": crate::support::fake_notion::ids::PAGE}))
        .send()
        .await
        .expect("manual sync");
    assert_eq!(manual.status(), 202);
    eventually("the manual sync's line", Duration::from_secs(30), || async {
        let completed = second.log_lines("Internal sync completed");
        (completed.len() == 2).then_some(completed)
    })
    .await
    .into_iter()
    .skip(1)
    .for_each(|line| assert_eq!(line["content_unchanged"], true, "{line}"));
    assert!(second.log_contains("took over steps whose worker stopped heartbeating"));
    let metrics = client.get(second.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("\ncognie_steps_taken_over_total 1\n"), "{metrics}");
}
}

#[tokio::test]
async fn the_rate_limit_holds_across_worker_processes() {
    if !postgres_or_skip() {
        return;
    }
    use crate::support::fake_notion::{FakeNotion, ids};
    let notion = FakeNotion::start().await;
    notion.load_fixture_page();
    notion.allow_token(TOKEN);
    // A second, small page of the same user: 2 requests (the page, its empty children).
    let second_page = "1f3c8a2e-4b7d-80aa-aaaa-000000000002";
    add_empty_page(&notion, second_page);

    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let (mut settings, pool) = shared_setup(&db, &data_dir).await;
    settings.insert("NOTION_API_BASE_URL", notion.base_url());
    settings.insert("NOTION_RATE_LIMIT_PER_MINUTE", "5".into());
    settings.insert("DEBOUNCE_SECONDS", "0".into());

    let api = ServiceProcess::start("api", &settings);
    let worker_a = ServiceProcess::start("worker", &settings);
    let worker_b = ServiceProcess::start("worker", &settings);
    let client = reqwest::Client::new();
    let runs = subscribed_user(&client, &api, &[ids::PAGE, second_page]).await;

    // 9 requests at 5 per minute: the second window is needed.
    eventually("both syncs to finish", Duration::from_secs(150), || async {
        let mut done = true;
        for run in &runs {
            done &= run_state(&pool, run).await.0 == "succeeded";
        }
        done.then_some(())
    })
    .await;
    let sent = notion.requests_for_token(TOKEN).len();
    assert_eq!(sent, 9);
    let busiest = notion.max_requests_in_window(TOKEN, Duration::from_secs(60));
    assert!(busiest <= 5, "{busiest} requests with one token inside 60 s; the limit is 5");
    let waits: i64 = sqlx::query_scalar(
        "select count(*) from workflow_step_attempts where step = 'fetch' and outcome = 'waiting'",
    )
    .fetch_one(pool.pg())
    .await
    .expect("waits");
    assert!(waits >= 1, "a fetch waited for the limiter instead of holding a worker");
    drop((api, worker_a, worker_b));
}

conformance! {
/// SIGTERM waits for in-flight steps at most `SHUTDOWN_TIMEOUT_SECONDS`: a step still waiting
/// on Notion near it releases its run (recorded as a wait due at once, spending no attempt)
/// and the process exits. The next process takes the run over at once, not when the old
/// lease expires (60 s here). Before, apalis waited for the step however long it took; then
/// the step was left until its lease expired, and the attempt cut short counted as a failure.
async fn sigterm_with_a_step_in_flight_releases_it_within_the_shutdown_timeout() {
    // A Notion timeout well past the hang, so only the shutdown bound can end the wait.
    // Released 2 s in, with 2 s left to record it.
    let extra =
        [("SHUTDOWN_TIMEOUT_SECONDS", "4"), ("NOTION_TIMEOUT_SECONDS", "90"), ("STEP_LEASE_SECONDS", "60")];
    // Every part bound: the fake Notion and the database live as long as the test.
    let MidFetch { _notion, _db, _data_dir, settings, pool, service: first, run_id } = mid_fetch(&extra).await;
    let log = first.log.clone();
    assert!(
        first.terminate(Duration::from_secs(10)),
        "the service did not exit cleanly within 10 s of SIGTERM with a 4 s shutdown timeout"
    );
    let log = log.lock().expect("log").join("\n");
    assert!(log.contains("released to another worker"), "{log}");
    assert!(!log.contains("left to be taken over"), "{log}");
    assert_eq!(run_state(&pool, &run_id).await, ("waiting".into(), Some("fetch".into())));
    let id = uuid::Uuid::parse_str(&run_id).expect("run id");
    let (attempt, step_attempts, outcome): (i64, i64, Option<String>) = on_db!(pool, |p| sqlx::query_as(
        r#"select cast(r.attempt as bigint), cast(s.attempts as bigint), a.outcome
           from workflow_runs r
           join workflow_steps s on s.run_id = r.id and s.name = 'fetch'
           join workflow_step_attempts a on a.run_id = r.id and a.step = 'fetch'
           where r.id = $1"#,
    )
    .bind(id)
    .fetch_one(p)
    .await)
    .expect("the run, its fetch step and its one attempt");
    assert_eq!((attempt, step_attempts), (0, 0), "the attempt cut short is given back");
    assert_eq!(outcome.as_deref(), Some("waiting"));

    let _second = ServiceProcess::start("serve", &settings);
    eventually("the run to complete after the restart", Duration::from_secs(30), || async {
        (run_state(&pool, &run_id).await.0 == "succeeded").then_some(())
    })
    .await;
}
}

conformance! {
/// A crawl under way when SIGTERM comes finishes its request in flight, then checkpoints and
/// hands its run over: recorded as a wait with its progress, spending no attempt, and the next
/// process goes on from there (no request made twice). Before, the crawl ran on to its end
/// (or, past the shutdown bound, was dropped and started over).
async fn sigterm_mid_crawl_checkpoints_after_the_request_in_flight_and_the_next_process_goes_on() {
    let extra = [("SHUTDOWN_TIMEOUT_SECONDS", "20"), ("STEP_LEASE_SECONDS", "60")];
    // The first block listing is held 8 s: SIGTERM arrives while it is in flight.
    let MidFetch { _notion: notion, _db, _data_dir, settings, pool, service: first, run_id } =
        mid_fetch_held(&extra, Duration::from_secs(8)).await;
    let log = first.log.clone();
    // Off the runtime: the fake Notion answering the held request runs on it.
    let exited = tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(18)))
        .await
        .expect("terminate");
    let log = log.lock().expect("log").join("\n");
    assert!(exited, "the service did not exit cleanly within 18 s of SIGTERM: {log}");
    assert_eq!(
        run_state(&pool, &run_id).await,
        ("waiting".into(), Some("fetch".into())),
        "handed over mid-crawl, not finished"
    );
    let answered = |prefix: &str| notion.requests().iter().filter(|r| r.status == 200 && r.path.starts_with(prefix)).count();
    assert_eq!((answered("/v1/pages/"), answered("/v1/blocks/")), (1, 1), "the request in flight was answered and kept");

    let _second = ServiceProcess::start("serve", &settings);
    eventually("the run to complete after the restart", Duration::from_secs(30), || async {
        (run_state(&pool, &run_id).await.0 == "succeeded").then_some(())
    })
    .await;
    assert_eq!(notion.count("/v1/pages/"), 1, "the page was not retrieved again");
    assert_eq!(notion.count("/v1/blocks/"), 6, "2 pages of top-level blocks + 4 toggles' children, each once");
    let id = uuid::Uuid::parse_str(&run_id).expect("run id");
    let outcomes: Vec<Option<String>> = on_db!(pool, |p| sqlx::query_scalar(
        "select outcome from workflow_step_attempts where run_id = $1 and step = 'fetch' order by started_at"
    )
    .bind(id)
    .fetch_all(p)
    .await)
    .expect("fetch attempts");
    assert_eq!(outcomes, [Some("waiting".to_owned()), Some("succeeded".to_owned())]);
}
}

/// Notion may rotate refresh tokens, so two processes must never refresh one user's token at
/// once: the second would send a refresh token the first just used up, and its syncs would
/// fail asking the user to reconnect. With the token endpoint slow, syncs on both worker
/// processes meet the expired token while the first refresh is under way; there is one
/// refresh, and every sync succeeds with its token.
#[tokio::test]
async fn an_expired_token_is_refreshed_once_across_worker_processes() {
    if !postgres_or_skip() {
        return;
    }
    use crate::support::fake_notion::{FakeNotion, Fault};
    use cognie_sync::crypto::SecretCipher;
    let notion = FakeNotion::start().await;
    notion.set_oauth_client("client-id", "client-secret", "https://unused.example.com/cb");
    // The user's access token has expired (Notion no longer accepts it); its refresh token works.
    notion.allow_refresh_token("nrt_issued_before");
    notion.inject("/v1/oauth/token", Fault::Delay(Duration::from_millis(1500)));
    let pages: Vec<String> = (1..=8).map(|n| format!("1f3c8a2e-4b7d-80aa-aaaa-{n:012}")).collect();
    for id in &pages {
        add_empty_page(&notion, id);
    }

    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let (mut settings, pool) = shared_setup(&db, &data_dir).await;
    settings.insert("NOTION_API_BASE_URL", notion.base_url());
    settings.insert("NOTION_CLIENT_ID", "client-id".into());
    settings.insert("NOTION_CLIENT_SECRET", "client-secret".into());
    settings.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    settings.insert("DEBOUNCE_SECONDS", "0".into());
    // One step at a time per process: while one worker's refresh is under way, the other takes
    // the next sync (with more, the first worker to look would take every job).
    settings.insert("WORKER_CONCURRENCY", "1".into());
    let api = ServiceProcess::start("api", &settings);
    let worker_a = ServiceProcess::start("worker", &settings);
    let worker_b = ServiceProcess::start("worker", &settings);
    let client = reqwest::Client::new();
    let user = create_user(&client, &api).await;
    let user = uuid::Uuid::parse_str(&user).expect("uuid");
    // The pair as the OAuth callback stores it.
    let cipher =
        SecretCipher::from_base64_key(&settings["TOKEN_ENCRYPTION_KEY"].clone().into()).expect("key");
    sqlx::query(
        "update users set notion_token_ciphertext = $2, notion_refresh_token_ciphertext = $3 where id = $1",
    )
    .bind(user)
    .bind(cipher.encrypt("ntn_expired", &user.to_string()))
    .bind(cipher.encrypt("nrt_issued_before", &format!("{user}:refresh")))
    .execute(pool.pg())
    .await
    .expect("store the pair");
    let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
    let runs = subscribe(&client, &api, &user.to_string(), &pages).await;

    eventually("every sync to finish", Duration::from_secs(60), || async {
        let mut states = Vec::new();
        for run in &runs {
            states.push(run_state(&pool, run).await.0);
        }
        states.iter().all(|s| s == "succeeded" || s == "failed").then_some(())
    })
    .await;
    for run in &runs {
        assert_eq!(run_state(&pool, run).await.0, "succeeded", "run {run}");
    }
    assert_eq!(notion.refreshes(), 1, "one refresh across both processes");
    let refused = notion.requests_for_token("ntn_expired").len();
    assert!(refused >= 2, "syncs met the expired token while it was refreshed: {refused}");
    drop((api, worker_a, worker_b));
}
