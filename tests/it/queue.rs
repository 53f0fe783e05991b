//! The job queue's own upkeep: the index-friendly `apalis.get_jobs`, and pruning.

use std::time::Duration;

use crate::{
    conformance, on_db,
    support::{
        TestApp,
        db::{Backend, Db, TestDb, postgres_or_skip},
    },
};

/// `count` job rows of `job_type` in `status`, finished or due `age` ago.
async fn insert_jobs(pool: &sqlx::PgPool, job_type: &str, status: &str, count: i64, age: &str) {
    sqlx::query(
        "insert into apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, done_at, priority, metadata)
         select 'J' || $2 || lpad(g::text, 20, '0') || $1, $1, '\\x7b7d'::bytea, $2, 1, 1,
                now() - $4::interval, case when $2 = 'Pending' then null else now() - $4::interval end, 0, ''::hstore
         from generate_series(1, $3) g",
    )
    .bind(job_type)
    .bind(status)
    .bind(count)
    .bind(age)
    .execute(pool)
    .await
    .expect("insert jobs");
}

#[tokio::test]
async fn job_fetch_claims_due_jobs_and_uses_the_primary_key_with_a_large_backlog() {
    if !postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn().await;
    // A backlog: apalis's own get_jobs hash-joins over a full scan here (its generic plan
    // assumes a large batch); ours must look the claimed ids up by primary key.
    insert_jobs(app.db.pg(), "plan_test", "Pending", 100_000, "1 minute").await;
    sqlx::query("analyze apalis.jobs").execute(app.db.pg()).await.expect("analyze");

    // The installed function's body, planned as PostgreSQL plans it inside the function:
    // a generic plan with the arguments as parameters.
    let body: String = sqlx::query_scalar("select prosrc from pg_proc where proname = 'get_jobs'")
        .fetch_one(app.db.pg())
        .await
        .expect("get_jobs exists");
    let statement = body
        .replace("worker_id", "$1")
        .replace("v_job_type", "$2")
        .replace("v_job_count", "$3")
        .trim()
        .trim_end_matches(';')
        .to_owned();
    let mut conn = app.db.pg().acquire().await.expect("connection");
    sqlx::query("set plan_cache_mode = force_generic_plan").execute(&mut *conn).await.expect("set");
    sqlx::query(sqlx::AssertSqlSafe(format!("prepare fetch_plan(text, text, int) as {statement}")))
        .execute(&mut *conn)
        .await
        .expect("prepare");
    let plan: Vec<String> = sqlx::query_scalar("explain execute fetch_plan('w', 'plan_test', 10)")
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    sqlx::query("deallocate fetch_plan").execute(&mut *conn).await.expect("deallocate");
    sqlx::query("reset plan_cache_mode").execute(&mut *conn).await.expect("reset");
    drop(conn);
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan"), "the fetch scans the whole table:\n{plan}");
    assert!(plan.contains("jobs_pkey"), "claimed ids are looked up by primary key:\n{plan}");

    sqlx::query(
        "insert into apalis.workers (id, worker_type, storage_name, layers, last_seen)
         values ('w1', 'plan_test', 'test', '', now()), ('w2', 'plan_test', 'test', '', now())",
    )
    .execute(app.db.pg())
    .await
    .expect("workers");
    let claimed: Vec<String> = sqlx::query_scalar("select id from apalis.get_jobs('w1', 'plan_test', 10)")
        .fetch_all(app.db.pg())
        .await
        .expect("fetch");
    assert_eq!(claimed.len(), 10);
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from apalis.jobs where job_type = 'plan_test' and status = 'Queued' and lock_by = 'w1'",
    )
    .fetch_one(app.db.pg())
    .await
    .expect("count");
    assert_eq!(queued, 10);
    let again: Vec<String> = sqlx::query_scalar("select id from apalis.get_jobs('w2', 'plan_test', 100)")
        .fetch_all(app.db.pg())
        .await
        .expect("fetch");
    assert_eq!(again.len(), 100);
    assert!(again.iter().all(|id| !claimed.contains(id)), "a claimed job is never handed out twice");
}

#[tokio::test]
async fn finished_job_rows_are_pruned_and_pending_ones_kept() {
    if !postgres_or_skip() {
        return;
    }
    // The store alone: a running service prunes on its own, and rows its batch has locked
    // would be skipped by this one.
    let db = TestDb::create_postgres().await;
    let store = db.store().await;
    let pool = db.connect().await;
    insert_jobs(pool.pg(), "prune_test", "Done", 12_000, "10 minutes").await;
    insert_jobs(pool.pg(), "prune_test", "Pending", 5, "1 second").await;
    store.prune_finished_jobs(Duration::from_secs(60)).await.expect("prune");
    let statuses: Vec<String> =
        sqlx::query_scalar("select status from apalis.jobs where job_type = 'prune_test'")
            .fetch_all(pool.pg())
            .await
            .expect("jobs");
    assert_eq!(statuses, ["Pending"; 5], "every finished row older than the grace is gone, the pending kept");
}

#[tokio::test]
async fn history_older_than_the_retention_is_pruned() {
    if !postgres_or_skip() {
        return;
    }
    // The store alone: a running service prunes on its own (and its first pass runs at once).
    let db = TestDb::create_postgres().await;
    let store = db.store().await;
    let pool = db.connect().await;
    for (n, (state, age)) in
        [("succeeded", "40 days"), ("failed", "40 days"), ("succeeded", "1 day"), ("waiting", "40 days")]
            .iter()
            .enumerate()
    {
        // Each run with its step record and attempt history (steps and attempts have no
        // foreign key, they go with the run).
        sqlx::query(
            "with run as (
                 insert into workflow_runs (id, workflow, state, trigger, created_at, finished_at)
                 values ($1, 'notion_event', $2, 'webhook', now() - $3::interval,
                         case when $2 = 'waiting' then null else now() - $3::interval end)
             ), step as (
                 insert into workflow_steps (run_id, name, state, attempts) values ($1, 'discover_users', 'succeeded', 1)
             )
             insert into workflow_step_attempts (lease_token, run_id, step, worker, outcome)
             values (gen_random_uuid(), $1, 'discover_users', 'w', 'succeeded')",
        )
        .bind(uuid::Uuid::from_u128(n as u128 + 1))
        .bind(state)
        .bind(age)
        .execute(pool.pg())
        .await
        .expect("run");
    }
    store.prune_history(Duration::from_secs(30 * 86_400)).await.expect("prune");
    let left: Vec<String> = sqlx::query_scalar("select state from workflow_runs order by id")
        .fetch_all(pool.pg())
        .await
        .expect("runs");
    assert_eq!(
        left,
        ["succeeded", "waiting"],
        "the finished runs older than 30 days are gone, the rest kept"
    );
    let count = |sql: &'static str| {
        let pool = pool.pg().clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.expect("count") }
    };
    let orphans = count(
            "select (select count(*) from workflow_steps s where not exists (select 1 from workflow_runs r where r.id = s.run_id))
                  + (select count(*) from workflow_step_attempts a where not exists (select 1 from workflow_runs r where r.id = a.run_id))",
        )
        .await;
    assert_eq!(orphans, 0, "a pruned run's steps and attempts are pruned with it");
    assert_eq!(count("select count(*) from workflow_steps").await, 2, "the kept runs' steps are kept");
}

conformance! {
/// The latest sync of each piece of content that read it outlives the retention: it is
/// reconciliation's record of when the content was last read, kept without the content it read
/// or its events. Before, it was pruned with the rest, and the next sweep synced every unedited
/// page and database whole again.
async fn the_latest_sync_that_read_each_content_is_kept_however_old() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let days_ago = |days: i64| match &pool {
        Db::Pg(_) => pool.shifted_sql("now()", -days * 1440),
        Db::Sqlite(_) => pool.shifted_sql("'now'", -days * 1440),
    };
    let user = uuid::Uuid::now_v7();
    // (content, state, read it: fetch succeeded, days since it was created and finished),
    // oldest first.
    let runs = [
        ("page-a", "succeeded", true, 60),  // read, but a later one read it too: pruned
        ("page-a", "succeeded", true, 50),  // the latest that read page-a: kept
        ("page-a", "succeeded", false, 45), // merged into another in debounce, read nothing: pruned
        ("page-a", "failed", true, 40),     // read, then failed: pruned
        ("page-b", "succeeded", true, 40),  // the only one of page-b: kept
        ("page-c", "succeeded", true, 1),   // recent: kept anyway
    ];
    let mut ids = Vec::new();
    for (n, (content, state, read, days)) in runs.iter().enumerate() {
        let id = uuid::Uuid::from_u128(n as u128 + 1);
        let at = days_ago(*days);
        let insert = format!(
            "insert into workflow_runs (id, workflow, state, trigger, user_id, notion_id, created_at, finished_at)
             values ($1, 'notion_sync', $2, 'webhook', $3, $4, {at}, {at})"
        );
        on_db!(pool, |db| sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(id)
            .bind(*state)
            .bind(user)
            .bind(*content)
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("run");
        let fetch = if *read { "succeeded" } else { "pending" };
        on_db!(pool, |db| sqlx::query(
            "insert into workflow_steps (run_id, name, state, attempts, output)
             values ($1, 'fetch', $2, 1, '{\"content\": \"the page\"}')",
        )
        .bind(id)
        .bind(fetch)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
        .expect("step");
        ids.push(id);
    }
    // The event that started the sync that is kept.
    let event = uuid::Uuid::from_u128(99);
    let insert_event = format!(
        "insert into webhook_events (id, dedupe_key, event_type, outcome, payload, received_at)
         values ($1, $2, 'page.updated', 'accepted', '{{}}', {})",
        days_ago(52)
    );
    on_db!(pool, |db| sqlx::query(sqlx::AssertSqlSafe(insert_event.clone()))
        .bind(event)
        .bind(event.to_string())
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("event");
    on_db!(pool, |db| sqlx::query("insert into workflow_run_events (run_id, event_id) values ($1, $2)")
        .bind(ids[1])
        .bind(event)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("link");

    store.prune_history(Duration::from_secs(30 * 86_400)).await.expect("prune");

    let left: Vec<uuid::Uuid> =
        on_db!(pool, |db| sqlx::query_scalar("select id from workflow_runs order by created_at").fetch_all(db).await)
            .expect("runs");
    assert_eq!(left, [ids[1], ids[4], ids[5]]);
    let outputs: Vec<(uuid::Uuid, bool)> = on_db!(pool, |db| sqlx::query_as(
        "select run_id, output is not null from workflow_steps order by run_id"
    )
    .fetch_all(db)
    .await)
    .expect("steps");
    assert_eq!(outputs, [(ids[1], false), (ids[4], false), (ids[5], true)], "only the recent one keeps its output");
    let events: i64 =
        on_db!(pool, |db| sqlx::query_scalar("select count(*) from webhook_events").fetch_one(db).await)
            .expect("events");
    assert_eq!(events, 0, "the kept sync's old event is pruned");
}
}

conformance! {
/// Runs are pruned a batch at a time, oldest first, each batch starting after the last run the
/// one before looked at (so the syncs kept for ever are looked at once a sweep): across batches
/// of either backend, with kept and prunable runs interleaved and runs created at the same
/// instant in pairs, every prunable run goes and every kept one stays.
async fn pruning_in_batches_misses_no_run_between_kept_ones() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let user = uuid::Uuid::now_v7();
    // 6,000 runs 40 days old, more than a batch of either backend, created in pairs at one
    // instant; every other pair event runs (pruned, and at each batch's last place: the 1,000th
    // and 5,000th oldest), the rest each the latest sync that read its page (kept).
    let (runs, steps) = match &pool {
        Db::Pg(_) => (
            "insert into workflow_runs (id, workflow, state, trigger, user_id, notion_id, created_at, finished_at)
             select gen_random_uuid(), case when (i / 2) % 2 = 0 then 'notion_event' else 'notion_sync' end,
                    'succeeded', 'webhook', $1, 'page-' || i,
                    now() - interval '40 days' - make_interval(secs => i / 2), now() - interval '40 days'
             from generate_series(0, 5999) i",
            "insert into workflow_steps (run_id, name, state, attempts)
             select id, 'fetch', 'succeeded', 1 from workflow_runs where workflow = 'notion_sync'",
        ),
        Db::Sqlite(_) => (
            "with recursive n(i) as (select 0 union all select i + 1 from n where i < 5999)
             insert into workflow_runs (id, workflow, state, trigger, user_id, notion_id, created_at, finished_at)
             select randomblob(16), case when (i / 2) % 2 = 0 then 'notion_event' else 'notion_sync' end,
                    'succeeded', 'webhook', $1, 'page-' || i,
                    strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '-40 days', '-' || (i / 2) || ' seconds'),
                    strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '-40 days')
             from n",
            "insert into workflow_steps (run_id, name, state, attempts)
             select id, 'fetch', 'succeeded', 1 from workflow_runs where workflow = 'notion_sync'",
        ),
    };
    on_db!(pool, |db| sqlx::query(runs).bind(user).execute(db).await.map(|done| done.rows_affected()))
        .expect("runs");
    on_db!(pool, |db| sqlx::query(steps).execute(db).await.map(|done| done.rows_affected())).expect("steps");

    let pruned = store.prune_history(Duration::from_secs(30 * 86_400)).await.expect("prune");

    assert_eq!(pruned.runs, 3_000, "every event run");
    let left: Vec<(String, i64)> = on_db!(pool, |db| sqlx::query_as(
        "select workflow, count(*) from workflow_runs group by workflow order by workflow"
    )
    .fetch_all(db)
    .await)
    .expect("runs");
    assert_eq!(left, [("notion_sync".to_owned(), 3_000)], "every kept sync, and nothing else");
}
}

/// An event older than the retention is kept while a run that stands for it is kept: a
/// failed event run finished yesterday can still be retried, and its step reads its event.
/// Before, the event went once no run of it was in flight, and the retry failed
/// `event_missing`.
#[tokio::test]
async fn an_old_event_is_kept_while_a_run_that_stands_for_it_is_kept() {
    if !postgres_or_skip() {
        return;
    }
    // The store alone: a running service would prune on its own meanwhile.
    let db = TestDb::create_postgres().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let (kept_run, old_run) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let [with_kept_run, with_old_run, alone] = [1u128, 2, 3].map(uuid::Uuid::from_u128);
    for event in [with_kept_run, with_old_run, alone] {
        sqlx::query(
            "insert into webhook_events (id, dedupe_key, event_type, outcome, payload, received_at)
             values ($1, $1::text, 'page.updated', 'accepted', '{}', now() - interval '40 days')",
        )
        .bind(event)
        .execute(pool.pg())
        .await
        .expect("event");
    }
    for (run, event, finished) in [(kept_run, with_kept_run, "1 day"), (old_run, with_old_run, "35 days")] {
        sqlx::query(
            "with run as (
                 insert into workflow_runs (id, workflow, state, current_step, trigger, event_id, created_at, finished_at)
                 values ($1, 'notion_event', 'failed', 'discover_users', 'webhook', $2,
                         now() - interval '40 days', now() - $3::interval)
             )
             insert into workflow_run_events (run_id, event_id) values ($1, $2)",
        )
        .bind(run)
        .bind(event)
        .bind(finished)
        .execute(pool.pg())
        .await
        .expect("run");
    }

    store.prune_history(Duration::from_secs(30 * 86_400)).await.expect("prune");

    let events: Vec<uuid::Uuid> = sqlx::query_scalar("select id from webhook_events order by id")
        .fetch_all(pool.pg())
        .await
        .expect("events");
    assert_eq!(events, [with_kept_run], "only the event of the run still kept is left");
    let runs: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from workflow_runs").fetch_all(pool.pg()).await.expect("runs");
    assert_eq!(runs, [kept_run]);
}

conformance! {
/// Every process start (and every worker restart after a database outage) registers an apalis
/// worker under a new name; the hourly pruning removes the rows of workers gone for an hour,
/// except those a job row still refers to (its `lock_by` is a foreign key).
async fn rows_of_workers_gone_for_an_hour_are_pruned_unless_a_job_refers_to_them() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let statements: [&str; 2] = match db.backend {
        Backend::Postgres => [
            "insert into apalis.workers (id, worker_type, storage_name, layers, last_seen)
             values ('gone', 't', 's', '', now() - interval '2 hours'),
                    ('gone-but-locking', 't', 's', '', now() - interval '2 hours'),
                    ('alive', 't', 's', '', now())",
            "insert into apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, lock_by, priority, metadata)
             values ('J1', 't', '\\x7b7d'::bytea, 'Running', 1, 1, now(), 'gone-but-locking', 0, ''::hstore)",
        ],
        Backend::Sqlite => [
            "insert into Workers (id, worker_type, storage_name, layers, last_seen)
             values ('gone', 't', 's', '', strftime('%s', 'now') - 7200),
                    ('gone-but-locking', 't', 's', '', strftime('%s', 'now') - 7200),
                    ('alive', 't', 's', '', strftime('%s', 'now'))",
            "insert into Jobs (job, id, job_type, status, attempts, max_attempts, run_at, lock_by)
             values (x'7b7d', 'J1', 't', 'Running', 1, 1, strftime('%s', 'now'), 'gone-but-locking')",
        ],
    };
    for statement in statements {
        on_db!(pool, |db| sqlx::query(statement).execute(db).await.map(|done| done.rows_affected()))
            .expect("insert");
    }

    let pruned = store.prune_gone_workers(Duration::from_secs(3_600)).await.expect("prune");
    assert_eq!(pruned, 1);
    let table = match db.backend {
        Backend::Postgres => "select id from apalis.workers order by id",
        Backend::Sqlite => "select id from Workers order by id",
    };
    let left: Vec<String> =
        on_db!(pool, |db| sqlx::query_scalar(table).fetch_all(db).await).expect("workers left");
    assert_eq!(left, ["alive", "gone-but-locking"]);
}
}

conformance! {
/// Handshake tokens last received before the retention go, but for the first (it signs events
/// when no secret is configured) and the latest (what ops read): unsigned handshakes are
/// budgeted, not refused, so without this their rows would only grow.
async fn old_verification_tokens_are_pruned_but_the_first_and_the_latest() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let pool = db.connect().await;
    let retention = Duration::from_secs(30 * 86_400);
    add_verification_tokens(&pool, &[(1, 50), (2, 45), (3, 40), (4, 35), (5, 1)]).await;
    let pruned = store.prune_history(retention).await.expect("prune");
    assert_eq!(pruned.verification_tokens, 3);
    assert_eq!(verification_tokens(&pool).await, ["sha-1", "sha-5"], "the first and the latest");

    // With none received lately, the latest is kept however old.
    on_db!(pool, |db| sqlx::query("delete from webhook_verification_tokens where token_sha256 = 'sha-5'")
        .execute(db)
        .await
        .map(|done| done.rows_affected()))
    .expect("delete");
    add_verification_tokens(&pool, &[(6, 42), (7, 41)]).await;
    store.prune_history(retention).await.expect("prune");
    assert_eq!(verification_tokens(&pool).await, ["sha-1", "sha-7"]);
}
}

/// Stores handshake token `sha-N` for each (N, days since it was last received), in order.
async fn add_verification_tokens(pool: &Db, tokens: &[(u8, i64)]) {
    for &(n, days_ago) in tokens {
        let sql = format!(
            "insert into webhook_verification_tokens (token_ciphertext, token_sha256, last_received_at) values ($1, $2, {})",
            pool.shifted_sql(pool.now_sql(), -days_ago * 1_440)
        );
        on_db!(pool, |db| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(vec![n])
            .bind(format!("sha-{n}"))
            .execute(db)
            .await
            .map(|done| done.rows_affected()))
        .expect("insert token");
    }
}

async fn verification_tokens(pool: &Db) -> Vec<String> {
    on_db!(pool, |db| sqlx::query_scalar(
        "select token_sha256 from webhook_verification_tokens order by token_sha256"
    )
    .fetch_all(db)
    .await)
    .expect("tokens")
}
