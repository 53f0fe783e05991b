-- What ops need: a record of every action taken on a run through the API, and indexes for
-- every filter of GET /api/workflows (each ends in the list's order, newest first).

-- Who did what to a run, and when (retry, cancel, bulk retry).
create table workflow_run_actions (
    id        bigint generated always as identity primary key,
    run_id    uuid not null references workflow_runs (id) on delete cascade,
    action    text not null check (action in ('retry', 'cancel')),
    actor     text not null,
    detail    jsonb,
    at        timestamptz not null default now()
);

create index workflow_run_actions_run_idx on workflow_run_actions (run_id, at);

create index workflow_runs_user_created_idx on workflow_runs (user_id, created_at desc, id desc);
create index workflow_runs_notion_created_idx on workflow_runs (notion_id, created_at desc, id desc);
create index workflow_runs_workflow_created_idx on workflow_runs (workflow, created_at desc, id desc);
create index workflow_runs_step_created_idx on workflow_runs (current_step, created_at desc, id desc);
-- Queue stats: the oldest run still waiting to start.
create index workflow_runs_pending_since_idx on workflow_runs (created_at) where state = 'pending';

-- Every claim of a step (one attempt, or a resumption after a wait), with the worker that
-- made it and how it ended. A claim whose worker died stays unfinished. Keyed by the claim's
-- lease token, which is unique per claim.
create table workflow_step_attempts (
    lease_token uuid primary key,
    run_id      uuid not null references workflow_runs (id) on delete cascade,
    step        text not null,
    worker      text not null,
    started_at  timestamptz not null default now(),
    finished_at timestamptz,
    -- succeeded | waiting | retrying | failed
    outcome     text,
    error_kind  text,
    error       text
);

create index workflow_step_attempts_run_idx on workflow_step_attempts (run_id, started_at);
