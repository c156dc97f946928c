#!/usr/bin/env bash
# Full-path benchmark (issue 7, "The full path, measured"): a client pod on
# node-b and a server pod on node-a of a meshsim cluster, one meshlock agent
# per node, measured three ways in one cluster:
#   plaintext  namespace not enrolled: the baseline;
#   mtls       namespace enrolled: capture + mTLS + policy (auto mTLS);
#   capture    enrolled with a DISABLE PeerAuthentication + DestinationRule:
#              the agents still capture and relay, in plaintext (capture alone).
# Throughput (iperf3 in the pods), RTT (sockperf ping-pong), new connections/s
# (meshlock-connbench), agents' CPU per GB / per 1000 requests / per connection
# (utime+stime of both agent processes), agents' RSS with N idle captured
# connections; then the agent's start-up time to ready with 50 enrolled pods
# on one node (startup.sh), and new connections/s with 100 AuthorizationPolicies
# on the destination (authz.sh). Prints a Markdown section on stdout.
#
# Needs root. Environment: MESHLOCK_BENCH_SECONDS (default 10),
# MESHLOCK_BENCH_IDLE (default 10000, capped by the file descriptor limit:
# an agent holds two per connection), MESHLOCK_BENCH_CONCURRENCY (default 32).
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
exec 3>&1 1>&2  # the section goes to fd 3; progress and the library's logs to stderr

for target in meshlock-agent meshlockctl meshsim meshlock-connbench; do
  [ -x "$build/bin/$target" ] || cmake --build "$build" --target "$target" >/dev/null
done
secs=${MESHLOCK_BENCH_SECONDS:-10}
idle_wanted=${MESHLOCK_BENCH_IDLE:-10000}
concurrency=${MESHLOCK_BENCH_CONCURRENCY:-32}
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # the agents inherit it
fd_limit=$(ulimit -n)
idle=$(( (fd_limit - 500) / 2 ))
[ "$idle" -lt "$idle_wanted" ] || idle=$idle_wanted

export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=benchfp
# shellcheck source=../../e2e/lib/cluster.sh
source "$root/tests/e2e/lib/cluster.sh"
CONNBENCH="$build/bin/meshlock-connbench"
SERVER=10.244.1.10
results="$WORK/results"
: > "$results"
record() { echo "$1 $2 $3" >> "$results"; }

cluster_up "$here/cluster.yaml"
hz=$(getconf CLK_TCK)
agents_cpu() { local t=0 p; for p in "${AGENT_PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
agents_rss() { local t=0 p; for p in "${AGENT_PIDS[@]}"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
with_cpu() {
  local before after
  before=$(agents_cpu)
  "$@"
  after=$(agents_cpu)
  CPU_S=$(awk -v a="$after" -v b="$before" -v hz="$hz" 'BEGIN {printf "%.4f", (a - b) / hz}')
}
B="unix:$WORK/admin-node-b.sock"
served_on_b() { "$CTL" status --admin "$B" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['pods_served'])"; }
# Outbound connections on node-b by mode, e.g. "mutual_tls=10000".
modes_on_b() {
  "$CTL" connections --admin "$B" -o json | python3 -c "
import collections, json, sys
c = collections.Counter(x.get('mode', '?') for x in json.load(sys.stdin)['connections'] if x.get('direction') == 'outbound')
print(' '.join(f'{k}={v}' for k, v in sorted(c.items())) or 'none')"
}

# Servers in the server pod, for the whole run; many short connections need
# TIME_WAIT reuse and a wide port range in the pods (their own namespaces).
for pod in bench/server bench/client; do
  in_pod "$pod" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
done
# In the background, meshsim itself (not the in_pod function: a subshell) so
# that $! is the process (meshsim exec and ip netns exec both exec) and kill reaches it.
pod_bg() { local pod=$1; shift; "$MESHSIM" exec --name "$RUN" "$pod" -- "$@" & BG_PIDS+=($!); }
pod_bg bench/server iperf3 -s -p 5201 >"$WORK/iperf3-server.log" 2>&1
pod_bg bench/server sockperf sr --tcp -i 0.0.0.0 -p 11111 >"$WORK/sockperf-server.log" 2>&1
pod_bg bench/server "$CONNBENCH" serve --port 7000 >"$WORK/echo-server.log" 2>&1
sleep 1

throughput() {
  local setup=$1 streams=$2 out="$WORK/iperf3-$1-$2.json"
  sleep 0.5
  with_cpu in_pod bench/client iperf3 -c $SERVER -p 5201 -t "$secs" -P "$streams" -J >"$out" 2>/dev/null || true
  python3 - "$out" "$CPU_S" "$setup" "$streams" >> "$results" <<'PY'
import json, sys
path, cpu, setup, streams = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    rx = json.load(open(path))["end"]["sum_received"]
except (ValueError, KeyError):
    sys.exit(0)
print(setup, f"gbit_{streams}", f"{rx['bits_per_second'] / 1e9:.3f}")
print(setup, f"agent_cpu_gb_{streams}", f"{cpu / (rx['bytes'] / 1e9):.3f}")
PY
}

latency() {
  local setup=$1 size=$2 out="$WORK/sockperf.txt"
  with_cpu in_pod bench/client sockperf pp --tcp -i $SERVER -p 11111 -m "$size" -t "$secs" >"$out" 2>&1 || true
  awk -v s="$setup" -v k="pp_$size" -v cpu="$CPU_S" -v size="$size" '
    /percentile 50.000/ {p50=$NF} /percentile 99.000/ {p99=$NF} /percentile 99.900/ {p999=$NF}
    /Total Run.*ReceivedMessages=/ {for (i = 1; i <= NF; i++) if ($i ~ /^ReceivedMessages=/) {split($i, a, "="); n=a[2]+0}}
    END {
      if (p50 == "") exit
      print s, k "_p50", p50; print s, k "_p99", p99; print s, k "_p999", p999
      if (size == 64 && n > 0) print s, "agent_cpu_ms_per_1000", sprintf("%.3f", cpu * 1e6 / n)
    }' "$out" >> "$results"
}

conn_rate() {
  local setup=$1
  sleep 1
  with_cpu in_pod bench/client "$CONNBENCH" rate --to $SERVER:7000 --seconds "$secs" --concurrency "$concurrency" \
    >"$WORK/rate.out" 2>&1 || true
  { grep '^connections=' "$WORK/rate.out" || true; } | awk -v s="$setup" -v cpu="$CPU_S" '{
      for (i = 1; i <= NF; i++) {split($i, a, "="); v[a[1]] = a[2]}
      print s, "conn_full", v["rate"]
      print s, "conn_full_errors", v["errors"]
      if (v["connections"] > 0) print s, "agent_conn_cpu_ms", sprintf("%.3f", cpu * 1000 / v["connections"])
    }' >> "$results"
}

# Agents' RSS before and with $idle idle connections from client to server.
idle_memory() {
  local setup=$1 before after held line
  sleep 1
  before=$(agents_rss)
  record "$setup" agent_rss_idle_kib "$before"
  pod_bg bench/client "$CONNBENCH" hold --to $SERVER:7000 --count "$idle" --concurrency "$concurrency" \
    >"$WORK/hold.out" 2>&1
  local holder=${BG_PIDS[-1]}
  for _ in $(seq 3200); do grep -q '^held=' "$WORK/hold.out" && break; kill -0 "$holder" 2>/dev/null || break; sleep 0.1; done
  sleep 1
  line=$(grep '^held=' "$WORK/hold.out" || echo "held=0")
  held=$(echo "$line" | sed 's/held=\([0-9]*\).*/\1/')
  after=$(agents_rss)
  record "$setup" modes "$(modes_on_b | tr ' ' ',')"
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  sleep 2
  record "$setup" idle_held "$held"
  record "$setup" agent_rss_held_kib "$after"
  # Each captured connection passes through both agents: per agent, half the sum.
  [ "$held" -gt 0 ] && record "$setup" idle_kib_per_conn "$(awk -v a="$after" -v b="$before" -v n="$held" 'BEGIN {printf "%.2f", (a - b) / n / 2}')"
  return 0
}

measure() {
  local setup=$1
  record "$setup" agent_rss_fresh_kib "$(agents_rss)"
  log "$setup: throughput"; throughput "$setup" 1; throughput "$setup" 8
  log "$setup: latency"; latency "$setup" 64; latency "$setup" 1024
  log "$setup: connections/s"; conn_rate "$setup"
  if [ "$setup" != plaintext ]; then log "$setup: $idle idle connections"; idle_memory "$setup"; fi
}

wait_served() {
  for _ in $(seq 100); do [ "$(served_on_b 2>/dev/null)" = "$1" ] && return 0; sleep 0.1; done
  die "node-b serves $(served_on_b) pods, want $1"
}

# Fresh agents before each measured setup, so that RSS at idle and its growth
# are not blurred by the previous setup's allocator high-water.
fresh_agents() {
  restart_agents
  wait_served "$1"
  sleep 1
}

# MESHLOCK_BENCH_FULLPATH_SETUPS picks setups (plaintext and mtls always run):
# shortcut and shortcut_both are mtls with the pod-local shortcut
# (--pod-leg-shortcut app-to-agent | both, issue 17), without the idle run.
setups=${MESHLOCK_BENCH_FULLPATH_SETUPS:-plaintext mtls shortcut shortcut_both capture}
wants() { [[ " $setups " == *" $1 "* ]]; }
wait_served 0
measure plaintext
"$MESHSIM" label --name "$RUN" namespace bench meshlock.io/mtls=enabled >/dev/null
wait_served 1
fresh_agents 1
measure mtls
for setup in shortcut shortcut_both; do
  wants "$setup" || continue
  export E2E_POD_LEG_SHORTCUT=$([ "$setup" = shortcut ] && echo app-to-agent || echo both)
  fresh_agents 1
  record "$setup" agent_rss_fresh_kib "$(agents_rss)"
  log "$setup: throughput"; throughput "$setup" 1; throughput "$setup" 8
  log "$setup: latency"; latency "$setup" 64; latency "$setup" 1024
  curl -s --unix-socket "$WORK/admin-node-b.sock" http://agent/capture | python3 -c "
import json, sys
c = json.load(sys.stdin).get('counters', {})
print('$setup', 'leg_redirected_b', c.get('leg_redirected', 0))" >> "$results" || true
done
export E2E_POD_LEG_SHORTCUT=off
if wants capture; then
  apply "$here/capture-only.yaml"
  fresh_agents 1
  measure capture
fi

section() {
  echo "meshsim, two nodes (veth pairs and a bridge between network namespaces on this machine), one agent per node;"
  echo "client pod on node-b → server pod on node-a by pod IP. plaintext: namespace not enrolled; mtls: enrolled"
  echo "(capture + mTLS + policy, auto mTLS); capture: enrolled with a DISABLE PeerAuthentication and DestinationRule"
  echo "(\`tests/bench/fullpath/capture-only.yaml\`: the agents capture and relay in plaintext). The agents run with"
  echo "their default worker threads ($(nproc) on this machine), restarted before each enrolled setup."
  echo "CPU is both agents' utime+stime; RSS both agents' VmRSS."
  echo "Command: \`MESHLOCK_BENCH_SECONDS=$secs MESHLOCK_BENCH_IDLE=$idle_wanted bash tests/bench/fullpath/run.sh $build\`"
  echo "(iperf3 -t $secs -P 1|8; sockperf ping-pong -m 64|1024 -t $secs; meshlock-connbench rate --concurrency $concurrency, hold --count $idle)."
  if [ "$idle" -lt "$idle_wanted" ]; then
    echo "Idle connections: $idle, not $idle_wanted: the file descriptor limit here is $fd_limit and an agent holds two per connection."
  fi
  echo
  python3 "$root/tests/bench/table.py" fullpath "$results" "${MESHLOCK_BENCH_OUT:-/nonexistent}/engine.results"
  echo
  awk '$2 == "modes" {printf "Outbound connections on node-b while %s held them open: %s.\n", $1, $3}' "$results" | tr ',' ' '
  awk '$2 == "conn_full_errors" && $3 > 0 {printf "%s: %s connection errors in the conn/s run.\n", $1, $3}' "$results"
}
section >&3
[ "${MESHLOCK_BENCH_FULLPATH_EXTRAS:-1}" = 1 ] || exit 0
echo >&3
bash "$here/startup.sh" "$build" >&3
echo >&3
bash "$here/authz.sh" "$build" >&3
