# Entry points for developers and CI. `just` with no arguments lists them.

default:
    @just --list

# Run the service (HTTP API + workers) with the embedded default storage.
run:
    cargo run --release

# Run every test: on SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (CI sets it).
test:
    cargo test

# Lint: clippy with warnings as errors, and the format check.
lint:
    cargo clippy --all-targets -- -D warnings
    cargo fmt --check

# Regenerate openapi/openapi.json from the code (a test fails when it drifts).
openapi:
    cargo run --quiet -- openapi --output openapi/openapi.json

# Both throughput benchmarks: webhook ingest, then the workflow engine (each reports its own numbers).
bench: bench-ingest bench-workflow

# Webhook ingest benchmark: durable webhooks/s of the release service next to pgbench (see bench/ingest.sh for settings).
bench-ingest:
    bash bench/ingest.sh

# Workflow benchmark: end-to-end event workflow runs/s and step pickup latency next to apalis no-op jobs/s (see bench/workflow.sh).
bench-workflow:
    bash bench/workflow.sh

# Ops API benchmark: p50/p99 of every GET /api/workflows filter, a run's detail and GET /api/queue/stats with RUNS (default 1,000,000) runs in PostgreSQL (see bench/ops.sh).
bench-ops:
    bash bench/ops.sh

# API fuzzing: schemathesis (every check) against the release service on a fresh database (see scripts/fuzz-api.sh).
fuzz-api:
    bash scripts/fuzz-api.sh

# cargo-fuzz the webhook parsing, signature check and intake decision, FUZZ_SECONDS (60) per target (see scripts/fuzz.sh).
fuzz:
    bash scripts/fuzz.sh

# Chaos run: 500 events over 50 pages against the release binary (api + 2 workers) with a faulty fake Notion,
# SIGKILLed 20 times; checks nothing is lost or duplicated (settings: CHAOS_* in tests/it/chaos.rs).
chaos:
    cargo build --release
    TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} CHAOS_BIN=target/release/cognie-sync cargo test --test it chaos -- --ignored --nocapture

# Soak: signed webhooks at a fixed RATE (default 400/s) for DURATION (default 300 s) with workers running;
# p50/p99 intake latency, RSS, database growth, runs completed (see bench/soak.sh for settings).
soak:
    bash bench/soak.sh

# Everything CI runs.
ci:
    bash .ci/run
