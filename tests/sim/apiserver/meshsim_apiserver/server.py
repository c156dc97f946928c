"""The HTTP side: routing of Kubernetes API paths, the verbs, watches, discovery.

Behaviour follows k8s.io/apiserver/pkg/endpoints (handlers/{get,create,update,patch,
delete,watch}.go, discovery/) and the etcd3 storage (storage/etcd3/store.go: list
pagination with continue tokens, 410 Expired for compacted versions) and the watch
cache (storage/cacher: selector-filtered events, bookmarks)."""
import base64
import bisect
import datetime
import http.server
import json
import queue
import random
import re
import socketserver
import ssl
import string
import threading
import time
import urllib.parse
import uuid

from . import patch as patches
from . import resources as res
from . import serviceaccounts
from .auth import User
from .errors import ApiError, not_found
from .selectors import FieldSelector, LabelSelector, SelectorError
from .store import GONE, Gone

SERVER_VERSION = {
    "major": "1", "minor": "29", "gitVersion": "v1.29.0-meshsim", "gitCommit": "meshsim",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.21", "compiler": "gc",
    "platform": "linux/amd64",
}
NAMESPACE_FINALIZE_SECONDS = 1.0  # a Terminating namespace's contents go after this
END = object()  # queued to watchers of a resource whose CRD went away


def parse_bool(value):
    """Go's strconv.ParseBool, which the API server's query decoding uses."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")



def selectors(r, query):
    """The request's label and field selectors, or 400 naming what is wrong."""
    try:
        return (LabelSelector.parse(query.get("labelSelector")),
                FieldSelector.parse(query.get("fieldSelector"), r.fields))
    except SelectorError as e:
        raise ApiError(400, "BadRequest", str(e))


def gone_status(message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Expired", "code": 410}


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL_KINDS = {"Namespace", "Service"}


def encode_continue(rv, after):
    return base64.urlsafe_b64encode(json.dumps({"v": "meshsim/1", "rv": rv, "start": after}).encode()).decode()


def decode_continue(token):
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
        return int(data["rv"]), list(data["start"])
    except Exception:
        raise ApiError(400, "BadRequest", "continue key is not valid: incorrect encoded start resourceVersion")


class Settings:
    """Live knobs for fault tests; changed through POST /meshsim/settings."""

    def __init__(self):
        self.watch_close_after = 0.0  # seconds; 0: watches stay open until timeoutSeconds
        self.bookmark_interval = 60.0  # the watch cache sends a bookmark about once a minute
        self.list_delay = 0.0

    def as_json(self):
        return {"watchCloseAfterSeconds": self.watch_close_after, "bookmarkIntervalSeconds": self.bookmark_interval}

    def update(self, body):
        if "watchCloseAfterSeconds" in body:
            self.watch_close_after = float(body["watchCloseAfterSeconds"])
        if "bookmarkIntervalSeconds" in body:
            self.bookmark_interval = max(0.1, float(body["bookmarkIntervalSeconds"]))


class Api:
    """Everything but the sockets: resolves a request and answers it."""

    def __init__(self, store, authenticator, rbac, controllers=None, settings=None, addresses=()):
        self.store, self.authenticator, self.rbac = store, authenticator, rbac
        self.settings = settings or Settings()
        self.addresses = list(addresses)
        self.controllers = controllers
        self.shutting_down = threading.Event()
        self.builtins = {r.gr: r for r in res.BUILTINS}
        self.custom = {}  # gr -> Resource, from CRDs
        self.snapshots = {}  # (gr, ns, rv) -> objects, for consistent paginated lists
        self.snapshot_order = []
        for crd in self.store.list("apiextensions.k8s.io/customresourcedefinitions")[1]:
            self._crd_changed("ADDED", crd)
        store.listeners.append(self._on_event)
        self.ctl_handlers = {}
        self.watch_count = 0
        self.json_cache = {}
        self.last_latency = 0.0

    # --- resource registry --------------------------------------------------------
    def _on_event(self, ev):
        if ev.gr == "apiextensions.k8s.io/customresourcedefinitions":
            self._crd_changed(ev.type, ev.obj)

    def _crd_changed(self, type_, crd):
        spec = crd.get("spec") or {}
        gr = f"{spec.get('group')}/{(spec.get('names') or {}).get('plural')}"
        if type_ == "DELETED":
            self.custom.pop(gr, None)
            for w in list(self.store.watchers):
                if w.gr == gr:
                    w.queue.put(END)
            return
        r = res.resource_from_crd(crd)
        if r:
            self.custom[gr] = r
        else:
            self.custom.pop(gr, None)

    def all_resources(self):
        return list(self.builtins.values()) + list(self.custom.values())

    def groups(self):
        """group -> (versions by priority, [resources]) for /apis."""
        out = {}
        for r in self.all_resources():
            if not r.group:
                continue
            vs, rs = out.setdefault(r.group, (set(), []))
            vs.update(r.versions)
            rs.append(r)
        return {g: (sorted(vs, key=res.version_priority), rs) for g, (vs, rs) in out.items()}

    def resource(self, group, version, plural):
        gr = f"{group}/{plural}"
        r = self.builtins.get(gr) or self.custom.get(gr)
        if r and version in r.versions:
            return r
        return None

    # --- discovery ----------------------------------------------------------------
    def api_versions(self):
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": a} for a in self.addresses]}

    def api_group(self, group, versions):
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": vs, "preferredVersion": vs[0]}

    def api_group_list(self):
        groups = self.groups()
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self.api_group(g, groups[g][0]) for g in sorted(groups, key=self._group_order)]}

    @staticmethod
    def _group_order(g):
        order = ["apps", "discovery.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io"]
        return (order.index(g) if g in order else len(order), g)

    def group_version_resources(self, group, version):
        rs = [r for r in self.all_resources() if r.group == group and version in r.versions]
        if not rs:
            return None
        return res.api_resource_list(f"{group}/{version}" if group else version, rs)

    # --- authorization ------------------------------------------------------------
    def subject_access_review(self, body):
        """authorization.k8s.io/v1 SubjectAccessReview: may spec.user (with
        spec.groups) do spec.resourceAttributes? Answered by the same RBAC
        rules as requests (kube-apiserver's SubjectAccessReview REST handler)."""
        spec = (body or {}).get("spec") or {}
        attrs = spec.get("resourceAttributes")
        if not spec.get("user") and not spec.get("groups"):
            raise ApiError(400, "BadRequest", "at least one of user or group must be specified")
        if not isinstance(attrs, dict):
            raise ApiError(400, "BadRequest", "resourceAttributes is required (nonResourceAttributes are not served)")
        who = User(spec.get("user") or "", spec.get("uid") or "", spec.get("groups") or [])
        allowed = bool(self.rbac) and self.rbac.with_stored(self.store).allows(
            who, attrs.get("verb") or "", attrs.get("group") or "", attrs.get("resource") or "",
            attrs.get("subresource") or "", attrs.get("name") or "", attrs.get("namespace") or None)
        status = {"allowed": allowed}
        if not allowed:
            status["reason"] = ""
        return {"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    def authorize(self, user, verb, resource, namespace, name, subresource=None):
        if user.is_admin:
            return
        if self.rbac and self.rbac.with_stored(self.store).allows(user, verb, resource.group, resource.plural, subresource,
                                                              name, namespace if resource.namespaced else None):
            return
        target = resource.plural + (f"/{subresource}" if subresource else "")
        scope = f' in the namespace "{namespace}"' if namespace else (" at the cluster scope" if not resource.namespaced or verb in ("list", "watch") else "")
        what = f"{target}.{resource.group}" if resource.group else target
        who = f'"{name}" ' if name else ""
        raise ApiError(403, "Forbidden",
                       f'{what} {who}is forbidden: User "{user.name}" cannot {verb} resource "{target}" in API group '
                       f'"{resource.group}"{scope}',
                       {"name": name or "", "group": resource.group, "kind": resource.plural})

    # --- object helpers -----------------------------------------------------------
    def _versioned(self, r, obj, version):
        return res.convert(r, obj, version)

    def _check_namespace(self, r, namespace):
        if r.namespaced and namespace and not self.store.get("/namespaces", "", namespace):
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})

    def _validate(self, r, obj, namespace, name_in_url=None):
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", f"{r.kind} in version \"{r.version}\" cannot be handled as a {r.kind}: "
                                           "metadata must be an object")
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != r.kind:
            raise ApiError(400, "BadRequest", f"the API version in the data ({api_version}) does not match the "
                                              f"expected API version ({r.api_version()}) or kind {kind} != {r.kind}")
        if r.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                                  "sent on the request")
        name = meta.get("name") or ""
        if name_in_url is not None and name != name_in_url:
            raise ApiError(400, "BadRequest", "the name of the object "
                                              f"({name}) does not match the name on the URL ({name_in_url})")
        pattern = DNS_LABEL if r.kind in DNS_LABEL_KINDS else DNS_SUBDOMAIN
        if not name:
            self._invalid(r, "", "metadata.name", "Required value: name or generateName is required")
        if len(name) > (63 if r.kind in DNS_LABEL_KINDS else 253) or not pattern.match(name):
            self._invalid(r, name, "metadata.name",
                          f'Invalid value: "{name}": a lowercase RFC 1123 '
                          f'{"label" if r.kind in DNS_LABEL_KINDS else "subdomain"} must consist of lower case '
                          "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value):
                self._invalid(r, name, f"metadata.labels", f'Invalid value: "{value}": a valid label must be an empty '
                                                           "string or consist of alphanumeric characters, '-', '_' or '.'")
        if r.kind == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            if name != f"{names.get('plural')}.{spec.get('group')}":
                self._invalid(r, name, "metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')

    def _invalid(self, r, name, field, message):
        raise ApiError(422, "Invalid", f'{r.kind} "{name}" is invalid: {field}: {message}',
                       {"name": name, "group": r.group, "kind": r.kind,
                        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})

    def defaults(self, r, obj):
        """Fields a real API server sets on create (defaulting and admission)."""
        meta = obj["metadata"]
        if r.kind == "Namespace":
            meta["labels"] = dict(meta.get("labels") or {}, **{"kubernetes.io/metadata.name": meta["name"]})
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        elif r.kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") in (None, "") and spec["type"] != "ExternalName":
                spec["clusterIP"] = self.allocate_cluster_ip()
            if spec.get("clusterIP") and spec["clusterIP"] != "None":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif r.kind == "Pod":
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("serviceAccount", spec["serviceAccountName"])
            images = {}
            for c in spec.get("containers") or []:
                images[c.get("name")] = c.get("image", "")
                for p in c.get("ports") or []:
                    p.setdefault("protocol", "TCP")
            # What the kubelet always reports for a container (clients such as the
            # Python client's V1ContainerStatus require image, imageID, restartCount).
            for cs in (obj.get("status") or {}).get("containerStatuses") or []:
                cs.setdefault("image", images.get(cs.get("name"), ""))
                cs.setdefault("imageID", "")
                cs.setdefault("restartCount", 0)
                if cs.get("ready"):
                    cs.setdefault("started", True)
                    cs.setdefault("state", {"running": {"startedAt": obj["metadata"]["creationTimestamp"]}})
        elif r.kind == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = dict(spec.get("names") or {})
            names.setdefault("singular", names.get("kind", "").lower())
            names.setdefault("listKind", names.get("kind", "") + "List")
            spec["names"] = names
            obj["status"] = {
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now_rfc3339(),
                     "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "lastTransitionTime": now_rfc3339(), "message": "the initial names have been accepted"}],
                "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")]}
        elif r.kind == "Secret":
            obj.setdefault("type", "Opaque")

    def allocate_cluster_ip(self):
        # From 10.96.100.1 up: specs pick their ClusterIPs lower in 10.96.0.0/16.
        used = {(s.get("spec") or {}).get("clusterIP") for s in self.store.list("/services")[1]}
        for third in range(100, 256):
            for fourth in range(1, 255):
                ip = f"10.96.{third}.{fourth}"
                if ip not in used:
                    return ip
        raise ApiError(500, "InternalError", "no free ClusterIP in 10.96.0.0/16")

    def prepare_create(self, r, obj, namespace):
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if r.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        self._validate(r, obj, meta.get("namespace"))
        obj["apiVersion"] = r.api_version()
        obj["kind"] = r.kind
        meta.pop("resourceVersion", None)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["creationTimestamp"] = meta.get("creationTimestamp") or now_rfc3339()
        meta["generation"] = 1
        for key in ("deletionTimestamp", "selfLink"):
            meta.pop(key, None)
        if r.status and r.crd:
            obj.pop("status", None)  # apiextensions strategy: status is only written through /status
        if r.kind == "Pod" and "status" not in obj:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self.defaults(r, obj)
        return obj

    def prepare_update(self, r, old, new, subresource):
        new = json.loads(json.dumps(new))
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for key in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        new["apiVersion"], new["kind"] = r.api_version(), r.kind
        if subresource == "status":
            # /status changes status only (the registries' StatusStrategy.PrepareForUpdate).
            out = dict(old)
            out["status"] = new.get("status")
            if out["status"] is None:
                out.pop("status")
            return out
        if r.status and "status" in old:
            new["status"] = old["status"]  # the main resource ignores status changes
        elif r.status:
            new.pop("status", None)
        if r.kind == "Namespace":
            meta["labels"] = dict(meta.get("labels") or {}, **{"kubernetes.io/metadata.name": meta["name"]})
        if r.kind == "Service":
            spec = new.setdefault("spec", {})
            old_spec = old.get("spec") or {}
            if not spec.get("clusterIP") and old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]  # kubectl apply's patch may not carry it
                spec.setdefault("clusterIPs", old_spec.get("clusterIPs"))
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
        def body(o):
            return {k: v for k, v in o.items() if k not in ("metadata", "status")}
        if body(old) != body(new):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        return new

    # --- verbs --------------------------------------------------------------------
    def get(self, r, namespace, name, version):
        obj = self.store.get(r.gr, namespace if r.namespaced else "", name)
        if obj is None:
            raise not_found(r, name)
        return self._versioned(r, obj, version)

    def create(self, r, namespace, body, version, dry_run=False, flags=None):
        if not r.stored:
            raise ApiError(405, "MethodNotAllowed", f"{r.kind} is a request, not an object to store")
        self._check_namespace(r, namespace or (body.get("metadata") or {}).get("namespace"))
        obj = self.prepare_create(r, res.convert(r, body, r.storage_version) if isinstance(body, dict) else body,
                                  namespace)
        with self.store.lock:
            if self.store.get(r.gr, obj["metadata"].get("namespace"), obj["metadata"]["name"]) is not None:
                what = r.plural if not r.group else f"{r.plural}.{r.group}"
                raise ApiError(409, "AlreadyExists", f'{what} "{obj["metadata"]["name"]}" already exists',
                               {"name": obj["metadata"]["name"], "group": r.group, "kind": r.plural})
            if r.namespaced:
                ns = self.store.get("/namespaces", "", obj["metadata"]["namespace"])
                if ns and (ns.get("metadata") or {}).get("deletionTimestamp"):
                    raise ApiError(403, "Forbidden", f'{r.plural} "{obj["metadata"]["name"]}" is forbidden: unable to '
                                                     f'create new content in namespace {ns["metadata"]["name"]} because it is being terminated')
            if dry_run:
                return self._versioned(r, obj, version)
            stored = self.store.write(r.gr, "ADDED", obj, flags=flags)
        return self._versioned(r, stored, version)

    def update(self, r, namespace, name, body, version, subresource=None, dry_run=False):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        body = res.convert(r, body, r.storage_version)
        self._validate(r, dict(body, metadata=dict(body.get("metadata") or {}, name=(body.get("metadata") or {}).get("name"))),
                       namespace if r.namespaced else None, name)
        with self.store.lock:
            old = self.store.get(r.gr, namespace if r.namespaced else "", name)
            if old is None:
                raise not_found(r, name)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                what = r.plural if not r.group else f"{r.plural}.{r.group}"
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": the object has '
                                                "been modified; please apply your changes to the latest version and try again",
                               {"name": name, "group": r.group, "kind": r.plural})
            new = self.prepare_update(r, old, body, subresource)
            return self._store_update(r, old, new, version, dry_run)

    def _store_update(self, r, old, new, version, dry_run):
        compare = lambda o: {k: v for k, v in o.items() if k != "metadata"} | {"metadata": {
            k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}
        if compare(old) == compare(new):
            return self._versioned(r, old, version)  # a no-op write keeps the resourceVersion
        if dry_run:
            return self._versioned(r, new, version)
        flags = self.store.flags.get((r.gr,) + (old["metadata"].get("namespace") or "", old["metadata"]["name"]))
        stored = self.store.write(r.gr, "MODIFIED", new, prev=old, flags=flags)
        return self._versioned(r, stored, version)

    def patch(self, r, namespace, name, content_type, body, version, subresource=None, dry_run=False):
        ctype = (content_type or "").split(";")[0].strip()
        try:
            data = json.loads(body or b"null")
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"error decoding patch: {e}")
        with self.store.lock:
            old = self.store.get(r.gr, namespace if r.namespaced else "", name)
            if old is None:
                raise not_found(r, name)
            current = self._versioned(r, old, version)
            try:
                if ctype == "application/merge-patch+json":
                    patched = patches.merge_patch(current, data)
                elif ctype == "application/strategic-merge-patch+json":
                    if r.crd:
                        raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                       "accepted media types include: application/json-patch+json, "
                                       "application/merge-patch+json, application/apply-patch+yaml")
                    patched = patches.strategic_merge_patch(current, data, r.kind)
                elif ctype == "application/json-patch+json":
                    patched = patches.json_patch(current, data)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                                   "accepted media types include: application/json-patch+json, "
                                   "application/merge-patch+json, application/strategic-merge-patch+json")
            except patches.PatchError as e:
                raise ApiError(422 if ctype == "application/json-patch+json" else 400, "BadRequest", str(e))
            if not isinstance(patched, dict):
                raise ApiError(400, "BadRequest", "the patch produced something that is not an object")
            patched = res.convert(r, patched, r.storage_version)
            meta = patched.setdefault("metadata", {})
            if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {r.plural} "{name}": the object '
                                                "has been modified; please apply your changes to the latest version and try again")
            self._validate(r, patched, namespace if r.namespaced else None, name)
            new = self.prepare_update(r, old, patched, subresource)
            return self._store_update(r, old, new, version, dry_run)

    def delete(self, r, namespace, name, version, dry_run=False):
        with self.store.lock:
            old = self.store.get(r.gr, namespace if r.namespaced else "", name)
            if old is None:
                raise not_found(r, name)
            if dry_run:
                return self._versioned(r, old, version)
            self.delete_object(r, old)
            current = self.store.get(r.gr, namespace if r.namespaced else "", name)  # a Terminating namespace
        return self._versioned(r, current or old, version)

    def delete_object(self, r, old):
        """Deletes at once (no graceful deletion: there is no kubelet to wait for);
        a namespace or a CRD takes its contents with it, as their controllers do."""
        with self.store.lock:
            if r.kind == "Namespace" and not old["metadata"].get("deletionTimestamp"):
                # Graceful, as the namespace controller does it: Terminating first (its
                # objects can still be deleted, nothing new can be created), then its
                # contents and the namespace itself go a moment later.
                terminating = dict(old, metadata=dict(old["metadata"], deletionTimestamp=now_rfc3339()),
                                   status={"phase": "Terminating"})
                flags = self.store.flags.get((r.gr, "", old["metadata"]["name"]))
                self.store.write(r.gr, "MODIFIED", terminating, prev=old, flags=flags)
                timer = threading.Timer(NAMESPACE_FINALIZE_SECONDS, self._finalize_namespace, (r, old["metadata"]["name"]))
                timer.daemon = True
                timer.start()
                return
            if r.kind == "Namespace":
                ns = old["metadata"]["name"]
                for gr, objs in list(self.store.objects.items()):
                    for (ons, oname), obj in list(objs.items()):
                        if ons == ns:
                            self.store.write(gr, "DELETED", obj, prev=obj, stamp=False)
            if r.kind == "CustomResourceDefinition":
                spec = old.get("spec") or {}
                gr = f"{spec.get('group')}/{(spec.get('names') or {}).get('plural')}"
                for obj in self.store.list(gr)[1]:
                    self.store.write(gr, "DELETED", obj, prev=obj, stamp=False)
            deleted = dict(old)
            self.store.write(r.gr, "DELETED", deleted, prev=old)

    def _finalize_namespace(self, r, name):
        with self.store.lock:
            ns = self.store.get(r.gr, "", name)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self.delete_object(r, ns)

    def list(self, r, namespace, query, version):
        """(resourceVersion, stored objects, continue token, remainingItemCount).
        A paginated list serves every page from the snapshot of its first page
        (etcd reads each page at the first page's revision)."""
        labels, fields = selectors(r, query)
        ns = namespace if r.namespaced else None
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid limit: {query.get('limit')}")
        token = query.get("continue")
        if query.get("resourceVersion") == "0" and not token:
            # Served from the watch cache, which does not paginate: the limit is
            # ignored (kube-apiserver up to 1.32, staging/src/k8s.io/apiserver/
            # pkg/storage/cacher: a list with resourceVersion=0 is not delegated
            # to etcd, and the cache answers it whole). client-go's first list.
            limit = 0
        begin = 0
        if token:
            list_rv, start = decode_continue(token)
            snap = self.snapshots.get((r.gr, ns, list_rv))
            if snap is None:
                if list_rv < self.store.compacted_rv:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                                   "list result. You can start a new list without the continue parameter, or use the "
                                   "continue token in this response to retrieve the remainder of the results. Continuing "
                                   "with the provided token results in an inconsistent list - objects that were created, "
                                   "modified, or deleted between the time the first chunk was returned and now may show up "
                                   "in the list.")
                snap = self._snapshot(self.store.list(r.gr, ns)[1])
            objs, keys = snap
            begin = bisect.bisect_right(keys, tuple(start))
        else:
            list_rv, objs = self.store.list(r.gr, ns)
            keys = None
        selective = not (labels.empty() and fields.empty())
        items, i = [], begin
        while i < len(objs) and (not limit or len(items) < limit):
            o = objs[i]
            if not selective or (labels.matches((o.get("metadata") or {}).get("labels"))
                                 and fields.matches(o, r.field_defaults)):
                items.append(o)
            i += 1
        more = i < len(objs) and (not selective or any(
            labels.matches((o.get("metadata") or {}).get("labels")) and fields.matches(o, r.field_defaults)
            for o in objs[i:]))
        next_token, remaining = None, None
        if limit and more:
            if keys is None:
                self._remember_snapshot((r.gr, ns, list_rv), self._snapshot(objs))
            m = items[-1]["metadata"]
            next_token = encode_continue(list_rv, [m.get("namespace") or "", m["name"]])
            if not selective:
                remaining = len(objs) - i
        return list_rv, items, next_token, remaining

    @staticmethod
    def _snapshot(objs):
        return objs, [((o["metadata"].get("namespace") or ""), o["metadata"]["name"]) for o in objs]

    def encode(self, r, obj, version):
        """An object's JSON at a version, cached by resourceVersion (stored objects never change)."""
        m = obj["metadata"]
        key = (r.gr, m.get("namespace") or "", m["name"], m.get("resourceVersion"), version)
        text = self.json_cache.get(key)
        if text is None:
            text = json.dumps(self._versioned(r, obj, version), separators=(",", ":"))
            if len(self.json_cache) > 100000:
                self.json_cache.clear()
            self.json_cache[key] = text
        return text

    def _remember_snapshot(self, key, objs):
        with self.store.lock:
            self.snapshots[key] = objs
            self.snapshot_order.append(key)
            while len(self.snapshot_order) > 16:
                self.snapshots.pop(self.snapshot_order.pop(0), None)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshsim-apiserver"
    timeout = 300

    def log_message(self, fmt, *args):
        if self.server.log:
            self.server.log.write("%s %s\n" % (self.log_date_time_string(), fmt % args))
            self.server.log.flush()

    @property
    def api(self):
        return self.server.api

    # --- plumbing -----------------------------------------------------------------
    def _send_json(self, code, obj, headers=None):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_raw(self, code, data, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self):
        if self._body_read:
            return
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or n > 64 << 20:
            self.close_connection = True
        elif n:
            self.rfile.read(n)

    def _body(self):
        self._body_read = True
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(n) if n else b""

    def _json_body(self):
        raw = self._body()
        try:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                import yaml
                return yaml.safe_load(raw)
            return json.loads(raw or b"null")
        except Exception as e:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {e}")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        started = time.monotonic()
        self._body_read = False
        try:
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            path = url.path.rstrip("/") or "/"
            if path in ("/healthz", "/livez", "/readyz"):
                return self._send_raw(200, b"ok", "text/plain; charset=utf-8")
            user = self._authenticate()
            if path.startswith("/meshsim/"):
                return self._control(method, path, user)
            if method == "GET" and self._nonresource(path):
                return
            self._resource(method, path, query, user)
        except ApiError as e:
            self._drain()  # a refused request's body must not be read as the next request
            self._send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug in the fixture: say so, keep serving
            import traceback
            traceback.print_exc(file=self.server.log)
            try:
                self._send_json(500, ApiError(500, "InternalError", f"meshsim apiserver: {type(e).__name__}: {e}").status())
            except Exception:
                self.close_connection = True
        finally:
            self.server.api.last_latency = time.monotonic() - started

    def _authenticate(self):
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        user = self.api.authenticator.user(header[len("Bearer "):].strip())
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def _nonresource(self, path):
        api = self.api
        if path == "/version":
            self._send_json(200, SERVER_VERSION)
        elif path == "/api":
            self._send_json(200, api.api_versions())
        elif path == "/apis":
            self._send_json(200, api.api_group_list())
        elif path == "/api/v1":
            self._send_json(200, api.group_version_resources("", "v1"))
        elif re.fullmatch(r"/apis/[^/]+", path):
            group = path.split("/")[2]
            groups = api.groups()
            if group not in groups:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._send_json(200, dict(api.api_group(group, groups[group][0]), kind="APIGroup", apiVersion="v1"))
        elif re.fullmatch(r"/apis/[^/]+/[^/]+", path):
            _, _, group, version = path.split("/")
            doc = api.group_version_resources(group, version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._send_json(200, doc)
        elif path == "/openapi/v2":
            self._openapi_v2()
        elif path.startswith("/openapi/v3"):
            # Not served: kubectl 1.32 falls back to /openapi/v2 (k8s.io/client-go openapi3 → v2 fallbacks).
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            return False
        return True

    def _openapi_v2(self):
        accept = self.headers.get("Accept") or ""
        if "protobuf" in accept:
            # gnostic openapi_v2.Document: swagger (1) = "2.0", info (2) = {title (1), version (2)}.
            # kubectl 1.20 validates only kinds the document defines, so an empty
            # document means "skip validation" (k8s.io/kubectl/pkg/util/openapi/validation).
            def field(num, payload):
                return bytes([(num << 3) | 2, len(payload)]) + payload
            info = field(1, b"Kubernetes") + field(2, SERVER_VERSION["gitVersion"].encode())
            doc = field(1, b"2.0") + field(2, info)
            return self._send_raw(200, doc, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        self._send_json(200, {"swagger": "2.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                              "paths": {}, "definitions": {}})

    def _parse_resource_path(self, path):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        r = self.api.resource(group, version, plural)
        if r is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not ((sub == "status" and r.status) or sub in r.actions):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if r.namespaced is False and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return r, version, namespace, name, sub, watch

    def _resource(self, method, path, query, user):
        api = self.api
        r, version, namespace, name, sub, watch = self._parse_resource_path(path)
        watch = watch or parse_bool(query.get("watch"))
        dry_run = "dryRun" in query and query["dryRun"] == "All"
        if method == "GET":
            verb = "watch" if watch else ("get" if name else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if name else "deletecollection"}[method]
        api.authorize(user, verb, r, namespace, name, sub)
        if sub in r.actions or not r.stored:
            return self._action(r, verb, namespace, name, sub)
        accept = self.headers.get("Accept") or ""
        as_table = "as=Table" in accept
        include = query.get("includeObject", "Metadata")
        if verb == "watch":
            if name:
                query = dict(query)
                query["fieldSelector"] = ",".join(filter(None, [query.get("fieldSelector"), f"metadata.name={name}"]))
            return self._watch(r, version, namespace, query, as_table, include)
        if verb == "get":
            obj = api.get(r, namespace, name, version)
            if as_table:
                obj = res.table(r, [obj], version, include, rv=obj["metadata"].get("resourceVersion"))
            return self._send_json(200, obj)
        if verb == "list":
            if api.settings.list_delay:
                time.sleep(api.settings.list_delay)
            rv, items, token, remaining = api.list(r, namespace, query, version)
            if as_table:
                items = [api._versioned(r, o, version) for o in items]
                return self._send_json(200, res.table(r, items, version, include, rv=rv, continue_token=token))
            meta = {"resourceVersion": str(rv)}
            if token:
                meta["continue"] = token
            if remaining is not None:
                meta["remainingItemCount"] = remaining
            head = json.dumps({"kind": r.list_kind(), "apiVersion": r.api_version(version), "metadata": meta},
                              separators=(",", ":"))[:-1]
            body = (head + ',"items":[' + ",".join(api.encode(r, o, version) for o in items) + "]}").encode()
            return self._send_raw(200, body, "application/json")
        if verb == "create":
            if name:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            body = self._json_body()
            obj = api.create(r, namespace, body, version, dry_run)
            return self._send_json(201, obj)
        if verb == "update":
            obj = api.update(r, namespace, name, self._json_body(), version, sub, dry_run)
            return self._send_json(200, obj)
        if verb == "patch":
            obj = api.patch(r, namespace, name, self.headers.get("Content-Type"), self._body(), version, sub, dry_run)
            return self._send_json(200, obj)
        if verb == "delete":
            self._body()  # DeleteOptions: propagationPolicy, gracePeriodSeconds, preconditions (accepted)
            obj = api.delete(r, namespace, name, version, dry_run)
            return self._send_json(200, obj)
        if verb == "deletecollection":
            self._body()
            _, items, _, _ = api.list(r, namespace, {k: v for k, v in query.items() if k in ("labelSelector", "fieldSelector")}, version)
            for o in items:
                api.delete(r, o["metadata"].get("namespace"), o["metadata"]["name"], version, dry_run)
            return self._send_json(200, {"kind": r.list_kind(), "apiVersion": r.api_version(version),
                                         "metadata": {"resourceVersion": str(api.store.rv)}, "items": items})

    def _action(self, r, verb, namespace, name, sub):
        """A create that is a request answered at once and never stored: a TokenReview,
        or a TokenRequest on serviceaccounts/NAME/token."""
        if verb != "create" or (name and not sub):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        body = self._json_body()
        if r.kind == "TokenReview":
            return self._send_json(201, serviceaccounts.token_review(self.api.authenticator, body))
        if r.kind == "SubjectAccessReview":
            return self._send_json(201, self.api.subject_access_review(body))
        if r.kind == "ServiceAccount" and sub == "token":
            return self._send_json(201, serviceaccounts.token_request(self.api.store, self.api.authenticator.sa,
                                                                      namespace, name, body))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # --- watch --------------------------------------------------------------------
    def _watch(self, r, version, namespace, query, as_table, include):
        api = self.api
        labels, fields = selectors(r, query)
        ns = namespace if r.namespaced else None
        rv_text = query.get("resourceVersion") or ""
        bookmarks = parse_bool(query.get("allowWatchBookmarks"))
        send_initial = parse_bool(query.get("sendInitialEvents"))
        timeout = float(query.get("timeoutSeconds") or 0) or 1800.0
        started = time.monotonic()
        deadline = started + timeout
        initial = []
        gone = None
        with api.store.lock:
            if rv_text in ("", "0") or send_initial:
                w, at = api.store.watch(r.gr, ns, None)
                initial = api.store.list(r.gr, ns)[1]
            else:
                try:
                    since = int(rv_text)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resource version: {rv_text}")
                try:
                    w, at = api.store.watch(r.gr, ns, since)
                except Gone as e:
                    gone, w = e, None

        def passes(o):
            return o is not None and labels.matches((o.get("metadata") or {}).get("labels")) and fields.matches(o, r.field_defaults)

        def render(type_, obj):
            obj = api._versioned(r, obj, version)
            if as_table:
                obj = res.table(r, [obj], version, include)
            return {"type": type_, "object": obj}

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = False

        def send(event):
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def bookmark(rv, initial_end=False):
            meta = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            send({"type": "BOOKMARK", "object": {"kind": r.kind, "apiVersion": r.api_version(version), "metadata": meta}})

        try:
            if gone is not None:
                send({"type": "ERROR", "object": gone_status(str(gone))})
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            api.watch_count += 1
            for o in initial:
                if passes(o):
                    send(render("ADDED", o))
            if send_initial and bookmarks:
                bookmark(at, initial_end=True)
            last_rv = at
            next_bookmark = time.monotonic() + api.settings.bookmark_interval
            while not api.shutting_down.is_set():
                now = time.monotonic()
                # watchCloseAfterSeconds applies to open watches too, from
                # the moment it is set: a test sets it and sees it at once.
                if api.settings.watch_close_after:
                    deadline = min(deadline, started + api.settings.watch_close_after)
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    # Under the store lock: writes queue their event before releasing it, so an
                    # empty queue means this watcher has seen everything up to store.rv.
                    with api.store.lock:
                        rv = api.store.rv if w.queue.empty() else last_rv
                    bookmark(max(last_rv, rv))
                    next_bookmark = now + api.settings.bookmark_interval
                wait = min(deadline, next_bookmark if bookmarks else deadline, now + 0.5) - now
                try:
                    ev = w.queue.get(timeout=max(0.01, wait))
                except queue.Empty:
                    continue
                if ev is GONE:
                    send({"type": "ERROR", "object": gone_status(
                        f"too old resource version: {last_rv} ({api.store.compacted_rv})")})
                    break
                if ev is END:
                    break
                last_rv = ev.rv
                now_ok = passes(ev.obj) and ev.type != "DELETED"
                was_ok = passes(ev.prev) if ev.prev is not None else False
                if ev.type == "DELETED":
                    if passes(ev.prev or ev.obj):
                        send(render("DELETED", dict(ev.obj, metadata=dict(ev.obj["metadata"], resourceVersion=str(ev.rv)))))
                elif ev.type == "ADDED":
                    if now_ok:
                        send(render("ADDED", ev.obj))
                elif now_ok and was_ok:
                    send(render("MODIFIED", ev.obj))
                elif now_ok:
                    send(render("ADDED", ev.obj))
                elif was_ok:
                    send(render("DELETED", dict(ev.prev, metadata=dict(ev.prev["metadata"], resourceVersion=str(ev.rv)))))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            if w is not None:
                w.close()
                api.watch_count -= 1

    # --- meshsim controls (admin only) --------------------------------------------
    def _control(self, method, path, user):
        if not user.is_admin:
            raise ApiError(403, "Forbidden", f'User "{user.name}" cannot use meshsim controls')
        handler = self.api.ctl_handlers.get((method, path))
        if handler is None:
            raise ApiError(404, "NotFound", f"no control {method} {path}")
        body = self._json_body() if method == "POST" else None
        self._send_json(200, handler(body or {}))


class TlsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock, api, context, log):
        self.api, self.context, self.log = api, context, log
        http.server.HTTPServer.__init__(self, sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, not in accept().
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.log.write(f"tls handshake from {client_address[0]}: {e}\n")
            self.log.flush()
            return
        tls.settimeout(Handler.timeout)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        import traceback
        traceback.print_exc(file=self.log)
