#!/usr/bin/env bash
# Coverage-guided fuzzing of the webhook intake with cargo-fuzz (libFuzzer, AddressSanitizer):
# every target in fuzz/ runs for FUZZ_SECONDS, one after another. A crash stops the run with
# a non-zero exit; libFuzzer prints the input and cargo-fuzz saves it under
# fuzz/artifacts/<target>/ (reproduce with `cargo +nightly fuzz run <target> <file>`).
#
# Targets (fuzz/fuzz_targets/):
#   webhook_event      any bytes through the body parser (both formats, the handshake)
#   webhook_envelope   structured bodies in both formats: classified as the contract says
#   webhook_signature  X-Notion-Signature parsing and HMAC verification
#   webhook_intake     the whole intake decision (body, header, key -> store / 401 / 400)
#
# Settings (environment):
#   FUZZ_SECONDS=60        per target
#   FUZZ_TARGETS=          a space-separated subset (default: all four)
#   FUZZ_JOBS=1            libFuzzer worker processes per target
#   FUZZ_TOOLCHAIN=nightly cargo-fuzz needs a nightly toolchain (sanitizers, -Z flags)
#
# The corpus grows in fuzz/corpus/<target>/ (git-ignored), seeded from tests/fixtures/notion
# and fuzz/seeds/; fuzz/webhook.dict gives the JSON targets the field names and event types.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-webhook_event webhook_envelope webhook_signature webhook_intake}
FUZZ_JOBS=${FUZZ_JOBS:-1}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}

log() { echo "fuzz: $*" >&2; }

if ! cargo "+$TOOLCHAIN" --version >/dev/null 2>&1; then
  echo "fuzz: the $TOOLCHAIN toolchain is required (rustup toolchain install $TOOLCHAIN)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz
fi

cd "$ROOT/fuzz"
log "building the targets (release, AddressSanitizer, debug assertions)"
cargo "+$TOOLCHAIN" fuzz build

for target in $FUZZ_TARGETS; do
  corpus=corpus/$target
  mkdir -p "$corpus" "artifacts/$target"
  seeds=()
  dict=()
  case $target in
    webhook_event | webhook_intake)
      seeds=("$ROOT/tests/fixtures/notion" "$ROOT/fuzz/seeds/webhook_event")
      dict=("-dict=$ROOT/fuzz/webhook.dict")
      ;;
  esac
  parallel=()
  if (( FUZZ_JOBS > 1 )); then parallel=("-jobs=$FUZZ_JOBS" "-workers=$FUZZ_JOBS"); fi
  log "$target: ${FUZZ_SECONDS}s"
  started=$(date +%s)
  status=0
  cargo "+$TOOLCHAIN" fuzz run "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "${parallel[@]}" "${dict[@]}" \
    >"artifacts/$target/last-run.log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY)' \
    "artifacts/$target/last-run.log" >&2 || true
  if [[ $status != 0 ]]; then
    log "$target FAILED (exit $status) after $(($(date +%s) - started))s; see fuzz/artifacts/$target/"
    tail -n 60 "artifacts/$target/last-run.log" >&2
    exit "$status"
  fi
  log "$target: no crash in $(($(date +%s) - started))s, corpus $(ls "$corpus" | wc -l) inputs"
done
log "all targets passed"
