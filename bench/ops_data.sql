-- Synthetic history for the ops benchmark (bench/ops.sh): :runs workflow runs over the last
-- :days days, by :users users over :pages Notion pages, with their steps, webhook events, event
-- links and ops actions, shaped like what the engine writes (see src/store/pg/runs.rs,
-- events.rs, sync.rs). Run with psql on a freshly migrated database:
--   psql -v runs=1000000 -v users=10000 -v pages=50000 -v days=30 -v step_pct=100 -f bench/ops_data.sql
--
-- Shape (fractions of runs): 45% notion_event (one discover_users step, user_id null),
-- 55% notion_sync (debounce, fetch, generate, persist; one user each; 40% of the succeeded ones
-- stop early: merged in debounce, or unchanged content at generate). States: 96% succeeded,
-- 2% failed (with error_kind, last_error and the failed step: 3.5% of the syncs, 0.1% of the
-- event runs), 1% cancelled, 0.5% waiting (debounce, rate limit, backoff), 0.3% pending,
-- 0.2% running. Finished runs are spread
-- uniformly over the last :days days; unfinished ones over the last two hours. Pages are
-- skewed (page = pages * r^2, so low-numbered pages are hot); a page belongs to user
-- page % users. step_pct: the percentage of runs that get their step rows (100 = all, as the
-- engine writes them). Deterministic (setseed), so runs of the benchmark see the same data.

\set ON_ERROR_STOP 1


-- Bulk load: skip foreign-key checks and triggers (the rows are consistent by construction).
set session_replication_role = replica;
set synchronous_commit = off;
set work_mem = '256MB';
set maintenance_work_mem = '512MB';

select setseed(0.4242);

create unlogged table bench_src as
with raw as (
    select g, random() as r_wf, random() as r_state, random() as r_step, random() as r_page,
           random() as r_time, random() as r_misc, random() as r_misc2
    from generate_series(1, :runs) g
), shaped as (
    select g, r_step, r_time, r_misc, r_misc2,
           case when r_wf < 0.45 then 'notion_event' else 'notion_sync' end as workflow,
           case when r_state < 0.003 then 'pending'
                when r_state < 0.005 then 'running'
                when r_state < 0.010 then 'waiting'
                when r_state < 0.020 then 'cancelled'
                -- discover_users (a database lookup) rarely fails; syncs (Notion, the
                -- generator) do.
                when r_state < 0.055 then case when r_wf < 0.45 and r_misc2 < 0.97 then 'succeeded' else 'failed' end
                else 'succeeded' end as state,
           least(floor(:pages * r_page * r_page)::int, :pages - 1) as page
    from raw
)
select g, md5('run:' || g)::uuid as id, workflow, state, page, r_misc, r_misc2,
       case when state in ('succeeded', 'failed', 'cancelled')
            then now() - make_interval(secs => :days * 86400 * r_time)
            else now() - make_interval(secs => 7200 * r_time) end as created_at,
       case when workflow = 'notion_event' then 'discover_users'
            -- A sync also succeeds at debounce (merged into another sync) or at generate
            -- (content unchanged: nothing to generate or persist).
            when state = 'succeeded' then
                case when r_step < 0.05 then 'debounce' when r_step < 0.40 then 'generate' else 'persist' end
            when state = 'failed' then
                case when r_step < 0.70 then 'fetch' when r_step < 0.95 then 'generate' else 'persist' end
            when state = 'cancelled' then
                case when r_step < 0.50 then 'debounce' when r_step < 0.80 then 'fetch' else 'generate' end
            when state = 'waiting' then
                case when r_step < 0.60 then 'debounce' when r_step < 0.90 then 'fetch' else 'generate' end
            else case when r_step < 0.50 then 'fetch' when r_step < 0.80 then 'generate' else 'persist' end
       end as current_step
from shaped;

-- At most one sync per (user, page) may be collecting events in debounce
-- (workflow_runs_one_debouncing_sync_key): give each such run a page of its own.
update bench_src s
set page = d.rn - 1,
    current_step = case when d.rn > :pages then 'fetch' else s.current_step end
from (
    select g, row_number() over (order by g) as rn from bench_src
    where workflow = 'notion_sync' and current_step = 'debounce' and state in ('pending', 'waiting')
) d
where s.g = d.g;

-- Event runs, numbered, so that sync runs can link random events.
create unlogged table bench_events as
select g, row_number() over (order by g) as k from bench_src where workflow = 'notion_event';
create unique index on bench_events (k);

insert into users (id, email, created_at, updated_at, notion_connected_at, notion_workspace_name)
select md5('user:' || u)::uuid, 'user' || u || '@bench.example', now() - make_interval(days => :days + 1),
       now() - make_interval(days => :days + 1), now() - make_interval(days => :days + 1), 'Workspace ' || u
from generate_series(0, :users - 1) u;

insert into subscriptions (id, user_id, notion_id, kind, created_at, last_synced_at)
select md5('sub:' || p)::uuid, md5('user:' || (p % :users))::uuid, md5('page:' || p)::uuid::text,
       case when p % 10 = 0 then 'database' else 'page' end, now() - make_interval(days => :days + 1), now()
from generate_series(0, :pages - 1) p;

-- One webhook event per event run, received when the run was created.
insert into webhook_events (id, dedupe_key, notion_event_id, event_type, entity_id, entity_kind, parent_id,
    parent_kind, attempt_number, outcome, event_time, payload, received_at)
select md5('event:' || s.g)::uuid, md5('event:' || s.g), md5('event:' || s.g)::uuid::text,
       case when s.r_misc < 0.8 then 'page.content_updated' when s.r_misc < 0.95 then 'page.properties_updated'
            else 'page.created' end,
       md5('page:' || s.page)::uuid::text, 'page', md5('workspace:' || (s.page % :users))::uuid::text, 'workspace', 1,
       'accepted', s.created_at - interval '1 second',
       jsonb_build_object(
           'id', md5('event:' || s.g)::uuid, 'timestamp', s.created_at - interval '1 second',
           'workspace_id', md5('workspace:' || (s.page % :users))::uuid, 'workspace_name', 'Workspace',
           'subscription_id', md5('subscription:' || (s.page % :users))::uuid,
           'integration_id', '1f2e3d4c-0000-4000-8000-000000000001', 'type', 'page.content_updated',
           'authors', jsonb_build_array(jsonb_build_object('id', md5('author:' || (s.page % :users))::uuid, 'type', 'person')),
           'attempt_number', 1,
           'entity', jsonb_build_object('id', md5('page:' || s.page)::uuid, 'type', 'page'),
           'data', jsonb_build_object('parent', jsonb_build_object('id', md5('db:' || (s.page / 10))::uuid, 'type', 'database'),
                                      'updated_blocks', jsonb_build_array(jsonb_build_object('id', md5('block:' || s.g)::uuid, 'type', 'block')))),
       s.created_at
from bench_src s
where s.workflow = 'notion_event'
order by s.created_at;

insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger, event_id,
    attempt, error_kind, last_error, next_run_at, dispatch_seq, lease_owner, lease_token, lease_expires_at,
    created_at, updated_at, finished_at, debounce_started_at, debounce_until)
select s.id, s.workflow, s.state, s.current_step,
       case when s.workflow = 'notion_sync' then md5('user:' || (s.page % :users))::uuid end,
       md5('page:' || s.page)::uuid::text,
       case when s.page % 10 = 0 then 'database' else 'page' end,
       case when s.workflow = 'notion_event' then 'webhook'
            when s.r_misc2 < 0.80 then 'webhook' when s.r_misc2 < 0.90 then 'reconcile'
            when s.r_misc2 < 0.95 then 'subscription' when s.r_misc2 < 0.98 then 'manual' else 'retry' end,
       case when s.workflow = 'notion_event' then md5('event:' || s.g)::uuid end,
       case s.state when 'failed' then 3 + (s.r_misc * 3)::int when 'pending' then 0 when 'waiting' then 1 + (s.r_misc * 2)::int
            else 1 end,
       e.kind,
       e.message,
       case s.state when 'waiting' then now() + make_interval(secs => 60 * s.r_misc)
                    when 'pending' then t.created_at + make_interval(secs => 5 * s.r_misc) end,
       1 + (s.r_misc2 * 3)::int,
       case when s.state = 'running' then 'worker-' || (s.g % 4) end,
       case when s.state = 'running' then md5('lease:' || s.g)::uuid end,
       case when s.state = 'running' then now() + interval '30 seconds' end,
       t.created_at,
       case when t.finished_at is not null then t.finished_at else t.created_at + interval '1 second' end,
       t.finished_at,
       case when s.workflow = 'notion_sync' then t.created_at end,
       case when s.workflow = 'notion_sync' then t.created_at + interval '5 seconds' end
from bench_src s
cross join lateral (
    select s.created_at,
           case when s.state in ('succeeded', 'failed', 'cancelled')
                then s.created_at + make_interval(secs => 1 + 30 * s.r_misc2) end as finished_at
) t
left join lateral (
    select k.kind, k.message
    from (values
        (0, 'notion_unauthorized', 'Notion API 401 unauthorized: API token is invalid.'),
        (1, 'notion_not_found', 'Notion API 404 object_not_found: Could not find page with ID: '),
        (2, 'notion_rate_limited', 'Notion API 429 rate_limited: You have been rate limited. Please try again in a few minutes.'),
        (3, 'notion_server_error', 'Notion API 502 bad gateway (retries exhausted)'),
        (4, 'generator_invalid_content', 'the page has no toggle with both a question and an answer'),
        (5, 'notion_forbidden', 'Notion API 403 restricted_resource: Insufficient permissions for this endpoint.')
    ) k(n, kind, message)
    where (s.state = 'failed' or (s.state = 'waiting' and s.r_misc < 0.3))
      and k.n = floor(6 * s.r_misc2 * s.r_misc2)::int
) e on true
order by s.created_at;

-- The events a run stands for: an event run its own; a webhook-triggered sync 1 to 3 random ones.
insert into workflow_run_events (run_id, event_id)
select s.id, md5('event:' || s.g)::uuid from bench_events e join bench_src s using (g) order by s.created_at;

select count(*) as n_events from bench_events \gset
insert into workflow_run_events (run_id, event_id)
select distinct s.id, md5('event:' || e.g)::uuid
from bench_src s
cross join lateral (
    select 1 + floor(random() * :n_events)::bigint as k from generate_series(1, 1 + floor(s.r_misc * 3)::int)
) pick
join bench_events e on e.k = pick.k
where s.workflow = 'notion_sync' and s.r_misc2 < 0.80
order by 1, 2;

-- Steps: every step before the current one succeeded; the current one is in the run's state (a
-- pending run's current step has no row yet: the claim creates it).
insert into workflow_steps (run_id, name, state, attempts, output, error_kind, error, started_at, finished_at)
select r.id, st.name,
       case when st.i < cur.i then 'succeeded' else r.state end,
       case when st.i < cur.i then 1 else greatest(r.attempt, 1) end,
       case when st.i < cur.i or r.state = 'succeeded' then
           case st.name
               when 'discover_users' then jsonb_build_object('users', jsonb_build_array(md5('user:' || (b.page % :users))::uuid))
               when 'debounce' then jsonb_build_object('events', 1 + b.g % 3)
               when 'fetch' then jsonb_build_object('content_hash', md5('content:' || b.g), 'blocks', 10 + b.g % 200,
                   'pages', jsonb_build_array(md5('page:' || b.page)::uuid), 'last_edited_time', r.created_at)
               when 'generate' then jsonb_build_object('cards', 1 + b.g % 40, 'content_hash', md5('content:' || b.g))
               else jsonb_build_object('created', b.g % 5, 'updated', b.g % 3, 'retired', 0)
           end
       end,
       case when st.i = cur.i then r.error_kind end,
       case when st.i = cur.i then r.last_error end,
       r.created_at + make_interval(secs => st.i),
       case when st.i < cur.i then r.created_at + make_interval(secs => st.i + 0.5)
            when r.state in ('succeeded', 'failed', 'cancelled') then r.finished_at end
from bench_src b
join workflow_runs r on r.id = b.id
join (values (0, 'discover_users'), (1, 'debounce'), (2, 'fetch'), (3, 'generate'), (4, 'persist')) cur(i, name)
  on cur.name = r.current_step
join (values (0, 'discover_users'), (1, 'debounce'), (2, 'fetch'), (3, 'generate'), (4, 'persist')) st(i, name)
  on (r.workflow = 'notion_event') = (st.i = 0) and st.i <= cur.i
where (b.g % 100) < :step_pct
  and not (st.i = cur.i and r.state = 'pending')
order by r.created_at, st.i;

-- Ops actions: half the cancelled runs were cancelled through the API; a tenth of the failed
-- ones were retried once before failing again.
insert into workflow_run_actions (run_id, action, actor, at)
select r.id, case when r.state = 'cancelled' then 'cancel' else 'retry' end, 'api', r.created_at + interval '2 seconds'
from workflow_runs r
join bench_src b on b.id = r.id
where (r.state = 'cancelled' and b.r_misc < 0.5) or (r.state = 'failed' and b.r_misc < 0.1);

drop table bench_events;
drop table bench_src;
reset session_replication_role;
