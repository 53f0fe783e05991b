//! Sync runs: who is subscribed to what an event touched, starting or joining the debounced
//! sync per (user, content), and ordering syncs of the same content one after another.
//!
//! Lookups by (user, content) test a run's state and step as `(...) is true`, which no index
//! can serve, so the planner takes the per-key index (`workflow_runs_sync_key_idx`). A plain
//! `state = 'waiting'` or `current_step = 'debounce'` looks nearly free to it (few runs are in
//! that state when statistics are taken) and it walks a state- or step-led index of the ops
//! API instead, whose entries on a busy table are mostly dead versions of runs that passed
//! through that state: measured 0.6-0.9 ms and 2,000 buffers per call instead of a few.

use sqlx::{PgConnection, Row};

use super::jobs::enqueue_at;
use crate::{
    ids::{EventId, RunId, UserId},
    store::{
        DebounceState, DebounceWindow, EventTarget, StartedSync, StoreResult, SyncTarget, SyncTrigger,
        jobs::StepJob,
    },
};

pub async fn event_target(conn: &mut PgConnection, event_id: EventId) -> StoreResult<Option<EventTarget>> {
    let row = sqlx::query(
        r#"select entity_id, entity_kind, parent_id, data_source_id, event_type from webhook_events where id = $1"#,
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| EventTarget {
        entity_id: r.get("entity_id"),
        entity_kind: r.get("entity_kind"),
        parent_id: r.get("parent_id"),
        data_source_id: r.get("data_source_id"),
        event_type: r.get("event_type"),
    }))
}

/// Everyone subscribed to what the event touched, and what each of them must re-sync:
/// - a subscriber of the page itself re-syncs the page;
/// - a subscriber of the page's database (by database id or one of its data source ids)
///   re-syncs just that row page, which is all that changed;
/// - a subscriber of a database that a database / data-source event names re-syncs the
///   database (rows may have been added or removed).
///
/// Each way of matching is its own branch so that each uses its index (the notion id's
/// b-tree, the data source ids' GIN index) even in a generic plan: one `where` with `or`s
/// across them is a scan of every subscription per event.
pub async fn subscribers(conn: &mut PgConnection, target: &EventTarget) -> StoreResult<Vec<SyncTarget>> {
    let Some(entity) = target.entity_id.as_deref() else { return Ok(Vec::new()) };
    let rows = sqlx::query(
        r#"
        select distinct s.user_id,
               case when s.notion_id = $1 then s.notion_id
                    when $2 = 'page' then $1
                    else s.notion_id end as sync_id,
               case when s.notion_id = $1 then s.kind
                    when $2 = 'page' then 'page'
                    else 'database' end as sync_kind
        from (
            select user_id, notion_id, kind from subscriptions where notion_id = $1
            union all
            select user_id, notion_id, kind from subscriptions
            where kind = 'database' and notion_id = any(array[$3, $4])
            union all
            select user_id, notion_id, kind from subscriptions
            where kind = 'database' and data_source_ids && array[$1, $3, $4]
        ) s
        order by s.user_id
        "#,
    )
    .bind(entity)
    .bind(target.entity_kind.as_deref().unwrap_or("page"))
    .bind(target.parent_id.as_deref())
    .bind(target.data_source_id.as_deref())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SyncTarget {
            user_id: r.get("user_id"),
            notion_id: r.get("sync_id"),
            kind: r.get("sync_kind"),
        })
        .collect())
}

/// Whether sync run `run_id` of `user` writes what it read (see [`crate::store::StoreTx::sync_wanted`]):
/// [`subscribers`]'s match, for one user (its subscriptions only, by the unique index).
pub async fn sync_wanted(
    conn: &mut PgConnection,
    run_id: RunId,
    user: UserId,
    target: &EventTarget,
    unread: bool,
) -> StoreResult<bool> {
    Ok(sqlx::query_scalar(
        r#"
        with parent as (
            select coalesce($3, case when $6 then (
                select f.container_id from flashcards f
                where f.source_page_id = $2 and f.user_id = $1 and f.container_id is not null
                -- Its live cards name where it is; retired ones may name an older database.
                order by f.retired_at is null desc
                limit 1) end) as id
        )
        select exists (
            select 1 from subscriptions s, parent
            where s.user_id = $1
              and (s.notion_id = $2
                   or (s.kind = 'database'
                       and (s.notion_id = parent.id or s.notion_id = $4
                            or s.data_source_ids && array[$2, parent.id, $4]::text[])))
            -- Held until the persist commits, so an unsubscribe does not answer 204 before
            -- the cards it lets this sync write. KEY SHARE only conflicts with the DELETE
            -- (FOR SHARE would also block the subscription's updates, and could deadlock).
            for key share of s
        ) or exists (select 1 from workflow_runs where id = $5
                   and (trigger = 'manual' or (trigger = 'retry' and coalesce(retried_from, 'manual') = 'manual')))
        "#,
    )
    .bind(user)
    .bind(target.entity_id.as_deref())
    .bind(target.parent_id.as_deref())
    .bind(target.data_source_id.as_deref())
    .bind(run_id)
    .bind(unread)
    .fetch_one(conn)
    .await?)
}

/// Starts the sync for `target`, or joins the one already collecting events in debounce for
/// it, and enqueues its job, on the caller's transaction: a sync that no event caused
/// (subscription, manual, reconciliation). Returns the run.
pub async fn start_or_join_sync(
    conn: &mut PgConnection,
    target: &SyncTarget,
    trigger: SyncTrigger,
    window: DebounceWindow,
) -> StoreResult<RunId> {
    let started = start_or_join(conn, target, trigger, None, None, window).await?;
    enqueue_at(conn, started.job, started.due).await?;
    Ok(started.run_id)
}

/// Starts the sync for `target`, or joins the one already collecting events in debounce for
/// it (pushing its deadline out, within the cap), on the caller's transaction, so a fan-out
/// commits with the step that caused it. Its job is not enqueued: the caller enqueues it, or
/// claims the run itself when it is due now (see [`crate::store::StoreTx::offer_handoff`]).
pub async fn start_or_join(
    conn: &mut PgConnection,
    target: &SyncTarget,
    trigger: SyncTrigger,
    event_id: Option<EventId>,
    parent_id: Option<RunId>,
    window: DebounceWindow,
) -> StoreResult<StartedSync> {
    let quiet = if trigger.debounced() { window.quiet.as_secs_f64() } else { 0.0 };
    let max_wait = window.max_wait.as_secs_f64();
    // One statement through the unique index of debouncing syncs: concurrent fan-outs of the
    // same key cannot both insert (the loser joins the winner's run), and no planner choice is
    // involved. Joining pushes the deadline out, within the cap; a manual or subscription sync
    // (or no quiet period) is due at once. The event that caused it is linked to the run in
    // the same statement.
    let row = sqlx::query(
        r#"
        with run as (
            insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
                parent_id, dispatch_seq, debounce_started_at, debounce_until, next_run_at)
            values ($1, 'notion_sync', 'waiting', 'debounce', $2, $3, $4, $5, $6, 1, now(),
                now() + make_interval(secs => $7), now() + make_interval(secs => $7))
            on conflict (user_id, notion_id)
                where workflow = 'notion_sync' and current_step = 'debounce' and state in ('pending', 'waiting')
            do update set
                debounce_until = case
                    when workflow_runs.trigger in ('manual', 'subscription') or $7 = 0
                        then least(workflow_runs.debounce_until, now())
                    else least(now() + make_interval(secs => $7),
                               workflow_runs.debounce_started_at + make_interval(secs => $8))
                end,
                next_run_at = case
                    when workflow_runs.trigger in ('manual', 'subscription') or $7 = 0
                        then least(workflow_runs.debounce_until, now())
                    else least(now() + make_interval(secs => $7),
                               workflow_runs.debounce_started_at + make_interval(secs => $8))
                end,
                -- A manual or subscription sync that joins makes the run its own: later
                -- events join it without deferring it again.
                trigger = case when excluded.trigger in ('manual', 'subscription')
                    then excluded.trigger else workflow_runs.trigger end,
                -- A new subscription says what the content is (a page unsubscribed and
                -- followed again as a database); others go by what the run was started as.
                notion_kind = case when excluded.trigger = 'subscription'
                    then excluded.notion_kind else workflow_runs.notion_kind end,
                state = 'waiting',
                dispatch_seq = workflow_runs.dispatch_seq + 1,
                updated_at = now()
            returning id, dispatch_seq, next_run_at, attempt
        ), event as (
            insert into workflow_run_events (run_id, event_id)
            select id, $9 from run where $9::uuid is not null
            on conflict do nothing
        )
        select id, dispatch_seq, next_run_at, attempt from run
        "#,
    )
    .bind(RunId::new())
    .bind(target.user_id)
    .bind(&target.notion_id)
    .bind(&target.kind)
    .bind(trigger.as_str())
    .bind(parent_id)
    .bind(quiet)
    .bind(max_wait)
    .bind(event_id)
    .fetch_one(&mut *conn)
    .await?;
    let run_id: RunId = row.get("id");
    Ok(StartedSync {
        run_id,
        job: StepJob { run_id, seq: row.get("dispatch_seq") },
        due: row.get("next_run_at"),
        attempt: row.get("attempt"),
    })
}

/// The debounce state of a sync run: its deadline, and whether an earlier sync of the same
/// content is still past debounce and unfinished (this one must run after it).
pub async fn debounce_state(conn: &mut PgConnection, run_id: RunId) -> StoreResult<DebounceState> {
    let row = sqlx::query(
        r#"
        select r.debounce_until,
               exists (
                   select 1 from workflow_runs o
                   where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
                     and o.id <> r.id and (o.current_step <> 'debounce') is true
                     and (o.state in ('pending', 'running', 'waiting')) is true
               ) as blocked,
               (select count(*) from workflow_run_events e where e.run_id = r.id) as events
        from workflow_runs r
        where r.id = $1
        "#,
    )
    .bind(run_id)
    .fetch_one(conn)
    .await?;
    Ok(DebounceState {
        until: row.get("debounce_until"),
        blocked: row.get("blocked"),
        events: row.get("events"),
    })
}

/// A sync of (user, content) ended: wake the next one, which may be waiting for it (a
/// cancel). A step transition that ends a sync does the same inside its own statement (the
/// `woken` part in `runs::apply_transition`): keep the two conditions alike.
pub async fn wake_next_sync(conn: &mut PgConnection, user_id: UserId, notion_id: &str) -> StoreResult<()> {
    let woken = sqlx::query(
        r#"
        update workflow_runs
        set next_run_at = greatest(now(), debounce_until), dispatch_seq = dispatch_seq + 1, updated_at = now()
        where workflow = 'notion_sync' and user_id = $1 and notion_id = $2
          and (current_step = 'debounce') is true and (state = 'waiting') is true
          and next_run_at > greatest(now(), debounce_until)
        returning id, dispatch_seq, next_run_at
        "#,
    )
    .bind(user_id)
    .bind(notion_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = woken {
        enqueue_at(
            conn,
            StepJob { run_id: row.get("id"), seq: row.get("dispatch_seq") },
            row.get("next_run_at"),
        )
        .await?;
    }
    Ok(())
}

/// A sync that committed a wait behind an earlier sync of the same content (in debounce):
/// wakes it if that earlier sync has ended since it looked (see
/// [`crate::store::StoreTx::debounce_state`]). `true`: woken.
///
/// The earlier sync's rows are read `for share`: an end being written is waited for and then
/// seen (a row that no longer matches is skipped), so either this sees the end or the end's
/// own statement starts after the wait was committed, and wakes the sync itself. Not both:
/// whichever wakes the sync moves `next_run_at` to now, and the other then finds nothing to do.
pub async fn wake_if_unblocked(store: &super::PgStore, run_id: RunId) -> StoreResult<bool> {
    let mut tx = store.pool().begin().await?;
    let woken = sqlx::query(
        r#"
        with blocker as (
            select o.id from workflow_runs o
            join workflow_runs r on r.id = $1
            where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
              and o.id <> r.id and (o.current_step <> 'debounce') is true
              and (o.state in ('pending', 'running', 'waiting')) is true
            for share of o
        )
        update workflow_runs w
        set next_run_at = greatest(now(), w.debounce_until), dispatch_seq = w.dispatch_seq + 1, updated_at = now()
        where w.id = $1 and (w.current_step = 'debounce') is true and (w.state = 'waiting') is true
          and w.next_run_at > greatest(now(), w.debounce_until)
          and not exists (select 1 from blocker)
        returning w.dispatch_seq, w.next_run_at
        "#,
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = woken else { return Ok(false) };
    enqueue_at(&mut tx, StepJob { run_id, seq: row.get("dispatch_seq") }, row.get("next_run_at")).await?;
    tx.commit().await?;
    store.jobs_committed();
    Ok(true)
}

/// If another sync of the same content is collecting events in debounce, moves this run's
/// events onto it and returns its id.
pub async fn merge_into_other_debouncing_sync(
    conn: &mut PgConnection,
    run_id: RunId,
) -> StoreResult<Option<RunId>> {
    let other: Option<RunId> = sqlx::query_scalar(
        r#"
        select o.id from workflow_runs o
        join workflow_runs r on r.id = $1
        where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
          and o.id <> r.id and (o.current_step = 'debounce') is true and (o.state in ('pending', 'waiting')) is true
        "#,
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(other) = other {
        sqlx::query(
            r#"
            insert into workflow_run_events (run_id, event_id)
            select $2, event_id from workflow_run_events where run_id = $1
            on conflict do nothing
            "#,
        )
        .bind(run_id)
        .bind(other)
        .execute(conn)
        .await?;
    }
    Ok(other)
}
