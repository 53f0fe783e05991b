-- The engine's hot path keeps no foreign keys. Each cost more than the write it guarded,
-- measured in `just bench-workflow` and on its database:
--
-- 1. A run's `parent_id` (the run that started it) and `event_id` (the webhook event it stands
--    for) were foreign keys with ON DELETE SET NULL.
--    * PostgreSQL checks a foreign key again on every update of a row that the same
--      transaction inserted or updated before, keys changed or not, and the check takes a
--      share lock on the referenced row (a write of its own). The engine updates a run twice
--      in one transaction whenever a step runs in its claim's transaction or in the one that
--      recorded the step before (discover_users, debounce, persist): 0.1-0.2 ms per such step,
--      as much as the update itself.
--    * ON DELETE SET NULL has to find the referencing runs, and no index leads to them (one
--      would cost a write on every update of a run): retention's deletes ran one sequential
--      scan of workflow_runs per webhook event or run deleted (0.3 ms each with 3,000 runs;
--      minutes per 5,000-row batch with a million).
--    What changes: once retention has pruned a run's parent or its event, `parent_id` or
--    `event_id` still names it (the API documents this). Both are written once, when the run
--    is created, from ids the same transaction has just read or written, so they never name a
--    row that did not exist.
--
-- 2. A step's record and an attempt's history row referred to their run (ON DELETE CASCADE).
--    Every claim and every transition writes both, so each statement ran two foreign-key
--    checks (an index lookup and a share lock on the run row: 0.04-0.07 ms each). They are
--    only ever written by a statement that has just updated that run under its lease, so the
--    run exists (and, being unfinished and locked, cannot be pruned meanwhile); retention now
--    deletes them with their run, in the same statement.
alter table workflow_runs
    drop constraint workflow_runs_parent_id_fkey,
    drop constraint workflow_runs_event_id_fkey;
alter table workflow_steps drop constraint workflow_steps_run_id_fkey;
alter table workflow_step_attempts drop constraint workflow_step_attempts_run_id_fkey;
