#!/bin/bash
# End-to-end: two pods on one fake node (kubelet cgroupfs layout, a netns and
# a process each, joined by a bridge), capture-harness as the agent. Pod A's
# plaintext connect to pod B goes A:connect4 -> agent outbound (A's netns)
# -> agent upstream from A's netns -> B:sk_lookup -> agent inbound (B's netns)
# -> agent upstream inside B's netns -> B's app; the echo comes back the same
# way. Then: uninstall removes everything and A reaches B directly.
# Usage: harness_e2e.sh <bin dir>. Needs root. Cleans up on any exit.
set -euo pipefail
BIN=${1:-${MESHLOCK_BIN_DIR:?}}
TAG=mlh$$
CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
[ -n "$CG2" ] || { echo "no cgroup2 mount" >&2; exit 1; }
ROOT=$CG2/meshlock-$TAG
PIN=/sys/fs/bpf/meshlock-$TAG
WORK=$(mktemp -d /tmp/meshlock-$TAG.XXXXXX)
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "$BIN/meshlock-agent" uninstall --pin-dir "$PIN" >/dev/null 2>&1
  for ns in ${TAG}n ${TAG}a ${TAG}b; do ip netns del $ns 2>/dev/null; done
  find "$ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; echo "--- harness log" >&2; cat "$WORK/harness.log" >&2; exit 1; }

# The node: a bridge in its own netns; pods A (10.78.0.11) and B (10.78.0.12).
ip netns add ${TAG}n
ip -n ${TAG}n link add br0 type bridge
ip -n ${TAG}n link set br0 up
i=0
for pod in a b; do
  i=$((i + 1))
  ip netns add ${TAG}$pod
  ip -n ${TAG}$pod link set lo up
  ip -n ${TAG}$pod link add eth0 type veth peer name v$pod netns ${TAG}n
  ip -n ${TAG}n link set v$pod master br0 up
  ip -n ${TAG}$pod addr add 10.78.0.1$i/24 dev eth0
  ip -n ${TAG}$pod link set eth0 up
  mkdir -p "$ROOT/kubepods/burstable/pod$TAG-$pod/pause" "$ROOT/kubepods/burstable/pod$TAG-$pod/app"
  # The pause process: keeps the pod's netns findable through the cgroup.
  sh -c "echo \$\$ > $ROOT/kubepods/burstable/pod$TAG-$pod/pause/cgroup.procs; exec ip netns exec ${TAG}$pod sleep 600" &
  PIDS+=($!)
done

# In pod B, an echo server on 8080 (the app), run in B's app cgroup.
cat > "$WORK/echo.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(16)
while True:
    c, _ = s.accept()
    data = c.recv(1024)
    c.sendall(b"echo:" + data); c.close()
PY
cat > "$WORK/client.py" <<'PY'
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(sys.argv[3].encode()); print(c.recv(1024).decode())
PY
sh -c "echo \$\$ > $ROOT/kubepods/burstable/pod$TAG-b/app/cgroup.procs; exec ip netns exec ${TAG}b python3 $WORK/echo.py" &
PIDS+=($!)
sleep 0.5

in_pod_a() { sh -c "echo \$\$ > $ROOT/kubepods/burstable/pod$TAG-a/app/cgroup.procs; exec ip netns exec ${TAG}a $*"; }

# Before capture: direct.
[ "$(in_pod_a python3 "$WORK/client.py" 10.78.0.12 8080 before)" = "echo:before" ] || fail "baseline"

"$BIN/meshlock-agent" capture-harness --cgroup-root "$ROOT" --pin-dir "$PIN" >"$WORK/harness.log" 2>&1 &
HARNESS=$!
PIDS+=($HARNESS)
for _ in $(seq 50); do grep -q '^ready' "$WORK/harness.log" && break; sleep 0.1; done
grep -q '^ready' "$WORK/harness.log" || fail "harness not ready"
grep -c '^enrolled' "$WORK/harness.log" | grep -qx 2 || fail "both pods enrolled"

[ "$(in_pod_a python3 "$WORK/client.py" 10.78.0.12 8080 captured)" = "echo:captured" ] || fail "bytes through the agent"
sleep 0.2
grep -q "^outbound $TAG-a 127.0.0.1:[0-9]* -> 10.78.0.12:8080" "$WORK/harness.log" || fail "outbound leg not seen"
grep -q "^inbound $TAG-b 10.78.0.11:[0-9]* -> 10.78.0.12:8080" "$WORK/harness.log" || fail "inbound leg not seen"

STATUS=$("$BIN/meshlock-agent" capture-status --pin-dir "$PIN")
echo "$STATUS" | python3 -c '
import json, sys
d = json.load(sys.stdin)["counters"]
assert d["connect_captured"] >= 1, d
assert d["orig_dst_published"] >= 1, d
assert d["lookup_steered"] >= 1, d
assert d["lookup_bypass_local"] >= 1, d  # the agent upstream into B
' || fail "counters: $STATUS"

# Agent restart: pins reused, capture continues.
kill $HARNESS; wait $HARNESS 2>/dev/null || true
"$BIN/meshlock-agent" capture-harness --cgroup-root "$ROOT" --pin-dir "$PIN" >"$WORK/harness.log" 2>&1 &
HARNESS=$!
PIDS+=($HARNESS)
for _ in $(seq 50); do grep -q '^ready' "$WORK/harness.log" && break; sleep 0.1; done
[ "$(in_pod_a python3 "$WORK/client.py" 10.78.0.12 8080 restarted)" = "echo:restarted" ] || fail "after restart"
[ "$(bpftool cgroup show "$ROOT/kubepods" | grep -c connect4)" = 1 ] || fail "connect4 attached once"

kill $HARNESS; wait $HARNESS 2>/dev/null || true
"$BIN/meshlock-agent" uninstall --pin-dir "$PIN" >/dev/null
[ ! -e "$PIN" ] || fail "pin dir left behind"
[ -z "$(bpftool cgroup show "$ROOT/kubepods")" ] || fail "programs left attached"
[ "$(in_pod_a python3 "$WORK/client.py" 10.78.0.12 8080 after)" = "echo:after" ] || fail "direct after uninstall"
echo PASS
