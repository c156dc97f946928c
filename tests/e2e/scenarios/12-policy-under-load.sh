#!/usr/bin/env bash
# Scenario 12 (policy change while traffic flows): STRICT applied while
# transfers are in flight refuses new plaintext connections within a second;
# every transfer already running (plaintext and mTLS) completes byte-exact.
E2E_NAME=s12
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
serve shop/web 8080

bytes=$((256 * 1024 * 1024))
pids=()
for from in shop/client legacy/client shop/client legacy/client; do
  in_pod "$from" "$PEER" send --to 10.244.1.10:8080 --bytes "$bytes" --timeout 60 >"$WORK/bulk-${#pids[@]}.log" 2>&1 &
  pids+=($!)
done
sleep 0.3
running=0
for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
[ "$running" -gt 0 ] || fail "the transfers ended before the policy change: the test proves nothing"
log "$running transfers in flight when STRICT is applied"

kubectl_admin apply -f "$HERE/manifests/shop-strict.yaml" >/dev/null
applied=$(date +%s%N)
refused_after=""
for _ in $(seq 40); do
  if ! in_pod legacy/client "$PEER" send --to 10.244.1.10:8080 --bytes 1024 --timeout 2 >/dev/null 2>&1; then
    refused_after=$(( ($(date +%s%N) - applied) / 1000000 ))
    break
  fi
done
[ -n "$refused_after" ] || fail "plaintext was never refused after STRICT"
log "new plaintext refused ${refused_after} ms after the change"
[ -n "$refused_after" ] && [ "$refused_after" -le 1500 ] || fail "refusal took ${refused_after} ms (want within about a second)"

for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || fail "transfer $i in flight during the change failed: $(cat "$WORK/bulk-$i.log")"
  grep -q " ok$" "$WORK/bulk-$i.log" || fail "transfer $i not intact: $(cat "$WORK/bulk-$i.log")"
done
expect_ok shop/client 10.244.1.10:8080
log "done"
