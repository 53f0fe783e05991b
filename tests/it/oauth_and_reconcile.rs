//! OAuth "Connect Notion" against the fake Notion's token endpoint; reconciliation of edits no
//! webhook announced; and no Notion token in a database dump or in the service's logs.

use crate::{conformance, on_db};
use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, DurationRound, Utc};
use cognie_sync::crypto::SecretCipher;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    app::{API_TOKEN, TempDir, base_settings, expect_error, expect_json},
    db::{Backend, Db, TestDb},
    eventually,
    fake_notion::{FakeNotion, Fault, ids},
    fixtures,
    process::ServiceProcess,
    run_step,
};

const CLIENT_ID: &str = "4c9e2a7b-oauth-client-id";
const CLIENT_SECRET: &str = "secret_client_Xq7pV2mN9rT4wK8z";
const REDIRECT_URI: &str = "https://cognie.example.com/api/notion/auth/callback";
const TOKEN: &str = "ntn_reconcile_test_token";

// ----- OAuth -----

struct OAuthEnv {
    app: TestApp,
    notion: FakeNotion,
    key: String,
    /// Does not follow redirects, so the 302 itself can be read.
    browser: reqwest::Client,
}

async fn oauth_env(adjust: impl FnOnce(&mut HashMap<&'static str, String>)) -> OAuthEnv {
    let notion = FakeNotion::start().await;
    notion.set_oauth_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    let key = SecretCipher::generate_base64_key().expose_secret().to_owned();
    let (base, k) = (notion.base_url(), key.clone());
    let app = TestApp::spawn_with(|s| {
        s.insert("NOTION_API_BASE_URL", base);
        s.insert("NOTION_CLIENT_ID", CLIENT_ID.into());
        s.insert("NOTION_CLIENT_SECRET", CLIENT_SECRET.into());
        s.insert("NOTION_REDIRECT_URI", REDIRECT_URI.into());
        s.insert("TOKEN_ENCRYPTION_KEY", k);
        adjust(s);
    })
    .await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    OAuthEnv { app, notion, key, browser }
}

async fn create_user(app: &TestApp, email: &str) -> String {
    let response = app
        .client
        .post(app.url("/api/users"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"email": email}))
        .send()
        .await
        .expect("POST /api/users");
    expect_json(response, 201).await["id"].as_str().expect("id").to_owned()
}

impl OAuthEnv {
    async fn authorize(&self, query: &str) -> reqwest::Response {
        self.browser
            .get(self.app.url(&format!("/api/notion/auth{query}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET /api/notion/auth")
    }

    /// Starts the flow for `user`: the 302's Location, parsed.
    async fn start(&self, user: &str) -> (reqwest::Url, HashMap<String, String>) {
        let response = self.authorize(&format!("?user_id={user}")).await;
        assert_eq!(response.status(), 302, "expected a redirect to Notion");
        let location = response.headers()["location"].to_str().expect("ASCII Location").to_owned();
        let url = reqwest::Url::parse(&location).expect("Location is a URL");
        let params = url.query_pairs().into_owned().collect();
        (url, params)
    }

    async fn state_for(&self, user: &str) -> String {
        self.start(user).await.1["state"].clone()
    }

    /// What the user's browser does when Notion redirects it back.
    async fn callback(&self, query: &[(&str, &str)]) -> reqwest::Response {
        self.browser
            .get(self.app.url("/api/notion/auth/callback"))
            .query(query)
            .send()
            .await
            .expect("GET callback")
    }

    async fn stored_token(&self, user: &str) -> Option<Vec<u8>> {
        on_db!(self.app.db, |db| sqlx::query_scalar(
            "select notion_token_ciphertext from users where id = $1"
        )
        .bind(uuid::Uuid::parse_str(user).expect("uuid"))
        .fetch_one(db)
        .await)
        .expect("user row")
    }

    fn exchanges(&self) -> usize {
        self.notion.count("/v1/oauth/token")
    }
}

conformance! {
async fn connecting_notion_through_oauth_stores_the_token_encrypted_with_its_workspace() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;

    let (url, params) = env.start(&user).await;
    assert_eq!(url.origin(), reqwest::Url::parse(&env.notion.base_url()).expect("base").origin());
    assert_eq!(url.path(), "/v1/oauth/authorize");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["redirect_uri"], REDIRECT_URI);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["owner"], "user");
    assert!(params["state"].len() > 40, "a signed state: {params:?}");

    env.notion.add_oauth_code("code-from-notion-1");
    let response = env.callback(&[("code", "code-from-notion-1"), ("state", &params["state"])]).await;
    let body = expect_json(response, 200).await;
    assert_eq!(body, json!({"status": "connected", "user_id": user, "workspace_name": "Maya's Study Space"}));

    let shown = expect_json(env.app.get_authorized(&format!("/api/users/{user}")).await, 200).await;
    assert_eq!(shown["notion_connected"], true);
    let (workspace_id, workspace_name, bot_id): (Option<String>, Option<String>, Option<String>) =
        on_db!(env.app.db, |db| sqlx::query_as(
            "select notion_workspace_id, notion_workspace_name, notion_bot_id from users where id = $1",
        )
        .bind(uuid::Uuid::parse_str(&user).expect("uuid"))
        .fetch_one(db)
        .await)
        .expect("user");
    assert_eq!(workspace_id.as_deref(), Some("5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f"));
    assert_eq!(workspace_name.as_deref(), Some("Maya's Study Space"));
    assert_eq!(bot_id.as_deref(), Some("1e7d2a9b-3c4f-81a5-b8c2-0027d4e9f6a1"));

    // Encrypted under the service key with the user bound: it decrypts to the token Notion
    // issued, only as this user's.
    let stored = env.stored_token(&user).await.expect("a token is stored");
    let cipher = SecretCipher::from_base64_key(&env.key.clone().into()).expect("key");
    let token = cipher.decrypt(&stored, &user).expect("decrypts as the user's");
    assert!(token.expose_secret().starts_with("ntn_fake"), "the token the fake issued");
    assert!(!String::from_utf8_lossy(&stored).contains(token.expose_secret()));
    assert!(cipher.decrypt(&stored, &uuid::Uuid::new_v4().to_string()).is_err());
    let exchange = env.notion.requests().into_iter().find(|r| r.path == "/v1/oauth/token").expect("exchange");
    assert_eq!(exchange.body.as_ref().expect("JSON body")["redirect_uri"], REDIRECT_URI);
}
}

conformance! {
async fn a_tampered_state_or_one_rewritten_for_another_user_is_refused() {
    let env = oauth_env(|_| {}).await;
    let maya = create_user(&env.app, "maya@example.com").await;
    let eve = create_user(&env.app, "eve@example.com").await;
    env.notion.add_oauth_code("code-1");
    let state = env.state_for(&maya).await;

    let (payload, signature) = state.rsplit_once('.').expect("signed");
    let flipped =
        format!("{payload}.{}{}", if signature.starts_with('A') { "B" } else { "A" }, &signature[1..]);
    let parts: Vec<&str> = state.split('.').collect();
    let eves_id = uuid::Uuid::parse_str(&eve).expect("uuid").simple().to_string();
    let for_eve = format!("{}.{eves_id}.{}.{}", parts[0], parts[2], parts[3]);
    for bad in [flipped.as_str(), for_eve.as_str(), "not-a-state", &format!("{state}x")] {
        let response = env.callback(&[("code", "code-1"), ("state", bad)]).await;
        expect_error(response, 400, "invalid_state").await;
    }
    assert_eq!(env.exchanges(), 0, "no code is exchanged on a bad state");
    assert_eq!(env.stored_token(&maya).await, None);
    assert_eq!(env.stored_token(&eve).await, None);

    // The genuine state still works (the failures did not use it up).
    expect_json(env.callback(&[("code", "code-1"), ("state", &state)]).await, 200).await;
    assert!(env.stored_token(&maya).await.is_some());
    assert_eq!(env.stored_token(&eve).await, None);
}
}

conformance! {
async fn an_expired_state_is_refused() {
    let env = oauth_env(|s| {
        s.insert("OAUTH_STATE_TTL_SECONDS", "1".into());
    })
    .await;
    let user = create_user(&env.app, "maya@example.com").await;
    env.notion.add_oauth_code("code-1");
    let state = env.state_for(&user).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    expect_error(env.callback(&[("code", "code-1"), ("state", &state)]).await, 400, "invalid_state").await;
    assert_eq!(env.exchanges(), 0);
    assert_eq!(env.stored_token(&user).await, None);
}
}

conformance! {
async fn a_state_works_once() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    env.notion.add_oauth_code("code-1");
    env.notion.add_oauth_code("code-2");
    let state = env.state_for(&user).await;
    expect_json(env.callback(&[("code", "code-1"), ("state", &state)]).await, 200).await;
    let stored = env.stored_token(&user).await;

    expect_error(env.callback(&[("code", "code-2"), ("state", &state)]).await, 400, "invalid_state").await;
    assert_eq!(env.exchanges(), 1, "a replayed state never reaches Notion");
    assert_eq!(env.stored_token(&user).await, stored, "the stored token is untouched");
}
}

conformance! {
async fn a_code_notion_refuses_is_a_400_invalid_grant_not_a_500() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    env.notion.add_oauth_code("code-1");
    let first = env.state_for(&user).await;
    expect_json(env.callback(&[("code", "code-1"), ("state", &first)]).await, 200).await;

    // The same code again, with a fresh state: Notion answers invalid_grant.
    let second = env.state_for(&user).await;
    expect_error(env.callback(&[("code", "code-1"), ("state", &second)]).await, 400, "invalid_grant").await;
    assert_eq!(env.exchanges(), 2);
}
}

conformance! {
async fn notion_failing_the_exchange_is_a_502() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    env.notion.add_oauth_code("code-1");
    env.notion.inject("/v1/oauth/token", Fault::Status(503));
    let state = env.state_for(&user).await;
    expect_error(env.callback(&[("code", "code-1"), ("state", &state)]).await, 502, "notion_unavailable")
        .await;
    assert_eq!(env.stored_token(&user).await, None);
}
}

conformance! {
async fn missing_parameters_and_unknown_users_are_client_errors() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    let state = env.state_for(&user).await;

    expect_error(env.callback(&[("state", &state)]).await, 400, "missing_parameter").await;
    expect_error(env.callback(&[("code", "c")]).await, 400, "missing_parameter").await;
    expect_error(env.callback(&[]).await, 400, "missing_parameter").await;
    expect_error(env.callback(&[("code", ""), ("state", &state)]).await, 400, "missing_parameter").await;
    expect_error(
        env.callback(&[("error", "access_denied"), ("state", &state)]).await,
        400,
        "authorization_denied",
    )
    .await;

    expect_error(env.authorize("").await, 400, "missing_parameter").await;
    expect_error(env.authorize("?user_id=not-a-uuid").await, 400, "bad_request").await;
    let unknown = uuid::Uuid::new_v4();
    expect_error(env.authorize(&format!("?user_id={unknown}")).await, 404, "user_not_found").await;
    let no_token = env.browser.get(env.app.url(&format!("/api/notion/auth?user_id={user}"))).send().await;
    expect_error(no_token.expect("GET"), 401, "unauthorized").await;
    assert_eq!(env.exchanges(), 0);
}
}

conformance! {
async fn without_oauth_settings_both_endpoints_answer_503_oauth_not_configured() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, "maya@example.com").await;
    let start = app.get_authorized(&format!("/api/notion/auth?user_id={user}")).await;
    expect_error(start, 503, "oauth_not_configured").await;
    let callback = app.get("/api/notion/auth/callback?code=c&state=s").await;
    expect_error(callback, 503, "oauth_not_configured").await;
}
}

// ----- expired OAuth tokens -----

impl OAuthEnv {
    /// Connects `user` through the whole OAuth flow; the (access, refresh) tokens Notion issued.
    async fn connect(&self, user: &str, code: &str) -> (String, String) {
        let state = self.state_for(user).await;
        self.notion.add_oauth_code(code);
        expect_json(self.callback(&[("code", code), ("state", &state)]).await, 200).await;
        let (access, refresh) = self.stored_pair(user).await;
        (access, refresh.expect("Notion issued a refresh token and it is stored"))
    }

    /// The user's stored token and refresh token, decrypted (each with its own associated data).
    async fn stored_pair(&self, user: &str) -> (String, Option<String>) {
        let (token, refresh): (Vec<u8>, Option<Vec<u8>>) = on_db!(self.app.db, |db| sqlx::query_as(
            "select notion_token_ciphertext, notion_refresh_token_ciphertext from users where id = $1"
        )
        .bind(uuid::Uuid::parse_str(user).expect("uuid"))
        .fetch_one(db)
        .await)
        .expect("user row");
        let cipher = SecretCipher::from_base64_key(&self.key.clone().into()).expect("key");
        let access = cipher.decrypt(&token, user).expect("the token opens as the user's");
        let refresh = refresh.map(|refresh| {
            assert!(
                cipher.decrypt(&refresh, user).is_err(),
                "a refresh token never opens as an access token"
            );
            let opened = cipher
                .decrypt(&refresh, &format!("{user}:refresh"))
                .expect("opens as the user's refresh token");
            opened.expose_secret().to_owned()
        });
        (access.expose_secret().to_owned(), refresh)
    }

    async fn subscribe(&self, user: &str, notion_id: &str) -> String {
        let response = self
            .app
            .client
            .post(self.app.url(&format!("/api/users/{user}/subscriptions")))
            .bearer_auth(API_TOKEN)
            .json(&json!({"notion_id": notion_id, "kind": "page"}))
            .send()
            .await
            .expect("subscribe");
        expect_json(response, 201).await["run_id"].as_str().expect("run id").to_owned()
    }

    /// The run once it has finished (succeeded or failed).
    async fn finished(&self, run_id: &str) -> Value {
        eventually(&format!("run {run_id} to finish"), Duration::from_secs(30), || async {
            let run =
                expect_json(self.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
            matches!(run["state"].as_str(), Some("succeeded" | "failed")).then_some(run)
        })
        .await
    }
}

const OLD_EDIT: &str = "2026-06-01T09:30:00.000Z";

conformance! {
async fn an_expired_oauth_token_is_refreshed_once_and_every_sync_goes_on() {
    let env = oauth_env(|s| {
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    })
    .await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (first_token, first_refresh) = env.connect(&user, "code-1").await;
    let pages: Vec<String> =
        (1..=4).map(|n| serve_page(&env.notion, n, "Notes", OLD_EDIT, &[&format!("Question {n}")])).collect();

    // Notion lets the access token expire. Its token endpoint answers slowly, so syncs meet
    // the refused token while the first of them is still refreshing it.
    env.notion.revoke_token(&first_token);
    env.notion.inject("/v1/oauth/token", Fault::Delay(Duration::from_millis(1500)));
    let mut runs = Vec::new();
    for page in &pages {
        runs.push(env.subscribe(&user, page).await);
    }
    for run in &runs {
        let run = env.finished(run).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }
    assert_eq!(env.notion.refreshes(), 1, "one refresh, however many syncs met the expired token");
    let refused = env.notion.requests_for_token(&first_token).iter().filter(|r| r.status == 401).count();
    assert!(refused >= 2, "syncs met the expired token while it was being refreshed: {refused} 401s");

    // The new pair is stored (the refresh token rotated), and Notion accepts the new token.
    let (token, refresh) = env.stored_pair(&user).await;
    assert_ne!(token, first_token);
    let refresh = refresh.expect("the rotated refresh token is stored");
    assert_ne!(refresh, first_refresh);
    let with_new = env.notion.requests_for_token(&token);
    assert!(!with_new.is_empty() && with_new.iter().all(|r| r.status == 200), "{with_new:?}");
    let cards = env.app.count("select count(*) from flashcards where retired_at is null").await;
    assert_eq!(cards, 4, "every page's card");
}
}

/// Notion rotates the refresh token when it answers a refresh, so once it has answered, the
/// new pair is the only one that works: losing the database session that holds the refresh
/// lock (a restart, a failover) while Notion answers must not lose the pair.
#[tokio::test]
async fn a_refreshed_pair_is_stored_after_the_refresh_lock_session_dies() {
    crate::support::db::run_on(Backend::Postgres, async {
        let env = oauth_env(|s| {
            s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
        })
        .await;
        let user = create_user(&env.app, "maya@example.com").await;
        let (first_token, first_refresh) = env.connect(&user, "code-1").await;
        let page = serve_page(&env.notion, 1, "Notes", OLD_EDIT, &["Question"]);
        env.notion.revoke_token(&first_token);
        env.notion.inject("/v1/oauth/token", Fault::Delay(Duration::from_millis(1500)));
        let run = env.subscribe(&user, &page).await;

        // While Notion prepares its answer, the session holding the user's refresh lock dies.
        eventually("the refresh to reach Notion", Duration::from_secs(20), || async {
            env.notion.requests().iter().any(|r| r.path == "/v1/oauth/token" && r.status == 0).then_some(())
        })
        .await;
        let killed: i64 = sqlx::query_scalar(
            "select count(*) from (select pg_terminate_backend(l.pid) from pg_locks l
             where l.locktype = 'advisory' and l.granted
               and ((l.classid::bigint << 32) | l.objid::bigint)
                   = hashtextextended('cognie-sync token refresh ' || $1, 0)) t",
        )
        .bind(&user)
        .fetch_one(env.app.db.pg())
        .await
        .expect("terminate the lock's session");
        assert_eq!(killed, 1, "the refresh lock's session");

        let run = env.finished(&run).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(env.notion.refreshes(), 1, "one refresh: its pair was stored, not asked for again");
        let (token, refresh) = env.stored_pair(&user).await;
        assert_ne!(token, first_token, "the refreshed token is stored");
        assert_ne!(refresh.expect("the rotated refresh token is stored"), first_refresh);
    })
    .await
}

conformance! {
async fn a_refresh_notion_refuses_fails_the_sync_asking_the_user_to_reconnect() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (token, _) = env.connect(&user, "code-1").await;
    let page = serve_page(&env.notion, 1, "Notes", OLD_EDIT, &["Question"]);
    // The user removed the integration: neither token works any more.
    env.notion.revoke_token(&token);
    env.notion.revoke_refresh_tokens();

    let run = env.finished(&env.subscribe(&user, &page).await).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error_kind"], "notion_unauthorized", "{run}");
    let error = run["last_error"].as_str().expect("last_error");
    assert!(error.contains("reconnect Notion") && error.contains("notion_oauth_invalid_grant"), "{error}");
    assert_eq!(env.notion.count("/v1/oauth/token"), 2, "the exchange and one refresh, refused");
    assert_eq!(env.stored_pair(&user).await.0, token, "nothing was replaced");
}
}

conformance! {
async fn a_token_endpoint_asking_to_slow_down_is_retried_after_its_retry_after() {
    let env = oauth_env(|s| {
        s.insert("NOTION_MAX_RETRIES", "2".into());
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    })
    .await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (token, _) = env.connect(&user, "code-1").await;
    let page = serve_page(&env.notion, 1, "Notes", OLD_EDIT, &["Question"]);
    env.notion.revoke_token(&token);
    // Notion's token endpoint answers the refresh with a 429, then a 529, before it refreshes.
    env.notion.inject("/v1/oauth/token", Fault::RateLimited { retry_after_secs: 1 });
    env.notion.inject("/v1/oauth/token", Fault::StatusRetryAfter { status: 529, retry_after_secs: 1 });

    let run = env.finished(&env.subscribe(&user, &page).await).await;

    assert_eq!(run["state"], "succeeded", "three attempts allowed, two slow-downs met: {run}");
    assert_eq!(run_step(&run, "fetch")["attempts"], 3, "one per slow-down and the one that refreshed: {run}");
    assert_eq!(env.notion.refreshes(), 1);
    let asked: Vec<_> = env.notion.requests().into_iter().filter(|r| r.path == "/v1/oauth/token").collect();
    let slowed = asked.iter().filter(|r| matches!(r.status, 429 | 529)).count();
    assert_eq!(slowed, 2, "each was met: {asked:?}");
    let gaps: Vec<_> = asked.windows(2).skip(1).map(|w| w[1].at.duration_since(w[0].at)).collect();
    assert!(gaps.iter().all(|gap| *gap >= Duration::from_millis(950)), "each Retry-After was honoured: {gaps:?}");
}
}

conformance! {
async fn refreshes_queued_behind_a_slowed_down_one_wait_out_its_retry_after() {
    let env = oauth_env(|s| {
        s.insert("NOTION_MAX_RETRIES", "3".into());
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    })
    .await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (token, _) = env.connect(&user, "code-1").await;
    let pages: Vec<String> = (1..=3).map(|n| serve_page(&env.notion, n, "Notes", OLD_EDIT, &["Question"])).collect();
    env.notion.revoke_token(&token);
    // The first refresh is answered slowly, and with a 429: the other syncs' refreshes queue
    // behind it meanwhile.
    env.notion.inject(
        "/v1/oauth/token",
        Fault::RateLimitedLate { after: Duration::from_millis(600), retry_after_secs: 2 },
    );

    let mut runs = Vec::new();
    for page in &pages {
        runs.push(env.subscribe(&user, page).await);
    }
    for run in &runs {
        let run = env.finished(run).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }

    assert_eq!(env.notion.refreshes(), 1, "the refresh after the wait served every sync");
    let asked: Vec<_> = env.notion.requests().into_iter().filter(|r| r.path == "/v1/oauth/token").collect();
    let slowed = asked.iter().find(|r| r.status == 429).expect("the slow-down was met");
    // Its answer came 0.6 s after it was asked, saying 2 s: nothing before 2.6 s.
    let too_soon: Vec<_> = asked
        .iter()
        .filter(|r| r.at > slowed.at && r.at.duration_since(slowed.at) < Duration::from_millis(2550))
        .collect();
    assert!(too_soon.is_empty(), "queued refreshers asked again inside the Retry-After: {asked:?}");
}
}

conformance! {
async fn a_client_secret_notion_no_longer_accepts_fails_the_sync_naming_the_setting() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (token, _) = env.connect(&user, "code-1").await;
    let page = serve_page(&env.notion, 1, "Notes", OLD_EDIT, &["Question"]);
    // The integration's secret was rotated in Notion, not in the service's settings.
    env.notion.set_oauth_client(CLIENT_ID, "secret_rotated_in_notion", REDIRECT_URI);
    env.notion.revoke_token(&token);

    let run = env.finished(&env.subscribe(&user, &page).await).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error_kind"], "notion_oauth_invalid_client", "not the user's to fix: {run}");
    let error = run["last_error"].as_str().expect("last_error");
    assert!(error.contains("NOTION_CLIENT_SECRET") && !error.contains("reconnect"), "{error}");
    assert_eq!(env.stored_pair(&user).await.0, token, "nothing was replaced");
}
}

conformance! {
async fn a_token_put_by_ops_replaces_the_oauth_pair_and_is_never_refreshed() {
    let env = oauth_env(|_| {}).await;
    let user = create_user(&env.app, "maya@example.com").await;
    env.connect(&user, "code-1").await;
    env.app.put_notion_token(&user, TOKEN).await;
    assert_eq!(env.stored_pair(&user).await, (TOKEN.to_owned(), None), "the OAuth refresh token went with its token");

    // Notion refuses the integration token: the sync fails at once, with no refresh attempted.
    let page = serve_page(&env.notion, 1, "Notes", OLD_EDIT, &["Question"]);
    let run = env.finished(&env.subscribe(&user, &page).await).await;
    assert_eq!(run["error_kind"], "notion_unauthorized", "{run}");
    assert!(run["last_error"].as_str().expect("last_error").contains("no refresh token"), "{run}");
    assert_eq!(env.notion.count("/v1/oauth/token"), 1, "only the exchange");
}
}

conformance! {
async fn reconciliation_refreshes_an_expired_token_and_checks_with_the_new_one() {
    let env = oauth_env(|s| {
        s.insert("RECONCILE_INTERVAL_SECONDS", "1".into());
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    })
    .await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (first_token, _) = env.connect(&user, "code-1").await;
    let pages: Vec<String> = (1..=3).map(|n| serve_page(&env.notion, n, "Notes", OLD_EDIT, &["Question"])).collect();
    for page in &pages {
        let run = env.finished(&env.subscribe(&user, page).await).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }

    // No sync is under way: only a sweep meets the expired token.
    env.notion.revoke_token(&first_token);
    eventually("a sweep to check every page with a refreshed token", Duration::from_secs(20), || async {
        let (token, _) = env.stored_pair(&user).await;
        let checks = env.notion.requests_for_token(&token);
        let checked = |page: &String| checks.iter().any(|r| r.path.ends_with(page.as_str()) && r.status == 200);
        (token != first_token && pages.iter().all(checked)).then_some(())
    })
    .await;
    assert_eq!(env.notion.refreshes(), 1);
    let refused = env.notion.requests_for_token(&first_token).iter().filter(|r| r.status == 401).count();
    assert_eq!(refused, 1, "the sweep's other checks used the refreshed token");
    let reconcile_syncs =
        env.app.count("select count(*) from workflow_runs where trigger = 'reconcile'").await;
    assert_eq!(reconcile_syncs, 0, "the pages are unchanged: nothing to sync");
}
}

conformance! {
/// A user whose token and refresh token Notion both refuse (the integration removed) costs a
/// sweep one refused check and one refresh request, not one of each per subscription.
async fn a_sweep_asks_once_about_a_user_who_must_reconnect() {
    let env = oauth_env(|s| {
        s.insert("RECONCILE_INTERVAL_SECONDS", "1".into());
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    })
    .await;
    let user = create_user(&env.app, "maya@example.com").await;
    let (token, _) = env.connect(&user, "code-1").await;
    for n in 1..=3 {
        let page = serve_page(&env.notion, n, "Notes", OLD_EDIT, &["Question"]);
        let run = env.finished(&env.subscribe(&user, &page).await).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }

    env.notion.revoke_token(&token);
    env.notion.revoke_refresh_tokens();
    let refresh_times = || {
        let mut times: Vec<std::time::Instant> = env
            .notion
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/oauth/token" && r.status != 0)
            .map(|r| r.at)
            .collect();
        times.remove(0); // the code exchange
        times
    };
    let times = eventually("three sweeps' refresh requests", Duration::from_secs(30), || async {
        let times = refresh_times();
        (times.len() >= 3).then_some(times)
    })
    .await;
    // Sweeps come a second apart; one sweep's requests for three subscriptions would not.
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(500), "two refresh requests {gap:?} apart: {times:?}");
    }
    let refused = env.notion.requests_for_token(&token).iter().filter(|r| r.status == 401).count();
    assert!(refused <= refresh_times().len() + 1, "one refused check per sweep: {refused}");
}
}

// ----- reconciliation -----

struct SyncEnv {
    app: TestApp,
    notion: FakeNotion,
    user: String,
}

async fn sync_env(rate_limit_per_minute: u32) -> SyncEnv {
    let notion = FakeNotion::start().await;
    notion.allow_token(TOKEN);
    let base = notion.base_url();
    let app = TestApp::spawn_with(|s| {
        s.insert("NOTION_API_BASE_URL", base);
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", rate_limit_per_minute.to_string());
        s.insert("RECONCILE_INTERVAL_SECONDS", "1".into());
    })
    .await;
    let user = create_user(&app, "maya@example.com").await;
    app.put_notion_token(&user, TOKEN).await;
    SyncEnv { app, notion, user }
}

impl SyncEnv {
    async fn subscribe(&self, notion_id: &str, kind: &str) -> String {
        let response = self
            .app
            .client
            .post(self.app.url(&format!("/api/users/{}/subscriptions", self.user)))
            .bearer_auth(API_TOKEN)
            .json(&json!({"notion_id": notion_id, "kind": kind}))
            .send()
            .await
            .expect("subscribe");
        expect_json(response, 201).await["run_id"].as_str().expect("run id").to_owned()
    }

    async fn wait_succeeded(&self, run_id: &str) {
        eventually(&format!("run {run_id} to succeed"), Duration::from_secs(30), || async {
            let run =
                expect_json(self.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
            assert_ne!(run["state"], "failed", "{run}");
            (run["state"] == "succeeded").then_some(())
        })
        .await;
    }

    /// Waits until a later sweep has checked every subscription again (each sweep checks the
    /// ones not checked in the last half interval): proof that more sweeps ran, where a bare
    /// sleep on a loaded machine proves nothing.
    async fn another_sweep_checked_every_subscription(&self) {
        let db = &self.app.db;
        let (mark_sql, again_sql) = match db {
            Db::Pg(_) => (
                "select max(reconciled_at)::text from subscriptions",
                "select count(*) from subscriptions where reconciled_at > $1::timestamptz",
            ),
            Db::Sqlite(_) => (
                "select max(reconciled_at) from subscriptions",
                "select count(*) from subscriptions where reconciled_at > $1",
            ),
        };
        let mark: Option<String> =
            on_db!(db, |db| sqlx::query_scalar(mark_sql).fetch_one(db).await).expect("last check");
        let mark = mark.expect("a sweep has checked them before");
        let total = self.app.count("select count(*) from subscriptions").await;
        eventually("a later sweep to check every subscription again", Duration::from_secs(15), || async {
            let again: i64 = on_db!(db, |db| sqlx::query_scalar(again_sql).bind(&mark).fetch_one(db).await)
                .expect("checks");
            (again == total).then_some(())
        })
        .await;
    }

    /// As if every sync so far had happened ten minutes ago.
    async fn age_past_syncs(&self) {
        let sql = format!(
            "update workflow_runs set created_at = {}, debounce_until = {}",
            self.app.db.shifted_sql("created_at", -10),
            self.app.db.shifted_sql("debounce_until", -10)
        );
        on_db!(self.app.db, |db| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("age runs");
    }

    /// A subscription whose content a successful sync read a moment ago, written directly (the
    /// run goes in first, so no sweep ever sees a subscription that was never synced).
    async fn subscribed_and_synced(&self, user: uuid::Uuid, notion_id: &str, kind: &str) {
        self.synced_run(user, notion_id, kind).await;
        self.app.insert_subscription(user, notion_id, kind).await;
    }

    /// A successful sync of the content that read it a moment ago.
    async fn synced_run(&self, user: uuid::Uuid, notion_id: &str, kind: &str) {
        let run = uuid::Uuid::now_v7();
        let now = self.app.db.now_sql();
        let sql = format!(
            "insert into workflow_runs (id, workflow, state, user_id, notion_id, notion_kind, trigger,
                 debounce_started_at, debounce_until, finished_at)
             values ($1, 'notion_sync', 'succeeded', $2, $3, $4, 'subscription', {now}, {now}, {now})"
        );
        on_db!(self.app.db, |db| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(run)
            .bind(user)
            .bind(notion_id)
            .bind(kind)
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("seed run");
        on_db!(self.app.db, |db| sqlx::query(
            "insert into workflow_steps (run_id, name, state, attempts) values ($1, 'fetch', 'succeeded', 1)",
        )
        .bind(run)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
        .expect("seed step");
    }

    /// Like [`Self::subscribed_and_synced`], for a database whose data sources (as its last
    /// sync recorded them) are `sources`: in the subscription's first write, so that no sweep
    /// sees it without them.
    async fn database_subscribed_and_synced(&self, user: uuid::Uuid, database: &str, sources: &[&str]) {
        let sources = serde_json::to_string(sources).expect("json");
        let insert = match &self.app.db {
            Db::Pg(_) => {
                "insert into subscriptions (id, user_id, notion_id, kind, data_source_ids)
                 select $1, $2, $3, 'database', array(select jsonb_array_elements_text($4::jsonb))"
            }
            Db::Sqlite(_) => {
                "insert into subscriptions (id, user_id, notion_id, kind, data_source_ids) values ($1, $2, $3, 'database', $4)"
            }
        };
        self.synced_run(user, database, "database").await;
        on_db!(self.app.db, |db| sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(uuid::Uuid::now_v7())
            .bind(user)
            .bind(database)
            .bind(&sources)
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("insert subscription");
    }

    /// The fixture database subscribed and synced (as if ten minutes ago), and its row
    /// Photosynthesis as Notion shows it edited three minutes ago; not served yet.
    async fn database_synced_ten_minutes_ago_and_a_row_edited_since(&self) -> Value {
        self.notion.load_fixture_database();
        let first = self.subscribe(ids::DATABASE, "database").await;
        self.wait_succeeded(&first).await;
        self.age_past_syncs().await;
        let rows: Value =
            serde_json::from_slice(&fixtures::bytes("data_source_query.json")).expect("fixture");
        let mut row = rows["results"][1].clone();
        assert_eq!(row["id"], ids::PHOTOSYNTHESIS);
        row["last_edited_time"] = json!(notion_time(Utc::now() - chrono::Duration::minutes(3)));
        row
    }

    /// (notion_id, kind, state) of the syncs reconciliation started.
    async fn reconcile_runs(&self) -> Vec<(String, String, String)> {
        on_db!(self.app.db, |db| sqlx::query_as(
            "select notion_id, notion_kind, state from workflow_runs where trigger = 'reconcile' order by created_at",
        )
        .fetch_all(db)
        .await)
        .expect("runs")
    }

    async fn card_fronts(&self) -> Vec<String> {
        let list =
            expect_json(self.app.get_authorized(&format!("/api/users/{}/flashcards", self.user)).await, 200)
                .await;
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["front"].as_str().expect("front").to_owned())
            .collect()
    }
}

fn rich_text(text: &str) -> Value {
    json!([{"type": "text", "text": {"content": text, "link": null},
            "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false, "code": false, "color": "default"},
            "plain_text": text, "href": null}])
}

/// Notion's `last_edited_time`: rounded down to the minute.
fn notion_time(at: DateTime<Utc>) -> String {
    at.duration_trunc(chrono::Duration::minutes(1))
        .expect("truncate")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn page(id: &str, title: &str, edited: &str) -> Value {
    json!({"object": "page", "id": id, "created_time": "2026-06-01T08:00:00.000Z", "last_edited_time": edited,
           "parent": {"type": "workspace", "workspace": true}, "in_trash": false, "archived": false,
           "properties": {"title": {"id": "title", "type": "title", "title": rich_text(title)}},
           "url": format!("https://www.notion.so/{}", id.replace('-', "")), "public_url": null})
}

fn toggle(id: &str, front: &str) -> Value {
    json!({"object": "block", "id": id, "has_children": true, "archived": false, "in_trash": false,
           "type": "toggle", "toggle": {"rich_text": rich_text(front), "color": "default"}})
}

fn paragraph(id: &str, text: &str) -> Value {
    json!({"object": "block", "id": id, "has_children": false, "archived": false, "in_trash": false,
           "type": "paragraph", "paragraph": {"rich_text": rich_text(text), "color": "default"}})
}

/// A page with one toggle card per front; ids derived from `n`.
fn serve_page(notion: &FakeNotion, n: u32, title: &str, edited: &str, fronts: &[&str]) -> String {
    let id = format!("2a000000-0000-4000-8000-{n:012}");
    notion.add_page(page(&id, title, edited));
    let toggles: Vec<Value> = fronts
        .iter()
        .enumerate()
        .map(|(i, front)| {
            let toggle_id = format!("2b000000-0000-4000-8{n:03}-{i:012}");
            notion.set_children(
                &toggle_id,
                vec![paragraph(&format!("2c000000-0000-4000-8{n:03}-{i:012}"), "answer")],
            );
            toggle(&toggle_id, front)
        })
        .collect();
    notion.set_children(&id, toggles);
    id
}

conformance! {
async fn a_page_edited_without_a_webhook_is_synced_by_reconciliation_and_an_unchanged_one_is_not() {
    let env = sync_env(1000).await;
    let old = "2026-06-01T09:30:00.000Z";
    let edited = serve_page(&env.notion, 1, "Edited", old, &["Old question"]);
    let unchanged = serve_page(&env.notion, 2, "Unchanged", old, &["Stable question"]);
    let first = env.subscribe(&edited, "page").await;
    let second = env.subscribe(&unchanged, "page").await;
    env.wait_succeeded(&first).await;
    env.wait_succeeded(&second).await;
    env.age_past_syncs().await;

    // Edited in Notion three minutes ago; the webhook never came.
    serve_page(
        &env.notion,
        1,
        "Edited",
        &notion_time(Utc::now() - chrono::Duration::minutes(3)),
        &["Old question", "Added without a webhook"],
    );

    let runs = eventually("reconciliation to sync the edited page", Duration::from_secs(15), || async {
        let runs = env.reconcile_runs().await;
        runs.iter().any(|(_, _, state)| state == "succeeded").then_some(runs)
    })
    .await;
    assert_eq!(runs, [(edited.clone(), "page".to_owned(), "succeeded".to_owned())]);
    assert!(env.card_fronts().await.contains(&"Added without a webhook".to_owned()));

    // Further sweeps find both pages read since their last edit.
    env.another_sweep_checked_every_subscription().await;
    assert_eq!(env.reconcile_runs().await.len(), 1, "one sync for the edit, none for the unchanged page");
}
}

conformance! {
async fn a_database_row_edited_without_a_webhook_is_synced_on_its_own() {
    let env = sync_env(1000).await;
    let mut row = env.database_synced_ten_minutes_ago_and_a_row_edited_since().await;
    row["properties"]["Name"]["title"] = rich_text("Photosynthesis, revised");
    env.notion.add_page(row);

    let runs = eventually("reconciliation to sync the edited row", Duration::from_secs(15), || async {
        let runs = env.reconcile_runs().await;
        runs.iter().any(|(_, _, state)| state == "succeeded").then_some(runs)
    })
    .await;
    assert_eq!(runs, [(ids::PHOTOSYNTHESIS.to_owned(), "page".to_owned(), "succeeded".to_owned())]);
    assert!(env.card_fronts().await.contains(&"Photosynthesis, revised".to_owned()));
    let queries =
        env.notion.requests().into_iter().filter(|r| r.path.ends_with("/query")).collect::<Vec<_>>();
    let filtered = queries.last().expect("reconciliation queried the data source");
    assert_eq!(filtered.body.as_ref().expect("body")["filter"]["timestamp"], "last_edited_time");

    env.another_sweep_checked_every_subscription().await;
    assert_eq!(env.reconcile_runs().await.len(), 1, "the row, once; not the whole database");
}
}

conformance! {
/// A row whose own sync fails for good (here Notion refuses its page, 403) is left to ops, as a
/// page whose sync failed is: before, every sweep found it edited since it was last read and
/// synced it again, spending the user's Notion requests (and a model's tokens) on a failure.
async fn a_database_row_whose_sync_failed_is_not_synced_again_at_every_sweep() {
    let env = sync_env(1000).await;
    let row = env.database_synced_ten_minutes_ago_and_a_row_edited_since().await;
    env.notion.add_page(row);
    // Only the row's own sync retrieves its page (the database's check queries the rows).
    env.notion.inject_always("/v1/pages/", Fault::Status(403));

    eventually("reconciliation to sync the edited row, and the sync to fail", Duration::from_secs(15), || async {
        let runs = env.reconcile_runs().await;
        runs.iter().any(|(_, _, state)| state == "failed").then_some(())
    })
    .await;
    env.another_sweep_checked_every_subscription().await;
    env.another_sweep_checked_every_subscription().await;
    assert_eq!(
        env.reconcile_runs().await,
        [(ids::PHOTOSYNTHESIS.to_owned(), "page".to_owned(), "failed".to_owned())],
        "the row's failed sync, once"
    );
}
}

conformance! {
async fn reconciliation_takes_its_requests_from_the_users_rate_limit() {
    let env = sync_env(2).await;
    let old = "2026-06-01T09:30:00.000Z";
    let user = uuid::Uuid::parse_str(&env.user).expect("uuid");
    // Three subscriptions, each synced a moment ago (so reconciliation asks Notion about each).
    for n in 1..=3 {
        let id = serve_page(&env.notion, n, &format!("Page {n}"), old, &["Q"]);
        env.subscribed_and_synced(user, &id, "page").await;
    }

    eventually("two subscriptions checked", Duration::from_secs(10), || async {
        (env.app.count("select count(*) from subscriptions where reconciled_at is not null").await == 2)
            .then_some(())
    })
    .await;
    // Several more sweeps: the third waits for a slot; nothing goes past the limit. (No sweep
    // can check anything more here, so only time can show that none does.)
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(env.notion.requests_for_token(TOKEN).len(), 2, "{:?}", env.notion.requests());
    assert_eq!(env.app.count("select count(*) from subscriptions where reconciled_at is not null").await, 2);
    assert!(env.reconcile_runs().await.is_empty(), "nothing changed");
}
}

conformance! {
/// Notion overloaded (529) answering reconciliation blocks the user's limiter for its
/// `Retry-After`, as a 429 does and as `fetch` does, and the subscription is not counted as
/// checked: it is first in line once the wait is over.
async fn an_overloaded_notion_blocks_the_users_limiter_during_reconciliation() {
    let env = sync_env(1000).await;
    let user = uuid::Uuid::parse_str(&env.user).expect("uuid");
    let page = serve_page(&env.notion, 1, "Page 1", "2026-06-01T09:30:00.000Z", &["Q"]);
    env.notion.inject("/v1/pages/", Fault::StatusRetryAfter { status: 529, retry_after_secs: 120 });
    env.subscribed_and_synced(user, &page, "page").await;

    eventually("the user's limiter to be blocked", Duration::from_secs(10), || async {
        let blocked = "select count(*) from notion_rate_limits where blocked_until is not null";
        (env.app.count(blocked).await == 1).then_some(())
    })
    .await;
    assert_eq!(env.notion.requests_for_token(TOKEN).len(), 1, "one request, answered 529");
    assert_eq!(env.app.count("select count(*) from subscriptions where reconciled_at is not null").await, 0);
}
}

conformance! {
/// More than 20 rows of a database edited since its last full sync, each already synced by its
/// own webhook: nothing to do. Only rows not read since count towards syncing the whole
/// database instead.
async fn rows_synced_by_their_own_webhooks_do_not_make_reconciliation_sync_the_whole_database() {
    let env = sync_env(1000).await;
    env.notion.load_fixture_database();
    let rows: Value = serde_json::from_slice(&fixtures::bytes("data_source_query.json")).expect("fixture");
    let edited = notion_time(Utc::now() - chrono::Duration::minutes(3));
    let user = uuid::Uuid::parse_str(&env.user).expect("uuid");
    let mut added = Vec::new();
    for n in 0..25u32 {
        let mut row = rows["results"][0].clone();
        let id = format!("{n:08x}-0000-4000-8000-00000000a11a");
        row["id"] = json!(id);
        row["last_edited_time"] = json!(edited);
        added.push(row);
        // Each row's webhook came, and its sync read it after the edit.
        env.synced_run(user, &id, "page").await;
    }
    env.notion.add_data_source_rows(ids::DATA_SOURCE, added);
    // The database's last full sync read it ten minutes ago, before the rows' edits.
    env.database_subscribed_and_synced(user, ids::DATABASE, &[ids::DATA_SOURCE]).await;
    let age = format!(
        "update workflow_runs set created_at = {}, debounce_until = {} where notion_id = $1",
        env.app.db.shifted_sql("created_at", -10),
        env.app.db.shifted_sql("debounce_until", -10)
    );
    on_db!(env.app.db, |db| sqlx::query(sqlx::AssertSqlSafe(age.clone()))
        .bind(ids::DATABASE)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("age the database's sync");

    eventually("the database to be checked", Duration::from_secs(10), || async {
        let checked = "select count(*) from subscriptions where kind = 'database' and reconciled_at is not null";
        (env.app.count(checked).await == 1).then_some(())
    })
    .await;
    assert!(env.notion.requests().iter().any(|r| r.path.ends_with("/query")), "the data source was queried");
    assert!(env.reconcile_runs().await.is_empty(), "{:?}", env.reconcile_runs().await);
}
}

conformance! {
/// A check that runs out of the user's slots midway (here a database whose check queries three
/// data sources, with a limit of two a minute) goes to the back of the line, so it cannot take
/// the user's slots at every sweep and keep their other subscriptions from being checked.
async fn a_check_that_runs_out_of_slots_midway_does_not_starve_the_users_other_subscriptions() {
    let env = sync_env(2).await;
    env.notion.load_fixture_database();
    let user = uuid::Uuid::parse_str(&env.user).expect("uuid");
    let source = ids::DATA_SOURCE;
    env.database_subscribed_and_synced(user, ids::DATABASE, &[source, source, source]).await;
    let page = serve_page(&env.notion, 1, "Page 1", "2026-06-01T09:30:00.000Z", &["Q"]);
    env.subscribed_and_synced(user, &page, "page").await;

    eventually("the database's check to run out of slots", Duration::from_secs(10), || async {
        let deferred =
            "select count(*) from subscriptions where kind = 'database' and reconciled_at is not null";
        (env.app.count(deferred).await == 1).then_some(())
    })
    .await;
    assert_eq!(env.notion.requests_for_token(TOKEN).len(), 2, "the two requests the limit allowed");
    // A minute later the user's window has rolled (here: its grants are forgotten). The page
    // comes first now; before, the database came first again and took the slots again.
    let forget = match &env.app.db {
        Db::Pg(_) => "delete from notion_rate_limits",
        Db::Sqlite(_) => "delete from notion_rate_grants",
    };
    on_db!(env.app.db, |db| sqlx::query(forget).execute(db).await.map(|done| done.rows_affected()))
        .expect("forget grants");
    eventually("the page to be checked", Duration::from_secs(10), || async {
        let checked = "select count(*) from subscriptions where kind = 'page' and reconciled_at is not null";
        (env.app.count(checked).await == 1).then_some(())
    })
    .await;
    assert!(env.notion.requests_for_token(TOKEN).iter().any(|r| r.path.starts_with("/v1/pages/")));
}
}

// ----- secrets at rest and in logs -----

conformance! {
/// The real binary, as deployed: OAuth-connected and PUT tokens are used by syncs and by
/// reconciliation, and appear neither in a dump of the database nor in any log line.
async fn no_notion_token_appears_in_a_database_dump_or_in_the_logs() {
    let notion = FakeNotion::start().await;
    notion.load_fixture_page();
    notion.set_oauth_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    notion.add_oauth_code("code-secret-0a1b2c3d");
    let manual_token = "ntn_manually_pasted_secret_9f8e7d";
    notion.allow_token(manual_token);

    let db = TestDb::create().await;
    let data_dir = TempDir::new();
    let mut settings = base_settings(&db.url, data_dir.path());
    settings.insert("NOTION_API_BASE_URL", notion.base_url());
    settings.insert("NOTION_CLIENT_ID", CLIENT_ID.into());
    settings.insert("NOTION_CLIENT_SECRET", CLIENT_SECRET.into());
    settings.insert("NOTION_REDIRECT_URI", REDIRECT_URI.into());
    settings.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
    settings.insert("RECONCILE_INTERVAL_SECONDS", "1".into());
    settings.insert("RUST_LOG", "info,cognie_sync=debug".into());
    let service = ServiceProcess::start("serve", &settings);
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let post =
        |path: &str, body: Value| client.post(service.url(path)).bearer_auth(API_TOKEN).json(&body).send();

    // One user connects through OAuth, another pastes a token; both subscribe to the page.
    let maya =
        expect_json(post("/api/users", json!({"email": "maya@example.com"})).await.expect("user"), 201).await;
    let maya = maya["id"].as_str().expect("id").to_owned();
    let start = client
        .get(service.url(&format!("/api/notion/auth?user_id={maya}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("auth");
    assert_eq!(start.status(), 302);
    let location = reqwest::Url::parse(start.headers()["location"].to_str().expect("ascii")).expect("url");
    let state = location.query_pairs().find(|(k, _)| k == "state").expect("state").1.into_owned();
    let callback = client
        .get(service.url("/api/notion/auth/callback"))
        .query(&[("code", "code-secret-0a1b2c3d"), ("state", state.as_str())])
        .send()
        .await
        .expect("callback");
    expect_json(callback, 200).await;

    let lee =
        expect_json(post("/api/users", json!({"email": "lee@example.com"})).await.expect("user"), 201).await;
    let lee = lee["id"].as_str().expect("id").to_owned();
    let put = client
        .put(service.url(&format!("/api/users/{lee}/notion-token")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"token": manual_token}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 204);

    for user in [&maya, &lee] {
        let path = format!("/api/users/{user}/subscriptions");
        expect_json(post(&path, json!({"notion_id": ids::PAGE, "kind": "page"})).await.expect("sub"), 201)
            .await;
    }
    let pool = db.connect().await;
    // Both syncs, then reconciliation (each check asks Notion with the user's token), used
    // both tokens.
    for (what, sql) in [
        ("both syncs to succeed", "select count(*) from workflow_runs where workflow = 'notion_sync' and state = 'succeeded'"),
        ("a reconciliation sweep to check both subscriptions", "select count(*) from subscriptions where reconciled_at is not null"),
    ] {
        eventually(what, Duration::from_secs(30), || async {
            let n: i64 = on_db!(pool, |p| sqlx::query_scalar(sql).fetch_one(p).await).expect("count");
            (n == 2).then_some(())
        })
        .await;
    }

    let oauth_token = notion
        .requests()
        .into_iter()
        .filter_map(|r| r.token)
        .find(|t| t.starts_with("ntn_fake"))
        .expect("a sync used the OAuth token");
    let refresh_token = notion.live_refresh_tokens().pop().expect("the exchange issued a refresh token");
    let secrets = [
        oauth_token.clone(),
        hex::encode(&oauth_token),
        refresh_token.clone(),
        hex::encode(&refresh_token),
        manual_token.to_owned(),
        hex::encode(manual_token),
        "code-secret-0a1b2c3d".to_owned(),
        CLIENT_SECRET.to_owned(),
    ];

    let log = service.log.lock().expect("log").join("\n");
    assert!(log.contains("connected the user's Notion account"), "the log was captured: {log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret ({}…) is in the logs", &secret[..8]);
    }

    if db.backend == Backend::Sqlite {
        // Everything the service stored: the database file and its write-ahead log.
        let file = db.url.strip_prefix("sqlite://").expect("sqlite url");
        let mut stored = std::fs::read(file).expect("read the database file");
        stored.extend(std::fs::read(format!("{file}-wal")).unwrap_or_default());
        let stored = String::from_utf8_lossy(&stored);
        assert!(stored.contains("notion_token_ciphertext"), "the file has the users table");
        for secret in &secrets {
            assert!(!stored.contains(secret.as_str()), "a secret ({}…) is in the database file", &secret[..8]);
        }
    } else if std::path::Path::new("/usr/bin/pg_dump").exists() {
        let dump = std::process::Command::new("/usr/bin/pg_dump")
            .arg("--no-owner")
            .arg(&db.url)
            .output()
            .expect("run pg_dump");
        assert!(dump.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&dump.stderr));
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.contains("notion_token_ciphertext"), "the dump has the users table");
        for secret in &secrets {
            assert!(!dump.contains(secret.as_str()), "a secret ({}…) is in the database dump", &secret[..8]);
        }
    } else {
        eprintln!("pg_dump is not installed at /usr/bin/pg_dump: the dump check was skipped");
    }
    drop(service);
}
}

conformance! {
/// README: "A subscription whose sync failed because the user had no token yet is synced by the
/// next reconciliation sweep after the user connects." The user follows a page before giving
/// a token: the first sync fails `notion_token_missing` (and the sweep leaves it alone while
/// the token is still missing); once the token is set, a sweep syncs the page.
async fn a_subscription_made_before_the_token_is_synced_by_reconciliation_once_the_token_is_set() {
    let notion = FakeNotion::start().await;
    notion.allow_token(TOKEN);
    notion.load_fixture_page();
    let base = notion.base_url();
    let app = TestApp::spawn_with(|s| {
        s.insert("NOTION_API_BASE_URL", base);
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
        s.insert("RECONCILE_INTERVAL_SECONDS", "1".into());
    })
    .await;
    let user = create_user(&app, "early@example.com").await;
    let env = SyncEnv { app, notion, user };
    let first = env.subscribe(ids::PAGE, "page").await;
    let failed = eventually("the first sync to fail for want of a token", Duration::from_secs(15), || async {
        let run = expect_json(env.app.get_authorized(&format!("/api/workflows/{first}")).await, 200).await;
        (run["state"] == "failed").then_some(run)
    })
    .await;
    assert_eq!(failed["error_kind"], "notion_token_missing", "{failed}");
    assert_eq!(env.notion.requests().len(), 0, "nothing was asked of Notion without a token");

    env.app.put_notion_token(&env.user, TOKEN).await;
    let synced = eventually("a reconciliation sync to succeed", Duration::from_secs(20), || async {
        on_db!(env.app.db, |db| sqlx::query_scalar::<_, uuid::Uuid>(
            "select id from workflow_runs where workflow = 'notion_sync' and trigger = 'reconcile' and state = 'succeeded'"
        )
        .fetch_optional(db)
        .await)
        .expect("runs")
    })
    .await;
    let cards = env.app.count("select count(*) from flashcards where retired_at is null").await;
    assert_eq!(cards, 4, "the page's cards, from run {synced}");
}
}
