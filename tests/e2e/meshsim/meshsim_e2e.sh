#!/usr/bin/env bash
# meshsim end to end: two nodes with two pods each; every pod reaches every
# other pod by IP and through a ClusterIP with the bytes verified; exec lands
# in the pod's container cgroup and netns; down leaves the machine as it was.
# Needs root. Safe to run beside other meshsim runs (unique run name, and the
# before/after comparison ignores other runs' objects).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MSIM_TEST=meshsim-e2e
. "$HERE/../../sim/lib.sh"
MESHSIM=$MSIM
PEER=$MSIM_PEER
WORK=$(mktemp -d /tmp/meshsim-e2e.XXXXXX)
PODS=(e2e/a1 e2e/a2 e2e/b1 e2e/b2)
RUN=""  # set by msim_up
failures=0

# Alive and not a zombie (a killed process stays one until init reaps it).
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$s" ] && [ "$s" != Z ]; }
log() { msim_log "$@"; }
fail() { log "FAIL: $*"; failures=$((failures + 1)); }
die() { log "FATAL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root"

msim_extra_cleanup() { rm -rf "$WORK"; }

CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)

# What the machine looks like, minus other meshsim runs' objects (tests may
# run in parallel) and /run/netns's own bind mount (made by the first
# `ip netns add` on a machine, never removed by iproute2).
others() { grep -v -E "msim-[a-z0-9-]+_|/meshsim-[a-z0-9-]+" | grep -v -E "^msim-|^meshsim-" || true; }
other_runs() { ls /run/meshsim 2>/dev/null | grep -v -x "$RUN" || true; }
snapshot() {
  local out=$1
  (
    set +e +o pipefail
    echo "## netns"; ip netns list | awk '{print $1}' | others | sort
    echo "## links"; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
    echo "## cgroups"; [ -n "$CG2" ] && find "$CG2" -maxdepth 1 -type d | others | sort
    echo "## etc-netns"; ls /etc/netns 2>/dev/null | others | sort
    echo "## nft"; nft list tables 2>/dev/null | sort
  ) >"$out"
  # Mounts and /etc/netns itself only say something while no other run is up:
  # kept apart, compared only when both snapshots saw none.
  if [ -z "$(other_runs)" ]; then
    (
      set +e +o pipefail
      echo "## mounts"; awk '{print $5, $9}' /proc/self/mountinfo | grep -v -E '^/run/netns |^/run/netns/msim-' | sort
      echo "## etc-netns-dir"; [ -d /etc/netns ] && echo present || echo absent
    ) >"$out.alone"
  fi
}

snapshot "$WORK/before"

log "bad spec: exit 2, field named, nothing created"
printf 'nodes: [{name: node-a}]\nnamespaces: [{name: x}]\npods: [{name: p, namespace: x, node: node-c}]\n' >"$WORK/bad.yaml"
set +e
"$MESHSIM" up "$WORK/bad.yaml" --name bad-$$ >"$WORK/bad.out" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "bad spec exited $rc, want 2"
grep -q 'pods\[0\].node: unknown node "node-c"' "$WORK/bad.out" || fail "bad spec message: $(cat "$WORK/bad.out")"
[ ! -e "/run/meshsim/bad-$$" ] || fail "bad spec left /run/meshsim/bad-$$"

msim_up "$HERE/spec.yaml" e2e >"$WORK/up.out"
RUN=$MSIM_RUN
log "up: run $RUN"
cat "$WORK/up.out"
grep -q "^run: $RUN$" "$WORK/up.out" || fail "up did not print the run name"
grep -q '^cgroup2: ' "$WORK/up.out" || fail "up did not say where cgroup2 is"
grep -q '^bpffs: ' "$WORK/up.out" || fail "up did not say where bpffs is"
[ "$(cat "/run/meshsim/$RUN/state.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["phase"])')" = ready ] \
  || fail "state phase is not ready"
"$MESHSIM" status --name "$RUN" -o json >"$WORK/status.json"

# pod → "ip netns pausePid containerCgroup podCgroup" from status -o json
python3 - "$WORK/status.json" >"$WORK/pods.txt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["phase"] == "ready", s["phase"]
for n in s["nodes"]:
    assert n["netns"] and n["cgroupRoot"].startswith(s["cgroup2Root"] + "/"), n
for p in s["pods"]:
    for key in ("namespace", "name", "uid", "ip", "node", "netns", "netnsPath", "pausePid", "podCgroup", "containerCgroup"):
        assert p.get(key) not in (None, ""), (key, p)
    assert ("pod" + p["uid"].replace("-", "_")) in p["podCgroup"] or ("pod" + p["uid"]) in p["podCgroup"], p
    assert p["containerCgroup"].startswith(p["podCgroup"] + "/"), p
    print(f'{p["namespace"]}/{p["name"]} {p["ip"]} {p["netns"]} {p["pausePid"]} {p["containerCgroup"]} {p["podCgroup"]} {s["cgroup2Root"]}')
PY
[ "$(wc -l <"$WORK/pods.txt")" = 4 ] || fail "status lists $(wc -l <"$WORK/pods.txt") pods, want 4"

log "pods: pause process in the pod's netns and container cgroup; kubelet layout"
while read -r pod ip netns pause ccg pcg root; do
  [ "$(stat -L -c %i "/proc/$pause/ns/net")" = "$(stat -L -c %i "/run/netns/$netns")" ] \
    || fail "$pod: pause $pause is not in netns $netns"
  grep -qx "0::${ccg#"$root"}" "/proc/$pause/cgroup" || fail "$pod: pause $pause not in $ccg"
  case "$pod" in
    e2e/a2) [[ "$pcg" == */kubepods.slice/kubepods-pod*.slice ]] || fail "$pod: Guaranteed pod cgroup $pcg" ;;
    e2e/b1) [[ "$pcg" == */kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod*.slice ]] || fail "$pod: Burstable pod cgroup $pcg" ;;
    *) [[ "$pcg" == */kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod*.slice ]] || fail "$pod: BestEffort pod cgroup $pcg" ;;
  esac
  [[ "$ccg" == */cri-containerd-*.scope ]] || fail "$pod: container cgroup $ccg"
done <"$WORK/pods.txt"

log "exec lands in the pod's container cgroup and netns"
while read -r pod ip netns pause ccg pcg root; do
  got=$("$MESHSIM" exec --name "$RUN" "$pod" -- cat /proc/self/cgroup | grep '^0::')
  [ "$got" = "0::${ccg#"$root"}" ] || fail "$pod: exec cgroup is '$got', want 0::${ccg#"$root"}"
  got=$("$MESHSIM" exec --name "$RUN" "$pod" -- ip -4 -o addr show dev eth0 | awk '{print $4}')
  [ "${got%/*}" = "$ip" ] || fail "$pod: exec sees eth0 address '$got', want $ip"
done <"$WORK/pods.txt"
MESHSIM_NAME="$RUN" "$MESHSIM" exec a1 -- true || fail "exec with MESHSIM_NAME and a short pod name"

log "servers: meshlock-testpeer serve in every pod"
for pod in "${PODS[@]}"; do msim_serve "$pod" 8080 || fail "no server in $pod"; done

send() {  # send FROM TO BYTES [extra args]
  local out
  if out=$(msim_send "$@" 2>&1); then
    [[ "$out" == *" ok" ]] || fail "$1 -> $2: $out"
  else
    fail "$1 -> $2: $out"
  fi
}

log "every pod reaches every pod: by pod IP, by ClusterIP, by service name"
for from in "${PODS[@]}"; do
  while read -r to ip _; do
    name=${to#*/}
    cip=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print([x["clusterIP"] for x in s["services"] if x["name"]==sys.argv[2]][0])' "$WORK/status.json" "$name")
    send "$from" "$ip:8080" 65536
    send "$from" "$cip:80" 65536
    send "$from" "$name.e2e.svc.cluster.local:80" 4096
  done <"$WORK/pods.txt"
  send "$from" "echo:80" 4096
  send "$from" "kubernetes.default.svc.cluster.local:443" 4096
done

log "large transfer across nodes with half-close propagation"
send e2e/a1 "b2.e2e:80" 8000000 --half-close
send e2e/b1 "10.244.1.2:8080" 1000000 --half-close

log "manifests and live labels"
for f in namespace pod service endpoints peerauthentication.security.istio.io; do
  [ -s "/run/meshsim/$RUN/manifests/$f.yaml" ] || fail "manifests/$f.yaml missing"
done
[ "$("$MESHSIM" manifests --name "$RUN" | grep -c '^kind: Pod$')" = 4 ] || fail "meshsim manifests: want 4 Pods"
"$MESHSIM" label --name "$RUN" namespace e2e meshlock.io/mtls=enabled >/dev/null
grep -q 'meshlock.io/mtls: enabled' "/run/meshsim/$RUN/manifests/namespace.yaml" || fail "namespace label not written"
"$MESHSIM" label --name "$RUN" pod e2e/b1 app- >/dev/null
[ "$("$MESHSIM" status --name "$RUN" -o json | python3 -c 'import json,sys; print(len([s for s in json.load(sys.stdin)["services"] if s["name"]=="echo"][0]["backends"]))')" = 3 ] \
  || fail "echo service should have 3 backends after removing b1's app label"

PAUSES=$(awk '{print $4}' "$WORK/pods.txt")
log "down"
"$MESHSIM" down --name "$RUN"
for pid in "${MSIM_BG_PIDS[@]}"; do
  wait "$pid" 2>/dev/null || true
  alive "$pid" && fail "server pid $pid survived down"
done
MSIM_BG_PIDS=()
for pid in $PAUSES; do alive "$pid" && fail "pause pid $pid survived down"; done
pgrep -f "msim-${RUN}_" >/dev/null && fail "processes mentioning msim-${RUN}_ remain: $(pgrep -af "msim-${RUN}_")"
ip netns list | grep -q "^msim-${RUN}_" && fail "netns of $RUN remain"
ls /etc/netns 2>/dev/null | grep -q "^msim-${RUN}_" && fail "/etc/netns entries of $RUN remain"
[ -n "$CG2" ] && [ -e "$CG2/meshsim-$RUN" ] && fail "cgroup $CG2/meshsim-$RUN remains"
[ -e "/run/meshsim/$RUN" ] && fail "/run/meshsim/$RUN remains"

snapshot "$WORK/after"
if ! diff -u "$WORK/before" "$WORK/after" >"$WORK/diff"; then
  fail "machine differs after down:"
  cat "$WORK/diff"
fi
if [ -e "$WORK/before.alone" ] && [ -e "$WORK/after.alone" ] &&
   ! diff -u "$WORK/before.alone" "$WORK/after.alone" >"$WORK/diff"; then
  fail "mounts differ after down:"
  cat "$WORK/diff"
fi

if [ "$failures" -gt 0 ]; then
  log "$failures failure(s)"
  exit 1
fi
log "PASS"
