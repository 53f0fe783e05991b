//! `X-Notion-Signature: sha256=<hex>`: HMAC-SHA256 of the exact request body, keyed with the
//! subscription's verification token, compared in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Notion-Signature header is missing")]
    Missing,
    #[error("the X-Notion-Signature header must be `sha256=` followed by 64 hex digits")]
    Malformed,
    #[error("the X-Notion-Signature does not match the body")]
    Mismatch,
    #[error("no signing secret is configured and no verification token has been received yet")]
    NoSecret,
}

impl SignatureError {
    /// A short label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Mismatch => "signature_mismatch",
            SignatureError::NoSecret => "no_signing_secret",
        }
    }
}

/// The header value Notion would send for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` against `body`. Upper-case hex is accepted (as Notion's own SDK does); a
/// bare hex value without the `sha256=` prefix is not.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header.strip_prefix(PREFIX).ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"secret_test";

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let body = br#"{"type":"page.updated"}"#;
        assert_eq!(verify(SECRET, body, Some(&sign(SECRET, body))), Ok(()));
        assert_eq!(
            verify(SECRET, body, Some(&sign(SECRET, body).to_uppercase().replace("SHA256=", "sha256="))),
            Ok(())
        );
    }

    #[test]
    fn every_kind_of_bad_signature_is_rejected() {
        let body = b"{}";
        let good = sign(SECRET, body);
        assert_eq!(verify(SECRET, body, None), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, body, Some("")), Err(SignatureError::Malformed));
        assert_eq!(
            verify(SECRET, body, Some(good.trim_start_matches("sha256="))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, body, Some(&good.replace("sha256=", "sha1="))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(verify(SECRET, body, Some(&good[..good.len() - 2])), Err(SignatureError::Malformed));
        assert_eq!(verify(SECRET, b"{ }", Some(&good)), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", body, Some(&good)), Err(SignatureError::Mismatch));
    }
}
