#!/usr/bin/python3
"""Proves the manifest checks can fail: each case breaks one thing in the
rendered manifests (or is the pre-issue-12 DaemonSet itself) and expects the
API-rule checker (api_rules.py) or the OpenAPI schema validator
(validate.mjs, kubernetes-models) to reject it with a message naming the
rule. Also checks the unbroken manifests pass both, so a case cannot pass
because everything fails.

  negative_test.py BASE.yaml OPENSHIFT.yaml VALIDATOR_DIR
"""
import contextlib
import copy
import io
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
base_file, openshift_file, validator_dir = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
base = [o for o in yaml.safe_load_all(open(base_file)) if o]
openshift = [o for o in yaml.safe_load_all(open(openshift_file)) if o]


def find(objs, kind, name=None):
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def pod(objs):
    return find(objs, "DaemonSet")["spec"]["template"]["spec"]


def volume(objs, name):
    """The DaemonSet pod's volume called `name`."""
    return next(v for v in pod(objs)["volumes"] if v["name"] == name)


def agent(objs):
    return next(c for c in pod(objs)["containers"] if c["name"] == "agent")


sys.path.insert(0, HERE)
import api_rules  # noqa: E402  (in this process: importing python3-kubernetes once, not per case)


def run_api_rules(objs):
    api_rules.errors.clear()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = api_rules.check_objects(copy.deepcopy(objs))
    return rc, printed.getvalue()


def run_schema(objs):
    out = subprocess.run(["node", os.path.join(HERE, "validate.mjs"), "--modules", validator_dir, "--allow-kind",
                          "security.openshift.io/v1/SecurityContextConstraints"],
                         input=yaml.safe_dump_all(objs), capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def mutate(objs, fn):
    objs = copy.deepcopy(objs)
    fn(objs)
    return objs


def set_in(d, path, value):
    for key in path[:-1]:
        d = d.setdefault(key, {})
    d[path[-1]] = value


def strategy(objs, ru):
    find(objs, "DaemonSet")["spec"]["updateStrategy"]["rollingUpdate"] = ru


def surge_host_port(objs):
    pod(objs)["hostNetwork"] = True
    agent(objs)["ports"][0]["hostPort"] = 15020


issue12 = [find(base, "Namespace")] + [o for o in yaml.safe_load_all(open(os.path.join(HERE, "issue12-daemonset.yaml"))) if o]

CASES = [
    # (name, checker, objects, expected text in the output)
    ("issue 12's DaemonSet: Bidirectional without privileged", run_api_rules, issue12,
     "Bidirectional mount propagation is available only to privileged containers"),
    ("Bidirectional on the unprivileged agent container", run_api_rules,
     mutate(base, lambda o: agent(o)["volumeMounts"][0].update(mountPropagation="Bidirectional")),
     "Bidirectional mount propagation is available only to privileged containers"),
    ("maxSurge with maxUnavailable left at its default (1)", run_api_rules,
     mutate(base, lambda o: strategy(o, {"maxSurge": 1})), "may not be set when maxUnavailable is non-zero"),
    ("maxSurge and maxUnavailable both 0", run_api_rules,
     mutate(base, lambda o: strategy(o, {"maxSurge": 0, "maxUnavailable": 0})), "cannot be 0 when maxSurge is 0"),
    ("maxSurge 150%", run_api_rules,
     mutate(base, lambda o: strategy(o, {"maxSurge": "150%", "maxUnavailable": 0})), "must not be greater than 100%"),
    ("hostNetwork and a host port with surge", run_api_rules, mutate(base, surge_host_port),
     "a surge pod cannot start beside the old one"),
    ("a host port that differs from the container port under hostNetwork", run_api_rules,
     mutate(base, lambda o: (pod(o).update(hostNetwork=True), agent(o)["ports"][0].update(hostPort=15021))),
     "must match `containerPort` when `hostNetwork` is true"),
    ("a misspelt field", run_api_rules,
     mutate(base, lambda o: agent(o)["volumeMounts"][0].update(mountPropogation="HostToContainer")),
     "mountPropogation: unknown field"),
    ("a token that expires in 5 minutes", run_api_rules,
     mutate(base, lambda o: volume(o, "kube-api-access")["projected"]["sources"][0]["serviceAccountToken"].update(
         expirationSeconds=300)), "may not specify a duration less than 10 minutes"),
    ("two projected sources on one path", run_api_rules,
     mutate(base, lambda o: volume(o, "kube-api-access")["projected"]["sources"][1]["configMap"]["items"][0].update(
         path="token")), "conflicting duplicate paths"),
    ("a downward API field a volume cannot project", run_api_rules,
     mutate(base, lambda o: volume(o, "kube-api-access")["projected"]["sources"][2]["downwardAPI"]["items"][0]["fieldRef"].update(
         fieldPath="spec.nodeName")), "unsupported value 'spec.nodeName'"),
    ("a liveness probe with successThreshold 2", run_api_rules,
     mutate(base, lambda o: agent(o)["livenessProbe"].update(successThreshold=2)), "must be 1"),
    ("an unknown capability", run_api_rules,
     mutate(base, lambda o: agent(o)["securityContext"]["capabilities"]["add"].append("EBPF")),
     "unknown capability 'EBPF'"),
    ("allowPrivilegeEscalation false with CAP_SYS_ADMIN", run_api_rules,
     mutate(base, lambda o: agent(o)["securityContext"]["capabilities"]["add"].append("CAP_SYS_ADMIN")),
     "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"),
    ("a mount of a volume that does not exist", run_api_rules,
     mutate(base, lambda o: agent(o)["volumeMounts"].append({"name": "nowhere", "mountPath": "/nowhere"})),
     "Not found: 'nowhere'"),
    ("the namespace enforcing baseline", run_api_rules,
     mutate(base, lambda o: find(o, "Namespace")["metadata"]["labels"].update(
         {"pod-security.kubernetes.io/enforce": "baseline"})), "needs Pod Security level 'privileged'"),
    ("the namespace without a Pod Security label", run_api_rules,
     mutate(base, lambda o: find(o, "Namespace")["metadata"]["labels"].pop("pod-security.kubernetes.io/enforce")),
     "sets no pod-security.kubernetes.io/enforce level"),
    ("selector that does not match the template", run_api_rules,
     mutate(base, lambda o: find(o, "DaemonSet")["spec"]["selector"]["matchLabels"].update(app="other")),
     "`selector` does not match template `labels`"),
    ("the agent's role may create pods", run_api_rules,
     mutate(base, lambda o: find(o, "ClusterRole", "meshlock-agent")["rules"][0]["verbs"].append("create")),
     "must only get/list/watch"),
    ("the agent's role may create secrets beside its reviews", run_api_rules,
     mutate(base, lambda o: next(r for r in find(o, "ClusterRole", "meshlock-agent")["rules"]
                                 if "subjectaccessreviews" in r["resources"])["resources"].append("secrets")),
     "must only get/list/watch"),
    ("SCC without a capability the agent adds", run_api_rules,
     mutate(openshift, lambda o: find(o, "SecurityContextConstraints")["allowedCapabilities"].remove("SYS_PTRACE")),
     "SYS_PTRACE missing"),
    ("SCC without hostPID", run_api_rules,
     mutate(openshift, lambda o: find(o, "SecurityContextConstraints").update(allowHostPID=False)),
     "false, but the pod uses hostPID"),
    ("OpenShift overlay with the privileged init container back", run_api_rules,
     mutate(openshift, lambda o: pod(o).update(initContainers=pod(base)["initContainers"])),
     "container mount-bpffs is privileged"),
    ("schema: a probe period given as a string", run_schema,
     mutate(base, lambda o: agent(o)["readinessProbe"].update(periodSeconds="2")), "must be integer"),
    ("schema: a volume mount without mountPath", run_schema,
     mutate(base, lambda o: agent(o)["volumeMounts"][0].pop("mountPath")), "must have required property mountPath"),
    ("schema: capabilities.add not a list", run_schema,
     mutate(base, lambda o: agent(o)["securityContext"]["capabilities"].update(add="BPF")), "must be array"),
]

passed = failed = 0
for name, checker, objs in (("base", run_api_rules, base), ("openshift", run_api_rules, openshift),
                            ("base", run_schema, base), ("openshift", run_schema, openshift)):
    rc, out = checker(objs)
    ok = rc == 0
    print(f"{'ok' if ok else 'FAIL'}: the unbroken {name} manifests pass {checker.__name__}" + ("" if ok else "\n" + out))
    passed, failed = passed + ok, failed + (not ok)
for name, checker, objs, expected in CASES:
    rc, out = checker(objs)
    ok = rc != 0 and expected in out
    print(f"{'ok' if ok else 'FAIL'}: {name} -> rejected by {checker.__name__}" + ("" if ok else f" (rc {rc}, want {expected!r}):\n{out}"))
    passed, failed = passed + ok, failed + (not ok)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
