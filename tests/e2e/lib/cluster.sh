# Shared by the end-to-end scenarios: a meshsim cluster with one meshlock
# agent per node (each in its node's network namespace, with its own pin
# directory and state), meshlock's CA service holding the only CA key (a
# plug-in CA made with the openssl CLI, in $WORK/ca, which no agent reads),
# and cleanup that runs whatever happens. Source it, then call cluster_up SPEC.
set -euo pipefail

BIN=${MESHLOCK_BIN_DIR:?set MESHLOCK_BIN_DIR to the build bin directory}
MESHSIM="$BIN/meshsim"
PEER="$BIN/meshlock-testpeer"
AGENT="$BIN/meshlock-agent"
CTL="$BIN/meshlockctl"
RUN="${E2E_NAME:-e2e}-$$"
RUN=${RUN:0:20}
WORK=$(mktemp -d "/tmp/meshlock-$RUN.XXXXXX")
AGENT_PIDS=()
declare -A AGENT_PID_OF=()  # node → pid of its newest agent
BG_PIDS=()
EXTRA_PIN_DIRS=()  # pin directories of extra agents a scenario ran: uninstalled at cleanup
NODES=()
failures=0

log() { printf '[%s %s] %s\n' "$RUN" "$(date +%T)" "$*"; }
fail() { log "FAIL: $*"; failures=$((failures + 1)); }
die() { log "FATAL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root"

cluster_cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${AGENT_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${AGENT_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  for node in "${NODES[@]}"; do
    "$AGENT" --uninstall --pin-dir "$(pin_dir "$node")" >/dev/null 2>&1
    [ ! -e "$(pin_dir "$node")" ] || fail "--uninstall left $(pin_dir "$node") behind"
  done
  for dir in "${EXTRA_PIN_DIRS[@]}"; do
    [ ! -e "$dir" ] || "$AGENT" --uninstall --pin-dir "$dir" >/dev/null 2>&1
    [ ! -e "$dir" ] || fail "--uninstall left $dir behind"
  done
  [ "${E2E_CA:-service}" = files ] || assert_no_ca_key_on_nodes
  timeout 60 "$MESHSIM" down --name "$RUN" >/dev/null 2>&1
  if [ "$rc" != 0 ] || [ "$failures" != 0 ]; then
    for f in "$WORK"/agent-*.log "$WORK/ca.log"; do [ -e "$f" ] && { echo "---- $f (last 40 lines)"; tail -40 "$f"; }; done
  fi
  [ -n "${E2E_KEEP_WORK:-}" ] && cp -r "$WORK" "$E2E_KEEP_WORK" 2>/dev/null
  rm -rf "$WORK"
  [ "$failures" = 0 ] || { log "$failures failure(s)"; exit 1; }
  exit "$rc"
}
trap cluster_cleanup EXIT

pin_dir() { echo "/sys/fs/bpf/meshlock-$RUN-$1"; }

# A plug-in CA in Istio's cacerts layout: root → intermediate (ca-cert).
make_ca() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 \
      -subj "/O=meshlock-e2e/CN=root" -keyout root-key.pem -out root-cert.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=meshlock-e2e/CN=intermediate" \
      -keyout ca-key.pem -out ca.csr 2>/dev/null
    printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >ca.ext
    openssl x509 -req -in ca.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial -days 2 \
      -extfile ca.ext -out ca-cert.pem 2>/dev/null
    cat ca-cert.pem root-cert.pem >cert-chain.pem
    rm -f ca.csr ca.ext root-key.pem root-cert.srl
    chmod 600 ca-key.pem
  )
}
# ext_leaf NAME SAN: a leaf from the CA make_ca made in $WORK/ext (server and
# client use): $WORK/NAME.pem, $WORK/NAME-key.pem, and $WORK/NAME-chain.pem
# (the leaf, then the intermediate).
ext_leaf() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$WORK/$1-key.pem" -out "$WORK/$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$WORK/$1.ext"
  openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/ext/ca-cert.pem" -CAkey "$WORK/ext/ca-key.pem" \
    -CAcreateserial -days 1 -extfile "$WORK/$1.ext" -out "$WORK/$1.pem" 2>/dev/null
  cat "$WORK/$1.pem" "$WORK/ext/ca-cert.pem" >"$WORK/$1-chain.pem"
}

status_json() { "$MESHSIM" status --name "$RUN" -o json; }
node_field() { status_json | /usr/bin/python3 -c "import json,sys; n=[x for x in json.load(sys.stdin)['nodes'] if x['name']=='$1'][0]; print(n['$2'])"; }

# How agents read the cluster: meshsim's Kubernetes API with the agent's own
# service-account token and RBAC (the default, as in a real cluster), or the
# manifest directory meshsim mirrors (E2E_SOURCE=manifests, the offline mode).
agent_source() {
  if [ "${E2E_SOURCE:-api}" = manifests ]; then
    echo "--manifests /run/meshsim/$RUN/manifests"
  else
    echo "--kubeconfig $("$MESHSIM" kubeconfig --agent --name "$RUN")"
  fi
}

# The mesh's CA: `meshlock-agent ca` in the first node's network namespace on
# its node IP (a CA pod with hostNetwork would sit there), reading the API
# in-cluster as meshlock-system/meshlock-ca with deploy/ca's RBAC; the only
# process that reads $WORK/ca (its cacerts Secret). It publishes the root in
# the ConfigMap meshlock-ca-root-cert; the agents trust what kubectl reads there.
CA_NAME=meshlock-ca.meshlock-system.svc
CA_ADDRESS=""
start_ca() {
  local node=${1:-${NODES[0]}} ip netns sa=$WORK/ca-serviceaccount log=$WORK/ca.log
  ip=$(node_field "$node" nodeIP)
  netns=$(node_field "$node" netnsPath)
  mkdir -p "$sa" "$WORK/ca-root"
  "$MESHSIM" token --name "$RUN" -n meshlock-system --service-account meshlock-ca --file "$sa/token" >/dev/null ||
    die "meshsim token for meshlock-ca failed"
  cp "/run/meshsim/$RUN/kube/serviceaccount/ca.crt" "$sa/ca.crt"
  echo meshlock-system >"$sa/namespace"
  # (CA_CPUS: pinned to those CPUs, for the benchmark)
  KUBERNETES_SERVICE_HOST=172.18.0.1 KUBERNETES_SERVICE_PORT=6443 ${CA_CPUS:+taskset -c "$CA_CPUS"} \
    nsenter --net="$netns" "$AGENT" ca \
    --service-account-dir "$sa" --ca-dir "$WORK/ca" --listen "$ip:15012" --admin-address "$ip:15014" \
    --serving-name "$CA_NAME" "$@" >>"$log" 2>&1 &
  BG_PIDS+=($!)
  CA_PID=$!
  for _ in $(seq 150); do
    nsenter --net="$netns" curl -fsS -o /dev/null "http://$ip:15014/ready" 2>/dev/null && break
    kill -0 "$CA_PID" 2>/dev/null || { cat "$log"; die "meshlock-agent ca exited"; }
    sleep 0.1
  done
  nsenter --net="$netns" curl -fsS -o /dev/null "http://$ip:15014/ready" || { cat "$log"; die "the CA is not ready in 15 s"; }
  for _ in $(seq 100); do
    kubectl_admin -n meshlock-system get configmap meshlock-ca-root-cert -o 'jsonpath={.data.root-cert\.pem}' \
      >"$WORK/ca-root/root-cert.pem" 2>/dev/null && [ -s "$WORK/ca-root/root-cert.pem" ] && break
    sleep 0.1
  done
  [ -s "$WORK/ca-root/root-cert.pem" ] || { cat "$log"; die "the CA did not publish its root in 10 s"; }
  CA_ADDRESS="$ip:15012"
  log "CA up at $CA_ADDRESS (pid $CA_PID), root from ConfigMap meshlock-system/meshlock-ca-root-cert"
}

# How an agent gets certificates: from the CA service with a token bound to
# its node's meshlock-agent pod (audience istio-ca), as the DaemonSet's
# projected token is. E2E_CA=files hands it the CA directory instead;
# E2E_CA=own: the scenario passes its own CA flags (scenario 27's istiod).
agent_ca_flags() {
  local node=$1
  case ${E2E_CA:-service} in
    files) echo "--ca-mode files --ca-dir $WORK/ca"; return ;;
    own) return ;;
  esac
  [ -n "$CA_ADDRESS" ] || die "agent_ca_flags: start_ca first"
  [ -s "$WORK/token-$node" ] || "$MESHSIM" token --name "$RUN" -n meshlock-system --service-account meshlock-agent \
    --pod "meshlock-agent-$node" --audience istio-ca --file "$WORK/token-$node" >/dev/null ||
    die "meshsim token for the agent of $node failed"
  echo "--ca-mode istiod --ca-address $CA_ADDRESS --ca-server-name $CA_NAME --ca-root-file $WORK/ca-root/root-cert.pem" \
    "--ca-token-file $WORK/token-$node"
}

# No node holds a CA key: nothing in an agent's state directory is a private
# key of a CA certificate (the issue's test: the key lives with the CA only).
assert_no_ca_key_on_nodes() {
  local node found
  for node in "${NODES[@]}"; do
    found=$(find "$WORK/state-$node" -name 'ca-key.pem' -o -name '*root*key*' 2>/dev/null | head -1)
    [ -z "$found" ] || fail "$node holds a CA key: $found"
  done
}

start_agent() {
  local node=$1; shift
  local netns cgroup_root ready_before src
  netns=$(node_field "$node" netnsPath)
  src=$(agent_source)
  cgroup_root=$(node_field "$node" cgroupRoot)
  # A restarted agent appends to the same log: wait for one more ready line.
  ready_before=$(grep -c "ready: node $node" "$WORK/agent-$node.log" 2>/dev/null || true)
  # The agent runs in a cgroup of its own beside the node's kubepods, as its
  # DaemonSet pod would (the pod-local shortcut hooks the agent's sockets
  # there). nsenter switches only the network namespace: `ip netns exec`
  # would also remount /sys and hide bpffs and the cgroup2 mount.
  local agent_cgroup="$cgroup_root/meshlock-agent"
  mkdir -p "$agent_cgroup"
  (
    echo "$BASHPID" >"$agent_cgroup/cgroup.procs"
    exec nsenter --net="$netns" "$AGENT" run --node "$node" $src \
      --cgroup-root "$cgroup_root" --bpf-pin-dir "$(pin_dir "$node")" --state-dir "$WORK/state-$node" \
      $(agent_ca_flags "$node") --admin-socket "$WORK/admin-$node.sock" --drain-deadline "${DRAIN_DEADLINE:-3}" \
      --pod-leg-shortcut "${E2E_POD_LEG_SHORTCUT:-off}" "$@"
  ) >>"$WORK/agent-$node.log" 2>&1 &
  AGENT_PIDS+=($!)
  AGENT_PID_OF[$node]=$!
  local logged=""
  for _ in $(seq 100); do
    [ "$(grep -c "ready: node $node" "$WORK/agent-$node.log" 2>/dev/null)" -gt "${ready_before:-0}" ] 2>/dev/null && { logged=1; break; }
    kill -0 "${AGENT_PIDS[-1]}" 2>/dev/null || { cat "$WORK/agent-$node.log"; die "agent on $node exited"; }
    sleep 0.1
  done
  [ -n "$logged" ] || { cat "$WORK/agent-$node.log"; die "agent on $node not ready in 10 s"; }
  # Then /ready: every pod of the node served, which with a remote CA is once
  # their certificates came. START_AGENT_READY=log stops at the log line (a
  # scenario that starts an agent whose pods cannot be served).
  [ "${START_AGENT_READY:-serving}" = log ] && return 0
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --unix-socket "$WORK/admin-$node.sock" http://agent/ready)" = 200 ] &&
      return 0
    sleep 0.1
  done
  cat "$WORK/agent-$node.log"
  die "agent on $node: /ready not 200 within 10 s of its ready line"
}

# restart_agents: SIGTERM every agent (SIGKILL after 10 s), then a fresh one
# per node, each up to /ready (the benchmarks' fresh agents between setups).
restart_agents() {
  local pid node
  for pid in "${AGENT_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${AGENT_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  AGENT_PIDS=()
  for node in "${NODES[@]}"; do rm -f "$WORK/admin-$node.sock"; start_agent "$node"; done
}

# cluster_up SPEC [agent flags...]: meshsim cluster plus one agent per node.
cluster_up() {
  local spec=$1; shift
  make_ca "$WORK/ca"
  "$MESHSIM" up "$spec" --name "$RUN" >"$WORK/up.log" || { cat "$WORK/up.log"; die "meshsim up failed"; }
  mapfile -t NODES < <(status_json | python3 -c "import json,sys; [print(n['name']) for n in json.load(sys.stdin)['nodes']]")
  [ "${E2E_CA:-service}" != service ] || start_ca
  for node in "${NODES[@]}"; do start_agent "$node" "$@"; done
  log "cluster $RUN up: nodes ${NODES[*]}"
}

in_pod() { local pod=$1; shift; "$MESHSIM" exec --name "$RUN" "$pod" -- "$@"; }

# wait_listening POD PORT [TIMEOUT]: wait until something in POD listens on
# TCP PORT (polled with ss in the pod's network namespace), up to TIMEOUT
# seconds (default 10); 1 if nothing did by then.
wait_listening() {
  local pod=$1 port=$2 timeout=${3:-10} deadline
  deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
  while :; do
    [ -n "$(in_pod "$pod" ss -Hltn "sport = :$port" 2>/dev/null)" ] && return 0
    [ "$(date +%s%N)" -lt "$deadline" ] || break
    sleep 0.05
  done
  log "nothing listens on $pod port $port after $timeout s"
  return 1
}

# serve POD PORT: a testpeer echo server in the pod, stopped at cleanup;
# returns once it listens.
serve() {
  local out="$WORK/serve-${1//\//_}-$2.log"
  in_pod "$1" "$PEER" serve --port "$2" >>"$out" 2>&1 &
  BG_PIDS+=($!)
  wait_listening "$1" "$2" || die "serve $1 $2: the server did not start listening: $(cat "$out")"
}

# send FROM TO [BYTES]: 0 if the bytes came back intact.
send() { in_pod "$1" "$PEER" send --to "$2" --bytes "${3:-65536}" --timeout 5 >/dev/null 2>&1; }

# held_echo NAME FROM [IP/PORT]: a connection from pod FROM (default target
# web, 10.244.1.10/8080) that echoes a line, waits for $WORK/NAME.go, then
# echoes another. HELD_PID exits 0 only if both came back (4: the second read
# failed, i.e. the connection was closed in between). Returns once it is open.
held_echo() {
  local name=$1 from=$2 target=${3:-10.244.1.10/8080}
  in_pod "$from" bash -c "exec 3<>/dev/tcp/$target || exit 1
    echo one >&3; read -t 3 a <&3 || exit 2; [ \"\$a\" = one ] || exit 3
    touch $WORK/$name.open
    for i in \$(seq 300); do [ -e $WORK/$name.go ] && break; sleep 0.1; done
    echo two >&3; read -t 3 b <&3 || exit 4; [ \"\$b\" = two ] || exit 5" &
  HELD_PID=$!
  BG_PIDS+=($!)  # stopped at cleanup should the scenario end before it does
  for _ in $(seq 100); do [ -e "$WORK/$name.open" ] && return 0; sleep 0.1; done
  fail "held connection $name did not open in 10 s"
}

# mesh_leaf NAME SPIFFE_ID [CA_DIR]: a P-256 leaf for the identity, signed by
# CA_DIR's ca-cert (default: the run's mesh CA), as $WORK/NAME.pem and
# $WORK/NAME-key.pem: a peer with a mesh certificate that meshlock did not issue.
mesh_leaf() {
  local ca=${3:-$WORK/ca}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=e2e" \
    -keyout "$WORK/$1-key.pem" -out "$WORK/$1.csr" 2>/dev/null
  printf 'subjectAltName=critical,URI:%s\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth,serverAuth\n' "$2" >"$WORK/$1.ext"
  openssl x509 -req -in "$WORK/$1.csr" -CA "$ca/ca-cert.pem" -CAkey "$ca/ca-key.pem" -CAcreateserial \
    -days 1 -extfile "$WORK/$1.ext" -out "$WORK/$1.pem" 2>/dev/null
}

expect_ok() { send "$1" "$2" || fail "$1 -> $2: expected the bytes back intact"; }
expect_refused() { if send "$1" "$2"; then fail "$1 -> $2: expected refused, got through"; fi; }

agent_log() { cat "$WORK/agent-$1.log"; }
manifests_dir() { echo "/run/meshsim/$RUN/manifests"; }
# kubectl as the cluster admin, against the run's API server.
KUBECTL=${KUBECTL:-$BIN/../tools/kubernetes-client/usr/bin/kubectl}
kubectl_admin() { "$KUBECTL" --kubeconfig "$("$MESHSIM" kubeconfig --name "$RUN")" "$@"; }
# apply FILE: `kubectl apply -f` as a user would, then meshsim's data plane
# (its kube-proxy rules) catches up and the agents get their second to react.
apply() {
  kubectl_admin apply -f "$1" >/dev/null || die "kubectl apply -f $1 failed"
  "$MESHSIM" apiserver flush --name "$RUN" >/dev/null
  sleep 1.2
}

# capture_counter NODE NAME: one BPF capture counter of NODE's agent, read
# from its pins (also while the agent is down).
capture_counter() {
  "$AGENT" capture-status --pin-dir "$(pin_dir "$1")" | python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['$2'])"
}
# agent_status NODE EXPR: a field of NODE's /status, EXPR a python expression on s.
agent_status() {
  "$CTL" status --admin "unix:$WORK/admin-$1.sock" -o json | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)"
}
# wire NAME CMD...: run CMD while capturing every node link to $WORK/NAME.pcap.
wire() {
  local name=$1; shift
  local fabric dump rc=0
  fabric=$(status_json | python3 -c "import json,sys; print(json.load(sys.stdin)['fabricNetns'])")
  ip netns exec "$fabric" tcpdump -Z root --immediate-mode -i any -U -w "$WORK/$name.pcap" tcp 2>"$WORK/$name.tcpdump" &
  dump=$!
  for _ in $(seq 100); do grep -qs "listening on" "$WORK/$name.tcpdump" && break; sleep 0.1; done
  if ! grep -qs "listening on" "$WORK/$name.tcpdump"; then  # (wire may run in $(...): no die)
    kill "$dump" 2>/dev/null || true
    wait "$dump" 2>/dev/null || true
    log "wire $name: tcpdump did not start in 10 s: $(cat "$WORK/$name.tcpdump" 2>/dev/null)" >&2
    return 1
  fi
  "$@" || rc=$?
  sleep 1
  kill "$dump" 2>/dev/null || true
  wait "$dump" 2>/dev/null || true
  return $rc
}
# stop_agent NODE SIGNAL: signal NODE's newest agent and wait until it is gone
# (up to 30 s); STOPPED_MS says how long that took. Not in $(...): the agent
# must stay this shell's child to be reaped.
stop_agent() {
  local pid=${AGENT_PID_OF[$1]} start
  start=$(date +%s%N)
  kill -"$2" "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "agent $pid on $1 still running 30 s after SIG$2"
  wait "$pid" 2>/dev/null || true
  STOPPED_MS=$(( ($(date +%s%N) - start) / 1000000 ))
}
# surge_upgrade NODE ROUND: the DaemonSet's surge (docs/upgrade.md): a new
# agent starts beside NODE's running one (admin and metrics ports of its own
# in the node's netns, numbered by ROUND) and takes over its admin socket;
# the old one gets SIGTERM, hands its established connections over and must
# exit within 15 s. Sets UPGRADE_GONE_MS (SIGTERM to exit) and UPGRADE_LINE
# (the old agent's handover log line) and appends "NODE ROUND MS LINE" to
# $WORK/handovers; a failure is counted with fail.
surge_upgrade() {
  local node=$1 round=$2 old sigterm rc=0 began
  old=${AGENT_PID_OF[$node]}
  began=$(date +%s.%N)
  start_agent "$node" --admin-socket-take-over on --admin-address "127.0.0.1:$((15100 + round))" \
    --metrics-address "127.0.0.1:$((15200 + round))"
  sigterm=$(date +%s%N)
  kill -TERM "$old"
  for _ in $(seq 150); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$old" 2>/dev/null; then
    fail "$node round $round: the old agent still runs 15 s after SIGTERM"
    return
  fi
  wait "$old" || rc=$?
  [ "$rc" = 0 ] || fail "$node round $round: the old agent exited $rc"
  UPGRADE_GONE_MS=$(( ($(date +%s%N) - sigterm) / 1000000 ))
  UPGRADE_LINE=$(grep -o "handover: [0-9]* established connections taken.*" "$WORK/agent-$node.log" | tail -1)
  [ -n "$UPGRADE_LINE" ] || fail "$node round $round: no handover logged"
  # The new agent's figure: each connection's pause, its old agent's last read to its adoption.
  UPGRADE_PAUSE=$(grep -o "each connection paused p50 [^(]*" "$WORK/agent-$node.log" | tail -1)
  echo "$node $round $UPGRADE_GONE_MS $UPGRADE_LINE" >>"$WORK/handovers"
  echo "$node $round $began $(date +%s.%N)" >>"$WORK/upgrades"  # wall clock: the new agent's start to the old one's exit
}
