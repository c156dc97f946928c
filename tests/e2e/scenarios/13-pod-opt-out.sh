#!/usr/bin/env bash
# Scenario 13 (pod opt-out, issue 6): shop/batch carries meshlock.io/mtls=disabled
# in the enrolled namespace shop. Its outbound connections are not captured
# (the payload crosses the node link in clear, the capture counters say "not
# enrolled", node-b's engine accepts nothing) and its inbound is not steered
# (its app sees the caller's own address). Removing the label live: new
# connections are captured (mTLS on the wire; inbound reaches the app through
# the agent, from the pod's own address); a connection opened before the
# change keeps working.
E2E_NAME=s13
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
B="unix:$WORK/admin-node-b.sock"

marker="MESHLOCK-MARKER-$RANDOM$RANDOM"
mkdir -p "$WORK/www" && echo "$marker" >"$WORK/www/marker.txt"
in_pod shop/web python3 -m http.server 9090 --bind 0.0.0.0 --directory "$WORK/www" >"$WORK/web-http.log" 2>&1 &
BG_PIDS+=($!)
in_pod shop/batch python3 -m http.server 7070 --bind 0.0.0.0 --directory "$WORK/www" >"$WORK/batch-http.log" 2>&1 &
BG_PIDS+=($!)
serve shop/web 8080
wait_listening shop/web 9090 || die "web's http.server did not listen: $(cat "$WORK/web-http.log")"
wait_listening shop/batch 7070 || die "batch's http.server did not listen: $(cat "$WORK/batch-http.log")"

served_on_b() { agent_status node-b 's["pods_served"]'; }
accepted_on_b() { agent_status node-b 's["connections"]["total"]'; }
# The address batch's app saw for its last request (python's access log).
batch_saw() { grep -a '"GET /marker.txt' "$WORK/batch-http.log" | tail -1 | cut -d' ' -f1; }
client_hellos() { tshark -r "$WORK/$1.pcap" -d tcp.port==9090,tls -d tcp.port==15008,tls -Y 'tls.handshake.type == 1' 2>/dev/null | wc -l; }


log "opted out: node-b serves shop/client only; meshlockctl says why batch is not"
[ "$(served_on_b)" = 1 ] || fail "node-b serves $(served_on_b) pods, want 1"
reason=$("$CTL" workloads --admin "$B" -o json | python3 -c "
import json, sys
w = {f'{x[\"namespace\"]}/{x[\"pod\"]}': x for x in json.load(sys.stdin)['workloads']}
b = w['shop/batch']
print('enrolled' if b['enrolled'] else b['enrollment_reason'])")
[[ "$reason" == *"opted out"* ]] || fail "shop/batch: workloads says '$reason', want opted out"

log "opted out: outbound is not captured (plaintext on the wire, no agent involved)"
captured0=$(capture_counter node-b connect_captured)
not_enrolled0=$(capture_counter node-b connect_not_enrolled)
accepted0=$(accepted_on_b)
body=$(wire optout in_pod shop/batch curl -s --max-time 5 http://10.244.1.10:9090/marker.txt) || true
[ "$body" = "$marker" ] || fail "batch got '$body' from web:9090, want the marker"
grep -qa "$marker" "$WORK/optout.pcap" || fail "an opted-out pod's payload did not cross the node link in clear"
[ "$(client_hellos optout)" = 0 ] || fail "a TLS ClientHello went out for an opted-out pod"
[ "$(capture_counter node-b connect_captured)" = "$captured0" ] || fail "connect_captured moved for an opted-out pod"
[ "$(capture_counter node-b connect_not_enrolled)" -gt "$not_enrolled0" ] || fail "connect_not_enrolled did not count batch's connect"
[ "$(accepted_on_b)" = "$accepted0" ] || fail "node-b's engine accepted a connection of an opted-out pod"

log "opted out: inbound is not steered (the app sees the caller's address)"
steered0=$(capture_counter node-b lookup_steered)
body=$(in_pod legacy/client curl -s --max-time 5 http://10.244.2.30:7070/marker.txt) || true
[ "$body" = "$marker" ] || fail "legacy/client got '$body' from batch:7070, want the marker"
[ "$(batch_saw)" = 10.244.2.20 ] || fail "batch's app saw the request from '$(batch_saw)', want legacy/client's 10.244.2.20"
[ "$(capture_counter node-b lookup_steered)" = "$steered0" ] || fail "lookup_steered moved for an opted-out pod"
[ "$(accepted_on_b)" = "$accepted0" ] || fail "node-b's engine accepted inbound for an opted-out pod"

held_echo before shop/batch; before_pid=$HELD_PID

log "remove the opt-out label live"
kubectl_admin label pod -n shop batch meshlock.io/mtls- >/dev/null
for _ in $(seq 30); do [ "$(served_on_b)" = 2 ] && break; sleep 0.1; done
[ "$(served_on_b)" = 2 ] || fail "node-b did not start serving shop/batch"

log "enrolled: outbound is mTLS on the wire"
captured0=$(capture_counter node-b connect_captured)
body=$(wire enrolled in_pod shop/batch curl -s --max-time 5 http://10.244.1.10:9090/marker.txt) || true
[ "$body" = "$marker" ] || fail "batch got '$body' from web:9090 after enrolling, want the marker"
grep -qa "$marker" "$WORK/enrolled.pcap" && fail "the payload crossed the node link in clear after enrolling"
[ "$(client_hellos enrolled)" -gt 0 ] || fail "no TLS ClientHello on the node link after enrolling"
[ "$(capture_counter node-b connect_captured)" -gt "$captured0" ] || fail "connect_captured did not move"

log "enrolled: inbound goes through the agent (the app sees the pod's own address)"
steered0=$(capture_counter node-b lookup_steered)
body=$(in_pod legacy/client curl -s --max-time 5 http://10.244.2.30:7070/marker.txt) || true
[ "$body" = "$marker" ] || fail "legacy/client got '$body' from batch:7070 after enrolling (PERMISSIVE), want the marker"
[ "$(batch_saw)" = 10.244.2.30 ] || fail "batch's app saw the request from '$(batch_saw)', want the agent from 10.244.2.30"
[ "$(capture_counter node-b lookup_steered)" -gt "$steered0" ] || fail "lookup_steered did not move"

log "the connection opened while opted out still works"
touch "$WORK/before.go"
wait "$before_pid" || fail "the held connection opened before the change broke (exit $?)"
log "done"
