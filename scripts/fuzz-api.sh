#!/usr/bin/env bash
# API fuzzing: schemathesis drives the running service from openapi/openapi.json, with every
# check it has (no 5xx, status codes / content types / headers / bodies as the spec declares,
# invalid input rejected, valid input accepted, auth enforced, ...), and the bearer token.
#
# One run: create a python venv under target/ with schemathesis (once), build the release
# service, create a fresh database, start `cognie-sync serve` on it, run schemathesis, stop the
# service, drop the database. Exits non-zero when schemathesis finds a failure. Nothing leaves
# the machine: the service talks to 127.0.0.1 only, and NOTION_API_BASE_URL points at a local
# port nobody listens on (Notion calls fail fast as network errors).
#
# scripts/schemathesis.toml holds the few per-operation settings (opaque cursors, the signed
# OAuth state), each with its reason.
#
# Settings (environment):
#   MAX_EXAMPLES=100       test cases per operation and phase
#   PHASES=examples,coverage,fuzzing,stateful
#   MODE=all               positive, negative or all generated data
#   WORKERS=2              concurrent schemathesis workers
#   SEED=                  schemathesis seed (printed in its output; reuse it to reproduce)
#   SCHEMATHESIS_VERSION=  pin a version (default: the newest on PyPI when the venv is made)
#   PROFILE=release        cargo profile of the service binary (`debug` builds faster)
#   SKIP_BUILD=1           use the binary already built
#   PORT=                  HTTP port (default: a free one)
#   KEEP_DB=1              keep the database (its name is printed)
#   OUT_DIR=               reports and the service log (default target/fuzz-api/<stamp>)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
MAX_EXAMPLES=${MAX_EXAMPLES:-100}
PHASES=${PHASES:-examples,coverage,fuzzing,stateful}
MODE=${MODE:-all}
WORKERS=${WORKERS:-2}
PROFILE=${PROFILE:-release}
STAMP=$(date +%Y%m%d_%H%M%S)
DB=cognie_fuzz_${STAMP}_$$
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=${OUT_DIR:-$TARGET_DIR/fuzz-api/$STAMP}
VENV=$TARGET_DIR/fuzz-api/venv
mkdir -p "$OUT_DIR"

log() { echo "fuzz-api: $*" >&2; }
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1 "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for tool in psql curl cargo python3; do
  command -v "$tool" >/dev/null || { echo "fuzz-api: $tool is required" >&2; exit 2; }
done
pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || { echo "fuzz-api: PostgreSQL is not up at $PG_HOST:$PG_PORT" >&2; exit 2; }

# --- schemathesis ------------------------------------------------------------------------
if [[ ! -x $VENV/bin/schemathesis ]]; then
  log "creating $VENV with schemathesis${SCHEMATHESIS_VERSION:+ $SCHEMATHESIS_VERSION}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "schemathesis${SCHEMATHESIS_VERSION:+==$SCHEMATHESIS_VERSION}"
fi
log "$("$VENV/bin/schemathesis" --version)"

# --- build -------------------------------------------------------------------------------
case $PROFILE in release) PROFILE_FLAG=--release ;; debug) PROFILE_FLAG= ;; *) echo "PROFILE must be release or debug" >&2; exit 2 ;; esac
SERVICE_BIN=$TARGET_DIR/$PROFILE/cognie-sync
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the $PROFILE service"
  cargo build $PROFILE_FLAG --quiet --bin cognie-sync
fi
[[ -x $SERVICE_BIN ]] || { echo "fuzz-api: $SERVICE_BIN missing (run without SKIP_BUILD)" >&2; exit 2; }

# --- cleanup -----------------------------------------------------------------------------
SERVICE_PID=
DB_CREATED=0
stop_service() {
  if [[ -n $SERVICE_PID ]] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    kill -TERM "$SERVICE_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$SERVICE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  SERVICE_PID=
}
cleanup() {
  stop_service
  if [[ $DB_CREATED == 1 ]]; then
    if [[ ${KEEP_DB:-0} == 1 ]]; then
      log "kept database $DB"
    else
      psql_q -d postgres -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || log "could not drop $DB"
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- database and service ----------------------------------------------------------------
log "creating database $DB"
psql_q -d postgres -c "create database $DB" >/dev/null
DB_CREATED=1

PORT=${PORT:-$(free_port)}
# A port that was free a moment ago and that nothing binds: Notion requests are refused at once.
NOTION_PORT=$(free_port)
BASE_URL=http://127.0.0.1:$PORT
API_TOKEN=fuzz-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATA_DIR=$OUT_DIR/data
mkdir -p "$DATA_DIR"

log "starting cognie-sync serve on $BASE_URL (Notion at the dead port $NOTION_PORT)"
# Started from DATA_DIR with ENV_FILE unset, so no developer .env leaks into the run.
(
  cd "$DATA_DIR"
  exec env -u ENV_FILE \
    DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB" \
    TOKEN_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)" \
    API_TOKEN="$API_TOKEN" \
    BIND_ADDR="127.0.0.1:$PORT" \
    DATA_DIR="$DATA_DIR" \
    NOTION_WEBHOOK_SECRET="fuzz-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    NOTION_API_BASE_URL="http://127.0.0.1:$NOTION_PORT" \
    NOTION_CLIENT_ID=fuzz-client \
    NOTION_CLIENT_SECRET=fuzz-client-secret \
    NOTION_REDIRECT_URI="$BASE_URL/api/notion/auth/callback" \
    NOTION_MAX_RETRIES=0 \
    DEBOUNCE_SECONDS=0.2 DEBOUNCE_MAX_WAIT_SECONDS=1 \
    RETRY_BASE_DELAY_MS=50 RETRY_MAX_DELAY_MS=200 \
    LOG_FORMAT=json RUST_LOG="${RUST_LOG:-info}" \
    "$SERVICE_BIN" serve
) >"$OUT_DIR/service.log" 2>&1 &
SERVICE_PID=$!

for i in $(seq 1 300); do
  if curl -fsS -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then break; fi
  if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
    echo "fuzz-api: the service exited; its log:" >&2
    tail -n 30 "$OUT_DIR/service.log" >&2
    exit 1
  fi
  [[ $i == 300 ]] && { echo "fuzz-api: /readyz not ready after 30s" >&2; exit 1; }
  sleep 0.1
done
log "service ready (pid $SERVICE_PID)"

# --- schemathesis ------------------------------------------------------------------------
log "schemathesis: checks all, phases $PHASES, mode $MODE, $MAX_EXAMPLES examples, $WORKERS workers"
STATUS=0
# From OUT_DIR, so schemathesis's own cache (.schemathesis/) stays out of the work tree.
cd "$OUT_DIR"
"$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "$ROOT/openapi/openapi.json" \
  --url "$BASE_URL" \
  --header "Authorization: Bearer $API_TOKEN" \
  --checks all \
  --phases "$PHASES" \
  --mode "$MODE" \
  --max-examples "$MAX_EXAMPLES" \
  --workers "$WORKERS" \
  --request-timeout 30 \
  ${SEED:+--seed "$SEED"} \
  --report junit,ndjson --report-dir "$OUT_DIR/report" \
  --no-color 2>&1 | tee "$OUT_DIR/schemathesis.txt" || STATUS=$?

stop_service
# 5xx must never happen; the service logs each one it answers.
SERVER_ERRORS=$(grep -c '"request failed"\|"Error processing Notion webhook"' "$OUT_DIR/service.log" || true)
log "service log: $SERVER_ERRORS server-error lines; PANICS: $(grep -c 'panicked' "$OUT_DIR/service.log" || true)"
log "reports and the service log: $OUT_DIR"
if [[ $STATUS != 0 ]]; then
  log "FAILED (schemathesis exit $STATUS)"
  exit "$STATUS"
fi
log "passed"
