//! The OAuth `state`: signed, bound to one user, expiring, and (with its nonce row in the
//! database) single use.
//!
//! Format: `<nonce>.<user id>.<expiry, unix seconds>.<signature>`, the ids as 32 hex digits and
//! the signature the URL-safe base64 of HMAC-SHA256 over everything before it, keyed with a
//! key derived from `TOKEN_ENCRYPTION_KEY` (so every instance sharing that key accepts the
//! states any of them issued). Nothing in it is secret; it must only be unforgeable.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit as _, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::{crypto::SecretCipher, ids::UserId};

/// Names the derived key, so it can never collide with a key for another purpose.
const KEY_PURPOSE: &str = "cognie-sync/oauth-state/v1";
/// Far longer than any state we issue (about 120 characters): anything longer is refused
/// before any work is done on it.
const MAX_STATE_LEN: usize = 256;

/// What a valid state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthState {
    pub nonce: Uuid,
    pub user: UserId,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the state is not one this service issues")]
    Malformed,
    #[error("the state's signature does not match")]
    BadSignature,
    #[error("the state has expired")]
    Expired,
}

/// Issues and checks states. Holds the derived key; never printed.
#[derive(Clone)]
pub struct StateSigner {
    key: [u8; 32],
    ttl: Duration,
}

impl StateSigner {
    pub fn new(cipher: &SecretCipher, ttl: Duration) -> Self {
        Self { key: cipher.derive_key(KEY_PURPOSE), ttl }
    }

    /// A new state for `user`, valid for the configured time from `now`.
    pub fn issue(&self, user: UserId, now: DateTime<Utc>) -> (String, OAuthState) {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        // Whole seconds, as carried in the state.
        let expires_at = DateTime::from_timestamp((now + ttl).timestamp(), 0).unwrap_or(now);
        let state = OAuthState { nonce: Uuid::new_v4(), user, expires_at };
        let payload = format!("{}.{}.{}", state.nonce.simple(), user.0.simple(), expires_at.timestamp());
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        (format!("{payload}.{signature}"), state)
    }

    /// Checks the signature (in constant time) and the expiry. Whether the state was already
    /// used is the database's to say.
    pub fn verify(&self, raw: &str, now: DateTime<Utc>) -> Result<OAuthState, StateError> {
        if raw.len() > MAX_STATE_LEN {
            return Err(StateError::Malformed);
        }
        let (payload, signature) = raw.rsplit_once('.').ok_or(StateError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| StateError::Malformed)?;
        self.mac(payload).verify_slice(&signature).map_err(|_| StateError::BadSignature)?;
        // Signed by us, so well formed unless the format changed under it.
        let mut parts = payload.split('.');
        let (Some(nonce), Some(user), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(StateError::Malformed);
        };
        let nonce = Uuid::try_parse(nonce).map_err(|_| StateError::Malformed)?;
        let user = Uuid::try_parse(user).map(UserId).map_err(|_| StateError::Malformed)?;
        let expires_at = expires
            .parse::<i64>()
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or(StateError::Malformed)?;
        if expires_at <= now {
            return Err(StateError::Expired);
        }
        Ok(OAuthState { nonce, user, expires_at })
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(payload.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(ttl_secs: u64) -> StateSigner {
        let cipher = SecretCipher::from_base64_key(&SecretCipher::generate_base64_key()).expect("key");
        StateSigner::new(&cipher, Duration::from_secs(ttl_secs))
    }

    #[test]
    fn an_issued_state_verifies_and_names_its_user() {
        let signer = signer(600);
        let user = UserId(Uuid::now_v7());
        let now = Utc::now();
        let (raw, issued) = signer.issue(user, now);
        assert!(raw.len() < MAX_STATE_LEN, "{raw}");
        assert!(raw.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "URL-safe: {raw}");
        let verified = signer.verify(&raw, now).expect("valid");
        assert_eq!(verified, issued);
        assert_eq!(verified.user, user);
        assert!(verified.expires_at > now + chrono::Duration::seconds(590));
    }

    #[test]
    fn a_state_expires() {
        let signer = signer(600);
        let now = Utc::now();
        let (raw, _) = signer.issue(UserId(Uuid::now_v7()), now);
        assert_eq!(signer.verify(&raw, now + chrono::Duration::seconds(601)), Err(StateError::Expired));
    }

    #[test]
    fn any_change_to_a_state_is_detected() {
        let signer = signer(600);
        let now = Utc::now();
        let (raw, _) = signer.issue(UserId(Uuid::now_v7()), now);
        // Another user's id, a later expiry, a changed signature: all refused.
        let (nonce, rest) = raw.split_once('.').expect("parts");
        let (_, rest) = rest.split_once('.').expect("parts");
        let other_user = format!("{nonce}.{}.{rest}", Uuid::now_v7().simple());
        assert_eq!(signer.verify(&other_user, now), Err(StateError::BadSignature));
        let (payload, sig) = raw.rsplit_once('.').expect("signature");
        let (head, _expiry) = payload.rsplit_once('.').expect("expiry");
        let later = format!("{head}.{}.{sig}", (now + chrono::Duration::days(1)).timestamp());
        assert_eq!(signer.verify(&later, now), Err(StateError::BadSignature));
        let flipped =
            format!("{payload}.{}", if sig.starts_with('A') { "B" } else { "A" }.to_owned() + &sig[1..]);
        assert_eq!(signer.verify(&flipped, now), Err(StateError::BadSignature));
        for garbage in ["", "x", "a.b.c.d", &"a".repeat(1000)] {
            assert!(signer.verify(garbage, now).is_err(), "{garbage}");
        }
    }

    #[test]
    fn a_state_from_another_key_is_refused() {
        let now = Utc::now();
        let (raw, _) = signer(600).issue(UserId(Uuid::now_v7()), now);
        assert_eq!(signer(600).verify(&raw, now), Err(StateError::BadSignature));
    }
}
