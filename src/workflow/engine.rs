//! Executes one step attempt: claim it under a lease (fenced by the job's sequence number),
//! keep the lease alive while the step runs, classify the outcome, and record it together with
//! whatever comes next (next step, retry, wait, failure) in one transaction.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tracing::Instrument;

use super::steps::{self, StepError, StepOutcome};
use crate::store::{
    Store, StoreError,
    jobs::StepJob,
    pg::runs::{ClaimedStep, Fenced, StepFailure, Transition},
};

/// Engine settings (from the configuration).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub lease: Duration,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Attempts a step gets before its run fails.
    pub max_attempts: u32,
}

pub struct Engine {
    store: Store,
    settings: EngineSettings,
}

/// The order of steps in each workflow. Steps are identified by name, so a stored run always
/// resumes at the step it names.
fn next_step(workflow: &str, step: &str) -> Option<&'static str> {
    match (workflow, step) {
        ("notion_sync", "debounce") => Some("fetch"),
        ("notion_sync", "fetch") => Some("generate"),
        ("notion_sync", "generate") => Some("persist"),
        _ => None,
    }
}

impl Engine {
    pub fn new(store: Store, settings: EngineSettings) -> Arc<Self> {
        Arc::new(Self { store, settings })
    }

    /// Runs the current step of the job's run, if the job is still current.
    pub async fn execute(&self, job: StepJob, worker: &str) -> Result<(), StoreError> {
        let Some(claim) = self.store.claim_step(job, worker, self.settings.lease).await? else {
            tracing::debug!(run_id = %job.run_id, seq = job.seq, "stale step job skipped");
            return Ok(());
        };
        let span = tracing::info_span!(
            "step",
            run_id = %claim.run_id,
            workflow = %claim.workflow,
            step = %claim.step,
            attempt = claim.attempt,
            notion_id = claim.notion_id.as_deref().unwrap_or(""),
        );
        self.run_claimed(claim).instrument(span).await
    }

    async fn run_claimed(&self, claim: ClaimedStep) -> Result<(), StoreError> {
        let outcome = {
            let work = steps::run(&self.store, &claim);
            tokio::pin!(work);
            let mut beat = tokio::time::interval(self.settings.lease / 3);
            beat.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    _ = beat.tick() => {
                        match self.store.heartbeat(&claim, self.settings.lease).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!("lease lost (taken over or cancelled); abandoning the attempt");
                                return Ok(());
                            }
                            // A database hiccup: keep working; the lease may still hold.
                            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                        }
                    }
                }
            }
        };
        let transition = self.decide(&claim, outcome);
        match self.store.transition(&claim, &transition).await? {
            Fenced::Applied => {
                log_transition(&transition);
                Ok(())
            }
            Fenced::LeaseLost => {
                tracing::warn!("the step's lease was lost before its result was recorded; result discarded");
                Ok(())
            }
        }
    }

    /// Turns a step's outcome into the run's next state.
    fn decide(&self, claim: &ClaimedStep, outcome: Result<StepOutcome, StepError>) -> Transition {
        match outcome {
            Ok(StepOutcome::Done { output }) => match next_step(&claim.workflow, &claim.step) {
                Some(next) => Transition::Advance { output, next_step: next.to_owned() },
                None => Transition::Succeed { output },
            },
            Ok(StepOutcome::Finish { output }) => Transition::Succeed { output },
            Err(StepError::Fatal { kind, message }) => {
                Transition::Fail { failure: StepFailure { kind, message } }
            }
            Err(StepError::Retryable { kind, message, retry_after }) => {
                let failure = StepFailure { kind, message };
                if claim.attempt as u32 >= self.settings.max_attempts {
                    return Transition::Fail { failure };
                }
                let delay =
                    retry_after.unwrap_or_else(|| self.backoff(claim.attempt as u32)).max(Duration::ZERO);
                Transition::Wait {
                    at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    error: Some(failure),
                    output: None,
                }
            }
        }
    }

    /// Exponential backoff with jitter: between half and all of base × 2^(attempt-1), capped, so
    /// retries of many runs that failed together spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp =
            self.settings.retry_base_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let cap = exp.min(self.settings.retry_max_delay);
        cap.mul_f64(0.5 + 0.5 * jitter())
    }
}

/// A number in [0, 1) from the OS's random source.
fn jitter() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

fn log_transition(transition: &Transition) {
    match transition {
        Transition::Advance { next_step, .. } => tracing::debug!(next_step = %next_step, "step succeeded"),
        Transition::Succeed { .. } => tracing::info!("run succeeded"),
        Transition::Wait { at, error: Some(e), .. } => {
            tracing::warn!(error_kind = %e.kind, error = %e.message, retry_at = %at, "step failed; retry scheduled")
        }
        Transition::Wait { at, error: None, .. } => tracing::debug!(until = %at, "step waiting"),
        Transition::Fail { failure } => {
            tracing::error!(error_kind = %failure.kind, error = %failure.message, "run failed")
        }
    }
}
