#!/usr/bin/env bash
# Scenario 11 (PeerAuthentication portLevelMtls): a STRICT namespace with a
# workload policy keeping port 9090 PERMISSIVE: plaintext reaches 9090 and is
# refused on 8080; mTLS reaches both.
E2E_NAME=s11
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080
serve shop/web 9090

apply "$HERE/manifests/shop-strict-metrics-port-permissive.yaml"

expect_refused legacy/client 10.244.1.10:8080
expect_ok legacy/client 10.244.1.10:9090
expect_ok shop/client 10.244.1.10:8080
expect_ok shop/client 10.244.1.10:9090
log "done"
