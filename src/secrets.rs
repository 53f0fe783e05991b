//! The service's own secrets (the management API token and the token-encryption key): taken
//! from the configuration, or created once in the data directory with owner-only permissions.
//! On PostgreSQL, whose instances must all accept one API token, a token no setting gave is
//! created once in the database (encrypted) and copied into each instance's data directory.
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
    store::{BackendKind, SecretRow, Store, StoreError},
    webhook::intake::VERIFICATION_TOKEN_AAD,
};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read or create {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("TOKEN_ENCRYPTION_KEY_PREVIOUS must be 32 bytes encoded as base64")]
    BadPreviousKey,
    #[error(
        "TOKEN_ENCRYPTION_KEY opens none of the secrets stored in the database: it is not the key they \
         were stored under. To change keys, set TOKEN_ENCRYPTION_KEY_PREVIOUS to the old one (see \
         \"Rotating secrets\" in the README)"
    )]
    NotTheStoredSecretsKey,
    #[error(
        "neither TOKEN_ENCRYPTION_KEY nor TOKEN_ENCRYPTION_KEY_PREVIOUS opens any of the secrets stored \
         in the database: one of them is not the key they were stored under (see \"Rotating secrets\" \
         in the README)"
    )]
    NeitherKeyOpensStoredSecrets,
    #[error(
        "the management API token stored in the database (table service_secrets, name 'api_token') does \
         not open with TOKEN_ENCRYPTION_KEY, though the other stored secrets do: set API_TOKEN, or delete \
         that row to have every instance share a new one"
    )]
    SharedApiTokenUnreadable,
    #[error("re-encrypting stored secrets under the new TOKEN_ENCRYPTION_KEY: {0}")]
    Reencrypting(StoreError),
    #[error("{path} is empty: another process is writing it, or it was emptied; delete it and start again")]
    EmptySecretFile { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The secrets a running service needs.
#[derive(Clone)]
pub struct ServiceSecrets {
    pub api_token: SecretString,
    pub cipher: SecretCipher,
}

pub const API_TOKEN_FILE: &str = "api_token";
pub const ENCRYPTION_KEY_FILE: &str = "token_encryption_key";

/// The management API token's name in `service_secrets` (PostgreSQL without `API_TOKEN`).
const API_TOKEN_SECRET: &str = "api_token";

impl ServiceSecrets {
    /// The secrets from the configuration, else from the data directory (created there the
    /// first time), else, for the API token on PostgreSQL, from `store` (copied into the data
    /// directory only by a process that `serves_api`: a worker machine has no use for it).
    pub async fn load(config: &Config, store: &Store, serves_api: bool) -> Result<Self, SecretsError> {
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
        let mut cipher = SecretCipher::from_base64_key(&key)?;
        if let Some(previous) = &config.token_encryption_key_previous {
            cipher = cipher.with_previous_key(previous).map_err(|_| SecretsError::BadPreviousKey)?;
        }
        // Before anything is stored under the key: a wrong key must be refused, not judged
        // right by the one secret it just stored itself.
        check_or_rotate(store, &cipher).await?;
        let path = config.data_dir.join(API_TOKEN_FILE);
        let api_token = match (&config.api_token, config.database_backend()) {
            (Some(token), _) => token.clone(),
            (None, BackendKind::Sqlite) => {
                let token = read_or_create(&path, || crypto::random_token().into())?;
                tracing::info!(path = %path.display(), "API_TOKEN is not set; the management API token is in this file");
                token
            }
            // A token of each instance's own would have a load balancer refuse most calls.
            (None, BackendKind::Postgres) => {
                let token = shared_api_token(store, &cipher).await?;
                // The copy is for ops to read; the token itself is in the database. A data
                // directory this process cannot write (a read-only file system) costs the copy
                // on this machine, not the start.
                if serves_api {
                    match write_copy(&path, &token) {
                        Ok(()) => tracing::info!(
                            path = %path.display(),
                            "API_TOKEN is not set; the management API token, the same for every instance on \
                             this database, is in this file"
                        ),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "API_TOKEN is not set and the shared management API token could not be copied \
                             into DATA_DIR; read it from another instance's DATA_DIR/api_token, or set API_TOKEN"
                        ),
                    }
                }
                token
            }
        };
        Ok(Self { api_token, cipher })
    }
}

/// The API token every instance on the database shares: the one stored, or a new one stored
/// now by the first instance to start.
async fn shared_api_token(store: &Store, cipher: &SecretCipher) -> Result<SecretString, SecretsError> {
    let owner = secret_owner(&SecretRow::ServiceSecret(API_TOKEN_SECRET.to_owned()));
    let generated = cipher.encrypt(&crypto::random_token(), &owner);
    let stored = store.service_secret(API_TOKEN_SECRET, &generated).await?;
    // The key check passed, so the key opens the other secrets: this row alone is damaged, or
    // was stored under a key since lost.
    cipher.decrypt(&stored, &owner).map_err(|_| SecretsError::SharedApiTokenUnreadable)
}

/// The start-up check of `TOKEN_ENCRYPTION_KEY` against the secrets already stored: during a
/// rotation (a previous key set), every stored secret is moved to the new key; otherwise a
/// sample is opened ([`check_key_opens_stored_secrets`]).
async fn check_or_rotate(store: &Store, cipher: &SecretCipher) -> Result<(), SecretsError> {
    if !cipher.has_previous_key() {
        return check_key_opens_stored_secrets(store, cipher).await;
    }
    let done = reencrypt_stored_secrets(store, cipher).await.map_err(SecretsError::Reencrypting)?;
    if done.unreadable > 0 && done.moved + done.current == 0 {
        // Neither key opens anything stored: a wrong key (or a wrong `DATA_DIR` the key was
        // read from), not a damaged row. Starting would fail every sync.
        return Err(SecretsError::NeitherKeyOpensStoredSecrets);
    }
    if done.unreadable == 0 {
        tracing::info!(
            moved = done.moved,
            already_current = done.current,
            "key rotation: every stored secret is under TOKEN_ENCRYPTION_KEY; once every instance \
             runs with it, TOKEN_ENCRYPTION_KEY_PREVIOUS can be removed"
        );
    } else {
        tracing::warn!(
            moved = done.moved,
            already_current = done.current,
            unreadable = done.unreadable,
            "key rotation: some stored secrets open with neither key (see the errors above)"
        );
    }
    Ok(())
}

/// What [`reencrypt_stored_secrets`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reencrypted {
    /// Moved from the previous key to the current one.
    pub moved: usize,
    /// Already under the current key.
    pub current: usize,
    /// Opened by neither key (logged by row, never by content).
    pub unreadable: usize,
}

/// During a key rotation (`TOKEN_ENCRYPTION_KEY_PREVIOUS` set), moves every stored secret
/// still under the previous key to the current one. Idempotent, and safe with several
/// instances doing it at once: each value is replaced only if it is unchanged since read.
pub async fn reencrypt_stored_secrets(
    store: &Store,
    cipher: &SecretCipher,
) -> Result<Reencrypted, StoreError> {
    let mut done = Reencrypted::default();
    for (row, stored) in store.encrypted_secrets(i64::MAX).await? {
        match cipher.reencrypt(&stored, &secret_owner(&row)) {
            Ok(None) => done.current += 1,
            Ok(Some(new)) => {
                // Lost a race: someone else re-encrypted (or replaced) it; either way it is current.
                store.replace_encrypted_secret(row, &stored, &new).await?;
                done.moved += 1;
            }
            Err(_) => {
                tracing::error!(row = ?row, "a stored secret opens with neither TOKEN_ENCRYPTION_KEY nor TOKEN_ENCRYPTION_KEY_PREVIOUS");
                done.unreadable += 1;
            }
        }
    }
    Ok(done)
}

/// How many stored secrets start-up tries to open when no rotation is under way.
const KEY_CHECK_SAMPLE: i64 = 16;

/// Whether the key opens the secrets already stored, checked at start-up: a
/// `TOKEN_ENCRYPTION_KEY` changed without `TOKEN_ENCRYPTION_KEY_PREVIOUS` (or set for the first
/// time where the embedded default's key file made them) would otherwise start cleanly and then
/// fail every sync (`notion_token_undecryptable`), and every webhook if the handshake token
/// signs them. `Err`: none of the first few opens (the key is not theirs); one that does not
/// open among others that do is only logged (a damaged row, not a wrong key).
pub async fn check_key_opens_stored_secrets(
    store: &Store,
    cipher: &SecretCipher,
) -> Result<(), SecretsError> {
    // Only the sample is read: every start of every instance makes this check.
    let sample = store.encrypted_secrets(KEY_CHECK_SAMPLE).await?;
    let unreadable: Vec<&SecretRow> = sample
        .iter()
        .filter(|(row, ct)| cipher.decrypt(ct, &secret_owner(row)).is_err())
        .map(|(row, _)| row)
        .collect();
    if unreadable.is_empty() {
        return Ok(());
    }
    if unreadable.len() < sample.len() {
        for row in unreadable {
            tracing::error!(row = ?row, "a stored secret does not open with TOKEN_ENCRYPTION_KEY");
        }
        return Ok(());
    }
    Err(SecretsError::NotTheStoredSecretsKey)
}

/// The associated data a stored secret was encrypted with.
fn secret_owner(row: &SecretRow) -> String {
    match row {
        SecretRow::UserNotionToken(user) => user.to_string(),
        SecretRow::UserNotionRefreshToken(user) => crate::tokens::refresh_token_owner(*user),
        SecretRow::VerificationToken(_) => VERIFICATION_TOKEN_AAD.to_owned(),
        SecretRow::ServiceSecret(name) => format!("service-secret:{name}"),
    }
}

/// Makes the file at `path` hold `secret` (mode 0600): left alone if it already does, else
/// replaced whole (renamed over it from its staging file), so a reader never sees half a token
/// and a copy from an earlier database does not linger.
fn write_copy(path: &Path, secret: &SecretString) -> Result<(), SecretsError> {
    use secrecy::ExposeSecret;
    let io_err = |source| SecretsError::Io { path: path.to_owned(), source };
    match read_existing(path) {
        Ok(Some(existing)) if existing.expose_secret() == secret.expose_secret() => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    place(path, secret, |staging| fs::rename(staging, path)).map_err(io_err)
}

/// Writes `secret` whole at `path` (mode 0600, in an owner-only directory made if missing):
/// written and synced under a temporary name that `put` moves into place, then the directory
/// synced. The temporary file is gone afterwards, whatever `put` did.
fn place(path: &Path, secret: &SecretString, put: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = parent {
        fs::create_dir_all(dir)?;
        restrict_permissions(dir, 0o700)?;
    }
    let staging = path.with_extension(format!("new-{}", ulid::Ulid::new()));
    let placed = write_new(&staging, secret).and_then(|()| put(&staging));
    let _ = fs::remove_file(&staging);
    placed?;
    sync_dir(parent.unwrap_or(Path::new(".")));
    Ok(())
}

/// Reads a secret file, or creates it (mode 0600, never overwriting one that a concurrent
/// process created first).
///
/// A new file appears whole or not at all: the secret is written and synced under a temporary
/// name, then linked into place (which fails if the name exists), and the directory synced. A
/// file system without hard links gets the file written in place, as before. A file that
/// exists but is empty (an older release that crashed mid-write, or truncated by hand) never
/// held a secret anything could have used, and is replaced; it is never read as an empty
/// secret (an empty API token would match an empty bearer token).
fn read_or_create(
    path: &Path,
    generate: impl FnOnce() -> SecretString,
) -> Result<SecretString, SecretsError> {
    let io_err = |source| SecretsError::Io { path: path.to_owned(), source };
    let empty = match read_existing(path) {
        Ok(Some(secret)) => return Ok(secret),
        Ok(None) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(e)),
    };
    let secret = generate();
    let placed = place(path, &secret, |staging| {
        if empty {
            fs::rename(staging, path)
        } else {
            fs::hard_link(staging, path).or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Err(e),
                // No hard links here (FAT, some FUSE mounts): create it in place.
                _ => write_new(path, &secret),
            })
        }
    });
    match placed {
        Ok(()) => Ok(secret),
        // Another process created it between our read and our link: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_existing(path)
            .map_err(io_err)?
            .ok_or_else(|| SecretsError::EmptySecretFile { path: path.to_owned() }),
        Err(e) => Err(io_err(e)),
    }
}

/// An existing secret file's secret (the file made owner-only); `None` when it is empty.
fn read_existing(path: &Path) -> io::Result<Option<SecretString>> {
    let existing = fs::read_to_string(path)?;
    let secret = existing.trim();
    if secret.is_empty() {
        return Ok(None);
    }
    owner_only(path)?;
    Ok(Some(secret.to_owned().into()))
}

/// Writes `secret` to a new file at `path` (mode 0600), synced; fails if the file exists.
fn write_new(path: &Path, secret: &SecretString) -> io::Result<()> {
    use secrecy::ExposeSecret;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.expose_secret().as_bytes())?;
    file.sync_all()
}

/// Makes a file's new name in `dir` durable (a power loss must not leave only the temporary
/// name, or none, after the service has started using the secret). Best effort: some file
/// systems (FUSE, SMB mounts) refuse to sync a directory, and the file itself is synced.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not sync the data directory");
    }
    let _ = dir;
}

/// Makes an existing secret file readable by its owner only, saying so if it was not.
fn owner_only(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "a secret file was readable by others; setting it to 0600");
            restrict_permissions(path, 0o600)?;
        }
    }
    let _ = path;
    Ok(())
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

    #[test]
    fn an_empty_secret_file_is_replaced_never_read_as_an_empty_secret() {
        let dir = std::env::temp_dir().join(format!("cognie-secrets-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api_token");
        fs::write(&path, " \n").unwrap();
        let secret = read_or_create(&path, || "fresh".to_string().into()).unwrap();
        assert_eq!(secret.expose_secret(), "fresh");
        assert_eq!(fs::read_to_string(&path).unwrap(), "fresh");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api_token")], "nothing left beside it");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_new_secret_file_is_made_whole_with_nothing_left_beside_it() {
        let dir = std::env::temp_dir().join(format!("cognie-secrets-{}", uuid::Uuid::new_v4()));
        let path = dir.join("api_token");
        read_or_create(&path, || "fresh".to_string().into()).unwrap();
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api_token")]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "fresh");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_copy_replaces_a_different_secret_whole_and_leaves_the_same_one_alone() {
        let dir = std::env::temp_dir().join(format!("cognie-secrets-{}", uuid::Uuid::new_v4()));
        let path = dir.join("api_token");
        write_copy(&path, &"shared".to_string().into()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "shared", "made where there was none");
        fs::write(&path, "from-an-earlier-database\n").unwrap();
        write_copy(&path, &"shared".to_string().into()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "shared", "a different one is replaced");
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        write_copy(&path, &"shared".to_string().into()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified, "the same one is left alone");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api_token")], "nothing left beside it");
        fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_secret_file_readable_by_others_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cognie-secrets-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api_token");
        fs::write(&path, "token-from-an-operator\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let read = read_or_create(&path, || "unused".to_string().into()).unwrap();
        assert_eq!(read.expose_secret(), "token-from-an-operator");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
