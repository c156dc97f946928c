#!/usr/bin/env bash
# Scenario 3 (seed 003, the whole mesh): STRICT in the root namespace plus
# ISTIO_MUTUAL for *.local breaks calls to servers without a proxy; the seed's
# DISABLE DestinationRule for kubernetes.default.svc.cluster.local makes the
# API server (here openssl s_server behind a selector-less service) reachable
# again, the client's own TLS passing through meshlock untouched.
E2E_NAME=s03
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
serve legacy/db 5432

# The fake API server's own certificate, from a CA that is not the mesh's.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=kubernetes" \
  -addext "subjectAltName=DNS:kubernetes.default.svc.cluster.local,DNS:kubernetes.default.svc" \
  -keyout "$WORK/api-key.pem" -out "$WORK/api-cert.pem" 2>/dev/null
in_pod default/apiserver timeout 60 openssl s_server -accept 6443 -www -cert "$WORK/api-cert.pem" \
  -key "$WORK/api-key.pem" >"$WORK/apiserver.log" 2>&1 &
BG_PIDS+=($!)
sleep 1
api() { in_pod shop/client curl -s --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$WORK/api-cert.pem" \
  https://kubernetes.default.svc.cluster.local/; }

cat >"$WORK/mesh.yaml" <<'YAML'
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec:
  host: "*.local"
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
YAML
apply "$WORK/mesh.yaml"

log "mesh-wide STRICT + *.local ISTIO_MUTUAL"
expect_ok shop/client web.shop.svc.cluster.local:80
expect_refused legacy/client web.shop.svc.cluster.local:80
expect_refused shop/client db.legacy.svc.cluster.local:5432
code=$(api) || true
[ "$code" != 200 ] || fail "the API server was reachable without the DISABLE rule"

cat >"$WORK/api-dr.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-server, namespace: istio-system}
spec:
  host: kubernetes.default.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
YAML
apply "$WORK/api-dr.yaml"
log "with the seed's DISABLE rule for the API server"
code=$(api) || true
[ "$code" = 200 ] || fail "the API server is still unreachable (HTTP '$code')"
expect_ok shop/client web.shop.svc.cluster.local:80
log "done"
