//! cognie-sync keeps Cognie flashcards in step with Notion notes.
//!
//! Read in this order: [`app`] (how the pieces are wired), [`http`] (the API), [`webhook`]
//! (verified, durable intake), [`workflow`] (the durable engine), [`store`] (all SQL).
//! Dependencies point one way: `http → webhook/workflow → store`.

pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod flashcards;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod notion;
pub mod ratelimit;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod webhook;
pub mod workflow;

pub use app::{App, Role};
pub use config::Config;
