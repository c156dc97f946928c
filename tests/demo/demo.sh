#!/usr/bin/env bash
# `make demo`: two simulated nodes (meshsim), one meshlock agent per node, the
# mesh's CA service (the only CA key), an enrolled namespace (shop) and a legacy one. Real traffic between pods, the
# wire seen with tshark, and meshlockctl's explanation of every flow.
#   bash tests/demo/demo.sh [BUILD_DIR] [--keep]
set -euo pipefail
build=$(realpath "${1:-build}")
keep=0
[ "${2:-}" = --keep ] && keep=1
here=$(cd "$(dirname "$0")" && pwd)
export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=demo
source "$here/../e2e/lib/cluster.sh"
if [ "$keep" = 1 ]; then trap - EXIT; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Two simulated nodes, a meshlock agent on each reading meshsim's Kubernetes API (run $RUN)"
cluster_up "$here/spec.yaml"
"$MESHSIM" status --name "$RUN"
grep -h "ready:" "$WORK"/agent-*.log | sed 's/^/  agent: /'
# What a user types: kubectl with the run's admin kubeconfig.
export KUBECONFIG
KUBECONFIG=$("$MESHSIM" kubeconfig --name "$RUN")
kc() { printf '   $ kubectl %s\n' "$*"; "$KUBECTL" "$@" | sed 's/^/   /'; }
kc get pods -A -o wide

say "Enrol namespace shop: one label"
kc label namespace shop meshlock.io/mtls=enabled
"$MESHSIM" apiserver flush --name "$RUN" >/dev/null
for _ in $(seq 50); do [ "$(grep -c "serving pod" "$WORK"/agent-*.log | awk -F: '{s+=$2} END {print s}')" -ge 2 ] && break; sleep 0.1; done
grep -h "serving pod" "$WORK"/agent-*.log | sed 's/^/  agent: /'

say "Servers: shop/web on :8080 (enrolled namespace), legacy/db on :5432 (not enrolled)"
serve shop/web 8080
serve legacy/db 5432
fabric=$(status_json | python3 -c "import json,sys; print(json.load(sys.stdin)['fabricNetns'])")

flow() {  # flow FROM TARGET: 64 KiB echoed through whatever the mesh does, the wire, the reason
  local from=$1 to=$2 pcap="$WORK/flow.pcap" dump records result
  ip netns exec "$fabric" tcpdump -Z root --immediate-mode -i any -U -w "$pcap" tcp 2>"$WORK/td.log" &
  dump=$!
  for _ in $(seq 50); do grep -q "listening on" "$WORK/td.log" && break; sleep 0.1; done
  if send "$from" "$to"; then result="64 KiB echoed intact"; else result="REFUSED (connection closed)"; fi
  sleep 1; kill "$dump"; wait "$dump" 2>/dev/null || true
  records=$(tshark -r "$pcap" -d tcp.port==8080,tls -d tcp.port==5432,tls -Y 'tls.handshake.type == 1' 2>/dev/null | wc -l)
  printf '\n-- %s -> %s: %s; on the node link: %s\n' "$from" "$to" "$result" \
    "$([ "$records" -gt 0 ] && echo "TLS (ClientHello seen)" || echo "no TLS")"
  "$CTL" check --manifests "$(manifests_dir)" --from "$from" --to "$to" | sed 's/^/   /'
}

say "Default policy: PERMISSIVE, auto mTLS"
flow shop/client web.shop.svc.cluster.local:80
flow legacy/client web.shop.svc.cluster.local:80
flow shop/client db.legacy.svc.cluster.local:5432

say "Apply seed 003's namespace STRICT PeerAuthentication to shop (live, no restart)"
kc apply -f "$here/strict.yaml"
"$MESHSIM" apiserver flush --name "$RUN" >/dev/null
sleep 1.2
flow shop/client web.shop.svc.cluster.local:80
flow legacy/client web.shop.svc.cluster.local:80

say "What the agent on node-a saw: the service graph from its Istio metrics (Kiali's lock)"
"$CTL" graph --admin "unix:$WORK/admin-node-a.sock" || true

say "What it refused, and why (meshlockctl refused)"
"$CTL" refused --admin "unix:$WORK/admin-node-a.sock" || true

say "Where its certificates come from: meshlock's CA (meshlock-agent ca), the only holder of the CA key"
"$CTL" certs --admin "unix:$WORK/admin-node-a.sock" || true
printf '   CA keys in the agents'"'"' state directories: %s\n' \
  "$(find "$WORK"/state-node-* -name '*key*.pem' 2>/dev/null | wc -l)"
grep -h "ca: issued" "$WORK/ca.log" | head -4 | sed 's/^/  ca: /'

say "Its status"
"$CTL" status --admin "unix:$WORK/admin-node-a.sock" || true

say "What validate says about this mesh"
"$CTL" validate --manifests "$(manifests_dir)" || true

say "The kernel this runs on"
"$CTL" doctor | head -20 || true

if [ "$keep" = 1 ]; then
  say "Kept running. Explore, then clean up:"
  echo "  $MESHSIM status --name $RUN"
  echo "  KUBECONFIG=$KUBECONFIG $KUBECTL get peerauthentications -A"
  echo "  $MESHSIM exec --name $RUN shop/client -- $PEER send --to web.shop.svc.cluster.local:80 --bytes 1000"
  echo "  $CTL explain --manifests $(manifests_dir) shop/web"
  echo "  $CTL connections --watch --admin unix:$WORK/admin-node-a.sock"
  echo "  $CTL policy shop/web --admin unix:$WORK/admin-node-a.sock"
  echo "  agent logs: $WORK/agent-*.log"
  echo "  kill ${AGENT_PIDS[*]} ${BG_PIDS[*]}; $AGENT uninstall --pin-dir $(pin_dir node-a); $AGENT uninstall --pin-dir $(pin_dir node-b); $MESHSIM down --name $RUN"
fi
