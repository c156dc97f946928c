#!/usr/bin/env bash
# meshlockctl against live agents (issue 8): status, workloads, certs and
# connections answer from the running agent; a held mTLS connection shows up
# with its lock, TLS version and the peer identity; metrics parse.
E2E_NAME=s20
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
A="unix:$WORK/admin-node-a.sock"
B="unix:$WORK/admin-node-b.sock"

expect_ok shop/client web.shop.svc.cluster.local:80

log "status"
"$CTL" status --admin "$A" -o json >"$WORK/status.json" || fail "status failed"
python3 - "$WORK/status.json" <<'PY' || fail "status JSON: $(cat "$WORK/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["node"] == "node-a", s["node"]
assert s["ready"] is True
assert s["pods_served"] == 1, s["pods_served"]
assert s["handshakes"]["success"] >= 1, s["handshakes"]
PY

log "workloads: web enrolled with its identity, db not"
"$CTL" workloads --admin "$A" -o json >"$WORK/workloads.json" || fail "workloads failed"
python3 - "$WORK/workloads.json" <<'PY' || fail "workloads JSON: $(cat "$WORK/workloads.json")"
import json, sys
w = {f'{x["namespace"]}/{x["pod"]}': x for x in json.load(open(sys.argv[1]))["workloads"]}
assert w["shop/web"]["enrolled"] and w["shop/web"]["identity"] == "spiffe://cluster.local/ns/shop/sa/web"
assert not w["legacy/db"]["enrolled"] and w["legacy/db"]["identity"] is None
assert {p["port"]: p["mode"] for p in w["shop/web"]["inbound"]} == {8080: "PERMISSIVE", 9090: "PERMISSIVE"}
PY

log "certs"
"$CTL" certs --admin "$B" -o json >"$WORK/certs.json" || fail "certs failed"
python3 - "$WORK/certs.json" <<'PY' || fail "certs JSON: $(cat "$WORK/certs.json")"
import json, sys
c = json.load(open(sys.argv[1]))
[cert] = c["certificates"]
assert cert["identity"] == "spiffe://cluster.local/ns/shop/sa/client", cert
assert cert["pods"] == ["shop/client"], cert
assert [x["subject"] for x in cert["chain"]] == ["CN=intermediate,O=meshlock-e2e"], cert["chain"]
assert [r["subject"] for r in c["roots"]] == ["CN=root,O=meshlock-e2e"], c["roots"]
assert 0 < cert["expires_in_seconds"] <= 86400
PY

log "connections: a held connection through the mesh"
in_pod shop/client bash -c 'exec 3<>/dev/tcp/10.244.1.10/8080; echo hi >&3; sleep 4' &
BG_PIDS+=($!)
sleep 1.5
"$CTL" connections --admin "$B" -o json >"$WORK/conns.json" || fail "connections failed"
python3 - "$WORK/conns.json" <<'PY' || fail "connections JSON: $(cat "$WORK/conns.json")"
import json, sys
c = [x for x in json.load(open(sys.argv[1]))["connections"] if x["direction"] == "outbound"]
assert c, "no outbound connection"
x = c[0]
assert x["mode"] == "mutual_tls" and x["tls_version"] == "TLSv1.3", x
assert x["destination_identity"] == "spiffe://cluster.local/ns/shop/sa/web", x
assert x["source_pod"] == "client", x
PY
"$CTL" connections --admin "$B" | tee "$WORK/conns.txt"

log "metrics parse with promtool"
ip netns exec "$(node_field node-a netns)" curl -s http://127.0.0.1:15020/metrics >"$WORK/metrics.txt" || fail "metrics endpoint"
promtool check metrics <"$WORK/metrics.txt" || fail "promtool rejected the metrics"
grep -q '^meshlock_pods_served 1' "$WORK/metrics.txt" || fail "meshlock_pods_served missing: $(grep pods_served "$WORK/metrics.txt")"
log "a state change over TCP is refused (403), also for any local user; over the Unix socket it is taken"
answer=$(ip netns exec "$(node_field node-a netns)" setpriv --reuid=nobody --regid=nogroup --clear-groups \
  curl -s -w '\n%{http_code}' -X POST 'http://127.0.0.1:15000/logging?level=off' || true)
[ "${answer##*$'\n'}" = 403 ] || fail "POST /logging over TCP as nobody: $answer, want 403"
level=$(ip netns exec "$(node_field node-a netns)" curl -s http://127.0.0.1:15000/logging)
[[ "$level" == *'"level":"info"'* ]] || fail "the level changed after a refused POST: $level"
taken=$(curl -s --unix-socket "$WORK/admin-node-a.sock" -X POST 'http://localhost/logging?level=debug' || true)
[[ "$taken" == *'"level":"debug"'* ]] || fail "POST /logging over the Unix socket was not taken: $taken"
log "done"
