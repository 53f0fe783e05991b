//! The service's own secrets (the management API token and the token-encryption key): taken
//! from the configuration, or created once in the data directory with owner-only permissions.
//! The service never runs an open management API and never logs a secret, only where it is.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use secrecy::SecretString;

use crate::{
    config::Config,
    crypto::{self, SecretCipher},
};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read or create {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}

/// The secrets a running service needs.
#[derive(Clone)]
pub struct ServiceSecrets {
    pub api_token: SecretString,
    pub cipher: SecretCipher,
}

pub const API_TOKEN_FILE: &str = "api_token";
pub const ENCRYPTION_KEY_FILE: &str = "token_encryption_key";

impl ServiceSecrets {
    pub fn load(config: &Config) -> Result<Self, SecretsError> {
        let api_token = match &config.api_token {
            Some(token) => token.clone(),
            None => {
                let path = config.data_dir.join(API_TOKEN_FILE);
                let token = read_or_create(&path, || crypto::random_token().into())?;
                tracing::info!(path = %path.display(), "API_TOKEN is not set; the management API token is in this file");
                token
            }
        };
        let key = match &config.token_encryption_key {
            Some(key) => key.clone(),
            // An explicit database is shared by instances that must all use one key, so config
            // validation requires the key there; only the embedded default creates its own.
            None => {
                let path = config.data_dir.join(ENCRYPTION_KEY_FILE);
                let key = read_or_create(&path, SecretCipher::generate_base64_key)?;
                tracing::info!(path = %path.display(), "TOKEN_ENCRYPTION_KEY is not set; using the key in this file");
                key
            }
        };
        Ok(Self { api_token, cipher: SecretCipher::from_base64_key(&key)? })
    }
}

/// Reads a secret file, or creates it (mode 0600, never overwriting one that a concurrent
/// process created first).
fn read_or_create(
    path: &Path,
    generate: impl FnOnce() -> SecretString,
) -> Result<SecretString, SecretsError> {
    use secrecy::ExposeSecret;
    let io_err = |source| SecretsError::Io { path: path.to_owned(), source };
    match fs::read_to_string(path) {
        Ok(existing) if !existing.trim().is_empty() => return Ok(existing.trim().to_owned().into()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err)?;
        restrict_permissions(dir, 0o700).map_err(io_err)?;
    }
    let secret = generate();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.expose_secret().as_bytes()).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            Ok(secret)
        }
        // Another process created it between our read and our create: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok(fs::read_to_string(path).map_err(io_err)?.trim().to_owned().into())
        }
        Err(e) => Err(io_err(e)),
    }
}

fn restrict_permissions(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_created_secret_is_reused_and_owner_only() {
        let dir = std::env::temp_dir().join(format!("cognie-secrets-{}", uuid::Uuid::new_v4()));
        let path = dir.join("token");
        let first = read_or_create(&path, || "one".to_string().into()).unwrap();
        let second = read_or_create(&path, || "two".to_string().into()).unwrap();
        assert_eq!(first.expose_secret(), "one");
        assert_eq!(second.expose_secret(), "one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
