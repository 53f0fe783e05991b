//! The one integration-test binary: the real server on port 0, a fresh database per test
//! (SQLite always; PostgreSQL too when `TEST_DATABASE_URL` is set), real HTTP and real signatures.

mod support;

mod chaos;
mod db_outage;
mod embedded;
mod flashcards_generation;
mod http_contract;
mod key_rotation;
mod notion_client;
mod notion_faults;
mod oauth_and_reconcile;
mod openapi;
mod ops_api;
mod processes;
mod queue;
mod rate_limit;
mod sync_flow;
mod tls;
mod users_api;
mod webhook_intake;
mod workflow_engine;
mod workflow_pickup;
