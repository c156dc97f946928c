#!/usr/bin/env bash
# Scenario 7 (seed 003, minimum TLS version): with meshMTLS.minProtocolVersion
# TLSV1_3, a TLS 1.2 handshake to an enrolled pod fails even with a valid mesh
# certificate; TLS 1.3 with the same certificate succeeds. openssl s_client is
# the independent peer, from a pod meshlock does not serve. Lowering the
# minimum to TLSV1_2 live lets new TLS 1.2 handshakes through, and raising it
# again refuses them, without restarting the agent.
E2E_NAME=s07
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
sed 's/meshConfig: {trustDomain: cluster.local}/meshConfig: {trustDomain: cluster.local, meshMTLS: {minProtocolVersion: TLSV1_3}}/' \
  "$HERE/cluster.yaml" >"$WORK/cluster.yaml"
grep -q TLSV1_3 "$WORK/cluster.yaml" || die "could not set minProtocolVersion in the spec"
cluster_up "$WORK/cluster.yaml"
serve shop/web 8080

# A valid mesh certificate for legacy/client's service account, from the mesh CA.
mesh_leaf leaf spiffe://cluster.local/ns/legacy/sa/default

handshake() {  # handshake VERSION_FLAG: 0 when the handshake completes
  echo | in_pod legacy/client timeout 5 openssl s_client -connect 10.244.1.10:8080 "$1" \
    -cert "$WORK/leaf.pem" -cert_chain "$WORK/ca/ca-cert.pem" -key "$WORK/leaf-key.pem" -CAfile "$WORK/ca/root-cert.pem" \
    -alpn istio >"$WORK/s_client$1.log" 2>&1
  grep -q "^Protocol *: TLSv1\|New, TLSv1" "$WORK/s_client$1.log" && ! grep -q "alert\|error" "$WORK/s_client$1.log"
}

if handshake -tls1_2; then fail "a TLS 1.2 handshake succeeded under minProtocolVersion TLSV1_3: $(tail -5 "$WORK/s_client-tls1_2.log")"; fi
handshake -tls1_3 || fail "a TLS 1.3 handshake failed: $(tail -5 "$WORK/s_client-tls1_3.log")"
expect_ok shop/client web.shop.svc.cluster.local:80

mesh_min_version() {  # the mesh's Istio resource with another minProtocolVersion
  cat >"$WORK/istio-$1.yaml" <<EOF
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec:
  namespace: istio-system
  values:
    meshConfig: {trustDomain: cluster.local, meshMTLS: {minProtocolVersion: $1}}
EOF
  apply "$WORK/istio-$1.yaml"
}
log "minProtocolVersion TLSV1_2 applied live: TLS 1.2 accepted"
mesh_min_version TLSV1_2
handshake -tls1_2 || fail "TLS 1.2 still refused after lowering the minimum live: $(tail -5 "$WORK/s_client-tls1_2.log")"
log "TLSV1_3 again, live: TLS 1.2 refused"
mesh_min_version TLSV1_3
if handshake -tls1_2; then fail "TLS 1.2 accepted after raising the minimum live"; fi
handshake -tls1_3 || fail "TLS 1.3 refused after raising the minimum live"
expect_ok shop/client web.shop.svc.cluster.local:80
log "done"
