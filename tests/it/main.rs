//! The one integration-test binary: the real server on port 0, a fresh PostgreSQL database per
//! test, real HTTP and real signatures.

mod support;

mod chaos;
mod db_outage;
mod flashcards_generation;
mod http_contract;
mod notion_client;
mod notion_faults;
mod oauth_and_reconcile;
mod openapi;
mod ops_api;
mod processes;
mod queue;
mod sync_flow;
mod users_api;
mod webhook_intake;
mod workflow_engine;
mod workflow_pickup;
