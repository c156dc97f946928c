#!/usr/bin/env bash
# Prints the identity benchmark as a Markdown section (called by tests/bench/run.sh).
set -euo pipefail
build=$(realpath "${1:-build}")
bin="$build/bin/identity_bench"
[ -x "$bin" ] || cmake --build "$build" --target identity_bench >/dev/null
cmd="$bin --benchmark_min_time=0.5 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true"
echo "Issuing one workload certificate (new ECDSA P-256 key, ECDSA-SHA256 signature by the"
echo "mesh CA); the first pod of a service account (certificate + server and client SSL_CTX);"
echo "verifying a peer chain; both sides of a full TLS 1.3 mTLS handshake over memory BIOs."
echo
echo '```'
echo "\$ $cmd"
$cmd 2>/dev/null | grep -E '^(Benchmark|-|BM_)' | grep -v '_stddev\|_cv'
echo '```'
