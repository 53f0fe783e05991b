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
