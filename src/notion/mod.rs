//! The Notion REST client: pages, blocks, data sources, OAuth, errors. Depends on nothing internal.
//!
//! - [`error`]: [`NotionError`] and its `error_kind` / `is_retryable` / `retry_after` classes.

pub mod error;

pub use error::NotionError;
