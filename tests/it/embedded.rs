//! The embedded default, as a newcomer meets it: the binary with no `DATABASE_URL` stores
//! everything in `./data` (SQLite), creates its secrets there, and refuses what one SQLite
//! file cannot serve.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::support::{app::TempDir, eventually, fixtures, process::ServiceProcess};

const PAGE_EVENT: &[u8] =
    br#"{"id":"evt-embedded-1","type":"page.content_updated","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"page"}}"#;

/// The settings a developer might have: a webhook secret and a free port; nothing else.
fn newcomer_settings() -> HashMap<&'static str, String> {
    HashMap::from([
        ("NOTION_WEBHOOK_SECRET", fixtures::secret()),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("WORKER_POLL_INTERVAL_MS", "50".to_owned()),
    ])
}

/// Runs `cognie-sync <role>` in `dir` and waits (at most 60 s) for it to exit: whether it
/// succeeded, and its output.
fn run_to_exit(role: &str, settings: &HashMap<&'static str, String>, dir: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cognie-sync"))
        .arg(role)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cognie-sync");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let output = child.wait_with_output().expect("output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (status.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cognie-sync {role} was expected to exit, but it kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends [`PAGE_EVENT`], signed with the newcomer's secret, to the service's webhook.
async fn post_page_event(client: &reqwest::Client, service: &ServiceProcess) -> reqwest::Response {
    let signature = cognie_sync::webhook::signature::sign(fixtures::secret().as_bytes(), PAGE_EVENT);
    client
        .post(service.url("/api/notion/webhook/notion"))
        .header("content-type", "application/json")
        .header("X-Notion-Signature", signature)
        .body(PAGE_EVENT.to_vec())
        .send()
        .await
        .expect("webhook")
}

/// `GET /api/workflows?{query}` with the API token.
async fn list_runs(
    client: &reqwest::Client,
    service: &ServiceProcess,
    token: &str,
    query: &str,
) -> serde_json::Value {
    client
        .get(service.url(&format!("/api/workflows?{query}")))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn with_no_database_url_everything_lives_in_a_sqlite_file_under_data() {
    let home = TempDir::new();
    let dir = Path::new(home.path());
    let settings = newcomer_settings();
    let service = ServiceProcess::start_in("serve", &settings, Some(dir));

    let data = dir.join("data");
    assert!(data.join("cognie-sync.db").is_file(), "the database file is in ./data");
    for file in ["cognie-sync.db", "cognie-sync.db-wal"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file} is owner-only");
    }
    assert_eq!(mode(&data.join("api_token")), 0o600, "the API token is owner-only");
    assert_eq!(mode(&data.join("token_encryption_key")), 0o600, "the encryption key is owner-only");
    assert!(service.log_contains("SQLite"), "the log says where the data is");
    let token = std::fs::read_to_string(data.join("api_token")).expect("token file");
    assert!(!service.log_contains(token.trim()), "the token itself is never logged");

    let client = reqwest::Client::new();
    let ready = client.get(service.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let ack = post_page_event(&client, &service).await;
    assert_eq!(ack.status(), 200);
    let ack: serde_json::Value = ack.json().await.expect("json");
    assert_eq!(ack["status"], "accepted");

    // The event's workflow runs in the same process, and ops can see it with the token.
    let run = eventually("the event workflow to succeed", Duration::from_secs(20), || async {
        let list = list_runs(&client, &service, &token, "workflow=notion_event").await;
        list["items"]
            .as_array()
            .and_then(|items| items.first())
            .filter(|r| r["state"] == "succeeded")
            .cloned()
    })
    .await;
    assert_eq!(run["trigger"], json!("webhook"));

    // A second process on the same file is refused, clearly.
    let (ok, output) = run_to_exit("serve", &settings, dir);
    assert!(!ok, "a second process on the same SQLite file must not start: {output}");
    assert!(output.contains("another cognie-sync process"), "{output}");

    // Everything survives a kill -9 and a restart.
    service.kill9();
    let again = ServiceProcess::start_in("serve", &settings, Some(dir));
    let list = list_runs(&client, &again, &token, "").await;
    assert!(
        list["items"].as_array().is_some_and(|items| items.iter().any(|r| r["id"] == run["id"])),
        "the run is still there after a restart: {list}"
    );
}

#[tokio::test]
async fn roles_that_need_several_processes_are_refused_on_sqlite() {
    let home = TempDir::new();
    let dir = Path::new(home.path());
    for role in ["api", "worker"] {
        let (ok, output) = run_to_exit(role, &newcomer_settings(), dir);
        assert!(!ok, "`{role}` must not start on SQLite: {output}");
        assert!(output.contains("PostgreSQL"), "the refusal says what to use instead: {output}");
    }
}

/// `cognie-sync migrate` on a fresh machine with the embedded default: the data directory does
/// not exist yet. SQLite creates a missing file but not its directory; before, `migrate` retried
/// "database not ready" for a minute and failed (only `serve` made the directory).
#[tokio::test]
async fn migrate_on_a_fresh_machine_creates_the_data_directory_and_the_database() {
    let home = TempDir::new();
    let dir = Path::new(home.path());
    let mut settings = newcomer_settings();
    settings.insert("DATA_DIR", "fresh/data".to_owned());
    let started = Instant::now();
    let (ok, output) = run_to_exit("migrate", &settings, dir);
    assert!(ok, "migrate failed: {output}");
    assert!(started.elapsed() < Duration::from_secs(30), "migrate took {:?}: {output}", started.elapsed());
    assert!(dir.join("fresh/data/cognie-sync.db").is_file(), "{output}");
    // Users' emails and notes: their owner's only.
    assert_eq!(mode(&dir.join("fresh/data")), 0o700, "the data directory made");
    assert_eq!(mode(&dir.join("fresh")), 0o700, "and its parent made with it");
    for file in ["cognie-sync.db", "cognie-sync.db-wal", "cognie-sync.db-shm"] {
        let path = dir.join("fresh/data").join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
}

/// A write lock held past the store's 5 s busy timeout (another connection's here; in
/// production a large database's persist, or a checkpoint on a slow disk) makes the service's
/// own writes wait, fail and be tried again, but must not end apalis's step worker: apalis
/// drops the steps it has in flight when its worker ends (each then waits for its lease to
/// expire, and loses its attempt). Before, apalis's fetch or heartbeat on the shared 5 s
/// connections failed with "database is locked" and the worker was restarted.
#[tokio::test]
async fn a_write_lock_held_past_the_busy_timeout_does_not_stop_the_step_worker() {
    use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
    let home = TempDir::new();
    let dir = Path::new(home.path());
    let service = ServiceProcess::start_in("serve", &newcomer_settings(), Some(dir));
    let mut locker = SqliteConnectOptions::new()
        .filename(dir.join("data/cognie-sync.db"))
        .connect()
        .await
        .expect("a connection of our own");
    sqlx::query("begin immediate").execute(&mut locker).await.expect("take the write lock");
    // The stimulus, not a wait for a result: long enough for apalis's heartbeat (every 5 s)
    // and its polls (every 50 ms) to meet the lock and outwait the 5 s busy timeout.
    tokio::time::sleep(Duration::from_secs(12)).await;
    sqlx::query("commit").execute(&mut locker).await.expect("release it");

    // The worker lived through it and still runs events.
    let client = reqwest::Client::new();
    let ack = post_page_event(&client, &service).await;
    assert_eq!(ack.status(), 200);
    let token = std::fs::read_to_string(dir.join("data/api_token")).expect("token file");
    eventually("the event workflow to succeed", Duration::from_secs(20), || async {
        let list = list_runs(&client, &service, &token, "workflow=notion_event&state=succeeded").await;
        list["items"].as_array().is_some_and(|items| !items.is_empty()).then_some(())
    })
    .await;
    assert!(!service.log_contains("step worker stopped"), "the worker was not restarted");
}
