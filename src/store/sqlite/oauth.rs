//! OAuth `state` nonces: recorded when a state is issued, used up atomically by the callback.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SqliteStore, ago, now, ts};
use crate::{ids::UserId, store::StoreResult};

impl SqliteStore {
    pub async fn issue_oauth_state(
        &self,
        nonce: Uuid,
        user: UserId,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        sqlx::query(r#"delete from oauth_states where expires_at < $1"#)
            .bind(ago(std::time::Duration::from_secs(86_400)))
            .execute(&self.writer)
            .await?;
        let inserted = sqlx::query(
            r#"
            insert into oauth_states (nonce, user_id, created_at, expires_at)
            select $1, id, $4, $3 from users where id = $2
            "#,
        )
        .bind(nonce)
        .bind(user)
        .bind(ts(expires_at))
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// One conditional update, so two callbacks racing with one state cannot both win.
    pub async fn consume_oauth_state(&self, nonce: Uuid, user: UserId) -> StoreResult<bool> {
        let used = sqlx::query(
            r#"
            update oauth_states set used_at = $3
            where nonce = $1 and user_id = $2 and used_at is null and expires_at > $3
            "#,
        )
        .bind(nonce)
        .bind(user)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(used.rows_affected() == 1)
    }
}
