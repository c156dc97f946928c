#!/usr/bin/env bash
# Scenario 9 (seed 003, DestinationRule SIMPLE and MUTUAL): meshlock
# originates TLS from a plaintext app to a TLS server outside the mesh
# (openssl s_server with its own CA), checking the server's name and SANs,
# and presenting the rule's client certificate for MUTUAL.
E2E_NAME=s09
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"

make_ca "$WORK/ext"
ext_leaf server DNS:db.legacy.svc.cluster.local
ext_leaf client DNS:client.shop
cp "$WORK/ext/root-cert.pem" "$WORK/ext-root.pem"

server() {  # server [EXTRA s_server FLAGS]: one connection, then it exits
  # meshsim exec, not the in_pod function: $! is then the process chain that
  # execs into timeout, so stop_server ends the server even if it got no
  # connection (a function in the background would leave it listening).
  "$MESHSIM" exec --name "$RUN" legacy/db -- timeout 20 openssl s_server -accept 5432 -naccept 1 -www -cert "$WORK/server.pem" -cert_chain "$WORK/ext/ca-cert.pem" \
    -key "$WORK/server-key.pem" "$@" >"$WORK/s_server.log" 2>&1 &
  SERVER_PID=$!
  sleep 0.8
}
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
fetch() { in_pod shop/client curl -s --max-time 5 -o /dev/null -w '%{http_code}' http://db.legacy.svc.cluster.local:5432/ || true; }
rule() {  # rule MODE [extra tls yaml lines]
  local mode=$1; shift
  {
    printf 'apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db-tls, namespace: shop}\n'
    printf 'spec:\n  host: db.legacy.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: %s\n' "$mode"
    printf '      caCertificates: %s\n' "$WORK/ext-root.pem"
    for line in "$@"; do printf '      %s\n' "$line"; done
  } >"$WORK/dr.yaml"
  apply "$WORK/dr.yaml"
}

log "SIMPLE with the right SAN and SNI"
rule SIMPLE "sni: db.legacy.svc.cluster.local" "subjectAltNames: [db.legacy.svc.cluster.local]"
server
[ "$(fetch)" = 200 ] || fail "SIMPLE origination failed: $(tail -3 "$WORK/s_server.log")"
stop_server

log "SIMPLE with a SAN the server does not have: refused"
rule SIMPLE "sni: db.legacy.svc.cluster.local" "subjectAltNames: [other.example.com]"
server
[ "$(fetch)" != 200 ] || fail "a server without the rule's SAN was accepted"
stop_server

log "SIMPLE towards a server that requires a client certificate: refused"
rule SIMPLE "sni: db.legacy.svc.cluster.local"
server -Verify 1 -CAfile "$WORK/ext-root.pem"
[ "$(fetch)" != 200 ] || fail "SIMPLE passed a server that requires client certificates"
stop_server

log "MUTUAL with the rule's client certificate"
rule MUTUAL "sni: db.legacy.svc.cluster.local" "clientCertificate: $WORK/client-chain.pem" "privateKey: $WORK/client-key.pem"
server -Verify 1 -CAfile "$WORK/ext-root.pem"
[ "$(fetch)" = 200 ] || fail "MUTUAL origination failed: $(tail -3 "$WORK/s_server.log")"
stop_server

# credentialName (docs/policy.md): the Secrets come from the API server, read
# by name in the client's namespace, for a rule with a workloadSelector.
B="unix:$WORK/admin-node-b.sock"
credential_rule() {  # credential_rule NAME [selector yaml] [mode, MUTUAL by default]
  {
    printf 'apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db-tls, namespace: shop}\n'
    printf 'spec:\n  host: db.legacy.svc.cluster.local\n%s  trafficPolicy:\n    tls:\n' "${2:-}"
    printf '      mode: %s\n      sni: db.legacy.svc.cluster.local\n      credentialName: %s\n' "${3:-MUTUAL}" "$1"
  } >"$WORK/dr.yaml"
  apply "$WORK/dr.yaml"
}
SELECTOR='  workloadSelector: {matchLabels: {app: client}}
'
referenced() {  # referenced KIND: how many objects node-b's agent holds of a kind it reads by name
  agent_status node-b "[k for k in s['source']['kinds'] if k['name'] == '$1'][0]['objects']"
}
refused_has() {  # refused_has TEXT: node-b's refused list names TEXT (within 4 s)
  for _ in $(seq 20); do
    "$CTL" refused --admin "$B" -o json >"$WORK/refused.json" 2>/dev/null && grep -q "$1" "$WORK/refused.json" && return 0
    sleep 0.2
  done
  return 1
}
log "MUTUAL with credentialName, before shop/client's account may read secrets: refused, as istiod would"
kubectl_admin create secret generic -n shop db-client --from-file=cert="$WORK/client-chain.pem" \
  --from-file=key="$WORK/client-key.pem" >/dev/null || fail "create secret"
kubectl_admin create secret generic -n shop db-client-cacert --from-file=cacert="$WORK/ext-root.pem" >/dev/null || fail "create secret"
credential_rule db-client "$SELECTOR"
server -Verify 1 -CAfile "$WORK/ext-root.pem"
[ "$(fetch)" != 200 ] || fail "a key was used for an account that may not read secrets"
stop_server
refused_has "client/shop is not authorized to read secrets" || fail "refused does not say why: $(cat "$WORK/refused.json")"

log "granted (a Role to list secrets, bound to the account): MUTUAL from a kubernetes.io/tls Secret with its own ca.crt"
kubectl_admin create role -n shop list-secrets --verb=list --resource=secrets >/dev/null || fail "create role"
kubectl_admin create rolebinding -n shop client-lists-secrets --role=list-secrets --serviceaccount=shop:client >/dev/null ||
  fail "create rolebinding"
cat "$WORK/client-chain.pem" >"$WORK/tls.crt"
kubectl_admin create secret tls -n shop db-client-tls --cert="$WORK/tls.crt" --key="$WORK/client-key.pem" --dry-run=client -o json |
  python3 -c "import json,sys,base64; s=json.load(sys.stdin); s['data']['ca.crt']=base64.b64encode(open('$WORK/ext-root.pem','rb').read()).decode(); print(json.dumps(s))" \
  >"$WORK/tls-secret.json"
apply "$WORK/tls-secret.json"
credential_rule db-client-tls "$SELECTOR"  # a new name: the agent reads and reviews again at once
server -Verify 1 -CAfile "$WORK/ext-root.pem"
code=$(fetch)
[ "$code" = 200 ] || fail "MUTUAL from a TLS Secret failed ($code): $(tail -3 "$WORK/s_server.log")"
grep -q "CN *= *client" "$WORK/s_server.log" || fail "the server did not see the Secret's client certificate: $(cat "$WORK/s_server.log")"
stop_server

log "a generic Secret with its CA in <name>-cacert"
credential_rule db-client "$SELECTOR"
server -Verify 1 -CAfile "$WORK/ext-root.pem"
code=$(fetch)
[ "$code" = 200 ] || fail "MUTUAL from a generic Secret failed ($code): $(tail -3 "$WORK/s_server.log")"
stop_server
held=$(referenced secrets.referenced)
[ "$held" = 2 ] || fail "node-b's agent holds $held referenced Secrets, expected 2 (db-client, db-client-cacert)"

log "a Secret that does not exist: refused, and the reason names it"
credential_rule db-absent "$SELECTOR"
server -Verify 1 -CAfile "$WORK/ext-root.pem"
[ "$(fetch)" != 200 ] || fail "a rule whose Secret is missing originated anyway"
stop_server
refused_has 'Secret shop/db-absent not found' || fail "refused does not name the missing Secret: $(cat "$WORK/refused.json")"

log "credentialName in a rule without workloadSelector: no TLS at all, as Istio's sidecars"
credential_rule db-client ""
"$CTL" check --from shop/client --to db.legacy.svc.cluster.local:5432 --admin "$B" -o json >"$WORK/check.json" || fail "check failed"
python3 - "$WORK/check.json" <<'PY' || fail "check: $(cat "$WORK/check.json")"
import json, sys
c = json.load(open(sys.argv[1]))
text = json.dumps(c)
assert c.get("client_tls") == "DISABLE", c.get("client_tls")
assert "applies at gateways only" in text, text
PY

# configmap:// (resource.go, sds.go): a ConfigMap's CA, for any client, with
# or without workloadSelector; read by name like the Secrets.
configmap_rule() { credential_rule "$1" "" SIMPLE; }  # configmap_rule CREDENTIAL: no selector
log "SIMPLE with a configmap:// CA, in a rule without workloadSelector: the ConfigMap read by name"
kubectl_admin create configmap -n shop db-ca --from-file=ca.crt="$WORK/ext-root.pem" >/dev/null || fail "create configmap"
configmap_rule configmap://shop/db-ca
server
code=$(fetch)
[ "$code" = 200 ] || fail "SIMPLE from a ConfigMap's CA failed ($code): $(tail -3 "$WORK/s_server.log")"
stop_server
held=$(referenced configmaps.referenced)
[ "$held" = 1 ] || fail "node-b's agent holds $held referenced ConfigMaps, expected 1 (shop/db-ca)"

log "a ConfigMap with another CA: the server is refused"
make_ca "$WORK/other"
kubectl_admin create configmap -n shop other-ca --from-file=ca.crt="$WORK/other/root-cert.pem" >/dev/null ||
  fail "create configmap"
configmap_rule configmap://shop/other-ca
server
[ "$(fetch)" != 200 ] || fail "a server whose CA is not the ConfigMap's was accepted"
stop_server

log "the ConfigMap deleted: refused, and the reason names it"
kubectl_admin delete configmap -n shop db-ca >/dev/null || fail "delete configmap"
configmap_rule configmap://shop/db-ca  # named again: read again at once (else within secret_refresh, 30 s)
server
[ "$(fetch)" != 200 ] || fail "a rule whose ConfigMap is gone originated anyway"
stop_server
refused_has 'configmap shop/db-ca not found' || fail "refused does not name the missing ConfigMap: $(cat "$WORK/refused.json")"
log "done"
