-- OAuth "Connect Notion" and the reconciliation sweep.

-- Every OAuth `state` issued by GET /api/notion/auth, by its nonce. The state itself is signed
-- (HMAC, key derived from TOKEN_ENCRYPTION_KEY), bound to the user and expiring; this row is
-- what makes it single use: the callback marks it used in one conditional update, so a state
-- (and the Notion code that came with it) cannot be replayed, even by a second request racing
-- the first. Rows are pruned a day after they expire.
create table oauth_states (
    nonce      uuid primary key,
    user_id    uuid not null references users (id) on delete cascade,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at    timestamptz
);

create index oauth_states_expires_idx on oauth_states (expires_at);

-- When the reconciliation sweep last compared the subscription with Notion, so each sweep
-- checks the longest-unchecked subscriptions first, and a subscription another worker process
-- just checked is not asked about again (each is checked about once per
-- RECONCILE_INTERVAL_SECONDS, however many workers run).
alter table subscriptions add column reconciled_at timestamptz;

create index subscriptions_reconciled_at_idx on subscriptions (reconciled_at nulls first, id);
