"""Authentication by bearer token and authorization by RBAC rules.

Tokens come from a static token file in kube-apiserver's --token-auth-file format
(`token,user,uid,"group1,group2"`), reread when it changes so a test can rotate a
token. Users in system:masters may do anything (as in a real cluster); others get
the rules of the ClusterRoles bound to them in an RBAC manifest file
(deploy/daemonset/base/rbac.yaml), evaluated like
plugin/pkg/auth/authorizer/rbac/rbac.go (RuleAllows: apiGroups, resources incl.
"res/subresource", resourceNames, verbs; "*" wildcards)."""
import csv
import os
import threading

import yaml

# Non-resource URLs every authenticated user may GET (the system:discovery and
# system:public-info-viewer ClusterRoles).
DISCOVERY_PATHS = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")


class User:
    """user.Info: name, uid, groups (in order, system:authenticated last as the
    API server's group adder puts it) and extra (key -> list of values)."""

    def __init__(self, name, uid, groups, extra=None):
        self.name, self.uid = name, uid
        self.group_list = list(groups) + ([] if "system:authenticated" in groups else ["system:authenticated"])
        self.groups = set(self.group_list)
        self.extra = dict(extra or {})

    def user_info(self):
        """authentication.k8s.io/v1 UserInfo (extra omitted when empty, as omitempty does)."""
        out = {"username": self.name, "uid": self.uid, "groups": self.group_list}
        if self.extra:
            out["extra"] = self.extra
        return out

    @property
    def is_admin(self):
        return "system:masters" in self.groups


class TokenFile:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.mtime = None
        self.tokens = {}

    def _reload(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.tokens, self.mtime = {}, None
            return
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self.mtime:
            return
        tokens = {}
        with open(self.path, newline="") as f:
            for row in csv.reader(f):
                if len(row) < 3 or row[0].startswith("#"):
                    continue
                groups = [g for g in (row[3].split(",") if len(row) > 3 else []) if g]
                tokens[row[0]] = User(row[1], row[2], groups)
        self.tokens, self.mtime = tokens, key

    def user(self, token):
        with self.lock:
            self._reload()
            return self.tokens.get(token)


# ClusterRoles every cluster has from its bootstrap policy that the RBAC files
# bind to (kubernetes plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go:
# system:auth-delegator delegates authentication and authorization checks).
BOOTSTRAP_CLUSTER_ROLES = {
    "system:auth-delegator": [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ],
}


class Rbac:
    """ClusterRoles, Roles and their bindings from the RBAC files (a Role or a
    RoleBinding grants only in its own namespace, as kube-apiserver's RBAC
    authorizer does: plugin/pkg/auth/authorizer/rbac/rbac.go)."""

    def __init__(self, paths):
        self.roles, self.bindings = dict(BOOTSTRAP_CLUSTER_ROLES), []
        self.ns_roles, self.ns_bindings = {}, []
        for path in paths:
            try:
                f = open(path)
            except OSError as e:
                raise SystemExit(f"meshsim apiserver: RBAC file {path}: {e.strerror}")
            with f:
                for doc in yaml.safe_load_all(f):
                    if not isinstance(doc, dict):
                        continue
                    if doc.get("kind") == "ClusterRole":
                        self.roles[doc["metadata"]["name"]] = doc.get("rules") or []
                    elif doc.get("kind") == "ClusterRoleBinding":
                        self.bindings.append(doc)
                    elif doc.get("kind") == "Role":
                        meta = doc.get("metadata") or {}
                        self.ns_roles[(meta.get("namespace"), meta.get("name"))] = doc.get("rules") or []
                    elif doc.get("kind") == "RoleBinding":
                        self.ns_bindings.append(doc)

    def with_stored(self, store):
        """These rules plus the ClusterRoles, Roles and bindings created through the
        API (kubectl create role / rolebinding), as kube-apiserver's RBAC
        authorizer reads them from its informers."""
        merged = Rbac([])
        merged.roles = dict(self.roles)
        merged.bindings = list(self.bindings)
        merged.ns_roles = dict(self.ns_roles)
        merged.ns_bindings = list(self.ns_bindings)
        g = "rbac.authorization.k8s.io"
        for o in store.list(f"{g}/clusterroles")[1]:
            merged.roles[o["metadata"]["name"]] = o.get("rules") or []
        merged.bindings += store.list(f"{g}/clusterrolebindings")[1]
        for o in store.list(f"{g}/roles")[1]:
            meta = o["metadata"]
            merged.ns_roles[(meta.get("namespace"), meta["name"])] = o.get("rules") or []
        merged.ns_bindings += store.list(f"{g}/rolebindings")[1]
        return merged

    def _subject_matches(self, subject, user):
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            return user.name == f"system:serviceaccount:{subject.get('namespace')}:{subject.get('name')}"
        if kind == "User":
            return user.name == subject.get("name")
        if kind == "Group":
            return subject.get("name") in user.groups
        return False

    def rules_for(self, user, namespace=None):
        for b in self.bindings:
            if any(self._subject_matches(s, user) for s in b.get("subjects") or []):
                ref = b.get("roleRef") or {}
                if ref.get("kind") == "ClusterRole":
                    yield from self.roles.get(ref.get("name"), [])
        if not namespace:
            return
        for b in self.ns_bindings:
            if (b.get("metadata") or {}).get("namespace") != namespace:
                continue
            if any(self._subject_matches(s, user) for s in b.get("subjects") or []):
                ref = b.get("roleRef") or {}
                if ref.get("kind") == "ClusterRole":
                    yield from self.roles.get(ref.get("name"), [])
                elif ref.get("kind") == "Role":
                    yield from self.ns_roles.get((namespace, ref.get("name")), [])

    def allows(self, user, verb, group, resource, subresource, name, namespace=None):
        full = resource + ("/" + subresource if subresource else "")
        for rule in self.rules_for(user, namespace):
            if not (set(rule.get("verbs") or []) & {verb, "*"}):
                continue
            if not (set(rule.get("apiGroups") or []) & {group, "*"}):
                continue
            resources = set(rule.get("resources") or [])
            if not (resources & {full, "*"} or (subresource and f"*/{subresource}" in resources)):
                continue
            names = rule.get("resourceNames")
            if names and name not in names:
                continue
            return True
        return False
