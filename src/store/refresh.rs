//! Refreshing a user's Notion token: read the token with its refresh token, and store the pair
//! Notion traded them for only if the token is still the one that was read (a user reconnecting,
//! or a key rotation re-encrypting it, may have replaced it meanwhile). Both run on the
//! connection that holds the refresh lock (see [`crate::store::TokenRefreshLock`]), so a
//! refresh never needs a second connection from the pool while it holds one.
//!
//! The SQL is the same on both backends, so it is written once here and instantiated for each
//! backend's connection type.

/// Defines `refresh_credentials` and `replace_refreshed` on a `&mut $conn`.
macro_rules! notion_token_refresh_sql {
    ($conn:ty) => {
        /// The user's encrypted Notion token and refresh token. `None`: no token at all.
        pub(crate) async fn refresh_credentials(
            conn: &mut $conn,
            id: UserId,
        ) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
            let row: Option<(Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
                r#"select notion_token_ciphertext, notion_refresh_token_ciphertext from users where id = $1"#,
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.and_then(|(token, refresh)| token.map(|token| (token, refresh))))
        }

        /// Stores a refreshed token pair if the stored token is still `read` (byte for byte).
        /// `false`: it changed meanwhile, and the pair is not stored. `refresh: None` keeps the
        /// stored refresh token (Notion answered without a new one).
        pub(crate) async fn replace_refreshed(
            conn: &mut $conn,
            id: UserId,
            read: &[u8],
            token: &[u8],
            refresh: Option<&[u8]>,
        ) -> StoreResult<bool> {
            let updated = sqlx::query(
                r#"update users
                   set notion_token_ciphertext = $3,
                       notion_refresh_token_ciphertext = coalesce($4, notion_refresh_token_ciphertext)
                   where id = $1 and notion_token_ciphertext = $2"#,
            )
            .bind(id)
            .bind(read)
            .bind(token)
            .bind(refresh)
            .execute(&mut *conn)
            .await?;
            Ok(updated.rows_affected() == 1)
        }
    };
}
pub(crate) use notion_token_refresh_sql;
