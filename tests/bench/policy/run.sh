#!/usr/bin/env bash
# Prints the policy benchmark as a Markdown section (called by tests/bench/run.sh).
set -euo pipefail
build=$(realpath "${1:-build}")
bin="$build/bin/policy_bench"
[ -x "$bin" ] || cmake --build "$build" --target policy_bench >/dev/null
cmd="$bin --benchmark_min_time=0.5 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true"
echo "Synthetic cluster: 2,000 pods in 50 namespaces on 20 nodes, 500 services, 300 policies"
echo "(100 PeerAuthentications, 200 DestinationRules). \"node\" = the 100 pods of one node:"
echo "inbound for each container port + outbound to every service port."
echo
echo '```'
echo "\$ $cmd"
$cmd 2>/dev/null | grep -E '^(Benchmark|-|BM_)' | grep -v '_stddev\|_cv'
echo '```'
