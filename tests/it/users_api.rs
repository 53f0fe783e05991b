//! Users, Notion tokens and subscriptions through the API.

use crate::{conformance, on_db};
use serde_json::json;
use std::time::Duration;

use crate::support::{
    TestApp,
    app::{API_TOKEN, expect_error, expect_json},
    eventually,
};

async fn post(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(API_TOKEN).json(&body).send().await.expect("POST")
}

conformance! {
async fn a_user_is_created_read_and_unique_by_email() {
    let app = TestApp::spawn().await;
    let user = expect_json(post(&app, "/api/users", json!({"email": "Maya@example.com"})).await, 201).await;
    assert_eq!(user["email"], "Maya@example.com");
    assert_eq!(user["notion_connected"], false);
    assert!(user["created_at"].is_string());
    let id = user["id"].as_str().expect("id");

    let fetched = expect_json(app.get_authorized(&format!("/api/users/{id}")).await, 200).await;
    assert_eq!(fetched, user);
    expect_error(post(&app, "/api/users", json!({"email": "maya@EXAMPLE.com"})).await, 409, "email_taken")
        .await;
    // Beyond ASCII too, on every backend (SQLite's `lower()` folds ASCII only).
    expect_json(post(&app, "/api/users", json!({"email": "Émile@Straße.example"})).await, 201).await;
    expect_error(post(&app, "/api/users", json!({"email": "émile@straße.EXAMPLE"})).await, 409, "email_taken")
        .await;
    expect_error(post(&app, "/api/users", json!({"email": "not-an-email"})).await, 400, "invalid_email")
        .await;
    expect_error(post(&app, "/api/users", json!({"mail": "x@y.z"})).await, 400, "bad_request").await;
    let unknown = uuid::Uuid::new_v4();
    expect_error(app.get_authorized(&format!("/api/users/{unknown}")).await, 404, "user_not_found").await;
    expect_error(app.get_authorized("/api/users/not-a-uuid").await, 400, "bad_request").await;
}
}

conformance! {
async fn a_notion_token_is_stored_encrypted_and_never_returned() {
    let app = TestApp::spawn().await;
    let user = expect_json(post(&app, "/api/users", json!({"email": "t@example.com"})).await, 201).await;
    let id = user["id"].as_str().expect("id");
    let token = "ntn_secret_token_1234567890";
    let put = app
        .client
        .put(app.url(&format!("/api/users/{id}/notion-token")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 204);
    let fetched = expect_json(app.get_authorized(&format!("/api/users/{id}")).await, 200).await;
    assert_eq!(fetched["notion_connected"], true);
    assert!(!fetched.to_string().contains(token));

    let stored: Vec<u8> = on_db!(app.db, |db| sqlx::query_scalar("select notion_token_ciphertext from users")
        .fetch_one(db)
        .await)
        .expect("stored");
    assert!(!String::from_utf8_lossy(&stored).contains(token), "token stored in plaintext");

    let unknown = uuid::Uuid::new_v4();
    let put = app
        .client
        .put(app.url(&format!("/api/users/{unknown}/notion-token")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("PUT");
    expect_error(put, 404, "user_not_found").await;
}
}

conformance! {
async fn subscribing_starts_the_first_sync_and_ids_are_canonical() {
    let app = TestApp::spawn().await;
    let user = expect_json(post(&app, "/api/users", json!({"email": "s@example.com"})).await, 201).await;
    let id = user["id"].as_str().expect("id");
    let path = format!("/api/users/{id}/subscriptions");

    let created = expect_json(
        post(&app, &path, json!({"notion_id": "1F3C8A2E4B7D80A19C5ED2F4A6B8C0E1", "kind": "page"})).await,
        201,
    )
    .await;
    assert_eq!(created["notion_id"], "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1");
    assert_eq!(created["kind"], "page");
    let run_id: uuid::Uuid = created["run_id"].as_str().expect("run id").parse().expect("uuid");
    let (workflow, trigger): (String, String) =
        on_db!(app.db, |db| sqlx::query_as("select workflow, trigger from workflow_runs where id = $1")
            .bind(run_id)
            .fetch_one(db)
            .await)
            .expect("the first sync exists");
    assert_eq!((workflow.as_str(), trigger.as_str()), ("notion_sync", "subscription"));

    let dashed = json!({"notion_id": "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1", "kind": "page"});
    expect_error(post(&app, &path, dashed).await, 409, "already_subscribed").await;
    expect_error(
        post(&app, &path, json!({"notion_id": "nope", "kind": "page"})).await,
        400,
        "invalid_notion_id",
    )
    .await;
    expect_error(
        post(&app, &path, json!({"notion_id": "1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1", "kind": "block"})).await,
        400,
        "bad_request",
    )
    .await;
    let unknown = format!("/api/users/{}/subscriptions", uuid::Uuid::new_v4());
    expect_error(
        post(&app, &unknown, json!({"notion_id": "1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1", "kind": "page"})).await,
        404,
        "user_not_found",
    )
    .await;

    let list = expect_json(app.get_authorized(&path).await, 200).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["notion_id"], "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1");

    let delete = |notion_id: &'static str| {
        let url = app.url(&format!("{path}/{notion_id}"));
        let client = app.client.clone();
        async move { client.delete(url).bearer_auth(API_TOKEN).send().await.expect("DELETE") }
    };
    assert_eq!(delete("1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1").await.status(), 204);
    expect_error(delete("1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1").await, 404, "subscription_not_found").await;
    let list = expect_json(app.get_authorized(&path).await, 200).await;
    assert_eq!(list["items"], json!([]));
}
}

conformance! {
/// Walks the generated spec: every operation but the few that are public by nature answers
/// 401, with the error body, when called without the token, and declares the bearer scheme.
/// The public ones are named here, so an endpoint that loses both its declaration and its
/// check cannot slip through.
async fn every_management_operation_requires_the_api_token() {
    const PUBLIC: [&str; 6] = [
        "post /api/notion/webhook/notion",
        "get /api/notion/webhook/notion/verify",
        "get /api/notion/auth/callback",
        "get /healthz",
        "get /readyz",
        "get /metrics",
    ];
    let app = TestApp::spawn().await;
    let spec: serde_json::Value = serde_json::from_str(&cognie_sync::http::spec_json()).expect("spec");
    let (mut checked, mut public) = (0, 0);
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let declared = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if PUBLIC.contains(&format!("{method} {path}").as_str()) {
                assert!(!declared, "{method} {path} is public but declares the bearer scheme");
                public += 1;
                continue;
            }
            assert!(declared, "{method} {path} does not declare the bearer scheme");
            let concrete = path
                .replace("{user_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{run_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{notion_id}", "1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1")
                .replace("{page_id}", "1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = app
                .client
                .request(method.clone(), app.url(&concrete))
                .json(&json!({}))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 401, "{method} {path} without a token");
            expect_error(response, 401, "unauthorized").await;
            checked += 1;
        }
    }
    assert_eq!(public, PUBLIC.len(), "every public operation is still in the spec");
    assert!(checked >= 17, "expected the management operations in the spec, found {checked}");
}
}

/// Management bodies are a few hundred bytes; one over 64 KiB is refused with 413 (with or
/// without a Content-Length to trust), after the bearer token is checked, and stores nothing.
#[tokio::test]
async fn management_bodies_over_64_kib_are_refused_with_or_without_content_length() {
    let app = TestApp::spawn().await;
    let body = json!({"email": format!("{}@example.com", "a".repeat(64 * 1024))}).to_string();
    let send = |body: reqwest::Body, token: bool| {
        let request = app.client.post(app.url("/api/users")).header("content-type", "application/json");
        let request = if token { request.bearer_auth(API_TOKEN) } else { request };
        request.body(body).send()
    };
    let chunked = |bytes: &[u8]| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(chunks))
    };

    let response = send(body.clone().into(), false).await.expect("POST");
    expect_error(response, 401, "unauthorized").await;
    let response = send(body.clone().into(), true).await.expect("POST");
    expect_error(response, 413, "payload_too_large").await;
    let response = send(chunked(body.as_bytes()), true).await.expect("POST");
    expect_error(response, 413, "payload_too_large").await;
    let users: i64 =
        on_db!(app.db, |db| sqlx::query_scalar("select count(*) from users").fetch_one(db).await)
            .expect("count users");
    assert_eq!(users, 0);

    // A body just under the cap is read (and judged on its content).
    let email = format!("{}@example.com", "a".repeat(60 * 1024));
    let response = send(chunked(json!({ "email": email }).to_string().as_bytes()), true).await.expect("POST");
    expect_error(response, 400, "invalid_email").await;
}

/// A card's `created_at` is its transaction's start, and the card becomes visible only at that
/// transaction's commit: a listing that went on past cards created after it had started would
/// hand out a cursor beyond it, and a client paging on would never see it. So a listing stops
/// short of the oldest transaction the service has open (PostgreSQL; on SQLite writes are one
/// at a time and a card's time is taken inside the write lock).
#[tokio::test]
async fn the_card_list_never_pages_past_a_card_still_being_created() {
    use sqlx::{ConnectOptions, Connection};
    if !crate::support::db::postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn().await;
    let user = app.insert_user("pager@example.com").await;
    let insert =
        "insert into flashcards (id, user_id, source_page_id, source_block_id, source_kind, front, back)
                  values ($1, $2, 'p', $3, 'block', 'front', 'back')";
    let card = |n: u128| uuid::Uuid::from_u128(n);

    // Card 1 is being created by a transaction of the service (its application name) that has
    // not committed yet; cards 2 and 3 are created and committed after it began.
    let options = (*app.db.pg().connect_options()).clone().application_name("cognie-sync");
    let mut creating = options.connect().await.expect("connect");
    let mut tx = creating.begin().await.expect("begin");
    sqlx::query(insert).bind(card(1)).bind(user).bind("b1").execute(&mut *tx).await.expect("card 1");
    for n in [2, 3] {
        sqlx::query(insert)
            .bind(card(n))
            .bind(user)
            .bind(format!("b{n}"))
            .execute(app.db.pg())
            .await
            .expect("card");
    }
    let ids = |page: serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let path = format!("/api/users/{user}/flashcards?limit=1");
    let during = expect_json(app.get_authorized(&path).await, 200).await;
    assert!(
        ids(during.clone()).is_empty(),
        "no card created after card 1 began is listed before it: {during}"
    );
    assert!(during["next_cursor"].is_null(), "{during}");

    tx.commit().await.expect("commit card 1");

    // A session of the service waiting for a user's token refresh lock (a statement that
    // writes nothing and can wait for a whole Notion call) holds back no card created while
    // it waits.
    let mut holder = options.connect().await.expect("connect");
    sqlx::query("select pg_advisory_lock(42)").execute(&mut holder).await.expect("lock");
    let mut waiter = options.connect().await.expect("connect");
    let waiter_pid: i32 =
        sqlx::query_scalar("select pg_backend_pid()").fetch_one(&mut waiter).await.expect("pid");
    let waiting = tokio::spawn(async move {
        sqlx::query("select pg_advisory_lock(42)").execute(&mut waiter).await.expect("waited");
        waiter
    });
    eventually("the waiter waits for the lock", Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where pid = $1 and wait_event_type = 'Lock' and wait_event = 'advisory'",
        )
        .bind(waiter_pid)
        .fetch_one(app.db.pg())
        .await
        .expect("count");
        (waiting == 1).then_some(())
    })
    .await;
    sqlx::query(insert).bind(card(4)).bind(user).bind("b4").execute(app.db.pg()).await.expect("card 4");
    let all: Vec<String> = [1, 2, 3, 4].map(|n| card(n).to_string()).into();
    let everything = format!("/api/users/{user}/flashcards");
    eventually("every card listed while the waiter waits", Duration::from_secs(10), || async {
        let page = expect_json(app.get_authorized(&everything).await, 200).await;
        (ids(page) == all).then_some(())
    })
    .await;
    sqlx::query("select pg_advisory_unlock(42)").execute(&mut holder).await.expect("unlock");
    waiting.await.expect("the waiter got the lock");

    // Paged to the end; again while a transaction of the service's own that began before
    // card 3 may still hold the list back (only briefly).
    let expected = all;
    eventually("every card once, in the order they were created", Duration::from_secs(10), || async {
        let mut seen = Vec::new();
        let mut next = path.clone();
        loop {
            let page = expect_json(app.get_authorized(&next).await, 200).await;
            seen.extend(ids(page.clone()));
            match page["next_cursor"].as_str() {
                Some(cursor) => next = format!("{path}&cursor={cursor}"),
                None => break,
            }
        }
        (seen == expected).then_some(())
    })
    .await;
}

/// A sync's persist that found the subscription (`sync_wanted`, in its transaction) holds it
/// until that transaction ends: an unsubscribe committing meanwhile would answer 204 and the
/// sync would still write its cards after it. So the DELETE waits for the persist (PostgreSQL;
/// on SQLite both go through the one writer).
#[tokio::test]
async fn an_unsubscribe_waits_for_a_persist_that_found_the_subscription() {
    use cognie_sync::{ids::UserId, store::model::EventTarget};
    use sqlx::{Connection, Row};
    if !crate::support::db::postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn().await;
    let user = app.insert_user("held@example.com").await;
    let page = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";
    sqlx::query("insert into subscriptions (id, user_id, notion_id, kind) values ($1, $2, $3, 'page')")
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(page)
        .execute(app.db.pg())
        .await
        .expect("subscription");

    let mut persisting =
        sqlx::PgConnection::connect_with(&app.db.pg().connect_options()).await.expect("connect");
    let mut tx = persisting.begin().await.expect("begin");
    let target = EventTarget {
        entity_id: Some(page.to_owned()),
        entity_kind: Some("page".to_owned()),
        parent_id: None,
        data_source_id: None,
        event_type: "page.content_updated".to_owned(),
    };
    let run = cognie_sync::ids::RunId::new();
    let wanted = cognie_sync::store::pg::sync::sync_wanted(&mut tx, run, UserId(user), &target, false)
        .await
        .expect("sync_wanted");
    assert!(wanted, "the user follows the page");

    let path = format!("/api/users/{user}/subscriptions/{page}");
    let client = app.client.clone();
    let url = app.url(&path);
    let unsubscribe = tokio::spawn(async move { client.delete(url).bearer_auth(API_TOKEN).send().await });
    eventually("the DELETE waits for the persist's lock", Duration::from_secs(10), || async {
        let waiting = sqlx::query(
            "select count(*) as n from pg_stat_activity
             where wait_event_type = 'Lock' and query ilike '%delete from subscriptions%'",
        )
        .fetch_one(app.db.pg())
        .await
        .expect("activity")
        .get::<i64, _>("n");
        (waiting == 1).then_some(())
    })
    .await;
    assert!(!unsubscribe.is_finished(), "no 204 while the persist that found the subscription is open");

    tx.commit().await.expect("the persist commits");
    let response = unsubscribe.await.expect("task").expect("DELETE");
    assert_eq!(response.status(), 204, "the unsubscribe goes through after it");
}
