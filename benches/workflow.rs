//! Workflow throughput benchmark (`cargo bench --bench workflow -- <drive|apalis> [options]`);
//! `bench/workflow.sh` (`just bench-workflow`) runs both subcommands around a release service.
//!
//! `drive`: starts a minimal fake Notion on 127.0.0.1 (an ephemeral port, printed first as
//! `FAKE_NOTION_PORT=<port>` so the caller can point the service's `NOTION_API_BASE_URL` at it),
//! waits for the service's `/readyz`, then:
//!   1. creates the users (default one) with a Notion token each and N page subscriptions, and
//!      waits for the N initial syncs (trigger `subscription`) to end: the "initial" phase;
//!   2. sends one signed `page.content_updated` event per page (with some concurrency) and waits
//!      until the N event runs and the N sync runs they start have ended: the "event" phase;
//!   3. (the "probe") sends a few more events one at a time, each once the previous one's runs
//!      have ended, to see the pickup latency of an idle service apart from queueing.
//!
//! The fake answers any page id with a copy of tests/fixtures/notion/page_retrieve.json and its
//! children with two toggles without children, so one sync is two Notion requests. Every page
//! retrieval bumps that page's revision (in its title and its toggles), so the event-phase sync
//! sees changed content and runs all of debounce → fetch → generate → persist (unchanged content
//! would end the run at `generate`).
//!
//! Everything is measured from the service's own tables afterwards (the engine records each
//! step attempt): a phase lasts from the first request sent to the last run's `finished_at`.
//! Step pickup latency for fetch / generate / persist = the attempt's `started_at` minus the
//! previous attempt's `finished_at` in the same run, when that previous attempt was another step
//! that succeeded (the next job is enqueued in the transaction that records it). Both are
//! `now()` of their transactions: the claim statement, and the start of the fenced transaction
//! that records the previous step (for the transactional steps, which also holds their work).
//!
//! Also reported: how long each step took, a run's first pickup (from its creation), event
//! received → sync finished, the database's commits and row writes per sync
//! (pg_stat_database), and the same for the idle probe. `PHASE <name> start|end` lines mark the
//! phases for the caller's CPU and pg_stat_activity sampling.
//!
//! `apalis`: the reference. Pushes `--jobs` no-op jobs (payload shaped like the service's step
//! job, `max_attempts` 1 like the service's) into a queue of its own with
//! `apalis_postgres::queries::push_tasks`, then runs one apalis worker configured like the
//! service's (`Config::default().queue(..).batch_size(concurrency)`, heartbeat 5 s, pubsub plus
//! polling, same concurrency) until every job is done; jobs/s from the first to the last
//! completion (`done_at`), or over the last `--measure-last` completions.
//!
//! drive options (environment variable in brackets):
//!   --url URL            the service's base URL [WORKFLOW_URL] (default http://127.0.0.1:8000)
//!   --api-token T        its API_TOKEN [API_TOKEN]
//!   --secret S           its NOTION_WEBHOOK_SECRET [NOTION_WEBHOOK_SECRET]
//!   --database-url URL   its database, for the measurements [DATABASE_URL]
//!   -n, --pages N        pages (subscriptions, events) (default 1000) [PAGES]
//!   --users N            users the pages are spread over, round robin (default 1) [USERS]
//!   -c, --concurrency N  API / webhook requests in flight (default 32) [SEND_CONCURRENCY]
//!   --timeout S          most seconds to wait for one phase's runs (default 600) [PHASE_TIMEOUT]
//!   --probe N            then N more events one at a time, each once the previous one's runs
//!                        ended: pickup latency of an idle service (default 20; 0: none) [PROBE_EVENTS]
//!   -t, --threads N      runtime threads (driver + fake Notion) (default 2)
//! apalis options:
//!   --database-url URL   [DATABASE_URL]
//!   --jobs N             no-op jobs (default 20000) [APALIS_JOBS]
//!   --concurrency N      worker concurrency (default 16) [WORKER_CONCURRENCY]
//!   --batch-size N       fetch batch (default: the concurrency, at most 100, like the service)
//!   --poll-ms N          poll interval besides LISTEN/NOTIFY (default 250) [WORKER_POLL_INTERVAL_MS]
//!   --max-connections N  pool size (default 20, the service's) [DATABASE_MAX_CONNECTIONS]
//!   --timeout S          most seconds to wait for the jobs (default 600)
//!   --measure-last M     jobs/s over the last M completions only (default 0: all), to measure
//!                        after the worker has done as many jobs as the service's had (apalis's
//!                        ack finds a batch's rows through `lock_by`, which done rows keep, so an
//!                        ack costs more the more jobs the worker has done)
//!
//! The last line printed is machine-readable (`RESULT key=value ...`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::*;
use apalis_postgres::{Config as QueueConfig, PostgresStorage};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use poem::{Endpoint, Request, Response, Server, http::StatusCode, listener::TcpAcceptor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{PgPool, postgres::PgPoolOptions};

type HmacSha256 = Hmac<Sha256>;

const PAGE_FIXTURE: &str = include_str!("../tests/fixtures/notion/page_retrieve.json");
const DEFAULT_URL: &str = "http://127.0.0.1:8000";
/// The service's step queue (see src/store/jobs.rs).
const STEP_QUEUE: &str = "cognie_sync.steps";
const TERMINAL: &str = "('succeeded', 'failed', 'cancelled')";
/// Runs of the initial phase, and of the event phase (`r` is `workflow_runs`).
const INITIAL_RUNS: &str = "r.workflow = 'notion_sync' and r.trigger = 'subscription'";
const EVENT_RUNS: &str =
    "(r.workflow = 'notion_event' or (r.workflow = 'notion_sync' and r.trigger = 'webhook'))";

// ----- options --------------------------------------------------------------------------

fn usage() -> &'static str {
    "usage: workflow drive --url URL --api-token T --secret S --database-url URL [-n PAGES] [--users N] \
     [-c CONCURRENCY] [--timeout S] [--probe N] [-t THREADS]\n       \
     workflow apalis --database-url URL [--jobs N] [--concurrency N] [--batch-size N] [--poll-ms N] \
     [--max-connections N] [--timeout S] [--measure-last M]"
}

/// An option: its name (`--name`), other spellings, environment variables, default.
type OptSpec = (&'static str, &'static [&'static str], &'static [&'static str], Option<&'static str>);

/// `--opt value` / `--opt=value` pairs, after the subcommand; each option may have a default
/// from the environment.
struct Args {
    values: HashMap<&'static str, String>,
}

impl Args {
    fn parse(args: &[String], spec: &[OptSpec]) -> Result<Self, String> {
        let mut values = HashMap::new();
        for (name, _, envs, default) in spec {
            let from_env = envs.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
            if let Some(v) = from_env.or_else(|| default.map(str::to_owned)) {
                values.insert(*name, v);
            }
        }
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            if flag == "--bench" {
                // `cargo bench` appends it to a harness-less bench's arguments.
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(usage().into());
            }
            let Some((name, ..)) = spec.iter().find(|(name, aliases, ..)| {
                flag.strip_prefix("--") == Some(*name) || aliases.contains(&flag)
            }) else {
                return Err(format!("unknown argument {arg:?}\n{}", usage()));
            };
            let value =
                inline.or_else(|| it.next().cloned()).ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(*name, value);
        }
        Ok(Self { values })
    }

    fn string(&self, name: &str) -> Result<String, String> {
        self.values.get(name).cloned().ok_or_else(|| format!("--{name} is required\n{}", usage()))
    }

    fn positive(&self, name: &str) -> Result<u64, String> {
        let v = self.string(name)?;
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("--{name} must be a positive integer, not {v:?}"))
    }

    fn count(&self, name: &str) -> Result<u64, String> {
        let v = self.string(name)?;
        v.parse::<u64>().map_err(|_| format!("--{name} must be a whole number, not {v:?}"))
    }

    fn seconds(&self, name: &str) -> Result<Duration, String> {
        let v = self.string(name)?;
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("--{name} must be a positive number of seconds, not {v:?}"))
    }
}

/// Starts a measured phase right after a checkpoint, so that no phase pays for a timed one
/// falling inside it (its writes, and the full-page image logged for the first change of
/// every page after it starts). Runs of the same code measured 224-419 runs/s without this,
/// 370-435 with it. Needs a superuser or `pg_checkpoint`; without, the phase runs as it
/// comes, with a warning.
async fn checkpoint(pool: &PgPool) {
    if let Err(e) = sqlx::query("checkpoint").execute(pool).await {
        eprintln!("workflow: no checkpoint before the phase ({e}); expect noisier numbers");
    }
}

// ----- the fake Notion ------------------------------------------------------------------

/// Just enough of Notion for one page sync: `GET /v1/pages/{id}` for any id, and
/// `GET /v1/blocks/{id}/children` with two toggles without children. Needs a known bearer token.
struct FakeNotion {
    tokens: HashSet<String>,
    page_template: Value,
    /// Page id (32 hex, no dashes) → times retrieved.
    revisions: Mutex<HashMap<String, u64>>,
    requests: AtomicU64,
    rejected: AtomicU64,
}

impl FakeNotion {
    fn new(tokens: HashSet<String>) -> Self {
        let mut page_template: Value = serde_json::from_str(PAGE_FIXTURE).expect("the page fixture is JSON");
        if let Some(map) = page_template.as_object_mut() {
            map.remove("request_id");
        }
        Self {
            tokens,
            page_template,
            revisions: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn answer(&self, req: &Request) -> (StatusCode, Value) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let bearer = req.header("authorization").and_then(|a| a.strip_prefix("Bearer "));
        if !bearer.is_some_and(|t| self.tokens.contains(t)) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return notion_error(StatusCode::UNAUTHORIZED, "unauthorized", "API token is invalid.");
        }
        let segments: Vec<&str> = req.uri().path().trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v1", "pages", id] => match dashed(id) {
                Some(id) => {
                    let revision = {
                        let mut revisions = self.revisions.lock().expect("not poisoned");
                        let r = revisions.entry(id.replace('-', "")).or_default();
                        *r += 1;
                        *r
                    };
                    (StatusCode::OK, self.page(&id, revision))
                }
                None => not_found("page", id),
            },
            ["v1", "blocks", id, "children"] => match dashed(id) {
                Some(id) => {
                    let revision = self
                        .revisions
                        .lock()
                        .expect("not poisoned")
                        .get(&id.replace('-', ""))
                        .copied()
                        .unwrap_or(0);
                    // Only pages have children here; a block's list is empty.
                    let results = if id.as_bytes()[9..13] == *b"0000" {
                        (1..=2).map(|k| toggle(&id, k, revision)).collect()
                    } else {
                        Vec::new()
                    };
                    let list = json!({
                        "object": "list", "results": results, "next_cursor": null, "has_more": false,
                        "type": "block", "block": {}, "request_id": uuid::Uuid::new_v4(),
                    });
                    (StatusCode::OK, list)
                }
                None => not_found("block", id),
            },
            _ => notion_error(StatusCode::BAD_REQUEST, "invalid_request_url", "Invalid request URL."),
        }
    }

    fn page(&self, id: &str, revision: u64) -> Value {
        let mut page = self.page_template.clone();
        let title = format!("Bench page {id} r{revision}");
        page["id"] = json!(id);
        page["url"] = json!(format!("https://www.notion.so/{}", id.replace('-', "")));
        page["request_id"] = json!(uuid::Uuid::new_v4());
        let text = &mut page["properties"]["Name"]["title"][0];
        text["text"]["content"] = json!(title);
        text["plain_text"] = json!(title);
        page
    }
}

/// Block `k` of a page: the page id with `k` in its second group.
fn toggle(page_id: &str, k: u16, revision: u64) -> Value {
    let id = format!("{}{k:04x}{}", &page_id[..9], &page_id[13..]);
    let text = format!("Question {k} (revision {revision})");
    let user = json!({ "object": "user", "id": "a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d" });
    json!({
        "object": "block",
        "id": id,
        "parent": { "type": "page_id", "page_id": page_id },
        "created_time": "2026-05-04T09:12:00.000Z",
        "last_edited_time": "2026-05-12T07:04:00.000Z",
        "created_by": user,
        "last_edited_by": user,
        "has_children": false,
        "in_trash": false,
        "archived": false,
        "type": "toggle",
        "toggle": {
            "rich_text": [{
                "type": "text",
                "text": { "content": text, "link": null },
                "annotations": { "bold": false, "italic": false, "strikethrough": false,
                                 "underline": false, "code": false, "color": "default" },
                "plain_text": text,
                "href": null
            }],
            "color": "default"
        }
    })
}

/// A Notion id in its dashed, lowercase form, if it is one.
fn dashed(id: &str) -> Option<String> {
    let hex: String = id.chars().filter(|c| *c != '-').flat_map(char::to_lowercase).collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

fn notion_error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    let body = json!({ "object": "error", "status": status.as_u16(), "code": code, "message": message,
                       "request_id": uuid::Uuid::new_v4() });
    (status, body)
}

fn not_found(object: &str, id: &str) -> (StatusCode, Value) {
    notion_error(
        StatusCode::NOT_FOUND,
        "object_not_found",
        &format!(
            "Could not find {object} with ID: {id}. Make sure the relevant pages and databases are shared with your integration."
        ),
    )
}

struct FakeEndpoint(Arc<FakeNotion>);

impl Endpoint for FakeEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let (status, body) = self.0.answer(&req);
        Ok(Response::builder()
            .status(status)
            .content_type("application/json; charset=utf-8")
            .body(serde_json::to_vec(&body).expect("a JSON value always serialises")))
    }
}

/// Starts the fake on an ephemeral port of 127.0.0.1; returns the port.
async fn start_fake_notion(fake: Arc<FakeNotion>) -> Result<u16, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind the fake Notion: {e}"))?;
    let port = listener.local_addr().map_err(|e| format!("fake Notion address: {e}"))?.port();
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|e| format!("fake Notion acceptor: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = Server::new_with_acceptor(acceptor).run(FakeEndpoint(fake)).await {
            eprintln!("workflow: the fake Notion stopped: {e}");
        }
    });
    Ok(port)
}

/// After a `PHASE ...` marker: bench/workflow.sh samples CPU time when it sees one (it looks
/// every 100 ms), so give it the time to before the phase starts, or before this process adds
/// load (or exits) after it ended.
async fn settle_for_snapshot() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The database's cumulative activity (pg_stat_database): commits, rollbacks, rows inserted,
/// updated, deleted. Backends report it when they go idle (at most ~1 s late).
#[derive(Debug, Default, Clone, Copy)]
struct DbCounters {
    commits: i64,
    rollbacks: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
}

impl DbCounters {
    async fn read(pool: &PgPool) -> Result<Self, String> {
        let (commits, rollbacks, inserted, updated, deleted): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "select xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted \
             from pg_stat_database where datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| format!("reading pg_stat_database: {e}"))?;
        Ok(Self { commits, rollbacks, inserted, updated, deleted })
    }

    fn since(self, before: Self) -> Self {
        Self {
            commits: self.commits - before.commits,
            rollbacks: self.rollbacks - before.rollbacks,
            inserted: self.inserted - before.inserted,
            updated: self.updated - before.updated,
            deleted: self.deleted - before.deleted,
        }
    }

    /// Per `unit` (a run, a job), one decimal.
    fn per(self, units: i64, unit: &str) -> String {
        let u = units.max(1) as f64;
        format!(
            "{:.1} commits, {:.1} rollbacks, {:.1} rows inserted, {:.1} updated, {:.1} deleted per {unit}",
            self.commits as f64 / u,
            self.rollbacks as f64 / u,
            self.inserted as f64 / u,
            self.updated as f64 / u,
            self.deleted as f64 / u
        )
    }
}

/// Dynamic SQL in this file only ever interpolates its own constant filters and expressions.
fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

// ----- drive ----------------------------------------------------------------------------

struct DriveOptions {
    url: String,
    api_token: String,
    secret: String,
    database_url: String,
    pages: usize,
    users: usize,
    concurrency: usize,
    timeout: Duration,
    probe: usize,
}

fn drive_options(args: &Args) -> Result<DriveOptions, String> {
    let options = DriveOptions {
        url: args.string("url")?.trim_end_matches('/').to_owned(),
        api_token: args.string("api-token")?,
        secret: args.string("secret")?,
        database_url: args.string("database-url")?,
        pages: args.positive("pages")? as usize,
        users: args.positive("users")? as usize,
        concurrency: args.positive("concurrency")? as usize,
        timeout: args.seconds("timeout")?,
        probe: args.count("probe")? as usize,
    };
    if options.users > options.pages {
        return Err("--users must not be more than --pages".into());
    }
    Ok(options)
}

/// The service's HTTP API, as the driver uses it.
struct Api {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder, expect: u16) -> Result<Value, String> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| format!("{e}"))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| format!("reading the body: {e}"))?;
        if status != expect {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn create_user(&self, email: &str, notion_token: &str) -> Result<String, String> {
        let user = self
            .send(self.client.post(format!("{}/api/users", self.url)).json(&json!({ "email": email })), 201)
            .await
            .map_err(|e| format!("POST /api/users: {e}"))?;
        let id = user["id"].as_str().ok_or_else(|| format!("POST /api/users answered {user}"))?.to_owned();
        self.send(
            self.client
                .put(format!("{}/api/users/{id}/notion-token", self.url))
                .json(&json!({ "token": notion_token })),
            204,
        )
        .await
        .map_err(|e| format!("PUT /api/users/{id}/notion-token: {e}"))?;
        Ok(id)
    }

    async fn subscribe(&self, user: &str, page: &str) -> Result<(), String> {
        self.send(
            self.client
                .post(format!("{}/api/users/{user}/subscriptions", self.url))
                .json(&json!({ "notion_id": page, "kind": "page" })),
            201,
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("POST /api/users/{user}/subscriptions: {e}"))
    }
}

/// A signed `page.content_updated` event for `page`, and its `X-Notion-Signature`.
fn signed_event(key: &HmacSha256, page: &str) -> (Vec<u8>, String) {
    let event = json!({
        "id": uuid::Uuid::new_v4(),
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "workspace_id": "5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f",
        "subscription_id": "2b9f4e61-7c3a-4d85-b0e2-9f1a6c3d5e70",
        "integration_id": "1e7d2a9b-3c4f-8012-9a5b-00c7e3f1d2a8",
        "type": "page.content_updated",
        "authors": [{ "id": "a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d", "type": "person" }],
        "attempt_number": 1,
        "api_version": "2025-09-03",
        "entity": { "id": page, "type": "page" },
        "data": { "updated_blocks": [{ "id": format!("{}0001{}", &page[..9], &page[13..]), "type": "block" }] }
    });
    let body = serde_json::to_vec(&event).expect("a JSON value always serialises");
    let mut mac = key.clone();
    mac.update(&body);
    (body, format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// Run counts of one phase.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    total: i64,
    ended: i64,
    failed: i64,
    event_runs: i64,
    event_runs_ended: i64,
}

async fn progress(pool: &PgPool, filter: &str) -> Result<Progress, String> {
    let (total, ended, failed, event_runs, event_runs_ended): (i64, i64, i64, i64, i64) =
        sqlx::query_as(sql(format!(
            "select count(*), count(*) filter (where r.state in {TERMINAL}), \
                    count(*) filter (where r.state <> 'succeeded' and r.state in {TERMINAL}), \
                    count(*) filter (where r.workflow = 'notion_event'), \
                    count(*) filter (where r.workflow = 'notion_event' and r.state in {TERMINAL}) \
             from workflow_runs r where {filter}"
        )))
        .fetch_one(pool)
        .await
        .map_err(|e| format!("counting runs: {e}"))?;
    Ok(Progress { total, ended, failed, event_runs, event_runs_ended })
}

/// Polls until `done` says the phase is over, printing progress now and then.
async fn wait_for(
    pool: &PgPool,
    phase: &str,
    filter: &str,
    timeout: Duration,
    done: impl Fn(&Progress) -> bool,
) -> Result<Progress, String> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let p = progress(pool, filter).await?;
        if done(&p) {
            return Ok(p);
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{phase}: not done after {:.0}s: {} runs, {} ended ({} not succeeded)",
                timeout.as_secs_f64(),
                p.total,
                p.ended,
                p.failed
            ));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("workflow: {phase}: {} runs, {} ended ({} not succeeded)", p.total, p.ended, p.failed);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50 / p99 / max / mean (ms) and how many values.
#[derive(Debug, Default, Clone, Copy)]
struct Dist {
    n: i64,
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl std::fmt::Display for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1}  p99 {:.1}  max {:.1}  mean {:.1} ms  (n={})",
            self.p50, self.p99, self.max, self.mean, self.n
        )
    }
}

/// The distribution of `ms` over the rows of `sql` (which selects `key` and `ms`), per key and
/// over all keys (key "").
async fn distributions(pool: &PgPool, rows_sql: &str) -> Result<BTreeMap<String, Dist>, String> {
    type Row = (Option<String>, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Row> = sqlx::query_as(sql(format!(
        "with d as ({rows_sql}) \
         select key, count(*), percentile_cont(0.5) within group (order by ms), \
                percentile_cont(0.99) within group (order by ms), max(ms), avg(ms) \
         from d group by grouping sets ((key), ())"
    )))
    .fetch_all(pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    Ok(rows
        .into_iter()
        .map(|(key, n, p50, p99, max, mean)| {
            let nan = f64::NAN;
            let dist = Dist {
                n,
                p50: p50.unwrap_or(nan),
                p99: p99.unwrap_or(nan),
                max: max.unwrap_or(nan),
                mean: mean.unwrap_or(nan),
            };
            (key.unwrap_or_default(), dist)
        })
        .collect())
}

/// What one phase measured.
struct PhaseReport {
    runs: i64,
    elapsed: f64,
    attempts: i64,
    /// Step pickup (the goal's measure), by step and overall ("").
    pickup: BTreeMap<String, Dist>,
    /// fetch / generate / persist attempts not counted in `pickup` (retries, waits).
    pickup_excluded: i64,
    /// A run's first step: its start minus the run's creation.
    first_pickup: BTreeMap<String, Dist>,
    /// Step attempts' own durations.
    durations: BTreeMap<String, Dist>,
    states: Vec<(String, String, String, i64)>,
}

async fn phase_report(pool: &PgPool, filter: &str, started: DateTime<Utc>) -> Result<PhaseReport, String> {
    let (runs, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(sql(format!(
        "select count(*), max(r.finished_at) from workflow_runs r where {filter}"
    )))
    .fetch_one(pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    let elapsed = last.map_or(f64::NAN, |l| (l - started).num_microseconds().unwrap_or(0) as f64 / 1e6);
    let attempts: i64 = sqlx::query_scalar(sql(format!(
        "select count(*) from workflow_step_attempts a join workflow_runs r on r.id = a.run_id where {filter}"
    )))
    .fetch_one(pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    let ms = |a: &str, b: &str| format!("extract(epoch from ({a} - {b}))::float8 * 1000");
    let sequenced = format!(
        "select a.step, a.started_at, \
                lag(a.step) over w as prev_step, lag(a.finished_at) over w as prev_finished, \
                lag(a.outcome) over w as prev_outcome \
         from workflow_step_attempts a join workflow_runs r on r.id = a.run_id \
         where {filter} \
         window w as (partition by a.run_id order by a.started_at, a.finished_at)"
    );
    let pickup = distributions(
        pool,
        &format!(
            "select step as key, {} as ms from ({sequenced}) s \
             where step in ('fetch', 'generate', 'persist') \
               and prev_step is distinct from step and prev_outcome = 'succeeded'",
            ms("started_at", "prev_finished")
        ),
    )
    .await?;
    let later_attempts: i64 = sqlx::query_scalar(sql(format!(
        "select count(*) from workflow_step_attempts a join workflow_runs r on r.id = a.run_id \
         where {filter} and a.step in ('fetch', 'generate', 'persist')"
    )))
    .fetch_one(pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    let first_pickup = distributions(
        pool,
        &format!(
            "select step as key, {} as ms from ( \
                select a.step, a.started_at, r.created_at, \
                       row_number() over (partition by a.run_id order by a.started_at) as n \
                from workflow_step_attempts a join workflow_runs r on r.id = a.run_id where {filter}) s \
             where n = 1",
            ms("started_at", "created_at")
        ),
    )
    .await?;
    let durations = distributions(
        pool,
        &format!(
            "select a.step as key, {} as ms \
             from workflow_step_attempts a join workflow_runs r on r.id = a.run_id \
             where {filter} and a.finished_at is not null",
            ms("a.finished_at", "a.started_at")
        ),
    )
    .await?;
    let states: Vec<(String, String, String, i64)> = sqlx::query_as(sql(format!(
        "select r.workflow, r.state, coalesce(r.error_kind, ''), count(*) from workflow_runs r \
         where {filter} group by 1, 2, 3 order by 1, 2, 3"
    )))
    .fetch_all(pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    let counted = pickup.get("").map_or(0, |d| d.n);
    Ok(PhaseReport {
        runs,
        elapsed,
        attempts,
        pickup,
        pickup_excluded: later_attempts - counted,
        first_pickup,
        durations,
        states,
    })
}

fn print_phase(name: &str, report: &PhaseReport) {
    println!(
        "{name}: {} runs, {} step attempts in {:.2}s: {:.1} runs/s, {:.1} step attempts/s",
        report.runs,
        report.attempts,
        report.elapsed,
        report.runs as f64 / report.elapsed,
        report.attempts as f64 / report.elapsed
    );
    for (workflow, state, error, n) in &report.states {
        let error = if error.is_empty() { String::new() } else { format!(" ({error})") };
        println!("  runs {workflow} {state}{error}: {n}");
    }
    for (key, d) in &report.pickup {
        let key = if key.is_empty() { "all" } else { key.as_str() };
        println!("  step pickup {key:<14} {d}");
    }
    if report.pickup_excluded > 0 {
        println!("  ({} fetch/generate/persist attempts were retries or resumed waits, not counted)", {
            report.pickup_excluded
        });
    }
    for (key, d) in report.first_pickup.iter().filter(|(k, _)| !k.is_empty()) {
        println!("  first step    {key:<14} {d}  (from the run's creation)");
    }
    for (key, d) in report.durations.iter().filter(|(k, _)| !k.is_empty()) {
        println!("  step duration {key:<14} {d}");
    }
}

async fn drive(options: DriveOptions) -> Result<(), String> {
    // Ids unique to this run: 32 hex, dashed; the second group (0000) marks a page.
    let tag = uuid::Uuid::new_v4().as_u128() as u32;
    let pages: Vec<String> =
        (0..options.pages).map(|i| format!("{tag:08x}-0000-4000-8000-{i:012x}")).collect();
    let tokens: Vec<String> = (0..options.users)
        .map(|i| format!("secret_bench_{tag:08x}_{i}_{}", uuid::Uuid::new_v4().simple()))
        .collect();

    let fake = Arc::new(FakeNotion::new(tokens.iter().cloned().collect()));
    let port = start_fake_notion(fake.clone()).await?;
    println!("FAKE_NOTION_PORT={port}");

    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(options.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;

    // The caller starts the service once it knows the fake's port.
    let ready_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client.get(format!("{}/readyz", options.url)).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() > ready_deadline => {
                return Err(format!("{}/readyz did not answer 200 within 120s", options.url));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&options.database_url)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    let api =
        Arc::new(Api { client: client.clone(), url: options.url.clone(), token: options.api_token.clone() });

    eprintln!(
        "workflow: fake Notion on 127.0.0.1:{port}; {} pages, {} user(s), {} requests in flight",
        options.pages, options.users, options.concurrency
    );

    // --- initial phase: users, tokens, subscriptions (each starts a sync) -------------------
    let mut users = Vec::with_capacity(options.users);
    for (i, token) in tokens.iter().enumerate() {
        let email = format!("bench-{tag:08x}-{i}@example.com");
        users.push(api.create_user(&email, token).await?);
    }
    println!("PHASE initial start");
    let initial_started = Utc::now();
    let subscribe_clock = Instant::now();
    let results: Vec<Result<(), String>> = futures::stream::iter(pages.iter().enumerate())
        .map(|(i, page)| {
            let api = api.clone();
            let user = users[i % users.len()].clone();
            async move { api.subscribe(&user, page).await }
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(format!("subscribing failed: {e}"));
    }
    let subscribe_secs = subscribe_clock.elapsed().as_secs_f64();
    let n = options.pages as i64;
    wait_for(&pool, "initial syncs", INITIAL_RUNS, options.timeout, |p| p.total >= n && p.ended == p.total)
        .await?;
    println!("PHASE initial end");
    let initial = phase_report(&pool, INITIAL_RUNS, initial_started).await?;
    // Statistics, as autovacuum (on by default) would have taken them on a real database by
    // now: the tables were empty when the service started, and a PostgreSQL run with
    // autovacuum off (as on the development machines) never analyzes them, so the planner
    // would keep guessing; e.g. retiring a sync's cards walked all of the user's cards
    // instead of the page's. The apalis reference runs on this database afterwards and has
    // the same statistics.
    sqlx::query("analyze").execute(&pool).await.map_err(|e| format!("analyze: {e}"))?;
    checkpoint(&pool).await;
    let notion_after_initial = fake.requests.load(Ordering::Relaxed);

    // --- event phase: one signed event per page ---------------------------------------------
    let key = HmacSha256::new_from_slice(options.secret.as_bytes()).expect("HMAC accepts keys of any length");
    let webhook_url = format!("{}/api/notion/webhook/notion", options.url);
    // Signed before the clock starts.
    let events: Vec<(Vec<u8>, String)> = pages.iter().map(|p| signed_event(&key, p)).collect();
    // The service's worker has done (and apalis still holds) this many step job rows when the
    // event phase starts; the apalis reference repeats that history before it measures.
    let jobs_before_events: i64 = sqlx::query_scalar("select count(*) from apalis.jobs where job_type = $1")
        .bind(STEP_QUEUE)
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("counting jobs: {e}"))?;
    let counters_before = DbCounters::read(&pool).await?;
    println!("PHASE events start");
    settle_for_snapshot().await;
    let events_started = Utc::now();
    let send_clock = Instant::now();
    let answers: Vec<Result<(), String>> = futures::stream::iter(events)
        .map(|(body, signature)| {
            let client = client.clone();
            let url = webhook_url.clone();
            async move {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-notion-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{e}"))?;
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if status == 200 && text.contains("\"accepted\"") {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}: {text}"))
                }
            }
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    let send_secs = send_clock.elapsed().as_secs_f64();
    let accepted = answers.iter().filter(|a| a.is_ok()).count() as i64;
    if let Some(Err(e)) = answers.iter().find(|a| a.is_err()) {
        eprintln!("workflow: {} of {} events not accepted, e.g. {e}", n - accepted, n);
    }
    let waited = wait_for(&pool, "event phase", EVENT_RUNS, options.timeout, |p| {
        p.event_runs >= accepted && p.event_runs_ended == p.event_runs && p.ended == p.total
    })
    .await;
    println!("PHASE events end");
    settle_for_snapshot().await;
    let events = phase_report(&pool, EVENT_RUNS, events_started).await?;
    let ended = match waited {
        Ok(ended) => ended,
        Err(e) => {
            print_phase("event phase (unfinished)", &events);
            return Err(e);
        }
    };
    let notion_events = fake.requests.load(Ordering::Relaxed) - notion_after_initial;
    // Let the last backends report their statistics.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let db_work = DbCounters::read(&pool).await?.since(counters_before);

    // Event received → its sync run finished.
    let e2e = distributions(
        &pool,
        "select '' as key, extract(epoch from (s.finished_at - e.received_at))::float8 * 1000 as ms \
         from workflow_runs s join workflow_run_events re on re.run_id = s.id \
         join webhook_events e on e.id = re.event_id \
         where s.workflow = 'notion_sync' and s.trigger = 'webhook' and s.state in ('succeeded', 'failed')",
    )
    .await?;
    let e2e = e2e.get("").copied().unwrap_or_default();
    let sync_runs: i64 = sqlx::query_scalar(sql(format!(
        "select count(*) from workflow_runs r where {EVENT_RUNS} and r.workflow = 'notion_sync'"
    )))
    .fetch_one(&pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    let persisted: i64 = sqlx::query_scalar(sql(format!(
        "select count(*) from workflow_steps s join workflow_runs r on r.id = s.run_id \
         where {EVENT_RUNS} and s.name = 'persist' and s.state = 'succeeded'"
    )))
    .fetch_one(&pool)
    .await
    .map_err(|e| format!("measuring: {e}"))?;
    let jobs: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from apalis.jobs where job_type = $1 group by 1 order by 1")
            .bind(STEP_QUEUE)
            .fetch_all(&pool)
            .await
            .map_err(|e| format!("measuring: {e}"))?;
    // --- probe: events one at a time, each after the previous one's runs ended ---------------
    let probe = if options.probe > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let probe_started = Utc::now();
        let filter = format!("{EVENT_RUNS} and r.created_at >= '{}'", probe_started.to_rfc3339());
        for (i, page) in pages.iter().cycle().take(options.probe).enumerate() {
            let (body, signature) = signed_event(&key, page);
            let response = client
                .post(&webhook_url)
                .header("content-type", "application/json")
                .header("x-notion-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("probe event: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("probe event: HTTP {}", response.status()));
            }
            let sent = i as i64 + 1;
            wait_for(&pool, "probe", &filter, options.timeout, |p| {
                p.event_runs >= sent && p.event_runs_ended == p.event_runs && p.ended == p.total
            })
            .await?;
            // Let the worker go idle again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(phase_report(&pool, &filter, probe_started).await?)
    } else {
        None
    };

    let stats = api
        .send(api.client.get(format!("{}/api/queue/stats", api.url)), 200)
        .await
        .unwrap_or_else(|e| json!({ "error": e }));

    // --- report ------------------------------------------------------------------------------
    println!();
    println!(
        "subscriptions: {n} created in {subscribe_secs:.2}s ({:.1}/s), {} Notion requests",
        n as f64 / subscribe_secs,
        notion_after_initial
    );
    print_phase("initial phase (subscription syncs)", &initial);
    println!();
    println!(
        "events: {accepted} of {n} accepted in {send_secs:.2}s ({:.1}/s), {notion_events} Notion requests, \
         {} rejected by the fake in all",
        accepted as f64 / send_secs,
        fake.rejected.load(Ordering::Relaxed)
    );
    print_phase("event phase (event runs + sync runs)", &events);
    println!("  event received -> sync finished  {e2e}");
    println!("  sync runs {sync_runs}, with persist succeeded {persisted}");
    println!(
        "  database: {} (pg_stat_database)",
        db_work.per(events.runs / 2, "sync (event run + sync run)")
    );
    if let Some(probe) = &probe {
        println!();
        println!(
            "probe: {} events sent one at a time, each after the runs of the previous one ended:",
            options.probe
        );
        for (key, d) in &probe.pickup {
            let key = if key.is_empty() { "all" } else { key.as_str() };
            println!("  step pickup {key:<14} {d}");
        }
        for (key, d) in probe.first_pickup.iter().filter(|(k, _)| !k.is_empty()) {
            println!("  first step    {key:<14} {d}  (from the run's creation)");
        }
        for (key, d) in probe.durations.iter().filter(|(k, _)| !k.is_empty()) {
            println!("  step duration {key:<14} {d}");
        }
        for (workflow, state, error, n) in probe.states.iter().filter(|s| s.1 != "succeeded") {
            println!("  runs {workflow} {state} ({error}): {n}");
        }
    }
    let mut line = String::new();
    for (status, count) in &jobs {
        let _ = write!(line, " {status}={count}");
    }
    println!("apalis.jobs rows of {STEP_QUEUE}:{line}");
    println!("queue stats: {stats}");

    let elapsed = events.elapsed;
    let pickup = events.pickup.get("").copied().unwrap_or_default();
    let nan = Dist { p50: f64::NAN, p99: f64::NAN, ..Dist::default() };
    let idle = probe.as_ref().and_then(|p| p.pickup.get("").copied()).unwrap_or(nan);
    // Steps reached through the queue (a run's first step, from the run's creation): with
    // the engine going on with a run's next step itself, these are the job pickups.
    let queued = events.first_pickup.get("").copied().unwrap_or(nan);
    let idle_queued = probe.as_ref().and_then(|p| p.first_pickup.get("").copied()).unwrap_or(nan);
    let failed = ended.failed;
    let unfinished = ended.total - ended.ended;
    println!(
        "RESULT pages={n} users={} syncs_per_sec={:.1} runs_per_sec={:.1} step_attempts_per_sec={:.1} \
         event_elapsed_s={elapsed:.3} pickup_p50_ms={:.2} pickup_p99_ms={:.2} pickup_max_ms={:.2} pickup_n={} \
         e2e_p50_ms={:.1} e2e_p99_ms={:.1} failed_runs={failed} unfinished_runs={unfinished} \
         event_runs={} sync_runs={sync_runs} accepted={accepted} ingest_per_sec={:.1} \
         initial_syncs_per_sec={:.1} initial_pickup_p50_ms={:.2} initial_pickup_p99_ms={:.2} \
         initial_failed_runs={} idle_pickup_p50_ms={:.2} idle_pickup_p99_ms={:.2} \
         queued_pickup_p50_ms={:.2} queued_pickup_p99_ms={:.2} \
         idle_queued_pickup_p50_ms={:.2} idle_queued_pickup_p99_ms={:.2} \
         commits_per_sync={:.1} step_jobs_before_events={jobs_before_events} event_step_attempts={}",
        options.users,
        sync_runs as f64 / elapsed,
        events.runs as f64 / elapsed,
        events.attempts as f64 / elapsed,
        pickup.p50,
        pickup.p99,
        pickup.max,
        pickup.n,
        e2e.p50,
        e2e.p99,
        ended.event_runs,
        accepted as f64 / send_secs,
        initial.runs as f64 / initial.elapsed,
        initial.pickup.get("").map_or(f64::NAN, |d| d.p50),
        initial.pickup.get("").map_or(f64::NAN, |d| d.p99),
        initial.states.iter().filter(|s| s.1 != "succeeded").map(|s| s.3).sum::<i64>(),
        idle.p50,
        idle.p99,
        queued.p50,
        queued.p99,
        idle_queued.p50,
        idle_queued.p99,
        db_work.commits as f64 / (events.runs / 2).max(1) as f64,
        events.attempts,
    );
    Ok(())
}

// ----- apalis reference -----------------------------------------------------------------

struct ApalisOptions {
    database_url: String,
    jobs: usize,
    concurrency: usize,
    batch_size: usize,
    poll: Duration,
    max_connections: u32,
    timeout: Duration,
    measure_last: usize,
}

fn apalis_options(args: &Args) -> Result<ApalisOptions, String> {
    let concurrency = args.positive("concurrency")? as usize;
    let batch_size = match args.values.get("batch-size") {
        Some(_) => args.positive("batch-size")? as usize,
        None => concurrency.clamp(1, 100),
    };
    Ok(ApalisOptions {
        database_url: args.string("database-url")?,
        jobs: args.positive("jobs")? as usize,
        concurrency,
        batch_size,
        poll: Duration::from_millis(args.positive("poll-ms")?),
        max_connections: args.positive("max-connections")?.min(1000) as u32,
        timeout: args.seconds("timeout")?,
        measure_last: args.count("measure-last")? as usize,
    })
}

/// Shaped like the service's step job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoopJob {
    run_id: uuid::Uuid,
    seq: i64,
}

async fn noop(_job: NoopJob) -> Result<(), BoxDynError> {
    Ok(())
}

async fn apalis_reference(options: ApalisOptions) -> Result<(), String> {
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .connect(&options.database_url)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    // Idempotent: a database the service migrated already has apalis's schema.
    PostgresStorage::setup(&pool).await.map_err(|e| format!("apalis migrations: {e}"))?;
    let queue = format!("bench.noop.{}", ulid::Ulid::new());
    let rows_before: i64 = sqlx::query_scalar("select count(*) from apalis.jobs")
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("counting jobs: {e}"))?;

    let push_clock = Instant::now();
    let mut tx = pool.begin().await.map_err(|e| format!("begin: {e}"))?;
    for chunk in (0..options.jobs).collect::<Vec<_>>().chunks(1000) {
        let tasks = chunk
            .iter()
            .map(|i| {
                let job = NoopJob { run_id: uuid::Uuid::now_v7(), seq: *i as i64 };
                let bytes = serde_json::to_vec(&job).expect("a job always serialises");
                TaskBuilder::new(bytes).max_attempts(1).build()
            })
            .collect();
        apalis_postgres::queries::push_tasks(&mut *tx, &queue, tasks)
            .await
            .map_err(|e| format!("pushing jobs: {e}"))?;
    }
    tx.commit().await.map_err(|e| format!("commit: {e}"))?;
    let push_secs = push_clock.elapsed().as_secs_f64();
    sqlx::query("analyze apalis.jobs").execute(&pool).await.map_err(|e| format!("analyze: {e}"))?;
    checkpoint(&pool).await;
    eprintln!(
        "workflow: apalis reference: pushed {} jobs into {queue} in {push_secs:.2}s; apalis.jobs had {rows_before} rows before",
        options.jobs
    );

    let config = QueueConfig::default()
        .queue(&queue)
        .batch_size(options.batch_size)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(3);
    let name = format!("bench-noop-{}-{}", std::process::id(), ulid::Ulid::new());
    let (concurrency, poll) = (options.concurrency, options.poll);
    let worker_pool = pool.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Let the push's statistics arrive first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let counters_before = DbCounters::read(&pool).await?;
    println!("PHASE apalis start");
    settle_for_snapshot().await;
    let worker_clock = Instant::now();
    let worker_started = Utc::now();
    let monitor = tokio::spawn(
        Monitor::new()
            .register(move |_| {
                let backend = PostgresStorage::<NoopJob>::new(&worker_pool)
                    .with_config(config.clone())
                    .with_pubsub()
                    .poll_with_interval(poll);
                WorkerBuilder::new(name.clone()).backend(backend).concurrency(concurrency).build(noop)
            })
            .shutdown_timeout(Duration::from_secs(10))
            .run_with_signal(async move {
                let _ = stop_rx.await;
                Ok(())
            }),
    );

    let target = options.jobs as i64;
    let outcome = loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'Done'), \
                    count(*) filter (where status in ('Failed', 'Killed')) \
             from apalis.jobs where job_type = $1",
        )
        .bind(&queue)
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("counting jobs: {e}"))?;
        if done + failed >= target {
            break Ok(());
        }
        if worker_clock.elapsed() > options.timeout {
            break Err(format!(
                "only {done} of {target} jobs done after {:.0}s",
                options.timeout.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("PHASE apalis end");
    settle_for_snapshot().await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(15), monitor).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("workflow: the apalis monitor ended with an error: {e}"),
        Ok(Err(e)) => eprintln!("workflow: the apalis monitor task failed: {e}"),
        Err(_) => eprintln!("workflow: the apalis monitor did not stop within 15s"),
    }
    outcome?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let db_work = DbCounters::read(&pool).await?.since(counters_before);

    let (done, not_done, first, last): (i64, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "select count(*) filter (where status = 'Done'), count(*) filter (where status <> 'Done'), \
                    min(done_at), max(done_at) from apalis.jobs where job_type = $1",
        )
        .bind(&queue)
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("measuring: {e}"))?;
    let secs = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| match (from, to) {
        (Some(f), Some(t)) => (t - f).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => f64::NAN,
    };
    let all_span = secs(first, last);
    let all_per_sec = (done - 1).max(0) as f64 / all_span;
    let wall = secs(Some(worker_started), last);
    // The measured window: the last `measure_last` completions, timed from the completion just
    // before them (or all of them, from the first).
    let measured = if options.measure_last == 0 { done } else { (options.measure_last as i64).min(done) };
    let (span, per_sec) = if measured >= done {
        (all_span, all_per_sec)
    } else {
        let from: Option<DateTime<Utc>> = sqlx::query_scalar(
            "select done_at from apalis.jobs where job_type = $1 and status = 'Done' \
             order by done_at offset $2 limit 1",
        )
        .bind(&queue)
        .bind(done - measured - 1)
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("measuring: {e}"))?;
        let span = secs(from, last);
        (span, measured as f64 / span)
    };
    let rows_after = rows_before + options.jobs as i64;
    println!(
        "apalis no-op: {done} jobs done ({not_done} not done) in {all_span:.2}s from the first to the last \
         completion: {all_per_sec:.1} jobs/s ({:.1} jobs/s from the worker's start, {wall:.2}s)",
        done as f64 / wall
    );
    if measured < done {
        println!(
            "  the last {measured} completions (after {} done by this worker): {span:.2}s, {per_sec:.1} jobs/s",
            done - measured
        );
    }
    println!(
        "  one worker, concurrency {}, batch {}, poll {} ms + LISTEN/NOTIFY, heartbeat 5s, pool {}; \
         push {:.0} jobs/s; apalis.jobs {rows_before} rows before, {rows_after} after",
        options.concurrency,
        options.batch_size,
        options.poll.as_millis(),
        options.max_connections,
        options.jobs as f64 / push_secs
    );
    println!("  database: {} (pg_stat_database)", db_work.per(done, "job"));
    println!(
        "RESULT apalis_jobs_per_sec={per_sec:.1} jobs={done} measured_jobs={measured} not_done={not_done} \
         span_s={span:.3} all_jobs_per_sec={all_per_sec:.1} \
         wall_jobs_per_sec={:.1} push_jobs_per_sec={:.0} concurrency={} batch_size={} poll_ms={} \
         table_rows_before={rows_before} table_rows_after={rows_after} commits_per_job={:.2}",
        done as f64 / wall,
        options.jobs as f64 / push_secs,
        options.concurrency,
        options.batch_size,
        options.poll.as_millis(),
        db_work.commits as f64 / done.max(1) as f64,
    );
    Ok(())
}

// ----- main -----------------------------------------------------------------------------

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let (command, rest) = match argv.split_first() {
        Some((c, rest)) if !c.starts_with('-') => (c.as_str(), rest),
        _ => ("drive", &argv[..]),
    };
    let threads: usize;
    let job: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>> = match command {
        "drive" => {
            let spec: &[OptSpec] = &[
                ("url", &[], &["WORKFLOW_URL"], Some(DEFAULT_URL)),
                ("api-token", &[], &["API_TOKEN"], None),
                ("secret", &[], &["NOTION_WEBHOOK_SECRET"], None),
                ("database-url", &[], &["DATABASE_URL"], None),
                ("pages", &["-n"], &["PAGES"], Some("1000")),
                ("users", &[], &["USERS"], Some("1")),
                ("concurrency", &["-c"], &["SEND_CONCURRENCY"], Some("32")),
                ("timeout", &[], &["PHASE_TIMEOUT"], Some("600")),
                ("probe", &[], &["PROBE_EVENTS"], Some("20")),
                ("threads", &["-t"], &[], Some("2")),
            ];
            let parsed = Args::parse(rest, spec).and_then(|a| {
                let t = a.positive("threads")? as usize;
                Ok((drive_options(&a)?, t))
            });
            match parsed {
                Ok((options, t)) => {
                    threads = t;
                    Box::pin(drive(options))
                }
                Err(e) => {
                    eprintln!("workflow: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        "apalis" => {
            let spec: &[OptSpec] = &[
                ("database-url", &[], &["DATABASE_URL"], None),
                ("jobs", &[], &["APALIS_JOBS"], Some("20000")),
                ("concurrency", &[], &["WORKER_CONCURRENCY"], Some("16")),
                ("batch-size", &[], &[], None),
                ("poll-ms", &[], &["WORKER_POLL_INTERVAL_MS"], Some("250")),
                ("max-connections", &[], &["DATABASE_MAX_CONNECTIONS"], Some("20")),
                ("timeout", &[], &[], Some("600")),
                ("measure-last", &[], &[], Some("0")),
            ];
            match Args::parse(rest, spec).and_then(|a| apalis_options(&a)) {
                Ok(options) => {
                    // Like the service: a multi-threaded runtime over the machine's cores.
                    threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                    Box::pin(apalis_reference(options))
                }
                Err(e) => {
                    eprintln!("workflow: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        other => {
            eprintln!("workflow: unknown command {other:?}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("workflow: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("workflow: {e}");
            ExitCode::FAILURE
        }
    }
}
