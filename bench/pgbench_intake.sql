-- pgbench custom script: the durable floor of one webhook intake, without the service.
--
-- One transaction: one ~1 KiB accepted event row in the real `webhook_events` table (unique
-- dedupe key, JSON payload parsed into jsonb on every execution, like the service's
-- `$13::text::jsonb`) plus one pending job row in `apalis.jobs`, then COMMIT. Run it against a
-- database the service has migrated, so tables, indexes and apalis's triggers are the real ones:
--
--   pgbench -n -M prepared -c 16 -j 2 -T 20 -f bench/pgbench_intake.sql <db>
--
-- Ids are shaped like the service's: the event id is a UUIDv7 (time-ordered), the job id a
-- 26-character time-ordered text (the service uses a ULID), the dedupe key `notion:<uuid v4>`.
--
-- pgbench reads `:name` as a variable, so the JSON below never has a ':' directly followed by
-- a letter or digit (`": 1"` has a space; the timestamp's colons are written `\u003a`).

BEGIN;

WITH k AS (
    SELECT gen_random_uuid()::text AS notion_id,
           encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                   PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                   FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid AS event_id
)
INSERT INTO webhook_events (id, dedupe_key, notion_event_id, event_type, entity_id, entity_kind,
    parent_id, parent_kind, data_source_id, attempt_number, outcome, ignore_reason, event_time, payload)
SELECT k.event_id, 'notion:' || k.notion_id, k.notion_id, 'page.content_updated',
    '1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1', 'page', '1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2', 'database',
    '1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b', 1, 'accepted', NULL, now(),
    ('{"id":"' || k.notion_id || '","timestamp":"2026-05-12T07\u003a04\u003a19.874Z",'
     '"workspace_id":"5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f","workspace_name":"Maya''s Study Space",'
     '"subscription_id":"2b9f4e61-7c3a-4d85-b0e2-9f1a6c3d5e70","integration_id":"1e7d2a9b-3c4f-8012-9a5b-00c7e3f1d2a8",'
     '"type":"page.content_updated","authors":[{"id":"a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d","type":"person"}],'
     '"accessible_by":[{"id":"a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d","type":"person"},'
     '{"id":"1e7d2a9b-3c4f-81a5-b8c2-0027d4e9f6a1","type":"bot"}],"attempt_number": 1,"api_version":"2025-09-03",'
     '"entity":{"id":"1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1","type":"page"},'
     '"data":{"parent":{"id":"1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2","type":"database",'
     '"data_source_id":"1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b"},"updated_blocks":['
     '{"id":"1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f0","type":"block"},{"id":"1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f1","type":"block"},'
     '{"id":"1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f2","type":"block"},{"id":"1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f3","type":"block"},'
     '{"id":"1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f4","type":"block"},{"id":"1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f5","type":"block"}]}}'
    )::jsonb
FROM k;

INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata)
VALUES (
    lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
        || substr(replace(gen_random_uuid()::text, '-', ''), 1, 14),
    'cognie_sync.steps',
    convert_to('{"run_id":"' || gen_random_uuid()::text || '","seq": 1}', 'UTF8'),
    'Pending', 0, 1, now(), 0, ''::hstore
);

COMMIT;
