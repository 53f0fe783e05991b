//! The real app on a random local port, against a fresh database.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use cognie_sync::{App, Config, Role, crypto::SecretCipher, webhook::signature};
use secrecy::ExposeSecret;
use tokio::{sync::oneshot, task::JoinHandle};

use super::{
    db::{Db, TestDb},
    fixtures,
};
use crate::on_db;

pub const API_TOKEN: &str = "test-api-token";

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where the ops endpoints alone listen, when `OPS_BIND_ADDR` is set.
    pub ops_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// A pool on the test's database, for assertions.
    pub db: Db,
    pub secret: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _data_dir: TempDir,
    _database: TestDb,
}

/// The settings every test starts from: small timings so tests run in seconds.
pub fn base_settings(database_url: &str, data_dir: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("DATABASE_URL", database_url.to_owned()),
        ("TOKEN_ENCRYPTION_KEY", SecretCipher::generate_base64_key().expose_secret().to_owned()),
        ("API_TOKEN", API_TOKEN.to_owned()),
        ("NOTION_WEBHOOK_SECRET", fixtures::secret()),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("DATA_DIR", data_dir.to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "1000".to_owned()),
        ("WORKER_POLL_INTERVAL_MS", "50".to_owned()),
        ("RETRY_BASE_DELAY_MS", "50".to_owned()),
        ("RETRY_MAX_DELAY_MS", "500".to_owned()),
        ("DEBOUNCE_SECONDS", "0.2".to_owned()),
        ("DEBOUNCE_MAX_WAIT_SECONDS", "2".to_owned()),
        ("SHUTDOWN_TIMEOUT_SECONDS", "5".to_owned()),
    ])
}

impl TestApp {
    /// The app with the default test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The app with settings changed by `adjust` (by variable name, as an operator would).
    pub async fn spawn_with(adjust: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        let database = TestDb::create().await;
        Self::spawn_on(database, None, adjust).await
    }

    /// The app on `database`, connecting through `via` (e.g. a cuttable proxy) if given.
    pub async fn spawn_on(
        database: TestDb,
        via: Option<SocketAddr>,
        adjust: impl FnOnce(&mut HashMap<&'static str, String>),
    ) -> Self {
        let data_dir = TempDir::new();
        let app_url = match via {
            Some(addr) => database.url.replacen("127.0.0.1:5432", &addr.to_string(), 1),
            None => database.url.clone(),
        };
        let mut settings = base_settings(&app_url, data_dir.path());
        adjust(&mut settings);
        let secret = settings.get("NOTION_WEBHOOK_SECRET").cloned();
        let config =
            Config::from_lookup(|name| settings.get(name).cloned()).expect("test configuration is valid");

        let app = App::build(config, Role::Serve).await.expect("app starts");
        let addr = app.local_addr().expect("app listens");
        let ops_addr = app.ops_local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let db = database.connect().await;
        Self {
            addr,
            ops_addr,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            db,
            secret,
            stop: Some(stop),
            task: Some(task),
            _data_dir: data_dir,
            _database: database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `X-Notion-Signature` for `body` under the app's webhook secret.
    pub fn sign(&self, body: &[u8]) -> String {
        signature::sign(self.secret.as_deref().expect("the app has a webhook secret").as_bytes(), body)
    }

    /// POSTs a webhook body as is, with the given signature header (if any).
    pub async fn post_webhook(
        &self,
        body: impl Into<reqwest::Body>,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/api/notion/webhook/notion"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            request = request.header("X-Notion-Signature", sig);
        }
        request.send().await.expect("webhook request")
    }

    /// POSTs a body signed with the app's secret.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        let sig = self.sign(body);
        self.post_webhook(body.to_vec(), Some(&sig)).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_authorized(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(API_TOKEN).send().await.expect("GET")
    }

    /// A user with a Notion token, straight into the database (the users API is tested on its own).
    pub async fn insert_user(&self, email: &str) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        on_db!(self.db, |pool| sqlx::query("insert into users (id, email) values ($1, $2)")
            .bind(id)
            .bind(email)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .expect("insert user");
        id
    }

    pub async fn insert_subscription(&self, user: uuid::Uuid, notion_id: &str, kind: &str) {
        on_db!(self.db, |pool| sqlx::query(
            "insert into subscriptions (id, user_id, notion_id, kind) values ($1, $2, $3, $4)"
        )
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(notion_id)
        .bind(kind)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .expect("insert subscription");
    }

    /// Gives the user a Notion token through the API (`PUT /api/users/{id}/notion-token`).
    pub async fn put_notion_token(&self, user: &str, token: &str) {
        let response = self
            .client
            .put(self.url(&format!("/api/users/{user}/notion-token")))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({"token": token}))
            .send()
            .await
            .expect("PUT notion-token");
        assert_eq!(response.status(), 204, "PUT notion-token");
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        on_db!(self.db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await.expect("count query"))
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the app stops within its shutdown timeout")
                .expect("app task")
                .expect("app exits cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts the status and returns the JSON body, saying what was expected on failure.
pub async fn expect_json(response: reqwest::Response, status: u16) -> serde_json::Value {
    let actual = response.status().as_u16();
    let text = response.text().await.expect("response body");
    assert_eq!(actual, status, "expected HTTP {status}, got {actual} with body {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("expected a JSON body, got {text:?}: {e}"))
}

/// Asserts an error response: the status and our `{"code","message"}` body.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let body = expect_json(response, status).await;
    assert_eq!(body["code"], code, "unexpected error body {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "error without message: {body}");
    body
}

/// A temporary directory removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("cognie-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The built-in workflow file with one step's policy changed (`policy` as it reads there,
/// replaced by `with`), written in `dir`: its path, for `WORKFLOW_FILE`.
pub fn workflow_file_with(dir: &TempDir, policy: &str, with: &str) -> String {
    let builtin = include_str!("../../../workflows/notion_sync.toml");
    let changed = builtin.replacen(policy, with, 1);
    assert_ne!(changed, builtin, "the policy is where the test expects it: {policy:?}");
    let file = format!("{}/workflow.toml", dir.path());
    std::fs::write(&file, changed).expect("workflow file");
    file
}
