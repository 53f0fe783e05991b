//! Users, their (encrypted) Notion tokens, and subscriptions.

use super::{SqliteStore, now, sync};
use crate::{
    ids::{NotionId, RunId, UserId},
    store::{
        DebounceWindow, NotionWorkspace, StoreResult, StoredNotionToken, SubscriptionRow, SyncTarget,
        SyncTrigger, TokenRefreshLock, UserError, UserRow, email_key,
    },
};

crate::store::refresh::notion_token_refresh_sql!(sqlx::SqliteConnection);

/// SQLite's "lock" on refreshing a user's token: one process uses the file, so the refresher's
/// own per-user lock is the whole lock; reads and writes go through the single writer.
pub struct SqliteTokenRefreshLock {
    writer: sqlx::SqlitePool,
    user: UserId,
}

impl SqliteTokenRefreshLock {
    pub async fn credentials(&mut self) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
        refresh_credentials(&mut *self.writer.acquire().await?, self.user).await
    }

    pub async fn replace(&mut self, read: &[u8], token: &[u8], refresh: Option<&[u8]>) -> StoreResult<bool> {
        replace_refreshed(&mut *self.writer.acquire().await?, self.user, read, token, refresh).await
    }
}

/// Whether a database error is a unique-constraint or foreign-key violation (SQLite names no
/// constraint, so the caller knows which one its statement can break).
fn violation(e: &sqlx::Error, kind: sqlx::error::ErrorKind) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == kind)
}

impl SqliteStore {
    pub async fn create_user(&self, email: &str) -> Result<UserRow, UserError> {
        let now = now();
        let result = sqlx::query_as::<_, UserRow>(
            r#"
            insert into users (id, email, email_key, created_at, updated_at) values ($1, $2, $4, $3, $3)
            returning id, email, notion_token_ciphertext is not null as notion_connected, notion_workspace_name,
                created_at
            "#,
        )
        .bind(UserId::new())
        .bind(email)
        .bind(&now)
        .bind(email_key(email))
        .fetch_one(&self.writer)
        .await;
        match result {
            Ok(user) => Ok(user),
            Err(e) if violation(&e, sqlx::error::ErrorKind::UniqueViolation) => {
                Err(UserError::DuplicateEmail)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user(&self, id: UserId) -> StoreResult<Option<UserRow>> {
        Ok(sqlx::query_as::<_, UserRow>(
            r#"
            select id, email, notion_token_ciphertext is not null as notion_connected, notion_workspace_name, created_at
            from users where id = $1
            "#,
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn set_notion_token(
        &self,
        id: UserId,
        ciphertext: &[u8],
        workspace: &NotionWorkspace,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            r#"
            update users
            set notion_token_ciphertext = $2, notion_workspace_id = $3, notion_workspace_name = $4,
                notion_bot_id = $5, notion_refresh_token_ciphertext = $7, notion_connected_at = $6, updated_at = $6
            where id = $1
            "#,
        )
        .bind(id)
        .bind(ciphertext)
        .bind(&workspace.workspace_id)
        .bind(&workspace.workspace_name)
        .bind(&workspace.bot_id)
        .bind(now())
        .bind(&workspace.refresh_ciphertext)
        .execute(&self.writer)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// One process uses the file: the refresher's own per-user lock is the whole lock.
    pub async fn token_refresh_lock(&self, id: UserId) -> StoreResult<TokenRefreshLock> {
        Ok(TokenRefreshLock::Sqlite(SqliteTokenRefreshLock { writer: self.writer.clone(), user: id }))
    }

    pub async fn notion_token(&self, id: UserId) -> StoreResult<Option<StoredNotionToken>> {
        let ciphertext: Option<Option<Vec<u8>>> =
            sqlx::query_scalar(r#"select notion_token_ciphertext from users where id = $1"#)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(ciphertext.flatten().map(|ciphertext| StoredNotionToken { ciphertext }))
    }

    pub async fn subscribe(
        &self,
        user_id: UserId,
        notion_id: &NotionId,
        kind: &str,
        window: DebounceWindow,
    ) -> Result<(SubscriptionRow, RunId), UserError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query_as::<_, SubscriptionRow>(
            r#"
            insert into subscriptions (id, user_id, notion_id, kind, created_at) values ($1, $2, $3, $4, $5)
            returning id, user_id, notion_id, kind, created_at, last_synced_at
            "#,
        )
        .bind(uuid::Uuid::now_v7())
        .bind(user_id)
        .bind(notion_id.as_str())
        .bind(kind)
        .bind(now())
        .fetch_one(&mut *tx)
        .await;
        let subscription = match inserted {
            Ok(row) => row,
            Err(e) if violation(&e, sqlx::error::ErrorKind::UniqueViolation) => {
                return Err(UserError::DuplicateSubscription);
            }
            Err(e) if violation(&e, sqlx::error::ErrorKind::ForeignKeyViolation) => {
                return Err(UserError::UnknownUser);
            }
            Err(e) => return Err(e.into()),
        };
        let target = SyncTarget { user_id, notion_id: notion_id.to_string(), kind: kind.to_owned() };
        let run_id = sync::start_or_join_sync(&mut tx, &target, SyncTrigger::Subscription, window).await?;
        tx.commit().await?;
        self.wake();
        Ok((subscription, run_id))
    }

    pub async fn subscriptions(&self, user_id: UserId) -> StoreResult<Vec<SubscriptionRow>> {
        Ok(sqlx::query_as::<_, SubscriptionRow>(
            r#"
            select id, user_id, notion_id, kind, created_at, last_synced_at
            from subscriptions where user_id = $1 order by created_at, id
            "#,
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn unsubscribe(&self, user_id: UserId, notion_id: &NotionId) -> StoreResult<bool> {
        let deleted = sqlx::query(r#"delete from subscriptions where user_id = $1 and notion_id = $2"#)
            .bind(user_id)
            .bind(notion_id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    pub async fn start_manual_sync(&self, target: &SyncTarget, window: DebounceWindow) -> StoreResult<RunId> {
        let mut tx = self.begin_write().await?;
        let run_id = sync::start_or_join_sync(&mut tx, target, SyncTrigger::Manual, window).await?;
        tx.commit().await?;
        self.wake();
        Ok(run_id)
    }
}
