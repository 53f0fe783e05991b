//! Refreshing a user's Notion token: read the token with its refresh token, and store the pair
//! Notion traded them for only if the token is still the one that was refused (another worker,
//! or a user reconnecting, may have replaced it meanwhile).
//!
//! The SQL is the same on both backends, so it is written once here and instantiated for each
//! store with the pool its writes go through.

/// Implements `notion_refresh_credentials` and `replace_refreshed_notion_token` for a store
/// type whose field `$pool` is the pool to use.
macro_rules! notion_token_refresh_impl {
    ($store:ty, $pool:ident) => {
        impl $store {
            /// The user's encrypted Notion token and refresh token. `None`: no token at all.
            pub async fn notion_refresh_credentials(
                &self,
                id: UserId,
            ) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
                let row: Option<(Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
                    r#"select notion_token_ciphertext, notion_refresh_token_ciphertext from users where id = $1"#,
                )
                .bind(id)
                .fetch_optional(&self.$pool)
                .await?;
                Ok(row.and_then(|(token, refresh)| token.map(|token| (token, refresh))))
            }

            /// Stores a refreshed token pair if the token is still `refused`. `false`: it was
            /// replaced meanwhile, and the new pair is not stored. `refresh: None` keeps the
            /// stored refresh token (Notion answered without a new one).
            pub async fn replace_refreshed_notion_token(
                &self,
                id: UserId,
                refused: &[u8],
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
                .bind(refused)
                .bind(token)
                .bind(refresh)
                .execute(&self.$pool)
                .await?;
                Ok(updated.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use notion_token_refresh_impl;
