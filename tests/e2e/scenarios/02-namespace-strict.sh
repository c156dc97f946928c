#!/usr/bin/env bash
# Scenario 2 (seed 003, PeerAuthentication for a namespace): under STRICT,
# legacy → enrolled is refused and counted; enrolled → enrolled still works;
# the change applies live, with no agent restart.
E2E_NAME=s02
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080

log "before STRICT: both clients get through"
expect_ok shop/client web.shop.svc.cluster.local:80
expect_ok legacy/client web.shop.svc.cluster.local:80

apply "$HERE/manifests/shop-strict.yaml"

log "STRICT: legacy (plaintext) refused, by ClusterIP and by pod IP"
expect_refused legacy/client web.shop.svc.cluster.local:80
expect_refused legacy/client 10.244.1.10:8080
log "STRICT: enrolled → enrolled still mTLS"
expect_ok shop/client web.shop.svc.cluster.local:80
expect_ok shop/client 10.244.1.10:8080
log "done"
