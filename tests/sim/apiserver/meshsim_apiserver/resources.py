"""The kinds the server knows: built-in resources (a fixed table), and custom
resources that appear and disappear with their CustomResourceDefinition.
Also discovery documents, server-side printing (Table) and version conversion."""
import copy
import datetime
import time

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

# Fields every resource can be selected on (metadata.name, metadata.namespace), and the
# extra ones of each built-in kind (pkg/registry/core/pod/strategy.go PodToSelectableFields,
# node, secret, event, namespace ... strategies).
COMMON_FIELDS = {"metadata.name", "metadata.namespace"}
POD_FIELDS = {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
              "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"}


class Resource:
    def __init__(self, group, version, plural, kind, namespaced, short_names=(), singular=None, status=False,
                 fields=(), categories=(), crd=None, versions=None, storage_version=None, printer_columns=None,
                 field_defaults=None, verbs=VERBS, stored=True, actions=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.verbs = list(verbs)
        self.stored = stored  # False: a review kind, answered and never kept (TokenReview)
        # Create-only subresources that are requests of another kind (serviceaccounts/token:
        # a TokenRequest): name -> (group, version, kind).
        self.actions = actions or {}
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.singular = singular or kind.lower()
        self.status = status
        self.fields = COMMON_FIELDS | set(fields)
        self.field_defaults = field_defaults or {}
        self.categories = list(categories)
        self.crd = crd  # the CRD's name for custom resources
        self.versions = versions or [version]  # served versions
        self.storage_version = storage_version or version
        self.printer_columns = printer_columns or {}  # version -> additionalPrinterColumns

    @property
    def gr(self):
        return f"{self.group}/{self.plural}"

    def api_version(self, version=None):
        v = version or self.storage_version
        return f"{self.group}/{v}" if self.group else v

    def list_kind(self):
        return self.kind + "List"


BUILTINS = [
    Resource("", "v1", "namespaces", "Namespace", False, ["ns"], status=True, fields={"status.phase"}),
    Resource("", "v1", "pods", "Pod", True, ["po"], status=True, fields=POD_FIELDS, categories=["all"],
             field_defaults={"spec.restartPolicy": "Always", "spec.schedulerName": "default-scheduler",
                             "spec.hostNetwork": "false"}),
    Resource("", "v1", "services", "Service", True, ["svc"], status=True, categories=["all"]),
    Resource("", "v1", "endpoints", "Endpoints", True, ["ep"], singular="endpoints"),
    Resource("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    Resource("", "v1", "secrets", "Secret", True, fields={"type"}),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"],
             actions={"token": ("authentication.k8s.io", "v1", "TokenRequest")}),
    Resource("", "v1", "nodes", "Node", False, ["no"], status=True, fields={"spec.unschedulable"}),
    Resource("", "v1", "events", "Event", True, ["ev"],
             fields={"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                     "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                     "reason", "reportingComponent", "source", "type"}),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
             ["crd", "crds"], status=True, categories=["api-extensions"]),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, ["ds"], status=True, categories=["all"]),
    Resource("apps", "v1", "deployments", "Deployment", True, ["deploy"], status=True, categories=["all"]),
    Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, verbs=["create"], stored=False),
    Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False, verbs=["create"], stored=False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
]


def resource_from_crd(crd):
    """A Resource for an established CRD (apiextensions.k8s.io/v1), or None when it
    serves no version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not served or not names.get("plural") or not names.get("kind"):
        return None
    storage = next((v["name"] for v in spec["versions"] if v.get("storage")), served[0]["name"])
    # Discovery lists versions by kube-aware priority (GA > beta > alpha, then higher number);
    # the preferred version is the first (apiextensions-apiserver's sortVersions).
    versions = sorted((v["name"] for v in served), key=version_priority)
    status = any(((v.get("subresources") or {}).get("status") is not None) for v in served)
    return Resource(spec.get("group", ""), versions[0], names["plural"], names["kind"],
                    spec.get("scope", "Namespaced") == "Namespaced", names.get("shortNames") or [],
                    singular=names.get("singular"), status=status, categories=names.get("categories") or [],
                    crd=crd["metadata"]["name"], versions=versions, storage_version=storage,
                    printer_columns={v["name"]: v.get("additionalPrinterColumns") or [] for v in served})


def version_priority(v):
    """k8s.io/apimachinery/pkg/version/helpers.go CompareKubeAwareVersionStrings, as a sort key."""
    import re
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0, v)
    major = int(m.group(1))
    kind = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (kind, -major, -minor, v)


def api_resource_list(group_version, resources):
    """/api/v1 or /apis/G/V (metav1.APIResourceList)."""
    out = []
    for r in resources:
        entry = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": r.verbs}
        if r.short_names:
            entry["shortNames"] = r.short_names
        if r.categories:
            entry["categories"] = r.categories
        out.append(entry)
        if r.status:
            out.append({"name": r.plural + "/status", "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"]})
        for name, (group, version, kind) in r.actions.items():
            out.append({"name": f"{r.plural}/{name}", "singularName": "", "namespaced": r.namespaced,
                        "group": group, "version": version, "kind": kind, "verbs": ["create"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out}


# --- conversion between versions -----------------------------------------------------------

def _get(obj, *path):
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def _set(obj, value, *path):
    for p in path[:-1]:
        obj = obj.setdefault(p, {})
    obj[path[-1]] = value


def _pop(obj, *path):
    for p in path[:-1]:
        obj = obj.get(p) if isinstance(obj, dict) else None
    if isinstance(obj, dict):
        return obj.pop(path[-1], None)
    return None


# v1 <-> v2 field pairs of ServiceMeshControlPlane that meshlock reads, following
# maistra/istio-operator pkg/apis/maistra/conversion (security.go: populateSecurityValues /
# populateSecurityConfig map spec.security.dataPlane.mtls <-> istio.global.mtls.enabled,
# dataPlane.automtls <-> istio.global.mtls.auto, trust.domain <-> istio.global.trustDomain).
SMCP_FIELDS = [
    (("spec", "istio", "global", "mtls", "enabled"), ("spec", "security", "dataPlane", "mtls")),
    (("spec", "istio", "global", "mtls", "auto"), ("spec", "security", "dataPlane", "automtls")),
    (("spec", "istio", "global", "trustDomain"), ("spec", "security", "trust", "domain")),
]


def convert(resource, obj, version):
    """The stored object as `version` of its kind. Custom resources only change apiVersion
    (the CRD `None` conversion strategy), except ServiceMeshControlPlane v1 <-> v2."""
    have = obj.get("apiVersion", "").split("/")[-1]
    if have == version or not have:
        return obj
    out = copy.deepcopy(obj)
    out["apiVersion"] = resource.api_version(version)
    if resource.group == "maistra.io" and resource.kind == "ServiceMeshControlPlane":
        for v1, v2 in SMCP_FIELDS:
            src, dst = (v1, v2) if version == "v2" else (v2, v1)
            value = _pop(out, *src)
            if value is not None:
                _set(out, value, *dst)
        # Drop emptied parents left by the move.
        for root in (("spec", "istio", "global", "mtls"), ("spec", "istio", "global"), ("spec", "istio"),
                     ("spec", "security", "dataPlane"), ("spec", "security", "trust"), ("spec", "security")):
            parent = _get(out, *root[:-1])
            if isinstance(parent, dict) and parent.get(root[-1]) == {}:
                del parent[root[-1]]
    return out


# --- server-side printing (meta.k8s.io/v1 Table) --------------------------------------------

def human_duration(seconds):
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if h < 24 * 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


_EPOCHS = {}


def _epoch(ts):
    """RFC 3339 seconds → Unix time, cached (a list of 10,000 pods has few distinct stamps)."""
    t = _EPOCHS.get(ts)
    if t is None:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()
        if len(_EPOCHS) > 100000:
            _EPOCHS.clear()
        _EPOCHS[ts] = t
    return t


def age(obj, now=None):
    ts = _get(obj, "metadata", "creationTimestamp")
    if not ts:
        return "<unknown>"
    try:
        t = _epoch(ts)
    except ValueError:
        return "<unknown>"
    now = now if now is not None else time.time()
    return human_duration(now - t)


def _col(name, type_="string", fmt="", desc="", priority=0):
    return {"name": name, "type": type_, "format": fmt, "description": desc, "priority": priority}


NAME_COL = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE_COL = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when this object was created.")


def _pod_row(p):
    st = p.get("status") or {}
    cs = st.get("containerStatuses") or []
    total = len(_get(p, "spec", "containers") or []) or len(cs)
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in cs)
    phase = st.get("phase") or "Pending"
    if _get(p, "metadata", "deletionTimestamp"):
        phase = "Terminating"
    return [f"{ready}/{total}", phase, restarts, age(p), st.get("podIP") or "<none>",
            _get(p, "spec", "nodeName") or "<none>", "<none>", "<none>"]


def _ports(svc):
    out = []
    for p in _get(svc, "spec", "ports") or []:
        s = f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort"):
            s = f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        out.append(s)
    return ",".join(out) or "<none>"


def _selector(m):
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items())) or "<none>"


def _endpoints(ep):
    addrs = []
    for ss in ep.get("subsets") or []:
        for a in ss.get("addresses") or []:
            for p in ss.get("ports") or [{}]:
                addrs.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else a.get("ip"))
    if not addrs:
        return "<none>"
    return ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")


TABLES = {
    "Pod": ([_col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
             _col("Status", desc="The aggregate status of the containers in this pod."),
             _col("Restarts", "string", desc="The number of times the containers in this pod have been restarted."),
             AGE_COL, _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
             _col("Readiness Gates", priority=1)], _pod_row),
    "Service": ([_col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE_COL,
                 _col("Selector", priority=1)],
                lambda s: [_get(s, "spec", "type") or "ClusterIP", _get(s, "spec", "clusterIP") or "<none>",
                           "<none>", _ports(s), age(s), _selector(_get(s, "spec", "selector"))]),
    "Namespace": ([_col("Status"), AGE_COL], lambda n: [_get(n, "status", "phase") or "Active", age(n)]),
    "Endpoints": ([_col("Endpoints"), AGE_COL], lambda e: [_endpoints(e), age(e)]),
    "EndpointSlice": ([_col("AddressType"), _col("Ports"), _col("Endpoints"), AGE_COL],
                      lambda e: [e.get("addressType", ""),
                                 ",".join(str(p.get("port")) for p in e.get("ports") or []) or "<unset>",
                                 ",".join(a for ep in e.get("endpoints") or [] for a in ep.get("addresses") or [])[:60]
                                 or "<unset>", age(e)]),
    "ConfigMap": ([_col("Data", "integer"), AGE_COL], lambda c: [len(c.get("data") or {}) + len(c.get("binaryData") or {}), age(c)]),
    "Secret": ([_col("Type"), _col("Data", "integer"), AGE_COL],
               lambda s: [s.get("type", "Opaque"), len(s.get("data") or {}), age(s)]),
    "ServiceAccount": ([_col("Secrets", "integer"), AGE_COL], lambda s: [len(s.get("secrets") or []), age(s)]),
    "Node": ([_col("Status"), _col("Roles"), AGE_COL, _col("Version")],
             lambda n: ["Ready", "<none>", age(n), _get(n, "status", "nodeInfo", "kubeletVersion") or ""]),
    "CustomResourceDefinition": ([_col("Created At", "date")],
                                 lambda c: [_get(c, "metadata", "creationTimestamp")]),
}


def _jsonpath_simple(obj, path):
    """additionalPrinterColumns jsonPath of the simple `.a.b[0].c` form the mesh CRDs use."""
    import re
    cur = obj
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        name, idx = part
        if name:
            cur = cur.get(name) if isinstance(cur, dict) else None
        else:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
        if cur is None:
            return None
    return cur


def table(resource, objects, version, include_object="Metadata", rv=None, continue_token=None):
    if resource.kind in TABLES:
        cols, row = TABLES[resource.kind]
        columns = [NAME_COL] + cols
        cells = lambda o: [o["metadata"]["name"]] + row(o)
    else:
        extra = resource.printer_columns.get(version) or []
        columns = [NAME_COL] + [_col(c["name"], c.get("type", "string"), c.get("format", ""),
                                     c.get("description", ""), c.get("priority", 0)) for c in extra]
        if not any(c["name"].lower() == "age" for c in extra):
            columns.append(AGE_COL)

        def cells(o):
            out = [o["metadata"]["name"]]
            for c in extra:
                v = _jsonpath_simple(o, c.get("jsonPath", ""))
                if c.get("type") == "date" and v:
                    v = age({"metadata": {"creationTimestamp": v}})
                out.append(v)
            if len(out) < len(columns):
                out.append(age(o))
            return out
    rows = []
    for o in objects:
        r = {"cells": cells(o)}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
        rows.append(r)
    meta = {}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    if continue_token:
        meta["continue"] = continue_token
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns,
            "rows": rows}
