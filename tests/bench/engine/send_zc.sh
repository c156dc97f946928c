#!/usr/bin/env bash
# Issue 17: io_uring zero-copy send against a plain send, on the two paths
# an agent's node leg takes on this machine: loopback, and a veth pair
# between two network namespaces (as meshsim's nodes are joined). Runs
# meshlock-sendzc (send_zc.cpp) RUNS times per mode and path; prints one
# line per run. Usage: bash tests/bench/engine/send_zc.sh BUILD_DIR [RUNS]
# Root: it creates two namespaces and a veth pair, removed on exit.
set -euo pipefail
build=${1:?build dir}
runs=${2:-3}
bin="$build/bin/meshlock-sendzc"
bytes=${SENDZC_BYTES:-2000000000}
tag="mlzc$$"
a="${tag}a" b="${tag}b"
sink_pid=""
cleanup() {  # never stops early: the namespaces go whatever the sink's status
  if [ -n "$sink_pid" ]; then
    kill "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
  fi
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT

echo "# loopback, the sink a thread of the same process (CPU: sender and sink)"
for mode in copy zc zc-fixed; do
  for _ in $(seq "$runs"); do "$bin" --mode "$mode" --bytes "$bytes"; done
done

ip netns add "$a"
ip netns add "$b"
ip link add "${tag}x" netns "$a" type veth peer name "${tag}y" netns "$b"
ip -n "$a" addr add 10.254.0.1/30 dev "${tag}x"
ip -n "$b" addr add 10.254.0.2/30 dev "${tag}y"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "${tag}x" up
ip -n "$b" link set "${tag}y" up
# The sink: accepts connections one after another, reads and drops.
ip netns exec "$b" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.254.0.2", 5001)); s.listen(4)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    while c.recv_into(buf):
        pass
    c.close()
' &
sink_pid=$!
for _ in $(seq 50); do ip netns exec "$b" ss -ltn | grep -q 10.254.0.2:5001 && break; sleep 0.1; done

echo "# veth between two namespaces, the sink another process (CPU: sender only)"
for mode in copy zc zc-fixed; do
  for _ in $(seq "$runs"); do ip netns exec "$a" "$bin" --mode "$mode" --bytes "$bytes" --to 10.254.0.2:5001; done
done
