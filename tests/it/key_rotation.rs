//! Rotating `TOKEN_ENCRYPTION_KEY`: with the old key as `TOKEN_ENCRYPTION_KEY_PREVIOUS`, start-up
//! moves every stored secret to the new key, and afterwards the new key alone reads them all.

use std::{collections::HashMap, time::Duration};

use cognie_sync::{
    App, Config, Role,
    app::connect_and_migrate,
    crypto::SecretCipher,
    secrets::{Reencrypted, reencrypt_stored_secrets},
    webhook::intake::VERIFICATION_TOKEN_AAD,
};
use secrecy::{ExposeSecret, SecretString};

use crate::support::{
    app::{API_TOKEN, TempDir, base_settings, expect_json},
    db::{Db, TestDb},
};
use crate::{conformance, on_db};

fn config(settings: &HashMap<&'static str, String>) -> Config {
    Config::from_lookup(|name| settings.get(name).cloned()).expect("valid settings")
}

/// An app serving HTTP until stopped.
struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn start(app: App) -> Self {
        let addr = app.local_addr().expect("listens");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("stops")
            .expect("task")
            .expect("clean exit");
    }
}

fn key_text(key: &SecretString) -> String {
    key.expose_secret().to_owned()
}

/// A migrated database with a user whose Notion token is stored under `key`, and settings
/// that name that key; the database and the data directory live as long as the returned values.
async fn token_stored_under(
    key: &SecretString,
) -> (TestDb, TempDir, HashMap<&'static str, String>, Db, uuid::Uuid) {
    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let mut settings = base_settings(&db.url, data_dir.path());
    settings.insert("TOKEN_ENCRYPTION_KEY", key_text(key));
    connect_and_migrate(&config(&settings), None).await.expect("migrate");
    let pool = db.connect().await;
    let cipher = SecretCipher::from_base64_key(key).expect("key");
    let user = uuid::Uuid::now_v7();
    on_db!(pool, |p| sqlx::query(
        "insert into users (id, email, notion_token_ciphertext) values ($1, 'maya@example.com', $2)"
    )
    .bind(user)
    .bind(cipher.encrypt("ntn_user_token", &user.to_string()))
    .execute(p)
    .await
    .map(|done| done.rows_affected()))
    .expect("insert user");
    (db, data_dir, settings, pool, user)
}

// `serve`: the role every backend runs (SQLite refuses `api`, a role for several processes).
conformance! {
async fn a_key_rotation_re_encrypts_every_stored_secret_under_the_new_key() {
    let (old_key, new_key) = (SecretCipher::generate_base64_key(), SecretCipher::generate_base64_key());
    // Secrets as the service stored them under the old key: a user's Notion token (and its
    // refresh token) and the webhook verification token.
    let (_db, _data_dir, mut settings, pool, user) = token_stored_under(&old_key).await;
    let old = SecretCipher::from_base64_key(&old_key).expect("old key");
    let verification_token = old.encrypt("secret_verification", VERIFICATION_TOKEN_AAD);
    on_db!(pool, |p| sqlx::query(
        "insert into webhook_verification_tokens (token_ciphertext, token_sha256) values ($1, 'sha')",
    )
    .bind(&verification_token)
    .execute(p)
    .await
    .map(|done| done.rows_affected()))
    .expect("insert verification token");
    // And the refresh token OAuth stored with the user's token.
    on_db!(pool, |p| sqlx::query("update users set notion_refresh_token_ciphertext = $2 where id = $1")
        .bind(user)
        .bind(old.encrypt("nrt_user_refresh", &format!("{user}:refresh")))
        .execute(p)
        .await
        .map(|done| done.rows_affected()))
    .expect("store refresh token");

    // Start-up with the new key and the old one as previous moves both.
    settings.insert("TOKEN_ENCRYPTION_KEY", key_text(&new_key));
    settings.insert("TOKEN_ENCRYPTION_KEY_PREVIOUS", key_text(&old_key));
    let rotating = App::build(config(&settings), Role::Serve).await.expect("starts during a rotation");
    let new_only = SecretCipher::from_base64_key(&new_key).expect("new key");
    let token: Vec<u8> = on_db!(pool, |p| sqlx::query_scalar(
        "select notion_token_ciphertext from users where id = $1"
    )
    .bind(user)
    .fetch_one(p)
    .await)
    .expect("user token");
    assert_eq!(
        new_only.decrypt(&token, &user.to_string()).expect("under the new key").expose_secret(),
        "ntn_user_token"
    );
    let refresh: Vec<u8> = on_db!(pool, |p| sqlx::query_scalar(
        "select notion_refresh_token_ciphertext from users where id = $1"
    )
    .bind(user)
    .fetch_one(p)
    .await)
    .expect("refresh token");
    assert_eq!(
        new_only.decrypt(&refresh, &format!("{user}:refresh")).expect("under the new key").expose_secret(),
        "nrt_user_refresh"
    );
    let verification: Vec<u8> = on_db!(pool, |p| sqlx::query_scalar(
        "select token_ciphertext from webhook_verification_tokens"
    )
    .fetch_one(p)
    .await)
    .expect("verification token");
    assert_eq!(
        new_only.decrypt(&verification, VERIFICATION_TOKEN_AAD).expect("under the new key").expose_secret(),
        "secret_verification"
    );
    // Another instance starting during the rotation finds nothing left to move.
    let rotating_cipher = new_only.clone().with_previous_key(&old_key).expect("keys");
    let again = reencrypt_stored_secrets(rotating.store(), &rotating_cipher).await.expect("re-encrypt");
    assert_eq!(again, Reencrypted { moved: 0, current: 3, unreadable: 0 });
    drop(rotating);

    // The rotation is done: without the previous key the service reads them through its API.
    settings.remove("TOKEN_ENCRYPTION_KEY_PREVIOUS");
    let app = App::build(config(&settings), Role::Serve).await.expect("starts with the new key only");
    let running = Running::start(app);
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/notion/webhook/verification-token", running.addr))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET verification token");
    assert_eq!(expect_json(response, 200).await["verification_token"], "secret_verification");
    running.stop().await;
}
}

conformance! {
/// A key changed without `TOKEN_ENCRYPTION_KEY_PREVIOUS` (or set for the first time where the
/// embedded default's key file stored the secrets) is refused at start-up. Before, the service
/// started cleanly and every sync then failed `notion_token_undecryptable`.
async fn a_key_that_opens_none_of_the_stored_secrets_is_refused_at_start_up() {
    let (old_key, new_key) = (SecretCipher::generate_base64_key(), SecretCipher::generate_base64_key());
    let (_db, _data_dir, mut settings, _pool, _user) = token_stored_under(&old_key).await;

    settings.insert("TOKEN_ENCRYPTION_KEY", key_text(&new_key));
    let refused = App::build(config(&settings), Role::Serve).await.err().expect("a key that is not theirs");
    let message = format!("{refused:#}");
    assert!(message.contains("TOKEN_ENCRYPTION_KEY_PREVIOUS"), "the refusal says what to do: {message}");

    settings.insert("TOKEN_ENCRYPTION_KEY", key_text(&old_key));
    drop(App::build(config(&settings), Role::Serve).await.expect("the key they were stored under starts"));
}
}

conformance! {
/// A rotation whose keys are both wrong (the old one read from the wrong `DATA_DIR`, say) is
/// refused at start-up, as a wrong key without a rotation is. Before, it started, logged each
/// secret as unreadable, and every sync then failed `notion_token_undecryptable`.
async fn a_rotation_where_neither_key_opens_the_stored_secrets_is_refused_at_start_up() {
    let stored_under = SecretCipher::generate_base64_key();
    let (new_key, wrong_previous) = (SecretCipher::generate_base64_key(), SecretCipher::generate_base64_key());
    let (_db, _data_dir, mut settings, _pool, _user) = token_stored_under(&stored_under).await;

    settings.insert("TOKEN_ENCRYPTION_KEY", key_text(&new_key));
    settings.insert("TOKEN_ENCRYPTION_KEY_PREVIOUS", key_text(&wrong_previous));
    let refused = App::build(config(&settings), Role::Serve).await.err().expect("keys that are not theirs");
    let message = format!("{refused:#}");
    assert!(message.contains("neither TOKEN_ENCRYPTION_KEY nor TOKEN_ENCRYPTION_KEY_PREVIOUS"), "{message}");

    settings.insert("TOKEN_ENCRYPTION_KEY_PREVIOUS", key_text(&stored_under));
    drop(App::build(config(&settings), Role::Serve).await.expect("a rotation from the key they were stored under starts"));
}
}

/// PostgreSQL without `API_TOKEN`: the first instance to start creates the management API
/// token in the database (encrypted), every instance accepts that one token and copies it
/// into its own `DATA_DIR/api_token` for ops to read (a stale copy is replaced), and a key
/// rotation carries it over. Before, start-up refused PostgreSQL without `API_TOKEN`.
#[tokio::test]
async fn without_api_token_every_instance_on_one_postgres_shares_the_token_in_its_data_dir() {
    if !crate::support::db::postgres_or_skip() {
        return;
    }
    let db = TestDb::create_postgres().await;
    let (old_key, new_key) = (SecretCipher::generate_base64_key(), SecretCipher::generate_base64_key());
    let dirs = [TempDir::new(), TempDir::new(), TempDir::new()];
    let file = |dir: &TempDir| std::path::Path::new(dir.path()).join("api_token");
    std::fs::write(file(&dirs[1]), "a-token-from-an-earlier-database").expect("stale copy");
    let settings = |dir: &TempDir, key: &SecretString| {
        let mut settings = base_settings(&db.url, dir.path());
        settings.remove("API_TOKEN");
        settings.insert("TOKEN_ENCRYPTION_KEY", key_text(key));
        settings
    };

    // A user's Notion token stored under the old key: what a wrong key is judged by.
    connect_and_migrate(&config(&settings(&dirs[0], &old_key)), None).await.expect("migrate");
    let pool = db.connect().await;
    let user = uuid::Uuid::now_v7();
    let old = SecretCipher::from_base64_key(&old_key).expect("old key");
    sqlx::query("insert into users (id, email, notion_token_ciphertext) values ($1, 'maya@example.com', $2)")
        .bind(user)
        .bind(old.encrypt("ntn_user_token", &user.to_string()))
        .execute(pool.pg())
        .await
        .expect("insert user");
    let shared_rows = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from service_secrets")
            .fetch_one(pool.pg())
            .await
            .expect("count")
    };

    // A wrong key is refused before anything is stored under it (the token it would store
    // must not be what makes the key look right).
    let wrong_key = SecretCipher::generate_base64_key();
    let refused =
        App::build(config(&settings(&dirs[0], &wrong_key)), Role::Api).await.err().expect("a wrong key");
    assert!(format!("{refused:#}").contains("TOKEN_ENCRYPTION_KEY_PREVIOUS"), "{refused:#}");
    assert_eq!(shared_rows().await, 0, "nothing stored under the wrong key");

    let first =
        App::build(config(&settings(&dirs[0], &old_key)), Role::Api).await.expect("starts without API_TOKEN");
    let second =
        App::build(config(&settings(&dirs[1], &old_key)), Role::Api).await.expect("a second instance");
    let token = std::fs::read_to_string(file(&dirs[0])).expect("the token is in the first data dir");
    assert!(token.len() >= 32, "a real token: {} characters", token.len());
    assert_eq!(
        std::fs::read_to_string(file(&dirs[1])).expect("second copy"),
        token,
        "one token, the stale copy replaced"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file(&dirs[1])).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by the service's user only");
    }
    for app in [first, second] {
        let running = Running::start(app);
        let stats = |bearer: String| {
            reqwest::Client::new()
                .get(format!("http://{}/api/queue/stats", running.addr))
                .bearer_auth(bearer)
                .send()
        };
        expect_json(stats(token.clone()).await.expect("GET with the shared token"), 200).await;
        let refused = stats(API_TOKEN.to_owned()).await.expect("GET with another token");
        assert_eq!(refused.status(), 401, "never an open API");
        running.stop().await;
    }

    // A key rotation moves the stored token to the new key: an instance with the new key alone
    // afterwards still has the same token.
    let mut rotating = settings(&dirs[2], &new_key);
    rotating.insert("TOKEN_ENCRYPTION_KEY_PREVIOUS", key_text(&old_key));
    drop(App::build(config(&rotating), Role::Api).await.expect("starts during a rotation"));
    assert_eq!(std::fs::read_to_string(file(&dirs[2])).expect("third copy"), token);
    std::fs::remove_file(file(&dirs[2])).expect("remove the copy");
    // A worker serves no management API: it leaves no copy of the token on its machine.
    drop(App::build(config(&settings(&dirs[2], &new_key)), Role::Worker).await.expect("a worker starts"));
    assert!(!file(&dirs[2]).exists(), "no copy on a worker's machine");
    drop(
        App::build(config(&settings(&dirs[2], &new_key)), Role::Api)
            .await
            .expect("starts with the new key only"),
    );
    assert_eq!(
        std::fs::read_to_string(file(&dirs[2])).expect("copied again"),
        token,
        "the same token, under the new key"
    );

    // A damaged row (or one stored under a key since lost) among secrets the key opens: start-up
    // names the row and the ways out.
    let lost = SecretCipher::from_base64_key(&SecretCipher::generate_base64_key()).expect("key");
    sqlx::query("update service_secrets set ciphertext = $1 where name = 'api_token'")
        .bind(lost.encrypt("lost", "service-secret:api_token"))
        .execute(pool.pg())
        .await
        .expect("damage the row");
    let refused =
        App::build(config(&settings(&dirs[2], &new_key)), Role::Api).await.err().expect("unreadable");
    let message = format!("{refused:#}");
    assert!(message.contains("service_secrets") && message.contains("set API_TOKEN"), "{message}");
}
