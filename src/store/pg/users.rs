//! Users, their (encrypted) Notion tokens, and subscriptions.

use sqlx::{PgConnection, Postgres, pool::PoolConnection};

use super::{PgStore, sync};
use crate::{
    ids::{NotionId, RunId, UserId},
    store::{
        DebounceWindow, NotionWorkspace, StoreResult, StoredNotionToken, SubscriptionRow, SyncTarget,
        SyncTrigger, TokenRefreshLock, UserError, UserRow, email_key,
    },
};

crate::store::refresh::notion_token_refresh_sql!(PgConnection);

/// PostgreSQL's lock on refreshing one user's Notion token: a session-level advisory lock on a
/// connection that is closed rather than returned to the pool if the refresh is dropped midway,
/// so the lock never outlives it. The refresh reads and writes on this same connection while
/// it works. If that connection fails (a restart, a failover, a killed session), the lock went
/// with it; reads and writes then go through the pool: storing a pair Notion has already
/// traded the old refresh token for must not depend on that one session, and the write needs
/// no lock (it only lands over the token that was read).
pub struct PgTokenRefreshLock {
    conn: PoolConnection<Postgres>,
    pool: sqlx::PgPool,
    user: UserId,
    /// The lock's connection failed: the lock is gone, go through the pool.
    lost: bool,
}

impl PgTokenRefreshLock {
    pub async fn credentials(&mut self) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
        let read = match self.lost {
            false => refresh_credentials(&mut self.conn, self.user).await,
            true => refresh_credentials(&mut *self.pool.acquire().await?, self.user).await,
        };
        self.lost |= read.as_ref().is_err_and(|e| e.is_unavailable());
        read
    }

    pub async fn replace(&mut self, read: &[u8], token: &[u8], refresh: Option<&[u8]>) -> StoreResult<bool> {
        let replaced = match self.lost {
            false => replace_refreshed(&mut self.conn, self.user, read, token, refresh).await,
            true => {
                replace_refreshed(&mut *self.pool.acquire().await?, self.user, read, token, refresh).await
            }
        };
        self.lost |= replaced.as_ref().is_err_and(|e| e.is_unavailable());
        replaced
    }

    pub async fn release(mut self) -> StoreResult<()> {
        if self.lost {
            // Went with its session; the connection is closed on drop.
            return Ok(());
        }
        sqlx::query(
            r#"select pg_advisory_unlock(hashtextextended('cognie-sync token refresh ' || $1::text, 0))"#,
        )
        .bind(self.user)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}

impl PgStore {
    pub async fn create_user(&self, email: &str) -> Result<UserRow, UserError> {
        let result = sqlx::query_as::<_, UserRow>(
            r#"
            insert into users (id, email, email_key) values ($1, $2, $3)
            returning id, email, notion_token_ciphertext is not null as notion_connected, notion_workspace_name, created_at
            "#,
        )
        .bind(UserId::new())
        .bind(email)
        .bind(email_key(email))
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(user) => Ok(user),
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_email_key") => {
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

    /// Stores an (already encrypted) Notion token for the user. `false`: no such user.
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
                notion_bot_id = $5, notion_refresh_token_ciphertext = $6, notion_connected_at = now(), updated_at = now()
            where id = $1
            "#,
        )
        .bind(id)
        .bind(ciphertext)
        .bind(&workspace.workspace_id)
        .bind(&workspace.workspace_name)
        .bind(&workspace.bot_id)
        .bind(&workspace.refresh_ciphertext)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Waits until no other process is refreshing the user's Notion token, and holds that lock.
    pub async fn token_refresh_lock(&self, id: UserId) -> StoreResult<TokenRefreshLock> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        sqlx::query(
            r#"select pg_advisory_lock(hashtextextended('cognie-sync token refresh ' || $1::text, 0))"#,
        )
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(TokenRefreshLock::Postgres(PgTokenRefreshLock {
            conn,
            pool: self.pool.clone(),
            user: id,
            lost: false,
        }))
    }

    pub async fn notion_token(&self, id: UserId) -> StoreResult<Option<StoredNotionToken>> {
        let ciphertext: Option<Option<Vec<u8>>> =
            sqlx::query_scalar(r#"select notion_token_ciphertext from users where id = $1"#)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(ciphertext.flatten().map(|ciphertext| StoredNotionToken { ciphertext }))
    }

    /// Subscribes the user and starts the first sync, in one transaction.
    pub async fn subscribe(
        &self,
        user_id: UserId,
        notion_id: &NotionId,
        kind: &str,
        window: DebounceWindow,
    ) -> Result<(SubscriptionRow, RunId), UserError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query_as::<_, SubscriptionRow>(
            r#"
            insert into subscriptions (id, user_id, notion_id, kind) values ($1, $2, $3, $4)
            returning id, user_id, notion_id, kind, created_at, last_synced_at
            "#,
        )
        .bind(uuid::Uuid::now_v7())
        .bind(user_id)
        .bind(notion_id.as_str())
        .bind(kind)
        .fetch_one(&mut *tx)
        .await;
        let subscription = match inserted {
            Ok(row) => row,
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("subscriptions_user_notion_key") => {
                return Err(UserError::DuplicateSubscription);
            }
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("subscriptions_user_id_fkey") => {
                return Err(UserError::UnknownUser);
            }
            Err(e) => return Err(e.into()),
        };
        let target = SyncTarget { user_id, notion_id: notion_id.to_string(), kind: kind.to_owned() };
        let run_id = start_sync(&mut tx, &target, SyncTrigger::Subscription, window).await?;
        tx.commit().await?;
        self.jobs_committed();
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

    /// `false`: there was no such subscription.
    pub async fn unsubscribe(&self, user_id: UserId, notion_id: &NotionId) -> StoreResult<bool> {
        let deleted = sqlx::query(r#"delete from subscriptions where user_id = $1 and notion_id = $2"#)
            .bind(user_id)
            .bind(notion_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Starts (or joins) a sync without debounce: a manual sync.
    pub async fn start_manual_sync(&self, target: &SyncTarget, window: DebounceWindow) -> StoreResult<RunId> {
        let mut tx = self.pool.begin().await?;
        let run_id = start_sync(&mut tx, target, SyncTrigger::Manual, window).await?;
        tx.commit().await?;
        self.jobs_committed();
        Ok(run_id)
    }
}

async fn start_sync(
    conn: &mut PgConnection,
    target: &SyncTarget,
    trigger: SyncTrigger,
    window: DebounceWindow,
) -> StoreResult<RunId> {
    sync::start_or_join_sync(conn, target, trigger, window).await
}
