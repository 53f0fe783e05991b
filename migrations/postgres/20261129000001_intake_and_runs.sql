-- cognie-sync's own tables. apalis keeps its job tables in the `apalis` schema and its own
-- migration history (apalis._sqlx_migrations); nothing here touches them except through the
-- documented job columns when intake enqueues a step in the same transaction.

-- Every verified webhook delivery, stored before we answer 200, so an accepted event is never
-- lost. `dedupe_key` (Notion's event id, or the SHA-256 of a body without one) makes
-- redeliveries start work once.
create table webhook_events (
    id              uuid primary key,
    dedupe_key      text not null,
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
    event_time      timestamptz,
    payload         jsonb not null,
    received_at     timestamptz not null default now(),
    constraint webhook_events_dedupe_key_key unique (dedupe_key)
);

create index webhook_events_received_at_idx on webhook_events (received_at);

-- Verification tokens from Notion's subscription handshake, encrypted. Ops read the latest
-- to paste into Notion's UI; when NOTION_WEBHOOK_SECRET is unset the earliest one signs events
-- (trust on first use: a later, unsolicited handshake cannot replace the signing key).
create table webhook_verification_tokens (
    id               bigint generated always as identity primary key,
    token_ciphertext bytea not null,
    -- SHA-256 of the token, so a resent handshake is recognised without decrypting.
    token_sha256     text not null,
    first_received_at timestamptz not null default now(),
    last_received_at  timestamptz not null default now(),
    times_received   integer not null default 1,
    constraint webhook_verification_tokens_sha_key unique (token_sha256)
);

-- One row per workflow run: the state the API reports and the engine's bookkeeping. apalis
-- only carries "run step X of run R now"; whether that job may still run is decided here.
create table workflow_runs (
    id               uuid primary key,
    workflow         text not null check (workflow in ('notion_event', 'notion_sync')),
    state            text not null check (state in ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    current_step     text,
    user_id          uuid,
    notion_id        text,
    notion_kind      text,
    trigger          text not null check (trigger in ('webhook', 'subscription', 'manual', 'retry', 'reconcile')),
    parent_id        uuid references workflow_runs (id) on delete set null,
    event_id         uuid references webhook_events (id) on delete set null,
    -- Attempts of the current step so far.
    attempt          integer not null default 0,
    error_kind       text,
    last_error       text,
    next_run_at      timestamptz,
    -- Fencing: every job enqueued for this run carries the sequence number current when it was
    -- enqueued; a job whose number is stale (superseded by a retry, cancel or takeover) no-ops.
    dispatch_seq     bigint not null default 0,
    -- The lease of the step attempt in flight: who holds it, which claim it is, until when.
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    finished_at      timestamptz
);

create index workflow_runs_created_idx on workflow_runs (created_at desc, id desc);
create index workflow_runs_state_created_idx on workflow_runs (state, created_at desc, id desc);
create index workflow_runs_expired_lease_idx on workflow_runs (lease_expires_at) where state = 'running';

-- Each step of a run: attempts, timings, the last error and the output the next step reads,
-- so a retried run resumes at the failed step with everything before it.
create table workflow_steps (
    run_id      uuid not null references workflow_runs (id) on delete cascade,
    name        text not null,
    state       text not null check (state in ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'skipped')),
    attempts    integer not null default 0,
    output      jsonb,
    error_kind  text,
    error       text,
    started_at  timestamptz,
    finished_at timestamptz,
    primary key (run_id, name)
);

-- The webhook events a run stands for (a sync run coalesces many during debounce).
create table workflow_run_events (
    run_id   uuid not null references workflow_runs (id) on delete cascade,
    event_id uuid not null references webhook_events (id) on delete cascade,
    primary key (run_id, event_id)
);

create index workflow_run_events_event_idx on workflow_run_events (event_id);
