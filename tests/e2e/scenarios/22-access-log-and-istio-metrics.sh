#!/usr/bin/env bash
# Per-connection telemetry on live agents (issues 7 and 8), with the agents'
# logs in JSON: every log line parses; one access line per connection says who
# talked to whom, how (mTLS with both principals, or plaintext), the bytes and
# why a refused one was refused; Istio's istio_tcp_* count the same
# connections with Kiali's labels, `meshlockctl graph` draws the lock and
# `meshlockctl refused` says which connections were refused and why.
E2E_NAME=s22
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml" --log-format json
serve shop/web 8080
A="unix:$WORK/admin-node-a.sock"
B="unix:$WORK/admin-node-b.sock"

log "three mTLS connections client -> web (service), one plaintext legacy -> web"
for i in 1 2 3; do
  send shop/client web.shop.svc.cluster.local:80 $((1000 * i)) || fail "client -> web ($((1000 * i)) bytes)"
done
send legacy/client 10.244.1.10:8080 500 || fail "legacy client -> web (plaintext)"
log "STRICT: a plaintext connection refused"
apply "$HERE/manifests/shop-strict.yaml"
expect_refused legacy/client 10.244.1.10:8080
log "a TLS client without a certificate refused"
(sleep 1; echo) | in_pod legacy/client timeout 5 openssl s_client -connect 10.244.1.10:8080 -alpn istio \
  >"$WORK/s_client-nocert.log" 2>&1 || true
# The access line and the refusal are recorded when the refused connection ends.
for _ in $(seq 50); do
  [ "$("$CTL" refused --admin "unix:$WORK/admin-node-a.sock" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')" = 2 ] && break
  sleep 0.1
done

log "meshlockctl refused: both refusals, newest first, with the policy and the reason"
"$CTL" refused --admin "$A" -o json >"$WORK/refused.json" || fail "refused failed"
python3 - "$WORK/refused.json" <<'PY' || fail "refused: $(cat "$WORK/refused.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["total"] == 2, r
cert, plain = r["refused"]
assert cert["end"] == "handshake_failed" and cert["pod"] == "shop/web", cert
assert "no_certificate" in cert["reason"] or "CERTIFICATE_REQUIRED" in cert["reason"] or "PEER_DID_NOT_RETURN" in cert["reason"], cert
assert plain["end"] == "plaintext_refused" and plain["policy"] == "STRICT", plain
assert plain["decided_by"] == "PeerAuthentication/shop/default", plain
assert plain["source_workload"] == "legacy/client", plain
PY
"$CTL" refused --admin "$A"

log "every agent log line is one JSON object; the access lines say what happened"
python3 - "$WORK/agent-node-a.log" "$WORK/agent-node-b.log" <<'PY' || fail "access log"
import json, sys
def lines(path):
    out = []
    for n, line in enumerate(open(path), 1):
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise SystemExit(f"{path}:{n}: not JSON ({e}): {line!r}")
    return out
a, b = lines(sys.argv[1]), lines(sys.argv[2])
assert any(x.get("msg", "").startswith("ready: node node-a") for x in a), "no ready line"
web = [x for x in a if x.get("type") == "access" and x["pod"] == "shop/web"]
mtls = [x for x in web if x["security"] == "mutual_tls"]
assert len(mtls) == 3, web
for x in mtls:
    assert x["direction"] == "inbound" and x["end"] == "completed", x
    assert x["source_principal"] == "spiffe://cluster.local/ns/shop/sa/client", x
    assert x["source_workload"] == "shop/client", x
    assert x["destination_principal"] == "spiffe://cluster.local/ns/shop/sa/web", x
    assert x["destination_service"] == "web.shop.svc.cluster.local", x
    assert x["tls_version"] == "TLSv1.3" and x["policy"] == "PERMISSIVE", x
assert sorted(x["bytes_to_upstream"] for x in mtls) == [1000, 2000, 3000], mtls
assert sorted(x["bytes_to_downstream"] for x in mtls) == [1000, 2000, 3000], mtls
plain = [x for x in web if x["security"] == "none" and x["end"] == "completed"]
assert len(plain) == 1 and plain[0]["source_workload"] == "legacy/client", plain
assert plain[0]["source_principal"] is None and plain[0]["bytes_to_upstream"] == 500, plain
assert len([x for x in web if x["end"] == "handshake_failed"]) == 1, web
refused = [x for x in web if x["end"] == "plaintext_refused"]
assert len(refused) == 1, web
assert refused[0]["policy"] == "STRICT", refused
assert "PeerAuthentication" in refused[0]["decided_by"] and "shop/default" in refused[0]["decided_by"], refused
assert refused[0]["source"].startswith("10.244.2.20:"), refused
out = [x for x in b if x.get("type") == "access" and x["direction"] == "outbound"]
assert len(out) == 3, out
for x in out:
    assert x["pod"] == "shop/client" and x["policy"] == "ISTIO_MUTUAL", x
    assert x["destination"] == "10.96.10.10:80" and x["destination_service"] == "web.shop.svc.cluster.local", x
    assert x["destination_principal"] == "spiffe://cluster.local/ns/shop/sa/web", x
    assert x["decided_by"] and x["end"] == "completed", x
PY

log "istio_tcp_* on both agents, parsed by promtool"
for node in node-a node-b; do
  ip netns exec "$(node_field $node netns)" curl -s http://127.0.0.1:15020/metrics >"$WORK/metrics-$node.txt" ||
    fail "metrics on $node"
  promtool check metrics <"$WORK/metrics-$node.txt" || fail "promtool rejected $node's metrics"
done
python3 - "$WORK/metrics-node-a.txt" "$WORK/metrics-node-b.txt" <<'PY' || fail "istio metrics"
import re, sys
def series(path, name):
    out = []
    for line in open(path):
        m = re.match(name + r"\{(.*)\} (\S+)$", line.strip())
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out.append((labels, float(m.group(2))))
    return out
def total(path, name, **want):
    return sum(v for l, v in series(path, name) if all(l.get(k) == w for k, w in want.items()))
a, b = sys.argv[1], sys.argv[2]
dst = dict(reporter="destination", source_workload="client", source_workload_namespace="shop",
           destination_workload="web", destination_workload_namespace="shop",
           destination_service="web.shop.svc.cluster.local",
           source_principal="spiffe://cluster.local/ns/shop/sa/client",
           destination_principal="spiffe://cluster.local/ns/shop/sa/web",
           connection_security_policy="mutual_tls")
assert total(a, "istio_tcp_connections_opened_total", **dst) == 3, series(a, "istio_tcp_connections_opened_total")
assert total(a, "istio_tcp_connections_closed_total", **dst) == 3
assert total(a, "istio_tcp_received_bytes_total", **dst) == 6000
assert total(a, "istio_tcp_sent_bytes_total", **dst) == 6000
assert total(a, "istio_tcp_connections_opened_total", reporter="destination", source_workload="client",
             source_workload_namespace="legacy", connection_security_policy="none") == 1
src = dict(dst, reporter="source")
assert total(b, "istio_tcp_connections_opened_total", **src) == 3, series(b, "istio_tcp_connections_opened_total")
assert total(a, "meshlock_plaintext_refused_total", namespace="shop", workload="web", port="8080") == 1
assert total(a, "meshlock_tls_handshakes_total", direction="inbound", result="success") == 3
assert total(b, "meshlock_tls_handshakes_total", direction="outbound", result="success") == 3
assert total(a, "meshlock_connections_total", direction="inbound", mode="mutual_tls") == 3
assert total(a, "meshlock_connections_total", direction="inbound", mode="plaintext") == 1
assert total(a, "meshlock_config_reloads_total", result="success") >= 1  # the STRICT change
assert total(a, "meshlock_tls_handshakes_total", direction="inbound", result="failure",
             reason="no_client_certificate") == 1, series(a, "meshlock_tls_handshakes_total")
assert total(a, "meshlock_active_connections") == 0  # all ended
assert total(a, "meshlock_plaintext_refused_total", port="other") == 0
assert total(a, "meshlock_engine_completions_total") > 0 and total(a, "meshlock_engine_loop_iterations_total") > 0
assert len(series(a, "meshlock_engine_loop_iterations_total")) >= 1  # one series per worker
PY

log "meshlockctl graph: client -> web locked with 3 connections"
"$CTL" graph --admin "$A" -o json >"$WORK/graph.json" || fail "graph failed"
python3 - "$WORK/graph.json" <<'PY' || fail "graph: $(cat "$WORK/graph.json")"
import json, sys
g = json.load(open(sys.argv[1]))
e = {(x["source"], x["destination"]): x for x in g["edges"]}
x = e[("shop/client", "shop/web")]
assert x["locked"] and x["connections_opened"] == 3, x
y = e[("legacy/client", "shop/web")]
assert not y["locked"] and y["connections_plaintext"] == 1, y
PY
"$CTL" graph --admin "$A"
log "done"
