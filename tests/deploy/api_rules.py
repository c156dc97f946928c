#!/usr/bin/python3
"""The API server's own rules (and Pod Security admission's) for the fields
the meshlock manifests use, applied to rendered objects (multi-document YAML
on stdin or in FILEs). The OpenAPI schemas (validate.mjs) check types and
shapes; these are the rules the schemas cannot express, which the API server
applies in its validation code, so a manifest that passes the schema can
still be rejected at `kubectl apply`. Each rule cites where it comes from:

  validation.go = kubernetes/kubernetes pkg/apis/core/validation/validation.go
  apps.go       = kubernetes/kubernetes pkg/apis/apps/validation/validation.go
  psa           = kubernetes/pod-security-admission policy/check_*.go
  scc           = openshift/api security/v1/types.go (SecurityContextConstraints)
                  and openshift/apiserver-library-go pkg/securitycontextconstraints

Also: unknown fields (the API server's strict field validation, KEP-2885, what
`kubectl apply` does by default since 1.27), by walking each object along the
OpenAPI model classes of Debian's python3-kubernetes.

Exit 1 with one line per violation ("KIND NAME: PATH: message [source]").
Needs /usr/bin/python3 (python3-yaml, python3-kubernetes).
"""
import re
import sys

import yaml

try:
    from kubernetes.client import models as k8s_models
except ImportError:  # reported as a violation below: never silently skipped
    k8s_models = None

errors = []


def err(obj, path, message, source):
    meta = obj.get("metadata") or {}
    name = (meta.get("namespace") + "/" if meta.get("namespace") else "") + str(meta.get("name"))
    errors.append(f"{obj.get('kind')} {name}: {path}: {message} [{source}]")


# Linux capabilities (include/uapi/linux/capability.h) as the CRI runtimes
# accept them in capabilities.add/drop, without the CAP_ prefix, plus ALL.
CAPABILITIES = {
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}
# psa check_capabilities.go: what Baseline allows to add.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
# validation.go validDownwardAPIFieldPathExpressions / validEnvDownwardAPIFieldPathExpressions.
VOLUME_FIELD_PATHS = {"metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                      "metadata.annotations"}
ENV_FIELD_PATHS = VOLUME_FIELD_PATHS | {"spec.nodeName", "spec.serviceAccountName", "status.hostIP",
                                        "status.hostIPs", "status.podIP", "status.podIPs"}
HOST_PATH_TYPES = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice"}
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
C_IDENTIFIER_ENV = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
VOLUME_SOURCES = {"hostPath", "emptyDir", "secret", "configMap", "projected", "downwardAPI",
                  "persistentVolumeClaim", "csi", "ephemeral", "nfs", "image"}
LEVELS = ["privileged", "baseline", "restricted"]


def int_or_percent(value):
    """(number, is_percent, valid) as apps.go getIntOrPercentValue / ValidatePositiveIntOrPercent."""
    if isinstance(value, bool):
        return 0, False, False
    if isinstance(value, int):
        return value, False, value >= 0
    if isinstance(value, str):
        m = re.fullmatch(r"([0-9]+)%", value)
        if m:
            return int(m.group(1)), True, True
        return 0, False, False
    return 0, False, value is None


# --- unknown fields ----------------------------------------------------------

def model_class(api_version, kind):
    """The python3-kubernetes model of a built-in kind (V1DaemonSet, ...)."""
    group, _, version = api_version.rpartition("/")
    if group not in ("", "apps", "rbac.authorization.k8s.io", "discovery.k8s.io", "policy"):
        return None
    return getattr(k8s_models, f"{version.capitalize()}{kind}", None)


def walk_unknown(obj, value, type_name, path):
    """Flags keys the OpenAPI model has no field for (strict field validation)."""
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk_unknown(obj, item, m.group(1), f"{path}[{i}]")
        return
    m = re.fullmatch(r"dict\((\w+), (.+)\)", type_name)
    if m:
        if isinstance(value, dict):
            for k, v in value.items():
                walk_unknown(obj, v, m.group(2), f"{path}.{k}")
        return
    cls = getattr(k8s_models, type_name, None)
    if cls is None or not hasattr(cls, "attribute_map") or not isinstance(value, dict):
        return  # a scalar, object or int-or-string
    json_to_attr = {j: a for a, j in cls.attribute_map.items()}
    for key, sub in value.items():
        attr = json_to_attr.get(key)
        if attr is None:
            err(obj, f"{path}.{key}", "unknown field (strict field validation rejects it)", "KEP-2885")
            continue
        walk_unknown(obj, sub, cls.openapi_types[attr], f"{path}.{key}")


def check_unknown_fields(obj):
    if k8s_models is None:
        err(obj, "", "python3-kubernetes is missing: cannot check for unknown fields", "api_rules.py")
        return
    cls = model_class(obj.get("apiVersion", ""), obj.get("kind", ""))
    if cls is None:
        return  # not a built-in kind (the SCC is checked against its own field list)
    walk_unknown(obj, obj, cls.__name__, "")


# --- pods --------------------------------------------------------------------

def container_level(c):
    """The Pod Security level a container needs (psa check_*.go)."""
    sc = c.get("securityContext") or {}
    level = "restricted"
    if sc.get("privileged"):
        return "privileged"  # check_privileged.go
    added = set((sc.get("capabilities") or {}).get("add") or [])
    if added - BASELINE_CAPABILITIES:
        return "privileged"  # check_capabilities.go (baseline)
    if any(p.get("hostPort") for p in c.get("ports") or []):
        return "privileged"  # check_hostPorts.go
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        return "privileged"  # check_seccompProfile.go
    se_type = (sc.get("seLinuxOptions") or {}).get("type")
    if se_type and se_type not in {"container_t", "container_init_t", "container_kvm_t", "container_engine_t"}:
        return "privileged"  # check_seLinuxOptions.go
    if sc.get("allowPrivilegeEscalation") is not False or sc.get("runAsNonRoot") is not True:
        level = "baseline"  # check_allowPrivilegeEscalation.go, check_runAsNonRoot.go (restricted)
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or added - {"NET_BIND_SERVICE"}:
        level = "baseline"  # check_capabilities.go (restricted)
    return level


def pod_level(spec):
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        return "privileged"  # check_hostNamespaces.go
    if any("hostPath" in v for v in spec.get("volumes") or []):
        return "privileged"  # check_hostPathVolumes.go
    level = "restricted"
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        cl = container_level(c)
        if LEVELS.index(cl) < LEVELS.index(level):
            level = cl
    if level == "restricted" and (spec.get("securityContext") or {}).get("seccompProfile", {}).get("type") not in (
            "RuntimeDefault", "Localhost"):
        level = "baseline"  # check_seccompProfile.go (restricted)
    return level


def check_probe(obj, probe, path, liveness):
    # validation.go validateProbe / validateHandler: exactly one handler.
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if h in probe]
    if len(handlers) != 1:
        err(obj, path, f"must specify exactly one handler, found {handlers or 'none'}", "validation.go validateHandler")
    for field in ("periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        if field in probe and probe[field] < 1:
            err(obj, f"{path}.{field}", "must be greater than or equal to 1", "validation.go validateProbe")
    if probe.get("initialDelaySeconds", 0) < 0:
        err(obj, f"{path}.initialDelaySeconds", "must be non-negative", "validation.go validateProbe")
    if liveness and probe.get("successThreshold", 1) != 1:
        err(obj, f"{path}.successThreshold", "must be 1", "validation.go validateLivenessProbe")
    port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
    if port is not None:
        if isinstance(port, int) and not 1 <= port <= 65535:
            err(obj, f"{path}.port", "must be between 1 and 65535", "validation.go ValidatePortNumOrName")
        if isinstance(port, str) and not IANA_SVC_NAME.match(port):
            err(obj, f"{path}.port", "must be a port name (IANA_SVC_NAME)", "validation.go ValidatePortNumOrName")


def check_projected(obj, volume, path):
    # validation.go validateProjectedVolumeSource / validateProjectionSources.
    projected = volume["projected"]
    mode = projected.get("defaultMode")
    if mode is not None and not 0 <= mode <= 0o777:
        err(obj, f"{path}.defaultMode", "must be a number between 0 and 0777", "validation.go validateProjectedVolumeSource")
    paths = set()
    for i, source in enumerate(projected.get("sources") or []):
        spath = f"{path}.sources[{i}]"
        kinds = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken", "clusterTrustBundle")
                 if k in source]
        if len(kinds) != 1:
            err(obj, spath, "may not specify more than 1 volume type per source" if kinds else "must specify one source",
                "validation.go validateProjectionSources")
            continue
        kind = kinds[0]
        items = []
        if kind in ("secret", "configMap"):
            if not source[kind].get("name"):
                err(obj, f"{spath}.{kind}.name", "Required value", "validation.go validateProjectionSources")
            items = [it["path"] for it in source[kind].get("items") or []]
        elif kind == "downwardAPI":
            for j, it in enumerate(source[kind].get("items") or []):
                fp = (it.get("fieldRef") or {}).get("fieldPath")
                if fp is not None and fp not in VOLUME_FIELD_PATHS and not re.fullmatch(
                        r"metadata\.(labels|annotations)\['[^']+'\]", fp):
                    err(obj, f"{spath}.downwardAPI.items[{j}].fieldRef.fieldPath",
                        f"unsupported value {fp!r}", "validation.go validateDownwardAPIVolumeFile")
                items.append(it.get("path"))
        elif kind == "serviceAccountToken":
            token = source[kind]
            exp = token.get("expirationSeconds", 3600)
            if exp < 600:
                err(obj, f"{spath}.serviceAccountToken.expirationSeconds",
                    "may not specify a duration less than 10 minutes", "validation.go validateProjectionSources")
            if exp > 1 << 32:
                err(obj, f"{spath}.serviceAccountToken.expirationSeconds",
                    "may not specify a duration larger than 2^32 seconds", "validation.go validateProjectionSources")
            if not token.get("path"):
                err(obj, f"{spath}.serviceAccountToken.path", "Required value", "validation.go validateProjectionSources")
            items = [token.get("path")]
        for p in items:
            if not p or p.startswith("/") or ".." in p.split("/"):
                err(obj, spath, f"path {p!r} must be relative and may not contain '..'", "validation.go validateLocalNonReservedPath")
            elif p in paths:
                err(obj, spath, f"conflicting duplicate paths: {p}", "validation.go validateProjectionSources")
            paths.add(p)


def check_pod_spec(obj, spec, path, namespaces):
    volumes = {}
    for i, v in enumerate(spec.get("volumes") or []):
        vpath = f"{path}.volumes[{i}]"
        name = v.get("name", "")
        if not DNS1123_LABEL.match(name):
            err(obj, f"{vpath}.name", f"{name!r} is not a DNS-1123 label", "validation.go ValidateVolumes")
        if name in volumes:
            err(obj, f"{vpath}.name", f"Duplicate value: {name!r}", "validation.go ValidateVolumes")
        sources = [k for k in v if k in VOLUME_SOURCES]
        if len(sources) != 1:
            err(obj, vpath, f"must specify exactly 1 volume type, found {sources}", "validation.go validateVolumeSource")
        volumes[name] = v
        if "hostPath" in v:
            hp = v["hostPath"]
            if not hp.get("path") or ".." in hp["path"].split("/"):
                err(obj, f"{vpath}.hostPath.path", "required, and may not contain '..'", "validation.go validateHostPathVolumeSource")
            if hp.get("type", "") not in HOST_PATH_TYPES:
                err(obj, f"{vpath}.hostPath.type", f"unsupported value {hp.get('type')!r}", "validation.go validateHostPathType")
        if "projected" in v:
            check_projected(obj, v, vpath)

    host_network = bool(spec.get("hostNetwork"))
    names = set()
    host_ports = set()
    all_containers = [("initContainers", c) for c in spec.get("initContainers") or []] + \
                     [("containers", c) for c in spec.get("containers") or []]
    if not spec.get("containers"):
        err(obj, f"{path}.containers", "Required value", "validation.go validateContainers")
    for idx, (group, c) in enumerate(all_containers):
        i = [x for x in all_containers if x[0] == group].index((group, c))
        cpath = f"{path}.{group}[{i}]"
        name = c.get("name", "")
        if not DNS1123_LABEL.match(name):
            err(obj, f"{cpath}.name", f"{name!r} is not a DNS-1123 label", "validation.go validateContainers")
        if name in names:
            err(obj, f"{cpath}.name", f"Duplicate value: {name!r}", "validation.go validateInitContainers/validateContainers")
        names.add(name)
        if not c.get("image"):
            err(obj, f"{cpath}.image", "Required value", "validation.go validateContainerCommon")
        sc = c.get("securityContext") or {}
        privileged = bool(sc.get("privileged"))
        # validation.go ValidateSecurityContext.
        if sc.get("allowPrivilegeEscalation") is False:
            if privileged:
                err(obj, f"{cpath}.securityContext", "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
                    "validation.go ValidateSecurityContext")
            if "CAP_SYS_ADMIN" in ((sc.get("capabilities") or {}).get("add") or []):
                err(obj, f"{cpath}.securityContext",
                    "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
                    "validation.go ValidateSecurityContext")
        if sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 0:
            err(obj, f"{cpath}.securityContext.runAsNonRoot", "cannot be true when runAsUser is 0",
                "validation.go ValidateSecurityContext")
        for which in ("add", "drop"):
            for cap in (sc.get("capabilities") or {}).get(which) or []:
                bare = cap[4:] if cap.startswith("CAP_") else cap
                if bare != "ALL" and bare not in CAPABILITIES:
                    err(obj, f"{cpath}.securityContext.capabilities.{which}",
                        f"unknown capability {cap!r} (the container runtime refuses to start it)",
                        "containerd pkg/cap, linux/capability.h")
        # validation.go ValidateVolumeMounts + validateMountPropagation.
        mount_paths = set()
        for j, m in enumerate(c.get("volumeMounts") or []):
            mpath = f"{cpath}.volumeMounts[{j}]"
            if m.get("name") not in volumes:
                err(obj, f"{mpath}.name", f"Not found: {m.get('name')!r}", "validation.go ValidateVolumeMounts")
            if m.get("mountPath") in mount_paths:
                err(obj, f"{mpath}.mountPath", "must be unique", "validation.go ValidateVolumeMounts")
            mount_paths.add(m.get("mountPath"))
            prop = m.get("mountPropagation")
            if prop is not None:
                if prop not in ("None", "HostToContainer", "Bidirectional"):
                    err(obj, f"{mpath}.mountPropagation", f"Unsupported value: {prop!r}", "validation.go validateMountPropagation")
                elif prop == "Bidirectional" and not privileged:
                    err(obj, f"{mpath}.mountPropagation",
                        "Bidirectional mount propagation is available only to privileged containers",
                        "validation.go validateMountPropagation")
        # validation.go validateContainerPorts / validateHostNetwork / AccumulateUniqueHostPorts.
        for j, p in enumerate(c.get("ports") or []):
            ppath = f"{cpath}.ports[{j}]"
            cp, hp = p.get("containerPort"), p.get("hostPort")
            if not isinstance(cp, int) or not 1 <= cp <= 65535:
                err(obj, f"{ppath}.containerPort", "must be between 1 and 65535", "validation.go validateContainerPorts")
            if hp is not None and not 1 <= hp <= 65535:
                err(obj, f"{ppath}.hostPort", "must be between 1 and 65535", "validation.go validateContainerPorts")
            if host_network and hp is not None and hp != cp:
                err(obj, f"{ppath}.hostPort", "must match `containerPort` when `hostNetwork` is true",
                    "validation.go validateHostNetwork")
            port_on_host = hp if hp else (cp if host_network else None)
            if port_on_host:
                key = (port_on_host, p.get("protocol", "TCP"), p.get("hostIP", ""))
                if key in host_ports:
                    err(obj, f"{ppath}", f"Duplicate value: host port {port_on_host}/{key[1]}",
                        "validation.go AccumulateUniqueHostPorts")
                host_ports.add(key)
            if "name" in p and not IANA_SVC_NAME.match(p["name"]) or len(p.get("name", "")) > 15:
                err(obj, f"{ppath}.name", f"{p.get('name')!r} is not an IANA_SVC_NAME", "validation.go validateContainerPorts")
        for j, e in enumerate(c.get("env") or []):
            if not C_IDENTIFIER_ENV.match(e.get("name", "")):
                err(obj, f"{cpath}.env[{j}].name", "must be a valid environment variable name", "validation.go ValidateEnv")
            fp = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if fp is not None and fp not in ENV_FIELD_PATHS:
                err(obj, f"{cpath}.env[{j}].valueFrom.fieldRef.fieldPath", f"unsupported value {fp!r}",
                    "validation.go validateEnvVarValueFrom")
        if group == "initContainers":
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in c and c.get("restartPolicy") != "Always":
                    err(obj, f"{cpath}.{probe}", "may not be set for init containers",
                        "validation.go validateInitContainers")
        else:
            for probe, live in (("livenessProbe", True), ("readinessProbe", False), ("startupProbe", True)):
                if probe in c:
                    check_probe(obj, c[probe], f"{cpath}.{probe}", live)

    tgp = spec.get("terminationGracePeriodSeconds")
    if tgp is not None and tgp < 0:
        err(obj, f"{path}.terminationGracePeriodSeconds", "must be non-negative", "validation.go ValidatePodSpec")
    if spec.get("dnsPolicy") == "ClusterFirstWithHostNet" and not host_network:
        pass  # valid, but meaningless without hostNetwork
    # Pod Security admission: the namespace's enforce label must admit the pod.
    ns_name = (obj.get("metadata") or {}).get("namespace")
    ns = namespaces.get(ns_name)
    needed = pod_level(spec)
    if ns is None:
        err(obj, path, f"namespace {ns_name!r} is not among the objects: its Pod Security level is unknown", "psa")
    else:
        enforce = ((ns.get("metadata") or {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        if enforce is None:
            err(obj, path, f"namespace {ns_name} sets no pod-security.kubernetes.io/enforce level: "
                           f"this pod needs {needed!r}, which a cluster default may refuse", "psa (meshlock rule)")
        elif enforce not in LEVELS:
            err(ns, "metadata.labels", f"unknown Pod Security level {enforce!r}", "psa api.ParseLevel")
        elif LEVELS.index(needed) < LEVELS.index(enforce):
            err(obj, path, f"needs Pod Security level {needed!r}, namespace {ns_name} enforces {enforce!r}", "psa")
    return needed


def check_selector(obj, spec, source):
    """apps.go: a workload's selector must match its pod template's labels."""
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        err(obj, "spec.template.metadata.labels", "`selector` does not match template `labels`", source)


def check_daemonset(obj, namespaces):
    spec = obj.get("spec") or {}
    check_selector(obj, spec, "apps.go ValidateDaemonSetSpec")
    if spec.get("minReadySeconds", 0) < 0:
        err(obj, "spec.minReadySeconds", "must be non-negative", "apps.go ValidateDaemonSetSpec")
    pod = (spec.get("template") or {}).get("spec") or {}
    if pod.get("restartPolicy", "Always") != "Always":
        err(obj, "spec.template.spec.restartPolicy", "Unsupported value: only Always", "apps.go ValidateDaemonSetSpec")
    strategy = spec.get("updateStrategy") or {}
    surge = 0
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        # apps.go ValidateRollingUpdateDaemonSet. maxUnavailable defaults to 1
        # (pkg/apis/apps/v1/defaults.go SetDefaults_DaemonSet), maxSurge to 0.
        unavailable = ru.get("maxUnavailable", 1)
        surge_value = ru.get("maxSurge", 0)
        for field, value in (("maxUnavailable", unavailable), ("maxSurge", surge_value)):
            n, pct, ok = int_or_percent(value)
            if not ok:
                err(obj, f"spec.updateStrategy.rollingUpdate.{field}", "a value must be a non-negative int or a percentage (5 or 5%)",
                    "apps.go ValidatePositiveIntOrPercent")
            elif pct and n > 100:
                err(obj, f"spec.updateStrategy.rollingUpdate.{field}", "must not be greater than 100%",
                    "apps.go IsNotMoreThan100Percent")
        has_unavailable = int_or_percent(unavailable)[0] != 0
        surge = int_or_percent(surge_value)[0]
        if has_unavailable and surge:
            err(obj, "spec.updateStrategy.rollingUpdate.maxSurge", "may not be set when maxUnavailable is non-zero",
                "apps.go ValidateRollingUpdateDaemonSet")
        if not has_unavailable and not surge:
            err(obj, "spec.updateStrategy.rollingUpdate.maxUnavailable", "cannot be 0 when maxSurge is 0",
                "apps.go ValidateRollingUpdateDaemonSet")
    elif strategy.get("type") != "OnDelete":
        err(obj, "spec.updateStrategy.type", f"Unsupported value: {strategy.get('type')!r}", "apps.go ValidateDaemonSetUpdateStrategy")
    # A surge pod is scheduled beside the old one on the same node: a host
    # port (or hostNetwork with a port) would never fit there (the
    # scheduler's NodePorts filter), so the update would stall.
    if surge:
        for c in pod.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("hostPort") or pod.get("hostNetwork"):
                    err(obj, "spec.template.spec", f"container {c.get('name')} uses host port "
                        f"{p.get('hostPort') or p.get('containerPort')}: a surge pod cannot start beside the old one",
                        "scheduler NodePorts (meshlock rule)")
    return check_pod_spec(obj, pod, "spec.template.spec", namespaces)


def check_deployment(obj, namespaces):
    spec = obj.get("spec") or {}
    check_selector(obj, spec, "apps.go ValidateDeploymentSpec")
    if spec.get("replicas", 1) < 0:
        err(obj, "spec.replicas", "must be greater than or equal to 0", "apps.go ValidateDeploymentSpec")
    pod = (spec.get("template") or {}).get("spec") or {}
    return check_pod_spec(obj, pod, "spec.template.spec", namespaces)


# Questions the agent may ask that change nothing: a SubjectAccessReview
# (may a pod's account read secrets? docs/policy.md, credentialName).
AGENT_QUERIES = {("authorization.k8s.io", "subjectaccessreviews")}


def check_cluster_role(obj):
    # The agent's own role: read-only, nothing else (a meshlock rule).
    if obj["metadata"]["name"] != "meshlock-agent":
        return
    for i, rule in enumerate(obj.get("rules") or []):
        extra = set(rule.get("verbs") or []) - {"get", "list", "watch"}
        targets = {(g, r) for g in rule.get("apiGroups") or [] for r in rule.get("resources") or []}
        if extra == {"create"} and targets and targets <= AGENT_QUERIES:
            continue
        if extra or "*" in (rule.get("resources") or []) or "*" in (rule.get("apiGroups") or []):
            err(obj, f"rules[{i}]", f"the agent's role must only get/list/watch named resources (and create "
                f"{sorted(AGENT_QUERIES)}), got {rule}", "meshlock rule")


SCC_FIELDS = {
    "apiVersion", "kind", "metadata", "priority", "allowPrivilegedContainer", "defaultAddCapabilities",
    "requiredDropCapabilities", "allowedCapabilities", "allowHostDirVolumePlugin", "volumes",
    "allowedFlexVolumes", "allowHostNetwork", "allowHostPorts", "allowHostPID", "allowHostIPC",
    "defaultAllowPrivilegeEscalation", "allowPrivilegeEscalation", "seLinuxContext", "runAsUser",
    "supplementalGroups", "fsGroup", "readOnlyRootFilesystem", "users", "groups", "seccompProfiles",
    "allowedUnsafeSysctls", "forbiddenSysctls", "userNamespaceLevel",
}
SCC_STRATEGIES = {"seLinuxContext": {"MustRunAs", "RunAsAny"},
                  "runAsUser": {"MustRunAs", "MustRunAsRange", "MustRunAsNonRoot", "RunAsAny"},
                  "supplementalGroups": {"MustRunAs", "RunAsAny"}, "fsGroup": {"MustRunAs", "RunAsAny"}}
SCC_VOLUMES = {"awsElasticBlockStore", "azureDisk", "azureFile", "cephFS", "cinder", "configMap", "csi",
               "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk",
               "gitRepo", "glusterfs", "hostPath", "iscsi", "nfs", "persistentVolumeClaim",
               "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
               "storageOS", "vsphere", "image", "none", "*"}


def check_scc(obj, daemonsets):
    """scc: the object's own shape (openshift/api security/v1), and that it
    admits the agent's pod (apiserver-library-go's provider checks)."""
    for key in obj:
        if key not in SCC_FIELDS:
            err(obj, key, "unknown field", "scc types.go")
    for key, allowed in SCC_STRATEGIES.items():
        if (obj.get(key) or {}).get("type") not in allowed:
            err(obj, f"{key}.type", f"must be one of {sorted(allowed)}", "scc validation ValidateSecurityContextConstraints")
    for v in obj.get("volumes") or []:
        if v not in SCC_VOLUMES:
            err(obj, "volumes", f"unknown volume type {v!r}", "scc types.go FSType")
    for b in ("allowPrivilegedContainer", "allowHostDirVolumePlugin", "allowHostNetwork", "allowHostPorts",
              "allowHostPID", "allowHostIPC", "readOnlyRootFilesystem", "allowPrivilegeEscalation"):
        if b in obj and not isinstance(obj[b], bool):
            err(obj, b, "must be a boolean", "scc types.go")
    allowed_caps = set(obj.get("allowedCapabilities") or [])
    volumes = set(obj.get("volumes") or [])
    name = obj["metadata"]["name"]
    for ds in daemonsets:
        meta = ds["spec"]["template"].get("metadata") or {}
        required = (meta.get("annotations") or {}).get("openshift.io/required-scc")
        if required != name:
            continue
        pod = ds["spec"]["template"]["spec"]
        where = f"admits DaemonSet {ds['metadata']['name']}"
        if pod.get("hostPID") and not obj.get("allowHostPID"):
            err(obj, "allowHostPID", f"false, but the pod uses hostPID ({where})", "scc provider")
        if pod.get("hostNetwork") and not obj.get("allowHostNetwork"):
            err(obj, "allowHostNetwork", f"false, but the pod uses hostNetwork ({where})", "scc provider")
        for v in pod.get("volumes") or []:
            kind = next((k for k in v if k in VOLUME_SOURCES), None)
            if kind and kind not in volumes and "*" not in volumes:
                err(obj, "volumes", f"{kind} not allowed, the pod's volume {v['name']} uses it ({where})", "scc provider")
            if kind == "hostPath" and not obj.get("allowHostDirVolumePlugin"):
                err(obj, "allowHostDirVolumePlugin", f"false, but the pod mounts hostPath {v['name']} ({where})", "scc provider")
        for c in (pod.get("initContainers") or []) + pod.get("containers", []):
            sc = c.get("securityContext") or {}
            if sc.get("privileged") and not obj.get("allowPrivilegedContainer"):
                err(obj, "allowPrivilegedContainer", f"false, but container {c['name']} is privileged ({where})", "scc provider")
            for cap in (sc.get("capabilities") or {}).get("add") or []:
                if cap not in allowed_caps and "*" not in allowed_caps:
                    err(obj, "allowedCapabilities", f"{cap} missing, container {c['name']} adds it ({where})", "scc provider")
            if obj.get("readOnlyRootFilesystem") and not sc.get("readOnlyRootFilesystem"):
                err(obj, "readOnlyRootFilesystem", f"required, container {c['name']} does not set it ({where})", "scc provider")
            if obj.get("allowPrivilegeEscalation") is False and sc.get("allowPrivilegeEscalation") is not False:
                err(obj, "allowPrivilegeEscalation", f"false, container {c['name']} does not set it false ({where})", "scc provider")
            if (obj.get("runAsUser") or {}).get("type") in ("MustRunAsNonRoot", "MustRunAsRange", "MustRunAs") and \
                    sc.get("runAsUser") == 0:
                err(obj, "runAsUser", f"refuses uid 0, container {c['name']} runs as 0 ({where})", "scc provider")
        seccomp = (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type")
        profiles = obj.get("seccompProfiles") or []
        if seccomp == "RuntimeDefault" and not ({"runtime/default", "*"} & set(profiles)):
            err(obj, "seccompProfiles", f"does not allow runtime/default ({where})", "scc provider")


def main(argv):
    texts = [open(f).read() for f in argv] if argv else [sys.stdin.read()]
    return check_objects([o for t in texts for o in yaml.safe_load_all(t) if o])


def check_objects(objs):
    """Prints each violation and a summary; 1 if any (or no object at all)."""
    namespaces = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Namespace"}
    daemonsets = [o for o in objs if o.get("kind") == "DaemonSet"]
    levels = []
    for obj in objs:
        kind = obj.get("kind")
        if kind == "SecurityContextConstraints":
            check_scc(obj, daemonsets)
            continue
        check_unknown_fields(obj)
        if kind == "DaemonSet":
            levels.append((obj["metadata"]["name"], check_daemonset(obj, namespaces)))
        elif kind == "Deployment":
            levels.append((obj["metadata"]["name"], check_deployment(obj, namespaces)))
        elif kind == "ClusterRole":
            check_cluster_role(obj)
    for e in errors:
        print(e)
    print(f"{len(objs)} objects, {len(errors)} API rule violations"
          + "".join(f"; {n} needs Pod Security level {lvl}" for n, lvl in levels))
    return 1 if errors or not objs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
