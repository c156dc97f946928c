#!/usr/bin/env bash
# make fuzz: every libFuzzer target of BUILD (made with -DMESHLOCK_FUZZ=ON) for
# SECONDS each, on a working corpus seeded from the committed one. Prints
# executions and speed per target; a crash leaves its input in
# BUILD/fuzz/crashes/<target>/ and fails (copy it to
# tests/fuzz/regressions/<target>/ once fixed: make test replays it).
set -euo pipefail
BUILD=${1:?usage: run.sh BUILD SECONDS}
SECONDS_EACH=${2:-60}
# FUZZ_SEED fixes libFuzzer's mutations (make test's smoke run uses one, so a
# submission that passed here meets the same inputs in CI); unset, each run
# explores anew.
SEED_ARG=${FUZZ_SEED:+-seed=$FUZZ_SEED}
HERE=$(cd "$(dirname "$0")" && pwd)
status=0
printf '%-18s %14s %10s %8s %s\n' target executions exec/s corpus result
for bin in "$BUILD"/bin/fuzz_*; do
  name=${bin##*/fuzz_}
  work="$BUILD/fuzz/corpus/$name"
  crashes="$BUILD/fuzz/crashes/$name"
  mkdir -p "$work" "$crashes"
  log="$BUILD/fuzz/$name.log"
  # -rss_limit_mb: a parser that balloons on a small input is a finding too.
  if "$bin" $SEED_ARG -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=16384 -rss_limit_mb=1024 \
      -timeout=10 -artifact_prefix="$crashes/" "$work" "$HERE/corpus/$name" >"$log" 2>&1; then
    result=clean
  else
    result="FAILED (see $log, input in $crashes)"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  size=$(find "$work" -type f | wc -l)
  printf '%-18s %14s %10s %8s %s\n' "$name" "${execs:-?}" "${speed:-?}" "$size" "$result"
done
exit $status
