#!/usr/bin/env bash
# Engine benchmark: plaintext direct vs a meshlock originate→terminate pair vs
# an HAProxy pair vs a stunnel pair, over loopback, each proxy process given
# one thread. Prints a Markdown section (called by tests/bench/run.sh, or alone:
# `bash tests/bench/engine/run.sh build`). Figures: iperf3 throughput (1 and 8
# streams) with proxy CPU seconds per GB, and sockperf ping-pong latency.
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../../.." && pwd)
agent="$build/bin/meshlock-agent"
secs=${MESHLOCK_BENCH_SECONDS:-5}
work=$(mktemp -d /tmp/meshlock-bench-engine-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bash "$root/tests/agent/engine/make_test_pki.sh" "$work/pki" >/dev/null
pki="$work/pki"
cat "$pki/client.pem" "$pki/client.key" > "$pki/client-combined.pem"
cat "$pki/server.pem" "$pki/server.key" > "$pki/server-combined.pem"

APP=25201     # iperf3 / sockperf server
start_port=25210

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { local t=0; for p in "$@"; do [ -n "$p" ] || continue; t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }

# Each setup starts its processes and sets ENTRY (the port clients use) and PROXY_PIDS.
setup_direct() { ENTRY=$APP; PROXY_PIDS=(); }

setup_meshlock() {
  local o=$start_port t=$((start_port + 1))
  "$agent" proxy --mode terminate --listen 127.0.0.1:$t --connect 127.0.0.1:$APP --threads 1 \
    --cert "$pki/server.pem" --key "$pki/server.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/client --min-tls 1.3 >/dev/null 2>&1 &
  local tp=$!
  "$agent" proxy --mode originate --listen 127.0.0.1:$o --connect 127.0.0.1:$t --threads 1 \
    --cert "$pki/client.pem" --key "$pki/client.key" --ca "$pki/ca.pem" \
    --expect-identity spiffe://cluster.local/ns/shop/sa/server --min-tls 1.3 >/dev/null 2>&1 &
  local op=$!
  pids+=("$tp" "$op"); PROXY_PIDS=("$op" "$tp"); ENTRY=$o
  wait_port $o; wait_port $t
}

setup_haproxy() {
  local o=$((start_port + 2)) t=$((start_port + 3))
  cat > "$work/haproxy-o.cfg" <<CFG
global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fo
  bind 127.0.0.1:$o
  default_backend bo
backend bo
  server t 127.0.0.1:$t ssl crt $pki/client-combined.pem ca-file $pki/ca.pem verify required ssl-min-ver TLSv1.3
CFG
  cat > "$work/haproxy-t.cfg" <<CFG
global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend ft
  bind 127.0.0.1:$t ssl crt $pki/server-combined.pem ca-file $pki/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend bt
backend bt
  server app 127.0.0.1:$APP
CFG
  haproxy -f "$work/haproxy-t.cfg" -db >/dev/null 2>&1 & local tp=$!
  haproxy -f "$work/haproxy-o.cfg" -db >/dev/null 2>&1 & local op=$!
  pids+=("$tp" "$op"); PROXY_PIDS=("$op" "$tp"); ENTRY=$o
  wait_port $o; wait_port $t
}

setup_stunnel() {
  local o=$((start_port + 4)) t=$((start_port + 5))
  cat > "$work/stunnel-o.conf" <<CFG
foreground = yes
pid =
[o]
client = yes
accept = 127.0.0.1:$o
connect = 127.0.0.1:$t
cert = $pki/client.pem
key = $pki/client.key
CAfile = $pki/ca.pem
verifyChain = yes
sslVersionMin = TLSv1.3
CFG
  cat > "$work/stunnel-t.conf" <<CFG
foreground = yes
pid =
[t]
accept = 127.0.0.1:$t
connect = 127.0.0.1:$APP
cert = $pki/server.pem
key = $pki/server.key
CAfile = $pki/ca.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
CFG
  stunnel "$work/stunnel-t.conf" >/dev/null 2>&1 & local tp=$!
  stunnel "$work/stunnel-o.conf" >/dev/null 2>&1 & local op=$!
  pids+=("$tp" "$op"); PROXY_PIDS=("$op" "$tp"); ENTRY=$o
  wait_port $o; wait_port $t
}

stop_setup() {
  for p in "${PROXY_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
}

# iperf3 through ENTRY with $1 streams: prints "Gbit/s cpu-s/GB".
throughput() {
  local streams=$1 before after json
  before=$(cpu_ticks "${PROXY_PIDS[@]:-}")
  sleep 1  # the iperf3 server takes a moment to accept the next test
  json=$(iperf3 -c 127.0.0.1 -p "$ENTRY" -t "$secs" -P "$streams" -J 2>/dev/null) || true
  after=$(cpu_ticks "${PROXY_PIDS[@]:-}")
  python3 - "$json" "$before" "$after" "$(getconf CLK_TCK)" "${#PROXY_PIDS[@]}" <<'PY'
import json, sys
try:
    d = json.loads(sys.argv[1])
    rx = d["end"]["sum_received"]
except (ValueError, KeyError):
    print("failed -")
    sys.exit(0)
hz = int(sys.argv[4])
gbit = rx["bits_per_second"] / 1e9
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / hz
gb = rx["bytes"] / 1e9
print(f"{gbit:.2f} {cpu / gb:.2f}" if int(sys.argv[5]) else f"{gbit:.2f} -")
PY
}

# sockperf ping-pong through ENTRY: prints "p50 p99 p99.9" in µs.
latency() {
  sockperf pp --tcp -i 127.0.0.1 -p "$ENTRY" -m "$1" -t "$secs" 2>&1 |
    awk '/percentile 50.000/ {p50=$NF} /percentile 99.000/ {p99=$NF} /percentile 99.900/ {p999=$NF}
         END {printf "%s %s %s\n", p50, p99, p999}'
}

iperf3 -s -p $APP -D -I "$work/iperf3.pid" --logfile "$work/iperf3.log"
sleep 0.3
results=()
for setup in direct meshlock haproxy stunnel; do
  "setup_$setup"
  read -r g1 c1 < <(throughput 1)
  read -r g8 c8 < <(throughput 8)
  results+=("$setup $g1 $c1 $g8 $c8")
  stop_setup
done
kill "$(cat "$work/iperf3.pid")" 2>/dev/null || true

APP=$((APP + 1))  # a fresh port: the iperf3 daemon may still be going away
sockperf sr --tcp -i 127.0.0.1 -p $APP >/dev/null 2>&1 & pids+=($!)
sleep 0.3
lat=()
for setup in direct meshlock haproxy stunnel; do
  "setup_$setup"
  read -r a b c < <(latency 64) || true
  read -r d e f < <(latency 1024) || true
  lat+=("$setup ${a:--} ${b:--} ${c:--} ${d:--} ${e:--} ${f:--}")
  stop_setup
done

echo "Loopback, one thread per proxy process, TLS 1.3 with client certificates (ECDSA P-256)."
echo "Run with \`bash tests/bench/engine/run.sh $build\` (iperf3 -t $secs -P 1|8; sockperf pp --tcp -t $secs -m 64|1024)."
echo
echo "| setup | 1 stream Gbit/s | proxy CPU-s/GB | 8 streams Gbit/s | proxy CPU-s/GB |"
echo "| --- | ---: | ---: | ---: | ---: |"
for r in "${results[@]}"; do set -- $r; echo "| $1 | $2 | $3 | $4 | $5 |"; done
echo
echo "| setup | 64 B p50 µs | p99 | p99.9 | 1 KiB p50 µs | p99 | p99.9 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in "${lat[@]}"; do set -- $r; echo "| $1 | $2 | $3 | $4 | $5 | $6 | $7 |"; done
echo
if [ -x "$build/bin/engine_crypto_speed" ]; then
  echo "Crypto floor of the linked BoringSSL (\`$build/bin/engine_crypto_speed\`, one thread):"
  echo
  echo "| operation | rate |"
  echo "| --- | ---: |"
  "$build/bin/engine_crypto_speed"
  echo
fi
echo "Not measured by this script yet: handshakes/s (full and resumed), CPU per 1000 requests, RSS at idle and with 10,000 idle connections (see docs/engine.md for the idle-connection figure from the e2e test)."
