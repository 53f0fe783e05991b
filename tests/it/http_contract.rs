//! The HTTP contract outside the webhook: health, docs, and one error body everywhere.

use crate::support::{
    TestApp,
    app::{expect_error, expect_json},
};

#[tokio::test]
async fn health_and_readiness_answer_when_the_database_is_up() {
    let app = TestApp::spawn().await;
    assert_eq!(expect_json(app.get("/healthz").await, 200).await["status"], "ok");
    assert_eq!(expect_json(app.get("/readyz").await, 200).await["status"], "ok");
}

#[tokio::test]
async fn the_challenge_is_echoed_and_required() {
    let app = TestApp::spawn().await;
    let body = expect_json(app.get("/api/notion/webhook/notion/verify?challenge=test123").await, 200).await;
    assert_eq!(body, serde_json::json!({"challenge": "test123"}));
    expect_error(app.get("/api/notion/webhook/notion/verify").await, 400, "missing_challenge").await;
}

#[tokio::test]
async fn poems_own_errors_use_the_error_body() {
    let app = TestApp::spawn().await;
    expect_error(app.get("/no/such/route").await, 404, "not_found").await;
    let wrong_method = app.client.delete(app.url("/healthz")).send().await.expect("DELETE");
    expect_error(wrong_method, 405, "method_not_allowed").await;
    let get_webhook = app.get("/api/notion/webhook/notion").await;
    expect_error(get_webhook, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn swagger_ui_and_the_spec_are_served() {
    let app = TestApp::spawn().await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("html").contains("swagger"), "Swagger UI page expected");
    let spec = expect_json(app.get("/openapi.json").await, 200).await;
    assert!(spec["paths"]["/api/notion/webhook/notion"]["post"].is_object());
    assert!(spec["components"]["securitySchemes"]["ApiToken"].is_object(), "bearer scheme for Authorize");
}
