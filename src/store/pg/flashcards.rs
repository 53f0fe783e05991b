//! Flashcards: the idempotent persist of a sync's cards, and reading them back.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::{
    ids::{RunId, UserId},
    store::{CardRow, NewCard, PersistCounts, StoreResult, SyncRecord, SyncScope, SyncStatus},
};

/// Upserts `cards` for `user`, retires the cards in `scope` whose source is gone, and records
/// the sync (its content hash and time, and on the subscription, the time and the database's
/// data source ids), on the caller's (fenced) transaction, in one statement whatever the number
/// of cards (a page with many toggles is not a round trip per card). Running it twice has the
/// same effect as once: rows whose text did not change are not touched.
///
/// The upsert and the retirement are two parts of one statement: both see the table as it was
/// before it, and they touch disjoint rows (the retirement spares every source in `cards`).
/// `cards` names each source once ([`NewCard::one_per_source`]): one statement cannot upsert a
/// row twice.
///
/// A card's database (`container_id`) is where its row page is now, whichever sync read it: a
/// row moved to another database, or out of one, changes it, so the old database's next sync
/// does not retire the card as its own.
///
/// The cards of a database's row are written by two keys' syncs: the row's own (its edits) and
/// the database's. Each key's content hash says what that key last wrote, so when a database's
/// sync changes a row's cards, the row's hash is cleared: the row's next sync compares its
/// content with cards it did not write, and must write them again rather than skip them as
/// unchanged (an edit the database's sync wrote, then undone before the row's own sync read
/// it, would otherwise stay on the card). The other way round is not needed: an undone row edit
/// is an event of the row's, whose own sync repairs the card (and clearing the database's hash
/// would make its next sync regenerate every row, paid for with the `openai` generator, whose
/// text differs run to run). Likewise a sync whose cards were partly left to a later reader
/// (below) records no hash.
///
/// A card last written by a sync that started reading after this one is left as it is: syncs
/// of one content run one after another, but a database's sync and a sync of one of its rows
/// (another content) may overlap, and a taken-over run may persist late; the later reader has
/// the newer text.
pub async fn persist_sync(
    conn: &mut PgConnection,
    user: UserId,
    run_id: RunId,
    scope: &SyncScope,
    cards: &[NewCard],
    record: &SyncRecord,
) -> StoreResult<PersistCounts> {
    let column = |f: fn(&NewCard) -> &str| cards.iter().map(f).collect::<Vec<&str>>();
    let ids: Vec<uuid::Uuid> = cards.iter().map(|_| uuid::Uuid::now_v7()).collect();
    let containers: Vec<Option<&str>> = cards.iter().map(|c| c.container_id.as_deref()).collect();
    let row = sqlx::query(
        r#"
        with me as (
            select debounce_until from workflow_runs where id = $2
        ), cards as (
            select * from unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
                as c(id, source_page_id, source_block_id, source_kind, container_id, front, back)
        ), upserted as (
            insert into flashcards (id, user_id, source_page_id, source_block_id, source_kind, container_id,
                front, back, last_run_id)
            select id, $1, source_page_id, source_block_id, source_kind, container_id, front, back, $2 from cards
            on conflict (user_id, source_block_id, source_kind) do update
            set front = excluded.front, back = excluded.back, source_page_id = excluded.source_page_id,
                container_id = excluded.container_id,
                retired_at = null, updated_at = now(), last_run_id = excluded.last_run_id
            where ((flashcards.front, flashcards.back, flashcards.source_page_id, flashcards.container_id)
                   is distinct from (excluded.front, excluded.back, excluded.source_page_id, excluded.container_id)
                   or flashcards.retired_at is not null)
              and not exists (
                  select 1 from workflow_runs w, me
                  where w.id = flashcards.last_run_id and w.debounce_until > me.debounce_until)
            returning (xmax = 0) as created, source_page_id
        ), retired as (
            update flashcards f
            set retired_at = now(), updated_at = now(), last_run_id = $2
            where f.user_id = $1 and f.retired_at is null
              and (f.source_page_id = any($3) or ($11::text is not null and f.container_id = $11))
              and not exists (
                  select 1 from cards k where k.source_block_id = f.source_block_id and k.source_kind = f.source_kind
              )
              and not exists (
                  select 1 from workflow_runs w, me where w.id = f.last_run_id and w.debounce_until > me.debounce_until
              )
            returning f.source_page_id
        ), others as (
            update sync_state s set last_content_hash = null
            where s.user_id = $1 and s.notion_id <> $12 and s.last_content_hash is not null
              and s.notion_id in (select source_page_id from upserted union select source_page_id from retired)
        ), held as (
            -- Cards of this sync's scope, or stored under the keys of the cards it writes (one
            -- that moved from another page is found by its key), that a later reader wrote:
            -- left as they are, so this sync's hash does not say what they hold. Three arms,
            -- each on its index, rather than one `or` that would read all the user's cards.
            select 1 from (
                select f.last_run_id from flashcards f where f.source_page_id = any($3) and f.user_id = $1
                union all
                select f.last_run_id from flashcards f where f.container_id = $11 and f.user_id = $1
                union all
                select f.last_run_id from flashcards f
                join cards k on k.source_block_id = f.source_block_id and k.source_kind = f.source_kind
                where f.user_id = $1
            ) f
            join workflow_runs w on w.id = f.last_run_id
            cross join me
            where w.debounce_until > me.debounce_until
            limit 1
        ), state as (
            insert into sync_state (user_id, notion_id, last_content_hash, last_synced_at, last_run_id)
            select $1, $12, case when exists (select 1 from held) then null else $13 end, now(), $2
            on conflict (user_id, notion_id) do update
            set last_content_hash = excluded.last_content_hash, last_synced_at = now(), last_run_id = excluded.last_run_id
        ), subscription as (
            update subscriptions
            set last_synced_at = now(),
                data_source_ids = case when cardinality($14::text[]) > 0 then $14 else data_source_ids end
            where user_id = $1 and notion_id = $12
        )
        select (select count(*) from upserted where created) as created,
               (select count(*) from upserted where not created) as updated,
               (select count(*) from retired) as retired
        "#,
    )
    .bind(user)
    .bind(run_id)
    .bind(&scope.pages)
    .bind(&ids)
    .bind(column(|c| &c.source_page_id))
    .bind(column(|c| &c.source_block_id))
    .bind(column(|c| &c.source_kind))
    .bind(&containers)
    .bind(column(|c| &c.front))
    .bind(column(|c| &c.back))
    .bind(&scope.container)
    .bind(&record.notion_id)
    .bind(&record.content_hash)
    .bind(&record.data_source_ids)
    .fetch_one(&mut *conn)
    .await?;
    let count = |name: &str| row.get::<i64, _>(name) as u64;
    let (created, updated) = (count("created"), count("updated"));
    Ok(PersistCounts {
        created,
        updated,
        retired: count("retired"),
        unchanged: cards.len() as u64 - created - updated,
    })
}

/// Records a sync that persisted nothing because the content was unchanged: its time (and run)
/// on the sync state, and on the subscription its time and the database's data source ids, as
/// [`persist_sync`] does for the others. The hash stays what it is.
pub async fn record_sync(
    conn: &mut PgConnection,
    user: UserId,
    run_id: RunId,
    record: &SyncRecord,
) -> StoreResult<()> {
    sqlx::query(
        r#"
        with state as (
            insert into sync_state (user_id, notion_id, last_content_hash, last_synced_at, last_run_id)
            values ($1, $3, $4, now(), $2)
            on conflict (user_id, notion_id) do update
            set last_content_hash = excluded.last_content_hash, last_synced_at = now(), last_run_id = excluded.last_run_id
        )
        update subscriptions
        set last_synced_at = now(),
            data_source_ids = case when cardinality($5::text[]) > 0 then $5 else data_source_ids end
        where user_id = $1 and notion_id = $3
        "#,
    )
    .bind(user)
    .bind(run_id)
    .bind(&record.notion_id)
    .bind(&record.content_hash)
    .bind(&record.data_source_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// The content hash of the last successful sync of (user, content).
pub async fn last_content_hash(
    conn: &mut PgConnection,
    user: UserId,
    notion_id: &str,
) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        r#"select last_content_hash from sync_state where user_id = $1 and notion_id = $2"#,
    )
    .bind(user)
    .bind(notion_id)
    .fetch_optional(conn)
    .await?
    .flatten())
}

impl PgStore {
    pub async fn last_content_hash(&self, user: UserId, notion_id: &str) -> StoreResult<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        last_content_hash(&mut conn, user, notion_id).await
    }

    /// A user's live cards, oldest first, optionally only those from one page or database,
    /// after `cursor` (created_at, id); at most `limit`.
    pub async fn live_cards(
        &self,
        user: UserId,
        notion_id: Option<&str>,
        cursor: Option<(DateTime<Utc>, uuid::Uuid)>,
        limit: i64,
    ) -> StoreResult<Vec<CardRow>> {
        // A card's `created_at` is its transaction's start (`now()`), and it becomes visible
        // at that transaction's commit, which may come after cards created later have been
        // listed: a client paging past them would never see it. So a page stops short of the
        // oldest transaction the service (this application name) has open on this database
        // (cards created from then on may still be joined by earlier ones); they come on a
        // later call with the same cursor. The service's transactions are short (and cut off
        // by `idle_in_transaction_session_timeout`); other clients' are not waited for, nor
        // are sessions waiting for a user's token refresh lock (an advisory lock, taken by a
        // statement of its own that writes nothing, and that can wait for a whole Notion call).
        //
        // The frontier is read by a statement before the cards': a statement sees the data as
        // of its start but reads `pg_stat_activity` later, so a transaction committing in
        // between would be neither open nor visible to a single statement, and its cards would
        // be paged past. Read first, every transaction older than the frontier has ended by the
        // time the cards are read. With none open, the frontier is that first statement's
        // start: a transaction beginning between the two statements must not be passed either.
        let mut conn = self.pool.acquire().await?;
        let frontier: DateTime<Utc> = sqlx::query_scalar(
            r#"
            select least(min(xact_start), statement_timestamp()) from pg_stat_activity
            where datname = current_database() and application_name = current_setting('application_name')
              and pid <> pg_backend_pid() and xact_start is not null
              and (wait_event_type, wait_event) is distinct from ('Lock', 'advisory')
            "#,
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(sqlx::query_as::<_, CardRow>(
            r#"
            select id, front, back, source_page_id, source_block_id, created_at, updated_at
            from flashcards
            where user_id = $1 and retired_at is null
              and ($2::text is null or source_page_id = $2 or container_id = $2)
              and ($3::timestamptz is null or (created_at, id) > ($3, $4))
              and created_at < $6
            order by created_at, id
            limit $5
            "#,
        )
        .bind(user)
        .bind(notion_id)
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map(|c| c.1))
        .bind(limit)
        .bind(frontier)
        .fetch_all(&mut *conn)
        .await?)
    }
}

impl PgStore {
    /// Sync facts about `notion_id` across users: when it last synced, how many live cards it
    /// has, and whether the service knows it at all (a subscription, a sync or a card).
    pub async fn sync_status(&self, notion_id: &str) -> StoreResult<SyncStatus> {
        let row = sqlx::query(
            r#"
            select
                (select max(last_synced_at) from sync_state where notion_id = $1) as last_synced_at,
                (select count(*) from flashcards
                 where retired_at is null and (source_page_id = $1 or container_id = $1)) as live_cards,
                exists (select 1 from subscriptions where notion_id = $1)
                    or exists (select 1 from workflow_runs where notion_id = $1 and workflow = 'notion_sync')
                    or exists (select 1 from flashcards where source_page_id = $1 or container_id = $1) as known
            "#,
        )
        .bind(notion_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(SyncStatus {
            last_synced_at: row.get("last_synced_at"),
            live_cards: row.get("live_cards"),
            known: row.get("known"),
        })
    }
}
