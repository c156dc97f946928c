#!/usr/bin/env bash
# Agent start-up to ready (issue 7: under one second for a node with 50
# pods): a one-node meshsim cluster with 50 pods in 5 enrolled namespaces
# (10 service accounts), the agent started MESHLOCK_BENCH_STARTUP_RUNS times
# (default 5), each time from process start to the first 200 from /ready on
# its admin socket. Prints a Markdown section; needs root.
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../../.." && pwd)
exec 3>&1 1>&2
runs=${MESHLOCK_BENCH_STARTUP_RUNS:-5}
export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=benchup
# shellcheck source=../../e2e/lib/cluster.sh
source "$root/tests/e2e/lib/cluster.sh"
# shellcheck source=../lib/timed_agent.sh
source "$root/tests/bench/lib/timed_agent.sh"

spec="$WORK/startup.yaml"
{
  echo "nodes: [{name: node-a}]"
  echo "namespaces:"
  echo "  - {name: istio-system}"
  for n in $(seq 5); do echo "  - {name: ns$n, labels: {meshlock.io/mtls: enabled}}"; done
  echo "pods:"
  for i in $(seq 0 49); do
    echo "  - {name: pod$i, namespace: ns$((i % 5 + 1)), node: node-a, serviceAccount: sa$((i % 2)), labels: {app: app$((i % 10))}, ports: [8080]}"
  done
  cat <<'YAML'
manifests:
  - apiVersion: sailoperator.io/v1
    kind: Istio
    metadata: {name: default}
    spec:
      namespace: istio-system
      values:
        meshConfig: {trustDomain: cluster.local}
YAML
} >"$spec"

make_ca "$WORK/ca"
"$MESHSIM" up "$spec" --name "$RUN" >"$WORK/up.log" || { cat "$WORK/up.log"; die "meshsim up failed"; }
NODES=(node-a)
socket="$WORK/admin-node-a.sock"

times=()
served=""
for run in $(seq "$runs"); do
  timed_agent_start node-a "$socket" --manifests "/run/meshsim/$RUN/manifests" --ca-mode files --ca-dir "$WORK/ca"
  times+=("$READY_MS")
  served=$(sed -n 's/.*ready: node node-a, \([0-9]*\) pods served.*/\1/p' "$WORK/agent-node-a.log" | tail -1)
  log "run $run: ready after ${times[-1]} ms, ${served:-?} pods served"
  timed_agent_stop
done

sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
verdict=missed
[ "$median" -lt 1000 ] && verdict=met
{
  echo "### Agent start-up to ready, 50 enrolled pods on one node"
  echo
  echo "One meshsim node, 50 pods in 5 enrolled namespaces (2 service accounts each); \`meshlock-agent run\` started $runs times"
  echo "(each a fresh process, the state directory kept between runs as a restarted DaemonSet pod would keep it: the first run"
  echo "issues the certificates); time from exec to the first HTTP 200 from \`/ready\` on the admin socket (polled every 5 ms)."
  echo "Command: \`bash tests/bench/fullpath/startup.sh $build\`."
  echo
  echo "| measure | value | target | met? |"
  echo "| --- | ---: | --- | --- |"
  echo "| start-up to ready, median of $runs (ms) | $median | < 1000 | $verdict |"
  echo "| each run (ms, sorted) | $sorted | | |"
  echo "| first run (ms) | ${times[0]} | | |"
  echo "| pods served at ready | ${served:-?} | 50 | |"
} >&3
