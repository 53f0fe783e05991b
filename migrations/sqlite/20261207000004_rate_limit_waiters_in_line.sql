-- Waiters in line (as PostgreSQL's `..._rate_limit_waiters_in_line.sql`): each refusal takes
-- a place and is told when the slot for that place frees, instead of every waiter being told
-- the same moment. A place counts until its time has come.
create table notion_rate_waits (
    user_id blob not null references users (id) on delete cascade,
    wake_at text not null
);
create index notion_rate_waits_user_idx on notion_rate_waits (user_id, wake_at);
