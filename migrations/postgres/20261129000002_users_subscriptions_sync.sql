-- Users, their Notion connection and subscriptions; the state the sync workflow needs
-- (debounce, the shared per-user rate limiter); and the flashcards it produces.

-- A Cognie user. The Notion token is encrypted (AES-256-GCM, the user id as associated data)
-- and never returned by the API.
create table users (
    id                      uuid primary key,
    email                   text not null,
    notion_token_ciphertext bytea,
    notion_workspace_id     text,
    notion_workspace_name   text,
    notion_bot_id           text,
    notion_connected_at     timestamptz,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now()
);

create unique index users_email_key on users (lower(email));

-- What a user synced: a page, or a database (which covers its data sources and row pages).
create table subscriptions (
    id               uuid primary key,
    user_id          uuid not null references users (id) on delete cascade,
    notion_id        text not null,
    kind             text not null check (kind in ('page', 'database')),
    -- Data sources of a database subscription, learnt when it is fetched, so that events
    -- naming only a data source (2025-09-03 payloads) find their subscribers.
    data_source_ids  text[] not null default '{}',
    -- Notion's last_edited_time as of the last successful sync (reconciliation compares it).
    last_edited_time timestamptz,
    last_synced_at   timestamptz,
    created_at       timestamptz not null default now(),
    constraint subscriptions_user_notion_key unique (user_id, notion_id)
);

create index subscriptions_notion_id_idx on subscriptions (notion_id);
create index subscriptions_data_source_ids_idx on subscriptions using gin (data_source_ids);

-- Sync runs carry their debounce window: when the first coalesced event arrived (the cap is
-- measured from it) and the current deadline (the last event + DEBOUNCE_SECONDS, capped).
alter table workflow_runs add column debounce_started_at timestamptz;
alter table workflow_runs add column debounce_until timestamptz;

-- At most one sync per (user, content) is collecting events in debounce; new events join it.
create unique index workflow_runs_one_debouncing_sync_key
    on workflow_runs (user_id, notion_id)
    where workflow = 'notion_sync' and current_step = 'debounce' and state in ('pending', 'waiting');

create index workflow_runs_sync_key_idx on workflow_runs (user_id, notion_id, created_at)
    where workflow = 'notion_sync';

-- The shared per-user Notion rate limiter: the grant times inside the current window (at most
-- NOTION_RATE_LIMIT_PER_MINUTE of them) and a block set by a 429's Retry-After. One row per
-- user, locked while a grant is decided, so every worker process sees one limiter.
create table notion_rate_limits (
    user_id       uuid primary key references users (id) on delete cascade,
    recent_grants timestamptz[] not null default '{}',
    blocked_until timestamptz
);

-- The outcome of the last successful sync per (user, page or database): the content hash lets
-- an unchanged page skip generation and persistence.
create table sync_state (
    user_id           uuid not null references users (id) on delete cascade,
    notion_id         text not null,
    last_content_hash text,
    last_synced_at    timestamptz,
    last_run_id       uuid,
    primary key (user_id, notion_id)
);
