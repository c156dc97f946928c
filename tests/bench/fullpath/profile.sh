#!/usr/bin/env bash
# Where the machine's CPU goes on the full path (meshsim, the fullpath
# cluster) during one bulk iperf3 stream client -> server, for each
# --pod-leg-shortcut value given (default: off app-to-agent both):
# `perf record -a` for the stream's middle seconds, then the share of
# samples per command and the hottest kernel and user symbols. Not part of
# `make bench`: run it to see why a figure is what it is (docs/performance.md).
#   bash tests/bench/fullpath/profile.sh [BUILD_DIR] [MODES...]
set -euo pipefail
build=$(realpath "${1:-build}")
shift || true

[ "$#" -gt 0 ] && modes=("$@") || modes=(off app-to-agent both)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }
secs=${MESHLOCK_PROFILE_SECONDS:-6}
exec 3>&1 1>&2

export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=proffp
# shellcheck source=../../e2e/lib/cluster.sh
source "$root/tests/e2e/lib/cluster.sh"
cluster_up "$here/cluster.yaml"
"$MESHSIM" label --name "$RUN" namespace bench meshlock.io/mtls=enabled >/dev/null
"$MESHSIM" exec --name "$RUN" bench/server -- iperf3 -s -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
BG_PIDS+=($!)
sleep 1

fresh_agents() {
  restart_agents
  # Each agent is up to /ready; then the client pod must be served on node-b.
  for _ in $(seq 100); do
    [ "$("$CTL" status --admin "unix:$WORK/admin-node-b.sock" -o json 2>/dev/null |
         python3 -c "import json,sys; print(json.load(sys.stdin)['pods_served'])" 2>/dev/null)" = 1 ] && break
    sleep 0.1
  done
  sleep 1
}

for mode in "${modes[@]}"; do
  export E2E_POD_LEG_SHORTCUT=$mode
  fresh_agents
  in_pod bench/client iperf3 -c 10.244.1.10 -p 5201 -t $((secs + 4)) >"$WORK/iperf-$mode.txt" 2>&1 &
  client=$!
  sleep 2
  perf record -a -g -o "$WORK/perf-$mode.data" -- sleep "$secs" >/dev/null 2>&1
  wait "$client" || true
  {
    echo "### --pod-leg-shortcut $mode: $(grep -E 'receiver' "$WORK/iperf-$mode.txt" | awk '{print $7, $8}')"
    echo
    echo '```'
    perf report -i "$WORK/perf-$mode.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep '%' | head -8 || true
    echo
    perf report -i "$WORK/perf-$mode.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%' | head -25 || true
    echo '```'
    echo
  } >&3
done
