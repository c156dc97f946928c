#!/usr/bin/env bash
# Scenario 8 (secure naming): the client side refuses a server whose valid
# mesh certificate names another service account than the destination's; the
# server side refuses a client certificate from another CA.
E2E_NAME=s08
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080


# The destination: db in legacy (no proxy), reached with ISTIO_MUTUAL by rule,
# so meshlock's client insists on db's identity, legacy/sa/default.
cat >"$WORK/dr.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-mtls, namespace: shop}
spec:
  host: db.legacy.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
YAML
apply "$WORK/dr.yaml"

tls_server() {  # tls_server NAME: openssl s_server in legacy/db on 5432 with leaf NAME, client cert required
  in_pod legacy/db timeout 20 openssl s_server -accept 5432 -naccept 1 -www -cert "$WORK/$1.pem" -cert_chain "$WORK/ca/ca-cert.pem" \
    -key "$WORK/$1-key.pem" -CAfile "$WORK/ca/root-cert.pem" -Verify 2 >"$WORK/s_server-$1.log" 2>&1 &
  SERVER_PID=$!
  BG_PIDS+=($SERVER_PID)
  sleep 1
}
fetch() { in_pod shop/client curl -s --max-time 5 -o /dev/null -w '%{http_code}' http://db.legacy.svc.cluster.local:5432/; }

log "server presents the expected identity: accepted"
mesh_leaf db spiffe://cluster.local/ns/legacy/sa/default "$WORK/ca"
tls_server db
code=$(fetch) || true
[ "$code" = 200 ] || fail "with the right identity the request failed (HTTP '$code'): $(tail -3 "$WORK/s_server-db.log")"
wait "$SERVER_PID" 2>/dev/null || true  # -naccept 1: it exits after that connection

log "server presents a valid mesh certificate for another service account: refused by the client side"
mesh_leaf imposter spiffe://cluster.local/ns/shop/sa/imposter "$WORK/ca"
tls_server imposter
code=$(fetch) || true
[ "$code" != 200 ] || fail "a server with another identity was accepted"
grep -q "Accepted\|ACCEPT" "$WORK/s_server-imposter.log" || fail "the imposter server never ran: $(cat "$WORK/s_server-imposter.log")"
kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true

log "client certificate from another CA: refused by the server side"
make_ca "$WORK/other-ca"
mesh_leaf foreign spiffe://cluster.local/ns/legacy/sa/default "$WORK/other-ca"
failures_on_a() { "$CTL" status --admin "unix:$WORK/admin-node-a.sock" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['handshakes']['failure'])"; }
before=$(failures_on_a)
# TLS 1.3 sends the client certificate after the client considers the
# handshake done: keep stdin open a moment so s_client reads the server's alert.
(sleep 1; echo) | in_pod legacy/client timeout 5 openssl s_client -connect 10.244.1.10:8080 -cert "$WORK/foreign.pem" \
  -cert_chain "$WORK/other-ca/ca-cert.pem" -key "$WORK/foreign-key.pem" -CAfile "$WORK/ca/root-cert.pem" \
  -alpn istio >"$WORK/foreign.log" 2>&1 || true
grep -q "alert" "$WORK/foreign.log" || fail "s_client saw no alert for a client certificate from another CA: $(tail -5 "$WORK/foreign.log")"
after=$(failures_on_a)
[ "$after" -gt "$before" ] || fail "node-a counted no refused handshake ($before -> $after)"
log "done"
