#!/usr/bin/env bash
# Issue 12's fault tests of the agent's Kubernetes source, on meshsim's API
# server (the agents read it with their own token and RBAC):
# - watches the server closes every 3 s: resumed, serving goes on, a change
#   still arrives;
# - a forced 410 (history compacted): the agent relists and applies only the
#   difference, no pod is served again;
# - a malformed object: skipped with a warning naming it, the rest of the
#   same apply takes effect;
# - a CRD that is not installed (DestinationRule's removed): the kind is
#   empty, the agent stays ready, and finds it again when it is back;
# - the API server stopped for 20 s: established and new connections carry
#   on under the last policy, /status says how stale it is; restarted, a
#   change made right after is picked up.
E2E_NAME=s26
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
[ "${E2E_SOURCE:-api}" = api ] || die "this scenario tests the Kubernetes source"
cluster_up "$HERE/cluster.yaml"
# The echo server keeps idle connections past the 20 s outage (default 30 s).
in_pod shop/web "$PEER" serve --port 8080 --idle-timeout 300 >>"$WORK/serve-web.log" 2>&1 &
BG_PIDS+=($!)
wait_listening shop/web 8080 || die "the echo server did not start"
A="unix:$WORK/admin-node-a.sock"
source_field() { "$CTL" status --admin "$A" -o json | python3 -c "import json,sys; s=json.load(sys.stdin)['source']; print($1)"; }
kind_field() { source_field "[k for k in s['kinds'] if k['name'] == '$1'][0]['$2']"; }
served_web() { grep -c "serving pod shop/web" "$WORK/agent-node-a.log" || true; }
wait_for() {  # wait_for SECONDS 'SHELL CONDITION': until it holds (evaluated each time)
  local until=$(( $(date +%s) + $1 )); shift
  while ! eval "$1" 2>/dev/null; do [ "$(date +%s)" -lt "$until" ] || return 1; sleep 0.2; done
}
strict_refuses() { ! send legacy/client 10.244.1.10:8080; }
plaintext_passes() { send legacy/client 10.244.1.10:8080; }

[ "$(source_field "s['kind']")" = kubernetes ] || die "the agent does not read the API: $(source_field s)"
[ "$(source_field "s['synced']")" = True ] || fail "source not synced at ready"
expect_ok legacy/client 10.244.1.10:8080

log "watches closed by the server every 3 s: resumed, and a change still arrives"
"$MESHSIM" apiserver set --name "$RUN" watchCloseAfterSeconds=3 >/dev/null
before=$(kind_field peerauthentications reconnects)
sleep 7
after=$(kind_field peerauthentications reconnects)
[ "$after" -gt "$before" ] || fail "no watch was resumed in 7 s (reconnects $before -> $after)"
kubectl_admin apply -f "$HERE/manifests/shop-strict.yaml" >/dev/null
wait_for 5 strict_refuses || fail "STRICT applied during watch closes did not take effect in 5 s"
"$MESHSIM" apiserver set --name "$RUN" watchCloseAfterSeconds=0 >/dev/null

log "a forced 410: relisted, only the difference applied, no pod served again"
served=$(served_web)
relists=$(kind_field pods.local relists)
"$MESHSIM" apiserver compact --name "$RUN" >/dev/null
kubectl_admin label namespace legacy touched=yes >/dev/null  # an event after the compaction
wait_for 20 '[ "$(kind_field pods.local relists)" -gt "$relists" ]' ||
  fail "no relist after the compaction: $(source_field "[k for k in s['kinds'] if k['name'] == 'pods.local']")"
sleep 1
[ "$(served_web)" = "$served" ] || fail "shop/web was served again after the relist ($served -> $(served_web))"
strict_refuses || fail "STRICT lost across the relist"

log "a malformed object is skipped by name; the rest of the apply takes effect"
cat >"$WORK/mixed.yaml" <<'EOF'
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: broken, namespace: legacy}
spec:
  mtls: {mode: STRICTEST}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: PERMISSIVE}
EOF
kubectl_admin apply -f "$WORK/mixed.yaml" >/dev/null
wait_for 5 plaintext_passes || fail "the valid PERMISSIVE beside a malformed object did not take effect"
grep -q "skipping a malformed object.*broken" "$WORK/agent-node-a.log" ||
  fail "no warning naming the malformed object: $(grep -i malformed "$WORK/agent-node-a.log" | tail -3)"
[ "$("$CTL" status --admin "$A" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ready"])')" = True ] ||
  fail "not ready after a malformed object"

log "DestinationRule's CRD removed: the kind is empty, the agent stays ready; back when the CRD is"
kubectl_admin get crd destinationrules.networking.istio.io -o yaml >"$WORK/dr-crd.yaml"
kubectl_admin delete crd destinationrules.networking.istio.io >/dev/null
wait_for 30 '[ "$(kind_field destinationrules state)" = absent ]' ||
  fail "DestinationRule not absent: $(source_field "[k for k in s['kinds'] if k['name'] == 'destinationrules']")"
[ "$(source_field "s['synced']")" = True ] || fail "an absent CRD made the source unsynced"
python3 - "$WORK/dr-crd.yaml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
for k in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
    d["metadata"].pop(k, None)
d.pop("status", None)
yaml.safe_dump(d, open(sys.argv[1], "w"))
PY
kubectl_admin apply -f "$WORK/dr-crd.yaml" >/dev/null || fail "could not apply the CRD again"
# The agent looks for a missing CRD again every 30 s.
wait_for 45 '[ "$(kind_field destinationrules state)" = listed ]' ||
  fail "DestinationRule not found again within 45 s of its CRD's return: $(kind_field destinationrules state)"

log "the API server stopped for 20 s: serving goes on under the last policy"
kubectl_admin apply -f "$HERE/manifests/shop-strict.yaml" >/dev/null
wait_for 5 strict_refuses || fail "STRICT again did not take effect"
# An mTLS connection from shop/client that echoes a line now and another
# after the outage (up to 60 s): exits 0 only if both came back.
in_pod shop/client bash -c "exec 3<>/dev/tcp/10.96.10.10/80 || exit 1
  echo one >&3; read -t 3 a <&3 || exit 2; [ \"\$a\" = one ] || exit 3
  touch $WORK/held.open
  for i in \$(seq 600); do [ -e $WORK/held.go ] && break; sleep 0.1; done
  echo two >&3; read -t 3 b <&3 || exit 4; [ \"\$b\" = two ] || exit 5" >"$WORK/held.log" 2>&1 &
held=$!
BG_PIDS+=($held)
for _ in $(seq 50); do [ -e "$WORK/held.open" ] && break; sleep 0.1; done
[ -e "$WORK/held.open" ] || fail "the held connection did not open"
"$MESHSIM" apiserver stop --name "$RUN" >/dev/null
stopped=$(date +%s)
sleep 5
[ "$(source_field "s['connected']")" = False ] || fail "the agent does not see the API server gone"
expect_ok shop/client 10.96.10.10:80
strict_refuses || fail "STRICT not enforced while the API server is away"
while [ $(( $(date +%s) - stopped )) -lt 20 ]; do sleep 1; done
stale=$(source_field "s['staleness_seconds']")
python3 -c "import sys; sys.exit(0 if float('$stale') >= 15 else 1)" || fail "staleness $stale s after 20 s away"
# (into a variable first: grep -q would end the pipe early, and pipefail fail it)
metrics=$(ip netns exec "$(node_field node-a netns)" curl -s http://127.0.0.1:15020/metrics || true)
grep -q '^meshlock_config_source_last_sync_age_seconds [1-9]' <<<"$metrics" ||
  fail "no staleness metric: $(grep meshlock_config_source_last_sync <<<"$metrics")"
"$MESHSIM" apiserver start --name "$RUN" >/dev/null
kubectl_admin apply -f "$WORK/mixed.yaml" >/dev/null  # shop back to PERMISSIVE
wait_for 30 plaintext_passes || fail "a change right after the API server's return was not picked up in 30 s"
touch "$WORK/held.go"
wait "$held" || fail "the connection held across the outage broke (exit $?)"
wait_for 60 '[ "$(source_field "s[\"connected\"]")" = True ]' || fail "not reconnected 60 s after the API server's return"
log "done"
