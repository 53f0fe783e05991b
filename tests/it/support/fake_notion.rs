//! A fake Notion API for tests: serves the fixtures and content tests build, injects faults.
//!
//! A real HTTP server on `127.0.0.1:0`, answering in Notion's wire formats (2025-09-03 by default,
//! 2022-06-28 for the legacy database query): auth and `Notion-Version` checks, cursor
//! pagination, Notion's error bodies (fixture wording), and the OAuth token exchange and refresh
//! (each refresh token works once: Notion may rotate them). Every request is logged with its
//! token and arrival time, so tests can assert rate limits exactly.
//!
//! What it assumes where Notion's behaviour is undocumented: a route not served for the
//! request's version (`/v1/data_sources/...` before 2025-09-03, `/v1/databases/{id}/query` from
//! 2025-09-03 on) answers 400 `invalid_request_url`; bad client credentials at the token endpoint
//! answer 401 `{"error":"invalid_client"}`; an unknown `start_cursor` answers 400 `validation_error`.

#![allow(dead_code, reason = "a shared harness: each test binary module uses a different part of it")]

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use poem::{
    Body, Endpoint, Request, Response, Server,
    http::{Method, StatusCode},
    listener::TcpAcceptor,
};
use serde_json::{Value, json};

use super::fixtures;

/// Ids from the fixtures (`tests/fixtures/notion/ids.json`).
pub mod ids {
    pub const PAGE: &str = "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1";
    pub const PHOTOSYNTHESIS: &str = "1f3c8a2e-4b7d-80b7-8d3a-e5f7a9c1b3d5";
    pub const CHILD_PAGE: &str = "1f3c8a2e-4b7d-81c2-a4e6-f8b0d2c4e6a8";
    pub const DATABASE: &str = "1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2";
    pub const DATA_SOURCE: &str = "1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b";
    pub const T_GLYCO: &str = "1f3c8a2e-4b7d-8105-86e7-f8a9b0c1d2e5";
    pub const T_KREBS: &str = "1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f6";
    pub const H3_ETC: &str = "1f3c8a2e-4b7d-8107-a809-b0c1d2e3f4a7";
    pub const T_EQ: &str = "1f3c8a2e-4b7d-810e-9f70-c7d8e9f0a11e";
    pub const INTEGRATION: &str = "1e7d2a9b-3c4f-8012-9a5b-00c7e3f1d2a8";
}

/// The first version with data sources; routes are served by version like Notion does.
const DATA_SOURCES_VERSION: &str = "2025-09-03";

/// Something to do instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `rate_limited` with `Retry-After: N` and the fixture body saying N.
    RateLimited { retry_after_secs: u64 },
    /// The same 429, answered only after `after` (callers that meet it meanwhile queue up).
    RateLimitedLate { after: Duration, retry_after_secs: u64 },
    /// This status with Notion's error body for it (500, 502, 503, 504, 529, 404, 403, 409, ...).
    Status(u16),
    /// Wait this long, then answer normally (for client timeouts).
    Delay(Duration),
    /// Send a 200 and part of a body, then break the connection.
    Reset,
    /// A 200 whose body is not JSON (a broken proxy, a truncated cache).
    Garbage,
    /// A complete 200 `application/json` answer whose JSON is cut short.
    MalformedJson,
    /// The connection is closed without any answer (no status line at all).
    Drop,
    /// The normal answer, with its headers at once but its body trickled out in small pieces
    /// over `total` (a slow or stalled proxy).
    SlowBody { total: Duration },
    /// 429 `rate_limited` with this `additional_data.rate_limit_reason`, and `Retry-After`
    /// (header and body) when given.
    RateLimitedBecause { reason: &'static str, retry_after_secs: Option<u64> },
    /// This status with Notion's error body, plus `Retry-After` (header and
    /// `additional_data.retry_after`), as Notion sends with 529 and sometimes 503.
    StatusRetryAfter { status: u16, retry_after_secs: u64 },
    /// 400 `validation_error` "The start_cursor provided is invalid: ...", as Notion answers a
    /// cursor it no longer takes (see [`FakeNotion::inject_on_cursor`]).
    CursorRejected,
    /// This status with an HTML body: something on the way answered, not Notion.
    NotNotions(u16),
}

/// Faults drawn at random for every request that no queued or "always" fault matches, from a
/// seeded generator, so a chaos run can be replayed.
#[derive(Debug, Clone)]
pub struct RandomFaults {
    pub seed: u64,
    /// Probability of a 500 `internal_server_error`.
    pub server_error: f64,
    /// Probability of a 429 with `Retry-After: retry_after_secs`.
    pub rate_limited: f64,
    pub retry_after_secs: u64,
    /// Probability that an answer (or fault) is delayed, uniformly up to `max_delay`.
    pub delay: f64,
    pub max_delay: Duration,
}

/// How many faults [`RandomFaults`] injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RandomFaultCounts {
    pub server_errors: usize,
    pub rate_limited: usize,
    pub delayed: usize,
}

/// SplitMix64: a small, seedable generator, good enough to pick faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The bearer token, if the request had one (not the OAuth Basic credentials).
    pub token: Option<String>,
    pub notion_version: Option<String>,
    /// The JSON body of a POST.
    pub body: Option<Value>,
    /// When the request arrived (before any injected delay).
    pub at: Instant,
    /// The status answered; 0 while the answer is still being prepared (e.g. during a delay).
    pub status: u16,
    /// The connection was broken on purpose after the status line.
    pub reset: bool,
    /// The connection was closed on purpose without an answer ([`Fault::Drop`]).
    pub dropped: bool,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

/// Handle to a running fake. Cheap to clone; all clones share one server and one state.
#[derive(Clone)]
pub struct FakeNotion {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tokens: HashSet<String>,
    /// Keyed by id without dashes, lowercase (Notion accepts both spellings).
    pages: HashMap<String, Value>,
    children: HashMap<String, Vec<Value>>,
    /// Where a block's child list must end a page (indexes into its children), to replay a
    /// recorded pagination exactly; Notion may end a page early.
    page_breaks: HashMap<String, Vec<usize>>,
    databases: HashMap<String, Value>,
    /// Data source id -> row page ids, in query order.
    rows: HashMap<String, Vec<String>>,
    /// Results per page at most, whatever `page_size` asks (Notion may return fewer).
    page_size_cap: Option<usize>,
    oauth_client: Option<OAuthClient>,
    oauth_codes: HashSet<String>,
    /// Refresh tokens the token endpoint accepts, each once (Notion rotates them).
    refresh_tokens: HashSet<String>,
    faults_once: VecDeque<(String, Fault)>,
    faults_always: Vec<(String, Fault)>,
    /// Like `faults_once`, for requests of a list's next page (with a `start_cursor`) only.
    faults_on_cursor: VecDeque<(String, Fault)>,
    random_faults: Option<(RandomFaults, Rng)>,
    random_counts: RandomFaultCounts,
    log: Vec<RecordedRequest>,
}

struct OAuthClient {
    id: String,
    secret: String,
    redirect_uri: String,
}

impl FakeNotion {
    /// Starts a fake on a random local port, on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Notion");
        let addr = listener.local_addr().expect("fake Notion address");
        let acceptor = TcpAcceptor::from_tokio(listener).expect("fake Notion acceptor");
        let fake = Self { addr, state: Arc::new(Mutex::new(State::default())) };
        let endpoint = FakeEndpoint { fake: fake.clone() };
        tokio::spawn(async move { Server::new_with_acceptor(acceptor).run(endpoint).await });
        fake
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash: the client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ----- content -----

    /// Accepts `Authorization: Bearer <token>` from now on.
    pub fn allow_token(&self, token: &str) {
        self.state().tokens.insert(token.to_owned());
    }

    /// Answers 401 to this token from now on (revoked access).
    pub fn revoke_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// Serves `page` (a page object with an `id`) at `GET /v1/pages/{id}`.
    pub fn add_page(&self, page: Value) {
        let key = key(page["id"].as_str().expect("a page needs an id"));
        self.state().pages.insert(key, strip_request_id(page));
    }

    /// The children of a page or block, in order; each child becomes a known block.
    pub fn set_children(&self, block_id: &str, children: Vec<Value>) {
        self.set_children_paged(block_id, vec![children]);
    }

    /// Children served in exactly these pages (unless `page_size` or the cap cuts them shorter),
    /// like the recorded fixtures, whose pages do not all have `page_size` results.
    pub fn set_children_paged(&self, block_id: &str, pages: Vec<Vec<Value>>) {
        let mut breaks = Vec::new();
        let mut children = Vec::new();
        for page in pages {
            children.extend(page);
            breaks.push(children.len());
        }
        let mut state = self.state();
        state.children.insert(key(block_id), children);
        state.page_breaks.insert(key(block_id), breaks);
    }

    /// Serves a database object at `GET /v1/databases/{id}`; its `data_sources` say which rows
    /// the legacy query returns.
    pub fn add_database(&self, database: Value) {
        let key = key(database["id"].as_str().expect("a database needs an id"));
        self.state().databases.insert(key, strip_request_id(database));
    }

    /// Appends row pages to a data source; each is also served as a page.
    pub fn add_data_source_rows(&self, data_source_id: &str, rows: Vec<Value>) {
        let mut state = self.state();
        for row in rows {
            let row = strip_request_id(row);
            let row_key = key(row["id"].as_str().expect("a row needs an id"));
            state.rows.entry(key(data_source_id)).or_default().push(row_key.clone());
            state.pages.insert(row_key, row);
        }
    }

    /// Moves a page to the trash: it is still served, with `in_trash` and `archived` set, and
    /// queries leave it out.
    pub fn trash_page(&self, page_id: &str) {
        let mut state = self.state();
        let page = state.pages.get_mut(&key(page_id)).expect("trash_page: unknown page");
        page["in_trash"] = json!(true);
        page["archived"] = json!(true);
    }

    /// Moves a page under `parent` (a Notion `parent` object): its object says so from now on,
    /// and it is no longer a row of any data source.
    pub fn move_page(&self, page_id: &str, parent: Value) {
        let mut state = self.state();
        let page_key = key(page_id);
        state.pages.get_mut(&page_key).expect("move_page: unknown page")["parent"] = parent;
        for rows in state.rows.values_mut() {
            rows.retain(|row| *row != page_key);
        }
    }

    /// Deletes (or unshares) a page: the page and its block list answer 404 from now on.
    pub fn remove_page(&self, page_id: &str) {
        let mut state = self.state();
        let page_key = key(page_id);
        state.pages.remove(&page_key);
        state.children.remove(&page_key);
        for rows in state.rows.values_mut() {
            rows.retain(|row| *row != page_key);
        }
    }

    /// Replaces a page's object, its top-level blocks and the children of its nested blocks in
    /// one step, so no request sees half an edit (a chaos run edits pages while they are read).
    /// Children of blocks no longer listed are left in place, like Notion keeps serving a
    /// deleted block's children to whoever asks by id.
    pub fn replace_page_content(&self, page: Value, blocks: Vec<Value>, nested: Vec<(String, Vec<Value>)>) {
        let page = strip_request_id(page);
        let page_key = key(page["id"].as_str().expect("a page needs an id"));
        let mut state = self.state();
        state.pages.insert(page_key.clone(), page);
        state.page_breaks.remove(&page_key);
        state.children.insert(page_key, blocks);
        for (block_id, children) in nested {
            state.page_breaks.remove(&key(&block_id));
            state.children.insert(key(&block_id), children);
        }
    }

    /// A copy of the page object as served now, if the page exists.
    pub fn page(&self, page_id: &str) -> Option<Value> {
        self.state().pages.get(&key(page_id)).cloned()
    }

    /// At most `cap` results per list page, like the real API may do.
    pub fn set_page_size_cap(&self, cap: usize) {
        self.state().page_size_cap = Some(cap.max(1));
    }

    /// The fixture page "Cellular Respiration": its page object, its 17 blocks and the children
    /// of its three toggles and toggleable heading. The blocks are served in the two recorded
    /// pages (8 + 9, `next_cursor` = the 9th block's id), as the real API served them.
    pub fn load_fixture_page(&self) {
        self.add_page(fixture("page_retrieve.json"));
        let pages = vec![
            results(fixture("blocks_children_page_1.json")),
            results(fixture("blocks_children_page_2.json")),
        ];
        self.set_children_paged(ids::PAGE, pages);
        for (block, file) in [
            (ids::T_GLYCO, "blocks_children_toggle_glycolysis.json"),
            (ids::T_KREBS, "blocks_children_toggle_krebs.json"),
            (ids::H3_ETC, "blocks_children_heading_etc.json"),
            (ids::T_EQ, "blocks_children_toggle_equation.json"),
        ] {
            self.set_children(block, results(fixture(file)));
        }
    }

    /// The fixture database with its one data source and two rows ("Cellular Respiration",
    /// "Photosynthesis", from `data_source_query.json`). Rows have no blocks until
    /// `load_fixture_page` (after this) or `set_children` gives them some.
    pub fn load_fixture_database(&self) {
        self.add_database(fixture_database());
        self.add_data_source_rows(ids::DATA_SOURCE, results(fixture("data_source_query.json")));
    }

    /// Enables `POST /v1/oauth/token` for this client; `redirect_uri` must match exactly.
    pub fn set_oauth_client(&self, client_id: &str, client_secret: &str, redirect_uri: &str) {
        self.state().oauth_client = Some(OAuthClient {
            id: client_id.to_owned(),
            secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
        });
    }

    /// Refuses every refresh token issued so far (`invalid_grant`), as after the user removed
    /// the integration.
    pub fn revoke_refresh_tokens(&self) {
        self.state().refresh_tokens.clear();
    }

    /// Accepts `refresh_token` once at the token endpoint, as if issued earlier.
    pub fn allow_refresh_token(&self, refresh_token: &str) {
        self.state().refresh_tokens.insert(refresh_token.to_owned());
    }

    /// The refresh tokens issued and not used yet.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.state().refresh_tokens.iter().cloned().collect()
    }

    /// Refresh grants answered with a new token pair.
    pub fn refreshes(&self) -> usize {
        self.state()
            .log
            .iter()
            .filter(|r| r.path == "/v1/oauth/token" && r.status == 200)
            .filter(|r| r.body.as_ref().is_some_and(|b| b["grant_type"] == "refresh_token"))
            .count()
    }

    /// A code the token endpoint accepts once.
    pub fn add_oauth_code(&self, code: &str) {
        self.state().oauth_codes.insert(code.to_owned());
    }

    // ----- faults -----

    /// The next request whose path starts with `path_prefix` (`"/"` for any) gets `fault`.
    /// Queued faults are consumed in order, before any "always" fault.
    pub fn inject(&self, path_prefix: &str, fault: Fault) {
        self.state().faults_once.push_back((path_prefix.to_owned(), fault));
    }

    /// The next `times` matching requests get `fault`.
    pub fn inject_times(&self, path_prefix: &str, fault: Fault, times: usize) {
        for _ in 0..times {
            self.inject(path_prefix, fault.clone());
        }
    }

    /// The next `times` matching requests that carry a `start_cursor` (a list's next page, in
    /// the query string or the body) get `fault`; first pages are answered as usual.
    pub fn inject_on_cursor(&self, path_prefix: &str, fault: Fault, times: usize) {
        let mut state = self.state();
        for _ in 0..times {
            state.faults_on_cursor.push_back((path_prefix.to_owned(), fault.clone()));
        }
    }

    /// Every matching request gets `fault` until [`Self::clear_faults`].
    pub fn inject_always(&self, path_prefix: &str, fault: Fault) {
        self.state().faults_always.push((path_prefix.to_owned(), fault));
    }

    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults_once.clear();
        state.faults_always.clear();
        state.faults_on_cursor.clear();
        state.random_faults = None;
    }

    /// From now on, requests no queued or "always" fault matches draw a fault at random
    /// (`None` turns this off). The generator restarts from `faults.seed`.
    pub fn set_random_faults(&self, faults: Option<RandomFaults>) {
        self.state().random_faults = faults.map(|f| {
            let rng = Rng::new(f.seed);
            (f, rng)
        });
    }

    /// What the random faults injected so far.
    pub fn random_fault_counts(&self) -> RandomFaultCounts {
        self.state().random_counts
    }

    /// Requests received whose answer is still being prepared (delayed) or sent.
    pub fn in_flight(&self) -> usize {
        self.state().log.iter().filter(|r| r.status == 0 && !r.dropped).count()
    }

    // ----- the log -----

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().log.clone()
    }

    pub fn requests_for_token(&self, token: &str) -> Vec<RecordedRequest> {
        self.state().log.iter().filter(|r| r.token.as_deref() == Some(token)).cloned().collect()
    }

    /// How many requests had a path starting with `path_prefix`.
    pub fn count(&self, path_prefix: &str) -> usize {
        self.state().log.iter().filter(|r| r.path.starts_with(path_prefix)).count()
    }

    /// The most requests with `token` that arrived within any `window` (e.g. 60 s): what a
    /// per-user rate limit bounds.
    pub fn max_requests_in_window(&self, token: &str, window: Duration) -> usize {
        let times: Vec<Instant> = self.requests_for_token(token).iter().map(|r| r.at).collect();
        (0..times.len())
            .map(|start| {
                times[start..].iter().take_while(|t| t.duration_since(times[start]) < window).count()
            })
            .max()
            .unwrap_or(0)
    }

    pub fn reset_log(&self) {
        self.state().log.clear();
    }

    // ----- serving -----

    async fn handle(&self, mut req: Request) -> Response {
        let raw_body = req.take_body().into_vec().await.unwrap_or_default();
        let incoming = Incoming {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            authorization: req.header("authorization").map(str::to_owned),
            version: req.header("notion-version").map(str::to_owned),
            body: (!raw_body.is_empty()).then(|| serde_json::from_slice::<Value>(&raw_body).ok()).flatten(),
            raw_body,
        };

        let (index, fault) = {
            let mut state = self.state();
            state.log.push(RecordedRequest {
                method: incoming.method.to_string(),
                path: incoming.path.clone(),
                query: incoming.query.clone(),
                token: incoming.bearer().map(str::to_owned),
                notion_version: incoming.version.clone(),
                body: incoming.body.clone(),
                at: Instant::now(),
                status: 0,
                reset: false,
                dropped: false,
                fault: None,
            });
            let has_cursor = query_param(incoming.query.as_deref(), "start_cursor").is_some()
                || incoming.body.as_ref().is_some_and(|b| b["start_cursor"].is_string());
            let fault = state.take_fault(&incoming.path, has_cursor);
            let index = state.log.len() - 1;
            state.log[index].fault = fault.clone();
            (index, fault)
        };

        if matches!(fault, Some(Fault::Drop)) {
            if let Some(entry) = self.state().log.get_mut(index) {
                entry.dropped = true;
            }
            // Unwinding out of the connection's task drops its socket before anything was
            // written: the client sees the connection closed with no answer. `resume_unwind`
            // skips the panic hook, so nothing is printed; poem's per-connection task ends.
            std::panic::resume_unwind(Box::new("fake Notion: injected connection drop"));
        }
        let response = match &fault {
            Some(Fault::Drop) => unreachable!("handled above"),
            Some(Fault::Reset) => broken_response(),
            Some(Fault::MalformedJson) => Response::builder()
                .status(StatusCode::OK)
                .content_type("application/json; charset=utf-8")
                .body(r#"{"object":"list","results":[{"object":"block","id":"#),
            Some(Fault::SlowBody { total }) => slow_body(self.answer(incoming), *total).await,
            Some(Fault::RateLimitedBecause { reason, retry_after_secs }) => {
                rate_limited_because(reason, *retry_after_secs)
            }
            Some(Fault::StatusRetryAfter { status, retry_after_secs }) => {
                let mut response = json_response(
                    *status,
                    with_request_id(json!({
                        "object": "error", "status": status, "code": default_code(*status),
                        "message": default_message(*status),
                        "additional_data": {"retry_after": retry_after_secs.to_string()},
                    })),
                );
                response.headers_mut().insert("retry-after", (*retry_after_secs).into());
                response
            }
            Some(Fault::CursorRejected) => {
                let cursor = query_param(incoming.query.as_deref(), "start_cursor")
                    .or_else(|| {
                        incoming.body.as_ref().and_then(|b| b["start_cursor"].as_str().map(str::to_owned))
                    })
                    .unwrap_or_default();
                notion_error(
                    400,
                    "validation_error",
                    &format!("The start_cursor provided is invalid: {cursor}"),
                )
            }
            Some(Fault::NotNotions(status)) => Response::builder()
                .status(StatusCode::from_u16(*status).expect("a status"))
                .content_type("text/html")
                .body("<html><body><h1>Not Found</h1></body></html>"),
            Some(Fault::Garbage) => {
                Response::builder().status(StatusCode::OK).content_type("text/html").body("<html>oops</html>")
            }
            Some(Fault::RateLimited { retry_after_secs }) => rate_limited(*retry_after_secs),
            Some(Fault::RateLimitedLate { after, retry_after_secs }) => {
                tokio::time::sleep(*after).await;
                rate_limited(*retry_after_secs)
            }
            Some(Fault::Status(status)) => {
                notion_error(*status, default_code(*status), default_message(*status))
            }
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(*delay).await;
                self.answer(incoming)
            }
            None => self.answer(incoming),
        };

        let mut state = self.state();
        // The log may have been reset while this request was in flight.
        if let Some(entry) = state.log.get_mut(index) {
            entry.status = response.status().as_u16();
            entry.reset = matches!(fault, Some(Fault::Reset));
        }
        response
    }

    fn answer(&self, incoming: Incoming) -> Response {
        let Incoming { method, path, query, authorization, version, raw_body, body } = incoming;
        let query = query.as_deref();
        let authorization = authorization.as_deref();
        let Some(version) = version else {
            return notion_error(
                400,
                "missing_version",
                "Notion-Version header failed validation: Notion-Version header should be defined, instead was `undefined`.",
            );
        };
        if method == Method::POST && !raw_body.is_empty() && body.is_none() {
            return notion_error(400, "invalid_json", "Error parsing JSON body.");
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments == ["v1", "oauth", "token"] && method == Method::POST {
            return self.oauth_token(authorization, body.unwrap_or(Value::Null));
        }

        let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
        if !bearer.is_some_and(|token| self.state().tokens.contains(token)) {
            return json_response(401, with_request_id(fixture("error_401_unauthorized.json")));
        }

        let modern = version.as_str() >= DATA_SOURCES_VERSION;
        let body = body.unwrap_or_else(|| json!({}));
        let state = self.state();
        match (method, segments.as_slice()) {
            (Method::GET, ["v1", "pages", id]) => match state.pages.get(&key(id)) {
                Some(page) => json_response(200, with_request_id(page.clone())),
                None => not_found("page", id),
            },
            (Method::GET, ["v1", "blocks", id, "children"]) => {
                let page_size = match query_page_size(query) {
                    Ok(size) => size,
                    Err(message) => return notion_error(400, "validation_error", &message),
                };
                let cursor = query_param(query, "start_cursor");
                let breaks = state.page_breaks.get(&key(id)).map_or(&[][..], Vec::as_slice);
                match state.block_children(id) {
                    Some(children) => state.paginate(children, breaks, cursor.as_deref(), page_size, "block"),
                    None => not_found("block", id),
                }
            }
            (Method::GET, ["v1", "databases", id]) => match state.databases.get(&key(id)) {
                Some(database) => json_response(200, with_request_id(database.clone())),
                None => not_found("database", id),
            },
            (Method::POST, ["v1", "data_sources", id, "query"]) if modern => {
                let (page_size, cursor) = match body_paging(&body) {
                    Ok(paging) => paging,
                    Err(message) => return notion_error(400, "validation_error", &message),
                };
                match state.rows.get(&key(id)) {
                    Some(rows) => {
                        let rows = state.live_rows(rows);
                        state.paginate(&rows, &[], cursor.as_deref(), page_size, "page_or_data_source")
                    }
                    None => not_found("data_source", id),
                }
            }
            (Method::POST, ["v1", "databases", id, "query"]) if !modern => {
                let (page_size, cursor) = match body_paging(&body) {
                    Ok(paging) => paging,
                    Err(message) => return notion_error(400, "validation_error", &message),
                };
                state.legacy_query(id, cursor.as_deref(), page_size)
            }
            _ => notion_error(400, "invalid_request_url", "Invalid request URL."),
        }
    }

    fn oauth_token(&self, authorization: Option<&str>, body: Value) -> Response {
        let mut state = self.state();
        let Some(client) = &state.oauth_client else {
            return oauth_error(401, "invalid_client", "OAuth is not configured on the fake.");
        };
        let expected = format!("{}:{}", client.id, client.secret);
        let given = authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok());
        if given.as_deref() != Some(expected.as_bytes()) {
            return oauth_error(401, "invalid_client", "Invalid client credentials.");
        }
        if body["grant_type"] == "refresh_token" {
            let refresh = body["refresh_token"].as_str().unwrap_or_default().to_owned();
            if !state.refresh_tokens.remove(&refresh) {
                return json_response(400, fixture("oauth_token_error_invalid_grant.json"));
            }
            return issue_token(&mut state);
        }
        if body["grant_type"] != "authorization_code" {
            return oauth_error(
                400,
                "unsupported_grant_type",
                "Only authorization_code and refresh_token are supported here.",
            );
        }
        let Some(redirect_uri) = body["redirect_uri"].as_str() else {
            return oauth_error(
                400,
                "invalid_request",
                "body failed validation: body.redirect_uri should be defined, instead was `undefined`.",
            );
        };
        let redirect_ok = redirect_uri == client.redirect_uri;
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        if !redirect_ok || !state.oauth_codes.remove(&code) {
            return json_response(400, fixture("oauth_token_error_invalid_grant.json"));
        }
        issue_token(&mut state)
    }
}

/// A new access token and refresh token, both accepted from now on, in Notion's answer shape.
fn issue_token(state: &mut State) -> Response {
    let mut token = fixture("oauth_token_response.json");
    let access_token = format!("ntn_fake{}", uuid::Uuid::new_v4().simple());
    let refresh_token = format!("nrt_fake{}", uuid::Uuid::new_v4().simple());
    token["access_token"] = json!(access_token);
    token["refresh_token"] = json!(refresh_token);
    state.tokens.insert(access_token);
    state.refresh_tokens.insert(refresh_token);
    json_response(200, with_request_id(token))
}

impl State {
    fn take_fault(&mut self, path: &str, has_cursor: bool) -> Option<Fault> {
        if has_cursor
            && let Some(position) =
                self.faults_on_cursor.iter().position(|(prefix, _)| path.starts_with(prefix.as_str()))
        {
            return self.faults_on_cursor.remove(position).map(|(_, fault)| fault);
        }
        if let Some(position) =
            self.faults_once.iter().position(|(prefix, _)| path.starts_with(prefix.as_str()))
        {
            return self.faults_once.remove(position).map(|(_, fault)| fault);
        }
        if let Some(fault) = self
            .faults_always
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, f)| f.clone())
        {
            return Some(fault);
        }
        self.random_fault()
    }

    fn random_fault(&mut self) -> Option<Fault> {
        let (faults, rng) = self.random_faults.as_mut()?;
        let draw = rng.next_f64();
        let delay = rng.chance(faults.delay).then(|| faults.max_delay.mul_f64(rng.next_f64()));
        let fault = if draw < faults.server_error {
            self.random_counts.server_errors += 1;
            Some(Fault::Status(500))
        } else if draw < faults.server_error + faults.rate_limited {
            self.random_counts.rate_limited += 1;
            Some(Fault::RateLimited { retry_after_secs: faults.retry_after_secs })
        } else {
            None
        };
        match (fault, delay) {
            (Some(fault), _) => Some(fault),
            (None, Some(delay)) => {
                self.random_counts.delayed += 1;
                Some(Fault::Delay(delay))
            }
            (None, None) => None,
        }
    }

    /// A known page or block lists its children (none if never set); anything else is unknown.
    fn block_children(&self, id: &str) -> Option<&[Value]> {
        let id = key(id);
        if let Some(children) = self.children.get(&id) {
            return Some(children);
        }
        let is_known_block = self
            .children
            .values()
            .flatten()
            .any(|block| block["id"].as_str().map(key).as_deref() == Some(&id));
        (self.pages.contains_key(&id) || is_known_block).then_some(&[])
    }

    /// Notion leaves trashed pages out of query results.
    fn live_rows(&self, rows: &[String]) -> Vec<Value> {
        rows.iter()
            .filter_map(|row| self.pages.get(row))
            .filter(|page| page["in_trash"] != true)
            .cloned()
            .collect()
    }

    fn legacy_query(&self, database_id: &str, cursor: Option<&str>, page_size: usize) -> Response {
        let Some(database) = self.databases.get(&key(database_id)) else {
            return not_found("database", database_id);
        };
        let sources: Vec<String> = database["data_sources"]
            .as_array()
            .map(|sources| sources.iter().filter_map(|s| s["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if sources.len() > 1 {
            let mut body = with_request_id(fixture("error_400_multiple_data_sources.json"));
            body["additional_data"]["database_id"] = json!(database_id);
            body["additional_data"]["child_data_source_ids"] = json!(sources);
            return json_response(400, body);
        }
        let rows =
            sources.first().and_then(|source| self.rows.get(&key(source))).cloned().unwrap_or_default();
        // Before data sources, a row's parent was the database itself.
        let rows: Vec<Value> = self
            .live_rows(&rows)
            .into_iter()
            .map(|mut row| {
                let database_id = row["parent"]["database_id"].clone();
                row["parent"] = json!({"type": "database_id", "database_id": database_id});
                row
            })
            .collect();
        self.paginate(&rows, &[], cursor, page_size, "page_or_database")
    }

    /// One page of a Notion list: `next_cursor` is the id of the first item not returned. A page
    /// ends at `page_size`, the cap, or the next of `breaks`, whichever comes first.
    fn paginate(
        &self,
        items: &[Value],
        breaks: &[usize],
        cursor: Option<&str>,
        page_size: usize,
        kind: &str,
    ) -> Response {
        let start = match cursor {
            None => 0,
            Some(cursor) => {
                match items.iter().position(|item| item["id"].as_str().map(key) == Some(key(cursor))) {
                    Some(position) => position,
                    None => {
                        return notion_error(
                            400,
                            "validation_error",
                            &format!("The start_cursor provided is invalid: {cursor}"),
                        );
                    }
                }
            }
        };
        let size = self.page_size_cap.map_or(page_size, |cap| page_size.min(cap));
        let next_break = breaks.iter().copied().find(|b| *b > start).unwrap_or(items.len());
        let end = (start + size).min(next_break).min(items.len());
        let next_cursor = items.get(end).map(|item| item["id"].clone()).unwrap_or(Value::Null);
        json_response(
            200,
            with_request_id(json!({
                "object": "list",
                "results": items[start..end].to_vec(),
                "next_cursor": next_cursor,
                "has_more": end < items.len(),
                "type": kind,
                kind: {},
            })),
        )
    }
}

/// The parts of a request the fake looks at.
struct Incoming {
    method: Method,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    version: Option<String>,
    raw_body: Vec<u8>,
    body: Option<Value>,
}

impl Incoming {
    fn bearer(&self) -> Option<&str> {
        self.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "))
    }
}

struct FakeEndpoint {
    fake: FakeNotion,
}

impl Endpoint for FakeEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        Ok(self.fake.handle(req).await)
    }
}

// ----- Notion's formats -----

/// Notion accepts ids with or without dashes; the fake stores them in one spelling.
fn key(id: &str) -> String {
    id.chars().filter(|c| *c != '-').flat_map(char::to_lowercase).collect()
}

/// Ids in Notion's messages are dashed.
fn dashed(id: &str) -> String {
    let k = key(id);
    if k.len() == 32 {
        format!("{}-{}-{}-{}-{}", &k[0..8], &k[8..12], &k[12..16], &k[16..20], &k[20..])
    } else {
        id.to_owned()
    }
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixtures::bytes(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn results(list: Value) -> Vec<Value> {
    list["results"].as_array().cloned().expect("a list fixture")
}

fn fixture_database() -> Value {
    json!({
        "object": "database",
        "id": ids::DATABASE,
        "title": [{"type": "text", "text": {"content": "Study notes", "link": null},
                   "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false,
                                   "code": false, "color": "default"},
                   "plain_text": "Study notes", "href": null}],
        "description": [],
        "parent": {"type": "page_id", "page_id": "1f3c8a2e-4b7d-8005-9b1d-3f5a7c9e1b2d"},
        "is_inline": false,
        "in_trash": false,
        "is_locked": false,
        "created_time": "2026-05-01T08:00:00.000Z",
        "last_edited_time": "2026-05-12T07:04:00.000Z",
        "data_sources": [{"id": ids::DATA_SOURCE, "name": "Study notes"}],
        "icon": null,
        "cover": null,
        "url": "https://www.notion.so/1f3c8a2e4b7d8012a6e9c1d3f5a7b9e2",
        "public_url": null,
        "archived": false
    })
}

fn strip_request_id(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("request_id");
    }
    value
}

fn with_request_id(mut value: Value) -> Value {
    value["request_id"] = json!(uuid::Uuid::new_v4().to_string());
    value
}

fn json_response(status: u16, body: Value) -> Response {
    let request_id = body["request_id"].as_str().map(str::to_owned);
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).expect("a valid status"))
        .content_type("application/json; charset=utf-8");
    if let Some(id) = request_id {
        builder = builder.header("x-notion-request-id", id);
    }
    builder.body(body.to_string())
}

fn notion_error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        with_request_id(json!({"object": "error", "status": status, "code": code, "message": message})),
    )
}

/// The fixture's wording, for the kind of object asked for.
fn not_found(object: &str, id: &str) -> Response {
    let mut body = with_request_id(fixture("error_404_object_not_found.json"));
    body["message"] = json!(format!(
        "Could not find {object} with ID: {}. Make sure the relevant pages and databases are shared with your integration \"Flashcard Sync\".",
        dashed(id)
    ));
    json_response(404, body)
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let mut body = with_request_id(fixture("error_429_rate_limited.json"));
    body["additional_data"]["retry_after"] = json!(retry_after_secs.to_string());
    let mut response = json_response(429, body);
    response.headers_mut().insert("retry-after", retry_after_secs.into());
    response
}

/// A 429 with Notion's `rate_limit_reason`; `Retry-After` (header and body) only when given.
fn rate_limited_because(reason: &str, retry_after_secs: Option<u64>) -> Response {
    let mut body = with_request_id(fixture("error_429_rate_limited.json"));
    body["additional_data"]["rate_limit_reason"] = json!(reason);
    match retry_after_secs {
        Some(secs) => body["additional_data"]["retry_after"] = json!(secs.to_string()),
        None => {
            if let Some(data) = body["additional_data"].as_object_mut() {
                data.remove("retry_after");
            }
        }
    }
    let mut response = json_response(429, body);
    if let Some(secs) = retry_after_secs {
        response.headers_mut().insert("retry-after", secs.into());
    }
    response
}

/// `response` with its status and headers sent at once and its body in ten pieces spread over
/// `total`.
async fn slow_body(response: Response, total: Duration) -> Response {
    use futures::StreamExt as _;
    let (parts, body) = response.into_parts();
    let bytes = body.into_vec().await.unwrap_or_default();
    let piece = bytes.len().div_ceil(10).max(1);
    let pieces: Vec<Bytes> = bytes.chunks(piece).map(Bytes::copy_from_slice).collect();
    let pause = total / pieces.len().max(1) as u32;
    let stream = futures::stream::iter(pieces).then(move |piece| async move {
        tokio::time::sleep(pause).await;
        Ok::<_, io::Error>(piece)
    });
    let mut response = Response::from_parts(parts, Body::from_bytes_stream(stream));
    response.headers_mut().insert("content-length", bytes.len().into());
    response
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json_response(status, json!({"error": error, "error_description": description}))
}

/// A 200 that promises more body than it sends, sends a part, then closes the connection: the
/// client sees the connection break mid-answer. (Only an error in the body stream is not
/// enough: poem then ends a chunked body cleanly. The pause lets the part go out first.)
fn broken_response() -> Response {
    use futures::StreamExt as _;
    let partial =
        futures::stream::once(async { Ok(Bytes::from_static(b"{\"object\":\"list\",\"results\":[")) });
    let reset = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "fake Notion: injected reset"))
    });
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .header("content-length", 4096)
        .body(Body::from_bytes_stream(partial.chain(reset)))
}

/// Notion's codes per status (status-codes page).
fn default_code(status: u16) -> &'static str {
    match status {
        400 => "validation_error",
        401 => "unauthorized",
        403 => "restricted_resource",
        404 => "object_not_found",
        409 => "conflict_error",
        429 => "rate_limited",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        529 => "service_overload",
        _ => "internal_server_error",
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        400 => "The request body does not match the schema for the expected parameters.",
        401 => "API token is invalid.",
        403 => "API token does not have access to this resource.",
        404 => {
            "Could not find the requested object. Make sure the relevant pages and databases are shared with your integration \"Flashcard Sync\"."
        }
        409 => "Conflict occurred while saving. Please try again.",
        429 => "You have been rate limited. Please try again in a few minutes.",
        502 => "Bad gateway.",
        503 => "Notion is unavailable. Please try again later.",
        504 => "Notion timed out while processing the request. Please try again later.",
        529 => "Notion is overloaded. Please try again later.",
        _ => "Unexpected error occurred.",
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Notion's default and maximum is 100; anything else is a `validation_error` (the message).
fn check_page_size(size: Option<i64>) -> Result<usize, String> {
    match size {
        None => Ok(100),
        Some(size @ 1..=100) => Ok(size as usize),
        Some(size) => Err(format!("page_size should be a number between 1 and 100, instead was `{size}`.")),
    }
}

fn query_page_size(query: Option<&str>) -> Result<usize, String> {
    match query_param(query, "page_size") {
        None => check_page_size(None),
        Some(raw) => check_page_size(Some(raw.parse().unwrap_or(-1))),
    }
}

fn body_paging(body: &Value) -> Result<(usize, Option<String>), String> {
    let size = match &body["page_size"] {
        Value::Null => None,
        other => Some(other.as_i64().unwrap_or(-1)),
    };
    Ok((check_page_size(size)?, body["start_cursor"].as_str().map(str::to_owned)))
}
