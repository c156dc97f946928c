#!/usr/bin/env bash
# Scenario 15 (fail closed after a live change, issue 6): shop/web is registered
# PERMISSIVE, so with its agent killed plaintext still reaches the app (the
# control). STRICT is then applied live; with the agent killed by SIGKILL,
# plaintext to web is refused in the kernel and never reaches the app; the
# restarted agent serves web again (mTLS in, plaintext still refused).
E2E_NAME=s15
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"
in_pod shop/web "$PEER" serve --port 8080 -v >"$WORK/web.log" 2>&1 &
BG_PIDS+=($!)
wait_listening shop/web 8080 || die "web's server did not listen: $(cat "$WORK/web.log")"

# Connections the app accepted from legacy/client itself (not from the agent,
# which connects from web's own 10.244.1.10). testpeer -v logs a connection
# when it ends, so the line can come a little after the client is done.
app_saw_legacy() { grep -c "^testpeer: 10.244.2.20:" "$WORK/web.log" || true; }
# app_saw_legacy_more N: 0 once the app has logged more than N such
# connections (polled, up to 10 s).
app_saw_legacy_more() {
  for _ in $(seq 100); do [ "$(app_saw_legacy)" -gt "$1" ] && return 0; sleep 0.1; done
  return 1
}
# app_saw_legacy_still N: 0 if the app has logged exactly N such connections
# once any connection the client made can no longer show up. Call it after the
# client process has exited: its sockets are closed then, so an app that had
# accepted one sees the end at once and logs it; the grace of 3 s covers that
# thread being slow to run on a loaded machine (it takes milliseconds idle).
app_saw_legacy_still() { sleep 3; [ "$(app_saw_legacy)" = "$1" ]; }
web_mode() {
  "$CTL" workloads --admin "unix:$WORK/admin-node-a.sock" -o json | python3 -c "
import json, sys
w = [x for x in json.load(sys.stdin)['workloads'] if x['namespace'] == 'shop' and x['pod'] == 'web'][0]
print({p['port']: p['mode'] for p in w['inbound']}[8080])"
}
plaintext() { in_pod legacy/client "$PEER" send --to 10.244.1.10:8080 --bytes 4096 --timeout "${1:-5}" 2>&1; }

log "registered PERMISSIVE: plaintext accepted"
[ "$(web_mode)" = PERMISSIVE ] || fail "web:8080 is $(web_mode), want PERMISSIVE at registration"
expect_ok legacy/client 10.244.1.10:8080
expect_ok shop/client 10.244.1.10:8080

log "control: agent killed while web is PERMISSIVE → plaintext passes to the app (fail open)"
stop_agent node-a KILL
passed0=$(capture_counter node-a lookup_no_listener_passed)
saw0=$(app_saw_legacy)
plaintext >"$WORK/control.out" || fail "PERMISSIVE pod with its agent down refused plaintext: $(cat "$WORK/control.out")"
[ "$(capture_counter node-a lookup_no_listener_passed)" -gt "$passed0" ] || fail "lookup_no_listener_passed did not move"
app_saw_legacy_more "$saw0" || fail "the app did not see legacy/client's plaintext connection directly"
start_agent node-a
expect_ok shop/client 10.244.1.10:8080

log "STRICT applied live"
apply "$HERE/manifests/shop-strict.yaml"
for _ in $(seq 30); do [ "$(web_mode)" = STRICT ] && break; sleep 0.1; done
[ "$(web_mode)" = STRICT ] || fail "web:8080 is $(web_mode) after the change, want STRICT"
expect_refused legacy/client 10.244.1.10:8080
expect_ok shop/client 10.244.1.10:8080

log "agent killed (SIGKILL) after the live change → plaintext refused, never reaches the app"
stop_agent node-a KILL
dropped0=$(capture_counter node-a lookup_no_listener_dropped)
passed0=$(capture_counter node-a lookup_no_listener_passed)
saw0=$(app_saw_legacy)
if plaintext 3 >"$WORK/strict.out"; then
  fail "plaintext reached web with its agent down after STRICT: $(cat "$WORK/strict.out")"
fi
log "plaintext client: $(tail -1 "$WORK/strict.out")"
[ "$(capture_counter node-a lookup_no_listener_dropped)" -gt "$dropped0" ] || fail "lookup_no_listener_dropped did not move"
[ "$(capture_counter node-a lookup_no_listener_passed)" = "$passed0" ] || fail "sk_lookup passed a SYN to the STRICT pod"
# (plaintext ran in the foreground: the client has exited)
app_saw_legacy_still "$saw0" || fail "the app accepted legacy/client's plaintext connection with the agent down"
expect_refused shop/client 10.244.1.10:8080  # nothing serves web: mTLS fails too, never falls back

log "agent restarted → web served again"
start_agent node-a
[ "$(grep -c "serving pod shop/web .*(inbound fail-closed)" "$WORK/agent-node-a.log")" = 1 ] ||
  fail "the restarted agent did not serve web fail-closed: $(grep "serving pod shop/web" "$WORK/agent-node-a.log")"
expect_ok shop/client 10.244.1.10:8080
expect_refused legacy/client 10.244.1.10:8080
# (expect_refused's client ran in the foreground: it has exited)
app_saw_legacy_still "$saw0" || fail "the app saw plaintext from legacy/client after the restart"
log "done"
