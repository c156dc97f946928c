# Benchmarks that time an agent's start-up (fullpath/startup.sh, ca/run.sh):
# source after tests/e2e/lib/cluster.sh.
#
# timed_agent_start NODE SOCKET FLAGS...: `meshlock-agent run` on NODE (in its
# network namespace, pins and state as cluster.sh lays them out, its log in
# $WORK/agent-NODE.log) with FLAGS; returns once /ready on SOCKET answers 200,
# polled every 5 ms, with READY_MS (exec to ready) and TIMED_PID set. Dies with
# the agent's log if it is not ready within 15 s.
timed_agent_start() {
  local node=$1 socket=$2 start ready=""
  shift 2
  rm -f "$socket"
  start=$(date +%s%N)
  nsenter --net="$(node_field "$node" netnsPath)" "$AGENT" run --node "$node" \
    --cgroup-root "$(node_field "$node" cgroupRoot)" --bpf-pin-dir "$(pin_dir "$node")" \
    --state-dir "$WORK/state-$node" --admin-socket "$socket" --drain-deadline 1 "$@" >"$WORK/agent-$node.log" 2>&1 &
  TIMED_PID=$!
  AGENT_PIDS+=("$TIMED_PID")
  for _ in $(seq 3000); do
    if [ -S "$socket" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --unix-socket "$socket" http://agent/ready)" = 200 ]; then
      ready=$(date +%s%N)
      break
    fi
    kill -0 "$TIMED_PID" 2>/dev/null || break
    sleep 0.005
  done
  [ -n "$ready" ] || { cat "$WORK/agent-$node.log"; die "agent on $node not ready within 15 s"; }
  READY_MS=$(( (ready - start) / 1000000 ))
}

# timed_agent_stop: TERM the agent timed_agent_start began, KILL after 5 s.
timed_agent_stop() {
  kill -TERM "$TIMED_PID"
  for _ in $(seq 50); do kill -0 "$TIMED_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$TIMED_PID" 2>/dev/null || true
  wait "$TIMED_PID" 2>/dev/null || true
  AGENT_PIDS=()
}
