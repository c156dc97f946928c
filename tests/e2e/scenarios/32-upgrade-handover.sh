#!/usr/bin/env bash
# Scenario 32 (issue 18): three agent upgrades in a row, with no
# established connection reset and no byte lost. shop/client (node-b) holds,
# to legacy/db:5432 through its service (outside the mesh: node-b's agent
# relays them, captured; with S32_TLS=1 it originates TLS 1.3 to them):
# four checksummed streams sending both ways all the time, one at full speed
# (a bulk transfer), one idle connection and 1,000 small ones. Each upgrade
# is the DaemonSet's surge: a new agent starts beside the old one, becomes
# ready, then the old one gets SIGTERM, hands every established connection
# over (sockets and queued bytes, docs/upgrade.md) and exits. At the end
# every connection is ended cleanly and every byte checked. Both nodes are
# upgraded, in turns: node-a's agent holds, for shop/web, the connections
# legacy/client (outside the mesh) makes to web's echo server, which it
# relays inbound in plaintext (PERMISSIVE): two streams, an idle one and 200
# small ones. Prints the handover figures: connections taken, time per
# handover, the pause each stream saw in each upgrade. (HBONE tunnels, meshlock-to-meshlock
# by default, drain: docs/upgrade.md.)
E2E_NAME=s32
DRAIN_DEADLINE=30
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
SMALL=${S32_SMALL:-1000}
cluster_up "$HERE/cluster.yaml"
# An echo server that takes them all and never closes an idle one first.
# S32_TLS=1: node-b's agent originates TLS 1.3 to it (DestinationRule SIMPLE),
# the server being Python's ssl (OpenSSL), so the TLS state of every
# connection crosses each upgrade, carried on with a peer we did not write.
out="$WORK/serve-db.log"
if [ -n "${S32_TLS:-}" ]; then
  make_ca "$WORK/ext"
  ext_leaf db DNS:db.legacy.svc.cluster.local
  in_pod legacy/db python3 "$HERE/tls_echo_server.py" --port 5432 --cert "$WORK/db-chain.pem" --key "$WORK/db-key.pem" >>"$out" 2>&1 &
  BG_PIDS+=($!)
  printf 'apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db-tls, namespace: shop}\nspec:\n  host: db.legacy.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: db.legacy.svc.cluster.local, caCertificates: %s}\n' \
    "$WORK/ext/root-cert.pem" >"$WORK/dr.yaml"
  apply "$WORK/dr.yaml"
else
  in_pod legacy/db "$PEER" serve --port 5432 --max-connections 12000 --idle-timeout 3600 >>"$out" 2>&1 &
  BG_PIDS+=($!)
fi
wait_listening legacy/db 5432 || die "the echo server did not start: $(cat "$out")"
SMALL_A=${S32_SMALL_A:-200}
in_pod shop/web "$PEER" serve --port 8080 --max-connections 4000 --idle-timeout 3600 >>"$WORK/serve-web.log" 2>&1 &
BG_PIDS+=($!)
wait_listening shop/web 8080 || die "web's echo server did not start: $(cat "$WORK/serve-web.log")"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
progress() { cat "$WORK/progress" 2>/dev/null || echo 0; }
progress_a() { cat "$WORK/progress-a" 2>/dev/null || echo 0; }

in_pod shop/client python3 "$HERE/upgrade_client.py" --to 10.96.20.20:5432 --small "$SMALL" --gaps-file "$WORK/gaps-client.json" \
  --stop-file "$WORK/client.stop" --progress-file "$WORK/progress" --max-seconds 200 >"$WORK/client.json" 2>"$WORK/client.err" &
client_pid=$!
BG_PIDS+=($!)
in_pod legacy/client python3 "$HERE/upgrade_client.py" --to 10.96.10.10:80 --streams 1 --small "$SMALL_A" --gaps-file "$WORK/gaps-client-a.json" \
  --stop-file "$WORK/client.stop" --progress-file "$WORK/progress-a" --max-seconds 200 >"$WORK/client-a.json" 2>"$WORK/client-a.err" &
client_a_pid=$!
BG_PIDS+=($!)
# Opening them takes about a second per 200 (each checked with an echo).
for _ in $(seq $((300 + SMALL / 10))); do [ -e "$WORK/progress.ready" ] && [ -e "$WORK/progress-a.ready" ] && break; sleep 0.1; done
[ -e "$WORK/progress.ready" ] || die "the client did not open its connections: $(cat "$WORK/client.err")"
[ -e "$WORK/progress-a.ready" ] || die "legacy/client did not open its connections: $(cat "$WORK/client-a.err")"
log "client: 5 streams, 1 idle and $SMALL small connections open; legacy/client to web: 2 streams, 1 idle, $SMALL_A small"

for round in 1 2 3; do
  for node in node-b node-a; do
    before=$(progress); before_a=$(progress_a)
    log "$node round $round: the agent relays $(agent_status "$node" 's["connections"]["active"]') connections"
    surge_upgrade "$node" "$round"
    log "$node round $round: old agent gone $UPGRADE_GONE_MS ms after SIGTERM; $UPGRADE_LINE; the new agent: $UPGRADE_PAUSE"
    for _ in $(seq 100); do
      [ "$(progress)" -gt $((before + 1000000)) ] && [ "$(progress_a)" -gt $((before_a + 1000000)) ] && break
      sleep 0.1
    done
    [ "$(progress)" -gt $((before + 1000000)) ] || fail "$node round $round: shop/client's streams stopped after the upgrade"
    [ "$(progress_a)" -gt $((before_a + 1000000)) ] || fail "$node round $round: legacy/client's streams stopped after the upgrade"
  done
done

touch "$WORK/client.stop"
for who in client client-a; do
  if [ "$who" = client ]; then pid=$client_pid; small=$SMALL; else pid=$client_a_pid; small=$SMALL_A; fi
  rc=0; wait "$pid" || rc=$?
  summary=$(cat "$WORK/$who.json")
  log "$who: $summary"
  [ "$rc" = 0 ] || fail "$who: connections broke or lost bytes across the upgrades: $summary $(tail -3 "$WORK/$who.err")"
  python3 - "$summary" "$small" <<'PY' || fail "$who: the summary is not what clean upgrades give"
import json, sys
s = json.loads(sys.argv[1])
assert s["error_count"] == 0, s["errors"]
assert s["small"] == int(sys.argv[2]), s
assert min(s["stream_bytes"]) > 1_000_000, s["stream_bytes"]
PY
done

# Three handovers per node, each of every connection.
[ "$(wc -l <"$WORK/handovers")" = 6 ] || fail "$(wc -l <"$WORK/handovers") handovers logged, want 6"
while read -r node round gone _ taken _; do
  want=$SMALL; [ "$node" = node-a ] && want=$SMALL_A
  [ "$taken" -ge "$want" ] || fail "$node round $round: only $taken connections handed over"
done <"$WORK/handovers"
# The old agents cut nothing at exit.
for node in node-a node-b; do
  n=$(grep -c "drained: 0 connections still open at exit" "$WORK/agent-$node.log")
  [ "$n" = 3 ] || fail "$node: $n of 3 old agents exited with nothing left"
done
log "figures: per handover: $(awk '{printf "%s/%s %s ms to exit, %s taken; ", $1, $2, $3, $5}' "$WORK/handovers")"
# The pause each stream saw in each upgrade of the agent that relays it
# (shop/client's: node-b; legacy/client's: node-a), from the clients' own
# timestamps of every read: the longest gap between two reads that overlaps
# the upgrade (the new agent's start to the old one's exit). A figure, not
# an assertion; the gaps outside every upgrade are the machine's noise.
python3 - "$WORK/upgrades" "$WORK/gaps-client.json" "$WORK/gaps-client-a.json" <<'PY' >"$WORK/pauses.txt" || fail "pauses: $(cat "$WORK/pauses.txt")"
import json, sys
windows = [line.split() for line in open(sys.argv[1])]
pauses, outside = [], []
for path, node in ((sys.argv[2], "node-b"), (sys.argv[3], "node-a")):
    mine = [(float(w[2]), float(w[3])) for w in windows if w[0] == node]
    for seed, gaps in json.load(open(path)).items():
        for start, end in mine:
            pauses.append(max([ms for t, ms in gaps if t < end and t + ms / 1000 > start], default=0))
        outside += [ms for t, ms in gaps if not any(t < e and t + ms / 1000 > s for s, e in mine)]
pauses.sort()
pick = lambda q: pauses[min(len(pauses) - 1, int(q * len(pauses)))]
print(f"per-stream pause in an upgrade: p50 {pick(0.5):.0f} ms, p99 {pick(0.99):.0f} ms, max {pauses[-1]:.0f} ms "
      f"over {len(pauses)} (stream, upgrade) pairs; longest gap outside the upgrades {max(outside, default=0):.0f} ms")
PY
log "figures: $(cat "$WORK/pauses.txt")"
log "done"
