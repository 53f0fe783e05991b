#!/usr/bin/env bash
# Workflow benchmark: end-to-end Notion-event workflow runs per second of cognie-sync (webhook
# → notion_event run → notion_sync run: debounce, fetch, generate, persist), and step pickup
# latency, next to what apalis alone does with no-op jobs on the same PostgreSQL.
#
# One run: build (release service + the `workflow` bench), create a fresh database, start the
# bench's driver (it serves a minimal fake Notion on an ephemeral port of 127.0.0.1 and prints
# the port), start the service (`serve`) against that fake, let the driver subscribe N pages and
# wait for their first syncs, then send one signed event per page and wait for every run; stop
# the service, run the apalis no-op reference, print a summary, drop the database(s).
# Everything talks to 127.0.0.1 only. See benches/workflow.rs for what is measured and how.
# Over the event phase and the reference it also records the CPU time of the service,
# PostgreSQL and the driver (/proc), a `top` sample, and what PostgreSQL's active backends wait
# for (pg_stat_activity every 0.5 s); outputs go to OUT_DIR.
#
# Settings (environment):
#   N=1000                 pages: subscriptions, then one event each (PAGES also works)
#   USERS=1                users the pages are spread over (the Notion rate limiter is per user)
#   SEND_CONCURRENCY=32    API / webhook requests the driver has in flight
#   WORKER_CONCURRENCY=16  the service's WORKER_CONCURRENCY, and the apalis reference's
#   WORKER_POLL_INTERVAL_MS=250  both, likewise
#   DATABASE_MAX_CONNECTIONS     passed to the service and used by the reference (default 20)
#   RUST_LOG=warn          the service's log filter
#   APALIS_JOBS=           no-op jobs of the reference (default: matched, see below)
#   APALIS_MEASURE_LAST=   measure the reference over its last M completions (default: matched)
#   APALIS_DB=same         where the reference runs: `same` (the service's database, after the
#                          service has stopped) or `fresh` (a new database with apalis's own
#                          migrations only, i.e. apalis's stock get_jobs)
#   PROBE_EVENTS=50        afterwards, events sent one at a time on the idle service (pickup
#                          latency without queueing; judged against the pickup goal); 0: none
#   PHASE_TIMEOUT=600      most seconds to wait for one phase's runs
#   PORT=                  the service's HTTP port (default: a free one)
#   SKIP_BUILD=1           use the binaries already built
#   KEEP_DB=1              keep the database(s) (names are printed)
#   OUT_DIR=               where logs and raw outputs go (default target/bench-workflow/<stamp>)
#   REPEAT=1               whole runs to make (each as above, built once); with more than one,
#                          a last line gives the median, min and max of runs/s, apalis jobs/s
#                          and their ratio. Single runs of the same build vary by +-15% on a
#                          2-core machine (the apalis reference most of all), so compare builds
#                          on medians of 5 or more.
#
# Fairness of the reference: same PostgreSQL and the same database, so the same apalis schema
# (including our index-friendly apalis.get_jobs, migrations/postgres/*_fast_job_fetch.sql); the
# service is stopped first so the two never share the CPU; the same worker settings (one
# worker, concurrency, batch = concurrency, pubsub + poll interval, heartbeat 5 s, max_attempts
# 1, pool size) and a job payload shaped like the service's. One more thing makes apalis slower
# the longer a worker runs: its ack finds the batch's rows through `lock_by`, which done rows
# keep, so each ack hashes every row the worker has ever done (until our pruning removes rows
# older than a minute). The service's single worker has done J0 step jobs (the initial syncs)
# when the event phase starts, and does E more in it; so by default the reference pushes J0 + E
# jobs and is measured over its last E completions: the same number of jobs after the same
# history, with its whole backlog there from the start (the best case for apalis). The
# reference does not enqueue each next job from inside a job (commits that fire apalis's
# NOTIFY trigger, which PostgreSQL serialises); the service must, and that is part of what is
# compared.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

if (( ${REPEAT:-1} > 1 )); then
  [[ ${SKIP_BUILD:-0} == 1 ]] || { cargo build --release --quiet && cargo bench --bench workflow --no-run --quiet; }
  results=()
  for i in $(seq 1 "$REPEAT"); do
    echo "bench: run $i of $REPEAT" >&2
    if ! out=$(REPEAT=1 SKIP_BUILD=1 OUT_DIR= bash "$0"); then
      echo "bench: run $i of $REPEAT failed; it is left out of the summary" >&2
      continue
    fi
    echo "$out"
    results+=("$(grep '^RESULT ' <<<"$out" | tail -n 1)")
  done
  (( ${#results[@]} > 0 )) || { echo "bench: every run failed" >&2; exit 1; }
  printf '%s\n' "${results[@]}" | awk -v n="$REPEAT" '
    function med(a, k,   i, j, t) {
      for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    {
      for (f = 1; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] }
      r[NR] = v["runs_per_sec"]; a[NR] = v["apalis_jobs_per_sec"]; q[NR] = v["ratio_pct"]
    }
    END {
      printf "REPEAT runs=%d", NR
      printf " runs_per_sec_median=%.1f", med(r, NR); printf " runs_per_sec_min=%.1f runs_per_sec_max=%.1f", r[1], r[NR]
      printf " apalis_jobs_per_sec_median=%.1f", med(a, NR); printf " apalis_min=%.1f apalis_max=%.1f", a[1], a[NR]
      printf " ratio_pct_median=%.1f", med(q, NR); printf " ratio_pct_min=%.1f ratio_pct_max=%.1f\n", q[1], q[NR]
    }'
  exit 0
fi

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
LOG_FILTER=${RUST_LOG:-warn}
PAGES=${N:-${PAGES:-1000}}
USERS=${USERS:-1}
SEND_CONCURRENCY=${SEND_CONCURRENCY:-32}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-16}
WORKER_POLL_INTERVAL_MS=${WORKER_POLL_INTERVAL_MS:-250}
MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-20}
APALIS_DB=${APALIS_DB:-same}
PROBE_EVENTS=${PROBE_EVENTS:-50}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-600}
STAMP=$(date +%Y%m%d_%H%M%S)
DB=cognie_bench_wf_${STAMP}_$$
OUT_DIR=${OUT_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/bench-workflow/$STAMP}
mkdir -p "$OUT_DIR"
CLK_TCK=$(getconf CLK_TCK)

case $APALIS_DB in fresh | same) ;; *) echo "APALIS_DB must be fresh or same, not $APALIS_DB" >&2; exit 2 ;; esac

log() { echo "bench: $*" >&2; }
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1 "$@"; }

for tool in psql curl cargo top; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 2; }
done
pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || { echo "bench: PostgreSQL is not up at $PG_HOST:$PG_PORT" >&2; exit 2; }

# --- build -------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVICE_BIN=$TARGET_DIR/release/cognie-sync
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the release service"
  cargo build --release --quiet
  log "building the driver"
  cargo bench --bench workflow --no-run --quiet
fi
# The bench executable (cargo names it workflow-<hash>): the newest one built.
BENCH_BIN=$(ls -t "$TARGET_DIR"/release/deps/workflow-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
[[ -x $SERVICE_BIN ]] || { echo "bench: $SERVICE_BIN missing (run without SKIP_BUILD)" >&2; exit 2; }
[[ -n $BENCH_BIN && -x $BENCH_BIN ]] || { echo "bench: the workflow bench is not built (run without SKIP_BUILD)" >&2; exit 2; }

# --- cleanup -----------------------------------------------------------------------------
SERVICE_PID=
CLIENT_PID=
DATABASES=()
stop_pid() {
  local pid=$1
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
stop_service() {
  stop_pid "$SERVICE_PID"
  SERVICE_PID=
}
cleanup() {
  stop_pid "$CLIENT_PID"
  stop_service
  for db in "${DATABASES[@]}"; do
    if [[ ${KEEP_DB:-0} == 1 ]]; then
      log "kept database $db"
    else
      psql_q -d postgres -c "drop database if exists $db with (force)" >/dev/null 2>&1 || log "could not drop $db"
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- CPU accounting (from /proc; the service, PostgreSQL and the driver share the cores) ---
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
    # A process that started inside the window (a new database connection) counts whole.
    { used[$1] += (($1 " " $2) in before) ? $3 - before[$1 " " $2] : $3 }
    END {
      wall = total / ncpu  # elapsed ticks, from the machine-wide counters
      if (wall <= 0) { print "n/a"; exit }
      other = busy - used["svc"] - used["pg"] - used["client"]
      if (other < 0) other = 0
      printf "service %.2f  postgres %.2f  driver %.2f  other %.2f  (cores of %d; machine busy %.0f%%)\n",
        used["svc"] / wall, used["pg"] / wall, used["client"] / wall, other / wall, ncpu, 100 * busy / total
    }' "$1" "$2"
}
# pg_sampler DB FILE (run it with &; it becomes the psql process): every 0.5 s until killed,
# what the database's active backends are doing: a SAMPLE line, then one "wait type|wait
# event|query" line per active backend.
pg_sampler() {
  exec psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -At -F'|' -d "$1" -o "$2" 2>/dev/null <<'SQL'
select 'SAMPLE', '', '' union all
select coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-'), regexp_replace(left(query, 80), '\s+', ' ', 'g')
from pg_stat_activity where datname = current_database() and state = 'active' and pid <> pg_backend_pid()
\watch 0.5
SQL
}
# pg_activity_report FILE: the most frequent (wait, query) pairs and the average active backends.
pg_activity_report() {
  local samples
  # grep -c prints 0 (and fails) when nothing matches; a missing file prints nothing.
  samples=$(grep -c '^SAMPLE|' "$1" 2>/dev/null || true)
  samples=${samples:-0}
  (( samples > 0 )) || { echo "  n/a"; return; }
  # Samples with no active backend at all (a short phase) leave nothing for grep -v, which then
  # fails; under pipefail that ended the whole run before its RESULT line.
  local active
  active=$(grep -v -e '^SAMPLE|' -e '^$' "$1" || true)
  [[ -n $active ]] || { echo "  no active backend in $samples samples"; return; }
  sort <<<"$active" | uniq -c | sort -rn | head -n 12 |
    awk -v n="$samples" '{ c = $1; $1 = ""; printf "  %5.2f  %s\n", c / n, substr($0, 2) }'
  echo "  ($samples samples; first column: backends in that state per sample, on average; total $(wc -l <<<"$active" | awk -v n="$samples" '{ printf "%.2f", $1 / n }'))"
}
# watch_run PID OUTPUT PHASE SERVICE_PID DB: waits for PID (returning its status) while checking
# that the service is alive; when PID prints "PHASE <PHASE> start" / "PHASE <PHASE> end", takes
# CPU snapshots, the load average, a `top` sample and pg_stat_activity samples of DB for that
# window ($OUT_DIR/<PHASE>.*).
watch_run() {
  local pid=$1 out=$2 phase=$3 svc=$4 db=$5 started=0 ended=0 alive=1 sampler=
  while [[ $alive == 1 ]]; do
    # Checked before the markers, so that markers printed just before the exit still count.
    kill -0 "$pid" 2>/dev/null || alive=0
    if [[ -n $svc ]] && ! kill -0 "$svc" 2>/dev/null; then
      echo "bench: the service exited; its log:" >&2
      tail -n 30 "$OUT_DIR/service.log" >&2
      return 1
    fi
    if [[ $started == 0 ]] && grep -q "^PHASE $phase start" "$out"; then
      snapshot "$OUT_DIR/$phase.before" "$svc" "$pid"
      cut -d' ' -f1-3 /proc/loadavg >"$OUT_DIR/$phase.load_start"
      # The second frame: %CPU over one second inside the phase.
      (top -b -n 2 -d 1 -w 200 2>/dev/null | awk '/^top -/ { n++ } n == 2' >"$OUT_DIR/$phase.top") &
      pg_sampler "$db" "$OUT_DIR/$phase.pg_activity" &
      sampler=$!
      started=1
    fi
    if [[ $started == 1 && $ended == 0 ]] && grep -q "^PHASE $phase end" "$out"; then
      snapshot "$OUT_DIR/$phase.after" "$svc" "$pid"
      cut -d' ' -f1-3 /proc/loadavg >"$OUT_DIR/$phase.load_end"
      cpu_report "$OUT_DIR/$phase.before" "$OUT_DIR/$phase.after" >"$OUT_DIR/$phase.cpu"
      stop_sampler "$sampler"
      sampler=
      ended=1
    fi
    [[ $alive == 1 ]] && sleep 0.1
  done
  stop_sampler "$sampler"
  wait "$pid"
}
# stop_sampler PID: stops a pg_sampler.
stop_sampler() {
  [[ -n $1 ]] || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# --- is the machine quiet? ------------------------------------------------------------------
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
sleep 1
read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
IDLE_BUSY=$(( 100 * ((u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1)) / ((u2 + n2 + s2 + i2 + w2 + q2 + sq2 + st2) - (u1 + n1 + s1 + i1 + w1 + q1 + sq1 + st1)) ))
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if (( IDLE_BUSY > 20 )); then
  log "WARNING: the machine is already ${IDLE_BUSY}% busy before the benchmark starts (a build?); results will be low"
fi

# --- database, driver (with the fake Notion), service -----------------------------------------
log "creating database $DB"
psql_q -d postgres -c "create database $DB" >/dev/null
DATABASES+=("$DB")
DATABASE_URL=postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB

if [[ -z ${PORT:-} ]]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18081)
fi
BASE_URL=http://127.0.0.1:$PORT
SECRET=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
API_TOKEN=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATA_DIR=$OUT_DIR/data
mkdir -p "$DATA_DIR"

log "starting the driver: $PAGES pages, $USERS user(s), $SEND_CONCURRENCY requests in flight"
"$BENCH_BIN" drive --url "$BASE_URL" --api-token "$API_TOKEN" --secret "$SECRET" \
  --database-url "$DATABASE_URL" --pages "$PAGES" --users "$USERS" --concurrency "$SEND_CONCURRENCY" \
  --timeout "$PHASE_TIMEOUT" --probe "$PROBE_EVENTS" >"$OUT_DIR/workflow.txt" 2>"$OUT_DIR/workflow.err" &
CLIENT_PID=$!
NOTION_PORT=
for _ in $(seq 1 100); do
  NOTION_PORT=$(sed -n 's/^FAKE_NOTION_PORT=\([0-9]*\)$/\1/p' "$OUT_DIR/workflow.txt")
  [[ -n $NOTION_PORT ]] && break
  kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$OUT_DIR/workflow.err" >&2; echo "bench: the driver exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n $NOTION_PORT ]] || { echo "bench: the driver did not print its fake Notion port" >&2; exit 1; }

log "starting cognie-sync serve on $BASE_URL (fake Notion on 127.0.0.1:$NOTION_PORT, RUST_LOG=$LOG_FILTER)"
# Started from DATA_DIR with ENV_FILE unset, so no developer .env leaks into the run.
(
  cd "$DATA_DIR"
  exec env -u ENV_FILE \
    DATABASE_URL="$DATABASE_URL" \
    DATABASE_MAX_CONNECTIONS="$MAX_CONNECTIONS" \
    TOKEN_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)" \
    BIND_ADDR="127.0.0.1:$PORT" \
    NOTION_WEBHOOK_SECRET="$SECRET" \
    NOTION_API_BASE_URL="http://127.0.0.1:$NOTION_PORT" \
    NOTION_RATE_LIMIT_PER_MINUTE=100000 \
    API_TOKEN="$API_TOKEN" \
    DATA_DIR="$DATA_DIR" \
    DEBOUNCE_SECONDS=0 \
    DEBOUNCE_MAX_WAIT_SECONDS=1 \
    WORKER_CONCURRENCY="$WORKER_CONCURRENCY" \
    WORKER_POLL_INTERVAL_MS="$WORKER_POLL_INTERVAL_MS" \
    FLASHCARD_GENERATOR=rules \
    RUST_LOG="$LOG_FILTER" \
    "$SERVICE_BIN" serve
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
log "service ready (pid $SERVICE_PID); driving (progress in $OUT_DIR/workflow.err)"

if ! watch_run "$CLIENT_PID" "$OUT_DIR/workflow.txt" events "$SERVICE_PID" "$DB"; then
  cat "$OUT_DIR/workflow.err" "$OUT_DIR/workflow.txt" >&2
  echo "bench: the driver failed; service log tail:" >&2
  tail -n 20 "$OUT_DIR/service.log" >&2
  exit 1
fi
CLIENT_PID=
grep -v '^PHASE ' "$OUT_DIR/workflow.txt" | grep -v '^FAKE_NOTION_PORT=' >&2
RESULT=$(grep '^RESULT ' "$OUT_DIR/workflow.txt" | tail -n 1)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
stop_service
if grep -qiE '(^| )(ERROR|panicked)' "$OUT_DIR/service.log"; then
  log "the service logged errors: see $OUT_DIR/service.log"
fi

# --- apalis no-op reference ----------------------------------------------------------------
J0=$(field step_jobs_before_events "$RESULT")
E=$(field event_step_attempts "$RESULT")
if [[ -z ${APALIS_JOBS:-} ]]; then
  APALIS_JOBS=$((J0 + E))
  APALIS_MEASURE_LAST=${APALIS_MEASURE_LAST:-$E}
fi
APALIS_MEASURE_LAST=${APALIS_MEASURE_LAST:-0}
if [[ $APALIS_DB == fresh ]]; then
  REF_DB=${DB}_apalis
  psql_q -d postgres -c "create database $REF_DB" >/dev/null
  DATABASES+=("$REF_DB")
else
  REF_DB=$DB
fi
log "apalis reference: $APALIS_JOBS no-op jobs (measured: the last ${APALIS_MEASURE_LAST/#0/all}), concurrency $WORKER_CONCURRENCY, database $REF_DB ($APALIS_DB)"
"$BENCH_BIN" apalis --database-url "postgres://$PG_USER@$PG_HOST:$PG_PORT/$REF_DB" --jobs "$APALIS_JOBS" \
  --concurrency "$WORKER_CONCURRENCY" --poll-ms "$WORKER_POLL_INTERVAL_MS" --max-connections "$MAX_CONNECTIONS" \
  --measure-last "$APALIS_MEASURE_LAST" --timeout "$PHASE_TIMEOUT" >"$OUT_DIR/apalis.txt" 2>"$OUT_DIR/apalis.err" &
REF_PID=$!
if ! watch_run "$REF_PID" "$OUT_DIR/apalis.txt" apalis "" "$REF_DB"; then
  cat "$OUT_DIR/apalis.err" "$OUT_DIR/apalis.txt" >&2
  echo "bench: the apalis reference failed" >&2
  exit 1
fi
grep -v '^PHASE ' "$OUT_DIR/apalis.txt" >&2
REF=$(grep '^RESULT ' "$OUT_DIR/apalis.txt" | tail -n 1)

# --- summary -----------------------------------------------------------------------------
RUNS_PS=$(field runs_per_sec "$RESULT")
STEPS_PS=$(field step_attempts_per_sec "$RESULT")
APALIS_PS=$(field apalis_jobs_per_sec "$REF")
P50=$(field pickup_p50_ms "$RESULT")
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }
RATIO=$(pct "$RUNS_PS" "$APALIS_PS")
STEP_RATIO=$(pct "$STEPS_PS" "$APALIS_PS")
RATIO_OK=$(awk -v r="$RATIO" 'BEGIN { print (r + 0 >= 25 ? "met" : "NOT met") }')
Q50=$(field queued_pickup_p50_ms "$RESULT")
IDLE_Q50=$(field idle_queued_pickup_p50_ms "$RESULT")
# Pickup is judged on every kind of step start when a worker is free: the steps a worker claimed
# on in the previous step's transaction (P50) and a run's first step through the queue on the
# idle service (IDLE_Q50: the probe events, one at a time). During the burst a run's first step
# also waits behind the runs ahead of it (events arrive ~10x faster than runs finish): that is
# queueing at the run rate, reported as such (Q50), not pickup latency.
P50_OK=$(awk -v p="$P50" -v q="$IDLE_Q50" 'BEGIN { print (p + 0 < 10 && q != "NaN" && q != "" && q + 0 < 10 ? "met" : "NOT met") }')
{
  echo
  echo "=== workflow benchmark summary ($STAMP) ==="
  echo "machine:   $(nproc) cores; load average $LOAD_START at start, $(cat "$OUT_DIR/events.load_start" 2>/dev/null || echo n/a) -> $(cat "$OUT_DIR/events.load_end" 2>/dev/null || echo n/a) over the event phase (${IDLE_BUSY}% busy before start)"
  echo "service:   cognie-sync serve, WORKER_CONCURRENCY=$WORKER_CONCURRENCY, poll ${WORKER_POLL_INTERVAL_MS} ms, pool $MAX_CONNECTIONS, RUST_LOG=$LOG_FILTER, debounce 0 s"
  echo "initial:   $PAGES subscription syncs at $(field initial_syncs_per_sec "$RESULT") syncs/s; pickup p50 $(field initial_pickup_p50_ms "$RESULT") ms  p99 $(field initial_pickup_p99_ms "$RESULT") ms; not succeeded $(field initial_failed_runs "$RESULT")"
  echo "events:    $(field accepted "$RESULT") events ($(field ingest_per_sec "$RESULT")/s accepted) -> $(field event_runs "$RESULT") event runs + $(field sync_runs "$RESULT") sync runs in $(field event_elapsed_s "$RESULT") s, $USERS user(s)"
  echo "           $(field syncs_per_sec "$RESULT") syncs/s   $RUNS_PS workflow runs/s   $STEPS_PS step attempts/s"
  echo "           step pickup (fetch/generate/persist) p50 $P50 ms  p99 $(field pickup_p99_ms "$RESULT") ms  max $(field pickup_max_ms "$RESULT") ms  (n=$(field pickup_n "$RESULT"))"
  echo "           event received -> sync finished p50 $(field e2e_p50_ms "$RESULT") ms  p99 $(field e2e_p99_ms "$RESULT") ms"
  echo "           failed runs $(field failed_runs "$RESULT"), unfinished $(field unfinished_runs "$RESULT")"
  echo "           cpu: $(cat "$OUT_DIR/events.cpu" 2>/dev/null || echo n/a)"
  echo "apalis:    $APALIS_PS no-op jobs/s over the last $(field measured_jobs "$REF") of $(field jobs "$REF") jobs ($(field span_s "$REF") s; all jobs: $(field all_jobs_per_sec "$REF")/s), one worker, concurrency $(field concurrency "$REF"), batch $(field batch_size "$REF"), poll $(field poll_ms "$REF") ms"
  echo "           database $APALIS_DB: apalis.jobs $(field table_rows_before "$REF") rows before, $(field table_rows_after "$REF") after; $(field commits_per_job "$REF") commits per job (service: $(field commits_per_sync "$RESULT") per sync = event run + sync run, $(field event_step_attempts "$RESULT") step jobs for $(field sync_runs "$RESULT") syncs)"
  echo "           cpu: $(sed 's/service 0.00  //' "$OUT_DIR/apalis.cpu" 2>/dev/null || echo n/a)"
  echo "ratio:     workflow runs/s / apalis no-op jobs/s = $RATIO% (goal >= 25%: $RATIO_OK)"
  echo "           step attempts/s / apalis no-op jobs/s = $STEP_RATIO%"
  echo "pickup:    p50 $P50 ms, through the queue on the idle service p50 $IDLE_Q50 ms (goal < 10 ms for both: $P50_OK); idle service ($PROBE_EVENTS probe events one at a time): p50 $(field idle_pickup_p50_ms "$RESULT") ms  p99 $(field idle_pickup_p99_ms "$RESULT") ms"
  echo "           (fetch/generate/persist: the previous step's end to this one's start; a step the worker"
  echo "           claimed on in the previous step's transaction counts 0)"
  echo "           queueing during the burst (a run's first step, from the run's creation): p50 $Q50 ms  p99 $(field queued_pickup_p99_ms "$RESULT") ms;"
  echo "           idle service: p50 $(field idle_queued_pickup_p50_ms "$RESULT") ms  p99 $(field idle_queued_pickup_p99_ms "$RESULT") ms"
  echo "postgres during the event phase (pg_stat_activity every 0.5 s; wait type|event|query):"
  pg_activity_report "$OUT_DIR/events.pg_activity"
  echo "postgres during the apalis reference:"
  pg_activity_report "$OUT_DIR/apalis.pg_activity"
  if [[ -s $OUT_DIR/events.top ]]; then
    echo "top, 1 s inside the event phase:"
    head -n 16 "$OUT_DIR/events.top" | sed 's/^/  /'
  fi
  echo "raw output: $OUT_DIR"
  echo "RESULT runs_per_sec=$RUNS_PS syncs_per_sec=$(field syncs_per_sec "$RESULT") step_attempts_per_sec=$STEPS_PS pickup_p50_ms=$P50 pickup_p99_ms=$(field pickup_p99_ms "$RESULT") queued_pickup_p50_ms=$(field queued_pickup_p50_ms "$RESULT") idle_queued_pickup_p50_ms=$(field idle_queued_pickup_p50_ms "$RESULT") users=$USERS failed_runs=$(field failed_runs "$RESULT") apalis_jobs_per_sec=$APALIS_PS ratio_pct=$RATIO pages=$PAGES"
} | tee "$OUT_DIR/summary.txt"
