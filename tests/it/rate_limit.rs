//! The shared per-user Notion rate limiter's state, on both backends: at most `limit` grants
//! in any window (also when many workers ask at once), a refusal that says when the first slot
//! frees, waiters told their turns one after another, users that do not share a budget, and a
//! 429's block that holds every grant off.

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
            // The refusal is read as a wait from now: a round trip and scheduling later.
            until <= last_grant + WINDOW + chrono::Duration::seconds(1) + chrono::Duration::milliseconds(1_000),
            "the slot frees more than a second after the window: {until}"
        );
        // A refusal takes no slot: the next waiter's turn is when the next slot frees, here
        // the same moment (the grants were made together).
        let Grant::WaitUntil(again) = store.acquire_rate_limit_slots(user, 3, WINDOW, 1).await.expect("acquire") else {
            panic!("granted after a refusal");
        };
        // The same moment, or a second later on PostgreSQL when a second began between the
        // grants (read as a wait from now: give or take a round trip and a busy machine).
        let apart = (again - until).num_milliseconds();
        assert!((-1_000..2_000).contains(&apart), "{again} is not {until}");
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
    async fn waiters_are_told_their_turns_one_after_another_not_all_the_same_moment() {
        let db = TestDb::create().await;
        let store = db.store().await;
        let user = store.create_user("line@example.com").await.expect("user").id;
        for _ in 0..2 {
            assert_eq!(store.acquire_rate_limit_slots(user, 2, WINDOW, 1).await.expect("acquire"), Grant::Granted(1));
        }
        let mut turns = Vec::new();
        for n in 0..4 {
            match store.acquire_rate_limit_slots(user, 2, WINDOW, 1).await.expect("acquire") {
                Grant::WaitUntil(turn) => turns.push(turn),
                granted => panic!("waiter {n} was granted: {granted:?}"),
            }
        }
        let apart = |a: chrono::DateTime<Utc>, b: chrono::DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
        // The first two waiters get the two slots of this window as they free (the grants
        // were made moments apart: the same moment, give or take PostgreSQL's one-second
        // buckets and a busy machine)...
        assert!(apart(turns[0], turns[1]).abs() < 1.5, "{turns:?}");
        // ...and the next two the same slots a window later, once the first two have taken
        // them (and a second more, from a turn to its grant), not the first moment again.
        for (later, earlier) in [(2, 0), (3, 1)] {
            let gap = apart(turns[earlier], turns[later]);
            assert!((60.0..=62.5).contains(&gap), "waiter {later} is {gap} s after waiter {earlier}: {turns:?}");
        }
        // A caller that will not come back (asks for 0 slots) takes no place: at a limit of one,
        // each place is a window after the one before, and the waiter after it is told the
        // next one.
        let single = store.create_user("single@example.com").await.expect("user").id;
        assert_eq!(store.acquire_rate_limit_slots(single, 1, WINDOW, 1).await.expect("acquire"), Grant::Granted(1));
        let turn = |grant: Grant| match grant {
            Grant::WaitUntil(turn) => turn,
            granted => panic!("granted: {granted:?}"),
        };
        let first = turn(store.acquire_rate_limit_slots(single, 1, WINDOW, 1).await.expect("acquire"));
        turn(store.acquire_rate_limit_slots(single, 1, WINDOW, 0).await.expect("acquire"));
        let next = turn(store.acquire_rate_limit_slots(single, 1, WINDOW, 1).await.expect("acquire"));
        let gap = apart(first, next);
        assert!((60.0..=62.5).contains(&gap), "the next waiter is {gap} s after the first");
        // The line only says when to come back: a grant is decided by the window alone.
        let other = store.create_user("free@example.com").await.expect("user").id;
        assert_eq!(store.acquire_rate_limit_slots(other, 2, WINDOW, 1).await.expect("acquire"), Grant::Granted(1));
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

/// A grant that waited for the user's row (another worker's grant holding it, a lock holder
/// starved of CPU) is counted from when it was made, not from when its statement began: dated
/// earlier, its slot would leave the window early, and one request too many could reach Notion
/// within a window.
#[tokio::test]
async fn a_grant_that_waited_for_the_users_row_is_counted_from_when_it_was_made() {
    if !crate::support::db::postgres_or_skip() {
        return;
    }
    let db = TestDb::create_postgres().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let user = store.create_user("waiting@example.com").await.expect("user").id;
    assert_eq!(store.acquire_rate_limit_slots(user, 2, WINDOW, 1).await.expect("acquire"), Grant::Granted(1));

    // Another transaction holds the user's row while the grant is asked for.
    let mut holder = pool.pg().begin().await.expect("begin");
    sqlx::query("select 1 from notion_rate_limits where user_id = $1 for update")
        .bind(user.0)
        .execute(&mut *holder)
        .await
        .expect("lock");
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.acquire_rate_limit_slots(user, 2, WINDOW, 1).await }
    });
    crate::support::eventually("the grant to wait for the row", Duration::from_secs(10), || {
        let pool = pool.pg().clone();
        async move {
            let waiters: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("locks");
            (waiters > 0).then_some(())
        }
    })
    .await;
    // Long enough that the statement's start and the grant fall in different seconds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let released: f64 = sqlx::query_scalar("select extract(epoch from clock_timestamp())::float8")
        .fetch_one(&mut *holder)
        .await
        .expect("clock");
    holder.commit().await.expect("release");

    assert_eq!(waiting.await.expect("task").expect("acquire"), Grant::Granted(1));
    let seconds: Vec<i64> =
        sqlx::query_scalar("select grant_seconds from notion_rate_limits where user_id = $1")
            .bind(user.0)
            .fetch_one(pool.pg())
            .await
            .expect("buckets");
    let newest = *seconds.last().expect("a bucket");
    assert!(
        newest >= released.floor() as i64,
        "the grant is filed under second {newest}, before the row was free at {released}: {seconds:?}"
    );
}
