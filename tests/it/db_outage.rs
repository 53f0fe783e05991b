//! The database goes away under load (a cuttable proxy between the service and PostgreSQL)
//! and comes back: webhooks answer 503 within a bounded time and never 200 while nothing can
//! be stored, `/readyz` says 503, and the service recovers by itself, with no restart and no
//! accepted event lost. The outage lasts `DB_OUTAGE_SECONDS` (default 20).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use uuid::Uuid;

use crate::support::{
    TestApp,
    app::{API_TOKEN, TempDir, base_settings},
    db::{TestDb, postgres_or_skip},
    eventually,
    fake_notion::{FakeNotion, ids},
    fixtures,
    process::ServiceProcess,
    proxy::DbProxy,
};

const TOKEN: &str = "ntn_outage_token";
/// Senders posting webhooks back to back, all through the outage.
const SENDERS: usize = 6;

fn outage_length() -> Duration {
    let secs = std::env::var("DB_OUTAGE_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(20.0);
    Duration::from_secs_f64(secs)
}

/// A run still open: (id, state, current step, attempt, dispatch sequence, next run at).
type StuckRun = (Uuid, String, Option<String>, i32, i64, Option<chrono::DateTime<chrono::Utc>>);

/// One webhook delivery as the sender saw it.
#[derive(Debug, Clone)]
struct Answer {
    sent_at: Instant,
    took: Duration,
    /// 0: no HTTP answer at all.
    status: u16,
    event_id: Option<Uuid>,
    subscribed_page: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_under_load_answers_503_and_recovers_without_losing_an_accepted_event() {
    if !postgres_or_skip() {
        return;
    }
    let outage = outage_length();
    let notion = FakeNotion::start().await;
    notion.load_fixture_page();
    notion.allow_token(TOKEN);
    let database = TestDb::create().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let base = notion.base_url();
    let app = Arc::new(
        TestApp::spawn_on(database, Some(proxy.addr), |s| {
            s.insert("NOTION_API_BASE_URL", base);
            s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "100000".into());
            s.insert("STEP_LEASE_SECONDS", "2".into());
        })
        .await,
    );
    let user = app.insert_user("outage@example.com").await;
    let put = app
        .client
        .put(app.url(&format!("/api/users/{user}/notion-token")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"token": TOKEN}))
        .send()
        .await
        .expect("PUT token");
    assert_eq!(put.status(), 204);
    app.insert_subscription(user, ids::PAGE, "page").await;

    // Continuous load: every sender posts unique events back to back; one in ten is about the
    // subscribed page (a sync), the rest about pages nobody follows (an event run only).
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (app, stop, answers, counter, client) =
            (app.clone(), stop.clone(), answers.clone(), counter.clone(), client.clone());
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let subscribed_page = n % 10 == 0;
                let page = if subscribed_page {
                    ids::PAGE.to_owned()
                } else {
                    format!("0d7a9e00-0000-4000-8000-{n:012x}")
                };
                let body = json!({
                    "id": format!("outage-{n}"),
                    "type": "page.content_updated",
                    "entity": {"id": page, "type": "page"},
                })
                .to_string();
                let signature = app.sign(body.as_bytes());
                let sent_at = Instant::now();
                let response = client
                    .post(app.url("/api/notion/webhook/notion"))
                    .header("content-type", "application/json")
                    .header("X-Notion-Signature", signature)
                    .body(body)
                    .send()
                    .await;
                let (status, event_id) = match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        (status, body["event_id"].as_str().and_then(|id| id.parse().ok()))
                    }
                    Err(_) => (0, None),
                };
                answers.lock().expect("answers").push(Answer {
                    sent_at,
                    took: sent_at.elapsed(),
                    status,
                    event_id,
                    subscribed_page,
                });
                if status != 200 {
                    // Notion would back off; a little pause keeps the log readable.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    let accepted_so_far = || answers.lock().expect("answers").iter().filter(|a| a.status == 200).count();
    eventually("webhooks to be accepted under load", Duration::from_secs(60), || async {
        (accepted_so_far() >= 200).then_some(())
    })
    .await;
    let before_outage = accepted_so_far();

    // The outage.
    proxy.cut();
    let cut_at = Instant::now();
    let mut ready_answers = Vec::new();
    while cut_at.elapsed() < outage {
        let response = app.get("/readyz").await;
        ready_answers.push(response.status().as_u16());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.restore();
    let restored_at = Instant::now();

    // Recovery, by itself: readiness and intake come back.
    eventually("/readyz to say ready again", Duration::from_secs(60), || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    eventually("webhooks to be accepted again", Duration::from_secs(60), || async {
        let answers = answers.lock().expect("answers");
        let after = answers.iter().filter(|a| a.sent_at > restored_at && a.status == 200).count();
        (after >= 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.expect("sender");
    }
    let answers = answers.lock().expect("answers").clone();

    // During the outage: 503s, in a bounded time, and never a 200 for a request that began
    // after the cut (nothing could be stored).
    let during: Vec<&Answer> =
        answers.iter().filter(|a| a.sent_at > cut_at && a.sent_at + a.took < restored_at).collect();
    assert!(during.len() >= 10, "the senders kept posting through the outage: {}", during.len());
    let not_503: Vec<&&Answer> = during.iter().filter(|a| a.status != 503).collect();
    assert!(not_503.is_empty(), "answers other than 503 during the outage: {not_503:?}");
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(slowest < Duration::from_secs(10), "a webhook took {slowest:?} to answer during the outage");
    let hung: Vec<&Answer> =
        answers.iter().filter(|a| a.sent_at < restored_at && a.sent_at + a.took > restored_at).collect();
    assert!(
        hung.iter().all(|a| a.took < Duration::from_secs(10)),
        "requests hung across the outage: {hung:?}"
    );
    assert!(
        !ready_answers.is_empty() && ready_answers.iter().all(|s| *s == 503),
        "/readyz during the outage: {ready_answers:?}"
    );
    let transport_errors = answers.iter().filter(|a| a.status == 0).count();
    assert_eq!(transport_errors, 0, "every request got an HTTP answer");

    // Every event answered 200 is stored, and its workflow runs to the end.
    let accepted: Vec<Uuid> = answers.iter().filter(|a| a.status == 200).filter_map(|a| a.event_id).collect();
    assert_eq!(
        accepted.len(),
        answers.iter().filter(|a| a.status == 200).count(),
        "every 200 names its event"
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from webhook_events where id = any($1)")
        .bind(&accepted)
        .fetch_one(app.db.pg())
        .await
        .expect("stored");
    assert_eq!(stored as usize, accepted.len(), "an event answered 200 is missing");
    let drain_started = Instant::now();
    loop {
        let open: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "select workflow, state, current_step, count(*) from workflow_runs
             where state not in ('succeeded', 'failed', 'cancelled') group by 1, 2, 3",
        )
        .fetch_all(app.db.pg())
        .await
        .expect("open runs");
        if open.is_empty() {
            break;
        }
        if drain_started.elapsed() > Duration::from_secs(180) {
            let stuck: Vec<StuckRun> = sqlx::query_as(
                "select id, state, current_step, attempt, dispatch_seq, next_run_at from workflow_runs
                     where state not in ('succeeded', 'failed', 'cancelled') order by created_at limit 5",
            )
            .fetch_all(app.db.pg())
            .await
            .expect("stuck runs");
            let jobs: Vec<(String, i32, i32, Option<String>)> = sqlx::query_as(
                "select status, attempts, max_attempts, last_result::text from apalis.jobs
                 where convert_from(job, 'UTF8')::jsonb ->> 'run_id' = $1::text",
            )
            .bind(stuck[0].0)
            .fetch_all(app.db.pg())
            .await
            .expect("jobs");
            panic!(
                "runs still open 180 s after the load stopped: {open:?}; e.g. {stuck:?}; the first one's jobs: {jobs:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let succeeded: i64 = sqlx::query_scalar(
        "select count(*) from workflow_runs where workflow = 'notion_event' and state = 'succeeded' and event_id = any($1)",
    )
    .bind(&accepted)
    .fetch_one(app.db.pg())
    .await
    .expect("event runs");
    assert_eq!(succeeded as usize, accepted.len(), "every accepted event's run succeeded");
    let failed: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "select workflow, error_kind, last_error from workflow_runs where state <> 'succeeded' limit 5",
    )
    .fetch_all(app.db.pg())
    .await
    .expect("failed runs");
    assert!(failed.is_empty(), "runs that did not succeed: {failed:?}");

    // The subscribed page was synced after the last event about it was accepted.
    let last_subscribed = answers
        .iter()
        .filter(|a| a.subscribed_page && a.status == 200)
        .filter_map(|a| a.event_id)
        .next_back()
        .expect("events about the subscribed page were accepted");
    let synced_after: i64 = sqlx::query_scalar(
        "select count(*) from workflow_run_events e join workflow_runs r on r.id = e.run_id
         join workflow_steps s on s.run_id = r.id and s.name = 'fetch' and s.state = 'succeeded'
         where e.event_id = $1 and r.workflow = 'notion_sync' and r.state = 'succeeded'",
    )
    .bind(last_subscribed)
    .fetch_one(app.db.pg())
    .await
    .expect("sync after the last event");
    assert!(synced_after >= 1, "the last edit was synced");
    assert_eq!(app.count("select count(*) from flashcards where retired_at is null").await, 4);
    eprintln!(
        "outage {outage:?}: {} deliveries, {} accepted ({before_outage} before the cut), {} answered 503 during it (slowest {slowest:?}), \
         recovered {:?} after the restore",
        answers.len(),
        accepted.len(),
        during.len(),
        answers
            .iter()
            .filter(|a| a.sent_at > restored_at && a.status == 200)
            .map(|a| a.sent_at + a.took - restored_at)
            .min()
            .unwrap_or_default()
    );
}

/// A fresh database, a proxy in front of it, and the settings of processes that reach the
/// database through the proxy.
async fn behind_a_proxy() -> (TestDb, DbProxy, TempDir, std::collections::HashMap<&'static str, String>) {
    let database = TestDb::create().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let data_dir = TempDir::new();
    let proxied = database.url.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let settings = base_settings(&proxied, data_dir.path());
    (database, proxy, data_dir, settings)
}

/// Event `n`: a signed `page.updated` delivery of its own page to the webhook at `url`.
fn signed_page_event(client: &reqwest::Client, url: &str, n: usize) -> reqwest::RequestBuilder {
    let body = json!({"id": format!("event-{n}"), "type": "page.updated",
                      "entity": {"id": format!("0d7a9e00-0000-4000-9000-{n:012x}"), "type": "page"}})
    .to_string();
    let signature = cognie_sync::webhook::signature::sign(fixtures::secret().as_bytes(), body.as_bytes());
    client
        .post(url)
        .header("content-type", "application/json")
        .header("X-Notion-Signature", signature)
        .body(body)
}

/// A hanging database (it stops answering, nothing is refused) on the real binary: an `api`
/// process, whose pool then holds connections that never answer, and a `worker` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_database_gets_503s_within_a_bounded_time_not_hung_requests() {
    if !postgres_or_skip() {
        return;
    }
    let (database, proxy, _data_dir, settings) = behind_a_proxy().await;
    let (api, worker) = tokio::task::spawn_blocking(move || {
        (ServiceProcess::start("api", &settings), ServiceProcess::start("worker", &settings))
    })
    .await
    .expect("start");
    let pool = sqlx::PgPool::connect(&database.url).await.expect("connect");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let url = api.url("/api/notion/webhook/notion");
    let post = |n: usize| {
        let request = signed_page_event(&client, &url, n);
        async move {
            let sent = Instant::now();
            let response = request.send().await.expect("an HTTP answer");
            let status = response.status().as_u16();
            let ack: serde_json::Value = response.json().await.unwrap_or_default();
            (status, sent.elapsed(), ack["event_id"].as_str().and_then(|id| id.parse::<Uuid>().ok()))
        }
    };
    // Enough deliveries in parallel that the pool holds open connections when the stall begins.
    let mut accepted = Vec::new();
    for (status, _, event_id) in futures::future::join_all((0..16).map(post)).await {
        assert_eq!(status, 200);
        accepted.push(event_id.expect("event_id"));
    }

    // The database stops answering: connections stay open, nothing comes back. More deliveries
    // than the pool has connections: some wait on a hung connection, some for a free one.
    proxy.stall();
    let stalled_at = Instant::now();
    let ready = async {
        let sent = Instant::now();
        let status = client.get(api.url("/readyz")).send().await.expect("readyz").status().as_u16();
        (status, sent.elapsed())
    };
    let (answers, ready) = tokio::join!(futures::future::join_all((100..124).map(post)), ready);
    for (status, took, _) in &answers {
        assert_eq!(*status, 503, "a delivery while the database hangs: {answers:?}");
        assert!(*took < Duration::from_secs(10), "a delivery hung for {took:?}: {answers:?}");
    }
    assert_eq!(ready.0, 503, "/readyz while the database hangs");
    assert!(ready.1 < Duration::from_secs(10), "/readyz took {:?}", ready.1);
    // Stay stalled longer than any answer may take, then come back.
    tokio::time::sleep_until((stalled_at + Duration::from_secs(12)).into()).await;
    proxy.restore();

    let mut n = 1000;
    eventually("webhooks to be accepted again", Duration::from_secs(60), || {
        n += 1;
        let delivery = post(n);
        async move {
            let (status, _, event_id) = delivery.await;
            (status == 200).then_some(event_id)
        }
    })
    .await;
    let stored: i64 = sqlx::query_scalar("select count(*) from webhook_events where id = any($1)")
        .bind(&accepted)
        .fetch_one(&pool)
        .await
        .expect("stored");
    assert_eq!(stored as usize, accepted.len());
    eventually("every run to succeed after the stall", Duration::from_secs(120), || async {
        let open: i64 = sqlx::query_scalar("select count(*) from workflow_runs where state <> 'succeeded'")
            .fetch_one(&pool)
            .await
            .expect("runs");
        (open == 0).then_some(())
    })
    .await;
    drop((api, worker));
}

/// A failover after a hang: the old server never answers again and never closes its
/// connections, and new ones reach the new server. The connections the webhook gave up on
/// while the database hung are closed, not kept: before, each waited (with no deadline) for
/// the lost server's answer, and enough of them filled the pool, so every delivery got 503
/// long after the database was back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_accepted_again_soon_after_a_failover_from_a_hung_database() {
    if !postgres_or_skip() {
        return;
    }
    // The pool holds 8 connections (`DATABASE_MAX_CONNECTIONS`).
    let (database, proxy, _data_dir, settings) = behind_a_proxy().await;
    let api =
        tokio::task::spawn_blocking(move || ServiceProcess::start("api", &settings)).await.expect("start");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let url = api.url("/api/notion/webhook/notion");
    let post = |n: usize| {
        let request = signed_page_event(&client, &url, n);
        async move { request.send().await.expect("an HTTP answer").status().as_u16() }
    };
    // Until every connection the pool may open is open (and so stranded by the hang): with
    // fewer, the deliveries after the failover could get the rest however the old ones fare.
    let db = sqlx::PgPool::connect(&database.url).await.expect("connect");
    let mut n = 0;
    eventually("the pool to hold all its connections", Duration::from_secs(30), || {
        n += 16;
        let (deliveries, db) = (futures::future::join_all((n..n + 16).map(post)), db.clone());
        async move {
            let answers = deliveries.await;
            assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
            let open: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                 where datname = current_database() and application_name = 'cognie-sync'
                   and query not ilike '%notify%'",
            )
            .fetch_one(&db)
            .await
            .expect("sessions");
            (open >= 8).then_some(())
        }
    })
    .await;

    // More deliveries than the pool has connections, while the database hangs.
    proxy.stall();
    let hung = futures::future::join_all((10_000..10_016).map(post)).await;
    assert!(hung.iter().all(|s| *s == 503), "{hung:?}");
    proxy.fail_over();

    let mut n = 20_000;
    let started = Instant::now();
    eventually("webhooks to be accepted after the failover", Duration::from_secs(30), || {
        n += 1;
        let delivery = post(n);
        async move { (delivery.await == 200).then_some(()) }
    })
    .await;
    println!("accepted again {:?} after the failover", started.elapsed());
    drop(api);
}

/// Connections killed under the service (a failover, a pooler restart, an idle-session
/// timeout) while the database itself stays up: every accepted event's run still ends. A step
/// job whose claim failed this way used to fail in apalis for good, leaving its run pending
/// with no job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_under_the_workers_strand_no_run() {
    if !postgres_or_skip() {
        return;
    }
    let app = Arc::new(
        TestApp::spawn_with(|s| {
            s.insert("STEP_LEASE_SECONDS", "2".into());
        })
        .await,
    );
    // A backlog first, so the workers are busy claiming when their connections are killed.
    let senders = (0..8).map(|sender| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in (sender..400).step_by(8) {
                let body = json!({"id": format!("terminated-{n}"), "type": "page.updated",
                                  "entity": {"id": format!("0d7a9e00-0000-4000-a000-{n:012x}"), "type": "page"}})
                .to_string();
                let response = app.post_signed(body.as_bytes()).await;
                assert_eq!(response.status(), 200);
                let ack: serde_json::Value = response.json().await.expect("ack");
                accepted.push(ack["event_id"].as_str().expect("event_id").parse::<Uuid>().expect("uuid"));
            }
            accepted
        })
    });
    let mut accepted = Vec::new();
    for sender in futures::future::join_all(senders).await {
        accepted.extend(sender.expect("sender"));
    }
    let succeeded = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from workflow_runs where state = 'succeeded' and event_id = any($1)",
        )
        .bind(&accepted)
        .fetch_one(app.db.pg())
        .await
        .expect("runs") as usize
    };

    // Kill the service's busy connections every few milliseconds while the workers drain it.
    let started = Instant::now();
    let mut killed = 0;
    while started.elapsed() < Duration::from_secs(20) && succeeded().await < accepted.len() {
        killed += sqlx::query_scalar::<_, i64>(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where application_name = 'cognie-sync' and datname = current_database() and state <> 'idle') t",
        )
        .fetch_one(app.db.pg())
        .await
        .expect("terminate");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(killed > 0, "no connection was killed");

    eventually("every event run to succeed", Duration::from_secs(120), || async {
        (succeeded().await == accepted.len()).then_some(())
    })
    .await;
    // A step job is never failed for the database's sake (apalis would never run it again).
    let failed_jobs: i64 = sqlx::query_scalar("select count(*) from apalis.jobs where status = 'Failed'")
        .fetch_one(app.db.pg())
        .await
        .expect("jobs");
    assert_eq!(failed_jobs, 0, "step jobs failed in apalis ({killed} connections killed)");
}

/// A worker that hangs or is cut off inside a step's transaction must not keep its run's row
/// locked until the server notices the dead client (the lease sweeper skips locked runs, so
/// nothing would take the run over): the service's sessions are ended by PostgreSQL once idle
/// in a transaction for longer than any step may run, plus a lease.
#[tokio::test]
async fn a_session_left_idle_in_a_transaction_is_ended_after_the_longest_step_and_a_lease() {
    if !postgres_or_skip() {
        return;
    }
    let database = TestDb::create_postgres().await;
    let data_dir = TempDir::new();
    let mut settings = base_settings(&database.url, data_dir.path());
    settings.insert("STEP_LEASE_SECONDS", "7".into());
    let config =
        cognie_sync::Config::from_lookup(|name| settings.get(name).cloned()).expect("valid settings");
    let app = cognie_sync::App::build(config, cognie_sync::Role::Worker).await.expect("app starts");
    let pool = app.store().pg_pool().expect("a PostgreSQL store");
    let timeout: String = sqlx::query_scalar("show idle_in_transaction_session_timeout")
        .fetch_one(pool)
        .await
        .expect("read the setting");
    // The built-in workflow file's longest step timeout is 120 s (fetch, generate).
    assert_eq!(timeout, "127s");
}

/// Which database errors mean "try later" (503, the step retried in place) is read from each
/// backend's own codes: a PostgreSQL error whose SQLSTATE looks like a SQLite busy code (42501,
/// a missing privilege: an operator's mistake to report, not an outage to wait out) is not
/// one, and SQLite failing to open its file (the volume gone) is.
#[tokio::test]
async fn database_errors_are_classified_by_their_own_backends_codes() {
    use cognie_sync::store::StoreError;

    let missing = format!("{}/gone/cognie.db", TempDir::new().path());
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&missing).create_if_missing(true);
    let cannot_open = sqlx::SqlitePool::connect_with(options).await.expect_err("no such directory");
    assert!(StoreError::from(cannot_open).is_unavailable(), "SQLITE_CANTOPEN is an outage");

    if !postgres_or_skip() {
        return;
    }
    let database = TestDb::create_postgres().await;
    let denied =
        sqlx::query("do $$ begin raise exception 'permission denied' using errcode = '42501'; end $$")
            .execute(database.connect().await.pg())
            .await
            .expect_err("raised");
    let denied = StoreError::from(denied);
    assert!(matches!(denied, StoreError::Database(_)), "insufficient_privilege is no outage: {denied:?}");
}
