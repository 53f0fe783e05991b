//! The HTTP client: one method per Notion endpoint the sync reads, each making exactly one request.
//!
//! The client does not retry, wait or paginate on its own: every request must first pass the
//! caller's per-user rate limiter, and a retry is a workflow decision. Pagination and recursion
//! are driven by [`super::Crawl`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url, header};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{crawl::CrawlRequest, error::NotionError};

pub const DEFAULT_BASE_URL: &str = "https://api.notion.com";
/// Data sources arrived with 2025-09-03; it is the official SDK's default.
pub const DEFAULT_NOTION_VERSION: &str = "2025-09-03";
/// The version whose `POST /v1/databases/{id}/query` still exists.
pub const LEGACY_NOTION_VERSION: &str = "2022-06-28";
/// Notion's maximum; its docs disagree on the default (10 or 100), so we always send it.
pub const PAGE_SIZE: u32 = 100;
/// A page of 100 blocks is well under a megabyte; anything near this is a broken server, and
/// reading it all could exhaust a worker's memory.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct NotionClientConfig {
    /// The API root without a trailing slash, e.g. `https://api.notion.com`.
    pub base_url: String,
    /// Sent as `Notion-Version` on every request.
    pub version: String,
    /// Whole-request timeout: connect, send, and read the full body.
    pub timeout: Duration,
}

impl Default for NotionClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            version: DEFAULT_NOTION_VERSION.to_owned(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One page of a paginated Notion list (`{"object":"list","results","next_cursor","has_more"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    pub results: Vec<Value>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    pub has_more: bool,
    /// A data source query's `{type: "complete" | "incomplete", incomplete_reason}`.
    #[serde(default)]
    pub request_status: Option<Value>,
}

impl ListPage {
    /// Why Notion stopped the query short of every matching row, when it says so: e.g.
    /// `query_result_limit_reached` (10,000 rows per query). The list then ends with
    /// `has_more: false` although rows are left.
    pub fn incomplete_reason(&self) -> Option<String> {
        let status = self.request_status.as_ref()?;
        (status.get("type")?.as_str()? == "incomplete")
            .then(|| status.get("incomplete_reason").and_then(Value::as_str).unwrap_or("unknown").to_owned())
    }

    /// Reads a list response, refusing one that says "more" without saying where: following it
    /// would either loop or silently drop the rest.
    pub fn from_value(value: Value) -> Result<Self, NotionError> {
        let page: Self = serde_json::from_value(value).map_err(|e| NotionError::MalformedResponse {
            status: 200,
            detail: format!("not a list response: {e}"),
        })?;
        if page.has_more && page.next_cursor.is_none() {
            return Err(NotionError::MalformedResponse {
                status: 200,
                detail: "has_more is true but next_cursor is null".to_owned(),
            });
        }
        Ok(page)
    }
}

/// A cheap-to-clone Notion REST client. Tokens are passed per call and only ever placed in the
/// `Authorization` header.
#[derive(Debug, Clone)]
pub struct NotionClient {
    http: reqwest::Client,
    base_url: Url,
    version: String,
    timeout: Duration,
}

/// The filter of a query window (see [`super::crawl`]): rows created at or after `time`.
fn created_on_or_after(time: &str) -> Value {
    json!({ "timestamp": "created_time", "created_time": { "on_or_after": time } })
}

impl NotionClient {
    pub fn new(config: NotionClientConfig) -> Result<Self, NotionError> {
        let base_url = Url::parse(config.base_url.trim_end_matches('/')).map_err(|e| {
            NotionError::Config { reason: format!("base URL `{}` is not a URL: {e}", config.base_url) }
        })?;
        if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
            return Err(NotionError::Config {
                reason: format!("base URL `{base_url}` is not an http(s) URL"),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("cognie-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout)
            // One call = one request, always: the caller's rate limiter counts calls.
            .retry(reqwest::retry::never())
            // Notion does not redirect; never carry a token anywhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotionError::Config { reason: format!("HTTP client: {e}") })?;
        Ok(Self { http, base_url, version: config.version, timeout: config.timeout })
    }

    /// The `Notion-Version` this client sends.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `GET /v1/pages/{page_id}`: the page object (properties, not content).
    pub async fn retrieve_page(&self, token: &str, page_id: &str) -> Result<Value, NotionError> {
        let url = self.url(&["pages", page_id]);
        self.send_json(self.request(Method::GET, url, token)).await
    }

    /// `GET /v1/blocks/{block_id}/children`: one page (up to 100) of a block's direct children.
    /// A page id is a valid block id.
    pub async fn list_block_children(
        &self,
        token: &str,
        block_id: &str,
        start_cursor: Option<&str>,
    ) -> Result<ListPage, NotionError> {
        let value = self.list_block_children_raw(token, block_id, start_cursor).await?;
        ListPage::from_value(value)
    }

    /// `GET /v1/databases/{database_id}`: since 2025-09-03 the container, with
    /// `data_sources: [{id, name}]`.
    pub async fn retrieve_database(&self, token: &str, database_id: &str) -> Result<Value, NotionError> {
        let url = self.url(&["databases", database_id]);
        self.send_json(self.request(Method::GET, url, token)).await
    }

    /// `POST /v1/data_sources/{data_source_id}/query` (2025-09-03 and later): one page of rows.
    pub async fn query_data_source(
        &self,
        token: &str,
        data_source_id: &str,
        start_cursor: Option<&str>,
        filter: Option<Value>,
    ) -> Result<ListPage, NotionError> {
        let value = self.query_raw(token, "data_sources", data_source_id, start_cursor, filter).await?;
        ListPage::from_value(value)
    }

    /// `POST /v1/databases/{database_id}/query`, the pre-data-source query: only for a client
    /// configured with `Notion-Version` 2022-06-28.
    pub async fn query_database_legacy(
        &self,
        token: &str,
        database_id: &str,
        start_cursor: Option<&str>,
        filter: Option<Value>,
    ) -> Result<ListPage, NotionError> {
        let value = self.query_raw(token, "databases", database_id, start_cursor, filter).await?;
        ListPage::from_value(value)
    }

    /// Makes the one request a crawl step names and returns Notion's answer as is, ready for
    /// [`super::Crawl::apply`]. List answers are checked like [`ListPage::from_value`] does.
    pub async fn execute(&self, token: &str, request: &CrawlRequest) -> Result<Value, NotionError> {
        let value = match request {
            CrawlRequest::RetrievePage { page_id } => return self.retrieve_page(token, page_id).await,
            CrawlRequest::RetrieveDatabase { id } => return self.retrieve_database(token, id).await,
            CrawlRequest::ListChildren { block_id, cursor } => {
                self.list_block_children_raw(token, block_id, cursor.as_deref()).await?
            }
            CrawlRequest::QueryDataSource { id, cursor, created_from } => {
                let filter = created_from.as_deref().map(created_on_or_after);
                self.query_raw(token, "data_sources", id, cursor.as_deref(), filter).await?
            }
            CrawlRequest::QueryDatabase { id, cursor, created_from } => {
                let filter = created_from.as_deref().map(created_on_or_after);
                self.query_raw(token, "databases", id, cursor.as_deref(), filter).await?
            }
        };
        ListPage::from_value(value.clone())?;
        Ok(value)
    }

    async fn list_block_children_raw(
        &self,
        token: &str,
        block_id: &str,
        start_cursor: Option<&str>,
    ) -> Result<Value, NotionError> {
        let mut url = self.url(&["blocks", block_id, "children"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("page_size", &PAGE_SIZE.to_string());
            if let Some(cursor) = start_cursor {
                query.append_pair("start_cursor", cursor);
            }
        }
        self.send_json(self.request(Method::GET, url, token)).await
    }

    async fn query_raw(
        &self,
        token: &str,
        collection: &str,
        id: &str,
        start_cursor: Option<&str>,
        filter: Option<Value>,
    ) -> Result<Value, NotionError> {
        let url = self.url(&[collection, id, "query"]);
        // Oldest first: without a sort Notion promises no order, and a crawl reads the pages of
        // a query minutes or hours apart; a row added meanwhile then comes at the end instead of
        // shifting rows past the cursor unseen.
        let mut body = json!({
            "page_size": PAGE_SIZE,
            "sorts": [{ "timestamp": "created_time", "direction": "ascending" }],
        });
        if let Some(cursor) = start_cursor {
            body["start_cursor"] = json!(cursor);
        }
        if let Some(filter) = filter {
            body["filter"] = filter;
        }
        self.send_json(self.request(Method::POST, url, token).json(&body)).await
    }

    /// `{base}/v1/<segments...>`, each segment percent-encoded so an id can never change the path.
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("checked in new(): the base URL can be a base")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        url
    }

    /// The headers every call carries. `.json()` adds `Content-Type: application/json` to POSTs.
    fn request(&self, method: Method, url: Url, token: &str) -> RequestBuilder {
        self.bare_request(method, url).bearer_auth(token)
    }

    pub(super) fn bare_request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http
            .request(method, url)
            .timeout(self.timeout)
            .header("Notion-Version", &self.version)
            .header(header::ACCEPT, "application/json")
    }

    async fn send_json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, NotionError> {
        let (status, body) = self.send(request, NotionError::from_api_response).await?;
        decode(status, &body)
    }

    /// Sends one request and returns a success status with its body, or the classified error.
    /// `on_error` turns an error status, its `Retry-After` and body into the error.
    pub(super) async fn send(
        &self,
        request: RequestBuilder,
        on_error: fn(u16, Option<&str>, &[u8]) -> NotionError,
    ) -> Result<(StatusCode, Vec<u8>), NotionError> {
        let response = request.send().await.map_err(|e| self.transport_error(e, "sending the request"))?;
        let status = response.status();
        let retry_after =
            response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = self.read_body(response).await?;
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(on_error(status.as_u16(), retry_after.as_deref(), &body))
        }
    }

    async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, NotionError> {
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| self.transport_error(e, "reading the response"))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(NotionError::MalformedResponse {
                    status,
                    detail: format!("the body is larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, source: reqwest::Error, stage: &'static str) -> NotionError {
        if source.is_timeout() {
            NotionError::Timeout { after: self.timeout, source }
        } else {
            NotionError::Connection { stage, source }
        }
    }
}

/// Reads an answer's JSON, without the NUL characters (`\u0000`) any of its strings may hold:
/// PostgreSQL stores neither in `text` nor in `jsonb`, so a page with one would fail every
/// attempt to record its sync (on SQLite it would not), and a NUL means nothing in a note.
pub(super) fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, NotionError> {
    let malformed = |e: serde_json::Error| NotionError::MalformedResponse {
        status: status.as_u16(),
        detail: format!("not the expected JSON: {e}"),
    };
    let mut value: Value = serde_json::from_slice(body).map_err(malformed)?;
    strip_nul(&mut value);
    serde_json::from_value(value).map_err(malformed)
}

/// Removes every NUL character from the strings of `value`, keys included.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => text.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|key| key.contains('\0')) {
                *map = std::mem::take(map).into_iter().map(|(key, v)| (key.replace('\0', ""), v)).collect();
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_url: &str) -> NotionClient {
        NotionClient::new(NotionClientConfig { base_url: base_url.to_owned(), ..Default::default() })
            .expect("client builds")
    }

    #[test]
    fn nul_characters_are_taken_out_of_every_string_of_an_answer() {
        let body = br#"{"id":"p\u0000","results":[{"plain_text":"a\u0000b","k\u0000":"\u0000"}],"n":1}"#;
        let value: Value = decode(StatusCode::OK, body).expect("decoded");
        assert_eq!(value, json!({"id": "p", "results": [{"plain_text": "ab", "k": ""}], "n": 1}));
    }

    #[test]
    fn urls_are_built_under_v1_with_ids_as_given() {
        let c = client("https://api.notion.com");
        assert_eq!(
            c.url(&["pages", "1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"]).as_str(),
            "https://api.notion.com/v1/pages/1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1"
        );
        assert_eq!(
            c.url(&["blocks", "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1", "children"]).as_str(),
            "https://api.notion.com/v1/blocks/1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1/children"
        );
    }

    #[test]
    fn a_trailing_slash_or_a_path_prefix_on_the_base_url_is_kept_sensible() {
        assert_eq!(
            client("http://127.0.0.1:9/").url(&["pages", "x"]).as_str(),
            "http://127.0.0.1:9/v1/pages/x"
        );
        assert_eq!(
            client("http://proxy/notion").url(&["pages", "x"]).as_str(),
            "http://proxy/notion/v1/pages/x"
        );
    }

    #[test]
    fn an_id_cannot_escape_its_path_segment() {
        let url = client("https://api.notion.com").url(&["pages", "../oauth/token?x=1"]);
        assert_eq!(url.path(), "/v1/pages/..%2Foauth%2Ftoken%3Fx=1");
        assert_eq!(url.query(), None);
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused() {
        for bad in ["not a url", "mailto:someone@example.com", "ftp://example.com"] {
            let err =
                NotionClient::new(NotionClientConfig { base_url: bad.to_owned(), ..Default::default() })
                    .expect_err(bad);
            assert_eq!(err.error_kind(), "notion_client_config");
        }
    }

    #[test]
    fn a_list_that_has_more_without_a_cursor_is_malformed() {
        let err = ListPage::from_value(json!({"results": [], "has_more": true, "next_cursor": null}))
            .expect_err("must be refused");
        assert_eq!(err.error_kind(), "notion_malformed_response");
        assert!(err.is_retryable());
    }

    #[test]
    fn a_list_page_reads_notions_list_object() {
        let value: Value = serde_json::from_slice(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/notion/blocks_children_page_1.json"
        )))
        .expect("fixture");
        let page = ListPage::from_value(value).expect("a list");
        assert_eq!(page.results.len(), 8);
        assert!(page.has_more);
        assert_eq!(page.next_cursor.as_deref(), Some("1f3c8a2e-4b7d-8109-8a2b-d2e3f4a5b6c9"));
    }
}
