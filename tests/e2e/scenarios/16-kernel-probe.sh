#!/usr/bin/env bash
# Scenario 16 (kernel probe at start-up, issue 6): the agent logs one line of
# kernel features and shows them in /status; on a kernel without BTF (here:
# /sys/kernel/btf hidden in a private mount namespace) it refuses to start,
# names the missing feature, and leaves nothing pinned.
E2E_NAME=s16
source "$(dirname "$0")/../lib/cluster.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cluster_up "$HERE/cluster.yaml"

log "the agent's start-up line and /status"
line=$(grep -m1 " info kernel " "$WORK/agent-node-a.log") || fail "no kernel summary line in the agent log"
[[ "$line" == *"ok btf cgroup2 bpffs"*"prog_type:sk_lookup"* ]] || fail "kernel line: $line"
python3 - "$(agent_status node-a 'json.dumps(s["kernel"])')" <<'PY' || fail "/status kernel: $(agent_status node-a 's["kernel"]')"
import json, sys
k = json.loads(sys.argv[1])
assert k["hard_requirements_met"] is True, k
assert k["summary"].startswith("kernel " + k["release"] + ": ok btf"), k["summary"]
f = {x["name"]: x for x in k["features"]}
assert f["btf"]["state"] == "present" and f["btf"]["required"], f["btf"]
assert f["prog_type:sk_lookup"]["available"] is True, f["prog_type:sk_lookup"]
assert not f["ktls"]["required"] and not f["io_uring"]["required"]
PY

log "no BTF → the agent refuses to start and says why"
pins="/sys/fs/bpf/meshlock-$RUN-nobtf"
EXTRA_PIN_DIRS+=("$pins")  # should the refused agent pin anything after all, cleanup removes it
# In the foreground, under timeout: an agent that starts anyway (the bug this
# checks for) must not hang the scenario; TERM after 15 s (its drain deadline
# is 1 s), KILL 5 s later. A timeout (124, or 137 after the KILL) is a failure.
rc=0
timeout -k 5 15 unshare --mount --propagation private bash -c "mount -t tmpfs none /sys/kernel/btf && exec nsenter --net='$(node_field node-a netnsPath)' \
  '$AGENT' run --node node-a $(agent_source) --cgroup-root '$(node_field node-a cgroupRoot)' \
  --bpf-pin-dir '$pins' --state-dir '$WORK/state-nobtf' $(agent_ca_flags node-a) --admin-socket '$WORK/admin-nobtf.sock' \
  --admin-address 127.0.0.1:15100 --metrics-address 127.0.0.1:15120 --drain-deadline 1" >"$WORK/nobtf.log" 2>&1 || rc=$?
log "exit $rc: $(grep -m1 "cannot start" "$WORK/nobtf.log" | cut -c1-160)…"
case $rc in
  1) ;;
  124 | 137) fail "the agent without BTF was still running after 15 s (it started): $(tail -20 "$WORK/nobtf.log")" ;;
  *) fail "the agent without BTF exited $rc, want 1: $(cat "$WORK/nobtf.log")" ;;
esac
grep -q "cannot start: kernel .* lacks a required feature: btf (/sys/kernel/btf/vmlinux): .*CONFIG_DEBUG_INFO_BTF" "$WORK/nobtf.log" ||
  fail "the refusal does not name btf: $(cat "$WORK/nobtf.log")"
[ ! -e "$pins" ] || { fail "the refused agent pinned $pins"; "$AGENT" --uninstall --pin-dir "$pins" >/dev/null 2>&1 || true; }
[ ! -e "$pins" ] || fail "--uninstall left $pins behind"
[ ! -e "$WORK/admin-nobtf.sock" ] || { fail "the refused agent left an admin socket"; rm -f "$WORK/admin-nobtf.sock"; }
[ -e /sys/kernel/btf/vmlinux ] || die "the host lost /sys/kernel/btf/vmlinux (mount leaked)"
serve shop/web 8080
expect_ok shop/client 10.244.1.10:8080  # the running agents are undisturbed
log "done"
