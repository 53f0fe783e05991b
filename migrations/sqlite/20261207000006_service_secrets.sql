-- The service's own secrets that no setting gave, shared by whatever opens this database
-- (the twin of PostgreSQL's table: the embedded default keeps its API token in DATA_DIR, and
-- nothing stores a row here today). Encrypted under TOKEN_ENCRYPTION_KEY (associated data
-- `service-secret:<name>`) and re-encrypted like every stored secret when the key is rotated.
create table service_secrets (
    name text primary key,
    ciphertext blob not null
);
