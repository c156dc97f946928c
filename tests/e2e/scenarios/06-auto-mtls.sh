#!/usr/bin/env bash
# Scenario 6 (seed 003, auto mTLS): with no DestinationRule, enrolled →
# non-enrolled is plaintext and enrolled → enrolled is mTLS (a STRICT server
# accepts it); with enableAutoMtls off, enrolled → enrolled is plaintext
# (so STRICT refuses it) until a DestinationRule asks for ISTIO_MUTUAL.
E2E_NAME=s06
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
serve legacy/db 5432

apply "$HERE/manifests/shop-strict.yaml"

log "auto mTLS on: to a non-enrolled server plaintext, to an enrolled STRICT server mTLS"
expect_ok shop/client db.legacy.svc.cluster.local:5432
expect_ok shop/client web.shop.svc.cluster.local:80

cat >"$WORK/istio-off.yaml" <<'YAML'
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec:
  namespace: istio-system
  values:
    meshConfig: {trustDomain: cluster.local, enableAutoMtls: false}
YAML
apply "$WORK/istio-off.yaml"
log "auto mTLS off, no rule: plaintext, refused by STRICT"
expect_refused shop/client web.shop.svc.cluster.local:80
expect_ok shop/client db.legacy.svc.cluster.local:5432

cat >"$WORK/dr.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: enable-mtls, namespace: shop}
spec:
  host: "*.shop.svc.cluster.local"
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
YAML
apply "$WORK/dr.yaml"
log "auto mTLS off, ISTIO_MUTUAL rule for *.shop (seed 003 scenario 4): mTLS again"
expect_ok shop/client web.shop.svc.cluster.local:80
log "done"
