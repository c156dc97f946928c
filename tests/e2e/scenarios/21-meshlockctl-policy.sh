#!/usr/bin/env bash
# meshlockctl's policy answers against live agents (issue 8): /config_dump
# carries the cluster, the mesh and each local pod's policy; `policy NS/POD`
# and a live `check` name the deciding resources and agree with the offline
# check of the same manifests; /connections says which service and resource
# decided a held connection; /capture lists the attached programs and maps;
# the engine and capture metrics parse; the admin socket refuses a non-root
# user; `graph -o svg` is valid SVG.
E2E_NAME=s21
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
A="unix:$WORK/admin-node-a.sock"
B="unix:$WORK/admin-node-b.sock"

cat "$HERE/manifests/shop-strict-metrics-port-permissive.yaml" - >"$WORK/policy.yaml" <<'YAML'
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-plain, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
YAML
apply "$WORK/policy.yaml"
serve shop/web 8080
expect_ok shop/client web.shop.svc.cluster.local:80

log "config_dump: the documented keys, the cluster as read, web's policy per port"
curl -sf --unix-socket "$WORK/admin-node-a.sock" http://agent/config_dump >"$WORK/dump.json" || fail "GET /config_dump"
python3 - "$WORK/dump.json" <<'PY' || fail "config_dump JSON: $(head -c 2000 "$WORK/dump.json")"
import json, sys
d = json.load(open(sys.argv[1]))
for k in ["node", "trust_domain", "cluster", "mesh", "synthetic_destination_rules", "policy", "identities", "warnings"]:
    assert k in d, k
for k in ["namespaces", "pods", "services", "endpoints", "peer_authentications", "destination_rules", "control_planes"]:
    assert isinstance(d["cluster"][k], list), k
assert d["node"] == "node-a"
ns = {n["name"]: n for n in d["cluster"]["namespaces"]}
assert ns["shop"]["labels"]["meshlock.io/mtls"] == "enabled", ns["shop"]
assert {p["name"] for p in d["cluster"]["peer_authentications"]} == {"default", "web-metrics"}
assert [r["name"] for r in d["cluster"]["destination_rules"]] == ["db-plain"]
assert d["mesh"]["root_namespace"] == "istio-system" and d["mesh"]["trust_domain"] == "cluster.local"
pol = {p["pod"]: p for p in d["policy"]}
# From the API the agent also sees its own pod (meshsim's meshlock-agent-node-a: hostNetwork, never served).
agent_pod = pol.pop("meshlock-system/meshlock-agent-node-a", None)
assert agent_pod is None or not agent_pod["served"], agent_pod
assert set(pol) == {"shop/web", "legacy/db", "default/apiserver"}, set(pol)
web = pol["shop/web"]
inbound = {p["port"]: (p["mode"], p["decided_by"]) for p in web["inbound"]}
assert inbound == {8080: ("STRICT", ["PeerAuthentication/shop/default"]),
                   9090: ("PERMISSIVE", ["PeerAuthentication/shop/web-metrics (port 9090)"])}, inbound
assert not pol["legacy/db"]["served"]
[ident] = d["identities"]
assert ident["identity"] == "spiffe://cluster.local/ns/shop/sa/web" and ident["pods"] == ["shop/web"], ident
assert ident["expires_in_seconds"] > 0
PY

log "policy NS/POD: the live agent's answer matches the manifests"
"$CTL" policy shop/client --admin "$B" -o json >"$WORK/policy.json" || fail "policy shop/client"
python3 - "$WORK/policy.json" <<'PY' || fail "policy JSON: $(head -c 2000 "$WORK/policy.json")"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["pod"] == "shop/client" and p["served"] is True
assert p["identity"] == "spiffe://cluster.local/ns/shop/sa/client"
assert p["inbound_other_ports"]["mode"] == "STRICT", p["inbound_other_ports"]
out = {o["to"]: o for o in p["outbound"]}
web = out["web.shop.svc.cluster.local:80"]
assert (web["client_tls"], web["server_mode"], web["outcome"]) == ("ISTIO_MUTUAL", "STRICT", "mtls"), web
db = out["db.legacy.svc.cluster.local:5432"]
assert db["client_tls"] == "DISABLE" and db["client_decided_by"] == ["DestinationRule/shop/db-plain"], db
PY
"$CTL" policy shop/web --admin "$A" >"$WORK/policy.txt" || fail "policy text"
grep -q "port 8080  STRICT *PeerAuthentication/shop/default" "$WORK/policy.txt" || fail "policy text: $(cat "$WORK/policy.txt")"
"$CTL" policy shop/web --admin "$A" -o yaml | grep -q '^pod: shop/web$' || fail "policy -o yaml"
rc=0; "$CTL" policy shop --admin "$A" >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "policy with a bad pod name: exit $rc, want 2"
rc=0; "$CTL" policy shop/nope --admin "$A" >/dev/null 2>"$WORK/nope.err" || rc=$?
[ "$rc" = 1 ] && grep -q "unknown pod shop/nope" "$WORK/nope.err" || fail "policy of an unknown pod: exit $rc, $(cat "$WORK/nope.err")"

log "check: live (--admin, and by default without --manifests) equals offline on the same manifests"
for to in web.shop.svc.cluster.local:80 db.legacy.svc.cluster.local:5432 shop/web:9090 10.96.0.1:443; do
  "$CTL" check --admin "$B" --from shop/client --to "$to" -o json >"$WORK/live.json" || fail "live check $to"
  MESHLOCK_ADMIN="$B" "$CTL" check --from shop/client --to "$to" -o json >"$WORK/env.json" || fail "check via \$MESHLOCK_ADMIN $to"
  "$CTL" check --manifests "$(manifests_dir)" --from shop/client --to "$to" -o json >"$WORK/offline.json" ||
    fail "offline check $to"
  cmp -s "$WORK/live.json" "$WORK/offline.json" || fail "live and offline check differ for $to: $(diff "$WORK/live.json" "$WORK/offline.json")"
  cmp -s "$WORK/live.json" "$WORK/env.json" || fail "check via \$MESHLOCK_ADMIN differs for $to"
done
"$CTL" check --admin "$B" --from shop/client --to web.shop.svc.cluster.local:80 | tee "$WORK/check.txt"
grep -q "outcome: *mtls" "$WORK/check.txt" || fail "live check text"
rc=0; "$CTL" check --admin "$B" --manifests "$(manifests_dir)" --from shop/client --to web:80 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "check with both --admin and --manifests: exit $rc, want 2"

log "connections: the held connection names its service and deciding resource"
in_pod shop/client bash -c 'exec 3<>/dev/tcp/10.96.10.10/80; echo hi >&3; sleep 4' &
BG_PIDS+=($!)
sleep 1.5
"$CTL" connections --admin "$B" -o json >"$WORK/conns-b.json" || fail "connections on node-b"
"$CTL" connections --admin "$A" -o json >"$WORK/conns-a.json" || fail "connections on node-a"
python3 - "$WORK/conns-b.json" "$WORK/conns-a.json" <<'PY' || fail "connections: $(cat "$WORK/conns-b.json" "$WORK/conns-a.json")"
import json, sys
out = [c for c in json.load(open(sys.argv[1]))["connections"] if c["direction"] == "outbound"]
assert out, "no outbound connection on node-b"
o = out[0]
assert o["destination_service"] == "web.shop.svc.cluster.local", o
assert o["decided_by"] == "auto mTLS (ISTIO_MUTUAL)", o
inn = [c for c in json.load(open(sys.argv[2]))["connections"] if c["direction"] == "inbound"]
assert inn, "no inbound connection on node-a"
i = inn[0]
assert i["destination_service"] == "web.shop.svc.cluster.local", i
assert i["decided_by"] == "PeerAuthentication/shop/default (STRICT)", i
assert i["source_identity"] == "spiffe://cluster.local/ns/shop/sa/client", i
PY
"$CTL" connections --admin "$B" -o wide

log "/capture: programs with their links, maps with their fill"
curl -sf --unix-socket "$WORK/admin-node-a.sock" http://agent/capture >"$WORK/capture.json" || fail "GET /capture"
python3 - "$WORK/capture.json" <<'PY' || fail "capture JSON: $(cat "$WORK/capture.json")"
import json, os, sys
c = json.load(open(sys.argv[1]))
assert c["error"] is None, c["error"]
progs = {p["attach_type"]: p for p in c["programs"]}
shortcut = os.environ.get("E2E_POD_LEG_SHORTCUT", "off") != "off"
assert set(progs) == {"cgroup/connect4", "cgroup/connect6", "sockops", "sk_lookup"} | ({"sk_msg"} if shortcut else set()), set(progs)
for p in progs.values():
    assert p["id"] > 0 and p["name"].startswith("ml_") and p["type"], p
for hook in ["cgroup/connect4", "cgroup/connect6"] + ([] if shortcut else ["sockops"]):
    assert progs[hook]["attachments"] == 1 and progs[hook]["links"][0]["target"].startswith("cgroup "), progs[hook]
assert progs["cgroup/connect4"]["type"] == "cgroup_sock_addr", progs["cgroup/connect4"]
# One sk_lookup link per served pod's netns: web only on node-a.
assert progs["sk_lookup"]["attachments"] == 1, progs["sk_lookup"]
assert progs["sk_lookup"]["links"][0]["target"].startswith("netns "), progs["sk_lookup"]
maps = {m["name"]: m for m in c["maps"]}
assert set(maps) == {"ml_pod_cgroups", "ml_pod_addrs", "ml_ports", "ml_listeners", "ml_inflight", "ml_orig_dst", "ml_counters",
                     "ml_pod_legs", "ml_leg_socks", "ml_leg_marks"}, set(maps)
assert maps["ml_pod_legs"]["type"] == "sockhash" and maps["ml_leg_marks"]["entries"] is None, maps
if shortcut:  # the pods root and the agent's own cgroup
    assert progs["sockops"]["attachments"] == 2, progs["sockops"]
    assert progs["sk_msg"]["links"][0]["target"] == "map ml_pod_legs", progs["sk_msg"]
assert maps["ml_pod_cgroups"]["entries"] == 1 and maps["ml_pod_cgroups"]["max_entries"] == 4096, maps["ml_pod_cgroups"]
assert maps["ml_counters"]["entries"] is None and maps["ml_counters"]["type"] == "percpu_array"
assert maps["ml_listeners"]["type"] == "sockhash" and maps["ml_listeners"]["entries"] >= 1
assert c["counters"]["lookup_steered"] >= 1, c["counters"]
PY

log "metrics: engine, capture and certificate families, accepted by promtool"
ip netns exec "$(node_field node-b netns)" curl -s http://127.0.0.1:15020/metrics >"$WORK/metrics.txt" || fail "metrics endpoint"
promtool check metrics <"$WORK/metrics.txt" || fail "promtool rejected the metrics"
python3 - "$WORK/metrics.txt" <<'PY' || fail "metrics values"
import re, sys
samples = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    name, value = line.rsplit(" ", 1)
    samples[name] = float(value)
def get(name):
    assert name in samples, (name, [k for k in samples if k.startswith(name.split("{")[0])])
    return samples[name]
assert get("meshlock_engine_connections_accepted_total") >= 2
# HBONE pools a pod's connections to one destination: one handshake may carry them all.
assert get('meshlock_engine_handshakes_total{result="success"}') >= 1
assert get('meshlock_engine_bytes_total{direction="to_upstream"}') >= 65536
assert get('meshlock_capture_events_total{event="connect_captured"}') >= 2
assert get('meshlock_capture_redirects_total{hook="connect"}') >= 2
assert get('meshlock_capture_programs_attached{program="cgroup/connect4"}') == 1
assert get('meshlock_capture_map_capacity{map="ml_pod_cgroups"}') == 4096
assert get('meshlock_capture_map_entries{map="ml_pod_cgroups"}') == 1  # shop/client only
PY

log "the admin socket refuses a non-root user"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
rc=0; as_nobody "$CTL" status --admin "$A" >/dev/null 2>"$WORK/nobody.err" || rc=$?
[ "$rc" = 1 ] || fail "nobody reached the admin socket (exit $rc)"
# Past the file mode (a looser directory and socket), SO_PEERCRED still says no.
chmod 0711 "$WORK"; chmod 0666 "$WORK/admin-node-a.sock"
rc=0; as_nobody "$CTL" status --admin "$A" >/dev/null 2>"$WORK/nobody.err" || rc=$?
chmod 0700 "$WORK"; chmod 0600 "$WORK/admin-node-a.sock"
[ "$rc" = 1 ] && grep -q 403 "$WORK/nobody.err" || fail "SO_PEERCRED check: exit $rc, $(cat "$WORK/nobody.err")"
"$CTL" status --admin "$A" >/dev/null || fail "root lost access to the admin socket"

log "graph -o svg renders a valid SVG"
"$CTL" graph --admin "$A" -o svg >"$WORK/graph.svg" || fail "graph -o svg"
xmllint --noout "$WORK/graph.svg" || fail "graph SVG is not well-formed XML"
python3 -c 'import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); assert r.tag.endswith("svg"), r.tag' \
  "$WORK/graph.svg" || fail "graph output is not an <svg> document"

log "completion and --help know the new command"
"$CTL" completion bash | grep -q 'policy) words="' || fail "completion lacks policy"
"$CTL" policy --help | grep -q -- '--admin' || fail "policy --help"
log "done"
