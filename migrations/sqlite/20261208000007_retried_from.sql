-- The trigger a run had before ops first retried it (`trigger` then says `retry`); see
-- PostgreSQL's migration of the same name.
alter table workflow_runs add column retried_from text;
