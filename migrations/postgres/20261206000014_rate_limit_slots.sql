-- A crawl usually knows it will make more than one request: a page is followed by its
-- children, and queued block lists are requested one after another. `cognie_acquire_rate_limit_slots`
-- takes up to `p_count` slots in one call (as many as are free, at least one, or none and when
-- one frees), counted exactly like single grants, so a sync's first two requests cost one
-- round trip to the limiter instead of two. A slot taken and not used (the page turned out to
-- be gone, a request failed) stays counted: the limiter errs on the side of fewer requests.
--
-- `cognie_acquire_rate_limit_slot` stays for processes of the previous release during a
-- rolling deploy, redefined at the end as one slot of the new function: one implementation,
-- one state, so both releases share every user's window.
create function cognie_acquire_rate_limit_slots(p_user uuid, p_limit integer, p_window interval, p_count integer)
returns table (granted integer, wait_until timestamptz)
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
    -- One statement per transaction, nothing else depends on a grant: see
    -- `..._rate_limit_buckets.sql` for why its commit need not wait for the disk.
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
        granted := 0;
        wait_until := v_blocked;
    elsif v_total < p_limit then
        granted := least(greatest(p_count, 1), p_limit - v_total);
        wait_until := null;
        -- A transaction that waited for the lock may carry an earlier now() than the last
        -- grant's: it joins the newest bucket (counted longer, never shorter).
        if v_n > 0 and v_live_seconds[v_n] >= v_second then
            v_live_counts[v_n] := v_live_counts[v_n] + granted;
        else
            v_live_seconds := v_live_seconds || v_second;
            v_live_counts := v_live_counts || granted;
        end if;
    else
        -- The first moment enough of the oldest buckets have left the window for one slot.
        granted := 0;
        for i in 1 .. v_n loop
            v_freed := v_freed + v_live_counts[i];
            if v_total - v_freed < p_limit then
                wait_until := to_timestamp(v_live_seconds[i] + 1) + p_window;
                exit;
            end if;
        end loop;
    end if;
    if granted > 0 or v_n <> coalesce(array_length(v_seconds, 1), 0) then
        update notion_rate_limits set grant_seconds = v_live_seconds, grant_counts = v_live_counts
        where user_id = p_user;
    end if;
    return next;
end
$$;

-- The one-slot function of the previous release, now the same decision for one slot: one
-- implementation of the limiter.
create or replace function cognie_acquire_rate_limit_slot(p_user uuid, p_limit integer, p_window interval)
returns table (granted boolean, wait_until timestamptz)
language sql
volatile
as $$
    select s.granted > 0, s.wait_until from cognie_acquire_rate_limit_slots(p_user, p_limit, p_window, 1) s
$$;
