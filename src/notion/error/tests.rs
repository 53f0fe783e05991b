use std::time::Duration;

use super::NotionError;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/notion/", $name)).as_slice()
    };
}

fn api_error(status: u16, code: &str) -> NotionError {
    let body = serde_json::json!({
        "object": "error", "status": status, "code": code, "message": "something", "request_id": "r-1"
    });
    NotionError::from_api_response(status, None, body.to_string().as_bytes())
}

#[test]
fn a_401_fixture_is_a_fatal_unauthorized_error_with_notions_code_and_message() {
    let err = NotionError::from_api_response(401, None, fixture!("error_401_unauthorized.json"));
    assert_eq!(err.error_kind(), "notion_unauthorized");
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some("unauthorized"));
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.to_string(), "Notion answered HTTP 401 (unauthorized): API token is invalid.");
}

#[test]
fn a_404_fixture_is_a_fatal_not_found_error() {
    let err = NotionError::from_api_response(404, None, fixture!("error_404_object_not_found.json"));
    assert_eq!(err.error_kind(), "notion_not_found");
    assert!(err.is_not_found());
    assert!(!err.is_retryable());
    let NotionError::Api { request_id, .. } = &err else { panic!("expected an API error, got {err:?}") };
    assert_eq!(request_id.as_deref(), Some("c4e6a8b0-2d3f-4b5d-9f7b-1d3f5b7d9f1b"));
}

#[test]
fn a_400_validation_error_is_a_fatal_invalid_request_that_keeps_the_additional_data() {
    let err = NotionError::from_api_response(400, None, fixture!("error_400_multiple_data_sources.json"));
    assert_eq!(err.error_kind(), "notion_invalid_request");
    assert!(!err.is_retryable());
    let NotionError::Api { additional_data: Some(data), .. } = &err else {
        panic!("no additional data: {err:?}")
    };
    assert_eq!(data["child_data_source_ids"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_403_is_a_fatal_forbidden_error() {
    let err = api_error(403, "restricted_resource");
    assert_eq!(err.error_kind(), "notion_forbidden");
    assert!(!err.is_retryable());
}

#[test]
fn a_429_waits_for_the_retry_after_header() {
    let err = NotionError::from_api_response(429, Some("17"), fixture!("error_429_rate_limited.json"));
    assert_eq!(err.error_kind(), "notion_rate_limited");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
}

#[test]
fn a_429_without_the_header_falls_back_to_the_bodys_retry_after() {
    let err = NotionError::from_api_response(429, None, fixture!("error_429_rate_limited.json"));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
}

#[test]
fn the_retry_after_header_wins_over_the_body() {
    let err = NotionError::from_api_response(429, Some(" 3 "), fixture!("error_429_rate_limited.json"));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
}

#[test]
fn a_retry_after_http_date_in_the_past_means_no_wait() {
    let err = NotionError::from_api_response(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b"{}");
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
}

#[test]
fn an_absurd_retry_after_is_capped() {
    let err = NotionError::from_api_response(429, Some("99999999"), b"");
    assert_eq!(err.retry_after(), Some(super::MAX_RETRY_AFTER));
}

#[test]
fn a_429_that_notion_says_will_not_help_to_retry_is_fatal() {
    let body = serde_json::json!({
        "object": "error", "status": 429, "code": "rate_limited", "message": "blocked",
        "additional_data": {"rate_limit_reason": "public_api_request_blocked"}
    });
    let err = NotionError::from_api_response(429, None, body.to_string().as_bytes());
    assert_eq!(err.error_kind(), "notion_request_blocked");
    assert!(!err.is_retryable());
}

#[test]
fn a_529_is_a_retryable_overload() {
    let err = NotionError::from_api_response(529, Some("2"), b"");
    assert_eq!(err.error_kind(), "notion_overloaded");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
}

#[test]
fn server_errors_are_retryable() {
    for (status, code) in [
        (500, "internal_server_error"),
        (502, "bad_gateway"),
        (503, "service_unavailable"),
        (503, "database_connection_unavailable"),
        (504, "gateway_timeout"),
    ] {
        let err = api_error(status, code);
        assert_eq!(err.error_kind(), "notion_server_error", "{status} {code}");
        assert!(err.is_retryable(), "{status} {code}");
    }
}

#[test]
fn a_409_conflict_is_retryable() {
    let err = api_error(409, "conflict_error");
    assert_eq!(err.error_kind(), "notion_conflict");
    assert!(err.is_retryable());
}

#[test]
fn an_error_body_that_is_not_notions_is_classified_by_status_and_not_echoed() {
    let err = NotionError::from_api_response(502, None, b"<html>Bad Gateway secret_abc</html>");
    assert_eq!(err.error_kind(), "notion_server_error");
    assert!(err.is_retryable());
    assert_eq!(err.code(), None);
    assert!(!err.to_string().contains("secret_abc"));
    assert!(!format!("{err:?}").contains("secret_abc"));
}

#[test]
fn an_unexpected_status_is_fatal() {
    let err = api_error(405, "invalid_request_url");
    assert_eq!(err.error_kind(), "notion_unexpected_status");
    assert!(!err.is_retryable());
}

#[test]
fn a_malformed_success_body_is_retryable() {
    let err = NotionError::MalformedResponse { status: 200, detail: "not JSON".into() };
    assert_eq!(err.error_kind(), "notion_malformed_response");
    assert!(err.is_retryable());
}

#[test]
fn a_reused_oauth_code_is_a_fatal_invalid_grant() {
    let err = NotionError::from_oauth_response(400, None, fixture!("oauth_token_error_invalid_grant.json"));
    assert_eq!(err.error_kind(), "notion_oauth_invalid_grant");
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some("invalid_grant"));
    assert!(err.to_string().contains("this code has been revoked"), "{err}");
}

#[test]
fn oauth_client_errors_are_named_apart_from_other_oauth_errors() {
    let invalid_client = NotionError::from_oauth_response(401, None, br#"{"error":"invalid_client"}"#);
    assert_eq!(invalid_client.error_kind(), "notion_oauth_invalid_client");
    let invalid_request = NotionError::from_oauth_response(
        400,
        None,
        br#"{"error":"invalid_request","error_description":"body.redirect_uri should be defined"}"#,
    );
    assert_eq!(invalid_request.error_kind(), "notion_oauth_failed");
}

#[test]
fn the_token_endpoint_can_still_answer_in_notions_own_error_shape() {
    let missing_version = NotionError::from_oauth_response(
        400,
        None,
        br#"{"object":"error","status":400,"code":"missing_version","message":"Notion-Version header failed validation"}"#,
    );
    assert_eq!(missing_version.error_kind(), "notion_invalid_request");
    let limited = NotionError::from_oauth_response(429, Some("5"), fixture!("error_429_rate_limited.json"));
    assert_eq!(limited.error_kind(), "notion_rate_limited");
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(5)));
}

#[test]
fn an_invalid_grant_in_notions_own_error_shape_is_still_the_grant_problem() {
    let err = NotionError::from_oauth_response(
        400,
        None,
        br#"{"object":"error","status":400,"code":"invalid_grant","message":"Invalid code."}"#,
    );
    assert_eq!(err.error_kind(), "notion_oauth_invalid_grant");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("Invalid code."), "{err}");
}

#[test]
fn a_secret_quoted_by_notion_is_blanked_out_of_every_message() {
    let refresh = "nrt_4f1c9b2e";
    let quoted = format!("body.refresh_token `{refresh}` is not valid");
    let errors = [
        NotionError::OAuth { status: 400, error: "invalid_grant".into(), description: Some(quoted.clone()) },
        NotionError::Api {
            status: 400,
            code: Some("validation_error".into()),
            message: quoted.clone(),
            request_id: None,
            retry_after: None,
            additional_data: None,
        },
        NotionError::MalformedResponse { status: 502, detail: quoted },
    ];
    for e in errors {
        let kind = e.error_kind();
        let clean = e.without_secret(refresh, "[refresh_token]");
        let text = clean.to_string();
        assert!(!text.contains(refresh), "{text}");
        assert!(text.contains("[refresh_token]"), "{text}");
        assert_eq!(clean.error_kind(), kind, "the class is kept");
    }
}

#[test]
fn a_404_whose_body_is_not_notions_is_retried_and_not_taken_for_gone() {
    let err = NotionError::from_api_response(404, None, b"<html><body>404 Not Found</body></html>");
    assert!(!err.is_not_found(), "a proxy's 404 says nothing about the page");
    assert_eq!(err.error_kind(), "notion_unconfirmed_not_found");
    assert!(err.is_retryable());
}

#[test]
fn a_rejected_start_cursor_is_told_apart_from_other_validation_errors() {
    let body = serde_json::json!({
        "object": "error", "status": 400, "code": "validation_error",
        "message": "The start_cursor provided is invalid: 393abc1e-edcd-817b-a1c5-00aa0b6d6f2e",
    });
    let rejected = NotionError::from_api_response(400, None, body.to_string().as_bytes());
    assert!(rejected.is_cursor_rejected());
    assert_eq!(rejected.error_kind(), "notion_invalid_request", "classified as before when not handled");

    let other = NotionError::from_api_response(400, None, fixture!("error_400_multiple_data_sources.json"));
    assert!(!other.is_cursor_rejected());
    assert!(!api_error(404, "object_not_found").is_cursor_rejected());
}
