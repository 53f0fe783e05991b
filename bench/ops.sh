#!/usr/bin/env bash
# Ops API benchmark: how fast `GET /api/workflows` (every filter, first page and a cursor page),
# `GET /api/workflows/{id}` and `GET /api/queue/stats` answer with a large history in
# PostgreSQL (goal: under 50 ms each with one million runs).
#
# One run: build the release service, create a fresh database, migrate it (`cognie-sync
# migrate`), fill it with RUNS synthetic runs and their steps, events and actions
# (bench/ops_data.sql, generate_series; shaped like what the engine writes), VACUUM ANALYZE
# (the steady state autovacuum keeps), start `cognie-sync api` (HTTP only: nothing else
# touches the data), then time each case over HTTP from one keep-alive connection, one request
# at a time (curl): WARMUP requests, then REQUESTS measured ones. Prints p50 / p99 / max per
# case, with the load average, writes EXPLAIN (ANALYZE, BUFFERS) of the equivalent SQL for
# every case whose p99 misses the goal (or of all with EXPLAIN_ALL=1), drops the database.
# Everything talks to 127.0.0.1 only.
#
# Settings (environment):
#   RUNS=1000000           workflow runs to generate
#   USERS=10000 PAGES=50000  users and Notion pages they are spread over
#   DAYS=30                finished runs are spread over the last DAYS days
#   STEP_PCT=100           percentage of runs that get their step rows (100: all, as the engine)
#   REQUESTS=100 WARMUP=5  measured and warm-up requests per case
#   GOAL_MS=50             the goal; a case whose p99 is at or above it gets an EXPLAIN
#   EXPLAIN_ALL=1          write EXPLAIN (ANALYZE, BUFFERS) for every case
#   RUST_LOG=warn          the service's log filter
#   PORT=                  the service's HTTP port (default: a free one)
#   REUSE_DB=              an existing benchmark database to time again (skips creating and
#                          filling one; migrations still run; never dropped)
#   SKIP_BUILD=1           use the release binary already built
#   SERVICE_BIN=           time this cognie-sync binary instead (e.g. an older build; no build)
#   KEEP_DB=1              keep the database (its name is printed)
#   OUT_DIR=               where logs and raw outputs go (default target/bench-ops/<stamp>)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
LOG_FILTER=${RUST_LOG:-warn}
RUNS=${RUNS:-1000000}
USERS=${USERS:-10000}
PAGES=${PAGES:-50000}
DAYS=${DAYS:-30}
STEP_PCT=${STEP_PCT:-100}
REQUESTS=${REQUESTS:-100}
WARMUP=${WARMUP:-5}
GOAL_MS=${GOAL_MS:-50}
STAMP=$(date +%Y%m%d_%H%M%S)
OUT_DIR=${OUT_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/bench-ops/$STAMP}
mkdir -p "$OUT_DIR/explain" "$OUT_DIR/samples"

log() { echo "bench: $*" >&2; }
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1 "$@"; }
q1() { psql_q -d "$DB" -At -c "$1"; }

for tool in psql curl cargo jq; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 2; }
done
pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || { echo "bench: PostgreSQL is not up at $PG_HOST:$PG_PORT" >&2; exit 2; }

# --- build -------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -n ${SERVICE_BIN:-} ]]; then
  SKIP_BUILD=1
else
  SERVICE_BIN=$TARGET_DIR/release/cognie-sync
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the release service"
  cargo build --release --quiet
fi
[[ -x $SERVICE_BIN ]] || { echo "bench: $SERVICE_BIN missing (run without SKIP_BUILD)" >&2; exit 2; }

# --- cleanup -----------------------------------------------------------------------------
SERVICE_PID=
DB_CREATED=0
if [[ -n ${REUSE_DB:-} ]]; then
  DB=$REUSE_DB
else
  DB=cognie_bench_ops_${STAMP}_$$
fi
cleanup() {
  if [[ -n $SERVICE_PID ]] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    kill -TERM "$SERVICE_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVICE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  if [[ $DB_CREATED == 1 ]]; then
    if [[ ${KEEP_DB:-0} == 1 ]]; then
      log "kept database $DB (time it again with REUSE_DB=$DB)"
    else
      psql_q -d postgres -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || log "could not drop $DB"
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATABASE_URL=postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB
TOKEN_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
API_TOKEN=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATA_DIR=$OUT_DIR/data
mkdir -p "$DATA_DIR"
# The service, started from DATA_DIR with ENV_FILE unset, so no developer .env leaks in. It
# replaces the calling shell: run it in a subshell, `( service ROLE )`, so that with `&` the
# subshell's pid ($!) is the service's.
service() {
  cd "$DATA_DIR"
  exec env -u ENV_FILE \
    DATABASE_URL="$DATABASE_URL" \
    TOKEN_ENCRYPTION_KEY="$TOKEN_ENCRYPTION_KEY" \
    API_TOKEN="$API_TOKEN" \
    DATA_DIR="$DATA_DIR" \
    BIND_ADDR="127.0.0.1:$PORT" \
    RUST_LOG="$LOG_FILTER" \
    "$SERVICE_BIN" "$@"
}
if [[ -z ${PORT:-} ]]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18082)
fi
BASE_URL=http://127.0.0.1:$PORT

# --- database ------------------------------------------------------------------------------
GEN_SECONDS=n/a
if [[ -z ${REUSE_DB:-} ]]; then
  log "creating database $DB"
  psql_q -d postgres -c "create database $DB" >/dev/null
  DB_CREATED=1
  log "migrating"
  ( service migrate ) >"$OUT_DIR/migrate.log" 2>&1 || { cat "$OUT_DIR/migrate.log" >&2; exit 1; }
  log "generating $RUNS runs ($USERS users, $PAGES pages, $DAYS days, steps for $STEP_PCT% of runs); this takes a while"
  started=$(date +%s)
  psql_q -d "$DB" -v runs="$RUNS" -v users="$USERS" -v pages="$PAGES" -v days="$DAYS" -v step_pct="$STEP_PCT" \
    -f bench/ops_data.sql >"$OUT_DIR/generate.log" 2>&1 || { cat "$OUT_DIR/generate.log" >&2; exit 1; }
  log "vacuum analyze, checkpoint"
  psql_q -d "$DB" -c "vacuum (analyze) workflow_runs, workflow_steps, webhook_events, workflow_run_events, workflow_run_actions, users, subscriptions" >/dev/null
  # Written out now, so that the checkpointer does not flush the load while requests are timed.
  psql_q -d "$DB" -c "checkpoint" >/dev/null
  GEN_SECONDS=$(($(date +%s) - started))
else
  log "reusing database $DB"
fi

# --- service -----------------------------------------------------------------------------
log "starting cognie-sync api on $BASE_URL (RUST_LOG=$LOG_FILTER)"
( service api ) >"$OUT_DIR/service.log" 2>&1 &
SERVICE_PID=$!
for i in $(seq 1 600); do
  if curl -fsS -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then break; fi
  if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
    echo "bench: the service exited; its log:" >&2
    tail -n 30 "$OUT_DIR/service.log" >&2
    exit 1
  fi
  [[ $i == 600 ]] && { echo "bench: /readyz not ready after 60s" >&2; exit 1; }
  sleep 0.1
done
if [[ -n ${REUSE_DB:-} ]]; then
  # Statistics objects a new migration created are empty until the next ANALYZE.
  psql_q -d "$DB" -c "analyze workflow_runs, workflow_steps" >/dev/null
fi
# Warm the service's connection pool (DATABASE_MAX_CONNECTIONS, default 20; it starts with one):
# opening a PostgreSQL connection costs ~90 ms on a loaded 2-core machine, and a request that
# finds no idle connection pays it. Each queue-stats request holds up to four at once.
WARM_PIDS=()
for _ in $(seq 1 8); do
  curl -s -o /dev/null -H "Authorization: Bearer $API_TOKEN" "$BASE_URL/api/queue/stats" &
  WARM_PIDS+=($!)
done
wait "${WARM_PIDS[@]}"
POOL=$(q1 "select count(*) from pg_stat_activity where datname = '$DB' and application_name = 'cognie-sync'" 2>/dev/null || echo "?")

# --- what the cases look at ------------------------------------------------------------------
SIZES=$(q1 "select string_agg(format('%s %s rows, %s', relname, to_char(reltuples::bigint, 'FM999,999,999'), pg_size_pretty(pg_total_relation_size(oid))), '; ' order by relname)
            from pg_class where relname in ('workflow_runs', 'workflow_steps', 'webhook_events', 'workflow_run_events')")
ACTUAL_RUNS=$(q1 "select count(*) from workflow_runs")
HOT_USER=$(q1 "select user_id from workflow_runs where user_id is not null group by 1 order by count(*) desc limit 1")
USER=$(q1 "select user_id from workflow_runs where workflow = 'notion_sync' order by created_at desc, id desc offset 100 limit 1")
HOT_PAGE=$(q1 "select notion_id from workflow_runs where notion_id is not null group by 1 order by count(*) desc limit 1")
PAGE=$(q1 "select notion_id from workflow_runs where workflow = 'notion_sync' order by created_at desc, id desc offset 200 limit 1")
USER_PAGE=$(q1 "select notion_id from workflow_runs where user_id = '$USER' order by created_at desc limit 1")
HOT_USER_RUNS=$(q1 "select count(*) from workflow_runs where user_id = '$HOT_USER'")
HOT_PAGE_RUNS=$(q1 "select count(*) from workflow_runs where notion_id = '$HOT_PAGE'")
ts() { q1 "select to_char((now() - interval '$1') at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"; }
SINCE_1H=$(ts '1 hour')
SINCE_1D=$(ts '1 day')
SINCE_7D=$(ts '7 days')
RUN_SYNC=$(q1 "select r.id from workflow_runs r where r.workflow = 'notion_sync' and r.state = 'succeeded' and r.current_step = 'persist'
                 and exists (select 1 from workflow_run_events e where e.run_id = r.id) order by r.created_at desc offset 10 limit 1")
RUN_EVENT=$(q1 "select id from workflow_runs where workflow = 'notion_event' order by created_at desc offset 10 limit 1")
RUN_ACTED=$(q1 "select run_id from workflow_run_actions order by at desc limit 1")
RUN_MISSING=00000000-0000-4000-8000-000000000000

# Cases: name|query string of GET /api/workflows|the equivalent SQL condition (for EXPLAIN).
LIST_CASES=(
  "no filter||true"
  "limit=500|limit=500|true"
)
for s in pending running waiting succeeded failed cancelled; do LIST_CASES+=("state=$s|state=$s|state = '$s'"); done
for w in notion_event notion_sync; do LIST_CASES+=("workflow=$w|workflow=$w|workflow = '$w'"); done
for s in discover_users debounce fetch generate persist; do LIST_CASES+=("step=$s|step=$s|current_step = '$s'"); done
LIST_CASES+=(
  "user_id (busiest user, $HOT_USER_RUNS runs)|user_id=$HOT_USER|user_id = '$HOT_USER'"
  "user_id (a recent user)|user_id=$USER|user_id = '$USER'"
  "notion_id (busiest page, $HOT_PAGE_RUNS runs)|notion_id=$HOT_PAGE|notion_id = '$HOT_PAGE'"
  "notion_id (a recent page)|notion_id=$PAGE|notion_id = '$PAGE'"
  "notion_id (unknown)|notion_id=0123456789abcdef0123456789abcdef|notion_id = '01234567-89ab-cdef-0123-456789abcdef'"
  "since=1 hour ago|since=$SINCE_1H|created_at >= '$SINCE_1H'"
  "since=1 day ago|since=$SINCE_1D|created_at >= '$SINCE_1D'"
  "state=failed&workflow=notion_sync|state=failed&workflow=notion_sync|state = 'failed' and workflow = 'notion_sync'"
  "state=failed&workflow=notion_event (rare)|state=failed&workflow=notion_event|state = 'failed' and workflow = 'notion_event'"
  "state=failed&step=fetch|state=failed&step=fetch|state = 'failed' and current_step = 'fetch'"
  "state=waiting&step=debounce|state=waiting&step=debounce|state = 'waiting' and current_step = 'debounce'"
  "state=failed&since=1 day ago|state=failed&since=$SINCE_1D|state = 'failed' and created_at >= '$SINCE_1D'"
  "state=failed&user_id|state=failed&user_id=$USER|state = 'failed' and user_id = '$USER'"
  "user_id&notion_id|user_id=$USER&notion_id=$USER_PAGE|user_id = '$USER' and notion_id = '$USER_PAGE'"
  "workflow=notion_sync&since=1 day ago|workflow=notion_sync&since=$SINCE_1D|workflow = 'notion_sync' and created_at >= '$SINCE_1D'"
  "state=failed&workflow=notion_sync&step=generate&since=7 days ago|state=failed&workflow=notion_sync&step=generate&since=$SINCE_7D|state = 'failed' and workflow = 'notion_sync' and current_step = 'generate' and created_at >= '$SINCE_7D'"
  "(matches nothing) state=succeeded&step=fetch|state=succeeded&step=fetch|state = 'succeeded' and current_step = 'fetch'"
  "(matches nothing) state=cancelled&step=persist|state=cancelled&step=persist|state = 'cancelled' and current_step = 'persist'"
  "(matches nothing) workflow=notion_event&step=fetch|workflow=notion_event&step=fetch|workflow = 'notion_event' and current_step = 'fetch'"
  "(matches nothing) workflow=notion_sync&step=discover_users|workflow=notion_sync&step=discover_users|workflow = 'notion_sync' and current_step = 'discover_users'"
)
RUN_COLUMNS="id, workflow, state, current_step, user_id, notion_id, notion_kind, trigger, parent_id, attempt, error_kind, last_error, next_run_at, created_at, updated_at, finished_at"

# --- timing ----------------------------------------------------------------------------------
# time_path NAME PATH [STATUS]: WARMUP + REQUESTS sequential GETs of PATH on one keep-alive
# connection; appends "name, p50, p99, max (ms), path" to results.tsv, or fails when an answer's
# status is not STATUS (default 200).
RESULTS=$OUT_DIR/results.tsv
: >"$RESULTS"
SAMPLE_N=0
time_path() {
  local name=$1 path=$2 status=${3:-200} n=$((WARMUP + REQUESTS)) cfg=$OUT_DIR/curl.cfg raw
  {
    echo "header = \"Authorization: Bearer $API_TOKEN\""
    echo 'write-out = "%{http_code} %{time_total}\n"'
    echo "silent"
    for _ in $(seq 1 "$n"); do
      echo "url = \"$BASE_URL$path\""
      echo 'output = "/dev/null"'
    done
  } >"$cfg"
  raw=$(curl --config "$cfg")
  rm -f "$cfg"
  if grep -qv "^$status " <<<"$raw"; then
    echo "bench: $name: GET $path answered $(grep -v "^$status " <<<"$raw" | head -n 1 | cut -d' ' -f1), not $status" >&2
    curl -sS -H "Authorization: Bearer $API_TOKEN" "$BASE_URL$path" | head -c 500 >&2
    exit 1
  fi
  # Nearest-rank percentiles over the measured requests (with 100 samples, p99 is the second worst).
  SAMPLE_N=$((SAMPLE_N + 1))
  { echo "# $name: GET $path (ms, in request order)"; tail -n "$REQUESTS" <<<"$raw" | awk '{ print $2 * 1000 }'; } \
    >"$OUT_DIR/samples/$(printf '%03d' "$SAMPLE_N").txt"
  tail -n "$REQUESTS" <<<"$raw" | awk '{ print $2 * 1000 }' | sort -g | awk -v name="$name" -v path="$path" '
    { v[NR] = $1 }
    END {
      p50 = v[int((NR * 50 + 99) / 100)]; p99 = v[int((NR * 99 + 99) / 100)]
      printf "%s\t%.1f\t%.1f\t%.1f\t%s\n", name, p50, p99, v[NR], path
    }' >>"$RESULTS"
}
p99_of_last() { tail -n 1 "$RESULTS" | cut -f3; }
slow() { awk -v p="$(p99_of_last)" -v g="$GOAL_MS" 'BEGIN { exit !(p >= g) }' || [[ ${EXPLAIN_ALL:-0} == 1 ]]; }
EXPLAIN_N=0
explain() {
  EXPLAIN_N=$((EXPLAIN_N + 1))
  local file
  file=$OUT_DIR/explain/$(printf '%02d' "$EXPLAIN_N")-$(tr -c 'a-zA-Z0-9=_\n-' '_' <<<"$1" | cut -c1-80).txt
  {
    echo "-- $1"
    shift
    for sql in "$@"; do
      echo "$sql;"
      psql_q -d "$DB" -c "explain (analyze, buffers) $sql"
    done
  } >"$file" 2>&1
}

log "timing: $WARMUP warm-up + $REQUESTS measured requests per case, one at a time"
for case in "${LIST_CASES[@]}"; do
  IFS='|' read -r name query cond <<<"$case"
  path="/api/workflows${query:+?$query}"
  limit=$(sed -n 's/.*limit=\([0-9]*\).*/\1/p' <<<"$query")
  limit=${limit:-50}
  sql="select $RUN_COLUMNS from workflow_runs where $cond order by created_at desc, id desc limit $((limit + 1))"
  time_path "list: $name" "$path"
  slow && explain "list: $name" "$sql"
  page=$(curl -fsS -H "Authorization: Bearer $API_TOKEN" "$BASE_URL$path")
  cursor=$(jq -r '.next_cursor // empty' <<<"$page")
  if [[ -n $cursor ]]; then
    if [[ -n $query ]]; then next="$path&cursor=$cursor"; else next="$path?cursor=$cursor"; fi
    time_path "list: $name, next page" "$next"
    if slow; then
      last=$(jq -r '.items[-1] | "(created_at, id) < ('"'"'\(.created_at)'"'"', '"'"'\(.id)'"'"')"' <<<"$page")
      explain "list: $name, next page" "${sql/ order by/ and $last order by}"
    fi
  else
    echo -e "list: $name, next page\t-\t-\t-\t(one page only)" >>"$RESULTS"
  fi
done

for run in "$RUN_SYNC sync run (4 steps, events)" "$RUN_EVENT event run" "$RUN_ACTED run with ops actions" "$RUN_MISSING unknown run (404)"; do
  id=${run%% *}
  [[ -n $id ]] || continue
  time_path "detail: ${run#* }" "/api/workflows/$id" "$([[ $id == "$RUN_MISSING" ]] && echo 404 || echo 200)"
  slow && explain "detail: ${run#* }" \
    "select $RUN_COLUMNS from workflow_runs where id = '$id'" \
    "select name, state, attempts, started_at, finished_at, error_kind, error from workflow_steps where run_id = '$id' order by started_at nulls last, name" \
    "select e.event_id from workflow_run_events e join webhook_events w on w.id = e.event_id where e.run_id = '$id' order by w.received_at, e.event_id" \
    "select action, actor, at from workflow_run_actions where run_id = '$id' order by at, id"
done

time_path "queue stats" "/api/queue/stats"
curl -fsS -H "Authorization: Bearer $API_TOKEN" "$BASE_URL/api/queue/stats" | jq -c . >"$OUT_DIR/queue_stats.json"
# The statements of Store::queue_stats on large tables (src/store/pg/ops.rs); keep them in step.
slow && explain "queue stats" \
  "select pg_stat_get_live_tuples('workflow_runs'::regclass), (select reltuples::float8 from pg_class where oid = 'workflow_runs'::regclass), pg_stat_get_live_tuples('workflow_steps'::regclass), (select reltuples::float8 from pg_class where oid = 'workflow_steps'::regclass)" \
  "select state, count(*) as n from workflow_runs where state in ('pending', 'running', 'waiting', 'failed', 'cancelled') group by state" \
  "select v.name, v.share::float8 from pg_stats s cross join lateral unnest(s.most_common_vals::text::text[], s.most_common_freqs) as v(name, share) where s.schemaname = current_schema() and s.tablename = 'workflow_steps' and s.attname = 'name' and not s.inherited" \
  "select name, state, count(*) as n from workflow_steps where state <> 'succeeded' group by name, state" \
  "select extract(epoch from now() - min(coalesce(next_run_at, created_at)))::float8 from workflow_runs where state = 'pending'"
time_path "metrics (runs the same counts)" "/metrics"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

if grep -qiE '(^| )(ERROR|panicked)' "$OUT_DIR/service.log"; then
  log "the service logged errors: see $OUT_DIR/service.log"
fi

# --- summary -----------------------------------------------------------------------------
MISSED=$(awk -F'\t' -v g="$GOAL_MS" '$3 != "-" && $3 + 0 >= g' "$RESULTS" | wc -l)
CASES=$(awk -F'\t' '$3 != "-"' "$RESULTS" | wc -l)
{
  echo
  echo "=== ops API benchmark summary ($STAMP) ==="
  echo "machine:   $(nproc) cores; load average $LOAD_START at start, $LOAD_END at the end"
  echo "database:  $DB: $ACTUAL_RUNS runs ($USERS users, $PAGES pages, $DAYS days, steps for $STEP_PCT% of runs; generated + vacuum analyze in ${GEN_SECONDS} s)"
  echo "           $SIZES"
  echo "service:   cognie-sync api, RUST_LOG=$LOG_FILTER, $POOL database connections open after the pool warm-up; one client, one keep-alive connection, $WARMUP warm-up + $REQUESTS measured requests per case (curl time_total)"
  echo
  printf '| %-72s | %8s | %8s | %8s |\n' "case" "p50 ms" "p99 ms" "max ms"
  printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..74})" "----------" "----------" "----------"
  awk -F'\t' '{ printf "| %-72s | %8s | %8s | %8s |\n", $1, $2, $3, $4 }' "$RESULTS"
  echo
  echo "goal:      p99 < $GOAL_MS ms: $((CASES - MISSED)) of $CASES cases met$( ((MISSED > 0)) && echo "; EXPLAIN (ANALYZE, BUFFERS) of the others in $OUT_DIR/explain")"
  echo "queue stats answer: $(cat "$OUT_DIR/queue_stats.json")"
  echo "raw output: $OUT_DIR (results.tsv has the paths)"
  echo "RESULT runs=$ACTUAL_RUNS cases=$CASES missed=$MISSED worst_p99_ms=$(awk -F'\t' '$3 != "-" && $3 + 0 > m { m = $3 + 0 } END { print m + 0 }' "$RESULTS") load_start=${LOAD_START// /,} load_end=${LOAD_END// /,}"
} | tee "$OUT_DIR/summary.txt"
