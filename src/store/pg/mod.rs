//! PostgreSQL SQL, one module per concern. Lowercase SQL in raw strings; functions take an
//! executor or a pool so callers can compose transactions.

pub mod events;
pub mod flashcards;
pub mod keys;
pub mod oauth;
pub mod ops;
pub mod ratelimit;
pub mod reconcile;
pub mod retention;
pub mod runs;
pub mod sync;
pub mod users;
