-- The ops API at a million runs (measured with `just bench-ops`; see the README's Benchmarks).

-- GET /api/queue/stats (and /metrics) counted every step record by name and state, reading the
-- whole table (0.5 s at 2.3 million step rows). Now only the records that are not `succeeded`
-- are counted exactly, from this index (they are few: in flight, failed, cancelled), and the
-- succeeded ones are estimated from the table's statistics on large tables (Store::queue_stats).
-- Runs need no new index for it: workflow_runs_state_created_idx serves the exact counts of
-- their states other than succeeded. The price: a step's state is now indexed, so changing it
-- is no longer a HOT update (runs' state changes never were: state was indexed already).
create index workflow_steps_not_succeeded_idx on workflow_steps (name, state) where state <> 'succeeded';

-- GET /api/workflows?state=&step= (e.g. what failed at fetch, what was cancelled at persist):
-- with one index per column, a rare combination read every run at that step or in that state
-- to find few or none (25-80 ms at a million runs). With both columns leading, it is one range.
-- One more index entry per run state change.
create index workflow_runs_state_step_created_idx on workflow_runs (state, current_step, created_at desc, id desc);

-- The step determines the workflow, and runs in some states are mostly at some steps: without
-- this the planner multiplies the selectivities as if independent (e.g. 164 runs expected for
-- state=waiting&step=debounce, 1,638 there) and picks bad plans for combined filters.
create statistics workflow_runs_state_step_workflow_stats (mcv) on state, current_step, workflow from workflow_runs;
