#!/usr/bin/env bash
# Scenario 30 (issue 16): a served pod takes HBONE on its port 15008, as
# ztunnel and tunnelling sidecars send it (istio/ztunnel src/proxy/inbound.rs).
# The client is independent of meshlock (tests/agent/engine/hbone_client.py:
# python3-h2 over Python's ssl) and runs in legacy/client, an un-meshed pod,
# with a mesh certificate as a ztunnel would present for its workload. Two
# streams on one tunnel reach web's two ports; the access log and the
# metrics count them; an AuthorizationPolicy answers 401 per stream; the
# tunnel port refuses plaintext and any TLS without ALPN h2. meshlock's own
# client sends web HBONE too, pooled (the networking.istio.io/tunnel=http
# label is what istiod reads to have ztunnel do the same).
E2E_NAME=s30
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
serve shop/web 9090

# A P-256 leaf for the SPIFFE ID, signed by the run's mesh CA, as ztunnel holds one per workload.
mesh_leaf amb-leaf spiffe://cluster.local/ns/legacy/sa/default
cat "$WORK/amb-leaf.pem" "$WORK/ca/ca-cert.pem" >"$WORK/amb.pem"

hbone() {  # hbone OUT [client arguments]: the client's JSON report in $WORK/OUT.json
  local out=$1; shift
  in_pod legacy/client /usr/bin/python3 "$HERE/../../agent/engine/hbone_client.py" --connect 10.244.1.10:15008 \
    --cert "$WORK/amb.pem" --key "$WORK/amb-leaf-key.pem" --ca "$WORK/ca/root-cert.pem" --namespace legacy \
    --forwarded-for 10.244.2.20 --timeout 15 "$@" >"$WORK/$out.json" 2>"$WORK/$out.err" ||
    fail "the HBONE client failed: $(cat "$WORK/$out.err")"
}

# Access lines are written by each agent's log thread once a stream ends: wait for them (bounded).
access_line() {  # access_line NODE PATTERN...: 0 once NODE's log has an access line matching every PATTERN
  local node=$1; shift
  for _ in $(seq 50); do
    local lines
    lines=$(grep ' access ' "$WORK/agent-$node.log" || true)
    for p in "$@"; do lines=$(grep -e "$p" <<<"$lines" || true); done
    [ -n "$lines" ] && return 0
    sleep 0.1
  done
  return 1
}

log "two streams of one tunnel reach web's ports 8080 and 9090, bytes intact both ways"
hbone two --stream 10.244.1.10:8080 --stream 10.244.1.10:9090 --bytes 300000
python3 - "$WORK/two.json" <<'PY' || fail "HBONE streams: $(cat "$WORK/two.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["error"] is None, r
assert r["alpn"] == "h2" and r["tls_version"] == "TLSv1.3", r
assert r["server_id"] == "spiffe://cluster.local/ns/shop/sa/web", r   # the destination workload's certificate
for s in r["streams"]:
    assert s["status"] == 200 and s["echo_ok"] and s["ended"], s
PY
access_line node-a 'dst=10.244.1.10:9090 ' 'src_principal=spiffe://cluster.local/ns/legacy/sa/default' 'tunnel=hbone' ||
  fail "no access line with tunnel=hbone for the stream to 9090: $(grep 'dst=10.244.1.10:9090' "$WORK/agent-node-a.log" | tail -2)"

log "an AuthorizationPolicy refuses the tunnel's peer stream by stream: 401, the app never reached"
printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-legacy, namespace: shop}\nspec: {action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/legacy/sa/default]}}], to: [{operation: {ports: ["8080"]}}]}]}\n' \
  >"$WORK/deny.yaml"
apply "$WORK/deny.yaml"
hbone denied --stream 10.244.1.10:8080 --stream 10.244.1.10:9090
python3 - "$WORK/denied.json" <<'PY' || fail "HBONE under a DENY policy: $(cat "$WORK/denied.json")"
import json, sys
r = json.load(open(sys.argv[1]))
s = r["streams"]
assert s[0]["status"] == 401 and s[0]["received"] == 0, s[0]
assert s[1]["status"] == 200 and s[1]["echo_ok"], s[1]   # the same tunnel, a port the policy leaves alone
PY
"$CTL" refused --admin "unix:$WORK/admin-node-a.sock" -o json >"$WORK/refused.json"
grep -q 'shop/deny-legacy' "$WORK/refused.json" || fail "meshlockctl refused does not name the policy: $(head -c 1500 "$WORK/refused.json")"

log "another pod's address in :authority is a bad request"
hbone other --stream 10.244.2.10:8080
python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['streams'][0]; assert s['status'] == 400, s" "$WORK/other.json" ||
  fail "a stream to another address: $(cat "$WORK/other.json")"

log "the tunnel port takes neither plaintext nor TLS without ALPN h2"
expect_refused legacy/client 10.244.1.10:15008
hbone no-h2 --stream 10.244.1.10:8080 --alpn istio
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['error'] and not any(s['status'] for s in r['streams']), r" \
  "$WORK/no-h2.json" || fail "a tunnel without ALPN h2 was served: $(cat "$WORK/no-h2.json")"

log "meshlock to meshlock is HBONE (the tunnel label, set here as for ztunnel's sake, changes nothing): ten connections ride one tunnel"
handshakes() {  # handshakes NODE: the agent's completed TLS handshakes
  nsenter --net="$(node_field "$1" netnsPath)" curl -s http://127.0.0.1:15020/metrics |
    sed -n 's/^meshlock_engine_handshakes_total{result="success"} //p'
}
before=$(handshakes node-b)
kubectl_admin label pod -n shop web networking.istio.io/tunnel=http >/dev/null
"$MESHSIM" apiserver flush --name "$RUN" >/dev/null
sleep 1.2
for i in $(seq 10); do expect_ok shop/client web.shop.svc.cluster.local:80; done
after=$(handshakes node-b)
# Each worker of node-b's agent opens its own tunnel (shared-nothing): at most two here.
[ $((after - before)) -le 2 ] || fail "ten connections cost $((after - before)) handshakes on node-b: not pooled"
access_line node-b 'direction=outbound pod=shop/client' 'dst=10.96.10.10:80 ' 'tunnel=hbone' ||
  fail "no outbound access line with tunnel=hbone on node-b: $(grep 'direction=outbound' "$WORK/agent-node-b.log" | tail -2)"
access_line node-a 'direction=inbound pod=shop/web' 'src_principal=spiffe://cluster.local/ns/shop/sa/client' 'tunnel=hbone' ||
  fail "no inbound access line with tunnel=hbone on node-a: $(grep 'direction=inbound pod=shop/web' "$WORK/agent-node-a.log" | tail -3)"

log "the agent's metrics count the streams"
metrics=$(nsenter --net="$(node_field node-a netnsPath)" curl -s http://127.0.0.1:15020/metrics)
grep -q 'meshlock_engine_tunnel_streams_total{result="accepted"} [1-9][0-9]' <<<"$metrics" ||
  fail "tunnel streams accepted: $(grep tunnel_streams <<<"$metrics")"
grep -q 'meshlock_engine_tunnel_streams_total{result="refused"} [2-9]' <<<"$metrics" ||
  fail "tunnel streams refused: $(grep tunnel_streams <<<"$metrics")"
log "done"
