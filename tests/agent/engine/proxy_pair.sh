# Sourced by scripts that need a `meshlock-agent proxy` pair over loopback
# (tests/agent/engine/multi_gb.sh, tests/bench/profile.sh): the test PKI's
# client and server SPIFFE identities, originate → mTLS → terminate.
# Needs $agent (the meshlock-agent binary), $pki (make_test_pki.sh's output),
# $work (for logs) and a `pids` array the caller's cleanup kills.

proxy_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
proxy_wait_port() {
  for _ in $(seq 100); do proxy_port_open "$1" && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2
  return 1
}

# start_proxy_pair APP_PORT ORIG_PORT TERM_PORT [extra proxy flags...]: sets
# PAIR_ORIG and PAIR_TERM to the two pids; clients connect to ORIG_PORT.
start_proxy_pair() {
  local app=$1 orig=$2 term=$3
  shift 3
  "$agent" proxy --mode terminate --listen "127.0.0.1:$term" --connect "127.0.0.1:$app" \
    --cert "$pki/server.pem" --key "$pki/server.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/client "$@" >"$work/terminate.log" 2>&1 &
  PAIR_TERM=$!; pids+=("$PAIR_TERM")
  "$agent" proxy --mode originate --listen "127.0.0.1:$orig" --connect "127.0.0.1:$term" \
    --cert "$pki/client.pem" --key "$pki/client.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/server "$@" >"$work/originate.log" 2>&1 &
  PAIR_ORIG=$!; pids+=("$PAIR_ORIG")
  proxy_wait_port "$term" && proxy_wait_port "$orig" ||
    { echo "the proxy pair did not start: $(tail -2 "$work/terminate.log" "$work/originate.log")" >&2; return 1; }
}

stop_proxy_pair() { kill "$PAIR_ORIG" "$PAIR_TERM" 2>/dev/null; wait "$PAIR_ORIG" "$PAIR_TERM" 2>/dev/null || true; }
