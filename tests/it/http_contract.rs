//! The HTTP contract outside the webhook: health, docs, and one error body everywhere.

use crate::conformance;
use crate::support::{
    TestApp,
    app::{expect_error, expect_json},
    fixtures,
};

conformance! {
async fn health_and_readiness_answer_when_the_database_is_up() {
    let app = TestApp::spawn().await;
    assert_eq!(expect_json(app.get("/healthz").await, 200).await["status"], "ok");
    assert_eq!(expect_json(app.get("/readyz").await, 200).await["status"], "ok");
}
}

conformance! {
/// `OPS_BIND_ADDR` serves the health, readiness and metrics endpoints alone: nothing of the API,
/// its spec or Swagger UI, and the same error body for what is not there.
async fn the_ops_address_serves_health_readiness_and_metrics_only() {
    let app = TestApp::spawn_with(|s| {
        s.insert("OPS_BIND_ADDR", "127.0.0.1:0".into());
    })
    .await;
    let ops = app.ops_addr.expect("the ops endpoints listen");
    assert_ne!(ops, app.addr);
    let get = |path: &'static str| {
        let client = app.client.clone();
        async move { client.get(format!("http://{ops}{path}")).send().await.expect("ops request") }
    };
    assert_eq!(expect_json(get("/healthz").await, 200).await["status"], "ok");
    assert_eq!(expect_json(get("/readyz").await, 200).await["status"], "ok");
    // The same registry as the API's: a webhook answered there is counted here.
    expect_json(app.get("/api/notion/webhook/notion/verify?challenge=x").await, 200).await;
    let ignored = app.post_signed(&fixtures::bytes("webhook_comment_created.json")).await;
    assert_eq!(expect_json(ignored, 200).await["status"], "ignored");
    let metrics = get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("metrics text");
    assert!(text.contains("cognie_webhooks_total{outcome=\"ignored\",reason=\"\"} 1"), "{text}");
    assert!(text.contains("cognie_workflow_runs{state=\"pending\"}"), "{text}");
    for path in ["/api/users", "/openapi.json", "/docs", "/api/notion/webhook/notion/verify?challenge=x"] {
        expect_error(get(path).await, 404, "not_found").await;
    }
}
}

conformance! {
async fn the_challenge_is_echoed_and_required() {
    let app = TestApp::spawn().await;
    let body = expect_json(app.get("/api/notion/webhook/notion/verify?challenge=test123").await, 200).await;
    assert_eq!(body, serde_json::json!({"challenge": "test123"}));
    expect_error(app.get("/api/notion/webhook/notion/verify").await, 400, "missing_challenge").await;
}
}

conformance! {
async fn poems_own_errors_use_the_error_body() {
    let app = TestApp::spawn().await;
    expect_error(app.get("/no/such/route").await, 404, "not_found").await;
    let wrong_method = app.client.delete(app.url("/healthz")).send().await.expect("DELETE");
    expect_error(wrong_method, 405, "method_not_allowed").await;
    let get_webhook = app.get("/api/notion/webhook/notion").await;
    expect_error(get_webhook, 405, "method_not_allowed").await;
}
}

conformance! {
async fn swagger_ui_and_the_spec_are_served() {
    let app = TestApp::spawn().await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("html").contains("swagger"), "Swagger UI page expected");
    let spec = expect_json(app.get("/openapi.json").await, 200).await;
    assert!(spec["paths"]["/api/notion/webhook/notion"]["post"].is_object());
    assert!(spec["components"]["securitySchemes"]["ApiToken"].is_object(), "bearer scheme for Authorize");
}
}

conformance! {
async fn metrics_move_when_things_happen() {
    let app = TestApp::spawn().await;
    let scrape = || async {
        let response = app.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    };
    let before = scrape().await;
    assert!(before.contains("# TYPE cognie_webhooks_total counter"));
    assert!(before.contains("cognie_workflow_runs{state=\"pending\"} 0"), "{before}");
    assert!(before.contains("process_resident_memory_bytes"));

    let body =
        br#"{"id":"evt-metrics","type":"page.updated","page":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"}}"#;
    expect_json(app.post_signed(body).await, 200).await;
    expect_json(app.post_signed(body).await, 200).await;
    expect_error(app.post_webhook(body.to_vec(), Some("sha256=00")).await, 401, "invalid_signature").await;

    let after = crate::support::eventually(
        "the event run to show in the metrics",
        std::time::Duration::from_secs(10),
        || async {
            let text = scrape().await;
            text.contains("cognie_workflow_runs{state=\"succeeded\"} 1").then_some(text)
        },
    )
    .await;
    assert!(after.contains("cognie_webhooks_total{outcome=\"accepted\",reason=\"\"} 1"), "{after}");
    assert!(after.contains("cognie_webhooks_total{outcome=\"duplicate\",reason=\"\"} 1"));
    assert!(after.contains("cognie_webhooks_total{outcome=\"rejected\",reason=\"signature_malformed\"} 1"));
    assert!(
        after.contains("cognie_step_duration_seconds_count{step=\"discover_users\",outcome=\"succeeded\"} 1")
    );
}
}
