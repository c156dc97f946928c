#!/usr/bin/env bash
# meshlock's CA (issue 13), on one meshsim node with 100 pods of 50 service
# accounts (10 in each of 5 enrolled namespaces), the CA in the node's netns as in the e2e
# cluster (tests/e2e/lib/cluster.sh start_ca):
#  1. certificates issued per second by `meshlock-agent ca` pinned to one core
#     (CPU 0), ca_load on the other (THREADS node-agent connections, CSRs made
#     beforehand, the same bound token: its TokenReview is cached, as an
#     agent's is), MESHLOCK_BENCH_CA_SECONDS (default 10);
#  2. a node agent started MESHLOCK_BENCH_CA_RUNS times (default 5) with the
#     CA remote: its first certificate request to the 50th identity issued,
#     and exec to /ready (which waits for every pod's certificate and serves
#     every pod).
# Prints a Markdown section; needs root.
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../../.." && pwd)
exec 3>&1 1>&2
seconds=${MESHLOCK_BENCH_CA_SECONDS:-10}
runs=${MESHLOCK_BENCH_CA_RUNS:-5}
threads=${MESHLOCK_BENCH_CA_THREADS:-8}
export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=benchca
# shellcheck source=../../e2e/lib/cluster.sh
source "$root/tests/e2e/lib/cluster.sh"
# shellcheck source=../lib/timed_agent.sh
source "$root/tests/bench/lib/timed_agent.sh"
[ -x "$BIN/ca_load" ] || cmake --build "$build" --target ca_load >/dev/null

spec="$WORK/ca.yaml"
{
  echo "nodes: [{name: node-a}]"
  echo "namespaces:"
  for n in $(seq 5); do echo "  - {name: ns$n, labels: {meshlock.io/mtls: enabled}}"; done
  echo "pods:"
  for i in $(seq 0 99); do
    echo "  - {name: pod$i, namespace: ns$((i % 5 + 1)), node: node-a, serviceAccount: sa$((i / 5 % 10)), ports: [8080]}"
  done
} >"$spec"
make_ca "$WORK/ca"
"$MESHSIM" up "$spec" --name "$RUN" >"$WORK/up.log" || { cat "$WORK/up.log"; die "meshsim up failed"; }
NODES=(node-a)
# The per-caller rate limit (100/s) would be the figure otherwise: lifted here.
CA_CPUS=0 start_ca node-a --rate 1000000 --burst 1000000
netns=$(node_field node-a netnsPath)
flags=$(agent_ca_flags node-a)

cpu_seconds() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
log "issuance: ca_load, $threads connections, $seconds s"
before=$(cpu_seconds "$CA_PID")
load=$(nsenter --net="$netns" taskset -c 1 "$BIN/ca_load" --address "$CA_ADDRESS" --server-name "$CA_NAME" \
  --root "$WORK/ca-root/root-cert.pem" --token-file "$WORK/token-node-a" \
  --identity spiffe://cluster.local/ns/ns1/sa/sa0 --threads "$threads" --seconds "$seconds")
after=$(cpu_seconds "$CA_PID")
log "$load"
rate=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['issued_per_second']))" "$load")
issued=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['outcomes'].get('issued', 0))" "$load")
refused=$(python3 -c "import json,sys; o=json.loads(sys.argv[1])['outcomes']; print(sum(v for k, v in o.items() if k != 'issued'))" "$load")
cpu_per_cert=$(python3 -c "print(round(($after - $before) / max($issued, 1) * 1e6))")

socket="$WORK/admin-node-a.sock"
ready_times=() cert_times=()
for run in $(seq "$runs"); do
  rm -rf "$WORK/state-node-a"
  # shellcheck disable=SC2086
  timed_agent_start node-a "$socket" $(agent_source) $flags
  ready_times+=("$READY_MS")
  # From the agent's first wish for certificates to the 50th identity issued, both
  # lines of the agent's log (one clock, millisecond resolution).
  first=$(grep -m1 "wait for their certificate" "$WORK/agent-node-a.log" | cut -d' ' -f1)
  last=$(grep "identity: issued" "$WORK/agent-node-a.log" | sed -n '50p' | cut -d' ' -f1)
  count=$(grep -c "identity: issued" "$WORK/agent-node-a.log" || true)
  if [ -n "$first" ] && [ -n "$last" ]; then
    cert_times+=("$(( ($(date -d "$last" +%s%N) - $(date -d "$first" +%s%N)) / 1000000 ))")
  fi
  log "run $run: ready after ${ready_times[-1]} ms, $count identities issued"
  timed_agent_stop
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ready_median=$(median "${ready_times[@]}")
verdict() { [ "$1" "$2" "$3" ] && echo met || echo missed; }
{
  echo "### meshlock's CA: issuance, and a node's certificates from it"
  echo
  echo "One meshsim node; \`meshlock-agent ca\` in its netns pinned to CPU 0 (\`taskset -c 0\`), TokenReviews against meshsim's API"
  echo "server (cached per token, as for an agent's token). Issuance: \`ca_load\` on CPU 1, $threads connections as node-a's agent"
  echo "(ImpersonatedIdentity), $seconds s, P-256 CSRs made beforehand. Command: \`bash tests/bench/ca/run.sh $(basename "$build")\`."
  echo
  echo "| measure | value | goal | met? |"
  echo "| --- | ---: | --- | --- |"
  echo "| certificates issued per second, CA on one core | $rate | >= 2000 | $(verdict "$rate" -ge 2000) |"
  echo "| CA CPU per certificate (µs) | $cpu_per_cert | | |"
  echo "| calls refused during the run | $refused | 0 | |"
  cert_median=$(median "${cert_times[@]}")
  echo "| 100 pods of 50 service accounts (10 in each of 5 namespaces): every certificate, from the agent's first request to the 50th identity issued, median of $runs (ms) | $cert_median | < 1000 | $(verdict "$cert_median" -lt 1000) |"
  echo "| each run (ms, sorted; the agent log's millisecond clock) | $(printf '%s\n' "${cert_times[@]}" | sort -n | tr '\n' ' ') | | |"
  echo "| the same node: agent exec to /ready (every pod served), median of $runs (ms) | $ready_median | | |"
  echo "| each run (ms, sorted) | $(printf '%s\n' "${ready_times[@]}" | sort -n | tr '\n' ' ') | | |"
} >&3
