//! OAuth `state` nonces: recorded when a state is issued, used up atomically by the callback.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgStore;
use crate::{ids::UserId, store::StoreResult};

impl PgStore {
    /// Records a state issued to `user`, valid until `expires_at`. `false`: no such user.
    /// Also prunes states that expired more than a day ago (they can only be refused).
    pub async fn issue_oauth_state(
        &self,
        nonce: Uuid,
        user: UserId,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        sqlx::query(r#"delete from oauth_states where expires_at < now() - interval '1 day'"#)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            r#"insert into oauth_states (nonce, user_id, expires_at) select $1, id, $3 from users where id = $2"#,
        )
        .bind(nonce)
        .bind(user)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Uses up the state `nonce` issued to `user`: `true` exactly once, for an unexpired state;
    /// `false` when it is unknown, another user's, expired or already used. One conditional
    /// update, so two callbacks racing with one state cannot both win.
    pub async fn consume_oauth_state(&self, nonce: Uuid, user: UserId) -> StoreResult<bool> {
        let used = sqlx::query(
            r#"
            update oauth_states set used_at = now()
            where nonce = $1 and user_id = $2 and used_at is null and expires_at > now()
            "#,
        )
        .bind(nonce)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(used.rows_affected() == 1)
    }
}
