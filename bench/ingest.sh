#!/usr/bin/env bash
# Webhook ingest benchmark: how many signed Notion webhooks per second cognie-sync stores
# durably, next to what PostgreSQL alone does for the same durable work (pgbench).
#
# One run: build (release service + the `ingest` bench), create a fresh database, start the
# service on it, wait for /readyz, drive it with benches/ingest.rs, stop it, run pgbench with
# bench/pgbench_intake.sql on the same (migrated) database, print a summary, drop the database.
# Everything talks to 127.0.0.1 only.
#
# Settings (environment):
#   RUST_LOG=warn          the service's log filter (RUST_LOG=info logs every webhook)
#   ROLE=api               service subcommand: `api` (HTTP only: intake alone, like pgbench)
#                          or `serve` (HTTP + workers that also run every enqueued step)
#   CONNECTIONS=64         load-generator connections
#   DURATION=20 WARMUP=2   measured and warm-up seconds of the load run
#   THREADS=1              load-generator runtime threads
#   DATABASE_MAX_CONNECTIONS  passed to the service (its default: 20)
#   PGBENCH_CLIENTS="16 64"   pgbench client counts; PGBENCH_DURATION=20
#   PGBENCH_FULL=1         also run bench/pgbench_intake_full.sql (the service's whole
#                          4-insert statement) at the first client count
#   PORT=                  HTTP port (default: a free one)
#   SKIP_BUILD=1           use the binaries already built
#   KEEP_DB=1              keep the database (its name is printed)
#   OUT_DIR=               where logs and raw outputs go (default target/bench-ingest/<stamp>)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
LOG_FILTER=${RUST_LOG:-warn}
ROLE=${ROLE:-api}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-1}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-16 64}
PGBENCH_DURATION=${PGBENCH_DURATION:-20}
STAMP=$(date +%Y%m%d_%H%M%S)
DB=cognie_bench_${STAMP}_$$
OUT_DIR=${OUT_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/bench-ingest/$STAMP}
mkdir -p "$OUT_DIR"
CLK_TCK=$(getconf CLK_TCK)

case $ROLE in api | serve) ;; *) echo "ROLE must be api or serve, not $ROLE" >&2; exit 2 ;; esac

log() { echo "bench: $*" >&2; }
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1 "$@"; }

for tool in psql pgbench curl cargo; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 2; }
done
pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || { echo "bench: PostgreSQL is not up at $PG_HOST:$PG_PORT" >&2; exit 2; }

# --- build -------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVICE_BIN=$TARGET_DIR/release/cognie-sync
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the release service"
  cargo build --release --quiet
  log "building the load generator"
  cargo bench --bench ingest --no-run --quiet
fi
# The bench executable (cargo names it ingest-<hash>): the newest one built.
BENCH_BIN=$(ls -t "$TARGET_DIR"/release/deps/ingest-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
[[ -x $SERVICE_BIN ]] || { echo "bench: $SERVICE_BIN missing (run without SKIP_BUILD)" >&2; exit 2; }
[[ -n $BENCH_BIN && -x $BENCH_BIN ]] || { echo "bench: the ingest bench is not built (run without SKIP_BUILD)" >&2; exit 2; }

# --- cleanup -----------------------------------------------------------------------------
SERVICE_PID=
DB_CREATED=0
stop_service() {
  if [[ -n $SERVICE_PID ]] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    kill -TERM "$SERVICE_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVICE_PID" 2>/dev/null || break; sleep 0.1; done
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

# --- CPU accounting (from /proc; the service, PostgreSQL and the client share the cores) ---
# ticks PID...: utime+stime of each live PID, as "pid ticks" lines.
ticks() {
  local pid line rest
  for pid in "$@"; do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${line##*) }
    read -r -a f <<<"$rest"
    echo "$pid $((f[11] + f[12]))"
  done
}
# snapshot FILE SERVICE_PID CLIENT_PID: system busy/total ticks, then per-process ticks.
snapshot() {
  local cpu user nice system idle iowait irq softirq steal
  read -r cpu user nice system idle iowait irq softirq steal _ </proc/stat
  {
    echo "sys $((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
    ticks "$2" | sed 's/^/svc /'
    ticks "$3" | sed 's/^/client /'
    # shellcheck disable=SC2046
    ticks $(pgrep -x postgres) | sed 's/^/pg /'
  } >"$1"
}
# cpu_report BEFORE AFTER: cores used by each part between two snapshots ("other" is whatever
# else ran on the machine meanwhile, e.g. a compiler: it makes the numbers unreliable).
cpu_report() {
  awk -v hz="$CLK_TCK" -v ncpu="$(nproc)" '
    FNR == NR { if ($1 == "sys") { b0 = $2; t0 = $3 } else before[$1 " " $2] = $3; next }
    $1 == "sys" { busy = $2 - b0; total = $3 - t0; next }
    ($1 " " $2) in before { used[$1] += $3 - before[$1 " " $2] }
    END {
      wall = total / ncpu  # elapsed ticks, from the machine-wide counters
      if (wall <= 0) { print "n/a"; exit }
      other = busy - used["svc"] - used["pg"] - used["client"]
      if (other < 0) other = 0
      printf "service %.2f  postgres %.2f  client %.2f  other %.2f  (cores of %d; machine busy %.0f%%)\n",
        used["svc"] / wall, used["pg"] / wall, used["client"] / wall, other / wall, ncpu, 100 * busy / total
    }' "$1" "$2"
}
# measure_cpu DELAY SECONDS PREFIX SERVICE_PID CLIENT_PID: in the background, snapshot at
# DELAY and DELAY+SECONDS, write PREFIX.cpu.
measure_cpu() {
  (
    sleep "$1"
    snapshot "$3.before" "$4" "$5"
    sleep "$2"
    snapshot "$3.after" "$4" "$5"
    cpu_report "$3.before" "$3.after" >"$3.cpu"
  ) &
}

# --- is the machine quiet? ------------------------------------------------------------------
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
sleep 1
read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
IDLE_BUSY=$(( 100 * ((u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1)) / ((u2 + n2 + s2 + i2 + w2 + q2 + sq2 + st2) - (u1 + n1 + s1 + i1 + w1 + q1 + sq1 + st1)) ))
if (( IDLE_BUSY > 20 )); then
  log "WARNING: the machine is already ${IDLE_BUSY}% busy before the benchmark starts (a build?); results will be low"
fi

# --- database and service ----------------------------------------------------------------
log "creating database $DB"
psql_q -d postgres -c "create database $DB" >/dev/null
DB_CREATED=1
DATABASE_URL=postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB

if [[ -z ${PORT:-} ]]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
fi
BASE_URL=http://127.0.0.1:$PORT
SECRET=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATA_DIR=$OUT_DIR/data
mkdir -p "$DATA_DIR"

log "starting cognie-sync $ROLE on $BASE_URL (RUST_LOG=$LOG_FILTER)"
# Started from DATA_DIR with ENV_FILE unset, so no developer .env leaks into the run.
(
  cd "$DATA_DIR"
  exec env -u ENV_FILE \
    DATABASE_URL="$DATABASE_URL" \
    TOKEN_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)" \
    BIND_ADDR="127.0.0.1:$PORT" \
    NOTION_WEBHOOK_SECRET="$SECRET" \
    API_TOKEN="bench-token" \
    DATA_DIR="$DATA_DIR" \
    RUST_LOG="$LOG_FILTER" \
    "$SERVICE_BIN" "$ROLE"
) >"$OUT_DIR/service.log" 2>&1 &
SERVICE_PID=$!

for i in $(seq 1 300); do
  if curl -fsS -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then break; fi
  if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
    echo "bench: the service exited; its log:" >&2
    tail -n 30 "$OUT_DIR/service.log" >&2
    exit 1
  fi
  [[ $i == 300 ]] && { echo "bench: /readyz not ready after 30s" >&2; exit 1; }
  sleep 0.1
done
log "service ready (pid $SERVICE_PID)"

# --- load --------------------------------------------------------------------------------
log "load: $CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s measured"
"$BENCH_BIN" --url "$BASE_URL/api/notion/webhook/notion" --secret "$SECRET" \
  -c "$CONNECTIONS" -d "$DURATION" -w "$WARMUP" -t "$THREADS" >"$OUT_DIR/ingest.txt" 2>"$OUT_DIR/ingest.err" &
CLIENT_PID=$!
# CPU over the middle of the measured window (the probe request takes a moment first).
CPU_SECS=$(awk -v d="$DURATION" 'BEGIN { s = d - 2; if (s < 1) s = d / 2; print s }')
measure_cpu "$(awk -v w="$WARMUP" 'BEGIN { print w + 1 }')" "$CPU_SECS" "$OUT_DIR/load" "$SERVICE_PID" "$CLIENT_PID"
CPU_JOB=$!
if ! wait "$CLIENT_PID"; then
  cat "$OUT_DIR/ingest.err" "$OUT_DIR/ingest.txt" >&2
  echo "bench: the load generator failed; service log tail:" >&2
  tail -n 20 "$OUT_DIR/service.log" >&2
  exit 1
fi
wait "$CPU_JOB" 2>/dev/null || true
cat "$OUT_DIR/ingest.txt"
RESULT=$(grep '^RESULT ' "$OUT_DIR/ingest.txt" | tail -n 1)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

stop_service
ROWS=$(psql_q -d "$DB" -Atc "select count(*) from webhook_events")
JOBS=$(psql_q -d "$DB" -Atc "select count(*) from apalis.jobs")
RUNS=$(psql_q -d "$DB" -Atc "select count(*) from workflow_runs")

# --- pgbench -----------------------------------------------------------------------------
pgbench_run() { # SCRIPT CLIENTS NAME
  log "pgbench $(basename "$1") -c $2 -j 2 -T $PGBENCH_DURATION"
  pgbench -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -n -M prepared -c "$2" -j 2 -T "$PGBENCH_DURATION" \
    -f "$1" "$DB" >"$OUT_DIR/$3.txt" 2>&1 &
  local pid=$!
  measure_cpu 2 "$(awk -v d="$PGBENCH_DURATION" 'BEGIN { s = d - 4; if (s < 1) s = d / 2; print s }')" \
    "$OUT_DIR/$3" 0 "$pid"
  local cpu_job=$!
  if ! wait "$pid"; then
    cat "$OUT_DIR/$3.txt" >&2
    exit 1
  fi
  wait "$cpu_job" 2>/dev/null || true
  grep -E '^(number of failed|latency average|tps)' "$OUT_DIR/$3.txt" | sed 's/^/  /' >&2
}
pgbench_tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT_DIR/$1.txt" | head -n 1; }
pgbench_lat() { sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$OUT_DIR/$1.txt" | head -n 1; }

BEST_TPS=0
for c in $PGBENCH_CLIENTS; do
  pgbench_run "$ROOT/bench/pgbench_intake.sql" "$c" "pgbench_c$c"
  tps=$(pgbench_tps "pgbench_c$c")
  BEST_TPS=$(awk -v a="$BEST_TPS" -v b="$tps" 'BEGIN { print (b > a ? b : a) }')
done
if [[ ${PGBENCH_FULL:-0} == 1 ]]; then
  FULL_C=${PGBENCH_CLIENTS%% *}
  pgbench_run "$ROOT/bench/pgbench_intake_full.sql" "$FULL_C" "pgbench_full_c$FULL_C"
fi

# --- summary -----------------------------------------------------------------------------
WPS=$(field webhooks_per_sec "$RESULT")
ACCEPTED_ALL=$(field accepted_all "$RESULT")
RATIO=$(awk -v a="$WPS" -v b="$BEST_TPS" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
{
  echo
  echo "=== ingest benchmark summary ($STAMP) ==="
  echo "service:   cognie-sync $ROLE, RUST_LOG=$LOG_FILTER, ${CONNECTIONS} connections, ${DURATION}s, $(nproc) cores (${IDLE_BUSY}% busy before start)"
  echo "service:   $WPS webhooks/s   p50 $(field p50_ms "$RESULT") ms   p90 $(field p90_ms "$RESULT") ms   p99 $(field p99_ms "$RESULT") ms   max $(field max_ms "$RESULT") ms"
  echo "           non-200 $(field non_200 "$RESULT"), transport errors $(field errors "$RESULT")"
  echo "           cpu: $(cat "$OUT_DIR/load.cpu" 2>/dev/null || echo n/a)"
  echo "cross-check: webhook_events rows $ROWS, workflow_runs $RUNS, apalis.jobs $JOBS (pending or not), accepted responses $ACCEPTED_ALL$([[ $ROWS == "$ACCEPTED_ALL" ]] && echo ' (match)' || echo ' (MISMATCH)')"
  for c in $PGBENCH_CLIENTS; do
    echo "pgbench:   -c $c: $(pgbench_tps "pgbench_c$c") tps   latency avg $(pgbench_lat "pgbench_c$c") ms"
    echo "           cpu: $(sed 's/client/pgbench/; s/service [0-9.]*  //' "$OUT_DIR/pgbench_c$c.cpu" 2>/dev/null|| echo n/a)"
  done
  if [[ ${PGBENCH_FULL:-0} == 1 ]]; then
    echo "pgbench:   full intake statement (4 inserts) -c $FULL_C: $(pgbench_tps "pgbench_full_c$FULL_C") tps   latency avg $(pgbench_lat "pgbench_full_c$FULL_C") ms"
    echo "           cpu: $(sed 's/client/pgbench/; s/service [0-9.]*  //' "$OUT_DIR/pgbench_full_c$FULL_C.cpu" 2>/dev/null || echo n/a)"
  fi
  echo "ratio:     service / pgbench(best) = $RATIO"
  echo "raw output: $OUT_DIR"
  echo "RESULT service_webhooks_per_sec=$WPS p50_ms=$(field p50_ms "$RESULT") p99_ms=$(field p99_ms "$RESULT") pgbench_best_tps=$BEST_TPS ratio=$RATIO"
} | tee "$OUT_DIR/summary.txt"
