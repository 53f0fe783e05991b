//! The encrypted secrets at rest (see `store::keys`).

use super::PgStore;
use crate::{
    ids::UserId,
    store::{SecretRow, StoreResult},
};

crate::store::keys::encrypted_secrets_impl!(PgStore, pool);
