//! A resumable crawl of a page or a database: which request to make next, and what the answers
//! add up to. Pure: no I/O, no clock.
//!
//! The fetch step may make only one request at a time, each after the user's rate limiter lets
//! it, possibly minutes apart and in another worker process. So the crawl is a value: ask
//! [`Crawl::next_request`], make that one call, hand the answer to [`Crawl::apply`], save the
//! crawl (it is `serde`-serialisable), and repeat until `next_request` is `None`; then
//! [`Crawl::finish`]. The format is stored between requests: if a deploy makes an old stored
//! crawl unreadable, start a new one; it only records progress.
//!
//! What is walked:
//! - a page: the page object, then its block children (cursor pagination), recursing into every
//!   block with `has_children: true` except `child_page` and `child_database`, which are other
//!   pages: they are kept as blocks, not entered;
//! - a database, 2025-09-03 ([`ApiFlavor::DataSources`]): the database (for its
//!   `data_sources`), each data source's rows (paginated), then each row page's blocks as above;
//!   the rows already are the page objects, so they are not retrieved again;
//! - a database, 2022-06-28 ([`ApiFlavor::LegacyDatabase`]): the database query, then rows' blocks.
//!
//! Each block list is requested exactly once. A list's next page comes right after the page
//! before it, then the children of the blocks received (blocks are assembled in document order
//! whatever order their lists arrive in); a query is likewise read whole (every page, every
//! window) before its rows' blocks. So each cursor is used as soon as the rate limit allows,
//! while Notion still accepts it.
//!
//! Notion ends a data source or database query at 10,000 rows (`request_status: incomplete`,
//! `query_result_limit_reached`, on every page of the capped result). Queries are sorted
//! oldest first (`created_time`), so the crawl reads on in windows: the same query again,
//! filtered to rows created at or after the last one read, until a window is not capped.
//! Only more than 10,000 rows created at one instant (Notion's `created_time` has minute
//! precision) cannot be read this way: that ends in [`CrawlError::QueryIncomplete`].
//!
//! Gone: a root page or database whose object says `in_trash` or `archived` ends the crawl at
//! once with [`FetchedContent::gone`] set. A 404 is the caller's to interpret; if it decides the
//! object is gone, [`Crawl::apply_not_found`] records that and the crawl carries on without it.

mod assemble;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::ListPage;

/// Which database API the crawl speaks; it must match the client's `Notion-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFlavor {
    /// 2025-09-03 and later: retrieve the database, then query each of its data sources.
    DataSources,
    /// 2022-06-28: query the database itself.
    LegacyDatabase,
}

/// Exactly one Notion call, with its arguments. [`super::NotionClient::execute`] makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum CrawlRequest {
    RetrievePage {
        page_id: String,
    },
    ListChildren {
        block_id: String,
        cursor: Option<String>,
    },
    RetrieveDatabase {
        id: String,
    },
    /// `created_from`: the query's window (see [`Crawl`]'s module notes): only rows created at
    /// or after that `created_time`. `None` for a query's first window.
    QueryDataSource {
        id: String,
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_from: Option<String>,
    },
    QueryDatabase {
        id: String,
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_from: Option<String>,
    },
}

impl CrawlRequest {
    /// The cursor of a list's next page; `None` for a list's first page and for objects.
    pub fn cursor(&self) -> Option<&str> {
        match self {
            Self::ListChildren { cursor, .. }
            | Self::QueryDataSource { cursor, .. }
            | Self::QueryDatabase { cursor, .. } => cursor.as_deref(),
            Self::RetrievePage { .. } | Self::RetrieveDatabase { .. } => None,
        }
    }
}

/// How [`Crawl::restart_list`] goes on with a list whose cursor Notion refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// From the list's first page: what was read of it before is read again.
    FromTheStart,
    /// From the last row read (a query, sorted by creation): nothing is read again but the
    /// rows created in that same minute, which are skipped as seen.
    FromTheLastRow,
}

/// Everything a finished crawl read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedContent {
    /// The root is gone: the page or database is in the trash (`in_trash` or `archived`), or
    /// the caller reported it not found. For a trashed page, `pages` holds its object (marked
    /// gone); when it was not found, `pages` is empty.
    pub gone: bool,
    /// The database object, for a data-source crawl of a database (title, `data_sources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Value>,
    /// The root page, or the database's rows in query order.
    pub pages: Vec<FetchedPage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedPage {
    /// The page object as Notion sent it, minus the response's `request_id`, which changes on
    /// every call and would make identical content look different.
    pub page: Value,
    /// In the trash, or reported not found while its blocks were read, or a row of a data
    /// source not found partway through its query. Its `blocks` are empty.
    #[serde(default)]
    pub gone: bool,
    /// Top-level blocks in document order. A block whose children were read carries them,
    /// recursively, in a `"children"` array; `child_page`/`child_database` blocks carry none.
    pub blocks: Vec<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CrawlError {
    /// `apply` was given the answer to a different request than the one the crawl is waiting
    /// for: a bug, or a stale worker. Nothing was recorded.
    #[error("the crawl is waiting for {expected:?}, not for the answer to {given:?}")]
    OutOfStep { expected: Option<Box<CrawlRequest>>, given: Box<CrawlRequest> },
    /// The answer does not have the shape the crawl needs. Nothing was recorded, so the same
    /// request can be made again.
    #[error("Notion's answer to {request:?} cannot be used: {detail}")]
    MalformedResponse { request: CrawlRequest, detail: String },
    #[error("the crawl still has requests to make")]
    Unfinished,
    /// Notion stopped a data source query short of its rows (`request_status: incomplete`)
    /// for a reason the crawl cannot read past: an unknown one, or 10,000 rows created at one
    /// instant (see the module notes). Finishing the crawl would retire the cards of every row
    /// not read, so it stops here instead. Nothing was recorded.
    #[error(
        "Notion stopped the query of {request:?} short of its rows ({reason}): the database has more rows than one query returns, and syncing part of it would retire the cards of the rest"
    )]
    QueryIncomplete { request: CrawlRequest, reason: String },
}

impl CrawlError {
    /// `notion_malformed_response` (retryable, like the client's) or `notion_crawl_misuse`.
    pub fn error_kind(&self) -> &'static str {
        match self {
            Self::MalformedResponse { .. } => "notion_malformed_response",
            Self::QueryIncomplete { .. } => "notion_query_incomplete",
            Self::OutOfStep { .. } | Self::Unfinished => "notion_crawl_misuse",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::MalformedResponse { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crawl {
    /// Work left, as a stack: the last task is the next request.
    todo: Vec<Task>,
    /// The whole crawl is about one page, so "gone" ends it rather than skipping a row.
    single_page: bool,
    gone: bool,
    database: Option<Value>,
    pages: Vec<PageState>,
    /// Every block received, in arrival order; children point at their parent.
    nodes: Vec<Node>,
    /// Row pages already taken (dashless, lowercase ids): a query paginated while rows change
    /// can repeat one, and its blocks must still be read only once.
    seen_rows: BTreeSet<String>,
    requests_applied: u64,
    /// Lists read again from their start (see [`Crawl::restart_list`]) since a list was last
    /// read to its end; saved with the crawl, so waiting for the rate limiter between refusals
    /// does not start the count over.
    #[serde(default)]
    restarts_in_a_row: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Task {
    request: CrawlRequest,
    into: Target,
}

/// Where an answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Target {
    RootPage,
    Database,
    /// Query results: row pages. `root` when the query is the crawl's root (legacy database, a
    /// bare data source), so that a 404 on it means the root is gone.
    Rows {
        root: bool,
    },
    /// A block list: the top level of page `page`, or the children of node `parent`.
    Children {
        page: usize,
        parent: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PageState {
    page: Value,
    gone: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    page: usize,
    parent: Option<usize>,
    block: Value,
    /// Its children were requested, so it gets a `children` array.
    expanded: bool,
    /// Reported not found after it was listed: left out, with everything under it.
    dropped: bool,
}

impl Crawl {
    /// Crawls one page and all its blocks.
    pub fn page(page_id: &str) -> Self {
        let mut crawl = Self::empty(true);
        crawl.push(CrawlRequest::RetrievePage { page_id: page_id.to_owned() }, Target::RootPage);
        crawl
    }

    /// Crawls every row page of a database, and each row's blocks.
    pub fn database(database_id: &str, api: ApiFlavor) -> Self {
        let mut crawl = Self::empty(false);
        let id = database_id.to_owned();
        match api {
            ApiFlavor::DataSources => crawl.push(CrawlRequest::RetrieveDatabase { id }, Target::Database),
            ApiFlavor::LegacyDatabase => crawl.push(
                CrawlRequest::QueryDatabase { id, cursor: None, created_from: None },
                Target::Rows { root: true },
            ),
        }
        crawl
    }

    /// Crawls every row page of one data source (2025-09-03), e.g. from a `data_source.*` event.
    pub fn data_source(data_source_id: &str) -> Self {
        let mut crawl = Self::empty(false);
        let request =
            CrawlRequest::QueryDataSource { id: data_source_id.to_owned(), cursor: None, created_from: None };
        crawl.push(request, Target::Rows { root: true });
        crawl
    }

    fn empty(single_page: bool) -> Self {
        Self {
            todo: Vec::new(),
            single_page,
            gone: false,
            database: None,
            pages: Vec::new(),
            nodes: Vec::new(),
            seen_rows: BTreeSet::new(),
            requests_applied: 0,
            restarts_in_a_row: 0,
        }
    }

    /// The one request to make next, or `None` when the crawl is complete.
    pub fn next_request(&self) -> Option<CrawlRequest> {
        self.todo.last().map(|task| task.request.clone())
    }

    /// How many requests the crawl will make next, one after another: every list already
    /// queued, and the children of a root page not read yet. Fewer are made when an answer
    /// ends the crawl (a root found gone), drops a subtree (a block not found, with the lists
    /// queued under it) or Notion fails. At least one until the crawl is finished. A caller
    /// may take that many rate-limit slots at once.
    pub fn requests_ahead(&self) -> usize {
        let root_children = matches!(self.todo.last(), Some(Task { into: Target::RootPage, .. }));
        self.todo.len() + usize::from(root_children)
    }

    pub fn is_finished(&self) -> bool {
        self.todo.is_empty()
    }

    /// How many answers were recorded so far (for logs and progress).
    pub fn requests_applied(&self) -> u64 {
        self.requests_applied
    }

    /// How many lists were read again from their start ([`Restart::FromTheStart`]) since a list
    /// was last read to its end: while not 0, the crawl is reading again what it had read.
    pub fn restarts_in_a_row(&self) -> u32 {
        self.restarts_in_a_row
    }

    /// Records Notion's answer to `request`, which must be the current [`Self::next_request`].
    /// On error nothing changes, so the request can be made again.
    pub fn apply(&mut self, request: &CrawlRequest, response: Value) -> Result<(), CrawlError> {
        let task = self.current(request)?;
        let malformed = |detail: String| CrawlError::MalformedResponse { request: request.clone(), detail };
        match task.into {
            Target::RootPage => {
                let page = read_object(response, "page").map_err(malformed)?;
                self.finish_task();
                self.add_root_page(page);
            }
            Target::Database => {
                let (database, sources) = read_database(response).map_err(malformed)?;
                self.finish_task();
                self.add_database(database, sources);
            }
            Target::Rows { .. } => {
                let mut list = read_list(response, "page").map_err(malformed)?;
                let next_window = match list.incomplete_reason() {
                    // Every page of a capped result says so; only its last one ends the window.
                    Some(_) if list.has_more => None,
                    Some(reason) if reason == QUERY_RESULT_LIMIT => {
                        let window = next_window(request, &list.results).ok_or_else(|| {
                            CrawlError::QueryIncomplete {
                                request: request.clone(),
                                reason: format!("{reason}, within rows all created at the same instant"),
                            }
                        })?;
                        Some(window)
                    }
                    Some(reason) => {
                        return Err(CrawlError::QueryIncomplete { request: request.clone(), reason });
                    }
                    None => None,
                };
                self.finish_task();
                self.list_ended(&list);
                // The rows' block lists go under the query's next page, so the whole query is
                // read before any row's blocks: its cursor is used seconds after Notion gave it,
                // not after a hundred rows' blocks (hours at a low rate limit), by when Notion
                // may no longer accept it.
                let results = std::mem::take(&mut list.results);
                self.add_rows(results);
                match next_window {
                    Some(window) => self.push(window, task.into),
                    None => self.push_continuation(request, &list, task.into),
                }
            }
            Target::Children { page, parent } => {
                let mut list = read_list(response, "block").map_err(malformed)?;
                self.finish_task();
                self.list_ended(&list);
                // The list's next page goes above its blocks' own lists, as a query's does: its
                // cursor (the next block's id) is used right away, not after every subtree of
                // this page (minutes at a low rate limit), by when that block may be gone.
                let results = std::mem::take(&mut list.results);
                self.add_blocks(page, parent, results);
                self.push_continuation(request, &list, task.into);
            }
        }
        Ok(())
    }

    /// Records that Notion answered `request` (the current one) with 404, when the caller has
    /// decided that means "gone": for the root, the crawl ends with [`FetchedContent::gone`];
    /// for a row page, that page is marked gone; for a nested block (deleted since its parent
    /// was listed), it is left out with everything under it; for a data source of a database,
    /// that source is skipped, and the rows already read from it (a later page of its query
    /// not found) are marked gone. Pending requests under what vanished are dropped.
    pub fn apply_not_found(&mut self, request: &CrawlRequest) -> Result<(), CrawlError> {
        let task = self.current(request)?;
        self.finish_task();
        match task.into {
            Target::RootPage | Target::Database | Target::Rows { root: true } => self.end_as_gone(),
            Target::Rows { root: false } => {
                // A data source that vanished partway through its query takes the rows already
                // read from it along (if any: none when its first page is not found): otherwise
                // those rows would keep their cards and the ones not reached would lose theirs.
                if let CrawlRequest::QueryDataSource { id, .. } = request {
                    self.drop_rows_of(id);
                }
            }
            Target::Children { page, parent: None } => {
                if self.single_page {
                    self.end_as_gone();
                } else {
                    self.pages[page].gone = true;
                    self.todo.retain(|t| !matches!(t.into, Target::Children { page: p, .. } if p == page));
                }
            }
            Target::Children { parent: Some(node), .. } => {
                self.nodes[node].dropped = true;
                let nodes = &self.nodes;
                self.todo.retain(|t| match t.into {
                    Target::Children { parent: Some(p), .. } => !is_within(nodes, p, node),
                    _ => true,
                });
            }
        }
        Ok(())
    }

    /// Notion refused the cursor of `request`, the current one, a list's next page (see
    /// [`super::NotionError::is_cursor_rejected`]; a 404 on a next page means the same: the
    /// block the cursor names is gone, not the list). The list is read again without it: a
    /// block list from its first page, the blocks read from it before left out with everything
    /// queued under them; a query as a new window from the last row read (queries are sorted
    /// by creation time, see the module notes), or from its window's start when no row read
    /// moves it on.
    pub fn restart_list(&mut self, request: &CrawlRequest) -> Result<Restart, CrawlError> {
        let task = self.current(request)?;
        let misuse = || CrawlError::OutOfStep { expected: None, given: Box::new(request.clone()) };
        if request.cursor().is_none() {
            return Err(misuse());
        }
        let (again, restart) = match (request.clone(), task.into) {
            (CrawlRequest::ListChildren { block_id, .. }, Target::Children { page, parent }) => {
                self.forget_list(page, parent);
                (CrawlRequest::ListChildren { block_id, cursor: None }, Restart::FromTheStart)
            }
            (CrawlRequest::QueryDataSource { id, created_from, .. }, Target::Rows { root }) => {
                let rows_of_source = |page: &Value| {
                    root || page.pointer("/parent/data_source_id").and_then(Value::as_str).map(id_key)
                        == Some(id_key(&id))
                };
                let (created_from, restart) = self.resume_window(created_from, rows_of_source);
                (CrawlRequest::QueryDataSource { id, cursor: None, created_from }, restart)
            }
            (CrawlRequest::QueryDatabase { id, created_from, .. }, Target::Rows { .. }) => {
                // A legacy crawl queries one database: every row read is one of its rows.
                let (created_from, restart) = self.resume_window(created_from, |_| true);
                (CrawlRequest::QueryDatabase { id, cursor: None, created_from }, restart)
            }
            _ => return Err(misuse()),
        };
        if let Some(current) = self.todo.last_mut() {
            current.request = again;
        }
        if restart == Restart::FromTheStart {
            self.restarts_in_a_row += 1;
        }
        Ok(restart)
    }

    /// Leaves out every block read from the list of page `page` under `parent`, and drops the
    /// lists queued under them (none of which was read: a list's next page comes first).
    fn forget_list(&mut self, page: usize, parent: Option<usize>) {
        let listed: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].page == page && self.nodes[n].parent == parent)
            .collect();
        for &node in &listed {
            self.nodes[node].dropped = true;
        }
        let nodes = &self.nodes;
        self.todo.retain(|t| match t.into {
            Target::Children { parent: Some(p), .. } => !listed.iter().any(|&node| is_within(nodes, p, node)),
            _ => true,
        });
    }

    /// Where a query read again goes on from: the latest `created_time` among the rows read
    /// (those `of_query` says it returned) when it is later than the window's start.
    fn resume_window(
        &self,
        window_start: Option<String>,
        of_query: impl Fn(&Value) -> bool,
    ) -> (Option<String>, Restart) {
        let parse = |time: &str| chrono::DateTime::parse_from_rfc3339(time).ok();
        let latest = self
            .pages
            .iter()
            .filter(|state| of_query(&state.page))
            .filter_map(|state| state.page.get("created_time").and_then(Value::as_str))
            .filter_map(|time| parse(time).map(|parsed| (parsed, time)))
            .max_by_key(|(parsed, _)| *parsed);
        let start = window_start.as_deref().and_then(parse);
        match latest {
            Some((last, text)) if start.is_none_or(|start| last > start) => {
                (Some(text.to_owned()), Restart::FromTheLastRow)
            }
            _ => (window_start, Restart::FromTheStart),
        }
    }

    /// The content read, once [`Self::next_request`] is `None`.
    pub fn finish(self) -> Result<FetchedContent, CrawlError> {
        if !self.todo.is_empty() {
            return Err(CrawlError::Unfinished);
        }
        Ok(assemble::assemble(self))
    }

    fn current(&self, given: &CrawlRequest) -> Result<Task, CrawlError> {
        match self.todo.last() {
            Some(task) if task.request == *given => Ok(task.clone()),
            other => Err(CrawlError::OutOfStep {
                expected: other.map(|t| Box::new(t.request.clone())),
                given: Box::new(given.clone()),
            }),
        }
    }

    fn finish_task(&mut self) {
        self.todo.pop();
        self.requests_applied += 1;
    }

    /// A list's last page was read. A list read again from its start comes before anything
    /// queued since (its next page is always on top), so this is it, read to the end: past
    /// every cursor refused before.
    fn list_ended(&mut self, list: &ListPage) {
        if !list.has_more {
            self.restarts_in_a_row = 0;
        }
    }

    fn push(&mut self, request: CrawlRequest, into: Target) {
        self.todo.push(Task { request, into });
    }

    /// Marks the rows read from data source `data_source_id` gone (no blocks, no cards) and
    /// drops the block lists still queued for them.
    fn drop_rows_of(&mut self, data_source_id: &str) {
        let source = id_key(data_source_id);
        let mut dropped = BTreeSet::new();
        for (index, state) in self.pages.iter_mut().enumerate() {
            let of_source = state.page.pointer("/parent/data_source_id").and_then(Value::as_str).map(id_key);
            if of_source.as_deref() == Some(source.as_str()) {
                state.gone = true;
                dropped.insert(index);
                // As if never read: a row that moved to another data source of the database
                // is taken from that one's query.
                self.seen_rows.remove(&id_key(object_id(&state.page)));
            }
        }
        self.todo.retain(|t| !matches!(t.into, Target::Children { page, .. } if dropped.contains(&page)));
    }

    /// Everything read so far is gone too: a page whose blocks vanished after it was read
    /// makes no cards from the blocks read before.
    fn end_as_gone(&mut self) {
        self.gone = true;
        self.todo.clear();
        for page in &mut self.pages {
            page.gone = true;
        }
    }

    fn add_root_page(&mut self, page: Value) {
        let gone = is_trashed(&page);
        let id = object_id(&page).to_owned();
        self.pages.push(PageState { page, gone });
        if gone {
            self.end_as_gone();
        } else {
            let index = self.pages.len() - 1;
            self.push(
                CrawlRequest::ListChildren { block_id: id, cursor: None },
                Target::Children { page: index, parent: None },
            );
        }
    }

    fn add_database(&mut self, database: Value, sources: Vec<String>) {
        let gone = is_trashed(&database);
        self.database = Some(database);
        if gone {
            self.end_as_gone();
            return;
        }
        // Reversed onto the stack so the first data source is queried first.
        for id in sources.into_iter().rev() {
            let request = CrawlRequest::QueryDataSource { id, cursor: None, created_from: None };
            self.push(request, Target::Rows { root: false });
        }
    }

    /// Queues the next page of the same list, on top: it runs before anything queued for the
    /// page just read (its cursor is used while fresh).
    fn push_continuation(&mut self, request: &CrawlRequest, list: &ListPage, into: Target) {
        let Some(next) = list.next_cursor.clone().filter(|_| list.has_more) else { return };
        let request = match request.clone() {
            CrawlRequest::ListChildren { block_id, .. } => {
                CrawlRequest::ListChildren { block_id, cursor: Some(next) }
            }
            CrawlRequest::QueryDataSource { id, created_from, .. } => {
                CrawlRequest::QueryDataSource { id, cursor: Some(next), created_from }
            }
            CrawlRequest::QueryDatabase { id, created_from, .. } => {
                CrawlRequest::QueryDatabase { id, cursor: Some(next), created_from }
            }
            CrawlRequest::RetrievePage { .. } | CrawlRequest::RetrieveDatabase { .. } => return,
        };
        self.push(request, into);
    }

    fn add_rows(&mut self, rows: Vec<Value>) {
        let mut expand = Vec::new();
        for row in rows {
            // A query can also return nested data sources ("page_or_data_source"); only pages
            // have content.
            if row.get("object").and_then(Value::as_str) != Some("page") {
                continue;
            }
            let id = object_id(&row).to_owned();
            if !self.seen_rows.insert(id_key(&id)) {
                continue;
            }
            let gone = is_trashed(&row);
            self.pages.push(PageState { page: row, gone });
            if !gone {
                expand.push((id, self.pages.len() - 1));
            }
        }
        for (block_id, page) in expand.into_iter().rev() {
            self.push(
                CrawlRequest::ListChildren { block_id, cursor: None },
                Target::Children { page, parent: None },
            );
        }
    }

    fn add_blocks(&mut self, page: usize, parent: Option<usize>, blocks: Vec<Value>) {
        let mut expand = Vec::new();
        for block in blocks {
            let node = self.nodes.len();
            let expanded = should_descend(&block);
            if expanded {
                expand.push((object_id(&block).to_owned(), node));
            }
            self.nodes.push(Node { page, parent, block, expanded, dropped: false });
        }
        // Reversed onto the stack: the first block's children are read first.
        for (block_id, node) in expand.into_iter().rev() {
            self.push(
                CrawlRequest::ListChildren { block_id, cursor: None },
                Target::Children { page, parent: Some(node) },
            );
        }
    }
}

/// Notion's reason for ending a query at its cap of 10,000 rows.
const QUERY_RESULT_LIMIT: &str = "query_result_limit_reached";

/// The query that reads on past a window Notion capped (`rows`: its last page, oldest first):
/// the same query for the rows created at or after the last one read. Rows created at that
/// same instant are returned again and skipped as already seen. `None` when that would not
/// move on: the window began at that instant already (more rows were created in it than one
/// query returns), or no row gives a time to go on from.
fn next_window(request: &CrawlRequest, rows: &[Value]) -> Option<CrawlRequest> {
    let created = |row: &Value| {
        let time = row.get("created_time")?.as_str()?;
        chrono::DateTime::parse_from_rfc3339(time).ok().map(|parsed| (parsed, time.to_owned()))
    };
    let (last, text) = rows.iter().filter_map(created).max_by_key(|(parsed, _)| *parsed)?;
    let (id, from) = match request {
        CrawlRequest::QueryDataSource { id, created_from, .. }
        | CrawlRequest::QueryDatabase { id, created_from, .. } => (id.clone(), created_from),
        _ => return None,
    };
    let start = from.as_deref().map(chrono::DateTime::parse_from_rfc3339);
    if matches!(start, Some(Ok(start)) if last <= start) {
        return None;
    }
    let created_from = Some(text);
    Some(match request {
        CrawlRequest::QueryDatabase { .. } => CrawlRequest::QueryDatabase { id, cursor: None, created_from },
        _ => CrawlRequest::QueryDataSource { id, cursor: None, created_from },
    })
}

/// `child_page` and `child_database` blocks have children, but those are another page's
/// content. An `unsupported` block (a type the API cannot show, such as AI meeting notes) may
/// say it has children, but Notion refuses to list them, and they would render as nothing.
fn should_descend(block: &Value) -> bool {
    let has_children = block.get("has_children").and_then(Value::as_bool).unwrap_or(false);
    let block_type = block.get("type").and_then(Value::as_str).unwrap_or("");
    has_children && !matches!(block_type, "child_page" | "child_database" | "unsupported")
}

/// Notion 2025-09-03 sends both `in_trash` and the deprecated `archived`; older answers only the latter.
fn is_trashed(object: &Value) -> bool {
    ["in_trash", "archived"].iter().any(|key| object.get(key).and_then(Value::as_bool) == Some(true))
}

/// Whether node `node` is `ancestor` or lies under it.
fn is_within(nodes: &[Node], mut node: usize, ancestor: usize) -> bool {
    loop {
        if node == ancestor {
            return true;
        }
        match nodes[node].parent {
            Some(parent) => node = parent,
            None => return false,
        }
    }
}

/// Only called on values `read_*` checked to have a string `id`.
fn object_id(value: &Value) -> &str {
    value.get("id").and_then(Value::as_str).unwrap_or_default()
}

/// Notion accepts both spellings of an id; compare them in one.
fn id_key(id: &str) -> String {
    id.chars().filter(|c| *c != '-').flat_map(char::to_lowercase).collect()
}

fn has_string_id(value: &Value) -> bool {
    value.get("id").and_then(Value::as_str).is_some_and(|id| !id.is_empty())
}

/// A page or database object, without the per-response `request_id`.
fn read_object(mut value: Value, object: &str) -> Result<Value, String> {
    let Some(map) = value.as_object_mut() else { return Err(format!("expected a {object} object")) };
    match map.get("object").and_then(Value::as_str) {
        Some(found) if found != object => return Err(format!("expected a {object} object, got `{found}`")),
        _ => {}
    }
    map.remove("request_id");
    if !has_string_id(&value) {
        return Err(format!("the {object} object has no id"));
    }
    Ok(value)
}

fn read_database(value: Value) -> Result<(Value, Vec<String>), String> {
    let database = read_object(value, "database")?;
    let Some(sources) = database.get("data_sources").and_then(Value::as_array) else {
        return Err("the database has no `data_sources`: is the client on Notion-Version 2025-09-03?".into());
    };
    let ids = sources
        .iter()
        .map(|source| source.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or("a data source has no id")?;
    Ok((database, ids))
}

/// A list whose items all have ids (the only field the crawl relies on).
fn read_list(value: Value, item: &str) -> Result<ListPage, String> {
    let list = ListPage::from_value(value).map_err(|e| match e {
        super::NotionError::MalformedResponse { detail, .. } => detail,
        other => other.to_string(),
    })?;
    if let Some(position) = list.results.iter().position(|v| !has_string_id(v)) {
        return Err(format!("{item} #{position} of the list has no id"));
    }
    Ok(list)
}
