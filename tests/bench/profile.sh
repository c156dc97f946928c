#!/usr/bin/env bash
# Where the meshlock proxy pair spends its CPU: `perf record` on the
# originate and terminate processes (one thread each) during a bulk iperf3
# stream and during full-handshake connection churn (meshlock-connbench rate).
# Prints, per workload, the share of samples by library and the hottest
# symbols. Not part of `make bench`: run it to see why a figure is what it is
# (docs/performance.md quotes it).   bash tests/bench/profile.sh [BUILD_DIR]
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../.." && pwd)
agent="$build/bin/meshlock-agent"
connbench="$build/bin/meshlock-connbench"
secs=${MESHLOCK_PROFILE_SECONDS:-6}
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }
work=$(mktemp -d /tmp/meshlock-profile-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bash "$root/tests/agent/engine/make_test_pki.sh" "$work/pki" >/dev/null
pki="$work/pki"
APP_IPERF=25301 APP_ECHO=25302 ORIG=25310 TERM_PORT=25311
source "$root/tests/agent/engine/proxy_pair.sh"

start_pair() {  # start_pair APP_PORT: a fresh pair on fresh ports (no waiting for the old ones)
  ORIG=$((ORIG + 2)); TERM_PORT=$((TERM_PORT + 2))
  start_proxy_pair "$1" "$ORIG" "$TERM_PORT" --threads 1 --min-tls 1.3
  orig=$PAIR_ORIG term=$PAIR_TERM
}

report() {  # report TITLE
  echo "### $1"
  echo
  echo '```'
  perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep '%' | head -8 || true  # head ends the pipe early
  echo
  perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep '%' | head -15 || true
  echo '```'
  echo
}

iperf3 -s -p $APP_IPERF -D --pidfile "$work/iperf.pid" --logfile "$work/iperf.log"
sleep 0.3
pids+=("$(cat "$work/iperf.pid")")
"$connbench" serve --bind 127.0.0.1 --port $APP_ECHO >"$work/echo.log" 2>&1 & pids+=($!)

echo "## Profile of the meshlock proxy pair ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
echo
echo "Command: \`bash tests/bench/profile.sh\`; perf record -g on both proxy processes for $secs s."
echo

start_pair $APP_IPERF
iperf3 -c 127.0.0.1 -p $ORIG -t $((secs + 2)) -J >"$work/iperf.json" &
load=$!
sleep 1
perf record -q -g -o "$work/perf.data" -p "$orig,$term" -- sleep "$secs" 2>/dev/null
wait $load || true
gbps=$(python3 -c "import json; print(round(json.load(open('$work/iperf.json'))['end']['sum_received']['bits_per_second'] / 1e9, 2))")
report "Bulk: one iperf3 stream through the pair ($gbps Gbit/s)"
stop_proxy_pair

start_pair $APP_ECHO
"$connbench" rate --to 127.0.0.1:$ORIG --seconds $((secs + 2)) --concurrency 32 >"$work/rate.out" 2>&1 &
load=$!
sleep 1
perf record -q -g -o "$work/perf.data" -p "$orig,$term" -- sleep "$secs" 2>/dev/null
wait $load || true
report "Connection churn: full TLS 1.3 handshakes with client certificates ($(grep -o 'rate=[0-9]*' "$work/rate.out" | head -1 | cut -d= -f2) conn/s)"
stop_proxy_pair
