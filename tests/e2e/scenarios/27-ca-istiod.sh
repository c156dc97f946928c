#!/usr/bin/env bash
# Scenario 27 (issue 13, caMode istiod): no CA key on any node. A stand-in
# for istiod's CA (fake_istiod.py on Debian's python3-grpcio) runs in
# node-a's network namespace on its node IP; both agents ask it for their
# pods' certificates over Istio's CA API with a token (ImpersonatedIdentity,
# as ztunnel does), and mTLS works across the nodes with them, also under
# STRICT. Then: no ca-key.pem in any agent's state directory.
E2E_NAME=s27
E2E_CA=own  # the stand-in istiod below, not meshlock's CA service
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${MESHLOCK_SOURCE_DIR:?}

"$MESHSIM" up "$HERE/cluster.yaml" --name "$RUN" >"$WORK/up.log" || { cat "$WORK/up.log"; die "meshsim up failed"; }
mapfile -t NODES < <(status_json | python3 -c "import json,sys; [print(n['name']) for n in json.load(sys.stdin)['nodes']]")
ca_ip=$(node_field node-a nodeIP)
mkdir -p "$WORK/istiod"
echo "node-agent-token" >"$WORK/token"
nsenter --net="$(node_field node-a netnsPath)" /usr/bin/python3 "$SRC/tests/agent/identity/fake_istiod.py" \
  --dir "$WORK/istiod" --pb2 "$BIN/../tests/python" --bind "$ca_ip" --port 15012 --token-file "$WORK/token" \
  >"$WORK/istiod.log" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 300); do [ -e "$WORK/istiod/port" ] && break; sleep 0.1; done
[ -e "$WORK/istiod/port" ] || { cat "$WORK/istiod.log"; die "fake istiod did not come up in 30 s"; }
cat >"$WORK/agent-ca.yaml" <<YAML
caMode: istiod
caAddress: $ca_ip:15012
caServerName: istiod.istio-system.svc
caRootFile: $WORK/istiod/root-cert.pem
caTokenFile: $WORK/token
YAML
for node in "${NODES[@]}"; do start_agent "$node" --config "$WORK/agent-ca.yaml"; done
log "cluster $RUN up with caMode istiod at $ca_ip:15012"

log "every pod's certificate arrives from the CA"
for node in "${NODES[@]}"; do
  for _ in $(seq 100); do
    [ "$(agent_status "$node" 's["certificates"]["pending"]')" = 0 ] && \
      [ "$(agent_status "$node" 's["certificates"]["identities"]')" != 0 ] && break
    sleep 0.1
  done
  [ "$(agent_status "$node" 's["certificates"]["pending"]')" = 0 ] || fail "$node: certificates still pending"
  log "$node: $(agent_status "$node" 's["certificates"]')"
  "$CTL" certs --admin "unix:$WORK/admin-$node.sock" -o json >"$WORK/certs-$node.json"
  python3 - "$WORK/certs-$node.json" <<'PY' || fail "$node: /certs does not show the remote CA's certificates"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["ca"]["mode"] == "istiod", c["ca"]
assert c["ca"]["requests"].get("success", 0) >= 1, c["ca"]
assert c["certificates"] and all(x["state"] == "ready" for x in c["certificates"]), c["certificates"]
PY
done
python3 - "$WORK/istiod/requests.jsonl" <<'PY' || fail "the CA did not see the node agents' requests as istiod expects"
import json, sys
seen = [json.loads(l) for l in open(sys.argv[1])]
ids = {r["impersonated"] for r in seen}
assert "spiffe://cluster.local/ns/shop/sa/web" in ids and "spiffe://cluster.local/ns/shop/sa/client" in ids, ids
assert all(r["authorization"] == "Bearer node-agent-token" for r in seen), seen
assert all(r["csr_sans"] == [r["impersonated"]] for r in seen), seen
PY

serve shop/web 8080
log "enrolled -> enrolled across nodes with the CA's certificates"
expect_ok shop/client web.shop.svc.cluster.local:80
apply "$HERE/manifests/shop-strict.yaml"
log "STRICT: plaintext refused, mTLS still through"
expect_refused legacy/client web.shop.svc.cluster.local:80
expect_ok shop/client web.shop.svc.cluster.local:80

log "a CA that refuses (PERMISSION_DENIED): node-a's restarted agent holds web closed, and says why"
mkdir -p "$WORK/istiod-deny"
nsenter --net="$(node_field node-a netnsPath)" /usr/bin/python3 "$SRC/tests/agent/identity/fake_istiod.py" \
  --dir "$WORK/istiod-deny" --pb2 "$BIN/../tests/python" --bind "$ca_ip" --port 15013 --mode permission_denied \
  >"$WORK/istiod-deny.log" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 300); do [ -e "$WORK/istiod-deny/port" ] && break; sleep 0.1; done
[ -e "$WORK/istiod-deny/port" ] || { cat "$WORK/istiod-deny.log"; die "the refusing CA did not come up in 30 s"; }
# (its own root: the agent trusts it for this part only)
sed -e "s/:15012/:15013/" -e "s|/istiod/root-cert.pem|/istiod-deny/root-cert.pem|" "$WORK/agent-ca.yaml" >"$WORK/agent-ca-deny.yaml"
stop_agent node-a TERM
START_AGENT_READY=log start_agent node-a --config "$WORK/agent-ca-deny.yaml"
for _ in $(seq 100); do grep -q "held closed" "$WORK/agent-node-a.log" && break; sleep 0.1; done
grep -q "shop/web waits for its certificate: held closed" "$WORK/agent-node-a.log" || fail "web not held closed"
expect_refused shop/client web.shop.svc.cluster.local:80
"$CTL" certs --admin "unix:$WORK/admin-node-a.sock" -o json >"$WORK/certs-deny.json"
python3 - "$WORK/certs-deny.json" <<'PY' || fail "/certs does not show web's refused certificate"
import json, sys
c = json.load(open(sys.argv[1]))
web = [x for x in c["certificates"] if x["identity"].endswith("/sa/web")]
assert web and web[0]["state"] == "failed" and "PERMISSION_DENIED" in web[0]["last_error"], c["certificates"]
PY
nsenter --net="$(node_field node-a netnsPath)" curl -s --max-time 5 http://127.0.0.1:15020/metrics >"$WORK/metrics-deny.txt" || true
grep -q 'meshlock_ca_requests_total{result="permission_denied"}' "$WORK/metrics-deny.txt" || fail "no permission_denied count in the metrics"
grep -q '^meshlock_certificates_pending 1' "$WORK/metrics-deny.txt" || fail "meshlock_certificates_pending is not 1"
[ "$(agent_status node-a 's["certificates"]["pending"]')" = 1 ] || fail "/status does not count web as pending"

log "back to the CA that signs: web is served again"
stop_agent node-a TERM
start_agent node-a --config "$WORK/agent-ca.yaml"
for _ in $(seq 100); do grep -q "serving pod shop/web" <(tail -20 "$WORK/agent-node-a.log") && break; sleep 0.1; done
expect_ok shop/client web.shop.svc.cluster.local:80

log "no CA private key anywhere the agents keep state (the CA's key stays in its own process)"
keys=$(find "$WORK" -name 'ca-key.pem' -o -name 'root-key.pem')
[ -z "$keys" ] || fail "a CA key is on a node: $keys"
for node in "${NODES[@]}"; do
  grep -q "no CA key on this node" "$WORK/agent-$node.log" || fail "$node: the agent did not say it holds no CA key"
done
log "done"
