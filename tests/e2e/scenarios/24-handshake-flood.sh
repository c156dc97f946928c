#!/usr/bin/env bash
# Scenario 24 (issue 20, point 1): an un-meshed pod (legacy/client) floods a
# STRICT pod (shop/web) with connections that send the start of a ClientHello
# and never finish it, 24,000 of them held and reopened as the agent closes
# them (two flooder processes: 20,000 fds per process here), while a meshed
# client (shop/client) makes new mTLS connections to the same pod. Asserted:
# every legitimate connection succeeds, node-a's agent keeps its open fds far
# below RLIMIT_NOFILE (the pending-handshake caps refuse the flood's excess),
# refusals are counted and their access-log lines rate-limited. Printed (a
# benchmark, not an assertion): the legitimate p50/p99 quiet and during the
# flood, the agent's RSS and CPU. FLOOD_COUNT / FLOOD_SECONDS / LEGIT_SECONDS
# change the sizes (docs/security.md "Connection floods" has a run's figures).
E2E_NAME=s24
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
CONNBENCH="$BIN/meshlock-connbench"
WEB=10.244.1.10
FLOOD_COUNT=${FLOOD_COUNT:-12000}     # per flooder process; two of them
LEGIT_SECONDS=${LEGIT_SECONDS:-8}
FLOOD_SECONDS=${FLOOD_SECONDS:-$((LEGIT_SECONDS + 14))}
FLOOD_REOPEN_MS=${FLOOD_REOPEN_MS:-100}  # a refused flood connection is retried after this long
FLOOD_CONCURRENCY=${FLOOD_CONCURRENCY:-128}
# New connections a second per flooder (0: as fast as it can, which on a
# 2-core machine measures CPU contention between flooder and client more
# than the agent): the default opens 24,000 in the first 12 s and keeps retrying.
FLOOD_RATE=${FLOOD_RATE:-1000}
FLOOD_NICE=${FLOOD_NICE:-0}  # the flooders' nice value: 19 takes them out of the client's way on shared cores

# FLOOD_AGENT_FLAGS: extra agent flags, e.g. the caps raised to see the flood without them.
# shellcheck disable=SC2086
cluster_up "$HERE/cluster.yaml" ${FLOOD_AGENT_FLAGS:-}
apply "$HERE/manifests/shop-strict.yaml"
AGENT_A=${AGENT_PID_OF[node-a]}
caps=$(grep -m1 "connection caps for" "$WORK/agent-node-a.log") || die "node-a's agent did not log its connection caps"
log "node-a: ${caps#* info }"
read -r fd_limit pending_cap per_source <<<"$(sed -E 's/.*caps for ([0-9]+) open files: [0-9]+ connections, [0-9]+ per pod, ([0-9]+) pending handshakes, ([0-9]+) per source.*/\1 \2 \3/' <<<"$caps")"
[ "$fd_limit" = "$(awk '/Max open files/ {print $4}' "/proc/$AGENT_A/limits")" ] ||
  fail "caps sized for $fd_limit fds, the agent's soft limit is $(awk '/Max open files/ {print $4}' "/proc/$AGENT_A/limits")"
grep -q "open files limit:" "$WORK/agent-node-a.log" || fail "run did not log its open-files limit"

for pod in legacy/client shop/client; do
  in_pod "$pod" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
done
pod_bg() { local pod=$1; shift; "$MESHSIM" exec --name "$RUN" "$pod" -- "$@" & BG_PIDS+=($!); }
pod_bg shop/web "$CONNBENCH" serve --port 8080 >"$WORK/web.log" 2>&1
wait_listening shop/web 8080 || die "the echo server in shop/web did not start"

fds() { ls "/proc/$AGENT_A/fd" | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$AGENT_A/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$AGENT_A/status"; }
hz=$(getconf CLK_TCK)
# legit NAME: new mTLS connections from shop/client for LEGIT_SECONDS (1-byte echo each).
legit() {
  in_pod shop/client "$CONNBENCH" rate --to $WEB:8080 --seconds "$LEGIT_SECONDS" --concurrency 2 >"$WORK/legit-$1.out" 2>&1 ||
    true
  grep '^connections=' "$WORK/legit-$1.out" || { cat "$WORK/legit-$1.out"; echo "connections=0 errors=1 p50_ms=0 p99_ms=0"; }
}
field() { sed -E "s/.*$1=([0-9.]+).*/\1/" <<<"$2"; }

# SYNs the pod's listeners dropped (accept queue full): a stalled agent shows here.
listen_drops() { in_pod shop/web nstat -az TcpExtListenDrops 2>/dev/null | awk '/ListenDrops/ {print $2}'; }
drops0=$(listen_drops)
base_fds=$(fds)
cpu0=$(cpu_ticks)
quiet=$(legit quiet)
cpu1=$(cpu_ticks)
log "quiet: $quiet (agent fds $base_fds, rss $(rss_kb) kB)"
[ "$(field connections "$quiet")" -gt 0 ] || fail "no legitimate connection in the quiet phase"
[ "$(field errors "$quiet")" = 0 ] || fail "legitimate connections failed in the quiet phase: $quiet"

log "flood: 2 x $FLOOD_COUNT connections from legacy/client for $FLOOD_SECONDS s, 2 x $FLOOD_RATE new a second at most"
for i in 1 2; do
  pod_bg legacy/client nice -n "$FLOOD_NICE" "$CONNBENCH" flood --to $WEB:8080 --count "$FLOOD_COUNT" --concurrency "$FLOOD_CONCURRENCY" \
    --seconds "$FLOOD_SECONDS" --reopen-ms "$FLOOD_REOPEN_MS" \
    --max-rate "$FLOOD_RATE" >"$WORK/flood-$i.out" 2>"$WORK/flood-$i.err"
done
FLOOD_PIDS=("${BG_PIDS[@]: -2}")
peak_fds=0 peak_rss=0
sample() {
  local f r
  f=$(fds); r=$(rss_kb)
  [ "$f" -gt "$peak_fds" ] && peak_fds=$f
  [ "$r" -gt "$peak_rss" ] && peak_rss=$r
  return 0
}
for _ in $(seq 10); do sample; sleep 0.5; done  # the flood ramps up
cpu2=$(cpu_ticks)
legit flood >"$WORK/legit-flood.line" &
legit_pid=$!
while kill -0 "$legit_pid" 2>/dev/null; do sample; sleep 0.5; done
wait "$legit_pid" || true
cpu3=$(cpu_ticks)
during=$(cat "$WORK/legit-flood.line")
for pid in "${FLOOD_PIDS[@]}"; do
  for _ in $(seq $((FLOOD_SECONDS + 20))); do kill -0 "$pid" 2>/dev/null || break; sample; sleep 1; done
done
cat "$WORK"/flood-*.out
log "SYNs dropped by shop/web's listeners during the run: $(( $(listen_drops) - drops0 ))"
log "during the flood: $during"
[ "$(field connections "$during")" -gt 0 ] || fail "no legitimate connection during the flood"
[ "$(field errors "$during")" = 0 ] || fail "legitimate connections failed during the flood: $during"
opened=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^opened=/) {split($i, a, "="); t += a[2]}} END {print t + 0}' "$WORK"/flood-*.out)
max_open=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^max_open=/) {split($i, a, "="); t += a[2]}} END {print t + 0}' "$WORK"/flood-*.out)
[ "$opened" -ge 20000 ] || fail "the flood opened only $opened connections (want 20,000+)"

# Bounded: the flood's excess is refused, so the agent holds about one fd per
# admitted pending connection, far below its limit.
bound=$((base_fds + pending_cap + 512))
log "agent fds: base $base_fds, peak $peak_fds during the flood (bound $bound, limit $fd_limit)"
[ "$peak_fds" -lt "$bound" ] || fail "node-a's agent held $peak_fds fds during the flood (bound $bound)"
[ "$peak_fds" -lt $((fd_limit / 2)) ] || fail "node-a's agent held $peak_fds fds, over half its limit $fd_limit"

ip netns exec "$(node_field node-a netns)" curl -s http://127.0.0.1:15020/metrics >"$WORK/metrics-a.txt" || fail "metrics on node-a"
metric() { awk -v m="$1" '$1 == m {print $2; found = 1} END {if (!found) print 0}' "$WORK/metrics-a.txt"; }
source_cap=$(metric 'meshlock_connections_shed_total{reason="source_cap"}')
timeouts=$(metric 'meshlock_engine_handshakes_total{result="timeout"}')
suppressed=$(metric 'meshlock_access_log_suppressed_total')
log "node-a: refused at the source cap $source_cap, handshake timeouts $timeouts, access-log lines suppressed $suppressed"
[ "${source_cap%.*}" -gt 1000 ] || fail "the per-source cap refused only $source_cap flood connections"
refusal_lines=$(grep -c ' access .*pod=shop/web.*end=\(handshake_timeout\|shed\|handshake_failed\)' "$WORK/agent-node-a.log" || true)
log "node-a: $refusal_lines access-log lines of refused shop/web connections"
[ "$refusal_lines" -le $((10 * 2 * (FLOOD_SECONDS + 30))) ] || fail "$refusal_lines refusal lines: not rate-limited"
if grep -q "type=suppressed pod=shop/web" "$WORK/agent-node-a.log"; then :; elif [ "${suppressed%.*}" -gt 0 ]; then
  fail "$suppressed lines suppressed but no suppressed line written"
fi

legit_p50_q=$(field p50_ms "$quiet"); legit_p99_q=$(field p99_ms "$quiet")
legit_p50_f=$(field p50_ms "$during"); legit_p99_f=$(field p99_ms "$during")
awk -v q50="$legit_p50_q" -v q99="$legit_p99_q" -v f50="$legit_p50_f" -v f99="$legit_p99_f" \
  -v qc="$(field connections "$quiet")" -v fc="$(field connections "$during")" -v s="$LEGIT_SECONDS" \
  -v cq="$(( cpu1 - cpu0 ))" -v cf="$(( cpu3 - cpu2 ))" -v hz="$hz" -v rss="$peak_rss" -v fdp="$peak_fds" \
  -v opened="$opened" -v maxo="$max_open" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
    printf "FLOOD BENCH legit p50 %.2f ms p99 %.2f ms quiet (%d conns) | p50 %.2f ms p99 %.2f ms flood (%d conns) | p99 ratio %.2f\n", q50, q99, qc, f50, f99, fc, (q99 > 0 ? f99 / q99 : 0)
    printf "FLOOD BENCH agent cpu %.0f %% quiet, %.0f %% flood | peak rss %d kB | peak fds %d | flood opened %d, held at most %d | load %s\n", 100 * cq / hz / s, 100 * cf / hz / s, rss, fdp, opened, maxo, load
  }'
log "done"
