-- The per-user Notion rate limiter (src/store/pg/ratelimit.rs) decides a grant in one call: one
-- round trip, the user's row locked for the length of one statement, instead of a transaction
-- of four statements with the row locked between round trips (every fetch of one user waited
-- for it). Same semantics as before: `recent_grants` holds the grants of the last `p_window`
-- (oldest first; pruned on every call), a grant is made while fewer than `p_limit` are in it
-- and the user is not blocked (a 429's Retry-After); otherwise the answer is when the first
-- slot frees, which is the grant made `p_limit` grants ago plus the window. Times are the
-- database's clock, shared by every process.
create or replace function cognie_acquire_rate_limit_slot(p_user uuid, p_limit integer, p_window interval)
returns table (granted boolean, wait_until timestamptz)
language plpgsql
volatile
as $$
declare
    v_now timestamptz := now();
    v_grants timestamptz[];
    v_blocked timestamptz;
    v_live timestamptz[];
    v_n integer;
begin
    select r.recent_grants, r.blocked_until into v_grants, v_blocked
    from notion_rate_limits r where r.user_id = p_user for update;
    if not found then
        insert into notion_rate_limits (user_id) values (p_user) on conflict (user_id) do nothing;
        select r.recent_grants, r.blocked_until into v_grants, v_blocked
        from notion_rate_limits r where r.user_id = p_user for update;
    end if;
    v_live := array(select g from unnest(v_grants) g where g > v_now - p_window order by g);
    v_n := coalesce(array_length(v_live, 1), 0);
    if v_blocked is not null and v_blocked > v_now then
        granted := false;
        wait_until := v_blocked;
    elsif v_n < p_limit then
        v_live := v_live || v_now;
        granted := true;
        wait_until := null;
    else
        granted := false;
        wait_until := v_live[v_n - p_limit + 1] + p_window;
    end if;
    if granted or v_n <> coalesce(array_length(v_grants, 1), 0) then
        update notion_rate_limits set recent_grants = v_live where user_id = p_user;
    end if;
    return next;
end
$$;
