//! The engine: fan-out to subscribers, debounce, and the order of syncs of one content.

use crate::{conformance, on_db};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::support::{
    TestApp,
    app::{API_TOKEN, expect_json},
    eventually,
};

const PAGE: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";
const DATABASE: &str = "1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2";
const DATA_SOURCE: &str = "1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b";

/// A signed `page.content_updated` for PAGE (a row of DATABASE), with a unique event id.
fn page_event(n: usize) -> Vec<u8> {
    json!({
        "id": format!("evt-{n}-{}", uuid::Uuid::new_v4()),
        "type": "page.content_updated",
        "entity": {"id": PAGE, "type": "page"},
        "data": {"parent": {"id": DATABASE, "type": "database", "data_source_id": DATA_SOURCE}}
    })
    .to_string()
    .into_bytes()
}

/// The sync runs' (user, notion id, number of coalesced events), once no sync is debouncing.
async fn settled_syncs(app: &TestApp) -> Vec<(uuid::Uuid, String, i64)> {
    eventually("every sync to leave debounce", Duration::from_secs(15), || async {
        let debouncing = app
            .count("select count(*) from workflow_runs where workflow = 'notion_sync' and current_step = 'debounce'")
            .await;
        let pending_events = app
            .count("select count(*) from workflow_runs where workflow = 'notion_event' and state <> 'succeeded'")
            .await;
        (debouncing == 0 && pending_events == 0).then_some(())
    })
    .await;
    on_db!(app.db, |db| sqlx::query_as(
        "select r.user_id, r.notion_id, count(e.event_id) from workflow_runs r
         left join workflow_run_events e on e.run_id = r.id
         where r.workflow = 'notion_sync' group by r.id order by r.created_at",
    )
    .fetch_all(db)
    .await)
    .expect("syncs")
}

conformance! {
async fn an_event_starts_one_sync_per_subscriber_of_the_page_or_its_database() {
    let app = TestApp::spawn_with(|s| {
        s.insert("DEBOUNCE_SECONDS", "0".into());
    })
    .await;
    let by_page = app.insert_user("page@example.com").await;
    let by_database = app.insert_user("db@example.com").await;
    let unrelated = app.insert_user("other@example.com").await;
    app.insert_subscription(by_page, PAGE, "page").await;
    app.insert_subscription(by_database, DATABASE, "database").await;
    app.insert_subscription(unrelated, "1f3c8a2e-4b7d-8000-0000-000000000000", "page").await;

    expect_json(app.post_signed(&page_event(1)).await, 200).await;

    let mut syncs = settled_syncs(&app).await;
    syncs.sort();
    let mut expected = vec![(by_page, PAGE.to_owned(), 1), (by_database, PAGE.to_owned(), 1)];
    expected.sort();
    assert_eq!(syncs, expected, "each subscriber re-syncs the page that changed, once");
    let parents = app
        .count(
            "select count(*) from workflow_runs s join workflow_runs e on e.id = s.parent_id
             where s.workflow = 'notion_sync' and e.workflow = 'notion_event'",
        )
        .await;
    assert_eq!(parents, 2, "sync runs name the event run that started them");
}
}

conformance! {
async fn a_data_source_event_re_syncs_the_subscribed_database() {
    let app = TestApp::spawn_with(|s| {
        s.insert("DEBOUNCE_SECONDS", "0".into());
    })
    .await;
    let user = app.insert_user("db@example.com").await;
    app.insert_subscription(user, DATABASE, "database").await;
    let event = json!({
        "id": "evt-ds", "type": "data_source.content_updated",
        "entity": {"id": DATA_SOURCE, "type": "data_source"},
        "data": {"parent": {"id": DATABASE, "type": "database"}}
    });
    expect_json(app.post_signed(event.to_string().as_bytes()).await, 200).await;
    let syncs = settled_syncs(&app).await;
    assert_eq!(syncs, vec![(user, DATABASE.to_owned(), 1)]);
    let kind: String =
        on_db!(app.db, |db| sqlx::query_scalar("select notion_kind from workflow_runs where workflow = 'notion_sync'")
            .fetch_one(db)
            .await)
            .expect("sync");
    assert_eq!(kind, "database");
}
}

conformance! {
async fn rapid_edits_coalesce_into_one_sync_that_keeps_every_event() {
    let app = TestApp::spawn_with(|s| {
        // Long enough that five requests one after another land inside it on a loaded machine.
        s.insert("DEBOUNCE_SECONDS", "3".into());
        s.insert("DEBOUNCE_MAX_WAIT_SECONDS", "30".into());
    })
    .await;
    let user = app.insert_user("u@example.com").await;
    app.insert_subscription(user, PAGE, "page").await;

    for n in 0..5 {
        expect_json(app.post_signed(&page_event(n)).await, 200).await;
    }
    let syncs = settled_syncs(&app).await;
    assert_eq!(syncs, vec![(user, PAGE.to_owned(), 5)], "five quick edits, one sync");

    // The sync left debounce no sooner than DEBOUNCE_SECONDS after the last event.
    let (finished, last_event): (DateTime<Utc>, DateTime<Utc>) = on_db!(app.db, |db| sqlx::query_as(
        "select s.finished_at, (select max(received_at) from webhook_events)
         from workflow_steps s join workflow_runs r on r.id = s.run_id
         where r.workflow = 'notion_sync' and s.name = 'debounce'",
    )
    .fetch_one(db)
    .await)
    .expect("debounce step");
    let quiet = (finished - last_event).num_milliseconds() as f64 / 1000.0;
    assert!(quiet >= 2.95, "debounce ended {quiet:.2}s after the last event, expected >= 3s");
}
}

conformance! {
async fn debounce_never_defers_a_sync_past_the_max_wait() {
    let app = TestApp::spawn_with(|s| {
        s.insert("DEBOUNCE_SECONDS", "1".into());
        s.insert("DEBOUNCE_MAX_WAIT_SECONDS", "2".into());
    })
    .await;
    let user = app.insert_user("u@example.com").await;
    app.insert_subscription(user, PAGE, "page").await;

    // An edit every 300 ms for 4 s: the quiet period never comes.
    let start = tokio::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(4) {
        expect_json(app.post_signed(&page_event(n)).await, 200).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let syncs = settled_syncs(&app).await;
    assert!(syncs.len() >= 2, "the cap must have released a sync while edits continued: {syncs:?}");
    let total: i64 = syncs.iter().map(|s| s.2).sum();
    assert_eq!(total, n as i64, "every event is kept on exactly one sync");
    // The deadline each sync was given, not when a loaded machine got round to it: no deadline
    // is later than the cap after the sync's first event.
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = on_db!(app.db, |db| sqlx::query_as(
        "select r.debounce_until, r.debounce_started_at
         from workflow_steps s join workflow_runs r on r.id = s.run_id
         where r.workflow = 'notion_sync' and s.name = 'debounce' and s.state = 'succeeded'",
    )
    .fetch_all(db)
    .await)
    .expect("debounce steps");
    let longest = spans.iter().map(|(until, start)| (*until - *start).num_milliseconds()).max().unwrap_or(0);
    assert!(longest <= 2_000, "a sync's debounce deadline was {longest} ms after its first event; the cap is 2 s");
}
}

conformance! {
/// A sync whose worker died in debounce, while another sync of the same content started
/// collecting events: the lease sweeper hands its events to that sync and ends it (it cannot go
/// back to waiting beside it), and keeps taking over every other expired lease.
async fn an_expired_debounce_beside_a_newer_debouncing_sync_is_merged_into_it() {
    let app = TestApp::spawn_with(|s| {
        s.insert("STEP_LEASE_SECONDS", "1".into());
        s.insert("DEBOUNCE_SECONDS", "30".into());
        s.insert("DEBOUNCE_MAX_WAIT_SECONDS", "60".into());
    })
    .await;
    let user = app.insert_user("u@example.com").await;
    // An event nobody subscribes to, to hang on the dead sync.
    let ack = expect_json(app.post_signed(&page_event(0)).await, 200).await;
    let event: uuid::Uuid = ack["event_id"].as_str().expect("event id").parse().expect("uuid");

    let (dead, newer, other_page) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (now, past) = (app.db.now_sql(), app.db.shifted_sql(app.db.now_sql(), -1));
    let insert = format!(
        "insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
             dispatch_seq, lease_owner, lease_token, lease_expires_at, debounce_started_at, debounce_until)
         values ($1, 'notion_sync', $2, $3, $4, $5, 'page', 'webhook', 1, $6, $7, {past}, {now}, {now})"
    );
    for (id, state, step, page, lease) in [
        (dead, "running", "debounce", PAGE, Some(uuid::Uuid::new_v4())),
        (newer, "waiting", "debounce", PAGE, None),
        (other_page, "running", "fetch", "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e9", Some(uuid::Uuid::new_v4())),
    ] {
        on_db!(app.db, |db| sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(id)
            .bind(state)
            .bind(step)
            .bind(user)
            .bind(page)
            .bind(lease.map(|_| "dead-worker"))
            .bind(lease)
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("insert run");
    }
    on_db!(app.db, |db| sqlx::query("insert into workflow_run_events (run_id, event_id) values ($1, $2)")
        .bind(dead)
        .bind(event)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("link event");

    let detail = |id: uuid::Uuid| {
        let app = &app;
        async move { expect_json(app.get_authorized(&format!("/api/workflows/{id}")).await, 200).await }
    };
    let merged = eventually("the dead debounce to be merged", Duration::from_secs(15), || async {
        let run = detail(dead).await;
        (run["state"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(merged["current_step"], "debounce", "{merged}");
    let newer_run = detail(newer).await;
    assert_eq!(newer_run["state"], "waiting", "the newer sync keeps collecting: {newer_run}");
    assert!(
        newer_run["event_ids"].as_array().is_some_and(|ids| ids.contains(&json!(event))),
        "the dead sync's event moved to the newer one: {newer_run}"
    );
    // The other expired lease was taken over too (it runs again; its outcome is not the point).
    eventually("the other expired step to be taken over", Duration::from_secs(15), || async {
        let run = detail(other_page).await;
        (run["state"] != "running" || run["attempt"].as_i64() > Some(1)).then_some(())
    })
    .await;
}
}

conformance! {
/// A run's first step that only touches the database runs in the transaction of its claim.
/// When it fails, that transaction (claim included) is undone with the step's writes: the
/// failure must still be recorded as one attempt of the step, and the run must not be left
/// pending with its job used up.
async fn a_failing_first_step_is_recorded_although_its_claim_was_undone() {
    let app = TestApp::spawn_with(|s| {
        s.insert("STEP_LEASE_SECONDS", "1".into());
    })
    .await;
    // An event run that names no event: discover_users fails at once (fatal). It is left as
    // a worker that died mid-step would leave it, so the lease sweeper dispatches it.
    let run = uuid::Uuid::now_v7();
    let past = app.db.shifted_sql(app.db.now_sql(), -1);
    let insert = format!(
        "insert into workflow_runs (id, workflow, state, current_step, trigger, dispatch_seq, attempt,
             lease_owner, lease_token, lease_expires_at)
         values ($1, 'notion_event', 'running', 'discover_users', 'webhook', 1, 0, 'dead-worker', $2, {past})"
    );
    on_db!(app.db, |db| sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
        .bind(run)
        .bind(uuid::Uuid::new_v4())
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("insert run");

    let detail = eventually("the run to fail", Duration::from_secs(15), || async {
        let detail = expect_json(app.get_authorized(&format!("/api/workflows/{run}")).await, 200).await;
        (detail["state"] == "failed").then_some(detail)
    })
    .await;
    assert_eq!(detail["error_kind"], "event_missing", "{detail}");
    let steps = detail["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{detail}");
    assert_eq!(steps[0]["name"], "discover_users");
    assert_eq!(steps[0]["state"], "failed");
    assert_eq!(steps[0]["attempts"], 1, "the undone claim is not counted twice: {detail}");
    let history: Vec<(String, Option<String>)> = on_db!(app.db, |db| sqlx::query_as(
        "select step, outcome from workflow_step_attempts where run_id = $1"
    )
    .bind(run)
    .fetch_all(db)
    .await)
    .expect("attempt history");
    assert_eq!(history, [("discover_users".to_owned(), Some("failed".to_owned()))]);
}
}

/// A sync blocked behind an earlier sync of the same content waits with a long recheck and
/// is woken by the earlier one's end. Here that end commits while the blocked sync's debounce
/// is deciding: after it read the earlier sync as unfinished, before its wait commits. The end
/// then finds no waiting sync to wake (on disk the blocked one is still `pending`); the blocked
/// sync must be woken anyway, not sit out its recheck. (PostgreSQL only: on SQLite the
/// debounce's transaction holds the only write lock, so the end cannot commit in between.)
#[tokio::test]
async fn a_sync_whose_blocker_ends_while_its_debounce_decides_is_still_woken_at_once() {
    use cognie_sync::{
        ids::RunId,
        store::{Transition, jobs::StepJob},
    };

    if !crate::support::db::postgres_or_skip() {
        return;
    }
    let db = crate::support::db::TestDb::create_postgres().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let user = store.create_user("blocked@example.com").await.expect("user").id;
    let (earlier, blocked) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (id, state, step, lease) in
        [(earlier, "running", "fetch", Some(uuid::Uuid::new_v4())), (blocked, "pending", "debounce", None)]
    {
        sqlx::query(
            "insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
                 dispatch_seq, next_run_at, lease_owner, lease_token, lease_expires_at,
                 debounce_started_at, debounce_until)
             values ($1, 'notion_sync', $2, $3, $4, $5, 'page', 'webhook', 1, now(), $6, $7,
                     now() + interval '1 minute', now() - interval '1 minute', now() - interval '1 second')",
        )
        .bind(id)
        .bind(state)
        .bind(step)
        .bind(user.0)
        .bind(PAGE)
        .bind(lease.map(|_| "other-worker"))
        .bind(lease)
        .execute(pool.pg())
        .await
        .expect("insert run");
    }

    let job = StepJob { run_id: RunId(blocked), seq: 1 };
    let (claim, mut tx) = store
        .claim_and_begin(job, "this-worker", Duration::from_secs(30), |step| step == "debounce")
        .await
        .expect("claim")
        .expect("the blocked sync's debounce is claimed");
    let state = tx.debounce_state(RunId(blocked)).await.expect("debounce state");
    assert!(state.blocked, "the earlier sync is still fetching");
    // The earlier sync ends (an ops cancel wakes the next sync as a step's end does, and
    // wakes the workers for it: they are not left to find it at their next poll).
    let mut listener = sqlx::postgres::PgListener::connect_with(pool.pg()).await.expect("listener");
    listener.listen("apalis::job::insert").await.expect("listen");
    store.cancel_run(RunId(earlier), "test").await.expect("cancel the earlier sync");
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the cancel wakes the workers")
        .expect("a notification");
    // The debounce step records the wait it decided on: its recheck, 10 s away.
    let wait = Transition::Wait {
        at: Utc::now() + chrono::Duration::seconds(10),
        error: None,
        output: None,
        spend_attempt: false,
        progressed: false,
    };
    tx.apply_transition(&claim, &wait).await.expect("record the wait");
    tx.commit().await.expect("commit");

    let (next_run_at, due_jobs): (DateTime<Utc>, i64) = sqlx::query_as(
        "select r.next_run_at, (select count(*) from apalis.jobs j
                                where j.job_type = 'cognie_sync.steps' and j.status = 'Pending'
                                  and j.run_at <= now() + interval '1 second')
         from workflow_runs r where r.id = $1",
    )
    .bind(blocked)
    .fetch_one(pool.pg())
    .await
    .expect("the blocked sync");
    assert!(
        next_run_at <= Utc::now() + chrono::Duration::seconds(1),
        "the blocked sync waits until {next_run_at} although the sync it waited for has ended"
    );
    assert!(due_jobs >= 1, "a job due now takes the woken sync");
}

conformance! {
/// A subscription that joins a sync waiting in debounce makes that sync its own, kind
/// included: a page unsubscribed and followed again as a database, while an edit's sync of it
/// waits, is fetched as a database. Before, the joined run kept `page` and read a database id
/// as a page.
async fn a_new_subscription_joining_a_debouncing_sync_sets_its_kind() {
    let app = TestApp::spawn_with(|s| {
        s.insert("DEBOUNCE_SECONDS", "30".into());
        s.insert("DEBOUNCE_MAX_WAIT_SECONDS", "60".into());
    })
    .await;
    let user = app.insert_user("kind@example.com").await;
    app.insert_subscription(user, PAGE, "page").await;
    expect_json(app.post_signed(&page_event(1)).await, 200).await;
    let waiting: uuid::Uuid = eventually("the edit's sync to wait in debounce", Duration::from_secs(15), || async {
        on_db!(app.db, |db| sqlx::query_scalar(
            "select id from workflow_runs where workflow = 'notion_sync' and current_step = 'debounce' and state = 'waiting'"
        )
        .fetch_optional(db)
        .await)
        .expect("sync")
    })
    .await;

    let subscriptions = app.url(&format!("/api/users/{user}/subscriptions"));
    let deleted = app.client.delete(format!("{subscriptions}/{PAGE}")).bearer_auth(API_TOKEN).send().await;
    assert_eq!(deleted.expect("DELETE").status(), 204);
    let body = json!({"notion_id": PAGE, "kind": "database"});
    let created = app.client.post(&subscriptions).bearer_auth(API_TOKEN).json(&body).send().await.expect("POST");
    let created = expect_json(created, 201).await;
    assert_eq!(created["run_id"], waiting.to_string(), "the subscription joined the waiting sync");

    let run = expect_json(app.get_authorized(&format!("/api/workflows/{waiting}")).await, 200).await;
    assert_eq!(run["notion_kind"], "database", "{run}");
    assert_eq!(run["trigger"], "subscription", "{run}");
}
}

conformance! {
/// A process that died with more steps in flight than one sweep's batch (100) has them all
/// taken over in one sweep. Before, the sweeper took 100 per interval and the rest waited.
async fn one_sweep_takes_over_every_expired_lease_however_many() {
    let db = crate::support::db::TestDb::create().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let insert = format!(
        "insert into workflow_runs (id, workflow, state, current_step, trigger, dispatch_seq, attempt,
             lease_owner, lease_token, lease_expires_at)
         values ($1, 'notion_event', 'running', 'discover_users', 'webhook', 1, 1, 'dead-worker', $2, {past})",
        past = pool.shifted_sql(pool.now_sql(), -1)
    );
    for _ in 0..250 {
        on_db!(pool, |db| sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(uuid::Uuid::now_v7())
            .bind(uuid::Uuid::new_v4())
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("insert run");
    }
    let metrics = cognie_sync::metrics::Metrics::default();

    assert_eq!(cognie_sync::workflow::sweeper::sweep(&store, &metrics).await, 250);

    let running: i64 =
        on_db!(pool, |db| sqlx::query_scalar("select count(*) from workflow_runs where state = 'running'")
            .fetch_one(db)
            .await)
        .expect("count");
    assert_eq!(running, 0, "every one was handed on");
    assert!(metrics.render(None).contains("cognie_steps_taken_over_total 250"), "{}", metrics.render(None));
    assert_eq!(cognie_sync::workflow::sweeper::sweep(&store, &metrics).await, 0, "nothing left to take over");
}
}

conformance! {
/// Fencing: a step's result is recorded only under the lease it was claimed with. A worker
/// whose run was cancelled meanwhile, or whose lease expired and was taken over, comes back
/// with its result: nothing of it is recorded, and the run goes on as the cancel or the new
/// owner left it. (The engine then logs "the step's lease was lost" and drops the result.)
async fn a_late_result_is_discarded_after_a_cancel_or_a_takeover() {
    use cognie_sync::{
        ids::RunId,
        store::{ClaimedStep, Fenced, Store, Transition, jobs::StepJob},
    };
    let db = crate::support::db::TestDb::create().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let user = store.create_user("fenced@example.com").await.expect("user").id;
    let (cancelled, taken_over) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let insert = format!(
        "insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
             dispatch_seq, next_run_at, created_at, updated_at)
         values ($1, 'notion_sync', 'pending', 'fetch', $2, $3, 'page', 'webhook', 1, {now}, {now}, {now})",
        now = pool.now_sql()
    );
    for (run, page) in [(cancelled, PAGE), (taken_over, DATABASE)] {
        on_db!(pool, |db| sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(run)
            .bind(user.0)
            .bind(page)
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("insert run");
    }
    let lease = Duration::from_secs(30);
    let claim = |run: uuid::Uuid, seq: i64| {
        let store = store.clone();
        async move {
            store.claim_step(StepJob { run_id: RunId(run), seq }, "w", lease).await.expect("claim").expect("claimed")
        }
    };
    // What a worker does with its result: a fenced recording of the step's success.
    async fn record(store: &Store, claim: &ClaimedStep) -> Fenced {
        let advance = Transition::Advance { output: json!({"content": {}}), next_step: "generate".into() };
        match store.begin_record(claim).await.expect("begin") {
            None => Fenced::LeaseLost,
            Some(mut tx) => {
                let fenced = tx.apply_transition(claim, &advance).await.expect("transition");
                if fenced == Fenced::Applied {
                    tx.commit().await.expect("commit");
                }
                fenced
            }
        }
    }
    let state = |run: uuid::Uuid| {
        let pool = &pool;
        async move {
            on_db!(pool, |db| sqlx::query_as::<_, (String, String)>(
                "select state, current_step from workflow_runs where id = $1"
            )
            .bind(run)
            .fetch_one(db)
            .await)
            .expect("run")
        }
    };

    // Cancelled while the step ran.
    let late = claim(cancelled, 1).await;
    store.cancel_run(RunId(cancelled), "test").await.expect("cancel");
    assert_eq!(record(&store, &late).await, Fenced::LeaseLost);
    assert_eq!(state(cancelled).await, ("cancelled".into(), "fetch".into()));

    // Its lease expired and another worker took the step over.
    let late = claim(taken_over, 1).await;
    let expire = format!(
        "update workflow_runs set lease_expires_at = {} where id = $1",
        pool.shifted_sql(pool.now_sql(), -1)
    );
    on_db!(pool, |db| sqlx::query(sqlx::AssertSqlSafe(expire.clone()))
        .bind(taken_over)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("expire the lease");
    assert_eq!(store.redispatch_expired_leases(10).await.expect("sweep"), [RunId(taken_over)]);
    let seq: i64 = on_db!(pool, |db| sqlx::query_scalar("select dispatch_seq from workflow_runs where id = $1")
        .bind(taken_over)
        .fetch_one(db)
        .await)
    .expect("seq");
    let owner = claim(taken_over, seq).await;
    assert_eq!(record(&store, &late).await, Fenced::LeaseLost, "the old worker's result");
    assert_eq!(state(taken_over).await, ("running".into(), "fetch".into()), "untouched by it");
    assert_eq!(record(&store, &owner).await, Fenced::Applied, "the new owner's result");
    assert_eq!(state(taken_over).await, ("pending".into(), "generate".into()));
}
}
