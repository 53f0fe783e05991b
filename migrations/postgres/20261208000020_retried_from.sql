-- The trigger a run had before ops first retried it (`trigger` then says `retry`). A retried
-- sync is judged by it: one that no user asked for by hand (a webhook's, a subscription's, a
-- reconciliation's) writes no card for content the user stopped following since it failed.
-- Null for a run retried before this column (judged as before: always written) and for one
-- never retried. Nullable with no default: adding it rewrites nothing.
alter table workflow_runs add column retried_from text;
