//! Ops through the API: list, inspect, retry, cancel, bulk retry, queue stats.

use crate::{conformance, on_db};
use std::time::Duration;

use cognie_sync::store::{QueueStats, pg::PgStore};
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    app::{API_TOKEN, expect_error, expect_json},
    db::postgres_or_skip,
    eventually,
};

const PAGE: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";

async fn post(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(API_TOKEN).json(&body).send().await.expect("POST")
}

fn event(n: usize) -> Vec<u8> {
    json!({"id": format!("evt-ops-{n}"), "type": "page.updated", "entity": {"id": PAGE, "type": "page"}})
        .to_string()
        .into_bytes()
}

/// A run that failed at `discover_users`, as a failure would leave it.
async fn insert_failed_event_run(app: &TestApp, n: usize) -> uuid::Uuid {
    let body = expect_json(app.post_signed(&event(1000 + n)).await, 200).await;
    let event_id: uuid::Uuid = body["event_id"].as_str().expect("event").parse().expect("uuid");
    let run_id: uuid::Uuid = eventually("the event run to finish", Duration::from_secs(10), || async {
        on_db!(app.db, |db| sqlx::query_scalar(
            "select id from workflow_runs where event_id = $1 and state = 'succeeded'"
        )
        .bind(event_id)
        .fetch_optional(db)
        .await)
        .expect("query")
    })
    .await;
    on_db!(app.db, |db| sqlx::query(
        "update workflow_runs set state = 'failed', error_kind = 'database_unavailable', last_error = 'boom',
         finished_at = updated_at where id = $1",
    )
    .bind(run_id)
    .execute(db)
    .await
    .map(|done| done.rows_affected()))
    .expect("fail the run");
    on_db!(app.db, |db| sqlx::query(
        "update workflow_steps set state = 'failed', error = 'boom' where run_id = $1"
    )
    .bind(run_id)
    .execute(db)
    .await
    .map(|done| done.rows_affected()))
    .expect("fail the step");
    run_id
}

conformance! {
async fn runs_are_listed_newest_first_with_filters_and_cursor_pagination() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        expect_json(app.post_signed(&event(n)).await, 200).await;
    }
    let page1 =
        expect_json(app.get_authorized("/api/workflows?workflow=notion_event&limit=2").await, 200).await;
    let items = page1["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(items[0]["created_at"].as_str() >= items[1]["created_at"].as_str(), "newest first");
    for field in ["id", "workflow", "state", "current_step", "trigger", "attempt", "created_at", "updated_at"]
    {
        assert!(!items[0][field].is_null(), "run field {field} missing: {}", items[0]);
    }
    let mut seen: Vec<Value> = items.clone();
    let mut cursor = page1["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = expect_json(
            app.get_authorized(&format!("/api/workflows?workflow=notion_event&limit=2&cursor={c}")).await,
            200,
        )
        .await;
        seen.extend(page["items"].as_array().expect("items").iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    let created: Vec<chrono::DateTime<chrono::Utc>> = seen
        .iter()
        .map(|r| r["created_at"].as_str().expect("created_at").parse().expect("a time"))
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first across every page: {created:?}");
    let unique: std::collections::HashSet<&str> = seen.iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!((seen.len(), unique.len()), (5, 5), "every run once across pages");

    let filtered = expect_json(
        app.get_authorized(&format!("/api/workflows?notion_id={}", PAGE.replace('-', ""))).await,
        200,
    )
    .await;
    assert_eq!(filtered["items"].as_array().map(Vec::len), Some(5), "notion_id accepts the undashed form");
    let none = expect_json(app.get_authorized("/api/workflows?state=cancelled").await, 200).await;
    assert_eq!(none["items"], json!([]));
    assert!(none["next_cursor"].is_null());
    expect_error(app.get_authorized("/api/workflows?state=exploded").await, 400, "invalid_filter").await;
    // The same code for the filters poem parses itself.
    expect_error(app.get_authorized("/api/workflows?since=yesterday").await, 400, "invalid_filter").await;
    expect_error(app.get_authorized("/api/workflows?user_id=nope").await, 400, "invalid_filter").await;
    // Years chrono reads but no backend can compare (PostgreSQL answered 500, SQLite matched
    // every run for +10000).
    for since in ["-5000-01-01T00:00:00Z", "%2B10000-01-01T00:00:00Z"] {
        let path = format!("/api/workflows?since={since}");
        expect_error(app.get_authorized(&path).await, 400, "invalid_filter").await;
    }
    expect_error(app.get_authorized("/api/workflows?cursor=nope").await, 400, "invalid_cursor").await;
    expect_error(app.get_authorized("/api/workflows?limit=0").await, 400, "invalid_limit").await;
}
}

conformance! {
async fn a_failed_run_is_retried_at_its_failed_step_and_the_action_is_recorded() {
    let app = TestApp::spawn().await;
    let run_id = insert_failed_event_run(&app, 1).await;
    let detail = expect_json(app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
    assert_eq!(detail["state"], "failed");
    assert_eq!(detail["steps"][0]["name"], "discover_users");
    assert_eq!(detail["steps"][0]["error"], "boom");
    assert_eq!(detail["event_ids"].as_array().map(Vec::len), Some(1));

    let accepted =
        expect_json(post(&app, &format!("/api/workflows/{run_id}/retry"), json!({})).await, 202).await;
    assert_eq!(accepted["run_id"], run_id.to_string());
    let detail = eventually("the retried run to succeed", Duration::from_secs(10), || async {
        let d = expect_json(app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
        (d["state"] == "succeeded").then_some(d)
    })
    .await;
    assert_eq!(detail["steps"][0]["state"], "succeeded");
    assert_eq!(detail["steps"][0]["attempts"], 2, "the first attempt plus the retry");
    assert_eq!(detail["actions"][0]["action"], "retry");
    assert_eq!(detail["actions"][0]["actor"], "api");
    assert_eq!(detail["trigger"], "retry", "what last set the run going");

    expect_error(
        post(&app, &format!("/api/workflows/{run_id}/retry"), json!({})).await,
        409,
        "invalid_state",
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    expect_error(
        post(&app, &format!("/api/workflows/{unknown}/retry"), json!({})).await,
        404,
        "run_not_found",
    )
    .await;
    expect_error(app.get_authorized(&format!("/api/workflows/{unknown}")).await, 404, "run_not_found").await;
}
}

/// An app with a 60 s debounce, a user subscribed to `PAGE`, and the sync an event for it
/// started, waiting in debounce: (app, user, that run).
async fn sync_waiting_in_debounce(email: &str) -> (TestApp, uuid::Uuid, uuid::Uuid) {
    let app = TestApp::spawn_with(|s| {
        s.insert("DEBOUNCE_SECONDS", "60".into());
        s.insert("DEBOUNCE_MAX_WAIT_SECONDS", "120".into());
    })
    .await;
    let user = app.insert_user(email).await;
    app.insert_subscription(user, PAGE, "page").await;
    expect_json(app.post_signed(&event(1)).await, 200).await;
    let run: uuid::Uuid = eventually("a sync waiting in debounce", Duration::from_secs(10), || async {
        on_db!(app.db, |db| sqlx::query_scalar(
            "select id from workflow_runs where workflow = 'notion_sync' and state = 'waiting'",
        )
        .fetch_optional(db)
        .await)
        .expect("query")
    })
    .await;
    (app, user, run)
}

conformance! {
async fn a_waiting_run_is_cancelled_at_once_and_can_be_retried() {
    let (app, _user, run_id) = sync_waiting_in_debounce("c@example.com").await;

    expect_json(post(&app, &format!("/api/workflows/{run_id}/cancel"), json!({})).await, 202).await;
    let detail = expect_json(app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
    assert_eq!(detail["state"], "cancelled");
    assert!(detail["finished_at"].is_string());
    expect_error(
        post(&app, &format!("/api/workflows/{run_id}/cancel"), json!({})).await,
        409,
        "invalid_state",
    )
    .await;

    expect_json(post(&app, &format!("/api/workflows/{run_id}/retry"), json!({})).await, 202).await;
    let detail = expect_json(app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
    assert!(["pending", "waiting", "running"].contains(&detail["state"].as_str().unwrap_or("")), "{detail}");
    assert_eq!(detail["current_step"], "debounce");
    let actions: Vec<&str> =
        detail["actions"].as_array().expect("actions").iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions, ["cancel", "retry"]);
}
}

conformance! {
/// A failed sync is not retried once a newer sync of the same content exists: it would resume
/// with what it read before and could write older cards over the newer ones. The newer one is
/// the one to retry.
async fn a_failed_sync_superseded_by_a_newer_one_is_not_retried() {
    let app = TestApp::spawn().await;
    let user = app.insert_user("s@example.com").await;
    let now = app.db.now_sql();
    let earlier = app.db.shifted_sql(now, -10);
    let insert = |created: &str| {
        format!(
            "insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
                 error_kind, last_error, created_at, finished_at)
             values ($1, 'notion_sync', 'failed', 'persist', $2, $3, 'page', 'webhook', 'x', 'boom', {created}, {now})"
        )
    };
    let (old, new) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (id, sql) in [(old, insert(&earlier)), (new, insert(now))] {
        on_db!(app.db, |db| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id)
            .bind(user)
            .bind(PAGE)
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("seed run");
    }

    let refused = expect_error(post(&app, &format!("/api/workflows/{old}/retry"), json!({})).await, 409, "superseded").await;
    assert!(refused["message"].as_str().unwrap_or("").contains(&new.to_string()), "{refused}");
    let dry = expect_json(post(&app, "/api/workflows/retry-failed", json!({"dry_run": true})).await, 200).await;
    assert_eq!((&dry["matched"], &dry["retried"]), (&json!(2), &json!(0)), "{dry}");
    assert_eq!(dry["run_ids"], json!([new.to_string()]), "a dry run lists what the call would retry: {dry}");
    let bulk = expect_json(post(&app, "/api/workflows/retry-failed", json!({})).await, 200).await;
    assert_eq!(bulk["matched"], 2, "{bulk}");
    assert_eq!(bulk["run_ids"], json!([new.to_string()]), "only the newer one: {bulk}");
    let old_run = expect_json(app.get_authorized(&format!("/api/workflows/{old}")).await, 200).await;
    assert_eq!(old_run["state"], "failed");
}
}

/// A bulk retry's limit (10,000 per call) counts the runs it can retry first: failed syncs a
/// newer sync superseded (thousands after an outage) never retry, and must not fill every call
/// and hide the runs that can.
#[tokio::test]
async fn a_bulk_retry_is_not_held_up_by_more_superseded_syncs_than_its_limit() {
    crate::support::db::run_on(crate::support::db::Backend::Postgres, async {
        let app = TestApp::spawn().await;
        let user = app.insert_user("s@example.com").await;
        // 100 pages, each with 101 failed syncs, oldest first: 10,000 superseded by a newer one
        // of their page, and the 100 newest, one per page, which a retry resumes.
        let newest: Vec<Option<uuid::Uuid>> = sqlx::query_scalar(
            "insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
                 error_kind, last_error, created_at, finished_at)
             select gen_random_uuid(), 'notion_sync', 'failed', 'persist', $1,
                    '1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c' || lpad((i % 100)::text, 3, '0'), 'page', 'webhook', 'x', 'boom',
                    now() - interval '1 hour' + make_interval(secs => i / 100.0), now()
             from generate_series(0, 10099) as i
             returning case when created_at >= now() - interval '1 hour' + make_interval(secs => 100.0) then id end",
        )
        .bind(user)
        .fetch_all(app.db.pg())
        .await
        .expect("seed the failed syncs");
        let mut newest: Vec<String> = newest.into_iter().flatten().map(|id| id.to_string()).collect();
        newest.sort();
        assert_eq!(newest.len(), 100);
        // As autovacuum would after such a load (this machine runs without it).
        sqlx::query("analyze workflow_runs").execute(app.db.pg()).await.expect("analyze");

        let ids = |body: &serde_json::Value| {
            let mut ids: Vec<String> = body["run_ids"]
                .as_array()
                .expect("run ids")
                .iter()
                .map(|id| id.as_str().expect("id").to_owned())
                .collect();
            ids.sort();
            ids
        };
        let dry = expect_json(post(&app, "/api/workflows/retry-failed", json!({"dry_run": true})).await, 200).await;
        assert_eq!(ids(&dry), newest, "matched {}", dry["matched"]);
        let bulk = expect_json(post(&app, "/api/workflows/retry-failed", json!({})).await, 200).await;
        assert_eq!((&bulk["matched"], &bulk["retried"]), (&json!(10_000), &json!(100)));
        assert_eq!(ids(&bulk), newest);
    })
    .await
}

conformance! {
async fn failed_runs_are_retried_in_bulk_with_filters_and_dry_run() {
    let app = TestApp::spawn().await;
    let a = insert_failed_event_run(&app, 1).await;
    let b = insert_failed_event_run(&app, 2).await;

    let dry =
        expect_json(post(&app, "/api/workflows/retry-failed", json!({"dry_run": true})).await, 200).await;
    assert_eq!((dry["matched"].as_u64(), dry["retried"].as_u64()), (Some(2), Some(0)));
    let mut ids: Vec<String> =
        dry["run_ids"].as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_owned()).collect();
    ids.sort();
    let mut expected = vec![a.to_string(), b.to_string()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        app.count("select count(*) from workflow_runs where state = 'failed'").await,
        2,
        "dry run changes nothing"
    );

    let none =
        expect_json(post(&app, "/api/workflows/retry-failed", json!({"step": "persist"})).await, 200).await;
    assert_eq!(none["matched"], 0);
    expect_error(
        post(&app, "/api/workflows/retry-failed", json!({"step": "nope"})).await,
        400,
        "invalid_filter",
    )
    .await;
    expect_error(
        post(&app, "/api/workflows/retry-failed", json!({"since": "+10000-01-01T00:00:00Z"})).await,
        400,
        "invalid_filter",
    )
    .await;

    let done =
        expect_json(post(&app, "/api/workflows/retry-failed", json!({"step": "discover_users"})).await, 200)
            .await;
    assert_eq!((done["matched"].as_u64(), done["retried"].as_u64()), (Some(2), Some(2)));
    eventually("both retried runs to succeed", Duration::from_secs(10), || async {
        (app.count("select count(*) from workflow_runs where state = 'succeeded'").await == 2).then_some(())
    })
    .await;
}
}

conformance! {
async fn queue_stats_count_runs_and_steps_by_state() {
    let app = TestApp::spawn().await;
    for n in 0..3 {
        expect_json(app.post_signed(&event(n)).await, 200).await;
    }
    // The three counts are independent reads (run states, step states, the oldest pending
    // run), so one answer can mix moments: wait until all three have settled.
    let settled = "three succeeded runs and nothing pending in the stats";
    let stats = eventually(settled, Duration::from_secs(10), || async {
        let s = expect_json(app.get_authorized("/api/queue/stats").await, 200).await;
        let settled = s["runs"]["succeeded"] == 3
            && s["steps"]["discover_users"]["succeeded"] == 3
            && s["oldest_pending_age_seconds"].is_null();
        settled.then_some(s)
    })
    .await;
    for state in ["pending", "running", "waiting", "failed", "cancelled"] {
        assert_eq!(stats["runs"][state], 0, "{state}: {stats}");
    }
    assert_eq!(stats["steps"]["discover_users"]["succeeded"], 3);
    assert!(stats["oldest_pending_age_seconds"].is_null());
    assert_eq!(stats["estimated"], json!([]), "small tables are counted exactly");
}
}

/// PostgreSQL's statistics-based estimates (SQLite, one process's data, counts exactly).
#[tokio::test]
async fn on_large_tables_queue_stats_estimate_only_the_succeeded_counts() {
    if !postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn().await;
    for n in 0..3 {
        expect_json(app.post_signed(&event(n)).await, 200).await;
    }
    insert_failed_event_run(&app, 0).await;
    eventually("three succeeded runs", Duration::from_secs(10), || async {
        (app.count("select count(*) from workflow_runs where state = 'succeeded'").await == 3).then_some(())
    })
    .await;
    let store = PgStore::new(app.db.pg().clone());
    let by_state = |stats: &QueueStats| {
        ["pending", "running", "waiting", "failed", "cancelled"].map(|s| stats.runs.get(s).copied())
    };

    // Every table "large": runs other than succeeded are counted exactly, succeeded estimated
    // from the table's statistics. Steps have no column statistics before an ANALYZE, so they
    // are still counted in full.
    let stats = store.queue_stats_with_exact_rows(-1).await.expect("stats");
    assert_eq!(stats.estimated, ["runs.succeeded"], "{stats:?}");
    assert_eq!(by_state(&stats), [Some(0), Some(0), Some(0), Some(1), Some(0)]);
    assert!(stats.runs.contains_key("succeeded"));
    assert_eq!(stats.steps["discover_users"]["succeeded"], 3);
    assert_eq!(stats.steps["discover_users"]["failed"], 1);

    // After an ANALYZE (which counts these few rows exactly, and later statistics flushes can
    // only add to), the succeeded counts are estimates of at least the real 3; the rest stay exact.
    sqlx::query("analyze workflow_runs, workflow_steps").execute(app.db.pg()).await.expect("analyze");
    let stats = store.queue_stats_with_exact_rows(-1).await.expect("stats");
    assert_eq!(stats.estimated, ["runs.succeeded", "steps.discover_users.succeeded"], "{stats:?}");
    assert_eq!(by_state(&stats), [Some(0), Some(0), Some(0), Some(1), Some(0)]);
    assert!(stats.runs["succeeded"] >= 3, "{stats:?}");
    assert!(stats.steps["discover_users"]["succeeded"] >= 3, "{stats:?}");
    assert_eq!(stats.steps["discover_users"]["failed"], 1);

    // Below the limit, the same data is counted exactly.
    let exact = store.queue_stats().await.expect("stats");
    assert!(exact.estimated.is_empty());
    assert_eq!(exact.runs["succeeded"], 3);
    assert_eq!(exact.steps["discover_users"], [("failed".to_owned(), 1), ("succeeded".to_owned(), 3)].into());
}

conformance! {
async fn a_manual_sync_skips_debounce() {
    let app = TestApp::spawn_with(|s| {
        s.insert("DEBOUNCE_SECONDS", "60".into());
        s.insert("DEBOUNCE_MAX_WAIT_SECONDS", "120".into());
    })
    .await;
    let user = app.insert_user("m@example.com").await;
    let accepted =
        expect_json(post(&app, "/api/notion/sync", json!({"user_id": user, "notion_id": PAGE})).await, 202)
            .await;
    let run_id = accepted["run_id"].as_str().expect("run id").to_owned();
    let detail = eventually("the manual sync to leave debounce", Duration::from_secs(10), || async {
        let d = expect_json(app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
        (d["current_step"] != "debounce").then_some(d)
    })
    .await;
    assert_eq!(detail["trigger"], "manual");
    let unknown = json!({"user_id": uuid::Uuid::new_v4(), "notion_id": PAGE});
    expect_error(post(&app, "/api/notion/sync", unknown).await, 404, "user_not_found").await;
    let bad = json!({"user_id": user, "notion_id": "x"});
    expect_error(post(&app, "/api/notion/sync", bad).await, 400, "invalid_notion_id").await;
}
}

conformance! {
/// A manual sync that joins a webhook's sync waiting in debounce makes it run now, and makes it
/// a manual sync (the trigger that keeps events joining it later from deferring it again).
async fn a_manual_sync_joining_a_debouncing_sync_runs_it_now_for_good() {
    let (app, user, waiting) = sync_waiting_in_debounce("j@example.com").await;

    let accepted =
        expect_json(post(&app, "/api/notion/sync", json!({"user_id": user, "notion_id": PAGE})).await, 202)
            .await;
    assert_eq!(accepted["run_id"], json!(waiting.to_string()), "the manual sync joined the waiting one");
    let detail = eventually("the joined sync to leave debounce", Duration::from_secs(10), || async {
        let d = expect_json(app.get_authorized(&format!("/api/workflows/{waiting}")).await, 200).await;
        (d["current_step"] != "debounce").then_some(d)
    })
    .await;
    assert_eq!(detail["trigger"], "manual", "{detail}");
}
}

conformance! {
/// What ops alert on (README "Operating it"): the stats and the metrics count what waits, what
/// failed and what is overdue, not only an idle system's zeros.
async fn queue_stats_and_metrics_count_what_waits_failed_and_is_overdue() {
    let (app, _user, _waiting) = sync_waiting_in_debounce("q@example.com").await;
    insert_failed_event_run(&app, 1).await;
    // A run due five minutes ago that nothing has started (its job lost, say), and a retry
    // that was due ten minutes ago (its backoff over, the workers down or behind).
    for (state, minutes) in [("pending", -5), ("waiting", -10)] {
        let overdue = format!(
            "insert into workflow_runs (id, workflow, state, current_step, trigger, dispatch_seq, next_run_at,
                 created_at, updated_at)
             values ($1, 'notion_event', '{state}', 'discover_users', 'webhook', 1, {ago}, {ago}, {ago})",
            ago = app.db.shifted_sql(app.db.now_sql(), minutes)
        );
        on_db!(app.db, |db| sqlx::query(sqlx::AssertSqlSafe(overdue.clone()))
            .bind(uuid::Uuid::now_v7())
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("overdue run");
    }

    let stats = expect_json(app.get_authorized("/api/queue/stats").await, 200).await;
    for (state, n) in [("pending", 1), ("waiting", 2), ("failed", 1), ("running", 0), ("cancelled", 0)] {
        assert_eq!(stats["runs"][state], n, "{state}: {stats}");
    }
    assert_eq!(stats["steps"]["discover_users"]["failed"], 1, "{stats}");
    let age = stats["oldest_pending_age_seconds"].as_f64().expect("an age");
    assert!((595.0..700.0).contains(&age), "the overdue retry's age: {age}");

    let metrics = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for line in ["cognie_workflow_runs{state=\"failed\"} 1", "cognie_workflow_runs{state=\"waiting\"} 2", "cognie_queue_depth 3"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let age_line = metrics.lines().find(|l| l.starts_with("cognie_oldest_pending_age_seconds ")).expect("age line");
    let age: f64 = age_line.split(' ').nth(1).expect("value").parse().expect("number");
    assert!(age >= 595.0, "{age_line}");
}
}
