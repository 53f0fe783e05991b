//! The wire format of a step job and the SQL that enqueues one inside our own transactions.
//!
//! apalis (driven from `workflow/`) consumes these rows; we insert them ourselves so that the
//! state change that causes a job and the job itself commit together, in one statement where
//! it matters (webhook intake). Each backend's `jobs` module has the SQL for its apalis storage.

use serde::{Deserialize, Serialize};

use crate::ids::RunId;

/// The queue (apalis `job_type`) every step job goes to. Fixed, so renaming a Rust type can
/// never orphan queued jobs.
pub const STEP_QUEUE: &str = "cognie_sync.steps";

/// "Run the current step of run `run_id`, if its dispatch sequence is still `seq`."
/// The job names no step: the run row says which step is current, so a job can never run the
/// wrong step after a deploy changes the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepJob {
    pub run_id: RunId,
    pub seq: i64,
}

impl StepJob {
    /// The job row's id (apalis expects a ULID) and payload (apalis's JSON codec: JSON bytes).
    pub fn encode(&self) -> (String, Vec<u8>) {
        let payload = serde_json::to_vec(self).expect("StepJob always serialises");
        (ulid::Ulid::new().to_string(), payload)
    }
}
