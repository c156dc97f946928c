#!/usr/bin/env bash
# Scenario 33 (issue 18): TLS key updates after an upgrade handed the
# connection over. shop/client holds one connection to legacy/db through its
# service, to which node-b's agent originates TLS 1.3 (DestinationRule
# SIMPLE); the server is openssl s_server, a TLS stack meshlock did not
# write, driven from its stdin. After node-b's agent is upgraded (the
# connection's TLS state is carried on by the new process's record layer,
# docs/upgrade.md), s_server sends KeyUpdate with update_requested ("K":
# the agent must take the new read key and answer with its own KeyUpdate),
# then without ("k"); bytes go both ways after each, and again after a
# second upgrade of a connection that has changed keys.
E2E_NAME=s33
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"

make_ca "$WORK/ext"
ext_leaf db DNS:db.legacy.svc.cluster.local
printf 'apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db-tls, namespace: shop}\nspec:\n  host: db.legacy.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: db.legacy.svc.cluster.local, caCertificates: %s}\n' \
  "$WORK/ext/root-cert.pem" >"$WORK/dr.yaml"
apply "$WORK/dr.yaml"

# s_server reads its stdin from a FIFO (lines to send; "K"/"k" alone on a
# line send a KeyUpdate) and prints what it receives; -msg shows the
# handshake messages, KeyUpdate included.
# (Each FIFO is held open read-write here first, so that opening it never
# waits for the other end.)
mkfifo "$WORK/server.in" "$WORK/app.in"
exec 7<>"$WORK/app.in" 8<>"$WORK/server.in"
in_pod legacy/db timeout 120 openssl s_server -accept 5432 -naccept 1 -tls1_3 -msg -cert "$WORK/db.pem" \
  -cert_chain "$WORK/ext/ca-cert.pem" -key "$WORK/db-key.pem" <"$WORK/server.in" >"$WORK/server.out" 2>&1 &
BG_PIDS+=($!)
wait_listening legacy/db 5432 || die "s_server did not start: $(cat "$WORK/server.out")"

# The app: one plaintext connection, lines from a FIFO out, what comes back to a file.
cat >"$WORK/app.py" <<'PY'
import socket, sys, threading
sock = socket.create_connection(("10.96.20.20", 5432), timeout=60)
out = open(sys.argv[2], "ab", buffering=0)
def reader():
    while True:
        data = sock.recv(4096)
        if not data:
            return
        out.write(data)
threading.Thread(target=reader, daemon=True).start()
with open(sys.argv[1], "rb", buffering=0) as lines:
    for line in lines:
        sock.sendall(line)
PY
trap '' PIPE  # a peer gone shows as a failed write (and a failure below), not as this shell's death
in_pod shop/client timeout 120 python3 "$WORK/app.py" "$WORK/app.in" "$WORK/app.out" < /dev/null &
BG_PIDS+=($!)

seen() {  # seen FILE TEXT: TEXT shows in FILE within 5 s
  for _ in $(seq 50); do grep -aq -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
count() { grep -ac -- "$2" "$1" 2>/dev/null || true; }
both_ways() {  # both_ways TAG: a line each way
  echo "from-app-$1" >&7
  seen "$WORK/server.out" "from-app-$1" || fail "$1: s_server did not get the app's line"
  echo "from-server-$1" >&8
  seen "$WORK/app.out" "from-server-$1" || fail "$1: the app did not get s_server's line"
}

both_ways start
surge_upgrade node-b 1
log "upgrade 1: $UPGRADE_LINE"
grep -q "handover: 1 established connections taken" <<<"$UPGRADE_LINE" || fail "the connection was not handed over: $UPGRADE_LINE"
both_ways after-upgrade-1

sent_before=$(count "$WORK/server.out" ">>> TLS 1.3, Handshake \[length 0005\], KeyUpdate")
got_before=$(count "$WORK/server.out" "<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate")
echo K >&8  # KeyUpdate, update_requested: the agent must answer with its own
both_ways after-K
[ "$(count "$WORK/server.out" ">>> TLS 1.3, Handshake \[length 0005\], KeyUpdate")" -gt "$sent_before" ] ||
  fail "s_server sent no KeyUpdate: $(tail -5 "$WORK/server.out")"
[ "$(count "$WORK/server.out" "<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate")" -gt "$got_before" ] ||
  fail "the agent did not answer the requested KeyUpdate: $(tail -5 "$WORK/server.out")"
echo k >&8  # KeyUpdate, not requested
both_ways after-k

surge_upgrade node-b 2
log "upgrade 2: $UPGRADE_LINE"
grep -q "handover: 1 established connections taken" <<<"$UPGRADE_LINE" || fail "the connection was not handed over again: $UPGRADE_LINE"
both_ways after-upgrade-2
echo K >&8
both_ways after-second-K
grep -aiq "error\|alert" "$WORK/server.out" && fail "s_server saw an error: $(grep -ai "error\|alert" "$WORK/server.out" | head -3)"
log "KeyUpdates: s_server sent $(count "$WORK/server.out" ">>> TLS 1.3, Handshake \[length 0005\], KeyUpdate"), received $(count "$WORK/server.out" "<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate") (the agent's answers to the two requests)"
ends=$(grep -c "end=handed_over" "$WORK/agent-node-b.log" || true)
[ "$ends" -ge 2 ] || fail "$ends handed-over access log lines on node-b, want 2"
exec 7>&- 8>&-
log "done"
