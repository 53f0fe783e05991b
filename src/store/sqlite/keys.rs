//! The encrypted secrets at rest (see `store::keys`); writes go through the single writer.

use super::SqliteStore;
use crate::{
    ids::UserId,
    store::{SecretRow, StoreResult},
};

crate::store::keys::encrypted_secrets_impl!(SqliteStore, writer);
