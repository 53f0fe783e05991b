//! Executes one step attempt: claim it under a lease (fenced by the job's sequence number),
//! keep the lease alive while the step runs, classify the outcome, and record it together with
//! whatever comes next (next step, retry, wait, failure) in one fenced transaction.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use chrono::Utc;
use futures::FutureExt;
use tracing::Instrument;

use super::{
    definition::{Definitions, StepPolicy},
    steps::{self, StepDeps, StepError, StepOutcome},
};
use crate::store::{
    ClaimedStep, Continued, Fenced, StepFailure, StoreError, StoreTx, Transition, jobs::StepJob,
};

const LEASE_LOST: &str = "the step's lease was lost before its result was recorded; result discarded";

/// Engine settings (from the configuration).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub lease: Duration,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

pub struct Engine {
    deps: StepDeps,
    definitions: Definitions,
    settings: EngineSettings,
    /// Whether a step runs inside its outcome's transaction (see [`steps::transactional_steps`]).
    transactional: fn(&str) -> bool,
    /// Set when shutdown is about to run out of time: a step still calling out gives its
    /// attempt up (see [`Engine::release_external_steps`]).
    release: tokio::sync::watch::Sender<bool>,
}

/// How a step attempt ended, as recorded: its outcome (`None`: undone, so not recorded at
/// all; see [`Redo::Again`]), and the step this worker claimed on in the same transaction
/// (which may still be open: see [`Next`]).
type Recorded = (Option<&'static str>, Option<Next>);

/// A step that this worker has claimed and goes on with: the run's next step, or the first
/// step of a run that the previous step started (a handoff, see [`StoreTx::offer_handoff`]).
struct Next {
    claim: ClaimedStep,
    /// The claim's transaction, when it is still open: the step runs inside it if it only
    /// touches the database.
    open: Option<OpenClaim>,
}

/// A claim whose transaction is still open, and how to claim the step again if that
/// transaction must be undone because the step run in it failed.
struct OpenClaim {
    tx: StoreTx,
    redo: Redo,
}

enum Redo {
    /// The transaction claimed the step for this job: claim it again with the job. `handoff`:
    /// whether a sync the step starts may be handed to this worker (see [`Engine::commit`]).
    Claim { job: StepJob, handoff: bool },
    /// The transaction also holds the run that handed this one off: the claim of its step by
    /// this job, the step's effects (this run's creation among them) and its outcome. Undo all
    /// and run that job again, without a handoff this time, so this run is started again
    /// with a job of its own and its failure is recorded the usual way.
    Again(StepJob),
    /// The transaction recorded the outcomes of the steps before this one in the run, each
    /// claiming the next step on (a chain: see [`Engine::commit`]): get the first of those
    /// claims back and record each outcome again, in its own transaction. Only outcomes are
    /// recorded again, so a chain only goes on from a step that writes nothing else
    /// ([`steps::writes_only_its_outcome`]).
    Record { start: ChainStart, transitions: Vec<Transition> },
}

/// Where a chain of steps recorded in one transaction began.
enum ChainStart {
    /// With a claim committed before the transaction.
    Committed(Box<ClaimedStep>),
    /// With the claim of this job, made in the transaction.
    Claim(StepJob),
}

/// Whether a transaction may go on with the run's next step when that step only touches the
/// database (see [`Engine::commit`]), and how to redo what it holds before the outcome it is
/// about to record if that next step fails.
enum Chain {
    /// It may not: it commits with the outcome.
    No,
    /// It may; it holds nothing to redo but the outcome: the claim being recorded was
    /// committed before (and a step that ran in the transaction wrote nothing else, or the
    /// chain does not go on: see [`Redo::Record`]).
    Committed,
    /// It may (unless it holds a handoff); it holds more, redone this way.
    Open(Redo),
}

impl Engine {
    pub fn new(deps: StepDeps, definitions: Definitions, settings: EngineSettings) -> Arc<Self> {
        let transactional = steps::transactional_steps(&deps.generator);
        Arc::new(Self {
            deps,
            definitions,
            settings,
            transactional,
            release: tokio::sync::watch::Sender::new(false),
        })
    }

    /// From now on, a finished step hands the run's next step to the queue instead of running
    /// it in the same worker, and a crawl checkpoints after its request in flight (graceful
    /// shutdown: stop taking work, hand over what is under way).
    pub fn stop_continuing(&self) {
        self.deps.winding_down.store(true, Ordering::SeqCst);
    }

    /// Whether a worker that finishes a step goes on with the run's next step itself: until
    /// shutdown begins ([`StepDeps::winding_down`]).
    fn continuing(&self) -> bool {
        !self.deps.winding_down.load(Ordering::SeqCst)
    }

    /// Graceful shutdown is running out of time: every step still calling out (a fetch waiting
    /// on Notion, an external generation) stops and releases its run, recorded as a wait due
    /// at once that spends no attempt. Another worker takes it over as soon as it is queued,
    /// instead of after this worker's lease expires, and the attempt cut short does not count
    /// towards the step's failures. Steps that only touch the database are short; they finish.
    pub fn release_external_steps(&self) {
        self.release.send_replace(true);
    }

    /// How long a job that failed on an unexpected database error waits before it is tried
    /// again (`RETRY_MAX_DELAY_MS`).
    pub fn retry_max_delay(&self) -> Duration {
        self.settings.retry_max_delay
    }

    /// Delivers a job again after it failed on an unexpected database error (not an outage:
    /// those are retried in place). If its claim did not commit, nothing else would ever run
    /// the run's step again; if it did, the repeat is fenced (a stale or still-leased run is
    /// not claimed). A persistent error is retried after `RETRY_MAX_DELAY_MS` each time, with
    /// an error logged, until the run is cancelled (which makes the job stale).
    pub async fn redeliver(&self, job: StepJob) -> Result<Duration, StoreError> {
        let delay = self.settings.retry_max_delay;
        self.deps.store.redeliver(job, delay).await?;
        self.deps.metrics.step_job_redelivered();
        Ok(delay)
    }

    /// Runs the current step of the job's run, if the job is still current, and then the
    /// run's next steps for as long as each one succeeds: a step's success claims the next
    /// step for this worker in the transaction that records it, so a run does not go back
    /// through the queue between steps (it does for waits, retries and at shutdown).
    ///
    /// The claim is made in a transaction that stays open: a step that only touches the
    /// database runs and is recorded in it (one commit for claim, step and outcome); for any
    /// other step it commits at once.
    pub async fn execute(&self, job: StepJob, worker: &str) -> Result<(), StoreError> {
        let claimed =
            self.deps.store.claim_and_begin(job, worker, self.settings.lease, self.transactional).await?;
        let Some((claim, tx)) = claimed else {
            tracing::debug!(run_id = %job.run_id, seq = job.seq, "stale step job skipped");
            return Ok(());
        };
        let redo = Redo::Claim { job, handoff: true };
        let mut next = Some(Next { claim, open: Some(OpenClaim { tx, redo }) });
        while let Some(Next { claim, open }) = next.take() {
            let span = tracing::info_span!(
                "step",
                run_id = %claim.run_id,
                workflow = %claim.workflow,
                step = %claim.step,
                attempt = claim.attempt,
                user_id = claim.user_id.map(|u| u.to_string()).unwrap_or_default(),
                notion_id = claim.notion_id.as_deref().unwrap_or(""),
            );
            next = self.run_claimed(claim, open, worker).instrument(span).await?;
        }
        Ok(())
    }

    async fn run_claimed(
        &self,
        claim: ClaimedStep,
        open: Option<OpenClaim>,
        worker: &str,
    ) -> Result<Option<Next>, StoreError> {
        let started = std::time::Instant::now();
        let Some((outcome, next)) = self.run_policed(claim.clone(), open, worker).await? else {
            return Ok(None);
        };
        if let Some(outcome) = outcome {
            self.deps.metrics.step_finished(&claim.step, outcome, started.elapsed().as_secs_f64());
        }
        Ok(next)
    }

    /// Runs the claimed step under its policy. `Some(..)`: how the attempt ended, as
    /// recorded; `None`: the lease was lost and nothing was recorded.
    async fn run_policed(
        &self,
        claim: ClaimedStep,
        open: Option<OpenClaim>,
        worker: &str,
    ) -> Result<Option<Recorded>, StoreError> {
        let policy = self.definitions.policy(&claim.step);
        if claim.attempt as u32 > policy.max_attempts {
            // Only lease takeovers get here (a worker died mid-step, again and again).
            let failure = StepFailure {
                kind: "attempts_exhausted".into(),
                message: format!("the step was started {} times without finishing", claim.attempt - 1),
            };
            let transition = Transition::Fail { failure };
            return match open {
                Some(open) => self.commit(open.tx, &claim, transition, worker, Chain::No, None).await,
                None => self.record(&claim, transition, worker).await,
            };
        }
        if (self.transactional)(&claim.step) {
            return self.run_transactional(claim, policy, open, worker).await;
        }
        // The step runs outside any transaction: its claim commits on its own first.
        if let Some(open) = open {
            open.tx.commit_without_jobs().await?;
        }
        let Some(outcome) = self.run_external(&claim, &policy).await else { return Ok(None) };
        let transition = self.decide(&claim, &policy, outcome);
        self.record(&claim, transition, worker).await
    }

    /// A step whose effects commit with its transition, under the run's row lock: in the
    /// claim's own transaction when it is still open, else in a fenced one.
    async fn run_transactional(
        &self,
        claim: ClaimedStep,
        policy: StepPolicy,
        open: Option<OpenClaim>,
        worker: &str,
    ) -> Result<Option<Recorded>, StoreError> {
        let (mut tx, redo) = match open {
            Some(OpenClaim { tx, redo }) => (tx, Some(redo)),
            None => match self.deps.store.begin_fenced(&claim).await? {
                Some(tx) => (tx, None),
                None => {
                    tracing::warn!("lease lost before the step started");
                    return Ok(None);
                }
            },
        };
        // A sync this step starts that is due at once may be claimed by this worker in this
        // transaction, when the transaction can be undone and redone whole (it holds the claim).
        let handoff = match &redo {
            Some(Redo::Claim { job, handoff: true }) if self.continuing() => {
                tx.offer_handoff();
                Some(*job)
            }
            _ => None,
        };
        let work = AssertUnwindSafe(steps::run_in_tx(&mut tx, &claim, &self.deps)).catch_unwind();
        let outcome = match tokio::time::timeout(policy.timeout, work).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_panic)) => Err(StepError::retryable("step_panicked", "the step panicked; see the log")),
            Err(_) => Err(StepError::retryable(
                "step_timeout",
                format!("the step took longer than {:?}", policy.timeout),
            )),
        };
        let transition = self.decide(&claim, &policy, outcome);
        if matches!(transition, Transition::Wait { error: Some(_), .. } | Transition::Fail { .. }) {
            // A failure: undo the step's partial writes and record it in a transaction of its own.
            drop(tx);
            // When the claim was made in that transaction, it was undone with them: claim the
            // step again, on its own, to record the failure under (first recording again the
            // outcomes of the steps before it that the transaction recorded). Nobody else can
            // have taken it meanwhile: the run is unchanged and this worker holds its job or
            // lease (unless that lease expired during a long chain: then the step runs again).
            let again = match redo {
                None => return self.record(&claim, transition, worker).await,
                Some(Redo::Claim { job, .. }) => {
                    self.deps.store.claim_step(job, worker, self.settings.lease).await?
                }
                Some(Redo::Again(job)) => return self.undo_handoff(job, &transition, worker).await,
                Some(Redo::Record { start, transitions }) => {
                    self.record_again(start, transitions, worker).await?
                }
            };
            let Some(again) = again else {
                tracing::warn!(
                    "the step could not be claimed again to record its failure; it will run again"
                );
                return Ok(None);
            };
            return self.record(&again, transition, worker).await;
        }
        let chain = match redo {
            Some(redo) => Chain::Open(redo),
            None => Chain::Committed,
        };
        self.commit(tx, &claim, transition, worker, chain, handoff).await
    }

    /// Records again, each in its own transaction, the outcomes of a chain of steps whose
    /// transaction was undone (see [`Redo::Record`]), and returns the claim the last one made:
    /// the step whose failure undid them. `None`: the chain's claims are gone (the run was
    /// cancelled or taken over meanwhile), or the worker is shutting down (an outcome then
    /// queues the next step instead of claiming it); either way the step will run again.
    async fn record_again(
        &self,
        start: ChainStart,
        transitions: Vec<Transition>,
        worker: &str,
    ) -> Result<Option<ClaimedStep>, StoreError> {
        let mut claim = match start {
            ChainStart::Committed(claim) => *claim,
            ChainStart::Claim(job) => {
                let Some(claim) = self.deps.store.claim_step(job, worker, self.settings.lease).await? else {
                    return Ok(None);
                };
                claim
            }
        };
        for transition in transitions {
            match self.record_with(&claim, transition, worker, Chain::No).await? {
                Some((_, Some(next))) => claim = next.claim,
                _ => return Ok(None),
            }
        }
        Ok(Some(claim))
    }

    /// A handed-off run's step failed in the transaction that also holds the run that started
    /// it (see [`Redo::Again`]): that transaction is gone; claim the job of the starting run
    /// again and go on with it, without a handoff.
    async fn undo_handoff(
        &self,
        job: StepJob,
        transition: &Transition,
        worker: &str,
    ) -> Result<Option<Recorded>, StoreError> {
        let failure = match transition {
            Transition::Wait { error: Some(f), .. } | Transition::Fail { failure: f } => f.message.as_str(),
            _ => "",
        };
        tracing::warn!(
            error = failure,
            "a run handed to this worker failed its first step; the run that started it runs again, queueing it instead"
        );
        let claimed =
            self.deps.store.claim_and_begin(job, worker, self.settings.lease, self.transactional).await?;
        let Some((claim, tx)) = claimed else { return Ok(None) };
        let redo = Redo::Claim { job, handoff: false };
        Ok(Some((None, Some(Next { claim, open: Some(OpenClaim { tx, redo }) }))))
    }

    /// A step that calls out: no transaction is held; the lease is kept alive by heartbeats.
    /// `None`: the lease was lost, so the outcome no longer matters.
    async fn run_external(
        &self,
        claim: &ClaimedStep,
        policy: &StepPolicy,
    ) -> Option<Result<StepOutcome, StepError>> {
        let work = AssertUnwindSafe(steps::run(claim, &self.deps)).catch_unwind();
        let work = tokio::time::timeout(policy.timeout, work);
        tokio::pin!(work);
        // Polled beside the step, never instead of it: a heartbeat waits for the run's row
        // lock while the step holds it (a fenced write of its own), and the step must go on
        // to commit and release it.
        let heartbeats = async {
            let mut beat = tokio::time::interval(self.settings.lease / 3);
            // One heartbeat after one that waited (for the step's own row lock), not a burst.
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat.tick().await;
            loop {
                beat.tick().await;
                match self.deps.store.heartbeat(claim, self.settings.lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    // A database hiccup: keep working; the lease may well still hold.
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        };
        tokio::pin!(heartbeats);
        let mut release = self.release.subscribe();
        tokio::select! {
            // A step that has finished is recorded as such, whatever else is ready.
            biased;
            result = &mut work => Some(match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_panic)) => Err(StepError::retryable("step_panicked", "the step panicked; see the log")),
                Err(_) => Err(StepError::retryable("step_timeout", format!("the step took longer than {:?}", policy.timeout))),
            }),
            () = &mut heartbeats => {
                tracing::warn!("lease lost (taken over or cancelled); abandoning the attempt");
                None
            }
            true = released(&mut release) => {
                tracing::info!("shutting down: the step is released to another worker (no attempt spent)");
                Some(Ok(StepOutcome::Wait { until: Utc::now(), progress: None }))
            }
        }
    }

    /// Records a transition in a fenced transaction of its own.
    async fn record(
        &self,
        claim: &ClaimedStep,
        transition: Transition,
        worker: &str,
    ) -> Result<Option<Recorded>, StoreError> {
        self.record_with(claim, transition, worker, Chain::Committed).await
    }

    /// [`Engine::record`]; `chain`: see [`Engine::commit`].
    async fn record_with(
        &self,
        claim: &ClaimedStep,
        transition: Transition,
        worker: &str,
        chain: Chain,
    ) -> Result<Option<Recorded>, StoreError> {
        let Some(tx) = self.deps.store.begin_record(claim).await? else {
            tracing::warn!("{LEASE_LOST}");
            return Ok(None);
        };
        self.commit(tx, claim, transition, worker, chain, None).await
    }

    /// Applies the transition and its consequences on the transaction, and commits. `None`:
    /// the claim had lost its lease, so nothing is recorded (the transaction is rolled back).
    /// A step that succeeded with another step after it claims that step for this worker in
    /// the same transaction (unless the worker is shutting down), returned as the next claim.
    /// When `chain` allows and that next step only touches the database, the transaction is
    /// not committed here but handed on with the claim: the next step runs in it, and both
    /// outcomes commit together (one commit instead of two; a chain may go on, e.g. fetch's
    /// outcome, generate and persist in one). If a chained step fails, the whole transaction
    /// is undone and its earlier outcomes are recorded again ([`Redo::Record`]).
    ///
    /// `handoff`: the job whose claim this transaction holds, when its step was offered a
    /// handoff ([`StoreTx::offer_handoff`]). When the run succeeded and its step started a
    /// sync that is due now, this worker claims that sync here and goes on with it, in this
    /// transaction too when its first step only touches the database: the sync never goes
    /// through the queue (no job to insert, fetch and acknowledge, no claim of its own).
    async fn commit(
        &self,
        mut tx: StoreTx,
        claim: &ClaimedStep,
        transition: Transition,
        worker: &str,
        chain: Chain,
        handoff: Option<StepJob>,
    ) -> Result<Option<Recorded>, StoreError> {
        let next_in_tx = steps::writes_only_its_outcome(&claim.step)
            && matches!(&transition, Transition::Advance { next_step, .. } if (self.transactional)(next_step));
        // How to redo this transaction if the chained step fails: record this outcome again
        // (kept here) after whatever the transaction held before it.
        let redo = match chain {
            _ if !next_in_tx => None,
            Chain::No | Chain::Open(Redo::Again(_)) => None,
            Chain::Committed => Some((ChainStart::Committed(Box::new(claim.clone())), Vec::new())),
            Chain::Open(Redo::Claim { job, .. }) => Some((ChainStart::Claim(job), Vec::new())),
            Chain::Open(Redo::Record { start, transitions }) => Some((start, transitions)),
        }
        .map(|(start, mut transitions)| {
            transitions.push(transition.clone());
            Redo::Record { start, transitions }
        });
        let (transition, next) = self.continuation(claim, transition, worker);
        let label = Some(transition.outcome_label());
        let next = match (next, redo) {
            (Some(mut next), Some(redo)) => {
                // The next step runs in this transaction: its transition writes this success too.
                match tx.continue_in_tx(claim, &transition).await? {
                    Continued::LeaseLost => {
                        tracing::warn!("{LEASE_LOST}");
                        return Ok(None);
                    }
                    Continued::Deferred => next.unwritten = Some(worker.to_owned()),
                    Continued::Written => {}
                }
                // Logged now: it commits with the next step's outcome.
                log_transition(&transition);
                return Ok(Some((label, Some(Next { claim: next, open: Some(OpenClaim { tx, redo }) }))));
            }
            (next, _) => next,
        };
        if tx.apply_transition(claim, &transition).await? == Fenced::LeaseLost {
            tracing::warn!("{LEASE_LOST}");
            return Ok(None);
        }
        let Some(next) = next else {
            let Some((handed, origin)) = self.claim_handoff(&mut tx, &transition, worker, handoff).await?
            else {
                tx.commit().await?;
                log_transition(&transition);
                if let Transition::Succeed { output } = &transition {
                    steps::log_success(claim, output);
                }
                return Ok(Some((label, None)));
            };
            log_transition(&transition);
            if (self.transactional)(&handed.step) {
                let open = OpenClaim { tx, redo: Redo::Again(origin) };
                return Ok(Some((label, Some(Next { claim: handed, open: Some(open) }))));
            }
            tx.commit().await?;
            return Ok(Some((label, Some(Next { claim: handed, open: None }))));
        };
        // The run went on with this worker; no step in this workflow enqueues jobs of its own
        // when it is followed by another (discover_users and persist are last).
        tx.commit_without_jobs().await?;
        log_transition(&transition);
        Ok(Some((label, Some(Next { claim: next, open: None }))))
    }

    /// Claims the sync handed off in `tx` (see [`Engine::commit`]) for this worker, once the
    /// run that started it has succeeded, with the job to redo if its first step fails. A
    /// handoff not claimed is enqueued instead.
    async fn claim_handoff(
        &self,
        tx: &mut StoreTx,
        transition: &Transition,
        worker: &str,
        origin: Option<StepJob>,
    ) -> Result<Option<(ClaimedStep, StepJob)>, StoreError> {
        let Some(handed) = tx.take_handoff() else { return Ok(None) };
        let claimed = match origin {
            Some(origin) if matches!(transition, Transition::Succeed { .. }) && self.continuing() => {
                let lease = self.settings.lease;
                tx.claim_handed_off(&handed, worker, lease, self.transactional)
                    .await?
                    .map(|claim| (claim, origin))
            }
            _ => None,
        };
        if claimed.is_none() {
            tx.enqueue(handed.job(), Duration::ZERO).await?;
        }
        Ok(claimed)
    }

    /// `Advance` becomes `Continue` (with the next step's claim) while the engine continues.
    fn continuation(
        &self,
        claim: &ClaimedStep,
        transition: Transition,
        worker: &str,
    ) -> (Transition, Option<ClaimedStep>) {
        match transition {
            Transition::Advance { output, next_step } if self.continuing() => {
                // The next step runs with this step's output in hand, and with its own known
                // to be empty: a run only moves forward, so it has not run in this run before
                // (a retry resumes at the failed step itself, through the queue).
                let known_outputs =
                    claim.known_outputs.with(&claim.step, Some(output.clone())).with(&next_step, None);
                let next = ClaimedStep {
                    step: next_step.clone(),
                    attempt: 1,
                    lease_token: uuid::Uuid::new_v4(),
                    known_outputs,
                    // Written by the transition that continues into it.
                    unwritten: None,
                    ..claim.clone()
                };
                let transition = Transition::Continue {
                    output,
                    next_step,
                    owner: worker.to_owned(),
                    lease_token: next.lease_token,
                    lease: self.settings.lease,
                };
                (transition, Some(next))
            }
            other => (other, None),
        }
    }

    /// Turns a step's outcome into the run's next state.
    fn decide(
        &self,
        claim: &ClaimedStep,
        policy: &StepPolicy,
        outcome: Result<StepOutcome, StepError>,
    ) -> Transition {
        match outcome {
            Ok(StepOutcome::Done { output }) => {
                match self.definitions.next_step(&claim.workflow, &claim.step) {
                    Some(next) => Transition::Advance { output, next_step: next.to_owned() },
                    None => Transition::Succeed { output },
                }
            }
            Ok(StepOutcome::Finish { output }) => Transition::Succeed { output },
            Ok(StepOutcome::Wait { until, progress }) => Transition::Wait {
                at: until,
                error: None,
                progressed: progress.as_ref().is_some_and(|p| p.advanced),
                output: progress.map(|p| p.saved),
                spend_attempt: false,
            },
            Err(StepError::Fatal { kind, message }) => {
                Transition::Fail { failure: StepFailure { kind, message } }
            }
            Err(StepError::Retryable { kind, message, retry_after, progress }) => {
                let failure = StepFailure { kind, message };
                // The attempts count failures since the step last made progress (see
                // [`steps::Progress`]): one that made some is the first of a new count.
                let progressed = progress.as_ref().is_some_and(|p| p.advanced);
                let failures = if progressed { 1 } else { claim.attempt as u32 };
                if failures >= policy.max_attempts {
                    return Transition::Fail { failure };
                }
                let delay = retry_delay(retry_after, self.backoff(failures));
                Transition::Wait {
                    at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    error: Some(failure),
                    output: progress.map(|p| p.saved),
                    spend_attempt: true,
                    progressed,
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff(self.settings.retry_base_delay, self.settings.retry_max_delay, attempt, jitter())
    }
}

/// Exponential backoff with jitter: between half and all of base × 2^(attempt-1), capped at
/// `max`, so the retries of many runs that failed together spread out. `jitter` in [0, 1).
fn backoff(base: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    exp.min(max).mul_f64(0.5 + 0.5 * jitter)
}

/// How long a failed attempt waits: never less than a server's Retry-After asked, nor than
/// our backoff, so a server that keeps answering "retry after 1 s" is still asked less and less
/// often, at jittered times.
fn retry_delay(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    retry_after.map_or(backoff, |asked| asked.max(backoff))
}

/// Resolves once the engine's release is set (`true`; `false` only if the engine were gone,
/// which cannot happen while a step runs: the engine owns the sender).
async fn released(release: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    release.wait_for(|released| *released).await.is_ok()
}

/// A number in [0, 1) from the OS's random source.
fn jitter() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

fn log_transition(transition: &Transition) {
    match transition {
        Transition::Advance { next_step, .. } | Transition::Continue { next_step, .. } => {
            tracing::debug!(next_step = %next_step, "step succeeded")
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_between_half_and_all_and_stops_at_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (30, 1000)] {
            let full = Duration::from_millis(full);
            assert_eq!(backoff(base, max, attempt, 0.0), full / 2, "attempt {attempt}, least jitter");
            let most = backoff(base, max, attempt, 0.999_999);
            assert!(
                most <= full && most > full.mul_f64(0.999),
                "attempt {attempt}: {most:?} against {full:?}"
            );
        }
        assert_eq!(backoff(base, max, u32::MAX, 0.0), max / 2, "no overflow");
    }

    #[test]
    fn a_retry_waits_for_the_longer_of_retry_after_and_the_backoff() {
        let secs = Duration::from_secs;
        assert_eq!(retry_delay(None, secs(4)), secs(4));
        assert_eq!(
            retry_delay(Some(secs(1)), secs(4)),
            secs(4),
            "a short Retry-After does not cut the backoff"
        );
        assert_eq!(retry_delay(Some(secs(17)), secs(4)), secs(17), "never sooner than the server asked");
    }

    #[test]
    fn jitter_stays_in_its_range() {
        assert!((0..1000).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
    }
}
