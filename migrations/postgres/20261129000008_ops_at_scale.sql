-- The ops API at a million runs (measured with `just bench-ops`; see the README's Benchmarks).

-- GET /api/queue/stats (and /metrics) counted every step record by name and state, reading the
-- whole table (0.5 s at 2.3 million step rows). Now only the records that are not `succeeded`
-- are counted exactly, from this index (they are few: in flight, failed, cancelled), and the
-- succeeded ones are estimated from the table's statistics on large tables (Store::queue_stats).
-- Runs need no index of their own for it: the state indexes below serve the exact counts of
-- their states other than succeeded. The price: a step's state is now indexed, so changing it
-- is no longer a HOT update (runs' state changes never were: state was indexed already).
create index workflow_steps_not_succeeded_idx on workflow_steps (name, state) where state <> 'succeeded';

-- GET /api/workflows with several filters. Each filter alone had an index in the list's order
-- (newest first), but a rare combination read every run matching one filter to find the few
-- (or none) matching the other: 15-100 ms at a million runs for state + step or state +
-- workflow, and 3.6 s for workflow=notion_sync&step=discover_users (which matches nothing).

-- state + step: one range.
create index workflow_runs_state_step_created_idx on workflow_runs (state, current_step, created_at desc, id desc);

-- workflow + step: one range. It replaces the workflow-only index: each workflow is a large
-- share of the runs, so a workflow filter alone reads the newest-first index and skips the
-- other workflow's runs (a few per page).
create index workflow_runs_workflow_step_created_idx on workflow_runs (workflow, current_step, created_at desc, id desc);
drop index workflow_runs_workflow_created_idx;

-- state + workflow: the same state index, with the workflow checked inside the index, so the
-- other workflow's runs in that state are skipped without reading them from the table.
create index workflow_runs_state_created_workflow_idx on workflow_runs (state, created_at desc, id desc, workflow);
drop index workflow_runs_state_created_idx;

-- The step determines the workflow, and runs in some states are mostly at some steps: without
-- this the planner multiplies the selectivities as if independent (e.g. 164 runs expected for
-- state=waiting&step=debounce, 1,638 there) and picks bad plans for combined filters.
create statistics workflow_runs_state_step_workflow_stats (mcv) on state, current_step, workflow from workflow_runs;
