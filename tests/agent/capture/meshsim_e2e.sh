#!/bin/bash
# Capture on meshsim: one capture-harness (the datapath with a plaintext relay
# in place of the TLS engine) per node, enrolling the pods of namespace shop.
#  - shop/client-a -> web.shop:80 (ClusterIP, other node) goes through both
#    agents: outbound on node-a with the ClusterIP as original destination,
#    inbound on node-b with web-b's address; bytes arrive intact.
#  - legacy/plain-a (not enrolled) is not captured outbound.
#  - node-b's agent killed: web-b (STRICT) refuses plaintext; restarted: works,
#    with the links reused (one connect4 attached), then uninstall cleans up.
# Usage: meshsim_e2e.sh <bin dir>. Needs root, meshsim and meshlock-testpeer.
# The run, the pin dirs and the processes carry the pid: parallel runs are fine.
set -euo pipefail
BIN=${1:-${MESHLOCK_BIN_DIR:?}}
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=cap$$
PIN_A=/sys/fs/bpf/meshlock-$RUN-a
PIN_B=/sys/fs/bpf/meshlock-$RUN-b
WORK=$(mktemp -d /tmp/meshlock-$RUN.XXXXXX)
PIDS=()
for tool in meshsim meshlock-testpeer meshlock-agent; do
  [ -x "$BIN/$tool" ] || { echo "missing $BIN/$tool" >&2; exit 1; }
done

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "$BIN/meshlock-agent" uninstall --pin-dir "$PIN_A" >/dev/null 2>&1
  "$BIN/meshlock-agent" uninstall --pin-dir "$PIN_B" >/dev/null 2>&1
  "$BIN/meshsim" down --name "$RUN" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do echo "--- $f" >&2; cat "$f" >&2; done
  exit 1
}

"$BIN/meshsim" up "$HERE/meshsim-capture.yaml" --name "$RUN" >"$WORK/up.log" 2>&1 || fail "meshsim up"
"$BIN/meshsim" status --name "$RUN" -o json >"$WORK/status.json"
q() { python3 -c "import json,sys; d=json.load(open('$WORK/status.json')); print($1)"; }
ROOT_A=$(q "[n['cgroupRoot'] for n in d['nodes'] if n['name']=='node-a'][0]")
ROOT_B=$(q "[n['cgroupRoot'] for n in d['nodes'] if n['name']=='node-b'][0]")
uid() { q "[p['uid'] for p in d['pods'] if p['name']=='$1'][0]"; }
ip_of() { q "[p['ip'] for p in d['pods'] if p['name']=='$1'][0]"; }
CLIENT_UID=$(uid client-a); PLAIN_UID=$(uid plain-a); WEB_UID=$(uid web-b)
WEB_IP=$(ip_of web-b); OLD_IP=$(ip_of old-b)

exec_in() { "$BIN/meshsim" exec --name "$RUN" "$@"; }
exec_in shop/web-b -- "$BIN/meshlock-testpeer" serve --port 8080 >"$WORK/web.log" 2>&1 &
PIDS+=($!)
exec_in legacy/old-b -- "$BIN/meshlock-testpeer" serve --port 8080 >"$WORK/old.log" 2>&1 &
PIDS+=($!)

start_agent() {  # node pin root uid-of-enrolled-pod
  "$BIN/meshlock-agent" capture-harness --cgroup-root "$3" --pin-dir "$2" --pod "$4" --strict \
    >"$WORK/agent-$1.log" 2>&1 &
  PIDS+=($!)
  eval "AGENT_$1=$!"
  for _ in $(seq 100); do grep -q '^ready' "$WORK/agent-$1.log" && return 0; sleep 0.05; done
  fail "agent on node-$1 not ready"
}
start_agent a "$PIN_A" "$ROOT_A" "$CLIENT_UID"
start_agent b "$PIN_B" "$ROOT_B" "$WEB_UID"
for _ in $(seq 50); do grep -q listening "$WORK/web.log" && grep -q listening "$WORK/old.log" && break; sleep 0.1; done

send() { exec_in "$1" -- "$BIN/meshlock-testpeer" send --to "$2" --bytes "${3:-100000}" --timeout 3; }

# Enrolled -> enrolled, through a ClusterIP on the other node.
send shop/client-a web.shop:80 >/dev/null || fail "client-a -> web.shop:80"
grep -q "^outbound $CLIENT_UID .* -> 10.96.0.20:80\$" "$WORK/agent-a.log" || fail "no outbound leg on node-a"
grep -q "^inbound $WEB_UID .* -> $WEB_IP:8080\$" "$WORK/agent-b.log" || fail "no inbound leg on node-b"

# Enrolled -> not enrolled: captured outbound, nothing to steer on the other side.
send shop/client-a "$OLD_IP:8080" >/dev/null || fail "client-a -> old-b"
grep -q "^outbound $CLIENT_UID .* -> $OLD_IP:8080\$" "$WORK/agent-a.log" || fail "client-a -> old-b not captured"

# Not enrolled: never captured outbound (still steered inbound at web-b).
send legacy/plain-a "$OLD_IP:8080" >/dev/null || fail "plain-a -> old-b"
send legacy/plain-a "$WEB_IP:8080" >/dev/null || fail "plain-a -> web-b"
! grep -q "^outbound $PLAIN_UID" "$WORK/agent-a.log" || fail "plain-a was captured"
[ "$(grep -c "^inbound $WEB_UID" "$WORK/agent-b.log")" = 2 ] || fail "plain-a -> web-b not steered inbound"

# node-b's agent dies: STRICT web-b refuses plaintext, never passes it.
kill "$AGENT_b"; wait "$AGENT_b" 2>/dev/null || true
if send legacy/plain-a "$WEB_IP:8080" 1000 >/dev/null 2>&1; then fail "plaintext reached STRICT web-b without its agent"; fi
STATUS=$("$BIN/meshlock-agent" capture-status --pin-dir "$PIN_B")
echo "$STATUS" | python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]; assert c["lookup_no_listener_dropped"] >= 1, c' \
  || fail "drop not counted: $STATUS"

# Restarted: capture resumes on the same links.
start_agent b "$PIN_B" "$ROOT_B" "$WEB_UID"
send shop/client-a web.shop:80 >/dev/null || fail "after restart"
KUBEPODS_A="$ROOT_A/kubepods.slice"
[ "$(bpftool cgroup show "$KUBEPODS_A" | grep -c connect4)" = 1 ] || fail "connect4 attached more than once"
KUBEPODS_B="$ROOT_B/kubepods.slice"
[ "$(bpftool cgroup show "$KUBEPODS_B" | grep -c connect4)" = 1 ] || fail "connect4 attached more than once on node-b"

kill "$AGENT_a" "$AGENT_b"; wait "$AGENT_a" "$AGENT_b" 2>/dev/null || true
"$BIN/meshlock-agent" uninstall --pin-dir "$PIN_A" >/dev/null
"$BIN/meshlock-agent" uninstall --pin-dir "$PIN_B" >/dev/null
[ ! -e "$PIN_A" ] && [ ! -e "$PIN_B" ] || fail "pins left"
[ -z "$(bpftool cgroup show "$KUBEPODS_A")" ] || fail "programs left on node-a"
send shop/client-a web.shop:80 >/dev/null || fail "direct after uninstall"
echo PASS
