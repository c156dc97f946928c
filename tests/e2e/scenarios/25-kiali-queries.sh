#!/usr/bin/env bash
# Issue 12, point 5: Kiali keeps meshlock's telemetry. A real Prometheus
# (Debian's) scrapes both agents; Kiali's own namespace-graph and security
# queries, rebuilt from kiali/kiali's sources (tests/e2e/lib/kiali_graph.py),
# find the shop client -> web edge locked (mTLS) and the legacy client's
# plaintext edge without the lock. The same series with the clusters reported
# "unknown" (what meshlock exported before it had a clusterId: a second scrape
# job relabels them) are dropped by Kiali's bad-telemetry filters: no edge.
E2E_NAME=s25
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
KIALI="$HERE/../lib/kiali_graph.py"

log "an agent told clusterId \"unknown\" refuses to start (Kiali would drop all its series)"
if out=$("$AGENT" run --node x --manifests /nonexistent --cluster-id unknown 2>&1); then
  fail "agent started with --cluster-id unknown"
fi
grep -q "clusterId" <<<"$out" || fail "the refusal does not name clusterId: $out"

cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
PROM_NETNS=$(node_field node-a netns)
TARGETS=$(status_json | python3 -c "import json,sys; print(', '.join('\"%s:15020\"' % n['nodeIP'] for n in json.load(sys.stdin)['nodes']))")
in_prom_ns() { ip netns exec "$PROM_NETNS" "$@"; }

cat >"$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}
scrape_configs:
  - job_name: meshlock
    static_configs: [{targets: [$TARGETS]}]
  - job_name: meshlock-unknown-cluster
    static_configs: [{targets: [$TARGETS]}]
    metric_relabel_configs:
      - {source_labels: [source_cluster], regex: '.+', target_label: source_cluster, replacement: unknown}
      - {source_labels: [destination_cluster], regex: '.+', target_label: destination_cluster, replacement: unknown}
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null || die "promtool rejected the config"
# In node-a's network namespace, where every node's 15020 is reachable (as from
# a monitoring pod on the host network); its loopback port cannot clash with
# anything on the host.
in_prom_ns prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom-data" \
  --web.listen-address=127.0.0.1:19090 --log.level=warn >"$WORK/prometheus.log" 2>&1 &
BG_PIDS+=($!)
PROM=http://127.0.0.1:19090
up_targets() {
  in_prom_ns curl -s --max-time 1 "$PROM/api/v1/query" --data-urlencode 'query=sum(up)' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)' 2>/dev/null ||
    echo 0
}
for _ in $(seq 60); do [ "$(up_targets)" = 4 ] && break; sleep 0.25; done
[ "$(up_targets)" = 4 ] ||
  die "prometheus does not scrape the 4 targets: $(in_prom_ns curl -s --max-time 2 "$PROM/api/v1/targets"; cat "$WORK/prometheus.log")"

log "8 s of traffic: shop/client -> web (mTLS), legacy/client -> web (plaintext)"
end=$(( $(date +%s) + 8 ))
n=0
while [ "$(date +%s)" -lt "$end" ] && [ $n -lt 40 ]; do
  send shop/client 10.96.10.10:80 4096 || fail "client -> web"
  send legacy/client 10.244.1.10:8080 2048 || fail "legacy client -> web"
  n=$((n + 1))
  sleep 0.3
done
sleep 2.5  # the last scrape after the last connection

graph() { in_prom_ns /usr/bin/python3 "$KIALI" "$PROM" shop 60 "$1"; }
graph 'job="meshlock"' >"$WORK/graph.json" || die "kiali queries failed"
graph 'job="meshlock-unknown-cluster"' >"$WORK/graph-unknown.json" || die "kiali queries failed (unknown job)"
python3 - "$WORK/graph.json" "$WORK/graph-unknown.json" <<'PY' || fail "Kiali's graph: $(cat "$WORK/graph.json")"
import json, sys
g = json.load(open(sys.argv[1]))
edges = {(e["source"], e["dest"]): e for e in g["edges"]}
client, legacy = "wl_Kubernetes_shop_client", "wl_Kubernetes_legacy_client"
svc, web = "svc_Kubernetes_shop_web", "wl_Kubernetes_shop_web"
assert (client, svc) in edges and (svc, web) in edges and (legacy, svc) in edges, sorted(edges)
assert edges[(client, svc)]["tcp"] > 0 and edges[(legacy, svc)]["tcp"] > 0, edges
# the lock: every byte of client -> web was mTLS; none of legacy's
assert edges[(client, svc)].get("isMTLS") == 100, edges[(client, svc)]
assert "isMTLS" not in edges[(legacy, svc)], edges[(legacy, svc)]
assert 0 < edges[(svc, web)]["isMTLS"] < 100, edges[(svc, web)]
assert not g["skipped"], g["skipped"]
print("kiali: client -> web locked (isMTLS 100), legacy -> web plaintext; service -> web %.0f %% mTLS"
      % edges[(svc, web)]["isMTLS"])
u = json.load(open(sys.argv[2]))
assert u["edges"] == [], u["edges"]
assert any("cluster unknown" in r for r in u["skipped"]), u["skipped"]
print("kiali: with the clusters unknown every series is dropped:", u["skipped"])
PY
