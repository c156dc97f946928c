#!/usr/bin/env bash
# Issue 15's full-path figure: new mTLS connections/s from a client pod to a
# server pod through both agents, without AuthorizationPolicy and with 100 on
# the server (99 DENY rules by principal that never match, then the namespace
# ALLOW that does: every connection is decided against all of them), plus the
# agents' CPU per connection. Same cluster as run.sh. Prints a Markdown
# section; needs root. MESHLOCK_BENCH_SECONDS (default 10) per run,
# MESHLOCK_BENCH_AUTHZ_RUNS (default 3) alternating runs of each.
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
exec 3>&1 1>&2
secs=${MESHLOCK_BENCH_SECONDS:-10}
runs=${MESHLOCK_BENCH_AUTHZ_RUNS:-3}
concurrency=${MESHLOCK_BENCH_CONCURRENCY:-32}
export MESHLOCK_BIN_DIR="$build/bin"
E2E_NAME=benchaz
# shellcheck source=../../e2e/lib/cluster.sh
source "$root/tests/e2e/lib/cluster.sh"
CONNBENCH="$build/bin/meshlock-connbench"
[ -x "$CONNBENCH" ] || cmake --build "$build" --target meshlock-connbench >/dev/null

cluster_up "$here/cluster.yaml"
kubectl_admin label namespace bench meshlock.io/mtls=enabled >/dev/null
in_pod bench/server "$CONNBENCH" serve --port 7000 >"$WORK/echo-server.log" 2>&1 &
BG_PIDS+=($!)
wait_listening bench/server 7000 || die "the echo server did not start"
# Runs follow each other within seconds: without reuse, the TIME_WAIT sockets
# of the last run (the client's, and the server agent's upstream ones in the
# server pod) make every connect() search for a free port, and each run is
# slower than the one before, policies or not.
for pod in bench/client bench/server; do in_pod "$pod" sysctl -qw net.ipv4.tcp_tw_reuse=1; done
for _ in $(seq 100); do
  [ "$(agent_status node-a 's["pods_served"]')" = 1 ] && [ "$(agent_status node-b 's["pods_served"]')" = 1 ] && break
  sleep 0.1
done

hz=$(getconf CLK_TCK)
agents_cpu() { local t=0 p; for p in "${AGENT_PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# rate SETUP: one conn/s run; appends "SETUP rate errors cpu_ms_per_conn" to $WORK/rates.
rate() {
  local before after
  sleep 1
  before=$(agents_cpu)
  in_pod bench/client "$CONNBENCH" rate --to 10.244.1.10:7000 --seconds "$secs" --concurrency "$concurrency" \
    >"$WORK/rate.out" 2>&1 || true
  after=$(agents_cpu)
  grep '^connections=' "$WORK/rate.out" | awk -v s="$1" -v a="$after" -v b="$before" -v hz="$hz" '{
      for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
      printf "%s %s %s %.3f\n", s, v["rate"], v["errors"], (a - b) / hz * 1000 / (v["connections"] > 0 ? v["connections"] : 1)
    }' >>"$WORK/rates"
  log "$1: $(tail -1 "$WORK/rates")"
}

policies="$WORK/policies.yaml"
{
  for i in $(seq 1 99); do
    printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-%s, namespace: bench}\n' "$i"
    printf 'spec: {action: DENY, selector: {matchLabels: {app: server}}, rules: [{from: [{source: {principals: [cluster.local/ns/other/sa/blocked-%s]}}]}]}\n---\n' "$i"
  done
  printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: same-namespace, namespace: bench}\n'
  printf 'spec: {rules: [{from: [{source: {namespaces: [bench]}}]}]}\n'
} >"$policies"

: >"$WORK/rates"
for run in $(seq "$runs"); do
  rate none
  apply "$policies"
  rate with-100-policies
  kubectl_admin delete -f "$policies" >/dev/null
  "$MESHSIM" apiserver flush --name "$RUN" >/dev/null
  sleep 1.2
done
"$CTL" check --manifests "$(manifests_dir)" --from bench/client --to 10.244.1.10:7000 -o json >"$WORK/check.json" || true
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
col() { awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$WORK/rates"; }
{
  echo "### Authorization on the full path: new mTLS connections/s with and without 100 policies"
  echo
  echo "meshsim, two nodes, client pod on node-b → server pod on node-a through both agents (mTLS, auto mTLS);"
  echo "\`meshlock-connbench rate --concurrency $concurrency\`, $secs s per run, $runs runs of each, alternating. With policies: 99 DENY"
  echo "AuthorizationPolicies selecting the server (by principals that never match) and a namespace ALLOW that does."
  echo "Command: \`bash tests/bench/fullpath/authz.sh $(basename "$build")\`."
  echo
  echo "| setup | conn/s (median) | each run | errors | agents' CPU per connection (ms, median) |"
  echo "| --- | ---: | --- | ---: | ---: |"
  for setup in none with-100-policies; do
    echo "| $setup | $(col "$setup" 2 | median) | $(col "$setup" 2 | tr '\n' ' ') | $(col "$setup" 3 | paste -sd+ | bc) | $(col "$setup" 4 | median) |"
  done
} >&3
