"""What a real control plane runs beside the API server, reduced to what meshlock
sees: the system namespaces and the `kubernetes` Service, the pods' service
accounts and the node agents' pods (meshlock-system), the endpoints and
endpointslice controllers (pkg/controller/endpoint, pkg/controller/endpointslice)
and the endpointslice mirroring controller for selector-less Services
(pkg/controller/endpointslicemirroring). Plus meshsim's own followers of the
store: the manifest directory mirror and the kube-proxy stand-in (nft rules)."""
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid

import yaml

from .server import now_rfc3339

SYSTEM = {"system": True}
SLICE_MANAGER = "endpointslice-controller.k8s.io"
MIRROR_MANAGER = "endpointslicemirroring-controller.k8s.io"
GR_PODS, GR_SVC, GR_EP, GR_SLICE, GR_NS = "/pods", "/services", "/endpoints", "discovery.k8s.io/endpointslices", "/namespaces"
GR_SA = "/serviceaccounts"


def _meta(obj):
    return obj.get("metadata") or {}


def _owner(svc):
    return [{"apiVersion": "v1", "kind": "Service", "name": _meta(svc)["name"], "uid": _meta(svc).get("uid", ""),
             "controller": True, "blockOwnerDeletion": True}]


def selects(selector, labels):
    """A Service's selector (a plain map: every key equal) against labels."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ready(pod):
    st = pod.get("status") or {}
    if st.get("phase") != "Running" or not st.get("podIP"):
        return False
    conds = st.get("conditions")
    if conds:
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    cs = st.get("containerStatuses") or []
    return all(c.get("ready") for c in cs)


def _resolve_port(pod, target):
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return p.get("containerPort")
    return None


class EndpointControllers:
    def __init__(self, api):
        self.api, self.store = api, api.store
        self.suspended = 0
        self.store.listeners.append(self.on_event)

    def on_event(self, ev):
        if self.suspended:
            return
        if ev.gr == GR_PODS:
            ns = _meta(ev.obj).get("namespace")
            labels = [(_meta(o).get("labels") or {}) for o in (ev.obj, ev.prev) if o]
            for svc in self.store.list(GR_SVC, ns)[1]:
                sel = (svc.get("spec") or {}).get("selector")
                if sel and any(selects(sel, l) for l in labels):
                    self.sync_service(svc)
        elif ev.gr == GR_SVC:
            if ev.type == "DELETED":
                self.remove_service(ev.obj)
            else:
                self.sync_service(ev.obj)
        elif ev.gr == GR_EP and not self.store.flag(GR_EP, ev.obj, "system"):
            svc = self.store.get(GR_SVC, _meta(ev.obj).get("namespace"), _meta(ev.obj)["name"])
            if svc and not (svc.get("spec") or {}).get("selector"):
                self.sync_service(svc)

    def sync_all(self, only=None):
        """Every Service (or those `only` accepts), listing each namespace's pods once."""
        by_label = {}  # ns -> (key, value) -> pods carrying that label
        with self.store.batch():
            for svc in self.store.list(GR_SVC)[1]:
                if only and not only(svc):
                    continue
                ns = _meta(svc).get("namespace")
                if ns not in by_label:
                    index = by_label[ns] = {}
                    for p in self.store.list(GR_PODS, ns)[1]:
                        for kv in (_meta(p).get("labels") or {}).items():
                            index.setdefault(kv, []).append(p)
                selector = (svc.get("spec") or {}).get("selector") or {}
                lists = [by_label[ns].get(kv, []) for kv in selector.items()]
                self.sync_service(svc, min(lists, key=len) if lists else None)

    def _put(self, gr, obj):
        """Creates or updates a controller-owned object unless it is already so."""
        meta = obj["metadata"]
        old = self.store.get(gr, meta["namespace"], meta["name"])
        if old is not None:
            strip = lambda o: {k: v for k, v in o.items() if k != "metadata"} | {
                "labels": _meta(o).get("labels"), "owners": _meta(o).get("ownerReferences")}
            if strip(old) == strip(obj):
                return
            merged = dict(obj, metadata=dict(_meta(old), labels=meta.get("labels"),
                                             ownerReferences=meta.get("ownerReferences"),
                                             generation=int(_meta(old).get("generation") or 1) + 1))
            self.store.write(gr, "MODIFIED", merged, prev=old, flags=SYSTEM)
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta.setdefault("generation", 1)
            self.store.write(gr, "ADDED", obj, flags=SYSTEM)

    def _slice_name(self, svc):
        digest = hashlib.sha256(_meta(svc).get("uid", _meta(svc)["name"]).encode()).hexdigest()
        return f"{_meta(svc)['name'][:57]}-{digest[:5]}"

    def sync_service(self, svc, namespace_pods=None):
        spec = svc.get("spec") or {}
        ns, name = _meta(svc).get("namespace"), _meta(svc)["name"]
        selector = spec.get("selector")
        if not selector:
            return self._mirror_endpoints(svc)
        candidates = namespace_pods if namespace_pods is not None else self.store.list(GR_PODS, ns)[1]
        pods = [p for p in candidates
                if selects(selector, _meta(p).get("labels")) and (p.get("status") or {}).get("podIP")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        ports = spec.get("ports") or []
        # Endpoints (pkg/controller/endpoint): one subset per distinct port set.
        ready, not_ready, slice_eps = [], [], []
        slice_ports = {}
        for pod in pods:
            is_ready = pod_ready(pod)
            addr = {"ip": pod["status"]["podIP"], "nodeName": (pod.get("spec") or {}).get("nodeName"),
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": _meta(pod)["name"],
                                  "uid": _meta(pod).get("uid", "")}}
            if not addr["nodeName"]:
                del addr["nodeName"]
            (ready if is_ready else not_ready).append(addr)
            ep = {"addresses": [pod["status"]["podIP"]],
                  "conditions": {"ready": is_ready, "serving": is_ready, "terminating": False},
                  "targetRef": addr["targetRef"]}
            if addr.get("nodeName"):
                ep["nodeName"] = addr["nodeName"]
            slice_eps.append(ep)
            for p in ports:
                port = _resolve_port(pod, p.get("targetPort", p.get("port")))
                if port:
                    slice_ports[(p.get("name", ""), p.get("protocol", "TCP"))] = port
        ep_ports = [{"name": n, "port": port, "protocol": proto} if n else {"port": port, "protocol": proto}
                    for (n, proto), port in sorted(slice_ports.items())]
        subsets = []
        if ready or not_ready:
            subset = {}
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            subset["ports"] = ep_ports
            subsets.append(subset)
        endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": name, "namespace": ns, "labels": dict(_meta(svc).get("labels") or {})}}
        if subsets:
            endpoints["subsets"] = subsets
        self._put(GR_EP, endpoints)
        self._put(GR_SLICE, self._slice(svc, slice_eps, ep_ports, SLICE_MANAGER))

    def _slice(self, svc, endpoints, ports, manager):
        labels = dict(_meta(svc).get("labels") or {})
        labels.update({"kubernetes.io/service-name": _meta(svc)["name"],
                       "endpointslice.kubernetes.io/managed-by": manager})
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": self._slice_name(svc), "namespace": _meta(svc).get("namespace"),
                             "labels": labels, "ownerReferences": _owner(svc),
                             "generateName": _meta(svc)["name"] + "-"},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports}

    def _mirror_endpoints(self, svc):
        ns, name = _meta(svc).get("namespace"), _meta(svc)["name"]
        ep = self.store.get(GR_EP, ns, name)
        if ep is None:
            return
        eps, ports = [], []
        for ss in ep.get("subsets") or []:
            for a in ss.get("addresses") or []:
                e = {"addresses": [a["ip"]], "conditions": {"ready": True}}
                if a.get("nodeName"):
                    e["nodeName"] = a["nodeName"]
                eps.append(e)
            for a in ss.get("notReadyAddresses") or []:
                eps.append({"addresses": [a["ip"]], "conditions": {"ready": False}})
            for p in ss.get("ports") or []:
                q = {"port": p.get("port"), "protocol": p.get("protocol", "TCP")}
                if p.get("name"):
                    q["name"] = p["name"]
                if q not in ports:
                    ports.append(q)
        self._put(GR_SLICE, self._slice(svc, eps, ports, MIRROR_MANAGER))

    def remove_service(self, svc):
        ns = _meta(svc).get("namespace")
        for gr, name in ((GR_EP, _meta(svc)["name"]), (GR_SLICE, self._slice_name(svc))):
            obj = self.store.get(gr, ns, name)
            if obj is not None and self.store.flag(gr, obj, "system"):
                self.store.write(gr, "DELETED", obj, prev=obj)


AGENT_NAMESPACE = "meshlock-system"
AGENT_SERVICE_ACCOUNT = "meshlock-agent"
CA_SERVICE_ACCOUNT = "meshlock-ca"


def agent_pod_name(node):
    return f"meshlock-agent-{node}"


def bootstrap(api, nodes, apiserver_ip, apiserver_port):
    """The objects a fresh cluster has before anyone applies anything."""
    store = api.store
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        if store.get(GR_NS, "", ns) is None:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            api.create(api.builtins[GR_NS], None, obj, "v1", flags=SYSTEM)
    for node in nodes:
        if store.get("/nodes", "", node["name"]) is None:
            api.create(api.builtins["/nodes"], None, {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node["name"], "labels": {"kubernetes.io/hostname": node["name"],
                                                               "kubernetes.io/os": "linux"}},
                "spec": {"podCIDR": node.get("podCIDR"), "podCIDRs": [node.get("podCIDR")]},
                "status": {"addresses": [{"type": "InternalIP", "address": node.get("nodeIP")},
                                         {"type": "Hostname", "address": node["name"]}],
                           "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                           "nodeInfo": {"kubeletVersion": "v1.29.0-meshsim"}}}, "v1", flags=SYSTEM)
    if store.get(GR_SVC, "default", "kubernetes") is None:
        used = {(s.get("spec") or {}).get("clusterIP") for s in store.list(GR_SVC)[1]}
        ip = next(f"10.96.0.{i}" for i in range(1, 255) if f"10.96.0.{i}" not in used)
        api.create(api.builtins[GR_SVC], "default", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "targetPort": apiserver_port,
                                                 "protocol": "TCP"}]}}, "v1", flags=SYSTEM)
        api.create(api.builtins[GR_EP], "default", {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": apiserver_ip}],
                         "ports": [{"name": "https", "port": apiserver_port, "protocol": "TCP"}]}]}, "v1", flags=SYSTEM)
    if store.get(GR_NS, "", AGENT_NAMESPACE) is None:
        api.create(api.builtins[GR_NS], None, {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": AGENT_NAMESPACE}}, "v1", flags=SYSTEM)
    service_accounts(api)
    agent_pods(api, nodes)


def service_accounts(api):
    """A ServiceAccount for every pod's (pod admission insists on it in a real cluster,
    and a TokenRequest needs one), and meshlock's own: the agent's and the CA's."""
    wanted = {(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT), (AGENT_NAMESPACE, CA_SERVICE_ACCOUNT)}
    for pod in api.store.list(GR_PODS)[1]:
        wanted.add((_meta(pod).get("namespace"), (pod.get("spec") or {}).get("serviceAccountName") or "default"))
    for ns, name in sorted(wanted):
        if api.store.get(GR_SA, ns, name) is None and api.store.get(GR_NS, "", ns) is not None:
            api.create(api.builtins[GR_SA], ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                 "metadata": {"name": name, "namespace": ns}}, "v1", flags=SYSTEM)


def agent_pods(api, nodes):
    """One meshlock-agent pod per node, as the DaemonSet would have them: API objects
    only (meshsim runs the agents itself, in each node's netns, so: hostNetwork, the
    node's IP), there so that an agent's pod-bound token names its node. System
    objects: the manifest mirror and the service rules leave them out."""
    now = now_rfc3339()
    for node in nodes:
        name = agent_pod_name(node["name"])
        if api.store.get(GR_PODS, AGENT_NAMESPACE, name) is not None:
            continue
        status = {"phase": "Running", "qosClass": "BestEffort", "startTime": now,
                  "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                  "containerStatuses": [{"name": "agent", "ready": True, "started": True, "restartCount": 0,
                                         "image": "meshlock/agent", "imageID": "",
                                         "state": {"running": {"startedAt": now}}}]}
        if node.get("nodeIP"):
            ip = node["nodeIP"]
            status.update(hostIP=ip, hostIPs=[{"ip": ip}], podIP=ip, podIPs=[{"ip": ip}])
        api.create(api.builtins[GR_PODS], AGENT_NAMESPACE, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": AGENT_NAMESPACE,
                         "labels": {"app": "meshlock-agent", "meshlock.io/mtls": "disabled"}},
            "spec": {"nodeName": node["name"], "serviceAccountName": AGENT_SERVICE_ACCOUNT, "hostNetwork": True,
                     "dnsPolicy": "ClusterFirstWithHostNet",
                     "containers": [{"name": "agent", "image": "meshlock/agent"}]},
            "status": status}, "v1", flags=SYSTEM)


class Follower(threading.Thread):
    """Runs `work()` shortly after the store changed (debounced), and lets callers
    wait until everything up to a resourceVersion has been handled."""

    def __init__(self, store, delay):
        super().__init__(daemon=True)
        self.store, self.delay = store, delay
        self.cond = threading.Condition()
        self.wanted = store.rv
        self.done = -1
        self.stopping = False
        store.listeners.append(self._on_event)

    def relevant(self, ev):
        return True

    def _on_event(self, ev):
        if self.relevant(ev):
            with self.cond:
                self.wanted = ev.rv
                self.cond.notify_all()

    def wait(self, rv, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.done < min(rv, self.wanted) and time.monotonic() < deadline:
                self.cond.wait(0.1)
            return self.done >= min(rv, self.wanted)

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def run(self):
        while True:
            with self.cond:
                while self.done >= self.wanted and not self.stopping:
                    self.cond.wait(1)
                if self.stopping:
                    return
            time.sleep(self.delay)
            with self.cond:
                target = self.wanted
            try:
                self.work()
            except Exception as e:
                import sys
                print(f"meshsim apiserver: {type(self).__name__}: {e}", file=sys.stderr, flush=True)
            with self.cond:
                self.done = target
                self.cond.notify_all()


class ManifestMirror(Follower):
    """Keeps /run/meshsim/RUN/manifests a copy of the store, one file per kind as
    meshsim always wrote it (temp file + rename): objects the cluster made itself
    (system namespaces, Endpoints/EndpointSlices of controllers, CRDs) and synthetic
    bulk objects stay out, so manifest-mode agents see what they saw before."""

    SKIP = {"apiextensions.k8s.io/customresourcedefinitions", "/events", "discovery.k8s.io/endpointslices",
            "/nodes", "/secrets", "/serviceaccounts"}

    def __init__(self, store, directory):
        super().__init__(store, 0.05)
        self.directory = directory
        self.last = {}
        self.dirty = set(store.objects.keys()) | {"*"}

    def relevant(self, ev):
        if ev.gr in self.SKIP:
            return False
        self.dirty.add(ev.gr)
        return True

    @staticmethod
    def file_name(obj):
        api_version = obj.get("apiVersion", "")
        kind = obj.get("kind", "").lower()
        if "/" not in api_version:
            return kind + ".yaml"
        return f"{kind}.{api_version.split('/')[0].lower()}.yaml"

    def work(self):
        with self.store.lock:
            files = {}
            for gr, objs in self.store.objects.items():
                if gr in self.SKIP:
                    continue
                for key in sorted(objs):
                    flags = self.store.flags.get((gr,) + key) or {}
                    if flags.get("system") or flags.get("synthetic"):
                        continue
                    obj = objs[key]
                    files.setdefault(self.file_name(obj), []).append(obj)
        os.makedirs(self.directory, exist_ok=True)
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        for name, objs in files.items():
            text = yaml.dump_all(objs, Dumper=dumper, default_flow_style=False, sort_keys=False, explicit_start=True)
            if self.last.get(name) == text:
                continue
            tmp = os.path.join(self.directory, f".{name}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.directory, name))
            self.last[name] = text
        for name in os.listdir(self.directory):
            if name.endswith(".yaml") and name not in files:
                os.unlink(os.path.join(self.directory, name))
                self.last.pop(name, None)


class KubeProxy(Follower):
    """meshsim's ClusterIP rules follow the Services and pod labels in the store:
    the view below goes to `meshsim sync-api`, which updates the run's spec and
    reloads every node's nft table and the pods' hosts files."""

    def __init__(self, store, meshsim, run):
        super().__init__(store, 0.05)
        self.meshsim, self.run_name = meshsim, run
        self.last_view = None

    def relevant(self, ev):
        return ev.gr in (GR_PODS, GR_SVC, GR_EP, GR_NS) or not ev.gr.startswith(("/", "discovery.k8s.io/", "apiextensions"))

    def view(self):
        with self.store.lock:
            def real(gr, o):
                f = self.store.flags.get((gr,) + ((_meta(o).get("namespace") or ""), _meta(o)["name"])) or {}
                return not f.get("system") and not f.get("synthetic")

            namespaces = {_meta(n)["name"]: {k: v for k, v in (_meta(n).get("labels") or {}).items()
                                             if k != "kubernetes.io/metadata.name"}
                          for n in self.store.list(GR_NS)[1] if real(GR_NS, n)}
            pods = {f"{_meta(p)['namespace']}/{_meta(p)['name']}": _meta(p).get("labels") or {}
                    for p in self.store.list(GR_PODS)[1] if real(GR_PODS, p)}
            services = []
            for s in self.store.list(GR_SVC)[1]:
                spec = s.get("spec") or {}
                if not real(GR_SVC, s) or not spec.get("clusterIP") or spec.get("clusterIP") == "None":
                    continue
                entry = {"namespace": _meta(s)["namespace"], "name": _meta(s)["name"], "clusterIP": spec["clusterIP"],
                         "ports": [{"name": p.get("name", ""), "port": p.get("port"),
                                    "targetPort": p.get("targetPort", p.get("port")),
                                    "protocol": p.get("protocol", "TCP")} for p in spec.get("ports") or []],
                         "selector": spec.get("selector")}
                if not spec.get("selector"):
                    ep = self.store.get(GR_EP, _meta(s)["namespace"], _meta(s)["name"]) or {}
                    entry["endpoints"] = [a["ip"] for ss in ep.get("subsets") or [] for a in ss.get("addresses") or []]
                services.append(entry)
            manifests = []
            for gr, objs in self.store.objects.items():
                if gr.startswith("/") or gr in ManifestMirror.SKIP:
                    continue
                manifests += [o for k, o in sorted(objs.items()) if real(gr, o)]
            return {"namespaces": namespaces, "pods": pods, "services": services, "manifests": manifests}

    def work(self):
        view = self.view()
        text = json.dumps(view, sort_keys=True)
        if text == self.last_view:
            return
        proc = subprocess.run([self.meshsim, "sync-api", "--name", self.run_name], input=text.encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"meshsim sync-api failed ({proc.returncode}): {proc.stdout.decode(errors='replace')}")
        self.last_view = text


def synthetic_cluster(api, pods, services, policies, namespaces=10, node="synthetic-node"):
    """Bulk objects for the benchmark: no network namespaces, only API objects.
    Pods are Running with made-up IPs in 10.128.0.0/10, spread over `namespaces`
    namespaces; each Service selects pods of its namespace by an `app` label;
    policies are PeerAuthentications (workload-level, one per service)."""
    store = api.store
    flags = {"synthetic": True}
    t0 = time.monotonic()
    with store.batch():
        for i in range(namespaces):
            ns = f"synth-{i}"
            if store.get(GR_NS, "", ns) is None:
                api.create(api.builtins[GR_NS], None, {"metadata": {"name": ns, "labels": {
                    "meshlock.io/mtls": "enabled"}}}, "v1", flags=flags)
        apps = max(1, services)
        for i in range(pods):
            ns = f"synth-{i % namespaces}"
            app = f"app-{(i // namespaces) % apps}"
            ip = 0x0A800000 + i + 1
            ip_text = f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"
            name = f"pod-{i}"
            if store.get(GR_PODS, ns, name) is not None:
                continue
            api.create(api.builtins[GR_PODS], ns, {
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"nodeName": node, "serviceAccountName": app,
                         "containers": [{"name": "app", "image": "meshsim/app", "ports": [{"containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip_text, "podIPs": [{"ip": ip_text}], "hostIP": "172.18.0.250",
                           "qosClass": "BestEffort",
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0}]}},
                "v1", flags=flags)
        for i in range(services):
            ns = f"synth-{i % namespaces}"
            name = f"svc-{i}"
            if store.get(GR_SVC, ns, name) is not None:
                continue
            ip = 0x0A600000 + 0x8000 + i  # 10.96.128.0 and up
            api.create(api.builtins[GR_SVC], ns, {
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": f"10.96.{(ip >> 8) & 255}.{ip & 255}", "selector": {"app": f"app-{i}"},
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}, "v1", flags=flags)
        pa = api.custom.get("security.istio.io/peerauthentications")
        if policies and pa is None:
            raise ValueError("PeerAuthentication CRD is not installed")
        for i in range(policies):
            ns = f"synth-{i % namespaces}"
            name = f"policy-{i}"
            if store.get(pa.gr, ns, name) is not None:
                continue
            api.create(pa, ns, {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                                "metadata": {"name": name, "namespace": ns},
                                "spec": {"selector": {"matchLabels": {"app": f"app-{i}"}},
                                         "mtls": {"mode": "PERMISSIVE"}}}, "v1", flags=flags)
    return {"pods": pods, "services": services, "policies": policies, "namespaces": namespaces,
            "seconds": round(time.monotonic() - t0, 3), "resourceVersion": str(store.rv)}
