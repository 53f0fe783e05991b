//! The durable workflow engine. Runs and steps live in our tables (see `store::pg::runs`);
//! apalis only delivers "run the current step of run R" jobs. This module is the only place
//! that names apalis.

pub mod definition;
pub mod engine;
pub mod queue;
pub mod reconcile;
pub mod retention;
pub mod steps;
pub mod sweeper;
pub mod wake;

pub use engine::Engine;
