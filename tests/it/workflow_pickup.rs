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

conformance! {
async fn events_one_at_a_time_are_each_picked_up_by_their_notification_not_by_the_poll() {
    // The poll (60 s) and apalis's worker heartbeat (5 s, which also wakes the worker) are far
    // longer than each event's deadline (2 s, normally ~10 ms): every event must be picked up
    // because its commit woke the worker. With apalis's own strategies, events sent one at a
    // time, each right after the previous one's run finished, lost several wake-ups in 40 (the
    // test took 20 s instead of 2).
    let app = TestApp::spawn_with(|s| {
        s.insert("WORKER_POLL_INTERVAL_MS", "60000".into());
    })
    .await;
    for i in 0..40 {
        let body = format!(
            r#"{{"id":"evt-wake-{i}","type":"page.content_updated","entity":{{"id":"1f3c8a2e4b7d80a19c5ed2f4a6b8c{i:03}","type":"page"}}}}"#
        );
        let ack = expect_json(app.post_signed(body.as_bytes()).await, 200).await;
        let event_id: uuid::Uuid = ack["event_id"].as_str().expect("event id").parse().expect("uuid");
        let state: String = eventually(&format!("event {i}'s run to be picked up and finish"), Duration::from_secs(2), || async {
            on_db!(app.db, |db| sqlx::query_scalar(
                "select state from workflow_runs where event_id = $1 and finished_at is not null",
            )
            .bind(event_id)
            .fetch_optional(db)
            .await)
            .expect("query")
        })
        .await;
        assert_eq!(state, "succeeded", "event {i}");
    }
    app.stop().await;
}
}
