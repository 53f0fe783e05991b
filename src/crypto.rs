//! Encryption at rest for secrets we must be able to read back (Notion tokens, the webhook
//! verification token): AES-256-GCM with a fresh random nonce per value and the owner bound as
//! associated data, so a ciphertext copied onto another row does not decrypt. Other keys the
//! service needs (e.g. for signing OAuth `state`) are derived from the same key per purpose.

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, Generate, Key, KeyInit, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

const NONCE_LEN: usize = 12;

/// Encrypts and decrypts small secrets under the service's `TOKEN_ENCRYPTION_KEY`.
#[derive(Clone)]
pub struct SecretCipher {
    cipher: Aes256Gcm,
    /// HMAC-SHA256 keyed with the same key, for [`SecretCipher::derive_key`].
    derivation: Hmac<Sha256>,
    /// `TOKEN_ENCRYPTION_KEY_PREVIOUS` during a key rotation: tried when the current key does
    /// not open a value, never used to encrypt.
    previous: Option<Aes256Gcm>,
}

/// Which key opened a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    Previous,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("TOKEN_ENCRYPTION_KEY must be 32 bytes encoded as base64")]
    BadKey,
    #[error("a stored secret could not be decrypted (wrong TOKEN_ENCRYPTION_KEY, or the row was altered)")]
    Undecryptable,
}

impl SecretCipher {
    /// Builds the cipher from a base64-encoded 32-byte key.
    pub fn from_base64_key(key: &SecretString) -> Result<Self, CryptoError> {
        let bytes = BASE64.decode(key.expose_secret().trim()).map_err(|_| CryptoError::BadKey)?;
        let key = Key::<Aes256Gcm>::try_from(&bytes[..]).map_err(|_| CryptoError::BadKey)?;
        let derivation = Hmac::<Sha256>::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { cipher: Aes256Gcm::new(&key), derivation, previous: None })
    }

    /// Also opens values encrypted under `previous` (the key being rotated out). Derived keys
    /// come from the current key only.
    pub fn with_previous_key(mut self, previous: &SecretString) -> Result<Self, CryptoError> {
        let bytes = BASE64.decode(previous.expose_secret().trim()).map_err(|_| CryptoError::BadKey)?;
        let key = Key::<Aes256Gcm>::try_from(&bytes[..]).map_err(|_| CryptoError::BadKey)?;
        self.previous = Some(Aes256Gcm::new(&key));
        Ok(self)
    }

    /// Whether a previous key is configured (a rotation is under way).
    pub fn has_previous_key(&self) -> bool {
        self.previous.is_some()
    }

    /// A 32-byte key for one purpose, derived from `TOKEN_ENCRYPTION_KEY` as
    /// HMAC-SHA256(key, `purpose`): every instance sharing the key derives the same one, keys
    /// for different purposes are independent, and none reveals the encryption key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.derivation.clone();
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A new random key, base64-encoded, for the embedded default's data directory.
    pub fn generate_base64_key() -> SecretString {
        BASE64.encode(Key::<Aes256Gcm>::generate()).into()
    }

    /// `nonce || ciphertext+tag`. `owner` (e.g. a user id) must be given again to decrypt.
    pub fn encrypt(&self, plaintext: &str, owner: &str) -> Vec<u8> {
        let nonce = Nonce::generate();
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: owner.as_bytes() })
            .expect("AES-GCM encryption of a small in-memory value cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn decrypt(&self, stored: &[u8], owner: &str) -> Result<SecretString, CryptoError> {
        self.decrypt_with(stored, owner).map(|(secret, _)| secret)
    }

    /// Decrypts with the current key, else the previous one, saying which opened it.
    pub fn decrypt_with(&self, stored: &[u8], owner: &str) -> Result<(SecretString, KeyUsed), CryptoError> {
        if stored.len() < NONCE_LEN {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Undecryptable)?;
        let payload = || Payload { msg: sealed, aad: owner.as_bytes() };
        let (plain, used) = match self.cipher.decrypt(&nonce, payload()) {
            Ok(plain) => (plain, KeyUsed::Current),
            Err(_) => match &self.previous {
                Some(previous) => (
                    previous.decrypt(&nonce, payload()).map_err(|_| CryptoError::Undecryptable)?,
                    KeyUsed::Previous,
                ),
                None => return Err(CryptoError::Undecryptable),
            },
        };
        let secret =
            String::from_utf8(plain).map(SecretString::from).map_err(|_| CryptoError::Undecryptable)?;
        Ok((secret, used))
    }

    /// `stored` encrypted under the current key instead, if the previous key is what opens it
    /// (`None`: it is already under the current key).
    pub fn reencrypt(&self, stored: &[u8], owner: &str) -> Result<Option<Vec<u8>>, CryptoError> {
        match self.decrypt_with(stored, owner)? {
            (_, KeyUsed::Current) => Ok(None),
            (secret, KeyUsed::Previous) => Ok(Some(self.encrypt(secret.expose_secret(), owner))),
        }
    }
}

/// 32 random bytes as URL-safe base64, for generated bearer tokens.
pub fn random_token() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    URL_SAFE_NO_PAD.encode(Key::<Aes256Gcm>::generate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_the_owner() {
        let cipher = SecretCipher::from_base64_key(&SecretCipher::generate_base64_key()).unwrap();
        let stored = cipher.encrypt("secret_abc", "user-1");
        assert!(!String::from_utf8_lossy(&stored).contains("secret_abc"));
        assert_eq!(cipher.decrypt(&stored, "user-1").unwrap().expose_secret(), "secret_abc");
        assert!(cipher.decrypt(&stored, "user-2").is_err(), "another owner must not decrypt it");
        assert_ne!(stored, cipher.encrypt("secret_abc", "user-1"), "nonces must differ");
    }

    #[test]
    fn derived_keys_are_stable_per_purpose_and_differ_between_purposes_and_keys() {
        let key = SecretCipher::generate_base64_key();
        let a = SecretCipher::from_base64_key(&key).unwrap();
        let b = SecretCipher::from_base64_key(&key).unwrap();
        assert_eq!(a.derive_key("oauth-state"), b.derive_key("oauth-state"));
        assert_ne!(a.derive_key("oauth-state"), a.derive_key("something-else"));
        let other = SecretCipher::from_base64_key(&SecretCipher::generate_base64_key()).unwrap();
        assert_ne!(a.derive_key("oauth-state"), other.derive_key("oauth-state"));
    }

    #[test]
    fn a_previous_key_opens_old_values_and_re_encryption_moves_them_to_the_current_key() {
        let (old_key, new_key) = (SecretCipher::generate_base64_key(), SecretCipher::generate_base64_key());
        let old = SecretCipher::from_base64_key(&old_key).unwrap();
        let stored = old.encrypt("secret_abc", "user-1");

        let new_only = SecretCipher::from_base64_key(&new_key).unwrap();
        assert!(new_only.decrypt(&stored, "user-1").is_err());
        let rotating = SecretCipher::from_base64_key(&new_key).unwrap().with_previous_key(&old_key).unwrap();
        let (secret, used) = rotating.decrypt_with(&stored, "user-1").unwrap();
        assert_eq!((secret.expose_secret(), used), ("secret_abc", KeyUsed::Previous));
        assert!(rotating.decrypt(&stored, "user-2").is_err(), "the owner is still bound");

        let moved = rotating.reencrypt(&stored, "user-1").unwrap().expect("re-encrypted");
        assert_eq!(new_only.decrypt(&moved, "user-1").unwrap().expose_secret(), "secret_abc");
        assert_eq!(rotating.reencrypt(&moved, "user-1").unwrap(), None, "already current");
        // New values are written under the current key only; derived keys follow it too.
        assert!(new_only.decrypt(&rotating.encrypt("x", "o"), "o").is_ok());
        assert_eq!(rotating.derive_key("p"), new_only.derive_key("p"));
    }

    #[test]
    fn rejects_keys_of_the_wrong_size() {
        assert!(SecretCipher::from_base64_key(&"c2hvcnQ=".to_string().into()).is_err());
        assert!(SecretCipher::from_base64_key(&"not base64!".to_string().into()).is_err());
    }
}
