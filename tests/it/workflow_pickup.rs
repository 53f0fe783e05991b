//! An accepted event's workflow is picked up by a worker and runs to a terminal state.

use crate::{conformance, on_db};
use std::time::Duration;

use crate::support::{TestApp, app::expect_json, eventually};

conformance! {
async fn an_accepted_event_runs_its_event_workflow_to_completion() {
    let app = TestApp::spawn().await;
    let body = br#"{"id":"evt-pickup","type":"page.content_updated","entity":{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1","type":"page"}}"#;
    let ack = expect_json(app.post_signed(body).await, 200).await;
    let event_id: uuid::Uuid = ack["event_id"].as_str().expect("event id").parse().expect("uuid");

    let (state, step_state, attempts): (String, String, i32) =
        eventually("the event workflow to finish", Duration::from_secs(10), || async {
            on_db!(app.db, |db| sqlx::query_as(
                "select r.state, s.state, s.attempts from workflow_runs r
                 join workflow_steps s on s.run_id = r.id and s.name = 'discover_users'
                 where r.event_id = $1 and r.finished_at is not null",
            )
            .bind(event_id)
            .fetch_optional(db)
            .await)
            .expect("query")
        })
        .await;
    assert_eq!((state.as_str(), step_state.as_str(), attempts), ("succeeded", "succeeded", 1));
    app.stop().await;
}
}
