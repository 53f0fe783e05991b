-- apalis's `notify_workers` trigger calls pg_notify for every inserted job row, from inside the
-- inserting transaction. PostgreSQL lets one notifying transaction commit at a time (a
-- database-wide lock is held from before its commit record is flushed until after), so every
-- transaction that enqueued a step job queued behind the others' disk flushes. Measured on the
-- webhook intake: 249 of 285 wait samples on that lock; without the trigger pgbench ran 55%
-- faster.
--
-- Our step jobs (queue `cognie_sync.steps`) are exempt: the service sends the notification
-- itself after the commit, once for many commits, on a connection that does not wait for a
-- disk flush (src/store/pg/notify.rs). Other queues keep apalis's behaviour (same function
-- body as apalis-postgres 1.0's `20251018165121_notify_run_at.sql`, plus the exemption). Ours
-- run after apalis's migrations; if a later apalis release redefines this function, re-check
-- this file.
create or replace function apalis.notify_new_jobs() returns trigger as $$
begin
    if new.run_at <= now() and new.job_type <> 'cognie_sync.steps' then
        perform pg_notify(
            'apalis::job::insert',
            json_build_object(
                'job_type', new.job_type,
                'id', new.id,
                'run_at', new.run_at
            )::text
        );
    end if;
    return new;
end;
$$ language plpgsql;
