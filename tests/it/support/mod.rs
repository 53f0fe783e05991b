//! Test harness: a fresh database per test, the real app on a random port, fixtures, and
//! helpers that wait on conditions with a deadline.

pub mod app;
pub mod db;
pub mod fake_notion;
pub mod fake_openai;
pub mod fixtures;
pub mod process;
pub mod proxy;

use std::{future::Future, time::Duration};

pub use app::TestApp;

/// The step named `name` in a run as `GET /api/workflows/{id}` shows it.
pub fn run_step(run: &serde_json::Value, name: &str) -> serde_json::Value {
    let steps = run["steps"].as_array().expect("steps");
    steps.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name} step: {run}")).clone()
}

/// Polls `check` until it returns `Some`, or panics after `deadline` saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
