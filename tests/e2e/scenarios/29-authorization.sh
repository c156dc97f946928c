#!/usr/bin/env bash
# Scenario 29 (issue 15): Istio AuthorizationPolicy enforced by the agent that
# terminates the connection, with real clients, changed live with kubectl:
# namespace isolation (only shop's principals; plaintext has none), a DENY by
# principal, a port-scoped ALLOW, an ipBlocks rule for plaintext clients.
# Each refusal is seen in meshlockctl refused (with the policy), in
# meshlock_authorization_denied_total and in Istio's istio_tcp_connections_*
# with response_flags="DENY", as ztunnel reports it. A live change closes an
# established connection the new policy denies, and keeps one it allows.
E2E_NAME=s29
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
serve shop/web 9090

policy() {  # policy NAME SPEC: an AuthorizationPolicy in shop, applied with kubectl
  printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: shop}\nspec: %s\n' \
    "$1" "$2" >"$WORK/authz-$1.yaml"
  apply "$WORK/authz-$1.yaml"
}
unpolicy() { kubectl_admin delete -f "$WORK/authz-$1.yaml" >/dev/null; "$MESHSIM" apiserver flush --name "$RUN" >/dev/null; sleep 1.2; }

log "no policy: everyone reaches web"
expect_ok shop/client web.shop.svc.cluster.local:80
expect_ok legacy/client web.shop.svc.cluster.local:80

log "namespace isolation: only principals of shop"
policy same-namespace '{rules: [{from: [{source: {namespaces: [shop]}}]}]}'
expect_ok shop/client web.shop.svc.cluster.local:80
expect_refused legacy/client web.shop.svc.cluster.local:80   # plaintext: no principal, no namespace
"$CTL" check --manifests "$(manifests_dir)" --from legacy/client --to web.shop.svc.cluster.local:80 -o json \
  >"$WORK/check-legacy.json"
python3 - "$WORK/check-legacy.json" <<'PY' || fail "check does not show the authorization decision: $(cat "$WORK/check-legacy.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["authorization"] == "deny", r
assert r["authorization_policy"] is None, r
PY

log "DENY by principal, beside the ALLOW"
policy deny-client '{action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]}'
expect_refused shop/client web.shop.svc.cluster.local:80
unpolicy deny-client
expect_ok shop/client web.shop.svc.cluster.local:80
unpolicy same-namespace

log "port-scoped ALLOW: only 9090"
policy metrics-only '{rules: [{to: [{operation: {ports: ["9090"]}}]}]}'
expect_refused shop/client web.shop.svc.cluster.local:80
expect_ok shop/client web.shop.svc.cluster.local:9090
unpolicy metrics-only

log "ipBlocks for plaintext clients: legacy/client's address only"
policy from-legacy-client '{rules: [{from: [{source: {ipBlocks: [10.244.2.20/32]}}]}]}'
expect_ok legacy/client web.shop.svc.cluster.local:80
expect_refused legacy/db web.shop.svc.cluster.local:80
expect_refused shop/client web.shop.svc.cluster.local:80    # 10.244.2.10
unpolicy from-legacy-client

log "a live change closes an established connection the new policy denies (as ztunnel does)"
held_echo kept shop/client; kept_pid=$HELD_PID
policy allow-shop '{rules: [{from: [{source: {namespaces: [shop]}}]}]}'   # still allows it
touch "$WORK/kept.go"
wait "$kept_pid" || fail "a connection the new policy still allows was closed (exit $?)"
held_echo cut shop/client; cut_pid=$HELD_PID
policy deny-client-live '{action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]}'
touch "$WORK/cut.go"
rc=0; wait "$cut_pid" || rc=$?
[ "$rc" != 0 ] || fail "the established connection survived a policy that denies it"
grep -q "no longer allowed after a policy change" "$WORK/agent-node-a.log" || fail "the agent does not say it closed it"
unpolicy deny-client-live
unpolicy allow-shop

log "what the agent on node-a says about the refusals"
"$CTL" refused --admin "unix:$WORK/admin-node-a.sock" -o json >"$WORK/refused.json"
python3 - "$WORK/refused.json" <<'PY' || fail "meshlockctl refused does not name the policy: $(head -c 2000 "$WORK/refused.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
text = json.dumps(doc["refused"])
assert "denied" in text, text[:500]
assert "shop/deny-client" in text, "the DENY policy is named"
assert "ALLOW policies apply, none matched" in text
PY
metrics=$(nsenter --net="$(node_field node-a netnsPath)" curl -s http://127.0.0.1:15020/metrics)
grep -q 'meshlock_authorization_denied_total{namespace="shop",workload="web",policy="shop/deny-client"} [1-9]' <<<"$metrics" ||
  fail "no meshlock_authorization_denied_total for shop/deny-client: $(grep authorization_denied <<<"$metrics")"
grep -q 'meshlock_authorization_denied_total{namespace="shop",workload="web",policy="none"} [1-9]' <<<"$metrics" ||
  fail "no meshlock_authorization_denied_total for ALLOW-none-matched"
grep -q 'istio_tcp_connections_closed_total{.*response_flags="DENY".*} [1-9]' <<<"$metrics" ||
  fail "no istio_tcp_connections_closed_total with response_flags=DENY"
log "done"
