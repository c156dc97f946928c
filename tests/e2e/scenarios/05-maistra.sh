#!/usr/bin/env bash
# Scenario 5 (seed 000, Mesh 2.x): ServiceMeshControlPlane v1
# spec.istio.global.mtls.enabled and the authentication.maistra.io/v1 Policy
# with peers: [mtls: {}] have the effects of their 3.x equivalents.
E2E_NAME=s05
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
serve legacy/db 5432

cat >"$WORK/smcp.yaml" <<'YAML'
apiVersion: maistra.io/v1
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec:
  istio:
    global:
      mtls:
        enabled: true
YAML
apply "$WORK/smcp.yaml"
log "SMCP v1 global mTLS: mesh-wide STRICT and ISTIO_MUTUAL for *.local"
expect_refused legacy/client web.shop.svc.cluster.local:80
expect_ok shop/client web.shop.svc.cluster.local:80
expect_refused shop/client db.legacy.svc.cluster.local:5432
kubectl_admin delete -f "$WORK/smcp.yaml" >/dev/null; "$MESHSIM" apiserver flush --name "$RUN" >/dev/null; sleep 1.2

cat >"$WORK/policy.yaml" <<'YAML'
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: default, namespace: shop}
spec:
  peers:
  - mtls: {}
YAML
apply "$WORK/policy.yaml"
log "Maistra Policy peers: [mtls: {}]: namespace STRICT"
expect_refused legacy/client web.shop.svc.cluster.local:80
expect_ok shop/client web.shop.svc.cluster.local:80
expect_ok shop/client db.legacy.svc.cluster.local:5432

sed 's/  - mtls: {}/  - mtls: {mode: PERMISSIVE}/' "$WORK/policy.yaml" >"$WORK/permissive.yaml"
apply "$WORK/permissive.yaml"
log "Maistra Policy mtls mode PERMISSIVE"
expect_ok legacy/client web.shop.svc.cluster.local:80
log "done"
