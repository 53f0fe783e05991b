#!/usr/bin/env bash
# Soak test: sustained signed webhooks at a fixed rate (half the measured ingest maximum by
# default) for minutes, with the workers running every enqueued step. Reports the intake
# latency (p50, p99, and per interval to show drift), the RSS of each service process at the
# start and the end, the database's growth, and the workflow runs completed.
#
# One run: build (release service + the `ingest` bench), create a fresh database, start the
# service (`serve`, or `api` + `worker`), wait for /readyz, drive it with benches/ingest.rs in
# fixed-rate mode while sampling RSS and pg_database_size, let the workers drain, print a
# summary, drop the database. Everything talks to 127.0.0.1 only.
#
# The events are `page.content_updated` for a page nobody subscribes to: each is stored, starts
# its `notion_event` run, and the workers run its `discover_users` step to the end (no Notion
# calls, so nothing outside this machine is needed).
#
# Settings (environment):
#   RATE=400               webhooks per second (the README's Benchmarks measured ~850/s at most)
#   DURATION=300 WARMUP=5  measured and warm-up seconds
#   CONNECTIONS=64         load-generator connections (the rate is spread over them)
#   ROLES=serve            `serve` (one process: HTTP + workers) or `split` (`api` + `worker`)
#   SAMPLE_EVERY=15        seconds between RSS / database-size samples (samples.csv)
#   REPORT_EVERY=30        seconds per latency interval line
#   DRAIN_TIMEOUT=300      seconds to wait for the workers to finish the backlog after the load
#   RUST_LOG=warn          the service's log filter
#   THREADS=1              load-generator runtime threads
#   PORT=                  HTTP port (default: a free one)
#   SKIP_BUILD=1           use the binaries already built
#   KEEP_DB=1              keep the database (its name is printed)
#   OUT_DIR=               where logs and raw outputs go (default target/bench-soak/<stamp>)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
LOG_FILTER=${RUST_LOG:-warn}
RATE=${RATE:-400}
DURATION=${DURATION:-300}
WARMUP=${WARMUP:-5}
CONNECTIONS=${CONNECTIONS:-64}
ROLES=${ROLES:-serve}
SAMPLE_EVERY=${SAMPLE_EVERY:-15}
REPORT_EVERY=${REPORT_EVERY:-30}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
THREADS=${THREADS:-1}
STAMP=$(date +%Y%m%d_%H%M%S)
DB=cognie_soak_${STAMP}_$$
OUT_DIR=${OUT_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/bench-soak/$STAMP}
mkdir -p "$OUT_DIR"

case $ROLES in serve | split) ;; *) echo "ROLES must be serve or split, not $ROLES" >&2; exit 2 ;; esac

log() { echo "soak: $*" >&2; }
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1 "$@"; }

for tool in psql curl cargo; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is required" >&2; exit 2; }
done
pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || { echo "soak: PostgreSQL is not up at $PG_HOST:$PG_PORT" >&2; exit 2; }

# --- build -------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVICE_BIN=$TARGET_DIR/release/cognie-sync
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the release service"
  cargo build --release --quiet
  log "building the load generator"
  cargo bench --bench ingest --no-run --quiet
fi
BENCH_BIN=$(ls -t "$TARGET_DIR"/release/deps/ingest-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
[[ -x $SERVICE_BIN ]] || { echo "soak: $SERVICE_BIN missing (run without SKIP_BUILD)" >&2; exit 2; }
[[ -n $BENCH_BIN && -x $BENCH_BIN ]] || { echo "soak: the ingest bench is not built (run without SKIP_BUILD)" >&2; exit 2; }

# --- cleanup -----------------------------------------------------------------------------
PIDS=()
NAMES=()
DB_CREATED=0
SAMPLER_PID=
stop_services() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  stop_services
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

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
db_bytes() { psql_q -d "$DB" -Atc "select pg_database_size(current_database())"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
runs_by_state() { psql_q -d "$DB" -Atc "select coalesce(string_agg(state || '=' || n, ' ' order by state), '') from (select state, count(*) n from workflow_runs group by state) s"; }
open_runs() { psql_q -d "$DB" -Atc "select count(*) from workflow_runs where state not in ('succeeded', 'failed', 'cancelled')"; }

# --- database and service ----------------------------------------------------------------
log "creating database $DB"
psql_q -d postgres -c "create database $DB" >/dev/null
DB_CREATED=1
DATABASE_URL=postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB
if [[ -z ${PORT:-} ]]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18081)
fi
BASE_URL=http://127.0.0.1:$PORT
SECRET=soak-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
KEY=$(head -c 32 /dev/urandom | base64)
DATA_DIR=$OUT_DIR/data
mkdir -p "$DATA_DIR"

start_service() { # ROLE NAME
  (
    cd "$DATA_DIR"
    exec env -u ENV_FILE \
      DATABASE_URL="$DATABASE_URL" \
      TOKEN_ENCRYPTION_KEY="$KEY" \
      BIND_ADDR="127.0.0.1:$PORT" \
      NOTION_WEBHOOK_SECRET="$SECRET" \
      API_TOKEN="soak-token" \
      DATA_DIR="$DATA_DIR" \
      RUST_LOG="$LOG_FILTER" \
      "$SERVICE_BIN" "$1"
  ) >"$OUT_DIR/$2.log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$2")
}

if [[ $ROLES == serve ]]; then
  start_service serve serve
else
  start_service api api
  start_service worker worker
fi
log "starting ${NAMES[*]} on $BASE_URL (RUST_LOG=$LOG_FILTER)"
for i in $(seq 1 300); do
  if curl -fsS -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then break; fi
  for n in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$n]}" 2>/dev/null; then
      echo "soak: ${NAMES[$n]} exited; its log:" >&2
      tail -n 30 "$OUT_DIR/${NAMES[$n]}.log" >&2
      exit 1
    fi
  done
  [[ $i == 300 ]] && { echo "soak: /readyz not ready after 30s" >&2; exit 1; }
  sleep 0.1
done
sleep 1
declare -A RSS_START
for n in "${!PIDS[@]}"; do RSS_START[${NAMES[$n]}]=$(rss_kib "${PIDS[$n]}"); done
DB_START=$(db_bytes)
log "ready: ${NAMES[*]} (pids ${PIDS[*]}), database $(mib "$DB_START") MiB"

# --- sampler -----------------------------------------------------------------------------
{
  printf 'seconds'
  for name in "${NAMES[@]}"; do printf ',%s_rss_kib' "$name"; done
  printf ',db_bytes,open_runs,succeeded_runs\n'
} >"$OUT_DIR/samples.csv"
(
  t0=$(date +%s)
  while true; do
    line="$(( $(date +%s) - t0 ))"
    for pid in "${PIDS[@]}"; do line="$line,$(rss_kib "$pid")"; done
    counts=$(psql_q -d "$DB" -Atc "select count(*) filter (where state not in ('succeeded','failed','cancelled')), count(*) filter (where state = 'succeeded') from workflow_runs" 2>/dev/null | tr '|' ',')
    echo "$line,$(db_bytes 2>/dev/null || echo 0),${counts:-0,0}" >>"$OUT_DIR/samples.csv"
    sleep "$SAMPLE_EVERY"
  done
) &
SAMPLER_PID=$!

# --- load --------------------------------------------------------------------------------
log "load: $RATE webhooks/s over $CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s measured"
LOAD_START=$(date +%s)
if ! "$BENCH_BIN" --url "$BASE_URL/api/notion/webhook/notion" --secret "$SECRET" \
  -c "$CONNECTIONS" -d "$DURATION" -w "$WARMUP" -t "$THREADS" -r "$RATE" --report-every "$REPORT_EVERY" \
  >"$OUT_DIR/ingest.txt" 2> >(tee "$OUT_DIR/ingest.err" >&2); then
  cat "$OUT_DIR/ingest.txt" >&2
  echo "soak: the load generator failed" >&2
  exit 1
fi
LOAD_END=$(date +%s)
declare -A RSS_END
for n in "${!PIDS[@]}"; do RSS_END[${NAMES[$n]}]=$(rss_kib "${PIDS[$n]}"); done
DB_END=$(db_bytes)
OPEN_AT_END=$(open_runs)
RESULT=$(grep '^RESULT ' "$OUT_DIR/ingest.txt" | tail -n 1)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# --- drain -------------------------------------------------------------------------------
log "load done; $OPEN_AT_END runs open; waiting for the workers to drain"
DRAIN_START=$(date +%s)
while :; do
  open=$(open_runs)
  [[ $open == 0 ]] && break
  if (( $(date +%s) - DRAIN_START > DRAIN_TIMEOUT )); then
    log "still $open runs open after ${DRAIN_TIMEOUT}s"
    break
  fi
  sleep 1
done
DRAIN_SECS=$(( $(date +%s) - DRAIN_START ))
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
declare -A RSS_DRAINED
for n in "${!PIDS[@]}"; do RSS_DRAINED[${NAMES[$n]}]=$(rss_kib "${PIDS[$n]}"); done
DB_DRAINED=$(db_bytes)
EVENTS=$(psql_q -d "$DB" -Atc "select count(*) from webhook_events")
SUCCEEDED=$(psql_q -d "$DB" -Atc "select count(*) from workflow_runs where state = 'succeeded'")
FAILED=$(psql_q -d "$DB" -Atc "select count(*) from workflow_runs where state = 'failed'")
JOBS=$(psql_q -d "$DB" -Atc "select count(*) from apalis.jobs")
RUNS=$(runs_by_state)
ACCEPTED_ALL=$(field accepted_all "$RESULT")
LOAD_SECS=$(( LOAD_END - LOAD_START ))

# --- summary -----------------------------------------------------------------------------
{
  echo
  echo "=== soak summary ($STAMP) ==="
  echo "service:   cognie-sync ${NAMES[*]}, RUST_LOG=$LOG_FILTER, $(nproc) cores; load ${RATE}/s target over $CONNECTIONS connections for ${DURATION}s (+${WARMUP}s warm-up)"
  echo "intake:    $(field webhooks_per_sec "$RESULT") accepted/s   p50 $(field p50_ms "$RESULT") ms   p90 $(field p90_ms "$RESULT") ms   p99 $(field p99_ms "$RESULT") ms   max $(field max_ms "$RESULT") ms"
  echo "           (latency from each request's slot: late sending counts; send to answer alone: p50 $(field rt_p50_ms "$RESULT") ms   p99 $(field rt_p99_ms "$RESULT") ms)"
  echo "           non-200 $(field non_200 "$RESULT"), transport errors $(field errors "$RESULT")"
  echo "per interval (${REPORT_EVERY}s):"
  grep '^ingest: +' "$OUT_DIR/ingest.err" | sed 's/^ingest: /           /' || true
  for name in "${NAMES[@]}"; do
    echo "rss:       $name: start $(mib $(( ${RSS_START[$name]} * 1024 ))) MiB, end of load $(mib $(( ${RSS_END[$name]} * 1024 ))) MiB, drained $(mib $(( ${RSS_DRAINED[$name]} * 1024 ))) MiB"
  done
  echo "database:  $(mib "$DB_START") MiB at start, $(mib "$DB_END") MiB at the end of the load (+$(mib $(( DB_END - DB_START ))) MiB in ${LOAD_SECS}s), $(mib "$DB_DRAINED") MiB drained"
  echo "runs:      $SUCCEEDED succeeded, $FAILED failed ($RUNS); $OPEN_AT_END open when the load stopped, drained in ${DRAIN_SECS}s"
  echo "cross-check: webhook_events $EVENTS, accepted responses $ACCEPTED_ALL$([[ $EVENTS == "$ACCEPTED_ALL" ]] && echo ' (match)' || echo ' (MISMATCH)'); apalis.jobs rows $JOBS"
  echo "raw output: $OUT_DIR (samples.csv: RSS, database size and runs every ${SAMPLE_EVERY}s)"
  echo "RESULT rate=$RATE duration_s=$DURATION accepted_per_sec=$(field webhooks_per_sec "$RESULT") p50_ms=$(field p50_ms "$RESULT") p99_ms=$(field p99_ms "$RESULT") rt_p99_ms=$(field rt_p99_ms "$RESULT") db_growth_mib=$(mib $(( DB_END - DB_START ))) runs_succeeded=$SUCCEEDED runs_open_at_end=$OPEN_AT_END"
} | tee "$OUT_DIR/summary.txt"
