#!/usr/bin/env bash
# Issue 12's figures for the whole agent reading a big cluster from the
# Kubernetes API: a one-node meshsim cluster (shop/web enrolled on node-a,
# legacy/client not enrolled) plus meshsim's synthetic 10,000 pods, 1,000
# services and 1,000 PeerAuthentications on another node, served by meshsim's
# API server; `meshlock-agent run` on node-a reads it with its own token.
#
#   - start-up to ready (exec to the first 200 from /ready), MESHLOCK_BENCH_KUBE_RUNS times;
#   - RSS after sync;
#   - CPU per 1,000 watch events: pod label patches (the agent reads labels)
#     and pod status patches (a condition it does not read);
#   - `kubectl apply` of a STRICT PeerAuthentication for shop to the first
#     plaintext connection from legacy/client to shop/web refused.
#
# Prints a Markdown section; needs root. Goals: ready < 2 s, RSS < 100 MiB,
# policy change enforced < 1 s.
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../../.." && pwd)
exec 3>&1 1>&2
runs=${MESHLOCK_BENCH_KUBE_RUNS:-3}
pods=${MESHLOCK_BENCH_KUBE_PODS:-10000}
services=${MESHLOCK_BENCH_KUBE_SERVICES:-1000}
policies=${MESHLOCK_BENCH_KUBE_POLICIES:-1000}
events=${MESHLOCK_BENCH_KUBE_EVENTS:-1000}
strict_runs=${MESHLOCK_BENCH_KUBE_STRICT_RUNS:-5}
export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=benchkube
# shellcheck source=../../e2e/lib/cluster.sh
source "$root/tests/e2e/lib/cluster.sh"

spec="$WORK/cluster.yaml"
cat >"$spec" <<'YAML'
nodes: [{name: node-a}]
namespaces:
  - {name: istio-system}
  - {name: shop, labels: {meshlock.io/mtls: enabled}}
  - {name: legacy}
pods:
  - {name: web, namespace: shop, node: node-a, serviceAccount: web, labels: {app: web}, ports: [8080], ip: 10.244.1.10}
  - {name: client, namespace: legacy, node: node-a, serviceAccount: default, labels: {app: client}, ip: 10.244.1.20}
services:
  - {name: web, namespace: shop, clusterIP: 10.96.10.10, ports: [{name: http, port: 80, targetPort: 8080}], selector: {app: web}}
manifests:
  - apiVersion: sailoperator.io/v1
    kind: Istio
    metadata: {name: default}
    spec:
      namespace: istio-system
      values:
        meshConfig: {trustDomain: cluster.local}
YAML
cat >"$WORK/strict.yaml" <<'YAML'
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
YAML

make_ca "$WORK/ca"
"$MESHSIM" up "$spec" --name "$RUN" >"$WORK/up.log" || { cat "$WORK/up.log"; die "meshsim up failed"; }
NODES=(node-a)
load=$("$MESHSIM" apiserver --name "$RUN" synthetic "pods=$pods" "services=$services" "policies=$policies")
log "synthetic cluster: $(echo "$load" | tr -d '\n ')"
kube_dir="/run/meshsim/$RUN/kube"
netns=$(node_field node-a netnsPath)
cgroup_root=$(node_field node-a cgroupRoot)
socket="$WORK/admin-node-a.sock"
src=$(agent_source)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Updates the agent applied so far (every published cluster state counts one).
generation() {
  curl -s --max-time 5 --unix-socket "$socket" http://agent/metrics |
    awk '/^meshlock_config_reloads_total/ {n += $NF} END {print n + 0}'
}
# Waits until the agent's published generation has not moved for 2 s (the
# last events applied), up to 60 s.
settle() {
  local last now same=0
  last=$(generation)
  for _ in $(seq 120); do
    sleep 0.5
    now=$(generation)
    if [ "$now" = "$last" ]; then same=$((same + 1)); [ "$same" -ge 4 ] && return 0; else same=0; last=$now; fi
  done
}

pid=""
start_times=()
for run in $(seq "$runs"); do
  rm -f "$socket"
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  nsenter --net="$netns" "$AGENT" run --node node-a $src \
    --cgroup-root "$cgroup_root" --bpf-pin-dir "$(pin_dir node-a)" --state-dir "$WORK/state-node-a" \
    --ca-dir "$WORK/ca" --admin-socket "$socket" --drain-deadline 1 >"$WORK/agent-node-a.log" 2>&1 &
  pid=$!
  AGENT_PIDS+=("$pid")
  AGENT_PID_OF[node-a]=$pid
  ready=""
  for _ in $(seq 6000); do
    if [ -S "$socket" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --unix-socket "$socket" http://agent/ready)" = 200 ]; then
      ready=$(date +%s%N)
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.005
  done
  [ -n "$ready" ] || { cat "$WORK/agent-node-a.log"; die "agent not ready within 30 s (run $run)"; }
  start_times+=("$(( (ready - start) / 1000000 ))")
  log "run $run: ready after ${start_times[-1]} ms"
  [ "$run" = "$runs" ] && break
  stop_agent node-a TERM
  AGENT_PIDS=()
done
objects=$("$CTL" status --admin "unix:$socket" -o json | python3 -c "
import json,sys
s=json.load(sys.stdin)['source']
print(sum(k['objects'] for k in s['kinds']))")
sleep 2
rss_sync=$(rss_kib "$pid")

hz=$(getconf CLK_TCK)
cpu_per_1000() {  # cpu_per_1000 FIELD: agent CPU seconds per 1,000 patches of FIELD
  local before after gen0 gen1
  settle
  before=$(cpu_ticks "$pid")
  gen0=$(generation)
  /usr/bin/python3 "$root/tests/bench/kube/pod_events.py" "$kube_dir" --events "$events" --pods "$pods" --field "$1" >&2
  settle
  after=$(cpu_ticks "$pid")
  gen1=$(generation)
  echo "$(python3 -c "print(f'{($after - $before) / $hz * 1000 / $events:.2f}')") $((gen1 - gen0))"
}
read -r cpu_label updates_label < <(cpu_per_1000 label)
read -r cpu_status updates_status < <(cpu_per_1000 status)
rss_after=$(rss_kib "$pid")
log "CPU per 1000 label events ${cpu_label} s ($updates_label updates), status events ${cpu_status} s ($updates_status updates)"

in_pod shop/web "$PEER" serve --port 8080 >>"$WORK/serve-web.log" 2>&1 &
BG_PIDS+=($!)
wait_listening shop/web 8080 || die "the echo server did not start"
plaintext_passes() { in_pod legacy/client "$PEER" send --to 10.244.1.10:8080 --bytes 64 --timeout 1 >/dev/null 2>&1; }
strict_ms=()
strict_after_return_ms=()
probe_ms=()
for run in $(seq "$strict_runs"); do
  for _ in $(seq 50); do plaintext_passes && break; sleep 0.1; done
  plaintext_passes || die "plaintext to shop/web does not pass before STRICT (run $run)"
  t=$(date +%s%N); plaintext_passes; probe_ms+=("$(( ($(date +%s%N) - t) / 1000000 ))")
  t0=$(date +%s%N)
  kubectl_admin apply -f "$WORK/strict.yaml" >/dev/null || die "kubectl apply failed"
  t1=$(date +%s%N)
  refused=""
  for _ in $(seq 200); do
    if ! plaintext_passes; then refused=$(date +%s%N); break; fi
  done
  [ -n "$refused" ] || die "plaintext still passes long after STRICT (run $run)"
  strict_ms+=("$(( (refused - t0) / 1000000 ))")
  strict_after_return_ms+=("$(( (refused - t1) / 1000000 ))")
  log "STRICT run $run: refused $((${strict_ms[-1]})) ms after kubectl apply started (${strict_after_return_ms[-1]} ms after it returned)"
  kubectl_admin delete -f "$WORK/strict.yaml" >/dev/null || die "kubectl delete failed"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
sorted() { printf '%s\n' "$@" | sort -n | tr '\n' ' '; }
verdict() { python3 -c "print('met' if $1 else 'missed')"; }
ready_median=$(median "${start_times[@]}")
strict_median=$(median "${strict_ms[@]}")
{
  echo "### The agent on a 10k-pod cluster through the Kubernetes API"
  echo
  echo "One meshsim node (shop/web enrolled, legacy/client not) plus meshsim's synthetic cluster on another node:"
  echo "$pods pods, $services services (and their EndpointSlices), $policies PeerAuthentications in 10 enrolled"
  echo "namespaces; \`meshlock-agent run --kubeconfig\` on node-a with its own token ($objects objects listed)."
  echo "Command: \`bash tests/bench/kube/run.sh $(basename "$build")\`. Events: \`tests/bench/kube/pod_events.py\`"
  echo "merge-patches one pod per request (a label the agent reads, or a status condition it does not); CPU is the"
  echo "agent's utime+stime across the events, after the last update was applied."
  echo
  echo "| measure | value | goal | met? |"
  echo "| --- | ---: | --- | --- |"
  echo "| start-up to ready, median of $runs (ms) | $ready_median | < 2000 | $(verdict "$ready_median < 2000") |"
  echo "| each start (ms, sorted) | $(sorted "${start_times[@]}") | | |"
  echo "| RSS after sync (MiB) | $((rss_sync / 1024)) | < 100 | $(verdict "$rss_sync < 102400") |"
  echo "| RSS after the events (MiB) | $((rss_after / 1024)) | | |"
  echo "| CPU per 1,000 pod label events (s) | $cpu_label ($updates_label updates applied) | | |"
  echo "| CPU per 1,000 pod status events (s) | $cpu_status ($updates_status updates applied) | | |"
  echo "| \`kubectl apply\` STRICT → first plaintext refused, median of $strict_runs (ms) | $strict_median | < 1000 | $(verdict "$strict_median < 1000") |"
  echo "| each (ms, sorted; from kubectl's start) | $(sorted "${strict_ms[@]}") | | |"
  echo "| the same from kubectl's return (ms, sorted) | $(sorted "${strict_after_return_ms[@]}") | | |"
  echo "| one plaintext probe (ms, the resolution of the figure above) | $(median "${probe_ms[@]}") | | |"
} >&3
