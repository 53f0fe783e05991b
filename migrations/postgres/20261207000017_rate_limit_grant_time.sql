-- The limiter dated a grant by when its statement began (`now()`), though the grant is
-- decided once the user's row lock is held: a call that waited for the lock for a second or
-- more filed its request under a second already past, so its slot left the window early and
-- one request too many could reach Notion within 60 s. The grant is now dated when the lock
-- is held (`clock_timestamp()`), as SQLite's limiter already does. Same signature: processes
-- of the previous release call the same function during a rolling deploy.
create or replace function cognie_acquire_rate_limit_slots(p_user uuid, p_limit integer, p_window interval, p_count integer)
returns table (granted integer, wait_until timestamptz)
language plpgsql
volatile
as $$
declare
    v_now timestamptz;
    v_second bigint;
    -- A bucket still counts while second + 1 > now - window.
    v_horizon double precision;
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
    -- The grant's time is when the user's row is ours, not when the statement began: a call
    -- that waited for the lock (behind a busy user's other grants, or a starved lock holder)
    -- would otherwise file a request made now under a second already past, and its slot would
    -- free that much early.
    v_now := clock_timestamp();
    v_second := floor(extract(epoch from v_now))::bigint;
    v_horizon := extract(epoch from v_now - p_window) - 1;
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
        -- Should the clock have stepped back since the last grant: join the newest bucket
        -- (counted longer, never shorter).
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
