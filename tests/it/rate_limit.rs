//! The shared per-user Notion rate limiter's state, on both backends: at most `limit` grants
//! in any window (also when many workers ask at once), a refusal that says when the first slot
//! frees, users that do not share a budget, and a 429's block that holds every grant off.

use std::time::Duration;

use chrono::Utc;
use cognie_sync::store::Grant;

use crate::{conformance, support::db::TestDb};

const WINDOW: Duration = Duration::from_secs(60);

conformance! {
    async fn the_limiter_grants_up_to_the_limit_then_says_when_the_first_slot_frees() {
        let db = TestDb::create().await;
        let store = db.store().await;
        let user = store.create_user("limited@example.com").await.expect("user").id;
        let other = store.create_user("other@example.com").await.expect("user").id;

        let first_grant = Utc::now();
        for n in 1..=3 {
            let grant = store.acquire_rate_limit_slot(user, 3, WINDOW).await.expect("acquire");
            assert!(matches!(grant, Grant::Granted), "grant {n} of 3 refused: {grant:?}");
        }
        let last_grant = Utc::now();
        let Grant::WaitUntil(until) = store.acquire_rate_limit_slot(user, 3, WINDOW).await.expect("acquire") else {
            panic!("a fourth request inside the window was granted");
        };
        // The first grant's slot frees one window after it was made; PostgreSQL counts grants
        // per second, so up to a second later, never earlier.
        assert!(until >= first_grant + WINDOW, "the slot frees before the window has passed: {until}");
        assert!(
            until <= last_grant + WINDOW + chrono::Duration::seconds(1) + chrono::Duration::milliseconds(50),
            "the slot frees more than a second after the window: {until}"
        );
        // A refusal takes no slot: asking again gives the same answer.
        let Grant::WaitUntil(again) = store.acquire_rate_limit_slot(user, 3, WINDOW).await.expect("acquire") else {
            panic!("granted after a refusal");
        };
        assert_eq!(again, until);
        // Every user has a budget of their own.
        assert!(matches!(store.acquire_rate_limit_slot(other, 3, WINDOW).await.expect("acquire"), Grant::Granted));

        // Notion's 429: no grant for the user until its Retry-After has passed.
        let blocked_at = Utc::now();
        store.block_rate_limit(other, Duration::from_secs(30)).await.expect("block");
        let Grant::WaitUntil(until) = store.acquire_rate_limit_slot(other, 3, WINDOW).await.expect("acquire") else {
            panic!("granted while blocked by a 429");
        };
        assert!(until >= blocked_at + chrono::Duration::seconds(30), "the block ends early: {until}");
    }
}

conformance! {
    async fn concurrent_requests_never_get_more_slots_than_the_limit() {
        let db = TestDb::create().await;
        let store = db.store().await;
        let user = store.create_user("busy@example.com").await.expect("user").id;
        let attempts = (0..60).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.acquire_rate_limit_slot(user, 25, WINDOW).await.expect("acquire") })
        });
        let mut granted = 0;
        for attempt in attempts {
            if matches!(attempt.await.expect("task"), Grant::Granted) {
                granted += 1;
            }
        }
        assert_eq!(granted, 25, "60 concurrent requests at a limit of 25");
    }
}
