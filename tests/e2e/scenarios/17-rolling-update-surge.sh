#!/usr/bin/env bash
# Scenario 17 (issue 12): a DaemonSet rolling update with maxSurge 1,
# maxUnavailable 0, node by node, while shop/client opens new mTLS
# connections to web continuously and holds one across each node's update.
# As in the DaemonSet, each agent runs in a network namespace of its own (no
# hostNetwork: metrics and probes on :15020 there, so two agents of one node
# never conflict) with only the capabilities the DaemonSet grants (read from
# deploy/daemonset/base/daemonset.yaml) and no_new_privs. On each node the new
# agent starts while the old one still serves, takes the pinned links over,
# listens beside it on every pod's ports (SO_REUSEPORT) and becomes ready
# (/healthz/ready 200: every enrolled pod served); only then does the old one
# get SIGTERM and drain (its queued connections move to the new listeners:
# bpf/reuseport.bpf.c). Zero new connections may fail, each held one carries
# bytes to its end, and both old agents exit 0.
E2E_NAME=s17
DRAIN_DEADLINE=15
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${MESHLOCK_SOURCE_DIR:-$HERE/../../..}

AGENT_NETNS=()
s17_cleanup() {
  local rc=$? ns
  set +e
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for ns in "${AGENT_NETNS[@]}"; do ip netns delete "$ns" 2>/dev/null; done
  (exit "$rc")
  cluster_cleanup
}
trap s17_cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The capabilities the DaemonSet's agent container adds (it drops ALL).
CAPS=$(/usr/bin/python3 - "$SRC/deploy/daemonset/base/daemonset.yaml" <<'PY'
import sys, yaml
ds = yaml.safe_load(open(sys.argv[1]))
agent = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"][0]
caps = agent["securityContext"]["capabilities"]
assert caps["drop"] == ["ALL"], caps
print(",".join("+" + c.lower() for c in caps["add"]))
PY
) || die "cannot read the DaemonSet's capabilities"
log "agents run with the DaemonSet's capabilities only: $CAPS"

# start_pod_agent NODE GEN: an agent for NODE in a netns of its own, as a
# DaemonSet pod without hostNetwork; returns once /healthz/ready answers 200.
# Both generations share the node's admin socket path, as the DaemonSet's
# pods share /run/meshlock: the new one takes it over (adminSocketTakeOver).
declare -A POD_AGENT_PID=() POD_AGENT_NS=()
# pod_network NODE NETNS: the agent pod's network, as a pod's without
# hostNetwork: a veth to its node, the default route through it, and the
# node masquerading what leaves for the fabric, so the agent reaches the
# API server (172.18.0.1:6443) with its own token as the others do.
POD_LINKS=0
pod_network() {
  local node_ns base
  node_ns=$(basename "$(node_field "$1" netnsPath)")
  base=$((POD_LINKS * 4)); POD_LINKS=$((POD_LINKS + 1))
  ip -n "$node_ns" link add "mlpod$POD_LINKS" type veth peer name eth0 netns "$2" || die "veth for $2"
  ip -n "$node_ns" addr add "169.254.77.$((base + 1))/30" dev "mlpod$POD_LINKS"
  ip -n "$node_ns" link set "mlpod$POD_LINKS" up
  ip -n "$2" addr add "169.254.77.$((base + 2))/30" dev eth0
  ip -n "$2" link set eth0 up
  ip -n "$2" route add default via "169.254.77.$((base + 1))"
  ip netns exec "$node_ns" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$node_ns" nft list table ip mlpod >/dev/null 2>&1 ||
    ip netns exec "$node_ns" nft -f - <<'NFT' || die "masquerade in $node_ns"
table ip mlpod {
  chain post { type nat hook postrouting priority 100; ip saddr 169.254.77.0/24 masquerade; }
}
NFT
}
probe() { ip netns exec "${POD_AGENT_NS[$1]}" curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:15020/healthz/$2" 2>/dev/null || true; }
start_pod_agent() {
  local node=$1 gen=$2 key="$1-$2" ns cgroup_root
  ns="ml-$RUN-$gen-${node#node-}"
  ip netns add "$ns" || die "ip netns add $ns"
  AGENT_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  pod_network "$node" "$ns"
  POD_AGENT_NS[$key]=$ns
  cgroup_root=$(node_field "$node" cgroupRoot)
  src=$(agent_source)
  # nsenter, not ip netns exec (which remounts /sys and hides bpffs).
  # shellcheck disable=SC2086
  nsenter --net="/run/netns/$ns" setpriv --no-new-privs --inh-caps=-all --bounding-set="-all,$CAPS" \
    "$AGENT" run --node "$node" $src \
    --cgroup-root "$cgroup_root" --bpf-pin-dir "$(pin_dir "$node")" --state-dir "$WORK/state-$node" \
    $(agent_ca_flags "$node") --admin-socket "$WORK/admin-$node.sock" --admin-socket-take-over on --admin-address 127.0.0.1:15000 \
    --metrics-address 0.0.0.0:15020 --drain-deadline "$DRAIN_DEADLINE" >>"$WORK/agent-$key.log" 2>&1 &
  POD_AGENT_PID[$key]=$!
  AGENT_PIDS+=($!)
  for _ in $(seq 150); do
    [ "$(probe "$key" ready)" = 200 ] && return 0
    kill -0 "${POD_AGENT_PID[$key]}" 2>/dev/null || { cat "$WORK/agent-$key.log"; die "agent $key exited"; }
    sleep 0.1
  done
  cat "$WORK/agent-$key.log"
  die "agent $key not ready (/healthz/ready) in 15 s"
}

make_ca "$WORK/ca"
"$MESHSIM" up "$HERE/cluster.yaml" --name "$RUN" >"$WORK/up.log" || { cat "$WORK/up.log"; die "meshsim up failed"; }
mapfile -t NODES < <(status_json | /usr/bin/python3 -c "import json,sys; [print(n['name']) for n in json.load(sys.stdin)['nodes']]")
start_ca
for node in "${NODES[@]}"; do start_pod_agent "$node" g1; done
log "cluster $RUN up: nodes ${NODES[*]}, one agent each in its own netns"
if [ "${E2E_SOURCE:-api}" = api ]; then
  for node in "${NODES[@]}"; do
    src=$(agent_status "$node" 's["source"]["kind"] + " " + str(s["source"]["synced"])')
    [ "$src" = "kubernetes True" ] || fail "$node: the agent pod does not read the API through its pod network: $src"
  done
fi
serve shop/web 8080
expect_ok shop/client 10.244.1.10:8080
[ "$(probe node-a-g1 live)" = 200 ] || fail "node-a: /healthz/live does not answer 200"

# held NAME: shop/client -> web:8080, one line echoed every 0.2 s until
# $WORK/NAME.stop appears (at most 300 rounds), each echo's time in
# $WORK/NAME.rounds; HELD_PID is its pid. One per node update, opened before
# the new agent starts (so through the old one) and ended while the old one
# drains: the old agent must carry it to its end.
held() {
  in_pod shop/client bash -c "exec 3<>/dev/tcp/10.244.1.10/8080 || exit 1
    for i in \$(seq 300); do
      [ -e $WORK/$1.stop ] && exit 0
      echo round-\$i >&3; read -t 3 line <&3 || exit 2; [ \"\$line\" = round-\$i ] || exit 3
      echo \$((\$(date +%s%N) / 1000000)) >>$WORK/$1.rounds; sleep 0.2
    done" 2>/dev/null &
  HELD_PID=$!
  BG_PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/$1.rounds" ] && return 0; sleep 0.1; done
  die "held connection $1 did not open in 10 s"
}

# The client: new connections one after another (4 KiB each, checked) until
# $WORK/stop appears, at most 90 s; one line "ok|fail MS" per connection.
in_pod shop/client bash -c "end=\$((\$(date +%s) + 90))
  while [ ! -e $WORK/stop ] && [ \$(date +%s) -lt \$end ]; do
    if '$PEER' send --to 10.244.1.10:8080 --bytes 4096 --timeout 5 >/dev/null 2>>$WORK/client.err; then r=ok; else r=fail; fi
    echo \"\$r \$((\$(date +%s%N) / 1000000))\" >>$WORK/client.log
  done" &
client_pid=$!
BG_PIDS+=($!)
sleep 1

listeners() { in_pod "$1" ss -Hltn4 "sport = :$2" | wc -l; }  # 127.0.0.1 only
declare -A HELD_OF=()
for node in node-a node-b; do
  old=${POD_AGENT_PID[$node-g1]}
  log "$node: surge: a new agent starts beside the running one"
  held "held-$node"; HELD_OF[$node]=$HELD_PID
  start=$(now_ms)
  start_pod_agent "$node" g2
  log "$node: new agent ready $(( $(now_ms) - start )) ms after it started"
  kill -0 "$old" 2>/dev/null || fail "$node: the old agent is gone before the new one was ready"
  up=$(agent_status "$node" 's["uptime_seconds"]')
  /usr/bin/python3 -c "import sys; sys.exit(float('$up') >= float('$(( ($(now_ms) - start) / 1000 + 1 ))'))" ||
    fail "$node: the admin socket still answers from the old agent (up $up s) after the new one is ready"
  ! grep -q "draining:" "$WORK/agent-$node-g1.log" || fail "$node: the old agent drained before the new one was ready"
  grep -q "capture taken over at" "$WORK/agent-$node-g2.log" || fail "$node: the new agent did not take the pinned links over"
  pod=shop/web port=15006
  [ "$node" = node-a ] || pod=shop/client port=15001
  n=$(listeners "$pod" "$port")
  [ "$n" = 2 ] || fail "$node: $n listeners on $pod port $port while both agents run, want 2"
  sleep 1  # both agents serve side by side
  log "$node: SIGTERM to the old agent"
  sigterm=$(now_ms)
  kill -TERM "$old"
  sleep 2
  kill -0 "$old" 2>/dev/null || fail "$node: the old agent exited with the held connection still open"
  after=$(awk -v t="$sigterm" '$1 > t' "$WORK/held-$node.rounds" | wc -l)
  [ "$after" -ge 5 ] || fail "$node: the held connection carried only $after rounds in the 2 s after SIGTERM"
  touch "$WORK/held-$node.stop"  # it ends cleanly; then the old agent has nothing left
  for _ in $(seq 250); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$old" 2>/dev/null; then
    fail "$node: old agent $old still running $DRAIN_DEADLINE s after SIGTERM"
  else
    rc=0; wait "$old" || rc=$?
    [ "$rc" = 0 ] || fail "$node: the old agent exited $rc after draining, want 0"
  fi
  log "$node: old agent gone $(( $(now_ms) - start )) ms after the new one started; $(grep -ho 'drained: .*' "$WORK/agent-$node-g1.log")"
  grep -q "drained: 0 connections still open at exit" "$WORK/agent-$node-g1.log" ||
    fail "$node: the old agent cut connections at its drain deadline"
  n=$(listeners "$pod" "$port")
  [ "$n" = 1 ] || fail "$node: $n listeners on $pod port $port after the old agent left, want 1"
done
sleep 1
touch "$WORK/stop"
wait "$client_pid" || true
ok=$(grep -c '^ok ' "$WORK/client.log" || true)
failed=$(grep -c '^fail ' "$WORK/client.log" || true)
log "new connections during the update: $ok ok, $failed failed"
[ "$ok" -ge 20 ] || fail "only $ok new connections in the whole update"
[ "$failed" = 0 ] || fail "$failed new connections failed during the update: $(sort -u "$WORK/client.err" | head -5 | tr '\n' ';')"

for node in node-a node-b; do
  rc=0; wait "${HELD_OF[$node]}" || rc=$?
  rounds=$(wc -l <"$WORK/held-$node.rounds")
  log "connection held across the $node update: $rounds rounds echoed, ended cleanly (exit $rc)"
  [ "$rc" = 0 ] || fail "the connection held across the $node update broke (exit $rc, after $rounds rounds)"
done

# The new agents serve mTLS: their handshakes moved, their /status is theirs.
for node in node-a node-b; do
  hs=$(agent_status "$node" 's["handshakes"]["success"]')
  [ "$hs" -ge 1 ] || fail "$node: the new agent completed no mTLS handshake"
done
send shop/client 10.244.1.10:8080 || fail "shop/client -> web after the update"
log "done"
