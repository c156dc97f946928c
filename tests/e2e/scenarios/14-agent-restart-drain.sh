#!/usr/bin/env bash
# Scenario 14 (agent restart, issue 6): both agents get SIGTERM while two mTLS
# connections shop/client → web are held through them, and new agents start
# while the old ones drain. Capture resumes on the same pinned BPF links (same
# link ids, new programs swapped in, nothing attached twice); new connections
# go through the new agents; a held connection that ends within the drain
# deadline carries bytes to its end; one that outlives the deadline is cut at
# the deadline, when the old agent exits. Handover is off here: this is the
# drain an upgrade falls back to (scenario 32 hands connections over).
E2E_NAME=s14
DRAIN_DEADLINE=8
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml" --handover-socket off
serve shop/web 8080

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
pods_root() { grep -o "capture [a-z ]* at [^ ]*" "$WORK/agent-$1.log" | head -1 | awk '{print $NF}'; }
# "pin link-id prog-id" for every link pinned by NODE's agent.
pinned_links() {
  local dir f
  dir=$(pin_dir "$1")
  for f in "$dir"/links/* "$dir"/pods/*/sk_lookup; do
    bpftool link show pinned "$f" -j | python3 -c "import json,sys; l=json.load(sys.stdin); print('${f#"$dir"/}', l['id'], l['prog_id'])"
  done
}
# Links attached to the pods cgroup of NODE, whoever pinned them.
cgroup_links() {
  local id
  id=$(stat -c %i "$(pods_root "$1")")
  bpftool link show -j | python3 -c "import json,sys; print(sum(1 for l in json.load(sys.stdin) if l.get('cgroup_id') == $id))"
}
capture_json() { curl -s --unix-socket "$WORK/admin-$1.sock" http://agent/capture; }

# held NAME ROUNDS: shop/client → web:8080, one line echoed every 0.2 s for
# ROUNDS rounds (0: until the connection breaks); each echoed round's time
# (ms) goes to $WORK/NAME.rounds. Exit 0 only if every round came back.
held() {
  in_pod shop/client bash -c "exec 3<>/dev/tcp/10.244.1.10/8080 || exit 1
    i=0
    while [ $2 = 0 ] || [ \$i -lt $2 ]; do
      i=\$((i + 1)); echo round-\$i >&3; read -t 3 line <&3 || exit 2; [ \"\$line\" = round-\$i ] || exit 3
      echo \$((\$(date +%s%N) / 1000000)) >>$WORK/$1.rounds; sleep 0.2
    done" 2>/dev/null &
  HELD_PID=$!
  BG_PIDS+=($!)  # stopped at cleanup should the scenario end before it does
  for _ in $(seq 100); do [ -s "$WORK/$1.rounds" ] && return 0; sleep 0.1; done
  fail "held connection $1 did not open in 10 s"
}
rounds_after() { awk -v t="$2" '$1 > t' "$WORK/$1.rounds" | wc -l; }

expect_ok shop/client 10.244.1.10:8080
for node in node-a node-b; do
  pinned_links "$node" >"$WORK/links-before-$node"
  log "$node links before: $(tr '\n' ';' <"$WORK/links-before-$node")"
done
cgroup_links_before=$(cgroup_links node-a)
[ "$cgroup_links_before" = 3 ] || fail "node-a: $cgroup_links_before links on the pods cgroup, want 3 (connect4, connect6, sockops)"

held steady 20; steady_pid=$HELD_PID   # about 5 s: ends within the drain deadline
held endless 0; endless_pid=$HELD_PID  # only the deadline ends it
sleep 0.5
old_a=${AGENT_PID_OF[node-a]} old_b=${AGENT_PID_OF[node-b]}

log "SIGTERM to both agents; new agents start while they drain"
sigterm=$(now_ms)
kill -TERM "$old_a" "$old_b"
for node in node-a node-b; do
  for _ in $(seq 50); do grep -q "draining:" "$WORK/agent-$node.log" && break; sleep 0.1; done
  grep -q "draining:" "$WORK/agent-$node.log" || fail "the old agent on $node did not start draining"
done
start_agent node-a --handover-socket off
start_agent node-b --handover-socket off
ready=$(now_ms)
log "new agents ready $((ready - sigterm)) ms after SIGTERM"
# Both old agents hold both connections (node-b's the outbound side, node-a's
# the inbound), so both must still be draining: the endless connection keeps
# them up until their deadline, ${DRAIN_DEADLINE} s after SIGTERM.
for node in node-a node-b; do
  pid=$old_a; [ "$node" = node-a ] || pid=$old_b
  kill -0 "$pid" 2>/dev/null ||
    fail "the old agent on $node exited before its connections drained ($(( $(now_ms) - sigterm )) ms after SIGTERM)"
done
first_ok=""
for _ in $(seq 50); do
  if send shop/client 10.244.1.10:8080 1024; then first_ok=$(now_ms); break; fi
  sleep 0.1
done
[ -n "$first_ok" ] || fail "no new connection through the new agents"
log "first new connection through the new agents $((first_ok - sigterm)) ms after SIGTERM"

log "capture taken over: same links, new programs, nothing attached twice"
for node in node-a node-b; do
  pinned_links "$node" >"$WORK/links-after-$node"
  log "$node links after: $(tr '\n' ';' <"$WORK/links-after-$node")"
  diff <(cut -d' ' -f1,2 "$WORK/links-before-$node") <(cut -d' ' -f1,2 "$WORK/links-after-$node") >/dev/null ||
    fail "$node: pinned link ids changed across the restart (a new attach)"
  if paste "$WORK/links-before-$node" "$WORK/links-after-$node" | awk '$3 == $6 {found=1} END {exit !found}'; then
    fail "$node: some link still runs the old agent's program"
  fi
  grep -q "capture taken over at" "$WORK/agent-$node.log" || fail "$node: the new agent did not say it took capture over"
  capture_json "$node" | python3 -c "import json,sys; assert json.load(sys.stdin)['reused_pinned_links'] is True" ||
    fail "$node: /capture does not say the pinned links were reused"
done
[ "$(cgroup_links node-a)" = "$cgroup_links_before" ] || fail "node-a: $(cgroup_links node-a) links on the pods cgroup after the restart"

log "new connections go through the new agents"
captured0=$(capture_counter node-b connect_captured)
expect_ok shop/client web.shop.svc.cluster.local:80
[ "$(capture_counter node-b connect_captured)" -gt "$captured0" ] || fail "node-b: connect_captured did not move after the restart"
python3 - "$(agent_status node-b 'json.dumps(s)')" "$(agent_status node-a 'json.dumps(s)')" "$(( ($(now_ms) - sigterm) / 1000 + 1 ))" <<'PY' ||
import json, sys
for text in sys.argv[1:3]:
    s = json.loads(text)
    assert s["uptime_seconds"] < float(sys.argv[3]), f"{s['node']}: /status answered by an agent up {s['uptime_seconds']} s (the old one?)"
    assert s["handshakes"]["success"] >= 1, s["handshakes"]
PY
  fail "the new agents did not serve the new connections"

log "held connections: the steady one carries bytes to its end, the endless one until the deadline"
wait "$steady_pid" || fail "the held connection that ends within the deadline broke (exit $?)"
after=$(rounds_after steady "$sigterm")
[ "$after" -ge 10 ] || fail "the steady connection carried only $after rounds after SIGTERM"
log "steady connection: $after rounds echoed after SIGTERM, $(wc -l <"$WORK/steady.rounds") in all"
rc=0; wait "$endless_pid" || rc=$?
[ "$rc" != 0 ] || fail "the endless connection ended cleanly?"
cut_at=$(( $(tail -1 "$WORK/endless.rounds") - sigterm ))
log "endless connection: last echo $cut_at ms after SIGTERM (drain deadline ${DRAIN_DEADLINE} s)"
[ "$cut_at" -ge $(( (DRAIN_DEADLINE - 1) * 1000 )) ] || fail "the endless connection stopped at $cut_at ms, before the drain deadline"
[ "$cut_at" -le $(( (DRAIN_DEADLINE + 3) * 1000 )) ] || fail "the endless connection outlived the drain deadline ($cut_at ms)"
# Both old agents exit after draining, and cleanly: a crash at shutdown fails.
# (They are this shell's children: wait gives their exit status.)
for pid in "$old_a" "$old_b"; do
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    fail "old agent $pid still running after the drain deadline"
  else
    rc=0; wait "$pid" || rc=$?
    [ "$rc" = 0 ] || fail "old agent $pid exited $rc after draining, want 0"
  fi
done
# Whichever old agent reaches its deadline first cuts the connection; the
# other may then see it end just before its own.
# (grep reads the files itself: `cat | grep -q` fails under pipefail when
# grep stops at a match before cat has written everything.)
grep -qh "drained: [1-9][0-9]* connections still open at exit" "$WORK"/agent-node-{a,b}.log ||
  fail "no old agent reported the endless connection open at its deadline: $(grep -h drained "$WORK"/agent-node-{a,b}.log)"
expect_ok shop/client 10.244.1.10:8080
log "done"
