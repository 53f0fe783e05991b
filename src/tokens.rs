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
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    crypto::{CryptoError, SecretCipher},
    ids::UserId,
    notion::{NotionClient, NotionError},
    store::{Store, StoreError, TokenRefreshLock},
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
    /// Until when the token endpoint asked this process to slow down (its 429 or 529 with
    /// `Retry-After`): refreshers queued behind the one that met it do not ask again before
    /// then. The endpoint authenticates the integration, not the user, so this is for every
    /// user's refresh.
    slowed_until: Mutex<Option<Instant>>,
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

    /// The token as stored (encrypted).
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
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
    Unavailable(NotionError),
    /// The token endpoint refused our client (`invalid_client`: a wrong or rotated
    /// `NOTION_CLIENT_SECRET`) or the request: the operator's to fix, not the user's.
    #[error(
        "Notion refused to refresh the user's token: {0}; check NOTION_CLIENT_ID and NOTION_CLIENT_SECRET"
    )]
    Rejected(NotionError),
    /// A stored token or refresh token does not open with the key.
    #[error("a stored Notion token cannot be decrypted: {0}")]
    Undecryptable(#[from] CryptoError),
    /// The refresh's own task ended without an answer (it panicked).
    #[error("the token refresh was interrupted: {0}")]
    Interrupted(String),
}

/// How long storing a refreshed pair keeps being tried while the database is unavailable (a
/// restart or a failover): Notion may already have retired the old refresh token, so losing
/// the new pair means the user must reconnect. The refresh runs in a task of its own: a step
/// that stops waiting for it (its attempt's timeout) does not stop it.
const STORE_PATIENCE: Duration = Duration::from_secs(300);
const STORE_FIRST_PAUSE: Duration = Duration::from_millis(200);
const STORE_MAX_PAUSE: Duration = Duration::from_secs(15);

/// How long the token endpoint is left alone after a 429 or 529 that names no `Retry-After`.
const MIN_SLOW_DOWN: Duration = Duration::from_secs(1);

impl NotionTokens {
    pub fn new(
        store: Store,
        cipher: SecretCipher,
        notion: NotionClient,
        client: Option<(String, SecretString)>,
    ) -> Self {
        Self { store, cipher, notion, client, refreshing: Mutex::default(), slowed_until: Mutex::default() }
    }

    /// Opens the user's stored token.
    pub fn open(&self, user: UserId, ciphertext: Vec<u8>) -> Result<UserToken, CryptoError> {
        let secret = self.cipher.decrypt(&ciphertext, &user.to_string())?;
        Ok(UserToken { ciphertext, secret })
    }

    /// Notion answered 401 to `refused`: a token to use instead, or why there is none.
    ///
    /// The refresh runs in a task of its own, so a caller that gives up (a step's timeout, a
    /// lost lease, shutdown) does not cut it off between Notion's answer (which may retire the
    /// old refresh token) and storing the new pair.
    pub async fn refresh(
        self: &Arc<Self>,
        user: UserId,
        refused: &UserToken,
    ) -> Result<Refreshed, RefreshError> {
        if self.client.is_none() {
            return Ok(Refreshed::Reconnect(
                "Notion refused the user's token and it cannot be refreshed (NOTION_CLIENT_ID and NOTION_CLIENT_SECRET are not set); reconnect Notion or PUT a new token".to_owned(),
            ));
        }
        let (this, refused) = (self.clone(), refused.secret.clone());
        tokio::spawn(async move { this.refresh_exclusive(user, refused).await })
            .await
            .map_err(|e| RefreshError::Interrupted(e.to_string()))?
    }

    /// One refresher of `user`'s token at a time: in this process, then across processes.
    async fn refresh_exclusive(
        &self,
        user: UserId,
        refused: SecretString,
    ) -> Result<Refreshed, RefreshError> {
        let local = self.local_lock(user);
        let _refreshing = local.lock().await;
        let mut lock = self.store.token_refresh_lock(user).await?;
        let refreshed = self.refresh_locked(&mut lock, user, &refused).await;
        if let Err(e) = lock.release().await {
            // Its connection is closed instead of reused, which releases it too.
            tracing::warn!(user_id = %user, error = %e, "could not release the token refresh lock");
        }
        refreshed
    }

    async fn refresh_locked(
        &self,
        lock: &mut TokenRefreshLock,
        user: UserId,
        refused: &SecretString,
    ) -> Result<Refreshed, RefreshError> {
        let Some((current, refresh)) = lock.credentials().await? else {
            return Ok(Refreshed::Reconnect("the user has no Notion token any more".to_owned()));
        };
        // Compared as tokens, not ciphertexts: a key rotation re-encrypts without replacing.
        let current = self.open(user, current)?;
        if current.expose() != refused.expose_secret() {
            // Refreshed by whoever held the lock before, or the user reconnected.
            return Ok(Refreshed::Token(current));
        }
        let Some(refresh) = refresh else {
            return Ok(Refreshed::Reconnect(
                "Notion refused the user's token, and it has no refresh token (set with PUT, or Notion issued none); reconnect Notion or PUT a new token".to_owned(),
            ));
        };
        let refresh = self.cipher.decrypt(&refresh, &refresh_token_owner(user))?;
        if let Some(left) = self.slowed_for() {
            return Err(RefreshError::Unavailable(NotionError::still_slowed_down(left)));
        }
        let (client_id, client_secret) = self.client.as_ref().expect("checked by the caller");
        let answer = self
            .notion
            .refresh_oauth_token(client_id, client_secret.expose_secret(), refresh.expose_secret())
            .await;
        let new = match answer {
            Ok(new) => new,
            Err(e) if e.is_retryable() => {
                if e.asks_to_slow_down() {
                    self.slow_down(e.retry_after().unwrap_or(MIN_SLOW_DOWN).max(MIN_SLOW_DOWN));
                }
                return Err(RefreshError::Unavailable(e));
            }
            Err(e) if e.code() == Some("invalid_grant") => {
                // A refresher whose lock's session died meanwhile (see `PgTokenRefreshLock`) may
                // have traded the same refresh token first and stored the new pair: use it.
                if let Ok(Some((now, _))) = lock.credentials().await {
                    let now = self.open(user, now)?;
                    if now.expose() != refused.expose_secret() {
                        return Ok(Refreshed::Token(now));
                    }
                }
                tracing::warn!(user_id = %user, error_kind = e.error_kind(), error = %e, "Notion refused to refresh the user's token; the user must reconnect Notion");
                return Ok(Refreshed::Reconnect(format!(
                    "Notion refused the user's token and then its refresh token ({}); reconnect Notion",
                    e.error_kind()
                )));
            }
            Err(e) => {
                tracing::error!(user_id = %user, error_kind = e.error_kind(), error = %e, "Notion refused our request to refresh a token; check NOTION_CLIENT_ID and NOTION_CLIENT_SECRET");
                return Err(RefreshError::Rejected(e));
            }
        };
        let ciphertext = self.cipher.encrypt(&new.access_token, &user.to_string());
        let new_refresh =
            new.refresh_token.as_deref().map(|r| self.cipher.encrypt(r, &refresh_token_owner(user)));
        let mut read = current.ciphertext;
        let (mut waited, mut pause) = (Duration::ZERO, STORE_FIRST_PAUSE);
        loop {
            let changed = match lock.replace(&read, &ciphertext, new_refresh.as_deref()).await {
                Ok(true) => break,
                Ok(false) => lock.credentials().await,
                Err(e) => Err(e),
            };
            match changed {
                // Only re-encrypted (a key rotation): store over the new ciphertext.
                Ok(Some((now, _))) if self.open(user, now.clone())?.expose() == refused.expose_secret() => {
                    read = now
                }
                // The user reconnected (or ops PUT a token) while Notion answered: theirs wins.
                Ok(Some((now, _))) => return Ok(Refreshed::Token(self.open(user, now)?)),
                Ok(None) => {
                    return Ok(Refreshed::Reconnect("the user has no Notion token any more".to_owned()));
                }
                Err(e) if e.is_unavailable() && waited < STORE_PATIENCE => {
                    tracing::warn!(user_id = %user, error = %e, retry_in = ?pause, "the database is unavailable; storing the refreshed Notion token again");
                    tokio::time::sleep(pause).await;
                    waited += pause;
                    pause = (pause * 2).min(STORE_MAX_PAUSE);
                }
                Err(e) => {
                    tracing::error!(user_id = %user, error = %e, "a refreshed Notion token could not be stored; if Notion retired the old refresh token, the user must reconnect Notion");
                    return Err(e.into());
                }
            }
        }
        tracing::info!(user_id = %user, rotated = new_refresh.is_some(), "refreshed the user's Notion token");
        Ok(Refreshed::Token(UserToken { ciphertext, secret: SecretString::from(new.access_token) }))
    }

    /// How much longer the token endpoint's last request to slow down lasts, if it still does.
    fn slowed_for(&self) -> Option<Duration> {
        let until = (*self.slowed_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))?;
        until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    fn slow_down(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut slowed = self.slowed_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *slowed = Some(slowed.map_or(until, |before| before.max(until)));
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
