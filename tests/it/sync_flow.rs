//! Whole syncs against the fake Notion: subscribe, edit, delete; retries, permanent failures,
//! the rate limit, and the last edit never lost.

use crate::{conformance, on_db};
use std::{collections::HashMap, time::Duration};

use serde_json::{Value, json};

use crate::support::{
    TestApp,
    app::{API_TOKEN, expect_json},
    db::Backend,
    eventually,
    fake_notion::{FakeNotion, Fault, ids},
    fixtures, run_step,
};

const TOKEN: &str = "ntn_test_token_for_maya";

struct Env {
    app: TestApp,
    notion: FakeNotion,
    user: String,
}

/// The fixture page served by a fake Notion, and a user with a token for it.
async fn setup(adjust: impl FnOnce(&mut HashMap<&'static str, String>)) -> Env {
    let notion = FakeNotion::start().await;
    notion.load_fixture_page();
    notion.allow_token(TOKEN);
    let base = notion.base_url();
    let app = TestApp::spawn_with(|s| {
        s.insert("NOTION_API_BASE_URL", base);
        s.insert("NOTION_RATE_LIMIT_PER_MINUTE", "1000".into());
        adjust(s);
    })
    .await;
    let user = expect_json(post(&app, "/api/users", json!({"email": "maya@example.com"})).await, 201).await;
    let user = user["id"].as_str().expect("id").to_owned();
    app.put_notion_token(&user, TOKEN).await;
    Env { app, notion, user }
}

/// [`setup`] with `FLASHCARD_GENERATOR=openai` against `openai`.
async fn setup_with_openai(openai: &crate::support::fake_openai::FakeOpenAi) -> Env {
    use crate::support::fake_openai::{API_KEY, MODEL};
    let base = openai.base_url();
    setup(|s| {
        s.insert("FLASHCARD_GENERATOR", "openai".into());
        s.insert("OPENAI_BASE_URL", base);
        s.insert("OPENAI_API_KEY", API_KEY.into());
        s.insert("OPENAI_MODEL", MODEL.into());
    })
    .await
}

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(API_TOKEN).json(&body).send().await.expect("POST")
}

impl Env {
    async fn subscribe(&self, notion_id: &str, kind: &str) -> String {
        let path = format!("/api/users/{}/subscriptions", self.user);
        let created =
            expect_json(post(&self.app, &path, json!({"notion_id": notion_id, "kind": kind})).await, 201)
                .await;
        created["run_id"].as_str().expect("run id").to_owned()
    }

    /// Waits for the run to end and returns it with its steps.
    async fn finished(&self, run_id: &str) -> Value {
        eventually(&format!("run {run_id} to end"), Duration::from_secs(30), || async {
            let run =
                expect_json(self.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
            ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or("")).then_some(run)
        })
        .await
    }

    /// The recorded outcomes of a run's attempts at `step`, oldest first.
    async fn attempt_outcomes(&self, run: uuid::Uuid, step: &str) -> Vec<String> {
        on_db!(self.app.db, |db| sqlx::query_scalar(
            "select outcome from workflow_step_attempts where run_id = $1 and step = $2
             and outcome is not null order by started_at"
        )
        .bind(run)
        .bind(step)
        .fetch_all(db)
        .await)
        .expect("attempt history")
    }

    /// Runs one SQL statement on the app's database.
    async fn execute(&self, sql: &str) {
        let statement = sql.to_owned();
        on_db!(self.app.db, |db| sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(db)
            .await
            .map(|d| d.rows_affected()))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs SQL statements in turn on the app's database, each with `$1` = `run` and `$2` =
    /// `token` (a lease token).
    async fn execute_bound(&self, statements: &[String], run: uuid::Uuid, token: uuid::Uuid) {
        for statement in statements {
            on_db!(self.app.db, |db| sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .bind(run)
                .bind(token)
                .execute(db)
                .await
                .map(|d| d.rows_affected()))
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    /// SQL that leaves run `$1` as a worker that died in `step` would: running under lease `$2`
    /// (owner `dead-worker`), which expires at `expires` (SQL), and its job made stale.
    fn dead_worker_in(&self, step: &str, expires: &str) -> String {
        format!(
            "update workflow_runs set state = 'running', current_step = '{step}', finished_at = null,
                 lease_owner = 'dead-worker', lease_token = $2, lease_expires_at = {expires},
                 dispatch_seq = dispatch_seq + 1
             where id = $1"
        )
    }

    /// SQL for a lease that expired a minute ago.
    fn expired(&self) -> String {
        self.app.db.shifted_sql(self.app.db.now_sql(), -1)
    }

    /// Installs a trigger `name` that fails every row statement of `event` ("before insert")
    /// on `table` (those matching `when`, a condition on `old`/`new`) with a database error;
    /// returns the statement that removes it.
    async fn install_refusing_trigger(
        &self,
        name: &str,
        event: &str,
        table: &str,
        when: Option<&str>,
    ) -> String {
        let message = format!("{name}: refused by the test");
        match self.app.db.backend() {
            Backend::Postgres => {
                let when = when.map(|w| format!("when ({w})")).unwrap_or_default();
                self.execute(&format!(
                    "create function {name}() returns trigger language plpgsql as
                     $$ begin raise exception '{message}'; end $$"
                ))
                .await;
                self.execute(&format!(
                    "create trigger {name} {event} on {table} for each row {when} execute function {name}()"
                ))
                .await;
                format!("drop trigger {name} on {table}")
            }
            Backend::Sqlite => {
                let when = when.map(|w| format!("when {w}")).unwrap_or_default();
                self.execute(&format!(
                    "create trigger {name} {event} on {table} {when} begin select raise(abort, '{message}'); end"
                ))
                .await;
                format!("drop trigger {name}")
            }
        }
    }

    async fn cards(&self) -> Vec<Value> {
        let list =
            expect_json(self.app.get_authorized(&format!("/api/users/{}/flashcards", self.user)).await, 200)
                .await;
        list["items"].as_array().expect("items").clone()
    }

    /// The data source ids the subscriptions learned.
    async fn subscribed_data_sources(&self) -> Vec<String> {
        on_db!(self.app.db, |db| sqlx::query_scalar(match self.app.db.backend() {
            Backend::Postgres => "select unnest(data_source_ids) from subscriptions",
            Backend::Sqlite =>
                "select d.value from subscriptions, json_each(subscriptions.data_source_ids) d",
        })
        .fetch_all(db)
        .await)
        .expect("data sources")
    }

    /// The user's live cards listed under `notion_id` (`?notion_id=`).
    async fn cards_of(&self, notion_id: &str) -> Vec<Value> {
        let path = format!("/api/users/{}/flashcards?notion_id={notion_id}", self.user);
        let list = expect_json(self.app.get_authorized(&path).await, 200).await;
        list["items"].as_array().expect("items").clone()
    }

    /// The fixture page, edited: the Krebs toggle's question reworded, the equation toggle
    /// deleted, and a new toggle `new_toggle` ("What does NADH carry?", answered by the
    /// paragraph `answer`: "Electrons.") added at the end.
    fn serve_edited_page(&self, new_toggle: &str, answer: &str) {
        let blocks: Vec<Value> = fixture_blocks()
            .into_iter()
            .filter(|b| b["id"] != ids::T_EQ)
            .map(|mut b| {
                if b["id"] == ids::T_KREBS {
                    b["toggle"]["rich_text"] = rich_text("Where exactly does the Krebs cycle run?");
                }
                b
            })
            .chain([toggle(new_toggle, "What does NADH carry?")])
            .collect();
        self.notion.set_children(ids::PAGE, blocks);
        self.notion.set_children(new_toggle, vec![paragraph(answer, "Electrons.")]);
    }

    /// Sends a signed `page.content_updated` for the fixture page.
    async fn page_edited(&self) {
        let body = Self::page_edited_event();
        let ack = expect_json(self.app.post_signed(body.to_string().as_bytes()).await, 200).await;
        assert_eq!(ack["status"], "accepted");
    }

    /// The sync runs of the fixture page, oldest first.
    async fn sync_runs(&self) -> Vec<(uuid::Uuid, String)> {
        on_db!(self.app.db, |db| sqlx::query_as(
            "select id, state from workflow_runs where workflow = 'notion_sync' order by created_at",
        )
        .fetch_all(db)
        .await)
        .expect("runs")
    }

    /// Waits until `n` sync runs exist and all have ended.
    /// Sends `event`, waits until the sync it causes waits in debounce, and unsubscribes the
    /// user from `notion_id` meanwhile.
    async fn unsubscribe_while_a_sync_waits(&self, event: Value, notion_id: &str) {
        let syncs = self.sync_runs().await.len();
        expect_json(self.app.post_signed(event.to_string().as_bytes()).await, 200).await;
        eventually("the sync to wait in debounce", Duration::from_secs(10), || async {
            let runs = self.sync_runs().await;
            (runs.len() == syncs + 1 && runs[syncs].1 == "waiting").then_some(())
        })
        .await;
        let path = format!("/api/users/{}/subscriptions/{notion_id}", self.user);
        let deleted =
            self.app.client.delete(self.app.url(&path)).bearer_auth(API_TOKEN).send().await.expect("DELETE");
        assert_eq!(deleted.status(), 204);
    }

    /// A signed `page.content_updated` for the fixture page (a row of the fixture database).
    fn page_edited_event() -> Value {
        json!({
            "id": format!("evt-{}", uuid::Uuid::new_v4()),
            "type": "page.content_updated",
            "entity": {"id": ids::PAGE, "type": "page"},
            "data": {"parent": {"id": ids::DATABASE, "type": "database", "data_source_id": ids::DATA_SOURCE}}
        })
    }

    /// Starts a manual sync of `notion_id`; its run id.
    async fn manual_sync(&self, notion_id: &str) -> String {
        let body = json!({"user_id": self.user, "notion_id": notion_id});
        let started = expect_json(post(&self.app, "/api/notion/sync", body).await, 202).await;
        started["run_id"].as_str().expect("run id").to_owned()
    }

    /// Retries run `run_id` through the ops API and waits for it to end.
    async fn retried(&self, run_id: &str) -> Value {
        expect_json(post(&self.app, &format!("/api/workflows/{run_id}/retry"), json!({})).await, 202).await;
        self.finished(run_id).await
    }

    async fn syncs_settled(&self, n: usize) -> Vec<(uuid::Uuid, String)> {
        eventually(&format!("{n} finished syncs"), Duration::from_secs(30), || async {
            let runs = self.sync_runs().await;
            (runs.len() == n && runs.iter().all(|(_, s)| s == "succeeded" || s == "failed")).then_some(runs)
        })
        .await
    }
}

/// The fixture page's top-level blocks, as served.
fn fixture_blocks() -> Vec<Value> {
    ["blocks_children_page_1.json", "blocks_children_page_2.json"]
        .iter()
        .flat_map(|f| {
            let doc: Value = serde_json::from_slice(&fixtures::bytes(f)).expect("fixture");
            doc["results"].as_array().expect("results").clone()
        })
        .collect()
}

fn rich_text(text: &str) -> Value {
    json!([{"type": "text", "text": {"content": text, "link": null},
            "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false, "code": false, "color": "default"},
            "plain_text": text, "href": null}])
}

fn toggle(id: &str, front: &str) -> Value {
    json!({"object": "block", "id": id, "parent": {"type": "page_id", "page_id": ids::PAGE},
           "created_time": "2026-05-12T07:00:00.000Z", "last_edited_time": "2026-05-12T07:00:00.000Z",
           "has_children": true, "archived": false, "in_trash": false, "type": "toggle",
           "toggle": {"rich_text": rich_text(front), "color": "default"}})
}

fn paragraph(id: &str, text: &str) -> Value {
    json!({"object": "block", "id": id, "has_children": false, "archived": false, "in_trash": false,
           "type": "paragraph", "paragraph": {"rich_text": rich_text(text), "color": "default"}})
}

fn fronts(cards: &[Value]) -> Vec<String> {
    let mut fronts: Vec<String> =
        cards.iter().map(|c| c["front"].as_str().expect("front").to_owned()).collect();
    fronts.sort();
    fronts
}

conformance! {
async fn subscribing_to_the_fixture_page_makes_its_four_cards() {
    let env = setup(|_| {}).await;
    let run_id = env.subscribe(ids::PAGE, "page").await;
    let run = env.finished(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let steps: Vec<&str> =
        run["steps"].as_array().expect("steps").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(steps, ["debounce", "fetch", "generate", "persist"]);

    let cards = env.cards().await;
    assert_eq!(
        fronts(&cards),
        [
            "Electron transport chain",
            "What is the net ATP yield of glycolysis?",
            "What is the overall equation of aerobic respiration?",
            "Where does the Krebs cycle take place?",
        ]
    );
    let glyco = cards.iter().find(|c| c["source_block_id"] == ids::T_GLYCO).expect("glycolysis card");
    assert!(glyco["back"].as_str().expect("back").contains("2 ATP"), "{glyco}");
    assert_eq!(glyco["source_page_id"], ids::PAGE);

    let status =
        expect_json(env.app.get_authorized(&format!("/api/notion/sync-status/{}", ids::PAGE)).await, 200)
            .await;
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["flashcards"], 4);
    assert!(status["last_synced_at"].is_string());
    assert_eq!(status["runs"][0]["id"], run_id.as_str());
    // The fixture page took 1 page + 2 block pages + 4 toggles' children.
    assert_eq!(env.notion.requests_for_token(TOKEN).len(), 7);
    if env.app.db.backend() == Backend::Postgres {
        // With the local generator, fetch's outcome, generate and persist are recorded by one
        // transaction (one commit): PostgreSQL's now() is the transaction's start, so all
        // three attempts finished at the same instant.
        let run: uuid::Uuid = run_id.parse().expect("run id");
        let instants: i64 = on_db!(env.app.db, |db| sqlx::query_scalar(
            "select count(distinct finished_at) from workflow_step_attempts
             where run_id = $1 and step in ('fetch', 'generate', 'persist')"
        )
        .bind(run)
        .fetch_one(db)
        .await)
        .expect("attempts");
        assert_eq!(instants, 1, "fetch, generate and persist commit together");
    }
    // However the chain's successes were written (on PostgreSQL, with persist's transition in
    // one statement), each step has its whole record: succeeded once, with its output, and one
    // finished attempt of this service's worker.
    let run: uuid::Uuid = run_id.parse().expect("run id");
    let mut records: Vec<(String, String, i32, bool, String, bool, bool)> = on_db!(env.app.db, |db| {
        sqlx::query_as(
            "select s.name, s.state, s.attempts, s.output is not null, a.outcome,
                    a.worker like 'cognie-sync-%', a.finished_at is not null
             from workflow_steps s join workflow_step_attempts a on a.run_id = s.run_id and a.step = s.name
             where s.run_id = $1",
        )
        .bind(run)
        .fetch_all(db)
        .await
    })
    .expect("step records");
    records.sort();
    let whole = |step: &str| (step.to_owned(), "succeeded".to_owned(), 1, true, "succeeded".to_owned(), true, true);
    assert_eq!(records, ["debounce", "fetch", "generate", "persist"].map(whole), "{records:?}");
    let (seq, step): (i64, String) = on_db!(env.app.db, |db| sqlx::query_as(
        "select dispatch_seq, current_step from workflow_runs where id = $1"
    )
    .bind(run)
    .fetch_one(db)
    .await)
    .expect("dispatch_seq");
    assert_eq!(step, "persist", "the run ended at its last step");
    // Created with its first job (1), then one more for each step that moved on (debounce's
    // job for fetch, fetch's and generate's claims of the next step), as when each transition
    // is written on its own: so a job of this run enqueued before any of them is stale.
    assert_eq!(seq, 4, "the run's sequence moved on once for each step that moved on");
}
}

conformance! {
async fn edits_update_cards_in_place_deletions_retire_them_and_new_toggles_add_cards() {
    let env = setup(|_| {}).await;
    env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    let before: HashMap<String, Value> = env
        .cards()
        .await
        .into_iter()
        .map(|c| (c["source_block_id"].as_str().expect("id").to_owned(), c))
        .collect();

    let new_toggle = "1f3c8a2e-4b7d-8999-9999-000000000001";
    env.serve_edited_page(new_toggle, "1f3c8a2e-4b7d-8999-9999-000000000002");
    env.page_edited().await;
    env.syncs_settled(2).await;

    let after: HashMap<String, Value> = env
        .cards()
        .await
        .into_iter()
        .map(|c| (c["source_block_id"].as_str().expect("id").to_owned(), c))
        .collect();
    assert!(!after.contains_key(ids::T_EQ), "the deleted toggle's card is retired");
    assert_eq!(after[new_toggle]["front"], "What does NADH carry?");
    assert_eq!(after[new_toggle]["back"], "Electrons.");
    let krebs = &after[ids::T_KREBS];
    assert_eq!(krebs["id"], before[ids::T_KREBS]["id"], "edited in place: same card");
    assert_eq!(krebs["front"], "Where exactly does the Krebs cycle run?");
    assert_ne!(krebs["updated_at"], before[ids::T_KREBS]["updated_at"]);
    assert_eq!(after[ids::T_GLYCO], before[ids::T_GLYCO], "an untouched card is untouched");
    let retired = env.app.count("select count(*) from flashcards where retired_at is not null").await;
    assert_eq!(retired, 1);
}
}

conformance! {
async fn an_unchanged_page_is_fetched_but_no_card_is_written() {
    let env = setup(|_| {}).await;
    env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    let before = env.cards().await;
    env.page_edited().await;
    let runs = env.syncs_settled(2).await;
    let second = env.finished(&runs[1].0.to_string()).await;
    assert_eq!(second["state"], "succeeded");
    let steps: Vec<&str> =
        second["steps"].as_array().expect("steps").iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(!steps.contains(&"persist"), "persist must be skipped when nothing changed: {steps:?}");
    assert_eq!(second["current_step"], "generate", "the run ended where generate finished it: {second}");
    assert_eq!(env.cards().await, before);
}
}

conformance! {
async fn a_deleted_page_retires_its_cards() {
    let env = setup(|_| {}).await;
    env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(env.cards().await.len(), 4);
    env.notion.trash_page(ids::PAGE);
    let body =
        json!({"id": "evt-deleted", "type": "page.deleted", "entity": {"id": ids::PAGE, "type": "page"}});
    expect_json(env.app.post_signed(body.to_string().as_bytes()).await, 200).await;
    env.syncs_settled(2).await;
    assert_eq!(env.cards().await, Vec::<Value>::new());
    assert_eq!(env.app.count("select count(*) from flashcards where retired_at is not null").await, 4);
}
}

conformance! {
async fn server_errors_and_rate_limits_are_retried_honouring_retry_after() {
    let env = setup(|_| {}).await;
    env.notion.inject_times("/v1/blocks", Fault::Status(500), 2);
    env.notion.inject_times("/v1/pages", Fault::RateLimited { retry_after_secs: 1 }, 1);
    let run = env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let fetch = run_step(&run, "fetch");
    assert!(fetch["attempts"].as_i64().expect("attempts") >= 4, "a 429 and two 500s were retried: {fetch}");
    assert_eq!(env.cards().await.len(), 4);

    // Nothing was sent with the token within a second of the 429.
    let requests = env.notion.requests_for_token(TOKEN);
    let limited = requests.iter().position(|r| r.status == 429).expect("the 429 was recorded");
    let next = &requests[limited + 1];
    let gap = next.at.duration_since(requests[limited].at);
    assert!(gap >= Duration::from_millis(950), "Retry-After: 1 honoured; next request after {gap:?}");
}
}

conformance! {
async fn an_overloaded_notion_blocks_the_users_limiter_like_a_rate_limit() {
    // Notion asks for 529 `service_overload` to be treated like 429: every request with the
    // token pauses for Retry-After, not only the step that got it.
    let env = setup(|_| {}).await;
    env.notion.inject_times("/v1/pages", Fault::StatusRetryAfter { status: 529, retry_after_secs: 2 }, 1);
    let started = chrono::Utc::now();
    let run = env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(run["state"], "succeeded", "{run}");

    // The block is on the user's limiter, which every worker of every process consults.
    let blocks: Vec<Option<chrono::DateTime<chrono::Utc>>> = on_db!(env.app.db, |db| sqlx::query_scalar(
        "select blocked_until from notion_rate_limits",
    )
    .fetch_all(db)
    .await)
    .expect("limiter rows");
    let blocked_until = blocks.into_iter().flatten().max().expect("the 529 blocked the user's limiter");
    assert!(
        blocked_until >= started + chrono::Duration::milliseconds(1900),
        "blocked until {blocked_until}, less than Retry-After: 2 after {started}"
    );
    let requests = env.notion.requests_for_token(TOKEN);
    let overloaded = requests.iter().position(|r| r.status == 529).expect("the 529 was recorded");
    let gap = requests[overloaded + 1].at.duration_since(requests[overloaded].at);
    assert!(gap >= Duration::from_millis(1950), "Retry-After: 2 honoured; next request after {gap:?}");
}
}

conformance! {
async fn a_revoked_token_fails_the_run_at_once_and_an_ops_retry_resumes_it() {
    let env = setup(|_| {}).await;
    env.notion.revoke_token(TOKEN);
    let run_id = env.subscribe(ids::PAGE, "page").await;
    let run = env.finished(&run_id).await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["current_step"], "fetch");
    assert_eq!(run["error_kind"], "notion_unauthorized");
    let fetch = run_step(&run, "fetch");
    assert_eq!(fetch["attempts"], 1, "a permanent failure is not retried: {fetch}");

    env.notion.allow_token(TOKEN);
    expect_json(post(&env.app, &format!("/api/workflows/{run_id}/retry"), json!({})).await, 202).await;
    let run = eventually("the retried run to succeed", Duration::from_secs(30), || async {
        let r = expect_json(env.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
        (r["state"] == "succeeded").then_some(r)
    })
    .await;
    let debounce = run_step(&run, "debounce");
    assert_eq!(debounce["attempts"], 1, "the retry resumed at fetch, not from the start");
    assert_eq!(env.cards().await.len(), 4);
}
}

conformance! {
async fn an_edit_during_a_sync_causes_one_more_sync_so_the_last_edit_is_never_lost() {
    let env = setup(|s| {
        s.insert("DEBOUNCE_SECONDS", "0.2".into());
    })
    .await;
    // The first sync's fetch is slow: the edit below lands while it is past debounce.
    // (Long enough for the edit's event run to be discovered on a loaded machine.)
    env.notion.inject_times("/v1/blocks", Fault::Delay(Duration::from_secs(5)), 1);
    let first = env.subscribe(ids::PAGE, "page").await;
    eventually("the first sync to be fetching", Duration::from_secs(10), || async {
        let r = expect_json(env.app.get_authorized(&format!("/api/workflows/{first}")).await, 200).await;
        (r["current_step"] == "fetch").then_some(())
    })
    .await;
    let blocks: Vec<Value> = fixture_blocks()
        .into_iter()
        .map(|mut b| {
            if b["id"] == ids::T_KREBS {
                b["toggle"]["rich_text"] = rich_text("Krebs cycle: where?");
            }
            b
        })
        .collect();
    env.notion.set_children(ids::PAGE, blocks);
    env.page_edited().await;

    let runs = env.syncs_settled(2).await;
    assert!(runs.iter().all(|(_, s)| s == "succeeded"), "{runs:?}");
    let cards = env.cards().await;
    let krebs = cards.iter().find(|c| c["source_block_id"] == ids::T_KREBS).expect("krebs card");
    assert_eq!(krebs["front"], "Krebs cycle: where?", "the last edit is synced");
    // The second sync started fetching only after the first had finished.
    let (first_done, second_fetch): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        on_db!(env.app.db, |db| sqlx::query_as(
            "select (select finished_at from workflow_runs where id = $1),
                (select s.started_at from workflow_steps s where s.run_id = $2 and s.name = 'fetch')",
        )
        .bind(runs[0].0)
        .bind(runs[1].0)
        .fetch_one(db)
        .await)
        .expect("times");
    assert!(second_fetch >= first_done, "syncs of one page run one after another");
    // The first one's end woke it (its transition enqueued the waiting sync's job), not its
    // debounce step's recheck 10 s later.
    assert!(
        second_fetch - first_done < chrono::Duration::seconds(5),
        "the second sync started {} s after the first ended",
        (second_fetch - first_done).num_milliseconds() as f64 / 1000.0
    );

    // The second sync's debounce waited for the first and then succeeded, each attempt in the
    // transaction of its claim: waits spend no attempt, and every attempt's history row is
    // whole (who ran it, when it ended, how).
    let second = env.finished(&runs[1].0.to_string()).await;
    let debounce = &second["steps"][0];
    assert_eq!((debounce["name"].as_str(), debounce["attempts"].as_i64()), (Some("debounce"), Some(1)), "{second}");
    assert!(debounce["started_at"].as_str() <= debounce["finished_at"].as_str(), "{debounce}");
    let event_run = second["parent_id"].as_str().expect("the event run that started it").to_owned();
    let event_run = env.finished(&event_run).await;
    assert_eq!(event_run["steps"][0]["attempts"], 1, "{event_run}");
    let history: Vec<(String, Option<String>, bool)> = on_db!(env.app.db, |db| sqlx::query_as(
        "select a.step, a.outcome, a.worker <> '' and a.finished_at is not null and a.finished_at >= a.started_at
         from workflow_step_attempts a where a.run_id = $1 and a.step = 'debounce' order by a.started_at",
    )
    .bind(runs[1].0)
    .fetch_all(db)
    .await)
    .expect("history");
    let outcomes: Vec<&str> = history.iter().map(|(_, o, _)| o.as_deref().unwrap_or("none")).collect();
    assert!(outcomes.len() >= 2 && outcomes[..outcomes.len() - 1].iter().all(|o| *o == "waiting"), "{outcomes:?}");
    assert_eq!(outcomes.last(), Some(&"succeeded"));
    assert!(history.iter().all(|(_, _, whole)| *whole), "{history:?}");
}
}

conformance! {
async fn a_database_subscription_syncs_every_row_and_learns_its_data_sources() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    let run = env.finished(&env.subscribe(ids::DATABASE, "database").await).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let cards = env.cards().await;
    assert!(cards.len() >= 2, "row cards and toggle cards from the rows: {cards:?}");
    assert_eq!(env.cards_of(ids::DATABASE).await.len(), cards.len(), "the database's cards are listed by its id");
    assert_eq!(env.subscribed_data_sources().await, [ids::DATA_SOURCE]);
}
}

conformance! {
async fn retry_delays_grow_exponentially() {
    let env = setup(|s| {
        s.insert("RETRY_BASE_DELAY_MS", "200".into());
        s.insert("RETRY_MAX_DELAY_MS", "5000".into());
        s.insert("NOTION_MAX_RETRIES", "5".into());
    })
    .await;
    env.notion.inject_times("/v1/pages", Fault::Status(503), 3);
    let run = env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let times: Vec<_> = env
        .notion
        .requests_for_token(TOKEN)
        .iter()
        .filter(|r| r.path.starts_with("/v1/pages"))
        .map(|r| r.at)
        .collect();
    assert_eq!(times.len(), 4, "three failures, then success");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1].duration_since(w[0])).collect();
    // Jittered between half and all of 200 ms × 2^(n-1): never sooner than half. (No upper
    // bound: on a loaded machine a pickup can be late, and lateness is not what this tests.)
    for (n, (gap, floor)) in gaps.iter().zip([100, 200, 400]).enumerate() {
        assert!(
            *gap >= Duration::from_millis(floor),
            "retry {} came after {gap:?}, before its backoff",
            n + 1
        );
    }
}
}

conformance! {
async fn a_step_that_always_fails_stops_after_its_attempts() {
    let env = setup(|s| {
        s.insert("NOTION_MAX_RETRIES", "2".into());
    })
    .await;
    env.notion.inject_always("/v1/pages", Fault::Status(500));
    let run = env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["error_kind"], "notion_server_error");
    tokio::time::sleep(Duration::from_millis(800)).await; // would expose a hot loop
    assert_eq!(env.notion.count("/v1/pages"), 3, "NOTION_MAX_RETRIES=2: three attempts, then stop");
}
}

conformance! {
/// `persist` runs in the transaction that records `generate` (one commit for both). When it
/// fails, that transaction is undone: what generate produced must still be recorded, once, the
/// failure must be recorded as an attempt of persist, and persist's retry must make the cards.
async fn a_failing_persist_keeps_what_generate_produced_and_is_retried() {
    let env = setup(|s| {
        s.insert("RETRY_BASE_DELAY_MS", "300".into());
    })
    .await;
    // Every card insert fails (a database error, so a retryable one) until the trigger goes.
    let remove = env.install_refusing_trigger("refuse_cards", "before insert", "flashcards", None).await;
    let run_id = env.subscribe(ids::PAGE, "page").await;
    let run: uuid::Uuid = run_id.parse().expect("run id");
    let outcomes = |step: &'static str| env.attempt_outcomes(run, step);
    eventually("persist to fail", Duration::from_secs(30), || async {
        outcomes("persist").await.first().is_some_and(|o| o == "retrying").then_some(())
    })
    .await;
    env.execute(&remove).await;

    let finished = env.finished(&run_id).await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    // fetch's outcome, generate and persist ran in one transaction; persist's failure undid
    // it, and fetch's and generate's outcomes were recorded again, once each.
    assert_eq!(outcomes("fetch").await, ["succeeded"], "fetch was recorded once");
    assert_eq!(outcomes("generate").await, ["succeeded"], "generate ran and was recorded once");
    let persist = outcomes("persist").await;
    assert_eq!(persist.first().map(String::as_str), Some("retrying"), "{persist:?}");
    assert_eq!(persist.last().map(String::as_str), Some("succeeded"), "{persist:?}");
    assert_eq!(env.cards().await.len(), 4);
}
}

conformance! {
/// generate claimed through the queue (here: its worker died, and the lease sweeper dispatched
/// it again) runs in its claim's transaction and persist in the same one. When persist fails,
/// that transaction, the claim included, is undone: generate is claimed again and its outcome
/// recorded again before persist's failure, and the run completes once persist can.
async fn a_failing_persist_after_generate_from_the_queue_is_recorded_and_retried() {
    let env = setup(|s| {
        s.insert("STEP_LEASE_SECONDS", "1".into());
        s.insert("RETRY_BASE_DELAY_MS", "300".into());
    })
    .await;
    let run_id = env.subscribe(ids::PAGE, "page").await;
    assert_eq!(env.finished(&run_id).await["state"], "succeeded");
    let run: uuid::Uuid = run_id.parse().expect("run id");
    // Back to generate, as a worker that died in it would leave the run (fetch's output kept),
    // with the last sync forgotten so that generate makes cards again.
    // persist records the sync (a new row now) after its cards: refusing that fails persist on
    // both backends whether or not its cards changed.
    env.execute("delete from sync_state").await;
    let remove = env.install_refusing_trigger("refuse_sync_record", "before insert", "sync_state", None).await;
    let statements = [
        "delete from workflow_steps where run_id = $1 and name in ('generate', 'persist')".to_owned(),
        "delete from workflow_step_attempts where run_id = $1".to_owned(),
        env.dead_worker_in("generate", &env.expired()),
    ];
    env.execute_bound(&statements, run, uuid::Uuid::new_v4()).await;
    let outcomes = |step: &'static str| env.attempt_outcomes(run, step);
    eventually("persist to fail", Duration::from_secs(30), || async {
        outcomes("persist").await.first().is_some_and(|o| o == "retrying").then_some(())
    })
    .await;
    assert_eq!(outcomes("generate").await, ["succeeded"], "generate's outcome recorded again, once");
    env.execute(&remove).await;
    let finished = env.finished(&run_id).await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    let persist = outcomes("persist").await;
    assert_eq!(persist.first().map(String::as_str), Some("retrying"), "{persist:?}");
    assert_eq!(persist.last().map(String::as_str), Some("succeeded"), "{persist:?}");
    assert_eq!(env.cards().await.len(), 4);
}
}

conformance! {
/// A sync that persists after a sync that started reading later leaves the cards the later one
/// wrote: it read older text. (Syncs of one content run one after another, but a database's
/// sync and a sync of one of its rows may overlap, and a run taken over persists late.) Here
/// the first sync of the page is taken back to persist with what it read, after an edit's sync
/// rewrote one card, added one and retired one.
async fn a_late_persist_does_not_write_older_cards_over_a_later_syncs() {
    let env = setup(|s| {
        s.insert("DEBOUNCE_SECONDS", "0".into());
        s.insert("STEP_LEASE_SECONDS", "1".into());
    })
    .await;
    let first = env.subscribe(ids::PAGE, "page").await;
    assert_eq!(env.finished(&first).await["state"], "succeeded");
    env.serve_edited_page("1f3c8a2e-4b7d-8999-9999-000000000011", "1f3c8a2e-4b7d-8999-9999-000000000012");
    env.page_edited().await;
    env.syncs_settled(2).await;
    let edited = fronts(&env.cards().await);
    assert!(edited.contains(&"Where exactly does the Krebs cycle run?".to_owned()), "{edited:?}");

    // The first sync, as a worker that died in its persist leaves it (what it read is kept).
    let run: uuid::Uuid = first.parse().expect("run id");
    env.execute_bound(&[env.dead_worker_in("persist", &env.expired())], run, uuid::Uuid::new_v4()).await;
    let again = env.finished(&first).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(env.attempt_outcomes(run, "persist").await, ["succeeded", "succeeded"], "it did persist again");
    assert_eq!(fronts(&env.cards().await), edited, "the later sync's cards stand");
}
}

conformance! {
/// Saved crawl progress that this build cannot read (a deploy changed its format while a fetch
/// was waiting) makes the crawl start over instead of failing the run.
async fn unreadable_saved_crawl_progress_starts_the_crawl_over() {
    let env = setup(|s| {
        s.insert("STEP_LEASE_SECONDS", "1".into());
    })
    .await;
    let first = env.subscribe(ids::PAGE, "page").await;
    assert_eq!(env.finished(&first).await["state"], "succeeded");
    env.execute("delete from sync_state").await;
    let run: uuid::Uuid = first.parse().expect("run id");
    env.execute_bound(
        &[
            "update workflow_steps set output = '{\"progress\": {\"format\": \"from another build\"}}'
             where run_id = $1 and name = 'fetch'"
                .to_owned(),
            "delete from workflow_steps where run_id = $1 and name in ('generate', 'persist')".to_owned(),
            env.dead_worker_in("fetch", &env.expired()),
        ],
        run,
        uuid::Uuid::new_v4(),
    )
    .await;
    let requests_before = env.notion.count("/v1/");
    let again = env.finished(&first).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(env.notion.count("/v1/") - requests_before, 7, "the whole page was read again");
    assert_eq!(env.cards().await.len(), 4);
}
}

conformance! {
/// An attempt is never left open once it can no longer be recorded: the attempt of a worker
/// that died (its lease ran out, the sweeper handed the step on) ends `abandoned`
/// (`lease_expired`), and the attempt in flight when ops cancel a run ends `cancelled`.
async fn attempts_that_cannot_be_recorded_any_more_are_closed() {
    let env = setup(|s| {
        s.insert("STEP_LEASE_SECONDS", "1".into());
    })
    .await;
    let run_id = env.subscribe(ids::PAGE, "page").await;
    assert_eq!(env.finished(&run_id).await["state"], "succeeded");
    let run: uuid::Uuid = run_id.parse().expect("run id");
    // As a worker that died in generate leaves the run: running under its lease, now expired,
    // with the attempt it started open.
    let dead = uuid::Uuid::new_v4();
    let past = env.expired();
    let future = env.app.db.shifted_sql(env.app.db.now_sql(), 10);
    let dead_worker_at = |expires: &str| {
        [
            "delete from sync_state".to_owned(),
            "insert into workflow_step_attempts (lease_token, run_id, step, worker) values ($2, $1, 'generate', 'dead-worker')"
                .to_owned(),
            env.dead_worker_in("generate", expires),
        ]
    };
    env.execute_bound(&dead_worker_at(&past), run, dead).await;
    let finished = env.finished(&run_id).await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    let db = &env.app.db;
    let attempt = |token: uuid::Uuid| async move {
        on_db!(*db, |db| sqlx::query_as::<_, (Option<String>, Option<String>, bool)>(
            "select outcome, error_kind, finished_at is not null from workflow_step_attempts where lease_token = $1"
        )
        .bind(token)
        .fetch_one(db)
        .await)
        .expect("the attempt")
    };
    assert_eq!(attempt(dead).await, (Some("abandoned".into()), Some("lease_expired".into()), true));
    assert_eq!(env.attempt_outcomes(run, "generate").await.last().map(String::as_str), Some("succeeded"));

    // A worker in generate now, its lease still good for minutes: ops cancel the run.
    let live = uuid::Uuid::new_v4();
    env.execute_bound(&dead_worker_at(&future), run, live).await;
    expect_json(post(&env.app, &format!("/api/workflows/{run_id}/cancel"), json!({})).await, 202).await;
    assert_eq!(attempt(live).await, (Some("cancelled".into()), None, true));
    let open: i64 = on_db!(env.app.db, |db| sqlx::query_scalar(
        "select count(*) from workflow_step_attempts where run_id = $1 and outcome is null"
    )
    .bind(run)
    .fetch_one(db)
    .await)
    .expect("open attempts");
    assert_eq!(open, 0);
}
}

conformance! {
/// A step job whose claim fails on a database error that is not an outage (here a trigger
/// refusing every claim) is enqueued again for later instead of being dropped, which would
/// leave its run with no job at all; once the error is gone, the run completes.
async fn a_job_failing_on_a_database_error_is_delivered_again_until_its_run_completes() {
    let env = setup(|s| {
        s.insert("RETRY_MAX_DELAY_MS", "300".into());
    })
    .await;
    let claims = "new.state = 'running' and old.state <> 'running'";
    let remove = env.install_refusing_trigger("refuse_claims", "before update", "workflow_runs", Some(claims)).await;
    let run_id = env.subscribe(ids::PAGE, "page").await;
    // Delivered, refused, delivered again, refused again: the job is not lost on the way.
    eventually("the job to be delivered again twice", Duration::from_secs(30), || async {
        let metrics = env.app.get("/metrics").await.text().await.expect("metrics");
        let redelivered: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("cognie_step_jobs_redelivered_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        (redelivered >= 2).then_some(())
    })
    .await;
    let run = expect_json(env.app.get_authorized(&format!("/api/workflows/{run_id}")).await, 200).await;
    assert_eq!(run["steps"], json!([]), "no claim got through: {run}");
    assert_ne!(run["state"], "running", "no claim got through: {run}");
    env.execute(&remove).await;

    let finished = env.finished(&run_id).await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(env.cards().await.len(), 4);
}
}

conformance! {
async fn an_event_sync_due_at_once_runs_on_the_worker_that_started_it_without_a_job_of_its_own() {
    // No quiet period: the sync an event starts is due at once, so the worker that ran the
    // event's discover_users claims it in the same transaction instead of queueing it.
    let env = setup(|s| {
        s.insert("DEBOUNCE_SECONDS", "0".into());
    })
    .await;
    let first = env.subscribe(ids::PAGE, "page").await;
    assert_eq!(env.finished(&first).await["state"], "succeeded");
    let jobs_before = env.app.count(env.app.db.step_jobs_sql()).await;

    let handed = "1f3c8a2e-4b7d-8999-9999-0000000000a1";
    env.notion.set_children(ids::PAGE, vec![toggle(handed, "Handed off?")]);
    env.notion.set_children(handed, vec![paragraph("1f3c8a2e-4b7d-8999-9999-0000000000a2", "Yes.")]);
    env.page_edited().await;
    let runs = env.syncs_settled(2).await;
    let (sync_id, state) = &runs[1];
    assert_eq!(state, "succeeded");
    let sync = env.finished(&sync_id.to_string()).await;
    let event_id = sync["parent_id"].as_str().expect("the sync names the event run that started it");
    let event = env.finished(event_id).await;
    assert_eq!(event["state"], "succeeded", "{event}");
    let steps: Vec<(&str, &str)> = sync["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or(""), s["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        steps,
        [("debounce", "succeeded"), ("fetch", "succeeded"), ("generate", "succeeded"), ("persist", "succeeded")]
    );
    assert_eq!(fronts(&env.cards().await), ["Handed off?"]);
    // One job for the event run; none for the sync it started.
    assert_eq!(env.app.count(env.app.db.step_jobs_sql()).await, jobs_before + 1);
}
}

/// Every event looks its subscribers up: among many subscriptions that must be a few index
/// lookups, never a scan of them all (at 100,000 subscriptions a scan was 65 ms per event,
/// the lookups 0.15 ms). Checked with the transaction's own table statistics, after enough
/// calls that PostgreSQL has switched the prepared statement to its generic plan.
#[tokio::test]
async fn discovering_subscribers_uses_indexes_not_a_scan_of_every_subscription() {
    use cognie_sync::store::{model::EventTarget, pg::sync::subscribers};
    if !crate::support::db::postgres_or_skip() {
        return;
    }
    let db = crate::support::db::TestDb::create_postgres().await;
    drop(db.store().await);
    let pool = db.connect().await;
    let pool = pool.pg();
    // 5,000 subscriptions of 50 users: every fifth a database with one data source.
    sqlx::query(
        "insert into users (id, email) select gen_random_uuid(), 'u' || g || '@example.com' from generate_series(1, 50) g",
    )
    .execute(pool)
    .await
    .expect("users");
    sqlx::query(
        "insert into subscriptions (id, user_id, notion_id, kind, data_source_ids) \
         select gen_random_uuid(), u.id, 'n' || g, case when g % 5 = 0 then 'database' else 'page' end, \
                case when g % 5 = 0 then array['ds' || g] else '{}' end \
         from generate_series(1, 5000) g \
         join (select id, row_number() over () - 1 as n from users) u on u.n = g % 50",
    )
    .execute(pool)
    .await
    .expect("subscriptions");
    sqlx::query("analyze subscriptions").execute(pool).await.expect("analyze");

    let mut tx = pool.begin().await.expect("begin");
    let target = |entity: &str, kind: &str, parent: Option<&str>, source: Option<&str>| EventTarget {
        entity_id: Some(entity.into()),
        entity_kind: Some(kind.into()),
        parent_id: parent.map(Into::into),
        data_source_id: source.map(Into::into),
        event_type: "page.content_updated".into(),
    };
    for round in 0..4 {
        let page = format!("n{}", 1 + round * 5);
        let found = subscribers(&mut tx, &target(&page, "page", None, None)).await.expect("page");
        assert_eq!(found.len(), 1, "the page's own subscriber: {found:?}");
        assert_eq!(found[0].notion_id, page);
        // A row page of a database subscribed by one of its data source ids: its subscriber
        // re-syncs just that row.
        let source = format!("ds{}", 5 + round * 5);
        let found = subscribers(&mut tx, &target("row-page", "page", Some("elsewhere"), Some(&source)))
            .await
            .expect("row page");
        assert_eq!(found.len(), 1, "the database's subscriber: {found:?}");
        assert_eq!((found[0].notion_id.as_str(), found[0].kind.as_str()), ("row-page", "page"));
    }
    let (seq, idx): (i64, i64) = sqlx::query_as(
        "select seq_scan, coalesce(idx_scan, 0) from pg_stat_xact_user_tables where relname = 'subscriptions'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("the transaction's statistics");
    assert_eq!(seq, 0, "subscriptions were scanned in full");
    assert!(idx >= 8, "the lookups used the indexes ({idx} index scans)");
}

conformance! {
/// A NUL character in a page's text (Notion lets a paste through with one): PostgreSQL stores
/// it neither in `text` nor in `jsonb`, so before, every attempt to record the sync failed,
/// the crawl ran again and again, and the run ended `attempts_exhausted` on PostgreSQL while
/// SQLite synced it. Notion's answers are now read without NULs, on both.
async fn a_page_whose_text_holds_a_nul_character_syncs_without_it() {
    let env = setup(|_| {}).await;
    let (new_toggle, answer) = ("1f3c8a2e-4b7d-8999-9999-000000000001", "1f3c8a2e-4b7d-8999-9999-000000000002");
    env.notion.set_children(ids::PAGE, vec![toggle(new_toggle, "What does NADH\u{0} carry?")]);
    env.notion.set_children(new_toggle, vec![paragraph(answer, "Elec\u{0}trons.")]);

    let run = env.finished(&env.subscribe(ids::PAGE, "page").await).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    let cards = env.cards().await;
    assert_eq!(cards.len(), 1, "{cards:?}");
    assert_eq!(cards[0]["front"], "What does NADH carry?");
    assert_eq!(cards[0]["back"], "Electrons.");
    let run_id: uuid::Uuid = run["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(env.attempt_outcomes(run_id, "fetch").await, ["succeeded"], "one crawl");
}
}

conformance! {
/// A card belongs to the database its row page is in now. The user follows a database and,
/// separately, one of its rows; the row is moved out of the database. Before, the row's cards
/// kept the database as theirs (`coalesce` kept the old value), so the database's next sync
/// retired them as rows it no longer has, and the page's own syncs, seeing unchanged content,
/// never brought them back.
async fn a_row_moved_out_of_a_followed_database_keeps_its_cards() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    env.notion.load_fixture_page();
    assert_eq!(env.finished(&env.subscribe(ids::DATABASE, "database").await).await["state"], "succeeded");
    assert_eq!(env.finished(&env.subscribe(ids::PAGE, "page").await).await["state"], "succeeded");
    let page_cards = |cards: &[Value]| {
        let mut ids: Vec<String> = cards
            .iter()
            .filter(|c| c["source_page_id"] == ids::PAGE)
            .map(|c| c["source_block_id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let before = page_cards(&env.cards().await);
    assert!(!before.is_empty(), "the row has cards of its own");

    env.notion.move_page(ids::PAGE, json!({"type": "workspace", "workspace": true}));
    for notion_id in [ids::PAGE, ids::DATABASE] {
        let body = json!({"user_id": env.user, "notion_id": notion_id});
        let started = expect_json(post(&env.app, "/api/notion/sync", body).await, 202).await;
        let run = env.finished(started["run_id"].as_str().expect("run id")).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }

    assert_eq!(page_cards(&env.cards().await), before, "the moved page's cards are all live");
    let listed = page_cards(&env.cards_of(ids::DATABASE).await);
    assert!(listed.is_empty(), "they are no longer the database's: {listed:?}");
}
}

conformance! {
/// A row's sync that read the page before its database's sync did, but persists after it,
/// leaves the database's newer cards alone (the later reader wins); it must not record its own
/// content's hash either. Before, it did: when the edit was then undone, the row's next sync
/// found the content "unchanged" and the cards kept the undone edit.
async fn a_sync_that_left_a_later_readers_cards_records_no_hash() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    env.notion.load_fixture_page();
    assert_eq!(env.finished(&env.subscribe(ids::DATABASE, "database").await).await["state"], "succeeded");
    let krebs = |cards: Vec<Value>| {
        let card = cards.into_iter().find(|c| c["source_block_id"] == ids::T_KREBS).expect("the Krebs card");
        card["back"].as_str().expect("back").to_owned()
    };
    let original = krebs(env.cards().await);

    // The row's sync reads the Krebs toggle's answer as it is, slowly; meanwhile the answer is
    // edited and the database's sync reads and persists the edit.
    let answer = format!("/v1/blocks/{}/children", ids::T_KREBS);
    env.notion.inject(&answer, Fault::SlowBody { total: Duration::from_secs(3) });
    let row_sync = env.manual_sync(ids::PAGE).await;
    eventually("the row's sync to be reading the answer", Duration::from_secs(10), || async {
        env.notion.requests().iter().any(|r| r.path == answer && r.fault.is_some()).then_some(())
    })
    .await;
    env.notion.set_children(ids::T_KREBS, vec![paragraph("1f3c8a2e-4b7d-8999-9999-000000000003", "In the cytosol?")]);
    let database_sync = env.manual_sync(ids::DATABASE).await;
    assert_eq!(env.finished(&database_sync).await["state"], "succeeded");
    assert_eq!(krebs(env.cards().await), "In the cytosol?");
    assert_eq!(env.finished(&row_sync).await["state"], "succeeded");
    assert_eq!(krebs(env.cards().await), "In the cytosol?", "the later reader's, left as it wrote it");

    // Undone in Notion: the row's next sync reads what the row's sync before it read, and
    // writes it.
    env.notion.load_fixture_page();
    let again = env.manual_sync(ids::PAGE).await;
    assert_eq!(env.finished(&again).await["current_step"], "persist");
    assert_eq!(krebs(env.cards().await), original, "the edit was undone");
}
}

conformance! {
/// The user follows a database, not its row; the row is moved out of the database and its edit
/// (sent while it was a row) syncs after. Before, that sync wrote the row's cards anew with no
/// database: the database's syncs no longer retired them, later events about the page matched
/// no subscription, and they stayed live and stale for ever. Now a sync of content the user no
/// longer follows writes nothing: the cards keep their database, whose next sync retires them
/// as a row gone from it.
async fn a_row_moved_out_while_its_edit_waits_is_left_for_its_databases_next_sync_to_retire() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    env.notion.load_fixture_page();
    assert_eq!(env.finished(&env.subscribe(ids::DATABASE, "database").await).await["state"], "succeeded");
    let of_page = |cards: Vec<Value>| -> Vec<Value> {
        cards.into_iter().filter(|c| c["source_page_id"] == ids::PAGE).collect()
    };
    let before = of_page(env.cards_of(ids::DATABASE).await);
    assert!(!before.is_empty(), "the row has cards");

    env.notion.move_page(ids::PAGE, json!({"type": "workspace", "workspace": true}));
    env.serve_edited_page("1f3c8a2e-4b7d-8999-9999-000000000001", "1f3c8a2e-4b7d-8999-9999-000000000002");
    env.page_edited().await;
    let runs = env.syncs_settled(2).await;
    assert!(runs.iter().all(|(_, state)| state == "succeeded"), "{runs:?}");
    assert_eq!(of_page(env.cards_of(ids::DATABASE).await), before, "nothing written: still the database's");

    assert_eq!(env.finished(&env.manual_sync(ids::DATABASE).await).await["state"], "succeeded");
    assert!(of_page(env.cards().await).is_empty(), "retired as a row gone from the database");

    // Followed again, directly: its cards are made again (the sync that wrote nothing left
    // no hash to call the content unchanged).
    let run = env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(run["current_step"], "persist", "{run}");
    assert!(!of_page(env.cards().await).is_empty(), "the page's cards are back");
}
}

conformance! {
/// Unsubscribing keeps the cards already made, and makes no more: an edit whose sync waits in
/// debounce when the user unsubscribes is fetched, but its cards are not written.
async fn after_an_unsubscribe_a_sync_that_was_waiting_writes_no_cards() {
    let env = setup(|s| {
        s.insert("DEBOUNCE_SECONDS", "1".into());
    })
    .await;
    assert_eq!(env.finished(&env.subscribe(ids::PAGE, "page").await).await["state"], "succeeded");
    let before = env.cards().await;

    env.serve_edited_page("1f3c8a2e-4b7d-8999-9999-000000000001", "1f3c8a2e-4b7d-8999-9999-000000000002");
    env.unsubscribe_while_a_sync_waits(Env::page_edited_event(), ids::PAGE).await;
    let runs = env.syncs_settled(2).await;
    assert!(runs.iter().all(|(_, state)| state == "succeeded"), "{runs:?}");
    assert_eq!(env.cards().await, before, "the cards made before, untouched");

    // Nor are they retired when the page is gone (unshared) by the time such a sync reads it.
    assert_eq!(env.finished(&env.subscribe(ids::PAGE, "page").await).await["state"], "succeeded");
    env.unsubscribe_while_a_sync_waits(Env::page_edited_event(), ids::PAGE).await;
    env.notion.remove_page(ids::PAGE);
    eventually("the sync to end", Duration::from_secs(30), || async {
        let runs = env.sync_runs().await;
        (runs.len() == 4 && runs.iter().all(|(_, s)| s == "succeeded")).then_some(())
    })
    .await;
    assert_eq!(env.cards().await.len(), before.len(), "still live");
}
}

conformance! {
/// A database's sync waiting in debounce when the user unsubscribes ends there: it would read
/// every row at the user's rate limit for nothing, since it would write no card.
async fn after_an_unsubscribe_a_database_sync_that_was_waiting_reads_nothing() {
    let env = setup(|s| {
        s.insert("DEBOUNCE_SECONDS", "1".into());
    })
    .await;
    env.notion.load_fixture_database();
    assert_eq!(env.finished(&env.subscribe(ids::DATABASE, "database").await).await["state"], "succeeded");
    let before = env.cards().await;

    let event = json!({
        "id": "evt-rows-changed", "type": "data_source.content_updated",
        "entity": {"id": ids::DATA_SOURCE, "type": "data_source"},
        "data": {"parent": {"id": ids::DATABASE, "type": "database"}}
    });
    let asked = env.notion.requests().len();
    env.unsubscribe_while_a_sync_waits(event, ids::DATABASE).await;

    let runs = env.syncs_settled(2).await;
    let run = env.finished(&runs[1].0.to_string()).await;
    assert_eq!((run["state"].as_str(), run["current_step"].as_str()), (Some("succeeded"), Some("debounce")), "{run}");
    assert_eq!(env.notion.requests().len(), asked, "Notion was asked nothing more");
    assert_eq!(env.cards().await, before);
}
}

conformance! {
/// A row's cards are written by the row's own syncs and by its database's; each key's content
/// hash says what that key last wrote. Here the database's sync writes an edit, the edit is
/// undone in Notion, and the row's own sync reads the page as the row last wrote it. Before,
/// that sync found its hash unchanged and persisted nothing: the card kept the undone edit
/// until the page changed again.
async fn an_edit_a_database_sync_wrote_and_then_undone_is_undone_on_the_cards_by_the_rows_own_sync() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    env.notion.load_fixture_page();
    assert_eq!(env.finished(&env.subscribe(ids::DATABASE, "database").await).await["state"], "succeeded");
    assert_eq!(env.finished(&env.subscribe(ids::PAGE, "page").await).await["state"], "succeeded");
    let krebs = |cards: Vec<Value>| {
        let card = cards.into_iter().find(|c| c["source_block_id"] == ids::T_KREBS).expect("the Krebs card");
        card["front"].as_str().expect("front").to_owned()
    };
    let original = krebs(env.cards().await);
    let env = &env;
    let sync = |notion_id: &'static str| async move {
        let run = env.finished(&env.manual_sync(notion_id).await).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        run
    };

    env.serve_edited_page("1f3c8a2e-4b7d-8999-9999-000000000001", "1f3c8a2e-4b7d-8999-9999-000000000002");
    sync(ids::DATABASE).await;
    assert_eq!(krebs(env.cards().await), "Where exactly does the Krebs cycle run?");

    env.notion.load_fixture_page();
    let run = sync(ids::PAGE).await;
    assert_eq!(run["current_step"], "persist", "the row's cards were written again: {run}");
    assert_eq!(krebs(env.cards().await), original, "the edit was undone");
    let live = env.app.count("select count(*) from flashcards where retired_at is null and source_block_id like '1f3c8a2e-4b7d-8999%'").await;
    assert_eq!(live, 0, "the undone edit's new toggle is retired");
}
}

conformance! {
/// A sync that finds the content unchanged persists nothing, but it is a sync: its time is the
/// subscription's `last_synced_at`, and a database's data sources are learned (what
/// `data_source.*` events are matched by). Before, a database followed again after an
/// unsubscribe, its content unchanged, showed `last_synced_at: null` after a successful sync
/// and never learned its data sources.
async fn a_sync_of_unchanged_content_records_its_time_and_the_data_sources() {
    let env = setup(|_| {}).await;
    env.notion.load_fixture_database();
    assert_eq!(env.finished(&env.subscribe(ids::DATABASE, "database").await).await["state"], "succeeded");
    let path = format!("/api/users/{}/subscriptions", env.user);
    let deleted =
        env.app.client.delete(env.app.url(&format!("{path}/{}", ids::DATABASE))).bearer_auth(API_TOKEN).send().await;
    assert_eq!(deleted.expect("DELETE").status(), 204);

    let again = env.finished(&env.subscribe(ids::DATABASE, "database").await).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["current_step"], "generate", "the content was unchanged: {again}");
    let listed = expect_json(env.app.get_authorized(&path).await, 200).await;
    assert!(listed["items"][0]["last_synced_at"].is_string(), "{listed}");
    assert_eq!(env.subscribed_data_sources().await, [ids::DATA_SOURCE]);
}
}

conformance! {
/// With `FLASHCARD_GENERATOR=openai`, generate calls out: it runs outside any transaction and
/// its outcome is recorded on its own. A sync's cards are the model's; a second sync of the
/// same content asks the model nothing, ends at generate, and still records its time.
async fn with_the_openai_generator_a_sync_makes_the_models_cards_and_an_unchanged_one_asks_nothing() {
    use crate::support::fake_openai::{FakeOpenAi, Reply};
    let openai = FakeOpenAi::start().await;
    openai.push(Reply::Cards(json!([
        {"front": "Where does the Krebs cycle take place?", "back": "In the mitochondrial matrix.", "source_block_id": ids::T_KREBS}
    ])));
    let env = setup_with_openai(&openai).await;

    let first = env.finished(&env.subscribe(ids::PAGE, "page").await).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(fronts(&env.cards().await), ["Where does the Krebs cycle take place?"]);
    assert_eq!(openai.requests().len(), 1);
    let subscriptions = format!("/api/users/{}/subscriptions", env.user);
    let synced_at = |listed: Value| listed["items"][0]["last_synced_at"].as_str().expect("synced").to_owned();
    let before = synced_at(expect_json(env.app.get_authorized(&subscriptions).await, 200).await);

    let body = json!({"user_id": env.user, "notion_id": ids::PAGE});
    let started = expect_json(post(&env.app, "/api/notion/sync", body).await, 202).await;
    let again = env.finished(started["run_id"].as_str().expect("run id")).await;
    assert_eq!((&again["state"], &again["current_step"]), (&json!("succeeded"), &json!("generate")), "{again}");
    assert_eq!(openai.requests().len(), 1, "unchanged content is not sent to the model again");
    let after = synced_at(expect_json(env.app.get_authorized(&subscriptions).await, 200).await);
    let parse = |t: &str| t.parse::<chrono::DateTime<chrono::Utc>>().expect("a time");
    assert!(parse(&after) > parse(&before), "the unchanged sync's time is recorded: {before} -> {after}");
}
}

conformance! {
/// A database too large for one model request is generated in parts (whole rows), one
/// attempt each here (the step's timeout leaves no room for two requests), each going on from
/// the parts saved before it.
async fn with_the_openai_generator_a_large_database_is_generated_in_parts_across_attempts() {
    use crate::support::fake_openai::{FakeOpenAi, Reply};
    let openai = FakeOpenAi::start().await;
    // The first part outlasts the attempt's budget (1 ms here) for sure: a local answer may not.
    let first = Reply::Cards(json!([{"front": "Row one?", "back": "Yes.", "source_block_id": ids::PAGE}]));
    openai.push(Reply::delayed(Duration::from_millis(20), first));
    openai.push(Reply::Cards(json!([{"front": "Row two?", "back": "Yes.", "source_block_id": ids::PHOTOSYNTHESIS}])));
    let env = setup_with_openai(&openai).await;
    serve_database_too_large_for_one_request(&env.notion);

    let run = env.finished(&env.subscribe(ids::DATABASE, "database").await).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(fronts(&env.cards().await), ["Row one?", "Row two?"]);
    let asked: Vec<String> = openai.requests().iter().map(|r| r.message("user").to_owned()).collect();
    assert_eq!(asked.len(), 2, "one request per part, none repeated");
    assert!(asked[0].contains(ids::PAGE) && !asked[0].contains(ids::PHOTOSYNTHESIS));
    assert!(asked[1].contains(ids::PHOTOSYNTHESIS) && !asked[1].contains(ids::PAGE));
    let steps = run["steps"].as_array().expect("steps");
    let generate = steps.iter().find(|s| s["name"] == "generate").expect("generate");
    assert_eq!(generate["attempts"], 1, "parts spend no attempt: {generate}");
    let waits = env
        .app
        .count("select count(*) from workflow_step_attempts where step = 'generate' and outcome = 'waiting'")
        .await;
    assert_eq!(waits, 1, "the first part's attempt saved its progress and went on in a second");
}
}

conformance! {
/// The parts of a generation are progress: a failure after a part was made counts afresh, so a
/// model's occasional error spread over a long generation does not add up to the step's
/// attempts (here 2: one failure before each part, three failures in all would be too many).
async fn with_the_openai_generator_failures_between_parts_do_not_add_up() {
    use crate::support::fake_openai::{API_KEY, FakeOpenAi, MODEL, Reply};
    let openai = FakeOpenAi::start().await;
    for (front, source) in [("Row one?", ids::PAGE), ("Row two?", ids::PHOTOSYNTHESIS)] {
        openai.push(Reply::error(502, "upstream hiccup"));
        openai.push(Reply::Cards(json!([{"front": front, "back": "Yes.", "source_block_id": source}])));
    }
    let dir = crate::support::app::TempDir::new();
    let file = crate::support::app::workflow_file_with(
        &dir,
        "[steps.generate]\ntimeout_seconds = 120\nattempts = 5",
        "[steps.generate]\ntimeout_seconds = 120\nattempts = 2",
    );
    let base = openai.base_url();
    let env = setup(|s| {
        s.insert("FLASHCARD_GENERATOR", "openai".into());
        s.insert("OPENAI_BASE_URL", base);
        s.insert("OPENAI_API_KEY", API_KEY.into());
        s.insert("OPENAI_MODEL", MODEL.into());
        s.insert("WORKFLOW_FILE", file.clone());
    })
    .await;
    serve_database_too_large_for_one_request(&env.notion);

    let run = env.finished(&env.subscribe(ids::DATABASE, "database").await).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(fronts(&env.cards().await), ["Row one?", "Row two?"]);
    assert_eq!(openai.requests().len(), 4, "each part failed once and was then made");
}
}

/// The fixture database with about 33 KB of notes in each of its two rows (`ids::PAGE` and
/// `ids::PHOTOSYNTHESIS`): too much for one model request, so the `openai` generator makes
/// one part per row.
fn serve_database_too_large_for_one_request(notion: &FakeNotion) {
    notion.load_fixture_database();
    for (n, row) in [ids::PAGE, ids::PHOTOSYNTHESIS].into_iter().enumerate() {
        let id = format!("2c000000-0000-4000-8000-{n:012}");
        notion.set_children(row, vec![paragraph(&id, &"Notes on respiration. ".repeat(1_500))]);
    }
}

conformance! {
/// An ops retry of a sync that failed is judged like the sync it retries: once the user has
/// unsubscribed, it writes no card (nothing would ever update or retire cards nobody follows).
/// A manual sync retried still writes, as the manual sync would have.
async fn a_retried_sync_of_content_unsubscribed_since_it_failed_writes_no_cards() {
    let env = setup(|_| {}).await;
    assert_eq!(env.finished(&env.subscribe(ids::PAGE, "page").await).await["state"], "succeeded");
    let before = env.cards().await;

    // The page is edited, but Notion refuses the sync that follows (403: fails at once).
    env.serve_edited_page("1f3c8a2e-4b7d-8999-9999-000000000011", "1f3c8a2e-4b7d-8999-9999-000000000012");
    env.notion.inject_always("/v1/pages/", Fault::Status(403));
    env.page_edited().await;
    let runs = env.syncs_settled(2).await;
    assert_eq!(runs[1].1, "failed", "{runs:?}");
    let path = format!("/api/users/{}/subscriptions/{}", env.user, ids::PAGE);
    let deleted = env.app.client.delete(env.app.url(&path)).bearer_auth(API_TOKEN).send().await.expect("DELETE");
    assert_eq!(deleted.status(), 204);

    env.notion.clear_faults();
    let retried = env.retried(&runs[1].0.to_string()).await;
    assert_eq!(retried["state"], "succeeded", "{retried}");
    assert_eq!(retried["trigger"], "retry");
    assert_eq!(env.cards().await, before, "the unfollowed page's cards as they were");

    // A manual sync that failed, retried after the same unsubscribe, writes the edit.
    env.notion.inject_always("/v1/pages/", Fault::Status(403));
    let manual = env.manual_sync(ids::PAGE).await;
    assert_eq!(env.finished(&manual).await["state"], "failed");
    env.notion.clear_faults();
    assert_eq!(env.retried(&manual).await["state"], "succeeded");
    let fronts: Vec<String> = env.cards().await.iter().map(|c| c["front"].as_str().unwrap_or("").to_owned()).collect();
    assert!(fronts.iter().any(|f| f.contains("NADH")), "the edit is written: {fronts:?}");
}
}

conformance! {
/// With the `openai` generator, a sync of content the user unsubscribed from while it waited
/// in debounce sends nothing to the model (it is paid for, and persist would write none of its
/// cards): the run ends at generate and the cards stay as they were.
async fn with_the_openai_generator_a_sync_of_unfollowed_content_asks_the_model_nothing() {
    use crate::support::fake_openai::{FakeOpenAi, Reply};
    let openai = FakeOpenAi::start().await;
    openai.push(Reply::Cards(json!([
        {"front": "Where does the Krebs cycle take place?", "back": "In the mitochondrial matrix.", "source_block_id": ids::T_KREBS}
    ])));
    let env = setup_with_openai(&openai).await;
    assert_eq!(env.finished(&env.subscribe(ids::PAGE, "page").await).await["state"], "succeeded");
    assert_eq!(openai.requests().len(), 1);
    let before = env.cards().await;

    env.serve_edited_page("1f3c8a2e-4b7d-8999-9999-000000000021", "1f3c8a2e-4b7d-8999-9999-000000000022");
    env.unsubscribe_while_a_sync_waits(Env::page_edited_event(), ids::PAGE).await;
    let runs = env.syncs_settled(2).await;
    let run = env.finished(&runs[1].0.to_string()).await;
    assert_eq!((run["state"].as_str(), run["current_step"].as_str()), (Some("succeeded"), Some("generate")), "{run}");
    assert_eq!(openai.requests().len(), 1, "the model was asked nothing more");
    assert_eq!(env.cards().await, before);
}
}
