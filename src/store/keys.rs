//! The encrypted secrets at rest, for moving them to a new `TOKEN_ENCRYPTION_KEY`: users' Notion
//! tokens (and their OAuth refresh tokens), the webhook verification tokens and the service's own
//! shared secrets (`service_secrets`). A value is replaced only if it is still what was
//! read, so several instances re-encrypting at once (or a user reconnecting meanwhile) never
//! overwrite each other.
//!
//! The SQL is the same on both backends, so it is written once here and instantiated for each
//! store with the pool its writes go through.

/// Implements `encrypted_secrets` and `replace_encrypted_secret` for a store type whose field
/// `$pool` is the pool to use.
macro_rules! encrypted_secrets_impl {
    ($store:ty, $pool:ident) => {
        impl $store {
            /// The encrypted values at rest, with where they live: users' tokens first, at most
            /// `limit` in all (`i64::MAX`: every one).
            pub async fn encrypted_secrets(&self, limit: i64) -> StoreResult<Vec<(SecretRow, Vec<u8>)>> {
                let users: Vec<(UserId, Vec<u8>)> = sqlx::query_as(
                    r#"select id, notion_token_ciphertext from users where notion_token_ciphertext is not null order by id limit $1"#,
                )
                .bind(limit)
                .fetch_all(&self.$pool)
                .await?;
                let refresh: Vec<(UserId, Vec<u8>)> = sqlx::query_as(
                    r#"select id, notion_refresh_token_ciphertext from users where notion_refresh_token_ciphertext is not null order by id limit $1"#,
                )
                .bind(limit)
                .fetch_all(&self.$pool)
                .await?;
                let tokens: Vec<(i64, Vec<u8>)> =
                    sqlx::query_as(r#"select id, token_ciphertext from webhook_verification_tokens order by id limit $1"#)
                        .bind(limit)
                        .fetch_all(&self.$pool)
                        .await?;
                let service: Vec<(String, Vec<u8>)> =
                    sqlx::query_as(r#"select name, ciphertext from service_secrets order by name limit $1"#)
                        .bind(limit)
                        .fetch_all(&self.$pool)
                        .await?;
                Ok(users
                    .into_iter()
                    .map(|(id, ct)| (SecretRow::UserNotionToken(id), ct))
                    .chain(refresh.into_iter().map(|(id, ct)| (SecretRow::UserNotionRefreshToken(id), ct)))
                    .chain(tokens.into_iter().map(|(id, ct)| (SecretRow::VerificationToken(id), ct)))
                    .chain(service.into_iter().map(|(name, ct)| (SecretRow::ServiceSecret(name), ct)))
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .collect())
            }

            /// Replaces one encrypted value, if it is still `old`. `false`: it changed meanwhile.
            pub async fn replace_encrypted_secret(
                &self,
                row: SecretRow,
                old: &[u8],
                new: &[u8],
            ) -> StoreResult<bool> {
                let result = match &row {
                    SecretRow::UserNotionToken(id) | SecretRow::UserNotionRefreshToken(id) => {
                        let sql = match row {
                            SecretRow::UserNotionToken(_) => {
                                r#"update users set notion_token_ciphertext = $3
                                   where id = $1 and notion_token_ciphertext = $2"#
                            }
                            _ => {
                                r#"update users set notion_refresh_token_ciphertext = $3
                                   where id = $1 and notion_refresh_token_ciphertext = $2"#
                            }
                        };
                        sqlx::query(sql).bind(*id).bind(old).bind(new).execute(&self.$pool).await?
                    }
                    SecretRow::ServiceSecret(name) => {
                        sqlx::query(
                            r#"update service_secrets set ciphertext = $3 where name = $1 and ciphertext = $2"#,
                        )
                        .bind(name)
                        .bind(old)
                        .bind(new)
                        .execute(&self.$pool)
                        .await?
                    }
                    SecretRow::VerificationToken(id) => {
                        sqlx::query(
                            r#"update webhook_verification_tokens set token_ciphertext = $3
                               where id = $1 and token_ciphertext = $2"#,
                        )
                        .bind(*id)
                        .bind(old)
                        .bind(new)
                        .execute(&self.$pool)
                        .await?
                    }
                };
                Ok(result.rows_affected() == 1)
            }

            /// The service secret `name` as stored: `generated` if none was (it is stored now),
            /// else the one the first instance stored (a concurrent first start included).
            pub async fn service_secret(&self, name: &str, generated: &[u8]) -> StoreResult<Vec<u8>> {
                sqlx::query(r#"insert into service_secrets (name, ciphertext) values ($1, $2) on conflict (name) do nothing"#)
                    .bind(name)
                    .bind(generated)
                    .execute(&self.$pool)
                    .await?;
                // A statement of its own: one that started before a concurrent insert committed
                // would not see its row.
                Ok(sqlx::query_scalar(r#"select ciphertext from service_secrets where name = $1"#)
                    .bind(name)
                    .fetch_one(&self.$pool)
                    .await?)
            }
        }
    };
}
pub(crate) use encrypted_secrets_impl;
