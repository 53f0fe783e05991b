-- The ops API at a million runs on SQLite, as PostgreSQL's `..._ops_at_scale.sql` does there
-- (measured with the sqlite3 shell on 1,000,000 runs and 2,500,000 step records).

-- GET /api/workflows with two filters: each filter alone had an index in the list's order
-- (newest first), but a rare combination read every run matching one filter to find the few
-- (or none) matching the other: 0.38 s for state=failed&step=persist and 0.41 s for
-- workflow=notion_sync&step=discover_users (which match nothing); under 1 ms with these.

-- state + step: one range.
create index workflow_runs_state_step_created_idx on workflow_runs (state, current_step, created_at desc, id desc);

-- workflow + step: one range. Unlike PostgreSQL's migration, the workflow-only index stays:
-- without it SQLite sorts a workflow filter's whole range (16-24 ms at 100,000 syncs) instead
-- of reading the newest first.
create index workflow_runs_workflow_step_created_idx on workflow_runs (workflow, current_step, created_at desc, id desc);

-- state + workflow: the state index with the workflow inside it, so the other workflow's runs
-- in that state are skipped without reading them from the table.
create index workflow_runs_state_created_workflow_idx on workflow_runs (state, created_at desc, id desc, workflow);
drop index workflow_runs_state_created_idx;

-- GET /api/queue/stats and every /metrics scrape count the step records by name and state:
-- 3.0 s reading the whole table at 2.5 million records, 0.3-0.5 s from this covering index.
-- The price: a step's state change also moves its entry in this index.
create index workflow_steps_name_state_idx on workflow_steps (name, state);
