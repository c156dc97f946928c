#!/usr/bin/env bash
# Scenario 28 (issue 13): meshlock's CA on meshsim. Node authorization end to
# end: node-a's agent token gets shop/web (on node-a) and is refused
# shop/client (only on node-b), which node-b's token gets; a workload's token
# cannot impersonate. CA outage: with the CA down, established mTLS keeps
# working on the certificates in hand; an agent restarted meanwhile holds its
# STRICT pods closed and says why (/certs, metrics), and serves them once the
# CA is back. No CA key on any node (cluster.sh's cleanup checks it).
E2E_NAME=s28
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
netns_a=$(node_field node-a netnsPath)

# ca_load as the given token for IDENTITY, one call: the outcomes' JSON.
ask_ca() {
  local token=$1 identity=$2
  nsenter --net="$netns_a" "$BIN/ca_load" --address "$CA_ADDRESS" --server-name "$CA_NAME" \
    --root "$WORK/ca-root/root-cert.pem" --token-file "$token" --identity "$identity" --threads 1 --seconds 10 \
    --csrs 1 --calls 1 2>/dev/null || true
}
outcome() { python3 -c "import json,sys; o=json.loads(sys.argv[1])['outcomes']; print(','.join(sorted(o)))" "$1"; }

log "node authorization: node-a's agent asks for identities"
got=$(outcome "$(ask_ca "$WORK/token-node-a" spiffe://cluster.local/ns/shop/sa/web)")
[ "$got" = issued ] || fail "node-a's agent, shop/web (on node-a): want issued, got $got"
got=$(outcome "$(ask_ca "$WORK/token-node-a" spiffe://cluster.local/ns/shop/sa/client)")
[ "$got" = permission_denied ] || fail "node-a's agent, shop/client (only on node-b): want permission_denied, got $got"
got=$(outcome "$(ask_ca "$WORK/token-node-b" spiffe://cluster.local/ns/shop/sa/client)")
[ "$got" = issued ] || fail "node-b's agent, shop/client: want issued, got $got"
"$MESHSIM" token --name "$RUN" -n shop --service-account web --pod web --audience istio-ca --file "$WORK/token-web" >/dev/null
got=$(outcome "$(ask_ca "$WORK/token-web" spiffe://cluster.local/ns/shop/sa/client)")
[ "$got" = permission_denied ] || fail "shop/web's own token impersonating: want permission_denied, got $got"
grep -q "refused spiffe://cluster.local/ns/shop/sa/client for meshlock-system/meshlock-agent .*(not_on_node): no instances of \"shop/client\" found on node \"node-a\"" \
  "$WORK/ca.log" || fail "the CA's log does not name the refusal: $(grep refused "$WORK/ca.log" | tail -3)"
metrics=$(nsenter --net="$netns_a" curl -fsS "http://${CA_ADDRESS%:*}:15014/metrics")
grep -q 'meshlock_ca_requests_total{outcome="not_on_node"} [1-9]' <<<"$metrics" || fail "no not_on_node count: $metrics"
grep -q 'meshlock_ca_requests_total{outcome="not_node_account"} [1-9]' <<<"$metrics" || fail "no not_node_account count"

log "mTLS across nodes with the CA's certificates, then STRICT"
serve shop/web 8080
expect_ok shop/client web.shop.svc.cluster.local:80
apply "$HERE/manifests/shop-strict.yaml"
expect_refused legacy/client web.shop.svc.cluster.local:80

log "CA outage: the CA stops"
kill -TERM "$CA_PID"
wait "$CA_PID" 2>/dev/null || true
expect_ok shop/client web.shop.svc.cluster.local:80
log "node-a's agent restarts while the CA is down: web is held closed, and /certs says why"
stop_agent node-a TERM
START_AGENT_READY=log start_agent node-a
for _ in $(seq 100); do
  [ "$(agent_status node-a 's["certificates"]["pending"]')" != 0 ] && break
  sleep 0.1
done
[ "$(agent_status node-a 's["certificates"]["pending"]')" != 0 ] || fail "node-a: no certificate pending with the CA down"
expect_refused shop/client web.shop.svc.cluster.local:80
for _ in $(seq 100); do
  "$CTL" certs --admin "unix:$WORK/admin-node-a.sock" -o json >"$WORK/certs-down.json"
  python3 - "$WORK/certs-down.json" <<'PY' && break
import json, sys
c = json.load(open(sys.argv[1]))
assert c["ca"]["requests"].get("unavailable", 0) >= 1, c["ca"]
PY
  sleep 0.1
done
python3 - "$WORK/certs-down.json" <<'PY' || fail "/certs does not show the CA outage"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["ca"]["requests"].get("unavailable", 0) >= 1, c["ca"]
assert any(x.get("last_error") for x in c["certificates"]), c["certificates"]
PY

log "the CA is back: web is served again"
start_ca node-a
for _ in $(seq 300); do
  [ "$(agent_status node-a 's["certificates"]["pending"]')" = 0 ] && break
  sleep 0.1
done
[ "$(agent_status node-a 's["certificates"]["pending"]')" = 0 ] || fail "node-a: certificates still pending 30 s after the CA returned"
for _ in $(seq 50); do send shop/client web.shop.svc.cluster.local:80 && break; sleep 0.2; done
expect_ok shop/client web.shop.svc.cluster.local:80
expect_refused legacy/client web.shop.svc.cluster.local:80
log "done"
