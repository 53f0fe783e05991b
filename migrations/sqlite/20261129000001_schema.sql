-- The embedded default's schema: the same tables, constraints and meaning as migrations/postgres,
-- in SQLite's terms. apalis-sqlite keeps its own tables (Jobs, Workers) beside ours.
--
-- Conventions (see src/store/sqlite/mod.rs):
-- - ids are 16-byte BLOB UUIDs (sqlx's encoding of uuid::Uuid);
-- - times are TEXT in one fixed-width UTC format, 'YYYY-MM-DDTHH:MM:SS.ffffffZ', so that
--   comparing and ordering them as text is comparing them as times. The service writes them;
--   the column defaults produce the same format (milliseconds, padded to six digits);
-- - JSON is TEXT; lists (data source ids) are JSON arrays.

create table webhook_events (
    id              blob primary key,
    dedupe_key      text not null unique,
    notion_event_id text,
    event_type      text not null,
    entity_id       text,
    entity_kind     text,
    parent_id       text,
    parent_kind     text,
    data_source_id  text,
    attempt_number  integer,
    outcome         text not null check (outcome in ('accepted', 'ignored')),
    ignore_reason   text,
    event_time      text,
    payload         text not null check (json_valid(payload)),
    received_at     text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
create index webhook_events_received_at_idx on webhook_events (received_at);

create table webhook_verification_tokens (
    id                integer primary key autoincrement,
    token_ciphertext  blob not null,
    token_sha256      text not null unique,
    first_received_at text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    last_received_at  text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    times_received    integer not null default 1
);

create table workflow_runs (
    id                  blob primary key,
    workflow            text not null check (workflow in ('notion_event', 'notion_sync')),
    state               text not null check (state in ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    current_step        text,
    user_id             blob,
    notion_id           text,
    notion_kind         text,
    trigger             text not null check (trigger in ('webhook', 'subscription', 'manual', 'retry', 'reconcile')),
    parent_id           blob references workflow_runs (id) on delete set null,
    event_id            blob references webhook_events (id) on delete set null,
    attempt             integer not null default 0,
    error_kind          text,
    last_error          text,
    next_run_at         text,
    dispatch_seq        integer not null default 0,
    lease_owner         text,
    lease_token         blob,
    lease_expires_at    text,
    debounce_started_at text,
    debounce_until      text,
    created_at          text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at          text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    finished_at         text
);
create index workflow_runs_created_idx on workflow_runs (created_at desc, id desc);
create index workflow_runs_state_created_idx on workflow_runs (state, created_at desc, id desc);
create index workflow_runs_user_created_idx on workflow_runs (user_id, created_at desc, id desc);
create index workflow_runs_notion_created_idx on workflow_runs (notion_id, created_at desc, id desc);
create index workflow_runs_workflow_created_idx on workflow_runs (workflow, created_at desc, id desc);
create index workflow_runs_step_created_idx on workflow_runs (current_step, created_at desc, id desc);
create index workflow_runs_expired_lease_idx on workflow_runs (lease_expires_at) where state = 'running';
create index workflow_runs_pending_since_idx on workflow_runs (created_at) where state = 'pending';
create index workflow_runs_event_idx on workflow_runs (event_id);
create index workflow_runs_parent_idx on workflow_runs (parent_id);
-- At most one sync per (user, content) collects events in debounce.
create unique index workflow_runs_one_debouncing_sync_key
    on workflow_runs (user_id, notion_id)
    where workflow = 'notion_sync' and current_step = 'debounce' and state in ('pending', 'waiting');
create index workflow_runs_sync_key_idx on workflow_runs (user_id, notion_id, created_at)
    where workflow = 'notion_sync';

create table workflow_steps (
    run_id      blob not null references workflow_runs (id) on delete cascade,
    name        text not null,
    state       text not null check (state in ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'skipped')),
    attempts    integer not null default 0,
    output      text,
    error_kind  text,
    error       text,
    started_at  text,
    finished_at text,
    primary key (run_id, name)
);

create table workflow_run_events (
    run_id   blob not null references workflow_runs (id) on delete cascade,
    event_id blob not null references webhook_events (id) on delete cascade,
    primary key (run_id, event_id)
);
create index workflow_run_events_event_idx on workflow_run_events (event_id);

create table workflow_step_attempts (
    lease_token blob primary key,
    run_id      blob not null references workflow_runs (id) on delete cascade,
    step        text not null,
    worker      text not null,
    started_at  text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    finished_at text,
    outcome     text,
    error_kind  text,
    error       text
);
create index workflow_step_attempts_run_idx on workflow_step_attempts (run_id, started_at);

create table workflow_run_actions (
    id     integer primary key autoincrement,
    run_id blob not null references workflow_runs (id) on delete cascade,
    action text not null check (action in ('retry', 'cancel')),
    actor  text not null,
    detail text,
    at     text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
create index workflow_run_actions_run_idx on workflow_run_actions (run_id, at);

create table users (
    id                      blob primary key,
    email                   text not null,
    notion_token_ciphertext blob,
    notion_workspace_id     text,
    notion_workspace_name   text,
    notion_bot_id           text,
    notion_connected_at     text,
    created_at              text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at              text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
create unique index users_email_key on users (lower(email));

create table subscriptions (
    id               blob primary key,
    user_id          blob not null references users (id) on delete cascade,
    notion_id        text not null,
    kind             text not null check (kind in ('page', 'database')),
    data_source_ids  text not null default '[]' check (json_valid(data_source_ids)),
    last_edited_time text,
    last_synced_at   text,
    reconciled_at    text,
    created_at       text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    unique (user_id, notion_id)
);
create index subscriptions_notion_id_idx on subscriptions (notion_id);
create index subscriptions_reconciled_at_idx on subscriptions (reconciled_at, id);

-- The per-user limiter: one row per granted request (pruned as the window moves on), and the
-- block a 429 imposes.
create table notion_rate_limits (
    user_id       blob primary key references users (id) on delete cascade,
    blocked_until text
);
create table notion_rate_grants (
    user_id    blob not null references users (id) on delete cascade,
    granted_at text not null
);
create index notion_rate_grants_user_idx on notion_rate_grants (user_id, granted_at);

create table sync_state (
    user_id           blob not null references users (id) on delete cascade,
    notion_id         text not null,
    last_content_hash text,
    last_synced_at    text,
    last_run_id       blob,
    primary key (user_id, notion_id)
);

create table flashcards (
    id              blob primary key,
    user_id         blob not null references users (id) on delete cascade,
    source_page_id  text not null,
    source_block_id text not null,
    source_kind     text not null check (source_kind in ('block', 'row')),
    container_id    text,
    front           text not null,
    back            text not null,
    created_at      text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at      text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    retired_at      text,
    last_run_id     blob,
    unique (user_id, source_block_id, source_kind)
);
create index flashcards_live_by_user_idx on flashcards (user_id, created_at, id) where retired_at is null;
create index flashcards_by_page_idx on flashcards (source_page_id);
create index flashcards_by_container_idx on flashcards (container_id) where container_id is not null;

create table oauth_states (
    nonce      blob primary key,
    user_id    blob not null references users (id) on delete cascade,
    created_at text not null default (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    expires_at text not null,
    used_at    text
);
create index oauth_states_expires_idx on oauth_states (expires_at);
