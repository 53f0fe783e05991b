//! The real binary, as ops run it: several processes on one database, signals, crashes.

use std::{collections::HashMap, time::Duration};

use serde_json::json;
use sqlx::PgPool;

use crate::support::{
    app::{TempDir, base_settings},
    db::TestDb,
    eventually, fixtures,
    process::ServiceProcess,
};

const PAGE: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";

/// Settings for processes sharing `db`, and a pool for assertions.
async fn shared_setup(db: &TestDb, data_dir: &TempDir) -> (HashMap<&'static str, String>, PgPool) {
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
    let pool = PgPool::connect(&db.url).await.expect("connect");
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
    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let (mut settings, pool) = shared_setup(&db, &data_dir).await;
    settings.insert("DEBOUNCE_SECONDS", "0".into());
    let user: uuid::Uuid =
        sqlx::query_scalar("insert into users (id, email) values ($1, 'w@example.com') returning id")
            .bind(uuid::Uuid::now_v7())
            .fetch_one(&pool)
            .await
            .expect("user");
    sqlx::query("insert into subscriptions (id, user_id, notion_id, kind) values ($1, $2, $3, 'page')")
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(PAGE)
        .execute(&pool)
        .await
        .expect("subscription");

    let api = ServiceProcess::start("api", &settings);
    let worker_a = ServiceProcess::start("worker", &settings);
    let worker_b = ServiceProcess::start("worker", &settings);

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
        .fetch_one(&pool)
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
    .fetch_one(&pool)
    .await
    .expect("attempts");
    assert_eq!(doubled, 0, "a step succeeded twice");
    let workers: Vec<(String, i64)> = sqlx::query_as(
        "select worker, count(*) from workflow_step_attempts where step = 'discover_users' group by worker",
    )
    .fetch_all(&pool)
    .await
    .expect("workers");
    assert!(workers.iter().all(|(w, _)| w.starts_with("cognie-sync-")), "{workers:?}");
    let claims: i64 = workers.iter().map(|(_, n)| n).sum();
    assert_eq!(claims, events, "one claim per event run: {workers:?}");
    drop((api, worker_a, worker_b));
}
