//! The Notion REST client: pages, blocks, data sources, OAuth, errors. Depends on nothing internal.
//!
//! - [`client`]: [`NotionClient`], one method per endpoint, each exactly one HTTP request (the
//!   caller rate-limits and retries);
//! - [`crawl`]: [`Crawl`], the pure, resumable walk of a page or database that says which request
//!   to make next and assembles the answers into [`FetchedContent`];
//! - [`error`]: [`NotionError`] and its `error_kind` / `is_retryable` / `retry_after` classes;
//! - [`oauth`]: the OAuth code exchange and [`OAuthToken`].
//!
//! Ids are taken as `&str` and used as given: Notion accepts them with or without dashes.

pub mod client;
pub mod crawl;
pub mod error;
pub mod oauth;

pub use client::{
    DEFAULT_BASE_URL, DEFAULT_NOTION_VERSION, LEGACY_NOTION_VERSION, ListPage, NotionClient,
    NotionClientConfig, PAGE_SIZE,
};
pub use crawl::{ApiFlavor, Crawl, CrawlError, CrawlRequest, FetchedContent, FetchedPage, Restart};
pub use error::NotionError;
pub use oauth::{OAuthToken, RefreshedToken};
