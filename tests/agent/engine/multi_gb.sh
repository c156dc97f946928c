#!/usr/bin/env bash
# Multi-gigabyte relay through a real `meshlock-agent proxy` pair (originate →
# mTLS → terminate, separate processes): two streams of 2 GiB each way at
# once, every byte checked in order (meshlock-testpeer's FNV-1a over a
# pseudo-random stream), with half-close at the end. The unit relay test moves
# 1 GiB in-process; this is the issue's "checksummed multi-GB transfers".
set -euo pipefail
BIN=${MESHLOCK_BIN_DIR:?set MESHLOCK_BIN_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
BYTES=${MESHLOCK_MULTI_GB_BYTES:-2147483648}
work=$(mktemp -d /tmp/meshlock-multigb-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bash "$HERE/make_test_pki.sh" "$work/pki" >/dev/null
pki="$work/pki"
agent="$BIN/meshlock-agent"
source "$HERE/proxy_pair.sh"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app=$(free_port) term=$(free_port) orig=$(free_port)

"$BIN/meshlock-testpeer" serve --bind 127.0.0.1 --port "$app" --idle-timeout 120 >"$work/app.log" 2>&1 & pids+=($!)
proxy_wait_port "$app"
start_proxy_pair "$app" "$orig" "$term"

start=$(date +%s)
senders=()
for seed in 11 12; do
  "$BIN/meshlock-testpeer" send --to "127.0.0.1:$orig" --bytes "$BYTES" --seed "$seed" --half-close --timeout 600 \
    >"$work/send-$seed.log" 2>&1 &
  senders+=($!)
done
status=0
for i in 0 1; do
  if ! wait "${senders[$i]}"; then
    echo "FAIL: stream $i: $(cat "$work/send-1$((i + 1)).log")" >&2
    status=1
  fi
done
elapsed=$(( $(date +%s) - start ))
total_gib=$(( BYTES * 2 * 2 / 1073741824 ))
if [ "$status" = 0 ]; then
  echo "ok: 2 streams x $BYTES bytes each way (${total_gib} GiB through the pair) arrived intact and in order in ${elapsed}s"
else
  echo "--- originate"; tail -5 "$work/originate.log"; echo "--- terminate"; tail -5 "$work/terminate.log"
fi
exit $status
