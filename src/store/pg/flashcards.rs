//! Flashcards: the idempotent persist of a sync's cards, and reading them back.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::{
    ids::{RunId, UserId},
    store::{CardRow, NewCard, PersistCounts, StoreResult, SyncScope, SyncStatus},
};

/// Upserts `cards` for `user` and retires the cards in `scope` whose source is gone, on the
/// caller's (fenced) transaction. Running it twice has the same effect as once: rows whose
/// text did not change are not touched.
pub async fn persist_cards(
    conn: &mut PgConnection,
    user: UserId,
    run_id: RunId,
    scope: &SyncScope,
    cards: &[NewCard],
) -> StoreResult<PersistCounts> {
    let mut counts = PersistCounts::default();
    for card in cards {
        let row = sqlx::query(
            r#"
            insert into flashcards (id, user_id, source_page_id, source_block_id, source_kind, container_id,
                front, back, last_run_id)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            on conflict (user_id, source_block_id, source_kind) do update
            set front = excluded.front, back = excluded.back, source_page_id = excluded.source_page_id,
                container_id = coalesce(excluded.container_id, flashcards.container_id),
                retired_at = null, updated_at = now(), last_run_id = excluded.last_run_id
            where (flashcards.front, flashcards.back, flashcards.source_page_id) is distinct from
                  (excluded.front, excluded.back, excluded.source_page_id)
               or flashcards.retired_at is not null
            returning (xmax = 0) as created
            "#,
        )
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(&card.source_page_id)
        .bind(&card.source_block_id)
        .bind(&card.source_kind)
        .bind(&card.container_id)
        .bind(&card.front)
        .bind(&card.back)
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?;
        match row.map(|r| r.get::<bool, _>("created")) {
            Some(true) => counts.created += 1,
            Some(false) => counts.updated += 1,
            None => counts.unchanged += 1,
        }
    }
    let keep_blocks: Vec<&str> = cards.iter().map(|c| c.source_block_id.as_str()).collect();
    let keep_kinds: Vec<&str> = cards.iter().map(|c| c.source_kind.as_str()).collect();
    let retired = sqlx::query(
        r#"
        update flashcards f
        set retired_at = now(), updated_at = now(), last_run_id = $5
        where f.user_id = $1 and f.retired_at is null
          and (f.source_page_id = any($2) or ($3::text is not null and f.container_id = $3))
          and not exists (
              select 1 from unnest($4::text[], $6::text[]) as keep(block_id, kind)
              where keep.block_id = f.source_block_id and keep.kind = f.source_kind
          )
        "#,
    )
    .bind(user)
    .bind(&scope.pages)
    .bind(&scope.container)
    .bind(&keep_blocks)
    .bind(run_id)
    .bind(&keep_kinds)
    .execute(&mut *conn)
    .await?;
    counts.retired = retired.rows_affected();
    Ok(counts)
}

/// Records a successful sync: its content hash (to skip unchanged content next time) and time.
pub async fn record_sync(
    conn: &mut PgConnection,
    user: UserId,
    notion_id: &str,
    run_id: RunId,
    content_hash: &str,
    data_source_ids: &[String],
) -> StoreResult<()> {
    sqlx::query(
        r#"
        insert into sync_state (user_id, notion_id, last_content_hash, last_synced_at, last_run_id)
        values ($1, $2, $3, now(), $4)
        on conflict (user_id, notion_id) do update
        set last_content_hash = excluded.last_content_hash, last_synced_at = now(), last_run_id = excluded.last_run_id
        "#,
    )
    .bind(user)
    .bind(notion_id)
    .bind(content_hash)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"
        update subscriptions
        set last_synced_at = now(),
            data_source_ids = case when cardinality($3::text[]) > 0 then $3 else data_source_ids end
        where user_id = $1 and notion_id = $2
        "#,
    )
    .bind(user)
    .bind(notion_id)
    .bind(data_source_ids)
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
        Ok(sqlx::query_as::<_, CardRow>(
            r#"
            select id, front, back, source_page_id, source_block_id, created_at, updated_at
            from flashcards
            where user_id = $1 and retired_at is null
              and ($2::text is null or source_page_id = $2 or container_id = $2)
              and ($3::timestamptz is null or (created_at, id) > ($3, $4))
            order by created_at, id
            limit $5
            "#,
        )
        .bind(user)
        .bind(notion_id)
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map(|c| c.1))
        .bind(limit)
        .fetch_all(&self.pool)
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
