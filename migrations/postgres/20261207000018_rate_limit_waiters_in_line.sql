-- Waiters in line. A refusal told every caller the same moment: when the first slot frees.
-- Every run of a busy user waiting for a slot woke then, one of them got it, and the rest
-- were refused again (each a claim, an attempt and a reschedule), at every slot that freed:
-- a user with 100 syncs waiting at 3 requests a minute cost 300 wasted wake-ups a minute.
--
-- Now each refusal takes a place in line and is told when the slot for that place frees:
-- the first waiter when the first slot frees (as before), the second when the second does,
-- and a waiter past the slots of this window when the slot a waiter before it will take
-- (`p_limit` places ahead) frees in turn, one window after that waiter's turn. A place is as
-- many slots as the caller asked for (what it will take at its turn). The places
-- handed out are kept as (second, count) buckets of wake-up times, like the grants; a place
-- counts until its time has come, so a waiter that never comes back (its run cancelled) holds
-- up the line only until then. A caller that will not come back (a reconciliation check)
-- asks for 0 slots: it is granted one if one is free, and refused without a place in line
-- (the previous release never asks for 0). A refusal only says when to come back: grants are
-- decided as before, so the limit holds whatever the line says. Same signature: processes of the
-- previous release call the same function during a rolling deploy.
alter table notion_rate_limits
    add column wake_seconds bigint[] not null default '{}',
    add column wake_counts integer[] not null default '{}';

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
    v_wake_seconds bigint[];
    v_wake_counts integer[];
    v_blocked timestamptz;
    v_live_seconds bigint[] := '{}';
    v_live_counts integer[] := '{}';
    v_line_seconds bigint[] := '{}';
    v_line_counts integer[] := '{}';
    v_total integer := 0;
    v_waiting integer := 0;
    v_n integer;
    v_place integer;
    v_seen integer := 0;
    v_in_line bigint;
    v_took_place boolean := false;
    v_slots integer;
    i integer;
begin
    -- One statement per transaction, nothing else depends on a grant: see
    -- `..._rate_limit_buckets.sql` for why its commit need not wait for the disk.
    perform set_config('synchronous_commit', 'off', true);
    select r.grant_seconds, r.grant_counts, r.blocked_until, r.wake_seconds, r.wake_counts
    into v_seconds, v_counts, v_blocked, v_wake_seconds, v_wake_counts
    from notion_rate_limits r where r.user_id = p_user for update;
    if not found then
        insert into notion_rate_limits (user_id) values (p_user) on conflict (user_id) do nothing;
        select r.grant_seconds, r.grant_counts, r.blocked_until, r.wake_seconds, r.wake_counts
        into v_seconds, v_counts, v_blocked, v_wake_seconds, v_wake_counts
        from notion_rate_limits r where r.user_id = p_user for update;
    end if;
    -- The grant's time is when the user's row is ours (`..._rate_limit_grant_time.sql`).
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
    -- The places in line whose time has not come yet.
    for i in 1 .. coalesce(array_length(v_wake_seconds, 1), 0) loop
        if to_timestamp(v_wake_seconds[i]) > v_now then
            v_line_seconds := v_line_seconds || v_wake_seconds[i];
            v_line_counts := v_line_counts || v_wake_counts[i];
            v_waiting := v_waiting + v_wake_counts[i];
        end if;
    end loop;
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
        granted := 0;
        -- This caller's place: after the `v_waiting` slots of the waiters already in line (a
        -- place is as many slots as its caller asked for). The slots of
        -- the window free in the order of their buckets; `v_total - p_limit + 1` of them must
        -- free before the first waiter's turn.
        v_place := v_total - p_limit + v_waiting;
        if v_place < v_total then
            for i in 1 .. v_n loop
                v_seen := v_seen + v_live_counts[i];
                if v_seen > v_place then
                    wait_until := to_timestamp(v_live_seconds[i] + 1) + p_window;
                    exit;
                end if;
            end loop;
        else
            -- Past this window's slots: the slot that the waiter `p_limit` places ahead takes
            -- at its turn frees one window after the second it is counted in (a place is
            -- kept under the second its turn ends in, so this is never early).
            v_place := v_waiting - p_limit;
            for i in 1 .. coalesce(array_length(v_line_seconds, 1), 0) loop
                v_seen := v_seen + v_line_counts[i];
                if v_seen > v_place then
                    wait_until := to_timestamp(v_line_seconds[i] + 1) + p_window;
                    exit;
                end if;
            end loop;
        end if;
        -- Take the place, under the second its turn ends in: it counts until its turn has
        -- come. The buckets stay in time order (a later place never has an earlier turn; a
        -- clock stepped back could give one, which then joins the last bucket).
        v_in_line := ceil(extract(epoch from wait_until))::bigint;
        v_took_place := p_count >= 1;
        v_slots := least(greatest(p_count, 1), p_limit);
        i := coalesce(array_length(v_line_seconds, 1), 0);
        if not v_took_place then
            null;
        elsif i > 0 and v_line_seconds[i] >= v_in_line then
            v_line_counts[i] := v_line_counts[i] + v_slots;
        else
            v_line_seconds := v_line_seconds || v_in_line;
            v_line_counts := v_line_counts || v_slots;
        end if;
    end if;
    if granted > 0 or v_took_place or v_n <> coalesce(array_length(v_seconds, 1), 0)
        or coalesce(array_length(v_line_seconds, 1), 0) <> coalesce(array_length(v_wake_seconds, 1), 0) then
        update notion_rate_limits
        set grant_seconds = v_live_seconds, grant_counts = v_live_counts,
            wake_seconds = v_line_seconds, wake_counts = v_line_counts
        where user_id = p_user;
    end if;
    return next;
end
$$;
