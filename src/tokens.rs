//! Users' Notion tokens in use: opened (decrypted) for a sync or a reconciliation check, and
//! refreshed when Notion answers 401 to one.
//!
//! Notion's OAuth answer carries a refresh token next to the access token; how long an access
//! token lives is not documented, so the service does what Notion's guide says: on a 401,
//! trade the refresh token for a new pair (`POST /v1/oauth/token`, `grant_type:
//! refresh_token`), and only when that is refused ask the user to reconnect. A refresh may
//! rotate the refresh token (the old one then stops working), so two refreshes of one user's
//! token must never race: one refresher per user at a time (a lock in this process, and the
//! store's lock across processes), and each one first looks whether the token it was refused
//! has already been replaced (by the refresher before it, or by the user reconnecting) before
//! it asks Notion. A replaced token is simply used.
//!
//! A token set with `PUT /api/users/{id}/notion-token` (an internal integration's) has no
//! refresh token: a 401 to it fails the sync as before.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    crypto::{CryptoError, SecretCipher},
    ids::UserId,
    notion::{NotionClient, NotionError},
    store::{Store, StoreError},
};

/// The associated data a user's refresh token is encrypted with (distinct from the access
/// token's, so one ciphertext can never be passed off as the other).
pub fn refresh_token_owner(user: UserId) -> String {
    format!("{user}:refresh")
}

/// Opens and refreshes users' Notion tokens. Shared by the steps and the reconciler of a
/// process (its per-user locks only work if there is one per process).
pub struct NotionTokens {
    store: Store,
    cipher: SecretCipher,
    notion: NotionClient,
    /// `NOTION_CLIENT_ID` and `NOTION_CLIENT_SECRET`: refreshing needs them (not the redirect).
    client: Option<(String, SecretString)>,
    /// One lock per user being refreshed in this process; entries die with their last holder.
    refreshing: Mutex<HashMap<UserId, Weak<tokio::sync::Mutex<()>>>>,
}

/// A user's token, opened: the secret to send, and the stored value it came from (to tell
/// whether a refresh has replaced it since).
pub struct UserToken {
    ciphertext: Vec<u8>,
    secret: SecretString,
}

impl UserToken {
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// What a refresh gave.
pub enum Refreshed {
    /// Use this token instead (freshly refreshed, or already replaced by someone else).
    Token(UserToken),
    /// No usable token: the user must reconnect Notion. Says why.
    Reconnect(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token endpoint failed in a way that may pass (5xx, timeout, connection).
    #[error("refreshing the Notion token failed: {0}")]
    Notion(NotionError),
    /// A stored token or refresh token does not open with the key.
    #[error("a stored Notion token cannot be decrypted: {0}")]
    Undecryptable(#[from] CryptoError),
}

impl NotionTokens {
    pub fn new(
        store: Store,
        cipher: SecretCipher,
        notion: NotionClient,
        client: Option<(String, SecretString)>,
    ) -> Self {
        Self { store, cipher, notion, client, refreshing: Mutex::default() }
    }

    /// Opens the user's stored token.
    pub fn open(&self, user: UserId, ciphertext: Vec<u8>) -> Result<UserToken, CryptoError> {
        let secret = self.cipher.decrypt(&ciphertext, &user.to_string())?;
        Ok(UserToken { ciphertext, secret })
    }

    /// Notion answered 401 to `refused`: a token to use instead, or why there is none.
    pub async fn refresh(&self, user: UserId, refused: &UserToken) -> Result<Refreshed, RefreshError> {
        let Some((client_id, client_secret)) = &self.client else {
            return Ok(Refreshed::Reconnect(
                "Notion refused the user's token and it cannot be refreshed (NOTION_CLIENT_ID and NOTION_CLIENT_SECRET are not set); reconnect Notion or PUT a new token".to_owned(),
            ));
        };
        let local = self.local_lock(user);
        let _refreshing = local.lock().await;
        let lock = self.store.token_refresh_lock(user).await?;
        let refreshed = self.refresh_locked(user, refused, client_id, client_secret).await;
        if let Err(e) = lock.release().await {
            // Its connection is closed instead of reused, which releases it too.
            tracing::warn!(user_id = %user, error = %e, "could not release the token refresh lock");
        }
        refreshed
    }

    async fn refresh_locked(
        &self,
        user: UserId,
        refused: &UserToken,
        client_id: &str,
        client_secret: &SecretString,
    ) -> Result<Refreshed, RefreshError> {
        let Some((current, refresh)) = self.store.notion_refresh_credentials(user).await? else {
            return Ok(Refreshed::Reconnect("the user has no Notion token any more".to_owned()));
        };
        if current != refused.ciphertext {
            // Refreshed by whoever held the lock before, or the user reconnected.
            return Ok(Refreshed::Token(self.open(user, current)?));
        }
        let Some(refresh) = refresh else {
            return Ok(Refreshed::Reconnect(
                "Notion refused the user's token, and it has no refresh token (set with PUT, or Notion issued none); reconnect Notion or PUT a new token".to_owned(),
            ));
        };
        let refresh = self.cipher.decrypt(&refresh, &refresh_token_owner(user))?;
        let answer = self
            .notion
            .refresh_oauth_token(client_id, client_secret.expose_secret(), refresh.expose_secret())
            .await;
        let new = match answer {
            Ok(new) => new,
            Err(e) if e.is_retryable() => return Err(RefreshError::Notion(e)),
            Err(e) => {
                tracing::warn!(user_id = %user, error_kind = e.error_kind(), error = %e, "Notion refused to refresh the user's token");
                return Ok(Refreshed::Reconnect(format!(
                    "Notion refused the user's token and then its refresh token ({}); reconnect Notion",
                    e.error_kind()
                )));
            }
        };
        let ciphertext = self.cipher.encrypt(&new.access_token, &user.to_string());
        let new_refresh =
            new.refresh_token.as_deref().map(|r| self.cipher.encrypt(r, &refresh_token_owner(user)));
        let stored = self
            .store
            .replace_refreshed_notion_token(user, &refused.ciphertext, &ciphertext, new_refresh.as_deref())
            .await?;
        if !stored {
            // The user reconnected (or ops PUT a token) while Notion answered: theirs wins.
            return match self.store.notion_refresh_credentials(user).await? {
                Some((current, _)) => Ok(Refreshed::Token(self.open(user, current)?)),
                None => Ok(Refreshed::Reconnect("the user has no Notion token any more".to_owned())),
            };
        }
        tracing::info!(user_id = %user, rotated = new_refresh.is_some(), "refreshed the user's Notion token");
        Ok(Refreshed::Token(UserToken { ciphertext, secret: SecretString::from(new.access_token) }))
    }

    /// This process's lock on refreshing `user`'s token.
    fn local_lock(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refreshing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = locks.get(&user).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(user, Arc::downgrade(&lock));
        lock
    }
}
