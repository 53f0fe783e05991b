//! Flashcards: the idempotent persist of a sync's cards, and reading them back.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::{SqliteStore, now, ts};
use crate::{
    ids::{RunId, UserId},
    store::{CardRow, NewCard, PersistCounts, StoreResult, SyncRecord, SyncScope, SyncStatus},
};

/// Upserts `cards` for `user`, retires the cards in `scope` whose source is gone, and records
/// the sync, on the caller's (fenced) transaction. Running it twice has the same effect as
/// once: rows whose text did not change are not touched. A card last written by a sync that
/// started reading after this one is left as it is (see the PostgreSQL twin).
pub async fn persist_sync(
    conn: &mut SqliteConnection,
    user: UserId,
    run_id: RunId,
    scope: &SyncScope,
    cards: &[NewCard],
    record: &SyncRecord,
) -> StoreResult<PersistCounts> {
    let (counts, touched, held) = persist_cards(conn, user, run_id, scope, cards).await?;
    // The pages whose cards this sync changed besides its own: their hashes no longer say what
    // their cards hold (see the PostgreSQL twin).
    sqlx::query(
        r#"
        update sync_state set last_content_hash = null
        where user_id = $1 and notion_id <> $2 and last_content_hash is not null
          and notion_id in (select value from json_each($3))
        "#,
    )
    .bind(user)
    .bind(&record.notion_id)
    .bind(serde_json::to_string(&touched).expect("strings serialise"))
    .execute(&mut *conn)
    .await?;
    // Cards left to a later reader: this sync's hash would not say what they hold.
    let record = SyncRecord { content_hash: record.content_hash.clone().filter(|_| !held), ..record.clone() };
    record_sync(conn, user, run_id, &record).await?;
    Ok(counts)
}

async fn persist_cards(
    conn: &mut SqliteConnection,
    user: UserId,
    run_id: RunId,
    scope: &SyncScope,
    cards: &[NewCard],
) -> StoreResult<(PersistCounts, BTreeSet<String>, bool)> {
    let now = now();
    // The pages of the cards written or retired, and whether a later reader's cards were left.
    let mut touched = BTreeSet::new();
    let mut held = false;
    // When this sync started reading (at the latest its debounce deadline): a card written by
    // a sync that started later is left as it is.
    let read_from: Option<String> =
        sqlx::query_scalar(r#"select debounce_until from workflow_runs where id = $1"#)
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let mut counts = PersistCounts::default();
    for card in cards {
        let existing = sqlx::query(
            r#"
            select front, back, source_page_id, container_id, retired_at is not null as retired,
                   exists (select 1 from workflow_runs w
                           where w.id = flashcards.last_run_id and w.debounce_until > $4) as newer
            from flashcards
            where user_id = $1 and source_block_id = $2 and source_kind = $3
            "#,
        )
        .bind(user)
        .bind(&card.source_block_id)
        .bind(&card.source_kind)
        .bind(&read_from)
        .fetch_optional(&mut *conn)
        .await?;
        match existing {
            None => {
                sqlx::query(
                    r#"
                    insert into flashcards (id, user_id, source_page_id, source_block_id, source_kind, container_id,
                        front, back, created_at, updated_at, last_run_id)
                    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)
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
                .bind(&now)
                .bind(run_id)
                .execute(&mut *conn)
                .await?;
                touched.insert(card.source_page_id.clone());
                counts.created += 1;
            }
            Some(row) if row.get::<bool, _>("newer") => {
                held = true;
                counts.unchanged += 1;
            }
            Some(row)
                if (row.get::<String, _>("front") == card.front
                    && row.get::<String, _>("back") == card.back
                    && row.get::<String, _>("source_page_id") == card.source_page_id
                    && row.get::<Option<String>, _>("container_id") == card.container_id
                    && !row.get::<bool, _>("retired")) =>
            {
                counts.unchanged += 1;
            }
            Some(_) => {
                sqlx::query(
                    r#"
                    update flashcards
                    set front = $4, back = $5, source_page_id = $6, container_id = $7,
                        retired_at = null, updated_at = $8, last_run_id = $9
                    where user_id = $1 and source_block_id = $2 and source_kind = $3
                    "#,
                )
                .bind(user)
                .bind(&card.source_block_id)
                .bind(&card.source_kind)
                .bind(&card.front)
                .bind(&card.back)
                .bind(&card.source_page_id)
                .bind(&card.container_id)
                .bind(&now)
                .bind(run_id)
                .execute(&mut *conn)
                .await?;
                touched.insert(card.source_page_id.clone());
                counts.updated += 1;
            }
        }
    }
    let keep: Vec<[&str; 2]> =
        cards.iter().map(|c| [c.source_block_id.as_str(), c.source_kind.as_str()]).collect();
    let retired: Vec<String> = sqlx::query_scalar(
        r#"
        update flashcards
        set retired_at = $5, updated_at = $5, last_run_id = $6
        where user_id = $1 and retired_at is null
          and (source_page_id in (select value from json_each($2)) or ($3 is not null and container_id = $3))
          -- Not correlated, so SQLite builds the kept keys' index once: a correlated `not
          -- exists` over `json_each` walked every kept card for every card in scope (a database
          -- of 4,000 row cards took 9 s, holding the only writer).
          and (source_block_id, source_kind) not in (
              select keep.value ->> 0, keep.value ->> 1 from json_each($4) keep
          )
          and not exists (
              select 1 from workflow_runs w where w.id = flashcards.last_run_id and w.debounce_until > $7
          )
        returning source_page_id
        "#,
    )
    .bind(user)
    .bind(serde_json::to_string(&scope.pages).expect("strings serialise"))
    .bind(&scope.container)
    .bind(serde_json::to_string(&keep).expect("strings serialise"))
    .bind(&now)
    .bind(run_id)
    .bind(&read_from)
    .fetch_all(&mut *conn)
    .await?;
    counts.retired = retired.len() as u64;
    touched.extend(retired);
    // A card of the scope that is gone from this sync's but was written by a later reader.
    held = held
        || sqlx::query_scalar::<_, bool>(
            r#"
            select exists (
                select 1 from flashcards f join workflow_runs w on w.id = f.last_run_id
                where f.user_id = $1 and w.debounce_until > $4
                  and (f.source_page_id in (select value from json_each($2)) or ($3 is not null and f.container_id = $3)))
            "#,
        )
        .bind(user)
        .bind(serde_json::to_string(&scope.pages).expect("strings serialise"))
        .bind(&scope.container)
        .bind(&read_from)
        .fetch_one(&mut *conn)
        .await?;
    Ok((counts, touched, held))
}

/// Records a successful sync: its content hash (to skip unchanged content next time) and time
/// (also on its own, for a sync that found the content unchanged and so persists nothing).
pub async fn record_sync(
    conn: &mut SqliteConnection,
    user: UserId,
    run_id: RunId,
    record: &SyncRecord,
) -> StoreResult<()> {
    let SyncRecord { notion_id, content_hash, data_source_ids } = record;
    let now = now();
    sqlx::query(
        r#"
        insert into sync_state (user_id, notion_id, last_content_hash, last_synced_at, last_run_id)
        values ($1, $2, $3, $4, $5)
        on conflict (user_id, notion_id) do update
        set last_content_hash = excluded.last_content_hash, last_synced_at = excluded.last_synced_at,
            last_run_id = excluded.last_run_id
        "#,
    )
    .bind(user)
    .bind(notion_id)
    .bind(content_hash)
    .bind(&now)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"
        update subscriptions
        set last_synced_at = $3,
            data_source_ids = case when json_array_length($4) > 0 then json($4) else data_source_ids end
        where user_id = $1 and notion_id = $2
        "#,
    )
    .bind(user)
    .bind(notion_id)
    .bind(&now)
    .bind(serde_json::to_string(data_source_ids).expect("strings serialise"))
    .execute(conn)
    .await?;
    Ok(())
}

/// The content hash of the last successful sync of (user, content).
pub async fn last_content_hash(
    conn: &mut SqliteConnection,
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

impl SqliteStore {
    pub async fn last_content_hash(&self, user: UserId, notion_id: &str) -> StoreResult<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        last_content_hash(&mut conn, user, notion_id).await
    }

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
              and ($2 is null or source_page_id = $2 or container_id = $2)
              -- A row value, so the index seeks to the cursor (an `or` of the two cases scanned
              -- every earlier card of the user); '' and x'' sort before every time and id.
              and (created_at, id) > (coalesce($3, ''), coalesce($4, x''))
            order by created_at, id
            limit $5
            "#,
        )
        .bind(user)
        .bind(notion_id)
        .bind(cursor.map(|c| ts(c.0)))
        .bind(cursor.map(|c| c.1))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

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
        let last_synced_at: Option<String> = row.get("last_synced_at");
        Ok(SyncStatus {
            last_synced_at: last_synced_at
                .map(|at| DateTime::parse_from_rfc3339(&at).map(|t| t.with_timezone(&Utc)))
                .transpose()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            live_cards: row.get("live_cards"),
            known: row.get("known"),
        })
    }
}
