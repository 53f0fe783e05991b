-- The per-user limiter kept one timestamp per grant of the last window in an array. At a high
-- limit that array held thousands of entries (100,000 per minute in `just bench-workflow`), and
-- every grant rewrote it whole (tens of KiB of TOAST and WAL) while holding the user's row
-- lock: one user's fetches queued on that lock (`Lock|tuple` in the benchmark's samples).
--
-- Now the grants are counted per second: `grant_seconds` (Unix seconds, ascending) and
-- `grant_counts` (grants made in that second), at most about window + 2 entries whatever the
-- limit. A bucket counts while it may still hold a grant inside the window (its second ends
-- after now - window), so the limiter never grants more than `p_limit` in any window; the
-- price is that a slot may free up to one second later than with exact timestamps.
--
-- The function also makes its transaction's commit asynchronous (it is called on its own, one
-- statement per transaction): a grant no longer waits for a disk flush while every other
-- transaction of the engine queues behind it for the same flush. What that risks: if the
-- database server itself crashes, the grants of its last few hundred milliseconds may be
-- forgotten, so a user could get that many more requests in that minute; Notion would answer
-- 429 and the limiter would be blocked for its Retry-After. Nothing else depends on a grant.
alter table notion_rate_limits
    add column grant_seconds bigint[] not null default '{}',
    add column grant_counts integer[] not null default '{}';

update notion_rate_limits r
set grant_seconds = b.seconds, grant_counts = b.counts
from (
    select user_id, array_agg(second order by second) as seconds, array_agg(n order by second) as counts
    from (
        select user_id, floor(extract(epoch from g))::bigint as second, count(*)::integer as n
        from notion_rate_limits, unnest(recent_grants) g
        group by 1, 2
    ) per_second
    group by user_id
) b
where r.user_id = b.user_id;

drop function cognie_acquire_rate_limit_slot(uuid, integer, interval);
alter table notion_rate_limits drop column recent_grants;

create function cognie_acquire_rate_limit_slot(p_user uuid, p_limit integer, p_window interval)
returns table (granted boolean, wait_until timestamptz)
language plpgsql
volatile
as $$
declare
    v_now timestamptz := now();
    v_second bigint := floor(extract(epoch from v_now))::bigint;
    -- A bucket still counts while second + 1 > now - window.
    v_horizon double precision := extract(epoch from v_now - p_window) - 1;
    v_seconds bigint[];
    v_counts integer[];
    v_blocked timestamptz;
    v_live_seconds bigint[] := '{}';
    v_live_counts integer[] := '{}';
    v_total integer := 0;
    v_freed integer := 0;
    v_n integer;
    i integer;
begin
    perform set_config('synchronous_commit', 'off', true);
    select r.grant_seconds, r.grant_counts, r.blocked_until into v_seconds, v_counts, v_blocked
    from notion_rate_limits r where r.user_id = p_user for update;
    if not found then
        insert into notion_rate_limits (user_id) values (p_user) on conflict (user_id) do nothing;
        select r.grant_seconds, r.grant_counts, r.blocked_until into v_seconds, v_counts, v_blocked
        from notion_rate_limits r where r.user_id = p_user for update;
    end if;
    for i in 1 .. coalesce(array_length(v_seconds, 1), 0) loop
        if v_seconds[i] > v_horizon then
            v_live_seconds := v_live_seconds || v_seconds[i];
            v_live_counts := v_live_counts || v_counts[i];
            v_total := v_total + v_counts[i];
        end if;
    end loop;
    v_n := coalesce(array_length(v_live_seconds, 1), 0);
    if v_blocked is not null and v_blocked > v_now then
        granted := false;
        wait_until := v_blocked;
    elsif v_total < p_limit then
        granted := true;
        wait_until := null;
        -- A transaction that waited for the lock may carry an earlier now() than the last
        -- grant's: it joins the newest bucket (counted longer, never shorter).
        if v_n > 0 and v_live_seconds[v_n] >= v_second then
            v_live_counts[v_n] := v_live_counts[v_n] + 1;
        else
            v_live_seconds := v_live_seconds || v_second;
            v_live_counts := v_live_counts || 1;
        end if;
    else
        -- The first moment enough of the oldest buckets have left the window for one slot.
        granted := false;
        for i in 1 .. v_n loop
            v_freed := v_freed + v_live_counts[i];
            if v_total - v_freed < p_limit then
                wait_until := to_timestamp(v_live_seconds[i] + 1) + p_window;
                exit;
            end if;
        end loop;
    end if;
    if granted or v_n <> coalesce(array_length(v_seconds, 1), 0) then
        update notion_rate_limits set grant_seconds = v_live_seconds, grant_counts = v_live_counts
        where user_id = p_user;
    end if;
    return next;
end
$$;
