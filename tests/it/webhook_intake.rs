//! `POST /api/notion/webhook/notion`: signatures, formats, dedupe, limits, durability.

use crate::{conformance, on_db};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};

use crate::support::{
    TestApp,
    app::{expect_error, expect_json},
    db::{TestDb, postgres_or_skip},
    fixtures,
    proxy::DbProxy,
};

const EVENTS: &str = "select count(*) from webhook_events";
const RUNS: &str = "select count(*) from workflow_runs";

conformance! {
async fn every_signed_fixture_verifies_with_its_stored_signature() {
    let app = TestApp::spawn().await;
    let signatures = fixtures::signatures();
    for (file, signature) in &signatures.by_file {
        let response = app.post_webhook(fixtures::bytes(file), Some(signature)).await;
        let body = expect_json(response, 200).await;
        let expected = match file.as_str() {
            "webhook_verification.json" => "verification_received",
            "webhook_comment_created.json" => "ignored",
            _ => "accepted",
        };
        assert_eq!(body["status"], expected, "{file}: {body}");
    }
    // 11 signed fixtures: the handshake is stored apart, the comment is recorded but starts
    // nothing, and each of the other nine starts one event workflow.
    assert_eq!(app.count(EVENTS).await, 10);
    assert_eq!(app.count("select count(*) from webhook_events where outcome = 'ignored'").await, 1);
    assert_eq!(app.count("select count(*) from workflow_runs where workflow = 'notion_event'").await, 9);
}
}

conformance! {
async fn an_accepted_event_is_stored_with_its_workflow_before_the_answer() {
    let app = TestApp::spawn_with(|s| {
        // The rows must exist when the answer comes, whatever the workers do after it (they
        // are woken at once by the commit; a long poll only keeps the backstop out of it).
        s.insert("WORKER_POLL_INTERVAL_MS", "60000".into());
    })
    .await;
    let file = "webhook_page_content_updated.json";
    let response = app.post_webhook(fixtures::bytes(file), Some(&fixtures::signatures().by_file[file])).await;
    let body = expect_json(response, 200).await;
    assert_eq!(body["status"], "accepted");
    let event_id: uuid::Uuid = body["event_id"].as_str().expect("event_id").parse().expect("uuid");

    let (event_type, entity_id, parent_kind, data_source, attempt): (String, String, String, String, i32) = on_db!(app.db, |db| sqlx::query_as(
        "select event_type, entity_id, parent_kind, data_source_id, attempt_number from webhook_events where id = $1",
    )
    .bind(event_id)
    .fetch_one(db)
    .await)
    .expect("the event row exists as soon as the 200 is sent");
    assert_eq!(event_type, "page.content_updated");
    assert_eq!(entity_id, "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1");
    assert_eq!(parent_kind, "database");
    assert_eq!(data_source, "1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b");
    assert_eq!(attempt, 1);

    let run: (String, String, String) =
        on_db!(app.db, |db| sqlx::query_as("select workflow, current_step, trigger from workflow_runs where event_id = $1")
            .bind(event_id)
            .fetch_one(db)
            .await)
            .expect("the event's workflow run exists");
    assert_eq!(run, ("notion_event".into(), "discover_users".into(), "webhook".into()));
    assert_eq!(app.count(app.db.step_jobs_sql()).await, 1);
}
}

conformance! {
async fn bad_signatures_are_rejected_and_store_nothing() {
    let app = TestApp::spawn().await;
    let file = "webhook_page_content_updated.json";
    let body = fixtures::bytes(file);
    let good = fixtures::signatures().by_file[file].clone();
    let tampered_body = String::from_utf8(body.clone()).expect("utf-8").replace("Maya", "Mallory");
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("tampered signature", body.clone(), Some(format!("sha256={}", "0".repeat(64)))),
        ("tampered body", tampered_body.into_bytes(), Some(good.clone())),
        ("missing signature", body.clone(), None),
        ("empty signature", body.clone(), Some(String::new())),
        ("no sha256= prefix", body.clone(), Some(good.trim_start_matches("sha256=").to_owned())),
        ("wrong prefix", body.clone(), Some(good.replace("sha256=", "sha512="))),
        ("truncated digest", body.clone(), Some(good[..good.len() - 1].to_owned())),
        (
            "signed with another secret",
            body.clone(),
            Some(cognie_sync::webhook::signature::sign(b"other", &body)),
        ),
    ];
    for (case, body, signature) in cases {
        let response = app.post_webhook(body, signature.as_deref()).await;
        let error = expect_error(response, 401, "invalid_signature").await;
        assert!(
            !error["message"].as_str().unwrap_or("").contains(&fixtures::secret()),
            "{case}: leaks the secret"
        );
    }
    assert_eq!(app.count(EVENTS).await, 0);
    assert_eq!(app.count(RUNS).await, 0);
}
}

conformance! {
async fn a_redelivered_event_starts_work_once() {
    let app = TestApp::spawn().await;
    let body = br#"{"id":"evt-redelivered","type":"page.content_updated","attempt_number":1,"entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"page"}}"#;
    let first = expect_json(app.post_signed(body).await, 200).await;
    assert_eq!(first["status"], "accepted");
    // Notion's retry: same event id, a later attempt number, so different bytes.
    let retry = String::from_utf8_lossy(body).replace("\"attempt_number\":1", "\"attempt_number\":2");
    let second = expect_json(app.post_signed(retry.as_bytes()).await, 200).await;
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["event_id"], first["event_id"], "a duplicate names the stored event");
    let third = expect_json(app.post_signed(body).await, 200).await;
    assert_eq!(third["status"], "duplicate");
    assert_eq!(app.count(EVENTS).await, 1);
    assert_eq!(app.count(RUNS).await, 1);
}
}

conformance! {
async fn concurrent_deliveries_of_one_event_start_work_once() {
    let app = TestApp::spawn().await;
    let body = br#"{"id":"evt-race","type":"page.updated","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"page"}}"#;
    let responses = futures::future::join_all((0..16).map(|_| app.post_signed(body))).await;
    let mut statuses = Vec::new();
    for response in responses {
        statuses.push(expect_json(response, 200).await["status"].as_str().expect("status").to_owned());
    }
    assert_eq!(statuses.iter().filter(|s| *s == "accepted").count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "duplicate").count(), 15, "{statuses:?}");
    assert_eq!(app.count(RUNS).await, 1);
}
}

conformance! {
async fn the_seed_simple_form_is_accepted_and_deduplicated_by_body() {
    let app = TestApp::spawn().await;
    let body = br#"{"type": "page.updated", "page": {"id": "1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
    let first = expect_json(app.post_signed(body).await, 200).await;
    assert_eq!(first["status"], "accepted");
    assert_eq!(expect_json(app.post_signed(body).await, 200).await["status"], "duplicate");
    let other = br#"{"type": "database.updated", "database": {"id": "1f3c8a2e4b7d8012a6e9c1d3f5a7b9e2"}}"#;
    assert_eq!(expect_json(app.post_signed(other).await, 200).await["status"], "accepted");
    let kinds: Vec<String> = on_db!(app.db, |db| sqlx::query_scalar("select notion_kind from workflow_runs order by created_at")
        .fetch_all(db)
        .await)
        .expect("runs");
    assert_eq!(kinds, ["page", "database"]);
    // The seed guide's own curl example names a page "test": not a Notion id, so nothing can
    // be synced; it is recorded and answered, not rejected.
    let seed = br#"{"type": "page.updated", "page": {"id": "test"}}"#;
    assert_eq!(expect_json(app.post_signed(seed).await, 200).await["status"], "ignored");
}
}

conformance! {
async fn unknown_event_types_are_recorded_and_ignored() {
    let app = TestApp::spawn().await;
    let body = br#"{"id":"evt-view","type":"view.created","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"view"}}"#;
    let ack = expect_json(app.post_signed(body).await, 200).await;
    assert_eq!(ack["status"], "ignored");
    let (outcome, reason): (String, String) = on_db!(app.db, |db| sqlx::query_as(
        "select outcome, ignore_reason from webhook_events where notion_event_id = 'evt-view'",
    )
    .fetch_one(db)
    .await)
    .expect("the ignored event is recorded");
    assert_eq!(outcome, "ignored");
    assert!(reason.contains("view.created"), "{reason}");
    assert_eq!(app.count(RUNS).await, 0);
}
}

conformance! {
/// Valid JSON that a reader of Notion's format would not expect (an id far longer than a
/// UUID, a number for `timestamp`, a string for `entity`) is stored and deduplicated like any
/// event, never refused: refusing a signed event loses it once Notion stops redelivering.
/// Before, the long id failed PostgreSQL's index (500) and the odd shapes were 400s.
async fn odd_but_valid_events_are_accepted_and_deduplicated() {
    let app = TestApp::spawn().await;
    let long = format!(
        r#"{{"id":"{}","type":"page.content_updated","attempt_number":1,"entity":{{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"page"}}}}"#,
        // Random, so that PostgreSQL cannot compress it below its index's size limit.
        (0..200).map(|_| uuid::Uuid::new_v4().to_string()).collect::<String>()
    );
    assert_eq!(expect_json(app.post_signed(long.as_bytes()).await, 200).await["status"], "accepted");
    let retry = long.replace("\"attempt_number\":1", "\"attempt_number\":2");
    assert_eq!(expect_json(app.post_signed(retry.as_bytes()).await, 200).await["status"], "duplicate");
    let odd = br#"{"id":"evt-odd","type":"page.updated","timestamp":1715000000,"entity":"x","data":{"parent":7},
                   "page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
    assert_eq!(expect_json(app.post_signed(odd).await, 200).await["status"], "accepted");
    assert_eq!(app.count(EVENTS).await, 2);
    assert_eq!(app.count(RUNS).await, 2);
}
}

conformance! {
async fn malformed_json_with_a_valid_signature_is_a_400() {
    let app = TestApp::spawn().await;
    expect_error(app.post_signed(b"{\"type\": \"page.updated\",").await, 400, "malformed_json").await;
    expect_error(app.post_signed(b"[]").await, 400, "invalid_event").await;
    expect_error(app.post_signed(br#"{"page":{"id":"x"}}"#).await, 400, "invalid_event").await;
    // Unsigned junk learns nothing about parsing: it is a 401.
    expect_error(app.post_webhook(b"{not json".to_vec(), None).await, 401, "invalid_signature").await;
    assert_eq!(app.count(EVENTS).await, 0);
}
}

conformance! {
async fn bodies_over_one_mebibyte_are_refused_with_or_without_content_length() {
    let app = TestApp::spawn().await;
    let limit = 1024 * 1024;
    let oversized = vec![b' '; limit + 1];
    let sig = app.sign(&oversized);
    expect_error(app.post_webhook(oversized.clone(), Some(&sig)).await, 413, "payload_too_large").await;

    // Chunked, so there is no Content-Length to trust.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        oversized.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = reqwest::Body::wrap_stream(stream::iter(chunks));
    expect_error(app.post_webhook(chunked, Some(&sig)).await, 413, "payload_too_large").await;

    // Exactly at the limit is accepted (padding after the JSON is still valid JSON).
    let mut at_limit =
        br#"{"id":"evt-big","type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#
            .to_vec();
    at_limit.resize(limit, b' ');
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        at_limit.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let sig = app.sign(&at_limit);
    let response = app.post_webhook(reqwest::Body::wrap_stream(stream::iter(chunks)), Some(&sig)).await;
    assert_eq!(expect_json(response, 200).await["status"], "accepted");
}
}

conformance! {
async fn the_handshake_is_stored_encrypted_and_readable_by_ops() {
    let app = TestApp::spawn().await;
    let token = fixtures::secret();
    let ack =
        expect_json(app.post_webhook(fixtures::bytes("webhook_verification.json"), None).await, 200).await;
    assert_eq!(ack["status"], "verification_received");

    let stored: Vec<u8> = on_db!(app.db, |db| sqlx::query_scalar("select token_ciphertext from webhook_verification_tokens")
        .fetch_one(db)
        .await)
        .expect("stored");
    assert!(!String::from_utf8_lossy(&stored).contains(&token), "the token is stored in plaintext");

    expect_error(app.get("/api/notion/webhook/verification-token").await, 401, "unauthorized").await;
    let wrong = app
        .client
        .get(app.url("/api/notion/webhook/verification-token"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("GET");
    expect_error(wrong, 401, "unauthorized").await;
    let body = expect_json(app.get_authorized("/api/notion/webhook/verification-token").await, 200).await;
    assert_eq!(body["verification_token"], token.as_str());
    assert_eq!(body["signing_secret_configured"], true);
    assert_eq!(body["verifies_events"], false, "NOTION_WEBHOOK_SECRET does");
    assert!(body["received_at"].is_string());
    assert_eq!(body["tokens_received"], 1);
}
}

conformance! {
/// The handshake needs no signature, so each instance stores at most 10 a minute: a flood of
/// made-up handshakes cannot make every request a database write (the pool webhook intake
/// needs) or grow the table without end. Signed events are not budgeted.
async fn handshakes_beyond_ten_a_minute_are_answered_429_and_not_stored() {
    let app = TestApp::spawn().await;
    for n in 0..10 {
        let body = format!(r#"{{"verification_token":"secret_flood_{n}"}}"#);
        expect_json(app.post_webhook(body.into_bytes(), None).await, 200).await;
    }
    let refused = app.post_webhook(br#"{"verification_token":"secret_flood_10"}"#.to_vec(), None).await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("text").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    expect_error(refused, 429, "too_many_handshakes").await;
    assert_eq!(app.count("select count(*) from webhook_verification_tokens").await, 10);

    let event = br#"{"id":"evt-after-flood","type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
    let signature = app.sign(event);
    assert_eq!(expect_json(app.post_webhook(event.to_vec(), Some(&signature)).await, 200).await["status"], "accepted");
}
}

conformance! {
async fn without_a_configured_secret_the_first_handshake_token_signs_events() {
    let app = TestApp::spawn_with(|s| {
        s.remove("NOTION_WEBHOOK_SECRET");
    })
    .await;
    let file = "webhook_page_created.json";
    let signature = fixtures::signatures().by_file[file].clone();
    expect_error(
        app.get_authorized("/api/notion/webhook/verification-token").await,
        404,
        "no_verification_token",
    )
    .await;
    // Fail closed: no secret known yet.
    expect_error(app.post_webhook(fixtures::bytes(file), Some(&signature)).await, 401, "no_signing_secret")
        .await;

    expect_json(app.post_webhook(fixtures::bytes("webhook_verification.json"), None).await, 200).await;
    // The negative answer above is cached for about a second.
    crate::support::eventually("the learnt token to verify the fixture", Duration::from_secs(5), || async {
        let response = app.post_webhook(fixtures::bytes(file), Some(&signature)).await;
        (response.status() == 200).then_some(())
    })
    .await;

    let body = expect_json(app.get_authorized("/api/notion/webhook/verification-token").await, 200).await;
    assert_eq!(body["verifies_events"], true, "the first token: {body}");

    // A later, unsolicited handshake cannot replace the signing key.
    let attacker = br#"{"verification_token":"secret_attacker"}"#;
    expect_json(app.post_webhook(attacker.to_vec(), None).await, 200).await;
    let forged =
        br#"{"id":"evt-forged","type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
    let forged_sig = cognie_sync::webhook::signature::sign(b"secret_attacker", forged);
    expect_error(app.post_webhook(forged.to_vec(), Some(&forged_sig)).await, 401, "invalid_signature").await;
    // Ops see the newest token (to paste into Notion) and that events use the first one.
    let body = expect_json(app.get_authorized("/api/notion/webhook/verification-token").await, 200).await;
    assert_eq!(body["verification_token"], "secret_attacker");
    assert_eq!(body["signing_secret_configured"], false);
    assert_eq!(body["verifies_events"], false, "ops see the token shown is not the one in use");
    assert_eq!(body["tokens_received"], 2, "and that more than one came");
}
}

#[tokio::test]
async fn a_database_outage_answers_503_quickly_and_recovers_without_restart() {
    if !postgres_or_skip() {
        return;
    }
    let database = TestDb::create().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let app = TestApp::spawn_on(database, Some(proxy.addr), |_| {}).await;
    let body = |n: u32| {
        format!(
            r#"{{"id":"evt-outage-{n}","type":"page.updated","page":{{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}}}"#
        )
    };
    expect_json(app.post_signed(body(1).as_bytes()).await, 200).await;

    proxy.cut();
    let started = Instant::now();
    expect_error(app.post_signed(body(2).as_bytes()).await, 503, "database_unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(5), "503 took {:?}", started.elapsed());
    expect_error(app.get("/readyz").await, 503, "database_unavailable").await;

    proxy.restore();
    crate::support::eventually("webhooks to be accepted again", Duration::from_secs(10), || async {
        let response = app.post_signed(body(2).as_bytes()).await;
        (response.status() == 200).then_some(())
    })
    .await;
    // Readiness is checked at most once a second (the 503 above may still be the answer).
    crate::support::eventually("readiness to come back", Duration::from_secs(5), || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    // Only what was answered 200 is stored: events 1 and 2, once each.
    assert_eq!(app.count(EVENTS).await, 2);
    assert_eq!(app.count(RUNS).await, 2);
}

conformance! {
async fn a_burst_of_deliveries_and_redeliveries_stores_each_event_once_and_names_it() {
    // Notion delivers many events at once when a workspace changes, and retries some of them
    // while the first delivery is still in flight: each gets its own answer, and a redelivery
    // in the same burst names the stored event.
    let app = TestApp::spawn().await;
    let body = |n: usize, attempt: usize| {
        format!(
            r#"{{"id":"evt-burst-{n}","type":"page.content_updated","attempt_number":{attempt},"entity":{{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0{n:02x}","type":"page"}}}}"#
        )
    };
    let ignored = r#"{"id":"evt-burst-view","type":"view.created","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0ff","type":"view"}}"#;
    let mut bodies: Vec<String> = (0..24).flat_map(|n| [body(n, 1), body(n, 2)]).collect();
    bodies.push(ignored.to_owned());
    let responses = futures::future::join_all(bodies.iter().map(|b| app.post_signed(b.as_bytes()))).await;
    let mut ids = std::collections::HashMap::<String, Vec<(String, String)>>::new();
    for (body, response) in bodies.iter().zip(responses) {
        let ack = expect_json(response, 200).await;
        let event: serde_json::Value = serde_json::from_str(body).expect("json");
        let key = event["id"].as_str().expect("id").to_owned();
        let status = ack["status"].as_str().expect("status").to_owned();
        ids.entry(key).or_default().push((status, ack["event_id"].as_str().expect("event_id").to_owned()));
    }
    for n in 0..24 {
        let answers = &ids[&format!("evt-burst-{n}")];
        let mut statuses: Vec<&str> = answers.iter().map(|(s, _)| s.as_str()).collect();
        statuses.sort();
        assert_eq!(statuses, ["accepted", "duplicate"], "event {n}");
        assert_eq!(answers[0].1, answers[1].1, "event {n}: both answers name the stored event");
    }
    assert_eq!(ids["evt-burst-view"][0].0, "ignored");
    assert_eq!(app.count(EVENTS).await, 25);
    assert_eq!(app.count(RUNS).await, 24, "one event run per accepted event");
    let linked = app.count("select count(*) from workflow_run_events").await;
    assert_eq!(linked, 24, "each run names its event");
    let mut stored: Vec<uuid::Uuid> = on_db!(app.db, |db| sqlx::query_scalar(
        "select e.id from webhook_events e join workflow_runs r on r.event_id = e.id"
    )
    .fetch_all(db)
    .await)
    .expect("events");
    stored.sort();
    let mut answered: Vec<uuid::Uuid> = ids
        .iter()
        .filter(|(k, _)| *k != "evt-burst-view")
        .map(|(_, a)| a[0].1.parse().expect("a uuid"))
        .collect();
    answered.sort();
    assert_eq!(stored, answered, "the ids answered are the events stored, each with its run");
}
}

conformance! {
/// PostgreSQL's JSON cannot hold a NUL character, which JSON itself allows: such an event is
/// the sender's fault (400, nothing stored, no retry storm of 5xx), on every backend alike, and
/// the deliveries around it are stored as usual.
async fn an_unstorable_event_in_a_burst_is_refused_alone() {
    let app = TestApp::spawn().await;
    let good = |n: usize| {
        format!(
            r#"{{"id":"evt-nul-{n}","type":"page.updated","entity":{{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0{n:02x}","type":"page"}}}}"#
        )
    };
    let bad = r#"{"id":"evt-nul-bad","type":"page.updated","note":"a\u0000b","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0ff","type":"page"}}"#;
    for round in 0..3 {
        let mut bodies: Vec<String> = (round * 16..round * 16 + 16).map(good).collect();
        bodies.insert(8, bad.to_owned());
        let responses = futures::future::join_all(bodies.iter().map(|b| app.post_signed(b.as_bytes()))).await;
        for (body, response) in bodies.iter().zip(responses) {
            if body == bad {
                expect_error(response, 400, "invalid_event").await;
            } else {
                assert_eq!(expect_json(response, 200).await["status"], "accepted", "{body}");
            }
        }
    }
    assert_eq!(app.count(EVENTS).await, 48);
    assert_eq!(app.count(RUNS).await, 48);
    assert_eq!(
        app.count("select count(*) from webhook_events where notion_event_id = 'evt-nul-bad'").await,
        0
    );
}
}

/// A body that breaks off (the sender's connection reset midway) is a rejection like any
/// other: logged and counted, with nothing stored.
#[tokio::test]
async fn a_body_that_breaks_off_is_counted_as_rejected() {
    let app = TestApp::spawn().await;
    let start: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(br#"{"type":"page.updated","#.to_vec())];
    // The break comes once the start is on the wire (and the handler reading it).
    let reset = stream::once(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err(std::io::Error::other("connection reset"))
    });
    let parts = stream::iter(start).chain(reset);
    // The client gives up on its own broken upload, so what it makes of the answer is moot.
    let _ = app
        .client
        .post(app.url("/api/notion/webhook/notion"))
        .header("X-Notion-Signature", "sha256=00")
        .body(reqwest::Body::wrap_stream(parts))
        .send()
        .await;
    crate::support::eventually("the broken body to be counted", Duration::from_secs(10), || async {
        let metrics = app.client.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        metrics
            .lines()
            .any(|l| l == r#"cognie_webhooks_total{outcome="rejected",reason="body_unreadable"} 1"#)
            .then_some(())
    })
    .await;
    assert_eq!(app.count(EVENTS).await, 0);
}

/// A body that stalls after its headers is cut off 10 s later with a 408 (Notion redelivers), so
/// a client trickling bytes cannot hold a connection and a task for as long as it keeps each
/// gap under the 60 s idle timeout. Nothing is stored.
#[tokio::test]
async fn a_body_that_does_not_arrive_within_ten_seconds_is_answered_408() {
    let app = TestApp::spawn().await;
    let start: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(br#"{"type":"page.updated","#.to_vec())];
    let stalled = stream::iter(start).chain(stream::pending());
    let sent = Instant::now();
    let response = app.post_webhook(reqwest::Body::wrap_stream(stalled), Some("sha256=00")).await;
    expect_error(response, 408, "request_timeout").await;
    assert!(sent.elapsed() >= Duration::from_secs(10), "cut off after {:?}", sent.elapsed());
    assert_eq!(app.count(EVENTS).await, 0);
}
