-- The product's output: flashcards, one per source (a toggle / toggleable heading block, or a
-- data-source row page) per user. Identity is (user, source block, source kind), so editing a
-- toggle updates its card in place and deleting it retires the card (kept, with retired_at).

create table flashcards (
    id              uuid primary key,
    user_id         uuid not null references users (id) on delete cascade,
    source_page_id  text not null,
    source_block_id text not null,
    source_kind     text not null check (source_kind in ('block', 'row')),
    -- The database the source page is a row of, so a database's cards can be listed and a
    -- removed row's cards retired.
    container_id    text,
    front           text not null,
    back            text not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    retired_at      timestamptz,
    last_run_id     uuid,
    constraint flashcards_identity_key unique (user_id, source_block_id, source_kind)
);

create index flashcards_live_by_user_idx on flashcards (user_id, created_at, id) where retired_at is null;
create index flashcards_by_page_idx on flashcards (source_page_id);
create index flashcards_by_container_idx on flashcards (container_id) where container_id is not null;
