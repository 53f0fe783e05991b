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
            let grant = store.acquire_rate_limit_slots(user, 3, WINDOW, 1).await.expect("acquire");
            assert_eq!(grant, Grant::Granted(1), "grant {n} of 3");
        }
        let last_grant = Utc::now();
        let Grant::WaitUntil(until) = store.acquire_rate_limit_slots(user, 3, WINDOW, 1).await.expect("acquire") else {
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
        let Grant::WaitUntil(again) = store.acquire_rate_limit_slots(user, 3, WINDOW, 1).await.expect("acquire") else {
            panic!("granted after a refusal");
        };
        assert_eq!(again, until);
        // Every user has a budget of their own.
        assert!(matches!(store.acquire_rate_limit_slots(other, 3, WINDOW, 1).await.expect("acquire"), Grant::Granted(1)));

        // Notion's 429: no grant for the user until its Retry-After has passed.
        let blocked_at = Utc::now();
        store.block_rate_limit(other, Duration::from_secs(30)).await.expect("block");
        let Grant::WaitUntil(until) = store.acquire_rate_limit_slots(other, 3, WINDOW, 1).await.expect("acquire") else {
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
        // Some ask for one slot, some for several (a crawl's next requests).
        let attempts = (0..60).map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.acquire_rate_limit_slots(user, 25, WINDOW, 1 + n % 3).await.expect("acquire") })
        });
        let mut granted = 0;
        for attempt in attempts {
            if let Grant::Granted(n) = attempt.await.expect("task") {
                granted += n;
            }
        }
        assert_eq!(granted, 25, "60 concurrent requests for 1-3 slots at a limit of 25");
    }
}

conformance! {
    async fn several_slots_are_granted_as_far_as_they_are_free_and_count_like_single_ones() {
        let db = TestDb::create().await;
        let store = db.store().await;
        let user = store.create_user("crawler@example.com").await.expect("user").id;
        assert_eq!(store.acquire_rate_limit_slots(user, 5, WINDOW, 3).await.expect("acquire"), Grant::Granted(3));
        assert_eq!(store.acquire_rate_limit_slots(user, 5, WINDOW, 4).await.expect("acquire"), Grant::Granted(2));
        let refused = store.acquire_rate_limit_slots(user, 5, WINDOW, 1).await.expect("acquire");
        assert!(matches!(refused, Grant::WaitUntil(_)), "a sixth slot inside the window: {refused:?}");
    }
}

conformance! {
    async fn a_crawl_gets_the_token_and_its_first_slots_together_and_no_slot_without_a_token() {
        let db = TestDb::create().await;
        let store = db.store().await;
        let user = store.create_user("tokenless@example.com").await.expect("user").id;
        let none = store.notion_token_and_slots(user, 2, WINDOW, 2).await.expect("token and slots");
        assert!(none.is_none(), "a user without a token: {none:?}");
        // No slot was taken: both are still free.
        assert_eq!(store.acquire_rate_limit_slots(user, 2, WINDOW, 2).await.expect("acquire"), Grant::Granted(2));

        let other = store.create_user("connected@example.com").await.expect("user").id;
        let workspace = cognie_sync::store::NotionWorkspace::default();
        assert!(store.set_notion_token(other, b"sealed", &workspace).await.expect("token"));
        let (token, grant) =
            store.notion_token_and_slots(other, 3, WINDOW, 2).await.expect("token and slots").expect("a token");
        assert_eq!((token.ciphertext.as_slice(), grant), (&b"sealed"[..], Grant::Granted(2)));
        assert_eq!(store.acquire_rate_limit_slots(other, 3, WINDOW, 2).await.expect("acquire"), Grant::Granted(1));
    }
}

conformance! {
    /// The limiter takes at most a second's worth of a user's limit at once: a slot taken
    /// ahead and not used in time stays counted, and at 3 requests a minute a crawl that took 3
    /// and used 1 (its first request was slow) waited a minute for its second.
    async fn a_low_limit_is_taken_one_slot_at_a_time_and_a_high_one_several() {
        let db = TestDb::create().await;
        let store = db.store().await;
        let user = store.create_user("slow@example.com").await.expect("user").id;
        let low = cognie_sync::ratelimit::RateLimiter::new(store.clone(), 3);
        assert_eq!(low.acquire(user, 4).await.expect("acquire"), Grant::Granted(1));
        assert_eq!(low.acquire(user, 4).await.expect("acquire"), Grant::Granted(1), "the other two are still free");

        let fast = store.create_user("fast@example.com").await.expect("user").id;
        let high = cognie_sync::ratelimit::RateLimiter::new(store.clone(), 600);
        assert_eq!(high.acquire(fast, 4).await.expect("acquire"), Grant::Granted(4), "ten a second");
        let crawler = store.create_user("crawler@example.com").await.expect("user").id;
        let workspace = cognie_sync::store::NotionWorkspace::default();
        assert!(store.set_notion_token(crawler, b"sealed", &workspace).await.expect("token"));
        let (_, grant) = low.token_and_slots(crawler, 2).await.expect("token and slots").expect("a token");
        assert_eq!(grant, Grant::Granted(1), "the crawl's first slots too, with all three free");
    }
}
