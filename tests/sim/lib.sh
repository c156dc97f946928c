# Helpers for end-to-end scripts that run on meshsim. Source it:
#   . "$MESHLOCK_SOURCE_DIR/tests/sim/lib.sh"
#   msim_up "$MESHLOCK_SOURCE_DIR/tests/sim/examples/two-nodes.yaml" mytest
#   msim_serve shop/web-a 8080
#   msim_send shop/client-a web.shop:80 100000 || echo "failed: $?"
# msim_up gives the run a unique name and installs an EXIT/INT/TERM trap that
# runs `meshsim down` (after msim_extra_cleanup, if the script defines one),
# so a failing test leaves nothing behind. Needs MESHLOCK_BIN_DIR and root.

MSIM_BIN=${MESHLOCK_BIN_DIR:?set MESHLOCK_BIN_DIR to the build bin directory}
MSIM="$MSIM_BIN/meshsim"
MSIM_PEER="$MSIM_BIN/meshlock-testpeer"
MSIM_RUN=""
MSIM_BG_PIDS=()

msim_log() { printf '[%s %s] %s\n' "${MSIM_TEST:-meshsim}" "$(date +%T)" "$*"; }

msim_cleanup() {
  local rc=$?
  trap - EXIT
  if declare -F msim_extra_cleanup >/dev/null; then msim_extra_cleanup || true; fi
  local pid
  for pid in "${MSIM_BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$MSIM_RUN" ] && { [ -e "/run/meshsim/$MSIM_RUN" ] || ip netns list | grep -q "^msim-${MSIM_RUN}_"; }; then
    timeout 60 "$MSIM" down --name "$MSIM_RUN" >/dev/null 2>&1 || msim_log "cleanup of run $MSIM_RUN failed: try meshsim down --all"
  fi
  exit "$rc"
}

# msim_up SPEC [PREFIX]: brings the spec up under a unique run name, exported
# as MESHSIM_NAME so later meshsim commands need no --name; prints up's
# output (redirect it, but do not pipe it: the trap and names must be set in
# the calling shell).
msim_up() {
  local spec=$1 prefix=${2:-t}
  MSIM_RUN="${prefix:0:12}-$$-$RANDOM"
  MSIM_RUN=${MSIM_RUN:0:24}
  export MESHSIM_NAME=$MSIM_RUN
  trap msim_cleanup EXIT
  trap 'exit 130' INT TERM
  "$MSIM" up "$spec" --name "$MSIM_RUN"
}

# msim_pod_field NS/POD FIELD: one field of a pod from `status -o json`.
msim_pod_field() {
  "$MSIM" status -o json | python3 -c '
import json, sys
ns, name = sys.argv[1].split("/")
for p in json.load(sys.stdin)["pods"]:
    if p["namespace"] == ns and p["name"] == name:
        print(p[sys.argv[2]]); break
else:
    sys.exit("no pod " + sys.argv[1])' "$1" "$2"
}

# msim_serve NS/POD PORT [serve args]: starts the echo server in the pod and
# waits (up to 5 s) until it answers on the pod's IP.
msim_serve() {
  local pod=$1 port=$2
  shift 2
  "$MSIM" exec "$pod" -- "$MSIM_PEER" serve --port "$port" "$@" >/dev/null 2>&1 &
  MSIM_BG_PIDS+=($!)
  local ip i
  ip=$(msim_pod_field "$pod" ip)
  for i in $(seq 50); do
    "$MSIM" exec "$pod" -- "$MSIM_PEER" send --to "$ip:$port" --bytes 1 --timeout 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  msim_log "server in $pod on port $port did not come up"
  return 1
}

# msim_send FROM HOST:PORT BYTES [send args]: sends from a pod and verifies
# the echo; returns meshlock-testpeer's exit code (0 intact, 3 refused, ...).
msim_send() {
  local from=$1 to=$2 bytes=$3
  shift 3
  "$MSIM" exec "$from" -- "$MSIM_PEER" send --to "$to" --bytes "$bytes" --timeout 5 "$@"
}

# msim_kubectl ARGS…: kubectl against the run's API server as admin (Debian's
# kubectl, or $KUBECTL), with the run's own discovery cache.
msim_kubectl() {
  local kube="/run/meshsim/${MSIM_RUN:-$MESHSIM_NAME}/kube"
  "${KUBECTL:-$MSIM_BIN/../tools/kubernetes-client/usr/bin/kubectl}" --kubeconfig "$kube/admin.kubeconfig" \
    --cache-dir "$kube/kubectl-cache" "$@"
}
