#!/usr/bin/env bash
# Scenario 10 (enrollment by label, live): labelling the legacy namespace
# makes its new connections mTLS (the node agent serves the pod); removing
# the label makes them plaintext again; connections established before each
# change keep working after it.
E2E_NAME=s10
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
B="unix:$WORK/admin-node-b.sock"

release() { touch "$WORK/$1.go"; wait "$2" || fail "held connection $1 broke (exit $?)"; }
mtls_from_legacy() {
  "$CTL" connections --admin "$B" -o json | python3 -c "
import json, sys
c = json.load(sys.stdin)['connections']
print(sum(1 for x in c if x['direction'] == 'outbound' and x['source_namespace'] == 'legacy' and x['source_pod'] == 'client' and x['mode'] == 'mutual_tls'))"
}
served_on_b() { "$CTL" status --admin "$B" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['pods_served'])"; }

log "not enrolled: legacy/client is not served"
[ "$(served_on_b)" = 1 ] || fail "node-b serves $(served_on_b) pods, want 1 (shop/client)"
held_echo before legacy/client; before_pid=$HELD_PID

log "enroll namespace legacy"
kubectl_admin label namespace legacy meshlock.io/mtls=enabled >/dev/null
for _ in $(seq 30); do [ "$(served_on_b)" = 2 ] && break; sleep 0.1; done
[ "$(served_on_b)" = 2 ] || fail "node-b did not start serving legacy/client"
held_echo during legacy/client; during_pid=$HELD_PID
n=$(mtls_from_legacy)
[ "$n" -ge 1 ] || fail "the new connection from legacy/client is not mTLS ($n)"
release before "$before_pid"

log "remove the label"
kubectl_admin label namespace legacy meshlock.io/mtls- >/dev/null
for _ in $(seq 30); do [ "$(served_on_b)" = 1 ] && break; sleep 0.1; done
[ "$(served_on_b)" = 1 ] || fail "node-b still serves legacy/client"
release during "$during_pid"
expect_ok legacy/client 10.244.1.10:8080
log "done"
