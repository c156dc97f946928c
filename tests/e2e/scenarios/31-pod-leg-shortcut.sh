#!/usr/bin/env bash
# Scenario 31 (issue 17): the pod-local shortcut. With
# --pod-leg-shortcut app-to-agent, sockops puts both ends of every app <->
# agent connection in the sockhash and sk_msg carries the app's bytes to the
# agent without loopback TCP: on node-b the client's requests and uploads
# (outbound leg), on node-a web's responses (inbound leg). 32 MiB each way
# arrive whole (sha256 on both ends), and the capture counters show the
# redirects on both nodes. The same run also proves the agent's own
# sockets are hooked from its cgroup (sockops attached twice).
E2E_NAME=s31
export E2E_POD_LEG_SHORTCUT=${E2E_POD_LEG_SHORTCUT:-app-to-agent}
[ "$E2E_POD_LEG_SHORTCUT" != off ] || E2E_POD_LEG_SHORTCUT=app-to-agent
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"

capture_json() { curl -sf --unix-socket "$WORK/admin-$1.sock" http://agent/capture; }
counter() { capture_json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['$2'])"; }

mkdir -p "$WORK/www"
head -c $((32 << 20)) /dev/urandom >"$WORK/www/blob"
want=$(sha256sum "$WORK/www/blob" | cut -d' ' -f1)
in_pod shop/web python3 -m http.server 8080 --bind 0.0.0.0 --directory "$WORK/www" >"$WORK/http.log" 2>&1 &
BG_PIDS+=($!)
# An upload sink on 9090: reads to EOF, answers with the sha256 of what came.
in_pod shop/web python3 -c '
import hashlib, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9090)); s.listen(4)
while True:
    c, _ = s.accept()
    h = hashlib.sha256()
    while True:
        b = c.recv(1 << 16)
        if not b: break
        h.update(b)
    c.sendall(h.hexdigest().encode()); c.close()
' >"$WORK/sink.log" 2>&1 &
BG_PIDS+=($!)
wait_listening shop/web 8080
wait_listening shop/web 9090

log "download: 32 MiB from web through the mesh"
got=$(in_pod shop/client sh -c 'curl -s --max-time 30 http://web.shop.svc.cluster.local/blob | sha256sum' | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "download: sha256 $got, want $want"

log "upload: 32 MiB from client to web's sink"
got=$(in_pod shop/client python3 -c '
import socket, sys
s = socket.create_connection(("10.244.1.10", 9090), timeout=30)
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(1 << 16)
        if not b: break
        s.sendall(b)
s.shutdown(socket.SHUT_WR)
print(s.recv(128).decode())
' "$WORK/www/blob")
[ "$got" = "$want" ] || fail "upload: sha256 '$got', want $want"

log "counters: both legs joined and took the shortcut on both nodes"
for node in node-a node-b; do
  inserted=$(counter "$node" leg_inserted)
  redirected=$(counter "$node" leg_redirected)
  errors=$(counter "$node" leg_insert_error)
  log "$node: leg_inserted=$inserted leg_redirected=$redirected leg_insert_error=$errors" \
      "leg_pass_unread=$(counter "$node" leg_pass_unread) leg_pass_backlog=$(counter "$node" leg_pass_backlog)" \
      "leg_pass_no_peer=$(counter "$node" leg_pass_no_peer)"
  [ "$inserted" -ge 4 ] || fail "$node: $inserted pod-local sockets joined, want both ends of two connections"
  [ "$redirected" -ge 1 ] || fail "$node: no message took the shortcut"
  [ "$errors" = 0 ] || fail "$node: $errors sockets could not join"
done
capture_json node-a | python3 -c '
import json, sys
progs = {p["attach_type"]: p for p in json.load(sys.stdin)["programs"]}
assert "sk_msg" in progs, progs.keys()
assert progs["sockops"]["attachments"] == 2, progs["sockops"]
' || fail "/capture: sk_msg not attached, or sockops not at the agent's cgroup"
grep -q "pod-local shortcut $E2E_POD_LEG_SHORTCUT" "$WORK/agent-node-a.log" || fail "the agent did not log the shortcut"

log "done"
