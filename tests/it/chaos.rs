//! The chaos run (`just chaos`, ignored in the normal suite): the release binary as ops run it
//! (`cognie-sync api` and two `cognie-sync worker`s on one PostgreSQL), under a stream of signed
//! webhooks for pages whose content keeps changing, against a fake Notion that fails and
//! stalls at random, while the processes are killed with SIGKILL at random moments and
//! restarted. At the end every event answered 200 must be accounted for, every run must be
//! terminal, and every page's cards must be exactly what its final content gives.
//!
//! Settings (environment; the defaults are the scenario):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CHAOS_BIN` | the debug binary cargo built | the `cognie-sync` to run (`just chaos` passes the release one) |
//! | `CHAOS_SEED` | from the clock (printed) | seeds content edits, kill moments and Notion's faults |
//! | `CHAOS_EVENTS` | 500 | webhook events (each after an edit of its page) |
//! | `CHAOS_PAGES` | 50 | subscribed pages |
//! | `CHAOS_USERS` | 5 | users (every tenth page has a second subscriber) |
//! | `CHAOS_KILLS` | 20 | SIGKILLs, spread over the event stream |
//! | `CHAOS_EVENT_RATE` | 6 | events per second |
//! | `CHAOS_SERVER_ERRORS`, `CHAOS_RATE_LIMITED` | 0.05, 0.02 | Notion's 500 and 429 probabilities |
//! | `CHAOS_SETTLE_SECONDS` | 300 | deadline for every run to end after the last event |
//! | `CHAOS_LOG_DIR` | `target/chaos/<seed>` | the processes' logs, one file per process life |
//! | `CHAOS_SERVICE_ENV` | none | extra service settings, `NAME=value,NAME=value` (e.g. a small `DATABASE_MAX_CONNECTIONS`) |
//!
//! Replaying a seed replays the edits, the kill schedule and the fault draws, not the exact
//! interleaving (the processes' timing is the machine's).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{
    app::{API_TOKEN, TempDir, base_settings},
    db::{TestDb, postgres_or_skip},
    fake_notion::{FakeNotion, RandomFaults, Rng},
    fixtures,
    process::ServiceProcess,
};

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(raw) if !raw.trim().is_empty() => {
            raw.trim().parse().unwrap_or_else(|_| panic!("{name}={raw:?} is not a valid value"))
        }
        _ => default,
    }
}

struct Settings {
    binary: PathBuf,
    seed: u64,
    events: usize,
    pages: usize,
    users: usize,
    kills: usize,
    event_rate: f64,
    server_errors: f64,
    rate_limited: f64,
    settle: Duration,
    log_dir: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
        let seed = env_or(
            "CHAOS_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        );
        let binary = std::env::var("CHAOS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_cognie-sync")));
        let binary = if binary.is_relative() {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(binary)
        } else {
            binary
        };
        let log_dir = std::env::var("CHAOS_LOG_DIR").map(PathBuf::from).unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chaos").join(seed.to_string())
        });
        let settings = Self {
            binary,
            seed,
            events: env_or("CHAOS_EVENTS", 500),
            pages: env_or("CHAOS_PAGES", 50),
            users: env_or("CHAOS_USERS", 5),
            kills: env_or("CHAOS_KILLS", 20),
            event_rate: env_or("CHAOS_EVENT_RATE", 6.0),
            server_errors: env_or("CHAOS_SERVER_ERRORS", 0.05),
            rate_limited: env_or("CHAOS_RATE_LIMITED", 0.02),
            settle: Duration::from_secs(env_or("CHAOS_SETTLE_SECONDS", 300)),
            log_dir,
        };
        assert!(settings.binary.exists(), "CHAOS_BIN {} does not exist", settings.binary.display());
        assert!(settings.pages >= 1 && settings.users >= 1 && settings.event_rate > 0.0);
        settings
    }
}

// ----- the pages and their content -----

const WORKSPACE: &str = "5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f";

fn page_id(page: usize) -> String {
    format!("c4a05000-0000-4000-8000-{page:012x}")
}

fn toggle_id(page: usize, block: u32) -> String {
    format!("c4a05000-{page:04x}-4000-9000-{block:012x}")
}

fn answer_id(page: usize, block: u32) -> String {
    format!("c4a05000-{page:04x}-4000-a000-{block:012x}")
}

#[derive(Clone)]
struct Toggle {
    block: u32,
    front: String,
    back: String,
}

/// One page as the test edits it: the truth the cards are checked against.
struct PageModel {
    index: usize,
    version: u32,
    next_block: u32,
    toggles: Vec<Toggle>,
    trashed: bool,
}

/// What an edit was, and so which event Notion sends for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Edit {
    Added,
    Removed,
    FrontChanged,
    BackChanged,
    Trashed,
    Restored,
}

impl Edit {
    fn event_type(self) -> &'static str {
        match self {
            Edit::Trashed => "page.deleted",
            Edit::Restored => "page.undeleted",
            _ => "page.content_updated",
        }
    }
}

impl PageModel {
    fn new(index: usize, rng: &mut Rng) -> Self {
        let mut page = Self { index, version: 0, next_block: 0, toggles: Vec::new(), trashed: false };
        for _ in 0..1 + rng.below(3) {
            page.add_toggle();
        }
        page
    }

    fn add_toggle(&mut self) {
        let block = self.next_block;
        self.next_block += 1;
        self.toggles.push(Toggle {
            block,
            front: format!("Question {}.{block} (v{})", self.index, self.version),
            back: format!("Answer {}.{block} (v{})", self.index, self.version),
        });
    }

    /// One random edit, as a user would make in Notion.
    fn edit(&mut self, rng: &mut Rng) -> Edit {
        self.version += 1;
        if self.trashed {
            self.trashed = false;
            return Edit::Restored;
        }
        if rng.chance(0.04) {
            self.trashed = true;
            return Edit::Trashed;
        }
        let roll = rng.below(100);
        let version = self.version;
        if self.toggles.is_empty() || (roll < 30 && self.toggles.len() < 6) {
            self.add_toggle();
            Edit::Added
        } else if roll < 45 && self.toggles.len() > 1 {
            let at = rng.below(self.toggles.len() as u64) as usize;
            self.toggles.remove(at);
            Edit::Removed
        } else {
            let at = rng.below(self.toggles.len() as u64) as usize;
            let toggle = &mut self.toggles[at];
            if roll.is_multiple_of(2) {
                toggle.front = format!("Question {}.{} (v{version})", self.index, toggle.block);
                Edit::FrontChanged
            } else {
                toggle.back = format!("Answer {}.{} (v{version})", self.index, toggle.block);
                Edit::BackChanged
            }
        }
    }

    /// Serves the page as it is now, in one step.
    fn publish(&self, notion: &FakeNotion) {
        let id = page_id(self.index);
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:00.000Z").to_string();
        let page = json!({
            "object": "page",
            "id": id,
            "created_time": "2026-05-01T08:00:00.000Z",
            "last_edited_time": now,
            "parent": {"type": "workspace", "workspace": true},
            "archived": self.trashed,
            "in_trash": self.trashed,
            "properties": {"title": {"id": "title", "type": "title", "title": [text(&format!("Chaos page {}", self.index))]}},
            "url": format!("https://www.notion.so/{}", id.replace('-', "")),
        });
        let mut blocks = vec![block(
            &format!("c4a05000-{:04x}-4000-b000-000000000000", self.index),
            &json!({"type": "page_id", "page_id": id}),
            "paragraph",
            &format!("Notes, version {}", self.version),
            false,
        )];
        let mut nested = Vec::new();
        for toggle in &self.toggles {
            let toggle_id = toggle_id(self.index, toggle.block);
            blocks.push(block(
                &toggle_id,
                &json!({"type": "page_id", "page_id": id}),
                "toggle",
                &toggle.front,
                true,
            ));
            let answer = block(
                &answer_id(self.index, toggle.block),
                &json!({"type": "block_id", "block_id": toggle_id}),
                "paragraph",
                &toggle.back,
                false,
            );
            nested.push((toggle_id, vec![answer]));
        }
        notion.replace_page_content(page, blocks, nested);
    }

    /// The cards the final content must give: (source block, front, back).
    fn expected_cards(&self) -> BTreeSet<Card> {
        if self.trashed {
            return BTreeSet::new();
        }
        self.toggles
            .iter()
            .map(|t| (toggle_id(self.index, t.block), t.front.clone(), t.back.clone()))
            .collect()
    }
}

fn text(content: &str) -> Value {
    json!({
        "type": "text",
        "text": {"content": content, "link": null},
        "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false,
                        "code": false, "color": "default"},
        "plain_text": content,
        "href": null
    })
}

fn block(id: &str, parent: &Value, ty: &str, content: &str, has_children: bool) -> Value {
    let mut block = json!({
        "object": "block",
        "id": id,
        "parent": parent,
        "created_time": "2026-05-01T08:00:00.000Z",
        "last_edited_time": "2026-05-01T08:00:00.000Z",
        "has_children": has_children,
        "archived": false,
        "in_trash": false,
        "type": ty,
    });
    block[ty] = json!({"rich_text": [text(content)], "color": "default"});
    block
}

/// A card as checked: (source block, front, back).
type Card = (String, String, String);
/// A run as reported: (id, workflow, state, error kind, last error).
type RunSummary = (Uuid, String, String, Option<String>, Option<String>);

// ----- the processes -----

const ROLES: [&str; 3] = ["api", "worker", "worker"];
const SLOT_NAMES: [&str; 3] = ["api", "worker-a", "worker-b"];

/// The three processes, each restartable; every life's log is saved to its own file.
struct Fleet {
    binary: PathBuf,
    settings: HashMap<&'static str, String>,
    processes: [Option<ServiceProcess>; 3],
    lives: [u32; 3],
    log_dir: PathBuf,
}

impl Fleet {
    fn start(&mut self, slot: usize) {
        assert!(self.processes[slot].is_none(), "{} is already running", SLOT_NAMES[slot]);
        self.lives[slot] += 1;
        self.processes[slot] =
            Some(ServiceProcess::start_binary(&self.binary, ROLES[slot], &self.settings, None));
    }

    fn kill(&mut self, slot: usize) {
        if let Some(process) = self.processes[slot].take() {
            self.save_log(slot, &process);
            process.kill9();
        }
    }

    fn save_log(&self, slot: usize, process: &ServiceProcess) {
        let lines = process.log.lock().map(|l| l.join("\n")).unwrap_or_default();
        let path = self.log_dir.join(format!("{}-{}.log", SLOT_NAMES[slot], self.lives[slot]));
        let _ = std::fs::write(path, lines);
    }

    fn save_all_logs(&self) {
        for (slot, process) in self.processes.iter().enumerate() {
            if let Some(process) = process {
                self.save_log(slot, process);
            }
        }
    }
}

/// A blocking fleet operation, off the async runtime (starting waits for the process).
async fn with_fleet<T: Send + 'static>(
    fleet: &Arc<Mutex<Fleet>>,
    op: impl FnOnce(&mut Fleet) -> T + Send + 'static,
) -> T {
    let fleet = fleet.clone();
    tokio::task::spawn_blocking(move || op(&mut fleet.lock().expect("fleet lock")))
        .await
        .expect("fleet operation")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillTarget {
    /// The API, while webhooks are in flight.
    ApiMidRequest,
    WorkerA,
    WorkerB,
    /// Both workers, while a Notion request is in flight.
    WorkersMidNotionRequest,
    /// Everything at once.
    All,
}

impl KillTarget {
    fn slots(self) -> &'static [usize] {
        match self {
            KillTarget::ApiMidRequest => &[0],
            KillTarget::WorkerA => &[1],
            KillTarget::WorkerB => &[2],
            KillTarget::WorkersMidNotionRequest => &[1, 2],
            KillTarget::All => &[0, 1, 2],
        }
    }
}

#[derive(Debug)]
struct Kill {
    at: Duration,
    target: KillTarget,
    webhooks_in_flight: usize,
    notion_in_flight: usize,
    down_for: Duration,
}

// ----- the webhooks -----

#[derive(Debug, Clone)]
struct Delivered {
    page: usize,
    edit: Edit,
    /// The stored event's id, from the 200.
    event_id: Uuid,
    /// The first 200's status (`duplicate` when an earlier delivery was stored but its answer
    /// was lost, or when the deliberate duplicate won).
    first_status: String,
    deliveries: u32,
    duplicate_sent: bool,
}

#[derive(Default)]
struct DeliveryStats {
    requests: usize,
    ok: usize,
    by_status: BTreeMap<u16, usize>,
    transport_errors: usize,
}

struct Sender {
    client: reqwest::Client,
    url: String,
    secret: String,
    in_flight: AtomicUsize,
    stats: Mutex<DeliveryStats>,
}

impl Sender {
    /// Delivers one event like Notion does: until a 200, with a growing `attempt_number`.
    async fn deliver(&self, notion_event_id: &str, event_type: &str, page: usize) -> (Uuid, String, u32) {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let body = json!({
                "id": notion_event_id,
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "workspace_id": WORKSPACE,
                "workspace_name": "Chaos",
                "subscription_id": "2b9f4e61-7c3a-4d85-b0e2-9f1a6c3d5e70",
                "integration_id": "1e7d2a9b-3c4f-8012-9a5b-00c7e3f1d2a8",
                "type": event_type,
                "authors": [{"id": "a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d", "type": "person"}],
                "attempt_number": attempt,
                "entity": {"id": page_id(page), "type": "page"},
                "data": {"updated_blocks": []},
            })
            .to_string();
            let signature = cognie_sync::webhook::signature::sign(self.secret.as_bytes(), body.as_bytes());
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let result = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("X-Notion-Signature", signature)
                .body(body)
                .send()
                .await;
            let answer = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.text().await.ok())
                }
                Err(_) => (0, None),
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            {
                let mut stats = self.stats.lock().expect("stats");
                stats.requests += 1;
                match answer {
                    (0, _) => stats.transport_errors += 1,
                    (200, Some(_)) => stats.ok += 1,
                    (status, _) => *stats.by_status.entry(status).or_default() += 1,
                }
            }
            if let (200, Some(text)) = &answer {
                let ack: Value = serde_json::from_str(text).expect("a 200 has a JSON body");
                let event_id = ack["event_id"].as_str().expect("event_id").parse().expect("a uuid");
                let status = ack["status"].as_str().expect("status").to_owned();
                return (event_id, status, attempt);
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "event {notion_event_id} was not accepted after 300 s of redeliveries (last answer {answer:?})"
            );
            // Notion backs off between deliveries; a little here keeps the run short.
            tokio::time::sleep(Duration::from_millis(100 + (attempt.min(10) as u64) * 50)).await;
        }
    }
}

// ----- the run -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the chaos run: `just chaos` (minutes, the release binary)"]
async fn chaos() {
    let settings = Settings::from_env();
    let started = Instant::now();
    std::fs::create_dir_all(&settings.log_dir).expect("create the log directory");
    eprintln!(
        "chaos: seed {} | {} events over {} pages ({} users) at {}/s | {} kills | binary {} | logs {}",
        settings.seed,
        settings.events,
        settings.pages,
        settings.users,
        settings.event_rate,
        settings.kills,
        settings.binary.display(),
        settings.log_dir.display()
    );
    let mut rng = Rng::new(settings.seed);

    // Notion: the pages, a token per user, faults at random.
    let notion = FakeNotion::start().await;
    let mut pages: Vec<PageModel> = (0..settings.pages).map(|i| PageModel::new(i, &mut rng)).collect();
    for page in &pages {
        page.publish(&notion);
    }
    let tokens: Vec<String> = (0..settings.users).map(|u| format!("ntn_chaos_token_{u}")).collect();
    for token in &tokens {
        notion.allow_token(token);
    }
    notion.set_random_faults(Some(RandomFaults {
        seed: settings.seed ^ 0x5eed,
        server_error: settings.server_errors,
        rate_limited: settings.rate_limited,
        retry_after_secs: 1,
        delay: 0.3,
        max_delay: Duration::from_millis(1500),
    }));

    // The database (PostgreSQL: the chaos run is about processes sharing it) and the
    // processes' settings.
    assert!(postgres_or_skip(), "the chaos run needs PostgreSQL: set TEST_DATABASE_URL");
    let db = TestDb::create_postgres().await;
    let data_dir = TempDir::new();
    let api_port = free_port();
    let mut env = base_settings(&db.url, data_dir.path());
    for (name, value) in [
        ("BIND_ADDR", format!("127.0.0.1:{api_port}")),
        ("NOTION_API_BASE_URL", notion.base_url()),
        ("NOTION_RATE_LIMIT_PER_MINUTE", "100000".into()),
        ("NOTION_MAX_RETRIES", "8".into()),
        ("STEP_LEASE_SECONDS", "2".into()),
        ("DEBOUNCE_SECONDS", "0.3".into()),
        ("DEBOUNCE_MAX_WAIT_SECONDS", "2".into()),
        ("RETRY_BASE_DELAY_MS", "100".into()),
        ("RETRY_MAX_DELAY_MS", "2000".into()),
        ("WORKER_POLL_INTERVAL_MS", "100".into()),
        ("DATABASE_MAX_CONNECTIONS", "10".into()),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "2000".into()),
        // Reconciliation would repair lost syncs and hide them: keep it out of the run.
        ("RECONCILE_INTERVAL_SECONDS", "86400".into()),
    ] {
        env.insert(name, value);
    }
    for pair in std::env::var("CHAOS_SERVICE_ENV").unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').expect("CHAOS_SERVICE_ENV: NAME=value,NAME=value");
        env.insert(Box::leak(name.trim().to_owned().into_boxed_str()), value.trim().to_owned());
    }
    let migrate = std::process::Command::new(&settings.binary)
        .arg("migrate")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .status()
        .expect("run migrate");
    assert!(migrate.success(), "cognie-sync migrate failed");
    let pool = PgPool::connect(&db.url).await.expect("connect");

    let fleet = Arc::new(Mutex::new(Fleet {
        binary: settings.binary.clone(),
        settings: env.clone(),
        processes: [None, None, None],
        lives: [0; 3],
        log_dir: settings.log_dir.clone(),
    }));
    with_fleet(&fleet, |f| (0..3).for_each(|slot| f.start(slot))).await;
    let api_url = format!("http://127.0.0.1:{api_port}");

    // Users, tokens and subscriptions, through the API; each subscription's first sync starts.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut users = Vec::new();
    for (u, token) in tokens.iter().enumerate() {
        let user: Value = http
            .post(format!("{api_url}/api/users"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"email": format!("chaos{u}@example.com")}))
            .send()
            .await
            .expect("create user")
            .json()
            .await
            .expect("user");
        let user = user["id"].as_str().expect("user id").to_owned();
        let put = http
            .put(format!("{api_url}/api/users/{user}/notion-token"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"token": token}))
            .send()
            .await
            .expect("PUT token");
        assert_eq!(put.status(), 204);
        users.push(user);
    }
    // (user index, page index)
    let mut subscriptions = Vec::new();
    for page in 0..settings.pages {
        subscriptions.push((page % settings.users, page));
        if page % 10 == 9 && settings.users > 1 {
            subscriptions.push(((page + 1) % settings.users, page));
        }
    }
    for (user, page) in &subscriptions {
        let response = http
            .post(format!("{api_url}/api/users/{}/subscriptions", users[*user]))
            .bearer_auth(API_TOKEN)
            .json(&json!({"notion_id": page_id(*page), "kind": "page"}))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(response.status(), 201, "subscribe: {:?}", response.text().await);
    }

    // The kill schedule: moments spread over the event stream, and what each one kills.
    let stream_length = Duration::from_secs_f64(settings.events as f64 / settings.event_rate);
    let mut kill_plan: Vec<(Duration, KillTarget, Duration)> = (0..settings.kills)
        .map(|_| {
            let at = stream_length.mul_f64(0.03 + 0.94 * rng.next_f64());
            let target = match rng.below(5) {
                0 => KillTarget::ApiMidRequest,
                1 => KillTarget::WorkerA,
                2 => KillTarget::WorkerB,
                3 => KillTarget::WorkersMidNotionRequest,
                _ => KillTarget::All,
            };
            let down_for = Duration::from_millis(rng.below(1500));
            (at, target, down_for)
        })
        .collect();
    kill_plan.sort_by_key(|(at, ..)| *at);

    let sender = Arc::new(Sender {
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        url: format!("{api_url}/api/notion/webhook/notion"),
        secret: fixtures::secret(),
        in_flight: AtomicUsize::new(0),
        stats: Mutex::new(DeliveryStats::default()),
    });

    let stream_started = Instant::now();
    let killer = {
        let fleet = fleet.clone();
        let sender = sender.clone();
        let notion = notion.clone();
        tokio::spawn(async move {
            let mut kills = Vec::new();
            for (at, target, down_for) in kill_plan {
                tokio::time::sleep_until((stream_started + at).into()).await;
                // Aim for the middle of a request: a webhook being stored, or a step waiting
                // on Notion (a few seconds at most; then kill anyway).
                let aim = Instant::now();
                while aim.elapsed() < Duration::from_secs(3) {
                    let ready = match target {
                        KillTarget::ApiMidRequest => sender.in_flight.load(Ordering::SeqCst) > 0,
                        KillTarget::WorkersMidNotionRequest => notion.in_flight() > 0,
                        _ => true,
                    };
                    if ready {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let webhooks_in_flight = sender.in_flight.load(Ordering::SeqCst);
                let notion_in_flight = notion.in_flight();
                let kill_at = stream_started.elapsed();
                with_fleet(&fleet, move |f| target.slots().iter().for_each(|slot| f.kill(*slot))).await;
                tokio::time::sleep(down_for).await;
                with_fleet(&fleet, move |f| target.slots().iter().for_each(|slot| f.start(*slot))).await;
                eprintln!(
                    "chaos: kill {:>2} at {:>6.1}s: {target:?} (webhooks in flight {webhooks_in_flight}, Notion requests in flight {notion_in_flight}), down {down_for:?}",
                    kills.len() + 1,
                    kill_at.as_secs_f64()
                );
                kills.push(Kill { at: kill_at, target, webhooks_in_flight, notion_in_flight, down_for });
            }
            kills
        })
    };

    // The event stream: edit a page, then deliver its event until a 200.
    let mut deliveries = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / settings.event_rate);
    for n in 0..settings.events {
        tokio::time::sleep_until((stream_started + interval * n as u32).into()).await;
        let page = rng.below(settings.pages as u64) as usize;
        let edit = pages[page].edit(&mut rng);
        pages[page].publish(&notion);
        let notion_event_id = format!("c4a05eed-0000-4000-8000-{n:012x}");
        // Now and then Notion delivers an event twice at once.
        let duplicate = rng.chance(0.05);
        let sender = sender.clone();
        deliveries.push(tokio::spawn(async move {
            let event_type = edit.event_type();
            let (event_id, first_status, count) = if duplicate {
                let (a, b) = tokio::join!(
                    sender.deliver(&notion_event_id, event_type, page),
                    sender.deliver(&notion_event_id, event_type, page)
                );
                assert_eq!(a.0, b.0, "two deliveries of {notion_event_id} were stored as different events");
                let status = if a.1 == "accepted" || b.1 == "accepted" { "accepted" } else { "duplicate" };
                (a.0, status.to_owned(), a.2 + b.2)
            } else {
                sender.deliver(&notion_event_id, event_type, page).await
            };
            (
                notion_event_id,
                Delivered {
                    page,
                    edit,
                    event_id,
                    first_status,
                    deliveries: count,
                    duplicate_sent: duplicate,
                },
            )
        }));
    }
    let mut delivered: BTreeMap<String, Delivered> = BTreeMap::new();
    for task in deliveries {
        let (id, d) = task.await.expect("delivery task");
        delivered.insert(id, d);
    }
    let stream_took = stream_started.elapsed();
    let kills = killer.await.expect("killer");
    eprintln!(
        "chaos: every event answered 200 after {:.1}s; waiting for the runs to end",
        stream_started.elapsed().as_secs_f64()
    );

    // Settle: every process up (the killer restarted them), then every run terminal.
    let settle_started = Instant::now();
    let mut last_report = Instant::now();
    let open_runs = loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from workflow_runs where state not in ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&pool)
        .await
        .expect("open runs");
        if open == 0 || settle_started.elapsed() > settings.settle {
            break open;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!("chaos: {open} runs still open after {:.0}s", settle_started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settle_took = settle_started.elapsed();
    with_fleet(&fleet, |f| f.save_all_logs()).await;

    // ----- the checks -----
    let mut problems: Vec<String> = Vec::new();
    if open_runs > 0 {
        let stuck: Vec<(Uuid, String, String, Option<String>, i32)> = sqlx::query_as(
            "select id, workflow, state, current_step, attempt from workflow_runs
             where state not in ('succeeded', 'failed', 'cancelled') order by created_at limit 20",
        )
        .fetch_all(&pool)
        .await
        .expect("stuck runs");
        problems.push(format!(
            "{open_runs} runs not terminal {:.0}s after the last event (first ones: {stuck:?})",
            settings.settle.as_secs_f64()
        ));
    }

    // Every event answered 200 is stored once, under the id the 200 named.
    let stored: Vec<(Uuid, Option<String>, String)> =
        sqlx::query_as("select id, notion_event_id, outcome from webhook_events")
            .fetch_all(&pool)
            .await
            .expect("events");
    let mut stored_by_notion_id: HashMap<String, Vec<Uuid>> = HashMap::new();
    for (id, notion_id, _) in &stored {
        stored_by_notion_id.entry(notion_id.clone().unwrap_or_default()).or_default().push(*id);
    }
    for (notion_event_id, d) in &delivered {
        match stored_by_notion_id.get(notion_event_id).map(Vec::as_slice) {
            Some([id]) if *id == d.event_id => {}
            Some(ids) => problems
                .push(format!("event {notion_event_id}: stored as {ids:?}, the 200 named {}", d.event_id)),
            None => problems.push(format!("event {notion_event_id} answered 200 but is not stored (LOST)")),
        }
    }
    if stored.len() != delivered.len() {
        problems.push(format!("{} events stored for {} delivered", stored.len(), delivered.len()));
    }

    // Each started exactly one event run, which succeeded.
    let event_runs: Vec<(Uuid, String)> =
        sqlx::query_as("select event_id, state from workflow_runs where workflow = 'notion_event'")
            .fetch_all(&pool)
            .await
            .expect("event runs");
    let mut runs_per_event: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (event_id, state) in event_runs {
        runs_per_event.entry(event_id).or_default().push(state);
    }
    for (notion_event_id, d) in &delivered {
        match runs_per_event.get(&d.event_id).map(Vec::as_slice) {
            Some([state]) if state == "succeeded" => {}
            other => problems
                .push(format!("event {notion_event_id}: event runs {other:?}, expected one succeeded")),
        }
    }

    // Each event reached a sync of its page for every subscriber that fetched after it.
    let reached: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select e.event_id, r.user_id, r.notion_id from workflow_run_events e
         join workflow_runs r on r.id = e.run_id
         join workflow_steps s on s.run_id = r.id and s.name = 'fetch' and s.state = 'succeeded'
         where r.workflow = 'notion_sync' and r.state = 'succeeded'",
    )
    .fetch_all(&pool)
    .await
    .expect("event syncs");
    let reached: BTreeSet<(Uuid, Uuid, String)> = reached.into_iter().collect();
    let mut unsynced = 0;
    for (notion_event_id, d) in &delivered {
        for (user, page) in subscriptions.iter().filter(|(_, page)| *page == d.page) {
            let user_id: Uuid = users[*user].parse().expect("uuid");
            if !reached.contains(&(d.event_id, user_id, page_id(*page))) {
                unsynced += 1;
                if unsynced <= 10 {
                    problems.push(format!(
                        "event {notion_event_id} (page {page}): no succeeded sync of user {user} fetched after it"
                    ));
                }
            }
        }
    }
    if unsynced > 10 {
        problems
            .push(format!("... {unsynced} (event, subscriber) pairs without a sync after the event in all"));
    }

    // No run failed or was cancelled; no step succeeded twice; reconciliation stayed out.
    let bad_runs: Vec<RunSummary> = sqlx::query_as(
        "select id, workflow, state, error_kind, last_error from workflow_runs
         where state in ('failed', 'cancelled') order by created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("failed runs");
    for run in bad_runs.iter().take(10) {
        problems.push(format!("run {run:?} did not succeed"));
    }
    let doubled: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "select run_id, step, count(*) from workflow_step_attempts where outcome = 'succeeded'
         group by run_id, step having count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .expect("doubled steps");
    for d in doubled.iter().take(10) {
        problems.push(format!("a step succeeded more than once: {d:?}"));
    }

    // Every page's live cards are exactly its final content's.
    let cards: Vec<(Uuid, String, String, String, String)> = sqlx::query_as(
        "select user_id, source_page_id, source_block_id, front, back from flashcards where retired_at is null",
    )
    .fetch_all(&pool)
    .await
    .expect("cards");
    let mut live: BTreeMap<(Uuid, String), BTreeSet<Card>> = BTreeMap::new();
    for (user, page, block, front, back) in &cards {
        live.entry((*user, page.clone())).or_default().insert((block.clone(), front.clone(), back.clone()));
    }
    let mut pages_wrong = 0;
    let mut expected_cards = 0;
    for (user, page) in &subscriptions {
        let user_id: Uuid = users[*user].parse().expect("uuid");
        let expected = pages[*page].expected_cards();
        expected_cards += expected.len();
        let actual = live.remove(&(user_id, page_id(*page))).unwrap_or_default();
        if actual != expected {
            pages_wrong += 1;
            if pages_wrong <= 10 {
                problems.push(format!(
                    "page {page} of user {user} (v{}, trashed {}): cards {:?}, expected {:?}",
                    pages[*page].version, pages[*page].trashed, actual, expected
                ));
            }
        }
    }
    if pages_wrong > 10 {
        problems.push(format!("... {pages_wrong} pages with wrong cards in all"));
    }
    if !live.is_empty() {
        problems.push(format!("cards for pages nobody subscribed: {:?}", live.keys().collect::<Vec<_>>()));
    }

    // ----- the summary -----
    let runs_by_state: Vec<(String, String, i64)> =
        sqlx::query_as("select workflow, state, count(*) from workflow_runs group by 1, 2 order by 1, 2")
            .fetch_all(&pool)
            .await
            .expect("runs");
    let attempts: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "select step, outcome, count(*) from workflow_step_attempts group by 1, 2 order by 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("attempts");
    let takeovers: i64 =
        sqlx::query_scalar("select count(*) from workflow_step_attempts where outcome = 'abandoned'")
            .fetch_one(&pool)
            .await
            .expect("takeovers");
    // Every run has ended, so every attempt has too: finished, or closed by a takeover.
    let open_attempts: i64 =
        sqlx::query_scalar("select count(*) from workflow_step_attempts where outcome is null")
            .fetch_one(&pool)
            .await
            .expect("open attempts");
    if open_attempts > 0 {
        problems.push(format!("{open_attempts} step attempts left open although every run ended"));
    }
    let reconcile_runs: i64 =
        sqlx::query_scalar("select count(*) from workflow_runs where trigger = 'reconcile'")
            .fetch_one(&pool)
            .await
            .expect("reconcile runs");
    if reconcile_runs > 0 {
        problems.push(format!("{reconcile_runs} reconciliation runs: the check would not be fair"));
    }
    let stats = std::mem::take(&mut *sender.stats.lock().expect("stats"));
    let requests = notion.requests();
    let mut notion_by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for r in &requests {
        *notion_by_status.entry(r.status).or_default() += 1;
    }
    let faults = notion.random_fault_counts();
    let mut edits: BTreeMap<String, usize> = BTreeMap::new();
    for d in delivered.values() {
        *edits.entry(format!("{:?}", d.edit)).or_default() += 1;
    }
    let mut kill_targets: BTreeMap<String, usize> = BTreeMap::new();
    for k in &kills {
        *kill_targets.entry(format!("{:?}", k.target)).or_default() += 1;
    }
    let answered_duplicate_first =
        delivered.values().filter(|d| !d.duplicate_sent && d.first_status == "duplicate").count();

    println!();
    println!("=== chaos summary (seed {}) ===", settings.seed);
    println!("binary:        {}", settings.binary.display());
    println!(
        "time:          {:.1}s in all: event stream {:.1}s, settling {:.1}s",
        started.elapsed().as_secs_f64(),
        stream_took.as_secs_f64(),
        settle_took.as_secs_f64()
    );
    println!(
        "events:        {} answered 200 ({} pages, {} subscriptions); edits {edits:?}",
        delivered.len(),
        settings.pages,
        subscriptions.len()
    );
    println!(
        "deliveries:    {} HTTP requests: {} × 200, non-200 {:?}, transport errors {}; {} events sent twice at once; \
         {answered_duplicate_first} first answered `duplicate` (stored, but the answer was lost to a kill)",
        stats.requests,
        stats.ok,
        stats.by_status,
        stats.transport_errors,
        delivered.values().filter(|d| d.duplicate_sent).count(),
    );
    println!(
        "               most deliveries for one event: {}",
        delivered.values().map(|d| d.deliveries).max().unwrap_or(0)
    );
    println!("kills:         {} SIGKILLs {kill_targets:?}", kills.len());
    println!(
        "               {} with webhooks in flight, {} with Notion requests in flight; {} process starts",
        kills.iter().filter(|k| k.webhooks_in_flight > 0).count(),
        kills.iter().filter(|k| k.notion_in_flight > 0).count(),
        fleet.lock().map(|f| f.lives.iter().sum::<u32>()).unwrap_or(0)
    );
    if let Some(longest) = kills.iter().map(|k| k.down_for).max() {
        println!(
            "               longest down time {longest:?}, first kill at {:.1}s",
            kills[0].at.as_secs_f64()
        );
    }
    println!(
        "fake Notion:   {} requests by status {notion_by_status:?}; injected: {} × 500, {} × 429, {} delayed",
        requests.len(),
        faults.server_errors,
        faults.rate_limited,
        faults.delayed
    );
    println!("runs:          {runs_by_state:?}");
    println!("step attempts: {attempts:?}");
    println!("               {takeovers} attempts abandoned by a killed worker and taken over");
    println!(
        "cards:         {} live, {} expected; {} of {} subscribed pages exactly right",
        cards.len(),
        expected_cards,
        subscriptions.len() - pages_wrong,
        subscriptions.len()
    );
    println!("logs:          {}", settings.log_dir.display());
    if problems.is_empty() {
        println!("RESULT ok: no loss, no duplicates, every run terminal");
    } else {
        println!("RESULT {} problems:", problems.len());
        for p in &problems {
            println!("  - {p}");
        }
    }
    // Stop the processes before the database is dropped.
    with_fleet(&fleet, |f| (0..3).for_each(|slot| f.kill(slot))).await;
    assert!(problems.is_empty(), "the chaos run found {} problems (see above)", problems.len());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
