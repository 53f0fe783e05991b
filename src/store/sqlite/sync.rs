//! Sync runs: who is subscribed to what an event touched, starting or joining the debounced
//! sync per (user, content), and ordering syncs of the same content one after another.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::{jobs::enqueue_at, now, ts};
use crate::{
    ids::{EventId, RunId, UserId},
    store::{
        DebounceState, DebounceWindow, EventTarget, StartedSync, StoreResult, SyncTarget, SyncTrigger,
        jobs::StepJob,
    },
};

pub async fn event_target(
    conn: &mut SqliteConnection,
    event_id: EventId,
) -> StoreResult<Option<EventTarget>> {
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

/// Everyone subscribed to what the event touched, and what each of them must re-sync (see
/// the PostgreSQL twin for the rules).
pub async fn subscribers(conn: &mut SqliteConnection, target: &EventTarget) -> StoreResult<Vec<SyncTarget>> {
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
        from subscriptions s
        where s.notion_id = $1
           or (s.kind = 'database' and (
                   s.notion_id = $3
                or s.notion_id = $4
                or exists (select 1 from json_each(s.data_source_ids) d where d.value in ($1, $3, $4))))
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

/// Whether sync run `run_id` of `user` writes what it read (see the PostgreSQL twin).
pub async fn sync_wanted(
    conn: &mut SqliteConnection,
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
                where f.user_id = $1 and f.source_page_id = $2 and f.container_id is not null
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
                            or exists (select 1 from json_each(s.data_source_ids) d
                                       where d.value in ($2, parent.id, $4)))))
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
    conn: &mut SqliteConnection,
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
    conn: &mut SqliteConnection,
    target: &SyncTarget,
    trigger: SyncTrigger,
    event_id: Option<EventId>,
    parent_id: Option<RunId>,
    window: DebounceWindow,
) -> StoreResult<StartedSync> {
    let quiet = if trigger.debounced() { window.quiet } else { std::time::Duration::ZERO };
    let now = Utc::now();
    let quiet_until = now + chrono::Duration::from_std(quiet).unwrap_or_default();
    let max_wait = chrono::Duration::from_std(window.max_wait).unwrap_or_default();

    let existing = sqlx::query(
        r#"
        select id, trigger, debounce_started_at, debounce_until from workflow_runs
        where workflow = 'notion_sync' and user_id = $1 and notion_id = $2
          and current_step = 'debounce' and state in ('pending', 'waiting')
        "#,
    )
    .bind(target.user_id)
    .bind(&target.notion_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        let run_id: RunId = row.get("id");
        let run_trigger: String = row.get("trigger");
        let started: DateTime<Utc> = row.get("debounce_started_at");
        let until: Option<DateTime<Utc>> = row.get("debounce_until");
        // A manual or first sync waiting in debounce runs now; otherwise the deadline moves
        // out by the quiet period, but never past the cap from the first event.
        let deadline = if matches!(run_trigger.as_str(), "manual" | "subscription") || quiet.is_zero() {
            until.map_or(now, |u| u.min(now))
        } else {
            quiet_until.min(started + max_wait)
        };
        // A manual or subscription sync that joins makes the run its own: later events join it
        // without deferring it again.
        let run_trigger = if trigger.debounced() { run_trigger.as_str() } else { trigger.as_str() };
        // A new subscription says what the content is (a page unsubscribed and followed again
        // as a database); others go by what the run was started as.
        let kind = matches!(trigger, SyncTrigger::Subscription).then_some(target.kind.as_str());
        let (seq, attempt): (i64, i32) = sqlx::query_as(
            r#"
            update workflow_runs
            set debounce_until = $2, next_run_at = $2, state = 'waiting', dispatch_seq = dispatch_seq + 1,
                updated_at = $3, trigger = $4, notion_kind = coalesce($5, notion_kind)
            where id = $1
            returning dispatch_seq, attempt
            "#,
        )
        .bind(run_id)
        .bind(ts(deadline))
        .bind(ts(now))
        .bind(run_trigger)
        .bind(kind)
        .fetch_one(&mut *conn)
        .await?;
        link_event(conn, run_id, event_id).await?;
        return Ok(StartedSync { run_id, job: StepJob { run_id, seq }, due: deadline, attempt });
    }

    let run_id = RunId::new();
    sqlx::query(
        r#"
        insert into workflow_runs (id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger,
            parent_id, dispatch_seq, debounce_started_at, debounce_until, next_run_at, created_at, updated_at)
        values ($1, 'notion_sync', 'waiting', 'debounce', $2, $3, $4, $5, $6, 1, $7, $8, $8, $7, $7)
        "#,
    )
    .bind(run_id)
    .bind(target.user_id)
    .bind(&target.notion_id)
    .bind(&target.kind)
    .bind(trigger.as_str())
    .bind(parent_id)
    .bind(ts(now))
    .bind(ts(quiet_until))
    .execute(&mut *conn)
    .await?;
    link_event(conn, run_id, event_id).await?;
    Ok(StartedSync { run_id, job: StepJob { run_id, seq: 1 }, due: quiet_until, attempt: 0 })
}

async fn link_event(
    conn: &mut SqliteConnection,
    run_id: RunId,
    event_id: Option<EventId>,
) -> StoreResult<()> {
    if let Some(event_id) = event_id {
        sqlx::query(
            r#"insert into workflow_run_events (run_id, event_id) values ($1, $2) on conflict do nothing"#,
        )
        .bind(run_id)
        .bind(event_id)
        .execute(conn)
        .await?;
    }
    Ok(())
}

pub async fn debounce_state(conn: &mut SqliteConnection, run_id: RunId) -> StoreResult<DebounceState> {
    let row = sqlx::query(
        r#"
        select r.debounce_until,
               exists (
                   select 1 from workflow_runs o
                   where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
                     and o.id <> r.id and o.current_step <> 'debounce'
                     and o.state in ('pending', 'running', 'waiting')
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

/// A sync of (user, content) ended: wake the next one, which may be waiting for it.
pub async fn wake_next_sync(
    conn: &mut SqliteConnection,
    user_id: UserId,
    notion_id: &str,
) -> StoreResult<()> {
    let now = now();
    let woken = sqlx::query(
        r#"
        update workflow_runs
        set next_run_at = max($3, coalesce(debounce_until, $3)), dispatch_seq = dispatch_seq + 1, updated_at = $3
        where workflow = 'notion_sync' and user_id = $1 and notion_id = $2
          and current_step = 'debounce' and state = 'waiting'
          and next_run_at > max($3, coalesce(debounce_until, $3))
        returning id, dispatch_seq, next_run_at
        "#,
    )
    .bind(user_id)
    .bind(notion_id)
    .bind(&now)
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

pub async fn merge_into_other_debouncing_sync(
    conn: &mut SqliteConnection,
    run_id: RunId,
) -> StoreResult<Option<RunId>> {
    let other: Option<RunId> = sqlx::query_scalar(
        r#"
        select o.id from workflow_runs o
        join workflow_runs r on r.id = $1
        where o.workflow = 'notion_sync' and o.user_id = r.user_id and o.notion_id = r.notion_id
          and o.id <> r.id and o.current_step = 'debounce' and o.state in ('pending', 'waiting')
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
