-- The service's own secrets that every instance on this database must share and that no
-- setting gave: today the management API token when `API_TOKEN` is not set. Encrypted under
-- TOKEN_ENCRYPTION_KEY (the associated data is `service-secret:<name>`), so a copy of the
-- database alone does not give the token away, and re-encrypted like every stored secret when
-- the key is rotated. The first instance to start creates the row; the rest read it.
create table service_secrets (
    name text primary key,
    ciphertext bytea not null
);
