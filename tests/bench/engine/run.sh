#!/usr/bin/env bash
# Engine benchmark (issue 5 item 7): plaintext direct vs a meshlock
# originate→terminate pair vs an HAProxy pair vs a stunnel pair, over
# loopback, each proxy process given one thread (stunnel: its one-thread-per-
# connection model is all it has). Prints a Markdown section (called by
# tests/bench/run.sh, or alone: `bash tests/bench/engine/run.sh build`).
#
# Figures: iperf3 throughput (1 and 8 streams) with proxy CPU-s per GB;
# sockperf latency p50/p99/p99.9 (64 B and 1 KiB) at saturation (ping-pong)
# and at a fixed rate (under-load), with proxy CPU per 1000 requests; new
# connections/s with full handshakes and with resumption, with proxy CPU per
# connection (meshlock-connbench); RSS at idle and with N idle connections.
#
# Environment: MESHLOCK_BENCH_SECONDS (per measurement, default 10),
# MESHLOCK_BENCH_RATE (fixed-rate messages/s, default 2000),
# MESHLOCK_BENCH_IDLE (idle connections, default 10000; capped by the file
# descriptor limit: each proxy holds two per connection),
# MESHLOCK_BENCH_CONCURRENCY (connections in flight for conn/s, default 32).
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../../.." && pwd)
agent="$build/bin/meshlock-agent"
connbench="$build/bin/meshlock-connbench"
secs=${MESHLOCK_BENCH_SECONDS:-10}
rate=${MESHLOCK_BENCH_RATE:-2000}
idle_wanted=${MESHLOCK_BENCH_IDLE:-10000}
concurrency=${MESHLOCK_BENCH_CONCURRENCY:-32}
for bin in "$agent" "$connbench"; do
  [ -x "$bin" ] || cmake --build "$build" --target "$(basename "$bin")" >/dev/null
done

# Idle connections need descriptors: two per connection in each proxy.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
idle=$(( (fd_limit - 200) / 2 ))
[ "$idle" -lt "$idle_wanted" ] || idle=$idle_wanted

work=$(mktemp -d /tmp/meshlock-bench-engine-XXXXXX)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$root/tests/agent/engine/make_test_pki.sh" "$work/pki" >/dev/null
pki="$work/pki"
cat "$pki/client.pem" "$pki/client.key" > "$pki/client-combined.pem"
cat "$pki/server.pem" "$pki/server.key" > "$pki/server-combined.pem"

results="$work/results"  # lines: setup metric value
: > "$results"
record() { echo "$1 $2 $3" >> "$results"; }
progress() { echo "engine bench: $*" >&2; }

# Ports: the app servers, then two per proxy pair.
IPERF=25201 SOCKPERF=25202 ECHO=25203
port_base=25210

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
wait_port_free() { for _ in $(seq 100); do port_open "$1" || return 0; sleep 0.05; done; return 1; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

# setup_NAME APP RESUME: starts the pair in front of APP, sets ENTRY (the port
# clients use), ORIG/TERM (the proxy pids, empty for direct). RESUME=1: the
# originating side resumes TLS sessions; 0: every handshake is a full one.
setup_direct() { ENTRY=$1; ORIG=; TERM_PID=; }

setup_meshlock() {
  local app=$1 resume=$2 o=$port_base t=$((port_base + 1)) flags=()
  [ "$resume" = 1 ] && flags+=(--resume)
  "$agent" proxy --mode terminate --listen 127.0.0.1:$t --connect 127.0.0.1:$app --threads 1 \
    --cert "$pki/server.pem" --key "$pki/server.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/client --min-tls 1.3 \
    --max-connections 200000 >"$work/meshlock-t.log" 2>&1 &
  TERM_PID=$!; pids+=("$TERM_PID")
  "$agent" proxy --mode originate --listen 127.0.0.1:$o --connect 127.0.0.1:$t --threads 1 \
    --cert "$pki/client.pem" --key "$pki/client.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/server --min-tls 1.3 \
    --max-connections 200000 "${flags[@]}" >"$work/meshlock-o.log" 2>&1 &
  ORIG=$!; pids+=("$ORIG")
  ENTRY=$o
  wait_port $t && wait_port $o
}

# The same pair speaking HBONE (docs/hbone.md): every connection a stream of
# one pooled tunnel, so a new connection costs a stream, not a handshake.
setup_meshlock_hbone() {
  local app=$1 o=$((port_base + 6)) t=$((port_base + 7))
  "$agent" proxy --mode terminate --hbone --listen 127.0.0.1:$t --connect 127.0.0.1:$app --threads 1 \
    --cert "$pki/server.pem" --key "$pki/server.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/client \
    --max-connections 200000 >"$work/meshlock_hbone-t.log" 2>&1 &
  TERM_PID=$!; pids+=("$TERM_PID")
  "$agent" proxy --mode originate --hbone --hbone-target 127.0.0.1:$app --listen 127.0.0.1:$o --connect 127.0.0.1:$t \
    --threads 1 --cert "$pki/client.pem" --key "$pki/client.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/server \
    --max-connections 200000 >"$work/meshlock_hbone-o.log" 2>&1 &
  ORIG=$!; pids+=("$ORIG")
  ENTRY=$o
  wait_port $t && wait_port $o
}

# TLS 1.3 with AES-128-GCM only, the suite the issue's crypto floor assumes
# (OpenSSL would otherwise pick AES-256-GCM); client certificates required.
setup_haproxy() {
  local app=$1 resume=$2 o=$((port_base + 2)) t=$((port_base + 3)) reuse=""
  [ "$resume" = 1 ] || reuse="no-ssl-reuse"
  local global="global
  nbthread 1
  maxconn $((idle + 50))
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h"
  cat > "$work/haproxy-o.cfg" <<CFG
$global
frontend fo
  bind 127.0.0.1:$o
  default_backend bo
backend bo
  server t 127.0.0.1:$t ssl crt $pki/client-combined.pem ca-file $pki/ca.pem verify required ssl-min-ver TLSv1.3 $reuse
CFG
  cat > "$work/haproxy-t.cfg" <<CFG
$global
frontend ft
  bind 127.0.0.1:$t ssl crt $pki/server-combined.pem ca-file $pki/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend bt
backend bt
  server app 127.0.0.1:$app
CFG
  haproxy -f "$work/haproxy-t.cfg" -db >"$work/haproxy-t.log" 2>&1 & TERM_PID=$!; pids+=("$TERM_PID")
  haproxy -f "$work/haproxy-o.cfg" -db >"$work/haproxy-o.log" 2>&1 & ORIG=$!; pids+=("$ORIG")
  ENTRY=$o
  wait_port $t && wait_port $o
}

setup_stunnel() {
  local app=$1 resume=$2 o=$((port_base + 4)) t=$((port_base + 5)) resumption=yes
  [ "$resume" = 1 ] || resumption=no
  # debug = 3 (errors only): at its default level stunnel logs every
  # connection, which cut its conn/s by ~5× here; HAProxy and meshlock log none.
  cat > "$work/stunnel-o.conf" <<CFG
foreground = yes
pid =
debug = 3
[o]
client = yes
accept = 127.0.0.1:$o
connect = 127.0.0.1:$t
cert = $pki/client.pem
key = $pki/client.key
CAfile = $pki/ca.pem
verifyChain = yes
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
sessionResume = $resumption
CFG
  cat > "$work/stunnel-t.conf" <<CFG
foreground = yes
pid =
debug = 3
[t]
accept = 127.0.0.1:$t
connect = 127.0.0.1:$app
cert = $pki/server.pem
key = $pki/server.key
CAfile = $pki/ca.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
sessionResume = $resumption
CFG
  stunnel "$work/stunnel-t.conf" >"$work/stunnel-t.log" 2>&1 & TERM_PID=$!; pids+=("$TERM_PID")
  stunnel "$work/stunnel-o.conf" >"$work/stunnel-o.log" 2>&1 & ORIG=$!; pids+=("$ORIG")
  ENTRY=$o
  wait_port $t && wait_port $o
}

proxy_pids() { [ -z "$ORIG" ] || echo "$ORIG $TERM_PID"; }

stop_setup() {
  local p proxied=$ORIG
  for p in $ORIG $TERM_PID; do kill "$p" 2>/dev/null || true; done
  for p in $ORIG $TERM_PID; do wait "$p" 2>/dev/null || true; done
  ORIG=; TERM_PID=
  [ -z "$proxied" ] || wait_port_free "$ENTRY" || true
}

# Runs "$@" and records the proxies' CPU seconds it took in CPU_S.
with_cpu() {
  local before after
  # shellcheck disable=SC2046
  before=$(cpu_ticks $(proxy_pids))
  "$@"
  # shellcheck disable=SC2046
  after=$(cpu_ticks $(proxy_pids))
  CPU_S=$(awk -v a="$after" -v b="$before" -v hz="$hz" 'BEGIN {printf "%.4f", (a - b) / hz}')
}

# iperf3 with $2 streams: records Gbit/s and proxy CPU-s/GB.
throughput() {
  local setup=$1 streams=$2 out="$work/iperf3.json"
  sleep 0.5  # the iperf3 server takes a moment to accept the next test
  with_cpu iperf3 -c 127.0.0.1 -p "$ENTRY" -t "$secs" -P "$streams" -J > "$out" 2>/dev/null || true
  python3 - "$out" "$CPU_S" "$setup" "$streams" >> "$results" <<'PY'
import json, sys
path, cpu, setup, streams = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    rx = json.load(open(path))["end"]["sum_received"]
except (ValueError, KeyError):
    sys.exit(0)
print(setup, f"gbit_{streams}", f"{rx['bits_per_second'] / 1e9:.3f}")
if setup != "direct":
    print(setup, f"cpu_gb_{streams}", f"{cpu / (rx['bytes'] / 1e9):.3f}")
PY
}

# sockperf KIND SIZE [args]: records p50/p99/p99.9 (µs) and, for ping-pong,
# proxy CPU ms per 1000 request/response pairs.
latency() {
  local setup=$1 kind=$2 size=$3; shift 3
  local out="$work/sockperf.txt"
  with_cpu sockperf "$kind" --tcp -i 127.0.0.1 -p "$ENTRY" -m "$size" -t "$secs" "$@" > "$out" 2>&1 || true
  awk -v s="$setup" -v k="${kind}_$size" -v cpu="$CPU_S" '
    /percentile 50.000/ {p50=$NF} /percentile 99.000/ {p99=$NF} /percentile 99.900/ {p999=$NF}
    /Total Run.*ReceivedMessages=/ {for (i = 1; i <= NF; i++) if ($i ~ /^ReceivedMessages=/) {split($i, a, "="); n=a[2]+0}}
    END {
      if (p50 == "") exit
      print s, k "_p50", p50; print s, k "_p99", p99; print s, k "_p999", p999
      if (s != "direct" && n > 0) print s, k "_cpu_ms_per_1000", sprintf("%.3f", cpu * 1e6 / n)
    }' "$out" >> "$results"
}

# New connections/s through ENTRY; records conn/s and proxy CPU ms per connection.
conn_rate() {
  local setup=$1 kind=$2
  sleep 1  # let the previous test's connections finish closing
  with_cpu "$connbench" rate --to "127.0.0.1:$ENTRY" --seconds "$secs" --concurrency "$concurrency" \
    > "$work/rate.out" 2>&1 || true
  { grep '^connections=' "$work/rate.out" || true; } | awk -v s="$setup" -v k="$kind" -v cpu="$CPU_S" '{
      for (i = 1; i <= NF; i++) {split($i, a, "="); v[a[1]] = a[2]}
      print s, "conn_" k, v["rate"]
      print s, "conn_" k "_errors", v["errors"]
      if (s != "direct" && v["connections"] > 0) print s, "conn_" k "_cpu_ms", sprintf("%.3f", cpu * 1000 / v["connections"])
    }' >> "$results"
}

# RSS of both proxies freshly started, before any connection.
fresh_memory() {
  [ -n "$ORIG" ] || return 0
  sleep 0.5
  record "$1" rss_idle_kib $(( $(rss_kib "$ORIG") + $(rss_kib "$TERM_PID") ))
}

# RSS of each proxy with $idle idle connections held open, per connection
# over what it had just before (after the conn/s run: allocator high-water
# from short connections is not counted as idle-connection memory).
idle_memory() {
  local setup=$1 line held
  [ -n "$ORIG" ] || return 0
  sleep 1
  local o0 t0 o1 t1
  o0=$(rss_kib "$ORIG"); t0=$(rss_kib "$TERM_PID")
  "$connbench" hold --to "127.0.0.1:$ENTRY" --count "$idle" --concurrency "$concurrency" > "$work/hold.out" 2>&1 &
  local holder=$!; pids+=("$holder")
  for _ in $(seq 3200); do grep -q '^held=' "$work/hold.out" && break; kill -0 $holder 2>/dev/null || break; sleep 0.1; done
  sleep 1
  line=$(grep '^held=' "$work/hold.out" || echo "held=0")
  held=$(echo "$line" | sed 's/held=\([0-9]*\).*/\1/')
  o1=$(rss_kib "$ORIG"); t1=$(rss_kib "$TERM_PID")
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  sleep 2  # the proxies close $held connections
  record "$setup" idle_held "$held"
  record "$setup" rss_held_kib $((o1 + t1))
  if [ "$held" -gt 0 ]; then
    record "$setup" idle_kib_per_conn_orig "$(awk -v a="$o1" -v b="$o0" -v n="$held" 'BEGIN {printf "%.2f", (a - b) / n}')"
    record "$setup" idle_kib_per_conn_term "$(awk -v a="$t1" -v b="$t0" -v n="$held" 'BEGIN {printf "%.2f", (a - b) / n}')"
  fi
}

setups=(direct meshlock meshlock_hbone haproxy stunnel)
ORIG=; TERM_PID=; ENTRY=

progress "iperf3 (${secs}s each)"
iperf3 -s -p $IPERF > "$work/iperf3-server.log" 2>&1 & pids+=($!)
sockperf sr --tcp -i 127.0.0.1 -p $SOCKPERF > "$work/sockperf-server.log" 2>&1 & pids+=($!)
"$connbench" serve --bind 127.0.0.1 --port $ECHO > "$work/echo-server.log" 2>&1 & pids+=($!)
wait_port $IPERF; wait_port $SOCKPERF; wait_port $ECHO

# start SETUP APP RESUME: 1 (and a note in the output) if the pair did not start.
failed_setups="$work/failed"
start() {
  "setup_$1" "$2" "$3" && return 0
  echo "- $1 did not start: $(cat "$work/$1"-*.log 2>/dev/null | grep -v '^\[NOTICE\]' | tail -2 | tr '\n' ' ')" >> "$failed_setups"
  progress "$1 did not start; skipping it"
  stop_setup
  return 1
}

for setup in "${setups[@]}"; do
  progress "$setup: throughput"
  start "$setup" $IPERF 0 || continue
  throughput "$setup" 1
  throughput "$setup" 8
  stop_setup
  progress "$setup: latency"
  start "$setup" $SOCKPERF 0 || continue
  latency "$setup" pp 64
  latency "$setup" pp 1024
  latency "$setup" ul 64 --mps "$rate" --reply-every 1
  latency "$setup" ul 1024 --mps "$rate" --reply-every 1
  stop_setup
  progress "$setup: connections (full handshakes), idle memory ($idle connections)"
  start "$setup" $ECHO 0 || continue
  fresh_memory "$setup"
  conn_rate "$setup" full
  idle_memory "$setup"
  [ "$setup" != meshlock ] || grep -h "first handshake" "$work/meshlock-o.log" | head -1 | sed 's/.*first handshake //' > "$work/meshlock-cipher" || true
  stop_setup
  # HBONE pools instead of resuming: its "full" run is already one handshake.
  if [ "$setup" != direct ] && [ "$setup" != meshlock_hbone ]; then
    progress "$setup: connections (resumption)"
    start "$setup" $ECHO 1 || continue
    conn_rate "$setup" resumed
    if [ "$setup" = meshlock ]; then
      # The counters printed at exit say how many handshakes were resumed.
      kill "$ORIG" "$TERM_PID"; wait "$ORIG" "$TERM_PID" 2>/dev/null || true
      awk '/handshakes=/ {for (i = 1; i <= NF; i++) {split($i, a, "="); v[a[1]] = a[2]}
           if (v["handshakes"] > 0) printf "meshlock conn_resumed_share %.3f\n", v["resumed"] / v["handshakes"]}' \
        "$work/meshlock-t.log" >> "$results"
    fi
    stop_setup
  fi
done

echo "Loopback, one thread per proxy process (\`--threads 1\`, HAProxy \`nbthread 1\`; stunnel has one thread per connection),"
echo "TLS 1.3 with client certificates (ECDSA P-256); HAProxy and stunnel limited to TLS_AES_128_GCM_SHA256;"
echo "meshlock negotiated: $(cat "$work/meshlock-cipher" 2>/dev/null || echo unknown)."
echo "Command: \`MESHLOCK_BENCH_SECONDS=$secs MESHLOCK_BENCH_RATE=$rate MESHLOCK_BENCH_IDLE=$idle_wanted bash tests/bench/engine/run.sh $build\`"
echo "(iperf3 -t $secs -P 1|8; sockperf ping-pong (saturation, one request in flight) and under-load --mps $rate --reply-every 1 (fixed rate), -m 64|1024, -t $secs;"
echo "meshlock-connbench rate --concurrency $concurrency --seconds $secs: connect, 1 byte each way, close; hold --count $idle: idle connections)."
echo "CPU figures are both proxy processes' utime+stime from /proc; RSS is VmRSS of both."
if [ "$idle" -lt "$idle_wanted" ]; then
  echo "Idle connections: $idle, not $idle_wanted: the file descriptor limit here is $fd_limit and each proxy holds two per connection."
fi
echo
if [ -s "$failed_setups" ]; then echo "**Setups that failed:**"; echo; cat "$failed_setups"; echo; fi
python3 "$root/tests/bench/table.py" engine "$results"
# tests/bench/run.sh hands the results on (the full path compares with HAProxy's).
[ -z "${MESHLOCK_BENCH_OUT:-}" ] || cp "$results" "$MESHLOCK_BENCH_OUT/engine.results"
echo
if [ -x "$build/bin/engine_crypto_speed" ]; then
  echo "Crypto floor of the linked BoringSSL (\`$build/bin/engine_crypto_speed\`, one thread):"
  echo
  echo "| operation | rate |"
  echo "| --- | ---: |"
  "$build/bin/engine_crypto_speed"
  echo
fi
